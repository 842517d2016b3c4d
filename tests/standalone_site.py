"""A real ``ringmon standalone`` as ``make run`` starts it, on a free port with its own data dir.

``start_standalone(tmp)`` runs the shipped ``configs/standalone.yaml`` (its agents, rules,
dashboards, alerting file and timers) with ``--data-dir tmp`` and ``--listen 127.0.0.1:0``
(the bound port is read back from its "is up" line). ``wait_until_warm`` waits for the
events that make a five-minute-old ``make run`` what it is (scrapes, rule evaluations, a
rollup pass, a delivered notification), each wait bounded. Used by the browser walk test
and by ``tests/screenshots.py``; nothing here leaves 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode
from urllib.request import urlopen

from waiting import wait_for

from bench.standalone import Site, start_site

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Standalone(Site):
    """A running standalone process (``bench.standalone.Site``) and the data dir it was given."""

    data_dir: Path = field(kw_only=True)

    def api(self, path: str, **params: str) -> Any:
        """GET ``/api/v1/<path>`` and return its ``data`` (blocking; loopback only)."""
        with urlopen(f"{self.url}/api/v1/{path}?{urlencode(params)}", timeout=30) as resp:
            return json.load(resp)["data"]


def start_standalone(data_dir: Path, *, config: str = "configs/standalone.yaml", timeout_s: float = 120.0,
                     listen: str = "127.0.0.1:0") -> Standalone:
    """Start ``ringmon standalone`` as ``make run`` does (cwd: the repository, the shipped
    config) with only ``--listen`` (by default ``127.0.0.1:0``) and ``--data-dir`` added; return
    once it printed its URL. Raises with its output if it exits or stays silent past ``timeout_s``."""
    site = start_site(["--config", config, "--listen", listen, "--data-dir", str(data_dir)], timeout_s)
    return Standalone(site.url, site.proc, site.output, data_dir=data_dir)


async def wait_until_warm(site: Standalone, *, scrapes: int = 3, timeout_s: float = 300.0) -> None:
    """The state five minutes of ``make run`` show, reached by its events: every target up and
    scraped ``scrapes`` times in the last minute, rules evaluated, a rollup pass scraped
    (``ringmon_rollup_lag_seconds`` stored) and a notification delivered to the notification
    log (the always-firing ``RingmonWatchdog``). Each wait is bounded by ``timeout_s``."""

    def value(expr: str) -> float:
        result = site.api("query", query=expr)["result"]
        return float(result[0]["value"][1]) if result else 0.0

    async def ask(expr: str) -> float:
        return await asyncio.to_thread(value, expr)

    def page(path: str) -> str:
        with urlopen(site.url + path, timeout=30) as resp:
            return resp.read().decode()

    targets = await wait_for(lambda: ask("count(up)"), "the first scrapes", timeout_s)
    await wait_for(lambda: ask(f"count(up == 1) >= {targets}"), "every target up", timeout_s)
    await wait_for(
        lambda: ask(f"count(count_over_time(up[1m]) >= {scrapes}) >= {targets}"),
        f"{scrapes} scrapes of every target", timeout_s,
    )  # fmt: skip
    await wait_for(lambda: ask("sum(ringmon_rule_evaluations_total)"), "rule evaluations", timeout_s)
    await wait_for(lambda: ask("count(ringmon_rollup_lag_seconds)"), "a rollup pass, scraped", timeout_s)

    async def notified() -> bool:
        return "RingmonWatchdog" in await asyncio.to_thread(page, "/notifications")

    await wait_for(notified, "a notification in the notification log", timeout_s, every_s=2.0)
