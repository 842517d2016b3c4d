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
    p.add_argument("--listen", help="override web.listen (HOST:PORT)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from cli.config import load_config

    cfg = load_config(args.config)  # a bad config fails here, before anything starts
    if args.listen:
        cfg.web.listen = args.listen
    from cli.standalone import run_standalone

    asyncio.run(run_standalone(cfg))
    return 0
