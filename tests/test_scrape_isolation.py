"""Bad targets (hanging, 500-ing, garbage, 50 MB bodies) never delay another target's schedule.

Measured by the fast target's own scrape timestamps: over a window it must get
(nearly) every scheduled scrape while the bad targets misbehave alongside it.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys

import pytest

from discovery.target import ScrapeSettings, Target
from scraper.config import ScrapeConfig
from scraper.memwriter import MemoryWriter
from scraper.pool import ScrapePool


class UpCountingWriter(MemoryWriter):
    """Keeps only each target's ``up`` values."""

    def __init__(self) -> None:
        super().__init__(keep=False)
        self.up: dict[str, list[float]] = {}

    async def append(self, batch) -> None:
        await super().append(batch)
        for s, v in zip(batch.series, batch.values, strict=True):
            if s.metric == "up":
                self.up.setdefault(batch.target, []).append(v)


# The misbehaving targets run in their own process so that only the scraper shares our event loop.
SERVER = r"""
import asyncio
from aiohttp import web

FIFTY_MB = 50 * 1024 * 1024
head = b"first_line 1\n"
# one 50 MB line (rejected by the body size limit) ...
big_line = head + b"#" * (FIFTY_MB - len(head) - 20) + b"\nnot a valid line\n"
# ... and 50 MB of 1 KB lines, read and parsed whole, then rejected at its last line
filler = b"# filler " + b"x" * 1014 + b"\n"
big = head + filler * ((FIFTY_MB - len(head)) // len(filler)) + b"not a valid line\n"


async def fast(request):
    return web.Response(body=b"fast_metric 1\n", content_type="text/plain")


async def hang(request):
    await asyncio.sleep(3600)
    return web.Response(body=b"")


async def huge(request, body=None):
    big_body = body or big
    resp = web.StreamResponse(headers={"Content-Type": "text/plain"})
    await resp.prepare(request)
    for i in range(0, len(big_body), 1 << 20):
        await resp.write(big_body[i:i + (1 << 20)])
    await resp.write_eof()
    return resp


async def error500(request):
    return web.Response(status=500, text="boom")


async def garbage(request):
    # (not led by a NUL: Prometheus's text lexer reads a NUL at the start of a line as the end of the body)
    return web.Response(body=b"\xff{{{ not metrics\x00\n" * 1000, content_type="text/plain")


async def main():
    app = web.Application()
    for path, h in {"/fast": fast, "/hang": hang, "/huge": huge, "/huge_limited": lambda r: huge(r, big_line), "/500": error500,
                    "/garbage": garbage}.items():
        app.router.add_get(path, h)
    runner = web.AppRunner(app, shutdown_timeout=0.5)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    print(site._server.sockets[0].getsockname()[1], flush=True)
    await asyncio.sleep(600)

asyncio.run(main())
"""


@pytest.fixture
def targets():
    proc = subprocess.Popen([sys.executable, "-c", SERVER], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        line = proc.stdout.readline()  # the port once listening; b"" if the process died
        assert line.strip().isdigit(), "target server did not start"
        yield f"127.0.0.1:{int(line)}"
    finally:
        proc.kill()
        proc.wait(timeout=10)


async def test_bad_targets_do_not_delay_a_fast_target(targets):
    # What a bad target could cost the others is seconds (a hang up to its timeout, a 50 MB parse),
    # so a 1 s interval shows it; a shorter one would measure the machine's load instead (with
    # every core busy a 200 ms scrape timeout is missed by an unharmed loop).
    interval = 1.0
    window = 12.0
    fast = Target("fast", targets, ScrapeSettings(interval_s=interval, timeout_s=0.9, path="/fast"))
    bad_settings = dict(interval_s=1.0, timeout_s=0.9)
    bad = [
        Target("hang", targets, ScrapeSettings(path="/hang", **bad_settings)),
        Target("huge", targets, ScrapeSettings(path="/huge", interval_s=3.0, timeout_s=2.9)),
        Target("huge_limited", targets, ScrapeSettings(path="/huge_limited", interval_s=3.0, timeout_s=2.9)),
        Target("e500", targets, ScrapeSettings(path="/500", **bad_settings)),
        Target("garbage", targets, ScrapeSettings(path="/garbage", **bad_settings)),
    ]
    writer = UpCountingWriter()
    pool = ScrapePool(writer, name="isolation", configs={"huge_limited": ScrapeConfig(body_size_limit=1_000_000)})
    try:
        await pool.sync([fast, *bad])
        await asyncio.sleep(window)
        health = {h.pool: h for h in pool.health()}
        times = list(pool.loops[fast.key].scrape_times)
        huge_tried = len(pool.loops[bad[1].key].scrape_times)
    finally:
        await pool.stop()
    # every bad target was really tried and failed for its own reason
    assert "timed out" in health["hang"].last_error
    # (test_scrape_limits checks the limit itself; here a very loaded machine may time out first)
    assert any(r in health["huge_limited"].last_error for r in ("body size limit exceeded", "timed out"))
    assert "HTTP status 500" in health["e500"].last_error
    assert health["garbage"].last_error.startswith("parse error: line 1:")
    # the unlimited 50 MB body (51 k lines) is read whole and parsed, which may outlast the window;
    # when it finished, it was rejected at its bad last line (or timed out while being read)
    assert huge_tried
    if health["huge"].last_scrape:
        err = health["huge"].last_error
        assert err.startswith("parse error: line 51201: ") or "timed out" in err
    # the fast target's own scrapes kept succeeding (a very loaded machine may time out a few)
    ups = writer.up[fast.key]
    assert sum(ups) >= 0.8 * len(ups), ups
    # the fast target kept its schedule: nearly every slot in the window was scraped
    expected = window / interval
    assert len(times) >= 0.75 * expected, (len(times), expected, [round(b - a, 3) for a, b in zip(times, times[1:], strict=False)])
    # and the slots stayed on its phase: consecutive scrapes are about one interval apart
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    on_time = sum(1 for g in gaps if g < 2 * interval)
    assert on_time >= 0.9 * len(gaps), str([round(g, 3) for g in gaps])
