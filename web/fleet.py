"""The cluster web server's model of the fleet: pools, members and hosts from the watched
ZooKeeper registry view (the last known view is kept while ZooKeeper is away), each target's
health and owner from the scrapers' ``/targets`` documents, or from the ``up`` series and the
hash ring for a target no reachable scraper reports. The pages and the fleet API read it
(``targets_health``, ``pools_summary``, ``status_document``); ``cli/cmd_web.py`` wires it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import aiohttp
from prometheus_client import Counter, Gauge, ProcessCollector

from common.retry import backoff_delays
from web.metrics import WebMetrics

if TYPE_CHECKING:
    from discovery.registry import Registry, RegistryView

log = logging.getLogger("ringmon.web")


@dataclass
class WebOptions:
    listen: str
    zookeeper: str
    zookeeper_root: str = "/ringmon"
    session_timeout: float = 10.0
    scraper_timeout_s: float = 2.0
    health_cache_s: float = 3.0
    vnodes: int = 0  # 0: discovery.ring.DEFAULT_VNODES
    alerters: list[str] = field(default_factory=list)  # alerter HOST:PORT or URL (--alerter)
    alerting_file: str = ""  # the alerters' alerting file (rule files, listen, state backend)


class ClusterWebMetrics(WebMetrics):
    """The web server's request metrics plus its ZooKeeper session, registry view and scrapers."""

    def __init__(self) -> None:
        super().__init__()
        r = self.registry
        ProcessCollector(registry=r)
        self.zk_connected = Gauge("ringmon_web_zookeeper_connected", "1 while the ZooKeeper session is connected.",
                                  registry=r)
        self.view_age = Gauge("ringmon_web_registry_view_age_seconds",
                              "Seconds since the registry view last changed or was confirmed connected.", registry=r)
        self.scrapers_known = Gauge("ringmon_web_scrapers_known", "Scrapers registered in ZooKeeper.", registry=r)
        self.scrapers_reachable = Gauge("ringmon_web_scrapers_reachable",
                                        "Scrapers whose /targets answered on the last fetch.", registry=r)
        self.scraper_fetch_failures = Counter("ringmon_web_scraper_fetch_failures_total",
                                              "Failed fetches of a scraper's /targets.", ["scraper"], registry=r)
        from web.auth import LOGIN_ATTEMPTS

        r.register(LOGIN_ATTEMPTS)  # also on the default registry (standalone's /metrics)


@dataclass
class ScraperDoc:
    """The last ``/targets`` document fetched from one scraper."""

    scraper: str
    listen: str
    doc: dict | None = None
    fetched: float = 0.0  # unix seconds of the last successful fetch
    error: str = ""


@dataclass
class FleetView:
    """What the pages show about the fleet; built from ZooKeeper and the scrapers."""

    opts: WebOptions
    engine: Any
    metrics: ClusterWebMetrics
    registry: Registry | None = None  # once connected
    scraper_info: dict[str, dict] = field(default_factory=dict)  # id -> data of <root>/scrapers/<id>
    docs: dict[str, ScraperDoc] = field(default_factory=dict)
    view_confirmed: float = 0.0
    _health_at: float = 0.0
    _health_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    _session: aiohttp.ClientSession | None = None
    _tasks: list[asyncio.Task] = field(default_factory=list)
    _info_dirty: asyncio.Event = field(default_factory=asyncio.Event)
    _stopping: bool = False

    # -- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.opts.scraper_timeout_s),
                                              trust_env=False)
        self._tasks.append(asyncio.create_task(self._connect_loop(), name="web-zookeeper"))

    async def stop(self) -> None:
        self._stopping = True
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._session is not None:
            await self._session.close()
        if self.registry is not None:
            await asyncio.get_running_loop().run_in_executor(None, self.registry.stop)

    async def _connect_loop(self) -> None:
        """Connect (retrying while ZooKeeper is away), then keep the scrapers' addresses current."""
        from discovery.registry import Registry, RegistryError

        loop = asyncio.get_running_loop()
        delays = backoff_delays(1.0, 10.0)
        while self.registry is None and not self._stopping:
            candidate = Registry(self.opts.zookeeper, root=self.opts.zookeeper_root,
                                 session_timeout=self.opts.session_timeout, connect_timeout=5.0)
            try:
                await loop.run_in_executor(None, candidate.start, True)
            except (RegistryError, ValueError) as exc:
                delay = next(delays)
                log.warning("zookeeper not reachable yet, retrying", extra={"error": str(exc), "in_s": delay})
                await asyncio.sleep(delay)
                continue
            self.registry = candidate
            candidate.add_listener(lambda _view: self._info_dirty.set(), loop)
            log.info("registry connected", extra={"zookeeper": self.opts.zookeeper})
        self._info_dirty.set()
        while True:
            # re-read the scrapers' data on a change, and every 15 s in case a change was missed
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._info_dirty.wait(), 15.0)
            self._info_dirty.clear()
            await self._refresh_scraper_info()

    async def _refresh_scraper_info(self) -> None:
        reg = self.registry
        if reg is None:
            return
        loop = asyncio.get_running_loop()
        try:
            info = await loop.run_in_executor(None, reg.scrapers)
        except Exception as exc:  # noqa: BLE001 - ZooKeeper away: keep the last known addresses
            log.debug("cannot read scraper addresses, keeping the last known", extra={"error": str(exc)})
            return
        self.scraper_info = info
        self.view_confirmed = time.time()

    # -- fleet --------------------------------------------------------------------------------

    def view(self) -> RegistryView:
        from discovery.registry import RegistryView

        if self.registry is None:
            return RegistryView()
        v = self.registry.view
        if v.connected:
            self.view_confirmed = time.time()
        return v

    def scraper_ids(self) -> list[str]:
        v = self.view()
        return sorted(set(v.scrapers) | set(self.scraper_info))

    async def _fetch(self, sid: str) -> None:
        listen = str(self.scraper_info.get(sid, {}).get("listen", ""))
        doc = self.docs.get(sid) or ScraperDoc(sid, listen)
        doc.listen = listen or doc.listen
        self.docs[sid] = doc
        if not doc.listen:
            doc.error = "no listen address published"
            return
        assert self._session is not None
        try:
            async with self._session.get(f"http://{doc.listen}/targets") as resp:
                if resp.status != 200:
                    raise RuntimeError(f"HTTP {resp.status}")
                doc.doc = await resp.json()
                doc.fetched = time.time()
                doc.error = ""
        except Exception as exc:  # noqa: BLE001 - any failure is shown, the last document kept
            doc.error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            self.metrics.scraper_fetch_failures.labels(sid).inc()

    async def refresh_health(self, force: bool = False) -> None:
        """Fetch every live scraper's /targets (at most once per ``health_cache_s``)."""
        async with self._health_lock:
            if not force and time.monotonic() - self._health_at < self.opts.health_cache_s:
                return
            ids = self.scraper_ids()
            if any(not self.scraper_info.get(sid, {}).get("listen") for sid in ids):
                await self._refresh_scraper_info()  # a scraper joined since the last read
            for gone in set(self.docs) - set(ids):
                del self.docs[gone]
            await asyncio.gather(*(self._fetch(sid) for sid in ids))
            self._health_at = time.monotonic()
            self.metrics.scrapers_known.set(len(ids))
            self.metrics.scrapers_reachable.set(sum(1 for d in self.docs.values() if not d.error))

    async def dropped_targets(self) -> list[dict]:
        """Targets relabelling dropped, as the scrapers last reported them."""
        await self.refresh_health()
        return [dict(d) for _, doc in sorted(self.docs.items()) if doc.doc for d in doc.doc.get("dropped", [])]

    async def metadata_records(self, per_target: bool, metric: str) -> list[dict]:
        """Every reachable scraper's ``/metadata`` records (fetched in parallel on each call)."""
        await self.refresh_health()  # also learns the address of a scraper that just joined
        assert self._session is not None
        session = self._session

        async def fetch(sid: str) -> list[dict]:
            listen = str(self.scraper_info.get(sid, {}).get("listen", ""))
            if not listen:
                return []
            try:
                params = {"metric": metric, "targets": "1" if per_target else ""}
                async with session.get(f"http://{listen}/metadata", params=params) as resp:
                    if resp.status != 200:
                        raise RuntimeError(f"HTTP {resp.status}")
                    return list((await resp.json()).get("targets") or [])
            except Exception as exc:  # noqa: BLE001 - a scraper away costs its targets' metadata only
                log.warning("scraper metadata unavailable", extra={"scraper": sid, "error": repr(exc)})
                self.metrics.scraper_fetch_failures.labels(sid).inc()
                return []

        parts = await asyncio.gather(*(fetch(sid) for sid in self.scraper_ids()))
        return [rec for part in parts for rec in part]

    async def _up_values(self) -> dict[str, float]:
        """``up`` per target key, for targets no scraper reported (one instant query)."""
        out: dict[str, float] = {}
        try:
            res = await self.engine.instant_query("up", int(time.time() * 1000))
        except Exception as exc:  # noqa: BLE001 - storage away: health stays unknown
            log.debug("cannot read up", extra={"error": str(exc)})
            return out
        for s in res.series:
            if len(s.values) == 0:
                continue
            out[f"{s.labels.get('job', '')}/{s.labels.get('instance', '')}"] = float(s.values[-1])
        return out

    async def targets_health(self) -> list[dict]:
        from discovery.balance import OverridesDoc, resolve_owner
        from discovery.ring import DEFAULT_VNODES, ScraperRing

        await self.refresh_health()
        by_key: dict[str, dict] = {}
        for sid, d in sorted(self.docs.items()):
            if d.doc is None:
                continue
            for rec in d.doc.get("targets", []):
                rec = dict(rec)
                key = rec.get("key") or rec.get("target")
                if not key:
                    continue
                rec["key"] = key
                rec["owner"] = rec.get("owner") or sid
                if d.error:  # the scraper is away: its last word, marked as such
                    rec["last_error"] = f"scraper {sid} unreachable ({d.error}); last report {rec.get('last_error', '')}"
                by_key.setdefault(key, rec)
        view = self.view()
        ring = ScraperRing(view.scrapers or tuple(self.scraper_info), self.opts.vnodes or DEFAULT_VNODES)
        try:  # the ring's bounded-load overrides: the owner is the scraper that scrapes the target
            overrides = OverridesDoc.decode(view.ring_overrides).overrides
        except ValueError:
            overrides = {}
        missing = [t for t in view.targets() if t.key not in by_key]
        up = await self._up_values() if missing else {}
        for t in missing:
            value = up.get(t.key)
            by_key[t.key] = {
                "key": t.key,
                "pool": t.pool,
                "address": t.address,
                "url": t.url,
                "health": "unknown" if value is None else ("up" if value == 1.0 else "down"),
                "owner": resolve_owner(ring, overrides, t.key) or "",
                "last_error": "" if value is not None else "no scraper reported this target yet",
            }
        return sorted(by_key.values(), key=lambda r: r["key"])

    async def pools_summary(self) -> list[dict]:
        from discovery.registry import ALIVE

        health = {h["key"]: h for h in await self.targets_health()}
        view = self.view()
        out = []
        for pool in sorted(view.pools):
            members = view.members.get(pool, ())
            hosts = []
            for m in sorted(members, key=lambda m: m.address):
                h = health.get(f"{pool}/{m.address}", {})
                hosts.append({
                    "address": m.address,
                    "status": m.status,
                    "health": h.get("health", "unknown") if m.status == ALIVE else "unknown",
                    "last_scrape": h.get("last_scrape"),
                    "last_error": h.get("last_error", ""),
                })
            out.append({
                "name": pool,
                "running": view.alive_count(pool),
                "hosts": hosts,
                "settings": view.pools[pool].to_dict(),
            })
        return out

    def status_document(self) -> dict:
        """``/-/status``: what ``ringmon status`` reads from the web server."""
        view = self.view()
        return {
            "zookeeper_connected": bool(view.connected),
            "registry_view_age_s": round(time.time() - self.view_confirmed, 1) if self.view_confirmed else None,
            "pools": len(view.pools),
            "targets": len(view.targets()),
            "scrapers": {
                sid: {"listen": d.listen, "reachable": not d.error, "error": d.error,
                      "last_fetch": d.fetched}
                for sid, d in sorted(self.docs.items())
            },
        }


