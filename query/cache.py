"""Range-query result cache: results are split into step-aligned chunks of time, complete
chunks are kept (LRU, bounded by points) and reused across dashboard refreshes; chunks that
reach into the recent past are always recomputed.

A chunk covers ``chunk_steps`` evaluation steps ``phase + k*chunk_len ... phase + (k+1)*chunk_len - step``
of one (expression, step, phase) where ``phase = start % step``; a result at a step does
not depend on the query's other steps, so chunks computed by different requests combine.
Queries whose value depends on the query range (``@ start()``/``@ end()``, ``start()``,
``end()``, ``range()``, ``step()``) bypass the cache. Chunks are also keyed by the
resolutions (raw/1m/1h) the whole request reads, and computed reading those
(``Engine.range_query(resolution_start_ms=...)``), so a refresh answers what an uncached
query would. A chunk's steps before the request's start are computed only when some of them
are settled (they are computed to be kept): a query of the last minutes reads and evaluates
its own range, not the whole chunk's.

``range_query_json`` answers with the Prometheus API body directly: each chunk keeps its
points formatted as JSON text (made once, when first asked for), so a refresh formats only
the points it computed and joins the rest.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from cachetools import LRUCache

from query import parse as P
from query.engine import Engine
from query.promjson import annotations_json, labels_json
from query.resolution import SourceResolution
from query.result import QueryResult, ResultSeries
from storage.base import HOUR_MS, Resolution

Labels = tuple[tuple[str, str], ...]
_RANGE_DEPENDENT_FUNCS = {"start", "end", "range", "step"}


@dataclass
class _Chunk:
    series: dict[Labels, tuple[np.ndarray, np.ndarray]]
    points: int
    created: float
    upto: int = -(2**62)  # the last step whose result this chunk holds (all steps up to it)
    # Per series: its points as JSON text ``[t,"v"],[t,"v"]...`` and where each point starts
    # in it (one more entry: the text's length + 1), made by ``text()`` when first needed.
    _text: dict[Labels, tuple[str, np.ndarray]] | None = None

    def text(self) -> dict[Labels, tuple[str, np.ndarray]]:
        if self._text is None:
            self._text = {lab: _points_text(ts, vals) for lab, (ts, vals) in self.series.items()}
        return self._text


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
        this long even if complete (picks up backfilled data eventually). ``max_points``
        bounds what is kept: a point takes 16 bytes, plus about 30 bytes of JSON text once
        served by ``range_query_json``."""
        self.engine = engine
        self.recent_ms = recent_ms
        self.chunk_steps = max(1, chunk_steps)
        self.max_points = max_points
        self.ttl_s = ttl_s
        self.now_ms = now_ms or engine.now_ms
        self.stats = CacheStats()
        self._chunks: OrderedDict[tuple, _Chunk] = OrderedDict()
        self._points = 0
        self._cacheable: LRUCache[str, bool] = LRUCache(maxsize=10_000)

    def __len__(self) -> int:
        return len(self._chunks)

    def clear(self) -> None:
        self._chunks.clear()
        self._points = 0

    def _is_cacheable(self, expr: str) -> bool:
        hit = self._cacheable.get(expr)
        if hit is None:
            hit = not _range_dependent(P.parse(expr))
            self._cacheable[expr] = hit
        return hit

    async def range_query(
        self, expr: str, start_ms: int, end_ms: int, step_ms: int, source: SourceResolution = SourceResolution.AUTO
    ) -> QueryResult:
        got = await self._collect(expr, start_ms, end_ms, step_ms, source)
        if isinstance(got, QueryResult):
            return got
        parts, warnings = got
        return _merge(parts, start_ms, end_ms, warnings)

    async def range_query_json(
        self, expr: str, start_ms: int, end_ms: int, step_ms: int, source: SourceResolution = SourceResolution.AUTO
    ) -> str:
        """``range_query`` as the Prometheus API's JSON body (``{"status":"success",...}``)."""
        got = await self._collect(expr, start_ms, end_ms, step_ms, source)
        if isinstance(got, QueryResult):
            whole = _Chunk({tuple(sorted(s.labels.items())): (s.timestamps, s.values) for s in got.series}, 0, 0.0)
            return _merge_json({0: whole}, start_ms, end_ms, got.warnings)
        parts, warnings = got
        return _merge_json(parts, start_ms, end_ms, warnings)

    async def _collect(
        self, expr: str, start_ms: int, end_ms: int, step_ms: int, source: SourceResolution = SourceResolution.AUTO
    ) -> QueryResult | tuple[dict[int, _Chunk], list[str]]:
        """The chunks covering [start_ms, end_ms] (cached, completed or computed), or the
        engine's answer for a query the cache does not take."""
        if step_ms <= 0 or end_ms < start_ms or not self._is_cacheable(expr):
            self.stats.bypassed += 1
            return await self.engine.range_query(expr, start_ms, end_ms, step_ms, source=source)
        phase = start_ms % step_ms
        chunk_len = step_ms * self.chunk_steps
        # Parts of requests reading different resolutions (by the age of their start) are
        # kept apart; each part is computed reading what its whole request reads.
        reads, notes = self.engine.planned_resolutions(expr, start_ms, end_ms, step_ms, source)
        base = (expr.strip(), step_ms, phase, chunk_len, reads)
        k_first = (start_ms - phase) // chunk_len
        k_last = (end_ms - phase) // chunk_len
        now = self.now_ms()
        # Steps up to here are settled: their results may be kept.
        settled = now - self.recent_ms
        if any(r == Resolution.HOUR.value for _, r in reads):
            # Over 1h rollups a step in the open hour reads its newest samples from finer rows
            # (Engine._fetch_rollup) only while that hour is open: not kept.
            settled = min(settled, now // HOUR_MS * HOUR_MS - 1)
        wall = time.monotonic()
        parts: dict[int, _Chunk] = {}
        todo: list[tuple[int, int]] = []  # (chunk, first step to compute)
        for k in range(k_first, k_last + 1):
            c_first = phase + k * chunk_len
            c_last = c_first + chunk_len - step_ms
            chunk = self._chunks.get((*base, k))
            if chunk is not None and wall - chunk.created <= self.ttl_s:
                self._chunks.move_to_end((*base, k))
                parts[k] = chunk
                if chunk.upto >= min(c_last, end_ms):
                    self.stats.hits += 1
                    continue
                # A chunk kept in part (its newest steps were recent): compute the rest.
                first = chunk.upto + step_ms
            else:
                first = c_first
            if settled < first < start_ms:
                # Steps before the request's start are computed only to be kept; these would
                # not be (too recent): from the start (issue #20's query of the last 2
                # minutes read and evaluated up to 155 s more for nothing).
                first = start_ms
            todo.append((k, first))
        warnings: list[str] = []
        for run in _runs(todo, phase, chunk_len):
            q_start = run[0][1]
            q_end = min(phase + (run[-1][0] + 1) * chunk_len - step_ms, end_ms)
            res = await self.engine.range_query(
                expr, q_start, q_end, step_ms, resolution_start_ms=start_ms, source=source, keep_rows=True
            )
            warnings.extend(res.warnings)
            ks = [k for k, _ in run]
            for k, fresh in self._split(res, ks, phase, chunk_len).items():
                self.stats.misses += 1
                c_first = phase + k * chunk_len
                c_last = c_first + chunk_len - step_ms
                old = parts.get(k)
                merged = _join(old, fresh) if old is not None else fresh
                parts[k] = merged
                keep_upto = min(c_last, q_end)
                if keep_upto > settled:
                    keep_upto = c_first + ((settled - c_first) // step_ms) * step_ms
                if keep_upto >= c_first:
                    if all(ts[-1] <= keep_upto for ts, _ in merged.series.values() if len(ts)):
                        # All of it is kept: the same object, so text made for this answer stays.
                        merged.upto = keep_upto
                        self._store((*base, k), merged)
                    else:
                        self._store((*base, k), _prefix(merged, keep_upto))
        # Answers taken from chunks alone repeat what planning says about the resolution read.
        return parts, warnings if todo else notes

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


def _runs(todo: list[tuple[int, int]], phase: int, chunk_len: int) -> list[list[tuple[int, int]]]:
    """Group chunks to compute into contiguous runs (one engine query each); a chunk
    computed from its middle (kept in part) can only start a run."""
    runs: list[list[tuple[int, int]]] = []
    for k, first in todo:
        whole = first == phase + k * chunk_len
        if runs and runs[-1][-1][0] == k - 1 and whole:
            runs[-1].append((k, first))
        else:
            runs.append([(k, first)])
    return runs


def _join(old: _Chunk, fresh: _Chunk) -> _Chunk:
    series = dict(old.series)
    for lab, (ts, vals) in fresh.series.items():
        prev = series.get(lab)
        series[lab] = (ts, vals) if prev is None else (np.concatenate([prev[0], ts]), np.concatenate([prev[1], vals]))
    out = _Chunk(series, old.points + fresh.points, old.created, max(old.upto, fresh.upto))
    if old._text is not None:
        # Keep the text made for the old points; format only the fresh ones.
        text = dict(old._text)
        for lab, (t, starts) in fresh.text().items():
            prev_text = text.get(lab)
            if prev_text is None or not prev_text[0]:
                text[lab] = (t, starts)
            elif t:
                pt, ps = prev_text
                text[lab] = (pt + "," + t, np.concatenate([ps[:-1], starts + ps[-1]]))
        out._text = text
    return out


def _prefix(chunk: _Chunk, upto: int) -> _Chunk:
    series = {}
    text: dict[Labels, tuple[str, np.ndarray]] | None = {} if chunk._text is not None else None
    points = 0
    for lab, (ts, vals) in chunk.series.items():
        n = int(np.searchsorted(ts, upto, "right"))
        if n:
            series[lab] = (ts[:n], vals[:n])
            points += n
            if text is not None:
                t, starts = chunk._text[lab]  # type: ignore[index]
                text[lab] = (t if n == len(ts) else t[: int(starts[n]) - 1], starts[: n + 1])
    out = _Chunk(series, points, chunk.created, upto)
    out._text = text
    return out


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


def _points_text(ts: np.ndarray, vals: np.ndarray) -> tuple[str, np.ndarray]:
    """One series' points as the API writes them, and the offset of each point in the text."""
    from query.api import format_timestamps, format_values

    pairs = [f'[{t},"{v}"]' for t, v in zip(format_timestamps(ts), format_values(vals), strict=True)]
    starts = np.zeros(len(pairs) + 1, dtype=np.int64)
    starts[1:] = np.cumsum(np.fromiter(map(len, pairs), dtype=np.int64, count=len(pairs)) + 1)
    return ",".join(pairs), starts


def _merge_json(parts: dict[int, _Chunk], start_ms: int, end_ms: int, warnings: list[str]) -> str:
    pieces: dict[Labels, list[str]] = {}
    for k in sorted(parts):
        chunk = parts[k]
        texts = chunk.text()
        for lab, (ts, _) in chunk.series.items():
            if not len(ts):
                continue
            text, starts = texts[lab]
            if ts[0] >= start_ms and ts[-1] <= end_ms:
                piece = text
            else:
                a, b = int(np.searchsorted(ts, start_ms, "left")), int(np.searchsorted(ts, end_ms, "right"))
                if b <= a:
                    continue
                piece = text[int(starts[a]) : int(starts[b]) - 1]
            pieces.setdefault(lab, []).append(piece)
    result = ",".join(
        f'{{"metric":{labels_json(dict(lab))},"values":[{",".join(pieces[lab])}]}}'
        for lab in sorted(pieces)
    )
    tail = annotations_json(sorted(set(warnings)))
    return f'{{"status":"success","data":{{"resultType":"matrix","result":[{result}]}}{tail}}}'
