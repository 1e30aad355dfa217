"""Building blocks for the ``keras`` rules of the declarations.

A rule returns a :class:`KerasPlan`: plain data naming Keras classes by import path, so the
declarations import no Keras and the code generator can print what the compiler builds.
"""

from __future__ import annotations

from netdef.keras import layout as lay
from netdef.layers.registry import Call, KerasContext, KerasPlan, WeightLink, bottom, output

#: Where netdef's custom layers live (see docs/keras-layers.md).
NETDEF_LAYERS = "netdef.keras.layers"


def netdef_layer(module: str, name: str) -> str:
    return f"{NETDEF_LAYERS}.{module}.{name}"


def single(
    ctx: KerasContext,
    cls: str,
    kwargs: dict[str, object] | None = None,
    *,
    layout: str | None = None,
    weights: tuple[WeightLink, ...] = (),
) -> KerasPlan:
    """One Keras layer on bottom 0, its output the top.

    ``layout`` is the layout the layer needs its input in (None: whatever the bottom is in,
    for elementwise layers); the top is held in the same layout.
    """
    held = layout or ctx.bottom_layouts[0]
    return KerasPlan(
        calls=(Call(cls, kwargs or {}, (bottom(0),)),),
        tops=(output(0),),
        top_layouts=(held,),
        bottom_layouts=(layout,),
        weights=weights,
    )


def on_all_bottoms(
    ctx: KerasContext,
    cls: str,
    kwargs: dict[str, object] | None = None,
    *,
    layout: str | None = None,
) -> KerasPlan:
    """One Keras layer taking every bottom as a list; bottoms are brought to one layout."""
    held = layout or ctx.bottom_layouts[0]
    count = len(ctx.bottoms)
    return KerasPlan(
        calls=(Call(cls, kwargs or {}, tuple(bottom(i) for i in range(count)), as_list=True),),
        tops=(output(0),),
        top_layouts=(held,),
        bottom_layouts=(held,) * count,
    )


def identity(ctx: KerasContext) -> KerasPlan:
    """Tops that are the bottoms themselves (Split), with no Keras layer at all."""
    return KerasPlan(
        calls=(),
        tops=tuple(bottom(0) for _ in ctx.top_shapes),
        top_layouts=(ctx.bottom_layouts[0],) * len(ctx.top_shapes),
    )


def internal_axis(ctx: KerasContext, caffe_axis: int, index: int = 0) -> int:
    """A Caffe axis (negative allowed) of bottom ``index`` in the layout the bottom is held in."""
    rank = len(ctx.bottoms[index])
    return lay.axis(caffe_axis % rank if rank else 0, rank, ctx.bottom_layouts[index])


def image_layout(rank: int) -> str:
    """Channels-last for image blobs, Caffe order otherwise."""
    return lay.internal_layout(rank)


def caffe_layout(
    ctx: KerasContext,
    cls: str,
    kwargs: dict[str, object] | None = None,
    *,
    weights: tuple[WeightLink, ...] = (),
) -> KerasPlan:
    """One layer on every bottom, all in Caffe's layout, with one output per top.

    For layers whose meaning is tied to Caffe's axis order (losses, recurrent layers,
    reductions over trailing axes): they see exactly the blobs Caffe's layer sees.
    """
    count = len(ctx.bottoms)
    return KerasPlan(
        calls=(Call(cls, kwargs or {}, tuple(bottom(i) for i in range(count)), as_list=count > 1),),
        tops=tuple(output(0, i) for i in range(len(ctx.top_shapes))),
        top_layouts=(lay.CAFFE,) * len(ctx.top_shapes),
        bottom_layouts=(lay.CAFFE,) * count,
        weights=weights,
    )
