"""Rollup aggregates: 1-minute buckets from raw samples, 1-hour buckets from 1-minute ones.

Pure, vectorised functions over one series at a time. A bucket ``[t, t + step)`` keeps:

- ``count``: samples in the bucket that are values (stale markers excluded, NaN included);
- ``sum``: their sum in time order (NaN or +Inf/-Inf propagate as in IEEE arithmetic);
- ``min`` / ``max``: ignoring NaN unless every sample is NaN (as ``min_over_time`` does);
  on ties the earlier sample wins (so -0.0 vs 0.0 keeps the first seen);
- ``last``: the last value in the bucket (may be NaN, never a stale marker);
- ``increase``: the reset-aware counter increase attributed to the bucket (an
  approximation of ``increase()`` for buckets written before the four below existed);
- ``first`` / ``first_ts`` / ``last_ts``: the first sample's value and time, the last
  sample's time (ms as float64: exact below 2**53);
- ``correction``: Prometheus's counter correction inside the bucket: the sum of the
  previous value at every drop (``c < p`` of consecutive samples, NaN included as a sample,
  so a NaN on either side is no drop). Never NaN: a NaN ``correction`` marks a bucket
  written before these columns existed (``storage.base.ADDED_IN_V5``).

The last four are what ``extrapolatedRate`` (rate/increase/delta, Prometheus 3.x
promql/functions.go) reads of a window's samples, and they combine across consecutive
buckets (``combine_rate_parts``): the first of the first bucket, the last of the last, counts
added, and corrections added plus, at each bucket edge where a bucket's first value is
below the previous bucket's last, that last value. So rate/increase/delta over whole
buckets equal Prometheus's answer over the raw samples (``query.functions.rollup_rate``), up
to the float rounding of adding the corrections in another grouping (exact for integer counters
below 2**53).

Counter increase, exactly: take the series' samples in time order, drop stale markers
(like PromQL range selectors do), and keep only finite values - the *counter chain*.
For every consecutive pair (p, c) of the chain with ``c.ts - p.ts <= max_gap_ms``
(default 5 minutes, PromQL's lookback) the increment is ``c - p`` when ``c >= p`` and
``c`` when ``c < p`` (a drop is a reset to zero, then growth to ``c``). The increment
belongs to the bucket holding ``c``, the later sample; pairs further apart than the gap
contribute nothing (the series was gone). Hence the increases of consecutive buckets sum
to the total increase over them, whatever bucket boundaries lie between samples, and an
hour's increase is the sum of its minutes'. To attribute the first pair of a window, the
window's raw read starts ``max_gap_ms`` before the window (samples before the window
serve only as the chain's previous value).

Buckets are emitted only where ``count > 0``. The 1-hour rollup from 1-minute rows gives
the same count, min, max, first, last and increase pairs as from raw; ``sum``, ``increase``
and ``correction`` are then sums of partial sums, equal to the raw ones exactly for integer-valued data below
2**53 and up to float rounding otherwise. ``count`` is carried as float64 so that every
aggregate fits a float column of a block (see ``storage.blocks.encode_columns``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from storage.base import ADDED_IN_V5, AGGREGATES, DAY_MS, HOUR_MS, MINUTE_MS, Resolution
from storage.model import STALE_NAN_BITS

DEFAULT_MAX_GAP_MS = 5 * MINUTE_MS


@dataclass(slots=True)
class Rollup:
    """Aggregates of one series: ``timestamps`` are bucket starts (int64 ms, ascending)."""

    timestamps: np.ndarray
    count: np.ndarray
    sum: np.ndarray
    min: np.ndarray
    max: np.ndarray
    last: np.ndarray
    increase: np.ndarray
    first: np.ndarray
    first_ts: np.ndarray
    last_ts: np.ndarray
    correction: np.ndarray

    def __len__(self) -> int:
        return int(self.timestamps.shape[0])

    def columns(self) -> dict[str, np.ndarray]:
        """The aggregate columns by name, in ``storage.base.AGGREGATES`` order."""
        return {name: getattr(self, name) for name in AGGREGATES}

    @classmethod
    def from_columns(cls, timestamps: np.ndarray, columns: Mapping[str, np.ndarray]) -> "Rollup":
        """From the aggregate columns by name; those of ``ADDED_IN_V5`` may be missing (rows
        written before them): NaN, "not known"."""
        missing = [name for name in AGGREGATES if name not in columns and name not in ADDED_IN_V5]
        if missing:
            raise ValueError(f"rollup columns missing: {', '.join(missing)}")
        ts = np.asarray(timestamps, dtype=np.int64)
        return cls(
            ts,
            *(
                np.asarray(columns[name], dtype=np.float64) if name in columns else np.full(ts.shape, np.nan)
                for name in AGGREGATES
            ),
        )

    @classmethod
    def empty(cls) -> "Rollup":
        return cls(np.empty(0, dtype=np.int64), *(np.empty(0, dtype=np.float64) for _ in AGGREGATES))

    def slice(self, start_ms: int, end_ms: int) -> "Rollup":
        """The buckets starting in [start_ms, end_ms)."""
        lo, hi = np.searchsorted(self.timestamps, [start_ms, end_ms])
        return Rollup(self.timestamps[lo:hi], *(getattr(self, n)[lo:hi] for n in AGGREGATES))

    def bit_equal(self, other: "Rollup") -> bool:
        """True when both hold the same buckets with bit-identical aggregates."""
        if not np.array_equal(self.timestamps, other.timestamps):
            return False
        return all(
            np.array_equal(getattr(self, n).view(np.int64), getattr(other, n).view(np.int64))
            for n in AGGREGATES
        )


def stale_mask(values: np.ndarray) -> np.ndarray:
    """True where a value is the staleness marker (compared bit for bit)."""
    return np.equal(np.ascontiguousarray(values, dtype=np.float64).view(np.uint64), np.uint64(STALE_NAN_BITS))


def _segments(bucket: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Start offsets of runs of equal (non-decreasing) bucket numbers, and the run keys."""
    if bucket.size == 0:
        return np.empty(0, dtype=np.intp), bucket
    change = np.flatnonzero(bucket[1:] != bucket[:-1]) + 1
    starts = np.concatenate(([0], change)).astype(np.intp)
    return starts, bucket[starts]


def _fmin_first(a: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """Per-segment min ignoring NaN (NaN only if all NaN); ties keep the first."""
    return _extreme(a, starts, np.less)


def _fmax_first(a: np.ndarray, starts: np.ndarray) -> np.ndarray:
    return _extreme(a, starts, np.greater)


def _extreme(a: np.ndarray, starts: np.ndarray, better: np.ufunc) -> np.ndarray:
    # Vectorised "first strictly better, NaN ignored": sort each segment's indexes by
    # (segment, NaN last, value, position) and take each segment's first element.
    n = a.shape[0]
    seg = np.zeros(n, dtype=np.int64)
    if starts.size > 1:
        seg[starts[1:]] = 1
    seg = np.cumsum(seg)
    key = a if better is np.less else -a
    nan = np.isnan(a)
    # lexsort: last key is primary. -0.0 and 0.0 compare equal in value, so the position
    # key decides between them: the earlier one wins, as in a left-to-right scan.
    order = np.lexsort((np.arange(n), np.where(nan, 0.0, key), nan, seg))
    first_of_seg = np.concatenate(([True], seg[order][1:] != seg[order][:-1]))
    return a[order[first_of_seg]]


def rollup_raw(
    timestamps: np.ndarray,
    values: np.ndarray,
    start_ms: int,
    end_ms: int,
    step_ms: int = MINUTE_MS,
    max_gap_ms: int = DEFAULT_MAX_GAP_MS,
) -> Rollup:
    """Aggregate one series' raw samples into ``step_ms`` buckets over [start_ms, end_ms).

    ``start_ms`` must be a multiple of ``step_ms``. Samples before ``start_ms`` (at most
    ``max_gap_ms`` before matter) only provide the counter chain's previous value;
    samples at or after ``end_ms`` are ignored. Input need not be sorted.
    """
    if step_ms <= 0 or start_ms % step_ms or end_ms < start_ms:
        raise ValueError(f"bad rollup range [{start_ms}, {end_ms}) step {step_ms}")
    ts = np.asarray(timestamps, dtype=np.int64)
    vals = np.asarray(values, dtype=np.float64)
    if ts.shape != vals.shape:
        raise ValueError(f"{ts.shape[0]} timestamps but {vals.shape[0]} values")
    if ts.size > 1 and np.any(ts[1:] < ts[:-1]):
        order = np.argsort(ts, kind="stable")
        ts, vals = ts[order], vals[order]
    keep = ts < end_ms
    keep &= ~stale_mask(vals)
    ts, vals = ts[keep], vals[keep]

    # Counter chain over finite values, including the carry before the window.
    chain = np.isfinite(vals)
    cts, cv = ts[chain], vals[chain]
    inc_bucket = np.empty(0, dtype=np.int64)
    inc = np.empty(0, dtype=np.float64)
    if cts.size > 1:
        prev_ts, prev_v = cts[:-1], cv[:-1]
        cur_ts, cur_v = cts[1:], cv[1:]
        pair = (cur_ts >= start_ms) & (cur_ts - prev_ts <= max_gap_ms)
        d = np.where(cur_v >= prev_v, cur_v - prev_v, cur_v)[pair]
        inc_bucket = (cur_ts[pair] - start_ms) // step_ms
        inc = d

    inside = ts >= start_ms
    ts, vals = ts[inside], vals[inside]
    if ts.size == 0:
        return Rollup.empty()
    bucket = (ts - start_ms) // step_ms
    starts, keys = _segments(bucket)
    ends = np.concatenate((starts[1:], [ts.shape[0]]))
    nb = keys.shape[0]
    count = (ends - starts).astype(np.float64)
    # np.add.reduceat sums pairwise for long runs; sum left to right for exact repeatability
    # with any scalar loop: bincount adds weights in input order.
    local = np.repeat(np.arange(nb), ends - starts)
    total = np.bincount(local, weights=vals, minlength=nb) if nb else np.empty(0)
    # bincount turns -0.0 sums into 0.0 exactly as 0.0 + (-0.0) does in a scalar loop.
    increase: np.ndarray = np.zeros(nb, dtype=np.float64)
    if inc.size:
        pos = np.searchsorted(keys, inc_bucket)
        increase = np.bincount(pos, weights=inc, minlength=nb)
    return Rollup(
        timestamps=start_ms + keys * step_ms,
        count=count,
        sum=total,
        min=_fmin_first(vals, starts),
        max=_fmax_first(vals, starts),
        last=vals[ends - 1],
        increase=increase,
        **rate_parts(ts, vals, starts, ends, local),
    )


def rate_parts(
    ts: np.ndarray, vals: np.ndarray, starts: np.ndarray, ends: np.ndarray, row: np.ndarray
) -> dict[str, np.ndarray]:
    """``first``, ``first_ts``, ``last_ts`` and ``correction`` of buckets of samples: samples
    in time order (stale markers dropped), bucket ``k`` is ``[starts[k], ends[k])``, ``row``
    each sample's bucket. The correction adds, left to right, the previous value at each drop."""
    drop = np.zeros(vals.shape[0], dtype=np.float64)
    if vals.shape[0] > 1:
        prev = vals[:-1]
        drop[1:] = np.where(vals[1:] < prev, prev, 0.0)
        drop[starts] = 0.0  # a bucket's first sample: its previous one is another bucket's
    return {
        "first": vals[starts],
        "first_ts": ts[starts].astype(np.float64),
        "last_ts": ts[ends - 1].astype(np.float64),
        "correction": np.bincount(row, weights=drop, minlength=starts.shape[0]),
    }


def combine_rate_parts(
    first: np.ndarray,
    first_ts: np.ndarray,
    last: np.ndarray,
    last_ts: np.ndarray,
    correction: np.ndarray,
    cut: np.ndarray,
    ends: np.ndarray,
    local: np.ndarray,
) -> dict[str, np.ndarray]:
    """The rate aggregates of coarser buckets from finer ones (in time order, one series or
    several with a cut at every series' first row): coarse bucket ``k`` joins rows
    ``[cut[k], ends[k])``, ``local`` each row's coarse bucket. Its correction adds the rows'
    corrections and, where a row's first value is below the previous row's last, that last."""
    joined = correction.astype(np.float64, copy=True)
    if joined.shape[0] > 1:
        prev = last[:-1]
        cross = np.where(first[1:] < prev, prev, 0.0)
        cross[cut[1:] - 1] = 0.0  # a coarse bucket's first row: its previous row is another's
        joined[1:] += cross
    return {
        "first": first[cut],
        "first_ts": first_ts[cut],
        "last_ts": last_ts[ends - 1],
        "correction": np.bincount(local, weights=joined, minlength=cut.shape[0]),
    }


def rollup_rollup(src: Rollup, step_ms: int = HOUR_MS) -> Rollup:
    """Coarser buckets (``step_ms``, a multiple of the source step) from finer rollups."""
    if step_ms <= 0:
        raise ValueError(f"bad rollup step {step_ms}")
    if len(src) == 0:
        return Rollup.empty()
    ts = src.timestamps
    bucket = ts // step_ms
    starts, keys = _segments(bucket)
    ends = np.concatenate((starts[1:], [ts.shape[0]]))
    nb = keys.shape[0]
    local = np.repeat(np.arange(nb), ends - starts)
    return Rollup(
        timestamps=keys * step_ms,
        count=np.bincount(local, weights=src.count, minlength=nb),
        sum=np.bincount(local, weights=src.sum, minlength=nb),
        min=_fmin_first(src.min, starts),
        max=_fmax_first(src.max, starts),
        last=src.last[ends - 1],
        increase=np.bincount(local, weights=src.increase, minlength=nb),
        **combine_rate_parts(src.first, src.first_ts, src.last, src.last_ts, src.correction, starts, ends, local),
    )


# how far back queries read raw samples (older: rollups); the store keeps raw a day longer
# (scraper.bounds.STORE_RAW_KEEP_MS: storage.schema's TTL, a margin for late sealing and rollup)
QUERY_RAW_HORIZON_MS = 7 * DAY_MS
MINUTE_RETENTION_MS = 30 * DAY_MS
_ORDER = (Resolution.RAW, Resolution.MINUTE, Resolution.HOUR)


def choose_resolution(start_ms: int, now_ms: int, step_ms: int = 0) -> Resolution:
    """The resolution to read for a range starting at ``start_ms``.

    Age decides the finest resolution still kept: raw within 7 days, 1 m within 30 days,
    1 h beyond. A ``step_ms`` (pass the smallest duration the query needs: its step and
    any range-vector window) may make a coarser one enough: 1 h when step >= 1 h, 1 m when
    step >= 1 m. The coarser of the two is returned.
    """
    age = now_ms - start_ms
    by_age = (
        Resolution.RAW
        if age <= QUERY_RAW_HORIZON_MS
        else (Resolution.MINUTE if age <= MINUTE_RETENTION_MS else Resolution.HOUR)
    )
    by_step = (
        Resolution.HOUR
        if step_ms >= HOUR_MS
        else (Resolution.MINUTE if step_ms >= MINUTE_MS else Resolution.RAW)
    )
    return max(by_age, by_step, key=_ORDER.index)


# -- many series at once --------------------------------------------------------------------
#
# The rollup job aggregates every series of a shard window: per series NumPy calls cost more
# than the arithmetic when a window holds few samples per series. The functions below take
# the series concatenated (``bounds[i]:bounds[i + 1]`` the rows of series ``i``) and give, bit
# for bit, what the per-series functions above give for each series: every bucket is a
# segment of the concatenation, sums add in the same order (``np.bincount`` adds its weights
# in input order), and a series' first sample or bucket always starts a segment.


def _segment_min_max(a: np.ndarray, starts: np.ndarray, seg: np.ndarray, fn: np.ufunc) -> np.ndarray:
    """``_extreme`` by reduction: per segment the first element equal to the NaN-ignoring
    extreme (``fn``: ``np.fmin``/``np.fmax``), or the segment's first element when all are
    NaN - what the sort in ``_extreme`` picks (-0.0 and 0.0 compare equal: the first wins)."""
    n = a.shape[0]
    best = fn.reduceat(a, starts)
    # Only an extreme of 0 (-0.0 and 0.0 tie) or NaN (all NaN) can differ in bits from the
    # first element equal to it: only those segments' rows are looked at again.
    odd = (best == 0) | np.isnan(best)
    if not odd.any():
        return best
    rows = np.flatnonzero(odd[seg])
    if rows.size == n:
        pos = np.where(a == best[seg], np.arange(n), n)
        first = np.minimum.reduceat(pos, starts)
        return a[np.where(first == n, starts, first)]
    sub_seg = seg[rows]
    sub_starts = np.flatnonzero(np.concatenate([[True], sub_seg[1:] != sub_seg[:-1]]))
    first = np.minimum.reduceat(np.where(a[rows] == best[sub_seg], rows, n), sub_starts)
    segs = sub_seg[sub_starts]
    out = best.copy()
    out[segs] = a[np.where(first == n, starts[segs], first)]
    return out


def _bounds_of(owner: np.ndarray, groups: int) -> np.ndarray:
    """Row offsets (``groups + 1``) of ascending group numbers ``owner``."""
    out = np.zeros(groups + 1, dtype=np.int64)
    np.cumsum(np.bincount(owner, minlength=groups), out=out[1:])
    return out


def _owners(bounds: np.ndarray) -> np.ndarray:
    return np.repeat(np.arange(bounds.shape[0] - 1, dtype=np.int64), np.diff(bounds))


def _empty_many(groups: int) -> tuple[Rollup, np.ndarray]:
    return Rollup.empty(), np.zeros(groups + 1, dtype=np.int64)


def rollup_raw_many(
    timestamps: np.ndarray,
    values: np.ndarray,
    bounds: np.ndarray,
    start_ms: int,
    end_ms: int,
    step_ms: int = MINUTE_MS,
    max_gap_ms: int = DEFAULT_MAX_GAP_MS,
) -> tuple[Rollup, np.ndarray]:
    """``rollup_raw`` of many series at once: series ``i`` is rows ``bounds[i]:bounds[i + 1]``
    of ``timestamps``/``values`` (each series in ascending time order). Returns the buckets of
    every series concatenated and their offsets per series (``out_bounds``, like ``bounds``)."""
    if step_ms <= 0 or start_ms % step_ms or end_ms < start_ms:
        raise ValueError(f"bad rollup range [{start_ms}, {end_ms}) step {step_ms}")
    ts = np.asarray(timestamps, dtype=np.int64)
    vals = np.asarray(values, dtype=np.float64)
    bounds = np.asarray(bounds, dtype=np.int64)
    groups = bounds.shape[0] - 1
    if ts.shape != vals.shape or int(bounds[-1]) != ts.shape[0]:
        raise ValueError("timestamps, values and bounds do not match")
    owner = _owners(bounds)
    keep = (ts < end_ms) & ~stale_mask(vals)
    if not keep.all():  # (a window's read: all before its end, stale markers rare)
        ts, vals, owner = ts[keep], vals[keep], owner[keep]
    inside = ts >= start_ms

    # Counter chain: finite values; a pair is two consecutive chain samples of one series.
    finite = np.isfinite(vals)
    chain = None if finite.all() else np.flatnonzero(finite)  # None: every sample
    # each inside sample's index among the inside samples (its bucket is found through it)
    inside_idx = np.cumsum(inside) - 1
    cts, cv, cown = (ts, vals, owner) if chain is None else (ts[chain], vals[chain], owner[chain])
    pair = (cown[1:] == cown[:-1]) & (cts[1:] >= start_ms) & (cts[1:] - cts[:-1] <= max_gap_ms)
    prev_v, cur_v = cv[:-1][pair], cv[1:][pair]
    inc = np.where(cur_v >= prev_v, cur_v - prev_v, cur_v)
    inc_sample = inside_idx[1:][pair] if chain is None else inside_idx[chain[1:][pair]]

    ts, vals, owner = ts[inside], vals[inside], owner[inside]
    if ts.size == 0:
        return _empty_many(groups)
    bucket = (ts - start_ms) // step_ms
    new = np.empty(ts.shape[0], dtype=bool)
    new[0] = True
    new[1:] = (bucket[1:] != bucket[:-1]) | (owner[1:] != owner[:-1])
    starts = np.flatnonzero(new)
    ends = np.append(starts[1:], ts.shape[0])
    nb = starts.shape[0]
    local = np.cumsum(new) - 1  # each sample's bucket
    increase = np.bincount(local[inc_sample], weights=inc, minlength=nb) if inc.size else np.zeros(nb)
    out = Rollup(
        timestamps=start_ms + bucket[starts] * step_ms,
        count=(ends - starts).astype(np.float64),
        sum=np.bincount(local, weights=vals, minlength=nb),
        min=_segment_min_max(vals, starts, local, np.fmin),
        max=_segment_min_max(vals, starts, local, np.fmax),
        last=vals[ends - 1],
        increase=increase,
        **rate_parts(ts, vals, starts, ends, local),
    )
    return out, _bounds_of(owner[starts], groups)


def rollup_rollup_many(src: Rollup, bounds: np.ndarray, step_ms: int = HOUR_MS) -> tuple[Rollup, np.ndarray]:
    """``rollup_rollup`` of many series' buckets concatenated (``bounds`` as in
    ``rollup_raw_many``); returns the coarser buckets and their offsets per series."""
    if step_ms <= 0:
        raise ValueError(f"bad rollup step {step_ms}")
    bounds = np.asarray(bounds, dtype=np.int64)
    groups = bounds.shape[0] - 1
    if len(src) == 0:
        return _empty_many(groups)
    owner = _owners(bounds)
    bucket = src.timestamps // step_ms
    new = np.empty(bucket.shape[0], dtype=bool)
    new[0] = True
    new[1:] = (bucket[1:] != bucket[:-1]) | (owner[1:] != owner[:-1])
    starts = np.flatnonzero(new)
    ends = np.append(starts[1:], bucket.shape[0])
    nb = starts.shape[0]
    local = np.cumsum(new) - 1
    out = Rollup(
        timestamps=bucket[starts] * step_ms,
        count=np.bincount(local, weights=src.count, minlength=nb),
        sum=np.bincount(local, weights=src.sum, minlength=nb),
        min=_segment_min_max(src.min, starts, local, np.fmin),
        max=_segment_min_max(src.max, starts, local, np.fmax),
        last=src.last[ends - 1],
        increase=np.bincount(local, weights=src.increase, minlength=nb),
        **combine_rate_parts(src.first, src.first_ts, src.last, src.last_ts, src.correction, starts, ends, local),
    )
    return out, _bounds_of(owner[starts], groups)
