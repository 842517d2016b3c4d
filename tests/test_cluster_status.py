"""``ringmon status``: component lines, ring, write lag, and one clear line per component down.

Real ZooKeeper, a real in-process scraper and web server, real agents, SQLite storage.
The web server is registered in the ``ringmon`` self-monitoring pool as the cluster does;
then the scraper is stopped and ZooKeeper's address is made wrong, and the report must say
so in one line each (and the command exits 1).
"""

from __future__ import annotations

import asyncio

import pytest
from zk_helpers import cluster_scraper

from agent.server import AgentServer
from cli.cmd_status import collector_for
from cli.cmd_web import ClusterWeb, WebOptions
from cli.config import config_from_dict
from discovery.registry import Registry
from discovery.target import ScrapeSettings
from scraper.exposition import sample_sums as parse_metrics
from services.zookeeper.zkserver import free_port
from web.cluster_status import SELF_POOL, render

pytestmark = [pytest.mark.zookeeper, pytest.mark.slow]


def test_parse_metrics_sums_label_sets_and_skips_comments():
    text = '# HELP x y\nx{a="1"} 2\nx{a="2"} 3.5\ny 1e3\nbad line\n'
    assert parse_metrics(text) == {"x": 5.5, "y": 1000.0}


async def test_status_reports_components_ring_write_lag_and_down_components(zookeeper, zk_root, tmp_path):
    loop = asyncio.get_running_loop()
    web_port = free_port()
    cfg = config_from_dict({
        "storage": {"backend": "sqlite", "sqlite": {"path": str(tmp_path / "r.db")}},
        "discovery": {"zookeeper": {"hosts": zookeeper.hosts, "session_timeout": "4s"}},
        "scrape": {"interval": "1s", "timeout": "1s"},
        "web": {"listen": f"127.0.0.1:{web_port}"},
    })
    admin = await loop.run_in_executor(None, lambda: Registry(zookeeper.hosts, root=zk_root).start(watch=False))
    agents = [AgentServer("127.0.0.1", 0, pool="api", host_metrics=False) for _ in range(3)]
    for a in agents:
        await a.start()
    await loop.run_in_executor(None, admin.create_pool, "api", ScrapeSettings(interval_s=1.0, timeout_s=1.0))
    await loop.run_in_executor(None, admin.create_pool, SELF_POOL, ScrapeSettings(interval_s=1.0, timeout_s=1.0))
    await loop.run_in_executor(None, admin.register_host, SELF_POOL, f"127.0.0.1:{web_port}")
    for a in agents:
        await loop.run_in_executor(None, admin.register_host, "api", a.address)
    storage, writer, scraper = await cluster_scraper(cfg, zookeeper.hosts, zk_root)
    web_server = ClusterWeb(cfg, WebOptions(listen=f"127.0.0.1:{web_port}", zookeeper=zookeeper.hosts,
                                            zookeeper_root=zk_root))
    try:
        await scraper.start()
        await web_server.start()
        report = None
        deadline = loop.time() + 30
        while loop.time() < deadline:
            report = await collector_for(cfg, zookeeper.hosts, zk_root, 3.0).run()
            lag = report.write_lag.get("s-1", {})
            web_detail = next((c.detail for c in report.checks if c.component == "web"), "")
            # (the web server counts reachable scrapers when it first refreshes their health)
            if (report.ok and lag.get("newest_sample_age_s") is not None and report.ring.get("s-1") == 4
                    and "scrapers reachable 1/1" in web_detail):
                break
            await asyncio.sleep(0.5)
        assert report is not None and report.ok, render(report)
        by = {c.component: c for c in report.checks}
        assert set(by) == {"zookeeper", "storage", "s-1", "web"}
        assert "2 pools" not in by["zookeeper"].detail  # the self pool is not counted as a fleet pool
        assert "1 pools, 3/3 hosts ALIVE, 1 scrapers registered" in by["zookeeper"].detail
        assert by["s-1"].detail.startswith("owns 4 targets")  # 3 agents + the web server's /metrics
        assert "scrapers reachable 1/1" in by["web"].detail
        assert report.ring == {"s-1": 4} and report.ring_expected == {"s-1": 4}
        assert 0 <= report.write_lag["s-1"]["newest_sample_age_s"] < 10
        text = render(report)
        assert "all components healthy" in text and "ring: 1 scrapers, 4 targets" in text

        # the scraper's HTTP endpoints go away while it stays registered: one line says so
        assert scraper.runner is not None
        await scraper.runner.cleanup()
        scraper.runner = None
        report = await collector_for(cfg, zookeeper.hosts, zk_root, 2.0).run()
        down = [c for c in report.checks if not c.ok]
        assert [c.component for c in down] == ["s-1"], render(report)
        assert down[0].detail.startswith("scraper not answering: http://")
        assert "1 component(s) DOWN: s-1" in render(report)

        # ZooKeeper unreachable: one line, the rest still checked
        wrong = f"127.0.0.1:{free_port()}"
        report = await collector_for(cfg, wrong, zk_root, 1.0).run()
        zk = next(c for c in report.checks if c.component == "zookeeper")
        assert not zk.ok and zk.detail.startswith("cannot reach ZooKeeper") and "\n" not in zk.detail
        assert next(c for c in report.checks if c.component == "web").ok
    finally:
        await web_server.stop()
        await scraper.stop()
        await writer.close()
        await storage.close()
        await loop.run_in_executor(None, admin.stop)
        for a in agents:
            await a.stop()
