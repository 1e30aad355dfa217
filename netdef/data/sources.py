"""Caffe's data layers as batch functions: what each layer's ``load_batch``/``Forward`` produces.

Every source computes batch ``b`` from ``b`` alone: which records it holds follows from
the position ``b × batch_size`` (wrapping at the end of the source, reshuffled per epoch
where Caffe reshuffles), and its random choices (crop offsets, mirrors, shuffles, random
windows, DummyData refills) come from generators seeded by ``(seed, layer position, stream,
index)``. So a pipeline positioned at batch ``k`` gives exactly the batches a pipeline that
read ``k`` batches would give next, without decoding what it skips, and batches can be
made in parallel in any order.

The Data layer's LMDB is the exception to random access: its records are found by walking
a cursor in key order, so it is read sequentially (a cheap walk over keys positions it)
and only the decoding is parallel. LMDB allows one open environment per database and
process, so the readers of one database share one, opened only while a batch is read.
"""

from __future__ import annotations

import abc
import functools
import math
import os
import re
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import cv2
import h5py
import lmdb
import numpy as np
from google.protobuf.message import DecodeError

from netdef.data.datum import image_to_chw
from netdef.data.lmdb_io import open_lmdb
from netdef.data.transform import DataTransformer, resolve
from netdef.errors import DataSourceError, NetdefError, NetDefinitionError
from netdef.fillers import fill
from netdef.ir import Node
from netdef.proto import netdef_pb2 as pb

#: Streams of random numbers a layer draws from (the third part of each seed).
TRANSFORM, SHUFFLE, RAND_SKIP, ROWS = range(4)


@dataclass(frozen=True)
class Options:
    """What every source is made with: the seed, the net's phase and where relative paths start."""

    seed: int
    phase: int
    root: str | os.PathLike[str] | None
    arrays: Mapping[str, np.ndarray]


class Source(abc.ABC):
    """One data layer: the shapes of its tops and a function from batch index to their arrays."""

    def __init__(self, node: Node, options: Options) -> None:
        self.node = node
        self.options = options
        self.shapes: list[tuple[int, ...]] = []
        for value in node.tops:
            if value.shape is None:
                raise node.error(f"the shape of top '{value.blob}' is unknown")
            self.shapes.append(tuple(value.shape))

    def rng(self, stream: int, *index: int) -> np.random.Generator:
        return np.random.default_rng([self.options.seed % 2**64, self.node.index, stream, *index])

    def fail(self, message: str, **kwargs: str) -> NetdefError:
        return self.node.error(message, DataSourceError, **kwargs)

    @abc.abstractmethod
    def batch(self, index: int, *records: np.ndarray) -> tuple[np.ndarray, ...]:
        """The arrays of every top for forward pass ``index`` (float32, the IR's shapes).

        ``records`` are what a source read in order beforehand (the Data layer's Datums).
        """

    def check(self, shape: tuple[int, ...], top: int, what: str) -> None:
        """A sample of top ``top`` must have the shape the net was built for."""
        expected = self.shapes[top][1:]
        if tuple(shape) != expected:
            raise self.fail(
                f"{what} does not have the shape of top '{self.node.tops[top].blob}'",
                expected=str(expected),
                received=str(tuple(shape)),
                hint="Caffe takes each batch's shape from its first sample; netdef builds the model for one shape",
            )


# --- Data (LMDB) --------------------------------------------------------------------------


class _SharedEnvironments:
    """Read-only LMDB environments shared by every reader in the process, open while in use."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._open: dict[str, tuple[lmdb.Environment, int]] = {}

    @contextmanager
    def using(self, path: Path) -> Iterator[lmdb.Environment]:
        key = os.path.realpath(path)
        with self._lock:
            env, users = self._open.get(key) or (open_lmdb(path), 0)
            self._open[key] = (env, users + 1)
        try:
            yield env
        finally:
            with self._lock:
                env, users = self._open[key]
                if users == 1:
                    del self._open[key]
                    env.close()
                else:
                    self._open[key] = (env, users - 1)


ENVIRONMENTS = _SharedEnvironments()


class DataSource(Source):
    """Caffe's Data layer: Datums of an LMDB in key order, wrapping at the end, transformed."""

    def __init__(self, node: Node, options: Options) -> None:
        super().__init__(node, options)
        param = node.param.data_param
        if param.backend != pb.DataParameter.LMDB:
            raise self.fail(
                f"cannot read source '{param.source}': netdef reads LMDB databases only, and backend is LEVELDB "
                "(the default)",
                hint="convert the database to LMDB and set data_param { backend: LMDB }",
            )
        self.path = resolve(param.source, options.root)
        self.batch_size = param.batch_size
        self.transformer = DataTransformer.for_layer(node, options.phase, options.root)
        with ENVIRONMENTS.using(self.path) as env, env.begin(buffers=False) as txn:
            self.count = int(txn.stat()["entries"])
            cursor = txn.cursor()
            first = cursor.value() if cursor.first() else None
        if first is None:
            raise self.fail(f"the LMDB database {self.path} has no records")
        self.batch(0, np.asarray([first], dtype=object))  # a bad first record fails here, not in the middle of training
        self._lock = threading.Lock()
        self._next: tuple[int, bytes] = (-1, b"")

    def records(self, index: int) -> np.ndarray:
        """The serialized Datums of batch ``index``, read on from where the previous batch ended.

        Batches are read in order, so the cursor position is kept between calls; a batch
        out of that order (a new iteration, a skip) walks the keys to its first record.
        The environment is shared and held only while one batch is read, so other readers
        of the database (a test net, shape inference) can open it in between.
        """
        with self._lock:
            if index != self._next[0]:
                self._next = (index, self._key_at(index * self.batch_size % self.count))
            with ENVIRONMENTS.using(self.path) as env, env.begin(buffers=False) as txn:
                cursor = txn.cursor()
                if not cursor.set_key(self._next[1]):
                    raise self.fail(f"the LMDB database {self.path} changed while it was read")
                values = []
                for _ in range(self.batch_size):
                    values.append(cursor.value())
                    if not cursor.next():
                        cursor.first()
                self._next = (index + 1, cursor.key())
        return np.asarray(values, dtype=object)

    def _key_at(self, position: int) -> bytes:
        with ENVIRONMENTS.using(self.path) as env, env.begin(buffers=False) as txn:
            cursor = txn.cursor()
            cursor.first()
            keys = cursor.iternext(keys=True, values=False)
            for index, key in enumerate(keys):
                if index == position:
                    return bytes(key)
        raise self.fail(f"the LMDB database {self.path} changed while it was read")

    def batch(self, index: int, *records: np.ndarray) -> tuple[np.ndarray, ...]:
        (values,) = records
        rng = self.rng(TRANSFORM, index)
        data = np.empty(self.shapes[0], dtype=np.float32)
        labels = np.empty(self.batch_size, dtype=np.float32)
        for item, value in enumerate(values):
            what = f"record {index * self.batch_size + item} of {self.path} (in key order, wrapping)"
            try:
                datum = pb.Datum.FromString(value)
            except DecodeError:
                raise self.fail(f"{what} is not a Datum") from None
            try:
                sample = self.transformer.decode(datum)
            except NetdefError as error:
                raise self.fail(f"{what}: {error.message}") from None
            self.check(self.transformer.output_shape(sample.shape), 0, what)
            self.transformer(sample, rng, what, out=data[item])
            labels[item] = datum.label
        return (data, labels) if len(self.shapes) > 1 else (data,)


# --- ImageData ----------------------------------------------------------------------------


_LEADING_INT = re.compile(r"\s*([+-]?\d+)")


def _atoi(text: str) -> int:
    """C's ``atoi``: the leading integer, 0 when there is none."""
    match = _LEADING_INT.match(text)
    return int(match.group(1)) if match else 0


def read_image_list(path: Path, node: Node) -> list[tuple[str, int]]:
    """Caffe's ImageData list: ``path label`` per line, split at the last space (paths may hold spaces)."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise node.error(f"cannot read the image list {path}: {error}", DataSourceError) from None
    lines = []
    for line in text.split("\n"):
        if not line:
            continue
        name, space, label = line.rpartition(" ")
        lines.append((name, _atoi(label)) if space else (line, _atoi(line)))
    if not lines:
        raise node.error(f"the image list {path} is empty", DataSourceError)
    return lines


class ImageDataSource(Source):
    """Caffe's ImageData: images of a list file through OpenCV (BGR, C × H × W), optionally resized."""

    def __init__(self, node: Node, options: Options) -> None:
        super().__init__(node, options)
        self.param = node.param.image_data_param
        self.lines = read_image_list(resolve(self.param.source, options.root), node)
        self.transformer = DataTransformer.for_layer(node, options.phase, options.root)
        self.skip = 0
        if self.param.rand_skip:
            self.skip = int(self.rng(RAND_SKIP).integers(2**32)) % self.param.rand_skip
            if self.skip >= len(self.lines):
                raise self.fail("Not enough points to skip", expected=f"more than {self.skip} images")
        # A few epochs are live at a time in a parallel pipeline; their orders are kept.
        self.order = functools.lru_cache(maxsize=4)(self._order)
        first = self.line(0)  # the first image must load and fit, as Caffe reads it at setup
        self.check(self.transformer.output_shape(self.read(first).shape), 0, f"image '{self.lines[first][0]}'")

    def _order(self, epoch: int) -> np.ndarray:
        """The lines in epoch ``epoch``'s order: shuffled anew each epoch when ``shuffle`` is set."""
        if not self.param.shuffle:
            return np.arange(len(self.lines))
        return self.rng(SHUFFLE, epoch).permutation(len(self.lines))

    def line(self, item: int) -> int:
        """The list line that item ``item`` of the stream reads (after rand_skip, epoch by epoch)."""
        position = self.skip + item
        return int(self.order(position // len(self.lines))[position % len(self.lines)])

    def read(self, line: int) -> np.ndarray:
        name = self.param.root_folder + self.lines[line][0]
        flag = cv2.IMREAD_COLOR if self.param.is_color else cv2.IMREAD_GRAYSCALE
        image = cv2.imread(str(resolve(name, self.options.root)), flag)
        if image is None:
            raise self.fail(f"Could not load {name}")
        if self.param.new_height > 0 and self.param.new_width > 0:
            image = cv2.resize(image, (self.param.new_width, self.param.new_height))
        return image_to_chw(image)

    def batch(self, index: int, *records: np.ndarray) -> tuple[np.ndarray, ...]:
        rng = self.rng(TRANSFORM, index)
        data = np.empty(self.shapes[0], dtype=np.float32)
        labels = np.empty(self.param.batch_size, dtype=np.float32)
        for item in range(self.param.batch_size):
            line = self.line(index * self.param.batch_size + item)
            what = f"image '{self.lines[line][0]}'"
            sample = self.read(line)
            self.check(self.transformer.output_shape(sample.shape), 0, what)
            self.transformer(sample, rng, what, out=data[item])
            labels[item] = self.lines[line][1]
        return data, labels


# --- HDF5Data -----------------------------------------------------------------------------


class HDF5DataSource(Source):
    """Caffe's HDF5Data: rows of the datasets named like the tops, file after file, in order.

    With ``shuffle`` the file order is permuted each pass over the list and the rows of each
    file each time it is loaded, as Caffe's ``Next`` does.
    """

    def __init__(self, node: Node, options: Options) -> None:
        super().__init__(node, options)
        param = node.param.hdf5_data_param
        listing = resolve(param.source, options.root)
        try:
            names = listing.read_text(encoding="utf-8").split()
        except (OSError, UnicodeDecodeError) as error:
            raise self.fail(f"Failed to open source file {listing}: {error}") from None
        if not names:
            raise self.fail(f"Must have at least 1 HDF5 filename listed in {listing}")
        self.files = [resolve(name, options.root) for name in names]
        self.batch_size = param.batch_size
        self.shuffle = param.shuffle
        self.rows = np.asarray([self._rows(path) for path in self.files])
        self.total = int(self.rows.sum())
        # A batch spans a few files at most; Caffe holds one file in memory at a time.
        self.load = functools.lru_cache(maxsize=4)(self._load)
        self.files_in = functools.lru_cache(maxsize=4)(self._files_in)

    def _rows(self, path: Path) -> int:
        """A file's row count, after checking that its datasets fit the tops."""
        try:
            with h5py.File(path, "r") as file:
                shapes = [self._dataset(file, path, top).shape for top in range(len(self.shapes))]
        except OSError as error:
            raise self.fail(f"Failed opening HDF5 file: {path} ({error})") from None
        rows = {shape[0] for shape in shapes}
        if len(rows) > 1 or 0 in rows:
            raise self.fail(f"the datasets of {path} must have the same, non-zero, number of rows", received=str(rows))
        for top, shape in enumerate(shapes):
            if tuple(shape[1:]) != self.shapes[top][1:]:
                raise self.fail(
                    f"dataset '{self.node.tops[top].blob}' of {path} does not fit its top",
                    expected=f"rows of shape {self.shapes[top][1:]}",
                    received=f"{tuple(shape[1:])}",
                )
        return rows.pop()

    def _dataset(self, file: h5py.File, path: Path, top: int) -> h5py.Dataset:
        name = self.node.tops[top].blob
        dataset = file.get(name)
        if not isinstance(dataset, h5py.Dataset) or not dataset.shape:
            raise self.fail(f"{path} has no dataset '{name}' with at least one axis (HDF5Data reads one per top)")
        return dataset

    def _load(self, file: int) -> list[np.ndarray]:
        """A whole file's datasets as float32, as Caffe's ``LoadHDF5FileData`` holds them."""
        path = self.files[file]
        with h5py.File(path, "r") as handle:
            return [np.asarray(self._dataset(handle, path, top), dtype=np.float32) for top in range(len(self.shapes))]

    def _files_in(self, epoch: int) -> np.ndarray:
        if not self.shuffle:
            return np.arange(len(self.files))
        return self.rng(SHUFFLE, epoch).permutation(len(self.files))

    def rows_of(self, epoch: int, slot: int) -> np.ndarray:
        """Row order of the file loaded at position ``slot`` of pass ``epoch``."""
        count = int(self.rows[self.files_in(epoch)[slot]])
        return self.rng(ROWS, epoch, slot).permutation(count) if self.shuffle else np.arange(count)

    def batch(self, index: int, *records: np.ndarray) -> tuple[np.ndarray, ...]:
        outputs = [np.empty(shape, dtype=np.float32) for shape in self.shapes]
        for item in range(self.batch_size):
            position = index * self.batch_size + item
            epoch, offset = divmod(position, self.total)
            order = self.files_in(epoch)
            ends = np.cumsum(self.rows[order])
            slot = int(np.searchsorted(ends, offset, side="right"))
            row = offset - (int(ends[slot - 1]) if slot else 0)
            if self.shuffle:
                row = int(self.rows_of(epoch, slot)[row])
            for output, dataset in zip(outputs, self.load(int(order[slot])), strict=True):
                output[item] = dataset[row]
        return tuple(outputs)


# --- MemoryData and Input -----------------------------------------------------------------


class ArraySource(Source):
    """Input and MemoryData: arrays given from Python, by top name.

    MemoryData serves ``batch_size`` samples at a time in order, wrapping (its ``Reset``:
    no transformation is applied). An Input top takes an array of its own shape, repeated
    every pass, or one whose first axis is a multiple of the input's batch, served a batch
    at a time.
    """

    def __init__(self, node: Node, options: Options) -> None:
        super().__init__(node, options)
        self.arrays = []
        for top, value in enumerate(node.tops):
            if value.blob not in options.arrays:
                raise node.error(
                    f"no array for top '{value.blob}'",
                    NetDefinitionError,
                    hint=f"pass arrays={{'{value.blob}': ...}} to net_dataset",
                )
            array = np.asarray(options.arrays[value.blob], dtype=np.float32)
            self.arrays.append(self._batches(array, top))
        if node.type == "MemoryData" and len({len(array) for array in self.arrays}) > 1:
            raise node.error("MemoryData's data and labels must hold the same number of samples", NetDefinitionError)

    def _batches(self, array: np.ndarray, top: int) -> np.ndarray:
        """The array as (number of batches, *top shape)."""
        shape = self.shapes[top]
        batch = shape[0] if shape else 1
        name = self.node.tops[top].blob
        if self.node.type == "MemoryData":
            sample = math.prod(shape[1:])
            if array.ndim == 0 or array.shape[0] % batch or array.size != array.shape[0] * sample:
                raise self.node.error(
                    f"the array for '{name}' must hold a multiple of batch_size samples",
                    NetDefinitionError,
                    expected=f"(k·{batch}, {', '.join(map(str, shape[1:]))}) with {sample} values per sample",
                    received=str(array.shape),
                )
            return array.reshape(-1, *shape)
        if array.shape == shape:
            return array[np.newaxis]
        if array.ndim == len(shape) and shape and array.shape[1:] == shape[1:] and array.shape[0] % batch == 0:
            return array.reshape(-1, *shape)
        raise self.node.error(
            f"the array for input '{name}' does not fit its shape",
            NetDefinitionError,
            expected=f"{shape}" + (f" or (k·{batch}, {', '.join(map(str, shape[1:]))})" if shape else ""),
            received=str(array.shape),
        )

    def batch(self, index: int, *records: np.ndarray) -> tuple[np.ndarray, ...]:
        return tuple(array[index % len(array)] for array in self.arrays)


# --- DummyData ----------------------------------------------------------------------------


class DummyDataSource(Source):
    """DummyData: each top filled by its filler, anew every pass unless the filler is constant."""

    def __init__(self, node: Node, options: Options) -> None:
        super().__init__(node, options)
        fillers = list(node.param.dummy_data_param.data_filler) or [pb.FillerParameter(type="constant", value=0)]
        self.fillers = fillers * len(self.shapes) if len(fillers) == 1 else fillers
        self.fixed = [
            self._fill(top, np.random.default_rng(0)) if filler.type == "constant" else None
            for top, filler in enumerate(self.fillers)
        ]

    def _fill(self, top: int, rng: np.random.Generator) -> np.ndarray:
        try:
            return fill(self.fillers[top], self.shapes[top], rng)
        except NetdefError as error:
            raise error.located(self.node.location, self.node.name, self.node.type) from None

    def batch(self, index: int, *records: np.ndarray) -> tuple[np.ndarray, ...]:
        return tuple(
            fixed if fixed is not None else self._fill(top, self.rng(TRANSFORM, index, top))
            for top, fixed in enumerate(self.fixed)
        )


# --- WindowData ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Window:
    image: int
    label: int
    overlap: float
    x1: int
    y1: int
    x2: int
    y2: int


def _c_round(value: np.float32) -> int:
    """C's ``round``: halves away from zero (Python's ``round`` goes to even)."""
    return int(math.copysign(math.floor(abs(float(value)) + 0.5), float(value)))


class WindowDataSource(Source):
    """Caffe's WindowData (R-CNN fine-tuning): random fore- and background windows, warped to crop_size.

    Each batch takes ``batch_size - int(batch_size × fg_fraction)`` background windows,
    then the foreground ones, each chosen at random, optionally mirrored; a window is grown
    by ``context_pad`` (and made square in "square" mode), clipped to the image, warped with
    bilinear interpolation and placed in a zeroed crop, then ``(pixel - mean) * scale``
    with ``window_data_param.scale`` as Caffe's layer does.
    """

    def __init__(self, node: Node, options: Options) -> None:
        super().__init__(node, options)
        self.param = node.param.window_data_param
        self.transform = node.param.transform_param
        self.crop = self.transform.crop_size
        if self.crop <= 0:
            raise self.fail("WindowData needs transform_param.crop_size > 0")
        self.images: list[str] = []
        self.foreground: list[Window] = []
        self.background: list[Window] = []
        self._read_windows(resolve(self.param.source, options.root))
        if not self.foreground or not self.background:
            raise self.fail("the window file needs both foreground and background windows")
        self.channels = self.shapes[0][1]
        self.mean, self.mean_values = self._means()
        self.cached: dict[int, bytes] = {}
        if self.param.cache_images:
            for index in {window.image for window in (*self.foreground, *self.background)}:
                try:
                    self.cached[index] = resolve(self.images[index], options.root).read_bytes()
                except OSError:
                    raise self.fail(f"Could not open or find file {self.images[index]}") from None

    def _read_windows(self, path: Path) -> None:
        try:
            tokens = iter(path.read_text(encoding="utf-8").split())
        except (OSError, UnicodeDecodeError) as error:
            raise self.fail(f"Failed to open window file {path}: {error}") from None
        try:
            for hashtag in tokens:
                index = int(next(tokens))
                if hashtag != "#":
                    raise ValueError(hashtag)
                self.images.append(self.param.root_folder + next(tokens))
                for _ in range(3):
                    int(next(tokens))
                for _ in range(int(next(tokens))):
                    label, overlap = int(next(tokens)), float(next(tokens))
                    box = [int(next(tokens)) for _ in range(4)]
                    self._add(Window(index, label, overlap, *box))
        except (StopIteration, ValueError):
            raise self.fail(f"malformed window file {path}") from None
        if not self.images:
            raise self.fail(f"Window file is empty: {path}")
        # Caffe looks a window's image up by the index written after '#', as a position in file order.
        unknown = {w.image for w in (*self.foreground, *self.background)} - set(range(len(self.images)))
        if unknown:
            raise self.fail(f"window file {path} refers to image indices beyond its {len(self.images)} images")

    def _add(self, window: Window) -> None:
        if window.overlap >= self.param.fg_threshold:
            if window.label <= 0:
                raise self.fail("a foreground window needs a label > 0", received=str(window.label))
            self.foreground.append(window)
        elif window.overlap < self.param.bg_threshold:
            self.background.append(Window(window.image, 0, 0.0, window.x1, window.y1, window.x2, window.y2))

    def _means(self) -> tuple[np.ndarray | None, np.ndarray | None]:
        transformer = DataTransformer.for_layer(self.node, self.options.phase, self.options.root)
        values = transformer.mean_values
        if values is not None and len(values) not in (1, self.channels):
            raise self.fail(f"Specify either 1 mean_value or as many as channels: {self.channels}")
        mean = transformer.mean
        if mean is not None:
            offset = (mean.shape[2] - self.crop) // 2
            if mean.shape[0] != self.channels or offset < 0 or offset + self.crop > mean.shape[1]:
                raise self.fail(
                    "mean_file does not cover the crop",
                    expected=f"a {self.channels}-channel mean of at least {self.crop}×{self.crop}",
                    received="×".join(map(str, mean.shape)),
                )
        return mean, values

    def _image(self, index: int) -> np.ndarray:
        if index in self.cached:
            image = cv2.imdecode(np.frombuffer(self.cached[index], np.uint8), cv2.IMREAD_COLOR)
        else:
            image = cv2.imread(str(resolve(self.images[index], self.options.root)), cv2.IMREAD_COLOR)
        if image is None:
            raise self.fail(f"Could not open or find file {self.images[index]}")
        if image.shape[2] != self.channels:
            raise self.fail(f"image {self.images[index]} has 3 channels, the window file says {self.channels}")
        return image

    def _check_region(self, window: Window, box: tuple[int, int, int, int], shape: tuple[int, ...]) -> None:
        """The region cut out must lie inside the image (Caffe's CHECKs and OpenCV's ROI check)."""
        x1, y1, x2, y2 = box
        if not (0 <= x1 <= x2 < shape[1] and 0 <= y1 <= y2 < shape[0]):
            raise self.fail(
                f"window ({window.x1}, {window.y1}, {window.x2}, {window.y2}) lies outside its image "
                f"{self.images[window.image]} ({shape[1]}×{shape[0]})"
            )

    def batch(self, index: int, *records: np.ndarray) -> tuple[np.ndarray, ...]:
        rng = self.rng(TRANSFORM, index)
        batch = self.param.batch_size
        data = np.zeros(self.shapes[0], dtype=np.float32)
        labels = np.zeros(batch, dtype=np.float32)
        foreground = int(np.float32(batch) * np.float32(self.param.fg_fraction))
        pools = [self.background] * (batch - foreground) + [self.foreground] * foreground
        for item, pool in enumerate(pools):
            window = pool[int(rng.integers(2**32)) % len(pool)]
            mirror = bool(self.transform.mirror and int(rng.integers(2**32)) % 2)
            data[item] = self._warp(window, mirror)
            labels[item] = window.label
        return data, labels

    def _warp(self, window: Window, mirror: bool) -> np.ndarray:
        """One window as Caffe's ``load_batch`` copies it into the (zeroed) crop."""
        image = self._image(window.image)
        crop = self.crop
        x1, y1, x2, y2 = window.x1, window.y1, window.x2, window.y2
        size = (crop, crop)  # (width, height), as cv::Size
        pad_w = pad_h = 0
        if self.param.context_pad > 0 or self.param.crop_mode == "square":
            x1, y1, x2, y2, size, pad_w, pad_h = self._expand(image.shape, x1, y1, x2, y2, mirror)
        self._check_region(window, (x1, y1, x2, y2), image.shape)
        warped = cv2.resize(image[y1 : y2 + 1, x1 : x2 + 1], size, interpolation=cv2.INTER_LINEAR)
        if mirror:
            warped = warped[:, ::-1]
        pixels = image_to_chw(warped).astype(np.float32)
        height, width = pixels.shape[1:]
        out = np.zeros((self.channels, crop, crop), dtype=np.float32)
        place = (slice(None), slice(pad_h, pad_h + height), slice(pad_w, pad_w + width))
        if self.mean is not None:
            offset = (self.mean.shape[2] - crop) // 2
            pixels -= self.mean[:, offset + pad_h : offset + pad_h + height, offset + pad_w : offset + pad_w + width]
        elif self.mean_values is not None:
            pixels -= self.mean_values.reshape(-1, 1, 1) if len(self.mean_values) > 1 else self.mean_values[0]
        out[place] = pixels * np.float32(self.param.scale)
        return out

    def _expand(
        self, shape: tuple[int, ...], x1: int, y1: int, x2: int, y2: int, mirror: bool
    ) -> tuple[int, int, int, int, tuple[int, int], int, int]:
        """The window grown by context_pad (square in "square" mode), clipped, and the padding it leaves."""
        f32 = np.float32
        crop = self.crop
        context_scale = f32(crop) / f32(crop - 2 * self.param.context_pad)
        half_height = f32(f32(y2 - y1 + 1) / f32(2.0))
        half_width = f32(f32(x2 - x1 + 1) / f32(2.0))
        center_x = f32(x1) + half_width
        center_y = f32(y1) + half_height
        if self.param.crop_mode == "square":
            half_height = half_width = max(half_height, half_width)
        x1 = _c_round(center_x - half_width * context_scale)
        x2 = _c_round(center_x + half_width * context_scale)
        y1 = _c_round(center_y - half_height * context_scale)
        y2 = _c_round(center_y + half_height * context_scale)
        unclipped_height, unclipped_width = y2 - y1 + 1, x2 - x1 + 1
        pad_x1, pad_y1 = max(0, -x1), max(0, -y1)
        pad_x2, pad_y2 = max(0, x2 - shape[1] + 1), max(0, y2 - shape[0] + 1)
        x1, x2, y1, y2 = x1 + pad_x1, x2 - pad_x2, y1 + pad_y1, y2 - pad_y2
        scale_x = f32(crop) / f32(unclipped_width)
        scale_y = f32(crop) / f32(unclipped_height)
        width = _c_round(f32(x2 - x1 + 1) * scale_x)
        height = _c_round(f32(y2 - y1 + 1) * scale_y)
        pad_x1, pad_x2 = _c_round(f32(pad_x1) * scale_x), _c_round(f32(pad_x2) * scale_x)
        pad_y1 = _c_round(f32(pad_y1) * scale_y)
        pad_h = pad_y1
        pad_w = pad_x2 if mirror else pad_x1
        height = min(height, crop - pad_h)
        width = min(width, crop - pad_w)
        return x1, y1, x2, y2, (width, height), pad_w, pad_h


SOURCES: dict[str, type[Source]] = {
    "Data": DataSource,
    "ImageData": ImageDataSource,
    "HDF5Data": HDF5DataSource,
    "MemoryData": ArraySource,
    "Input": ArraySource,
    "DummyData": DummyDataSource,
    "WindowData": WindowDataSource,
}


def make_source(node: Node, options: Options) -> Source:
    """The source for one data layer of the net."""
    kind = SOURCES.get(node.type)
    if kind is None:
        raise node.error(f"{node.type} layers cannot feed an input pipeline")
    return kind(node, options)
