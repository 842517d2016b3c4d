"""Samples whose exposition timestamps the store would not keep, or that go back in time within
the body, are dropped, counted per target and reason, and shown on /targets and in
/api/v1/targets; the rest of the scrape is written (real local HTTP)."""

from __future__ import annotations

import time

import aiohttp
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import CollectorRegistry

from discovery.target import ScrapeSettings, Target
from query.engine import Engine
from query.memory import MemoryStorage
from scraper.bounds import FUTURE_TOLERANCE_MS, STORE_RAW_KEEP_MS
from scraper.loop import ScrapeLoop
from scraper.memwriter import MemoryWriter
from scraper.selfmetrics import scraper_metrics
from web.app import create_app
from web.prom_api import FleetApiSources, add_fleet_api_routes


async def serve(body: bytes):
    async def handle(_request):
        return web.Response(body=body, headers={"Content-Type": "text/plain; version=0.0.4"})

    app = web.Application()
    app.router.add_get("/metrics", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, f"127.0.0.1:{site._server.sockets[0].getsockname()[1]}"


async def test_out_of_bounds_samples_are_dropped_counted_and_shown():
    now = int(time.time() * 1000)
    body = (
        b"plain 1\n"
        b"recent 2 %d\n"  # an hour ago: kept
        b"epoch 3 0\n"  # 1970: too old (Prometheus drops it as out of bounds too)
        b"past_retention 4 %d\n"
        b"soon 5 %d\n"  # within the future tolerance: kept
        b"future 6 %d\n"
        b"twice 7 %d\ntwice 8 %d\n"  # the same time again: the first is kept
        b"back 9 %d\nback 10 %d\n"  # back in time within the body: the first is kept
    ) % (now - 3_600_000, now - STORE_RAW_KEEP_MS - 3_600_000, now + FUTURE_TOLERANCE_MS // 2,
         now + FUTURE_TOLERANCE_MS + 3_600_000, now - 1000, now - 1000, now - 1000, now - 2000)
    runner, address = await serve(body)
    registry = CollectorRegistry()
    writer = MemoryWriter()
    try:
        async with aiohttp.ClientSession() as session:
            loop = ScrapeLoop(Target("p", address, ScrapeSettings(interval_s=5, timeout_s=5)), writer, session,
                              pool_name="bounds-test", metrics=scraper_metrics(registry))
            for _ in range(2):  # cold, then the cached path: the same outcome
                out = await loop.scrape_once()
                assert out is not None and loop.health.health == "up"
                batch = writer.batches[-1]
                written = {s.metric: v for s, v in zip(batch.series, batch.values, strict=True)}
                assert {"plain", "recent", "soon"} <= written.keys()
                assert not {"epoch", "past_retention", "future"} & written.keys()
                assert written["twice"] == 7 and written["back"] == 9
                assert sum(1 for x in batch.series if x.metric in ("twice", "back")) == 2
                assert written["scrape_samples_scraped"] == 10
                assert written["scrape_samples_post_metric_relabeling"] == 10  # as Prometheus counts them
    finally:
        await runner.cleanup()
    h = loop.health
    want = {"too_old": 4, "too_far_in_future": 2, "duplicate_timestamp": 2, "out_of_order": 2}
    assert h.samples_dropped == want
    assert "2 too old" in h.last_drop and "1 too far in the future" in h.last_drop
    assert "1 out of order" in h.last_drop and "1 with the timestamp of an earlier sample" in h.last_drop
    for reason, n in want.items():
        assert registry.get_sample_value(
            "ringmon_scrape_samples_dropped_total", {"scraper": "bounds-test", "target": f"p/{address}", "reason": reason}
        ) == n

    async def targets():
        return [h.to_dict()]

    async def pools():
        return []

    app = create_app(engine=Engine(MemoryStorage()), pools_provider=pools, targets_provider=targets)
    add_fleet_api_routes(app, FleetApiSources(targets=targets))
    client = TestClient(TestServer(app))
    await client.start_server()
    try:
        page = await (await client.get("/targets")).text()
        api = await (await client.get("/api/v1/targets")).json()
    finally:
        await client.close()
    (t,) = api["data"]["activeTargets"]
    assert t["samplesDropped"] == want
    assert t["lastDrop"] == h.last_drop
    assert "2 duplicate timestamp, 2 out of order, 2 too far in future, 4 too old" in page
    assert "last: samples dropped: 1 with the timestamp" in page and "2 too old (timestamp before " in page
