"""Alert latency: from a metric crossing its threshold on a target to the webhook receiving it.

A real HTTP target serves ``bench_load``; the project's scrape loop scrapes it into SQLite
storage (or memory); the rule evaluator (engine + RuleManager) and the notifier run in process
with group_wait 0 and a webhook to a recording receiver on 127.0.0.1. Each cycle flips the
value above the threshold, waits for the firing notification, flips it back and waits for the
resolution. Prints p50/p90/p99/max of the firing latency and the goal
(scrape interval + evaluation interval + 1 s).

    .venv/bin/python bench/alert_latency.py [--cycles 20] [--scrape-interval 1] [--eval-interval 1] [--memory]
"""

from __future__ import annotations

import argparse
import asyncio
import pathlib
import random
import statistics
import sys
import tempfile
import time

import aiohttp
from aiohttp import web

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from alerting.evaluator import EvalOptions, RuleManager  # noqa: E402
from alerting.notifier.config import config_from_dict  # noqa: E402
from alerting.notifier.dispatcher import Notifier  # noqa: E402
from alerting.notifier.nflog import MemoryNotificationLog  # noqa: E402
from alerting.rulestore import RuleStore  # noqa: E402
from alerting.state import MemoryAlertStateStore  # noqa: E402
from alerting.testing import RecordingReceiver  # noqa: E402
from cli.wiring import serve_app  # noqa: E402
from discovery.target import ScrapeSettings, Target  # noqa: E402
from query.engine import Engine  # noqa: E402
from scraper.loop import ScrapeLoop  # noqa: E402
from storage.base import DirectWriter, Storage  # noqa: E402


class FlippingTarget:
    """A /metrics endpoint whose ``bench_load`` the benchmark sets."""

    def __init__(self) -> None:
        self.value = 1.0
        self.port = 0
        self.runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/metrics", self.metrics)
        self.runner, self.port = await serve_app(app, "127.0.0.1:0", "bench target")

    async def metrics(self, request: web.Request) -> web.Response:
        body = f"# TYPE bench_load gauge\nbench_load {self.value}\n"
        return web.Response(text=body, content_type="text/plain")

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()


def pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(p / 100 * (len(s) - 1))))]


async def run(args: argparse.Namespace) -> int:
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="ringmon-alert-latency-"))
    storage: Storage
    if args.memory:
        from query.memory import MemoryStorage

        storage = MemoryStorage()
    else:
        from storage.sqlite import SQLiteStorage

        storage = await SQLiteStorage.open(tmp / "bench.db")
    writer = DirectWriter(storage)
    target = FlippingTarget()
    await target.start()
    hook = await RecordingReceiver().start()
    rules = tmp / "rules.yml"
    rules.write_text(
        "groups:\n- name: bench\n  rules:\n  - alert: BenchLoadHigh\n    expr: bench_load > 5\n"
        "    annotations: {summary: 'load {{ $value }}'}\n")
    ncfg = config_from_dict({
        "global": {"retry_initial": 0.05},
        "route": {"receiver": "hook", "group_by": ["alertname"], "group_wait": 0, "group_interval": "1s",
                  "repeat_interval": "1h"},
        "receivers": [{"name": "hook", "webhook_configs": [{"url": hook.url + "/hook"}]}],
    })
    notifier = Notifier(ncfg, MemoryNotificationLog())
    await notifier.start()
    engine = Engine(storage)
    manager = RuleManager(RuleStore([str(rules)]), engine.instant_query, writer, MemoryAlertStateStore(), notifier,
                          options=EvalOptions(default_interval_ms=int(args.eval_interval * 1000), resend_delay_s=60))
    await manager.start()
    session = aiohttp.ClientSession()
    settings = ScrapeSettings(interval_s=args.scrape_interval, timeout_s=min(args.scrape_interval, 5.0))
    loop = ScrapeLoop(Target("bench", f"127.0.0.1:{target.port}", settings), writer, session)
    loop.start()
    fire_lat: list[float] = []
    resolve_lat: list[float] = []
    timeouts = 0
    budget = args.scrape_interval + args.eval_interval + 10
    try:
        await asyncio.sleep(args.scrape_interval * 2)
        for i in range(args.cycles):
            await asyncio.sleep(random.uniform(0, args.scrape_interval))  # cross at a random phase
            n = len(hook.requests)
            target.value = 10.0
            t0 = time.time()
            got = await hook.wait_for(n + 1, timeout=budget)
            if len(got) <= n or got[n].body["status"] != "firing":
                timeouts += 1
                print(f"cycle {i}: no firing notification within {budget:.0f} s", file=sys.stderr)
            else:
                fire_lat.append(got[n].at - t0)
            target.value = 1.0
            t1 = time.time()
            got = await hook.wait_for(n + 2, timeout=budget)
            if len(got) > n + 1:
                resolve_lat.append(got[n + 1].at - t1)
            else:
                timeouts += 1
    finally:
        await loop.stop()
        await session.close()
        await manager.stop()
        await notifier.stop()
        await hook.stop()
        await target.stop()
        await storage.close()
    goal = args.scrape_interval + args.eval_interval + 1.0
    backend = "memory" if args.memory else "sqlite"
    print(f"alert latency over {len(fire_lat)} cycles ({backend} storage, scrape {args.scrape_interval:g}s, "
          f"eval {args.eval_interval:g}s, group_wait 0)")
    if fire_lat:
        print(f"  firing:   p50 {pct(fire_lat, 50):.3f}s  p90 {pct(fire_lat, 90):.3f}s  p99 {pct(fire_lat, 99):.3f}s  "
              f"max {max(fire_lat):.3f}s  mean {statistics.mean(fire_lat):.3f}s")
    if resolve_lat:
        print(f"  resolved: p50 {pct(resolve_lat, 50):.3f}s  p99 {pct(resolve_lat, 99):.3f}s")
    print(f"  goal: p99 <= {goal:g}s -> {'met' if fire_lat and pct(fire_lat, 99) <= goal else 'NOT met'}"
          f"{f'; {timeouts} timeouts' if timeouts else ''}")
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cycles", type=int, default=20)
    ap.add_argument("--scrape-interval", type=float, default=1.0, help="seconds")
    ap.add_argument("--eval-interval", type=float, default=1.0, help="seconds")
    ap.add_argument("--memory", action="store_true", help="MemoryStorage instead of SQLite")
    return asyncio.run(run(ap.parse_args()))


if __name__ == "__main__":
    sys.exit(main())
