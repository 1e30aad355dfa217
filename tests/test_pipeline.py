"""Input pipelines against Caffe's own data-layer tests and numpy re-computations of its
DataTransformer: HDF5Data, Data (LMDB), ImageData, MemoryData, Input, DummyData, WindowData."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
from pathlib import Path

import cv2
import lmdb
import numpy as np
import pytest

from netdef import load_net
from netdef.blobs import array_to_blobproto
from netdef.data.pipeline import net_dataset
from netdef.errors import DataSourceError, NetDefinitionError
from netdef.proto import netdef_pb2 as pb

from .conftest import REPO


def batches(net, count: int, **kwargs) -> list[dict[str, np.ndarray]]:
    return list(net_dataset(net, **kwargs).take(count).as_numpy_iterator())


def write_lmdb(path: Path, samples: np.ndarray, labels, *, encode: str | None = None) -> Path:
    """A database as convert_imageset writes it: keys in order, raw C×H×W BGR or an encoded image."""
    env = lmdb.open(str(path), map_size=1 << 26)
    with env.begin(write=True) as txn:
        for index, (sample, label) in enumerate(zip(samples, labels, strict=True)):
            if encode:
                ok, buffer = cv2.imencode(f".{encode}", sample.transpose(1, 2, 0))
                assert ok
                datum = pb.Datum(data=buffer.tobytes(), label=int(label), encoded=True)
            else:
                channels, height, width = sample.shape
                datum = pb.Datum(channels=channels, height=height, width=width, data=sample.tobytes(), label=int(label))
            txn.put(f"{index:08d}_image".encode(), datum.SerializeToString())
    env.close()
    return path


def data_net(source: Path, batch: int, transform: str = "", tops: str = 'top: "data" top: "label"') -> str:
    return (
        f'layer {{ name: "data" type: "Data" {tops} transform_param {{ {transform} }} '
        f'data_param {{ source: "{source}" batch_size: {batch} backend: LMDB }} }}\n'
    )


def caffe_transform(sample, crop, h_off, w_off, mirror, *, mean=None, mean_values=None, scale=1.0) -> np.ndarray:
    """data_transformer.cpp's index arithmetic, element by element over flat indices."""
    channels, height, width = sample.shape
    out_h, out_w = (crop, crop) if crop else (height, width)
    flat, out = sample.reshape(-1).astype(np.float32), np.empty(channels * out_h * out_w, np.float32)
    mean_flat = None if mean is None else mean.reshape(-1)
    for c, h, w in itertools.product(range(channels), range(out_h), range(out_w)):
        data_index = (c * height + h_off + h) * width + w_off + w
        top_index = (c * out_h + h) * out_w + (out_w - 1 - w if mirror else w)
        value = flat[data_index]
        if mean_flat is not None:
            value = np.float32(value - mean_flat[data_index])
        elif mean_values is not None:
            value = np.float32(value - np.float32(mean_values[c if len(mean_values) > 1 else 0]))
        out[top_index] = np.float32(value * np.float32(scale))
    return out.reshape(channels, out_h, out_w)


@pytest.fixture
def images() -> np.ndarray:
    return np.random.default_rng(7).integers(0, 256, (10, 3, 12, 10), dtype=np.uint8)


# --- HDF5Data: Caffe's test_hdf5data_layer.cpp ------------------------------------------------


HDF5_NET = (
    'layer { name: "h5" type: "HDF5Data" top: "data" top: "label" top: "label2" '
    'hdf5_data_param { source: "src/caffe/test/test_data/sample_data_list.txt" batch_size: 5 %s } }\n'
)


def test_hdf5_data_reads_caffes_sample_data_as_its_test_expects(caffe_zoo: Path) -> None:
    """TestRead: 10 forward passes of 5 rows through two files (the second's data offset by 2400)."""
    net = load_net(HDF5_NET % "", phase="TRAIN", data_root=caffe_zoo)
    assert [value.shape for value in net.feeds] == [(5, 8, 6, 5), (5, 1), (5, 1)]
    data_size = 8 * 6 * 5
    for iteration, batch in enumerate(batches(net, 10, root=caffe_zoo)):
        assert batch["data"].shape == (5, 8, 6, 5) and batch["label"].shape == (5, 1)
        label_offset = 1 + (0 if iteration % 2 == 0 else 5)
        data_offset = 0 if iteration % 2 == 0 else 5 * data_size
        file_offset = 0 if iteration % 4 < 2 else 2400
        np.testing.assert_array_equal(batch["label"][:, 0], label_offset + np.arange(5))
        np.testing.assert_array_equal(batch["label2"][:, 0], label_offset + 1 + np.arange(5))
        expected = file_offset + data_offset + np.arange(5 * data_size, dtype=np.float32)
        np.testing.assert_array_equal(batch["data"].reshape(-1), expected)


def test_hdf5_shuffle_permutes_files_and_rows_per_pass(caffe_zoo: Path) -> None:
    net = load_net(HDF5_NET % "shuffle: true", phase="TRAIN", data_root=caffe_zoo)
    first = batches(net, 8, root=caffe_zoo, seed=1)
    for epoch in (first[:4], first[4:]):
        rows = np.concatenate([batch["data"][:, 0, 0, 0] for batch in epoch])
        # Each pass reads every row of both files once, one whole file after the other.
        assert sorted(rows) == sorted([*range(0, 2400, 240), *range(2400, 4800, 240)])
        assert len({row >= 2400 for row in rows[:10]}) == 1
        labels = np.concatenate([batch["label"][:, 0] for batch in epoch])
        np.testing.assert_array_equal(labels, (rows % 2400) / 240 + 1)  # rows keep their labels
    order = np.concatenate([batch["data"][:, 0, 0, 0] for batch in first])
    assert not np.array_equal(order, np.sort(order))
    again = batches(net, 8, root=caffe_zoo, seed=1)
    np.testing.assert_array_equal(order, np.concatenate([batch["data"][:, 0, 0, 0] for batch in again]))


# --- Data (LMDB) ------------------------------------------------------------------------------


def test_data_in_test_phase_is_the_exact_transform(tmp_path: Path, images: np.ndarray) -> None:
    """Centred crop, mean_file at the uncropped position, scale; labels; wrap-around in key order."""
    source = write_lmdb(tmp_path / "db", images, range(10, 20))
    mean = np.random.default_rng(1).uniform(0, 255, (3, 12, 10)).astype(np.float32)
    mean_file = tmp_path / "mean.binaryproto"
    mean_file.write_bytes(array_to_blobproto(mean[np.newaxis]).SerializeToString())
    net = load_net(data_net(source, 4, f'crop_size: 8 scale: 0.5 mean_file: "{mean_file}"'), phase="TEST")
    assert [value.shape for value in net.feeds] == [(4, 3, 8, 8), (4,)]
    got = batches(net, 3)
    order = [*range(10), *range(10)][:12]  # batch 2 wraps: records 8, 9, 0, 1
    for number, batch in enumerate(got):
        for item in range(4):
            record = order[number * 4 + item]
            expected = caffe_transform(images[record], 8, 2, 1, False, mean=mean, scale=0.5)
            np.testing.assert_array_equal(batch["data"][item], expected)
            assert batch["label"][item] == 10 + record
        assert batch["label"].dtype == np.float32 and batch["data"].dtype == np.float32


@pytest.mark.parametrize("values", [[104.0, 117.0, 123.0], [128.0]])
def test_data_mean_value_per_channel_or_one(tmp_path: Path, images: np.ndarray, values: list[float]) -> None:
    source = write_lmdb(tmp_path / "db", images, range(10))
    means = " ".join(f"mean_value: {value}" for value in values)
    net = load_net(data_net(source, 5, f"{means} scale: 0.017", tops='top: "data"'), phase="TEST")
    batch = batches(net, 1)[0]
    assert list(batch) == ["data"]
    for item in range(5):
        expected = caffe_transform(images[item], 0, 0, 0, False, mean_values=values, scale=0.017)
        np.testing.assert_array_equal(batch["data"][item], expected)


def matching_transforms(output: np.ndarray, sample: np.ndarray, crop: int) -> list[tuple[int, int, bool]]:
    _, height, width = sample.shape
    return [
        (h, w, mirror)
        for h, w, mirror in itertools.product(range(height - crop + 1), range(width - crop + 1), (False, True))
        if np.array_equal(output, caffe_transform(sample, crop, h, w, mirror, scale=2.0))
    ]


def test_data_in_train_phase_takes_random_crops_and_mirrors(tmp_path: Path, images: np.ndarray) -> None:
    source = write_lmdb(tmp_path / "db", images, range(10))
    net = load_net(data_net(source, 5, "crop_size: 6 mirror: true scale: 2"), phase="TRAIN")
    seen = []
    for number, batch in enumerate(batches(net, 4, seed=3)):
        for item in range(5):
            found = matching_transforms(batch["data"][item], images[(number * 5 + item) % 10], 6)
            assert found, "every output is some crop of its image, mirrored or not"
            seen.extend(found)
    assert {mirror for _, _, mirror in seen} == {False, True}
    assert len({(h, w) for h, w, _ in seen}) > 5


def test_mirror_is_random_in_the_test_phase_too(tmp_path: Path, images: np.ndarray) -> None:
    """Caffe's ``do_mirror = mirror() && Rand(2)`` does not look at the phase; the crop stays centred."""
    source = write_lmdb(tmp_path / "db", images, range(10))
    net = load_net(data_net(source, 10, "crop_size: 6 mirror: true scale: 2"), phase="TEST")
    batch = batches(net, 1)[0]
    mirrors = set()
    for item in range(10):
        found = matching_transforms(batch["data"][item], images[item], 6)
        assert {(h, w) for h, w, _ in found} == {(3, 2)}
        mirrors |= {mirror for _, _, mirror in found}
    assert mirrors == {False, True}


def test_encoded_datums_are_decoded_with_opencv(tmp_path: Path, images: np.ndarray) -> None:
    source = write_lmdb(tmp_path / "db", images, range(10), encode="png")
    net = load_net(data_net(source, 10, "crop_size: 8"), phase="TEST")
    batch = batches(net, 1)[0]
    for item in range(10):
        np.testing.assert_array_equal(batch["data"][item], caffe_transform(images[item], 8, 2, 1, False))
    gray = load_net(data_net(source, 10, "force_gray: true"), phase="TEST")
    assert gray.feeds[0].shape == (10, 1, 12, 10)
    batch = batches(gray, 1)[0]
    for item in range(10):
        png = cv2.imencode(".png", images[item].transpose(1, 2, 0))[1]
        decoded = cv2.imdecode(png, cv2.IMREAD_GRAYSCALE)  # Caffe's DecodeDatumToCVMat(datum, false)
        np.testing.assert_array_equal(batch["data"][item, 0], decoded.astype(np.float32))


def test_skip_batches_is_dropping_that_many_batches(tmp_path: Path, images: np.ndarray) -> None:
    source = write_lmdb(tmp_path / "db", images, range(10))
    net = load_net(data_net(source, 3, "crop_size: 6 mirror: true"), phase="TRAIN")
    full = batches(net, 9, seed=11)
    resumed = batches(net, 4, seed=11, skip_batches=5)
    for a, b in zip(full[5:], resumed, strict=True):
        np.testing.assert_array_equal(a["data"], b["data"])
        np.testing.assert_array_equal(a["label"], b["label"])
    again = batches(net, 9, seed=11)
    other = batches(net, 9, seed=12)
    assert all(np.array_equal(a["data"], b["data"]) for a, b in zip(full, again, strict=True))
    assert not all(np.array_equal(a["data"], b["data"]) for a, b in zip(full, other, strict=True))


def test_channels_last_batches_are_the_caffe_batches_transposed(tmp_path: Path, images: np.ndarray) -> None:
    source = write_lmdb(tmp_path / "db", images, range(10))
    net = load_net(data_net(source, 3, "crop_size: 6 mirror: true"), phase="TRAIN")
    caffe = batches(net, 3, seed=5)
    native = list(itertools.islice(net_dataset(net, seed=5, layout="channels_last").as_numpy_iterator(), 3))
    for a, b in zip(caffe, native, strict=True):
        np.testing.assert_array_equal(a["data"].transpose(0, 2, 3, 1), b["data"])
        np.testing.assert_array_equal(a["label"], b["label"])
    with pytest.raises(NetDefinitionError, match="unknown layout"):
        net_dataset(net, layout="nchw")


def test_leveldb_and_mismatched_samples_are_clear_errors(tmp_path: Path, images: np.ndarray) -> None:
    source = write_lmdb(tmp_path / "db", images, range(10))
    text = data_net(source, 2, "").replace("backend: LMDB", "")
    net = load_net(text, phase="TEST", data_shapes={"data": (2, 3, 12, 10)})
    with pytest.raises(DataSourceError, match="LMDB databases only"):
        net_dataset(net)
    wrong = load_net(data_net(source, 2, ""), phase="TEST", data_shapes={"data": (2, 3, 12, 12)})
    with pytest.raises(DataSourceError, match=r"layer 'data' \(Data\).*does not have the shape of top 'data'"):
        net_dataset(wrong)


def test_lenet_pipelines_feed_the_compiled_model(caffe_zoo: Path, tmp_path: Path) -> None:
    from netdef.keras.compiler import compile_net, forward

    rng = np.random.default_rng(0)
    digits = {}
    for name, count in (("mnist_train_lmdb", 70), ("mnist_test_lmdb", 110)):
        digits[name] = rng.integers(0, 256, (count, 1, 28, 28), dtype=np.uint8)
        (tmp_path / "examples" / "mnist").mkdir(parents=True, exist_ok=True)
        write_lmdb(tmp_path / "examples" / "mnist" / name, digits[name], np.arange(count) % 10)
    prototxt = caffe_zoo / "examples/mnist/lenet_train_test.prototxt"
    for phase, name, batch_size in (("TRAIN", "mnist_train_lmdb", 64), ("TEST", "mnist_test_lmdb", 100)):
        net = load_net(prototxt, phase=phase, data_root=tmp_path)
        compiled = compile_net(net)
        batch = batches(net, 1, root=tmp_path)[0]
        assert list(batch) == [tensor.name for tensor in compiled.model.inputs]
        for tensor in compiled.model.inputs:
            assert batch[tensor.name].shape[1:] == tuple(tensor.shape[1:])
        assert batch["data"].shape == (batch_size, 1, 28, 28) and batch["label"].shape == (batch_size,)
        np.testing.assert_array_equal(batch["data"], digits[name][:batch_size].astype(np.float32) * 0.00390625)
        np.testing.assert_array_equal(batch["label"], np.arange(batch_size) % 10)
        outputs = forward(compiled, [batch[tensor.name] for tensor in compiled.model.inputs])
        assert all(np.isfinite(output).all() for output in outputs)


# --- ImageData --------------------------------------------------------------------------------


@pytest.fixture
def image_folder(tmp_path: Path) -> tuple[Path, list[tuple[str, int]]]:
    rng = np.random.default_rng(3)
    listed = []
    for index in range(7):
        name = f"im {index}.png" if index == 2 else f"im{index}.png"  # a path with a space
        shape = (20 + index, 30 - index, 3)
        cv2.imwrite(str(tmp_path / name), rng.integers(0, 256, shape, dtype=np.uint8))
        listed.append((name, 100 + index))
    (tmp_path / "list.txt").write_text("".join(f"{name} {label}\n" for name, label in listed))
    return tmp_path, listed


def image_net(folder: Path, batch: int, extra: str = "", transform: str = "") -> str:
    return (
        'layer { name: "images" type: "ImageData" top: "data" top: "label" '
        f"transform_param {{ {transform} }} "
        f'image_data_param {{ source: "{folder}/list.txt" root_folder: "{folder}/" batch_size: {batch} '
        f"new_height: 16 new_width: 18 {extra} }} }}\n"
    )


def test_image_data_resizes_with_opencv_in_list_order(image_folder) -> None:
    folder, listed = image_folder
    net = load_net(image_net(folder, 3), phase="TEST")
    assert [value.shape for value in net.feeds] == [(3, 3, 16, 18), (3,)]
    got = batches(net, 3)
    order = [index % 7 for index in range(9)]
    for number, batch in enumerate(got):
        for item in range(3):
            name, label = listed[order[number * 3 + item]]
            expected = cv2.resize(cv2.imread(str(folder / name)), (18, 16)).transpose(2, 0, 1)
            np.testing.assert_array_equal(batch["data"][item], expected.astype(np.float32))
            assert batch["label"][item] == label


def test_image_data_in_gray(image_folder) -> None:
    folder, listed = image_folder
    net = load_net(image_net(folder, 7, "is_color: false", "crop_size: 10"), phase="TEST")
    assert net.feeds[0].shape == (7, 1, 10, 10)
    batch = batches(net, 1)[0]
    for item, (name, _) in enumerate(listed):
        gray = cv2.resize(cv2.imread(str(folder / name), cv2.IMREAD_GRAYSCALE), (18, 16))
        np.testing.assert_array_equal(batch["data"][item, 0], gray[3:13, 4:14].astype(np.float32))


def test_image_data_shuffle_is_a_seeded_permutation_per_epoch(image_folder) -> None:
    folder, listed = image_folder
    net = load_net(image_net(folder, 7, "shuffle: true"), phase="TRAIN")
    first = batches(net, 3, seed=4)
    epochs = [batch["label"].astype(int).tolist() for batch in first]
    assert all(sorted(epoch) == list(range(100, 107)) for epoch in epochs)
    assert len({tuple(epoch) for epoch in epochs}) > 1, "reshuffled each epoch"
    again = batches(net, 3, seed=4)
    assert [batch["label"].astype(int).tolist() for batch in again] == epochs
    other = batches(net, 3, seed=5)
    assert [batch["label"].astype(int).tolist() for batch in other] != epochs
    by_label = {label: name for name, label in listed}
    for item, label in enumerate(first[1]["label"].astype(int)):
        expected = cv2.resize(cv2.imread(str(folder / by_label[label])), (18, 16)).transpose(2, 0, 1)
        np.testing.assert_array_equal(first[1]["data"][item], expected.astype(np.float32))
    shifted = batches(net, 2, seed=4, skip_batches=1)
    assert [batch["label"].astype(int).tolist() for batch in shifted] == epochs[1:]


def test_image_data_rand_skip_starts_later_in_the_list(image_folder) -> None:
    folder, _ = image_folder
    net = load_net(image_net(folder, 7, "rand_skip: 5"), phase="TRAIN")
    labels = batches(net, 1, seed=0)[0]["label"].astype(int).tolist()
    skip = labels[0] - 100
    assert 0 <= skip < 5 and labels == [100 + (skip + index) % 7 for index in range(7)]


def test_a_missing_image_is_a_data_source_error(tmp_path: Path) -> None:
    (tmp_path / "list.txt").write_text("missing.png 1\n")
    net = load_net(image_net(tmp_path, 1), phase="TEST", data_shapes={"images": (1, 3, 16, 18)})
    with pytest.raises(DataSourceError, match=r"Could not load .*missing\.png"):
        net_dataset(net)


# --- MemoryData, Input, DummyData -------------------------------------------------------------


def test_memory_data_serves_batches_in_order_and_wraps() -> None:
    net = load_net(
        'layer { name: "mem" type: "MemoryData" top: "data" top: "label" '
        "memory_data_param { batch_size: 2 channels: 1 height: 2 width: 3 } }\n"
    )
    data = np.arange(6 * 6, dtype=np.float64).reshape(6, 1, 2, 3)
    labels = np.arange(6).reshape(6, 1, 1, 1)  # pycaffe's set_input_arrays labels are 4-D
    got = batches(net, 4, arrays={"data": data, "label": labels})
    for number, batch in enumerate(got):
        start = (number % 3) * 2
        np.testing.assert_array_equal(batch["data"], data[start : start + 2].astype(np.float32))
        np.testing.assert_array_equal(batch["label"], np.arange(start, start + 2, dtype=np.float32))
        assert batch["label"].shape == (2,) and batch["data"].dtype == np.float32
    with pytest.raises(NetDefinitionError, match="multiple of batch_size"):
        net_dataset(net, arrays={"data": data[:5], "label": labels[:5]})
    with pytest.raises(NetDefinitionError, match="no array for top 'label'"):
        net_dataset(net, arrays={"data": data})


def test_input_arrays_repeat_or_go_batch_by_batch() -> None:
    net = load_net(
        'layer { name: "in" type: "Input" top: "x" top: "y" '
        "input_param { shape { dim: 2 dim: 3 } shape { dim: 2 } } }\n"
    )
    x = np.arange(6 * 3, dtype=np.float32).reshape(6, 3)
    y = np.array([5.0, 6.0], dtype=np.float32)
    got = batches(net, 4, arrays={"x": x, "y": y})
    for number, batch in enumerate(got):
        np.testing.assert_array_equal(batch["x"], x[(number % 3) * 2 : (number % 3) * 2 + 2])
        np.testing.assert_array_equal(batch["y"], y)
    with pytest.raises(NetDefinitionError, match="does not fit its shape"):
        net_dataset(net, arrays={"x": x[:5], "y": y})
    with pytest.raises(NetDefinitionError, match="no Input or MemoryData top named z"):
        net_dataset(net, arrays={"x": x, "y": y, "z": y})


def test_dummy_data_refills_random_fillers_and_keeps_constants() -> None:
    net = load_net(
        'layer { name: "dummy" type: "DummyData" top: "noise" top: "ones" top: "zeros" '
        "dummy_data_param { shape { dim: 4 dim: 50 } shape { dim: 4 } shape { dim: 3 dim: 2 } "
        'data_filler { type: "gaussian" std: 2 } data_filler { type: "constant" value: 1 } '
        'data_filler { type: "constant" } } }\n',
        phase="TRAIN",
    )
    got = batches(net, 3, seed=2)
    assert [batch["noise"].shape for batch in got] == [(4, 50)] * 3
    assert not np.array_equal(got[0]["noise"], got[1]["noise"])
    assert all(np.all(batch["ones"] == 1) and np.all(batch["zeros"] == 0) for batch in got)
    noise = np.concatenate([batch["noise"] for batch in got])
    assert noise.std() == pytest.approx(2.0, rel=0.1)
    np.testing.assert_array_equal(batches(net, 1, seed=2)[0]["noise"], got[0]["noise"])


# --- WindowData -------------------------------------------------------------------------------


def test_window_data_warps_background_then_foreground_windows(tmp_path: Path) -> None:
    image = np.random.default_rng(5).integers(0, 256, (40, 50, 3), dtype=np.uint8)
    cv2.imwrite(str(tmp_path / "a.png"), image)
    (tmp_path / "windows.txt").write_text(
        "# 0\na.png\n3\n40\n50\n2\n7 0.9 10 5 29 24\n3 0.1 0 0 19 9\n"  # label overlap x1 y1 x2 y2
    )
    net = load_net(
        'layer { name: "win" type: "WindowData" top: "data" top: "label" '
        "transform_param { crop_size: 8 mean_value: 100 mean_value: 110 mean_value: 120 } "
        f'window_data_param {{ source: "{tmp_path}/windows.txt" root_folder: "{tmp_path}/" batch_size: 4 '
        "fg_fraction: 0.5 scale: 0.5 } }\n",
        phase="TRAIN",
    )
    assert net.feeds[0].shape == (4, 3, 8, 8)
    batch = batches(net, 1)[0]
    np.testing.assert_array_equal(batch["label"], [0, 0, 7, 7])  # background first, its label forced to 0
    mean = np.array([100, 110, 120], np.float32).reshape(3, 1, 1)
    for item, (x1, y1, x2, y2) in ((0, (0, 0, 19, 9)), (2, (10, 5, 29, 24))):
        warped = cv2.resize(image[y1 : y2 + 1, x1 : x2 + 1], (8, 8), interpolation=cv2.INTER_LINEAR)
        expected = (warped.transpose(2, 0, 1).astype(np.float32) - mean) * np.float32(0.5)
        np.testing.assert_array_equal(batch["data"][item], expected)


def test_window_data_context_pad_leaves_zero_padding_where_the_window_leaves_the_image(tmp_path: Path) -> None:
    cv2.imwrite(str(tmp_path / "a.png"), np.full((30, 30, 3), 200, np.uint8))
    (tmp_path / "windows.txt").write_text("# 0\na.png\n3\n30\n30\n2\n1 0.9 0 0 9 9\n1 0.1 10 10 19 19\n")
    net = load_net(
        'layer { name: "win" type: "WindowData" top: "data" top: "label" transform_param { crop_size: 12 } '
        f'window_data_param {{ source: "{tmp_path}/windows.txt" root_folder: "{tmp_path}/" batch_size: 2 '
        "fg_fraction: 0.5 context_pad: 1 } }\n",
        phase="TRAIN",
    )
    batch = batches(net, 1)[0]
    foreground = batch["data"][1]  # the window at the corner grows past the top-left edge
    assert np.all(foreground[:, 0, :] == 0) and np.all(foreground[:, :, 0] == 0)
    assert np.all(foreground[:, 2:, 2:] == 200)
    assert np.all(batch["data"][0] == 200)  # the background window grows inside the image


# --- backends ---------------------------------------------------------------------------------


def test_the_pipeline_feeds_a_model_on_the_torch_backend(tmp_path: Path, images: np.ndarray) -> None:
    source = write_lmdb(tmp_path / "db", images, range(10))
    script = (
        "import keras, numpy as np\n"
        "from netdef import load_net\n"
        "from netdef.data.pipeline import net_dataset\n"
        "from netdef.fillers import initialize_weights\n"
        "from netdef.keras.compiler import compile_net\n"
        f"net = load_net({data_net(source, 4, 'crop_size: 8 mirror: true')!r} + "
        '\'layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip" '
        "inner_product_param { num_output: 10 } }\\n"
        'layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss" }\', '
        "phase='TRAIN')\n"
        "compiled = compile_net(net)\n"
        "initialize_weights(compiled)\n"
        "batch = next(net_dataset(net).as_numpy_iterator())\n"
        "loss = compiled.model(batch, training=True)\n"
        "print(keras.backend.backend(), float(keras.ops.convert_to_numpy(loss)))\n"
    )
    env = {**os.environ, "KERAS_BACKEND": "torch"}
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, env=env, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr[-3000:]
    backend, loss = result.stdout.split()[-2:]
    # InnerProduct's default fillers give zero weights, so the prediction is uniform over 10 classes.
    assert backend == "torch" and float(loss) == pytest.approx(np.log(10), rel=1e-5)
