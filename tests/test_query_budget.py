"""Query budgets in the engine: sample limit estimated before evaluating and accounted while
evaluating, the memory budget and the deadline of evaluations in worker processes."""

from __future__ import annotations

import asyncio
import os
import time

import numpy as np
import pytest

from query.budget import QueryLimits
from query.engine import Engine
from query.errors import QueryInputError, QueryLimitError, QueryMemoryError, QueryTimeoutError
from query.isolation import Isolator
from query.memory import MemoryStorage
from storage.model import Series, make_labels

NOW = (int(time.time()) // 60) * 60_000


def _storage(n: int = 3) -> MemoryStorage:
    st = MemoryStorage()
    ts = np.arange(NOW - 600_000, NOW + 1, 15_000)
    for i in range(n):
        st.add_series(Series.of(make_labels("up", instance=f"h{i}", job="j")), ts, np.arange(len(ts)) * 1.0 + i)
    return st


async def test_huge_subquery_is_refused_before_evaluating() -> None:
    eng = Engine(_storage(), now_ms=lambda: NOW)
    with pytest.raises(QueryLimitError, match="too many samples into memory in query execution.*estimated"):
        await eng.instant_query("max_over_time(up[365d:1s])", NOW)
    # Nested subqueries: the inner grid spans both ranges (120 d at 1 s, 3 series).
    with pytest.raises(QueryLimitError, match="too many samples"):
        await eng.instant_query("max_over_time(max_over_time(up[60d:1s])[60d:1s])", NOW)
    assert eng.isolator is not None and eng.isolator.running == 0
    # Too many steps for even one series: refused before the store is read.
    before = eng.storage.select_calls
    with pytest.raises(QueryLimitError, match="too many samples"):
        await eng.instant_query("max_over_time(up[3650d:1s])", NOW)
    assert eng.storage.select_calls == before


async def test_huge_subquery_over_rollups_of_fresh_data_is_refused(tmp_path) -> None:
    """Beyond raw retention the subquery's selector reads 1 h rollups; on fresh data every row
    is of the newest, unfinished bucket (ending after the query's time): those series count in
    the estimate too (they were left out of it once, and the 1 s grid over 365 d was evaluated)."""
    from storage.model import SampleBatch
    from storage.sqlite_rollup import SQLiteRollupStorage

    st = await SQLiteRollupStorage.open(tmp_path / "db")
    now = NOW // 3_600_000 * 3_600_000 - 30 * 60_000 + 7_000  # mid-hour: every row in one unfinished bucket
    try:
        for i in range(5):
            s = Series.of(make_labels("up", instance=f"h{i}", job="j"))
            for t in range(now - 120_000, now, 2_000):
                await st.write(SampleBatch(f"j/h{i}", [s], [t], [1.0]))
        eng = Engine(st, now_ms=lambda: now, isolate=False)
        # 150 d at 1 s is 12.96 M steps: over the limit of 50 M for 5 series, not for none
        with pytest.raises(QueryLimitError, match="too many samples into memory in query execution.*estimated"):
            await eng.instant_query("max_over_time(up[150d:1s])", now)
    finally:
        await st.close()


async def test_memory_budget_is_estimated_too() -> None:
    eng = Engine(_storage(), limits=QueryLimits(max_memory_bytes=16 << 20), now_ms=lambda: NOW)
    with pytest.raises(QueryMemoryError, match="memory budget"):
        await eng.instant_query("max_over_time(up[10d:1s])", NOW)


async def test_count_values_output_is_accounted_while_evaluating() -> None:
    # Every step gives each series a new value: count_values makes steps x series series.
    eng = Engine(_storage(20), max_samples=200_000, now_ms=lambda: NOW)
    with pytest.raises(QueryLimitError, match="count_values output series"):
        await eng.range_query('count_values("v", up + time())', NOW - 600_000, NOW, 1_000)
    res = await eng.range_query('count_values("v", up)', NOW - 60_000, NOW, 15_000)
    assert res.series


async def test_big_query_runs_in_a_worker_and_answers() -> None:
    eng = Engine(_storage(), now_ms=lambda: NOW)
    res = await eng.instant_query("max_over_time(up[10d:1s])", NOW)
    assert eng.last_stats.isolated
    assert sorted(float(s.values[0]) for s in res.series) == [40.0, 41.0, 42.0]
    small = await eng.instant_query("max_over_time(up[10m:1s])", NOW)
    assert not eng.last_stats.isolated
    assert [float(s.values[0]) for s in small.series] == [40.0, 41.0, 42.0]


async def test_deadline_kills_the_worker() -> None:
    iso = Isolator()
    with pytest.raises(QueryTimeoutError):
        await iso.run(lambda: time.sleep(600), time.monotonic() + 0.2)
    assert iso.running == 0
    # The child was killed and reaped.
    assert iso.last_pid
    with pytest.raises(ChildProcessError):
        os.waitpid(iso.last_pid, os.WNOHANG)


async def test_worker_memory_cap_is_a_query_error() -> None:
    iso = Isolator(memory_bytes=64 << 20)

    def grab() -> int:
        return int(np.ones(64 << 20).sum())  # 512 MiB

    with pytest.raises(QueryMemoryError, match="memory budget of 64 MiB"):
        await iso.run(grab, time.monotonic() + 60)
    assert await iso.run(lambda: 6 * 7, time.monotonic() + 60) == 42


async def test_concurrent_workers_are_limited() -> None:
    iso = Isolator(max_concurrency=2)
    peak = 0

    def work() -> int:
        time.sleep(0.05)
        return 1

    async def one() -> int:
        nonlocal peak
        task = asyncio.ensure_future(iso.run(work, time.monotonic() + 60))
        await asyncio.sleep(0)
        peak = max(peak, iso.running)
        return await task

    assert sum(await asyncio.gather(*(one() for _ in range(5)))) == 5
    assert peak <= 2


def test_an_isolator_serves_one_event_loop_after_another() -> None:
    iso = Isolator(max_concurrency=1)
    for _ in range(2):
        assert asyncio.run(iso.run(lambda: 7, time.monotonic() + 60)) == 7


async def test_times_past_int64_are_input_errors() -> None:
    eng = Engine(_storage(), now_ms=lambda: NOW)
    with pytest.raises(QueryInputError):
        await eng.instant_query("up", 10**19)


@pytest.mark.parametrize(
    ("path", "params", "status", "error_type", "text"),
    [
        ("/api/v1/query", {"query": "up", "time": "1e18"}, 400, "bad_data", "out of range"),
        ("/api/v1/query", {"query": "up", "time": "1e308"}, 400, "bad_data", "cannot parse"),
        ("/api/v1/query", {"query": "up", "timeout": "1e300"}, 400, "bad_data", "out of range"),
        ("/api/v1/query_range", {"query": "up", "start": "0", "end": "100", "step": "1e300"}, 400, "bad_data", "step"),
        ("/api/v1/query_range", {"query": "up", "start": "0", "end": "100", "step": "NaN"}, 400, "bad_data", "step"),
        ("/api/v1/query_range", {"query": "up", "start": "0", "end": "11001", "step": "1"}, 400, "bad_data",
         "exceeded maximum resolution of 11,000 points per timeseries"),
        ("/api/v1/query", {"query": "max_over_time(up[365d:1s])"}, 422, "execution",
         "query processing would load too many samples into memory in query execution"),
    ],
)
async def test_api_answers_bad_input_and_budgets_in_prometheus_form(path, params, status, error_type, text) -> None:
    from aiohttp import web
    from aiohttp.test_utils import TestClient, TestServer

    from query.api import add_api_routes

    st = _storage()
    app = web.Application()
    add_api_routes(app, Engine(st, now_ms=lambda: NOW), st)
    async with TestClient(TestServer(app)) as client:
        r = await client.get(path, params=params)
        body = await r.json()
    assert (r.status, body["status"], body["errorType"]) == (status, "error", error_type), body
    assert text in body["error"]


def test_estimate_weighs_python_loops_and_counts_subquery_grids() -> None:
    from query.budget import PYTHON_LOOP_WEIGHT, estimate_points
    from query.parse import parse

    def est(expr: str, steps: int = 100):
        return estimate_points(parse(expr), 0, (steps - 1) * 60_000, steps, series_of=lambda sel: (10, 1000),
                               at_ms=lambda at: None, subquery_step_ms=60_000)

    plain = est("sum(rate(x[5m]))")
    assert plain.loops == 0 and plain.fetched == 1000
    assert plain.cost == 10 * 100 + 100 + 100  # rate's series x steps, the window ends, sum's one series
    hq = est("histogram_quantile(0.9, rate(x[5m]))")
    assert hq.loops == 10 * 100 and hq.cost > PYTHON_LOOP_WEIGHT * 1000
    assert est("topk(5, x)").loops == 10 * 100
    # A subquery evaluates its expression on its own grid: 1 d at 1 s for an instant query.
    sub = est("max_over_time(x[1d:1s])", steps=1)
    assert sub.points >= 2 * 10 * 86_400


async def test_a_query_cancelled_while_reading_leaves_no_unread_error_behind() -> None:
    """A query whose caller goes away (the client closed the connection) while its selects
    wait on the store: the reads are cancelled, and asyncio has no never-retrieved exception
    of theirs to log (it did, as a traceback in the process's log)."""
    import gc

    class SlowStorage(MemoryStorage):
        async def select(self, *args, **kwargs):  # type: ignore[no-untyped-def]
            reading.set()
            await asyncio.sleep(60)
            return await super().select(*args, **kwargs)

    reading = asyncio.Event()
    st = SlowStorage()
    ts = np.arange(NOW - 600_000, NOW + 1, 15_000)
    for i in range(2):
        st.add_series(Series.of(make_labels(f"m{i}", job="j")), ts, np.ones(len(ts)))
    unread: list[dict] = []
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(lambda _loop, context: unread.append(context))
    try:
        query = asyncio.create_task(Engine(st, now_ms=lambda: NOW).instant_query("m0 + m1", NOW))
        await reading.wait()
        query.cancel()
        with pytest.raises(asyncio.CancelledError):
            await query
        del query
        gc.collect()
        await asyncio.sleep(0)
    finally:
        loop.set_exception_handler(None)
    assert unread == []
