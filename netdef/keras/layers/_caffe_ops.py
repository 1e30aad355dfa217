"""Helpers shared by the elementwise, routing, loss and recurrent layers.

They exist once here because several Caffe layers share the same arithmetic: Caffe's
``Blob::count`` over a range of axes, its canonical (possibly negative) axis indices, and
backward passes that are not the derivative of the forward pass (a clamp whose gradient
Caffe ignores), which autodiff can only reproduce with a surrogate.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from keras import ops


def with_gradient_of(value: Any, surrogate: Any) -> Any:
    """Return ``value`` in the forward pass but differentiate as ``surrogate``.

    Caffe writes its backward passes by hand, and a few of them are not the derivative of
    the forward formula (``log(max(p, eps))`` gets the gradient of ``log(p)``). The result
    is ``value + (surrogate - surrogate)`` with both ``value`` and the subtracted copy held
    constant, so the forward number is exactly ``value`` (``s - s`` is exactly 0 for a
    finite ``s``) and the gradient is exactly ``surrogate``'s. ``surrogate`` must be finite.
    """
    return ops.stop_gradient(value) + (surrogate - ops.stop_gradient(surrogate))


def count(x: Any, start: int = 0, end: int | None = None) -> Any:
    """Caffe's ``Blob::count(start, end)``: the product of the dimensions in ``[start, end)``.

    A Python int when those dimensions are static, else a scalar tensor (an unknown batch
    size inside a traced function), so callers can use it in reshapes either way.
    """
    total: Any = 1
    for dim in ops.shape(x)[start:end]:
        total = total * dim
    return total


def canonical_axis(axis: int, rank: int, layer: str) -> int:
    """Caffe's ``CanonicalAxisIndex``: a negative axis counts from the end."""
    if not -rank <= axis < rank:
        raise ValueError(f"{layer}: expected an axis in [{-rank}, {rank}) for a rank-{rank} input, received {axis}")
    return axis % rank


def check_choice(layer: str, name: str, value: Any, choices: Sequence[Any]) -> None:
    """Reject a constructor argument outside its enumeration, naming the accepted values."""
    if value not in choices:
        raise ValueError(f"{layer}: expected {name} to be one of {list(choices)}, received {value!r}")
