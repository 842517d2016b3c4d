"""``ringmon web`` in cluster mode: pools from ZooKeeper, health and owner from the scrapers.

Real ZooKeeper, a real in-process scraper (``ScraperProcess``) scraping real agents on
127.0.0.1, SQLite storage (the cluster wiring is the same for Cassandra), and the web
server under test reached over HTTP. ZooKeeper is stopped for a moment to check the pages
keep the last known view.
"""

from __future__ import annotations

import asyncio

import aiohttp
import pytest
from zk_helpers import async_wait_for, cluster_scraper

from agent.server import AgentServer
from cli.cmd_web import ClusterWeb, WebOptions
from cli.config import config_from_dict
from discovery.registry import Registry
from discovery.target import ScrapeSettings
from services.zookeeper.zkserver import free_port

pytestmark = [pytest.mark.zookeeper, pytest.mark.slow]


async def test_web_shows_zookeeper_pools_with_scraper_health_and_survives_a_zookeeper_blip(
    zookeeper, zk_root, tmp_path
):
    loop = asyncio.get_running_loop()
    cfg = config_from_dict({
        "storage": {"backend": "sqlite", "sqlite": {"path": str(tmp_path / "r.db")}},
        "discovery": {"zookeeper": {"hosts": zookeeper.hosts, "session_timeout": "4s"}},
        "scrape": {"interval": "1s", "timeout": "1s"},
    })
    admin = await loop.run_in_executor(None, lambda: Registry(zookeeper.hosts, root=zk_root).start(watch=False))
    agents = [AgentServer("127.0.0.1", 0, pool=p, host_metrics=False) for p in ("api", "api", "db")]
    for a in agents:
        await a.start()
    settings = ScrapeSettings(interval_s=1.0, timeout_s=1.0)
    await loop.run_in_executor(None, admin.create_pool, "api", settings)
    await loop.run_in_executor(None, admin.create_pool, "db", settings)
    regs = [await loop.run_in_executor(None, admin.register_ephemeral, a.pool, a.address) for a in agents]
    # a registered host nobody serves: its scrape fails, the page must say "down"
    dead = f"127.0.0.1:{free_port()}"
    await loop.run_in_executor(None, admin.register_host, "db", dead)

    storage, writer, scraper = await cluster_scraper(cfg, zookeeper.hosts, zk_root)
    web_port = free_port()
    server = ClusterWeb(cfg, WebOptions(listen=f"127.0.0.1:{web_port}", zookeeper=zookeeper.hosts,
                                        zookeeper_root=zk_root, session_timeout=4.0, health_cache_s=0.2))
    base = f"http://127.0.0.1:{web_port}"
    try:
        await scraper.start()
        await server.start()
        fleet = server.fleet
        assert fleet is not None

        async def settled():
            pools = {p["name"]: p for p in await fleet.pools_summary()}
            if set(pools) != {"api", "db"} or pools["api"]["running"] != 2 or pools["db"]["running"] != 2:
                return None
            health = {h["address"]: h["health"] for p in pools.values() for h in p["hosts"]}
            if any(health.get(a.address) != "up" for a in agents) or health.get(dead) != "down":
                return None
            return pools

        deadline = loop.time() + 30
        pools = None
        while pools is None and loop.time() < deadline:
            pools = await settled()
            await asyncio.sleep(0.2)
        assert pools is not None, await fleet.pools_summary()

        targets = {t["key"]: t for t in await fleet.targets_health()}
        assert set(targets) == {f"{a.pool}/{a.address}" for a in agents} | {f"db/{dead}"}
        assert {t["owner"] for t in targets.values()} == {"s-1"}

        async with aiohttp.ClientSession() as http:
            async with http.get(f"{base}/pools") as r:
                assert r.status == 200
                page = await r.text()
            assert "2 running" in page and agents[0].address in page and dead in page
            async with http.get(f"{base}/targets") as r:
                assert r.status == 200
                assert "s-1" in await r.text()
            # the Prometheus API over the same storage: the scraper's samples are there
            async def up_series():
                async with http.get(f"{base}/api/v1/query", params={"query": "up"}) as r:
                    body = await r.json()
                return {(s["metric"]["job"], s["metric"]["instance"]): s["value"][1] for s in body["data"]["result"]}

            ups: dict = {}
            deadline = loop.time() + 60
            while loop.time() < deadline:
                ups = await up_series()
                if len(ups) == 4:
                    break
                await asyncio.sleep(0.3)
            assert ups == {**{(a.pool, a.address): "1" for a in agents}, ("db", dead): "0"}
            async with http.get(f"{base}/-/status") as r:
                status = await r.json()
            assert status["zookeeper_connected"] is True and status["scrapers"]["s-1"]["reachable"] is True
            async with http.get(f"{base}/metrics") as r:
                text = await r.text()
            assert 'ringmon_web_requests_total{code="200",handler="pools"}' in text
            assert "ringmon_web_zookeeper_connected 1.0" in text
            assert "ringmon_web_scrapers_reachable 1.0" in text

            # ZooKeeper away: the pages keep the last known view
            await loop.run_in_executor(None, zookeeper.stop)
            try:
                await async_wait_for(lambda: not fleet.view().connected, 10, "web to notice the outage")
                pools = {p["name"]: p for p in await fleet.pools_summary()}
                assert pools["api"]["running"] == 2 and pools["db"]["running"] == 2
                async with http.get(f"{base}/pools") as r:
                    assert r.status == 200
                    assert "2 running" in await r.text()
                async with http.get(f"{base}/metrics") as r:
                    assert "ringmon_web_zookeeper_connected 0.0" in await r.text()
            finally:
                await loop.run_in_executor(None, zookeeper.start)
            await async_wait_for(lambda: fleet.view().connected, 20, "web to reconnect")
    finally:
        await server.stop()
        await scraper.stop()
        await writer.close()
        await storage.close()
        for r in regs:
            await loop.run_in_executor(None, r.remove)
        await loop.run_in_executor(None, admin.stop)
        for a in agents:
            await a.stop()
