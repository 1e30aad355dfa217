"""Caffe's Scale and Bias layers: a multiplier or addend broadcast along chosen axes.

Caffe applies the blob along ``num_axes`` consecutive axes starting at ``axis``; in a
channels-last tensor those axes need not be consecutive (Caffe's axes (1, 2) of a 4-D blob
are axes 3 and 1 inside the model). The layers therefore take the *set* of axes of the
tensor they receive, and the learned blob is stored with its axes in increasing order
(``[input_shape[a] for a in sorted(axes)]``), so the weight converter transposes Caffe's blob
into that order. Keras has no layer that broadcasts a learned tensor along arbitrary axes.
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
from keras import ops


def _canonical(axes: Sequence[int], rank: int, layer: str) -> list[int]:
    canonical = [a % rank if -rank <= a < rank else None for a in axes]
    if None in canonical or len(set(canonical)) != len(canonical):
        raise ValueError(f"{layer} expected distinct axes in [{-rank}, {rank}), received {list(axes)}")
    return canonical  # type: ignore[return-value]


def _align(value, axes: Sequence[int], rank: int):
    """Broadcast ``value`` (whose axis ``i`` runs along input axis ``axes[i]``) to ``rank`` axes."""
    order = sorted(range(len(axes)), key=lambda i: axes[i])
    if order != list(range(len(axes))):
        value = ops.transpose(value, order)
    present = set(axes)
    for position in range(rank):
        if position not in present:
            value = ops.expand_dims(value, position)
    return value


def _parameter_shape(input_shape: Sequence[int | None], axes: Sequence[int], layer: str) -> tuple[int, ...]:
    shape = tuple(input_shape[a] for a in sorted(axes))
    if None in shape:
        raise ValueError(f"{layer} expected static sizes on axes {sorted(axes)}, received shape {tuple(input_shape)}")
    return shape  # type: ignore[return-value]


def _split_inputs(input_shape, layer: str):
    """``(x shape, second input's shape or None)`` from a build's single shape or pair of shapes."""
    if isinstance(input_shape, (list, tuple)) and input_shape and isinstance(input_shape[0], (list, tuple)):
        if len(input_shape) != 2:
            raise ValueError(f"{layer} expected one input or two ([x, factor]), received {len(input_shape)}")
        return tuple(input_shape[0]), tuple(input_shape[1])
    return tuple(input_shape), None


def _check_operand(x_shape, operand_shape, axes: Sequence[int], layer: str) -> None:
    if len(operand_shape) != len(axes):
        raise ValueError(
            f"{layer} expected a second input with one axis per entry of axes {list(axes)}, "
            f"received shape {operand_shape}"
        )
    for size, axis in zip(operand_shape, axes, strict=True):
        if size is not None and x_shape[axis] is not None and size != x_shape[axis]:
            raise ValueError(
                f"{layer}: the second input's shape {operand_shape} does not match the input's shape "
                f"{x_shape} along axes {list(axes)}"
            )


@keras.saving.register_keras_serializable(package="netdef")
class Scale(keras.layers.Layer):
    """``y = x·s (+ b)`` with ``s`` broadcast along ``axes`` of ``x`` (Caffe's Scale).

    One input: ``s`` is the variable ``scale`` of shape ``[x.shape[a] for a in sorted(axes)]``
    (initialised to ones, Caffe's default filler). Two inputs ``[x, s]``: ``s`` is the second
    input, whose axis ``i`` runs along ``x``'s axis ``axes[i]`` (so ``axes`` is given in the
    second input's axis order and may be unsorted); ``axes=[]`` multiplies by a scalar.
    With ``bias_term`` a variable ``bias`` of the sorted shape is added in both forms
    (Caffe's internal Bias layer, default filler 0). Caffe's blobs are ``[scale, bias]``
    (one input) or ``[bias]`` (two inputs), in the same order as this layer's weights.
    """

    def __init__(
        self,
        axes: Sequence[int] = (),
        bias_term: bool = False,
        scale_initializer="ones",
        bias_initializer="zeros",
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        self.axes = [int(a) for a in axes]
        self.bias_term = bool(bias_term)
        self.scale_initializer = keras.initializers.get(scale_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.two_inputs = False

    def build(self, input_shape) -> None:
        x_shape, operand_shape = _split_inputs(input_shape, "Scale")
        self._axes = _canonical(self.axes, len(x_shape), "Scale")
        self.two_inputs = operand_shape is not None
        if self.two_inputs:
            _check_operand(x_shape, operand_shape, self._axes, "Scale")
        else:
            shape = _parameter_shape(x_shape, self._axes, "Scale")
            self.scale = self.add_weight(name="scale", shape=shape, initializer=self.scale_initializer)
        if self.bias_term:
            shape = _parameter_shape(x_shape, self._axes, "Scale")
            self.bias = self.add_weight(name="bias", shape=shape, initializer=self.bias_initializer)

    def call(self, inputs):
        if self.two_inputs:
            x, factor = inputs
            factor = _align(factor, self._axes, len(x.shape))
        else:
            x = inputs
            factor = _align(ops.cast(self.scale, x.dtype), sorted(self._axes), len(x.shape))
        y = x * factor
        if self.bias_term:
            y = y + _align(ops.cast(self.bias, x.dtype), sorted(self._axes), len(x.shape))
        return y

    def compute_output_shape(self, input_shape):
        return _split_inputs(input_shape, "Scale")[0]

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(
            {
                "axes": list(self.axes),
                "bias_term": self.bias_term,
                "scale_initializer": keras.initializers.serialize(self.scale_initializer),
                "bias_initializer": keras.initializers.serialize(self.bias_initializer),
            }
        )
        return config


@keras.saving.register_keras_serializable(package="netdef")
class Bias(keras.layers.Layer):
    """``y = x + b`` with ``b`` broadcast along ``axes`` of ``x`` (Caffe's Bias).

    One input: ``b`` is the variable ``bias`` of shape ``[x.shape[a] for a in sorted(axes)]``
    (initialised to zeros, Caffe's default filler). Two inputs ``[x, b]``: ``b`` is the second
    input, whose axis ``i`` runs along ``x``'s axis ``axes[i]``; ``axes=[]`` adds a scalar.
    """

    def __init__(self, axes: Sequence[int] = (), bias_initializer="zeros", **kwargs) -> None:
        super().__init__(**kwargs)
        self.axes = [int(a) for a in axes]
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.two_inputs = False

    def build(self, input_shape) -> None:
        x_shape, operand_shape = _split_inputs(input_shape, "Bias")
        self._axes = _canonical(self.axes, len(x_shape), "Bias")
        self.two_inputs = operand_shape is not None
        if self.two_inputs:
            _check_operand(x_shape, operand_shape, self._axes, "Bias")
        else:
            shape = _parameter_shape(x_shape, self._axes, "Bias")
            self.bias = self.add_weight(name="bias", shape=shape, initializer=self.bias_initializer)

    def call(self, inputs):
        if self.two_inputs:
            x, addend = inputs
            return x + _align(addend, self._axes, len(x.shape))
        return inputs + _align(ops.cast(self.bias, inputs.dtype), sorted(self._axes), len(inputs.shape))

    def compute_output_shape(self, input_shape):
        return _split_inputs(input_shape, "Bias")[0]

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(
            {"axes": list(self.axes), "bias_initializer": keras.initializers.serialize(self.bias_initializer)}
        )
        return config
