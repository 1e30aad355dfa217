"""Errors that netdef raises for a user's mistake.

Every error carries where it came from (file, line, column), which layer it concerns and,
when known, what was expected and what was received, so the command line can answer a bad
prototxt in one or two lines that point at the culprit instead of a traceback.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class SourceLocation:
    """A place in an input file; line and column are 1-based, as editors count them."""

    file: str
    line: int | None = None
    column: int | None = None

    def __str__(self) -> str:
        text = self.file
        if self.line is not None:
            text += f":{self.line}"
            if self.column is not None:
                text += f":{self.column}"
        return text


class NetdefError(Exception):
    """Base class of the errors caused by input, as opposed to bugs in netdef.

    The message is assembled as
    ``file:line:col: layer 'name' (Type): what happened; expected X, received Y; how to fix``.
    """

    def __init__(
        self,
        message: str,
        *,
        location: SourceLocation | None = None,
        layer: str | None = None,
        layer_type: str | None = None,
        expected: str | None = None,
        received: str | None = None,
        hint: str | None = None,
    ) -> None:
        self.message = message
        self.location = location
        self.layer = layer
        self.layer_type = layer_type
        self.expected = expected
        self.received = received
        self.hint = hint
        super().__init__(str(self))

    def __str__(self) -> str:
        parts: list[str] = []
        if self.location is not None:
            parts.append(str(self.location))
        if self.layer is not None:
            parts.append(f"layer '{self.layer}'" + (f" ({self.layer_type})" if self.layer_type else ""))
        head = ": ".join(parts)
        body = self.message
        if self.expected is not None:
            body += f"; expected {self.expected}"
            if self.received is not None:
                body += f", received {self.received}"
        elif self.received is not None:
            body += f"; received {self.received}"
        if self.hint:
            body += f"; {self.hint}"
        return f"{head}: {body}" if head else body

    def located(
        self,
        location: SourceLocation | None = None,
        layer: str | None = None,
        layer_type: str | None = None,
    ) -> NetdefError:
        """Return a copy that fills in context the raiser did not know (never overrides)."""
        clone = type(self).__new__(type(self))
        clone.__dict__.update(self.__dict__)
        clone.location = self.location or location
        clone.layer = self.layer or layer
        clone.layer_type = self.layer_type or layer_type
        Exception.__init__(clone, str(clone))
        return clone


class ParseError(NetdefError):
    """The text or binary input is not a valid message of the expected kind."""


class UpgradeError(NetdefError):
    """A legacy (V0/V1) definition cannot be brought to the current format."""


class NetDefinitionError(NetdefError):
    """The network is well-formed protobuf but not a valid Caffe network."""


class ShapeError(NetdefError):
    """Blob shapes do not fit a layer, as Caffe's Reshape would refuse them."""


class DataSourceError(NetdefError):
    """A data layer's source (database, list file, HDF5 file) cannot be read."""


class SolverError(NetdefError):
    """The solver definition is invalid."""


class WeightsError(NetdefError):
    """A weights file (.caffemodel or Caffe's HDF5) cannot be read or written, or does not fit the net."""


class NetdefErrors(NetdefError):
    """Several independent problems found in one pass, reported together.

    Graph validation keeps going after the first problem so that a user fixes a file in
    one round instead of one error at a time.
    """

    def __init__(self, errors: Iterable[NetdefError]) -> None:
        self.errors = list(errors)
        count = len(self.errors)
        summary = f"{count} problem{'s' if count != 1 else ''} found"
        super().__init__(summary + ":\n" + "\n".join(f"  {e}" for e in self.errors))

    def __str__(self) -> str:
        return self.message
