"""Training-step time of compiled nets against the same nets written by hand in plain Keras.

Run: .venv/bin/python benchmarks/bench_train_step.py [--steps N] (KERAS_BACKEND picks the backend)

Both models are channels-last Keras functional models trained with the same optimizer, loss
and batch; each step is one ``train_on_batch`` (forward + backward + update). The two are
timed alternately in one process so that machine load affects both alike; the ratio
compiled / hand-written is what is reported (≤ 1.05 is the target).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import hand_written
import keras
import numpy as np
from keras import layers, ops

from netdef.keras.compiler import to_keras

ZOO = Path(__file__).resolve().parent.parent.parent / "shared" / "caffe-zoo"


def caffe_lrn(x, size: int = 5, alpha: float = 1e-4, beta: float = 0.75, k: float = 1.0):
    """What a Keras user writes for AlexNet's LRN: sum of squares over a channel window."""
    squares = ops.square(x)
    half = size // 2
    padded = ops.pad(squares, [(0, 0), (0, 0), (0, 0), (half, half)])
    channels = x.shape[-1]
    window = sum(padded[..., i : i + channels] for i in range(size))
    return x * ops.power(k + alpha / size * window, -beta)


def cifar10_quick_by_hand() -> keras.Model:
    logits = hand_written.cifar10_quick()
    return keras.Model(logits.inputs, layers.Softmax()(logits.outputs[0]))


def caffenet_by_hand() -> keras.Model:
    inputs = keras.Input((227, 227, 3))
    x = layers.Conv2D(96, 11, strides=4, activation="relu")(inputs)
    x = layers.MaxPooling2D(3, 2)(x)
    x = layers.Lambda(caffe_lrn)(x)
    x = layers.ZeroPadding2D(2)(x)
    x = layers.Conv2D(256, 5, groups=2, activation="relu")(x)
    x = layers.MaxPooling2D(3, 2)(x)
    x = layers.Lambda(caffe_lrn)(x)
    x = layers.Conv2D(384, 3, padding="same", activation="relu")(x)
    x = layers.Conv2D(384, 3, padding="same", groups=2, activation="relu")(x)
    x = layers.Conv2D(256, 3, padding="same", groups=2, activation="relu")(x)
    x = layers.MaxPooling2D(3, 2)(x)
    x = layers.Flatten()(x)
    x = layers.Dropout(0.5)(layers.Dense(4096, activation="relu")(x))
    x = layers.Dropout(0.5)(layers.Dense(4096, activation="relu")(x))
    x = layers.Dense(1000)(x)
    return keras.Model(inputs, layers.Softmax()(x))


def prepared(model: keras.Model) -> keras.Model:
    model.compile(optimizer=keras.optimizers.SGD(0.001, momentum=0.9), loss="categorical_crossentropy")
    return model


def step_times(models: dict[str, keras.Model], batch: int, steps: int) -> dict[str, list[float]]:
    shape = models["hand-written"].input_shape[1:]
    classes = models["hand-written"].output_shape[-1]
    rng = np.random.default_rng(0)
    x = rng.standard_normal((batch, *shape)).astype("float32")
    y = keras.utils.to_categorical(rng.integers(0, classes, batch), classes)
    times: dict[str, list[float]] = {name: [] for name in models}
    for model in models.values():
        for _ in range(3):  # warm up: tracing, compilation, allocator
            model.train_on_batch(x, y)
    for _ in range(steps):
        for name, model in models.items():
            start = time.perf_counter()
            model.train_on_batch(x, y)
            times[name].append(time.perf_counter() - start)
    return times


def bench(name: str, prototxt: Path, by_hand: Callable[[], keras.Model], batch: int, steps: int) -> None:
    compiled = to_keras(prototxt, layout="channels_last", phase="TRAIN")
    models = {"compiled": prepared(compiled), "hand-written": prepared(by_hand())}
    assert models["compiled"].count_params() == models["hand-written"].count_params()
    times = step_times(models, batch, steps)
    medians = {key: statistics.median(values) for key, values in times.items()}
    ratio = medians["compiled"] / medians["hand-written"]
    print(
        f"{keras.backend.backend():>10} {name:>14} batch {batch:>3}: compiled {medians['compiled'] * 1e3:8.1f} ms,"
        f" hand-written {medians['hand-written'] * 1e3:8.1f} ms, ratio {ratio:.3f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()
    bench("cifar10_quick", ZOO / "examples/cifar10/cifar10_quick.prototxt", cifar10_quick_by_hand, 100, args.steps)
    caffenet = ZOO / "models/bvlc_reference_caffenet/deploy.prototxt"
    bench("caffenet", caffenet, caffenet_by_hand, 8, max(5, args.steps // 4))


if __name__ == "__main__":
    main()
