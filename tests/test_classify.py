"""``netdef classify`` against a re-computation of classify.py's steps with OpenCV's Caffe importer
as the forward pass."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from netdef import load_net
from netdef.blobs import array_to_blobproto
from netdef.classify import classify, read_mean
from netdef.cli import main

from .parity import opencv_forward, write_random_caffemodel

DEPLOY = """
name: "tiny"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 3 dim: 3 dim: 40 dim: 40 } } }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
  convolution_param { num_output: 4 kernel_size: 5 stride: 2 } }
layer { name: "relu" type: "ReLU" bottom: "conv" top: "conv" }
layer { name: "pool" type: "Pooling" bottom: "conv" top: "pool" pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "fc" type: "InnerProduct" bottom: "pool" top: "fc" inner_product_param { num_output: 7 } }
layer { name: "prob" type: "Softmax" bottom: "fc" top: "prob" }
"""
SYNSETS = [
    "n01440764 tench, Tinca tinca",
    "n01443537 goldfish, Carassius auratus",
    "n01484850 great white shark, white shark, man-eater",
    "n01491361 tiger shark, Galeocerdo cuvieri",
    "n01494475 hammerhead, hammerhead shark",
    "n01496331 electric ray, crampfish, numbfish, torpedo",
    "n01498041 stingray",
]


@pytest.fixture
def deploy(tmp_path: Path) -> tuple[Path, Path]:
    prototxt = tmp_path / "deploy.prototxt"
    prototxt.write_text(DEPLOY)
    weights = write_random_caffemodel(load_net(prototxt), tmp_path / "tiny.caffemodel", seed=3)
    assert weights is not None
    return prototxt, weights


def reference(prototxt: Path, weights: Path, image_path: Path, mean: np.ndarray, center_only: bool) -> np.ndarray:
    """classify.py's steps written out: RGB in [0, 1], resize to 48×56, crops, BGR ×255 − mean, forward."""
    image = cv2.imread(str(image_path))[:, :, ::-1].astype(np.float32) / 255
    resized = cv2.resize(image, (56, 48), interpolation=cv2.INTER_LINEAR)
    top, left = 48 // 2 - 20, 56 // 2 - 20  # centre minus half the crop
    if center_only:
        crops = [resized[top : top + 40, left : left + 40]]
    else:
        corners = [resized[i : i + 40, j : j + 40] for i in (0, 8) for j in (0, 16)]
        five = [*corners, resized[top : top + 40, left : left + 40]]
        crops = five + [crop[:, ::-1] for crop in five]
    batch = np.stack([crop.transpose(2, 0, 1)[[2, 1, 0]] * 255 - mean.reshape(3, 1, 1) for crop in crops])
    probabilities = opencv_forward(prototxt, weights, {"data": batch.astype(np.float32)}, ["prob"])[0]
    return probabilities.reshape(len(crops), -1).mean(0)


@pytest.mark.parametrize("center_only", [True, False])
def test_classify_matches_the_recomputed_steps(caffe_zoo: Path, deploy, center_only: bool) -> None:
    prototxt, weights = deploy
    cat = caffe_zoo / "examples/images/cat.jpg"
    mean_file = caffe_zoo / "python/caffe/imagenet/ilsvrc_2012_mean.npy"
    mean = np.load(mean_file).mean(1).mean(1)
    probabilities = classify(
        prototxt, weights, [cat, cat], mean=mean_file, center_only=center_only, images_dim=(48, 56)
    )
    assert probabilities.shape == (2, 7) and probabilities.dtype == np.float32
    expected = reference(prototxt, weights, cat, mean, center_only)
    np.testing.assert_allclose(probabilities[0], expected, rtol=1e-4, atol=1e-6)
    np.testing.assert_array_equal(probabilities[0], probabilities[1])
    np.testing.assert_allclose(probabilities.sum(1), 1.0, rtol=1e-5)


def test_a_binaryproto_mean_gives_the_same_channel_means(caffe_zoo: Path, tmp_path: Path) -> None:
    mean = np.load(caffe_zoo / "python/caffe/imagenet/ilsvrc_2012_mean.npy")
    binary = tmp_path / "mean.binaryproto"
    binary.write_bytes(array_to_blobproto(mean[np.newaxis]).SerializeToString())
    np.testing.assert_allclose(read_mean(binary), mean.mean(1).mean(1), rtol=1e-6)
    np.testing.assert_allclose(read_mean(binary), [104.00699, 116.66877, 122.67892], rtol=1e-6)


def test_the_cli_prints_the_top_5_with_label_lines(caffe_zoo: Path, deploy, tmp_path: Path, capsys) -> None:
    prototxt, weights = deploy
    labels = tmp_path / "synset_words.txt"
    labels.write_text("\n".join(SYNSETS) + "\n")
    cat = caffe_zoo / "examples/images/cat.jpg"
    out = tmp_path / "probabilities.npy"
    mean = caffe_zoo / "python/caffe/imagenet/ilsvrc_2012_mean.npy"
    argv = ["classify", "--model", str(prototxt), "--weights", str(weights), "--labels", str(labels)]
    argv += ["--mean", str(mean), "--center-only", "--images-dim", "48,56", str(cat), "-o", str(out)]
    assert main(argv) == 0
    lines = capsys.readouterr().out.splitlines()
    saved = np.load(out)
    expected = classify(prototxt, weights, [cat], mean=mean, center_only=True, images_dim=(48, 56))
    np.testing.assert_array_equal(saved, expected)
    order = np.argsort(-saved[0])[:5]
    assert lines[0] == str(cat)
    assert lines[1:6] == [f"  {rank}. {saved[0][index]:.4f}  {SYNSETS[index]}" for rank, index in enumerate(order, 1)]
    assert lines[6] == f"wrote {out}: probabilities (1, 7)"


def test_the_cli_reports_too_few_labels_in_one_line(caffe_zoo: Path, deploy, tmp_path: Path, capsys) -> None:
    prototxt, weights = deploy
    labels = tmp_path / "labels.txt"
    labels.write_text("one\ntwo\n")
    cat = caffe_zoo / "examples/images/cat.jpg"
    argv = ["classify", "--model", str(prototxt), "--weights", str(weights), "--labels", str(labels), str(cat)]
    assert main([*argv, "--center-only"]) == 1
    error = capsys.readouterr().err.strip().splitlines()
    assert error[-1] == (
        "netdef: error: the labels file has fewer lines than the net has classes; expected 7 lines, received 2"
    )
