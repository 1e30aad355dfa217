"""Shape inference: a walk over the IR applying each layer type's declared rule.

Shapes are Caffe's (N, C, [D,] H, W). The walk also settles each layer's learnable blobs
(shape, lr_mult, decay_mult, sharing by ParamSpec name), since their shapes follow from the
bottoms exactly as in Caffe's ``LayerSetUp``. Errors are collected; a layer whose bottoms
are unknown (after an error, or after a Python layer) is skipped, not guessed.
"""

from __future__ import annotations

import math

from netdef.errors import NetdefError, NetdefErrors, ShapeError
from netdef.ir import Net, Node, ParamBlob
from netdef.layers.registry import DataOptions, LayerContext, Shape
from netdef.proto import netdef_pb2 as pb


def infer_shapes(net: Net, data: DataOptions | None = None) -> None:
    """Fill in ``Value.shape`` and ``Node.blobs`` for every layer, in place."""
    data = data or DataOptions()
    errors: list[NetdefError] = []
    owners: dict[str, tuple[Node, ParamBlob]] = {}
    for node in net.nodes:
        bottoms = [value.shape for value in node.bottoms]
        if any(shape is None for shape in bottoms) or node.type == "Python":
            continue
        ctx = LayerContext(layer=node.param, bottoms=bottoms, phase=net.phase, location=node.location, data=data)  # type: ignore[arg-type]
        try:
            # Declarations check Caffe's blob limits (axes, 32-bit counts) on what they return.
            tops = node.spec.shape(ctx)
            node.blobs = _param_blobs(node, node.spec.blobs(ctx), owners)
        except NetdefError as error:
            errors.append(error.located(node.location, node.name, node.type))
            continue
        for value, shape in zip(node.tops, tops, strict=False):
            value.shape = tuple(int(d) for d in shape)
    if errors:
        raise errors[0] if len(errors) == 1 else NetdefErrors(errors)


def _param_blobs(node: Node, shapes: list[Shape], owners: dict[str, tuple[Node, ParamBlob]]) -> list[ParamBlob]:
    """Apply ParamSpecs to the learnable blobs as Caffe's ``Net::AppendParam`` does."""
    specs = list(node.param.param)
    if len(specs) > len(shapes):
        raise node.error(
            "more param { } entries than the layer has learnable blobs",
            expected=f"at most {len(shapes)}",
            received=str(len(specs)),
        )
    blobs = []
    for index, shape in enumerate(shapes):
        spec = specs[index] if index < len(specs) else pb.ParamSpec()
        if node.spec.statistics and spec.lr_mult != 0 and index < len(specs):
            raise node.error(
                f"param {index} sets lr_mult {spec.lr_mult:g}, but {node.type} statistics are not learned",
                expected="lr_mult: 0 or no param entry",
            )
        lr_mult = 0.0 if node.spec.statistics else spec.lr_mult
        blob = ParamBlob(
            index=index,
            shape=tuple(shape),
            lr_mult=lr_mult,
            decay_mult=spec.decay_mult,
            lr_mult_given=spec.HasField("lr_mult"),
            decay_mult_given=spec.HasField("decay_mult"),
        )
        if spec.name:
            blob.share_name = spec.name
            if spec.name in owners:
                _share(node, blob, spec, *owners[spec.name])
            else:
                owners[spec.name] = (node, blob)
        blobs.append(blob)
    return blobs


def _share(node: Node, blob: ParamBlob, spec: pb.ParamSpec, owner_node: Node, owner: ParamBlob) -> None:
    permissive = spec.share_mode == pb.ParamSpec.PERMISSIVE
    fits = math.prod(blob.shape) == owner.count if permissive else blob.shape == owner.shape
    if not fits:
        raise node.error(
            f"cannot share param '{spec.name}' owned by layer '{owner_node.name}'",
            ShapeError,
            expected=f"{'count' if permissive else 'shape'} of {owner.shape}",
            received=str(blob.shape),
        )
    # The first sharer that states a multiplier sets it for all; later ones must agree.
    if spec.HasField("lr_mult"):
        if owner.lr_mult_given and owner.lr_mult != spec.lr_mult:
            raise node.error(f"shared param '{spec.name}' has a different lr_mult than its owner")
        owner.lr_mult, owner.lr_mult_given = spec.lr_mult, True
    if spec.HasField("decay_mult"):
        if owner.decay_mult_given and owner.decay_mult != spec.decay_mult:
            raise node.error(f"shared param '{spec.name}' has a different decay_mult than its owner")
        owner.decay_mult, owner.decay_mult_given = spec.decay_mult, True
    blob.owner = (owner_node.name, owner.index)
    blob.lr_mult, blob.decay_mult = owner.lr_mult, owner.decay_mult
