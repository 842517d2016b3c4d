"""Resolution choice: raw within 7 days, 1m within 30 days, 1h beyond (or the coarsest the
step allows), with rate/increase/*_over_time mapped onto the stored aggregates.

MemoryStorage serves rollup rows that this test computes itself from the raw samples, so the
expected values below come from raw data by plain loops, independently of the engine.
"""

from __future__ import annotations

import re

import numpy as np
import pytest

from query.engine import Engine
from query.memory import MemoryStorage
from storage.base import HOUR_MS, MINUTE_MS, Resolution, SeriesData
from storage.model import Series, make_labels

DAY = 86_400_000
NOW = 1_750_000_000_000 // HOUR_MS * HOUR_MS
START = NOW - 40 * DAY
GAP = 5 * MINUTE_MS


def _raw() -> dict[Series, tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(7)
    ts = START + np.arange(0, 40 * DAY, MINUTE_MS, dtype=np.int64) + 13_000  # scrapes 13 s into each minute
    inc = rng.integers(0, 50, len(ts)).astype(np.float64)
    counter = np.cumsum(inc)
    counter[len(ts) // 2 :] -= counter[len(ts) // 2]  # a counter reset halfway
    gauge = np.round(rng.normal(100, 20, len(ts)), 3)
    return {
        Series.of(make_labels("c_total", s="a")): (ts, counter),
        Series.of(make_labels("g", s="a")): (ts, gauge),
    }


def _rollup(ts: np.ndarray, vals: np.ndarray, step: int, until: int) -> dict[str, np.ndarray]:
    """Bucket aggregates by plain loops: the reference the engine's results are checked against."""
    buckets: dict[int, dict[str, float]] = {}
    prev_t = prev_v = None
    for t, v in zip(ts.tolist(), vals.tolist(), strict=True):
        if t >= until:
            break
        b = t // step * step
        row = buckets.setdefault(b, {"count": 0, "sum": 0.0, "min": v, "max": v, "last": v, "increase": 0.0})
        row["count"] += 1
        row["sum"] += v
        row["min"] = min(row["min"], v)
        row["max"] = max(row["max"], v)
        row["last"] = v
        if prev_t is not None and t - prev_t <= GAP:
            row["increase"] += v - prev_v if v >= prev_v else v
        prev_t, prev_v = t, v
    keys = sorted(buckets)
    out = {k: np.array([buckets[b][k] for b in keys], dtype=np.float64) for k in ("count", "sum", "min", "max", "last", "increase")}
    out["ts"] = np.array(keys, dtype=np.int64)
    return out


def _increase_between(ts: np.ndarray, vals: np.ndarray, lo: int, hi: int) -> float:
    """Reset-aware increase of sample pairs whose later sample lies in [lo, hi)."""
    j = np.nonzero((ts[1:] >= lo) & (ts[1:] < hi) & (np.diff(ts) <= GAP))[0] + 1
    total = 0.0
    for k in j.tolist():
        total += vals[k] - vals[k - 1] if vals[k] >= vals[k - 1] else vals[k]
    return total


@pytest.fixture(scope="module")
def data() -> tuple[MemoryStorage, dict]:
    raw = _raw()
    st = MemoryStorage()
    for s, (ts, vals) in raw.items():
        st.add_series(s, ts, vals)
        for res in (Resolution.MINUTE, Resolution.HOUR):
            # The rollup job lags: no rows for the last hour.
            r = _rollup(ts, vals, res.step_ms, NOW - HOUR_MS)
            st.put_rollup(SeriesData(s, r["ts"], r["last"], res, {k: r[k] for k in r if k != "ts"}))
    return st, {s.metric: v for s, v in raw.items()}


async def test_one_hour_rows_beyond_30_days(data) -> None:
    st, raw = data
    eng = Engine(st, now_ms=lambda: NOW)
    st.select_log.clear()
    lo, hi = NOW - 39 * DAY, NOW - 38 * DAY
    res = await eng.range_query("rate(c_total[1h])", lo, hi, HOUR_MS)
    assert {r for r, _, _ in st.select_log} == {"1h"}
    ts, vals = raw["c_total"]
    got = res.series[0]
    assert len(got.timestamps) == 25
    for t, v in zip(got.timestamps.tolist(), got.values.tolist(), strict=True):
        assert v == pytest.approx(_increase_between(ts, vals, t - HOUR_MS, t) / 3600, rel=1e-12)
    # A 1-year panel of rate(x[5m]) reads the same 1h rows; windows widen to the bucket.
    st.select_log.clear()
    res5 = await eng.range_query("increase(c_total[5m])", lo, hi, HOUR_MS)
    assert {r for r, _, _ in st.select_log} == {"1h"}
    np.testing.assert_allclose(res5.series[0].values, got.values * 3600, rtol=1e-12)
    # Plain selectors read the bucket's last value.
    resg = await eng.range_query("g", lo, hi, HOUR_MS)
    gts, gvals = raw["g"]
    for t, v in zip(resg.series[0].timestamps.tolist(), resg.series[0].values.tolist(), strict=True):
        assert v == gvals[np.searchsorted(gts, t) - 1]


async def test_minute_rows_within_30_days(data) -> None:
    st, raw = data
    eng = Engine(st, now_ms=lambda: NOW)
    lo, hi = NOW - 10 * DAY, NOW - 10 * DAY + 6 * HOUR_MS
    st.select_log.clear()
    avg = await eng.range_query("avg_over_time(g[5m])", lo, hi, 5 * MINUTE_MS)
    mx = await eng.range_query("max_over_time(g[5m])", lo, hi, 5 * MINUTE_MS)
    cnt = await eng.range_query("count_over_time(g[5m])", lo, hi, 5 * MINUTE_MS)
    assert {r for r, _, _ in st.select_log} == {"1m"}
    ts, vals = raw["g"]
    for k, t in enumerate(avg.series[0].timestamps.tolist()):
        window = vals[(ts >= t - 5 * MINUTE_MS) & (ts < t)]
        assert avg.series[0].values[k] == pytest.approx(window.mean(), rel=1e-12)
        assert mx.series[0].values[k] == window.max()
        assert cnt.series[0].values[k] == len(window) == 5


async def test_raw_within_7_days_and_for_fine_steps(data) -> None:
    st, raw = data
    eng = Engine(st, now_ms=lambda: NOW)
    st.select_log.clear()
    await eng.instant_query("rate(c_total[5m])", NOW - 2 * DAY)
    await eng.range_query("rate(c_total[5m])", NOW - 3 * HOUR_MS, NOW, 15_000)
    assert {r for r, _, _ in st.select_log} == {"raw"}
    # Without downsampling every read is raw, however old.
    st.select_log.clear()
    await Engine(st, now_ms=lambda: NOW, downsample=False).range_query("rate(c_total[1h])", START, NOW, HOUR_MS)
    assert {r for r, _, _ in st.select_log} == {"raw"}


async def test_recent_buckets_come_from_raw(data) -> None:
    """Within raw retention an exact rollup answer (sum_over_time over whole buckets: every
    time ends a minute, t = hh:mm:59.999) reads 1m rows; the last hour (not rolled up yet) is
    built from raw. The answers equal the raw ones."""
    st, raw = data
    eng = Engine(st, now_ms=lambda: NOW)
    st.select_log.clear()
    res = await eng.range_query("sum_over_time(c_total[5m])", NOW - DAY - 1, NOW - 1, MINUTE_MS)
    assert "1m" in {r for r, _, _ in st.select_log}
    assert res.warnings == ["PromQL info: sum_over_time() answered exactly from 1m rollups (whole buckets)"]
    got = res.series[0]
    assert got.timestamps[-1] == NOW - 1 and len(got.timestamps) == 1441
    ts, vals = raw["c_total"]
    for t, v in zip(got.timestamps.tolist(), got.values.tolist(), strict=True):
        assert v == vals[(ts > t - 5 * MINUTE_MS) & (ts <= t)].sum()


async def test_inexact_rollup_answers_read_raw_within_retention(data) -> None:
    """increase() and sum_over_time at times inside a bucket (windows not whole buckets) read
    raw samples."""
    st, raw = data
    eng = Engine(st, now_ms=lambda: NOW)
    ref = Engine(st, now_ms=lambda: NOW, downsample=False)
    for expr, start in (("increase(c_total[5m])", NOW - DAY + 30_000), ("sum_over_time(c_total[5m])", NOW - DAY + 30_000)):
        st.select_log.clear()
        res = await eng.range_query(expr, start, NOW, MINUTE_MS)
        assert {r for r, _, _ in st.select_log} == {"raw"} and not res.warnings
        want = await ref.range_query(expr, start, NOW, MINUTE_MS)
        np.testing.assert_array_equal(res.series[0].values, want.series[0].values)


async def test_falls_back_to_raw_without_rollups() -> None:
    st = MemoryStorage()
    for s, (ts, vals) in _raw().items():
        st.add_series(s, ts, vals)
    eng = Engine(st, now_ms=lambda: NOW)
    res = await eng.range_query("rate(c_total[1h])", NOW - 39 * DAY, NOW - 38 * DAY, HOUR_MS)
    assert len(res.series) == 1 and len(res.series[0].values) == 25
    assert st.select_log[-1][0] == "raw"


def test_bucketize_matches_rollup_job() -> None:
    """The engine's vectorised raw->bucket conversion (for buckets the rollup job has not
    written yet) gives the rollup job's rows."""
    from query.engine import bucketize
    from storage.model import STALE_NAN
    from storage.rollup import rollup_raw

    rng = np.random.default_rng(0)
    data = []
    for i in range(30):
        ts = np.sort(rng.choice(np.arange(0, HOUR_MS, 1000), 300, replace=False)).astype(np.int64)
        v = np.cumsum(rng.random(300))
        v[150:] -= 50
        v[rng.random(300) < 0.05] = np.nan
        v[rng.random(300) < 0.03] = STALE_NAN
        data.append(SeriesData(Series.of(make_labels("x", i=str(i))), ts, v))
    out = bucketize(data, 10 * MINUTE_MS, 50 * MINUTE_MS + 1, MINUTE_MS)
    assert len(out) == 30
    for d, bucket_ts, cols in out:
        ref = rollup_raw(d.timestamps, d.values, 10 * MINUTE_MS, 50 * MINUTE_MS + 1, MINUTE_MS)
        np.testing.assert_array_equal(ref.timestamps, bucket_ts)
        for name, col in ref.columns().items():
            np.testing.assert_allclose(cols[name], col, rtol=1e-12, equal_nan=True)


async def test_rollup_gaps_leave_steps_empty() -> None:
    """A series missing for a while (gap in its rows) has no value for windows in the gap."""
    st = MemoryStorage()
    s = Series.of(make_labels("c_total", s="gap"))
    t0 = NOW - 20 * DAY
    buckets = t0 + np.arange(120, dtype=np.int64) * MINUTE_MS
    keep = (buckets < t0 + 30 * MINUTE_MS) | (buckets >= t0 + 60 * MINUTE_MS)
    b = buckets[keep]
    cols = {k: np.ones(len(b)) for k in ("count", "sum", "min", "max", "last", "increase")}
    st.put_rollup(SeriesData(s, b, cols["last"], Resolution.MINUTE, cols))
    eng = Engine(st, now_ms=lambda: NOW)
    res = await eng.range_query("increase(c_total[5m])", t0 + 10 * MINUTE_MS, t0 + 100 * MINUTE_MS, MINUTE_MS)
    got = dict(zip(res.series[0].timestamps.tolist(), res.series[0].values.tolist(), strict=True))
    assert got[t0 + 30 * MINUTE_MS] == 5  # buckets 25..29
    assert t0 + 40 * MINUTE_MS not in got  # window 35..39 falls in the gap
    assert got[t0 + 63 * MINUTE_MS] == 3  # buckets 60..62
    assert got[t0 + 100 * MINUTE_MS] == 5


async def test_max_source_resolution_over_http(data) -> None:
    """``max_source_resolution`` on /api/v1/query and query_range (with and without the range
    cache): raw, 1m and 1h force a resolution, approximations come with a warning naming the
    function, a bad value is a 400 in Prometheus's error format."""
    import aiohttp
    from aiohttp import web

    from query.api import add_api_routes
    from query.cache import RangeQueryCache

    st, raw = data
    eng = Engine(st, now_ms=lambda: NOW)
    for cache in (None, RangeQueryCache(eng, now_ms=lambda: NOW)):
        app = web.Application()
        add_api_routes(app, eng, st, cache) if cache is not None else add_api_routes(app, eng, st)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        url = f"http://127.0.0.1:{port}/api/v1"
        rng = {"start": str((NOW - 2 * HOUR_MS) / 1000), "end": str(NOW / 1000), "step": "60"}
        try:
            async with aiohttp.ClientSession() as s:
                async def get(path: str, base: str = url, **params: str) -> tuple[int, dict]:
                    async with s.get(base + path, params=params) as r:
                        return r.status, await r.json()

                st.select_log.clear()
                status, body = await get("/query_range", query="irate(c_total[5m])", **rng)
                assert status == 200 and "warnings" not in body and {r for r, _, _ in st.select_log} == {"raw"}
                for source in ("1m", "1h"):
                    st.select_log.clear()
                    status, body = await get("/query_range", query="irate(c_total[5m])", max_source_resolution=source, **rng)
                    assert status == 200 and body["data"]["result"], body
                    assert source in {r for r, _, _ in st.select_log}
                    assert any("irate()" in w and f"{source} rollups" in w for w in body["warnings"]), body
                status, body = await get(
                    "/query", query="g", time=str((NOW - 20 * DAY) / 1000), max_source_resolution="raw"
                )
                assert status == 200 and body["data"]["result"] and "raw samples are kept" in body["warnings"][0]
                status, body = await get("/query", query="g", time=str((NOW - 20 * DAY) / 1000))
                assert "plain selectors" in body["warnings"][0] and body["data"]["result"]
                # An exact rollup answer says so in Prometheus 3's "infos".
                aligned = {"start": str((NOW - 2 * HOUR_MS - 1) / 1000), "end": str((NOW - 1) / 1000), "step": "60"}
                status, body = await get("/query_range", query="sum_over_time(c_total[5m])", **aligned)
                assert status == 200 and "warnings" not in body, body
                assert body["infos"] == ["PromQL info: sum_over_time() answered exactly from 1m rollups (whole buckets)"]
                for path in ("/query", "/query_range"):
                    status, body = await get(path, query="g", max_source_resolution="5m", **rng)
                    assert status == 400 and body["errorType"] == "bad_data"
                    assert "max_source_resolution" in body["error"]
        finally:
            await runner.cleanup()


def test_pages_keep_max_source_resolution() -> None:
    from web.timerange import parse_time_range

    tr = parse_time_range({"range": "24h", "max_source_resolution": "1h"}, now_s=NOW / 1000)
    assert tr.source == "1h" and tr.query_params()["max_source_resolution"] == "1h"
    assert tr.preset_params("7d")["max_source_resolution"] == "1h"
    bad = parse_time_range({"range": "24h", "max_source_resolution": "2m"}, now_s=NOW / 1000)
    assert bad.source == "auto" and "max_source_resolution" not in bad.query_params() and bad.errors


async def test_query_page_passes_max_source_resolution(data) -> None:
    """The query page's ``max_source_resolution`` reaches the engine (its warning is shown),
    the picker shows the choice, and links keep it; without it the page reads raw samples."""
    from aiohttp.test_utils import TestClient, TestServer

    from web.app import create_app

    st, raw = data
    eng = Engine(st, now_ms=lambda: NOW)

    async def nothing():
        return []

    client = TestClient(TestServer(create_app(engine=eng, pools_provider=nothing, targets_provider=nothing)))
    await client.start_server()
    window = {"range": "custom", "from": str((NOW - 6 * HOUR_MS) // 1000), "to": str(NOW // 1000)}
    try:
        st.select_log.clear()
        resp = await client.get("/query", params={"expr": "irate(c_total[5m])", **window, "max_source_resolution": "1m"})
        body = await resp.text()
        assert resp.status == 200 and "1m" in {r for r, _, _ in st.select_log}
        assert "irate() answered from 1m rollups" in body
        # an answer with a caveat is a warning beside the chart, not an error in its place
        assert re.search(r'<p class="warning"[^>]*>[^<]*irate\(\) answered from 1m rollups', body)
        assert not re.findall(r'<p class="error"[^>]*>([^<]*)</p>', body) and "<svg" in body
        assert '<option value="1m" selected>' in body and 'name="max_source_resolution" value="1m"' in body
        st.select_log.clear()
        resp = await client.get("/query", params={"expr": "irate(c_total[5m])", **window})
        body = await resp.text()
        assert {r for r, _, _ in st.select_log} == {"raw"} and "answered from" not in body
    finally:
        await client.close()


async def test_dashboard_panel_shows_an_approximate_answer_as_a_warning(data, tmp_path) -> None:
    """A panel answered from rollups with a caveat draws its chart and says the caveat as a
    warning; a panel whose query fails says so as an error."""
    from aiohttp.test_utils import TestClient, TestServer

    from web.app import create_app

    st, _ = data
    (tmp_path / "d.yaml").write_text(
        "title: D\npanels:\n"
        "- title: Rate\n  expr: 'irate(c_total[5m])'\n"
        "- title: Broken\n  expr: 'c_total / on() group_left() {s=\"a\"}'\n"  # two series on the one side"
    )

    async def nothing():
        return []

    app = create_app(engine=Engine(st, now_ms=lambda: NOW), pools_provider=nothing, targets_provider=nothing,
                     dashboards_dirs=[tmp_path])
    client = TestClient(TestServer(app))
    await client.start_server()
    window = {"range": "custom", "from": str((NOW - 6 * HOUR_MS) // 1000), "to": str(NOW // 1000),
              "max_source_resolution": "1m"}
    try:
        resp = await client.get("/d/d", params=window)
        body = await resp.text()
    finally:
        await client.close()
    assert resp.status == 200, body
    panels = dict(re.findall(r"<h2>([^<]+)</h2>(.*?)</section>", body, re.S))
    assert set(panels) == {"Rate", "Broken"}, body
    assert re.search(r'<p class="warning">[^<]*irate\(\) answered from 1m rollups', panels["Rate"])
    assert 'class="error"' not in panels["Rate"] and '<path class="line"' in panels["Rate"]
    assert re.search(r'<p class="error">[^<]*', panels["Broken"]) and 'class="warning"' not in panels["Broken"]


async def test_steps_inside_closed_hours_read_minutes_and_raw() -> None:
    """Issue #17: over 1h rows beyond raw retention, a step inside a closed hour holds that
    hour's samples up to it: the minutes whole by then (from the 1m rows), and while raw
    samples are kept the step's own minute too (cut at the step); a series without 1m rows
    keeps the whole hours (its hour rows, never lost)."""
    from query.engine import raw_kept_from

    (g, (ts, vals)) = next((s, v) for s, v in _raw().items() if s.metric == "g")
    g2 = Series.of(make_labels("g2", s="b"))
    st = MemoryStorage()
    st.add_series(g, ts, vals)
    for res in (Resolution.MINUTE, Resolution.HOUR):
        r = _rollup(ts, vals, res.step_ms, NOW - HOUR_MS)
        agg = {k: r[k] for k in r if k != "ts"}
        st.put_rollup(SeriesData(g, r["ts"], r["last"], res, agg))
        if res is Resolution.HOUR:  # (no raw samples, no 1m rows: the hours alone)
            st.put_rollup(SeriesData(g2, r["ts"], r["last"], res, agg))
    eng = Engine(st, now_ms=lambda: NOW)
    start = NOW - 8 * DAY + 24 * MINUTE_MS + 30_000  # scrapes 13 s into each minute: one 17 s before each step
    res = await eng.range_query('count_over_time({__name__=~"g2?"}[40d])', start, start + 2 * DAY, HOUR_MS)
    assert res.warnings and "1h rollups" in res.warnings[0]
    times = np.arange(start, start + 2 * DAY + 1, HOUR_MS)
    kept = raw_kept_from(NOW)
    assert times[0] < kept < times[-1]
    upto = np.where(times >= kept, times + 1, times // MINUTE_MS * MINUTE_MS)  # (the step's minute from raw)
    want = {"a": np.searchsorted(ts, upto), "b": np.searchsorted(ts, times // HOUR_MS * HOUR_MS)}
    got = {s.labels["s"]: s.values for s in res.series}
    assert got.keys() == want.keys()
    for name, w in want.items():
        np.testing.assert_array_equal(got[name], w.astype(np.float64), err_msg=name)
