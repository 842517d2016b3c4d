"""Instant functions: element-wise math (``abs`` ... ``rad``, ``round``, ``clamp*``), the
date functions, ``time``/``pi``/``vector``/``scalar``/``timestamp``, ``absent`` and
``absent_over_time``, and the query's own ``start``/``end``/``step``/``range`` and
``min_of``/``max_of``."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from query import parse as P
from query.functions.args import FuncImpl, range_arg, scalar_arg, vector_arg
from query.values import InstantVector, Labels, Scalar, Value

if TYPE_CHECKING:
    from query.engine import Evaluator


def _math(fn: Callable[[np.ndarray], np.ndarray]) -> FuncImpl:
    def impl(ev: "Evaluator", node: P.Call, times: np.ndarray) -> Value:
        vec = vector_arg(ev, node.args[0], times, node.name)
        return InstantVector(vec.labels, fn(vec.values), vec.present).with_drop(True)

    return impl


def _sgn(x: np.ndarray) -> np.ndarray:
    return np.where(np.isnan(x), np.nan, np.sign(x))


def _round(ev: "Evaluator", node: P.Call, times: np.ndarray) -> Value:
    vec = vector_arg(ev, node.args[0], times, node.name)
    to = scalar_arg(ev, node.args[1], times, node.name) if len(node.args) > 1 else np.ones(len(times))
    inv = 1.0 / to
    vals = np.floor(vec.values * inv + 0.5) / inv
    return InstantVector(vec.labels, vals, vec.present).with_drop(True)


def _clamp(kind: str) -> FuncImpl:
    def impl(ev: "Evaluator", node: P.Call, times: np.ndarray) -> Value:
        vec = vector_arg(ev, node.args[0], times, node.name)
        vals = vec.values
        present = vec.present
        if kind == "clamp":
            lo = scalar_arg(ev, node.args[1], times, node.name)
            hi = scalar_arg(ev, node.args[2], times, node.name)
            vals = _go_max(lo[None, :], _go_min(hi[None, :], vals))
            present = present & ~(hi < lo)[None, :]
        elif kind == "clamp_min":
            lo = scalar_arg(ev, node.args[1], times, node.name)
            vals = _go_max(lo[None, :], vals)
        else:
            hi = scalar_arg(ev, node.args[1], times, node.name)
            vals = _go_min(hi[None, :], vals)
        return InstantVector(vec.labels, vals, present).with_drop(True).compact()

    return impl


def _go_max(a: npt.NDArray[np.float64], b: npt.NDArray[np.float64]) -> np.ndarray:
    return np.maximum(a, b)


def _go_min(a: npt.NDArray[np.float64], b: npt.NDArray[np.float64]) -> np.ndarray:
    return np.minimum(a, b)


def _time(ev: "Evaluator", node: P.Call, times: np.ndarray) -> Value:
    return Scalar(times / 1000.0)


def _pi(ev: "Evaluator", node: P.Call, times: np.ndarray) -> Value:
    return Scalar(np.full(len(times), math.pi))


def _vector(ev: "Evaluator", node: P.Call, times: np.ndarray) -> Value:
    s = scalar_arg(ev, node.args[0], times, node.name)
    return InstantVector([()], s[None, :].copy(), np.ones((1, len(times)), dtype=bool))


def _scalar(ev: "Evaluator", node: P.Call, times: np.ndarray) -> Value:
    vec = vector_arg(ev, node.args[0], times, node.name)
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
        vec = vector_arg(ev, arg, times, node.name)
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
    vec = vector_arg(ev, node.args[0], times, node.name)
    missing = ~np.asarray(vec.present.any(axis=0)) if len(vec) else np.ones(len(times), dtype=bool)
    return InstantVector([_absent_labels(node.args[0])], np.ones((1, len(times))), missing[None, :]).compact()


def _absent_over_time(ev: "Evaluator", node: P.Call, times: np.ndarray) -> Value:
    rv = range_arg(ev, node.args[0], times, node.name)
    has = np.zeros(len(times), dtype=bool)
    for i in range(len(rv.labels)):
        lo, hi = rv.windows(i)
        has |= hi > lo
    return InstantVector([_absent_labels(node.args[0])], np.ones((1, len(times))), ~has[None, :]).compact()

_DATE_FUNCS = {"day_of_month", "day_of_week", "day_of_year", "days_in_month", "hour", "minute", "month", "year"}


def _date_func(ev: "Evaluator", node: P.Call, times: np.ndarray) -> Value:
    if node.args:
        vec = vector_arg(ev, node.args[0], times, node.name)
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
        a = scalar_arg(ev, node.args[0], times, node.name)
        b = scalar_arg(ev, node.args[1], times, node.name)
        return Scalar(np.minimum(a, b) if is_min else np.maximum(a, b))

    return impl



FUNCS: dict[str, FuncImpl] = {
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
    "start": _query_scalar("start"),
    "end": _query_scalar("end"),
    "step": _query_scalar("step"),
    "range": _query_scalar("range"),
    "min_of": _min_max_of(True),
    "max_of": _min_max_of(False),
}
for _name in _DATE_FUNCS:
    FUNCS[_name] = _date_func
