"""Caffe's elementwise, routing, loss, metric and recurrent layers as Keras layers.

Every forward pass is checked against a numpy transcription of the formula in Caffe's
C++ (written here, independent of the layer code), every gradient against central finite
differences in float64 and, where Caffe's backward is not the derivative of its forward,
against a transcription of Caffe's backward. Only the tapes are backend-specific, so the
file passes under ``KERAS_BACKEND=torch`` as well as TensorFlow.
"""

from __future__ import annotations

import math
import subprocess
import sys
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pytest
from keras import ops

from netdef.keras.layers import elementwise as ew
from netdef.keras.layers import losses as ls
from netdef.keras.layers import recurrent as rc
from netdef.keras.layers import routing as rt

from .conftest import REPO

F64 = "float64"
FLT_MIN = np.finfo(np.float32).tiny
#: Central-difference step; float64 keeps the truncation and rounding errors near 1e-10.
EPS = 1e-6


# ---------------------------------------------------------------------------------------------
# Harness


def _as_list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _call(layer: keras.layers.Layer, tensors: Sequence[Any]) -> list[Any]:
    return _as_list(layer(tensors[0] if len(tensors) == 1 else list(tensors)))


def run(layer: keras.layers.Layer, *inputs: Any) -> list[np.ndarray]:
    """The layer's outputs as numpy arrays (always a list)."""
    return [ops.convert_to_numpy(o) for o in _call(layer, [ops.convert_to_tensor(np.asarray(x)) for x in inputs])]


def assert_matches(actual: Any, expected: Any) -> None:
    """Caffe's number within float rounding: |a - e| <= 1e-5·max(1, |e|), NaN where NaN."""
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    np.testing.assert_array_equal(np.isnan(actual), np.isnan(expected))
    both = ~np.isnan(expected)
    error = np.abs(actual[both] - expected[both])
    assert np.all(error <= 1e-5 * np.maximum(1.0, np.abs(expected[both]))), (actual, expected)


def _objective(outputs: Sequence[Any], probes: Sequence[np.ndarray]) -> Any:
    """A random linear functional of all outputs, so every output element's gradient matters."""
    return sum(
        ops.sum(ops.cast(o, "float64") * ops.convert_to_tensor(p, dtype="float64"))
        for o, p in zip(outputs, probes, strict=True)
    )


def autodiff(
    layer: keras.layers.Layer, inputs: Sequence[Any], probes: Sequence[Any], wrt: Sequence[int]
) -> list[np.ndarray | None]:
    """Backend autodiff of Σ probe·output for the inputs ``wrt``, then every trainable weight.

    ``None`` where no gradient flows. TensorFlow and PyTorch each need their own tape; the
    layers themselves are backend-neutral, and this file passes on both backends.
    """
    arrays = [np.asarray(x, np.float64) for x in inputs]
    weights = [w.value for w in layer.trainable_weights]
    if keras.backend.backend() == "torch":
        import torch

        tensors = [torch.tensor(x, requires_grad=i in wrt) for i, x in enumerate(arrays)]
        targets = [tensors[i] for i in wrt] + weights
        objective = _objective(_call(layer, tensors), probes)
        if not objective.requires_grad:
            return [None] * len(targets)
        grads = torch.autograd.grad(objective, targets, allow_unused=True)
        return [None if g is None else g.detach().numpy() for g in grads]
    import tensorflow as tf

    tensors = [tf.constant(x) for x in arrays]
    targets = [tensors[i] for i in wrt] + weights
    with tf.GradientTape() as tape:
        tape.watch([tensors[i] for i in wrt])
        objective = _objective(_call(layer, tensors), probes)
    return [None if g is None else np.asarray(tf.convert_to_tensor(g)) for g in tape.gradient(objective, targets)]


def check_gradients(
    layer: keras.layers.Layer, inputs: Sequence[Any], wrt: Sequence[int] = (0,)
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Autodiff vs central differences for the inputs ``wrt`` and every trainable weight.

    Returns the autodiff gradients (inputs ``wrt``, then weights) and the probes (the
    upstream gradients), for comparisons with Caffe's backward formulas.
    """
    inputs = [np.array(x, np.float64) for x in inputs]
    rng = np.random.default_rng(0)
    probes = [rng.standard_normal(o.shape) for o in run(layer, *inputs)]

    def value(xs: Sequence[np.ndarray]) -> float:
        return float(ops.convert_to_numpy(_objective(_call(layer, [ops.convert_to_tensor(x) for x in xs]), probes)))

    shapes = [inputs[i].shape for i in wrt] + [tuple(w.shape) for w in layer.trainable_weights]
    grads = [
        np.zeros(shape) if g is None else g
        for g, shape in zip(autodiff(layer, inputs, probes, wrt), shapes, strict=True)
    ]
    numeric = []
    for i in wrt:
        grad = np.zeros_like(inputs[i])
        for idx in np.ndindex(grad.shape):
            plus, minus = [x.copy() for x in inputs], [x.copy() for x in inputs]
            plus[i][idx] += EPS
            minus[i][idx] -= EPS
            grad[idx] = (value(plus) - value(minus)) / (2 * EPS)
        numeric.append(grad)
    for weight in layer.trainable_weights:
        base = ops.convert_to_numpy(weight)
        grad = np.zeros_like(base)
        for idx in np.ndindex(base.shape):
            for sign in (1, -1):
                shifted = base.copy()
                shifted[idx] += sign * EPS
                weight.assign(shifted)
                grad[idx] += sign * value(inputs) / (2 * EPS)
        weight.assign(base)
        numeric.append(grad)
    for a, n in zip(grads, numeric, strict=True):
        np.testing.assert_allclose(a, n, rtol=1e-5, atol=1e-7)
    return grads, probes


def input_gradients(
    layer: keras.layers.Layer, inputs: Sequence[Any], probes: Sequence[Any], wrt: Sequence[int]
) -> list[np.ndarray | None]:
    """Autodiff gradients of Σ probe·output for the inputs ``wrt`` (None where none flows)."""
    return autodiff(layer, inputs, probes, wrt)[: len(wrt)]


def built(layer: keras.layers.Layer, inputs: Sequence[Any], weights: Sequence[np.ndarray]) -> keras.layers.Layer:
    """Build ``layer`` on ``inputs`` and give its trainable weights ``weights``."""
    run(layer, *inputs)
    assert len(layer.trainable_weights) == len(weights)
    for variable, value in zip(layer.trainable_weights, weights, strict=True):
        variable.assign(value)
    return layer


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def softmax(x: np.ndarray, axis: int) -> np.ndarray:
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def away_from(values: np.ndarray, points: Sequence[float], gap: float = 0.05) -> np.ndarray:
    """Nudge values off the kinks at ``points`` so finite differences see a smooth function."""
    values = values.copy()
    for p in points:
        near = np.abs(values - p) < gap
        values[near] = p + gap * np.where(values[near] >= p, 1, -1)
    return values


# ---------------------------------------------------------------------------------------------
# Elementwise


def caffe_power(x: np.ndarray, power: float, scale: float, shift: float) -> np.ndarray:
    if power * scale == 0:
        return np.full_like(x, 1.0 if power == 0 else shift**power)
    return (shift + scale * x) ** power


@pytest.mark.parametrize(
    ("power", "scale", "shift"),
    [(1, 1, 0), (1, -2, 0.5), (2, 0.5, 1), (3, -1.5, 0.2), (0.5, 2, 3), (-1.5, 1, 2), (0, 2, 1), (2.5, 0, 2)],
)
def test_power(power: float, scale: float, shift: float) -> None:
    x = np.random.default_rng(1).uniform(-0.9, 0.9, (2, 3, 4))
    layer = ew.Power(power, scale, shift, dtype=F64)
    assert_matches(run(layer, x)[0], caffe_power(x, power, scale, shift))
    (grad,), _ = check_gradients(layer, [x])
    if power * scale == 0:
        assert not grad.any()


def test_power_constant_cases_ignore_the_input_like_caffe() -> None:
    x = np.array([0.0, -1.0, np.inf])
    assert_matches(run(ew.Power(0, 1, 0, dtype=F64), x)[0], [1, 1, 1])
    assert_matches(run(ew.Power(2, 0, -3, dtype=F64), x)[0], [9, 9, 9])
    assert np.isnan(run(ew.Power(0.5, 0, -3, dtype=F64), x)[0]).all()


@pytest.mark.parametrize(("base", "scale", "shift"), [(-1, 1, 0), (2, 0.5, 1), (0.5, -1, -0.3), (10, 1, 0)])
def test_exp(base: float, scale: float, shift: float) -> None:
    x = np.random.default_rng(2).uniform(-2, 2, (3, 5))
    e_base = math.e if base == -1 else base
    layer = ew.CaffeExp(base, scale, shift, dtype=F64)
    assert_matches(run(layer, x)[0], e_base ** (shift + scale * x))
    check_gradients(layer, [x])


@pytest.mark.parametrize(("base", "scale", "shift"), [(-1, 1, 0), (10, 2, 3), (2, 0.5, 1)])
def test_log(base: float, scale: float, shift: float) -> None:
    x = np.random.default_rng(3).uniform(0.1, 2, (3, 5))
    e_base = math.e if base == -1 else base
    layer = ew.CaffeLog(base, scale, shift, dtype=F64)
    assert_matches(run(layer, x)[0], np.log(shift + scale * x) / np.log(e_base))
    check_gradients(layer, [x])


@pytest.mark.parametrize("cls", [ew.CaffeExp, ew.CaffeLog])
def test_exp_and_log_reject_a_nonpositive_base(cls: type) -> None:
    with pytest.raises(ValueError, match="expected base > 0 or -1"):
        cls(base=0)


def test_bnll() -> None:
    x = np.concatenate([np.random.default_rng(4).uniform(-5, 5, 12), [-800, -60, 0, 60, 800]])
    layer = ew.BNLL(dtype=F64)
    with np.errstate(over="ignore"):
        expected = np.where(x > 0, x + np.log1p(np.exp(-x)), np.log1p(np.exp(x)))
    assert_matches(run(layer, x)[0], expected)
    check_gradients(layer, [x[:12]])
    # Caffe's backward: sigmoid(min(x, 50)), finite at the extremes.
    (grad,) = input_gradients(layer, [x], [np.ones_like(x)], [0])
    assert_matches(grad, sigmoid(np.minimum(x, 50)))


@pytest.mark.parametrize("threshold", [0.0, 0.5])
def test_threshold_is_strict_and_passes_no_gradient(threshold: float) -> None:
    x = np.array([-1.0, 0.0, 0.5, 0.51, 2.0])
    layer = ew.Threshold(threshold, dtype=F64)
    assert_matches(run(layer, x)[0], (x > threshold).astype(float))
    (grad,) = input_gradients(layer, [x], [np.ones_like(x)], [0])
    assert grad is None or not np.asarray(grad).any()


def test_clip() -> None:
    x = np.array([-2.0, -0.5, -0.2, 0.3, 0.7, 1.5, np.nan])
    layer = ew.Clip(-0.5, 0.7, dtype=F64)
    # Caffe: std::max(min, std::min(x, max)), which maps NaN to min.
    assert_matches(run(layer, x)[0], [-0.5, -0.5, -0.2, 0.3, 0.7, 0.7, -0.5])
    (grad,) = input_gradients(layer, [x[:6]], [np.ones(6)], [0])
    assert_matches(grad, ((x[:6] >= -0.5) & (x[:6] <= 0.7)).astype(float))  # bounds included, as Caffe's backward
    check_gradients(layer, [away_from(np.random.default_rng(5).uniform(-1, 1, 10), [-0.5, 0.7])])


@pytest.mark.parametrize("beta", [1.0, 0.5, 2.0])
def test_swish(beta: float) -> None:
    x = np.random.default_rng(6).uniform(-4, 4, (2, 6))
    layer = ew.Swish(beta, dtype=F64)
    assert_matches(run(layer, x)[0], x * sigmoid(beta * x))
    check_gradients(layer, [x])


def test_absval() -> None:
    x = np.array([-2.0, -0.1, 0.0, 0.3])
    layer = ew.AbsVal(dtype=F64)
    assert_matches(run(layer, x)[0], np.abs(x))
    (grad,) = input_gradients(layer, [x], [np.ones(4)], [0])
    assert_matches(grad, np.sign(x))
    check_gradients(layer, [away_from(np.random.default_rng(7).uniform(-1, 1, 8), [0])])


@pytest.mark.parametrize(
    ("shape", "axis", "shared"),
    [((2, 3, 3, 4), -1, False), ((2, 3, 3, 4), 3, True), ((3, 4), 1, False), ((2, 4, 3), 1, False)],
)
def test_prelu(shape: tuple[int, ...], axis: int, shared: bool) -> None:
    rng = np.random.default_rng(8)
    x = away_from(rng.uniform(-1, 1, shape), [0])
    channels = shape[axis]
    slope = np.asarray(0.3) if shared else rng.uniform(-0.5, 0.5, channels)
    layer = ew.PReLU(shared, axis, dtype=F64)
    run(layer, x)
    assert_matches(layer.get_weights()[0], np.full(slope.shape, 0.25))  # Caffe's default filler
    layer.set_weights([slope])
    broadcast = (
        slope if shared else slope.reshape([channels if i == axis % len(shape) else 1 for i in range(len(shape))])
    )
    assert_matches(run(layer, x)[0], np.maximum(x, 0) + broadcast * np.minimum(x, 0))
    check_gradients(layer, [x])


def test_prelu_gradient_at_zero_is_the_slope() -> None:
    layer = built(ew.PReLU(True, dtype=F64), [np.zeros((1, 2))], [np.asarray(0.3)])
    (grad,) = input_gradients(layer, [np.zeros((1, 2))], [np.ones((1, 2))], [0])
    assert_matches(grad, [[0.3, 0.3]])


def test_eltwise_prod_and_sum() -> None:
    rng = np.random.default_rng(9)
    xs = [rng.uniform(-2, 2, (2, 3, 2)) for _ in range(3)]
    prod = ew.Eltwise("prod", dtype=F64)
    assert_matches(run(prod, *xs)[0], xs[0] * xs[1] * xs[2])
    check_gradients(prod, xs, wrt=(0, 1, 2))
    plain = ew.Eltwise("sum", dtype=F64)
    assert_matches(run(plain, *xs)[0], xs[0] + xs[1] + xs[2])
    weighted = ew.Eltwise("sum", [1.0, -2.0, 0.5], dtype=F64)
    assert_matches(run(weighted, *xs)[0], xs[0] - 2 * xs[1] + 0.5 * xs[2])
    check_gradients(weighted, xs, wrt=(0, 1, 2))


def caffe_eltwise_max_mask(xs: Sequence[np.ndarray]) -> np.ndarray:
    """Caffe's forward bookkeeping: which input each output element came from."""
    top = np.where(xs[0] > xs[1], xs[0], xs[1])
    mask = np.where(xs[0] > xs[1], 0, 1)
    for k, x in enumerate(xs[2:], start=2):
        mask = np.where(x > top, k, mask)
        top = np.maximum(top, x)
    return mask


def test_eltwise_max_routes_ties_like_caffe() -> None:
    a = np.array([1.0, 2.0, 3.0, 0.0, 5.0, 1.0])
    b = np.array([1.0, 1.0, 4.0, 0.0, 5.0, 2.0])
    c = np.array([0.0, 2.0, 4.0, 0.0, 1.0, 2.0])
    layer = ew.Eltwise("max", dtype=F64)
    assert_matches(run(layer, a, b, c)[0], np.maximum(np.maximum(a, b), c))
    probe = np.arange(1.0, 7.0)
    grads = input_gradients(layer, [a, b, c], [probe], [0, 1, 2])
    mask = caffe_eltwise_max_mask([a, b, c])
    for k, grad in enumerate(grads):
        assert_matches(grad, np.where(mask == k, probe, 0.0))
    rng = np.random.default_rng(10)
    check_gradients(layer, [rng.standard_normal(8) for _ in range(3)], wrt=(0, 1, 2))


def test_eltwise_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="one of"):
        ew.Eltwise("mean")
    with pytest.raises(ValueError, match="coeffs apply only"):
        ew.Eltwise("max", [1.0, 2.0])
    with pytest.raises(ValueError, match="one coeff per input"):
        run(ew.Eltwise("sum", [1.0]), np.ones(2), np.ones(2))


# ---------------------------------------------------------------------------------------------
# Routing


def test_slice_at_points_and_equally() -> None:
    x = np.random.default_rng(11).standard_normal((2, 6, 3))
    parts = run(rt.Slice(1, [1, 4], dtype=F64), x)
    for part, expected in zip(parts, [x[:, :1], x[:, 1:4], x[:, 4:]], strict=True):
        assert_matches(part, expected)
    thirds = run(rt.Slice(-2, num_outputs=3, dtype=F64), x)
    for k, part in enumerate(thirds):
        assert_matches(part, x[:, 2 * k : 2 * k + 2])
    assert len(run(rt.Slice(1, num_outputs=1, dtype=F64), x)) == 1
    check_gradients(rt.Slice(2, [2], dtype=F64), [x[:, :2]])


def test_slice_rejects_bad_points() -> None:
    x = np.ones((2, 6))
    with pytest.raises(ValueError, match="strictly increasing"):
        run(rt.Slice(1, [3, 3]), x)
    with pytest.raises(ValueError, match="divisible"):
        run(rt.Slice(1, num_outputs=4), x)
    with pytest.raises(ValueError, match="num_outputs"):
        rt.Slice(1)


@pytest.mark.parametrize(("axis", "tiles"), [(1, 3), (0, 2), (-1, 2)])
def test_tile(axis: int, tiles: int) -> None:
    x = np.random.default_rng(12).standard_normal((2, 3, 2))
    layer = rt.Tile(axis, tiles, dtype=F64)
    reps = [1, 1, 1]
    reps[axis] = tiles
    assert_matches(run(layer, x)[0], np.tile(x, reps))
    check_gradients(layer, [x])


@pytest.mark.parametrize("operation", ["sum", "asum", "sumsq", "mean"])
@pytest.mark.parametrize(("axis", "coeff"), [(0, 1.0), (1, 2.5), (2, -0.5), (-1, 1.0)])
def test_reduction(operation: str, axis: int, coeff: float) -> None:
    x = away_from(np.random.default_rng(13).uniform(-1, 1, (2, 3, 4)), [0])
    layer = rt.Reduction(operation, axis, coeff, dtype=F64)
    canonical = axis % 3
    flat = x.reshape(int(np.prod(x.shape[:canonical])), -1)
    per_op = {"sum": flat, "asum": np.abs(flat), "sumsq": flat**2, "mean": flat / flat.shape[1]}
    expected = (per_op[operation].sum(axis=1) * coeff).reshape(x.shape[:canonical])
    assert_matches(run(layer, x)[0], expected)
    if axis in (0, 1):
        check_gradients(layer, [x])


def caffe_argmax(x: np.ndarray, out_max_val: bool, top_k: int, axis: int | None) -> np.ndarray:
    """argmax_layer.cpp's loops, with std::partial_sort(std::greater) on (value, index) pairs."""
    if axis is None:
        dim, axis_dist = int(np.prod(x.shape[1:])), 1
        shape = [1] * max(3, x.ndim)
        shape[0], shape[1], shape[2] = x.shape[0], 2 if out_max_val else 1, top_k
    else:
        dim, axis_dist = x.shape[axis], int(np.prod(x.shape[axis:])) // x.shape[axis]
        shape = list(x.shape)
        shape[axis] = top_k
    data, top = x.ravel(), np.zeros(int(np.prod(shape)))
    for i in range(x.size // dim):
        pairs = [(data[(i // axis_dist * dim + j) * axis_dist + i % axis_dist], j) for j in range(dim)]
        best = sorted(pairs, reverse=True)[:top_k]
        for j, (value, index) in enumerate(best):
            if axis is None:
                if out_max_val:
                    top[2 * i * top_k + j] = index
                    top[2 * i * top_k + top_k + j] = value
                else:
                    top[i * top_k + j] = index
            else:
                top[(i // axis_dist * top_k + j) * axis_dist + i % axis_dist] = value if out_max_val else index
    return top.reshape(shape)


@pytest.mark.parametrize("out_max_val", [False, True])
@pytest.mark.parametrize(
    ("shape", "top_k", "axis"),
    [
        ((3, 2, 2, 2), 1, None),
        ((3, 2, 2, 2), 3, None),
        ((3, 5), 2, None),
        ((2, 4, 3), 2, 1),
        ((2, 3, 4), 3, 2),
        ((2, 3, 2, 2), 1, 0),
    ],
)
def test_argmax_with_caffe_tie_order(shape: tuple[int, ...], top_k: int, axis: int | None, out_max_val: bool) -> None:
    x = np.random.default_rng(14).integers(0, 3, shape).astype(np.float64)  # many ties
    layer = rt.ArgMax(out_max_val, top_k, axis, dtype=F64)
    assert_matches(run(layer, x)[0], caffe_argmax(x, out_max_val, top_k, axis))
    (grad,) = input_gradients(layer, [x], [np.ones(run(layer, x)[0].shape)], [0])
    assert grad is None or not np.asarray(grad).any()


@pytest.mark.parametrize("bias_term", [True, False])
def test_embed(bias_term: bool) -> None:
    rng = np.random.default_rng(15)
    indices = rng.integers(0, 5, (2, 3)).astype(np.float64)
    weights = [rng.standard_normal((5, 4))] + ([rng.standard_normal(4)] if bias_term else [])
    layer = built(rt.CaffeEmbed(5, 4, bias_term, dtype=F64), [indices], weights)
    expected = weights[0][indices.astype(int)] + (weights[1] if bias_term else 0)
    assert_matches(run(layer, indices)[0], expected)
    check_gradients(layer, [indices], wrt=())
    (grad,) = input_gradients(layer, [indices], [np.ones((2, 3, 4))], [0])
    assert grad is None or not np.asarray(grad).any()


def test_batch_reindex_sums_gradients_of_repeated_rows() -> None:
    rng = np.random.default_rng(16)
    x, indices = rng.standard_normal((4, 2, 3)), np.array([3.0, 0.0, 3.0, 1.0, 3.0])
    layer = rt.BatchReindex(dtype=F64)
    assert_matches(run(layer, x, indices)[0], x[indices.astype(int)])
    check_gradients(layer, [x, indices])


def test_filter_keeps_selected_rows() -> None:
    rng = np.random.default_rng(17)
    a, b = rng.standard_normal((5, 3)), rng.standard_normal((5, 2, 2))
    selector = np.array([0.0, 1.0, 0.0, 2.0, -0.5]).reshape(5, 1, 1)
    layer = rt.Filter(dtype=F64)
    kept = run(layer, a, b, selector)
    assert_matches(kept[0], a[[1, 3, 4]])
    assert_matches(kept[1], b[[1, 3, 4]])
    check_gradients(layer, [a, b, selector], wrt=(0, 1))


def test_parameter_outputs_its_trainable_blob() -> None:
    value = np.random.default_rng(18).standard_normal((2, 3))
    layer = built(rt.CaffeParameter([2, 3], dtype=F64), [np.zeros(1)], [value])
    assert_matches(run(layer, np.zeros(1))[0], value)
    check_gradients(layer, [np.zeros(1)], wrt=())


# ---------------------------------------------------------------------------------------------
# Losses and Accuracy


def caffe_normalizer(mode: str, outer: int, inner: int, valid: int) -> float:
    return max(1.0, {"full": outer * inner, "valid": valid, "batch_size": outer, "none": 1}[mode])


def caffe_softmax_loss(
    x: np.ndarray, label: np.ndarray, axis: int, ignore: int | None, mode: str
) -> tuple[float, np.ndarray]:
    """softmax_loss_layer.cpp's Forward_cpu and Backward_cpu (loss weight 1)."""
    prob = softmax(x, axis)
    outer, classes, inner = int(np.prod(x.shape[:axis])), x.shape[axis], int(np.prod(x.shape[axis + 1 :]))
    p, lab = prob.reshape(outer, classes, inner), label.reshape(outer, inner)
    diff = p.copy()
    loss, valid = 0.0, 0
    for i in range(outer):
        for j in range(inner):
            k = int(lab[i, j])
            if ignore is not None and k == ignore:
                diff[i, :, j] = 0
                continue
            loss -= math.log(max(p[i, k, j], FLT_MIN))
            diff[i, k, j] -= 1
            valid += 1
    norm = caffe_normalizer(mode, outer, inner, valid)
    return loss / norm, (diff / norm).reshape(x.shape)


SOFTMAX_CASES = [
    ((3, 4), 1, None, "valid"),
    ((2, 4, 3), 1, 2, "valid"),
    ((2, 4, 3), 1, 2, "full"),
    ((2, 4, 3), 1, None, "batch_size"),
    ((2, 4, 3), 1, 0, "none"),
    ((2, 3, 4), -1, 1, "valid"),
    ((2, 2, 3, 2), 1, None, "valid"),
]


@pytest.mark.parametrize(("shape", "axis", "ignore", "mode"), SOFTMAX_CASES)
def test_softmax_with_loss(shape: tuple[int, ...], axis: int, ignore: int | None, mode: str) -> None:
    rng = np.random.default_rng(19)
    x = rng.standard_normal(shape) * 2
    canonical = axis % len(shape)
    label = rng.integers(0, shape[canonical], shape[:canonical] + shape[canonical + 1 :]).astype(np.float64)
    layer = ls.SoftmaxWithLoss(axis, ignore, mode, dtype=F64)
    loss, diff = caffe_softmax_loss(x, label, canonical, ignore, mode)
    assert_matches(run(layer, x, label)[0], loss)
    (grad,), (probe,) = check_gradients(layer, [x, label])
    assert_matches(grad, diff * probe)


def test_softmax_with_loss_clamps_like_caffe_but_keeps_its_gradient() -> None:
    x = np.array([[0.0, 200.0, 0.0], [1.0, 2.0, 3.0]])
    label = np.array([0.0, 2.0])
    layer = ls.SoftmaxWithLoss(dtype=F64)
    loss, diff = caffe_softmax_loss(x, label, 1, None, "valid")
    assert_matches(run(layer, x, label)[0], loss)
    (grad,) = input_gradients(layer, [x, label], [np.asarray(1.0)], [0])
    assert_matches(grad, diff)


def test_softmax_with_loss_all_ignored_and_probabilities() -> None:
    x, label = np.random.default_rng(20).standard_normal((2, 3, 2)), np.full((2, 2), 5.0)
    layer = ls.SoftmaxWithLoss(ignore_label=5, return_probabilities=True, dtype=F64)
    loss, prob = run(layer, x, label)
    assert loss.shape == () and loss == 0
    assert_matches(prob, softmax(x, 1))
    # Caffe's backward ignores the diff of the probability top.
    (grad,) = input_gradients(layer, [x, label], [np.asarray(0.0), np.ones(x.shape)], [0])
    assert not np.asarray(grad).any()


@pytest.mark.parametrize(
    "layer",
    [
        ls.SoftmaxWithLoss(dtype=F64),
        ls.SigmoidCrossEntropyLoss(dtype=F64),
        ls.HingeLoss(dtype=F64),
        ls.MultinomialLogisticLoss(dtype=F64),
        ls.InfogainLoss(infogain=np.eye(3).tolist(), dtype=F64),
        ls.Accuracy(dtype=F64),
    ],
    ids=lambda layer: type(layer).__name__,
)
def test_no_gradient_reaches_labels(layer: keras.layers.Layer) -> None:
    x, label = np.random.default_rng(21).uniform(0.1, 1, (2, 3)), np.array([0.0, 2.0])
    if isinstance(layer, ls.SigmoidCrossEntropyLoss):
        label = np.array([[0.0, 1.0, 1.0], [1.0, 0.0, 0.5]])
    (grad,) = input_gradients(layer, [x, label], [np.asarray(1.0)], [1])
    assert grad is None or not np.asarray(grad).any()


def test_euclidean_loss() -> None:
    rng = np.random.default_rng(22)
    a, b = rng.standard_normal((3, 2, 2)), rng.standard_normal((3, 4))
    layer = ls.EuclideanLoss(dtype=F64)
    assert_matches(run(layer, a, b.reshape(a.shape))[0], ((a - b.reshape(a.shape)) ** 2).sum() / 3 / 2)
    check_gradients(layer, [a, b.reshape(a.shape)], wrt=(0, 1))


@pytest.mark.parametrize(("ignore", "mode"), [(None, "batch_size"), (-1, "valid"), (-1, "full"), (None, "none")])
def test_sigmoid_cross_entropy_loss(ignore: int | None, mode: str) -> None:
    rng = np.random.default_rng(23)
    x = np.concatenate([rng.standard_normal(10) * 3, [0.0, 40.0]]).reshape(3, 2, 2)
    target = np.concatenate([rng.integers(0, 2, 8), [0.3, -1.0, -1.0, 1.0]]).reshape(3, 4)
    layer = ls.SigmoidCrossEntropyLoss(ignore, mode, dtype=F64)
    xs, ts = x.ravel(), target.ravel()
    valid = np.ones_like(ts, bool) if ignore is None else ts.astype(int) != ignore
    positive = (xs >= 0).astype(float)
    per = xs * (ts - positive) - np.log(1 + np.exp(xs - 2 * xs * positive))
    norm = caffe_normalizer(mode, 3, 4, int(valid.sum()))
    assert_matches(run(layer, x, target)[0], -per[valid].sum() / norm)
    # Caffe's backward (sigmoid(x) - t) / norm, zero where ignored; exact at x == 0 too.
    (grad,) = input_gradients(layer, [x, target], [np.asarray(1.0)], [0])
    assert_matches(np.asarray(grad).ravel(), np.where(valid, sigmoid(xs) - ts, 0.0) / norm)
    check_gradients(layer, [x + 0.1, target])


def caffe_hinge(x: np.ndarray, label: np.ndarray, norm: int) -> tuple[float, np.ndarray]:
    num = x.shape[0]
    flat = x.reshape(num, -1).copy()
    for i in range(num):
        flat[i, int(label[i])] *= -1
    margin = np.maximum(0, 1 + flat)
    loss = margin.sum() / num if norm == 1 else (margin**2).sum() / num
    signed = margin.copy()
    for i in range(num):
        signed[i, int(label[i])] *= -1
    diff = np.sign(signed) / num if norm == 1 else 2 * signed / num
    return loss, diff.reshape(x.shape)


@pytest.mark.parametrize("norm", [1, 2])
def test_hinge_loss(norm: int) -> None:
    rng = np.random.default_rng(24)
    x, label = rng.uniform(-2, 2, (4, 3, 1, 1)), np.array([0.0, 2.0, 1.0, 2.0])
    x[0, 1, 0, 0] = -1.0  # exactly on the hinge: Caffe's sign(0) gives no gradient
    layer = ls.HingeLoss(norm, dtype=F64)
    loss, diff = caffe_hinge(x, label, norm)
    assert_matches(run(layer, x, label)[0], loss)
    (grad,) = input_gradients(layer, [x, label], [np.asarray(1.0)], [0])
    assert_matches(grad, diff)
    smooth = away_from(x.ravel(), [-1.0, 1.0]).reshape(x.shape)
    check_gradients(layer, [smooth, label])


def caffe_infogain(
    x: np.ndarray, label: np.ndarray, h: np.ndarray, axis: int, ignore: int | None, mode: str
) -> tuple[float, np.ndarray]:
    """infogain_loss_layer.cpp's Forward_cpu and Backward_cpu (loss weight 1)."""
    prob = softmax(x, axis)
    outer, classes, inner = int(np.prod(x.shape[:axis])), x.shape[axis], int(np.prod(x.shape[axis + 1 :]))
    p, lab = prob.reshape(outer, classes, inner), label.reshape(outer, inner)
    diff = np.zeros_like(p)
    loss, valid = 0.0, 0
    for i in range(outer):
        for j in range(inner):
            k = int(lab[i, j])
            if ignore is not None and k == ignore:
                continue
            for m in range(classes):
                loss -= h[k, m] * math.log(max(p[i, m, j], 1e-20))
                diff[i, m, j] = p[i, m, j] * h[k].sum() - h[k, m]
            valid += 1
    norm = caffe_normalizer(mode, outer, inner, valid)
    return loss / norm, (diff / norm).reshape(x.shape)


@pytest.mark.parametrize(
    ("as_input", "ignore", "mode"), [(False, None, "valid"), (True, 1, "valid"), (True, None, "batch_size")]
)
def test_infogain_loss(as_input: bool, ignore: int | None, mode: str) -> None:
    rng = np.random.default_rng(25)
    x, label = rng.standard_normal((2, 3, 2)), rng.integers(0, 3, (2, 2)).astype(np.float64)
    h = rng.uniform(0, 1, (3, 3))
    if as_input:
        layer, inputs = ls.InfogainLoss(1, ignore, mode, dtype=F64), [x, label, h.reshape(1, 1, 3, 3)]
    else:
        layer, inputs = ls.InfogainLoss(1, ignore, mode, infogain=h.tolist(), dtype=F64), [x, label]
    loss, diff = caffe_infogain(x, label, h, 1, ignore, mode)
    assert_matches(run(layer, *inputs)[0], loss)
    (grad,), (probe,) = check_gradients(layer, inputs)
    assert_matches(grad, diff * probe)
    if as_input:
        (h_grad,) = input_gradients(layer, inputs, [np.asarray(1.0)], [2])
        assert h_grad is None or not np.asarray(h_grad).any()


def test_infogain_loss_clamped_gradient_and_missing_matrix() -> None:
    x, label, h = np.array([[0.0, 100.0, 0.0]]), np.array([0.0]), np.array([[1.0, 0.5, 0.0]] * 3)
    layer = ls.InfogainLoss(infogain=h.tolist(), dtype=F64)
    loss, diff = caffe_infogain(x, label, h, 1, None, "valid")
    assert_matches(run(layer, x, label)[0], loss)
    (grad,) = input_gradients(layer, [x, label], [np.asarray(1.0)], [0])
    assert_matches(grad, diff)
    with pytest.raises(ValueError, match="infogain matrix"):
        run(ls.InfogainLoss(), x, label)


def test_multinomial_logistic_loss() -> None:
    rng = np.random.default_rng(26)
    prob, label = rng.uniform(0.05, 1, (3, 4, 1, 1)), np.array([1.0, 3.0, 0.0])
    prob[2, 0] = 1e-30  # below Caffe's 1e-20 clamp
    layer = ls.MultinomialLogisticLoss(dtype=F64)
    at_label = np.maximum(prob.reshape(3, 4)[np.arange(3), label.astype(int)], 1e-20)
    assert_matches(run(layer, prob, label)[0], -np.log(at_label).sum() / 3)
    (grad,) = input_gradients(layer, [prob, label], [np.asarray(1.0)], [0])
    expected = np.zeros((3, 4))
    expected[np.arange(3), label.astype(int)] = -1 / at_label / 3
    np.testing.assert_allclose(np.asarray(grad).reshape(3, 4), expected, rtol=1e-12)
    prob[2, 0] = 0.5
    check_gradients(layer, [prob, label])


def caffe_contrastive(
    a: np.ndarray, b: np.ndarray, y: np.ndarray, margin: float, legacy: bool
) -> tuple[float, np.ndarray]:
    """contrastive_loss_layer.cpp's Forward_cpu and the bottom-0 Backward_cpu (loss weight 1)."""
    num, y = a.shape[0], y.ravel()
    diff = (a - b).reshape(num, -1)
    grad = np.zeros_like(diff)
    loss = 0.0
    for i in range(num):
        dist_sq = diff[i] @ diff[i]
        if int(y[i]):
            loss += dist_sq
            grad[i] = diff[i] / num
        elif legacy:
            loss += max(margin - dist_sq, 0.0)
            grad[i] = -diff[i] / num if margin - dist_sq > 0 else 0
        else:
            dist = math.sqrt(dist_sq)
            loss += max(margin - dist, 0.0) ** 2
            mdist = margin - dist
            grad[i] = -(mdist / (dist + 1e-4)) * diff[i] / num if mdist > 0 else 0
    return loss / num / 2, grad.reshape(a.shape)


@pytest.mark.parametrize(("margin", "legacy"), [(1.0, False), (1.0, True), (2.5, False)])
def test_contrastive_loss(margin: float, legacy: bool) -> None:
    rng = np.random.default_rng(27)
    a, b = rng.uniform(-0.6, 0.6, (5, 3, 1, 1)), rng.uniform(-0.6, 0.6, (5, 3, 1, 1))
    b[4] = a[4]  # d == 0: Caffe's 1e-4 keeps the gradient finite
    y = np.array([1.0, 0.0, 0.0, 1.0, 0.0]).reshape(5, 1, 1, 1)
    layer = ls.ContrastiveLoss(margin, legacy, dtype=F64)
    loss, grad_a = caffe_contrastive(a, b, y, margin, legacy)
    assert_matches(run(layer, a, b, y)[0], loss)
    grads = input_gradients(layer, [a, b, y], [np.asarray(1.0)], [0, 1, 2])
    assert_matches(grads[0], grad_a)
    assert_matches(grads[1], -grad_a)
    assert grads[2] is None or not np.asarray(grads[2]).any()
    if legacy:
        check_gradients(layer, [a[:4], b[:4], y[:4]], wrt=(0, 1))


def caffe_accuracy(
    x: np.ndarray, label: np.ndarray, axis: int, top_k: int, ignore: int | None
) -> tuple[float, np.ndarray]:
    """accuracy_layer.cpp's Forward_cpu, both tops."""
    outer, classes, inner = int(np.prod(x.shape[:axis])), x.shape[axis], int(np.prod(x.shape[axis + 1 :]))
    data, lab = x.reshape(outer, classes, inner), label.reshape(outer, inner)
    nums, per_class = np.zeros(classes), np.zeros(classes)
    accuracy, count = 0, 0
    for i in range(outer):
        for j in range(inner):
            k = int(lab[i, j])
            if ignore is not None and k == ignore:
                continue
            nums[k] += 1
            true_score = data[i, k, j]
            better = -1
            for m in range(classes):
                if better >= top_k:
                    break
                better += data[i, m, j] >= true_score
            if better < top_k:
                accuracy += 1
                per_class[k] += 1
            count += 1
    per_class = np.where(nums == 0, 0, per_class / np.maximum(nums, 1))
    return (0.0 if count == 0 else accuracy / count), per_class


@pytest.mark.parametrize(
    ("shape", "axis", "top_k", "ignore"),
    [((6, 4), 1, 1, None), ((6, 4), 1, 2, None), ((2, 4, 3), 1, 2, 3), ((2, 3, 4), 2, 1, 0)],
)
def test_accuracy_counts_ties_against(shape: tuple[int, ...], axis: int, top_k: int, ignore: int | None) -> None:
    rng = np.random.default_rng(28)
    x = rng.integers(0, 3, shape).astype(np.float64)  # many ties
    label = rng.integers(0, shape[axis], shape[:axis] + shape[axis + 1 :]).astype(np.float64)
    accuracy, per_class = caffe_accuracy(x, label, axis, top_k, ignore)
    assert_matches(run(ls.Accuracy(top_k, axis, ignore, dtype=F64), x, label)[0], accuracy)
    both = run(ls.Accuracy(top_k, axis, ignore, per_class=True, dtype=F64), x, label)
    assert_matches(both[0], accuracy)
    assert_matches(both[1], per_class)


def test_top_k_beyond_the_ranked_values_is_rejected_like_caffe() -> None:
    with pytest.raises(ValueError, match="expected top_k <= 4"):
        run(rt.ArgMax(top_k=5), np.ones((2, 2, 2)))
    with pytest.raises(ValueError, match="expected top_k <= 2"):
        run(rt.ArgMax(top_k=3, axis=1), np.ones((2, 2, 2)))
    with pytest.raises(ValueError, match="expected top_k <= 3 classes"):
        run(ls.Accuracy(top_k=4), np.ones((2, 3)), np.ones(2))


def test_accuracy_with_every_label_ignored_is_zero() -> None:
    outputs = run(ls.Accuracy(ignore_label=1, per_class=True, dtype=F64), np.ones((2, 3)), np.ones(2))
    assert outputs[0] == 0 and not outputs[1].any()


# ---------------------------------------------------------------------------------------------
# Recurrent


def caffe_lstm_unit(c_prev: np.ndarray, gates: np.ndarray, cont: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    hidden = c_prev.shape[-1]
    i, f, o, g = (gates[..., k * hidden : (k + 1) * hidden] for k in range(4))
    forget = np.where(cont == 0, 0.0, cont * sigmoid(f))
    c = forget * c_prev + sigmoid(i) * np.tanh(g)
    return c, sigmoid(o) * np.tanh(c)


def test_lstm_unit() -> None:
    rng = np.random.default_rng(29)
    c_prev, gates, cont = rng.standard_normal((1, 3, 2)), rng.standard_normal((1, 3, 8)), np.array([[1.0, 0.0, 1.0]])
    layer = rc.LSTMUnit(dtype=F64)
    c, h = caffe_lstm_unit(c_prev, gates, cont[..., None])
    outputs = run(layer, c_prev, gates, cont)
    assert_matches(outputs[0], c)
    assert_matches(outputs[1], h)
    check_gradients(layer, [c_prev, gates, cont], wrt=(0, 1))


def test_lstm_unit_backward_for_fractional_cont_is_caffes() -> None:
    """lstm_unit_layer.cpp's Backward_cpu uses f·(1 - f) for the forget gate, whatever cont is."""
    rng = np.random.default_rng(30)
    c_prev, gates, cont = rng.standard_normal((1, 2, 3)), rng.standard_normal((1, 2, 12)), np.array([[0.5, 0.25]])
    c_diff, h_diff = rng.standard_normal((1, 2, 3)), rng.standard_normal((1, 2, 3))
    grads = input_gradients(rc.LSTMUnit(dtype=F64), [c_prev, gates, cont], [c_diff, h_diff], [0, 1, 2])
    i, f, o, g = (gates[..., k * 3 : (k + 1) * 3] for k in range(4))
    i, o, g = sigmoid(i), sigmoid(o), np.tanh(g)
    f = cont[..., None] * sigmoid(f)
    tanh_c = np.tanh(f * c_prev + i * g)
    c_term = c_diff + h_diff * o * (1 - tanh_c**2)
    gate_diff = np.concatenate(
        [
            c_term * g * i * (1 - i),
            c_term * c_prev * f * (1 - f),
            h_diff * tanh_c * o * (1 - o),
            c_term * i * (1 - g**2),
        ],
        axis=-1,
    )
    assert_matches(grads[0], c_term * f)
    assert_matches(grads[1], gate_diff)
    assert grads[2] is None or not np.asarray(grads[2]).any()


def caffe_recurrent(
    kind: str,
    x: np.ndarray,
    cont: np.ndarray,
    weights: Sequence[np.ndarray],
    static: np.ndarray | None,
    states: Sequence[np.ndarray] | None,
) -> list[np.ndarray]:
    """The unrolled nets of lstm_layer.cpp / rnn_layer.cpp, one time step at a time."""
    steps, streams = x.shape[:2]
    weights = list(weights)
    w_x, b_x = weights.pop(0), weights.pop(0)
    static_term = 0.0 if static is None else static.reshape(streams, -1) @ weights.pop(0).T
    hidden = weights[0].shape[1]
    h, c = (np.zeros((streams, hidden)),) * 2 if states is None else (states[0][0], states[-1][0])
    outputs = []
    for t in range(steps):
        cont_t = cont[t][:, None]
        gate_input = (cont_t * h) @ weights[0].T + (x[t].reshape(streams, -1) @ w_x.T + b_x) + static_term
        if kind == "lstm":
            c, h = caffe_lstm_unit(c, gate_input, cont_t)
            outputs.append(h)
        else:
            h = np.tanh(gate_input)
            outputs.append(np.tanh(h @ weights[1].T + weights[2]))
    finals = [h[None], c[None]] if kind == "lstm" else [h[None]]
    return [np.stack(outputs), *finals]


def recurrent_case(
    kind: str, x_shape: tuple[int, ...], static: bool, expose: bool, seed: int
) -> tuple[keras.layers.Layer, list[np.ndarray], list[np.ndarray]]:
    """A built CaffeLSTM/CaffeRNN with random weights, its inputs and its weights."""
    rng = np.random.default_rng(seed)
    steps, streams, hidden = x_shape[0], x_shape[1], 2
    gates = 4 * hidden if kind == "lstm" else hidden
    x = rng.standard_normal(x_shape)
    cont = rng.integers(0, 2, (steps, streams)).astype(np.float64)
    cont[0] = 0
    inputs = [x, cont]
    weights = [rng.standard_normal((gates, int(np.prod(x_shape[2:])))) * 0.7, rng.standard_normal(gates) * 0.3]
    if static:
        inputs.append(rng.standard_normal((streams, 2, 1)))
        weights.append(rng.standard_normal((gates, 2)) * 0.5)
    weights.append(rng.standard_normal((gates, hidden)) * 0.7)
    if kind == "rnn":
        weights += [rng.standard_normal((hidden, hidden)) * 0.7, rng.standard_normal(hidden) * 0.3]
    if expose:
        inputs += [rng.standard_normal((1, streams, hidden)) for _ in range(2 if kind == "lstm" else 1)]
    cls = rc.CaffeLSTM if kind == "lstm" else rc.CaffeRNN
    return built(cls(hidden, expose, dtype=F64), inputs, weights), inputs, weights


@pytest.mark.parametrize("kind", ["lstm", "rnn"])
@pytest.mark.parametrize(
    ("x_shape", "static", "expose"),
    [((3, 2, 3), False, False), ((3, 2, 2, 1), True, False), ((2, 2, 3), True, True), ((3, 1, 2), False, True)],
)
def test_recurrent_layers(kind: str, x_shape: tuple[int, ...], static: bool, expose: bool) -> None:
    layer, inputs, weights = recurrent_case(kind, x_shape, static, expose, seed=31)
    assert [w.shape for w in layer.trainable_weights] == [w.shape for w in weights]  # Caffe's blob order and shapes
    if expose:
        inputs[1][0] = 1  # the exposed initial state must matter
    states = inputs[2 + static :] if expose else None
    expected = caffe_recurrent(kind, inputs[0], inputs[1], weights, inputs[2] if static else None, states)
    outputs = run(layer, *inputs)
    assert len(outputs) == (len(expected) if expose else 1)
    for actual, reference in zip(outputs, expected, strict=False):
        assert_matches(actual, reference)
    wrt = (0, 2) if static else (0,)
    if expose:
        wrt = (*wrt, *range(2 + static, len(inputs)))
    check_gradients(layer, inputs, wrt=wrt)


@pytest.mark.parametrize("kind", ["lstm", "rnn"])
def test_recurrent_layers_carry_the_hidden_state_across_calls_like_caffe(kind: str) -> None:
    layer, (x, cont), weights = recurrent_case(kind, (3, 2, 3), False, False, seed=32)
    layer.reset_state()
    first = caffe_recurrent(kind, x, cont, weights, None, None)
    assert_matches(run(layer, x, cont)[0], first[0])
    cont2 = np.ones_like(cont)
    second = caffe_recurrent(kind, x[::-1], cont2, weights, None, first[1:])
    assert_matches(run(layer, x[::-1], cont2)[0], second[0])
    layer.reset_state()
    assert_matches(run(layer, x[::-1], cont2)[0], caffe_recurrent(kind, x[::-1], cont2, weights, None, None)[0])


def test_recurrent_layers_reject_bad_inputs() -> None:
    with pytest.raises(ValueError, match="hidden-state inputs"):
        run(rc.CaffeLSTM(2, expose_hidden=True), np.ones((2, 1, 3)), np.ones((2, 1)))
    with pytest.raises(ValueError, match="num_output"):
        rc.CaffeRNN(0)


# ---------------------------------------------------------------------------------------------
# Serialization

H3 = [[1.0, 0.5, 0.0], [0.0, 1.0, 0.25], [0.1, 0.0, 1.0]]

CONFIGURED = [
    ew.Power(2.0, 0.5, 1.0),
    ew.CaffeExp(2.0, 0.5, 1.0),
    ew.CaffeLog(10.0, 2.0, 3.0),
    ew.BNLL(),
    ew.Threshold(0.5),
    ew.Clip(-1.0, 2.0),
    ew.Swish(2.0),
    ew.AbsVal(),
    ew.PReLU(True, 1),
    ew.Eltwise("sum", [1.0, -1.0]),
    rt.Slice(1, [1, 3]),
    rt.Slice(2, num_outputs=2),
    rt.Tile(2, 3),
    rt.Reduction("sumsq", 1, 0.5),
    rt.ArgMax(True, 3, 2),
    rt.CaffeEmbed(10, 4, False),
    rt.BatchReindex(),
    rt.Filter(),
    rt.CaffeParameter([2, 3]),
    ls.SoftmaxWithLoss(2, 255, "full", True),
    ls.EuclideanLoss(),
    ls.SigmoidCrossEntropyLoss(-1, "valid"),
    ls.HingeLoss(2),
    ls.InfogainLoss(1, 3, "batch_size", H3, True),
    ls.MultinomialLogisticLoss(),
    ls.ContrastiveLoss(2.0, True),
    ls.Accuracy(5, 2, 0, True),
    rc.LSTMUnit(),
    rc.CaffeRNN(4, True),
    rc.CaffeLSTM(3),
]


@pytest.mark.parametrize("layer", CONFIGURED, ids=lambda layer: type(layer).__name__)
def test_config_round_trip(layer: keras.layers.Layer) -> None:
    config = layer.get_config()
    assert type(layer).from_config(config).get_config() == config
    serialized = keras.saving.serialize_keras_object(layer)
    assert serialized["registered_name"] == f"netdef>{type(layer).__name__}"
    assert keras.saving.deserialize_keras_object(serialized).get_config() == config


def test_constructor_arguments_are_checked() -> None:
    for make, match in [
        (lambda: rt.Reduction("max"), "one of"),
        (lambda: ls.SoftmaxWithLoss(normalization="mean"), "one of"),
        (lambda: ls.HingeLoss(3), "one of"),
        (lambda: rt.ArgMax(top_k=0), "top_k"),
        (lambda: ls.Accuracy(top_k=0), "top_k"),
        (lambda: rt.Tile(1, 0), "tiles"),
    ]:
        with pytest.raises(ValueError, match=match):
            make()


LOAD_AND_COMPARE = """
import sys
import numpy as np
import keras
import netdef.keras.layers.elementwise, netdef.keras.layers.losses
import netdef.keras.layers.recurrent, netdef.keras.layers.routing

model = keras.saving.load_model(sys.argv[1])
data = np.load(sys.argv[2])
inputs = [data[f"input{i}"] for i in range(len(model.inputs))]
outputs = model(inputs)
for i, output in enumerate(outputs):
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(output), data[f"output{i}"])
print("identical", len(outputs))
"""


def test_keras_file_round_trip_in_a_fresh_process(tmp_path: Path) -> None:
    rng = np.random.default_rng(33)
    scores = keras.Input(batch_shape=(2, 4, 3), name="scores")
    labels = keras.Input(batch_shape=(2, 3), name="labels")
    sequence = keras.Input(batch_shape=(3, 2, 5), name="sequence")
    cont = keras.Input(batch_shape=(3, 2), name="cont")
    squared = ew.Power(2.0, 0.5, 1.0)(scores)
    peak = ew.Eltwise("max")([scores, squared])
    activated = ew.PReLU(axis=1)(peak)
    head, tail = rt.Slice(1, [2])(activated)
    outputs = [
        rt.Reduction("mean", 1, 2.0)(head),
        ew.Clip(-0.5, 1.5)(tail),
        rt.ArgMax(True, 2)(activated),
        ls.SoftmaxWithLoss(ignore_label=2)([activated, labels]),
        ls.Accuracy(top_k=2)([activated, labels]),
        ls.InfogainLoss(infogain=[[1.0, 0.5, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0], [0.2] * 4])(
            [activated, labels]
        ),
        rc.CaffeLSTM(3)([sequence, cont]),
        rt.CaffeEmbed(4, 2)(labels),
    ]
    model = keras.Model([scores, labels, sequence, cont], outputs)
    model.set_weights([rng.standard_normal(w.shape) * 0.5 for w in model.weights])
    cont_data = np.ones((3, 2), np.float32)
    cont_data[0] = 0
    inputs = [
        rng.standard_normal((2, 4, 3)).astype(np.float32),
        rng.integers(0, 4, (2, 3)).astype(np.float32),
        rng.standard_normal((3, 2, 5)).astype(np.float32),
        cont_data,
    ]
    results = [ops.convert_to_numpy(o) for o in model(inputs)]
    path, data = tmp_path / "model.keras", tmp_path / "data.npz"
    model.save(path)
    np.savez(data, **{f"input{i}": x for i, x in enumerate(inputs)}, **{f"output{i}": y for i, y in enumerate(results)})
    script = textwrap.dedent(LOAD_AND_COMPARE)
    done = subprocess.run(
        [sys.executable, "-c", script, str(path), str(data)], cwd=REPO, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"identical {len(outputs)}" in done.stdout
