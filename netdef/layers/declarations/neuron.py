"""Element-wise and normalisation layers: ReLU … Dropout, MVN, BatchNorm, Softmax.

Caffe's Net lets any layer write its top over its bottom; a type is declared in-place
here when Caffe's *forward* pass is still right in place (all NeuronLayers, BatchNorm,
MVN, Softmax). AbsVal is the surprise: Caffe refuses to run it in place.
"""

from __future__ import annotations

from dataclasses import replace

from netdef.keras import layout as lay
from netdef.layers.declarations.common import declare, legacy, legacy4, require_axes
from netdef.layers.declarations.keras_plans import internal_axis, netdef_layer, single
from netdef.layers.registry import (
    KerasContext,
    KerasPlan,
    KerasRule,
    LayerContext,
    Shape,
    ShapeRule,
    WeightLink,
    exactly,
    no_blobs,
)


def _same_shape(ctx: LayerContext) -> list[Shape]:
    """Top has the bottom's shape (Caffe's ``NeuronLayer::Reshape``)."""
    return [ctx.bottoms[0]]


def _neuron(
    type_name: str,
    params: tuple[str, ...] = (),
    *,
    shape: ShapeRule = _same_shape,
    blobs: ShapeRule = no_blobs,
    in_place: bool = True,
    **options: object,
) -> None:
    """One bottom, one top, in place unless told otherwise."""
    declare(
        type_name,
        bottoms=exactly(1),
        tops=exactly(1),
        shape=shape,
        blobs=blobs,
        params=params,
        in_place=in_place,
        **options,
    )


def _relu_keras(ctx: KerasContext) -> KerasPlan:
    """Caffe's leaky slope is Keras ReLU's ``negative_slope``."""
    slope = ctx.layer.relu_param.negative_slope
    return single(ctx, "keras.layers.ReLU", {"negative_slope": slope} if slope else {})


def _activation(name: str) -> KerasRule:
    def rule(ctx: KerasContext) -> KerasPlan:
        return single(ctx, "keras.layers.Activation", {"activation": name})

    return rule


def _elu_keras(ctx: KerasContext) -> KerasPlan:
    return single(ctx, "keras.layers.ELU", {"alpha": ctx.layer.elu_param.alpha})


def _dropout_keras(ctx: KerasContext) -> KerasPlan:
    """Caffe scales kept units by 1/(1−ratio) in TRAIN and passes through in TEST, as Keras does."""
    return single(ctx, "keras.layers.Dropout", {"rate": ctx.layer.dropout_param.dropout_ratio})


def _custom(name: str, field: str | None = None, attributes: tuple[str, ...] = ()) -> KerasRule:
    """A netdef elementwise layer whose arguments are fields of the layer's parameter message."""

    def rule(ctx: KerasContext) -> KerasPlan:
        param = getattr(ctx.layer, field) if field else None
        kwargs = {attribute: getattr(param, attribute) for attribute in attributes}
        return single(ctx, netdef_layer("elementwise", name), kwargs)

    return rule


_neuron("ReLU", ("relu_param",), keras=_relu_keras)
_neuron("Sigmoid", ("sigmoid_param",), keras=_activation("sigmoid"))
_neuron("TanH", ("tanh_param",), keras=_activation("tanh"))
_neuron("BNLL", keras=_custom("BNLL"))
_neuron("ELU", ("elu_param",), keras=_elu_keras)
_neuron("Swish", ("swish_param",), keras=_custom("Swish", "swish_param", ("beta",)))
_neuron("Power", ("power_param",), keras=_custom("Power", "power_param", ("power", "scale", "shift")))
_neuron("Dropout", ("dropout_param",), keras=_dropout_keras)
# Threshold's step has no gradient; Caffe's Backward is NOT_IMPLEMENTED.
_neuron(
    "Threshold",
    ("threshold_param",),
    no_gradient=frozenset({0}),
    keras=_custom("Threshold", "threshold_param", ("threshold",)),
)
_neuron("AbsVal", in_place=False, keras=_custom("AbsVal"))


def _check_base(ctx: LayerContext, field: str) -> float:
    base = getattr(ctx.layer, field).base
    if base != -1 and base <= 0:
        raise ctx.fail(
            f"{field}.base must be positive, or -1 for e",
            expected="base > 0 or base == -1",
            received=base,
        )
    return base


def _exp_shape(ctx: LayerContext) -> list[Shape]:
    """``base^(shift + scale·x)``; ``base: -1`` (the default) means e, other bases must be > 0."""
    _check_base(ctx, "exp_param")
    return [ctx.bottoms[0]]


def _log_shape(ctx: LayerContext) -> list[Shape]:
    """``log_base(shift + scale·x)``; like Exp, and base 1 is refused (division by log 1 = 0)."""
    if _check_base(ctx, "log_param") == 1:
        raise ctx.fail("log_param.base 1 has no logarithm", expected="base > 0, base != 1, or -1 for e")
    return [ctx.bottoms[0]]


def _clip_shape(ctx: LayerContext) -> list[Shape]:
    """``max(min, min(x, max))``; both bounds are required fields of ClipParameter.

    Without them Caffe would clip to [0, 0]; the proto marks them required, so a net
    without them is invalid rather than all zeros.
    """
    param = ctx.layer.clip_param
    missing = [f for f in ("min", "max") if not param.HasField(f)]
    if missing:
        raise ctx.fail(
            "Clip needs both bounds",
            expected="clip_param { min: … max: … }",
            received="no " + " and no ".join(missing),
        )
    return [ctx.bottoms[0]]


_neuron("Exp", ("exp_param",), shape=_exp_shape, keras=_custom("CaffeExp", "exp_param", ("base", "scale", "shift")))
_neuron("Log", ("log_param",), shape=_log_shape, keras=_custom("CaffeLog", "log_param", ("base", "scale", "shift")))
_neuron("Clip", ("clip_param",), shape=_clip_shape, keras=_custom("Clip", "clip_param", ("min", "max")))


def _prelu_shape(ctx: LayerContext) -> list[Shape]:
    """Same shape; the bottom needs a channel axis, read with Caffe's 4-D ``channels()``."""
    bottom = ctx.bottoms[0]
    require_axes(ctx, bottom, at_least=2, meaning="(N, C, ...)")
    legacy(ctx, bottom, 1)
    return [bottom]


def _prelu_blobs(ctx: LayerContext) -> list[Shape]:
    """One slope per channel ``(C,)``, or a single scalar ``()`` when channel_shared."""
    if ctx.layer.prelu_param.channel_shared:
        return [()]
    return [(legacy(ctx, ctx.bottoms[0], 1),)]


def _prelu_keras(ctx: KerasContext) -> KerasPlan:
    """One slope per channel (Caffe's axis 1, wherever the held layout puts it), or one for all."""
    shared = ctx.layer.prelu_param.channel_shared
    kwargs = {"channel_shared": shared, "axis": internal_axis(ctx, 1)}
    return single(ctx, netdef_layer("elementwise", "PReLU"), kwargs, weights=(WeightLink(0, 0, 0),))


_neuron("PReLU", ("prelu_param",), shape=_prelu_shape, blobs=_prelu_blobs, keras=_prelu_keras)


def _mvn_shape(ctx: LayerContext) -> list[Shape]:
    """Caffe reshapes the top to ``(num, channels, height, width)``: always 4-D.

    A ``(N, C)`` bottom therefore gives a ``(N, C, 1, 1)`` top; more than 4 axes is an
    error, as in Caffe's legacy accessors.
    """
    return [legacy4(ctx, ctx.bottoms[0])]


def _mvn_keras(ctx: KerasContext) -> KerasPlan:
    """MVN's top is always 4-D (Caffe reshapes to num, channels, height, width), held channels-last."""
    param = ctx.layer.mvn_param
    kwargs = {
        "normalize_variance": param.normalize_variance,
        "across_channels": param.across_channels,
        "eps": param.eps,
    }
    rank = len(ctx.bottoms[0])
    plan = single(ctx, netdef_layer("normalization", "MVN"), kwargs, layout=lay.internal_layout(rank))
    return replace(plan, top_layouts=(lay.CHANNELS_LAST,))


_neuron("MVN", ("mvn_param",), shape=_mvn_shape, keras=_mvn_keras)


def _softmax_shape(ctx: LayerContext) -> list[Shape]:
    """Same shape; ``axis`` (default 1, the channels) must exist."""
    bottom = ctx.bottoms[0]
    ctx.axis(ctx.layer.softmax_param.axis, len(bottom))
    return [bottom]


def _softmax_keras(ctx: KerasContext) -> KerasPlan:
    """Keras's Softmax subtracts the maximum as Caffe does; only the axis is translated."""
    return single(ctx, "keras.layers.Softmax", {"axis": internal_axis(ctx, ctx.layer.softmax_param.axis)})


_neuron("Softmax", ("softmax_param",), shape=_softmax_shape, keras=_softmax_keras)


def _batch_norm_shape(ctx: LayerContext) -> list[Shape]:
    """Same shape; statistics per channel (axis 1).

    Caffe's BatchNorm normalises only: the affine part is a separate Scale layer with
    ``bias_term: true`` (Keras's BatchNormalization does both). A bottom needs at least
    2 axes: Caffe accepts 1-D in LayerSetUp but then aborts reading ``shape(1)``.
    """
    bottom = ctx.bottoms[0]
    require_axes(ctx, bottom, at_least=2, meaning="(N, C, ...)")
    return [bottom]


def _batch_norm_blobs(ctx: LayerContext) -> list[Shape]:
    """Mean ``(C,)``, variance ``(C,)`` and the moving-average scale factor ``(1,)``.

    The stored statistics are divided by the scale factor (0 means 0) before use.
    """
    channels = ctx.bottoms[0][1]
    return [(channels,), (channels,), (1,)]


def _batch_norm_keras(ctx: KerasContext) -> KerasPlan:
    """Caffe's BatchNorm (statistics only, no affine) on the channel axis as it is held."""
    param = ctx.layer.batch_norm_param
    kwargs = {
        "use_global_stats": param.use_global_stats if param.HasField("use_global_stats") else None,
        "moving_average_fraction": param.moving_average_fraction,
        "eps": param.eps,
        "axis": internal_axis(ctx, 1) if len(ctx.bottoms[0]) > 1 else 0,
    }
    links = tuple(WeightLink(i, 0, i) for i in range(3))
    return single(ctx, netdef_layer("normalization", "CaffeBatchNorm"), kwargs, weights=links)


_neuron(
    "BatchNorm",
    ("batch_norm_param",),
    shape=_batch_norm_shape,
    blobs=_batch_norm_blobs,
    statistics=True,
    keras=_batch_norm_keras,
)
