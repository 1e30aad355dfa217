"""``netdef train``, ``netdef test`` and ``netdef time``: Caffe's ``caffe train|test|time``.

The verbs take Caffe's flags (``--solver``, ``--model``, ``--weights``, ``--snapshot``,
``--gpu``, ``--iterations``, ``--phase``, ``--level``, ``--stage``, ``--sigint_effect``,
``--sighup_effect``) and print what Caffe logs, line for line where Caffe's lines carry
numbers: ``Batch k, accuracy = v`` and the averages for ``test``, the average forward,
backward and per-layer times for ``time``.

``time`` measures, per iteration, one forward pass and one forward-backward pass of the
compiled model (each a traced function: ``tf.function`` on TensorFlow, eager PyTorch
under ``no_grad`` for the forward); Caffe's backward is timed separately from its forward,
an autodiff framework runs backward only after a forward, so the backward time reported is
the forward-backward time minus the forward time. Per-layer forward times come from
calling each Keras layer, eagerly, on the inputs it received in a recorded forward pass,
summed over the Keras layers one Caffe layer compiled to (the layout permutes netdef
inserts are listed under their own names); eager calls pay Python's dispatch cost, so
these times add up to more than the traced forward pass. A data layer's time is that of
taking one batch from the input pipeline.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from netdef.errors import SolverError

if TYPE_CHECKING:
    from netdef.ir import Net
    from netdef.keras.compiler import Compiled


def _stages(values: Sequence[str]) -> list[str]:
    return [stage for value in values for stage in value.split(",") if stage]


def register(verbs: Any, common: argparse.ArgumentParser) -> None:
    """Add ``train``, ``test`` and ``time`` to the ``netdef`` parser."""
    train = verbs.add_parser("train", parents=[common], help="train or fine-tune a net with a Caffe solver")
    train.add_argument("--solver", required=True, help="the solver definition (prototxt)")
    train.add_argument(
        "--weights", help="comma-separated .caffemodel/.h5 files to fine-tune from (not with --snapshot)"
    )
    train.add_argument("--snapshot", help="a .solverstate or .solverstate.h5 to resume from")
    _device_options(train)
    train.add_argument("--level", type=int, default=None, help="train_state level")
    train.add_argument("--stage", action="append", default=[], help="train_state stages, comma-separated")
    train.add_argument("--sigint_effect", "--sigint-effect", default="stop", choices=("stop", "snapshot", "none"))
    train.add_argument("--sighup_effect", "--sighup-effect", default="snapshot", choices=("snapshot", "stop", "none"))
    train.add_argument(
        "--precision", choices=("float32", "mixed_float16", "bfloat16"), default=None, help="Keras dtype policy"
    )
    train.add_argument(
        "--log-dir",
        "--log_dir",
        dest="log_dir",
        help="where the CSV log, plot and TensorBoard events go (default: beside the snapshots)",
    )
    train.set_defaults(run=cmd_train)

    test = verbs.add_parser("test", parents=[common], help="score a net: average its outputs over batches")
    test.add_argument("--model", required=True, help="the net (prototxt)")
    test.add_argument("--weights", required=True, help="comma-separated .caffemodel/.h5 files")
    test.add_argument("--iterations", type=int, default=50, help="batches to run (default 50)")
    test.add_argument("--phase", default="TEST", type=str.upper, choices=("TRAIN", "TEST"), help="default TEST")
    _state_options(test)
    test.set_defaults(run=cmd_test)

    time_ = verbs.add_parser("time", parents=[common], help="time the forward and backward passes of a net")
    time_.add_argument("--model", required=True, help="the net (prototxt)")
    time_.add_argument("--weights", help="optional weights (the timings do not depend on them)")
    time_.add_argument("--iterations", type=int, default=50, help="passes to time (default 50)")
    time_.add_argument("--phase", default="TRAIN", type=str.upper, choices=("TRAIN", "TEST"), help="default TRAIN")
    _state_options(time_)
    time_.set_defaults(run=cmd_time)


def _device_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--gpu", help="all, none, or GPU ids (0,1); default: the solver's device_id when a GPU is visible"
    )


def _state_options(parser: argparse.ArgumentParser) -> None:
    _device_options(parser)
    parser.add_argument("--level", type=int, default=0, help="NetState level")
    parser.add_argument("--stage", action="append", default=[], help="NetState stages, comma-separated")


def cmd_train(args: argparse.Namespace) -> int:
    if args.snapshot and args.weights:
        raise SolverError(
            "give a snapshot to resume training or weights to fine-tune, but not both",
            received=f"--snapshot {args.snapshot} --weights {args.weights}",
        )
    from netdef.solver.devices import parse_gpus
    from netdef.solver.trainer import Solver

    solver = Solver(
        args.solver,
        # Caffe's train: a resumed run does not load the solver's own weights.
        weights=() if args.snapshot else args.weights,
        gpus=parse_gpus(args.gpu),
        precision=args.precision,
        level=args.level,
        stages=_stages(args.stage),
        log_dir=args.log_dir,
        sigint_effect=args.sigint_effect,
        sighup_effect=args.sighup_effect,
    )
    if args.snapshot:
        solver.log.info(f"Resuming from {args.snapshot}")
    solver.log.info("Starting Optimization")
    solver.solve(resume=args.snapshot)
    return 0


# --- test ---------------------------------------------------------------------------------


def _placed_net(args: argparse.Namespace, weights: str | None) -> tuple[Net, Compiled, Any]:
    """The net in ``--phase``, compiled on the chosen device, with ``--weights`` loaded."""
    from netdef.keras.weights import load_caffe_weights
    from netdef.load import load_net
    from netdef.proto import netdef_pb2 as pb
    from netdef.solver.devices import parse_gpus, place, select_backend
    from netdef.solver.net_model import compile_training_net

    net = load_net(args.model, phase=args.phase, stages=_stages(args.stage), level=args.level)
    for warning in net.warnings:
        print(f"netdef: warning: {warning}", file=sys.stderr)
    placement = place(pb.SolverParameter(), parse_gpus(args.gpu), select_backend(None))
    print(placement.describe()[0])
    with placement.scope():
        compiled = compile_training_net(net)
        for path in (weights or "").split(","):
            if path.strip():
                for note in load_caffe_weights(compiled, path.strip()):
                    print(f"netdef: note: {note}", file=sys.stderr)
    return net, compiled, placement


def _feeds(net: Net) -> dict[str, np.ndarray]:
    """Zeros for Input and MemoryData tops (Caffe's ``time`` runs such nets on their blank blobs)."""
    return {
        value.blob: np.zeros(value.shape, np.float32)
        for node in net.nodes
        if node.type in ("Input", "MemoryData")
        for value in node.tops
        if value.shape is not None
    }


def cmd_test(args: argparse.Namespace) -> int:
    """Caffe's ``test``: ``--iterations`` batches, each output element per batch, then the means."""
    from netdef.data.pipeline import net_dataset
    from netdef.solver.callbacks import format_value
    from netdef.solver.trainer import caffe_outputs

    net, compiled, placement = _placed_net(args, args.weights)
    shown, weighted = caffe_outputs(net, compiled)
    batches = net_dataset(net, arrays=_feeds(net)).as_numpy_iterator()
    print(f"Running for {args.iterations} iterations.")
    sums: list[np.ndarray] = []
    loss = np.float32(0)
    for batch_index in range(args.iterations):
        with placement.scope():
            results = compiled.model.predict_on_batch(next(batches))
        results = list(results) if isinstance(results, (list, tuple)) else [results]
        loss += sum((np.float32(w) * np.sum(results[i], dtype=np.float32) for i, w in weighted), np.float32(0))
        scores = [np.asarray(results[index], np.float32).reshape(-1) for index, _, _ in shown]
        sums = scores if batch_index == 0 else [total + score for total, score in zip(sums, scores, strict=True)]
        for (_, name, _), score in zip(shown, scores, strict=True):
            for value in score:
                print(f"Batch {batch_index}, {name} = {format_value(float(value))}")
    iterations = max(args.iterations, 1)
    print(f"Loss: {format_value(float(loss / np.float32(iterations)))}")
    for (_, name, weight), total in zip(shown, sums, strict=True):
        for value in total / np.float32(iterations):
            line = f"{name} = {format_value(float(value))}"
            if weight:
                line += f" (* {format_value(weight)} = {format_value(float(np.float32(weight) * value))} loss)"
            print(line)
    return 0


# --- time ---------------------------------------------------------------------------------


def cmd_time(args: argparse.Namespace) -> int:
    """Caffe's ``time``: average forward, backward and per-layer forward times."""
    from netdef.data.pipeline import net_dataset
    from netdef.proto import netdef_pb2 as pb
    from netdef.solver.trainer import caffe_outputs

    net, compiled, placement = _placed_net(args, args.weights)
    _, weighted = caffe_outputs(net, compiled)
    training = net.phase == pb.TRAIN
    batches = net_dataset(net, arrays=_feeds(net)).as_numpy_iterator()
    iterations = max(args.iterations, 1)
    with placement.scope():
        passes = _Passes(compiled, weighted, training or net.param.force_backward)
        batch = next(batches)
        print("Performing Forward")
        print(f"Initial loss: {passes.forward_loss(batch):.6g}")
        print("Performing Backward")
        passes.forward_backward(batch)
        print("*** Benchmark begins ***")
        print(f"Testing for {iterations} iterations.")
        forward_total = backward_total = both_total = 0.0
        start = time.perf_counter()
        for index in range(iterations):
            batch = next(batches)
            forward = _timed(passes.forward, batch)
            both = _timed(passes.forward_backward, batch)
            forward_total += forward
            both_total += both
            backward_total += max(both - forward, 0.0)
            print(f"Iteration: {index + 1} forward-backward time: {both * 1e3:.6g} ms.")
        total = time.perf_counter() - start
        layers = _layer_times(net, compiled, batches, training, iterations)
    print("Average time per layer: ")
    for name, seconds in layers:
        print(f"{name:>10}\tforward: {seconds * 1e3 / iterations:.6g} ms.")
    print(f"Average Forward pass: {forward_total * 1e3 / iterations:.6g} ms.")
    print(f"Average Backward pass: {backward_total * 1e3 / iterations:.6g} ms.")
    print(f"Average Forward-Backward: {both_total * 1e3 / iterations:.6g} ms.")
    print(f"Total Time: {total * 1e3:.6g} ms.")
    print("*** Benchmark ends ***")
    return 0


def _timed(function: Callable[..., Any], *args: Any) -> float:
    start = time.perf_counter()
    function(*args)
    return time.perf_counter() - start


class _Passes:
    """The compiled model's forward and forward-backward passes as traced functions, each
    returning only once the device is done (a number is read back)."""

    def __init__(self, compiled: Compiled, weighted: list[tuple[int, float]], backward: bool) -> None:
        import keras

        self.model = compiled.model
        self.weighted = weighted
        self.backward = backward and bool(weighted) and bool(self.model.trainable_variables)
        self.training = backward
        self.backend = keras.backend.backend()
        if self.backend == "tensorflow":
            import tensorflow as tf

            self._forward = tf.function(self._loss, reduce_retracing=True)
            self._both = tf.function(self._tf_gradients, reduce_retracing=True)

    def _loss(self, batch: dict[str, Any]) -> Any:
        """[Caffe's loss, the sum of every output]: the second keeps a traced function from
        pruning outputs that do not reach the loss."""
        from keras import ops

        outputs = self.model(batch, training=self.training)
        outputs = list(outputs) if isinstance(outputs, (list, tuple)) else [outputs]
        loss = ops.zeros((), "float32")
        for index, weight in self.weighted:
            loss = loss + ops.cast(ops.sum(outputs[index]), "float32") * weight
        anchor = ops.zeros((), "float32")
        for output in outputs:
            anchor = anchor + ops.cast(ops.sum(output), "float32")
        return ops.stack([loss, anchor])

    def _tf_gradients(self, batch: dict[str, Any]) -> Any:
        import tensorflow as tf

        variables = [v.value for v in self.model.trainable_variables]
        with tf.GradientTape() as tape:
            values = self._loss(batch)
        gradients = [g for g in tape.gradient(values[0], variables) if g is not None]
        return tf.stack([values[0], tf.add_n([tf.reduce_sum(g) for g in gradients]) if gradients else values[1]])

    def forward_loss(self, batch: dict[str, Any]) -> float:
        return self.forward(batch)

    def forward(self, batch: dict[str, Any]) -> float:
        if self.backend == "torch":
            import torch

            with torch.no_grad():
                return float(self._loss(batch)[0])
        function = self._forward if self.backend == "tensorflow" else self._loss
        return float(np.asarray(function(batch))[0])

    def forward_backward(self, batch: dict[str, Any]) -> float:
        if not self.backward:
            return self.forward(batch)
        if self.backend == "torch":
            loss = self._loss(batch)[0]
            loss.backward()
            for variable in self.model.trainable_variables:
                variable.value.grad = None
            return float(loss.detach())
        if self.backend == "tensorflow":
            return float(np.asarray(self._both(batch))[0])
        raise SolverError(f"netdef time does not time the backward pass on the {self.backend} backend")


def _layer_times(
    net: Net, compiled: Compiled, batches: Any, training: bool, iterations: int
) -> list[tuple[str, float]]:
    """Each Caffe layer's forward time: its Keras layers called on their recorded inputs."""
    import keras

    model = compiled.model
    layers = [layer for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)]
    probe = keras.Model(model.inputs, [keras.tree.flatten(layer.input) for layer in layers])
    owner = {name: binding.node.name for binding in compiled.bindings for name in binding.layer_names}
    data_nodes = [node for node in net.nodes if node.is_source]
    totals: dict[str, float] = {node.name: 0.0 for node in data_nodes}
    for _ in range(iterations):
        fetch = _timed(next, batches)
        for node in data_nodes:
            totals[node.name] += fetch / len(data_nodes)
    batch = next(batches)
    recorded = probe(batch, training=training)
    for layer, inputs in zip(layers, recorded, strict=True):
        arguments = keras.tree.pack_sequence_as(layer.input, inputs)
        name = owner.get(layer.name, layer.name)  # a layout permute netdef inserted keeps its own name
        _call(layer, arguments, training)  # warm up
        seconds = 0.0
        for _ in range(iterations):
            seconds += _timed(_call, layer, arguments, training)
        totals[name] = totals.get(name, 0.0) + seconds
    return list(totals.items())


def _call(layer: Any, arguments: Any, training: bool) -> None:
    """One layer call, waiting for the device (one value of the result is read back)."""
    import keras

    result = layer(arguments, training=training)
    first = keras.tree.flatten(result)[0]
    keras.ops.convert_to_numpy(keras.ops.reshape(first, (-1,))[:1])
