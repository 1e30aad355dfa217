"""Where training runs: Caffe's device choice (``--gpu``, ``solver_mode``, ``device_id``)
mapped onto Keras backends, several GPUs through ``tf.distribute``, and mixed precision.

Caffe trains on the GPU only when asked (``--gpu`` or ``solver_mode: GPU`` in the solver),
and every Caffe solver in the model zoo asks. netdef uses a GPU whenever the backend sees
one, since that is what a user of a GPU machine wants, and keeps Caffe's ways to say
otherwise: ``solver_mode: CPU`` or ``--gpu none`` train on the CPU, ``device_id`` (or
``--gpu ID``) picks the GPU, and ``--gpu all`` or ``--gpu 0,1`` trains on several.

Several GPUs follow Caffe's multi-GPU semantics: every replica runs the prototxt's
``batch_size``, so one iteration sees ``batch_size × replicas`` samples, and the gradient
is the mean over the replicas (Caffe's NCCL sums the diffs and scales by 1/solver_count;
``tf.distribute.MirroredStrategy`` sums the replicas' gradients of a loss that Keras
scales by 1/replicas). On TensorFlow that is a ``MirroredStrategy``; Keras's own
data-parallel distribution runs on JAX only, so the PyTorch backend trains on one device.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from netdef.errors import SolverError
from netdef.proto import netdef_pb2 as pb

#: ``--precision`` → the Keras dtype policy. Weights stay float32 in every case, as Caffe's
#: solvers keep them (an update of lr·g is below bfloat16's resolution for most weights):
#: "bfloat16" computes in bfloat16 with float32 variables, Keras's "mixed_bfloat16".
PRECISIONS = {
    "float32": "float32",
    "mixed_float16": "mixed_float16",
    "bfloat16": "mixed_bfloat16",
    "mixed_bfloat16": "mixed_bfloat16",
}


def select_backend(backend: str | None) -> str:
    """Run Keras on ``backend`` (``--backend``); Keras reads its backend once, when first imported."""
    if backend is not None:
        keras_module = sys.modules.get("keras")
        if keras_module is not None:
            running = keras_module.backend.backend()
            if running != backend:
                raise SolverError(
                    f"Keras already runs on {running} in this process",
                    expected=backend,
                    received=running,
                    hint="set KERAS_BACKEND before anything imports Keras",
                )
        os.environ["KERAS_BACKEND"] = backend
    import keras

    return keras.backend.backend()


def parse_gpus(text: str | None) -> str | list[int] | None:
    """``--gpu``'s value: None (not given), "all", "none", or device ids ("0,1")."""
    if text is None or text == "":
        return None
    if text in ("all", "none"):
        return text
    try:
        ids = [int(part) for part in text.split(",")]
    except ValueError:
        raise SolverError("--gpu takes all, none or device ids", expected="e.g. 0 or 0,1", received=text) from None
    if any(device < 0 for device in ids) or len(set(ids)) != len(ids):
        raise SolverError("--gpu ids must be distinct and non-negative", received=text)
    return ids


@dataclass
class Placement:
    """The devices one training run uses and how Keras is told about them."""

    backend: str
    #: "cpu" or "gpu".
    kind: str
    #: GPU ids (empty on the CPU), or the device names of an explicit strategy.
    devices: tuple[str, ...]
    #: tf.distribute strategy (TensorFlow), or None for Keras's default placement.
    strategy: Any = None
    #: PyTorch: the device every tensor goes to.
    torch_device: str | None = None

    @property
    def replicas(self) -> int:
        return int(self.strategy.num_replicas_in_sync) if self.strategy is not None else 1

    def scope(self) -> contextlib.AbstractContextManager[Any]:
        """Where the models, the optimizer and the training loop are created and run."""
        if self.strategy is not None:
            return self.strategy.scope()
        if self.torch_device is not None:
            import keras

            return keras.device(self.torch_device)
        return contextlib.nullcontext()

    def describe(self, batch_sizes: Sequence[int] = ()) -> list[str]:
        """Log lines in the words of Caffe's ``train``: "Use CPU." or "Using GPUs 0, 1"."""
        lines = ["Use CPU." if self.kind == "cpu" else f"Using GPUs {', '.join(self.devices)}"]
        if self.replicas > 1:
            sizes = ", ".join(f"{size} × {self.replicas} = {size * self.replicas}" for size in batch_sizes)
            lines.append(
                f"{self.replicas} replicas ({', '.join(self.devices)}): each runs the prototxt's batch_size, "
                f"so one iteration sees batch_size × {self.replicas} samples"
                + (f" ({sizes})" if sizes else "")
                + "; the gradient is the mean over the replicas"
            )
        return lines


def visible_gpus(backend: str) -> int:
    """How many GPUs the Keras backend can use."""
    if backend == "torch":
        import torch

        return torch.cuda.device_count()
    if backend == "tensorflow":
        import tensorflow as tf

        return len(tf.config.list_physical_devices("GPU"))
    import keras

    return len(keras.distribution.list_devices("gpu")) if hasattr(keras, "distribution") else 0


def requested_gpus(solver: pb.SolverParameter, gpus: str | Sequence[int] | None, visible: int) -> list[int]:
    """The GPU ids to train on, by Caffe's rules plus "a visible GPU is used by default"."""
    if gpus == "none":
        return []
    if gpus == "all":
        return list(range(visible))
    if gpus is not None:
        ids = list(gpus)  # type: ignore[arg-type]
        missing = [device for device in ids if device >= visible]
        if missing:
            raise SolverError(
                f"GPU {', '.join(map(str, missing))} is not visible to the Keras backend",
                expected=f"ids below {visible}" if visible else "no --gpu: no GPU is visible",
                received=",".join(map(str, ids)),
                hint="use --gpu none to train on the CPU",
            )
        return ids
    if solver.HasField("solver_mode") and solver.solver_mode == pb.SolverParameter.CPU:
        return []
    if not visible:
        return []
    if solver.device_id >= visible:
        raise SolverError(
            f"the solver's device_id {solver.device_id} is not a visible GPU",
            expected=f"below {visible}",
            received=str(solver.device_id),
        )
    return [solver.device_id]


def place(
    solver: pb.SolverParameter, gpus: str | Sequence[int] | None, backend: str, strategy: Any = None
) -> Placement:
    """Choose the devices; ``strategy`` (TensorFlow) overrides the choice, e.g. to test
    ``MirroredStrategy`` on logical CPU devices."""
    if strategy is not None:
        if backend != "tensorflow":
            raise SolverError("a tf.distribute strategy needs the TensorFlow backend", received=backend)
        devices = tuple(str(device) for device in strategy.extended.worker_devices)
        kind = "gpu" if any("GPU" in device.upper() for device in devices) else "cpu"
        return Placement(backend, kind, devices, strategy=strategy)
    ids = requested_gpus(solver, gpus, visible_gpus(backend))
    if not ids:
        return _cpu(backend)
    names = tuple(str(device) for device in ids)
    if backend == "tensorflow":
        import tensorflow as tf

        if len(ids) > 1:
            return Placement(backend, "gpu", names, tf.distribute.MirroredStrategy([f"/gpu:{i}" for i in ids]))
        # GPU 0 is where TensorFlow places everything anyway; a strategy would only add work.
        chosen = None if ids == [0] else tf.distribute.OneDeviceStrategy(f"/gpu:{ids[0]}")
        return Placement(backend, "gpu", names, chosen)
    if len(ids) > 1:
        raise SolverError(
            f"training on several GPUs ({', '.join(names)}) needs the TensorFlow backend",
            hint="Keras's data-parallel distribution runs on JAX only and netdef uses tf.distribute; "
            "use --backend tensorflow, or one --gpu ID",
        )
    if backend == "torch":
        return Placement(backend, "gpu", names, torch_device=f"cuda:{ids[0]}")
    return Placement(backend, "gpu", names)


def _cpu(backend: str) -> Placement:
    if backend == "tensorflow":
        import tensorflow as tf

        on_gpu = bool(tf.config.list_physical_devices("GPU"))
        return Placement(backend, "cpu", (), tf.distribute.OneDeviceStrategy("/cpu:0") if on_gpu else None)
    if backend == "torch":
        return Placement(backend, "cpu", (), torch_device="cpu")
    return Placement(backend, "cpu", ())


@contextlib.contextmanager
def precision(policy: str | None) -> Iterator[None]:
    """Build models under a Keras dtype policy (``--precision``), restoring the global one after.

    Layers keep the policy they were made with, so the policy need only hold while the
    models are built; restoring it keeps the process's later models in float32.
    """
    if policy in (None, "", "float32"):
        yield
        return
    if policy not in PRECISIONS:
        raise SolverError("unknown precision", expected=", ".join(PRECISIONS), received=str(policy))
    import keras

    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(PRECISIONS[policy])
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(previous)
