"""Datum ⇄ numpy and LMDB access, against Caffe's layout (CVMatToDatum), OpenCV's codecs and the plain lmdb package."""

from __future__ import annotations

import cv2
import lmdb
import numpy as np
import pytest

from netdef.data.datum import (
    array_to_datum,
    cv_mat_to_datum,
    datum_to_array,
    decode_datum,
    encode_image,
    encoded_datum,
)
from netdef.data.lmdb_io import LmdbWriter, count, iter_datums, iter_records, open_lmdb
from netdef.errors import DataSourceError
from netdef.proto import netdef_pb2 as pb


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1701)


def test_cv_mat_to_datum_is_chw_bgr_as_caffe(rng: np.random.Generator) -> None:
    image = rng.integers(0, 256, (5, 7, 3), dtype=np.uint8)  # OpenCV's H x W x BGR
    datum = cv_mat_to_datum(image, label=4)
    assert (datum.channels, datum.height, datum.width, datum.label, datum.encoded) == (3, 5, 7, 4, False)
    data = datum.data
    for h in range(5):  # Caffe's loop: datum_index = (c * height + h) * width + w
        for w in range(7):
            for c in range(3):
                assert data[(c * 5 + h) * 7 + w] == image[h, w, c]
    np.testing.assert_array_equal(datum_to_array(datum), image.transpose(2, 0, 1))


def test_grey_image_is_one_channel(rng: np.random.Generator) -> None:
    image = rng.integers(0, 256, (4, 6), dtype=np.uint8)
    datum = cv_mat_to_datum(image)
    assert (datum.channels, datum.height, datum.width) == (1, 4, 6)
    np.testing.assert_array_equal(datum_to_array(datum), image[np.newaxis])


def test_array_to_datum_round_trips_as_pycaffe(rng: np.random.Generator) -> None:
    pixels = rng.integers(0, 256, (3, 4, 5), dtype=np.uint8)
    datum = array_to_datum(pixels, label=7)
    assert datum.data == pixels.tobytes() and not datum.float_data and datum.label == 7
    back = datum_to_array(pb.Datum.FromString(datum.SerializeToString()))
    assert back.dtype == np.uint8 and back.flags.writeable
    np.testing.assert_array_equal(back, pixels)

    features = rng.standard_normal((2, 3, 1)).astype(np.float32)
    datum = array_to_datum(features)
    assert not datum.data and len(datum.float_data) == 6
    back = datum_to_array(datum)
    assert back.dtype == np.float32
    np.testing.assert_array_equal(back, features)

    # pycaffe's test_io: a datum without a label serializes smaller than one with
    assert len(array_to_datum(pixels).SerializeToString()) < len(array_to_datum(pixels, 1).SerializeToString())
    assert not array_to_datum(pixels).HasField("label")


def test_float64_arrays_become_float_data(rng: np.random.Generator) -> None:
    values = rng.standard_normal((1, 2, 2))
    np.testing.assert_array_equal(datum_to_array(array_to_datum(values)), values.astype(np.float32))


def test_array_to_datum_needs_three_axes() -> None:
    with pytest.raises(DataSourceError, match="Incorrect array shape"):
        array_to_datum(np.zeros((4, 4), dtype=np.uint8))


@pytest.mark.parametrize(
    ("datum", "expected"),
    [
        (pb.Datum(channels=3, height=2, width=2, data=b"\x00" * 11), "expected 12 bytes, received 11 bytes"),
        (pb.Datum(channels=1, height=2, width=2, float_data=[1.0, 2.0]), "expected 4 values, received 2 values"),
        (pb.Datum(channels=1, height=1, width=1), "expected 1 values, received 0 values"),
    ],
)
def test_sizes_that_do_not_match_raise(datum: pb.Datum, expected: str) -> None:
    with pytest.raises(DataSourceError, match=expected):
        datum_to_array(datum)


def test_encoded_datums_decode_natively_like_caffe(rng: np.random.Generator) -> None:
    colour = rng.integers(0, 256, (9, 11, 3), dtype=np.uint8)
    png = encoded_datum(encode_image(colour, "png"), 3)
    assert png.encoded and png.label == 3 and not png.HasField("channels")
    np.testing.assert_array_equal(datum_to_array(png), colour.transpose(2, 0, 1))  # lossless

    jpeg_bytes = encode_image(colour, "jpg")
    oracle = cv2.imdecode(np.frombuffer(jpeg_bytes, np.uint8), cv2.IMREAD_COLOR)
    np.testing.assert_array_equal(datum_to_array(encoded_datum(jpeg_bytes, 0)), oracle.transpose(2, 0, 1))

    grey = rng.integers(0, 256, (9, 11), dtype=np.uint8)
    grey_png = encoded_datum(encode_image(grey, "png"), 0)
    np.testing.assert_array_equal(datum_to_array(grey_png), grey[np.newaxis])  # native: stays one channel

    # DecodeDatum with is_color (the data layer's force_color / force_gray)
    forced = decode_datum(grey_png, is_color=True)
    assert (forced.channels, forced.height, forced.width, forced.encoded) == (3, 9, 11, False)
    np.testing.assert_array_equal(datum_to_array(forced), np.repeat(grey[np.newaxis], 3, axis=0))
    grey_of_colour = decode_datum(png, is_color=False)
    oracle_grey = cv2.imdecode(np.frombuffer(png.data, np.uint8), cv2.IMREAD_GRAYSCALE)
    np.testing.assert_array_equal(datum_to_array(grey_of_colour), oracle_grey[np.newaxis])
    assert grey_of_colour.label == 3

    raw = cv_mat_to_datum(colour)
    assert decode_datum(raw, True) is raw  # not encoded: left as it is


def test_undecodable_and_16_bit_encoded_datums_raise() -> None:
    with pytest.raises(DataSourceError, match="Could not decode datum"):
        datum_to_array(encoded_datum(b"not an image", 0))
    with pytest.raises(DataSourceError, match="Could not decode datum"):
        datum_to_array(encoded_datum(b"", 0))
    deep = encode_image(np.full((2, 2), 40000, dtype=np.uint16), "png")
    with pytest.raises(DataSourceError, match="Image data type must be unsigned byte"):
        datum_to_array(encoded_datum(deep, 0))


def test_encode_image_refuses_unknown_types() -> None:
    with pytest.raises(DataSourceError, match="cannot encode images as 'nope'"):
        encode_image(np.zeros((2, 2, 3), np.uint8), "nope")


def _write_db(path, records: dict[bytes, bytes], map_size: int = 1 << 20) -> LmdbWriter:
    writer = LmdbWriter(path, map_size=map_size)
    for key, value in records.items():
        writer.put(key, value)
    writer.close()
    return writer


def test_iter_datums_in_key_order_and_count(tmp_path, rng: np.random.Generator) -> None:
    images = {f"{i:08d}_img{i}.png".encode(): rng.integers(0, 256, (3, 4, 4), dtype=np.uint8) for i in range(25)}
    order = list(images)
    rng.shuffle(order)  # written out of order; LMDB hands them back sorted by key
    _write_db(tmp_path / "db", {key: array_to_datum(images[key], i).SerializeToString() for i, key in enumerate(order)})
    assert count(tmp_path / "db") == 25
    read = list(iter_datums(tmp_path / "db"))
    assert [key for key, _ in read] == sorted(images)
    for key, datum in read:
        np.testing.assert_array_equal(datum_to_array(datum), images[key])
        assert datum.label == order.index(key)
    env = open_lmdb(tmp_path / "db")  # and the plain lmdb package agrees
    try:
        with env.begin() as txn:
            assert txn.stat()["entries"] == 25
    finally:
        env.close()


def test_writer_doubles_the_map_until_commits_fit(tmp_path) -> None:
    values = {f"{i:04d}".encode(): bytes([i % 251]) * 50_000 for i in range(40)}  # 2 MB into a 64 KiB map
    writer = _write_db(tmp_path / "db", values, map_size=64 << 10)
    assert writer.map_size >= 2 << 20
    assert dict(iter_records(tmp_path / "db")) == values
    with lmdb.open(str(tmp_path / "db"), readonly=True, lock=False) as env:
        assert env.stat()["entries"] == 40


def test_open_lmdb_says_what_is_wrong(tmp_path) -> None:
    with pytest.raises(DataSourceError, match="does not exist"):
        count(tmp_path / "missing")
    (tmp_path / "file").write_text("x")
    with pytest.raises(DataSourceError, match="an LMDB is a directory"):
        count(tmp_path / "file")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataSourceError, match=r"no data\.mdb"):
        count(tmp_path / "empty")
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "data.mdb").write_bytes(b"junk" * 2000)
    with pytest.raises(DataSourceError, match=r"data\.mdb is not an LMDB file") as caught:
        list(iter_datums(tmp_path / "junk"))
    assert str(tmp_path / "junk") in str(caught.value)


def test_a_record_that_is_not_a_datum_is_named(tmp_path) -> None:
    _write_db(tmp_path / "db", {b"a": array_to_datum(np.zeros((1, 1, 1), np.uint8)).SerializeToString(), b"b": b"\xff"})
    with pytest.raises(DataSourceError, match="record 'b' is not a Datum"):
        list(iter_datums(tmp_path / "db"))
