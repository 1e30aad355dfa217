"""load_solver: Caffe's read-time fix-ups of a solver file."""

from __future__ import annotations

from pathlib import Path

from netdef import load_solver

from .conftest import REPO

SOLVER = 'net: "net.prototxt"\nbase_lr: 0.01\nlr_policy: "fixed"\nsolver_type: ADAM\n'


def test_snapshot_prefix_defaults_to_the_solver_path_without_suffix(tmp_path: Path) -> None:
    path = tmp_path / "lenet_solver.prototxt"
    path.write_text(SOLVER)
    solver = load_solver(path)
    assert solver.snapshot_prefix == str(tmp_path / "lenet_solver")
    assert solver.type == "Adam" and not solver.HasField("solver_type")


def test_snapshot_prefix_naming_a_directory_gets_the_solver_stem(tmp_path: Path) -> None:
    (tmp_path / "snapshots").mkdir()
    path = tmp_path / "s.prototxt"
    path.write_text(SOLVER + f'snapshot_prefix: "{tmp_path / "snapshots"}"\n')
    assert load_solver(path).snapshot_prefix == str(tmp_path / "snapshots" / "s")


def test_explicit_prefix_and_text_sources_are_kept(tmp_path: Path) -> None:
    path = tmp_path / "s.prototxt"
    path.write_text(SOLVER + 'snapshot_prefix: "out/lenet"\n')
    assert load_solver(path).snapshot_prefix == "out/lenet"
    assert load_solver(SOLVER).snapshot_prefix == ""


def test_importing_netdef_does_not_start_keras() -> None:
    import subprocess
    import sys

    script = "import sys, netdef; netdef.load_net('zoo/lenet/deploy.prototxt'); print('keras' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True, cwd=REPO)
    assert result.stdout.strip() == "False"
