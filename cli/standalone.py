"""Standalone mode: every component in one process on embedded parts.

SQLite storage, static-file discovery plus in-process host agents, one scrape pool, the
query engine and the web server (pages and the Prometheus HTTP API). ``make run`` starts it.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest

from agent.server import AgentServer
from alerting.channels.base import LocalReceivers
from alerting.notifier.journal import NotificationJournal
from cli.config import RingmonConfig
from cli.errors import UserError
from cli.webparts import alerting_views, api_flags, head_series_of, retention_text, web_app_options
from cli.wiring import listen_url, make_storage, make_writer, serve_app, watch_process
from discovery.static import StaticDiscovery
from discovery.target import ScrapeSettings, Target
from query.api import add_api_routes
from query.engine import Engine
from scraper.pool import ScrapePool
from storage.base import SampleWriter, Storage
from web.app import create_app
from web.metrics import WebMetrics
from web.prom_api import FleetApiSources, add_fleet_api_routes, alertmanager_urls
from web.status import InstanceStatus, add_status_routes

if TYPE_CHECKING:
    from alerting.service import AlerterService

log = logging.getLogger("ringmon.standalone")


@dataclass
class Standalone:
    """The running standalone system; ``start`` brings it up, ``stop`` takes it down in order."""

    cfg: RingmonConfig
    storage: Storage | None = None
    writer: SampleWriter | None = None
    scrape_writer: SampleWriter | None = None  # the scrape pool's (grouped) writer
    agents: list[AgentServer] = field(default_factory=list)
    static: StaticDiscovery | None = None
    pool: ScrapePool | None = None
    engine: Engine | None = None
    runner: web.AppRunner | None = None
    web_port: int = 0
    alerter: AlerterService | None = None  # when an alerting file is configured
    journal: NotificationJournal | None = None  # what the local receivers were handed
    local: LocalReceivers = field(default_factory=LocalReceivers)
    metrics_registry: CollectorRegistry = field(default_factory=CollectorRegistry)
    _tasks: list[asyncio.Task] = field(default_factory=list)
    _stopping: asyncio.Event = field(default_factory=asyncio.Event)

    async def start(self) -> None:
        cfg = self.cfg
        # Validate what can fail on input before anything starts listening.
        if cfg.discovery.static_file:
            try:
                self.static = StaticDiscovery(cfg.discovery.static_file)
            except ValueError as exc:
                raise UserError(str(exc)) from None
        self.storage = await make_storage(cfg.storage)
        self.writer = await make_writer(cfg.storage, self.storage)
        self.scrape_writer = await make_writer(cfg.storage, self.storage, scrapes=True)
        default_cfg, pool_cfgs = cfg.scrape.engine_configs()
        self.pool = ScrapePool(self.scrape_writer, name="standalone", default_config=default_cfg, configs=pool_cfgs)
        await self.pool.sync(self.targets())
        self.engine = Engine(self.storage, limits=cfg.query.limits(), isolate=cfg.query.isolate)
        self.journal = NotificationJournal.in_data_dir(cfg.data_dir)
        self.local = LocalReceivers(journal=self.journal, web_url=listen_url(cfg.web.listen))
        views = None
        if cfg.alerting:
            self._make_alerter()
            assert self.alerter is not None
            views = alerting_views(cfg, self.alerter.manager, self.alerter.silences)
        app = create_app(
            engine=self.engine,
            pools_provider=self.pools_summary,
            targets_provider=self.targets_health,
            middlewares=[WebMetrics(self.metrics_registry).middleware()],
            **web_app_options(cfg, self.engine, views, self.storage, self.journal, cluster=False),
        )
        app.router.add_get("/metrics", self._metrics)
        status = InstanceStatus(self.targets_health, self.engine, (self.metrics_registry, REGISTRY),
                                f"SQLite {cfg.storage.sqlite.path}", cfg.web.listen)
        add_status_routes(app, self.pools_summary, status)  # for `ringmon status|pools --url`
        add_api_routes(app, self.engine, self.storage)
        add_fleet_api_routes(app, self._api_sources())
        self.runner, self.web_port = await serve_app(app, cfg.web.listen, "web")
        self.local.web_url = listen_url(cfg.web.listen, self.web_port)  # webhook paths reach this server
        if self.alerter is not None:  # started once its webhook sink listens: no first delivery fails
            if self.alerter.settings.external_url == listen_url(cfg.web.listen):  # the default: port 0 is bound now
                self.alerter.set_external_url(self.local.web_url)
            await self.alerter.start(serve_http=False)
        # The local agents listen on ports the OS picks: started after the web server has
        # bound its configured port, so an agent can never take that port first.
        for spec in cfg.agents:
            for _ in range(spec.count):
                agent = AgentServer("127.0.0.1", 0, pool=spec.pool, synthetic_load_rps=spec.synthetic_load_rps)
                await agent.start()
                self.agents.append(agent)
        await self.pool.sync(self.targets())
        self._tasks.append(asyncio.create_task(self._refresh_loop(), name="discovery-refresh"))
        self._tasks.append(asyncio.create_task(self._rollup_loop(), name="rollup"))
        log.info(
            "standalone started",
            extra={"web": f"http://127.0.0.1:{self.web_port}/", "agents": len(self.agents), "targets": len(self.targets())},
        )

    def _api_sources(self) -> FleetApiSources:
        """The fleet endpoints of the API over the scrape pool and the in-process alerter."""
        assert self.pool is not None
        pool = self.pool

        async def dropped() -> list[dict]:
            return pool.dropped_targets()

        async def metadata(per_target: bool, metric: str) -> list[dict]:
            return pool.metadata(per_target=per_target, metric=metric)

        rules_status = alertmanagers = None
        if self.alerter is not None:
            alerter = self.alerter

            async def rules_status() -> list[dict]:
                return alerter.manager.status()

            def alertmanagers() -> list[str]:
                return alertmanager_urls(getattr(alerter.notifier, "config", None))

        cfg = self.cfg
        assert self.storage is not None  # opened by start()
        return FleetApiSources(
            targets=self.targets_health, dropped=dropped, metadata=metadata, rules_status=rules_status,
            alertmanagers=alertmanagers, head_series=head_series_of(self.storage), config_file=cfg.source,
            flags=api_flags(cfg, mode="standalone"), retention=retention_text(),
        )

    def targets(self) -> list[Target]:
        settings = ScrapeSettings(interval_s=float(self.cfg.scrape.interval), timeout_s=float(self.cfg.scrape.timeout))
        out = [Target(pool=a.pool, address=a.address, settings=settings) for a in self.agents]
        if self.web_port:  # Ringmon scrapes itself: its own /metrics is a target of pool "ringmon"
            out.append(Target(pool="ringmon", address=f"127.0.0.1:{self.web_port}", settings=settings))
        if self.static is not None:
            out.extend(self.static.targets())
        return out

    def _make_alerter(self) -> None:
        """Rule evaluation and notification in-process, from the alerting file (started later)."""
        from alerting.service import AlerterConfigError, AlerterService, AlerterSettings, load_alerting_file

        cfg = self.cfg
        defaults = AlerterSettings(
            rule_files=list(cfg.rules.files),
            evaluation_interval_ms=int(float(cfg.rules.evaluation_interval) * 1000),
            state_db=str(Path(cfg.data_dir) / "alerting.db"),
            external_url=listen_url(cfg.web.listen),
        )
        try:
            settings, notifier_cfg = load_alerting_file(cfg.alerting, defaults)
            assert self.storage is not None and self.writer is not None
            self.alerter = AlerterService(settings, notifier_cfg, self.storage, self.writer,
                                          alerting_config_path=cfg.alerting, local=self.local)
        except AlerterConfigError as exc:
            raise UserError(str(exc)) from None

    async def _metrics(self, request: web.Request) -> web.Response:
        body = generate_latest(self.metrics_registry) + generate_latest(REGISTRY)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _refresh_loop(self) -> None:
        interval = max(1.0, float(self.cfg.discovery.refresh_interval))
        while True:
            await asyncio.sleep(interval)
            try:
                assert self.pool is not None
                await self.pool.sync(self.targets())
            except Exception:  # keep scraping the last assignment whatever discovery does
                log.exception("target refresh failed")

    async def _rollup_loop(self) -> None:
        """The rollup job in-process: seal closed raw windows, write 1 m and 1 h aggregates;
        its metrics are on this process's /metrics, as ``ringmon rollup`` serves them."""
        from storage.rollup_job import RollupJob, RollupMetrics
        from storage.rollup_lease import LocalShardLease

        lease = LocalShardLease(Path(self.cfg.data_dir) / "rollup-locks")
        job = RollupJob(
            self.storage, lease, metrics=RollupMetrics(self.metrics_registry),  # type: ignore[arg-type]
            fresh_every_ms=int(float(self.cfg.rollup.fresh_every) * 1000),
        )
        await job.run_forever(self._stopping, interval_s=float(self.cfg.rollup.interval))

    async def targets_health(self) -> list[dict]:
        assert self.pool is not None
        out = []
        for h in self.pool.health():
            d = h.to_dict()
            d["key"] = h.target
            d.setdefault("owner", "standalone")
            out.append(d)
        return out

    async def pools_summary(self) -> list[dict]:
        health = {h["key"]: h for h in await self.targets_health()}
        pools: dict[str, dict] = {}
        for t in self.targets():
            p = pools.setdefault(t.pool, {"name": t.pool, "running": 0, "hosts": [], "settings": t.settings.to_dict()})
            if t.status == "ALIVE":
                p["running"] += 1
            h = health.get(t.key, {})
            p["hosts"].append(
                {
                    "address": t.address,
                    "status": t.status,
                    "health": h.get("health", "unknown"),
                    "last_scrape": h.get("last_scrape"),
                    "last_error": h.get("last_error", ""),
                }
            )
        return sorted(pools.values(), key=lambda p: p["name"])

    async def stop(self) -> None:
        self._stopping.set()
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.runner is not None:
            await self.runner.cleanup()
        if self.alerter is not None:
            await self.alerter.stop()
        if self.pool is not None:
            await self.pool.stop()
        for a in self.agents:
            await a.stop()
        if self.scrape_writer is not None:
            await self.scrape_writer.close()
        if self.writer is not None:
            await self.writer.close()
        if self.storage is not None:
            await self.storage.close()
        if self.journal is not None:
            await self.journal.close()


async def run_standalone(cfg: RingmonConfig) -> None:
    """Run until SIGINT/SIGTERM, then stop cleanly."""
    system = Standalone(cfg)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    started = time.monotonic()
    watchdog = None
    try:
        await system.start()
        watchdog = watch_process(system.metrics_registry)
        print(
            f"Ringmon standalone is up: http://127.0.0.1:{system.web_port}/  "
            f"({len(system.agents)} local agents, started in {time.monotonic() - started:.1f}s; Ctrl-C stops)",
            flush=True,
        )
        await stop.wait()
    finally:
        if watchdog is not None:
            watchdog.stop()
        await system.stop()
