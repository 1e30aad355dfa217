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
    if case_id in ("softmax-loss", "accuracy"):
        arrays[1] = rng.integers(0, 5, shapes[1]).astype(np.float32)
    if case_id == "log":
        arrays[0] = np.abs(arrays[0])
    return arrays


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
