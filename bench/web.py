"""Render-time benchmark of the Fleet dashboard: p50/p99 over 24 h and 30 d for N hosts.

    python bench/web.py [--hosts 100] [--runs 20] [--screenshot DIR]

Builds an in-memory store holding what the Fleet dashboard reads for every host (CPU,
memory, file system, network, HTTP requests, up): raw samples and 1-minute rollups for the
last day, 1-hour rollups for 31 days, as the rollup job would have written them. Then it
requests ``/d/fleet`` through the real web app over HTTP on 127.0.0.1 and prints the time
to the full page, cold and with a warm range-query cache (``query.cache.RangeQueryCache``)
and without any cache, with the page's size as HTML and on the wire (deflated), and the
machine's load average. Prints figures; asserts nothing about time. ``--screenshot DIR``
also saves full-page Chromium screenshots of the dashboard over 24 h and 30 d
(``fleet-24h.png``, ``fleet-30d.png``; Debian's /usr/bin/chromium driven by Playwright).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import statistics
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
from aiohttp.test_utils import TestClient, TestServer

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the project, not bench/, first

from query.engine import Engine
from query.memory import MemoryStorage
from storage.base import HOUR_MS, MINUTE_MS, Resolution, SeriesData
from storage.model import Series, labels_from_dict
from storage.rollup import rollup_raw, rollup_rollup
from web import chart
from web.app import create_app

RAW_INTERVAL_MS = 30_000
ROLLUP_SOURCE_MS = 300_000  # the samples the 31-day hourly rollups are computed from
DAY_MS = 86_400_000


def _series(pools: int, hosts_per_pool: int) -> list[tuple[dict[str, str], str, float]]:
    """(labels, kind, level): kind is counter (level = rate per second) or gauge."""
    out = []
    for p in range(pools):
        job = f"pool{p:02d}"
        for h in range(hosts_per_pool):
            base = {"job": job, "instance": f"10.{p}.0.{h}:9100"}
            rng = np.random.default_rng(p * 1000 + h)
            out.append(({"__name__": "up", **base}, "gauge", 1.0))
            for cpu in ("0", "1"):
                idle = float(rng.uniform(0.3, 0.9))
                out.append(
                    (
                        {"__name__": "node_cpu_seconds_total", "cpu": cpu, "mode": "idle", **base},
                        "counter",
                        idle,
                    )
                )
                out.append(
                    (
                        {"__name__": "node_cpu_seconds_total", "cpu": cpu, "mode": "user", **base},
                        "counter",
                        1 - idle,
                    )
                )
            total = 16 * 2**30
            out.append(({"__name__": "node_memory_MemTotal_bytes", **base}, "gauge", total))
            out.append(
                (
                    {"__name__": "node_memory_MemAvailable_bytes", **base},
                    "gauge",
                    total * rng.uniform(0.2, 0.8),
                )
            )
            fs = {"device": "/dev/vda", "fstype": "ext4", "mountpoint": "/", **base}
            out.append(({"__name__": "node_filesystem_size_bytes", **fs}, "gauge", 200e9))
            out.append(
                ({"__name__": "node_filesystem_avail_bytes", **fs}, "gauge", 200e9 * rng.uniform(0.1, 0.9))
            )
            out.append(
                ({"__name__": "node_network_receive_bytes_total", "device": "eth0", **base}, "counter", 1e6)
            )
            out.append(
                ({"__name__": "node_network_receive_bytes_total", "device": "lo", **base}, "counter", 1e4)
            )
            rps = float(rng.uniform(5, 50))
            out.append(
                ({"__name__": "http_requests_total", "method": "GET", "code": "200", **base}, "counter", rps)
            )
            out.append(
                (
                    {"__name__": "http_requests_total", "method": "GET", "code": "500", **base},
                    "counter",
                    rps / 50,
                )
            )
    return out


def _values(ts: np.ndarray, kind: str, level: float, rng: np.random.Generator) -> np.ndarray:
    if kind == "counter":
        steps = np.diff(ts, prepend=ts[0]) / 1000 * level * rng.uniform(0.8, 1.2, len(ts))
        return np.cumsum(steps)
    return level * (1 + 0.05 * np.sin(ts / 3.6e6) + rng.normal(0, 0.01, len(ts)))


def build_store(hosts: int, now_ms: int) -> tuple[MemoryStorage, int]:
    pools = max(1, hosts // 10)
    storage = MemoryStorage()
    long_start = (now_ms - 31 * DAY_MS) // HOUR_MS * HOUR_MS
    day_start = (now_ms - DAY_MS - 2 * HOUR_MS) // MINUTE_MS * MINUTE_MS
    long_ts = np.arange(long_start, now_ms, ROLLUP_SOURCE_MS, dtype=np.int64)
    raw_ts = np.arange(day_start, now_ms, RAW_INTERVAL_MS, dtype=np.int64)
    specs = _series(pools, max(1, hosts // pools))
    rng = np.random.default_rng(7)
    for labels, kind, level in specs:
        series = Series.of(labels_from_dict(labels))
        raw_vals = _values(raw_ts, kind, level, rng)
        storage.add_series(series, raw_ts, raw_vals)
        minute = rollup_raw(raw_ts, raw_vals, day_start, now_ms // MINUTE_MS * MINUTE_MS, MINUTE_MS)
        cols = minute.columns()
        storage.put_rollup(SeriesData(series, minute.timestamps, cols["last"], Resolution.MINUTE, cols))
        long_minute = rollup_raw(
            long_ts, _values(long_ts, kind, level, rng), long_start, now_ms // HOUR_MS * HOUR_MS, MINUTE_MS
        )
        hour = rollup_rollup(long_minute, HOUR_MS)
        cols = hour.columns()
        storage.put_rollup(SeriesData(series, hour.timestamps, cols["last"], Resolution.HOUR, cols))
    return storage, len(specs)


class RenderTimer:
    """Adds up the time spent drawing charts (synchronous, so the sum is wall time)."""

    def __init__(self) -> None:
        self.spent = 0.0
        self._inner = chart.render_chart

    def __call__(self, series: Iterable[chart.ChartSeries], spec: chart.ChartSpec | None = None) -> str:
        t0 = time.perf_counter()
        try:
            return self._inner(series, spec)
        finally:
            self.spent += time.perf_counter() - t0


# A panel whose query failed says so in an error paragraph; an answer that stands with a caveat
# (e.g. "... answered from 1h rollups ...: the result is approximate") is a warning, and draws.
_FAILED_PANEL = re.compile(rb'<p class="error"[^>]*>')


async def _time_page(client: TestClient, path: str) -> tuple[float, int, int, float]:
    """(seconds to the whole page, its size as HTML, its size on the wire, CPU seconds spent).

    The CPU time is this process's (server, client and the thread that compresses the page),
    which other work on the machine inflates much less than the wall time.
    """
    t0, c0 = time.perf_counter(), time.process_time()
    resp = await client.get(path)
    body = await resp.read()
    elapsed, cpu = time.perf_counter() - t0, time.process_time() - c0
    failed = _FAILED_PANEL.search(body)
    if resp.status != 200 or failed:
        what = body[failed.start() : failed.start() + 200].decode(errors="replace") if failed else ""
        raise SystemExit(f"{path}: HTTP {resp.status} or a failed panel query {what!r}; the benchmark would be meaningless")
    return elapsed, len(body), int(resp.headers.get("Content-Length", len(body))), cpu


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    k = min(len(ordered) - 1, max(0, int(round(q / 100 * (len(ordered) - 1)))))
    return ordered[k]


async def _screenshots(base_url: str, out_dir: Path) -> None:
    from playwright.async_api import async_playwright

    out_dir.mkdir(parents=True, exist_ok=True)
    chromium = os.environ.get("RINGMON_CHROMIUM", "/usr/bin/chromium")
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=chromium, headless=True, args=["--no-sandbox"])
        try:
            page = await browser.new_page(viewport={"width": 1400, "height": 900})
            for span in ("24h", "30d"):
                await page.goto(f"{base_url}/d/fleet?range={span}")
                path = out_dir / f"fleet-{span}.png"
                await page.screenshot(path=str(path), full_page=True)
                print(f"screenshot: {path}")
        finally:
            await browser.close()


async def run(hosts: int, runs: int, screenshot_dir: Path | None = None) -> None:
    now_ms = int(time.time() * 1000)
    t0 = time.perf_counter()
    storage, n_series = build_store(hosts, now_ms)
    print(f"store: {hosts} hosts, {n_series} series, built in {time.perf_counter() - t0:.1f} s")
    print("load average: " + " ".join(f"{x:.2f}" for x in os.getloadavg()))
    engine = Engine(storage)
    try:
        from query.cache import RangeQueryCache

        cache = RangeQueryCache(engine)
    except ImportError:  # pragma: no cover - the cache ships with the query package
        cache = None

    async def none() -> list[dict[str, Any]]:
        return []

    timer = RenderTimer()
    chart.render_chart = timer  # web.app calls it through the module
    variants = [("no cache", None)] + ([("warm cache", cache)] if cache is not None else [])
    for label, range_cache in variants:
        app = create_app(engine=engine, pools_provider=none, targets_provider=none, range_cache=range_cache)
        client = TestClient(TestServer(app, host="127.0.0.1"))
        await client.start_server()
        try:
            for span in ("24h", "30d"):
                path = f"/d/fleet?range={span}"
                cold, size, wire, _ = await _time_page(client, path)
                timer.spent = 0.0
                pages = [await _time_page(client, path) for _ in range(runs)]
                times, cpus = [p[0] for p in pages], [p[3] for p in pages]
                render_share = timer.spent / max(sum(times), 1e-9)
                print(
                    f"Fleet {span:>3} {label:>10}: first {cold * 1000:7.1f} ms  "
                    f"p50 {statistics.median(times) * 1000:7.1f} ms  p99 {_pct(times, 99) * 1000:7.1f} ms  "
                    f"CPU p50 {statistics.median(cpus) * 1000:6.1f} ms  "
                    f"({runs} runs, {render_share:.0%} drawing charts, "
                    f"page {size / 1024:.0f} KiB, {wire / 1024:.0f} KiB deflated)"
                )
            if screenshot_dir is not None and range_cache is not None:
                await _screenshots(str(client.make_url("")).rstrip("/"), screenshot_dir)
        finally:
            await client.close()
    print("load average: " + " ".join(f"{x:.2f}" for x in os.getloadavg()))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hosts", type=int, default=100)
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--screenshot", type=Path, metavar="DIR", help="also save screenshots of the pages here")
    args = ap.parse_args()
    from cli.malloc_tuning import tune_malloc

    tune_malloc()  # as every ``ringmon`` process does
    asyncio.run(run(args.hosts, args.runs, args.screenshot))


if __name__ == "__main__":
    main()
