"""The pages over the real PromQL engine: known data charted exactly, and a real agent scraped by
the real scraper into memory, rendered by every shipped dashboard without a panel error."""

from __future__ import annotations

import asyncio
import re
import time

import numpy as np
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import CollectorRegistry

from agent.server import AgentServer
from discovery.target import ScrapeSettings, Target
from query.engine import Engine
from query.memory import MemoryStorage
from scraper.pool import ScrapePool
from storage.base import DirectWriter
from storage.model import Series, labels_from_dict
from web.app import create_app


async def client_for(engine, pools=None, targets=None) -> TestClient:
    async def pools_provider():
        return pools() if pools else []

    async def targets_provider():
        return targets() if targets else []

    app = create_app(engine=engine, pools_provider=pools_provider, targets_provider=targets_provider)
    c = TestClient(TestServer(app))
    await c.start_server()
    return c


async def test_host_chart_shows_the_stored_cpu_rates_with_a_gap():
    storage = MemoryStorage()
    now_s = int(time.time())
    ts = np.arange(now_s - 3600, now_s + 1, 15, dtype=np.int64)
    keep = (ts < now_s - 2400) | (ts > now_s - 2100)  # no samples for 5 minutes
    rates = {"user": 0.5, "system": 0.25, "idle": 1.25}
    for mode, rate in rates.items():
        labels = {
            "__name__": "node_cpu_seconds_total",
            "cpu": "0",
            "mode": mode,
            "job": "web",
            "instance": "h:9100",
        }
        storage.add_series(Series.of(labels_from_dict(labels)), ts[keep] * 1000, (ts[keep] - ts[0]) * rate)
    c = await client_for(Engine(storage))
    try:
        resp = await c.get("/host/web/h:9100")
        body = await resp.text()
    finally:
        await c.close()
    assert resp.status == 200
    svg = re.search(r"<svg.*?</svg>", body, re.S).group(0)
    paths = dict(
        (name, d) for d, name in re.findall(r'<path class="line" d="([^"]*)"[^>]*data-name="([^"]*)"', svg)
    )
    assert set(paths) == set(rates)
    assert all(d.count("M") == 2 for d in paths.values()), "the 5-minute hole must show as a gap"
    for mode, rate in rates.items():
        values = re.findall(rf"<title>{mode}\n[\d: -]+: ([^<]+)</title>", svg)
        # Away from the edges of the data every point is the stored rate; at the edges rate()
        # extrapolates over a partly covered window, so it may only be lower there.
        assert len(values) > 200 and values.count(f"{rate:g}") > 200
        assert all(float(v) <= rate + 1e-9 for v in values)


async def test_rate_chart_ends_at_now_without_a_dip():
    """A "last 24h" page evaluates its 10-minute step grid up to the last boundary at or before
    now and adds one point at now itself; no step lies in the future, where the rate window
    would be partly empty and the line would drop at the right edge."""
    storage = MemoryStorage()
    now_s = int(time.time())
    ts = np.arange(now_s - 26 * 3600, now_s + 1, 15, dtype=np.int64)
    rates = {"user": 0.5, "idle": 1.25}
    for mode, rate in rates.items():
        labels = {"__name__": "node_cpu_seconds_total", "cpu": "0", "mode": mode, "job": "web", "instance": "h:9100"}
        storage.add_series(Series.of(labels_from_dict(labels)), ts * 1000, (ts - ts[0]) * rate)
    c = await client_for(Engine(storage))
    try:
        resp = await c.get("/host/web/h:9100", params={"range": "24h"})
        body = await resp.text()
    finally:
        await c.close()
    assert resp.status == 200
    for mode, rate in rates.items():
        points = re.findall(rf"<title>{mode}\n([\d: -]+): ([^<]+)</title>", body)
        # 24 h of 10-minute steps (145 points), or 146 with the point at now between two steps.
        assert len(points) in (145, 146), len(points)
        assert [v for _, v in points] == [f"{rate:g}"] * len(points), points[-3:]
        assert len(set(t for t, _ in points)) == len(points)


async def test_real_agent_scraped_and_shown_by_every_dashboard():
    storage = MemoryStorage()
    agent = AgentServer(pool="web", synthetic_load_rps=50)
    await agent.start()
    dead = Target(pool="db", address="127.0.0.1:1", settings=ScrapeSettings(interval_s=0.5, timeout_s=0.5))
    live = Target(pool="web", address=agent.address, settings=ScrapeSettings(interval_s=0.5, timeout_s=2))
    pool = ScrapePool(DirectWriter(storage), name="test-scraper", registry=CollectorRegistry())
    try:
        await pool.sync([live, dead])
        started = time.monotonic()
        for _ in range(600):  # bounded (a busy machine's safety limit); ~3 s gives rate() several samples
            await asyncio.sleep(0.1)
            health = {h.pool: h for h in pool.health()}
            scraped = len(health) == 2 and all(h.last_scrape for h in health.values())
            # (the live target up at its latest scrape: a scrape over its timeout on a loaded
            # machine leaves it down until the next one)
            if scraped and health["web"].health == "up" and time.monotonic() - started > 3:
                break

        def targets():
            return [dict(h.to_dict(), owner="test-scraper") for h in pool.health()]

        c = await client_for(Engine(storage), targets=targets)
        try:
            targets_page = await (await c.get("/targets")).text()
            host = await (await c.get(f"/host/web/{agent.address}")).text()
            pages = {
                "host": await (
                    await c.get("/d/host", params={"job": "web", "instance": agent.address})
                ).text(),
                "fleet": await (await c.get("/d/fleet")).text(),
            }
        finally:
            await c.close()
    finally:
        await pool.stop()
        await agent.stop()

    assert f"web/{agent.address}" in targets_page and "db/127.0.0.1:1" in targets_page
    assert 'class="badge health-up">up<' in targets_page and 'class="badge health-down">down<' in targets_page
    assert "test-scraper" in targets_page
    modes = set(re.findall(r'<path class="line" d="M[^"]*"[^>]*data-name="([^"]*)"', host))
    assert {"user", "system", "idle"} <= modes
    for name, body in pages.items():
        errors = re.findall(r'<p class="error">([^<]*)</p>', body)
        assert errors == [], f"{name}: {errors}"
    host_panels = re.findall(r"<h2>([^<]+)</h2>\s*<svg.*?</svg>", pages["host"], re.S)
    assert "CPU by mode" in host_panels and "Memory" in host_panels
    # Panels that must have data from a live agent with synthetic load.
    for title in (
        "CPU by mode",
        "Memory",
        "File system space available",
        "Network throughput",
        "Processes",
        "HTTP requests by status code",
        "Scrape duration",
    ):
        section = re.search(rf"<h2>{re.escape(title)}</h2>(.*?)</section>", pages["host"], re.S).group(1)
        assert "No data" not in section, title
    fleet_up = re.search(r"<h2>Servers up per pool</h2>(.*?)</section>", pages["fleet"], re.S).group(1)
    assert 'data-name="web"' in fleet_up and 'data-name="db"' in fleet_up


async def test_targets_from_store_reads_up_and_scrape_duration():
    from web.providers import targets_from_store

    storage = MemoryStorage()
    now_ms = int(time.time()) * 1000
    ts = np.arange(now_ms - 60_000, now_ms + 1, 10_000, dtype=np.int64)

    def put(name, values, **labels):
        storage.add_series(
            Series.of(labels_from_dict({"__name__": name, **labels})), ts, np.asarray(values, float)
        )

    put("up", np.ones(len(ts)), job="web", instance="h1:9100")
    put("up", [1, 1, 1, 1, 0, 0, 0], job="web", instance="h2:9100")
    put("scrape_duration_seconds", np.full(len(ts), 0.02), job="web", instance="h1:9100")
    gone = Series.of(labels_from_dict({"__name__": "up", "job": "old", "instance": "gone:1"}))
    storage.add_series(gone, np.array([now_ms - 3_600_000]), np.array([1.0]))  # older than the lookback

    targets = await targets_from_store(Engine(storage), now_ms=now_ms, owner_of=lambda k: f"owner-of-{k}")
    by_key = {t.key: t for t in targets}
    assert set(by_key) == {"web/h1:9100", "web/h2:9100"}
    assert by_key["web/h1:9100"].health == "up" and by_key["web/h2:9100"].health == "down"
    assert (
        by_key["web/h1:9100"].last_scrape == now_ms / 1000 and by_key["web/h1:9100"].last_duration_s == 0.02
    )
    assert (
        by_key["web/h2:9100"].last_duration_s is None
        and by_key["web/h2:9100"].owner == "owner-of-web/h2:9100"
    )
