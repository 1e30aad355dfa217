"""compute_image_mean throughput over an LMDB of 256×256 colour Datum records.

Run: .venv/bin/python benchmarks/bench_image_mean.py [--records N] [--repeat R]
Writes N raw records (uint8 C×H×W, what create_imagenet.sh makes with RESIZE=true) and the
same images JPEG-encoded (--encoded), then reports the median of R walks over each: MB/s of
pixel data averaged and records per second. The database is read once first, so the page
cache holds it and the numbers measure netdef, not the disk.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from netdef.data.datum import array_to_datum, encode_image, encoded_datum
from netdef.data.image_mean import compute_image_mean
from netdef.data.lmdb_io import LmdbWriter


def write_db(path: Path, records: int, encoded: bool) -> None:
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:256, 0:256]
    writer = LmdbWriter(path)
    for i in range(records):
        smooth = np.stack([(x + i) % 256, (y * 2 + i) % 256, (x + y) % 256], axis=-1)
        image = np.clip(smooth + rng.integers(0, 16, smooth.shape), 0, 255).astype(np.uint8)
        datum = (
            encoded_datum(encode_image(image, "jpg"), i % 10) if encoded else array_to_datum(image.transpose(2, 0, 1))
        )
        writer.put(f"{i:08d}_img_{i}.JPEG".encode(), datum.SerializeToString())
        if (i + 1) % 1000 == 0:
            writer.commit()
    writer.close()


def measure(db: Path, repeat: int) -> tuple[float, float]:
    compute_image_mean(db)  # warm: the page cache
    times, megabytes = [], 0.0
    for _ in range(repeat):
        start = time.perf_counter()
        result = compute_image_mean(db)
        times.append(time.perf_counter() - start)
        megabytes = result.bytes_read / 1e6
    seconds = statistics.median(times)
    return megabytes / seconds, result.count / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--records", type=int, default=400)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        for encoded in (False, True):
            db = Path(directory) / ("encoded" if encoded else "raw")
            write_db(db, args.records, encoded)
            size = sum(f.stat().st_size for f in db.iterdir()) / 1e6
            rate, records = measure(db, args.repeat)
            kind = "JPEG-encoded" if encoded else "raw"
            print(f"{kind}: {args.records} records of 3x256x256, {size:.0f} MB on disk")
            print(f"  {rate:.0f} MB/s of pixels, {records:.0f} records/s (median of {args.repeat})")


if __name__ == "__main__":
    main()
