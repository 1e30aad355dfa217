"""Layers that move, copy, reshape or reduce data without learnable blobs.

Concat, Slice, Split, Flatten, Reshape, Tile, Reduction, Eltwise, ArgMax, BatchReindex,
Filter and Silence. Flatten and Reshape keep Caffe's row-major order (C, H, W), which
the Keras side must honour when it computes channels-last.
"""

from __future__ import annotations

import itertools

from google.protobuf.message import Message

from netdef.keras import layout as lay
from netdef.layers.declarations.common import (
    count,
    declare,
    fmt,
    require_axes,
    require_positive,
    require_same_shapes,
    require_top_count,
)
from netdef.layers.declarations.keras_plans import (
    caffe_layout,
    identity,
    internal_axis,
    netdef_layer,
    on_all_bottoms,
    single,
)
from netdef.layers.registry import (
    Call,
    KerasContext,
    KerasPlan,
    LayerContext,
    Shape,
    at_least,
    exactly,
    output,
)
from netdef.layers.registry import bottom as bottom_input
from netdef.proto import netdef_pb2 as pb


def _legacy_axis(ctx: LayerContext, param: Message, legacy_field: str, ndim: int) -> int:
    """``axis``, or the older non-negative ``concat_dim``/``slice_dim`` (never both)."""
    if param.HasField("axis") and param.HasField(legacy_field):
        raise ctx.fail(f"give either axis or {legacy_field}, not both")
    if not param.HasField(legacy_field):
        return ctx.axis(param.axis, ndim)
    axis = getattr(param, legacy_field)
    if axis >= ndim:
        raise ctx.fail(
            f"{legacy_field} is out of range",
            expected=f"0 <= {legacy_field} < {ndim}",
            received=axis,
        )
    return axis


def _concat_shape(ctx: LayerContext) -> list[Shape]:
    """Sizes along ``axis`` (default 1, channels) add up; every other axis must agree."""
    first = ctx.bottoms[0]
    axis = _legacy_axis(ctx, ctx.layer.concat_param, "concat_dim", len(first))
    total = 0
    for index, bottom in enumerate(ctx.bottoms):
        if len(bottom) != len(first) or bottom[:axis] + bottom[axis + 1 :] != first[:axis] + first[axis + 1 :]:
            raise ctx.fail(
                f"bottom {index} differs from bottom 0 off the concat axis {axis}",
                expected=f"{fmt(first)} except along axis {axis}",
                received=fmt(bottom),
            )
        total += bottom[axis]
    return [(*first[:axis], total, *first[axis + 1 :])]


def _concat_keras(ctx: KerasContext) -> KerasPlan:
    """Concatenate along the Caffe axis, all bottoms held in bottom 0's layout."""
    axis = _legacy_axis(ctx.shape, ctx.layer.concat_param, "concat_dim", len(ctx.bottoms[0]))
    if len(ctx.bottoms) == 1:
        return identity(ctx)
    return on_all_bottoms(ctx, "keras.layers.Concatenate", {"axis": internal_axis(ctx, axis)})


declare(
    "Concat",
    bottoms=at_least(1),
    tops=exactly(1),
    shape=_concat_shape,
    params=("concat_param",),
    keras=_concat_keras,
)


def _slice_sizes(ctx: LayerContext, size: int, tops: int) -> list[int]:
    points = list(ctx.layer.slice_param.slice_point)
    if not points:
        if size % tops:
            raise ctx.fail(
                f"{tops} tops do not split the slice axis evenly",
                expected=f"a size divisible by {tops}",
                received=size,
                hint="give slice_point values",
            )
        return [size // tops] * tops
    if len(points) != tops - 1:
        raise ctx.fail(
            "give one slice_point fewer than tops",
            expected=f"{tops - 1} slice points",
            received=len(points),
        )
    if tops > size:
        raise ctx.fail(
            "more tops than the slice axis has entries",
            expected=f"at most {size} tops",
            received=tops,
        )
    bounds = [0, *points, size]
    if any(low >= high for low, high in itertools.pairwise(bounds)):
        raise ctx.fail(
            "slice_point values must be strictly increasing and inside the slice axis",
            expected=f"0 < slice_point < {size}",
            received=points,
        )
    return [high - low for low, high in itertools.pairwise(bounds)]


def _slice_shape(ctx: LayerContext) -> list[Shape]:
    """Cut bottom along ``axis`` (or legacy ``slice_dim``) at ``slice_point``s.

    No slice points: equal parts, one per top (the size must divide).
    """
    bottom = ctx.bottoms[0]
    axis = _legacy_axis(ctx, ctx.layer.slice_param, "slice_dim", len(bottom))
    sizes = _slice_sizes(ctx, bottom[axis], len(ctx.tops))
    return [(*bottom[:axis], size, *bottom[axis + 1 :]) for size in sizes]


def _slice_keras(ctx: KerasContext) -> KerasPlan:
    """Cut along the Caffe axis as it is held; points are positions along that axis."""
    param = ctx.layer.slice_param
    axis = _legacy_axis(ctx.shape, param, "slice_dim", len(ctx.bottoms[0]))
    tops = len(ctx.top_shapes)
    kwargs = {"axis": internal_axis(ctx, axis), "points": list(param.slice_point), "num_outputs": tops}
    held = ctx.bottom_layouts[0]
    return KerasPlan(
        calls=(Call(netdef_layer("routing", "Slice"), kwargs, (bottom_input(0),)),),
        tops=tuple(output(0, i) for i in range(tops)),
        top_layouts=(held,) * tops,
    )


declare("Slice", bottoms=exactly(1), tops=at_least(1), shape=_slice_shape, params=("slice_param",), keras=_slice_keras)


def _split_shape(ctx: LayerContext) -> list[Shape]:
    """Every top is the bottom (shared data); Caffe refuses to run Split in place."""
    return [ctx.bottoms[0]] * len(ctx.tops)


declare("Split", bottoms=exactly(1), tops=at_least(1), shape=_split_shape, keras=identity)


def _flatten_shape(ctx: LayerContext) -> list[Shape]:
    """Merge axes ``axis..end_axis`` (default 1..−1): ``(N, C, H, W)`` → ``(N, C·H·W)``.

    ``end_axis`` one before ``axis`` inserts a size-1 axis, as Caffe's count() allows.
    """
    bottom = ctx.bottoms[0]
    param = ctx.layer.flatten_param
    start = ctx.axis(param.axis, len(bottom))
    end = ctx.axis(param.end_axis, len(bottom), "end_axis")
    if end + 1 < start:
        raise ctx.fail(
            "end_axis comes before axis",
            expected=f"end_axis >= {start - 1}",
            received=param.end_axis,
        )
    return [(*bottom[:start], count(bottom, start, end + 1), *bottom[end + 1 :])]


def _reshape_keras(ctx: KerasContext) -> KerasPlan:
    """Flatten and Reshape keep Caffe's element order, so they work on the Caffe layout."""
    top = ctx.top_shapes[0]
    if top[:1] != ctx.bottoms[0][:1]:
        raise ctx.shape.fail(
            "netdef compiles reshapes that keep the batch axis",
            expected=f"a top starting with {ctx.bottoms[0][0]}",
            received=str(top),
        )
    return single(ctx, "keras.layers.Reshape", {"target_shape": top[1:]}, layout=lay.CAFFE)


declare(
    "Flatten",
    bottoms=exactly(1),
    tops=exactly(1),
    shape=_flatten_shape,
    params=("flatten_param",),
    keras=_reshape_keras,
)


def _reshape_span(ctx: LayerContext, ndim: int) -> tuple[int, int]:
    """[start, end) of the bottom axes that ``reshape_param.shape`` replaces.

    A negative ``axis`` counts from past the end (−1: after the last axis), unlike
    other layers' axes.
    """
    param = ctx.layer.reshape_param
    start = param.axis if param.axis >= 0 else ndim + param.axis + 1
    if not 0 <= start <= ndim:
        raise ctx.fail(
            "reshape_param.axis is out of range",
            expected=f"{-ndim - 1} <= axis <= {ndim}",
            received=param.axis,
        )
    if param.num_axes < -1:
        raise ctx.fail("reshape_param.num_axes must be -1 (all) or non-negative", received=param.num_axes)
    end = ndim if param.num_axes == -1 else start + param.num_axes
    if end > ndim:
        raise ctx.fail("axis + num_axes runs past the last axis", expected=f"<= {ndim}", received=end)
    return start, end


def _reshape_shape(ctx: LayerContext) -> list[Shape]:
    """Replace bottom axes [axis, axis+num_axes) by ``shape``: 0 copies, −1 is inferred.

    A 0 copies the bottom size at the same position; at most one −1, inferred so that
    the element count is unchanged (``2×8`` with ``{0, −1, 4}`` → ``2×2×4``).
    """
    bottom = ctx.bottoms[0]
    dims = list(ctx.layer.reshape_param.shape.dim)
    start, end = _reshape_span(ctx, len(bottom))
    if dims.count(-1) > 1:
        raise ctx.fail("shape may contain -1 at most once", received=fmt(dims))
    if any(d < -1 for d in dims):
        raise ctx.fail("shape dims must be sizes, 0 (copy) or -1 (infer)", received=fmt(dims))
    new = []
    for i, dim in enumerate(dims):
        if dim == 0 and start + i >= len(bottom):
            raise ctx.fail(
                f"shape dim {i} is 0 (copy), but the bottom has no axis {start + i}",
                received=fmt(bottom),
            )
        new.append(bottom[start + i] if dim == 0 else dim)
    top = list(bottom[:start]) + new + list(bottom[end:])
    if -1 in dims:
        known = count(tuple(d for d in top if d != -1))
        if known == 0 or count(bottom) % known:
            raise ctx.fail(
                "the -1 dim cannot be inferred",
                expected=f"a bottom count divisible by {known}",
                received=f"{fmt(bottom)} with {count(bottom)} elements",
            )
        top[top.index(-1)] = count(bottom) // known
    if count(tuple(top)) != count(bottom):
        raise ctx.fail(
            "reshape must keep the element count",
            expected=count(bottom),
            received=f"{fmt(top)} = {count(tuple(top))}",
        )
    return [tuple(top)]


declare(
    "Reshape",
    bottoms=exactly(1),
    tops=exactly(1),
    shape=_reshape_shape,
    params=("reshape_param",),
    keras=_reshape_keras,
)


def _tile_shape(ctx: LayerContext) -> list[Shape]:
    """Repeat the bottom ``tiles`` times along ``axis`` (``tiles`` is required, > 0)."""
    bottom = ctx.bottoms[0]
    param = ctx.layer.tile_param
    axis = ctx.axis(param.axis, len(bottom))
    if not param.HasField("tiles"):
        raise ctx.fail("Tile needs tile_param.tiles", expected="tiles > 0")
    require_positive(ctx, "tiles", param.tiles)
    return [(*bottom[:axis], bottom[axis] * param.tiles, *bottom[axis + 1 :])]


def _tile_keras(ctx: KerasContext) -> KerasPlan:
    param = ctx.layer.tile_param
    kwargs = {"axis": internal_axis(ctx, param.axis), "tiles": param.tiles}
    return single(ctx, netdef_layer("routing", "Tile"), kwargs)


declare("Tile", bottoms=exactly(1), tops=exactly(1), shape=_tile_shape, params=("tile_param",), keras=_tile_keras)


def _reduction_shape(ctx: LayerContext) -> list[Shape]:
    """Reduce *every* axis from ``axis`` (default 0) on: top ``bottom[:axis]``.

    With the default axis 0 the top is a scalar ``()``; unlike Keras reductions there is
    no single-axis form.
    """
    bottom = ctx.bottoms[0]
    return [bottom[: ctx.axis(ctx.layer.reduction_param.axis, len(bottom))]]


def _reduction_keras(ctx: KerasContext) -> KerasPlan:
    """Reduces every axis from ``axis`` on, so it needs Caffe's axis order."""
    param = ctx.layer.reduction_param
    kwargs = {
        "operation": pb.ReductionParameter.ReductionOp.Name(param.operation).lower(),
        "axis": ctx.shape.axis(param.axis, len(ctx.bottoms[0])),
        "coeff": param.coeff,
    }
    return caffe_layout(ctx, netdef_layer("routing", "Reduction"), kwargs)


declare(
    "Reduction",
    bottoms=exactly(1),
    tops=exactly(1),
    shape=_reduction_shape,
    params=("reduction_param",),
    keras=_reduction_keras,
)


def _eltwise_shape(ctx: LayerContext) -> list[Shape]:
    """All bottoms the same shape (no broadcasting); coeffs only for SUM, one per bottom."""
    param = ctx.layer.eltwise_param
    coeffs = len(param.coeff)
    if coeffs not in (0, len(ctx.bottoms)):
        raise ctx.fail(
            "give one coeff per bottom, or none",
            expected=f"0 or {len(ctx.bottoms)} coeffs",
            received=coeffs,
        )
    if coeffs and param.operation == pb.EltwiseParameter.PROD:
        raise ctx.fail("coeff applies only to operation SUM", received="operation PROD")
    require_same_shapes(ctx, ctx.bottoms, hint="Eltwise does not broadcast; Scale and Bias do")
    return [ctx.bottoms[0]]


def _eltwise_keras(ctx: KerasContext) -> KerasPlan:
    """Plain sums and products are Keras's Add and Multiply; coefficients and MAX (whose
    gradient Caffe sends to the first maximal bottom only) use netdef's Eltwise."""
    param = ctx.layer.eltwise_param
    operation = pb.EltwiseParameter.EltwiseOp.Name(param.operation).lower()
    coeffs = list(param.coeff)
    if operation == "sum" and all(c == 1 for c in coeffs):
        return on_all_bottoms(ctx, "keras.layers.Add")
    if operation == "prod":
        return on_all_bottoms(ctx, "keras.layers.Multiply")
    kwargs: dict[str, object] = {"operation": operation, "coeffs": coeffs or None}
    return on_all_bottoms(ctx, netdef_layer("elementwise", "Eltwise"), kwargs)


declare(
    "Eltwise",
    bottoms=at_least(2),
    tops=exactly(1),
    shape=_eltwise_shape,
    params=("eltwise_param",),
    keras=_eltwise_keras,
)


def _argmax_shape(ctx: LayerContext) -> list[Shape]:
    """Indices (or values) of the ``top_k`` largest entries.

    With ``axis``: the bottom with ``shape[axis] = top_k``. Without: per sample over all
    of ``count(1)``, giving ``(N, 1 or 2, top_k)`` padded with 1s to the bottom's rank
    (at least 3 axes); 2 holds indices then values when ``out_max_val``.
    """
    bottom = ctx.bottoms[0]
    param = ctx.layer.argmax_param
    require_positive(ctx, "top_k", param.top_k)
    if param.HasField("axis"):
        axis = ctx.axis(param.axis, len(bottom))
        available = bottom[axis]
    else:
        require_axes(ctx, bottom, at_least=1)
        available = count(bottom, 1)
    if param.top_k > available:
        raise ctx.fail(
            "top_k exceeds the number of entries compared",
            expected=f"top_k <= {available}",
            received=param.top_k,
        )
    if param.HasField("axis"):
        return [(*bottom[:axis], param.top_k, *bottom[axis + 1 :])]
    top = [1] * max(3, len(bottom))
    top[0], top[1], top[2] = bottom[0], 2 if param.out_max_val else 1, param.top_k
    return [tuple(top)]


def _argmax_keras(ctx: KerasContext) -> KerasPlan:
    param = ctx.layer.argmax_param
    axis = ctx.shape.axis(param.axis, len(ctx.bottoms[0])) if param.HasField("axis") else None
    kwargs = {"out_max_val": param.out_max_val, "top_k": param.top_k, "axis": axis}
    return caffe_layout(ctx, netdef_layer("routing", "ArgMax"), kwargs)


declare(
    "ArgMax",
    bottoms=exactly(1),
    tops=exactly(1),
    shape=_argmax_shape,
    params=("argmax_param",),
    no_gradient=frozenset({0}),
    keras=_argmax_keras,
)


def _batch_reindex_shape(ctx: LayerContext) -> list[Shape]:
    """``top[i] = bottom0[indices[i]]``: ``(len(indices),) + bottom0.shape[1:]``."""
    data, indices = ctx.bottoms
    require_axes(ctx, indices, exactly=1, what="index bottom (bottom 1)")
    require_axes(ctx, data, at_least=1)
    return [indices[:1] + data[1:]]


def _batch_reindex_keras(ctx: KerasContext) -> KerasPlan:
    """Rows are picked along the batch axis, which is axis 0 in either layout."""
    return caffe_layout(ctx, netdef_layer("routing", "BatchReindex"))


declare(
    "BatchReindex",
    bottoms=exactly(2),
    tops=exactly(1),
    shape=_batch_reindex_shape,
    no_gradient=frozenset({1}),
    keras=_batch_reindex_keras,
)


def _filter_shape(ctx: LayerContext) -> list[Shape]:
    """Keep the rows whose selector (last bottom) is non-zero; one top per other bottom.

    Which rows survive is only known from data; like Caffe's first Reshape, the tops
    keep the full batch size N.
    """
    *data, selector = ctx.bottoms
    require_top_count(ctx, len(data), "one per bottom except the selector")
    require_axes(ctx, selector, at_least=1, what="selector (last bottom)")
    if any(d != 1 for d in selector[1:]):
        raise ctx.fail(
            "the selector must be (N, 1, ...)",
            expected="size 1 on every axis but the first",
            received=fmt(selector),
        )
    for index, bottom in enumerate(data):
        if not bottom or bottom[0] != selector[0]:
            raise ctx.fail(
                f"bottom {index} must have the selector's first dimension",
                expected=f"({selector[0]}, ...)",
                received=fmt(bottom),
            )
    return list(data)


def _filter_keras(ctx: KerasContext) -> KerasPlan:
    """Keeps the batch rows whose selector (the last bottom) is non-zero."""
    return caffe_layout(ctx, netdef_layer("routing", "Filter"))


declare(
    "Filter",
    bottoms=at_least(2),
    tops=at_least(1),
    shape=_filter_shape,
    # The selector is the last bottom, whatever their number.
    no_gradient=frozenset({-1}),
    keras=_filter_keras,
)


def _silence_shape(ctx: LayerContext) -> list[Shape]:
    """No tops: consumes blobs so that they do not become net outputs."""
    return []


declare("Silence", bottoms=at_least(1), tops=exactly(0), shape=_silence_shape)
