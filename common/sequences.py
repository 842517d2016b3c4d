"""A sequence cut into consecutive slices of a bounded length: the one way the stores cut ids
into ``IN (...)`` / ``IN ?`` lists, rows into batches and requests into waves.

Python 3.11 has no ``itertools.batched`` (3.12), and that one gives tuples; ``slices`` gives
the sequence's own slices (a list's are lists, a memoryview's are views), so what a driver
is handed stays what it was before the cut."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, TypeVar, cast

S = TypeVar("S", bound=Sequence[Any])


def slices(items: S, size: int) -> Iterator[S]:
    """``items[0:size]``, ``items[size:2 * size]``, ... up to the end: every slice has ``size``
    items but the last, which has the rest; none for an empty ``items``. ``size`` 0 raises
    ``ValueError`` (as ``range``'s step does)."""
    for start in range(0, len(items), size):
        yield cast(S, items[start : start + size])
