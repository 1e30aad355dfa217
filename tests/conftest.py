"""Shared fixtures: where Caffe's own files are, and the golden-file switch."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
CAFFE_ZOO = Path(os.environ.get("NETDEF_CAFFE_ZOO", REPO.parent / "shared" / "caffe-zoo"))
GOLDEN = Path(__file__).resolve().parent / "golden"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--update-golden", action="store_true", help="rewrite golden files instead of comparing")


@pytest.fixture(scope="session")
def caffe_zoo() -> Path:
    """BVLC Caffe's model and example files (../shared/caffe-zoo).

    Absent on a user's fresh clone (then the tests that need it skip), but always present
    in CI, where its absence must fail rather than silently skip half the suite.
    """
    if not CAFFE_ZOO.is_dir():
        if os.environ.get("CI"):
            pytest.fail(f"Caffe's zoo files are missing at {CAFFE_ZOO}")
        pytest.skip(f"Caffe's zoo files are not at {CAFFE_ZOO}")
    return CAFFE_ZOO


@pytest.fixture
def golden(request: pytest.FixtureRequest):
    """Compare text with a golden file, or rewrite it under --update-golden."""
    update = request.config.getoption("--update-golden")

    def check(relative: str, actual: str) -> None:
        path = GOLDEN / relative
        if update:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(actual)
            return
        assert path.exists(), f"no golden file {path}; run pytest --update-golden and review it"
        assert actual == path.read_text(), (
            f"{path} differs; if intended, run pytest --update-golden and review the diff"
        )

    return check
