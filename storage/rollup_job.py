"""The rollup job: seal closed windows of raw samples into blocks, write 1m and 1h rollups.

Time is cut into windows of ``window_ms`` (a whole number of hours dividing a day,
default 2 h), series into ``shards`` by ``series_id % shards``. For one (shard, window):

1. read the shard's raw samples in ``[start - max_gap, end)`` from the store (the
   samples before ``start`` only carry counters into the window, see ``storage.rollup``);
2. per series, encode the samples inside the window into one block
   (``storage.blocks.encode_block``) keyed by (series, window start);
3. compute 1-minute rollups from raw and 1-hour rollups from the 1-minute ones;
4. write blocks, 1m rows, 1h rows - all upserts keyed by (series, start), so a rerun
   of a window rewrites identical rows;
5. advance the shard's checkpoint (kept in the store) to ``end``.

A window is closed once ``now >= end + grace_ms``. Copies of the job take shards with a
``ShardLease`` (ZooKeeper or local locks); a copy only works shards it holds, and since
every step is idempotent a lease lost mid-window costs duplicate work, never wrong rows.
With a store that reads several shards' windows at once (``RawWindowGroups``: Cassandra,
whose scrape frames hold every shard's series) a copy leases up to ``shards_at_once``
shards (default: all it can) and works the shards at the same checkpoint together - one
read, one computation, one set of writes per window, a checkpoint and a result per shard;
else one shard at a time.
``backfill(from, to)`` redoes every window of a range for every shard without touching
checkpoints. The job's own metrics live in its ``CollectorRegistry``.

Late samples: a write carrying samples older than the store's ``late_after_ms`` (a spool
replay after an outage, an operator backfill) leaves a late mark (hour, time of the write)
in the store. After a shard's normal windows, still under its lease, ``run_once`` makes its
*late pass*: it reads the marks after the shard's late cursor (a checkpoint of job
``<job>:late``: the last mark handled, by write time then hour) and, for every mark whose
write is settled (older than ``late_settle_ms``), redoes the windows the hour feeds (its
own, and the next one when counters carry over the boundary) if they are already behind
the shard's checkpoint; windows not sealed yet will read the rows anyway. At most
``late_windows_per_pass`` windows per shard and pass; the cursor advances over marks fully
handled only, so the rest follows in the next pass and a failed window is retried.

Dropping sealed raw input (``SealedRawDrop``: Cassandra, whose frames hold every shard's
series and would stay until their TTL): after each pass, the raw partitions of hours every
shard has sealed, and whose late marks every shard handled, once the store's query reads take
them from blocks (``drop_sealed_raw``); the store's window reads then add those hours' blocks.

Fresh minutes: a shard that is caught up (its checkpoint is the start of the open window)
then gets a *fresh pass*: the 1-minute buckets of the open window from where the last
fresh pass of this copy stopped up to ``now - grace_ms`` (a minute boundary, down to a whole
number of ``fresh_every_ms`` from the window's start: raw chunk spans), computed from
raw exactly as the window's seal will compute them and written as provisional chunks
(``write_fresh_minutes``, optional for a backend; ``storage.rollup_chunks``), at most every
``fresh_every_ms``. Without them a query reads the newest rollup rows up to 2 h 5 min old
and builds the rest from raw samples; with them it reads raw samples for the last few
minutes only. The seal replaces them with the final buckets (equal unless samples arrived
later than the grace). Cost: each fresh pass reads the shard's raw samples since the last
one, through ``read_raw_window`` (shards leased together at once; with ``FreshGroups``,
SQLite, the fresh pass alone: ``FRESH_GROUP_SHARDS`` shards and up to ``FRESH_GROUP_SPAN_MS`` at once), so at large scale raise
``fresh_every_ms``; the 5-minute counter lookback only on a copy's first pass of a group of
shards: after it, each series' last sample before the pass's start comes from the pass
before (``fresh_carry``: the same minutes unless samples arrived later than the grace).
With a ``FreshBlocks`` store (Cassandra) the job keeps the minutes its passes wrote of the
current block (10 minutes there) and each pass writes the block's minutes from its start
(``join_fresh``), so the store rewrites one provisional chunk per series and block instead
of adding one per pass.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterator, Sequence
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Any, Protocol, TextIO, cast, runtime_checkable

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from common.gc_tuning import gc_paused
from common.sequences import slices
from storage.base import (
    AGGREGATES,
    DAY_MS,
    HOUR_MS,
    MINUTE_MS,
    FreshBlocks,
    FreshMinutes,
    GroupedBlocks,
    LateMarks,
    Resolution,
    RetentionByDeletion,
    SealWrites,
    SeriesData,
)
from storage.blocks import encode_blocks
from storage.rollup import DEFAULT_MAX_GAP_MS, Rollup, rollup_raw_many, rollup_rollup_many
from storage.rollup_lease import ShardLease

log = logging.getLogger("ringmon.rollup")

DEFAULT_WINDOW_MS = 2 * HOUR_MS
DEFAULT_SHARDS = 16
DEFAULT_GRACE_MS = 5 * MINUTE_MS
# A late mark is acted on once its write is this old: covers the write's time in flight and
# clock skew between writers and the job; equal to the Cassandra read path's margin for
# trusting a block over a late hour's rows, so a resealed block is trusted by reads.
DEFAULT_LATE_SETTLE_MS = 15 * MINUTE_MS
JOB_NAME = "rollup"
# The longest span a fresh pass reads for several shards at once through ``FreshGroups``
# (unless ``fresh_every_ms`` is longer): at 100,000 series every 5 s, 10 minutes are 12 M samples.
FRESH_GROUP_SPAN_MS = 10 * MINUTE_MS
# Shards a ``FreshGroups`` store's fresh pass reads at once: all 16 at once held every series'
# minutes and frames together (peak RSS 578 -> 954 MiB at 100,000 series); 4 keep most of the
# saving (a frame decoded for 4 shards, not 1) at a quarter of that.
FRESH_GROUP_SHARDS = 4


@dataclass(frozen=True, slots=True)
class SealedBlock:
    """One series' raw samples of one window, compressed (``storage.blocks`` format)."""

    series_id: int
    start_ms: int  # window start: the block's key, stable across reruns
    end_ms: int  # window end (exclusive)
    count: int  # samples in the block
    first_ts: int
    last_ts: int
    data: bytes


@dataclass(frozen=True, slots=True)
class RollupRows:
    """One series' rollup buckets of one window at one resolution."""

    series_id: int
    rollup: Rollup


@runtime_checkable
class RollupStore(Protocol):
    """What the rollup job needs of a backend (additive to ``storage.base.Storage``).

    The data flow it serves: docs/ARCHITECTURE.md, "The job (storage/rollup_job.py)".
    """

    async def read_raw_window(self, shard: int, shards: int, start_ms: int, end_ms: int) -> list[SeriesData]:
        """Raw samples with ts in [start_ms, end_ms) of every series with
        ``series_id % shards == shard`` (Python modulo) that has samples there.

        Bit-exact values (stale markers kept), timestamps ascending and unique per
        series; sealed blocks and unsealed rows merged. Order of series is free.
        """
        ...

    async def write_blocks(self, blocks: Sequence[SealedBlock]) -> None:
        """Upsert blocks keyed by (series_id, start_ms)."""
        ...

    async def write_rollups(self, resolution: Resolution, rows: Sequence[RollupRows]) -> None:
        """Upsert buckets keyed by (series_id, bucket start) with all six aggregates."""
        ...

    async def get_checkpoint(self, job: str, shard: int) -> int | None:
        """End (ms) of the last window done contiguously for this shard, or None."""
        ...

    async def set_checkpoint(self, job: str, shard: int, window_end_ms: int) -> None:
        """Record progress; never moves a checkpoint backwards."""
        ...

    # Optional, each a Protocol of storage.base: LateMarks (without it the job makes no late
    # pass; it keeps its cursor per shard with get/set_checkpoint under job ``<job>:late``),
    # FreshMinutes (the fresh pass), RetentionByDeletion (stores without TTLs), SealWrites (a
    # window's blocks and rollups written in one go).


@runtime_checkable
class RawWindowArrays(Protocol):
    """Optional for a ``RollupStore``: its raw window as one set of arrays, without a
    ``Series`` per series (the job needs only ids; else the job joins ``read_raw_window``),
    and the raw rows a seal made redundant dropped (a store whose reads take sealed blocks
    for what they hold: SQLite; Cassandra's raw rows expire by TTL)."""

    async def read_raw_window_arrays(
        self, shard: int, shards: int, start_ms: int, end_ms: int, seal_from_ms: int | None = None
    ) -> RawWindow:
        """What ``read_raw_window`` gives, as a ``RawWindow``; with ``seal_from_ms`` (a seal of
        [seal_from_ms, end_ms)) its ``sealed_rows`` are the raw rows of that window read."""
        ...

    async def drop_sealed_raw(self, rows: Sequence[tuple[int, int, int]]) -> int:
        """Delete the ``sealed_rows`` of a window whose blocks are written, unless written to
        since they were read; returns how many went."""
        ...


@runtime_checkable
class SealedRawDrop(Protocol):
    """Optional for a ``RollupStore`` whose raw input would otherwise stay until its TTL after
    the seal (Cassandra: scrape frames and raw rows): the raw partitions of hours that every
    shard has sealed are dropped, the job deciding when (``RollupJob.drop_sealed_raw``).
    After a drop, the store's window reads take those hours from the sealed blocks plus
    whatever raw input arrived since (a late write), and its query reads take them from
    blocks (hours older than ``raw_hot_ms``)."""

    raw_hot_ms: int  # the store's query reads take the newest this-many ms from raw input only
    raw_drop_skew_ms: int  # raw input written this long before a drop starts survives it (clock skew, in flight)

    def can_drop_raw(self, window_ms: int) -> bool:
        """Whether reads find the blocks of windows this long (else nothing is dropped)."""
        ...

    def raw_drop_stamp_us(self) -> int:
        """The write time (us, the writers' clock) up to which raw input a drop starting now
        may delete: input written later survives it (its late mark is read after this)."""
        ...

    async def drop_raw_hours(self, start_ms: int, end_ms: int, written_before_us: int) -> int:
        """Drop the raw input of the hours of [start_ms, end_ms) written up to
        ``written_before_us``; returns the partitions dropped."""
        ...

    async def raw_writers_floor_ms(self) -> int | None:
        """The oldest time from which some writer may still store raw input that needs raw
        input already stored (a spooled frame XOR'd with a stored one: ``storage.writer``);
        no hour at or after it is dropped. None: no writer holds one."""
        ...


@runtime_checkable
class RawWindowGroups(Protocol):
    """Optional for a ``RollupStore``: the raw window of several shards read at once, cheaper
    than shard by shard (Cassandra: a scrape frame holds every shard's series, so a group's
    read decodes each frame once instead of once per shard, and reads the index once). With
    it, the job works a window of every shard it holds at once (``RollupJob.shards_at_once``)."""

    async def read_raw_window_group(
        self, group: Sequence[int], shards: int, start_ms: int, end_ms: int, *, kept_index: bool = False
    ) -> RawWindow:
        """What ``read_raw_window_arrays`` gives for each shard of ``group``, as one
        ``RawWindow`` (no ``sealed_rows``). ``kept_index``: the series index may be taken from
        a recent read while unchanged (a fresh pass; a seal reads it)."""
        ...


@runtime_checkable
class FreshGroups(Protocol):
    """Optional for a ``RollupStore`` without ``RawWindowGroups``: the *fresh pass* of several
    shards read at once, while seals stay one shard at a time (SQLite: a scrape frame holds
    every shard's series of its target, so one read decodes each frame once and one write
    transaction takes every shard's minutes, not 16 of each a minute - issue #20; a seal names
    the raw rows it drops, and a window of every shard at once would be held in memory).
    With it the job leases up to ``shards_at_once`` shards together, as with group reads."""

    async def read_fresh_group(self, group: Sequence[int], shards: int, start_ms: int, end_ms: int) -> RawWindow:
        """What ``read_raw_window_arrays`` gives for each shard of ``group``, as one
        ``RawWindow`` (no ``sealed_rows``)."""
        ...


class RollupMetrics:
    """The job's own metrics, in a registry the process serves on /metrics."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.windows_done = Counter(
            "ringmon_rollup_windows_total", "Shard windows sealed and rolled up", ["mode"], registry=r
        )
        self.samples_sealed = Counter(
            "ringmon_rollup_samples_sealed_total", "Raw samples sealed into blocks", registry=r
        )
        self.block_bytes = Counter(
            "ringmon_rollup_block_bytes_total", "Bytes of sealed blocks written", registry=r
        )
        self.rollup_points = Counter(
            "ringmon_rollup_points_total", "Rollup buckets written", ["resolution"], registry=r
        )
        self.errors = Counter(
            "ringmon_rollup_errors_total", "Shard windows that failed (retried later)", registry=r
        )
        self.lag = Gauge(
            "ringmon_rollup_lag_seconds",
            "How far the oldest checkpoint of the shards this copy looked at is behind the newest"
            " closed window (0 when caught up; the open window is covered by the fresh pass)",
            registry=r,
        )
        self.late_backlog = Gauge(
            "ringmon_rollup_late_marks_pending",
            "Settled late marks the last late pass left for the next one (shards this copy held)",
            registry=r,
        )
        self.shards_held = Gauge(
            "ringmon_rollup_shards_held", "Shards this copy held in its last pass", registry=r
        )
        self.raw_dropped = Counter(
            "ringmon_rollup_raw_partitions_dropped_total",
            "Raw partitions (target, hour) of sealed hours dropped (stores whose raw input has a TTL)",
            registry=r,
        )
        self.window_seconds = Histogram(
            "ringmon_rollup_window_duration_seconds",
            "Time to seal and roll up one window of one shard, or of the shards worked together",
            buckets=(0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300),
            registry=r,
        )


class ProgressBar:
    """A one-line progress bar on a terminal stream (plain lines when not a TTY)."""

    def __init__(self, total: int, label: str, stream: TextIO | None = None, width: int = 30) -> None:
        self.total = max(total, 0)
        self.label = label
        self.stream = stream if stream is not None else sys.stderr
        self.width = width
        self.done = 0
        self.started = time.monotonic()
        self._last_draw = 0.0
        self._tty = bool(getattr(self.stream, "isatty", lambda: False)())

    def update(self, n: int = 1) -> None:
        self.done += n
        now = time.monotonic()
        if self.done >= self.total or now - self._last_draw >= (0.2 if self._tty else 5.0):
            self._last_draw = now
            self._draw(now)

    def _draw(self, now: float) -> None:
        frac = self.done / self.total if self.total else 1.0
        filled = int(frac * self.width)
        elapsed = now - self.started
        eta = (elapsed / self.done * (self.total - self.done)) if self.done else 0.0
        line = (
            f"{self.label} [{'#' * filled}{'.' * (self.width - filled)}] {self.done}/{self.total} "
            f"{frac * 100:5.1f}% {elapsed:6.1f}s elapsed, eta {eta:6.1f}s"
        )
        self.stream.write(("\r" + line) if self._tty else (line + "\n"))
        self.stream.flush()

    def close(self) -> None:
        self._draw(time.monotonic())
        if self._tty:
            self.stream.write("\n")
            self.stream.flush()


@dataclass(slots=True)
class WindowResult:
    """What one shard window produced (for logs, metrics and tests)."""

    shard: int
    start_ms: int
    end_ms: int
    series: int = 0
    samples: int = 0
    block_bytes: int = 0
    minute_points: int = 0
    hour_points: int = 0
    mode: str = "live"  # live, backfill, late or fresh


@dataclass(frozen=True, slots=True)
class RawWindow:
    """Raw samples of many series, concatenated: series ``ids[i]`` (ascending) is rows
    ``bounds[i]:bounds[i + 1]`` of ``timestamps`` (ascending within a series) and ``values``.
    The job's input as one set of arrays, so that it works a whole shard window with a few
    NumPy calls instead of a few dozen per series."""

    ids: np.ndarray  # int64
    bounds: np.ndarray  # int64, len(ids) + 1
    timestamps: np.ndarray  # int64 ms
    values: np.ndarray  # float64, bit-exact
    # the raw rows a seal read that its blocks hold, as the store recorded them (``RawWindowArrays``)
    sealed_rows: Sequence[tuple[int, int, int]] = ()

    @classmethod
    def of(cls, data: Sequence[SeriesData]) -> RawWindow:
        """From per-series samples (any order of series; a series' samples are put in time
        order, stably, when they are not)."""
        ordered = sorted(data, key=lambda d: d.series.id)
        sizes = np.fromiter((len(d.timestamps) for d in ordered), dtype=np.int64, count=len(ordered))
        bounds = np.zeros(len(ordered) + 1, dtype=np.int64)
        np.cumsum(sizes, out=bounds[1:])
        ids = np.fromiter((d.series.id for d in ordered), dtype=np.int64, count=len(ordered))
        if not ordered:
            return cls(ids, bounds, np.empty(0, dtype=np.int64), np.empty(0, dtype=np.float64))
        ts = np.concatenate([np.asarray(d.timestamps, dtype=np.int64) for d in ordered])
        vals = np.concatenate([np.asarray(d.values, dtype=np.float64) for d in ordered])
        return cls(ids, bounds, *_time_ordered(ts, vals, bounds))


def _time_ordered(ts: np.ndarray, vals: np.ndarray, bounds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each series' samples in time order (a stable sort of the series out of order)."""
    if ts.size > 1:
        back = ts[1:] < ts[:-1]
        edges = bounds[1:-1] - 1  # a series' first sample may be older than the last one's
        back[edges[(edges >= 0) & (edges < back.size)]] = False
        if back.any():
            owner = np.repeat(np.arange(bounds.shape[0] - 1), np.diff(bounds))
            order = np.lexsort((ts, owner))
            ts, vals = ts[order], vals[order]
    return ts, vals


class RollupRowsList(list[RollupRows]):
    """``RollupRows`` of many series that also keeps their buckets as the one Rollup they are
    slices of (``flat``; item ``i`` is rows ``bounds[i]:bounds[i + 1]``), so a store writes
    them without joining them again (``storage.rollup_chunks.encode_columns_many``).

    A *lazy* one (``_rollup_rows(lazy=True)``, the fresh pass's) makes its items on the first
    iteration or indexing: a store that takes ``flat`` (SQLite) never needs them, and making
    one per series was most of a 100,000-series fresh pass's computation (issue #20)."""

    flat: Rollup
    bounds: np.ndarray
    ids: np.ndarray  # item ``i``'s series id
    _lazy: bool = False

    def _make_items(self) -> None:
        if self._lazy:
            self._lazy = False
            cols = [self.flat.timestamps, *(getattr(self.flat, n) for n in AGGREGATES)]
            b = self.bounds.tolist()
            super().extend(
                RollupRows(sid, Rollup(*(c[b[i] : b[i + 1]] for c in cols))) for i, sid in enumerate(self.ids.tolist())
            )

    def __len__(self) -> int:
        return int(self.ids.shape[0]) if self._lazy else super().__len__()

    def __iter__(self) -> Iterator[RollupRows]:
        self._make_items()
        return super().__iter__()

    def __getitem__(self, i: Any) -> Any:
        self._make_items()
        return super().__getitem__(i)


def _shard_counts(rows: Sequence[RollupRows], shards: int) -> tuple[list[int], list[int]]:
    """Per shard, the series of ``rows`` and their buckets (NumPy counts of a ``RollupRowsList``:
    no Python step per series, which a fresh pass of every series would make on the loop)."""
    if isinstance(rows, RollupRowsList):
        ids, sizes = rows.ids, np.diff(rows.bounds)
    else:
        ids = np.fromiter((r.series_id for r in rows), dtype=np.int64, count=len(rows))
        sizes = np.fromiter((len(r.rollup) for r in rows), dtype=np.int64, count=len(rows))
    shard_of = ids % shards
    series = np.bincount(shard_of, minlength=shards)
    points = np.bincount(shard_of, weights=sizes, minlength=shards)
    return series.tolist(), points.astype(np.int64).tolist()


def _points(rows: Sequence[RollupRows]) -> int:
    """The buckets of ``rows`` (of a ``RollupRowsList``: its one Rollup's length)."""
    return len(rows.flat) if isinstance(rows, RollupRowsList) else sum(len(r.rollup) for r in rows)


def _rollup_rows(ids: np.ndarray, rollup: Rollup, bounds: np.ndarray, lazy: bool = False) -> RollupRowsList:
    """Per series (those with buckets) its slice of many series' buckets (``lazy``: made when
    first asked for, ``RollupRowsList``)."""
    out = RollupRowsList()
    has = np.flatnonzero(np.diff(bounds))
    out.flat = rollup
    out.bounds = np.append(bounds[has], bounds[-1]) if has.size else np.zeros(1, dtype=np.int64)
    out.ids = ids[has]
    out._lazy = True
    if not lazy:
        out._make_items()
    return out


def compute_window(
    data: Sequence[SeriesData] | RawWindow, start_ms: int, end_ms: int, max_gap_ms: int = DEFAULT_MAX_GAP_MS,
    plain: bool = False,
) -> tuple[list[SealedBlock], list[RollupRows], list[RollupRows]]:
    """Blocks, 1m rows and 1h rows of one window from its raw samples (CPU only, pure),
    every series in one pass (``storage.rollup.rollup_raw_many``, ``storage.blocks.encode_blocks``);
    per series what ``rollup_raw``, ``rollup_rollup`` and ``encode_block`` give (``plain``:
    blocks whose columns are not compressed, for a ``GroupedBlocks`` store)."""
    w = data if isinstance(data, RawWindow) else RawWindow.of(data)
    ts, vals, bounds = w.timestamps, w.values, w.bounds
    # The samples inside the window, per series, make its block.
    inside = (ts >= start_ms) & (ts < end_ms)
    owner = np.repeat(np.arange(w.ids.shape[0]), np.diff(bounds))
    counts = np.bincount(owner[inside], minlength=w.ids.shape[0])
    has = np.flatnonzero(counts)
    b_bounds = np.zeros(has.shape[0] + 1, dtype=np.int64)
    np.cumsum(counts[has], out=b_bounds[1:])
    b_ts, b_vals = ts[inside], vals[inside]
    datas = encode_blocks(b_ts, b_vals, b_bounds, plain)
    firsts, lasts = b_ts[b_bounds[:-1]].tolist(), b_ts[b_bounds[1:] - 1].tolist()
    blocks = [
        SealedBlock(sid, start_ms, end_ms, n, first, last, d)
        for sid, n, first, last, d in zip(
            w.ids[has].tolist(), counts[has].tolist(), firsts, lasts, datas, strict=True
        )
    ]
    m, m_bounds = rollup_raw_many(ts, vals, bounds, start_ms, end_ms, MINUTE_MS, max_gap_ms)
    h, h_bounds = rollup_rollup_many(m, m_bounds, HOUR_MS)
    # lazy: the stores write ``flat``; a RollupRows per series cost ~13% of this function
    return blocks, _rollup_rows(w.ids, m, m_bounds, lazy=True), _rollup_rows(w.ids, h, h_bounds, lazy=True)


# A window of many series is computed in slices of about this many samples: arrays of a few
# MB stay in the caches; one pass over a 16-shard window's 8.6 M samples cost 1.5-2x more per
# sample (``bench/rollup.py --frames-only --frame-minutes 120``).
SLICE_SAMPLES = 1 << 19


def compute_window_sliced(
    data: Sequence[SeriesData] | RawWindow, start_ms: int, end_ms: int, max_gap_ms: int = DEFAULT_MAX_GAP_MS,
    slice_samples: int = SLICE_SAMPLES, plain: bool = False,
) -> tuple[list[SealedBlock], list[RollupRows], list[RollupRows]]:
    """``compute_window`` of slices of whole series (about ``slice_samples`` each), joined:
    the same output."""
    w = data if isinstance(data, RawWindow) else RawWindow.of(data)
    total = int(w.bounds[-1])
    if total <= slice_samples:
        return compute_window(w, start_ms, end_ms, max_gap_ms, plain)
    cuts = np.searchsorted(w.bounds, np.arange(slice_samples, total, slice_samples))
    edges = [0, *sorted({int(c) for c in cuts if 0 < c < w.ids.shape[0]}), int(w.ids.shape[0])]
    blocks: list[SealedBlock] = []
    minutes: list[RollupRowsList] = []
    hours: list[RollupRowsList] = []
    for a, b in zip(edges[:-1], edges[1:], strict=True):
        lo, hi = int(w.bounds[a]), int(w.bounds[b])
        part = RawWindow(w.ids[a:b], w.bounds[a : b + 1] - lo, w.timestamps[lo:hi], w.values[lo:hi])
        bl, m, h = compute_window(part, start_ms, end_ms, max_gap_ms, plain)
        blocks += bl
        minutes.append(cast(RollupRowsList, m))
        hours.append(cast(RollupRowsList, h))
    return blocks, _join_lazy(minutes), _join_lazy(hours)


def compute_minutes(
    data: Sequence[SeriesData] | RawWindow, start_ms: int, end_ms: int, max_gap_ms: int = DEFAULT_MAX_GAP_MS,
    lazy: bool = False,
) -> RollupRowsList:
    """1m rows of [start_ms, end_ms) from raw samples read from ``start_ms - max_gap_ms``:
    the buckets ``compute_window`` computes for those minutes (CPU only, pure; ``lazy``: a
    ``RollupRowsList`` that makes its items when first asked for)."""
    w = data if isinstance(data, RawWindow) else RawWindow.of(data)
    m, m_bounds = rollup_raw_many(w.timestamps, w.values, w.bounds, start_ms, end_ms, MINUTE_MS, max_gap_ms)
    return _rollup_rows(w.ids, m, m_bounds, lazy)


def fresh_carry(w: RawWindow, until_ms: int, max_gap_ms: int) -> RawWindow:
    """What a fresh pass starting at ``until_ms`` needs from before its start, out of ``w``: each
    series' last finite sample in [until_ms - max_gap_ms, until_ms), the counter value its first
    increase is taken from (``rollup_raw_many``'s chain skips stale markers and NaN alike)."""
    owner = np.repeat(np.arange(w.ids.shape[0]), np.diff(w.bounds))
    ts, vals = w.timestamps, w.values
    ok = np.flatnonzero(np.isfinite(vals) & (ts >= until_ms - max_gap_ms) & (ts < until_ms))
    own = owner[ok]
    last = ok[np.append(own[1:] != own[:-1], True)] if ok.size else ok
    return RawWindow(w.ids[owner[last]], np.arange(last.size + 1, dtype=np.int64), ts[last], vals[last])


def with_carry(carry: RawWindow, w: RawWindow) -> RawWindow:
    """``w`` (samples from a fresh pass's start on) with ``carry``'s samples (older: from before
    that start) in front of each series' own."""
    if not carry.ids.size:
        return w
    sids = np.concatenate([np.repeat(carry.ids, np.diff(carry.bounds)), np.repeat(w.ids, np.diff(w.bounds))])
    order = np.argsort(sids, kind="stable")  # the carry's sample first within a series
    sids = sids[order]
    ts = np.concatenate([carry.timestamps, w.timestamps])[order]
    vals = np.concatenate([carry.values, w.values])[order]
    starts = np.flatnonzero(np.append(True, sids[1:] != sids[:-1]))
    return RawWindow(sids[starts], np.append(starts, sids.size).astype(np.int64), ts, vals)


def join_fresh(earlier: RollupRowsList, later: RollupRowsList) -> RollupRowsList:
    """Each series' buckets of both lists (``earlier``'s before ``later``'s), as a lazy list."""
    if not len(later.flat):
        return earlier
    if not len(earlier.flat):
        return later
    sid = np.concatenate([np.repeat(earlier.ids, np.diff(earlier.bounds)), np.repeat(later.ids, np.diff(later.bounds))])
    order = np.argsort(sid, kind="stable")  # a series' earlier buckets first, each part in time order
    sid = sid[order]
    flat = Rollup(*(np.concatenate([getattr(earlier.flat, c), getattr(later.flat, c)])[order]
                    for c in ("timestamps", *AGGREGATES)))
    starts = np.flatnonzero(np.append(True, sid[1:] != sid[:-1]))
    return _rollup_rows(sid[starts], flat, np.append(starts, sid.size).astype(np.int64), lazy=True)


def fresh_since(rows: RollupRowsList, start_ms: int) -> RollupRowsList:
    """The buckets of ``rows`` starting at ``start_ms`` or later, as a lazy list."""
    keep = rows.flat.timestamps >= start_ms
    if bool(keep.all()):
        return rows
    sid = np.repeat(rows.ids, np.diff(rows.bounds))[keep]
    flat = Rollup(*(getattr(rows.flat, c)[keep] for c in ("timestamps", *AGGREGATES)))
    starts = np.flatnonzero(np.append(True, sid[1:] != sid[:-1])) if sid.size else np.zeros(0, dtype=np.int64)
    return _rollup_rows(sid[starts], flat, np.append(starts, sid.size).astype(np.int64), lazy=True)


def _fresh_compute(
    data: Sequence[SeriesData] | RawWindow, carry: RawWindow | None, start_ms: int, end_ms: int, max_gap_ms: int
) -> tuple[RollupRowsList, RawWindow]:
    """A fresh pass's minutes (``compute_minutes``) from ``data`` read from ``start_ms`` with the
    last pass's ``carry`` (None: ``data`` was read from ``start_ms - max_gap_ms``), and the carry
    for the pass after it."""
    w = data if isinstance(data, RawWindow) else RawWindow.of(data)
    if carry is not None:
        w = with_carry(carry, w)
    parts = [compute_minutes(part, start_ms, end_ms, max_gap_ms, lazy=True) for part in _slices(w, FRESH_SLICE_SAMPLES)]
    return _join_lazy(parts), fresh_carry(w, end_ms, max_gap_ms)


# A fresh pass computes its minutes in slices of whole series of about this many samples: the
# temporaries (a few MB) are reused from the heap and stay in the caches. A group of 4 shards
# in one piece (~1.5 M samples at 100,000 series every 5 s, 5 minutes) cost 0.09-1.1 s against
# 0.07 in slices (issue #20; the first touch of fresh 12 MB arrays is page faults).
FRESH_SLICE_SAMPLES = 1 << 17


def _slices(w: RawWindow, samples: int) -> list[RawWindow]:
    """``w`` cut between series into parts of about ``samples`` samples (one: ``w`` itself)."""
    total = int(w.bounds[-1])
    if total <= samples:
        return [w]
    cuts = np.searchsorted(w.bounds, np.arange(samples, total, samples))
    edges = [0, *sorted({int(c) for c in cuts if 0 < c < w.ids.shape[0]}), int(w.ids.shape[0])]
    out = []
    for a, b in zip(edges[:-1], edges[1:], strict=True):
        lo, hi = int(w.bounds[a]), int(w.bounds[b])
        out.append(RawWindow(w.ids[a:b], w.bounds[a : b + 1] - lo, w.timestamps[lo:hi], w.values[lo:hi]))
    return out


def _join_lazy(parts: Sequence[RollupRowsList]) -> RollupRowsList:
    """Lazy ``RollupRowsList``s of consecutive series as one lazy list."""
    if len(parts) == 1:
        return parts[0]
    out = RollupRowsList()
    cols = ("timestamps", *AGGREGATES)
    out.flat = Rollup(*(np.concatenate([getattr(p.flat, c) for p in parts]) for c in cols))
    offsets = np.cumsum([0] + [int(p.bounds[-1]) for p in parts[:-1]])
    out.bounds = np.concatenate([np.zeros(1, dtype=np.int64), *(p.bounds[1:] + o for p, o in zip(parts, offsets,
                                                                                              strict=True))])
    out.ids = np.concatenate([p.ids for p in parts])
    out._lazy = True
    return out


def window_floor(ts_ms: int, window_ms: int) -> int:
    return ts_ms // window_ms * window_ms


# The late cursor is the last late mark handled, (written at ms, hour start ms), ordered as a
# pair (one write marks several hours with the same time) and packed into one int so it
# keeps as a checkpoint: hour index (ms // 1 h, < 2**21 until year 2209) in the low bits.
_LATE_HOUR_BITS = 21


def pack_late_cursor(written_ms: int, hour_start_ms: int) -> int:
    hour = hour_start_ms // HOUR_MS
    if not 0 <= hour < 1 << _LATE_HOUR_BITS:
        raise ValueError(f"late mark hour {hour_start_ms} ms is outside the cursor's range")
    return (written_ms << _LATE_HOUR_BITS) | hour


def unpack_late_cursor(cursor: int) -> tuple[int, int]:
    return cursor >> _LATE_HOUR_BITS, (cursor & ((1 << _LATE_HOUR_BITS) - 1)) * HOUR_MS


@dataclass
class _LatePass:
    """State of one late pass: when a mark is settled, the marks read once for all shards."""

    read_marks: Callable[[int], Awaitable[list[tuple[int, int]]]]
    settled: int  # marks written at or before this are acted on
    pending: int = 0  # settled marks left for the next pass (metric)
    _since: int | None = None
    _marks: list[tuple[int, int]] = field(default_factory=list)  # (written, hour), ascending

    async def marks_after(self, cursor: tuple[int, int]) -> list[tuple[int, int]]:
        """Marks after the (written, hour) cursor; read from the store only when this pass has
        not read back that far yet (marks written in the cursor's ms may be left to do)."""
        since = cursor[0] - 1
        if self._since is None or since < self._since:
            marks = [(int(w), int(h)) for h, w in await self.read_marks(since)]
            self._marks = sorted(m for m in marks if m[1] >= 0)
            self._since = since
        return [m for m in self._marks if m > cursor]


@dataclass
class RollupJob:
    """Seals and rolls up closed windows shard by shard; see the module docstring."""

    store: RollupStore
    lease: ShardLease
    window_ms: int = DEFAULT_WINDOW_MS
    shards: int = DEFAULT_SHARDS
    grace_ms: int = DEFAULT_GRACE_MS
    max_gap_ms: int = DEFAULT_MAX_GAP_MS
    job: str = JOB_NAME
    max_windows_per_pass: int = 24  # per shard, so one shard's backlog does not starve others
    late_windows_per_pass: int = 12  # per shard: windows redone for late samples in one pass
    late_settle_ms: int = DEFAULT_LATE_SETTLE_MS
    fresh_minutes: bool = True  # the fresh pass (module docstring)
    fresh_every_ms: int = MINUTE_MS  # a shard's fresh pass waits until this many new minutes
    # With a store that reads shards' windows at once (``RawWindowGroups``): how many shards a
    # copy leases and works together (0: every shard it can lease); else one at a time.
    shards_at_once: int = 0
    metrics: RollupMetrics = field(default_factory=RollupMetrics)
    now_ms: Callable[[], int] = field(default=lambda: int(time.time() * 1000))
    _fresh_until: dict[int, int] = field(default_factory=dict, init=False, repr=False)
    # per group of shards: where its last fresh pass stopped and each series' last sample before
    # that (``fresh_carry``), so the next pass reads from its start, not max_gap_ms before it
    _fresh_carry: dict[tuple[int, ...], tuple[int, RawWindow]] = field(default_factory=dict, init=False, repr=False)
    # per group of shards (a ``FreshBlocks`` store): where its last fresh pass stopped and the
    # buckets it wrote of the block holding that minute, which the next pass writes again
    _fresh_blocks: dict[tuple[int, ...], tuple[int, RollupRowsList]] = field(default_factory=dict, init=False,
                                                                               repr=False)
    fresh_done: list[WindowResult] = field(default_factory=list, init=False, repr=False)  # last run_once's
    _retention_at: int = field(default=-(2**62), init=False, repr=False)

    def __post_init__(self) -> None:
        if self.window_ms <= 0 or self.window_ms % HOUR_MS or DAY_MS % self.window_ms:
            raise ValueError(
                f"rollup window must be a whole number of hours dividing a day, got {self.window_ms / HOUR_MS:g} h"
            )
        if not 1 <= self.shards <= 4096:
            raise ValueError(f"rollup shards must be between 1 and 4096, got {self.shards}")
        if self.grace_ms < 0 or self.max_gap_ms < 0 or self.late_settle_ms < 0:
            raise ValueError("rollup grace, late settle time and max gap must not be negative")
        if self.late_windows_per_pass < 1:
            raise ValueError("rollup late windows per pass must be at least 1")
        if self.shards_at_once < 0:
            raise ValueError("rollup shards at once must not be negative (0: every shard leased)")
        if self.fresh_every_ms < MINUTE_MS or self.fresh_every_ms > self.window_ms:
            raise ValueError("rollup fresh pass interval must be between 1 minute and the window length")

    def closed_until(self, now_ms: int | None = None) -> int:
        """End of the newest window that is closed at ``now_ms``."""
        now = self.now_ms() if now_ms is None else now_ms
        return window_floor(now - self.grace_ms, self.window_ms)

    async def process_window(self, shard: int, start_ms: int, mode: str = "live") -> WindowResult:
        """Seal and roll up one shard window (idempotent)."""
        return (await self.process_windows([shard], start_ms, mode))[0]

    async def process_windows(self, group: Sequence[int], start_ms: int, mode: str = "live") -> list[WindowResult]:
        """Seal and roll up one window of the shards of ``group`` at once (idempotent): one
        read, one computation and one set of writes for all of them; a result per shard.
        Cyclic garbage collection is off meanwhile (``gc_paused``): a window of 100,000 series
        makes a few containers per series and row to write (~1.5 M), which reference counting
        frees, and the collections they set off traversed them and the heap for nothing
        (``bench/seal_ab.py``'s seal: 0.86-0.99 -> 0.70-0.87 us of the job's CPU per sample
        with the block rows made in one pass)."""
        with gc_paused():
            return await self._process_windows(group, start_ms, mode)

    async def _process_windows(self, group: Sequence[int], start_ms: int, mode: str) -> list[WindowResult]:
        end_ms = start_ms + self.window_ms
        t0 = time.monotonic()
        data = await self._read_window(group, start_ms - self.max_gap_ms, end_ms, seal_from_ms=start_ms)
        loop = asyncio.get_running_loop()
        grouped = isinstance(self.store, GroupedBlocks)
        blocks, minutes, hours = await loop.run_in_executor(
            None, compute_window_sliced, data, start_ms, end_ms, self.max_gap_ms, SLICE_SAMPLES, grouped
        )
        stored: int | None = None  # (the bytes a grouping store kept: its blocks are plain until then)
        if isinstance(self.store, GroupedBlocks):
            if blocks:
                stored = await self.store.write_plain_blocks(blocks)
            if minutes:
                await self.store.write_rollups(Resolution.MINUTE, minutes)
                await self.store.write_rollups(Resolution.HOUR, hours)
        elif isinstance(self.store, SealWrites):
            if blocks or minutes:
                # A live seal is its window's first (the checkpoint is there; late and backfill
                # passes redo windows): chunks starting in or after it hold nothing to keep.
                live = mode == "live"
                await self.store.write_seal(blocks, minutes, hours, new_from_ms=start_ms if live else None,
                                            window_end_ms=end_ms if live else None)
        else:
            if blocks:
                await self.store.write_blocks(blocks)
            if minutes:
                await self.store.write_rollups(Resolution.MINUTE, minutes)
                await self.store.write_rollups(Resolution.HOUR, hours)
        if isinstance(data, RawWindow) and data.sealed_rows and isinstance(self.store, RawWindowArrays):
            await self.store.drop_sealed_raw(data.sealed_rows)  # its blocks hold them now
        results = {k: WindowResult(k, start_ms, end_ms, mode=mode) for k in group}
        block_bytes = sum(len(b.data) for b in blocks) if stored is None else stored
        if len(group) == 1:
            res = results[group[0]]
            res.series, res.minute_points, res.hour_points = len(minutes), _points(minutes), _points(hours)
            res.samples, res.block_bytes = sum(b.count for b in blocks), block_bytes
        else:
            for b in blocks:
                res = results[b.series_id % self.shards]
                res.samples += b.count
                res.block_bytes += len(b.data)
            (series, m_points), (_, h_points) = _shard_counts(minutes, self.shards), _shard_counts(hours, self.shards)
            for k, res in results.items():
                res.series, res.minute_points, res.hour_points = series[k], m_points[k], h_points[k]
        m = self.metrics
        m.windows_done.labels(mode).inc(len(group))
        m.samples_sealed.inc(sum(b.count for b in blocks))
        m.block_bytes.inc(block_bytes)
        m.rollup_points.labels("1m").inc(_points(minutes))
        m.rollup_points.labels("1h").inc(_points(hours))
        m.window_seconds.observe(time.monotonic() - t0)
        return [results[k] for k in group]

    async def _read_window(
        self, group: Sequence[int], start_ms: int, end_ms: int, seal_from_ms: int | None = None
    ) -> Sequence[SeriesData] | RawWindow:
        if len(group) > 1:
            if isinstance(self.store, RawWindowGroups):
                return await self.store.read_raw_window_group(group, self.shards, start_ms, end_ms,
                                                              kept_index=seal_from_ms is None)
            if seal_from_ms is None and isinstance(self.store, FreshGroups):
                return await self.store.read_fresh_group(group, self.shards, start_ms, end_ms)
            raise TypeError("a store without group reads works one shard at a time")
        if isinstance(self.store, RawWindowArrays):
            return await self.store.read_raw_window_arrays(group[0], self.shards, start_ms, end_ms, seal_from_ms)
        return await self.store.read_raw_window(group[0], self.shards, start_ms, end_ms)

    def _group_size(self) -> int:
        """Shards leased and worked at once: several only with a store that reads them at once."""
        if not isinstance(self.store, (RawWindowGroups, FreshGroups)):
            return 1
        return self.shards_at_once or self.shards

    def _seal_groups(self, group: Sequence[int]) -> list[list[int]]:
        """``group`` as the groups sealed at once: one, or one per shard for a store whose group
        reads serve the fresh pass only (``FreshGroups``)."""
        if len(group) > 1 and not isinstance(self.store, RawWindowGroups):
            return [[k] for k in group]
        return [list(group)]

    async def _lease_groups(self, order: Sequence[int]) -> AsyncGenerator[list[int], None]:
        """Groups of up to ``_group_size`` shards of ``order`` this copy could lease, each
        released once the caller is done with it (the shards the copy could not take skipped)."""
        size = self._group_size()
        pending = list(order)
        while pending:
            group: list[int] = []
            while pending and len(group) < size:
                shard = pending.pop(0)
                if await self.lease.try_acquire(shard):
                    group.append(shard)
            if not group:
                continue
            try:
                yield group
            finally:
                for shard in group:
                    await self.lease.release(shard)

    async def run_once(self, initial_start_ms: int | None = None) -> list[WindowResult]:
        """One pass over all shards: catch up every shard this copy can lease, then (under the
        same lease) redo its sealed windows that received late samples (``late_pass``) and,
        once caught up, write the open window's fresh minutes (``fresh_done`` lists them).

        A shard without a checkpoint starts at ``initial_start_ms`` (default: the newest
        closed window only - older data is the business of ``backfill``).
        """
        closed = self.closed_until()
        late = self._late_state()
        done: list[WindowResult] = []
        self.fresh_done = []
        oldest: int | None = None
        held = 0
        async with aclosing(self._lease_groups(self._shard_order())) as groups:
            async for group in groups:
                held += len(group)
                ckpts: dict[int, int] = {}
                for shard in group:
                    ckpt = await self.store.get_checkpoint(self.job, shard)
                    if ckpt is None:
                        ckpt = (
                            window_floor(initial_start_ms, self.window_ms)
                            if initial_start_ms is not None
                            else max(closed - self.window_ms, 0)
                        )
                        # Record where this shard starts, so a failure of its first window
                        # is retried from here rather than from a later default.
                        await self.store.set_checkpoint(self.job, shard, ckpt)
                    ckpts[shard] = ckpt
                sealed_before = dict(ckpts)
                await self._catch_up(ckpts, closed, done)
                for shard in group:
                    ckpt = ckpts[shard]
                    oldest = ckpt if oldest is None else min(oldest, ckpt)
                    if late is not None:
                        # Windows sealed in this pass read the rows of every settled late write.
                        await self._late_for_shard(shard, sealed_before[shard], late, done)
                if self.fresh_minutes:
                    caught_up = {k: ckpts[k] for k in group if ckpts[k] >= closed and self.lease.held(k)}
                    self.fresh_done += await self._fresh_for_shards(caught_up)
        if held:
            try:
                await self.drop_sealed_raw(late)
            except Exception:
                self.metrics.errors.inc()
                log.exception("dropping the raw input of sealed hours failed; will retry")
        self.metrics.shards_held.set(held)
        # A copy holding no shard this pass is behind on nothing (a stale lag would keep alerting).
        self.metrics.lag.set(max(0.0, (closed - oldest) / 1000.0) if oldest is not None else 0.0)
        expiry = getattr(self.store, "raw_expiry_ms", None)  # raw input that expires unsealed (frames)
        if expiry and oldest is not None and closed - oldest > expiry // 2:
            log.error("rollup %.1f h behind: raw samples expire %.1f h after they are written, sealed or not;"
                      " run more copies of the job (shards are leased) before then", (closed - oldest) / HOUR_MS,
                      expiry / HOUR_MS)
        if late is not None:
            self.metrics.late_backlog.set(late.pending)
        return done

    async def _catch_up(self, ckpts: dict[int, int], closed: int, done: list[WindowResult]) -> None:
        """Seal the closed windows of leased shards (shard -> checkpoint, advanced in place),
        at most ``max_windows_per_pass`` per shard: the shards at the oldest checkpoint
        together, window after window. A failed window stops its shards for this pass
        (checkpoints stay contiguous); a lost lease stops its shard."""
        count = dict.fromkeys(ckpts, 0)
        active = set(ckpts)
        while True:
            due = [k for k in active if ckpts[k] + self.window_ms <= closed and count[k] < self.max_windows_per_pass]
            if not due:
                return
            start = min(ckpts[k] for k in due)
            group = []
            for k in sorted(k for k in due if ckpts[k] == start):
                if self.lease.held(k):
                    group.append(k)
                else:
                    log.warning("rollup lease on shard %d lost; leaving it to another copy", k)
                    active.discard(k)
            if not group:
                continue
            for sealed in self._seal_groups(group):
                try:
                    done += await self.process_windows(sealed, start)
                except Exception:
                    self.metrics.errors.inc()
                    log.exception("rollup of shard(s) %s window %d failed; will retry", ",".join(map(str, sealed)), start)
                    active.difference_update(sealed)
                    continue
                for k in sealed:
                    ckpts[k] += self.window_ms
                    count[k] += 1
                    await self.store.set_checkpoint(self.job, k, ckpts[k])

    @property
    def late_cursor_job(self) -> str:
        """The checkpoint name under which each shard's late cursor is kept."""
        return f"{self.job}:late"

    def windows_fed_by_hour(self, hour_start_ms: int) -> list[int]:
        """Starts of the windows whose output depends on samples of this hour: its own window
        and, when counters carry over (``max_gap_ms``) into the next window, that one too."""
        first = window_floor(hour_start_ms, self.window_ms)
        last = window_floor(hour_start_ms + HOUR_MS - 1 + self.max_gap_ms, self.window_ms)
        return list(range(first, last + 1, self.window_ms))

    async def late_pass(self) -> list[WindowResult]:
        """Only the late pass of ``run_once``: redo sealed windows that received late samples
        for every shard this copy can lease (see the module docstring)."""
        late = self._late_state()
        if late is None:
            return []
        done: list[WindowResult] = []
        for shard in self._shard_order():
            if not await self.lease.try_acquire(shard):
                continue
            try:
                ckpt = await self.store.get_checkpoint(self.job, shard)
                if ckpt is not None:  # else nothing is sealed yet: the first windows read every row
                    await self._late_for_shard(shard, ckpt, late, done)
            finally:
                await self.lease.release(shard)
        self.metrics.late_backlog.set(late.pending)
        return done

    def _late_state(self) -> _LatePass | None:
        if not isinstance(self.store, LateMarks):
            return None  # a backend without late marks
        return _LatePass(self.store.late_marks_since, self.now_ms() - self.late_settle_ms)

    async def _late_for_shard(self, shard: int, ckpt: int, late: _LatePass, done: list[WindowResult]) -> None:
        """The late pass of one leased shard whose windows before ``ckpt`` are sealed; a
        failure (store unavailable) is logged and left to the next pass."""
        try:
            await self._late_for_shard_unguarded(shard, ckpt, late, done)
        except Exception:
            self.metrics.errors.inc()
            log.exception("late pass of rollup shard %d failed; will retry", shard)

    async def _late_for_shard_unguarded(
        self, shard: int, ckpt: int, late: _LatePass, done: list[WindowResult]
    ) -> None:
        stored = await self.store.get_checkpoint(self.late_cursor_job, shard)
        cursor = unpack_late_cursor(stored) if stored is not None else (-1, -1)
        todo = [m for m in await late.marks_after(cursor) if m[0] <= late.settled]
        if not todo:
            return
        handled = await self._redo_late(shard, ckpt, todo, done)
        if handled is not None:
            await self.store.set_checkpoint(self.late_cursor_job, shard, pack_late_cursor(*handled))
        late.pending += sum(1 for m in todo if handled is None or m > handled)

    async def _redo_late(
        self, shard: int, ckpt: int, todo: list[tuple[int, int]], done: list[WindowResult]
    ) -> tuple[int, int] | None:
        """Redo the sealed windows fed by the ``todo`` marks ((written, hour) ascending) for one
        shard, at most ``late_windows_per_pass`` of them (one mark's windows are not split);
        returns the last mark fully handled, the shard's new cursor (None: none handled)."""
        redone: set[int] = set()
        handled: tuple[int, int] | None = None
        for mark in todo:
            pending = [
                w for w in self.windows_fed_by_hour(mark[1]) if w + self.window_ms <= ckpt and w not in redone
            ]
            if pending and redone and len(redone) + len(pending) > self.late_windows_per_pass:
                break  # the rest in the next pass
            for start in pending:
                if not self.lease.held(shard):
                    log.warning("rollup lease on shard %d lost during the late pass", shard)
                    return handled
                try:
                    done.append(await self.process_window(shard, start, mode="late"))
                except Exception:
                    self.metrics.errors.inc()
                    log.exception("late rollup of shard %d window %d failed; will retry", shard, start)
                    return handled
                redone.add(start)
            handled = mark
        return handled

    @property
    def drop_cursor_job(self) -> str:
        """The checkpoint name (shard 0) of where raw drops stopped (``drop_sealed_raw``); its
        late marks re-dropped are under ``<job>:drop-late`` (a packed late cursor)."""
        return f"{self.job}:drop"

    async def drop_sealed_raw(self, late: _LatePass | None = None) -> int:
        """Drop the raw input of sealed hours (``SealedRawDrop`` stores; ``run_once`` calls it):
        from where the last drop stopped up to the oldest checkpoint of all the job's shards,
        never hours the store's query reads take from raw input (``raw_hot_ms``), and never an
        hour with a late mark that some shard's late pass has not handled yet (its late
        samples may not be in the blocks), nor one at or after the floor a writer published
        (``raw_writers_floor_ms``: its spool may hold frames XOR'd with frames of that hour,
        which a replay after the drop could not resolve). Input written after the drop started survives it
        (a late write marks its hour: the late pass reseals from the blocks and it); once
        every shard handled such a mark of an hour dropped before, the hour is dropped again.
        The first call only records where drops start: older raw input expires by TTL (it
        may predate the job's first checkpoint, unsealed). ``late``: the pass's late marks
        (read once for the late pass and this). Returns the partitions dropped."""
        store = self.store
        if not isinstance(store, SealedRawDrop) or not store.can_drop_raw(self.window_ms):
            return 0
        stamp = store.raw_drop_stamp_us()  # before the late marks are read
        horizon = (self.now_ms() - store.raw_hot_ms) // HOUR_MS * HOUR_MS
        ckpts = [await store.get_checkpoint(self.job, k) for k in range(self.shards)]
        if any(c is None for c in ckpts):
            return 0
        until = min(horizon, *cast(list[int], ckpts))
        floor = await store.raw_writers_floor_ms()
        if floor is not None:  # a writer cut off from the store holds the hours of its spool
            until = min(until, max(0, floor) // HOUR_MS * HOUR_MS)
        done = await store.get_checkpoint(self.drop_cursor_job, 0)
        if done is None:
            await store.set_checkpoint(self.drop_cursor_job, 0, until)
            return 0
        dropped = 0
        late = late or self._late_state()
        if late is not None:
            late_job = f"{self.drop_cursor_job}-late"
            stored = [await store.get_checkpoint(self.late_cursor_job, k) for k in range(self.shards)]
            cursors = [unpack_late_cursor(c) if c is not None else (-1, -1) for c in stored]
            redone = await store.get_checkpoint(late_job, 0)
            redo_cursor = start_cursor = unpack_late_cursor(redone) if redone is not None else (-1, -1)
            marks = await late.marks_after(min(redo_cursor, *cursors))
            redo: set[int] = set()
            blocked = False  # the cursor stops at the first mark some shard has not handled
            for mark in marks:
                if mark <= redo_cursor:
                    continue
                if any(mark > c for c in cursors):  # its samples are not in every shard's blocks yet
                    if mark[1] >= done:
                        until = min(until, mark[1])
                    blocked = True
                elif not blocked:
                    if mark[1] < done:
                        redo.add(mark[1])  # (input written after its hour's drop, now folded in)
                    redo_cursor = mark
            for hour in sorted(redo):
                dropped += await store.drop_raw_hours(hour, hour + HOUR_MS, stamp)
            if redo_cursor > start_cursor:
                await store.set_checkpoint(late_job, 0, pack_late_cursor(*redo_cursor))
        for start in range(done, until, self.window_ms)[: self.max_windows_per_pass]:
            end = min(start + self.window_ms, until)
            dropped += await store.drop_raw_hours(start, end, stamp)
            await store.set_checkpoint(self.drop_cursor_job, 0, end)
        self.metrics.raw_dropped.inc(dropped)
        return dropped

    async def _fresh_for_shards(self, window_starts: dict[int, int]) -> list[WindowResult]:
        """The fresh pass of caught-up leased shards (shard -> its open window's start; module
        docstring): shards whose fresh minutes span the same minutes are read and computed
        together; errors are logged."""
        if not isinstance(self.store, FreshMinutes) or not window_starts:
            return []
        now_minute = (self.now_ms() - self.grace_ms) // MINUTE_MS * MINUTE_MS
        spans: dict[tuple[int, int], list[int]] = {}
        for k, window_start in window_starts.items():
            until = min(now_minute, window_start + self.window_ms)
            if until < window_start + self.window_ms:
                # whole steps of fresh_every_ms from the window's start: a pass of 5 minutes is
                # then one raw chunk span, whose chunk rows it reads alone (a pass straddling two
                # spans, as a late loop left it, read twice the rows: issue #20)
                until = window_start + (until - window_start) // self.fresh_every_ms * self.fresh_every_ms
            start = max(window_start, self._fresh_until.get(k, window_start))
            if until - start >= max(MINUTE_MS, self.fresh_every_ms):
                spans.setdefault((start, until), []).append(k)
        size = self._group_size()
        out = []
        for (start, until), ready in sorted(spans.items()):
            # With group reads for the fresh pass only (``FreshGroups``), a long span (a first
            # pass after a start: up to a window) goes shard by shard, not every shard's samples
            # in memory at once.
            long = until - start > max(self.fresh_every_ms, FRESH_GROUP_SPAN_MS)
            if isinstance(self.store, RawWindowGroups):
                step = size
            else:
                step = 1 if long else min(size, FRESH_GROUP_SHARDS)
            for part in slices(ready, step):
                out += await self._fresh_minutes(part, start, until)
        return out

    def _with_block(self, key: tuple[int, ...], start: int, rows: RollupRowsList) -> RollupRowsList:
        """``rows`` (a fresh pass from ``start``) with the buckets the passes before it wrote
        of its block in front, for a ``FreshBlocks`` store (rewriting each series' chunk of the
        block); else ``rows``."""
        kept = self._fresh_blocks.pop(key, None)
        if kept is None or kept[0] != start:
            return rows
        return join_fresh(kept[1], rows)

    def _keep_block(self, key: tuple[int, ...], until: int, written: RollupRowsList) -> None:
        """Keep the buckets of the block the next pass (from ``until``) writes into, when that
        pass does not start it (``FreshBlocks``)."""
        if not isinstance(self.store, FreshBlocks):
            return
        block = self.store.fresh_block_start(until)
        if block < until:
            self._fresh_blocks[key] = (until, fresh_since(written, block))

    async def _fresh_minutes(self, group: Sequence[int], start: int, until: int) -> list[WindowResult]:
        assert isinstance(self.store, FreshMinutes)
        t0 = time.monotonic()
        key = tuple(group)
        kept = self._fresh_carry.pop(key, None)
        others = [g for g in self._fresh_carry if set(g) & set(group)]
        parts = [self._fresh_carry.pop(g) for g in others]  # these shards grouped otherwise before
        if kept is None and parts and all(u == start for u, _ in parts) and set().union(*others) == set(group):
            # (shard by shard after a start, together since: their carries joined are the group's)
            joined = parts[0][1]
            for _, w in parts[1:]:
                joined = with_carry(w, joined)
            kept = (start, joined)
        carry = kept[1] if kept is not None and kept[0] == start else None
        try:
            data = await self._read_window(group, start if carry is not None else start - self.max_gap_ms, until)
            loop = asyncio.get_running_loop()
            rows, after = await loop.run_in_executor(
                None, _fresh_compute, data, carry, start, until, self.max_gap_ms
            )
            written = self._with_block(key, start, rows)
            if rows:
                await self.store.write_fresh_minutes(written)
        except Exception:
            self.metrics.errors.inc()
            log.exception("fresh minutes of shard(s) %s from %d failed; will retry", ",".join(map(str, group)), start)
            return []
        self._fresh_carry[key] = (until, after)
        self._keep_block(key, until, written)
        results = {k: WindowResult(k, start, until, mode="fresh") for k in group}
        series, points = _shard_counts(rows, self.shards)
        for k in group:
            results[k].series, results[k].minute_points = series[k], points[k]
            self._fresh_until[k] = until
        self.metrics.windows_done.labels("fresh").inc(len(group))
        self.metrics.rollup_points.labels("1m_fresh").inc(_points(rows))
        self.metrics.window_seconds.observe(time.monotonic() - t0)
        return [results[k] for k in group]

    def _shard_order(self) -> list[int]:
        # Start at a different shard on every pass so copies spread over the shards.
        first = (self.now_ms() // 1000) % self.shards
        return [(first + i) % self.shards for i in range(self.shards)]

    async def run_forever(self, stop: asyncio.Event, interval_s: float = 60.0) -> None:
        """Pass after pass until ``stop`` is set; with a store that has no TTLs (SQLite),
        its retention too, once an hour (``apply_retention``)."""
        while not stop.is_set():
            try:
                results = await self.run_once()
                if results:
                    log.info(
                        "rollup pass: %d shard windows, %d samples sealed",
                        len(results),
                        sum(r.samples for r in results),
                    )
                await self.apply_retention()
            except Exception:
                self.metrics.errors.inc()
                log.exception("rollup pass failed")
            try:
                await asyncio.wait_for(stop.wait(), timeout=interval_s)
            except TimeoutError:
                pass

    async def apply_retention(self) -> dict[str, int] | None:
        """The store's retention (``apply_retention``: SQLite, which has no TTLs) if an hour
        has passed since this job last applied it; what was deleted, or None."""
        now = self.now_ms()
        if not isinstance(self.store, RetentionByDeletion) or now - self._retention_at < HOUR_MS:
            return None
        deleted = await self.store.apply_retention(now)
        self._retention_at = now
        if any(deleted.values()):
            log.info("retention: deleted %s", ", ".join(f"{n} {k}" for k, n in deleted.items()))
        return deleted

    async def backfill(
        self, from_ms: int, to_ms: int, progress: ProgressBar | None = None, lease_wait_s: float = 600.0
    ) -> list[WindowResult]:
        """Redo every window overlapping [from_ms, to_ms) for every shard (checkpoints untouched).

        Waits (bounded by ``lease_wait_s`` per shard) for shards other copies hold.
        """
        if to_ms <= from_ms:
            raise ValueError("backfill range is empty: FROM must be before TO")
        first = window_floor(from_ms, self.window_ms)
        last = min(to_ms, self.closed_until())
        starts = list(range(first, last, self.window_ms))
        if progress is not None:
            progress.total = len(starts) * self.shards
        done: list[WindowResult] = []
        size = self._group_size()
        for first_shard in range(0, self.shards, size):
            group: list[int] = []
            try:
                for shard in range(first_shard, min(first_shard + size, self.shards)):
                    deadline = time.monotonic() + lease_wait_s
                    while not await self.lease.try_acquire(shard):
                        if time.monotonic() > deadline:
                            raise TimeoutError(f"shard {shard} stayed leased by another copy for {lease_wait_s:g}s")
                        await asyncio.sleep(0.5)
                    group.append(shard)
                for start in starts:
                    for sealed in self._seal_groups(group):
                        done += await self.process_windows(sealed, start, mode="backfill")
                        if progress is not None:
                            progress.update(len(sealed))
            finally:
                for shard in group:
                    await self.lease.release(shard)
        return done
