"""A real ``ringmon standalone`` as ``make run`` starts it, on a free port with its own data dir.

``start_standalone(tmp)`` runs the shipped ``configs/standalone.yaml`` (its agents, rules,
dashboards and alerting file) with every state file under ``tmp``, the web on a port the
kernel picks (read back from the "is up" line) and, for tests, a faster scrape and rule
interval so the state of a few minutes of ``make run`` is reached in seconds. Waits are on
events (a line printed, an API answer), each bounded. Used by the browser walk test and by
``tests/screenshots.py``; nothing here leaves 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode
from urllib.request import urlopen

import yaml

ROOT = Path(__file__).resolve().parent.parent
LOOPBACK = ("127.0.0.1", "localhost", "::1", "[::1]")
_UP_LINE = re.compile(r"is up: (http://127\.0\.0\.1:\d+)/")
_HOSTS = re.compile(r"(?:[a-z][a-z0-9+.-]*://)?(\[[0-9a-f:]+\]|[A-Za-z0-9.-]+):\d+", re.IGNORECASE)


@dataclass
class Standalone:
    """A running standalone process: its base URL, data dir and output so far."""

    url: str
    data_dir: Path
    proc: subprocess.Popen
    output: list[str] = field(default_factory=list)

    def api(self, path: str, **params: str) -> Any:
        """GET ``/api/v1/<path>`` and return its ``data`` (blocking; loopback only)."""
        with urlopen(f"{self.url}/api/v1/{path}?{urlencode(params)}", timeout=30) as resp:
            return json.load(resp)["data"]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=30)


def _strings(node: Any) -> list[str]:
    if isinstance(node, dict):
        return [s for v in node.values() for s in _strings(v)]
    if isinstance(node, list):
        return [s for v in node for s in _strings(v)]
    return [node] if isinstance(node, str) else []


def off_machine_hosts(config: Any) -> list[str]:
    """Hosts a parsed config names (``http://host:port``, ``host:port``) that are not loopback."""
    hosts = {m.group(1) for s in _strings(config) for m in _HOSTS.finditer(s)}
    return sorted(h for h in hosts if h.lower() not in LOOPBACK and not re.fullmatch(r"\d+", h))


def _alerting_file(data_dir: Path, shipped: Path) -> Path:
    """The shipped alerting file with its state under ``data_dir``; if it names a host off this
    machine, its receivers are swapped for one that delivers nowhere (tests stay on loopback)."""
    cfg = yaml.safe_load(shipped.read_text()) or {}
    alerter = cfg.setdefault("alerter", {})
    for key in ("state_db", "api_token_file"):
        if key in alerter:
            alerter[key] = str(data_dir / Path(str(alerter[key])).name)
    if off_machine_hosts(cfg):
        cfg["route"] = {"receiver": "nowhere", "group_by": ["alertname"]}
        cfg["receivers"] = [{"name": "nowhere"}]
        cfg.pop("inhibit_rules", None)
    out = data_dir / "alerting.yaml"
    out.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return out


def standalone_config(data_dir: Path, *, scrape_interval: str = "1s", evaluation_interval: str = "1s") -> Path:
    """``configs/standalone.yaml`` with every state file under ``data_dir`` and the given intervals."""
    cfg = yaml.safe_load((ROOT / "configs" / "standalone.yaml").read_text())
    cfg["data_dir"] = str(data_dir)
    cfg.setdefault("storage", {}).setdefault("sqlite", {})["path"] = str(data_dir / "ringmon.db")
    cfg.setdefault("web", {})["listen"] = "127.0.0.1:0"
    scrape = cfg.setdefault("scrape", {})
    scrape["interval"] = scrape_interval
    scrape["timeout"] = scrape_interval
    cfg.setdefault("rules", {})["evaluation_interval"] = evaluation_interval
    shipped_alerting = cfg.get("alerting")
    if shipped_alerting:
        cfg["alerting"] = str(_alerting_file(data_dir, ROOT / shipped_alerting))
    path = data_dir / "standalone.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def start_standalone(data_dir: Path, *, timeout_s: float = 120.0, **intervals: str) -> Standalone:
    """Start ``ringmon standalone`` (cwd: the repository, as ``make run``) and return once it
    printed its URL; raises with its output if it exits or stays silent past ``timeout_s``."""
    data_dir.mkdir(parents=True, exist_ok=True)
    config = standalone_config(data_dir, **intervals)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "cli.main", "standalone", "--config", str(config)],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    output: list[str] = []
    found = threading.Event()
    url: list[str] = []

    def pump() -> None:  # keeps reading so the pipe never fills; the first URL line is the signal
        assert proc.stdout is not None
        for line in proc.stdout:
            output.append(line)
            m = _UP_LINE.search(line)
            if m and not url:
                url.append(m.group(1))
                found.set()
        found.set()

    threading.Thread(target=pump, daemon=True).start()
    found.wait(timeout_s)
    if not url:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=30)
        raise RuntimeError("standalone did not start:\n" + "".join(output[-40:]))
    return Standalone(url[0], data_dir, proc, output)


async def wait_for(check: Callable[[], Awaitable[Any]], what: str, timeout_s: float, every_s: float = 0.5) -> Any:
    """Poll ``check`` until it returns something truthy; bounded by ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while True:
        last = await check()
        if last:
            return last
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what} (last: {last!r})")
        await asyncio.sleep(every_s)


async def wait_until_warm(site: Standalone, *, scrapes: int = 5, timeout_s: float = 240.0) -> None:
    """The state a few minutes of ``make run`` reaches: every target up and scraped ``scrapes``
    times in the last minute, and rules evaluated."""

    def value(expr: str) -> float:
        result = site.api("query", query=expr)["result"]
        return float(result[0]["value"][1]) if result else 0.0

    async def ask(expr: str) -> float:
        return await asyncio.to_thread(value, expr)

    targets = await wait_for(lambda: ask("count(up)"), "the first scrapes", timeout_s)
    await wait_for(lambda: ask(f"count(up == 1) >= {targets}"), "every target up", timeout_s)
    await wait_for(
        lambda: ask(f"count(count_over_time(up[1m]) >= {scrapes}) >= {targets}"),
        f"{scrapes} scrapes of every target", timeout_s,
    )  # fmt: skip
    await wait_for(lambda: ask("sum(ringmon_rule_evaluations_total)"), "rule evaluations", timeout_s)
