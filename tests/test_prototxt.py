"""Reading text and binary messages, and the source locations kept for error messages."""

from __future__ import annotations

import pytest

from netdef.errors import ParseError
from netdef.proto import netdef_pb2 as pb
from netdef.prototxt import locate_blocks, parse_text, read_net, read_solver, to_text

NET = """# a comment with a brace {
name: "tiny"
layer {
  name: "data"   # trailing comment }
  type: "Input"
  top: "data"
  input_param { shape { dim: 1 dim: 2 } }
}

layer <
  name: 'odd "quoted" {name'
  type: "ReLU" bottom: "data" top: "data"
>
"""


def test_locate_blocks_finds_each_layer_with_name_type_and_span() -> None:
    source = locate_blocks(NET, "net.prototxt")
    blocks = source.blocks["layer"]
    assert [(b.location.line, b.location.column, b.end_line) for b in blocks] == [(3, 1, 8), (10, 1, 13)]
    assert [(b.name, b.type) for b in blocks] == [("data", "Input"), ('odd "quoted" {name', "ReLU")]
    assert source.fields["name"].line == 2
    assert source.block_at(12) is blocks[1]
    assert source.block_at(9) is None


def test_layer_location_falls_back_to_the_file() -> None:
    source = locate_blocks(NET, "net.prototxt")
    assert str(source.layer(0)) == "net.prototxt:3:1"
    assert str(source.layer(7)) == "net.prototxt"


def test_unknown_field_names_the_layer_and_suggests_the_right_field() -> None:
    text = 'layer {\n  name: "conv1"\n  type: "Convolution"\n  convolution_param { kernal_size: 3 }\n}\n'
    with pytest.raises(ParseError) as caught:
        parse_text(text, pb.NetParameter, "net.prototxt")
    message = str(caught.value)
    assert message.startswith("net.prototxt:4:23: layer 'conv1' (Convolution):")
    assert "ConvolutionParameter has no field named 'kernal_size'" in message
    assert "did you mean 'kernel_size'?" in message


def test_unknown_enum_value_lists_the_choices() -> None:
    text = 'layer { name: "p" type: "Pooling" pooling_param { pool: AVERAGE } }'
    with pytest.raises(ParseError) as caught:
        parse_text(text, pb.NetParameter)
    assert "PoolingParameter.PoolMethod has no value named AVERAGE (one of MAX, AVE, STOCHASTIC)" in str(caught.value)


def test_syntax_error_has_line_and_column() -> None:
    with pytest.raises(ParseError) as caught:
        parse_text('name: "x"\nlayer {\n  name: "a"\n', pb.NetParameter, "f.prototxt")
    assert str(caught.value) == "f.prototxt:3:9: layer 'a': Expected \"}\""


def test_read_accepts_paths_text_and_bytes(tmp_path) -> None:
    path = tmp_path / "net.prototxt"
    path.write_text(NET)
    from_path = read_net(path)
    from_str_path = read_net(str(path))
    from_text = read_net(NET)
    from_bytes = read_net(from_text.message.SerializeToString())
    assert from_path.message == from_str_path.message == from_text.message == from_bytes.message
    assert from_path.file == str(path)
    assert from_text.file == "<string>"


def test_binary_file_is_detected_by_suffix_and_content(tmp_path) -> None:
    message = read_net(NET).message
    (tmp_path / "w.caffemodel").write_bytes(message.SerializeToString())
    (tmp_path / "w.bin").write_bytes(message.SerializeToString())
    assert read_net(tmp_path / "w.caffemodel").message == message
    assert read_net(tmp_path / "w.bin").message == message


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"\xff\xfe\x00garbage\x01\x02", "not a binary NetParameter"),
        (b"\x08\x96\x01", "no NetParameter fields found"),
    ],
)
def test_binary_garbage_is_refused(tmp_path, data: bytes, message: str) -> None:
    path = tmp_path / "bad.caffemodel"
    path.write_bytes(data)
    with pytest.raises(ParseError, match=message):
        read_net(path)


def test_missing_file_and_directory_are_clear(tmp_path) -> None:
    with pytest.raises(ParseError, match="the file does not exist"):
        read_net(tmp_path / "nope.prototxt")
    with pytest.raises(ParseError, match="is a directory"):
        read_net(tmp_path)


def test_solver_text_round_trips_through_to_text() -> None:
    solver = read_solver('net: "n.prototxt"\nbase_lr: 0.01\nlr_policy: "step"\nstepvalue: 10\nstepvalue: 20\n').message
    assert read_solver(to_text(solver)).message == solver
    assert solver.base_lr == pytest.approx(0.01)
