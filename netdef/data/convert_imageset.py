"""Caffe's ``convert_imageset``: a list of images and labels → an LMDB of Datum records.

Behaviour follows ``tools/convert_imageset.cpp`` and ``ReadImageToDatum`` in
``src/caffe/util/io.cpp``:

* List file: one ``path label`` per line, split at the *last* space (paths may contain
  spaces), the label read as C's ``atoi`` does (a line without a space is all path, label
  from ``atoi`` of the whole line). Each path is appended to ROOT as a plain string, so ROOT
  ends with ``/``.
* Key: ``%08d_%s`` of the line's index (after shuffling) and its path; records are written
  in that order and committed every 1000, as Caffe does.
* Images are read with OpenCV (``IMREAD_COLOR``, or ``IMREAD_GRAYSCALE`` with ``gray``),
  resized with ``cv2.resize`` (``INTER_LINEAR``) only when both resize sizes are > 0, and
  stored as raw C × H × W BGR bytes. With ``encoded`` (or a non-empty ``encode_type``) the
  record holds an image file instead: the file's own bytes when nothing was resized and its
  extension matches the encoding (``jpeg`` counts as ``jpg``), else ``cv2.imencode``'s; the
  encoding defaults to the file's extension. With ``gray``, a file stored unchanged keeps
  its own colours, as in Caffe (the data layer's ``force_gray`` decodes it grey).
* Unreadable or missing images are skipped with a warning naming the file and why.

Departures, all deliberate:

* Shuffling is deterministic: a Fisher–Yates pass driven by
  ``random.Random(SHUFFLE_SEED).random()`` (seed 1701), whose sequence Python guarantees
  across versions. Caffe seeds its shuffle from the system entropy, so its order differs
  from run to run.
* ``check_size`` compares C × H × W of the images, also for encoded records, where
  Caffe compares the unset sizes of the encoded datum and always fails.
* Only the LMDB backend exists; ``backend="leveldb"`` is refused up front.
* A run is never mistaken for a finished one: records go to ``.DB_NAME.partial-<pid>``
  beside DB_NAME, which is synced and renamed to DB_NAME only at the end. A run that dies
  leaves only that hidden directory, which the next run for the same DB_NAME removes (when
  its process is gone). An existing DB_NAME is refused unless ``overwrite`` is given; then
  it is replaced only once the new database is complete.
* Reading, decoding, resizing, encoding and writing run in worker processes (all cores
  by default), each putting its chunks of consecutive lines into the database in a
  transaction per chunk (Caffe commits every 1000 records from one process). The keys sort
  in list order, so the result does not depend on the number of workers; the parent
  reports skips and progress in list order. At most a few chunks per worker are in flight,
  so memory stays bounded.
"""

from __future__ import annotations

import dataclasses
import logging
import multiprocessing
import multiprocessing.connection
import os
import random
import re
import shutil
import signal
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import cv2
import lmdb
import numpy as np

from netdef.data.datum import cv_mat_to_datum, encode_image, encoded_datum
from netdef.data.lmdb_io import LmdbBatchWriter, LmdbWriter
from netdef.errors import DataSourceError, NetdefError, SourceLocation

logger = logging.getLogger(__name__)

#: The seed of the deterministic shuffle (Caffe's test seed).
SHUFFLE_SEED = 1701
#: Records per LMDB transaction, as in Caffe's tool.
COMMIT_EVERY = 1000
#: Lines per task handed to a worker, and records per transaction there: large enough to
#: amortize the inter-process round trip and the commit.
CHUNKSIZE = 8
#: LMDB's longest key (``mdb_env_get_maxkeysize`` of a default build).
MAX_KEY_BYTES = 511
#: Tasks kept in flight per worker, so workers never wait for the parent and memory stays bounded.
TASKS_PER_WORKER = 4

_ATOI = re.compile(r"[ \t\n\v\f\r]*([+-]?[0-9]+)")
_INT32 = (-(2**31), 2**31 - 1)


@dataclass(frozen=True)
class ListEntry:
    """One line of the list file: the image path (relative to ROOT), its label, and its 1-based line number."""

    path: str
    label: int
    line: int


@dataclass(frozen=True)
class ImageOptions:
    """What a worker needs to turn a list entry into a record (sent once to each worker)."""

    root_folder: str
    is_color: bool
    resize_height: int
    resize_width: int
    encoding: str | None  # None: raw data; "": guess from each file's extension


@dataclass(frozen=True)
class Record:
    """A converted image: its key, the serialized Datum, and the stored image's (C, H, W).

    ``value`` is empty in what a worker reports of a record it has put in the database.
    """

    entry: ListEntry
    key: bytes
    value: bytes
    shape: tuple[int, int, int]


@dataclass(frozen=True)
class Skipped:
    """An image that could not be converted, and why."""

    entry: ListEntry
    reason: str


@dataclass(frozen=True)
class ConversionResult:
    """What a conversion did: records written, lines skipped (with reasons), where, and how long it took."""

    db_name: Path
    written: int
    skipped: tuple[Skipped, ...]
    seconds: float

    def summary(self) -> str:
        skipped = f"skipped {len(self.skipped)} unreadable or missing" if self.skipped else "skipped none"
        return f"wrote {self.written} images to {self.db_name}, {skipped} ({self.seconds:.1f} s)"


def atoi(text: str) -> int:
    """C's ``atoi``: leading white space, an optional sign, digits up to the first non-digit; 0 when none."""
    match = _ATOI.match(text)
    return int(match.group(1)) if match else 0


def read_list_file(list_file: str | os.PathLike[str]) -> list[ListEntry]:
    """The list file's lines as Caffe's tool reads them (``std::getline``, split at the last space)."""
    where = os.fspath(list_file)
    try:
        with open(list_file, encoding="utf-8", errors="surrogateescape", newline="") as handle:
            text = handle.read()
    except OSError as error:
        raise DataSourceError(f"cannot read the list file: {error.strerror}", location=SourceLocation(where)) from None
    lines = text.split("\n")
    if lines[-1] == "":  # getline yields no line after the final newline
        lines.pop()
    entries = []
    for number, line in enumerate(lines, start=1):
        space = line.rfind(" ")
        label = atoi(line[space + 1 :])
        if not _INT32[0] <= label <= _INT32[1]:
            raise DataSourceError(
                "the label does not fit a Datum's int32 label", location=SourceLocation(where, number), received=line
            )
        entries.append(ListEntry(line[:space] if space >= 0 else line, label, number))
    return entries


def shuffle_lines(entries: Sequence[ListEntry], seed: int = SHUFFLE_SEED) -> list[ListEntry]:
    """A deterministic permutation (Fisher–Yates on ``random.Random(seed).random()``)."""
    shuffled = list(entries)
    rng = random.Random(seed)
    for i in range(len(shuffled) - 1, 0, -1):
        j = int(rng.random() * (i + 1))
        shuffled[i], shuffled[j] = shuffled[j], shuffled[i]
    return shuffled


def extension(filename: str) -> str:
    """The lower-case text after the file name's last dot, or "" when it has none."""
    name = filename.rsplit("/", 1)[-1]
    return name.rsplit(".", 1)[1].lower() if "." in name else ""


def matches_encoding(filename: str, encoding: str) -> bool:
    """Caffe's ``matchExt``: the extension equals the encoding, ``jpeg`` counting as ``jpg``."""
    ext, wanted = extension(filename), encoding.lower()
    return ext == wanted or (wanted == "jpg" and ext == "jpeg")


def read_image(filename: str, height: int, width: int, is_color: bool) -> tuple[bytes, np.ndarray]:
    """Caffe's ``ReadImageToCVMat``: the file's bytes and the decoded, optionally resized 8-bit image.

    Raises OSError for a file that cannot be read and ValueError for one OpenCV cannot decode.
    """
    with open(os.fsencode(filename), "rb") as handle:
        data = handle.read()
    flag = cv2.IMREAD_COLOR if is_color else cv2.IMREAD_GRAYSCALE
    image = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), flag) if data else None
    if image is None:
        raise ValueError("OpenCV cannot decode it (not an image, or a corrupt one)")
    if height > 0 and width > 0:
        image = cv2.resize(image, (width, height), interpolation=cv2.INTER_LINEAR)
    return data, image


def convert_entry(index: int, entry: ListEntry, options: ImageOptions) -> Record | Skipped:
    """Caffe's ``ReadImageToDatum`` for one list line, serialized and keyed; the work a worker does."""
    filename = options.root_folder + entry.path
    try:
        data, image = read_image(filename, options.resize_height, options.resize_width, options.is_color)
    except OSError as error:
        return Skipped(entry, error.strerror or str(error))
    except ValueError as error:
        return Skipped(entry, str(error))
    encoding = options.encoding
    if encoding == "":
        encoding = extension(entry.path)
        if not encoding:
            return Skipped(entry, "no file extension to guess the encoding from; give --encode_type")
    if encoding is None:
        datum = cv_mat_to_datum(image, entry.label)
    elif not options.resize_height and not options.resize_width and matches_encoding(filename, encoding):
        datum = encoded_datum(data, entry.label)
    else:
        try:
            datum = encoded_datum(encode_image(image, encoding), entry.label)
        except NetdefError as error:
            return Skipped(entry, error.message)
    shape = (1, *image.shape) if image.ndim == 2 else (image.shape[2], image.shape[0], image.shape[1])
    key = f"{index:08d}_{entry.path}".encode("utf-8", "surrogateescape")
    if len(key) > MAX_KEY_BYTES:
        return Skipped(entry, f"its key ({len(key)} bytes) is longer than LMDB allows ({MAX_KEY_BYTES} bytes)")
    return Record(entry, key, datum.SerializeToString(), shape)


def convert_chunk(start: int, entries: Sequence[ListEntry], options: ImageOptions) -> list[Record | Skipped]:
    """Convert consecutive list lines whose first has index ``start``."""
    return [convert_entry(start + offset, entry, options) for offset, entry in enumerate(entries)]


@dataclass(frozen=True)
class WriteFailure:
    """A worker could not put its records into the database (LMDB's message)."""

    message: str


_worker_options: ImageOptions | None = None
_worker_database: LmdbBatchWriter | None = None


def _init_worker(options: ImageOptions, database: str) -> None:
    """Each worker keeps the options and its own handle on the database, and runs OpenCV on
    one thread: the processes are the parallelism.

    A worker also watches the converting process: killed (``SIGKILL`` leaves it no chance to
    stop its pool), it would otherwise leave the workers waiting for work forever.
    """
    global _worker_options, _worker_database
    _worker_options = options
    _worker_database = LmdbBatchWriter(database)
    cv2.setNumThreads(1)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the converting process's to handle
    parent = multiprocessing.parent_process()
    if parent is not None:
        threading.Thread(target=_exit_with, args=(parent.sentinel,), daemon=True).start()


def _exit_with(parent_sentinel: int) -> None:
    multiprocessing.connection.wait([parent_sentinel])
    os._exit(1)


def _convert_and_put(start: int, entries: Sequence[ListEntry]) -> list[Record | Skipped] | WriteFailure:
    """A worker's task: convert a chunk, put its records into the database, and report what
    happened to each line (records without their values, which the parent does not need)."""
    assert _worker_options is not None and _worker_database is not None, "worker used without _init_worker"
    results = convert_chunk(start, entries, _worker_options)
    try:
        _worker_database.put_batch([(r.key, r.value) for r in results if isinstance(r, Record)])
    except lmdb.Error as error:
        return WriteFailure(str(error))
    return [dataclasses.replace(r, value=b"") if isinstance(r, Record) else r for r in results]


def put_in_process(
    writer: LmdbWriter, entries: Sequence[ListEntry], options: ImageOptions
) -> Iterator[Record | Skipped]:
    """Convert and put every entry here, in list order, committing every 1000 records as Caffe does."""
    written = 0
    for start in range(0, len(entries), CHUNKSIZE):
        for result in convert_chunk(start, entries[start : start + CHUNKSIZE], options):
            if isinstance(result, Record):
                writer.put(result.key, result.value)
                written += 1
                if written % COMMIT_EVERY == 0:
                    writer.commit()
            yield result


def put_in_workers(
    database: Path, entries: Sequence[ListEntry], options: ImageOptions, workers: int
) -> Iterator[Record | Skipped]:
    """Convert and put every entry in ``workers`` processes; yield what happened to each line in list order.

    Each worker writes the records of its chunks itself, one transaction per chunk. The
    keys begin with the line's index and LMDB keeps keys sorted, so the database holds the
    same records in the same order whichever worker commits first, and the parent, left with
    nothing to copy, only hands out chunks and reports. Workers come from a fork server, not
    a fork of this process, so they start clean whatever threads the caller runs
    (TensorFlow, OpenCV's pool) and share no LMDB handle with it; as with any
    multiprocessing code, a script calling this needs the ``if __name__ == "__main__":`` guard.
    """
    context = multiprocessing.get_context("forkserver")
    # Workers fork from a server that has imported this module (OpenCV, protobuf) once, so a
    # pool starts in milliseconds; it applies when this process starts its fork server.
    context.set_forkserver_preload(["__main__", __name__])
    pool = ProcessPoolExecutor(
        workers, mp_context=context, initializer=_init_worker, initargs=(options, os.fspath(database))
    )
    pending: deque[Future[list[Record | Skipped] | WriteFailure]] = deque()
    chunks = iter(range(0, len(entries), CHUNKSIZE))

    def submit(start: int) -> None:
        pending.append(pool.submit(_convert_and_put, start, entries[start : start + CHUNKSIZE]))

    finished = False
    try:
        for start in chunks:
            submit(start)
            if len(pending) >= workers * TASKS_PER_WORKER:
                break
        while pending:
            outcome = pending.popleft().result()
            start = next(chunks, None)
            if start is not None:
                submit(start)
            if isinstance(outcome, WriteFailure):
                raise DataSourceError(
                    f"cannot write the database: {outcome.message}", location=SourceLocation(os.fspath(database))
                )
            yield from outcome
        finished = True
    finally:
        # On an error or Ctrl-C, return at once (a second Ctrl-C cannot catch a blocking
        # shutdown half-way): queued chunks are cancelled, each worker exits after its
        # current one, whose records go into a database that is being discarded.
        pool.shutdown(wait=finished, cancel_futures=True)


def default_workers() -> int:
    """The cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def partial_dir(db_name: Path, pid: int) -> Path:
    """Where a conversion by process ``pid`` writes before its database is complete."""
    return db_name.parent / f".{db_name.name}.partial-{pid}"


def remove_stale_partials(db_name: Path) -> None:
    """Delete what killed conversions to ``db_name`` left; a partial of a live process is left alone."""
    prefix = f".{db_name.name}.partial-"
    for candidate in db_name.parent.glob(f"{glob_escape(prefix)}*"):
        pid_text = candidate.name[len(prefix) :]
        if not pid_text.isdigit() or _process_alive(int(pid_text)):
            continue
        logger.warning("%s: removing the partial database of a conversion that did not finish", candidate)
        shutil.rmtree(candidate, ignore_errors=True)


def glob_escape(text: str) -> str:
    """``text`` with glob's special characters taken literally."""
    return re.sub(r"([*?\[])", r"[\1]", text)


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def convert_imageset(
    root_folder: str,
    list_file: str | os.PathLike[str],
    db_name: str | os.PathLike[str],
    *,
    gray: bool = False,
    shuffle: bool = False,
    backend: str = "lmdb",
    resize_width: int = 0,
    resize_height: int = 0,
    check_size: bool = False,
    encoded: bool = False,
    encode_type: str = "",
    overwrite: bool = False,
    workers: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> ConversionResult:
    """Convert the images of ``list_file`` (paths relative to ``root_folder``) into the LMDB ``db_name``.

    The keyword arguments are Caffe's flags. ``workers`` defaults to every core;
    ``progress(done, total)`` is called as lines are handled — without it, Caffe's
    "Processed N files." goes to the log at each commit.
    """
    began = time.perf_counter()
    target = Path(db_name)
    if backend != "lmdb":
        raise DataSourceError(
            f"the {backend!r} backend is not available", expected="--backend lmdb", hint="netdef writes LMDB only"
        )
    if target.exists() and not overwrite:
        raise DataSourceError(
            "the database exists already", location=SourceLocation(str(target)), hint="add --overwrite"
        )
    if encode_type:
        _check_encoder(encode_type)
        if not encoded:
            logger.info("encode_type specified, assuming encoded=true.")
    if root_folder and not root_folder.endswith("/") and os.path.isdir(root_folder):
        logger.warning(
            "ROOT %r does not end with '/'; list paths are appended to it as they are, as in Caffe", root_folder
        )
    entries = read_list_file(list_file)
    if shuffle:
        logger.info("Shuffling data")
        entries = shuffle_lines(entries)
    logger.info("A total of %d images.", len(entries))
    options = ImageOptions(
        root_folder=root_folder,
        is_color=not gray,
        resize_height=max(0, resize_height),
        resize_width=max(0, resize_width),
        encoding=encode_type if encode_type else ("" if encoded else None),
    )
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_partials(target)
    partial = partial_dir(target, os.getpid())
    shutil.rmtree(partial, ignore_errors=True)
    writer = LmdbWriter(partial)
    try:
        written, skipped = _write(
            writer, entries, options, workers or default_workers(), check_size, list_file, progress
        )
        writer.close()
        if entries and not written:
            raise DataSourceError(
                f"none of the {len(entries)} images could be read",
                location=SourceLocation(os.fspath(list_file), skipped[0].entry.line),
                received=f"{root_folder + skipped[0].entry.path}: {skipped[0].reason}",
                hint="check ROOT (it is prefixed to each path as is) and the list file",
            )
        _move_into_place(partial, target, overwrite)
    except BaseException:
        writer.abort()
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return ConversionResult(target, written, tuple(skipped), time.perf_counter() - began)


def _check_encoder(encode_type: str) -> None:
    if not cv2.haveImageWriter(f"x.{encode_type}"):
        raise DataSourceError(
            f"OpenCV cannot encode images as {encode_type!r}", expected="an image type such as png or jpg"
        )


def _write(
    writer: LmdbWriter,
    entries: Sequence[ListEntry],
    options: ImageOptions,
    workers: int,
    check_size: bool,
    list_file: str | os.PathLike[str],
    progress: Callable[[int, int], None] | None,
) -> tuple[int, list[Skipped]]:
    """Put every record in list order; returns the count written and the skips."""
    written, skipped = 0, []
    first: Record | None = None
    if progress is not None:
        progress(0, len(entries))
    if workers <= 1 or len(entries) <= CHUNKSIZE:
        results = put_in_process(writer, entries, options)
    else:
        results = put_in_workers(writer.path, entries, options, workers)
    for done, result in enumerate(results, start=1):
        if isinstance(result, Skipped):
            skipped.append(result)
            logger.warning(
                "%s:%d: skipped %s: %s",
                os.fspath(list_file),
                result.entry.line,
                options.root_folder + result.entry.path,
                result.reason,
            )
        else:
            if check_size:
                first = first or result
                _check_same_size(first, result, list_file)
            written += 1
            if written % COMMIT_EVERY == 0 and progress is None:
                logger.info("Processed %d files.", written)
        if progress is not None and (done % CHUNKSIZE == 0 or done == len(entries)):
            progress(done, len(entries))
    if written % COMMIT_EVERY and progress is None:
        logger.info("Processed %d files.", written)
    return written, skipped


def _check_same_size(first: Record, record: Record, list_file: str | os.PathLike[str]) -> None:
    """``--check_size``: every image holds as many values as the first (Caffe compares sizes, not shapes)."""
    size, expected = np.prod(record.shape), np.prod(first.shape)
    if size != expected:
        raise DataSourceError(
            f"--check_size: Incorrect data field size {size} for {record.entry.path} {record.shape}",
            location=SourceLocation(os.fspath(list_file), record.entry.line),
            expected=f"{expected}, the size of the first image {first.entry.path} {first.shape}",
        )


def _move_into_place(partial: Path, target: Path, overwrite: bool) -> None:
    """Rename the complete database to its name; an old one (``overwrite``) goes only after that is possible."""
    if target.exists() or target.is_symlink():
        if not overwrite:
            raise DataSourceError("the database appeared while converting", location=SourceLocation(str(target)))
        old = target.parent / f".{target.name}.old-{os.getpid()}"
        os.rename(target, old)
        os.rename(partial, target)
        if old.is_dir() and not old.is_symlink():
            shutil.rmtree(old)
        else:
            old.unlink()
    else:
        os.rename(partial, target)
    _fsync_directory(target.parent)


def _fsync_directory(directory: Path) -> None:
    """Make the rename durable: the directory entry, not only the files, must reach the disk."""
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
