"""How a range function (``rate``, ``*_over_time``, ``deriv``, ...) is evaluated: its range
vector argument, its scalar arguments, then one compute over every step's window.

A function has one implementation per form it runs in. ``batched`` computes all series at
once over the flat sample arrays; ``per_series`` loops series by series (the functions with no
vectorised form); ``rollup`` reads rollup aggregate columns when the selector reads rollup
buckets (without one, the batched or per-series compute reads the buckets' last values).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from query import parse as P
from query.functions.args import finish, range_arg, scalar_arg
from query.functions.windows import dense_rollup_windows
from query.values import InstantVector, RangeVector

if TYPE_CHECKING:
    from query.engine import Evaluator

# Per-series range functions: (range vector, series index, lo, hi, scalar args) -> (values, present),
# with lo/hi the per-step window bounds into the series' own arrays.
RangeCompute = Callable[[RangeVector, int, np.ndarray, np.ndarray, list], tuple[np.ndarray, np.ndarray]]

# Batched range functions: (range vector, lo, hi, scalar args) -> (values, present), all
# (series, steps); lo/hi are flat indices into the flat arrays, or a DenseGrid and None for a
# compute marked `dense` (see windows.dense_rollup_windows).
BatchedCompute = Callable[[RangeVector, Any, Any, list], tuple[np.ndarray, np.ndarray]]


@dataclass(frozen=True)
class RangeFunc:
    """One range function's implementations and argument layout. Every function has
    ``batched`` or ``per_series``."""

    batched: BatchedCompute | None = None
    per_series: RangeCompute | None = None
    rollup: BatchedCompute | None = None
    keep_name: bool = False
    range_index: int = 0
    scalar_args: tuple[int, ...] = ()


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


def eval_range_function(ev: "Evaluator", node: P.Call, times: np.ndarray, fn: RangeFunc) -> InstantVector:
    batched = fn.batched
    arg = node.args[fn.range_index]
    if fn.rollup is not None and _is_rollup_arg(ev, arg):
        batched = fn.rollup
    rv = range_arg(ev, arg, times, node.name)
    extra = [scalar_arg(ev, node.args[i], times, node.name) for i in fn.scalar_args]
    if batched is not None:
        vals, ok = _compute(rv, batched, extra)
        raw = ev.edge_raw_vector(arg, times) if batched is fn.rollup and isinstance(arg, P.MatrixSel) else None
        if raw is not None and fn.batched is not None and len(raw.labels):
            # The series with a sample on a window's edge: their raw samples' answer instead.
            row = {lab: i for i, lab in enumerate(rv.labels)}
            at = [row[lab] for lab in raw.labels]
            shape = (len(rv.labels), len(times))
            ok = np.array(np.broadcast_to(ok, shape))
            raw_vals, ok[at] = _compute(raw, fn.batched, extra)
            # (the answers with zeros where absent made here, not a copy of all values first:
            # a 24 h panel's 1.15 M values, for the few series read raw)
            vals = np.where(ok, vals, 0.0)
            vals[at] = np.where(ok[at], raw_vals, 0.0)
            return _finish(rv.labels, vals, ok, len(times), fn.keep_name, zeroed=True)
        return _finish(rv.labels, vals, ok, len(times), fn.keep_name)
    assert fn.per_series is not None, node.name
    lists = _SeriesLists(rv)
    labels, values, present = [], [], []
    for i, lab in enumerate(rv.labels):
        ev.check_deadline()
        lo, hi = rv.windows(i)
        vals, ok = fn.per_series(lists, i, lo, hi, extra)  # type: ignore[arg-type]
        if not ok.any():
            continue
        labels.append(lab)
        values.append(np.where(ok, vals, 0.0))
        present.append(ok)
    return finish(labels, values, present, len(times), drop=not fn.keep_name)


def _compute(rv: RangeVector, batched: BatchedCompute, extra: list) -> tuple[np.ndarray, np.ndarray]:
    """(values, present), (series, steps), of a batched compute over every window of ``rv``."""
    dense = dense_rollup_windows(rv) if getattr(batched, "dense", False) else None
    if dense is not None:
        return batched(rv, dense[0], dense[1], extra)
    compiled = getattr(batched, "compiled", None)  # (the windows found in the compute's kernel)
    if compiled is not None:
        got: tuple[np.ndarray, np.ndarray] | None = compiled(rv)
        if got is not None:
            return got
    lo, hi = rv.windows_all()
    return batched(rv, lo, hi, extra)


def _finish(labels: list, vals: np.ndarray, ok: np.ndarray, steps: int, keep_name: bool, zeroed: bool = False) -> InstantVector:
    """The answers where ``ok`` (``zeroed``: ``vals`` holds 0.0 elsewhere already, and is the
    caller's to give away), series without any dropped."""
    rows = np.nonzero(ok.any(axis=1))[0] if len(labels) else np.zeros(0, dtype=np.int64)
    if len(rows) == 0:
        return InstantVector.empty(steps)
    if len(rows) < len(labels):
        ok, vals = ok[rows], vals[rows]
        labels = [labels[i] for i in rows.tolist()]
    out = InstantVector(list(labels), vals if zeroed else np.where(ok, vals, 0.0), ok)
    return out.with_drop(not keep_name)


def _is_rollup_arg(ev: "Evaluator", arg: P.Node) -> bool:
    if not isinstance(arg, P.MatrixSel):
        return False
    plan = ev.plan_of(arg.vector)
    return plan is not None and plan.bucket_ms > 0
