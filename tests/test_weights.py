"""Weight files: reading and writing .caffemodel and Caffe's HDF5, and Caffe's loading rules."""

from __future__ import annotations

import os
import re
from pathlib import Path

import cv2
import h5py
import numpy as np
import pytest

from netdef import fileio
from netdef.errors import WeightsError
from netdef.ir import Net
from netdef.load import load_net
from netdef.proto import netdef_pb2 as pb
from netdef.prototxt import read_net
from netdef.weights import (
    LayerBlobs,
    match_blobs,
    read_caffe_hdf5,
    read_caffemodel,
    read_weights,
    write_caffe_hdf5,
    write_caffemodel,
)

RNG = np.random.default_rng(20240607)

#: conv + BatchNorm + two InnerProducts sharing both blobs by ParamSpec name.
SHARED_NET = """
name: "shared"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 2 dim: 3 dim: 8 dim: 8 } } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
        convolution_param { num_output: 4 kernel_size: 3 } }
layer { name: "bn1" type: "BatchNorm" bottom: "conv1" top: "conv1" }
layer { name: "ip1" type: "InnerProduct" bottom: "conv1" top: "ip1"
        param { name: "w" } param { name: "b" } inner_product_param { num_output: 5 } }
layer { name: "ip2" type: "InnerProduct" bottom: "conv1" top: "ip2"
        param { name: "w" } param { name: "b" } inner_product_param { num_output: 5 } }
"""

#: A deploy net that OpenCV's Caffe importer runs; the pooling rounds up (6 → 3, not 2).
TINY_NET = """
name: "tiny"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 3 dim: 8 dim: 8 } } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
        convolution_param { num_output: 4 kernel_size: 3 } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1"
        pooling_param { pool: MAX kernel_size: 3 stride: 2 } }
layer { name: "ip1" type: "InnerProduct" bottom: "pool1" top: "ip1" inner_product_param { num_output: 5 } }
layer { name: "prob" type: "Softmax" bottom: "ip1" top: "prob" }
"""


def random_blob(*shape: int) -> np.ndarray:
    return RNG.standard_normal(shape).astype(np.float32)


def shape_blob(values: np.ndarray) -> pb.BlobProto:
    blob = pb.BlobProto(shape=pb.BlobShape(dim=values.shape))
    blob.data.extend(values.ravel().tolist())
    return blob


def legacy_blob(values: np.ndarray, dims: tuple[int, int, int, int]) -> pb.BlobProto:
    blob = pb.BlobProto(num=dims[0], channels=dims[1], height=dims[2], width=dims[3])
    blob.data.extend(values.ravel().tolist())
    return blob


def raw_blob(bits: np.ndarray) -> pb.BlobProto:
    """A BlobProto whose data holds exactly these float32 bits (Python floats would alter NaNs)."""
    shape = pb.BlobProto(shape=pb.BlobShape(dim=bits.shape)).SerializeToString()
    payload = bits.astype("<u4").tobytes()
    return pb.BlobProto.FromString(shape + b"\x2a" + _varint(len(payload)) + payload)


def _varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    return bytes([*out, value])


def save(path: Path, net: pb.NetParameter) -> Path:
    path.write_bytes(net.SerializeToString())
    return path


def assert_same_bits(actual: np.ndarray, expected: np.ndarray) -> None:
    assert actual.dtype == np.float32
    assert actual.shape == expected.shape
    np.testing.assert_array_equal(actual.view("<u4"), expected.astype(np.float32).view("<u4"))


# --- reading .caffemodel ------------------------------------------------------------------


def test_read_v2_caffemodel(tmp_path: Path) -> None:
    weight, bias = random_blob(4, 3, 3, 3), random_blob(4)
    net = pb.NetParameter(name="n")
    net.layer.add(name="data", type="Input", top=["data"])
    net.layer.add(name="conv1", type="Convolution", blobs=[shape_blob(weight), shape_blob(bias)])
    [record] = read_caffemodel(save(tmp_path / "m.caffemodel", net))
    assert (record.name, record.type, record.origin, record.legacy) == ("conv1", "Convolution", "caffemodel", [0, 0])
    assert_same_bits(record.blobs[0], weight)
    assert_same_bits(record.blobs[1], bias)


def test_read_v1_caffemodel_with_legacy_shapes(tmp_path: Path) -> None:
    weight, bias = random_blob(5, 12), random_blob(5)
    net = pb.NetParameter()
    net.layers.add(name="relu", type=pb.V1LayerParameter.RELU)
    net.layers.add(
        name="fc",
        type=pb.V1LayerParameter.INNER_PRODUCT,
        blobs=[legacy_blob(weight, (1, 1, 5, 12)), legacy_blob(bias, (1, 1, 1, 5))],
    )
    [record] = read_caffemodel(save(tmp_path / "old.caffemodel", net))
    assert (record.name, record.type, record.legacy) == ("fc", "InnerProduct", [True, True])
    assert_same_bits(record.blobs[0], weight.reshape(1, 1, 5, 12))
    assert_same_bits(record.blobs[1], bias.reshape(1, 1, 1, 5))


def test_read_prefers_double_data(tmp_path: Path) -> None:
    blob = pb.BlobProto(shape=pb.BlobShape(dim=[3]))
    blob.data.extend([7.0, 7.0, 7.0])
    blob.double_data.extend([0.1, 0.2, 1e300])
    net = pb.NetParameter()
    net.layer.add(name="scale", type="Scale", blobs=[blob])
    [record] = read_caffemodel(save(tmp_path / "d.caffemodel", net))
    assert_same_bits(record.blobs[0], np.array([0.1, 0.2, np.inf], dtype=np.float32))


def test_read_refuses_a_count_that_does_not_fit(tmp_path: Path) -> None:
    blob = shape_blob(random_blob(2, 3))
    blob.data.append(1.0)
    net = pb.NetParameter()
    net.layer.add(name="fc", type="InnerProduct", blobs=[shape_blob(random_blob(2)), blob])
    path = save(tmp_path / "bad.caffemodel", net)
    with pytest.raises(WeightsError) as caught:
        read_caffemodel(path)
    assert str(caught.value) == (
        f"{path}: layer 'fc' (InnerProduct): blob 1: the blob's data does not fill its shape (2, 3); "
        "expected 6 values, received 7"
    )


def test_read_weights_tells_the_formats_apart_by_content(tmp_path: Path) -> None:
    records = [LayerBlobs("fc", "InnerProduct", [random_blob(2, 3)])]
    write_caffe_hdf5(tmp_path / "looks.caffemodel", records)
    write_caffemodel(tmp_path / "looks.h5", records)
    assert read_weights(tmp_path / "looks.caffemodel")[0].origin == "hdf5"
    assert read_weights(tmp_path / "looks.h5")[0].origin == "caffemodel"


# --- writing and round trips ----------------------------------------------------------------


def test_caffemodel_round_trip_is_byte_identical(tmp_path: Path) -> None:
    bits = RNG.integers(0, 2**32, size=(6, 3, 2, 2), dtype=np.uint64).astype("<u4")
    bits.reshape(-1)[:4] = [0x7F800001, 0x7FC00000, 0xFF800000, 0x80000000]  # sNaN, qNaN, -inf, -0.0
    noise = random_blob(6)
    noise[[1, 4]] = [np.nan, np.inf]
    net = pb.NetParameter()
    net.layer.add(name="conv", type="Convolution", blobs=[raw_blob(bits), raw_blob(noise.view("<u4"))])
    net.layer.add(name="ip", type="InnerProduct", blobs=[raw_blob(random_blob(3, 24).view("<u4"))])
    original = save(tmp_path / "in.caffemodel", net)
    write_caffemodel(tmp_path / "out.caffemodel", read_caffemodel(original))
    assert (tmp_path / "out.caffemodel").read_bytes() == original.read_bytes()


def test_caffemodel_to_hdf5_and_back(tmp_path: Path) -> None:
    records = [
        LayerBlobs("conv1", "Convolution", [random_blob(4, 3, 3, 3), random_blob(4)]),
        LayerBlobs("bn1", "BatchNorm", [random_blob(4), random_blob(4), np.ones(1, np.float32)]),
        LayerBlobs("scalar", "Parameter", [np.array(np.float32(np.nan))]),
    ]
    write_caffemodel(tmp_path / "a.caffemodel", records)
    write_caffe_hdf5(tmp_path / "a.h5", read_caffemodel(tmp_path / "a.caffemodel"))
    from_hdf5 = read_caffe_hdf5(tmp_path / "a.h5")
    assert [(r.name, r.type, r.origin) for r in from_hdf5] == [
        ("bn1", "", "hdf5"),  # HDF5 lists groups by name
        ("conv1", "", "hdf5"),
        ("scalar", "", "hdf5"),
    ]
    types = {r.name: r.type for r in records}
    for record in from_hdf5:
        record.type = types[record.name]
    write_caffemodel(tmp_path / "b.caffemodel", from_hdf5)
    back = {r.name: r for r in read_caffemodel(tmp_path / "b.caffemodel")}
    for record in records:
        assert back[record.name].type == record.type
        for actual, expected in zip(back[record.name].blobs, record.blobs, strict=True):
            assert_same_bits(actual, expected)


def test_hdf5_layout_is_caffes(tmp_path: Path) -> None:
    weight, bias = random_blob(5, 12), random_blob(5)
    write_caffe_hdf5(
        tmp_path / "w.h5",
        [LayerBlobs("fc", "InnerProduct", [weight, bias]), LayerBlobs("relu", "ReLU", [])],
    )
    with h5py.File(tmp_path / "w.h5", "r") as handle:
        assert list(handle) == ["data"]  # no /diff: weights only, as Net::Save writes
        assert sorted(handle["data"]) == ["fc", "relu"]  # Caffe makes a group per layer
        assert list(handle["data/relu"]) == []
        assert sorted(handle["data/fc"]) == ["0", "1"]
        stored = handle["data/fc/0"]
        assert stored.dtype == np.dtype("<f4")
        assert stored.shape == (5, 12)
        assert stored.compression is None and stored.chunks is None  # H5LTmake_dataset: contiguous
        np.testing.assert_array_equal(stored[()], weight)
        np.testing.assert_array_equal(handle["data/fc/1"][()], bias)
    assert [r.name for r in read_caffe_hdf5(tmp_path / "w.h5")] == ["fc"]  # blob-less groups omitted


def test_hdf5_datasets_are_converted_to_float32(tmp_path: Path) -> None:
    with h5py.File(tmp_path / "w.h5", "w") as handle:
        handle["data/a/0"] = np.array([0.1, 2.0])
        handle["data/a/1"] = np.array([[1, 2]], dtype=np.int32)
    [record] = read_caffe_hdf5(tmp_path / "w.h5")
    assert_same_bits(record.blobs[0], np.array([0.1, 2.0], dtype=np.float32))
    assert_same_bits(record.blobs[1], np.array([[1, 2]], dtype=np.float32))


def test_hdf5_record_with_a_shared_blob_left_out(tmp_path: Path) -> None:
    # Caffe's ToHDF5 saves a shared param only with its owner, leaving a gap at index 0
    bias = random_blob(5)
    write_caffe_hdf5(tmp_path / "w.h5", [LayerBlobs("ip2", "", [None, bias])])
    with h5py.File(tmp_path / "w.h5", "r") as handle:
        assert list(handle["data/ip2"]) == ["1"]
    [record] = read_caffe_hdf5(tmp_path / "w.h5")
    assert record.blobs[0] is None
    assert_same_bits(record.blobs[1], bias)
    with pytest.raises(WeightsError, match="layer 'ip2': blob 0 is missing"):
        write_caffemodel(tmp_path / "m.caffemodel", [record])


def test_write_caffemodel_copies_the_layer_parameters_from_the_net(tmp_path: Path) -> None:
    net = read_net(TINY_NET).message
    weight = random_blob(4, 3, 3, 3)
    write_caffemodel(tmp_path / "m.caffemodel", [LayerBlobs("conv1", "", [weight, random_blob(4)])], net=net)
    model = pb.NetParameter.FromString((tmp_path / "m.caffemodel").read_bytes())
    assert model.name == "tiny"
    [layer] = model.layer
    assert (layer.type, list(layer.bottom), list(layer.top)) == ("Convolution", ["data"], ["conv1"])
    assert layer.convolution_param.num_output == 4
    assert list(layer.blobs[0].shape.dim) == [4, 3, 3, 3]
    assert not layer.blobs[0].HasField("num")


def test_write_caffemodel_without_a_net_states_name_and_type(tmp_path: Path) -> None:
    write_caffemodel(tmp_path / "m.caffemodel", [LayerBlobs("fc", "InnerProduct", [random_blob(2)])])
    [layer] = pb.NetParameter.FromString((tmp_path / "m.caffemodel").read_bytes()).layer
    assert [field.name for field, _ in layer.ListFields()] == ["name", "type", "blobs"]


@pytest.mark.parametrize("name", ["", "a/b", "."])
def test_hdf5_refuses_names_that_are_not_group_names(tmp_path: Path, name: str) -> None:
    with pytest.raises(WeightsError, match="cannot name an HDF5 group"):
        write_caffe_hdf5(tmp_path / "w.h5", [LayerBlobs(name, "", [random_blob(1)])])
    assert not (tmp_path / "w.h5").exists()


# --- matching to a net (CopyTrainedLayersFrom) --------------------------------------------


@pytest.fixture(scope="module")
def shared_net() -> Net:
    return load_net(SHARED_NET)


def complete_records(net: Net) -> list[LayerBlobs]:
    return [
        LayerBlobs(node.name, node.type, [random_blob(*blob.shape) for blob in node.blobs])
        for node in net.nodes
        if node.blobs
    ]


def test_match_by_name_with_notes(shared_net: Net) -> None:
    records = [r for r in complete_records(shared_net) if r.name != "bn1"]
    records.insert(0, LayerBlobs("fc8_old", "InnerProduct", [random_blob(3)]))
    loaded, notes = match_blobs(shared_net, records)
    assert notes == [
        "ignoring layer 'fc8_old' (not in the net)",
        "layer 'bn1' is not in the weights file; it keeps its initial values",
    ]
    assert list(loaded) == ["conv1", "ip1", "ip2"]
    conv1 = next(r for r in records if r.name == "conv1")
    for actual, expected in zip(loaded["conv1"], conv1.blobs, strict=True):
        assert_same_bits(actual, expected)


def test_shared_blobs_take_the_last_written_data(shared_net: Net) -> None:
    # Sharers point at one storage in Caffe; the record copied last wins for all of them
    records = complete_records(shared_net)
    loaded, _ = match_blobs(shared_net, records)
    ip2 = next(r for r in records if r.name == "ip2")
    for name in ("ip1", "ip2"):
        for actual, expected in zip(loaded[name], ip2.blobs, strict=True):
            assert_same_bits(actual, expected)
    loaded, notes = match_blobs(shared_net, [r for r in records if r.name != "ip2"])
    assert notes == []  # ip2 gets ip1's data through sharing
    assert_same_bits(loaded["ip2"][0], loaded["ip1"][0])


def test_blob_count_must_match(shared_net: Net) -> None:
    with pytest.raises(WeightsError) as caught:
        match_blobs(shared_net, [LayerBlobs("conv1", "Convolution", [random_blob(4, 3, 3, 3)])])
    assert str(caught.value) == (
        "<string>:4:1: layer 'conv1' (Convolution): the weights file holds a different number of blobs for the "
        "layer; expected 2, received 1; to learn this layer from scratch instead, rename it"
    )


def test_shape_must_match(shared_net: Net) -> None:
    records = [LayerBlobs("conv1", "Convolution", [random_blob(4, 3, 5, 5), random_blob(4)])]
    with pytest.raises(WeightsError) as caught:
        match_blobs(shared_net, records)
    assert "layer 'conv1' (Convolution): cannot copy blob 0: shape mismatch" in str(caught.value)
    assert "expected (4, 3, 3, 3), received (4, 3, 5, 5)" in str(caught.value)


def test_legacy_4d_blobs_fit_lower_rank_shapes(tmp_path: Path, shared_net: Net) -> None:
    weight, bias = random_blob(5, 144), random_blob(5)
    model = pb.NetParameter()
    model.layer.add(
        name="ip1", type="InnerProduct", blobs=[legacy_blob(weight, (1, 1, 5, 144)), legacy_blob(bias, (1, 1, 1, 5))]
    )
    loaded, _ = match_blobs(shared_net, read_caffemodel(save(tmp_path / "old.caffemodel", model)))
    assert_same_bits(loaded["ip1"][0], weight)
    assert_same_bits(loaded["ip1"][1], bias)


@pytest.mark.parametrize(
    "record",
    [
        # the same 4-D shape through `shape`, not the legacy fields: Caffe compares exactly
        LayerBlobs("ip1", "InnerProduct", [random_blob(1, 1, 5, 144), random_blob(5)]),
        # legacy blobs are right-aligned: (5, 144, 1, 1) is not (5, 144)
        LayerBlobs("ip1", "InnerProduct", [random_blob(5, 144, 1, 1), random_blob(5)], legacy=[True, False]),
        # HDF5 shapes are compared exactly, too
        LayerBlobs("ip1", "", [random_blob(1, 1, 5, 144), random_blob(5)], origin="hdf5"),
    ],
)
def test_shapes_that_caffe_refuses(shared_net: Net, record: LayerBlobs) -> None:
    with pytest.raises(WeightsError, match=r"expected \(5, 144\), received"):
        match_blobs(shared_net, [record])


def test_hdf5_may_lack_shared_blobs_only(tmp_path: Path, shared_net: Net) -> None:
    records = complete_records(shared_net)
    ip1 = next(r for r in records if r.name == "ip1")
    records = [r for r in records if r.name != "ip2"] + [LayerBlobs("ip2", "", [])]
    write_caffe_hdf5(tmp_path / "w.h5", records)
    loaded, notes = match_blobs(shared_net, read_caffe_hdf5(tmp_path / "w.h5"))
    assert notes == []
    assert_same_bits(loaded["ip2"][0], ip1.blobs[0])
    conv = LayerBlobs("conv1", "", [random_blob(4, 3, 3, 3)], origin="hdf5")
    with pytest.raises(WeightsError, match=r"layer 'conv1' .*blob 1 is not in the weights file"):
        match_blobs(shared_net, [conv])
    too_many = LayerBlobs("conv1", "", [random_blob(4, 3, 3, 3), random_blob(4), random_blob(1)], origin="hdf5")
    with pytest.raises(WeightsError, match="different number of blobs for the layer; expected 2, received 3"):
        match_blobs(shared_net, [too_many])


# --- OpenCV, an independent Caffe reader ----------------------------------------------------


def numpy_tiny_net(x: np.ndarray, weights: dict[str, list[np.ndarray]]) -> np.ndarray:
    """TINY_NET by hand: Caffe's conv is a cross-correlation, its pooling rounds up."""
    conv_w, conv_b = weights["conv1"]
    windows = np.lib.stride_tricks.sliding_window_view(x[0], (3, 3), axis=(1, 2))  # C, 6, 6, 3, 3
    conv = np.einsum("chwij,ocij->ohw", windows, conv_w) + conv_b[:, None, None]
    relu = np.maximum(conv, 0)
    size = relu.shape[1]
    pooled_size = -(-(size - 3) // 2) + 1  # ceil((6 - 3) / 2) + 1 = 3
    pooled = np.empty((relu.shape[0], pooled_size, pooled_size), np.float32)
    for h in range(pooled_size):
        for w in range(pooled_size):
            pooled[:, h, w] = relu[:, 2 * h : min(2 * h + 3, size), 2 * w : min(2 * w + 3, size)].max(axis=(1, 2))
    ip_w, ip_b = weights["ip1"]
    logits = ip_w @ pooled.reshape(-1) + ip_b
    exp = np.exp(logits - logits.max())
    return (exp / exp.sum())[None]


def test_opencv_runs_the_written_caffemodel(tmp_path: Path) -> None:
    prototxt = tmp_path / "tiny.prototxt"
    prototxt.write_text(TINY_NET)
    net = load_net(prototxt)
    assert net.layer("ip1").blobs[0].shape == (5, 36)  # 4 channels × 3 × 3 after rounding up
    records = complete_records(net)
    write_caffemodel(tmp_path / "tiny.caffemodel", records, net=read_net(prototxt).message)
    reader = cv2.dnn.readNetFromCaffe(str(prototxt), str(tmp_path / "tiny.caffemodel"))
    x = RNG.standard_normal((1, 3, 8, 8)).astype(np.float32)
    reader.setInput(x)
    actual = reader.forward()
    expected = numpy_tiny_net(x, {r.name: r.blobs for r in records})
    assert actual.shape == (1, 5)
    np.testing.assert_allclose(actual, expected, rtol=0, atol=1e-4)


# --- errors and atomicity -------------------------------------------------------------------


def test_truncated_caffemodel(tmp_path: Path) -> None:
    write_caffemodel(tmp_path / "m.caffemodel", [LayerBlobs("fc", "InnerProduct", [random_blob(64, 64)])])
    data = (tmp_path / "m.caffemodel").read_bytes()
    (tmp_path / "m.caffemodel").write_bytes(data[: len(data) // 2])
    with pytest.raises(WeightsError, match=f"^{re.escape(str(tmp_path / 'm.caffemodel'))}: not a binary NetParameter"):
        read_weights(tmp_path / "m.caffemodel")


@pytest.mark.parametrize(
    "content",
    [TINY_NET.encode(), b"\x89PNG\r\n\x1a\n" + bytes(range(256)), b"", pb.NetParameter(name="x").SerializeToString()],
    ids=["prototxt", "png", "empty", "no-layers"],
)
def test_not_a_caffemodel(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "w.caffemodel"
    path.write_bytes(content)
    with pytest.raises(WeightsError, match=f"^{re.escape(str(path))}: ") as caught:
        read_weights(path)
    assert ("was the prototxt given?" in str(caught.value)) == (content == TINY_NET.encode())


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(WeightsError, match=r"nope.caffemodel: cannot read the file \(No such file"):
        read_weights(tmp_path / "nope.caffemodel")


def test_hdf5_without_data_group(tmp_path: Path) -> None:
    with h5py.File(tmp_path / "w.h5", "w") as handle:
        handle["weights/fc/0"] = np.zeros(3)
    with pytest.raises(WeightsError, match=f"^{re.escape(str(tmp_path / 'w.h5'))}: no /data group"):
        read_weights(tmp_path / "w.h5")


@pytest.mark.parametrize(
    ("entry", "message"),
    [("data/fc/w", "unexpected entry '/data/fc/w'"), ("data/fc/0", "/data/fc/0 is not a numeric dataset")],
)
def test_hdf5_with_foreign_entries(tmp_path: Path, entry: str, message: str) -> None:
    with h5py.File(tmp_path / "w.h5", "w") as handle:
        handle[entry] = np.array([b"text"])
    with pytest.raises(WeightsError, match=f"^{re.escape(str(tmp_path / 'w.h5'))}: layer 'fc': {message}"):
        read_caffe_hdf5(tmp_path / "w.h5")


@pytest.mark.parametrize("writer", [write_caffemodel, write_caffe_hdf5])
def test_failed_write_leaves_the_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, writer) -> None:
    target = tmp_path / "model"
    target.write_bytes(b"previous model")

    def fail(descriptor: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(fileio.os, "fsync", fail)
    with pytest.raises(OSError, match="No space left"):
        writer(target, [LayerBlobs("fc", "InnerProduct", [random_blob(3, 2)])])
    assert target.read_bytes() == b"previous model"
    assert os.listdir(tmp_path) == ["model"]


def test_failed_serialization_leaves_the_old_file(tmp_path: Path) -> None:
    target = tmp_path / "model.caffemodel"
    target.write_bytes(b"previous model")
    with pytest.raises(WeightsError, match="blob 1 is missing"):
        write_caffemodel(target, [LayerBlobs("a", "", [random_blob(2)]), LayerBlobs("b", "", [random_blob(1), None])])
    assert target.read_bytes() == b"previous model"
    assert os.listdir(tmp_path) == ["model.caffemodel"]
