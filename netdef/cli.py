"""The ``netdef`` command: Caffe's tools as verbs.

A user's mistake is answered in one or two lines naming the file, line and layer, with a
non-zero exit and no traceback; ``--debug`` shows the traceback for netdef's developers.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from netdef import classify as classify_verb
from netdef.data import commands as data_verbs
from netdef.errors import NetdefError, NetDefinitionError, ParseError
from netdef.fileio import atomic_write
from netdef.layers.registry import Shape
from netdef.load import load_net
from netdef.proto import netdef_pb2 as pb
from netdef.prototxt import BINARY_SUFFIXES, Parsed, read_net, read_solver, to_text
from netdef.solver import commands as solver_verbs
from netdef.summary import summary_json, summary_table
from netdef.upgrade import upgrade_net, upgrade_solver

if TYPE_CHECKING:
    from netdef.ir import Net
    from netdef.keras.compiler import Compiled

#: Exit status for a user's mistake (bad file, bad option); argparse uses 2 for usage.
EXIT_USER_ERROR = 1
#: Exit status after Ctrl-C, as a shell reports a process stopped by SIGINT.
EXIT_INTERRUPTED = 130


def _data_shape(text: str) -> tuple[str, Shape]:
    name, sep, dims = text.partition("=")
    try:
        shape = tuple(int(d) for d in dims.split(","))
    except ValueError:
        shape = ()
    if not sep or not name or not shape or any(d <= 0 for d in shape):
        raise argparse.ArgumentTypeError(f"expected NAME=N,C,H,W with positive integers, received {text!r}")
    return name, shape


def _add_state_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--phase", default="TEST", type=str.upper, choices=("TRAIN", "TEST"), help="net phase (default TEST)"
    )
    parser.add_argument("--stage", action="append", default=[], help="NetState stage; repeat or comma-separate")
    parser.add_argument("--level", type=int, default=0, help="NetState level (default 0)")
    parser.add_argument(
        "--data-shape",
        action="append",
        type=_data_shape,
        default=[],
        metavar="NAME=N,C,H,W",
        help="shape of a data layer's top when its source is not at hand (layer or top name)",
    )
    parser.add_argument("--allow-python", action="store_true", help="accept Python layers (they run arbitrary code)")


def _comma_list(values: Sequence[str]) -> list[str]:
    """Repeated options that also accept comma-separated values, as Caffe's flags do."""
    return [item for value in values for item in value.split(",") if item]


def cmd_summary(args: argparse.Namespace) -> int:
    net = _load(args, args.net)
    if args.json:
        print(json.dumps(summary_json(net), indent=1))
    else:
        print(summary_table(net))
    return 0


def _read_net_or_solver(path: str) -> Parsed[pb.NetParameter] | Parsed[pb.SolverParameter]:
    """A file given to ``upgrade`` may be a net or a solver; the text tells which."""
    try:
        return read_net(path)
    except ParseError as net_error:
        try:
            return read_solver(path)
        except ParseError as solver_error:
            # The kind that parsed further into the file is the one the user meant.
            net_line = net_error.location.line if net_error.location else 0
            solver_line = solver_error.location.line if solver_error.location else 0
            raise (solver_error if (solver_line or 0) > (net_line or 0) else net_error) from None


def cmd_upgrade(args: argparse.Namespace) -> int:
    parsed = _read_net_or_solver(args.input)
    if isinstance(parsed.message, pb.NetParameter):
        result = upgrade_net(parsed.message, parsed.source)
        message, applied = result.net, result.applied
        for warning in result.warnings:
            print(f"netdef: warning: {warning}", file=sys.stderr)
    else:
        message, applied = upgrade_solver(parsed.message, parsed.file)
    binary = Path(args.output).suffix.lower() in BINARY_SUFFIXES
    atomic_write(args.output, message.SerializeToString() if binary else to_text(message))
    what = ", ".join(applied) if applied else "nothing to upgrade; written unchanged"
    print(f"{args.input} -> {args.output}: {what}")
    return 0


def _load(args: argparse.Namespace, net: str) -> Net:
    loaded = load_net(
        net,
        phase=args.phase,
        stages=_comma_list(args.stage),
        level=args.level,
        data_shapes=dict(args.data_shape),
        allow_python=args.allow_python,
    )
    _print_warnings(loaded.warnings)
    return loaded


def _input_arrays(net: Net, pairs: Sequence[str]) -> dict[str, np.ndarray]:
    """``NAME=FILE.npy`` pairs, checked against the net's inputs (Caffe shapes, any batch)."""
    expected = {value.blob: value.shape for value in net.feeds}
    arrays: dict[str, np.ndarray] = {}
    for pair in pairs:
        name, sep, file = pair.partition("=")
        if not sep or name not in expected:
            raise NetDefinitionError(
                f"unknown input '{name}'",
                expected=f"NAME=FILE.npy with NAME one of {', '.join(expected)}",
                received=pair,
            )
        try:
            array = np.load(file).astype(np.float32)
        except (OSError, ValueError) as error:
            raise NetDefinitionError(f"cannot read input '{name}' from {file}: {error}") from None
        shape = expected[name]
        if shape is not None and tuple(array.shape[1:]) != tuple(shape[1:]):
            raise NetDefinitionError(
                f"input '{name}' has the wrong shape",
                expected=f"(N, {', '.join(map(str, shape[1:]))})",
                received=str(array.shape),
            )
        arrays[name] = array
    missing = [f"{name} {expected[name]}" for name in expected if name not in arrays]
    if missing:
        raise NetDefinitionError(f"no data for input {', '.join(missing)}", hint="give --input NAME=FILE.npy for each")
    return arrays


def _weights_into(compiled: Compiled, weights: str | None) -> None:
    from netdef.keras.weights import load_caffe_weights

    if weights:
        for note in load_caffe_weights(compiled, weights):
            print(f"netdef: note: {note}", file=sys.stderr)


def cmd_forward(args: argparse.Namespace) -> int:
    from netdef.keras.compiler import compile_net, forward

    net = _load(args, args.net)
    wanted = _comma_list(args.blobs) or net.blob_names
    compiled = compile_net(net, outputs=wanted)
    _weights_into(compiled, args.weights)
    arrays = _input_arrays(net, args.input)
    results = forward(compiled, [arrays[value.blob] for value in net.feeds])
    blobs = dict(zip(wanted, results, strict=True))
    buffer = io.BytesIO()
    np.savez(buffer, **blobs)
    atomic_write(args.output, buffer.getvalue())
    for name, array in blobs.items():
        print(f"{name}: {tuple(array.shape)}")
    print(f"wrote {len(blobs)} blobs to {args.output}")
    return 0


def cmd_compile(args: argparse.Namespace) -> int:
    if not args.output.endswith(".keras"):
        raise NetDefinitionError("the output must be a .keras file", received=args.output)
    from netdef.keras.compiler import compile_net

    net = _load(args, args.net)
    compiled = compile_net(net, layout=args.layout)
    _weights_into(compiled, args.weights)
    compiled.model.save(args.output)
    print(f"wrote {args.output}: {compiled.model.count_params():,} parameters, layout {args.layout}")
    return 0


def cmd_codegen(args: argparse.Namespace) -> int:
    from netdef.codegen import generate

    net = _load(args, args.net)
    source = generate(net, layout=args.layout, standalone=args.standalone)
    atomic_write(args.output, source)
    kind = "standalone module" if args.standalone else "module"
    print(f"wrote {args.output}: {kind} with build_model() for {net.name or 'the net'}, layout {args.layout}")
    return 0


def _weights_format(path: str) -> str:
    name = path.lower()
    if name.endswith(".weights.h5"):
        return "keras"
    if name.endswith((".h5", ".hdf5")):
        return "hdf5"
    return "caffemodel"


def cmd_convert_weights(args: argparse.Namespace) -> int:
    """Between .caffemodel, Caffe's HDF5 and Keras's .weights.h5 (the latter needs the net)."""
    from netdef.weights import read_weights, write_caffe_hdf5, write_caffemodel

    source, target = _weights_format(args.input), _weights_format(args.output)
    if "keras" in (source, target) and not args.model:
        raise NetDefinitionError("converting Keras weights needs the net", hint="add --model NET.prototxt")
    net = _load(args, args.model) if args.model else None
    if source == "keras" or target == "keras":
        from netdef.keras.compiler import compile_net
        from netdef.keras.weights import caffe_blobs

        compiled = compile_net(net)
        if source == "keras":
            compiled.model.load_weights(args.input)
        else:
            _weights_into(compiled, args.input)
        if target == "keras":
            _save_keras_weights(compiled.model, args.output)
            print(f"{args.input} -> {args.output}: {compiled.model.count_params():,} parameters")
            return 0
        layers = caffe_blobs(compiled)
    else:
        layers = read_weights(args.input)
    if target == "hdf5":
        write_caffe_hdf5(args.output, layers)
    else:
        write_caffemodel(args.output, layers, net.param if net else None)
    print(f"{args.input} -> {args.output}: {len(layers)} layers with weights")
    return 0


def _save_keras_weights(model: object, path: str) -> None:
    # Keras writes in place; a sibling temporary file and a rename keep the target whole.
    target = Path(path)
    temporary = target.with_name(f".{target.name.removesuffix('.weights.h5')}.partial.weights.h5")
    try:
        model.save_weights(temporary)  # type: ignore[attr-defined]
        os.replace(temporary, target)
    finally:
        temporary.unlink(missing_ok=True)


def _print_warnings(warnings: Sequence[NetdefError]) -> None:
    for warning in warnings:
        print(f"netdef: warning: {warning}", file=sys.stderr)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="netdef", description="Caffe model definitions, compiled to Keras.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    parser.add_argument(
        "--backend",
        choices=("tensorflow", "torch", "jax"),
        help="Keras backend (default: $KERAS_BACKEND, else tensorflow)",
    )
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="VERB")
    # --debug is accepted after the verb too, where people tend to add it.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks")

    summary = verbs.add_parser(
        "summary", parents=[common], help="layer table with Caffe top shapes and parameter counts"
    )
    summary.add_argument("net", help="net prototxt (or binary NetParameter)")
    _add_state_options(summary)
    summary.add_argument("--json", action="store_true", help="machine-readable output")
    summary.set_defaults(run=cmd_summary)

    forward = verbs.add_parser("forward", parents=[common], help="run one forward pass and save every blob (.npz)")
    forward.add_argument("net", help="net prototxt")
    forward.add_argument("--weights", help=".caffemodel or Caffe HDF5 weights")
    forward.add_argument("--input", action="append", default=[], metavar="NAME=FILE.npy", help="input blob data")
    forward.add_argument("--blobs", action="append", default=[], metavar="A,B", help="only these blobs")
    forward.add_argument("-o", "--output", required=True, help="where to write the blobs (.npz)")
    _add_state_options(forward)
    forward.set_defaults(run=cmd_forward)

    compile_ = verbs.add_parser("compile", parents=[common], help="compile a net to a Keras .keras model")
    compile_.add_argument("net", help="net prototxt")
    compile_.add_argument("--weights", help=".caffemodel or Caffe HDF5 weights")
    compile_.add_argument(
        "--layout", choices=("caffe", "channels_last"), default="caffe", help="layout at the boundary"
    )
    compile_.add_argument("-o", "--output", required=True, help="the .keras file to write")
    _add_state_options(compile_)
    compile_.set_defaults(run=cmd_compile)

    codegen = verbs.add_parser("codegen", parents=[common], help="write Python source that builds the Keras model")
    codegen.add_argument("net", help="net prototxt")
    codegen.add_argument("-o", "--output", required=True, help="the .py file to write")
    codegen.add_argument("--layout", choices=("caffe", "channels_last"), default="caffe", help="layout at the boundary")
    codegen.add_argument("--standalone", action="store_true", help="copy netdef's layers in: needs only Keras")
    _add_state_options(codegen)
    codegen.set_defaults(run=cmd_codegen)

    convert = verbs.add_parser(
        "convert-weights", parents=[common], help="convert between .caffemodel, Caffe HDF5 and Keras .weights.h5"
    )
    convert.add_argument("input", help=".caffemodel, Caffe .h5, or Keras .weights.h5")
    convert.add_argument("output", help="format by suffix: .caffemodel, .h5 (Caffe), .weights.h5 (Keras)")
    convert.add_argument("--model", help="the net prototxt (needed for Keras weights)")
    _add_state_options(convert)
    convert.set_defaults(run=cmd_convert_weights)

    upgrade = verbs.add_parser(
        "upgrade", parents=[common], help="rewrite a legacy (V0/V1) net or solver in the current format"
    )
    upgrade.add_argument("input", help="net or solver, text or binary")
    upgrade.add_argument("output", help="where to write; binary when the suffix is .caffemodel/.binaryproto")
    upgrade.set_defaults(run=cmd_upgrade)
    data_verbs.register(verbs, common)
    classify_verb.register(verbs, common)
    solver_verbs.register(verbs, common)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    run: Callable[[argparse.Namespace], int] = args.run
    if args.backend:
        # Keras reads the backend once, at its first import, which the verbs do lazily.
        os.environ["KERAS_BACKEND"] = args.backend

    try:
        return run(args)
    except NetdefError as error:
        if args.debug:
            raise
        print(f"netdef: error: {error}", file=sys.stderr)
        return EXIT_USER_ERROR
    except OSError as error:
        if args.debug:
            raise
        print(f"netdef: error: {error.filename or ''}: {error.strerror}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        # Ctrl-C is the user's choice, not a failure to explain; the verbs have already cleaned
        # up (convert-imageset removes its partial database). 130 is the shell's 128 + SIGINT.
        if args.debug:
            raise
        print(f"netdef: {args.verb} interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
