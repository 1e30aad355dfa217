"""Top and learnable-blob shapes of every non-data layer type, against Caffe's numbers.

Expected values come from Caffe's own C++ layer tests (src/caffe/test/test_*_layer.cpp),
from the model zoo's well-known sizes (CaffeNet 227 → 55, GoogLeNet 112 → 56) and from
the formulas in Caffe's Reshape methods worked by hand.
"""

from __future__ import annotations

import pytest
from google.protobuf import text_format

from netdef.layers.registry import DataOptions, LayerContext, Shape, lookup
from netdef.proto import netdef_pb2 as pb


def context(text: str, bottoms: list[Shape], phase: int = pb.TEST) -> LayerContext:
    layer = text_format.Parse(text, pb.LayerParameter())
    layer.name = layer.name or "layer"
    return LayerContext(layer=layer, bottoms=[tuple(b) for b in bottoms], phase=phase, data=DataOptions())


def tops_of(text: str, *bottoms: Shape) -> list[Shape]:
    ctx = context(text, list(bottoms))
    spec = lookup(ctx.type)
    assert spec is not None, ctx.type
    return spec.shape(ctx)


def blobs_of(text: str, *bottoms: Shape) -> list[Shape]:
    ctx = context(text, list(bottoms))
    spec = lookup(ctx.type)
    assert spec is not None, ctx.type
    return spec.blobs(ctx)


# (prototxt, bottoms, tops, learnable blobs)
CASES = {
    # --- Convolution (test_convolution_layer.cpp and the zoo) ---
    "conv two bottoms (Caffe TestSetup)": (
        'type: "Convolution" top: "a" top: "b" convolution_param { num_output: 4 kernel_size: 3 stride: 2 }',
        [(2, 3, 6, 4), (2, 3, 6, 4)],
        [(2, 4, 2, 1), (2, 4, 2, 1)],
        [(4, 3, 3, 3), (4,)],
    ),
    "conv group 3 (Caffe TestSetup)": (
        'type: "Convolution" top: "a" convolution_param { num_output: 3 group: 3 kernel_size: 3 stride: 2 }',
        [(2, 3, 6, 4)],
        [(2, 3, 2, 1)],
        [(3, 1, 3, 3), (3,)],
    ),
    "CaffeNet conv1 227 -> 55": (
        'type: "Convolution" top: "a" convolution_param { num_output: 96 kernel_size: 11 stride: 4 }',
        [(10, 3, 227, 227)],
        [(10, 96, 55, 55)],
        [(96, 3, 11, 11), (96,)],
    ),
    "CaffeNet conv2 group 2": (
        'type: "Convolution" top: "a" convolution_param { num_output: 256 pad: 2 kernel_size: 5 group: 2 }',
        [(10, 96, 27, 27)],
        [(10, 256, 27, 27)],
        [(256, 48, 5, 5), (256,)],
    ),
    "GoogLeNet conv1 224 -> 112": (
        'type: "Convolution" top: "a" convolution_param { num_output: 64 pad: 3 kernel_size: 7 stride: 2 }',
        [(10, 3, 224, 224)],
        [(10, 64, 112, 112)],
        [(64, 3, 7, 7), (64,)],
    ),
    "conv dilation 2": (
        'type: "Convolution" top: "a" convolution_param { num_output: 2 kernel_size: 3 dilation: 2 }',
        [(2, 3, 7, 6)],
        [(2, 2, 3, 2)],
        [(2, 3, 3, 3), (2,)],
    ),
    "conv per-axis repeated kernel/stride/pad": (
        'type: "Convolution" top: "a" convolution_param { num_output: 2 kernel_size: 3 '
        "kernel_size: 1 "
        "stride: 2 stride: 1 pad: 1 pad: 0 }",
        [(1, 1, 10, 8)],
        [(1, 2, 5, 8)],
        [(2, 1, 3, 1), (2,)],
    ),
    "conv kernel_h/kernel_w, stride_h/w, pad_h/w": (
        'type: "Convolution" top: "a" convolution_param { num_output: 2 kernel_h: 3 kernel_w: 1 '
        "stride_h: 2 stride_w: 1 pad_h: 1 }",
        [(1, 1, 10, 8)],
        [(1, 2, 5, 8)],
        [(2, 1, 3, 1), (2,)],
    ),
    "conv 3-D (C3D conv1a)": (
        'type: "Convolution" top: "a" convolution_param { num_output: 64 kernel_size: 3 '
        "kernel_size: 3 "
        "kernel_size: 3 pad: 1 pad: 1 pad: 1 }",
        [(1, 3, 16, 112, 112)],
        [(1, 64, 16, 112, 112)],
        [(64, 3, 3, 3, 3), (64,)],
    ),
    "conv 3-D with one kernel_size value": (
        'type: "Convolution" top: "a" convolution_param { num_output: 4 kernel_size: 3 stride: 2 }',
        [(2, 3, 5, 6, 7)],
        [(2, 4, 2, 2, 3)],
        [(4, 3, 3, 3, 3), (4,)],
    ),
    "conv axis 2 (leading axes are batch)": (
        'type: "Convolution" top: "a" convolution_param { num_output: 5 kernel_size: 3 axis: 2 }',
        [(2, 7, 3, 8)],
        [(2, 7, 5, 6)],
        [(5, 3, 3), (5,)],
    ),
    "conv 0-D (no spatial axes: an inner product)": (
        'type: "Convolution" top: "a" convolution_param { num_output: 5 }',
        [(4, 3)],
        [(4, 5)],
        [(5, 3), (5,)],
    ),
    "conv without bias": (
        'type: "Convolution" top: "a" convolution_param { num_output: 20 kernel_size: 5 bias_term: false }',
        [(64, 1, 28, 28)],
        [(64, 20, 24, 24)],
        [(20, 1, 5, 5)],
    ),
    # --- Deconvolution (test_deconvolution_layer.cpp) ---
    "deconv (Caffe TestSetup)": (
        'type: "Deconvolution" top: "a" top: "b" convolution_param { num_output: 4 kernel_size: 3 stride: 2 }',
        [(2, 3, 6, 4), (2, 3, 6, 4)],
        [(2, 4, 13, 9), (2, 4, 13, 9)],
        [(3, 4, 3, 3), (4,)],
    ),
    "deconv groups: weights (C, out/group, k, k)": (
        'type: "Deconvolution" top: "a" convolution_param { num_output: 6 group: 2 kernel_size: 4 stride: 2 pad: 1 }',
        [(1, 4, 5, 5)],
        [(1, 6, 10, 10)],
        [(4, 3, 4, 4), (6,)],
    ),
    "FCN upscore x32": (
        'type: "Deconvolution" top: "a" convolution_param { num_output: 21 group: 21 '
        "kernel_size: 64 "
        "stride: 32 bias_term: false }",
        [(1, 21, 16, 16)],
        [(1, 21, 544, 544)],
        [(21, 1, 64, 64)],
    ),
    # --- Im2col (test_im2col_layer.cpp) ---
    "im2col (Caffe TestSetup)": (
        'type: "Im2col" convolution_param { kernel_size: 3 stride: 2 }',
        [(2, 3, 6, 5)],
        [(2, 27, 2, 2)],
        [],
    ),
    "im2col rectangular kernel": (
        'type: "Im2col" convolution_param { kernel_h: 5 kernel_w: 3 stride: 2 }',
        [(2, 3, 6, 5)],
        [(2, 45, 1, 2)],
        [],
    ),
    # --- Pooling (test_pooling_layer.cpp, §8 of caffe-facts) ---
    "pool k3 s2 (Caffe TestSetup)": (
        'type: "Pooling" top: "a" pooling_param { kernel_size: 3 stride: 2 }',
        [(2, 3, 6, 5)],
        [(2, 3, 3, 2)],
        [],
    ),
    "pool k3 s2 pad1 (Caffe TestSetupPadded)": (
        'type: "Pooling" top: "a" pooling_param { pool: AVE kernel_size: 3 stride: 2 pad: 1 }',
        [(2, 3, 6, 5)],
        [(2, 3, 4, 3)],
        [],
    ),
    "pool global (Caffe TestSetupGlobalPooling)": (
        'type: "Pooling" top: "a" pooling_param { pool: AVE global_pooling: true }',
        [(2, 3, 6, 5)],
        [(2, 3, 1, 1)],
        [],
    ),
    "pool MAX 3x3 k3 s2 pad2 (Caffe TestForwardMaxPadded)": (
        'type: "Pooling" top: "a" pooling_param { kernel_size: 3 stride: 2 pad: 2 }',
        [(1, 1, 3, 3)],
        [(1, 1, 3, 3)],
        [],
    ),
    "pool MAX with mask top": (
        'type: "Pooling" top: "a" top: "mask" pooling_param { kernel_size: 2 stride: 2 }',
        [(2, 3, 6, 5)],
        [(2, 3, 3, 3), (2, 3, 3, 3)],
        [],
    ),
    "GoogLeNet pool1 112 -> 56 (CEIL)": (
        'type: "Pooling" top: "a" pooling_param { kernel_size: 3 stride: 2 }',
        [(10, 64, 112, 112)],
        [(10, 64, 56, 56)],
        [],
    ),
    "round_mode FLOOR 112 -> 55": (
        'type: "Pooling" top: "a" pooling_param { kernel_size: 3 stride: 2 round_mode: FLOOR }',
        [(10, 64, 112, 112)],
        [(10, 64, 55, 55)],
        [],
    ),
    "GoogLeNet inception pool k3 s1 p1 keeps 28": (
        'type: "Pooling" top: "a" pooling_param { kernel_size: 3 stride: 1 pad: 1 }',
        [(10, 192, 28, 28)],
        [(10, 192, 28, 28)],
        [],
    ),
    "CaffeNet pool5 13 -> 6": (
        'type: "Pooling" top: "a" pooling_param { kernel_size: 3 stride: 2 }',
        [(10, 256, 13, 13)],
        [(10, 256, 6, 6)],
        [],
    ),
    "CIFAR10 quick pool1 32 -> 16": (
        'type: "Pooling" top: "a" pooling_param { kernel_size: 3 stride: 2 }',
        [(1, 32, 32, 32)],
        [(1, 32, 16, 16)],
        [],
    ),
    "padded: last window starting in the padding is dropped": (
        'type: "Pooling" top: "a" pooling_param { kernel_size: 2 stride: 2 pad: 1 }',
        [(1, 1, 5, 5)],
        [(1, 1, 3, 3)],
        [],
    ),
    "unpadded: no clipping even past the input": (
        'type: "Pooling" top: "a" pooling_param { kernel_h: 3 kernel_w: 1 stride: 3 }',
        [(1, 1, 5, 5)],
        [(1, 1, 2, 3)],
        [],
    ),
    "padding on one axis clips both axes": (
        'type: "Pooling" top: "a" pooling_param { kernel_h: 3 kernel_w: 1 stride: 3 pad_h: 1 pad_w: 0 }',
        [(1, 1, 5, 5)],
        [(1, 1, 2, 2)],
        [],
    ),
    "kernel larger than input, CEIL still gives 1": (
        'type: "Pooling" top: "a" pooling_param { kernel_size: 7 stride: 2 }',
        [(1, 1, 6, 6)],
        [(1, 1, 1, 1)],
        [],
    ),
    "pool 5-D (netdef extension: one kernel for D, H, W)": (
        'type: "Pooling" top: "a" pooling_param { kernel_size: 2 stride: 2 }',
        [(1, 64, 16, 56, 56)],
        [(1, 64, 8, 28, 28)],
        [],
    ),
    "pool 5-D global": (
        'type: "Pooling" top: "a" pooling_param { pool: AVE global_pooling: true }',
        [(1, 64, 2, 7, 7)],
        [(1, 64, 1, 1, 1)],
        [],
    ),
    # --- SPP (test_spp_layer.cpp) ---
    "SPP height 3 (Caffe TestSetup)": (
        'type: "SPP" spp_param { pyramid_height: 3 }',
        [(2, 3, 9, 8)],
        [(2, 63)],
        [],
    ),
    "SPP height 5 (Caffe TestEqualOutputDims)": (
        'type: "SPP" spp_param { pyramid_height: 5 }',
        [(4, 3, 1024, 765)],
        [(4, 1023)],
        [],
    ),
    "SPP height 3 on 7x7 (Caffe TestEqualOutputDims2)": (
        'type: "SPP" spp_param { pyramid_height: 3 pool: AVE }',
        [(10, 3, 7, 7)],
        [(10, 63)],
        [],
    ),
    "SPP height 1 is a single unflattened pooling": (
        'type: "SPP" spp_param { pyramid_height: 1 }',
        [(2, 3, 9, 8)],
        [(2, 3, 1, 1)],
        [],
    ),
    # --- LRN, Crop ---
    "LRN": (
        'type: "LRN" lrn_param { local_size: 5 alpha: 0.0001 }',
        [(2, 7, 3, 3)],
        [(2, 7, 3, 3)],
        [],
    ),
    "LRN within channel": (
        'type: "LRN" lrn_param { local_size: 3 norm_region: WITHIN_CHANNEL }',
        [(1, 32, 16, 16)],
        [(1, 32, 16, 16)],
        [],
    ),
    "crop default axis 2": ('type: "Crop"', [(2, 4, 5, 4), (9, 9, 3, 2)], [(2, 4, 3, 2)], []),
    "crop axis 0 (Caffe TestSetupShapeAll)": (
        'type: "Crop" crop_param { axis: 0 }',
        [(2, 4, 5, 4), (1, 2, 3, 4)],
        [(1, 2, 3, 4)],
        [],
    ),
    "crop axis -1 with offset": (
        'type: "Crop" crop_param { axis: -1 offset: 2 }',
        [(2, 4, 5, 4), (1, 1, 1, 2)],
        [(2, 4, 5, 2)],
        [],
    ),
    "crop per-axis offsets": (
        'type: "Crop" crop_param { axis: 1 offset: 0 offset: 1 offset: 2 }',
        [(2, 4, 5, 4), (1, 3, 4, 2)],
        [(2, 3, 4, 2)],
        [],
    ),
    "crop 5-D": (
        'type: "Crop" crop_param { axis: 2 }',
        [(2, 3, 4, 5, 6), (2, 3, 2, 2, 2)],
        [(2, 3, 2, 2, 2)],
        [],
    ),
    # --- neurons ---
    "ReLU": ('type: "ReLU"', [(2, 3, 4, 5)], [(2, 3, 4, 5)], []),
    "AbsVal": ('type: "AbsVal"', [(2, 3)], [(2, 3)], []),
    "Exp base 2": ('type: "Exp" exp_param { base: 2 }', [(2, 3)], [(2, 3)], []),
    "Log default base": ('type: "Log"', [(2, 3)], [(2, 3)], []),
    "Clip": ('type: "Clip" clip_param { min: -1 max: 2 }', [(2, 3)], [(2, 3)], []),
    "Dropout": (
        'type: "Dropout" dropout_param { dropout_ratio: 0.5 }',
        [(10, 4096)],
        [(10, 4096)],
        [],
    ),
    "PReLU per channel": ('type: "PReLU"', [(2, 3, 4, 5)], [(2, 3, 4, 5)], [(3,)]),
    "PReLU channel_shared": (
        'type: "PReLU" prelu_param { channel_shared: true }',
        [(2, 3, 4, 5)],
        [(2, 3, 4, 5)],
        [()],
    ),
    "PReLU on (N, C)": ('type: "PReLU"', [(2, 7)], [(2, 7)], [(7,)]),
    "MVN keeps 4-D": ('type: "MVN"', [(2, 3, 4, 5)], [(2, 3, 4, 5)], []),
    "MVN makes (N, C) 4-D": ('type: "MVN"', [(2, 3)], [(2, 3, 1, 1)], []),
    "Softmax axis 2": ('type: "Softmax" softmax_param { axis: 2 }', [(2, 3, 4)], [(2, 3, 4)], []),
    "BatchNorm": ('type: "BatchNorm"', [(2, 3, 4, 5)], [(2, 3, 4, 5)], [(3,), (3,), (1,)]),
    "BatchNorm on (N, C)": ('type: "BatchNorm"', [(8, 10)], [(8, 10)], [(10,), (10,), (1,)]),
    # --- learnable ---
    "InnerProduct (Caffe TestSetUp)": (
        'type: "InnerProduct" inner_product_param { num_output: 10 }',
        [(2, 3, 4, 5)],
        [(2, 10)],
        [(10, 60), (10,)],
    ),
    "InnerProduct transpose (Caffe TestSetUpTransposeTrue)": (
        'type: "InnerProduct" inner_product_param { num_output: 10 transpose: true }',
        [(2, 3, 4, 5)],
        [(2, 10)],
        [(60, 10), (10,)],
    ),
    "InnerProduct axis 2": (
        'type: "InnerProduct" inner_product_param { num_output: 10 axis: 2 bias_term: false }',
        [(2, 3, 4, 5)],
        [(2, 3, 10)],
        [(10, 20)],
    ),
    "InnerProduct CaffeNet fc6": (
        'type: "InnerProduct" inner_product_param { num_output: 4096 }',
        [(10, 256, 6, 6)],
        [(10, 4096)],
        [(4096, 9216), (4096,)],
    ),
    "Embed": (
        'type: "Embed" embed_param { num_output: 10 input_dim: 5 }',
        [(4, 1)],
        [(4, 1, 10)],
        [(5, 10), (10,)],
    ),
    "Embed without bias": (
        'type: "Embed" embed_param { num_output: 3 input_dim: 100 bias_term: false }',
        [(7,)],
        [(7, 3)],
        [(100, 3)],
    ),
    "Scale per channel": ('type: "Scale"', [(2, 3, 4, 5)], [(2, 3, 4, 5)], [(3,)]),
    "Scale with bias": (
        'type: "Scale" scale_param { bias_term: true }',
        [(2, 3, 4, 5)],
        [(2, 3, 4, 5)],
        [(3,), (3,)],
    ),
    "Scale axis 0 num_axes -1 (eltwise)": (
        'type: "Scale" scale_param { axis: 0 num_axes: -1 }',
        [(2, 3, 4, 5)],
        [(2, 3, 4, 5)],
        [(2, 3, 4, 5)],
    ),
    "Scale axis 1 num_axes 2": (
        'type: "Scale" scale_param { num_axes: 2 }',
        [(2, 3, 4, 5)],
        [(2, 3, 4, 5)],
        [(3, 4)],
    ),
    "Scale num_axes 0 (scalar)": (
        'type: "Scale" scale_param { num_axes: 0 }',
        [(2, 3, 4, 5)],
        [(2, 3, 4, 5)],
        [()],
    ),
    "Scale axis -1": (
        'type: "Scale" scale_param { axis: -1 }',
        [(2, 3, 4, 5)],
        [(2, 3, 4, 5)],
        [(5,)],
    ),
    "Scale two bottoms": ('type: "Scale"', [(2, 3, 4, 5), (3, 4)], [(2, 3, 4, 5)], []),
    "Scale two bottoms with bias": (
        'type: "Scale" scale_param { bias_term: true }',
        [(2, 3, 4, 5), (3, 4)],
        [(2, 3, 4, 5)],
        [(3, 4)],
    ),
    "Scale by a scalar bottom": (
        'type: "Scale" scale_param { axis: 2 }',
        [(2, 3, 4, 5), ()],
        [(2, 3, 4, 5)],
        [],
    ),
    "Scale two bottoms axis 0": (
        'type: "Scale" scale_param { axis: 0 }',
        [(2, 3, 4, 5), (2, 3)],
        [(2, 3, 4, 5)],
        [],
    ),
    "Bias per channel": ('type: "Bias"', [(2, 3, 4, 5)], [(2, 3, 4, 5)], [(3,)]),
    "Bias axis 2 num_axes 2": (
        'type: "Bias" bias_param { axis: 2 num_axes: 2 }',
        [(2, 3, 4, 5)],
        [(2, 3, 4, 5)],
        [(4, 5)],
    ),
    "Bias two bottoms": ('type: "Bias"', [(2, 3, 4, 5), (3,)], [(2, 3, 4, 5)], []),
    "Parameter": (
        'type: "Parameter" parameter_param { shape { dim: 10 dim: 3 } }',
        [],
        [(10, 3)],
        [(10, 3)],
    ),
    # --- routing ---
    "Concat channels": ('type: "Concat"', [(2, 3, 6, 5), (2, 5, 6, 5)], [(2, 8, 6, 5)], []),
    "Concat axis 0": (
        'type: "Concat" concat_param { axis: 0 }',
        [(2, 3, 6, 5), (5, 3, 6, 5)],
        [(7, 3, 6, 5)],
        [],
    ),
    "Concat axis -1": (
        'type: "Concat" concat_param { axis: -1 }',
        [(2, 3), (2, 4), (2, 1)],
        [(2, 8)],
        [],
    ),
    "Concat legacy concat_dim 0": (
        'type: "Concat" concat_param { concat_dim: 0 }',
        [(2, 3, 6, 5), (5, 3, 6, 5)],
        [(7, 3, 6, 5)],
        [],
    ),
    "Concat single bottom": ('type: "Concat"', [(2, 3)], [(2, 3)], []),
    "Slice at points": (
        'type: "Slice" top: "a" top: "b" top: "c" slice_param { slice_point: 1 slice_point: 4 }',
        [(6, 12, 2, 3)],
        [(6, 1, 2, 3), (6, 3, 2, 3), (6, 8, 2, 3)],
        [],
    ),
    "Slice equally along axis 0": (
        'type: "Slice" top: "a" top: "b" top: "c" slice_param { axis: 0 }',
        [(6, 12, 2, 3)],
        [(2, 12, 2, 3)] * 3,
        [],
    ),
    "Slice legacy slice_dim": (
        'type: "Slice" top: "a" top: "b" slice_param { slice_dim: 1 slice_point: 3 }',
        [(6, 12)],
        [(6, 3), (6, 9)],
        [],
    ),
    "Slice siamese pair": (
        'type: "Slice" top: "a" top: "b" slice_param { slice_dim: 1 slice_point: 1 }',
        [(64, 2, 28, 28)],
        [(64, 1, 28, 28), (64, 1, 28, 28)],
        [],
    ),
    "Split": ('type: "Split" top: "a" top: "b" top: "c"', [(2, 3)], [(2, 3)] * 3, []),
    "Flatten (Caffe TestSetup)": ('type: "Flatten"', [(2, 3, 6, 5)], [(2, 90)], []),
    "Flatten axis 2": (
        'type: "Flatten" flatten_param { axis: 2 }',
        [(2, 3, 6, 5)],
        [(2, 3, 30)],
        [],
    ),
    "Flatten end_axis -2": (
        'type: "Flatten" flatten_param { end_axis: -2 }',
        [(2, 3, 6, 5)],
        [(2, 18, 5)],
        [],
    ),
    "Flatten end_axis before axis inserts 1": (
        'type: "Flatten" flatten_param { axis: 2 end_axis: 1 }',
        [(2, 3, 6, 5)],
        [(2, 3, 1, 6, 5)],
        [],
    ),
    "Reshape 0 and -1": (
        'type: "Reshape" reshape_param { shape { dim: 0 dim: -1 dim: 4 } }',
        [(2, 8)],
        [(2, 2, 4)],
        [],
    ),
    "Reshape explicit (Caffe TestFlattenValues)": (
        'type: "Reshape" reshape_param { shape { dim: 6 dim: 2 dim: 3 dim: 5 } }',
        [(2, 3, 6, 5)],
        [(6, 2, 3, 5)],
        [],
    ),
    "Reshape flatten by 0, -1": (
        'type: "Reshape" reshape_param { shape { dim: 0 dim: -1 } }',
        [(2, 3, 6, 5)],
        [(2, 90)],
        [],
    ),
    "Reshape insert singleton axis": (
        'type: "Reshape" reshape_param { axis: 1 num_axes: 0 shape { dim: 1 } }',
        [(2, 3, 6, 5)],
        [(2, 1, 3, 6, 5)],
        [],
    ),
    "Reshape negative axis appends": (
        'type: "Reshape" reshape_param { axis: -1 num_axes: 0 shape { dim: 1 } }',
        [(2, 3, 6, 5)],
        [(2, 3, 6, 5, 1)],
        [],
    ),
    "Reshape infer with start axis": (
        'type: "Reshape" reshape_param { axis: 1 shape { dim: 3 dim: 2 dim: -1 } }',
        [(2, 3, 6, 5)],
        [(2, 3, 2, 15)],
        [],
    ),
    "Reshape middle axes": (
        'type: "Reshape" reshape_param { axis: 1 num_axes: 2 shape { dim: -1 } }',
        [(2, 3, 6, 5)],
        [(2, 18, 5)],
        [],
    ),
    "Tile": ('type: "Tile" tile_param { tiles: 3 }', [(2, 3, 4, 5)], [(2, 9, 4, 5)], []),
    "Tile axis -1": (
        'type: "Tile" tile_param { axis: -1 tiles: 2 }',
        [(2, 3, 4, 5)],
        [(2, 3, 4, 10)],
        [],
    ),
    "Reduction to a scalar": ('type: "Reduction"', [(2, 3, 4, 5)], [()], []),
    "Reduction axis 2": (
        'type: "Reduction" reduction_param { axis: 2 operation: MEAN }',
        [(2, 3, 4, 5)],
        [(2, 3)],
        [],
    ),
    "Reduction axis -1": (
        'type: "Reduction" reduction_param { axis: -1 }',
        [(2, 3, 4, 5)],
        [(2, 3, 4)],
        [],
    ),
    "Eltwise SUM with coeffs": (
        'type: "Eltwise" eltwise_param { coeff: 1 coeff: -0.5 coeff: 2 }',
        [(2, 3, 4, 5)] * 3,
        [(2, 3, 4, 5)],
        [],
    ),
    "Eltwise MAX": ('type: "Eltwise" eltwise_param { operation: MAX }', [(2, 3)] * 2, [(2, 3)], []),
    "ArgMax per sample": ('type: "ArgMax"', [(10, 20)], [(10, 1, 1)], []),
    "ArgMax out_max_val top_k": (
        'type: "ArgMax" argmax_param { out_max_val: true top_k: 4 }',
        [(10, 20)],
        [(10, 2, 4)],
        [],
    ),
    "ArgMax 4-D keeps 4 axes": (
        'type: "ArgMax" argmax_param { top_k: 3 }',
        [(2, 3, 4, 5)],
        [(2, 1, 3, 1)],
        [],
    ),
    "ArgMax axis 1": (
        'type: "ArgMax" argmax_param { axis: 1 top_k: 2 }',
        [(2, 3, 4, 5)],
        [(2, 2, 4, 5)],
        [],
    ),
    "ArgMax axis -1 out_max_val": (
        'type: "ArgMax" argmax_param { axis: -1 out_max_val: true }',
        [(2, 3, 4, 5)],
        [(2, 3, 4, 1)],
        [],
    ),
    "BatchReindex": ('type: "BatchReindex"', [(5, 4, 3, 2), (6,)], [(6, 4, 3, 2)], []),
    "Filter keeps full N first": (
        'type: "Filter" top: "a" top: "b"',
        [(4, 3, 6, 4), (4,), (4, 1)],
        [(4, 3, 6, 4), (4,)],
        [],
    ),
    "Silence": ('type: "Silence"', [(2, 3), (4,)], [], []),
    # --- losses and accuracy ---
    "SoftmaxWithLoss": ('type: "SoftmaxWithLoss"', [(10, 5), (10,)], [()], []),
    "SoftmaxWithLoss with prob top": (
        'type: "SoftmaxWithLoss" top: "loss" top: "prob"',
        [(10, 5), (10,)],
        [(), (10, 5)],
        [],
    ),
    "SoftmaxWithLoss spatial": ('type: "SoftmaxWithLoss"', [(2, 5, 3, 4), (2, 1, 3, 4)], [()], []),
    "SoftmaxWithLoss axis 2": (
        'type: "SoftmaxWithLoss" softmax_param { axis: 2 }',
        [(2, 3, 5), (2, 3)],
        [()],
        [],
    ),
    "SigmoidCrossEntropyLoss": ('type: "SigmoidCrossEntropyLoss"', [(10, 5), (10, 5)], [()], []),
    "EuclideanLoss": ('type: "EuclideanLoss"', [(10, 5, 1, 1), (10, 5)], [()], []),
    "HingeLoss": ('type: "HingeLoss" hinge_loss_param { norm: L2 }', [(10, 5), (10,)], [()], []),
    "InfogainLoss with H bottom and prob": (
        'type: "InfogainLoss" top: "loss" top: "prob"',
        [(10, 5), (10,), (5, 5)],
        [(), (10, 5)],
        [],
    ),
    "InfogainLoss with H file": (
        'type: "InfogainLoss" infogain_loss_param { source: "H.binaryproto" }',
        [(10, 5), (10, 1)],
        [()],
        [],
    ),
    "MultinomialLogisticLoss": (
        'type: "MultinomialLogisticLoss"',
        [(10, 5), (10, 1, 1, 1)],
        [()],
        [],
    ),
    "ContrastiveLoss": ('type: "ContrastiveLoss"', [(10, 2), (10, 2, 1, 1), (10,)], [()], []),
    "Accuracy": ('type: "Accuracy"', [(10, 5), (10,)], [()], []),
    "Accuracy per class": (
        'type: "Accuracy" top: "acc" top: "per_class"',
        [(10, 5), (10,)],
        [(), (5,)],
        [],
    ),
    "Accuracy spatial top_k": (
        'type: "Accuracy" top: "acc" top: "per_class" accuracy_param { top_k: 3 }',
        [(2, 5, 3, 4), (2, 3, 4)],
        [(), (5,)],
        [],
    ),
    # --- recurrent (test_rnn_layer.cpp / test_lstm_layer.cpp shapes) ---
    "RNN": (
        'type: "RNN" top: "o" recurrent_param { num_output: 7 }',
        [(5, 2, 3, 4), (5, 2)],
        [(5, 2, 7)],
        [(7, 12), (7,), (7, 7), (7, 7), (7,)],
    ),
    "RNN static input": (
        'type: "RNN" top: "o" recurrent_param { num_output: 7 }',
        [(5, 2, 3, 4), (5, 2), (2, 6)],
        [(5, 2, 7)],
        [(7, 12), (7,), (7, 6), (7, 7), (7, 7), (7,)],
    ),
    "RNN expose_hidden": (
        'type: "RNN" top: "o" top: "h_T" recurrent_param { num_output: 7 expose_hidden: true }',
        [(5, 2, 3), (5, 2), (1, 2, 7)],
        [(5, 2, 7), (1, 2, 7)],
        [(7, 3), (7,), (7, 7), (7, 7), (7,)],
    ),
    "LSTM": (
        'type: "LSTM" top: "h" recurrent_param { num_output: 7 }',
        [(5, 2, 3, 4), (5, 2)],
        [(5, 2, 7)],
        [(28, 12), (28,), (28, 7)],
    ),
    "LSTM static input and expose_hidden": (
        'type: "LSTM" top: "h" top: "h_T" top: "c_T" recurrent_param { num_output: 7 expose_hidden: true }',
        [(5, 2, 3), (5, 2), (2, 4, 2), (1, 2, 7), (1, 2, 7)],
        [(5, 2, 7), (1, 2, 7), (1, 2, 7)],
        [(28, 3), (28,), (28, 8), (28, 7)],
    ),
    "LSTMUnit": ('type: "LSTMUnit"', [(1, 2, 7), (1, 2, 28), (1, 2)], [(1, 2, 7), (1, 2, 7)], []),
    # --- sources without files ---
    "Input one shape for all tops": (
        'type: "Input" top: "a" top: "b" input_param { shape { dim: 10 dim: 3 dim: 227 dim: 227 } }',
        [],
        [(10, 3, 227, 227)] * 2,
        [],
    ),
    "Input one shape per top": (
        'type: "Input" top: "a" top: "b" input_param { shape { dim: 1 dim: 3 } shape { dim: 1 } }',
        [],
        [(1, 3), (1,)],
        [],
    ),
    "DummyData shape": (
        'type: "DummyData" top: "a" dummy_data_param { shape { dim: 10 dim: 3 dim: 2 } }',
        [],
        [(10, 3, 2)],
        [],
    ),
    "DummyData legacy dims, once and per top": (
        'type: "DummyData" top: "a" top: "b" dummy_data_param { num: 5 channels: 3 channels: 1 '
        "height: 4 "
        "width: 2 width: 1 }",
        [],
        [(5, 3, 4, 2), (5, 1, 4, 1)],
        [],
    ),
    "MemoryData": (
        'type: "MemoryData" top: "data" top: "label" memory_data_param { batch_size: 4 '
        "channels: 3 height: 5 width: 6 }",
        [],
        [(4, 3, 5, 6), (4,)],
        [],
    ),
    "HDF5Output": (
        'type: "HDF5Output" hdf5_output_param { file_name: "out.h5" }',
        [(4, 3), (4,)],
        [],
        [],
    ),
}


@pytest.mark.parametrize(("text", "bottoms", "tops", "blobs"), CASES.values(), ids=CASES.keys())
def test_shapes_match_caffe(text: str, bottoms: list[Shape], tops: list[Shape], blobs: list[Shape]) -> None:
    assert tops_of(text, *bottoms) == tops
    assert blobs_of(text, *bottoms) == blobs


def test_caffenet_chain() -> None:
    """227 → conv1 55 → pool1 27 → conv2 27 → pool2 13 → conv3-5 13 → pool5 6 → fc6 input 9216."""
    shape: Shape = (10, 3, 227, 227)
    chain = [
        'type: "Convolution" top: "t" convolution_param { num_output: 96 kernel_size: 11 stride: 4 }',
        'type: "Pooling" top: "t" pooling_param { kernel_size: 3 stride: 2 }',
        'type: "Convolution" top: "t" convolution_param { num_output: 256 pad: 2 kernel_size: 5 group: 2 }',
        'type: "Pooling" top: "t" pooling_param { kernel_size: 3 stride: 2 }',
        'type: "Convolution" top: "t" convolution_param { num_output: 384 pad: 1 kernel_size: 3 }',
        'type: "Convolution" top: "t" convolution_param { num_output: 384 pad: 1 kernel_size: 3 group: 2 }',
        'type: "Convolution" top: "t" convolution_param { num_output: 256 pad: 1 kernel_size: 3 group: 2 }',
        'type: "Pooling" top: "t" pooling_param { kernel_size: 3 stride: 2 }',
    ]
    sizes = []
    for text in chain:
        (shape,) = tops_of(text, shape)
        sizes.append(shape[2])
    assert sizes == [55, 27, 27, 13, 13, 13, 13, 6]
    assert shape[1] * shape[2] * shape[3] == 9216


def test_lenet_and_cifar_quick_chains() -> None:
    """LeNet 28 → 24 → 12 → 8 → 4 (ip1 input 800); CIFAR10-quick ip1 input 1024."""
    (shape,) = tops_of(
        'type: "Convolution" top: "t" convolution_param { num_output: 20 kernel_size: 5 }',
        (64, 1, 28, 28),
    )
    (shape,) = tops_of('type: "Pooling" top: "t" pooling_param { kernel_size: 2 stride: 2 }', shape)
    (shape,) = tops_of('type: "Convolution" top: "t" convolution_param { num_output: 50 kernel_size: 5 }', shape)
    (shape,) = tops_of('type: "Pooling" top: "t" pooling_param { kernel_size: 2 stride: 2 }', shape)
    assert shape == (64, 50, 4, 4)
    assert blobs_of('type: "InnerProduct" inner_product_param { num_output: 500 }', shape)[0] == (
        500,
        800,
    )

    shape = (1, 3, 32, 32)
    for outputs, pool in ((32, "MAX"), (32, "AVE"), (64, "AVE")):
        conv = f'type: "Convolution" top: "t" convolution_param {{ num_output: {outputs} pad: 2 kernel_size: 5 }}'
        (shape,) = tops_of(conv, shape)
        (shape,) = tops_of(
            f'type: "Pooling" top: "t" pooling_param {{ pool: {pool} kernel_size: 3 stride: 2 }}',
            shape,
        )
    assert shape == (1, 64, 4, 4)
    assert blobs_of('type: "InnerProduct" inner_product_param { num_output: 64 }', shape)[0] == (
        64,
        1024,
    )
