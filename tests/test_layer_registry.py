"""The registry holds exactly Caffe's layer types, with Caffe's arity and flags."""

from __future__ import annotations

import pytest

from netdef.layers.registry import Arity, known_types, lookup
from netdef.proto import netdef_pb2 as pb

#: Every type string BVLC Caffe registers (REGISTER_LAYER_CLASS / REGISTER_LAYER_CREATOR).
CAFFE_TYPES = set(
    [
        "AbsVal",
        "Accuracy",
        "ArgMax",
        "BNLL",
        "BatchNorm",
        "BatchReindex",
        "Bias",
        "Clip",
        "Concat",
        "ContrastiveLoss",
        "Convolution",
        "Crop",
        "Data",
        "Deconvolution",
        "Dropout",
        "DummyData",
        "ELU",
        "Eltwise",
        "Embed",
        "EuclideanLoss",
        "Exp",
        "Filter",
        "Flatten",
        "HDF5Data",
        "HDF5Output",
        "HingeLoss",
        "Im2col",
        "ImageData",
        "InfogainLoss",
        "InnerProduct",
        "Input",
        "LRN",
        "LSTM",
        "LSTMUnit",
        "Log",
        "MVN",
        "MemoryData",
        "MultinomialLogisticLoss",
        "PReLU",
        "Parameter",
        "Pooling",
        "Power",
        "Python",
        "RNN",
        "ReLU",
        "Reduction",
        "Reshape",
        "SPP",
        "Scale",
        "Sigmoid",
        "SigmoidCrossEntropyLoss",
        "Silence",
        "Slice",
        "Softmax",
        "SoftmaxWithLoss",
        "Split",
        "Swish",
        "TanH",
        "Threshold",
        "Tile",
        "WindowData",
    ]
)


def test_every_caffe_type_and_nothing_else_is_registered() -> None:
    assert len(CAFFE_TYPES) == 61
    assert set(known_types()) == CAFFE_TYPES
    for name in CAFFE_TYPES:
        spec = lookup(name)
        assert spec is not None and spec.type == name
        assert spec.doc, f"{name} has no docstring on its shape rule"


def test_declared_params_are_layer_parameter_fields() -> None:
    fields = set(pb.LayerParameter.DESCRIPTOR.fields_by_name)
    for name in CAFFE_TYPES:
        spec = lookup(name)
        assert spec is not None
        assert set(spec.params) <= fields, name
        assert all(field.endswith("_param") for field in spec.params), name


@pytest.mark.parametrize(
    ("name", "bottoms", "tops"),
    [
        ("Convolution", Arity(1, None), Arity(1, None)),
        ("Pooling", Arity(1, 1), Arity(1, 2)),
        ("Concat", Arity(1, None), Arity(1, 1)),
        ("Eltwise", Arity(2, None), Arity(1, 1)),
        ("Slice", Arity(1, 1), Arity(1, None)),
        ("Silence", Arity(1, None), Arity(0, 0)),
        ("Filter", Arity(2, None), Arity(1, None)),
        ("Crop", Arity(2, 2), Arity(1, 1)),
        ("SoftmaxWithLoss", Arity(2, 2), Arity(1, 2)),
        ("InfogainLoss", Arity(2, 3), Arity(1, 2)),
        ("EuclideanLoss", Arity(2, 2), Arity(1, 1)),
        ("ContrastiveLoss", Arity(3, 3), Arity(1, 1)),
        ("Accuracy", Arity(2, 2), Arity(1, 2)),
        ("Data", Arity(0, 0), Arity(1, 2)),
        ("ImageData", Arity(0, 0), Arity(2, 2)),
        ("WindowData", Arity(0, 0), Arity(2, 2)),
        ("MemoryData", Arity(0, 0), Arity(2, 2)),
        ("HDF5Data", Arity(0, 0), Arity(1, None)),
        ("HDF5Output", Arity(2, 2), Arity(0, 0)),
        ("Input", Arity(0, 0), Arity(1, None)),
        ("Parameter", Arity(0, 0), Arity(1, 1)),
        ("LSTMUnit", Arity(3, 3), Arity(2, 2)),
        ("LSTM", Arity(2, 5), Arity(1, 3)),
        ("RNN", Arity(2, 4), Arity(1, 2)),
        ("Scale", Arity(1, 2), Arity(1, 1)),
        ("Python", Arity(0, None), Arity(0, None)),
    ],
)
def test_arity_follows_caffe(name: str, bottoms: Arity, tops: Arity) -> None:
    spec = lookup(name)
    assert spec is not None
    assert (spec.bottoms, spec.tops) == (bottoms, tops)


NEURONS = {
    "ReLU",
    "Sigmoid",
    "TanH",
    "BNLL",
    "ELU",
    "Swish",
    "Power",
    "Exp",
    "Log",
    "Threshold",
    "Clip",
    "Dropout",
    "PReLU",
}


def test_in_place_types() -> None:
    in_place = {name for name in CAFFE_TYPES if lookup(name).in_place}  # type: ignore[union-attr]
    # AbsVal, Flatten, Reshape and Split CHECK against it in Caffe.
    assert in_place == NEURONS | {"BatchNorm", "Scale", "Bias", "MVN", "Softmax"}


def test_loss_and_data_flags() -> None:
    losses = {name for name in CAFFE_TYPES if lookup(name).loss}  # type: ignore[union-attr]
    assert losses == {
        "SoftmaxWithLoss",
        "SigmoidCrossEntropyLoss",
        "EuclideanLoss",
        "HingeLoss",
        "InfogainLoss",
        "MultinomialLogisticLoss",
        "ContrastiveLoss",
    }
    readers = {name for name in CAFFE_TYPES if lookup(name).data}  # type: ignore[union-attr]
    assert readers == {"Data", "ImageData", "HDF5Data", "WindowData", "MemoryData", "DummyData"}
    assert [name for name in CAFFE_TYPES if lookup(name).statistics] == ["BatchNorm"]  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("name", "no_gradient"),
    [
        ("SoftmaxWithLoss", {1}),
        ("EuclideanLoss", set()),
        ("InfogainLoss", {1, 2}),
        ("ContrastiveLoss", {2}),
        ("Accuracy", {0, 1}),
        ("LSTM", {1}),
        ("RNN", {1}),
        ("LSTMUnit", {2}),
        ("Embed", {0}),
        ("BatchReindex", {1}),
        ("Filter", {-1}),
        ("Crop", {1}),
        ("ArgMax", {0}),
        ("Threshold", {0}),
        ("ReLU", set()),
    ],
)
def test_bottoms_without_gradient(name: str, no_gradient: set[int]) -> None:
    spec = lookup(name)
    assert spec is not None
    assert spec.no_gradient == no_gradient
