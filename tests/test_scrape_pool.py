"""ScrapePool/ScrapeLoop against real local HTTP targets: sync, health, synthetic series, failures."""

from __future__ import annotations

import asyncio
import contextlib
import math

import pytest
from aiohttp import web

from discovery.target import ScrapeSettings, Target
from scraper.loop import SYNTHETIC, ScrapeLoop, SlotWakeUps, next_slot, scrape_offset_s
from scraper.memwriter import MemoryWriter
from scraper.pool import ScrapePool
from storage.model import is_stale

BODY = b"""# HELP http_requests_total Requests.
# TYPE http_requests_total counter
http_requests_total{method="get",code="200"} 1027
http_requests_total{method="post",code="500"} 3
# TYPE temp gauge
temp{job="exporter-job"} 21.5
"""


class Target_:
    """A tiny local exporter whose body and status the test controls."""

    def __init__(self) -> None:
        self.body = BODY
        self.status = 200
        self.content_type = "text/plain; version=0.0.4"
        self.hits = 0
        self.delay = 0.0
        self.runner: web.AppRunner | None = None
        self.port = 0

    async def handle(self, request: web.Request) -> web.Response:
        self.hits += 1
        if self.delay:
            await asyncio.sleep(self.delay)
        return web.Response(body=self.body, status=self.status, headers={"Content-Type": self.content_type})

    async def start(self) -> str:
        app = web.Application()
        app.router.add_get("/metrics", self.handle)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]
        return f"127.0.0.1:{self.port}"

    async def stop(self) -> None:
        if self.runner:
            await self.runner.cleanup()


@pytest.fixture
async def exporter():
    t = Target_()
    await t.start()
    yield t
    await t.stop()


async def _wait(cond, timeout: float = 60.0) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not cond():
        if loop.time() > end:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.02)


def _values(writer: MemoryWriter, key: str) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {}
    for b in writer.for_target(key):
        for s, v in zip(b.series, b.values, strict=True):
            out.setdefault(s.metric + str(sorted(s.as_dict().items())), []).append(v)
    return out


async def test_scrape_once_labels_values_and_synthetic(exporter):
    t = Target("web", f"127.0.0.1:{exporter.port}", ScrapeSettings(interval_s=1, timeout_s=1,
                                                                  labels=(("dc", "east"),)))
    w = MemoryWriter()
    pool = ScrapePool(w, name="t1")
    import aiohttp

    async with aiohttp.ClientSession() as session:
        loop = ScrapeLoop(t, w, session, metrics=pool.metrics)
        out = await loop.scrape_once()
    assert out is not None
    (batch,) = w.batches
    assert batch.target == "web/" + t.address
    got = {tuple(sorted(s.as_dict().items())): v for s, v in zip(batch.series, batch.values, strict=True)}
    inst = t.address
    assert got[(("__name__", "http_requests_total"), ("code", "200"), ("dc", "east"), ("instance", inst),
                ("job", "web"), ("method", "get"))] == 1027
    # conflicting "job" from the exporter is kept as exported_job
    assert got[(("__name__", "temp"), ("dc", "east"), ("exported_job", "exporter-job"), ("instance", inst),
                ("job", "web"))] == 21.5
    names = {s.metric: v for s, v in zip(batch.series, batch.values, strict=True)}
    for n in SYNTHETIC:
        assert n in names
    assert names["up"] == 1.0
    assert names["scrape_samples_scraped"] == 3
    assert names["scrape_samples_post_metric_relabeling"] == 3
    assert names["scrape_series_added"] == 3
    assert len(set(batch.timestamps)) == 1
    assert loop.health.health == "up" and loop.health.samples_scraped == 3


async def test_pool_sync_health_and_down_target(exporter):
    w = MemoryWriter()
    pool = ScrapePool(w, name="t2")
    live = Target("web", f"127.0.0.1:{exporter.port}", ScrapeSettings(interval_s=0.2, timeout_s=0.2))
    dead = Target("web", "127.0.0.1:1", ScrapeSettings(interval_s=0.2, timeout_s=0.2))
    try:
        await pool.sync([live, dead])
        await _wait(lambda: all(h.last_scrape for h in pool.health()))
        by_key = {h.target: h for h in pool.health()}
        assert by_key[live.key].health == "up"
        assert by_key[dead.key].health == "down" and by_key[dead.key].last_error
        d = by_key[dead.key].to_dict()
        assert d["url"] == "http://127.0.0.1:1/metrics" and d["health"] == "down"
        ups = {b.target: v for b in w.batches for s, v in zip(b.series, b.values, strict=True) if s.metric == "up"}
        assert ups[live.key] == 1.0 and ups[dead.key] == 0.0
        first_loop = pool.loops[live.key]
        # same targets: nothing restarts
        await pool.sync([live, dead])
        assert pool.loops[live.key] is first_loop
        # changed settings: that loop restarts, the other does not
        dead_loop = pool.loops[dead.key]
        live2 = Target("web", live.address, ScrapeSettings(interval_s=0.3, timeout_s=0.2))
        await pool.sync([live2, dead])
        assert pool.loops[live.key] is not first_loop and pool.loops[dead.key] is dead_loop
        # removed target: its loop stops and its series get stale markers
        n_before = len(w.batches)
        await pool.sync([dead])
        assert live.key not in pool.loops
        stale_batches = [b for b in w.batches[n_before:] if b.target == live.key]
        assert stale_batches and all(is_stale(v) for v in stale_batches[-1].values)
    finally:
        await pool.stop()
    assert pool.health() == []


async def test_failed_scrape_marks_down_with_reason_and_stale(exporter):
    w = MemoryWriter()
    t = Target("web", f"127.0.0.1:{exporter.port}", ScrapeSettings(interval_s=1, timeout_s=1))
    import aiohttp

    async with aiohttp.ClientSession() as session:
        loop = ScrapeLoop(t, w, session)
        assert await loop.scrape_once() is not None
        exporter.status = 500
        assert await loop.scrape_once() is None
        assert "HTTP status 500" in loop.health.last_error
        b = w.batches[-1]
        vals = {s.metric: v for s, v in zip(b.series, b.values, strict=True) if s.metric in SYNTHETIC}
        assert vals["up"] == 0.0
        stale = [s for s, v in zip(b.series, b.values, strict=True) if is_stale(v)]
        assert {s.metric for s in stale} == {"http_requests_total", "temp"}
        exporter.status = 200
        exporter.body = b"ok 1\nbroken{ 2\n"
        assert await loop.scrape_once() is None
        assert loop.health.last_error.startswith("parse error: line 2:")


def test_offset_is_stable_and_spread():
    a = scrape_offset_s("web/h1:9100", 10)
    assert a == scrape_offset_s("web/h1:9100", 10)
    offsets = {scrape_offset_s(f"web/h{i}:9100", 10) for i in range(200)}
    assert offsets == {k * 0.5 for k in range(20)}  # spread over every slot of the interval
    assert {scrape_offset_s(f"web/h{i}:9100", 1) for i in range(200)} == {k / 10 for k in range(10)}
    assert all(0 <= scrape_offset_s(f"web/h{i}:9100", 10) < 10 for i in range(200))
    slot = next_slot(1000.3, 10, a)
    assert slot >= 1000.3 and math.isclose((slot - a) % 10, 0, abs_tol=1e-6)


async def test_slot_wake_ups_share_one_timer_and_pass_a_cancelled_waiter_by():
    import time

    loop = asyncio.get_running_loop()
    wake_ups = SlotWakeUps()
    when = time.time() + 0.05
    timers_before = len(loop._scheduled)  # asyncio's timer heap (no public count)
    woken: list[int] = []

    async def wait(i: int) -> None:
        await wake_ups.until(when)
        woken.append(i)

    tasks = [asyncio.create_task(wait(i)) for i in range(5)]
    await asyncio.sleep(0)  # every waiter registered
    assert len(loop._scheduled) == timers_before + 1  # one timer for the five
    tasks[2].cancel()
    await asyncio.wait(tasks)
    assert sorted(woken) == [0, 1, 3, 4]
    assert tasks[2].cancelled()
    assert not wake_ups._waiting  # the moment's list went with its timer


async def test_accept_header_openmetrics_by_content_type_and_gzip():
    import gzip

    import aiohttp

    from scraper.config import ScrapeConfig
    from scraper.exposition import ACCEPT_HEADER

    seen = {}
    import time

    sent_s = int(time.time()) - 60  # a minute old: inside the raw retention (scraper.bounds)
    om_body = b"# TYPE a counter\na_total{x=\"1\"} 5 %d.250\n# EOF\n" % sent_s

    async def om(request):
        seen["accept"] = request.headers.get("Accept")
        seen["timeout"] = request.headers.get("X-Prometheus-Scrape-Timeout-Seconds")
        return web.Response(body=om_body, headers={
            "Content-Type": "application/openmetrics-text; version=1.0.0; charset=utf-8"})

    big = b"".join(b"m_%d 1\n" % i for i in range(5000))

    async def gz(request):
        return web.Response(body=gzip.compress(big), headers={"Content-Type": "text/plain; version=0.0.4",
                                                               "Content-Encoding": "gzip"})

    app = web.Application()
    app.router.add_get("/om", om)
    app.router.add_get("/gz", gz)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    addr = f"127.0.0.1:{site._server.sockets[0].getsockname()[1]}"
    try:
        w = MemoryWriter()
        async with aiohttp.ClientSession() as session:
            loop = ScrapeLoop(Target("om", addr, ScrapeSettings(interval_s=2, timeout_s=1.5, path="/om")), w, session)
            out = await loop.scrape_once()
            assert out is not None, loop.health.last_error
            assert seen == {"accept": ACCEPT_HEADER, "timeout": "1.5"}
            b = w.batches[-1]
            (ts,) = [t for s, t in zip(b.series, b.timestamps, strict=True) if s.metric == "a_total"]
            assert ts == sent_s * 1000 + 250  # OpenMetrics seconds -> ms
            # the body size limit applies to the decompressed body
            gz_target = Target("gz", addr, ScrapeSettings(interval_s=2, timeout_s=1.5, path="/gz"))
            small = ScrapeLoop(gz_target, w, session, config=ScrapeConfig(body_size_limit=len(big) - 1))
            assert await small.scrape_once() is None and "body size limit" in small.health.last_error
            ok = ScrapeLoop(gz_target, w, session, config=ScrapeConfig(body_size_limit=len(big)))
            assert (await ok.scrape_once()).samples_scraped == 5000
    finally:
        await runner.cleanup()


async def test_sync_with_changed_pool_config_restarts_only_that_pool(exporter):
    from scraper.config import ScrapeConfig

    w = MemoryWriter()
    a = Target("web", f"127.0.0.1:{exporter.port}", ScrapeSettings(interval_s=5, timeout_s=1))
    b = Target("db", "127.0.0.1:1", ScrapeSettings(interval_s=5, timeout_s=1))
    pool = ScrapePool(w, name="t3", configs={"web": ScrapeConfig(sample_limit=100)})
    try:
        await pool.sync([a, b])
        la, lb = pool.loops[a.key], pool.loops[b.key]
        assert la.config.sample_limit == 100 and lb.config == ScrapeConfig()
        await pool.sync([a, b], configs={"web": ScrapeConfig(sample_limit=100)})  # unchanged
        assert pool.loops[a.key] is la and pool.loops[b.key] is lb
        await pool.sync([a, b], configs={"web": ScrapeConfig(sample_limit=2)})
        assert pool.loops[a.key] is not la and pool.loops[b.key] is lb
        assert pool.loops[a.key].config.sample_limit == 2
        # a pool whose relabel_configs drop the target has no loop, and says so
        drop = ScrapeConfig.from_dict({"relabel_configs": [{"action": "drop", "source_labels": ["job"],
                                                             "regex": "db"}]})
        await pool.sync([a, b], configs={"db": drop})
        assert b.key not in pool.loops and b.key in pool.dropped
    finally:
        await pool.stop()


def test_metadata_not_read_again_while_the_layout_holds():
    from scraper.fastpath import ScrapeCache
    from scraper.metadata import MetadataCache

    def scrape(cache: ScrapeCache, body: bytes) -> None:
        gen = cache.process(body, "text")
        with contextlib.suppress(StopIteration):
            while True:
                next(gen)

    cache, md = ScrapeCache({"job": "j"}), MetadataCache(refresh_s=0)
    bodies = [b"# HELP m The m.\n# TYPE m gauge\nm %d\n" % i for i in range(3)]
    scrape(cache, bodies[0])
    md.update(bodies[0], "text", 1.0, cache.layout)
    for t, body in enumerate(bodies[1:], 2):  # new values, the same lines: the metadata stands
        scrape(cache, body)
        assert cache.layout is not None and md.update(body, "text", float(t), cache.layout)["m"].help == "The m."
        assert md.read_at == 1.0
    changed = b"# HELP m Another m.\n# TYPE m gauge\nm 4\n"
    scrape(cache, changed)
    assert md.update(changed, "text", 9.0, cache.layout)["m"].help == "Another m." and md.read_at == 9.0
