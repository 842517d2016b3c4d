"""The PromQL engine: plan the selectors' time ranges, fetch through Storage, evaluate with NumPy.

``Engine.instant_query`` / ``Engine.range_query`` are what the HTTP API, alerting and the web
UI call. Evaluation runs every node over all steps at once (see ``query.values``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import importlib
import re
import time
from collections.abc import Callable, Coroutine, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from common.gc_tuning import gc_paused
from common.sequences import slices
from query import kernels
from query import parse as P
from query.budget import (
    BYTES_PER_POINT,
    THREAD_POINTS,
    Estimate,
    QueryLimits,
    estimate_points,
    over_memory,
    subquery_span,
    too_many,
)
from query.errors import QueryError, QueryInputError, QueryLimitError, QueryMemoryError, QueryTimeoutError
from query.isolation import Isolator
from query.promjson import INFO_PREFIX
from query.resolution import RATE_FUNCTIONS, TWO_POINT_FUNCTIONS, SelectorUse, SourceResolution, kept_at
from query.resolution import choose as choose_source
from query.result import QueryResult, ResultSeries
from query.rollup_tail import (
    ChainEnds,
    RawFlat,
    Rows,
    TailMemo,
    chain_ends,
    combine,
    combine_runs,
    concat,
    fine_rows,
    fine_step,
    in_label_order,
)
from query.rollup_tail import bucketize as bucketize  # re-exported: the bench and tests import it from here
from query.values import (
    InstantVector,
    Labels,
    RangeVector,
    Scalar,
    String,
    Value,
    drop_names,
    flat_windows,
    stale_mask,
)
from storage.base import (
    AGGREGATES,
    DAY_MS,
    HOUR_MS,
    MINUTE_MS,
    RATE_AGGREGATES,
    FlatRawReader,
    FlatSamples,
    HistogramSamples,
    Resolution,
    SeriesData,
    Storage,
    StorageError,
    bucket_values,
    samples_of,
)
from storage.base import aggregate_names as column_names
from storage.matchers import Matcher, MatchOp
from storage.model import METRIC_NAME
from storage.rollup import DEFAULT_MAX_GAP_MS, MINUTE_RETENTION_MS, QUERY_RAW_HORIZON_MS
from storage.rollup_chunks import ChunkColumns, JoinPlan, join_columns, join_plan, join_planned
from storage.rollup_job import DEFAULT_WINDOW_MS

DEFAULT_SUBQUERY_STEP_MS = 60_000
Encoder = Callable[[QueryResult], bytes]
# Raw reads longer than this are split, checking the sample limit after each piece.
RAW_FETCH_PIECE_MS = 2 * 86_400_000
MAX_FETCH_PIECES = 64
# Rollup reads that start this recently are built from raw samples alone (one read).
RECENT_FROM_RAW_MS = 2 * 3_600_000
# Stored rollup rows of a series ending this much before the newest series' belong to a
# series that stopped, not to a rollup shard that is behind (see Engine._fetch_rollup).
TAIL_SKEW_MS = 15 * 60_000
# Closed hours a plan over 1h rollups reads as minute rows (windows starting or ending inside
# them: Engine._hours_with_pieces) are read in spans: hours this close join one span, and the
# gap doubles until there are at most MAX_FINER_SPANS spans (one select each).
FINER_SPAN_GAP_MS = 6 * HOUR_MS
MAX_FINER_SPANS = 32
# Grids of at least this step (or of one time) cut a minute at a window's edge from raw
# samples (one select per rollup window holding such minutes); finer grids cut at
# the minute (a 1 m grid over 7 d would read every raw sample, one minute at a time).
RAW_CUT_MIN_STEP_MS = HOUR_MS
# Selects of raw minutes run this many at a time.
RAW_CUT_CONCURRENCY = 8


def minutes_kept_from(now_ms: int) -> int:
    """The first hour a plan over 1h rollups reads as minute rows where a window ends or starts
    inside it: the first day whose minute rows are all kept (30 d, ``MINUTE_RETENTION_MS``;
    the stores keep them 32). A day, not an hour, so the range cache, which keys its chunks by
    it (``Engine.planned_resolutions``), recomputes them once a day, not every hour."""
    return -(-(now_ms - MINUTE_RETENTION_MS) // DAY_MS) * DAY_MS


def raw_kept_from(now_ms: int) -> int:
    """Where such a plan cuts a minute at a window's edge from raw samples (``minutes_kept_from``
    for raw samples, kept 7 d)."""
    return -(-(now_ms - QUERY_RAW_HORIZON_MS) // DAY_MS) * DAY_MS


@dataclass
class FetchPlan:
    """One storage select: a selector's matchers and the union of the time ranges it needs."""

    matchers: tuple
    start_ms: int
    end_ms: int
    resolution: Resolution = Resolution.RAW
    # The rollup aggregates the selector's functions read (None: all of them, and the
    # buckets' last values): a 24 h rate() panel needs only ``increase``.
    columns: frozenset[str] | None = None
    data: list[SeriesData] = field(default_factory=list)
    # A raw plan's samples as the store's flat columns (``FlatRawReader``), instead of ``data``.
    raw: FlatSamples | None = None
    # The selector's series already in flat arrays (instead of ``data``), when the fetch
    # assembled them so (rollup rows built from raw samples).
    flat: "FlatSeries | None" = None
    # Warnings about the resolution this select reads (query.resolution.choose).
    notes: set[str] = field(default_factory=set)
    # Set when rollups answer rate/increase/delta exactly only if their buckets have the rate
    # aggregates (rows written before them do not): read raw instead (True: raw is kept), or
    # the warning to give instead of the exactness note.
    raw_unless_rate_known: bool = False
    unknown_rate_note: str | None = None
    # Evaluation grids (first time, last time, step, range) of uses whose rollup answer is exact
    # unless a sample sits exactly on a window's edge (SelectorUse.on_edges): read raw then.
    edge_grids: list[tuple[int, int, int, int]] = field(default_factory=list)
    # Whether every use of the plan is a function that evaluates raw samples of some series
    # beside rollup buckets of the others (EDGE_SPLIT_FUNCTIONS): then only the series with a
    # sample on a window's edge are read raw (``edge_raw``), not the whole selector.
    edge_split: bool = False
    edge_raw: list[SeriesData] | None = None
    # Rows built from raw samples of buckets ending after ``end_ms`` (in no window, so not in
    # ``flat``: a full grid of buckets stays full), kept for the edge check: their first
    # samples may sit on the last window's edge.
    beyond: Rows | None = None
    # False when the newest rows are finer than the plan's buckets or sit at their last
    # sample (Engine._fetch_rollup): windows are then found row by row, not on the bucket grid.
    on_grid: bool = True
    # Evaluation grids (first time, last time, step, window; 0: a plain selector) of the plan's
    # uses over rollups: a window ending or starting inside a closed hour reads the minutes
    # before that time (Engine._hours_with_pieces).
    grids: list[tuple[int, int, int, int]] = field(default_factory=list)
    # Finer rows read to build the plan's rows (counted in the query's samples).
    finer_rows: int = 0
    # A range cache's query (``Engine.range_query(keep_rows=True)``): stored rows of complete
    # buckets are kept for its next refresh (``Engine._stored_rows``).
    keep_rows: bool = False

    @property
    def bucket_ms(self) -> int:
        return self.resolution.step_ms


class _ColumnsOnRead(dict[str, np.ndarray]):
    """Rollup aggregate columns ``names``, each built (``_column``) only when first read."""

    _names: tuple[str, ...]

    def _column(self, name: str) -> np.ndarray:
        raise NotImplementedError

    def __missing__(self, name: str) -> np.ndarray:
        if name not in self._names:
            raise KeyError(name)
        col = self._column(name)
        self[name] = col
        return col

    def keys(self) -> tuple[str, ...]:  # type: ignore[override]  # the names, read or not
        return self._names

    def items(self) -> list[tuple[str, np.ndarray]]:  # type: ignore[override]
        return [(k, self[k]) for k in self._names]

    def __iter__(self) -> Iterator[str]:
        return iter(self._names)

    def __bool__(self) -> bool:  # (true before any column is read: ``agg or {}`` must keep it)
        return bool(self._names)


class LazyColumns(_ColumnsOnRead):
    """Rollup aggregate columns of many series, concatenated only when first read."""

    def __init__(self, data: list[SeriesData], names: tuple[str, ...] | None = None) -> None:
        super().__init__()
        self._data = data
        if names is None:
            names = tuple((data[0].agg or {}).keys()) if data else ()
        self._names = names

    def _column(self, name: str) -> np.ndarray:
        if any(isinstance(d.agg, ChunkColumns) for d in self._data):
            return join_columns(name, [(d.agg, None) for d in self._data])  # (one copy from the chunks)
        return np.concatenate([d.agg[name] for d in self._data])  # type: ignore[index]


@dataclass
class FlatSeries:
    """A selector's series in flat arrays: series ``i`` is ``offsets[i]:offsets[i+1]``."""

    labels: list[tuple]
    ts: np.ndarray
    vals: np.ndarray
    offsets: np.ndarray
    agg: dict[str, np.ndarray] | None


class PieceColumns(_ColumnsOnRead):
    """Rollup aggregate columns ``names`` of many series, each series from a stored part
    and/or a range of rows built from raw samples, concatenated only when first read."""

    def __init__(self, pieces: list[tuple[dict | None, int, int]], built: Rows, names: tuple[str, ...]) -> None:
        super().__init__()
        self._pieces = pieces
        self._built = built
        self._names = names
        self._plan: JoinPlan | None | bool = False  # (False: not made yet)

    def _column(self, name: str) -> np.ndarray:
        made = self._built.cols[name]
        if self._plan is False:
            self._plan = join_plan(self._pieces)
        plan = self._plan
        if isinstance(plan, JoinPlan) and plan.source is not None and name in plan.source.blobs:
            # (the parts' chunk rows and cuts found once for all columns: ``join_plan``)
            return join_planned(plan, name, made)
        if any(isinstance(p[0], ChunkColumns) for p in self._pieces):
            # (stored parts straight from their chunks' values: one copy, ``join_columns``)
            made_bytes = np.ascontiguousarray(made, dtype=np.float64).data.cast("B")
            return join_columns(name, [(agg, made_bytes[8 * a : 8 * b] if b > a else None) for agg, a, b in self._pieces])
        arrays = []
        for agg, a, b in self._pieces:
            if agg is not None:
                arrays.append(agg[name])
            if b > a:
                arrays.append(made[a:b])
        return np.concatenate(arrays) if arrays else np.zeros(0)


def _flat_parts(
    stored: list[SeriesData], built: Rows, resolution: Resolution, names: tuple[str, ...] = AGGREGATES
) -> FlatSeries:
    """Stored rollup rows, then rows built from raw samples, per series (by labels), flat."""
    entries: dict[int, list] = {}
    for d in stored:
        if d.timestamps.shape[0]:
            entries[d.series.id] = [d.series.labels, d, 0, 0]
    if len(built):
        bounds = built.bounds()
        for k, series in enumerate(built.series):
            a, b = bounds[k], bounds[k + 1]
            if b > a:
                e = entries.get(series.id)
                if e is None:
                    entries[series.id] = [series.labels, None, a, b]
                else:
                    e[2], e[3] = a, b
    ordered = list(entries.values())
    labels = [e[0] for e in ordered]
    if not in_label_order(labels):  # (usually they are: stored rows come in label order, built ones too)
        ordered.sort(key=lambda e: e[0])
        labels = [e[0] for e in ordered]
    pieces, counts, ts_parts = [], [], []
    built_ts = built.ts
    for _, d, a, b in ordered:  # (one pass: 800 series a refresh)
        if d is not None:
            pieces.append((d.agg, a, b))
            ts_parts.append(d.timestamps)
            counts.append(d.timestamps.shape[0] + b - a)
        else:
            pieces.append((None, a, b))
            counts.append(b - a)
        if b > a:
            ts_parts.append(built_ts[a:b])
    ts = np.concatenate(ts_parts) if ts_parts else np.zeros(0, dtype=np.int64)
    ts += resolution.step_ms - 1  # (in place: a 24 h panel's 1.15 M bucket ends)
    offsets = np.zeros(len(ordered) + 1, dtype=np.int64)
    offsets[1:] = np.cumsum(counts)
    agg = PieceColumns(pieces, built, names)
    return FlatSeries(labels, ts, bucket_values(agg, len(ts)), offsets, agg)


def _split_beyond(built: Rows, end_ms: int, step_ms: int) -> tuple[Rows, Rows | None]:
    """Rows of buckets ending by ``end_ms``, and those ending after it (None: none)."""
    over = built.ts > end_ms - (step_ms - 1)
    if not len(built) or not over.any():
        return built, None
    return built.keep(~over), built.keep(over)


def _flat_raw(data: list[SeriesData], labels: list[Labels], counts_list: list[int], drop_stale: bool) -> FlatSeries:
    """Raw samples of series ``labels`` (``counts_list`` samples each, in ``data``'s parts) flat."""
    if not data:
        return FlatSeries([], np.zeros(0, dtype=np.int64), np.zeros(0), np.zeros(1, dtype=np.int64), None)
    ts = np.concatenate([d.timestamps for d in data])
    vals = np.concatenate([d.values for d in data])
    counts = np.array(counts_list, dtype=np.int64)
    if drop_stale:
        st = stale_mask(vals)
        if st.any():
            sidx = np.repeat(np.arange(len(labels)), counts)
            keep = ~st
            ts, vals = ts[keep], vals[keep]
            counts = np.bincount(sidx[keep], minlength=len(labels)).astype(np.int64)
    offsets = np.zeros(len(labels) + 1, dtype=np.int64)
    offsets[1:] = np.cumsum(counts)
    return FlatSeries(labels, ts, vals, offsets, None)


def _flat_samples(raw: FlatSamples, drop_stale: bool) -> FlatSeries:
    """A store's flat raw columns (``FlatRawReader``) as a selector's ``FlatSeries`` (stale
    markers dropped for a range selector), as ``_flat_raw`` makes them of its series."""
    labels = [s.labels for s in raw.series]
    ts, vals, offsets = raw.timestamps, raw.values, raw.offsets
    if drop_stale and len(vals):
        keep = ~stale_mask(vals)
        if not keep.all():
            sidx = np.repeat(np.arange(len(labels)), np.diff(offsets))
            ts, vals = ts[keep], vals[keep]
            offsets = np.zeros(len(labels) + 1, dtype=np.int64)
            offsets[1:] = np.cumsum(np.bincount(sidx[keep], minlength=len(labels)))
    return FlatSeries(labels, ts, vals, offsets, None)


def _flat_data(data: list[SeriesData], columns: frozenset[str] | None, drop_stale: bool) -> FlatSeries:
    """A plan's ``data`` (raw samples or rollup rows, a series possibly in consecutive parts)
    as flat arrays; rollup buckets at their last millisecond, their ``last`` as the value."""
    data = [d for d in data if d.timestamps.shape[0]]
    ids = np.fromiter((d.series.id for d in data), dtype=np.int64, count=len(data))
    if not (ids[1:] == ids[:-1]).any():  # (equal labels, equal ids) a part per series: one pass each
        labels = [d.series.labels for d in data]
        counts_list = [d.timestamps.shape[0] for d in data]
    else:
        labels, counts_list = [], []
        prev = None
        for d in data:  # consecutive parts of one series form one run
            n = d.timestamps.shape[0]
            if prev is not None and (d.series is prev or d.series.labels == prev.labels):
                counts_list[-1] += n
            else:
                labels.append(d.series.labels)
                counts_list.append(n)
            prev = d.series
    if not data:
        return FlatSeries([], np.zeros(0, dtype=np.int64), np.zeros(0), np.zeros(1, dtype=np.int64), None)
    if data[0].resolution is not Resolution.RAW and data[0].agg is not None:
        shift = data[0].resolution.step_ms - 1
        agg = LazyColumns(data, column_names(columns) if columns else None)
        ts = np.concatenate([d.timestamps for d in data])
        ts += shift
        offsets = np.zeros(len(labels) + 1, dtype=np.int64)
        offsets[1:] = np.cumsum(counts_list)
        return FlatSeries(labels, ts, bucket_values(agg, len(ts)), offsets, agg)
    return _flat_raw(data, labels, counts_list, drop_stale)


def _edge_series(plan: FetchPlan) -> set[Labels] | None:
    """The series (labels) of a plan's rollup rows with a sample exactly on the edge of a window
    of one of its ``edge_grids`` (a bucket starting at ``t`` or ``t - range`` whose first sample
    is at its start); None when not known (rows written before the buckets kept first sample
    times): every series is then read raw."""
    if not plan.edge_grids:
        return set()
    if plan.flat is not None:
        agg = plan.flat.agg
        if agg is None or "first_ts" not in agg.keys():
            return None
        offsets, labels = plan.flat.offsets, plan.flat.labels
        out = _edge_rows(plan.edge_grids, plan.flat.ts - (plan.bucket_ms - 1), agg["first_ts"])
        found = {labels[i] for i in np.unique(np.searchsorted(offsets, out, "right") - 1).tolist()}
        if plan.beyond is not None and len(plan.beyond):
            # (apart from the flat rows: joining them would copy two columns of every bucket)
            b = plan.beyond
            rows = _edge_rows(plan.edge_grids, b.ts, b.cols["first_ts"])
            found.update(b.series[i].labels for i in np.unique(b.sidx[rows]).tolist())
        return found
    parts = [d for d in plan.data if len(d)]
    if any(d.agg is None or "first_ts" not in d.agg for d in parts):
        return None
    if not parts:
        return set()
    starts = np.concatenate([d.timestamps for d in parts])
    first = np.concatenate([d.agg["first_ts"] for d in parts])  # type: ignore[index]
    offsets = np.zeros(len(parts) + 1, dtype=np.int64)
    np.cumsum([len(d) for d in parts], out=offsets[1:])
    rows = _edge_rows(plan.edge_grids, starts, first)
    return {parts[i].series.labels for i in np.unique(np.searchsorted(offsets, rows, "right") - 1).tolist()}


def _edge_rows(grids: list[tuple[int, int, int, int]], starts: np.ndarray, first: np.ndarray) -> np.ndarray:
    """The rows (bucket ``starts``, their first sample times ``first``) whose first sample
    sits exactly on the edge of a window of one of ``grids``."""
    at = np.flatnonzero(first == starts)  # (a NaN first sample time: not on the edge)
    s = starts[at]
    on_any = np.zeros(len(at), dtype=bool)
    for t0, t1, step, rng in grids:
        rel = s - t0
        on = (rel % step == 0) | ((rel + rng) % step == 0) if step else (rel == 0) | (rel == -rng)
        on &= (s >= t0 - rng) & (s <= t1)
        on_any |= on
    return at[on_any]


def _edge_matcher(labels: list[Labels], edge: set[Labels]) -> Matcher | None:
    """A matcher on one label that, beside a plan's own matchers, selects the series ``edge``
    of the plan's series ``labels`` and few others (the label whose edge values the fewest
    series share): at most half of all; None when no label does (read all raw then)."""
    names = {k for lab in edge for k, _ in lab} - {METRIC_NAME}
    want = {name: {dict(lab).get(name, "") for lab in edge} for name in names}
    hits = dict.fromkeys(names, 0)
    for lab in labels:  # (one pass over the series' label pairs)
        for k, v in lab:
            vs = want.get(k)
            if vs is not None and v in vs:
                hits[k] += 1
    for name in names:
        if "" in want[name]:  # (an edge series without the label: so do the others without it)
            hits[name] += sum(1 for lab in labels if all(k != name for k, _ in lab))
    best: tuple[int, str, list[str]] | None = None
    for name in sorted(names):
        if best is None or hits[name] < best[0]:
            best = (hits[name], name, sorted(want[name]))
    if best is None or 2 * best[0] > len(labels):
        return None
    if len(best[2]) == 1:  # (one value: a store reads its postings alone, not the label's)
        return Matcher(best[1], MatchOp.EQ, best[2][0])
    return Matcher(best[1], MatchOp.RE, "|".join(re.escape(v) for v in best[2]))


def _labels_of(plan: FetchPlan) -> list[Labels]:
    if plan.flat is not None:
        return plan.flat.labels
    return [d.series.labels for d in plan.data if len(d)]


def _lacks_rate_aggregates(plan: FetchPlan) -> bool:
    """Whether a plan that needs the buckets' rate aggregates read buckets written before them
    (a NaN ``correction``: ``storage.base.ADDED_IN_V5``)."""
    if not (plan.raw_unless_rate_known or plan.unknown_rate_note):
        return False
    if plan.flat is not None:
        agg = plan.flat.agg
        return agg is not None and "correction" in agg.keys() and _any_nan(agg["correction"])
    return any(d.agg is not None and "correction" in d.agg and _any_nan(d.agg["correction"]) for d in plan.data)


def _any_nan(x: np.ndarray) -> bool:
    """Whether ``x`` holds a NaN: its maximum is NaN then (one reduction, no mask array)."""
    return x.size > 0 and bool(np.isnan(np.max(x)))


def _tail_gap_ms(columns: frozenset[str] | None) -> int:
    """How far before its first bucket a plan's rows built from raw samples read them: the
    counter gap, for the ``increase`` of a bucket's first sample (from the sample before it,
    ``rollup_tail.fine_rows``); none for a plan that reads no ``increase``: every other
    aggregate is of the bucket's own samples (``count``, ``sum``, ``min``, ``max``, ``last``
    and the rate aggregates, ``storage.rollup.rate_parts``). A 24 h rate panel's raw tail
    (the newest ~5 minutes from raw samples) read 10 minutes of frames for 5 minutes of rows."""
    return DEFAULT_MAX_GAP_MS if columns is None or "increase" in columns else 0


def _rows_before(rows: list[SeriesData], split: dict[int, int], default: int, res: Resolution) -> list[SeriesData]:
    """Each series' rows with bucket starts before its split (``default`` without one)."""
    cut = []
    for d in rows:
        at = split.get(d.series.id, default)
        if d.timestamps.shape[0] and int(d.timestamps[-1]) >= at:
            n = int(np.searchsorted(d.timestamps, at, "left"))
            agg = {k: v[:n] for k, v in (d.agg or {}).items()}
            d = SeriesData(d.series, d.timestamps[:n], d.values[:n], res, agg)
        cut.append(d)
    return cut


def _compact_rows(rows: list[SeriesData], names: tuple[str, ...] | None) -> list[SeriesData]:
    """A select's rollup rows as views of one array per column, the aggregate columns ``names``
    (None: all it gave) copied once for all series (``join_columns``: straight from the chunks'
    values), for ``TailMemo.stored``: a store's rows are views of the chunks it read."""
    aggs = [d.agg for d in rows]
    if not rows or any(a is None for a in aggs):
        return rows
    have = tuple(aggs[0].keys())  # type: ignore[union-attr]
    names = have if names is None else tuple(k for k in names if k in have)
    at = np.zeros(len(rows) + 1, dtype=np.int64)
    np.cumsum([d.timestamps.shape[0] for d in rows], out=at[1:])
    ts = np.concatenate([d.timestamps for d in rows])
    vals = np.concatenate([d.values for d in rows])
    try:
        cols = {k: join_columns(k, [(a, None) for a in aggs]) for k in names}
    except KeyError:  # (series with other columns: kept as read)
        return rows
    bounds = at.tolist()
    return [
        SeriesData(d.series, ts[a:b], vals[a:b], d.resolution, {k: c[a:b] for k, c in cols.items()})
        for d, a, b in zip(rows, bounds[:-1], bounds[1:], strict=True)
    ]


def _flat_rows(rows: Rows, resolution: Resolution, names: tuple[str, ...] = AGGREGATES) -> FlatSeries:
    """Rollup rows as a selector's flat series (buckets at their last millisecond) with the
    aggregate columns ``names`` (what a stored read of the plan gives: functions choose their
    form by the columns they get)."""
    counts = np.bincount(rows.sidx, minlength=len(rows.series))
    present = np.flatnonzero(counts).tolist()
    offsets = np.zeros(len(present) + 1, dtype=np.int64)
    offsets[1:] = np.cumsum(counts[present])
    ts = rows.ts + (resolution.step_ms - 1)
    agg = {k: rows.cols[k] for k in names}
    return FlatSeries([rows.series[i].labels for i in present], ts, bucket_values(agg, len(ts)), offsets, agg)


class _JoinedColumns(_ColumnsOnRead):
    """Aggregate columns ``names`` of several flat parts, each part's rows placed at ``dest``,
    each column built only when first read."""

    def __init__(self, parts: list[tuple[Mapping[str, np.ndarray], np.ndarray]], n: int, names: tuple[str, ...]) -> None:
        super().__init__()
        self._parts, self._n, self._names = parts, n, names

    def _column(self, name: str) -> np.ndarray:
        out = np.empty(self._n)
        for agg, dest in self._parts:
            out[dest] = agg[name]
        return out


def _join_flats(parts: list[FlatSeries], names: tuple[str, ...]) -> FlatSeries:
    """Rollup rows of several flat parts as one, per series (by labels) the rows of the first
    part, then the second's, ... (each part's rows newer than the previous part's). Every row
    is placed directly (no sort)."""
    first = parts[0].labels if parts else []
    if all(f.labels == first for f in parts) and in_label_order(first):
        # (the usual: every part of the same series, e.g. a refresh's hours and its open
        # hour's minutes; hashing 800 label sets twice cost ~0.5 ms a join)
        labels = list(first)
        same = np.arange(len(labels), dtype=np.int64)
        owners = [same] * len(parts)
    else:
        labels = sorted({lab for f in parts for lab in f.labels})
        index = {lab: i for i, lab in enumerate(labels)}
        owners = [np.array([index[lab] for lab in f.labels], dtype=np.int64) for f in parts]
    total = np.zeros(len(labels), dtype=np.int64)
    for f, u in zip(parts, owners, strict=True):
        total[u] += np.diff(f.offsets)
    offsets = np.zeros(len(labels) + 1, dtype=np.int64)
    np.cumsum(total, out=offsets[1:])
    cursor = offsets[:-1].copy()
    n = int(offsets[-1])
    ts = np.empty(n, dtype=np.int64)
    placed: list[tuple[Mapping[str, np.ndarray], np.ndarray]] = []
    for f, u in zip(parts, owners, strict=True):
        counts = np.diff(f.offsets)
        dest = np.repeat(cursor[u] - f.offsets[:-1], counts) + np.arange(len(f.ts))
        cursor[u] += counts
        ts[dest] = f.ts
        placed.append((f.agg if f.agg is not None else {}, dest))
    agg = _JoinedColumns(placed, n, names)
    return FlatSeries(labels, ts, bucket_values(agg, n), offsets, agg)


def _at_last_sample(rows: Rows, resolution: Resolution, names: tuple[str, ...]) -> FlatSeries:
    """Rows of partial buckets (built from the raw samples up to the query's end) as flat
    series placed at their last sample's time, not at their bucket's end: every window
    ending at or after that sample holds them whole."""
    flat = _flat_rows(rows, resolution, names)
    last_ts = rows.cols["last_ts"]
    flat.ts = np.where(np.isfinite(last_ts), last_ts, flat.ts).astype(np.int64)
    return flat


def _flat_keep(flat: FlatSeries, mask: np.ndarray) -> FlatSeries:
    """The rows of rollup ``flat`` where ``mask`` is true (series left without rows dropped)."""
    if mask.all():
        return flat
    n = len(flat.labels)
    sidx = np.repeat(np.arange(n), np.diff(flat.offsets))
    counts = np.bincount(sidx[mask], minlength=n)
    present = np.flatnonzero(counts)
    offsets = np.zeros(len(present) + 1, dtype=np.int64)
    np.cumsum(counts[present], out=offsets[1:])
    agg = {k: flat.agg[k][mask] for k in flat.agg.keys()} if flat.agg is not None else None
    ts = flat.ts[mask]
    vals = bucket_values(agg, len(ts)) if agg is not None else flat.vals[mask]
    return FlatSeries([flat.labels[i] for i in present.tolist()], ts, vals, offsets, agg)


def _inner_cuts(grids: list[tuple[int, int, int, int]], lo: int, hi: int) -> np.ndarray:
    """Where a window of the plan's uses (``FetchPlan.grids``) ends (at ``t``: cut at ``t + 1``)
    or starts (``t - range``: cut at ``t - range + 1``), for the cuts whose minute is in
    ``[lo, hi)`` (``lo`` on an hour) and that are not on an hour, ascending. A grid of a step
    under RAW_CUT_MIN_STEP_MS cuts at the minute's start instead (the minutes whole by ``t``;
    a grid finer than a minute cuts every minute it spans), and so does a time on a minute
    (``hh:mm:00.000``: only a sample exactly there is in the minute after; a dashboard's
    grid on the hour cuts no hour)."""
    out = [np.zeros(0, dtype=np.int64)]
    for first, last, step, wide in grids:
        for shift in {0, wide}:
            a, z = first - shift, last - shift
            if 0 < step < MINUTE_MS:
                c0 = max((a + 1) // MINUTE_MS, lo // MINUTE_MS)
                c1 = min((z + 1) // MINUTE_MS, (hi - 1) // MINUTE_MS)
                out.append(np.arange(c0, c1 + 1, dtype=np.int64) * MINUTE_MS)
                continue
            if step == 0:
                xs = np.array([a], dtype=np.int64)
            else:  # (only the times cutting inside [lo, hi): x + 1 >= lo and x < hi)
                k0 = max(0, -(-(lo - 1 - a) // step))
                k1 = min((z - a) // step, (hi - 1 - a) // step)
                xs = a + step * np.arange(k0, k1 + 1, dtype=np.int64)
            exact = (step == 0 or step >= RAW_CUT_MIN_STEP_MS) & (xs % MINUTE_MS != 0)
            out.append(np.where(exact, xs + 1, (xs + 1) // MINUTE_MS * MINUTE_MS))
    cuts = np.unique(np.concatenate(out))
    minute = cuts // MINUTE_MS * MINUTE_MS
    inside: np.ndarray = cuts[(minute >= lo) & (minute < hi) & (cuts % HOUR_MS != 0)]
    return inside


def _finer_spans(hours: np.ndarray) -> list[tuple[int, int]]:
    """The hours (starts, ascending) as spans ``[start, end)`` to read as minute rows: hours at
    most FINER_SPAN_GAP_MS apart in one span (the gap doubled until at most MAX_FINER_SPANS)."""
    gap = FINER_SPAN_GAP_MS
    while True:
        new = np.diff(hours) > gap + HOUR_MS
        starts = hours[np.concatenate(([True], new))]
        ends = hours[np.concatenate((new, [True]))] + HOUR_MS
        if len(starts) <= MAX_FINER_SPANS:
            return list(zip(starts.tolist(), ends.tolist(), strict=True))
        gap *= 2


def _in_sorted(x: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """Which of ``x`` are in ``ys`` (ascending), without sorting ``x``."""
    if not len(ys):
        return np.zeros(len(x), dtype=bool)
    at = np.minimum(np.searchsorted(ys, x), len(ys) - 1)
    found: np.ndarray = ys[at] == x
    return found


def _lead_increase(s_key: np.ndarray, s_inc: np.ndarray, m_key: np.ndarray, m_inc: np.ndarray) -> np.ndarray:
    """The increases of rows cut from a minute's raw samples alone (``s_key``: series and
    minute, ascending) with what they lack, the increase from the sample before the minute,
    added to each minute's first row: the minute row's increase (``m_key``, ascending) less
    theirs."""
    new = np.concatenate(([True], s_key[1:] != s_key[:-1]))
    first = np.flatnonzero(new)
    keys, inv = s_key[first], np.cumsum(new) - 1
    have = np.bincount(inv, weights=s_inc, minlength=len(keys))
    at = np.minimum(np.searchsorted(m_key, keys), max(len(m_key) - 1, 0))
    found = (m_key[at] == keys) if len(m_key) else np.zeros(len(keys), dtype=bool)
    out = s_inc.astype(np.float64, copy=True)
    out[first[found]] += np.asarray(m_inc)[at[found]] - have[found]
    return out


def _cut_minute_rows(
    m_key: np.ndarray, m_cols: Mapping[str, np.ndarray], s_key: np.ndarray, s_cols: Mapping[str, np.ndarray], names: tuple[str, ...]
) -> tuple[Mapping[str, np.ndarray], np.ndarray]:
    """For minute rows (``m_key``: series and minute, ascending; columns ``m_cols``) and rows
    cut from some of those minutes' raw samples (``s_key``, ascending; ``s_cols``): the cut
    rows' columns with the increase from the sample before each minute (``_lead_increase``)
    and which minute rows they replace."""
    if "increase" in names and "increase" in s_cols.keys() and "increase" in m_cols.keys():
        s_cols = {k: s_cols[k] for k in s_cols.keys()}
        s_cols["increase"] = _lead_increase(s_key, np.asarray(s_cols["increase"]), m_key, np.asarray(m_cols["increase"]))
    replaced = np.zeros(len(m_key), dtype=bool)
    if len(m_key):
        s_u = np.unique(s_key)
        at = np.minimum(np.searchsorted(m_key, s_u), len(m_key) - 1)
        replaced[at[m_key[at] == s_u]] = True
    return s_cols, replaced


def _pieces(
    minutes: FlatSeries, hours: FlatSeries, a: int, z: int, bounds: np.ndarray, subs: FlatSeries | None, names: tuple[str, ...]
) -> FlatSeries:
    """The hours ``[a, z)`` as pieces between consecutive ``bounds`` (cuts and hours), each the
    minute rows ``minutes`` of that piece added up (``combine_runs``, as the job adds minutes
    into hours) and placed at its last millisecond: a window ending at a cut's time holds the
    minutes whole by then, one ending at an hour's end the whole hour. ``subs``: rows of
    minutes cut inside (built from raw samples, each at its first millisecond), which replace
    those minutes' rows; a minute cut inside without them keeps its row, at its last
    millisecond (in no window ending inside it). A series without minute rows in an hour (not
    kept, or not written) keeps that hour's row of ``hours``, likewise at its end. ``names``:
    the aggregate columns (the plan's). Each source is added up into pieces on its own (no
    copy of the minute columns but their reduction), then the few pieces two sources share."""
    h_start = hours.ts - (HOUR_MS - 1)
    span = _flat_keep(hours, (h_start >= a) & (h_start < z))
    labels = sorted(set(minutes.labels) | set(span.labels) | set(subs.labels if subs is not None else ()))
    index = {lab: i for i, lab in enumerate(labels)}

    def owner(f: FlatSeries) -> np.ndarray:
        return np.repeat(np.array([index[lab] for lab in f.labels], dtype=np.int64), np.diff(f.offsets))

    def piece_of(ts: np.ndarray) -> np.ndarray:
        found: np.ndarray = np.searchsorted(bounds, ts, "right") - 1
        return found

    # (series, piece, first start, columns) of each source's pieces
    parts: list[tuple[np.ndarray, np.ndarray, np.ndarray, Mapping[str, np.ndarray]]] = []

    def add(own: np.ndarray, piece: np.ndarray, start: np.ndarray, cols: Mapping[str, np.ndarray]) -> None:
        cut, agg = combine_runs(own, piece, {k: np.asarray(cols[k]) for k in names if k in cols.keys()})
        parts.append((own[cut], piece[cut], start[cut], agg))

    own, start = owner(minutes), minutes.ts - (MINUTE_MS - 1)
    m_cols: Mapping[str, np.ndarray] = minutes.agg if minutes.agg is not None and len(minutes.ts) else {
        k: np.zeros(0) for k in names
    }
    nm = (z - a) // MINUTE_MS
    m_idx = (start - a) // MINUTE_MS  # (minute rows: each minute's piece looked up, not searched)
    piece = piece_of(a + np.arange(nm, dtype=np.int64) * MINUTE_MS)[m_idx]
    present = [(own, start)]
    if subs is not None and len(subs.ts) and subs.agg is not None:
        s_own, s_start = owner(subs), subs.ts - (MINUTE_MS - 1)
        s_agg, replaced = _cut_minute_rows(own * nm + m_idx, m_cols, s_own * nm + (s_start - a) // MINUTE_MS, subs.agg, names)
        inner = np.zeros(nm, dtype=bool)  # the minutes cut inside
        inner[(bounds[bounds % MINUTE_MS != 0] - a) // MINUTE_MS] = True
        late = inner[m_idx] & ~replaced  # (cut inside, no rows from raw: at its end)
        piece[late] = piece_of(start[late] + (MINUTE_MS - 1))
        piece[replaced] = -1  # (left out below)
        add(s_own, piece_of(s_start), s_start, s_agg)
        present.append((s_own, s_start))
    add(own, piece, start, m_cols)
    if len(span.ts) and span.agg is not None:
        nh = (z - a) // HOUR_MS
        h_own = owner(span)
        h_key = h_own * nh + (span.ts - (HOUR_MS - 1) - a) // HOUR_MS
        lack = np.ones(len(h_key), dtype=bool)
        for o, st in present:  # (each in (series, time) order)
            lack &= ~_in_sorted(h_key, o * nh + (st - a) // HOUR_MS)
        if lack.any():  # (at the hour's last millisecond: in its last piece, like the hour row)
            at = span.ts[lack]
            parts.append((h_own[lack], piece_of(at), at, {k: span.agg[k][lack] for k in names if k in span.agg.keys()}))
    names = tuple(k for k in names if all(k in p[3].keys() for p in parts))
    own, piece, first = (np.concatenate([p[i] for p in parts]) for i in range(3))
    agg = {k: np.concatenate([np.asarray(p[3][k]) for p in parts]) for k in names}
    if len(parts) > 1:  # (pieces two sources share: added up again, in time order)
        order = np.lexsort((first, piece, own))
        own, piece = own[order], piece[order]
        cut, agg = combine_runs(own, piece, {k: v[order] for k, v in agg.items()})
        own, piece = own[cut], piece[cut]
    if (piece < 0).any():
        keep = piece >= 0
        own, piece, agg = own[keep], piece[keep], {k: v[keep] for k, v in agg.items()}
    counts = np.bincount(own, minlength=len(labels))
    present_i = np.flatnonzero(counts)
    offsets = np.zeros(len(present_i) + 1, dtype=np.int64)
    np.cumsum(counts[present_i], out=offsets[1:])
    ts = bounds[piece + 1] - 1
    return FlatSeries([labels[i] for i in present_i.tolist()], ts, bucket_values(agg, len(ts)), offsets, agg)


@dataclass
class _EdgeRead:
    """The raw read of a plan's tail over 1h rollups whose end lies in the open hour
    (``Engine._fetch_rollup``), shared by its two parts: the hour part's read (from where its
    unwritten hours' rows are built) is made to reach ``upto``, the plan's end, and the open
    hour's minute rows are built from the same samples instead of a second read of the
    newest minutes (a 30 d or 1 y panel's refresh read the 800 series' last 5 to 10 minutes
    twice). ``data`` holds the samples of [``start_ms`` - the counter gap, ``upto``], or of
    [``start_ms``, ``upto``] led by ``lead`` (the chain ends at ``start_ms``): rows of
    any buckets from ``start_ms`` on up to ``upto`` can be built from it."""

    upto: int
    start_ms: int = 0
    data: RawFlat | None = None
    lead: ChainEnds | None = None


@dataclass
class QueryStats:
    """What one query did (for logs, tests and benchmarks)."""

    selects: int = 0
    samples: int = 0
    isolated: bool = False  # evaluated in a worker process
    fetch_s: float = 0.0
    eval_s: float = 0.0


class Evaluator:
    """Synchronous evaluation of an expression tree over fetched data."""

    def __init__(
        self,
        fetched: dict[tuple, FetchPlan],
        start_ms: int,
        end_ms: int,
        *,
        lookback_ms: int,
        max_samples: int,
        deadline: float,
        subquery_step_ms: int = DEFAULT_SUBQUERY_STEP_MS,
        step_ms: int = 0,
        max_memory_bytes: int = 1 << 62,
    ) -> None:
        self.step_ms = step_ms
        self.max_memory_bytes = max_memory_bytes
        # Points held now: the results of the nodes evaluated and not yet consumed, plus what
        # the node under evaluation reserved (see reserve and eval).
        self.held = 0
        self.fetched = fetched
        self.start_ms = start_ms
        self.end_ms = end_ms
        self.lookback_ms = lookback_ms
        self.max_samples = max_samples
        self.deadline = deadline
        self.subquery_step_ms = subquery_step_ms
        self._flat: dict[tuple, FlatSeries] = {}
        # Resolution chosen per selector node (by id) in planning; RAW when absent.
        self.sel_res: dict[int, Resolution] = {}
        # Range of a range selector read from rollups, widened to whole buckets (by node id).
        self.sel_range: dict[int, int] = {}
        # The max_source_resolution asked for.
        self.source = SourceResolution.AUTO
        # Warnings about the resolutions read (the fetch plans' notes, after any fallback).
        self.notes: list[str] = []
        self.now_ms = 0
        self.downsample = False
        # Resolutions are chosen as if the query started this much earlier (a range cache
        # computing part of a longer query makes the part read what the whole reads).
        self.res_shift_ms = 0
        # Native histogram table of the store (MemoryStorage.histogram), None elsewhere.
        self.hist_lookup: Callable[[float], Any] | None = None
        self._parents: list[P.Node] = []

    # -------------------------------------------------------------- helpers
    def check_deadline(self) -> None:
        if time.monotonic() > self.deadline:
            raise QueryTimeoutError("query timed out in expression evaluation")

    def check_size(self, series: int, steps: int) -> None:
        self.reserve(series * steps, f"{series} series x {steps} steps: ")

    def reserve(self, points: int, what: str = "") -> None:
        """Account ``points`` the node under evaluation is about to allocate; over the sample
        limit or the memory budget, a QueryLimitError before anything is allocated."""
        total = self.held + points
        if total > self.max_samples:
            raise QueryLimitError(too_many(total, self.max_samples, what))
        if total * BYTES_PER_POINT > self.max_memory_bytes:
            raise QueryMemoryError(over_memory(total, self.max_memory_bytes))
        self.held = total

    def at_ms(self, at: int | str | None) -> int | None:
        if at is None:
            return None
        if at == "start":
            return self.start_ms
        if at == "end":
            return self.end_ms
        return int(at)  # a number: the parser checked it

    def plan_of(self, sel: P.VectorSel) -> FetchPlan | None:
        return self.fetched.get((sel.key, self.sel_res.get(id(sel), Resolution.RAW)))

    def flat_of(self, sel: P.VectorSel, drop_stale: bool) -> "FlatSeries":
        """All series of a selector in flat arrays (cached per query). Rollup buckets are
        placed at their last millisecond with their ``last`` value as the sample value."""
        plan = self.plan_of(sel)
        key = (sel.key, self.sel_res.get(id(sel), Resolution.RAW), drop_stale)
        hit = self._flat.get(key)
        if hit is not None:
            return hit
        if plan is not None and plan.flat is not None:
            return plan.flat
        if plan is not None and plan.raw is not None:
            flat = _flat_samples(plan.raw, drop_stale)
        else:
            flat = _flat_data(plan.data if plan is not None else [], plan.columns if plan is not None else None,
                              drop_stale)
        self._flat[key] = flat
        return flat

    def edge_raw_vector(self, node: P.MatrixSel, times: np.ndarray) -> RangeVector | None:
        """The raw samples of the series a range selector over rollups reads raw
        (``FetchPlan.edge_raw``), as its RangeVector; None when it reads none."""
        plan = self.plan_of(node.vector)
        if plan is None or not plan.edge_raw:
            return None
        data = [d for d in plan.edge_raw if len(d)]
        labels: list[Labels] = []
        counts: list[int] = []
        for d in data:  # (one part per series: _select_raw joins a series' pieces)
            labels.append(d.series.labels)
            counts.append(len(d))
        flat = _flat_raw(data, labels, counts, True) if data else _flat_raw([], [], [], True)
        at = self.at_ms(node.vector.at)
        ends = (np.full(len(times), at, dtype=np.int64) if at is not None else times) - node.vector.offset_ms
        self.reserve(len(flat.ts), "range selector samples: ")
        return RangeVector(flat.labels, flat.ts, flat.vals, flat.offsets, ends, node.range_ms, times, None, 0)

    # ------------------------------------------------------------------ eval
    def eval(self, node: P.Node, times: np.ndarray) -> Value:
        self.check_deadline()
        before = self.held
        if self.hist_lookup is None:
            value = self._eval(node, times)
        else:
            # A store with native histogram samples: know each node's parent, so a selector can
            # refuse to hand histograms to an operation that would treat them as floats.
            self._parents.append(node)
            try:
                value = self._eval(node, times)
            finally:
                self._parents.pop()
            if isinstance(node, (P.VectorSel, P.MatrixSel)):
                check_histogram_use(value, self._parents[-1] if self._parents else None)
        # The node's inputs are consumed; what stays held is its result.
        self.held = before + value_points(value)
        return value

    def _eval(self, node: P.Node, times: np.ndarray) -> Value:
        if isinstance(node, P.NumberLit):
            return Scalar(np.full(len(times), node.value))
        if isinstance(node, P.StringLit):
            return String(node.value)
        if isinstance(node, P.VectorSel):
            return self.eval_selector(node, times)
        if isinstance(node, P.MatrixSel):
            return self.eval_matrix(node, times)
        if isinstance(node, P.Subquery):
            return self.eval_subquery(node, times)
        if isinstance(node, P.Negate):
            v = self.eval(node.expr, times)
            if isinstance(v, Scalar):
                return Scalar(-v.values)
            if isinstance(v, InstantVector):
                return InstantVector(v.labels, -v.values, v.present).with_drop(True)
            raise QueryError("unary minus needs a scalar or instant vector")
        if isinstance(node, P.Binary):
            from query.operators import eval_binary

            return eval_binary(self, node, times)
        if isinstance(node, P.Aggregate):
            from query.aggregations import eval_aggregate

            return eval_aggregate(self, node, times)
        if isinstance(node, P.Call):
            from query.functions import eval_call

            return eval_call(self, node, times)
        raise QueryError(f"unsupported expression {type(node).__name__}")

    def eval_selector(self, sel: P.VectorSel, times: np.ndarray, sample_times: bool = False) -> InstantVector:
        if sel.modifier == "smoothed" and not sample_times:
            from query.extended import smoothed_selector

            return smoothed_selector(self, sel, times)
        at = self.at_ms(sel.at)
        refs = (np.full(len(times), at, dtype=np.int64) if at is not None else times) - sel.offset_ms
        flat = self.flat_of(sel, False)
        T = len(times)
        n = len(flat.labels)
        if n == 0 or len(flat.ts) == 0:
            return InstantVector.empty(T)
        self.reserve(n * T, f"{n} series x {T} steps: ")
        plan = self.plan_of(sel)
        lookback = max(self.lookback_ms, plan.bucket_ms if plan is not None else 0)
        lo, hi = flat_windows(flat.ts, flat.offsets, refs - lookback, refs)
        ok = hi > lo
        idx = np.where(ok, hi - 1, 0)
        v = flat.vals[idx]
        ok &= ~stale_mask(v)
        keep = ok.any(axis=1)
        values = flat.ts[idx] / 1000.0 if sample_times else v
        rows = np.nonzero(keep)[0]
        if len(rows) == n:
            return InstantVector(flat.labels, values, ok)
        return InstantVector([flat.labels[i] for i in rows], values[rows], ok[rows])

    def eval_matrix(self, node: P.MatrixSel, times: np.ndarray) -> RangeVector:
        at = self.at_ms(node.vector.at)
        ends = (np.full(len(times), at, dtype=np.int64) if at is not None else times) - node.vector.offset_ms
        plan = self.plan_of(node.vector)
        bucket = plan.bucket_ms if plan is not None else 0
        range_ms = self.sel_range.get(id(node.vector), max(node.range_ms, bucket)) if bucket else node.range_ms
        flat = self.flat_of(node.vector, True)
        self.reserve(len(flat.ts), "range selector samples: ")
        return RangeVector(
            flat.labels, flat.ts, flat.vals, flat.offsets, ends, range_ms, times, flat.agg,
            bucket if plan is None or plan.on_grid else 0,
        )

    def subquery_grid(self, node: P.Subquery, times: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(inner evaluation times, window ends) of a subquery evaluated at ``times``; the
        grid's points are reserved before it is allocated."""
        at = self.at_ms(node.at)
        base = np.full(len(times), at, dtype=np.int64) if at is not None else times
        ends = base - node.offset_ms
        if len(base) == 0:
            return np.zeros(0, dtype=np.int64), ends
        gs, ge, step = subquery_span(node, int(base.min()), int(base.max()), self.subquery_step_ms, None)
        if ge < gs:
            return np.zeros(0, dtype=np.int64), ends
        self.reserve((ge - gs) // step + 1, "subquery steps: ")
        return np.arange(gs, ge + 1, step, dtype=np.int64), ends

    def eval_subquery(self, node: P.Subquery, times: np.ndarray) -> RangeVector:
        grid, ends = self.subquery_grid(node, times)
        inner = self.eval(node.expr, grid)
        if isinstance(inner, InstantVector):
            inner = drop_names(inner)
        if isinstance(inner, Scalar):
            inner = InstantVector([()], inner.values[None, :], np.ones((1, len(grid)), dtype=bool))
        if not isinstance(inner, InstantVector):
            raise QueryError("subquery is only allowed on instant vector")
        self.reserve(int(inner.present.sum()), "subquery samples: ")
        labels, tss, valss = [], [], []
        for i, lab in enumerate(inner.labels):
            p = inner.present[i]
            labels.append(lab)
            tss.append(grid[p])
            valss.append(inner.values[i][p])
        return RangeVector.from_lists(labels, tss, valss, ends, node.range_ms, times)


def value_points(value: Value) -> int:
    """Points a value holds (series x steps, or its samples and window ends)."""
    if isinstance(value, InstantVector):
        return len(value.labels) * value.steps
    if isinstance(value, Scalar):
        return len(value.values)
    if isinstance(value, RangeVector):
        return len(value.ts_flat) + len(value.ends)
    return 0


# The rollup aggregates a function reads when its range selector reads rollups (functions
# not listed read the buckets' last values: a plan with one of them reads every column).
# rate/increase read the rate aggregates only where rollups serve them exactly (_plan_fetches),
# else the increases (query.functions.rate).
COUNTER_RATES = frozenset({"rate", "increase"})
# Functions whose range selector over rollups may read some series raw (FetchPlan.edge_raw):
# their raw and rollup forms are batched (query.functions.range.eval_range_function).
EDGE_SPLIT_FUNCTIONS = frozenset({"rate", "increase", "delta"})
ROLLUP_COLUMNS: dict[str, frozenset[str]] = {
    # (``increase``: the approximation for buckets written before the rate aggregates)
    "rate": frozenset({*RATE_AGGREGATES, "increase"}),
    "increase": frozenset({*RATE_AGGREGATES, "increase"}),
    "delta": frozenset(RATE_AGGREGATES),
    "sum_over_time": frozenset({"sum"}),
    "count_over_time": frozenset({"count"}),
    "avg_over_time": frozenset({"sum", "count"}),
    "min_over_time": frozenset({"min"}),
    "max_over_time": frozenset({"max"}),
}


def _rollup_columns(
    func: str | None, window_ms: int | None, res: Resolution, note: str | None, kept: Resolution
) -> frozenset[str] | None:
    """The rollup aggregates a range selector feeding ``func`` reads (None: all). rate/increase
    read the rate aggregates where rollups serve them exactly (with the increases beyond raw
    retention, for rows written before those), else only the increases."""
    if window_ms is None or res is Resolution.RAW:
        return None
    cols = ROLLUP_COLUMNS.get(func or "")
    if func in COUNTER_RATES:
        if not (note or "").startswith(INFO_PREFIX):
            return frozenset({"increase"})
        if kept is Resolution.RAW:
            return frozenset(RATE_AGGREGATES)  # (rows without them: raw samples answer instead)
    return cols


def _note_checks(plan: FetchPlan, use: SelectorUse, res: Resolution, note: str | None, hi: int, kept: Resolution) -> None:
    """Note what the fetch checks of rows a rollup answers ``use`` exactly from: a sample on a
    window's edge (``SelectorUse.on_edges``: read raw) and, for rate/increase/delta, rows written
    before the buckets kept the rate aggregates (read raw while kept, else warn)."""
    if res is Resolution.RAW or note is None or not note.startswith(INFO_PREFIX):
        return
    if not use.exact(res):  # (served exactly, so: without edge samples)
        plan.edge_grids.append((use.first_ms, hi, use.step_ms, use.window_ms or 0))
        if plan.columns is not None:
            plan.columns = plan.columns | {"first_ts"}
    if use.func in RATE_FUNCTIONS:
        if kept is Resolution.RAW:
            plan.raw_unless_rate_known = True
        else:
            plan.unknown_rate_note = (
                f"{use.func}() answered from {res.value} rollups written before they kept what it needs: "
                "the result is approximate"
            )


def _note_grid(plan: FetchPlan, use: SelectorUse, res: Resolution, ev: Evaluator, span_ms: int, wide_ms: int) -> None:
    """Note the times ``use`` is evaluated at over rollups ``res`` (its first time, ``span_ms``
    on at its step) and its window (``wide_ms``, as widened to a bucket; 0: a plain selector)
    in ``plan.grids``; only for ``max_source_resolution=auto`` (a resolution asked for is read
    as asked)."""
    if res is Resolution.RAW or ev.source is not SourceResolution.AUTO:
        return
    last = use.first_ms + (span_ms // use.step_ms * use.step_ms if use.step_ms else 0)
    plan.grids.append((use.first_ms, last, use.step_ms, wide_ms))


def _plan_fetches(
    node: P.Node,
    tmin: int,
    tmax: int,
    ev: Evaluator,
    out: dict[tuple, FetchPlan],
    step_ms: int = 0,
    func: str | None = None,
) -> None:
    """Walk the tree noting for every selector the time range and resolution it reads.

    ``step_ms`` is the spacing of the evaluation times (0 for an instant query) and ``func``
    the function a range selector feeds."""

    def need(sel: P.VectorSel, lo: int, hi: int, window_ms: int | None) -> None:
        res, note, use = Resolution.RAW, None, None
        if ev.downsample and sel.modifier is None:
            hint = step_ms if window_ms is None else (min(step_ms, window_ms) if step_ms else 0)
            at = ev.at_ms(sel.at)
            use = SelectorUse(func, window_ms, (tmin if at is None else at) - sel.offset_ms, 0 if at is not None else step_ms)
            res, note = choose_source(ev.source, lo - ev.res_shift_ms, ev.now_ms, hint, use)
        if res is not Resolution.RAW:
            # Over rollups a window is at least one bucket (two for functions of two samples),
            # and a plain selector looks back at least a bucket (eval_matrix, eval_selector).
            if window_ms is not None:
                wide = max(window_ms, res.step_ms * (2 if func in TWO_POINT_FUNCTIONS else 1))
                ev.sel_range[id(sel)] = wide
                lo -= wide - window_ms
            else:
                lo -= max(0, res.step_ms - ev.lookback_ms)
        ev.sel_res[id(sel)] = res
        kept = kept_at(lo - ev.res_shift_ms, ev.now_ms)
        cols = _rollup_columns(func, window_ms, res, note, kept)
        key = (sel.key, res)
        plan = out.get(key)
        split = func in EDGE_SPLIT_FUNCTIONS and window_ms is not None
        if plan is None:
            plan = out[key] = FetchPlan(sel.matchers, lo, hi, res, cols, edge_split=split)
        else:
            plan.edge_split = plan.edge_split and split
            plan.start_ms = min(plan.start_ms, lo)
            plan.end_ms = max(plan.end_ms, hi)
            plan.columns = None if plan.columns is None or cols is None else plan.columns | cols
        if note is not None:
            plan.notes.add(note)
        if use is not None:
            _note_checks(plan, use, res, note, hi, kept)
            _note_grid(plan, use, res, ev, tmax - tmin, ev.sel_range.get(id(sel), 0) if window_ms is not None else 0)

    if isinstance(node, P.VectorSel):
        at = ev.at_ms(node.at)
        lo, hi = (at, at) if at is not None else (tmin, tmax)
        ahead = ev.lookback_ms if node.modifier == "smoothed" else 0  # interpolation reads the next sample
        need(node, lo - node.offset_ms - ev.lookback_ms + 1, hi - node.offset_ms + ahead, None)
    elif isinstance(node, P.MatrixSel):
        at = ev.at_ms(node.vector.at)
        lo, hi = (at, at) if at is not None else (tmin, tmax)
        v = node.vector
        # anchored/smoothed also read around the window: back by the lookback delta, and
        # smoothed forward too (the sample after the right edge).
        before = ev.lookback_ms if v.modifier else 0
        ahead = ev.lookback_ms if v.modifier == "smoothed" else 0
        need(v, lo - v.offset_ms - node.range_ms + 1 - before, hi - v.offset_ms + ahead, node.range_ms)
    elif isinstance(node, P.Subquery):
        gs, ge, sub_step = subquery_span(node, tmin, tmax, ev.subquery_step_ms, ev.at_ms(node.at))
        if ge >= gs:
            _plan_fetches(node.expr, gs, gs + (ge - gs) // sub_step * sub_step, ev, out, sub_step)
    elif isinstance(node, P.Negate):
        _plan_fetches(node.expr, tmin, tmax, ev, out, step_ms)
    elif isinstance(node, P.Binary):
        _plan_fetches(node.lhs, tmin, tmax, ev, out, step_ms)
        _plan_fetches(node.rhs, tmin, tmax, ev, out, step_ms)
    elif isinstance(node, P.Aggregate):
        _plan_fetches(node.expr, tmin, tmax, ev, out, step_ms)
        if node.param is not None:
            _plan_fetches(node.param, tmin, tmax, ev, out, step_ms)
    elif isinstance(node, P.Call):
        for a in node.args:
            _plan_fetches(a, tmin, tmax, ev, out, step_ms, node.name)


async def _nesting_guard(run: Coroutine[Any, Any, QueryResult]) -> QueryResult:
    """A query too deep for the recursive planner/evaluator is a QueryError, not a RecursionError."""
    try:
        return await run
    except RecursionError:
        raise QueryError("query is nested too deeply to evaluate") from None
    except OverflowError:  # times, offsets or ranges beyond int64 milliseconds
        raise QueryInputError("query times out of range: a time, offset or range reaches past int64 milliseconds") from None


def _load_evaluators() -> None:
    """Import the modules ``Evaluator`` imports lazily (they import this one), and ``numpy.ma``,
    which NumPy imports at the first ``np.unique`` of some arrays: at the start of the process,
    not in its first queries on the event loop (16-43 ms of the loop thread's CPU each time in
    ``ringmon web`` and ``ringmon alerter`` under test_hostile_regex, stalls of 75-573 ms on a
    busy machine)."""
    for name in ("numpy.ma", "query.aggregations", "query.extended", "query.functions", "query.histogram",
                 "query.operators"):
        importlib.import_module(name)


class Engine:
    """Evaluates PromQL over a Storage. Safe to share between tasks."""

    def __init__(
        self,
        storage: Storage,
        *,
        lookback_ms: int = 300_000,
        max_samples: int = 50_000_000,
        timeout_s: float = 30.0,
        subquery_step_ms: int = DEFAULT_SUBQUERY_STEP_MS,
        downsample: bool = True,
        now_ms: Callable[[], int] | None = None,
        rollup_lag_ms: int = 5 * MINUTE_MS,
        tail_memo: bool = True,
        limits: QueryLimits | None = None,
        isolate: bool = True,
    ) -> None:
        """``downsample``: read 1m/1h rollups where the data's age or the query step allow
        (falls back to raw when the store has none). ``rollup_lag_ms``: how far behind now
        the rollup job may be; buckets that recent are computed from raw samples.
        ``tail_memo``: keep the minute rows built from raw samples for complete minutes a
        few minutes, so that refreshes read only the newest raw samples.
        ``limits``: the query budgets (``max_samples`` and ``timeout_s`` given here win);
        ``isolate``: evaluate queries estimated big in killable worker processes."""
        limits = limits or QueryLimits(max_samples=max_samples, timeout_s=timeout_s)
        if limits.max_samples != max_samples and max_samples != 50_000_000:
            limits = dataclasses.replace(limits, max_samples=max_samples)
        if limits.timeout_s != timeout_s and timeout_s != 30.0:
            limits = dataclasses.replace(limits, timeout_s=timeout_s)
        self.limits = limits
        self.isolator = Isolator(limits.max_concurrency, limits.max_memory_bytes) if isolate else None
        self.downsample = downsample
        self._rollups_unavailable_until = 0.0
        self.thread_threshold = 200_000  # samples fetched above which evaluation runs in a thread
        self.now_ms = now_ms or (lambda: int(time.time() * 1000))
        self.rollup_lag_ms = rollup_lag_ms
        self.tail_memo = TailMemo() if tail_memo else None
        self.storage = storage
        self.lookback_ms = lookback_ms
        self.max_samples = limits.max_samples
        self.timeout_s = limits.timeout_s
        self.subquery_step_ms = subquery_step_ms
        self.last_stats = QueryStats()
        _load_evaluators()

    # ------------------------------------------------------------------ API
    async def instant_query(
        self,
        expr: str,
        time_ms: int,
        *,
        timeout_s: float | None = None,
        source: SourceResolution = SourceResolution.AUTO,
        encode: Encoder | None = None,
    ) -> QueryResult:
        """Evaluate ``expr`` at ``time_ms``; ``timeout_s`` may only shorten the engine's limit;
        ``source``: the max_source_resolution asked for (query.resolution). ``encode``: the
        result's text (the API's JSON) is made where the query evaluates, a worker process
        for big ones, and returned as ``QueryResult.encoded``."""
        run = self._run(
            expr, int(time_ms), int(time_ms), 0, instant=True, timeout_s=timeout_s, source=source, encode=encode
        )
        return await _nesting_guard(run)

    async def range_query(
        self,
        expr: str,
        start_ms: int,
        end_ms: int,
        step_ms: int,
        *,
        timeout_s: float | None = None,
        resolution_start_ms: int | None = None,
        source: SourceResolution = SourceResolution.AUTO,
        encode: Encoder | None = None,
        keep_rows: bool = False,
    ) -> QueryResult:
        """``encode``: as for ``instant_query``. ``resolution_start_ms``: choose each selector's resolution as if the query started
        there (the range cache passes the start of the request it computes a part of). ``keep_rows``:
        keep the stored rollup rows of complete buckets read for the next refresh (the range
        cache, which keeps settled steps likewise: ``_stored_rows``)."""
        start_ms, end_ms, step_ms = int(start_ms), int(end_ms), int(step_ms)
        if step_ms <= 0:
            raise QueryError("zero or negative query resolution step widths are not accepted")
        if end_ms < start_ms:
            raise QueryError("end timestamp must not be before start time")
        run = self._run(
            expr, start_ms, end_ms, step_ms, instant=False, timeout_s=timeout_s,
            resolution_start_ms=resolution_start_ms, source=source, encode=encode, keep_rows=keep_rows,
        )
        return await _nesting_guard(run)

    def planned_resolutions(
        self, expr: str, start_ms: int, end_ms: int, step_ms: int, source: SourceResolution = SourceResolution.AUTO
    ) -> tuple[tuple, list[str]]:
        """((selector, resolution) pairs a range query would read, plus, over 1h rollups, where
        finer rows are read from (``minutes_kept_from``, ``raw_kept_from``); the warnings about
        them), without reading: the range cache keeps parts of queries reading different
        resolutions apart, and repeats the warnings on answers taken from its chunks."""
        if not self.downsample or step_ms <= 0 or end_ms < start_ms:
            return (), []
        node = P.parse(expr)
        P.bind_step(node, step_ms)
        ev = self._evaluator(start_ms, end_ms, step_ms, float("inf"), source)
        plans: dict[tuple, FetchPlan] = {}
        _plan_fetches(node, start_ms, start_ms + (end_ms - start_ms) // step_ms * step_ms, ev, plans, step_ms)
        rollups = time.monotonic() >= self._rollups_unavailable_until  # (else reads fall back to raw)
        notes = {n for p in plans.values() if rollups or p.resolution is Resolution.RAW for n in p.notes}
        reads = sorted((repr(key[0]), key[1].value) for key in plans)
        if any(key[1] is Resolution.HOUR for key in plans):  # (which hours read minute rows: _fetch_rollup)
            reads.append(("finer rows kept from", f"{minutes_kept_from(ev.now_ms)} {raw_kept_from(ev.now_ms)}"))
        return tuple(reads), sorted(notes)

    def parse(self, expr: str) -> P.Node:
        return P.parse(expr)

    # ------------------------------------------------------------- internals
    def _evaluator(self, start: int, end: int, step: int, deadline: float, source: SourceResolution) -> Evaluator:
        """An evaluator of this engine's settings over [start, end] (fetched data comes later)."""
        ev = Evaluator(
            {},
            start,
            end,
            lookback_ms=self.lookback_ms,
            max_samples=self.max_samples,
            deadline=deadline,
            subquery_step_ms=self.subquery_step_ms,
            step_ms=step,
            max_memory_bytes=self.limits.max_memory_bytes,
        )
        ev.downsample = self.downsample
        ev.source = source
        ev.now_ms = self.now_ms()
        return ev

    async def _run(
        self,
        expr: str,
        start: int,
        end: int,
        step: int,
        *,
        instant: bool,
        timeout_s: float | None = None,
        resolution_start_ms: int | None = None,
        source: SourceResolution = SourceResolution.AUTO,
        encode: Encoder | None = None,
        keep_rows: bool = False,
    ) -> QueryResult:
        node = P.parse(expr)
        P.bind_step(node, step)  # durations written with step() (0 for an instant query)
        vtype = P.value_type(node)
        if not instant and vtype not in (P.SCALAR, P.VECTOR):
            raise QueryError(
                f'invalid expression type "{ "range vector" if vtype == P.MATRIX else vtype}" '
                "for range query, must be Scalar or instant Vector"
            )
        limit_s = self.timeout_s if timeout_s is None else min(self.timeout_s, max(timeout_s, 0.0))
        deadline = time.monotonic() + limit_s
        times = np.array([start], dtype=np.int64) if instant else np.arange(start, end + 1, step, dtype=np.int64)
        if not instant and (end - start) // step > 11_000:  # (as Prometheus: 11,001 points pass)
            raise QueryError(
                "exceeded maximum resolution of 11,000 points per timeseries. "
                "Try decreasing the query resolution (?step=XX)"
            )
        ev = self._evaluator(start, end, step, deadline, source)
        if resolution_start_ms is not None and not instant:
            ev.res_shift_ms = int(times[0]) - int(resolution_start_ms)
        if isinstance(self.storage, HistogramSamples) and self.storage.has_histograms:  # MemoryStorage
            ev.hist_lookup = self.storage.histogram  # type: ignore[attr-defined]
        plans: dict[tuple, FetchPlan] = {}
        _plan_fetches(node, int(times[0]), int(times[-1]), ev, plans, 0 if instant else step)
        for plan in plans.values():
            plan.keep_rows = keep_rows
        self._estimate(ev, node, times, fetched=False)  # steps alone can be too many: before reading
        stats = QueryStats()
        t0 = time.monotonic()
        pause = gc_paused()  # (common.gc_tuning: reads and evaluation make many short-lived objects)
        with pause:
            await self._fetch(plans, deadline, stats)
            stats.fetch_s = time.monotonic() - t0
            ev.fetched = plans
            ev.notes = sorted({n for p in plans.values() for n in p.notes})
            est = self._estimate(ev, node, times)
            t1 = time.monotonic()
            isolated = self.isolator is not None and est.cost > self.limits.isolate_points and ev.hist_lookup is None
            if not isolated:
                if stats.samples >= self.thread_threshold or est.cost >= THREAD_POINTS:
                    # Keep the event loop responsive while a big query computes.
                    result = await asyncio.to_thread(self._evaluate, ev, node, times, instant, encode)
                else:
                    result = self._evaluate(ev, node, times, instant, encode)
                plans.clear()  # (the data read is freed here, before a collection could traverse it)
                ev.fetched = plans
        if isolated:
            assert self.isolator is not None
            # Big or Python-loop heavy: a worker process that the deadline kills and whose
            # memory is capped; the event loop only waits for its answer (collecting meanwhile).
            stats.isolated = True
            result = await self.isolator.run(lambda: self._evaluate(ev, node, times, instant, encode), deadline)
        stats.eval_s = time.monotonic() - t1
        if est.points >= THREAD_POINTS:
            # A big query: the compiled kernels serve the next ones (loaded in the background
            # from now: not before this one's fork, which would wait for the load).
            kernels.prefetch()
        self.last_stats = stats
        result.stats = stats
        return result

    async def _select_edge_raw(
        self, plan: FetchPlan, narrow: Matcher, edge: set[Labels], loaded: list[int]
    ) -> list[SeriesData]:
        """Raw samples of the series ``edge`` of a plan (read with its matchers and ``narrow``),
        in label order."""
        sub = dataclasses.replace(plan, matchers=(*plan.matchers, narrow), data=[], flat=None, edge_raw=None)
        return [d for d in await self._select_raw(sub, loaded) if d.series.labels in edge]

    async def _select_raw(self, plan: FetchPlan, loaded: list[int]) -> list[SeriesData]:
        """Raw samples of a plan; long ranges are read in pieces so that a query over the
        sample limit stops after one piece instead of loading everything first."""
        matchers = list(plan.matchers)
        span = plan.end_ms - plan.start_ms
        if span <= RAW_FETCH_PIECE_MS:
            data = await self.storage.select(matchers, plan.start_ms, plan.end_ms)
            loaded[0] += samples_of(data)
            self._check_loaded(loaded[0])
            return data
        pieces: dict[int, list[SeriesData]] = {}
        # At most MAX_FETCH_PIECES reads, however long the range (a query over all of int64
        # time must not loop over billions of empty pieces).
        piece_ms = max(RAW_FETCH_PIECE_MS, -(-span // MAX_FETCH_PIECES))
        lo = plan.start_ms
        while lo <= plan.end_ms:
            hi = min(lo + piece_ms - 1, plan.end_ms)
            for d in await self.storage.select(matchers, lo, hi):
                if len(d):
                    pieces.setdefault(d.series.id, []).append(d)
                    loaded[0] += len(d)
            self._check_loaded(loaded[0])
            lo = hi + 1
        out = []
        for parts in pieces.values():
            if len(parts) == 1:
                out.append(parts[0])
            else:
                ts = np.concatenate([p.timestamps for p in parts])
                vals = np.concatenate([p.values for p in parts])
                out.append(SeriesData(parts[0].series, ts, vals))
        out.sort(key=lambda d: d.series.labels)
        return out

    async def _fetch_raw(self, plan: FetchPlan, loaded: list[int]) -> None:
        """A raw plan's samples: a range read at once from a store that gives flat columns
        (``FlatRawReader``) as those (``plan.raw``), else ``_select_raw``'s series."""
        if isinstance(self.storage, FlatRawReader) and plan.end_ms - plan.start_ms <= RAW_FETCH_PIECE_MS:
            plan.raw = await self.storage.select_flat(list(plan.matchers), plan.start_ms, plan.end_ms)
            loaded[0] += plan.raw.timestamps.shape[0]
            self._check_loaded(loaded[0])
            return
        plan.data = await self._select_raw(plan, loaded)

    def _check_loaded(self, samples: int) -> None:
        if samples > self.max_samples:
            raise QueryLimitError(
                f"query processing would load too many samples into memory in query execution "
                f"(more than the limit of {self.max_samples} samples)"
            )

    async def _fetch(self, plans: dict[tuple, FetchPlan], deadline: float, stats: QueryStats) -> None:
        loaded = [0]

        async def one(plan: FetchPlan) -> None:
            if plan.resolution is Resolution.RAW:
                await self._fetch_raw(plan, loaded)
                return
            if time.monotonic() >= self._rollups_unavailable_until:
                try:
                    await self._fetch_rollup(plan)
                    edge = _edge_series(plan)
                    narrow = _edge_matcher(_labels_of(plan), edge) if edge and plan.edge_split else None
                    if edge and narrow is not None:
                        # A few series have a sample on a window's edge: only those read raw.
                        plan.edge_raw = await self._select_edge_raw(plan, narrow, edge, loaded)
                        edge = set()
                    if edge is not None and not edge:
                        if not _lacks_rate_aggregates(plan):
                            return
                        if not plan.raw_unless_rate_known:
                            plan.notes = {n for n in plan.notes if not n.startswith(INFO_PREFIX)}
                            plan.notes.add(plan.unknown_rate_note or "")
                            return
                    plan.flat, plan.edge_raw = None, None  # (read raw below: the rollups answer only approximately)
                except StorageError:
                    # The store keeps no rollups: read raw samples (and stop asking for a while).
                    self._rollups_unavailable_until = time.monotonic() + 60.0
            plan.resolution = Resolution.RAW
            plan.notes.clear()  # (what it said about rollups no longer holds)
            plan.data = await self._select_raw(plan, loaded)

        remaining = deadline - time.monotonic()
        reads = asyncio.gather(*(one(p) for p in plans.values()))
        # A gather cancelled from outside (the query timed out, or its client went away) ends
        # with a CancelledError *set* that nobody reads: asyncio would log it at collection.
        reads.add_done_callback(lambda f: f.cancelled() or f.exception())
        try:
            await asyncio.wait_for(reads, timeout=max(remaining, 0.001))
        except TimeoutError:
            raise QueryTimeoutError(f"query timed out after {self.timeout_s:g}s while reading series") from None
        except StorageError as exc:
            raise QueryError(f"storage error: {exc}") from exc
        stats.selects = len(plans)
        stats.samples = sum(samples_of(p.data) for p in plans.values())
        stats.samples += sum(p.raw.timestamps.shape[0] for p in plans.values() if p.raw is not None)
        stats.samples += sum(len(p.flat.ts) for p in plans.values() if p.flat is not None)
        stats.samples += sum(p.finer_rows for p in plans.values())  # (minute rows read for pieces)
        if stats.samples > self.max_samples:
            raise QueryLimitError(
                f"query processing would load too many samples into memory in query execution "
                f"({stats.samples} samples > limit of {self.max_samples})"
            )

    async def _fetch_rollup(self, plan: FetchPlan, open_only: bool = True, shared: _EdgeRead | None = None) -> None:
        """Rollup rows for the plan (``_fetch_buckets``), with finer rows where a window ends or
        starts inside a bucket (not for plans whose exactness hinges on samples at bucket edges,
        ``edge_grids``):
        - when its end falls inside the newest bucket, still open (a query at "now"), that
          bucket's samples up to the end: an hour's from minute rows (built from raw samples as
          the rollup job builds them: ``_fetch_buckets``), the newest, partial minute as one row
          at its last sample's time. So a window ending at the plan's end holds every sample up
          to it (a series younger than a bucket has data); one ending earlier in that hour, the
          minutes whole by its end. ``open_only`` False: a partial minute of the open hour too
          (the range cache keeps no step of it);
        - over 1h rows, the closed hours in which a window of the plan's uses ends or starts at a
          time ``t``, while their minute rows are kept (30 d): as pieces of minute rows cut at
          every such ``t`` (``_hours_with_pieces``), so a window holds the minutes whole by its
          end, from the minute holding its start. Such a piece depends on ``t`` alone, never on
          the query's end or on minutes not closed by then, so the range cache may keep it.
        The hours' raw tail and the open hour's minutes come from one read (``_EdgeRead``);
        ``shared``: that read, for the open hour's part."""
        res = plan.resolution
        step = res.step_ms
        edge = plan.end_ms // step * step  # the start of the bucket holding the plan's end
        now = self.now_ms()
        open_tail = not (plan.edge_grids or plan.end_ms - edge == step - 1 or (open_only and edge + step <= now))
        lo = plan.start_ms // step * step
        stop = edge if open_tail else plan.end_ms + 1  # hours (whole or in pieces) before this
        cuts = np.zeros(0, dtype=np.int64)
        if res is Resolution.HOUR and not plan.edge_grids:
            cuts = _inner_cuts(plan.grids, max(lo, minutes_kept_from(now)), stop)
        if not open_tail and not len(cuts):
            await self._fetch_buckets(plan)
            return
        names = column_names(plan.columns)
        parts: list[FlatSeries] = []
        if res is Resolution.HOUR:
            shared = _EdgeRead(plan.end_ms) if open_tail else None  # (made by the hours' part)
            if stop > lo:
                whole = dataclasses.replace(plan, end_ms=stop - 1, data=[], flat=None, beyond=None)
                await self._fetch_buckets(whole, shared)
                hours = whole.flat if whole.flat is not None else _flat_data(whole.data, plan.columns, False)
                parts.extend(await self._hours_with_pieces(plan, hours, cuts))
            if open_tail:
                fine = FetchPlan(plan.matchers, edge, plan.end_ms, Resolution.MINUTE, plan.columns)
                await self._fetch_rollup(fine, open_only=False, shared=shared)
                parts.append(fine.flat if fine.flat is not None else _flat_data(fine.data, plan.columns, False))
        else:
            await self._fetch_buckets(plan, shared)
            if plan.flat is None or plan.beyond is None or not len(plan.beyond):
                return
            parts = [plan.flat, _at_last_sample(plan.beyond, res, names)]
        if any(f.agg is None for f in parts if len(f.ts)):
            # (a store without the aggregate columns: the whole buckets alone, as before)
            plan.data, plan.flat, plan.beyond, plan.finer_rows = [], None, None, 0
            await self._fetch_buckets(plan)
            return
        parts = [f for f in parts if len(f.ts)]
        plan.flat = _join_flats(parts, names) if parts else _flat_rows(Rows.empty(), res, names)
        plan.data, plan.beyond, plan.on_grid = [], None, False

    async def _hours_with_pieces(self, plan: FetchPlan, hours: FlatSeries, cuts: np.ndarray) -> list[FlatSeries]:
        """``hours`` (the plan's 1h rows) in time order, the hours holding ``cuts`` (window edges
        inside closed hours, ``_inner_cuts``) replaced by pieces of their minute rows
        (``_pieces``): read in spans (``_finer_spans``) and counted in ``plan.finer_rows``. A cut
        inside a minute while raw samples are kept (``raw_kept_from``) cuts that minute from
        them (``_cut_minutes``); else it is moved to the minute's start. When the minutes would
        take the query past its sample limit, or the store gives no aggregate columns, the
        hours stay whole (the approximation, as before)."""
        if not len(cuts) or hours.agg is None:
            return [hours]
        spans = _finer_spans(np.unique(cuts // HOUR_MS * HOUR_MS))
        minutes = sum(z - a for a, z in spans) // MINUTE_MS
        if len(hours.ts) + len(hours.labels) * minutes > self.max_samples:
            return [hours]
        inner = (cuts % MINUTE_MS != 0) & (cuts >= raw_kept_from(self.now_ms()))
        exact = cuts[inner]
        bounds_all = np.unique(np.where(inner, cuts, cuts // MINUTE_MS * MINUTE_MS))
        reads = [FetchPlan(plan.matchers, a, z - 1, Resolution.MINUTE, plan.columns, keep_rows=plan.keep_rows) for a, z in spans]
        fine, subs = await asyncio.gather(
            asyncio.gather(*(self._fetch_buckets(p) for p in reads)), self._cut_minutes(plan, exact)
        )
        flats = [p.flat if p.flat is not None else _flat_data(p.data, plan.columns, False) for p in reads]
        if any(f.agg is None for f in flats if len(f.ts)):
            return [hours]
        plan.finer_rows += sum(len(f.ts) for f in flats)
        h_start = hours.ts - (HOUR_MS - 1)
        out, after = [], np.iinfo(np.int64).min
        for (a, z), f in zip(spans, flats, strict=True):
            out.append(_flat_keep(hours, (h_start >= after) & (h_start < a)))
            bounds = np.union1d(np.arange(a, z + 1, HOUR_MS), bounds_all[(bounds_all > a) & (bounds_all < z)])
            mine = None
            if subs is not None:
                s_start = subs.ts - (MINUTE_MS - 1)
                mine = _flat_keep(subs, (s_start >= a) & (s_start < z))
            out.append(_pieces(f, hours, a, z, bounds, mine, column_names(plan.columns)))
            after = z
        out.append(_flat_keep(hours, h_start >= after))
        return [f for f in out if len(f.ts)]

    async def _cut_minutes(self, plan: FetchPlan, cuts: np.ndarray) -> FlatSeries | None:
        """Rows of the minutes holding ``cuts`` (inside them), between the cuts, built from raw
        samples as the rollup job builds minute rows (``fine_rows``), as flat series at their
        first millisecond + a minute - 1 (``_pieces`` reads them so). One select per rollup
        window (2 h, ``DEFAULT_WINDOW_MS``) holding cuts, from its first cut minute to its last:
        a sealed window's samples are one block per series, decoded once (the minutes between
        are built too, and replace their minute rows); the samples read count in
        ``plan.finer_rows``. The first row of a run lacks the counter increase from the sample
        before it: ``_pieces`` adds it."""
        if not len(cuts):
            return None
        first = np.unique(cuts // MINUTE_MS * MINUTE_MS)
        new = np.diff(first // DEFAULT_WINDOW_MS) != 0
        runs = zip(first[np.concatenate(([True], new))].tolist(), (first[np.concatenate((new, [True]))] + MINUTE_MS).tolist(), strict=True)
        names = column_names(plan.columns)

        async def run(a: int, z: int) -> FlatSeries:
            raw = RawFlat.of(await self._select_tail(list(plan.matchers), a, z - 1))
            plan.finer_rows += len(raw.ts)
            bounds = np.union1d(np.arange(a, z, MINUTE_MS), cuts[(cuts > a) & (cuts < z)])
            return _flat_rows(fine_rows(raw, a, z, MINUTE_MS, cuts=bounds).by_labels(), Resolution.MINUTE, names)

        todo, made = list(runs), []
        for wave in slices(todo, RAW_CUT_CONCURRENCY):
            made.extend(await asyncio.gather(*(run(a, z) for a, z in wave)))
        parts = [f for f in made if len(f.ts)]
        return _join_flats(parts, names) if parts else None

    async def _fetch_buckets(self, plan: FetchPlan, edge: _EdgeRead | None = None) -> None:
        """Rollup rows for the plan; the newest buckets (which the rollup job may not have
        written yet) are computed from raw samples (``edge``: the read shared with the open
        hour's part of a plan, ``_EdgeRead``)."""
        res = plan.resolution
        step = res.step_ms
        lo = (plan.start_ms // step) * step
        now = self.now_ms()
        # Buckets that ended more than rollup_lag_ms ago are complete: read them where written.
        tail = ((now - self.rollup_lag_ms) // step) * step
        matchers = list(plan.matchers)
        gap = _tail_gap_ms(plan.columns)
        raw_floor = ((now - QUERY_RAW_HORIZON_MS) // step + 1) * step
        if lo >= now - RECENT_FROM_RAW_MS and lo >= raw_floor:
            # Recent windows only (a cache refresh): build the buckets from raw samples,
            # which gives the rollup job's rows exactly, with one read.
            built = await self._rows_from_raw(matchers, lo, plan.end_ms + 1, step, now, gap_ms=gap, edge=edge)
            built, plan.beyond = _split_beyond(built, plan.end_ms, step)
            plan.flat = _flat_rows(built, res, column_names(plan.columns))
            return
        guess = max(tail, lo, raw_floor)
        # Read the raw tail where the rollup job usually is, alongside the rollup rows.
        raw_task = None
        raw_from = guess
        led = False  # (read from raw_from: the kept chain ends there stand for the counter gap)
        if plan.end_ms >= guess:
            reach = self._memo_reach(matchers, guess, step, gap)
            if reach is not None:
                raw_from, led = reach
            upto = plan.end_ms if edge is None else max(plan.end_ms, edge.upto)
            raw_task = asyncio.ensure_future(self._select_tail(matchers, raw_from - (0 if led else gap), upto))
        try:
            # Rows from ``guess`` on are never used (the tail starts at or before it).
            rows = await self._stored_rows(plan, lo, min(plan.end_ms, guess - 1))
        except BaseException:
            if raw_task is not None:
                raw_task.cancel()
            raise
        # Where each series' stored rows end. The rollup job writes shard by shard, so the
        # series of one shard can be a pass (a minute of fresh rows, or a window) behind
        # another's: every series takes its own rows up to its own end and rows built from
        # raw samples after it. Series whose rows end more than TAIL_SKEW_MS before the
        # newest have stopped reporting (their rows are all there is), not fallen behind.
        ends = {d.series.id: int(d.timestamps[-1]) + step for d in rows if d.timestamps.shape[0]}
        if ends:
            newest = max(ends.values())
            tail = min(tail, min(e for e in ends.values() if e >= newest - TAIL_SKEW_MS))
        else:
            tail = lo
        tail = max(tail, lo, raw_floor)
        if plan.end_ms < tail:
            if raw_task is not None:
                raw_task.cancel()
            plan.data = rows
            return
        prefetched = None
        if raw_task is not None and tail >= guess:
            prefetched = (raw_from, await raw_task, led)
        elif raw_task is not None:
            raw_task.cancel()
        built = await self._rows_from_raw(matchers, tail, plan.end_ms + 1, step, now, prefetched, gap, edge)
        # Series i: stored rows before split_i, rows built from raw from split_i on.
        split = {sid: min(max(e, tail), guess) for sid, e in ends.items()}
        if len(built) and any(v != tail for v in split.values()):
            starts = np.array([split.get(ser.id, tail) for ser in built.series], dtype=np.int64)
            built = built.keep(built.ts >= starts[built.sidx])
        cut = _rows_before(rows, split, tail, res)
        first = next((d for d in cut if len(d)), None)
        names = column_names(plan.columns)
        if first is None or (first.agg is not None and all(k in first.agg for k in names)):
            # (a store returns the asked aggregate columns of every series, or none)
            built, plan.beyond = _split_beyond(built, plan.end_ms, step)
            plan.flat = _flat_parts(cut, built, res, names)
            return
        # One series may come in two parts (stored rows, then rows built from raw); flat_of
        # joins consecutive parts of a series.
        parts: dict[int, list[SeriesData]] = {d.series.id: [d] for d in cut if len(d)}
        for d in built.parts(res):
            parts.setdefault(d.series.id, []).append(d)
        ordered = sorted(parts.values(), key=lambda ps: ps[0].series.labels)
        plan.data = [p for ps in ordered for p in ps]

    async def _stored_rows(self, plan: FetchPlan, start_ms: int, end_ms: int) -> list[SeriesData]:
        """The plan's stored rollup rows of buckets starting in [start_ms, end_ms], all complete
        (they end by now - rollup lag: ``_fetch_buckets`` reads no newer ones); for a range
        cache's query (``plan.keep_rows``) kept in the tail memo (``TailMemo.stored``) for its
        next refresh's same select (a 1 y panel's newest step reads the same 7 hours each minute)."""
        matchers, res, columns = list(plan.matchers), plan.resolution, plan.columns
        if self.tail_memo is None or not plan.keep_rows or end_ms < start_ms:
            return await self.storage.select(matchers, start_ms, end_ms, res, columns=columns)
        key = (tuple(plan.matchers), res, columns, start_ms, end_ms)
        rows = self.tail_memo.stored(key)
        if rows is None:
            rows = await self.storage.select(matchers, start_ms, end_ms, res, columns=columns)
            if self.tail_memo.keeps(rows):
                rows = _compact_rows(rows, column_names(columns) if columns is not None else None)
                self.tail_memo.keep_stored(key, rows)
        return rows

    async def _select_tail(self, matchers: list, start_ms: int, end_ms: int) -> list[SeriesData] | FlatSamples:
        """Raw samples that rows are built from (``fine_rows``): a store's flat columns where
        it gives them (``FlatRawReader``: a panel's raw tail of 800 series made a ``SeriesData``
        of each that ``RawFlat`` joined back), else ``select``'s series."""
        if isinstance(self.storage, FlatRawReader) and end_ms - start_ms <= RAW_FETCH_PIECE_MS:
            return await self.storage.select_flat(matchers, start_ms, end_ms)
        return await self.storage.select(matchers, start_ms, end_ms)

    def _memo_reach(self, matchers: list, start_ms: int, step_ms: int, gap_ms: int) -> tuple[int, bool] | None:
        if self.tail_memo is None:
            return None
        fine = fine_step(start_ms, step_ms)
        return self.tail_memo.reach((tuple(matchers), fine, step_ms, gap_ms), start_ms)

    async def _rows_from_raw(
        self,
        matchers: list,
        start_ms: int,
        end_ms: int,
        step_ms: int,
        now: int,
        prefetched: tuple[int, list[SeriesData] | FlatSamples, bool] | None = None,
        gap_ms: int = DEFAULT_MAX_GAP_MS,
        edge: _EdgeRead | None = None,
    ) -> Rows:
        """Rollup rows of [start_ms, end_ms) built from raw samples as the rollup job builds
        them (series sorted by labels). The rows of complete minutes are kept in the tail memo (the
        last bucket possibly in part) and taken from it, so raw samples are read only from
        where the memo ends (with the memo's chain ends in place of the counter gap before).
        ``prefetched``: raw samples already read from (that time - ``gap_ms``) on, or from
        that time on (its flag: the memo's chain ends there stand for the gap). ``gap_ms``:
        how far before ``start_ms`` (or where the memo ends) raw samples are read, for the
        counter increase of the first samples (``_tail_gap_ms``); the memo keeps the rows of
        each gap apart (rows built without it lack the first samples' increases). ``edge``
        (``_EdgeRead``): a read made here reaches ``edge.upto`` and is kept there; one kept
        there that holds the samples needed is used instead of reading (``prefetched`` then
        read up to ``edge.upto`` too)."""
        fine = fine_step(start_ms, step_ms)
        key = (tuple(matchers), fine, step_ms, gap_ms)
        whole = end_ms // fine * fine  # fine buckets before this hold every sample they will get
        hit = self.tail_memo.lookup(key, start_ms, whole) if self.tail_memo is not None else None
        kept, need_from, chain = hit if hit is not None else (Rows.empty(), start_ms, None)
        fresh = Rows.empty()
        raw: list[SeriesData] | FlatSamples | RawFlat = []
        lead = None
        if need_from < end_ms:
            upto = end_ms - 1 if edge is None else max(end_ms - 1, edge.upto)
            read_from = need_from
            if edge is not None and edge.data is not None and edge.start_ms <= need_from and edge.upto >= end_ms - 1:
                # (the samples the hours' part of the plan read: ``_EdgeRead``)
                raw, lead, edge = edge.data, edge.lead, None
            elif prefetched is not None and (
                prefetched[0] == need_from and chain is not None and chain.before_ms == need_from
                if prefetched[2] else prefetched[0] <= need_from
            ):
                raw, read_from = prefetched[1], prefetched[0]
                lead = chain if prefetched[2] else None
            elif chain is not None and chain.before_ms == need_from:
                # The kept chain ends stand for the counter gap before need_from.
                raw = await self._select_tail(matchers, need_from, upto)
                lead = chain
            else:
                raw = await self._select_tail(matchers, need_from - gap_ms, upto)
            raw = RawFlat.of(raw)
            if edge is not None and edge.data is None:
                edge.start_ms, edge.data, edge.lead = read_from, raw, lead
            fresh = fine_rows(raw, need_from, end_ms, fine, chain=lead)
        complete = min((now - self.rollup_lag_ms) // fine * fine, whole)
        if complete > need_from:
            # Fold the minutes now complete into the kept rows (sums stay in time order, as
            # the rollup job adds them) and keep those for the next refresh.
            kept = concat(kept, fresh.between(need_from, complete))
            if fine != step_ms:
                kept = combine(kept, start_ms, step_ms)
            fresh = fresh.between(complete, end_ms)
            if self.tail_memo is not None:
                # (rows read without the gap need no counter chain ends either: ``_tail_gap_ms``)
                ends = chain_ends(raw, complete, carried=lead or chain) if gap_ms else None
                self.tail_memo.store(key, kept, start_ms, complete, ends)
        built = concat(kept, fresh)
        if fine != step_ms:
            built = combine(built, start_ms, step_ms)
        return built.by_labels()

    def _estimate(self, ev: Evaluator, node: P.Node, times: np.ndarray, fetched: bool = True) -> Estimate:
        """The query's points, estimated from the series fetched (one a selector before the
        fetch) and the steps its grids imply; over the sample limit or the memory budget,
        refused before evaluating."""

        def series_of(sel: P.VectorSel) -> tuple[int, int]:
            if not fetched:
                return 1, 0
            plan = ev.plan_of(sel)
            if plan is None:
                return 0, 0
            if plan.flat is not None:
                series, samples = len(plan.flat.labels), len(plan.flat.ts)
                if plan.beyond is not None and len(plan.beyond):
                    # (series whose rows all end after the plan's end are held too, as rows)
                    flat = set(plan.flat.labels)
                    more = {plan.beyond.series[i].labels for i in np.unique(plan.beyond.sidx).tolist()}
                    series, samples = series + len(more - flat), samples + len(plan.beyond)
                if plan.edge_raw:
                    samples += samples_of(plan.edge_raw)
                return series, samples
            if plan.raw is not None:
                return len(plan.raw.series), plan.raw.timestamps.shape[0]
            return len(plan.data), samples_of(plan.data)

        est = estimate_points(
            node, int(times[0]), int(times[-1]), len(times),
            series_of=series_of, at_ms=ev.at_ms, subquery_step_ms=self.subquery_step_ms,
        )
        if est.points > self.limits.max_samples:
            raise QueryLimitError(too_many(est.points, self.limits.max_samples, "estimated "))
        if est.points * BYTES_PER_POINT > self.limits.max_memory_bytes:
            raise QueryMemoryError(over_memory(est.points, self.limits.max_memory_bytes))
        return est

    def _evaluate(
        self, ev: Evaluator, node: P.Node, times: np.ndarray, instant: bool, encode: Encoder | None = None
    ) -> QueryResult:
        result = self._result(ev, node, times, instant)
        result.warnings.extend(ev.notes)  # (before encoding: the encoded answer carries them)
        if encode is None:
            return result
        return QueryResult(result.type, warnings=result.warnings, encoded=encode(result))

    def _result(self, ev: Evaluator, node: P.Node, times: np.ndarray, instant: bool) -> QueryResult:
        with np.errstate(all="ignore"):
            value = ev.eval(node, times)
        if isinstance(value, String):
            return QueryResult("string", string=(int(times[0]), value.value))
        if isinstance(value, Scalar):
            if instant:
                return QueryResult("scalar", scalar=(int(times[0]), float(value.values[0])))
            return QueryResult("matrix", [ResultSeries({}, times.copy(), value.values.astype(np.float64))])
        if isinstance(value, RangeVector):
            out = []
            for i, lab in enumerate(value.labels):
                lo, hi = value.windows(i)
                a, b = int(lo[0]), int(hi[0])
                if b > a:
                    out.append(ResultSeries(dict(lab), value.ts[i][a:b].copy(), value.vals[i][a:b].copy()))
            out.sort(key=lambda s: sorted(s.labels.items()))
            return QueryResult("matrix", out)
        assert isinstance(value, InstantVector)
        value = drop_names(value)
        if instant:
            series = [
                ResultSeries(dict(lab), times[:1].copy(), value.values[i, :1].copy())
                for i, lab in enumerate(value.labels)
                if value.present[i, 0]
            ]
            if not _is_sorted_output(node):
                series.sort(key=lambda s: sorted(s.labels.items()))
            return QueryResult("vector", series)
        series = []
        for i, lab in enumerate(value.labels):
            p = value.present[i]
            if p.any():
                series.append(ResultSeries(dict(lab), times[p], value.values[i][p]))
        series.sort(key=lambda s: sorted(s.labels.items()))
        return QueryResult("matrix", series)


def check_histogram_use(value: Value, parent: P.Node | None) -> None:
    """QueryError when histogram samples would reach an operation that has no histogram support."""
    from query.histogram import ref_mask

    if isinstance(value, InstantVector):
        has = bool(len(value.labels)) and bool((ref_mask(value.values) & value.present).any())
    elif isinstance(value, RangeVector):
        has = bool(len(value.vals_flat)) and bool(ref_mask(value.vals_flat).any())
    else:
        return
    if not has or parent is None:
        return
    if isinstance(parent, P.Call) and parent.name in HISTOGRAM_FUNCTIONS:
        return
    if isinstance(parent, P.Binary) and parent.op in ("and", "or", "unless"):
        return
    if isinstance(parent, P.Call):
        what = f"{parent.name}()"
    elif isinstance(parent, P.Aggregate):
        what = f"the {parent.op} aggregation"
    elif isinstance(parent, P.Binary):
        what = f"the {parent.op} operator"
    elif isinstance(parent, P.Negate):
        what = "unary minus"
    else:
        what = "subqueries"
    raise QueryError(f"native histograms are not supported by {what}")


# Functions that take native histogram samples (they read counts/sums, or only presence and
# timestamps, or pass the sample through unchanged).
HISTOGRAM_FUNCTIONS = frozenset({
    "histogram_count", "histogram_sum", "histogram_avg", "timestamp", "absent", "absent_over_time",
    "present_over_time", "count_over_time", "last_over_time",
})


def _is_sorted_output(node: P.Node) -> bool:
    """True when the expression defines its own output order (sort*, topk/bottomk)."""
    if isinstance(node, P.Call) and node.name.startswith("sort"):
        return True
    if isinstance(node, P.Aggregate) and node.op in ("topk", "bottomk"):
        return True
    return False
