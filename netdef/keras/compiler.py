"""Compile the IR into a Keras functional model by instantiating each layer's Keras plan.

The compiler knows nothing about particular Caffe types: each declaration's ``keras`` rule
returns a plan (calls, weight links, layouts) and this module applies it, inserting the
permutes that move blobs between Caffe's layout and channels-last where a plan asks.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import keras

from netdef.errors import NetDefinitionError
from netdef.ir import AUTOMATIC_TOP, Net, Node, Value
from netdef.keras import layout as lay
from netdef.layers.registry import KerasContext, KerasPlan, LayerContext, Ref, Shape
from netdef.load import NetSource, load_net
from netdef.names import UniqueNames, keras_name
from netdef.proto import netdef_pb2 as pb

T = TypeVar("T")


@dataclass
class Binding:
    """Where the Caffe blobs of one layer live in a compiled model."""

    node: Node
    plan: KerasPlan
    #: Keras layer name of each plan call.
    layer_names: list[str]


@dataclass
class Compiled:
    """A compiled model with the bookkeeping weight transfer needs."""

    model: keras.Model
    net: Net
    layout: str
    bindings: list[Binding] = field(default_factory=list)


def _import(path: str) -> type:
    module, _, name = path.rpartition(".")
    return getattr(importlib.import_module(module), name)


def plan_net(net: Net, layout: str) -> dict[str, KerasPlan]:
    """Every layer's Keras plan (by layer name), from the layouts its bottoms are held in.

    Planning is pure and cheap, so it runs as a pass of its own: what the plans ask of the
    whole model (a static batch size) is known before the first Keras layer is made.
    """
    if layout not in lay.LAYOUTS:
        raise NetDefinitionError(f"unknown layout '{layout}'", expected=" or ".join(lay.LAYOUTS), received=layout)
    held: dict[str, str] = {}
    plans: dict[str, KerasPlan] = {}
    for node in net.nodes:
        if node.is_source:
            held.update({value.key: boundary_layout(value, layout) for value in node.tops})
            continue
        if node.spec.keras is None:
            if node.tops:
                raise node.error(f"{node.type} layers cannot be compiled to Keras")
            continue
        context = KerasContext(
            shape=LayerContext(layer=node.param, bottoms=[v.shape for v in node.bottoms], phase=net.phase),  # type: ignore[misc]
            bottom_layouts=[held[v.key] for v in node.bottoms],
            top_shapes=[v.shape for v in node.tops],  # type: ignore[misc]
            blob_shapes=[b.shape for b in node.blobs],
            boundary=layout,
        )
        plan = node.spec.keras(context)
        plans[node.name] = plan
        held.update({value.key: top for value, top in zip(node.tops, plan.top_layouts, strict=True)})
    return plans


def boundary_layout(value: Value, layout: str) -> str:
    """The layout a model input or output is exposed in: the requested one for image blobs."""
    return layout if value.shape is not None and lay.spatial(len(value.shape)) else lay.CAFFE


class PlanWalker(Generic[T]):
    """Walks a planned net in Keras construction order; subclasses decide what a tensor is.

    The compiler makes Keras layers and the code generator writes the same layers as source;
    both must agree on every layer, name, permute and their order, so the decisions (which
    blob is permuted when, which name each layer takes, the static batch) live here once.
    """

    def __init__(self, net: Net, layout: str, plans: dict[str, KerasPlan]) -> None:
        self.net = net
        self.layout = layout
        self.plans = plans
        # Caffe's batch size is fixed; Keras's stays free unless a layer needs it fixed.
        self.static_batch = any(plan.static_batch for plan in plans.values())
        self.names = UniqueNames()
        self.tensors: dict[str, tuple[T, str]] = {}  # value key -> (tensor, layout)
        self.converted: dict[tuple[str, str], T] = {}
        self.inputs: list[T] = []
        self.bindings: list[Binding] = []

    def make_input(self, value: Value, shape: tuple[int, ...], batch_size: int | None, name: str) -> T:
        """A model input of ``shape`` (batch axis excluded)."""
        raise NotImplementedError

    def make_permute(self, value: Value, tensor: T, dims: tuple[int, ...], name: str) -> T:
        """``keras.layers.Permute(dims)`` applied to ``tensor``, which holds ``value``."""
        raise NotImplementedError

    def make_call(self, node: Node, index: int, name: str, args: list[T]) -> Any:
        """Apply call ``index`` of the node's plan to ``args``; the result is read by :meth:`pick`."""
        raise NotImplementedError

    def pick(self, result: Any, index: int) -> T:
        """Output ``index`` of a call's result."""
        raise NotImplementedError

    def walk(self, values: Sequence[Value]) -> list[T]:
        """Visit every layer of the net in order; the tensors of ``values``, the model outputs."""
        for node in self.net.nodes:
            self.add_node(node)
        return [self.tensor(value, boundary_layout(value, self.layout)) for value in values]

    def tensor(self, value: Value, wanted: str | None) -> T:
        """A blob in the layout ``wanted`` (None: as held), permuted at most once per layout."""
        tensor, held = self.tensors[value.key]
        if wanted is None or wanted == held or value.shape is None or not lay.spatial(len(value.shape)):
            return tensor
        key = (value.key, wanted)
        if key not in self.converted:
            perm = lay.permutation(len(value.shape), held, wanted)
            name = self.names.take(keras_name(f"{value.blob}_to_{wanted}"))
            self.converted[key] = self.make_permute(value, tensor, tuple(a for a in perm[1:]), name)
        return self.converted[key]

    def add_input(self, value: Value) -> None:
        shape = value.shape
        if shape is None:
            raise NetDefinitionError(f"the shape of input blob '{value.blob}' is unknown")
        boundary = boundary_layout(value, self.layout)
        tensor = self.make_input(
            value,
            lay.shape(shape, boundary)[1:],
            shape[0] if self.static_batch and shape else None,
            self.names.take(keras_name(value.blob)),
        )
        self.inputs.append(tensor)
        self.tensors[value.key] = (tensor, boundary)

    def add_node(self, node: Node) -> None:
        if node.is_source:
            for value in node.tops:
                self.add_input(value)
            return
        plan = self.plans.get(node.name)
        if plan is None:
            return
        wanted = list(plan.bottom_layouts) + [None] * (len(node.bottoms) - len(plan.bottom_layouts))
        bottoms = [self.tensor(value, layout) for value, layout in zip(node.bottoms, wanted, strict=True)]
        outputs: list[Any] = []
        names: list[str] = []
        for index, call in enumerate(plan.calls):
            name = self.names.take(keras_name(node.name if not call.suffix else f"{node.name}_{call.suffix}"))
            names.append(name)
            args = [self._resolve(ref, bottoms, outputs) for ref in call.inputs]
            outputs.append(self.make_call(node, index, name, args))
        for value, ref, top_layout in zip(node.tops, plan.tops, plan.top_layouts, strict=True):
            self.tensors[value.key] = (self._resolve(ref, bottoms, outputs), top_layout)
        self.bindings.append(Binding(node, plan, names))

    def _resolve(self, ref: Ref, bottoms: list[T], outputs: list[Any]) -> T:
        if ref.source == "anchor":
            if not self.inputs:
                raise NetDefinitionError("a layer without bottoms needs an Input layer before it")
            return self.inputs[0]
        return bottoms[ref.index] if ref.source == "bottom" else self.pick(outputs[ref.index], ref.output)


class _Builder(PlanWalker[Any]):
    """Instantiates the plans as Keras layers."""

    def make_input(self, value: Value, shape: tuple[int, ...], batch_size: int | None, name: str) -> Any:
        return keras.Input(shape=shape, batch_size=batch_size, name=name)

    def make_permute(self, value: Value, tensor: Any, dims: tuple[int, ...], name: str) -> Any:
        return keras.layers.Permute(dims, name=name)(tensor)

    def make_call(self, node: Node, index: int, name: str, args: list[Any]) -> Any:
        call = self.plans[node.name].calls[index]
        layer = _import(call.cls)(**call.kwargs, name=name)
        return layer(args if call.as_list or len(args) > 1 else args[0])

    def pick(self, result: Any, index: int) -> Any:
        return result[index] if isinstance(result, (list, tuple)) else result


class _Binder(PlanWalker[None]):
    """Walks the plans for the names alone (of layers, and of inputs by value key), building nothing."""

    def __init__(self, net: Net, layout: str, plans: dict[str, KerasPlan]) -> None:
        super().__init__(net, layout, plans)
        self.input_names: dict[str, str] = {}

    def make_input(self, value: Value, shape: tuple[int, ...], batch_size: int | None, name: str) -> None:
        self.input_names[value.key] = name

    def make_permute(self, value: Value, tensor: None, dims: tuple[int, ...], name: str) -> None:
        return None

    def make_call(self, node: Node, index: int, name: str, args: list[None]) -> None:
        return None

    def pick(self, result: Any, index: int) -> None:
        return None


def bind(model: keras.Model, net: Net, layout: str = lay.CAFFE) -> Compiled:
    """``compile_net``'s bookkeeping for a model built elsewhere from the same plans.

    The code generator's modules build the model without netdef; binding it to the net
    lets netdef's weight transfer find each Caffe blob's variable by the same layer names.
    """
    binder = _Binder(net, layout, plan_net(net, layout))
    binder.walk([])
    return Compiled(model=model, net=net, layout=layout, bindings=binder.bindings)


def input_names(net: Net) -> dict[str, str]:
    """Each fed value's key → the name of its ``keras.Input`` in ``compile_net(net)``'s model.

    Input names do not depend on the layout, so feeding code can name its batches without
    building a model.
    """
    binder = _Binder(net, lay.CAFFE, plan_net(net, lay.CAFFE))
    binder.walk([])
    return binder.input_names


def model_outputs(net: Net) -> list[Value]:
    """Blobs nobody consumes, as Caffe's ``net.outputs``, plus the automatic tops of losses."""
    automatic = [v for v in net.values.values() if v.blob == AUTOMATIC_TOP]
    return [*net.outputs, *automatic]


def output_values(net: Net, outputs: Iterable[str] | None = None) -> list[Value]:
    """The blobs a model exposes: those named in ``outputs``, else the net's outputs."""
    values = [net.blob(name) for name in outputs] if outputs is not None else model_outputs(net)
    if not values:
        raise NetDefinitionError("the net has no outputs to compute", hint="every blob is consumed or silenced")
    return values


def compile_net(net: Net, layout: str = lay.CAFFE, outputs: Iterable[str] | None = None) -> Compiled:
    """Build the Keras model of ``net``; ``outputs`` names Caffe blobs to expose instead of the net's outputs."""
    builder = _Builder(net, layout, plan_net(net, layout))
    tensors = builder.walk(output_values(net, outputs))
    model = keras.Model(builder.inputs, tensors, name=keras_name(net.name or "net"))
    return Compiled(model=model, net=net, layout=layout, bindings=builder.bindings)


def to_keras(
    net_or_path: NetSource | Net,
    weights: str | os.PathLike[str] | None = None,
    phase: str = "TEST",
    stages: Iterable[str] = (),
    layout: str = lay.CAFFE,
    *,
    level: int = 0,
    data_shapes: Mapping[str, Shape] | None = None,
) -> keras.Model:
    """A Keras model computing what Caffe computes for this net.

    With ``layout="caffe"`` the model takes and returns blobs in Caffe's (N, C, H, W) order,
    so arrays prepared for pycaffe feed it unchanged; with ``"channels_last"`` it is a
    Keras-native model. Inside, images are computed channels-last either way.
    """
    net = load_net(net_or_path, phase=phase, stages=stages, level=level, data_shapes=data_shapes)
    compiled = compile_net(net, layout)
    if weights is not None:
        from netdef.keras.weights import load_caffe_weights

        load_caffe_weights(compiled, weights)
    return compiled.model


def forward(compiled: Compiled, feeds: Sequence[Any]) -> list[Any]:
    """One forward pass on whole arrays in the net's phase, outputs as numpy arrays.

    A TRAIN-phase net runs its training behaviour (Dropout drops, BatchNorm uses batch
    statistics), as Caffe's forward in that phase does. ``model.predict`` would batch its
    inputs and concatenate the results, which scalar outputs (losses, accuracy) and inputs
    of different lengths cannot go through; Caffe's forward takes the blobs as they are.
    """
    training = compiled.net.phase == pb.TRAIN
    results = compiled.model(list(feeds), training=training)
    results = results if isinstance(results, (list, tuple)) else [results]
    return [keras.ops.convert_to_numpy(result) for result in results]
