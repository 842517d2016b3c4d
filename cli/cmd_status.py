"""``ringmon status``: every component's health, the scraper ring and the write lag.

    ringmon status --config run/cluster/conf/ringmon.yaml [--json]
    ringmon status --url http://127.0.0.1:8080          # a standalone instance
    ringmon status --config configs/standalone.yaml     # the same, at the config's web.listen

A standalone instance (a config without ``discovery.zookeeper``, or ``--url``) answers for
itself: its ``/-/status`` lists storage, scraper, rollup job, alerter and web server.

Finds the components through ZooKeeper: the scrapers in ``<root>/scrapers/<id>`` (each
publishes its listen address) and the other Ringmon processes as members of the ``ringmon``
self-monitoring pool (a member is recognised by the metrics its /metrics serves: web,
rollup, alerter). Checks ZooKeeper and Cassandra directly, fetches each scraper's /metrics
and /targets, the rollup lag and the alerter's notification failures from their /metrics,
and reads the write lag (age of the newest stored ``up`` sample per scraper) from storage.
Something down is one line saying what and why; the exit code is 1 when anything is down.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from dataclasses import asdict
from typing import TYPE_CHECKING

from cli.errors import UserError
from cli.zookeeper_args import add_zookeeper_override_args, zookeeper_address

if TYPE_CHECKING:
    from cli.config import RingmonConfig
    from web.cluster_status import StatusCollector


def collector_for(cfg: RingmonConfig, zookeeper: str, root: str, timeout_s: float) -> StatusCollector:
    """The cluster's ``StatusCollector`` wired from its config."""
    from cli.wiring import make_storage
    from scraper.exposition import sample_sums
    from web.cluster_status import StatusCollector, StoreAccess

    st = cfg.storage
    store = StoreAccess(lambda: make_storage(st), st.backend, sqlite_path=st.sqlite.path,
                        cassandra_hosts=tuple(st.cassandra.hosts), cassandra_port=st.cassandra.port,
                        keyspace=st.cassandra.keyspace)
    return StatusCollector(zookeeper, root, timeout_s, store=store, web_listen=cfg.web.listen,
                           parse_metrics=sample_sums)


async def run_status(args: argparse.Namespace) -> int:
    from cli.config import load_config
    from cli.wiring import listen_url
    from web.cluster_status import instance_report, render

    if not args.config and not args.url:
        raise UserError("give --config (a cluster's or a standalone's config) or --url of a standalone instance")
    cfg = load_config(args.config) if args.config else None
    zookeeper, root = zookeeper_address(cfg, args.zookeeper, args.zookeeper_root)
    if args.url or (cfg is not None and not zookeeper):  # standalone: the instance answers for itself
        report = await instance_report(args.url or listen_url(cfg.web.listen), args.timeout)  # type: ignore[union-attr]
    else:
        if cfg is None:  # the cluster's storage and web sections are checked too
            raise UserError("give --config with the cluster's config (its storage and web sections are checked)")
        report = await collector_for(cfg, zookeeper, root, args.timeout).run()
    if args.json:
        print(json.dumps(asdict(report), indent=1, default=str))
    else:
        print(render(report))
    return 0 if report.ok else 1


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("status", help="health of every component, the scraper ring and the write lag",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", help="the cluster's YAML config, or a standalone's (asks its web.listen)")
    p.add_argument("--url", help="a standalone instance, e.g. http://127.0.0.1:8080")
    add_zookeeper_override_args(p)
    p.add_argument("--timeout", type=float, default=3.0, metavar="SECONDS", help="per check (default %(default)s)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=lambda args: asyncio.run(run_status(args)))
