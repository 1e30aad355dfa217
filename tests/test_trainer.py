"""netdef.Solver: Caffe's solver loop on Keras's fit — nets, log lines, tests, logs, devices.

The oracle for the numbers is numpy: a tiny two-layer net on fixed HDF5 data, whose
forward pass (InnerProduct, ReLU, SoftmaxWithLoss, Accuracy) is recomputed from the
weights the solver holds, then smoothed and averaged by Caffe's formulas
(``Solver::UpdateSmoothedLoss``, ``Solver::Test``).
"""

from __future__ import annotations

import csv
import io
import math
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import h5py
import keras
import numpy as np
import pytest
from google.protobuf import text_format

from netdef.errors import SolverError
from netdef.load import load_solver
from netdef.proto import netdef_pb2 as pb
from netdef.solver.trainer import Solver, load_choice, resolve_nets
from netdef.weights import LayerBlobs, read_weights, write_caffemodel

from .conftest import REPO

TINY_NET = """name: "tiny"
layer { name: "data" type: "HDF5Data" top: "data" top: "label" include { phase: TRAIN }
  hdf5_data_param { source: "train.txt" batch_size: 4 } }
layer { name: "data" type: "HDF5Data" top: "data" top: "label" include { phase: TEST }
  hdf5_data_param { source: "test.txt" batch_size: 4 } }
layer { name: "ip1" type: "InnerProduct" bottom: "data" top: "ip1"
  inner_product_param { num_output: 5
    weight_filler { type: "gaussian" std: 0.5 } bias_filler { type: "constant" value: 0.1 } } }
layer { name: "relu1" type: "ReLU" bottom: "ip1" top: "ip1" }
layer { name: "ip2" type: "InnerProduct" bottom: "ip1" top: "ip2"
  inner_product_param { num_output: 3 weight_filler { type: "xavier" } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip2" bottom: "label" top: "loss" loss_weight: LOSS_WEIGHT }
layer { name: "accuracy" type: "Accuracy" bottom: "ip2" bottom: "label" top: "accuracy" include { phase: TEST } }
"""

TINY_SOLVER = {
    "net": "net.prototxt",
    "test_iter": [2],
    "test_interval": 5,
    "base_lr": 0.1,
    "momentum": 0.9,
    "weight_decay": 0.001,
    "lr_policy": "step",
    "gamma": 0.5,
    "stepsize": 4,
    "display": 2,
    "max_iter": 10,
    "snapshot": 5,
    "snapshot_prefix": "snap/tiny",
    "random_seed": 7,
}


def tiny_data(directory: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """12 training and 8 test samples (2×3×3, labels 0..2) as HDF5 files with their lists."""
    rng = np.random.default_rng(0)
    data = {}
    for name, count in (("train", 12), ("test", 8)):
        x = rng.standard_normal((count, 2, 3, 3)).astype(np.float32)
        y = rng.integers(0, 3, count).astype(np.float32)
        with h5py.File(directory / f"{name}.h5", "w") as handle:
            handle["data"], handle["label"] = x, y
        (directory / f"{name}.txt").write_text(f"{name}.h5\n")
        data[name] = (x, y)
    return data


def tiny_solver(directory: Path, loss_weight: float = 1.0, **fields: Any) -> Path:
    """The tiny net, its data and a solver (TINY_SOLVER with ``fields`` replaced) in ``directory``."""
    (directory / "net.prototxt").write_text(TINY_NET.replace("LOSS_WEIGHT", repr(loss_weight)))
    tiny_data(directory)
    (directory / "snap").mkdir(exist_ok=True)
    solver = pb.SolverParameter()
    for name, value in {**TINY_SOLVER, **fields}.items():
        if value is None:
            solver.ClearField(name)
        elif isinstance(value, list):
            getattr(solver, name).extend(value)
        else:
            setattr(solver, name, value)
    path = directory / "solver.prototxt"
    path.write_text(text_format.MessageToString(solver))
    return path


def quiet_solver(path: Path | str | pb.SolverParameter, **kwargs: Any) -> tuple[Solver, io.StringIO]:
    stream = io.StringIO()
    return Solver(path, stream=stream, progress=False, **kwargs), stream


def caffe_weights(solver: Solver) -> dict[str, list[np.ndarray]]:
    from netdef.keras.weights import caffe_blobs

    return {record.name: [np.asarray(b) for b in record.blobs] for record in caffe_blobs(solver.compiled)}


def numpy_forward(weights: dict[str, list[np.ndarray]], x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """(SoftmaxWithLoss, Accuracy) of the tiny net: Caffe's formulas in float64."""
    w1, b1 = weights["ip1"]
    w2, b2 = weights["ip2"]
    hidden = np.maximum(x.reshape(len(x), -1).astype(np.float64) @ w1.T + b1, 0)
    logits = hidden @ w2.T + b2
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_p = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    labels = y.astype(int)
    loss = -log_p[np.arange(len(y)), labels].mean()
    true = logits[np.arange(len(y)), labels]
    correct = (logits >= true[:, None]).sum(axis=1) < 2  # ties count against, top_k 1
    return float(loss), float(correct.mean())


def batches(x: np.ndarray, y: np.ndarray, count: int, size: int = 4) -> list[tuple[np.ndarray, np.ndarray]]:
    """HDF5Data's batches: rows in order, wrapping at the end of the file."""
    index = np.arange(count * size) % len(x)
    return [(x[index[k * size : (k + 1) * size]], y[index[k * size : (k + 1) * size]]) for k in range(count)]


def numbers(pattern: str, text: str) -> list[float]:
    return [float(value) for value in re.findall(pattern, text)]


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A temporary working directory: Caffe resolves a solver's paths from there."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


# --- log lines and test averages against numpy ---------------------------------------------


def test_display_and_test_lines_follow_caffes_formulas(workdir: Path) -> None:
    # base_lr 0 keeps the weights, so every loss is a forward pass of the initial weights.
    path = tiny_solver(
        workdir, loss_weight=2.0, base_lr=0.0, lr_policy="fixed", average_loss=3, display=2, max_iter=8,
        test_iter=[3], test_interval=4, snapshot=0,
    )  # fmt: skip
    solver, stream = quiet_solver(path)
    weights = caffe_weights(solver)
    solver.solve()
    log = stream.getvalue()
    data = tiny_data(workdir)

    # Training: iteration i reads batch i; the displayed loss is the weighted objective
    # smoothed over the last average_loss iterations.
    losses = [2 * numpy_forward(weights, x, y)[0] for x, y in batches(*data["train"], 9)]
    smoothed = [np.mean(losses[max(0, i - 2) : i + 1]) for i in range(8)]
    displayed = numbers(r"Iteration \d+, loss = (\S+)\n", log)
    # Iterations 0, 2, 4, 6, then Solve's final forward at 8, smoothed with the losses of that Step.
    final = np.mean(losses[6:9])
    np.testing.assert_allclose(displayed, [*smoothed[::2], final], rtol=1e-5)
    outputs = re.findall(r"Train net output #0: loss = (\S+) \(\* 2 = (\S+) loss\)", log)
    np.testing.assert_allclose([float(v) for v, _ in outputs], [losses[i] / 2 for i in (0, 2, 4, 6)], rtol=1e-5)
    np.testing.assert_allclose([float(w) for _, w in outputs], [losses[i] for i in (0, 2, 4, 6)], rtol=1e-5)
    assert re.findall(r"Iteration (\d+), lr = (\S+)", log) == [(str(i), "0") for i in (0, 2, 4, 6)]

    # Tests at 0, 4 and after training at 8; each averages test_iter batches, the test
    # net's data continuing from one test to the next (8 samples, batch 4: it wraps).
    test_batches = batches(*data["test"], 9)
    expected = [np.mean([numpy_forward(weights, x, y) for x, y in test_batches[k : k + 3]], axis=0) for k in (0, 3, 6)]
    assert re.findall(r"Iteration (\d+), Testing net \(#0\)", log) == ["0", "4", "8"]
    accuracy = numbers(r"Test net output #0: accuracy = (\S+)", log)
    test_loss = re.findall(r"Test net output #1: loss = (\S+) \(\* 2 = (\S+) loss\)", log)
    np.testing.assert_allclose(accuracy, [e[1] for e in expected], rtol=1e-5)
    np.testing.assert_allclose([float(v) for v, _ in test_loss], [e[0] for e in expected], rtol=1e-5)
    np.testing.assert_allclose([float(w) for _, w in test_loss], [2 * e[0] for e in expected], rtol=1e-5)
    assert log.rstrip().endswith("Optimization Done.")


def test_test_compute_loss_and_csv_tensorboard_plot(workdir: Path) -> None:
    path = tiny_solver(
        workdir, test_compute_loss=True, max_iter=5, display=1, snapshot=0, test_interval=5, debug_info=True,
        snapshot_diff=True,
    )  # fmt: skip
    solver, stream = quiet_solver(path)
    solver.solve()
    log = stream.getvalue()
    # The fields Keras cannot honour fully: warned about once, debug_info shown as far as it can be.
    assert log.count("warning: snapshot_diff") == 1 and log.count("warning: debug_info") == 1
    updates = re.findall(r"\[Update\] Layer (\w+), param blob (\d) data: \S+", log)
    assert updates == [("ip1", "0"), ("ip1", "1"), ("ip2", "0"), ("ip2", "1")] * 5
    test_losses = numbers(r"Test loss: (\S+)", log)
    assert len(test_losses) == 2
    # The test loss is the sum of the weighted outputs (here the one loss, weight 1).
    np.testing.assert_allclose(test_losses, numbers(r"Test net output #1: loss = (\S+) \(", log), rtol=1e-6)

    with open(workdir / "snap" / "tiny_log.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == ["iteration", "seconds", "lr", "loss", "test0/accuracy", "test0/loss", "test0/test_loss"]
    assert [row["iteration"] for row in rows] == ["0", "1", "2", "3", "4", "5"]
    np.testing.assert_allclose([float(r["loss"]) for r in rows], numbers(r"Iteration \d+, loss = (\S+)", log), 1e-5)
    assert [row["lr"] for row in rows[:5]] == ["0.1", "0.1", "0.1", "0.1", "0.05"]
    assert rows[0]["test0/accuracy"] and rows[5]["test0/test_loss"] and not rows[2]["test0/accuracy"]
    assert (workdir / "snap" / "tiny_plot.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    import tensorflow as tf

    events = list((workdir / "snap" / "tiny_tensorboard").glob("events.out.tfevents.*"))
    tags: dict[str, list[int]] = {}
    for record in tf.data.TFRecordDataset([str(e) for e in events]):
        event = tf.compat.v1.Event.FromString(record.numpy())
        for value in event.summary.value:
            assert value.metadata.plugin_data.plugin_name == "scalars"
            tags.setdefault(value.tag, []).append(event.step)
    assert tags["train/loss"] == [0, 1, 2, 3, 4, 5] and tags["test0/accuracy"] == [0, 5]


def test_log_dir_moves_the_logs_and_resume_continues_the_csv(workdir: Path) -> None:
    path = tiny_solver(workdir, max_iter=6, display=1, snapshot=3, test_interval=None, test_iter=None)
    quiet_solver(path, log_dir=workdir / "logs")[0].solve()
    assert not (workdir / "snap" / "tiny_log.csv").exists()
    resumed = Solver(path, log_dir=workdir / "logs", max_iter=8, progress=True, stream=io.StringIO())
    resumed.solve(resume="snap/tiny_iter_3.solverstate")  # with the progress bar a terminal shows
    with open(workdir / "logs" / "tiny_log.csv", newline="") as handle:
        iterations = [row["iteration"] for row in csv.DictReader(handle)]
    assert iterations == [str(i) for i in range(9)]
    assert (workdir / "logs" / "tiny_plot.png").is_file()


# --- solver fields ---------------------------------------------------------------------------


def test_fine_tuning_copies_weights_by_layer_name(workdir: Path) -> None:
    path = tiny_solver(workdir, max_iter=0, snapshot=0)
    rng = np.random.default_rng(3)
    ip1 = [rng.standard_normal((5, 18)).astype(np.float32), rng.standard_normal(5).astype(np.float32)]
    other = [np.ones((2, 2), np.float32)]
    write_caffemodel(workdir / "pre.caffemodel", [LayerBlobs("ip1", "InnerProduct", ip1), LayerBlobs("x", "", other)])
    fresh = caffe_weights(quiet_solver(path)[0])
    solver, stream = quiet_solver(path, weights=["pre.caffemodel"])
    tuned = caffe_weights(solver)
    np.testing.assert_array_equal(tuned["ip1"][0], ip1[0])
    np.testing.assert_array_equal(tuned["ip1"][1], ip1[1])
    np.testing.assert_array_equal(tuned["ip2"][0], fresh["ip2"][0])  # not in the file: its filler's values
    assert "Finetuning from pre.caffemodel" in stream.getvalue()
    assert "ignoring layer 'x'" in stream.getvalue()
    solver.solve()  # max_iter 0: the test net, sharing the train weights, and the snapshot hold them
    saved = {record.name: record.blobs for record in read_weights(workdir / "snap" / "tiny_iter_0.caffemodel")}
    np.testing.assert_array_equal(saved["ip1"][0], ip1[0])


def test_nan_loss_stops_naming_the_iteration_and_keeps_the_last_good_snapshot(workdir: Path) -> None:
    path = tiny_solver(workdir, base_lr=1e30, lr_policy="fixed", momentum=0.0, snapshot=1, max_iter=20)
    solver, _ = quiet_solver(path)
    with pytest.raises(SolverError, match=r"iteration (\d+): the loss is (nan|inf)") as caught:
        solver.solve()
    stopped = int(re.search(r"iteration (\d+)", str(caught.value)).group(1))
    states = sorted(int(p.name.split("_")[-1].split(".")[0]) for p in (workdir / "snap").glob("*.solverstate"))
    assert states and max(states) <= stopped
    assert f"the last snapshot is snap/tiny_iter_{max(states)}.solverstate" in str(caught.value)
    for record in read_weights(workdir / "snap" / f"tiny_iter_{max(states)}.caffemodel"):
        assert all(np.isfinite(blob).all() for blob in record.blobs)


def test_solver_errors_name_the_solver_file(workdir: Path) -> None:
    path = tiny_solver(workdir, net="missing/net.prototxt")
    with pytest.raises(SolverError, match=r"solver.prototxt:\d+:1: net: the net file missing/net.prototxt does not"):
        quiet_solver(path)
    path = tiny_solver(workdir, net=None, train_net="net.prototxt", test_net=["net.prototxt"], test_iter=[1, 2])
    with pytest.raises(SolverError, match=r"solver.prototxt:\d+:\d+: test_iter must be given once per test net"):
        quiet_solver(path)
    path = tiny_solver(workdir, train_net="net.prototxt")
    with pytest.raises(SolverError, match=r"exactly one training net.*received net, train_net"):
        quiet_solver(path)
    path = tiny_solver(workdir, test_interval=0)
    with pytest.raises(SolverError, match="test nets but no test_interval"):
        quiet_solver(path)
    path = tiny_solver(workdir, average_loss=0)
    with pytest.raises(SolverError, match="average_loss must be at least 1"):
        quiet_solver(path)
    path = tiny_solver(workdir, snapshot_prefix="no/such/dir/x")
    with pytest.raises(SolverError, match="cannot write to snapshot prefix 'no/such/dir/x'"):
        quiet_solver(path)


def test_test_nets_are_resolved_as_caffes_init_test_nets(workdir: Path) -> None:
    # test_solver.cpp's TestInitTrainTestNets: a generic net_param, two test_iter/test_state.
    net = pb.NetParameter()
    text_format.Parse(
        textwrap.dedent("""
        name: "TestNetwork"
        layer { name: "data" type: "DummyData" top: "data" top: "label"
          dummy_data_param { shape { dim: 5 dim: 2 dim: 3 dim: 4 } shape { dim: 5 } } }
        layer { name: "innerprod" type: "InnerProduct" bottom: "data" top: "innerprod"
          inner_product_param { num_output: 10 } }
        layer { name: "accuracy" type: "Accuracy" bottom: "innerprod" bottom: "label" top: "accuracy"
          exclude: { phase: TRAIN } }
        layer { name: "loss" type: "SoftmaxWithLoss" bottom: "innerprod" bottom: "label"
          include: { phase: TRAIN } include: { phase: TEST stage: "with-softmax" } }
        """),
        net,
    )
    solver = pb.SolverParameter(net_param=net, test_iter=[10, 10], test_interval=10, base_lr=0.01, max_iter=1)
    solver.test_state.add().stage.append("with-softmax")
    solver.test_state.add()
    nets = resolve_nets(solver)
    layers = [[node.name for node in load_choice(choice).nodes] for choice in [nets.train, *nets.tests]]
    assert layers == [
        ["data", "innerprod", "loss"],
        ["data", "innerprod", "accuracy", "loss"],
        ["data", "innerprod", "accuracy"],
    ]
    assert [choice.description for choice in nets.tests] == ["net_param", "net_param"]


# --- the Caffe zoo's solvers ---------------------------------------------------------------


def test_every_zoo_solver_loads_and_resolves_its_nets(caffe_zoo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(caffe_zoo)  # Caffe runs from its root; the solvers' paths start there
    solvers = sorted(caffe_zoo.rglob("*solver*.prototxt"))
    assert len(solvers) >= 25
    for path in solvers:
        solver = load_solver(path)
        if path.name == "lenet_auto_solver.prototxt":  # written by a notebook, not in the tree
            with pytest.raises(SolverError, match=r"lenet_auto_solver.prototxt:\d+:\d+: train_net: .*lenet_auto_train"):
                resolve_nets(solver, str(path))
            continue
        nets = resolve_nets(solver, str(path))
        assert len(nets.tests) == len(solver.test_iter), path
        assert nets.train.state.phase == pb.TRAIN and all(t.state.phase == pb.TEST for t in nets.tests)
    autoencoder = resolve_nets(load_solver("examples/mnist/mnist_autoencoder_solver.prototxt"))
    assert [list(t.state.stage) for t in autoencoder.tests] == [["test-on-train"], ["test-on-test"]]


def _mnist_and_cifar(root: Path, zoo: Path) -> None:
    """The zoo's mnist and cifar10 examples with small generated LMDBs and mean at their paths."""
    from netdef.data.datum import array_to_datum
    from netdef.data.lmdb_io import LmdbWriter

    for folder in ("examples/mnist", "examples/cifar10"):
        shutil.copytree(zoo / folder, root / folder)
    rng = np.random.default_rng(1)
    databases = {"mnist/mnist": (1, 28, 28), "cifar10/cifar10": (3, 32, 32)}
    for name, shape in [
        (f"{prefix}_{part}", shape) for prefix, shape in databases.items() for part in ("train", "test")
    ]:
        writer = LmdbWriter(root / "examples" / f"{name}_lmdb")
        for index in range(12):
            datum = array_to_datum(rng.integers(0, 256, shape).astype(np.uint8), int(rng.integers(0, 10)))
            writer.put(f"{index:08d}".encode(), datum.SerializeToString())
        writer.close()
    from netdef.blobs import array_to_blobproto

    mean = np.full((1, 3, 32, 32), 120.0, np.float32)
    (root / "examples/cifar10/mean.binaryproto").write_bytes(array_to_blobproto(mean).SerializeToString())


@pytest.mark.parametrize(
    "solver_file",
    [
        "examples/mnist/lenet_consolidated_solver.prototxt",  # inline V1 net_param, two test states
        "examples/cifar10/cifar10_full_sigmoid_solver_bn.prototxt",  # mean file, BatchNorm's unlearned blobs
    ],
)
def test_zoo_solvers_train_on_generated_data(solver_file: str, caffe_zoo: Path, workdir: Path) -> None:
    _mnist_and_cifar(workdir, caffe_zoo)
    solver = load_solver(solver_file)
    solver.ClearField("test_iter")
    solver.test_iter.extend([1] * len(load_solver(solver_file).test_iter))  # one batch per test, to stay quick
    run, stream = quiet_solver(solver, max_iter=2, logs=False)
    run.solve()
    log = stream.getvalue()
    assert "Iteration 0, Testing net (#0)" in log and log.rstrip().endswith("Optimization Done.")
    suffix = ".solverstate.h5" if solver.snapshot_format == pb.SolverParameter.HDF5 else ".solverstate"
    state = Path(f"{solver.snapshot_prefix}_iter_2{suffix}")
    assert state.is_file()
    if "_bn" in solver_file:  # BatchNorm's unlearned blobs have history too (zeros), and it resumes
        quiet_solver(solver, max_iter=3, logs=False)[0].solve(resume=str(state))


# --- backends, devices, precision ----------------------------------------------------------


def _subprocess_env(**extra: str) -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "3", **extra}
    env.pop("CUDA_VISIBLE_DEVICES", None)
    return env


MIRRORED = """
import sys
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
import io
import numpy as np
from netdef.load import load_solver
from netdef.solver.trainer import Solver
from netdef.weights import read_weights

solver = load_solver("solver.prototxt")
strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
log = io.StringIO()
Solver(solver, strategy=strategy, logs=False, stream=log).solve()
print(log.getvalue())
# The same iterations on one device with twice the batch: Caffe's global batch semantics.
solver.net = "net8.prototxt"
solver.snapshot_prefix = "single/tiny"
Solver(solver, logs=False, stream=io.StringIO()).solve()
single = {r.name: r.blobs for r in read_weights("single/tiny_iter_4.caffemodel")}
for record in read_weights("snap/tiny_iter_4.caffemodel"):
    for a, b in zip(record.blobs, single[record.name]):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
print("same weights")
"""


def test_mirrored_strategy_on_two_logical_cpus_is_the_doubled_batch(workdir: Path) -> None:
    path = tiny_solver(workdir, max_iter=4, snapshot=0, test_iter=None, test_interval=0, display=1)
    text = (workdir / "net.prototxt").read_text()
    (workdir / "net8.prototxt").write_text(text.replace("batch_size: 4", "batch_size: 8"))
    (workdir / "single").mkdir()
    (workdir / "mirrored.py").write_text(MIRRORED)
    done = subprocess.run(
        [sys.executable, "mirrored.py"], capture_output=True, text=True, env=_subprocess_env(), timeout=240
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    assert "2 replicas" in done.stdout and "(4 × 2 = 8)" in done.stdout
    assert "same weights" in done.stdout
    assert path.is_file()


def test_devices_follow_caffes_flags_with_a_visible_gpu_used_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    from netdef.solver import devices

    solver = pb.SolverParameter()
    assert devices.requested_gpus(solver, None, 0) == []
    assert devices.requested_gpus(solver, None, 2) == [0]
    solver.device_id = 1
    assert devices.requested_gpus(solver, None, 2) == [1]
    assert devices.requested_gpus(solver, "all", 3) == [0, 1, 2]
    assert devices.requested_gpus(solver, "none", 3) == []
    assert devices.requested_gpus(solver, [2, 0], 3) == [2, 0]
    with pytest.raises(SolverError, match="device_id 1 is not a visible GPU"):
        devices.requested_gpus(solver, None, 1)
    solver.solver_mode = pb.SolverParameter.CPU  # forces the CPU
    assert devices.requested_gpus(solver, None, 2) == []
    with pytest.raises(SolverError, match="GPU 3 is not visible to the Keras backend"):
        devices.requested_gpus(solver, [3], 2)
    assert (
        devices.parse_gpus("0,1") == [0, 1] and devices.parse_gpus("all") == "all" and devices.parse_gpus(None) is None
    )
    with pytest.raises(SolverError, match="--gpu takes all, none or device ids"):
        devices.parse_gpus("first")
    monkeypatch.setattr(devices, "visible_gpus", lambda backend: 2)
    with pytest.raises(SolverError, match=r"several GPUs \(0, 1\) needs the TensorFlow backend"):
        devices.place(pb.SolverParameter(), [0, 1], "torch")
    assert devices.place(pb.SolverParameter(), [1], "torch").torch_device == "cuda:1"
    assert devices.place(pb.SolverParameter(), "none", "torch").describe() == ["Use CPU."]


def test_bfloat16_trains_a_few_iterations_and_restores_the_policy(workdir: Path) -> None:
    path = tiny_solver(workdir, max_iter=3, snapshot=0, test_interval=3, display=1)
    solver, stream = quiet_solver(path, precision="bfloat16", logs=False)
    assert keras.mixed_precision.global_policy().name == "float32"
    assert solver.compiled.model.get_layer("ip1").dtype_policy.name == "mixed_bfloat16"
    x, y = batches(*tiny_data(workdir)["train"], 1)[0]
    float32_loss, _ = numpy_forward(caffe_weights(solver), x, y)
    solver.solve()
    losses = numbers(r"Iteration \d+, loss = (\S+)", stream.getvalue())
    assert len(losses) == 4 and all(math.isfinite(v) for v in losses)  # 0, 1, 2 and the final forward at 3
    # The first loss is the float32 one to bfloat16's 8 bits of mantissa (the weights stay float32).
    assert losses[0] == pytest.approx(float32_loss, rel=3e-2)
    assert all(variable.dtype == "float32" for variable in solver.model.trainable_variables)
