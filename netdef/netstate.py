"""Choosing the layers of one phase, level and set of stages (Caffe's ``Net::FilterNet``).

One prototxt often describes several nets (TRAIN and TEST phases, deploy stages); the
NetState selects which layers take part, exactly as Caffe's ``StateMeetsRule`` does.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from netdef.errors import NetDefinitionError, SourceLocation
from netdef.proto import netdef_pb2 as pb

PHASES = {"TRAIN": pb.TRAIN, "TEST": pb.TEST}


def parse_phase(phase: str | int) -> int:
    """Accept Caffe's phase names (any case) or the enum value."""
    if isinstance(phase, int) and phase in PHASES.values():
        return phase
    if isinstance(phase, str) and phase.upper() in PHASES:
        return PHASES[phase.upper()]
    raise NetDefinitionError(f"unknown phase {phase!r}", expected="TRAIN or TEST", received=repr(phase))


def make_state(
    phase: str | int = "TEST",
    stages: Iterable[str] = (),
    level: int = 0,
    base: pb.NetState | None = None,
) -> pb.NetState:
    """A NetState from the caller's choice over the net's own ``state``, as pycaffe's Net does.

    Phase and level replace the file's values; stages are added to the file's stages.
    """
    state = pb.NetState()
    if base is not None:
        state.CopyFrom(base)
    state.phase = parse_phase(phase)
    state.level = level
    for stage in stages:
        if stage not in state.stage:
            state.stage.append(stage)
    return state


def state_meets_rule(state: pb.NetState, rule: pb.NetStateRule) -> bool:
    if rule.HasField("phase") and rule.phase != state.phase:
        return False
    if rule.HasField("min_level") and state.level < rule.min_level:
        return False
    if rule.HasField("max_level") and state.level > rule.max_level:
        return False
    stages = set(state.stage)
    if any(stage not in stages for stage in rule.stage):
        return False
    return not any(stage in stages for stage in rule.not_stage)


def layer_included(layer: pb.LayerParameter, state: pb.NetState) -> bool:
    if layer.include:
        return any(state_meets_rule(state, rule) for rule in layer.include)
    return not any(state_meets_rule(state, rule) for rule in layer.exclude)


@dataclass
class FilteredNet:
    net: pb.NetParameter
    #: Index in the unfiltered net of each kept layer, to find its source location again.
    kept: list[int]


def filter_net(
    net: pb.NetParameter,
    state: pb.NetState,
    locations: Sequence[SourceLocation | None] = (),
) -> FilteredNet:
    """The layers of ``net`` that take part in ``state``; the input is not modified."""
    result = pb.NetParameter()
    result.CopyFrom(net)
    del result.layer[:]
    result.state.CopyFrom(state)
    kept: list[int] = []
    for index, layer in enumerate(net.layer):
        if layer.include and layer.exclude:
            raise NetDefinitionError(
                "a layer may have include rules or exclude rules, not both",
                location=locations[index] if index < len(locations) else None,
                layer=layer.name,
                layer_type=layer.type,
                hint="merge the conditions into one kind of rule",
            )
        if layer_included(layer, state):
            result.layer.add().CopyFrom(layer)
            kept.append(index)
    return FilteredNet(result, kept)
