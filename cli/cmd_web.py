"""``ringmon web``: the web server of cluster mode (pages, Prometheus API, its own /metrics).

    ringmon web --config configs/cluster/ringmon.yaml [--listen 127.0.0.1:8080]

Reads samples from the configured storage (Cassandra in a cluster) through the query
engine, and the fleet from ZooKeeper: pools, their ALIVE members and hosts come from the
watched registry view (the last known view is kept while ZooKeeper is away), the health of
each target and its owner from the scrapers' ``/targets`` documents (every scraper publishes
its listen address in ``<root>/scrapers/<id>``). A target no reachable scraper reports gets
its health from the ``up`` series and its owner from the hash ring. ``/metrics`` serves the
server's own metrics (requests, latency, ZooKeeper session, scraper reachability).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import aiohttp
from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    Counter,
    Gauge,
    ProcessCollector,
    generate_latest,
)

from cli.errors import UserError
from common.retry import backoff_delays
from web.metrics import WebMetrics

if TYPE_CHECKING:
    from alerting.notifier.journal import NotificationJournal
    from cli.config import RingmonConfig
    from query.engine import Engine
    from storage.base import Storage
    from web.alerting_remote import RemoteAlerters

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
    registry: Any = None  # discovery.registry.Registry once connected
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

    def view(self):
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


class ClusterWeb:
    """The running web server: storage, engine, fleet view, HTTP app. ``start`` then ``stop``."""

    def __init__(self, cfg: RingmonConfig, opts: WebOptions) -> None:
        self.cfg = cfg
        self.opts = opts
        self.metrics = ClusterWebMetrics()
        self.storage: Storage | None = None
        self.engine: Engine | None = None
        self.fleet: FleetView | None = None
        self.alerters: RemoteAlerters | None = None
        self.journal: NotificationJournal | None = None  # behind the notifications page and webhook sink
        self.runner: web.AppRunner | None = None
        self.port = 0
        self._am_urls: list[str] | None = None

    async def start(self) -> None:
        from alerting.notifier.journal import NotificationJournal
        from cli.webparts import web_app_options
        from cli.wiring import make_storage, serve_app
        from query.api import add_api_routes
        from query.engine import Engine
        from web.app import create_app
        from web.prom_api import add_fleet_api_routes
        from web.status import add_status_routes

        try:
            self.storage = await make_storage(self.cfg.storage)
        except UserError:
            raise
        except Exception as exc:  # noqa: BLE001 - one line for the operator, not a traceback
            raise UserError(f"storage: cannot open the {self.cfg.storage.backend} backend: {exc}") from None
        self.engine = Engine(self.storage, limits=self.cfg.query.limits(), isolate=self.cfg.query.isolate)
        try:
            views = self._alerting_views()
        except UserError:
            await self.stop()
            raise
        self.fleet = FleetView(self.opts, self.engine, self.metrics)
        await self.fleet.start()
        self.journal = NotificationJournal.in_data_dir(self.cfg.data_dir)
        app = create_app(
            engine=self.engine,
            pools_provider=self.fleet.pools_summary,
            targets_provider=self.fleet.targets_health,
            middlewares=[self.metrics.middleware()],
            **web_app_options(self.cfg, self.engine, views, self.storage, self.journal),
        )
        add_api_routes(app, self.engine, self.storage)
        add_fleet_api_routes(app, self._api_sources())
        app.router.add_get("/metrics", self._metrics, name="metrics")
        app.router.add_get("/-/status", self._status, name="status")
        add_status_routes(app, self.fleet.pools_summary)  # /-/pools, for `ringmon pools --url`
        try:
            self.runner, self.port = await serve_app(app, self.opts.listen, "web")
        except UserError:
            await self.stop()
            raise

    def _api_sources(self):
        """The API's fleet endpoints over the scrapers' documents and the alerters' APIs."""
        from cli.webparts import api_flags, head_series_of, retention_text
        from web.prom_api import FleetApiSources

        assert self.fleet is not None
        return FleetApiSources(
            targets=self.fleet.targets_health, dropped=self.fleet.dropped_targets,
            metadata=self.fleet.metadata_records,
            rules_status=self.alerters.rules_status if self.alerters is not None else None,
            alertmanagers=self._alertmanagers, head_series=head_series_of(self.storage),
            config_file=self.cfg.source,
            flags=api_flags(self.cfg, mode="cluster", **{"zookeeper": self.opts.zookeeper}),
            retention=retention_text(),
        )

    def _alertmanagers(self) -> list[str]:
        """The Alertmanagers the alerters forward to, from the alerting file (read once)."""
        if self._am_urls is None:
            self._am_urls = []
            if self.opts.alerting_file:
                from alerting.service import AlerterSettings, load_alerting_file
                from web.prom_api import alertmanager_urls

                try:
                    _, notifier_cfg = load_alerting_file(self.opts.alerting_file, AlerterSettings())
                    self._am_urls = alertmanager_urls(notifier_cfg)
                except Exception as exc:  # noqa: BLE001 - the alerters report their own config errors
                    log.warning("alerting file unreadable for /api/v1/alertmanagers", extra={"error": str(exc)})
        return self._am_urls

    def _alerting_views(self):
        """Alerts, silences, rules and the rule editor over the alerters' HTTP APIs."""
        from pathlib import Path

        from web.alerting_remote import cluster_alerting_views

        history = self.cfg.web.rules_history_dir or str(Path(self.cfg.data_dir) / "rules-history")
        try:
            views, self.alerters = cluster_alerting_views(
                alerter_addresses=self.opts.alerters, alerting_file=self.opts.alerting_file,
                rule_files=list(self.cfg.rules.files), storage=self.storage, history_dir=history,
                zookeeper_client=self._zookeeper_client, data_dir=self.cfg.data_dir)
        except ValueError as exc:
            raise UserError(str(exc)) from None
        return views

    def _zookeeper_client(self):
        """The registry's kazoo client once connected (alerters publish their address there)."""
        reg = self.fleet.registry if self.fleet is not None else None
        return reg.zk if reg is not None else None

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None
        if self.alerters is not None:
            await self.alerters.close()
        if self.fleet is not None:
            await self.fleet.stop()
        if self.storage is not None:
            await self.storage.close()
            self.storage = None
        if self.journal is not None:
            await self.journal.close()
            self.journal = None

    async def _metrics(self, request: web.Request) -> web.Response:
        assert self.fleet is not None
        await self.fleet.refresh_health()  # keeps the scraper reachability gauges current (cached)
        view = self.fleet.view()
        self.metrics.zk_connected.set(1 if view.connected else 0)
        if self.fleet.view_confirmed:
            self.metrics.view_age.set(time.time() - self.fleet.view_confirmed)
        return web.Response(body=generate_latest(self.metrics.registry), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _status(self, request: web.Request) -> web.Response:
        assert self.fleet is not None
        await self.fleet.refresh_health()
        return web.json_response(self.fleet.status_document())


def options_from(args: argparse.Namespace, cfg: RingmonConfig) -> WebOptions:
    zk_cfg = getattr(cfg.discovery, "zookeeper", None)
    zookeeper = args.zookeeper or (zk_cfg.hosts if zk_cfg else None) or os.environ.get("RINGMON_ZOOKEEPER")
    if not zookeeper:
        raise UserError(f"{cfg.source or 'config'}: discovery.zookeeper.hosts is not set (or pass --zookeeper)")
    return WebOptions(
        listen=args.listen or cfg.web.listen,
        zookeeper=zookeeper,
        zookeeper_root=args.zookeeper_root or os.environ.get("RINGMON_ZOOKEEPER_ROOT", "/ringmon"),
        session_timeout=float(zk_cfg.session_timeout) if zk_cfg else 10.0,
        scraper_timeout_s=args.scraper_timeout,
        alerters=list(getattr(args, "alerter", None) or cfg.web.alerters),
        alerting_file=getattr(args, "alerting", None) or cfg.alerting,
    )


async def run_web(args: argparse.Namespace) -> int:
    from cli.config import load_config

    cfg = load_config(args.config)
    opts = options_from(args, cfg)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    server = ClusterWeb(cfg, opts)
    try:
        await server.start()
        print(f"ringmon web: http://{opts.listen.rpartition(':')[0] or '127.0.0.1'}:{server.port}/", flush=True)
        await stop.wait()
    finally:
        with contextlib.suppress(Exception):
            await server.stop()
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("web", help="run the web server of cluster mode (pages, API, /metrics)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True, help="YAML config (storage, discovery.zookeeper, web.listen)")
    p.add_argument("--listen", help="HOST:PORT (default: web.listen from the config)")
    p.add_argument("--zookeeper", metavar="HOSTS", help="overrides discovery.zookeeper.hosts")
    p.add_argument("--zookeeper-root", metavar="PATH", help="default /ringmon (or $RINGMON_ZOOKEEPER_ROOT)")
    p.add_argument("--scraper-timeout", type=float, default=2.0, metavar="SECONDS",
                   help="timeout of each fetch of a scraper's /targets (default: %(default)s)")
    p.add_argument("--alerter", action="append", metavar="HOST:PORT",
                   help="an alerter's HTTP API for the alert, silence and rule pages (repeatable; "
                        "default: alerter.listen of the alerting file)")
    p.add_argument("--alerting", metavar="PATH",
                   help="the alerters' alerting file: rule files the editor edits, alerter address, "
                        "state backend (default: the config's alerting key)")
    p.set_defaults(func=lambda args: asyncio.run(run_web(args)))
