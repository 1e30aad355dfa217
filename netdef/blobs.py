"""BlobProto ⇄ numpy conversion, bit-exact, with Caffe's and pycaffe's shape rules.

Weights, mean files and pycaffe's ``caffe.io`` all store arrays as BlobProto. Two details
make a naive conversion wrong:

* Shape: a blob written by old Caffe carries the legacy ``num``/``channels``/``height``/
  ``width`` fields; if *any* of them is set the shape is those four (unset ones read as 0),
  else it is ``shape.dim``. A blob with neither is a scalar (Caffe's empty shape counts 1).
* Bits: protobuf's Python API hands out each float as a Python float (a C double), and the
  float→double→float trip turns a signalling NaN into a quiet one. Weights must survive a
  read/write unchanged, so values are moved between protobuf and numpy as packed bytes,
  which protobuf's C core copies verbatim. This is also far faster than element access.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import ArrayLike

from netdef.errors import WeightsError
from netdef.proto import netdef_pb2 as pb

#: Caffe's ``kMaxBlobAxes``.
MAX_BLOB_AXES = 32
LEGACY_FIELDS = ("num", "channels", "height", "width")
_WIRE_LENGTH_DELIMITED = 2


def has_legacy_shape(blob: pb.BlobProto) -> bool:
    """Whether the blob states its shape with the deprecated 4-D fields (Caffe's test)."""
    return any(blob.HasField(name) for name in LEGACY_FIELDS)


def blob_shape(blob: pb.BlobProto) -> tuple[int, ...]:
    """The shape Caffe's ``Blob::FromProto`` and pycaffe's ``blobproto_to_array`` give the blob."""
    if has_legacy_shape(blob):
        return tuple(getattr(blob, name) for name in LEGACY_FIELDS)
    return tuple(blob.shape.dim)


def blob_values(blob: pb.BlobProto, diff: bool = False) -> np.ndarray:
    """The flat float32 data (or diff), preferring ``double_data`` when present as Caffe does."""
    float_field, double_field = ("diff", "double_diff") if diff else ("data", "double_data")
    if len(getattr(blob, double_field)):
        with np.errstate(over="ignore"):  # beyond float32's range: ±inf, as Caffe's C++ cast gives
            return _packed_values(blob, double_field, np.dtype("<f8")).astype(np.float32)
    return _packed_values(blob, float_field, np.dtype("<f4"))


def _packed_values(blob: pb.BlobProto, field: str, dtype: np.dtype) -> np.ndarray:
    """One repeated field's values, copied bit for bit.

    The field alone, serialized, is one packed run (tag, length, payload), so its values are
    the last ``count × itemsize`` bytes; merging a repeated field copies it in protobuf's C
    core without a round trip through Python floats.
    """
    values = getattr(blob, field)
    if not len(values):
        return np.empty(0, dtype=dtype)
    alone = pb.BlobProto()
    getattr(alone, field).MergeFrom(values)
    serialized = alone.SerializeToString()
    payload = len(values) * dtype.itemsize
    return np.frombuffer(serialized, dtype=dtype, offset=len(serialized) - payload).copy()


def blobproto_to_array(blob: pb.BlobProto, return_diff: bool = False) -> np.ndarray:
    """pycaffe's ``caffe.io.blobproto_to_array``: the data (or diff) in the blob's shape.

    Two departures, both from C++ Caffe's ``FromProto``: the result is float32 (Caffe's
    blobs; pycaffe widens to float64), and ``double_data`` is used when present (pycaffe
    ignores it). A count that does not fit the shape raises :class:`WeightsError` where
    pycaffe raises numpy's ValueError.
    """
    shape = blob_shape(blob)
    _check_shape(shape)
    values = blob_values(blob, diff=return_diff)
    count = math.prod(shape)
    if values.size != count:
        raise WeightsError(
            f"the blob's {'diff' if return_diff else 'data'} does not fill its shape {tuple(shape)}",
            expected=f"{count} value{'s' if count != 1 else ''}",
            received=str(values.size),
            hint=None if shape or has_legacy_shape(blob) else "the blob states no shape, so Caffe reads it as a scalar",
        )
    return values.reshape(shape)


def _check_shape(shape: tuple[int, ...]) -> None:
    """Caffe's ``Blob::Reshape`` limits: at most 32 axes, none negative."""
    if len(shape) > MAX_BLOB_AXES:
        raise WeightsError(f"the blob has {len(shape)} axes", expected=f"at most {MAX_BLOB_AXES}")
    if any(dim < 0 for dim in shape):
        raise WeightsError(f"the blob's shape {shape} has a negative dimension")


def array_to_blobproto(arr: ArrayLike, diff: ArrayLike | None = None) -> pb.BlobProto:
    """pycaffe's ``caffe.io.array_to_blobproto``: ``shape`` + float ``data`` (+ ``diff``).

    What Caffe's ``Blob<float>::ToProto`` writes, too: no ``shape`` for a scalar (an empty
    shape is not written), empty repeated fields left out. Float32 input is stored bit for
    bit; other dtypes are rounded to float32 as protobuf would. Unlike pycaffe, a diff whose
    size differs from the data's is refused, since Caffe could not read the blob back.
    """
    data = as_float32(arr)
    blob = pb.BlobProto()
    if data.ndim:
        blob.shape.dim.extend(data.shape)
    serialized = blob.SerializeToString() + _packed_field(pb.BlobProto.DATA_FIELD_NUMBER, data)
    if diff is not None:
        gradient = as_float32(diff)
        if gradient.size != data.size:
            raise WeightsError(
                "the diff does not match the data", expected=f"{data.size} values", received=str(gradient.size)
            )
        serialized += _packed_field(pb.BlobProto.DIFF_FIELD_NUMBER, gradient)
    return pb.BlobProto.FromString(serialized)


def as_float32(arr: ArrayLike) -> np.ndarray:
    """Little-endian float32 in C order, Caffe's storage; no copy (bits kept) for such input."""
    return np.asarray(arr, dtype="<f4", order="C")  # not ascontiguousarray: it makes 0-d arrays 1-d


def _packed_field(number: int, values: np.ndarray) -> bytes:
    """A packed repeated float field on the wire: tag, byte length, little-endian values."""
    if not values.size:
        return b""
    payload = values.tobytes()
    return _varint(number << 3 | _WIRE_LENGTH_DELIMITED) + _varint(len(payload)) + payload


def _varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)
