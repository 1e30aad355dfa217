"""The parity tests again on Keras's PyTorch backend, in a process of its own.

Keras fixes its backend when it is first imported, so the other backend needs a separate
interpreter; the same tests must pass there unchanged.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys

import keras
import pytest

from .conftest import REPO

PARITY_TESTS = [
    "tests/test_parity_layers.py",
    "tests/test_parity_numpy.py",
    "tests/test_parity_zoo.py",
    "tests/test_keras_weights.py",
    "tests/test_keras_ops_layers.py",
]


@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="runs the torch pass from the default backend")
def test_parity_tests_pass_on_the_torch_backend() -> None:
    if importlib.util.find_spec("torch") is None:
        if os.environ.get("CI"):
            pytest.fail("torch is not installed; the dev extra installs it")
        pytest.skip("torch is not installed")
    env = {**os.environ, "KERAS_BACKEND": "torch"}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *PARITY_TESTS],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert " passed" in result.stdout.splitlines()[-1]
