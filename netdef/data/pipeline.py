"""The batches a Caffe net's data layers produce, as a ``tf.data`` pipeline for Keras.

``net_dataset(net)`` yields one element per forward pass, forever (Caffe's data layers
wrap around at the end of their source): a dict from the compiled model's input names to
float32 arrays in Caffe's layout and the IR's exact shapes, for every data layer, Input
and DummyData top of the net. Keras's ``fit`` takes such a dataset on every backend.

Each batch is a pure function of (seed, batch index) — see :mod:`netdef.data.sources` —
so the pipeline can make batches in parallel (``num_parallel_calls=AUTOTUNE``) and keep
them in order (``deterministic=True``), and a resumed run continues exactly where it
stopped: the trainer passes ``skip_batches = iteration × iter_size`` and the pipeline
starts at that batch index without reading or decoding the skipped batches. No other
state needs to go into a snapshot.

Decoding and transforming run in numpy and OpenCV inside ``tf.numpy_function``; OpenCV and
numpy release the GIL for the heavy work, so parallel calls overlap. Arrays given from
Python (Input, MemoryData) become TensorFlow constants once, sliced per batch without
Python. A source that turns out unreadable in the middle of a run (a corrupt record, a
missing image) fails the iteration with TensorFlow's error, whose message carries netdef's;
what can be checked up front (sources open, first record or image decodes and fits the
net) raises netdef's own error from ``net_dataset``.

Where Caffe reshapes a batch to its first sample (Data, ImageData without a resize or
crop), netdef's model is built for the shapes the IR inferred from the source's first
sample, so a sample of another size is refused with a DataSourceError naming it.
"""

from __future__ import annotations

import atexit
import os
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import tensorflow as tf

from netdef.data.sources import ArraySource, DataSource, Options, Source, make_source
from netdef.errors import NetDefinitionError
from netdef.ir import Net
from netdef.keras import layout as lay
from netdef.keras.compiler import input_names

#: Batch indices run "forever": tf.data's range needs an end.
_FOREVER = np.iinfo(np.int64).max


class _Calls:
    """The pipeline's Python calls in flight, and the end of every pipeline when Python exits.

    TensorFlow runs the calls on its own threads. A call that is running, or starting,
    when Python finalizes dies with its thread, and an iterator still alive then (a global,
    or one in a reference cycle) would wait for it forever in its destructor, so the
    process would never exit. At exit, while threads can still run, a TensorFlow flag ends
    every pipeline's stream of batch indices (no Python is needed to stop them), a call
    that starts anyway fails at once, and the running ones are waited for.
    """

    def __init__(self) -> None:
        with tf.device("/CPU:0"):
            self.open = tf.Variable(True, trainable=False, name="netdef_pipelines_open")
        self._condition = threading.Condition()
        self._running = 0
        self._started = 0
        self._closed = False

    def wrap(self, function: Callable[..., Any]) -> Callable[..., Any]:
        def call(*args: Any) -> Any:
            with self._condition:
                self._started += 1
                if self._closed:
                    raise RuntimeError("the Python interpreter is exiting")
                self._running += 1
            try:
                return function(*args)
            finally:
                with self._condition:
                    self._running -= 1
                    self._condition.notify_all()

        return call

    def close(self, quiet: float = 0.05, limit: float = 10.0) -> None:
        self.open.assign(False)
        deadline = time.monotonic() + limit
        with self._condition:
            self._closed = True
            while time.monotonic() < deadline:
                started = self._started
                self._condition.wait_for(lambda: self._running == 0, max(0.0, deadline - time.monotonic()))
                self._condition.wait(quiet)
                if self._running == 0 and self._started == started:
                    return


_CALLS = _Calls()
atexit.register(_CALLS.close)


def _batches(source: Source, skip_batches: int, orders: list[tuple[int, ...] | None]) -> tf.data.Dataset:
    """Batch ``skip_batches``, ``skip_batches + 1``, ... of one layer, made in parallel, in
    order, each top transposed by its entry of ``orders`` (None: as it is)."""
    indices = tf.data.Dataset.range(skip_batches, _FOREVER).take_while(lambda _: _CALLS.open)
    if isinstance(source, ArraySource):
        # Arrays given from Python are laid out once here; each batch is then a slice taken
        # by TensorFlow alone, with no Python call holding the GIL while a step trains.
        constants = [
            tf.constant(array if order is None else np.ascontiguousarray(array.transpose(0, *(a + 1 for a in order))))
            for array, order in zip(source.arrays, orders, strict=True)
        ]
        return indices.map(lambda index: tuple(tf.gather(c, index % c.shape[0]) for c in constants))
    return _transposed(_made_batches(source, indices), orders)


def _transposed(batches: tf.data.Dataset, orders: list[tuple[int, ...] | None]) -> tf.data.Dataset:
    if all(order is None for order in orders):
        return batches

    def transpose(*tops: tf.Tensor) -> tuple[tf.Tensor, ...]:
        return tuple(t if order is None else tf.transpose(t, order) for t, order in zip(tops, orders, strict=True))

    return batches.map(transpose)


def _made_batches(source: Source, indices: tf.data.Dataset) -> tf.data.Dataset:
    signature = [tf.float32] * len(source.shapes)

    def make(*arguments: tf.Tensor) -> tuple[tf.Tensor, ...]:
        call = _CALLS.wrap(lambda *args: source.batch(int(args[0]), *args[1:]))
        arrays = tf.numpy_function(call, list(arguments), signature)
        return tuple(tf.ensure_shape(array, shape) for array, shape in zip(arrays, source.shapes, strict=True))

    if isinstance(source, DataSource):
        reader = source  # the LMDB cursor is read in order (one call at a time); decoding runs in parallel

        def read(index: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
            values = tf.numpy_function(_CALLS.wrap(lambda i: reader.records(int(i))), [index], tf.string)
            return index, tf.ensure_shape(values, (reader.batch_size,))

        return indices.map(read).map(make, tf.data.AUTOTUNE, deterministic=True)
    return indices.map(make, tf.data.AUTOTUNE, deterministic=True)


def net_dataset(
    net: Net,
    *,
    arrays: Mapping[str, np.ndarray] | None = None,
    seed: int = 0,
    skip_batches: int = 0,
    root: str | os.PathLike[str] | None = None,
    layout: str = lay.CAFFE,
) -> tf.data.Dataset:
    """What the net's data layers feed it, one element per forward pass, forever.

    ``arrays`` supplies the tops of Input and MemoryData layers by top name; ``seed`` fixes
    every random choice (the same seed gives the same batches); ``skip_batches`` starts
    the pipeline as if that many batches had been read; ``root`` is where relative
    ``source`` (and mean, image and HDF5) paths are found (default: the working directory,
    as in Caffe). The phase is the net's: crops are random in TRAIN and centred in TEST;
    ``mirror`` flips at random in both phases, as Caffe's DataTransformer does.

    To resume, build the dataset again with the same seed and ``skip_batches`` set to the
    number of forward passes already made (``iteration × iter_size``).

    ``layout`` is the boundary layout of the model the batches feed: with
    ``"channels_last"`` images arrive as (N, H, W, C), transposed here, in the pipeline's
    own threads, rather than by a Permute layer inside every training step.
    """
    if layout not in lay.LAYOUTS:
        raise NetDefinitionError(f"unknown layout '{layout}'", expected=" or ".join(lay.LAYOUTS), received=layout)
    if skip_batches < 0:
        raise NetDefinitionError("skip_batches cannot be negative", received=str(skip_batches))
    given = dict(arrays or {})
    fed = [value.blob for node in net.nodes if node.type in ("Input", "MemoryData") for value in node.tops]
    unknown = sorted(set(given) - set(fed))
    if unknown:
        raise NetDefinitionError(
            f"no Input or MemoryData top named {', '.join(unknown)}",
            expected=" or ".join(fed) if fed else "no arrays (the net has no Input or MemoryData layer)",
        )
    options = Options(seed=seed, phase=net.phase, root=root, arrays=given)
    sources = [make_source(node, options) for node in net.nodes if node.is_source]
    if not sources:
        raise NetDefinitionError("the net has no data layers or inputs to feed")
    names = input_names(net)
    keys = [names[value.key] for source in sources for value in source.node.tops]

    def as_dict(*parts: tuple[tf.Tensor, ...]) -> dict[str, tf.Tensor]:
        return dict(zip(keys, [tensor for part in parts for tensor in part], strict=True))

    layers = tuple(
        _batches(source, skip_batches, [lay.permutation(len(shape), lay.CAFFE, layout) for shape in source.shapes])
        for source in sources
    )
    dataset = tf.data.Dataset.zip(layers).map(as_dict).prefetch(tf.data.AUTOTUNE)
    settings = tf.data.Options()
    settings.deterministic = True
    return dataset.with_options(settings)
