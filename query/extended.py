"""Extended range selectors (``anchored`` / ``smoothed``), as Prometheus 3.x defines them.

* ``f(x[r] anchored)`` for rate, increase, delta, changes, resets: the window (t-r, t] is
  extended on the left by the newest sample at or before t-r (looking back at most the
  lookback delta), or starts at the first sample inside it. No extrapolation: increase is
  last - first plus counter-reset corrections; rate divides it by the range.
* ``f(x[r] smoothed)`` for rate, increase, delta: the values at t-r and at t are linearly
  interpolated from the samples around each boundary (for counters, interpolating across a
  reset counts up from zero). The right boundary carries the last sample forward when none
  follows; without a sample at or before t, or none after t-r, there is no result.
* ``x smoothed`` (instant selector): the value at t interpolated between the samples just
  before and after t (plain linear, also for counters), the last one carried forward.

Float samples only; the engine calls these when the parser marked a selector.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from query import parse as P
from query.errors import QueryError
from query.values import InstantVector, RangeVector, stale_mask

if TYPE_CHECKING:
    from query.engine import Evaluator


def _interpolate(t1: int, v1: float, t2: int, v2: float, t: int, counter: bool) -> float:
    frac = (t - t1) / (t2 - t1)
    if counter and v2 < v1:
        return v2 * frac  # the counter restarted from zero between the two samples
    return v1 + (v2 - v1) * frac


def _resets_total(seq: list[float]) -> float:
    return sum(prev for prev, cur in zip(seq, seq[1:], strict=False) if cur < prev)


def _anchored(fn: str, ts: np.ndarray, v: np.ndarray, start: int, end: int, lookback: int, range_s: float) -> float | None:
    lo = int(np.searchsorted(ts, start, "right"))
    hi = int(np.searchsorted(ts, end, "right"))
    if hi <= lo:
        return None
    first = lo - 1 if lo > 0 and ts[lo - 1] > start - lookback else lo
    seq: list[float] = v[first:hi].tolist()
    if fn == "changes":
        return float(sum(1 for a, b in zip(seq, seq[1:], strict=False) if not (a == b or (a != a and b != b))))
    if fn == "resets":
        return float(sum(1 for a, b in zip(seq, seq[1:], strict=False) if b < a))
    if fn == "delta":
        return seq[-1] - seq[0]
    inc = seq[-1] - seq[0] + _resets_total(seq)
    return inc / range_s if fn == "rate" else inc


def _smoothed(fn: str, ts: np.ndarray, v: np.ndarray, start: int, end: int, lookback: int, range_s: float) -> float | None:
    n = len(ts)
    counter = fn != "delta"
    lo = int(np.searchsorted(ts, start, "right"))
    hi = int(np.searchsorted(ts, end, "right"))
    if hi == 0 or ts[hi - 1] <= start - lookback or lo >= n or ts[lo] > end + lookback:
        return None  # data only before or only after the range
    # Right boundary: interpolate at `end`, or carry the last sample forward.
    if ts[hi - 1] < end and hi < n and ts[hi] <= end + lookback:
        right = _interpolate(int(ts[hi - 1]), float(v[hi - 1]), int(ts[hi]), float(v[hi]), end, counter)
    else:
        right = float(v[hi - 1])
    # Left boundary: interpolate at `start`, or start at the first sample after it.
    if lo > 0 and ts[lo - 1] > start - lookback:
        left = _interpolate(int(ts[lo - 1]), float(v[lo - 1]), int(ts[lo]), float(v[lo]), start, counter)
    else:
        left = float(v[lo])
    if fn == "delta":
        return right - left
    seq = [left, *v[lo:hi].tolist(), right]
    inc = right - left + _resets_total(seq)
    return inc / range_s if fn == "rate" else inc


def eval_extended_range(ev: "Evaluator", node: P.Call, arg: P.MatrixSel, times: np.ndarray) -> InstantVector:
    """A range function over an anchored/smoothed range selector, per series and step."""
    mod = arg.vector.modifier
    allowed = P.MODIFIER_FUNCTIONS.get(mod or "", ())
    if node.name not in allowed:
        raise QueryError(f"{mod} modifier can only be used with: {', '.join(allowed)} - not with {node.name}")
    rv = ev.eval(arg, times)
    if not isinstance(rv, RangeVector):
        raise QueryError(f"expected range vector argument in call to function {node.name!r}")
    compute = _anchored if mod == "anchored" else _smoothed
    range_s = arg.range_ms / 1000.0
    labels, values, present = [], [], []
    for i, lab in enumerate(rv.labels):
        ev.check_deadline()
        a, b = int(rv.offsets[i]), int(rv.offsets[i + 1])
        ts, v = rv.ts_flat[a:b], rv.vals_flat[a:b]
        out = np.zeros(len(times))
        ok = np.zeros(len(times), dtype=bool)
        for k, end in enumerate(rv.ends.tolist()):
            r = compute(node.name, ts, v, end - arg.range_ms, end, ev.lookback_ms, range_s)
            if r is not None:
                out[k], ok[k] = r, True
        if ok.any():
            labels.append(lab)
            values.append(out)
            present.append(ok)
    if not labels:
        return InstantVector.empty(len(times))
    vec = InstantVector(labels, np.array(values), np.array(present, dtype=bool))
    return vec.with_drop(True)


def smoothed_selector(ev: "Evaluator", sel: P.VectorSel, times: np.ndarray) -> InstantVector:
    """``x smoothed``: each series' value interpolated at the (offset/@-adjusted) step times."""
    at = ev.at_ms(sel.at)
    refs = (np.full(len(times), at, dtype=np.int64) if at is not None else times) - sel.offset_ms
    flat = ev.flat_of(sel, True)
    labels, values, present = [], [], []
    for i, lab in enumerate(flat.labels):
        a, b = int(flat.offsets[i]), int(flat.offsets[i + 1])
        ts, v = flat.ts[a:b], flat.vals[a:b]
        if len(ts) and stale_mask(v).any():
            keep = ~stale_mask(v)
            ts, v = ts[keep], v[keep]
        out = np.zeros(len(times))
        ok = np.zeros(len(times), dtype=bool)
        n = len(ts)
        for k, t in enumerate(refs.tolist()):
            hi = int(np.searchsorted(ts, t, "right"))
            if hi == 0 or ts[hi - 1] <= t - ev.lookback_ms:
                continue
            if ts[hi - 1] < t and hi < n and ts[hi] <= t + ev.lookback_ms:
                out[k] = _interpolate(int(ts[hi - 1]), float(v[hi - 1]), int(ts[hi]), float(v[hi]), t, False)
            else:
                out[k] = float(v[hi - 1])
            ok[k] = True
        if ok.any():
            labels.append(lab)
            values.append(out)
            present.append(ok)
    ev.check_size(len(labels), len(times))
    if not labels:
        return InstantVector.empty(len(times))
    return InstantVector(labels, np.array(values), np.array(present, dtype=bool))
