"""Weights through Keras: .caffemodel → model → .caffemodel is lossless, and OpenCV reads
what netdef exports; the CLI's forward, compile and convert-weights verbs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from netdef import load_net
from netdef.cli import main
from netdef.errors import WeightsError
from netdef.keras.compiler import compile_net
from netdef.keras.weights import caffe_blobs, load_caffe_weights, set_caffe_blobs
from netdef.proto import netdef_pb2 as pb
from netdef.weights import read_caffemodel, write_caffemodel

from .parity import assert_close, opencv_forward, random_blobs, write_random_caffemodel

# Convolutions plain, grouped, depthwise and padded; an InnerProduct after a spatial blob and
# one with transpose; BatchNorm + Scale: every converter of netdef.keras.weights. OpenCV's
# importer ignores InnerProduct's `transpose`, so "fct" is checked against numpy instead.
NET = """name: "weights"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 2 dim: 4 dim: 9 dim: 9 } } }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
        convolution_param { num_output: 6 kernel_size: 3 stride: 2 pad: 1 } }
layer { name: "grouped" type: "Convolution" bottom: "conv" top: "grouped"
        convolution_param { num_output: 4 kernel_size: 3 group: 2 pad: 1 } }
layer { name: "depthwise" type: "Convolution" bottom: "grouped" top: "depthwise"
        convolution_param { num_output: 8 kernel_size: 3 group: 4 } }
layer { name: "bn" type: "BatchNorm" bottom: "depthwise" top: "depthwise" }
layer { name: "scale" type: "Scale" bottom: "depthwise" top: "depthwise" scale_param { bias_term: true } }
layer { name: "fc" type: "InnerProduct" bottom: "depthwise" top: "fc" inner_product_param { num_output: 5 } }
layer { name: "fct" type: "InnerProduct" bottom: "fc" top: "fct" inner_product_param { num_output: 3 transpose: true } }
"""


@pytest.fixture
def prototxt(tmp_path: Path) -> Path:
    path = tmp_path / "net.prototxt"
    path.write_text(NET)
    return path


def test_caffemodel_round_trip_through_keras_is_byte_identical(prototxt: Path, tmp_path: Path) -> None:
    net = load_net(prototxt)
    source = write_random_caffemodel(net, tmp_path / "in.caffemodel")
    compiled = compile_net(net)
    load_caffe_weights(compiled, source)
    write_caffemodel(tmp_path / "out.caffemodel", caffe_blobs(compiled), net.param)
    before = pb.NetParameter.FromString(source.read_bytes())
    after = pb.NetParameter.FromString((tmp_path / "out.caffemodel").read_bytes())
    blobs_before = {layer.name: [b.SerializeToString() for b in layer.blobs] for layer in before.layer if layer.blobs}
    blobs_after = {layer.name: [b.SerializeToString() for b in layer.blobs] for layer in after.layer if layer.blobs}
    assert blobs_after == blobs_before


def test_opencv_reads_the_exported_file_and_agrees(prototxt: Path, tmp_path: Path) -> None:
    net = load_net(prototxt)
    compiled = compile_net(net, outputs=["fc", "fct"])
    # Weights set in Keras (BatchNorm statistics must be non-zero, Keras's initial values are
    # Caffe's zeros), then exported: OpenCV must compute what the Keras model does.
    set_caffe_blobs(compiled, {layer.name: layer.blobs for layer in random_blobs(net, seed=5)})
    write_caffemodel(tmp_path / "keras.caffemodel", caffe_blobs(compiled), net.param)
    x = np.random.default_rng(0).standard_normal((2, 4, 9, 9)).astype(np.float32)
    expected = opencv_forward(prototxt, tmp_path / "keras.caffemodel", {"data": x}, ["fc"])[0]
    fc, fct = compiled.model.predict(x, verbose=0)
    assert_close(fc, expected)
    weight, bias = {layer.name: layer.blobs for layer in read_caffemodel(tmp_path / "keras.caffemodel")}["fct"]
    assert weight.shape == (5, 3)  # (K, N) when transposed
    assert_close(fct, fc @ weight + bias)


def test_shape_mismatch_names_layer_and_both_shapes(prototxt: Path, tmp_path: Path) -> None:
    net = load_net(prototxt)
    layers = random_blobs(net)
    layers[0].blobs[0] = np.zeros((6, 4, 5, 5), np.float32)
    write_caffemodel(tmp_path / "bad.caffemodel", layers)
    with pytest.raises(WeightsError) as caught:
        load_caffe_weights(compile_net(net), tmp_path / "bad.caffemodel")
    assert "conv" in str(caught.value) and "(6, 4, 3, 3)" in str(caught.value) and "(6, 4, 5, 5)" in str(caught.value)


def test_forward_command_saves_every_blob_in_caffe_layout(prototxt: Path, tmp_path: Path, capsys) -> None:
    net = load_net(prototxt)
    weights = write_random_caffemodel(net, tmp_path / "w.caffemodel")
    x = np.random.default_rng(1).standard_normal((3, 4, 9, 9)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    out = tmp_path / "blobs.npz"
    assert (
        main(
            [
                "forward",
                str(prototxt),
                "--weights",
                str(weights),
                "--input",
                f"data={tmp_path / 'x.npy'}",
                "-o",
                str(out),
            ]
        )
        == 0
    )
    blobs = np.load(out)
    assert set(blobs.files) == set(net.blob_names)
    assert blobs["conv"].shape == (3, 6, 5, 5) and blobs["depthwise"].shape == (3, 8, 3, 3)
    expected = opencv_forward(prototxt, weights, {"data": x}, ["fc", "conv"])
    assert_close(blobs["fc"], expected[0])
    assert_close(blobs["conv"], expected[1])
    assert (
        main(["forward", str(prototxt), "--input", f"data={tmp_path / 'x.npy'}", "--blobs", "fc", "-o", str(out)]) == 0
    )
    assert np.load(out).files == ["fc"]


def test_forward_command_reports_missing_and_misshapen_inputs(prototxt: Path, tmp_path: Path, capsys) -> None:
    assert main(["forward", str(prototxt), "-o", str(tmp_path / "o.npz")]) == 1
    assert "no data for input data (2, 4, 9, 9)" in capsys.readouterr().err
    np.save(tmp_path / "bad.npy", np.zeros((1, 3, 9, 9), np.float32))
    assert (
        main(["forward", str(prototxt), "--input", f"data={tmp_path / 'bad.npy'}", "-o", str(tmp_path / "o.npz")]) == 1
    )
    assert "expected (N, 4, 9, 9), received (1, 3, 9, 9)" in capsys.readouterr().err


def test_compile_command_writes_a_model_that_loads_in_a_fresh_process(prototxt: Path, tmp_path: Path) -> None:
    net = load_net(prototxt)
    weights = write_random_caffemodel(net, tmp_path / "w.caffemodel")
    assert main(["compile", str(prototxt), "--weights", str(weights), "-o", str(tmp_path / "m.keras")]) == 0
    x = np.random.default_rng(2).standard_normal((2, 4, 9, 9)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    script = (
        "import sys, numpy as np, keras, netdef.keras.layers;"
        "m = keras.saving.load_model(sys.argv[1], safe_mode=True);"
        "np.save(sys.argv[3], m.predict(np.load(sys.argv[2]), verbose=0))"
    )
    subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "m.keras"), str(tmp_path / "x.npy"), str(tmp_path / "y.npy")],
        check=True,
        capture_output=True,
    )
    compiled = compile_net(net)
    load_caffe_weights(compiled, weights)
    np.testing.assert_array_equal(np.load(tmp_path / "y.npy"), compiled.model.predict(x, verbose=0))


def test_convert_weights_between_all_three_formats(prototxt: Path, tmp_path: Path) -> None:
    net = load_net(prototxt)
    source = write_random_caffemodel(net, tmp_path / "a.caffemodel")
    h5, keras_file, back = tmp_path / "a.h5", tmp_path / "a.weights.h5", tmp_path / "b.caffemodel"
    assert main(["convert-weights", str(source), str(h5)]) == 0
    assert main(["convert-weights", str(h5), str(keras_file), "--model", str(prototxt)]) == 0
    assert main(["convert-weights", str(keras_file), str(back), "--model", str(prototxt)]) == 0
    original = {layer.name: layer.blobs for layer in read_caffemodel(source)}
    restored = {layer.name: layer.blobs for layer in read_caffemodel(back)}
    assert original.keys() == restored.keys()
    for name, blobs in original.items():
        for a, b in zip(blobs, restored[name], strict=True):
            np.testing.assert_array_equal(a, b)


def test_convert_to_keras_needs_the_net(tmp_path: Path, capsys) -> None:
    assert main(["convert-weights", str(tmp_path / "a.caffemodel"), str(tmp_path / "a.weights.h5")]) == 1
    assert "--model" in capsys.readouterr().err
