"""Load run: 100k active series scraped every 10 s by one ``ringmon scraper`` into Cassandra.

    .venv/bin/python bench/load.py [--minutes 10] [--targets 100] [--series 1000] [--interval 10]

Starts its own ZooKeeper and Cassandra under ``run/load/`` (ports apart from the cluster's),
one process serving ``--targets`` synthetic /metrics endpoints of ``--series`` series each
(counters and gauges whose values change every scrape), registers them as one pool, and runs
one real ``ringmon scraper`` process (ScrapePool + BatchingWriter with its disk spool) for
``--minutes``. Every 30 s it prints the scraper's RSS and CPU, Cassandra's RSS and CPU, the
writer queue, samples appended per second and the write lag (age of the newest stored
sample, read back from Cassandra through the query engine); at the end the figures the
sizing note (docs/SIZING.md) is derived from: samples/s per scraper process, scraper CPU
microseconds per sample, memory growth, write lag p50/max. Prints figures, asserts nothing.

Take-over (issue #20), ``--scrapers 3 --kill-after 240``: three scrapers share the targets;
after ``--kill-after`` seconds the second is SIGKILLed and its targets move to the others.
Every 5 s it prints the survivors' CPU against their steady CPU (the minute before the
kill); at the end the peak ratio, how long it stayed over 2x, and the survivors' failed
(timed-out) scrapes after the kill.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
import urllib.request
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.procfs import proc_cpu_s, proc_status_kb  # noqa: E402 - after the path insert
from common.entrypoint import stop_event  # noqa: E402

if TYPE_CHECKING:
    from aiohttp import web

    from cli.config import RingmonConfig
    from services.cassandra.cassandra_node import CassandraNode
    from storage.base import Storage

def proc_figures(pid: int) -> tuple[float, float]:
    """(RSS MiB, CPU seconds) of a process from /proc; NaNs once it is gone."""
    try:
        return proc_status_kb("VmRSS", pid) / 1024, proc_cpu_s(pid)
    except (OSError, IndexError, ValueError):
        return float("nan"), float("nan")


def scraper_metrics(listen: str) -> dict[str, float]:
    from scraper.exposition import sample_sums as parse_metrics

    try:
        with urllib.request.urlopen(f"http://{listen}/metrics", timeout=20) as r:  # noqa: S310 - 127.0.0.1
            return parse_metrics(r.read().decode())
    except OSError:
        return {}


def scrape_counts(listen: str) -> tuple[float, float, float] | None:
    """(scrapes, failed scrapes, timed-out scrapes) of a scraper so far; None when it does not answer."""
    from scraper.exposition import ParseError, parse

    try:
        with urllib.request.urlopen(f"http://{listen}/metrics", timeout=20) as r:  # noqa: S310 - 127.0.0.1
            text = r.read()
    except OSError:
        return None
    scrapes = failed = timeouts = 0.0
    for line in text.splitlines():
        if not line.startswith(b"ringmon_scraper_scrape"):
            continue
        try:
            samples = parse(line + b"\n")
        except ParseError:
            continue
        for smp in samples:
            if smp.name == "ringmon_scraper_scrapes_total":
                scrapes += smp.value
            elif smp.name == "ringmon_scraper_scrape_failures_total":
                failed += smp.value
                timeouts += smp.value if dict(smp.labels).get("reason") == "timeout" else 0.0
    return scrapes, failed, timeouts


# -- the synthetic targets (a child process) ---------------------------------------------------


async def serve_targets(count: int, series: int, ports_file: str) -> None:
    """``count`` /metrics endpoints of ``series`` series each: 1/4 counters, 3/4 gauges."""
    import random

    from aiohttp import web

    rng = random.Random(7)
    names = [(f"load_requests_total{{path=\"/p{i % 50}\",code=\"{200 + i % 5}\",n=\"{i}\"}}", True)
             if i % 4 == 0 else (f"load_gauge{{kind=\"k{i % 20}\",n=\"{i}\"}}", False) for i in range(series)]
    header = "# TYPE load_requests_total counter\n# TYPE load_gauge gauge\n"
    from cli.wiring import serve_app

    runners = []
    ports = []

    def handler_for(idx: int) -> Callable[[web.Request], Awaitable[web.Response]]:
        state = {"n": 0}
        base = [rng.random() * 1000 for _ in range(series)]

        async def metrics(request: web.Request) -> web.Response:
            state["n"] += 1
            n = state["n"]
            lines = [header]
            for (name, counter), b in zip(names, base, strict=True):
                v = int(b) + n * 3 if counter else round(b + (n * 7 + idx) % 13, 2)
                lines.append(f"{name} {v}\n")
            return web.Response(text="".join(lines), content_type="text/plain")

        return metrics

    for i in range(count):
        app = web.Application()
        app.router.add_get("/metrics", handler_for(i))
        runner, port = await serve_app(app, "127.0.0.1:0", "load targets")
        ports.append(port)
        runners.append(runner)
    Path(ports_file).write_text(json.dumps(ports))
    await stop_event().wait()
    for r in runners:
        await r.cleanup()


# -- the run -----------------------------------------------------------------------------------


async def newest_sample_age(storage: Storage, job: str) -> float | None:
    from query.engine import Engine

    now_ms = int(time.time() * 1000)
    try:
        res = await Engine(storage).instant_query(f'max(timestamp(up{{job="{job}"}}))', now_ms)
    except Exception:  # noqa: BLE001 - Cassandra busy: no reading this round
        return None
    if not res.series or not len(res.series[0].values):
        return None
    return now_ms / 1000 - float(res.series[0].values[-1])


def run(args: argparse.Namespace) -> int:
    from cli.config import config_from_dict
    from discovery.registry import Registry
    from discovery.target import ScrapeSettings
    from services.cassandra.cassandra_node import CassandraNode, NodeError
    from services.zookeeper.zkserver import ZooKeeperServer

    base = REPO / "run" / "load"
    if base.exists():
        shutil.rmtree(base)
    base.mkdir(parents=True)
    procs: list[subprocess.Popen] = []
    zk = ZooKeeperServer(base / "zookeeper", port=args.zookeeper_port)
    node = CassandraNode(base / "cassandra", args.cassandra_port, heap=args.cassandra_heap)
    try:
        print(f"starting ZooKeeper :{args.zookeeper_port} and Cassandra :{args.cassandra_port} under {base}",
              flush=True)
        node.start(wait=False)
        zk.start(wait=True, timeout=90)
        node.wait_ready(300)
        subprocess.run([sys.executable, "-m", "cli.main", "storage", "init", "--port", str(args.cassandra_port)],
                       cwd=REPO, check=True, capture_output=True, timeout=300)
        cfg = {
            "data_dir": str(base / "data"),
            "storage": {"backend": "cassandra", "cassandra": {"hosts": ["127.0.0.1"], "port": args.cassandra_port,
                                                               "spool_dir": str(base / "data" / "spool")}},
            "discovery": {"zookeeper": {"hosts": zk.hosts, "session_timeout": "10s"}},
            "scrape": {"interval": f"{args.interval:g}s", "timeout": f"{min(args.interval, 10):g}s"},
        }
        cfg_path = base / "load.yaml"
        import yaml

        cfg_path.write_text(yaml.safe_dump(cfg))
        ports_file = base / "ports.json"
        log = open(base / "targets.log", "ab")
        procs.append(subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "targets", "--count",
                                       str(args.targets), "--series", str(args.series), "--ports-file",
                                       str(ports_file)], cwd=REPO, stdout=log, stderr=subprocess.STDOUT))
        deadline = time.monotonic() + 60
        while not ports_file.exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        ports = json.loads(ports_file.read_text())
        reg = Registry(zk.hosts).start(watch=False)
        reg.create_pool("load", ScrapeSettings(interval_s=args.interval, timeout_s=min(args.interval, 10.0)),
                        update=True)
        for p in ports:
            reg.register_host("load", f"127.0.0.1:{p}")
        reg.stop()
        listens = [f"127.0.0.1:{args.scraper_port + i}" for i in range(args.scrapers)]
        scrapers = []
        for i, listen in enumerate(listens):
            slog = open(base / f"scraper-{i + 1}.log", "ab")
            scrapers.append(subprocess.Popen(
                [sys.executable, "-m", "cli.main", "scraper", "--config", str(cfg_path), "--id", f"load-{i + 1}",
                 "--listen", listen], cwd=REPO, stdout=slog, stderr=subprocess.STDOUT))
        procs.extend(scrapers)
        print(f"{args.targets} targets x {args.series} series = {args.targets * args.series:,} active series every "
              f"{args.interval:g}s -> {args.targets * args.series / args.interval:,.0f} samples/s, "
              f"{args.scrapers} scraper(s) (pids {', '.join(str(p.pid) for p in scrapers)}), {args.minutes:g} min",
              flush=True)
        if args.kill_after:
            takeover(args, scrapers, listens)
            return 0
        appended = asyncio.run(measure(args, scrapers[0].pid, node.pid or 0, listens[0], config_from_dict(cfg)))
        disk_figures(node, appended)
    except NodeError as exc:
        print(f"load: Cassandra: {exc}", file=sys.stderr)
        return 2
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()
        node.stop()
        zk.stop()
    return 0


def disk_figures(node: CassandraNode, appended: float) -> None:
    """Flush, then on-disk bytes of each table (SSTables, LZ4) per sample appended."""
    try:
        node.nodetool("flush", "ringmon", timeout_s=300)
    except Exception as exc:  # noqa: BLE001 - figures without the flush are still printed
        print(f"  (nodetool flush failed: {exc})")
    ks = node.dir / "data" / "ringmon"
    sizes: dict[str, int] = {}
    for table_dir in ks.glob("*-*"):
        table = table_dir.name.rsplit("-", 1)[0]
        sizes[table] = sizes.get(table, 0) + sum(f.stat().st_size for f in table_dir.rglob("*") if f.is_file())
    total = sum(sizes.values())
    print(f"  Cassandra on disk after flush            {total / 2**20:.1f} MiB for {appended:,.0f} samples appended "
          f"= {total / max(appended, 1):.1f} bytes/sample (one replica, incl. index)")
    for table, size in sorted(sizes.items(), key=lambda kv: -kv[1])[:6]:
        print(f"    {table:<28} {size / 2**20:8.1f} MiB  {size / max(appended, 1):6.2f} bytes/sample")


def takeover(args: argparse.Namespace, scrapers: list[subprocess.Popen], listens: list[str]) -> None:
    """SIGKILL the second scraper after ``--kill-after`` s; the survivors' CPU every 5 s against
    their steady CPU (the minute before the kill), then the take-over figures."""
    step = 5.0
    victim = 1 if len(scrapers) > 1 else 0
    survivors = [i for i in range(len(scrapers)) if i != victim]
    t0 = time.monotonic()
    end = t0 + args.minutes * 60
    kill_at = t0 + args.kill_after
    killed = False
    cpu_prev = sum(proc_cpu_s(scrapers[i].pid) for i in survivors)
    t_prev = t0
    windows: list[tuple[float, float]] = []  # (seconds since start at the window's end, survivors' CPU %)
    before: list[tuple[float, float, float] | None] = []
    print(f"{'t':>5} {'survivors CPU%':>15} {'x steady':>9}", flush=True)
    steady = float("nan")
    while time.monotonic() < end:
        time.sleep(max(0.0, t_prev + step - time.monotonic()))
        if not killed and time.monotonic() >= kill_at:
            before = [scrape_counts(listens[i]) for i in survivors]
            pre = [pct for t, pct in windows if t >= args.kill_after - 60]
            steady = statistics.mean(pre) if pre else float("nan")
            scrapers[victim].send_signal(signal.SIGKILL)
            killed = True
            kill_t = time.monotonic() - t0
            print(f"{kill_t:5.0f} SIGKILL load-{victim + 1}; survivors' steady CPU {steady:.1f}% (the minute before)",
                  flush=True)
        now = time.monotonic()
        cpu = sum(proc_cpu_s(scrapers[i].pid) for i in survivors)
        pct = 100 * (cpu - cpu_prev) / (now - t_prev)
        cpu_prev, t_prev = cpu, now
        windows.append((now - t0, pct))
        ratio = pct / steady if killed and steady > 0 else float("nan")
        print(f"{now - t0:5.0f} {pct:15.1f} {ratio:9.2f}", flush=True)
    if not killed:
        print("run ended before the kill: no take-over figures")
        return
    after = [scrape_counts(listens[i]) for i in survivors]
    post = [(t, pct) for t, pct in windows if t > args.kill_after]
    over = [t for t, pct in post if pct > 2 * steady]
    tail = [pct for t, pct in post if t >= args.minutes * 60 - 60]
    print()
    print(f"take-over figures ({args.targets * args.series:,} series on {len(scrapers)} scrapers, load-{victim + 1} "
          f"SIGKILLed at {args.kill_after:g} s, {os.cpu_count()} cores shared):")
    print(f"  survivors' steady CPU (minute before)    {steady:.1f}% of a core")
    print(f"  peak 5 s window after the kill           {max(p for _, p in post):.1f}% = "
          f"{max(p for _, p in post) / steady:.2f}x steady")
    print(f"  time over 2x steady after the kill       {(max(over) - args.kill_after) if over else 0:.0f} s "
          f"({len(over)} of {len(post)} windows of {step:g} s; issue #20's goal: <= 30 s)")
    if tail:
        print(f"  survivors' CPU, last minute              {statistics.mean(tail):.1f}% = "
              f"{statistics.mean(tail) / steady:.2f}x (they now own the victim's targets too)")
    if all(b is not None for b in before) and all(a is not None for a in after):
        d = [sum(a[k] - b[k] for a, b in zip(after, before, strict=True) if a and b) for k in range(3)]
        print(f"  survivors' scrapes after the kill        {d[0]:.0f}, failed {d[1]:.0f}, timed out {d[2]:.0f} "
              f"(goal: none timed out)")
    else:
        print("  survivors' scrape counts: a scraper's /metrics did not answer")


@dataclass
class Row:
    """One report line: figures of the scraper and Cassandra processes at ``t`` s into the run."""

    t: float
    s_rss: float
    s_cpu: float
    c_rss: float
    c_cpu: float
    appended: float
    queue: float
    failures: float
    scrapes: float
    lag: float | None  # age of the newest stored sample; None when the query failed
    rate: float = 0.0  # samples appended per second since the previous row
    s_pct: float = 0.0
    c_pct: float = 0.0


async def measure(args: argparse.Namespace, scraper_pid: int, cassandra_pid: int, listen: str,
                  cfg: RingmonConfig) -> float:
    from cli.wiring import make_storage

    storage = await make_storage(cfg.storage)
    rows: list[Row] = []
    t_start = time.monotonic()
    end = t_start + args.minutes * 60
    prev: Row | None = None
    print(f"{'t':>5} {'scraper RSS':>11} {'CPU%':>5} {'Cass RSS':>9} {'CPU%':>5} {'samples/s':>10} "
          f"{'queue':>6} {'lag s':>6}", flush=True)
    try:
        while time.monotonic() < end:
            await asyncio.sleep(min(args.report_every, max(0.0, end - time.monotonic())))
            now = time.monotonic()
            s_rss, s_cpu = proc_figures(scraper_pid)
            c_rss, c_cpu = proc_figures(cassandra_pid)
            m = await asyncio.get_running_loop().run_in_executor(None, scraper_metrics, listen)
            if "ringmon_scraper_samples_appended_total" not in m:
                print(f"{now - t_start:5.0f} (scraper /metrics did not answer within 20 s)", flush=True)
                continue
            appended = m["ringmon_scraper_samples_appended_total"]
            lag = await newest_sample_age(storage, "load")
            row = Row(now - t_start, s_rss, s_cpu, c_rss, c_cpu, appended,
                      queue=m.get("ringmon_scraper_writer_queue_depth", float("nan")),
                      failures=m.get("ringmon_scraper_scrape_failures_total", 0.0),
                      scrapes=m.get("ringmon_scraper_scrapes_total", 0.0), lag=lag)
            if prev is not None:
                dt = row.t - prev.t
                row.rate = (appended - prev.appended) / dt
                row.s_pct = 100 * (s_cpu - prev.s_cpu) / dt
                row.c_pct = 100 * (c_cpu - prev.c_cpu) / dt
                print(f"{row.t:5.0f} {s_rss:9.0f}Mi {row.s_pct:5.0f} {c_rss:7.0f}Mi {row.c_pct:5.0f} "
                      f"{row.rate:10,.0f} {row.queue:6.0f} {'-' if lag is None else f'{lag:6.1f}'}",
                      flush=True)
                rows.append(row)
            prev = row
    finally:
        await storage.close()
    if len(rows) < 2:
        print("run too short for figures")
        return rows[-1].appended if rows else 0.0
    steady = rows[len(rows) // 3:] or rows  # after warm-up (first series-index writes)
    rate = statistics.mean(r.rate for r in steady)
    s_pct = statistics.mean(r.s_pct for r in steady)
    c_pct = statistics.mean(r.c_pct for r in steady)
    lags = [r.lag for r in rows if r.lag is not None]
    rss = [r.s_rss for r in rows]
    print()
    print(f"load figures ({args.targets * args.series:,} series, {args.interval:g}s interval, "
          f"{args.minutes:g} min, {os.cpu_count()} cores shared):")
    print(f"  samples stored per second (steady)       {rate:,.0f}")
    print(f"  scraper CPU                              {s_pct:.0f}% of a core = "
          f"{s_pct / 100 / max(rate, 1) * 1e6:.1f} us per sample")
    print(f"  Cassandra CPU                            {c_pct:.0f}% of a core = "
          f"{c_pct / 100 / max(rate, 1) * 1e6:.1f} us per sample")
    print(f"  scraper RSS first/last/max               {rss[0]:.0f} / {rss[-1]:.0f} / {max(rss):.0f} MiB "
          f"(growth after warm-up {steady[-1].s_rss - steady[0].s_rss:+.0f} MiB)")
    series = args.targets * args.series
    print(f"  scraper RSS per active series, last/max  {rss[-1] * 1024 / series:.2f} / {max(rss) * 1024 / series:.2f} KiB "
          f"(issue #20's goal: <= 1 KiB)")
    print(f"  Cassandra RSS last                       {rows[-1].c_rss:.0f} MiB")
    print(f"  writer queue max                         {max(r.queue for r in rows):.0f} batches")
    print(f"  failed scrapes (timeouts etc.)           {rows[-1].failures:.0f} of {rows[-1].scrapes:.0f}")
    if lags:
        print(f"  write lag (newest stored sample) p50/max {statistics.median(lags):.1f} / {max(lags):.1f} s "
              f"(includes up to one interval between scrapes)")
    return rows[-1].appended


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd")
    t = sub.add_parser("targets", help="(internal) serve the synthetic targets")
    t.add_argument("--count", type=int, required=True)
    t.add_argument("--series", type=int, required=True)
    t.add_argument("--ports-file", required=True)
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument("--targets", type=int, default=100)
    p.add_argument("--series", type=int, default=1000, help="series per target")
    p.add_argument("--interval", type=float, default=10.0)
    p.add_argument("--report-every", type=float, default=30.0, metavar="SECONDS")
    p.add_argument("--zookeeper-port", type=int, default=12183)
    p.add_argument("--cassandra-port", type=int, default=19544)
    p.add_argument("--cassandra-heap", default="1g")
    p.add_argument("--scraper-port", type=int, default=19501, help="the first scraper's; the others' follow")
    p.add_argument("--scrapers", type=int, default=1)
    p.add_argument("--kill-after", type=float, default=0.0, metavar="SECONDS",
                   help="take-over run: SIGKILL the second scraper this long after the start")
    args = p.parse_args(argv)
    if args.cmd == "targets":
        asyncio.run(serve_targets(args.count, args.series, args.ports_file))
        return 0
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
