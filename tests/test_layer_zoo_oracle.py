"""Zoo nets walked layer by layer with the declarations, checked against OpenCV's dnn.

OpenCV's Caffe importer is an independent implementation of Caffe's shape rules (its
own pooling rounding, its own LRN and concat). It needs weights to size convolutions,
so the test writes a .caffemodel of zeros with the blob shapes the declarations give:
a wrong blob shape makes OpenCV refuse the model or disagree about the tops.
"""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np
import pytest
from google.protobuf import text_format

from netdef.layers.registry import LayerContext, Shape, lookup
from netdef.proto import netdef_pb2 as pb


def walk(net: pb.NetParameter) -> tuple[dict[str, list[Shape]], dict[str, list[Shape]]]:
    """Top shapes and blob shapes per layer, for a deploy net (no phase rules, no sources)."""
    blobs: dict[str, Shape] = {}
    tops: dict[str, list[Shape]] = {}
    params: dict[str, list[Shape]] = {}
    for layer in net.layer:
        spec = lookup(layer.type)
        assert spec is not None, layer.type
        ctx = LayerContext(layer=layer, bottoms=[blobs[name] for name in layer.bottom])
        tops[layer.name] = spec.shape(ctx)
        params[layer.name] = spec.blobs(ctx)
        blobs.update(zip(layer.top, tops[layer.name], strict=True))
    return tops, params


def zero_weights(net: pb.NetParameter, params: dict[str, list[Shape]]) -> bytes:
    model = pb.NetParameter(name=net.name)
    for layer in net.layer:
        if not params[layer.name]:
            continue
        stored = model.layer.add(name=layer.name, type=layer.type)
        for shape in params[layer.name]:
            blob = stored.blobs.add()
            blob.shape.dim.extend(shape)
            blob.data.extend(np.zeros(math.prod(shape), np.float32))
    return model.SerializeToString()


@pytest.mark.parametrize(
    ("relative", "total_params"),
    [
        # GoogLeNet's well-known parameter count (deploy net, without the auxiliary heads).
        ("models/bvlc_googlenet/deploy.prototxt", 6_998_552),
        ("examples/cifar10/cifar10_full.prototxt", 89_578),
        ("examples/mnist/lenet.prototxt", 431_080),
    ],
)
def test_zoo_net_shapes_agree_with_opencv(caffe_zoo: Path, tmp_path: Path, relative: str, total_params: int) -> None:
    prototxt = caffe_zoo / relative
    net = text_format.Parse(prototxt.read_text(), pb.NetParameter())
    tops, params = walk(net)
    assert sum(math.prod(s) for shapes in params.values() for s in shapes) == total_params

    weights = tmp_path / "zeros.caffemodel"
    weights.write_bytes(zero_weights(net, params))
    oracle = cv2.dnn.readNetFromCaffe(str(prototxt), str(weights))
    (input_shape,) = tops[net.layer[0].name]
    ids, _, outputs = oracle.getLayersShapes(input_shape)
    opencv = {
        oracle.getLayerNames()[i - 1]: [tuple(s) for s in out]
        for i, out in zip(ids.flatten(), outputs, strict=True)
        if i > 0
    }
    assert set(opencv) == {layer.name for layer in net.layer[1:]}
    for name, shapes in opencv.items():
        assert shapes == tops[name], name


@pytest.mark.parametrize(
    "relative",
    [
        "models/bvlc_reference_caffenet/deploy.prototxt",
        "models/bvlc_alexnet/deploy.prototxt",
    ],
)
def test_caffenet_and_alexnet_parameter_count(caffe_zoo: Path, relative: str) -> None:
    """The 60,965,224 learnable values everyone quotes for AlexNet-style nets."""
    net = text_format.Parse((caffe_zoo / relative).read_text(), pb.NetParameter())
    tops, params = walk(net)
    assert sum(math.prod(s) for shapes in params.values() for s in shapes) == 60_965_224
    assert tops["pool5"] == [(10, 256, 6, 6)]
    assert tops["prob"] == [(10, 1000)]
