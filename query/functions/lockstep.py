"""Sequential per-window loops run for many windows at once.

Kahan sums, the running variance of ``stdvar_over_time`` and the least-squares sums of
``deriv``/``predict_linear`` are loops over a window's samples whose order of operations
Prometheus fixes. A range query evaluates the same loop over one window per step: here the
k-th sample of every window that has one is taken in one numpy step, so each window sees the
scalar loop's operations in the scalar loop's order (bit-identical results), at numpy's
cost per step instead of Python's cost per sample.

It pays when many windows are long at once; ``worth_it`` says when (a single long window,
as in an instant query, stays with the scalar loop).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from query.aggregations import kahan_inc

# Lockstep runs (longest window) numpy steps of ~10-20 array operations; the scalar loop runs
# (all windows' samples) Python iterations. Lockstep is taken when the windows hold at least
# this many times as many samples in all as the longest one.
MIN_WINDOWS_PER_STEP = 8


class Lockstep:
    """The windows ``[lo, hi)`` with ``ok``, longest first, walked sample by sample: step k
    yields how many windows have a k-th sample (a prefix of ``order``) and their indices."""

    def __init__(self, lo: np.ndarray, hi: np.ndarray, ok: np.ndarray) -> None:
        idx = np.nonzero(ok)[0]
        lengths = (hi - lo)[idx]
        by_length = np.argsort(-lengths, kind="stable")
        self.order = idx[by_length]  # output positions, longest window first
        self.starts = lo[self.order]
        self.lengths = lengths[by_length]
        self._neg = -self.lengths  # ascending, for the count of windows longer than k

    def steps(self) -> Iterator[tuple[int, int, np.ndarray]]:
        longest = int(self.lengths[0]) if len(self.lengths) else 0
        for k in range(longest):
            m = int(np.searchsorted(self._neg, -k, side="left"))
            yield k, m, self.starts[:m] + k


def worth_it(lo: np.ndarray, hi: np.ndarray, ok: np.ndarray) -> bool:
    lengths = np.where(ok, hi - lo, 0)
    longest = int(lengths.max(initial=0))
    return longest > 0 and int(lengths.sum()) >= MIN_WINDOWS_PER_STEP * longest


def kahan_sums(v: np.ndarray, lo: np.ndarray, hi: np.ndarray, ok: np.ndarray) -> np.ndarray:
    """``s + c`` of the Kahan-Neumaier sum of each window (0 where not ``ok``)."""
    walk = Lockstep(lo, hi, ok)
    s = np.zeros(len(walk.order))
    c = np.zeros(len(walk.order))
    for _, m, at in walk.steps():
        s[:m], c[:m] = kahan_inc(v[at], s[:m], c[:m])
    out = np.zeros(len(lo))
    out[walk.order] = s + c
    return out


def averages(v: np.ndarray, lo: np.ndarray, hi: np.ndarray, ok: np.ndarray) -> np.ndarray:
    """``avg_over_time`` per window as Prometheus computes it: a Kahan sum that turns into an
    incremental mean once the sum overflows."""
    walk = Lockstep(lo, hi, ok)
    n = len(walk.order)
    s = np.zeros(n)
    c = np.zeros(n)
    mean = np.zeros(n)
    incremental = np.zeros(n, dtype=bool)
    for k, m, at in walk.steps():
        x = v[at]
        if k == 0:
            s[:m] = x
            continue
        count = float(k + 1)
        inc = incremental[:m].copy()
        summing = ~inc
        ns, nc = kahan_inc(x, s[:m], c[:m])
        keep = summing & ~np.isinf(ns)
        s[:m] = np.where(keep, ns, s[:m])
        c[:m] = np.where(keep, nc, c[:m])
        switch = summing & np.isinf(ns)
        if switch.any():
            mean[:m] = np.where(switch, s[:m] / (count - 1), mean[:m])
            c[:m] = np.where(switch, c[:m] / (count - 1), c[:m])
            incremental[:m] |= switch
        upd = inc | switch
        if upd.any():
            q = (count - 1) / count
            nm, nc2 = kahan_inc(x / count, q * mean[:m], q * c[:m])
            mean[:m] = np.where(upd, nm, mean[:m])
            c[:m] = np.where(upd, nc2, c[:m])
    count_all = walk.lengths.astype(np.float64)
    res = np.where(incremental, mean + c, s / count_all + c / count_all)
    out = np.zeros(len(lo))
    out[walk.order] = res
    return out


def variances(v: np.ndarray, lo: np.ndarray, hi: np.ndarray, ok: np.ndarray) -> np.ndarray:
    """``stdvar_over_time`` per window: Welford's running mean and sum of squares, each
    Kahan-compensated, in Prometheus's order."""
    walk = Lockstep(lo, hi, ok)
    n = len(walk.order)
    mean, c_mean, aux, c_aux = np.zeros(n), np.zeros(n), np.zeros(n), np.zeros(n)
    for k, m, at in walk.steps():
        x = v[at]
        count = float(k + 1)
        delta = x - (mean[:m] + c_mean[:m])
        mean[:m], c_mean[:m] = kahan_inc(delta / count, mean[:m], c_mean[:m])
        aux[:m], c_aux[:m] = kahan_inc(delta * (x - (mean[:m] + c_mean[:m])), aux[:m], c_aux[:m])
    out = np.zeros(len(lo))
    out[walk.order] = (aux + c_aux) / walk.lengths.astype(np.float64)
    return out


def regressions(
    ts: np.ndarray, v: np.ndarray, lo: np.ndarray, hi: np.ndarray, ok: np.ndarray, intercept_time: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(slope, intercept) per window of Prometheus's ``linearRegression`` with x in seconds
    from each window's ``intercept_time`` (ms); windows of a constant value get slope 0."""
    walk = Lockstep(lo, hi, ok)
    n = len(walk.order)
    sx, cx, sy, cy = np.zeros(n), np.zeros(n), np.zeros(n), np.zeros(n)
    sxy, cxy, sx2, cx2 = np.zeros(n), np.zeros(n), np.zeros(n), np.zeros(n)
    t0 = np.asarray(intercept_time, dtype=np.int64)[walk.order]
    init_y = v[walk.starts] if n else np.zeros(0)
    const_y = np.ones(n, dtype=bool)
    for k, m, at in walk.steps():
        y = v[at]
        if k > 0:
            const_y[:m] &= ~(y != init_y[:m])
        x = (ts[at] - t0[:m]) / 1e3
        sx[:m], cx[:m] = kahan_inc(x, sx[:m], cx[:m])
        sy[:m], cy[:m] = kahan_inc(y, sy[:m], cy[:m])
        sxy[:m], cxy[:m] = kahan_inc(x * y, sxy[:m], cxy[:m])
        sx2[:m], cx2[:m] = kahan_inc(x * x, sx2[:m], cx2[:m])
    count = walk.lengths.astype(np.float64)
    sx, sy, sxy, sx2 = sx + cx, sy + cy, sxy + cxy, sx2 + cx2
    cov = sxy - sx * sy / count
    var = sx2 - sx * sx / count
    slope = np.where(var != 0, cov / np.where(var != 0, var, 1.0), np.where(cov == 0, np.nan, np.copysign(np.inf, cov)))
    intercept = sy / count - slope * sx / count
    inf_y = np.isinf(init_y)
    slope = np.where(const_y, np.where(inf_y, np.nan, 0.0), slope)
    intercept = np.where(const_y, np.where(inf_y, np.nan, init_y), intercept)
    out_slope, out_icpt = np.zeros(len(lo)), np.zeros(len(lo))
    out_slope[walk.order] = slope
    out_icpt[walk.order] = intercept
    return out_slope, out_icpt


def extreme_positions(v: np.ndarray, lo: np.ndarray, hi: np.ndarray, ok: np.ndarray, largest: bool) -> np.ndarray:
    """Per window, the index into ``v`` of its last largest (or smallest) value; a NaN loses
    to any number and is passed over by the next sample (``ts_of_max/min_over_time``)."""
    walk = Lockstep(lo, hi, ok)
    best = walk.starts.copy()
    for k, m, at in walk.steps():
        if k == 0:
            continue
        x, w = v[at], v[best[:m]]
        better = (x >= w if largest else x <= w) | np.isnan(w)
        best[:m] = np.where(better, at, best[:m])
    out = np.zeros(len(lo), dtype=np.int64)
    out[walk.order] = best
    return out
