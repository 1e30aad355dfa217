"""Compiled zoo nets save to .keras and load back, with safe mode on, in a fresh process."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from netdef import load_net
from netdef.keras.compiler import compile_net
from netdef.keras.weights import load_caffe_weights

from .parity import write_random_caffemodel
from .test_parity_zoo import DEPLOY, random_inputs

LOADER = """
import json, sys
import numpy as np
import keras
import netdef.keras.layers  # registers netdef's layers for deserialization
cases = json.loads(sys.argv[1])
for case in cases:
    model = keras.saving.load_model(case["model"], safe_mode=True)
    inputs = np.load(case["inputs"])
    outputs = model.predict([inputs[name] for name in case["names"]], verbose=0)
    outputs = outputs if isinstance(outputs, list) else [outputs]
    np.savez(case["outputs"], *outputs)
"""


def test_every_zoo_deploy_net_round_trips_through_a_keras_file(caffe_zoo: Path, tmp_path: Path) -> None:
    cases, expected = [], {}
    for index, relative in enumerate(DEPLOY):
        net = load_net(caffe_zoo / relative)
        compiled = compile_net(net)
        load_caffe_weights(compiled, write_random_caffemodel(net, tmp_path / f"{index}.caffemodel"))
        inputs = random_inputs(net, batch=1)
        names = [value.blob for value in net.feeds]
        np.savez(tmp_path / f"{index}-in.npz", **inputs)
        compiled.model.save(tmp_path / f"{index}.keras")
        outputs = compiled.model.predict([inputs[name] for name in names], verbose=0)
        expected[index] = outputs if isinstance(outputs, list) else [outputs]
        cases.append(
            {
                "model": str(tmp_path / f"{index}.keras"),
                "inputs": str(tmp_path / f"{index}-in.npz"),
                "names": names,
                "outputs": str(tmp_path / f"{index}-out.npz"),
            }
        )
    subprocess.run([sys.executable, "-c", LOADER, json.dumps(cases)], check=True, capture_output=True)
    for index, relative in enumerate(DEPLOY):
        loaded = np.load(tmp_path / f"{index}-out.npz")
        for position, array in enumerate(expected[index]):
            # Same weights and graph; only the kernels a fresh process picks may sum in another order.
            np.testing.assert_allclose(loaded[f"arr_{position}"], array, rtol=1e-5, atol=1e-7, err_msg=relative)
