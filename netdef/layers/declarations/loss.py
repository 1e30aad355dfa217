"""Loss layers and Accuracy.

Every loss is a Caffe LossLayer: its top 0 is a scalar ``()`` with loss_weight 1 unless
told otherwise, created automatically when the prototxt names no top, and the label
bottom never receives a gradient. Caffe checks only that predictions and labels agree on
axis 0 plus what each loss adds; those checks are reproduced here.
"""

from __future__ import annotations

from dataclasses import replace

from netdef.layers.declarations.common import count, declare, fmt, legacy4, require_axes
from netdef.layers.declarations.keras_plans import caffe_layout, netdef_layer
from netdef.layers.registry import (
    Arity,
    KerasContext,
    KerasPlan,
    KerasRule,
    LayerContext,
    Shape,
    ShapeRule,
    between,
    exactly,
)
from netdef.proto import netdef_pb2 as pb

SCALAR: Shape = ()
#: LossLayer's arity: predictions and labels in, the loss out.
LOSS_BOTTOMS = exactly(2)
LOSS_TOPS = exactly(1)


def _check_batch(ctx: LayerContext) -> None:
    """LossLayer's own check: bottoms 0 and 1 have the same first dimension."""
    predictions, labels = ctx.bottoms[:2]
    require_axes(ctx, predictions, at_least=1, what="bottom 0")
    require_axes(ctx, labels, at_least=1, what="bottom 1")
    if predictions[0] != labels[0]:
        raise ctx.fail(
            "the data and label bottoms must have the same first dimension",
            expected=f"bottom 1 of shape ({predictions[0]}, ...)",
            received=f"{fmt(predictions)} and {fmt(labels)}",
        )


def _check_label_count(ctx: LayerContext, axis_field: int, what: str) -> int:
    """One label per prediction position: ``count(0, axis)·count(axis+1) == count(labels)``.

    Returns the canonical class axis.
    """
    predictions, labels = ctx.bottoms[:2]
    axis = ctx.axis(axis_field, len(predictions), what)
    positions = count(predictions, 0, axis) * count(predictions, axis + 1)
    if positions != count(labels):
        raise ctx.fail(
            f"one label per prediction is needed, the class axis being {axis}",
            expected=f"{positions} labels (e.g. (N, C, H, W) predictions take N·H·W labels)",
            received=f"{count(labels)} labels in {fmt(labels)}",
        )
    return axis


def _loss(
    type_name: str,
    shape: ShapeRule,
    *,
    params: tuple[str, ...] = (),
    bottoms: Arity = LOSS_BOTTOMS,
    tops: Arity = LOSS_TOPS,
    no_gradient: frozenset[int] = frozenset({1}),
    keras: KerasRule | None = None,
) -> None:
    declare(
        type_name,
        bottoms=bottoms,
        tops=tops,
        shape=shape,
        params=params,
        loss=True,
        no_gradient=no_gradient,
        keras=keras or _loss_keras,
    )


def normalization(layer: pb.LayerParameter, default: str = "valid") -> str:
    """LossParameter's normalization, with the deprecated ``normalize`` flag as Caffe reads it."""
    param = layer.loss_param
    if param.HasField("normalization"):
        return pb.LossParameter.NormalizationMode.Name(param.normalization).lower()
    if param.HasField("normalize"):
        return "valid" if param.normalize else "batch_size"
    return default


def _ignore_label(layer: pb.LayerParameter) -> int | None:
    return layer.loss_param.ignore_label if layer.loss_param.HasField("ignore_label") else None


def _loss_keras(ctx: KerasContext) -> KerasPlan:
    """Each loss is a netdef layer computing Caffe's (unweighted) loss on Caffe-layout blobs."""
    layer = ctx.layer
    kwargs: dict[str, object] = {}
    if layer.type == "SoftmaxWithLoss":
        kwargs = {
            "axis": ctx.shape.axis(layer.softmax_param.axis, len(ctx.bottoms[0])),
            "ignore_label": _ignore_label(layer),
            "normalization": normalization(layer),
            "return_probabilities": len(ctx.top_shapes) > 1,
        }
    elif layer.type == "SigmoidCrossEntropyLoss":
        kwargs = {"ignore_label": _ignore_label(layer), "normalization": normalization(layer, "batch_size")}
    elif layer.type == "HingeLoss":
        kwargs = {"norm": layer.hinge_loss_param.norm}
    elif layer.type == "ContrastiveLoss":
        param = layer.contrastive_loss_param
        kwargs = {"margin": param.margin, "legacy_version": param.legacy_version}
    elif layer.type == "InfogainLoss":
        kwargs = {
            "axis": ctx.shape.axis(layer.infogain_loss_param.axis, len(ctx.bottoms[0])),
            "ignore_label": _ignore_label(layer),
            "normalization": normalization(layer),
            "infogain": _infogain_matrix(ctx) if len(ctx.bottoms) < 3 else None,
            "return_probabilities": len(ctx.top_shapes) > 1,
        }
    plan = caffe_layout(ctx, netdef_layer("losses", layer.type), kwargs)
    # An infogain matrix given as bottom 2 is a (1, 1, K, K) blob, not a batch: keep it fixed.
    return replace(plan, static_batch=layer.type == "InfogainLoss" and len(ctx.bottoms) > 2)


def _infogain_matrix(ctx: KerasContext) -> list[list[float]]:
    """H read from ``infogain_loss_param.source`` (a BlobProto file) when no third bottom gives it."""
    from netdef.blobs import blobproto_to_array
    from netdef.prototxt import read_message

    source = ctx.layer.infogain_loss_param.source
    path = ctx.shape.data.resolve(source)
    blob = read_message(path, pb.BlobProto).message
    matrix = blobproto_to_array(blob)
    return matrix.reshape(matrix.shape[-2], matrix.shape[-1]).astype(float).tolist()


def _with_probabilities(ctx: LayerContext) -> list[Shape]:
    """Top 0 the loss; an optional top 1 holds the softmax probabilities (bottom 0's shape)."""
    return [SCALAR, ctx.bottoms[0]] if len(ctx.tops) > 1 else [SCALAR]


def _softmax_loss_shape(ctx: LayerContext) -> list[Shape]:
    """Scalar loss; labels: one per position outside ``softmax_param.axis`` (default 1)."""
    _check_batch(ctx)
    _check_label_count(ctx, ctx.layer.softmax_param.axis, "softmax_param.axis")
    return _with_probabilities(ctx)


_loss(
    "SoftmaxWithLoss",
    _softmax_loss_shape,
    params=("loss_param", "softmax_param"),
    tops=between(1, 2),
)


def _infogain_shape(ctx: LayerContext) -> list[Shape]:
    """Like SoftmaxWithLoss, weighted by an infogain matrix H of C×C entries.

    H is bottom 2, or read from ``infogain_loss_param.source`` (then required). Caffe
    refuses the deprecated ``loss_param.normalize`` here.
    """
    _check_batch(ctx)
    axis = _check_label_count(ctx, ctx.layer.infogain_loss_param.axis, "infogain_loss_param.axis")
    if ctx.layer.loss_param.HasField("normalize"):
        raise ctx.fail("InfogainLoss does not accept loss_param.normalize", hint="use loss_param.normalization")
    classes = ctx.bottoms[0][axis]
    if len(ctx.bottoms) == 3:
        if count(ctx.bottoms[2]) != classes * classes:
            raise ctx.fail(
                "the infogain matrix (bottom 2) must be C×C",
                expected=f"{classes * classes} entries",
                received=fmt(ctx.bottoms[2]),
            )
    elif not ctx.layer.infogain_loss_param.HasField("source"):
        raise ctx.fail(
            "InfogainLoss needs its matrix H",
            expected="a third bottom or infogain_loss_param.source",
        )
    return _with_probabilities(ctx)


_loss(
    "InfogainLoss",
    _infogain_shape,
    params=("infogain_loss_param", "loss_param"),
    bottoms=between(2, 3),
    tops=between(1, 2),
    no_gradient=frozenset({1, 2}),
)


def _sigmoid_ce_shape(ctx: LayerContext) -> list[Shape]:
    """Scalar loss; targets must have as many entries as the predictions.

    Default normalization is BATCH_SIZE here, not VALID as for SoftmaxWithLoss.
    """
    _check_batch(ctx)
    predictions, targets = ctx.bottoms
    if count(predictions) != count(targets):
        raise ctx.fail(
            "predictions and targets must have the same count",
            expected=f"{count(predictions)} targets",
            received=f"{count(targets)} in {fmt(targets)}",
        )
    return [SCALAR]


_loss("SigmoidCrossEntropyLoss", _sigmoid_ce_shape, params=("loss_param",))


def _euclidean_shape(ctx: LayerContext) -> list[Shape]:
    """Scalar ``Σ(a−b)²/2N``; both bottoms have the same count per sample.

    Unlike other losses both bottoms may receive a gradient.
    """
    _check_batch(ctx)
    a, b = ctx.bottoms
    if count(a, 1) != count(b, 1):
        raise ctx.fail(
            "both bottoms must have the same number of values per sample",
            expected=f"{count(a, 1)} per sample, as bottom 0 {fmt(a)}",
            received=f"{count(b, 1)} in {fmt(b)}",
        )
    return [SCALAR]


_loss("EuclideanLoss", _euclidean_shape, no_gradient=frozenset())


def _hinge_shape(ctx: LayerContext) -> list[Shape]:
    """Scalar loss; the only check Caffe makes is the shared first dimension."""
    _check_batch(ctx)
    return [SCALAR]


_loss("HingeLoss", _hinge_shape, params=("hinge_loss_param",))


def _multinomial_shape(ctx: LayerContext) -> list[Shape]:
    """Scalar loss; one label per sample, ``(N,)`` up to ``(N, 1, 1, 1)`` (4-D accessors)."""
    _check_batch(ctx)
    labels = ctx.bottoms[1]
    if legacy4(ctx, labels)[1:] != (1, 1, 1):
        raise ctx.fail(
            "the label bottom must hold one label per sample",
            expected="(N,) or (N, 1, 1, 1)",
            received=fmt(labels),
        )
    return [SCALAR]


_loss("MultinomialLogisticLoss", _multinomial_shape)


def _contrastive_shape(ctx: LayerContext) -> list[Shape]:
    """Scalar loss over feature pairs ``(N, C[, 1, 1])`` and a similarity ``(N[, 1, 1, 1])``."""
    _check_batch(ctx)
    a, b, similar = (legacy4(ctx, shape) for shape in ctx.bottoms)
    if a[1] != b[1] or a[2:] != (1, 1) or b[2:] != (1, 1):
        raise ctx.fail(
            "both feature bottoms must be (N, C) or (N, C, 1, 1) with the same C",
            received=f"{fmt(ctx.bottoms[0])} and {fmt(ctx.bottoms[1])}",
        )
    if similar[1:] != (1, 1, 1):
        raise ctx.fail(
            "the similarity bottom must hold one value per pair",
            expected="(N,) or (N, 1, 1, 1)",
            received=fmt(ctx.bottoms[2]),
        )
    return [SCALAR]


_loss(
    "ContrastiveLoss",
    _contrastive_shape,
    params=("contrastive_loss_param",),
    bottoms=exactly(3),
    no_gradient=frozenset({2}),
)


def _accuracy_shape(ctx: LayerContext) -> list[Shape]:
    """Scalar accuracy; an optional top 1 holds per-class accuracy ``(C,)``.

    Not a loss: no loss weight, no automatic top, and no gradient to either bottom
    (Caffe's Backward is NOT_IMPLEMENTED).
    """
    predictions = ctx.bottoms[0]
    param = ctx.layer.accuracy_param
    axis = _check_label_count(ctx, param.axis, "accuracy_param.axis")
    if param.top_k > predictions[axis]:
        raise ctx.fail(
            "top_k exceeds the number of classes",
            expected=f"top_k <= {predictions[axis]}",
            received=param.top_k,
        )
    return [SCALAR, (predictions[axis],)] if len(ctx.tops) > 1 else [SCALAR]


def _accuracy_keras(ctx: KerasContext) -> KerasPlan:
    param = ctx.layer.accuracy_param
    kwargs = {
        "top_k": param.top_k,
        "axis": ctx.shape.axis(param.axis, len(ctx.bottoms[0])),
        "ignore_label": param.ignore_label if param.HasField("ignore_label") else None,
        "per_class": len(ctx.top_shapes) > 1,
    }
    return caffe_layout(ctx, netdef_layer("losses", "Accuracy"), kwargs)


declare(
    "Accuracy",
    bottoms=exactly(2),
    tops=between(1, 2),
    shape=_accuracy_shape,
    params=("accuracy_param",),
    no_gradient=frozenset({0, 1}),
    keras=_accuracy_keras,
)
