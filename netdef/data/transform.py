"""Caffe's DataTransformer (``src/caffe/data_transformer.cpp``) on numpy arrays.

One sample, in Caffe's C × H × W layout (a Datum's pixels or an OpenCV image turned
C × H × W), becomes a float32 blob in this order: the crop offsets are chosen (at random
in TRAIN, centred in TEST), every kept pixel becomes ``(pixel - mean) * scale`` with the
mean image indexed at the pixel's *uncropped* position (or the channel's mean_value), and
the result is flipped horizontally when ``mirror`` draws so. As in Caffe the mirror is
drawn in both phases; only the crop offset depends on the phase.

The random choices come from the generator the caller passes (the pipeline derives it
from the seed and the batch index, so a batch can be recomputed on its own) rather than
from Caffe's Boost stream.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from netdef.blobs import blobproto_to_array
from netdef.data.datum import datum_to_array, decode_image, image_to_chw
from netdef.errors import DataSourceError, NetdefError
from netdef.ir import Node
from netdef.proto import netdef_pb2 as pb


def resolve(path: str, root: str | os.PathLike[str] | None) -> Path:
    """A data file named in a prototxt: absolute, or relative to ``root`` (Caffe: the working directory)."""
    candidate = Path(path)
    return candidate if candidate.is_absolute() or root is None else Path(root) / candidate


def read_mean_file(path: Path, node: Node) -> np.ndarray:
    """A mean BlobProto as (C, H, W) float32, read through Caffe's legacy 4-D accessors.

    Caffe indexes the mean with ``channels()``, ``height()`` and ``width()`` of the blob, so a
    ``(1, C, H, W)`` blob (what ``compute_image_mean`` writes) is a C × H × W mean image.
    """
    blob = pb.BlobProto()
    try:
        blob.ParseFromString(path.read_bytes())
        mean = blobproto_to_array(blob)
    except OSError as error:
        raise node.error(f"cannot read mean_file {path}: {error.strerror}", DataSourceError) from None
    except NetdefError as error:
        raise node.error(f"mean_file {path} is not a valid BlobProto: {error.message}", DataSourceError) from None
    except Exception as error:  # protobuf's DecodeError
        raise node.error(f"mean_file {path} is not a BlobProto ({error})", DataSourceError) from None
    if mean.ndim > 4:
        raise node.error(f"mean_file {path} has {mean.ndim} axes", DataSourceError, expected="at most 4")
    channels, height, width = (*mean.shape, 1, 1, 1, 1)[1:4]
    return mean.reshape(-1)[: channels * height * width].reshape(channels, height, width)


@dataclass
class DataTransformer:
    """The transformation of one data layer (its ``transform_param`` and the net's phase)."""

    node: Node
    param: pb.TransformationParameter
    train: bool
    mean: np.ndarray | None = None
    mean_values: np.ndarray | None = None

    @classmethod
    def for_layer(cls, node: Node, phase: int, root: str | os.PathLike[str] | None) -> DataTransformer:
        param = node.param.transform_param
        if param.HasField("mean_file") and param.mean_value:
            raise node.error("Cannot specify mean_file and mean_value at the same time")
        if param.force_color and param.force_gray:
            raise node.error("cannot set both force_color and force_gray")
        mean = read_mean_file(resolve(param.mean_file, root), node) if param.HasField("mean_file") else None
        values = np.asarray(param.mean_value, dtype=np.float32) if param.mean_value else None
        return cls(node, param, phase == pb.TRAIN, mean, values)

    @property
    def crop_size(self) -> int:
        return self.param.crop_size

    def decode(self, datum: pb.Datum) -> np.ndarray:
        """A Datum's sample as C × H × W; encoded ones decoded with force_color/force_gray as Caffe does.

        On a raw Datum Caffe only logs that force_color/force_gray apply to encoded data; the
        pixels are used as stored.
        """
        if not datum.encoded:
            return datum_to_array(datum)
        is_color = True if self.param.force_color else False if self.param.force_gray else None
        return image_to_chw(decode_image(datum.data, is_color))

    def output_shape(self, sample: tuple[int, ...]) -> tuple[int, int, int]:
        """Caffe's ``InferBlobShape`` without the batch axis: (C, crop or H, crop or W)."""
        channels, height, width = sample
        crop = self.crop_size
        return (channels, crop or height, crop or width)

    def __call__(
        self, sample: np.ndarray, rng: np.random.Generator, what: str, out: np.ndarray | None = None
    ) -> np.ndarray:
        """Transform one C × H × W sample (uint8 or float32) into ``out`` (or a new array).

        ``what`` names the sample in errors. The arithmetic is Caffe's, in float32:
        ``(float(pixel) - mean) * scale``, a scale of 1 being exact either way.
        """
        _, height, width = sample.shape
        crop = self.crop_size
        self._check(sample.shape, what)
        mirror = bool(self.param.mirror and rng.integers(2))
        h_off = w_off = 0
        if crop:
            if self.train:
                h_off = int(rng.integers(height - crop + 1))
                w_off = int(rng.integers(width - crop + 1))
            else:
                h_off, w_off = (height - crop) // 2, (width - crop) // 2
            height = width = crop
        window = (slice(None), slice(h_off, h_off + height), slice(w_off, w_off + width))
        if out is None:
            out = np.empty((sample.shape[0], height, width), dtype=np.float32)
        target = out[:, :, ::-1] if mirror else out
        if self.mean is not None:
            np.subtract(sample[window], self.mean[window], out=target, dtype=np.float32)
        elif self.mean_values is not None:
            values = self.mean_values.reshape(-1, 1, 1) if len(self.mean_values) > 1 else self.mean_values[0]
            np.subtract(sample[window], values, out=target, dtype=np.float32)
        else:
            np.copyto(target, sample[window], casting="unsafe")
        if self.param.scale != 1:
            np.multiply(out, np.float32(self.param.scale), out=out)
        return out

    def _check(self, shape: tuple[int, ...], what: str) -> None:
        """Caffe's CHECKs of ``Transform``: the crop fits, the mean matches the sample."""
        channels, height, width = shape
        crop = self.crop_size
        if channels <= 0 or height < crop or width < crop:
            raise self.node.error(
                f"{what} is smaller than transform_param.crop_size",
                DataSourceError,
                expected=f"height and width >= {crop}",
                received=f"{channels}×{height}×{width}",
            )
        if self.mean is not None and self.mean.shape != tuple(shape):
            raise self.node.error(
                f"mean_file does not match {what}",
                DataSourceError,
                expected=f"a mean of the sample's size {channels}×{height}×{width}",
                received="×".join(map(str, self.mean.shape)),
            )
        if self.mean_values is not None and len(self.mean_values) not in (1, channels):
            raise self.node.error(
                f"Specify either 1 mean_value or as many as channels: {channels}",
                received=f"{len(self.mean_values)} values",
            )
