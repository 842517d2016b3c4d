"""Range-query cache: reuse across refreshes (counted in storage selects) and results equal
to uncached evaluation."""

from __future__ import annotations

import numpy as np
import pytest

from query.cache import RangeQueryCache
from query.engine import Engine
from query.memory import MemoryStorage
from query.resolution import SourceResolution
from storage.base import Resolution
from storage.model import Series, make_labels

MIN = 60_000
HOUR = 3_600_000
NOW = 1_750_000_000_000 // HOUR * HOUR


class Clock:
    def __init__(self, now: int) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now


def _storage(until: int) -> MemoryStorage:
    st = MemoryStorage()
    rng = np.random.default_rng(3)
    ts = np.arange(NOW - 26 * HOUR, until + 1, 15_000, dtype=np.int64)
    for h in range(4):
        for mode in ("idle", "user"):
            s = Series.of(make_labels("cpu_total", host=f"h{h}", mode=mode))
            vals = np.cumsum(rng.random(len(ts)) * 15)
            if h == 3:  # one series that disappears for an hour
                gone = (ts > NOW - 10 * HOUR) & (ts < NOW - 9 * HOUR)
                st.add_series(s, ts[~gone], vals[~gone])
            else:
                st.add_series(s, ts, vals)
    return st


def _same(a, b, rtol: float = 0.0) -> None:
    assert a.type == b.type == "matrix"
    assert [s.labels for s in a.series] == [s.labels for s in b.series]
    for x, y in zip(a.series, b.series, strict=True):
        np.testing.assert_array_equal(x.timestamps, y.timestamps)
        if rtol:
            np.testing.assert_allclose(x.values, y.values, rtol=rtol, atol=0)
        else:
            np.testing.assert_array_equal(x.values, y.values)


EXPRS = [
    "sum by (mode) (rate(cpu_total[5m]))",
    "rate(cpu_total{host='h3'}[5m])",
    "topk(2, rate(cpu_total[5m]))",
    "max_over_time(cpu_total[1h:5m])",
    "cpu_total offset 30m",
    "absent(cpu_total{host='h3'})",
    "count(cpu_total) + 1",
]


@pytest.mark.parametrize("expr", EXPRS)
async def test_cached_equals_uncached(expr: str) -> None:
    clock = Clock(NOW)
    st = _storage(NOW)
    eng = Engine(st, now_ms=clock)
    cache = RangeQueryCache(eng, now_ms=clock)
    for shift in (0, 1, 2, 7, 61):  # dashboard refreshes, a minute apart and later
        clock.now = NOW + shift * MIN
        st.add_series(st.all_series()[0], np.array([clock.now]), np.array([1e9]))
        start, end = clock.now - 24 * HOUR, clock.now
        _same(await cache.range_query(expr, start, end, MIN), await eng.range_query(expr, start, end, MIN))
    assert cache.stats.hits > 0


async def test_refresh_reuses_chunks() -> None:
    clock = Clock(NOW)
    st = _storage(NOW)
    eng = Engine(st, now_ms=clock, downsample=False)
    cache = RangeQueryCache(eng, now_ms=clock)
    q = "sum by (mode) (rate(cpu_total[5m]))"
    await cache.range_query(q, NOW - 24 * HOUR, NOW, MIN)
    first = st.selected_samples
    chunks = cache.stats.misses
    assert st.select_calls == 1 and chunks == len(range((NOW - 24 * HOUR) // (32 * MIN), NOW // (32 * MIN) + 1))
    # Refresh one minute later: every chunk ending more than 5 minutes ago comes from the
    # cache; only the chunk(s) reaching into the recent past are recomputed.
    clock.now = NOW + MIN
    st.select_calls = st.selected_samples = 0
    res = await cache.range_query(q, NOW + MIN - 24 * HOUR, NOW + MIN, MIN)
    assert st.select_calls == 1
    assert st.selected_samples < first / 10
    assert cache.stats.hits >= chunks - 2
    assert res.series[0].timestamps[0] == NOW + MIN - 24 * HOUR and len(res.series[0].timestamps) == 1441
    # A window entirely in the past is served without touching storage.
    st.select_calls = 0
    await cache.range_query(q, NOW - 20 * HOUR, NOW - 10 * HOUR - MIN, MIN)
    assert st.select_calls == 0


async def test_recent_query_reads_only_its_range() -> None:
    """A query of the last minutes (nothing settled) computes from its own start, not from
    its first chunk's (32 steps of 5 s: up to 155 s earlier), and answers as uncached."""
    clock = Clock(NOW)
    st = _storage(NOW)
    eng = Engine(st, now_ms=clock)
    cache = RangeQueryCache(eng, now_ms=clock)
    q = "sum by (mode) (rate(cpu_total[1m]))"
    start, end, step = NOW - 2 * MIN, NOW, 5_000
    assert (start - start % step) % (32 * step) != 0  # (the first chunk starts before the query)
    want = await eng.range_query(q, start, end, step)
    st.selected_samples = 0
    await eng.range_query(q, start, end, step)
    alone = st.selected_samples
    st.selected_samples = 0
    _same(await cache.range_query(q, start, end, step), want)
    assert st.selected_samples == alone
    assert len(cache) == 0  # (nothing of it settled: nothing kept)


async def test_range_dependent_queries_bypass() -> None:
    clock = Clock(NOW)
    st = _storage(NOW)
    eng = Engine(st, now_ms=clock)
    cache = RangeQueryCache(eng, now_ms=clock)
    for _ in range(2):
        res = await cache.range_query("cpu_total @ start()", NOW - 2 * HOUR, NOW, MIN)
        _same(res, await eng.range_query("cpu_total @ start()", NOW - 2 * HOUR, NOW, MIN))
    assert cache.stats.bypassed == 2 and len(cache) == 0


async def test_eviction_bounds_memory() -> None:
    clock = Clock(NOW)
    st = _storage(NOW)
    eng = Engine(st, now_ms=clock)
    cache = RangeQueryCache(eng, now_ms=clock, max_points=2000)
    await cache.range_query("cpu_total", NOW - 24 * HOUR, NOW, MIN)
    assert cache._points <= 2000 and cache.stats.evicted > 0


DAY = 24 * HOUR


def _rollup_store(now: int) -> MemoryStorage:
    """40 days of counters (2-minute samples, 15 s for the last two days; one reset, one gap)
    with 1m and 1h rows written by the rollup job's own functions up to an hour ago."""
    st = MemoryStorage()
    rng = np.random.default_rng(11)
    ts = np.concatenate(
        [
            np.arange(now - 40 * DAY, now - 2 * DAY, 120_000, dtype=np.int64),
            np.arange(now - 2 * DAY, now + 1, 15_000, dtype=np.int64),
        ]
    )
    for h in range(3):
        for mode in ("idle", "user"):
            s = Series.of(make_labels("cpu_total", host=f"h{h}", mode=mode))
            vals = np.cumsum(rng.random(len(ts)) * 7.3)
            if h == 1:
                vals[len(ts) // 3 :] -= vals[len(ts) // 3]  # a counter reset
            keep = ~((ts > now - 3 * HOUR) & (ts < now - 2 * HOUR)) if h == 2 else slice(None)
            st.add_series(s, ts[keep], vals[keep])
    _run_rollup_job(st, now - HOUR)
    return st


def _run_rollup_job(st: MemoryStorage, until: int) -> None:
    st.build_rollups(Resolution.MINUTE, until // MIN * MIN)
    st.build_rollups(Resolution.HOUR, until // HOUR * HOUR)


@pytest.mark.parametrize(
    ("window", "step", "resolution", "source"),
    # 35 d at 10 m: 1h rows by the age of the start while refreshes alone would read 1m rows.
    # 24 h: raw samples (auto: rollups do not answer rate() exactly), or 1m rows when asked.
    [
        (DAY, MIN, "1m", "1m"), (DAY, MIN, "raw", "auto"), (30 * DAY, HOUR, "1h", "auto"),
        (39 * DAY, 8 * HOUR, "1h", "auto"), (35 * DAY, 10 * MIN, "1h", "auto"),
    ],
)
async def test_refresh_after_new_samples_equals_uncached(window: int, step: int, resolution: str, source: str) -> None:
    """Dashboard refreshes a minute apart while samples keep arriving and the rollup job
    catches up: every cached answer equals an uncached evaluation at that moment, on the 1m
    and 1h rollup paths (stored rows, plus the newest buckets built from raw).

    Equal up to 1e-12 relative: the engine sums a rollup window from prefix sums over the
    whole query range, so the last bits of a step's value depend on where the query starts
    (two uncached queries over different ranges differ the same way). A wrong bucket, a
    missing tail or a stale chunk would be off by far more. Over 1h rows, the hours built
    from raw samples and the open hour's minutes come from one raw read (``_EdgeRead``)."""
    clock = Clock(NOW)
    st = _rollup_store(NOW)
    eng = Engine(st, now_ms=clock)
    cache = RangeQueryCache(eng, now_ms=clock)
    expr = f"sum by (mode) (rate(cpu_total[{max(300, step // 1000)}s]))"
    rng = np.random.default_rng(2)
    series = st.all_series()
    last = {s.id: float(st._series[s.id].arrays()[1][-1]) for s in series}
    refreshed = 0
    written = NOW
    raw_reads: list[int] = []
    for minute in range(0, 75):
        clock.now = NOW + minute * MIN
        # Scrapes land in storage 20-40 s after their timestamp: the newest steps of each
        # answer lack samples that arrive before the next refresh.
        landed = clock.now - 20_000 - 20_000 * (minute % 2)
        for t in range(written + 15_000, landed + 1, 15_000):
            for s in series:
                last[s.id] += float(rng.random() * 7.3)
                st.add_sample(s, t, last[s.id])
            written = t
        if minute in (20, 61):  # the rollup job writes the next window's rows
            _run_rollup_job(st, clock.now - 10 * MIN)
        end = clock.now // step * step
        st.select_log.clear()
        got = await cache.range_query(expr, end - window, end, step, SourceResolution(source))
        if minute == 0:
            assert resolution in {r for r, _, _ in st.select_log}
        else:
            refreshed += bool(st.select_log)
        if resolution == "1h" and minute:
            raw_reads.append(sum(r == "raw" for r, _, _ in st.select_log))
        # From scratch: a new engine with no memo of the rows it built from raw samples.
        want = await Engine(st, now_ms=clock, tail_memo=False).range_query(
            expr, end - window, end, step, source=SourceResolution(source)
        )
        _same(got, want, rtol=1e-12)
        assert len(got.series) == 2 and len(got.series[0].timestamps) > window // step // 2
    assert cache.stats.hits > 0 and refreshed > 0
    assert eng.tail_memo is not None and (eng.tail_memo.hits > 0 or resolution == "raw")
    # (each read apart: 2 or 3 raw reads a refresh; a refresh that computes a step the last
    # one did not may read the minutes before the open hour for it)
    assert resolution != "1h" or sum(n > 1 for n in raw_reads) <= len(raw_reads) // 10, raw_reads


@pytest.mark.parametrize("expr", [*EXPRS, "cpu_total @ start()", "vector(1) * 0.1", "cpu_total * 1e20 / 3"])
async def test_json_answer_equals_formatted_result(expr: str) -> None:
    """``range_query_json`` (chunks kept as JSON text) gives the body the API would build
    from the uncached result, across refreshes and for windows cutting chunks anywhere."""
    import json

    from query.api import result_json

    clock = Clock(NOW)
    st = _storage(NOW)
    eng = Engine(st, now_ms=clock)
    cache = RangeQueryCache(eng, now_ms=clock)
    for shift, (start, end, step) in enumerate(
        [
            (NOW - 6 * HOUR, NOW, MIN),
            (NOW - 6 * HOUR + 7 * MIN, NOW - 13 * MIN, MIN),
            (NOW - 5 * HOUR, NOW + MIN, MIN),
            (NOW - 2 * HOUR - 17_500, NOW - 17_500, 15_000),
        ]
    ):
        clock.now = NOW + shift * MIN
        got = json.loads(await cache.range_query_json(expr, start, end, step))
        res = await eng.range_query(expr, start, end, step)
        want = {"status": "success", "data": result_json(res)}
        if res.warnings:
            want["warnings"] = res.warnings
        assert got == json.loads(json.dumps(want))


def test_rows_built_from_raw_equal_the_rollup_jobs_bit_for_bit() -> None:
    """What refreshes build from raw samples (minute rows, coarser buckets added up from
    them, in one go or folded in over several refreshes) equals the rollup job's rows bit
    for bit, so cached parts built from raw and uncached reads of stored rows agree."""
    from query.rollup_tail import bucketize, combine, concat, fine_rows
    from storage.base import SeriesData
    from storage.model import STALE_NAN
    from storage.rollup import rollup_raw, rollup_rollup

    rng = np.random.default_rng(8)
    for trial in range(60):
        data = []
        for i in range(int(rng.integers(1, 8))):
            n = int(rng.integers(0, 400))
            ts = np.sort(rng.choice(np.arange(0, 3 * HOUR, 1000), n, replace=False)).astype(np.int64)
            v = np.cumsum(rng.random(n) * 3.7)
            if n:
                v[rng.random(n) < 0.05] -= 50  # resets
            if trial % 2:
                v[rng.random(n) < 0.05] = np.nan
                v[rng.random(n) < 0.05] = STALE_NAN
                v[rng.random(n) < 0.02] = np.inf
            data.append(SeriesData(Series.of(make_labels("x", i=str(i))), ts, v))
        step = (MIN, 5 * MIN, HOUR)[trial % 3]
        start = int(rng.integers(0, 60)) * MIN // step * step
        end = start + int(rng.integers(1, 150)) * MIN + int(rng.integers(0, 2))
        split = start + int(rng.integers(0, (end - start) // MIN + 1)) * MIN  # a refresh boundary
        got = {d.series.id: (ts, cols) for d, ts, cols in bucketize(data, start, end, step)}
        # As a refresh folds minutes into kept rows whose last bucket holds only its first minutes.
        kept = combine(fine_rows(data, start, split, MIN), start, step)
        folded = combine(concat(kept, fine_rows(data, split, end, MIN)), start, step)
        bounds = folded.bounds()
        for k, s in enumerate(folded.series):
            a, z = bounds[k], bounds[k + 1]
            if z == a:
                assert s.id not in got
                continue
            np.testing.assert_array_equal(folded.ts[a:z], got[s.id][0])
            for name, col in folded.cols.items():
                assert col[a:z].tobytes() == got[s.id][1][name].tobytes() or name in ("min", "max")
        for d in data:
            ref = rollup_raw(d.timestamps, d.values, start, end, MIN)
            ref = rollup_rollup(ref, step) if step != MIN else ref
            if not len(ref):
                assert d.series.id not in got
                continue
            ts, cols = got[d.series.id]
            np.testing.assert_array_equal(ts, ref.timestamps)
            for name, col in ref.columns().items():
                if name in ("min", "max"):  # equal; -0.0 and 0.0 may trade places
                    np.testing.assert_array_equal(cols[name], col)
                else:
                    assert cols[name].tobytes() == col.tobytes(), name


async def test_api_range_answers_with_and_without_cache_agree() -> None:
    """Over real HTTP: /api/v1/query_range served from the cache's JSON text answers what the
    uncached handler answers (body, status, content type), errors included."""
    import aiohttp
    from aiohttp import web

    from query.api import add_api_routes

    clock = Clock(NOW)
    st = _storage(NOW)
    eng = Engine(st, now_ms=clock)
    runners, urls = [], []
    for cache in (None, RangeQueryCache(eng, now_ms=clock)):
        app = web.Application()
        add_api_routes(app, eng, st, cache)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        runners.append(runner)
        urls.append(f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}")  # type: ignore[union-attr]
    try:
        async with aiohttp.ClientSession() as http:
            queries = ["sum by (mode) (rate(cpu_total[5m]))", "cpu_total{host='h3'}", "rate(cpu_total[5m"]
            for shift, query in enumerate(queries):
                clock.now = NOW + shift * MIN
                start, end = (clock.now - 3 * HOUR) / 1000, clock.now / 1000
                params = {"query": query, "start": str(start), "end": str(end), "step": "60"}
                answers = []
                for url in urls:
                    async with http.get(f"{url}/api/v1/query_range", params=params) as resp:
                        answers.append((resp.status, resp.content_type, await resp.json()))
                assert answers[0] == answers[1]
                assert answers[0][0] == (400 if query.endswith("[5m") else 200)
    finally:
        for runner in runners:
            await runner.cleanup()


@pytest.mark.parametrize("lag", [5 * MIN, MIN])
async def test_refresh_reads_raw_from_the_kept_rows_with_counter_chain_ends(lag: int) -> None:
    """A refresh reads raw samples from where the kept rows end, not the 5-minute counter gap
    before, carrying each series' last counter sample instead; resets, NaN, stale markers and
    a series that pauses longer than the gap give the same answers as an uncached engine,
    also with a rollup lag shorter than the gap (chain ends outlive a read without samples).
    (1m rows asked for: within raw retention ``auto`` reads rate() from raw samples.)"""
    from storage.model import STALE_NAN

    clock = Clock(NOW)
    st = _rollup_store(NOW)
    eng = Engine(st, now_ms=clock, rollup_lag_ms=lag)
    cache = RangeQueryCache(eng, now_ms=clock)
    expr = "rate(cpu_total[5m])"
    rng = np.random.default_rng(5)
    series = st.all_series()
    last = {s.id: float(st._series[s.id].arrays()[1][-1]) for s in series}
    written = NOW
    spans = []
    for minute in range(0, 40):
        clock.now = NOW + minute * MIN
        for t in range(written + 15_000, clock.now - 20_000 + 1, 15_000):
            for k, s in enumerate(series):
                if k == 0 and 10 <= (t - NOW) // MIN < 17:
                    continue  # paused for 7 minutes: no counter pair across the pause
                if k == 4 and 20 <= (t - NOW) // MIN < 23:
                    continue  # paused for 3 minutes: the samples around the pause still pair
                last[s.id] += float(rng.random() * 7.3)
                v = last[s.id]
                if k == 1 and (t - NOW) // 15_000 in (41, 42, 43):
                    v = float("nan")  # NaN skips the chain, the next sample pairs with the one before
                if k == 2 and (t - NOW) // 15_000 == 80:
                    v = STALE_NAN
                if k == 3 and (t - NOW) // 15_000 == 100:
                    last[s.id] = v = 3.0  # a counter reset
                st.add_sample(s, t, v)
            written = t
        end = clock.now // MIN * MIN
        st.select_log.clear()
        got = await cache.range_query(expr, end - 2 * HOUR, end, MIN, SourceResolution.MINUTE)
        raw = [(a, b) for r, a, b in st.select_log if r == "raw"]
        if minute >= 2 and raw:
            spans.append(max(b - a for a, b in raw))
        want = await Engine(st, now_ms=clock, rollup_lag_ms=lag, tail_memo=False).range_query(
            expr, end - 2 * HOUR, end, MIN, source=SourceResolution.MINUTE
        )
        _same(got, want, rtol=1e-12)
    # Kept rows end at now - rollup lag: a refresh reads about lag + 1 minute of raw samples,
    # where reading the counter gap too would add 5 minutes.
    assert spans and max(spans) <= lag + 2 * MIN, [s / MIN for s in spans]


async def test_rows_built_from_raw_read_the_counter_gap_only_for_increase(monkeypatch: pytest.MonkeyPatch) -> None:
    """The newest buckets of a plan, built from raw samples (the rollup job 10 minutes
    behind), read the 5-minute counter gap before them only when the plan reads ``increase``
    (a bucket's first increase pairs with the sample before it): rate() served from the rate
    aggregates and max_over_time() read from where their buckets start, with the answers of
    an engine that reads the gap for every plan (``query.engine._tail_gap_ms``). Samples off
    the minute (no window edge holds one), a counter reset in the tail."""
    import query.engine as qe
    from storage.rollup import DEFAULT_MAX_GAP_MS

    clock = Clock(NOW)
    st = MemoryStorage()
    rng = np.random.default_rng(3)
    ts = np.arange(NOW - 2 * DAY + 7_000, NOW + 1, 15_000, dtype=np.int64)
    for h in range(3):
        vals = np.cumsum(rng.random(len(ts)) * 7.3)
        if h == 1:
            vals[-30:] -= vals[-30]  # a counter reset 7.5 minutes ago
        st.add_series(Series.of(make_labels("cpu_total", host=f"h{h}")), ts, vals)
    st.build_rollups(Resolution.MINUTE, NOW - 10 * MIN)
    end = NOW // MIN * MIN
    for expr, source, gap in [
        ("rate(cpu_total[5m])", SourceResolution.AUTO, 0),
        ("max_over_time(cpu_total[5m])", SourceResolution.AUTO, 0),
        ("increase(cpu_total[5m])", SourceResolution.MINUTE, DEFAULT_MAX_GAP_MS),
    ]:
        st.select_log.clear()
        got = await Engine(st, now_ms=clock).range_query(expr, end - DAY, end, MIN, source=source)
        assert {r for r, _, _ in st.select_log} == {"1m", "raw"}, expr
        assert min(a for r, a, _ in st.select_log if r == "raw") == NOW - 10 * MIN - gap, expr
        with monkeypatch.context() as m:
            m.setattr(qe, "_tail_gap_ms", lambda columns: DEFAULT_MAX_GAP_MS)
            want = await Engine(st, now_ms=clock).range_query(expr, end - DAY, end, MIN, source=source)
        assert got.series and len(got.series) == 3, expr
        _same(got, want)
    # Refreshes: the kept rows (read without the gap) and no counter chain, as an uncached engine.
    cache = RangeQueryCache(Engine(st, now_ms=clock), now_ms=clock)
    for k in range(6):
        clock.now = NOW - 8 * MIN + k * MIN
        e = clock.now // MIN * MIN
        got = await cache.range_query("rate(cpu_total[5m])", e - DAY, e, MIN, SourceResolution.AUTO)
        _same(got, await Engine(st, now_ms=clock, tail_memo=False).range_query("rate(cpu_total[5m])", e - DAY, e, MIN))


async def test_refreshes_keep_the_stored_rows_their_newest_step_reads() -> None:
    """A 1 y-like panel (8 h steps over 1h rows) recomputes its newest step each refresh: the
    stored hours of that step's window are read once and kept (``TailMemo.stored``), the open
    hour's samples, arriving meanwhile, read each time from where the kept rows built from
    raw end; every answer equals an uncached one.
    Kept longer than ``ttl_s``, they are read again: a rewrite of a closed hour (the rollup
    job's late pass) shows then. The engine alone (no range cache) keeps nothing."""
    end = (NOW // (8 * HOUR) + 2) * 8 * HOUR  # the newest step: an 8 h boundary
    clock = Clock(end)
    st = _rollup_store(end - HOUR)
    expr, window, step = "sum by (mode) (rate(cpu_total[8h]))", 39 * DAY, 8 * HOUR
    eng = Engine(st, now_ms=clock)
    cache = RangeQueryCache(eng, now_ms=clock)
    series = st.all_series()
    last = {s.id: float(st._series[s.id].arrays()[1][-1]) for s in series}
    written = end - HOUR
    hour_reads, raw_spans = [], []
    for minute in range(4):
        clock.now = end + minute * MIN + 30_000
        landed = clock.now - 20_000
        for t in range(written + 15_000, landed + 1, 15_000):
            for s in series:
                last[s.id] += 3.5
                st.add_sample(s, t, last[s.id])
            written = t
        if minute == 0:
            _run_rollup_job(st, end)  # the hours up to the newest step written
        if minute == 3:
            # A late sample in a closed hour of the newest step's window, the hour rewritten
            # (the late pass): seen once the kept rows are older than ttl_s.
            late = Series.of(make_labels("cpu_total", host="late", mode="idle"))
            st.add_series(late, np.array([end - 3 * HOUR + 7_000, end - 3 * HOUR + 22_000]), np.array([1.0, 5e6]))
            _run_rollup_job(st, end)
            assert eng.tail_memo is not None
            eng.tail_memo.ttl_s = -1.0
        st.select_log.clear()
        got = await cache.range_query(expr, end - window, end, step, SourceResolution.AUTO)
        hour_reads.append(sum(r == "1h" for r, _, _ in st.select_log))
        raw_spans.append(max(b - a for r, a, b in st.select_log if r == "raw"))
        _same(got, await Engine(st, now_ms=clock, tail_memo=False).range_query(expr, end - window, end, step), rtol=1e-12)
    # The first query reads all 39 days; the first refresh the newest step's hours, kept for
    # the next; past ttl_s read again (without keeping them: a read every refresh).
    assert hour_reads == [1, 1, 0, 1], hour_reads
    # Raw samples read from where the kept rows end (5, 4 minutes before), with the kept counter
    # chain ends, not the 5-minute counter gap before that too.
    assert max(raw_spans[1:3]) <= 5 * MIN, [x / MIN for x in raw_spans]  # (10 and 9 with the gap)
    assert got.series[0].values[-1] > 1e6 / 8 / 3600  # the late sample's increase in the newest step
    st.select_log.clear()
    await eng.range_query(expr, end - window, end, step)
    await eng.range_query(expr, end - window, end, step)
    assert sum(r == "1h" for r, _, _ in st.select_log) == 2


@pytest.mark.parametrize("behind", [MIN, 12 * MIN])
async def test_series_of_a_lagging_rollup_shard_keep_their_newest_buckets(behind: int) -> None:
    """The rollup job writes shard by shard: some series' stored rows end a fresh pass (a
    minute) or more behind the others'. Up to TAIL_SKEW_MS behind, those series get the
    missing buckets built from raw samples like everyone's newest ones: the answer equals
    one over rows that all end together."""
    clock = Clock(NOW)
    even = _rollup_store(NOW)
    lagging = _rollup_store(NOW)
    for st in (even, lagging):
        st.build_rollups(Resolution.MINUTE, NOW - 10 * MIN)
        st.build_rollups(Resolution.HOUR, NOW - HOUR)
    minutes = lagging._rollups[Resolution.MINUTE]
    for s in lagging.all_series()[::2]:  # half the series: their shard is behind
        d = minutes[s.id]
        n = int(np.searchsorted(d.timestamps, NOW - 10 * MIN - behind))
        lagging.put_rollup(
            type(d)(d.series, d.timestamps[:n], d.values[:n], d.resolution, {k: v[:n] for k, v in d.agg.items()})
        )
    for expr, window, step in [("rate(cpu_total[5m])", DAY, MIN), ("sum(increase(cpu_total[1h]))", 30 * DAY, HOUR)]:
        end = NOW // step * step
        want = await Engine(even, now_ms=clock).range_query(expr, end - window, end, step)
        got = await Engine(lagging, now_ms=clock).range_query(expr, end - window, end, step)
        _same(got, want, rtol=1e-12)
