"""Training speed of ``netdef.Solver`` (the code of ``netdef train``) against the same nets
written by hand in Keras and trained with ``model.fit``.

Run: .venv/bin/python benchmarks/bench_train.py [--iterations N] [--rounds R] [--backend tensorflow|torch]

Nets: Caffe's cifar10_quick (examples/cifar10/cifar10_quick_train_test.prototxt, batch 100)
and LeNet (examples/mnist/lenet_train_test.prototxt, batch 64), their Data layers replaced
by a MemoryData layer of the same shapes fed from random arrays in memory; their zoo solvers'
SGD settings (momentum 0.9, weight decay, lr_mult 2 on biases), without test nets.
The hand-written models are channels-last Keras functional models with the same layers,
trained by ``model.fit`` with ``keras.optimizers.SGD(momentum=0.9, weight_decay=...)`` on a
``tf.data`` pipeline over the same arrays. Each round runs N iterations of one and then N
of the other (alternating, so machine load affects both alike), each timed from the end of
its third iteration to its last by a Keras callback (what a run pays once, building the
input pipeline and starting ``fit``, is left out as a long run pays it once); the reported
speed is the median over the rounds, and the ratio the median over the rounds of netdef it/s ÷
hand-written it/s in the same round (target ≥ 0.95), which cancels slow drifts of the machine's load.

Without --backend the script runs itself once per backend (TensorFlow, then PyTorch).
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import hand_written

ZOO = Path(__file__).resolve().parent.parent.parent / "shared" / "caffe-zoo"
#: Iterations per round; the first WARM of each round are not timed, so what a run pays
#: once (building the input pipeline, starting ``fit``) is left out, as a long run pays it once.
ITERATIONS = {"cifar10_quick": 30, "lenet": 100}
WARM = 3
NETS = {
    "cifar10_quick": (
        "examples/cifar10/cifar10_quick_train_test.prototxt",
        "examples/cifar10/cifar10_quick_solver.prototxt",
    ),
    "lenet": ("examples/mnist/lenet_train_test.prototxt", "examples/mnist/lenet_solver.prototxt"),
}


def memory_data_net(prototxt: Path, shape: tuple[int, int, int, int]) -> str:
    """The TRAIN net with its Data layers replaced by one MemoryData layer of ``shape``."""
    from google.protobuf import text_format

    from netdef.proto import netdef_pb2 as pb

    net = text_format.Parse(prototxt.read_text(), pb.NetParameter())
    layers = [layer for layer in net.layer if layer.type != "Data"]
    del net.layer[:]
    memory = net.layer.add(name="data", type="MemoryData", top=["data", "label"])
    batch, channels, height, width = shape
    memory.memory_data_param.batch_size = batch
    memory.memory_data_param.channels = channels
    memory.memory_data_param.height = height
    memory.memory_data_param.width = width
    net.layer.extend(layers)
    return text_format.MessageToString(net)


def by_hand(name: str):  # -> keras.Model
    return hand_written.lenet() if name == "lenet" else hand_written.cifar10_quick()


def step_clock():  # -> keras.callbacks.Callback
    """Times each Keras step's end, to measure the steady speed of a round."""
    import keras

    class StepClock(keras.callbacks.Callback):
        def __init__(self) -> None:
            super().__init__()
            self.times: list[float] = []

        def on_train_begin(self, logs: object = None) -> None:
            self.times = []

        def on_train_batch_end(self, batch: int, logs: object = None) -> None:
            self.times.append(time.perf_counter())

        def speed(self) -> float:
            return (len(self.times) - WARM) / (self.times[-1] - self.times[WARM - 1])

    return StepClock()


def bench(name: str, iterations: int, rounds: int, workdir: Path) -> tuple[list[float], list[float]]:
    import keras
    import numpy as np
    import tensorflow as tf

    from netdef.load import load_solver
    from netdef.solver.trainer import Solver

    prototxt, solver_file = NETS[name]
    shape = (100, 3, 32, 32) if name == "cifar10_quick" else (64, 1, 28, 28)
    (workdir / f"{name}.prototxt").write_text(memory_data_net(ZOO / prototxt, shape))
    param = load_solver(ZOO / solver_file)
    param.net = str(workdir / f"{name}.prototxt")
    param.ClearField("test_iter")
    param.test_interval = param.snapshot = 0
    param.snapshot_prefix = str(workdir / name)
    param.max_iter = 10**9
    rng = np.random.default_rng(0)
    samples = shape[0] * 8
    images = rng.standard_normal((samples, *shape[1:])).astype(np.float32)
    labels = rng.integers(0, 10, samples).astype(np.float32)
    netdef_clock, hand_clock = step_clock(), step_clock()
    solver = Solver(
        param, arrays={"data": images, "label": labels}, progress=False, stream=io.StringIO(), callbacks=[netdef_clock]
    )

    hand = by_hand(name)
    hand.compile(
        optimizer=keras.optimizers.SGD(param.base_lr, momentum=param.momentum, weight_decay=param.weight_decay),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    channels_last = np.ascontiguousarray(images.transpose(0, 2, 3, 1))
    dataset = tf.data.Dataset.from_tensor_slices((channels_last, labels)).repeat().batch(shape[0])
    dataset = dataset.prefetch(tf.data.AUTOTUNE)
    assert hand.count_params() == solver.model.count_params(), (hand.count_params(), solver.model.count_params())

    def run_netdef() -> float:
        solver.step(iterations)
        return netdef_clock.speed()

    def run_hand() -> float:
        hand.fit(dataset, epochs=1, steps_per_epoch=iterations, verbose=0, shuffle=False, callbacks=[hand_clock])
        return hand_clock.speed()

    solver.step(3)  # warm up: tracing, allocation
    hand.fit(dataset, epochs=1, steps_per_epoch=3, verbose=0, shuffle=False)
    speeds: dict[str, list[float]] = {"netdef": [], "hand": []}
    for _ in range(rounds):
        speeds["netdef"].append(run_netdef())
        speeds["hand"].append(run_hand())
    return speeds["netdef"], speeds["hand"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--iterations", type=int, help="iterations per round and model (default: per net)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--backend", choices=("tensorflow", "torch"))
    parser.add_argument("--nets", default="cifar10_quick,lenet")
    args = parser.parse_args()
    if args.backend is None:
        for backend in ("tensorflow", "torch"):
            command = [
                sys.executable,
                __file__,
                "--backend",
                backend,
                "--rounds",
                str(args.rounds),
                "--nets",
                args.nets,
            ]
            command += ["--iterations", str(args.iterations)] if args.iterations else []
            subprocess.run(command, check=True, env={**os.environ, "KERAS_BACKEND": backend})
        return
    os.environ["KERAS_BACKEND"] = args.backend
    with tempfile.TemporaryDirectory() as directory:
        for name in args.nets.split(","):
            iterations = args.iterations or ITERATIONS[name]
            netdef_speeds, hand_speeds = bench(name, iterations, args.rounds, Path(directory))
            ratios = [n / h for n, h in zip(netdef_speeds, hand_speeds, strict=True)]
            print(
                f"{args.backend:>10} {name:>14}: netdef {statistics.median(netdef_speeds):6.2f} it/s,"
                f" hand-written {statistics.median(hand_speeds):6.2f} it/s,"
                f" ratio {statistics.median(ratios):.3f} (median of the per-round ratios,"
                f" {min(ratios):.2f}-{max(ratios):.2f})",
                flush=True,
            )


if __name__ == "__main__":
    main()
