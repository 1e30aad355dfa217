"""netdef.io against pycaffe's caffe.io: the classification Transformer, image loading, resizing, oversampling."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

import netdef.blobs
import netdef.data.datum
from netdef import io
from netdef.errors import NetdefError

MEAN_BGR = (104.0069879317889, 116.66876761696767, 122.6789143406786)


@pytest.fixture
def caffenet(caffe_zoo: Path) -> tuple[io.Transformer, np.ndarray]:
    """The Transformer of Caffe's classification example (00-classification.ipynb, classify.py)."""
    mean = np.load(caffe_zoo / "python/caffe/imagenet/ilsvrc_2012_mean.npy").mean(1).mean(1)
    transformer = io.Transformer({"data": (50, 3, 227, 227)})
    transformer.set_transpose("data", (2, 0, 1))
    transformer.set_channel_swap("data", (2, 1, 0))
    transformer.set_raw_scale("data", 255)
    transformer.set_mean("data", mean)
    return transformer, mean


def test_classification_example_preprocessing(caffe_zoo: Path, caffenet: tuple[io.Transformer, np.ndarray]) -> None:
    transformer, mean = caffenet
    np.testing.assert_allclose(mean, MEAN_BGR, rtol=0, atol=1e-12)
    cat = caffe_zoo / "examples/images/cat.jpg"
    image = io.load_image(cat)
    assert image.shape == (360, 480, 3) and image.dtype == np.float32 and image.min() >= 0 and image.max() <= 1

    out = transformer.preprocess("data", image)
    # the same steps, written out: RGB in [0, 1], bilinear resize, H x W x C → C x H x W, RGB → BGR, x 255, - mean
    rgb = cv2.imread(str(cat), cv2.IMREAD_COLOR)[:, :, ::-1].astype(np.float64) / 255.0
    resized = cv2.resize(rgb.astype(np.float32), (227, 227), interpolation=cv2.INTER_LINEAR)
    expected = np.moveaxis(resized, -1, 0)[::-1] * 255.0 - np.asarray(MEAN_BGR)[:, None, None]
    assert out.shape == (3, 227, 227) and out.dtype == np.float32
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-3)

    back = transformer.deprocess("data", out)
    assert back.shape == (227, 227, 3)
    np.testing.assert_allclose(back, resized, atol=1e-5)
    np.testing.assert_allclose(transformer.deprocess("data", out[np.newaxis]), back)  # a batch of one squeezes


def test_input_scale_acts_after_the_mean_and_inputs_are_not_modified() -> None:
    transformer = io.Transformer({"data": (1, 2, 3, 4)})
    transformer.set_transpose("data", (2, 0, 1))
    transformer.set_raw_scale("data", 10.0)
    transformer.set_mean("data", np.array([1.0, 2.0]))
    transformer.set_input_scale("data", 0.5)
    image = np.arange(24, dtype=np.float32).reshape(3, 4, 2) / 24
    kept = image.copy()
    out = transformer.preprocess("data", image)
    np.testing.assert_allclose(out, (image.transpose(2, 0, 1) * 10.0 - np.array([1.0, 2.0])[:, None, None]) * 0.5)
    np.testing.assert_array_equal(image, kept)
    np.testing.assert_allclose(transformer.deprocess("data", out), image, atol=1e-6)


def test_full_mean_image_is_resized_to_the_input(caffe_zoo: Path) -> None:
    mean = np.load(caffe_zoo / "python/caffe/imagenet/ilsvrc_2012_mean.npy")
    transformer = io.Transformer({"data": (1, 3, 227, 227)})
    transformer.set_mean("data", mean)
    stored = transformer.mean["data"]
    assert stored.shape == (3, 227, 227)
    expected = cv2.resize(mean.transpose(1, 2, 0).astype(np.float32), (227, 227), interpolation=cv2.INTER_LINEAR)
    np.testing.assert_allclose(stored, expected.transpose(2, 0, 1), rtol=1e-6)
    same = io.Transformer({"data": (1, 3, 256, 256)})
    same.set_mean("data", mean)
    assert same.mean["data"] is not None and np.array_equal(same.mean["data"], mean)
    grey = io.Transformer({"data": (1, 1, 4, 4)})
    grey.set_mean("data", np.full((8, 8), 3.0))  # an H x W mean, and a constant one, stays constant
    np.testing.assert_array_equal(grey.mean["data"], np.full((1, 4, 4), 3.0))


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda t: t.preprocess("label", np.zeros((2, 2, 3))), r"label is not one of the net inputs"),
        (lambda t: t.set_transpose("data", (1, 0)), "Transpose order needs to have the same number of dimensions"),
        (lambda t: t.set_channel_swap("data", (1, 0)), "Channel swap needs to have the same number of dimensions"),
        (lambda t: t.set_mean("data", np.zeros(4)), "Mean channels incompatible with input"),
        (lambda t: t.set_mean("data", np.zeros((1, 2, 3, 4))), "Mean shape invalid"),
        (lambda t: t.set_mean("data", np.zeros((2, 5, 5))), "Mean shape invalid"),
        (lambda t: t.set_raw_scale("image", 1.0), "image is not one of the net inputs"),
    ],
)
def test_mistakes_raise_value_errors_with_pycaffe_messages(call, message: str) -> None:
    transformer = io.Transformer({"data": (1, 3, 8, 8)})
    with pytest.raises(ValueError, match=message) as caught:
        call(transformer)
    assert isinstance(caught.value, NetdefError)


def test_load_image_colour_grey_alpha_and_16_bit(tmp_path: Path, caffe_zoo: Path) -> None:
    rng = np.random.default_rng(0)
    bgra = rng.integers(0, 256, (5, 6, 4), dtype=np.uint8)
    cv2.imwrite(str(tmp_path / "alpha.png"), bgra)
    np.testing.assert_allclose(io.load_image(tmp_path / "alpha.png"), bgra[:, :, 2::-1] / 255.0, rtol=1e-6)

    grey = io.load_image(caffe_zoo / "examples/images/cat_gray.jpg", color=False)
    oracle = cv2.imread(str(caffe_zoo / "examples/images/cat_gray.jpg"), cv2.IMREAD_GRAYSCALE)
    assert grey.shape == (*oracle.shape, 1)
    np.testing.assert_allclose(grey[:, :, 0], oracle / 255.0, rtol=1e-6)
    tiled = io.load_image(caffe_zoo / "examples/images/cat_gray.jpg")
    assert tiled.shape == (*oracle.shape, 3)
    np.testing.assert_array_equal(tiled, np.repeat(grey, 3, axis=2))

    deep = rng.integers(0, 65536, (3, 4), dtype=np.uint16)
    cv2.imwrite(str(tmp_path / "deep.png"), deep)
    np.testing.assert_allclose(io.load_image(tmp_path / "deep.png", color=False)[:, :, 0], deep / 65535.0, rtol=1e-6)

    colour = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)
    cv2.imwrite(str(tmp_path / "c.png"), colour)
    expected = cv2.cvtColor(colour, cv2.COLOR_BGR2GRAY) / 255.0
    np.testing.assert_allclose(io.load_image(tmp_path / "c.png", color=False)[:, :, 0], expected, rtol=1e-6)

    (tmp_path / "bad.jpg").write_bytes(b"nothing")
    with pytest.raises(NetdefError, match="not an image OpenCV can decode"):
        io.load_image(tmp_path / "bad.jpg")
    with pytest.raises(FileNotFoundError):
        io.load_image(tmp_path / "missing.jpg")


def test_resize_image_any_channel_count_and_orders() -> None:
    rng = np.random.default_rng(1)
    for channels in (1, 3, 4, 600):
        image = rng.random((9, 7, channels)).astype(np.float32)
        resized = io.resize_image(image, (5, 11))
        assert resized.shape == (5, 11, channels) and resized.dtype == np.float32
        for c in (0, channels - 1):
            expected = cv2.resize(image[:, :, c], (11, 5), interpolation=cv2.INTER_LINEAR)
            np.testing.assert_allclose(resized[:, :, c], expected, rtol=1e-6)
    image = rng.random((4, 4, 3)).astype(np.float32) * 1000 - 500  # any range: no [0, 1] normalisation needed
    np.testing.assert_array_equal(io.resize_image(image, (8, 8), interp_order=0), image.repeat(2, 0).repeat(2, 1))
    np.testing.assert_array_equal(io.resize_image(np.full((3, 3, 3), 7.0), (5, 2)), np.full((5, 2, 3), 7.0))
    with pytest.raises(ValueError, match="interpolation order"):
        io.resize_image(image, (2, 2), interp_order=7)


def test_oversample_ten_crops_in_pycaffe_order() -> None:
    image = np.arange(7 * 9 * 2, dtype=np.float32).reshape(7, 9, 2)
    other = image + 1000
    crops = io.oversample([image, other], (4, 5))
    assert crops.shape == (20, 4, 5, 2) and crops.dtype == np.float32
    # TL, TR, BL, BR, then the centre: pycaffe truncates 3.5 - 2 = 1.5 → 1 and 4.5 - 2.5 = 2 → 2
    windows = [(0, 0), (0, 4), (3, 0), (3, 4), (1, 2)]
    for n, source in enumerate((image, other)):
        for k, (top, left) in enumerate(windows):
            expected = source[top : top + 4, left : left + 5]
            np.testing.assert_array_equal(crops[10 * n + k], expected)
            np.testing.assert_array_equal(crops[10 * n + 5 + k], expected[:, ::-1])
    with pytest.raises(ValueError, match="crop does not fit"):
        io.oversample([image], (8, 5))
    with pytest.raises(ValueError, match="of one shape"):
        io.oversample([image, image[:6]], (4, 5))


def test_pycaffe_helpers_are_exported() -> None:
    assert io.blobproto_to_array is netdef.blobs.blobproto_to_array
    assert io.array_to_blobproto is netdef.blobs.array_to_blobproto
    assert io.datum_to_array is netdef.data.datum.datum_to_array
    assert io.array_to_datum is netdef.data.datum.array_to_datum
    arrays = [np.arange(6, dtype=np.float32).reshape(2, 3), np.ones((1, 2, 2, 2), np.float32)]
    back = io.blobprotovector_str_to_arraylist(io.arraylist_to_blobprotovector_str(arrays))
    assert len(back) == 2 and all(np.array_equal(a, b) for a, b in zip(arrays, back, strict=True))
