"""One shared instance of equal immutable values (label pairs, metadata), in a bounded table.

A scraper sees the same values from every target of one exporter; keeping one instance of each
saves the copies. The table forgets everything when it is full, so memory stays bounded whatever
the targets send.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Generic, TypeVar

T = TypeVar("T", bound=Hashable)


class InternTable(Generic[T]):
    """``table(value)`` returns the one kept instance equal to ``value`` (``value`` itself the
    first time); at ``max_size`` entries the table is cleared."""

    def __init__(self, max_size: int) -> None:
        self.max_size = max_size
        self._kept: dict[T, T] = {}

    def __call__(self, value: T) -> T:
        got = self._kept.get(value)
        if got is None:
            if len(self._kept) >= self.max_size:
                self._kept.clear()
            self._kept[value] = got = value
        return got

    def __len__(self) -> int:
        return len(self._kept)
