"""Caffe's solver written out in numpy, step by step, for the small nets of the solver tests.

Independent of netdef's implementation: the forward/backward of the test net by hand,
the learning-rate policies as Caffe's ``GetLearningRate`` states them (multistep with its
``current_step`` carried from call to call), and ``ApplyUpdate`` with each solver type's
``ComputeUpdateValue`` on every learnable param in Caffe's order. Float64 throughout.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

Params = dict[str, list[np.ndarray]]


@dataclass
class NetSpec:
    """The test net: ``ip1`` (+ ``ip1b`` sharing ip1's weight) → ReLU → ``ip2`` → losses."""

    shared: bool = False
    softmax_weight: float = 2.0
    euclidean_weight: float = 0.5
    #: Caffe's learnable params in net order: (layer, blob, lr_mult, decay_mult).
    learnable: list[tuple[str, int, float, float]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.learnable = [("ip1", 0, 1.0, 1.0), ("ip1", 1, 2.0, 0.0)]
        if self.shared:
            self.learnable.append(("ip1b", 1, 1.0, 1.0))
        self.learnable += [("ip2", 0, 1.0, 1.0), ("ip2", 1, 0.0, 1.0)]


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def forward_backward(spec: NetSpec, params: Params, batch: dict[str, np.ndarray]) -> tuple[dict[str, float], Params]:
    """Outputs (blob → value, plus the objective under "objective") and every param's diff."""
    x = batch["data"].reshape(len(batch["data"]), -1).astype(np.float64)
    label = batch["label"].astype(np.int64)
    target = batch["target"].astype(np.float64)
    n = len(x)
    w1, b1 = params["ip1"]
    h = x @ w1.T + b1
    if spec.shared:
        xb = batch["data_b"].astype(np.float64)
        h = h + xb @ w1.T + params["ip1b"][1]
    a = np.maximum(h, 0)
    w2, b2 = params["ip2"]
    z = a @ w2.T + b2
    p = _softmax(z)
    softmax_loss = -np.mean(np.log(p[np.arange(n), label]))
    euclidean_loss = np.sum((z - target) ** 2) / (2 * n)
    accuracy = np.mean(np.argmax(z, axis=1) == label)
    onehot = np.eye(z.shape[1])[label]
    dz = spec.softmax_weight * (p - onehot) / n + spec.euclidean_weight * (z - target) / n
    dh = (dz @ w2) * (h > 0)
    grads: Params = {"ip2": [dz.T @ a, dz.sum(axis=0)], "ip1": [dh.T @ x, dh.sum(axis=0)]}
    if spec.shared:
        # The sharer's weight diff lands in the owner's (Caffe shares the diff memory).
        grads["ip1"][0] = grads["ip1"][0] + dh.T @ xb
        grads["ip1b"] = [np.zeros_like(w1), dh.sum(axis=0)]
    outputs = {
        "loss": softmax_loss,
        "eloss": euclidean_loss,
        "acc": accuracy,
        "objective": spec.softmax_weight * softmax_loss + spec.euclidean_weight * euclidean_loss,
    }
    return outputs, grads


class LearningRate:
    """``SGDSolver::GetLearningRate``, called once per iteration as Caffe does."""

    def __init__(self, solver: dict) -> None:
        self.solver = solver
        self.current_step = 0

    def __call__(self, it: int) -> float:
        s = self.solver
        policy, base = s["lr_policy"], s["base_lr"]
        if policy == "fixed":
            return base
        if policy == "step":
            self.current_step = it // s["stepsize"]
            return base * s["gamma"] ** self.current_step
        if policy == "exp":
            return base * s["gamma"] ** it
        if policy == "inv":
            return base * (1 + s["gamma"] * it) ** (-s["power"])
        if policy == "multistep":
            values = s["stepvalue"]
            if self.current_step < len(values) and it >= values[self.current_step]:
                self.current_step += 1
            return base * s["gamma"] ** self.current_step
        if policy == "poly":
            return base * (1 - it / s["max_iter"]) ** s["power"]
        if policy == "sigmoid":
            return base * (1 / (1 + math.exp(-s["gamma"] * (it - s["stepsize"]))))
        raise ValueError(policy)


class Solver:
    """``ApplyUpdate`` with history blobs per learnable param, as Caffe keeps them."""

    def __init__(self, spec: NetSpec, solver: dict, params: Params) -> None:
        self.spec = spec
        self.s = solver
        self.params = {layer: [b.astype(np.float64).copy() for b in blobs] for layer, blobs in params.items()}
        self.lr = LearningRate(solver)
        self.iter = 0
        #: Per iteration: whether Caffe clipped, and whether clipping the mean over iter_size would have.
        self.clipped: list[bool] = []
        self.clipped_mean: list[bool] = []
        slots = 2 if solver["type"] in ("AdaDelta", "Adam") else 1
        self.history = [
            [np.zeros_like(self.params[layer][blob]) for _ in range(slots)] for layer, blob, _, _ in spec.learnable
        ]

    def apply_update(self, diffs: list[np.ndarray]) -> None:
        s = self.s
        rate = self.lr(self.iter)
        clip = s.get("clip_gradients", -1.0)
        iter_size = s.get("iter_size", 1)
        if clip >= 0:
            norm = math.sqrt(sum(float(np.sum(d**2)) for d in diffs))
            self.clipped.append(norm > clip)
            self.clipped_mean.append(norm / iter_size > clip)
            if norm > clip:
                diffs = [d * (clip / norm) for d in diffs]
        for i, (layer, blob, lr_mult, decay_mult) in enumerate(self.spec.learnable):
            w = self.params[layer][blob]
            g = diffs[i] / iter_size
            decay = s.get("weight_decay", 0.0) * decay_mult
            if decay:
                g = g + decay * (np.sign(w) if s.get("regularization_type", "L2") == "L1" else w)
            step = self._update_value(g, self.history[i], rate * lr_mult)
            self.params[layer][blob] = w - step
        if self.spec.shared:
            self.params["ip1b"][0] = self.params["ip1"][0]
        self.iter += 1

    def _update_value(self, g: np.ndarray, h: list[np.ndarray], local_rate: float) -> np.ndarray:
        s = self.s
        momentum, delta = s.get("momentum", 0.0), s.get("delta", 1e-8)
        kind = s["type"]
        if kind == "SGD":
            h[0] = momentum * h[0] + local_rate * g
            return h[0]
        if kind == "Nesterov":
            previous = h[0]
            h[0] = momentum * h[0] + local_rate * g
            return (1 + momentum) * h[0] - momentum * previous
        if kind == "AdaGrad":
            h[0] = h[0] + g**2
            return local_rate * g / (np.sqrt(h[0]) + delta)
        if kind == "RMSProp":
            decay = s.get("rms_decay", 0.99)
            h[0] = decay * h[0] + (1 - decay) * g**2
            return local_rate * g / (np.sqrt(h[0]) + delta)
        if kind == "AdaDelta":
            h[0] = momentum * h[0] + (1 - momentum) * g**2
            update = g * np.sqrt((h[1] + delta) / (h[0] + delta))
            h[1] = momentum * h[1] + (1 - momentum) * update**2
            return local_rate * update
        if kind == "Adam":
            beta1, beta2 = momentum, s.get("momentum2", 0.999)
            h[0] = beta1 * h[0] + (1 - beta1) * g
            h[1] = beta2 * h[1] + (1 - beta2) * g**2
            t = self.iter + 1
            correction = math.sqrt(1 - beta2**t) / (1 - beta1**t)
            return local_rate * correction * h[0] / (np.sqrt(h[1]) + delta)
        raise ValueError(kind)

    def step(self, batches: list[dict[str, np.ndarray]]) -> list[dict[str, float]]:
        """One Caffe iteration over ``iter_size`` batches; the outputs of each forward."""
        outputs = []
        total: list[np.ndarray] | None = None
        for batch in batches:
            out, grads = forward_backward(self.spec, self.params, batch)
            outputs.append(out)
            diffs = [
                grads[layer][blob] if lr_mult != 0 else np.zeros_like(grads[layer][blob])
                for layer, blob, lr_mult, _ in self.spec.learnable
            ]
            total = diffs if total is None else [a + b for a, b in zip(total, diffs, strict=True)]
        assert total is not None
        self.apply_update(total)
        return outputs
