"""Trend functions over range vectors, per series: ``deriv`` and ``predict_linear`` (a
Kahan-summed least-squares line, as Prometheus' ``linearRegression``) and
``double_exponential_smoothing`` (``holt_winters``, its old name)."""

from __future__ import annotations

import math

import numpy as np

from query.errors import QueryError
from query.functions import lockstep
from query.functions.args import kahan
from query.functions.range import RangeFunc
from query.values import RangeVector


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
        sx, cx = kahan(x, sx, cx)
        sy, cy = kahan(y, sy, cy)
        sxy, cxy = kahan(x * y, sxy, cxy)
        sx2, cx2 = kahan(x * x, sx2, cx2)
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
    if lockstep.worth_it(lo, hi, ok):
        return lockstep.regressions(ts, v, lo, hi, ok, ts[np.where(ok, lo, 0)])[0], ok
    out = np.zeros(len(lo))
    for t in np.nonzero(ok)[0].tolist():
        a, b = lo[t], hi[t]
        slope, _ = linear_regression(ts[a:b].tolist(), v[a:b].tolist(), int(ts[a]))
        out[t] = slope
    return out, ok


def _predict_linear(rv: RangeVector, i: int, lo: np.ndarray, hi: np.ndarray, extra: list) -> tuple[np.ndarray, np.ndarray]:
    """Predicts from each step's own time, also under ``@`` (as upstream)."""
    ts, v = rv.ts[i], rv.vals[i]
    dur = extra[0]
    ok = (hi - lo) >= 2
    base = rv.eval_times
    if lockstep.worth_it(lo, hi, ok):
        slopes, icpts = lockstep.regressions(ts, v, lo, hi, ok, np.asarray(base, dtype=np.int64))
        return icpts + slopes * np.asarray(dur, dtype=np.float64), ok
    out = np.zeros(len(lo))
    for t in np.nonzero(ok)[0].tolist():
        a, b = lo[t], hi[t]
        slope, icpt = linear_regression(ts[a:b].tolist(), v[a:b].tolist(), int(base[t]))
        out[t] = icpt + slope * float(dur[t])
    return out, ok


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


RANGE_FUNCS: dict[str, RangeFunc] = {
    "deriv": RangeFunc(per_series=_deriv),
    "predict_linear": RangeFunc(per_series=_predict_linear, scalar_args=(1,)),
    "double_exponential_smoothing": RangeFunc(per_series=_double_exp_smoothing, scalar_args=(1, 2)),
    "holt_winters": RangeFunc(per_series=_double_exp_smoothing, scalar_args=(1, 2)),
}
