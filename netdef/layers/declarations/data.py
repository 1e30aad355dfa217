"""Layers with no bottoms: Input, DummyData, MemoryData, Data, ImageData, HDF5Data,
WindowData; the sink HDF5Output; and Python, whose shapes only its code knows.

Layers that read a source take their shapes from its first sample, as Caffe's
``DataLayerSetUp`` does, after the transformer's crop. A user-given shape
(``--data-shape NAME=N,C,H,W``, in ``ctx.data.shapes``, keyed by layer or top name)
wins and spares reading the source; a second (label) top is then ``(N,)``.
"""

from __future__ import annotations

from pathlib import Path
from typing import TypeVar

import cv2
import h5py
import lmdb
import numpy as np
from google.protobuf.message import DecodeError

from netdef.layers.declarations.common import (
    declare,
    overridden_shape,
    require_positive,
    source_error,
    with_labels,
)
from netdef.layers.registry import LayerContext, Shape, at_least, between, exactly
from netdef.proto import netdef_pb2 as pb

T = TypeVar("T")


def _one_or_per_top(ctx: LayerContext, field: str, values: list[T], *, allow_none: bool = False) -> list[T]:
    """Caffe's "once, or once per top" repeated fields, expanded to one value per top."""
    tops = len(ctx.tops)
    if len(values) == 1:
        return values * tops
    if len(values) == tops or (allow_none and not values):
        return values
    raise ctx.fail(
        f"give {field} once, or once per top",
        expected=("1" if tops == 1 else f"1 or {tops}") + (" (or none)" if allow_none else ""),
        received=len(values),
    )


def _input_shape(ctx: LayerContext) -> list[Shape]:
    """Net inputs: ``input_param.shape`` once for all tops or once per top.

    Caffe also allows no shape at all (the caller reshapes the blobs before use); netdef
    needs the shapes from ``--data-shape`` then. A given ``--data-shape`` also overrides
    a written shape, as reshaping the input blob in pycaffe would.
    """
    written = _one_or_per_top(ctx, "input_param.shape", list(ctx.layer.input_param.shape), allow_none=True)
    tops = []
    for index, top in enumerate(ctx.tops):
        shape = overridden_shape(ctx, index)
        if shape is None and not written:
            raise ctx.fail(
                f"input '{top}' has no shape",
                expected="input_param { shape { dim: … } }",
                hint=f"give --data-shape {top}=N,C,H,W",
            )
        tops.append(shape if shape is not None else tuple(written[index].dim))
    return tops


declare("Input", bottoms=exactly(0), tops=at_least(1), shape=_input_shape, params=("input_param",))


def _dummy_data_shape(ctx: LayerContext) -> list[Shape]:
    """``shape``, or the legacy ``num``/``channels``/``height``/``width``; each once or per top."""
    param = ctx.layer.dummy_data_param
    _one_or_per_top(ctx, "data_filler", list(param.data_filler), allow_none=True)
    legacy_fields = ("num", "channels", "height", "width")
    if not any(getattr(param, f) for f in legacy_fields):
        return [tuple(s.dim) for s in _one_or_per_top(ctx, "shape", list(param.shape))]
    if param.shape:
        raise ctx.fail("give either shape or num/channels/height/width, not both")
    columns = [_one_or_per_top(ctx, f, list(getattr(param, f))) for f in legacy_fields]
    return [tuple(dims) for dims in zip(*columns, strict=True)]


declare(
    "DummyData",
    bottoms=exactly(0),
    tops=at_least(1),
    shape=_dummy_data_shape,
    params=("dummy_data_param",),
    data=True,
)


def _memory_data_shape(ctx: LayerContext) -> list[Shape]:
    """``(batch_size, channels, height, width)`` and labels ``(batch_size,)``, all required."""
    param = ctx.layer.memory_data_param
    for field in ("batch_size", "channels", "height", "width"):
        require_positive(ctx, f"memory_data_param.{field}", getattr(param, field))
    return [(param.batch_size, param.channels, param.height, param.width), (param.batch_size,)]


declare(
    "MemoryData",
    bottoms=exactly(0),
    tops=exactly(2),
    shape=_memory_data_shape,
    params=("memory_data_param", "transform_param"),
    data=True,
)


# --- reading sources --------------------------------------------------------------------


def _open_text(ctx: LayerContext, source: str, *, first_line: bool = False) -> str:
    """A list or window file, or only its first line (with its newline; "" if empty)."""
    path = ctx.data.resolve(source)
    try:
        with path.open(encoding="utf-8") as file:
            return file.readline() if first_line else file.read()
    except (OSError, UnicodeDecodeError) as error:
        raise source_error(ctx, source, _reason(error)) from error


def _reason(error: BaseException) -> str:
    return getattr(error, "strerror", None) or str(error) or type(error).__name__


def _transformed(ctx: LayerContext, batch: int, channels: int, height: int, width: int) -> Shape:
    """``(batch, C, crop or H, crop or W)``: the DataTransformer's output; crop must fit."""
    crop = ctx.layer.transform_param.crop_size
    if channels <= 0 or height < crop or width < crop:
        raise ctx.fail(
            f"transform_param.crop_size {crop} does not fit the source's samples",
            expected=f"samples with channels > 0 and height, width >= {crop}",
            received=f"{channels}×{height}×{width}",
        )
    return (batch, channels, crop or height, crop or width)


def _image_chw(image: np.ndarray) -> tuple[int, int, int]:
    channels = 1 if image.ndim == 2 else image.shape[2]
    return channels, image.shape[0], image.shape[1]


def _first_datum(ctx: LayerContext, source: str) -> pb.Datum:
    """The first record, in key order, of an LMDB database, as Caffe's cursor reads it."""
    path = ctx.data.resolve(source)
    if not path.exists():
        raise source_error(ctx, source, "no such LMDB database")
    try:
        with (
            lmdb.open(str(path), readonly=True, lock=False, subdir=path.is_dir()) as env,
            env.begin() as txn,
        ):
            cursor = txn.cursor()
            record = bytes(cursor.value()) if cursor.first() else None
    except lmdb.Error as error:
        raise source_error(ctx, source, f"not a readable LMDB database ({error})") from error
    if record is None:
        raise source_error(ctx, source, "the database is empty")
    datum = pb.Datum()
    try:
        datum.ParseFromString(record)
    except DecodeError as error:
        raise source_error(ctx, source, "its first record is not a Datum") from error
    return datum


def _datum_chw(ctx: LayerContext, datum: pb.Datum, source: str) -> tuple[int, int, int]:
    """(C, H, W) of a Datum; an encoded one is decoded as Caffe's DataTransformer does.

    Without ``force_color``/``force_gray`` the image keeps its own channels (OpenCV's
    IMREAD_UNCHANGED), so a gray PNG gives C = 1 even in a color net.
    """
    if not datum.encoded:
        return datum.channels, datum.height, datum.width
    transform = ctx.layer.transform_param
    if transform.force_color and transform.force_gray:
        raise ctx.fail("transform_param cannot set both force_color and force_gray")
    if transform.force_color:
        flag = cv2.IMREAD_COLOR
    elif transform.force_gray:
        flag = cv2.IMREAD_GRAYSCALE
    else:
        flag = cv2.IMREAD_UNCHANGED
    image = cv2.imdecode(np.frombuffer(datum.data, np.uint8), flag)
    if image is None:
        raise source_error(ctx, source, "its first record is an encoded image OpenCV cannot decode")
    return _image_chw(image)


def _data_shape(ctx: LayerContext) -> list[Shape]:
    """``(batch_size, C, H, W)`` from the first Datum (after crop), labels ``(batch_size,)``.

    ``data_param.backend`` defaults to LEVELDB, which netdef cannot read: such a layer
    needs ``--data-shape`` or its database converted to LMDB (``backend: LMDB``).
    """
    shape = overridden_shape(ctx)
    if shape is None:
        param = ctx.layer.data_param
        if param.backend != pb.DataParameter.LMDB:
            raise source_error(
                ctx,
                param.source,
                "netdef reads LMDB databases only, and backend is LEVELDB (the default)",
                "or convert the database to LMDB and set data_param { backend: LMDB }",
            )
        datum = _first_datum(ctx, param.source)
        shape = _transformed(ctx, param.batch_size, *_datum_chw(ctx, datum, param.source))
    return with_labels(ctx, shape)


declare(
    "Data",
    bottoms=exactly(0),
    tops=between(1, 2),
    shape=_data_shape,
    params=("data_param", "transform_param"),
    data=True,
)


def _first_listed_image(ctx: LayerContext) -> Path:
    """The image on the list file's first line: ``path label``, split at the *last* space.

    Caffe prepends ``root_folder`` as a plain string (no separator is added).
    """
    param = ctx.layer.image_data_param
    line = _open_text(ctx, param.source, first_line=True)
    if not line:
        raise source_error(ctx, param.source, "the image list is empty")
    first = line.rstrip("\n")
    relative = first.rpartition(" ")[0] if " " in first else first
    return ctx.data.resolve(param.root_folder + relative)


def _image_data_shape(ctx: LayerContext) -> list[Shape]:
    """``(batch_size, C, H, W)`` of the first listed image, resized and cropped; labels ``(N,)``.

    C is 3 with ``is_color`` (OpenCV's BGR) else 1; ``new_height``/``new_width`` (both
    or neither) resize before the crop. Without them Caffe reshapes every batch to its
    first image; the first listed image stands for all here.
    """
    param = ctx.layer.image_data_param
    if not (param.new_height == param.new_width == 0 or (param.new_height > 0 and param.new_width > 0)):
        raise ctx.fail(
            "set new_height and new_width together",
            received=f"new_height {param.new_height}, new_width {param.new_width}",
        )
    require_positive(ctx, "image_data_param.batch_size", param.batch_size)
    shape = overridden_shape(ctx)
    if shape is None:
        path = _first_listed_image(ctx)
        image = cv2.imread(str(path), cv2.IMREAD_COLOR if param.is_color else cv2.IMREAD_GRAYSCALE)
        if image is None:
            raise source_error(ctx, param.source, f"OpenCV cannot read its first image '{path}'")
        channels, height, width = _image_chw(image)
        if param.new_height > 0:
            height, width = param.new_height, param.new_width
        shape = _transformed(ctx, param.batch_size, channels, height, width)
    return with_labels(ctx, shape)


declare(
    "ImageData",
    bottoms=exactly(0),
    tops=exactly(2),
    shape=_image_data_shape,
    params=("image_data_param", "transform_param"),
    data=True,
)


def _window_channels(ctx: LayerContext, source: str) -> int:
    """Channels of the window file's last image header, the value Caffe ends up using.

    The file repeats ``# index``, ``path``, ``channels height width``, ``num_windows``
    and that many ``label overlap x1 y1 x2 y2`` lines; no image is opened.
    """
    tokens = iter(_open_text(ctx, source).split())
    channels = None
    try:
        for hashtag in tokens:
            int(next(tokens))
            if hashtag != "#":
                raise ValueError(hashtag)
            next(tokens)
            channels, _, _ = (int(next(tokens)) for _ in range(3))
            for _ in range(6 * int(next(tokens))):
                next(tokens)
    except (StopIteration, ValueError) as error:
        raise source_error(ctx, source, "malformed window file") from error
    if channels is None:
        raise source_error(ctx, source, "the window file is empty")
    return channels


def _window_data_shape(ctx: LayerContext) -> list[Shape]:
    """``(batch_size, C, crop_size, crop_size)`` and labels ``(batch_size,)``.

    Every window is warped to ``transform_param.crop_size`` (required); C comes from the
    window file's image headers.
    """
    crop = ctx.layer.transform_param.crop_size
    require_positive(ctx, "transform_param.crop_size", crop, hint="WindowData warps each window to it")
    shape = overridden_shape(ctx)
    if shape is None:
        param = ctx.layer.window_data_param
        shape = (param.batch_size, _window_channels(ctx, param.source), crop, crop)
    return with_labels(ctx, shape)


declare(
    "WindowData",
    bottoms=exactly(0),
    tops=exactly(2),
    shape=_window_data_shape,
    params=("window_data_param", "transform_param"),
    data=True,
)


def _hdf5_datasets(ctx: LayerContext, names: list[str]) -> dict[str, Shape]:
    """Shapes of the named datasets in the first file of the HDF5 list.

    The list holds whitespace-separated paths (Caffe reads it with ``>>``); all datasets
    must agree on their first dimension.
    """
    param = ctx.layer.hdf5_data_param
    listing = _open_text(ctx, param.source).split()
    if not listing:
        raise source_error(ctx, param.source, "the list of HDF5 files is empty")
    first = listing[0]
    try:
        with h5py.File(ctx.data.resolve(first), "r") as file:
            shapes = {name: _dataset_shape(ctx, file, name, first) for name in names}
    except OSError as error:
        raise source_error(ctx, first, f"not a readable HDF5 file ({error})") from error
    rows = {shape[0] for shape in shapes.values()}
    if len(rows) > 1:
        raise source_error(ctx, first, f"its datasets differ in their first dimension ({sorted(rows)})")
    return shapes


def _dataset_shape(ctx: LayerContext, file: h5py.File, name: str, source: str) -> Shape:
    dataset = file.get(name)
    if not isinstance(dataset, h5py.Dataset):
        raise source_error(
            ctx,
            source,
            f"it has no dataset '{name}' (HDF5Data reads the dataset named like each top)",
        )
    if not dataset.shape:
        raise source_error(ctx, source, f"dataset '{name}' is a scalar; it needs a first (sample) axis")
    return tuple(dataset.shape)


def _hdf5_data_shape(ctx: LayerContext) -> list[Shape]:
    """Each top is the dataset of the same name: ``(batch_size, *dataset.shape[1:])``.

    Caffe refuses ``transform_param`` here: HDF5 data is used exactly as stored. With
    ``--data-shape`` for any top the file is not read: tops without one are labels
    ``(N,)``, N being the first overridden top's batch size.
    """
    if ctx.layer.HasField("transform_param"):
        raise ctx.fail(
            "HDF5Data does not transform its data; remove transform_param",
            hint="preprocess the data when writing the HDF5 files",
        )
    given = [overridden_shape(ctx, i) for i in range(len(ctx.tops))]
    overrides = [shape for shape in given if shape is not None]
    if overrides:
        return [shape if shape is not None else overrides[0][:1] for shape in given]
    batch = ctx.layer.hdf5_data_param.batch_size
    read = _hdf5_datasets(ctx, list(ctx.tops))
    return [(batch, *read[top][1:]) for top in ctx.tops]


declare(
    "HDF5Data",
    bottoms=exactly(0),
    tops=at_least(1),
    shape=_hdf5_data_shape,
    params=("hdf5_data_param",),
    data=True,
)


def _no_tops(ctx: LayerContext) -> list[Shape]:
    """A sink: writes its two bottoms (data, label) to ``hdf5_output_param.file_name``."""
    return []


declare(
    "HDF5Output",
    bottoms=exactly(2),
    tops=exactly(0),
    shape=_no_tops,
    params=("hdf5_output_param",),
    no_gradient=frozenset({0, 1}),
)


def _python_shape(ctx: LayerContext) -> list[Shape]:
    """A Python layer sets its own tops in ``reshape``; nothing can be inferred statically."""
    raise ctx.fail("the shapes of a Python layer are only known by running its code")


declare(
    "Python",
    bottoms=at_least(0),
    tops=at_least(0),
    shape=_python_shape,
    params=("python_param",),
)
