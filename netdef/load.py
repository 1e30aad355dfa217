"""From a prototxt (or binary net) to a validated, shape-inferred IR: parse → upgrade →
filter by NetState → graph → shapes. The one entry point every tool goes through."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path

from netdef.errors import NetdefError, SourceLocation
from netdef.ir import Net, build_graph
from netdef.layers.registry import DataOptions, Shape
from netdef.netstate import filter_net, make_state
from netdef.proto import netdef_pb2 as pb
from netdef.prototxt import STRING_SOURCE, Parsed, SourceMap, read_net, read_solver
from netdef.shapes import infer_shapes
from netdef.upgrade import upgrade_net, upgrade_solver

NetSource = str | os.PathLike[str] | bytes | pb.NetParameter


def load_net(
    source: NetSource | Net,
    phase: str | int = "TEST",
    stages: Iterable[str] = (),
    level: int = 0,
    *,
    data_shapes: Mapping[str, Shape] | None = None,
    data_root: str | os.PathLike[str] | None = None,
    allow_python: bool = False,
) -> Net:
    """Load a net the way Caffe's ``Net(file, phase, level, stages)`` would see it.

    ``source`` is a path, prototxt text, serialized bytes or a NetParameter. Legacy V0/V1
    definitions are upgraded (also in-memory ones, unlike Caffe, since nothing is lost by
    it). ``data_shapes`` gives the top shape of data layers whose source is not at hand,
    keyed by layer or top name; ``data_root`` is where relative data sources are found
    (default: the working directory, as in Caffe).
    """
    if isinstance(source, Net):
        return source
    parsed = _parse(source)
    upgraded = upgrade_net(parsed.message, parsed.source)
    state = make_state(phase, stages, level, base=upgraded.net.state)
    filtered = filter_net(upgraded.net, state, upgraded.locations)
    locations = [upgraded.locations[index] for index in filtered.kept]
    net = build_graph(filtered.net, locations, parsed.file, allow_python=allow_python)
    net.warnings[:0] = [NetdefError(text, location=SourceLocation(parsed.file)) for text in upgraded.warnings]
    options = DataOptions(dict(data_shapes or {}), Path(data_root) if data_root is not None else None)
    infer_shapes(net, options)
    return net


def _parse(source: NetSource) -> Parsed[pb.NetParameter]:
    if isinstance(source, pb.NetParameter):
        return Parsed(source, SourceMap("<NetParameter>"))
    return read_net(source)


def load_solver(source: str | os.PathLike[str] | bytes) -> pb.SolverParameter:
    """Read and upgrade a solver as Caffe's ``ReadSolverParamsFromTextFileOrDie`` does.

    Besides the ``solver_type`` upgrade, Caffe fills in ``snapshot_prefix`` from the solver's
    own path: unset, it is the path without its extension; naming an existing directory, it
    is that directory joined with the solver file's stem.
    """
    parsed = read_solver(source)
    solver, _ = upgrade_solver(parsed.message, parsed.file)
    if parsed.file == STRING_SOURCE:
        return solver
    path = Path(parsed.file)
    if not solver.snapshot_prefix:
        solver.snapshot_prefix = str(path.with_suffix(""))
    elif Path(solver.snapshot_prefix).is_dir():
        solver.snapshot_prefix = str(Path(solver.snapshot_prefix) / path.stem)
    return solver
