"""The ``*_over_time`` functions: count, present, last, first, min and max batched over all
series; sum, avg, stddev, stdvar, mad, quantile and the ``ts_of_*`` ones per series (exact
Kahan sums and Prometheus' order of operations). Over rollup buckets sum, count and avg read
the rollup's sum and count columns, min and max its min and max columns."""

from __future__ import annotations

import math

import numpy as np

from query.aggregations import quantile_of
from query.errors import QueryError
from query.functions import lockstep
from query.functions.args import kahan
from query.functions.range import BatchedCompute, RangeCompute, RangeFunc
from query.functions.windows import DenseGrid, loop_windows, segmented_window_sums, window_reduce, window_sums
from query.values import RangeVector


def _simple(kind: str) -> BatchedCompute:
    def compute(rv: RangeVector, lo: np.ndarray, hi: np.ndarray, extra: list) -> tuple[np.ndarray, np.ndarray]:
        ok = hi > lo
        if kind == "count":
            return (hi - lo).astype(np.float64), ok
        if kind == "present":
            return np.ones(lo.shape), ok
        if not ok.any():
            return np.zeros(lo.shape), ok
        if kind == "last":
            return rv.vals_flat[np.where(ok, hi - 1, 0)], ok
        if kind == "first":
            return rv.vals_flat[np.where(ok, lo, 0)], ok
        fn = np.fmax if kind == "max" else np.fmin
        column = rv.vals_flat if rv.agg_flat is None else rv.agg_flat[kind]
        return window_reduce(column, lo, hi, ok, fn), ok

    return compute

def rollup_sum(column: str, per_second: bool = False) -> BatchedCompute:
    def compute(rv: RangeVector, lo: np.ndarray, hi: np.ndarray, extra: list) -> tuple[np.ndarray, np.ndarray]:
        agg = rv.agg_flat or {}
        if isinstance(lo, DenseGrid):
            grid = lo
            total = grid.window_sums(agg[column])
            ok = grid.presence()
        else:
            ok = hi > lo
            total = segmented_window_sums(agg[column], rv.offsets, lo, hi, ok)
        if per_second:
            total = total / (rv.range_ms / 1000.0)
        return total, ok

    compute.dense = True  # type: ignore[attr-defined]
    return compute


def _rollup_avg(rv: RangeVector, lo: np.ndarray, hi: np.ndarray, extra: list) -> tuple[np.ndarray, np.ndarray]:
    agg = rv.agg_flat or {}
    if isinstance(lo, DenseGrid):
        s = lo.window_sums(agg["sum"])
        c = lo.window_sums(agg["count"])
    else:
        ok = hi > lo
        s = segmented_window_sums(agg["sum"], rv.offsets, lo, hi, ok)
        c = segmented_window_sums(agg["count"], rv.offsets, lo, hi, ok)
    ok = c > 0
    return s / np.where(c > 0, c, 1.0), ok


_rollup_avg.dense = True  # type: ignore[attr-defined]

def _over_time(kind: str) -> RangeCompute:
    """The per-series ``<kind>_over_time`` (the batched ones are ``_simple``)."""

    def compute(rv: RangeVector, i: int, lo: np.ndarray, hi: np.ndarray, extra: list) -> tuple[np.ndarray, np.ndarray]:
        v = rv.vals[i]
        ok = (hi - lo) >= 1
        if not ok.any():
            return np.zeros(len(lo)), ok
        if kind == "sum":
            return window_sums(v, lo, hi, ok), ok
        if kind == "avg":
            return _avg_windows(v, lo, hi, ok), ok
        if kind in ("stddev", "stdvar"):
            if lockstep.worth_it(lo, hi, ok):
                var = lockstep.variances(v, lo, hi, ok)
                return (np.sqrt(var) if kind == "stddev" else var), ok
            f = _stddev if kind == "stddev" else _stdvar
            return loop_windows(v, lo, hi, ok, f), ok
        if kind == "mad":
            return loop_windows(v, lo, hi, ok, _mad), ok
        if kind == "quantile":
            q = extra[0]
            out = np.zeros(len(lo))
            for t in np.nonzero(ok)[0].tolist():
                out[t] = quantile_of(float(q[t]), v[lo[t] : hi[t]])
            return out, ok
        if kind in ("ts_of_max", "ts_of_min", "ts_of_last", "ts_of_first"):
            ts = rv.ts[i]
            if kind in ("ts_of_last", "ts_of_first"):
                return ts[np.where(ok, hi - 1 if kind == "ts_of_last" else lo, 0)] / 1000.0, ok
            if lockstep.worth_it(lo, hi, ok):
                return ts[lockstep.extreme_positions(v, lo, hi, ok, kind == "ts_of_max")] / 1000.0, ok
            out = np.zeros(len(lo))
            for t in np.nonzero(ok)[0].tolist():
                out[t] = ts[lo[t] + _ts_of_index(kind, v[lo[t] : hi[t]])] / 1000.0
            return out, ok
        raise QueryError(f"unknown function {kind}_over_time")

    return compute


def _ts_of_index(kind: str, w: np.ndarray) -> int:
    """Which sample of the window ``ts_of_max/min_over_time`` gives the time of (the last of
    equal extremes; NaN loses to any number)."""
    j = 0
    for k in range(1, len(w)):
        better = w[k] >= w[j] if kind == "ts_of_max" else w[k] <= w[j]
        if better or math.isnan(w[j]):
            j = k
    return j


def _avg_windows(v: np.ndarray, lo: np.ndarray, hi: np.ndarray, ok: np.ndarray) -> np.ndarray:
    n = np.where(ok, hi - lo, 1).astype(np.float64)
    if np.isfinite(v).all() and np.abs(v).max(initial=0.0) < 1e300:
        return window_sums(v, lo, hi, ok) / n
    if lockstep.worth_it(lo, hi, ok):
        return lockstep.averages(v, lo, hi, ok)

    def avg(w: list[float]) -> float:
        s, count, mean, c, incremental = w[0], 1.0, 0.0, 0.0, False
        for k, x in enumerate(w[1:]):
            count = float(k + 2)
            if not incremental:
                ns, nc = kahan(x, s, c)
                if not math.isinf(ns):
                    s, c = ns, nc
                    continue
                incremental = True
                mean = s / (count - 1)
                c /= count - 1
            q = (count - 1) / count
            mean, c = kahan(x / count, q * mean, q * c)
        if incremental:
            return mean + c
        return s / count + c / count

    return loop_windows(v, lo, hi, ok, avg)


def _stdvar(w: list[float]) -> float:
    count = mean = c_mean = aux = c_aux = 0.0
    for x in w:
        count += 1
        delta = x - (mean + c_mean)
        mean, c_mean = kahan(delta / count, mean, c_mean)
        aux, c_aux = kahan(delta * (x - (mean + c_mean)), aux, c_aux)
    return (aux + c_aux) / count


def _stddev(w: list[float]) -> float:
    return math.sqrt(_stdvar(w))


def _mad(w: list[float]) -> float:
    arr = np.asarray(w)
    if np.isnan(arr).any():
        return math.nan
    med = quantile_of(0.5, arr)
    return quantile_of(0.5, np.abs(arr - med))



RANGE_FUNCS: dict[str, RangeFunc] = {
    "avg_over_time": RangeFunc(per_series=_over_time("avg"), rollup=_rollup_avg),
    "sum_over_time": RangeFunc(per_series=_over_time("sum"), rollup=rollup_sum("sum")),
    "count_over_time": RangeFunc(batched=_simple("count"), rollup=rollup_sum("count")),
    "min_over_time": RangeFunc(batched=_simple("min")),
    "max_over_time": RangeFunc(batched=_simple("max")),
    "last_over_time": RangeFunc(batched=_simple("last"), keep_name=True),
    "first_over_time": RangeFunc(batched=_simple("first"), keep_name=True),
    "present_over_time": RangeFunc(batched=_simple("present")),
    "stddev_over_time": RangeFunc(per_series=_over_time("stddev")),
    "stdvar_over_time": RangeFunc(per_series=_over_time("stdvar")),
    "mad_over_time": RangeFunc(per_series=_over_time("mad")),
    "quantile_over_time": RangeFunc(per_series=_over_time("quantile"), range_index=1, scalar_args=(0,)),
    "ts_of_max_over_time": RangeFunc(per_series=_over_time("ts_of_max")),
    "ts_of_min_over_time": RangeFunc(per_series=_over_time("ts_of_min")),
    "ts_of_last_over_time": RangeFunc(per_series=_over_time("ts_of_last")),
    "ts_of_first_over_time": RangeFunc(per_series=_over_time("ts_of_first")),
}
