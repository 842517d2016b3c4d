"""The shipped standalone as `make run` starts it (only --listen and --data-dir changed): every
state file under the data dir, URLs on the listen address, notifications delivered to
Ringmon's own receivers without a failure, and every panel query of every shipped dashboard
answering with data once the events it needs (scrapes, a rollup pass, rule evaluations,
requests) have happened.
"""

from __future__ import annotations

import asyncio
import subprocess
import time
from pathlib import Path

import aiohttp
import pytest
from waiting import wait_for

from scraper.exposition import parse
from services.proc import free_port
from web.dashboards import DashboardStore, expand
from web.timerange import format_duration_s, parse_time_range

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow
BUDGET_S = 300.0  # the shipped timers: 10 s scrapes, 30 s rule group, 30 s group_wait


def _left(deadline: float) -> float:
    """What is left of a test's budget for its next wait."""
    return deadline - time.monotonic()


@pytest.fixture(scope="module")
def standalone(shipped_standalone):
    """The session's shipped instance (tests/fixtures_standalone.py: its output is checked for
    tracebacks and failed deliveries at the session's end)."""
    return shipped_standalone.url, shipped_standalone.data_dir, shipped_standalone.proc


async def _samples(http: aiohttp.ClientSession, base: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    """The process's own /metrics, read by the scraper's exposition parser: name -> (labels, value)."""
    async with http.get(f"{base}/metrics") as r:
        body = await r.read()
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for s in parse(body):
        out.setdefault(s.name, []).append((dict(s.labels), s.value))
    return out


async def _get_json(http: aiohttp.ClientSession, url: str, **params) -> dict:
    async with http.get(url, params=params) as r:
        assert r.status == 200, (url, params, await r.text())
        return await r.json()


async def _up(http: aiohttp.ClientSession, base: str, proc: subprocess.Popen) -> bool:
    if proc.poll() is not None:
        raise AssertionError(f"standalone exited early:\n{proc.stdout.read() if proc.stdout else ''}")
    try:
        async with http.get(f"{base}/-/healthy") as r:
            return r.status == 200
    except aiohttp.ClientError:
        return False


async def test_notifications_reach_the_local_receivers_and_nothing_fails(standalone) -> None:
    base, data, proc = standalone
    deadline = time.monotonic() + BUDGET_S
    async with aiohttp.ClientSession() as http:
        await wait_for(lambda: _up(http, base, proc), "the web server", _left(deadline), 0.25)

        async def delivered() -> str | None:
            async with http.get(f"{base}/notifications") as r:
                page = await r.text()
            return page if "RingmonWatchdog" in page else None

        # the always-firing watchdog travels rule -> notifier -> both local receivers -> page
        async def both() -> str | None:
            page = await delivered()
            return page if page and "notification log" in page and "webhook sink watchdog" in page else None

        await wait_for(both, "the watchdog on /notifications via the log and the sink", _left(deadline))
        metrics = await _samples(http, base)
        sent = metrics["ringmon_notifications_total"]
        for kind in ("notification_log", "webhook"):
            assert any(labels.get("integration") == kind and v >= 1 for labels, v in sent), sent
        failed = metrics["ringmon_notifications_failed_total"]  # exported from zero, and still zero
        assert failed and all(v == 0 for _, v in failed), failed
        alerts = await _get_json(http, f"{base}/api/v1/query", query='ALERTS{alertname="RingmonNotificationFailures"}')
        assert alerts["data"]["result"] == []
    # every state file is under the data dir; URLs given out use the listen address
    assert {"ringmon.db", "alerting.db", "notifications.db", "rollup-locks"} <= {p.name for p in data.iterdir()}
    async with aiohttp.ClientSession() as http:
        doc = await _get_json(http, f"{base}/api/v1/query", query='ALERTS{alertname="RingmonWatchdog"}')
    assert doc["data"]["result"], doc
    # the alert's link back (generatorURL) points at this instance's listen address
    from alerting.notifier.journal import NotificationJournal

    journal = NotificationJournal.in_data_dir(data)
    try:
        entries = await journal.recent()
    finally:
        await journal.close()
    urls = {a["generatorURL"] for e in entries for a in e.alerts}
    assert urls and all(u.startswith(base + "/") for u in urls), urls


async def test_every_panel_of_every_shipped_dashboard_has_data(standalone) -> None:
    base, _, proc = standalone
    deadline = time.monotonic() + BUDGET_S
    tr = parse_time_range({})
    builtins = {"__rate_interval": tr.rate_window, "__interval": format_duration_s(tr.step_s),
                "__range": format_duration_s(tr.range_s)}
    dashboards = DashboardStore(cluster=False).all()
    assert {d.name for d in dashboards} >= {"fleet", "host", "ringmon"}
    async with aiohttp.ClientSession() as http:
        await wait_for(lambda: _up(http, base, proc), "the web server", _left(deadline), 0.25)

        async def query(expr: str) -> list:
            doc = await _get_json(http, f"{base}/api/v1/query", query=expr)
            return doc["data"]["result"]

        for dash in dashboards:
            values: dict[str, str] = {}
            for var in dash.variables:  # as the page picks them: the default, else the first choice

                async def choices(var=var, values=values) -> list[str]:
                    found = await query(expand(var.options_query, values, builtins))
                    return sorted({s["metric"].get(var.options_label, "") for s in found} - {""})

                values[var.name] = var.default or (await wait_for(choices, f"choices of ${var.name}", _left(deadline)))[0]
            for panel in dash.panels:
                for q in panel.queries:
                    expr = expand(q.expr, values, builtins)

                    async def answered(expr=expr) -> list:
                        return await query(expr)

                    await wait_for(answered, f"data for {dash.name} / {panel.title}: {expr}", _left(deadline))
        # the page of each dashboard renders without a "No data" panel
        for dash in dashboards:
            async with http.get(f"{base}/d/{dash.name}") as r:
                assert r.status == 200
                assert "No data" not in await r.text(), dash.name
        # the web and rollup metrics standalone's own scraper reads
        names = set(await _samples(http, base))
        assert {"ringmon_web_requests_total", "ringmon_rollup_lag_seconds", "ringmon_rollup_errors_total"} <= names


async def test_status_and_pools_answer_for_a_standalone_instance(standalone, tmp_path, capsys) -> None:
    from cli.main import main

    base, data, proc = standalone
    deadline = time.monotonic() + BUDGET_S
    async with aiohttp.ClientSession() as http:
        await wait_for(lambda: _up(http, base, proc), "the web server", _left(deadline), 0.25)

        async def scraped() -> bool:  # every target has had its first scrape
            doc = await _get_json(http, f"{base}/-/pools")
            return all(r["up"] == r["members"] for r in doc) and {r["pool"] for r in doc} == {"web", "db", "ringmon"}

        await wait_for(scraped, "a first scrape of every target", _left(deadline))
    loop = asyncio.get_running_loop()
    capsys.readouterr()
    assert await loop.run_in_executor(None, main, ["status", "--url", base]) == 0
    out = capsys.readouterr().out
    for part in ("storage", "standalone", "rollup", "alerter", "web", "all components healthy"):
        assert part in out, out
    assert str(data / "ringmon.db") in out and "(6 up, 0 down)" in out
    # a standalone config is asked at its web.listen
    cfg = tmp_path / "standalone.yaml"
    cfg.write_text((ROOT / "configs" / "standalone.yaml").read_text().replace(
        "listen: 127.0.0.1:8080", f"listen: {base.removeprefix('http://')}"))
    assert await loop.run_in_executor(None, main, ["status", "--config", str(cfg), "--json"]) == 0
    assert '"ok": true' in capsys.readouterr().out
    assert await loop.run_in_executor(None, main, ["pools", "--config", str(cfg)]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split()[:5] == ["POOL", "RUNNING", "STOPPING", "UP", "DOWN"]
    assert [row.split()[:5] for row in table[1:]] == [["db", "2", "0", "2", "0"], ["ringmon", "1", "0", "1", "0"],
                                                      ["web", "3", "0", "3", "0"]]
    # nothing answering: one line and exit code 1, no traceback
    assert await loop.run_in_executor(None, main, ["status", "--url", f"http://127.0.0.1:{free_port()}"]) == 1
    assert "DOWN" in capsys.readouterr().out


def test_status_reads_metrics_with_the_exposition_parser() -> None:
    from scraper.exposition import sample_sums as parse_metrics

    text = ('# TYPE x_total counter\nx_total{path="/a}b",code="200"} 3\nx_total{path="{}",code="500"} 4\n'
            'ringmon_web_requests_total{handler="/x/{name}"} 2\n')
    assert parse_metrics(text) == {"x_total": 7.0, "ringmon_web_requests_total": 2.0}
