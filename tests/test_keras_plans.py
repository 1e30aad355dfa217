"""What the compiler builds: the Keras layers chosen for Caffe layers (performance-relevant
choices that parity tests alone would not pin down)."""

from __future__ import annotations

import pytest

from netdef import load_net
from netdef.keras.compiler import compile_net

INPUT = 'layer {{ name: "in" type: "Input" top: "in" input_param {{ shape {{ dim: 2 dim: 3 dim: {h} dim: {w} }} }} }}\n'


def layer_classes(body: str, h: int = 8, w: int = 8) -> list[str]:
    net = load_net(INPUT.format(h=h, w=w) + f'layer {{ name: "l" bottom: "in" top: "l" {body} }}\n')
    return [type(layer).__name__ for layer in compile_net(net, layout="channels_last").model.layers[1:]]


@pytest.mark.parametrize(
    ("body", "size", "expected"),
    [
        ('type: "Pooling" pooling_param { kernel_size: 2 stride: 2 }', 8, ["MaxPooling2D"]),
        ('type: "Pooling" pooling_param { kernel_size: 3 stride: 2 }', 8, ["MaxPooling2D"]),
        ('type: "Pooling" pooling_param { kernel_size: 3 stride: 2 }', 9, ["MaxPooling2D"]),
        ('type: "Pooling" pooling_param { kernel_size: 3 stride: 3 }', 7, ["CaffePooling"]),
        ('type: "Pooling" pooling_param { pool: AVE kernel_size: 3 stride: 2 }', 8, ["CaffePooling"]),
        ('type: "Pooling" pooling_param { kernel_size: 3 stride: 2 pad: 1 }', 8, ["CaffePooling"]),
        ('type: "Convolution" convolution_param { num_output: 4 kernel_size: 3 pad: 1 }', 8, ["Conv2D"]),
        (
            'type: "Convolution" convolution_param { num_output: 4 kernel_size: 3 stride: 2 pad: 1 }',
            8,
            ["ZeroPadding2D", "Conv2D"],
        ),
        ('type: "Convolution" convolution_param { num_output: 3 kernel_size: 3 group: 3 }', 8, ["DepthwiseConv2D"]),
        ('type: "InnerProduct" inner_product_param { num_output: 4 }', 8, ["Flatten", "Dense"]),
    ],
)
def test_keras_layers_chosen(body: str, size: int, expected: list[str]) -> None:
    assert layer_classes(body, size, size) == expected


def test_caffe_layout_adds_one_permute_at_each_boundary() -> None:
    conv = 'type: "Convolution" convolution_param { num_output: 4 kernel_size: 3 }'
    net = load_net(INPUT.format(h=8, w=8) + f'layer {{ name: "c" bottom: "in" top: "c" {conv} }}')
    names = [layer.name for layer in compile_net(net).model.layers]
    assert names == ["in", "in_to_channels_last", "c", "c_to_caffe"]
