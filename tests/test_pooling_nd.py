"""netdef's per-axis pooling fields (kernel_nd, stride_nd, pad_nd) against a numpy
transcription of Caffe's PoolingLayer, applied axis by axis.

Caffe's pooling has one kernel, stride and pad per spatial axis in its C++ (kernel_h_,
kernel_w_, ...); the extension only lets a prototxt set them separately on 2 or 3 axes. The
reference below is written from pooling_layer.cpp, not from netdef's code: output sizes with
ceil (or floor) rounding and the drop-the-window-in-the-padding rule, MAX over the window
clipped to the input, AVE dividing by the window clipped to input + pad.
"""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import numpy as np
import pytest

from netdef import load_net
from netdef.errors import NetdefError

from .parity import assert_close, netdef_forward


def pooled_sizes(
    spatial: tuple[int, ...], kernel: tuple[int, ...], stride: tuple[int, ...], pad: tuple[int, ...], ceil: bool
) -> list[int]:
    """PoolingLayer::Reshape, one axis at a time (the clip rule looks at any pad of the layer)."""
    sizes = []
    for size, k, s, p in zip(spatial, kernel, stride, pad, strict=True):
        span = size + 2 * p - k
        out = (math.ceil(span / s) if ceil else span // s) + 1
        if any(pad) and (out - 1) * s >= size + p:
            out -= 1
        sizes.append(out)
    return sizes


def caffe_pool(
    x: np.ndarray,
    method: str,
    kernel: tuple[int, ...],
    stride: tuple[int, ...],
    pad: tuple[int, ...],
    ceil: bool = True,
) -> np.ndarray:
    """Caffe's MAX/AVE pooling of an (N, C, *spatial) array, in float64."""
    spatial = x.shape[2:]
    sizes = pooled_sizes(spatial, kernel, stride, pad, ceil)
    out = np.empty((*x.shape[:2], *sizes))
    for position in itertools.product(*(range(n) for n in sizes)):
        starts = [i * s - p for i, s, p in zip(position, stride, pad, strict=True)]
        # AVE's divisor: the window clipped to input + pad, before clipping to the input.
        ends = [min(start + k, n + p) for start, k, n, p in zip(starts, kernel, spatial, pad, strict=True)]
        divisor = math.prod(end - start for start, end in zip(starts, ends, strict=True))
        window = tuple(slice(max(start, 0), min(end, n)) for start, end, n in zip(starts, ends, spatial, strict=True))
        values = x[(slice(None), slice(None), *window)].reshape(*x.shape[:2], -1)
        index = (slice(None), slice(None), *position)
        out[index] = values.max(axis=2) if method == "MAX" else values.sum(axis=2) / divisor
    return out


def pooling_net(shape: tuple[int, ...], pooling_param: str) -> str:
    dims = " ".join(f"dim: {d}" for d in shape)
    return (
        f'layer {{ name: "data" type: "Input" top: "data" input_param {{ shape {{ {dims} }} }} }}\n'
        f'layer {{ name: "pool" type: "Pooling" bottom: "data" top: "pool" pooling_param {{ {pooling_param} }} }}\n'
    )


# (bottom shape, pooling_param, method, kernel, stride, pad, ceil)
CASES = {
    "C3D pool1 1x2x2": (
        (1, 2, 4, 6, 6),
        "kernel_nd: 1 kernel_nd: 2 kernel_nd: 2 stride_nd: 1 stride_nd: 2 stride_nd: 2",
    ),
    "C3D pool5 2x7x7 padded (0, 1, 1)": ((2, 3, 2, 7, 7), "kernel_size: 2 stride: 2 pad_nd: 0 pad_nd: 1 pad_nd: 1"),
    "3-D AVE, pad on D and W, ceil overhang": (
        (2, 3, 5, 4, 7),
        "pool: AVE kernel_nd: 3 kernel_nd: 2 kernel_nd: 3 stride_nd: 2 stride_nd: 1 stride_nd: 2 "
        "pad_nd: 1 pad_nd: 0 pad_nd: 1",
    ),
    "3-D MAX, one kernel_nd for every axis, stride per axis": (
        (1, 2, 5, 6, 7),
        "kernel_nd: 3 stride_nd: 1 stride_nd: 2 stride_nd: 3",
    ),
    "3-D AVE FLOOR": (
        (1, 2, 7, 5, 6),
        "pool: AVE round_mode: FLOOR kernel_nd: 2 kernel_nd: 3 kernel_nd: 2 stride_nd: 2 pad_nd: 1 pad_nd: 1 pad_nd: 0",
    ),
    "2-D MAX per-axis kernel, stride and pad": (
        (2, 3, 7, 6),
        "kernel_nd: 3 kernel_nd: 2 stride_nd: 2 stride_nd: 1 pad_nd: 1 pad_nd: 0",
    ),
    "2-D AVE per-axis, window dropped in the padding": (
        (2, 3, 6, 5),
        "pool: AVE kernel_nd: 3 kernel_nd: 2 stride_nd: 2 stride_nd: 2 pad_nd: 1 pad_nd: 1",
    ),
}


def _window(pooling_param: str, rank: int) -> tuple[str, tuple[int, ...], tuple[int, ...], tuple[int, ...], bool]:
    """The reference's reading of the few fields CASES use (an independent, minimal parser)."""
    tokens = pooling_param.split()
    values: dict[str, list[str]] = {}
    for key, value in zip(tokens[::2], tokens[1::2], strict=True):
        values.setdefault(key.rstrip(":"), []).append(value)

    def per_axis(nd: str, single: str, default: int) -> tuple[int, ...]:
        given = [int(v) for v in values.get(nd, values.get(single, [str(default)]))]
        return tuple(given) if len(given) == rank else (given[0],) * rank

    method = values.get("pool", ["MAX"])[0]
    ceil = values.get("round_mode", ["CEIL"])[0] == "CEIL"
    return (
        method,
        per_axis("kernel_nd", "kernel_size", 0),
        per_axis("stride_nd", "stride", 1),
        per_axis("pad_nd", "pad", 0),
        ceil,
    )


@pytest.mark.parametrize(("shape", "pooling_param"), CASES.values(), ids=list(CASES))
def test_per_axis_pooling_matches_caffes_formula(tmp_path: Path, shape: tuple[int, ...], pooling_param: str) -> None:
    method, kernel, stride, pad, ceil = _window(pooling_param, len(shape) - 2)
    x = np.random.default_rng(7).standard_normal(shape).astype(np.float32)
    expected = caffe_pool(x.astype(np.float64), method, kernel, stride, pad, ceil)
    net = load_net(pooling_net(shape, pooling_param))
    assert net.blob("pool").shape == expected.shape
    (actual,) = netdef_forward(net, None, {"data": x}, ["pool"])
    assert_close(np.asarray(actual), expected, pooling_param)


def test_c3d_pool5_is_the_padded_9x9_pooling() -> None:
    """pad_nd (0, 1, 1) on 2×7×7 gives Caffe's 1×4×4: the windows of zero-padding to 9×9 and
    pooling 2×2 with floor rounding (non-negative inputs, as after ReLU)."""
    x = np.random.default_rng(3).uniform(0, 1, (1, 2, 2, 7, 7))
    caffe = caffe_pool(x, "MAX", (2, 2, 2), (2, 2, 2), (0, 1, 1))
    padded = np.pad(x, [(0, 0), (0, 0), (0, 0), (1, 1), (1, 1)])
    # Floor rounding on 9: (9 - 2) // 2 + 1 = 4 windows, starting at 0, 2, 4, 6 of the padded map.
    floor = padded[:, :, :, :8, :8].reshape(1, 2, 1, 2, 4, 2, 4, 2).max(axis=(3, 5, 7))
    assert caffe.shape == (1, 2, 1, 4, 4)
    np.testing.assert_array_equal(caffe, floor)


ERRORS = {
    "kernel_nd with kernel_size": ("kernel_size: 2 kernel_nd: 2", (1, 1, 4, 4, 4), "give kernel_nd or"),
    "stride_nd with stride": ("kernel_size: 2 stride: 2 stride_nd: 2", (1, 1, 4, 4, 4), "give stride_nd or"),
    "pad_nd with pad_h/pad_w": ("kernel_size: 3 pad_h: 1 pad_w: 1 pad_nd: 1", (1, 1, 4, 4), "give pad_nd or"),
    "two kernel_nd values on 3 axes": ("kernel_nd: 1 kernel_nd: 2", (1, 1, 4, 4, 4), "1 or 3 values"),
    "global pooling with kernel_nd": ("global_pooling: true kernel_nd: 2", (1, 1, 4, 4, 4), "global_pooling"),
    "pad_nd not below the kernel": ("kernel_nd: 1 kernel_nd: 2 pad_nd: 1", (1, 1, 4, 4), "pad must be smaller"),
    "zero stride_nd": ("kernel_size: 2 stride_nd: 1 stride_nd: 0", (1, 1, 4, 4), "stride must be positive"),
}


@pytest.mark.parametrize(("pooling_param", "shape", "message"), ERRORS.values(), ids=list(ERRORS))
def test_per_axis_mistakes_are_reported(pooling_param: str, shape: tuple[int, ...], message: str) -> None:
    with pytest.raises(NetdefError, match=message) as error:
        load_net(pooling_net(shape, pooling_param))
    assert "layer 'pool' (Pooling)" in str(error.value)
