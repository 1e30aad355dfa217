"""A catalogue of malformed and hostile inputs: each gets one clear netdef error.

Every case is run twice: through the Python API (the error class and its words) and
through the command line (exit status 1, a `netdef: error:` message naming the file, no
traceback).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from netdef import load_net
from netdef.cli import main
from netdef.errors import (
    DataSourceError,
    NetdefError,
    NetDefinitionError,
    ParseError,
    ShapeError,
    UpgradeError,
)

INPUT = 'layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 2 dim: 3 dim: 8 dim: 8 } } }\n'


def layer(body: str) -> str:
    return INPUT + f"layer {{ {body} }}\n"


def conv(params: str, name: str = "conv", bottom: str = "data") -> str:
    return layer(
        f'name: "{name}" type: "Convolution" bottom: "{bottom}" top: "{name}" convolution_param {{ {params} }}'
    )


@dataclass(frozen=True)
class Case:
    id: str
    content: str | bytes
    error: type[NetdefError]
    words: str


CASES = [
    # Syntax and types.
    Case("unclosed-brace", INPUT + 'layer { name: "a" type: "ReLU"', ParseError, "Expected"),
    Case("stray-closing-brace", INPUT + "}\n", ParseError, "Expected identifier"),
    Case("unknown-top-level-field", INPUT + "layerz { }", ParseError, "NetParameter has no field named 'layerz'"),
    Case("misspelled-param-field", conv("num_output: 2 kernal_size: 3"), ParseError, "did you mean 'kernel_size'?"),
    Case("string-for-integer", conv('num_output: "ten" kernel_size: 3'), ParseError, "integer"),
    Case("bad-boolean", conv("num_output: 2 kernel_size: 3 bias_term: maybe"), ParseError, "bias_term"),
    Case("negative-unsigned", conv("num_output: -5 kernel_size: 3"), ParseError, "unsigned"),
    Case("float-for-integer", conv("num_output: 2 kernel_size: 2.5"), ParseError, "integer"),
    Case("unquoted-string", INPUT + "layer { name: conv1 }", ParseError, "string"),
    Case(
        "unknown-enum-value",
        layer('name: "p" type: "Pooling" bottom: "data" top: "p" pooling_param { pool: AVERAGE }'),
        ParseError,
        "one of MAX, AVE, STOCHASTIC",
    ),
    Case("deep-garbage", "{{{{{{{{", ParseError, "Expected identifier"),
    Case("singular-field-twice", INPUT + 'layer { name: "a" name: "b" }', ParseError, "should not have multiple"),
    # Empty and binary input.
    Case("empty-file", "", NetDefinitionError, "the net defines no layers"),
    Case("only-comments", "# nothing here\n# at all\n", NetDefinitionError, "the net defines no layers"),
    Case("binary-garbage", bytes(range(256)) * 4, ParseError, "not a binary NetParameter"),
    Case("non-net-bytes", b"\x08\x96\x01", ParseError, "no NetParameter fields found"),
    # Graph structure.
    Case(
        "unknown-layer-type",
        layer('name: "x" type: "Convolutoin" bottom: "data" top: "x"'),
        NetDefinitionError,
        "did you mean 'Convolution'?",
    ),
    Case("missing-type", layer('name: "x" bottom: "data" top: "x"'), NetDefinitionError, "the layer has no type"),
    Case(
        "dangling-bottom",
        layer('name: "r" type: "ReLU" bottom: "nowhere" top: "r"'),
        NetDefinitionError,
        "no earlier layer produces bottom 'nowhere'",
    ),
    Case(
        "top-produced-twice",
        conv("num_output: 2 kernel_size: 3") + conv("num_output: 2 kernel_size: 3").replace(INPUT, ""),
        NetDefinitionError,
        "top 'conv' is already produced",
    ),
    Case(
        "cycle",
        INPUT
        + conv("num_output: 2 kernel_size: 1", "a", "b").replace(INPUT, "")
        + conv("num_output: 2 kernel_size: 1", "b", "a").replace(INPUT, ""),
        NetDefinitionError,
        "forms a cycle",
    ),
    Case(
        "too-few-bottoms",
        layer('name: "e" type: "Eltwise" bottom: "data" top: "e"'),
        NetDefinitionError,
        "wrong number of bottoms; expected at least 2, received 1",
    ),
    Case(
        "too-many-tops",
        layer('name: "s" type: "Silence" bottom: "data" top: "s"'),
        NetDefinitionError,
        "wrong number of tops",
    ),
    Case(
        "include-and-exclude",
        layer('name: "r" type: "ReLU" bottom: "data" top: "r" include { phase: TEST } exclude { phase: TRAIN }'),
        NetDefinitionError,
        "include rules or exclude rules, not both",
    ),
    Case(
        "loss-weight-count",
        layer('name: "r" type: "ReLU" bottom: "data" top: "r" loss_weight: 1 loss_weight: 1'),
        NetDefinitionError,
        "loss_weight must be given once per top",
    ),
    Case(
        "python-layer",
        layer('name: "py" type: "Python" bottom: "data" top: "y" python_param { module: "os" layer: "system" }'),
        NetDefinitionError,
        "would run arbitrary code",
    ),
    Case(
        "in-place-not-allowed",
        layer('name: "f" type: "Flatten" bottom: "data" top: "data"'),
        NetDefinitionError,
        "cannot run in place",
    ),
    # Shapes and sizes.
    Case("num-output-zero", conv("num_output: 0 kernel_size: 3"), ShapeError, "num_output"),
    Case(
        "trillion-element-blob",
        'layer { name: "d" type: "Input" top: "d" input_param { shape { dim: 1000000 dim: 1000000 } } }',
        ShapeError,
        "elements",
    ),
    Case(
        "huge-inner-product",
        layer(
            'name: "ip" type: "InnerProduct" bottom: "data" top: "ip" inner_product_param { num_output: 4000000000 }'
        ),
        ShapeError,
        "elements",
    ),
    Case(
        "negative-dimension",
        'layer { name: "d" type: "Input" top: "d" input_param { shape { dim: 2 dim: -3 } } }',
        ShapeError,
        "negative",
    ),
    Case(
        "too-many-axes",
        'layer { name: "d" type: "Input" top: "d" input_param { shape { ' + "dim: 1 " * 40 + "} } }",
        ShapeError,
        "axes",
    ),
    Case("kernel-larger-than-input", conv("num_output: 2 kernel_size: 11"), ShapeError, "kernel"),
    Case("group-does-not-divide", conv("num_output: 4 kernel_size: 3 group: 2"), ShapeError, "group"),
    Case(
        "pool-pad-not-below-kernel",
        layer('name: "p" type: "Pooling" bottom: "data" top: "p" pooling_param { kernel_size: 2 pad: 2 }'),
        ShapeError,
        "pad",
    ),
    Case(
        "eltwise-shape-mismatch",
        conv("num_output: 2 kernel_size: 3")
        + 'layer { name: "e" type: "Eltwise" bottom: "data" bottom: "conv" top: "e" }',
        ShapeError,
        "shape",
    ),
    Case(
        "concat-mismatch",
        conv("num_output: 2 kernel_size: 3")
        + 'layer { name: "c" type: "Concat" bottom: "data" bottom: "conv" top: "c" }',
        ShapeError,
        "Concat",
    ),
    Case(
        "crop-larger-than-input",
        conv("num_output: 2 kernel_size: 3")
        + 'layer { name: "c" type: "Crop" bottom: "conv" bottom: "data" top: "c" }',
        ShapeError,
        "crop",
    ),
    Case(
        "reshape-two-inferred",
        layer('name: "r" type: "Reshape" bottom: "data" top: "r" reshape_param { shape { dim: -1 dim: -1 } }'),
        ShapeError,
        "-1",
    ),
    Case(
        "slice-points-not-increasing",
        layer(
            'name: "s" type: "Slice" bottom: "data" top: "a" top: "b" top: "c" slice_param { slice_point: 2 slice_point: 1 }'
        ),
        ShapeError,
        "slice_point",
    ),
    Case("input-without-shape", 'layer { name: "d" type: "Input" top: "d" }', ShapeError, "shape"),
    Case("clip-without-bounds", layer('name: "c" type: "Clip" bottom: "data" top: "c"'), ShapeError, "min"),
    Case(
        "inner-product-input-changes",
        conv("num_output: 2 kernel_size: 3")
        + 'layer { name: "ip1" type: "InnerProduct" bottom: "data" top: "ip1" param { name: "w" } inner_product_param { num_output: 5 } }\nlayer { name: "ip2" type: "InnerProduct" bottom: "conv" top: "ip2" param { name: "w" } inner_product_param { num_output: 5 } }',
        ShapeError,
        "cannot share param 'w'",
    ),
    # Legacy formats and data sources.
    Case(
        "v1-and-v2-mixed", INPUT + 'layers { name: "r" type: RELU bottom: "data" top: "data" }', UpgradeError, "layer"
    ),
    Case(
        "unknown-v0-type",
        'layers { layer { name: "x" type: "frobnicate" } bottom: "a" top: "x" }',
        UpgradeError,
        "frobnicate",
    ),
    Case("legacy-input-dims-mismatch", 'input: "data"\ninput_dim: 1\ninput_dim: 3\n', UpgradeError, "input"),
    Case(
        "data-source-missing",
        'layer { name: "mnist" type: "Data" top: "data" top: "label" data_param { source: "/nonexistent/lmdb" batch_size: 4 backend: LMDB } }',
        DataSourceError,
        "--data-shape",
    ),
]


@pytest.fixture(params=CASES, ids=[case.id for case in CASES])
def case(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[Case, Path]:
    case: Case = request.param
    suffix = ".caffemodel" if isinstance(case.content, bytes) else ".prototxt"
    path = tmp_path / f"{case.id}{suffix}"
    if isinstance(case.content, bytes):
        path.write_bytes(case.content)
    else:
        path.write_text(case.content)
    return case, path


def test_catalogue_is_large_enough() -> None:
    assert len(CASES) >= 30


def test_api_raises_one_clear_error(case: tuple[Case, Path]) -> None:
    spec, path = case
    with pytest.raises(spec.error) as caught:
        load_net(path)
    assert spec.words in str(caught.value)
    assert str(path) in str(caught.value) or caught.value.location is not None


def test_cli_prints_the_error_without_traceback(case: tuple[Case, Path], capsys: pytest.CaptureFixture[str]) -> None:
    spec, path = case
    assert main(["summary", str(path)]) == 1
    captured = capsys.readouterr()
    assert captured.err.startswith("netdef: error: ")
    assert spec.words in captured.err
    assert str(path) in captured.err
    assert "Traceback" not in captured.err
    assert len(captured.err.strip().splitlines()) <= 4
