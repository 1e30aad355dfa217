"""Property: whatever a mutated zoo file holds, netdef answers with a netdef error or a net.

Mutations imitate real mistakes and hostile edits: cut text, duplicated or swapped lines,
numbers replaced by zero, negative or enormous values, identifiers replaced by junk.
Anything else escaping (KeyError, ZeroDivisionError, MemoryError, RecursionError...) is a
bug: the user would see a traceback.
"""

from __future__ import annotations

import contextlib
import re
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from netdef import load_net
from netdef.errors import NetdefError

ZOO_NETS = [
    "examples/mnist/lenet.prototxt",
    "examples/cifar10/cifar10_quick.prototxt",
    "examples/cifar10/cifar10_full.prototxt",
    "examples/siamese/mnist_siamese.prototxt",
    "models/bvlc_reference_caffenet/deploy.prototxt",
    "models/bvlc_googlenet/deploy.prototxt",
    "examples/mnist/lenet_train_test.prototxt",
]
NUMBER = re.compile(r"(?<![\w.])-?\d+(\.\d+)?(e-?\d+)?")
IDENTIFIER = re.compile(r"[A-Za-z_]\w*")


@st.composite
def mutations(draw: st.DrawFn, text: str) -> str:
    lines = text.splitlines(keepends=True)
    kind = draw(st.sampled_from(["cut", "duplicate", "swap", "number", "identifier", "insert", "truncate"]))
    if kind == "cut":
        start = draw(st.integers(0, len(text)))
        return text[:start] + text[start + draw(st.integers(1, 200)) :]
    if kind == "duplicate":
        index = draw(st.integers(0, len(lines) - 1))
        return "".join(lines[: index + 1] + lines[index:])
    if kind == "swap":
        a, b = draw(st.integers(0, len(lines) - 1)), draw(st.integers(0, len(lines) - 1))
        lines[a], lines[b] = lines[b], lines[a]
        return "".join(lines)
    if kind == "number":
        matches = list(NUMBER.finditer(text))
        match = matches[draw(st.integers(0, len(matches) - 1))]
        value = draw(st.sampled_from(["0", "-1", "1", "3", "100000", "4294967295", "1e30", "-7", "2.5"]))
        return text[: match.start()] + value + text[match.end() :]
    if kind == "identifier":
        matches = list(IDENTIFIER.finditer(text))
        match = matches[draw(st.integers(0, len(matches) - 1))]
        junk = draw(st.sampled_from(["layer", "top", "bottom", "type", "x", "MAX", "dim", "axis", "}", "{"]))
        return text[: match.start()] + junk + text[match.end() :]
    if kind == "insert":
        where = draw(st.integers(0, len(text)))
        return text[:where] + draw(st.text(alphabet=' {}<>:"\n#x1-.', max_size=10)) + text[where:]
    return text[: draw(st.integers(0, len(text)))]


@pytest.mark.parametrize("relative", ZOO_NETS)
def test_mutated_zoo_files_give_only_netdef_errors(caffe_zoo: Path, relative: str) -> None:
    original = (caffe_zoo / relative).read_text()
    data_shapes = {"mnist": (4, 1, 28, 28)}

    @settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(mutations(original))
    def check(text: str) -> None:
        for phase in ("TEST", "TRAIN"):
            with contextlib.suppress(NetdefError):
                load_net(text, phase=phase, data_shapes=data_shapes)

    check()
