"""Rollup rows built from raw samples, for the buckets the rollup job has not written yet.

``fine_rows`` turns the raw samples of many series into minute rows exactly as the rollup job
does (``storage.rollup.rollup_raw``), ``combine`` adds minute rows up into coarser buckets
as the job does (``rollup_rollup``), so count, sum, last, increase and the rate aggregates
(first, first_ts, last_ts, correction; the same functions compute them) equal the job's rows
bit for bit. ``TailMemo`` keeps, per selector and bucket width, the rows built from the
complete minutes (older than the rollup lag; the last bucket in part) for a few minutes,
with each series' last counter sample before them (``ChainEnds``): a dashboard refresh then
reads raw samples only from where the kept rows end - not the counter gap (5 minutes)
earlier, nor the whole unrolled tail - and adds them to the kept rows in time order, as
the job would.
"""

from __future__ import annotations

import itertools
import operator
import time
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from query.values import stale_mask
from storage.base import AGGREGATES, MINUTE_MS, FlatSamples, Resolution, SeriesData
from storage.model import Series
from storage.rollup import DEFAULT_MAX_GAP_MS, combine_rate_parts, rate_parts

AGG_NAMES = AGGREGATES


def in_label_order(labels: list[tuple]) -> bool:
    """Whether ``labels`` are strictly ascending (one comparison each, no sort: a refresh
    asked it of 800 series several times, a sort by key ~0.12 ms against ~0.09 for this check)."""
    return all(map(operator.lt, labels, itertools.islice(labels, 1, None)))


def _segment_ids(n: int, starts: np.ndarray) -> np.ndarray:
    """For ``n`` elements cut at ``starts`` (ascending, starting with 0): each element's segment."""
    mark = np.zeros(n, dtype=np.intp)
    mark[starts[1:]] = 1
    return np.cumsum(mark, out=mark)


@dataclass
class Rows:
    """Rollup rows of many series in flat arrays, grouped by series (``series`` order), then
    by bucket start ``ts``; ``sidx`` is each row's index into ``series``."""

    series: list[Series]
    sidx: np.ndarray
    ts: np.ndarray
    cols: dict[str, np.ndarray]

    @classmethod
    def empty(cls) -> "Rows":
        return cls([], np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64), {k: np.zeros(0) for k in AGG_NAMES})

    def __len__(self) -> int:
        return int(self.ts.shape[0])

    def between(self, lo: int, hi: int) -> "Rows":
        """The rows of buckets starting in [lo, hi)."""
        return self.keep((self.ts >= lo) & (self.ts < hi))

    def keep(self, mask: np.ndarray) -> "Rows":
        """The rows where ``mask`` is true (the series list stays)."""
        if mask.all():
            return self
        return Rows(self.series, self.sidx[mask], self.ts[mask], {k: v[mask] for k, v in self.cols.items()})

    def bounds(self) -> list[int]:
        """Row range of every series: series ``i`` is rows ``bounds[i]:bounds[i+1]``."""
        bounds: list[int] = np.searchsorted(self.sidx, np.arange(len(self.series) + 1)).tolist()
        return bounds

    def by_labels(self) -> "Rows":
        """The same rows with the series ordered by their labels."""
        if in_label_order([s.labels for s in self.series]):  # (the usual: a store's label order)
            return self
        order = sorted(range(len(self.series)), key=lambda i: self.series[i].labels)
        if order == list(range(len(self.series))):
            return self
        rank = np.empty(len(order), dtype=np.int64)
        rank[order] = np.arange(len(order))
        sidx = rank[self.sidx]
        keep = np.argsort(sidx, kind="stable")
        return Rows(
            [self.series[i] for i in order], sidx[keep], self.ts[keep], {k: v[keep] for k, v in self.cols.items()}
        )

    def parts(self, resolution: Resolution) -> list[SeriesData]:
        """One SeriesData per series with rows (bucket starts, ``last`` as the value)."""
        out = []
        bounds = self.bounds()
        cols = self.cols
        last = cols["last"]
        for k, s in enumerate(self.series):
            a, z = bounds[k], bounds[k + 1]
            if z > a:
                out.append(SeriesData(s, self.ts[a:z], last[a:z], resolution, {n: c[a:z] for n, c in cols.items()}))
        return out


@dataclass
class RawFlat:
    """Raw samples of many series joined once: ``series`` (those with samples), their
    sample ``counts`` and the joined ``ts`` / ``vals`` (``fine_rows`` and ``chain_ends``
    both read them)."""

    series: list[Series]
    counts: np.ndarray
    ts: np.ndarray
    vals: np.ndarray

    @classmethod
    def of(cls, data: "list[SeriesData] | FlatSamples | RawFlat") -> "RawFlat":
        """From ``select``'s series, or a store's flat columns as they are (``select_flat``:
        a panel's raw tail of 800 series without a ``SeriesData`` each, joined again)."""
        if isinstance(data, RawFlat):
            return data
        if isinstance(data, FlatSamples):
            counts = np.diff(data.offsets)
            if bool((counts > 0).all()):
                return cls(list(data.series), counts, data.timestamps, data.values)
            data = data.as_data()
        sizes = [d.timestamps.shape[0] for d in data]
        parts = [d for d, n in zip(data, sizes, strict=True) if n]
        counts = np.fromiter((n for n in sizes if n), dtype=np.int64, count=len(parts))
        if not parts:
            return cls([], counts, np.zeros(0, dtype=np.int64), np.zeros(0))
        return cls([d.series for d in parts], counts, np.concatenate([d.timestamps for d in parts]),
                   np.concatenate([d.values for d in parts]))


def fine_rows(
    data: "list[SeriesData] | FlatSamples | RawFlat",
    start_ms: int,
    end_ms: int,
    step_ms: int,
    max_gap_ms: int = DEFAULT_MAX_GAP_MS,
    chain: ChainEnds | None = None,
    cuts: np.ndarray | None = None,
) -> Rows:
    """Rows of ``step_ms`` buckets over [start_ms, end_ms) from raw samples, with the rollup
    job's semantics: stale markers dropped, the counter increase of each pair of finite
    samples at most ``max_gap_ms`` apart goes to the later sample's bucket, sums added left
    to right. Samples before ``start_ms`` only serve as the previous value; so do the
    ``chain`` ends, which lead their series' samples (read from ``chain.before_ms``).
    ``cuts`` (ascending, from ``start_ms``): buckets between consecutive cuts instead (the
    last one up to ``end_ms``), each row at its bucket's first cut."""
    flat = RawFlat.of(data)
    series = flat.series
    if not series or end_ms <= start_ms:
        return Rows.empty()
    counts, ts, vals = flat.counts, flat.ts, flat.vals
    if chain is not None and chain.samples:
        # Insert each series' chain end before its first sample, in the flat arrays.
        led = [(k, chain.samples[s.id]) for k, s in enumerate(series) if s.id in chain.samples]
        if led:
            at = (np.cumsum(counts) - counts)[[k for k, _ in led]]
            ts = np.insert(ts, at, [e[0] for _, e in led])
            vals = np.insert(vals, at, [e[1] for _, e in led])
            counts = counts.copy()
            counts[[k for k, _ in led]] += 1
    drop = stale_mask(vals)
    drop |= ts >= end_ms
    if drop.any():
        keep = ~drop
        counts = np.add.reduceat(keep, np.concatenate(([0], np.cumsum(counts)[:-1]))).astype(np.int64)
        ts, vals = ts[keep], vals[keep]
    n = len(ts)
    if n == 0:
        return Rows.empty()
    offsets = np.concatenate(([0], np.cumsum(counts)))
    heads = offsets[1:-1]
    heads = np.unique(heads[(heads > 0) & (heads < n)])  # first sample of each series but the first
    inc = _increases(ts, vals, offsets, heads, max_gap_ms)
    # Rows per (series, bucket); bucket -1 collects the samples before the window.
    b = (ts - start_ms) // step_ms if cuts is None else np.searchsorted(cuts, ts, "right") - 1
    np.maximum(b, -1, out=b)
    change = b[1:] != b[:-1]
    change[heads - 1] = True
    starts = np.concatenate(([0], np.flatnonzero(change) + 1))
    ends = np.append(starts[1:], n)
    row = _segment_ids(n, starts)
    nrows = len(starts)
    # bincount adds in input order (left to right), like the rollup job.
    cols = {
        "count": (ends - starts).astype(np.float64),
        "sum": np.bincount(row, weights=vals, minlength=nrows),
        "min": np.fmin.reduceat(vals, starts),
        "max": np.fmax.reduceat(vals, starts),
        "last": vals[ends - 1],
        "increase": np.bincount(row, weights=inc, minlength=nrows),
        **rate_parts(ts, vals, starts, ends, row),
    }
    rb = b[starts]
    sidx = np.searchsorted(offsets[1:], starts, "right")
    inside = rb >= 0
    if not inside.all():
        rb, sidx = rb[inside], sidx[inside]
        cols = {k: v[inside] for k, v in cols.items()}
    return Rows(list(series), sidx, start_ms + rb * step_ms if cuts is None else cuts[rb], cols)


def _increases(ts: np.ndarray, vals: np.ndarray, offsets: np.ndarray, heads: np.ndarray, max_gap_ms: int) -> np.ndarray:
    """Counter increase of each sample from the previous finite sample of its series (the
    counter chain skips NaN and infinities) when at most ``max_gap_ms`` before it; ``heads``
    are the first samples of the series but the first, ``offsets`` where each series starts."""
    n = len(ts)
    inc = np.zeros(n)
    fin = np.isfinite(vals)
    if fin.all():
        if n > 1:
            cur = vals[1:]
            step_inc = cur - vals[:-1]
            np.copyto(step_inc, cur, where=step_inc < 0)  # a drop is a reset to zero
            ok = ts[1:] - ts[:-1] <= max_gap_ms
            ok[heads - 1] = False
            inc[1:] = np.where(ok, step_inc, 0.0)
    else:
        finite = np.flatnonzero(fin)
        if len(finite) > 1:
            cts, cur, prev = ts[finite], vals[finite[1:]], vals[finite[:-1]]
            cser = np.searchsorted(offsets[1:], finite, "right")
            ok = (cser[1:] == cser[:-1]) & (cts[1:] - cts[:-1] <= max_gap_ms)
            inc[finite[1:]] = np.where(ok, np.where(cur >= prev, cur - prev, cur), 0.0)
    return inc


def combine(rows: Rows, start_ms: int, step_ms: int) -> Rows:
    """Coarser buckets (``step_ms`` from ``start_ms``) from finer rows, as ``rollup_rollup``
    makes them: count, sum and increase added up in order, min/max of the minima/maxima."""
    if not len(rows):
        return rows
    b = (rows.ts - start_ms) // step_ms
    cut, cols = combine_runs(rows.sidx, b, rows.cols)
    return Rows(rows.series, rows.sidx[cut], start_ms + b[cut] * step_ms, cols)


def combine_runs(
    sidx: np.ndarray, group: np.ndarray, c: Mapping[str, np.ndarray]
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The first row of each run of rows of one series and ``group`` (rows in time order, or
    aggregates of consecutive spans: they join as rows do), and the runs' aggregates, as
    ``rollup_rollup`` makes them (those of ``c``'s columns; a correction needs all five rate
    columns, else it is NaN)."""
    if not len(group):
        return np.zeros(0, dtype=np.int64), {k: np.zeros(0) for k in AGG_NAMES if k in c.keys()}
    change = (group[1:] != group[:-1]) | (sidx[1:] != sidx[:-1])
    cut = np.concatenate(([0], np.flatnonzero(change) + 1))
    ends = np.append(cut[1:], len(group))
    local = _segment_ids(len(group), cut)
    have = set(c.keys())
    cols: dict[str, np.ndarray] = {}
    for name in ("count", "sum", "increase"):
        if name in have:
            cols[name] = np.bincount(local, weights=c[name], minlength=len(cut))
    if "min" in have:
        cols["min"] = np.fmin.reduceat(c["min"], cut)
    if "max" in have:
        cols["max"] = np.fmax.reduceat(c["max"], cut)
    if "last" in have:
        cols["last"] = c["last"][ends - 1]
    rate = ("first", "first_ts", "last", "last_ts", "correction")
    if have.issuperset(rate):
        cols.update(
            combine_rate_parts(c["first"], c["first_ts"], c["last"], c["last_ts"], c["correction"], cut, ends, local)
        )
    else:  # (the correction is then not known: NaN, as in rows written before it was kept)
        cols.update((k, c[k][cut]) for k in ("first", "first_ts") if k in have)
        if "last_ts" in have:
            cols["last_ts"] = c["last_ts"][ends - 1]
        if "correction" in have:
            cols["correction"] = np.full(len(cut), np.nan)
    return cut, {k: cols[k] for k in AGG_NAMES if k in cols}


def concat(older: Rows, newer: Rows) -> Rows:
    """The rows of both (``newer``'s buckets all after ``older``'s), grouped by series."""
    if not len(older):
        return newer
    if not len(newer):
        return older
    if [s.id for s in older.series] == [s.id for s in newer.series]:
        series = older.series
        a_map = b_map = np.arange(len(series), dtype=np.int64)
    else:
        by_id = {s.id: s for s in older.series}
        by_id.update((s.id, s) for s in newer.series)
        series = sorted(by_id.values(), key=lambda s: s.labels)
        index = {s.id: i for i, s in enumerate(series)}
        a_map = np.array([index[s.id] for s in older.series], dtype=np.int64)
        b_map = np.array([index[s.id] for s in newer.series], dtype=np.int64)
    # Place every row directly (no sort): a series' older rows, then its newer ones.
    a_s, b_s = a_map[older.sidx], b_map[newer.sidx]
    a_cnt = np.bincount(a_s, minlength=len(series))
    first = np.concatenate(([0], np.cumsum(a_cnt + np.bincount(b_s, minlength=len(series)))[:-1]))

    def rank(rows: Rows) -> np.ndarray:
        return np.arange(len(rows)) - np.searchsorted(rows.sidx, rows.sidx)

    pos_a = first[a_s] + rank(older)
    pos_b = first[b_s] + a_cnt[b_s] + rank(newer)
    n = len(older) + len(newer)

    def place(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        out = np.empty(n, dtype=x.dtype)
        out[pos_a] = x
        out[pos_b] = y
        return out

    return Rows(
        series,
        place(a_s, b_s),
        place(older.ts, newer.ts),
        {k: place(older.cols[k], newer.cols[k]) for k in AGG_NAMES},
    )


def fine_step(start_ms: int, step_ms: int) -> int:
    """The bucket width rows are first built at: a minute when ``step_ms`` is made of minutes."""
    if step_ms > MINUTE_MS and step_ms % MINUTE_MS == 0 and start_ms % MINUTE_MS == 0:
        return MINUTE_MS
    return step_ms


def bucketize(
    data: list[SeriesData], start_ms: int, end_ms: int, step_ms: int, max_gap_ms: int = DEFAULT_MAX_GAP_MS
) -> list[tuple[SeriesData, np.ndarray, dict[str, np.ndarray]]]:
    """Rollup rows of [start_ms, end_ms) for many series at once, as the rollup job writes
    them (coarse buckets from minute rows): per series with rows, (its data, bucket starts,
    aggregate columns)."""
    parts = [d for d in data if len(d)]
    fine = fine_step(start_ms, step_ms)
    rows = fine_rows(parts, start_ms, end_ms, fine, max_gap_ms)
    if fine != step_ms:
        rows = combine(rows, start_ms, step_ms)
    if not len(rows):
        return []
    bounds = rows.bounds()
    out = []
    for k, d in enumerate(parts):
        a, z = bounds[k], bounds[k + 1]
        if z > a:
            out.append((d, rows.ts[a:z], {n: c[a:z] for n, c in rows.cols.items()}))
    return out


@dataclass(frozen=True)
class ChainEnds:
    """Per series id, the last sample of its counter chain (finite, not a stale marker)
    before ``before_ms`` and at most the counter gap earlier: all a raw read starting at
    ``before_ms`` lacks to compute its first counter increases as the rollup job does."""

    before_ms: int
    samples: dict[int, tuple[int, float]]


def chain_ends(
    data: "list[SeriesData] | FlatSamples | RawFlat",
    before_ms: int,
    max_gap_ms: int = DEFAULT_MAX_GAP_MS,
    carried: ChainEnds | None = None,
) -> ChainEnds:
    """The ``ChainEnds`` at ``before_ms`` of raw samples read from at least ``before_ms -
    max_gap_ms``, or read from ``carried.before_ms`` with ``carried`` prepended (whose
    entries for series without samples in ``data`` are kept while within the gap)."""
    samples: dict[int, tuple[int, float]] = {}
    if carried is not None:
        samples = {sid: e for sid, e in carried.samples.items() if e[0] >= before_ms - max_gap_ms}
    flat = RawFlat.of(data)
    series = flat.series
    if not series:
        return ChainEnds(before_ms, samples)
    counts, ts, vals = flat.counts, flat.ts, flat.vals
    ok = np.isfinite(vals) & (ts < before_ms) & (ts >= before_ms - max_gap_ms)
    last = np.maximum.reduceat(np.where(ok, np.arange(ts.shape[0]), -1), np.cumsum(counts) - counts)
    have = np.flatnonzero(last >= 0)
    at = last[have]  # (each series' end taken at once: no NumPy scalar per series)
    samples.update(zip([series[i].id for i in have.tolist()], zip(ts[at].tolist(), vals[at].tolist(), strict=True),
                       strict=True))
    return ChainEnds(before_ms, samples)


@dataclass
class _Memo:
    rows: Rows
    start_ms: int
    end_ms: int
    created: float
    chain: ChainEnds | None = None


class TailMemo:
    """Rows built from the complete minutes of [start, end) per selector and bucket width
    (key), reused while fresh. The last bucket may be partial: its aggregates over its
    complete minutes, to which newer minutes are added in order as the rollup job adds them.

    Complete means older than the engine's rollup lag, the same assumption the rollup job
    and the range cache make about late samples; ``ttl_s`` bounds how long a backfill can go
    unseen. At most ``max_rows`` rows are kept (least recently used dropped first).

    Also the stored rows of complete buckets a select read (``stored``/``keep_stored``, keyed
    by the select: matchers, resolution, columns, range), up to ``max_stored_rows``: a 1 y
    panel's refresh recomputes its newest step, whose window reads the same 7 stored hours
    of 800 series each minute (Cassandra: 50 requests, ~12 ms here and ~50 ms of the node's
    CPU). Rows the job writes later for buckets a kept read lacked are built from raw samples
    instead, equal bit for bit; a late pass's rewrite of complete buckets goes unseen up to
    ``ttl_s``, as the range cache keeps settled steps (an hour).
    """

    def __init__(self, max_rows: int = 1_000_000, ttl_s: float = 600.0, max_stored_rows: int = 200_000) -> None:
        self.max_rows = max_rows
        self.ttl_s = ttl_s
        self.max_stored_rows = max_stored_rows
        self._entries: OrderedDict[tuple, list[_Memo]] = OrderedDict()
        self._rows = 0
        self._stored: OrderedDict[tuple, tuple[list[SeriesData], int, float]] = OrderedDict()
        self._stored_rows = 0
        self.hits = 0
        self.stored_hits = 0

    def stored(self, key: tuple) -> list[SeriesData] | None:
        """A kept select's rows (None: not kept, or kept longer than ``ttl_s``)."""
        got = self._stored.get(key)
        if got is None:
            return None
        if time.monotonic() - got[2] > self.ttl_s:
            del self._stored[key]
            self._stored_rows -= got[1]
            return None
        self._stored.move_to_end(key)
        self.stored_hits += 1
        return got[0]

    def keeps(self, rows: list[SeriesData]) -> bool:
        """Whether a select's rows are few enough to keep (``max_stored_rows``)."""
        return bool(sum(d.timestamps.shape[0] for d in rows) <= self.max_stored_rows)

    def keep_stored(self, key: tuple, rows: list[SeriesData]) -> None:
        """Keep a select's rows of complete buckets (copied compact by the caller: a store's
        rows are views of the chunks it read, a series' 32 days of hours for a few of them,
        which they would keep alive)."""
        n = sum(d.timestamps.shape[0] for d in rows)
        if n > self.max_stored_rows:
            return
        old = self._stored.pop(key, None)
        if old is not None:
            self._stored_rows -= old[1]
        self._stored[key] = (rows, n, time.monotonic())
        self._stored_rows += n
        while self._stored_rows > self.max_stored_rows and self._stored:
            _, dropped = self._stored.popitem(last=False)
            self._stored_rows -= dropped[1]

    def _best(self, key: tuple, start_ms: int) -> _Memo | None:
        wall = time.monotonic()
        best = None
        for m in self._entries.get(key, ()):
            if wall - m.created <= self.ttl_s and m.start_ms <= start_ms < m.end_ms:
                if best is None or m.end_ms > best.end_ms:
                    best = m
        return best

    def reach(self, key: tuple, start_ms: int) -> tuple[int, bool] | None:
        """Where the kept rows from ``start_ms`` on end, and whether the raw samples' chain
        ends there are kept too (None: no rows kept)."""
        best = self._best(key, start_ms)
        return None if best is None else (best.end_ms, best.chain is not None)

    def lookup(self, key: tuple, start_ms: int, end_ms: int) -> tuple[Rows, int, ChainEnds | None] | None:
        """Kept rows from ``start_ms`` (a bucket start) up to where they end, that end, and the
        raw samples' chain ends there (None: not kept), when the end is at most ``end_ms``
        (the last kept bucket may hold only its first minutes)."""
        best = self._best(key, start_ms)
        if best is None or best.end_ms > end_ms:
            return None
        self._entries.move_to_end(key)
        self.hits += 1
        return best.rows.between(start_ms, best.end_ms), best.end_ms, best.chain

    def store(self, key: tuple, rows: Rows, start_ms: int, end_ms: int, chain: ChainEnds | None = None) -> None:
        if end_ms <= start_ms or len(rows) > self.max_rows:
            return
        wall = time.monotonic()
        kept = [
            m
            for m in self._entries.pop(key, [])
            if wall - m.created <= self.ttl_s and not (start_ms <= m.start_ms and m.end_ms <= end_ms)
        ][-3:]
        kept.append(_Memo(rows, start_ms, end_ms, wall, chain))
        self._entries[key] = kept
        self._rows = sum(len(m.rows) for ms in self._entries.values() for m in ms)
        while self._rows > self.max_rows and self._entries:
            _, dropped = self._entries.popitem(last=False)
            self._rows -= sum(len(m.rows) for m in dropped)

    def clear(self) -> None:
        self._entries.clear()
        self._rows = 0
        self._stored.clear()
        self._stored_rows = 0
