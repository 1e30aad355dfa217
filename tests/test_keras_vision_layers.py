"""Caffe's vision layers as Keras layers: values, gradients and serialization.

Every forward value is checked against a numpy transcription of Caffe's C++ written here,
on Caffe-layout (N, C, H, W) arrays, with the transposes to and from channels-last only at
the test boundary. Gradients are checked against central finite differences (float64 where
TensorFlow's kernels allow it); each layer's config must round-trip, and one model holding
all the layers must give identical outputs after a .keras save and a load in a fresh process.
"""

from __future__ import annotations

import itertools
import json
import math
import subprocess
import sys
import textwrap
from collections.abc import Sequence
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from netdef.keras.layers.affine import Bias, Scale
from netdef.keras.layers.deconvolution import CaffeDeconvolution
from netdef.keras.layers.normalization import LRN, MVN, CaffeBatchNorm
from netdef.keras.layers.pooling import CaffePooling
from netdef.keras.layers.spatial import SPP, Crop, Im2col

from .conftest import REPO

FLT_MAX = float(np.finfo(np.float32).max)


# ---------------------------------------------------------------------------------------------
# Layout and comparison helpers


def to_channels_last(a: np.ndarray) -> np.ndarray:
    return np.moveaxis(a, 1, -1) if a.ndim in (4, 5) else a


def to_caffe(a: np.ndarray) -> np.ndarray:
    return np.moveaxis(a, -1, 1) if a.ndim in (4, 5) else a


def internal_order(rank: int) -> tuple[int, ...]:
    """For each axis of the tensor a compiled model holds, the Caffe axis it holds (channels-last for 4-D/5-D)."""
    return (0, *range(2, rank), 1) if rank in (4, 5) else tuple(range(rank))


def internal_axis(caffe_axis: int, rank: int) -> int:
    return internal_order(rank).index(caffe_axis)


def assert_caffe_close(actual, expected: np.ndarray) -> None:
    """Caffe's values within float32 rounding: |error| <= 1e-5·max(1, |reference|), NaN where Caffe has NaN."""
    actual = np.asarray(actual, dtype=np.float64)
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    np.testing.assert_array_equal(np.isnan(actual), np.isnan(expected))
    finite = ~np.isnan(expected)
    error = np.abs(actual[finite] - expected[finite])
    bound = 1e-5 * np.maximum(1.0, np.abs(expected[finite]))
    assert np.all(error <= bound), f"max error {error.max()} (bound {bound[np.argmax(error - bound)]})"


def distinct(rng: np.random.Generator, shape: Sequence[int], gap: float = 0.05) -> np.ndarray:
    """Values at least ``gap`` apart, so no finite-difference step changes which value is a maximum."""
    count = math.prod(shape)
    return (rng.permutation(count) - count / 2).reshape(shape) * gap


def assert_gradients(
    layer: keras.layers.Layer,
    inputs: list[np.ndarray],
    *,
    wrt: Sequence[int] = (0,),
    weights: bool = True,
    training: bool | None = None,
    eps: float = 1e-6,
    tolerance: float = 1e-6,
) -> None:
    """Tape gradients of ``sum(r · layer(inputs))`` equal central differences, inputs and weights."""
    rng = np.random.default_rng(7)
    as_list = len(inputs) > 1
    kwargs = {} if training is None else {"training": training}

    def apply(*tensors):
        return layer(list(tensors) if as_list else tensors[0], **kwargs)

    forward = tf.function(apply, autograph=False)
    tensors = [tf.constant(a) for a in inputs]
    weight = rng.standard_normal(forward(*tensors).shape)

    def loss(arrays: list[np.ndarray]) -> float:
        return float(np.sum(np.asarray(forward(*[tf.constant(a) for a in arrays]), dtype=np.float64) * weight))

    variables = list(layer.trainable_variables) if weights else []
    with tf.GradientTape() as tape:
        tape.watch(tensors)
        total = tf.reduce_sum(tf.cast(apply(*tensors), tf.float64) * weight)
    analytic = tape.gradient(total, [tensors[i] for i in wrt] + variables)

    numeric = []
    for i in wrt:
        arrays = [a.copy() for a in inputs]
        grad = np.zeros(inputs[i].shape)
        for index in np.ndindex(*inputs[i].shape):
            arrays[i][index] = inputs[i][index] + eps
            up = loss(arrays)
            arrays[i][index] = inputs[i][index] - eps
            grad[index] = (up - loss(arrays)) / (2 * eps)
            arrays[i][index] = inputs[i][index]
        numeric.append(grad)
    for variable in variables:
        base = np.asarray(variable.numpy())
        grad = np.zeros(base.shape)
        for index in np.ndindex(*base.shape):
            for sign in (1, -1):
                moved = base.copy()
                moved[index] += sign * eps
                variable.assign(moved)
                grad[index] += sign * loss(inputs) / (2 * eps)
        variable.assign(base)
        numeric.append(grad)

    for got, expected in zip(analytic, numeric, strict=True):
        got = np.asarray(got, dtype=np.float64)
        error = np.abs(got - expected)
        assert np.all(error <= tolerance * np.maximum(1.0, np.abs(expected))), f"gradient error {error.max()}"


def assert_config_round_trip(layer: keras.layers.Layer, inputs: list[np.ndarray]) -> None:
    """from_config(get_config()) rebuilds the same layer: same config (plain JSON), same outputs."""
    config = layer.get_config()
    assert json.loads(json.dumps(config)) == config
    clone = type(layer).from_config(config)
    assert clone.get_config() == config
    args = list(inputs) if len(inputs) > 1 else inputs[0]
    expected = np.asarray(layer(args))
    clone(args)
    clone.set_weights(layer.get_weights())
    np.testing.assert_array_equal(np.asarray(clone(args)), expected)


# ---------------------------------------------------------------------------------------------
# Pooling (pooling_layer.cpp)


def ref_pooled_size(size: int, kernel: int, stride: int, pad: int, ceil: bool, padded: bool) -> int:
    rounding = math.ceil if ceil else math.floor
    out = int(rounding((size + 2 * pad - kernel) / stride)) + 1
    if padded and (out - 1) * stride >= size + pad:
        out -= 1
    return out


def ref_pool(x: np.ndarray, method: str, kernel, stride, pad, ceil: bool = True) -> np.ndarray:
    """PoolingLayer::Forward_cpu on (N, C, *spatial), any number of spatial axes."""
    num, channels, *spatial = x.shape
    padded = any(pad)
    out = [ref_pooled_size(n, k, s, p, ceil, padded) for n, k, s, p in zip(spatial, kernel, stride, pad, strict=True)]
    top = np.empty((num, channels, *out))
    for position in itertools.product(*(range(o) for o in out)):
        starts = [o * s - p for o, s, p in zip(position, stride, pad, strict=True)]
        if method == "max":
            ends = [min(b + k, n) for b, k, n in zip(starts, kernel, spatial, strict=True)]
            window = x[(slice(None), slice(None), *(slice(max(b, 0), e) for b, e in zip(starts, ends, strict=True)))]
            top[(slice(None), slice(None), *position)] = window.reshape(num, channels, -1).max(axis=2, initial=-FLT_MAX)
        else:
            ends = [min(b + k, n + p) for b, k, n, p in zip(starts, kernel, spatial, pad, strict=True)]
            pool_size = math.prod(e - b for b, e in zip(starts, ends, strict=True))
            clipped = (slice(max(b, 0), min(e, n)) for b, e, n in zip(starts, ends, spatial, strict=True))
            total = x[(slice(None), slice(None), *clipped)].reshape(num, channels, -1).sum(axis=2)
            with np.errstate(divide="ignore", invalid="ignore"):
                top[(slice(None), slice(None), *position)] = total / pool_size
    return top


POOL_CASES = {
    "max_k3_s2": ("max", (3, 3), (2, 2), (0, 0), "ceil", (2, 3, 6, 5)),
    "max_k3_s2_p1": ("max", (3, 3), (2, 2), (1, 1), "ceil", (2, 3, 6, 5)),
    "max_rect_floor": ("max", (3, 2), (2, 1), (1, 0), "floor", (1, 2, 7, 6)),
    "max_drops_last_window": ("max", (3, 3), (2, 2), (2, 2), "ceil", (1, 2, 4, 4)),
    "max_floor_uncovered_tail": ("max", (3, 3), (2, 2), (0, 0), "floor", (1, 2, 6, 7)),
    "ave_floor_uncovered_tail": ("ave", (3, 3), (3, 3), (1, 1), "floor", (1, 2, 9, 8)),
    "ave_k3_s2_p1": ("ave", (3, 3), (2, 2), (1, 1), "ceil", (2, 3, 6, 5)),
    "ave_ceil_overhang": ("ave", (2, 2), (2, 2), (0, 0), "ceil", (1, 2, 7, 5)),
    "ave_floor": ("ave", (3, 3), (2, 2), (1, 1), "floor", (1, 2, 7, 6)),
    "ave_drops_last_window": ("ave", (3, 3), (2, 2), (2, 2), "ceil", (1, 2, 4, 4)),
    "max_global": ("max", None, None, None, "global", (2, 3, 4, 5)),
    "ave_global": ("ave", None, None, None, "global", (2, 3, 4, 5)),
    "max_3d": ("max", (2, 3, 3), (2, 2, 2), (0, 1, 1), "ceil", (1, 2, 4, 5, 5)),
    "ave_3d": ("ave", (2, 3, 3), (2, 2, 2), (0, 1, 1), "ceil", (1, 2, 4, 5, 5)),
}


@pytest.mark.parametrize("case", POOL_CASES)
def test_pooling_matches_caffe(case: str) -> None:
    method, kernel, stride, pad, mode, shape = POOL_CASES[case]
    rng = np.random.default_rng(1)
    x = distinct(rng, shape)
    global_pooling = mode == "global"
    if global_pooling:
        kernel, stride, pad = shape[2:], (1, 1), (0, 0)
    expected = ref_pool(x, method, kernel, stride, pad, ceil=mode != "floor")
    options = {"global_pooling": True} if global_pooling else {"kernel": kernel, "stride": stride, "pad": pad}
    layer = CaffePooling(method, round_mode="floor" if mode == "floor" else "ceil", **options)
    assert_caffe_close(to_caffe(np.asarray(layer(to_channels_last(x).astype(np.float32)))), expected)
    assert (
        tuple(layer.compute_output_shape((None, *to_channels_last(x).shape[1:]))[1:])
        == to_channels_last(expected).shape[1:]
    )
    assert_config_round_trip(layer, [to_channels_last(x).astype(np.float32)])
    # TensorFlow has no float64 3-D pooling kernels: float32 steps there, hence the looser bound.
    three_d = len(shape) == 5
    dtype = "float32" if three_d else "float64"
    grad_layer = CaffePooling.from_config({**layer.get_config(), "dtype": dtype})
    assert_gradients(
        grad_layer,
        [to_channels_last(x).astype(dtype)],
        eps=1e-2 if three_d else 1e-6,
        tolerance=2e-3 if three_d else 1e-6,
    )


def test_pooling_caffe_test_cases() -> None:
    """The cases of Caffe's test_pooling_layer.cpp."""
    padded_max = CaffePooling("max", kernel=(3, 3), stride=(2, 2), pad=(2, 2))
    x = np.array([[1, 2, 4], [2, 3, 2], [4, 2, 1]], np.float32).reshape(1, 3, 3, 1)
    np.testing.assert_array_equal(np.asarray(padded_max(x))[0, ..., 0], [[1, 4, 4], [4, 4, 4], [4, 4, 1]])

    padded_ave = CaffePooling("ave", kernel=(3, 3), stride=(1, 1), pad=(1, 1))
    y = np.asarray(padded_ave(np.full((1, 3, 3, 1), 2.0, np.float32)))[0, ..., 0]
    np.testing.assert_allclose(y, [[8 / 9, 4 / 3, 8 / 9], [4 / 3, 2, 4 / 3], [8 / 9, 4 / 3, 8 / 9]], rtol=1e-6)

    x = np.zeros((2, 6, 5, 3), np.float32)
    assert CaffePooling("max", kernel=(3, 3), stride=(2, 2), pad=(0, 0))(x).shape == (2, 3, 2, 3)
    assert CaffePooling("max", kernel=(3, 3), stride=(2, 2), pad=(1, 1))(x).shape == (2, 4, 3, 3)


def test_pooling_windows_outside_the_image_give_caffes_numbers() -> None:
    """Without padding and kernel < stride, ceil mode adds windows wholly past the image.

    Caffe's MAX then keeps its initial -FLT_MAX, and its AVE divides a zero sum by a pool size
    that is negative (giving -0) or zero (giving NaN).
    """
    x = distinct(np.random.default_rng(2), (1, 1, 5, 4))
    for method in ("max", "ave"):
        expected = ref_pool(x, method, (1, 1), (3, 4), (0, 0))
        layer = CaffePooling(method, kernel=(1, 1), stride=(3, 4), pad=(0, 0))
        assert_caffe_close(to_caffe(np.asarray(layer(to_channels_last(x).astype(np.float32)))), expected)
    assert ref_pool(x, "max", (1, 1), (3, 4), (0, 0))[0, 0, 2, 0] == -FLT_MAX
    assert np.isnan(ref_pool(x, "ave", (1, 1), (3, 4), (0, 0))[0, 0, 0, 1])


def test_pooling_rejects_a_pad_as_large_as_the_kernel() -> None:
    with pytest.raises(ValueError, match="pad smaller than the kernel"):
        CaffePooling("max", kernel=(2, 2), stride=(1, 1), pad=(2, 0))(np.zeros((1, 5, 5, 1), np.float32))


# ---------------------------------------------------------------------------------------------
# LRN (lrn_layer.cpp)


def ref_lrn(x: np.ndarray, size: int, alpha: float, beta: float, k: float, region: str) -> np.ndarray:
    if region == "across_channels":
        num, channels, height, width = x.shape
        pre_pad = (size - 1) // 2
        padded_square = np.zeros((num, channels + size - 1, height, width))
        padded_square[:, pre_pad : pre_pad + channels] = x**2
        scale = np.full(x.shape, k)
        for c in range(channels):
            scale[:, c] += alpha / size * padded_square[:, c : c + size].sum(axis=1)
        return x * scale ** (-beta)
    # WITHIN_CHANNEL is Caffe's small net: Power(2) → AVE Pooling → Power(1 + alpha·v, −beta) → product.
    pad = (size - 1) // 2
    pooled = ref_pool(x**2, "ave", (size, size), (1, 1), (pad, pad))
    return x * (1 + alpha * pooled) ** (-beta)


LRN_CASES = {
    "across_5": (5, 0.5, 0.75, 2.0, "across_channels", (2, 7, 3, 4)),
    "across_window_wider_than_channels": (5, 1.0, 0.75, 1.0, "across_channels", (1, 3, 2, 3)),
    "across_1": (1, 0.3, 0.5, 1.5, "across_channels", (1, 4, 2, 2)),
    "within_3": (3, 0.8, 0.75, 9.0, "within_channel", (2, 2, 5, 4)),
    "within_5": (5, 2.0, 0.6, 1.0, "within_channel", (1, 2, 4, 6)),
}


@pytest.mark.parametrize("case", LRN_CASES)
def test_lrn_matches_caffe(case: str) -> None:
    size, alpha, beta, k, region, shape = LRN_CASES[case]
    x = np.random.default_rng(3).standard_normal(shape)
    layer = LRN(size, alpha, beta, k, region)
    x_cl = to_channels_last(x)
    assert_caffe_close(to_caffe(np.asarray(layer(x_cl.astype(np.float32)))), ref_lrn(x, size, alpha, beta, k, region))
    assert_config_round_trip(layer, [x_cl.astype(np.float32)])
    assert_gradients(LRN.from_config({**layer.get_config(), "dtype": "float64"}), [x_cl])


# ---------------------------------------------------------------------------------------------
# BatchNorm (batch_norm_layer.cpp)


def ref_batch_norm(x: np.ndarray, blobs: list[np.ndarray], global_stats: bool, fraction: float, eps: float):
    """BatchNormLayer::Forward_cpu on a Caffe-layout blob (channels on axis 1); returns (top, new blobs)."""
    axes = tuple(a for a in range(x.ndim) if a != 1)
    shape = [1] * x.ndim
    shape[1] = -1
    mean_sum, variance_sum, scale_factor = (b.astype(np.float64) for b in blobs)
    if global_stats:
        factor = 0.0 if scale_factor[0] == 0 else 1.0 / scale_factor[0]
        mean, variance = factor * mean_sum, factor * variance_sum
        updated = [mean_sum, variance_sum, scale_factor]
    else:
        mean = x.mean(axis=axes)
        variance = ((x - mean.reshape(shape)) ** 2).mean(axis=axes)
        m = x.size // x.shape[1]
        correction = m / (m - 1) if m > 1 else 1.0
        updated = [
            mean + fraction * mean_sum,
            correction * variance + fraction * variance_sum,
            scale_factor * fraction + 1,
        ]
    top = (x - mean.reshape(shape)) / np.sqrt(variance + eps).reshape(shape)
    return top, updated


BN_CASES = {
    "test_phase_default_uses_global_stats": (None, False, (2, 3, 4, 5)),
    "train_phase_default_uses_batch_stats": (None, True, (2, 3, 4, 5)),
    "use_global_stats_true_while_training": (True, True, (2, 3, 4, 5)),
    "use_global_stats_false_in_test_phase": (False, False, (2, 3, 4, 5)),
    "two_axes_batch_stats": (None, True, (6, 4)),
    "five_axes_global_stats": (True, False, (2, 3, 2, 3, 2)),
}


@pytest.mark.parametrize("case", BN_CASES)
def test_batch_norm_matches_caffe(case: str) -> None:
    use_global_stats, training, shape = BN_CASES[case]
    rng = np.random.default_rng(4)
    x = rng.standard_normal(shape) * 2 + 0.5
    channels = shape[1]
    blobs = [rng.standard_normal(channels), rng.uniform(0.5, 2.0, channels), np.array([2.5])]
    axis = internal_axis(1, len(shape))
    layer = CaffeBatchNorm(use_global_stats, moving_average_fraction=0.9, eps=1e-4, axis=axis)
    layer.build(to_channels_last(x).shape)
    layer.set_weights([b.astype(np.float32) for b in blobs])
    global_stats = use_global_stats if use_global_stats is not None else not training
    expected, updated = ref_batch_norm(x, blobs, global_stats, 0.9, 1e-4)

    got = layer(to_channels_last(x).astype(np.float32), training=training)
    assert_caffe_close(to_caffe(np.asarray(got)), expected)
    for variable, blob in zip(layer.weights, updated, strict=True):
        assert_caffe_close(np.asarray(variable.numpy()), blob)
    # Caffe's running sums keep accumulating: a second step from the updated blobs.
    expected, updated = ref_batch_norm(x, updated, global_stats, 0.9, 1e-4)
    assert_caffe_close(to_caffe(np.asarray(layer(to_channels_last(x).astype(np.float32), training=training))), expected)
    for variable, blob in zip(layer.weights, updated, strict=True):
        assert_caffe_close(np.asarray(variable.numpy()), blob)

    grad_layer = CaffeBatchNorm.from_config({**layer.get_config(), "dtype": "float64"})
    grad_layer.build(to_channels_last(x).shape)
    grad_layer.set_weights(blobs)
    assert_gradients(grad_layer, [to_channels_last(x)], training=training)
    config_layer = CaffeBatchNorm.from_config(layer.get_config())
    config_layer.build(to_channels_last(x).shape)
    config_layer.set_weights(blobs)
    assert_config_round_trip(config_layer, [to_channels_last(x).astype(np.float32)])


def test_batch_norm_starts_as_caffe_does() -> None:
    """All three blobs start at 0; a zero scale_factor means zero statistics, so y = x/sqrt(eps)."""
    layer = CaffeBatchNorm(eps=0.25)
    x = np.random.default_rng(5).standard_normal((2, 3, 3, 4)).astype(np.float32)
    y = layer(x)
    assert [v.name for v in layer.weights] == ["mean", "variance", "scale_factor"]
    assert [tuple(v.shape) for v in layer.weights] == [(4,), (4,), (1,)]
    assert not layer.trainable_weights
    assert all(not np.any(v.numpy()) for v in layer.weights)
    np.testing.assert_allclose(np.asarray(y), x / 0.5, rtol=1e-6)


# ---------------------------------------------------------------------------------------------
# MVN (mvn_layer.cpp)


def ref_mvn(x: np.ndarray, normalize_variance: bool, across_channels: bool, eps: float, top_diff=None):
    """MVNLayer Forward_cpu (and Backward_cpu given ``top_diff``) on Caffe's 4-D view of ``x``."""
    legacy = (*x.shape, *([1] * (4 - x.ndim)))
    rows = x.reshape(legacy[0] if across_channels else legacy[0] * legacy[1], -1)
    centred = rows - rows.mean(axis=1, keepdims=True)
    if not normalize_variance:
        top = centred
        if top_diff is None:
            return top.reshape(legacy)
        g = top_diff.reshape(rows.shape)
        return top.reshape(legacy), (g - g.mean(axis=1, keepdims=True)).reshape(x.shape)
    std_eps = np.sqrt((centred**2).mean(axis=1, keepdims=True)) + eps
    top = centred / std_eps
    if top_diff is None:
        return top.reshape(legacy)
    g = top_diff.reshape(rows.shape)
    bottom_diff = g - g.mean(axis=1, keepdims=True) - (g * top).mean(axis=1, keepdims=True) * top
    return top.reshape(legacy), (bottom_diff / std_eps).reshape(x.shape)


MVN_CASES = {
    "variance_per_channel": (True, False, (2, 3, 4, 5)),
    "variance_across_channels": (True, True, (2, 3, 4, 5)),
    "mean_only_per_channel": (False, False, (2, 3, 4, 5)),
    "mean_only_across_channels": (False, True, (2, 3, 4, 5)),
    "two_axes_across_channels": (True, True, (3, 6)),
    "three_axes": (True, False, (2, 3, 5)),
}


@pytest.mark.parametrize("case", MVN_CASES)
def test_mvn_matches_caffe(case: str) -> None:
    normalize_variance, across_channels, shape = MVN_CASES[case]
    x = np.random.default_rng(6).standard_normal(shape) * 3 + 1
    layer = MVN(normalize_variance, across_channels, eps=1e-3)
    x_in = to_channels_last(x)
    expected = ref_mvn(x, normalize_variance, across_channels, 1e-3)
    assert_caffe_close(to_caffe(np.asarray(layer(x_in.astype(np.float32)))), expected)
    assert_config_round_trip(layer, [x_in.astype(np.float32)])
    # Finite differences see the derivative of the forward formula, which Caffe's backward
    # only approximates (by eps/std); compare with Caffe's backward directly, then with FD at eps 0.
    grad_layer = MVN.from_config({**layer.get_config(), "dtype": "float64"})
    top_diff = np.random.default_rng(8).standard_normal(expected.shape)
    tensor = tf.constant(x_in)
    with tf.GradientTape() as tape:
        tape.watch(tensor)
        total = tf.reduce_sum(grad_layer(tensor) * to_channels_last(top_diff))
    _, bottom_diff = ref_mvn(x, normalize_variance, across_channels, 1e-3, top_diff)
    np.testing.assert_allclose(to_caffe(np.asarray(tape.gradient(total, tensor))), bottom_diff, rtol=1e-9, atol=1e-12)
    assert_gradients(MVN(normalize_variance, across_channels, eps=0.0, dtype="float64"), [x_in])


def test_mvn_of_a_two_axis_blob_is_four_dimensional_with_caffes_gradient() -> None:
    """Caffe writes (N, C) as (N, C, 1, 1); per channel that is x − x = 0, and Caffe's gradient is 0, not NaN."""
    x = np.random.default_rng(9).standard_normal((3, 4))
    tensor = tf.constant(x)
    layer = MVN(dtype="float64")
    with tf.GradientTape() as tape:
        tape.watch(tensor)
        y = layer(tensor)
        total = tf.reduce_sum(y * np.arange(12.0).reshape(3, 1, 1, 4))
    assert tuple(y.shape) == (3, 1, 1, 4) == layer.compute_output_shape((3, 4))
    np.testing.assert_array_equal(np.asarray(y), 0.0)
    np.testing.assert_array_equal(np.asarray(tape.gradient(total, tensor)), 0.0)


# ---------------------------------------------------------------------------------------------
# Scale and Bias (scale_layer.cpp, bias_layer.cpp)


def caffe_span(shape: Sequence[int], axis: int, num_axes: int) -> tuple[int, ...]:
    return tuple(shape[axis:] if num_axes == -1 else shape[axis : axis + num_axes])


def ref_broadcast(blob: np.ndarray, rank: int, axis: int) -> np.ndarray:
    """Caffe's outer/blob/inner loops: the blob spans axes [axis, axis + blob.ndim)."""
    axis = 0 if blob.ndim == 0 else axis
    return blob.reshape((1,) * axis + blob.shape + (1,) * (rank - axis - blob.ndim))


def keras_parameter(blob: np.ndarray, caffe_axes: Sequence[int], rank: int) -> tuple[list[int], np.ndarray]:
    """The ``axes`` argument and the Keras weight for a Caffe blob spanning ``caffe_axes``.

    The documented mapping: the weight's axes are the internal axes in increasing order.
    """
    internal = [internal_axis(a, rank) for a in caffe_axes]
    order = sorted(range(len(internal)), key=lambda i: internal[i])
    return internal, np.transpose(blob, order) if blob.ndim else blob


AFFINE_CASES = {
    "channel": (1, 1, (2, 3, 4, 5)),
    "channel_and_height": (1, 2, (2, 3, 4, 5)),
    "height_and_width": (2, 2, (2, 3, 4, 5)),
    "whole_blob": (0, -1, (2, 3, 4, 5)),
    "scalar": (1, 0, (2, 3, 4, 5)),
    "two_axes": (1, 1, (4, 6)),
    "three_d_channel": (1, 1, (1, 2, 3, 2, 4)),
}


@pytest.mark.parametrize("bias_term", [False, True], ids=["no_bias", "bias"])
@pytest.mark.parametrize("case", AFFINE_CASES)
def test_scale_with_a_learned_factor_matches_caffe(case: str, bias_term: bool) -> None:
    axis, num_axes, shape = AFFINE_CASES[case]
    rng = np.random.default_rng(10)
    x = rng.standard_normal(shape)
    span = caffe_span(shape, axis, num_axes)
    scale, bias = np.asarray(rng.standard_normal(span)), np.asarray(rng.standard_normal(span))
    caffe_axes = list(range(axis, axis + len(span)))
    axes, keras_scale = keras_parameter(scale, caffe_axes, len(shape))
    _, keras_bias = keras_parameter(bias, caffe_axes, len(shape))
    expected = x * ref_broadcast(scale, len(shape), axis)
    if bias_term:
        expected = expected + ref_broadcast(bias, len(shape), axis)
    weights = [keras_scale, keras_bias] if bias_term else [keras_scale]

    layer = Scale(axes=axes, bias_term=bias_term)
    x_in = to_channels_last(x)
    layer.build(x_in.shape)
    assert [tuple(w.shape) for w in layer.weights] == [w.shape for w in weights]
    layer.set_weights([w.astype(np.float32) for w in weights])
    assert_caffe_close(to_caffe(np.asarray(layer(x_in.astype(np.float32)))), expected)
    assert_config_round_trip(layer, [x_in.astype(np.float32)])
    grad_layer = Scale.from_config({**layer.get_config(), "dtype": "float64"})
    grad_layer.build(x_in.shape)
    grad_layer.set_weights(weights)
    assert_gradients(grad_layer, [x_in])


@pytest.mark.parametrize("case", AFFINE_CASES)
def test_bias_with_a_learned_addend_matches_caffe(case: str) -> None:
    axis, num_axes, shape = AFFINE_CASES[case]
    rng = np.random.default_rng(11)
    x = rng.standard_normal(shape)
    span = caffe_span(shape, axis, num_axes)
    bias = np.asarray(rng.standard_normal(span))
    axes, keras_bias = keras_parameter(bias, list(range(axis, axis + len(span))), len(shape))
    layer = Bias(axes=axes)
    x_in = to_channels_last(x)
    layer.build(x_in.shape)
    layer.set_weights([keras_bias.astype(np.float32)])
    assert_caffe_close(to_caffe(np.asarray(layer(x_in.astype(np.float32)))), x + ref_broadcast(bias, len(shape), axis))
    assert_config_round_trip(layer, [x_in.astype(np.float32)])
    grad_layer = Bias.from_config({**layer.get_config(), "dtype": "float64"})
    grad_layer.build(x_in.shape)
    grad_layer.set_weights([keras_bias])
    assert_gradients(grad_layer, [x_in])


#: (x shape, Caffe axis, second bottom's shape)
OPERAND_CASES = {
    "per_sample_channel": ((2, 3, 4, 5), 0, (2, 3)),
    "channel_height_unsorted": ((2, 3, 4, 5), 1, (3, 4)),
    "same_shape": ((2, 3, 4, 5), 0, (2, 3, 4, 5)),
    "scalar": ((2, 3, 4, 5), 1, ()),
    "two_axes": ((4, 6), 1, (6,)),
}


def operand_axes(x_rank: int, axis: int, operand: np.ndarray) -> tuple[list[int], np.ndarray]:
    """The ``axes`` argument for a second bottom, and that bottom as a compiled model holds it."""
    held = to_channels_last(operand)
    caffe_axes = list(range(axis, axis + operand.ndim))
    caffe_axes = [caffe_axes[a] for a in internal_order(operand.ndim)]
    return [internal_axis(a, x_rank) for a in caffe_axes], held


@pytest.mark.parametrize("bias_term", [False, True], ids=["no_bias", "bias"])
@pytest.mark.parametrize("case", OPERAND_CASES)
def test_scale_and_bias_by_a_second_input_match_caffe(case: str, bias_term: bool) -> None:
    shape, axis, operand_shape = OPERAND_CASES[case]
    rng = np.random.default_rng(12)
    x, operand = rng.standard_normal(shape), np.asarray(rng.standard_normal(operand_shape))
    bias = np.asarray(rng.standard_normal(operand_shape))
    axes, held = operand_axes(len(shape), axis, operand)
    _, keras_bias = keras_parameter(bias, list(range(axis, axis + bias.ndim)), len(shape))
    x_in = to_channels_last(x)

    layer = Scale(axes=axes, bias_term=bias_term)
    layer.build([x_in.shape, held.shape])
    expected = x * ref_broadcast(operand, len(shape), axis)
    if bias_term:
        layer.set_weights([keras_bias.astype(np.float32)])
        expected = expected + ref_broadcast(bias, len(shape), axis)
    else:
        assert not layer.weights
    inputs32 = [x_in.astype(np.float32), held.astype(np.float32)]
    assert_caffe_close(to_caffe(np.asarray(layer(inputs32))), expected)
    assert_config_round_trip(layer, inputs32)
    grad_layer = Scale.from_config({**layer.get_config(), "dtype": "float64"})
    grad_layer.build([x_in.shape, held.shape])
    grad_layer.set_weights([keras_bias] if bias_term else [])
    assert_gradients(grad_layer, [x_in, held], wrt=(0, 1))

    adder = Bias(axes=axes)
    assert_caffe_close(to_caffe(np.asarray(adder(inputs32))), x + ref_broadcast(operand, len(shape), axis))
    assert_config_round_trip(adder, inputs32)
    assert_gradients(Bias.from_config({**adder.get_config(), "dtype": "float64"}), [x_in, held], wrt=(0, 1))


# ---------------------------------------------------------------------------------------------
# Crop (crop_layer.cpp)


def ref_crop(x: np.ndarray, reference_shape: Sequence[int], axis: int, offset: Sequence[int]) -> np.ndarray:
    index = []
    for i, size in enumerate(x.shape):
        if i < axis:
            index.append(slice(0, size))
            continue
        o = 0 if not offset else offset[0] if len(offset) == 1 else offset[i - axis]
        index.append(slice(o, o + reference_shape[i]))
    return x[tuple(index)]


CROP_CASES = {
    "spatial_offsets": ((2, 3, 7, 8), (2, 5, 4, 5), 2, (1, 2)),
    "one_offset_for_all": ((2, 4, 6, 6), (1, 2, 3, 4), 1, (1,)),
    "no_offset": ((2, 3, 7, 8), (2, 3, 4, 4), 2, ()),
    "every_axis": ((3, 4, 5, 6), (2, 2, 3, 4), 0, (1, 0, 2, 1)),
    "two_axes": ((3, 9), (3, 4), 1, (3,)),
    "five_axes": ((1, 2, 5, 4, 6), (1, 2, 3, 3, 3), 2, (1, 0, 2)),
}


@pytest.mark.parametrize("case", CROP_CASES)
def test_crop_matches_caffe(case: str) -> None:
    shape, reference_shape, axis, offset = CROP_CASES[case]
    rng = np.random.default_rng(13)
    x, reference = rng.standard_normal(shape), rng.standard_normal(reference_shape)
    expected = ref_crop(x, reference_shape, axis, offset)
    caffe_offsets: list[int | None] = [None] * axis + [
        0 if not offset else offset[0] if len(offset) == 1 else offset[i - axis] for i in range(axis, len(shape))
    ]
    layer = Crop([caffe_offsets[a] for a in internal_order(len(shape))])
    inputs = [to_channels_last(x), to_channels_last(reference)]
    inputs32 = [a.astype(np.float32) for a in inputs]
    assert_caffe_close(to_caffe(np.asarray(layer(inputs32))), expected)
    assert tuple(layer.compute_output_shape([a.shape for a in inputs])) == to_channels_last(expected).shape
    assert_config_round_trip(layer, inputs32)
    assert_gradients(Crop.from_config({**layer.get_config(), "dtype": "float64"}), inputs, wrt=(0,))


# ---------------------------------------------------------------------------------------------
# SPP (spp_layer.cpp)


def ref_spp(x: np.ndarray, pyramid_height: int, method: str) -> np.ndarray:
    _, _, height, width = x.shape
    levels = []
    for level in range(pyramid_height):
        bins = 2**level
        kernel = (math.ceil(height / bins), math.ceil(width / bins))
        pad = tuple((k * bins - size + 1) // 2 for k, size in zip(kernel, (height, width), strict=True))
        levels.append(ref_pool(x, method, kernel, kernel, pad))
    if pyramid_height == 1:
        return levels[0]
    return np.concatenate([level.reshape(len(x), -1) for level in levels], axis=1)


SPP_CASES = {
    "max_height_3": (3, "max", (1, 2, 13, 9)),
    "ave_height_3": (3, "ave", (1, 2, 13, 9)),
    "max_height_2": (2, "max", (2, 3, 5, 6)),
    "ave_height_1": (1, "ave", (2, 3, 5, 6)),
}


@pytest.mark.parametrize("case", SPP_CASES)
def test_spp_matches_caffe(case: str) -> None:
    pyramid_height, method, shape = SPP_CASES[case]
    x = distinct(np.random.default_rng(14), shape)
    layer = SPP(pyramid_height, method)
    expected = ref_spp(x, pyramid_height, method)
    assert_caffe_close(np.asarray(layer(x.astype(np.float32))), expected)
    assert tuple(layer.compute_output_shape((None, *shape[1:]))[1:]) == expected.shape[1:]
    assert_config_round_trip(layer, [x.astype(np.float32)])
    assert_gradients(SPP.from_config({**layer.get_config(), "dtype": "float64"}), [x])


def test_spp_rejects_an_input_too_small_for_its_pyramid() -> None:
    """Width 5 at level 2 needs pad 2 with kernel 2, which Caffe's pooling refuses."""
    with pytest.raises(ValueError, match="pad smaller than the kernel"):
        SPP(3, "max")(np.zeros((1, 1, 8, 5), np.float32))


# ---------------------------------------------------------------------------------------------
# Im2col (util/im2col.cpp)


def ref_im2col(x: np.ndarray, kernel, stride, pad, dilation) -> np.ndarray:
    """im2col_nd_cpu: output channel c·Πk + (row-major kernel offset) reads channel c at that offset."""
    num, channels, *spatial = x.shape
    out = [
        (n + 2 * p - (d * (k - 1) + 1)) // s + 1
        for n, k, s, p, d in zip(spatial, kernel, stride, pad, dilation, strict=True)
    ]
    offsets = list(itertools.product(*(range(k) for k in kernel)))
    col = np.zeros((num, channels * len(offsets), *out))
    for c_col in range(channels * len(offsets)):
        c_im, offset = divmod(c_col, len(offsets))
        for position in itertools.product(*(range(o) for o in out)):
            source = [
                o * s - p + k * d
                for o, s, p, k, d in zip(position, stride, pad, offsets[offset], dilation, strict=True)
            ]
            if all(0 <= i < n for i, n in zip(source, spatial, strict=True)):
                col[(slice(None), c_col, *position)] = x[(slice(None), c_im, *source)]
    return col


IM2COL_CASES = {
    "k3_p1": ((3, 3), (1, 1), (1, 1), (1, 1), (2, 3, 5, 6)),
    "rect_strided_dilated": ((2, 3), (2, 1), (0, 1), (1, 2), (1, 2, 6, 7)),
    "three_d": ((2, 2, 2), (1, 2, 1), (0, 1, 0), (1, 1, 2), (1, 2, 3, 4, 5)),
}


@pytest.mark.parametrize("case", IM2COL_CASES)
def test_im2col_matches_caffe(case: str) -> None:
    kernel, stride, pad, dilation, shape = IM2COL_CASES[case]
    x = np.random.default_rng(15).standard_normal(shape)
    layer = Im2col(kernel, stride, pad, dilation)
    expected = ref_im2col(x, kernel, stride, pad, dilation)
    assert_caffe_close(np.asarray(layer(x.astype(np.float32))), expected)
    assert tuple(layer.compute_output_shape((None, *shape[1:]))[1:]) == expected.shape[1:]
    assert_config_round_trip(layer, [x.astype(np.float32)])
    assert_gradients(Im2col.from_config({**layer.get_config(), "dtype": "float64"}), [x])


# ---------------------------------------------------------------------------------------------
# Deconvolution (deconv_layer.cpp: conv backward-data as forward)


def ref_deconv(x: np.ndarray, blob: np.ndarray, bias: np.ndarray | None, stride, pad, dilation, groups: int):
    """Every input pixel scatters x·W into the output, then pad is cut from each side (Caffe layout)."""
    num, channels, *spatial = x.shape
    per_group_out = blob.shape[1]
    per_group_in = channels // groups
    kernel = blob.shape[2:]
    full = [s * (n - 1) + d * (k - 1) + 1 for n, k, s, d in zip(spatial, kernel, stride, dilation, strict=True)]
    top = np.zeros((num, per_group_out * groups, *full))
    for c in range(channels):
        outputs = slice(c // per_group_in * per_group_out, (c // per_group_in + 1) * per_group_out)
        for tap in itertools.product(*(range(k) for k in kernel)):
            targets = tuple(
                slice(t * d, t * d + s * (n - 1) + 1, s)
                for t, d, s, n in zip(tap, dilation, stride, spatial, strict=True)
            )
            weight = blob[(c, slice(None), *tap)].reshape(1, -1, *([1] * len(spatial)))
            top[(slice(None), outputs, *targets)] += x[:, c : c + 1] * weight
    top = top[(slice(None), slice(None), *(slice(p, f - p) for p, f in zip(pad, full, strict=True)))]
    if bias is not None:
        top = top + bias.reshape(1, -1, *([1] * len(spatial)))
    return top


DECONV_CASES = {
    "k3_s2_p1": (4, (3, 3), (2, 2), (1, 1), (1, 1), 1, True, (2, 3, 3, 4)),
    "rect_dilated_grouped": (4, (3, 2), (1, 2), (0, 1), (2, 1), 2, False, (1, 4, 3, 3)),
    "stride_beyond_kernel": (2, (2, 2), (3, 3), (0, 0), (1, 1), 1, True, (1, 2, 2, 3)),
    "depthwise": (3, (4, 4), (2, 2), (1, 1), (1, 1), 3, False, (1, 3, 3, 3)),
    "three_d_grouped_dilated": (4, (2, 2, 2), (2, 1, 2), (0, 1, 1), (1, 2, 1), 2, True, (1, 2, 2, 3, 2)),
}


@pytest.mark.parametrize("case", DECONV_CASES)
def test_deconvolution_matches_caffe(case: str) -> None:
    filters, kernel, stride, pad, dilation, groups, use_bias, shape = DECONV_CASES[case]
    rng = np.random.default_rng(16)
    x = rng.standard_normal(shape)
    blob = rng.standard_normal((shape[1], filters // groups, *kernel))
    bias = rng.standard_normal(filters) if use_bias else None
    expected = ref_deconv(x, blob, bias, stride, pad, dilation, groups)
    # The documented mapping: Caffe (C_in, F/G, *k) → Keras (*k, F/G, C_in), no flip.
    keras_kernel = np.transpose(blob, (*range(2, blob.ndim), 1, 0))
    weights = [keras_kernel, bias] if use_bias else [keras_kernel]

    layer = CaffeDeconvolution(filters, kernel, stride, pad, dilation, groups, use_bias)
    x_in = to_channels_last(x)
    layer.build(x_in.shape)
    layer.set_weights([w.astype(np.float32) for w in weights])
    assert_caffe_close(to_caffe(np.asarray(layer(x_in.astype(np.float32)))), expected)
    assert tuple(layer.compute_output_shape((None, *x_in.shape[1:]))[1:]) == to_channels_last(expected).shape[1:]
    assert_config_round_trip(layer, [x_in.astype(np.float32)])
    grad_layer = CaffeDeconvolution.from_config({**layer.get_config(), "dtype": "float64"})
    grad_layer.build(x_in.shape)
    grad_layer.set_weights(weights)
    assert_gradients(grad_layer, [x_in])


# ---------------------------------------------------------------------------------------------
# Saving


def all_layers_model() -> keras.Model:
    """One model applying every layer of this file, with non-trivial weights."""
    x = keras.Input((6, 5, 4), name="image")
    caffe = keras.layers.Permute((3, 1, 2))(x)
    pooled = CaffePooling("max", kernel=(3, 3), stride=(2, 2), pad=(1, 1))(x)
    squeeze = keras.layers.GlobalAveragePooling2D()(x)
    outputs = [
        pooled,
        CaffePooling("ave", kernel=(3, 3), stride=(2, 2), pad=(1, 1), round_mode="floor")(x),
        LRN(5, 0.5, 0.75, 2.0)(x),
        LRN(3, 0.8, 0.75, norm_region="within_channel")(x),
        CaffeBatchNorm(moving_average_fraction=0.9, eps=1e-4)(x),
        MVN(across_channels=True)(x),
        Scale(axes=[1, 3], bias_term=True)(x),
        Scale(axes=[0, 3])([x, squeeze]),
        Bias(axes=[3])(x),
        Bias(axes=[0, 3])([x, squeeze]),
        Crop([None, 1, 1, None])([x, pooled]),
        SPP(2, "ave")(caffe),
        Im2col((3, 3), (1, 1), (1, 1), (1, 1))(caffe),
        CaffeDeconvolution(6, (3, 3), (2, 2), (1, 1), (2, 2), groups=2)(x),
    ]
    model = keras.Model(x, outputs)
    rng = np.random.default_rng(17)
    for layer in model.layers:
        values = [rng.uniform(0.5, 1.5, w.shape).astype(np.float32) for w in layer.get_weights()]
        layer.set_weights(values)
    return model


# Keras's own saving converts variables with np.array(copy=False), which TensorFlow's tensors warn about under numpy 2.
@pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")
def test_saved_model_loads_in_a_fresh_process(tmp_path: Path) -> None:
    model = all_layers_model()
    image = np.random.default_rng(18).standard_normal((2, 6, 5, 4)).astype(np.float32)
    expected = [np.asarray(y) for y in model(image)]
    model.save(tmp_path / "all.keras")
    np.save(tmp_path / "image.npy", image)
    script = textwrap.dedent(
        f"""
        import numpy as np, keras
        import netdef.keras.layers.affine, netdef.keras.layers.deconvolution, netdef.keras.layers.normalization
        import netdef.keras.layers.pooling, netdef.keras.layers.spatial
        model = keras.saving.load_model({str(tmp_path / "all.keras")!r})
        outputs = model(np.load({str(tmp_path / "image.npy")!r}))
        np.savez({str(tmp_path / "loaded.npz")!r}, *[np.asarray(y) for y in outputs])
        """
    )
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    loaded = np.load(tmp_path / "loaded.npz")
    assert len(loaded.files) == len(expected)
    for i, value in enumerate(expected):
        np.testing.assert_array_equal(loaded[f"arr_{i}"], value)
