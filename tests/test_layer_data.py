"""Shapes of the data layers, read from real LMDB, HDF5, image and window files.

Fixtures are written here with the same libraries Caffe's tools use (an LMDB of Datum
records, h5py datasets, OpenCV images), plus Caffe's own sample_data.h5.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import h5py
import lmdb
import numpy as np
import pytest
from google.protobuf import text_format

from netdef.errors import DataSourceError, ShapeError
from netdef.layers.registry import DataOptions, LayerContext, Shape, lookup
from netdef.proto import netdef_pb2 as pb


def tops_of(text: str, data: DataOptions | None = None) -> list[Shape]:
    layer = text_format.Parse(text, pb.LayerParameter())
    layer.name = layer.name or "data"
    spec = lookup(layer.type)
    assert spec is not None
    return spec.shape(LayerContext(layer=layer, bottoms=[], data=data or DataOptions()))


def raw_datum(channels: int, height: int, width: int) -> bytes:
    pixels = np.arange(channels * height * width, dtype=np.uint8).tobytes()
    return pb.Datum(channels=channels, height=height, width=width, data=pixels, label=1).SerializeToString()


def encoded_datum(image: np.ndarray, extension: str = ".png") -> bytes:
    ok, encoded = cv2.imencode(extension, image)
    assert ok
    return pb.Datum(data=encoded.tobytes(), label=0, encoded=True).SerializeToString()


def write_lmdb(path: Path, records: dict[bytes, bytes]) -> Path:
    with lmdb.open(str(path), map_size=1 << 22) as env, env.begin(write=True) as txn:
        for key, value in records.items():
            txn.put(key, value)
    return path


def data_layer(source: Path | str, extra: str = "", transform: str = "") -> str:
    return (
        'name: "data" type: "Data" top: "data" top: "label" '
        f'data_param {{ source: "{source}" batch_size: 4 backend: LMDB {extra} }} '
        f"transform_param {{ {transform} }}"
    )


# --- Data (LMDB) ---------------------------------------------------------------------


def test_data_reads_the_first_record_in_key_order(tmp_path: Path) -> None:
    db = write_lmdb(tmp_path / "db", {b"00000001_b": raw_datum(1, 2, 2), b"00000000_a": raw_datum(3, 5, 6)})
    assert tops_of(data_layer(db)) == [(4, 3, 5, 6), (4,)]


def test_data_crop_and_single_top(tmp_path: Path) -> None:
    db = write_lmdb(tmp_path / "db", {b"a": raw_datum(3, 5, 6)})
    text = f'type: "Data" top: "data" data_param {{ source: "{db}" batch_size: 2 backend: LMDB }} '
    assert tops_of(text + "transform_param { crop_size: 4 }") == [(2, 3, 4, 4)]


def test_data_crop_larger_than_the_datum(tmp_path: Path) -> None:
    db = write_lmdb(tmp_path / "db", {b"a": raw_datum(3, 5, 6)})
    with pytest.raises(ShapeError, match="crop_size 6 does not fit"):
        tops_of(data_layer(db, transform="crop_size: 6"))


def test_data_source_relative_to_the_root(tmp_path: Path) -> None:
    write_lmdb(tmp_path / "train_lmdb", {b"a": raw_datum(1, 28, 28)})
    assert tops_of(data_layer("train_lmdb"), DataOptions(root=tmp_path)) == [(4, 1, 28, 28), (4,)]


@pytest.mark.parametrize(
    ("image_channels", "transform", "channels"),
    [
        (1, "", 1),  # native: a gray PNG stays gray
        (3, "", 3),
        (1, "force_color: true", 3),
        (3, "force_gray: true", 1),
    ],
)
def test_data_decodes_encoded_datums(tmp_path: Path, image_channels: int, transform: str, channels: int) -> None:
    image = np.full((8, 10, image_channels), 200, np.uint8).squeeze()
    db = write_lmdb(tmp_path / "db", {b"a": encoded_datum(image)})
    assert tops_of(data_layer(db, transform=transform)) == [(4, channels, 8, 10), (4,)]


def test_data_encoded_jpeg_with_crop(tmp_path: Path) -> None:
    db = write_lmdb(tmp_path / "db", {b"a": encoded_datum(np.zeros((32, 40, 3), np.uint8), ".jpg")})
    assert tops_of(data_layer(db, transform="crop_size: 28")) == [(4, 3, 28, 28), (4,)]


def test_data_force_color_and_gray_together(tmp_path: Path) -> None:
    db = write_lmdb(tmp_path / "db", {b"a": encoded_datum(np.zeros((4, 4), np.uint8))})
    with pytest.raises(ShapeError, match="both force_color and force_gray"):
        tops_of(data_layer(db, transform="force_color: true force_gray: true"))


def test_data_undecodable_image(tmp_path: Path) -> None:
    db = write_lmdb(tmp_path / "db", {b"a": pb.Datum(data=b"not an image", encoded=True).SerializeToString()})
    with pytest.raises(DataSourceError, match="OpenCV cannot decode"):
        tops_of(data_layer(db))


def test_data_record_that_is_not_a_datum(tmp_path: Path) -> None:
    db = write_lmdb(tmp_path / "db", {b"a": b"\xff\xff\xff"})
    with pytest.raises(DataSourceError, match="not a Datum"):
        tops_of(data_layer(db))


def test_data_empty_database(tmp_path: Path) -> None:
    db = write_lmdb(tmp_path / "db", {})
    with pytest.raises(DataSourceError, match="empty"):
        tops_of(data_layer(db))


def test_data_not_an_lmdb(tmp_path: Path) -> None:
    (tmp_path / "db").mkdir()
    (tmp_path / "db" / "data.mdb").write_bytes(b"garbage" * 100)
    with pytest.raises(DataSourceError, match="not a readable LMDB"):
        tops_of(data_layer(tmp_path / "db"))


def test_data_missing_source_names_layer_path_and_remedy(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere_lmdb"
    with pytest.raises(DataSourceError) as caught:
        tops_of(data_layer(missing).replace('name: "data"', 'name: "mnist"'))
    message = str(caught.value)
    assert "layer 'mnist' (Data)" in message
    assert str(missing) in message
    assert "give --data-shape mnist=N,C,H,W" in message


def test_data_leveldb_default_backend_is_refused_clearly(tmp_path: Path) -> None:
    write_lmdb(tmp_path / "db", {b"a": raw_datum(1, 2, 2)})
    text = f'type: "Data" top: "data" data_param {{ source: "{tmp_path / "db"}" batch_size: 1 }}'
    with pytest.raises(DataSourceError) as caught:
        tops_of(text)
    assert "LEVELDB" in str(caught.value)
    assert "backend: LMDB" in str(caught.value)


@pytest.mark.parametrize("key", ["data", "images"])
def test_data_shape_override_by_layer_or_top_spares_the_source(key: str) -> None:
    text = (
        'name: "data" type: "Data" top: "images" top: "label" '
        'data_param { source: "/no/such/db" batch_size: 64 } transform_param { crop_size: 227 }'
    )
    assert tops_of(text, DataOptions(shapes={key: (8, 3, 32, 32)})) == [(8, 3, 32, 32), (8,)]


# --- ImageData -------------------------------------------------------------------------


def image_data_layer(root: Path, listing: str, param: str = "", transform: str = "") -> str:
    (root / "list.txt").write_text(listing)
    return (
        f'type: "ImageData" top: "data" top: "label" image_data_param {{ source: "{root}/list.txt" '
        f'root_folder: "{root}/" batch_size: 5 {param} }} '
        f"transform_param {{ {transform} }}"
    )


@pytest.fixture
def images(tmp_path: Path) -> Path:
    cv2.imwrite(str(tmp_path / "cat.jpg"), np.zeros((36, 48, 3), np.uint8))
    cv2.imwrite(str(tmp_path / "cat gray.png"), np.zeros((20, 30), np.uint8))
    return tmp_path


def test_image_data_reads_the_first_listed_image(images: Path) -> None:
    text = image_data_layer(images, "cat.jpg 0\ncat gray.png 1\n")
    assert tops_of(text) == [(5, 3, 36, 48), (5,)]


def test_image_data_path_with_spaces_splits_at_the_last_space(images: Path) -> None:
    assert tops_of(image_data_layer(images, "cat gray.png 1\n")) == [(5, 3, 20, 30), (5,)]
    gray = image_data_layer(images, "cat gray.png 1\n", "is_color: false")
    assert tops_of(gray) == [(5, 1, 20, 30), (5,)]


def test_image_data_resize_then_crop(images: Path) -> None:
    text = image_data_layer(images, "cat.jpg 0\n", "new_height: 32 new_width: 40", "crop_size: 24")
    assert tops_of(text) == [(5, 3, 24, 24), (5,)]


def test_image_data_errors(images: Path) -> None:
    with pytest.raises(ShapeError, match="new_height and new_width together"):
        tops_of(image_data_layer(images, "cat.jpg 0\n", "new_height: 32"))
    with pytest.raises(DataSourceError, match="empty"):
        tops_of(image_data_layer(images, ""))
    with pytest.raises(DataSourceError, match="cannot read its first image"):
        tops_of(image_data_layer(images, "dog.jpg 0\n"))
    with pytest.raises(DataSourceError, match="No such file"):
        tops_of('type: "ImageData" top: "d" top: "l" image_data_param { source: "/no/list.txt" batch_size: 1 }')


# --- HDF5Data --------------------------------------------------------------------------


def test_hdf5_data_reads_caffe_sample_data(caffe_zoo: Path) -> None:
    """Caffe's test net: data 10×8×6×5, label and label2 10×1 (test_hdf5data_layer.cpp)."""
    text = (
        'type: "HDF5Data" top: "data" top: "label" top: "label2" '
        'hdf5_data_param { source: "src/caffe/test/test_data/sample_data_list.txt" batch_size: 5 }'
    )
    assert tops_of(text, DataOptions(root=caffe_zoo)) == [(5, 8, 6, 5), (5, 1), (5, 1)]


@pytest.fixture
def h5_list(tmp_path: Path) -> Path:
    with h5py.File(tmp_path / "train.h5", "w") as file:
        file["data"] = np.zeros((7, 3, 4), np.float32)
        file["label"] = np.zeros((7,), np.float32)
        file["short"] = np.zeros((6, 2), np.float32)
        file["scalar"] = np.float32(1)
    listing = tmp_path / "train.txt"
    listing.write_text(f"{tmp_path / 'train.h5'}\n{tmp_path / 'other.h5'}\n")
    return listing


def hdf5_layer(listing: Path, *tops: str, extra: str = "") -> str:
    named = " ".join(f'top: "{t}"' for t in tops)
    return f'type: "HDF5Data" {named} hdf5_data_param {{ source: "{listing}" batch_size: 2 }} {extra}'


def test_hdf5_data_tops_are_datasets(h5_list: Path) -> None:
    assert tops_of(hdf5_layer(h5_list, "data", "label")) == [(2, 3, 4), (2,)]


def test_hdf5_data_errors(h5_list: Path, tmp_path: Path) -> None:
    with pytest.raises(DataSourceError, match="no dataset 'missing'"):
        tops_of(hdf5_layer(h5_list, "data", "missing"))
    with pytest.raises(DataSourceError, match="differ in their first dimension"):
        tops_of(hdf5_layer(h5_list, "data", "short"))
    with pytest.raises(DataSourceError, match="scalar"):
        tops_of(hdf5_layer(h5_list, "scalar"))
    with pytest.raises(ShapeError, match="remove transform_param"):
        tops_of(hdf5_layer(h5_list, "data", extra="transform_param { scale: 0.5 }"))
    (tmp_path / "empty.txt").write_text("\n")
    with pytest.raises(DataSourceError, match="list of HDF5 files is empty"):
        tops_of(hdf5_layer(tmp_path / "empty.txt", "data"))
    (tmp_path / "bad.h5").write_bytes(b"not hdf5")
    (tmp_path / "bad.txt").write_text(str(tmp_path / "bad.h5"))
    with pytest.raises(DataSourceError, match="not a readable HDF5 file"):
        tops_of(hdf5_layer(tmp_path / "bad.txt", "data"))


def test_hdf5_data_overrides_spare_the_file(h5_list: Path) -> None:
    text = hdf5_layer(Path("/no/list.txt"), "data", "label")
    options = DataOptions(shapes={"data": (2, 3, 4), "label": (2, 1)})
    assert tops_of(text, options) == [(2, 3, 4), (2, 1)]
    # Tops without a shape of their own are labels, one per sample.
    assert tops_of(text, DataOptions(shapes={"data": (8, 3, 4)})) == [(8, 3, 4), (8,)]
    # Even when the file could be read.
    options = DataOptions(shapes={"label": (5, 1)})
    assert tops_of(hdf5_layer(h5_list, "data", "label"), options) == [(5,), (5, 1)]


# --- WindowData ------------------------------------------------------------------------

WINDOWS = """# 0
/images/000001.jpg
3
500
353
2
1 0.9 10 10 100 100
0 0.1 0 0 50 50
# 1
/images/000002.jpg
1
375
500
1
2 0.7 5 5 60 60
"""


def window_layer(path: Path, crop: int = 227) -> str:
    return (
        f'type: "WindowData" top: "data" top: "label" window_data_param {{ source: "{path}" '
        "batch_size: 128 } "
        f"transform_param {{ crop_size: {crop} }}"
    )


def test_window_data_channels_from_the_last_header(tmp_path: Path) -> None:
    (tmp_path / "windows.txt").write_text(WINDOWS)
    assert tops_of(window_layer(tmp_path / "windows.txt")) == [(128, 1, 227, 227), (128,)]


def test_window_data_errors(tmp_path: Path) -> None:
    path = tmp_path / "windows.txt"
    path.write_text(WINDOWS)
    with pytest.raises(ShapeError, match=r"transform_param\.crop_size > 0"):
        tops_of(window_layer(path, crop=0))
    path.write_text("")
    with pytest.raises(DataSourceError, match="window file is empty"):
        tops_of(window_layer(path))
    path.write_text(WINDOWS.replace("# 1", "! 1"))
    with pytest.raises(DataSourceError, match="malformed"):
        tops_of(window_layer(path))
    path.write_text(WINDOWS[:-10])
    with pytest.raises(DataSourceError, match="malformed"):
        tops_of(window_layer(path))


def test_window_data_override() -> None:
    text = window_layer(Path("/no/windows.txt"))
    assert tops_of(text, DataOptions(shapes={"data": (16, 3, 227, 227)})) == [
        (16, 3, 227, 227),
        (16,),
    ]


# --- Input overrides -------------------------------------------------------------------


def test_input_shapes_from_overrides() -> None:
    text = 'name: "input" type: "Input" top: "data" top: "im_info"'
    options = DataOptions(shapes={"data": (1, 3, 600, 800), "im_info": (1, 3)})
    assert tops_of(text, options) == [(1, 3, 600, 800), (1, 3)]
    # The layer's name stands for its first top; a given shape wins over the written one.
    written = 'name: "input" type: "Input" top: "data" input_param { shape { dim: 10 dim: 3 dim: 227 dim: 227 } }'
    assert tops_of(written, DataOptions(shapes={"input": (1, 3, 227, 227)})) == [(1, 3, 227, 227)]
