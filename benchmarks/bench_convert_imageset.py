"""convert_imageset throughput: worker processes against the same code in one process.

Run: .venv/bin/python benchmarks/bench_convert_imageset.py [--images N] [--repeat R] [--workers W]
Generates N photo-like 500×375 JPEGs (ImageNet's typical size), converts them with resize to
256×256 (create_imagenet.sh with RESIZE=true), alternating the parallel run, the in-process
run (workers=1, OpenCV free to use its own threads) and the in-process run pinned to one
core, and reports the median images per second of each and the median of the per-round
ratios. Each run is the whole conversion: list file, reading, decoding, resizing, LMDB
writes, the final sync and the rename. Each round also measures, for reference, how the
machine's cores scale the arithmetic alone: the same decoding and resizing from memory, in
N processes against one (file reads and database writes, which the conversion overlaps
across processes, are left out).
One warm-up run of each comes first, so the fork server's one-time start is not counted.
The load average is printed too: other work on the machine takes cores from the workers.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from netdef.data.convert_imageset import convert_imageset, default_workers


def make_images(root: Path, count: int) -> Path:
    """JPEGs of smooth shapes plus sensor-like noise, so they decode like photographs (~40 KB each)."""
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:375, 0:500].astype(np.float32)
    lines = []
    for i in range(count):
        fx, fy = rng.uniform(0.005, 0.05, 2)
        phase = rng.uniform(0, 6.3)
        base = np.stack([np.sin(x * fx + phase), np.cos(y * fy - phase), np.sin((x + y) * (fx + fy) / 2)], axis=-1)
        image = np.clip(127.5 + 100 * base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)
        name = f"n{i % 10:08d}/img_{i:05d}.JPEG"
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(root / name), image, [cv2.IMWRITE_JPEG_QUALITY, 90])
        lines.append(f"{name} {i % 10}\n")
    list_file = root / "train.txt"
    list_file.write_text("".join(lines))
    return list_file


def run(root: Path, list_file: Path, db: Path, workers: int) -> float:
    """Images per second of a whole conversion: list, workers, LMDB writes, sync and rename."""
    shutil.rmtree(db, ignore_errors=True)
    start = time.perf_counter()
    result = convert_imageset(
        f"{root}/", list_file, db, resize_width=256, resize_height=256, shuffle=True, workers=workers
    )
    seconds = time.perf_counter() - start
    return result.written / seconds


def _decode_and_resize(files: list[bytes], ready: Any, start: Any) -> None:
    """The conversion's arithmetic alone, on one core: decode and resize every file."""
    cv2.setNumThreads(1)
    ready.wait()
    start.wait()
    for data in files:
        cv2.resize(cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR), (256, 256))


def kernel(files: list[bytes], processes: int) -> float:
    """Images per second of ``processes`` processes each decoding and resizing every file:
    only the OpenCV work (no files, lists or databases), started together once all are up."""
    context = multiprocessing.get_context("fork")
    ready, start = context.Barrier(processes + 1), context.Barrier(processes + 1)
    workers = [context.Process(target=_decode_and_resize, args=(files, ready, start)) for _ in range(processes)]
    for worker in workers:
        worker.start()
    ready.wait()
    began = time.perf_counter()
    start.wait()
    for worker in workers:
        worker.join()
    return processes * len(files) / (time.perf_counter() - began)


def pinned(cpus: set[int] | None, measure: Callable[[], float]) -> float:
    """Run ``measure`` on the given CPUs only (None: all of them), then give the process its CPUs back."""
    everything = os.sched_getaffinity(0)
    if cpus:
        os.sched_setaffinity(0, cpus)
    try:
        return measure()
    finally:
        os.sched_setaffinity(0, everything)


def report(what: str, rates: dict[str, list[float]], parallel: str) -> None:
    print(f"{what}:")
    for mode, values in rates.items():
        line = f"  {mode}: {statistics.median(values):.0f} images/s"
        if mode != parallel:
            ratios = [p / s for s, p in zip(values, rates[parallel], strict=True)]
            line += f"; {parallel} are {statistics.median(ratios):.2f}x faster (median of the per-round ratios)"
        print(line)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--images", type=int, default=300)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--workers", type=int, default=default_workers())
    args = parser.parse_args()
    parallel = f"{args.workers} workers"
    one_core = {min(os.sched_getaffinity(0))}
    # (workers, CPUs): one process may still use OpenCV's own threads on every core
    modes = {parallel: (args.workers, None), "1 process": (1, None), "1 process on 1 core": (1, one_core)}
    with tempfile.TemporaryDirectory() as directory:
        root = Path(directory)
        images, db = root / "images", root / "db"
        list_file = make_images(images, args.images)
        size = sum(path.stat().st_size for path in images.rglob("*.JPEG")) / args.images
        print(f"{args.images} JPEGs of 500x375, {size / 1024:.0f} KB on average; resize to 256x256")
        whole: dict[str, list[float]] = {mode: [] for mode in modes}
        for workers, cpus in modes.values():  # warm-up (the fork server first, with every CPU), page cache
            pinned(cpus, lambda workers=workers: run(images, list_file, db, workers))
        files = [path.read_bytes() for path in sorted(images.rglob("*.JPEG"))]
        bare: dict[str, list[float]] = {f"{args.workers} processes": [], "1 process": []}
        for _ in range(args.repeat):
            for mode, (workers, cpus) in modes.items():
                whole[mode].append(pinned(cpus, lambda workers=workers: run(images, list_file, db, workers)))
            bare[f"{args.workers} processes"].append(kernel(files, args.workers))
            bare["1 process"].append(kernel(files, 1))
    report("convert_imageset", whole, parallel)
    report(
        "reference: OpenCV's decode + resize alone, from memory, one thread per process",
        bare,
        f"{args.workers} processes",
    )
    share = [
        (w / s) / (p / o)
        for w, s, p, o in zip(
            whole[parallel], whole["1 process"], bare[f"{args.workers} processes"], bare["1 process"], strict=True
        )
    ]
    print(f"the conversion's speed-up is {statistics.median(share):.0%} of the reference's (per-round median)")
    print(f"median of {args.repeat} rounds; load average over the last minute: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
