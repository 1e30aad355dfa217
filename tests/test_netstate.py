"""NetState filtering, checked against the cases Caffe's own net and pycaffe tests use."""

from __future__ import annotations

import pytest

from netdef.errors import NetDefinitionError
from netdef.netstate import filter_net, make_state, parse_phase, state_meets_rule
from netdef.proto import netdef_pb2 as pb
from netdef.prototxt import parse_text


def rule(text: str) -> pb.NetStateRule:
    return parse_text(text, pb.NetStateRule).message


def state(phase: str = "TEST", stages: tuple[str, ...] = (), level: int = 0) -> pb.NetState:
    return make_state(phase, stages, level)


@pytest.mark.parametrize(
    ("rule_text", "net_state", "met"),
    [
        ("", state(), True),
        ("phase: TRAIN", state("TRAIN"), True),
        ("phase: TRAIN", state("TEST"), False),
        ("min_level: 1", state(level=0), False),
        ("min_level: 1", state(level=1), True),
        ("max_level: 1", state(level=2), False),
        ("max_level: -1", state(level=-1), True),
        ('stage: "A"', state(stages=("A",)), True),
        ('stage: "A" stage: "B"', state(stages=("A",)), False),
        ('stage: "A" stage: "B"', state(stages=("B", "A")), True),
        ('not_stage: "A"', state(stages=("A",)), False),
        ('not_stage: "A"', state(stages=("B",)), True),
        ('phase: TEST stage: "deploy" min_level: 0', state(stages=("deploy",)), True),
    ],
)
def test_state_meets_rule(rule_text: str, net_state: pb.NetState, met: bool) -> None:
    assert state_meets_rule(net_state, rule(rule_text)) is met


LEVELS_AND_STAGES = """
name: "filters"
layer { name: "NoLevel" type: "Input" top: "a" input_param { shape { dim: 1 } } }
layer { name: "Level0Only" type: "Input" top: "b" input_param { shape { dim: 1 } }
        include { min_level: 0 max_level: 0 } }
layer { name: "Level1Only" type: "Input" top: "c" input_param { shape { dim: 1 } }
        include { min_level: 1 max_level: 1 } }
layer { name: "Level>=0" type: "Input" top: "d" input_param { shape { dim: 1 } } include { min_level: 0 } }
layer { name: "Level>=1" type: "Input" top: "e" input_param { shape { dim: 1 } } include { min_level: 1 } }
layer { name: "A" type: "Input" top: "f" input_param { shape { dim: 1 } } include { stage: "A" } }
layer { name: "B" type: "Input" top: "g" input_param { shape { dim: 1 } } include { stage: "B" } }
layer { name: "AorB" type: "Input" top: "h" input_param { shape { dim: 1 } }
        include { stage: "A" } include { stage: "B" } }
layer { name: "AandB" type: "Input" top: "i" input_param { shape { dim: 1 } }
        include { stage: "A" stage: "B" } }
layer { name: "NotTrain" type: "Input" top: "j" input_param { shape { dim: 1 } } exclude { phase: TRAIN } }
"""


def kept_names(net_state: pb.NetState) -> list[str]:
    net = parse_text(LEVELS_AND_STAGES, pb.NetParameter).message
    return [layer.name for layer in filter_net(net, net_state).net.layer]


@pytest.mark.parametrize(
    ("level", "stages", "expected"),
    [
        # pycaffe's TestLevels and TestStages expectations, with the layers that need no stage.
        (0, (), ["NoLevel", "Level0Only", "Level>=0", "NotTrain"]),
        (1, (), ["NoLevel", "Level1Only", "Level>=0", "Level>=1", "NotTrain"]),
        (0, ("A",), ["NoLevel", "Level0Only", "Level>=0", "A", "AorB", "NotTrain"]),
        (0, ("B",), ["NoLevel", "Level0Only", "Level>=0", "B", "AorB", "NotTrain"]),
        (0, ("A", "B"), ["NoLevel", "Level0Only", "Level>=0", "A", "B", "AorB", "AandB", "NotTrain"]),
    ],
)
def test_filter_levels_and_stages(level: int, stages: tuple[str, ...], expected: list[str]) -> None:
    assert kept_names(state(level=level, stages=stages)) == expected


def test_exclude_rule_removes_layer_in_matching_phase() -> None:
    assert "NotTrain" not in kept_names(state("TRAIN"))


def test_filter_is_idempotent_and_does_not_modify_input() -> None:
    net = parse_text(LEVELS_AND_STAGES, pb.NetParameter).message
    before = net.SerializeToString()
    once = filter_net(net, state(stages=("A",))).net
    twice = filter_net(once, state(stages=("A",))).net
    assert net.SerializeToString() == before
    assert once == twice


def test_include_and_exclude_together_is_an_error() -> None:
    net = parse_text(
        'layer { name: "x" type: "Input" top: "x" include { phase: TRAIN } exclude { phase: TEST } }',
        pb.NetParameter,
    ).message
    with pytest.raises(NetDefinitionError, match="include rules or exclude rules, not both"):
        filter_net(net, state())


def test_state_adds_stages_to_the_files_own_and_replaces_phase_and_level() -> None:
    base = pb.NetState(phase=pb.TRAIN, level=3, stage=["file"])
    merged = make_state("TEST", ("cli",), 1, base=base)
    assert (merged.phase, merged.level, list(merged.stage)) == (pb.TEST, 1, ["file", "cli"])


@pytest.mark.parametrize("phase", ["train", "TRAIN", pb.TRAIN])
def test_parse_phase_accepts_names_and_values(phase: str | int) -> None:
    assert parse_phase(phase) == pb.TRAIN


def test_parse_phase_rejects_unknown() -> None:
    with pytest.raises(NetDefinitionError, match="expected TRAIN or TEST"):
        parse_phase("VALIDATE")
