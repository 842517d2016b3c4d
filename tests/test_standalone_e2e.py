"""End to end in standalone mode: the real ``ringmon standalone`` process scrapes agents into
SQLite and serves pages whose chart is read back from storage.

The test runs its own agent with a counter it controls, plus a target that is down, as
static targets; standalone adds its in-process agents (one with synthetic request load).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from local_http import serve
from prometheus_client import Counter
from waiting import wait_for

from agent.server import AgentServer
from services.proc import free_port
from storage.matchers import Matcher, MatchOp
from storage.sqlite import SQLiteStorage

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow


def _eq(name: str, value: str) -> Matcher:
    return Matcher(name, MatchOp.EQ, value)


async def test_standalone_scrapes_stores_and_charts(tmp_path: Path) -> None:
    agent = AgentServer("127.0.0.1", 0)
    marker = Counter("e2e_marker", "counter set by the test", registry=agent.registry)
    await agent.start()
    dead = f"127.0.0.1:{free_port()}"
    web_port = free_port()
    db = tmp_path / "ringmon.db"
    targets = tmp_path / "targets.yaml"
    targets.write_text(
        "pools:\n"
        "  e2e:\n    interval: 1s\n    timeout: 1s\n"
        f"    hosts: ['{agent.address}', '{dead}']\n"
    )
    # A real webhook receiver for the alert the dead target raises.
    received: list[dict] = []

    async def hook(request: web.Request) -> web.Response:
        received.append(await request.json())
        return web.Response(text="ok")

    hook_app = web.Application()
    hook_app.router.add_post("/hook", hook)
    hook_runner, hook_url = await serve(hook_app)
    rules = tmp_path / "rules.yml"
    rules.write_text(
        "groups:\n- name: e2e\n  interval: 1s\n  rules:\n"
        "  - alert: E2ETargetDown\n    expr: up{job=\"e2e\"} == 0\n"
        "    labels: {severity: page}\n    annotations: {summary: '{{ $labels.instance }} is down'}\n"
    )
    alerting = tmp_path / "alerting.yaml"
    alerting.write_text(
        f"alerter:\n  rule_files: ['{rules}']\n  state_db: {tmp_path / 'alerting.db'}\n"
        "route:\n  receiver: hook\n  group_by: [alertname]\n  group_wait: 0s\n  group_interval: 1s\n"
        "  repeat_interval: 1h\n"
        f"receivers:\n- name: hook\n  webhook_configs:\n  - url: {hook_url}/hook\n"
    )
    cfg = tmp_path / "standalone.yaml"
    cfg.write_text(
        f"data_dir: {tmp_path / 'data'}\nalerting: {alerting}\n"
        f"storage:\n  sqlite:\n    path: {db}\n"
        f"discovery:\n  static_file: {targets}\n  refresh_interval: 1s\n"
        "scrape:\n  interval: 1s\n  timeout: 1s\n"
        "agents:\n  - pool: web\n    count: 2\n    synthetic_load_rps: 10\n"
        f"web:\n  listen: 127.0.0.1:{web_port}\n"
    )
    marker.inc(41)
    proc = subprocess.Popen(
        [sys.executable, "-m", "cli.main", "standalone", "--config", str(cfg)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    base = f"http://127.0.0.1:{web_port}"
    store = None
    try:
        async with aiohttp.ClientSession() as http:

            async def healthy() -> bool:
                if proc.poll() is not None:
                    raise AssertionError(f"standalone exited early:\n{proc.stdout.read()}")
                try:
                    async with http.get(f"{base}/-/healthy") as r:
                        return r.status == 200
                except aiohttp.ClientError:
                    return False

            await wait_for(healthy, "standalone web to answer")
            store = await SQLiteStorage.open(db)
            now = lambda: int(time.time() * 1000)  # noqa: E731

            async def marker_values(expected: float):
                got = await store.select([_eq("__name__", "e2e_marker_total")], now() - 120_000, now())
                vals = [float(v) for d in got for v in d.values]
                return vals if expected in vals else None

            await wait_for(lambda: marker_values(41.0), "the first marker value stored")
            marker.inc(1000.5)
            vals = await wait_for(lambda: marker_values(1041.5), "the second marker value stored")
            # Every stored sample is a value the agent served, and nothing else.
            assert set(vals) <= {41.0, 1041.5}, vals
            got = await store.select([_eq("__name__", "e2e_marker_total")], now() - 120_000, now())
            assert len(got) == 1
            assert got[0].series.get("job") == "e2e" and got[0].series.get("instance") == agent.address

            async def up_of(instance: str):
                d = await store.select([_eq("__name__", "up"), _eq("instance", instance)], now() - 120_000, now())
                return d[0].values.tolist() if d and len(d[0]) >= 2 else None

            assert set(await wait_for(lambda: up_of(agent.address), "up of the live target")) == {1.0}
            assert set(await wait_for(lambda: up_of(dead), "up of the dead target")) == {0.0}
            dur = await store.select([_eq("__name__", "scrape_duration_seconds"), _eq("instance", agent.address)], now() - 120_000, now())
            assert dur and all(0 <= v < 1.0 for v in dur[0].values)

            # Requests per second has real data from the synthetic load of the web agents.
            async def requests():
                d = await store.select([_eq("__name__", "http_requests_total"), _eq("job", "web")], now() - 120_000, now())
                return d if sum(len(x) for x in d) >= 2 else None

            await wait_for(requests, "synthetic http_requests_total samples")

            # The host page charts CPU per mode from storage: one SVG path per mode.
            async def cpu_series():
                d = await store.select([_eq("__name__", "node_cpu_seconds_total"), _eq("job", "web")], now() - 120_000, now())
                return d if d and all(len(x) >= 3 for x in d) else None

            cpu = await wait_for(cpu_series, "three CPU samples per series")
            instance = cpu[0].series.get("instance")
            modes = {d.series.get("mode") for d in cpu if d.series.get("instance") == instance}
            async with http.get(f"{base}/host/web/{instance}") as r:
                assert r.status == 200
                page = await r.text()
            assert "<svg" in page
            names = re.findall(r'<path class="line"[^>]*data-name="([^"]*)"', page)
            assert len(names) == len(modes), (names, modes)
            for mode in modes:
                assert sum(1 for n in names if re.search(rf"\b{re.escape(mode)}\b", n)) == 1, (mode, names)

            # The alert on the dead target reached the webhook, with its labels and annotation.
            async def firing():
                return [a for p in received for a in p.get("alerts", []) if a.get("status") == "firing"]

            alerts = await wait_for(firing, "the E2ETargetDown notification")
            assert {a["labels"]["instance"] for a in alerts} == {dead}
            assert alerts[0]["labels"]["alertname"] == "E2ETargetDown"
            assert alerts[0]["annotations"]["summary"] == f"{dead} is down"

            # Ringmon scrapes itself in standalone too.
            assert set(await wait_for(lambda: up_of(f"127.0.0.1:{web_port}"), "up of Ringmon itself")) == {1.0}

            for path in ("/", "/pools", "/targets", "/alerts", "/rules", "/dashboards", "/d/fleet", "/metrics"):
                async with http.get(base + path) as r:
                    assert r.status == 200, path
                    body = await r.text()
                    if path == "/targets":
                        assert agent.address in body and dead in body
    finally:
        if store is not None:
            await store.close()
        proc.send_signal(signal.SIGTERM)
        try:
            out, _ = proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
        await agent.stop()
        await hook_runner.cleanup()
    assert proc.returncode == 0, out
    assert "Traceback" not in out, out
