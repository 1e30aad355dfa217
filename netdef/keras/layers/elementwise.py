"""Caffe's neuron and Eltwise layers that Keras has no exact built-in for.

Every layer here works elementwise, so it is indifferent to layout; only PReLU's ``axis``
(the channel axis of the tensor it receives) depends on it. Each class's docstring says
where Caffe's forward or backward pass differs from the obvious Keras formula.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import keras
from keras import ops

from ._caffe_ops import canonical_axis, check_choice


@keras.saving.register_keras_serializable(package="netdef")
class Power(keras.layers.Layer):
    """Caffe's Power layer: ``y = (shift + scale·x) ** power``.

    Caffe special-cases ``power·scale == 0``: the output is then the constant 1 (power 0,
    even where the base is 0) or ``shift ** power`` (scale 0), with zero gradient, where a
    plain ``pow`` would give ``0 ** 0`` gradients of NaN. ``power == 1`` is the affine map
    with gradient ``scale`` everywhere. Otherwise the gradient is
    ``power·scale·(shift + scale·x) ** (power - 1)``; Caffe evaluates it as
    ``power·scale·y / (shift + scale·x)``, which is NaN at a zero base where this layer
    (and the true derivative) gives a finite value.
    """

    def __init__(self, power: float = 1.0, scale: float = 1.0, shift: float = 0.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.power = float(power)
        self.scale = float(scale)
        self.shift = float(shift)

    def call(self, x: Any) -> Any:
        if self.power * self.scale == 0:
            if self.power == 0:
                return ops.ones_like(x)
            return ops.power(ops.full_like(x, self.shift), self.power)
        base = x
        if self.scale != 1:
            base = base * self.scale
        if self.shift != 0:
            base = base + self.shift
        if self.power == 1:
            return base
        if self.power == 2:
            return ops.square(base)
        return ops.power(base, self.power)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "power": self.power, "scale": self.scale, "shift": self.shift}


def _log_base(layer: str, base: float) -> float:
    """Natural log of Caffe's ``base`` parameter, where -1 stands for e (exactly 1)."""
    if base == -1:
        return 1.0
    if base <= 0:
        raise ValueError(f"{layer}: expected base > 0 or -1 (for e), received {base}")
    return math.log(base)


@keras.saving.register_keras_serializable(package="netdef")
class CaffeExp(keras.layers.Layer):
    """Caffe's Exp layer: ``y = base ** (shift + scale·x)``, ``base == -1`` meaning e.

    Caffe computes ``outer·exp(inner·x)`` with ``inner = ln(base)·scale`` and
    ``outer = base ** shift`` (1 when shift is 0), not ``exp(ln(base)·(shift + scale·x))``;
    the two differ in float rounding, so this layer uses Caffe's factorisation.
    """

    def __init__(self, base: float = -1.0, scale: float = 1.0, shift: float = 0.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.base = float(base)
        self.scale = float(scale)
        self.shift = float(shift)
        self._inner_scale = _log_base("CaffeExp", self.base) * self.scale
        if self.shift == 0:
            self._outer_scale = 1.0
        else:
            self._outer_scale = math.exp(self.shift) if self.base == -1 else math.pow(self.base, self.shift)

    def call(self, x: Any) -> Any:
        y = ops.exp(x if self._inner_scale == 1 else x * self._inner_scale)
        return y if self._outer_scale == 1 else y * self._outer_scale

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "base": self.base, "scale": self.scale, "shift": self.shift}


@keras.saving.register_keras_serializable(package="netdef")
class CaffeLog(keras.layers.Layer):
    """Caffe's Log layer: ``y = log_base(shift + scale·x)``, ``base == -1`` meaning e.

    Computed as Caffe does, ``ln(shift + scale·x) · (1 / ln(base))``; a negative argument
    gives NaN as in Caffe (no clamping).
    """

    def __init__(self, base: float = -1.0, scale: float = 1.0, shift: float = 0.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.base = float(base)
        self.scale = float(scale)
        self.shift = float(shift)
        self._base_scale = 1.0 / _log_base("CaffeLog", self.base)

    def call(self, x: Any) -> Any:
        if self.scale != 1:
            x = x * self.scale
        if self.shift != 0:
            x = x + self.shift
        y = ops.log(x)
        return y if self._base_scale == 1 else y * self._base_scale

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "base": self.base, "scale": self.scale, "shift": self.shift}


@keras.saving.register_keras_serializable(package="netdef")
class BNLL(keras.layers.Layer):
    """Caffe's BNLL ("binomial normal log likelihood"), a softplus written Caffe's way.

    ``x > 0 ? x + log(1 + e^-x) : log(1 + e^x)``, so neither branch overflows. Each branch
    is fed only the inputs it selects (the other gets 0), otherwise the discarded branch's
    ``e^-x`` overflows for large negative x and poisons the gradient with ``0·inf``. The
    gradient is ``sigmoid(x)``; Caffe evaluates it at ``min(x, 50)``, which is the same
    number in float32.
    """

    def call(self, x: Any) -> Any:
        positive = x > 0
        x_pos = ops.where(positive, x, 0.0)
        x_neg = ops.where(positive, 0.0, x)
        return ops.where(positive, x_pos + ops.log1p(ops.exp(-x_pos)), ops.log1p(ops.exp(x_neg)))


@keras.saving.register_keras_serializable(package="netdef")
class Threshold(keras.layers.Layer):
    """Caffe's Threshold layer: ``1`` where ``x > threshold`` (strictly), else ``0``.

    Caffe has no backward for it, and this layer passes no gradient.
    """

    def __init__(self, threshold: float = 0.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.threshold = float(threshold)

    def call(self, x: Any) -> Any:
        return ops.cast(x > self.threshold, x.dtype)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "threshold": self.threshold}


@keras.saving.register_keras_serializable(package="netdef")
class Clip(keras.layers.Layer):
    """Caffe's Clip layer: ``max(min, min(x, max))``.

    The gradient is 1 on the closed interval ``[min, max]`` (bounds included) and 0 outside,
    as in Caffe's backward; ``keras.ops.clip``'s gradient at the bounds depends on the
    backend. NaN maps to ``min``, as Caffe's ``std::max(min, std::min(NaN, max))`` does.
    """

    # ``min`` and ``max`` shadow builtins on purpose: they are Caffe's field names.
    def __init__(self, min: float, max: float, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.min = float(min)
        self.max = float(max)

    def call(self, x: Any) -> Any:
        return ops.where(x >= self.min, ops.where(x <= self.max, x, self.max), self.min)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "min": self.min, "max": self.max}


@keras.saving.register_keras_serializable(package="netdef")
class Swish(keras.layers.Layer):
    """Caffe's Swish layer: ``x·sigmoid(beta·x)`` (Keras's ``swish`` has no ``beta``)."""

    def __init__(self, beta: float = 1.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.beta = float(beta)

    def call(self, x: Any) -> Any:
        return x * ops.sigmoid(x * self.beta)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "beta": self.beta}


@keras.saving.register_keras_serializable(package="netdef")
class AbsVal(keras.layers.Layer):
    """Caffe's AbsVal layer: ``|x|``, with gradient ``sign(x)`` (0 at 0, as Caffe's)."""

    def call(self, x: Any) -> Any:
        return ops.abs(x)


@keras.saving.register_keras_serializable(package="netdef")
class PReLU(keras.layers.Layer):
    """Caffe's PReLU: ``y = x`` for ``x > 0``, else ``slope_c·x``.

    Weight ``slope``: shape ``()`` when ``channel_shared``, else ``(C,)`` for the channel
    axis ``axis`` of the received tensor (Caffe's blob 0, unchanged); initialised to 0.25,
    Caffe's default filler. Unlike Keras's PReLU (one slope per element of a feature map
    unless ``shared_axes`` is spelled out per layout), Caffe has one slope per channel or
    one in all. At ``x == 0`` the input gradient is the slope, as in Caffe's backward
    (``max(x,0) + a·min(x,0)`` would give ``1 + a`` on some backends).
    """

    def __init__(self, channel_shared: bool = False, axis: int = -1, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.channel_shared = bool(channel_shared)
        self.axis = int(axis)

    def build(self, input_shape: Sequence[int | None]) -> None:
        rank = len(input_shape)
        if rank < 2:
            raise ValueError(f"PReLU: expected an input of rank >= 2, received shape {tuple(input_shape)}")
        axis = canonical_axis(self.axis, rank, "PReLU")
        shape: tuple[int, ...] = ()
        self._broadcast_shape: list[int] = []
        if not self.channel_shared:
            channels = input_shape[axis]
            if channels is None:
                raise ValueError(f"PReLU: expected a static channel axis {self.axis}, received shape {input_shape}")
            shape = (channels,)
            self._broadcast_shape = [channels if i == axis else 1 for i in range(rank)]
        self.slope = self.add_weight(name="slope", shape=shape, initializer=keras.initializers.Constant(0.25))

    def call(self, x: Any) -> Any:
        slope = ops.reshape(self.slope, self._broadcast_shape) if self._broadcast_shape else self.slope
        return ops.where(x > 0, x, x * slope)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "channel_shared": self.channel_shared, "axis": self.axis}


@keras.saving.register_keras_serializable(package="netdef")
class Eltwise(keras.layers.Layer):
    """Caffe's Eltwise layer on two or more same-shaped inputs: PROD, SUM or MAX.

    ``coeffs`` (SUM only, one per input) weights the sum, ``Σ coeff_i·x_i``, which Keras's
    ``Add`` cannot. MAX sends the gradient to exactly one input, the one Caffe's forward
    recorded: Caffe compares ``x0 > x1`` (so a tie between the first two goes to the
    *second*) and then each later input with a strict ``>`` (a tie keeps the earlier
    winner). Chaining ``where`` the same way reproduces that routing under autodiff;
    ``keras.ops.maximum`` splits or misroutes ties depending on the backend. PROD's
    gradient is the product of the other inputs (Caffe's default ``stable_prod_grad``).
    """

    def __init__(self, operation: str = "sum", coeffs: Sequence[float] | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        check_choice("Eltwise", "operation", operation, ("prod", "sum", "max"))
        if coeffs is not None and operation != "sum":
            raise ValueError(f"Eltwise: coeffs apply only to operation 'sum', received operation {operation!r}")
        self.operation = operation
        self.coeffs = None if coeffs is None else [float(c) for c in coeffs]

    def build(self, input_shape: Sequence[Sequence[int | None]]) -> None:
        if len(input_shape) < 2:
            raise ValueError(f"Eltwise: expected at least 2 inputs, received {len(input_shape)}")
        if self.coeffs is not None and len(self.coeffs) != len(input_shape):
            raise ValueError(f"Eltwise: expected one coeff per input ({len(input_shape)}), received {len(self.coeffs)}")

    def call(self, inputs: Sequence[Any]) -> Any:
        first, *rest = inputs
        if self.operation == "prod":
            for x in rest:
                first = first * x
            return first
        if self.operation == "sum":
            coeffs = self.coeffs or [1.0] * len(inputs)
            terms = [x if c == 1 else x * c for x, c in zip(inputs, coeffs, strict=True)]
            total = terms[0]
            for term in terms[1:]:
                total = total + term
            return total
        second, *later = rest
        top = ops.where(first > second, first, second)
        for x in later:
            top = ops.where(x > top, x, top)
        return top

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "operation": self.operation, "coeffs": self.coeffs}
