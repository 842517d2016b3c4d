"""Scrape engine benchmark: parse throughput, end-to-end CPU per sample, memory per series.

Serves N synthetic targets x S node_exporter-like series from a separate process
(aiohttp, one port per target, values change every scrape) and prints:

* parse throughput of steady targets (the cached fast path) and of first scrapes,
  in samples/s per core (CPU time, ``time.process_time``);
* end to end, scrape -> writer batches (ScrapePool, a counting writer) in a child
  process: samples/s per core, CPU microseconds per sample, peak RSS per 100k series;
* with ``--vs-prometheus``: Debian's ``prometheus`` scraping the same targets in the
  same run (CPU from /proc/<pid>/stat, samples from its own
  ``prometheus_tsdb_head_samples_appended_total``) and the CPU-per-sample ratio.

Usage: ``.venv/bin/python bench/scrape.py [--targets 20] [--series 5000] [--vs-prometheus]``
"""

from __future__ import annotations

import argparse
import asyncio
import json
import pathlib
import random
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.procfs import proc_cpu_s, proc_status_kb  # noqa: E402 - after the path insert
from scraper.lenient import FMT_TEXT  # noqa: E402

if TYPE_CHECKING:
    from scraper.fastpath import ScrapeCache, ScrapeOutcome

VARIANTS = 4  # distinct bodies per target, served in turn so values move between scrapes


# ---------------------------------------------------------------------------- synthetic exporter


def node_like_body(target: int, series: int, variant: int) -> bytes:
    """A node_exporter-shaped body: HELP/TYPE per family, cpu/mode, device, counters and gauges."""
    rng = random.Random(target * 1000 + variant)
    out: list[str] = []
    n = 0
    fam = 0
    modes = ("idle", "iowait", "irq", "nice", "softirq", "steal", "system", "user")
    while n < series:
        kind = fam % 4
        name = f"node_bench_{('cpu_seconds', 'disk_read_bytes', 'filesystem_avail_bytes', 'network_info')[kind]}_{fam}"
        out.append(f"# HELP {name} Synthetic node_exporter-like family {fam}.")
        out.append(f"# TYPE {name} {'counter' if kind < 2 else 'gauge'}")
        for i in range(min(40, series - n)):
            if kind == 0:
                labels = f'cpu="{i // 8}",mode="{modes[i % 8]}"'
                value = f"{1000 * (i + 1) + variant * 0.37 + rng.random():.2f}"
            elif kind == 1:
                labels = f'device="sd{chr(97 + i % 26)}{i}"'
                value = f"{int(1e9 * (i + 1)) + variant * 4096}"
            elif kind == 2:
                labels = f'device="/dev/vd{i}",fstype="ext4",mountpoint="/srv/data{i}"'
                value = f"{rng.random() * 1e11:.6e}"
            else:
                labels = f'address="02:42:ac:11:00:{i:02x}",device="eth{i}",operstate="up"'
                value = "1"
            out.append(f"{name}{{{labels}}} {value}")
            n += 1
        fam += 1
    return ("\n".join(out) + "\n").encode()


async def serve_exporters(n_targets: int, n_series: int) -> None:
    """The synthetic exporter process: ``n_targets`` /metrics endpoints on free 127.0.0.1 ports,
    each cycling through its VARIANTS bodies; prints the ports as a JSON line, serves an hour."""
    from aiohttp import web

    from cli.wiring import serve_app

    bodies = [[node_like_body(t, n_series, v) for v in range(VARIANTS)] for t in range(n_targets)]
    counters = [0] * n_targets

    def handler_for(t: int) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def handle(request: web.Request) -> web.Response:
            counters[t] += 1
            return web.Response(body=bodies[t][counters[t] % VARIANTS],
                                headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"})
        return handle

    ports = []
    for t in range(n_targets):
        app = web.Application()
        app.router.add_get("/metrics", handler_for(t))
        ports.append((await serve_app(app, "127.0.0.1:0", "bench exporter"))[1])
    print(json.dumps(ports), flush=True)
    await asyncio.sleep(3600)


SERVER = ("import asyncio, sys; sys.path.insert(0, sys.argv[1]); from bench.scrape import serve_exporters; "
          "asyncio.run(serve_exporters(int(sys.argv[2]), int(sys.argv[3])))")


def start_exporters(n_targets: int, n_series: int) -> tuple[subprocess.Popen[bytes], list[int]]:
    proc = subprocess.Popen([sys.executable, "-c", SERVER, str(ROOT), str(n_targets), str(n_series)],
                            stdout=subprocess.PIPE)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line:
        raise SystemExit("synthetic exporter process failed to start")
    return proc, json.loads(line)


# ---------------------------------------------------------------------------- measurements


def run_cache(cache: ScrapeCache, body: bytes, fmt: str = FMT_TEXT) -> ScrapeOutcome:
    """``cache.process`` driven to its end in one go (a scrape loop does the same with event-loop
    yields between chunks); its outcome. Parse and limit errors propagate (the tests use it too)."""
    proc = cache.process(body, fmt)
    try:
        while True:
            next(proc)
    except StopIteration as stop:
        outcome: ScrapeOutcome = stop.value
        return outcome


def bench_parse(n_series: int, rounds: int) -> dict[str, float]:
    """CPU time of ScrapeCache.process on rotating bodies of one target (warm), and cold."""
    from scraper.fastpath import ScrapeCache

    bodies = [node_like_body(0, n_series, v) for v in range(VARIANTS)]

    cold_cpu = 0.0
    cold_n = 0
    for _ in range(3):
        cache = ScrapeCache({"job": "node", "instance": "bench:9100"})
        t = time.process_time()
        out = run_cache(cache, bodies[0])
        cold_cpu += time.process_time() - t
        cold_n += len(out.series)
    warm_cpu = 0.0
    warm_n = 0
    for r in range(rounds):
        body = bodies[(r + 1) % VARIANTS]
        t = time.process_time()
        out = run_cache(cache, body)
        warm_cpu += time.process_time() - t
        warm_n += len(out.series)
        assert not out.stale and out.series_added == 0
    # the same steady bodies through the per-line cache only (what a body whose layout changed costs)
    lines_cache = ScrapeCache({"job": "node", "instance": "bench:9100"})
    lines_cache._make_plan = lambda *_args: None  # type: ignore[method-assign]
    run_cache(lines_cache, bodies[0])
    line_cpu = 0.0
    line_n = 0
    for r in range(max(2, rounds // 4)):
        t = time.process_time()
        out = run_cache(lines_cache, bodies[(r + 1) % VARIANTS])
        line_cpu += time.process_time() - t
        line_n += len(out.series)
    return {"warm_samples_per_s": warm_n / warm_cpu, "warm_us_per_sample": warm_cpu / warm_n * 1e6,
            "line_samples_per_s": line_n / line_cpu, "line_us_per_sample": line_cpu / line_n * 1e6,
            "cold_samples_per_s": cold_n / cold_cpu, "cold_us_per_sample": cold_cpu / cold_n * 1e6}


E2E_CHILD = r"""
import asyncio, json, sys, time
sys.path.insert(0, sys.argv[1])
from bench.procfs import proc_status_kb
from discovery.target import ScrapeSettings, Target
from scraper.memwriter import MemoryWriter
from scraper.pool import ScrapePool

ports = json.loads(sys.argv[2]); interval = float(sys.argv[3]); duration = float(sys.argv[4])

async def main():
    base_rss = proc_status_kb("VmRSS")
    writer = MemoryWriter(keep=False)
    pool = ScrapePool(writer, name="bench")
    targets = [Target("bench", f"127.0.0.1:{p}", ScrapeSettings(interval_s=interval, timeout_s=interval))
               for p in ports]
    await pool.sync(targets)
    # warm up: every target scraped twice (cold parse, then the cached path)
    end = time.monotonic() + 10 * interval + 30
    while time.monotonic() < end:
        if all(len(l.scrape_times) >= 2 for l in pool.loops.values()):
            break
        await asyncio.sleep(0.05)
    s0, c0, t0 = writer.samples, time.process_time(), time.monotonic()
    await asyncio.sleep(duration)
    s1, c1, t1 = writer.samples, time.process_time(), time.monotonic()
    active = sum(l.health.samples_scraped for l in pool.loops.values())
    down = [h.last_error for h in pool.health() if h.health != "up"]
    await pool.stop()
    print(json.dumps({"samples": s1 - s0, "cpu_s": c1 - c0, "wall_s": t1 - t0, "active_series": active,
                      "base_rss_kb": base_rss, "peak_rss_kb": proc_status_kb("VmHWM"), "down": down[:3]}))

asyncio.run(main())
"""


def bench_e2e(ports: list[int], interval: float, duration: float) -> dict[str, Any]:
    out = subprocess.run([sys.executable, "-c", E2E_CHILD, str(ROOT), json.dumps(ports), str(interval),
                          str(duration)], capture_output=True, text=True, timeout=duration + 120)
    if out.returncode != 0:
        raise SystemExit(f"end-to-end child failed:\n{out.stderr}")
    figures: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return figures


def bench_prometheus(ports: list[int], interval: float, duration: float) -> dict[str, float]:
    """Debian's prometheus scraping the same targets, started, counted and stopped as
    ``bench/peers.py`` runs it (its samples-appended counter, CPU and RSS from /proc)."""
    from bench.peers import SYSTEMS, http_get, metric_sum

    prom = SYSTEMS["prometheus"]()
    with tempfile.TemporaryDirectory(prefix="ringmon-bench-prom-") as tmp:
        try:
            prom.start(pathlib.Path(tmp), ports, interval)
            pid = prom.pids()["prometheus"]
            time.sleep(3 * interval)  # every target scraped a few times
            s0, c0 = prom.samples_stored(), proc_cpu_s(pid)
            time.sleep(duration)
            s1, c1 = prom.samples_stored(), proc_cpu_s(pid)
            series = metric_sum(http_get(f"{prom.api}/metrics").decode(), "prometheus_tsdb_head_series")
            rss_kb = proc_status_kb("VmRSS", pid)
        except RuntimeError as exc:  # not installed, or it did not come up
            raise SystemExit(f"--vs-prometheus: {exc}") from None
        finally:
            prom.finish()
    return {"samples": s1 - s0, "cpu_s": c1 - c0, "head_series": series, "rss_kb": rss_kb}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--targets", type=int, default=20, help="synthetic targets (default 20)")
    ap.add_argument("--series", type=int, default=5000, help="series per target (default 5000)")
    ap.add_argument("--interval", type=float, default=2.0, help="scrape interval, seconds (default 2)")
    ap.add_argument("--duration", type=float, default=16.0, help="measured window, seconds (default 16)")
    ap.add_argument("--parse-rounds", type=int, default=20, help="warm parse rounds (default 20)")
    ap.add_argument("--vs-prometheus", action="store_true", help="also run Debian's prometheus on the targets")
    args = ap.parse_args()

    print(f"ringmon scrape bench: {args.targets} targets x {args.series} series, interval {args.interval}s, "
          f"window {args.duration}s")
    p = bench_parse(args.series, args.parse_rounds)
    print(f"parse, steady targets (fast path): {p['warm_samples_per_s']:,.0f} samples/s per core "
          f"({p['warm_us_per_sample']:.2f} us/sample)")
    print(f"parse, steady, per-line cache:     {p['line_samples_per_s']:,.0f} samples/s per core "
          f"({p['line_us_per_sample']:.2f} us/sample; a body whose layout changed)")
    print(f"parse, first scrape (cold):        {p['cold_samples_per_s']:,.0f} samples/s per core "
          f"({p['cold_us_per_sample']:.2f} us/sample)")
    server, ports = start_exporters(args.targets, args.series)
    try:
        e = bench_e2e(ports, args.interval, args.duration)
        if e["down"]:
            print(f"warning: targets down during the run: {e['down']}")
        us = e["cpu_s"] / e["samples"] * 1e6 if e["samples"] else float("nan")
        per_100k = (e["peak_rss_kb"] - e["base_rss_kb"]) * 1024 / max(1, e["active_series"]) * 100_000
        print(f"end to end scrape -> writer:       {e['samples'] / e['cpu_s']:,.0f} samples/s per core, "
              f"{us:.2f} us CPU/sample ({e['samples']:,} samples in {e['wall_s']:.1f}s, "
              f"{e['samples'] / e['wall_s']:,.0f} samples/s wall)")
        print(f"memory: peak RSS {e['peak_rss_kb'] / 1024:.1f} MiB for {e['active_series']:,} active series "
              f"(baseline {e['base_rss_kb'] / 1024:.1f} MiB): {per_100k / 2**20:.1f} MiB per 100k series, "
              f"{per_100k / 100_000:.0f} bytes/series")
        if args.vs_prometheus:
            pr = bench_prometheus(ports, args.interval, args.duration)
            pus = pr["cpu_s"] / pr["samples"] * 1e6 if pr["samples"] else float("nan")
            print(f"prometheus (same targets):         {pus:.2f} us CPU/sample ({pr['samples']:,.0f} samples), "
                  f"RSS {pr['rss_kb'] / 1024:.1f} MiB for {pr['head_series']:,.0f} head series "
                  f"({pr['rss_kb'] * 1024 / max(1, pr['head_series']):.0f} bytes/series)")
            ratio = us / pus if pus else float("nan")  # a short window can see no CPU tick of prometheus
            print(f"CPU per sample, ringmon / prometheus: {ratio:.2f}")
    finally:
        server.kill()
        server.wait(timeout=10)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
