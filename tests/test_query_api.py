"""The Prometheus HTTP API over real HTTP on 127.0.0.1, with Debian's promtool as the client."""

from __future__ import annotations

import asyncio
import json
import shutil
import time

import aiohttp
import numpy as np
import pytest
from aiohttp import web

from query.api import add_api_routes
from query.engine import Engine
from query.memory import MemoryStorage
from storage.model import Series, make_labels

T0 = (int(time.time()) // 60 - 120) * 60_000  # ms: two hours ago (promtool defaults to ranges around now)
PROMTOOL = shutil.which("promtool")


def _storage() -> MemoryStorage:
    st = MemoryStorage()
    ts = T0 + np.arange(0, 3_600_000, 15_000)
    for h in range(2):
        for mode in ("idle", "user"):
            s = Series.of(make_labels("node_cpu_seconds_total", instance=f"host{h}:9100", mode=mode, job="node"))
            st.add_series(s, ts, np.arange(len(ts)) * (1.0 + h + (mode == "user")))
    st.add_series(Series.of(make_labels("up", instance="host0:9100", job="node")), ts, np.ones(len(ts)))
    return st


@pytest.fixture
async def server():
    storage = _storage()
    engine = Engine(storage, max_samples=600)
    app = web.Application()
    add_api_routes(app, engine, storage)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


async def _get(url: str, **params: str) -> tuple[int, dict]:
    async with aiohttp.ClientSession() as s, s.get(url, params=params) as r:
        return r.status, await r.json()


async def _post(url: str, data: dict) -> tuple[int, dict]:
    async with aiohttp.ClientSession() as s, s.post(url, data=data) as r:
        return r.status, await r.json()


async def _promtool(*args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        PROMTOOL, *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE  # type: ignore[arg-type]
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
    return proc.returncode or 0, out.decode(), err.decode()


async def test_query_json_shapes(server: str) -> None:
    t = str((T0 + 1_800_000) / 1000)
    status, body = await _get(server + "/api/v1/query", query="sum by (mode) (rate(node_cpu_seconds_total[5m]))", time=t)
    assert status == 200 and body["status"] == "success"
    assert body["data"]["resultType"] == "vector"
    got = {r["metric"]["mode"]: float(r["value"][1]) for r in body["data"]["result"]}
    assert got == pytest.approx({"idle": 3 / 15, "user": 5 / 15})
    assert body["data"]["result"][0]["value"][0] == (T0 + 1_800_000) / 1000
    status, body = await _post(server + "/api/v1/query", {"query": "1 + 1", "time": t})
    assert body["data"] == {"resultType": "scalar", "result": [(T0 + 1_800_000) / 1000, "2"]}
    status, body = await _get(
        server + "/api/v1/query_range", query="up", start=str(T0 / 1000), end=str(T0 / 1000 + 60), step="30s"
    )
    assert body["data"]["resultType"] == "matrix"
    assert body["data"]["result"][0]["values"] == [[T0 / 1000, "1"], [T0 / 1000 + 30, "1"], [T0 / 1000 + 60, "1"]]


async def test_errors(server: str) -> None:
    status, body = await _get(server + "/api/v1/query", query="sum(rate(foo[5m])")
    assert status == 400
    assert body["status"] == "error" and body["errorType"] == "bad_data"
    assert "1:4: parse error" in body["error"]
    status, body = await _get(server + "/api/v1/query", query="up", time="yesterday")
    assert status == 400 and "time" in body["error"]
    # Over the sample limit (600): an execution error, not an out-of-memory.
    status, body = await _get(
        server + "/api/v1/query", query="count_over_time(node_cpu_seconds_total[1h])", time=str(T0 / 1000 + 3600)
    )
    assert status == 422 and body["errorType"] == "execution" and "too many samples" in body["error"]
    status, body = await _get(server + "/api/v1/query_range", query="up", start="10", end="0", step="1")
    assert status == 400
    status, body = await _get(server + "/api/v1/series")
    assert status == 400 and body["error"] == "no match[] parameter provided"
    # The time limit (here cut to zero by the request): 503, errorType timeout.
    status, body = await _get(server + "/api/v1/query", query="sum(rate(node_cpu_seconds_total[1h]))", timeout="0s")
    assert status == 503 and body["errorType"] == "timeout" and "timed out" in body["error"]


async def test_series_labels_values(server: str) -> None:
    status, body = await _get(server + "/api/v1/labels")
    assert body["data"] == ["__name__", "instance", "job", "mode"]
    status, body = await _get(server + "/api/v1/label/mode/values")
    assert body["data"] == ["idle", "user"]
    status, body = await _post(server + "/api/v1/series", {"match[]": 'up{job="node"}'})
    assert body["data"] == [{"__name__": "up", "instance": "host0:9100", "job": "node"}]
    status, body = await _get(server + "/api/v1/status/buildinfo")
    assert body["status"] == "success" and "version" in body["data"]


@pytest.mark.skipif(PROMTOOL is None, reason="promtool not installed")
async def test_promtool_client(server: str) -> None:
    t = str((T0 + 1_800_000) / 1000)
    rc, out, err = await _promtool("query", "instant", "--time", t, server, 'rate(node_cpu_seconds_total{instance="host1:9100"}[5m])')
    assert rc == 0, err
    lines = sorted(out.strip().splitlines())
    assert len(lines) == 2
    got = {line.split(" => ")[0]: float(line.split(" => ")[1].split(" @[")[0]) for line in lines}
    assert got == pytest.approx(
        {
            '{instance="host1:9100", job="node", mode="idle"}': 2 / 15,
            '{instance="host1:9100", job="node", mode="user"}': 3 / 15,
        }
    )
    assert lines[0].endswith(f"@[{int(float(t))}]")

    rc, out, err = await _promtool(
        "query", "range", "--start", str(T0 / 1000), "--end", str(T0 / 1000 + 60), "--step", "30s", server, "up"
    )
    assert rc == 0, err
    assert 'up{instance="host0:9100", job="node"} =>' in out
    assert out.count("1 @[") == 3

    rc, out, err = await _promtool("query", "series", "--match", "node_cpu_seconds_total", "-o", "json", server)
    assert rc == 0, err
    series = json.loads(out)
    assert len(series) == 4 and {s["mode"] for s in series} == {"idle", "user"}

    rc, out, err = await _promtool("query", "labels", server, "instance")
    assert rc == 0, err
    assert out.split() == ["host0:9100", "host1:9100"]

    rc, out, err = await _promtool("query", "instant", server, "sum(")
    assert rc != 0 and "parse error" in (out + err)
