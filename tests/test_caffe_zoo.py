"""Caffe's own model and example files: all parse, all nets build in every phase, and the
deploy nets' shapes and parameter counts match what Caffe logs (golden summaries plus
numbers checked by hand)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from netdef import load_net
from netdef.layers.registry import Shape
from netdef.proto import netdef_pb2 as pb
from netdef.prototxt import read_net, read_solver
from netdef.summary import summary_json, summary_table
from netdef.upgrade import upgrade_net, upgrade_solver

from .conftest import CAFFE_ZOO

ALL_PROTOTXT = (
    sorted(str(p.relative_to(CAFFE_ZOO)) for p in CAFFE_ZOO.rglob("*.prototxt")) if CAFFE_ZOO.is_dir() else []
)
SOLVERS = [p for p in ALL_PROTOTXT if "solver" in Path(p).name]
NETS = [p for p in ALL_PROTOTXT if p not in SOLVERS]
DEPLOY_NETS = [
    "examples/cifar10/cifar10_full.prototxt",
    "examples/cifar10/cifar10_quick.prototxt",
    "examples/mnist/lenet.prototxt",
    "examples/net_surgery/bvlc_caffenet_full_conv.prototxt",
    "examples/net_surgery/conv.prototxt",
    "examples/siamese/mnist_siamese.prototxt",
    "models/bvlc_alexnet/deploy.prototxt",
    "models/bvlc_googlenet/deploy.prototxt",
    "models/bvlc_reference_caffenet/deploy.prototxt",
    "models/bvlc_reference_rcnn_ilsvrc13/deploy.prototxt",
    "models/finetune_flickr_style/deploy.prototxt",
]

# Top-0 shapes for the data layers whose databases are not shipped (what --data-shape gives).
MNIST = {"data": (64, 1, 28, 28)}
CIFAR = {"data": (100, 3, 32, 32)}
IMAGENET_227 = {"data": (50, 3, 227, 227)}
DATA_SHAPES: dict[str, dict[str, Shape]] = {
    "examples/mnist/lenet_train_test.prototxt": MNIST,
    "examples/mnist/mnist_autoencoder.prototxt": MNIST,
    "examples/siamese/mnist_siamese_train_test.prototxt": {"pair_data": (64, 2, 28, 28)},
    "examples/cifar10/cifar10_quick_train_test.prototxt": CIFAR,
    "examples/cifar10/cifar10_full_train_test.prototxt": CIFAR,
    "examples/cifar10/cifar10_full_sigmoid_train_test.prototxt": CIFAR,
    "examples/cifar10/cifar10_full_sigmoid_train_test_bn.prototxt": CIFAR,
    "examples/hdf5_classification/train_val.prototxt": {"data": (10, 4)},
    "examples/hdf5_classification/nonlinear_train_val.prototxt": {"data": (10, 4)},
    "examples/hdf5_classification/nonlinear_auto_train.prototxt": {"data": (10, 4)},
    "examples/hdf5_classification/nonlinear_auto_test.prototxt": {"data": (10, 4)},
    "examples/feature_extraction/imagenet_val.prototxt": IMAGENET_227,
    "examples/finetune_pascal_detection/pascal_finetune_trainval_test.prototxt": {"data": (128, 3, 227, 227)},
    "models/bvlc_alexnet/train_val.prototxt": IMAGENET_227,
    "models/bvlc_reference_caffenet/train_val.prototxt": IMAGENET_227,
    "models/finetune_flickr_style/train_val.prototxt": IMAGENET_227,
    "models/bvlc_googlenet/train_val.prototxt": {"data": (32, 3, 224, 224)},
}
#: Nets that need Python layers to build (Caffe's pycaffe example of a Python loss).
PYTHON_NETS = {"examples/pycaffe/linreg.prototxt"}


def test_zoo_is_complete(caffe_zoo: Path) -> None:
    assert (len(NETS), len(SOLVERS)) == (29, 25)
    assert set(DEPLOY_NETS) <= set(NETS)


@pytest.mark.parametrize("relative", SOLVERS)
def test_every_solver_parses_and_upgrades(caffe_zoo: Path, relative: str) -> None:
    parsed = read_solver(caffe_zoo / relative)
    solver, _ = upgrade_solver(parsed.message, parsed.file)
    assert not solver.HasField("solver_type")
    assert solver.type in {"SGD", "Nesterov", "AdaGrad", "RMSProp", "AdaDelta", "Adam"}


@pytest.mark.parametrize("relative", NETS)
def test_every_net_builds_in_every_phase(caffe_zoo: Path, relative: str) -> None:
    upgraded = upgrade_net(read_net(caffe_zoo / relative).message).net
    # A net with staged layers is only complete with one of its stages (as its solver's
    # test_state gives it); a net without stages is complete as it is.
    stage_sets = [tuple(rule.stage) for layer in upgraded.layer for rule in layer.include if rule.stage] or [()]
    for phase in ("TRAIN", "TEST"):
        for stages in dict.fromkeys(stage_sets):
            net = load_net(
                caffe_zoo / relative,
                phase=phase,
                stages=stages,
                data_shapes=DATA_SHAPES.get(relative),
                allow_python=relative in PYTHON_NETS,
            )
            assert net.nodes
            unknown = [v.blob for v in net.values.values() if v.shape is None]
            if relative not in PYTHON_NETS:
                assert not unknown, f"{phase} {stages}: shapes not inferred for {unknown}"


@pytest.mark.parametrize("relative", DEPLOY_NETS)
def test_deploy_summaries_match_golden_files(caffe_zoo: Path, relative: str, golden) -> None:
    net = load_net(caffe_zoo / relative)
    stem = relative.replace("/", "__").removesuffix(".prototxt")
    golden(f"summary/{stem}.txt", summary_table(net) + "\n")
    golden(f"summary/{stem}.json", json.dumps(summary_json(net), indent=1) + "\n")


@pytest.mark.parametrize(
    ("relative", "params"),
    [
        ("examples/mnist/lenet.prototxt", 431_080),
        ("examples/cifar10/cifar10_quick.prototxt", 145_578),
        # conv1 34,944 + conv2 307,456 + conv3 885,120 + conv4 663,936 + conv5 442,624
        # + fc6 37,752,832 + fc7 16,781,312 + fc8 4,097,000
        ("models/bvlc_reference_caffenet/deploy.prototxt", 60_965_224),
        ("models/bvlc_alexnet/deploy.prototxt", 60_965_224),
        # CaffeNet with fc-rcnn 4096 x 200 + 200 instead of fc8
        ("models/bvlc_reference_rcnn_ilsvrc13/deploy.prototxt", 60_965_224 - 4_097_000 + 819_400),
    ],
)
def test_parameter_counts_checked_by_hand(caffe_zoo: Path, relative: str, params: int) -> None:
    assert load_net(caffe_zoo / relative).param_count == params


CAFFENET_SHAPES = {
    "data": (10, 3, 227, 227),
    "conv1": (10, 96, 55, 55),
    "pool1": (10, 96, 27, 27),
    "norm1": (10, 96, 27, 27),
    "conv2": (10, 256, 27, 27),
    "pool2": (10, 256, 13, 13),
    "conv3": (10, 384, 13, 13),
    "conv4": (10, 384, 13, 13),
    "conv5": (10, 256, 13, 13),
    "pool5": (10, 256, 6, 6),
    "fc6": (10, 4096),
    "fc7": (10, 4096),
    "fc8": (10, 1000),
    "prob": (10, 1000),
}


def test_caffenet_shapes_are_those_caffe_logs(caffe_zoo: Path) -> None:
    net = load_net(caffe_zoo / "models/bvlc_reference_caffenet/deploy.prototxt")
    assert {name: net.blob(name).shape for name in CAFFENET_SHAPES} == CAFFENET_SHAPES
    assert [v.blob for v in net.outputs] == ["prob"]


def test_alexnet_gives_prob_10_by_1000(caffe_zoo: Path) -> None:
    net = load_net(caffe_zoo / "models/bvlc_alexnet/deploy.prototxt")
    assert net.blob("prob").shape == (10, 1000)
    assert net.blob("norm1").shape == (10, 96, 55, 55)  # AlexNet normalizes before pooling
    assert net.blob("pool1").shape == (10, 96, 27, 27)


def test_googlenet_rounds_pooling_up(caffe_zoo: Path) -> None:
    net = load_net(caffe_zoo / "models/bvlc_googlenet/deploy.prototxt")
    assert net.blob("conv1/7x7_s2").shape == (10, 64, 112, 112)
    assert net.blob("pool1/3x3_s2").shape == (10, 64, 56, 56)  # 55 with floor rounding
    assert net.blob("inception_3a/output").shape == (10, 256, 28, 28)
    assert net.blob("inception_5b/output").shape == (10, 1024, 7, 7)
    assert net.blob("pool5/7x7_s1").shape == (10, 1024, 1, 1)
    assert net.blob("prob").shape == (10, 1000)


def test_lenet_and_cifar10_quick_shapes(caffe_zoo: Path) -> None:
    lenet = load_net(caffe_zoo / "examples/mnist/lenet.prototxt")
    assert [lenet.blob(b).shape for b in ("conv1", "pool1", "conv2", "pool2", "ip1")] == [
        (64, 20, 24, 24),
        (64, 20, 12, 12),
        (64, 50, 8, 8),
        (64, 50, 4, 4),
        (64, 500),
    ]
    quick = load_net(caffe_zoo / "examples/cifar10/cifar10_quick.prototxt")
    assert quick.blob("pool1").shape == (1, 32, 16, 16)
    assert quick.blob("pool3").shape == (1, 64, 4, 4)
    assert quick.layer("ip1").blobs[0].shape == (64, 1024)


def test_train_and_test_phases_select_different_layers(caffe_zoo: Path) -> None:
    path = caffe_zoo / "examples/mnist/lenet_train_test.prototxt"
    train = load_net(path, phase="TRAIN", data_shapes=MNIST)
    test = load_net(path, phase="TEST", data_shapes=MNIST)
    assert "accuracy" not in [n.name for n in train.nodes]
    assert "accuracy" in [n.name for n in test.nodes]
    assert train.layer("loss").tops[0].loss_weight == 1.0


def test_mnist_autoencoder_stages_choose_their_data(caffe_zoo: Path) -> None:
    path = caffe_zoo / "examples/mnist/mnist_autoencoder.prototxt"
    on_train = load_net(path, stages=["test-on-train"], data_shapes=MNIST)
    on_test = load_net(path, stages=["test-on-test"], data_shapes=MNIST)
    source = [n.param.data_param.source for n in on_train.nodes if n.type == "Data"]
    assert source == ["examples/mnist/mnist_train_lmdb"]
    assert [n.param.data_param.source for n in on_test.nodes if n.type == "Data"] == ["examples/mnist/mnist_test_lmdb"]


def test_siamese_towers_share_their_weights(caffe_zoo: Path) -> None:
    net = load_net(
        caffe_zoo / "examples/siamese/mnist_siamese_train_test.prototxt",
        phase="TRAIN",
        data_shapes=DATA_SHAPES["examples/siamese/mnist_siamese_train_test.prototxt"],
    )
    assert net.layer("conv1_p").blobs[0].owner == ("conv1", 0)
    single_tower = load_net(caffe_zoo / "examples/siamese/mnist_siamese.prototxt")
    assert net.param_count == single_tower.param_count


def test_consolidated_solver_inline_v1_net_upgrades(caffe_zoo: Path) -> None:
    solver = read_solver(caffe_zoo / "examples/mnist/lenet_consolidated_solver.prototxt").message
    assert solver.net_param.layers  # legacy V1 syntax inline
    net = load_net(solver.net_param, phase="TRAIN", data_shapes=MNIST)
    assert net.layer("ip2").blobs[0].shape == (10, 500)
    assert isinstance(net.param, pb.NetParameter)
