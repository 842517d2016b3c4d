"""``ringmon standalone``: the whole system in one process on embedded parts."""

from __future__ import annotations

import argparse
import asyncio


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "standalone",
        help="run everything in one process (SQLite, static discovery, local agents, web)",
        description="Run scraper, storage, query, web and local host agents in one process.",
    )
    p.add_argument("--config", default="configs/standalone.yaml", help="YAML config file")
    p.add_argument("--listen", help="override web.listen (HOST:PORT); URLs Ringmon gives out follow it")
    p.add_argument("--data-dir", help="override data_dir: the SQLite store, alert state, notifications, locks")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from cli.config import load_config

    overrides = {k: v for k, v in (("web.listen", args.listen), ("data_dir", args.data_dir)) if v}
    cfg = load_config(args.config, overrides)  # a bad config fails here, before anything starts
    from cli.standalone import run_standalone

    asyncio.run(run_standalone(cfg))
    return 0
