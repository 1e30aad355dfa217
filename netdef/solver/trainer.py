"""``netdef.Solver``: Caffe's ``caffe train`` on Keras's own fit loop.

A Caffe iteration is ``iter_size`` forward/backward passes and one update; here it is
``iter_size`` Keras steps, so ``model.fit(dataset, steps_per_epoch=(max_iter − iter) ×
iter_size)`` from a dataset positioned at batch ``iter × iter_size`` is Caffe's
``Step(max_iter − iter)``, and the callbacks of :mod:`netdef.solver.callbacks` do after every
``iter_size``-th step what Caffe's loop does between iterations (display, test, snapshot,
signals). The model is
:class:`~netdef.solver.net_model.CaffeTrainingModel` (the loss is Caffe's objective), the
optimizer :func:`~netdef.solver.optimizers.caffe_optimizer` (Caffe's update rules and lr
policies), the data :func:`~netdef.data.pipeline.net_dataset` (each batch a function of
seed and batch index).

The nets are found as ``Solver::InitTrainNet``/``InitTestNets`` find them: exactly one of
``net``, ``net_param``, ``train_net``, ``train_net_param`` is the training net (TRAIN phase,
merged with the net's own ``state`` and the solver's ``train_state``); the test nets are
each ``test_net_param``, each ``test_net`` file, then as many TEST-phase copies of the
generic net as ``test_iter`` has entries left, each with its ``test_state``. Paths are
opened from the working directory, as Caffe opens them.

Resuming is exact: a snapshot holds the weights, the optimizer's history and the
iteration; the data pipeline restarts at batch ``iter × iter_size`` (every batch, random
crops and mirrors included, is a function of the seed and its index) and random layers are
reseeded from the iteration, so a run interrupted and resumed reaches the weights of the
uninterrupted run.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import secrets
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import keras
import numpy as np

from netdef.data.pipeline import net_dataset
from netdef.errors import NetdefError, SolverError, SourceLocation
from netdef.fillers import initialize_weights
from netdef.ir import Net
from netdef.keras import layout as lay
from netdef.keras.compiler import Compiled, model_outputs
from netdef.keras.weights import CONVERTERS, blob_variables, caffe_blobs, load_caffe_weights
from netdef.load import load_net, load_solver
from netdef.proto import netdef_pb2 as pb
from netdef.prototxt import read_net
from netdef.solver import callbacks as cb
from netdef.solver.devices import Placement, place, precision, select_backend
from netdef.solver.net_model import CaffeTrainingModel, compile_training_net, learnable_variables, param_rules
from netdef.solver.optimizers import caffe_optimizer
from netdef.solver.schedules import learning_rate_schedule
from netdef.solver.snapshot import (
    EXTENSIONS,
    HDF5,
    SolverState,
    history_blobs,
    learned_net_path,
    read_solver_state,
    remove_partial_snapshots,
    restore_history,
    snapshot_filename,
    write_snapshot,
)

SolverSource = str | os.PathLike[str] | pb.SolverParameter
TRAIN_NET_FIELDS = ("net", "net_param", "train_net", "train_net_param")
#: The models train channels-last at their boundary too: the pipeline transposes each batch
#: in its own threads, so no training step pays for a Permute of its input (snapshots and
#: weights stay in Caffe's blob shapes either way).
TRAINING_LAYOUT = lay.CHANNELS_LAST
IN_MEMORY = "<SolverParameter>"


# --- the nets of a solver -------------------------------------------------------------------


@dataclass
class NetChoice:
    """Where one of the solver's nets comes from and the NetState it is built with."""

    #: A path (opened from the working directory) or an inline NetParameter.
    source: str | pb.NetParameter
    #: Caffe's words for it: "net file: x", "test_net_param", ...
    description: str
    state: pb.NetState


@dataclass
class SolverNets:
    train: NetChoice
    tests: list[NetChoice] = field(default_factory=list)


def _field_location(file: str, name: str, value: str | None = None) -> SourceLocation:
    """The line of ``name: "value"`` in the solver file, for errors about that field."""
    if file == IN_MEMORY or not Path(file).is_file():
        return SourceLocation(file)
    pattern = re.compile(rf"^\s*{name}\s*:\s*\"?{re.escape(value) if value else ''}")
    for number, line in enumerate(Path(file).read_text(errors="replace").splitlines(), start=1):
        match = pattern.search(line)
        if match:
            return SourceLocation(file, number, match.start(0) + len(line) - len(line.lstrip()) + 1)
    return SourceLocation(file)


def _net_file(solver_file: str, name: str, path: str) -> str:
    if not Path(path).is_file():
        raise SolverError(
            f"{name}: the net file {path} does not exist",
            location=_field_location(solver_file, name, path),
            hint=f"Caffe opens the paths of a solver from the working directory ({os.getcwd()})",
        )
    return path


def _state(phase: int, own: pb.NetState, extra: pb.NetState | None) -> pb.NetState:
    """Solver defaults ← the net's own state ← train_state/test_state, as Caffe merges them."""
    state = pb.NetState(phase=phase)
    state.MergeFrom(own)
    if extra is not None:
        state.MergeFrom(extra)
    return state


def _own_state(source: str | pb.NetParameter) -> pb.NetState:
    return source.state if isinstance(source, pb.NetParameter) else read_net(source).message.state


def resolve_nets(param: pb.SolverParameter, file: str = IN_MEMORY) -> SolverNets:
    """The training and test nets of a solver, by ``Solver::InitTrainNet``/``InitTestNets``."""
    given = [name for name in TRAIN_NET_FIELDS if param.HasField(name)]
    if len(given) != 1:
        raise SolverError(
            "the solver must name exactly one training net",
            location=SourceLocation(file),
            expected="one of " + ", ".join(TRAIN_NET_FIELDS),
            received=", ".join(given) if given else "none",
        )
    (name,) = given
    if name.endswith("_param"):
        train_source: str | pb.NetParameter = getattr(param, name)
        description = name
    else:
        train_source = _net_file(file, name, getattr(param, name))
        description = f"{name} file: {train_source}"
    train_extra = param.train_state if param.HasField("train_state") else None
    nets = SolverNets(NetChoice(train_source, description, _state(pb.TRAIN, _own_state(train_source), train_extra)))

    generic = param.net_param if param.HasField("net_param") else param.net if param.HasField("net") else None
    specific = len(param.test_net_param) + len(param.test_net)
    iterations = len(param.test_iter)
    if (iterations < specific) if generic is not None else (iterations != specific):
        raise SolverError(
            "test_iter must be given once per test net",
            location=_field_location(file, "test_iter"),
            expected=f"{specific}{' or more' if generic is not None else ''} test_iter entries",
            received=str(iterations),
        )
    sources: list[tuple[str | pb.NetParameter, str]] = [(net, "test_net_param") for net in param.test_net_param]
    sources += [(_net_file(file, "test_net", path), f"test_net file: {path}") for path in param.test_net]
    if generic is not None:
        generic_name = "net_param" if isinstance(generic, pb.NetParameter) else f"net file: {generic}"
        sources += [(generic, generic_name)] * (iterations - specific)
    if len(param.test_state) and len(param.test_state) != len(sources):
        raise SolverError(
            "test_state must be given once per test net, or not at all",
            location=_field_location(file, "test_state"),
            expected=str(len(sources)),
            received=str(len(param.test_state)),
        )
    if sources and param.test_interval <= 0:
        raise SolverError(
            "the solver has test nets but no test_interval",
            location=SourceLocation(file),
            expected="test_interval > 0",
            received=str(param.test_interval),
        )
    for index, (source, what) in enumerate(sources):
        extra = param.test_state[index] if len(param.test_state) else None
        nets.tests.append(NetChoice(source, what, _state(pb.TEST, _own_state(source), extra)))
    return nets


def load_choice(choice: NetChoice, solver_file: str = IN_MEMORY) -> Net:
    """The IR of one of the solver's nets; errors in an inline net point at the solver file."""
    try:
        return load_net(
            choice.source, phase=choice.state.phase, stages=list(choice.state.stage), level=choice.state.level
        )
    except NetdefError as error:
        if isinstance(choice.source, pb.NetParameter):
            raise error.located(SourceLocation(solver_file)) from None
        raise


def read_solver(solver: SolverSource) -> tuple[pb.SolverParameter, str]:
    """The SolverParameter (a copy: the caller's message is not changed) and its file name."""
    if isinstance(solver, pb.SolverParameter):
        copy = pb.SolverParameter()
        copy.CopyFrom(solver)
        return copy, IN_MEMORY
    return load_solver(solver), str(solver)


def _check_solver(param: pb.SolverParameter, file: str) -> None:
    """Caffe's ``Solver::Init`` checks, as errors that name the solver file."""
    location = SourceLocation(file)
    if param.average_loss < 1:
        raise SolverError("average_loss must be at least 1", location=location, received=str(param.average_loss))
    if param.iter_size < 1:
        raise SolverError("iter_size must be at least 1", location=location, received=str(param.iter_size))
    if param.snapshot > 0 and not param.snapshot_prefix:
        raise SolverError("snapshot is set but snapshot_prefix is not", location=location)
    # Caffe probes only when snapshot > 0; the snapshot after training is written too, and a
    # run should not learn at its end that its snapshots cannot be written.
    if param.snapshot > 0 or param.snapshot_after_train:
        probe = Path(snapshot_filename(param.snapshot_prefix, 0, ".tempfile"))
        try:
            probe.touch()
            probe.unlink()
        except OSError:
            raise SolverError(
                f"cannot write to snapshot prefix '{param.snapshot_prefix}'",
                location=_field_location(file, "snapshot_prefix"),
                hint="make sure that the directory exists and is writable",
            ) from None


def _weight_files(entries: Sequence[str]) -> list[str]:
    """``weights`` entries, each possibly comma-separated (Caffe's ``LoadNetWeights``)."""
    return [name.strip() for entry in entries for name in entry.split(",") if name.strip()]


# --- the solver -----------------------------------------------------------------------------


@dataclass
class TestNet:
    """A test net: its model, how many batches a test runs and which train weights it shares."""

    net: Net
    compiled: Compiled
    iterations: int
    description: str
    #: (model output index, blob name, loss weight) of Caffe's net outputs, in its order.
    outputs: list[tuple[int, str, float]]
    #: (model output index, loss weight) of every weighted output (the test loss).
    weighted: list[tuple[int, float]]
    #: ShareTrainedLayersWith as (test variable, train variable, converter or None) triples.
    shared: list[tuple[Any, Any, Any]]
    batches: Iterator[dict[str, np.ndarray]] | None = None

    def columns(self, compute_loss: bool) -> list[cb.TestColumn]:
        columns = []
        for _, name, weight in self.outputs:
            size = int(np.prod(self.net.blob(name).shape or (1,))) if name in self.net.blob_names else 1
            names = [name] if size == 1 else [f"{name}[{k}]" for k in range(size)]
            columns += [cb.TestColumn(column, weight) for column in names]
        if compute_loss:
            columns.append(cb.TestColumn("test_loss", 1.0))
        return columns


class Solver:
    """Caffe's Solver on Keras: ``Solver(path).solve()`` trains as ``caffe train --solver path``.

    ``weights`` (files, or one comma-separated string) fine-tunes: they are copied by layer
    name after the fillers ran, replacing the solver's own ``weights``. ``gpus`` is
    ``--gpu``'s value ("all", "none", or ids); ``strategy`` gives a ``tf.distribute``
    strategy directly. ``precision`` is a Keras dtype policy ("mixed_float16", "bfloat16").
    ``max_iter``, ``level`` and ``stages`` override the solver's (``--level``/``--stage``
    go to ``train_state``, as in ``caffe train``). ``arrays`` feeds Input and MemoryData
    layers (by top name; ``test_arrays`` for the test nets, default the same). ``log_dir``
    moves the CSV log, plot and TensorBoard events from beside the snapshots; ``logs=False``
    writes none. ``stream`` receives the log lines (default stdout); ``progress`` shows a
    progress bar (default: when stderr is a terminal). ``callbacks`` are Keras callbacks
    added to every ``fit`` (their batches are Keras steps: ``iter_size`` per iteration).
    """

    def __init__(
        self,
        solver: SolverSource,
        *,
        weights: str | Sequence[str] | None = None,
        backend: str | None = None,
        gpus: str | Sequence[int] | None = None,
        precision: str | None = None,
        strategy: Any = None,
        max_iter: int | None = None,
        level: int | None = None,
        stages: Sequence[str] = (),
        arrays: Mapping[str, np.ndarray] | None = None,
        test_arrays: Mapping[str, np.ndarray] | None = None,
        log_dir: str | os.PathLike[str] | None = None,
        logs: bool = True,
        sigint_effect: str = "stop",
        sighup_effect: str = "snapshot",
        progress: bool | None = None,
        stream: TextIO | None = None,
        callbacks: Sequence[keras.callbacks.Callback] = (),
    ) -> None:
        self.backend = select_backend(backend)
        self.param, self.file = read_solver(solver)
        param = self.param
        if max_iter is not None:
            param.max_iter = max_iter
        if level is not None:
            param.train_state.level = level
        param.train_state.stage.extend(stages)
        if weights is not None:
            param.ClearField("weights")
            named = weights if isinstance(weights, str) else ",".join(weights)
            if named:
                param.weights.append(named)
        _check_solver(param, self.file)
        self.signals = cb.SignalRequests(sigint_effect, sighup_effect)
        self.callbacks = list(callbacks)
        self.stream = stream
        self.progress = progress
        self.arrays = dict(arrays or {})
        self.test_arrays = dict(test_arrays) if test_arrays is not None else self.arrays
        self.schedule = learning_rate_schedule(param)

        fresh_seed = param.random_seed < 0
        self.seed = secrets.randbelow(2**31) if fresh_seed else int(param.random_seed)
        choices = resolve_nets(param, self.file)
        self.net = load_choice(choices.train, self.file)
        test_nets = [load_choice(choice, self.file) for choice in choices.tests]
        self.placement: Placement = place(param, gpus, self.backend, strategy)
        self.weight_files = _weight_files(param.weights)

        notes: list[str] = []
        with _building(precision, self.placement.scope()):
            keras.utils.set_random_seed(self.seed)
            self.compiled = compile_training_net(self.net, TRAINING_LAYOUT)
            replicated = self.placement.replicas > 1
            self.model = (ReplicaMeanModel if replicated else CaffeTrainingModel)(self.compiled)
            notes += self._initialize(self.compiled)
            rules, shared = param_rules(self.compiled)
            self.model.compile(optimizer=caffe_optimizer(param, rules, shared))
            self.learnables = learnable_variables(self.compiled)
            self.model.optimizer.build(self.learnables)
        test_scope = self.placement.scope() if self.placement.replicas == 1 else contextlib.nullcontext()
        self.tests: list[TestNet] = []
        with _building(precision, test_scope):
            for choice, net, iterations in zip(choices.tests, test_nets, param.test_iter, strict=True):
                compiled = compile_training_net(net, TRAINING_LAYOUT)
                notes += self._initialize(compiled)
                self.tests.append(self._test_net(net, compiled, iterations, choice.description))

        self.iter = 0
        self.current_step = 0
        self.requested_early_exit = False
        self.failure: SolverError | None = None
        self.iteration_loss = math.nan
        self.pending_losses: list[tuple[int, list[Any]]] = []
        self.smoothed_loss = 0.0
        self.last_snapshot: str | None = None
        self._losses: list[float] = []
        self._start_iter = 0
        self._last_logs: dict[str, Any] = {}
        self._random_states = [v for v in self.model.non_trainable_variables if v.path.endswith("seed_generator_state")]

        paths = cb.LogPaths.of(param.snapshot_prefix, log_dir) if logs else None
        self.log = cb.TrainingLog(
            paths,
            [test.columns(param.test_compute_loss) for test in self.tests],
            stream=stream,
            tensorboard=self.backend == "tensorflow",
            title=self.net.name,
        )
        for partial in remove_partial_snapshots(param.snapshot_prefix) if param.snapshot_prefix else []:
            self.log.info(f"removed {partial}, a snapshot an interrupted run did not finish writing")
        if fresh_seed:
            self.log.info(f"random_seed is -1: seeding with {self.seed} (set random_seed to repeat this run)")
        for line in self.placement.describe(self._batch_sizes()):
            self.log.info(line)
        for line in choices_log(choices):
            self.log.info(line)
        for note in notes:
            self.log.info(note)
        for warning in self._unsupported_fields():
            self.log.info(f"warning: {warning}")
        if logs and self.backend != "tensorflow":
            self.log.info(f"TensorBoard events are written on the TensorFlow backend only (running on {self.backend})")

    # -- building --------------------------------------------------------------------------

    def _initialize(self, compiled: Compiled) -> list[str]:
        """Fillers (seeded by random_seed), then the ``weights`` files by layer name."""
        initialize_weights(compiled, self.seed)
        notes = []
        for path in self.weight_files:
            notes.append(f"Finetuning from {path}")
            notes += [f"  {note}" for note in load_caffe_weights(compiled, path)]
        return notes

    def _test_net(self, net: Net, compiled: Compiled, iterations: int, description: str) -> TestNet:
        outputs, weighted = caffe_outputs(net, compiled)
        return TestNet(net, compiled, iterations, description, outputs, weighted, _sharing(self.compiled, compiled))

    def _batch_sizes(self) -> list[int]:
        return [node.tops[0].shape[0] for node in self.net.nodes if node.is_source and node.tops and node.tops[0].shape]

    def _unsupported_fields(self) -> list[str]:
        warnings = []
        if self.param.snapshot_diff:
            warnings.append(
                "snapshot_diff: Keras keeps no gradients after an update, so snapshots hold the weights only"
            )
        if self.param.debug_info:
            warnings.append(
                "debug_info: each display shows the mean |value| of every learnable blob; "
                "Caffe's per-blob forward/backward norms and diffs are not available"
            )
        return warnings

    # -- Caffe's Solve and Step ------------------------------------------------------------

    def solve(self, resume: str | os.PathLike[str] | None = None) -> None:
        """Train to ``max_iter`` (from a ``.solverstate`` when ``resume`` is given), as ``Solver::Solve``.

        Raises :class:`SolverError` when the loss becomes NaN or infinite (the last good
        snapshot stays the last one written).
        """
        self.log.info(f"Solving {self.net.name}")
        self.log.info(f"Learning Rate Policy: {self.param.lr_policy}")
        self.requested_early_exit = False
        self.failure = None
        if resume is not None:
            self.log.info(f"Restoring previous solver status from {resume}")
            self.restore(resume)
        self.log.open(self.iter)
        try:
            with self.signals:
                self._solve()
        finally:
            self.log.close()
        if self.failure is not None:
            raise self.failure

    def _solve(self) -> None:
        param = self.param
        self.step(param.max_iter - self.iter)
        if self.failure is not None:
            return
        if param.snapshot_after_train and (not param.snapshot or self.iter % param.snapshot != 0):
            self.snapshot()
            if self.failure is not None:
                return
        if self.requested_early_exit:
            self.log.info("Optimization stopped early.")
            return
        if param.display and self.iter % param.display == 0:
            loss = self._forward_loss()
            self._update_smoothed_loss(loss)
            self.log.info(f"Iteration {self.iter}, loss = {cb.format_value(self.smoothed_loss)}")
            self.log.train(self.iter, self.smoothed_loss)
        if param.test_interval and self.iter % param.test_interval == 0:
            self.test_all()
        self.log.info("Optimization Done.")

    def step(self, iters: int) -> None:
        """Run ``iters`` iterations (``Solver::Step``): ``iters × iter_size`` Keras steps, one epoch."""
        start = self.iter
        stop = start + iters
        self._losses = []
        self.smoothed_loss = 0.0
        self._start_iter = start
        if iters <= 0:
            return
        if self.test_due(start):
            self.test_all()
            if self.requested_early_exit:
                return
        callbacks: list[keras.callbacks.Callback] = []
        if self._random_states:
            callbacks.append(cb.Reseed(self, self._random_states))
        callbacks += [cb.IterationLoss(self), cb.StopOnNaN(self), cb.Display(self), cb.Snapshots(self)]
        callbacks.append(cb.Tests(self, stop))
        if self.progress or (self.progress is None and sys.stderr.isatty()):
            callbacks.append(cb.Progress(self, stop, sys.stderr))
        callbacks += self.callbacks
        with self._device():
            self.model.fit(
                self._train_dataset(start),
                epochs=1,
                steps_per_epoch=iters * self.param.iter_size,
                callbacks=callbacks,
                verbose=0,
                shuffle=False,
            )
        self.read_losses()

    def _device(self) -> contextlib.AbstractContextManager[Any]:
        # PyTorch places new tensors by a global device set only while the scope is open.
        return self.placement.scope() if self.placement.torch_device is not None else contextlib.nullcontext()

    def _train_dataset(self, iteration: int) -> Any:
        """The training batches from iteration ``iteration`` on; with several replicas each
        step takes one prototxt-sized batch per replica, as one global batch."""
        replicas = self.placement.replicas
        skip = iteration * self.param.iter_size * replicas
        dataset = net_dataset(self.net, arrays=self.arrays, seed=self.seed, skip_batches=skip, layout=TRAINING_LAYOUT)
        if replicas == 1:
            return dataset
        import tensorflow as tf

        def merge(batch: dict[str, Any]) -> dict[str, Any]:
            return {name: tf.reshape(value, (-1, *value.shape[2:])) for name, value in batch.items()}

        return dataset.batch(replicas, drop_remainder=True).map(merge)

    def test_due(self, iteration: int) -> bool:
        interval = self.param.test_interval
        return bool(interval) and iteration % interval == 0 and (iteration > 0 or self.param.test_initialization)

    # -- what happens between iterations (called by the callbacks) -------------------------

    def finish_iteration(self, iteration: int, losses: list[Any], logs: dict[str, Any]) -> None:
        """Iteration ``iteration`` made its update: count it; its loss is read later."""
        self.pending_losses.append((iteration, losses))
        self._last_logs = logs
        self.iter = iteration + 1

    def read_losses(self) -> bool:
        """Read the losses of the iterations done since the last read, in order: smooth them
        (``UpdateSmoothedLoss``) and stop at a NaN or infinite one. False once training failed."""
        if self.failure is not None:
            return False
        if not self.pending_losses:
            return True
        tensors = [loss for _, losses in self.pending_losses for loss in losses]
        values = cb.as_float32(keras.ops.stack(tensors)).reshape(len(self.pending_losses), -1).mean(axis=1)
        pending, self.pending_losses = self.pending_losses, []
        for (iteration, _), value in zip(pending, values, strict=True):
            loss = float(value)
            self.iteration_loss = loss
            if not math.isfinite(loss):
                self.fail_on_loss(iteration, loss)
                self.model.stop_training = True
                return False
            self._update_smoothed_loss(loss, iteration)
        return True

    def _update_smoothed_loss(self, loss: float, iteration: int | None = None) -> None:
        """``Solver::UpdateSmoothedLoss``: the mean of the last ``average_loss`` losses."""
        average = self.param.average_loss
        if len(self._losses) < average:
            self._losses.append(loss)
            size = len(self._losses)
            self.smoothed_loss = (self.smoothed_loss * (size - 1) + loss) / size
        else:
            index = ((self.iter if iteration is None else iteration) - self._start_iter) % average
            self.smoothed_loss += (loss - self._losses[index]) / average
            self._losses[index] = loss

    def learning_rate(self, iteration: int) -> float:
        """The rate of the update made at ``iteration`` (Caffe's ``GetLearningRate``)."""
        return float(keras.ops.convert_to_numpy(self.schedule(iteration)))

    def display(self, iteration: int) -> None:
        """Caffe's display block of iteration ``iteration`` (after its update)."""
        self.log.info(f"Iteration {iteration}, loss = {cb.format_value(self.smoothed_loss)}")
        outputs = [
            (output.name, output.loss_weight, cb.as_float32(self._last_logs[output.key]))
            for output in self.model.net_outputs
        ]
        lines, _ = cb.output_lines("Train", outputs)
        for line in lines:
            self.log.info(line)
        if self.param.debug_info:
            for line in self._debug_lines():
                self.log.info(line)
        rate = self.learning_rate(iteration)
        self.log.info(f"Iteration {iteration}, lr = {cb.format_value(rate)}")
        self.log.train(iteration, self.smoothed_loss, rate)

    def _debug_lines(self) -> list[str]:
        by_blob = {(binding.node.name, link.blob): v for binding, link, v in blob_variables(self.compiled)}
        lines = []
        for node, blob in self.compiled.net.learnable():
            variable = by_blob.get((node.name, blob.index))
            if variable is not None:
                mean = float(np.mean(np.abs(keras.ops.convert_to_numpy(variable))))
                lines.append(f"    [Update] Layer {node.name}, param blob {blob.index} data: {cb.format_value(mean)}")
        return lines

    def fail_on_loss(self, iteration: int, loss: float) -> None:
        kept = f"the last snapshot is {self.last_snapshot}" if self.last_snapshot else "no snapshot was written"
        self.failure = SolverError(
            f"iteration {iteration}: the loss is {loss}; training stopped and {kept}",
            location=SourceLocation(self.file),
            hint="lower base_lr, or set clip_gradients",
        )
        self.log.info(f"Iteration {iteration}, loss = {loss}: stopping ({kept})")

    def _forward_loss(self) -> float:
        """One forward pass of the train net on the next batch (Solve's final display).

        Called eagerly: tracing a function for one pass would cost more than the pass.
        """
        skip = self.iter * self.param.iter_size * self.placement.replicas
        dataset = net_dataset(self.net, arrays=self.arrays, seed=self.seed, skip_batches=skip, layout=TRAINING_LAYOUT)
        batch = next(dataset.take(1).as_numpy_iterator())
        with self._device():
            outputs = self.model(batch)
            loss = CaffeTrainingModel.compute_loss(self.model, y_pred=outputs)
        return float(cb.as_float32(loss))

    # -- snapshots -------------------------------------------------------------------------

    def snapshot(self) -> None:
        """``Solver::Snapshot``: weights and solver state at the current iteration.

        Weights that hold a NaN or an infinity are not written: the run stops instead, so
        that the last snapshot on disk is always one training can resume from.
        """
        if not all(np.isfinite(keras.ops.convert_to_numpy(v)).all() for v in self.learnables):
            self.failure = SolverError(
                f"iteration {self.iter}: the weights hold NaN or infinite values; not snapshotting them",
                location=SourceLocation(self.file),
                hint=f"the last snapshot is {self.last_snapshot}" if self.last_snapshot else "lower base_lr",
            )
            self.model.stop_training = True
            return
        fmt = self.param.snapshot_format
        prefix = self.param.snapshot_prefix
        model_ext, state_ext = EXTENSIONS[fmt]
        kind = "HDF5 file" if fmt == HDF5 else "binary proto file"
        self.log.info(f"Snapshotting to {kind} {snapshot_filename(prefix, self.iter, model_ext)}")
        self.log.info(f"Snapshotting solver state to {kind} {snapshot_filename(prefix, self.iter, state_ext)}")
        step = self.schedule.current_step(self.iter - 1) if self.iter > 0 else self.current_step
        state = SolverState(self.iter, current_step=step, history=self._history())
        _, self.last_snapshot = write_snapshot(prefix, fmt, caffe_blobs(self.compiled), self.net, state)

    def _optimizer(self) -> Any:
        """The Caffe optimizer (Keras wraps it in a LossScaleOptimizer under mixed_float16)."""
        optimizer = self.model.optimizer
        return getattr(optimizer, "inner_optimizer", optimizer)

    def _history(self) -> list[np.ndarray]:
        return history_blobs(self.compiled, self._optimizer(), self.learnables)

    def restore(self, state_file: str | os.PathLike[str]) -> None:
        """``Solver::Restore``: iteration, weights (``learned_net``), history and ``current_step``."""
        file = str(state_file)
        state = read_solver_state(file)
        weights = learned_net_path(state, file)
        for note in load_caffe_weights(self.compiled, weights):
            self.log.info(f"  {note}")
        restore_history(self.compiled, self._optimizer(), self.learnables, state.history, file)
        self._optimizer().set_caffe_iteration(state.iter)
        self.iter = state.iter
        self.current_step = state.current_step
        policy_step = self.schedule.current_step(state.iter - 1) if state.iter > 0 else 0
        if state.current_step != policy_step:
            self.log.info(
                f"note: the state's current_step {state.current_step} is not what lr_policy "
                f"'{self.param.lr_policy}' gives at iteration {state.iter} ({policy_step}); the rate follows the policy"
            )
        self.log.info(f"{self.param.type}Solver: restored iteration {state.iter} and history from {file}")

    # -- testing ---------------------------------------------------------------------------

    def test_all(self) -> None:
        for index in range(len(self.tests)):
            if self.requested_early_exit:
                break
            self.test(index)

    def test(self, index: int) -> None:
        """``Solver::Test``: ``test_iter`` forward passes with the training weights, outputs averaged."""
        test = self.tests[index]
        self.log.info(f"Iteration {self.iter}, Testing net (#{index})")
        for target, source, convert in test.shared:
            target.assign(source if convert is None else convert(keras.ops.convert_to_numpy(source)))
        if test.batches is None:
            dataset = net_dataset(test.net, arrays=self.test_arrays, seed=self.seed, layout=TRAINING_LAYOUT)
            test.batches = dataset.as_numpy_iterator()
        sums: list[np.ndarray] | None = None
        loss = np.float32(0)
        for _ in range(test.iterations):
            self._handle_requests()
            if self.requested_early_exit:
                break
            with self._device():
                results = test.compiled.model.predict_on_batch(next(test.batches))
            results = list(results) if isinstance(results, (list, tuple)) else [results]
            if self.param.test_compute_loss:
                loss += sum(np.float32(w) * np.sum(results[i], dtype=np.float32) for i, w in test.weighted)
            scores = [np.asarray(results[i], dtype=np.float32).reshape(-1) for i, _, _ in test.outputs]
            sums = scores if sums is None else [total + score for total, score in zip(sums, scores, strict=True)]
        if self.requested_early_exit:
            self.log.info("Test interrupted.")
            return
        values: list[float] = []
        if self.param.test_compute_loss:
            loss = loss / np.float32(test.iterations)
            self.log.info(f"Test loss: {cb.format_value(float(loss))}")
        if sums is not None:
            means = [total / np.float32(test.iterations) for total in sums]
            lines, values = cb.output_lines(
                "Test", [(name, weight, mean) for (_, name, weight), mean in zip(test.outputs, means, strict=True)]
            )
            for line in lines:
                self.log.info(line)
        if self.param.test_compute_loss:
            values.append(float(loss))
        if sums is not None:
            self.log.test(self.iter, index, values)

    def _handle_requests(self) -> None:
        """Signals during a test: snapshot now, or stop (Caffe polls once per test batch)."""
        request = self.signals.poll()
        while request != "none":
            if request == "snapshot":
                self.snapshot()
            elif request == "stop":
                self.requested_early_exit = True
            request = self.signals.poll()


class ReplicaMeanModel(CaffeTrainingModel):
    """The training model under ``tf.distribute`` with several replicas.

    The strategy sums the replicas' gradients; Caffe's multi-GPU solver averages them (NCCL
    sums the diffs and scales by 1/solver_count). Keras's own losses divide each replica's
    loss by the replica count for that reason; Caffe's objective does the same here, and the
    logged loss stays the unscaled one (Keras averages the replicas' logs).
    """

    def compute_loss(
        self, x: Any = None, y: Any = None, y_pred: Any = None, sample_weight: Any = None, training: bool = True
    ) -> Any:
        from keras.src.losses.loss import scale_loss_for_distribution

        return scale_loss_for_distribution(super().compute_loss(x, y, y_pred, sample_weight, training))

    def compute_metrics(self, x: Any, y: Any, y_pred: Any, sample_weight: Any = None) -> dict[str, Any]:
        from keras.src.losses.loss import unscale_loss_for_distribution

        results = super().compute_metrics(x, y, y_pred, sample_weight)
        results["loss"] = unscale_loss_for_distribution(results["loss"])
        return results


@contextlib.contextmanager
def _building(policy: str | None, scope: contextlib.AbstractContextManager[Any]) -> Iterator[None]:
    with precision(policy), scope:
        yield


def _sharing(train: Compiled, test: Compiled) -> list[tuple[Any, Any, Any]]:
    """``Net::ShareTrainedLayersWith`` as variable copies: each test layer's blobs take the
    train layer's of the same name (Caffe shares memory; Keras models cannot share across
    two functional graphs, so a test copies the variables first)."""
    train_blobs = {(binding.node.name, link.blob): (link, v) for binding, link, v in blob_variables(train)}
    pairs = []
    for binding, link, variable in blob_variables(test):
        found = train_blobs.get((binding.node.name, link.blob))
        if found is None:
            continue
        source_link, source = found
        shape = tuple(binding.node.blobs[link.blob].shape)
        train_shape = tuple(source.shape)
        same = (
            source_link.convert == link.convert
            and source_link.args == link.args
            and train_shape == tuple(variable.shape)
        )
        if same:
            pairs.append((variable, source, None))
            continue
        if int(np.prod(train_shape)) != int(np.prod(variable.shape)):
            raise SolverError(
                f"the test net's blob {link.blob} does not fit the train net's",
                location=binding.node.location,
                layer=binding.node.name,
                layer_type=binding.node.type,
                expected=str(shape),
            )

        def convert(value: np.ndarray, source_link: Any = source_link, link: Any = link, shape: Any = shape) -> Any:
            caffe = CONVERTERS[source_link.convert].to_caffe(value, source_link.args, shape)
            return CONVERTERS[link.convert].to_keras(caffe, link.args)

        pairs.append((variable, source, convert))
    return pairs


def caffe_outputs(net: Net, compiled: Compiled) -> tuple[list[tuple[int, str, float]], list[tuple[int, float]]]:
    """Caffe's net outputs of a compiled net, as (model output index, blob name, loss weight)
    in Caffe's order (by name), and (model output index, loss weight) of every weighted
    output, which add up to the net's loss.

    ``compile_training_net`` appends loss-weighted blobs that other layers read to the net's
    outputs; they count in the loss, but Caffe does not show them.
    """
    values = model_outputs(net)
    shown = sorted(enumerate(values), key=lambda item: item[1].blob)
    outputs = [(index, value.blob, value.loss_weight) for index, value in shown]
    known = {value.key for value in values}
    inner = [value for value in net.values.values() if value.loss_weight and value.key not in known]
    everything = values + inner[: max(0, len(compiled.model.outputs) - len(values))]
    weighted = [(index, value.loss_weight) for index, value in enumerate(everything) if value.loss_weight]
    return outputs, weighted


def choices_log(choices: SolverNets) -> list[str]:
    lines = [f"Creating training net from {choices.train.description}"]
    lines += [f"Creating test net (#{i}) specified by {choice.description}" for i, choice in enumerate(choices.tests)]
    return lines
