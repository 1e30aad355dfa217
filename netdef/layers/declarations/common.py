"""Helpers shared by the declaration modules: Caffe's integer conventions, stated once.

Caffe expresses most of its shape rules with a handful of Blob helpers (``count``,
``CanonicalAxisIndex``, the legacy ``num()/channels()/height()/width()`` accessors) and
aborts the process with ``CHECK`` when a rule is broken. The functions here are those
helpers on plain tuples, raising a located :class:`~netdef.errors.ShapeError` instead.
"""

from __future__ import annotations

import functools
import inspect
import math
from collections.abc import Sequence

from netdef.errors import DataSourceError
from netdef.layers.registry import (
    MAX_BLOB_AXES,
    MAX_BLOB_COUNT,
    Arity,
    LayerContext,
    LayerSpec,
    Shape,
    ShapeRule,
    no_blobs,
    register,
)


def declare(
    type_name: str,
    *,
    bottoms: Arity,
    tops: Arity,
    shape: ShapeRule,
    blobs: ShapeRule = no_blobs,
    **options: object,
) -> LayerSpec:
    """Register a layer type whose rules are guarded by Caffe's blob-size limits.

    Every top and learnable blob a rule returns is checked here, so no caller of
    ``spec.shape``/``spec.blobs`` can receive a shape that Caffe could not allocate. The
    shape rule's docstring becomes the declaration's ``doc``.
    """
    return register(
        LayerSpec(
            type=type_name,
            bottoms=bottoms,
            tops=tops,
            shape=_guarded(shape, "top"),
            blobs=blobs if blobs is no_blobs else _guarded(blobs, "learnable blob"),
            doc=inspect.getdoc(shape) or "",
            **options,  # type: ignore[arg-type]
        )
    )


def _guarded(rule: ShapeRule, what: str) -> ShapeRule:
    @functools.wraps(rule)
    def guarded(ctx: LayerContext) -> list[Shape]:
        shapes = rule(ctx)
        for shape in shapes:
            check_size(ctx, shape, what)
        return shapes

    return guarded


def check_size(ctx: LayerContext, shape: Shape, what: str) -> None:
    """Caffe's ``Blob::Reshape`` limits: at most 32 axes, no negative size, a 32-bit count.

    Only integers are computed, so an absurd size is reported before anything could try
    to allocate it.
    """
    if len(shape) > MAX_BLOB_AXES:
        raise ctx.fail(
            f"a {what} would have {len(shape)} axes",
            expected=f"at most {MAX_BLOB_AXES} axes (Caffe's kMaxBlobAxes)",
            received=len(shape),
        )
    if any(dim < 0 for dim in shape):
        raise ctx.fail(f"a {what} would have a negative size", received=fmt(shape))
    total = math.prod(shape)
    if total > MAX_BLOB_COUNT:
        raise ctx.fail(
            f"a {what} of shape {fmt(shape)} would hold {total:,} elements",
            expected=f"at most {MAX_BLOB_COUNT:,} (Caffe counts elements in a 32-bit int)",
        )


def fmt(shape: Sequence[int]) -> str:
    """A shape for messages, as a Python tuple: ``(2, 3, 6, 4)``, ``(3,)``, ``()``."""
    return str(tuple(shape))


def count(shape: Shape, start: int = 0, end: int | None = None) -> int:
    """Caffe's ``Blob::count(start, end)``: the product of the sizes of axes [start, end)."""
    return math.prod(shape[start:end])


def legacy(ctx: LayerContext, shape: Shape, index: int) -> int:
    """Caffe's ``LegacyShape``: ``num()/channels()/height()/width()`` of a blob.

    Missing trailing axes read as 1 (a ``(N, C)`` blob has height and width 1), but a blob
    with more than 4 axes makes Caffe abort: layers written against these accessors
    (PReLU, MVN, the contrastive and multinomial losses) only accept up to 4 axes.
    """
    if len(shape) > 4:
        raise ctx.fail(
            f"{ctx.type} reads its bottoms with Caffe's 4-D accessors",
            expected="a bottom with at most 4 axes",
            received=fmt(shape),
        )
    return shape[index] if index < len(shape) else 1


def legacy4(ctx: LayerContext, shape: Shape) -> Shape:
    """``(num(), channels(), height(), width())``: a blob seen through the legacy accessors."""
    return tuple(legacy(ctx, shape, i) for i in range(4))


def require_axes(
    ctx: LayerContext,
    shape: Shape,
    *,
    exactly: int | None = None,
    at_least: int | None = None,
    what: str = "bottom",
    meaning: str = "",
) -> None:
    """Refuse a blob with the wrong number of axes; ``meaning`` names them: ``(N, C, H, W)``."""
    if exactly is not None and len(shape) != exactly:
        expected = f"exactly {exactly}"
    elif at_least is not None and len(shape) < at_least:
        expected = f"at least {at_least}"
    else:
        return
    raise ctx.fail(
        f"{ctx.type} cannot take this {what}",
        expected=f"{what} with {expected} axes" + (f" {meaning}" if meaning else ""),
        received=fmt(shape),
    )


def require_positive(ctx: LayerContext, field: str, value: int, hint: str | None = None) -> None:
    """Caffe's ``CHECK_GT(value, 0)`` on a parameter, named by its prototxt field."""
    if value <= 0:
        raise ctx.fail(f"{field} must be positive", expected=f"{field} > 0", received=value, hint=hint)


def require_same_shapes(ctx: LayerContext, shapes: Sequence[Shape], hint: str | None = None) -> None:
    """All bottoms must share bottom 0's shape (Eltwise, every Convolution bottom)."""
    for index, shape in enumerate(shapes[1:], start=1):
        if shape != shapes[0]:
            raise ctx.fail(
                f"bottom {index} has a different shape than bottom 0",
                expected=fmt(shapes[0]),
                received=fmt(shape),
                hint=hint,
            )


def require_top_count(ctx: LayerContext, wanted: int, why: str) -> None:
    """Arity that depends on parameters or on the bottoms, which ``Arity`` cannot state."""
    if len(ctx.tops) != wanted:
        raise ctx.fail(f"wrong number of tops ({why})", expected=wanted, received=len(ctx.tops))


def axis_range(ctx: LayerContext, shape: Shape, axis: int, num_axes: int, what: str) -> Shape:
    """``shape[axis : axis + num_axes]`` with ``num_axes == -1`` meaning "to the end".

    This is how Scale and Bias size their learnable blob (and Reshape the axes it
    replaces): ``axis`` is canonicalised, ``num_axes`` must not run past the last axis.
    """
    start = ctx.axis(axis, len(shape))
    if num_axes < -1:
        raise ctx.fail(f"{what}.num_axes must be -1 (to the end) or non-negative", received=num_axes)
    end = len(shape) if num_axes == -1 else start + num_axes
    if end > len(shape):
        raise ctx.fail(
            f"{what}.axis + num_axes runs past the last axis of bottom {fmt(shape)}",
            expected=f"axis + num_axes <= {len(shape)}",
            received=f"{start} + {num_axes}",
        )
    return shape[start:end]


def ceil_div(numerator: int, denominator: int) -> int:
    """Integer ceiling division, exact for negative numerators (as Caffe's float ``ceil``)."""
    return -(-numerator // denominator)


def overridden_shape(ctx: LayerContext, top_index: int = 0) -> Shape | None:
    """The user's ``--data-shape`` for one top of a data layer, if any.

    A top is looked up by its own name; top 0 also by the layer's name, the natural key
    for a layer such as ``data`` whose first top is its images.
    """
    shapes = ctx.data.shapes
    if top_index < len(ctx.tops) and ctx.tops[top_index] in shapes:
        return tuple(shapes[ctx.tops[top_index]])
    if top_index == 0 and ctx.name in shapes:
        return tuple(shapes[ctx.name])
    return None


def with_labels(ctx: LayerContext, data: Shape) -> list[Shape]:
    """Data-layer tops: the samples, plus a label per sample when a second top is named."""
    return [data, (data[0],)] if len(ctx.tops) > 1 else [data]


def source_error(ctx: LayerContext, source: str, problem: str, alternative: str | None = None) -> DataSourceError:
    """A data layer's source cannot give its shapes; the user can state them instead.

    ``source`` is named as written in the net, resolved against ``DataOptions.root``.
    """
    hint = f"give --data-shape {ctx.name}=N,C,H,W"
    return DataSourceError(
        f"cannot read source '{ctx.data.resolve(source)}': {problem}",
        location=ctx.location,
        layer=ctx.name,
        layer_type=ctx.type,
        hint=f"{hint}, {alternative}" if alternative else hint,
    )
