"""``ringmon web``: the web server of cluster mode (pages, Prometheus API, its own /metrics).

    ringmon web --config configs/cluster/ringmon.yaml [--listen 127.0.0.1:8080]

Parses the flags and wires: the configured storage (Cassandra in a cluster), the query
engine, the fleet model of ``web/fleet.py`` (pools, members and hosts from ZooKeeper, target
health from the scrapers' ``/targets``), the pages and the Prometheus API. ``/metrics`` serves
the server's own metrics (requests, latency, ZooKeeper session, scraper reachability).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import time
from typing import TYPE_CHECKING

from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    generate_latest,
)

from cli.errors import UserError
from cli.zookeeper_args import add_zookeeper_override_args, zookeeper_address
from web.fleet import ClusterWebMetrics, FleetView, WebOptions

if TYPE_CHECKING:
    from kazoo.client import KazooClient

    from alerting.notifier.journal import NotificationJournal
    from cli.config import RingmonConfig
    from query.engine import Engine
    from storage.base import Storage
    from web.alerting_pages import AlertingViews
    from web.alerting_remote import RemoteAlerters
    from web.prom_api import FleetApiSources

log = logging.getLogger("ringmon.web")



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

    def _api_sources(self) -> FleetApiSources:
        """The API's fleet endpoints over the scrapers' documents and the alerters' APIs."""
        from cli.webparts import api_flags, head_series_of, retention_text
        from web.prom_api import FleetApiSources

        assert self.fleet is not None and self.storage is not None  # both made by start()
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

    def _alerting_views(self) -> AlertingViews:
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

    def _zookeeper_client(self) -> KazooClient | None:
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
    zk_cfg = cfg.discovery.zookeeper
    zookeeper, zookeeper_root = zookeeper_address(cfg, args.zookeeper, args.zookeeper_root)
    if not zookeeper:
        raise UserError(f"{cfg.source or 'config'}: discovery.zookeeper.hosts is not set (or pass --zookeeper)")
    return WebOptions(
        listen=args.listen or cfg.web.listen,
        zookeeper=zookeeper,
        zookeeper_root=zookeeper_root,
        session_timeout=float(zk_cfg.session_timeout) if zk_cfg else 10.0,
        scraper_timeout_s=args.scraper_timeout,
        alerters=list(getattr(args, "alerter", None) or cfg.web.alerters),
        alerting_file=getattr(args, "alerting", None) or cfg.alerting,
    )


async def run_web(args: argparse.Namespace) -> int:
    from cli.config import load_config
    from cli.wiring import watch_process

    cfg = load_config(args.config)
    opts = options_from(args, cfg)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    server = ClusterWeb(cfg, opts)
    watchdog = None
    try:
        await server.start()
        watchdog = watch_process(server.metrics.registry)
        print(f"ringmon web: http://{opts.listen.rpartition(':')[0] or '127.0.0.1'}:{server.port}/", flush=True)
        await stop.wait()
    finally:
        if watchdog is not None:
            watchdog.stop()
        with contextlib.suppress(Exception):
            await server.stop()
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("web", help="run the web server of cluster mode (pages, API, /metrics)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True, help="YAML config (storage, discovery.zookeeper, web.listen)")
    p.add_argument("--listen", help="HOST:PORT (default: web.listen from the config)")
    add_zookeeper_override_args(p)
    p.add_argument("--scraper-timeout", type=float, default=2.0, metavar="SECONDS",
                   help="timeout of each fetch of a scraper's /targets (default: %(default)s)")
    p.add_argument("--alerter", action="append", metavar="HOST:PORT",
                   help="an alerter's HTTP API for the alert, silence and rule pages (repeatable; "
                        "default: alerter.listen of the alerting file)")
    p.add_argument("--alerting", metavar="PATH",
                   help="the alerters' alerting file: rule files the editor edits, alerter address, "
                        "state backend (default: the config's alerting key)")
    p.set_defaults(func=lambda args: asyncio.run(run_web(args)))
