"""Rollup chunks: a series' 1-minute or 1-hour rows of a fixed, aligned span in one value.

A dashboard's 24 h panel over 100 hosts reads 1.15 million 1-minute rows; one stored row
per bucket makes the store's row handling (SQLite's per-row decoding, the Cassandra
driver's per-cell parsing) the cost of the query. A chunk packs the buckets of one series
whose start falls in ``[start, start + CHUNK_MS[resolution])``. Chunks are written in column
form (``encode_columns``: each column its own stored value, so a query reads only the
aggregates it needs; see below). Before that, a chunk was one bytes value, still read:

    byte 0        format version (1)
    bytes 1..4    n, the number of buckets (uint32, little endian)
    n records     of 56 bytes: bucket start (int64 ms), then the six aggregates (float64)
                  count, sum, min, max, last, increase, all little endian

Reading sees each stored column through ``numpy.frombuffer`` (no copy) and joins a series'
chunks with one concatenation per column it asked for. Values are stored as their 64-bit
patterns, so NaN payloads survive bit for bit. Chunks written before the rate aggregates
(``storage.base.ADDED_IN_V5``) existed lack their columns: reads give NaN for them.
*Provisional* chunks hold the 1-minute buckets of a window the rollup job has not closed
yet (its fresh pass, ``storage.rollup_job``): keyed by their first bucket's start, which is
never aligned to the span (an aligned one is written as a final chunk instead), inside one
span. Reading joins them with the final chunks; for an equal bucket start the final chunk
wins, then the provisional chunk with the later start. Usually no start repeats (the open
window's chunk follows the final ones): the chunks are then joined as stored, which a
24 h read of 800 series needs (sorting out overlaps record by record cost it 100 ms).
*Pieces* are 1-hour chunks keyed by their first bucket's start inside a span: a window's
buckets the Cassandra store writes apart from the span's chunk, unread, until a later write
merges them into it (``storage.cassandra_rollup``). They are newer than the chunk: for an
equal bucket start of 1-hour chunks the later key wins (usually none repeats: joined as stored).

Chunks are not compressed with a general codec: they are read far more often than written,
and zlib would cost more time than it saves here (measured: 38 us per 6 h chunk against 1 us).
A column's value may instead be in a *compact form* (``compact_columns``, below: regular
bucket starts, a constant, small integers, sample times a few ms after the bucket start -
most of a 1m chunk's columns), which readers make plain again with NumPy calls per column
and form for all chunks of a read at once (``expand_columns``); the Cassandra store writes
them (the rollup job's chunk writes were most of its cost). Writing a bucket into a chunk
that already holds others merges them (``merge``): the newer row wins for an equal bucket start.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from operator import itemgetter
from typing import Any

import numpy as np

from storage.base import (
    ADDED_IN_V5,
    AGGREGATES,
    CHUNK_COLUMNS,
    DAY_MS,
    HOUR_MS,
    STORED_CHUNK_COLUMNS,
    Resolution,
)
from storage.rollup import Rollup

VERSION = 1
CHUNK_MS = {Resolution.MINUTE: 6 * HOUR_MS, Resolution.HOUR: 8 * DAY_MS}
HEADER = 5
RECORD_AGGREGATES = ("count", "sum", "min", "max", "last", "increase")
RECORD = np.dtype([("ts", "<i8")] + [(name, "<f8") for name in RECORD_AGGREGATES])


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
    first = int(rollup.timestamps[0]) // span
    if first == int(rollup.timestamps[-1]) // span:  # (a window's buckets: usually one chunk)
        yield first * span, rollup
        return
    keys = rollup.timestamps // span
    cuts = np.flatnonzero(keys[1:] != keys[:-1]) + 1
    bounds = [0, *cuts.tolist(), len(rollup)]
    for lo, hi in zip(bounds[:-1], bounds[1:], strict=True):
        ts = rollup.timestamps[lo:hi]
        yield int(keys[lo]) * span, Rollup(ts, *(getattr(rollup, n)[lo:hi] for n in AGGREGATES))


def _check_buckets(resolution: Resolution, start_ms: int, ts: np.ndarray) -> None:
    n = ts.shape[0]
    if n and (int(ts[0]) < start_ms or int(ts[-1]) >= start_ms + chunk_span(resolution)):
        raise ValueError(f"buckets outside the chunk starting at {start_ms}")
    if n > 1 and not bool(np.all(ts[1:] > ts[:-1])):
        raise ValueError("bucket starts must be strictly ascending")


def encode(resolution: Resolution, start_ms: int, rollup: Rollup) -> bytes:
    """The record bytes (version 1) of ``rollup`` (every bucket must start inside the chunk;
    the rate aggregates are not kept: read back, they are NaN)."""
    n = len(rollup)
    ts = rollup.timestamps
    _check_buckets(resolution, start_ms, ts)
    rec = np.empty(n, dtype=RECORD)
    rec["ts"] = ts
    for name in RECORD_AGGREGATES:
        rec[name] = getattr(rollup, name)
    return bytes((VERSION,)) + n.to_bytes(4, "little") + rec.tobytes()


def _check(start_ms: int, data: bytes) -> None:
    if len(data) < HEADER or data[0] != VERSION:
        raise ChunkError(f"rollup chunk at {start_ms}: unknown format (version byte {data[:1]!r})")
    n = int.from_bytes(data[1:5], "little")
    if len(data) != HEADER + n * RECORD.itemsize:
        raise ChunkError(f"rollup chunk at {start_ms}: {len(data)} bytes for {n} buckets")


def _as_rollup(rec: np.ndarray) -> Rollup:
    return Rollup.from_columns(rec["ts"], {name: rec[name] for name in RECORD_AGGREGATES})


def _unknown(n: int) -> np.ndarray:
    """The column of an aggregate a chunk was written without (``ADDED_IN_V5``): NaN."""
    return np.full(n, np.nan)


def decode(start_ms: int, data: bytes) -> Rollup:
    """The buckets of one chunk (read-only views of ``data``)."""
    _check(start_ms, data)
    return _as_rollup(np.frombuffer(data, dtype=RECORD, offset=HEADER))


def is_provisional(resolution: Resolution, start_ms: int) -> bool:
    """Whether a chunk keyed ``start_ms`` is provisional (not aligned to the span)."""
    return start_ms % chunk_span(resolution) != 0


# -- column form --------------------------------------------------------------------------
#
# Chunks are written in *column form*: each column its own stored value (``ts`` as int64,
# the aggregates as float64, all little endian, same length), so a read asks the store for
# the columns its query needs - a rate() panel reads ``ts`` and ``increase``, 16 of the 56
# bytes per bucket. A stored chunk is then ``Payload``: the record bytes above (version 1,
# written before column form and still read) or a dict of column name -> bytes.

COLUMNS = CHUNK_COLUMNS
# Each column's name in the stores' chunk tables (SQLite and Cassandra alike).
STORED = STORED_CHUNK_COLUMNS
Payload = bytes | dict[str, bytes]


def encode_columns(resolution: Resolution, start_ms: int, rollup: Rollup) -> dict[str, bytes]:
    """The column-form values of ``rollup`` (every bucket must start inside the chunk)."""
    _check_buckets(resolution, start_ms, rollup.timestamps)
    out = {"ts": np.ascontiguousarray(rollup.timestamps, dtype="<i8").tobytes()}
    for name in AGGREGATES:
        out[name] = np.ascontiguousarray(getattr(rollup, name), dtype="<f8").tobytes()
    return out


def payload(data: bytes | None, names: Sequence[str], values: Sequence[bytes | None]) -> Payload:
    """A stored chunk from its record bytes (``data``, empty in column form) and the values
    of its columns ``names`` as a store returned them."""
    if data:
        return data
    if any(v is not None and len(v) % 8 for v in values):  # compact values (see below): made plain
        got = expand_columns(names, [[v] for v in values])
        return {k: bytes(v[0]) for k, v in zip(names, got, strict=True) if v[0] is not None}
    return {k: v for k, v in zip(names, values, strict=True) if v is not None}


def payloads(rows: Sequence[Sequence], at: int) -> list[Payload]:
    """``payload`` of many stored rows (``row[at]`` the record bytes, then the values of
    ``COLUMNS``), compact values made plain for all rows at once."""
    if not rows:
        return []
    columns = [[r[at + 1 + k] for r in rows] for k in range(len(COLUMNS))]
    if _any_compact(columns):
        columns = expand_columns(COLUMNS, columns, as_bytes=True)
    return [r[at] or {k: v for k, v in zip(COLUMNS, values, strict=True) if v is not None}
            for r, values in zip(rows, zip(*columns, strict=True), strict=True)]


def plain_rows(rows: list[tuple], at: int, names: Sequence[str]) -> list[tuple]:
    """Stored rows whose values of columns ``names`` (``names[0]`` ``ts``) start at ``row[at]``,
    with compact values made plain bytes (for all rows at once); ``rows`` itself when none is."""
    if not rows:
        return rows
    columns = [[r[at + k] for r in rows] for k in range(len(names))]
    if not _any_compact(columns):
        return rows
    columns = expand_columns(names, columns, as_bytes=True)
    return [(*r[:at], *values) for r, values in zip(rows, zip(*columns, strict=True), strict=True)]


def bucket_count(start_ms: int, chunk: Payload) -> int:
    if isinstance(chunk, dict):
        return len(chunk.get("ts") or b"") // 8
    _check(start_ms, chunk)
    return int.from_bytes(chunk[1:5], "little")


def decode_payload(start_ms: int, chunk: Payload) -> Rollup:
    """All buckets of one stored chunk (to merge into it)."""
    if isinstance(chunk, dict):
        ts, cols = _views(start_ms, chunk, AGGREGATES)
        return Rollup(ts, *(cols[n] for n in AGGREGATES))
    return decode(start_ms, chunk)


def _views(start_ms: int, chunk: Payload, names: tuple[str, ...]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """``(ts, {name: column})`` views of one stored chunk; ChunkError when a column is
    missing or of another length."""
    if not isinstance(chunk, dict):
        _check(start_ms, chunk)
        rec = np.frombuffer(chunk, dtype=RECORD, offset=HEADER)
        return rec["ts"], {n: rec[n] if n in RECORD_AGGREGATES else _unknown(rec.shape[0]) for n in names}
    ts_bytes = chunk.get("ts")
    if ts_bytes is None or len(ts_bytes) % 8:
        raise ChunkError(f"rollup chunk at {start_ms}: no bucket starts")
    ts = np.frombuffer(ts_bytes, dtype="<i8")
    cols = {}
    for n in names:
        col = chunk.get(n)
        if col is None and n in ADDED_IN_V5:
            cols[n] = _unknown(ts.size)
            continue
        if col is None or len(col) != len(ts_bytes):
            raise ChunkError(f"rollup chunk at {start_ms}: column {n} missing or not {ts.size} values")
        cols[n] = np.frombuffer(col, dtype="<f8")
    return ts, cols


def read_columns(
    chunks: list[tuple[int, Payload]],
    start_ms: int,
    end_ms: int,
    resolution: Resolution,
    names: tuple[str, ...] = AGGREGATES,
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """One series' bucket starts in [start_ms, end_ms] and its columns ``names``, from its
    stored chunks in ``start`` order (either form); provisional chunks add the buckets the
    final ones lack. Of 1h chunks and pieces (keys not aligned to the span, written apart by
    the Cassandra rollup job's live seals), the later key wins an equal bucket start."""
    if all(isinstance(c, dict) for _, c in chunks) and _ascending_columns(chunks, names):  # type: ignore[arg-type]
        # The common case: column-form chunks, no bucket start repeating (provisional chunks
        # included: the open window's follows the final ones). One join per column: a 1 y
        # read of 800 series is 37,000 chunks, and NumPy calls per chunk cost 0.1 s.
        def joined(name: str, dtype: str) -> np.ndarray:
            parts = [_column_bytes(c, name) for _, c in chunks]  # type: ignore[arg-type]  # all dicts: checked above
            return np.frombuffer(parts[0] if len(parts) == 1 else b"".join(parts), dtype=dtype)

        ts = joined("ts", "<i8")
        lo = int(np.searchsorted(ts, start_ms, "left"))
        hi = int(np.searchsorted(ts, end_ms, "right"))
        return ts[lo:hi], {n: joined(n, "<f8")[lo:hi] for n in names}
    views = [(start, *_views(start, c, names)) for start, c in chunks]
    if _ascending_views(views):
        # The common case, provisional chunks included (the open window's chunk follows the
        # final ones): no bucket start repeats, so the chunks join as they are.
        if len(views) == 1:
            ts, cols = views[0][1], views[0][2]
        else:
            ts = np.concatenate([v[1] for v in views]) if views else np.zeros(0, dtype=np.int64)
            cols = {n: np.concatenate([v[2][n] for v in views]) if views else np.zeros(0) for n in names}
    else:
        span = chunk_span(resolution)
        dtype = np.dtype([("ts", "<i8")] + [(n, "<f8") for n in names])

        def records(part: list) -> np.ndarray:
            out = np.empty(sum(v[1].size for v in part), dtype=dtype)
            at = 0
            for _, t, c in part:
                out["ts"][at : at + t.size] = t
                for n in names:
                    out[n][at : at + t.size] = c[n]
                at += t.size
            return out

        if resolution is Resolution.HOUR:  # 1h pieces: the later key wins, the chunk's own included
            rec = _with_provisional(records([]), records(views))
        else:
            rec = _with_provisional(records([v for v in views if not v[0] % span]), records([v for v in views if v[0] % span]))
        ts, cols = rec["ts"], {n: rec[n] for n in names}
    lo = int(np.searchsorted(ts, start_ms, "left"))
    hi = int(np.searchsorted(ts, end_ms, "right"))
    return ts[lo:hi], {n: c[lo:hi] for n, c in cols.items()}


def read_many(
    rows: Sequence[Sequence], start_ms: int, end_ms: int, resolution: Resolution, names: tuple[str, ...],
    buckets: np.ndarray | None = None,
) -> dict[int, tuple[np.ndarray, dict[str, np.ndarray]]]:
    """Many series' bucket starts in [start_ms, end_ms] and columns ``names`` (as
    ``read_columns`` gives each), from stored chunk rows ``(series id, chunk start, record
    bytes, ts, *names)`` grouped by series, each series' rows in start order. Column-form
    chunks whose bucket starts ascend (the common case) are joined with one ``bytes.join``
    per column for all series, and each series' part is a slice of the joined column: a 24 h
    read of 800 series is 4,800 chunks, and NumPy or dict work per chunk or per series cost
    it 50 ms. The other series (record bytes, a column missing or of another length,
    repeated bucket starts) go through ``read_columns``. ``buckets``: each row's bucket count
    when known that its values are all plain and of that length (a chunk cache's rows: -1
    where not), so they need not be checked."""
    if not rows:
        return {}
    cols = list(zip(*rows, strict=True))
    sids, blobs = cols[0], [list(c) for c in cols[3:]]
    slow: set[int] = set()
    if any(cols[2]):  # record-form chunks (written before column form)
        slow.update(sid for sid, data in zip(sids, cols[2], strict=True) if data)
    known = buckets is not None and buckets.size == len(rows) and bool((buckets >= 0).all())
    lens = 8 * buckets if known and buckets is not None else _plain_lengths(blobs)
    if lens is None:  # (else plain values of equal lengths, the usual case: nothing to sort out)
        if _any_compact(blobs):  # compact values (see below): made plain for all rows at once
            blobs = expand_columns(("ts", *names), blobs)
        sizes: list[int] = []
        for j, column in enumerate(blobs):
            if None in column:  # (a column the chunk was written without)
                slow.update(sid for sid, v in zip(sids, column, strict=True) if v is None)
                column = blobs[j] = [v or b"" for v in column]
            got = list(map(len, column))
            if j == 0:
                sizes = got
                slow.update(sid for sid, n in zip(sids, got, strict=True) if n % 8)
            elif got != sizes:
                slow.update(sid for sid, n, want in zip(sids, got, sizes, strict=True) if n != want)
        lens = np.array(sizes, dtype=np.int64)
    if slow:
        return _split_slow(rows, slow, start_ms, end_ms, resolution, names)
    ts = np.frombuffer(b"".join(blobs[0]), dtype="<i8")
    at = np.zeros(len(rows) + 1, dtype=np.int64)
    np.cumsum(lens // 8, out=at[1:])
    sid_arr = np.fromiter(sids, dtype=np.int64, count=len(sids))
    new_series = np.ones(len(rows), dtype=bool)
    new_series[1:] = sid_arr[1:] != sid_arr[:-1]
    # A chunk's own bucket starts ascend (encode_columns checks): a series' ascend unless a
    # chunk's first is not above the last of the series' chunk before it (overlapping
    # provisional chunks): that series goes through read_columns, which sorts it out.
    full = np.flatnonzero(lens)
    if full.size > 1:
        prev_last, first = ts[at[full[:-1] + 1] - 1], ts[at[full[1:]]]
        down = full[1:][(first <= prev_last) & (sid_arr[full[1:]] == sid_arr[full[:-1]])]
        if down.size:
            slow.update(sid_arr[down].tolist())
            return _split_slow(rows, slow, start_ms, end_ms, resolution, names)
    heads = np.flatnonzero(new_series)
    at_list = at.tolist()
    source = ChunkRows(dict(zip(names, blobs[1:], strict=True)), at_list)
    # ``last`` (a rollup read's sample values, ``storage.base.bucket_values``) joined for all
    # series at once; the other columns when a reader asks (``ChunkColumns``, ``join_columns``).
    last = np.frombuffer(b"".join(source.blobs["last"]), dtype="<f8") if "last" in names else None
    # Each series' buckets a:b in [start_ms, end_ms]: its first bucket, plus those of its rows
    # before start_ms (``_rows_before``), and so for end_ms: for all series at once.
    first_at = at[heads]
    ab = np.stack([first_at + np.add.reduceat(_rows_before(ts, at, start_ms, resolution.step_ms, False), heads),
                   first_at + np.add.reduceat(_rows_before(ts, at, end_ms, resolution.step_ms, True), heads)],
                  axis=1) if heads.size else np.zeros((0, 2), dtype=np.int64)
    cut: list[tuple[int, int]] = ab.tolist()
    # Each series' chunk rows r0:r1 holding its buckets a:b, the bytes cut from the first
    # row's values and the last row's length (-1: whole), for all series at once.
    r0 = np.searchsorted(at, ab[:, 0], "right") - 1
    r1 = np.maximum(np.searchsorted(at, ab[:, 1], "left"), r0)
    some = r1 > r0
    head = np.where(some, 8 * (ab[:, 0] - at[r0]), 0)
    tail = np.where(some & (at[r1] > ab[:, 1]), 8 * (ab[:, 1] - at[np.maximum(r1 - 1, 0)]), -1)
    out: dict[int, tuple[np.ndarray, dict[str, np.ndarray]]] = {}
    for k, (a, b), rows_from, rows_to, h, t in zip(
        heads.tolist(), cut, r0.tolist(), r1.tolist(), head.tolist(), tail.tolist(), strict=True
    ):
        series_cols = ChunkColumns(source, rows_from, rows_to, h, None if t < 0 else t, names)
        if last is not None:
            dict.__setitem__(series_cols, "last", last[a:b])
        out[sids[k]] = ts[a:b], series_cols
    return out


def _rows_before(ts: np.ndarray, at: np.ndarray, t: int, step: int, inclusive: bool) -> np.ndarray:
    """Per chunk row (its bucket starts ``ts[at[r]:at[r + 1]]``, ascending): how many are
    before ``t`` (``inclusive``: at or before it). A row of buckets one ``step`` apart (the
    usual) that ``t`` falls inside is counted by arithmetic, another by a search."""
    n = np.diff(at)
    full = n > 0
    first = np.where(full, ts[np.minimum(at[:-1], max(ts.size - 1, 0))], 0) if ts.size else np.zeros(n.size, dtype=np.int64)
    last = np.where(full, ts[np.maximum(at[1:] - 1, 0)], 0) if ts.size else np.zeros(n.size, dtype=np.int64)
    bound = t + 1 if inclusive else t  # (count the buckets before ``bound``)
    out = np.where(last < bound, n, 0)
    inside = np.flatnonzero(full & (first < bound) & (last >= bound))
    if inside.size:
        regular = last[inside] - first[inside] == (n[inside] - 1) * step
        out[inside] = np.where(regular, -((first[inside] - bound) // step), 0)
        for r in inside[~regular].tolist():
            out[r] = int(np.searchsorted(ts[at[r] : at[r + 1]], bound, "left"))
    return out


@dataclass(frozen=True, slots=True)
class ChunkRows:
    """The column values of a read's chunk rows (``blobs[name][row]``) and where each row's
    buckets start among all the rows' (``at``; one more entry: the total)."""

    blobs: dict[str, Sequence[bytes]]
    at: list[int]


class ChunkColumns(dict[str, np.ndarray]):
    """One series' columns ``names`` from a read's chunk rows (``read_many``): buckets
    ``a:b`` of all the rows' buckets. A column is joined from the chunks' values when first
    read; ``join_columns`` places many series' columns in one array straight from the
    chunks' values: one copy, where a joined column of every series and then the reader's
    concatenation were two (a 24 h panel over 800 series: 1.15 M buckets a column)."""

    __slots__ = ("source", "rows", "head", "tail", "names")

    def __init__(self, source: ChunkRows, r0: int, r1: int, head: int, tail: int | None, names: tuple[str, ...]) -> None:
        super().__init__()
        # rows r0:r1; bytes cut from the first row's values, the last row's length (None: whole)
        self.source, self.rows, self.head, self.tail, self.names = source, (r0, r1), head, tail, names

    def extend_buffers(self, name: str, out: list) -> None:
        """Append column ``name``'s values to ``out`` as buffers (the chunks' values, the
        first and the last cut to the series' buckets)."""
        if dict.__contains__(self, name):
            out.append(np.ascontiguousarray(dict.__getitem__(self, name)).data)
            return
        if name not in self.names:
            raise KeyError(name)
        r0, r1 = self.rows
        if r1 <= r0:
            return
        seg: Sequence[bytes | memoryview] = self.source.blobs[name][r0:r1]
        if self.head or self.tail is not None:
            seg = list(seg)
            if self.tail is not None:
                seg[-1] = memoryview(seg[-1])[: self.tail]
            if self.head:
                seg[0] = memoryview(seg[0])[self.head :]
        out += seg

    def __missing__(self, name: str) -> np.ndarray:
        buffers: list = []
        self.extend_buffers(name, buffers)
        col = np.frombuffer(b"".join(buffers), dtype="<f8")
        dict.__setitem__(self, name, col)
        return col

    def __contains__(self, name: object) -> bool:
        return name in self.names

    def __iter__(self) -> Iterator[str]:
        return iter(self.names)

    def __len__(self) -> int:
        return len(self.names)

    def keys(self) -> tuple[str, ...]:  # type: ignore[override]  # the names, read or not
        return self.names

    def items(self) -> list[tuple[str, np.ndarray]]:  # type: ignore[override]
        return [(k, self[k]) for k in self.names]

    def values(self) -> list[np.ndarray]:  # type: ignore[override]
        return [self[k] for k in self.names]

    def get(self, name: str, default: np.ndarray | None = None) -> np.ndarray | None:  # type: ignore[override]
        return self[name] if name in self.names else default

    def copy(self) -> dict[str, np.ndarray]:
        return dict(self.items())

    def __reduce__(self) -> tuple:
        return dict, (dict(self.items()),)


def join_columns(name: str, parts: Sequence[tuple[Mapping[str, np.ndarray] | None, memoryview | None]]) -> np.ndarray:
    """Float64 column ``name`` of series one after another, each its columns' values
    (``ChunkColumns``: straight from the chunks' values; else arrays) then ``extra`` (the
    bytes of rows made elsewhere): one copy, into a writable array."""
    buffers: list = []
    append, extend = buffers.append, buffers.extend
    for cols, extra in parts:
        if type(cols) is ChunkColumns and not dict.__contains__(cols, name):
            if name not in cols.names:
                raise KeyError(name)
            r0, r1 = cols.rows
            if r1 > r0:
                values = cols.source.blobs[name]
                head, tail = cols.head, cols.tail
                if r1 - r0 == 1:
                    one = values[r0]
                    append(memoryview(one)[head:tail] if head or tail is not None else one)
                else:
                    append(memoryview(values[r0])[head:] if head else values[r0])
                    extend(values[r0 + 1 : r1 - 1])
                    append(memoryview(values[r1 - 1])[:tail] if tail is not None else values[r1 - 1])
        elif cols is not None:
            append(np.ascontiguousarray(cols[name], dtype="<f8").data)
        if extra is not None:
            append(extra)
    joined = bytearray().join(buffers)
    return np.frombuffer(joined, dtype="<f8") if joined else np.zeros(0)


@dataclass(frozen=True, slots=True)
class JoinPlan:
    """How series one after another, each its stored columns (``ChunkColumns`` of one read)
    then rows made elsewhere, join column by column (``join_plan``, ``join_planned``): the
    buffers ``pick`` takes, in order, from a list of the read's chunk values of the column
    followed by the chunk values cut to a series' buckets (``cuts``: row, first byte, end
    byte or None) and the made rows (``made``: byte ranges)."""

    source: ChunkRows | None
    pick: Callable[[Sequence[Any]], tuple]
    cuts: list[tuple[int, int, int | None]]
    made: list[tuple[int, int]]


def join_plan(parts: Sequence[tuple[Mapping[str, np.ndarray] | None, int, int]]) -> JoinPlan | None:
    """The ``JoinPlan`` of ``parts`` (``(cols, a, b)``: a series' stored columns or None, then
    its made rows ``a:b``), found once for all the columns a reader joins; None when a part
    is not a ``ChunkColumns`` or the parts are of several reads."""
    source = None
    for cols, _, _ in parts:
        if cols is not None:
            if type(cols) is not ChunkColumns or (source is not None and cols.source is not source):
                return None
            source = cols.source
    cuts: list[tuple[int, int, int | None]] = []
    made: list[tuple[int, int]] = []
    order: list[tuple[int, int]] = []  # (0: a chunk row, 1: a cut value, 2: made rows; index)
    for cols, a, b in parts:
        if cols is not None:
            r0, r1 = cols.rows  # type: ignore[attr-defined]
            head, tail = cols.head, cols.tail  # type: ignore[attr-defined]
            if r1 - r0 == 1:
                if head or tail is not None:
                    order.append((1, len(cuts)))
                    cuts.append((r0, head, tail))
                else:
                    order.append((0, r0))
            elif r1 > r0:
                if head:
                    order.append((1, len(cuts)))
                    cuts.append((r0, head, None))
                else:
                    order.append((0, r0))
                order.extend((0, r) for r in range(r0 + 1, r1 - 1))
                if tail is not None:
                    order.append((1, len(cuts)))
                    cuts.append((r1 - 1, 0, tail))
                else:
                    order.append((0, r1 - 1))
        if b > a:
            order.append((2, len(made)))
            made.append((8 * a, 8 * b))
    rows = len(source.at) - 1 if source is not None else 0
    base = (0, rows, rows + len(cuts))
    fixed = [base[kind] + k for kind, k in order]
    pick: Callable[[Sequence[Any]], tuple] = (
        itemgetter(*fixed) if len(fixed) > 1 else lambda seq: tuple(seq[i] for i in fixed)
    )
    return JoinPlan(source, pick, cuts, made)


def join_planned(plan: JoinPlan, name: str, made: np.ndarray) -> np.ndarray:
    """Column ``name`` of ``plan``'s parts (the made rows from ``made``), as ``join_columns``
    gives it: one copy, the list of buffers made with a few C-level calls, not per part."""
    values: list[Any] = list(plan.source.blobs[name]) if plan.source is not None else []
    values.extend([memoryview(values[r])[head:tail] for r, head, tail in plan.cuts])
    made_bytes = np.ascontiguousarray(made, dtype="<f8").data.cast("B")
    values.extend([made_bytes[a:b] for a, b in plan.made])
    joined = bytearray().join(plan.pick(values))
    return np.frombuffer(joined, dtype="<f8") if joined else np.zeros(0)


def _plain_lengths(columns: Sequence[Sequence[Any]]) -> np.ndarray | None:
    """The values' byte lengths when each row's values in every column have one length, a
    multiple of 8 (plain values, none missing: 8 x the row's buckets); else None. One
    ``len`` pass per column, where the compact check and the length checks took two."""
    first: np.ndarray | None = None
    for column in columns:
        try:
            lens = np.fromiter(map(len, column), dtype=np.int64, count=len(column))
        except TypeError:  # (None: a column a chunk was written without)
            return None
        if first is None:
            if (lens & 7).any():
                return None
            first = lens
        elif not np.array_equal(lens, first):
            return None
    return first


def _any_compact(columns: Sequence[Sequence[Any]]) -> bool:
    for column in columns:
        try:
            lens = np.fromiter(map(len, column), dtype=np.int64, count=len(column))
        except TypeError:  # (None: a column a chunk was written without)
            lens = np.fromiter((len(v) if v is not None else 0 for v in column), dtype=np.int64, count=len(column))
        if bool((lens & 7).any()):
            return True
    return False


def _split_slow(
    rows: Sequence[Sequence], slow: set[int], start_ms: int, end_ms: int, resolution: Resolution, names: tuple[str, ...]
) -> dict[int, tuple[np.ndarray, dict[str, np.ndarray]]]:
    """``read_many`` with the series ``slow`` read one by one (``read_columns``)."""
    wanted = ("ts", *names)
    found: dict[int, list[tuple[int, Payload]]] = {sid: [] for sid in slow}
    fast = []
    for r in rows:
        if r[0] in slow:
            found[r[0]].append((r[1], payload(r[2], wanted, r[3:])))
        else:
            fast.append(r)
    out = read_many(fast, start_ms, end_ms, resolution, names)
    for sid, ps in found.items():
        out[sid] = read_columns(ps, start_ms, end_ms, resolution, names)
    return out


def _ascending_columns(chunks: list[tuple[int, dict[str, bytes]]], names: tuple[str, ...]) -> bool:
    """Whether column-form chunks, in the order given, have strictly ascending bucket starts
    (read from the bytes); ChunkError when a column is missing or of another length."""
    prev = None
    for start, c in chunks:
        ts = c.get("ts")
        if ts is None or len(ts) % 8:
            raise ChunkError(f"rollup chunk at {start}: no bucket starts")
        for n in names:
            col = c.get(n)
            if col is None and n in ADDED_IN_V5:
                continue
            if col is None or len(col) != len(ts):
                raise ChunkError(f"rollup chunk at {start}: column {n} missing or not {len(ts) // 8} values")
        if not ts:
            continue
        first = int.from_bytes(ts[:8], "little", signed=True)
        if prev is not None and first <= prev:
            return False
        prev = int.from_bytes(ts[-8:], "little", signed=True)
    return True


def _column_bytes(chunk: dict[str, bytes], name: str) -> bytes:
    """A column-form chunk's column ``name``: NaNs for one it was written without."""
    col = chunk.get(name)
    if col is None:
        return _unknown(len(chunk["ts"]) // 8).astype("<f8").tobytes()
    return col


def _ascending_views(views: list[tuple[int, np.ndarray, dict]]) -> bool:
    prev = None
    for _, ts, _cols in views:
        if not ts.size:
            continue
        if prev is not None and int(ts[0]) <= prev:
            return False
        prev = int(ts[-1])
    return True


def read_series(chunks: list[tuple[int, Payload]], start_ms: int, end_ms: int, resolution: Resolution) -> Rollup:
    """One series' buckets (every aggregate) starting in [start_ms, end_ms]; see ``read_columns``."""
    ts, cols = read_columns(chunks, start_ms, end_ms, resolution)
    return Rollup(ts, *(cols[n] for n in AGGREGATES))


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


# -- many series at once (the rollup job's writes) ------------------------------------------

Piece = tuple[int, int, int, dict[str, bytes]]  # (index of the rollup, chunk start, last bucket, columns)


def encode_columns_many(
    resolution: Resolution, rollups: Sequence[Rollup], joined: tuple[Rollup, np.ndarray] | None = None
) -> list[Piece]:
    """``encode_columns`` of every (rollup, chunk) that ``split`` gives, in that order, with
    NumPy calls per column rather than per chunk: each column of all rollups is laid out
    once and every chunk's value is a slice of it. ``joined``: the rollups already as one
    (all their buckets, and offsets: rollup ``i`` is rows ``bounds[i]:bounds[i + 1]``)."""
    table = encode_columns_table(resolution, rollups, joined)
    if table is None:
        return []
    owners, starts, _firsts, lasts, columns = table
    return [
        (o, k, t, dict(zip(COLUMNS, values, strict=True)))
        for o, k, t, *values in zip(owners, starts, lasts, *columns, strict=True)
    ]


def encode_columns_table(
    resolution: Resolution, rollups: Sequence[Rollup], joined: tuple[Rollup, np.ndarray] | None = None
) -> tuple[list[int], list[int], list[int], list[int], list[list[bytes]]] | None:
    """What ``encode_columns_many`` gives, as columns: each (rollup, chunk) piece's rollup
    index, chunk start, first and last bucket, and per column of ``COLUMNS`` the pieces'
    values (a store writing a row per piece zips them without a dict per piece); None
    when there are no buckets. With ``joined``, ``rollups`` is not read (a lazy
    ``RollupRowsList`` need not make its items: pass ``()``)."""
    span = chunk_span(resolution)
    if joined is not None:
        flat, bounds = joined
        sizes = np.diff(bounds)
        ts = np.ascontiguousarray(flat.timestamps, dtype="<i8")
    elif not rollups:
        return None
    else:
        sizes = np.fromiter((len(r) for r in rollups), dtype=np.int64, count=len(rollups))
        ts = np.concatenate([np.asarray(r.timestamps, dtype="<i8") for r in rollups])
    if not ts.size:
        return None
    owner, keys, lo, hi = _pieces(span, sizes, ts)
    data = [ts.tobytes()]
    for name in AGGREGATES:
        if joined is not None:
            data.append(np.ascontiguousarray(getattr(joined[0], name), dtype="<f8").tobytes())
        else:
            data.append(np.concatenate([np.asarray(getattr(r, name), dtype="<f8") for r in rollups]).tobytes())
    spans = list(zip((lo * 8).tolist(), (hi * 8).tolist(), strict=True))
    columns = [[col[a:b] for a, b in spans] for col in data]
    return owner[lo].tolist(), (keys[lo] * span).tolist(), ts[lo].tolist(), ts[hi - 1].tolist(), columns


def _pieces(span: int, sizes: np.ndarray, ts: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Each bucket's rollup index and chunk number, and the (rollup, chunk) pieces' first and
    end bucket rows, of rollups joined (``sizes`` buckets each, bucket starts ``ts``)."""
    owner = np.repeat(np.arange(sizes.size), sizes)
    same = owner[1:] == owner[:-1]
    if bool(np.any(same & (ts[1:] <= ts[:-1]))):
        raise ValueError("bucket starts must be strictly ascending")
    keys = ts // span
    cut = np.flatnonzero(~same | (keys[1:] != keys[:-1])) + 1
    lo = np.concatenate(([0], cut))
    hi = np.append(lo[1:], ts.size)
    return owner, keys, lo, hi


@dataclass(frozen=True, slots=True)
class PieceGroup:
    """(Rollup, chunk) pieces of one bucket count: per piece its rollup index, chunk start
    and first bucket, and its column-form values as one row of ``values`` (``COLUMNS``
    one after the other, ``buckets`` 64-bit patterns each): ``values[i].tobytes()`` sliced
    every ``8 * buckets`` bytes is what ``encode_columns`` gives piece ``i``."""

    owners: np.ndarray
    starts: np.ndarray
    firsts: np.ndarray
    buckets: int
    values: np.ndarray  # int64, (pieces, len(COLUMNS) * buckets)


def encode_column_groups(resolution: Resolution, joined: Rollup, bounds: np.ndarray) -> list[PieceGroup]:
    """``encode_columns_table`` of rollups joined (``joined``'s buckets, rollup ``i`` being rows
    ``bounds[i]:bounds[i + 1]``) as ``PieceGroup``s, one per bucket count: a store writes a
    group's rows with one statement, slicing the columns out of one blob (a fresh pass's
    pieces all have the same count but at a series' start or end)."""
    ts = np.ascontiguousarray(joined.timestamps, dtype="<i8")
    if not ts.size:
        return []
    span = chunk_span(resolution)
    owner, keys, lo, hi = _pieces(span, np.diff(bounds), ts)
    matrix = np.empty((len(COLUMNS), ts.size), dtype="<i8")
    matrix[0] = ts
    for k, name in enumerate(AGGREGATES, start=1):
        matrix[k] = np.ascontiguousarray(getattr(joined, name), dtype="<f8").view("<i8")
    counts = hi - lo
    out = []
    for n in np.unique(counts).tolist():
        sel = np.flatnonzero(counts == n)
        rows = lo[sel][:, None] + np.arange(n)
        values = matrix[:, rows].transpose(1, 0, 2).reshape(sel.size, len(COLUMNS) * n)
        out.append(PieceGroup(owner[lo[sel]], keys[lo[sel]] * span, ts[lo[sel]], n, values))
    return out


def append_columns(old: Payload, new: dict[str, bytes]) -> dict[str, bytes] | None:
    """``merge`` of a stored chunk and newer buckets, as column-form values, when the newer
    buckets all start after the stored ones (a window after the previous one): each
    column's bytes joined. None when that does not hold (then decode and ``merge``)."""
    if not isinstance(old, dict) or any(name not in old for name in COLUMNS):
        return None
    old_ts, new_ts = old["ts"], new["ts"]
    if not old_ts:
        return new
    if len(old_ts) % 8 or any(len(old[name]) != len(old_ts) for name in AGGREGATES):
        return None
    if new_ts and int.from_bytes(new_ts[:8], "little", signed=True) <= int.from_bytes(old_ts[-8:], "little", signed=True):
        return None
    return {name: old[name] + new[name] for name in COLUMNS}


def splice_columns(old: Payload, new: dict[str, bytes]) -> dict[str, bytes] | None:
    """``merge`` of a stored chunk and newer buckets as column-form values, when every
    stored bucket from the first to the last newer one is among the newer ones (a window
    after or between the stored ones, or a rerun of one): the stored bytes before and after
    them around the newer ones, column by column. None otherwise (then decode and ``merge``)."""
    if not isinstance(old, dict) or any(name not in old for name in COLUMNS):
        return None
    old_raw, new_raw = old["ts"], new["ts"]
    if not old_raw or not new_raw:
        return new if not old_raw else None
    if len(old_raw) % 8 or any(len(old[name]) != len(old_raw) for name in AGGREGATES):
        return None
    old_ts, new_ts = np.frombuffer(old_raw, dtype="<i8"), np.frombuffer(new_raw, dtype="<i8")
    lo, hi = np.searchsorted(old_ts, [new_ts[0], new_ts[-1]], side="left").tolist()
    if hi < old_ts.size and old_ts[hi] == new_ts[-1]:
        hi += 1
    inside = old_ts[lo:hi]
    if inside.size and not (inside.size == new_ts.size and inside.tobytes() == new_raw) and not bool(
        np.isin(inside, new_ts, assume_unique=True).all()
    ):
        return None
    a, b = lo * 8, hi * 8
    return {name: old[name][:a] + new[name] + old[name][b:] for name in COLUMNS}


# -- compact column values ------------------------------------------------------------------
#
# A column value whose length is a multiple of 8 is the plain form above (64-bit patterns).
# Any other length is a *compact* form, its first byte the form (the rollup job writes them on
# Cassandra: a window's 1m chunks were ~11 KB of plain columns per series, most of them
# regular - bucket starts a minute apart, counts, sample times a few ms after the bucket
# start, integer values). Every compact form stands for exactly the plain bytes it was made
# from: the writer keeps a column plain unless decoding its compact form gives those bytes
# back bit for bit. A body whose length would be a multiple of 8 gets one padding byte.
#
#   REPEAT    1, one 64-bit pattern: every bucket holds it
#   LINEAR    2, first, step (int64), n (uint32): n values first + i * step in int64
#             arithmetic (the bucket starts ``ts``; the other columns take n from them)
#   BASE_UINT 3, base (int64), width (1, 2 or 4), n unsigned integers u: float64(base + u)
#   TS_UINT   4, width, n unsigned integers u: float64(ts + u) (first_ts, last_ts)
#   TS_CONST  5, offset (int64): float64(ts + offset)
#   DECIMAL   6, k (1-3), base (int64), width, n unsigned integers u: float64(base + u) / 10^k
#             (decimals as exporters print them: CPU seconds, load averages)

REPEAT, LINEAR, BASE_UINT, TS_UINT, TS_CONST, DECIMAL = 1, 2, 3, 4, 5, 6
_POW10 = np.array([1.0, 10.0, 100.0, 1000.0])  # (DECIMAL's k: 1-3)
TIME_COLUMNS = frozenset(("first_ts", "last_ts"))
_EXACT_INT = float(2**53)
_WIDTHS = ((1, np.dtype("<u1")), (2, np.dtype("<u2")), (4, np.dtype("<u4")))
_UINT = {w: dt for w, dt in _WIDTHS}


def is_compact(value: bytes | memoryview | None) -> bool:
    return value is not None and len(value) % 8 != 0


_LINEAR_REC = np.dtype([("tag", "u1"), ("first", "<i8"), ("step", "<i8"), ("n", "<u4")])  # packed: 21 bytes
_WORD_REC = np.dtype([("tag", "u1"), ("value", "<i8")])  # REPEAT, TS_CONST: 9 bytes


def _piece_bounds(sizes: np.ndarray) -> np.ndarray:
    at = np.zeros(sizes.size + 1, dtype=np.int64)
    np.cumsum(sizes, out=at[1:])
    return at


def _width(span: np.ndarray) -> np.ndarray:
    """The narrowest width (1, 2, 4) holding unsigned values up to ``span``; 0: none."""
    out: np.ndarray = np.select([span < 2**8, span < 2**16, span < 2**32], [1, 2, 4], 0)
    return out


def value_lengths(column: Sequence[Any]) -> np.ndarray:
    """Each value's length (0 for None)."""
    try:
        return np.fromiter(map(len, column), dtype=np.int64, count=len(column))
    except TypeError:  # (None: a column a chunk was written without)
        return np.fromiter((0 if v is None else len(v) for v in column), dtype=np.int64, count=len(column))


def _scatter(col: list[Any], rows: Sequence[int], blob: bytes, size: int) -> None:
    """Rows ``rows`` of ``col`` become consecutive ``size``-byte slices of ``blob`` (made by
    NumPy as bytes objects and placed by ``map``: no Python step per row; the seal places
    ~2 M of them)."""
    if not rows:
        return
    if size == 0:
        pieces: list[bytes] = [b""] * len(rows)
    else:
        pieces = np.frombuffer(blob, dtype=f"V{size}", count=len(rows)).tolist()
    deque(map(col.__setitem__, rows, pieces), maxlen=0)


def _word_rows(col: list[Any], rows: Sequence[int], tag: int, values: np.ndarray) -> None:
    rec = np.empty(len(rows), dtype=_WORD_REC)
    rec["tag"] = tag
    rec["value"] = values
    _scatter(col, rows, rec.tobytes(), _WORD_REC.itemsize)


def _uint_rows(col: list[Any], rows: Sequence[int], header: np.ndarray, body: np.ndarray) -> None:
    """Rows ``rows`` of ``col``: each its ``header`` bytes (a row of a uint8 matrix) then its
    row of ``body`` (unsigned integers), a padding byte where the length is a multiple of 8."""
    g, h = header.shape
    size = h + body.shape[1] * body.itemsize
    mat = np.zeros((g, size + (0 if size % 8 else 1)), dtype=np.uint8)
    mat[:, :h] = header
    mat[:, h:size] = np.ascontiguousarray(body).view(np.uint8).reshape(g, size - h)
    _scatter(col, rows, mat.tobytes(), mat.shape[1])


def compact_columns(names: Sequence[str], columns: Sequence[Sequence[bytes]]) -> list[list[bytes]]:
    """The values of ``columns`` (``names[0]`` the bucket starts ``ts``, then float64
    columns; ``columns[k][i]`` piece ``i``'s plain value of column ``k``) with each in its
    smallest compact form that gives its bytes back (else as it was): NumPy calls per column
    and bucket count, not per piece (the seal writes ~12,000 chunks of a bucket count)."""
    count = len(columns[0])
    out = [list(c) for c in columns]
    if not count:
        return out
    sizes = value_lengths(columns[0]) // 8
    at = _piece_bounds(sizes)
    ts = np.frombuffer(b"".join(columns[0]), dtype="<i8")
    xs = []
    for k in range(1, len(columns)):
        x = np.frombuffer(b"".join(columns[k]), dtype="<i8")
        if x.size != ts.size:
            raise ValueError(f"column {names[k]} is not as long as the bucket starts")
        xs.append(x)
    for n in np.unique(sizes[sizes > 0]).tolist():
        idx = np.flatnonzero(sizes == n)
        if idx.size == count:  # (one bucket count: the pieces' values are rows of a matrix as they lie)
            mats = [x.reshape(count, n) for x in (ts, *xs)]
        else:
            pos = at[idx][:, None] + np.arange(n)
            mats = [x[pos] for x in (ts, *xs)]
        _compact_group(names, out, idx.tolist(), n, mats)
    return out


def _compact_group(names: Sequence[str], out: list[list[bytes]], idx: list[int], n: int, mats: list[np.ndarray]) -> None:
    """``compact_columns`` of pieces ``idx`` of ``n`` buckets each (``mats``: per column, the
    pieces' values as rows)."""
    t = mats[0]
    linear = (np.diff(t, axis=1) == (t[:, 1:2] - t[:, :1])).all(axis=1) if n > 2 else np.ones(len(idx), dtype=bool)
    rows = np.flatnonzero(linear)
    if rows.size:
        rec = np.empty(rows.size, dtype=_LINEAR_REC)
        rec["tag"], rec["first"], rec["n"] = LINEAR, t[rows, 0], n
        rec["step"] = t[rows, 1] - t[rows, 0] if n > 1 else 0
        _scatter(out[0], [idx[r] for r in rows.tolist()], rec.tobytes(), _LINEAR_REC.itemsize)
    for j in range(1, len(mats)):
        _compact_column(names[j] in TIME_COLUMNS, out[j], idx, mats[j], t)


_PROBE = 4  # values of each piece tried first: the others are tried only where these fit


def _scaled(bits: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The integers ``m`` with ``float64(m) / 10^k`` (``k`` 0: ``float64(m)``) equal to the
    float64 patterns ``bits``, and where they are (within 53 bits; not NaN, infinities, -0.0)."""
    f = bits.view("<f8")
    with np.errstate(invalid="ignore", over="ignore"):
        g = f * _POW10[k] if k else f
        ok = np.isfinite(g) & (np.abs(g) < _EXACT_INT)
        m = np.rint(np.where(ok, g, 0.0)).astype(np.int64)
    back = m.astype("<f8")
    ok &= (back / _POW10[k] if k else back).view("<i8") == bits
    return m, ok


def _compact_column(time_column: bool, col: list[bytes], idx: list[int], m: np.ndarray, t: np.ndarray) -> None:
    """``compact_columns`` of one float64 column of pieces ``idx`` (``m``: their values as rows
    of 64-bit patterns; ``t`` their bucket starts): each form is tried on a piece's first
    ``_PROBE`` values first, and on all its values only where those fit."""
    head = m[:, :_PROBE]
    maybe = np.flatnonzero((head == head[:, :1]).all(axis=1))
    rep = np.zeros(len(idx), dtype=bool)
    rep[maybe] = (m[maybe] == m[maybe, :1]).all(axis=1)
    if rep.any():
        sel = np.flatnonzero(rep)
        _word_rows(col, [idx[r] for r in sel.tolist()], REPEAT, m[sel, 0])
    left = np.flatnonzero(~rep)  # pieces not written compact yet
    for k in (0, 1, 2, 3):  # integers, then decimals of k digits
        if not left.size:
            return
        maybe = left[_scaled(m[left, :_PROBE], k)[1].all(axis=1)]
        if not maybe.size:
            continue
        ints, ok = _scaled(m[maybe], k)
        fits = ok.all(axis=1)
        maybe, ints = maybe[fits], ints[fits]
        if not maybe.size:
            continue
        written = np.zeros(maybe.size, dtype=bool)
        if time_column and not k:
            written = _offset_rows(col, [idx[i] for i in maybe.tolist()], ints - t[maybe])
        if not written.all():
            rest = np.flatnonzero(~written)
            written[rest] = _base_rows(col, [idx[i] for i in maybe[rest].tolist()], ints[rest],
                                       BASE_UINT if not k else DECIMAL, k)
        left = np.setdiff1d(left, maybe[written], assume_unique=True)


def _offset_rows(col: list[bytes], rows: list[int], off: np.ndarray) -> np.ndarray:
    """TS_CONST or TS_UINT values for the pieces ``rows`` whose sample times are ``off`` (a row
    each) after their bucket starts, where one fits; which were written."""
    const = (off == off[:, :1]).all(axis=1)
    if const.any():
        sel = np.flatnonzero(const)
        _word_rows(col, [rows[i] for i in sel.tolist()], TS_CONST, off[sel, 0])
    width = np.where(~const & (off.min(axis=1) >= 0), _width(off.max(axis=1)), 0)
    for w, dt in _WIDTHS:
        sel = np.flatnonzero(width == w)
        if sel.size:
            header = np.array([[TS_UINT, w]], dtype=np.uint8).repeat(sel.size, axis=0)
            _uint_rows(col, [rows[i] for i in sel.tolist()], header, off[sel].astype(dt))
    written: np.ndarray = const | (width > 0)
    return written


def _base_rows(col: list[bytes], rows: list[int], m: np.ndarray, tag: int, k: int) -> np.ndarray:
    """BASE_UINT (``k`` 0) or DECIMAL values for the pieces ``rows`` whose integers ``m`` (a
    row each) span at most 32 bits; which were written."""
    lo = m.min(axis=1)
    width = _width(m.max(axis=1) - lo)
    head = 10 if tag == BASE_UINT else 11
    for w, dt in _WIDTHS:
        sel = np.flatnonzero(width == w)
        if sel.size:
            header = np.empty((sel.size, head), dtype=np.uint8)
            header[:, 0], header[:, head - 1] = tag, w
            if tag == DECIMAL:
                header[:, 1] = k
            header[:, head - 9 : head - 1] = lo[sel].astype("<i8").view(np.uint8).reshape(sel.size, 8)
            _uint_rows(col, [rows[i] for i in sel.tolist()], header, (m[sel] - lo[sel, None]).astype(dt))
    written: np.ndarray = width > 0
    return written


def compact_dicts(pieces: Sequence[Mapping[str, bytes]]) -> list[dict[str, bytes]]:
    """``compact_columns`` of column-form chunks (plain values of every name in ``COLUMNS``)."""
    got = compact_columns(COLUMNS, [[p[n] for p in pieces] for n in COLUMNS])
    return [dict(zip(COLUMNS, values, strict=True)) for values in zip(*got, strict=True)]


def expand_columns(names: Sequence[str], columns: Sequence[Sequence[Any]], as_bytes: bool = False) -> list[list[Any]]:
    """``columns`` (``names[0]`` the bucket starts ``ts``; ``columns[k][i]``: row ``i``'s value
    of column ``k`` as stored, None for a column a row lacks) with every compact value
    replaced by its plain bytes (a ``memoryview``; ``as_bytes``: ``bytes``), NumPy calls per
    column and form rather than per value; ChunkError for a value that does not decode."""
    out: list[list[Any]] = [list(c) for c in columns]
    if not out or not out[0]:
        return out
    ts_col = out[0]
    lens = value_lengths(ts_col)
    sizes = lens // 8
    comp = np.flatnonzero(lens % 8)
    # each row's bucket starts as first + i * step where LINEAR (most rows), else its plain bytes
    linear = np.zeros(len(ts_col), dtype=bool)
    firsts = np.zeros(len(ts_col), dtype=np.int64)
    steps = np.zeros(len(ts_col), dtype=np.int64)
    if comp.size:
        if bool((lens[comp] != _LINEAR_REC.itemsize).any()):
            raise ChunkError("rollup chunk: bucket starts of an unknown form")
        rec = np.frombuffer(b"".join(ts_col[i] for i in comp.tolist()), dtype=_LINEAR_REC)
        if bool((rec["tag"] != LINEAR).any()):
            raise ChunkError("rollup chunk: bucket starts of an unknown form")
        sizes[comp], linear[comp], firsts[comp], steps[comp] = rec["n"], True, rec["first"], rec["step"]
    plain: list[np.ndarray] = []

    def ts_rows(rows: np.ndarray, n: int) -> np.ndarray:
        """The bucket starts of rows ``rows`` (``n`` each) as rows of a matrix."""
        got: np.ndarray = firsts[rows][:, None] + np.arange(n, dtype=np.int64) * steps[rows][:, None]
        odd = np.flatnonzero(~linear[rows])
        if odd.size:
            if not plain:
                plain.append(_piece_bounds(np.where(linear, 0, sizes)))
                plain.append(np.frombuffer(b"".join(b"" if linear[i] else v for i, v in enumerate(ts_col)), dtype="<i8"))
            got[odd] = plain[1][plain[0][rows[odd]][:, None] + np.arange(n)]
        return got

    for k in range(1, len(out)):
        col = out[k]
        lens = value_lengths(col)
        comp = np.flatnonzero(lens % 8)
        if not comp.size:
            continue
        rows_all = comp.tolist()
        heads = np.frombuffer(bytes(col[i][0] for i in rows_all), dtype=np.uint8)
        keys = (heads.astype(np.int64) << 48) | (lens[comp] << 24) | sizes[comp]
        for key in np.unique(keys).tolist():
            sel = comp if keys.size == 1 or bool((keys == key).all()) else comp[keys == key]
            tag, size, n = key >> 48, (key >> 24) & 0xFFFFFF, key & 0xFFFFFF
            rows = sel.tolist()
            b = np.frombuffer(b"".join(col[i] for i in rows), dtype=np.uint8).reshape(len(rows), size)
            _place(col, rows, _decode_form(names[k], tag, b, n, partial(ts_rows, sel, n)), as_bytes)
    lin = np.flatnonzero(linear)
    for n in np.unique(sizes[lin]).tolist():
        sel = lin[sizes[lin] == n]
        _place(ts_col, sel.tolist(), ts_rows(sel, n), as_bytes)
    return out


def _decode_form(name: str, tag: int, b: np.ndarray, n: int, ts_rows: Callable[[], np.ndarray]) -> np.ndarray:
    """The 64-bit patterns (a row per value) of compact values of one form ``tag`` and length
    (``b``: their bytes as rows) with ``n`` buckets each; ``ts_rows``: their bucket starts."""
    g, size = b.shape
    if tag in (REPEAT, TS_CONST):
        if size != _WORD_REC.itemsize:
            raise ChunkError(f"rollup chunk: column {name} of a wrong length")
        word = b[:, 1:9].copy().view("<i8")
        got: np.ndarray = np.broadcast_to(word, (g, n)) if tag == REPEAT else (word + ts_rows()).astype("<f8").view("<i8")
        return got
    head = {BASE_UINT: 10, TS_UINT: 2, DECIMAL: 11}.get(tag)
    if head is None:
        raise ChunkError(f"rollup chunk: column {name} of unknown form {tag}")
    w = int(b[0, head - 1])
    dt = _UINT.get(w)
    if dt is None or bool((b[:, head - 1] != w).any()) or size - head - w * n not in (0, 1):
        raise ChunkError(f"rollup chunk: column {name} of an unknown form")
    u = b[:, head : head + w * n].copy().view(dt).astype(np.int64)
    if tag == TS_UINT:
        u += ts_rows()
        out: np.ndarray = u.astype("<f8").view("<i8")
        return out
    u += b[:, head - 9 : head - 1].copy().view("<i8")
    if tag == BASE_UINT:
        return u.astype("<f8").view("<i8")
    k = b[:, 1].astype(np.int64)
    if bool(((k < 1) | (k > 3)).any()):
        raise ChunkError(f"rollup chunk: column {name} of an unknown form")
    return (u.astype("<f8") / _POW10[k][:, None]).view("<i8")  # type: ignore[no-any-return]


def _place(col: list[Any], rows: Sequence[int], values: np.ndarray, as_bytes: bool) -> None:
    """Rows ``rows`` of ``col`` become their rows of ``values`` (64-bit patterns) as views
    (``as_bytes``: as bytes)."""
    flat = np.ascontiguousarray(values, dtype="<i8").reshape(-1)
    if as_bytes:
        _scatter(col, rows, flat.tobytes(), values.shape[1] * 8)
        return
    n = values.shape[1] * 8
    view = flat.view(np.uint8).data
    for j, i in enumerate(rows):
        col[i] = view[j * n : (j + 1) * n]
