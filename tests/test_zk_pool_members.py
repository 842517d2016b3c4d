"""ringmon_pool_members recording and the scraper command's operator errors."""

from __future__ import annotations

import asyncio
import math

import pytest
from zk_helpers import async_wait_for

from cli.main import main
from discovery.registry import STOPPING, Registry
from discovery.sharding import ShardCoordinator
from scraper.pool_members import POOL_MEMBERS_TARGET, PoolMembersRecorder
from services.zookeeper.zkserver import free_port
from storage.model import is_stale

pytestmark = pytest.mark.zookeeper


class ListWriter:
    def __init__(self) -> None:
        self.batches = []

    async def append(self, batch) -> None:
        self.batches.append(batch)


def values(batch) -> dict[tuple[str, str], float]:
    return {(s.get("pool"), s.get("status")): v for s, v in zip(batch.series, batch.values, strict=True)}


async def test_recorder_counts_alive_and_stopping_and_marks_vanished_pools_stale(zookeeper, zk_root):
    loop = asyncio.get_running_loop()
    admin = await loop.run_in_executor(None, lambda: Registry(zookeeper.hosts, root=zk_root).start(watch=False))
    coord = ShardCoordinator(Registry(zookeeper.hosts, root=zk_root), "solo", settle_s=0.05)
    try:
        await loop.run_in_executor(None, admin.create_pool, "web")
        await loop.run_in_executor(None, admin.create_pool, "db")
        for i in range(3):
            await loop.run_in_executor(None, admin.register_host, "web", f"10.0.0.{i}:80")
        reg = await loop.run_in_executor(None, admin.register_ephemeral, "web", "10.0.0.9:80")
        await loop.run_in_executor(None, reg.set_status, STOPPING)
        await coord.start()
        assert coord.is_recorder()  # the only scraper owns every key
        await async_wait_for(lambda: coord.registry.view.status_counts("web") == {"ALIVE": 3, "STOPPING": 1})
        recorder = PoolMembersRecorder(coord, ListWriter(), 1.0)
        first = recorder.batch(1_000)
        assert first.target == POOL_MEMBERS_TARGET
        assert values(first) == {("db", "ALIVE"): 0, ("db", "STOPPING"): 0, ("web", "ALIVE"): 3, ("web", "STOPPING"): 1}
        assert all(s.metric == "ringmon_pool_members" and set(dict(s.labels)) == {"__name__", "pool", "status"}
                   for s in first.series)
        assert set(first.timestamps) == {1_000}

        await loop.run_in_executor(None, admin.delete_pool, "db")
        await async_wait_for(lambda: "db" not in coord.registry.view.pools)
        second = values(recorder.batch(2_000))
        assert is_stale(second[("db", "ALIVE")]) and is_stale(second[("db", "STOPPING")])
        assert second[("web", "ALIVE")] == 3
        third = values(recorder.batch(3_000))
        assert ("db", "ALIVE") not in third  # stale marker written once
        assert not any(math.isnan(v) for v in third.values())
    finally:
        await coord.stop()
        await loop.run_in_executor(None, admin.stop)


def test_scraper_command_errors_are_one_line(tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"storage:\n  backend: sqlite\n  sqlite:\n    path: {tmp_path / 'x.db'}\n")
    code = main(["scraper", "--config", str(cfg), "--id", "bad id!", "--zookeeper", "127.0.0.1:1"])
    assert code == 2 and "--id: invalid scraper id 'bad id!'" in capsys.readouterr().err
    code = main(["scraper", "--config", str(cfg), "--id", "s1", "--listen", "127.0.0.1:0",
                 "--zookeeper", f"127.0.0.1:{free_port()}", "--connect-timeout", "1"])
    err = capsys.readouterr().err
    assert code == 2 and "ringmon scraper: cannot reach ZooKeeper at 127.0.0.1:" in err
    cfg.write_text("discovery:\n  zookeeper:\n    hosts: 5\n")
    code = main(["scraper", "--config", str(cfg)])
    assert code == 2 and "discovery.zookeeper.hosts: expected str" in capsys.readouterr().err
