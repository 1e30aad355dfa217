"""The layout translation and the Caffe ↔ Keras ↔ Python name mapping."""

from __future__ import annotations

import numpy as np
import pytest

from netdef.keras import layout as lay
from netdef.names import UniqueNames, caffe_name, identifier, keras_name


@pytest.mark.parametrize(
    ("caffe_axis", "rank", "expected"),
    [(0, 4, 0), (1, 4, 3), (2, 4, 1), (3, 4, 2), (1, 5, 4), (2, 5, 1), (4, 5, 3), (1, 2, 1), (2, 3, 2)],
)
def test_caffe_axes_in_channels_last(caffe_axis: int, rank: int, expected: int) -> None:
    assert lay.axis(caffe_axis, rank, lay.CHANNELS_LAST) == expected
    assert lay.axis(caffe_axis, rank, lay.CAFFE) == caffe_axis


@pytest.mark.parametrize("rank", [2, 3, 4, 5])
def test_permutations_round_trip_and_match_shapes(rank: int) -> None:
    caffe_shape = tuple(range(2, 2 + rank))
    array = np.zeros(caffe_shape)
    to_last = lay.permutation(rank, lay.CAFFE, lay.CHANNELS_LAST)
    if not lay.spatial(rank):
        assert to_last is None and lay.shape(caffe_shape, lay.CHANNELS_LAST) == caffe_shape
        return
    back = lay.permutation(rank, lay.CHANNELS_LAST, lay.CAFFE)
    held = np.transpose(array, to_last)
    assert held.shape == lay.shape(caffe_shape, lay.CHANNELS_LAST)
    assert np.transpose(held, back).shape == caffe_shape
    assert lay.permutation(rank, lay.CAFFE, lay.CAFFE) is None


def test_names_are_reversible_and_identifiers_valid() -> None:
    assert keras_name("inception_3a/1x1") == "inception_3a__1x1"
    assert caffe_name(keras_name("inception_3a/1x1")) == "inception_3a/1x1"
    assert identifier("inception_3a/1x1") == "inception_3a_1x1"
    assert identifier("3x3/reduce") == "x3x3_reduce"
    assert identifier("lambda") == "lambda_"
    assert identifier("///") == "blob"


def test_unique_names_add_suffixes() -> None:
    names = UniqueNames()
    assert [names.take("a"), names.take("a"), names.take("a_2"), names.take("a")] == ["a", "a_2", "a_2_2", "a_3"]
