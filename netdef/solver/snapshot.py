"""Caffe's snapshots: the weights file and the ``.solverstate`` beside it, in both formats.

A snapshot at iteration N is ``PREFIX_iter_N.caffemodel`` + ``PREFIX_iter_N.solverstate``
(``snapshot_format: BINARYPROTO``) or ``.caffemodel.h5`` + ``.solverstate.h5`` (``HDF5``),
exactly as ``Solver::Snapshot`` names and lays them out, so Caffe resumes from netdef's
snapshots and netdef from Caffe's:

* binary state: a ``SolverState`` message (``iter``, ``learned_net`` = the weights file's
  path as written, ``current_step``, ``history`` blobs);
* HDF5 state (``SnapshotSolverStateToHDF5``): scalar datasets ``iter`` and ``current_step``,
  a string dataset ``learned_net`` and a group ``history`` with datasets ``0``, ``1``, ...

``history[k·N + i]`` is slot k (SGD's momentum, Adam's m then v, ...) of learnable param i
in Caffe's net order, in the param's Caffe blob shape. The Keras slot variables hold the
Keras variable's layout (a convolution kernel is (kh, kw, in, out)), so they pass through
the very converters that move weights between Caffe and Keras (:mod:`netdef.keras.weights`).

Both files are written atomically (temporary file + rename), weights first and the state
last: a state file that exists always has its whole weights file beside it, so a run killed
at any moment leaves its previous snapshot usable.
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from netdef.blobs import array_to_blobproto, as_float32, blobproto_to_array
from netdef.errors import NetdefError, ParseError, SolverError, SourceLocation
from netdef.fileio import atomic_write
from netdef.ir import Net
from netdef.keras.compiler import Compiled
from netdef.keras.weights import CONVERTERS, Converter
from netdef.proto import netdef_pb2 as pb
from netdef.prototxt import parse_binary
from netdef.weights import LayerBlobs, write_caffe_hdf5, write_caffemodel

BINARYPROTO = pb.SolverParameter.BINARYPROTO
HDF5 = pb.SolverParameter.HDF5
#: The file extensions ``Solver::SnapshotFilename`` appends, per format: (weights, state).
EXTENSIONS = {BINARYPROTO: (".caffemodel", ".solverstate"), HDF5: (".caffemodel.h5", ".solverstate.h5")}


@dataclass
class SolverState:
    """What a ``.solverstate`` holds."""

    iter: int
    #: The weights file written with the state, as the path was given when writing.
    learned_net: str = ""
    #: Caffe's lr bookkeeping (``step`` and ``multistep`` policies).
    current_step: int = 0
    #: float32 arrays in Caffe's blob shapes, Caffe's history order.
    history: list[np.ndarray] = field(default_factory=list)


def snapshot_filename(prefix: str, iteration: int, extension: str) -> str:
    """``Solver::SnapshotFilename``: ``PREFIX_iter_N`` + extension."""
    return f"{prefix}_iter_{iteration}{extension}"


def remove_partial_snapshots(prefix: str) -> list[Path]:
    """Delete the temporary files a killed run left while writing a snapshot of ``prefix``.

    ``atomic_write`` names them ``.<final name>.<random>.tmp`` beside the final file; a run
    killed mid-write leaves one, which never reads as a snapshot but takes space.
    """
    target = Path(prefix)
    directory = target.parent if target.parent != Path("") else Path(".")
    if not directory.is_dir():
        return []
    partial = [path for path in directory.glob(f".{target.name}_iter_*.tmp") if path.is_file()]
    for path in partial:
        path.unlink(missing_ok=True)
    return partial


def owned_blobs(weights: Sequence[LayerBlobs], net: Net) -> list[LayerBlobs]:
    """The records as ``Net::ToHDF5`` writes them: a blob shared by name is saved with its
    owner only (``.caffemodel`` records keep every blob, as ``Net::ToProto`` does)."""
    nodes = {node.name: node for node in reversed(net.nodes)}
    records = []
    for record in weights:
        node = nodes.get(record.name)
        blobs = list(record.blobs)
        if node is not None:
            blobs = [
                None if index < len(node.blobs) and node.blobs[index].owner else blob
                for index, blob in enumerate(blobs)
            ]
        records.append(LayerBlobs(record.name, record.type, blobs, record.origin, record.legacy))
    return records


def write_snapshot(
    prefix: str,
    snapshot_format: int,
    weights: Sequence[LayerBlobs],
    net: Net | None,
    state: SolverState,
) -> tuple[str, str]:
    """Write the weights, then the state naming them; returns both paths.

    ``state.learned_net`` is filled in with the weights file's path.
    """
    model_extension, state_extension = EXTENSIONS[snapshot_format]
    model_path = snapshot_filename(prefix, state.iter, model_extension)
    state_path = snapshot_filename(prefix, state.iter, state_extension)
    if snapshot_format == HDF5:
        write_caffe_hdf5(model_path, owned_blobs(weights, net) if net is not None else weights)
    else:
        write_caffemodel(model_path, weights, net.param if net is not None else None)
    state.learned_net = model_path
    write_solver_state(state_path, state, snapshot_format)
    return model_path, state_path


def write_solver_state(path: str | os.PathLike[str], state: SolverState, snapshot_format: int) -> None:
    """A ``.solverstate`` (binary SolverState) or ``.solverstate.h5`` (Caffe's HDF5 layout)."""
    if snapshot_format == HDF5:
        atomic_write(path, _hdf5_state_bytes(state))
        return
    message = pb.SolverState(iter=state.iter, learned_net=state.learned_net, current_step=state.current_step)
    message.history.extend(array_to_blobproto(blob) for blob in state.history)
    atomic_write(path, message.SerializeToString())


def _hdf5_state_bytes(state: SolverState) -> bytes:
    buffer = io.BytesIO()
    with h5py.File(buffer, "w") as handle:
        # H5LTmake_dataset_int and H5LTmake_dataset_string: rank-0 int32 and a fixed-size,
        # null-terminated string, which Caffe's hdf5_load_int / hdf5_load_string read back.
        handle.create_dataset("iter", data=np.int32(state.iter))
        _scalar_string(handle, "learned_net", state.learned_net)
        handle.create_dataset("current_step", data=np.int32(state.current_step))
        history = handle.create_group("history")
        for index, blob in enumerate(state.history):
            history.create_dataset(str(index), data=as_float32(blob))
    return buffer.getvalue()


def _scalar_string(handle: h5py.File, name: str, text: str) -> None:
    raw = text.encode("utf-8") + b"\0"
    string_type = h5py.h5t.C_S1.copy()
    string_type.set_size(len(raw))
    string_type.set_strpad(h5py.h5t.STR_NULLTERM)
    dataset = h5py.h5d.create(handle.id, name.encode(), string_type, h5py.h5s.create(h5py.h5s.SCALAR))
    dataset.write(h5py.h5s.ALL, h5py.h5s.ALL, np.array(raw, dtype=f"S{len(raw)}"))


def read_solver_state(path: str | os.PathLike[str]) -> SolverState:
    """Read a state as ``Solver::Restore`` does: HDF5 when the name ends in ``.h5``, else binary."""
    file = str(path)
    location = SourceLocation(file)
    if not Path(file).is_file():
        raise SolverError("the solver state file does not exist", location=location)
    if file.endswith(".h5"):
        return _read_hdf5_state(file, location)
    try:
        message = parse_binary(Path(file).read_bytes(), pb.SolverState, file).message
    except ParseError as error:
        raise SolverError(f"not a solver state: {error.message}", location=location) from None
    try:
        history = [blobproto_to_array(blob) for blob in message.history]
    except NetdefError as error:
        raise SolverError(f"history blob: {error.message}", location=location) from None
    return SolverState(message.iter, message.learned_net, message.current_step, history)


def _read_hdf5_state(file: str, location: SourceLocation) -> SolverState:
    try:
        with h5py.File(file, "r") as handle:
            missing = [name for name in ("iter", "current_step", "history") if name not in handle]
            if missing:
                raise SolverError(
                    f"not a solver state: no {', '.join(missing)}",
                    location=location,
                    hint="Caffe's .solverstate.h5 holds iter, learned_net, current_step and a history group",
                )
            learned = handle.get("learned_net")
            learned_net = _decode(learned[()]) if isinstance(learned, h5py.Dataset) else ""
            group = handle["history"]
            history = []
            for index in range(len(group)):
                if str(index) not in group:
                    raise SolverError(f"history dataset '{index}' is missing", location=location)
                history.append(np.asarray(group[str(index)][()], dtype=np.float32))
            return SolverState(int(handle["iter"][()]), learned_net, int(handle["current_step"][()]), history)
    except OSError as error:
        raise SolverError(f"cannot read the HDF5 solver state ({error})", location=location) from None


def _decode(value: Any) -> str:
    raw = value.tobytes() if isinstance(value, np.ndarray) else value
    return raw.rstrip(b"\0").decode("utf-8") if isinstance(raw, bytes) else str(raw)


def learned_net_path(state: SolverState, state_file: str | os.PathLike[str]) -> str:
    """Where the state's weights are: ``learned_net`` as Caffe opens it (from the working
    directory), else beside the state file (a snapshot directory that was moved)."""
    if Path(state.learned_net).is_file():
        return state.learned_net
    beside = Path(state_file).parent / Path(state.learned_net).name
    if beside.is_file():
        return str(beside)
    raise SolverError(
        f"the weights of the solver state are missing: {state.learned_net}",
        location=SourceLocation(str(state_file)),
        hint=f"Caffe opens learned_net from the working directory ({os.getcwd()}); it is not beside the state either",
    )


# --- history: Keras slot variables <-> Caffe's history blobs -------------------------------


@dataclass(frozen=True)
class _BlobForm:
    """How one Keras variable holds a Caffe blob."""

    converter: Converter
    args: dict[str, object]
    shape: tuple[int, ...]


def _blob_forms(compiled: Compiled) -> dict[str, _BlobForm]:
    """Each Keras variable's path → the converter and Caffe shape of the blob it holds."""
    layers = {layer.name: layer for layer in compiled.model.layers}
    forms: dict[str, _BlobForm] = {}
    for binding in compiled.bindings:
        for link in binding.plan.weights:
            layer = layers.get(binding.layer_names[link.call])
            if layer is None:
                continue
            variable = layer.weights[link.variable]
            shape = tuple(binding.node.blobs[link.blob].shape)
            forms[variable.path] = _BlobForm(CONVERTERS[link.convert], dict(link.args), shape)
    return forms


def history_blobs(compiled: Compiled, optimizer: Any, learnables: Sequence[Any]) -> list[np.ndarray]:
    """The optimizer's slots as Caffe's ``history_``: slot k of learnable i at k·N + i."""
    forms = _blob_forms(compiled)
    per_param = [optimizer.history_slots(variable) for variable in learnables]
    slots = len(per_param[0]) if per_param else 0
    history = []
    for k in range(slots):
        for variable, param_slots in zip(learnables, per_param, strict=True):
            form = forms[variable.path]
            value = np.asarray(param_slots[k].numpy(), dtype=np.float32)
            history.append(form.converter.to_caffe(value, form.args, form.shape))
    return history


def restore_history(
    compiled: Compiled, optimizer: Any, learnables: Sequence[Any], history: Sequence[np.ndarray], state_file: str
) -> None:
    """Assign Caffe's history blobs to the optimizer's slots (``RestoreSolverStateFrom*``)."""
    forms = _blob_forms(compiled)
    per_param = [optimizer.history_slots(variable) for variable in learnables]
    slots = len(per_param[0]) if per_param else 0
    location = SourceLocation(state_file)
    if len(history) != slots * len(learnables):
        raise SolverError(
            "incorrect number of history blobs",
            location=location,
            expected=f"{slots * len(learnables)} ({slots} per learnable blob of the net, {len(learnables)} of them)",
            received=str(len(history)),
            hint="was the state written by another solver type or for another net?",
        )
    for k in range(slots):
        for i, (variable, param_slots) in enumerate(zip(learnables, per_param, strict=True)):
            form = forms[variable.path]
            blob = np.asarray(history[k * len(learnables) + i], dtype=np.float32)
            if blob.size != int(np.prod(form.shape)):
                raise SolverError(
                    f"history blob {k * len(learnables) + i} does not fit learnable blob {i} ({variable.path})",
                    location=location,
                    expected=str(form.shape),
                    received=str(blob.shape),
                )
            slot = param_slots[k]
            slot.assign(form.converter.to_keras(blob.reshape(form.shape), form.args).reshape(tuple(slot.shape)))
