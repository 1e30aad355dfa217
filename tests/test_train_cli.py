"""``netdef train``, ``netdef test`` and ``netdef time``: Caffe's flags and Caffe's output."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from netdef.cli import main
from netdef.weights import read_weights

from .test_trainer import batches, numbers, numpy_forward, tiny_data, tiny_solver


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A temporary working directory: Caffe resolves a solver's paths from there."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_train_then_test_and_time_print_what_caffe_prints(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    solver = tiny_solver(workdir, max_iter=4, snapshot=2, test_interval=4)
    assert main(["train", "--solver", str(solver), "--gpu", "none"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("Use CPU.\n")
    assert "Starting Optimization\nSolving tiny\nLearning Rate Policy: step\n" in out
    assert "Snapshotting to binary proto file snap/tiny_iter_4.caffemodel\n" in out
    assert out.rstrip().endswith("Optimization Done.")
    finished = {record.name: record.blobs for record in read_weights("snap/tiny_iter_4.caffemodel")}
    assert main(["train", "--solver", str(solver), "--snapshot", "snap/tiny_iter_2.solverstate"]) == 0
    out = capsys.readouterr().out
    assert "Resuming from snap/tiny_iter_2.solverstate\n" in out and "restored iteration 2" in out
    for record in read_weights("snap/tiny_iter_4.caffemodel"):
        for resumed, uninterrupted in zip(record.blobs, finished[record.name], strict=True):
            np.testing.assert_allclose(resumed, uninterrupted, rtol=0, atol=1e-6)

    # test: every batch's outputs, then Caffe's "Loss:" and the means with loss weights.
    assert (
        main(["test", "--model", "net.prototxt", "--weights", "snap/tiny_iter_4.caffemodel", "--iterations", "3"]) == 0
    )
    out = capsys.readouterr().out
    weights = {record.name: record.blobs for record in read_weights("snap/tiny_iter_4.caffemodel")}
    expected = [numpy_forward(weights, x, y) for x, y in batches(*tiny_data(workdir)["test"], 3)]
    lines = [line for line in out.splitlines() if line.startswith("Batch")]
    assert [re.sub(r" = .*", "", line) for line in lines] == [
        f"Batch {k}, {name}" for k in range(3) for name in ("accuracy", "loss")
    ]
    np.testing.assert_allclose(numbers(r"Batch \d+, accuracy = (\S+)", out), [e[1] for e in expected], rtol=1e-5)
    np.testing.assert_allclose(numbers(r"Batch \d+, loss = (\S+)", out), [e[0] for e in expected], rtol=1e-5)
    mean_loss, mean_accuracy = np.mean([e[0] for e in expected]), np.mean([e[1] for e in expected])
    assert numbers(r"Loss: (\S+)", out) == pytest.approx([mean_loss], rel=1e-5)
    assert numbers(r"\naccuracy = (\S+)", out) == pytest.approx([mean_accuracy], rel=1e-5)
    match = re.search(r"\nloss = (\S+) \(\* 1 = (\S+) loss\)\n", out)
    assert match and float(match.group(1)) == pytest.approx(mean_loss, rel=1e-5)

    # time: Caffe's averages and one forward line per layer (data layers included).
    assert main(["time", "--model", "net.prototxt", "--iterations", "3"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"Initial loss: \S+\n", out)
    assert len(re.findall(r"Iteration: \d forward-backward time: \S+ ms\.", out)) == 3
    layers = re.findall(r"^ *(\S+)\tforward: ([\d.e+-]+) ms\.$", out, re.MULTILINE)
    assert [name for name, _ in layers] == ["data", "ip1", "relu1", "ip2", "loss"]
    for line in ("Average Forward pass", "Average Backward pass", "Average Forward-Backward"):
        assert re.search(rf"{line}: [\d.e+-]+ ms\.", out), line
    assert out.rstrip().endswith("*** Benchmark ends ***")


def test_solver_mistakes_are_one_line_errors(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    solver = tiny_solver(workdir, test_net=["nets/test.prototxt"], net=None, train_net="net.prototxt")
    assert main(["train", "--solver", str(solver)]) == 1
    error = capsys.readouterr().err.strip()
    assert "\n" not in error and "Traceback" not in error
    assert re.fullmatch(
        r"netdef: error: \S*solver.prototxt:\d+:1: test_net: the net file nets/test.prototxt does not exist; "
        r"Caffe opens the paths of a solver from the working directory \(.*\)",
        error,
    )
    solver = tiny_solver(workdir)
    assert main(["train", "--solver", str(solver), "--snapshot", "s.solverstate", "--weights", "w.caffemodel"]) == 1
    assert "give a snapshot to resume training or weights to fine-tune, but not both" in capsys.readouterr().err
    assert main(["train", "--solver", str(solver), "--gpu", "0"]) == 1
    assert "GPU 0 is not visible to the Keras backend" in capsys.readouterr().err
    assert main(["train", "--solver", "nowhere.prototxt"]) == 1
    assert "nowhere.prototxt: the file does not exist" in capsys.readouterr().err
