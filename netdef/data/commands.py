"""The ``netdef convert-imageset`` and ``netdef compute-image-mean`` verbs: Caffe's tools, same flags and order.

Progress goes to stderr: a rich progress bar with the rate and the time left when stderr
is a terminal, otherwise Caffe's periodic "Processed N files." lines, so a log file stays
readable. Warnings (skipped images) are printed above the bar as ``netdef: warning: ...``;
results go to stdout. OpenCV and LMDB are imported only when a verb runs, so other verbs
do not pay for them.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from netdef.errors import DataSourceError

Progress = Callable[[int, int], None]


def register(verbs: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    """Add both verbs to the ``netdef`` parser."""
    convert = verbs.add_parser(
        "convert-imageset",
        parents=[common],
        help="Caffe's convert_imageset: images listed with labels → an LMDB of Datum records",
        description="Convert a set of images to the LMDB format used as input for Caffe. "
        "LISTFILE holds one 'path label' per line (split at the last space); each path is appended to ROOT/.",
    )
    convert.add_argument("root_folder", metavar="ROOT/", help="folder the list's paths are relative to (end it with /)")
    convert.add_argument("list_file", metavar="LISTFILE", help="lines of 'relative/path label'")
    convert.add_argument("db_name", metavar="DB_NAME", help="the LMDB directory to create")
    convert.add_argument("--gray", action="store_true", help="treat images as grayscale ones (1 channel)")
    convert.add_argument("--shuffle", action="store_true", help="shuffle the lines (deterministic: seed 1701)")
    convert.add_argument(
        "--backend", dest="db_backend", default="lmdb", metavar="lmdb", help="database backend (lmdb only)"
    )
    convert.add_argument(
        "--resize_width", "--resize-width", type=int, default=0, metavar="W", help="width to resize to"
    )
    convert.add_argument(
        "--resize_height", "--resize-height", type=int, default=0, metavar="H", help="height to resize to"
    )
    convert.add_argument(
        "--check_size", "--check-size", action="store_true", help="check that all the images have the same size"
    )
    convert.add_argument("--encoded", action="store_true", help="store encoded image files instead of raw pixels")
    convert.add_argument(
        "--encode_type", "--encode-type", default="", metavar="TYPE", help="png, jpg, ...: encoding (implies --encoded)"
    )
    convert.add_argument(
        "--overwrite", action="store_true", help="replace DB_NAME if it exists (once the new one is done)"
    )
    convert.add_argument(
        "--workers", type=int, default=None, metavar="N", help="processes decoding images (default: all cores)"
    )
    convert.set_defaults(run=cmd_convert_imageset)

    mean = verbs.add_parser(
        "compute-image-mean",
        parents=[common],
        help="Caffe's compute_image_mean: the mean image of an LMDB as a .binaryproto",
        description="Compute the mean image of a set of images given by an LMDB.",
    )
    mean.add_argument("db", metavar="INPUT_DB", help="LMDB of Datum records")
    mean.add_argument("output", metavar="OUTPUT_FILE", nargs="?", help="mean file to write (.binaryproto)")
    mean.add_argument("--npy", metavar="OUT.npy", help="also write the (C, H, W) float32 mean as a numpy file")
    mean.add_argument(
        "--backend", dest="db_backend", default="lmdb", metavar="lmdb", help="database backend (lmdb only)"
    )
    mean.set_defaults(run=cmd_compute_image_mean)


def cmd_convert_imageset(args: argparse.Namespace) -> int:
    from netdef.data.convert_imageset import convert_imageset

    with reporting("convert-imageset") as progress:
        result = convert_imageset(
            args.root_folder,
            args.list_file,
            args.db_name,
            gray=args.gray,
            shuffle=args.shuffle,
            backend=args.db_backend,
            resize_width=args.resize_width,
            resize_height=args.resize_height,
            check_size=args.check_size,
            encoded=args.encoded,
            encode_type=args.encode_type,
            overwrite=args.overwrite,
            workers=args.workers,
            progress=progress,
        )
    print(result.summary())
    return 0


def cmd_compute_image_mean(args: argparse.Namespace) -> int:
    from netdef.data.image_mean import channel_mean_lines, compute_image_mean, write_binaryproto, write_npy

    if args.db_backend != "lmdb":
        raise DataSourceError(f"the {args.db_backend!r} backend is not available", expected="--backend lmdb")
    with reporting("compute-image-mean") as progress:
        result = compute_image_mean(args.db, progress=progress)
    written = []
    if args.output:
        write_binaryproto(result, args.output)
        written.append(args.output)
    if args.npy:
        write_npy(result, args.npy)
        written.append(args.npy)
    for line in channel_mean_lines(result):
        print(line)
    where = f" -> {', '.join(written)}" if written else ""
    print(f"averaged {result.count} images of shape {result.mean.shape} from {args.db}{where}")
    return 0


class _LineHandler(logging.Handler):
    """Log records as the CLI's lines: warnings prefixed ``netdef: warning:``, others as they are."""

    def __init__(self, write: Callable[[str], None]) -> None:
        super().__init__(logging.INFO)
        self._write = write

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage()
        self._write(f"netdef: warning: {text}" if record.levelno >= logging.WARNING else text)


@contextmanager
def reporting(verb: str) -> Iterator[Progress | None]:
    """Route ``netdef.data``'s log to stderr for one command; yield a progress callback when stderr is a terminal."""
    logger = logging.getLogger("netdef.data")
    saved = logger.level, logger.propagate
    logger.setLevel(logging.INFO)
    logger.propagate = False
    try:
        if sys.stderr.isatty():
            with _progress_bar(verb, logger) as progress:
                yield progress
        else:
            handler = _LineHandler(lambda text: print(text, file=sys.stderr, flush=True))
            logger.addHandler(handler)
            try:
                yield None
            finally:
                logger.removeHandler(handler)
    finally:
        logger.setLevel(saved[0])
        logger.propagate = saved[1]


@contextmanager
def _progress_bar(verb: str, logger: logging.Logger) -> Iterator[Progress]:
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    console = Console(stderr=True)
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeElapsedColumn(),
        TextColumn("elapsed,"),
        TimeRemainingColumn(),
        TextColumn("left"),
    )
    with Progress(*columns, console=console) as bar:
        task = bar.add_task(verb, total=None, rate="")
        handler = _LineHandler(lambda text: bar.console.print(text, markup=False, highlight=False))
        logger.addHandler(handler)

        def update(done: int, total: int) -> None:
            speed = bar.tasks[task].speed
            bar.update(task, completed=done, total=total, rate=f"{speed:,.0f} images/s" if speed else "")

        try:
            yield update
        finally:
            logger.removeHandler(handler)
