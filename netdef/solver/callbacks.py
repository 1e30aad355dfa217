"""The pieces of Caffe's ``Solver::Step`` loop that run between iterations, as Keras callbacks,
and the logs a person follows a run by.

The trainer runs Keras's own ``fit`` over ``iter_size`` steps per Caffe iteration (one
forward/backward each), so the end of every ``iter_size``-th batch is the moment after
Caffe's ``ApplyUpdate`` of an iteration i. The callbacks decide *when* by Caffe's rules
(display when ``i % display == 0``, snapshot when ``(i + 1) % snapshot == 0`` or a signal
asks, test when the next iteration is a multiple of ``test_interval``); the
:class:`~netdef.solver.trainer.Solver` they are given knows *how*. They run in the order
Caffe's loop does these things: NaN check, display, signals and snapshot, test.

Nothing here makes the device wait inside an iteration: the batches' losses are kept as
tensors and read when a display, snapshot or test needs them, or every
:data:`READ_EVERY` iterations.

The logs (:class:`TrainingLog`) go next to the snapshots unless ``log_dir`` says otherwise:
for ``snapshot_prefix: "models/x/run"`` they are ``models/x/run_log.csv`` (one row per
iteration that displayed or tested), ``models/x/run_plot.png`` (training loss, test loss and
test scores against iterations) and ``models/x/run_tensorboard/`` (TensorFlow backend).
"""

from __future__ import annotations

import csv
import io
import os
import signal
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any, TextIO

import keras
import numpy as np

from netdef.errors import SolverError
from netdef.fileio import atomic_write

if TYPE_CHECKING:
    from netdef.solver.trainer import Solver

#: What a signal makes the solver do (tools/caffe.cpp's --sigint_effect/--sighup_effect).
EFFECTS = ("stop", "snapshot", "none")
#: Iterations whose losses may wait to be read (and checked for NaN) at most.
READ_EVERY = 20


class SignalRequests:
    """Caffe's ``SignalHandler``: SIGINT and SIGHUP only set a flag, which the solver reads
    once per iteration (and per test batch) and turns into "snapshot", "stop" or "none"."""

    def __init__(self, sigint_effect: str = "stop", sighup_effect: str = "snapshot") -> None:
        for name, effect in (("sigint_effect", sigint_effect), ("sighup_effect", sighup_effect)):
            if effect not in EFFECTS:
                raise SolverError(f"invalid {name}", expected=" or ".join(EFFECTS), received=repr(effect))
        self.effects = {signal.SIGINT: sigint_effect}
        if hasattr(signal, "SIGHUP"):
            self.effects[signal.SIGHUP] = sighup_effect
        self._received: set[int] = set()
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self._received.add(signum)

    def __enter__(self) -> SignalRequests:
        # Python delivers signals to the main thread only; elsewhere Caffe's defaults cannot apply.
        if _in_main_thread():
            for signum in self.effects:
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()

    def poll(self) -> str:
        """The action requested since the last poll: SIGHUP's first, as Caffe checks it first."""
        for signum in sorted(self.effects, key=lambda s: s != getattr(signal, "SIGHUP", None)):
            if signum in self._received:
                self._received.discard(signum)
                return self.effects[signum]
        return "none"


def _in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


# --- callbacks --------------------------------------------------------------------------


class IterationCallback(keras.callbacks.Callback):
    """A callback that acts between Caffe iterations.

    The trainer runs one Keras epoch of ``iter_size × iterations`` steps; batch ``b`` of it
    belongs to iteration ``start + b // iter_size``, and an iteration ends with its last
    batch. (Keras's per-epoch work, resetting and reading its metrics, would cost more
    than a small net's step if each iteration were an epoch.)
    """

    def __init__(self, solver: Solver) -> None:
        super().__init__()
        self.solver = solver
        self.iter_size = solver.param.iter_size
        self.start = solver.iter

    def on_train_batch_begin(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        if batch % self.iter_size == 0:
            self.on_iteration_begin(self.start + batch // self.iter_size)

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        self.on_batch(logs or {})
        if (batch + 1) % self.iter_size == 0:
            self.on_iteration_end(self.start + batch // self.iter_size, logs or {})

    def on_iteration_begin(self, iteration: int) -> None:
        pass

    def on_batch(self, logs: dict[str, Any]) -> None:
        pass

    def on_iteration_end(self, iteration: int, logs: dict[str, Any]) -> None:
        pass


class IterationLoss(IterationCallback):
    """Counts iterations and keeps each one's loss (the mean over its ``iter_size`` batches).

    The losses stay tensors until the solver needs their values (a display, a snapshot, a
    test, or every :data:`READ_EVERY` iterations), so a GPU is not made to wait for the
    host after every step; reading them checks them for NaN, iteration by iteration.
    """

    def __init__(self, solver: Solver) -> None:
        super().__init__(solver)
        self.losses: list[Any] = []

    def on_batch(self, logs: dict[str, Any]) -> None:
        loss = logs["loss"]
        # PyTorch: keep the value, not the autograd graph that made it.
        self.losses.append(loss.detach() if hasattr(loss, "detach") else loss)

    def on_iteration_end(self, iteration: int, logs: dict[str, Any]) -> None:
        self.solver.finish_iteration(iteration, self.losses, logs)
        self.losses = []


class StopOnNaN(IterationCallback):
    """Reads the pending losses every :data:`READ_EVERY` iterations: a NaN or infinite loss
    stops the run (the solver names its iteration). Display, snapshot and test read them
    first too, so nothing is ever snapshotted after a NaN loss."""

    def on_iteration_end(self, iteration: int, logs: dict[str, Any]) -> None:
        if len(self.solver.pending_losses) >= READ_EVERY:
            self.solver.read_losses()


class Display(IterationCallback):
    """``Iteration N, loss = x``, each net output, ``Iteration N, lr = y``, every ``display`` iterations."""

    def on_iteration_end(self, iteration: int, logs: dict[str, Any]) -> None:
        display = self.solver.param.display
        if display and iteration % display == 0 and self.solver.read_losses():
            self.solver.display(iteration)


class Snapshots(IterationCallback):
    """Snapshot every ``snapshot`` iterations or when a signal asks; stop when one asks."""

    def on_iteration_end(self, iteration: int, logs: dict[str, Any]) -> None:
        solver = self.solver
        request = solver.signals.poll()
        interval = solver.param.snapshot
        if ((interval and solver.iter % interval == 0) or request == "snapshot") and solver.read_losses():
            solver.snapshot()
        if request == "stop":
            solver.requested_early_exit = True
            self.model.stop_training = True


class Tests(IterationCallback):
    """Test every ``test_interval`` iterations, before the iteration that is a multiple of it.

    The test at the iteration training stops at is :meth:`Solver.solve`'s, after the final
    snapshot, as in Caffe.
    """

    def __init__(self, solver: Solver, stop_iter: int) -> None:
        super().__init__(solver)
        self.stop_iter = stop_iter

    def on_iteration_end(self, iteration: int, logs: dict[str, Any]) -> None:
        solver = self.solver
        if solver.requested_early_exit or solver.iter >= self.stop_iter or not solver.test_due(solver.iter):
            return
        if solver.read_losses():
            solver.test_all()
            if solver.requested_early_exit:
                self.model.stop_training = True


class Reseed(IterationCallback):
    """Sets every random layer's seed state from the iteration, so that Dropout's masks are a
    function of (seed, iteration) and a resumed run draws what the uninterrupted one drew."""

    def __init__(self, solver: Solver, states: Sequence[Any]) -> None:
        super().__init__(solver)
        self.states = [(state, int(np.asarray(keras.ops.convert_to_numpy(state))[0])) for state in states]

    def on_iteration_begin(self, iteration: int) -> None:
        for state, seed in self.states:
            counter = iteration * self.iter_size
            state.assign(np.array([seed, counter], dtype=keras.backend.standardize_dtype(state.dtype)))


class Progress(IterationCallback):
    """A rich progress bar on a terminal: iterations done, smoothed loss, time left."""

    def __init__(self, solver: Solver, stop_iter: int, stream: TextIO) -> None:
        super().__init__(solver)
        self.stop_iter = stop_iter
        self.stream = stream
        self.bar: Any = None
        self.task: Any = None

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.bar = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[loss]}"),
            TimeRemainingColumn(),
            console=Console(file=self.stream),
            transient=True,
        )
        self.bar.start()
        self.task = self.bar.add_task("iterations", total=self.stop_iter, completed=self.solver.iter, loss="")

    def on_iteration_end(self, iteration: int, logs: dict[str, Any]) -> None:
        loss = f"loss {self.solver.smoothed_loss:.4g}" if self.solver.smoothed_loss else ""
        self.bar.update(self.task, completed=self.solver.iter, loss=loss)

    def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
        if self.bar is not None:
            self.bar.stop()


# --- logs -------------------------------------------------------------------------------


@dataclass
class LogPaths:
    """Where a run's logs go: beside the snapshots, named after the snapshot prefix."""

    csv: Path
    plot: Path
    tensorboard: Path

    @classmethod
    def of(cls, snapshot_prefix: str, log_dir: str | os.PathLike[str] | None) -> LogPaths:
        prefix = Path(snapshot_prefix or "netdef")
        directory = Path(log_dir) if log_dir is not None else prefix.parent
        stem = prefix.name or "netdef"
        return cls(directory / f"{stem}_log.csv", directory / f"{stem}_plot.png", directory / f"{stem}_tensorboard")


@dataclass
class TestColumn:
    """One number a test reports: a net output element, or the test net's loss."""

    name: str
    #: The output's loss weight (0: a score such as accuracy).
    loss_weight: float


@dataclass
class _Row:
    iteration: int
    values: dict[str, float | str] = field(default_factory=dict)


class TrainingLog:
    """Caffe's log lines, and the same numbers as a CSV file, TensorBoard events and a plot.

    The CSV log is appended as the run goes (one row per iteration that displayed or
    tested, flushed as it is complete), so a killed run keeps its history; a resumed run
    drops the rows at and after the iteration it resumes from and continues the file. The
    plot is drawn from the CSV file at the end, so it covers every resumed part of a run.
    """

    def __init__(
        self,
        paths: LogPaths | None,
        test_columns: Sequence[Sequence[TestColumn]],
        *,
        stream: TextIO | None = None,
        tensorboard: bool = True,
        title: str = "",
    ) -> None:
        self.paths = paths
        self.stream = stream
        self.title = title
        self.test_columns = [list(columns) for columns in test_columns]
        self.header = ["iteration", "seconds", "lr", "loss"] + [
            f"test{index}/{column.name}" for index, columns in enumerate(self.test_columns) for column in columns
        ]
        self._csv: TextIO | None = None
        self._writer: Any = None
        self._row: _Row | None = None
        self._tensorboard: Any = None
        self._want_tensorboard = tensorboard
        self._start = time.monotonic()
        self._seconds_before = 0.0

    # -- console ---------------------------------------------------------------------------

    def info(self, line: str) -> None:
        stream = self.stream if self.stream is not None else sys.stdout
        print(line, file=stream, flush=True)

    # -- records ---------------------------------------------------------------------------

    def open(self, resume_iteration: int) -> None:
        """Start (or continue, from ``resume_iteration``) the CSV file and the event files."""
        if self.paths is None:
            return
        self.paths.csv.parent.mkdir(parents=True, exist_ok=True)
        kept = self._kept_rows(resume_iteration) if resume_iteration > 0 else []
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(self.header)
        writer.writerows(kept)
        atomic_write(self.paths.csv, buffer.getvalue())
        if kept:
            self._seconds_before = float(kept[-1][1] or 0.0)
        self._csv = open(self.paths.csv, "a", newline="")  # noqa: SIM115 - closed in close()
        self._writer = csv.writer(self._csv, lineterminator="\n")
        if self._want_tensorboard:
            import tensorflow as tf

            self._tensorboard = tf.summary.create_file_writer(str(self.paths.tensorboard))

    def _kept_rows(self, before: int) -> list[list[str]]:
        if self.paths is None or not self.paths.csv.is_file():
            return []
        with open(self.paths.csv, newline="") as handle:
            rows = list(csv.reader(handle))
        if not rows or rows[0] != self.header:
            return []
        return [row for row in rows[1:] if row and row[0].isdigit() and int(row[0]) < before]

    def train(self, iteration: int, loss: float, lr: float | None = None) -> None:
        """A displayed (smoothed) training loss, and the rate of that iteration's update."""
        values = {"loss": loss} if lr is None else {"loss": loss, "lr": lr}
        self._values(iteration, dict(values))
        self._scalars(iteration, {f"train/{name}": value for name, value in values.items()})

    def test(self, iteration: int, net_index: int, values: Sequence[float]) -> None:
        named = {
            f"test{net_index}/{column.name}": value
            for column, value in zip(self.test_columns[net_index], values, strict=True)
        }
        self._values(iteration, named)
        self._scalars(iteration, named)

    def _values(self, iteration: int, values: dict[str, float | str]) -> None:
        if self._writer is None:
            return
        if self._row is not None and self._row.iteration != iteration:
            self._flush()
        if self._row is None:
            self._row = _Row(iteration)
        self._row.values.update(values)
        self._row.values["seconds"] = f"{self._seconds_before + time.monotonic() - self._start:.3f}"

    def _flush(self) -> None:
        if self._row is None or self._writer is None or self._csv is None:
            return
        row = [self._row.iteration] + [_cell(self._row.values.get(name, "")) for name in self.header[1:]]
        self._writer.writerow(row)
        self._csv.flush()
        self._row = None

    def _scalars(self, iteration: int, values: dict[str, float]) -> None:
        if self._tensorboard is None:
            return
        import tensorflow as tf
        from tensorflow.core.framework import summary_pb2

        # tf.summary.scalar lives in the tensorboard package; the event it writes is this one:
        # a float tensor tagged for TensorBoard's "scalars" plugin.
        metadata = summary_pb2.SummaryMetadata(
            plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="scalars")
        )
        with self._tensorboard.as_default():
            for name, value in values.items():
                tf.summary.write(name, tf.constant(value, tf.float32), step=iteration, metadata=metadata)

    def close(self) -> None:
        """Write the last row, close the files and draw the plot."""
        self._flush()
        if self._csv is not None:
            self._csv.close()
            self._csv = self._writer = None
        if self._tensorboard is not None:
            self._tensorboard.close()
            self._tensorboard = None
        if self.paths is not None and self.paths.csv.is_file():
            plot_log(self.paths.csv, self.paths.plot, self.title, self._loss_columns())

    def _loss_columns(self) -> set[str]:
        return {
            f"test{index}/{column.name}"
            for index, columns in enumerate(self.test_columns)
            for column in columns
            if column.loss_weight
        }


def _cell(value: float | str) -> str:
    """A float32 value with the digits that identify it (0.1, not 0.10000000149011612)."""
    return str(np.float32(value)) if isinstance(value, float) else str(value)


def plot_log(csv_path: Path, png_path: Path, title: str, loss_columns: set[str]) -> None:
    """Training loss, test losses and test scores against iterations, as a PNG (matplotlib Agg)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    with open(csv_path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    figure = Figure(figsize=(8, 5), dpi=100)
    axes = figure.add_subplot()
    scores = axes.twinx()
    colors = iter(["tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown", "tab:pink", "tab:olive"] * 8)
    plotted_scores = False
    for name in rows[0].keys() if rows else []:
        points = _series(rows, name) if name not in ("iteration", "seconds", "lr") else []
        if not points:
            continue
        xs, ys = zip(*points, strict=True)
        label = name.replace("/", " ")
        if name == "loss":
            axes.plot(xs, ys, label="train loss", color="tab:blue", linewidth=1)
        elif name in loss_columns:
            axes.plot(xs, ys, label=label, color=next(colors), marker=".", linewidth=1)
        else:
            scores.plot(xs, ys, label=label, color=next(colors), marker="o", linestyle="--", linewidth=1)
            plotted_scores = True
    axes.set_xlabel("iteration")
    axes.set_ylabel("loss")
    if plotted_scores:
        scores.set_ylabel("test score (accuracy)")
    else:
        scores.set_visible(False)
    handles, labels = axes.get_legend_handles_labels()
    score_handles, score_labels = scores.get_legend_handles_labels()
    if handles or score_handles:
        scores.legend(handles + score_handles, labels + score_labels, loc="upper right", fontsize="small")
    if title:
        axes.set_title(title)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    atomic_write(png_path, buffer.getvalue())


def _series(rows: Sequence[dict[str, str]], name: str) -> list[tuple[int, float]]:
    points = []
    for row in rows:
        value = row.get(name, "")
        if value not in ("", None):
            points.append((int(row["iteration"]), float(value)))
    return points


def as_float32(value: Any) -> np.ndarray:
    """A backend tensor as a float32 numpy array (bfloat16 tensors cannot be read directly)."""
    return np.asarray(keras.ops.convert_to_numpy(keras.ops.cast(value, "float32")))


def format_value(value: float) -> str:
    """A number as Caffe's ``LOG(INFO) << float`` prints it (6 significant digits)."""
    return f"{value:.6g}"


def output_lines(
    kind: str, outputs: Sequence[tuple[str, float, np.ndarray]], start: int = 0
) -> tuple[list[str], list[float]]:
    """Caffe's ``"    Train net output #k: name = v (* w = w·v loss)"`` lines, one per element.

    ``outputs`` holds (blob name, loss weight, values) in Caffe's output order; returns the
    lines and the values in the same order.
    """
    lines, values = [], []
    index = start
    for name, weight, array in outputs:
        for value in np.asarray(array, dtype=np.float32).reshape(-1):
            text = f"    {kind} net output #{index}: {name} = {format_value(float(value))}"
            if weight:
                text += f" (* {format_value(weight)} = {format_value(float(np.float32(weight) * value))} loss)"
            lines.append(text)
            values.append(float(value))
            index += 1
    return lines, values
