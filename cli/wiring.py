"""Builds the shared parts of a process from its config: storage, writer, listen addresses."""

from __future__ import annotations

import errno
import logging
from pathlib import Path
from typing import TYPE_CHECKING

from aiohttp import web
from prometheus_client import CollectorRegistry

from cli.config import StorageConfig
from cli.errors import UserError
from common.gc_tuning import freeze_startup_heap
from common.loop_watchdog import LoopWatchdog
from storage.base import DirectWriter, GroupingWriter, GroupWrites, SampleWriter, Storage

if TYPE_CHECKING:
    from storage.cassandra_rollup import CassandraRollupStorage
    from storage.sqlite_rollup import SQLiteRollupStorage

log = logging.getLogger("ringmon.wiring")


async def make_storage(cfg: StorageConfig, *, rollups: bool = True) -> Storage:
    """Open the configured backend (SQLite file or Cassandra cluster), rollup tables included,
    so every process reads raw, 1-minute and 1-hour data through the same object.

    ``rollups=False`` (``ringmon scraper``, which only writes): on Cassandra the plain
    ``CassandraStorage``, without the rollup store's modules (blocks, chunk cache, rollup job:
    ~1 MiB of the scraper's memory, issue #20); SQLite is opened as always."""
    store: SQLiteRollupStorage | CassandraRollupStorage
    if cfg.backend == "sqlite":
        from storage.sqlite_rollup import SQLiteRollupStorage

        store = await SQLiteRollupStorage.open(cfg.sqlite.path)
    elif not rollups:
        from storage.cassandra import CassandraStorage  # imported late: the driver is heavy

        c = cfg.cassandra
        return await CassandraStorage.connect(hosts=c.hosts, port=c.port, keyspace=c.keyspace)
    else:
        from storage.cassandra_rollup import CassandraRollupStorage  # imported late: the driver is heavy

        c = cfg.cassandra
        store = await CassandraRollupStorage.connect(hosts=c.hosts, port=c.port, keyspace=c.keyspace)
    store.rollup_cache_bytes = cfg.rollup_cache_mb << 20  # (storage.chunk_cache)
    return store


async def make_writer(cfg: StorageConfig, storage: Storage, *, scrapes: bool = False) -> SampleWriter:
    """Scrapers write through this: direct for SQLite (for ``scrapes``, the many scrape loops:
    grouped, one transaction per ~0.1 s), batched with a disk spool for Cassandra."""
    if cfg.backend == "sqlite":
        if scrapes and isinstance(storage, GroupWrites):
            return GroupingWriter(storage)
        return DirectWriter(storage)
    from storage.cassandra import CassandraStorage
    from storage.writer import BatchingWriter

    assert isinstance(storage, CassandraStorage), "backend cassandra opens a CassandraStorage"
    c = cfg.cassandra
    w = BatchingWriter(storage, spool_dir=Path(c.spool_dir), max_in_flight=c.max_in_flight, group_s=c.write_group)
    return w  # it starts its spool replay by itself


def split_listen(listen: str, what: str = "listen") -> tuple[str, int]:
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit() or not (0 <= int(port) <= 65535):
        raise UserError(f"{what}: expected HOST:PORT, got {listen!r}")
    return host or "127.0.0.1", int(port)


def listen_url(listen: str, port: int | None = None) -> str:
    """The http URL of a server listening on ``listen`` (``port``: the one it bound, for port 0);
    a wildcard host is reached on 127.0.0.1."""
    host, configured = split_listen(listen)
    if host in ("0.0.0.0", "", "*"):
        host = "127.0.0.1"
    elif host in ("::", "[::]"):
        host = "[::1]"
    elif ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"http://{host}:{port if port is not None else configured}"


async def serve_app(app: web.Application, listen: str, what: str = "web") -> tuple[web.AppRunner, int]:
    """Start an aiohttp app on HOST:PORT; a busy port is one clear line, not a traceback."""
    host, port = split_listen(listen, what)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    try:
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        if exc.errno == errno.EADDRINUSE:
            raise UserError(f"{what}: cannot listen on {host}:{port}: address already in use") from None
        raise UserError(f"{what}: cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    bound = port
    if runner.addresses:  # the bound socket's (host, port, ...): the real port when port was 0
        bound = runner.addresses[0][1]
    log.info("listening", extra={"component": what, "address": f"{host}:{bound}"})
    return runner, bound


def watch_process(*registries: CollectorRegistry) -> LoopWatchdog:
    """Once a service has started (on its event loop): freeze its startup heap out of the
    garbage collector's full collections and start its event-loop watchdog, whose stall
    histogram joins ``registries`` (the ones its /metrics serves). ``stop()`` it on the way out."""
    frozen = freeze_startup_heap()
    watchdog = LoopWatchdog().start()
    for r in registries:
        watchdog.register(r)
    log.debug("event loop watched", extra={"frozen_objects": frozen})
    return watchdog
