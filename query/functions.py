"""The PromQL function library for float samples.

Range functions (rate, *_over_time, ...) compute every step's window of every series with
NumPy index arithmetic (searchsorted windows, prefix sums, sparse tables) and fall back to
exact per-window loops only where floating-point cancellation would change the result.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from common.regex import RegexError, compile_regex
from query import parse as P
from query.aggregations import quantile_of
from query.budget import BYTES_PER_POINT
from query.errors import QueryError, QueryInputError
from query.values import (
    InstantVector,
    Labels,
    RangeVector,
    Scalar,
    String,
    Value,
    labels_get,
    merge_same_labels,
)
from storage.model import LABEL_NAME_RE

if TYPE_CHECKING:
    from query.engine import Evaluator

# One PromQL function: its arguments are evaluated by the implementation itself.
FuncImpl = Callable[["Evaluator", P.Call, np.ndarray], Value]

LD = np.longdouble
_LD_EPS = float(np.finfo(np.longdouble).eps)


# ------------------------------------------------------------------ small helpers
def _kahan(inc: float, s: float, c: float) -> tuple[float, float]:
    t = s + inc
    if math.isinf(t):
        c = 0.0
    elif abs(s) >= abs(inc):
        c += (s - t) + inc
    else:
        c += (inc - t) + s
    return t, c


def _scalar_arg(ev: "Evaluator", node: P.Node, times: np.ndarray, fname: str) -> np.ndarray:
    v = ev.eval(node, times)
    if not isinstance(v, Scalar):
        raise QueryError(f"expected scalar argument in call to function {fname!r}")
    return v.values


def _string_arg(node: P.Node, fname: str) -> str:
    if not isinstance(node, P.StringLit):
        raise QueryError(f"expected string argument in call to function {fname!r}")
    return node.value


def _vector_arg(ev: "Evaluator", node: P.Node, times: np.ndarray, fname: str) -> InstantVector:
    v = ev.eval(node, times)
    if not isinstance(v, InstantVector):
        raise QueryError(f"expected instant vector argument in call to function {fname!r}")
    return v


def _range_arg(ev: "Evaluator", node: P.Node, times: np.ndarray, fname: str) -> RangeVector:
    v = ev.eval(node, times)
    if not isinstance(v, RangeVector):
        raise QueryError(f"expected range vector argument in call to function {fname!r}")
    return v


def _finish(
    labels: list[Labels], values: list[np.ndarray], present: Sequence[np.ndarray | np.bool_], steps: int, drop: bool = True
) -> InstantVector:
    if not labels:
        return InstantVector.empty(steps)
    vec = InstantVector(labels, np.array(values, dtype=np.float64), np.array(present, dtype=bool))
    return vec.with_drop(drop).compact()


# --------------------------------------------------------------- window reducers
def window_sums(v: np.ndarray, lo: np.ndarray, hi: np.ndarray, ok: np.ndarray) -> np.ndarray:
    """Kahan-accurate sums of ``v[lo:hi]`` per step."""
    out = np.zeros(len(lo))
    if not ok.any():
        return out
    exact = np.zeros(len(lo), dtype=bool)
    if np.isfinite(v).all():
        cs = np.concatenate([[LD(0)], np.cumsum(v.astype(LD))])
        acs = np.concatenate([[LD(0)], np.cumsum(np.abs(v).astype(LD))])
        est = (cs[hi] - cs[lo]).astype(np.float64)
        bound = (acs[hi] * LD(len(v) * 2 * _LD_EPS)).astype(np.float64)
        out = est
        # worst-case rounding of the prefix sums; where it could reach 1e-10 of the result
        # (cancellation, as in 1e100 + 1 - 1e100) the window is summed exactly instead
        exact = ok & (bound > 1e-10 * np.abs(est))
    else:
        exact = ok.copy()
    for t in np.nonzero(exact)[0].tolist():
        s = c = 0.0
        for x in v[lo[t] : hi[t]].tolist():
            s, c = _kahan(x, s, c)
        out[t] = s + c
    return out


def window_reduce(v: np.ndarray, lo: np.ndarray, hi: np.ndarray, ok: np.ndarray, fn: np.ufunc) -> np.ndarray:
    """``fn``-reduction (np.fmax / np.fmin) of ``v[lo:hi]`` per window via a sparse table
    (windows of any shape)."""
    if lo.ndim != 1:
        return window_reduce(v, lo.ravel(), hi.ravel(), ok.ravel(), fn).reshape(lo.shape)
    n = len(v)
    lo_c = np.where(ok, lo, 0)
    hi_c = np.where(ok, hi, 1)
    length = np.maximum(hi_c - lo_c, 1)
    levels = [v]
    k = 1
    while (1 << k) <= n:
        prev = levels[-1]
        half = 1 << (k - 1)
        levels.append(fn(prev[:-half], prev[half:]))
        k += 1
    lvl = np.floor(np.log2(length)).astype(np.int64)
    out = np.zeros(len(lo))
    for L in np.unique(lvl[ok]).tolist():
        sel = ok & (lvl == L)
        table = levels[L]
        a = table[lo_c[sel]]
        b = table[hi_c[sel] - (1 << L)]
        out[sel] = fn(a, b)
    return out


def _loop_windows(v: np.ndarray, lo: np.ndarray, hi: np.ndarray, ok: np.ndarray, f: Callable[[list[float]], float]) -> np.ndarray:
    out = np.zeros(len(lo))
    for t in np.nonzero(ok)[0].tolist():
        out[t] = f(v[lo[t] : hi[t]].tolist())
    return out


# ------------------------------------------------------------ range functions
RangeCompute = Callable[[RangeVector, int, np.ndarray, np.ndarray, list], tuple[np.ndarray, np.ndarray]]


class _SeriesLists:
    """Per-series views of a RangeVector, built once for the per-series function loop."""

    def __init__(self, rv: RangeVector) -> None:
        self.labels = rv.labels
        self.ts = rv.ts
        self.vals = rv.vals
        self.agg = rv.agg
        self.ends = rv.ends
        self.range_ms = rv.range_ms
        self.eval_times = rv.eval_times
        self.resolution_ms = rv.resolution_ms


# Batched range functions: (range vector, lo, hi as (series, steps) flat indices, scalar args)
# -> (values, present), both (series, steps).
# (range vector, lo, hi, scalar args) -> (values, present). lo/hi are the per-step window bounds, or a
# _DenseGrid and None for a compute marked `dense` (see _dense_rollup_windows).
BatchedCompute = Callable[[RangeVector, Any, Any, list], tuple[np.ndarray, np.ndarray]]


def _series_starts_mask(rv: RangeVector) -> np.ndarray:
    starts = np.zeros(len(rv.vals_flat), dtype=bool)
    first = rv.offsets[:-1][np.diff(rv.offsets) > 0]
    starts[first] = True
    return starts


def _extrapolate(
    result: np.ndarray, ok: np.ndarray, n: np.ndarray, ft: np.ndarray, lt: np.ndarray, fv: np.ndarray,
    ends: np.ndarray, range_ms: int, is_counter: bool, is_rate: bool,
) -> tuple[np.ndarray, np.ndarray]:
    """Prometheus' extrapolation of rate/increase/delta to the range edges (``extrapolatedRate``):
    extend by the gap to each edge unless it exceeds 1.1x the average sample interval (then by
    half an interval), never below a counter's zero point; per second for ``rate``."""
    to_start = (ft - (ends - range_ms)) / 1000.0
    to_end = (ends - lt) / 1000.0
    sampled = (lt - ft) / 1000.0
    avg = sampled / np.where(ok, n - 1, 1)
    threshold = avg * 1.1
    to_start = np.where(to_start >= threshold, avg / 2, to_start)
    if is_counter:
        zero_ok = (result > 0) & (fv >= 0)
        to_zero = np.where(zero_ok, sampled * (fv / np.where(result != 0, result, 1.0)), np.inf)
        to_start = np.where(zero_ok & (to_zero < to_start), to_zero, to_start)
    to_end = np.where(to_end >= threshold, avg / 2, to_end)
    factor = (sampled + to_start + to_end) / np.where(sampled != 0, sampled, np.nan)
    if is_rate:
        factor = factor / (range_ms / 1000.0)
    return result * factor, ok


def _b_extrapolated(is_counter: bool, is_rate: bool) -> BatchedCompute:
    def compute(rv: RangeVector, lo: np.ndarray, hi: np.ndarray, extra: list) -> tuple[np.ndarray, np.ndarray]:
        ts, v = rv.ts_flat, rv.vals_flat
        n = hi - lo
        ok = n >= 2
        if not ok.any():
            return np.zeros(lo.shape), ok
        first = np.where(ok, lo, 0)
        last = np.where(ok, hi - 1, 0)
        fv, lv = v[first], v[last]
        ft, lt = ts[first], ts[last]
        result = lv - fv
        if is_counter and len(v) > 1:
            pairs = np.zeros(len(v))
            pairs[1:] = np.where(v[1:] < v[:-1], v[:-1], 0.0)
            pairs[_series_starts_mask(rv)] = 0.0
            if pairs.any():
                cc = np.cumsum(pairs)
                result = result + (cc[last] - cc[first])
        return _extrapolate(result, ok, n, ft, lt, fv, rv.ends[None, :], rv.range_ms, is_counter, is_rate)

    return compute


def _b_instant_value(is_rate: bool) -> BatchedCompute:
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


def _b_changes_like(kind: str) -> BatchedCompute:
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
            ind[_series_starts_mask(rv)] = 0.0
        cc = np.concatenate([[0.0], np.cumsum(ind)])
        first = np.where(ok, lo, 0)
        last = np.where(ok, hi, 0)
        return cc[last] - cc[np.minimum(first + 1, last)], ok

    return compute


def _b_simple(kind: str) -> BatchedCompute:
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


def segmented_window_sums(
    v: np.ndarray, offsets: np.ndarray, lo: np.ndarray, hi: np.ndarray, ok: np.ndarray
) -> np.ndarray:
    """Kahan-accurate window sums for (series, steps) windows of flat per-series arrays."""
    out = np.zeros(lo.shape)
    for i in range(len(offsets) - 1):
        a, b = int(offsets[i]), int(offsets[i + 1])
        if b > a and ok[i].any():
            out[i] = window_sums(v[a:b], lo[i] - a, hi[i] - a, ok[i])
    return out


class _DenseGrid:
    """Rollup rows on their regular bucket grid: (series x buckets) cells, and per step the
    bucket index range [lo, hi) of its window (the same for every series). ``full`` when
    every series has every bucket (the common case): the flat column is then the grid."""

    def __init__(
        self, rv: RangeVector, col: np.ndarray, nb: int, lo: np.ndarray, hi: np.ndarray, full: bool
    ) -> None:
        self.rv, self.col, self.nb, self.lo, self.hi, self.full = rv, col, nb, lo, hi, full
        self.n = len(rv.labels)

    def presence(self) -> np.ndarray:
        """(series, steps): whether the window holds at least one bucket of the series."""
        if self.full:
            return np.broadcast_to((self.hi > self.lo)[None, :], (self.n, len(self.hi))).copy()
        counts = np.diff(self.rv.offsets)
        has = counts > 0
        first = np.where(has, self.col[np.minimum(self.rv.offsets[:-1], len(self.col) - 1)], 0)
        last = np.where(has, self.col[np.maximum(self.rv.offsets[1:] - 1, 0)], -1)
        if np.array_equal(last - first + 1, np.where(has, counts, 0)):
            # No gaps: a window holds data iff it overlaps [first, last].
            return (self.lo[None, :] <= last[:, None]) & (self.hi[None, :] > first[:, None]) & has[:, None]
        return self.window_sums(np.ones(len(self.col))) > 0

    def window_sums(self, values: np.ndarray) -> np.ndarray:
        dense = np.zeros((self.n, self.nb + 1))
        if self.full:
            dense[:, 1:] = values.reshape(self.n, self.nb)
        else:
            sidx = np.repeat(np.arange(self.n, dtype=np.int64), np.diff(self.rv.offsets))
            dense[sidx, self.col + 1] = values
        finite = np.isfinite(dense)
        if finite.all():
            cs = np.cumsum(dense, axis=1)
            return _columns(cs, self.hi) - _columns(cs, self.lo)
        # A NaN or infinite bucket must not reach the prefix sums of later windows: sum the
        # finite buckets, count the others per window, and give IEEE's answer where any is in it.
        cs = np.cumsum(np.where(finite, dense, 0.0), axis=1)
        out = _columns(cs, self.hi) - _columns(cs, self.lo)
        counts = []
        for bad in (np.isnan(dense), dense == np.inf, dense == -np.inf):
            c = np.cumsum(bad, axis=1)
            counts.append(_columns(c, self.hi) - _columns(c, self.lo))
        nan, pinf, ninf = counts
        out = np.where(pinf > 0, np.inf, out)
        out = np.where(ninf > 0, -np.inf, out)
        return np.where((nan > 0) | ((pinf > 0) & (ninf > 0)), np.nan, out)


def _columns(a: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """``a[:, idx]``; a strided view when ``idx`` is evenly spaced and ascending (a panel
    whose step is a multiple of the bucket), which spares gathering every cell."""
    if len(idx) > 1:
        d = int(idx[1]) - int(idx[0])
        if d > 0 and int(idx[-1]) - int(idx[0]) == d * (len(idx) - 1) and bool(np.all(np.diff(idx) == d)):
            return a[:, int(idx[0]) : int(idx[-1]) + 1 : d]
    return a[:, idx]


_DENSE_MAX_CELLS = 40_000_000


def _dense_rollup_windows(rv: RangeVector) -> tuple[_DenseGrid, None] | None:
    res = rv.resolution_ms
    if res <= 0 or rv.agg_flat is None or len(rv.ts_flat) == 0:
        return None
    bucket = (rv.ts_flat - (res - 1)) // res
    g0 = int(bucket.min())
    nb = int(bucket.max()) - g0 + 1
    n = len(rv.labels)
    if n * (nb + 1) > _DENSE_MAX_CELLS:
        return None
    col = bucket - g0
    counts = np.diff(rv.offsets)
    full = bool((counts == nb).all()) and bool((col[rv.offsets[:-1]] == 0).all())
    grid_end = (g0 + np.arange(nb, dtype=np.int64)) * res + (res - 1)
    lo = np.searchsorted(grid_end, rv.ends - rv.range_ms, "right")
    hi = np.searchsorted(grid_end, rv.ends, "right")
    return _DenseGrid(rv, col, nb, lo, hi, full), None


def _b_rollup_sum(column: str, per_second: bool = False) -> BatchedCompute:
    def compute(rv: RangeVector, lo: np.ndarray, hi: np.ndarray, extra: list) -> tuple[np.ndarray, np.ndarray]:
        agg = rv.agg_flat or {}
        if isinstance(lo, _DenseGrid):
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


def _b_rollup_avg(rv: RangeVector, lo: np.ndarray, hi: np.ndarray, extra: list) -> tuple[np.ndarray, np.ndarray]:
    agg = rv.agg_flat or {}
    if isinstance(lo, _DenseGrid):
        s = lo.window_sums(agg["sum"])
        c = lo.window_sums(agg["count"])
    else:
        ok = hi > lo
        s = segmented_window_sums(agg["sum"], rv.offsets, lo, hi, ok)
        c = segmented_window_sums(agg["count"], rv.offsets, lo, hi, ok)
    ok = c > 0
    return s / np.where(c > 0, c, 1.0), ok


_b_rollup_avg.dense = True  # type: ignore[attr-defined]


def _range_function(
    ev: "Evaluator",
    node: P.Call,
    times: np.ndarray,
    compute: RangeCompute,
    *,
    keep_name: bool = False,
    range_index: int = 0,
    scalar_args: tuple[int, ...] = (),
    batched: "BatchedCompute | None" = None,
) -> InstantVector:
    rv = _range_arg(ev, node.args[range_index], times, node.name)
    extra = [_scalar_arg(ev, node.args[i], times, node.name) for i in scalar_args]
    if batched is not None:
        dense = _dense_rollup_windows(rv) if getattr(batched, "dense", False) else None
        if dense is not None:
            vals, ok = batched(rv, dense[0], dense[1], extra)
        else:
            lo, hi = rv.windows_all()
            vals, ok = batched(rv, lo, hi, extra)
        rows = np.nonzero(ok.any(axis=1))[0] if len(rv.labels) else np.zeros(0, dtype=np.int64)
        if len(rows) == 0:
            return InstantVector.empty(len(times))
        if len(rows) < len(rv.labels):
            ok, vals = ok[rows], vals[rows]
        out = InstantVector([rv.labels[i] for i in rows], np.where(ok, vals, 0.0), ok)
        return out.with_drop(not keep_name)
    lists = _SeriesLists(rv)
    labels, values, present = [], [], []
    for i, lab in enumerate(rv.labels):
        ev.check_deadline()
        lo, hi = rv.windows(i)
        vals, ok = compute(lists, i, lo, hi, extra)  # type: ignore[arg-type]
        if not ok.any():
            continue
        labels.append(lab)
        values.append(np.where(ok, vals, 0.0))
        present.append(ok)
    return _finish(labels, values, present, len(times), drop=not keep_name)


def _extrapolated(is_counter: bool, is_rate: bool) -> RangeCompute:
    def compute(rv: RangeVector, i: int, lo: np.ndarray, hi: np.ndarray, extra: list) -> tuple[np.ndarray, np.ndarray]:
        ts, v = rv.ts[i], rv.vals[i]
        n = hi - lo
        ok = n >= 2
        if not ok.any():
            return np.zeros(len(lo)), ok
        first = np.where(ok, lo, 0)
        last = np.where(ok, hi - 1, 0)
        fv, lv = v[first], v[last]
        ft, lt = ts[first], ts[last]
        result = lv - fv
        if is_counter and len(v) > 1:
            pairs = np.zeros(len(v))
            pairs[1:] = np.where(v[1:] < v[:-1], v[:-1], 0.0)
            if pairs.any():
                cc = np.cumsum(pairs)
                result = result + (cc[last] - cc[first])
        return _extrapolate(result, ok, n, ft, lt, fv, rv.ends, rv.range_ms, is_counter, is_rate)

    return compute


def _instant_value(is_rate: bool) -> RangeCompute:
    def compute(rv: RangeVector, i: int, lo: np.ndarray, hi: np.ndarray, extra: list) -> tuple[np.ndarray, np.ndarray]:
        ts, v = rv.ts[i], rv.vals[i]
        ok = (hi - lo) >= 2
        last = np.where(ok, hi - 1, 1)
        prev = last - 1
        lv, pv = v[last], v[prev]
        dt = (ts[last] - ts[prev]).astype(np.float64)
        ok &= dt != 0
        if is_rate:
            res = np.where(lv < pv, lv, lv - pv) / (dt / 1000.0)
        else:
            res = lv - pv
        return res, ok

    return compute


def _changes_like(kind: str) -> RangeCompute:
    def compute(rv: RangeVector, i: int, lo: np.ndarray, hi: np.ndarray, extra: list) -> tuple[np.ndarray, np.ndarray]:
        v = rv.vals[i]
        ok = (hi - lo) >= 1
        ind = np.zeros(len(v))
        if len(v) > 1:
            a, b = v[:-1], v[1:]
            if kind == "changes":
                ind[1:] = ~((a == b) | (np.isnan(a) & np.isnan(b)))
            else:
                ind[1:] = b < a
        cc = np.concatenate([[0.0], np.cumsum(ind)])
        first = np.where(ok, lo, 0)
        last = np.where(ok, hi, 0)
        # pairs (j-1, j) with lo < j < hi
        res = cc[last] - cc[np.minimum(first + 1, last)]
        return res, ok

    return compute


def _over_time(kind: str) -> RangeCompute:  # noqa: C901 - one vectorised branch per *_over_time function
    def compute(rv: RangeVector, i: int, lo: np.ndarray, hi: np.ndarray, extra: list) -> tuple[np.ndarray, np.ndarray]:
        v = rv.vals[i]
        n = hi - lo
        ok = n >= 1
        if not ok.any():
            return np.zeros(len(lo)), ok
        if kind == "count":
            return n.astype(np.float64), ok
        if kind == "present":
            return np.ones(len(lo)), ok
        if kind == "last":
            return v[np.where(ok, hi - 1, 0)], ok
        if kind == "first":
            return v[np.where(ok, lo, 0)], ok
        if kind == "sum":
            return window_sums(v, lo, hi, ok), ok
        if kind == "avg":
            return _avg_windows(v, lo, hi, ok), ok
        if kind == "max":
            return window_reduce(v, lo, hi, ok, np.fmax), ok
        if kind == "min":
            return window_reduce(v, lo, hi, ok, np.fmin), ok
        if kind in ("stddev", "stdvar"):
            f = _stddev if kind == "stddev" else _stdvar
            return _loop_windows(v, lo, hi, ok, f), ok
        if kind == "mad":
            return _loop_windows(v, lo, hi, ok, _mad), ok
        if kind == "quantile":
            q = extra[0]
            out = np.zeros(len(lo))
            for t in np.nonzero(ok)[0].tolist():
                out[t] = quantile_of(float(q[t]), v[lo[t] : hi[t]])
            return out, ok
        if kind in ("ts_of_max", "ts_of_min", "ts_of_last", "ts_of_first"):
            ts = rv.ts[i]
            out = np.zeros(len(lo))
            for t in np.nonzero(ok)[0].tolist():
                w = v[lo[t] : hi[t]]
                if kind == "ts_of_last":
                    j = len(w) - 1
                elif kind == "ts_of_first":
                    j = 0
                else:
                    j = 0
                    for k in range(1, len(w)):
                        better = w[k] >= w[j] if kind == "ts_of_max" else w[k] <= w[j]
                        if better or math.isnan(w[j]):
                            j = k
                out[t] = ts[lo[t] + j] / 1000.0
            return out, ok
        raise QueryError(f"unknown function {kind}_over_time")

    return compute


def _avg_windows(v: np.ndarray, lo: np.ndarray, hi: np.ndarray, ok: np.ndarray) -> np.ndarray:
    n = np.where(ok, hi - lo, 1).astype(np.float64)
    if np.isfinite(v).all() and np.abs(v).max(initial=0.0) < 1e300:
        return window_sums(v, lo, hi, ok) / n

    def avg(w: list[float]) -> float:
        s, count, mean, c, incremental = w[0], 1.0, 0.0, 0.0, False
        for k, x in enumerate(w[1:]):
            count = float(k + 2)
            if not incremental:
                ns, nc = _kahan(x, s, c)
                if not math.isinf(ns):
                    s, c = ns, nc
                    continue
                incremental = True
                mean = s / (count - 1)
                c /= count - 1
            q = (count - 1) / count
            mean, c = _kahan(x / count, q * mean, q * c)
        if incremental:
            return mean + c
        return s / count + c / count

    return _loop_windows(v, lo, hi, ok, avg)


def _stdvar(w: list[float]) -> float:
    count = mean = c_mean = aux = c_aux = 0.0
    for x in w:
        count += 1
        delta = x - (mean + c_mean)
        mean, c_mean = _kahan(delta / count, mean, c_mean)
        aux, c_aux = _kahan(delta * (x - (mean + c_mean)), aux, c_aux)
    return (aux + c_aux) / count


def _stddev(w: list[float]) -> float:
    return math.sqrt(_stdvar(w))


def _mad(w: list[float]) -> float:
    arr = np.asarray(w)
    if np.isnan(arr).any():
        return math.nan
    med = quantile_of(0.5, arr)
    return quantile_of(0.5, np.abs(arr - med))


def linear_regression(ts: list[int], vs: list[float], intercept_time: int) -> tuple[float, float]:
    n = 0.0
    sx = cx = sy = cy = sxy = cxy = sx2 = cx2 = 0.0
    init_y = vs[0]
    const_y = True
    for k, (t, y) in enumerate(zip(ts, vs, strict=False)):
        if const_y and k > 0 and y != init_y:
            const_y = False
        n += 1.0
        x = (t - intercept_time) / 1e3
        sx, cx = _kahan(x, sx, cx)
        sy, cy = _kahan(y, sy, cy)
        sxy, cxy = _kahan(x * y, sxy, cxy)
        sx2, cx2 = _kahan(x * x, sx2, cx2)
    if const_y:
        if math.isinf(init_y):
            return math.nan, math.nan
        return 0.0, init_y
    sx += cx
    sy += cy
    sxy += cxy
    sx2 += cx2
    cov = sxy - sx * sy / n
    var = sx2 - sx * sx / n
    slope = cov / var if var != 0 else (math.nan if cov == 0 else math.copysign(math.inf, cov))
    intercept = sy / n - slope * sx / n
    return slope, intercept


def _deriv(rv: RangeVector, i: int, lo: np.ndarray, hi: np.ndarray, extra: list) -> tuple[np.ndarray, np.ndarray]:
    ts, v = rv.ts[i], rv.vals[i]
    ok = (hi - lo) >= 2
    out = np.zeros(len(lo))
    for t in np.nonzero(ok)[0].tolist():
        a, b = lo[t], hi[t]
        slope, _ = linear_regression(ts[a:b].tolist(), v[a:b].tolist(), int(ts[a]))
        out[t] = slope
    return out, ok


def _predict_linear(ev: "Evaluator", node: P.Call) -> RangeCompute:
    def compute(rv: RangeVector, i: int, lo: np.ndarray, hi: np.ndarray, extra: list) -> tuple[np.ndarray, np.ndarray]:
        ts, v = rv.ts[i], rv.vals[i]
        dur = extra[0]
        ok = (hi - lo) >= 2
        out = np.zeros(len(lo))
        base = _intercept_times(ev, node.args[0], rv)
        for t in np.nonzero(ok)[0].tolist():
            a, b = lo[t], hi[t]
            slope, icpt = linear_regression(ts[a:b].tolist(), v[a:b].tolist(), int(base[t]))
            out[t] = icpt + slope * float(dur[t])
        return out, ok

    return compute


def _intercept_times(ev: "Evaluator", arg: P.Node, rv: RangeVector) -> np.ndarray:
    """predict_linear predicts from each step's own time, also under ``@`` (as upstream)."""
    return rv.eval_times


def _double_exp_smoothing(rv: RangeVector, i: int, lo: np.ndarray, hi: np.ndarray, extra: list) -> tuple[np.ndarray, np.ndarray]:
    v = rv.vals[i]
    sf_all, tf_all = extra
    ok = (hi - lo) >= 2
    out = np.zeros(len(lo))
    for t in np.nonzero(ok)[0].tolist():
        sf, tf = float(sf_all[t]), float(tf_all[t])
        if not 0 < sf < 1:
            raise QueryError(f"invalid smoothing factor. Expected: 0 < sf < 1, got: {sf:f}")
        if not 0 < tf < 1:
            raise QueryError(f"invalid trend factor. Expected: 0 < tf < 1, got: {tf:f}")
        w = v[lo[t] : hi[t]].tolist()
        s0, s1 = 0.0, w[0]
        b = w[1] - w[0]
        for k in range(1, len(w)):
            x = sf * w[k]
            if k - 1 != 0:
                b = tf * (s1 - s0) + (1 - tf) * b
            y = (1 - sf) * (s1 + b)
            s0, s1 = s1, x + y
        out[t] = s1
    return out, ok


# ----------------------------------------------------------- instant functions
def _math(fn: Callable[[np.ndarray], np.ndarray]) -> FuncImpl:
    def impl(ev: "Evaluator", node: P.Call, times: np.ndarray) -> Value:
        vec = _vector_arg(ev, node.args[0], times, node.name)
        return InstantVector(vec.labels, fn(vec.values), vec.present).with_drop(True)

    return impl


def _sgn(x: np.ndarray) -> np.ndarray:
    return np.where(np.isnan(x), np.nan, np.sign(x))


def _round(ev: "Evaluator", node: P.Call, times: np.ndarray) -> Value:
    vec = _vector_arg(ev, node.args[0], times, node.name)
    to = _scalar_arg(ev, node.args[1], times, node.name) if len(node.args) > 1 else np.ones(len(times))
    inv = 1.0 / to
    vals = np.floor(vec.values * inv + 0.5) / inv
    return InstantVector(vec.labels, vals, vec.present).with_drop(True)


def _clamp(kind: str) -> FuncImpl:
    def impl(ev: "Evaluator", node: P.Call, times: np.ndarray) -> Value:
        vec = _vector_arg(ev, node.args[0], times, node.name)
        vals = vec.values
        present = vec.present
        if kind == "clamp":
            lo = _scalar_arg(ev, node.args[1], times, node.name)
            hi = _scalar_arg(ev, node.args[2], times, node.name)
            vals = _go_max(lo[None, :], _go_min(hi[None, :], vals))
            present = present & ~(hi < lo)[None, :]
        elif kind == "clamp_min":
            lo = _scalar_arg(ev, node.args[1], times, node.name)
            vals = _go_max(lo[None, :], vals)
        else:
            hi = _scalar_arg(ev, node.args[1], times, node.name)
            vals = _go_min(hi[None, :], vals)
        return InstantVector(vec.labels, vals, present).with_drop(True).compact()

    return impl


def _go_max(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.maximum(a, b)


def _go_min(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.minimum(a, b)


def _time(ev: "Evaluator", node: P.Call, times: np.ndarray) -> Value:
    return Scalar(times / 1000.0)


def _pi(ev: "Evaluator", node: P.Call, times: np.ndarray) -> Value:
    return Scalar(np.full(len(times), math.pi))


def _vector(ev: "Evaluator", node: P.Call, times: np.ndarray) -> Value:
    s = _scalar_arg(ev, node.args[0], times, node.name)
    return InstantVector([()], s[None, :].copy(), np.ones((1, len(times)), dtype=bool))


def _scalar(ev: "Evaluator", node: P.Call, times: np.ndarray) -> Value:
    vec = _vector_arg(ev, node.args[0], times, node.name)
    if len(vec) == 0:
        return Scalar(np.full(len(times), np.nan))
    count = vec.present.sum(axis=0)
    val = np.where(vec.present, vec.values, 0.0).sum(axis=0)
    return Scalar(np.where(count == 1, val, np.nan))


def _timestamp(ev: "Evaluator", node: P.Call, times: np.ndarray) -> Value:
    arg = node.args[0]
    if isinstance(arg, P.VectorSel):
        vec = ev.eval_selector(arg, times, sample_times=True)
    else:
        vec = _vector_arg(ev, arg, times, node.name)
        vec = InstantVector(vec.labels, np.broadcast_to(times / 1000.0, vec.values.shape).copy(), vec.present)
    return InstantVector(vec.labels, vec.values, vec.present).with_drop(True)


def _absent_labels(arg: P.Node) -> Labels:
    if isinstance(arg, P.MatrixSel):
        arg = arg.vector
    if not isinstance(arg, P.VectorSel):
        return ()
    out: dict[str, str] = {}
    has: set[str] = set()
    for m in arg.matchers:
        if m.name == "__name__":
            continue
        if m.op.value == "=" and m.name not in has:
            out[m.name] = m.value
            has.add(m.name)
        else:
            out.pop(m.name, None)
    return tuple(sorted((k, v) for k, v in out.items() if v != ""))


def _absent(ev: "Evaluator", node: P.Call, times: np.ndarray) -> Value:
    vec = _vector_arg(ev, node.args[0], times, node.name)
    missing = ~np.asarray(vec.present.any(axis=0)) if len(vec) else np.ones(len(times), dtype=bool)
    return InstantVector([_absent_labels(node.args[0])], np.ones((1, len(times))), missing[None, :]).compact()


def _absent_over_time(ev: "Evaluator", node: P.Call, times: np.ndarray) -> Value:
    rv = _range_arg(ev, node.args[0], times, node.name)
    has = np.zeros(len(times), dtype=bool)
    for i in range(len(rv.labels)):
        lo, hi = rv.windows(i)
        has |= hi > lo
    return InstantVector([_absent_labels(node.args[0])], np.ones((1, len(times))), ~has[None, :]).compact()


def _sort(desc: bool) -> FuncImpl:
    def impl(ev: "Evaluator", node: P.Call, times: np.ndarray) -> Value:
        vec = _vector_arg(ev, node.args[0], times, node.name)
        if len(vec) == 0 or len(times) != 1:
            return vec
        v = vec.values[:, 0]
        nan = np.isnan(v)
        if desc:
            order = np.lexsort((-v, nan))
        else:
            order = np.lexsort((v, nan))
        return vec.take(order)

    return impl


def _sort_by_label(desc: bool) -> FuncImpl:
    def impl(ev: "Evaluator", node: P.Call, times: np.ndarray) -> Value:
        vec = _vector_arg(ev, node.args[0], times, node.name)
        names = [_string_arg(a, node.name) for a in node.args[1:]]
        if len(vec) == 0:
            return vec

        def key(i: int) -> tuple:
            lab = vec.labels[i]
            return tuple(_natural_key(labels_get(lab, n)) for n in names) + (lab,)

        order = sorted(range(len(vec)), key=key, reverse=desc)
        return vec.take(order)

    return impl


def _natural_key(s: str) -> tuple:
    parts = re.split(r"(\d+)", s)
    return tuple((0, int(p), p) if p.isdigit() else (1, 0, p) for p in parts if p != "")


def _valid_label_name(name: str) -> bool:
    return bool(name) and (LABEL_NAME_RE.match(name) is not None or _utf8_ok(name))


def _utf8_ok(name: str) -> bool:
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _label_replace(ev: "Evaluator", node: P.Call, times: np.ndarray) -> Value:
    vec = _vector_arg(ev, node.args[0], times, node.name)
    dst = _string_arg(node.args[1], node.name)
    repl = _string_arg(node.args[2], node.name)
    src = _string_arg(node.args[3], node.name)
    rx_text = _string_arg(node.args[4], node.name)
    try:
        rx = compile_regex(rx_text)
    except RegexError as exc:
        raise QueryInputError(f"invalid regular expression in label_replace(): {exc}") from None
    if not _valid_label_name(dst):
        raise QueryError(f"invalid destination label name in label_replace(): {dst}")
    labels = []
    drop = vec.drops().copy()
    for i, lab in enumerate(vec.labels):
        ev.check_deadline()
        groups = rx.groups_of(labels_get(lab, src))
        if groups is None:
            labels.append(lab)
            continue
        val = rx.expand(repl, groups)
        ev.reserve(len(val) // BYTES_PER_POINT, "label_replace output labels: ")  # long values cost memory too
        labels.append(_set_label(lab, dst, val, drop, i))
    return _check_unique(InstantVector(labels, vec.values, vec.present, drop))


def _set_label(lab: tuple, dst: str, val: str, drop: np.ndarray, i: int) -> tuple:
    """``lab`` with ``dst`` set to ``val`` (removed when empty), as label_replace/label_join do;
    writing ``__name__`` keeps the name on this series."""
    d = dict(lab)
    if val:
        d[dst] = val
    else:
        d.pop(dst, None)
    if dst == "__name__":
        drop[i] = False
    return tuple(sorted(d.items()))


def _check_unique(vec: InstantVector) -> InstantVector:
    """label_replace/label_join must not create two series with one label set at one step."""
    merge_same_labels(InstantVector(vec.labels, vec.values, vec.present))
    return vec


def _label_join(ev: "Evaluator", node: P.Call, times: np.ndarray) -> Value:
    vec = _vector_arg(ev, node.args[0], times, node.name)
    dst = _string_arg(node.args[1], node.name)
    sep = _string_arg(node.args[2], node.name)
    srcs = [_string_arg(a, node.name) for a in node.args[3:]]
    if not _valid_label_name(dst):
        raise QueryError(f"invalid destination label name in label_join(): {dst}")
    labels = []
    drop = vec.drops().copy()
    for i, lab in enumerate(vec.labels):
        ev.check_deadline()
        val = sep.join(labels_get(lab, s) for s in srcs)
        ev.reserve(len(val) // BYTES_PER_POINT, "label_join output labels: ")
        labels.append(_set_label(lab, dst, val, drop, i))
    return _check_unique(InstantVector(labels, vec.values, vec.present, drop))


_DATE_FUNCS = {"day_of_month", "day_of_week", "day_of_year", "days_in_month", "hour", "minute", "month", "year"}


def _date_func(ev: "Evaluator", node: P.Call, times: np.ndarray) -> Value:
    if node.args:
        vec = _vector_arg(ev, node.args[0], times, node.name)
        labels = vec.labels
        secs = vec.values
        present = vec.present
    else:
        labels = [()]
        secs = (times / 1000.0)[None, :]
        present = np.ones((1, len(times)), dtype=bool)
    finite = np.isfinite(secs)
    s = np.where(finite, np.trunc(np.where(finite, secs, 0.0)), 0.0).astype(np.int64)
    dt = s.astype("datetime64[s]")
    days = dt.astype("datetime64[D]")
    months = dt.astype("datetime64[M]")
    years = dt.astype("datetime64[Y]")
    name = node.name
    if name == "year":
        out = years.astype(np.int64) + 1970
    elif name == "month":
        out = (months.astype(np.int64) % 12) + 1
    elif name == "day_of_month":
        out = (days - months.astype("datetime64[D]")).astype(np.int64) + 1
    elif name == "day_of_year":
        out = (days - years.astype("datetime64[D]")).astype(np.int64) + 1
    elif name == "day_of_week":
        out = (days.astype(np.int64) + 4) % 7
    elif name == "days_in_month":
        out = ((months + 1).astype("datetime64[D]") - months.astype("datetime64[D]")).astype(np.int64)
    elif name == "hour":
        out = (s // 3600) % 24
    else:
        out = (s // 60) % 60
    vals = np.where(finite, out.astype(np.float64), np.nan)
    return InstantVector(labels, vals, present).with_drop(True)


def _le_value(text: str) -> float | None:
    try:
        t = text.strip()
        if t.lower() in ("+inf", "inf"):
            return math.inf
        if t.lower() == "-inf":
            return -math.inf
        return float(t)
    except ValueError:
        return None


def _almost_equal(a: float, b: float, eps: float) -> bool:
    if math.isnan(a) and math.isnan(b):
        return True
    if a == b:
        return True
    abs_sum = abs(a) + abs(b)
    diff = abs(a - b)
    min_normal = 2.2250738585072014e-308
    if a == 0 or b == 0 or abs_sum < min_normal:
        return diff < eps * min_normal
    return diff / min(abs_sum, 1.7976931348623157e308) < eps


def _merged_buckets(buckets: list[tuple[float, float]]) -> list[list[float]] | None:
    """Classic-histogram buckets sorted by upper bound, counts of equal bounds summed; None
    when the last bucket is not +Inf (upstream's NaN)."""
    buckets = sorted(buckets, key=lambda b: b[0])
    if not buckets or not math.isinf(buckets[-1][0]) or buckets[-1][0] < 0:
        return None
    merged: list[list[float]] = []
    for ub, cnt in buckets:
        if merged and merged[-1][0] == ub:
            merged[-1][1] += cnt
        else:
            merged.append([ub, cnt])
    return merged


def bucket_quantile(q: float, buckets: list[tuple[float, float]]) -> float:
    """Upstream ``BucketQuantile`` for classic histograms: (upper bound, cumulative count) pairs."""
    if math.isnan(q):
        return math.nan
    if q < 0:
        return -math.inf
    if q > 1:
        return math.inf
    merged = _merged_buckets(buckets)
    if merged is None:
        return math.nan
    prev = merged[0][1]
    for k in range(1, len(merged)):
        cur = merged[k][1]
        if cur == prev:
            continue
        if _almost_equal(prev, cur, 1e-12):
            merged[k][1] = prev
            continue
        if cur < prev:
            merged[k][1] = prev
            continue
        prev = cur
    if len(merged) < 2:
        return math.nan
    observations = merged[-1][1]
    if observations == 0:
        return math.nan
    rank = q * observations
    b = len(merged) - 1
    for k in range(len(merged) - 1):
        if merged[k][1] >= rank:
            b = k
            break
    if b == len(merged) - 1:
        return merged[-2][0]
    if b == 0 and merged[0][0] <= 0:
        return merged[0][0]
    start = 0.0
    end = merged[b][0]
    count = merged[b][1]
    if b > 0:
        start = merged[b - 1][0]
        count -= merged[b - 1][1]
        rank -= merged[b - 1][1]
    return start + (end - start) * (rank / count)


def _histogram_quantile(ev: "Evaluator", node: P.Call, times: np.ndarray) -> Value:
    q = _scalar_arg(ev, node.args[0], times, node.name)
    vec = _vector_arg(ev, node.args[1], times, node.name)
    groups: dict[Labels, list[tuple[float, int]]] = {}
    for i, lab in enumerate(vec.labels):
        le_text = None
        for k, v in lab:
            if k == "le":
                le_text = v
        if le_text is None:
            continue
        le = _le_value(le_text)
        if le is None:
            continue
        key = tuple(p for p in lab if p[0] != "le")
        groups.setdefault(key, []).append((le, i))
    labels, values, present = [], [], []
    for key, items in groups.items():
        ev.check_deadline()  # (a Python loop over groups x steps)
        rows = [i for _, i in items]
        p = vec.present[rows].any(axis=0)
        out = np.zeros(len(times))
        for t in np.nonzero(p)[0].tolist():
            bk = [(le, float(vec.values[i, t])) for le, i in items if vec.present[i, t]]
            out[t] = bucket_quantile(float(q[t]), bk)
        labels.append(key)
        values.append(out)
        present.append(p)
    return _finish(labels, values, present, len(times))


def _query_scalar(kind: str) -> FuncImpl:
    def impl(ev: "Evaluator", node: P.Call, times: np.ndarray) -> Value:
        n = len(times)
        if kind == "start":
            return Scalar(np.full(n, ev.start_ms / 1000.0))
        if kind == "end":
            return Scalar(np.full(n, ev.end_ms / 1000.0))
        if kind == "step":
            return Scalar(np.full(n, ev.step_ms / 1000.0))
        return Scalar(np.full(n, (ev.end_ms - ev.start_ms) / 1000.0))

    return impl


def _min_max_of(is_min: bool) -> FuncImpl:
    def impl(ev: "Evaluator", node: P.Call, times: np.ndarray) -> Value:
        a = _scalar_arg(ev, node.args[0], times, node.name)
        b = _scalar_arg(ev, node.args[1], times, node.name)
        return Scalar(np.minimum(a, b) if is_min else np.maximum(a, b))

    return impl


def bucket_fraction(lower: float, upper: float, buckets: list[tuple[float, float]]) -> float:
    """Fraction of observations between ``lower`` and ``upper`` in a classic histogram.

    Buckets of infinite width contribute nothing when a bound falls inside them; the first
    bucket starts at 0 when its upper bound is positive (as upstream assumes)."""
    merged = _merged_buckets(buckets)
    if merged is None:
        return math.nan
    count = merged[-1][1]
    if count == 0 or math.isnan(lower) or math.isnan(upper):
        return math.nan
    if lower >= upper:
        return 0.0
    rank = lower_rank = upper_rank = 0.0
    lower_set = upper_set = False
    for i, (ub, bcount) in enumerate(merged):
        if i == 0:
            lb = 0.0 if ub > 0 else -math.inf
        else:
            lb = merged[i - 1][0]

        def interp(v: float, lb: float = lb, ub: float = ub, bcount: float = bcount, rank: float = rank) -> float:
            if math.isinf(lb):
                return bcount
            if math.isinf(ub):
                return rank
            return rank + (bcount - rank) * (v - lb) / (ub - lb)

        if not lower_set and lb >= lower:
            lower_rank, lower_set = rank, True
        if not upper_set and lb >= upper:
            upper_rank, upper_set = rank, True
        if lower_set and upper_set:
            break
        if not lower_set and lb < lower < ub:
            lower_rank, lower_set = interp(lower), True
        if not upper_set and lb < upper < ub:
            upper_rank, upper_set = interp(upper), True
        if lower_set and upper_set:
            break
        rank = bcount
    if not lower_set or lower_rank > count:
        lower_rank = count
    if not upper_set or upper_rank > count:
        upper_rank = count
    return (upper_rank - lower_rank) / count


def _bucket_groups(vec: InstantVector) -> dict[Labels, list[tuple[float, int]]]:
    groups: dict[Labels, list[tuple[float, int]]] = {}
    for i, lab in enumerate(vec.labels):
        le_text = labels_get(lab, "le")
        if le_text == "":
            continue
        le = _le_value(le_text)
        if le is None:
            continue
        key = tuple(p for p in lab if p[0] != "le")
        groups.setdefault(key, []).append((le, i))
    return groups


def _histogram_fraction(ev: "Evaluator", node: P.Call, times: np.ndarray) -> Value:
    lower = _scalar_arg(ev, node.args[0], times, node.name)
    upper = _scalar_arg(ev, node.args[1], times, node.name)
    vec = _vector_arg(ev, node.args[2], times, node.name)
    labels, values, present = [], [], []
    for key, items in _bucket_groups(vec).items():
        rows = [i for _, i in items]
        p = vec.present[rows].any(axis=0)
        out = np.zeros(len(times))
        for t in np.nonzero(p)[0].tolist():
            bk = [(le, float(vec.values[i, t])) for le, i in items if vec.present[i, t]]
            out[t] = bucket_fraction(float(lower[t]), float(upper[t]), bk)
        labels.append(key)
        values.append(out)
        present.append(p)
    return _finish(labels, values, present, len(times))


def _quantile_label(q: float) -> str:
    if q != q:
        return "NaN"
    if math.isinf(q):
        return "+Inf" if q > 0 else "-Inf"
    return repr(float(q))


def _histogram_quantiles(ev: "Evaluator", node: P.Call, times: np.ndarray) -> Value:
    vec = _vector_arg(ev, node.args[0], times, node.name)
    label = _string_arg(node.args[1], node.name)
    qs = [_scalar_arg(ev, a, times, node.name) for a in node.args[2:]]
    labels, values, present = [], [], []
    for key, items in _bucket_groups(vec).items():
        rows = [i for _, i in items]
        p = vec.present[rows].any(axis=0)
        for q in qs:
            out = np.zeros(len(times))
            for t in np.nonzero(p)[0].tolist():
                bk = [(le, float(vec.values[i, t])) for le, i in items if vec.present[i, t]]
                out[t] = bucket_quantile(float(q[t]), bk)
            d = dict(key)
            d[label] = _quantile_label(float(q[0]))
            labels.append(tuple(sorted(d.items())))
            values.append(out)
            present.append(p)
    vec_out = _finish(labels, values, present, len(times))
    return _check_unique(vec_out)


def _native_only(ev: "Evaluator", node: P.Call, times: np.ndarray) -> Value:
    for a in node.args:
        ev.eval(a, times)
    return InstantVector.empty(len(times))


def _histogram_field(kind: str) -> FuncImpl:
    """histogram_count / histogram_sum / histogram_avg of native histogram samples (float
    samples give nothing, as upstream)."""

    def impl(ev: "Evaluator", node: P.Call, times: np.ndarray) -> Value:
        vec = _vector_arg(ev, node.args[0], times, node.name)
        lookup = ev.hist_lookup
        if lookup is None or not len(vec):
            return InstantVector.empty(len(times))
        from query.histogram import ref_mask

        mask = ref_mask(vec.values) & vec.present
        out = np.zeros(vec.values.shape)
        for i, k in zip(*np.nonzero(mask), strict=True):
            h = lookup(float(vec.values[i, k]))
            if h is None:
                mask[i, k] = False
                continue
            out[i, k] = h.count if kind == "count" else h.sum if kind == "sum" else h.sum / h.count
        return InstantVector(vec.labels, out, mask).with_drop(True).compact()

    return impl


# ---------------------------------------------------------------- dispatch table
def eval_call(ev: "Evaluator", node: P.Call, times: np.ndarray) -> Value:
    name = node.name
    for arg in node.args:
        if isinstance(arg, P.MatrixSel) and arg.vector.modifier is not None:
            from query.extended import eval_extended_range

            return eval_extended_range(ev, node, arg, times)
    rf = _RANGE_FUNCS.get(name)
    if rf is not None:
        compute, keep, range_index, scalars = rf
        batched = _BATCHED.get(name)
        if _is_rollup_arg(ev, node.args[range_index]):
            batched = _BATCHED_ROLLUP.get(name, batched if name in _BATCHED_ON_LAST else None)
            compute = _ROLLUP_COMPUTE.get(name, compute)
        return _range_function(
            ev, node, times, compute, keep_name=keep, range_index=range_index, scalar_args=scalars, batched=batched
        )
    if name == "predict_linear":
        return _range_function(ev, node, times, _predict_linear(ev, node), scalar_args=(1,))
    impl = _FUNCS.get(name)
    if impl is None:
        raise QueryError(f"unknown function with name {name!r}")
    return impl(ev, node, times)


def _is_rollup_arg(ev: "Evaluator", arg: P.Node) -> bool:
    if not isinstance(arg, P.MatrixSel):
        return False
    plan = ev.plan_of(arg.vector)
    return plan is not None and plan.bucket_ms > 0


def _rollup_column_sum(column: str, per_second: bool = False) -> RangeCompute:
    def compute(rv: RangeVector, i: int, lo: np.ndarray, hi: np.ndarray, extra: list) -> tuple[np.ndarray, np.ndarray]:
        ok = hi > lo
        agg = rv.agg[i] if rv.agg is not None else {}
        total = window_sums(agg[column], lo, hi, ok)
        if per_second:
            total = total / (rv.range_ms / 1000.0)
        return total, ok

    return compute


def _rollup_avg(rv: RangeVector, i: int, lo: np.ndarray, hi: np.ndarray, extra: list) -> tuple[np.ndarray, np.ndarray]:
    ok = hi > lo
    agg = rv.agg[i] if rv.agg is not None else {}
    s = window_sums(agg["sum"], lo, hi, ok)
    c = window_sums(agg["count"], lo, hi, ok)
    ok &= c > 0
    return s / np.where(c > 0, c, 1.0), ok


def _rollup_extreme(column: str, fn: np.ufunc) -> RangeCompute:
    def compute(rv: RangeVector, i: int, lo: np.ndarray, hi: np.ndarray, extra: list) -> tuple[np.ndarray, np.ndarray]:
        ok = hi > lo
        agg = rv.agg[i] if rv.agg is not None else {}
        return window_reduce(agg[column], lo, hi, ok, fn), ok

    return compute


# Range functions computed from rollup aggregates instead of the buckets' last values.
_ROLLUP_COMPUTE: dict[str, RangeCompute] = {
    "rate": _rollup_column_sum("increase", per_second=True),
    "increase": _rollup_column_sum("increase"),
    "sum_over_time": _rollup_column_sum("sum"),
    "count_over_time": _rollup_column_sum("count"),
    "avg_over_time": _rollup_avg,
    "min_over_time": _rollup_extreme("min", np.fmin),
    "max_over_time": _rollup_extreme("max", np.fmax),
}

_BATCHED: dict[str, BatchedCompute] = {
    "rate": _b_extrapolated(True, True),
    "increase": _b_extrapolated(True, False),
    "delta": _b_extrapolated(False, False),
    "irate": _b_instant_value(True),
    "idelta": _b_instant_value(False),
    "changes": _b_changes_like("changes"),
    "resets": _b_changes_like("resets"),
    "count_over_time": _b_simple("count"),
    "present_over_time": _b_simple("present"),
    "last_over_time": _b_simple("last"),
    "first_over_time": _b_simple("first"),
    "max_over_time": _b_simple("max"),
    "min_over_time": _b_simple("min"),
}
# Batched functions whose rollup form reads the buckets' last values (same code).
_BATCHED_ON_LAST = {"delta", "irate", "idelta", "changes", "resets", "last_over_time", "first_over_time", "present_over_time"}
_BATCHED_ROLLUP: dict[str, BatchedCompute] = {
    "rate": _b_rollup_sum("increase", per_second=True),
    "increase": _b_rollup_sum("increase"),
    "sum_over_time": _b_rollup_sum("sum"),
    "count_over_time": _b_rollup_sum("count"),
    "avg_over_time": _b_rollup_avg,
    "max_over_time": _b_simple("max"),
    "min_over_time": _b_simple("min"),
}

_RANGE_FUNCS: dict[str, tuple[RangeCompute, bool, int, tuple[int, ...]]] = {
    "rate": (_extrapolated(True, True), False, 0, ()),
    "increase": (_extrapolated(True, False), False, 0, ()),
    "delta": (_extrapolated(False, False), False, 0, ()),
    "irate": (_instant_value(True), False, 0, ()),
    "idelta": (_instant_value(False), False, 0, ()),
    "changes": (_changes_like("changes"), False, 0, ()),
    "resets": (_changes_like("resets"), False, 0, ()),
    "deriv": (_deriv, False, 0, ()),
    "avg_over_time": (_over_time("avg"), False, 0, ()),
    "sum_over_time": (_over_time("sum"), False, 0, ()),
    "count_over_time": (_over_time("count"), False, 0, ()),
    "min_over_time": (_over_time("min"), False, 0, ()),
    "max_over_time": (_over_time("max"), False, 0, ()),
    "last_over_time": (_over_time("last"), True, 0, ()),
    "first_over_time": (_over_time("first"), True, 0, ()),
    "present_over_time": (_over_time("present"), False, 0, ()),
    "stddev_over_time": (_over_time("stddev"), False, 0, ()),
    "stdvar_over_time": (_over_time("stdvar"), False, 0, ()),
    "mad_over_time": (_over_time("mad"), False, 0, ()),
    "quantile_over_time": (_over_time("quantile"), False, 1, (0,)),
    "ts_of_max_over_time": (_over_time("ts_of_max"), False, 0, ()),
    "ts_of_min_over_time": (_over_time("ts_of_min"), False, 0, ()),
    "ts_of_last_over_time": (_over_time("ts_of_last"), False, 0, ()),
    "ts_of_first_over_time": (_over_time("ts_of_first"), False, 0, ()),
    "double_exponential_smoothing": (_double_exp_smoothing, False, 0, (1, 2)),
    "holt_winters": (_double_exp_smoothing, False, 0, (1, 2)),
}

_FUNCS: dict[str, Callable] = {
    "abs": _math(np.abs),
    "ceil": _math(np.ceil),
    "floor": _math(np.floor),
    "exp": _math(np.exp),
    "sqrt": _math(np.sqrt),
    "ln": _math(np.log),
    "log2": _math(np.log2),
    "log10": _math(np.log10),
    "sgn": _math(_sgn),
    "sin": _math(np.sin),
    "cos": _math(np.cos),
    "tan": _math(np.tan),
    "asin": _math(np.arcsin),
    "acos": _math(np.arccos),
    "atan": _math(np.arctan),
    "sinh": _math(np.sinh),
    "cosh": _math(np.cosh),
    "tanh": _math(np.tanh),
    "asinh": _math(np.arcsinh),
    "acosh": _math(np.arccosh),
    "atanh": _math(np.arctanh),
    "deg": _math(np.degrees),
    "rad": _math(np.radians),
    "round": _round,
    "clamp": _clamp("clamp"),
    "clamp_min": _clamp("clamp_min"),
    "clamp_max": _clamp("clamp_max"),
    "time": _time,
    "pi": _pi,
    "vector": _vector,
    "scalar": _scalar,
    "timestamp": _timestamp,
    "absent": _absent,
    "absent_over_time": _absent_over_time,
    "sort": _sort(False),
    "sort_desc": _sort(True),
    "sort_by_label": _sort_by_label(False),
    "sort_by_label_desc": _sort_by_label(True),
    "label_replace": _label_replace,
    "label_join": _label_join,
    "histogram_quantile": _histogram_quantile,
    "histogram_count": _histogram_field("count"),
    "histogram_sum": _histogram_field("sum"),
    "histogram_avg": _histogram_field("avg"),
    "histogram_fraction": _histogram_fraction,
    "histogram_quantiles": _histogram_quantiles,
    "start": _query_scalar("start"),
    "end": _query_scalar("end"),
    "step": _query_scalar("step"),
    "range": _query_scalar("range"),
    "min_of": _min_max_of(True),
    "max_of": _min_max_of(False),
    "histogram_stddev": _native_only,
    "histogram_stdvar": _native_only,
}
for _name in _DATE_FUNCS:
    _FUNCS[_name] = _date_func

__all__ = ["eval_call", "bucket_quantile", "linear_regression", "String"]
