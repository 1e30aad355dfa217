"""pycaffe's ``caffe.io`` in netdef: the Transformer that prepares images for a net, and image helpers.

Same API and order of operations as ``python/caffe/io.py``, so code written for pycaffe's
classification example runs unchanged. Image decoding and resizing use OpenCV instead of
scikit-image and SciPy; what that changes:

* :func:`load_image` decodes with ``cv2.IMREAD_UNCHANGED`` (no EXIF rotation, as
  scikit-image's reader), converts BGR(A) to RGB and scales by the integer type's maximum
  (``img_as_float``). With ``color=False`` a colour image becomes grey with OpenCV's
  weights (0.299, 0.587, 0.114) where scikit-image uses (0.2125, 0.7154, 0.0721).
* :func:`resize_image` resizes any number of channels with ``cv2.resize`` on float32:
  order 0 → nearest, 1 → bilinear, 2–3 → bicubic, 4–5 → Lanczos (OpenCV has no
  biquadratic or quintic). Pixel centres are aligned as in scikit-image, but the border
  is clamped to the edge pixels where scikit-image's ``mode='constant'`` blends in the
  image's minimum, and there is no anti-aliasing (nor was there in the scikit-image pycaffe
  was written for). pycaffe's min–max normalisation around scikit-image is not needed:
  OpenCV resizes float values of any range, and a constant image stays constant.
  pycaffe's SciPy ``zoom`` path for other channel counts (corner-aligned) is replaced by
  the same OpenCV resize.
* :meth:`Transformer.preprocess` never modifies the caller's array (pycaffe's scales in
  place through a view of a float32 input).

Mistakes (an unknown input name, an order or mean that does not fit the input) raise
:class:`TransformerError`, a netdef :class:`~netdef.errors.ShapeError` that is also a
``ValueError``, with pycaffe's messages.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import cv2
import numpy as np
from numpy.typing import ArrayLike

from netdef.blobs import array_to_blobproto, blobproto_to_array
from netdef.data.datum import array_to_datum, datum_to_array
from netdef.errors import DataSourceError, ShapeError, SourceLocation
from netdef.proto import netdef_pb2 as pb

__all__ = [
    "Transformer",
    "TransformerError",
    "array_to_blobproto",
    "array_to_datum",
    "arraylist_to_blobprotovector_str",
    "blobproto_to_array",
    "blobprotovector_str_to_arraylist",
    "datum_to_array",
    "load_image",
    "oversample",
    "resize_image",
]

#: scikit-image's spline order → the OpenCV interpolation that comes closest.
INTERPOLATION = {
    0: cv2.INTER_NEAREST,
    1: cv2.INTER_LINEAR,
    2: cv2.INTER_CUBIC,
    3: cv2.INTER_CUBIC,
    4: cv2.INTER_LANCZOS4,
    5: cv2.INTER_LANCZOS4,
}
#: The most channels one ``cv2.resize`` call takes (OpenCV's ``CV_CN_MAX``).
_MAX_RESIZE_CHANNELS = 512


class TransformerError(ShapeError, ValueError):
    """A Transformer setting or input that does not fit the net's input; a ValueError, as in pycaffe."""


def arraylist_to_blobprotovector_str(arraylist: Sequence[ArrayLike]) -> bytes:
    """pycaffe's helper: arrays → a serialized BlobProtoVector."""
    vector = pb.BlobProtoVector()
    vector.blobs.extend(array_to_blobproto(array) for array in arraylist)
    return vector.SerializeToString()


def blobprotovector_str_to_arraylist(data: bytes) -> list[np.ndarray]:
    """pycaffe's helper: a serialized BlobProtoVector → arrays."""
    return [blobproto_to_array(blob) for blob in pb.BlobProtoVector.FromString(data).blobs]


class Transformer:
    """Turn H × W × K images into a net's C × H × W input, as pycaffe's ``caffe.io.Transformer``.

    ``inputs`` maps each input blob to its shape (N, C, H, W). :meth:`preprocess` applies, in
    pycaffe's order: float32, resize to (H, W) when the spatial size differs, transpose,
    channel swap, ``* raw_scale``, ``- mean``, ``* input_scale``; :meth:`deprocess` undoes them.
    """

    def __init__(self, inputs: Mapping[str, Sequence[int]]) -> None:
        self.inputs: dict[str, tuple[int, ...]] = {name: tuple(int(d) for d in shape) for name, shape in inputs.items()}
        self.transpose: dict[str, tuple[int, ...]] = {}
        self.channel_swap: dict[str, tuple[int, ...]] = {}
        self.raw_scale: dict[str, float] = {}
        self.mean: dict[str, np.ndarray] = {}
        self.input_scale: dict[str, float] = {}

    def _check_input(self, in_: str) -> tuple[int, ...]:
        if in_ not in self.inputs:
            raise TransformerError(f"{in_} is not one of the net inputs: {self.inputs}")
        return self.inputs[in_]

    def preprocess(self, in_: str, data: ArrayLike) -> np.ndarray:
        """One H' × W' × K image (float, e.g. from :func:`load_image`) → the C × H × W float32 input."""
        shape = self._check_input(in_)
        caffe_in = np.array(data, dtype=np.float32)  # a copy: the caller's array is left alone
        in_dims = shape[2:]
        if caffe_in.shape[:2] != in_dims:
            caffe_in = resize_image(caffe_in, in_dims)
        if in_ in self.transpose:
            caffe_in = caffe_in.transpose(self.transpose[in_])
        if in_ in self.channel_swap:
            caffe_in = caffe_in[list(self.channel_swap[in_]), :, :]
        if in_ in self.raw_scale:
            caffe_in *= self.raw_scale[in_]
        if in_ in self.mean:
            caffe_in -= self.mean[in_]
        if in_ in self.input_scale:
            caffe_in *= self.input_scale[in_]
        return caffe_in

    def deprocess(self, in_: str, data: ArrayLike) -> np.ndarray:
        """Invert :meth:`preprocess` (except the resize): a net input back to an H × W × K image."""
        self._check_input(in_)
        decaf_in = np.array(data).squeeze()
        if in_ in self.input_scale:
            decaf_in /= self.input_scale[in_]
        if in_ in self.mean:
            decaf_in += self.mean[in_]
        if in_ in self.raw_scale:
            decaf_in /= self.raw_scale[in_]
        if in_ in self.channel_swap:
            decaf_in = decaf_in[np.argsort(self.channel_swap[in_]), :, :]
        if in_ in self.transpose:
            decaf_in = decaf_in.transpose(np.argsort(self.transpose[in_]))
        return decaf_in

    def set_transpose(self, in_: str, order: Sequence[int]) -> None:
        """The axis order that turns the image into C × H × W, e.g. (2, 0, 1) for H × W × C."""
        shape = self._check_input(in_)
        if len(order) != len(shape) - 1:
            raise TransformerError(
                "Transpose order needs to have the same number of dimensions as the input",
                expected=f"{len(shape) - 1} axes",
                received=str(tuple(order)),
            )
        self.transpose[in_] = tuple(order)

    def set_channel_swap(self, in_: str, order: Sequence[int]) -> None:
        """The channel order to take after the transpose, e.g. (2, 1, 0) for RGB → BGR."""
        shape = self._check_input(in_)
        if len(order) != shape[1]:
            raise TransformerError(
                "Channel swap needs to have the same number of dimensions as the input channels",
                expected=f"{shape[1]} channels",
                received=str(tuple(order)),
            )
        self.channel_swap[in_] = tuple(order)

    def set_raw_scale(self, in_: str, scale: float) -> None:
        """Multiply the raw image (e.g. 255 for a [0, 1] image into CaffeNet's [0, 255]), before the mean."""
        self._check_input(in_)
        self.raw_scale[in_] = scale

    def set_mean(self, in_: str, mean: ArrayLike) -> None:
        """The mean to subtract: one value per channel, or an image (C × H × W or H × W) resized to the input.

        As pycaffe, a mean image of another spatial size is resized to the input's (through
        :func:`resize_image`); a per-channel vector broadcasts over H × W.
        """
        shape = self._check_input(in_)
        values = np.asarray(mean)
        if values.ndim == 1:
            if values.shape[0] != shape[1]:
                raise TransformerError(
                    "Mean channels incompatible with input",
                    expected=f"{shape[1]} values",
                    received=f"{values.shape[0]}",
                )
            self.mean[in_] = values[:, np.newaxis, np.newaxis]
            return
        if values.ndim == 2:
            values = values[np.newaxis]
        if values.ndim != 3 or values.shape[0] not in (1, shape[1]):
            raise TransformerError(
                "Mean shape invalid", expected=f"(C, H, W) or (H, W) with C = {shape[1]}", received=str(values.shape)
            )
        if values.shape[1:] != shape[2:]:
            values = resize_image(values.transpose(1, 2, 0), shape[2:]).transpose(2, 0, 1)
        self.mean[in_] = values

    def set_input_scale(self, in_: str, scale: float) -> None:
        """Multiply the input after mean subtraction (``raw_scale`` acts before it)."""
        self._check_input(in_)
        self.input_scale[in_] = scale


def load_image(filename: str | os.PathLike[str], color: bool = True) -> np.ndarray:
    """pycaffe's ``load_image``: float32 in [0, 1], H × W × 3 RGB (``color``) or H × W × 1 intensity.

    A grey image loaded in colour is tiled to three channels and an alpha channel is dropped,
    as pycaffe does. Raises OSError for a file that cannot be read and
    :class:`DataSourceError` for one OpenCV cannot decode.
    """
    with open(filename, "rb") as handle:
        data = handle.read()
    image = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_UNCHANGED) if data else None
    if image is None:
        raise DataSourceError("not an image OpenCV can decode", location=SourceLocation(os.fspath(filename)))
    scale = np.iinfo(image.dtype).max if np.issubdtype(image.dtype, np.integer) else 1
    if image.ndim == 3:
        image = image[:, :, :3]
        image = (
            cv2.cvtColor(image, cv2.COLOR_BGR2RGB if color else cv2.COLOR_BGR2GRAY) if image.shape[2] == 3 else image
        )
    if image.ndim == 2:
        image = image[:, :, np.newaxis]
    if color and image.shape[2] == 1:
        image = np.tile(image, (1, 1, 3))
    return (image.astype(np.float32) / np.float32(scale)).astype(np.float32)


def resize_image(im: ArrayLike, new_dims: Sequence[int], interp_order: int = 1) -> np.ndarray:
    """pycaffe's ``resize_image``: an H × W × K array resized to ``new_dims`` (height, width), float32.

    Any K; ``interp_order`` is scikit-image's spline order (see the module docstring).
    """
    image = np.asarray(im, dtype=np.float32)
    if image.ndim != 3:
        raise TransformerError("resize_image takes an H x W x K image", expected="3 axes", received=str(image.shape))
    if interp_order not in INTERPOLATION:
        raise TransformerError("unknown interpolation order", expected="0 to 5", received=str(interp_order))
    height, width = (int(d) for d in new_dims)
    flag = INTERPOLATION[interp_order]
    parts = [
        cv2.resize(image[:, :, start : start + _MAX_RESIZE_CHANNELS], (width, height), interpolation=flag)
        for start in range(0, image.shape[2], _MAX_RESIZE_CHANNELS)
    ]
    resized = np.concatenate([part.reshape(height, width, -1) for part in parts], axis=2)
    return resized.astype(np.float32, copy=False)


def oversample(images: Sequence[np.ndarray], crop_dims: Sequence[int]) -> np.ndarray:
    """pycaffe's ``oversample``: 10 crops per image (corners TL, TR, BL, BR, centre, then their mirrors).

    Returns (10 N, h, w, K) float32. The centre crop's offsets are truncated as pycaffe's
    integer array truncates them.
    """
    if not len(images):
        raise TransformerError("oversample needs at least one image")
    im_shape = np.array(images[0].shape)
    crop = np.array(crop_dims, dtype=int)
    for image in images:
        if image.ndim != 3 or tuple(image.shape) != tuple(im_shape):
            raise TransformerError(
                "oversample takes H x W x K images of one shape",
                expected=str(tuple(im_shape)),
                received=str(image.shape),
            )
    if crop.shape != (2,) or np.any(crop > im_shape[:2]) or np.any(crop <= 0):
        raise TransformerError(
            "the crop does not fit in the images", expected=f"(h, w) ≤ {tuple(im_shape[:2])}", received=str(tuple(crop))
        )
    im_center = im_shape[:2] / 2.0
    crops_ix = np.empty((5, 4), dtype=int)
    corners = [(i, j) for i in (0, im_shape[0] - crop[0]) for j in (0, im_shape[1] - crop[1])]
    for row, (i, j) in enumerate(corners):
        crops_ix[row] = (i, j, i + crop[0], j + crop[1])
    crops_ix[4] = np.tile(im_center, (1, 2)) + np.concatenate([-crop / 2.0, crop / 2.0])
    crops = np.empty((10 * len(images), crop[0], crop[1], im_shape[-1]), dtype=np.float32)
    ix = 0
    for image in images:
        for top, left, bottom, right in crops_ix:
            crops[ix] = image[top:bottom, left:right, :]
            crops[ix + 5] = crops[ix, :, ::-1, :]
            ix += 1
        ix += 5
    return crops
