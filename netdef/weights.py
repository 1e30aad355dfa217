"""Caffe's weight files — ``.caffemodel`` and Caffe's HDF5 layout — and fitting them to a net.

Trained weights outlive the framework that made them, so they are read and written here
with numpy, protobuf and h5py only, and loaded by Caffe's own rules
(``Net::CopyTrainedLayersFrom``): records are matched to layers **by name**, records for
layers the net lacks are skipped, layers the file lacks keep their initial values, and a
record that does not fit (blob count, shape) is an error rather than a silent partial load.

Caffe's two formats differ in ways that matter when matching, so each record remembers its
origin:

* ``.caffemodel`` (``Net::ToProto``): a binary NetParameter, upgraded like any net file on
  reading; every layer record carries all its blobs. Blobs written by old Caffe state a 4-D
  legacy shape that Caffe still accepts for a lower-rank blob (``Blob::ShapeEquals``).
* HDF5 (``Net::ToHDF5``): ``/data/<layer name>/<blob index>``, one float dataset per blob;
  a shared parameter is saved only under the layer that owns it, so a record may lack
  blobs, and shapes must match exactly. (``/diff`` holds gradients of snapshots; weights
  loading never reads it.)
"""

from __future__ import annotations

import io
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import h5py
import numpy as np

from netdef.blobs import array_to_blobproto, as_float32, blobproto_to_array, has_legacy_shape
from netdef.errors import ParseError, SourceLocation, UpgradeError, WeightsError
from netdef.fileio import atomic_write
from netdef.proto import netdef_pb2 as pb
from netdef.prototxt import parse_binary
from netdef.upgrade import net_needs_upgrade, upgrade_net

if TYPE_CHECKING:
    from netdef.ir import Net, Node

PathLike = str | os.PathLike[str]
Origin = Literal["caffemodel", "hdf5"]
#: How Caffe names a layer's HDF5 datasets: the blob index, written by ``ostringstream << j``.
_BLOB_INDEX = re.compile(r"0|[1-9][0-9]*")
_RENAME_HINT = "to learn this layer from scratch instead, rename it"


@dataclass
class LayerBlobs:
    """One layer's record in a weights file."""

    name: str
    #: The layer type; "" when the file does not say (HDF5).
    type: str
    #: float32 arrays in Caffe's shape and order. ``None`` only in HDF5 records, for a blob
    #: Caffe did not save there (a shared parameter kept with its owner) while a later index
    #: was saved; blobs missing at the end are simply absent.
    blobs: list[np.ndarray | None]
    #: Which loader's rules apply when the record is fitted to a net (see the module doc).
    origin: Origin = "caffemodel"
    #: Per blob: stored with the legacy num/channels/height/width fields. Caffe then compares
    #: the net's shape right-aligned and padded with 1s, so a stored 1×1×M×N fits (M, N).
    legacy: list[bool] = field(default_factory=list)

    def is_legacy(self, index: int) -> bool:
        return index < len(self.legacy) and self.legacy[index]


# --- reading ------------------------------------------------------------------------------


def read_weights(path: PathLike) -> list[LayerBlobs]:
    """Read either format, told apart by content (the HDF5 signature) as Caffe does."""
    if h5py.is_hdf5(path):
        return read_caffe_hdf5(path)
    return read_caffemodel(path)


def read_caffemodel(path: PathLike) -> list[LayerBlobs]:
    """The layers of a binary NetParameter that carry blobs, in file order.

    The net is upgraded first, as Caffe's ``ReadNetParamsFromBinaryFileOrDie`` does, so V0
    and V1 models give current type names.
    """
    file = str(path)
    net = _parse_caffemodel(file)
    return [_caffemodel_record(layer, file) for layer in net.layer if len(layer.blobs)]


def _parse_caffemodel(file: str) -> pb.NetParameter:
    data = _read_bytes(file)
    try:
        net = parse_binary(data, pb.NetParameter, file).message
    except ParseError as error:
        hint = "the file is text: weights are binary; was the prototxt given?" if _is_text(data) else error.hint
        raise WeightsError(error.message, location=SourceLocation(file), hint=hint) from None
    if not len(net.layer) and not len(net.layers):
        raise WeightsError("the file holds no layers", location=SourceLocation(file), hint="is it a .caffemodel?")
    if not net_needs_upgrade(net):
        return net  # upgrade_net copies the whole message, which is large for a model
    try:
        return upgrade_net(net).net
    except UpgradeError as error:
        raise WeightsError(
            f"cannot upgrade the legacy net: {error.message}",
            location=SourceLocation(file),
            layer=error.layer,
            layer_type=error.layer_type,
        ) from None


def _read_bytes(file: str) -> bytes:
    try:
        return Path(file).read_bytes()
    except OSError as error:
        raise WeightsError(f"cannot read the file ({error.strerror})", location=SourceLocation(file)) from None


def _is_text(data: bytes) -> bool:
    try:
        return "\x00" not in data.decode("utf-8")
    except UnicodeDecodeError:
        return False


def _caffemodel_record(layer: pb.LayerParameter, file: str) -> LayerBlobs:
    blobs: list[np.ndarray | None] = []
    for index, blob in enumerate(layer.blobs):
        try:
            blobs.append(blobproto_to_array(blob))
        except WeightsError as error:
            raise WeightsError(
                f"blob {index}: {error.message}",
                location=SourceLocation(file),
                layer=layer.name,
                layer_type=layer.type,
                expected=error.expected,
                received=error.received,
                hint=error.hint,
            ) from None
    return LayerBlobs(layer.name, layer.type, blobs, legacy=[has_legacy_shape(blob) for blob in layer.blobs])


def read_caffe_hdf5(path: PathLike) -> list[LayerBlobs]:
    """The layers of Caffe's HDF5 weights that hold datasets, in HDF5's name order (Caffe's)."""
    file = str(path)
    location = SourceLocation(file)
    try:
        with h5py.File(file, "r") as handle:
            data = handle.get("data")
            if not isinstance(data, h5py.Group):
                raise WeightsError(
                    "no /data group",
                    location=location,
                    hint="Caffe's HDF5 weights keep each layer's blobs in /data/<layer>/<blob index>",
                )
            records = [_hdf5_record(name, item, location) for name, item in data.items()]
    except OSError as error:
        raise WeightsError(f"cannot read the HDF5 file ({error})", location=location) from None
    return [record for record in records if record.blobs]


def _hdf5_record(name: str, group: h5py.Group | h5py.Dataset, location: SourceLocation) -> LayerBlobs:
    if not isinstance(group, h5py.Group):
        raise WeightsError(f"/data/{name} is a dataset, not a group of blobs", location=location, layer=name)
    stored: dict[int, np.ndarray] = {}
    for key, item in group.items():
        if not _BLOB_INDEX.fullmatch(key):
            raise WeightsError(
                f"unexpected entry '/data/{name}/{key}'",
                location=location,
                layer=name,
                hint="Caffe names a layer's datasets by blob index: 0, 1, ...",
            )
        stored[int(key)] = _hdf5_blob(item, f"/data/{name}/{key}", location, name)
    blobs = [stored.get(index) for index in range(max(stored, default=-1) + 1)]
    return LayerBlobs(name, "", blobs, origin="hdf5")


def _hdf5_blob(item: h5py.Group | h5py.Dataset, where: str, location: SourceLocation, layer: str) -> np.ndarray:
    """A dataset as float32; Caffe reads float and integer datasets, converted by HDF5."""
    if not isinstance(item, h5py.Dataset) or item.shape is None or item.dtype.kind not in "fiu":
        raise WeightsError(
            f"{where} is not a numeric dataset",
            location=location,
            layer=layer,
            received=f"{type(item).__name__} of {getattr(item, 'dtype', 'no type')}",
        )
    return np.asarray(item.astype("<f4")[()])


# --- writing ------------------------------------------------------------------------------


def write_caffemodel(path: PathLike, layers: Iterable[LayerBlobs], net: pb.NetParameter | None = None) -> None:
    """Write a binary NetParameter, one ``layer`` record per entry, as Caffe's ``Net::ToProto``.

    Caffe writes each layer's whole LayerParameter (bottoms, tops, params...) with the blobs
    attached, so with ``net`` given each record copies the net's layer of the same name;
    without it (or for a name the net lacks) a record states only name and type, which is
    all a loader matches on. Blob data is stored bit for bit.
    """
    params = _layer_params(net)
    model = pb.NetParameter()
    if net is not None and net.HasField("name"):
        model.name = net.name
    for record in layers:
        _fill_layer(model.layer.add(), record, params.get(record.name))
    atomic_write(path, model.SerializeToString())


def _layer_params(net: pb.NetParameter | None) -> dict[str, pb.LayerParameter]:
    """The net's layers by name (the first of a name, as Caffe's loader matches)."""
    if net is None:
        return {}
    if net_needs_upgrade(net):
        net = upgrade_net(net).net
    params: dict[str, pb.LayerParameter] = {}
    for layer in net.layer:
        params.setdefault(layer.name, layer)
    return params


def _fill_layer(layer: pb.LayerParameter, record: LayerBlobs, param: pb.LayerParameter | None) -> None:
    if param is not None:
        layer.CopyFrom(param)
        layer.ClearField("blobs")
    else:
        layer.name = record.name
        if record.type:
            layer.type = record.type
    for index, values in enumerate(record.blobs):
        if values is None:
            raise WeightsError(
                f"blob {index} is missing",
                layer=record.name,
                hint="a .caffemodel record needs every blob; load the HDF5 weights into the net first",
            )
        layer.blobs.append(array_to_blobproto(values))


def write_caffe_hdf5(path: PathLike, layers: Iterable[LayerBlobs]) -> None:
    """Write Caffe's HDF5 layout (``Net::ToHDF5`` without diffs): ``/data/<layer>/<index>``.

    The file is built in memory and then written atomically, so an interrupted write never
    leaves a torn file where a model was. ``None`` blobs (shared parameters) are left out,
    as Caffe leaves them out.
    """
    buffer = io.BytesIO()
    with h5py.File(buffer, "w") as handle:
        data = handle.create_group("data")
        for record in layers:
            group = data.create_group(_hdf5_group_name(record.name, data))
            for index, values in enumerate(record.blobs):
                if values is not None:
                    group.create_dataset(str(index), data=as_float32(values))
    atomic_write(path, buffer.getvalue())


def _hdf5_group_name(name: str, data: h5py.Group) -> str:
    """Refuse names HDF5 would read as a path or Caffe could not create twice."""
    if not name or name == "." or "/" in name:
        raise WeightsError("the layer name cannot name an HDF5 group", layer=name, hint="rename the layer")
    if name in data:
        raise WeightsError("two records name this layer", layer=name)
    return name


# --- fitting to a net ---------------------------------------------------------------------


def match_blobs(net: Net, layers: Iterable[LayerBlobs]) -> tuple[dict[str, list[np.ndarray]], list[str]]:
    """Fit weight records to a net by Caffe's ``CopyTrainedLayersFrom`` rules.

    Returns each net layer's arrays (in the net's shapes) for the layers whose every blob
    got data, and notes on records the net ignores and layers left at their initial values.
    Shared blobs share storage, as in Caffe: whichever record wrote a shared parameter last
    (in file order) sets it for its owner and every sharer.
    """
    nodes: dict[str, Node] = {}
    for node in net.nodes:
        nodes.setdefault(node.name, node)
    storage: dict[tuple[str, int], np.ndarray] = {}
    notes: list[str] = []
    for record in layers:
        node = nodes.get(record.name)
        if node is None:
            notes.append(f"ignoring layer '{record.name}' (not in the net)")
            continue
        for index, values in _fitted_blobs(node, record):
            storage[_storage_key(node, index)] = values
    loaded: dict[str, list[np.ndarray]] = {}
    for node in nodes.values():
        if node.blobs:
            _collect(node, storage, loaded, notes)
    return loaded, notes


def _storage_key(node: Node, index: int) -> tuple[str, int]:
    return node.blobs[index].owner or (node.name, index)


def _collect(
    node: Node, storage: dict[tuple[str, int], np.ndarray], loaded: dict[str, list[np.ndarray]], notes: list[str]
) -> None:
    keys = [_storage_key(node, index) for index in range(len(node.blobs))]
    missing = [index for index, key in enumerate(keys) if key not in storage]
    if not missing:
        loaded[node.name] = [storage[key].reshape(blob.shape) for key, blob in zip(keys, node.blobs, strict=True)]
    elif len(missing) == len(keys):
        notes.append(f"layer '{node.name}' is not in the weights file; it keeps its initial values")
    else:
        which = ", ".join(map(str, missing))
        notes.append(f"layer '{node.name}': blob {which} not in the weights file; the layer keeps its initial values")


def _fitted_blobs(node: Node, record: LayerBlobs) -> list[tuple[int, np.ndarray]]:
    """The record's blobs checked against the layer's and reshaped to them, by index."""
    _check_blob_count(node, record)
    fitted = []
    for index, blob in enumerate(node.blobs):
        values = record.blobs[index] if index < len(record.blobs) else None
        if values is None:
            if record.origin == "hdf5" and blob.owner is not None:
                continue  # ToHDF5 saves a shared parameter with its owner only
            raise _fit_error(f"blob {index} is not in the weights file", node=node, hint=_RENAME_HINT)
        fitted.append((index, _fitted(node, index, values, record.is_legacy(index))))
    return fitted


def _check_blob_count(node: Node, record: LayerBlobs) -> None:
    """A caffemodel record has exactly the layer's blobs; HDF5 may lack shared ones."""
    wanted = len(node.blobs)
    stored = sum(values is not None for values in record.blobs)
    fits = stored <= wanted if record.origin == "hdf5" else len(record.blobs) == wanted
    if not fits:
        raise _fit_error(
            "the weights file holds a different number of blobs for the layer",
            node=node,
            expected=str(wanted),
            received=str(stored),
            hint=_RENAME_HINT,
        )


def _fitted(node: Node, index: int, values: np.ndarray, legacy: bool) -> np.ndarray:
    target = node.blobs[index].shape
    stored = tuple(np.shape(values))
    if not _shape_equals(target, stored, legacy):
        raise _fit_error(
            f"cannot copy blob {index}: shape mismatch",
            node=node,
            expected=str(tuple(target)),
            received=str(stored),
            hint=_RENAME_HINT,
        )
    return as_float32(values).reshape(target)


def _shape_equals(target: tuple[int, ...], stored: tuple[int, ...], legacy: bool) -> bool:
    """Caffe's ``Blob::ShapeEquals``: exact, or for a legacy 4-D blob Caffe's ``LegacyShape``.

    Legacy parameter blobs were padded with 1s at the front (an InnerProduct weight was
    1×1×M×N, a bias 1×1×1×N), so the target shape is compared right-aligned.
    """
    if not legacy:
        return tuple(target) == stored
    return len(target) <= 4 and (1,) * (4 - len(target)) + tuple(target) == stored


def _fit_error(message: str, node: Node, **details: str) -> WeightsError:
    return WeightsError(message, location=node.location, layer=node.name, layer_type=node.type, **details)
