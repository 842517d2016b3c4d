"""What one query may hold: its limits, and the estimate of its size made before evaluating.

A query's points are the samples it fetched plus every (series x step) value its nodes
produce, subqueries included (a subquery's inner expression is evaluated at each step of its
grid). ``estimate_points`` walks the tree with the series counts the fetch found and the
step counts the grids imply, without allocating anything, so that a query too big for
``QueryLimits.max_samples`` (or for its memory budget) fails before it evaluates; the
evaluator then accounts the points it really holds as it goes (``Evaluator.reserve``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from query import parse as P

# Bytes a held point costs: its value (8) and presence (1), rounded up for the window
# bounds a selector computes while it evaluates. The memory budget is enforced for real by
# the worker process's limit (query.isolation); this is the estimate checked beforehand.
BYTES_PER_POINT = 16
# Aggregations that loop over steps and groups in Python: they cost this many points' time.
PYTHON_LOOP_WEIGHT = 20
PYTHON_LOOP_OPS = frozenset({"topk", "bottomk", "limitk", "limit_ratio", "quantile", "count_values"})
LABEL_FUNCTIONS = frozenset({"label_replace", "label_join"})
# Functions that compute each series' (or histogram's) steps in a Python loop.
PYTHON_LOOP_FUNCTIONS = frozenset({
    "histogram_quantile", "histogram_fraction", "histogram_quantiles", "quantile_over_time", "mad_over_time",
    "stddev_over_time", "stdvar_over_time", "ts_of_max_over_time", "ts_of_min_over_time", "ts_of_last_over_time",
    "ts_of_first_over_time", "deriv", "predict_linear", "double_exponential_smoothing", "holt_winters",
})

LIMIT_TEXT = "query processing would load too many samples into memory in query execution"


@dataclass
class QueryLimits:
    """The budgets of one query (``query:`` in the config)."""

    max_samples: int = 50_000_000  # samples and points held at once (Prometheus's default)
    max_memory_bytes: int = 2 << 30  # memory one evaluation may add (enforced in its worker process)
    timeout_s: float = 30.0
    max_concurrency: int = 4  # evaluations in worker processes at once; more wait their turn
    # Estimated points evaluation makes (Python-loop aggregations weighted) above which it
    # runs in a worker process that can be killed; below, in the serving process (in a
    # thread from THREAD_POINTS or when many samples were fetched).
    isolate_points: int = 1_000_000


THREAD_POINTS = 100_000


def subquery_span(node: P.Subquery, tmin: int, tmax: int, default_step_ms: int, at_ms: int | None) -> tuple[int, int, int]:
    """(first, last, step) of the grid a subquery evaluates its expression on, for outer
    steps between ``tmin`` and ``tmax``; ``first > last`` when the grid is empty."""
    step = node.step_ms or default_step_ms
    lo, hi = (at_ms, at_ms) if at_ms is not None else (tmin, tmax)
    x = lo - node.offset_ms - node.range_ms
    return (x // step + 1) * step, hi - node.offset_ms, step


@dataclass
class Estimate:
    """Series a node yields (an upper bound), and the points and Python-loop work of its subtree.

    ``points`` counts the samples fetched too (the budget holds them); ``cost``, what decides
    where the query evaluates, counts only the points evaluation makes: the fetched samples
    are read by vectorised window code, whatever their number."""

    series: int
    points: int
    loops: int = 0
    fetched: int = 0

    @property
    def cost(self) -> int:
        return self.points - self.fetched + PYTHON_LOOP_WEIGHT * self.loops


@dataclass
class _Estimator:
    """The walk of ``estimate_points`` (a method, not a recursive closure: that one would be a
    reference cycle keeping ``series_of``, and with it the query's fetched series, alive until
    a garbage collection)."""

    series_of: Callable[[P.VectorSel], tuple[int, int]]
    at_ms: Callable[[int | str | None], int | None]
    subquery_step_ms: int

    def walk(self, n: P.Node, lo: int, hi: int, t: int) -> Estimate:
        if isinstance(n, (P.NumberLit, P.StringLit)):
            return Estimate(1, t)
        if isinstance(n, P.VectorSel):
            s, _ = self.series_of(n)
            return Estimate(s, s * t)
        if isinstance(n, P.MatrixSel):
            s, samples = self.series_of(n.vector)
            return Estimate(s, samples + t, 0, samples)
        if isinstance(n, P.Subquery):
            first, last, step = subquery_span(n, lo, hi, self.subquery_step_ms, self.at_ms(n.at))
            g = max(0, (last - first) // step + 1)
            inner = self.walk(n.expr, first, last, g) if g else Estimate(0, 0)
            return Estimate(inner.series, inner.points + inner.series * g + t, inner.loops, inner.fetched)
        if isinstance(n, P.Negate):
            e = self.walk(n.expr, lo, hi, t)
            return Estimate(e.series, e.points + e.series * t, e.loops, e.fetched)
        if isinstance(n, P.Binary):
            a, b = self.walk(n.lhs, lo, hi, t), self.walk(n.rhs, lo, hi, t)
            s = max(a.series, b.series)
            return Estimate(s, a.points + b.points + s * t, a.loops + b.loops, a.fetched + b.fetched)
        if isinstance(n, P.Aggregate):
            e = self.walk(n.expr, lo, hi, t)
            extra = self.walk(n.param, lo, hi, t) if n.param is not None else Estimate(0, 0)
            loops = e.loops + extra.loops + (e.series * t if n.op in PYTHON_LOOP_OPS else 0)
            # Without grouping labels most aggregations make one series (count_values and
            # the k-selections keep up to their input's).
            one = not n.grouping and not n.without and n.op not in PYTHON_LOOP_OPS
            s = min(e.series, 1) if one else e.series
            return Estimate(s, e.points + extra.points + s * t, loops, e.fetched + extra.fetched)
        if isinstance(n, P.Call):
            args = [self.walk(a, lo, hi, t) for a in n.args]
            s = max((a.series for a in args), default=1)
            loops = sum(a.loops for a in args)
            if n.name in LABEL_FUNCTIONS:  # Python per series, and labels as long as the replacement makes them
                loops += s * (1 + sum(len(a.value) for a in n.args if isinstance(a, P.StringLit)) // 8)
            elif n.name in PYTHON_LOOP_FUNCTIONS:
                loops += s * t
            return Estimate(s, sum(a.points for a in args) + s * t, loops, sum(a.fetched for a in args))
        return Estimate(1, t)



def estimate_points(
    node: P.Node,
    tmin: int,
    tmax: int,
    steps: int,
    *,
    series_of: Callable[[P.VectorSel], tuple[int, int]],
    at_ms: Callable[[int | str | None], int | None],
    subquery_step_ms: int,
) -> Estimate:
    """Points the evaluation of ``node`` at ``steps`` times in [tmin, tmax] holds, summed
    over its nodes. ``series_of(selector)``: (series, samples) the fetch found for it."""

    return _Estimator(series_of, at_ms, subquery_step_ms).walk(node, tmin, tmax, steps)


def too_many(points: int, limit: int, what: str = "") -> str:
    """Prometheus's message for a query over the sample limit, with our figures."""
    detail = f" ({what}{points} > limit of {limit} samples)" if what or points else ""
    return LIMIT_TEXT + detail


def over_memory(points: int, limit_bytes: int) -> str:
    return (
        f"query processing would exceed the memory budget of one query in query execution "
        f"(about {points * BYTES_PER_POINT >> 20} MiB for {points} points > budget of {limit_bytes >> 20} MiB)"
    )
