"""ShardCoordinator with real ZooKeeper sessions: one owner per target, minimal moves."""

from __future__ import annotations

import asyncio

import pytest
from zk_helpers import async_wait_for, expire_session

from discovery.registry import Registry
from discovery.sharding import ShardCoordinator

pytestmark = pytest.mark.zookeeper


def shares(coords: list[ShardCoordinator]) -> dict[str, frozenset[str]]:
    return {c.me: c.assignment.owned_keys for c in coords}


def partition_ok(coords: list[ShardCoordinator], all_keys: set[str]) -> bool:
    owned = [c.assignment.owned_keys for c in coords]
    union = frozenset().union(*owned)
    return union == all_keys and sum(len(o) for o in owned) == len(all_keys)


async def test_coordinators_split_targets_and_rebalance_minimally(zookeeper, zk_root):
    loop = asyncio.get_running_loop()
    admin = await loop.run_in_executor(None, lambda: Registry(zookeeper.hosts, root=zk_root).start(watch=False))
    await loop.run_in_executor(None, admin.create_pool, "web")
    for i in range(60):
        await loop.run_in_executor(None, admin.register_host, "web", f"127.0.0.1:{20000 + i}")
    all_keys = {f"web/127.0.0.1:{20000 + i}" for i in range(60)}

    def coordinator(sid: str) -> ShardCoordinator:
        return ShardCoordinator(Registry(zookeeper.hosts, root=zk_root, session_timeout=4.0), sid, settle_s=0.05)

    coords = [coordinator(f"s{i}") for i in range(3)]
    try:
        for c in coords:
            await c.start()
        await async_wait_for(lambda: all(len(c.assignment.ring) == 3 for c in coords) and partition_ok(coords, all_keys),
                             what="steady state with 3 scrapers")
        before = shares(coords)
        assert all(before.values()), before  # everyone has work
        assert sum(c.is_recorder() for c in coords) == 1

        # a scraper's session ends abruptly (no leave): the others take exactly its targets
        dead = coords.pop(1)
        dead._joined = False
        await loop.run_in_executor(None, dead.registry.stop_session_abruptly)
        await dead.stop(close_registry=False)
        await async_wait_for(lambda: all(len(c.assignment.ring) == 2 for c in coords) and partition_ok(coords, all_keys),
                             what="survivors own everything")
        after = shares(coords)
        for c in coords:
            assert before[c.me] <= after[c.me], "a survivor's target moved"
        assert set().union(*(after[c.me] - before[c.me] for c in coords)) == before["s1"]
        assert sum(c.is_recorder() for c in coords) == 1

        # a scraper joins: only targets that go to it move
        coords.append(coordinator("s3"))
        await coords[-1].start()
        await async_wait_for(lambda: all(len(c.assignment.ring) == 3 for c in coords) and partition_ok(coords, all_keys),
                             what="steady state after the join")
        joined = shares(coords)
        moved = {k for c in coords[:2] for k in after[c.me] - joined[c.me]}
        assert moved == joined["s3"]
        print(f"join moved {len(moved)}/{len(all_keys)} targets = {len(moved) / len(all_keys):.3f} (1/N = {1 / 3:.3f})")
        assert len(moved) / len(all_keys) <= 0.5
    finally:
        for c in coords:
            await c.stop()
        await loop.run_in_executor(None, admin.stop)


async def test_assignment_is_kept_while_zookeeper_is_down(zookeeper, zk_root):
    loop = asyncio.get_running_loop()
    admin = await loop.run_in_executor(None, lambda: Registry(zookeeper.hosts, root=zk_root).start(watch=False))
    await loop.run_in_executor(None, admin.create_pool, "db")
    for i in range(10):
        await loop.run_in_executor(None, admin.register_host, "db", f"127.0.0.1:{21000 + i}")
    coords = [ShardCoordinator(Registry(zookeeper.hosts, root=zk_root, session_timeout=4.0), f"z{i}", settle_s=0.05)
              for i in range(2)]
    try:
        for c in coords:
            await c.start()
        all_keys = {f"db/127.0.0.1:{21000 + i}" for i in range(10)}
        await async_wait_for(lambda: partition_ok(coords, all_keys) and all(len(c.assignment.ring) == 2 for c in coords))
        before = shares(coords)
        await loop.run_in_executor(None, zookeeper.stop)
        try:
            await async_wait_for(lambda: not any(c.registry.view.connected for c in coords), what="outage noticed")
            await asyncio.sleep(1.0)
            assert shares(coords) == before
        finally:
            await loop.run_in_executor(None, zookeeper.start)
        await async_wait_for(lambda: all(c.registry.view.connected for c in coords), timeout=30)
        await async_wait_for(lambda: shares(coords) == before and all(len(c.assignment.ring) == 2 for c in coords),
                             timeout=30, what="same shares after the outage")
    finally:
        for c in coords:
            await c.stop()
        await loop.run_in_executor(None, admin.stop)


async def test_a_scraper_whose_session_expires_keeps_scraping_and_rejoins(zookeeper, zk_root):
    loop = asyncio.get_running_loop()
    admin = await loop.run_in_executor(None, lambda: Registry(zookeeper.hosts, root=zk_root).start(watch=False))
    await loop.run_in_executor(None, admin.create_pool, "api")
    for i in range(20):
        await loop.run_in_executor(None, admin.register_host, "api", f"127.0.0.1:{22000 + i}")
    all_keys = {f"api/127.0.0.1:{22000 + i}" for i in range(20)}
    coords = [ShardCoordinator(Registry(zookeeper.hosts, root=zk_root, session_timeout=4.0), f"e{i}", settle_s=0.05)
              for i in range(2)]
    try:
        for c in coords:
            await c.start()
        await async_wait_for(lambda: partition_ok(coords, all_keys) and all(len(c.assignment.ring) == 2 for c in coords))
        before = shares(coords)
        history: list[int] = []
        coords[0].add_listener(lambda a: history.append(len(a.owned)))
        old_session = coords[0].registry.session_id
        await loop.run_in_executor(None, expire_session, zookeeper.hosts, coords[0].registry.zk)
        await async_wait_for(lambda: coords[0].registry.session_id not in (None, old_session), what="new session")
        await async_wait_for(lambda: shares(coords) == before and all(len(c.assignment.ring) == 2 for c in coords),
                             timeout=30, what="back to the same shares")
        assert 0 not in history, f"the expired scraper dropped its targets meanwhile: {history}"
    finally:
        for c in coords:
            await c.stop()
        await loop.run_in_executor(None, admin.stop)
