"""``ringmon scraper``: one member of the scraper pool.

    ringmon scraper --config configs/cluster.yaml --id scraper-1 --listen 127.0.0.1:9401

Joins ``<root>/scrapers/<id>`` in ZooKeeper, builds the hash ring over the live scraper ids
and scrapes only the targets whose key maps to itself, or that the ring's bounded-load
overrides (``<root>/ring/overrides``, planned by the lowest live id) give it (ZooKeeper
pools, plus the static file's targets when the config names one). When scrapers or targets change, the scrape
pool is synced: only the loops that moved start or stop. While ZooKeeper is unreachable
it keeps scraping its last assignment.

It serves ``/metrics`` (its own metrics), ``/metadata`` (HELP/TYPE/UNIT of its targets) and
``/targets`` (its assignment and the health of
each owned target, JSON) on ``--listen``. Exactly one scraper (the ring owner of a fixed
key) records ``ringmon_pool_members{pool,status}`` once per scrape interval.

Settings come from the config's ``storage``, ``discovery.zookeeper`` and ``scrape``
sections (and ``scraper:`` for id, listen, vnodes, ring_cap_factor); ``--id``, ``--listen``,
``--zookeeper``, ``--zookeeper-root``, ``--vnodes`` and ``--ring-cap-factor``
override or complete them.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import socket
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    ProcessCollector,
    generate_latest,
)

from cli.errors import UserError
from cli.malloc_tuning import one_arena, trim_periodically
from cli.zookeeper_args import add_zookeeper_override_args, zookeeper_address
from discovery.balance import DEFAULT_CAP_FACTOR
from discovery.registry import Registry, RegistryError
from discovery.ring import DEFAULT_VNODES
from discovery.sharding import Assignment, ShardCoordinator
from discovery.static import StaticDiscovery
from discovery.validation import check_scraper_id
from scraper.pool_members import PoolMembersRecorder
from storage.base import SampleWriter

if TYPE_CHECKING:
    from cli.config import RingmonConfig

log = logging.getLogger("ringmon.scraper")



@dataclass
class ScraperOptions:
    scraper_id: str
    listen: str
    zookeeper: str
    zookeeper_root: str = "/ringmon"
    session_timeout: float = 10.0
    vnodes: int = DEFAULT_VNODES
    cap_factor: float = DEFAULT_CAP_FACTOR  # bounded loads, used when this scraper leads
    record_interval: float = 10.0
    static_file: str = ""
    static_refresh: float = 30.0
    connect_timeout: float = 15.0
    scrape_default: Any = None  # scraper.config.ScrapeConfig: limits and relabelling for every pool
    scrape_pools: dict[str, Any] = field(default_factory=dict)  # per-pool ScrapeConfig overrides


class ScraperProcess:
    """A running scraper: coordinator, scrape pool, HTTP endpoints. ``start`` then ``stop``."""

    def __init__(self, opts: ScraperOptions, writer: SampleWriter, registry: Registry | None = None) -> None:
        from scraper.pool import ScrapePool  # scraper package: imported where it is used

        self.opts = opts
        self.writer = writer
        self.metrics_registry = CollectorRegistry()
        ProcessCollector(registry=self.metrics_registry)
        self.pool = ScrapePool(
            writer, name=opts.scraper_id, registry=self.metrics_registry,
            default_config=opts.scrape_default, configs=opts.scrape_pools,
        )
        self.static = StaticDiscovery(opts.static_file) if opts.static_file else None
        self.registry = registry or Registry(
            opts.zookeeper, root=opts.zookeeper_root, session_timeout=opts.session_timeout,
            connect_timeout=opts.connect_timeout,
        )
        self.coordinator: ShardCoordinator | None = None
        self.recorder: PoolMembersRecorder | None = None
        self.runner: web.AppRunner | None = None
        self.port = 0
        self._tasks: list[asyncio.Task] = []
        self._g_ring = Gauge("ringmon_scraper_ring_members", "Live scrapers on the ring.",
                             registry=self.metrics_registry)
        self._g_owned = Gauge("ringmon_scraper_owned_targets", "Targets this scraper owns on the ring.",
                              registry=self.metrics_registry)
        self._g_known = Gauge("ringmon_scraper_known_targets", "Targets known from discovery (all scrapers).",
                              registry=self.metrics_registry)
        self._g_zk = Gauge("ringmon_scraper_zookeeper_connected", "1 while the ZooKeeper session is connected.",
                           registry=self.metrics_registry)
        self._g_recorder = Gauge("ringmon_scraper_is_recorder", "1 on the scraper recording fleet-wide series.",
                                 registry=self.metrics_registry)
        self._c_changes = Counter("ringmon_scraper_assignment_changes", "Assignment changes applied.",
                                  registry=self.metrics_registry)
        self._c_moved = Counter("ringmon_scraper_targets_moved", "Targets gained or released on ring changes.",
                                ["direction"], registry=self.metrics_registry)

    # -- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        from cli.wiring import serve_app

        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/targets", self._targets)
        app.router.add_get("/metadata", self._metadata)
        app.router.add_get("/", self._index)
        self.runner, self.port = await serve_app(app, self.opts.listen, "scraper")
        host = self.opts.listen.rpartition(":")[0] or "127.0.0.1"
        self.coordinator = ShardCoordinator(
            self.registry, self.opts.scraper_id, vnodes=self.opts.vnodes, cap_factor=self.opts.cap_factor,
            info={"listen": f"{host}:{self.port}", "pid": os.getpid()},
            extra_targets=self.static.targets if self.static else None,
        )
        try:
            await self.coordinator.start()
        except (RegistryError, ValueError) as exc:
            await self.runner.cleanup()
            raise UserError(str(exc)) from None
        await self._apply(self.coordinator.assignment, None)
        self.recorder = PoolMembersRecorder(self.coordinator, self.writer, self.opts.record_interval)
        self._tasks = [
            asyncio.create_task(self._sync_loop(), name="scraper-sync"),
            asyncio.create_task(self.recorder.run(), name="pool-members-recorder"),
        ]
        if self.static is not None:
            self._tasks.append(asyncio.create_task(self._static_refresh(), name="static-refresh"))
        log.info("scraper started", extra={"scraper": self.opts.scraper_id, "listen": f"{host}:{self.port}",
                                            "owned": len(self.coordinator.assignment.owned)})

    async def stop(self) -> None:
        """Leave the ring first, so the others take over while this one winds down."""
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.coordinator is not None:
            await self.coordinator.stop()
        await self.pool.stop()
        if self.runner is not None:
            await self.runner.cleanup()

    async def _sync_loop(self) -> None:
        assert self.coordinator is not None
        applied = self.coordinator.assignment
        while True:
            await self.coordinator.updated.wait()
            self.coordinator.updated.clear()
            current = self.coordinator.assignment
            try:
                await self._apply(current, applied)
                applied = current
            except Exception:  # noqa: BLE001 - keep the loops we have; the next change retries
                log.exception("could not apply the assignment")

    async def _apply(self, new: Assignment, old: Assignment | None) -> None:
        await self.pool.sync(list(new.owned))
        self._g_ring.set(len(new.ring))
        self._g_owned.set(len(new.owned))
        self._g_known.set(len(new.targets))
        if old is not None:
            self._c_changes.inc()
            self._c_moved.labels("gained").inc(len(new.owned_keys - old.owned_keys))
            self._c_moved.labels("released").inc(len(old.owned_keys - new.owned_keys))

    async def _static_refresh(self) -> None:
        assert self.coordinator is not None
        while True:
            await asyncio.sleep(max(1.0, self.opts.static_refresh))
            self.coordinator.refresh()

    # -- HTTP ---------------------------------------------------------------------------------

    async def _metrics(self, request: web.Request) -> web.Response:
        self._g_zk.set(1 if self.registry.view.connected else 0)
        self._g_recorder.set(1 if self.coordinator and self.coordinator.is_recorder() else 0)
        return web.Response(body=generate_latest(self.metrics_registry), headers={"Content-Type": CONTENT_TYPE_LATEST})

    def targets_document(self) -> dict:
        assert self.coordinator is not None
        a = self.coordinator.assignment
        health = []
        for h in self.pool.health():
            d = h.to_dict()
            d["owner"] = self.opts.scraper_id
            health.append(d)
        return {
            "scraper": self.opts.scraper_id,
            "zookeeper_connected": self.registry.view.connected,
            "ring": {"members": list(a.ring.members), "vnodes": a.ring.vnodes, "overrides": len(a.overrides),
                     "overrides_version": a.overrides_version, "plan_current": a.plan_current},
            "recorder": self.coordinator.is_recorder(),
            "known_targets": len(a.targets),
            "owned": sorted(t.key for t in a.owned),
            "targets": health,
            "dropped": self.pool.dropped_targets(),
        }

    async def _targets(self, request: web.Request) -> web.Response:
        return web.json_response(self.targets_document())

    async def _metadata(self, request: web.Request) -> web.Response:
        """The metric metadata (HELP/TYPE/UNIT) of the owned targets, ``?metric=`` one only, each
        distinct entry once unless ``?targets=1`` asks per target; ``ringmon web`` merges them."""
        per_target = request.query.get("targets", "") in ("1", "true")
        records = self.pool.metadata(per_target=per_target, metric=request.query.get("metric", ""))
        return web.json_response({"scraper": self.opts.scraper_id, "targets": records})

    async def _index(self, request: web.Request) -> web.Response:
        return web.Response(
            text=f"ringmon scraper {self.opts.scraper_id}: /metrics, /targets, /metadata\n", content_type="text/plain"
        )


def options_from(args: argparse.Namespace, cfg: RingmonConfig) -> ScraperOptions:
    zk_cfg = getattr(cfg.discovery, "zookeeper", None)
    scraper_cfg = getattr(cfg, "scraper", None)  # a `scraper:` section, when the config has one

    def pick(flag: str, section_key: str, default: Any) -> Any:
        value = getattr(args, flag, None)
        if value is not None:
            return value
        if scraper_cfg is not None and getattr(scraper_cfg, section_key, None) not in (None, ""):
            return getattr(scraper_cfg, section_key)
        return default

    zookeeper, zookeeper_root = zookeeper_address(cfg, args.zookeeper, None)
    if not zookeeper:
        raise UserError(f"{cfg.source or 'config'}: discovery.zookeeper.hosts is not set (or pass --zookeeper)")
    listen = pick("listen", "listen", "127.0.0.1:9400")
    port = listen.rpartition(":")[2]
    scraper_id = pick("id", "id", f"{socket.gethostname()}-{port}")
    try:
        check_scraper_id(scraper_id)
    except ValueError as exc:
        raise UserError(f"--id: {exc}") from None
    scrape_default, scrape_pools = cfg.scrape.engine_configs()
    vnodes = int(pick("vnodes", "vnodes", DEFAULT_VNODES))
    if vnodes < 1:
        raise UserError(f"--vnodes: expected a positive number, got {vnodes}")
    cap_factor = float(pick("ring_cap_factor", "ring_cap_factor", DEFAULT_CAP_FACTOR))
    if not 1.0 <= cap_factor <= 4.0:
        raise UserError(f"--ring-cap-factor: expected a number from 1.0 to 4.0, got {cap_factor:g}")
    return ScraperOptions(
        scraper_id=scraper_id,
        listen=listen,
        zookeeper=zookeeper,
        zookeeper_root=pick("zookeeper_root", "zookeeper_root", zookeeper_root),
        session_timeout=float(zk_cfg.session_timeout) if zk_cfg else 10.0,
        vnodes=vnodes,
        cap_factor=cap_factor,
        record_interval=float(cfg.scrape.interval),
        static_file=cfg.discovery.static_file or "",
        static_refresh=float(cfg.discovery.refresh_interval),
        connect_timeout=args.connect_timeout,
        scrape_default=scrape_default,
        scrape_pools=scrape_pools,
    )


async def run_scraper(args: argparse.Namespace) -> int:
    from cli.config import load_config
    from cli.wiring import make_storage, make_writer, watch_process

    cfg = load_config(args.config)
    opts = options_from(args, cfg)
    if opts.static_file:
        try:
            StaticDiscovery(opts.static_file)
        except ValueError as exc:
            raise UserError(str(exc)) from None
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    one_arena()  # before the driver's and ZooKeeper's threads start
    storage = await make_storage(cfg.storage, rollups=False)  # it only writes
    writer = await make_writer(cfg.storage, storage)
    process = ScraperProcess(opts, writer)
    watchdog = None
    trimmer = asyncio.create_task(trim_periodically(), name="malloc-trim")
    try:
        await process.start()
        watchdog = watch_process(process.metrics_registry)
        await stop.wait()
        log.info("scraper stopping", extra={"scraper": opts.scraper_id})
    finally:
        if watchdog is not None:
            watchdog.stop()
        trimmer.cancel()
        with contextlib.suppress(Exception):
            await process.stop()
        await writer.close()
        await storage.close()
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("scraper", help="run one member of the scraper pool (ZooKeeper + hash ring)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True, help="YAML config (storage, discovery.zookeeper, scrape)")
    p.add_argument("--id", help="scraper id on the ring (default: HOSTNAME-PORT; keep it stable across restarts)")
    p.add_argument("--listen", help="HOST:PORT for /metrics and /targets (default 127.0.0.1:9400)")
    add_zookeeper_override_args(p)
    p.add_argument("--vnodes", type=int, help=f"virtual nodes per scraper (default {DEFAULT_VNODES}; "
                   "every scraper must use the same)")
    p.add_argument("--ring-cap-factor", type=float, metavar="X",
                   help=f"bounded loads: no scraper owns more than X times the mean share of targets "
                        f"(default {DEFAULT_CAP_FACTOR}; the leader's value is used)")
    p.add_argument("--connect-timeout", type=float, default=15.0, metavar="SECONDS",
                   help="give up at start when ZooKeeper cannot be reached this long (default: %(default)s)")
    p.set_defaults(func=lambda args: asyncio.run(run_scraper(args)), malloc_tuning=False)
