"""Snapshots and resume: Caffe's file layouts, history in Caffe's blob shapes, and a run
interrupted and resumed reaching the uninterrupted run's weights."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from netdef.errors import SolverError
from netdef.load import load_solver
from netdef.proto import netdef_pb2 as pb
from netdef.solver.snapshot import HDF5, SolverState, read_solver_state, write_snapshot
from netdef.solver.trainer import Solver
from netdef.weights import LayerBlobs, read_weights

from .test_trainer import _subprocess_env, quiet_solver, tiny_solver

#: Convolution (kernel transposed in Keras), ReLU, Dropout (random), InnerProduct reading an
#: image (rows permuted in Keras), on DummyData refilled every pass.
DROPOUT_NET = """name: "dropnet"
layer { name: "data" type: "DummyData" top: "data" top: "label"
  dummy_data_param { shape { dim: 4 dim: 2 dim: 5 dim: 5 } shape { dim: 4 }
    data_filler { type: "gaussian" std: 1 } data_filler { type: "uniform" min: 0 max: 2.99 } } }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
  convolution_param { num_output: 3 kernel_size: 3
    weight_filler { type: "xavier" } bias_filler { type: "constant" value: 0.1 } } }
layer { name: "relu" type: "ReLU" bottom: "conv" top: "conv" }
layer { name: "drop" type: "Dropout" bottom: "conv" top: "conv" dropout_param { dropout_ratio: 0.5 } }
layer { name: "ip" type: "InnerProduct" bottom: "conv" top: "ip"
  inner_product_param { num_output: 3 weight_filler { type: "gaussian" std: 0.1 } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss" }
"""


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A temporary working directory: Caffe resolves a solver's paths from there."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def dropout_solver(directory: Path, solver_type: str, snapshot_format: int, iter_size: int) -> pb.SolverParameter:
    (directory / "net.prototxt").write_text(DROPOUT_NET)
    for folder in ("a", "b"):
        (directory / folder).mkdir(exist_ok=True)
    return pb.SolverParameter(
        net="net.prototxt",
        type=solver_type,
        base_lr=0.05 if solver_type == "SGD" else 0.01,
        momentum=0.9,
        weight_decay=0.01,
        lr_policy="multistep",
        gamma=0.5,
        stepvalue=[2, 4],
        display=0,
        max_iter=6,
        snapshot=3,
        snapshot_prefix="a/run",
        snapshot_format=snapshot_format,
        random_seed=11,
        iter_size=iter_size,
    )


def weights_of(path: Path | str) -> dict[str, list[np.ndarray]]:
    return {record.name: record.blobs for record in read_weights(path)}


def assert_same_weights(first: Path | str, second: Path | str, tolerance: float = 1e-6) -> None:
    theirs = weights_of(second)
    ours = weights_of(first)
    assert ours.keys() == theirs.keys()
    for name, blobs in ours.items():
        for a, b in zip(blobs, theirs[name], strict=True):
            np.testing.assert_allclose(a, b, rtol=tolerance, atol=tolerance, err_msg=name)


@pytest.mark.parametrize(
    ("solver_type", "snapshot_format", "iter_size"),
    [
        ("SGD", pb.SolverParameter.BINARYPROTO, 1),
        ("SGD", HDF5, 2),
        ("Adam", pb.SolverParameter.BINARYPROTO, 2),
        ("Adam", HDF5, 1),
    ],
    ids=["SGD-binaryproto", "SGD-hdf5-iter_size2", "Adam-binaryproto-iter_size2", "Adam-hdf5"],
)
def test_resumed_run_reaches_the_uninterrupted_weights(
    solver_type: str, snapshot_format: int, iter_size: int, workdir: Path
) -> None:
    solver = dropout_solver(workdir, solver_type, snapshot_format, iter_size)
    quiet_solver(solver, logs=False)[0].solve()  # 6 iterations, snapshots at 3 and 6
    extension = ".h5" if snapshot_format == HDF5 else ""
    solver.snapshot_prefix = "b/run"
    resumed, log = quiet_solver(solver, logs=False)
    resumed.solve(resume=f"a/run_iter_3.solverstate{extension}")
    assert resumed.iter == 6 and "restored iteration 3" in log.getvalue()
    assert_same_weights(f"a/run_iter_6.caffemodel{extension}", f"b/run_iter_6.caffemodel{extension}")
    first, second = (
        read_solver_state(f"a/run_iter_6.solverstate{extension}"),
        read_solver_state(f"b/run_iter_6.solverstate{extension}"),
    )
    assert first.current_step == second.current_step == 2  # multistep: both step values passed
    for a, b in zip(first.history, second.history, strict=True):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)


def test_history_is_caffes_last_update_in_caffe_blob_shapes(workdir: Path) -> None:
    # SGD without momentum: Caffe's history after an update is that update, w_before − w_after.
    solver = dropout_solver(workdir, "SGD", pb.SolverParameter.BINARYPROTO, 1)
    solver.momentum, solver.snapshot, solver.max_iter = 0.0, 1, 2
    quiet_solver(solver, logs=False)[0].solve()
    before, after = weights_of("a/run_iter_1.caffemodel"), weights_of("a/run_iter_2.caffemodel")
    state = read_solver_state("a/run_iter_2.solverstate")
    assert state.iter == 2 and state.learned_net == "a/run_iter_2.caffemodel"
    expected = [before[name][k] - after[name][k] for name in ("conv", "ip") for k in range(2)]
    assert [h.shape for h in state.history] == [(3, 2, 3, 3), (3,), (3, 27), (3,)]
    for history, update in zip(state.history, expected, strict=True):
        np.testing.assert_allclose(history, update, rtol=1e-4, atol=1e-7)


def test_solverstate_layouts_are_caffes(tmp_path: Path) -> None:
    history = [np.arange(6, dtype=np.float32).reshape(2, 3), np.ones(2, np.float32)]
    layers = [LayerBlobs("ip", "InnerProduct", [np.zeros((2, 3), np.float32), np.zeros(2, np.float32)])]
    prefix = str(tmp_path / "s")
    model, state = write_snapshot(prefix, pb.SolverParameter.BINARYPROTO, layers, None, SolverState(7, "", 1, history))
    assert (model, state) == (f"{prefix}_iter_7.caffemodel", f"{prefix}_iter_7.solverstate")
    message = pb.SolverState.FromString(Path(state).read_bytes())
    assert (message.iter, message.learned_net, message.current_step) == (7, model, 1)
    assert list(message.history[0].shape.dim) == [2, 3] and list(message.history[0].data) == list(range(6))

    model, state = write_snapshot(prefix, HDF5, layers, None, SolverState(8, "", 2, history))
    assert (model, state) == (f"{prefix}_iter_8.caffemodel.h5", f"{prefix}_iter_8.solverstate.h5")
    with h5py.File(state) as handle:  # SnapshotSolverStateToHDF5
        assert sorted(handle) == ["current_step", "history", "iter", "learned_net"]
        assert handle["iter"].shape == () and int(handle["iter"][()]) == 8
        assert handle["learned_net"][()] == model.encode()
        assert sorted(handle["history"]) == ["0", "1"]
        np.testing.assert_array_equal(handle["history/0"][()], history[0])
    with h5py.File(model) as handle:  # Net::ToHDF5
        assert sorted(handle["data/ip"]) == ["0", "1"]
    restored = read_solver_state(state)
    assert (restored.iter, restored.learned_net, restored.current_step) == (8, model, 2)
    np.testing.assert_array_equal(restored.history[0], history[0])


SHARED_NET = """name: "shared"
layer { name: "data" type: "DummyData" top: "a" top: "b" top: "target"
  dummy_data_param { shape { dim: 4 dim: 6 } shape { dim: 4 dim: 6 } shape { dim: 4 dim: 3 }
    data_filler { type: "gaussian" std: 1 } } }
layer { name: "ip_a" type: "InnerProduct" bottom: "a" top: "ip_a" param { name: "w" } param { name: "bias" }
  inner_product_param { num_output: 3 weight_filler { type: "gaussian" std: 0.3 } } }
layer { name: "ip_b" type: "InnerProduct" bottom: "b" top: "ip_b" param { name: "w" } param { name: "bias" }
  inner_product_param { num_output: 3 } }
layer { name: "sum" type: "Eltwise" bottom: "ip_a" bottom: "ip_b" top: "sum" }
layer { name: "loss" type: "EuclideanLoss" bottom: "sum" bottom: "target" top: "loss" }
"""


def test_shared_params_are_one_learnable_blob_in_snapshots(workdir: Path) -> None:
    (workdir / "net.prototxt").write_text(SHARED_NET)
    (workdir / "a").mkdir()
    solver = pb.SolverParameter(
        net="net.prototxt", base_lr=0.1, momentum=0.9, lr_policy="fixed", max_iter=4, snapshot=2,
        snapshot_prefix="a/run", snapshot_format=HDF5, random_seed=5,
    )  # fmt: skip
    quiet_solver(solver, logs=False)[0].solve()
    with h5py.File("a/run_iter_2.caffemodel.h5") as handle:  # Net::ToHDF5: the owner's blobs only
        assert sorted(handle["data/ip_a"]) == ["0", "1"] and len(handle["data/ip_b"]) == 0
    state = read_solver_state("a/run_iter_2.solverstate.h5")
    assert [h.shape for h in state.history] == [(3, 6), (3,)]  # one history per shared param
    solver.snapshot_prefix = "b/run"
    (workdir / "b").mkdir()
    quiet_solver(solver, logs=False)[0].solve(resume="a/run_iter_2.solverstate.h5")
    assert_same_weights("a/run_iter_4.caffemodel.h5", "b/run_iter_4.caffemodel.h5")


def test_weights_are_renamed_into_place_before_the_state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    renamed: list[str] = []
    real = os.replace

    def recording(source: str, target: str) -> None:
        renamed.append(Path(target).name)
        real(source, target)

    monkeypatch.setattr(os, "replace", recording)
    layers = [LayerBlobs("ip", "InnerProduct", [np.zeros((2, 3), np.float32)])]
    for snapshot_format in (pb.SolverParameter.BINARYPROTO, HDF5):
        write_snapshot(str(tmp_path / "s"), snapshot_format, layers, None, SolverState(1))
    assert renamed == [
        "s_iter_1.caffemodel",
        "s_iter_1.solverstate",
        "s_iter_1.caffemodel.h5",
        "s_iter_1.solverstate.h5",
    ]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(renamed)  # no temporary files left


def test_restore_refuses_a_state_that_does_not_fit(workdir: Path) -> None:
    path = tiny_solver(workdir, max_iter=2, snapshot=0, test_interval=5)
    quiet_solver(path, logs=False)[0].solve()
    adam = load_solver(path)
    adam.type = "Adam"
    with pytest.raises(SolverError, match=r"tiny_iter_2.solverstate: incorrect number of history blobs; expected 8"):
        quiet_solver(adam, logs=False)[0].solve(resume="snap/tiny_iter_2.solverstate")
    os.remove("snap/tiny_iter_2.caffemodel")
    with pytest.raises(SolverError, match=r"the weights of the solver state are missing: snap/tiny_iter_2.caffemodel"):
        quiet_solver(path, logs=False)[0].solve(resume="snap/tiny_iter_2.solverstate")
    with pytest.raises(SolverError, match=r"nothing.solverstate: the solver state file does not exist"):
        quiet_solver(path, logs=False)[0].solve(resume="nothing.solverstate")


def _latest_state(directory: Path) -> tuple[int, Path] | None:
    states = [(int(p.name.split("_iter_")[1].split(".")[0]), p) for p in directory.glob("*.solverstate")]
    return max(states) if states else None


def test_killed_torch_run_matches_tensorflow_and_resumes_until_sigint(workdir: Path) -> None:
    """One PyTorch subprocess serves two checks: its weights are TensorFlow's (float32
    tolerance), and SIGKILL at any moment leaves a last snapshot that resumes."""
    path = tiny_solver(workdir, max_iter=100_000, snapshot=2, display=0, test_interval=None, test_iter=None)
    command = [sys.executable, "-m", "netdef.cli", "train", "--solver", str(path)]
    with open(workdir / "stdout.txt", "wb") as out, open(workdir / "stderr.txt", "wb") as err:
        process = subprocess.Popen(command, stdout=out, stderr=err, env=_subprocess_env(KERAS_BACKEND="torch"))
        try:
            deadline = time.monotonic() + 180
            while (_latest_state(workdir / "snap") or (0,))[0] < 6:
                failed = process.poll() is not None or time.monotonic() > deadline
                assert not failed, (workdir / "stderr.txt").read_text()[-2000:]
                time.sleep(0.05)
            process.send_signal(signal.SIGKILL)  # wherever it was: mid-iteration, mid-write
        finally:
            process.kill()
            process.wait()
    assert (
        "TensorBoard events are written on the TensorFlow backend only (running on torch)"
        in (workdir / "stdout.txt").read_text()
    )
    iteration, state = _latest_state(workdir / "snap")
    assert iteration >= 6
    # A kill mid-write leaves a temporary file, never a torn snapshot: every state names
    # complete weights. The next run removes the temporary files.
    for complete in (workdir / "snap").glob("*.solverstate"):
        assert Path(read_solver_state(complete).learned_net).is_file()
    partial = [p for p in (workdir / "snap").iterdir() if p.name.startswith(".")]
    (workdir / "ref").mkdir()
    reference = load_solver(path)
    reference.snapshot_prefix, reference.max_iter = "ref/tiny", 6
    quiet_solver(reference, logs=False)[0].solve()
    assert_same_weights("snap/tiny_iter_6.caffemodel", "ref/tiny_iter_6.caffemodel", tolerance=1e-5)

    # Resume on TensorFlow; SIGINT (Caffe's default effect: stop) arrives once it runs.
    solver, log = quiet_solver(path, logs=False)

    def interrupt() -> None:
        while _latest_state(workdir / "snap")[0] < iteration + 2:
            time.sleep(0.01)
        os.kill(os.getpid(), signal.SIGINT)

    thread = threading.Thread(target=interrupt, daemon=True)
    thread.start()
    solver.solve(resume=str(state))
    thread.join(timeout=10)
    text = log.getvalue()
    assert f"restored iteration {iteration}" in text
    assert all(f"removed {p.relative_to(workdir)}" in text for p in partial) and not any(p.exists() for p in partial)
    assert text.rstrip().endswith("Optimization stopped early.")
    stopped = solver.iter
    assert iteration + 2 <= stopped < 100_000
    # It snapshotted where it stopped (snapshot_after_train), and that matches an
    # uninterrupted run of the same length.
    assert Path(f"snap/tiny_iter_{stopped}.solverstate").is_file()
    reference.max_iter = stopped
    quiet_solver(reference, logs=False)[0].solve()
    assert_same_weights(f"snap/tiny_iter_{stopped}.caffemodel", f"ref/tiny_iter_{stopped}.caffemodel", tolerance=1e-5)


def test_sighup_snapshots_and_training_goes_on(workdir: Path) -> None:
    path = tiny_solver(workdir, max_iter=300, snapshot=0, display=0, test_interval=None, test_iter=None)
    solver, log = quiet_solver(path, logs=False, sigint_effect="none")

    def signals() -> None:
        while solver.iter < 10:
            time.sleep(0.005)
        os.kill(os.getpid(), signal.SIGINT)  # effect "none": ignored
        os.kill(os.getpid(), signal.SIGHUP)

    thread = threading.Thread(target=signals, daemon=True)
    thread.start()
    solver.solve()
    thread.join(timeout=10)
    snapshots = sorted(int(p.name.split("_iter_")[1].split(".")[0]) for p in Path("snap").glob("*.solverstate"))
    assert len(snapshots) == 2 and 10 <= snapshots[0] < 300 and snapshots[1] == 300
    assert "Optimization Done." in log.getvalue()


def test_signal_effects_are_checked(workdir: Path) -> None:
    with pytest.raises(SolverError, match="invalid sigint_effect"):
        Solver(pb.SolverParameter(), sigint_effect="pause", stream=io.StringIO())
