"""The command line: summary and upgrade, as a user runs them."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from netdef.cli import main
from netdef.proto import netdef_pb2 as pb
from netdef.prototxt import read_net, read_solver

from .conftest import REPO

LENET = REPO / "zoo" / "lenet" / "deploy.prototxt"

V1_NET = """name: "legacy"
input: "data"
input_dim: 1
input_dim: 1
input_dim: 8
input_dim: 8
layers {
  name: "conv"
  type: CONVOLUTION
  bottom: "data"
  top: "conv"
  blobs_lr: 1
  blobs_lr: 2
  weight_decay: 1
  weight_decay: 0
  convolution_param { num_output: 3 kernel_size: 3 }
}
layers { name: "relu" type: RELU bottom: "conv" top: "conv" }
layers { name: "prob" type: SOFTMAX bottom: "conv" top: "prob" }
"""


def test_summary_table_of_the_shipped_lenet(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["summary", str(LENET)]) == 0
    out = capsys.readouterr().out
    assert re.search(r"\nconv1 +Convolution +conv1 +\(64, 20, 24, 24\) +520\n", out)
    assert out.rstrip().endswith("Total parameters: 431,080")


def test_summary_json_has_the_documented_structure(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["summary", str(LENET), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["total_params"] == 431_080
    assert data["layers"][1] == {
        "name": "conv1",
        "type": "Convolution",
        "tops": {"conv1": [64, 20, 24, 24]},
        "params": 520,
    }
    assert [layer["name"] for layer in data["layers"]][-1] == "prob"


def test_summary_phase_stage_and_data_shape_options(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    net = tmp_path / "net.prototxt"
    net.write_text(
        'layer { name: "d" type: "Data" top: "data" top: "label" data_param { source: "missing" batch_size: 4 } }\n'
        'layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip" inner_product_param { num_output: 2 } }\n'
        'layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" include { phase: TRAIN } }\n'
        'layer { name: "deploy" type: "Softmax" bottom: "ip" top: "p" include { stage: "deploy" } }\n'
    )
    assert main(["summary", str(net), "--phase", "train", "--data-shape", "d=4,3,2,2", "--json"]) == 0
    layers = [layer["name"] for layer in json.loads(capsys.readouterr().out)["layers"]]
    assert layers == ["d", "ip", "loss"]
    assert main(["summary", str(net), "--stage", "deploy", "--data-shape", "data=4,3,2,2", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert [layer["name"] for layer in data["layers"]] == ["d", "ip", "deploy"]
    assert data["layers"][0]["tops"] == {"data": [4, 3, 2, 2], "label": [4]}


def test_bad_data_shape_option_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        main(["summary", str(LENET), "--data-shape", "data=4,x"])
    assert caught.value.code == 2
    assert "expected NAME=N,C,H,W" in capsys.readouterr().err


def test_upgrade_v1_net_round_trips(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    legacy, upgraded, again = tmp_path / "v1.prototxt", tmp_path / "v2.prototxt", tmp_path / "v2b.prototxt"
    legacy.write_text(V1_NET)
    assert main(["upgrade", str(legacy), str(upgraded)]) == 0
    assert capsys.readouterr().out.endswith(": v1_to_v2, input_fields\n")
    net = read_net(upgraded).message
    assert not net.layers and not net.input and not net.input_dim
    assert [(layer.name, layer.type) for layer in net.layer] == [
        ("input", "Input"),
        ("conv", "Convolution"),
        ("relu", "ReLU"),
        ("prob", "Softmax"),
    ]
    assert [(p.lr_mult, p.decay_mult) for p in net.layer[1].param] == [(1, 1), (2, 0)]
    assert list(net.layer[0].input_param.shape[0].dim) == [1, 1, 8, 8]
    assert main(["upgrade", str(upgraded), str(again)]) == 0
    assert "nothing to upgrade" in capsys.readouterr().out
    assert again.read_text() == upgraded.read_text()


def test_upgrade_writes_binary_for_binary_suffixes(tmp_path: Path) -> None:
    legacy = tmp_path / "v1.caffemodel"
    legacy.write_bytes(read_net(V1_NET).message.SerializeToString())
    out = tmp_path / "v2.caffemodel"
    assert main(["upgrade", str(legacy), str(out)]) == 0
    net = pb.NetParameter.FromString(out.read_bytes())
    assert [layer.type for layer in net.layer] == ["Input", "Convolution", "ReLU", "Softmax"]


def test_upgrade_solver_type_enum(tmp_path: Path) -> None:
    legacy, out = tmp_path / "solver.prototxt", tmp_path / "new.prototxt"
    legacy.write_text('net: "n.prototxt"\nbase_lr: 0.1\nlr_policy: "fixed"\nsolver_type: NESTEROV\n')
    assert main(["upgrade", str(legacy), str(out)]) == 0
    solver = read_solver(out).message
    assert solver.type == "Nesterov" and not solver.HasField("solver_type")


def test_upgrade_of_a_bad_file_reports_where_it_failed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.prototxt"
    bad.write_text('base_lr: 0.1\nlr_policy: "fixed"\nmomentun: 0.9\n')
    assert main(["upgrade", str(bad), str(tmp_path / "out.prototxt")]) == 1
    err = capsys.readouterr().err
    assert f"{bad}:3:1: SolverParameter has no field named 'momentun'; did you mean 'momentum'?" in err
    assert not (tmp_path / "out.prototxt").exists()


def test_ctrl_c_ends_a_verb_in_one_line(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    def interrupted(args) -> int:
        raise KeyboardInterrupt

    monkeypatch.setattr("netdef.cli.cmd_summary", interrupted)
    assert main(["summary", str(REPO / "zoo" / "lenet" / "deploy.prototxt")]) == 130
    assert capsys.readouterr().err == "netdef: summary interrupted\n"


def test_console_script_runs_and_reports_errors_without_traceback(tmp_path: Path) -> None:
    bad = tmp_path / "bad.prototxt"
    bad.write_text('layer { name: "x" type: "Convolution" bottom: "nothing" top: "x" }\n')
    result = subprocess.run(
        [sys.executable, "-m", "netdef.cli", "summary", str(bad)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 1
    assert result.stderr.startswith(f"netdef: error: {bad}:1:1: layer 'x' (Convolution): ")
    assert "Traceback" not in result.stderr
    debug = subprocess.run(
        [sys.executable, "-m", "netdef.cli", "summary", str(bad), "--debug"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert "Traceback" in debug.stderr


UPGRADE_FIXTURES = sorted((REPO / "tests" / "data" / "upgrade").glob("*.v2.prototxt"))


@pytest.mark.parametrize("expected", UPGRADE_FIXTURES, ids=lambda p: p.name)
def test_upgrade_command_matches_expected_v2_and_is_stable(tmp_path: Path, expected: Path) -> None:
    legacy = expected.with_name(expected.name.replace(".v2.prototxt", ".prototxt"))
    first, second = tmp_path / "first.prototxt", tmp_path / "second.prototxt"
    assert main(["upgrade", str(legacy), str(first)]) == 0
    assert read_net(first).message == read_net(expected).message
    assert main(["upgrade", str(first), str(second)]) == 0
    assert second.read_text() == first.read_text()


def test_backend_option_selects_the_keras_backend(tmp_path: Path) -> None:
    script = "import sys, netdef.cli; netdef.cli.main(sys.argv[1:]); import keras; print(keras.backend.backend())"
    result = subprocess.run(
        [sys.executable, "-c", script, "--backend", "torch", "summary", str(LENET)],
        capture_output=True,
        text=True,
        check=True,
    )
    assert result.stdout.strip().endswith("torch")
