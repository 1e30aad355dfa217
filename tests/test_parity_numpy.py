"""Compiled single-layer nets that OpenCV cannot check, against numpy transcriptions of
Caffe's formulas (random weights written as .caffemodel, read back for the reference)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from netdef import load_net
from netdef.weights import read_caffemodel

from .parity import assert_close, netdef_forward, write_random_caffemodel
from .test_parity_layers import build

Reference = Callable[[list[np.ndarray], list[np.ndarray]], np.ndarray]


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-x))


def conv3d(x: np.ndarray, w: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Caffe's N-D convolution (cross-correlation), stride 1, no padding."""
    kd, kh, kw = w.shape[2:]
    n, _, d, h, wd = x.shape
    out = np.zeros((n, w.shape[0], d - kd + 1, h - kh + 1, wd - kw + 1))
    for i in range(out.shape[2]):
        for j in range(out.shape[3]):
            for k in range(out.shape[4]):
                patch = x[:, :, i : i + kd, j : j + kh, k : k + kw]
                out[:, :, i, j, k] = np.einsum("ncdhw,ocdhw->no", patch, w)
    return out + b.reshape(1, -1, 1, 1, 1)


def max_pool3d(x: np.ndarray, k: int, s: int) -> np.ndarray:
    n, c, d, h, w = x.shape
    size = [(v - k) // s + 1 for v in (d, h, w)]
    out = np.empty((n, c, *size))
    for i in range(size[0]):
        for j in range(size[1]):
            for m in range(size[2]):
                out[:, :, i, j, m] = x[:, :, i * s : i * s + k, j * s : j * s + k, m * s : m * s + k].max(
                    axis=(2, 3, 4)
                )
    return out


def softmax_loss(inputs: list[np.ndarray], blobs: list[np.ndarray]) -> np.ndarray:
    scores, labels = inputs
    shifted = scores - scores.max(axis=1, keepdims=True)
    log_p = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    return np.asarray(-log_p[np.arange(len(labels)), labels.astype(int)].mean())


def lstm(inputs: list[np.ndarray], blobs: list[np.ndarray]) -> np.ndarray:
    """Caffe's unrolled LSTM: cont gates the previous hidden state and cell; gates i, f, o, g."""
    x, cont = inputs
    w_x, b, w_h = blobs
    steps, batch = cont.shape
    hidden = w_h.shape[1]
    h, c = np.zeros((batch, hidden)), np.zeros((batch, hidden))
    outputs = []
    for t in range(steps):
        keep = cont[t][:, None]
        gates = x[t].reshape(batch, -1) @ w_x.T + b + (keep * h) @ w_h.T
        i, f, o, g = np.split(gates, 4, axis=1)
        c = keep * sigmoid(f) * c + sigmoid(i) * np.tanh(g)
        h = sigmoid(o) * np.tanh(c)
        outputs.append(h)
    return np.stack(outputs)


def rnn(inputs: list[np.ndarray], blobs: list[np.ndarray]) -> np.ndarray:
    """Caffe's RNN: h = tanh(W_hh·(cont·h) + W_xh·x + b_h), o = tanh(W_ho·h + b_o)."""
    x, cont = inputs
    w_xh, b_h, w_hh, w_ho, b_o = blobs
    steps, batch = cont.shape
    h = np.zeros((batch, w_hh.shape[0]))
    outputs = []
    for t in range(steps):
        h = np.tanh((cont[t][:, None] * h) @ w_hh.T + x[t].reshape(batch, -1) @ w_xh.T + b_h)
        outputs.append(np.tanh(h @ w_ho.T + b_o))
    return np.stack(outputs)


def sigmoid_ce(inputs: list[np.ndarray]) -> np.ndarray:
    """−Σ[x·t − log(1 + e^x)] / N, Caffe's default normalization (batch size) for this loss."""
    x, t = inputs
    return np.asarray(-(x * t - np.log1p(np.exp(x))).sum() / x.shape[0])


def hinge(inputs: list[np.ndarray], squared: bool) -> np.ndarray:
    scores, labels = inputs
    signed = scores.copy()
    signed[np.arange(len(labels)), labels.astype(int)] *= -1
    margins = np.maximum(0, 1 + signed)
    return np.asarray((margins**2 if squared else margins).sum() / len(labels))


CASES: list[tuple[str, list[tuple[int, ...]], str, Reference]] = [
    ("swish-beta", [(2, 3, 4, 5)], 'type: "Swish" swish_param { beta: 1.5 }', lambda i, b: i[0] * sigmoid(1.5 * i[0])),
    ("clip", [(2, 3, 4, 5)], 'type: "Clip" clip_param { min: -0.5 max: 0.7 }', lambda i, b: np.clip(i[0], -0.5, 0.7)),
    ("bias", [(2, 3, 4, 5)], 'type: "Bias"', lambda i, b: i[0] + b[0].reshape(1, 3, 1, 1)),
    (
        "bias-two-bottoms",
        [(2, 3, 4, 5), (3, 4)],
        'type: "Bias" bias_param { axis: 1 }',
        lambda i, b: i[0] + i[1][None, :, :, None],
    ),
    (
        "log",
        [(2, 3, 4, 5)],
        'type: "Log" log_param { base: 10 scale: 0.5 shift: 5 }',
        lambda i, b: np.log10(5 + 0.5 * i[0]),
    ),
    (
        "threshold",
        [(2, 3, 4, 5)],
        'type: "Threshold" threshold_param { threshold: 0.2 }',
        lambda i, b: (i[0] > 0.2).astype(float),
    ),
    ("tile", [(2, 3, 4)], 'type: "Tile" tile_param { axis: 1 tiles: 3 }', lambda i, b: np.tile(i[0], (1, 3, 1))),
    (
        "tile-spatial",
        [(2, 3, 4, 5)],
        'type: "Tile" tile_param { axis: 3 tiles: 2 }',
        lambda i, b: np.tile(i[0], (1, 1, 1, 2)),
    ),
    (
        "reduction-sum",
        [(2, 3, 4, 5)],
        'type: "Reduction" reduction_param { axis: 1 }',
        lambda i, b: i[0].sum(axis=(1, 2, 3)),
    ),
    (
        "reduction-mean-coeff",
        [(2, 3, 4, 5)],
        'type: "Reduction" reduction_param { operation: MEAN axis: 2 coeff: 2 }',
        lambda i, b: 2 * i[0].mean(axis=(2, 3)),
    ),
    (
        "reduction-asum-last",
        [(2, 3, 4, 5)],
        'type: "Reduction" reduction_param { operation: ASUM axis: -1 }',
        lambda i, b: np.abs(i[0]).sum(axis=3),
    ),
    (
        "argmax-axis",
        [(2, 6, 3)],
        'type: "ArgMax" argmax_param { axis: 1 }',
        lambda i, b: np.argmax(i[0], axis=1)[:, None, :].astype(float),
    ),
    (
        "embed",
        [(2, 5)],
        'type: "Embed" embed_param { input_dim: 7 num_output: 4 }',
        lambda i, b: b[0][i[0].astype(int)] + b[1],
    ),
    (
        "conv3d-c3d",
        [(1, 2, 4, 5, 5)],
        'type: "Convolution" convolution_param { num_output: 3 kernel_size: 3 kernel_size: 2 kernel_size: 2 }',
        lambda i, b: conv3d(i[0], b[0], b[1]),
    ),
    (
        "pool3d",
        [(1, 2, 4, 6, 6)],
        'type: "Pooling" pooling_param { kernel_size: 2 stride: 2 }',
        lambda i, b: max_pool3d(i[0], 2, 2),
    ),
    ("lstm", [(5, 3, 4), (5, 3)], 'type: "LSTM" recurrent_param { num_output: 6 }', lstm),
    ("rnn", [(5, 3, 2, 2), (5, 3)], 'type: "RNN" recurrent_param { num_output: 6 }', rnn),
    (
        "argmax-top2-values",
        [(2, 6, 1, 1)],
        'type: "ArgMax" argmax_param { top_k: 2 out_max_val: true }',
        lambda i, b: np.stack(
            [np.argsort(-i[0].reshape(2, 6), axis=1)[:, :2], -np.sort(-i[0].reshape(2, 6), axis=1)[:, :2]], axis=1
        ),
    ),
    ("batch-reindex", [(4, 3, 2), (3,)], 'type: "BatchReindex"', lambda i, b: i[0][i[1].astype(int)]),
    ("sigmoid-ce-loss", [(4, 5), (4, 5)], 'type: "SigmoidCrossEntropyLoss"', lambda i, b: sigmoid_ce(i)),
    (
        "hinge-l2",
        [(4, 5), (4,)],
        'type: "HingeLoss" hinge_loss_param { norm: L2 }',
        lambda i, b: hinge(i, squared=True),
    ),
    (
        "multinomial-loss",
        [(4, 5), (4,)],
        'type: "MultinomialLogisticLoss"',
        lambda i, b: np.asarray(-np.log(np.maximum(i[0][np.arange(4), i[1].astype(int)], 1e-20)).sum() / 4),
    ),
    ("softmax-loss", [(4, 5), (4,)], 'type: "SoftmaxWithLoss"', softmax_loss),
    (
        "euclidean-loss",
        [(4, 5), (4, 5)],
        'type: "EuclideanLoss"',
        lambda i, b: np.asarray(((i[0] - i[1]) ** 2).sum() / 8),
    ),
    (
        "accuracy",
        [(4, 5), (4,)],
        'type: "Accuracy"',
        lambda i, b: np.asarray((i[0].argmax(axis=1) == i[1]).mean()),
    ),
]


def inputs_for(case_id: str, shapes: list[tuple[int, ...]], rng: np.random.Generator) -> list[np.ndarray]:
    arrays = [rng.standard_normal(shape).astype(np.float32) for shape in shapes]
    if case_id == "embed":
        arrays[0] = (np.abs(arrays[0] * 2).astype(int) % 7).astype(np.float32)
    if case_id == "batch-reindex":
        arrays[1] = np.array([3, 0, 3], np.float32)
    if case_id == "sigmoid-ce-loss":
        arrays[1] = rng.integers(0, 2, shapes[1]).astype(np.float32)
    if case_id == "multinomial-loss":
        arrays[0] = rng.random(shapes[0]).astype(np.float32)
    if case_id == "contrastive-loss":
        arrays[2] = rng.integers(0, 2, shapes[2]).astype(np.float32)
    if case_id == "infogain-loss":
        arrays[2] = rng.random(shapes[2]).astype(np.float32)
    if case_id in ("softmax-loss", "accuracy", "hinge-l2", "multinomial-loss", "infogain-loss"):
        arrays[1] = rng.integers(0, 5, shapes[1]).astype(np.float32)
    if case_id in ("lstm", "rnn"):
        arrays[1] = (rng.random(shapes[1]) > 0.3).astype(np.float32)
    if case_id == "log":
        arrays[0] = np.abs(arrays[0])
    return arrays


def spp(x: np.ndarray, height: int) -> np.ndarray:
    """Caffe's SPP: level l pools 2^l bins per axis (kernel ceil(H/bins), centred pad), flattened C,H,W."""
    n, c, h, w = x.shape
    levels = []
    for level in range(height):
        bins = 2**level
        kh, kw = -(-h // bins), -(-w // bins)
        ph, pw = (kh * bins - h + 1) // 2, (kw * bins - w + 1) // 2
        padded = np.full((n, c, h + 2 * ph + kh, w + 2 * pw + kw), -np.inf)
        padded[:, :, ph : ph + h, pw : pw + w] = x
        out = np.array(
            [
                [padded[:, :, i * kh : i * kh + kh, j * kw : j * kw + kw].max(axis=(2, 3)) for j in range(bins)]
                for i in range(bins)
            ]
        )
        levels.append(np.transpose(out, (2, 3, 0, 1)).reshape(n, -1))
    return np.concatenate(levels, axis=1)


def im2col(x: np.ndarray, k: int) -> np.ndarray:
    """Caffe's im2col, stride 1, no pad: channel (c·k + i)·k + j holds x[c, y + i, x + j]."""
    n, c, h, w = x.shape
    out = np.empty((n, c * k * k, h - k + 1, w - k + 1))
    for ch in range(c):
        for i in range(k):
            for j in range(k):
                out[:, (ch * k + i) * k + j] = x[:, ch, i : i + h - k + 1, j : j + w - k + 1]
    return out


def contrastive(inputs: list[np.ndarray], margin: float = 1.0) -> np.ndarray:
    a, b, y = inputs
    d2 = ((a - b) ** 2).reshape(len(a), -1).sum(axis=1)
    similar = y.reshape(-1) != 0
    loss = np.where(similar, d2, np.maximum(margin - np.sqrt(d2), 0) ** 2)
    return np.asarray(loss.sum() / (2 * len(a)))


def infogain(inputs: list[np.ndarray]) -> np.ndarray:
    scores, labels, h = inputs
    shifted = scores - scores.max(axis=1, keepdims=True)
    p = np.exp(shifted) / np.exp(shifted).sum(axis=1, keepdims=True)
    rows = h.reshape(h.shape[-2], h.shape[-1])[labels.astype(int)]
    return np.asarray(-(rows * np.log(np.maximum(p, 1e-20))).sum() / len(labels))


CASES += [
    ("spp", [(2, 3, 7, 6)], 'type: "SPP" spp_param { pyramid_height: 2 }', lambda i, b: spp(i[0], 2)),
    ("im2col", [(2, 3, 5, 4)], 'type: "Im2col" convolution_param { kernel_size: 2 }', lambda i, b: im2col(i[0], 2)),
    (
        "contrastive-loss",
        [(4, 3, 1, 1), (4, 3, 1, 1), (4, 1, 1, 1)],
        'type: "ContrastiveLoss"',
        lambda i, b: contrastive(i),
    ),
    ("infogain-loss", [(4, 5), (4,), (1, 1, 5, 5)], 'type: "InfogainLoss"', lambda i, b: infogain(i)),
]


@pytest.mark.parametrize(("case_id", "shapes", "body", "reference"), CASES, ids=[c[0] for c in CASES])
def test_layer_matches_caffes_formula(
    tmp_path: Path, case_id: str, shapes: list[tuple[int, ...]], body: str, reference: Reference
) -> None:
    prototxt = tmp_path / "net.prototxt"
    prototxt.write_text(build(shapes, body))
    net = load_net(prototxt)
    weights = write_random_caffemodel(net, tmp_path / "w.caffemodel")
    blobs = read_caffemodel(weights)[0].blobs if weights else []
    arrays = inputs_for(case_id, shapes, np.random.default_rng(4))
    feeds = {f"in{i}": array for i, array in enumerate(arrays)}
    top = net.layer("l").tops[0].blob
    actual = netdef_forward(net, weights, feeds, [top])[0]
    expected = reference([a.astype(np.float64) for a in arrays], [b.astype(np.float64) for b in blobs])
    assert_close(actual, np.asarray(expected, dtype=np.float64).reshape(actual.shape), case_id)


def test_train_phase_dropout_drops_and_rescales_as_caffe(tmp_path: Path) -> None:
    """TRAIN: each unit kept with probability 1 − r and scaled by 1/(1 − r); TEST: identity."""
    prototxt = tmp_path / "net.prototxt"
    prototxt.write_text(build([(4, 50, 10, 10)], 'type: "Dropout" dropout_param { dropout_ratio: 0.3 }'))
    x = np.ones((4, 50, 10, 10), np.float32)
    train = netdef_forward(load_net(prototxt, phase="TRAIN"), None, {"in0": x}, ["l"])[0]
    assert {round(float(v), 5) for v in np.unique(train)} == {0.0, round(1 / 0.7, 5)}
    assert abs((train == 0).mean() - 0.3) < 0.02
    test = netdef_forward(load_net(prototxt, phase="TEST"), None, {"in0": x}, ["l"])[0]
    np.testing.assert_array_equal(test, x)


def test_train_phase_batchnorm_normalizes_with_batch_statistics(tmp_path: Path) -> None:
    """Caffe's BatchNorm test: in TRAIN each channel comes out with mean 0 and variance 1."""
    prototxt = tmp_path / "net.prototxt"
    prototxt.write_text(build([(5, 2, 3, 4)], 'type: "BatchNorm"'))
    x = np.random.default_rng(6).normal(3, 2, (5, 2, 3, 4)).astype(np.float32)
    out = netdef_forward(load_net(prototxt, phase="TRAIN"), None, {"in0": x}, ["l"])[0]
    np.testing.assert_allclose(out.mean(axis=(0, 2, 3)), 0, atol=1e-3)
    np.testing.assert_allclose(out.var(axis=(0, 2, 3)), 1, atol=1e-3)


def test_multi_top_layers(tmp_path: Path) -> None:
    """Slice (two tops), Filter (selector drops rows), LSTMUnit (c and h), Parameter (no bottom)."""
    rng = np.random.default_rng(7)
    x = rng.standard_normal((4, 6, 3)).astype(np.float32)
    cases = {
        "slice": (build([(4, 6, 3)], 'type: "Slice" slice_param { axis: 1 slice_point: 2 }', tops=2), [x]),
        "filter": (build([(4, 6, 3), (4, 1)], 'type: "Filter"'), [x, np.array([[1], [0], [1], [1]], np.float32)]),
        "lstm-unit": (
            build([(1, 4, 3), (1, 4, 12), (1, 4)], 'type: "LSTMUnit"', tops=2),
            [rng.standard_normal((1, 4, 3)), rng.standard_normal((1, 4, 12)), np.array([[1, 0, 1, 1]])],
        ),
        "parameter": (
            build([(4, 6, 3)], 'type: "Parameter" parameter_param { shape { dim: 2 dim: 5 } }', bottoms=0),
            [x],
        ),
    }
    results = {}
    for name, (text, arrays) in cases.items():
        prototxt = tmp_path / f"{name}.prototxt"
        prototxt.write_text(text)
        net = load_net(prototxt)
        weights = write_random_caffemodel(net, tmp_path / f"{name}.caffemodel")
        feeds = {f"in{i}": np.asarray(a, np.float32) for i, a in enumerate(arrays)}
        tops = [value.blob for value in net.layer("l").tops]
        blobs = read_caffemodel(weights)[0].blobs if weights else []
        results[name] = (netdef_forward(net, weights, feeds, tops), [a.astype(np.float64) for a in arrays], blobs)
    (first, second), _, _ = results["slice"]
    assert_close(first, x[:, :2])
    assert_close(second, x[:, 2:])
    (kept,), _, _ = results["filter"]
    assert_close(kept, x[[0, 2, 3]])
    (c, h), (c_prev, gates, cont), _ = results["lstm-unit"]
    i, f, o, g = np.split(gates, 4, axis=2)
    expected_c = cont[..., None] * sigmoid(f) * c_prev + sigmoid(i) * np.tanh(g)
    assert_close(c, expected_c)
    assert_close(h, sigmoid(o) * np.tanh(expected_c))
    (value,), _, blobs = results["parameter"]
    assert_close(value, blobs[0])
