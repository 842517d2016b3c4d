"""An in-memory Storage: for tests, the PromQL conformance runner and benchmarks.

Raw samples are kept per series in sorted NumPy arrays. Rollup rows (1m/1h) can be
loaded explicitly with ``put_rollup`` or derived from raw data with ``build_rollups``;
``select_calls`` / ``select_log`` record selects so tests can observe caching and the
resolution read. Which series a set of matchers selects is remembered until a series is
added (or rollup rows are stored), so repeated queries skip the label matching.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from cachetools import LRUCache

from query.histogram import FloatHistogram, decode_ref, encode_ref
from storage.base import ADDED_IN_V5, HOUR_MS, MINUTE_MS, Resolution, SeriesData, Storage, StorageError
from storage.matchers import Matcher, match_all
from storage.model import SampleBatch, Series
from storage.rollup import rollup_raw, rollup_rollup

_FAR = 2**62


def _bounds(start_ms: int, end_ms: int) -> np.ndarray:
    """Search keys giving [lo, hi) of [start_ms, end_ms] in sorted int64 timestamps."""
    return np.array([max(min(start_ms, _FAR), -_FAR), max(min(end_ms, _FAR), -_FAR) + 1], dtype=np.int64)


class _AggView(Mapping):
    """The aggregate columns of rows [lo, hi) of one series, sliced when read."""

    __slots__ = ("_cols", "_lo", "_hi")

    def __init__(self, cols: dict[str, np.ndarray], lo: int, hi: int) -> None:
        self._cols, self._lo, self._hi = cols, lo, hi

    def __getitem__(self, name: str) -> np.ndarray:
        return self._cols[name][self._lo : self._hi]

    def __contains__(self, name: object) -> bool:
        return name in self._cols

    def __iter__(self) -> Iterator[str]:
        return iter(self._cols)

    def __len__(self) -> int:
        return len(self._cols)


@dataclass
class _Column:
    """One series' samples: sorted NumPy arrays plus writes not merged into them yet (kept
    out of Python lists between queries, so a big store costs the garbage collector nothing)."""

    series: Series
    arr_ts: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    arr_vals: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.float64))
    pending: list[tuple[np.ndarray, np.ndarray]] = field(default_factory=list)
    pending_ts: list[int] = field(default_factory=list)
    pending_vals: list[float] = field(default_factory=list)
    last_hist: FloatHistogram | None = None  # the previous sample, when it was a histogram

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        if self.pending_ts:
            ts = np.asarray(self.pending_ts, dtype=np.int64)
            self.pending.append((ts, np.asarray(self.pending_vals, dtype=np.float64)))
            self.pending_ts, self.pending_vals = [], []
        if self.pending:
            ts = np.concatenate([self.arr_ts, *(p[0] for p in self.pending)])
            vals = np.concatenate([self.arr_vals, *(p[1] for p in self.pending)])
            self.pending = []
            if len(ts) > 1 and not bool(np.all(ts[1:] > ts[:-1])):
                order = np.argsort(ts, kind="stable")
                ts, vals = ts[order], vals[order]
                # Idempotent writes: the last write of a timestamp wins.
                keep = np.ones(len(ts), dtype=bool)
                keep[:-1] = ts[1:] != ts[:-1]
                ts, vals = ts[keep], vals[keep]
            self.arr_ts, self.arr_vals = ts, vals
        return self.arr_ts, self.arr_vals


class MemoryStorage(Storage):
    """Everything in process memory; not durable."""

    def __init__(self) -> None:
        self._series: dict[int, _Column] = {}
        self._rollups: dict[Resolution, dict[int, SeriesData]] = {}
        self._histograms: list[FloatHistogram] = []
        self.select_calls = 0
        self.selected_samples = 0
        self.select_log: list[tuple[str, int, int]] = []  # (resolution, start, end) per select
        # (matchers, resolution) -> matching columns (raw) or series ids (rollups), sorted by
        # labels; valid while no series is added and no rollup rows are stored.
        self._selections: LRUCache[tuple, list] = LRUCache(maxsize=1000)

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
            self._selections.clear()
        col.pending_ts.append(ts_ms)
        col.pending_vals.append(value)
        if decode_ref(value) is None:
            col.last_hist = None

    def add_histogram(self, series: Series, ts_ms: int, h: FloatHistogram) -> None:
        """Append a native histogram sample (in time order). Its counter-reset hint is set as
        a TSDB chunk reports it on read: a series' first histogram keeps its own hint, later
        ones are ``not_reset`` unless a reset is detected (``reset``); gauges stay gauges."""
        col = self._series.get(series.id)
        prev = col.last_hist if col is not None else None
        h = h.copy()
        if prev is not None and h.hint != "gauge":
            h.hint = "reset" if (h.hint == "reset" or h.detect_reset(prev)) else "not_reset"
        self._histograms.append(h)
        self.add_sample(series, ts_ms, encode_ref(len(self._histograms) - 1))
        self._series[series.id].last_hist = h

    @property
    def has_histograms(self) -> bool:
        return bool(self._histograms)

    def histogram(self, value: float) -> FloatHistogram | None:
        """The histogram a stored value refers to (None for a float sample)."""
        idx = decode_ref(value)
        if idx is None or idx >= len(self._histograms):
            return None
        return self._histograms[idx]

    def add_series(self, series: Series, ts: np.ndarray, values: np.ndarray) -> None:
        """Bulk-load samples of one series (appended to what is there)."""
        col = self._series.get(series.id)
        if col is None:
            col = self._series[series.id] = _Column(series)
            self._selections.clear()
        if len(ts):
            col.pending.append((np.array(ts, dtype=np.int64), np.array(values, dtype=np.float64)))

    def clear(self) -> None:
        self._series.clear()
        self._rollups.clear()
        self._histograms.clear()
        self._selections.clear()

    def put_rollup(self, data: SeriesData) -> None:
        """Store precomputed rollup rows for one series at ``data.resolution`` (without the
        rate aggregates, ``storage.base.ADDED_IN_V5``: as rows written before them, NaN)."""
        if data.resolution is Resolution.RAW or data.agg is None:
            raise StorageError("put_rollup needs 1m/1h data with its aggregate columns")
        if any(n not in data.agg for n in ADDED_IN_V5):  # rows as written before those existed
            agg = {n: np.full(len(data), np.nan) for n in ADDED_IN_V5} | dict(data.agg)
            data = SeriesData(data.series, data.timestamps, data.values, data.resolution, agg)
        self._rollups.setdefault(data.resolution, {})[data.series.id] = data
        self._selections.clear()

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

    def _selected(self, matchers: Sequence[Matcher], resolution: Resolution) -> list:
        """Columns (raw) or rollup series ids matching ``matchers``, sorted by labels."""
        key = (tuple(matchers), resolution)
        hit = self._selections.get(key)
        if hit is not None:
            return hit
        ms = list(matchers)
        if resolution is Resolution.RAW:
            cols = [c for c in self._series.values() if match_all(ms, c.series.labels)]
            cols.sort(key=lambda c: c.series.labels)
            hit = cols
        else:
            rows = self._rollups.get(resolution, {})
            found = [d.series for d in rows.values() if match_all(ms, d.series.labels)]
            hit = [s.id for s in sorted(found, key=lambda s: s.labels)]
        self._selections[key] = hit
        return hit

    async def select(
        self,
        matchers: Sequence[Matcher],
        start_ms: int,
        end_ms: int,
        resolution: Resolution = Resolution.RAW,
        *,
        columns: Collection[str] | None = None,  # (every column is returned)
    ) -> list[SeriesData]:
        self.select_calls += 1
        self.select_log.append((resolution.value, start_ms, end_ms))
        out: list[SeriesData] = []
        keys = _bounds(start_ms, end_ms)
        if resolution is not Resolution.RAW:
            rows = self._rollups.get(resolution)
            if rows is None:
                raise StorageError(f"resolution {resolution.value} is not available in this store")
            for sid in self._selected(matchers, resolution):
                d = rows[sid]
                lo, hi = d.timestamps.searchsorted(keys).tolist()
                if hi > lo:
                    agg = _AggView(d.agg or {}, lo, hi)
                    out.append(SeriesData(d.series, d.timestamps[lo:hi], d.values[lo:hi], resolution, agg))  # type: ignore[arg-type]
                    self.selected_samples += hi - lo
            return out
        for col in self._selected(matchers, resolution):
            ts, vals = col.arrays()
            lo, hi = ts.searchsorted(keys).tolist()
            if hi > lo:
                out.append(SeriesData(col.series, ts[lo:hi], vals[lo:hi]))
                self.selected_samples += hi - lo
        return out

    async def series(self, matchers: Sequence[Matcher], start_ms: int, end_ms: int) -> list[Series]:
        out = []
        keys = _bounds(start_ms, end_ms)
        for col in self._selected(matchers, Resolution.RAW):
            ts, _ = col.arrays()
            lo, hi = ts.searchsorted(keys).tolist()
            if hi > lo:
                out.append(col.series)
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
