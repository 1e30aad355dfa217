"""Caffe's learning-rate policies as Keras schedules, against Caffe's formulas in numpy."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pytest
from google.protobuf import text_format

import netdef
from netdef.errors import SolverError
from netdef.proto import netdef_pb2 as pb
from netdef.solver.optimizers import SOLVERS, caffe_optimizer
from netdef.solver.schedules import (
    POLICIES,
    CaffeLearningRate,
    MultiStepLR,
    StepLR,
    learning_rate_schedule,
)

from .solver_oracle import LearningRate

SOLVERS_BY_POLICY = {
    "fixed": 'lr_policy: "fixed" base_lr: 0.01',
    "step": 'lr_policy: "step" base_lr: 0.01 gamma: 0.1 stepsize: 7',
    "exp": 'lr_policy: "exp" base_lr: 0.02 gamma: 0.97',
    "inv": 'lr_policy: "inv" base_lr: 0.01 gamma: 0.0001 power: 0.75',
    # Unsorted and repeated values: Caffe takes one step per iteration at most.
    "multistep": 'lr_policy: "multistep" base_lr: 0.1 gamma: 0.5 stepvalue: 3 stepvalue: 3 stepvalue: 10 stepvalue: 8',
    "poly": 'lr_policy: "poly" base_lr: 0.01 power: 0.5 max_iter: 40',
    "sigmoid": 'lr_policy: "sigmoid" base_lr: 0.01 gamma: 0.3 stepsize: 12',
}
ITERATIONS = 40


def parse(text: str) -> pb.SolverParameter:
    return text_format.Parse(text, pb.SolverParameter())


def oracle_rates(solver: pb.SolverParameter, iterations: int) -> tuple[np.ndarray, list[int]]:
    """Caffe's rate and current_step for iterations 0..n-1, calling GetLearningRate once per iteration."""
    fields = {
        "lr_policy": solver.lr_policy,
        "base_lr": solver.base_lr,
        "gamma": solver.gamma,
        "power": solver.power,
        "stepsize": solver.stepsize,
        "stepvalue": list(solver.stepvalue),
        "max_iter": solver.max_iter,
    }
    rate = LearningRate(fields)
    rates, steps = [], []
    for it in range(iterations):
        rates.append(rate(it))
        steps.append(rate.current_step)
    return np.asarray(rates), steps


@pytest.mark.parametrize("policy", list(SOLVERS_BY_POLICY))
def test_policy_values_follow_caffe(policy: str) -> None:
    solver = parse(SOLVERS_BY_POLICY[policy])
    schedule = learning_rate_schedule(solver)
    assert isinstance(schedule, POLICIES[policy])
    expected, steps = oracle_rates(solver, ITERATIONS)
    actual = np.asarray([keras.ops.convert_to_numpy(schedule(it)) for it in range(ITERATIONS)])
    assert actual.dtype == np.float32
    np.testing.assert_allclose(actual, expected, rtol=1e-6)
    # The same values from a step tensor of the optimizer's integer type.
    step = keras.ops.convert_to_tensor(ITERATIONS - 1, dtype="int64")
    np.testing.assert_allclose(keras.ops.convert_to_numpy(schedule(step)), expected[-1], rtol=1e-6)
    if policy in ("step", "multistep"):
        assert [schedule.current_step(it) for it in range(ITERATIONS)] == steps


def test_multistep_takes_one_step_per_iteration() -> None:
    schedule = MultiStepLR(1.0, gamma=0.5, stepvalue=[3, 3, 10, 8])
    assert [schedule.current_step(it) for it in (2, 3, 4, 5, 9, 10, 11)] == [0, 1, 2, 2, 2, 3, 4]


@pytest.mark.parametrize("policy", list(SOLVERS_BY_POLICY))
def test_serialization_round_trip(policy: str) -> None:
    schedule = learning_rate_schedule(parse(SOLVERS_BY_POLICY[policy]))
    config = keras.saving.serialize_keras_object(schedule)
    assert config["registered_name"] == f"netdef>{type(schedule).__name__}"
    restored = keras.saving.deserialize_keras_object(config)
    assert type(restored) is type(schedule)
    assert restored.get_config() == schedule.get_config()
    for it in (0, 5, 17):
        assert float(keras.ops.convert_to_numpy(restored(it))) == float(keras.ops.convert_to_numpy(schedule(it)))


def test_plain_keras_sgd_follows_the_schedule() -> None:
    """Each update of plain ``keras.optimizers.SGD`` uses the rate of the updates done before it."""
    schedule = StepLR(0.1, gamma=0.5, stepsize=2)
    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1, use_bias=False, kernel_initializer="zeros")])
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=schedule), loss="mean_absolute_error")
    # |w - y| with y far below w: the gradient is 1 at every step, so w = -(sum of the rates).
    x = np.ones((5, 1), np.float32)
    y = np.full((5, 1), -1000.0, np.float32)
    model.fit(x, y, batch_size=1, epochs=1, shuffle=False, verbose=0)
    expected = -sum(0.1 * 0.5 ** (it // 2) for it in range(5))
    np.testing.assert_allclose(model.get_weights()[0], [[expected]], rtol=1e-6)
    config = model.optimizer.get_config()["learning_rate"]
    assert config["config"] == {"base_lr": 0.1, "gamma": 0.5, "stepsize": 2}


def test_the_zoo_solvers(caffe_zoo: Path) -> None:
    """Every Caffe solver file: its rate along the run, and the optimizer of its type."""
    paths = sorted(caffe_zoo.rglob("*solver*.prototxt"))
    assert len(paths) >= 20
    for path in paths:
        solver = netdef.load_solver(path)
        schedule = learning_rate_schedule(solver)
        probes = sorted({0, 1, 2, solver.stepsize, solver.max_iter // 3, max(solver.max_iter - 1, 0)})
        for it, want in zip(probes, oracle_at(solver, probes), strict=True):
            got = float(keras.ops.convert_to_numpy(schedule(it)))
            assert got == pytest.approx(want, rel=1e-6), f"{path.name} at iteration {it}"
        assert isinstance(caffe_optimizer(solver), SOLVERS[solver.type]), path.name


def oracle_at(solver: pb.SolverParameter, iterations: list[int]) -> list[float]:
    """Caffe's rate at some iterations; multistep is run through every iteration up to them."""
    if solver.lr_policy == "multistep":
        rates, _ = oracle_rates(solver, max(iterations) + 1)
        return [float(rates[it]) for it in iterations]
    fields = {
        name: getattr(solver, name) for name in ("lr_policy", "base_lr", "gamma", "power", "stepsize", "max_iter")
    }
    return [LearningRate(fields)(it) for it in iterations]


def test_invalid_policies_are_refused() -> None:
    with pytest.raises(SolverError, match=r"unknown learning rate policy 'stepp'.*fixed, step, exp, inv, multistep"):
        learning_rate_schedule(parse('lr_policy: "stepp" base_lr: 0.1'))
    with pytest.raises(SolverError, match="sets no lr_policy"):
        learning_rate_schedule(parse("base_lr: 0.1"))
    with pytest.raises(SolverError, match="stepsize > 0"):
        learning_rate_schedule(parse('lr_policy: "step" base_lr: 0.1 gamma: 0.1'))
    with pytest.raises(SolverError, match="gamma >= 0"):
        learning_rate_schedule(parse('lr_policy: "exp" base_lr: 0.1 gamma: -1'))
    with pytest.raises(SolverError, match="max_iter > 0"):
        learning_rate_schedule(parse('lr_policy: "poly" base_lr: 0.1 power: 1'))


def test_every_policy_is_a_caffe_learning_rate() -> None:
    assert set(POLICIES) == {"fixed", "step", "exp", "inv", "multistep", "poly", "sigmoid"}
    assert all(issubclass(cls, CaffeLearningRate) for cls in POLICIES.values())
