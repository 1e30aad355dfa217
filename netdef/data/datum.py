"""Datum ⇄ numpy, in Caffe's layout: the records of Caffe's image databases.

A Datum holds one image as uint8 ``data`` in C, H, W order with OpenCV's BGR channels
(Caffe's ``CVMatToDatum``), or as ``float_data`` (features, pycaffe's ``array_to_datum`` of
a non-uint8 array), or as a compressed image file with ``encoded`` set, which carries only
``data`` and ``label`` (channels/height/width are left unset by ``convert_imageset``).

Encoded images are decoded with OpenCV as Caffe does (``src/caffe/util/io.cpp``):
``is_color=None`` is Caffe's ``DecodeDatumToCVMatNative`` (``cv::imdecode`` with flag −1,
so a grey PNG stays one channel and a PNG with alpha keeps four), ``True``/``False`` are
``DecodeDatumToCVMat`` with ``IMREAD_COLOR``/``IMREAD_GRAYSCALE`` (the data layer's
``force_color``/``force_gray``). Like ``CVMatToDatum``, only 8-bit images are accepted.
"""

from __future__ import annotations

import cv2
import numpy as np

from netdef.errors import DataSourceError
from netdef.proto import netdef_pb2 as pb


def datum_to_array(datum: pb.Datum) -> np.ndarray:
    """pycaffe's ``caffe.io.datum_to_array``: (C, H, W), uint8 for ``data``, float32 for ``float_data``.

    An encoded datum is decoded natively (see the module docstring). Unlike pycaffe, whose
    numpy ``reshape`` fails with a bare ValueError, a size that does not fit
    channels × height × width raises :class:`DataSourceError` saying which sizes disagree.
    """
    if datum.encoded:
        return image_to_chw(decode_image(datum.data, None))
    shape = (datum.channels, datum.height, datum.width)
    count = datum.channels * datum.height * datum.width
    if datum.data:
        if len(datum.data) != count:
            raise DataSourceError(
                f"the datum's data does not fill its shape {shape}",
                expected=f"{count} bytes",
                received=f"{len(datum.data)} bytes",
            )
        return np.frombuffer(datum.data, dtype=np.uint8).reshape(shape).copy()  # writable, as pycaffe's
    if len(datum.float_data) != count:
        raise DataSourceError(
            f"the datum's float_data does not fill its shape {shape}",
            expected=f"{count} values",
            received=f"{len(datum.float_data)} values",
        )
    return np.fromiter(datum.float_data, dtype=np.float32, count=count).reshape(shape)


def array_to_datum(arr: np.ndarray, label: int | None = None) -> pb.Datum:
    """pycaffe's ``caffe.io.array_to_datum``: a (C, H, W) array; uint8 → ``data`` bytes, else ``float_data``.

    The label is set only when given, so an unlabelled datum serializes without it, as in
    pycaffe (its test_io checks the smaller size).
    """
    array = np.asarray(arr)
    if array.ndim != 3:
        raise DataSourceError(
            "Incorrect array shape: a datum holds one (C, H, W) image",
            expected="3 axes",
            received=f"shape {array.shape}",
        )
    datum = pb.Datum(channels=array.shape[0], height=array.shape[1], width=array.shape[2])
    if array.dtype == np.uint8:
        datum.data = np.ascontiguousarray(array).tobytes()
    else:
        datum.float_data.extend(array.astype(np.float32).ravel())
    if label is not None:
        datum.label = label
    return datum


def decode_datum(datum: pb.Datum, is_color: bool | None = None) -> pb.Datum:
    """Caffe's ``DecodeDatum`` (``is_color`` given) or ``DecodeDatumNative`` (``None``) as a new Datum.

    A datum that is not encoded is returned as is, as Caffe leaves it untouched.
    """
    if not datum.encoded:
        return datum
    return cv_mat_to_datum(decode_image(datum.data, is_color), datum.label)


def decode_image(data: bytes, is_color: bool | None = None) -> np.ndarray:
    """An encoded image's bytes → H × W (grey) or H × W × C uint8 in OpenCV's channel order."""
    flag = {None: cv2.IMREAD_UNCHANGED, True: cv2.IMREAD_COLOR, False: cv2.IMREAD_GRAYSCALE}[is_color]
    image = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), flag) if data else None
    if image is None:
        raise DataSourceError(f"Could not decode datum: {len(data)} bytes are not an image OpenCV can read")
    return check_8bit(image)


def check_8bit(image: np.ndarray) -> np.ndarray:
    """Caffe's ``CVMatToDatum`` check: a Datum stores unsigned bytes only (a 16-bit PNG is refused)."""
    if image.dtype != np.uint8:
        raise DataSourceError("Image data type must be unsigned byte", expected="uint8", received=str(image.dtype))
    return image


def image_to_chw(image: np.ndarray) -> np.ndarray:
    """OpenCV's H × W [× C] image → Caffe's C × H × W (the index order of ``CVMatToDatum``)."""
    if image.ndim == 2:
        return image[np.newaxis]
    return np.ascontiguousarray(image.transpose(2, 0, 1))


def cv_mat_to_datum(image: np.ndarray, label: int | None = None) -> pb.Datum:
    """Caffe's ``CVMatToDatum``: an 8-bit OpenCV image (BGR or grey) → raw C × H × W ``data``."""
    return array_to_datum(image_to_chw(check_8bit(image)), label)


def encode_image(image: np.ndarray, encode_type: str) -> bytes:
    """``cv::imencode("." + encode_type, image)``: the bytes Caffe stores in an encoded datum."""
    try:
        ok, buffer = cv2.imencode(f".{encode_type}", image)
    except cv2.error as error:  # an extension OpenCV has no writer for
        raise DataSourceError(f"OpenCV cannot encode images as {encode_type!r}: {error.err}") from None
    if not ok:
        raise DataSourceError(f"OpenCV could not encode the image as {encode_type!r}")
    return buffer.tobytes()


def encoded_datum(data: bytes, label: int) -> pb.Datum:
    """What Caffe's ``ReadFileToDatum`` and the re-encode path write: ``data``, ``label``, ``encoded`` only."""
    return pb.Datum(data=data, label=label, encoded=True)
