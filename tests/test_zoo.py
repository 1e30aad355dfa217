"""The model zoo (zoo/<name>/): every deploy net builds, compiles, runs a forward pass and has
the parameter count stated for it; every training net builds in TRAIN and TEST and defines
the same layers as its deploy net; every solver loads and points at its training net; the
READMEs state the numbers netdef computes; nets taken from Caffe's zoo say what Caffe's
files say; golden summaries pin every layer's shapes and counts.

The expected counts are independent of netdef: Keras's own count of the same architecture
(simple_cnn, VGG-16, MobileNet, ResNet-50), published figures (SqueezeNet v1.1, C3D) or
Caffe's log (CaffeNet), with the per-layer sums in each README.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
import pytest

from netdef import load_net, load_solver
from netdef.ir import Net
from netdef.keras.compiler import compile_net, forward
from netdef.keras.weights import caffe_blobs, set_caffe_blobs
from netdef.proto import netdef_pb2 as pb
from netdef.prototxt import read_net, read_solver
from netdef.summary import summary_json, summary_table
from netdef.upgrade import upgrade_net

from .conftest import REPO
from .parity import assert_close, random_blobs
from .test_pooling_nd import caffe_pool

ZOO = REPO / "zoo"


@dataclass(frozen=True)
class ZooNet:
    #: What `netdef summary` totals: every element of the net's Caffe blobs.
    params: int
    #: Convolution and InnerProduct multiply-accumulates per image.
    macs: int
    #: Top shape of the training net's data layer, standing in for its LMDB.
    data: dict[str, tuple[int, ...]]
    #: Learnable parameters (Keras's trainable count), where BatchNorm's blobs make it differ.
    learnable: int | None = None


def _images(n: int, c: int, size: int) -> dict[str, tuple[int, ...]]:
    return {"data": (n, c, size, size)}


NETS = {
    "lenet": ZooNet(431_080, 2_293_000, _images(64, 1, 28)),
    "digits": ZooNet(431_080, 2_293_000, _images(64, 1, 28)),
    "cifar10_quick": ZooNet(145_578, 12_354_176, _images(100, 3, 32)),
    "cifar10_full": ZooNet(89_578, 12_298_240, _images(100, 3, 32)),
    # conv 3·9·32+32 = 896, conv 32·9·64+64 = 18,496, dense 4,096·128+128 = 524,416, dense 1,290.
    "simple_cnn": ZooNet(545_098, 6_128_896, _images(32, 3, 32)),
    "caffenet": ZooNet(60_965_224, 724_406_816, _images(256, 3, 227)),
    "alexnet": ZooNet(60_965_224, 724_406_816, _images(256, 3, 227)),
    "vgg16": ZooNet(138_357_544, 15_470_264_320, _images(64, 3, 224)),
    "googlenet": ZooNet(6_998_552, 1_582_671_872, _images(32, 3, 224)),
    # Keras's ResNet50 has 25,583,592 trainable; less its 26,560 conv biases, plus conv1's 64 that
    # Kaiming He's definition keeps. BatchNorm adds mean and variance (2 × 26,560) and 53 scale factors.
    "resnet50": ZooNet(25_610_269, 3_857_973_248, _images(32, 3, 224), learnable=25_557_096),
    "squeezenet": ZooNet(1_235_496, 387_747_520, _images(32, 3, 227)),
    # Keras's MobileNet: 4,231,976 trainable; BatchNorm adds 2 × 10,944 statistics and 27 scale factors.
    "mobilenet": ZooNet(4_253_891, 568_740_352, _images(64, 3, 224), learnable=4_231_976),
    "c3d": ZooNet(79_991_015, 38_548_959_232, {"frames": (30, 48, 112, 112)}),
}
BIG = {"vgg16", "resnet50", "c3d"}

#: Nets written after Caffe's own files: (deploy, train_val, solver) in ../shared/caffe-zoo.
FROM_CAFFE = {
    "lenet": (
        "examples/mnist/lenet.prototxt",
        "examples/mnist/lenet_train_test.prototxt",
        "examples/mnist/lenet_solver.prototxt",
    ),
    "cifar10_quick": (
        "examples/cifar10/cifar10_quick.prototxt",
        "examples/cifar10/cifar10_quick_train_test.prototxt",
        "examples/cifar10/cifar10_quick_solver.prototxt",
    ),
    "cifar10_full": (
        "examples/cifar10/cifar10_full.prototxt",
        "examples/cifar10/cifar10_full_train_test.prototxt",
        "examples/cifar10/cifar10_full_solver.prototxt",
    ),
    "caffenet": tuple(f"models/bvlc_reference_caffenet/{f}.prototxt" for f in ("deploy", "train_val", "solver")),
    "alexnet": tuple(f"models/bvlc_alexnet/{f}.prototxt" for f in ("deploy", "train_val", "solver")),
    "googlenet": tuple(f"models/bvlc_googlenet/{f}.prototxt" for f in ("deploy", "train_val", "solver")),
}


def multiply_accumulates(net: Net) -> int:
    """Per image: output elements × kernel volume × input channels / group for convolutions
    (the weight blob is (out, in/group, *kernel)), inputs × outputs for inner products."""
    total = 0
    for node in net.nodes:
        if node.type == "Convolution":
            total += math.prod(node.tops[0].shape[1:]) * math.prod(node.blobs[0].shape[1:])
        elif node.type == "InnerProduct":
            total += math.prod(node.blobs[0].shape)
    return total


def learnable_count(compiled) -> int:
    return sum(math.prod(variable.shape) for variable in compiled.model.trainable_weights)


def test_every_zoo_net_has_its_four_files() -> None:
    for name in NETS:
        assert {p.name for p in (ZOO / name).iterdir()} >= {
            "deploy.prototxt",
            "train_val.prototxt",
            "solver.prototxt",
            "README.md",
        }, name


@pytest.mark.parametrize("name", list(NETS))
def test_deploy_net_compiles_runs_and_has_its_parameter_count(name: str) -> None:
    expected = NETS[name]
    net = load_net(ZOO / name / "deploy.prototxt")
    assert net.param_count == expected.params
    assert multiply_accumulates(net) == expected.macs
    compiled = compile_net(net)
    assert compiled.model.count_params() == expected.params
    assert learnable_count(compiled) == (expected.learnable or expected.params)
    if expected.learnable:
        # BatchNorm's all-zero initial statistics scale by 1/sqrt(eps) at every layer, which
        # overflows a deep net; give it statistics (and weights) that keep activations finite.
        set_caffe_blobs(compiled, {layer.name: layer.blobs for layer in random_blobs(net)})
    batch = 1 if name in BIG else 2
    rng = np.random.default_rng(0)
    feeds = [rng.standard_normal((batch, *value.shape[1:])).astype(np.float32) for value in net.feeds]
    (prob,) = forward(compiled, feeds)
    prob = np.asarray(prob)
    assert prob.shape == (batch, *net.blob("prob").shape[1:])
    np.testing.assert_allclose(prob.sum(axis=1), 1.0, rtol=1e-5)


@pytest.mark.parametrize("name", list(NETS))
def test_training_net_builds_in_both_phases_with_the_deploy_layers(name: str) -> None:
    deploy = load_net(ZOO / name / "deploy.prototxt")
    deploy_blobs = {node.name: [blob.shape for blob in node.blobs] for node in deploy.nodes if node.blobs}
    for phase in ("TRAIN", "TEST"):
        net = load_net(ZOO / name / "train_val.prototxt", phase=phase, data_shapes=NETS[name].data)
        sources = [node for node in net.nodes if node.is_source]
        assert [node.type for node in sources] == ["Data"], phase
        assert sources[0].param.data_param.backend == sources[0].param.data_param.LMDB
        blobs = {node.name: [blob.shape for blob in node.blobs] for node in net.nodes if node.blobs}
        # The same learnable layers as the deploy net (GoogLeNet's auxiliary heads come on top).
        assert {layer: blobs[layer] for layer in deploy_blobs} == deploy_blobs, phase
        losses = [node for node in net.nodes if node.type == "SoftmaxWithLoss"]
        accuracies = [node for node in net.nodes if node.type == "Accuracy"]
        assert losses, phase
        assert bool(accuracies) == (phase == "TEST")
        compile_net(net)


def test_training_nets_filter_their_data_by_phase() -> None:
    for name in NETS:
        upgraded = upgrade_net(read_net(ZOO / name / "train_val.prototxt").message).net
        data = [layer for layer in upgraded.layer if layer.type == "Data"]
        assert [[rule.phase for rule in layer.include] for layer in data] == [[pb.TRAIN], [pb.TEST]], name
        assert all(layer.data_param.source for layer in data), name


@pytest.mark.parametrize("name", list(NETS))
def test_solver_loads_and_names_the_training_net(name: str) -> None:
    solver = load_solver(ZOO / name / "solver.prototxt")
    assert solver.net == f"zoo/{name}/train_val.prototxt"
    assert (REPO / solver.net).is_file()
    assert solver.snapshot_prefix.startswith(f"runs/{name}/")
    assert solver.max_iter > 0 and solver.base_lr > 0 and solver.test_iter and solver.test_interval > 0


def _row(text: str, key: str) -> int:
    match = re.search(rf"^\| {key} \| ([\d,]+)", text, re.MULTILINE)
    assert match, f"no '{key}' row"
    return int(match[1].replace(",", ""))


@pytest.mark.parametrize("name", list(NETS))
def test_readme_states_the_computed_numbers(name: str) -> None:
    expected = NETS[name]
    text = (ZOO / name / "README.md").read_text()
    net = load_net(ZOO / name / "deploy.prototxt")
    assert _row(text, "parameters") == expected.params
    assert _row(text, "multiply-accumulates") == multiply_accumulates(net)
    if expected.learnable:
        assert _row(text, "learnable parameters") == expected.learnable
    shape = ", ".join(str(d) for d in net.feeds[0].shape[1:])
    assert re.search(rf"^\| input \| `data` \(N, {shape}\)", text, re.MULTILINE)
    assert f"netdef summary zoo/{name}/deploy.prototxt" in text


def test_zoo_index_lists_every_net_with_its_numbers() -> None:
    rows = {}
    for line in (ZOO / "README.md").read_text().splitlines():
        match = re.match(r"\| \[(\w+)\]\(\1/\) \| ([\d×]+) \| ([\d×]+) \| ([\d,]+)[^|]* \| ([\d,]+) \|", line)
        if match:
            rows[match[1]] = match.groups()[1:]
    assert set(rows) == set(NETS)
    for name, (inputs, outputs, params, macs) in rows.items():
        net = load_net(ZOO / name / "deploy.prototxt")
        assert inputs == "×".join(str(d) for d in net.feeds[0].shape[1:]), name
        assert outputs == "×".join(str(d) for d in net.blob("prob").shape[1:]), name
        assert int(params.replace(",", "")) == NETS[name].params, name
        assert int(macs.replace(",", "")) == NETS[name].macs, name


def _without(net, fields: tuple[str, ...]):
    """A copy of a NetParameter with the given LayerParameter fields and all fillers cleared."""
    copy = type(net)()
    copy.CopyFrom(net)
    for layer in copy.layer:
        for name in fields:
            layer.ClearField(name)
        for param in (layer.convolution_param, layer.inner_product_param):
            param.ClearField("weight_filler")
            param.ClearField("bias_filler")
    return copy


@pytest.mark.parametrize("name", list(FROM_CAFFE))
def test_nets_from_caffes_zoo_say_what_caffe_says(caffe_zoo: Path, name: str) -> None:
    deploy, train_val, solver = FROM_CAFFE[name]

    def net(path: Path):
        return upgrade_net(read_net(path).message).net

    # Deploy nets: structure and layer parameters; learning-rate multipliers and fillers do
    # nothing there, and Caffe's deploy files carry them inconsistently.
    assert _without(net(ZOO / name / "deploy.prototxt"), ("param",)) == _without(net(caffe_zoo / deploy), ("param",))
    assert net(ZOO / name / "train_val.prototxt") == net(caffe_zoo / train_val)
    ours, theirs = (read_solver(path).message for path in (ZOO / name / "solver.prototxt", caffe_zoo / solver))
    for message in (ours, theirs):
        message.ClearField("net")
        message.ClearField("snapshot_prefix")
    assert ours == theirs


@pytest.mark.parametrize("name", list(NETS))
def test_deploy_summaries_match_golden_files(name: str, golden) -> None:
    net = load_net(ZOO / name / "deploy.prototxt")
    golden(f"summary/zoo_{name}.txt", summary_table(net) + "\n")
    golden(f"summary/zoo_{name}.json", json.dumps(summary_json(net), indent=1) + "\n")


@pytest.fixture(scope="module")
def c3d():
    """C3D's deploy net with random weights, exposing the blobs around its two special poolings."""
    net = load_net(ZOO / "c3d" / "deploy.prototxt")
    compiled = compile_net(net, outputs=["conv1a", "pool1", "conv5b", "pool5", "fc8"])
    blobs = {layer.name: layer.blobs for layer in random_blobs(net, seed=2)}
    set_caffe_blobs(compiled, blobs)
    clip = np.random.default_rng(5).standard_normal((1, 3, 16, 112, 112)).astype(np.float32)
    return clip, blobs, [np.asarray(a) for a in forward(compiled, [clip])]


def test_c3d_pools_as_caffe_per_axis(c3d) -> None:
    """pool1 (1×2×2) and pool5 (2×2×2, pad (0, 1, 1)) against the numpy transcription of
    Caffe's pooling: OpenCV cannot run these (see tests/test_parity_zoo.py)."""
    _, _, (conv1a, pool1, conv5b, pool5, _) = c3d
    assert pool1.shape == (1, 64, 16, 56, 56)
    assert pool5.shape == (1, 512, 1, 4, 4)
    assert_close(pool1, caffe_pool(conv1a.astype(np.float64), "MAX", (1, 2, 2), (1, 2, 2), (0, 0, 0)), "pool1")
    assert_close(pool5, caffe_pool(conv5b.astype(np.float64), "MAX", (2, 2, 2), (2, 2, 2), (0, 1, 1)), "pool5")


def test_c3d_training_net_reads_clips_stored_colour_major(c3d) -> None:
    """A clip stored as a 48-channel Datum (3 colour planes of 16 frames) and reshaped by the
    training net gives the deploy net's scores for the (3, 16, H, W) clip."""
    clip, blobs, (*_, expected) = c3d
    net = load_net(ZOO / "c3d" / "train_val.prototxt", phase="TEST", data_shapes={"frames": (1, 48, 112, 112)})
    compiled = compile_net(net, outputs=["fc8"])
    set_caffe_blobs(compiled, blobs)
    assert {layer.name for layer in caffe_blobs(compiled)} == set(blobs)
    labels = np.zeros((1,), np.float32)
    (scores,) = forward(compiled, [clip.reshape(1, 48, 112, 112), labels])
    assert_close(np.asarray(scores), expected, "fc8")


def test_simple_cnn_is_the_keras_example() -> None:
    """The Keras example written with Keras's own layers ("same" padding, channels-last flatten)
    has 545,098 parameters and, given the Caffe net's weights, computes the same probabilities:
    Caffe's pad 1 is Keras's "same" for 3×3 at stride 1."""
    layers = keras.layers
    reference = keras.Sequential(
        [
            keras.Input((32, 32, 3)),
            layers.Conv2D(32, 3, padding="same", activation="relu"),
            layers.MaxPooling2D(2),
            layers.Dropout(0.25),
            layers.Conv2D(64, 3, padding="same", activation="relu"),
            layers.MaxPooling2D(2),
            layers.Flatten(),
            layers.Dropout(0.25),
            layers.Dense(128, activation="relu"),
            layers.Dropout(0.25),
            layers.Dense(10, activation="softmax"),
        ]
    )
    assert reference.count_params() == NETS["simple_cnn"].params
    net = load_net(ZOO / "simple_cnn" / "deploy.prototxt")
    blobs = {layer.name: layer.blobs for layer in random_blobs(net, seed=4)}
    compiled = compile_net(net)
    set_caffe_blobs(compiled, blobs)
    conv1, conv2, dense1, dense2 = (blobs[name] for name in ("conv1", "conv2", "dense1", "dense2"))
    # Caffe's (out, in, kh, kw) kernels and (out, in) inner products, in Keras's (kh, kw, in, out) and
    # (in, out); dense1's inputs go from Caffe's C, H, W order to Keras's H, W, C.
    dense1_rows = dense1[0].reshape(128, 64, 8, 8).transpose(2, 3, 1, 0).reshape(4096, 128)
    reference.set_weights(
        [
            conv1[0].transpose(2, 3, 1, 0),
            conv1[1],
            conv2[0].transpose(2, 3, 1, 0),
            conv2[1],
            dense1_rows,
            dense1[1],
            dense2[0].T,
            dense2[1],
        ]
    )
    images = np.random.default_rng(8).uniform(0, 1, (4, 3, 32, 32)).astype(np.float32)
    (ours,) = forward(compiled, [images])
    theirs = reference(images.transpose(0, 2, 3, 1), training=False)
    assert_close(np.asarray(ours), np.asarray(theirs), "prob")
