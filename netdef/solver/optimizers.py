"""Caffe's solver types as Keras optimizers, with Caffe's whole update pipeline.

Caffe's ``SGDSolver::ApplyUpdate`` runs, once per iteration (``iter_size`` batches):
the learning rate of the iteration; ``ClipGradients`` on the global L2 norm of every
learnable param's *accumulated* diff; then per param ``Normalize`` (÷ iter_size),
``Regularize`` (L2 ``+ decay·w`` or L1 ``+ decay·sign(w)``, decay = weight_decay·decay_mult)
and ``ComputeUpdateValue`` (the solver's rule, with local_rate = rate·lr_mult), and
finally ``w −= diff``. Keras's own pieces do not fit: its gradient accumulation averages
before clipping and shows learning-rate schedules the batch count, and its weight decay
is decoupled. So :class:`CaffeOptimizer` replaces ``_backend_apply_gradients`` with
Caffe's pipeline and leaves the rest of Keras's machinery (``apply``, the iteration
counter, variable tracking, saving) as it is.

Params shared by ParamSpec name are one learnable param in Caffe, owned by the first
layer naming it, whose diff is the sum of every sharer's gradient. The compiler gives
each sharer its own Keras variable; a ``shared`` group ties them: one update from the
summed gradient, in the owner's history, copied to every variable of the group.

Under ``tf.distribute`` each replica first sums the replicas' gradients, then runs the
same pipeline on identical values, as Caffe's multi-GPU solvers apply one update
everywhere after NCCL's reduction.
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import keras
import numpy as np
from keras import ops

from netdef.errors import SolverError
from netdef.proto import netdef_pb2 as pb
from netdef.solver.schedules import CaffeLearningRate, learning_rate_schedule

_PACKAGE = "netdef"

#: Keras options whose behaviour Caffe's pipeline replaces (clip_gradients, iter_size).
_KERAS_ONLY = ("clipnorm", "clipvalue", "global_clipnorm", "use_ema", "gradient_accumulation_steps")
_KERAS_DEFAULTS = ("ema_momentum", "ema_overwrite_frequency")


@dataclass(frozen=True)
class ParamRule:
    """Caffe's per-param solver multipliers (``ParamSpec.lr_mult`` and ``decay_mult``).

    ``shared_order`` is for a shared param whose Keras variable holds the Caffe blob in
    another element order than the owner's variable (an InnerProduct reading a
    channels-last image shares with one reading a flat blob): element ``k`` of this
    variable, flattened, is element ``shared_order[k]`` of the owner's. None: same order.
    """

    lr_mult: float = 1.0
    decay_mult: float = 1.0
    shared_order: np.ndarray | None = field(default=None, compare=False, repr=False)

    def get_config(self) -> dict[str, Any]:
        config: dict[str, Any] = {"lr_mult": self.lr_mult, "decay_mult": self.decay_mult}
        if self.shared_order is not None:
            config["shared_order"] = [int(i) for i in self.shared_order]
        return config

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> ParamRule:
        order = config.get("shared_order")
        return cls(
            lr_mult=float(config.get("lr_mult", 1.0)),
            decay_mult=float(config.get("decay_mult", 1.0)),
            shared_order=None if order is None else np.asarray(order, dtype=np.int64),
        )


_DEFAULT_RULE = ParamRule()


class _Bookkeeping:
    """Maps kept out of Keras's and TensorFlow's attribute tracking, since they hold the
    model's variables (which must not be saved as the optimizer's)."""

    def __init__(self) -> None:
        self.variables: dict[str, Any] = {}  # path -> model variable
        self.history: dict[str, list[Any]] = {}  # owner path -> history slots, Caffe's order
        self.accumulated: dict[str, Any] = {}  # owner path -> gradient summed over iter_size batches


@dataclass
class _Unit:
    """One Caffe learnable param: the owner variable and the variables kept equal to it."""

    owner: Any
    rule: ParamRule
    gradient: Any
    members: list[tuple[Any, ParamRule]] = field(default_factory=list)


class CaffeOptimizer(keras.optimizers.Optimizer):
    """Caffe's ``ApplyUpdate`` around a solver type's ``ComputeUpdateValue``.

    Arguments are Caffe's SolverParameter fields: ``learning_rate`` (``base_lr``, or a
    schedule such as :class:`netdef.solver.schedules.StepLR`), ``weight_decay``,
    ``regularization_type`` ("L2" or "L1"), ``clip_gradients`` (< 0: off) and ``iter_size``
    (batches whose gradients are summed into one update). ``param_rules`` gives lr_mult and
    decay_mult by Keras ``variable.path`` (absent: 1 and 1; lr_mult 0 leaves a variable
    untouched); ``shared`` lists groups of variable paths that are one Caffe param, owner first.

    The step a schedule sees, and Adam's ``t − 1``, is Caffe's iteration: updates done,
    ``iterations // iter_size``.
    """

    #: The history blobs of one learnable param, in Caffe's order (slot k is history[k·N + i]).
    slot_names: tuple[str, ...] = ("history",)

    def __init__(
        self,
        learning_rate: float | keras.optimizers.schedules.LearningRateSchedule = 0.01,
        weight_decay: float = 0.0,
        regularization_type: str = "L2",
        clip_gradients: float = -1.0,
        iter_size: int = 1,
        param_rules: Mapping[str, ParamRule] | None = None,
        shared: Sequence[Sequence[str]] = (),
        name: str | None = None,
        **kwargs: Any,
    ) -> None:
        refused = [key for key in _KERAS_ONLY if kwargs.get(key)]
        if refused:
            raise SolverError(
                f"{type(self).__name__} does not take Keras's {', '.join(refused)}",
                hint="use Caffe's clip_gradients and iter_size instead",
            )
        for key in (*_KERAS_ONLY, *_KERAS_DEFAULTS, "weight_decay"):
            kwargs.pop(key, None)
        if isinstance(learning_rate, numbers.Real):
            learning_rate = float(learning_rate)
        super().__init__(learning_rate=learning_rate, name=name, **kwargs)
        if weight_decay and regularization_type not in ("L1", "L2"):
            raise SolverError(f"unknown regularization_type '{regularization_type}'", expected='"L1" or "L2"')
        if int(iter_size) < 1:
            raise SolverError("iter_size must be at least 1", received=str(iter_size))
        self.weight_decay = float(weight_decay)
        self.regularization_type = str(regularization_type)
        self.clip_gradients = float(clip_gradients)
        self.iter_size = int(iter_size)
        self._rules = {str(path): rule for path, rule in (param_rules or {}).items()}
        self._groups = [[str(path) for path in group] for group in shared]
        self._owner_of: dict[str, str] = {}
        for group in self._groups:
            for path in group[1:]:
                if path in self._owner_of or path == group[0]:
                    raise SolverError(f"variable '{path}' is in more than one shared group")
                self._owner_of[path] = group[0]
        self._books = _Bookkeeping()

    # -- Caffe's iteration ------------------------------------------------------------

    @property
    def iterations(self) -> Any:
        """Updates done (Caffe's ``iter_``), not batches seen."""
        if self.iter_size == 1:
            return self._iterations
        return ops.floor_divide(self._iterations, self.iter_size)

    @property
    def caffe_iteration(self) -> int:
        """Updates done so far, as an int (what a .solverstate stores as ``iter``)."""
        return int(ops.convert_to_numpy(self._iterations)) // self.iter_size

    @property
    def caffe_current_step(self) -> int:
        """Caffe's ``current_step_`` as a .solverstate stores it: the value the learning-rate
        policy reached for the last update (0 before any update, or without a Caffe policy)."""
        iteration = self.caffe_iteration
        if not isinstance(self._learning_rate, CaffeLearningRate) or iteration == 0:
            return 0
        return self._learning_rate.current_step(iteration - 1)

    def set_caffe_iteration(self, iteration: int) -> None:
        """Resume at ``iteration`` updates done, with no gradient accumulated yet."""
        self._iterations.assign(int(iteration) * self.iter_size)
        for accumulated in self._books.accumulated.values():
            accumulated.assign(ops.zeros_like(accumulated))

    def _get_current_learning_rate(self) -> Any:
        if isinstance(self._learning_rate, keras.optimizers.schedules.LearningRateSchedule):
            return self._learning_rate(self.iterations)
        return super()._get_current_learning_rate()

    # -- variables ----------------------------------------------------------------------

    def param_rule(self, path: str) -> ParamRule:
        """The multipliers of a variable; a shared copy gets its owner's."""
        return self._rules.get(self._owner_of.get(path, path), _DEFAULT_RULE)

    def build(self, variables: Sequence[Any]) -> None:
        if self.built:
            return
        super().build(variables)
        for variable in variables:
            self._books.variables[variable.path] = variable
            if variable.path in self._owner_of:
                continue
            self._books.history[variable.path] = [
                self.add_variable_from_reference(variable, name) for name in self.slot_names
            ]
            if self.iter_size > 1 and self.param_rule(variable.path).lr_mult != 0:
                self._books.accumulated[variable.path] = self.add_variable_from_reference(
                    variable, "accumulated_gradient"
                )

    def history_slots(self, variable: Any) -> list[Any]:
        """The optimizer's state of one learnable param, in Caffe's history order.

        SGD, Nesterov, AdaGrad, RMSProp: [history]; AdaDelta: [squared gradients, squared
        updates]; Adam: [m, v]. A shared copy answers with its owner's slots.
        """
        path = self._owner_of.get(variable.path, variable.path)
        if path not in self._books.history:
            raise SolverError(
                f"the optimizer has no history for variable '{variable.path}'",
                hint="build it first: optimizer.build(learnable_variables(compiled))",
            )
        return list(self._books.history[path])

    def _check_variables_are_known(self, variables: Sequence[Any]) -> None:
        # Shared copies may be left out of build (Caffe keeps no history for them).
        unknown = [v for v in variables if self._owner_of.get(v.path) not in self._books.history]
        super()._check_variables_are_known(unknown)

    def _filter_empty_gradients(self, grads: Sequence[Any], variables: Sequence[Any]) -> tuple[list, list]:
        # Caffe clears every diff before backward: a param the loss does not reach has a zero
        # diff, and weight decay still applies to it.
        dense = [
            ops.zeros_like(v) if g is None else ops.convert_to_tensor(g) for g, v in zip(grads, variables, strict=True)
        ]
        return dense, list(variables)

    # -- the update ------------------------------------------------------------------------

    def _backend_apply_gradients(self, grads: Sequence[Any], trainable_variables: Sequence[Any]) -> None:
        if keras.backend.backend() == "tensorflow":
            # Under tf.distribute every replica sums the replicas' gradients first, then applies
            # the same update to its copy of the variables (Caffe's multi-GPU solvers do alike).
            reduced = self._all_reduce_sum_gradients(zip(grads, trainable_variables, strict=True))
            grads = [gradient for gradient, _ in reduced]
        units = self._units(grads, trainable_variables)
        if not units:
            return
        if self.iter_size == 1:
            self._apply_update(units, [unit.gradient for unit in units])
            return
        accumulated = [self._books.accumulated[unit.owner.path] for unit in units]

        def update() -> None:
            self._apply_update(units, [unit.gradient + acc for unit, acc in zip(units, accumulated, strict=True)])
            for acc in accumulated:
                self.assign(acc, ops.zeros_like(acc))

        def accumulate() -> None:
            for unit, acc in zip(units, accumulated, strict=True):
                self.assign_add(acc, unit.gradient)

        ops.cond(ops.equal((self._iterations + 1) % self.iter_size, 0), update, accumulate)

    def _units(self, grads: Sequence[Any], variables: Sequence[Any]) -> list[_Unit]:
        """Group the gradients by Caffe param: shared copies add into their owner's."""
        units: dict[str, _Unit] = {}
        for gradient, variable in zip(grads, variables, strict=True):
            path = variable.path
            owner_path = self._owner_of.get(path, path)
            rule = self.param_rule(path)
            if rule.lr_mult == 0:
                continue
            if owner_path not in self._books.history:
                raise SolverError(f"shared variable '{path}': its owner '{owner_path}' is not a variable of the model")
            owner = self._books.variables[owner_path]
            unit = units.get(owner_path)
            if unit is None:
                unit = units[owner_path] = _Unit(owner=owner, rule=rule, gradient=None)
            if path != owner_path:
                member_rule = self._rules.get(path, _DEFAULT_RULE)
                unit.members.append((variable, member_rule))
                gradient = _to_owner_order(gradient, member_rule.shared_order, owner.shape)
            unit.gradient = gradient if unit.gradient is None else unit.gradient + gradient
        return list(units.values())

    def _apply_update(self, units: list[_Unit], gradients: list[Any]) -> None:
        """ClipGradients, then Normalize, Regularize and ComputeUpdateValue per param."""
        rate = self.learning_rate
        if self.clip_gradients >= 0:
            sumsq = ops.sum(ops.stack([ops.sum(ops.square(g)) for g in gradients]))
            norm = ops.sqrt(sumsq)
            clip = ops.cast(self.clip_gradients, norm.dtype)
            scale = ops.where(ops.greater(norm, clip), clip / norm, ops.ones_like(norm))
            gradients = [g * ops.cast(scale, g.dtype) for g in gradients]
        # The loop body is eager Python on PyTorch, run for every param at every iteration:
        # it reads values without conversion (``variable.value``), casts the rate once per
        # dtype, and writes each variable once.
        rates: dict[str, Any] = {}
        for unit, gradient in zip(units, gradients, strict=True):
            owner = unit.owner
            if self.iter_size > 1:
                gradient = gradient * (1.0 / self.iter_size)
            decay = self.weight_decay * unit.rule.decay_mult
            if decay:
                weights = owner.value
                gradient = gradient + decay * (weights if self.regularization_type == "L2" else ops.sign(weights))
            if owner.dtype not in rates:
                rates[owner.dtype] = ops.cast(rate, owner.dtype)
            self.update_step(gradient, owner, rates[owner.dtype])
            for member, rule in unit.members:
                self.assign(member, _to_member_order(owner, rule.shared_order, member.shape))

    def update_step(self, gradient: Any, variable: Any, learning_rate: Any) -> None:
        """Caffe's ComputeUpdateValue and Update for one param whose gradient is already
        normalized and regularized; ``learning_rate`` is the iteration's rate in the
        variable's dtype, and the param's lr_mult is applied here."""
        local_rate = learning_rate * self.param_rule(variable.path).lr_mult
        step = self.compute_update_value(gradient, self.history_slots(variable), local_rate)
        self.assign(variable, variable.value - step)

    def compute_update_value(self, gradient: Any, history: list[Any], local_rate: Any) -> Any:
        """The solver type's rule: update ``history`` and return the step (Caffe's final diff)."""
        raise NotImplementedError

    # -- serialization ---------------------------------------------------------------------

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        for key in (*_KERAS_ONLY, *_KERAS_DEFAULTS):
            config.pop(key, None)
        config.update(
            {
                "weight_decay": self.weight_decay,
                "regularization_type": self.regularization_type,
                "clip_gradients": self.clip_gradients,
                "iter_size": self.iter_size,
                "param_rules": {path: rule.get_config() for path, rule in self._rules.items()},
                "shared": [list(group) for group in self._groups],
            }
        )
        return config

    @classmethod
    def from_config(cls, config: dict[str, Any], custom_objects: Any = None) -> CaffeOptimizer:
        config = dict(config)
        rules = config.get("param_rules") or {}
        config["param_rules"] = {path: ParamRule.from_config(rule) for path, rule in rules.items()}
        return super().from_config(config, custom_objects=custom_objects)


def _to_owner_order(gradient: Any, order: np.ndarray | None, shape: Sequence[int]) -> Any:
    if order is None:
        return ops.reshape(gradient, shape) if tuple(gradient.shape) != tuple(shape) else gradient
    return ops.reshape(ops.take(ops.reshape(gradient, (-1,)), np.argsort(order)), shape)


def _to_member_order(owner: Any, order: np.ndarray | None, shape: Sequence[int]) -> Any:
    value = ops.convert_to_tensor(owner)
    if order is None:
        return ops.reshape(value, shape) if tuple(owner.shape) != tuple(shape) else value
    return ops.reshape(ops.take(ops.reshape(value, (-1,)), order), shape)


@keras.saving.register_keras_serializable(package=_PACKAGE)
class CaffeSGD(CaffeOptimizer):
    """Caffe's SGD: ``h = momentum·h + local_rate·g; w −= h`` (the history carries the rate)."""

    def __init__(self, learning_rate: Any = 0.01, momentum: float = 0.0, **kwargs: Any) -> None:
        super().__init__(learning_rate=learning_rate, **kwargs)
        self.momentum = float(momentum)

    def compute_update_value(self, gradient: Any, history: list[Any], local_rate: Any) -> Any:
        (h,) = history
        value = local_rate * gradient + self.momentum * h.value
        self.assign(h, value)
        return value

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "momentum": self.momentum}


@keras.saving.register_keras_serializable(package=_PACKAGE)
class CaffeNesterov(CaffeOptimizer):
    """Caffe's Nesterov: ``h' = momentum·h + local_rate·g; step = (1+momentum)·h' − momentum·h``."""

    def __init__(self, learning_rate: Any = 0.01, momentum: float = 0.0, **kwargs: Any) -> None:
        super().__init__(learning_rate=learning_rate, **kwargs)
        self.momentum = float(momentum)

    def compute_update_value(self, gradient: Any, history: list[Any], local_rate: Any) -> Any:
        (h,) = history
        previous = h.value
        value = local_rate * gradient + self.momentum * previous
        step = (1.0 + self.momentum) * value - self.momentum * previous
        self.assign(h, value)
        return step

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "momentum": self.momentum}


@keras.saving.register_keras_serializable(package=_PACKAGE)
class CaffeAdaGrad(CaffeOptimizer):
    """Caffe's AdaGrad: ``h += g²; step = local_rate·g/(sqrt(h) + delta)`` (history starts at 0)."""

    def __init__(self, learning_rate: Any = 0.01, delta: float = 1e-8, **kwargs: Any) -> None:
        super().__init__(learning_rate=learning_rate, **kwargs)
        self.delta = float(delta)

    def compute_update_value(self, gradient: Any, history: list[Any], local_rate: Any) -> Any:
        (h,) = history
        value = h.value + ops.square(gradient)
        self.assign(h, value)
        return local_rate * (gradient / (ops.sqrt(value) + self.delta))

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "delta": self.delta}


@keras.saving.register_keras_serializable(package=_PACKAGE)
class CaffeRMSProp(CaffeOptimizer):
    """Caffe's RMSProp: ``h = rms_decay·h + (1−rms_decay)·g²; step = local_rate·g/(sqrt(h) + delta)``."""

    def __init__(self, learning_rate: Any = 0.01, rms_decay: float = 0.99, delta: float = 1e-8, **kwargs: Any) -> None:
        super().__init__(learning_rate=learning_rate, **kwargs)
        if not 0 <= rms_decay < 1:
            raise SolverError("rms_decay must be in [0, 1)", received=str(rms_decay))
        self.rms_decay = float(rms_decay)
        self.delta = float(delta)

    def compute_update_value(self, gradient: Any, history: list[Any], local_rate: Any) -> Any:
        (h,) = history
        value = (1.0 - self.rms_decay) * ops.square(gradient) + self.rms_decay * h.value
        self.assign(h, value)
        return local_rate * (gradient / (ops.sqrt(value) + self.delta))

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "rms_decay": self.rms_decay, "delta": self.delta}


@keras.saving.register_keras_serializable(package=_PACKAGE)
class CaffeAdaDelta(CaffeOptimizer):
    """Caffe's AdaDelta, with the learning rate applied last (Caffe's lenet solver uses 1.0).

    ``h = m·h + (1−m)·g²; u = g·sqrt((h₂ + delta)/(h + delta)); h₂ = m·h₂ + (1−m)·u²;
    step = local_rate·u`` with m = momentum.
    """

    slot_names = ("history", "update_history")

    def __init__(self, learning_rate: Any = 1.0, momentum: float = 0.0, delta: float = 1e-8, **kwargs: Any) -> None:
        super().__init__(learning_rate=learning_rate, **kwargs)
        self.momentum = float(momentum)
        self.delta = float(delta)

    def compute_update_value(self, gradient: Any, history: list[Any], local_rate: Any) -> Any:
        h, h2 = history
        m = self.momentum
        squared = (1.0 - m) * ops.square(gradient) + m * h.value
        previous_updates = h2.value
        update = gradient * ops.sqrt((previous_updates + self.delta) / (squared + self.delta))
        self.assign(h, squared)
        self.assign(h2, (1.0 - m) * ops.square(update) + m * previous_updates)
        return local_rate * update

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "momentum": self.momentum, "delta": self.delta}


@keras.saving.register_keras_serializable(package=_PACKAGE)
class CaffeAdam(CaffeOptimizer):
    """Caffe's Adam (β1 = momentum, β2 = momentum2, ε = delta), bias-corrected through the rate:

    ``m = β1·m + (1−β1)·g; v = β2·v + (1−β2)·g²; step = local_rate·sqrt(1−β2ᵗ)/(1−β1ᵗ)·m/(sqrt(v) + ε)``
    with t = iteration + 1; ε is added to sqrt(v), not to the corrected v.
    """

    slot_names = ("m", "v")

    def __init__(
        self,
        learning_rate: Any = 0.001,
        momentum: float = 0.9,
        momentum2: float = 0.999,
        delta: float = 1e-8,
        **kwargs: Any,
    ) -> None:
        super().__init__(learning_rate=learning_rate, **kwargs)
        self.momentum = float(momentum)
        self.momentum2 = float(momentum2)
        self.delta = float(delta)

    def compute_update_value(self, gradient: Any, history: list[Any], local_rate: Any) -> Any:
        m, v = history
        beta1, beta2 = self.momentum, self.momentum2
        m_value = (1.0 - beta1) * gradient + beta1 * m.value
        v_value = (1.0 - beta2) * ops.square(gradient) + beta2 * v.value
        self.assign(m, m_value)
        self.assign(v, v_value)
        # Caffe computes the correction in double precision.
        t = ops.cast(self.iterations, "float64") + 1.0
        correction = ops.sqrt(1.0 - ops.power(ops.cast(beta2, "float64"), t)) / (
            1.0 - ops.power(ops.cast(beta1, "float64"), t)
        )
        rate = local_rate * ops.cast(correction, keras.backend.standardize_dtype(gradient.dtype))
        return rate * (m_value / (ops.sqrt(v_value) + self.delta))

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "momentum": self.momentum,
            "momentum2": self.momentum2,
            "delta": self.delta,
        }


#: Caffe's solver type strings (SolverParameter.type) and their optimizers.
SOLVERS: dict[str, type[CaffeOptimizer]] = {
    "SGD": CaffeSGD,
    "Nesterov": CaffeNesterov,
    "AdaGrad": CaffeAdaGrad,
    "RMSProp": CaffeRMSProp,
    "AdaDelta": CaffeAdaDelta,
    "Adam": CaffeAdam,
}


def caffe_optimizer(
    solver: pb.SolverParameter,
    param_rules: Mapping[str, ParamRule] | None = None,
    shared: Sequence[Sequence[str]] = (),
) -> CaffeOptimizer:
    """The optimizer Caffe's ``SolverRegistry`` would create for ``solver.type``."""
    kind = solver.type
    cls = SOLVERS.get(kind)
    if cls is None:
        raise SolverError(f"unknown solver type '{kind}'", expected="one of " + ", ".join(SOLVERS), received=repr(kind))
    if kind in ("AdaGrad", "RMSProp") and solver.momentum != 0:
        raise SolverError(
            f"momentum cannot be used with {kind}", expected="momentum 0", received=f"{solver.momentum:g}"
        )
    common: dict[str, Any] = {
        "learning_rate": learning_rate_schedule(solver),
        "weight_decay": solver.weight_decay,
        "regularization_type": solver.regularization_type,
        "clip_gradients": solver.clip_gradients,
        "iter_size": solver.iter_size,
        "param_rules": param_rules,
        "shared": shared,
    }
    if kind in ("SGD", "Nesterov"):
        return cls(momentum=solver.momentum, **common)
    if kind == "AdaGrad":
        return cls(delta=solver.delta, **common)
    if kind == "RMSProp":
        return cls(rms_decay=solver.rms_decay, delta=solver.delta, **common)
    if kind == "AdaDelta":
        return cls(momentum=solver.momentum, delta=solver.delta, **common)
    return cls(momentum=solver.momentum, momentum2=solver.momentum2, delta=solver.delta, **common)
