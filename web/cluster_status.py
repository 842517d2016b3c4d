"""The cluster's health as ``ringmon status`` prints it: every component, the scraper ring
and the write lag.

``StatusCollector`` finds the components through ZooKeeper: the scrapers in
``<root>/scrapers/<id>`` (each publishes its listen address) and the other Ringmon processes
as members of the ``ringmon`` self-monitoring pool (a member is recognised by the metrics
its /metrics serves: web, rollup, alerter). It checks ZooKeeper and the store directly,
fetches each scraper's /metrics and /targets, the rollup lag and the alerter's notification
failures from their /metrics, and reads the write lag (age of the newest stored ``up``
sample per scraper) from storage. Something down is one line saying what and why.
``instance_report`` asks a standalone instance, which answers for itself (``/-/status``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import aiohttp

from web.status import StatusCheck, alerter_detail, rollup_detail

if TYPE_CHECKING:
    from discovery.registry import RegistryView
    from storage.base import Storage

SELF_POOL = "ringmon"


@dataclass(frozen=True)
class StoreAccess:
    """The store the cluster writes to, as the collector checks it: a SQLite file or a
    Cassandra cluster (whose keyspace must exist), and how to open it for the write lag."""

    open: Callable[[], Awaitable[Storage]]
    backend: str  # "sqlite" or "cassandra"
    sqlite_path: str = ""
    cassandra_hosts: tuple[str, ...] = ()
    cassandra_port: int = 9042
    keyspace: str = ""


@dataclass
class StatusReport:
    checks: list[StatusCheck] = field(default_factory=list)
    ring: dict[str, int] = field(default_factory=dict)  # scraper -> targets owned (as it reports)
    ring_expected: dict[str, int] = field(default_factory=dict)  # scraper -> targets by the ring over ZooKeeper
    write_lag: dict[str, dict] = field(default_factory=dict)  # scraper -> {newest_sample_age_s, queue_depth}

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)


def component_kind(metrics: dict[str, float]) -> str:
    names = set(metrics)
    if any(n.startswith("ringmon_web_") for n in names):
        return "web"
    if any(n.startswith("ringmon_rollup_") for n in names):
        return "rollup"
    if any(n.startswith(("ringmon_rule_", "ringmon_notif", "ringmon_alert")) for n in names):
        return "alerter"
    if any(n.startswith("ringmon_scraper_") for n in names):
        return "scraper"
    return "unknown"


def _err(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class StatusCollector:
    """One pass over the cluster: ``run`` returns the report.

    ``web_listen`` is the cluster web's address (checked even when not in the ``ringmon``
    pool); ``parse_metrics`` reads a /metrics body into each sample name's sum (the scraper's
    ``exposition.sample_sums``: web/ does not import the scraper)."""

    def __init__(self, zookeeper: str, root: str, timeout_s: float, *, store: StoreAccess, web_listen: str,
                 parse_metrics: Callable[[str], dict[str, float]]) -> None:
        self.store = store
        self.web_listen = web_listen
        self.parse_metrics = parse_metrics
        self.zookeeper = zookeeper
        self.root = root
        self.timeout_s = timeout_s
        self.report = StatusReport()

    async def run(self) -> StatusReport:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout_s),
                                         trust_env=False) as http:
            self.http = http
            view, scraper_info = await self._zookeeper()
            cassandra_ok = await self._cassandra()
            docs = await self._scrapers(view, scraper_info)
            await self._self_pool(view)
            if cassandra_ok:
                await self._write_lag(docs)
        return self.report

    # -- ZooKeeper ----------------------------------------------------------------------------

    async def _zookeeper(self) -> tuple[RegistryView | None, dict[str, dict]]:
        from discovery.registry import Registry, RegistryError

        logging.getLogger("kazoo.client").setLevel(logging.CRITICAL)
        loop = asyncio.get_running_loop()
        reg = Registry(self.zookeeper, root=self.root, connect_timeout=self.timeout_s)

        def read() -> tuple[RegistryView, dict[str, dict]]:
            reg.start(watch=False)
            try:
                return reg.snapshot(), reg.scrapers()
            finally:
                reg.stop()

        try:
            view, info = await loop.run_in_executor(None, read)
        except (RegistryError, ValueError, Exception) as exc:  # noqa: BLE001 - any failure is one line
            self.report.checks.append(StatusCheck("zookeeper", self.zookeeper, False, f"cannot reach ZooKeeper: {_err(exc)}"))
            return None, {}
        members = sum(len(m) for p, m in view.members.items() if p != SELF_POOL)
        alive = sum(view.alive_count(p) for p in view.pools if p != SELF_POOL)
        self.report.checks.append(StatusCheck(
            "zookeeper", self.zookeeper, True,
            f"{len([p for p in view.pools if p != SELF_POOL])} pools, {alive}/{members} hosts ALIVE, "
            f"{len(view.scrapers)} scrapers registered"))
        return view, info

    # -- Cassandra ----------------------------------------------------------------------------

    async def _cassandra(self) -> bool:
        c = self.store
        if c.backend != "cassandra":
            self.report.checks.append(StatusCheck("storage", c.sqlite_path, True, "SQLite (standalone storage)"))
            return True
        address = f"{','.join(c.cassandra_hosts)}:{c.cassandra_port}"

        def probe() -> str:
            from cassandra.cluster import Cluster

            logging.getLogger("cassandra").setLevel(logging.CRITICAL)
            cluster = Cluster(list(c.cassandra_hosts), port=c.cassandra_port, protocol_version=5, connect_timeout=self.timeout_s,
                              control_connection_timeout=self.timeout_s)
            try:
                session = cluster.connect()
                row = session.execute("SELECT release_version FROM system.local", timeout=self.timeout_s).one()
                ks = session.execute("SELECT keyspace_name FROM system_schema.keyspaces WHERE keyspace_name = %s",
                                     (c.keyspace,), timeout=self.timeout_s).one()
                return f"Cassandra {row.release_version}, keyspace {c.keyspace} " + (
                    "present" if ks else "MISSING (run `ringmon storage init`)")
            finally:
                cluster.shutdown()

        try:
            detail = await asyncio.wait_for(asyncio.get_running_loop().run_in_executor(None, probe),
                                            self.timeout_s * 3)
        except Exception as exc:  # noqa: BLE001
            self.report.checks.append(StatusCheck("cassandra", address, False, f"cannot reach Cassandra: {_err(exc)}"))
            return False
        self.report.checks.append(StatusCheck("cassandra", address, "MISSING" not in detail, detail))
        return "MISSING" not in detail

    # -- HTTP components ----------------------------------------------------------------------

    async def _get(self, url: str) -> tuple[str | None, str]:
        try:
            async with self.http.get(url) as resp:
                if resp.status != 200:
                    return None, f"HTTP {resp.status} from {url}"
                return await resp.text(), ""
        except Exception as exc:  # noqa: BLE001
            return None, f"{url}: {_err(exc) if str(exc) else type(exc).__name__}"

    async def _scrapers(self, view: RegistryView | None, info: dict[str, dict]) -> dict[str, dict]:
        from discovery.balance import OverridesDoc, loads
        from discovery.ring import DEFAULT_VNODES, ScraperRing

        docs: dict[str, dict] = {}
        if view is None:
            return docs
        ring = ScraperRing(view.scrapers, DEFAULT_VNODES)
        try:  # the ring's bounded-load overrides count where the targets are scraped
            overrides = OverridesDoc.decode(view.ring_overrides).overrides
        except ValueError:
            overrides = {}
        self.report.ring_expected = loads(ring, overrides, (t.key for t in view.targets()))

        async def one(sid: str) -> None:
            listen = str(info.get(sid, {}).get("listen", ""))
            if not listen:
                self.report.checks.append(StatusCheck(sid, "?", False, "scraper published no listen address in ZooKeeper"))
                return
            (mtext, merr), (ttext, terr) = await asyncio.gather(self._get(f"http://{listen}/metrics"),
                                                                self._get(f"http://{listen}/targets"))
            if mtext is None or ttext is None:
                self.report.checks.append(StatusCheck(sid, listen, False, f"scraper not answering: {merr or terr}"))
                return
            m = self.parse_metrics(mtext)
            try:
                doc = json.loads(ttext)
            except ValueError:
                self.report.checks.append(StatusCheck(sid, listen, False, "/targets is not JSON"))
                return
            docs[sid] = doc
            targets = doc.get("targets", [])
            up = sum(1 for t in targets if t.get("health") == "up")
            down = sum(1 for t in targets if t.get("health") == "down")
            owned = len(doc.get("owned", []))
            self.report.ring[sid] = owned
            queue = m.get("ringmon_scraper_writer_queue_depth", 0.0)
            self.report.write_lag.setdefault(sid, {})["writer_queue_depth"] = queue
            zk = "zk connected" if doc.get("zookeeper_connected") else "zk DISCONNECTED (last known view)"
            self.report.checks.append(StatusCheck(
                sid, listen, True,
                f"owns {owned} targets ({up} up, {down} down), writer queue {queue:g}, {zk}"
                + (", records pool members" if doc.get("recorder") else "")))

        await asyncio.gather(*(one(sid) for sid in sorted(set(view.scrapers) | set(info))))
        if not view.scrapers:
            self.report.checks.append(StatusCheck("scrapers", "-", False, "no scraper is registered in ZooKeeper"))
        return docs

    async def _self_pool(self, view: RegistryView | None) -> None:
        """Web, rollup and alerter: the members of the ``ringmon`` pool that are not scrapers."""
        addresses: set[str] = set()
        if view is not None:
            addresses |= {m.address for m in view.members.get(SELF_POOL, ())}
        addresses.add(self.web_listen)
        scraper_addresses = {c.address for c in self.report.checks}

        async def one(address: str) -> None:
            if address in scraper_addresses:
                return
            text, err = await self._get(f"http://{address}/metrics")
            if text is None:
                kind = "web" if address == self.web_listen else "component"
                self.report.checks.append(StatusCheck(kind, address, False, f"not answering: {err}"))
                return
            m = self.parse_metrics(text)
            kind = component_kind(m)
            if kind == "scraper":
                return
            if kind == "web":
                detail = (f"zk {'connected' if m.get('ringmon_web_zookeeper_connected') else 'DISCONNECTED'}, "
                          f"scrapers reachable {m.get('ringmon_web_scrapers_reachable', 0):g}/"
                          f"{m.get('ringmon_web_scrapers_known', 0):g}, "
                          f"{m.get('ringmon_web_requests_total', 0):g} requests served")
            elif kind == "rollup":
                detail = rollup_detail(m)
            elif kind == "alerter":
                detail = alerter_detail(m)
            else:
                detail = "answers /metrics"
            self.report.checks.append(StatusCheck(kind, address, True, detail))

        await asyncio.gather(*(one(a) for a in sorted(addresses)))

    # -- write lag ----------------------------------------------------------------------------

    async def _write_lag(self, docs: dict[str, dict]) -> None:
        """Age of the newest stored ``up`` sample of each scraper's targets (storage read)."""
        from query.engine import Engine

        owner = {t.get("target") or t.get("key"): sid for sid, d in docs.items() for t in d.get("targets", [])}
        try:
            storage = await asyncio.wait_for(self.store.open(), self.timeout_s * 3)
        except Exception as exc:  # noqa: BLE001
            self.report.checks.append(StatusCheck("write lag", "-", False, f"cannot open storage: {_err(exc)}"))
            return
        try:
            now_ms = int(time.time() * 1000)
            res = await asyncio.wait_for(
                Engine(storage).instant_query("max by (job, instance) (timestamp(up))", now_ms), self.timeout_s * 3)
        except Exception as exc:  # noqa: BLE001
            self.report.checks.append(StatusCheck("write lag", "-", False, f"cannot read up from storage: {_err(exc)}"))
            return
        finally:
            await storage.close()
        newest: dict[str, float] = {}
        stalest: dict[str, float] = {}
        for s in res.series:
            key = f"{s.labels.get('job', '')}/{s.labels.get('instance', '')}"
            sid = owner.get(key)
            if sid is None or len(s.values) == 0:
                continue
            newest[sid] = max(newest.get(sid, 0.0), float(s.values[-1]))
            stalest[sid] = min(stalest.get(sid, float("inf")), float(s.values[-1]))
        for sid in docs:
            entry = self.report.write_lag.setdefault(sid, {})
            entry["newest_sample_age_s"] = round(now_ms / 1000 - newest[sid], 1) if sid in newest else None
            entry["stalest_target_age_s"] = round(now_ms / 1000 - stalest[sid], 1) if sid in stalest else None


def render(report: StatusReport) -> str:
    lines = []
    width = max([len(c.component) for c in report.checks] + [10])
    awidth = max([len(c.address) for c in report.checks] + [8])
    for c in report.checks:
        lines.append(f"{c.component:<{width}}  {c.address:<{awidth}}  {'ok  ' if c.ok else 'DOWN'}  {c.detail}")
    if report.ring or report.ring_expected:
        lines.append("")
        total = sum(report.ring_expected.values())
        lines.append(f"ring: {len(report.ring_expected)} scrapers, {total} targets")
        for sid in sorted(set(report.ring) | set(report.ring_expected)):
            owned = report.ring.get(sid)
            expected = report.ring_expected.get(sid)
            note = "" if owned is None or expected is None or owned == expected else \
                f"  (ring over ZooKeeper says {expected}: assignment still settling)"
            lines.append(f"  {sid:<{width}}  {'?' if owned is None else owned} targets{note}")
    if report.write_lag:
        lines.append("")
        lines.append("write lag (age of the stored `up` samples of each scraper's targets):")
        for sid, d in sorted(report.write_lag.items()):
            age, worst = d.get("newest_sample_age_s"), d.get("stalest_target_age_s")
            lines.append(f"  {sid:<{width}}  newest sample {'unknown' if age is None else f'{age:.1f}s'} old, "
                         f"stalest target's last sample {'unknown' if worst is None else f'{worst:.1f}s'} old, "
                         f"writer queue {d.get('writer_queue_depth', 0):g} batches")
    lines.append("")
    down = [c for c in report.checks if not c.ok]
    lines.append("all components healthy" if not down else f"{len(down)} component(s) DOWN: "
                 + ", ".join(c.component for c in down))
    return "\n".join(lines)


async def instance_report(url: str, timeout_s: float) -> StatusReport:
    """The report of one standalone instance, from its ``/-/status``."""
    report = StatusReport()
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout_s), trust_env=False) as http:
            async with http.get(f"{url.rstrip('/')}/-/status") as resp:
                if resp.status != 200:
                    raise ValueError(f"HTTP {resp.status} from {url}/-/status (is it a standalone instance?)")
                doc = await resp.json()
        report.checks = [StatusCheck(**c) for c in doc["checks"]]
        report.write_lag = dict(doc.get("write_lag") or {})
    except Exception as exc:  # noqa: BLE001 - not answering is the finding, one line
        report.checks.append(StatusCheck("standalone", url, False, f"not answering: {_err(exc)}"))
    return report
