"""Caffe blobs ↔ Keras variables: the conversions named by the layer declarations.

A declaration links each Caffe blob to a Keras variable through a named converter; the
pairs below are the only place where blob orientations (Caffe's (out, in, kh, kw) vs
Keras's (kh, kw, in, out), Caffe's C,H,W flatten order vs channels-last, ...) are handled.
Each pair is exact and invertible, so .caffemodel → Keras → .caffemodel is lossless.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from netdef.errors import WeightsError
from netdef.keras.compiler import Binding, Compiled
from netdef.layers.registry import WeightLink
from netdef.weights import LayerBlobs, match_blobs, read_weights

Args = dict[str, object]


@dataclass(frozen=True)
class Converter:
    to_keras: Callable[[np.ndarray, Args], np.ndarray]
    to_caffe: Callable[[np.ndarray, Args, Sequence[int]], np.ndarray]


def _spatial_first(rank: int) -> tuple[int, ...]:
    # Caffe (out, in, *k) -> Keras (*k, in, out).
    return (*range(2, rank), 1, 0)


def _conv_to_keras(blob: np.ndarray, args: Args) -> np.ndarray:
    return np.transpose(blob, _spatial_first(blob.ndim))


def _conv_to_caffe(value: np.ndarray, args: Args, shape: Sequence[int]) -> np.ndarray:
    return np.transpose(value, np.argsort(_spatial_first(len(shape)))).reshape(shape)


def _depthwise_to_keras(blob: np.ndarray, args: Args) -> np.ndarray:
    # Caffe (C·m, 1, *k) with group C: output c·m + j reads input c -> Keras (*k, C, m).
    channels = int(args["channels"])  # type: ignore[call-overload]
    grouped = blob.reshape(channels, blob.shape[0] // channels, *blob.shape[2:])
    return np.transpose(grouped, (*range(2, blob.ndim), 0, 1))


def _depthwise_to_caffe(value: np.ndarray, args: Args, shape: Sequence[int]) -> np.ndarray:
    rank = value.ndim
    grouped = np.transpose(value, (rank - 2, rank - 1, *range(rank - 2)))
    return grouped.reshape(shape)


def _dense_rows(args: Args) -> np.ndarray | None:
    """Row order that turns a C,H,W-flattened input into the channels-last flatten order."""
    chw = args.get("chw")
    if not chw:
        return None
    channels, *spatial = (int(d) for d in chw)  # type: ignore[union-attr]
    index = np.arange(channels * int(np.prod(spatial))).reshape(channels, *spatial)
    return np.moveaxis(index, 0, -1).reshape(-1)


def _dense_to_keras(blob: np.ndarray, args: Args) -> np.ndarray:
    kernel = blob if args.get("transpose") else blob.T  # Keras: (inputs, outputs)
    rows = _dense_rows(args)
    return kernel if rows is None else kernel[rows]


def _dense_to_caffe(value: np.ndarray, args: Args, shape: Sequence[int]) -> np.ndarray:
    rows = _dense_rows(args)
    kernel = value if rows is None else value[np.argsort(rows)]
    return (kernel if args.get("transpose") else kernel.T).reshape(shape)


def _permute_to_keras(blob: np.ndarray, args: Args) -> np.ndarray:
    perm = args.get("perm")
    value = blob if not perm else np.transpose(blob, perm)  # type: ignore[arg-type]
    target = args.get("shape")
    return value if target is None else value.reshape(target)  # type: ignore[arg-type]


def _permute_to_caffe(value: np.ndarray, args: Args, shape: Sequence[int]) -> np.ndarray:
    perm = args.get("perm")
    if not perm:
        return value.reshape(shape)
    permuted_shape = [shape[a] for a in perm]  # type: ignore[union-attr]
    return np.transpose(value.reshape(permuted_shape), np.argsort(perm)).reshape(shape)  # type: ignore[arg-type]


CONVERTERS: dict[str, Converter] = {
    "identity": Converter(lambda blob, args: blob, lambda value, args, shape: value.reshape(shape)),
    "conv_kernel": Converter(_conv_to_keras, _conv_to_caffe),
    "depthwise_kernel": Converter(_depthwise_to_keras, _depthwise_to_caffe),
    "dense_kernel": Converter(_dense_to_keras, _dense_to_caffe),
    "permute": Converter(_permute_to_keras, _permute_to_caffe),
}


def blob_variables(compiled: Compiled) -> Iterator[tuple[Binding, WeightLink, Any]]:
    """Each Caffe blob's Keras variable; layers the model left out (not needed for the
    outputs it was built for) have none."""
    layers = {layer.name: layer for layer in compiled.model.layers}
    for binding in compiled.bindings:
        for link in binding.plan.weights:
            layer = layers.get(binding.layer_names[link.call])
            if layer is not None:
                yield binding, link, layer.weights[link.variable]


def set_caffe_blobs(compiled: Compiled, blobs: dict[str, list[np.ndarray]]) -> None:
    """Assign Caffe-shaped blobs (by layer name) to the model's variables."""
    for binding, link, variable in blob_variables(compiled):
        layer_blobs = blobs.get(binding.node.name)
        if layer_blobs is None:
            continue
        value = CONVERTERS[link.convert].to_keras(np.asarray(layer_blobs[link.blob], dtype=np.float32), link.args)
        if tuple(value.shape) != tuple(variable.shape):
            raise WeightsError(
                f"blob {link.blob} does not fit Keras variable '{variable.path}'",
                layer=binding.node.name,
                layer_type=binding.node.type,
                expected=str(tuple(variable.shape)),
                received=str(tuple(value.shape)),
            )
        variable.assign(value)


def caffe_blobs(compiled: Compiled) -> list[LayerBlobs]:
    """The model's variables as Caffe blobs, in net order (what a .caffemodel stores)."""
    by_layer: dict[str, LayerBlobs] = {}
    for binding, link, variable in blob_variables(compiled):
        node = binding.node
        record = by_layer.setdefault(node.name, LayerBlobs(node.name, node.type, [None] * len(node.blobs)))  # type: ignore[list-item]
        shape = node.blobs[link.blob].shape
        record.blobs[link.blob] = CONVERTERS[link.convert].to_caffe(np.asarray(variable.numpy()), link.args, shape)
    return [record for record in by_layer.values() if all(blob is not None for blob in record.blobs)]


def load_caffe_weights(compiled: Compiled, path: str | os.PathLike[str]) -> list[str]:
    """Copy a .caffemodel or Caffe HDF5 file into the model by layer name, as Caffe does.

    Returns Caffe's notes (layers of the file not in the net, layers of the net not in the file).
    """
    matched, notes = match_blobs(compiled.net, read_weights(path))
    set_caffe_blobs(compiled, matched)
    return notes
