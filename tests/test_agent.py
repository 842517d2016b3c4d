"""The host agent: every host family on /metrics with sane values, instrumentation, isolation."""

from __future__ import annotations

import asyncio
import socket

import aiohttp
import psutil
import pytest
from local_http import serve
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from agent.host_collector import HostCollector
from agent.instrumentation import instrument_middleware
from agent.server import AgentServer, AgentStartError

HOST_FAMILIES = {
    "node_cpu_seconds": "counter",
    "node_load1": "gauge",
    "node_load5": "gauge",
    "node_load15": "gauge",
    "node_memory_MemTotal_bytes": "gauge",
    "node_memory_MemAvailable_bytes": "gauge",
    "node_memory_MemUsed_bytes": "gauge",
    "node_memory_SwapTotal_bytes": "gauge",
    "node_memory_SwapUsed_bytes": "gauge",
    "node_memory_SwapFree_bytes": "gauge",
    "node_filesystem_size_bytes": "gauge",
    "node_filesystem_free_bytes": "gauge",
    "node_filesystem_avail_bytes": "gauge",
    "node_filesystem_used_bytes": "gauge",
    "node_disk_read_bytes": "counter",
    "node_disk_written_bytes": "counter",
    "node_disk_reads_completed": "counter",
    "node_disk_writes_completed": "counter",
    "node_network_receive_bytes": "counter",
    "node_network_transmit_bytes": "counter",
    "node_network_receive_packets": "counter",
    "node_network_transmit_packets": "counter",
    "node_network_receive_errs": "counter",
    "node_network_transmit_errs": "counter",
    "node_procs_total": "gauge",
    "node_boot_time_seconds": "gauge",
}


def parse(text: str) -> dict[str, list]:
    """family name -> samples, via prometheus-client's own parser."""
    return {f.name: (f.type, f.samples) for f in text_string_to_metric_families(text)}


async def fetch(url: str, **kw) -> tuple[int, dict, str]:
    async with aiohttp.ClientSession() as s, s.get(url, **kw) as r:
        return r.status, dict(r.headers), await r.text()


async def test_metrics_serves_every_host_family_with_sane_values():
    async with AgentServer(pool="web") as agent:
        status, headers, body = await fetch(f"http://{agent.address}/metrics")
    assert status == 200
    assert headers["Content-Type"] == CONTENT_TYPE_LATEST
    fams = parse(body)
    for name, kind in HOST_FAMILIES.items():
        assert name in fams, f"missing family {name}"
        assert fams[name][0] == kind, f"{name} is {fams[name][0]}, expected {kind}"
        assert fams[name][1], f"{name} has no samples"

    def one(name):
        (sample,) = fams[name][1]
        return sample.value

    assert one("node_memory_MemTotal_bytes") == psutil.virtual_memory().total
    assert 0 < one("node_memory_MemAvailable_bytes") <= one("node_memory_MemTotal_bytes")
    assert one("node_memory_MemUsed_bytes") + one("node_memory_MemAvailable_bytes") == one(
        "node_memory_MemTotal_bytes"
    )
    assert one("node_boot_time_seconds") == pytest.approx(psutil.boot_time(), abs=2)
    assert one("node_procs_total") > 1

    cpu = [s for s in fams["node_cpu_seconds"][1] if s.name == "node_cpu_seconds_total"]
    modes = {s.labels["mode"] for s in cpu}
    assert {"user", "system", "idle"} <= modes
    assert {s.labels["cpu"] for s in cpu} == {str(i) for i in range(psutil.cpu_count())}
    assert all(s.value >= 0 for s in cpu)

    root = [s for s in fams["node_filesystem_size_bytes"][1] if s.labels["mountpoint"] == "/"]
    assert root and root[0].value > 0 and root[0].labels["fstype"] and root[0].labels["device"]
    sizes = {s.labels["mountpoint"]: s.value for s in fams["node_filesystem_size_bytes"][1]}
    for s in fams["node_filesystem_avail_bytes"][1]:
        assert 0 <= s.value <= sizes[s.labels["mountpoint"]]

    nics = {s.labels["device"] for s in fams["node_network_receive_bytes"][1]}
    assert set(psutil.net_io_counters(pernic=True)) == nics
    success = {s.labels["collector"]: s.value for s in fams["node_scrape_collector_success"][1]}
    assert success and all(v == 1.0 for v in success.values())
    assert fams["ringmon_agent_info"][1][0].labels == {"pool": "web", "version": "0.1.0"}


async def test_counters_grow_between_scrapes():
    reg = CollectorRegistry()
    reg.register(HostCollector())
    first = parse(generate_latest(reg).decode())
    sum(i * i for i in range(300_000))  # burn a little CPU
    await asyncio.sleep(0.05)
    second = parse(generate_latest(reg).decode())

    def total(fams):
        return sum(s.value for s in fams["node_cpu_seconds"][1] if s.name.endswith("_total"))

    assert total(second) >= total(first)


def test_a_failing_group_does_not_break_the_others(monkeypatch):
    def denied(*a, **k):
        raise PermissionError("no access to /proc/diskstats")

    monkeypatch.setattr("agent.host_collector.psutil.disk_io_counters", denied)
    reg = CollectorRegistry()
    reg.register(HostCollector())
    fams = parse(generate_latest(reg).decode())
    assert "node_disk_read_bytes" not in fams
    assert "node_memory_MemTotal_bytes" in fams and "node_cpu_seconds" in fams
    success = {s.labels["collector"]: s.value for s in fams["node_scrape_collector_success"][1]}
    assert success["diskstats"] == 0.0 and success["meminfo"] == 1.0


async def test_instrumentation_counts_by_method_and_code_and_observes_latency():
    from aiohttp import web

    reg = CollectorRegistry()
    mw = instrument_middleware(reg)

    async def ok(request):
        return web.Response(text="ok")

    async def boom(request):
        raise RuntimeError("handler bug")

    app = web.Application(middlewares=[mw])
    app.router.add_route("*", "/ok", ok)
    app.router.add_get("/boom", boom)
    runner, url = await serve(app)
    try:
        async with aiohttp.ClientSession() as s:
            for _ in range(3):
                async with s.get(f"{url}/ok") as r:
                    assert r.status == 200
            async with s.post(f"{url}/ok") as r:
                assert r.status == 200
            async with s.get(f"{url}/nope") as r:
                assert r.status == 404
            async with s.get(f"{url}/boom") as r:
                assert r.status == 500
    finally:
        await runner.cleanup()

    def val(name, **labels):
        return reg.get_sample_value(name, labels)

    assert val("http_requests_total", method="GET", code="200") == 3
    assert val("http_requests_total", method="POST", code="200") == 1
    assert val("http_requests_total", method="GET", code="404") == 1
    assert val("http_requests_total", method="GET", code="500") == 1
    mw.metrics.observe("BREW", 418, 0.001)  # unknown methods are bucketed, not new label values
    assert val("http_requests_total", method="other", code="418") == 1
    assert val("http_request_duration_seconds_count", method="GET") == 5
    assert val("http_request_duration_seconds_sum", method="GET") > 0
    assert val("http_request_duration_seconds_bucket", method="GET", le="+Inf") == 5
    assert val("http_request_duration_seconds_bucket", method="GET", le="10.0") == 5


async def test_app_handler_is_instrumented_and_metrics_is_not():
    async with AgentServer() as agent:
        base = f"http://{agent.address}"
        assert (await fetch(base + "/app/items"))[0] == 200
        assert (await fetch(base + "/app/missing"))[0] == 404
        assert (await fetch(base + "/app/error"))[0] == 500
        assert (await fetch(base + "/metrics"))[0] == 200
        status, headers, body = await fetch(base + "/")
        assert status == 200 and "/metrics" in body
    reg = agent.registry
    assert reg.get_sample_value("http_requests_total", {"method": "GET", "code": "200"}) == 1
    assert reg.get_sample_value("http_requests_total", {"method": "GET", "code": "404"}) == 1
    assert reg.get_sample_value("http_requests_total", {"method": "GET", "code": "500"}) == 1
    assert reg.get_sample_value("http_request_duration_seconds_count", {"method": "GET"}) == 3


async def test_synthetic_load_produces_a_mix_of_codes():
    async with AgentServer(synthetic_load_rps=200) as agent:
        for _ in range(200):  # bounded: at most ~10 s
            await asyncio.sleep(0.05)
            got = (
                agent.registry.get_sample_value("http_request_duration_seconds_count", {"method": "GET"}) or 0
            )
            if got >= 150:
                break
        reg = agent.registry
    ok = reg.get_sample_value("http_requests_total", {"method": "GET", "code": "200"}) or 0
    errors = sum(
        reg.get_sample_value("http_requests_total", {"method": "GET", "code": c}) or 0 for c in ("404", "500")
    )
    assert ok >= 100
    assert errors > 0  # 10% of >=150 requests: missing them all has probability ~1e-7
    assert agent._load_task is None


async def test_two_agents_in_one_process_do_not_collide():
    a = AgentServer(pool="a")
    b = AgentServer(pool="b")
    ca = Counter("e2e_test_counter", "set by a test", registry=a.registry)
    cb = Counter("e2e_test_counter", "set by a test", registry=b.registry)
    ca.inc(7)
    cb.inc(42)
    async with a, b:
        assert a.port != b.port
        _, _, ta = await fetch(f"http://{a.address}/metrics")
        _, _, tb = await fetch(f"http://{b.address}/metrics")
    fa, fb = parse(ta), parse(tb)
    assert [s.value for s in fa["e2e_test_counter"][1] if s.name == "e2e_test_counter_total"] == [7.0]
    assert [s.value for s in fb["e2e_test_counter"][1] if s.name == "e2e_test_counter_total"] == [42.0]
    assert fa["ringmon_agent_info"][1][0].labels["pool"] == "a"
    assert fb["ringmon_agent_info"][1][0].labels["pool"] == "b"


async def test_extra_collectors_and_gzip():
    reg = CollectorRegistry()
    c = Counter("extra_total", "extra", registry=reg)
    c.inc(3)
    async with AgentServer(extra_collectors=[reg], host_metrics=False) as agent:
        status, headers, body = await fetch(
            f"http://{agent.address}/metrics", headers={"Accept-Encoding": "gzip"}
        )
    assert status == 200 and headers.get("Content-Encoding") == "gzip"
    assert parse(body)["extra"][1][0].value == 3.0


async def test_port_in_use_is_one_clear_error():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        agent = AgentServer(port=port)
        with pytest.raises(AgentStartError, match=f"127.0.0.1:{port}: address already in use"):
            await agent.start()
    assert not agent.running


def test_bad_rate_is_refused():
    with pytest.raises(ValueError, match="synthetic_load_rps"):
        AgentServer(synthetic_load_rps=-1)
