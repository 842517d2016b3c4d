"""``make drills``: break a running Ringmon cluster five ways and count what was lost.

    .venv/bin/python -m drills [--only scraper,cassandra,zookeeper,alerter,web] [--keep]

Brings up its own cluster with ``cluster.orchestrator`` under ``run/drills/`` (ports apart from
``make cluster``'s): 5 pools x 6 light simulated hosts scraped every 2 s by 3 scrapers,
Cassandra, ZooKeeper, rollup, alerter and web. The drill process itself is the alerter's
webhook receiver. Then, one after the other:

1. SIGKILL a scraper (and start it again on its spool);
2. stop Cassandra for 60 s;
3. stop ZooKeeper for 30 s;
4. SIGKILL the alerter while a notification is in flight (the receiver holds the request);
5. restart the web server while clients query it.

How samples are counted: every simulated host exports ``ringmon_sim_scrapes_total``, the
number of times its /metrics was served. The stored values of one target are consecutive
unless a served scrape never reached storage. Each hole is either a scrape the scraper
recorded as failed (``up`` 0, e.g. a timeout on this busy machine: accounted for) or a
silently lost sample. A drill passes when no sample is silently lost, except for at most one
in-flight scrape per target of a SIGKILLed scraper; the alerter drill passes when the
notification is acknowledged exactly once; the web drill when every request after the
restart succeeds. A final table prints each drill's losses and recovery time.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import aiohttp
import numpy as np
from aiohttp import web

from alerting.api_auth import bearer
from cluster import orchestrator as cl
from common.entrypoint import exit_status

if TYPE_CHECKING:
    from storage.base import Storage

DRILLS = ("scraper", "cassandra", "zookeeper", "alerter", "web")
INTERVAL_S = 2.0


def drill_settings() -> cl.ClusterSettings:
    return cl.ClusterSettings(
        dir="run/drills", zookeeper_port=12182, cassandra_port=19543, pools=5, hosts_per_pool=6, scrapers=3,
        scraper_base_port=19401, rollup_listen="127.0.0.1:19466", alerter_listen="127.0.0.1:19467",
        sink_listen="127.0.0.1:19468", web_listen="127.0.0.1:18080", interval=f"{INTERVAL_S:g}s",
        synthetic_load_rps=0.0, light_hosts=True,
        alerting_template=str(cl.REPO / "run" / "drills" / "alerting-template.yaml"),
    )


def log(msg: str) -> None:
    print(f"[drills {time.strftime('%H:%M:%S')}] {msg}", flush=True)


@dataclass
class DrillResult:
    name: str
    lost: str
    recovery: str
    expectation: str
    passed: bool
    notes: list[str] = field(default_factory=list)


@dataclass
class SampleCount:
    """Counts over the targets' ``ringmon_sim_scrapes_total`` in a window."""

    targets: int = 0
    stored: int = 0
    holes: int = 0  # served scrapes with no stored sample
    failed: int = 0  # scrapes recorded as failed (up == 0)
    silent: int = 0  # holes not explained by a recorded failure
    duplicates: int = 0  # one served scrape stored twice
    max_gap_s: float = 0.0  # longest time between two stored samples of a target
    per_target_silent: dict[str, int] = field(default_factory=dict)

    def line(self) -> str:
        return (f"{self.silent} samples silently lost, {self.failed} failed scrapes recorded, "
                f"{self.duplicates} duplicates, {self.stored} stored from {self.targets} targets, "
                f"longest gap {self.max_gap_s:.1f}s")


# -- the webhook receiver (this process) -------------------------------------------------------


class Receiver:
    """The alerter's webhook: records every request; can hold one to let the drill kill the sender."""

    def __init__(self, listen: str) -> None:
        self.listen = listen
        self.received: list[dict] = []
        self.acknowledged: list[dict] = []
        self.abandoned: list[dict] = []
        self.hold_next_s = 0.0
        self.arrived = asyncio.Event()
        self.runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/{tail:.*}", self._receive)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        host, _, port = self.listen.rpartition(":")
        await web.TCPSite(self.runner, host, int(port)).start()

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()

    async def _receive(self, request: web.Request) -> web.Response:
        doc = await request.json()
        rec = {"at": time.time(), "status": doc.get("status"), "groupKey": doc.get("groupKey"),
               "alerts": sorted((a["labels"].get("alertname", ""), a.get("status", ""), a.get("startsAt", ""))
                                for a in doc.get("alerts", []))}
        self.received.append(rec)
        hold, self.hold_next_s = self.hold_next_s, 0.0
        if hold:
            self.arrived.set()
            deadline = time.monotonic() + hold
            while time.monotonic() < deadline:
                transport = request.transport
                if transport is None or transport.is_closing():
                    break
                await asyncio.sleep(0.05)
            transport = request.transport
            if transport is None or transport.is_closing():
                self.abandoned.append(rec)  # the sender went away before the answer: not delivered
                return web.Response(status=503)
        self.acknowledged.append(rec)
        return web.Response(text="ok\n")

    def acked(self, alertname: str, status: str = "firing") -> list[dict]:
        return [r for r in self.acknowledged if r["status"] == status and any(a[0] == alertname for a in r["alerts"])]


# -- the drills --------------------------------------------------------------------------------


class DrillRunner:
    def __init__(self, s: cl.ClusterSettings) -> None:
        self.s = s
        self.storage: Storage | None = None
        self.receiver = Receiver(s.sink_listen)
        self.results: list[DrillResult] = []
        self.rules_path = s.path / "drill-rules.yaml"

    # -- setup ------------------------------------------------------------------------------

    def write_alerting(self) -> None:
        self.s.path.mkdir(parents=True, exist_ok=True)
        self.rules_path.write_text("groups: []\n")
        template = {
            "alerter": {
                "listen": self.s.alerter_listen, "state_db": "x", "rule_files": [str(self.rules_path)],
                "evaluation_interval": "2s", "resend_delay": "1m", "watch_interval": "1s",
                "ownership": "zookeeper", "zookeeper_hosts": "x",
            },
            "global": {"retry_initial": "1s", "retry_max": "5s"},
            "route": {"receiver": "drill", "group_by": ["alertname"], "group_wait": "1s", "group_interval": "5m",
                      "repeat_interval": "4h"},
            "receivers": [{"name": "drill", "webhook_configs": [{"url": f"http://{self.s.sink_listen}/drill"}]}],
        }
        import yaml

        Path(self.s.alerting_template).write_text(yaml.safe_dump(template, sort_keys=False))

    async def setup(self) -> None:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, self._fresh)
        self.write_alerting()
        await self.receiver.start()
        log(f"bringing up the drill cluster in {self.s.path}")
        await loop.run_in_executor(None, cl.up, self.s, 0.0)
        ok = await loop.run_in_executor(None, lambda: cl.check(f"http://{self.s.web_listen}", self.s, 300.0))
        if not ok:
            raise cl.ClusterError("the drill cluster did not come up complete within 300 s (see above)")
        from cli.config import load_config
        from cli.wiring import make_storage

        self.cfg = load_config(self.s.path / "conf" / "ringmon.yaml")
        self.storage = await make_storage(self.cfg.storage)
        await asyncio.sleep(3 * INTERVAL_S)

    def _fresh(self) -> None:
        if (self.s.path / "pids.json").exists():
            cl.down(self.s)
        for sub in ("data", "cassandra", "zookeeper", "logs", "conf"):
            p = self.s.path / sub
            if p.exists():
                import shutil

                shutil.rmtree(p)

    async def teardown(self) -> None:
        if self.storage is not None:
            with contextlib.suppress(Exception):
                await self.storage.close()
        await self.receiver.stop()

    # -- measuring --------------------------------------------------------------------------

    async def count(self, start_s: float, end_s: float) -> SampleCount:
        from storage.matchers import Matcher, MatchOp

        assert self.storage is not None
        start_ms, end_ms = int(start_s * 1000), int(end_s * 1000)
        sims = await self.storage.select([Matcher("__name__", MatchOp.EQ, cl.SIM_SCRAPES)], start_ms, end_ms)
        ups = await self.storage.select([Matcher("__name__", MatchOp.EQ, "up"),
                                         Matcher("job", MatchOp.RE, "pool-.*")], start_ms, end_ms)
        up_by = {(d.series.get("job"), d.series.get("instance")): d for d in ups}
        out = SampleCount()
        for d in sims:
            key = (d.series.get("job"), d.series.get("instance"))
            mask = ~np.isnan(d.values)
            ts, vals = d.timestamps[mask], d.values[mask]
            if len(vals) < 2:
                continue
            out.targets += 1
            out.stored += len(vals)
            order = np.argsort(ts, kind="stable")
            ts, vals = ts[order], vals[order]
            steps = np.diff(vals)
            holes = int(np.sum(np.clip(steps - 1, 0, None)[steps > 0]))
            dup = int(np.sum(steps == 0))
            failed = 0
            u = up_by.get(key)
            if u is not None:
                inside = (u.timestamps > ts[0]) & (u.timestamps < ts[-1])
                failed = int(np.sum(u.values[inside] == 0))
            silent = max(0, holes - failed)
            out.holes += holes
            out.failed += failed
            out.silent += silent
            out.duplicates += dup
            out.max_gap_s = max(out.max_gap_s, float(np.max(np.diff(ts))) / 1000)
            if silent:
                out.per_target_silent[f"{key[0]}/{key[1]}"] = silent
        return out

    async def scraper_doc(self, i: int) -> dict:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as http:
            async with http.get(f"http://{self.s.scraper_listen(i)}/targets") as r:
                doc: dict = await r.json()
                return doc

    async def queue_depths(self) -> dict[str, float | None]:
        from scraper.exposition import sample_sums as parse_metrics

        out: dict[str, float | None] = {}
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as http:
            for i in range(self.s.scrapers):
                try:
                    async with http.get(f"http://{self.s.scraper_listen(i)}/metrics") as r:
                        out[f"scraper-{i + 1}"] = parse_metrics(await r.text()).get(
                            "ringmon_scraper_writer_queue_depth", 0.0)
                except Exception:  # noqa: BLE001 - not answering
                    out[f"scraper-{i + 1}"] = None
        return out

    async def wait_drained(self, timeout_s: float) -> float | None:
        """Seconds until every scraper's writer queue is empty (None: not within ``timeout_s``)."""
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout_s:
            depths = await self.queue_depths()
            if all(v == 0 for v in depths.values()):
                return time.monotonic() - t0
            await asyncio.sleep(1)
        return None

    async def newest_per_target(self, keys: set[str], since_s: float) -> dict[str, float]:
        """First stored sample time (s) after ``since_s`` of each of ``keys``."""
        from storage.matchers import Matcher, MatchOp

        assert self.storage is not None
        data = await self.storage.select([Matcher("__name__", MatchOp.EQ, cl.SIM_SCRAPES)],
                                         int(since_s * 1000), int(time.time() * 1000) + 1000)
        out = {}
        for d in data:
            key = f"{d.series.get('job')}/{d.series.get('instance')}"
            if key in keys and len(d.timestamps):
                after = d.timestamps[d.timestamps > since_s * 1000]
                if len(after):
                    out[key] = float(after.min()) / 1000
        return out

    async def baseline(self) -> SampleCount:
        t0 = time.time()
        await asyncio.sleep(20)
        await self.wait_drained(30)
        c = await self.count(t0, time.time() - INTERVAL_S)
        log(f"baseline (20 s, no fault): {c.line()}")
        return c

    # -- 1. scraper ---------------------------------------------------------------------------

    async def drill_scraper(self) -> DrillResult:
        victim = 1  # scraper-2
        name = f"scraper-{victim + 1}"
        doc = await self.scraper_doc(victim)
        owned = set(doc["owned"]) - {k for k in doc["owned"] if k.startswith("ringmon/")}
        t_start = time.time() - 10
        log(f"SIGKILL {name} (owns {len(owned)} simulated hosts)")
        loop = asyncio.get_running_loop()
        p = cl.signal_process(self.s, name, signal.SIGKILL)
        t_kill = time.time()
        await loop.run_in_executor(None, cl.wait_exit, p.pid, 10)
        takeover = None
        deadline = time.time() + 90
        while time.time() < deadline:
            first = await self.newest_per_target(owned, t_kill + INTERVAL_S)  # a scrape started after the kill
            if set(first) == owned:
                takeover = max(first.values()) - t_kill
                break
            await asyncio.sleep(1)
        log(f"its targets scraped by the others after {takeover if takeover is None else round(takeover, 1)}s; "
            f"restarting {name} on its spool")
        await loop.run_in_executor(None, cl.restart_process, self.s, name)
        await asyncio.sleep(15)
        drained = await self.wait_drained(60)
        await asyncio.sleep(2 * INTERVAL_S)
        c = await self.count(t_start, time.time() - INTERVAL_S)
        moved_silent = sum(v for k, v in c.per_target_silent.items() if k in owned)
        other_silent = c.silent - moved_silent
        passed = takeover is not None and other_silent == 0 and moved_silent <= len(owned) and c.duplicates == 0
        return DrillResult(
            "SIGKILL a scraper",
            f"{moved_silent} in-flight sample(s) of its {len(owned)} targets, {other_silent} elsewhere; "
            f"{c.failed} failed scrapes recorded; longest gap {c.max_gap_s:.1f}s",
            f"takeover {takeover:.1f}s" if takeover is not None else "targets NOT taken over in 90s",
            f"0 lost beyond <=1 in-flight scrape per moved target ({len(owned)})",
            passed,
            [c.line(), f"spool drained {drained:.0f}s after restart" if drained is not None else "spool NOT drained"],
        )

    # -- 2. Cassandra -------------------------------------------------------------------------

    async def drill_cassandra(self, outage_s: float = 60.0) -> DrillResult:
        from services.cassandra.cassandra_node import CassandraNode

        loop = asyncio.get_running_loop()
        node = CassandraNode.load(self.s.path / "cassandra")
        t_start = time.time() - 10
        log(f"stopping Cassandra for {outage_s:g}s")
        await loop.run_in_executor(None, node.stop)
        t_stopped = time.time()
        await asyncio.sleep(max(0.0, outage_s - (time.time() - t_stopped)))
        depths = await self.queue_depths()
        log(f"starting Cassandra again (writer queues now {depths})")
        t_restart = time.time()
        await loop.run_in_executor(None, lambda: node.start(wait=True, timeout_s=300))
        t_ready = time.time()
        drained = await self.wait_drained(300)
        t_drained = time.time()
        await asyncio.sleep(2 * INTERVAL_S)
        c = await self.count(t_start, time.time() - INTERVAL_S)
        passed = c.silent == 0 and c.duplicates == 0 and drained is not None
        return DrillResult(
            "stop Cassandra 60 s",
            f"{c.silent} samples; {c.failed} failed scrapes recorded; peak spooled batches "
            f"{int(sum(v or 0 for v in depths.values()))}",
            f"Cassandra up {t_ready - t_restart:.0f}s after start, spool replayed {t_drained - t_ready:.0f}s later"
            if drained is not None else "spool NOT drained in 300s",
            "0 samples lost (spooled and replayed)",
            passed,
            [c.line()],
        )

    # -- 3. ZooKeeper -------------------------------------------------------------------------

    def _registrations(self) -> tuple[int, int]:
        from discovery.registry import Registry

        reg = Registry(f"127.0.0.1:{self.s.zookeeper_port}", root=self.s.zookeeper_root,
                       connect_timeout=3).start(watch=False)
        try:
            v = reg.snapshot()
            return len(v.scrapers), sum(v.alive_count(p) for p in self.s.pool_names())
        finally:
            reg.stop()

    async def drill_zookeeper(self, outage_s: float = 30.0) -> DrillResult:
        from services.zookeeper.zkserver import ZooKeeperServer

        loop = asyncio.get_running_loop()
        zk = ZooKeeperServer(self.s.path / "zookeeper", port=self.s.zookeeper_port)
        t_start = time.time() - 10
        log(f"stopping ZooKeeper for {outage_s:g}s")
        await loop.run_in_executor(None, zk.stop)
        await asyncio.sleep(outage_s)
        log("starting ZooKeeper again")
        t_restart = time.time()
        await loop.run_in_executor(None, lambda: zk.start(wait=True, timeout=90))
        want = (self.s.scrapers, self.s.pools * self.s.hosts_per_pool)
        back = None
        deadline = time.time() + 120
        regs = (0, 0)
        while time.time() < deadline:
            with contextlib.suppress(Exception):
                regs = await loop.run_in_executor(None, self._registrations)
                if regs == want:
                    back = time.time() - t_restart
                    break
            await asyncio.sleep(0.5)
        await asyncio.sleep(2 * INTERVAL_S)
        await self.wait_drained(60)
        c = await self.count(t_start, time.time() - INTERVAL_S)
        passed = c.silent == 0 and c.duplicates == 0 and back is not None
        return DrillResult(
            "stop ZooKeeper 30 s",
            f"{c.silent} samples; {c.failed} failed scrapes recorded; longest gap {c.max_gap_s:.1f}s",
            f"all {want[0]} scrapers and {want[1]} hosts registered again {back:.1f}s after restart"
            if back is not None else f"registrations NOT back in 120s ({regs})",
            "0 samples lost, registrations back",
            passed,
            [c.line()],
        )

    # -- 4. alerter ---------------------------------------------------------------------------

    async def drill_alerter(self) -> DrillResult:
        loop = asyncio.get_running_loop()
        alertname = f"DrillAlert{int(time.time())}"
        self.receiver.hold_next_s = 30.0
        self.receiver.arrived.clear()
        self.rules_path.write_text(
            "groups:\n  - name: drill\n    interval: 2s\n    rules:\n"
            f"      - alert: {alertname}\n        expr: vector(1)\n        labels:\n          severity: drill\n"
            "        annotations:\n          summary: failure drill\n")
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:
            with contextlib.suppress(Exception):
                token = (self.s.path / "data" / "alerter-api-token").read_text().strip()  # alerter.api_token_file
                await http.post(f"http://{self.s.alerter_listen}/-/reload", headers=bearer(token))
        log(f"rule {alertname} loaded; waiting for its notification to reach the receiver")
        try:
            await asyncio.wait_for(self.receiver.arrived.wait(), 90)
        except TimeoutError:
            return DrillResult("SIGKILL the alerter mid-notification", "-", "-", "delivered once", False,
                               ["the notification never arrived (see run/drills/logs/alerter.log)"])
        p = cl.signal_process(self.s, "alerter", signal.SIGKILL)
        t_kill = time.time()
        await loop.run_in_executor(None, cl.wait_exit, p.pid, 10)
        log("alerter SIGKILLed while the receiver held the request; restarting it")
        await loop.run_in_executor(None, cl.restart_process, self.s, "alerter")
        delivered_at = None
        deadline = time.time() + 120
        while time.time() < deadline:
            acked = self.receiver.acked(alertname)
            if acked:
                delivered_at = acked[0]["at"]
                break
            await asyncio.sleep(0.5)
        await asyncio.sleep(20)  # anything re-sent twice would arrive by now
        acked = self.receiver.acked(alertname)
        received = [r for r in self.receiver.received if any(a[0] == alertname for a in r["alerts"])]
        self.rules_path.write_text("groups: []\n")
        passed = len(acked) == 1
        return DrillResult(
            "SIGKILL the alerter mid-notification",
            f"{1 - min(len(acked), 1)} notifications lost, {max(0, len(acked) - 1)} duplicated "
            f"({len(received)} requests received, {len(self.receiver.abandoned)} abandoned by the killed sender)",
            f"delivered {delivered_at - t_kill:.1f}s after the kill" if delivered_at else "NOT delivered in 120s",
            "delivered exactly once",
            passed,
        )

    # -- 5. web -------------------------------------------------------------------------------

    async def drill_web(self) -> DrillResult:
        loop = asyncio.get_running_loop()
        base = f"http://{self.s.web_listen}"
        urls = [
            f"{base}/api/v1/query_range?query=sum+by+(job)(rate({cl.SIM_SCRAPES}[1m]))&start={{s}}&end={{e}}&step=10",
            f"{base}/pools",
            f"{base}/d/fleet",
            f"{base}/api/v1/query?query=up",
        ]
        log_: list[tuple[float, bool, str]] = []
        stop = asyncio.Event()

        async def client(i: int) -> None:
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20)) as http:
                n = 0
                while not stop.is_set():
                    now = time.time()
                    url = urls[(i + n) % len(urls)].format(s=int(now - 900), e=int(now))
                    n += 1
                    try:
                        async with http.get(url) as r:
                            await r.read()
                            log_.append((time.time(), r.status == 200, str(r.status)))
                    except Exception as exc:  # noqa: BLE001
                        log_.append((time.time(), False, type(exc).__name__))
                        await asyncio.sleep(0.05)

        clients = [asyncio.create_task(client(i)) for i in range(4)]
        await asyncio.sleep(10)
        log("restarting the web server under load (SIGTERM, start again)")
        p = cl.signal_process(self.s, "web", signal.SIGTERM)
        t_stop = time.time()
        await loop.run_in_executor(None, cl.wait_exit, p.pid, 20)
        old_gone = time.time()  # answers before this came from the old process, draining
        await loop.run_in_executor(None, cl.restart_process, self.s, "web")
        recovered = None
        deadline = time.time() + 60
        while time.time() < deadline:
            ok_after = [t for t, ok, _ in log_ if ok and t > old_gone]
            if ok_after:
                recovered = min(ok_after)
                break
            await asyncio.sleep(0.2)
        await asyncio.sleep(10)
        stop.set()
        await asyncio.gather(*clients, return_exceptions=True)
        before = [e for e in log_ if e[0] < t_stop]
        during = [e for e in log_ if t_stop <= e[0] <= (recovered or t_stop)]
        after = [e for e in log_ if recovered and e[0] > recovered]
        failed_after = [e for e in after if not e[1]]
        failed_before = [e for e in before if not e[1]]
        kinds = sorted({e[2] for e in during if not e[1]})
        kinds_after = sorted({e[2] for e in failed_after})
        passed = recovered is not None and not failed_after and not failed_before
        return DrillResult(
            "restart the web server under load",
            f"0 samples (read path only); {sum(1 for e in during if not e[1])} requests refused while down "
            f"({', '.join(kinds) or 'none'}), {len(failed_after)} failed after recovery",
            f"serving again {recovered - t_stop:.1f}s after SIGTERM" if recovered else "NOT serving in 60s",
            "no failed request after recovery",
            passed,
            [f"{len(before)} requests before, {len(during)} during, {len(after)} after the restart",
             f"failures after recovery: {', '.join(kinds_after) or 'none'}"],
        )


def print_table(results: list[DrillResult]) -> None:
    rows = [("Drill", "Lost", "Recovery", "Expected", "Result")]
    rows += [(r.name, r.lost, r.recovery, r.expectation, "PASS" if r.passed else "FAIL") for r in results]
    widths = [max(len(row[i]) for row in rows) for i in range(5)]
    print()
    print("| " + " | ".join(h.ljust(w) for h, w in zip(rows[0], widths, strict=True)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for row in rows[1:]:
        print("| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |")
    print()
    for r in results:
        for n in r.notes:
            print(f"  {r.name}: {n}")
    sys.stdout.flush()


async def main_async(only: list[str], keep: bool) -> int:
    s = drill_settings()
    runner = DrillRunner(s)
    t0 = time.time()
    try:
        await runner.setup()
        base = await runner.baseline()
        for name in only:
            try:
                result = await getattr(runner, f"drill_{name}")()
            except Exception as exc:  # noqa: BLE001 - one drill failing must not hide the others
                result = DrillResult(name, "-", "-", "-", False, [f"drill crashed: {type(exc).__name__}: {exc}"])
            log(f"{result.name}: {'PASS' if result.passed else 'FAIL'} - lost: {result.lost}; {result.recovery}")
            runner.results.append(result)
            await asyncio.sleep(5)
        print(f"\nRingmon failure drills ({s.pools} pools x {s.hosts_per_pool} simulated hosts, 3 scrapers, "
              f"{INTERVAL_S:g} s scrape interval; {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; "
              f"{(time.time() - t0) / 60:.0f} min)")
        print(f"baseline without faults: {base.line()}")
        print_table(runner.results)
    finally:
        await runner.teardown()
        if not keep:
            await asyncio.get_running_loop().run_in_executor(None, cl.down, s)
    return 0 if runner.results and all(r.passed for r in runner.results) else 1


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m drills", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", default=",".join(DRILLS), help="comma-separated subset of: " + ", ".join(DRILLS))
    p.add_argument("--keep", action="store_true", help="leave the drill cluster running afterwards")
    args = p.parse_args(argv)
    only = [d.strip() for d in args.only.split(",") if d.strip()]
    bad = [d for d in only if d not in DRILLS]
    if bad:
        print(f"drills: unknown drill(s) {', '.join(bad)} (known: {', '.join(DRILLS)})", file=sys.stderr)
        return 2
    return exit_status(lambda: asyncio.run(main_async(only, args.keep)), cl.ClusterError, "drills")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
