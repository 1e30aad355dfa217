"""ResNet-50 as a Caffe deploy prototxt, written out by code.

He et al.'s published Caffe definition has 2,000+ lines of repeated blocks; generating the
same structure (BatchNorm + Scale after every convolution, bias-free convolutions,
projection shortcuts at the first block of each stage) gives a net of the same size and
layer mix for benchmarks and tests without shipping the file twice.
"""

from __future__ import annotations

STAGES = ((2, "abc", 64), (3, "abcd", 128), (4, "abcdef", 256), (5, "abc", 512))


def _conv_bn(lines: list[str], name: str, bottom: str, outputs: int, kernel: int, stride: int, pad: int) -> None:
    # He et al.'s naming: res2a_branch1 -> bn2a_branch1 / scale2a_branch1, conv1 -> bn_conv1.
    suffix = name[3:] if name.startswith("res") else f"_{name}"
    lines.append(
        f'layer {{ name: "{name}" type: "Convolution" bottom: "{bottom}" top: "{name}"\n'
        f"  convolution_param {{ num_output: {outputs} kernel_size: {kernel} stride: {stride} pad: {pad}"
        " bias_term: false } }"
    )
    lines.append(
        f'layer {{ name: "bn{suffix}" type: "BatchNorm" bottom: "{name}" top: "{name}"\n'
        "  batch_norm_param { use_global_stats: true } }"
    )
    lines.append(
        f'layer {{ name: "scale{suffix}" type: "Scale" bottom: "{name}" top: "{name}"\n'
        "  scale_param { bias_term: true } }"
    )


def _relu(lines: list[str], name: str, blob: str) -> None:
    lines.append(f'layer {{ name: "{name}" type: "ReLU" bottom: "{blob}" top: "{blob}" }}')


def resnet50_deploy(batch: int = 1) -> str:
    lines = [
        'name: "ResNet-50"',
        'layer { name: "data" type: "Input" top: "data"\n'
        f"  input_param {{ shape {{ dim: {batch} dim: 3 dim: 224 dim: 224 }} }} }}",
    ]
    _conv_bn(lines, "conv1", "data", 64, 7, 2, 3)
    _relu(lines, "conv1_relu", "conv1")
    lines.append(
        'layer { name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1"\n'
        "  pooling_param { pool: MAX kernel_size: 3 stride: 2 } }"
    )
    bottom = "pool1"
    for stage, blocks, width in STAGES:
        for index, block in enumerate(blocks):
            name = f"res{stage}{block}"
            stride = 2 if index == 0 and stage > 2 else 1
            if index == 0:
                _conv_bn(lines, f"{name}_branch1", bottom, 4 * width, 1, stride, 0)
                shortcut = f"{name}_branch1"
            else:
                shortcut = bottom
            _conv_bn(lines, f"{name}_branch2a", bottom, width, 1, stride, 0)
            _relu(lines, f"{name}_branch2a_relu", f"{name}_branch2a")
            _conv_bn(lines, f"{name}_branch2b", f"{name}_branch2a", width, 3, 1, 1)
            _relu(lines, f"{name}_branch2b_relu", f"{name}_branch2b")
            _conv_bn(lines, f"{name}_branch2c", f"{name}_branch2b", 4 * width, 1, 1, 0)
            lines.append(
                f'layer {{ name: "{name}" type: "Eltwise" bottom: "{shortcut}" bottom: "{name}_branch2c"'
                f' top: "{name}" }}'
            )
            _relu(lines, f"{name}_relu", name)
            bottom = name
    lines.append(
        f'layer {{ name: "pool5" type: "Pooling" bottom: "{bottom}" top: "pool5"\n'
        "  pooling_param { pool: AVE kernel_size: 7 stride: 1 } }"
    )
    lines.append(
        'layer { name: "fc1000" type: "InnerProduct" bottom: "pool5" top: "fc1000"\n'
        "  inner_product_param { num_output: 1000 } }"
    )
    lines.append('layer { name: "prob" type: "Softmax" bottom: "fc1000" top: "prob" }')
    return "\n".join(lines) + "\n"
