"""Reading and writing Caffe's protobuf files, text and binary, with source locations.

Python's protobuf reports a line and column only for syntax errors, yet a user who wrote a
bad layer wants to be pointed at it. So while reading text we also note where each
top-level ``layer {`` / ``layers {`` block starts and ends (using protobuf's own tokenizer,
which knows about strings and comments), and later stages ask this map for the location
of layer *i*.
"""

from __future__ import annotations

import difflib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Generic, TypeVar

from google.protobuf import text_format
from google.protobuf.message import DecodeError, Message

from netdef.errors import ParseError, SourceLocation
from netdef.proto import netdef_pb2 as pb

M = TypeVar("M", bound=Message)

#: Extensions that always hold binary protobuf, whatever their bytes look like.
BINARY_SUFFIXES = frozenset({".caffemodel", ".binaryproto", ".solverstate", ".pb", ".protobin"})
#: The repeated NetParameter fields whose blocks we locate: current and legacy layers.
LAYER_FIELDS = ("layer", "layers")
STRING_SOURCE = "<string>"


@dataclass(frozen=True)
class LayerBlock:
    """Where one top-level layer block sits in the text, and what it says it is."""

    location: SourceLocation
    end_line: int
    name: str | None
    type: str | None


@dataclass
class SourceMap:
    """Locations of the layer blocks of one parsed file, in file order per field."""

    file: str
    blocks: dict[str, list[LayerBlock]] = field(default_factory=dict)
    #: First occurrence of each top-level field (e.g. ``input``), for legacy upgrades.
    fields: dict[str, SourceLocation] = field(default_factory=dict)

    def layer(self, index: int, field_name: str = "layer") -> SourceLocation:
        blocks = self.blocks.get(field_name, [])
        if 0 <= index < len(blocks):
            return blocks[index].location
        return SourceLocation(self.file)

    def block_at(self, line: int) -> LayerBlock | None:
        for blocks in self.blocks.values():
            for block in blocks:
                if block.location.line is not None and block.location.line <= line <= block.end_line:
                    return block
        return None


@dataclass
class Parsed(Generic[M]):
    """A message together with where it came from."""

    message: M
    source: SourceMap

    @property
    def file(self) -> str:
        return self.source.file


def _position(tokenizer: text_format.Tokenizer) -> tuple[int, int]:
    # The tokenizer exposes its position only through the errors it builds.
    error = tokenizer.ParseError("")
    return error.GetLine(), error.GetColumn()


def locate_blocks(text: str, file: str) -> SourceMap:
    """Find top-level ``layer``/``layers`` blocks and top-level fields in prototxt text.

    Best effort: text that does not tokenize stops the scan (the real parser then reports
    the syntax error), and what was found up to there is kept.
    """
    source = SourceMap(file, {name: [] for name in LAYER_FIELDS})
    tokenizer = text_format.Tokenizer(text.splitlines())
    depth = 0
    current: dict[str, object] | None = None
    expecting_value_for: str | None = None
    try:
        while not tokenizer.AtEnd():
            token = tokenizer.token
            line, column = _position(tokenizer)
            if token in ("{", "<"):
                depth += 1
            elif token in ("}", ">"):
                depth -= 1
                if depth == 0 and current is not None:
                    start: SourceLocation = current["location"]  # type: ignore[assignment]
                    source.blocks[current["field"]].append(  # type: ignore[index]
                        LayerBlock(start, line, current.get("name"), current.get("type"))  # type: ignore[arg-type]
                    )
                    current = None
            elif depth == 0 and re.fullmatch(r"[A-Za-z_]\w*", token):
                location = SourceLocation(file, line, column)
                source.fields.setdefault(token, location)
                if token in LAYER_FIELDS:
                    current = {"field": token, "location": location}
            elif depth == 1 and current is not None and token in ("name", "type"):
                expecting_value_for = token
                tokenizer.NextToken()
                if tokenizer.token == ":":
                    tokenizer.NextToken()
                value = tokenizer.token
                current.setdefault(expecting_value_for, value.strip("\"'") if value else value)
                expecting_value_for = None
                continue
            tokenizer.NextToken()
    except text_format.ParseError:
        pass
    if current is not None:
        # An unclosed block runs to the end of the text: errors there still name its layer.
        start = current["location"]
        source.blocks[current["field"]].append(  # type: ignore[index]
            LayerBlock(start, len(text.splitlines()) + 1, current.get("name"), current.get("type"))  # type: ignore[arg-type]
        )
    return source


_UNKNOWN_FIELD = re.compile(r'Message type "(?:netdef\.)?([\w.]+)" has no field named "(\w+)"')
_UNKNOWN_ENUM = re.compile(r'Enum type "(?:netdef\.)?([\w.]+)" has no value named (\w+)')
_POSITION_PREFIX = re.compile(r"^\d+:\d+ : ")


def _suggest(word: str, candidates: list[str]) -> str | None:
    close = difflib.get_close_matches(word, candidates, n=1, cutoff=0.6)
    return f"did you mean '{close[0]}'?" if close else None


def _explain(message: str) -> tuple[str, str | None]:
    """Turn protobuf's wording into Caffe's terms and add a suggestion when one is near."""
    message = _POSITION_PREFIX.sub("", message).rstrip(".")
    message = message.replace('"netdef.', '"')
    match = _UNKNOWN_FIELD.search(message)
    if match:
        type_name, name = match.groups()
        descriptor = pb.DESCRIPTOR.message_types_by_name.get(type_name.split(".")[0])
        for part in type_name.split(".")[1:]:
            descriptor = descriptor.nested_types_by_name.get(part) if descriptor else None
        fields = list(descriptor.fields_by_name) if descriptor else []
        return f"{type_name} has no field named '{name}'", _suggest(name, fields)
    match = _UNKNOWN_ENUM.search(message)
    if match:
        type_name, value = match.groups()
        enum = _find_enum(type_name)
        values = list(enum.values_by_name) if enum else []
        expected = ", ".join(values)
        return (
            f"{type_name} has no value named {value}" + (f" (one of {expected})" if expected else ""),
            _suggest(value, values),
        )
    return message, None


def _find_enum(full_name: str):  # -> EnumDescriptor | None
    try:
        return pb.DESCRIPTOR.pool.FindEnumTypeByName(f"netdef.{full_name}")
    except KeyError:
        return None


def parse_text(text: str, message_type: type[M], file: str = STRING_SOURCE) -> Parsed[M]:
    """Parse prototxt text into ``message_type``; errors name file:line:column and the layer."""
    source = locate_blocks(text, file)
    message = message_type()
    try:
        text_format.Parse(text, message)
    except text_format.ParseError as error:
        line, column = error.GetLine(), error.GetColumn()
        what, hint = _explain(str(error))
        block = source.block_at(line) if line else None
        raise ParseError(
            what,
            location=SourceLocation(file, line if line > 0 else None, column if column > 0 else None),
            layer=block.name if block else None,
            layer_type=block.type if block else None,
            hint=hint,
        ) from None
    return Parsed(message, source)


def parse_binary(data: bytes, message_type: type[M], file: str = STRING_SOURCE) -> Parsed[M]:
    """Parse binary protobuf; refuse bytes that decode to nothing recognizable."""
    message = message_type()
    kind = message_type.DESCRIPTOR.name
    try:
        message.ParseFromString(data)
    except (DecodeError, RuntimeError, ValueError) as error:
        raise ParseError(
            f"not a binary {kind} ({error})",
            location=SourceLocation(file),
            hint="check that the file is complete and of the right kind",
        ) from None
    if data and not message.ListFields():
        raise ParseError(
            f"no {kind} fields found in {len(data)} bytes",
            location=SourceLocation(file),
            hint="is this the right kind of file?",
        )
    return Parsed(message, SourceMap(file))


def _looks_binary(data: bytes) -> bool:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return True
    return "\x00" in text


def read_message(source: str | os.PathLike[str] | bytes, message_type: type[M]) -> Parsed[M]:
    """Read a message from a file path, prototxt text or serialized bytes.

    A ``str`` naming an existing file is read as that file; any other ``str`` is prototxt
    text. Files are binary when their suffix says so or their bytes are not text.
    """
    if isinstance(source, bytes):
        if _looks_binary(source):
            return parse_binary(source, message_type)
        return parse_text(source.decode("utf-8"), message_type)
    path = Path(source)
    is_path = isinstance(source, os.PathLike) or _could_be_path(source)
    if is_path and path.is_file():
        file = str(source)
        try:
            data = path.read_bytes()
        except OSError as error:
            raise ParseError(f"cannot read the file ({error.strerror})", location=SourceLocation(file)) from None
        if path.suffix.lower() in BINARY_SUFFIXES or _looks_binary(data):
            return parse_binary(data, message_type, file)
        return parse_text(data.decode("utf-8"), message_type, file)
    if is_path:
        what = "is a directory" if path.is_dir() else "does not exist"
        raise ParseError(f"the file {what}", location=SourceLocation(str(source)))
    return parse_text(str(source), message_type)


def _could_be_path(text: str) -> bool:
    # Prototxt always holds a ':' or a brace; a file name rarely does and never a newline.
    return bool(text) and "\n" not in text and "{" not in text and not re.search(r"\w\s*:\s", text)


def read_net(source: str | os.PathLike[str] | bytes) -> Parsed[pb.NetParameter]:
    """Read a NetParameter (prototxt, or binary such as a .caffemodel)."""
    return read_message(source, pb.NetParameter)


def read_solver(source: str | os.PathLike[str] | bytes) -> Parsed[pb.SolverParameter]:
    """Read a SolverParameter (prototxt or binary)."""
    return read_message(source, pb.SolverParameter)


def to_text(message: Message) -> str:
    """Prototxt text with two-space indentation and shortest round-tripping floats."""
    return text_format.MessageToString(message)
