"""Per-target limits and staleness markers, scraped over real local HTTP."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest
from aiohttp import web

from discovery.target import ScrapeSettings, Target
from scraper.config import ScrapeConfig
from scraper.loop import SYNTHETIC, ScrapeLoop
from scraper.memwriter import MemoryWriter
from scraper.selfmetrics import scraper_metrics
from storage.model import is_stale


class Exporter:
    def __init__(self) -> None:
        self.body = b""
        self.delay = 0.0
        self.chunked = False
        self.content_type = "text/plain; version=0.0.4"

    async def handle(self, request: web.Request) -> web.StreamResponse:
        if self.delay:
            await asyncio.sleep(self.delay)
        if not self.chunked:
            return web.Response(body=self.body, headers={"Content-Type": self.content_type})
        resp = web.StreamResponse(headers={"Content-Type": self.content_type})
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        for i in range(0, len(self.body), 65536):
            await resp.write(self.body[i:i + 65536])
        await resp.write_eof()
        return resp


@pytest.fixture
async def exporter():
    exp = Exporter()
    app = web.Application()
    app.router.add_get("/metrics", exp.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    exp.address = f"127.0.0.1:{site._server.sockets[0].getsockname()[1]}"
    yield exp
    await runner.cleanup()


@pytest.fixture
async def session():
    async with aiohttp.ClientSession() as s:
        yield s


def make_loop(exporter, session, writer, timeout=2.0, **cfg):
    t = Target("lim", exporter.address, ScrapeSettings(interval_s=5, timeout_s=timeout))
    return ScrapeLoop(t, writer, session, config=ScrapeConfig(**cfg), pool_name="limits-test")


def last_synthetic(writer):
    b = writer.batches[-1]
    return {s.metric: v for s, v in zip(b.series, b.values, strict=True) if s.metric in SYNTHETIC}


async def assert_rejected(loop, writer, reason_text):
    out = await loop.scrape_once()
    assert out is None
    assert loop.health.health == "down"
    assert reason_text in loop.health.last_error, loop.health.last_error
    assert last_synthetic(writer)["up"] == 0.0


async def test_timeout(exporter, session):
    w = MemoryWriter()
    exporter.body = b"a 1\n"
    exporter.delay = 1.5
    loop = make_loop(exporter, session, w, timeout=0.3)
    await assert_rejected(loop, w, "timed out after 0.3s")


@pytest.mark.parametrize("chunked", [False, True])
async def test_body_size_limit(exporter, session, chunked):
    w = MemoryWriter()
    exporter.body = b"".join(b"metric_%d 1\n" % i for i in range(20000))
    exporter.chunked = chunked
    loop = make_loop(exporter, session, w, body_size_limit=100_000)
    await assert_rejected(loop, w, "body size limit exceeded")
    ok = make_loop(exporter, session, w, body_size_limit=len(exporter.body))
    assert await ok.scrape_once() is not None


async def test_sample_limit_counts_after_metric_relabelling(exporter, session):
    w = MemoryWriter()
    exporter.body = b"".join(b"m_%d 1\n" % i for i in range(10)) + b"drop_a 1\ndrop_b 1\n"
    loop = make_loop(exporter, session, w, sample_limit=9)
    await assert_rejected(loop, w, "sample_limit exceeded: more than 9 samples")
    from scraper.relabel import parse_relabel_configs

    drop = parse_relabel_configs([{"action": "drop", "source_labels": ["__name__"], "regex": "drop_.*"}], "t")
    ok = make_loop(exporter, session, w, sample_limit=10, metric_relabel_configs=drop)
    out = await ok.scrape_once()
    assert out is not None and len(out.series) == 10
    syn = last_synthetic(w)
    assert syn["scrape_samples_scraped"] == 12 and syn["scrape_samples_post_metric_relabeling"] == 10


async def test_label_limit(exporter, session):
    w = MemoryWriter()
    exporter.body = b'm{a="1",b="2",c="3"} 1\n'
    # 3 labels + __name__ + job + instance = 6
    await assert_rejected(make_loop(exporter, session, w, label_limit=5), w, "label_limit exceeded")
    assert await make_loop(exporter, session, w, label_limit=6).scrape_once() is not None


async def test_label_name_and_value_length_limits(exporter, session):
    w = MemoryWriter()
    exporter.body = b'm{a_rather_long_label_name="short"} 1\nn{x="' + b"v" * 300 + b'"} 1\n'
    await assert_rejected(make_loop(exporter, session, w, label_name_length_limit=20), w,
                          "label_name_length_limit exceeded")
    await assert_rejected(make_loop(exporter, session, w, label_value_length_limit=256), w,
                          "label_value_length_limit exceeded")
    assert await make_loop(exporter, session, w, label_name_length_limit=30,
                           label_value_length_limit=300).scrape_once() is not None


async def test_limit_errors_are_counted_by_reason(exporter, session):
    w = MemoryWriter()
    exporter.body = b'm{a="1"} 1\n'
    m = scraper_metrics()
    before = m.failures.labels("limits-test", "label_limit")._value.get()
    loop = make_loop(exporter, session, w, label_limit=1)
    await loop.scrape_once()
    await loop.scrape_once()  # a cached series still breaks the limit on the next scrape
    assert m.failures.labels("limits-test", "label_limit")._value.get() == before + 2


async def test_staleness_markers_on_disappearance_and_down(exporter, session):
    w = MemoryWriter()
    loop = make_loop(exporter, session, w)
    exporter.body = b'a 1\nb{x="1"} 2\nb{x="2"} 3\n'
    out = await loop.scrape_once()
    assert out.series_added == 3 and not out.stale
    exporter.body = b'a 1\nb{x="2"} 4\nc 5\n'
    out = await loop.scrape_once()
    assert [dict(s.labels).get("x") for s in out.stale] == ["1"]
    assert out.series_added == 1
    b = w.batches[-1]
    stale = [dict(s.labels) for s, v in zip(b.series, b.values, strict=True) if is_stale(v)]
    assert stale == [{"__name__": "b", "x": "1", "job": "lim", "instance": exporter.address}]
    # steady: nothing stale, nothing added
    out = await loop.scrape_once()
    assert not out.stale and out.series_added == 0
    # target down: every series of the last good scrape gets a stale marker
    exporter.body = b"garbage here\n"
    assert await loop.scrape_once() is None
    b = w.batches[-1]
    stale = sorted(s.metric + s.get("x") for s, v in zip(b.series, b.values, strict=True) if is_stale(v))
    assert stale == ["a", "b2", "c"]
    # a second failure does not repeat them; recovery counts every series as added again
    assert await loop.scrape_once() is None
    assert not any(is_stale(v) for v in w.batches[-1].values)
    exporter.body = b"a 1\n"
    out = await loop.scrape_once()
    assert out.series_added == 1 and not out.stale


async def test_explicit_timestamps_get_no_stale_markers(exporter, session):
    w = MemoryWriter()
    loop = make_loop(exporter, session, w)
    exporter.body = b"a 1 1000\nb 2\n"
    await loop.scrape_once()
    exporter.body = b"\n"
    out = await loop.scrape_once()
    assert [s.metric for s in out.stale] == ["b"]
