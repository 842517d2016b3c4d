"""``ringmon query instant|range`` against a real SQLite store written through the storage API."""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import json
import time

from cli.main import main
from storage.model import SampleBatch, Series, make_labels


def _store(tmp_path) -> tuple[str, int]:
    from storage.sqlite_rollup import SQLiteRollupStorage

    db = tmp_path / "ringmon.db"
    now = int(time.time()) * 1000

    async def fill() -> None:
        st = await SQLiteRollupStorage.open(db)
        batch = SampleBatch("test/host:1")
        for k in range(40):
            for job, v in (("api", 1.0), ("db", 0.0)):
                batch.add(Series.of(make_labels("up", job=job, instance="host:1")), now - 600_000 + k * 15_000, v)
        await st.write(batch)
        await st.close()

    asyncio.run(fill())
    cfg = tmp_path / "ringmon.yaml"
    cfg.write_text(f"storage:\n  backend: sqlite\n  sqlite:\n    path: {db}\n")
    return str(cfg), now


def test_instant_and_range(tmp_path, capsys) -> None:
    cfg, now = _store(tmp_path)
    t_ms = now - 60_000
    t = str(t_ms / 1000)
    when = dt.datetime.fromtimestamp(t_ms / 1000, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert main(["query", "instant", "--config", cfg, "--time", t, "sum by (job) (up)"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert out[0].split() == ["SERIES", "TIME", "(UTC)", "VALUE"]
    assert sorted(row.split() for row in out[1:]) == [['{job="api"}', when, "1"], ['{job="db"}', when, "0"]]
    assert main(["query", "instant", "--config", cfg, "--time", t, "--unix", "sum by (job) (up)"]) == 0
    rows = capsys.readouterr().out.strip().splitlines()[1:]
    assert sorted(row.split() for row in rows) == [['{job="api"}', str(t_ms // 1000), "1"], ['{job="db"}', str(t_ms // 1000), "0"]]

    # A range: one row per point, each with its own time, a step apart.
    assert main(["query", "range", "--config", cfg, "--start", "now-5m", "--end", "now-1m", "--step", "1m", "up{job='api'}"]) == 0
    rows = [r.rsplit(maxsplit=2) for r in capsys.readouterr().out.strip().splitlines()[1:]]
    assert len(rows) == 5 and {r[0] for r in rows} == {'up{instance="host:1", job="api"}'}
    times = [dt.datetime.fromisoformat(r[1]) for r in rows]
    assert [(b - a).total_seconds() for a, b in itertools.pairwise(times)] == [60.0] * 4
    assert all(r[2] == "1" for r in rows)

    # -o json: the body the Prometheus HTTP API answers.
    assert main(["query", "range", "--config", cfg, "--start", "now-5m", "--end", "now-1m", "--step", "1m", "-o", "json", "up{job='api'}"]) == 0
    body = json.loads(capsys.readouterr().out)
    assert body["status"] == "success" and body["data"]["resultType"] == "matrix"
    assert len(body["data"]["result"][0]["values"]) == 5
    assert main(["query", "instant", "--config", cfg, "up{job='nosuch'}"]) == 0
    captured = capsys.readouterr()
    assert captured.out == "" and "matched no series" in captured.err


def test_errors_are_one_line(tmp_path, capsys) -> None:
    cfg, _ = _store(tmp_path)
    assert main(["query", "instant", "--config", cfg, "sum(up"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("ringmon query: query: 1:4: parse error") and err.count("\n") == 1
    assert main(["query", "range", "--config", cfg, "--step", "often", "up"]) == 2
    assert "--step" in capsys.readouterr().err


def test_json_output_is_the_api_body_byte_for_byte(tmp_path, capsys) -> None:
    from aiohttp.test_utils import TestClient, TestServer

    from query.api import make_app
    from query.engine import Engine
    from storage.sqlite_rollup import SQLiteRollupStorage

    cfg, now = _store(tmp_path)
    t = str((now - 60_000) / 1000)
    assert main(["query", "instant", "--config", cfg, "--time", t, "-o", "json", "sum by (job) (up)"]) == 0
    cli_body = capsys.readouterr().out.rstrip("\n")

    async def api_body() -> str:
        storage = await SQLiteRollupStorage.open(tmp_path / "ringmon.db")
        client = TestClient(TestServer(make_app(Engine(storage), storage)))
        await client.start_server()
        try:
            resp = await client.get("/api/v1/query", params={"query": "sum by (job) (up)", "time": t})
            return await resp.text()
        finally:
            await client.close()
            await storage.close()

    assert cli_body == asyncio.run(api_body())
