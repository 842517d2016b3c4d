"""``ringmon rollup``: seal closed windows into blocks and write 1m/1h rollups (see storage.rollup_job).

Runs pass after pass (``--once`` for a single pass), or redoes a range with
``--backfill FROM TO`` and a progress bar on stderr. Several copies may run at once: with
ZooKeeper configured (``discovery.zookeeper`` in the config) shards are leased there,
otherwise with lock files under ``--lease-dir`` (copies on one host). Serves its own
/metrics on ``--metrics-listen``.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cli.errors import UserError
from cli.wiring import split_listen

if TYPE_CHECKING:
    from cli.config import RingmonConfig
    from storage.cassandra_rollup import CassandraRollupStorage
    from storage.sqlite_rollup import SQLiteRollupStorage

log = logging.getLogger("ringmon.rollup")


def parse_time(text: str, what: str) -> int:
    """Milliseconds since the epoch from RFC 3339 / ISO 8601 (UTC if no zone) or unix seconds."""
    t = text.strip()
    try:
        return int(float(t) * 1000)
    except ValueError:
        pass
    try:
        dt = datetime.fromisoformat(t.replace("Z", "+00:00"))
    except ValueError:
        raise UserError(
            f"{what}: {text!r} is not a time (use 2026-11-01T00:00:00Z, 2026-11-01 or unix seconds)"
        ) from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return int(dt.timestamp() * 1000)


def _duration_ms(text: str, what: str) -> int:
    from cli.config import parse_duration

    try:
        return int(parse_duration(text) * 1000)
    except ValueError as exc:
        raise UserError(f"{what}: {exc}") from None


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "rollup",
        help="seal raw samples into blocks and write 1m/1h rollups",
        description="Seal closed windows of raw samples into compressed blocks and write 1-minute and "
        "1-hour rollups. Idempotent, resumable from checkpoints in the store, safe to run in several copies.",
    )
    p.add_argument(
        "--config", default="configs/standalone.yaml", help="YAML config (storage, discovery.zookeeper)"
    )
    p.add_argument("--window", default="2h", help="window length: whole hours dividing a day (default 2h)")
    p.add_argument("--shards", type=int, default=16, help="series shards leased separately (default 16)")
    p.add_argument(
        "--shards-at-once",
        type=int,
        default=0,
        help="shards a copy leases and seals together (default 0: every shard it can lease). Its "
        "memory is about those shards' series x a window of samples x 16 bytes: bound it at large scale",
    )
    p.add_argument("--grace", default="5m", help="wait this long after a window ends before sealing it")
    p.add_argument("--interval", help="pause between passes (default: rollup.interval of the config, 1m)")
    p.add_argument(
        "--fresh-every",
        default="1m",
        help="write the open window's provisional 1m buckets once this many new minutes are complete "
        "(default 1m; raise it at large scale: each fresh pass re-reads recent raw samples)",
    )
    p.add_argument(
        "--no-fresh",
        action="store_true",
        help="skip the fresh pass (provisional 1m buckets of the open window, which spare queries "
        "reading up to 2 h of raw samples)",
    )
    p.add_argument(
        "--lease-dir", default="", help="lock files for local leases (default <data_dir>/rollup-locks)"
    )
    p.add_argument("--metrics-listen", default="127.0.0.1:9466", help="HOST:PORT of /metrics ('' = off)")
    p.add_argument("--once", action="store_true", help="one pass, then exit")
    p.add_argument(
        "--backfill",
        nargs=2,
        metavar=("FROM", "TO"),
        help="redo every window in [FROM, TO) for all shards (times: RFC 3339 or unix seconds)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from cli.config import load_config

    cfg = load_config(args.config)
    window_ms = _duration_ms(args.window, "--window")
    grace_ms = _duration_ms(args.grace, "--grace")
    interval_s = _duration_ms(args.interval, "--interval") / 1000 if args.interval else float(cfg.rollup.interval)
    args.fresh_every_ms = _duration_ms(args.fresh_every, "--fresh-every")
    backfill = None
    if args.backfill:
        backfill = (
            parse_time(args.backfill[0], "--backfill FROM"),
            parse_time(args.backfill[1], "--backfill TO"),
        )
        if backfill[1] <= backfill[0]:
            raise UserError("--backfill: FROM must be before TO")
    return asyncio.run(_main(args, cfg, window_ms, grace_ms, interval_s, backfill))


async def _open_store(cfg: RingmonConfig) -> SQLiteRollupStorage | CassandraRollupStorage:
    if cfg.storage.backend == "sqlite":
        from storage.sqlite_rollup import SQLiteRollupStorage

        return await SQLiteRollupStorage.open(cfg.storage.sqlite.path)
    try:
        from storage.cassandra_rollup import CassandraRollupStorage
    except ImportError:
        raise UserError(
            "rollup on Cassandra is not available in this build (storage/cassandra_rollup.py)"
        ) from None
    from storage.base import StorageError

    c = cfg.storage.cassandra
    try:
        return await CassandraRollupStorage.connect(hosts=c.hosts, port=c.port, keyspace=c.keyspace)
    except StorageError as exc:
        raise UserError(str(exc)) from None


async def _main(
    args: argparse.Namespace, cfg: RingmonConfig, window_ms: int, grace_ms: int, interval_s: float, backfill: Any
) -> int:
    from storage.rollup_job import ProgressBar, RollupJob
    from storage.rollup_lease import LocalShardLease, ShardLease, ZooKeeperShardLease

    zk = None
    lease: ShardLease
    if cfg.discovery.zookeeper is not None:
        from kazoo.client import KazooClient
        from kazoo.handlers.threading import KazooTimeoutError

        zk = KazooClient(
            hosts=cfg.discovery.zookeeper.hosts, timeout=float(cfg.discovery.zookeeper.session_timeout)
        )
        try:
            await asyncio.get_running_loop().run_in_executor(None, lambda: zk.start(timeout=15))
        except KazooTimeoutError:
            raise UserError(f"cannot reach ZooKeeper at {cfg.discovery.zookeeper.hosts}") from None
        lease = ZooKeeperShardLease(zk)
    else:
        lease = LocalShardLease(args.lease_dir or Path(cfg.data_dir) / "rollup-locks")

    store = await _open_store(cfg)
    try:
        job = RollupJob(
            store, lease, window_ms=window_ms, shards=args.shards, grace_ms=grace_ms,
            fresh_minutes=not args.no_fresh, fresh_every_ms=args.fresh_every_ms,
            shards_at_once=args.shards_at_once,
        )
    except ValueError as exc:
        await store.close()
        raise UserError(str(exc)) from None
    metrics_server = None
    if args.metrics_listen:
        from prometheus_client import start_http_server

        host, port = split_listen(args.metrics_listen, "--metrics-listen")
        try:
            metrics_server, _thread = start_http_server(port, addr=host, registry=job.metrics.registry)
        except OSError as exc:
            await store.close()
            raise UserError(
                f"--metrics-listen: cannot listen on {host}:{port}: {exc.strerror or exc}"
            ) from None
    try:
        if backfill is not None:
            bar = ProgressBar(0, "backfill")
            results = await job.backfill(backfill[0], backfill[1], progress=bar)
            bar.close()
            print(
                f"backfilled {len(results)} shard windows: {sum(r.samples for r in results)} samples sealed "
                f"into {sum(r.block_bytes for r in results)} bytes"
            )
        elif args.once:
            results = await job.run_once()
            print(f"{len(results)} shard windows done, {sum(r.samples for r in results)} samples sealed")
        else:
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, stop.set)
            log.info("rollup running", extra={"window_s": window_ms // 1000, "shards": args.shards})
            await job.run_forever(stop, interval_s)
    finally:
        await lease.close()
        await store.close()
        if zk is not None:
            zk.stop()
            zk.close()
        if metrics_server is not None:
            metrics_server.shutdown()
    return 0
