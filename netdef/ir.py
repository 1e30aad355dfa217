"""The graph IR: layers as nodes, blobs as values, in Caffe's file order.

Caffe names blobs, and an in-place layer (top == bottom) re-produces a blob under the same
name. The IR gives each production its own :class:`Value` (a static single assignment
form), while remembering the Caffe name, so that a later stage can compute each version
and a user asking for ``conv1`` after ``relu1`` ran in place gets the last version, as
Caffe's ``net.blobs['conv1']`` would.

Type-specific knowledge stays in the layer registry; this module only wires and checks.
Problems are collected and reported together (a user fixes a file in one round).
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

from netdef.errors import NetdefError, NetdefErrors, NetDefinitionError, SourceLocation
from netdef.layers.registry import LayerSpec, Shape, closest_type, lookup
from netdef.proto import netdef_pb2 as pb

#: Caffe's name for the top it creates when a loss layer names none.
AUTOMATIC_TOP = "(automatic)"


@dataclass(eq=False)
class Value:
    """One production of a Caffe blob."""

    blob: str
    key: str
    producer: Node | None
    top_index: int
    consumers: list[tuple[Node, int]] = field(default_factory=list)
    shape: Shape | None = None
    loss_weight: float = 0.0

    def __repr__(self) -> str:
        return f"Value({self.key!r}, shape={self.shape})"


@dataclass(eq=False)
class ParamBlob:
    """A learnable blob of a layer with its solver settings (Caffe's ParamSpec)."""

    index: int
    shape: Shape
    lr_mult: float = 1.0
    decay_mult: float = 1.0
    #: Whether the file states the multipliers (matters when blobs are shared).
    lr_mult_given: bool = False
    decay_mult_given: bool = False
    #: ParamSpec.name when the blob is shared by name, else None.
    share_name: str | None = None
    #: The (layer, blob index) owning the data when this blob is a shared copy, else None.
    owner: tuple[str, int] | None = None

    @property
    def count(self) -> int:
        return math.prod(self.shape)


@dataclass(frozen=True)
class Split:
    """A Split layer Caffe would insert for a blob production used more than once.

    The IR reads one value from several places without copies; Caffe instead inserts a
    Split layer whose tops (``<blob>_<producer>_<top index>_split_<k>``) appear in its blob
    list and logs. ``tops[k]`` feeds ``readers[k]``; when the production carries an explicit
    loss weight, ``tops[0]`` takes that weight and the readers get the following tops.
    """

    name: str
    value: Value
    tops: tuple[str, ...]
    readers: tuple[tuple[Node, int], ...]
    carries_loss: bool


@dataclass(eq=False)
class Node:
    """One Caffe layer."""

    index: int
    param: pb.LayerParameter
    spec: LayerSpec
    location: SourceLocation | None
    bottoms: list[Value] = field(default_factory=list)
    tops: list[Value] = field(default_factory=list)
    propagate_down: list[bool] = field(default_factory=list)
    blobs: list[ParamBlob] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.param.name

    @property
    def type(self) -> str:
        return self.param.type

    @property
    def is_source(self) -> bool:
        """Whether the layer's tops come from outside the net (Input and data layers)."""
        return self.spec.data or self.type == "Input"

    def in_place(self, top_index: int) -> bool:
        return top_index < len(self.bottoms) and self.bottoms[top_index].blob == self.tops[top_index].blob

    @property
    def param_count(self) -> int:
        return sum(blob.count for blob in self.blobs)

    def error(self, message: str, cls: type[NetdefError] = NetDefinitionError, **kwargs: str) -> NetdefError:
        return cls(message, location=self.location, layer=self.name, layer_type=self.type, **kwargs)

    def __repr__(self) -> str:
        return f"Node({self.name!r}, {self.type})"


@dataclass
class Net:
    """A network of one phase/level/stage selection, validated and in Caffe's order."""

    param: pb.NetParameter
    file: str
    nodes: list[Node] = field(default_factory=list)
    values: dict[str, Value] = field(default_factory=dict)
    warnings: list[NetdefError] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.param.name

    @property
    def state(self) -> pb.NetState:
        return self.param.state

    @property
    def phase(self) -> int:
        return self.param.state.phase

    @property
    def inputs(self) -> list[Value]:
        """The tops of Input layers: what a caller feeds (Caffe's ``net.inputs``)."""
        return [top for node in self.nodes if node.type == "Input" for top in node.tops]

    @property
    def feeds(self) -> list[Value]:
        """Blobs supplied from outside the net: tops of Input and data layers, in net order."""
        return [top for node in self.nodes if node.is_source for top in node.tops]

    @property
    def outputs(self) -> list[Value]:
        """Blobs that no layer consumes, ordered by name as Caffe's ``net.outputs``."""
        latest = self._latest()
        unconsumed = [v for v in latest.values() if not v.consumers and v.blob != AUTOMATIC_TOP]
        return sorted(unconsumed, key=lambda value: value.blob)

    def blob(self, name: str) -> Value:
        """The last production of a Caffe blob: what Caffe shows after a forward pass."""
        latest = self._latest()
        if name not in latest:
            close = difflib.get_close_matches(name, list(latest), n=1)
            raise NetDefinitionError(
                f"the net has no blob named '{name}'",
                location=SourceLocation(self.file),
                hint=f"did you mean '{close[0]}'?" if close else None,
            )
        return latest[name]

    def versions(self, name: str) -> list[Value]:
        """Every production of a blob, in order (more than one when layers run in place)."""
        return [value for value in self.values.values() if value.blob == name]

    def layer(self, name: str) -> Node:
        for node in self.nodes:
            if node.name == name:
                return node
        raise NetDefinitionError(f"the net has no layer named '{name}'", location=SourceLocation(self.file))

    @property
    def shapes(self) -> dict[str, Shape | None]:
        """Blob name → shape of its last production."""
        return {name: value.shape for name, value in self._latest().items()}

    @property
    def blob_names(self) -> list[str]:
        return list(self._latest())

    def learnable(self) -> Iterator[tuple[Node, ParamBlob]]:
        """Blobs that own their data (shared copies excluded), in net order."""
        for node in self.nodes:
            for blob in node.blobs:
                if blob.owner is None:
                    yield node, blob

    @property
    def param_count(self) -> int:
        """Elements of distinct parameter blobs (shared blobs counted once)."""
        return sum(blob.count for _, blob in self.learnable())

    @property
    def splits(self) -> list[Split]:
        """The Split layers Caffe's ``InsertSplits`` would add, in net order."""
        splits = []
        for value in self.values.values():
            loss = _explicit_loss_weight(value) != 0
            uses = len(value.consumers) + loss
            if value.producer is None or uses < 2:
                continue
            stem = f"{value.blob}_{value.producer.name}_{value.top_index}_split"
            splits.append(
                Split(
                    name=stem,
                    value=value,
                    tops=tuple(f"{stem}_{k}" for k in range(uses)),
                    readers=tuple(value.consumers),
                    carries_loss=loss,
                )
            )
        return splits

    def summary(self) -> str:
        """The table ``netdef summary`` prints."""
        from netdef.summary import summary_table

        return summary_table(self)

    def _latest(self) -> dict[str, Value]:
        latest: dict[str, Value] = {}
        for value in self.values.values():
            if value.blob != AUTOMATIC_TOP:
                latest[value.blob] = value
        return latest


@dataclass
class _Producer:
    node_index: int
    value: Value


def build_graph(
    param: pb.NetParameter,
    locations: Sequence[SourceLocation | None],
    file: str,
    *,
    allow_python: bool = False,
) -> Net:
    """Wire layers into a Net and check what Caffe's ``Net::Init`` checks, all at once."""
    net = Net(param=param, file=file)
    errors: list[NetdefError] = []
    if not param.layer:
        raise NetDefinitionError(
            "the net defines no layers",
            location=SourceLocation(file),
            hint="a net needs at least one 'layer { ... }' block",
        )
    available: dict[str, Value] = {}
    names: dict[str, Node] = {}
    for index, layer in enumerate(param.layer):
        location = locations[index] if index < len(locations) else None
        spec = _spec_for(layer, location, allow_python, errors)
        node = Node(index=index, param=layer, spec=spec, location=location)  # type: ignore[arg-type]
        if layer.name in names:
            net.warnings.append(node.error(f"the layer name is also used by the layer on {names[layer.name].location}"))
        names.setdefault(layer.name, node)
        if spec is not None:
            _check_arity(node, errors)
            _check_counts(node, errors)
            _check_unused_params(node, net.warnings)
        _wire_bottoms(node, param, available, errors)
        _wire_tops(node, available, net, errors)
        node.propagate_down = list(layer.propagate_down) or [True] * len(node.bottoms)
        net.nodes.append(node)
    _check_in_place_readers(net, errors)
    if errors:
        raise errors[0] if len(errors) == 1 else NetdefErrors(errors)
    return net


def _spec_for(
    layer: pb.LayerParameter,
    location: SourceLocation | None,
    allow_python: bool,
    errors: list[NetdefError],
) -> LayerSpec | None:
    def fail(message: str, hint: str | None) -> None:
        errors.append(
            NetDefinitionError(
                message, location=location, layer=layer.name or None, layer_type=layer.type or None, hint=hint
            )
        )

    if not layer.type:
        fail("the layer has no type", 'add a line such as type: "Convolution"')
        return None
    spec = lookup(layer.type)
    if spec is None:
        close = closest_type(layer.type)
        fail(f"unknown layer type '{layer.type}'", f"did you mean '{close}'?" if close else None)
        return None
    if spec.type == "Python" and not allow_python:
        module = f"{layer.python_param.module}.{layer.python_param.layer}"
        fail(
            f"Python layer '{module}' would run arbitrary code and is refused",
            "allow it explicitly (allow_python=True, --allow-python) if you trust the file",
        )
        return None
    return spec


def _check_arity(node: Node, errors: list[NetdefError]) -> None:
    spec, layer = node.spec, node.param
    if not spec.bottoms.accepts(len(layer.bottom)):
        errors.append(
            node.error("wrong number of bottoms", expected=str(spec.bottoms), received=str(len(layer.bottom)))
        )
    tops = len(layer.top)
    if not spec.tops.accepts(tops) and not (spec.loss and tops < spec.tops.min):
        errors.append(node.error("wrong number of tops", expected=str(spec.tops), received=str(tops)))


def _check_counts(node: Node, errors: list[NetdefError]) -> None:
    layer = node.param
    tops = max(len(layer.top), node.spec.tops.min if node.spec.loss else 0)
    if layer.loss_weight and len(layer.loss_weight) != tops:
        errors.append(
            node.error(
                "loss_weight must be given once per top or not at all",
                expected=f"{tops} values",
                received=f"{len(layer.loss_weight)}",
            )
        )
    if layer.propagate_down and len(layer.propagate_down) != len(layer.bottom):
        errors.append(
            node.error(
                "propagate_down must be given once per bottom or not at all",
                expected=f"{len(layer.bottom)} values",
                received=f"{len(layer.propagate_down)}",
            )
        )


def _check_unused_params(node: Node, warnings: list[NetdefError]) -> None:
    used = set(node.spec.params)
    for descriptor, _ in node.param.ListFields():
        if descriptor.name.endswith("_param") and descriptor.message_type is not None and descriptor.name not in used:
            warnings.append(node.error(f"{descriptor.name} is set but {node.type} does not use it; Caffe ignores it"))


def _wire_bottoms(
    node: Node,
    param: pb.NetParameter,
    available: dict[str, Value],
    errors: list[NetdefError],
) -> None:
    for bottom_index, name in enumerate(node.param.bottom):
        value = available.get(name)
        if value is None:
            errors.append(_missing_bottom(node, name, param, available))
            value = Value(blob=name, key=f"{name}?{node.name}", producer=None, top_index=-1)
        value.consumers.append((node, bottom_index))
        node.bottoms.append(value)


def _missing_bottom(node: Node, name: str, param: pb.NetParameter, available: dict[str, Value]) -> NetdefError:
    later = [layer for layer in param.layer[node.index + 1 :] if name in layer.top]
    if later:
        producer = later[0]
        cycle = _depends_on(param, producer, node.param)
        what = "forms a cycle" if cycle else "comes later in the file"
        return node.error(
            f"bottom '{name}' is produced by layer '{producer.name}', which {what}",
            hint="Caffe runs layers in file order: a layer must come after the layers it reads"
            if not cycle
            else "break the loop; Caffe nets are acyclic",
        )
    close = difflib.get_close_matches(name, list(available), n=1)
    return node.error(
        f"no earlier layer produces bottom '{name}'",
        hint=f"did you mean '{close[0]}'?" if close else "check the spelling, phase and stage rules",
    )


def _depends_on(param: pb.NetParameter, start: pb.LayerParameter, target: pb.LayerParameter) -> bool:
    """Whether ``start`` reads, directly or not, a top of ``target`` (by names, any order)."""
    producers: dict[str, list[pb.LayerParameter]] = {}
    for layer in param.layer:
        for top in layer.top:
            producers.setdefault(top, []).append(layer)
    seen: set[int] = set()
    stack = [start]
    while stack:
        layer = stack.pop()
        if id(layer) in seen:
            continue
        seen.add(id(layer))
        for bottom in layer.bottom:
            for producer in producers.get(bottom, []):
                if producer is target or producer == target:
                    return True
                stack.append(producer)
    return False


def _wire_tops(node: Node, available: dict[str, Value], net: Net, errors: list[NetdefError]) -> None:
    layer, spec = node.param, node.spec
    names = list(layer.top)
    if spec is not None and spec.loss:
        names += [AUTOMATIC_TOP] * (spec.tops.min - len(names))
    for top_index, name in enumerate(names):
        in_place = top_index < len(layer.bottom) and layer.bottom[top_index] == name
        if in_place and spec is not None and not spec.in_place:
            errors.append(
                node.error(
                    f"{node.type} cannot run in place (top '{name}' is also its bottom)", hint="give the top a new name"
                )
            )
        elif not in_place and name in available and name != AUTOMATIC_TOP:
            producer = available[name].producer
            where = f"layer '{producer.name}'" if producer else "another layer"
            errors.append(
                node.error(
                    f"top '{name}' is already produced by {where}",
                    hint="blob names must be unique unless a layer runs in place",
                )
            )
        value = Value(blob=name, key=_unique_key(name, node, net), producer=node, top_index=top_index)
        value.loss_weight = _loss_weight(layer, spec, top_index)
        node.tops.append(value)
        net.values[value.key] = value
        if name != AUTOMATIC_TOP:
            available[name] = value


def _unique_key(name: str, node: Node, net: Net) -> str:
    key = name if name not in net.values else f"{name}@{node.name}"
    suffix = 1
    while key in net.values:
        suffix += 1
        key = f"{name}@{node.name}#{suffix}"
    return key


def _loss_weight(layer: pb.LayerParameter, spec: LayerSpec | None, top_index: int) -> float:
    if layer.loss_weight:
        return layer.loss_weight[top_index] if top_index < len(layer.loss_weight) else 0.0
    return 1.0 if spec is not None and spec.loss and top_index == 0 else 0.0


def _explicit_loss_weight(value: Value) -> float:
    """The loss weight written in the file; Caffe's split insertion ignores the defaults."""
    if value.producer is None:
        return 0.0
    weights = value.producer.param.loss_weight
    return weights[value.top_index] if value.top_index < len(weights) else 0.0


def _check_in_place_readers(net: Net, errors: list[NetdefError]) -> None:
    """A blob rewritten in place must have no other reader of that same production.

    Caffe inserts a Split for such a blob, which turns the in-place layer's top into a
    second producer of the name and stops with "produced by multiple sources".
    """
    for value in net.values.values():
        readers = value.consumers
        rewriters = [node for node, index in readers if index < len(node.tops) and node.in_place(index)]
        uses = len(readers) + (_explicit_loss_weight(value) != 0)
        if rewriters and uses > 1:
            others = [node.name for node, _ in readers if node is not rewriters[0]]
            # With no other reader, the second use is the loss weight of the producer's top.
            other = others[0] if others else value.producer.name
            errors.append(
                rewriters[0].error(
                    f"rewrites blob '{value.blob}' in place while layer '{other}' also reads it",
                    hint="give this layer's top a new name",
                )
            )
