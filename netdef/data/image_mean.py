"""Caffe's ``compute_image_mean``: the element-wise mean image of an LMDB of Datum records.

The arithmetic is Caffe's (``tools/compute_image_mean.cpp``), so the mean file matches the
one Caffe would write bit for bit: the sum lives in the float ``data`` of a BlobProto, so
each record is added in float32, in key order; the sum is then divided by the count in
float32. The per-channel means Caffe logs are float32 running sums over the mean image
divided by H × W. Encoded records are decoded natively (``DecodeDatumNative``). Records
are compared by size only, as Caffe does: every one must hold as many values as the first.

The walk keeps one record in memory at a time. The output BlobProto uses the legacy
``num``/``channels``/``height``/``width`` fields (num = 1), as Caffe writes it, and is
written atomically.
"""

from __future__ import annotations

import io
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from netdef.data.datum import datum_to_array
from netdef.data.lmdb_io import count as count_records
from netdef.data.lmdb_io import iter_datums
from netdef.errors import DataSourceError, SourceLocation
from netdef.fileio import atomic_write
from netdef.proto import netdef_pb2 as pb

logger = logging.getLogger(__name__)

#: Caffe's tool logs its progress every this many records.
LOG_EVERY = 10000
#: Records between two progress callbacks (a callback per record would cost more than the record).
PROGRESS_EVERY = 64


@dataclass(frozen=True)
class ImageMean:
    """The mean image (C, H, W) float32, how many records it averages, and how many bytes were read."""

    mean: np.ndarray
    count: int
    bytes_read: int

    @property
    def channel_means(self) -> np.ndarray:
        """Caffe's logged ``mean_value channel [c]``: a float32 running sum over H × W, divided by H × W."""
        channels = self.mean.shape[0]
        flat = self.mean.reshape(channels, -1)
        sums = np.add.accumulate(flat, axis=1, dtype=np.float32)[:, -1]  # sequential, like Caffe's loop
        return sums / np.float32(flat.shape[1])

    def to_blobproto(self) -> pb.BlobProto:
        """The BlobProto Caffe writes: legacy num=1, channels, height, width, and the float data."""
        channels, height, width = self.mean.shape
        blob = pb.BlobProto(num=1, channels=channels, height=height, width=width)
        blob.data.extend(self.mean.ravel())
        return blob


def compute_image_mean(db: str | os.PathLike[str], progress: Callable[[int, int], None] | None = None) -> ImageMean:
    """Average every record of the LMDB ``db``; ``progress(done, total)`` replaces Caffe's periodic log lines."""
    where = SourceLocation(os.fspath(db))
    total = count_records(db)
    sum_blob: np.ndarray | None = None
    first_key = b""
    shape: tuple[int, ...] = ()
    seen = bytes_read = 0
    if progress is not None:
        progress(0, total)
    for key, datum in iter_datums(db):
        try:
            values = datum_to_array(datum)
        except DataSourceError as error:
            raise DataSourceError(f"record {_name(key)}: {error}", location=where) from None
        if sum_blob is None:
            if datum.encoded:
                logger.info("Decoding Datum")
            sum_blob, first_key, shape = np.zeros(values.size, dtype=np.float32), key, values.shape
            logger.info("Starting iteration")
        elif values.size != sum_blob.size:
            raise DataSourceError(
                f"record {_name(key)} has {values.size} values {values.shape}, unlike the first record",
                location=where,
                expected=f"{sum_blob.size} like record {_name(first_key)} {shape}",
            )
        np.add(sum_blob, values.reshape(-1), out=sum_blob)  # float32 += uint8 or float32, as Caffe's float blob
        seen += 1
        bytes_read += values.nbytes
        if progress is not None:
            if seen % PROGRESS_EVERY == 0 or seen == total:
                progress(seen, total)
        elif seen % LOG_EVERY == 0:
            logger.info("Processed %d files.", seen)
    if progress is None and seen % LOG_EVERY:
        logger.info("Processed %d files.", seen)
    if sum_blob is None:
        raise DataSourceError("the database has no records to average", location=where)
    mean = (sum_blob / np.float32(seen)).astype(np.float32).reshape(shape)
    return ImageMean(mean, seen, bytes_read)


def _name(key: bytes) -> str:
    return repr(key.decode("utf-8", errors="replace"))


def write_binaryproto(result: ImageMean, path: str | os.PathLike[str]) -> None:
    """The mean as Caffe's ``.binaryproto`` mean file, written atomically."""
    atomic_write(path, result.to_blobproto().SerializeToString())


def write_npy(result: ImageMean, path: str | os.PathLike[str]) -> None:
    """The (C, H, W) float32 mean as a numpy ``.npy`` file (pycaffe's ``ilsvrc_2012_mean.npy`` format), atomically."""
    buffer = io.BytesIO()
    np.save(buffer, result.mean)
    atomic_write(path, buffer.getvalue())


def channel_mean_lines(result: ImageMean) -> list[str]:
    """Caffe's closing log lines: the channel count and each channel's mean."""
    lines = [f"Number of channels: {result.mean.shape[0]}"]
    lines += [f"mean_value channel [{c}]: {value:g}" for c, value in enumerate(result.channel_means)]
    return lines
