"""The layer registry: one declaration per Caffe layer type.

A declaration states, as data and small functions on integers in Caffe's own terms, what
Caffe's C++ layer classes state in code: how many bottoms and tops the type takes, whether
it may run in place, which parameter messages it reads, the shapes of its tops and of its
learnable blobs. Every later stage (validation, shape inference, parameter counts, the
Keras compiler, the code generator) reads the same declaration, so they cannot drift apart.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from google.protobuf.message import Message

from netdef.errors import ShapeError, SourceLocation
from netdef.proto import netdef_pb2 as pb

#: A blob shape in Caffe's axis order (N, C, [D,] H, W for images); () is a scalar.
Shape = tuple[int, ...]

#: Caffe refuses blobs with more axes than this (``kMaxBlobAxes``).
MAX_BLOB_AXES = 32
#: Caffe stores counts in ``int``; a blob larger than this cannot exist there.
MAX_BLOB_COUNT = 2**31 - 1


@dataclass(frozen=True)
class Arity:
    """How many bottoms or tops a layer type accepts (``max`` None: no upper bound)."""

    min: int
    max: int | None

    def accepts(self, count: int) -> bool:
        return count >= self.min and (self.max is None or count <= self.max)

    def __str__(self) -> str:
        if self.max == self.min:
            return f"exactly {self.min}"
        if self.max is None:
            return f"at least {self.min}"
        return f"{self.min} to {self.max}"


def exactly(count: int) -> Arity:
    return Arity(count, count)


def at_least(count: int) -> Arity:
    return Arity(count, None)


def between(low: int, high: int) -> Arity:
    return Arity(low, high)


@dataclass
class DataOptions:
    """How data layers find the shapes of what they will read.

    ``shapes`` holds user-supplied shapes (``--data-shape NAME=N,C,H,W``) keyed by layer or
    top name; they win over reading the source, which is opened relative to ``root``
    (Caffe resolves sources against the working directory).
    """

    shapes: dict[str, Shape] = field(default_factory=dict)
    root: Path | None = None

    def resolve(self, source: str) -> Path:
        path = Path(source)
        return path if path.is_absolute() or self.root is None else self.root / path


@dataclass
class LayerContext:
    """What a shape rule sees of one layer: its message, its bottom shapes and the phase."""

    layer: pb.LayerParameter
    bottoms: list[Shape]
    phase: int = pb.TEST
    location: SourceLocation | None = None
    data: DataOptions = field(default_factory=DataOptions)

    @property
    def name(self) -> str:
        return self.layer.name

    @property
    def type(self) -> str:
        return self.layer.type

    @property
    def tops(self) -> Sequence[str]:
        return self.layer.top

    def fail(
        self,
        message: str,
        *,
        expected: object = None,
        received: object = None,
        hint: str | None = None,
    ) -> ShapeError:
        """Build (not raise) a ShapeError about this layer, so rules read ``raise ctx.fail(...)``."""
        return ShapeError(
            message,
            location=self.location,
            layer=self.name,
            layer_type=self.type,
            expected=None if expected is None else str(expected),
            received=None if received is None else str(received),
            hint=hint,
        )

    def axis(self, axis: int, ndim: int, what: str = "axis") -> int:
        """Caffe's ``CanonicalAxisIndex``: negative axes count from the end."""
        if not -ndim <= axis < ndim:
            raise self.fail(
                f"{what} {axis} is out of range for a {ndim}-axis blob",
                expected=f"{-ndim} <= {what} < {ndim}",
                received=axis,
            )
        return axis + ndim if axis < 0 else axis


ShapeRule = Callable[[LayerContext], list[Shape]]


@dataclass(frozen=True)
class Ref:
    """A tensor inside a Keras plan: a bottom of the Caffe layer, an output of a call, or
    (for layers without bottoms, which Keras's functional API cannot call on nothing) the
    model's first input, which such a layer ignores."""

    source: str  # "bottom", "call" or "anchor"
    index: int
    output: int = 0


#: The model's first input, for layers without bottoms (Parameter).
ANCHOR = Ref("anchor", 0)


def bottom(index: int) -> Ref:
    return Ref("bottom", index)


def output(call: int, index: int = 0) -> Ref:
    return Ref("call", call, index)


@dataclass(frozen=True)
class Call:
    """One Keras layer application: ``cls(**kwargs, name=...)(inputs)``.

    ``cls`` is an import path (``keras.layers.Conv2D``, ``netdef.keras.layers.pooling.CaffePooling``)
    and ``kwargs`` plain values, so that the compiler can instantiate it and the code
    generator can print it. The main call of a layer carries the Caffe layer's name; helper
    calls (padding, permutes) add ``suffix``.
    """

    cls: str
    kwargs: dict[str, object]
    inputs: tuple[Ref, ...]
    suffix: str = ""
    #: Pass the inputs as a list even when there is one (merge layers, multi-input layers).
    as_list: bool = False


@dataclass(frozen=True)
class WeightLink:
    """Caffe blob ``blob`` is Keras variable ``variable`` of call ``call``, via a converter.

    ``convert`` names a function pair in ``netdef.keras.weights`` that maps the Caffe blob to
    the Keras variable and back; ``args`` are its plain-valued parameters.
    """

    blob: int
    call: int
    variable: int
    convert: str = "identity"
    args: dict[str, object] = field(default_factory=dict)


@dataclass(frozen=True)
class KerasPlan:
    """How one Caffe layer becomes Keras layers, as data."""

    calls: tuple[Call, ...]
    tops: tuple[Ref, ...]
    #: The layout each top is held in (see netdef.keras.layout).
    top_layouts: tuple[str, ...]
    #: The layout each bottom must be in; None accepts the bottom as it is.
    bottom_layouts: tuple[str | None, ...] = ()
    weights: tuple[WeightLink, ...] = ()
    #: The layer needs Caffe's fixed batch size in Keras (it works along axis 0: a Scale over
    #: the batch axis, recurrent layers whose axis 0 is time).
    static_batch: bool = False


@dataclass
class KerasContext:
    """What a Keras rule sees: the shape context plus the layouts and shapes already settled."""

    shape: LayerContext
    bottom_layouts: list[str]
    top_shapes: list[Shape]
    blob_shapes: list[Shape]
    #: The layout the model exposes at its boundary ("caffe" or "channels_last").
    boundary: str

    @property
    def layer(self) -> pb.LayerParameter:
        return self.shape.layer

    @property
    def bottoms(self) -> list[Shape]:
        return self.shape.bottoms

    @property
    def training(self) -> bool:
        return self.shape.phase == pb.TRAIN


KerasRule = Callable[[KerasContext], KerasPlan]


def no_blobs(ctx: LayerContext) -> list[Shape]:
    return []


@dataclass(frozen=True)
class LayerSpec:
    """The declaration of one Caffe layer type.

    ``shape`` returns the top shapes from the bottom shapes; ``blobs`` returns the shapes of
    the learnable blobs in the order a .caffemodel stores them. ``params`` names the
    LayerParameter sub-messages the type reads: any other one set on such a layer is a
    leftover that Caffe ignores, and netdef warns about it.
    """

    type: str
    bottoms: Arity
    tops: Arity
    shape: ShapeRule
    blobs: ShapeRule = no_blobs
    params: tuple[str, ...] = ()
    #: top[i] may name bottom[i] (Caffe then overwrites the bottom's data).
    in_place: bool = False
    #: A LossLayer: default loss_weight 1 on top 0 and an automatic top when none is named.
    loss: bool = False
    #: Bottoms (by index) that never receive a gradient: labels, selectors, indices.
    #: A negative index counts from the last bottom (Filter's selector is bottom -1).
    no_gradient: frozenset[int] = frozenset()
    #: Reads samples from outside the net (database, files, arrays).
    data: bool = False
    #: Its blobs are running statistics, not weights: lr_mult is forced to 0 (BatchNorm).
    statistics: bool = False
    #: How the layer becomes Keras; None for layers that compute nothing in a model (data
    #: layers become model inputs, Silence disappears).
    keras: KerasRule | None = None
    doc: str = ""


_REGISTRY: dict[str, LayerSpec] = {}


def register(spec: LayerSpec) -> LayerSpec:
    if spec.type in _REGISTRY:
        raise ValueError(f"layer type {spec.type!r} is declared twice")
    _REGISTRY[spec.type] = spec
    return spec


def lookup(type_name: str) -> LayerSpec | None:
    _load_declarations()
    return _REGISTRY.get(type_name)


def known_types() -> list[str]:
    _load_declarations()
    return sorted(_REGISTRY)


def closest_type(type_name: str) -> str | None:
    """The registered type a misspelled ``type_name`` most likely meant."""
    types = known_types()
    lowered = {t.lower(): t for t in types}
    if type_name.lower() in lowered:
        return lowered[type_name.lower()]
    match = difflib.get_close_matches(type_name, types, n=1, cutoff=0.5)
    return match[0] if match else None


def param_message(layer: pb.LayerParameter, field_name: str) -> Message:
    """The named sub-message of a layer, with Caffe's defaults when unset."""
    return getattr(layer, field_name)


def _load_declarations() -> None:
    # Importing the declaration modules registers their types; done lazily so that importing
    # the registry alone has no cost and no import cycle.
    if _REGISTRY:
        return
    from netdef.layers import declarations  # noqa: F401
