"""The README's main job, end to end: tools/train_digits.sh on scikit-learn's digits.

Run in a copy of the pieces it needs (the script, the digits exporter, zoo/digits), so the
test never touches a user's own runs/ folder. The accuracy the script prints is the
acceptance bar (≥ 97%); the artifacts it says it wrote must exist and be what they claim,
and the trained weights must give OpenCV's Caffe importer the same answers as netdef.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from netdef import load_solver, to_keras
from netdef.proto import netdef_pb2 as pb

from .conftest import REPO


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    root = tmp_path_factory.mktemp("main_job")
    (root / "tools").mkdir()
    for script in ("train_digits.sh", "export_digits.py"):
        shutil.copy2(REPO / "tools" / script, root / "tools" / script)
    shutil.copytree(REPO / "zoo" / "digits", root / "zoo" / "digits")
    bin_dir = Path(sys.executable).parent
    env = {**os.environ, "NETDEF": str(bin_dir / "netdef"), "PYTHON": sys.executable}
    result = subprocess.run(
        ["bash", str(root / "tools" / "train_digits.sh")], env=env, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return root, result.stdout


def test_test_accuracy_is_at_least_97_percent(digits_run: tuple[Path, str]) -> None:
    _, output = digits_run
    scored = output[output.index("== Scoring the held-out digits") :]
    accuracy = float(re.search(r"^accuracy = ([0-9.]+)$", scored, re.MULTILINE).group(1))
    assert accuracy >= 0.97, output[-2000:]
    trained = re.findall(r"Test net output #0: accuracy = ([0-9.]+)", output)
    assert float(trained[-1]) == pytest.approx(accuracy, abs=1e-6)  # the last test pass saw the same weights


def test_every_artifact_it_names_exists(digits_run: tuple[Path, str]) -> None:
    root, output = digits_run
    run = root / "runs" / "digits"
    listed = output[output.index("== Artifacts") :]
    for path in re.findall(r"(runs/digits/\S+?)[,\s]", listed + "\n"):
        assert (root / path).exists(), path
    assert (run / "digits_lenet_plot.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    state = pb.SolverState.FromString((run / "digits_lenet_iter_1000.solverstate").read_bytes())
    assert state.iter == 1000 and len(state.history) == 8  # SGD: one momentum blob per learnable blob
    assert load_solver(root / "zoo" / "digits" / "solver.prototxt").max_iter == 1000
    assert len(re.findall(r"^  1\. ", output, re.MULTILINE)) == 5  # five images classified


def test_trained_weights_give_opencv_the_same_answers(digits_run: tuple[Path, str]) -> None:
    root, _ = digits_run
    deploy = root / "zoo" / "digits" / "deploy.prototxt"
    weights = root / "runs" / "digits" / "digits_lenet_iter_1000.caffemodel"
    rng = np.random.default_rng(0)
    batch = rng.standard_normal((1, 1, 28, 28)).astype(np.float32)
    reference = cv2.dnn.readNetFromCaffe(str(deploy), str(weights))
    reference.setInput(batch)
    expected = reference.forward()
    actual = np.asarray(to_keras(deploy, weights)([batch]))
    np.testing.assert_allclose(actual, expected.reshape(actual.shape), rtol=1e-4, atol=1e-5)
