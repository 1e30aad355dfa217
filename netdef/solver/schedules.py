"""Caffe's learning-rate policies (``SGDSolver::GetLearningRate``) as Keras schedules.

The step a schedule receives is Caffe's ``iter_``: the number of updates done so far, so the
rate of the first update is the rate at step 0. Caffe computes the powers in double
precision and stores the rate as a float; the schedules do the same (float64 inside,
float32 out), so long runs (``exp`` at iteration 10⁶, ``poly`` near ``max_iter``) keep
Caffe's digits. Each policy is a class of its own, usable with any Keras optimizer:
``keras.optimizers.SGD(learning_rate=StepLR(0.01, gamma=0.1, stepsize=100000))``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras
from keras import ops

from netdef.errors import SolverError
from netdef.proto import netdef_pb2 as pb

_PACKAGE = "netdef"


def _step(step: Any) -> Any:
    return ops.cast(ops.convert_to_tensor(step), "float64")


def _constant(value: float) -> Any:
    return ops.convert_to_tensor(value, dtype="float64")


def _rate(value: Any) -> Any:
    return ops.cast(value, "float32")


def _require(condition: bool, policy: str, message: str, received: object) -> None:
    if not condition:
        raise SolverError(f"lr_policy '{policy}' needs {message}", received=str(received))


class CaffeLearningRate(keras.optimizers.schedules.LearningRateSchedule):
    """Base of the policies: ``base_lr`` and Caffe's ``current_step`` bookkeeping."""

    policy = ""

    def __init__(self, base_lr: float) -> None:
        self.base_lr = float(base_lr)

    def current_step(self, iteration: int) -> int:
        """Caffe's ``current_step_`` after the rate of ``iteration`` was computed (SolverState field)."""
        return 0

    def get_config(self) -> dict[str, Any]:
        return {"base_lr": self.base_lr}

    def __repr__(self) -> str:
        args = ", ".join(f"{key}={value!r}" for key, value in self.get_config().items())
        return f"{type(self).__name__}({args})"


@keras.saving.register_keras_serializable(package=_PACKAGE)
class FixedLR(CaffeLearningRate):
    """``fixed``: ``base_lr``."""

    policy = "fixed"

    def __call__(self, step: Any) -> Any:
        return _rate(_constant(self.base_lr))


@keras.saving.register_keras_serializable(package=_PACKAGE)
class StepLR(CaffeLearningRate):
    """``step``: ``base_lr · gamma^floor(iter / stepsize)``."""

    policy = "step"

    def __init__(self, base_lr: float, gamma: float, stepsize: int) -> None:
        super().__init__(base_lr)
        _require(stepsize > 0, self.policy, "stepsize > 0", f"stepsize {stepsize}")
        _require(gamma >= 0, self.policy, "gamma >= 0", f"gamma {gamma}")
        self.gamma = float(gamma)
        self.stepsize = int(stepsize)

    def current_step(self, iteration: int) -> int:
        return iteration // self.stepsize

    def __call__(self, step: Any) -> Any:
        current = ops.floor(_step(step) / float(self.stepsize))
        return _rate(_constant(self.base_lr) * ops.power(_constant(self.gamma), current))

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "gamma": self.gamma, "stepsize": self.stepsize}


@keras.saving.register_keras_serializable(package=_PACKAGE)
class ExpLR(CaffeLearningRate):
    """``exp``: ``base_lr · gamma^iter``."""

    policy = "exp"

    def __init__(self, base_lr: float, gamma: float) -> None:
        super().__init__(base_lr)
        _require(gamma >= 0, self.policy, "gamma >= 0", f"gamma {gamma}")
        self.gamma = float(gamma)

    def __call__(self, step: Any) -> Any:
        return _rate(_constant(self.base_lr) * ops.power(_constant(self.gamma), _step(step)))

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "gamma": self.gamma}


@keras.saving.register_keras_serializable(package=_PACKAGE)
class InvLR(CaffeLearningRate):
    """``inv``: ``base_lr · (1 + gamma·iter)^(−power)``."""

    policy = "inv"

    def __init__(self, base_lr: float, gamma: float, power: float) -> None:
        super().__init__(base_lr)
        _require(gamma >= 0, self.policy, "gamma >= 0", f"gamma {gamma}")
        self.gamma = float(gamma)
        self.power = float(power)

    def __call__(self, step: Any) -> Any:
        base = 1.0 + _constant(self.gamma) * _step(step)
        return _rate(_constant(self.base_lr) * ops.power(base, _constant(-self.power)))

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "gamma": self.gamma, "power": self.power}


@keras.saving.register_keras_serializable(package=_PACKAGE)
class MultiStepLR(CaffeLearningRate):
    """``multistep``: ``base_lr · gamma^current_step``, ``current_step`` advanced one stepvalue per update.

    Caffe moves ``current_step`` by at most one per call, when ``iter >= stepvalue[current_step]``,
    so repeated or unsorted step values take effect one iteration after another. The
    iteration at which step k is taken is therefore ``max(stepvalue[k], taken[k−1] + 1)``,
    which makes the rate a function of the iteration alone (as a schedule must be).
    """

    policy = "multistep"

    def __init__(self, base_lr: float, gamma: float, stepvalue: Sequence[int]) -> None:
        super().__init__(base_lr)
        _require(gamma >= 0, self.policy, "gamma >= 0", f"gamma {gamma}")
        self.gamma = float(gamma)
        self.stepvalue = [int(value) for value in stepvalue]
        taken: list[int] = []
        for value in self.stepvalue:
            taken.append(max(value, taken[-1] + 1 if taken else 0))
        self._taken = taken

    def current_step(self, iteration: int) -> int:
        return sum(1 for taken in self._taken if iteration >= taken)

    def __call__(self, step: Any) -> Any:
        iteration = _step(step)
        current = _constant(0.0)
        for taken in self._taken:
            current = current + ops.cast(ops.greater_equal(iteration, float(taken)), "float64")
        return _rate(_constant(self.base_lr) * ops.power(_constant(self.gamma), current))

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "gamma": self.gamma, "stepvalue": list(self.stepvalue)}


@keras.saving.register_keras_serializable(package=_PACKAGE)
class PolyLR(CaffeLearningRate):
    """``poly``: ``base_lr · (1 − iter/max_iter)^power``, reaching 0 at ``max_iter``."""

    policy = "poly"

    def __init__(self, base_lr: float, power: float, max_iter: int) -> None:
        super().__init__(base_lr)
        _require(max_iter > 0, self.policy, "max_iter > 0", f"max_iter {max_iter}")
        self.power = float(power)
        self.max_iter = int(max_iter)

    def __call__(self, step: Any) -> Any:
        remaining = 1.0 - _step(step) / float(self.max_iter)
        return _rate(_constant(self.base_lr) * ops.power(remaining, _constant(self.power)))

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "power": self.power, "max_iter": self.max_iter}


@keras.saving.register_keras_serializable(package=_PACKAGE)
class SigmoidLR(CaffeLearningRate):
    """``sigmoid``: ``base_lr / (1 + exp(−gamma·(iter − stepsize)))``."""

    policy = "sigmoid"

    def __init__(self, base_lr: float, gamma: float, stepsize: int) -> None:
        super().__init__(base_lr)
        _require(stepsize > 0, self.policy, "stepsize > 0", f"stepsize {stepsize}")
        _require(gamma >= 0, self.policy, "gamma >= 0", f"gamma {gamma}")
        self.gamma = float(gamma)
        self.stepsize = int(stepsize)

    def __call__(self, step: Any) -> Any:
        exponent = -_constant(self.gamma) * (_step(step) - float(self.stepsize))
        return _rate(_constant(self.base_lr) / (1.0 + ops.exp(exponent)))

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "gamma": self.gamma, "stepsize": self.stepsize}


#: Caffe's lr_policy strings and their schedules.
POLICIES: dict[str, type[CaffeLearningRate]] = {
    cls.policy: cls for cls in (FixedLR, StepLR, ExpLR, InvLR, MultiStepLR, PolyLR, SigmoidLR)
}


def learning_rate_schedule(solver: pb.SolverParameter) -> CaffeLearningRate:
    """The schedule of a solver's ``lr_policy``, with the solver's fields as Caffe reads them."""
    policy = solver.lr_policy
    base_lr = solver.base_lr
    if policy == "fixed":
        return FixedLR(base_lr)
    if policy == "step":
        return StepLR(base_lr, gamma=solver.gamma, stepsize=solver.stepsize)
    if policy == "exp":
        return ExpLR(base_lr, gamma=solver.gamma)
    if policy == "inv":
        return InvLR(base_lr, gamma=solver.gamma, power=solver.power)
    if policy == "multistep":
        return MultiStepLR(base_lr, gamma=solver.gamma, stepvalue=list(solver.stepvalue))
    if policy == "poly":
        return PolyLR(base_lr, power=solver.power, max_iter=solver.max_iter)
    if policy == "sigmoid":
        return SigmoidLR(base_lr, gamma=solver.gamma, stepsize=solver.stepsize)
    raise SolverError(
        f"unknown learning rate policy '{policy}'" if policy else "the solver sets no lr_policy",
        expected="one of " + ", ".join(POLICIES),
        received=repr(policy),
        hint='add a line such as lr_policy: "step"' if not policy else None,
    )
