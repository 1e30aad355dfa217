"""Convolution, Deconvolution, Im2col, Pooling, SPP, LRN and Crop.

The spatial arithmetic follows Caffe's C++ exactly, including where it differs from
Keras: pooling rounds *up* by default, and when padded it drops a last window that would
start in the padding; deconvolution sizes are ``stride·(in−1) + extent − 2·pad`` with no
``output_padding``; convolution weights are ``(out, in/group, *kernel)`` but
deconvolution weights are ``(in, out/group, *kernel)``.
"""

from __future__ import annotations

from dataclasses import dataclass

from google.protobuf.message import Message

from netdef.keras import layout as lay
from netdef.layers.declarations.common import (
    ceil_div,
    count,
    declare,
    fmt,
    require_axes,
    require_positive,
    require_same_shapes,
    require_top_count,
)
from netdef.layers.declarations.keras_plans import netdef_layer, on_all_bottoms, single
from netdef.layers.registry import (
    Call,
    KerasContext,
    KerasPlan,
    LayerContext,
    Shape,
    WeightLink,
    at_least,
    between,
    bottom,
    exactly,
    output,
)
from netdef.proto import netdef_pb2 as pb


@dataclass(frozen=True)
class ConvGeometry:
    """Per-spatial-axis kernel, stride, pad and dilation of a ConvolutionParameter."""

    channel_axis: int
    kernel: tuple[int, ...]
    stride: tuple[int, ...]
    pad: tuple[int, ...]
    dilation: tuple[int, ...]

    def axis(self, i: int) -> int:
        """The blob axis of spatial axis ``i``."""
        return self.channel_axis + 1 + i

    def extent(self, i: int) -> int:
        """The span a dilated kernel covers: ``dilation·(k−1) + 1``."""
        return self.dilation[i] * (self.kernel[i] - 1) + 1


def _per_axis(ctx: LayerContext, field: str, values: list[int], axes: int, default: int | None) -> tuple[int, ...]:
    """A repeated field given never (default), once (every axis) or once per spatial axis."""
    if len(values) == axes:
        return tuple(values)
    if len(values) == 1:
        return (values[0],) * axes
    if not values and default is not None:
        return (default,) * axes
    raise ctx.fail(
        f"{field} must be given once, or once per spatial axis",
        expected=f"1 or {axes} values" + (" (or none)" if default is not None else ""),
        received=f"{len(values)} values",
    )


def _hw_or_repeated(
    ctx: LayerContext, param: Message, name: str, field: str, axes: int, default: int | None
) -> tuple[int, ...]:
    """``kernel_size``-style repeated values, or the 2-D-only ``kernel_h``/``kernel_w`` pair.

    As in Caffe, naming only one of the pair leaves the other at its proto default 0.
    """
    repeated = list(getattr(param, field))
    if not (param.HasField(f"{name}_h") or param.HasField(f"{name}_w")):
        return _per_axis(ctx, field, repeated, axes, default)
    if axes != 2:
        raise ctx.fail(
            f"{name}_h/{name}_w apply only to 2-D convolution",
            expected="2 spatial axes",
            received=f"{axes} spatial axes",
            hint=f"use {field} instead",
        )
    if repeated:
        raise ctx.fail(f"give either {field} or {name}_h/{name}_w, not both")
    return (getattr(param, f"{name}_h"), getattr(param, f"{name}_w"))


def _require_positive_all(ctx: LayerContext, what: str, values: tuple[int, ...]) -> None:
    if any(v <= 0 for v in values):
        param = ctx.layer.convolution_param
        pair = param.HasField(f"{what}_h") or param.HasField(f"{what}_w")
        raise ctx.fail(
            f"{what} must be positive along every spatial axis",
            received=fmt(values),
            hint=f"give both {what}_h and {what}_w" if pair else None,
        )


def conv_geometry(ctx: LayerContext, bottom: Shape, *, min_spatial_axes: int = 0) -> ConvGeometry:
    """Read a ConvolutionParameter as Caffe's ``BaseConvolutionLayer::LayerSetUp`` does.

    Axes before ``axis`` are batch axes, the rest spatial; N-D kernels (C3D's 3-D
    convolution on ``(N, C, D, H, W)``) repeat ``kernel_size`` once per spatial axis.
    """
    param = ctx.layer.convolution_param
    channel_axis = ctx.axis(param.axis, len(bottom))
    axes = len(bottom) - channel_axis - 1
    if axes < min_spatial_axes:
        raise ctx.fail(
            f"{ctx.type} needs a spatial axis after the channel axis {channel_axis}",
            expected=f"at least {min_spatial_axes} spatial axes",
            received=fmt(bottom),
        )
    kernel = _hw_or_repeated(ctx, param, "kernel", "kernel_size", axes, None)
    _require_positive_all(ctx, "kernel", kernel)
    stride = _hw_or_repeated(ctx, param, "stride", "stride", axes, 1)
    _require_positive_all(ctx, "stride", stride)
    pad = _hw_or_repeated(ctx, param, "pad", "pad", axes, 0)
    dilation = _per_axis(ctx, "dilation", list(param.dilation), axes, 1)
    return ConvGeometry(channel_axis, kernel, stride, pad, dilation)


def _conv_output(ctx: LayerContext, geometry: ConvGeometry, bottom: Shape) -> tuple[int, ...]:
    """``(in + 2·pad − extent) / stride + 1`` per spatial axis.

    Caffe truncates a negative numerator toward zero and silently produces one output;
    netdef reports that case as an error, since the kernel then does not fit anywhere.
    """
    sizes = []
    for i, size in enumerate(bottom[geometry.channel_axis + 1 :]):
        padded = size + 2 * geometry.pad[i]
        span = padded - geometry.extent(i)
        if span < 0:
            raise ctx.fail(
                f"the kernel does not fit in the padded input along axis {geometry.axis(i)}",
                expected=f"extent {geometry.extent(i)} <= input + 2·pad = {padded}",
                received=fmt(bottom),
            )
        sizes.append(span // geometry.stride[i] + 1)
    return tuple(sizes)


def _deconv_output(ctx: LayerContext, geometry: ConvGeometry, bottom: Shape) -> tuple[int, ...]:
    """``stride·(in − 1) + extent − 2·pad`` per spatial axis (the inverse of convolution)."""
    sizes = []
    for i, size in enumerate(bottom[geometry.channel_axis + 1 :]):
        out = geometry.stride[i] * (size - 1) + geometry.extent(i) - 2 * geometry.pad[i]
        if out < 1:
            raise ctx.fail(
                f"the output would be empty along axis {geometry.axis(i)}",
                expected="stride·(in − 1) + extent − 2·pad >= 1",
                received=f"{out} from input {fmt(bottom)}",
            )
        sizes.append(out)
    return tuple(sizes)


def _channels_and_groups(ctx: LayerContext, geometry: ConvGeometry) -> tuple[int, int, int]:
    """(channels, num_output, group) after Caffe's divisibility checks."""
    param = ctx.layer.convolution_param
    channels = ctx.bottoms[0][geometry.channel_axis]
    require_positive(ctx, "num_output", param.num_output)
    require_positive(ctx, "group", param.group)
    for what, value in (("input channels", channels), ("num_output", param.num_output)):
        if value % param.group:
            raise ctx.fail(
                f"group must divide the {what}",
                expected=f"a divisor of {value}",
                received=f"group {param.group}",
            )
    return channels, param.num_output, param.group


def _conv_family_shape(ctx: LayerContext, deconv: bool) -> list[Shape]:
    require_same_shapes(ctx, ctx.bottoms)
    require_top_count(ctx, len(ctx.bottoms), "one top per bottom")
    bottom = ctx.bottoms[0]
    geometry = conv_geometry(ctx, bottom)
    _, num_output, _ = _channels_and_groups(ctx, geometry)
    spatial = (_deconv_output if deconv else _conv_output)(ctx, geometry, bottom)
    top = (*bottom[: geometry.channel_axis], num_output, *spatial)
    return [top] * len(ctx.bottoms)


def _conv_shape(ctx: LayerContext) -> list[Shape]:
    """Top ``bottom[:axis] + (num_output, *out)``, ``out = (in + 2·pad − extent)/stride + 1``.

    Several bottoms (all the same shape) share the weights, one top each.
    """
    return _conv_family_shape(ctx, deconv=False)


def _deconv_shape(ctx: LayerContext) -> list[Shape]:
    """Top ``bottom[:axis] + (num_output, *out)``, ``out = stride·(in−1) + extent − 2·pad``.

    Unlike Keras's Conv2DTranspose there is no output_padding: the size is fully
    determined by these parameters.
    """
    return _conv_family_shape(ctx, deconv=True)


def _conv_family_blobs(ctx: LayerContext, deconv: bool) -> list[Shape]:
    geometry = conv_geometry(ctx, ctx.bottoms[0])
    channels, num_output, group = _channels_and_groups(ctx, geometry)
    if deconv:
        weight = (channels, num_output // group, *geometry.kernel)
    else:
        weight = (num_output, channels // group, *geometry.kernel)
    bias = [(num_output,)] if ctx.layer.convolution_param.bias_term else []
    return [weight, *bias]


def _conv_blobs(ctx: LayerContext) -> list[Shape]:
    return _conv_family_blobs(ctx, deconv=False)


def _deconv_blobs(ctx: LayerContext) -> list[Shape]:
    return _conv_family_blobs(ctx, deconv=True)


def _im2col_shape(ctx: LayerContext) -> list[Shape]:
    """The patches a convolution would multiply: channels grow by the kernel volume.

    Top ``bottom[:axis] + (C·Πkernel, *out)``; needs at least one spatial axis.
    """
    bottom = ctx.bottoms[0]
    geometry = conv_geometry(ctx, bottom, min_spatial_axes=1)
    axis = geometry.channel_axis
    patch = bottom[axis] * count(geometry.kernel)
    return [(*bottom[:axis], patch, *_conv_output(ctx, geometry, bottom))]


def _keras_padding(ctx: KerasContext, geometry: ConvGeometry) -> tuple[str, tuple[Call, ...]]:
    """Keras's own padding when it equals Caffe's, else an explicit ZeroPadding call.

    "same" pads (extent − 1)/2 on each side only at stride 1 with odd extents; that is the
    common case (3×3 pad 1), and keeping it a single Keras layer matches hand-written models.
    """
    if not any(geometry.pad):
        return "valid", ()
    same = all(
        s == 1 and 2 * p == geometry.extent(i) - 1
        for i, (s, p) in enumerate(zip(geometry.stride, geometry.pad, strict=True))
    )
    if same:
        return "same", ()
    rank = len(geometry.pad)
    padding = Call(f"keras.layers.ZeroPadding{rank}D", {"padding": geometry.pad}, (bottom(0),), suffix="pad")
    return "valid", (padding,)


def _conv_keras(ctx: KerasContext) -> KerasPlan:
    """Conv2D/Conv3D (or DepthwiseConv2D when every channel is its own group), channels-last.

    Caffe's weights (out, in/group, *k) become Keras's (*k, in/group, out); Caffe
    cross-correlates as Keras does, so no kernel flip is needed.
    """
    bottom_shape = ctx.bottoms[0]
    geometry = conv_geometry(ctx.shape, bottom_shape)
    channels, num_output, group = _channels_and_groups(ctx.shape, geometry)
    rank = len(geometry.kernel)
    if geometry.channel_axis != 1 or rank not in (2, 3) or len(ctx.bottoms) != 1:
        raise ctx.shape.fail(
            "netdef compiles Convolution on one (N, C, H, W) or (N, C, D, H, W) bottom",
            received=f"{len(ctx.bottoms)} bottom(s) of shape {fmt(bottom_shape)}, axis {geometry.channel_axis}",
        )
    padding, calls = _keras_padding(ctx, geometry)
    source = output(0) if calls else bottom(0)
    bias = ctx.layer.convolution_param.bias_term
    common = {"strides": geometry.stride, "padding": padding, "dilation_rate": geometry.dilation, "use_bias": bias}
    if rank == 2 and group == channels and group > 1:
        conv = Call(
            "keras.layers.DepthwiseConv2D",
            {"kernel_size": geometry.kernel, "depth_multiplier": num_output // channels, **common},
            (source,),
        )
        kernel = WeightLink(0, len(calls), 0, "depthwise_kernel", {"channels": channels})
    else:
        conv = Call(
            f"keras.layers.Conv{rank}D",
            {"filters": num_output, "kernel_size": geometry.kernel, **common, "groups": group},
            (source,),
        )
        kernel = WeightLink(0, len(calls), 0, "conv_kernel")
    weights = (kernel, WeightLink(1, len(calls), 1)) if bias else (kernel,)
    return KerasPlan(
        calls=(*calls, conv),
        tops=(output(len(calls)),),
        top_layouts=(lay.CHANNELS_LAST,),
        bottom_layouts=(lay.CHANNELS_LAST,),
        weights=weights,
    )


def _deconv_keras(ctx: KerasContext) -> KerasPlan:
    """netdef's CaffeDeconvolution: Caffe's output size, groups and dilation on channels-last.

    Its kernel (*k, out/group, in) is Caffe's (in, out/group, *k) with the spatial axes
    first, the same reordering as a convolution kernel.
    """
    geometry = conv_geometry(ctx.shape, ctx.bottoms[0])
    _, num_output, group = _channels_and_groups(ctx.shape, geometry)
    if geometry.channel_axis != 1 or len(geometry.kernel) not in (2, 3) or len(ctx.bottoms) != 1:
        raise ctx.shape.fail("netdef compiles Deconvolution on one 4-D or 5-D bottom with axis 1")
    bias = ctx.layer.convolution_param.bias_term
    kwargs = {
        "filters": num_output,
        "kernel": geometry.kernel,
        "stride": geometry.stride,
        "pad": geometry.pad,
        "dilation": geometry.dilation,
        "groups": group,
        "use_bias": bias,
    }
    weights = (WeightLink(0, 0, 0, "conv_kernel"),) + ((WeightLink(1, 0, 1),) if bias else ())
    return single(
        ctx, netdef_layer("deconvolution", "CaffeDeconvolution"), kwargs, layout=lay.CHANNELS_LAST, weights=weights
    )


for _type, _shape, _blobs, _keras in (
    ("Convolution", _conv_shape, _conv_blobs, _conv_keras),
    ("Deconvolution", _deconv_shape, _deconv_blobs, _deconv_keras),
):
    declare(
        _type,
        bottoms=at_least(1),
        tops=at_least(1),
        shape=_shape,
        blobs=_blobs,
        params=("convolution_param",),
        keras=_keras,
    )


def _im2col_keras(ctx: KerasContext) -> KerasPlan:
    """Patches in Caffe's channel order ((c·kh + i)·kw + j), computed on the Caffe layout."""
    geometry = conv_geometry(ctx.shape, ctx.bottoms[0], min_spatial_axes=1)
    kwargs = {"kernel": geometry.kernel, "stride": geometry.stride, "pad": geometry.pad, "dilation": geometry.dilation}
    return single(ctx, netdef_layer("spatial", "Im2col"), kwargs, layout=lay.CAFFE)


declare(
    "Im2col",
    bottoms=exactly(1),
    tops=exactly(1),
    shape=_im2col_shape,
    keras=_im2col_keras,
    params=("convolution_param",),
)


# --- Pooling ---------------------------------------------------------------------------


@dataclass(frozen=True)
class PoolWindow:
    """Per-spatial-axis kernel, stride and pad of one pooling."""

    kernel: tuple[int, ...]
    stride: tuple[int, ...]
    pad: tuple[int, ...]


def pooled_size(size: int, kernel: int, stride: int, pad: int, *, ceil: bool, padded: bool) -> int:
    """Caffe's pooled size along one axis.

    ``ceil((in + 2·pad − k)/stride) + 1`` (or floor), then, when the layer has any padding
    at all (``padded``, even on another axis), one window fewer if the last one would
    start beyond ``in + pad``, i.e. entirely in the padding.
    """
    span = size + 2 * pad - kernel
    out = (ceil_div(span, stride) if ceil else span // stride) + 1
    if padded and (out - 1) * stride >= size + pad:
        out -= 1
    return out


def _pool_nd(ctx: LayerContext, param: Message, name: str, caffe_fields: tuple[str, ...], axes: int) -> tuple[int, ...]:
    """netdef's per-axis ``<name>_nd`` values (once, or once per spatial axis).

    They replace Caffe's own fields for the same setting, so giving both is an error
    rather than a silent choice of one.
    """
    given = [field for field in caffe_fields if param.HasField(field)]
    if given:
        raise ctx.fail(f"give {name}_nd or {'/'.join(caffe_fields)}, not both", received=f"{name}_nd and {given[0]}")
    return _per_axis(ctx, f"{name}_nd", list(getattr(param, f"{name}_nd")), axes, None)


def _pool_pair(ctx: LayerContext, param: Message, name: str, axes: int) -> tuple[int, ...]:
    """Pooling's ``pad``/``stride`` per spatial axis: ``<name>_nd``, one value, or ``_h`` and ``_w``.

    One value applies to every axis (D, H and W on a 5-D bottom); the ``_h``/``_w`` pair
    only to 4-D bottoms, as in Caffe.
    """
    if getattr(param, f"{name}_nd"):
        return _pool_nd(ctx, param, name, (name, f"{name}_h", f"{name}_w"), axes)
    has_h, has_w = param.HasField(f"{name}_h"), param.HasField(f"{name}_w")
    if not (has_h or has_w):
        return (getattr(param, name),) * axes
    if param.HasField(name) or not (has_h and has_w):
        raise ctx.fail(f"give {name}, or both {name}_h and {name}_w")
    if axes != 2:
        raise ctx.fail(
            "pad_h/pad_w and stride_h/stride_w apply only to 4-D bottoms",
            expected="pad, stride (or pad_nd, stride_nd with one value per axis)",
        )
    return (getattr(param, f"{name}_h"), getattr(param, f"{name}_w"))


def _pool_kernel(ctx: LayerContext, param: Message, spatial: Shape) -> tuple[int, ...]:
    """``kernel_nd``, or ``kernel_size`` XOR (``kernel_h`` AND ``kernel_w``), as Caffe checks it."""
    if param.kernel_nd:
        return _pool_nd(ctx, param, "kernel", ("kernel_size", "kernel_h", "kernel_w"), len(spatial))
    has_size = param.HasField("kernel_size")
    has_hw = param.HasField("kernel_h") and param.HasField("kernel_w")
    if has_size == has_hw:
        raise ctx.fail(
            "give the pooling kernel as kernel_size, or as kernel_h and kernel_w (not both)",
            hint="or set global_pooling: true to pool over the whole input",
        )
    if has_size:
        return (param.kernel_size,) * len(spatial)
    if len(spatial) != 2:
        raise ctx.fail(
            "kernel_h/kernel_w apply only to 4-D bottoms",
            expected="kernel_size (used for D, H and W) or kernel_nd (one value per axis) on a 5-D bottom",
        )
    return (param.kernel_h, param.kernel_w)


def pool_window(ctx: LayerContext, param: Message, spatial: Shape) -> PoolWindow:
    """Read a PoolingParameter as ``PoolingLayer::LayerSetUp`` does, on 2 or 3 spatial axes.

    On a 5-D bottom (netdef's extension for C3D-style nets: Caffe pools 4-D only),
    ``kernel_size``, ``stride`` and ``pad`` apply to depth, height and width alike;
    netdef's ``kernel_nd``, ``stride_nd`` and ``pad_nd`` give one value per axis instead
    (C3D's 1×2×2 pool1).
    """
    axes = len(spatial)
    if param.global_pooling:
        if any(param.HasField(f) for f in ("kernel_size", "kernel_h", "kernel_w")) or param.kernel_nd:
            raise ctx.fail("global_pooling takes its kernel from the input; do not set kernel_size/_h/_w/_nd")
        kernel = tuple(spatial)
    else:
        kernel = _pool_kernel(ctx, param, spatial)
    window = PoolWindow(kernel, _pool_pair(ctx, param, "stride", axes), _pool_pair(ctx, param, "pad", axes))
    _check_pool_window(ctx, window, param.pool, param.global_pooling)
    return window


def _check_pool_window(ctx: LayerContext, window: PoolWindow, pool: int, global_pooling: bool = False) -> None:
    """Caffe's checks on a pooling window; ``pool`` is a PoolingParameter.PoolMethod."""
    if any(k <= 0 for k in window.kernel):
        raise ctx.fail("the pooling kernel must be positive along every axis", received=fmt(window.kernel))
    if any(s <= 0 for s in window.stride):
        raise ctx.fail("the pooling stride must be positive", received=fmt(window.stride))
    if global_pooling and (any(window.pad) or any(s != 1 for s in window.stride)):
        raise ctx.fail(
            "global_pooling allows only pad 0 and stride 1",
            received=f"pad {fmt(window.pad)}, stride {fmt(window.stride)}",
        )
    if not any(window.pad):
        return
    if pool not in (pb.PoolingParameter.MAX, pb.PoolingParameter.AVE):
        raise ctx.fail(
            "padding is implemented only for MAX and AVE pooling",
            received=pb.PoolingParameter.PoolMethod.Name(pool),
        )
    if any(p >= k for p, k in zip(window.pad, window.kernel, strict=True)):
        raise ctx.fail(
            "the pooling pad must be smaller than the kernel",
            expected=f"pad < {fmt(window.kernel)}",
            received=fmt(window.pad),
        )


def pool_output(ctx: LayerContext, window: PoolWindow, spatial: Shape, *, ceil: bool = True) -> tuple[int, ...]:
    """The pooled sizes of ``spatial``; an empty result is an error, not a zero-size blob."""
    padded = any(window.pad)
    sizes = tuple(
        pooled_size(size, k, s, p, ceil=ceil, padded=padded)
        for size, k, s, p in zip(spatial, window.kernel, window.stride, window.pad, strict=True)
    )
    if any(size < 1 for size in sizes):
        raise ctx.fail(
            "the pooling kernel does not fit in the padded input",
            expected=f"kernel {fmt(window.kernel)} <= input + 2·pad",
            received=f"input {fmt(spatial)}, pad {fmt(window.pad)}",
        )
    return sizes


def _pool_shape(ctx: LayerContext) -> list[Shape]:
    """``(N, C, *pooled)`` with ``pooled = ceil((in + 2·pad − k)/stride) + 1`` by default.

    Caffe rounds up (``round_mode: CEIL``) where Keras rounds down, so GoogLeNet's 112 →
    56 with k3 s2, not 55; a padded window that would start in the padding is dropped.
    A second top (MAX only) holds the argmax mask, same shape. Caffe pools 4-D blobs;
    netdef also accepts 5-D ``(N, C, D, H, W)`` bottoms, where ``kernel_size``, ``stride``
    and ``pad`` apply to D as to H and W, and its ``kernel_nd``/``stride_nd``/``pad_nd``
    fields set each axis apart (C3D's 1×2×2 pool1); every axis keeps Caffe's rounding.
    """
    param = ctx.layer.pooling_param
    bottom = ctx.bottoms[0]
    if len(bottom) not in (4, 5):
        raise ctx.fail(
            "Pooling takes a 4-D (N, C, H, W) bottom (or, in netdef, a 5-D (N, C, D, H, W) one)",
            received=fmt(bottom),
        )
    if len(ctx.tops) == 2 and param.pool != pb.PoolingParameter.MAX:
        raise ctx.fail("only MAX pooling has a second (mask) top", expected="1 top", received="2 tops")
    window = pool_window(ctx, param, bottom[2:])
    ceil = param.round_mode == pb.PoolingParameter.CEIL
    top = bottom[:2] + pool_output(ctx, window, bottom[2:], ceil=ceil)
    return [top] * max(1, len(ctx.tops))


def _keras_pool_padding(ctx: KerasContext, window: PoolWindow, spatial: Shape) -> str | None:
    """The Keras pooling padding that reproduces Caffe's windows exactly, if there is one.

    Without Caffe padding, "valid" is exact when the windows tile the input (ceil and floor
    then agree). For MAX, "same" is exact when Keras's padding is one trailing row/column at
    most: Keras then puts it all after the input, where Caffe's ceil rounding lets the last
    window hang over, and both ignore the overhang. (AVE is not: whether "same" counts the
    padding in the divisor differs between Keras's backends.)
    """
    if any(window.pad):
        return None
    caffe = ctx.top_shapes[0][2:]
    valid = [(size - k) // s + 1 for size, k, s in zip(spatial, window.kernel, window.stride, strict=True)]
    if list(caffe) == valid:
        return "valid"
    same = [-(-size // s) for size, s in zip(spatial, window.stride, strict=True)]
    overhang = [
        (o - 1) * s + k - size for o, s, k, size in zip(same, window.stride, window.kernel, spatial, strict=True)
    ]
    is_max = ctx.layer.pooling_param.pool == pb.PoolingParameter.MAX
    if is_max and list(caffe) == same and all(0 <= extra <= 1 for extra in overhang):
        return "same"
    return None


def _pool_keras(ctx: KerasContext) -> KerasPlan:
    """Keras's MaxPooling/AveragePooling where they give Caffe's numbers, else CaffePooling."""
    param = ctx.layer.pooling_param
    if len(ctx.top_shapes) > 1:
        raise ctx.shape.fail("netdef does not compile the argmax mask top of Pooling", expected="1 top")
    if param.pool not in (pb.PoolingParameter.MAX, pb.PoolingParameter.AVE):
        raise ctx.shape.fail("netdef compiles MAX and AVE pooling", received="STOCHASTIC")
    spatial = ctx.bottoms[0][2:]
    window = pool_window(ctx.shape, param, spatial)
    method = "max" if param.pool == pb.PoolingParameter.MAX else "ave"
    rank = len(spatial)
    padding = _keras_pool_padding(ctx, window, spatial)
    if padding is not None:
        cls = f"keras.layers.{'Max' if method == 'max' else 'Average'}Pooling{rank}D"
        kwargs: dict[str, object] = {"pool_size": window.kernel, "strides": window.stride, "padding": padding}
    else:
        cls = netdef_layer("pooling", "CaffePooling")
        kwargs = {
            "method": method,
            "kernel": window.kernel,
            "stride": window.stride,
            "pad": window.pad,
            "round_mode": "ceil" if param.round_mode == pb.PoolingParameter.CEIL else "floor",
        }
    return single(ctx, cls, kwargs, layout=lay.CHANNELS_LAST)


declare(
    "Pooling",
    bottoms=exactly(1),
    tops=between(1, 2),
    shape=_pool_shape,
    params=("pooling_param",),
    keras=_pool_keras,
)


def _spp_level(ctx: LayerContext, level: int, spatial: Shape) -> tuple[int, ...]:
    """Pyramid level ``l``: ``2^l`` bins per axis, kernel = stride = ceil(in/bins), centred pad."""
    bins = 2**level
    kernel = tuple(ceil_div(size, bins) for size in spatial)
    pad = tuple((k * bins - size + 1) // 2 for k, size in zip(kernel, spatial, strict=True))
    if any(p >= k for p, k in zip(pad, kernel, strict=True)):
        raise ctx.fail(
            f"the input is too small for pyramid level {level} ({bins}×{bins} bins)",
            expected=f"pad (k·bins − in + 1)/2 = {fmt(pad)} < kernel ceil(in/bins) = {fmt(kernel)}",
            received=f"input {fmt(spatial)}",
            hint="lower pyramid_height",
        )
    window = PoolWindow(kernel, kernel, pad)
    # SPPParameter.PoolMethod numbers its methods exactly as PoolingParameter does.
    _check_pool_window(ctx, window, ctx.layer.spp_param.pool)
    return pool_output(ctx, window, spatial)


def _spp_shape(ctx: LayerContext) -> list[Shape]:
    """Spatial pyramid pooling: ``(N, C·Σ bins)`` over levels 0..pyramid_height−1.

    Each level pools into ``2^l × 2^l`` bins (Caffe's own pooling arithmetic, so a small
    input can give fewer bins), then flattens; with ``pyramid_height: 1`` the single
    level is *not* flattened and the top stays ``(N, C, 1, 1)``.
    """
    bottom = ctx.bottoms[0]
    require_axes(ctx, bottom, exactly=4, meaning="(N, C, H, W)")
    num, channels, *spatial = bottom
    if min(spatial) <= 0:
        raise ctx.fail("SPP needs a non-empty input", received=fmt(bottom))
    height = ctx.layer.spp_param.pyramid_height
    require_positive(ctx, "pyramid_height", height)
    levels = [_spp_level(ctx, level, tuple(spatial)) for level in range(height)]
    if height == 1:
        return [(num, channels, *levels[0])]
    return [(num, sum(channels * count(level) for level in levels))]


def _spp_keras(ctx: KerasContext) -> KerasPlan:
    """The pyramid flattens each level in C,H,W order, so it runs on the Caffe layout."""
    param = ctx.layer.spp_param
    method = "max" if param.pool == pb.SPPParameter.MAX else "ave"
    kwargs = {"pyramid_height": param.pyramid_height, "method": method}
    return single(ctx, netdef_layer("spatial", "SPP"), kwargs, layout=lay.CAFFE)


declare("SPP", bottoms=exactly(1), tops=exactly(1), shape=_spp_shape, params=("spp_param",), keras=_spp_keras)


def _lrn_shape(ctx: LayerContext) -> list[Shape]:
    """Same shape as the bottom, which must be 4-D; ``local_size`` must be odd.

    Caffe divides alpha by ``local_size`` (ACROSS_CHANNELS) or ``local_size²``
    (WITHIN_CHANNEL, where ``k`` is ignored); that matters for values, not shapes.
    """
    bottom = ctx.bottoms[0]
    require_axes(ctx, bottom, exactly=4, meaning="(N, C, H, W)")
    size = ctx.layer.lrn_param.local_size
    if size % 2 != 1:
        raise ctx.fail("LRN supports only odd local_size", expected="an odd number", received=size)
    return [bottom]


def _lrn_keras(ctx: KerasContext) -> KerasPlan:
    param = ctx.layer.lrn_param
    region = "across_channels" if param.norm_region == pb.LRNParameter.ACROSS_CHANNELS else "within_channel"
    kwargs = {
        "local_size": param.local_size,
        "alpha": param.alpha,
        "beta": param.beta,
        "k": param.k,
        "norm_region": region,
    }
    return single(ctx, netdef_layer("normalization", "LRN"), kwargs, layout=lay.CHANNELS_LAST)


declare("LRN", bottoms=exactly(1), tops=exactly(1), shape=_lrn_shape, params=("lrn_param",), keras=_lrn_keras)


def _crop_shape(ctx: LayerContext) -> list[Shape]:
    """Crop bottom 0 to bottom 1's size on every axis from ``axis`` on.

    ``offset``: none (0), one (for every cropped axis) or one per cropped axis. Axes
    before ``axis`` keep bottom 0's size; bottom 1 only lends its shape.
    """
    param = ctx.layer.crop_param
    bottom, reference = ctx.bottoms
    start = ctx.axis(param.axis, len(bottom))
    offsets = list(param.offset)
    cropped = len(bottom) - start
    if len(offsets) > 1 and len(offsets) != cropped:
        raise ctx.fail(
            "give one offset, or one per cropped axis",
            expected=f"1 or {cropped} offsets (axes {start}..{len(bottom) - 1})",
            received=f"{len(offsets)} offsets",
        )
    if len(reference) < len(bottom):
        raise ctx.fail(
            "bottom 1 must have as many axes as bottom 0",
            expected=f"at least {len(bottom)} axes",
            received=fmt(reference),
        )
    top = list(bottom)
    for i in range(start, len(bottom)):
        offset = offsets[0] if len(offsets) == 1 else offsets[i - start] if offsets else 0
        if bottom[i] - offset < reference[i]:
            raise ctx.fail(
                f"the crop along axis {i} does not fit in bottom 0",
                expected=f"offset {offset} + size {reference[i]} <= {bottom[i]}",
                received=f"bottom 0 {fmt(bottom)}, bottom 1 {fmt(reference)}",
            )
        top[i] = reference[i]
    return [tuple(top)]


def _crop_keras(ctx: KerasContext) -> KerasPlan:
    """Offsets per axis of the held layout; both bottoms are brought to bottom 0's layout."""
    param = ctx.layer.crop_param
    rank = len(ctx.bottoms[0])
    start = ctx.shape.axis(param.axis, rank)
    offsets = list(param.offset)
    caffe_offsets: list[int | None] = [None] * start
    for i in range(start, rank):
        caffe_offsets.append(offsets[0] if len(offsets) == 1 else offsets[i - start] if offsets else 0)
    held = ctx.bottom_layouts[0]
    order = lay.caffe_to_internal_order(rank) if held == lay.CHANNELS_LAST else tuple(range(rank))
    kwargs = {"offsets": [caffe_offsets[a] for a in order]}
    return on_all_bottoms(ctx, netdef_layer("spatial", "Crop"), kwargs, layout=held)


declare(
    "Crop",
    bottoms=exactly(2),
    tops=exactly(1),
    shape=_crop_shape,
    keras=_crop_keras,
    params=("crop_param",),
    no_gradient=frozenset({1}),
)
