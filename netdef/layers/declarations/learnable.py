"""Layers whose learnable blobs are their point: InnerProduct, Embed, Scale, Bias, Parameter.

Blob shapes are listed in the order a .caffemodel stores them. Two layouts differ from
Keras: InnerProduct keeps its weight as ``(num_output, K)`` (Keras Dense: ``(K, units)``)
unless ``transpose: true``, and K counts the bottom from ``axis`` on in C, H, W order.
"""

from __future__ import annotations

from google.protobuf.message import Message

from netdef.keras import layout as lay
from netdef.layers.declarations.common import (
    axis_range,
    count,
    declare,
    fmt,
    require_positive,
)
from netdef.layers.declarations.keras_plans import caffe_layout, netdef_layer
from netdef.layers.registry import (
    ANCHOR,
    Call,
    KerasContext,
    KerasPlan,
    LayerContext,
    Shape,
    WeightLink,
    between,
    bottom,
    exactly,
    output,
)


def _inner_product_k(ctx: LayerContext) -> tuple[int, int]:
    """(axis, K): the product of the bottom's sizes from ``axis`` (default 1) to the end."""
    bottom = ctx.bottoms[0]
    param = ctx.layer.inner_product_param
    axis = ctx.axis(param.axis, len(bottom))
    require_positive(ctx, "num_output", param.num_output)
    return axis, count(bottom, axis)


def _inner_product_shape(ctx: LayerContext) -> list[Shape]:
    """``bottom[:axis] + (num_output,)``: everything from ``axis`` on is flattened (C·H·W)."""
    axis, _ = _inner_product_k(ctx)
    return [(*ctx.bottoms[0][:axis], ctx.layer.inner_product_param.num_output)]


def _inner_product_blobs(ctx: LayerContext) -> list[Shape]:
    """Weight ``(N, K)``, or ``(K, N)`` with ``transpose: true``; bias ``(N,)``."""
    _, k = _inner_product_k(ctx)
    param = ctx.layer.inner_product_param
    n = param.num_output
    weight = (k, n) if param.transpose else (n, k)
    return [weight, (n,)] if param.bias_term else [weight]


def _inner_product_keras(ctx: KerasContext) -> KerasPlan:
    """Flatten + Dense on the channels-last blob, with the weight rows reordered instead.

    Caffe flattens (C, H, W) in that order; a channels-last blob flattens as (H, W, C).
    Permuting the weight's K axis once at load time ("chw") gives Caffe's numbers with the
    same layers a hand-written Keras model has, instead of a transpose on every forward.
    """
    axis, k = _inner_product_k(ctx.shape)
    param = ctx.layer.inner_product_param
    bottom_shape = ctx.bottoms[0]
    held = ctx.bottom_layouts[0]
    args: dict[str, object] = {"transpose": param.transpose}
    calls: list[Call] = []
    layout = None
    if axis == 1 and len(bottom_shape) > 2:
        calls.append(Call("keras.layers.Flatten", {}, (bottom(0),), suffix="flatten"))
        if held == lay.CHANNELS_LAST:
            args["chw"] = bottom_shape[1:]
    elif axis != len(bottom_shape) - 1:
        # Dense works on the last axis; merge axes from `axis` on in Caffe's order first.
        layout = lay.CAFFE
        calls.append(
            Call("keras.layers.Reshape", {"target_shape": (*bottom_shape[1:axis], k)}, (bottom(0),), suffix="flatten")
        )
    source = output(len(calls) - 1) if calls else bottom(0)
    dense = Call("keras.layers.Dense", {"units": param.num_output, "use_bias": param.bias_term}, (source,))
    index = len(calls)
    weights = (WeightLink(0, index, 0, "dense_kernel", args),)
    if param.bias_term:
        weights += (WeightLink(1, index, 1),)
    top_rank = axis + 1
    return KerasPlan(
        calls=(*calls, dense),
        tops=(output(index),),
        top_layouts=(lay.CAFFE if layout or not lay.spatial(top_rank) else held,),
        bottom_layouts=(layout,),
        weights=weights,
    )


declare(
    "InnerProduct",
    bottoms=exactly(1),
    tops=exactly(1),
    shape=_inner_product_shape,
    blobs=_inner_product_blobs,
    params=("inner_product_param",),
    keras=_inner_product_keras,
)


def _embed_check(ctx: LayerContext) -> None:
    param = ctx.layer.embed_param
    require_positive(ctx, "num_output", param.num_output)
    require_positive(ctx, "input_dim", param.input_dim, hint="input_dim is the vocabulary size")


def _embed_shape(ctx: LayerContext) -> list[Shape]:
    """``bottom + (num_output,)``: every element of the bottom is an index into the table."""
    _embed_check(ctx)
    return [ctx.bottoms[0] + (ctx.layer.embed_param.num_output,)]


def _embed_blobs(ctx: LayerContext) -> list[Shape]:
    """Table ``(input_dim, num_output)`` (row per index, like Keras), bias ``(num_output,)``."""
    _embed_check(ctx)
    param = ctx.layer.embed_param
    table = (param.input_dim, param.num_output)
    return [table, (param.num_output,)] if param.bias_term else [table]


def _embed_keras(ctx: KerasContext) -> KerasPlan:
    """Row lookup with float indices, on Caffe's layout; the table is Caffe's blob unchanged."""
    param = ctx.layer.embed_param
    kwargs = {"input_dim": param.input_dim, "output_dim": param.num_output, "bias_term": param.bias_term}
    links = tuple(WeightLink(i, 0, i) for i in range(len(ctx.blob_shapes)))
    return caffe_layout(ctx, netdef_layer("routing", "CaffeEmbed"), kwargs, weights=links)


declare(
    "Embed",
    bottoms=exactly(1),
    tops=exactly(1),
    shape=_embed_shape,
    blobs=_embed_blobs,
    params=("embed_param",),
    # Indices are not differentiable: Caffe's Backward CHECKs that nothing asks.
    no_gradient=frozenset({0}),
    keras=_embed_keras,
)


def _operand(ctx: LayerContext, param: Message, what: str) -> Shape:
    """The shape multiplied (Scale) or added (Bias), checked against bottom 0.

    It is bottom 1 when there are two bottoms, else the learnable blob
    ``bottom0[axis : axis + num_axes]``. It lines up with bottom 0 from ``axis`` on
    (from axis 0 when it is a scalar) and broadcasts over the other axes.
    """
    bottom = ctx.bottoms[0]
    if len(ctx.bottoms) == 1:
        return axis_range(ctx, bottom, param.axis, param.num_axes, what)
    operand = ctx.bottoms[1]
    axis = ctx.axis(param.axis, len(bottom)) if operand else 0
    if bottom[axis : axis + len(operand)] != operand:
        raise ctx.fail(
            f"bottom 1 must match bottom 0's axes {axis}..{axis + len(operand) - 1}",
            expected=fmt(bottom[axis : axis + len(operand)]),
            received=fmt(operand),
        )
    return operand


def _scale_shape(ctx: LayerContext) -> list[Shape]:
    """Same shape as bottom 0, multiplied by a broadcast factor (and bias, if bias_term).

    Caffe's Scale covers Keras-style per-channel affine (after BatchNorm) and, with a
    second bottom, element-wise products of broadcastable blobs.
    """
    _operand(ctx, ctx.layer.scale_param, "scale_param")
    return [ctx.bottoms[0]]


def _scale_blobs(ctx: LayerContext) -> list[Shape]:
    """One bottom: the scale, then the bias if bias_term, both of the operand's shape.

    Two bottoms: the scale is bottom 1, so only the bias (if bias_term) is learnable.
    """
    operand = _operand(ctx, ctx.layer.scale_param, "scale_param")
    scale = [operand] if len(ctx.bottoms) == 1 else []
    bias = [operand] if ctx.layer.scale_param.bias_term else []
    return scale + bias


def _bias_shape(ctx: LayerContext) -> list[Shape]:
    """Same shape as bottom 0, plus a broadcast bias (bottom 1 or the learnable blob)."""
    _operand(ctx, ctx.layer.bias_param, "bias_param")
    return [ctx.bottoms[0]]


def _bias_blobs(ctx: LayerContext) -> list[Shape]:
    """The bias ``bottom[axis : axis + num_axes]`` when it is not given as bottom 1."""
    if len(ctx.bottoms) == 2:
        return []
    return [_operand(ctx, ctx.layer.bias_param, "bias_param")]


def _affine_keras(ctx: KerasContext) -> KerasPlan:
    """Scale/Bias over the axes the Caffe operand spans, translated to the held layout.

    The Keras variable stores the operand with its axes in the held tensor's order; the
    "permute" converter reorders Caffe's blob accordingly.
    """
    is_scale = ctx.layer.type == "Scale"
    param = ctx.layer.scale_param if is_scale else ctx.layer.bias_param
    operand = _operand(ctx.shape, param, f"{'scale' if is_scale else 'bias'}_param")
    rank = len(ctx.bottoms[0])
    first = ctx.shape.axis(param.axis, rank)
    caffe_axes = list(range(first, first + len(operand)))
    held = ctx.bottom_layouts[0]
    if len(ctx.bottoms) == 2:
        # The operand is a blob of Caffe's order; keep both in Caffe's layout.
        held = lay.CAFFE
    internal = lay.axes(caffe_axes, rank, held)
    order = sorted(range(len(internal)), key=lambda i: internal[i])
    cls = netdef_layer("affine", "Scale" if is_scale else "Bias")
    kwargs: dict[str, object] = {"axes": sorted(internal)}
    if is_scale:
        kwargs["bias_term"] = param.bias_term
    perm = {"perm": order} if order != sorted(order) else {}
    links = tuple(WeightLink(i, 0, i, "permute", perm) for i in range(len(ctx.blob_shapes)))
    count = len(ctx.bottoms)
    return KerasPlan(
        calls=(Call(cls, kwargs, tuple(bottom(i) for i in range(count)), as_list=count > 1),),
        tops=(output(0),),
        top_layouts=(held,),
        bottom_layouts=(held,) * count,
        weights=links,
        static_batch=first == 0,
    )


for _type, _shape, _blobs, _param in (
    ("Scale", _scale_shape, _scale_blobs, "scale_param"),
    ("Bias", _bias_shape, _bias_blobs, "bias_param"),
):
    declare(
        _type,
        bottoms=between(1, 2),
        tops=exactly(1),
        shape=_shape,
        blobs=_blobs,
        params=(_param,),
        in_place=True,
        keras=_affine_keras,
    )


def _parameter_shape(ctx: LayerContext) -> list[Shape]:
    """A learnable blob exposed as a top: both have ``parameter_param.shape``."""
    return [tuple(ctx.layer.parameter_param.shape.dim)]


def _parameter_keras(ctx: KerasContext) -> KerasPlan:
    """The blob itself as a top, in Caffe's shape; the layer reads no input (see ANCHOR)."""
    shape = list(ctx.layer.parameter_param.shape.dim)
    return KerasPlan(
        calls=(Call(netdef_layer("routing", "CaffeParameter"), {"shape": shape}, (ANCHOR,)),),
        tops=(output(0),),
        top_layouts=(lay.CAFFE,),
        weights=(WeightLink(0, 0, 0),),
    )


declare(
    "Parameter",
    bottoms=exactly(0),
    tops=exactly(1),
    shape=_parameter_shape,
    blobs=_parameter_shape,
    params=("parameter_param",),
    keras=_parameter_keras,
)
