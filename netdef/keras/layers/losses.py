"""Caffe's loss and metric layers as Keras *layers* returning Caffe's scalar value.

They are layers, not ``keras.losses``, because a Caffe net computes its losses inside the
graph (several per net, each with its own loss weight, some with a third input) and
reports them as blobs. All inputs are in Caffe's layout: the class axis, ``outer`` count
(axes before it) and ``inner`` count (axes after it) are Caffe's. Labels arrive as floats
and are truncated toward zero, as Caffe's ``static_cast<int>``; no gradient reaches them.

Each layer's gradient under autodiff equals Caffe's hand-written backward. Where Caffe's
backward is not the derivative of its forward (a log clamped at a floor, a distance offset
by 1e-4), the forward value is paired with a surrogate that has Caffe's gradient
(:func:`with_gradient_of`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras
from keras import ops

from ._caffe_ops import canonical_axis, check_choice, count, with_gradient_of

#: Caffe's ``LossParameter.NormalizationMode`` names, lower-cased.
NORMALIZATIONS = ("full", "valid", "batch_size", "none")
#: ``-log(FLT_MIN)``: SoftmaxWithLoss clamps probabilities to float32's smallest normal
#: number, so no label's loss exceeds this.
NEG_LOG_FLT_MIN = 87.33654475055310898657
#: ``kLOG_THRESHOLD`` of Caffe's MultinomialLogisticLoss and InfogainLoss.
LOG_THRESHOLD = 1e-20


def _at_least(x: Any, floor: float) -> Any:
    """Caffe's ``std::max(x, floor)``, NaN passing through, in ``x``'s dtype.

    Not ``keras.ops.maximum``, and ``floor`` cast first: outside TensorFlow, Keras's type
    promotion maps 64-bit floats to 32-bit, which would round float64 inputs or the floor.
    """
    return ops.where(x < floor, ops.convert_to_tensor(floor, dtype=x.dtype), x)


def _normalizer(mode: str, outer: Any, inner: Any, valid_count: Any, dtype: str) -> Any:
    """Caffe's ``get_normalizer``: the divisor for ``mode``, never less than 1.

    The floor of 1 keeps a batch whose labels are all ignored at loss 0 instead of NaN.
    """
    value = {"full": outer * inner, "valid": valid_count, "batch_size": outer, "none": 1}[mode]
    if isinstance(value, int):  # static shapes and no ignored label: no tensor ops needed
        return float(max(value, 1))
    return _at_least(ops.cast(value, dtype), 1.0)


def _classes_last(x: Any, axis: int, layer: str) -> tuple[Any, Any, Any]:
    """View ``x`` as ``(outer, inner, classes)`` around Caffe's class ``axis``.

    Returns the view with Caffe's ``outer_num_`` and ``inner_num_``; a label blob of
    ``outer·inner`` entries lines up with the first two axes.
    """
    axis = canonical_axis(axis, len(x.shape), layer)
    outer, inner = count(x, 0, axis), count(x, axis + 1)
    grouped = ops.reshape(x, (-1, x.shape[axis], inner))
    return ops.transpose(grouped, (0, 2, 1)), outer, inner


def _labels(label: Any, ignore_label: int | None) -> tuple[Any, Any]:
    """Integer labels with ignored entries replaced by 0 (any valid index), and the valid mask."""
    label = ops.cast(label, "int32")
    if ignore_label is None:
        return label, ops.ones_like(label, dtype="bool")
    valid = label != ignore_label
    return ops.where(valid, label, 0), valid


def _at_labels(values: Any, label: Any) -> Any:
    """``values[..., label]`` for a ``(outer, inner, C)`` tensor and ``(outer, inner)`` labels."""
    return ops.take_along_axis(values, ops.expand_dims(label, -1), axis=-1)[..., 0]


def _ratio(numerator: Any, denominator: Any) -> Any:
    """``numerator / denominator``, or 0 where the denominator is 0 (Caffe's empty-count rule)."""
    return ops.where(denominator > 0, numerator / _at_least(denominator, 1.0), 0.0)


def _softmax_loss_outputs(layer: Any, scores: Any, per_label: Any, valid: Any, outer: int, inner: int) -> Any:
    """The normalized sum over non-ignored labels (``valid``: their mask, None when no label
    is ignored), and the probabilities when asked for.

    Shared by SoftmaxWithLoss and InfogainLoss, which both apply a softmax internally and may
    expose it as a second top (which, as in Caffe, passes no gradient).
    """
    if valid is None:
        norm = _normalizer(layer.normalization, outer, inner, outer * inner, scores.dtype)
        loss = ops.sum(per_label) / norm
    else:
        valid_count = ops.sum(ops.cast(valid, scores.dtype))
        norm = _normalizer(layer.normalization, outer, inner, valid_count, scores.dtype)
        loss = ops.sum(ops.where(valid, per_label, 0.0)) / norm
    if layer.return_probabilities:
        return [loss, ops.stop_gradient(ops.softmax(scores, axis=layer.axis))]
    return loss


@keras.saving.register_keras_serializable(package="netdef")
class SoftmaxWithLoss(keras.layers.Layer):
    """Caffe's SoftmaxWithLoss: ``[scores, labels]`` -> ``-Σ log(max(p[label], FLT_MIN)) / norm``.

    ``p`` is the softmax over ``axis``; ``labels`` holds ``outer·inner`` class indices.
    ``norm`` follows ``normalization`` (``"valid"``: non-ignored labels; ``"full"``:
    ``outer·inner``; ``"batch_size"``: ``outer``; ``"none"``: 1), floored at 1. The gradient
    is Caffe's ``(p - onehot) / norm`` even where the clamp is active (where ``log(max(·))``
    would have none), and 0 at ignored labels. With ``return_probabilities`` the layer
    also returns ``p`` (Caffe's optional second top), through which Caffe passes no
    gradient, so none passes here either.
    """

    def __init__(
        self,
        axis: int = 1,
        ignore_label: int | None = None,
        normalization: str = "valid",
        return_probabilities: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        check_choice("SoftmaxWithLoss", "normalization", normalization, NORMALIZATIONS)
        self.axis = int(axis)
        self.ignore_label = None if ignore_label is None else int(ignore_label)
        self.normalization = normalization
        self.return_probabilities = bool(return_probabilities)

    def call(self, inputs: Sequence[Any]) -> Any:
        scores, labels = inputs
        axis = canonical_axis(self.axis, len(scores.shape), "SoftmaxWithLoss")
        outer, inner = count(scores, 0, axis), count(scores, axis + 1)
        if inner == 1:
            # The common (N, C) case needs no transpose; Keras's op then runs the backend's
            # fused kernel, whose gradient is Caffe's ``p - onehot``.
            rows = scores if len(scores.shape) == 2 and axis == 1 else ops.reshape(scores, (-1, scores.shape[axis]))
        else:
            grouped, _, _ = _classes_last(scores, axis, "SoftmaxWithLoss")
            rows = ops.reshape(grouped, (-1, scores.shape[axis]))
        label = labels if len(labels.shape) == 1 else ops.reshape(labels, (-1,))
        if self.ignore_label is None:
            label, valid = ops.cast(label, "int32"), None  # every label counts: no masking ops
        else:
            label, valid = _labels(label, self.ignore_label)
        cross_entropy = ops.sparse_categorical_crossentropy(label, rows, from_logits=True)
        # Caffe clamps p at FLT_MIN, so -log p stops at -log FLT_MIN; its gradient does not stop.
        excess = ops.stop_gradient(ops.relu(cross_entropy - NEG_LOG_FLT_MIN))
        per_label = cross_entropy - excess
        return _softmax_loss_outputs(self, scores, per_label, valid, outer, inner)

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "axis": self.axis,
            "ignore_label": self.ignore_label,
            "normalization": self.normalization,
            "return_probabilities": self.return_probabilities,
        }


@keras.saving.register_keras_serializable(package="netdef")
class EuclideanLoss(keras.layers.Layer):
    """Caffe's EuclideanLoss: ``[a, b]`` -> ``Σ(a - b)² / N / 2``, N = ``a.shape[0]``.

    Unlike ``keras.losses.MeanSquaredError`` it divides by the batch size only (and by 2),
    not by the element count; both inputs receive gradients.
    """

    def call(self, inputs: Sequence[Any]) -> Any:
        a, b = inputs
        return ops.sum(ops.square(a - b)) / ops.cast(ops.shape(a)[0], a.dtype) / 2.0


@keras.saving.register_keras_serializable(package="netdef")
class SigmoidCrossEntropyLoss(keras.layers.Layer):
    """Caffe's SigmoidCrossEntropyLoss: ``[logits, targets]`` of equal counts -> scalar.

    Caffe's overflow-free form ``-Σ [x·(t - [x ≥ 0]) - log(1 + e^(x - 2x·[x ≥ 0]))] / norm``,
    transcribed literally, whose autodiff gradient is Caffe's ``(sigmoid(x) - t) / norm``
    (``-|x|`` in place of ``x - 2x·[x ≥ 0]`` would give the wrong gradient at 0). Targets
    may be soft (used as floats); ``ignore_label`` compares their integer truncation.
    ``normalization`` is already resolved by the caller: Caffe's default here is
    ``"batch_size"`` when neither ``normalization`` nor ``normalize`` is set, unlike other
    losses.
    """

    def __init__(self, ignore_label: int | None = None, normalization: str = "batch_size", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        check_choice("SigmoidCrossEntropyLoss", "normalization", normalization, NORMALIZATIONS)
        self.ignore_label = None if ignore_label is None else int(ignore_label)
        self.normalization = normalization

    def call(self, inputs: Sequence[Any]) -> Any:
        x, target = inputs
        target = ops.reshape(ops.stop_gradient(target), ops.shape(x))
        _, valid = _labels(target, self.ignore_label)
        nonnegative = ops.cast(x >= 0, x.dtype)
        per_element = x * (target - nonnegative) - ops.log(1.0 + ops.exp(x - 2.0 * x * nonnegative))
        valid_count = ops.sum(ops.cast(valid, x.dtype))
        norm = _normalizer(self.normalization, ops.shape(x)[0], count(x, 1), valid_count, x.dtype)
        return -ops.sum(ops.where(valid, per_element, 0.0)) / norm

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "ignore_label": self.ignore_label, "normalization": self.normalization}


@keras.saving.register_keras_serializable(package="netdef")
class HingeLoss(keras.layers.Layer):
    """Caffe's HingeLoss: ``[scores (N, ...), labels (N,)]`` -> one-vs-all hinge over ``count(1)``.

    ``t = x`` with ``t[label]`` negated, ``m = max(0, 1 + t)``; ``norm=1``: ``Σ m / N``,
    ``norm=2``: ``Σ m² / N``. Every non-label class contributes (Keras's hinge losses
    take ±1 targets per output instead). The gradient is 0 where ``1 + t == 0``, as Caffe's
    ``sign(0)``.
    """

    def __init__(self, norm: int = 1, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        check_choice("HingeLoss", "norm", norm, (1, 2))
        self.norm = int(norm)

    def call(self, inputs: Sequence[Any]) -> Any:
        scores, labels = inputs
        dim = count(scores, 1)
        flat = ops.reshape(scores, (-1, dim))
        is_label = ops.one_hot(ops.cast(ops.reshape(labels, (-1,)), "int32"), dim) > 0
        margin = 1.0 + ops.where(is_label, -flat, flat)
        margin = ops.where(margin > 0, margin, 0.0)
        total = ops.sum(margin) if self.norm == 1 else ops.sum(ops.square(margin))
        return total / ops.cast(ops.shape(scores)[0], scores.dtype)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "norm": self.norm}


@keras.saving.register_keras_serializable(package="netdef")
class InfogainLoss(keras.layers.Layer):
    """Caffe's InfogainLoss: ``[scores, labels(, H)]`` -> ``-Σ_l H[label, l]·log(max(p_l, 1e-20)) / norm``.

    The softmax over ``axis`` is applied inside, as Caffe does. ``H`` (C×C) is the third
    input when given, else the constant ``infogain`` (nested lists; the compiler reads
    Caffe's ``source`` BlobProto into it). ``norm`` as SoftmaxWithLoss (Caffe forbids the
    deprecated ``normalize`` here, so the default is simply ``"valid"``). The gradient is
    Caffe's ``(p·Σ_l H[label, l] - H[label, :]) / norm``, clamp or not; none reaches the
    labels or ``H``. ``return_probabilities`` as SoftmaxWithLoss.
    """

    def __init__(
        self,
        axis: int = 1,
        ignore_label: int | None = None,
        normalization: str = "valid",
        infogain: Sequence[Sequence[float]] | None = None,
        return_probabilities: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        check_choice("InfogainLoss", "normalization", normalization, NORMALIZATIONS)
        self.axis = int(axis)
        self.ignore_label = None if ignore_label is None else int(ignore_label)
        self.normalization = normalization
        self.infogain = None if infogain is None else [[float(v) for v in row] for row in infogain]
        self.return_probabilities = bool(return_probabilities)

    def build(self, input_shape: Sequence[Sequence[int | None]]) -> None:
        if len(input_shape) == 2 and self.infogain is None:
            raise ValueError("InfogainLoss: expected an infogain matrix (a third input or `infogain`), received none")

    def call(self, inputs: Sequence[Any]) -> Any:
        scores, labels, *given = inputs
        classes = scores.shape[canonical_axis(self.axis, len(scores.shape), "InfogainLoss")]
        matrix = given[0] if given else ops.convert_to_tensor(self.infogain, dtype=scores.dtype)
        matrix = ops.reshape(ops.stop_gradient(matrix), (classes, classes))
        grouped, outer, inner = _classes_last(scores, self.axis, "InfogainLoss")
        label, valid = _labels(ops.reshape(labels, (-1, inner)), self.ignore_label)
        rows = ops.take(matrix, label, axis=0)
        value = -ops.sum(rows * ops.log(_at_least(ops.softmax(grouped, axis=-1), LOG_THRESHOLD)), axis=-1)
        surrogate = -ops.sum(rows * ops.log_softmax(grouped, axis=-1), axis=-1)
        per_label = with_gradient_of(value, surrogate)
        return _softmax_loss_outputs(self, scores, per_label, valid, outer, inner)

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "axis": self.axis,
            "ignore_label": self.ignore_label,
            "normalization": self.normalization,
            "infogain": self.infogain,
            "return_probabilities": self.return_probabilities,
        }


@keras.saving.register_keras_serializable(package="netdef")
class MultinomialLogisticLoss(keras.layers.Layer):
    """Caffe's MultinomialLogisticLoss: ``[probabilities, labels]`` -> ``-Σ log(max(p[label], 1e-20)) / N``.

    The input is already a probability (no softmax). The gradient at the label is Caffe's
    ``-1 / (max(p, 1e-20)·N)`` even below the clamp, where ``log(max(·))`` would have none.
    """

    def call(self, inputs: Sequence[Any]) -> Any:
        prob, labels = inputs
        flat = ops.reshape(prob, (-1, count(prob, 1)))
        label = ops.reshape(ops.cast(labels, "int32"), (-1, 1))
        at_label = ops.take_along_axis(flat, label, axis=-1)
        clamped = with_gradient_of(_at_least(at_label, LOG_THRESHOLD), at_label)
        return -ops.sum(ops.log(clamped)) / ops.cast(ops.shape(prob)[0], prob.dtype)


@keras.saving.register_keras_serializable(package="netdef")
class ContrastiveLoss(keras.layers.Layer):
    """Caffe's ContrastiveLoss: ``[a, b, similar]`` -> ``Σ_i L_i / N / 2``.

    With ``d² = ‖a_i - b_i‖²``: similar pairs (``int(similar_i) != 0``) give ``d²``;
    dissimilar ones ``max(margin - d, 0)²``, or with ``legacy_version``
    ``max(margin - d², 0)``. Caffe's backward for the non-legacy dissimilar case divides by
    ``d + 1e-4`` rather than ``d`` (so it stays finite at ``d == 0``); this layer's gradient
    is that one, not the exact derivative. No gradient reaches ``similar``.
    """

    def __init__(self, margin: float = 1.0, legacy_version: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.margin = float(margin)
        self.legacy_version = bool(legacy_version)

    def call(self, inputs: Sequence[Any]) -> Any:
        a, b, similar = inputs
        diff = ops.reshape(a - b, (-1, count(a, 1)))
        dist_sq = ops.sum(ops.square(diff), axis=-1)
        is_similar = ops.cast(ops.reshape(similar, (-1,)), "int32") != 0
        if self.legacy_version:
            gap = self.margin - dist_sq
            dissimilar = _at_least(gap, 0.0)
            # d(gap)/d(d²) = -1, and d(d²)/d(diff) = 2·diff.
            weight = -ops.cast(gap > 0, gap.dtype)
        else:
            dist = ops.sqrt(dist_sq)
            gap = self.margin - dist
            dissimilar = ops.square(_at_least(gap, 0.0))
            weight = ops.where(gap > 0, -gap / (dist + 1e-4), 0.0)
        weight = ops.where(is_similar, 1.0, weight)
        num = ops.cast(ops.shape(a)[0], a.dtype)
        value = ops.sum(ops.where(is_similar, dist_sq, dissimilar)) / num / 2.0
        # Σ w_i·d²_i / N / 2 with w_i held constant has gradient w_i·diff_i / N: Caffe's backward.
        surrogate = ops.sum(ops.stop_gradient(weight) * dist_sq) / num / 2.0
        return with_gradient_of(value, surrogate)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "margin": self.margin, "legacy_version": self.legacy_version}


@keras.saving.register_keras_serializable(package="netdef")
class Accuracy(keras.layers.Layer):
    """Caffe's Accuracy: ``[scores, labels]`` -> top-k accuracy over non-ignored labels.

    A label counts as correct when at most ``top_k`` classes (the true one included) score
    ``>=`` the true class's score, so ties count *against* it (and a NaN true score counts as
    correct, as in Caffe). Returns the scalar ``correct / count`` (0 when every label is
    ignored) and, with ``per_class``, also the ``(C,)`` per-class accuracies (0 for classes
    absent from the batch), Caffe's optional second top. Not differentiable, as in Caffe.
    """

    def __init__(
        self, top_k: int = 1, axis: int = 1, ignore_label: int | None = None, per_class: bool = False, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        if int(top_k) < 1:
            raise ValueError(f"Accuracy: expected top_k >= 1, received {top_k}")
        self.top_k = int(top_k)
        self.axis = int(axis)
        self.ignore_label = None if ignore_label is None else int(ignore_label)
        self.per_class = bool(per_class)

    def call(self, inputs: Sequence[Any]) -> Any:
        scores, labels = inputs
        grouped, _, inner = _classes_last(ops.stop_gradient(scores), self.axis, "Accuracy")
        if grouped.shape[-1] < self.top_k:
            raise ValueError(f"Accuracy: expected top_k <= {grouped.shape[-1]} classes, received {self.top_k}")
        label, valid = _labels(ops.reshape(labels, (-1, inner)), self.ignore_label)
        true_score = ops.expand_dims(_at_labels(grouped, label), -1)
        at_least = ops.sum(ops.cast(grouped >= true_score, "int32"), axis=-1)
        correct = ops.cast(ops.logical_and(valid, at_least <= self.top_k), scores.dtype)
        valid = ops.cast(valid, scores.dtype)
        accuracy = _ratio(ops.sum(correct), ops.sum(valid))
        if not self.per_class:
            return accuracy
        classes = ops.one_hot(label, grouped.shape[-1], dtype=scores.dtype)
        per_class_correct = ops.sum(classes * ops.expand_dims(correct, -1), axis=(0, 1))
        per_class_count = ops.sum(classes * ops.expand_dims(valid, -1), axis=(0, 1))
        return [accuracy, _ratio(per_class_correct, per_class_count)]

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "top_k": self.top_k,
            "axis": self.axis,
            "ignore_label": self.ignore_label,
            "per_class": self.per_class,
        }
