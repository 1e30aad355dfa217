"""Caffe's fillers (``include/caffe/filler.hpp``) and the initial weights they give a net.

``fill`` reproduces each filler's formula, including Caffe's own fan computation for
xavier and msra (``fan_in = count / shape[0]``, ``fan_out = count / shape[1]``, which
for an InnerProduct weight ``(out, in)`` is the reverse of what the names suggest) and its
checks, raised as netdef errors instead of aborting. The random stream is numpy's, not
Caffe's Boost generator, so values follow the same distributions but are not Caffe's.

``initialize_weights`` fills every learnable blob of a compiled net the way each layer's
``LayerSetUp`` does, with that layer's default filler when the prototxt gives none. Each
blob draws from its own stream, seeded by (seed, layer position, blob index), so a blob's
initial value does not depend on which other layers the net has.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

from netdef.errors import NetDefinitionError
from netdef.proto import netdef_pb2 as pb

if TYPE_CHECKING:
    from netdef.ir import Net, Node
    from netdef.keras.compiler import Compiled

Filler = Callable[[pb.FillerParameter, tuple[int, ...], np.random.Generator], np.ndarray]


def _constant(filler: pb.FillerParameter, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    return np.full(shape, filler.value, dtype=np.float32)


def _uniform(filler: pb.FillerParameter, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    low, high = np.float32(filler.min), np.float32(filler.max)
    if low > high:
        raise NetDefinitionError("uniform filler needs min <= max", received=f"min {low}, max {high}")
    return _uniform_values(shape, low, high, rng)


def _uniform_values(shape: tuple[int, ...], low: np.float32, high: np.float32, rng: np.random.Generator) -> np.ndarray:
    """U[low, high) in float32, as Caffe's ``caffe_rng_uniform``."""
    unit = rng.random(shape, dtype=np.float32)
    return (low + (high - low) * unit).astype(np.float32)


def _gaussian_values(shape: tuple[int, ...], mean: float, std: float, rng: np.random.Generator) -> np.ndarray:
    if not std > 0:
        raise NetDefinitionError("a gaussian filler needs std > 0 (Caffe's caffe_rng_gaussian)", received=f"std {std}")
    return rng.normal(mean, std, shape).astype(np.float32)


def _gaussian(filler: pb.FillerParameter, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """N(mean, std); with ``sparse`` >= 0 each value is kept with probability sparse / shape[0].

    ``sparse`` is the mean number of non-zero inputs per output for a weight matrix
    whose rows are outputs (Caffe's comment; its code divides by ``shape(0)``).
    """
    values = _gaussian_values(shape, filler.mean, filler.std, rng)
    if filler.sparse < -1:
        raise NetDefinitionError("gaussian filler's sparse must be -1 (dense) or >= 0", received=filler.sparse)
    if filler.sparse >= 0:
        if not shape:
            raise NetDefinitionError("a sparse gaussian filler needs a blob with at least one axis")
        probability = np.float32(filler.sparse) / np.float32(shape[0])
        if probability > 1:
            raise NetDefinitionError(
                "gaussian filler's sparse exceeds the blob's first dimension",
                expected=f"sparse <= {shape[0]}",
                received=filler.sparse,
            )
        values *= rng.random(shape) < probability
    return values


def _rows(shape: tuple[int, ...], filler: str) -> int:
    """``shape(0)``, which Caffe's per-row fillers read; a scalar blob has none."""
    if not shape:
        raise NetDefinitionError(f"the {filler} filler needs a blob with at least one axis", received="a scalar blob")
    return shape[0]


def _positive_unitball(filler: pb.FillerParameter, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """U(0, 1), then every row (``count / shape[0]`` values) divided by its sum."""
    rows = _rows(shape, "positive_unitball")
    values = _uniform_values(shape, np.float32(0), np.float32(1), rng).reshape(rows, -1)
    values /= values.sum(axis=1, keepdims=True, dtype=np.float32)
    return values.reshape(shape)


def _fan(filler: pb.FillerParameter, shape: tuple[int, ...], name: str) -> np.float32:
    """Caffe's n: fan_in = count / shape[0], fan_out = count / shape[1] (count for 1-D)."""
    count = math.prod(shape)
    fan_in = count // _rows(shape, name)
    fan_out = count // shape[1] if len(shape) > 1 else count
    if filler.variance_norm == pb.FillerParameter.AVERAGE:
        return np.float32((fan_in + fan_out) / np.float32(2))
    if filler.variance_norm == pb.FillerParameter.FAN_OUT:
        return np.float32(fan_out)
    return np.float32(fan_in)


def _xavier(filler: pb.FillerParameter, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """U(-a, a) with a = sqrt(3 / n)."""
    bound = np.sqrt(np.float32(3) / _fan(filler, shape, "xavier"))
    return _uniform_values(shape, -bound, bound, rng)


def _msra(filler: pb.FillerParameter, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """N(0, sqrt(2 / n))."""
    std = np.sqrt(np.float32(2) / _fan(filler, shape, "msra"))
    return _gaussian_values(shape, 0.0, float(std), rng)


def _bilinear(filler: pb.FillerParameter, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """The upsampling kernel of a (C, 1, K, K) Deconvolution, the same for every (out, in) pair.

    f = ceil(K / 2), c = (K - 1) / (2f); w(x, y) = (1 - |x/f - c|) (1 - |y/f - c|).
    """
    if len(shape) != 4:
        raise NetDefinitionError("the bilinear filler needs a 4-D blob", received=str(shape))
    height, width = shape[2], shape[3]
    if height != width:
        raise NetDefinitionError("the bilinear filler needs a square kernel", received=f"{height}×{width}")
    f = math.ceil(width / 2.0)
    c = np.float32((width - 1) / (2.0 * f))
    x = np.arange(width, dtype=np.float32)
    along = np.float32(1) - np.abs(x / np.float32(f) - c)
    kernel = (along[:, None] * along[None, :]).astype(np.float32)
    return np.broadcast_to(kernel, shape).copy()


FILLERS: dict[str, Filler] = {
    "constant": _constant,
    "uniform": _uniform,
    "gaussian": _gaussian,
    "positive_unitball": _positive_unitball,
    "xavier": _xavier,
    "msra": _msra,
    "bilinear": _bilinear,
}


def fill(filler: pb.FillerParameter, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """A float32 array of ``shape`` filled as Caffe's ``GetFiller(filler)->Fill`` would."""
    rule = FILLERS.get(filler.type)
    if rule is None:
        close = difflib.get_close_matches(filler.type, list(FILLERS), n=1)
        raise NetDefinitionError(
            f"unknown filler type '{filler.type}'",
            expected=", ".join(FILLERS),
            received=filler.type,
            hint=f"did you mean '{close[0]}'?" if close else None,
        )
    if math.prod(shape) == 0:
        raise NetDefinitionError(f"cannot fill a blob with no elements (shape {shape})")
    if filler.type != "gaussian" and filler.sparse != -1:
        raise NetDefinitionError(f"the {filler.type} filler does not support sparse", received=filler.sparse)
    return rule(filler, tuple(shape), rng)


def _constant_filler(value: float) -> pb.FillerParameter:
    return pb.FillerParameter(type="constant", value=value)


def _scale_fillers(node: Node) -> list[pb.FillerParameter]:
    """Scale with one bottom learns the scale (default 1), then the bias; with two only the bias."""
    param = node.param.scale_param
    bias = param.bias_filler
    if len(node.bottoms) > 1:
        return [bias]
    return [param.filler if param.HasField("filler") else _constant_filler(1.0), bias]


def _recurrent_fillers(node: Node) -> list[pb.FillerParameter]:
    """RNN/LSTM: the unrolled net's InnerProducts take weight_filler (2-D) and bias_filler (1-D)."""
    param = node.param.recurrent_param
    return [param.weight_filler if len(blob.shape) > 1 else param.bias_filler for blob in node.blobs]


def layer_fillers(node: Node) -> list[pb.FillerParameter]:
    """The filler of each learnable blob of a layer, defaults as in the layer's ``LayerSetUp``.

    An unset FillerParameter is ``constant`` 0, so unset weight and bias fillers of
    Convolution, InnerProduct and Embed give zeros, as in Caffe.
    """
    layer = node.param
    kind = node.type
    if kind in ("Convolution", "Deconvolution"):
        pair = [layer.convolution_param.weight_filler, layer.convolution_param.bias_filler]
    elif kind == "InnerProduct":
        pair = [layer.inner_product_param.weight_filler, layer.inner_product_param.bias_filler]
    elif kind == "Embed":
        pair = [layer.embed_param.weight_filler, layer.embed_param.bias_filler]
    elif kind == "PReLU":
        pair = [layer.prelu_param.filler if layer.prelu_param.HasField("filler") else _constant_filler(0.25)]
    elif kind == "Scale":
        pair = _scale_fillers(node)
    elif kind == "Bias":
        pair = [layer.bias_param.filler]
    elif kind in ("RNN", "LSTM"):
        pair = _recurrent_fillers(node)
    elif kind in ("BatchNorm", "Parameter"):
        # BatchNorm zeroes its statistics; Parameter's blob starts as Caffe's zeroed memory.
        pair = [_constant_filler(0.0)] * len(node.blobs)
    else:
        raise node.error(f"netdef has no initialization rule for the learnable blobs of {kind} layers")
    return pair[: len(node.blobs)]


def initial_blobs(net: Net, seed: int = 0) -> dict[str, list[np.ndarray]]:
    """Every layer's learnable blobs as its fillers make them (Caffe shapes), by layer name.

    A blob shared by ``param { name: ... }`` gets its owner's value, as Caffe's
    ``ShareData`` makes the sharer read the owner's memory.
    """
    values: dict[tuple[str, int], np.ndarray] = {}
    blobs: dict[str, list[np.ndarray]] = {}
    for node in net.nodes:
        if not node.blobs:
            continue
        fillers = layer_fillers(node)
        arrays = []
        for blob, filler in zip(node.blobs, fillers, strict=True):
            if blob.owner is not None:
                array = values[blob.owner].reshape(blob.shape)
            else:
                rng = np.random.default_rng([seed % 2**64, node.index, blob.index])
                try:
                    array = fill(filler, blob.shape, rng)
                except NetDefinitionError as error:
                    raise error.located(node.location, node.name, node.type) from None
            values[(node.name, blob.index)] = array
            arrays.append(array)
        blobs[node.name] = arrays
    return blobs


def initialize_weights(compiled: Compiled, seed: int = 0) -> None:
    """Set every learnable blob of the compiled model from its layer's fillers (deterministic for a seed)."""
    from netdef.keras.weights import set_caffe_blobs

    set_caffe_blobs(compiled, initial_blobs(compiled.net, seed))
