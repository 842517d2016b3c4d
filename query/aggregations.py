"""Aggregation operators (sum, avg, count, min, max, group, stddev, stdvar, topk, bottomk,
quantile, count_values, limitk, limit_ratio) with by/without, vectorised over steps.

Sums use Kahan/Neumaier compensation and ``avg`` switches to an incremental mean on
overflow, as upstream Prometheus does; a step whose values are finite and of similar
magnitude is summed plainly instead (one reduceat), exact to ~1e-12 relative, which can
differ from upstream in the last bits (README, "Differences from Prometheus").
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from decimal import Decimal
from types import ModuleType
from typing import TYPE_CHECKING

import numpy as np

from query import kernels
from query import parse as P
from query.errors import QueryError
from query.values import InstantVector, Labels, Scalar, String, Value, merge_same_labels
from storage.model import LABEL_NAME_RE

if TYPE_CHECKING:
    from query.engine import Evaluator


def kahan_inc(inc: np.ndarray, s: np.ndarray, c: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Neumaier-compensated ``s + inc`` (upstream ``kahanSumInc``), elementwise."""
    t = s + inc
    big = np.abs(s) >= np.abs(inc)
    nc = c + np.where(big, (s - t) + inc, (inc - t) + s)
    nc = np.where(np.isinf(t), 0.0, nc)
    return t, nc


def format_float(v: float) -> str:
    """Go's ``strconv.FormatFloat(v, 'f', -1, 64)``: shortest digits, never an exponent."""
    if v != v:
        return "NaN"
    if v == float("inf"):
        return "+Inf"
    if v == float("-inf"):
        return "-Inf"
    s = format(Decimal(repr(v)), "f")
    if "." in s:
        s = s.rstrip("0").rstrip(".")
    if s == "-0":
        return "-0"
    return s


def group_key_fn(node: P.Aggregate) -> Callable[[Labels], Labels]:
    if node.without:
        skip = set(node.grouping) | {"__name__"}

        def key(lab: Labels) -> Labels:
            return tuple([p for p in lab if p[0] not in skip])  # (a list: faster than a generator)
    else:
        keep = set(node.grouping)

        def key(lab: Labels) -> Labels:
            return tuple([p for p in lab if p[0] in keep])
    return key


# The group keys of label sets grouped before, per grouping (by/without and the names): a
# dashboard's refreshes group the same series again (issue #20's 6,400 series: a lookup each,
# ~0.5 ms, where making the keys took ~2-3 ms). Emptied whole beyond GROUP_KEYS_MAX entries.
_group_keys: dict[tuple[bool, tuple[str, ...]], dict[Labels, Labels]] = {}
_group_keys_held = [0]
GROUP_KEYS_MAX = 100_000


def group_keys(node: P.Aggregate, labels: list[Labels]) -> list[Labels]:
    """The group key of each of ``labels`` (``group_key_fn``'s), remembered."""
    memo = _group_keys.setdefault((node.without, tuple(node.grouping)), {})
    keys = list(map(memo.get, labels))
    if None in keys:
        if _group_keys_held[0] + len(labels) > GROUP_KEYS_MAX:
            _group_keys.clear()
            _group_keys_held[0] = 0
            memo = _group_keys.setdefault((node.without, tuple(node.grouping)), {})
        keyf = group_key_fn(node)
        for i, k in enumerate(keys):
            if k is None:
                keys[i] = memo[labels[i]] = keyf(labels[i])
                _group_keys_held[0] += 1
    return keys  # type: ignore[return-value]  # (no None left)


# The group ids of the label list grouped last, per grouping (at most LAST_GROUPS_MAX
# groupings, lists of LAST_GROUPS_MIN..LAST_GROUPS_LIMIT label sets): a dashboard's refresh
# groups the very same label objects again (the store keeps its series), so checking that
# each is the same object (~0.2 ms for issue #20's 6,400 series) replaces hashing each to
# look up its key and numbering the groups (~3-6 ms of the query's CPU).
_last_groups: dict[tuple[bool, tuple[str, ...]], tuple[list[Labels], list[Labels], np.ndarray]] = {}
LAST_GROUPS_MAX = 64
LAST_GROUPS_MIN = 256
LAST_GROUPS_LIMIT = 500_000


def group_ids(node: P.Aggregate, labels: list[Labels]) -> tuple[list[Labels], np.ndarray]:
    """The group keys in order of first appearance and each of ``labels``' group (index in
    them, read-only), remembered for the last ``labels`` of each grouping."""
    grouping = (node.without, tuple(node.grouping))
    last = _last_groups.get(grouping)
    if last is not None and len(last[0]) == len(labels) and all(map(operator.is_, labels, last[0])):
        return list(last[1]), last[2]
    # Groups numbered in order of first appearance (map/dict passes, not a loop in Python:
    # issue #20's query groups 6,400 series, ~8 -> ~3.5 ms, ~1 ms with the keys remembered).
    of_series = group_keys(node, labels)
    key_index: dict[Labels, int] = {k: g for g, k in enumerate(dict.fromkeys(of_series))}
    keys: list[Labels] = list(key_index)
    gid = np.fromiter(map(key_index.__getitem__, of_series), dtype=np.int64, count=len(of_series))
    gid.flags.writeable = False
    if LAST_GROUPS_MIN <= len(labels) <= LAST_GROUPS_LIMIT:
        if grouping not in _last_groups and len(_last_groups) >= LAST_GROUPS_MAX:
            _last_groups.clear()
        _last_groups[grouping] = (list(labels), keys, gid)
    return list(keys), gid


def eval_aggregate(ev: "Evaluator", node: P.Aggregate, times: np.ndarray) -> Value:
    vec = ev.eval(node.expr, times)
    if not isinstance(vec, InstantVector):
        raise QueryError(f"aggregation {node.op} expects an instant vector")
    steps = len(times)
    param = ev.eval(node.param, times) if node.param is not None else None
    op = node.op
    keys, gid = group_ids(node, vec.labels)
    if op in ("topk", "bottomk", "limitk", "limit_ratio"):
        return _select_k(op, vec, gid, len(keys), param, steps, ev.check_deadline)
    group_drop = np.zeros(len(keys), dtype=bool)
    if len(vec):
        np.logical_or.at(group_drop, gid, vec.drops())
    if op == "quantile":
        if not isinstance(param, Scalar):
            raise QueryError("quantile parameter must be a scalar")
        out = _quantile(vec, gid, keys, param.values, steps, ev.check_deadline)
    elif op == "count_values":
        if not isinstance(param, String):
            raise QueryError("count_values parameter must be a string")
        return _count_values(vec, gid, keys, param.value, steps, ev)
    elif len(vec) == 0:
        return InstantVector.empty(steps)
    else:
        out = _simple(op, vec, gid, keys, steps)
    out.drop = group_drop
    return out.compact()


def _positions(gid: np.ndarray, ngroups: int) -> np.ndarray:
    """(groups x max group size) matrix of row indices, padded with -1, in input order."""
    sizes = np.bincount(gid, minlength=ngroups)
    width = int(sizes.max()) if len(sizes) else 0
    idx = np.full((ngroups, width), -1, dtype=np.int64)
    fill = np.zeros(ngroups, dtype=np.int64)
    for row, g in enumerate(gid.tolist()):
        idx[g, fill[g]] = row
        fill[g] += 1
    return idx


def _well_conditioned_steps(vec: InstantVector) -> np.ndarray:
    """Per step: True when plain summation is as good as compensated summation there
    (finite values of similar magnitude, so no cancellation can cost more than ~1e-12).

    Decided step by step, so a step's answer depends only on its own values: the same
    whether it is computed alone, with other steps, or in a range-cache chunk."""
    a = np.abs(vec.values)
    # (NaN when one is NaN, +Inf when one is infinite: not finite)
    top = np.max(a, axis=0, where=vec.present, initial=0.0)
    low = np.min(a, axis=0, where=vec.present & (a > 0), initial=np.inf)  # (+Inf: no nonzero)
    with np.errstate(invalid="ignore", divide="ignore"):
        ok = np.isfinite(top) & (top < 1e15) & ((low == np.inf) | (top / low < 1e6))
    return np.asarray(ok, dtype=bool)


def _fast_sums(op: str, vec: InstantVector, gid: np.ndarray, keys: list[Labels]) -> InstantVector:
    """sum/avg/count/group of groups with one reduceat over rows sorted by group."""
    order = np.argsort(gid, kind="stable")
    g_sorted = gid[order]
    starts = np.concatenate([[0], np.nonzero(np.diff(g_sorted))[0] + 1])
    present = vec.present[order]
    everywhere = bool(present.all())  # (then the counts are the group sizes, no value masked)
    if everywhere:
        sizes = np.diff(np.append(starts, len(order))).astype(np.float64)
        cnt = np.repeat(sizes[:, None], present.shape[1], axis=1)
    else:
        cnt = np.add.reduceat(present.astype(np.float64), starts, axis=0)
    if op == "count":
        values = cnt
    elif op == "group":
        values = np.ones_like(cnt)
    else:
        rows = vec.values[order]
        total = np.add.reduceat(rows if everywhere else np.where(present, rows, 0.0), starts, axis=0)
        values = total if op == "sum" else total / np.where(cnt > 0, cnt, 1.0)
    labels = [keys[g] for g in g_sorted[starts].tolist()]
    return InstantVector(labels, values, cnt > 0)


def _simple(op: str, vec: InstantVector, gid: np.ndarray, keys: list[Labels], steps: int) -> InstantVector:
    if op in ("count", "group"):
        return _fast_sums(op, vec, gid, keys)
    if op not in ("sum", "avg"):
        return _stepwise(op, vec, gid, keys, steps)
    compiled = kernels.loaded()
    if compiled is not None:
        got = _compiled_sums(compiled, op, vec, gid, keys)
        if got is not None:
            return got
    plain = _well_conditioned_steps(vec)
    if plain.all():
        return _fast_sums(op, vec, gid, keys)
    if not plain.any():
        return _stepwise(op, vec, gid, keys, steps)
    # Some steps plain, the others compensated. Both ways give every group in gid order
    # (each gid in 0..len(keys)-1 occurs), present where a series of the group is.
    hard = ~plain
    fast = _fast_sums(op, _steps_of(vec, plain), gid, keys)
    exact = _stepwise(op, _steps_of(vec, hard), gid, keys, int(hard.sum()))
    values = np.empty((len(keys), steps))
    present = np.empty((len(keys), steps), dtype=bool)
    values[:, plain], present[:, plain] = fast.values, fast.present
    values[:, hard], present[:, hard] = exact.values, exact.present
    return InstantVector(fast.labels, values, present)


def _compiled_sums(compiled: ModuleType, op: str, vec: InstantVector, gid: np.ndarray, keys: list[Labels]) -> InstantVector | None:
    """``_fast_sums``' sum/avg in one pass (``kernels_numba.group_sums``: the same additions in
    the same order), None when a step is not well conditioned (``_well_conditioned_steps``)."""
    shape = (len(keys), vec.values.shape[1])
    total, cnt = np.empty(shape), np.empty(shape)
    values = np.ascontiguousarray(vec.values, dtype=np.float64)
    present = np.ascontiguousarray(vec.present, dtype=bool)
    if not compiled.group_sums(values, present, np.require(gid, np.int64, ["C", "W"]), total, cnt):
        return None
    if op == "avg":
        total /= np.where(cnt > 0, cnt, 1.0)
    return InstantVector(list(keys), total, cnt > 0)


def _steps_of(vec: InstantVector, cols: np.ndarray) -> InstantVector:
    return InstantVector(vec.labels, vec.values[:, cols], vec.present[:, cols])


def _stepwise(op: str, vec: InstantVector, gid: np.ndarray, keys: list[Labels], steps: int) -> InstantVector:  # noqa: PLR0915 - one vectorised branch per aggregation operator
    """Any simple aggregation, series by series into every step at once (Kahan sums)."""
    G = len(keys)
    idx = _positions(gid, G)
    shape = (G, steps)
    cnt = np.zeros(shape)
    s = np.zeros(shape)
    c = np.zeros(shape)
    mean = np.zeros(shape)
    incr = np.zeros(shape, dtype=bool)
    bad = np.zeros(shape, dtype=bool)
    for j in range(idx.shape[1]):
        rows = idx[:, j]
        valid = rows >= 0
        r = np.where(valid, rows, 0)
        p = vec.present[r] & valid[:, None]
        if not p.any():
            continue
        v = np.where(p, vec.values[r], 0.0)
        first = p & (cnt == 0)
        more = p & (cnt > 0)
        if op == "count" or op == "group":
            cnt += p
            continue
        if op in ("sum",):
            t, nc = kahan_inc(v, s, c)
            s = np.where(more, t, np.where(first, v, s))
            c = np.where(more, nc, np.where(first, 0.0, c))
        elif op == "avg":
            cnt_new = cnt + p
            t, nc = kahan_inc(v, s, c)
            direct = more & ~incr
            ok = ~np.isinf(t)
            upd = direct & ok
            s = np.where(upd, t, np.where(first, v, s))
            c = np.where(upd, nc, np.where(first, 0.0, c))
            switch = direct & ~ok
            if switch.any():
                prev = np.where(switch, cnt, 1.0)
                mean = np.where(switch, s / prev, mean)
                c = np.where(switch, c / prev, c)
                incr = incr | switch
            use_inc = more & incr
            if use_inc.any():
                n = np.where(use_inc, cnt_new, 1.0)
                q = (n - 1) / n
                t2, nc2 = kahan_inc(v / n, q * mean, q * c)
                mean = np.where(use_inc, t2, mean)
                c = np.where(use_inc, nc2, c)
            cnt = cnt_new
            continue
        elif op == "max":
            s = np.where(first, v, np.where(more, np.where((s < v) | np.isnan(s), v, s), s))
        elif op == "min":
            s = np.where(first, v, np.where(more, np.where((s > v) | np.isnan(s), v, s), s))
        elif op in ("stddev", "stdvar"):
            n = cnt + p
            nn = np.where(n > 0, n, 1.0)
            delta = v - mean
            new_mean = np.where(first, v, mean + delta / nn)
            s = np.where(more, s + delta * (v - new_mean), np.where(first, 0.0, s))
            mean = np.where(p, new_mean, mean)
            bad |= p & ~np.isfinite(v)
        else:
            raise QueryError(f"unknown aggregation {op}")
        cnt += p
    present = cnt > 0
    if op == "count":
        values = cnt.astype(np.float64)
    elif op == "group":
        values = np.ones(shape)
    elif op == "sum":
        values = s + c
    elif op == "avg":
        safe = np.where(cnt > 0, cnt, 1.0)
        values = np.where(incr, mean + c, (s + c) / safe)
    elif op in ("min", "max"):
        values = s
    elif op == "stdvar":
        values = np.where(bad, np.nan, s / np.where(cnt > 0, cnt, 1.0))
    else:
        values = np.where(bad, np.nan, np.sqrt(s / np.where(cnt > 0, cnt, 1.0)))
    return InstantVector(list(keys), values, present)


def _k_values(param: object, steps: int, op: str) -> np.ndarray:
    if not isinstance(param, Scalar):
        raise QueryError(f"{op} parameter must be a scalar")
    return param.values


def _select_k(
    op: str, vec: InstantVector, gid: np.ndarray, ngroups: int, param: object, steps: int, check: Callable[[], None]
) -> InstantVector:
    kv = _k_values(param, steps, op)
    n = len(vec)
    selected = np.zeros((n, steps), dtype=bool)
    order: list[int] = []
    seen: set[int] = set()
    groups = [np.nonzero(gid == g)[0] for g in range(ngroups)]
    for t in range(steps):
        check()  # (a Python loop over steps x groups: the deadline is checked per step)
        kf = float(kv[t])
        if kf != kf:
            raise QueryError(f"Parameter value is NaN for {op}")
        if op == "limit_ratio":
            if kf < -1 or kf > 1:
                raise QueryError(f"Ratio value {kf} is out of range [-1, 1]")
        elif abs(kf) >= 2**63:
            raise QueryError(f"Scalar value {kf} overflows int64")
        k = int(kf) if op != "limit_ratio" else 0
        if op != "limit_ratio" and k < 1:
            continue
        for rows in groups:
            rows = rows[vec.present[rows, t]]
            if len(rows) == 0:
                continue
            if op == "limitk":
                pick = rows[:k]
            elif op == "limit_ratio":
                pick = _ratio_pick(vec, rows, kf)
            else:
                vals = vec.values[rows, t]
                nan = np.isnan(vals)
                key = -vals if op == "topk" else vals
                srt = np.lexsort((np.arange(len(rows)), key, nan))
                pick = rows[srt[:k]]
            selected[pick, t] = True
            if t == 0 or len(order) < n:
                for r in pick.tolist():
                    if r not in seen:
                        seen.add(r)
                        order.append(r)
    if not order:
        return InstantVector.empty(steps)
    out = InstantVector(vec.labels, vec.values, vec.present & selected, vec.drop).take(order)
    return out


def _ratio_pick(vec: InstantVector, rows: np.ndarray, ratio: float) -> np.ndarray:
    import hashlib

    out = []
    for r in rows.tolist():
        h = int.from_bytes(hashlib.blake2b(repr(vec.labels[r]).encode(), digest_size=8).digest(), "little")
        frac = h / 2**64
        if (ratio >= 0 and frac < ratio) or (ratio < 0 and frac >= 1 + ratio):
            out.append(r)
    return np.asarray(out, dtype=np.int64)


def quantile_of(q: float, values: np.ndarray) -> float:
    """Upstream ``quantile``: NaNs sort first, linear interpolation between ranks."""
    if len(values) == 0 or q != q:
        return float("nan")
    if q < 0:
        return float("-inf")
    if q > 1:
        return float("inf")
    nan = np.isnan(values)
    vals = np.concatenate([values[nan], np.sort(values[~nan])])
    n = len(vals)
    rank = q * (n - 1)
    lower = max(0, int(np.floor(rank)))
    upper = min(n - 1, lower + 1)
    weight = rank - np.floor(rank)
    return float(vals[lower] * (1 - weight) + vals[upper] * weight)


def _quantile(
    vec: InstantVector, gid: np.ndarray, keys: list[Labels], q: np.ndarray, steps: int, check: Callable[[], None]
) -> InstantVector:
    G = len(keys)
    values = np.zeros((G, steps))
    present = np.zeros((G, steps), dtype=bool)
    for g in range(G):
        check()
        rows = np.nonzero(gid == g)[0]
        for t in range(steps):
            p = vec.present[rows, t]
            if not p.any():
                continue
            values[g, t] = quantile_of(float(q[t]), vec.values[rows[p], t])
            present[g, t] = True
    return InstantVector(list(keys), values, present)


def _count_values(
    vec: InstantVector, gid: np.ndarray, keys: list[Labels], label: str, steps: int, ev: "Evaluator"
) -> InstantVector:
    if not LABEL_NAME_RE.match(label):
        raise QueryError(f"invalid label name {label!r}")
    out: dict[Labels, np.ndarray] = {}
    for i in range(len(vec)):
        ev.check_deadline()
        base = dict(keys[gid[i]])
        for t in np.nonzero(vec.present[i])[0].tolist():
            d = dict(base)
            d[label] = format_float(float(vec.values[i, t]))
            lab = tuple(sorted(d.items()))
            arr = out.get(lab)
            if arr is None:
                ev.reserve(steps, "count_values output series of ")  # each value seen is a series
                arr = out[lab] = np.zeros(steps)
            arr[t] += 1
    if not out:
        return InstantVector.empty(steps)
    labels = list(out)
    values = np.array([out[k] for k in labels])
    return merge_same_labels(InstantVector(labels, values, values > 0))
