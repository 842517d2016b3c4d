"""Recently read rollup chunks, kept with the row version they were read at.

A cold 24 h dashboard panel over 800 series reads 4,000 1-minute chunks of 7 columns (64 MB)
through SQLite, and a third of its time was SQLite assembling those blobs from their
overflow pages. A chunk of a closed window does not change (the rollup job rewrites it
only for late samples), so a store keeps the chunks it read here and asks SQLite only for
each chunk's key and row version (its ``rowid``: ``INSERT OR REPLACE`` gives a rewritten
chunk a new one, larger than every rowid in the table), which a covering index answers
without touching the blobs. A chunk whose version differs, or that was not kept, is read
again. A rowid comes back only after a ``DELETE`` (SQLite then gives the next row
max(rowid) + 1, which a deleted row may have held), so every statement that deletes or
updates final chunks in place bumps a generation in the database, in its transaction
(``sqlite_rollup.chunk_rows_changed``), and a read that finds another generation drops what
the cache holds (``ChunkCache.generation``). SQLite never keeps provisional chunks (not
aligned to their span): their ``DELETE`` at a seal needs no bump. Writers in other processes
need no other signal: the version and generation checks see their writes.
Cassandra's version is the chunk's ``writetime(c_ts)`` (every chunk write is an ``INSERT`` of
all its columns); the chunks not kept are read with their writetime, so a replica behind
another cannot leave an older chunk kept under a newer version. There provisional chunks are
kept too: the fresh pass inserts each once, never rewrites it, and the window's seal deletes
it (or its TTL expires it), so one that is gone is no longer among the keys a read asks for
(its entry, never asked for again, leaves by LRU).

The cache keeps at most ``max_bytes`` of chunk values, least recently used dropped first.
Entries are kept as the row tuples ``storage.rollup_chunks.read_many`` takes, for the
columns one read asked for; a read of other columns replaces them.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

# Rollup chunk values a store keeps by default (a 24 h rate panel over 800 series: 64 MB).
DEFAULT_MAX_BYTES = 128 << 20

Key = tuple[int, int]  # (series id, chunk start)


class ChunkCache:
    """Chunk rows ``(series id, start, data, *columns)`` by (series id, start), each with its
    row version and the column names it holds."""

    def __init__(self, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self.max_bytes = max_bytes
        # (version, column names, row, bytes, buckets: when every value is plain and of one length, else -1)
        self._entries: OrderedDict[Key, tuple[int, tuple[str, ...], tuple, int, int]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0
        # The store's chunk generation the entries were read at (None: not known yet).
        self.generation: object = None

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def nbytes(self) -> int:
        return self._bytes

    def lookup(
        self, keys: Sequence[tuple[int, int, int]], names: tuple[str, ...], buckets: list[int] | None = None
    ) -> tuple[list, list[int]]:
        """For ``(series id, start, version)`` keys: the kept rows (None where not kept at
        that version with the columns ``names``) and the indexes of those not kept.
        ``buckets``: each kept row's bucket count appended, when its values are all plain and
        of one length (else -1; ``rollup_chunks.read_many`` then need not check them)."""
        rows: list = []
        missing: list[int] = []
        with self._lock:
            get, touch = self._entries.get, self._entries.move_to_end
            for i, (sid, start, version) in enumerate(keys):
                e = get((sid, start))
                if e is None or e[0] != version or (e[1] is not names and e[1] != names):
                    missing.append(i)
                    rows.append(None)
                    continue
                touch((sid, start))
                rows.append(e[2])
                if buckets is not None:
                    buckets.append(e[4])
        self.hits += len(keys) - len(missing)
        self.misses += len(missing)
        return rows, missing

    def store(self, version: int, names: tuple[str, ...], row: tuple, nbytes: int | None = None) -> None:
        """Keep ``row`` (``(series id, start, data, *columns names)``) read at ``version``.
        ``nbytes``: the row's size, for a row of other values (a decoded block's arrays:
        ``sqlite_rollup``); its bucket count is then not known (-1)."""
        size = sum(len(v) for v in row[2:] if v is not None) if nbytes is None else nbytes
        if size > self.max_bytes:
            return
        key = (row[0], row[1])
        if nbytes is None:
            n = len(row[3]) if not row[2] and row[3] is not None else -1
            buckets = n // 8 if n >= 0 and n % 8 == 0 and all(v is not None and len(v) == n for v in row[4:]) else -1
        else:
            buckets = -1
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self._bytes -= old[3]
            self._entries[key] = (version, names, row, size, buckets)
            self._bytes += size
            while self._bytes > self.max_bytes:
                _, dropped = self._entries.popitem(last=False)
                self._bytes -= dropped[3]

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._bytes = 0

    def at_generation(self, generation: object) -> None:
        """Drop every entry unless they were read at ``generation`` (then keep them)."""
        if generation != self.generation:
            self.clear()
            self.generation = generation


def cache_of(owner: Any, key: Any, max_bytes: int) -> ChunkCache:
    """The ``ChunkCache`` a store (``owner``) keeps for ``key`` (a resolution: one per chunk
    table), made on first use or when ``max_bytes`` changed."""
    caches: dict[Any, ChunkCache] = owner.__dict__.setdefault("_chunk_caches", {})
    cache = caches.get(key)
    if cache is None or cache.max_bytes != max_bytes:
        cache = caches[key] = ChunkCache(max_bytes)
    return cache
