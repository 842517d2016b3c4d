"""The PromQL engine: plan the selectors' time ranges, fetch through Storage, evaluate with NumPy.

``Engine.instant_query`` / ``Engine.range_query`` are what the HTTP API, alerting and the web
UI call. Evaluation runs every node over all steps at once (see ``query.values``).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

import numpy as np

from query import parse as P
from query.errors import QueryError, QueryLimitError, QueryTimeoutError
from query.result import QueryResult, ResultSeries
from query.values import (
    InstantVector,
    RangeVector,
    Scalar,
    String,
    Value,
    drop_names,
    stale_mask,
)
from storage.base import Resolution, SeriesData, Storage, StorageError

DEFAULT_SUBQUERY_STEP_MS = 60_000


@dataclass
class FetchPlan:
    """One storage select: a selector's matchers and the union of the time ranges it needs."""

    matchers: tuple
    start_ms: int
    end_ms: int
    resolution: Resolution = Resolution.RAW
    data: list[SeriesData] = field(default_factory=list)


@dataclass
class QueryStats:
    """What one query did (for logs, tests and benchmarks)."""

    selects: int = 0
    samples: int = 0
    fetch_s: float = 0.0
    eval_s: float = 0.0


class Evaluator:
    """Synchronous evaluation of an expression tree over fetched data."""

    def __init__(
        self,
        fetched: dict[tuple, FetchPlan],
        start_ms: int,
        end_ms: int,
        *,
        lookback_ms: int,
        max_samples: int,
        deadline: float,
        subquery_step_ms: int = DEFAULT_SUBQUERY_STEP_MS,
        step_ms: int = 0,
    ) -> None:
        self.step_ms = step_ms
        self.fetched = fetched
        self.start_ms = start_ms
        self.end_ms = end_ms
        self.lookback_ms = lookback_ms
        self.max_samples = max_samples
        self.deadline = deadline
        self.subquery_step_ms = subquery_step_ms
        self._clean: dict[tuple, list[tuple[tuple, np.ndarray, np.ndarray]]] = {}

    # -------------------------------------------------------------- helpers
    def check_deadline(self) -> None:
        if time.monotonic() > self.deadline:
            raise QueryTimeoutError("query timed out in expression evaluation")

    def check_size(self, series: int, steps: int) -> None:
        if series * steps > self.max_samples:
            raise QueryLimitError(
                f"query processing would load too many samples into memory in query execution "
                f"({series} series x {steps} steps > limit of {self.max_samples} samples)"
            )

    def at_ms(self, at: object) -> int | None:
        if at is None:
            return None
        if at == "start":
            return self.start_ms
        if at == "end":
            return self.end_ms
        return int(at)  # type: ignore[arg-type]

    def _series_of(self, sel: P.VectorSel, drop_stale: bool) -> list[tuple[tuple, np.ndarray, np.ndarray]]:
        key = (sel.key, drop_stale)
        hit = self._clean.get(key)
        if hit is not None:
            return hit
        plan = self.fetched.get(sel.key)
        out = []
        for d in plan.data if plan is not None else []:
            ts, vals = d.timestamps, d.values
            if drop_stale:
                st = stale_mask(vals)
                if st.any():
                    ts, vals = ts[~st], vals[~st]
            out.append((d.series.labels, ts, vals))
        self._clean[key] = out
        return out

    # ------------------------------------------------------------------ eval
    def eval(self, node: P.Node, times: np.ndarray) -> Value:
        self.check_deadline()
        if isinstance(node, P.NumberLit):
            return Scalar(np.full(len(times), node.value))
        if isinstance(node, P.StringLit):
            return String(node.value)
        if isinstance(node, P.VectorSel):
            return self.eval_selector(node, times)
        if isinstance(node, P.MatrixSel):
            return self.eval_matrix(node, times)
        if isinstance(node, P.Subquery):
            return self.eval_subquery(node, times)
        if isinstance(node, P.Negate):
            v = self.eval(node.expr, times)
            if isinstance(v, Scalar):
                return Scalar(-v.values)
            if isinstance(v, InstantVector):
                return InstantVector(v.labels, -v.values, v.present).with_drop(True)
            raise QueryError("unary minus needs a scalar or instant vector")
        if isinstance(node, P.Binary):
            from query.operators import eval_binary

            return eval_binary(self, node, times)
        if isinstance(node, P.Aggregate):
            from query.aggregations import eval_aggregate

            return eval_aggregate(self, node, times)
        if isinstance(node, P.Call):
            from query.functions import eval_call

            return eval_call(self, node, times)
        raise QueryError(f"unsupported expression {type(node).__name__}")

    def eval_selector(self, sel: P.VectorSel, times: np.ndarray, sample_times: bool = False) -> InstantVector:
        at = self.at_ms(sel.at)
        refs = (np.full(len(times), at, dtype=np.int64) if at is not None else times) - sel.offset_ms
        labels, values, present = [], [], []
        T = len(times)
        for lab, ts, vals in self._series_of(sel, False):
            idx = np.searchsorted(ts, refs, "right") - 1
            ok = idx >= 0
            idxc = np.where(ok, idx, 0)
            ok &= ts[idxc] > refs - self.lookback_ms
            v = vals[idxc]
            ok &= ~stale_mask(v)
            if not ok.any():
                continue
            labels.append(lab)
            values.append(ts[idxc] / 1000.0 if sample_times else v)
            present.append(ok)
        self.check_size(len(labels), T)
        if not labels:
            return InstantVector.empty(T)
        return InstantVector(labels, np.array(values), np.array(present, dtype=bool))

    def eval_matrix(self, node: P.MatrixSel, times: np.ndarray) -> RangeVector:
        at = self.at_ms(node.vector.at)
        ends = (np.full(len(times), at, dtype=np.int64) if at is not None else times) - node.vector.offset_ms
        labels, tss, valss = [], [], []
        lo_all = ends.min() - node.range_ms if len(ends) else 0
        hi_all = ends.max() if len(ends) else 0
        total = 0
        for lab, ts, vals in self._series_of(node.vector, True):
            lo = np.searchsorted(ts, lo_all, "right")
            hi = np.searchsorted(ts, hi_all, "right")
            if hi <= lo:
                continue
            labels.append(lab)
            tss.append(ts[lo:hi])
            valss.append(vals[lo:hi])
            total += hi - lo
        if total > self.max_samples:
            raise QueryLimitError(
                f"query processing would load too many samples into memory in query execution "
                f"({total} samples > limit of {self.max_samples})"
            )
        return RangeVector(labels, tss, valss, ends, node.range_ms, times)

    def subquery_grid(self, node: P.Subquery, times: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(inner evaluation times, window ends) of a subquery evaluated at ``times``."""
        step = node.step_ms or self.subquery_step_ms
        at = self.at_ms(node.at)
        base = np.full(len(times), at, dtype=np.int64) if at is not None else times
        ends = base - node.offset_ms
        if len(base) == 0:
            return np.zeros(0, dtype=np.int64), ends
        x = int(base.min()) - node.offset_ms - node.range_ms
        gs = (x // step + 1) * step
        ge = int(base.max()) - node.offset_ms
        grid = np.arange(gs, ge + 1, step, dtype=np.int64) if ge >= gs else np.zeros(0, dtype=np.int64)
        return grid, ends

    def eval_subquery(self, node: P.Subquery, times: np.ndarray) -> RangeVector:
        grid, ends = self.subquery_grid(node, times)
        self.check_size(1, len(grid))
        inner = self.eval(node.expr, grid)
        if isinstance(inner, InstantVector):
            inner = drop_names(inner)
        if isinstance(inner, Scalar):
            inner = InstantVector([()], inner.values[None, :], np.ones((1, len(grid)), dtype=bool))
        if not isinstance(inner, InstantVector):
            raise QueryError("subquery is only allowed on instant vector")
        labels, tss, valss = [], [], []
        for i, lab in enumerate(inner.labels):
            p = inner.present[i]
            labels.append(lab)
            tss.append(grid[p])
            valss.append(inner.values[i][p])
        return RangeVector(labels, tss, valss, ends, node.range_ms, times)


def _plan_fetches(
    node: P.Node,
    tmin: int,
    tmax: int,
    ev: Evaluator,
    out: dict[tuple, FetchPlan],
) -> None:
    """Walk the tree noting for every selector the time range it reads."""

    def need(sel: P.VectorSel, lo: int, hi: int) -> None:
        plan = out.get(sel.key)
        if plan is None:
            out[sel.key] = FetchPlan(sel.matchers, lo, hi)
        else:
            plan.start_ms = min(plan.start_ms, lo)
            plan.end_ms = max(plan.end_ms, hi)

    if isinstance(node, P.VectorSel):
        at = ev.at_ms(node.at)
        lo, hi = (at, at) if at is not None else (tmin, tmax)
        need(node, lo - node.offset_ms - ev.lookback_ms + 1, hi - node.offset_ms)
    elif isinstance(node, P.MatrixSel):
        at = ev.at_ms(node.vector.at)
        lo, hi = (at, at) if at is not None else (tmin, tmax)
        v = node.vector
        need(v, lo - v.offset_ms - node.range_ms + 1, hi - v.offset_ms)
    elif isinstance(node, P.Subquery):
        grid, _ = ev.subquery_grid(node, np.array([tmin, tmax], dtype=np.int64))
        if len(grid):
            _plan_fetches(node.expr, int(grid[0]), int(grid[-1]), ev, out)
    elif isinstance(node, P.Negate):
        _plan_fetches(node.expr, tmin, tmax, ev, out)
    elif isinstance(node, P.Binary):
        _plan_fetches(node.lhs, tmin, tmax, ev, out)
        _plan_fetches(node.rhs, tmin, tmax, ev, out)
    elif isinstance(node, P.Aggregate):
        _plan_fetches(node.expr, tmin, tmax, ev, out)
        if node.param is not None:
            _plan_fetches(node.param, tmin, tmax, ev, out)
    elif isinstance(node, P.Call):
        for a in node.args:
            _plan_fetches(a, tmin, tmax, ev, out)


class Engine:
    """Evaluates PromQL over a Storage. Safe to share between tasks."""

    def __init__(
        self,
        storage: Storage,
        *,
        lookback_ms: int = 300_000,
        max_samples: int = 50_000_000,
        timeout_s: float = 30.0,
        subquery_step_ms: int = DEFAULT_SUBQUERY_STEP_MS,
    ) -> None:
        self.storage = storage
        self.lookback_ms = lookback_ms
        self.max_samples = max_samples
        self.timeout_s = timeout_s
        self.subquery_step_ms = subquery_step_ms
        self.last_stats = QueryStats()

    # ------------------------------------------------------------------ API
    async def instant_query(self, expr: str, time_ms: int) -> QueryResult:
        return await self._run(expr, int(time_ms), int(time_ms), 0, instant=True)

    async def range_query(self, expr: str, start_ms: int, end_ms: int, step_ms: int) -> QueryResult:
        start_ms, end_ms, step_ms = int(start_ms), int(end_ms), int(step_ms)
        if step_ms <= 0:
            raise QueryError("zero or negative query resolution step widths are not accepted")
        if end_ms < start_ms:
            raise QueryError("end timestamp must not be before start time")
        return await self._run(expr, start_ms, end_ms, step_ms, instant=False)

    def parse(self, expr: str) -> P.Node:
        return P.parse(expr)

    # ------------------------------------------------------------- internals
    async def _run(self, expr: str, start: int, end: int, step: int, *, instant: bool) -> QueryResult:
        node = P.parse(expr)
        vtype = P.value_type(node)
        if not instant and vtype not in (P.SCALAR, P.VECTOR):
            raise QueryError(
                f'invalid expression type "{ "range vector" if vtype == P.MATRIX else vtype}" '
                "for range query, must be Scalar or instant Vector"
            )
        deadline = time.monotonic() + self.timeout_s
        times = np.array([start], dtype=np.int64) if instant else np.arange(start, end + 1, step, dtype=np.int64)
        if len(times) > 11_000 and not instant:
            raise QueryError(
                "exceeded maximum resolution of 11,000 points per timeseries. "
                "Try decreasing the query resolution (?step=XX)"
            )
        ev = Evaluator(
            {},
            start,
            end,
            lookback_ms=self.lookback_ms,
            max_samples=self.max_samples,
            deadline=deadline,
            subquery_step_ms=self.subquery_step_ms,
            step_ms=step,
        )
        plans: dict[tuple, FetchPlan] = {}
        _plan_fetches(node, int(times[0]), int(times[-1]), ev, plans)
        stats = QueryStats()
        t0 = time.monotonic()
        await self._fetch(plans, deadline, stats)
        stats.fetch_s = time.monotonic() - t0
        ev.fetched = plans
        t1 = time.monotonic()
        result = self._evaluate(ev, node, times, instant)
        stats.eval_s = time.monotonic() - t1
        self.last_stats = stats
        return result

    async def _fetch(self, plans: dict[tuple, FetchPlan], deadline: float, stats: QueryStats) -> None:
        async def one(plan: FetchPlan) -> None:
            plan.data = await self.storage.select(list(plan.matchers), plan.start_ms, plan.end_ms, plan.resolution)

        remaining = deadline - time.monotonic()
        try:
            await asyncio.wait_for(asyncio.gather(*(one(p) for p in plans.values())), timeout=max(remaining, 0.001))
        except TimeoutError:
            raise QueryTimeoutError(f"query timed out after {self.timeout_s:g}s while reading series") from None
        except StorageError as exc:
            raise QueryError(f"storage error: {exc}") from exc
        stats.selects = len(plans)
        stats.samples = sum(len(d) for p in plans.values() for d in p.data)
        if stats.samples > self.max_samples:
            raise QueryLimitError(
                f"query processing would load too many samples into memory in query execution "
                f"({stats.samples} samples > limit of {self.max_samples})"
            )

    def _evaluate(self, ev: Evaluator, node: P.Node, times: np.ndarray, instant: bool) -> QueryResult:
        with np.errstate(all="ignore"):
            value = ev.eval(node, times)
        if isinstance(value, String):
            return QueryResult("string", string=(int(times[0]), value.value))
        if isinstance(value, Scalar):
            if instant:
                return QueryResult("scalar", scalar=(int(times[0]), float(value.values[0])))
            return QueryResult("matrix", [ResultSeries({}, times.copy(), value.values.astype(np.float64))])
        if isinstance(value, RangeVector):
            out = []
            for i, lab in enumerate(value.labels):
                lo, hi = value.windows(i)
                a, b = int(lo[0]), int(hi[0])
                if b > a:
                    out.append(ResultSeries(dict(lab), value.ts[i][a:b].copy(), value.vals[i][a:b].copy()))
            out.sort(key=lambda s: sorted(s.labels.items()))
            return QueryResult("matrix", out)
        assert isinstance(value, InstantVector)
        value = drop_names(value)
        if instant:
            series = [
                ResultSeries(dict(lab), times[:1].copy(), value.values[i, :1].copy())
                for i, lab in enumerate(value.labels)
                if value.present[i, 0]
            ]
            if not _is_sorted_output(node):
                series.sort(key=lambda s: sorted(s.labels.items()))
            return QueryResult("vector", series)
        series = []
        for i, lab in enumerate(value.labels):
            p = value.present[i]
            if p.any():
                series.append(ResultSeries(dict(lab), times[p], value.values[i][p]))
        series.sort(key=lambda s: sorted(s.labels.items()))
        return QueryResult("matrix", series)


def _is_sorted_output(node: P.Node) -> bool:
    """True when the expression defines its own output order (sort*, topk/bottomk)."""
    if isinstance(node, P.Call) and node.name.startswith("sort"):
        return True
    if isinstance(node, P.Aggregate) and node.op in ("topk", "bottomk"):
        return True
    return False
