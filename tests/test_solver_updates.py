"""Training a small TRAIN net with Caffe's solvers, checked against Caffe's formulas in numpy.

Each case trains the net of :mod:`tests.solver_oracle` through ``CaffeTrainingModel`` +
``caffe_optimizer`` + ``model.fit`` for a few iterations from fixed weights and data, and
compares every parameter after every batch, and every logged output, with the numpy
re-computation (relative error ≤ 1e-5 of each blob's scale). The multipliers are in every
case: ip1's bias has lr_mult 2 and decay_mult 0, ip2's bias lr_mult 0 (so it must never
move, not even by weight decay), the two losses have weights 2 and 0.5. The same cases
run again on the PyTorch backend in one subprocess.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from dataclasses import dataclass

import keras
import numpy as np
import pytest
from google.protobuf import text_format

import netdef
from netdef.errors import SolverError
from netdef.keras.weights import caffe_blobs, set_caffe_blobs
from netdef.proto import netdef_pb2 as pb
from netdef.solver.net_model import CaffeTrainingModel, learnable_variables, param_rules
from netdef.solver.optimizers import (
    CaffeAdaDelta,
    CaffeAdaGrad,
    CaffeAdam,
    CaffeNesterov,
    CaffeRMSProp,
    CaffeSGD,
    ParamRule,
    caffe_optimizer,
)
from netdef.solver.schedules import StepLR

from .conftest import REPO
from .solver_oracle import NetSpec, Solver

BATCH = 4
UPDATES = 4


def net_text(shared: bool) -> str:
    """The test net as a prototxt: ``ip1`` (and ``ip1b`` sharing its weight) → ReLU → ``ip2`` → two losses."""
    first = "ip1"
    text = f"""
name: "solver_test"
layer {{ name: "data" type: "MemoryData" top: "data" top: "label"
  memory_data_param {{ batch_size: {BATCH} channels: 2 height: 1 width: 3 }} }}
layer {{ name: "target" type: "Input" top: "target" input_param {{ shape {{ dim: {BATCH} dim: 3 }} }} }}
layer {{ name: "ip1" type: "InnerProduct" bottom: "data" top: "ip1"
  param {{ name: "w1" }} param {{ lr_mult: 2 decay_mult: 0 }} inner_product_param {{ num_output: 5 }} }}
"""
    if shared:
        first = "h"
        text += f"""
layer {{ name: "data_b" type: "Input" top: "data_b" input_param {{ shape {{ dim: {BATCH} dim: 6 }} }} }}
layer {{ name: "ip1b" type: "InnerProduct" bottom: "data_b" top: "ip1b"
  param {{ name: "w1" }} inner_product_param {{ num_output: 5 }} }}
layer {{ name: "sum" type: "Eltwise" bottom: "ip1" bottom: "ip1b" top: "h" }}
"""
    text += f"""
layer {{ name: "relu" type: "ReLU" bottom: "{first}" top: "{first}" }}
layer {{ name: "ip2" type: "InnerProduct" bottom: "{first}" top: "ip2"
  param {{ }} param {{ lr_mult: 0 }} inner_product_param {{ num_output: 3 }} }}
layer {{ name: "loss" type: "SoftmaxWithLoss" bottom: "ip2" bottom: "label" top: "loss" loss_weight: 2 }}
layer {{ name: "eloss" type: "EuclideanLoss" bottom: "ip2" bottom: "target" top: "eloss" loss_weight: 0.5 }}
layer {{ name: "acc" type: "Accuracy" bottom: "ip2" bottom: "label" top: "acc" }}
"""
    return text


@dataclass
class Case:
    name: str
    solver: dict
    shared: bool = False
    layout: str = "caffe"


SOLVER_DEFAULTS = {
    "SGD": {"base_lr": 0.1, "momentum": 0.9},
    "Nesterov": {"base_lr": 0.1, "momentum": 0.9},
    "AdaGrad": {"base_lr": 0.05},
    "RMSProp": {"base_lr": 0.01, "rms_decay": 0.9},
    "AdaDelta": {"base_lr": 1.0, "momentum": 0.95, "delta": 1e-4},
    "Adam": {"base_lr": 0.01, "momentum": 0.9, "momentum2": 0.999},
}
POLICIES = {
    "fixed": {},
    "step": {"gamma": 0.5, "stepsize": 2},
    "exp": {"gamma": 0.8},
    "inv": {"gamma": 0.5, "power": 0.75},
    # Repeated step values: Caffe advances current_step one value per iteration.
    "multistep": {"gamma": 0.5, "stepvalue": [1, 1, 3]},
    "poly": {"power": 2.0, "max_iter": 6},
    "sigmoid": {"gamma": 0.5, "stepsize": 2},
}


def solver(kind: str, policy: str = "step", **extra: object) -> dict:
    return {
        "type": kind,
        "lr_policy": policy,
        "weight_decay": 0.01,
        **SOLVER_DEFAULTS[kind],
        **POLICIES[policy],
        **extra,
    }


CASES = [
    *[Case(f"{kind}-step", solver(kind)) for kind in SOLVER_DEFAULTS],
    *[Case(f"SGD-{policy}", solver("SGD", policy)) for policy in POLICIES if policy != "step"],
    Case("SGD-L1", solver("SGD", regularization_type="L1", weight_decay=0.05)),
    Case("SGD-clip", solver("SGD", clip_gradients=5.0)),
    Case("SGD-iter_size", solver("SGD", iter_size=2)),
    # Caffe clips the sum over iter_size, before dividing: the mean would not reach the limit.
    Case("Adam-iter_size-clip", solver("Adam", iter_size=2, clip_gradients=6.0)),
    Case("SGD-shared", solver("SGD"), shared=True),
    # Channels-last, ip1 reads an image and holds its weight rows in another order than ip1b.
    Case("Nesterov-shared-channels_last", solver("Nesterov"), shared=True, layout="channels_last"),
]


def solver_param(values: dict) -> pb.SolverParameter:
    message = pb.SolverParameter()
    for key, value in values.items():
        if isinstance(value, list):
            getattr(message, key).extend(value)
        else:
            setattr(message, key, value)
    return message


def initial_params(rng: np.random.Generator) -> dict[str, list[np.ndarray]]:
    w1 = rng.normal(0, 0.5, size=(5, 6))
    return {
        "ip1": [w1, rng.normal(0, 0.3, size=5)],
        "ip1b": [w1.copy(), rng.normal(0, 0.3, size=5)],
        "ip2": [rng.normal(0, 0.5, size=(3, 5)), rng.normal(0, 0.3, size=3)],
    }


def batches(rng: np.random.Generator, count: int) -> list[dict[str, np.ndarray]]:
    return [
        {
            "data": rng.normal(size=(BATCH, 2, 1, 3)).astype(np.float32),
            "label": rng.integers(0, 3, size=BATCH).astype(np.float32),
            "target": rng.normal(size=(BATCH, 3)).astype(np.float32),
            "data_b": rng.normal(size=(BATCH, 6)).astype(np.float32),
        }
        for _ in range(count)
    ]


class Recorder(keras.callbacks.Callback):
    """The Caffe blobs and the logs after every batch."""

    def __init__(self, compiled) -> None:
        super().__init__()
        self.compiled = compiled
        self.states: list[dict[str, list[np.ndarray]]] = []
        self.logs: list[dict[str, np.ndarray]] = []

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        self.states.append({record.name: record.blobs for record in caffe_blobs(self.compiled)})
        self.logs.append({key: np.asarray(value) for key, value in (logs or {}).items()})


def assert_close(actual: np.ndarray, expected: np.ndarray, what: str) -> None:
    scale = max(float(np.max(np.abs(expected))), 1e-3)
    error = float(np.max(np.abs(np.asarray(actual, np.float64) - expected))) / scale
    assert error <= 1e-5, f"{what}: relative error {error:.3g}\nactual {actual}\nexpected {expected}"


def feed(batch: dict[str, np.ndarray], case: Case) -> dict[str, np.ndarray]:
    """The batch as the model's inputs: images channels-last for such a model, data_b if the net reads it."""
    inputs = {"data": batch["data"], "label": batch["label"], "target": batch["target"]}
    if case.layout == "channels_last":
        inputs["data"] = batch["data"].transpose(0, 2, 3, 1)
    if case.shared:
        inputs["data_b"] = batch["data_b"]
    return inputs


def train(case: Case) -> tuple[Recorder, Solver, list[list[dict[str, float]]], dict]:
    """Train with netdef and with the oracle from the same start; the recorded states (the
    oracle's: start, then after each update) and outputs."""
    values = case.solver
    iter_size = values.get("iter_size", 1)
    rng = np.random.default_rng(1701)
    start = initial_params(rng)
    data = batches(rng, UPDATES * iter_size)

    net = netdef.load_net(net_text(case.shared).encode(), phase="TRAIN")
    model = CaffeTrainingModel.from_net(net, layout=case.layout)
    layers = ["ip1", "ip1b", "ip2"] if case.shared else ["ip1", "ip2"]
    set_caffe_blobs(model.compiled_net, {layer: start[layer] for layer in layers})
    rules, shared = param_rules(model.compiled_net)
    optimizer = caffe_optimizer(solver_param(values), rules, shared)
    optimizer.build(learnable_variables(model.compiled_net))
    model.compile(optimizer=optimizer)
    recorder = Recorder(model.compiled_net)
    inputs = [feed(batch, case) for batch in data]
    model.fit(
        ((x,) for x in inputs), steps_per_epoch=len(inputs), epochs=1, verbose=0, shuffle=False, callbacks=[recorder]
    )

    spec = NetSpec(shared=case.shared)
    oracle = Solver(spec, values, start)
    states = [{layer: [b.astype(np.float64) for b in blobs] for layer, blobs in start.items()}]
    outputs = []
    for update in range(UPDATES):
        outputs.append(oracle.step(data[update * iter_size : (update + 1) * iter_size]))
        states.append({layer: [b.copy() for b in blobs] for layer, blobs in oracle.params.items()})
    info = {"rules": rules, "shared": shared, "optimizer": optimizer, "states": states}
    return recorder, oracle, outputs, info


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_training_matches_caffe_formulas(case: Case) -> None:
    recorder, oracle, outputs, info = train(case)
    iter_size = case.solver.get("iter_size", 1)
    layers = ["ip1", "ip1b", "ip2"] if case.shared else ["ip1", "ip2"]
    assert len(recorder.states) == UPDATES * iter_size
    for batch, params in enumerate(recorder.states):
        expected = info["states"][(batch + 1) // iter_size]  # after the updates applied so far
        for layer in layers:
            for index, blob in enumerate(params[layer]):
                assert_close(blob, expected[layer][index], f"{case.name} batch {batch} {layer}[{index}]")
        out = outputs[batch // iter_size][batch % iter_size]
        logs = recorder.logs[batch]
        assert_close(logs["loss"], np.float64(out["objective"]), f"{case.name} batch {batch} objective")
        assert_close(logs["loss_output"], np.float64(out["loss"]), f"{case.name} batch {batch} loss")
        assert_close(logs["eloss"], np.float64(out["eloss"]), f"{case.name} batch {batch} eloss")
        assert float(logs["acc"]) == pytest.approx(out["acc"])
    assert info["optimizer"].caffe_iteration == UPDATES
    assert info["optimizer"].caffe_current_step == oracle.lr.current_step
    assert np.array_equal(recorder.states[-1]["ip2"][1], oracle.params["ip2"][1].astype(np.float32))
    if case.shared:
        final = recorder.states[-1]
        assert np.array_equal(final["ip1"][0], final["ip1b"][0])
        assert info["shared"] == [["ip1/kernel", "ip1b/kernel"]]
        ordered = info["rules"]["ip1b/kernel"].shared_order is not None
        assert ordered == (case.layout == "channels_last")
    if "clip_gradients" in case.solver:
        assert any(oracle.clipped), "the case must make Caffe clip"
        assert not case.name.startswith("SGD") or not all(oracle.clipped), "and also not clip"
    if case.name == "Adam-iter_size-clip":
        # Clipping the mean of the two batches instead of their sum would not have triggered.
        assert any(c and not m for c, m in zip(oracle.clipped, oracle.clipped_mean, strict=True))


def test_learnable_variables_follow_caffe_order_without_shared_copies() -> None:
    net = netdef.load_net(net_text(shared=True).encode(), phase="TRAIN")
    model = CaffeTrainingModel.from_net(net)
    paths = [variable.path for variable in learnable_variables(model.compiled_net)]
    assert paths == ["ip1/kernel", "ip1/bias", "ip1b/bias", "ip2/kernel", "ip2/bias"]
    rules, _ = param_rules(model.compiled_net)
    assert (rules["ip1/bias"].lr_mult, rules["ip1/bias"].decay_mult) == (2.0, 0.0)
    assert rules["ip2/bias"].lr_mult == 0.0
    # Caffe computes no gradient for it; neither does Keras.
    assert "ip2/bias" not in [variable.path for variable in model.trainable_variables]


def test_history_slots_in_caffe_order_and_resume_iteration() -> None:
    net = netdef.load_net(net_text(shared=True).encode(), phase="TRAIN")
    model = CaffeTrainingModel.from_net(net)
    rules, shared = param_rules(model.compiled_net)
    optimizer = CaffeAdam(learning_rate=0.01, param_rules=rules, shared=shared, iter_size=3)
    variables = learnable_variables(model.compiled_net)
    optimizer.build(variables)
    for variable in variables:
        slots = optimizer.history_slots(variable)
        assert [slot.path.rsplit("_", 1)[-1] for slot in slots] == ["m", "v"]
        assert all(tuple(slot.shape) == tuple(variable.shape) for slot in slots)
    ip1b_kernel = next(v for v in model.compiled_net.model.trainable_variables if v.path == "ip1b/kernel")
    assert optimizer.history_slots(ip1b_kernel) == optimizer.history_slots(variables[0])
    optimizer.set_caffe_iteration(7)
    assert optimizer.caffe_iteration == 7
    assert int(keras.ops.convert_to_numpy(optimizer.iterations)) == 7


def test_batchnorm_statistics_are_left_to_the_layer() -> None:
    text = f"""
layer {{ name: "data" type: "Input" top: "data" top: "target"
  input_param {{ shape {{ dim: {BATCH} dim: 3 }} shape {{ dim: {BATCH} dim: 2 }} }} }}
layer {{ name: "bn" type: "BatchNorm" bottom: "data" top: "bn" }}
layer {{ name: "ip" type: "InnerProduct" bottom: "bn" top: "ip" inner_product_param {{ num_output: 2 }} }}
layer {{ name: "loss" type: "EuclideanLoss" bottom: "ip" bottom: "target" top: "loss" }}
"""
    model = CaffeTrainingModel.from_net(netdef.load_net(text.encode(), phase="TRAIN"))
    rules, shared = param_rules(model.compiled_net)
    assert [rules[f"bn/{name}"].lr_mult for name in ("mean", "variance", "scale_factor")] == [0.0, 0.0, 0.0]
    paths = [variable.path for variable in learnable_variables(model.compiled_net)]
    assert paths == ["bn/mean", "bn/variance", "bn/scale_factor", "ip/kernel", "ip/bias"]
    optimizer = CaffeSGD(learning_rate=0.1, momentum=0.9, weight_decay=0.1, param_rules=rules, shared=shared)
    optimizer.build(learnable_variables(model.compiled_net))
    model.compile(optimizer=optimizer)
    rng = np.random.default_rng(3)
    x = rng.normal(2.0, 1.0, size=(BATCH, 3)).astype(np.float32)
    model.fit(
        ((b,) for b in [{"data": x, "target": np.zeros((BATCH, 2), np.float32)}]),
        steps_per_epoch=1,
        verbose=0,
        shuffle=False,
    )
    (bn,) = [record.blobs for record in caffe_blobs(model.compiled_net) if record.name == "bn"]
    # Caffe's running sums after one batch: mean = batch mean, scale factor 1; no decay, no momentum.
    np.testing.assert_allclose(bn[0], x.mean(axis=0), rtol=1e-5)
    np.testing.assert_allclose(bn[1], x.var(axis=0) * BATCH / (BATCH - 1), rtol=1e-5)
    assert bn[2].tolist() == [1.0]
    assert all(
        not np.any(keras.ops.convert_to_numpy(slot))
        for slot in optimizer.history_slots(model.compiled_net.model.get_layer("bn").mean)
    )


def test_loss_weight_on_an_inner_blob_and_an_automatic_top() -> None:
    """Caffe's objective also counts a weighted top that later layers read (its LossWeightMidNet)."""
    text = f"""
layer {{ name: "data" type: "Input" top: "data" top: "label"
  input_param {{ shape {{ dim: {BATCH} dim: 3 }} shape {{ dim: {BATCH} }} }} }}
layer {{ name: "ip1" type: "InnerProduct" bottom: "data" top: "ip1" loss_weight: 0.1
  inner_product_param {{ num_output: 4 }} }}
layer {{ name: "ip2" type: "InnerProduct" bottom: "ip1" top: "ip2" inner_product_param {{ num_output: 2 }} }}
layer {{ name: "loss" type: "SoftmaxWithLoss" bottom: "ip2" bottom: "label" }}
"""
    net = netdef.load_net(text.encode(), phase="TRAIN")
    with pytest.raises(netdef.NetdefError, match="name the loss layer's top"):
        CaffeTrainingModel.from_net(net)
    # Without the inner weight, the automatic top is the net's output, as Caffe names it.
    plain = CaffeTrainingModel.from_net(netdef.load_net(text.replace(" loss_weight: 0.1", "").encode(), phase="TRAIN"))
    assert [(out.name, out.key, out.loss_weight) for out in plain.net_outputs] == [("(automatic)", "(automatic)", 1.0)]
    net = netdef.load_net(text.replace('bottom: "label" }', 'bottom: "label" top: "xent" }').encode(), phase="TRAIN")
    model = CaffeTrainingModel.from_net(net)
    assert [(out.name, out.key, out.loss_weight) for out in model.net_outputs] == [("xent", "xent", 1.0)]
    rng = np.random.default_rng(9)
    w1, b1, w2, b2 = (rng.normal(size=shape) for shape in ((4, 3), (4,), (2, 4), (2,)))
    set_caffe_blobs(model.compiled_net, {"ip1": [w1, b1], "ip2": [w2, b2]})
    x = rng.normal(size=(BATCH, 3)).astype(np.float32)
    label = np.array([0, 1, 1, 0], np.float32)
    model.compile(optimizer=CaffeSGD(learning_rate=0.1))
    recorder = Recorder(model.compiled_net)
    model.fit(
        ((b,) for b in [{"data": x, "label": label}]), steps_per_epoch=1, verbose=0, shuffle=False, callbacks=[recorder]
    )
    h = x @ w1.T + b1
    z = h @ w2.T + b2
    p = np.exp(z - z.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    xent = -np.mean(np.log(p[np.arange(BATCH), label.astype(int)]))
    assert_close(recorder.logs[0]["loss"], 0.1 * h.sum() + xent, "objective")
    dz = (p - np.eye(2)[label.astype(int)]) / BATCH
    db1 = 0.1 * BATCH + (dz @ w2).sum(axis=0)
    assert_close(recorder.states[0]["ip1"][1], b1 - 0.1 * db1, "ip1 bias after one update")


def test_unknown_solver_type_names_the_choices() -> None:
    with pytest.raises(
        SolverError, match=r"unknown solver type 'Adamax'.*SGD, Nesterov, AdaGrad, RMSProp, AdaDelta, Adam"
    ):
        caffe_optimizer(text_format.Parse('type: "Adamax" lr_policy: "fixed"', pb.SolverParameter()))
    with pytest.raises(SolverError, match="momentum cannot be used with AdaGrad"):
        caffe_optimizer(text_format.Parse('type: "AdaGrad" lr_policy: "fixed" momentum: 0.9', pb.SolverParameter()))
    with pytest.raises(SolverError, match="rms_decay"):
        caffe_optimizer(text_format.Parse('type: "RMSProp" lr_policy: "fixed" rms_decay: 1', pb.SolverParameter()))


PLAIN_OPTIMIZERS = {
    "SGD": lambda **kw: CaffeSGD(learning_rate=0.01, momentum=0.9, weight_decay=5e-4, **kw),
    "Nesterov": lambda **kw: CaffeNesterov(learning_rate=0.01, momentum=0.9, **kw),
    "AdaGrad": lambda **kw: CaffeAdaGrad(learning_rate=0.01, delta=1e-6, **kw),
    "RMSProp": lambda **kw: CaffeRMSProp(learning_rate=0.01, rms_decay=0.9, **kw),
    "AdaDelta": lambda **kw: CaffeAdaDelta(learning_rate=1.0, momentum=0.95, delta=1e-6, **kw),
    "Adam": lambda **kw: CaffeAdam(learning_rate=StepLR(0.01, gamma=0.5, stepsize=3), regularization_type="L1", **kw),
}


@pytest.mark.parametrize("kind", list(PLAIN_OPTIMIZERS))
def test_plain_keras_model_trains_saves_and_resumes(kind: str, tmp_path) -> None:
    """compile + fit on a Dense model; the .keras file restores the optimizer with its state."""
    rng = np.random.default_rng(5)
    x = rng.normal(size=(16, 4)).astype(np.float32)
    y = rng.normal(size=(16, 2)).astype(np.float32)
    # Functional: its variable paths (the keys of param_rules) survive saving, a Sequential's do not.
    inputs = keras.Input((4,))
    hidden = keras.layers.Dense(3, activation="relu", name="hidden")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(2, name="out")(hidden))
    frozen = {model.get_layer("out").bias.path: ParamRule(lr_mult=0.0)}
    optimizer = PLAIN_OPTIMIZERS[kind](param_rules=frozen, clip_gradients=1.0, iter_size=2)
    # Eager: the graph-mode path is the one the net cases above trace.
    model.compile(optimizer=optimizer, loss="mse", run_eagerly=True)
    bias = model.get_layer("out").bias.numpy().copy()
    model.fit(x, y, batch_size=4, epochs=2, shuffle=False, verbose=0)
    assert model.optimizer.caffe_iteration == 4
    assert np.array_equal(model.get_layer("out").bias.numpy(), bias)
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert type(loaded.optimizer) is type(model.optimizer)
    assert loaded.optimizer.get_config() == model.optimizer.get_config()
    assert loaded.optimizer.caffe_iteration == 4
    for a, b in zip(model.optimizer.variables, loaded.optimizer.variables, strict=True):
        assert np.array_equal(keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b))
    # One more update from the restored state lands where the original's does.
    model.fit(x[:8], y[:8], batch_size=4, shuffle=False, verbose=0)
    loaded.fit(x[:8], y[:8], batch_size=4, shuffle=False, verbose=0)
    for a, b in zip(model.get_weights(), loaded.get_weights(), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6)


def test_keras_options_that_caffe_replaces_are_refused() -> None:
    with pytest.raises(SolverError, match="clip_gradients and iter_size"):
        CaffeSGD(learning_rate=0.1, gradient_accumulation_steps=2)
    with pytest.raises(SolverError, match="clipnorm"):
        CaffeAdam(learning_rate=0.1, clipnorm=1.0)


@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="runs the torch pass from the default backend")
def test_the_same_cases_on_the_torch_backend() -> None:
    if importlib.util.find_spec("torch") is None:
        if os.environ.get("CI"):
            pytest.fail("torch is not installed; the dev extra installs it")
        pytest.skip("torch is not installed")
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_solver_updates.py"],
        cwd=REPO,
        env={**os.environ, "KERAS_BACKEND": "torch"},
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert " passed" in result.stdout.splitlines()[-1]
