"""Every deploy net of Caffe's zoo, with random weights, gives OpenCV's numbers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from netdef import load_net
from netdef.keras import layout as lay

from .parity import assert_close, netdef_forward, opencv_forward, write_random_caffemodel

DEPLOY = [
    "examples/mnist/lenet.prototxt",
    "examples/cifar10/cifar10_quick.prototxt",
    "examples/cifar10/cifar10_full.prototxt",
    "examples/siamese/mnist_siamese.prototxt",
    "examples/net_surgery/conv.prototxt",
    "examples/net_surgery/bvlc_caffenet_full_conv.prototxt",
    "models/bvlc_alexnet/deploy.prototxt",
    "models/bvlc_reference_caffenet/deploy.prototxt",
    "models/bvlc_reference_rcnn_ilsvrc13/deploy.prototxt",
    "models/finetune_flickr_style/deploy.prototxt",
    "models/bvlc_googlenet/deploy.prototxt",
]


def random_inputs(net, batch: int = 2, seed: int = 1) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {v.blob: rng.standard_normal((batch, *v.shape[1:])).astype(np.float32) for v in net.feeds}


@pytest.mark.parametrize("relative", DEPLOY)
def test_deploy_net_matches_opencv(caffe_zoo: Path, tmp_path: Path, relative: str) -> None:
    prototxt = caffe_zoo / relative
    net = load_net(prototxt)
    weights = write_random_caffemodel(net, tmp_path / "random.caffemodel")
    inputs = random_inputs(net, batch=1 if "full_conv" in relative else 2)
    outputs = [value.blob for value in net.outputs]
    layers = [value.producer.name for value in net.outputs]
    expected = opencv_forward(prototxt, weights, inputs, layers)
    actual = netdef_forward(net, weights, inputs, outputs)
    for name, a, e in zip(outputs, actual, expected, strict=True):
        assert_close(a, e.reshape(a.shape), f"{relative}:{name}")


OWN_ZOO = sorted((Path(__file__).resolve().parent.parent / "zoo").glob("*/deploy.prototxt"))

#: Own zoo nets OpenCV cannot run, and why; tests/test_zoo.py and tests/test_pooling_nd.py check them against numpy.
OPENCV_CANNOT = {
    "c3d": "OpenCV's Caffe importer pools 5-D blobs over H and W only (Caffe's PoolingParameter is 2-D) "
    "and knows nothing of netdef's kernel_nd/stride_nd/pad_nd pooling fields",
}
#: Smaller inputs for the nets whose random .caffemodel takes longest to write and read at their own
#: size: every layer still runs, only fc6's fan-in shrinks (fc6 holds 103 M of VGG-16's 138 M parameters
#: and 38 M of CaffeNet's and AlexNet's 61 M). tests/test_zoo.py runs them at full size, and
#: test_deploy_net_matches_opencv above checks Caffe's own CaffeNet and AlexNet at full size.
OWN_ZOO_SHAPES = {
    "vgg16": {"data": (2, 3, 64, 64)},
    "caffenet": {"data": (2, 3, 99, 99)},
    "alexnet": {"data": (2, 3, 99, 99)},
}


@pytest.mark.parametrize(
    "prototxt", [p for p in OWN_ZOO if p.parent.name not in OPENCV_CANNOT], ids=lambda p: p.parent.name
)
def test_own_zoo_deploy_net_matches_opencv(tmp_path: Path, prototxt: Path) -> None:
    net = load_net(prototxt, data_shapes=OWN_ZOO_SHAPES.get(prototxt.parent.name))
    weights = write_random_caffemodel(net, tmp_path / "random.caffemodel")
    inputs = random_inputs(net)
    outputs = [value.blob for value in net.outputs]
    expected = opencv_forward(prototxt, weights, inputs, [value.producer.name for value in net.outputs])
    for name, a, e in zip(outputs, netdef_forward(net, weights, inputs, outputs), expected, strict=True):
        assert_close(a, e.reshape(a.shape), f"{prototxt}:{name}")


def test_both_layouts_give_the_same_numbers(caffe_zoo: Path, tmp_path: Path) -> None:
    net = load_net(caffe_zoo / "models/bvlc_reference_caffenet/deploy.prototxt")
    weights = write_random_caffemodel(net, tmp_path / "random.caffemodel")
    inputs = random_inputs(net)
    blobs = ["pool5", "prob"]
    caffe = netdef_forward(net, weights, inputs, blobs)
    perm = lay.permutation(4, lay.CAFFE, lay.CHANNELS_LAST)
    native_inputs = {name: np.transpose(array, perm) for name, array in inputs.items()}
    native = netdef_forward(net, weights, native_inputs, blobs, layout=lay.CHANNELS_LAST)
    np.testing.assert_allclose(
        np.transpose(native[0], lay.permutation(4, lay.CHANNELS_LAST, lay.CAFFE)), caffe[0], rtol=1e-5, atol=1e-6
    )
    np.testing.assert_allclose(native[1], caffe[1], rtol=1e-5, atol=1e-7)
