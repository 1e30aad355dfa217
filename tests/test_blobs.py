"""BlobProto ⇄ numpy: pycaffe's shape rules, Caffe's double_data preference, exact bits."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from netdef.blobs import array_to_blobproto, blob_shape, blob_values, blobproto_to_array, has_legacy_shape
from netdef.errors import WeightsError
from netdef.proto import netdef_pb2 as pb

#: float32 bit patterns that a trip through Python floats would change or that are easy to
#: lose: a signalling NaN (quietened by float→double), NaNs with payloads and sign, ±inf,
#: -0.0 and a subnormal.
AWKWARD_BITS = np.array(
    [0x7F800001, 0xFFA00001, 0x7FC12345, 0xFFC00000, 0x7F800000, 0xFF800000, 0x80000000, 0x00000001],
    dtype="<u4",
)


def test_legacy_fields_give_a_4d_shape() -> None:
    # pycaffe's test_old_format
    blob = pb.BlobProto(num=1, channels=1, height=10, width=10)
    blob.data.extend(np.zeros(100).tolist())
    assert has_legacy_shape(blob)
    assert blobproto_to_array(blob).shape == (1, 1, 10, 10)


def test_one_legacy_field_makes_the_others_zero() -> None:
    blob = pb.BlobProto(num=2)
    blob.shape.dim.extend([5])  # ignored: legacy fields win
    assert blob_shape(blob) == (2, 0, 0, 0)
    assert blobproto_to_array(blob).shape == (2, 0, 0, 0)


def test_shape_field() -> None:
    # pycaffe's test_new_format
    blob = pb.BlobProto()
    blob.shape.dim.extend([10, 10])
    blob.data.extend(np.arange(100).tolist())
    array = blobproto_to_array(blob)
    assert array.shape == (10, 10)
    assert array.dtype == np.float32
    assert array[3, 4] == 34


def test_data_without_a_shape_is_refused() -> None:
    # pycaffe's test_no_shape raises ValueError; netdef its own error, with the reason
    blob = pb.BlobProto()
    blob.data.extend(np.zeros(100).tolist())
    with pytest.raises(WeightsError, match=r"does not fill its shape \(\).*expected 1 value, received 100.*scalar"):
        blobproto_to_array(blob)


def test_a_single_value_without_a_shape_is_a_scalar() -> None:
    # pycaffe's test_scalar; Caffe's empty shape counts one element, too
    blob = pb.BlobProto()
    blob.data.append(123)
    array = blobproto_to_array(blob)
    assert array.shape == ()
    assert array == 123


def test_double_data_is_preferred_as_in_caffe() -> None:
    blob = pb.BlobProto(shape=pb.BlobShape(dim=[2]))
    blob.data.extend([9.0, 9.0])
    blob.double_data.extend([0.1, 2.5])
    np.testing.assert_array_equal(blobproto_to_array(blob), np.array([0.1, 2.5], dtype=np.float32))


def test_diff() -> None:
    blob = pb.BlobProto(shape=pb.BlobShape(dim=[2]))
    blob.data.extend([1.0, 2.0])
    blob.diff.extend([3.0, 4.0])
    np.testing.assert_array_equal(blobproto_to_array(blob, return_diff=True), [3.0, 4.0])
    blob.ClearField("diff")
    blob.double_diff.extend([5.0, 6.0])
    np.testing.assert_array_equal(blobproto_to_array(blob, return_diff=True), [5.0, 6.0])
    blob.ClearField("double_diff")
    with pytest.raises(WeightsError, match="blob's diff does not fill"):
        blobproto_to_array(blob, return_diff=True)


@pytest.mark.parametrize(
    ("shape", "message"), [([2, -1], "negative dimension"), ([1] * 33, "33 axes; expected at most 32")]
)
def test_caffe_blob_limits(shape: list[int], message: str) -> None:
    blob = pb.BlobProto(shape=pb.BlobShape(dim=shape))
    with pytest.raises(WeightsError, match=message):
        blobproto_to_array(blob)


def test_unpacked_data_on_the_wire_is_read() -> None:
    # proto2 parsers must accept a packed field written element by element (tag 0x2d each)
    values = np.array([1.5, -2.0, 3.25], dtype="<f4")
    wire = b"\x3a\x02\x08\x03" + b"".join(b"\x2d" + value.tobytes() for value in values)
    np.testing.assert_array_equal(blobproto_to_array(pb.BlobProto.FromString(wire)), values)


def test_array_to_blobproto_writes_shape_and_data() -> None:
    array = np.arange(6, dtype=np.float32).reshape(2, 3)
    blob = array_to_blobproto(array, diff=-array)
    assert list(blob.shape.dim) == [2, 3]
    assert list(blob.data) == [0, 1, 2, 3, 4, 5]
    assert list(blob.diff) == [0, -1, -2, -3, -4, -5]
    assert not has_legacy_shape(blob)
    assert not len(blob.double_data)


def test_array_to_blobproto_of_a_scalar_writes_no_shape() -> None:
    # Caffe's ToProto never touches `shape` for a 0-axis blob, and reading gives it back
    blob = array_to_blobproto(np.float32(7))
    assert not blob.HasField("shape")
    assert blobproto_to_array(blob).shape == ()


def test_array_to_blobproto_rounds_other_dtypes_to_float32() -> None:
    blob = array_to_blobproto(np.array([0.1, 1 / 3], dtype=np.float64))
    np.testing.assert_array_equal(blob_values(blob), np.array([0.1, 1 / 3], dtype=np.float32))


def test_array_to_blobproto_refuses_a_diff_of_another_size() -> None:
    with pytest.raises(WeightsError, match="diff does not match the data; expected 3 values, received 2"):
        array_to_blobproto(np.zeros(3), diff=np.zeros(2))


def test_empty_array_writes_no_data_field() -> None:
    blob = array_to_blobproto(np.zeros((0, 4), dtype=np.float32))
    assert blob.SerializeToString() == pb.BlobProto(shape=pb.BlobShape(dim=[0, 4])).SerializeToString()
    assert blobproto_to_array(blob).shape == (0, 4)


def test_bits_survive_a_round_trip() -> None:
    values = AWKWARD_BITS.view("<f4")
    blob = pb.BlobProto.FromString(array_to_blobproto(values, diff=values[::-1]).SerializeToString())
    assert blobproto_to_array(blob).view("<u4").tolist() == AWKWARD_BITS.tolist()
    assert blobproto_to_array(blob, return_diff=True).view("<u4").tolist() == AWKWARD_BITS[::-1].tolist()


def test_big_endian_input_is_stored_little_endian() -> None:
    values = np.array([1.0, -2.5], dtype=">f4")
    assert b"\x2a\x08" + values.astype("<f4").tobytes() in array_to_blobproto(values).SerializeToString()


@given(
    hnp.arrays(
        dtype=np.dtype("<u4"),
        shape=hnp.array_shapes(min_dims=1, max_dims=5, min_side=0, max_side=4),
        elements=st.integers(0, 2**32 - 1),
    )
)
def test_any_float32_array_round_trips_bit_for_bit(bits: np.ndarray) -> None:
    back = blobproto_to_array(pb.BlobProto.FromString(array_to_blobproto(bits.view("<f4")).SerializeToString()))
    assert back.shape == bits.shape
    np.testing.assert_array_equal(back.view("<u4"), bits)
