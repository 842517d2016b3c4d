"""The Prometheus API of ``ringmon web`` (cluster mode) as Grafana and promtool call it: real
ZooKeeper, a real in-process scraper scraping a real agent on 127.0.0.1, a real alerter
serving its HTTP API, and the web server reached over HTTP; on SQLite and on the real
Cassandra. Metadata and targets come from the scrapers (``/metadata``, ``/targets``), rules
and alerts from the alerter, samples from the store."""

from __future__ import annotations

import asyncio
import json
import shutil
import time
from pathlib import Path

import aiohttp
import pytest
from prometheus_client import Counter
from test_api_fleet import check_grafana_answer, check_promtool_debug, grafana_requests
from waiting import wait_for
from zk_helpers import cluster_scraper

from agent.server import AgentServer
from alerting.service import AlerterService, load_alerting_file
from cli.cmd_web import ClusterWeb, WebOptions
from cli.config import config_from_dict
from discovery.registry import Registry
from discovery.target import ScrapeSettings
from services.zookeeper.zkserver import free_port

pytestmark = [pytest.mark.zookeeper, pytest.mark.slow]
PROMTOOL = shutil.which("promtool")


def _storage_doc(backend: str, tmp: Path, request) -> dict:
    if backend == "sqlite":
        return {"backend": "sqlite", "sqlite": {"path": str(tmp / "r.db")}}
    cassandra = request.getfixturevalue("cassandra")
    keyspace = request.getfixturevalue("cassandra_storage").keyspace
    return {"backend": "cassandra", "cassandra": {"hosts": [cassandra.host], "port": cassandra.port,
                                                  "keyspace": keyspace, "spool_dir": str(tmp / "spool")}}


@pytest.fixture(params=["sqlite", pytest.param("cassandra", marks=pytest.mark.cassandra)])
async def cluster(request, tmp_path: Path, zookeeper, zk_root):
    loop = asyncio.get_running_loop()
    agent = AgentServer("127.0.0.1", 0, pool="fleet", host_metrics=False)
    Counter("fleet_jobs", "Jobs done.", registry=agent.registry).inc(3)
    await agent.start()
    dead = f"127.0.0.1:{free_port()}"
    admin = await loop.run_in_executor(None, lambda: Registry(zookeeper.hosts, root=zk_root).start(watch=False))
    await loop.run_in_executor(None, admin.create_pool, "fleet", ScrapeSettings(interval_s=1.0, timeout_s=1.0))
    await loop.run_in_executor(None, admin.register_ephemeral, "fleet", agent.address)
    await loop.run_in_executor(None, admin.register_host, "fleet", dead)

    rules = tmp_path / "fleet.rules.yml"
    rules.write_text(
        "groups:\n- name: fleet\n  interval: 1s\n  rules:\n"
        "  - alert: FleetTargetDown\n    expr: up{job=\"fleet\"} == 0\n    labels: {severity: page}\n"
        "  - record: job:up:sum\n    expr: sum by (job) (up)\n"
    )
    alerting = tmp_path / "alerting.yaml"  # written once the scraper listens (below)
    cfg = config_from_dict({
        "storage": _storage_doc(request.param, tmp_path, request),
        "discovery": {"zookeeper": {"hosts": zookeeper.hosts, "session_timeout": "4s"}},
        "scrape": {"interval": "1s", "timeout": "1s"},
        "data_dir": str(tmp_path / "data"),
        "alerting": str(alerting),
        "web": {"pprof_max_seconds": "1s"},
    })
    storage, writer, scraper = await cluster_scraper(cfg, zookeeper.hosts, zk_root)
    alerter: AlerterService | None = None
    server: ClusterWeb | None = None
    try:
        # The scraper binds its port first: free_port() only names a port that is free now,
        # and the scraper's own bind could otherwise take the one picked for the alerter.
        await scraper.start()
        alerting.write_text(json.dumps({
            "alerter": {"listen": f"127.0.0.1:{free_port()}", "state_db": str(tmp_path / "state.db"),
                        "rule_files": [str(rules)], "evaluation_interval": "1s", "watch_interval": "1h"},
            "route": {"receiver": "am", "group_wait": "1h"},
            "receivers": [{"name": "am", "alertmanager_configs": [{"url": "http://127.0.0.1:1"}]}],
        }))
        settings, ncfg = load_alerting_file(str(alerting))
        alerter = AlerterService(settings, ncfg, storage, writer, alerting_config_path=str(alerting))
        web_port = free_port()
        server = ClusterWeb(cfg, WebOptions(listen=f"127.0.0.1:{web_port}", zookeeper=zookeeper.hosts,
                                            zookeeper_root=zk_root, session_timeout=4.0, health_cache_s=0.2,
                                            alerting_file=str(alerting)))
        await alerter.start(serve_http=True)
        await server.start()
        yield f"http://127.0.0.1:{web_port}", agent.address, dead
    finally:
        if server is not None:
            await server.stop()
        if alerter is not None:
            await alerter.stop()
        await scraper.stop()
        await writer.close()
        await storage.close()
        await loop.run_in_executor(None, admin.stop)
        await agent.stop()


async def _json(http: aiohttp.ClientSession, method: str, url: str, **kw) -> tuple[int, dict]:
    async with http.request(method, url, **kw) as r:
        return r.status, json.loads(await r.text())


async def test_fleet_api_and_grafana_requests_in_cluster_mode(cluster, tmp_path: Path) -> None:
    base, live, dead = cluster
    api = base + "/api/v1"
    async with aiohttp.ClientSession() as http:

        async def scraped():
            _, body = await _json(http, "GET", api + "/metadata", params={"metric": "fleet_jobs_total"})
            return body["data"] or None

        assert await wait_for(scraped, "metadata from the scraper") == {
            "fleet_jobs_total": [{"type": "counter", "help": "Jobs done.", "unit": ""}]}
        _, body = await _json(http, "GET", api + "/targets/metadata", params={"match_target": '{job="fleet"}'})
        assert {m["metric"] for m in body["data"]} >= {"fleet_jobs_total"}
        assert all(m["target"] == {"instance": live, "job": "fleet"} for m in body["data"])

        async def both_scraped():
            _, body = await _json(http, "GET", api + "/targets")
            ts = {t["labels"]["instance"]: t for t in body["data"]["activeTargets"]}
            return ts if {live, dead} <= set(ts) and all(t["health"] != "unknown" for t in ts.values()) else None

        ts = await wait_for(both_scraped, "both targets scraped")
        assert ts[live]["health"] == "up" and ts[live]["scrapePool"] == "fleet"
        assert ts[live]["scrapeUrl"] == f"http://{live}/metrics" and ts[live]["scrapeInterval"] == "1s"
        assert ts[dead]["health"] == "down" and ts[dead]["lastError"]
        assert ts[dead]["discoveredLabels"]["__address__"] == dead

        async def firing():
            _, body = await _json(http, "GET", api + "/alerts")
            return body["data"]["alerts"] or None

        (alert,) = await wait_for(firing, "the alert on the dead target, from the alerter")
        assert alert["labels"]["instance"] == dead and alert["labels"]["alertname"] == "FleetTargetDown"
        _, body = await _json(http, "GET", api + "/alertmanagers")
        assert body["data"]["activeAlertmanagers"] == [{"url": "http://127.0.0.1:1/api/v2/alerts"}]
        _, body = await _json(http, "GET", api + "/status/flags")
        assert body["data"]["mode"] == "cluster"
        _, body = await _json(http, "GET", api + "/status/tsdb")
        assert body["data"]["headStats"]["numSeries"] > 0

        async def has_data() -> bool:
            _, body = await _json(http, "GET", api + "/query", params={"query": "count_over_time(up[1m]) > 2"})
            return bool(body["data"]["result"])

        await wait_for(has_data, "a few scrapes stored")
        for method, path, form in grafana_requests(time.time()):
            status, body = await _json(http, method, base + path,
                                       **({"data": form} if method == "POST" else {"params": form}))
            assert status == 200 and body["status"] == "success", (method, path, form, body)
            check_grafana_answer(path, body["data"], live)

    if PROMTOOL is not None:
        proc = await asyncio.create_subprocess_exec(PROMTOOL, "query", "instant", base, 'up{job="fleet"}',
                                                    stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
        out, _ = await asyncio.wait_for(proc.communicate(), timeout=60)
        assert proc.returncode == 0 and f'instance="{live}"' in out.decode(), out

        async def promtool(*args: str) -> tuple[int, str]:
            proc = await asyncio.create_subprocess_exec(PROMTOOL, *args, stdout=asyncio.subprocess.PIPE,  # type: ignore[arg-type]
                                                        stderr=asyncio.subprocess.STDOUT, cwd=tmp_path)
            out, _ = await asyncio.wait_for(proc.communicate(), timeout=60)
            return proc.returncode or 0, out.decode()

        await check_promtool_debug(promtool, tmp_path, base, ("all",))  # the pprof endpoints and /metrics
