"""Caffe's routing layers: slicing, tiling, reductions, ArgMax, lookups and row selection.

Layers documented as "Caffe layout" receive and return tensors in Caffe's axis order
(the compiler permutes rank-4/5 blobs back first) because their meaning depends on the
order itself: Reduction reduces *all axes from* ``axis`` on, ArgMax without an axis ranks
the flattened ``C·H·W`` values per sample and returns those flat indices. The others take
an axis of the tensor they receive, or work on axis 0, which is the batch in both layouts.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import Any

import keras
from keras import ops

from ._caffe_ops import canonical_axis, check_choice, count


@keras.saving.register_keras_serializable(package="netdef")
class Slice(keras.layers.Layer):
    """Caffe's Slice layer: cut ``axis`` at ``points``, returning a list of tensors.

    ``points`` are Caffe's ``slice_point`` values (strictly increasing, each inside the
    axis); with none, the axis is split into ``num_outputs`` equal parts, which Caffe takes
    from its number of tops. The result is always a list, even of one tensor.
    """

    def __init__(self, axis: int, points: Sequence[int] = (), num_outputs: int | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.axis = int(axis)
        self.points = [int(p) for p in points]
        self.num_outputs = None if num_outputs is None else int(num_outputs)
        if not self.points and (self.num_outputs is None or self.num_outputs < 1):
            raise ValueError(f"Slice: expected slice points or num_outputs >= 1, received num_outputs={num_outputs}")

    def build(self, input_shape: Sequence[int | None]) -> None:
        dim = input_shape[canonical_axis(self.axis, len(input_shape), "Slice")]
        if dim is None:
            return
        if self.points:
            bounds = [0, *self.points, dim]
            if any(a >= b for a, b in itertools.pairwise(bounds)):
                raise ValueError(
                    f"Slice: expected strictly increasing slice points inside (0, {dim}), received {self.points}"
                )
        elif dim % self.num_outputs:
            raise ValueError(f"Slice: expected axis size {dim} to be divisible by {self.num_outputs} outputs")

    def call(self, x: Any) -> list[Any]:
        return list(ops.split(x, self.points or self.num_outputs, axis=self.axis))

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "axis": self.axis, "points": self.points, "num_outputs": self.num_outputs}


@keras.saving.register_keras_serializable(package="netdef")
class Tile(keras.layers.Layer):
    """Caffe's Tile layer: repeat the whole block from ``axis`` on, ``tiles`` times along ``axis``.

    Element ``j`` of the axis lands at ``t·dim + j`` for every ``t`` (``numpy.tile``), not at
    ``j·tiles + t`` as ``keras.ops.repeat`` would place it.
    """

    def __init__(self, axis: int = 1, tiles: int = 1, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if int(tiles) < 1:
            raise ValueError(f"Tile: expected tiles >= 1, received {tiles}")
        self.axis = int(axis)
        self.tiles = int(tiles)

    def call(self, x: Any) -> Any:
        rank = len(x.shape)
        axis = canonical_axis(self.axis, rank, "Tile")
        return ops.tile(x, [self.tiles if i == axis else 1 for i in range(rank)])

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "axis": self.axis, "tiles": self.tiles}


@keras.saving.register_keras_serializable(package="netdef")
class Reduction(keras.layers.Layer):
    """Caffe's Reduction layer, Caffe layout: reduce *every* axis from ``axis`` on.

    The output has shape ``shape[:axis]`` (a scalar for axis 0), times ``coeff``. MEAN is
    Caffe's ``sum · (coeff / count)``. Keras reductions take a list of axes and keep
    none of Caffe's "all trailing axes" rule, which depends on Caffe's axis order.
    """

    def __init__(self, operation: str = "sum", axis: int = 0, coeff: float = 1.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        check_choice("Reduction", "operation", operation, ("sum", "asum", "sumsq", "mean"))
        self.operation = operation
        self.axis = int(axis)
        self.coeff = float(coeff)

    def call(self, x: Any) -> Any:
        rank = len(x.shape)
        axes = tuple(range(canonical_axis(self.axis, rank, "Reduction"), rank))
        if self.operation == "asum":
            x = ops.abs(x)
        elif self.operation == "sumsq":
            x = ops.square(x)
        total = ops.sum(x, axis=axes)
        if self.operation == "mean":
            return total * (self.coeff / ops.cast(count(x, axes[0]), x.dtype))
        return total if self.coeff == 1 else total * self.coeff

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "operation": self.operation, "axis": self.axis, "coeff": self.coeff}


def caffe_top_k_indices(x: Any, k: int) -> Any:
    """Indices of the ``k`` largest values along the last axis, in Caffe's order.

    Caffe's ArgMax sorts ``(value, index)`` pairs with ``std::greater``, so among equal
    values the *higher* index comes first. ``keras.ops.top_k`` promises no tie order on
    every backend (TensorFlow's puts the lower index first), so the ranks are picked one at
    a time: the largest value not yet taken, and among its ties the highest index. That is
    ``O(k·n)``, fine for Caffe's small ``top_k``. Returns int32 indices of shape
    ``x.shape[:-1] + (k,)``.
    """
    positions = ops.arange(x.shape[-1], dtype="int32")
    taken = ops.zeros_like(x, dtype="bool")
    indices = []
    for _ in range(k):
        remaining = ops.where(taken, float("-inf"), x)
        best = ops.max(remaining, axis=-1, keepdims=True)
        ties = ops.logical_and(ops.logical_not(taken), remaining == best)
        index = ops.max(ops.where(ties, positions, -1), axis=-1, keepdims=True)
        taken = ops.logical_or(taken, positions == index)
        indices.append(index)
    return ops.concatenate(indices, axis=-1)


@keras.saving.register_keras_serializable(package="netdef")
class ArgMax(keras.layers.Layer):
    """Caffe's ArgMax layer, Caffe layout; indices are returned as floats, as Caffe stores them.

    Without ``axis``: per sample over all of ``count(1)`` (flat ``C·H·W`` indices), output
    ``(N, 1, top_k)`` of indices or, with ``out_max_val``, ``(N, 2, top_k)`` holding the
    indices then the values; padded with trailing 1s to the input's rank when that exceeds
    3. With ``axis``: that axis becomes ``top_k`` long and holds indices, or the values
    alone when ``out_max_val``. Ties rank the higher index first (see
    :func:`caffe_top_k_indices`). Caffe has no backward, so no gradient passes.
    """

    def __init__(self, out_max_val: bool = False, top_k: int = 1, axis: int | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if int(top_k) < 1:
            raise ValueError(f"ArgMax: expected top_k >= 1, received {top_k}")
        self.out_max_val = bool(out_max_val)
        self.top_k = int(top_k)
        self.axis = None if axis is None else int(axis)

    def call(self, x: Any) -> Any:
        x = ops.stop_gradient(x)
        rank = len(x.shape)
        axis = None if self.axis is None else canonical_axis(self.axis, rank, "ArgMax")
        ranked = math.prod(x.shape[1:]) if axis is None else x.shape[axis]
        if ranked < self.top_k:
            raise ValueError(f"ArgMax: expected top_k <= {ranked}, the number of values ranked, received {self.top_k}")
        if axis is not None:
            last = ops.moveaxis(x, axis, -1)
            if self.out_max_val:
                top = ops.top_k(last, self.top_k)[0]
            else:
                top = ops.cast(caffe_top_k_indices(last, self.top_k), x.dtype)
            return ops.moveaxis(top, -1, axis)
        flat = ops.reshape(x, (-1, count(x, 1)))
        indices = caffe_top_k_indices(flat, self.top_k)
        rows = [ops.cast(indices, x.dtype)]
        if self.out_max_val:
            rows.append(ops.take_along_axis(flat, indices, axis=-1))
        top = ops.stack(rows, axis=1)
        return ops.reshape(top, (-1, len(rows), self.top_k, *[1] * (rank - 3)))

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "out_max_val": self.out_max_val, "top_k": self.top_k, "axis": self.axis}


@keras.saving.register_keras_serializable(package="netdef")
class CaffeEmbed(keras.layers.Layer):
    """Caffe's Embed layer, Caffe layout: ``y[..., :] = embeddings[int(x)] + bias``.

    The indices arrive as floats holding integers (Caffe blobs are float) and are truncated
    toward zero as Caffe's ``static_cast<int>`` does; Keras's Embedding expects integer
    input. Output shape ``x.shape + (output_dim,)``. Weights: ``embeddings``
    ``(input_dim, output_dim)`` is Caffe's blob 0 unchanged, ``bias`` ``(output_dim,)`` its
    blob 1 (when ``bias_term``); both start at 0, Caffe's default filler. No gradient
    reaches the indices, as in Caffe.
    """

    def __init__(self, input_dim: int, output_dim: int, bias_term: bool = True, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.input_dim = int(input_dim)
        self.output_dim = int(output_dim)
        self.bias_term = bool(bias_term)

    def build(self, input_shape: Sequence[int | None]) -> None:
        shape = (self.input_dim, self.output_dim)
        self.embeddings = self.add_weight(name="embeddings", shape=shape, initializer="zeros")
        if self.bias_term:
            self.bias = self.add_weight(name="bias", shape=(self.output_dim,), initializer="zeros")

    def call(self, x: Any) -> Any:
        y = ops.take(self.embeddings, ops.cast(x, "int32"), axis=0)
        return y + self.bias if self.bias_term else y

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        return {**config, "input_dim": self.input_dim, "output_dim": self.output_dim, "bias_term": self.bias_term}


@keras.saving.register_keras_serializable(package="netdef")
class BatchReindex(keras.layers.Layer):
    """Caffe's BatchReindex layer: ``[x, indices] -> x[int(indices)]`` along axis 0.

    ``indices`` is a 1-D float blob; the result has ``len(indices)`` rows, repeats allowed,
    and the gradient of a repeated row is summed into its source row, as in Caffe.
    """

    def call(self, inputs: Sequence[Any]) -> Any:
        x, indices = inputs
        return ops.take(x, ops.cast(indices, "int32"), axis=0)


@keras.saving.register_keras_serializable(package="netdef")
class Filter(keras.layers.Layer):
    """Caffe's Filter layer: ``[*xs, selector]`` -> the rows of each ``x`` where ``selector != 0``.

    ``selector`` has shape ``(N,)`` or ``(N, 1, ...)``. Returns a list (one tensor per
    ``x``) whose batch size depends on the data, so the output's axis 0 is dynamic (and the
    layer cannot be XLA-compiled). Caffe's first reshape reports the full batch for shape
    inference only; the data is always the selected rows.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        # A data-dependent output shape cannot be compiled by XLA; Keras's fit then runs it uncompiled.
        self.supports_jit = False

    def call(self, inputs: Sequence[Any]) -> list[Any]:
        *xs, selector = inputs
        rows = ops.nonzero(ops.reshape(selector, (-1,)))[0]
        return [ops.take(x, rows, axis=0) for x in xs]


@keras.saving.register_keras_serializable(package="netdef")
class CaffeParameter(keras.layers.Layer):
    """Caffe's Parameter layer: outputs its weight ``value`` (Caffe's blob 0, shape ``shape``).

    Caffe's layer has no bottoms; Keras layers need an input to sit in a functional graph,
    so this one is called on any tensor and ignores it. The output has no batch axis: it is
    the blob itself, zero-initialised as Caffe's unfilled blob, and trainable.
    """

    def __init__(self, shape: Sequence[int], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        # Not ``self.shape``: Keras's tree utilities take objects with ``shape`` and ``dtype`` for tensors.
        self.blob_shape = [int(d) for d in shape]

    def build(self, input_shape: Any) -> None:
        self.value = self.add_weight(name="value", shape=tuple(self.blob_shape), initializer="zeros")

    def call(self, inputs: Any) -> Any:
        return ops.convert_to_tensor(self.value)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "shape": self.blob_shape}
