"""The Prometheus API as Grafana's Prometheus data source and promtool call it, against a real
standalone Ringmon (in-process, SQLite, real agents scraped over HTTP on 127.0.0.1): metadata
from the HELP/TYPE lines scraped, targets, rules, alerts, status, and the exact requests the
data source sends (its backend client and its language provider, public in grafana/grafana)."""

from __future__ import annotations

import asyncio
import json
import shutil
import tarfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
import pprof_reader
import pytest
from aiohttp import web
from local_http import serve
from prometheus_client import Counter, Gauge
from waiting import wait_for

from agent.server import AgentServer
from cli.config import load_config
from cli.standalone import Standalone
from services.proc import free_port

PROMTOOL = shutil.which("promtool")


@pytest.fixture
async def standalone(tmp_path: Path):
    agent = AgentServer("127.0.0.1", 0)
    Counter("fleet_jobs", "Jobs done.\nSecond line with a \\ backslash.", registry=agent.registry).inc(3)
    Gauge("fleet_temperature_celsius", "Temperature.", unit="celsius", registry=agent.registry).set(21.5)
    await agent.start()
    om_app = web.Application()
    om_app.router.add_get("/metrics", _openmetrics)
    om_runner, om_url = await serve(om_app)
    om = om_url.removeprefix("http://")
    dead = f"127.0.0.1:{free_port()}"
    targets = tmp_path / "targets.yaml"
    targets.write_text(
        "pools:\n"
        "  fleet:\n    interval: 1s\n    timeout: 1s\n"
        f"    hosts: ['{agent.address}', '{dead}']\n"
        f"  om:\n    interval: 1s\n    timeout: 1s\n    hosts: ['{om}']\n"
        "  gone:\n    interval: 1s\n    timeout: 1s\n    hosts: ['127.0.0.1:1']\n"
    )
    rules = tmp_path / "rules.yml"
    rules.write_text(
        "groups:\n- name: fleet\n  interval: 1s\n  rules:\n"
        "  - alert: FleetTargetDown\n    expr: up{job=\"fleet\"} == 0\n"
        "    labels: {severity: page}\n    annotations: {summary: '{{ $labels.instance }} is down'}\n"
        "  - record: job:up:sum\n    expr: sum by (job) (up)\n"
    )
    alerting = tmp_path / "alerting.yaml"
    alerting.write_text(
        f"alerter:\n  rule_files: ['{rules}']\n  state_db: {tmp_path / 'alerting.db'}\n"
        "route:\n  receiver: am\n  group_wait: 0s\n"
        "receivers:\n- name: am\n  alertmanager_configs:\n  - url: http://127.0.0.1:1\n"
    )
    cfg = tmp_path / "standalone.yaml"
    cfg.write_text(
        f"data_dir: {tmp_path / 'data'}\nalerting: {alerting}\n"
        f"storage:\n  sqlite:\n    path: {tmp_path / 'ringmon.db'}\n"
        f"discovery:\n  static_file: {targets}\n  refresh_interval: 1s\n"
        "scrape:\n  interval: 1s\n  timeout: 1s\n"
        "  pools:\n    gone:\n      relabel_configs:\n      - {action: drop, source_labels: [job], regex: gone}\n"
        f"web:\n  listen: 127.0.0.1:{free_port()}\n"
        "  session_secret: topsecretvalue\n  pprof_max_seconds: 1s\n"
    )
    system = Standalone(load_config(cfg))
    await system.start()
    try:
        yield f"http://127.0.0.1:{system.web_port}", agent.address, dead
    finally:
        await system.stop()
        await agent.stop()
        await om_runner.cleanup()


OPENMETRICS = (
    "# TYPE om_latency_seconds gauge\n# UNIT om_latency_seconds seconds\n"
    '# HELP om_latency_seconds Latency with \\"quotes\\".\nom_latency_seconds 0.25\n# EOF\n'
)


async def _openmetrics(request: web.Request) -> web.Response:
    return web.Response(text=OPENMETRICS, headers={
        "Content-Type": "application/openmetrics-text; version=1.0.0; charset=utf-8"})


async def _json(http: aiohttp.ClientSession, method: str, url: str, **kw) -> tuple[int, dict]:
    async with http.request(method, url, **kw) as r:
        return r.status, json.loads(await r.text())


async def test_fleet_endpoints_standalone(standalone) -> None:
    base, live, dead = standalone
    api = base + "/api/v1"
    async with aiohttp.ClientSession() as http:

        async def scraped():
            _, body = await _json(http, "GET", api + "/metadata")
            return {"fleet_jobs_total", "om_latency_seconds"} <= set(body["data"])

        await wait_for(scraped, "metadata of both scraped targets")
        _, body = await _json(http, "GET", api + "/metadata", params={"metric": "fleet_jobs_total"})
        md = body["data"]
        assert md == {"fleet_jobs_total": [{"type": "counter", "help": "Jobs done.\nSecond line with a \\ backslash.",
                                      "unit": ""}]}
        _, body = await _json(http, "GET", api + "/metadata")
        assert body["data"]["fleet_temperature_celsius"][0]["type"] == "gauge"
        assert body["data"]["om_latency_seconds"] == [{"type": "gauge", "help": 'Latency with "quotes".',
                                                       "unit": "seconds"}]
        assert len(body["data"]) > 5  # the agents' own families too
        _, body = await _json(http, "GET", api + "/metadata", params={"limit": "2", "limit_per_metric": "1"})
        assert len(body["data"]) == 2 and all(len(v) == 1 for v in body["data"].values())
        status, body = await _json(http, "GET", api + "/metadata", params={"limit": "x"})
        assert status == 400 and body["errorType"] == "bad_data"
        _, body = await _json(http, "GET", api + "/targets/metadata",
                              params={"match_target": '{job="fleet"}', "metric": "fleet_jobs_total"})
        assert body["data"] == [{"target": {"instance": live, "job": "fleet"}, "type": "counter",
                                 "help": "Jobs done.\nSecond line with a \\ backslash.", "unit": ""}]

        async def both_scraped():
            _, body = await _json(http, "GET", api + "/targets", params={"state": "active"})
            ts = {t["labels"]["instance"]: t for t in body["data"]["activeTargets"] if t["scrapePool"] == "fleet"}
            return ts if {live, dead} <= set(ts) and all(t["health"] != "unknown" for t in ts.values()) else None

        ts = await wait_for(both_scraped, "both fleet targets scraped")
        up, down = ts[live], ts[dead]
        assert up["health"] == "up" and up["lastError"] == "" and up["scrapeUrl"] == f"http://{live}/metrics"
        assert up["scrapeInterval"] == "1s" and up["scrapeTimeout"] == "1s"
        assert up["labels"] == {"instance": live, "job": "fleet"}
        assert up["discoveredLabels"]["__address__"] == live and up["discoveredLabels"]["job"] == "fleet"
        assert up["lastScrape"].endswith("Z") and up["lastScrapeDuration"] > 0
        assert down["health"] == "down" and down["lastError"]
        assert body_keys(up) == {"discoveredLabels", "labels", "scrapePool", "scrapeUrl", "globalUrl", "lastError",
                                 "lastScrape", "lastScrapeDuration", "health", "scrapeInterval", "scrapeTimeout",
                                 "samplesDropped", "lastDrop"}
        assert up["samplesDropped"] == {} and up["lastDrop"] == ""
        _, body = await _json(http, "GET", api + "/targets", params={"state": "dropped"})
        assert body["data"]["activeTargets"] == []
        assert [d["discoveredLabels"]["job"] for d in body["data"]["droppedTargets"]] == ["gone"]
        assert body["data"]["droppedTargetCounts"] == {"gone": 1}

        async def firing():
            _, body = await _json(http, "GET", api + "/alerts")
            return body["data"]["alerts"] or None

        alerts = await wait_for(firing, "the alert on the dead target")
        assert alerts[0]["labels"]["alertname"] == "FleetTargetDown" and alerts[0]["labels"]["instance"] == dead
        assert alerts[0]["state"] in ("pending", "firing") and alerts[0]["value"] == "0e+00"
        _, body = await _json(http, "GET", api + "/rules")
        (group,) = body["data"]["groups"]
        assert group["name"] == "fleet" and group["interval"] == 1
        kinds = {r["name"]: r for r in group["rules"]}
        assert kinds["FleetTargetDown"]["type"] == "alerting" and kinds["FleetTargetDown"]["alerts"]
        assert kinds["job:up:sum"]["type"] == "recording" and kinds["job:up:sum"]["query"] == "sum by (job) (up)"
        _, body = await _json(http, "GET", api + "/rules", params={"type": "record"})
        assert [r["name"] for r in body["data"]["groups"][0]["rules"]] == ["job:up:sum"]
        _, body = await _json(http, "GET", api + "/rules", params={"type": "alert", "exclude_alerts": "true"})
        assert body["data"]["groups"][0]["rules"][0]["alerts"] is None
        status, body = await _json(http, "GET", api + "/rules", params={"type": "bogus"})
        assert status == 400

        _, body = await _json(http, "GET", api + "/scrape_pools")
        assert body["data"] == {"scrapePools": ["fleet", "gone", "om", "ringmon"]}
        _, body = await _json(http, "GET", api + "/status/walreplay")
        assert body["data"] == {"min": 0, "max": 0, "current": 0}
        _, body = await _json(http, "GET", api + "/alertmanagers")
        assert body["data"] == {"activeAlertmanagers": [{"url": "http://127.0.0.1:1/api/v2/alerts"}],
                                "droppedAlertmanagers": []}
        _, body = await _json(http, "GET", api + "/status/config")
        assert "static_file" in body["data"]["yaml"] and "topsecretvalue" not in body["data"]["yaml"]
        _, body = await _json(http, "GET", api + "/status/flags")
        assert body["data"]["mode"] == "standalone" and body["data"]["storage.backend"] == "sqlite"
        _, body = await _json(http, "GET", api + "/status/runtimeinfo")
        assert body["data"]["reloadConfigSuccess"] is True and body["data"]["storageRetention"].startswith("raw ")
        _, body = await _json(http, "GET", api + "/status/tsdb")
        tsdb = body["data"]
        assert tsdb["headStats"]["numSeries"] > 0
        counts = [s["value"] for s in tsdb["seriesCountByMetricName"]]
        assert len(counts) == 10 and counts == sorted(counts, reverse=True)
        assert len(tsdb["seriesCountByLabelValuePair"]) == 10
        status, body = await _json(http, "GET", api + "/status/tsdb", params={"limit": "0"})
        assert status == 400
        status, body = await _json(http, "POST", api + "/targets")
        assert status == 405 and body["status"] == "error"
        async with http.get(base + "/-/ready") as r:
            assert r.status == 200


def body_keys(d: dict) -> set[str]:
    return set(d)


async def test_grafana_requests_standalone(standalone) -> None:
    base, live, _ = standalone
    async with aiohttp.ClientSession() as http:
        await wait_for(lambda: _has_data(http, base), "a few scrapes stored")
        for method, path, form in grafana_requests(time.time()):
            status, body = await _json(http, method, base + path,
                                       **({"data": form} if method == "POST" else {"params": form}))
            assert status == 200 and body["status"] == "success", (method, path, form, body)
            check_grafana_answer(path, body["data"], live)


async def _has_data(http: aiohttp.ClientSession, base: str) -> bool:
    _, body = await _json(http, "GET", base + "/api/v1/query", params={"query": "count_over_time(up[1m]) > 2"})
    return bool(body["data"]["result"])


def grafana_requests(now: float) -> list[tuple[str, str, dict[str, str]]]:
    """What Grafana's Prometheus data source sends (pkg/promlib/client/client.go for queries, with
    its default POST method and float-second times; packages/grafana-prometheus language provider
    and resource clients for the editor: label names and values, series, metadata; the datasource
    test reads buildinfo and runs ``1+1``; alerting lists ``/api/v1/rules``)."""
    start, end = str(int(now) - 600), str(int(now))
    return [
        ("GET", "/api/v1/status/buildinfo", {}),
        ("POST", "/api/v1/query", {"query": "1+1", "time": f"{now:.3f}"}),
        ("POST", "/api/v1/query_range", {"query": 'fleet_jobs_total{job="fleet"} * 2', "start": start,
                                          "end": end, "step": "15"}),
        ("POST", "/api/v1/query", {"query": "sum by (job) (up)", "time": end}),
        ("POST", "/api/v1/query_exemplars", {"query": "fleet_jobs_total", "start": start, "end": end}),
        ("GET", "/api/v1/label/__name__/values", {"start": start, "end": end, "limit": "40000"}),
        ("POST", "/api/v1/labels", {"start": start, "end": end, "limit": "40000"}),
        ("GET", "/api/v1/labels", {"start": start, "end": end, "match[]": "up"}),
        ("GET", "/api/v1/label/job/values", {"start": start, "end": end, "match[]": "up", "limit": "40000"}),
        ("POST", "/api/v1/series", {"start": start, "end": end, "match[]": '{__name__=~".+"}', "limit": "40000"}),
        ("GET", "/api/v1/metadata", {}),
        ("GET", "/api/v1/rules", {}),
    ]


def check_grafana_answer(path: str, data, live: str) -> None:
    if path == "/api/v1/status/buildinfo":
        assert data["version"]
    elif path == "/api/v1/query" and isinstance(data["result"], list) and data["resultType"] == "scalar":
        assert data["result"][1] == "2"
    elif path == "/api/v1/query_range":
        assert data["resultType"] == "matrix" and data["result"][0]["metric"]["instance"] == live
    elif path == "/api/v1/label/__name__/values":
        assert "up" in data and "fleet_jobs_total" in data
    elif path == "/api/v1/labels":
        assert {"job", "instance", "__name__"} <= set(data)
    elif path == "/api/v1/label/job/values":
        assert "fleet" in data
    elif path == "/api/v1/series":
        assert any(s.get("__name__") == "fleet_jobs_total" for s in data)
    elif path == "/api/v1/metadata":
        assert data["fleet_jobs_total"][0]["type"] == "counter"
    elif path == "/api/v1/rules":
        assert data["groups"][0]["name"] == "fleet"


@pytest.mark.skipif(PROMTOOL is None, reason="promtool (Debian package prometheus) is not installed")
async def test_promtool_against_standalone(standalone, tmp_path: Path) -> None:
    base, live, _ = standalone
    async with aiohttp.ClientSession() as http:
        await wait_for(lambda: _has_data(http, base), "a few scrapes stored")
        async with http.get(base + "/metrics") as r:
            own_metrics = await r.read()

    async def promtool(*args: str, stdin: bytes | None = None) -> tuple[int, str]:
        proc = await asyncio.create_subprocess_exec(
            PROMTOOL, *args, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,  # type: ignore[arg-type]
            stderr=asyncio.subprocess.STDOUT, cwd=tmp_path)
        out, _ = await asyncio.wait_for(proc.communicate(stdin), timeout=60)
        return proc.returncode or 0, out.decode()

    rc, out = await promtool("query", "instant", base, 'up{job="fleet"}')
    assert rc == 0 and f'instance="{live}"' in out and "=> 1 @[" in out, out
    now = int(time.time())
    rc, out = await promtool("query", "range", f"--start={now - 60}", f"--end={now}", "--step=5s", base,
                             'fleet_jobs_total{job="fleet"}')
    assert rc == 0 and "3 @[" in out, out
    rc, out = await promtool("query", "series", "--match=fleet_jobs_total", base)
    assert rc == 0 and f'instance="{live}"' in out, out
    rc, out = await promtool("query", "labels", base, "job")
    assert rc == 0 and "fleet" in out.split(), out
    rc, out = await promtool("check", "metrics", stdin=own_metrics)
    assert rc == 0, out
    rc, out = await promtool("debug", "metrics", base)  # fetches /metrics into debug.tar.gz
    assert rc == 0 and (tmp_path / "debug.tar.gz").stat().st_size > 0, out
    await check_promtool_debug(promtool, tmp_path, base)


async def check_promtool_debug(promtool: Callable[..., Awaitable[tuple[int, str]]], cwd: Path, base: str,
                               commands: tuple[str, ...] = ("pprof", "all")) -> None:
    """``promtool debug pprof`` and ``debug all``: exit 0 and an archive of the profiles, each one
    parsed by promtool (``profile.Parse``, which fails the command on a malformed profile); the
    server caps promtool's 30 s CPU profile at its web.pprof_max_seconds."""
    for what in commands:
        extra = {"metrics.txt"} if what == "all" else set()
        (cwd / "debug.tar.gz").unlink(missing_ok=True)
        rc, out = await promtool("debug", what, base)
        assert rc == 0, out
        with tarfile.open(cwd / "debug.tar.gz") as tar:
            files = {Path(m.name).name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}  # type: ignore[union-attr]
        assert set(files) == {"cpu.pb", "block.pb", "goroutine.pb", "heap.pb", "mutex.pb", "threadcreate.pb",
                              "trace.pb"} | extra, sorted(files)
        cpu = pprof_reader.parse(files["cpu.pb"])  # promtool wrote it back uncompressed
        assert cpu.samples and any("30 s asked, 1 s sampled" in c for c in cpu.comments), cpu.comments
        goroutines = pprof_reader.parse(files["goroutine.pb"])
        assert any(s.labels.get("kind") == "task" for s in goroutines.samples)
