"""``ringmon silence add|list|expire``: manage silences in the alerter's store or through its API."""

from __future__ import annotations

import argparse
import asyncio
import json
import time
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from alerting.notifier.silences import Silence, Silences


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("silence", help="add, list and expire alert silences")
    where = argparse.ArgumentParser(add_help=False)
    where.add_argument("--url", help="alerter base URL (e.g. http://127.0.0.1:9095); otherwise --db is used")
    where.add_argument("--token-file", default="data/alerter-api-token",
                       help="with --url: the alerter's API token (alerter.api_token_file; default: %(default)s)")
    where.add_argument("--db", default="data/alerting.db", help="alerting state database (SQLite)")
    ss = p.add_subparsers(dest="silence_command", metavar="ACTION")
    a = ss.add_parser("add", parents=[where], help="silence alerts matching MATCHERS")
    a.add_argument("matchers", nargs="+", help='e.g. alertname="DiskFull" instance=~"db-.*"')
    a.add_argument("--author", "-a", required=True)
    a.add_argument("--comment", "-c", required=True)
    a.add_argument("--duration", "-d", default="1h", help="how long (Prometheus duration, default 1h)")
    a.set_defaults(func=run_add)
    ls = ss.add_parser("list", parents=[where], help="list silences")
    ls.add_argument("--all", action="store_true", help="include expired silences")
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(func=run_list)
    e = ss.add_parser("expire", parents=[where], help="expire a silence now (id or unique prefix)")
    e.add_argument("id")
    e.set_defaults(func=run_expire)
    p.set_defaults(func=lambda a: (p.print_help(), 2)[1])


def _api(args: argparse.Namespace, method: str, path: str, body: dict | None = None) -> dict:
    from pathlib import Path

    from alerting.api_auth import bearer
    from cli.errors import UserError

    url = args.url
    try:
        token = Path(args.token_file).read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise UserError(f"{args.token_file}: cannot read the alerter API token: {exc.strerror or exc} "
                        "(--token-file)") from None
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url.rstrip("/") + path, data=data, method=method,
                                 headers={"Content-Type": "application/json", **bearer(token)})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            answer: dict = json.loads(r.read())
            return answer
    except urllib.error.HTTPError as exc:
        try:
            msg = json.loads(exc.read()).get("error", exc.reason)
        except ValueError:
            msg = exc.reason
        raise UserError(str(msg)) from None
    except OSError as exc:
        raise UserError(f"cannot reach the alerter at {url}: {exc}") from None


T = TypeVar("T")


async def _with_store(db_path: str, fn: Callable[[Silences], Awaitable[T]]) -> T:
    from alerting.notifier.silences import Silences, SQLiteSilenceStore
    from alerting.sqlitedb import AlertingDB

    db = AlertingDB(db_path)
    try:
        return await fn(Silences(SQLiteSilenceStore(db), refresh_s=0))
    finally:
        await db.close()


def _print(items: list[dict]) -> None:
    if not items:
        print("no silences")
        return
    now = time.time()
    for s in items:
        ms = ", ".join(f'{m["name"]}{m["op"]}"{m["value"]}"' for m in s["matchers"])
        state = s.get("state") or ("expired" if s["ends_at"] <= now else "active" if s["starts_at"] <= now else "pending")
        ends = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(s["ends_at"]))
        print(f'{s["id"][:12]}  {state:8}  ends {ends}  {{{ms}}}  by {s["created_by"]}: {s["comment"]}')


def run_add(args: argparse.Namespace) -> int:
    from alerting.notifier.matchers import MatcherSyntaxError
    from alerting.notifier.silences import SilenceError, new_silence
    from cli.errors import UserError
    from common.durations import DurationError, parse_duration_ms

    text = ",".join(args.matchers)
    try:
        dur = parse_duration_ms(args.duration) / 1000.0
        s = new_silence(text, args.author, args.comment, dur)
    except (DurationError, MatcherSyntaxError, SilenceError) as exc:
        raise UserError(str(exc)) from None
    if args.url:
        out = _api(args, "POST", "/api/v1/silences",
                   {"matchers": text, "created_by": args.author, "comment": args.comment, "duration": dur})
        print(out["data"]["id"])
        return 0

    async def add(sil: Silences) -> Silence:
        return await sil.add(s)

    asyncio.run(_with_store(args.db, add))
    print(s.id)
    return 0


def run_list(args: argparse.Namespace) -> int:
    if args.url:
        items = _api(args, "GET", "/api/v1/silences")["data"]
    else:
        async def ls(sil: Silences) -> list[dict]:
            return [{**x.to_json(), "state": x.state()} for x in await sil.list()]

        items = asyncio.run(_with_store(args.db, ls))
    if not args.all:
        items = [s for s in items if s.get("state") != "expired"]
    if args.json:
        print(json.dumps(items, indent=2))
    else:
        _print(items)
    return 0


def run_expire(args: argparse.Namespace) -> int:
    from alerting.notifier.silences import SilenceError
    from cli.errors import UserError

    if args.url:
        out = _api(args, "DELETE", f"/api/v1/silence/{args.id}")
        print(f"expired {out['data']['id']}")
        return 0

    async def ex(sil: Silences) -> Silence:
        return await sil.expire(args.id)

    try:
        s = asyncio.run(_with_store(args.db, ex))
    except SilenceError as exc:
        raise UserError(str(exc)) from None
    print(f"expired {s.id}")
    return 0
