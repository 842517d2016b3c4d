"""Histogram functions: ``histogram_quantile``, ``histogram_quantiles`` and
``histogram_fraction`` over classic histograms (series of one histogram grouped by their
labels without ``le``, upstream's ``BucketQuantile`` arithmetic), and ``histogram_count``,
``histogram_sum``, ``histogram_avg`` of native histogram samples (query/histogram.py)."""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import TYPE_CHECKING

import numpy as np

from query import parse as P
from query.functions.args import FuncImpl, finish, scalar_arg, string_arg, vector_arg
from query.functions.labels import check_unique
from query.histogram import ref_mask
from query.values import InstantVector, Labels, Value, labels_get

if TYPE_CHECKING:
    from query.engine import Evaluator

# The (upper bound, cumulative count) buckets of one classic histogram at one step.
Buckets = list[tuple[float, float]]


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

class _Classic:
    """One classic histogram of an instant vector: its bucket series and their bounds."""

    def __init__(self, vec: InstantVector, items: list[tuple[float, int]]) -> None:
        self.vec, self.items = vec, items
        self.present = np.asarray(vec.present[[i for _, i in items]].any(axis=0))

    def buckets(self, t: int) -> Buckets:
        return [(le, float(self.vec.values[i, t])) for le, i in self.items if self.vec.present[i, t]]

    def quantiles(self, q: np.ndarray) -> np.ndarray:
        out = np.zeros(len(self.present))
        for t in np.nonzero(self.present)[0].tolist():
            out[t] = bucket_quantile(float(q[t]), self.buckets(t))
        return out


def _histograms(ev: "Evaluator", vec: InstantVector) -> Iterator[tuple[Labels, _Classic]]:
    """Each classic histogram of ``vec`` with its labels (those of its buckets but ``le``)."""
    for key, items in _bucket_groups(vec).items():
        ev.check_deadline()  # (the callers loop over histograms x steps in Python)
        yield key, _Classic(vec, items)


def _histogram_quantile(ev: "Evaluator", node: P.Call, times: np.ndarray) -> Value:
    q = scalar_arg(ev, node.args[0], times, node.name)
    vec = vector_arg(ev, node.args[1], times, node.name)
    labels, values, present = [], [], []
    for key, h in _histograms(ev, vec):
        labels.append(key)
        values.append(h.quantiles(q))
        present.append(h.present)
    return finish(labels, values, present, len(times))


def _histogram_fraction(ev: "Evaluator", node: P.Call, times: np.ndarray) -> Value:
    lower = scalar_arg(ev, node.args[0], times, node.name)
    upper = scalar_arg(ev, node.args[1], times, node.name)
    vec = vector_arg(ev, node.args[2], times, node.name)
    labels, values, present = [], [], []
    for key, h in _histograms(ev, vec):
        out = np.zeros(len(times))
        for t in np.nonzero(h.present)[0].tolist():
            out[t] = bucket_fraction(float(lower[t]), float(upper[t]), h.buckets(t))
        labels.append(key)
        values.append(out)
        present.append(h.present)
    return finish(labels, values, present, len(times))


def _quantile_label(q: float) -> str:
    if q != q:
        return "NaN"
    if math.isinf(q):
        return "+Inf" if q > 0 else "-Inf"
    return repr(float(q))


def _histogram_quantiles(ev: "Evaluator", node: P.Call, times: np.ndarray) -> Value:
    vec = vector_arg(ev, node.args[0], times, node.name)
    label = string_arg(node.args[1], node.name)
    qs = [scalar_arg(ev, a, times, node.name) for a in node.args[2:]]
    labels, values, present = [], [], []
    for key, h in _histograms(ev, vec):
        for q in qs:
            d = dict(key)
            d[label] = _quantile_label(float(q[0]))
            labels.append(tuple(sorted(d.items())))
            values.append(h.quantiles(q))
            present.append(h.present)
    vec_out = finish(labels, values, present, len(times))
    return check_unique(vec_out)


def _native_only(ev: "Evaluator", node: P.Call, times: np.ndarray) -> Value:
    for a in node.args:
        ev.eval(a, times)
    return InstantVector.empty(len(times))


def _histogram_field(kind: str) -> FuncImpl:
    """histogram_count / histogram_sum / histogram_avg of native histogram samples (float
    samples give nothing, as upstream)."""

    def impl(ev: "Evaluator", node: P.Call, times: np.ndarray) -> Value:
        vec = vector_arg(ev, node.args[0], times, node.name)
        lookup = ev.hist_lookup
        if lookup is None or not len(vec):
            return InstantVector.empty(len(times))
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



FUNCS: dict[str, FuncImpl] = {
    "histogram_quantile": _histogram_quantile,
    "histogram_count": _histogram_field("count"),
    "histogram_sum": _histogram_field("sum"),
    "histogram_avg": _histogram_field("avg"),
    "histogram_fraction": _histogram_fraction,
    "histogram_quantiles": _histogram_quantiles,
    "histogram_stddev": _native_only,
    "histogram_stdvar": _native_only,
}
