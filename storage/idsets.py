"""Sets of series ids per target as sorted NumPy arrays: 8 bytes per id (issue #20).

The Cassandra write path remembers which series it has indexed (``CassandraStorage``, per
index bucket) and which it has labeled in the spool (``BatchingWriter``, per day), each
under the target that wrote them. As ``{series id: target}`` dicts those maps took ~50
bytes per series each (a dict slot, its share of the table, the int key): 15.7 MB of a
100k-series scraper. ``TargetIds`` keeps one sorted ``int64`` array per target instead and
answers for a whole scrape's ids at once (``np.searchsorted``). The marks of one target are
usually the same set in each of them (the writer's day, the index's day and month): equal
arrays are kept once (``_shared``), read-only.
"""

from __future__ import annotations

import hashlib
import weakref
from collections.abc import Iterable

import numpy as np

# sorted id arrays by a digest of their bytes: one array for equal sets, alive while a set holds it
_SHARED: weakref.WeakValueDictionary[bytes, np.ndarray] = weakref.WeakValueDictionary()


def _shared(ids: np.ndarray) -> np.ndarray:
    """The one kept array equal to ``ids`` (read-only; ``ids`` itself the first time)."""
    key = hashlib.blake2b(ids.data, digest_size=16).digest()
    got = _SHARED.get(key)
    if got is not None and np.array_equal(got, ids):
        return got
    ids.flags.writeable = False
    _SHARED[key] = ids
    return ids


def _distinct(ids: np.ndarray) -> np.ndarray:
    """``ids`` sorted, each once: ``np.unique``'s result without its look for a masked array,
    which imports ``numpy.ma`` (~0.5 MiB that a scraper never uses otherwise)."""
    out = np.sort(ids)
    if out.size > 1:
        keep = np.empty(out.size, dtype=bool)
        keep[0] = True
        np.not_equal(out[1:], out[:-1], out=keep[1:])
        out = out[keep]
    return out


def _as_ids(ids: Iterable[int] | np.ndarray) -> np.ndarray:
    if isinstance(ids, np.ndarray):
        return ids.astype(np.int64, copy=False)
    return np.fromiter(ids, dtype=np.int64)


class TargetIds:
    """Which series ids are marked under which target."""

    __slots__ = ("_ids",)

    def __init__(self) -> None:
        self._ids: dict[str, np.ndarray] = {}

    def __len__(self) -> int:
        return sum(a.size for a in self._ids.values())

    def nbytes(self) -> int:
        """The bytes of the id arrays (the structure's size, dict aside)."""
        return sum(a.nbytes for a in self._ids.values())

    def contains(self, target: str, ids: Iterable[int] | np.ndarray) -> np.ndarray:
        """A bool per id of ``ids``: whether it is marked under ``target``."""
        want = _as_ids(ids)
        have = self._ids.get(target)
        if have is None or not have.size or not want.size:
            return np.zeros(want.size, dtype=bool)
        pos = np.searchsorted(have, want)
        np.minimum(pos, have.size - 1, out=pos)
        found: np.ndarray = have[pos] == want
        return found

    def has(self, target: str, series_id: int) -> bool:
        return bool(self.contains(target, np.array([series_id], dtype=np.int64))[0])

    def add(self, target: str, ids: Iterable[int] | np.ndarray) -> None:
        """Mark ``ids`` under ``target`` (ids marked already stay marked once)."""
        new = _distinct(_as_ids(ids))
        if not new.size:
            return
        have = self._ids.get(target)
        if have is None:
            self._ids[target] = _shared(new)
            return
        new = new[~self.contains(target, new)]
        if new.size:
            self._ids[target] = _shared(np.insert(have, np.searchsorted(have, new), new))
