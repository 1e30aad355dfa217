"""Helpers for forward-parity tests: random Caffe weights, OpenCV's Caffe importer as oracle.

OpenCV's dnn module implements Caffe's layers independently of netdef, reading the same
prototxt and .caffemodel files; agreeing with it checks shapes, weight layouts and numerics
at once.
"""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np

from netdef.ir import Net
from netdef.keras.compiler import compile_net, forward
from netdef.keras.weights import load_caffe_weights
from netdef.weights import LayerBlobs, write_caffemodel


def random_blobs(net: Net, seed: int = 0) -> list[LayerBlobs]:
    """Weights that keep activations of order one through deep nets.

    BatchNorm statistics get a positive variance and a non-trivial scale factor, so the
    division by the factor is exercised too.
    """
    rng = np.random.default_rng(seed)
    layers = []
    for node in net.nodes:
        if not node.blobs:
            continue
        blobs = []
        for blob in node.blobs:
            shape = blob.shape
            if node.type == "BatchNorm":
                factor = 2.0
                values = {0: rng.normal(0, 0.1, shape) * factor, 1: rng.uniform(0.5, 1.5, shape) * factor}
                blobs.append(np.asarray(values.get(blob.index, np.full(shape, factor)), dtype=np.float32))
                continue
            fan_in = math.prod(shape[1:]) if len(shape) > 1 else 1
            scale = 1.0 / math.sqrt(fan_in) if len(shape) > 1 else 0.1
            values = rng.normal(0, scale, shape)
            if node.type == "Scale" and blob.index == 0:
                values = 1 + values
            blobs.append(values.astype(np.float32))
        layers.append(LayerBlobs(node.name, node.type, blobs))
    return layers


def write_random_caffemodel(net: Net, path: Path, seed: int = 0) -> Path | None:
    """A .caffemodel of random weights, or None for a net without weights."""
    layers = random_blobs(net, seed)
    if not layers:
        return None
    write_caffemodel(path, layers, net.param)
    return path


def opencv_forward(
    prototxt: Path, caffemodel: Path | None, inputs: dict[str, np.ndarray], outputs: list[str]
) -> list[np.ndarray]:
    args = (str(prototxt), str(caffemodel)) if caffemodel else (str(prototxt),)
    net = cv2.dnn.readNetFromCaffe(*args)
    net.setPreferableBackend(cv2.dnn.DNN_BACKEND_OPENCV)
    for name, array in inputs.items():
        net.setInput(array, name)
    return [np.asarray(out) for out in net.forward(outputs)]


def netdef_forward(
    net: Net, caffemodel: Path | None, inputs: dict[str, np.ndarray], outputs: list[str], layout: str = "caffe"
) -> list[np.ndarray]:
    compiled = compile_net(net, layout=layout, outputs=outputs)
    if caffemodel is not None:
        load_caffe_weights(compiled, caffemodel)
    return forward(compiled, [inputs[value.blob] for value in net.feeds])


def assert_close(actual: np.ndarray, reference: np.ndarray, what: str = "") -> None:
    """max |a − r| ≤ 1e-4 · max(1, max |r|), the project's parity tolerance."""
    assert actual.shape == reference.shape, f"{what}: shape {actual.shape} != {reference.shape}"
    bound = 1e-4 * max(1.0, float(np.abs(reference).max(initial=0.0)))
    error = float(np.abs(actual - reference).max(initial=0.0))
    assert error <= bound, f"{what}: max abs error {error:.3g} > {bound:.3g}"
