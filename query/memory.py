"""An in-memory Storage: for tests, the PromQL conformance runner and benchmarks.

Raw samples are kept per series in sorted NumPy arrays. Rollup rows (1m/1h) can be
loaded explicitly with ``put_rollup`` or derived from raw data with ``build_rollups``;
``select_calls`` / ``select_log`` record selects so tests can observe caching and the
resolution read.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from storage.base import HOUR_MS, MINUTE_MS, Resolution, SeriesData, Storage, StorageError
from storage.matchers import Matcher, match_all
from storage.model import SampleBatch, Series
from storage.rollup import rollup_raw, rollup_rollup


@dataclass
class _Column:
    series: Series
    ts: list[int] = field(default_factory=list)
    vals: list[float] = field(default_factory=list)
    arr_ts: np.ndarray | None = None
    arr_vals: np.ndarray | None = None

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        if self.arr_ts is None or self.arr_vals is None:
            ts = np.asarray(self.ts, dtype=np.int64)
            vals = np.asarray(self.vals, dtype=np.float64)
            order = np.argsort(ts, kind="stable")
            ts, vals = ts[order], vals[order]
            if len(ts) > 1:
                # Idempotent writes: the last write of a timestamp wins.
                keep = np.ones(len(ts), dtype=bool)
                keep[:-1] = ts[1:] != ts[:-1]
                ts, vals = ts[keep], vals[keep]
            self.arr_ts, self.arr_vals = ts, vals
            self.ts, self.vals = ts.tolist(), vals.tolist()
        return self.arr_ts, self.arr_vals


class MemoryStorage(Storage):
    """Everything in process memory; not durable."""

    def __init__(self) -> None:
        self._series: dict[int, _Column] = {}
        self._rollups: dict[Resolution, dict[int, SeriesData]] = {}
        self.select_calls = 0
        self.selected_samples = 0
        self.select_log: list[tuple[str, int, int]] = []  # (resolution, start, end) per select

    # ----------------------------------------------------------------- writing
    async def write(self, batch: SampleBatch) -> None:
        self.write_sync(batch)

    def write_sync(self, batch: SampleBatch) -> None:
        for s, t, v in zip(batch.series, batch.timestamps, batch.values, strict=False):
            self.add_sample(s, int(t), float(v))

    def add_sample(self, series: Series, ts_ms: int, value: float) -> None:
        col = self._series.get(series.id)
        if col is None:
            col = self._series[series.id] = _Column(series)
        if col.arr_ts is not None:
            col.arr_ts = col.arr_vals = None
        col.ts.append(ts_ms)
        col.vals.append(value)

    def add_series(self, series: Series, ts: np.ndarray, values: np.ndarray) -> None:
        """Bulk-load samples of one series (appended to what is there)."""
        col = self._series.get(series.id)
        if col is None:
            col = self._series[series.id] = _Column(series)
        col.arr_ts = col.arr_vals = None
        col.ts.extend(np.asarray(ts, dtype=np.int64).tolist())
        col.vals.extend(np.asarray(values, dtype=np.float64).tolist())

    def clear(self) -> None:
        self._series.clear()
        self._rollups.clear()

    def put_rollup(self, data: SeriesData) -> None:
        """Store precomputed rollup rows for one series at ``data.resolution``."""
        if data.resolution is Resolution.RAW or data.agg is None:
            raise StorageError("put_rollup needs 1m/1h data with its aggregate columns")
        self._rollups.setdefault(data.resolution, {})[data.series.id] = data

    def build_rollups(self, resolution: Resolution, until_ms: int | None = None) -> None:
        """Derive rollup rows from the raw samples held (as the rollup job does), for
        buckets starting before ``until_ms`` (all when None)."""
        for col in self._series.values():
            ts, vals = col.arrays()
            if len(ts) == 0:
                continue
            end = int(ts[-1]) + 1 if until_ms is None else until_ms
            start = (int(ts[0]) // MINUTE_MS) * MINUTE_MS
            r = rollup_raw(ts, vals, start, max(end, start), MINUTE_MS)
            if resolution is Resolution.HOUR:
                r = rollup_rollup(r, HOUR_MS)
            if len(r):
                cols = r.columns()
                self.put_rollup(SeriesData(col.series, r.timestamps, cols["last"], resolution, cols))

    # ----------------------------------------------------------------- reading
    def all_series(self) -> list[Series]:
        return sorted((c.series for c in self._series.values()), key=lambda s: s.labels)

    async def select(
        self,
        matchers: Sequence[Matcher],
        start_ms: int,
        end_ms: int,
        resolution: Resolution = Resolution.RAW,
    ) -> list[SeriesData]:
        self.select_calls += 1
        self.select_log.append((resolution.value, start_ms, end_ms))
        out: list[SeriesData] = []
        if resolution is not Resolution.RAW:
            rows = self._rollups.get(resolution)
            if rows is None:
                raise StorageError(f"resolution {resolution.value} is not available in this store")
            for _sid, d in rows.items():
                if not match_all(list(matchers), d.series.labels):
                    continue
                lo = int(np.searchsorted(d.timestamps, start_ms, "left"))
                hi = int(np.searchsorted(d.timestamps, end_ms, "right"))
                if hi > lo:
                    agg = {k: v[lo:hi] for k, v in (d.agg or {}).items()}
                    out.append(SeriesData(d.series, d.timestamps[lo:hi], d.values[lo:hi], resolution, agg))
                    self.selected_samples += hi - lo
            out.sort(key=lambda d: d.series.labels)
            return out
        for col in self._series.values():
            if not match_all(list(matchers), col.series.labels):
                continue
            ts, vals = col.arrays()
            lo = int(np.searchsorted(ts, start_ms, "left"))
            hi = int(np.searchsorted(ts, end_ms, "right"))
            if hi > lo:
                out.append(SeriesData(col.series, ts[lo:hi], vals[lo:hi]))
                self.selected_samples += hi - lo
        out.sort(key=lambda d: d.series.labels)
        return out

    async def series(self, matchers: Sequence[Matcher], start_ms: int, end_ms: int) -> list[Series]:
        out = []
        for col in self._series.values():
            if not match_all(list(matchers), col.series.labels):
                continue
            ts, _ = col.arrays()
            lo = int(np.searchsorted(ts, start_ms, "left"))
            hi = int(np.searchsorted(ts, end_ms, "right"))
            if hi > lo:
                out.append(col.series)
        out.sort(key=lambda s: s.labels)
        return out

    async def label_names(self, start_ms: int, end_ms: int, matchers: Sequence[Matcher] = ()) -> list[str]:
        names: set[str] = set()
        for s in await self.series(matchers, start_ms, end_ms):
            names.update(k for k, _ in s.labels)
        return sorted(names)

    async def label_values(
        self, name: str, start_ms: int, end_ms: int, matchers: Sequence[Matcher] = ()
    ) -> list[str]:
        values: set[str] = set()
        for s in await self.series(matchers, start_ms, end_ms):
            v = s.get(name)
            if v:
                values.add(v)
        return sorted(values)
