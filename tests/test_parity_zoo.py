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


@pytest.mark.parametrize("prototxt", OWN_ZOO, ids=lambda p: p.parent.name)
def test_own_zoo_deploy_net_matches_opencv(tmp_path: Path, prototxt: Path) -> None:
    net = load_net(prototxt)
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
