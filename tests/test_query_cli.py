"""``ringmon query instant|range`` against a real SQLite store written through the storage API."""

from __future__ import annotations

import asyncio
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
    t = str((now - 60_000) / 1000)
    assert main(["query", "instant", "--config", cfg, "--time", t, "sum by (job) (up)"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert sorted(out) == [f'{{job="api"}} => 1 @[{float(t):g}]', f'{{job="db"}} => 0 @[{float(t):g}]']
    assert main(["query", "range", "--config", cfg, "--start", "now-5m", "--end", "now-1m", "--step", "1m", "-o", "json", "up{job='api'}"]) == 0
    body = json.loads(capsys.readouterr().out)
    assert body["resultType"] == "matrix" and len(body["result"][0]["values"]) == 5


def test_errors_are_one_line(tmp_path, capsys) -> None:
    cfg, _ = _store(tmp_path)
    assert main(["query", "instant", "--config", cfg, "sum(up"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("ringmon query: query: 1:4: parse error") and err.count("\n") == 1
    assert main(["query", "range", "--config", cfg, "--step", "often", "up"]) == 2
    assert "--step" in capsys.readouterr().err
