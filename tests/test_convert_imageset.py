"""convert_imageset against Caffe's tool: keys, labels, pixels (OpenCV as the oracle), flags, and crash safety."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import cv2
import lmdb
import numpy as np
import pytest

from netdef import cli
from netdef.data import lmdb_io
from netdef.data.convert_imageset import (
    SHUFFLE_SEED,
    atoi,
    convert_imageset,
    partial_dir,
    read_list_file,
    shuffle_lines,
)
from netdef.errors import DataSourceError
from netdef.proto import netdef_pb2 as pb

from .conftest import REPO

#: (path relative to ROOT, label, (height, width)); the list also names a corrupt and a missing file.
IMAGES = [
    ("a.jpg", 0, (30, 40)),
    ("b.png", 1, (25, 20)),
    ("sub dir/c d.png", 2, (16, 16)),
    ("e.JPEG", 3, (21, 33)),
    ("grey.png", 4, (12, 18)),
    ("f.png", 5, (40, 30)),
]
BAD = [("corrupt.jpg", 6), ("missing.png", 7)]
LIST_ORDER = ["a.jpg", "b.png", "corrupt.jpg", "sub dir/c d.png", "e.JPEG", "missing.png", "grey.png", "f.png"]


def _image(rng: np.random.Generator, height: int, width: int, grey: bool) -> np.ndarray:
    # smooth content, so JPEG keeps it recognisable, plus noise so every pixel matters
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([(x * 5) % 256, (y * 7) % 256, ((x + y) * 3) % 256], axis=-1)
    image = np.clip(base + rng.integers(0, 20, base.shape), 0, 255).astype(np.uint8)
    return image[:, :, 1].copy() if grey else image


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """ROOT/ with JPEG and PNG images of mixed sizes, and a list file (with a corrupt and a missing entry)."""
    root = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(1701)
    for path, _, (height, width) in IMAGES:
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        assert cv2.imwrite(str(root / path), _image(rng, height, width, grey=path.startswith("grey")))
    (root / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not really a JPEG")
    labels = {path: label for path, label, _ in IMAGES} | dict(BAD)
    list_file = root / "list.txt"
    list_file.write_text("".join(f"{path} {labels[path]}\n" for path in LIST_ORDER))
    return root, list_file


def _records(db: Path) -> list[tuple[bytes, pb.Datum]]:
    """The database as the plain lmdb package and the schema read it."""
    with lmdb.open(str(db), readonly=True, lock=False) as env, env.begin() as txn:
        return [(bytes(key), pb.Datum.FromString(value)) for key, value in txn.cursor()]


def _pixels(datum: pb.Datum) -> np.ndarray:
    return np.frombuffer(datum.data, np.uint8).reshape(datum.channels, datum.height, datum.width)


def _oracle(root: Path, path: str, flag: int = cv2.IMREAD_COLOR, size: tuple[int, int] | None = None) -> np.ndarray:
    image = cv2.imread(str(root / path), flag)
    if size:
        image = cv2.resize(image, size, interpolation=cv2.INTER_LINEAR)
    return image[np.newaxis] if image.ndim == 2 else image.transpose(2, 0, 1)


def test_records_keys_labels_and_pixels(images: tuple[Path, Path], tmp_path: Path) -> None:
    root, list_file = images
    result = convert_imageset(f"{root}/", list_file, tmp_path / "db", workers=2)
    labels = {path: label for path, label, _ in IMAGES}
    records = _records(tmp_path / "db")
    expected_keys = [f"{i:08d}_{path}".encode() for i, path in enumerate(LIST_ORDER) if path in labels]
    assert [key for key, _ in records] == expected_keys  # skipped lines keep their index, as in Caffe
    for key, datum in records:
        path = key.decode()[9:]
        assert datum.label == labels[path] and not datum.encoded and not datum.float_data
        np.testing.assert_array_equal(_pixels(datum), _oracle(root, path))  # BGR, C x H x W, grey → 3 channels
    assert result.written == 6
    assert [(s.entry.path, s.entry.line) for s in result.skipped] == [("corrupt.jpg", 3), ("missing.png", 6)]
    assert "No such file" in result.skipped[1].reason and "cannot decode" in result.skipped[0].reason
    assert "wrote 6 images" in result.summary() and "skipped 2" in result.summary()
    assert not list(tmp_path.glob(".db.partial-*"))


def test_resize_is_opencv_bilinear_and_workers_do_not_change_the_result(
    images: tuple[Path, Path], tmp_path: Path
) -> None:
    root, list_file = images
    longer = tmp_path / "list.txt"  # several chunks, so two workers really share the work
    longer.write_text(list_file.read_text() * 9)
    convert_imageset(f"{root}/", longer, tmp_path / "one", resize_width=24, resize_height=20, workers=1)
    convert_imageset(f"{root}/", longer, tmp_path / "two", resize_width=24, resize_height=20, workers=2)
    one, two = _records(tmp_path / "one"), _records(tmp_path / "two")
    assert len(one) == 6 * 9
    assert [(k, d.SerializeToString()) for k, d in one] == [(k, d.SerializeToString()) for k, d in two]
    for key, datum in one:
        assert (datum.channels, datum.height, datum.width) == (3, 20, 24)
        np.testing.assert_array_equal(_pixels(datum), _oracle(root, key.decode()[9:], size=(24, 20)))


@pytest.mark.parametrize("workers", [2, 3])
def test_workers_growing_the_map_give_the_same_database(
    images: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, workers: int
) -> None:
    """Workers write their own chunks and grow the map as they go (each doubling it, or
    adopting what another grew); the database is the one a single process writes."""
    root, list_file = images
    longer = tmp_path / "list.txt"
    longer.write_text(list_file.read_text() * 12)
    convert_imageset(f"{root}/", longer, tmp_path / "serial", workers=1)
    monkeypatch.setattr(lmdb_io, "INITIAL_MAP_SIZE", 64 << 10)  # workers start from the database's own size
    result = convert_imageset(f"{root}/", longer, tmp_path / "parallel", workers=workers)
    serial, parallel = _records(tmp_path / "serial"), _records(tmp_path / "parallel")
    assert len(serial) == result.written == 72
    assert [(k, d.SerializeToString()) for k, d in serial] == [(k, d.SerializeToString()) for k, d in parallel]
    with lmdb.open(str(tmp_path / "parallel"), readonly=True, lock=False) as env:
        assert env.info()["map_size"] > 64 << 10


def test_skips_and_progress_come_in_list_order_from_workers(images: tuple[Path, Path], tmp_path: Path) -> None:
    root, list_file = images
    longer = tmp_path / "list.txt"
    longer.write_text(list_file.read_text() * 4)
    calls: list[tuple[int, int]] = []
    result = convert_imageset(
        f"{root}/", longer, tmp_path / "db", workers=2, progress=lambda done, total: calls.append((done, total))
    )
    lines = [entry.line for entry in read_list_file(longer)]
    bad = [line for line, path in zip(lines, LIST_ORDER * 4, strict=True) if path in dict(BAD)]
    assert [skip.entry.line for skip in result.skipped] == bad
    assert calls[0] == (0, 32) and calls[-1] == (32, 32)
    assert [done for done, _ in calls] == sorted(done for done, _ in calls)


def test_gray_gives_one_channel(images: tuple[Path, Path], tmp_path: Path) -> None:
    root, list_file = images
    convert_imageset(f"{root}/", list_file, tmp_path / "db", gray=True, workers=1)
    for key, datum in _records(tmp_path / "db"):
        assert datum.channels == 1
        np.testing.assert_array_equal(_pixels(datum), _oracle(root, key.decode()[9:], cv2.IMREAD_GRAYSCALE))


def test_shuffle_is_a_deterministic_permutation(images: tuple[Path, Path], tmp_path: Path) -> None:
    root, list_file = images
    convert_imageset(f"{root}/", list_file, tmp_path / "a", shuffle=True, workers=1)
    convert_imageset(f"{root}/", list_file, tmp_path / "b", shuffle=True, workers=2)
    keys = [key.decode() for key, _ in _records(tmp_path / "a")]
    assert keys == [key.decode() for key, _ in _records(tmp_path / "b")]
    order = [entry.path for entry in shuffle_lines(read_list_file(list_file), SHUFFLE_SEED)]
    assert sorted(order) == sorted(LIST_ORDER) and order != LIST_ORDER
    good = {path for path, _, _ in IMAGES}
    assert keys == [f"{i:08d}_{path}" for i, path in enumerate(order) if path in good]
    assert sorted(key[9:] for key in keys) == sorted(good)


@pytest.mark.parametrize("workers", [1, 2])
def test_check_size_stops_at_the_first_different_image(images: tuple[Path, Path], tmp_path: Path, workers: int) -> None:
    root, list_file = images
    if workers > 1:  # enough lines for several chunks, so the workers are used
        longer = tmp_path / "list.txt"
        longer.write_text(list_file.read_text() * 3)
        list_file = longer
    with pytest.raises(DataSourceError) as caught:
        convert_imageset(f"{root}/", list_file, tmp_path / "db", check_size=True, workers=workers)
    message = str(caught.value)
    assert message.startswith(f"{list_file}:2: --check_size: Incorrect data field size 1500 for b.png (3, 25, 20)")
    assert "expected 3600, the size of the first image a.jpg (3, 30, 40)" in message
    assert not (tmp_path / "db").exists() and not list(tmp_path.glob(".db.partial-*"))
    resized = convert_imageset(
        f"{root}/", list_file, tmp_path / "db", check_size=True, resize_width=8, resize_height=8, workers=workers
    )
    assert resized.written == 6 * len(read_list_file(list_file)) // len(LIST_ORDER)


def test_encoded_keeps_file_bytes_and_encode_type_reencodes(images: tuple[Path, Path], tmp_path: Path) -> None:
    root, list_file = images
    convert_imageset(f"{root}/", list_file, tmp_path / "enc", encoded=True, workers=1)
    records = _records(tmp_path / "enc")
    assert len(records) == 6
    for key, datum in records:
        assert datum.encoded and not datum.HasField("channels") and not datum.HasField("height")
        assert datum.data == (root / key.decode()[9:]).read_bytes()  # stored unchanged (e.JPEG: jpeg counts as jpg)

    convert_imageset(f"{root}/", list_file, tmp_path / "png", encode_type="png", workers=1)
    for key, datum in _records(tmp_path / "png"):
        path = key.decode()[9:]
        assert datum.encoded and datum.data.startswith(b"\x89PNG")
        if path.endswith(".png"):
            assert datum.data == (root / path).read_bytes()
        else:  # a JPEG re-encoded losslessly: the decoded pixels, unchanged
            decoded = cv2.imdecode(np.frombuffer(datum.data, np.uint8), cv2.IMREAD_UNCHANGED)
            np.testing.assert_array_equal(decoded.transpose(2, 0, 1), _oracle(root, path))

    convert_imageset(f"{root}/", list_file, tmp_path / "small", encoded=True, resize_width=10, resize_height=6)
    for key, datum in _records(tmp_path / "small"):  # resized → re-encoded with the file's own type
        path = key.decode()[9:]
        assert datum.data[:4] == (root / path).read_bytes()[:4]
        assert cv2.imdecode(np.frombuffer(datum.data, np.uint8), cv2.IMREAD_COLOR).shape == (6, 10, 3)


def test_cli_summary_warnings_and_refusals(
    images: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root, list_file = images
    db = tmp_path / "db"
    argv = ["convert-imageset", "--shuffle", "--resize_height=16", "--resize_width", "16", f"{root}/", str(list_file)]
    assert cli.main([*argv, str(db)]) == 0
    out, err = capsys.readouterr()
    assert out.strip().startswith(f"wrote 6 images to {db}, skipped 2 unreadable or missing")
    assert f"netdef: warning: {list_file}:3: skipped {root}/corrupt.jpg: OpenCV cannot decode it" in err
    assert f"skipped {root}/missing.png: No such file or directory" in err
    assert "A total of 8 images." in err and "Processed 6 files." in err
    assert len(_records(db)) == 6

    assert cli.main([*argv, str(db)]) == 1
    assert f"netdef: error: {db}: the database exists already; add --overwrite" in capsys.readouterr().err
    assert cli.main([*argv, "--gray", "--overwrite", str(db)]) == 0
    assert {datum.channels for _, datum in _records(db)} == {1}
    assert not list(tmp_path.glob(".db.*"))

    assert cli.main(["convert-imageset", "--backend", "leveldb", f"{root}/", str(list_file), str(tmp_path / "x")]) == 1
    assert "the 'leveldb' backend is not available; expected --backend lmdb" in capsys.readouterr().err
    assert cli.main(["convert-imageset", f"{root}/", str(tmp_path / "nope.txt"), str(tmp_path / "x")]) == 1
    assert "cannot read the list file" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_nothing_readable_writes_no_database(images: tuple[Path, Path], tmp_path: Path) -> None:
    _, list_file = images
    with pytest.raises(DataSourceError, match="none of the 8 images could be read") as caught:
        convert_imageset(f"{tmp_path}/elsewhere/", list_file, tmp_path / "db")
    assert "check ROOT" in str(caught.value)
    assert not (tmp_path / "db").exists() and not list(tmp_path.glob(".db.partial-*"))


def test_a_path_too_long_for_an_lmdb_key_is_skipped(images: tuple[Path, Path], tmp_path: Path) -> None:
    root, _ = images
    deep = root / ("d" * 250) / ("e" * 250)
    deep.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(deep / "x.png"), np.zeros((4, 4, 3), np.uint8))
    list_file = tmp_path / "list.txt"
    list_file.write_text(f"a.jpg 0\n{deep.relative_to(root)}/x.png 1\n")
    result = convert_imageset(f"{root}/", list_file, tmp_path / "db", workers=1)
    assert result.written == 1
    assert [(skip.entry.line, skip.reason) for skip in result.skipped] == [
        (2, "its key (516 bytes) is longer than LMDB allows (511 bytes)")
    ]


def test_list_file_is_read_as_caffe_reads_it(tmp_path: Path) -> None:
    assert [atoi(text) for text in ("7", " 12", "-3x", "+4", "abc", "", "5\r", "1 2")] == [7, 12, -3, 4, 0, 0, 5, 1]
    listing = tmp_path / "list.txt"
    listing.write_bytes(b"dir/a b c.jpg 3\nno_label.png\nwin.png 9\r\n\nlast.png 12")
    entries = read_list_file(listing)
    assert [(e.path, e.label, e.line) for e in entries] == [
        ("dir/a b c.jpg", 3, 1),
        ("no_label.png", 0, 2),
        ("win.png", 9, 3),
        ("", 0, 4),
        ("last.png", 12, 5),
    ]
    listing.write_text("a.png 99999999999\n")
    with pytest.raises(DataSourceError, match="int32"):
        read_list_file(listing)


def test_a_killed_conversion_leaves_no_database_and_a_rerun_completes(tmp_path: Path) -> None:
    """SIGKILL mid-run: DB_NAME must not exist (only the hidden partial), and the next run replaces the debris."""
    root = tmp_path / "root"
    root.mkdir()
    y, x = np.mgrid[0:240, 0:320]
    picture = np.stack([x % 256, y % 256, (x + y) % 256], axis=-1).astype(np.uint8)
    cv2.imwrite(str(root / "p.jpg"), picture)
    lines = 4000
    (tmp_path / "list.txt").write_text("p.jpg 1\n" * lines)
    db = tmp_path / "db"
    command = [sys.executable, "-m", "netdef.cli", "convert-imageset", "--encoded", "--workers", "1"]
    process = subprocess.Popen(
        [*command, f"{root}/", str(tmp_path / "list.txt"), str(db)],
        cwd=REPO,
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    try:
        for line in process.stderr:
            if line.startswith("Processed 1000 files."):
                break
        assert process.poll() is None, "the conversion finished before it could be killed"
        partial = partial_dir(db, process.pid)
        assert (partial / "data.mdb").stat().st_size > 0
        process.send_signal(signal.SIGKILL)
    finally:
        process.kill()
        process.wait()
    assert not db.exists()  # nothing at DB_NAME that could pass for a complete database
    assert partial.is_dir()

    assert cli.main(["convert-imageset", "--encoded", f"{root}/", str(tmp_path / "list.txt"), str(db)]) == 0
    records = _records(db)
    assert len(records) == lines
    assert records[-1][0] == f"{lines - 1:08d}_p.jpg".encode()
    assert not partial.exists() and not list(tmp_path.glob(".db.partial-*"))


def test_imagenet_scripts_run_through_netdef(tmp_path: Path) -> None:
    """tools/create_imagenet.sh and make_imagenet_mean.sh with Caffe's variables set from the environment."""
    rng = np.random.default_rng(0)
    data = tmp_path / "data"
    data.mkdir()
    for split, count in (("train", 3), ("val", 2)):
        (tmp_path / split).mkdir()
        for i in range(count):
            cv2.imwrite(str(tmp_path / split / f"{i}.jpg"), _image(rng, 30 + i, 40, grey=False))
        (data / f"{split}.txt").write_text("".join(f"{i}.jpg {i}\n" for i in range(count)))
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "NETDEF": f"{sys.executable} -m netdef.cli",
        "EXAMPLE": str(tmp_path / "example"),
        "DATA": str(data),
        "TRAIN_DATA_ROOT": f"{tmp_path}/train/",
        "VAL_DATA_ROOT": f"{tmp_path}/val/",
        "RESIZE": "true",
    }
    (tmp_path / "example").mkdir()
    create = subprocess.run(["sh", str(REPO / "tools/create_imagenet.sh")], env=env, capture_output=True, text=True)
    assert create.returncode == 0, create.stderr
    assert create.stdout.splitlines()[0] == "Creating train lmdb..." and create.stdout.splitlines()[-1] == "Done."
    train, val = _records(tmp_path / "example/ilsvrc12_train_lmdb"), _records(tmp_path / "example/ilsvrc12_val_lmdb")
    assert (len(train), len(val)) == (3, 2)
    assert {(d.channels, d.height, d.width) for _, d in train + val} == {(3, 256, 256)}

    mean = subprocess.run(["sh", str(REPO / "tools/make_imagenet_mean.sh")], env=env, capture_output=True, text=True)
    assert mean.returncode == 0, mean.stderr
    assert "Number of channels: 3" in mean.stdout
    blob = pb.BlobProto.FromString((data / "imagenet_mean.binaryproto").read_bytes())
    assert (blob.num, blob.channels, blob.height, blob.width) == (1, 3, 256, 256)

    missing = subprocess.run(
        ["sh", str(REPO / "tools/create_imagenet.sh")],
        env={**env, "TRAIN_DATA_ROOT": "/no/such/dir/"},
        capture_output=True,
        text=True,
    )
    assert missing.returncode == 1
    assert missing.stdout.startswith("Error: TRAIN_DATA_ROOT is not a path to a directory: /no/such/dir/")
