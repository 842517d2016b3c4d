"""A stock Prometheus with serverset_sd_configs on our member paths sees exactly our hosts.

Proves the znode layout is real Finagle serverset: Debian's ``prometheus`` is started on a
free port with a temp storage dir and asked through ``/api/v1/targets``.
"""

from __future__ import annotations

import json
import urllib.request

import pytest
from real_prometheus import PROMETHEUS, running_prometheus
from zk_helpers import wait_for

from discovery.registry import Registry

pytestmark = pytest.mark.zookeeper


def _targets(port: int) -> dict[str, set[str]]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/targets?state=active", timeout=2) as r:
            doc = json.load(r)
    except OSError:
        return {}
    out: dict[str, set[str]] = {}
    for t in doc["data"]["activeTargets"]:
        out.setdefault(t["labels"]["job"], set()).add(t["discoveredLabels"]["__address__"])
    return out


@pytest.fixture
def prometheus(tmp_path, zookeeper, zk_root):
    if PROMETHEUS is None:
        pytest.fail("Debian's prometheus is not installed: run `make system-deps`")
    cfg = tmp_path / "prometheus.yml"
    jobs = []
    for pool in ("web", "db"):
        jobs.append(
            f"""  - job_name: {pool}
    scrape_interval: 30s
    serverset_sd_configs:
      - servers: ["{zookeeper.hosts}"]
        paths: ["{zk_root}/pools/{pool}/members"]
        timeout: 5s
"""
        )
    cfg.write_text("global:\n  scrape_interval: 30s\nscrape_configs:\n" + "".join(jobs))
    with running_prometheus(tmp_path, cfg, args=["--log.level=warn"], stop_timeout_s=15) as prom:
        yield prom.port


def test_prometheus_serverset_discovery_lists_exactly_our_hosts(zookeeper, zk_root, prometheus):
    reg = Registry(zookeeper.hosts, root=zk_root).start(watch=False)
    agent = Registry(zookeeper.hosts, root=zk_root).start(watch=False)
    try:
        reg.create_pool("web")
        reg.create_pool("db")
        for port in (9100, 9101, 9102):
            reg.register_host("web", f"127.0.0.1:{port}")
        reg.register_host("db", "127.0.0.2:9187")
        agent.register_ephemeral("web", "127.0.0.3:9100")
        expected = {"web": {"127.0.0.1:9100", "127.0.0.1:9101", "127.0.0.1:9102", "127.0.0.3:9100"},
                    "db": {"127.0.0.2:9187"}}
        wait_for(lambda: _targets(prometheus) == expected, timeout=60, what=f"prometheus targets == {expected}")

        # changes reach Prometheus too: a deregistered host and a dead agent disappear
        reg.deregister_host("web", "127.0.0.1:9101")
        agent.stop()
        expected = {"web": {"127.0.0.1:9100", "127.0.0.1:9102"}, "db": {"127.0.0.2:9187"}}
        wait_for(lambda: _targets(prometheus) == expected, timeout=60, what=f"prometheus targets == {expected}")
    finally:
        agent.stop()
        reg.stop()
