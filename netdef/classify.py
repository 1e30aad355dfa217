"""``netdef classify``: Caffe's ``python/classify.py`` and its classification example.

Each image is loaded as pycaffe does (RGB in [0, 1]), resized to ``images_dim``, cut into
the ten crops of pycaffe's ``oversample`` (or its centre crop alone), prepared by the
Transformer (transpose to C × H × W, channel swap to BGR, ``raw_scale``, the mean,
``input_scale``) and run through the net; the crops' outputs are averaged per image, as
``caffe.Classifier.predict`` does. The mean file's per-channel average is subtracted
(``mean.mean(1).mean(1)``, as the classification example does with ILSVRC's mean).
"""

from __future__ import annotations

import argparse
import io
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from netdef.blobs import blobproto_to_array
from netdef.errors import DataSourceError, NetdefError, NetDefinitionError, SourceLocation
from netdef.fileio import atomic_write
from netdef.load import load_net
from netdef.proto import netdef_pb2 as pb

PathLike = str | os.PathLike[str]


def read_mean(path: PathLike) -> np.ndarray:
    """Per-channel mean from a mean file: a BlobProto (``.binaryproto``) or a numpy ``.npy``.

    A (1, C, H, W) or (C, H, W) mean image is averaged over H and W; a vector is taken as is.
    """
    location = SourceLocation(os.fspath(path))
    if os.fspath(path).endswith(".npy"):
        try:
            mean = np.load(path)
        except (OSError, ValueError) as error:
            raise DataSourceError(f"cannot read the mean: {error}", location=location) from None
    else:
        blob = pb.BlobProto()
        try:
            blob.ParseFromString(Path(path).read_bytes())
        except OSError as error:
            raise DataSourceError(f"cannot read the mean: {error.strerror}", location=location) from None
        except Exception as error:  # protobuf's DecodeError
            raise DataSourceError(f"the mean is not a BlobProto ({error})", location=location) from None
        mean = blobproto_to_array(blob)
    mean = np.asarray(mean, dtype=np.float32)
    if mean.ndim == 4 and mean.shape[0] == 1:
        mean = mean[0]
    if mean.ndim == 3:
        return mean.mean(1).mean(1)
    if mean.ndim == 1:
        return mean
    raise DataSourceError("the mean must be a (1, C, H, W) or (C, H, W) image or a C vector", received=str(mean.shape))


def read_labels(path: PathLike) -> list[str]:
    """Class names, one line each (as ``synset_words.txt``); the whole line is the name."""
    try:
        return Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise DataSourceError(f"cannot read the labels: {error}", location=SourceLocation(os.fspath(path))) from None


def _gpu_available() -> bool:
    import keras

    backend = keras.backend.backend()
    if backend == "torch":
        import torch

        return bool(torch.cuda.is_available())
    if backend == "jax":
        import jax

        return any(device.platform == "gpu" for device in jax.devices())
    import tensorflow as tf

    return bool(tf.config.list_physical_devices("GPU"))


def center_crop(images: np.ndarray, crop_dims: Sequence[int]) -> np.ndarray:
    """``caffe.Classifier``'s centre crop of (N, H, W, K) images (offsets truncated as pycaffe's)."""
    image_dims = np.asarray(images.shape[1:3])
    crop = np.asarray(crop_dims)
    center = image_dims / 2.0
    box = (np.tile(center, (1, 2))[0] + np.concatenate([-crop / 2.0, crop / 2.0])).astype(int)
    return images[:, box[0] : box[2], box[1] : box[3], :]


def classify(
    model: PathLike,
    weights: PathLike,
    images: Sequence[PathLike],
    *,
    mean: PathLike | np.ndarray | None = None,
    center_only: bool = False,
    images_dim: Sequence[int] = (256, 256),
    raw_scale: float | None = 255.0,
    channel_swap: Sequence[int] | None = None,
    input_scale: float | None = None,
    gpu: bool = False,
) -> np.ndarray:
    """Class probabilities (images × classes) of a deploy net, as ``caffe.Classifier.predict``.

    ``gpu`` runs the net on the first GPU Keras's backend sees (an error when there is none);
    otherwise it runs on the CPU, as Caffe's default mode does. ``channel_swap`` None is
    classify.py's RGB → BGR (2, 1, 0) for a colour net and no swap for a grey one, whose
    images are loaded grey.
    """
    import keras

    from netdef.io import Transformer, load_image, oversample, resize_image
    from netdef.keras.compiler import to_keras

    if not images:
        raise NetdefError("no images to classify")
    if gpu and not _gpu_available():
        raise NetdefError(f"no GPU is visible to Keras's {keras.backend.backend()} backend", hint="drop --gpu")
    net = load_net(model, phase="TEST")
    if len(net.feeds) != 1 or not net.inputs:
        raise NetDefinitionError(
            "classify needs a deploy net with a single Input layer top",
            received=", ".join(f"{v.blob} ({v.producer.type if v.producer else '?'})" for v in net.feeds),
        )
    data = net.inputs[0]
    shape = tuple(data.shape or ())
    if len(shape) != 4:
        raise NetDefinitionError(f"input '{data.blob}' must be (N, C, H, W) images", received=str(shape))
    if channel_swap is None and shape[1] == 3:
        channel_swap = (2, 1, 0)
    transformer = Transformer({data.blob: shape})
    transformer.set_transpose(data.blob, (2, 0, 1))
    if mean is not None:
        transformer.set_mean(data.blob, read_mean(mean) if not isinstance(mean, np.ndarray) else mean)
    if input_scale is not None:
        transformer.set_input_scale(data.blob, input_scale)
    if raw_scale is not None:
        transformer.set_raw_scale(data.blob, raw_scale)
    if channel_swap:
        transformer.set_channel_swap(data.blob, channel_swap)

    loaded = [load_image(path, color=shape[1] != 1) for path in images]
    resized = np.stack([resize_image(image, images_dim) for image in loaded])
    crops = oversample(resized, shape[2:]) if not center_only else center_crop(resized, shape[2:])
    batch = np.stack([transformer.preprocess(data.blob, crop) for crop in crops])

    with keras.device("gpu:0" if gpu else "cpu:0"):
        predictions = _forward_all(to_keras(net, weights), batch, shape[0])
    if not center_only:
        predictions = predictions.reshape(len(images), 10, -1).mean(1)
    return predictions


def _forward_all(model: Any, batch: np.ndarray, size: int) -> np.ndarray:
    """pycaffe's ``forward_all``: the net's batch size at a time, the last batch padded with zeros."""
    import keras

    outputs = []
    for start in range(0, len(batch), size):
        chunk = batch[start : start + size]
        padded = np.concatenate([chunk, np.zeros((size - len(chunk), *chunk.shape[1:]), np.float32)])
        result = model([padded], training=False)
        first = result[0] if isinstance(result, (list, tuple)) else result
        outputs.append(keras.ops.convert_to_numpy(first)[: len(chunk)])
    stacked = np.concatenate(outputs)
    return stacked.reshape(len(stacked), -1).astype(np.float32)


def top_k(probabilities: np.ndarray, labels: Sequence[str] | None, k: int = 5) -> list[list[tuple[float, str]]]:
    """For each image, its ``k`` most probable classes as (probability, label), best first."""
    classes = probabilities.shape[1]
    if labels is not None and len(labels) < classes:
        raise DataSourceError(
            "the labels file has fewer lines than the net has classes",
            expected=f"{classes} lines",
            received=f"{len(labels)}",
        )
    names = labels if labels is not None else [f"class {index}" for index in range(classes)]
    ranked = np.argsort(-probabilities, axis=1, kind="stable")[:, :k]
    pairs = zip(probabilities, ranked, strict=True)
    return [[(float(row[index]), names[index]) for index in order] for row, order in pairs]


def _ints(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, received {text!r}") from None


def command(args: argparse.Namespace) -> int:
    """The ``netdef classify`` verb."""
    if len(args.images_dim) != 2:
        raise NetdefError("--images-dim takes HEIGHT,WIDTH", received=",".join(map(str, args.images_dim)))
    labels = read_labels(args.labels) if args.labels else None
    probabilities = classify(
        args.model,
        args.weights,
        args.images,
        mean=args.mean,
        center_only=args.center_only,
        images_dim=args.images_dim,
        raw_scale=args.raw_scale,
        channel_swap=args.channel_swap,
        input_scale=args.input_scale,
        gpu=args.gpu,
    )
    for image, ranked in zip(args.images, top_k(probabilities, labels), strict=True):
        print(image)
        for rank, (probability, name) in enumerate(ranked, start=1):
            print(f"  {rank}. {probability:.4f}  {name}")
    if args.output:
        buffer = io.BytesIO()
        np.save(buffer, probabilities)
        atomic_write(args.output, buffer.getvalue())
        print(f"wrote {args.output}: probabilities {probabilities.shape}")
    return 0


def register(verbs: Any, common: argparse.ArgumentParser) -> None:
    """Register ``classify`` on the CLI's sub-parsers (Caffe's classify.py options, in netdef's spelling)."""
    parser = verbs.add_parser("classify", parents=[common], help="top-5 classes of images through a deploy net")
    parser.add_argument("images", nargs="+", metavar="IMAGE", help="image files")
    parser.add_argument("--model", required=True, help="deploy prototxt (one Input)")
    parser.add_argument("--weights", required=True, help=".caffemodel or Caffe HDF5 weights")
    parser.add_argument("--mean", help="mean file (.binaryproto or .npy); its per-channel mean is subtracted")
    parser.add_argument("--labels", help="class names, one per line (e.g. synset_words.txt)")
    parser.add_argument("--center-only", action="store_true", help="the centre crop alone instead of 10 crops")
    parser.add_argument("--images-dim", type=_ints, default=(256, 256), metavar="H,W", help="resize (default 256,256)")
    parser.add_argument("--raw-scale", type=float, default=255.0, help="scale of the [0, 1] image (default 255)")
    parser.add_argument(
        "--channel-swap",
        type=_ints,
        metavar="2,1,0",
        help="channel order (default: RGB → BGR for colour nets, none for grey ones)",
    )
    parser.add_argument("--input-scale", type=float, help="scale after mean subtraction")
    parser.add_argument("--gpu", action="store_true", help="run on the GPU (default: CPU, as Caffe)")
    parser.add_argument("-o", "--output", help="also save the probabilities (.npy)")
    parser.set_defaults(run=command)
