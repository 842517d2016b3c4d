"""Web pages: render with provider data, escape hostile values, chart CPU by mode, security headers."""

from __future__ import annotations

import re
import time

import numpy as np
import pytest
from aiohttp.test_utils import TestClient, TestServer

from query.result import QueryResult, ResultSeries
from web.app import CONTENT_SECURITY_POLICY, create_app, promql_string
from web.providers import HostHealth, PoolSummary

MODES = ("idle", "system", "user", "iowait")
HOSTILE = '<script>alert("x")</script>'


class FakeEngine:
    """The engine interface the pages use; answers CPU by mode over the asked window with a gap."""

    def __init__(self, modes=MODES, fail: Exception | None = None, gap=True):
        self.modes = modes
        self.fail = fail
        self.gap = gap
        self.calls: list[tuple] = []

    async def range_query(self, expr, start_ms, end_ms, step_ms):
        self.calls.append((expr, start_ms, end_ms, step_ms))
        if self.fail:
            raise self.fail
        ts = np.arange(start_ms, end_ms + 1, step_ms, dtype=np.int64)
        series = []
        for i, mode in enumerate(self.modes):
            keep = np.ones(len(ts), dtype=bool)
            if self.gap:
                keep[len(ts) // 3 : len(ts) // 3 + 5] = False  # the agent was down for 5 steps
            series.append(ResultSeries({"mode": mode}, ts[keep], np.full(keep.sum(), 0.1 * (i + 1))))
        return QueryResult("matrix", series)

    async def instant_query(self, expr, time_ms):
        self.calls.append((expr, time_ms))
        if self.fail:
            raise self.fail
        return QueryResult("vector", [])


def pools_data(name="web", address="127.0.0.1:9100", error=""):
    return [
        {
            "name": name,
            "running": 2,
            "hosts": [
                {"address": address, "status": "ALIVE", "health": "up", "last_scrape": time.time() - 3},
                {
                    "address": "127.0.0.1:9101",
                    "status": "ALIVE",
                    "health": "down",
                    "last_error": error or "refused",
                },
            ],
            "settings": {"interval": 10},
        },
        PoolSummary("db", 1, (HostHealth("127.0.0.1:9200", health="up"),)),
    ]


def targets_data(pool="web", address="127.0.0.1:9100", error="connection refused", url=None):
    return [
        {
            "key": f"{pool}/{address}",
            "pool": pool,
            "address": address,
            "url": url or f"http://{address}/metrics",
            "health": "down",
            "last_scrape": time.time() - 12,
            "last_duration_s": 0.0123,
            "last_error": error,
            "owner": "scraper-1",
        },
        {
            "key": "db/127.0.0.1:9200",
            "pool": "db",
            "address": "127.0.0.1:9200",
            "url": "http://127.0.0.1:9200/metrics",
            "health": "up",
            "last_scrape": time.time() - 2,
            "last_duration_s": 0.004,
            "last_error": "",
            "owner": "scraper-2",
        },
    ]


async def make_client(engine=None, pools=None, targets=None) -> TestClient:
    async def pools_provider():
        if isinstance(pools, Exception):
            raise pools
        return pools if pools is not None else pools_data()

    async def targets_provider():
        return targets if targets is not None else targets_data()

    app = create_app(
        engine=engine or FakeEngine(), pools_provider=pools_provider, targets_provider=targets_provider
    )
    client = TestClient(TestServer(app))
    await client.start_server()
    return client


@pytest.fixture
async def client():
    c = await make_client()
    yield c
    await c.close()


async def get(client: TestClient, path: str, status: int = 200) -> str:
    resp = await client.get(path)
    body = await resp.text()
    assert resp.status == status, body[:500]
    return body


async def test_overview_lists_pools_and_counts(client):
    body = await get(client, "/")
    assert "<h2>Pools</h2>" in body
    assert re.search(r'<span class="num">3</span> servers running', body)
    assert re.search(r'<span class="num">1</span> targets down', body)
    assert 'href="/host/web/127.0.0.1%3A9100"' in body
    assert 'href="/pools"' in body and 'href="/targets"' in body


async def test_pools_page_shows_running_count_and_host_health(client):
    body = await get(client, "/pools")
    assert re.search(r"web <span class=\"count\"[^>]*>2 running</span>", body)
    assert re.search(r"db <span class=\"count\"[^>]*>1 running</span>", body)
    assert 'class="badge health-up">up</span>' in body
    assert 'class="badge health-down">down</span>' in body
    assert "refused" in body
    assert "3s ago" in body or "4s ago" in body


async def test_targets_page_shows_scrape_details_and_filters(client):
    body = await get(client, "/targets")
    assert "web/127.0.0.1:9100" in body and "db/127.0.0.1:9200" in body
    assert "scraper-1" in body and "scraper-2" in body
    assert "12.3 ms" in body and "connection refused" in body
    assert "12s ago" in body or "13s ago" in body
    only_db = await get(client, "/targets?pool=db")
    assert "db/127.0.0.1:9200" in only_db and "web/127.0.0.1:9100" not in only_db
    only_down = await get(client, "/targets?health=down")
    assert "web/127.0.0.1:9100" in only_down and "db/127.0.0.1:9200" not in only_down


async def test_host_page_charts_one_path_per_mode_with_a_gap():
    engine = FakeEngine()
    c = await make_client(engine)
    try:
        body = await get(c, "/host/web/127.0.0.1:9100")
    finally:
        await c.close()
    expr, start_ms, end_ms, step_ms = engine.calls[0]
    assert expr == 'sum by (mode) (rate(node_cpu_seconds_total{job="web", instance="127.0.0.1:9100"}[1m]))'
    assert end_ms - start_ms == 3600_000 and step_ms == 15_000
    svg = re.search(r"<svg.*?</svg>", body, re.S).group(0)
    lines = re.findall(r'<path class="line" d="([^"]*)"[^>]*data-name="([^"]*)"', svg)
    assert sorted(name for _, name in lines) == sorted(MODES)
    for d, _ in lines:
        assert d.count("M") == 2, "the 5 missing steps must split each line in two"
    assert svg.count("<title>") > 4 * 200  # a tooltip per point
    assert re.search(r"<title>user\n\d{4}-\d\d-\d\d \d\d:\d\d:\d\d: 0.3</title>", svg)
    assert "1h" in body and 'name="from"' in body  # the range picker


async def test_host_page_range_and_bad_parameters():
    engine = FakeEngine()
    c = await make_client(engine)
    try:
        await get(c, "/host/web/127.0.0.1:9100?range=24h&tz=Europe/Berlin")
        body = await get(c, "/host/web/127.0.0.1:9100?range=nonsense&tz=Mars/Olympus&refresh=1s")
    finally:
        await c.close()
    ranges = [call for call in engine.calls if len(call) == 4]  # (instant calls add the point at now)
    expr, start_ms, end_ms, step_ms = ranges[0]
    assert end_ms - start_ms == 86400_000 and step_ms == 600_000 and "[10m]" in expr
    assert "range: not a duration" in body and "unknown time zone" in body and "auto refresh is off" in body
    assert ranges[1][2] - ranges[1][1] == 3600_000


async def test_failing_query_and_provider_are_shown_not_500():
    class QueryError(Exception):
        pass

    c = await make_client(FakeEngine(fail=QueryError("parse error at 1:5")), pools=RuntimeError("zk down"))
    try:
        host = await get(c, "/host/web/127.0.0.1:9100")
        pools = await get(c, "/pools")
    finally:
        await c.close()
    assert "QueryError: parse error at 1:5" in host and "No CPU samples of 127.0.0.1:9100" in host
    assert "pools are unavailable: RuntimeError: zk down" in pools


async def test_hostile_values_are_escaped():
    long_error = "E" * 20000 + HOSTILE
    pools = pools_data(name=HOSTILE, address="a\"b'c<i>:1", error=long_error)
    targets = targets_data(pool=HOSTILE, address="a\"b'c<i>:1", error=long_error, url="javascript:alert(1)")
    engine = FakeEngine(modes=(HOSTILE, 'q"uote', "x" * 5000))
    c = await make_client(engine, pools=pools, targets=targets)
    try:
        bodies = [
            await get(c, "/"),
            await get(c, "/pools"),
            await get(c, "/targets"),
            await get(c, "/targets?pool=" + HOSTILE),
            await get(c, "/host/" + "%3Cscript%3Ealert(%22x%22)%3C%2Fscript%3E" + "/a%22b'c%3Ci%3E:1"),
        ]
    finally:
        await c.close()
    for body in bodies:
        assert "<script" not in body.lower()
        assert "<i>" not in body
        assert 'href="javascript:' not in body
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in bodies[1] or "&lt;script&gt;" in bodies[1]
    assert "javascript:alert(1)" in bodies[2]  # shown as text, never as a link
    # The hostile instance reached the engine as an exact PromQL string, not as query syntax.
    expr = engine.calls[0][0]
    assert promql_string("a\"b'c<i>:1") in expr
    from query.parse import parse

    parse(expr)  # still one valid expression


def test_promql_string_round_trips_through_the_parser():
    from query.parse import parse

    for value in ["plain", 'q"uote', "back\\slash", "new\nline", HOSTILE]:
        node = parse(f"up{{instance={promql_string(value)}}}")
        matchers = {m.name: m.value for m in node.matchers}
        assert matchers["instance"] == value


async def test_security_headers_everywhere(client):
    for path, status in (
        ("/", 200),
        ("/pools", 200),
        ("/targets", 200),
        ("/host/web/h:1", 200),
        ("/nope", 404),
        ("/-/healthy", 200),
        ("/static/ringmon.css", 200),
    ):
        resp = await client.get(path)
        await resp.read()
        assert resp.status == status, path
        h = resp.headers
        assert h["Content-Security-Policy"] == CONTENT_SECURITY_POLICY
        assert (
            "script-src" not in h["Content-Security-Policy"]
            and "unsafe-inline" not in h["Content-Security-Policy"]
        )
        assert "frame-ancestors 'none'" in h["Content-Security-Policy"]
        assert h["X-Content-Type-Options"] == "nosniff"
        assert h["X-Frame-Options"] == "DENY"
        assert h["Referrer-Policy"] == "same-origin"


async def test_pages_need_no_inline_script_or_style(client):
    for path in ("/", "/pools", "/targets", "/host/web/127.0.0.1:9100", "/nope"):
        resp = await client.get(path)
        body = await resp.text()
        assert "<script" not in body and "style=" not in body and "<style" not in body, path
        assert not re.search(r"<[^>]*\son[a-z]+\s*=", body), f"{path}: inline event handler"


async def test_health_and_404(client):
    assert (await get(client, "/-/healthy")).startswith("Ringmon is Healthy")
    body = await get(client, "/no/such/page", status=404)
    assert "There is no page at /no/such/page." in body and "Traceback" not in body


async def test_chosen_time_zone_is_remembered(client):
    resp = await client.get("/host/web/h:1?tz=Asia/Kolkata")
    body = await resp.text()
    assert ">IST<" in body and resp.cookies["ringmon_tz"].value == "Asia/Kolkata"
    body = await get(client, "/host/web/h:1")  # the cookie carries the zone
    assert ">IST<" in body and 'name="tz" value="Asia/Kolkata"' in body
    body = await get(client, "/host/web/h:1?tz=UTC")
    assert ">UTC<" in body


async def test_prometheus_graph_links_lead_to_the_query_page(client):
    # Alert generatorURLs use Prometheus' /graph?g0.expr=...; they must land on our query page.
    r = await client.get("/graph?g0.expr=up%20%3D%3D%200&g0.tab=1", allow_redirects=False)
    assert r.status == 302
    assert r.headers["Location"] == "/query?expr=up+%3D%3D+0"


async def test_unknown_host_or_pool_is_named_not_an_empty_chart():
    c = await make_client(engine=FakeEngine(modes=()))  # no data for anything asked
    try:
        host = await get(c, "/host/web/10.9.9.9:1", status=404)
        assert "Pool &#39;web&#39; has no host &#39;10.9.9.9:1&#39;." in host and "No CPU samples" not in host
        assert 'href="/host/web/127.0.0.1%3A9100"' in host  # the hosts it does have
        pool = await get(c, "/host/nosuch/10.9.9.9:1", status=404)
        assert "There is no pool &#39;nosuch&#39;." in pool and "pool=db" in pool
        targets = await get(c, "/targets?pool=nosuch", status=404)
        assert "There is no pool &#39;nosuch&#39; (pools: db, web)." in targets
        # A known host without samples in the range: its chart says so.
        known = await get(c, "/host/web/127.0.0.1:9100")
        assert "No CPU samples of 127.0.0.1:9100 in this range" in known
    finally:
        await c.close()


async def test_query_syntax_error_shows_the_error_and_no_chart():
    from query.engine import Engine
    from query.memory import MemoryStorage

    c = await make_client(engine=Engine(MemoryStorage()))
    try:
        body = await get(c, "/query?expr=sum(up")
        assert "parse error" in body and "error at line 1, column 4" in body
        assert "<svg" not in body and "No series" not in body and "No data" not in body
        body = await get(c, "/query?expr=up")  # valid, nothing matches: the chart says so
        assert "No series matched in this range" in body and "No series matched at this time." in body
    finally:
        await c.close()
