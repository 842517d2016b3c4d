"""``ringmon rollup`` end to end on SQLite: backfill with progress, one pass, /metrics, bad input."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import time
import urllib.request
from datetime import UTC, datetime

import pytest
from test_rollup_job import T0, T_END, dump, generate, load

from cli.main import main
from storage.sqlite_rollup import SQLiteRollupStorage


def iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat().replace("+00:00", "Z")


@pytest.fixture
def config(tmp_path):
    db = tmp_path / "ringmon.db"

    async def fill() -> None:
        s = await SQLiteRollupStorage.open(db)
        await load(s, generate())
        await s.close()

    asyncio.run(fill())
    cfg = tmp_path / "ringmon.yaml"
    cfg.write_text(f"data_dir: {tmp_path}\nstorage:\n  backend: sqlite\n  sqlite:\n    path: {db}\n")
    return cfg, db


def test_backfill_prints_progress_and_is_idempotent(config, capsys):
    cfg, db = config
    argv = [
        "rollup",
        "--config",
        str(cfg),
        "--shards",
        "4",
        "--metrics-listen",
        "",
        "--backfill",
        iso(T0),
        iso(T_END),
    ]
    assert main(argv) == 0
    out, err = capsys.readouterr()
    assert "backfilled 12 shard windows" in out
    assert "backfill [" in err and "12/12" in err
    first = dump(db)
    assert len(first["rollup_1h"]) == 24 * 6
    assert main(argv) == 0
    assert dump(db) == first


def test_once_pass_runs(config, capsys):
    cfg, _ = config
    assert main(["rollup", "--config", str(cfg), "--shards", "2", "--metrics-listen", "", "--once"]) == 0
    assert "shard windows done" in capsys.readouterr().out


def test_shards_at_once_seals_the_same(config, tmp_path):
    """``--shards-at-once 1`` (a copy's memory bounded to one shard's window) writes what a copy
    working every shard together writes."""
    cfg, db = config
    other = tmp_path / "copy.db"
    other.write_bytes(db.read_bytes())
    other_cfg = tmp_path / "copy.yaml"
    other_cfg.write_text(cfg.read_text().replace(str(db), str(other)))
    base = ["rollup", "--shards", "4", "--metrics-listen", "", "--backfill", iso(T0), iso(T_END)]
    assert main([*base, "--config", str(cfg)]) == 0
    assert main([*base, "--config", str(other_cfg), "--shards-at-once", "1"]) == 0
    together, one_by_one = dump(db), dump(other)
    assert together["rollup_1h"] and together == one_by_one


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--backfill", "yesterday", "2026-01-01"], "is not a time"),
        (["--backfill", "2026-01-02", "2026-01-01"], "FROM must be before TO"),
        (["--window", "5h", "--once"], "whole number of hours dividing a day"),
        (["--grace", "soon", "--once"], "--grace: not a duration"),
        (["--shards-at-once", "-1", "--once"], "shards at once must not be negative"),
    ],
)
def test_bad_input_is_one_line(config, capsys, extra, message):
    cfg, _ = config
    assert main(["rollup", "--config", str(cfg), "--metrics-listen", "", *extra]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_serves_metrics_and_stops_on_sigterm(config, tmp_path):
    cfg, _ = config
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "cli.main",
            "rollup",
            "--config",
            str(cfg),
            "--shards",
            "2",
            "--interval",
            "1s",
            "--metrics-listen",
            f"127.0.0.1:{port}",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        body = ""
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
                    body = r.read().decode()
                if 'ringmon_rollup_windows_total{mode="live"} 2.0' in body:
                    break
            except OSError:
                pass
            time.sleep(0.2)
        assert 'ringmon_rollup_windows_total{mode="live"} 2.0' in body
        assert "ringmon_rollup_lag_seconds" in body
    finally:
        proc.terminate()
        try:
            rc = proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            rc = proc.wait(timeout=10)
    assert rc == 0, proc.stderr.read().decode()
