"""What ``rate``/``increase``/``delta`` read of a window's samples, from rollup buckets.

Prometheus's ``extrapolatedRate`` (promql/functions.go, 3.x) reads of the float samples of a
window: their number, the first sample's time and value, the last sample's time and value
and, for counters, the correction (the previous value at every drop). The rollup buckets keep
exactly that per bucket (``storage.rollup``: ``count``, ``first``, ``first_ts``, ``last``,
``last_ts``, ``correction``), and ``window_parts`` joins the buckets of each window as
``storage.rollup.combine_rate_parts`` joins minute buckets into hours: a window of whole
buckets then gets the values the raw samples give (the correction up to float rounding of
adding it in another grouping: exact for integer counters whose corrections add up to less
than 2**53). The extrapolation itself stays with the raw form (``query.functions``).

A bucket written before these aggregates existed has a NaN ``correction``: ``known`` is
false for every window holding one (the caller answers those another way).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from query.functions.windows import columns_at


@dataclass(frozen=True, slots=True)
class WindowParts:
    """Per (series, step) window: sample count ``n``, first/last sample time (ms) ``ft``/``lt``,
    first value ``fv``, ``result`` (last - first, plus the correction for a counter), ``ok``
    (at least two samples) and ``known`` (every bucket has the rate aggregates)."""

    n: np.ndarray
    ft: np.ndarray
    lt: np.ndarray
    fv: np.ndarray
    result: np.ndarray
    ok: np.ndarray
    known: np.ndarray


def _prefix(x: np.ndarray) -> np.ndarray:
    out = np.zeros(x.shape[0] + 1, dtype=np.float64)
    np.cumsum(x, out=out[1:])
    return out


def window_parts(
    agg: Mapping[str, np.ndarray], offsets: np.ndarray, lo: np.ndarray, hi: np.ndarray, is_counter: bool
) -> WindowParts:
    """The windows' parts from flat bucket columns (``storage.base.RATE_AGGREGATES``; series ``i``
    is rows ``offsets[i]:offsets[i+1]``, buckets in time order); window = rows ``[lo, hi)``."""
    count, first, first_ts = agg["count"], agg["first"], agg["first_ts"]
    last, last_ts, correction = agg["last"], agg["last_ts"], agg["correction"]
    ok = hi > lo
    a = np.where(ok, lo, 0)
    z = np.where(ok, hi - 1, 0)
    if count.shape[0] == 0:
        zero = np.zeros(lo.shape)
        return WindowParts(zero, zero, zero, zero, zero, ok, np.ones(lo.shape, dtype=bool))
    cs = _prefix(count)
    n = np.where(ok, cs[hi] - cs[a], 0.0)
    ok = ok & (n >= 2)
    fv = first[a]
    result = last[z] - fv
    unknown = np.isnan(correction)
    bad = _prefix(unknown.astype(np.float64))
    known = ~ok | (bad[hi] - bad[a] == 0)
    if is_counter:
        # joined[j]: bucket j's correction plus, where its first value is below the previous
        # bucket's last (a drop across the edge), that last; not across series.
        joined = correction.astype(np.float64, copy=True)
        if joined.shape[0] > 1:
            prev = last[:-1]
            cross = np.where(first[1:] < prev, prev, 0.0)
            heads = offsets[1:-1]
            heads = heads[(heads > 0) & (heads < joined.shape[0])]
            cross[heads - 1] = 0.0
            joined[1:] += cross
        # Window: the first bucket's own correction, then joined[lo+1 .. hi-1]. Corrections are
        # finite or +Inf (a drop from +Inf): the prefix sums take the finite ones, +Inf counted.
        inf = joined == np.inf
        fin = np.where(np.isfinite(joined), joined, 0.0)
        cf, ci = _prefix(fin), _prefix(inf.astype(np.float64))
        b = np.minimum(a + 1, np.where(ok, hi, 0))
        e = np.where(ok, hi, 0)
        corr = cf[e] - cf[b]
        corr = np.where(ci[e] - ci[b] > 0, np.inf, corr)
        with np.errstate(invalid="ignore"):  # (+Inf - +Inf: NaN, as Prometheus gets)
            result = result + (correction[a] + corr)
    return WindowParts(n, first_ts[a], last_ts[z], fv, result, ok, known)


def window_parts_grid(
    agg: Mapping[str, np.ndarray], n_series: int, nb: int, lo: np.ndarray, hi: np.ndarray, is_counter: bool
) -> WindowParts | None:
    """``window_parts`` for rows on a full grid (series ``i`` is rows ``i*nb .. i*nb+nb-1``, every
    bucket present) with the same bucket range ``[lo, hi)`` per step for every series: the
    windows are then column slices of (series, bucket) arrays. None when a correction is not
    finite (not known, or a drop from +Inf): ``window_parts`` handles those."""
    correction = agg["correction"].reshape(n_series, nb)
    # No correction in any bucket (every bit zero) and no drop across a bucket edge, the
    # usual counter: the joined corrections below are all +0.0 and adding them is adding 0.0.
    no_resets = not correction.view(np.int64).any()
    if not no_resets and not np.isfinite(correction).all():
        return None
    first, last = agg["first"].reshape(n_series, nb), agg["last"].reshape(n_series, nb)
    okw = hi > lo
    a = np.minimum(lo, nb - 1)
    z = np.maximum(hi - 1, 0)
    cs = np.empty((n_series, nb + 1))
    cs[:, 0] = 0.0
    np.cumsum(agg["count"].reshape(n_series, nb), axis=1, out=cs[:, 1:])
    n = columns_at(cs, hi) - columns_at(cs, lo)
    ok = okw[None, :] & (n >= 2)
    fv = columns_at(first, a)
    result = columns_at(last, z) - fv
    if is_counter and no_resets and not (first[:, 1:] < last[:, :-1]).any():
        result += 0.0  # (what adding the all-zero corrections gives: -0.0 becomes 0.0; a new array)
    elif is_counter:
        joined = correction.copy()
        joined[:, 1:] += np.where(first[:, 1:] < last[:, :-1], last[:, :-1], 0.0)
        if not np.isfinite(joined).all():
            return None
        cj = np.zeros((n_series, nb + 1))
        np.cumsum(joined, axis=1, out=cj[:, 1:])
        b = np.minimum(lo + 1, hi)
        result = result + (columns_at(correction, a) + (columns_at(cj, hi) - columns_at(cj, b)))
    ft = columns_at(agg["first_ts"].reshape(n_series, nb), a)
    lt = columns_at(agg["last_ts"].reshape(n_series, nb), z)
    return WindowParts(n, ft, lt, fv, result, ok, np.ones(ok.shape, dtype=bool))
