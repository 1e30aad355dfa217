"""compute_image_mean against numpy and against Caffe's own float32 arithmetic (tools/compute_image_mean.cpp)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from netdef import cli
from netdef.blobs import blob_shape, blobproto_to_array
from netdef.data.datum import array_to_datum, encode_image, encoded_datum
from netdef.data.image_mean import compute_image_mean
from netdef.data.lmdb_io import LmdbWriter
from netdef.errors import DataSourceError
from netdef.proto import netdef_pb2 as pb


def _database(path: Path, datums: list[pb.Datum]) -> Path:
    writer = LmdbWriter(path)
    for i, datum in enumerate(datums):
        writer.put(f"{i:08d}".encode(), datum.SerializeToString())
    writer.close()
    return path


def _caffe_sum(arrays: list[np.ndarray]) -> np.ndarray:
    """Caffe's loop: ``sum_blob.set_data(i, sum_blob.data(i) + data[i])`` in float32, one record after another."""
    total = np.zeros(arrays[0].size, dtype=np.float32)
    for array in arrays:
        total = (total + array.reshape(-1).astype(np.float32)).astype(np.float32)
    return total


@pytest.fixture
def images() -> list[np.ndarray]:
    rng = np.random.default_rng(1701)
    return [rng.integers(0, 256, (3, 6, 5), dtype=np.uint8) for _ in range(37)]


def test_mean_of_raw_records(tmp_path: Path, images: list[np.ndarray]) -> None:
    db = _database(tmp_path / "db", [array_to_datum(image, i) for i, image in enumerate(images)])
    result = compute_image_mean(db)
    assert result.count == 37 and result.mean.shape == (3, 6, 5) and result.mean.dtype == np.float32
    expected = np.mean(np.stack(images).astype(np.float64), axis=0)
    np.testing.assert_allclose(result.mean, expected, rtol=1e-6)
    caffe = (_caffe_sum(images) / np.float32(37)).reshape(3, 6, 5)
    np.testing.assert_array_equal(result.mean, caffe)  # bit for bit
    assert result.bytes_read == 37 * 90


def test_float_data_is_summed_in_float32_like_caffe(tmp_path: Path) -> None:
    rng = np.random.default_rng(7)
    arrays = [(rng.standard_normal((2, 3, 3)) * 1e3 + 0.1).astype(np.float32) for _ in range(50)]
    result = compute_image_mean(_database(tmp_path / "db", [array_to_datum(a) for a in arrays]))
    np.testing.assert_array_equal(result.mean, (_caffe_sum(arrays) / np.float32(50)).reshape(2, 3, 3))
    np.testing.assert_allclose(result.mean, np.mean(np.stack(arrays).astype(np.float64), axis=0), rtol=1e-4, atol=1e-3)


def test_encoded_records_are_decoded(tmp_path: Path, images: list[np.ndarray]) -> None:
    datums = [encoded_datum(encode_image(np.ascontiguousarray(image.transpose(1, 2, 0)), "png"), 0) for image in images]
    result = compute_image_mean(_database(tmp_path / "db", datums))
    np.testing.assert_allclose(result.mean, np.mean(np.stack(images).astype(np.float64), axis=0), rtol=1e-6)


def test_cli_writes_binaryproto_and_npy_and_prints_channel_means(
    tmp_path: Path, images: list[np.ndarray], capsys: pytest.CaptureFixture[str]
) -> None:
    db = _database(tmp_path / "db", [array_to_datum(image) for image in images])
    out, npy = tmp_path / "mean.binaryproto", tmp_path / "mean.npy"
    assert cli.main(["compute-image-mean", str(db), str(out), "--npy", str(npy)]) == 0
    expected = np.mean(np.stack(images).astype(np.float64), axis=0)

    blob = pb.BlobProto.FromString(out.read_bytes())
    assert (blob.num, blob.channels, blob.height, blob.width) == (1, 3, 6, 5)  # Caffe's legacy fields
    assert blob_shape(blob) == (1, 3, 6, 5)
    np.testing.assert_allclose(blobproto_to_array(blob)[0], expected, rtol=1e-6)
    saved = np.load(npy)
    assert saved.shape == (3, 6, 5) and saved.dtype == np.float32
    np.testing.assert_array_equal(saved, blobproto_to_array(blob)[0])

    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "Number of channels: 3"
    for c in range(3):
        assert lines[1 + c] == f"mean_value channel [{c}]: {np.float32(expected[c].mean()):g}"
    assert lines[4] == f"averaged 37 images of shape (3, 6, 5) from {db} -> {out}, {npy}"


def test_mismatched_sizes_name_the_record(tmp_path: Path) -> None:
    datums = [array_to_datum(np.zeros((3, 4, 4), np.uint8)), array_to_datum(np.zeros((3, 4, 5), np.uint8))]
    with pytest.raises(DataSourceError, match=r"record '00000001' has 60 values \(3, 4, 5\), unlike the first record"):
        compute_image_mean(_database(tmp_path / "db", datums))
    broken = pb.Datum(channels=3, height=4, width=4, data=b"\x00" * 10)
    with pytest.raises(DataSourceError, match="record '00000000': the datum's data does not fill its shape"):
        compute_image_mean(_database(tmp_path / "broken", [broken]))


def test_empty_database_and_other_backends_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(DataSourceError, match="no records"):
        compute_image_mean(_database(tmp_path / "db", []))
    assert cli.main(["compute-image-mean", "--backend", "leveldb", str(tmp_path / "db")]) == 1
    assert "the 'leveldb' backend is not available" in capsys.readouterr().err
    assert cli.main(["compute-image-mean", str(tmp_path / "nothing")]) == 1
    assert "the LMDB database does not exist" in capsys.readouterr().err
