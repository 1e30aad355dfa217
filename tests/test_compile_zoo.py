"""Every net of Caffe's zoo compiles in every phase it defines, data layers included (they
become model inputs), and the small ones run a forward pass with their losses."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from netdef import load_net
from netdef.keras.compiler import compile_net, forward

from .test_caffe_zoo import DATA_SHAPES, NETS, PYTHON_NETS

SMALL = {
    "examples/mnist/lenet_train_test.prototxt",
    "examples/mnist/mnist_autoencoder.prototxt",
    "examples/siamese/mnist_siamese_train_test.prototxt",
    "examples/cifar10/cifar10_quick_train_test.prototxt",
    "examples/cifar10/cifar10_full_sigmoid_train_test_bn.prototxt",
    "examples/hdf5_classification/nonlinear_train_val.prototxt",
}


@pytest.mark.parametrize("relative", sorted(set(NETS) - PYTHON_NETS))
def test_zoo_net_compiles_in_train_and_test(caffe_zoo: Path, relative: str) -> None:
    for phase in ("TRAIN", "TEST"):
        net = load_net(
            caffe_zoo / relative,
            phase=phase,
            stages=["test-on-test"] if "autoencoder" in relative else (),
            data_shapes=DATA_SHAPES.get(relative),
        )
        compiled = compile_net(net)
        if relative not in SMALL:
            continue
        # Zero inputs make every label 0, a valid class for every loss.
        feeds = [np.zeros(value.shape, np.float32) for value in net.feeds]
        outputs = forward(compiled, feeds)
        assert all(np.isfinite(np.asarray(output)).all() for output in outputs), relative


def test_split_and_silence_compile_to_nothing(tmp_path: Path) -> None:
    import netdef

    text = (
        'layer { name: "in" type: "Input" top: "x" input_param { shape { dim: 2 dim: 3 } } }\n'
        'layer { name: "split" type: "Split" bottom: "x" top: "a" top: "b" }\n'
        'layer { name: "sum" type: "Eltwise" bottom: "a" bottom: "b" top: "y" }\n'
        'layer { name: "quiet" type: "Silence" bottom: "a" }\n'
    )
    model = netdef.to_keras(text)
    assert [type(layer).__name__ for layer in model.layers] == ["InputLayer", "Add"]
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    np.testing.assert_array_equal(model(x), 2 * x)
