"""Counter and gauge change functions over range vectors: ``rate``, ``increase`` and
``delta`` (extrapolated to the window edges as Prometheus does), ``irate`` and ``idelta``
(the last two samples), ``changes`` and ``resets``. Each is computed batched over all series;
over rollup buckets ``rate``, ``increase`` and ``delta`` read the buckets' rate aggregates
(``query.functions.rollup_rate``; the increase column for buckets written before those existed)."""

from __future__ import annotations

from typing import Any

import numpy as np

from query import kernels
from query.functions.over_time import rollup_sum
from query.functions.range import BatchedCompute, RangeFunc
from query.functions.rollup_rate import window_parts, window_parts_grid
from query.functions.windows import DenseGrid
from query.values import RangeVector


def _series_starts(rv: RangeVector) -> np.ndarray:
    """The flat index of each non-empty series' first sample (no pair spans two series)."""
    return rv.offsets[:-1][np.diff(rv.offsets) > 0]


def _seconds(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``(a - b) / 1000.0`` as a new float array (the difference taken in the inputs' type)."""
    out = np.empty(np.broadcast_shapes(np.shape(a), np.shape(b)))
    np.subtract(a, b, out=out)
    out /= 1000.0
    return out


def _extrapolate(
    result: np.ndarray, ok: np.ndarray, n: np.ndarray, ft: np.ndarray, lt: np.ndarray, fv: np.ndarray,
    ends: np.ndarray, range_ms: int, is_counter: bool, is_rate: bool, out: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Prometheus' extrapolation of rate/increase/delta to the range edges (``extrapolatedRate``):
    extend by the gap to each edge unless it exceeds 1.1x the average sample interval (then by
    half an interval), never below a counter's zero point; per second for ``rate``. (Each
    element gets Prometheus's operations in its order; the arrays are reused in place, which
    spares a dozen passes over a dashboard's million windows; ``out``: where the values go.)"""
    to_start = _seconds(ft, ends - range_ms)
    to_end = _seconds(ends, lt)
    sampled = _seconds(lt, ft)
    avg = np.empty(np.broadcast_shapes(np.shape(n), np.shape(ok), sampled.shape))
    np.subtract(n, 1, out=avg)
    if not ok.all():
        np.copyto(avg, 1.0, where=~ok)
    np.divide(sampled, avg, out=avg)
    threshold = avg * 1.1
    half = avg
    half /= 2
    np.copyto(to_start, half, where=to_start >= threshold)
    if is_counter and not _never_to_zero(result, fv, sampled):
        zero_ok = result > 0
        zero_ok &= fv >= 0
        to_zero = np.where(result != 0, result, 1.0)
        np.divide(fv, to_zero, out=to_zero)
        to_zero *= sampled
        zero_ok &= to_zero < to_start  # (where not zero_ok, to_zero would be +Inf: never below)
        np.copyto(to_start, to_zero, where=zero_ok)
    np.copyto(to_end, half, where=to_end >= threshold)
    factor = np.add(sampled, to_start, out=out)
    factor += to_end
    np.copyto(sampled, np.nan, where=sampled == 0)
    factor /= sampled
    if is_rate:
        factor /= range_ms / 1000.0
    factor *= result
    return factor, ok


def _never_to_zero(result: np.ndarray, fv: np.ndarray, sampled: np.ndarray) -> bool:
    """Whether no window's counter extrapolates to its zero point: every first value is at
    least 1.2x the window's increase (the usual counter, far from zero) and no sampled
    interval is negative or NaN. Then ``fv / result * sampled`` is at least ~1.2x ``sampled``,
    above the start gap (less than 1.1x the average interval, ``sampled / (n - 1)``, or half
    of it) whatever the rounding: a check of two passes instead of the eight that find it."""
    with np.errstate(over="ignore", invalid="ignore"):
        return bool((fv >= result * 1.2).all()) and bool((sampled >= 0).all())


def _extrapolated(is_counter: bool, is_rate: bool) -> BatchedCompute:
    def compute(rv: RangeVector, lo: np.ndarray, hi: np.ndarray, extra: list) -> tuple[np.ndarray, np.ndarray]:
        ts, v = rv.ts_flat, rv.vals_flat
        n = hi - lo
        ok = n >= 2
        if not ok.any():
            return np.zeros(lo.shape), ok
        if ok.all():  # (every window holds two samples: the bounds as they are)
            first, last = lo, hi - 1
        else:
            first = np.where(ok, lo, 0)
            last = np.where(ok, hi - 1, 0)
        fv, lv = v[first], v[last]
        ft, lt = ts[first], ts[last]
        result = lv - fv
        if is_counter and len(v) > 1:
            pairs = np.zeros(len(v))
            pairs[1:] = np.where(v[1:] < v[:-1], v[:-1], 0.0)
            pairs[_series_starts(rv)] = 0.0
            if pairs.any():
                # (a drop from +Inf: counted apart, so that the running sum stays finite and
                # only the windows holding it get +Inf, not every later series' NaN)
                inf = pairs == np.inf
                if inf.any():
                    pairs[inf] = 0.0
                cc = np.cumsum(pairs)
                corr = cc[last] - cc[first]
                if inf.any():
                    ci = np.cumsum(inf)
                    corr = np.where(ci[last] - ci[first] > 0, np.inf, corr)
                result = result + corr
        return _extrapolate(result, ok, n, ft, lt, fv, rv.ends[None, :], rv.range_ms, is_counter, is_rate)

    def compiled(rv: RangeVector) -> tuple[np.ndarray, np.ndarray] | None:
        """The windows and this compute in one kernel (``kernels_numba.raw_rate``: the same
        values); None without the kernels (or steps that do not ascend)."""
        k = kernels.loaded()
        if k is None:
            return None
        shape = (len(rv.offsets) - 1, len(rv.ends))
        vals, ok = np.empty(shape), np.empty(shape, dtype=bool)
        done = k.raw_rate(
            np.ascontiguousarray(rv.ts_flat, dtype=np.int64), np.ascontiguousarray(rv.vals_flat, dtype=np.float64),
            np.ascontiguousarray(rv.offsets, dtype=np.int64), np.ascontiguousarray(rv.ends, dtype=np.int64),
            int(rv.range_ms), is_counter, is_rate, vals, ok,
        )
        return (vals, ok) if done else None

    compute.compiled = compiled  # type: ignore[attr-defined]
    return compute


def _rollup_extrapolated(is_counter: bool, is_rate: bool) -> BatchedCompute:
    """rate/increase/delta from the buckets' rate aggregates (``query.functions.rollup_rate``):
    Prometheus's answer for windows of whole buckets. rate/increase read them only where the
    rollups serve them exactly (else the plan reads, and this sums, the buckets' counter
    increases); windows holding buckets written before those aggregates existed get that
    approximation too (delta: the extrapolation over the buckets' last values)."""
    approx = rollup_sum("increase", per_second=is_rate) if is_counter else _extrapolated(False, False)

    def compute(rv: RangeVector, lo: Any, hi: Any, extra: list) -> tuple[np.ndarray, np.ndarray]:
        agg = rv.agg_flat or {}
        if is_counter and "correction" not in agg.keys():  # (not served exactly: the increases)
            return approx(rv, lo, hi, extra)
        if isinstance(lo, DenseGrid):
            grid = lo
            got = _grid_blocks(rv, agg, grid, is_counter, is_rate) if grid.full else None
            if got is not None:
                return got
            lo = hi = None  # (found below, if needed)
        flat = _flat_compiled(rv, agg, is_counter, is_rate)
        if flat is not None:
            vals, ok, known = flat
        else:
            if lo is None:
                lo, hi = rv.windows_all()
            w = window_parts(agg, rv.offsets, lo, hi, is_counter)
            vals, ok = _extrapolate(w.result, w.ok, w.n, w.ft, w.lt, w.fv, rv.ends[None, :], rv.range_ms, is_counter, is_rate)
            known = w.known
        if not known.all():
            if lo is None:
                lo, hi = rv.windows_all()
            old, old_ok = approx(rv, lo, hi, extra)
            vals, ok = np.where(known, vals, old), np.where(known, ok, old_ok)
        return vals, ok

    compute.dense = True  # type: ignore[attr-defined]
    return compute


def _flat_compiled(
    rv: RangeVector, agg: Any, is_counter: bool, is_rate: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """rate/increase/delta over rollup buckets off a full grid (a series missing a bucket, a
    plan off the grid) in one kernel (``kernels_numba.flat_rate``: the windows, then what
    ``window_parts`` and ``_extrapolate`` give): values, presence and ``known``; None without
    the kernels (or without buckets, or steps that do not ascend)."""
    k = kernels.loaded()
    if k is None or not len(rv.ts_flat):
        return None
    shape = (len(rv.offsets) - 1, len(rv.ends))
    vals, ok, known = np.empty(shape), np.empty(shape, dtype=bool), np.empty(shape, dtype=bool)
    cols = [np.ascontiguousarray(agg[name], dtype=np.float64) for name in RATE_COLUMNS]
    done = k.flat_rate(
        *cols, np.ascontiguousarray(rv.ts_flat, dtype=np.int64), np.ascontiguousarray(rv.offsets, dtype=np.int64),
        np.ascontiguousarray(rv.ends, dtype=np.int64), int(rv.range_ms), is_counter, is_rate, vals, ok, known,
    )
    return (vals, ok, known) if done else None



# Series per block of a full grid (``_grid_blocks``): ~0.3 MiB per (block x buckets) float
# column, so the two dozen temporaries of a block's arithmetic stay in a core's L2 cache
# instead of streaming 9 MiB arrays through memory (a 24 h panel of 800 series: ~2x faster).
GRID_BLOCK_CELLS = 40_000
RATE_COLUMNS = ("count", "first", "first_ts", "last", "last_ts", "correction")


def _grid_blocks(
    rv: RangeVector, agg: Any, grid: DenseGrid, is_counter: bool, is_rate: bool
) -> tuple[np.ndarray, np.ndarray] | None:
    """rate/increase/delta over a full grid (``window_parts_grid``), a block of series at a
    time: every step of it works per series, so the values are those of one pass over all;
    None when a block has a non-finite correction (``window_parts`` handles those)."""
    n, nb = grid.n, grid.nb
    steps = len(grid.lo)
    vals, ok = np.empty((n, steps)), np.empty((n, steps), dtype=bool)
    compiled = kernels.loaded()
    if compiled is not None:  # (one fused loop: the same operations, ~2x less CPU)
        cols = [np.ascontiguousarray(agg[k], dtype=np.float64) for k in RATE_COLUMNS]
        done = compiled.grid_rate(
            *cols, cols[-1].view(np.int64), n, nb, np.ascontiguousarray(grid.lo, dtype=np.int64), np.ascontiguousarray(grid.hi, dtype=np.int64),
            rv.ends.astype(np.float64), int(rv.range_ms), is_counter, is_rate, vals, ok,
        )
        return (vals, ok) if done else None
    per = max(1, GRID_BLOCK_CELLS // max(nb, 1))
    # (as floats once: the bucket times are floats, and a mixed subtraction casts every cell;
    # window ends are far below 2**53, so the values are the same)
    ends = rv.ends[None, :].astype(np.float64)
    for r0 in range(0, n, per):
        r1 = min(n, r0 + per)
        part = {k: agg[k][r0 * nb : r1 * nb] for k in RATE_COLUMNS}
        w = window_parts_grid(part, r1 - r0, nb, grid.lo, grid.hi, is_counter)
        if w is None:
            return None
        _, ok[r0:r1] = _extrapolate(w.result, w.ok, w.n, w.ft, w.lt, w.fv, ends, rv.range_ms, is_counter, is_rate, vals[r0:r1])
    return vals, ok


def _instant_value(is_rate: bool) -> BatchedCompute:
    def compute(rv: RangeVector, lo: np.ndarray, hi: np.ndarray, extra: list) -> tuple[np.ndarray, np.ndarray]:
        ts, v = rv.ts_flat, rv.vals_flat
        ok = (hi - lo) >= 2
        if not ok.any():
            return np.zeros(lo.shape), ok
        last = np.where(ok, hi - 1, 1)
        prev = last - 1
        lv, pv = v[last], v[prev]
        dt = (ts[last] - ts[prev]).astype(np.float64)
        ok &= dt != 0
        if is_rate:
            return np.where(lv < pv, lv, lv - pv) / (dt / 1000.0), ok
        return lv - pv, ok

    return compute


def _changes_like(kind: str) -> BatchedCompute:
    def compute(rv: RangeVector, lo: np.ndarray, hi: np.ndarray, extra: list) -> tuple[np.ndarray, np.ndarray]:
        v = rv.vals_flat
        ok = hi > lo
        ind = np.zeros(len(v))
        if len(v) > 1:
            a, b = v[:-1], v[1:]
            if kind == "changes":
                ind[1:] = ~((a == b) | (np.isnan(a) & np.isnan(b)))
            else:
                ind[1:] = b < a
            ind[_series_starts(rv)] = 0.0
        cc = np.concatenate([[0.0], np.cumsum(ind)])
        first = np.where(ok, lo, 0)
        last = np.where(ok, hi, 0)
        return cc[last] - cc[np.minimum(first + 1, last)], ok

    return compute


RANGE_FUNCS: dict[str, RangeFunc] = {
    "rate": RangeFunc(batched=_extrapolated(True, True), rollup=_rollup_extrapolated(True, True)),
    "increase": RangeFunc(batched=_extrapolated(True, False), rollup=_rollup_extrapolated(True, False)),
    "delta": RangeFunc(batched=_extrapolated(False, False), rollup=_rollup_extrapolated(False, False)),
    "irate": RangeFunc(batched=_instant_value(True)),
    "idelta": RangeFunc(batched=_instant_value(False)),
    "changes": RangeFunc(batched=_changes_like("changes")),
    "resets": RangeFunc(batched=_changes_like("resets")),
}
