"""The one place where Caffe's N,C,(D,)H,W meets Keras's channels-last.

Inside a compiled model, blobs of rank 4 and 5 are held channels-last, which TensorFlow and
cuDNN run fastest; every other rank is held in Caffe's axis order. Layer declarations speak
Caffe's axes and ask this module for the matching axes, shapes and permutations.
"""

from __future__ import annotations

from collections.abc import Sequence

CAFFE = "caffe"
CHANNELS_LAST = "channels_last"
LAYOUTS = (CAFFE, CHANNELS_LAST)


def spatial(rank: int) -> bool:
    """Whether a blob of this rank is held channels-last inside a model."""
    return rank in (4, 5)


def internal_layout(rank: int) -> str:
    return CHANNELS_LAST if spatial(rank) else CAFFE


def caffe_to_internal_order(rank: int) -> tuple[int, ...]:
    """For each internal axis, the Caffe axis it holds: (0, 2, 3, 1) for rank 4."""
    if not spatial(rank):
        return tuple(range(rank))
    return (0, *range(2, rank), 1)


def axis(caffe_axis: int, rank: int, layout: str) -> int:
    """The position of a (non-negative) Caffe axis in a tensor held in ``layout``."""
    if layout == CAFFE or not spatial(rank):
        return caffe_axis
    return caffe_to_internal_order(rank).index(caffe_axis)


def axes(caffe_axes: Sequence[int], rank: int, layout: str) -> list[int]:
    return [axis(a, rank, layout) for a in caffe_axes]


def shape(caffe_shape: Sequence[int], layout: str) -> tuple[int, ...]:
    """A Caffe shape as held in ``layout``."""
    if layout == CAFFE or not spatial(len(caffe_shape)):
        return tuple(caffe_shape)
    return tuple(caffe_shape[a] for a in caffe_to_internal_order(len(caffe_shape)))


def permutation(rank: int, source: str, target: str) -> tuple[int, ...] | None:
    """Axes (batch included, 0-based) taking a tensor from ``source`` to ``target``; None if equal."""
    if source == target or not spatial(rank):
        return None
    order = caffe_to_internal_order(rank)
    if target == CHANNELS_LAST:
        return order
    inverse = [0] * rank
    for position, caffe_axis in enumerate(order):
        inverse[caffe_axis] = position
    return tuple(inverse)
