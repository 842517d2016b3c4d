"""An in-memory Storage: for tests, the PromQL conformance runner and benchmarks.

Raw samples are kept per series in sorted NumPy arrays. Rollup rows (1m/1h) can be
loaded explicitly with ``put_rollup`` or derived from raw data with ``build_rollups``;
``select_calls`` counts selects so tests can observe caching.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from storage.base import AGGREGATES, Resolution, SeriesData, Storage, StorageError
from storage.matchers import Matcher, match_all
from storage.model import STALE_NAN_BITS, SampleBatch, Series


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

    def build_rollups(self, resolution: Resolution) -> None:
        """Derive rollup rows for every series from the raw samples held."""
        for col in self._series.values():
            ts, vals = col.arrays()
            data = rollup_of(col.series, ts, vals, resolution)
            if data is not None:
                self.put_rollup(data)

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


def rollup_of(series: Series, ts: np.ndarray, vals: np.ndarray, resolution: Resolution) -> SeriesData | None:
    """Aggregate raw samples into buckets of ``resolution`` (count,sum,min,max,last,increase).

    Stale markers are skipped. ``increase`` is the reset-aware counter increase between
    consecutive samples whose later sample falls in the bucket (so bucket increases add
    up exactly over any run of buckets).
    """
    step = resolution.step_ms
    if step <= 0:
        raise StorageError("rollups need a 1m or 1h resolution")
    bits = vals.view(np.uint64)
    keep = bits != np.uint64(STALE_NAN_BITS)
    ts, vals = ts[keep], vals[keep]
    if len(ts) == 0:
        return None
    bucket = (ts // step) * step
    starts, first_idx = np.unique(bucket, return_index=True)
    ends = np.append(first_idx[1:], len(ts))
    inc_pairs = np.zeros(len(ts))
    if len(ts) > 1:
        d = np.diff(vals)
        inc_pairs[1:] = np.where(d >= 0, d, vals[1:])
    agg: dict[str, np.ndarray] = {
        "count": (ends - first_idx).astype(np.float64),
        "sum": np.add.reduceat(vals, first_idx),
        "min": np.minimum.reduceat(vals, first_idx),
        "max": np.maximum.reduceat(vals, first_idx),
        "last": vals[ends - 1],
        "increase": np.add.reduceat(inc_pairs, first_idx),
    }
    assert set(agg) == set(AGGREGATES)
    return SeriesData(series, starts.astype(np.int64), agg["last"].copy(), resolution, agg)
