"""Generated Keras source: golden files, lint-clean, and the very model the compiler builds."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from netdef import load_net, to_keras
from netdef.cli import main
from netdef.codegen import generate, literal
from netdef.keras.compiler import compile_net

from .conftest import REPO
from .parity import write_random_caffemodel
from .test_parity_zoo import DEPLOY, OWN_ZOO, random_inputs

GOLDEN_DIR = "codegen"


def _name(path: Path) -> str:
    return path.parent.name if path.name == "deploy.prototxt" else path.stem


def _ruff(*args: str, text: str, name: str) -> subprocess.CompletedProcess[str]:
    # In the repository, so that netdef counts as first-party exactly as for the golden files.
    filename = f"tests/golden/{GOLDEN_DIR}/{name}.py"
    return subprocess.run(
        [sys.executable, "-m", "ruff", *args, "--stdin-filename", filename, "-"],
        cwd=REPO,
        input=text,
        capture_output=True,
        text=True,
        check=False,
    )


@pytest.mark.parametrize("relative", DEPLOY)
def test_caffe_zoo_golden(caffe_zoo: Path, golden, relative: str) -> None:
    golden(f"{GOLDEN_DIR}/{_name(caffe_zoo / relative)}.py", generate(caffe_zoo / relative))


@pytest.mark.parametrize("prototxt", OWN_ZOO, ids=lambda p: p.parent.name)
def test_own_zoo_golden(golden, prototxt: Path) -> None:
    golden(f"{GOLDEN_DIR}/zoo_{_name(prototxt)}.py", generate(prototxt))


def _all_deploy_nets() -> list[Path]:
    from .conftest import CAFFE_ZOO

    return [*(CAFFE_ZOO / relative for relative in DEPLOY), *OWN_ZOO]


@pytest.mark.parametrize("standalone", [False, True], ids=["plain", "standalone"])
@pytest.mark.parametrize("prototxt", _all_deploy_nets(), ids=_name)
def test_generated_source_is_ruff_clean(caffe_zoo: Path, prototxt: Path, standalone: bool) -> None:
    for layout in ("caffe", "channels_last"):
        text = generate(prototxt, layout=layout, standalone=standalone)
        name = _name(prototxt)
        check = _ruff("check", "--no-cache", text=text, name=name)
        assert check.returncode == 0, check.stdout + check.stderr
        formatted = _ruff("format", "--no-cache", text=text, name=name)
        assert formatted.stdout == text, f"{prototxt} ({layout}) is not formatted as ruff formats it"


@pytest.mark.parametrize(
    ("value", "expected"),
    [("a'b", '"a\'b"'), ('a"b', "'a\"b'"), ((1,), "(1,)"), (float("-inf"), 'float("-inf")'), (0.1, "0.1")],
)
def test_literals_read_back(value: object, expected: str) -> None:
    assert literal(value) == expected
    assert eval(expected) == value  # the literal is what ruff would keep, and exact


#: Runs in a fresh process: builds each generated model, gives it the seeded weights
#: ``seeded_weights`` gives the compiled one, runs it and reports outputs, layer names and
#: parameter counts. A standalone module runs where netdef cannot be imported (it is
#: installed editable, so leaving the repository off sys.path is not enough: a None entry
#: in sys.modules makes every import of it fail).
RUNNER = textwrap.dedent(
    """
    import json, sys
    if {standalone!r}:
        sys.path = [p for p in sys.path if p not in ("", ".", {repo!r})]
        sys.modules["netdef"] = None
    try:
        import netdef
        has_netdef = True
    except ImportError:
        has_netdef = False
    import importlib
    import numpy as np
    sys.path.insert(0, ".")
    report = {{"has_netdef": has_netdef, "nets": {{}}}}
    for name, feeds in {nets!r}.items():
        model = importlib.import_module(name).build_model()
        for index, variable in enumerate(model.weights):
            rng = np.random.default_rng(index)
            variable.assign((rng.random(variable.shape, dtype="float32") - 0.5) * 0.2)
        inputs = np.load(name + "_inputs.npz")
        outputs = model([inputs[feed] for feed in feeds])
        np.savez(name + "_outputs.npz", *[np.asarray(o) for o in outputs])
        names = [layer.name for layer in model.layers]
        report["nets"][name] = {{"names": names, "params": model.count_params()}}
    print(json.dumps(report))
    """
)


def seeded_weights(model) -> None:
    """The weights RUNNER gives a generated model: variable ``i`` from seed ``i``, in order."""
    for index, variable in enumerate(model.weights):
        rng = np.random.default_rng(index)
        variable.assign((rng.random(variable.shape, dtype=np.float32) - 0.5) * 0.2)


@pytest.fixture(scope="module")
def compiled_zoo(caffe_zoo: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, list]]:
    """Every deploy net's generated modules (plain and standalone), inputs and compiled outputs."""
    folder = tmp_path_factory.mktemp("generated")
    expected: dict[str, list] = {}
    for prototxt in [*(caffe_zoo / relative for relative in DEPLOY), *OWN_ZOO]:
        net = load_net(prototxt)
        name = identifier_of(prototxt)
        compiled = compile_net(net, "caffe").model
        seeded_weights(compiled)
        feeds = random_inputs(net, batch=1)
        np.savez(folder / f"{name}_inputs.npz", **feeds)
        outputs = compiled([feeds[value.blob] for value in net.feeds])
        expected[name] = [compiled, [np.asarray(output) for output in outputs], [v.blob for v in net.feeds]]
        for standalone in (False, True):
            module = f"{name}_standalone" if standalone else name
            (folder / f"{module}.py").write_text(generate(net, standalone=standalone))
            if standalone:
                (folder / f"{module}_inputs.npz").write_bytes((folder / f"{name}_inputs.npz").read_bytes())
    return folder, expected


def identifier_of(prototxt: Path) -> str:
    return "net_" + _name(prototxt).replace("-", "_")


@pytest.mark.parametrize("standalone", [False, True], ids=["plain", "standalone"])
def test_generated_models_are_the_compiled_models(compiled_zoo, standalone: bool) -> None:
    folder, expected = compiled_zoo
    suffix = "_standalone" if standalone else ""
    nets = {f"{name}{suffix}": feeds for name, (_, _, feeds) in expected.items()}
    script = RUNNER.format(standalone=standalone, repo=str(REPO), nets=nets)
    result = subprocess.run([sys.executable, "-c", script], cwd=folder, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["has_netdef"] is not standalone
    for name, (compiled, outputs, _) in expected.items():
        generated = report["nets"][f"{name}{suffix}"]
        assert generated["names"] == [layer.name for layer in compiled.layers], name
        assert generated["params"] == compiled.count_params(), name
        produced = np.load(folder / f"{name}{suffix}_outputs.npz")
        for index, value in enumerate(outputs):
            np.testing.assert_allclose(produced[f"arr_{index}"], value, rtol=1e-4, atol=1e-5, err_msg=name)


def _import(path: Path):
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("layout", ["caffe", "channels_last"])
def test_cli_module_loads_caffe_weights(caffe_zoo: Path, tmp_path: Path, layout: str) -> None:
    prototxt = caffe_zoo / "examples/cifar10/cifar10_quick.prototxt"
    target = tmp_path / f"cifar_{layout}.py"
    assert main(["codegen", str(prototxt), "-o", str(target), "--layout", layout]) == 0
    net = load_net(prototxt)
    weights = write_random_caffemodel(net, tmp_path / "random.caffemodel")
    module = _import(target)
    model = module.build_model()
    assert module.load_caffe_weights(model, weights) == []
    expected = to_keras(prototxt, weights, layout=layout)
    feeds = random_inputs(net)["data"]
    if layout == "channels_last":
        feeds = feeds.transpose(0, 2, 3, 1)
    np.testing.assert_allclose(np.asarray(model([feeds])[0]), np.asarray(expected([feeds])[0]), rtol=1e-5, atol=1e-6)
