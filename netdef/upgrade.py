"""Bring legacy net and solver definitions to the current format, as Caffe does on every load.

Caffe silently rewrites old files when it reads them (``UpgradeNetAsNeeded``), so a V0 or V1
prototxt and a current one describe the same network, and everything downstream of this
module only ever sees the current format. We follow Caffe's chain step for step, in its
order, because the order matters: the V0 step writes V1 layers that the V1 step then
converts, and the ``Input`` layer must be put in front of the already-converted layers.

Each step is a named pair *check, then transform*; the transform builds a new message and
leaves the one it was given alone, and a step whose check says "nothing to do" returns its
input untouched. That is what makes a step idempotent and lets the caller report which
steps changed something. Unlike Caffe, which aborts the process, a definition that cannot
be upgraded raises :class:`UpgradeError` pointing at the layer; the cases Caffe merely logs
as "not fully compatible" (and continues) become warnings.

While the net is rewritten, each layer keeps the source location it came from, so the
errors of later stages still point into the user's file.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Generic, TypeVar

from google.protobuf.descriptor import EnumDescriptor
from google.protobuf.message import Message

from netdef.errors import SourceLocation, UpgradeError
from netdef.proto import netdef_pb2 as pb
from netdef.prototxt import SourceMap

V1 = pb.V1LayerParameter
Location = SourceLocation | None
M = TypeVar("M", bound=Message)
D = TypeVar("D")


@dataclass
class UpgradedNet:
    """A net in the current format, and what it took to get there."""

    net: pb.NetParameter
    #: Aligned with ``net.layer``: where each layer was written (the net-level ``input``
    #: field for a generated ``Input`` layer), ``None`` when the net came without text.
    locations: list[SourceLocation | None]
    #: Names of the steps that changed something, in the order they ran.
    applied: list[str]
    #: Caffe's "not fully compatible" cases: what was dropped, naming the layer.
    warnings: list[str]


@dataclass(frozen=True)
class NetDraft:
    """A net part-way through the upgrade, with the locations of its layers.

    Locations are kept for both layer lists because a legacy net has its layers in
    ``layers`` until the V1 step moves them into ``layer``.
    """

    net: pb.NetParameter
    layer_locations: tuple[Location, ...]
    legacy_locations: tuple[Location, ...]
    input_location: Location = None
    warnings: tuple[str, ...] = ()

    @classmethod
    def start(cls, net: pb.NetParameter, source: SourceMap | None = None) -> NetDraft:
        """A draft of a copy of ``net``, so that the caller's message is never changed."""
        copy = pb.NetParameter()
        copy.CopyFrom(net)

        def where(count: int, field: str) -> tuple[Location, ...]:
            return tuple(source.layer(i, field) if source else None for i in range(count))

        return cls(
            copy,
            where(len(net.layer), "layer"),
            where(len(net.layers), "layers"),
            source.fields.get("input") if source else None,
        )


@dataclass(frozen=True)
class SolverDraft:
    """A solver part-way through the upgrade; the file only serves error messages."""

    solver: pb.SolverParameter
    file: str | None = None


@dataclass(frozen=True)
class Step(Generic[D]):
    """One upgrade: a check whether it is needed, and a pure transform."""

    name: str
    needed: Callable[[D], bool]
    transform: Callable[[D], D]

    def __call__(self, draft: D) -> D:
        """Transform only when needed; a draft that needs nothing comes back as it went in."""
        return self.transform(draft) if self.needed(draft) else draft


def _run(steps: Iterable[Step[D]], draft: D) -> tuple[D, list[str]]:
    applied: list[str] = []
    for step in steps:
        upgraded = step(draft)
        if upgraded is not draft:
            applied.append(step.name)
        draft = upgraded
    return draft, applied


# --- helpers ----------------------------------------------------------------------------


def _copy_except(message: M, excluded: Collection[str]) -> M:
    """A copy of ``message`` without some fields, so large ones are not copied to be cleared."""
    copy = type(message)()
    for field, value in message.ListFields():
        if field.name in excluded:
            continue
        if field.is_repeated:
            getattr(copy, field.name).extend(value)
        elif field.message_type is not None:
            getattr(copy, field.name).CopyFrom(value)
        else:
            setattr(copy, field.name, value)
    return copy


def _copy_submessage(source: Message, target: Message) -> None:
    """Copy keeping presence: Caffe copies a sub-message that is set even when it is empty."""
    target.SetInParent()
    target.CopyFrom(source)


def _same_enum_value(number: int, source: EnumDescriptor, target: EnumDescriptor) -> int:
    """Translate between two enums that spell the same choices with the same names."""
    return target.values_by_name[source.values_by_number[number].name].number


def _enum_name(message: Message, field: str) -> str:
    descriptor = message.DESCRIPTOR.fields_by_name[field].enum_type
    return descriptor.values_by_number[getattr(message, field)].name


# --- step 1: V0 layers -> V1 layers ------------------------------------------------------

#: The V0 type strings, as Caffe's ``UpgradeV0LayerType`` knows them ("padding" layers are
#: folded into their consumer before types are looked at).
V0_LAYER_TYPES: Mapping[str, int] = {
    "accuracy": V1.ACCURACY,
    "bnll": V1.BNLL,
    "concat": V1.CONCAT,
    "conv": V1.CONVOLUTION,
    "data": V1.DATA,
    "dropout": V1.DROPOUT,
    "euclidean_loss": V1.EUCLIDEAN_LOSS,
    "flatten": V1.FLATTEN,
    "hdf5_data": V1.HDF5_DATA,
    "hdf5_output": V1.HDF5_OUTPUT,
    "im2col": V1.IM2COL,
    "images": V1.IMAGE_DATA,
    "infogain_loss": V1.INFOGAIN_LOSS,
    "innerproduct": V1.INNER_PRODUCT,
    "lrn": V1.LRN,
    "multinomial_logistic_loss": V1.MULTINOMIAL_LOGISTIC_LOSS,
    "pool": V1.POOLING,
    "relu": V1.RELU,
    "sigmoid": V1.SIGMOID,
    "softmax": V1.SOFTMAX,
    "softmax_loss": V1.SOFTMAX_LOSS,
    "split": V1.SPLIT,
    "tanh": V1.TANH,
    "window_data": V1.WINDOW_DATA,
}

#: Key of a V0 field's target that applies whatever the layer type.
ANY_TYPE = "*"

#: Where each V0 field goes in the V1 layer, by V0 type: a dotted path from the V1 layer.
#: A type missing from a field's row cannot take that field: Caffe drops it and calls the
#: net "not fully compatible". Rows are in Caffe's order, so warnings come in its order.
#: ``new_num`` and ``new_channels`` have no target at all: Caffe drops them unannounced.
V0_FIELD_TARGETS: Mapping[str, Mapping[str, str]] = {
    "num_output": {
        "conv": "convolution_param.num_output",
        "innerproduct": "inner_product_param.num_output",
    },
    "biasterm": {
        "conv": "convolution_param.bias_term",
        "innerproduct": "inner_product_param.bias_term",
    },
    "weight_filler": {
        "conv": "convolution_param.weight_filler",
        "innerproduct": "inner_product_param.weight_filler",
    },
    "bias_filler": {
        "conv": "convolution_param.bias_filler",
        "innerproduct": "inner_product_param.bias_filler",
    },
    "pad": {"conv": "convolution_param.pad", "pool": "pooling_param.pad"},
    "kernelsize": {"conv": "convolution_param.kernel_size", "pool": "pooling_param.kernel_size"},
    "group": {"conv": "convolution_param.group"},
    "stride": {"conv": "convolution_param.stride", "pool": "pooling_param.stride"},
    "pool": {"pool": "pooling_param.pool"},
    "dropout_ratio": {"dropout": "dropout_param.dropout_ratio"},
    "local_size": {"lrn": "lrn_param.local_size"},
    "alpha": {"lrn": "lrn_param.alpha"},
    "beta": {"lrn": "lrn_param.beta"},
    "k": {"lrn": "lrn_param.k"},
    "source": {
        "data": "data_param.source",
        "hdf5_data": "hdf5_data_param.source",
        "images": "image_data_param.source",
        "window_data": "window_data_param.source",
        "infogain_loss": "infogain_loss_param.source",
    },
    "scale": {ANY_TYPE: "transform_param.scale"},
    "meanfile": {ANY_TYPE: "transform_param.mean_file"},
    "batchsize": {
        "data": "data_param.batch_size",
        "hdf5_data": "hdf5_data_param.batch_size",
        "images": "image_data_param.batch_size",
        "window_data": "window_data_param.batch_size",
    },
    "cropsize": {ANY_TYPE: "transform_param.crop_size"},
    "mirror": {ANY_TYPE: "transform_param.mirror"},
    "rand_skip": {"data": "data_param.rand_skip", "images": "image_data_param.rand_skip"},
    "shuffle_images": {"images": "image_data_param.shuffle"},
    "new_height": {"images": "image_data_param.new_height"},
    "new_width": {"images": "image_data_param.new_width"},
    "concat_dim": {"concat": "concat_param.concat_dim"},
    "det_fg_threshold": {"window_data": "window_data_param.fg_threshold"},
    "det_bg_threshold": {"window_data": "window_data_param.bg_threshold"},
    "det_fg_fraction": {"window_data": "window_data_param.fg_fraction"},
    "det_context_pad": {"window_data": "window_data_param.context_pad"},
    "det_crop_mode": {"window_data": "window_data_param.crop_mode"},
    "hdf5_output_param": {"hdf5_output": "hdf5_output_param"},
    "new_num": {},
    "new_channels": {},
}

#: V0 fields that keep their name and meaning in V1 (handled before the table above).
V0_DIRECT_FIELDS = ("name", "type", "blobs", "blobs_lr", "weight_decay")
#: Caffe's V0 upgrade rebuilds the net from its layers and keeps only these net fields.
V0_NET_FIELDS = ("name", "input", "input_dim", "force_backward")
V0_DROPPED_NET_FIELDS = frozenset(pb.NetParameter.DESCRIPTOR.fields_by_name) - set(V0_NET_FIELDS)
#: Parts of a V1 layer that a V0 net uses around its V0 ``layer``; Caffe ignores the rest.
V0_ENTRY_FIELDS = ("layer", "bottom", "top")


def _has_v0_layers(draft: NetDraft) -> bool:
    return any(entry.HasField("layer") for entry in draft.net.layers)


def _v0_to_v1(draft: NetDraft) -> NetDraft:
    """Rebuild the net from its V0 layers, as Caffe's ``UpgradeV0Net``."""
    net = draft.net
    if len(net.layer):
        # Caffe would silently discard the current-format layers here.
        _refuse_mixed_layer_kinds(draft)
    warnings = list(draft.warnings)
    for field, _ in net.ListFields():
        if field.name in V0_DROPPED_NET_FIELDS and field.name != "layers":
            warnings.append(f"net field '{field.name}' is dropped by the V0 upgrade, as Caffe does")
    entries = _fold_padding_layers(net, draft.legacy_locations)
    upgraded = _copy_except(net, V0_DROPPED_NET_FIELDS)
    for entry, location in entries:
        upgraded.layers.append(_v0_layer(entry, location, warnings))
    return replace(
        draft,
        net=upgraded,
        legacy_locations=tuple(location for _, location in entries),
        warnings=tuple(warnings),
    )


def _fold_padding_layers(
    net: pb.NetParameter, locations: tuple[Location, ...]
) -> list[tuple[pb.V1LayerParameter, Location]]:
    """Drop V0 ``padding`` layers, giving their pad to the conv/pool layer that reads them.

    V0 padded with a separate layer; later conv and pool layers pad by themselves. The
    producer of each bottom is tracked by name, as Caffe does, which also means a bottom
    nobody produced is an error here already.
    """
    producers: dict[str, int | None] = dict.fromkeys(net.input)  # None: a net input
    kept: list[tuple[pb.V1LayerParameter, Location]] = []
    for index, entry in enumerate(net.layers):
        copy = V1()
        copy.CopyFrom(entry)
        if entry.layer.type != "padding":
            kept.append((copy, locations[index]))
        for slot, bottom in enumerate(entry.bottom):
            if bottom not in producers:
                raise UpgradeError(
                    f"bottom '{bottom}' is not produced by an earlier layer nor a net input",
                    location=locations[index],
                    layer=entry.layer.name or None,
                    layer_type=entry.layer.type or None,
                )
            producer = producers[bottom]
            if producer is None or net.layers[producer].layer.type != "padding":
                continue
            padding = net.layers[producer]
            _check_padding_use(padding, locations[producer], entry, locations[index])
            copy.layer.pad = padding.layer.pad
            copy.bottom[slot] = padding.bottom[0]
        for top in entry.top:
            producers[top] = index
    return kept


def _check_padding_use(
    padding: pb.V1LayerParameter,
    padding_location: Location,
    consumer: pb.V1LayerParameter,
    consumer_location: Location,
) -> None:
    """Refuse the uses of a padding layer that Caffe refuses (its behaviour was undefined)."""
    kind = consumer.layer.type
    if kind not in ("conv", "pool"):
        raise UpgradeError(
            f"reads the output of padding layer '{padding.layer.name}', which only a conv or pool layer can absorb",
            location=consumer_location,
            layer=consumer.layer.name or None,
            layer_type=kind or None,
            expected="a conv or pool layer",
            received=f"type '{kind}'",
        )
    for who, where, count, what in (
        (consumer, consumer_location, len(consumer.bottom), "bottom"),
        (padding, padding_location, len(padding.bottom), "bottom"),
        (padding, padding_location, len(padding.top), "top"),
    ):
        if count != 1:
            raise UpgradeError(
                f"a padding layer and the layer that absorbs it must have exactly one {what}",
                location=where,
                layer=who.layer.name or None,
                layer_type=who.layer.type or None,
                expected=f"1 {what}",
                received=str(count),
            )


def _v0_layer(entry: pb.V1LayerParameter, location: Location, warnings: list[str]) -> pb.V1LayerParameter:
    """The V1 form of one V0 layer, as Caffe's ``UpgradeV0LayerParameter``."""
    if not entry.HasField("layer"):
        # Caffe would keep only the bottoms and tops: a layer without a type, fatal later.
        raise UpgradeError(
            "a V0 net mixes in a V1 layer (a 'layers' block without a V0 'layer' inside)",
            location=location,
            layer=entry.name or None,
            hint="write every layer of the net in the same format",
        )
    v0 = entry.layer
    label = f"layer '{v0.name}' (V0 type '{v0.type}')"
    ignored = [field.name for field, _ in entry.ListFields() if field.name not in V0_ENTRY_FIELDS]
    if ignored:
        names = ", ".join(ignored)
        warnings.append(f"{label}: V1 fields beside the V0 layer are ignored, as Caffe does: {names}")
    upgraded = V1(bottom=entry.bottom, top=entry.top)
    if v0.HasField("name"):
        upgraded.name = v0.name
    if v0.HasField("type"):
        upgraded.type = _v0_type(v0, location)
    upgraded.blobs.extend(v0.blobs)
    upgraded.blobs_lr.extend(v0.blobs_lr)
    upgraded.weight_decay.extend(v0.weight_decay)
    for field, targets in V0_FIELD_TARGETS.items():
        if not v0.HasField(field):
            continue
        target = targets.get(v0.type, targets.get(ANY_TYPE))
        if target is None:
            warnings.append(f"{label}: V0 field '{field}' does not apply to this type; dropped, as Caffe does")
            continue
        try:
            _assign(upgraded, target, v0, field)
        except ValueError:
            # Only new_height/new_width (int32 -> uint32) can: C++ wraps a negative size
            # into a huge one that fails later; say so here instead.
            raise UpgradeError(
                f"V0 field '{field}' does not fit '{target}'",
                location=location,
                layer=v0.name or None,
                layer_type=v0.type or None,
                expected="a value >= 0",
                received=str(getattr(v0, field)),
            ) from None
    return upgraded


def _v0_type(v0: pb.V0LayerParameter, location: Location) -> int:
    if v0.type not in V0_LAYER_TYPES:
        raise UpgradeError(
            f"unknown V0 layer type '{v0.type}'",
            location=location,
            layer=v0.name or None,
            layer_type=v0.type or None,
            expected="one of " + ", ".join(sorted(V0_LAYER_TYPES)),
        )
    return V0_LAYER_TYPES[v0.type]


def _assign(target: Message, path: str, source: Message, field: str) -> None:
    """Set the field at dotted ``path`` under ``target`` from ``source.field``.

    Repeated targets (the N-d conv geometry) get the value appended; enums are translated
    by name (V0's pool methods are spelled as the pooling layer's).
    """
    *parents, leaf = path.split(".")
    for part in parents:
        target = getattr(target, part)
    to = target.DESCRIPTOR.fields_by_name[leaf]
    value = getattr(source, field)
    if to.is_repeated:
        getattr(target, leaf).append(value)
    elif to.message_type is not None:
        getattr(target, leaf).CopyFrom(value)
    elif to.enum_type is not None:
        from_enum = source.DESCRIPTOR.fields_by_name[field].enum_type
        setattr(target, leaf, _same_enum_value(value, from_enum, to.enum_type))
    else:
        setattr(target, leaf, value)


# --- step 2: transformation fields of V1 data layers -> transform_param -----------------

#: The V1 data layers whose own parameter once held the transformation fields.
V1_DATA_PARAMS: Mapping[int, str] = {
    V1.DATA: "data_param",
    V1.IMAGE_DATA: "image_data_param",
    V1.WINDOW_DATA: "window_data_param",
}
TRANSFORM_FIELDS = ("scale", "mean_file", "crop_size", "mirror")


def _stale_transform_fields(entry: pb.V1LayerParameter) -> list[str]:
    param = V1_DATA_PARAMS.get(entry.type)
    if param is None:
        return []
    return [field for field in TRANSFORM_FIELDS if getattr(entry, param).HasField(field)]


def _has_stale_transform_fields(draft: NetDraft) -> bool:
    return any(_stale_transform_fields(entry) for entry in draft.net.layers)


def _move_transform_fields(draft: NetDraft) -> NetDraft:
    """Move scale/mean_file/crop_size/mirror of V1 data layers into ``transform_param``.

    Like Caffe's ``UpgradeNetDataTransformation``, every data layer of these types gets
    both messages set (possibly empty), so the output matches what Caffe writes.
    """
    upgraded = pb.NetParameter()
    upgraded.CopyFrom(draft.net)
    for entry in upgraded.layers:
        param_name = V1_DATA_PARAMS.get(entry.type)
        if param_name is None:
            continue
        param = getattr(entry, param_name)
        param.SetInParent()
        entry.transform_param.SetInParent()
        for field in TRANSFORM_FIELDS:
            if param.HasField(field):
                setattr(entry.transform_param, field, getattr(param, field))
                param.ClearField(field)
    return replace(draft, net=upgraded)


# --- step 3: V1 layers -> current layers ------------------------------------------------

#: Every V1 enum type and the type string of the layer that replaced it.
V1_LAYER_TYPES: Mapping[int, str] = {
    V1.NONE: "",
    V1.ABSVAL: "AbsVal",
    V1.ACCURACY: "Accuracy",
    V1.ARGMAX: "ArgMax",
    V1.BNLL: "BNLL",
    V1.CONCAT: "Concat",
    V1.CONTRASTIVE_LOSS: "ContrastiveLoss",
    V1.CONVOLUTION: "Convolution",
    V1.DECONVOLUTION: "Deconvolution",
    V1.DATA: "Data",
    V1.DROPOUT: "Dropout",
    V1.DUMMY_DATA: "DummyData",
    V1.EUCLIDEAN_LOSS: "EuclideanLoss",
    V1.ELTWISE: "Eltwise",
    V1.EXP: "Exp",
    V1.FLATTEN: "Flatten",
    V1.HDF5_DATA: "HDF5Data",
    V1.HDF5_OUTPUT: "HDF5Output",
    V1.HINGE_LOSS: "HingeLoss",
    V1.IM2COL: "Im2col",
    V1.IMAGE_DATA: "ImageData",
    V1.INFOGAIN_LOSS: "InfogainLoss",
    V1.INNER_PRODUCT: "InnerProduct",
    V1.LRN: "LRN",
    V1.MEMORY_DATA: "MemoryData",
    V1.MULTINOMIAL_LOGISTIC_LOSS: "MultinomialLogisticLoss",
    V1.MVN: "MVN",
    V1.POOLING: "Pooling",
    V1.POWER: "Power",
    V1.RELU: "ReLU",
    V1.SIGMOID: "Sigmoid",
    V1.SIGMOID_CROSS_ENTROPY_LOSS: "SigmoidCrossEntropyLoss",
    V1.SILENCE: "Silence",
    V1.SOFTMAX: "Softmax",
    V1.SOFTMAX_LOSS: "SoftmaxWithLoss",
    V1.SPLIT: "Split",
    V1.SLICE: "Slice",
    V1.TANH: "TanH",
    V1.WINDOW_DATA: "WindowData",
    V1.THRESHOLD: "Threshold",
}

#: The per-type parameter messages, copied unchanged (same name and message in both).
V1_SUB_PARAMS = (
    "accuracy_param",
    "argmax_param",
    "concat_param",
    "contrastive_loss_param",
    "convolution_param",
    "data_param",
    "dropout_param",
    "dummy_data_param",
    "eltwise_param",
    "exp_param",
    "hdf5_data_param",
    "hdf5_output_param",
    "hinge_loss_param",
    "image_data_param",
    "infogain_loss_param",
    "inner_product_param",
    "lrn_param",
    "memory_data_param",
    "mvn_param",
    "pooling_param",
    "power_param",
    "relu_param",
    "sigmoid_param",
    "softmax_param",
    "slice_param",
    "tanh_param",
    "threshold_param",
    "window_data_param",
    "transform_param",
    "loss_param",
)

#: The V1 per-blob lists, each filling one field of the blob's ParamSpec. The two
#: DimCheckMode enums have the same values, so share modes carry over as numbers.
V1_PARAM_SPEC_FIELDS = (
    ("param", "name"),
    ("blob_share_mode", "share_mode"),
    ("blobs_lr", "lr_mult"),
    ("weight_decay", "decay_mult"),
)


def _has_v1_layers(draft: NetDraft) -> bool:
    return len(draft.net.layers) > 0


def _refuse_mixed_layer_kinds(draft: NetDraft) -> None:
    raise UpgradeError(
        "the net has both current 'layer' blocks and legacy 'layers' blocks",
        location=draft.layer_locations[0] if draft.layer_locations else None,
        layer=draft.net.layer[0].name or None,
        layer_type=draft.net.layer[0].type or None,
        hint='write every layer as layer { type: "Name" ... }, or upgrade the legacy part alone',
    )


def _v1_to_v2(draft: NetDraft) -> NetDraft:
    """Convert ``layers`` (enum types) into ``layer`` (string types), as ``UpgradeV1Net``."""
    if len(draft.net.layer):
        _refuse_mixed_layer_kinds(draft)
    upgraded = _copy_except(draft.net, {"layers", "layer"})
    upgraded.layer.extend(_v1_layer(entry) for entry in draft.net.layers)
    return replace(draft, net=upgraded, layer_locations=draft.legacy_locations, legacy_locations=())


def _v1_layer(v1: pb.V1LayerParameter) -> pb.LayerParameter:
    layer = pb.LayerParameter(bottom=v1.bottom, top=v1.top, include=v1.include, exclude=v1.exclude)
    if v1.HasField("name"):
        layer.name = v1.name
    if v1.HasField("type"):
        layer.type = V1_LAYER_TYPES[v1.type]
    layer.blobs.extend(v1.blobs)
    for v1_field, spec_field in V1_PARAM_SPEC_FIELDS:
        for index, value in enumerate(getattr(v1, v1_field)):
            while len(layer.param) <= index:
                layer.param.add()
            setattr(layer.param[index], spec_field, value)
    layer.loss_weight.extend(v1.loss_weight)
    for name in V1_SUB_PARAMS:
        if v1.HasField(name):
            _copy_submessage(getattr(v1, name), getattr(layer, name))
    return layer


# --- step 4: net-level input fields -> an Input layer ------------------------------------


def _has_input_fields(draft: NetDraft) -> bool:
    return len(draft.net.input) > 0


def _input_fields_to_layer(draft: NetDraft) -> NetDraft:
    """Replace ``input`` (+ ``input_shape`` or ``input_dim``) by an ``Input`` layer, first.

    Inputs without any shape are what old caffemodels carry; Caffe just drops them.
    """
    net = draft.net
    shapes, warnings = _input_shapes(draft)
    upgraded = _copy_except(net, {"input", "input_shape", "input_dim", "layer"})
    locations = draft.layer_locations
    if shapes is not None:
        layer = upgraded.layer.add(name="input", type="Input", top=net.input)
        layer.input_param.shape.extend(shapes)
        locations = (draft.input_location, *locations)
    upgraded.layer.extend(net.layer)
    return replace(draft, net=upgraded, layer_locations=locations, warnings=draft.warnings + warnings)


def _input_shapes(draft: NetDraft) -> tuple[list[pb.BlobShape] | None, tuple[str, ...]]:
    """One shape per input, from ``input_shape`` if given, else 4 ``input_dim`` values each.

    Caffe reads past the end of a list that is too short (undefined behaviour), so that is
    an error; extra values it never reads, so those are only a warning.
    """
    net = draft.net
    count = len(net.input)
    if len(net.input_shape):
        warnings = _check_input_count(draft, len(net.input_shape), count, "input_shape")
        if len(net.input_dim):
            warnings += ("net field 'input_dim' is ignored because 'input_shape' is given",)
        return list(net.input_shape)[:count], warnings
    if len(net.input_dim):
        warnings = _check_input_count(draft, len(net.input_dim), 4 * count, "input_dim")
        dims = list(net.input_dim)
        return [pb.BlobShape(dim=dims[4 * i : 4 * i + 4]) for i in range(count)], warnings
    return None, ()


def _check_input_count(draft: NetDraft, given: int, wanted: int, field: str) -> tuple[str, ...]:
    inputs = len(draft.net.input)
    if given < wanted:
        per_input = "4 per input" if field == "input_dim" else "one per input"
        raise UpgradeError(
            f"too few '{field}' values for the {inputs} net input(s)",
            location=draft.input_location,
            expected=f"{wanted} ({per_input})",
            received=str(given),
        )
    if given > wanted:
        return (
            f"net field '{field}' has {given - wanted} value(s) more than the {inputs} "
            "input(s) use; ignored, as Caffe does",
        )
    return ()


# --- step 5: BatchNorm parameters --------------------------------------------------------


def _is_frozen(spec: pb.ParamSpec) -> bool:
    return spec.HasField("lr_mult") and spec.lr_mult == 0 and spec.HasField("decay_mult") and spec.decay_mult == 0


def _batch_norm_needs_freezing(layer: pb.LayerParameter) -> bool:
    """An old BatchNorm definition: three ParamSpecs, not all explicitly frozen.

    The solver must never update BatchNorm's statistics blobs. Caffe's own check is only
    "three ParamSpecs", which stays true after the fix; asking for the frozen values too
    makes the check false once the step has run, and the step reports no change then.
    """
    return layer.type == "BatchNorm" and len(layer.param) == 3 and not all(map(_is_frozen, layer.param))


def _has_unfrozen_batch_norm(draft: NetDraft) -> bool:
    return any(map(_batch_norm_needs_freezing, draft.net.layer))


def _freeze_batch_norm(draft: NetDraft) -> NetDraft:
    """Set lr_mult and decay_mult to 0 on each ParamSpec, leaving the rest of it alone."""
    upgraded = pb.NetParameter()
    upgraded.CopyFrom(draft.net)
    for layer in upgraded.layer:
        if layer.type == "BatchNorm" and len(layer.param) == 3:
            for spec in layer.param:
                spec.lr_mult = 0
                spec.decay_mult = 0
    return replace(draft, net=upgraded)


#: The net upgrades, in the order of Caffe's ``UpgradeNetAsNeeded``.
NET_STEPS: tuple[Step[NetDraft], ...] = (
    Step("v0_to_v1", _has_v0_layers, _v0_to_v1),
    Step("data_transformation", _has_stale_transform_fields, _move_transform_fields),
    Step("v1_to_v2", _has_v1_layers, _v1_to_v2),
    Step("input_fields", _has_input_fields, _input_fields_to_layer),
    Step("batch_norm_params", _has_unfrozen_batch_norm, _freeze_batch_norm),
)


def net_needs_upgrade(net: pb.NetParameter) -> bool:
    """Whether any upgrade step would change ``net``."""
    draft = NetDraft(net, (), ())  # the checks only read the net, so no copy is needed
    return any(step.needed(draft) for step in NET_STEPS)


def upgrade_net(net: pb.NetParameter, source: SourceMap | None = None) -> UpgradedNet:
    """Upgrade a net to the current format; ``source`` locates its layers for errors.

    Always returns a new message, also when nothing needed upgrading, so the caller may
    change either without affecting the other.
    """
    draft, applied = _run(NET_STEPS, NetDraft.start(net, source))
    return UpgradedNet(draft.net, list(draft.layer_locations), applied, list(draft.warnings))


# --- solver ------------------------------------------------------------------------------

#: The deprecated solver_type enum and the type strings the solver factory knows.
SOLVER_TYPES: Mapping[int, str] = {
    pb.SolverParameter.SGD: "SGD",
    pb.SolverParameter.NESTEROV: "Nesterov",
    pb.SolverParameter.ADAGRAD: "AdaGrad",
    pb.SolverParameter.RMSPROP: "RMSProp",
    pb.SolverParameter.ADADELTA: "AdaDelta",
    pb.SolverParameter.ADAM: "Adam",
}


def _has_solver_type(draft: SolverDraft) -> bool:
    return draft.solver.HasField("solver_type")


def _solver_type_to_string(draft: SolverDraft) -> SolverDraft:
    """Replace the ``solver_type`` enum by the ``type`` string.

    Caffe refuses a solver that sets both, even when they agree, rather than guess which
    one the user meant.
    """
    solver = draft.solver
    if solver.HasField("type"):
        raise UpgradeError(
            "the solver sets both the deprecated 'solver_type' and 'type'",
            location=SourceLocation(draft.file) if draft.file else None,
            received=f'solver_type: {_enum_name(solver, "solver_type")} and type: "{solver.type}"',
            hint="delete the solver_type line",
        )
    upgraded = _copy_except(solver, {"solver_type"})
    upgraded.type = SOLVER_TYPES[solver.solver_type]
    return replace(draft, solver=upgraded)


#: The solver upgrades, in the order of Caffe's ``UpgradeSolverAsNeeded``. Caffe's other
#: solver rewrite, the default ``snapshot_prefix``, depends on the file and is the trainer's.
SOLVER_STEPS: tuple[Step[SolverDraft], ...] = (Step("solver_type", _has_solver_type, _solver_type_to_string),)


def upgrade_solver(solver: pb.SolverParameter, file: str | None = None) -> tuple[pb.SolverParameter, list[str]]:
    """Upgrade a solver to the current format; returns a new message and the steps applied."""
    start = pb.SolverParameter()
    start.CopyFrom(solver)
    draft, applied = _run(SOLVER_STEPS, SolverDraft(start, file))
    return draft.solver, applied
