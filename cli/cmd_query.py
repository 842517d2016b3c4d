"""``ringmon query``: evaluate PromQL against the configured store, or serve the Prometheus
HTTP API on its own.

    ringmon query instant --config ringmon.yaml 'sum by (job) (up)' [--time T]
    ringmon query range --config ringmon.yaml 'rate(x[5m])' --start T --end T --step 60s
    ringmon query serve --config ringmon.yaml --listen 127.0.0.1:9091

Times are Unix seconds or RFC 3339; ``now``, ``now-1h`` style relative times work too.
Output is one row per point (series, RFC 3339 time in UTC, value), ``--unix`` for epoch
seconds, or with ``-o json`` the JSON the Prometheus HTTP API answers (for scripts).
"""

from __future__ import annotations

import argparse
import asyncio
import re
import sys
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from cli.errors import UserError

if TYPE_CHECKING:
    from query.engine import Engine
    from query.result import QueryResult
    from storage.base import Storage


def _parse_time(text: str | None, what: str, now: int | None = None) -> int:
    from query.api import ApiError, parse_duration_ms, parse_time_ms

    now = int(time.time() * 1000) if now is None else now
    if text is None or text == "now":
        return now
    m = re.fullmatch(r"now\s*-\s*(\S+)", text)
    try:
        if m:
            return now - parse_duration_ms(m.group(1), what)
        return parse_time_ms(text, what)
    except ApiError as exc:
        raise UserError(f"--{what}: {exc.message}") from None


def _print(res: QueryResult, args: argparse.Namespace) -> None:
    from query.textout import format_table, response_text

    if args.output == "json":
        print(response_text(res))
        return
    text = format_table(res, unix=args.unix)
    if text:
        print(text)
    else:
        print("(no data: the query matched no series)", file=sys.stderr)
    for w in res.warnings:
        print(f"warning: {w}", file=sys.stderr)


async def _with_engine(args: argparse.Namespace, fn: Callable[[Engine, Storage], Awaitable[int]]) -> int:
    from cli.config import load_config
    from cli.wiring import make_storage
    from query.engine import Engine

    cfg = load_config(args.config)
    try:
        storage = await make_storage(cfg.storage)
    except UserError:
        raise
    except Exception as exc:  # noqa: BLE001 - one line for the operator
        raise UserError(f"storage: cannot open the {cfg.storage.backend} backend: {exc}") from None
    try:
        engine = Engine(storage, timeout_s=args.timeout, max_samples=args.max_samples)
        return await fn(engine, storage)
    finally:
        await storage.close()


def run_instant(args: argparse.Namespace) -> int:
    t = _parse_time(args.time, "time")
    return _answer(args, lambda engine: engine.instant_query(args.expr, t))


def _answer(args: argparse.Namespace, query: Callable[[Engine], Awaitable[QueryResult]]) -> int:
    """Run ``query`` on the config's store and print its result; a query error is one line."""
    from query.errors import QueryError

    async def go(engine: Engine, storage: Storage) -> int:
        try:
            res = await query(engine)
        except QueryError as exc:
            raise UserError(f"query: {exc}") from None
        _print(res, args)
        return 0

    return asyncio.run(_with_engine(args, go))


def run_range(args: argparse.Namespace) -> int:
    from query.api import ApiError, parse_duration_ms

    now = int(time.time() * 1000)  # one "now" for both ends
    end = _parse_time(args.end, "end", now)
    start = _parse_time(args.start, "start", now) if args.start else end - 3_600_000
    try:
        step = parse_duration_ms(args.step, "step")
    except ApiError as exc:
        raise UserError(f"--step: {exc.message}") from None
    return _answer(args, lambda engine: engine.range_query(args.expr, start, end, step))


def run_serve(args: argparse.Namespace) -> int:
    from aiohttp import web

    from cli.webparts import head_series_of
    from cli.wiring import serve_app
    from query.api import add_api_routes
    from query.cache import RangeQueryCache
    from web.prom_api import FleetApiSources, add_fleet_api_routes

    async def go(engine: Engine, storage: Storage) -> int:
        app = web.Application()
        add_api_routes(app, engine, storage, RangeQueryCache(engine))
        add_fleet_api_routes(app, FleetApiSources(head_series=head_series_of(storage)))  # no scraper or alerter here
        runner, port = await serve_app(app, args.listen, "query")
        print(f"Prometheus API on http://{args.listen.rpartition(':')[0] or '127.0.0.1'}:{port}/api/v1/", flush=True)
        try:
            await asyncio.Event().wait()
        finally:
            await runner.cleanup()
        return 0

    try:
        return asyncio.run(_with_engine(args, go))
    except KeyboardInterrupt:
        return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "query",
        help="evaluate PromQL against the store, or serve the Prometheus API",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    qsub = p.add_subparsers(dest="query_command", metavar="ACTION")

    def common(q: argparse.ArgumentParser) -> None:
        q.add_argument("--config", required=True, help="YAML config (its storage section is used)")
        q.add_argument("--timeout", type=float, default=30.0, help="query time limit in seconds")
        q.add_argument("--max-samples", type=int, default=50_000_000, help="samples one query may load")

    def output(q: argparse.ArgumentParser) -> None:
        q.add_argument(
            "-o", "--output", choices=["text", "json"], default="text",
            help="text: one row per point; json: the Prometheus HTTP API's response body",
        )  # fmt: skip
        q.add_argument("--unix", action="store_true", help="text times as Unix seconds, not RFC 3339")

    inst = qsub.add_parser("instant", help="instant query", description="Evaluate an instant query.")
    common(inst)
    inst.add_argument("expr", help="PromQL expression")
    inst.add_argument("--time", help="evaluation time (default: now)")
    output(inst)
    inst.set_defaults(func=run_instant)

    rng = qsub.add_parser("range", help="range query", description="Evaluate a range query.")
    common(rng)
    rng.add_argument("expr", help="PromQL expression")
    rng.add_argument("--start", help="start time (default: end - 1h)")
    rng.add_argument("--end", help="end time (default: now)")
    rng.add_argument("--step", default="60s", help="resolution step (default: %(default)s)")
    output(rng)
    rng.set_defaults(func=run_range)

    srv = qsub.add_parser("serve", help="serve the Prometheus HTTP API v1 only", description=run_serve.__doc__)
    common(srv)
    srv.add_argument("--listen", default="127.0.0.1:9091", help="HOST:PORT (default: %(default)s)")
    srv.set_defaults(func=run_serve)
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])
