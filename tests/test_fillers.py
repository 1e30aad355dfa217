"""Caffe's fillers against the formulas of filler.hpp and the expectations of test_filler.cpp,
and the initial weights of a compiled net against each layer's default fillers."""

from __future__ import annotations

import math

import numpy as np
import pytest

from netdef import load_net
from netdef.errors import NetDefinitionError
from netdef.fillers import fill, initial_blobs, initialize_weights
from netdef.proto import netdef_pb2 as pb

SHAPES = [(2, 3, 4, 5), (15,), (8, 3), (2, 3, 4, 5, 2)]  # test_filler.cpp's TestFill, 1D, 2D, 5D
NORMS = {
    "FAN_IN": pb.FillerParameter.FAN_IN,
    "FAN_OUT": pb.FillerParameter.FAN_OUT,
    "AVERAGE": pb.FillerParameter.AVERAGE,
}


def filler(**fields: object) -> pb.FillerParameter:
    return pb.FillerParameter(**fields)


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


@pytest.mark.parametrize("shape", SHAPES)
def test_constant_fills_the_value(shape: tuple[int, ...]) -> None:
    values = fill(filler(type="constant", value=10.0), shape, rng())
    assert values.dtype == np.float32 and values.shape == shape
    assert np.all(values == 10.0)


@pytest.mark.parametrize("shape", SHAPES)
def test_uniform_stays_within_min_and_max(shape: tuple[int, ...]) -> None:
    values = fill(filler(type="uniform", min=1.0, max=2.0), shape, rng())
    assert values.shape == shape and values.dtype == np.float32
    assert values.min() >= 1.0 and values.max() <= 2.0
    large = fill(filler(type="uniform", min=-3.0, max=5.0), (200_000,), rng(1))
    assert large.mean() == pytest.approx(1.0, abs=0.03)
    assert large.std() == pytest.approx(8 / math.sqrt(12), rel=0.01)


def test_gaussian_has_the_mean_and_std() -> None:
    values = fill(filler(type="gaussian", mean=10.0, std=0.1), (1000, 200), rng())
    assert values.mean() == pytest.approx(10.0, abs=0.001)
    assert values.std() == pytest.approx(0.1, rel=0.01)


def test_sparse_gaussian_keeps_sparse_over_rows_of_the_values() -> None:
    """A value survives with probability sparse / shape[0] (filler.hpp divides by ``shape(0)``)."""
    values = fill(filler(type="gaussian", std=1.0, sparse=25), (100, 2000), rng())
    assert np.mean(values != 0) == pytest.approx(0.25, abs=0.005)
    dense = fill(filler(type="gaussian", std=1.0), (100, 20), rng())
    assert np.all(dense != 0)


@pytest.mark.parametrize("shape", SHAPES)
def test_positive_unitball_rows_sum_to_one(shape: tuple[int, ...]) -> None:
    values = fill(filler(type="positive_unitball"), shape, rng())
    rows = values.reshape(shape[0], -1)
    assert values.min() >= 0 and values.max() <= 1
    np.testing.assert_allclose(rows.sum(axis=1), 1.0, rtol=1e-5)


def caffe_fan(shape: tuple[int, ...], norm: str) -> float:
    """filler.hpp: fan_in = count / shape(0), fan_out = count / shape(1) (count for 1-D)."""
    count = math.prod(shape)
    fan_in = count // shape[0]
    fan_out = count // shape[1] if len(shape) > 1 else count
    return {"FAN_IN": fan_in, "FAN_OUT": fan_out, "AVERAGE": (fan_in + fan_out) / 2}[norm]


@pytest.mark.parametrize("norm", NORMS)
def test_xavier_is_uniform_within_sqrt_3_over_n(norm: str) -> None:
    shape = (1000, 2, 4, 5)  # test_filler.cpp: n = 40, 20000 or 10020
    n = caffe_fan(shape, norm)
    assert n == {"FAN_IN": 40, "FAN_OUT": 20000, "AVERAGE": 10020}[norm]
    bound = math.sqrt(3 / n)
    values = fill(filler(type="xavier", variance_norm=NORMS[norm]), shape, rng())
    assert np.abs(values).max() <= bound * (1 + 1e-6)
    assert np.abs(values).max() > 0.999 * bound  # the whole interval is used
    assert values.mean() == pytest.approx(0.0, abs=0.01 * bound)
    assert values.std() == pytest.approx(math.sqrt(1 / n), rel=0.01)  # a²/3 = 1/n


@pytest.mark.parametrize("norm", NORMS)
def test_msra_is_gaussian_with_std_sqrt_2_over_n(norm: str) -> None:
    shape = (1000, 2, 4, 5)
    n = caffe_fan(shape, norm)
    values = fill(filler(type="msra", variance_norm=NORMS[norm]), shape, rng())
    assert values.mean() == pytest.approx(0.0, abs=0.01 * math.sqrt(2 / n))
    assert values.std() == pytest.approx(math.sqrt(2 / n), rel=0.01)


def test_xavier_fans_of_a_1d_blob_and_an_inner_product_weight() -> None:
    """A 1-D blob's fan_out is its count; an InnerProduct weight (out, in) has fan_in = in."""
    one_d = fill(filler(type="xavier", variance_norm=pb.FillerParameter.FAN_OUT), (25,), rng())
    assert np.abs(one_d).max() <= math.sqrt(3 / 25)
    weight = fill(filler(type="xavier"), (10, 300), rng())
    assert np.abs(weight).max() <= math.sqrt(3 / 300) and np.abs(weight).max() > 0.95 * math.sqrt(3 / 300)


@pytest.mark.parametrize("size", [7, 6])
def test_bilinear_matches_caffes_kernel(size: int) -> None:
    """test_filler.cpp's BilinearFillerTest, element by element (there within 0.01; here exact)."""
    shape = (1000, 2, size, size)
    values = fill(filler(type="bilinear"), shape, rng())
    f = math.ceil(shape[3] / 2.0)
    c = (shape[3] - 1) / (2.0 * f)
    inner = values.reshape(2000, -1)
    for j in range(size * size):
        x, y = j % shape[3], (j // shape[3]) % shape[2]
        expected = (1 - abs(x / f - c)) * (1 - abs(y / f - c))
        np.testing.assert_allclose(inner[:, j], expected, rtol=1e-6)


def test_bilinear_upsampling_by_two_is_the_known_kernel() -> None:
    kernel = fill(filler(type="bilinear"), (1, 1, 4, 4), rng())[0, 0]
    along = np.array([0.25, 0.75, 0.75, 0.25], dtype=np.float32)
    np.testing.assert_array_equal(kernel, np.outer(along, along))


@pytest.mark.parametrize(
    ("fields", "shape", "message"),
    [
        ({"type": "xaviar"}, (3, 3), "unknown filler type 'xaviar'.*did you mean 'xavier'"),
        ({"type": "bilinear"}, (3, 3, 3), "needs a 4-D blob"),
        ({"type": "bilinear"}, (1, 1, 3, 4), "square kernel"),
        ({"type": "uniform", "sparse": 3}, (3, 3), "does not support sparse"),
        ({"type": "gaussian", "std": 0.0}, (3, 3), "std > 0"),
        ({"type": "uniform", "min": 2.0, "max": 1.0}, (3,), "min <= max"),
        ({"type": "constant"}, (0, 3), "no elements"),
        ({"type": "positive_unitball"}, (), "at least one axis"),
    ],
)
def test_bad_fillers_are_netdef_errors(fields: dict, shape: tuple[int, ...], message: str) -> None:
    with pytest.raises(NetDefinitionError, match=message):
        fill(filler(**fields), shape, rng())


def test_fill_is_deterministic_for_a_generator_seed() -> None:
    spec = filler(type="gaussian", std=2.0)
    np.testing.assert_array_equal(fill(spec, (4, 5), rng(3)), fill(spec, (4, 5), rng(3)))
    assert not np.array_equal(fill(spec, (4, 5), rng(3)), fill(spec, (4, 5), rng(4)))


NET = """
name: "init"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 2 dim: 3 dim: 10 dim: 10 } } }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
  convolution_param { num_output: 16 kernel_size: 3
    weight_filler { type: "xavier" } bias_filler { type: "constant" value: 0.2 } } }
layer { name: "conv_plain" type: "Convolution" bottom: "data" top: "conv_plain"
  convolution_param { num_output: 4 kernel_size: 3 } }
layer { name: "bn" type: "BatchNorm" bottom: "conv" top: "bn" }
layer { name: "scale" type: "Scale" bottom: "bn" top: "scale"
  scale_param { bias_term: true bias_filler { type: "constant" value: 0.5 } } }
layer { name: "prelu" type: "PReLU" bottom: "scale" top: "prelu" }
layer { name: "prelu_set" type: "PReLU" bottom: "conv_plain" top: "prelu_set"
  prelu_param { filler { type: "constant" value: 0.1 } channel_shared: true } }
layer { name: "ip" type: "InnerProduct" bottom: "prelu" top: "ip"
  param { name: "shared_w" } param { name: "shared_b" }
  inner_product_param { num_output: 50 weight_filler { type: "gaussian" std: 0.01 } } }
layer { name: "ip_twin" type: "InnerProduct" bottom: "prelu" top: "ip_twin"
  param { name: "shared_w" } param { name: "shared_b" }
  inner_product_param { num_output: 50 weight_filler { type: "constant" value: 7 } } }
layer { name: "bias" type: "Bias" bottom: "ip" top: "biased" bias_param { filler { type: "constant" value: -1 } } }
"""


def test_initialize_weights_uses_each_layers_fillers_and_defaults() -> None:
    from netdef.keras.compiler import compile_net
    from netdef.keras.weights import caffe_blobs

    net = load_net(NET)
    compiled = compile_net(net)
    initialize_weights(compiled, seed=5)
    blobs = {layer.name: layer.blobs for layer in caffe_blobs(compiled)}

    conv_w, conv_b = blobs["conv"]
    bound = math.sqrt(3 / (3 * 3 * 3))  # xavier FAN_IN: count / num_output = 27
    assert conv_w.shape == (16, 3, 3, 3) and np.abs(conv_w).max() <= bound and np.abs(conv_w).max() > 0.9 * bound
    np.testing.assert_array_equal(conv_b, np.full(16, 0.2, np.float32))
    assert all(np.all(blob == 0) for blob in blobs["conv_plain"])  # unset fillers: constant 0
    assert [blob.shape for blob in blobs["bn"]] == [(16,), (16,), (1,)]
    assert all(np.all(blob == 0) for blob in blobs["bn"])
    np.testing.assert_array_equal(blobs["scale"][0], np.ones(16, np.float32))  # Scale's default: 1
    np.testing.assert_array_equal(blobs["scale"][1], np.full(16, 0.5, np.float32))
    np.testing.assert_array_equal(blobs["prelu"][0], np.full(16, 0.25, np.float32))  # PReLU's default
    np.testing.assert_array_equal(blobs["prelu_set"][0], np.float32(0.1))
    ip_w, ip_b = blobs["ip"]
    assert ip_w.shape == (50, 16 * 8 * 8) and ip_w.std() == pytest.approx(0.01, rel=0.05)
    np.testing.assert_array_equal(ip_b, np.zeros(50, np.float32))
    # Shared by name: the twin reads the owner's values, not its own constant filler.
    np.testing.assert_array_equal(blobs["ip_twin"][0], ip_w)
    np.testing.assert_array_equal(blobs["bias"][0], np.full(50, -1.0, np.float32))

    # The model holds exactly what the fillers made (through the Caffe ↔ Keras converters).
    expected = initial_blobs(net, seed=5)
    for name, arrays in expected.items():
        for made, stored in zip(arrays, blobs[name], strict=True):
            np.testing.assert_array_equal(made, stored)


def test_initial_weights_are_deterministic_for_a_seed() -> None:
    net = load_net(NET)
    first, again, other = initial_blobs(net, 1), initial_blobs(net, 1), initial_blobs(net, 2)
    np.testing.assert_array_equal(first["conv"][0], again["conv"][0])
    np.testing.assert_array_equal(first["ip"][0], again["ip"][0])
    assert not np.array_equal(first["conv"][0], other["conv"][0])


def test_recurrent_layers_take_weight_filler_for_matrices_and_bias_filler_for_vectors() -> None:
    net = load_net(
        'layer { name: "in" type: "Input" top: "x" top: "cont" '
        "input_param { shape { dim: 3 dim: 2 dim: 4 } shape { dim: 3 dim: 2 } } }\n"
        'layer { name: "lstm" type: "LSTM" bottom: "x" bottom: "cont" top: "h" '
        'recurrent_param { num_output: 5 weight_filler { type: "uniform" min: -0.1 max: 0.1 } '
        'bias_filler { type: "constant" value: 1 } } }\n'
        'layer { name: "rnn" type: "RNN" bottom: "x" bottom: "cont" top: "o" '
        'recurrent_param { num_output: 6 weight_filler { type: "constant" value: 3 } } }\n'
    )
    blobs = initial_blobs(net)
    w_xc, b_c, w_hc = blobs["lstm"]
    assert w_xc.shape == (20, 4) and w_hc.shape == (20, 5)
    assert np.abs(w_xc).max() <= 0.1 and np.abs(w_hc).max() <= 0.1 and w_xc.std() > 0
    np.testing.assert_array_equal(b_c, np.ones(20, np.float32))
    assert [blob.shape for blob in blobs["rnn"]] == [(6, 4), (6,), (6, 6), (6, 6), (6,)]
    assert [float(blob.flat[0]) for blob in blobs["rnn"]] == [3, 0, 3, 3, 0]


def test_a_bad_filler_names_its_layer() -> None:
    net = load_net(
        'layer { name: "in" type: "Input" top: "x" input_param { shape { dim: 2 dim: 3 } } }\n'
        'layer { name: "fc" type: "InnerProduct" bottom: "x" top: "y" '
        'inner_product_param { num_output: 2 weight_filler { type: "gausian" } } }\n'
    )
    with pytest.raises(NetDefinitionError, match=r"layer 'fc' \(InnerProduct\): unknown filler type 'gausian'"):
        initial_blobs(net)
