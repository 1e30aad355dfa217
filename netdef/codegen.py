"""Caffe nets as Keras source code: the compiler's plans, written out instead of instantiated.

The generated module builds exactly the model :func:`netdef.keras.compiler.compile_net`
builds (same layers, arguments, names, permutes, order), because both walk the same plans
with the same :class:`~netdef.keras.compiler.PlanWalker`; only the leaves differ. All
decisions (names, literals, line wrapping, which helper sources a standalone module needs)
are made here; the templates only lay the prepared rows out.

Lines are wrapped the way ``ruff format`` leaves them (one line when it fits in 120
columns, else one argument per line with a magic trailing comma, which ruff keeps), so the
output passes ``ruff check`` and ``ruff format --check`` without running ruff.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import math
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import cache
from typing import Any

import jinja2

from netdef.ir import Net, Node, Value
from netdef.keras import layout as lay
from netdef.keras.compiler import PlanWalker, output_values, plan_net
from netdef.layers.registry import KerasPlan, output
from netdef.load import NetSource, load_net
from netdef.names import UniqueNames, caffe_name, identifier, keras_name
from netdef.proto import netdef_pb2 as pb
from netdef.prototxt import to_text

#: ``ruff format``'s line length in this project (pyproject.toml), and PEP 8's indent.
LINE_LENGTH = 120
INDENT = "    "
#: Where netdef's own Keras layers live: in a standalone module their source is copied in.
NETDEF_LAYERS = "netdef.keras.layers."
#: Names the module defines or imports itself; blob variables must not shadow them.
MODULE_NAMES = ("keras", "netdef", "build_model", "load_caffe_weights", "PROTOTXT", "annotations")


def literal(value: object) -> str:
    """Python source for a plain value, formatted as ``ruff format`` writes it.

    ``repr`` round-trips floats exactly; strings get ruff's double quotes and non-finite
    floats, which have no literal, become ``float("inf")``.
    """
    if isinstance(value, str):
        text = repr(value)
        if text.startswith("'") and '"' not in value:
            text = '"' + text[1:-1].replace("\\'", "'") + '"'
        return text
    if isinstance(value, float) and not math.isfinite(value):
        return f'float("{value}")'
    if isinstance(value, tuple):
        items = [literal(item) for item in value]
        return f"({items[0]},)" if len(items) == 1 else f"({', '.join(items)})"
    if isinstance(value, list):
        return f"[{', '.join(literal(item) for item in value)}]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{literal(k)}: {literal(v)}" for k, v in value.items()) + "}"
    if value is None or isinstance(value, (bool, int, float)):
        return repr(value)
    raise TypeError(f"no literal for {type(value).__name__} value {value!r}")


def statement(
    head: str, kwargs: Sequence[str], inputs: Sequence[str] | None = None, as_list: bool = False, comment: str = ""
) -> list[str]:
    """``head(kwargs)(inputs)  # comment`` as lines inside a function body.

    ``head`` is ``target = callee`` or ``return callee``; ``inputs`` None leaves the call
    unapplied (``keras.Input``).

    One line when it fits; otherwise the arguments one per line with a trailing comma, the
    form ``ruff format`` keeps as it is (it never joins a call with a magic trailing comma).
    """
    suffix = f"  # {comment}" if comment else ""
    args = ", ".join(inputs or ())
    applied = "" if inputs is None else f"([{args}])" if as_list else f"({args})"
    line = f"{INDENT}{head}({', '.join(kwargs)}){applied}{suffix}"
    if len(line) <= LINE_LENGTH:
        return [line]
    lines = [f"{INDENT}{head}("]
    lines += [f"{INDENT * 2}{kwarg}," for kwarg in kwargs]
    closing = f"{INDENT}){applied}{suffix}"
    if len(closing) <= LINE_LENGTH:
        return [*lines, closing]
    if not as_list:
        return [*lines, f"{INDENT})(", f"{INDENT * 2}{args},", f"{INDENT}){suffix}"]
    return [
        *lines,
        f"{INDENT})(",
        f"{INDENT * 2}[",
        *(f"{INDENT * 3}{item}," for item in inputs),
        f"{INDENT * 2}]",
        f"{INDENT}){suffix}",
    ]


def _shape_text(values: Iterable[Value]) -> str:
    return ", ".join(str(value.shape) if value.shape is not None else "?" for value in values)


def returns_list(cls: str) -> bool:
    """Whether a Keras layer class returns a list of tensors (netdef's Slice, Filter, LSTMUnit).

    netdef's layers say so in their ``call`` annotation; Keras's built-ins used by the plans
    all return one tensor. Layers that return a list only sometimes (recurrent layers exposing
    their hidden state) are recognised by the plan reading an output other than the first.
    """
    if not cls.startswith(NETDEF_LAYERS):
        return False
    annotation = inspect.signature(_class(cls).call).return_annotation
    return str(annotation).startswith(("list[", "tuple["))


def _class(path: str) -> type:
    module, _, name = path.rpartition(".")
    return getattr(importlib.import_module(module), name)


def _list_calls(plan: KerasPlan) -> set[int]:
    refs = [*plan.tops, *(ref for call in plan.calls for ref in call.inputs)]
    indexed = {ref.index for ref in refs if ref.source == "call" and ref.output > 0}
    return indexed | {index for index, call in enumerate(plan.calls) if returns_list(call.cls)}


class _Writer(PlanWalker[str]):
    """The plan walker whose tensors are Python expressions and whose layers are statements."""

    def __init__(self, net: Net, layout: str, plans: dict[str, KerasPlan], callees: dict[str, str]) -> None:
        super().__init__(net, layout, plans)
        self.callees = callees
        self.lines: list[str] = []
        self.variables = UniqueNames()
        for name in [*MODULE_NAMES, *callees.values()]:
            self.variables.take(name.partition(".")[0])
        # Caffe reuses a blob's name for its in-place updates; the variable follows the blob.
        self.blob_variables: dict[str, str] = {}
        self.list_calls = {name: _list_calls(plan) for name, plan in plans.items()}

    def blob_variable(self, blob: str) -> str:
        if blob not in self.blob_variables:
            self.blob_variables[blob] = self.variables.take(identifier(blob))
        return self.blob_variables[blob]

    def make_input(self, value: Value, shape: tuple[int, ...], batch_size: int | None, name: str) -> str:
        target = self.blob_variable(value.blob)
        kwargs = [f"shape={literal(shape)}"]
        if batch_size is not None:
            kwargs.append(f"batch_size={batch_size}")
        kwargs.append(f"name={literal(name)}")
        comment = f"{value.producer.type} → {_shape_text([value])}"
        self.lines += statement(f"{target} = keras.Input", kwargs, comment=comment)
        return target

    def make_permute(self, value: Value, tensor: str, dims: tuple[int, ...], name: str) -> str:
        target = self.variables.take(identifier(caffe_name(name)))
        kwargs = [literal(dims), f"name={literal(name)}"]
        self.lines += statement(f"{target} = keras.layers.Permute", kwargs, [tensor])
        return target

    def make_call(self, node: Node, index: int, name: str, args: list[str]) -> Any:
        plan = self.plans[node.name]
        call = plan.calls[index]
        is_list = index in self.list_calls[node.name]
        tops = [value for value, ref in zip(node.tops, plan.tops, strict=True) if ref == output(index)]
        last = index == len(plan.calls) - 1
        # An in-place top reuses its bottom's variable, unless a later call still reads the bottom.
        bottoms = {self.tensors[value.key][0] for value in node.bottoms}
        if tops and not is_list and (last or self.blob_variable(tops[0].blob) not in bottoms):
            target = self.blob_variable(tops[0].blob)
        else:
            target = self.variables.take(identifier(node.name if is_list else caffe_name(name)))
        kwargs = [f"{key}={literal(value)}" for key, value in call.kwargs.items()]
        kwargs.append(f"name={literal(name)}")
        comment = f"{node.type} → {_shape_text(node.tops)}" if last else ""
        as_list = call.as_list or len(args) > 1
        self.lines += statement(f"{target} = {self.callees[call.cls]}", kwargs, args, as_list, comment)
        return (target, is_list)

    def pick(self, result: Any, index: int) -> str:
        target, is_list = result
        return f"{target}[{index}]" if is_list else target


@dataclass
class _Module:
    """One of netdef's layer modules, split into its top-level definitions and imports."""

    name: str
    lines: list[str]
    #: Top-level name -> the statement defining it.
    definitions: dict[str, ast.stmt] = field(default_factory=dict)
    #: Imported name -> (module, original name, alias or None).
    imports: dict[str, tuple[str, str | None, str | None]] = field(default_factory=dict)


@cache
def _module(name: str) -> _Module:
    source = inspect.getsource(sys.modules[name] if name in sys.modules else importlib.import_module(name))
    parsed = _Module(name, source.splitlines())
    package = name.rpartition(".")[0]
    for node in ast.parse(source).body:
        if isinstance(node, ast.Import):
            for alias in node.names:
                parsed.imports[alias.asname or alias.name.partition(".")[0]] = (alias.name, None, alias.asname)
        elif isinstance(node, ast.ImportFrom):
            origin = f"{package}.{node.module}" if node.level else node.module or ""
            for alias in node.names:
                parsed.imports[alias.asname or alias.name] = (origin, alias.name, alias.asname)
        elif isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            parsed.definitions[node.name] = node
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            parsed.definitions.update({t.id: node for t in targets if isinstance(t, ast.Name)})
    return parsed


def _source(module: _Module, node: ast.stmt) -> str:
    """A definition's text with its decorators and the comment lines right above it."""
    first = min([node.lineno, *(d.lineno for d in getattr(node, "decorator_list", []))]) - 1
    while first > 0 and module.lines[first - 1].lstrip().startswith("#"):
        first -= 1
    return "\n".join(module.lines[first : node.end_lineno])


@dataclass
class Standalone:
    """The imports and definitions a module needs to hold netdef's layers without netdef."""

    imports: list[str]
    definitions: list[str]
    names: list[str]


def standalone_sources(classes: Sequence[str]) -> Standalone:
    """The source of netdef layer classes (import paths) and of everything they use, in order,
    and the imports of a module holding them (``keras`` always).

    Follows the names each definition reads through its module's top level and imports, so
    the private helpers come along and nothing else does. A module's definitions keep their
    source order after those of the modules they import from, which is an order Python has
    already executed them in.
    """
    needed: dict[str, set[str]] = {}
    external = {("keras", None, None)}  # build_model needs it whatever the layers use
    depends: dict[str, set[str]] = {}  # module -> the netdef modules it reads from

    def visit(module_name: str, name: str) -> None:
        module = _module(module_name)
        if name in needed.get(module_name, set()):
            return
        needed.setdefault(module_name, set()).add(name)
        node = module.definitions[name]
        for used in sorted({n.id for n in ast.walk(node) if isinstance(n, ast.Name)}):
            if used in module.definitions and used != name:
                visit(module_name, used)
            elif used in module.imports:
                origin, original, alias = module.imports[used]
                if origin.startswith(NETDEF_LAYERS) and original is not None:
                    depends.setdefault(module_name, set()).add(origin)
                    visit(origin, original)
                elif origin != "__future__":
                    external.add((origin, original, alias))

    order: list[str] = []  # modules, dependencies first

    def place(module_name: str) -> None:
        if module_name not in order:
            for dependency in sorted(depends.get(module_name, ())):
                place(dependency)
            order.append(module_name)

    for path in classes:
        module_name, _, name = path.rpartition(".")
        visit(module_name, name)
    for module_name in needed:
        place(module_name)
    definitions: list[str] = []
    names: list[str] = []
    for module_name in order:
        module = _module(module_name)
        statements = {id(module.definitions[n]): module.definitions[n] for n in needed[module_name]}
        nodes = sorted(statements.values(), key=lambda node: node.lineno)
        definitions += [_source(module, node) for node in nodes]
        names += sorted(needed[module_name])
    clashes = {n for n in names if names.count(n) > 1}
    if clashes:
        raise ValueError(f"netdef's layer modules define {', '.join(sorted(clashes))} more than once")
    return Standalone(_import_lines(external), definitions, names)


def _import_lines(imports: Iterable[tuple[str, str | None, str | None]]) -> list[str]:
    """Import statements in isort's order: standard library, then third party; ``import``
    before ``from``; names ordered constants, classes, functions."""
    plain: set[str] = set()
    froms: dict[str, set[str]] = {}
    for module, name, alias in imports:
        if name is None:
            plain.add(module if alias is None else f"{module} as {alias}")
        else:
            froms.setdefault(module, set()).add(name if alias is None else f"{name} as {alias}")

    def section(module: str) -> int:
        return 0 if module.partition(".")[0] in sys.stdlib_module_names else 1

    def by_type(name: str) -> tuple[int, str]:
        return (0 if name.isupper() else 1 if name[0].isupper() else 2, name)

    rows = [(section(m), 0, m, f"import {m}") for m in plain]
    rows += [
        (section(m), 1, m, f"from {m} import {', '.join(sorted(names, key=by_type))}") for m, names in froms.items()
    ]
    lines: list[str] = []
    previous = None
    for group, _, _, line in sorted(rows):
        if previous is not None and group != previous:
            lines.append("")
        lines.append(line)
        previous = group
    return lines


def _gaps(definitions: Sequence[str]) -> list[int]:
    """Blank lines before each top-level definition, as isort and ruff format want them:
    two around functions and classes, one between constants and after the imports."""
    heads = [next(line for line in text.splitlines() if not line.startswith("#")) for text in definitions]
    compound = [head.startswith(("def ", "class ", "@")) for head in heads]
    return [2 if here or (index and compound[index - 1]) else 1 for index, here in enumerate(compound)]


@cache
def _environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.PackageLoader("netdef", "templates"),
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        autoescape=False,
        undefined=jinja2.StrictUndefined,
    )


def _callee(cls: str, standalone: bool) -> tuple[str, str | None]:
    """How the module names a Keras class, and the import that brings the name (None: none)."""
    if cls.startswith("keras."):
        return cls, None
    module, _, name = cls.rpartition(".")
    return name, None if standalone else f"from {module} import {name}"


def generate(
    net_or_path: NetSource | Net,
    phase: str = "TEST",
    stages: Iterable[str] = (),
    layout: str = lay.CAFFE,
    standalone: bool = False,
    *,
    level: int = 0,
    data_shapes: dict[str, tuple[int, ...]] | None = None,
) -> str:
    """The source of a Python module whose ``build_model()`` builds the net's Keras model.

    The model is the one :func:`netdef.to_keras` builds, layer for layer. The module imports
    netdef's custom layers and has ``load_caffe_weights(model, path)``; with ``standalone``
    it needs only Keras: the layers' source is copied in and the weight loader left out.
    """
    net = load_net(net_or_path, phase=phase, stages=stages, level=level, data_shapes=data_shapes)
    plans = plan_net(net, layout)
    classes = list(dict.fromkeys(call.cls for plan in plans.values() for call in plan.calls))
    callees = {cls: _callee(cls, standalone)[0] for cls in classes}
    imports = [line for cls in classes if (line := _callee(cls, standalone)[1])]
    custom = [cls for cls in classes if cls.startswith(NETDEF_LAYERS)]
    sources = standalone_sources(custom) if standalone else Standalone([], [], [])
    if not standalone:
        imports = ["import keras", "", "import netdef.keras.compiler", "import netdef.keras.weights", *sorted(imports)]
    writer = _Writer(net, layout, plans, {**callees, **{name: name for name in sources.names}})
    outputs = writer.walk(output_values(net))
    source_nodes = [node for node in net.nodes if node.is_source and node.type != "Input"]
    shapes = {value.blob: value.shape for node in source_nodes for value in node.tops if value.shape is not None}
    loader = [
        "PROTOTXT",
        f"phase={literal(pb.Phase.Name(net.phase))}",
        f"stages={literal(list(net.state.stage))}",
        f"level={net.state.level}",
    ]
    if shapes:
        loader.append(f"data_shapes={literal(shapes)}")
    title = f"{net.name or 'The net'} as Keras layers: generated by netdef from its Caffe definition."
    doc = [
        f"Phase {pb.Phase.Name(net.phase)}, layout {layout!r}: build_model() returns what netdef.to_keras compiles.",
        "Regenerate it with ``netdef codegen`` rather than editing it.",
    ]
    doc.append(
        "Standalone: needs only Keras; netdef's layers are copied in. It has no Caffe weight loader."
        if standalone
        else "load_caffe_weights(model, path) reads Caffe's weights into it through netdef."
    )
    return (
        _environment()
        .get_template("module.py.j2")
        .render(
            title=title,
            doc=doc,
            imports=sources.imports if standalone else imports,
            definitions=list(zip(_gaps(sources.definitions), sources.definitions, strict=True)),
            prototxt=None if standalone else to_text(net.param),
            body=writer.lines,
            model=statement(
                "return keras.Model",
                [
                    f"inputs=[{', '.join(writer.inputs)}]",
                    f"outputs=[{', '.join(outputs)}]",
                    f"name={literal(keras_name(net.name or 'net'))}",
                ],
            ),
            loader=None if standalone else statement("net = netdef.load_net", loader),
            layout=literal(layout),
        )
    )
