"""Range-query result cache: results are split into step-aligned chunks of time, complete
chunks are kept (LRU, bounded by points) and reused across dashboard refreshes; chunks that
reach into the recent past are always recomputed.

A chunk covers ``chunk_steps`` evaluation steps ``phase + k*chunk_len ... phase + (k+1)*chunk_len - step``
of one (expression, step, phase) where ``phase = start % step``; a result at a step does
not depend on the query's other steps, so chunks computed by different requests combine.
Queries whose value depends on the query range (``@ start()``/``@ end()``, ``start()``,
``end()``, ``range()``, ``step()``) bypass the cache.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from query import parse as P
from query.engine import Engine
from query.result import QueryResult, ResultSeries

Labels = tuple[tuple[str, str], ...]
_RANGE_DEPENDENT_FUNCS = {"start", "end", "range", "step"}


@dataclass
class _Chunk:
    series: dict[Labels, tuple[np.ndarray, np.ndarray]]
    points: int
    created: float


@dataclass
class CacheStats:
    hits: int = 0  # chunks served from the cache
    misses: int = 0  # chunks computed
    bypassed: int = 0  # queries not cacheable
    evicted: int = 0


def _range_dependent(node: P.Node) -> bool:
    if isinstance(node, P.VectorSel):
        return node.at in ("start", "end")
    if isinstance(node, P.MatrixSel):
        return node.vector.at in ("start", "end")
    if isinstance(node, P.Subquery):
        return node.at in ("start", "end") or _range_dependent(node.expr)
    if isinstance(node, P.Call):
        return node.name in _RANGE_DEPENDENT_FUNCS or any(_range_dependent(a) for a in node.args)
    if isinstance(node, P.Negate):
        return _range_dependent(node.expr)
    if isinstance(node, P.Binary):
        return _range_dependent(node.lhs) or _range_dependent(node.rhs)
    if isinstance(node, P.Aggregate):
        return _range_dependent(node.expr) or (node.param is not None and _range_dependent(node.param))
    return False


class RangeQueryCache:
    """Caches ``Engine.range_query`` results by step-aligned chunks."""

    def __init__(
        self,
        engine: Engine,
        *,
        recent_ms: int = 300_000,
        chunk_steps: int = 32,
        max_points: int = 5_000_000,
        ttl_s: float = 3600.0,
        now_ms: Callable[[], int] | None = None,
    ) -> None:
        """``chunk_steps``: evaluation steps per chunk (queries with the same step share chunks
        whatever their window). ``recent_ms``: chunks whose last step is newer than
        now - recent_ms are recomputed on every request (late samples may still arrive). ``ttl_s``: a chunk is dropped after
        this long even if complete (picks up backfilled data eventually)."""
        self.engine = engine
        self.recent_ms = recent_ms
        self.chunk_steps = max(1, chunk_steps)
        self.max_points = max_points
        self.ttl_s = ttl_s
        self.now_ms = now_ms or engine.now_ms
        self.stats = CacheStats()
        self._chunks: OrderedDict[tuple, _Chunk] = OrderedDict()
        self._points = 0
        self._cacheable: dict[str, bool] = {}

    def __len__(self) -> int:
        return len(self._chunks)

    def clear(self) -> None:
        self._chunks.clear()
        self._points = 0

    def _is_cacheable(self, expr: str) -> bool:
        hit = self._cacheable.get(expr)
        if hit is None:
            hit = not _range_dependent(P.parse(expr))
            if len(self._cacheable) > 10_000:
                self._cacheable.clear()
            self._cacheable[expr] = hit
        return hit

    async def range_query(self, expr: str, start_ms: int, end_ms: int, step_ms: int) -> QueryResult:
        if step_ms <= 0 or end_ms < start_ms or not self._is_cacheable(expr):
            self.stats.bypassed += 1
            return await self.engine.range_query(expr, start_ms, end_ms, step_ms)
        phase = start_ms % step_ms
        chunk_len = step_ms * self.chunk_steps
        base = (expr.strip(), step_ms, phase, chunk_len)
        k_first = (start_ms - phase) // chunk_len
        k_last = (end_ms - phase) // chunk_len
        now = self.now_ms()
        wall = time.monotonic()
        parts: dict[int, _Chunk] = {}
        missing: list[int] = []
        for k in range(k_first, k_last + 1):
            chunk = self._chunks.get((*base, k))
            if chunk is not None and wall - chunk.created <= self.ttl_s:
                self._chunks.move_to_end((*base, k))
                parts[k] = chunk
                self.stats.hits += 1
            else:
                missing.append(k)
        warnings: list[str] = []
        for run in _runs(missing):
            q_start = phase + run[0] * chunk_len
            q_end = min(phase + (run[-1] + 1) * chunk_len - step_ms, end_ms)
            res = await self.engine.range_query(expr, q_start, q_end, step_ms)
            warnings.extend(res.warnings)
            for k, chunk in self._split(res, run, phase, chunk_len).items():
                parts[k] = chunk
                self.stats.misses += 1
                last_step = phase + (k + 1) * chunk_len - step_ms
                if last_step <= q_end and last_step + self.recent_ms <= now:
                    self._store((*base, k), chunk)
        return _merge(parts, start_ms, end_ms, warnings)

    def _split(self, res: QueryResult, run: list[int], phase: int, chunk_len: int) -> dict[int, _Chunk]:
        out = {k: _Chunk({}, 0, time.monotonic()) for k in run}
        for s in res.series:
            lab: Labels = tuple(sorted(s.labels.items()))
            ks = (s.timestamps - phase) // chunk_len
            bounds = np.searchsorted(ks, run + [run[-1] + 1])
            for i, k in enumerate(run):
                a, b = int(bounds[i]), int(bounds[i + 1])
                if b > a:
                    out[k].series[lab] = (s.timestamps[a:b], s.values[a:b])
                    out[k].points += b - a
        return out

    def _store(self, key: tuple, chunk: _Chunk) -> None:
        old = self._chunks.pop(key, None)
        if old is not None:
            self._points -= old.points
        self._chunks[key] = chunk
        self._points += chunk.points
        while self._points > self.max_points and self._chunks:
            _, evicted = self._chunks.popitem(last=False)
            self._points -= evicted.points
            self.stats.evicted += 1


def _runs(ks: list[int]) -> list[list[int]]:
    runs: list[list[int]] = []
    for k in ks:
        if runs and runs[-1][-1] == k - 1:
            runs[-1].append(k)
        else:
            runs.append([k])
    return runs


def _merge(parts: dict[int, _Chunk], start_ms: int, end_ms: int, warnings: list[str]) -> QueryResult:
    pieces: dict[Labels, list[tuple[np.ndarray, np.ndarray]]] = {}
    for k in sorted(parts):
        for lab, tv in parts[k].series.items():
            pieces.setdefault(lab, []).append(tv)
    series = []
    for lab in sorted(pieces):
        ts = np.concatenate([p[0] for p in pieces[lab]])
        vals = np.concatenate([p[1] for p in pieces[lab]])
        keep = (ts >= start_ms) & (ts <= end_ms)
        if keep.any():
            series.append(ResultSeries(dict(lab), ts[keep], vals[keep]))
    return QueryResult("matrix", series, warnings=sorted(set(warnings)))
