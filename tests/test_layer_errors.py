"""Every parameter and shape check of the declarations: where Caffe would abort on a CHECK,
netdef raises a ShapeError that names the layer and says what was expected."""

from __future__ import annotations

import pytest
from google.protobuf import text_format

from netdef.errors import ShapeError
from netdef.layers.registry import DataOptions, LayerContext, Shape, lookup
from netdef.proto import netdef_pb2 as pb


def run(text: str, bottoms: list[Shape], rule: str = "shape") -> list[Shape]:
    layer = text_format.Parse(text, pb.LayerParameter())
    layer.name = "culprit"
    ctx = LayerContext(layer=layer, bottoms=[tuple(b) for b in bottoms], data=DataOptions())
    spec = lookup(layer.type)
    assert spec is not None
    return getattr(spec, rule)(ctx)


CONV = 'type: "Convolution" top: "t" '
POOL = 'type: "Pooling" top: "t" '
IMAGE: Shape = (2, 3, 6, 5)

# (prototxt, bottoms, text the message must contain)
ERRORS = {
    # convolution family
    "conv num_output 0": (CONV + "convolution_param { kernel_size: 3 }", [IMAGE], "num_output > 0"),
    "conv group does not divide channels": (
        CONV + "convolution_param { num_output: 4 group: 2 kernel_size: 3 }",
        [IMAGE],
        "a divisor of 3",
    ),
    "conv group does not divide num_output": (
        CONV + "convolution_param { num_output: 4 group: 3 kernel_size: 3 }",
        [IMAGE],
        "a divisor of 4",
    ),
    "conv group 0": (
        CONV + "convolution_param { num_output: 4 group: 0 kernel_size: 1 }",
        [IMAGE],
        "group > 0",
    ),
    "conv no kernel": (CONV + "convolution_param { num_output: 4 }", [IMAGE], "1 or 2 values"),
    "conv kernel count": (
        CONV + "convolution_param { num_output: 4 kernel_size: 3 kernel_size: 3 }",
        [(2, 3, 6, 5, 4)],
        "1 or 3 values",
    ),
    "conv kernel_size and kernel_h": (
        CONV + "convolution_param { num_output: 4 kernel_size: 3 kernel_h: 3 kernel_w: 3 }",
        [IMAGE],
        "not both",
    ),
    "conv kernel_h on 3-D": (
        CONV + "convolution_param { num_output: 4 kernel_h: 3 kernel_w: 3 }",
        [(2, 3, 4, 6, 5)],
        "2 spatial axes",
    ),
    "conv kernel_h without kernel_w": (
        CONV + "convolution_param { num_output: 4 kernel_h: 3 }",
        [IMAGE],
        "kernel must be positive",
    ),
    "conv stride 0": (
        CONV + "convolution_param { num_output: 4 kernel_size: 3 stride: 0 }",
        [IMAGE],
        "stride",
    ),
    "conv pad count": (
        CONV + "convolution_param { num_output: 4 kernel_size: 3 pad: 1 pad: 1 pad: 1 }",
        [IMAGE],
        "1 or 2 values (or none)",
    ),
    "conv kernel larger than padded input": (
        CONV + "convolution_param { num_output: 4 kernel_size: 7 pad: 0 }",
        [IMAGE],
        "extent 7 <= input + 2·pad = 6",
    ),
    "conv dilated kernel too large": (
        CONV + "convolution_param { num_output: 4 kernel_size: 3 dilation: 3 }",
        [IMAGE],
        "extent 7",
    ),
    "conv bottoms differ": (
        'type: "Convolution" top: "a" top: "b" convolution_param { num_output: 4 kernel_size: 3 }',
        [IMAGE, (2, 3, 6, 6)],
        "(2, 3, 6, 5)",
    ),
    "conv tops != bottoms": (
        CONV + "convolution_param { num_output: 4 kernel_size: 3 }",
        [IMAGE, IMAGE],
        "one top per bottom",
    ),
    "conv axis out of range": (
        CONV + "convolution_param { num_output: 4 kernel_size: 3 axis: 4 }",
        [IMAGE],
        "-4 <= axis < 4",
    ),
    "deconv empty output": (
        'type: "Deconvolution" top: "t" convolution_param { num_output: 4 kernel_size: 1 pad: 2 }',
        [(1, 3, 1, 1)],
        "extent − 2·pad >= 1",
    ),
    "im2col without spatial axis": (
        'type: "Im2col" convolution_param { kernel_size: 1 }',
        [(2, 3)],
        "at least 1 spatial axes",
    ),
    # pooling
    "pool no kernel": (
        POOL + "pooling_param { stride: 2 }",
        [IMAGE],
        "kernel_size, or as kernel_h and kernel_w",
    ),
    "pool kernel_size and kernel_h/w": (
        POOL + "pooling_param { kernel_size: 2 kernel_h: 2 kernel_w: 2 }",
        [IMAGE],
        "not both",
    ),
    "pool global with kernel": (
        POOL + "pooling_param { global_pooling: true kernel_size: 2 }",
        [IMAGE],
        "do not set kernel_size",
    ),
    "pool global with stride": (
        POOL + "pooling_param { global_pooling: true stride: 2 }",
        [IMAGE],
        "pad 0 and stride 1",
    ),
    "pool pad not smaller than kernel": (
        POOL + "pooling_param { kernel_size: 2 pad: 2 }",
        [IMAGE],
        "pad < (2, 2)",
    ),
    "pool pad with STOCHASTIC": (
        POOL + "pooling_param { pool: STOCHASTIC kernel_size: 3 pad: 1 }",
        [IMAGE],
        "MAX and AVE",
    ),
    "pool pad and pad_h": (
        POOL + "pooling_param { kernel_size: 3 pad: 1 pad_h: 1 pad_w: 1 }",
        [IMAGE],
        "both pad_h and pad_w",
    ),
    "pool stride_h alone": (
        POOL + "pooling_param { kernel_size: 3 stride_h: 1 }",
        [IMAGE],
        "both stride_h and stride_w",
    ),
    "pool stride 0": (
        POOL + "pooling_param { kernel_size: 3 stride: 0 }",
        [IMAGE],
        "stride must be positive",
    ),
    "pool kernel 0": (
        POOL + "pooling_param { kernel_size: 0 }",
        [IMAGE],
        "kernel must be positive",
    ),
    "pool 3-D bottom": (POOL + "pooling_param { kernel_size: 3 }", [(2, 3, 6)], "4-D (N, C, H, W)"),
    "pool mask top with AVE": (
        'type: "Pooling" top: "a" top: "b" pooling_param { pool: AVE kernel_size: 3 }',
        [IMAGE],
        "expected 1 top",
    ),
    "pool window does not fit": (
        POOL + "pooling_param { kernel_size: 7 stride: 2 }",
        [(1, 1, 5, 5)],
        "kernel (7, 7) <= input + 2·pad",
    ),
    "pool 5-D with kernel_h": (
        POOL + "pooling_param { kernel_h: 2 kernel_w: 2 }",
        [(1, 2, 3, 4, 5)],
        "kernel_size (used for D, H and W)",
    ),
    "pool 5-D with pad_h": (
        POOL + "pooling_param { kernel_size: 2 pad_h: 1 pad_w: 1 }",
        [(1, 2, 3, 4, 5)],
        "expected pad, stride",
    ),
    # SPP, LRN, Crop
    "SPP input too small": (
        'type: "SPP" spp_param { pyramid_height: 4 }',
        [(1, 3, 5, 5)],
        "pyramid level 2",
    ),
    "SPP height 0": ('type: "SPP"', [IMAGE], "pyramid_height > 0"),
    "SPP 2-D": ('type: "SPP" spp_param { pyramid_height: 2 }', [(2, 3)], "(N, C, H, W)"),
    "LRN even size": ('type: "LRN" lrn_param { local_size: 4 }', [IMAGE], "an odd number"),
    "LRN 2-D": ('type: "LRN"', [(2, 3)], "bottom with exactly 4 axes"),
    "crop offset count": (
        'type: "Crop" crop_param { offset: 1 offset: 1 offset: 1 }',
        [IMAGE, IMAGE],
        "1 or 2 offsets",
    ),
    "crop larger than input": (
        'type: "Crop" crop_param { offset: 1 }',
        [IMAGE, (2, 3, 6, 5)],
        "offset 1 + size 6 <= 6",
    ),
    "crop reference with fewer axes": ('type: "Crop"', [IMAGE, (2, 3, 6)], "at least 4 axes"),
    # neurons
    "Clip without max": ('type: "Clip" clip_param { min: 0 }', [IMAGE], "no max"),
    "Clip without clip_param": ('type: "Clip"', [IMAGE], "no min and no max"),
    "Exp negative base": ('type: "Exp" exp_param { base: -2 }', [IMAGE], "base > 0 or base == -1"),
    "Log base 1": ('type: "Log" log_param { base: 1 }', [IMAGE], "base != 1"),
    "PReLU 1-D": ('type: "PReLU"', [(5,)], "at least 2 axes"),
    "PReLU 5-D (Caffe's 4-D accessors)": ('type: "PReLU"', [(1, 2, 3, 4, 5)], "at most 4 axes"),
    "MVN 5-D": ('type: "MVN"', [(1, 2, 3, 4, 5)], "at most 4 axes"),
    "BatchNorm 1-D": ('type: "BatchNorm"', [(5,)], "at least 2 axes"),
    "Softmax axis": ('type: "Softmax" softmax_param { axis: 2 }', [(2, 3)], "-2 <= axis < 2"),
    # learnable
    "InnerProduct num_output 0": ('type: "InnerProduct"', [IMAGE], "num_output > 0"),
    "InnerProduct axis": (
        'type: "InnerProduct" inner_product_param { num_output: 2 axis: 4 }',
        [IMAGE],
        "-4 <= axis < 4",
    ),
    "Embed input_dim 0": ('type: "Embed" embed_param { num_output: 3 }', [(4,)], "input_dim > 0"),
    "Embed num_output 0": ('type: "Embed" embed_param { input_dim: 3 }', [(4,)], "num_output > 0"),
    "Scale operand mismatch": ('type: "Scale"', [IMAGE, (4,)], "expected (3,)"),
    "Scale operand past the end": (
        'type: "Scale" scale_param { axis: 2 }',
        [IMAGE, (6, 5, 2)],
        "expected (6, 5)",
    ),
    "Scale num_axes past the end": (
        'type: "Scale" scale_param { axis: 2 num_axes: 3 }',
        [IMAGE],
        "axis + num_axes <= 4",
    ),
    "Bias num_axes -2": (
        'type: "Bias" bias_param { num_axes: -2 }',
        [IMAGE],
        "-1 (to the end) or non-negative",
    ),
    # routing
    "Concat other axis differs": ('type: "Concat"', [IMAGE, (2, 4, 6, 6)], "except along axis 1"),
    "Concat rank differs": ('type: "Concat"', [IMAGE, (2, 4, 6)], "except along axis 1"),
    "Concat axis and concat_dim": (
        'type: "Concat" concat_param { axis: 1 concat_dim: 1 }',
        [IMAGE],
        "not both",
    ),
    "Concat concat_dim out of range": (
        'type: "Concat" concat_param { concat_dim: 4 }',
        [IMAGE],
        "0 <= concat_dim < 4",
    ),
    "Slice points not increasing": (
        'type: "Slice" top: "a" top: "b" top: "c" slice_param { slice_point: 2 slice_point: 2 }',
        [IMAGE],
        "0 < slice_point < 3",
    ),
    "Slice point past the end": (
        'type: "Slice" top: "a" top: "b" slice_param { slice_point: 3 }',
        [IMAGE],
        "0 < slice_point < 3",
    ),
    "Slice point count": (
        'type: "Slice" top: "a" top: "b" slice_param { slice_point: 1 slice_point: 2 }',
        [IMAGE],
        "1 slice points",
    ),
    "Slice uneven": ('type: "Slice" top: "a" top: "b"', [IMAGE], "divisible by 2"),
    "Slice more tops than entries": (
        'type: "Slice" top: "a" top: "b" top: "c" top: "d" slice_param { slice_point: 1 '
        "slice_point: 2 slice_point: 3 }",
        [IMAGE],
        "at most 3 tops",
    ),
    "Slice axis and slice_dim": (
        'type: "Slice" top: "a" slice_param { axis: 1 slice_dim: 1 }',
        [IMAGE],
        "not both",
    ),
    "Flatten end before axis": (
        'type: "Flatten" flatten_param { axis: 3 end_axis: 1 }',
        [IMAGE],
        "end_axis >= 2",
    ),
    "Reshape two -1": (
        'type: "Reshape" reshape_param { shape { dim: -1 dim: -1 } }',
        [IMAGE],
        "-1 at most once",
    ),
    "Reshape count changes": (
        'type: "Reshape" reshape_param { shape { dim: 7 } }',
        [IMAGE],
        "expected 180",
    ),
    "Reshape -1 not divisible": (
        'type: "Reshape" reshape_param { shape { dim: 7 dim: -1 } }',
        [IMAGE],
        "divisible by 7",
    ),
    "Reshape 0 without an axis to copy": (
        'type: "Reshape" reshape_param { axis: 3 shape { dim: 0 dim: 0 } }',
        [IMAGE],
        "no axis 4",
    ),
    "Reshape dim below -1": (
        'type: "Reshape" reshape_param { shape { dim: -2 } }',
        [IMAGE],
        "0 (copy) or -1 (infer)",
    ),
    "Reshape axis out of range": (
        'type: "Reshape" reshape_param { axis: 5 shape { dim: 1 } }',
        [IMAGE],
        "-5 <= axis <= 4",
    ),
    "Reshape num_axes past the end": (
        'type: "Reshape" reshape_param { axis: 2 num_axes: 3 shape { dim: -1 } }',
        [IMAGE],
        "expected <= 4",
    ),
    "Reshape num_axes -2": (
        'type: "Reshape" reshape_param { num_axes: -2 shape { dim: -1 } }',
        [IMAGE],
        "-1 (all)",
    ),
    "Tile without tiles": ('type: "Tile"', [IMAGE], "tiles > 0"),
    "Tile 0": ('type: "Tile" tile_param { tiles: 0 }', [IMAGE], "tiles > 0"),
    "Eltwise shapes differ": ('type: "Eltwise"', [IMAGE, (2, 3, 6, 4)], "does not broadcast"),
    "Eltwise coeff count": (
        'type: "Eltwise" eltwise_param { coeff: 1 }',
        [IMAGE, IMAGE],
        "0 or 2 coeffs",
    ),
    "Eltwise PROD with coeff": (
        'type: "Eltwise" eltwise_param { operation: PROD coeff: 1 coeff: 1 }',
        [IMAGE, IMAGE],
        "only to operation SUM",
    ),
    "ArgMax top_k too large": ('type: "ArgMax" argmax_param { top_k: 91 }', [IMAGE], "top_k <= 90"),
    "ArgMax top_k too large on axis": (
        'type: "ArgMax" argmax_param { axis: 1 top_k: 4 }',
        [IMAGE],
        "top_k <= 3",
    ),
    "ArgMax top_k 0": ('type: "ArgMax" argmax_param { top_k: 0 }', [IMAGE], "top_k > 0"),
    "BatchReindex 2-D indices": (
        'type: "BatchReindex"',
        [IMAGE, (2, 1)],
        "index bottom (bottom 1) with exactly 1 axes",
    ),
    "Filter selector shape": (
        'type: "Filter" top: "a"',
        [IMAGE, (2, 2)],
        "size 1 on every axis but the first",
    ),
    "Filter batch differs": ('type: "Filter" top: "a"', [IMAGE, (3, 1)], "expected (3, ...)"),
    "Filter top count": (
        'type: "Filter" top: "a" top: "b"',
        [IMAGE, (2, 1)],
        "one per bottom except the selector",
    ),
    # losses
    "loss batch differs": (
        'type: "SoftmaxWithLoss"',
        [(10, 5), (9,)],
        "bottom 1 of shape (10, ...)",
    ),
    "loss label count": ('type: "SoftmaxWithLoss"', [(2, 5, 3, 4), (2, 3)], "24 labels"),
    "loss scalar bottom": ('type: "HingeLoss"', [(), (3,)], "at least 1 axes"),
    "SigmoidCrossEntropyLoss count": (
        'type: "SigmoidCrossEntropyLoss"',
        [(10, 5), (10, 4)],
        "50 targets",
    ),
    "EuclideanLoss count": ('type: "EuclideanLoss"', [(10, 5), (10, 4)], "5 per sample"),
    "MultinomialLogisticLoss label shape": (
        'type: "MultinomialLogisticLoss"',
        [(10, 5), (10, 2)],
        "(N,) or (N, 1, 1, 1)",
    ),
    "ContrastiveLoss features": ('type: "ContrastiveLoss"', [(10, 2), (10, 3), (10,)], "same C"),
    "ContrastiveLoss spatial features": (
        'type: "ContrastiveLoss"',
        [(10, 2, 2), (10, 2, 2), (10,)],
        "same C",
    ),
    "ContrastiveLoss similarity": (
        'type: "ContrastiveLoss"',
        [(10, 2), (10, 2), (10, 2)],
        "(N,) or (N, 1, 1, 1)",
    ),
    "InfogainLoss normalize": (
        'type: "InfogainLoss" loss_param { normalize: true } infogain_loss_param { source: "H" }',
        [(10, 5), (10,)],
        "normalization",
    ),
    "InfogainLoss H size": ('type: "InfogainLoss"', [(10, 5), (10,), (4, 4)], "25 entries"),
    "InfogainLoss without H": (
        'type: "InfogainLoss"',
        [(10, 5), (10,)],
        "infogain_loss_param.source",
    ),
    "Accuracy top_k": (
        'type: "Accuracy" accuracy_param { top_k: 6 }',
        [(10, 5), (10,)],
        "top_k <= 5",
    ),
    "Accuracy label count": ('type: "Accuracy"', [(10, 5), (5,)], "10 labels"),
    # recurrent
    "RNN num_output 0": ('type: "RNN" top: "o"', [(5, 2, 3), (5, 2)], "num_output > 0"),
    "RNN x without features": (
        'type: "RNN" top: "o" recurrent_param { num_output: 3 }',
        [(5, 2), (5, 2)],
        "(T, N, features...)",
    ),
    "RNN cont shape": (
        'type: "RNN" top: "o" recurrent_param { num_output: 3 }',
        [(5, 2, 3), (5, 3)],
        "expected (5, 2)",
    ),
    "RNN no timestep": (
        'type: "RNN" top: "o" recurrent_param { num_output: 3 }',
        [(0, 2, 3), (0, 2)],
        "at least one timestep",
    ),
    "RNN static rows": (
        'type: "RNN" top: "o" recurrent_param { num_output: 3 }',
        [(5, 2, 3), (5, 2), (3, 4)],
        "expected (2, ...)",
    ),
    "RNN static 1-D": (
        'type: "RNN" top: "o" recurrent_param { num_output: 3 }',
        [(5, 2, 3), (5, 2), (2,)],
        "(N, features...)",
    ),
    "RNN too many bottoms": (
        'type: "RNN" top: "o" recurrent_param { num_output: 3 }',
        [(5, 2, 3), (5, 2), (2, 1), (2, 1)],
        "expected 2 or 3",
    ),
    "LSTM exposed hidden shape": (
        'type: "LSTM" top: "h" top: "hT" top: "cT" recurrent_param { num_output: 3 expose_hidden: true }',
        [(5, 2, 3), (5, 2), (1, 2, 3), (1, 2, 4)],
        "expected (1, 2, 3)",
    ),
    "LSTM exposed hidden tops": (
        'type: "LSTM" top: "h" recurrent_param { num_output: 3 expose_hidden: true }',
        [(5, 2, 3), (5, 2), (1, 2, 3), (1, 2, 3)],
        "expected 3",
    ),
    "LSTMUnit gates": ('type: "LSTMUnit"', [(1, 2, 3), (1, 2, 9), (1, 2)], "(1, N, 4H)"),
    "LSTMUnit cont rank": (
        'type: "LSTMUnit"',
        [(1, 2, 3), (1, 2, 12), (1, 2, 1)],
        "cont (bottom 2) with exactly 2 axes",
    ),
    # sources without files
    "Input without shape": ('type: "Input" top: "data"', [], "give --data-shape data=N,C,H,W"),
    "Input shape count": (
        'type: "Input" top: "a" top: "b" top: "c" input_param { shape { dim: 1 } shape { dim: 2 } }',
        [],
        "1 or 3 (or none)",
    ),
    "DummyData shape and legacy": (
        'type: "DummyData" top: "a" dummy_data_param { shape { dim: 1 } num: 1 channels: 1 height: 1 width: 1 }',
        [],
        "not both",
    ),
    "DummyData legacy field missing": (
        'type: "DummyData" top: "a" dummy_data_param { num: 1 channels: 1 }',
        [],
        "give height once",
    ),
    "DummyData filler count": (
        'type: "DummyData" top: "a" top: "b" top: "c" dummy_data_param { shape { dim: 1 } '
        'data_filler { type: "constant" } data_filler { type: "constant" } }',
        [],
        "1 or 3 (or none)",
    ),
    "MemoryData channels missing": (
        'type: "MemoryData" top: "a" top: "b" memory_data_param { batch_size: 2 height: 3 width: 3 }',
        [],
        "memory_data_param.channels > 0",
    ),
    "Python": (
        'type: "Python" top: "a" python_param { module: "m" layer: "L" }',
        [],
        "running its code",
    ),
    # Caffe's blob limits: reported as errors, never allocated
    "too many axes": (
        'type: "Input" top: "a" input_param { shape { ' + "dim: 1 " * 33 + "} }",
        [],
        "at most 32 axes",
    ),
    "too many elements": (
        'type: "Input" top: "a" input_param { shape { dim: 100000 dim: 100000 dim: 1000 } }',
        [],
        "at most 2,147,483,647",
    ),
    "negative size": (
        'type: "Input" top: "a" input_param { shape { dim: 2 dim: -3 } }',
        [],
        "negative size",
    ),
    "absurd deconvolution output": (
        'type: "Deconvolution" top: "t" convolution_param { num_output: 1000 kernel_size: 1 stride: 100000 }',
        [(1, 1, 1000, 1000)],
        "would hold",
    ),
}


@pytest.mark.parametrize(("text", "bottoms", "needle"), ERRORS.values(), ids=ERRORS.keys())
def test_bad_layers_raise_a_located_shape_error(text: str, bottoms: list[Shape], needle: str) -> None:
    with pytest.raises(ShapeError) as caught:
        run(text, bottoms)
    message = str(caught.value)
    assert needle in message
    assert message.startswith("layer 'culprit' (")


BLOB_ERRORS = {
    "absurd InnerProduct weight": (
        'type: "InnerProduct" inner_product_param { num_output: 100000 }',
        [(1, 100000)],
        "learnable blob of shape (100000, 100000)",
    ),
    "absurd Embed table": (
        'type: "Embed" embed_param { num_output: 65536 input_dim: 65536 }',
        [(4,)],
        "would hold 4,294,967,296 elements",
    ),
    "Scale blob past the end": (
        'type: "Scale" scale_param { axis: 3 num_axes: 2 }',
        [IMAGE],
        "axis + num_axes <= 4",
    ),
}


@pytest.mark.parametrize(("text", "bottoms", "needle"), BLOB_ERRORS.values(), ids=BLOB_ERRORS.keys())
def test_bad_learnable_blobs_raise(text: str, bottoms: list[Shape], needle: str) -> None:
    with pytest.raises(ShapeError, match=None) as caught:
        run(text, bottoms, rule="blobs")
    assert needle in str(caught.value)


def test_errors_carry_expected_and_received() -> None:
    with pytest.raises(ShapeError) as caught:
        run('type: "Eltwise"', [IMAGE, (2, 3, 6, 4)])
    assert caught.value.expected == "(2, 3, 6, 5)"
    assert caught.value.received == "(2, 3, 6, 4)"
    assert caught.value.layer == "culprit"
    assert caught.value.layer_type == "Eltwise"
