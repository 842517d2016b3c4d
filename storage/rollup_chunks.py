"""Rollup chunks: a series' 1-minute or 1-hour rows of a fixed, aligned span in one value.

A dashboard's 24 h panel over 100 hosts reads 1.15 million 1-minute rows; one stored row
per bucket makes the store's row handling (SQLite's per-row decoding, the Cassandra
driver's per-cell parsing) the cost of the query. A chunk packs the buckets of one series
whose start falls in ``[start, start + CHUNK_MS[resolution])`` into one bytes value:

    byte 0        format version (1)
    bytes 1..4    n, the number of buckets (uint32, little endian)
    n records     of 56 bytes: bucket start (int64 ms), then the six aggregates (float64)
                  in ``storage.base.AGGREGATES`` order, all little endian

Fixed-width records make reading cheap: the chunks of one series are joined by one bytes
join and seen by ``numpy.frombuffer`` as one record array whose fields are the columns (no
per-chunk, per-column copies: a 24 h read of 800 series is 800 joins, not 28,000 array
copies). Values are stored as their 64-bit patterns, so NaN payloads survive bit for bit.
*Provisional* chunks hold the 1-minute buckets of a window the rollup job has not closed
yet (its fresh pass, ``storage.rollup_job``): keyed by their first bucket's start, which is
never aligned to the span (an aligned one is written as a final chunk instead), inside one
span. Reading joins them with the final chunks; for an equal bucket start the final chunk
wins, then the provisional chunk with the later start. Usually no start repeats (the open
window's chunk follows the final ones): the chunks are then joined as stored, which a
24 h read of 800 series needs (sorting out overlaps record by record cost it 100 ms).

Chunks are not compressed: they are read far more often than written, and zlib would cost
more time than it saves here (measured: 38 us per 6 h chunk against 1 us). Writing a
bucket into a chunk that already holds others merges them (``merge``): the newer row wins
for an equal bucket start.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from storage.base import AGGREGATES, DAY_MS, HOUR_MS, Resolution
from storage.rollup import Rollup

VERSION = 1
CHUNK_MS = {Resolution.MINUTE: 6 * HOUR_MS, Resolution.HOUR: 8 * DAY_MS}
HEADER = 5
RECORD = np.dtype([("ts", "<i8")] + [(name, "<f8") for name in AGGREGATES])


class ChunkError(ValueError):
    """A chunk's bytes do not decode (corrupt or of an unknown version)."""


def chunk_span(resolution: Resolution) -> int:
    try:
        return CHUNK_MS[resolution]
    except KeyError:
        raise ValueError(f"no rollup chunks for resolution {resolution.value}") from None


def split(resolution: Resolution, rollup: Rollup) -> Iterator[tuple[int, Rollup]]:
    """``(chunk start, the buckets in that chunk)`` for every chunk ``rollup`` touches."""
    if not len(rollup):
        return
    span = chunk_span(resolution)
    keys = rollup.timestamps // span
    cuts = np.flatnonzero(keys[1:] != keys[:-1]) + 1
    bounds = [0, *cuts.tolist(), len(rollup)]
    for lo, hi in zip(bounds[:-1], bounds[1:], strict=True):
        ts = rollup.timestamps[lo:hi]
        yield int(keys[lo]) * span, Rollup(ts, *(getattr(rollup, n)[lo:hi] for n in AGGREGATES))


def encode(resolution: Resolution, start_ms: int, rollup: Rollup) -> bytes:
    """The chunk bytes of ``rollup`` (every bucket must start inside the chunk)."""
    n = len(rollup)
    ts = rollup.timestamps
    if n and (int(ts[0]) < start_ms or int(ts[-1]) >= start_ms + chunk_span(resolution)):
        raise ValueError(f"buckets outside the chunk starting at {start_ms}")
    if n > 1 and not bool(np.all(ts[1:] > ts[:-1])):
        raise ValueError("bucket starts must be strictly ascending")
    rec = np.empty(n, dtype=RECORD)
    rec["ts"] = ts
    for name in AGGREGATES:
        rec[name] = getattr(rollup, name)
    return bytes((VERSION,)) + n.to_bytes(4, "little") + rec.tobytes()


def _check(start_ms: int, data: bytes) -> None:
    if len(data) < HEADER or data[0] != VERSION:
        raise ChunkError(f"rollup chunk at {start_ms}: unknown format (version byte {data[:1]!r})")
    n = int.from_bytes(data[1:5], "little")
    if len(data) != HEADER + n * RECORD.itemsize:
        raise ChunkError(f"rollup chunk at {start_ms}: {len(data)} bytes for {n} buckets")


def _as_rollup(rec: np.ndarray) -> Rollup:
    return Rollup(rec["ts"], *(rec[name] for name in AGGREGATES))


def decode(start_ms: int, data: bytes) -> Rollup:
    """The buckets of one chunk (read-only views of ``data``)."""
    _check(start_ms, data)
    return _as_rollup(np.frombuffer(data, dtype=RECORD, offset=HEADER))


def is_provisional(resolution: Resolution, start_ms: int) -> bool:
    """Whether a chunk keyed ``start_ms`` is provisional (not aligned to the span)."""
    return start_ms % chunk_span(resolution) != 0


def read_series(chunks: list[tuple[int, bytes]], start_ms: int, end_ms: int, resolution: Resolution) -> Rollup:
    """One series' buckets starting in [start_ms, end_ms] from its ``(chunk start, bytes)``
    in ``start`` order: one join of the final chunks' records, columns are views of it;
    provisional chunks add their buckets the final ones lack."""
    for start, data in chunks:
        _check(start, data)
    if _ascending(chunks):
        # The common case, provisional chunks included (the open window's chunk follows the
        # final ones): no bucket start repeats, so the chunks join as they are.
        rec = _records(chunks)
    else:
        span = chunk_span(resolution)
        provisional = [c for c in chunks if c[0] % span]
        rec = _with_provisional(_records([c for c in chunks if not c[0] % span]), _records(provisional))
    ts = rec["ts"]
    lo = int(np.searchsorted(ts, start_ms, "left"))
    hi = int(np.searchsorted(ts, end_ms, "right"))
    return _as_rollup(rec[lo:hi])


def _ascending(chunks: list[tuple[int, bytes]]) -> bool:
    """Whether the chunks' buckets, taken in the order given, have strictly ascending starts
    (each chunk's first bucket after the previous chunk's last): read from the bytes, as
    chunks are sorted inside."""
    prev = None
    for _, data in chunks:
        if len(data) == HEADER:
            continue
        first = int.from_bytes(data[HEADER : HEADER + 8], "little", signed=True)
        if prev is not None and first <= prev:
            return False
        last = len(data) - RECORD.itemsize  # the last record's offset; its bucket start first
        prev = int.from_bytes(data[last : last + 8], "little", signed=True)
    return True


def _records(chunks: list[tuple[int, bytes]]) -> np.ndarray:
    if not chunks:
        return np.empty(0, dtype=RECORD)
    if len(chunks) == 1:
        return np.frombuffer(chunks[0][1], dtype=RECORD, offset=HEADER)
    return np.frombuffer(b"".join(memoryview(d)[HEADER:] for _, d in chunks), dtype=RECORD)


def _with_provisional(final: np.ndarray, prov: np.ndarray) -> np.ndarray:
    """Final records plus the provisional ones for bucket starts no final record has (of
    overlapping provisional chunks, in start order, the later one), in time order."""
    # np.unique keeps the first of equal values: reversed, that is the later chunk's record.
    _, first = np.unique(prov["ts"][::-1], return_index=True)
    prov = prov[::-1][first]
    f_ts = final["ts"]
    if f_ts.size:
        at = np.minimum(np.searchsorted(f_ts, prov["ts"]), f_ts.size - 1)
        prov = prov[f_ts[at] != prov["ts"]]
    if not prov.size:
        return final
    joined = np.concatenate([final, prov])
    if f_ts.size and int(prov["ts"][0]) < int(f_ts[-1]):
        joined = joined[np.argsort(joined["ts"], kind="stable")]
    return joined


def merge(old: Rollup, new: Rollup) -> Rollup:
    """The buckets of both; for an equal bucket start the one from ``new``."""
    if not len(old):
        return new
    if not len(new):
        return old
    ts = np.concatenate([new.timestamps, old.timestamps])
    order = np.argsort(ts, kind="stable")  # ``new`` first among equals
    ts = ts[order]
    keep = np.ones(ts.shape[0], dtype=bool)
    keep[1:] = ts[1:] != ts[:-1]
    pick = order[keep]
    return Rollup(
        ts[keep], *(np.concatenate([getattr(new, n), getattr(old, n)])[pick] for n in AGGREGATES)
    )
