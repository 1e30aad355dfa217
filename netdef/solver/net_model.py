"""The trainable Keras model of a Caffe TRAIN net, and the solver rules of its variables.

A compiled TRAIN net computes its losses as outputs (Caffe's loss layers return the
unweighted loss). :class:`CaffeTrainingModel` makes Caffe's objective, ``Σ loss_weight ·
Σ top`` over the weighted tops, the loss Keras's ``fit`` minimizes, so a net trains with
Keras's own loop on any backend; every net output is reported per batch under its blob
name for Caffe's "Train net output #k" lines.

:func:`param_rules` and :func:`learnable_variables` translate the IR's ParamSpecs to Keras
variables: lr_mult and decay_mult per variable, the groups of variables that are one
shared Caffe param, and Caffe's ``learnable_params`` order (which .solverstate history
follows).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import keras
import numpy as np
from keras import ops

from netdef.errors import NetDefinitionError
from netdef.ir import AUTOMATIC_TOP, Net, Node, ParamBlob, Value
from netdef.keras import layout as lay
from netdef.keras.compiler import Compiled, compile_net, model_outputs
from netdef.keras.weights import CONVERTERS, blob_variables
from netdef.layers.registry import WeightLink
from netdef.names import UniqueNames
from netdef.solver.optimizers import ParamRule

#: The Keras log key of the objective.
LOSS_KEY = "loss"


@dataclass(frozen=True)
class NetOutput:
    """A net output as Caffe displays it: blob name, its key in Keras's logs, loss weight."""

    name: str
    key: str
    loss_weight: float
    #: Position among the Keras model's outputs.
    index: int


def _weighted_inner_values(net: Net) -> list[Value]:
    """Blobs with a loss weight that other layers also read (Caffe splits them; they are
    not net outputs but still count in the objective)."""
    outputs = {value.key for value in model_outputs(net)}
    return [
        value
        for value in net.values.values()
        if value.loss_weight != 0 and value.key not in outputs and value.blob != AUTOMATIC_TOP
    ]


def compile_training_net(net: Net, layout: str = lay.CAFFE) -> Compiled:
    """``compile_net`` for training: the net outputs plus any loss-weighted blob that is read
    further on (Caffe's ``loss_weight`` on an inner top), which the objective needs."""
    inner = _weighted_inner_values(net)
    if not inner:
        return compile_net(net, layout)
    values = model_outputs(net)
    automatic = [value.producer.name for value in values if value.blob == AUTOMATIC_TOP and value.producer]
    if automatic:
        raise NetDefinitionError(
            f"the loss layer '{automatic[0]}' has no named top, and the net also weights inner blobs",
            hint="name the loss layer's top",
        )
    return compile_net(net, layout, outputs=[value.blob for value in values + inner])


class CaffeTrainingModel(keras.Model):
    """A compiled TRAIN net whose loss is Caffe's objective.

    ``call`` always runs the net's training behaviour (Dropout drops, BatchNorm uses and
    updates batch statistics), as Caffe's train net does. Variables of blobs with lr_mult 0
    are made non-trainable, as Caffe computes no gradient for them. ``fit`` needs no
    targets: the dataset yields dicts of the net's inputs by Keras input name.

    The logs of each batch hold Caffe's per-iteration values, not Keras's epoch means
    (Caffe smooths the loss over ``average_loss`` iterations itself): ``loss`` is the
    objective of the batch, and each net output (:attr:`net_outputs`, in Caffe's display
    order) is under its key: its blob name, or ``loss_output`` for a blob named ``loss``
    that is not the whole objective.
    """

    def __init__(self, compiled: Compiled, **kwargs: Any) -> None:
        super().__init__(name=kwargs.pop("name", compiled.model.name + "_train"), **kwargs)
        self.network = compiled.model
        self.compiled_net = compiled
        values = model_outputs(compiled.net)
        inner = _weighted_inner_values(compiled.net)
        count = len(self.network.outputs)
        if inner and count == len(values) + len(inner):
            values = values + inner
        elif inner:
            raise NetDefinitionError(
                f"blob '{inner[0].blob}' has a loss weight but is not an output of the compiled model",
                hint="compile with netdef.solver.net_model.compile_training_net",
            )
        elif count != len(values):
            raise NetDefinitionError(
                "the compiled model does not expose the net's outputs",
                expected=f"{len(values)} outputs",
                received=str(count),
                hint="compile with netdef.solver.net_model.compile_training_net",
            )
        weighted = [(index, value) for index, value in enumerate(values) if value.loss_weight != 0]
        if not weighted:
            raise NetDefinitionError(
                "the net has no loss: no top has a loss weight",
                hint="add a loss layer, or a loss_weight to a top",
            )
        # Caffe adds the layers' losses in net order.
        weighted.sort(key=lambda item: item[1].producer.index if item[1].producer else 0)
        self.loss_terms: tuple[tuple[int, float], ...] = tuple((index, value.loss_weight) for index, value in weighted)
        self.net_outputs: tuple[NetOutput, ...] = _net_outputs(values[: len(model_outputs(compiled.net))], weighted)
        # Caffe computes no gradient for a param with lr_mult 0; Keras computes none for a
        # non-trainable variable (the optimizer would leave it untouched either way).
        rules, _ = param_rules(compiled)
        for variable in self.network.weights:
            if variable.path in rules and rules[variable.path].lr_mult == 0:
                variable.trainable = False
        self.built = True

    @classmethod
    def from_net(cls, net: Net, layout: str = lay.CAFFE) -> CaffeTrainingModel:
        """Compile a TRAIN-phase net for training (see :func:`compile_training_net`)."""
        return cls(compile_training_net(net, layout))

    def call(self, inputs: Any, training: bool | None = None) -> Any:
        return self.network(inputs, training=True)

    def compute_loss(
        self,
        x: Any = None,
        y: Any = None,
        y_pred: Any = None,
        sample_weight: Any = None,
        training: bool = True,
    ) -> Any:
        """Caffe's objective: ``Σ loss_weight · sum(top)`` over the weighted tops."""
        outputs = _as_list(y_pred)
        total = None
        for index, weight in self.loss_terms:
            term = ops.sum(outputs[index]) * weight
            total = term if total is None else total + term
        return total

    def compute_metrics(self, x: Any, y: Any, y_pred: Any, sample_weight: Any = None) -> dict[str, Any]:
        outputs = _as_list(y_pred)
        results = {LOSS_KEY: self.compute_loss(y_pred=outputs)}
        for output in self.net_outputs:
            results[output.key] = outputs[output.index]
        return results


def _as_list(y_pred: Any) -> list[Any]:
    return list(y_pred) if isinstance(y_pred, (list, tuple)) else [y_pred]


def _net_outputs(values: Sequence[Value], weighted: Sequence[tuple[int, Value]]) -> tuple[NetOutput, ...]:
    """Caffe's output list (ordered by blob name, as its ``std::set``) with their log keys.

    A blob named ``loss`` that alone makes up the objective (weight 1, one element) has the
    objective's value and shares its key; any other gets ``loss_output``.
    """
    sole_loss = len(weighted) == 1 and weighted[0][1].loss_weight == 1 and _is_scalar(weighted[0][1])
    keys = UniqueNames()
    keys.take(LOSS_KEY)
    outputs = []
    for index, value in sorted(enumerate(values), key=lambda item: item[1].blob):
        if value.blob == LOSS_KEY and sole_loss and weighted[0][0] == index:
            key = LOSS_KEY
        else:
            key = keys.take(value.blob if value.blob != LOSS_KEY else f"{LOSS_KEY}_output")
        outputs.append(NetOutput(value.blob, key, value.loss_weight, index))
    return tuple(outputs)


def _is_scalar(value: Value) -> bool:
    return value.shape is not None and int(np.prod(value.shape, dtype=np.int64)) == 1


def _blob_entries(compiled: Compiled) -> list[tuple[Node, int, WeightLink, Any]]:
    """(layer, blob index, link, variable) of every Caffe blob the model holds, in net order."""
    return [(binding.node, link.blob, link, variable) for binding, link, variable in blob_variables(compiled)]


def _owner(nodes: dict[str, Node], node: Node, index: int) -> tuple[Node, ParamBlob]:
    """The layer and ParamBlob that own a blob's data (itself unless shared)."""
    blob = node.blobs[index]
    if blob.owner is None:
        return node, blob
    owner_layer, owner_index = blob.owner
    return nodes[owner_layer], nodes[owner_layer].blobs[owner_index]


def _caffe_positions(node: Node, index: int, link: WeightLink) -> np.ndarray:
    """For each element of the Keras variable (flattened), its index in the flat Caffe blob."""
    shape = node.blobs[index].shape
    positions = np.arange(int(np.prod(shape, dtype=np.int64)), dtype=np.int64).reshape(shape)
    return np.asarray(CONVERTERS[link.convert].to_keras(positions, link.args)).reshape(-1)


def param_rules(compiled: Compiled) -> tuple[dict[str, ParamRule], list[list[str]]]:
    """lr_mult/decay_mult of every variable (by ``variable.path``) and the shared groups.

    A shared blob takes its owner's multipliers, as Caffe's ``learnable_params`` do; each
    group lists the variables of one shared param, the owner's first. Blobs that Caffe
    does not learn (BatchNorm's statistics) have lr_mult 0.
    """
    nodes: dict[str, Node] = {}
    for node in compiled.net.nodes:
        nodes.setdefault(node.name, node)
    rules: dict[str, ParamRule] = {}
    groups: dict[tuple[str, int], list[tuple[Node, int, WeightLink, Any]]] = {}
    for node, index, link, variable in _blob_entries(compiled):
        owner_node, owner = _owner(nodes, node, index)
        rules[variable.path] = ParamRule(lr_mult=owner.lr_mult, decay_mult=owner.decay_mult)
        if node.blobs[index].share_name is not None:
            groups.setdefault((owner_node.name, owner.index), []).append((node, index, link, variable))
    shared = []
    for members in groups.values():
        if len(members) < 2:
            continue
        first_node, first_index, first_link, _ = members[0]
        where = np.argsort(_caffe_positions(first_node, first_index, first_link))
        for node, index, link, variable in members[1:]:
            order = where[_caffe_positions(node, index, link)]
            if np.array_equal(order, np.arange(order.size)):
                continue
            rule = rules[variable.path]
            rules[variable.path] = ParamRule(rule.lr_mult, rule.decay_mult, shared_order=order)
        shared.append([variable.path for _, _, _, variable in members])
    return rules, shared


def learnable_variables(compiled: Compiled) -> list[Any]:
    """The variables of Caffe's ``learnable_params``: layer order, blob order, owners only.

    This is the order of a .solverstate's history blobs. Blobs of layers the model left
    out (not needed for its outputs) have no variable and are skipped.
    """
    by_blob = {(id(node), index): variable for node, index, _, variable in _blob_entries(compiled)}
    return [
        by_blob[(id(node), blob.index)] for node, blob in compiled.net.learnable() if (id(node), blob.index) in by_blob
    ]
