"""Single-layer nets for each layer type and its parameter variants, against OpenCV's
implementation of Caffe's layers (random weights written as .caffemodel). Layers and
variants OpenCV does not implement are in test_parity_numpy.py."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from netdef import load_net

from .parity import assert_close, netdef_forward, opencv_forward, write_random_caffemodel

# (id, input shapes, layer text(s) after the inputs, output layer); inputs are named in0, in1...
CASES: list[tuple[str, list[tuple[int, ...]], str, str]] = [
    ("conv", [(2, 3, 9, 8)], 'type: "Convolution" convolution_param { num_output: 4 kernel_size: 3 }', "l"),
    (
        "conv-pad-stride",
        [(2, 3, 9, 8)],
        'type: "Convolution" convolution_param { num_output: 4 kernel_size: 3 stride: 2 pad: 1 }',
        "l",
    ),
    ("conv-same", [(2, 3, 9, 8)], 'type: "Convolution" convolution_param { num_output: 4 kernel_size: 5 pad: 2 }', "l"),
    (
        "conv-hw",
        [(2, 3, 9, 8)],
        'type: "Convolution" convolution_param { num_output: 4 kernel_h: 3 kernel_w: 1 pad_h: 1 pad_w: 0 stride_h: 1 stride_w: 2 }',
        "l",
    ),
    (
        "conv-dilated",
        [(2, 3, 11, 10)],
        'type: "Convolution" convolution_param { num_output: 4 kernel_size: 3 dilation: 2 }',
        "l",
    ),
    (
        "conv-group",
        [(2, 4, 9, 8)],
        'type: "Convolution" convolution_param { num_output: 6 kernel_size: 3 group: 2 }',
        "l",
    ),
    (
        "conv-depthwise",
        [(2, 4, 9, 8)],
        'type: "Convolution" convolution_param { num_output: 4 kernel_size: 3 group: 4 pad: 1 }',
        "l",
    ),
    (
        "conv-no-bias",
        [(2, 3, 9, 8)],
        'type: "Convolution" convolution_param { num_output: 4 kernel_size: 1 bias_term: false }',
        "l",
    ),
    (
        "deconv",
        [(2, 3, 5, 4)],
        'type: "Deconvolution" convolution_param { num_output: 4 kernel_size: 3 stride: 2 }',
        "l",
    ),
    (
        "deconv-pad",
        [(2, 4, 5, 4)],
        'type: "Deconvolution" convolution_param { num_output: 2 kernel_size: 4 stride: 2 pad: 1 }',
        "l",
    ),
    ("pool-max-ceil", [(2, 3, 9, 8)], 'type: "Pooling" pooling_param { pool: MAX kernel_size: 3 stride: 2 }', "l"),
    (
        "pool-max-pad",
        [(2, 3, 9, 8)],
        'type: "Pooling" pooling_param { pool: MAX kernel_size: 3 stride: 2 pad: 1 }',
        "l",
    ),
    (
        "pool-ave-pad",
        [(2, 3, 9, 8)],
        'type: "Pooling" pooling_param { pool: AVE kernel_size: 3 stride: 2 pad: 1 }',
        "l",
    ),
    ("pool-ave-exact", [(2, 3, 8, 8)], 'type: "Pooling" pooling_param { pool: AVE kernel_size: 2 stride: 2 }', "l"),
    # Caffe's ceil rounding with a one-pixel overhang: Keras's "same" padding is exact there.
    ("pool-max-same", [(2, 3, 8, 8)], 'type: "Pooling" pooling_param { pool: MAX kernel_size: 3 stride: 2 }', "l"),
    ("pool-ave-same", [(2, 3, 8, 8)], 'type: "Pooling" pooling_param { pool: AVE kernel_size: 3 stride: 2 }', "l"),
    ("pool-global", [(2, 3, 7, 5)], 'type: "Pooling" pooling_param { pool: AVE global_pooling: true }', "l"),
    ("ip-spatial", [(2, 3, 4, 5)], 'type: "InnerProduct" inner_product_param { num_output: 7 }', "l"),
    ("ip-flat", [(2, 12)], 'type: "InnerProduct" inner_product_param { num_output: 7 }', "l"),
    ("lrn-across", [(2, 7, 5, 5)], 'type: "LRN" lrn_param { local_size: 5 alpha: 0.1 beta: 0.75 }', "l"),
    (
        "lrn-within",
        [(2, 3, 6, 5)],
        'type: "LRN" lrn_param { local_size: 3 alpha: 0.5 beta: 0.75 norm_region: WITHIN_CHANNEL }',
        "l",
    ),
    ("batchnorm", [(2, 3, 4, 5)], 'type: "BatchNorm" batch_norm_param { use_global_stats: true }', "l"),
    ("scale-bias", [(2, 3, 4, 5)], 'type: "Scale" scale_param { bias_term: true }', "l"),
    ("relu-leaky", [(2, 3, 4, 5)], 'type: "ReLU" relu_param { negative_slope: 0.1 }', "l"),
    ("sigmoid", [(2, 3, 4, 5)], 'type: "Sigmoid"', "l"),
    ("tanh", [(2, 3, 4, 5)], 'type: "TanH"', "l"),
    ("elu", [(2, 3, 4, 5)], 'type: "ELU" elu_param { alpha: 0.5 }', "l"),
    ("swish-beta-1", [(2, 3, 4, 5)], 'type: "Swish"', "l"),
    ("softmax-channels", [(2, 5, 3, 4)], 'type: "Softmax"', "l"),
    ("dropout-test", [(2, 3, 4, 5)], 'type: "Dropout" dropout_param { dropout_ratio: 0.3 }', "l"),
    ("mvn", [(2, 3, 4, 5)], 'type: "MVN"', "l"),
    (
        "mvn-across-mean-only",
        [(2, 3, 4, 5)],
        'type: "MVN" mvn_param { across_channels: true normalize_variance: false }',
        "l",
    ),
    ("absval", [(2, 3, 4, 5)], 'type: "AbsVal"', "l"),
    ("bnll", [(2, 3, 4, 5)], 'type: "BNLL"', "l"),
    ("power", [(2, 3, 4, 5)], 'type: "Power" power_param { power: 2 scale: 0.5 shift: 3 }', "l"),
    ("exp", [(2, 3, 4, 5)], 'type: "Exp" exp_param { base: 2 scale: 0.5 shift: 0.1 }', "l"),
    ("prelu", [(2, 3, 4, 5)], 'type: "PReLU"', "l"),
    ("prelu-shared", [(2, 3, 4, 5)], 'type: "PReLU" prelu_param { channel_shared: true }', "l"),
    ("scale-axis0", [(2, 3, 4, 5)], 'type: "Scale" scale_param { axis: 0 num_axes: 2 }', "l"),
    ("scale-spatial", [(2, 3, 4, 5)], 'type: "Scale" scale_param { axis: 2 }', "l"),
    ("scale-two-bottoms", [(2, 3, 4, 5), (2, 3)], 'type: "Scale" scale_param { axis: 0 }', "l"),
    ("softmax-height", [(2, 5, 3, 4)], 'type: "Softmax" softmax_param { axis: 2 }', "l"),
    (
        "deconv-group",
        [(2, 4, 5, 4)],
        'type: "Deconvolution" convolution_param { num_output: 6 kernel_size: 3 stride: 2 group: 2 }',
        "l",
    ),
    ("ip-axis2", [(2, 3, 4, 5)], 'type: "InnerProduct" inner_product_param { num_output: 7 axis: 2 }', "l"),
    ("flatten-axis2", [(2, 3, 4, 5)], 'type: "Flatten" flatten_param { axis: 2 }', "l"),
    ("crop-axis1", [(2, 5, 8, 9), (2, 3, 5, 4)], 'type: "Crop" crop_param { axis: 1 offset: 1 }', "l"),
    ("concat-channels", [(2, 3, 4, 5), (2, 2, 4, 5)], 'type: "Concat"', "l"),
    ("concat-height", [(2, 3, 4, 5), (2, 3, 2, 5)], 'type: "Concat" concat_param { axis: 2 }', "l"),
    ("eltwise-sum", [(2, 3, 4, 5), (2, 3, 4, 5)], 'type: "Eltwise"', "l"),
    ("eltwise-prod", [(2, 3, 4, 5), (2, 3, 4, 5)], 'type: "Eltwise" eltwise_param { operation: PROD }', "l"),
    ("eltwise-max", [(2, 3, 4, 5), (2, 3, 4, 5)], 'type: "Eltwise" eltwise_param { operation: MAX }', "l"),
    ("eltwise-coeff", [(2, 3, 4, 5), (2, 3, 4, 5)], 'type: "Eltwise" eltwise_param { coeff: 0.5 coeff: -2 }', "l"),
    ("flatten", [(2, 3, 4, 5)], 'type: "Flatten"', "l"),
    ("reshape", [(2, 3, 4, 5)], 'type: "Reshape" reshape_param { shape { dim: 0 dim: -1 dim: 10 } }', "l"),
    ("crop", [(2, 3, 8, 9), (2, 3, 5, 4)], 'type: "Crop" crop_param { axis: 2 offset: 1 offset: 3 }', "l"),
]


def build(inputs: list[tuple[int, ...]], body: str, tops: int = 1, bottoms: int | None = None) -> str:
    """Input layers in0, in1... and one layer "l" reading the first ``bottoms`` of them
    (all by default), with tops l, l1, l2..."""
    lines = []
    for i, shape in enumerate(inputs):
        dims = " ".join(f"dim: {d}" for d in shape)
        lines.append(f'layer {{ name: "in{i}" type: "Input" top: "in{i}" input_param {{ shape {{ {dims} }} }} }}')
    used = len(inputs) if bottoms is None else bottoms
    bottom_text = " ".join(f'bottom: "in{i}"' for i in range(used))
    top_text = " ".join(f'top: "{top_name(k)}"' for k in range(tops))
    lines.append(f'layer {{ name: "l" {bottom_text} {top_text} {body} }}')
    return "\n".join(lines) + "\n"


def top_name(index: int) -> str:
    return "l" if index == 0 else f"l{index}"


@pytest.mark.parametrize(("inputs", "body", "out"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_layer_matches_opencv(tmp_path: Path, inputs: list[tuple[int, ...]], body: str, out: str) -> None:
    prototxt = tmp_path / "net.prototxt"
    prototxt.write_text(build(inputs, body))
    net = load_net(prototxt)
    weights = write_random_caffemodel(net, tmp_path / "w.caffemodel")
    rng = np.random.default_rng(3)
    feeds = {f"in{i}": rng.standard_normal(shape).astype(np.float32) for i, shape in enumerate(inputs)}
    expected = opencv_forward(prototxt, weights, feeds, [out])[0]
    actual = netdef_forward(net, weights, feeds, [out])[0]
    assert_close(actual, expected.reshape(actual.shape), out)


def test_lrn_k_against_caffes_formula(tmp_path: Path) -> None:
    """OpenCV's importer drops LRN's ``k``; Caffe adds it to the scale: x·(k + α/n·Σx²)^−β."""
    prototxt = tmp_path / "net.prototxt"
    prototxt.write_text(build([(2, 7, 5, 5)], 'type: "LRN" lrn_param { local_size: 5 alpha: 0.1 beta: 0.75 k: 2 }'))
    x = np.random.default_rng(3).standard_normal((2, 7, 5, 5)).astype(np.float32)
    squares = np.pad(x.astype(np.float64) ** 2, ((0, 0), (2, 2), (0, 0), (0, 0)))
    window = sum(squares[:, i : i + 7] for i in range(5))
    expected = x * (2 + 0.1 / 5 * window) ** -0.75
    assert_close(netdef_forward(load_net(prototxt), None, {"in0": x}, ["l"])[0], expected)
