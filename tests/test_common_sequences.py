"""common.sequences.slices: consecutive slices of the sequence's own type, the last one short."""

from __future__ import annotations

import pytest

from common.sequences import slices


def test_slices_cover_the_sequence_in_order_with_a_short_last() -> None:
    assert list(slices(list(range(7)), 3)) == [[0, 1, 2], [3, 4, 5], [6]]
    assert list(slices(list(range(6)), 3)) == [[0, 1, 2], [3, 4, 5]]
    assert list(slices([1, 2], 5)) == [[1, 2]]
    assert list(slices([], 4)) == []


def test_slices_keep_the_sequences_type() -> None:
    assert list(slices((1, 2, 3), 2)) == [(1, 2), (3,)]
    assert list(slices("abcde", 2)) == ["ab", "cd", "e"]
    pieces = list(slices(memoryview(b"abcdef"), 4))
    assert all(isinstance(p, memoryview) for p in pieces)
    assert [bytes(p) for p in pieces] == [b"abcd", b"ef"]


def test_a_zero_size_is_refused() -> None:
    with pytest.raises(ValueError):
        list(slices([1, 2], 0))
