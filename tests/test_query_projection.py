"""Rollup reads of only the aggregates a query needs give the answers of reads of all.

The engine asks the store for the aggregates its functions read (``ROLLUP_COLUMNS``: a
rate() panel reads ``increase``, or the rate aggregates over whole buckets); SQLite and Cassandra return only those columns. Each
query here runs twice over the same real store, sealed by the real rollup job: once as
the engine reads, once through a store that ignores the request and returns every column.
"""

from __future__ import annotations

import numpy as np
import pytest
from test_rollup_fresh import load, store  # noqa: F401 - the store fixture (SQLite, Cassandra)
from test_rollup_job import SHARDS, T0, T_END, WINDOW, generate

from query.engine import Engine
from storage.base import AGGREGATES, DAY_MS, MINUTE_MS, Resolution
from storage.rollup_job import RollupJob
from storage.rollup_lease import LocalShardLease

QUERIES = [
    "rate(gen_metric_total[5m])",
    "increase(gen_metric_total[10m])",
    "sum by (k) (rate(gen_metric_total[5m]))",
    "sum_over_time(gen_gauge[5m])",
    "count_over_time(gen_gauge[5m])",
    "avg_over_time(gen_gauge[7m])",
    "min_over_time(gen_gauge[5m])",
    "max_over_time(gen_gauge[5m])",
    "rate(gen_metric_total[5m]) / avg_over_time(gen_metric_total[5m])",  # one plan, two needs
    "rate(gen_metric_total[5m]) + last_over_time(gen_metric_total[5m])",  # one need is "everything"
    "gen_gauge",
    "delta(gen_gauge[5m])",
]


class EveryColumn:
    """The store, asked for every aggregate whatever the engine asks for."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.asked: list = []

    async def select(self, matchers, start_ms, end_ms, resolution=Resolution.RAW, *, columns=None):
        self.asked.append(columns)
        return await self.inner.select(matchers, start_ms, end_ms, resolution)

    def __getattr__(self, name):
        return getattr(self.inner, name)


@pytest.mark.parametrize("age_days, resolution", [(10, Resolution.MINUTE), (40, Resolution.HOUR)])
async def test_projected_rollup_reads_answer_as_full_reads(store, tmp_path, age_days, resolution) -> None:  # noqa: F811
    data = generate(seed=31)
    await load(store, data)
    job = RollupJob(store, LocalShardLease(tmp_path / "locks"), window_ms=WINDOW, shards=SHARDS, now_ms=lambda: T_END + DAY_MS)
    await job.backfill(T0, T_END)
    now = T_END + age_days * DAY_MS  # raw samples are past retention: the rollups answer
    step = MINUTE_MS if resolution is Resolution.MINUTE else 3_600_000
    start, end = T0 + 30 * MINUTE_MS, T_END - 30 * MINUTE_MS
    full = EveryColumn(store)
    projected = Engine(store, now_ms=lambda: now)
    reference = Engine(full, now_ms=lambda: now)  # type: ignore[arg-type]
    compared = 0
    for q in QUERIES:
        got = await projected.range_query(q, start, end, step)
        want = await reference.range_query(q, start, end, step)
        assert [s.labels for s in got.series] == [s.labels for s in want.series], q
        for a, b in zip(got.series, want.series, strict=True):
            assert a.timestamps.tolist() == b.timestamps.tolist(), q
            np.testing.assert_array_equal(a.values, b.values, err_msg=q)
            compared += len(a.values)
    assert compared > (1000 if resolution is Resolution.MINUTE else 300)
    # The reference did read every column where the engine asked for some.
    assert any("increase" in a for a in full.asked) and frozenset({"sum", "count"}) in full.asked


async def test_a_projected_select_returns_only_the_asked_columns(store, tmp_path) -> None:  # noqa: F811
    from storage.matchers import Matcher, MatchOp

    data = generate(seed=32)
    await load(store, data)
    job = RollupJob(store, LocalShardLease(tmp_path / "locks"), window_ms=WINDOW, shards=SHARDS, now_ms=lambda: T_END + DAY_MS)
    await job.backfill(T0, T_END)
    name = [Matcher("__name__", MatchOp.EQ, "gen_metric_total")]
    full = await store.select(name, T0, T_END, Resolution.MINUTE)
    some = await store.select(name, T0, T_END, Resolution.MINUTE, columns=["increase", "count"])
    assert len(full) == len(some) == 15
    for f, s in zip(full, some, strict=True):
        assert set(f.agg) == set(AGGREGATES)
        assert set(s.agg) == {"count", "increase"} and np.isnan(s.values).all()
        assert s.timestamps.tolist() == f.timestamps.tolist()
        assert s.agg["increase"].tolist() == f.agg["increase"].tolist()
    with pytest.raises(ValueError, match="unknown rollup aggregates: median"):
        await store.select(name, T0, T_END, Resolution.MINUTE, columns=["median"])
