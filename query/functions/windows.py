"""Per-step window arithmetic the range functions share: Kahan-accurate window sums (prefix
sums, exact loops only where cancellation could change the result), sparse-table min/max,
and rollup buckets laid on their regular grid (``DenseGrid``) so a panel's windows are
column slices."""

from __future__ import annotations

import functools
from collections.abc import Callable

import numpy as np

from query.functions import lockstep
from query.functions.args import kahan
from query.values import RangeVector

LD = np.longdouble
_LD_EPS = float(np.finfo(np.longdouble).eps)


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
    if lockstep.worth_it(lo, hi, exact):
        out[exact] = lockstep.kahan_sums(v, lo, hi, exact)[exact]
        return out
    for t in np.nonzero(exact)[0].tolist():
        s = c = 0.0
        for x in v[lo[t] : hi[t]].tolist():
            s, c = kahan(x, s, c)
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


def loop_windows(v: np.ndarray, lo: np.ndarray, hi: np.ndarray, ok: np.ndarray, f: Callable[[list[float]], float]) -> np.ndarray:
    out = np.zeros(len(lo))
    for t in np.nonzero(ok)[0].tolist():
        out[t] = f(v[lo[t] : hi[t]].tolist())
    return out


def segmented_window_sums(
    v: np.ndarray, offsets: np.ndarray, lo: np.ndarray, hi: np.ndarray, ok: np.ndarray
) -> np.ndarray:
    """Kahan-accurate window sums for (series, steps) windows of flat per-series arrays: each
    series' as ``window_sums`` gives it, bit for bit (its prefix sums, its rounding bound). The
    prefix sums of every series at once when they fit a (series x longest) array (rollup rows
    off their bucket grid: ``DenseGrid`` does not apply); the loop over series otherwise."""
    n = len(offsets) - 1
    counts = np.diff(offsets)
    width = int(counts.max(initial=0))
    if n > 1 and n * (width + 1) <= _SEGMENT_CELLS and np.isfinite(v).all():
        return _segment_sums_at_once(v, offsets, counts, lo, hi, ok)
    out = np.zeros(lo.shape)
    for i in range(len(offsets) - 1):
        a, b = int(offsets[i]), int(offsets[i + 1])
        if b > a and ok[i].any():
            out[i] = window_sums(v[a:b], lo[i] - a, hi[i] - a, ok[i])
    return out


_SEGMENT_CELLS = 20_000_000


def _segment_sums_at_once(
    v: np.ndarray, offsets: np.ndarray, counts: np.ndarray, lo: np.ndarray, hi: np.ndarray, ok: np.ndarray
) -> np.ndarray:
    n, width = len(counts), int(counts.max(initial=0))
    row = np.repeat(np.arange(n), counts)
    col = np.arange(len(v)) - np.repeat(offsets[:-1], counts) + 1
    cs = np.zeros((n, width + 1), dtype=LD)
    cs[row, col] = v
    acs = np.abs(cs)
    np.cumsum(cs, axis=1, out=cs)
    np.cumsum(acs, axis=1, out=acs)
    base = offsets[:-1, None]
    a = np.where(ok, lo - base, 0)
    z = np.where(ok, hi - base, 0)
    est = (np.take_along_axis(cs, z, axis=1) - np.take_along_axis(cs, a, axis=1)).astype(np.float64)
    bound = (np.take_along_axis(acs, z, axis=1) * (counts[:, None] * 2 * _LD_EPS).astype(LD)).astype(np.float64)
    out = np.where(ok, est, 0.0)
    exact = ok & (bound > 1e-10 * np.abs(est))
    for i in np.flatnonzero(exact.any(axis=1)).tolist():  # (cancellation: summed exactly)
        s, e = int(offsets[i]), int(offsets[i + 1])
        out[i, exact[i]] = window_sums(v[s:e], lo[i] - s, hi[i] - s, exact[i])[exact[i]]
    return out


class DenseGrid:
    """Rollup rows on their regular bucket grid: (series x buckets) cells, and per step the
    bucket index range [lo, hi) of its window (the same for every series). ``full`` when
    every series has every bucket (the common case): the flat column is then the grid."""

    def __init__(self, rv: RangeVector, g0: int, nb: int, lo: np.ndarray, hi: np.ndarray, full: bool) -> None:
        self.rv, self.g0, self.nb, self.lo, self.hi, self.full = rv, g0, nb, lo, hi, full
        self.n = len(rv.labels)

    @functools.cached_property
    def col(self) -> np.ndarray:
        """Each row's bucket index on the grid (only a grid that is not full needs it)."""
        res = self.rv.resolution_ms
        return (self.rv.ts_flat - (res - 1)) // res - self.g0

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
            sums: np.ndarray = columns_at(cs, self.hi) - columns_at(cs, self.lo)  # NumPy types an untyped array's difference Any
            return sums
        # A NaN or infinite bucket must not reach the prefix sums of later windows: sum the
        # finite buckets, count the others per window, and give IEEE's answer where any is in it.
        cs = np.cumsum(np.where(finite, dense, 0.0), axis=1)
        out = columns_at(cs, self.hi) - columns_at(cs, self.lo)
        counts = []
        for bad in (np.isnan(dense), dense == np.inf, dense == -np.inf):
            c = np.cumsum(bad, axis=1)
            counts.append(columns_at(c, self.hi) - columns_at(c, self.lo))
        nan, pinf, ninf = counts
        out = np.where(pinf > 0, np.inf, out)
        out = np.where(ninf > 0, -np.inf, out)
        return np.where((nan > 0) | ((pinf > 0) & (ninf > 0)), np.nan, out)


def columns_at(a: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """``a[:, idx]``; a strided view when ``idx`` is evenly spaced and ascending (a panel
    whose step is a multiple of the bucket), which spares gathering every cell."""
    if len(idx) > 1:
        d = int(idx[1]) - int(idx[0])
        if d > 0 and int(idx[-1]) - int(idx[0]) == d * (len(idx) - 1) and bool(np.all(np.diff(idx) == d)):
            return a[:, int(idx[0]) : int(idx[-1]) + 1 : d]
    return a[:, idx]


_DENSE_MAX_CELLS = 40_000_000


def dense_rollup_windows(rv: RangeVector) -> tuple[DenseGrid, None] | None:
    res = rv.resolution_ms
    if res <= 0 or rv.agg_flat is None or len(rv.ts_flat) == 0:
        return None
    counts = np.diff(rv.offsets)
    has = counts > 0
    # A series' buckets ascend: its first and last rows hold its lowest and highest bucket.
    first = (rv.ts_flat[rv.offsets[:-1][has]] - (res - 1)) // res
    last = (rv.ts_flat[rv.offsets[1:][has] - 1] - (res - 1)) // res
    g0 = int(first.min())
    nb = int(last.max()) - g0 + 1
    n = len(rv.labels)
    if n * (nb + 1) > _DENSE_MAX_CELLS:
        return None
    full = bool((counts == nb).all()) and bool((first == g0).all())
    if not full:  # (the grid's extent from every row, as the cells are filled from them)
        bucket = (rv.ts_flat - (res - 1)) // res
        g0, nb = int(bucket.min()), int(bucket.max()) - int(bucket.min()) + 1
        if n * (nb + 1) > _DENSE_MAX_CELLS:
            return None
    grid_end = (g0 + np.arange(nb, dtype=np.int64)) * res + (res - 1)
    lo = np.searchsorted(grid_end, rv.ends - rv.range_ms, "right")
    hi = np.searchsorted(grid_end, rv.ends, "right")
    return DenseGrid(rv, g0, nb, lo, hi, full), None

