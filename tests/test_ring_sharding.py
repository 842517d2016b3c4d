"""ShardCoordinator with real ZooKeeper sessions: one owner per target, loads under cap
through the shared overrides, minimal moves (a leave never moves a survivor's target)."""

from __future__ import annotations

import asyncio

import pytest
from zk_helpers import async_wait_for, expire_session

from discovery.balance import OverridesDoc, capacity, plan_overrides
from discovery.registry import Registry, StaleOverridesError
from discovery.ring import ScraperRing
from discovery.sharding import Assignment, ShardCoordinator

pytestmark = pytest.mark.zookeeper


def shares(coords: list[ShardCoordinator]) -> dict[str, frozenset[str]]:
    return {c.me: c.assignment.owned_keys for c in coords}


def partition_ok(coords: list[ShardCoordinator], all_keys: set[str]) -> bool:
    owned = [c.assignment.owned_keys for c in coords]
    union = frozenset().union(*owned)
    return union == all_keys and sum(len(o) for o in owned) == len(all_keys)


def settled(coords: list[ShardCoordinator], all_keys: set[str]) -> bool:
    """Everyone sees all of them, the stored plan was made for them, everyone applies it,
    and the shares partition the targets."""
    ids = tuple(sorted(c.me for c in coords))
    a = [c.assignment for c in coords]
    return (all(x.ring.members == ids and x.plan_current for x in a)
            and len({x.overrides_version for x in a}) == 1 and partition_ok(coords, all_keys))


def watch_shares(coords: list[ShardCoordinator]) -> dict[str, list[frozenset[str]]]:
    """Every share each coordinator applies from now on (interim ones included)."""
    seen: dict[str, list[frozenset[str]]] = {c.me: [] for c in coords}
    for c in coords:
        c.add_listener(lambda a, me=c.me: seen[me].append(a.owned_keys))
    return seen


async def test_coordinators_split_targets_and_rebalance_minimally(zookeeper, zk_root):
    loop = asyncio.get_running_loop()
    admin = await loop.run_in_executor(None, lambda: Registry(zookeeper.hosts, root=zk_root).start(watch=False))
    await loop.run_in_executor(None, admin.create_pool, "web")
    await loop.run_in_executor(None, admin.register_hosts, "web", [f"127.0.0.1:{20000 + i}" for i in range(60)])
    all_keys = {f"web/127.0.0.1:{20000 + i}" for i in range(60)}

    def coordinator(sid: str) -> ShardCoordinator:
        return ShardCoordinator(Registry(zookeeper.hosts, root=zk_root, session_timeout=4.0), sid, settle_s=0.05)

    coords = [coordinator(f"s{i}") for i in range(3)]
    try:
        for c in coords:
            await c.start()
        await async_wait_for(lambda: settled(coords, all_keys), what="steady state with 3 scrapers")
        before = shares(coords)
        assert all(before.values()), before  # everyone has work
        assert sum(c.is_recorder() for c in coords) == 1
        assert max(len(v) for v in before.values()) <= capacity(len(all_keys), 3)

        # a scraper's session ends abruptly (no leave): the others take exactly its targets,
        # and no survivor drops one of its own at any moment (interim shares included)
        seen = watch_shares(coords)
        dead = coords.pop(1)
        dead._joined = False
        await loop.run_in_executor(None, dead.registry.stop_session_abruptly)
        await dead.stop(close_registry=False)
        await async_wait_for(lambda: settled(coords, all_keys), what="survivors own everything")
        after = shares(coords)
        for c in coords:
            assert before[c.me] <= after[c.me], "a survivor's target moved"
            assert all(before[c.me] <= share for share in seen[c.me]), "a survivor dropped a target meanwhile"
        assert set().union(*(after[c.me] - before[c.me] for c in coords)) == before["s1"]
        assert sum(c.is_recorder() for c in coords) == 1
        assert max(len(v) for v in after.values()) <= capacity(len(all_keys), 2)

        # a scraper joins: targets go to it, plus the few shed by scrapers above the lower cap
        coords.append(coordinator("s3"))
        await coords[-1].start()
        await async_wait_for(lambda: settled(coords, all_keys), what="steady state after the join")
        joined = shares(coords)
        moved = {k for c in coords[:2] for k in after[c.me] - joined[c.me]}
        spills = moved - joined["s3"]
        print(f"join moved {len(moved)}/{len(all_keys)} targets = {len(moved) / len(all_keys):.3f} "
              f"(1/N = {1 / 3:.3f}; {len(spills)} of them not to the joiner)")
        assert joined["s3"] <= moved and len(moved) / len(all_keys) <= 0.5
        assert max(len(v) for v in joined.values()) <= capacity(len(all_keys), 3)
    finally:
        for c in coords:
            await c.stop()
        await loop.run_in_executor(None, admin.stop)


async def test_assignment_is_kept_while_zookeeper_is_down(zookeeper, zk_root):
    loop = asyncio.get_running_loop()
    admin = await loop.run_in_executor(None, lambda: Registry(zookeeper.hosts, root=zk_root).start(watch=False))
    await loop.run_in_executor(None, admin.create_pool, "db")
    await loop.run_in_executor(None, admin.register_hosts, "db", [f"127.0.0.1:{21000 + i}" for i in range(10)])
    coords = [ShardCoordinator(Registry(zookeeper.hosts, root=zk_root, session_timeout=4.0), f"z{i}", settle_s=0.05)
              for i in range(2)]
    try:
        for c in coords:
            await c.start()
        all_keys = {f"db/127.0.0.1:{21000 + i}" for i in range(10)}
        await async_wait_for(lambda: settled(coords, all_keys))
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
    await loop.run_in_executor(None, admin.register_hosts, "api", [f"127.0.0.1:{22000 + i}" for i in range(20)])
    all_keys = {f"api/127.0.0.1:{22000 + i}" for i in range(20)}
    coords = [ShardCoordinator(Registry(zookeeper.hosts, root=zk_root, session_timeout=4.0), f"e{i}", settle_s=0.05)
              for i in range(2)]
    try:
        for c in coords:
            await c.start()
        await async_wait_for(lambda: settled(coords, all_keys))
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


async def test_bounded_loads_through_zookeeper_and_leader_handover(zookeeper, zk_root):
    """A lumpy ring (4 vnodes): the leader's overrides keep every scraper under cap; when
    the leader dies, the next lowest id takes over from the stored plan and survivors keep
    every target; a stale leader's write is refused."""
    loop = asyncio.get_running_loop()
    admin = await loop.run_in_executor(None, lambda: Registry(zookeeper.hosts, root=zk_root).start(watch=False))
    await loop.run_in_executor(None, admin.create_pool, "lumpy")
    await loop.run_in_executor(None, admin.register_hosts, "lumpy", [f"127.0.0.1:{23000 + i}" for i in range(240)])
    all_keys = {f"lumpy/127.0.0.1:{23000 + i}" for i in range(240)}
    ids = ["b0", "b1", "b2", "b3", "b4"]
    pure = ScraperRing(ids, vnodes=4).counts(all_keys)
    assert max(pure.values()) > capacity(len(all_keys), 5), pure  # the ring alone is over cap
    coords = [ShardCoordinator(Registry(zookeeper.hosts, root=zk_root, session_timeout=4.0), sid, vnodes=4,
                               settle_s=0.05) for sid in ids]
    try:
        for c in coords:
            await c.start()
        await async_wait_for(lambda: settled(coords, all_keys), what="a plan for 5 scrapers")
        before = shares(coords)
        a: Assignment = coords[0].assignment
        assert a.overrides and max(len(v) for v in before.values()) <= capacity(len(all_keys), 5), (
            {k: len(v) for k, v in before.items()})
        data, version = await loop.run_in_executor(None, admin.read_overrides)
        doc = OverridesDoc.decode(data, version)
        assert doc.members == tuple(ids) and dict(doc.overrides) == dict(a.overrides)
        assert doc.overrides == plan_overrides(ScraperRing(ids, vnodes=4), all_keys, doc.overrides)
        print(f"5 scrapers, 240 targets, vnodes 4: ring shares {sorted(pure.values())}, with "
              f"{len(doc)} overrides {sorted(len(v) for v in before.values())} ({len(data)} bytes)")
        # a stale writer (read at an older version) cannot clobber the plan
        with pytest.raises(StaleOverridesError):
            await loop.run_in_executor(None, admin.write_overrides, b"{}", version - 1 if version else 99)

        # the leader dies abruptly: b1 leads from the stored plan, no survivor target moves
        survivors = coords[1:]
        seen = watch_shares(survivors)
        leader = coords[0]
        leader._joined = False
        await loop.run_in_executor(None, leader.registry.stop_session_abruptly)
        await leader.stop(close_registry=False)
        coords = survivors
        await async_wait_for(lambda: settled(coords, all_keys), what="b1 planned for the 4 survivors")
        after = shares(coords)
        for c in coords:
            assert before[c.me] <= after[c.me], f"a target of survivor {c.me} moved"
            assert all(before[c.me] <= share for share in seen[c.me]), f"{c.me} dropped a target meanwhile"
        assert max(len(v) for v in after.values()) <= capacity(len(all_keys), 4)
        _, version_after = await loop.run_in_executor(None, admin.read_overrides)
        assert version_after > version and coords[0].assignment.planned_for == ("b1", "b2", "b3", "b4")
    finally:
        for c in coords:
            await c.stop()
        await loop.run_in_executor(None, admin.stop)


async def test_garbage_in_the_overrides_znode_is_survived_and_replaced(zookeeper, zk_root):
    loop = asyncio.get_running_loop()
    admin = await loop.run_in_executor(None, lambda: Registry(zookeeper.hosts, root=zk_root).start(watch=False))
    await loop.run_in_executor(None, admin.create_pool, "junk")
    await loop.run_in_executor(None, admin.register_hosts, "junk", [f"127.0.0.1:{24000 + i}" for i in range(90)])
    all_keys = {f"junk/127.0.0.1:{24000 + i}" for i in range(90)}
    coords = [ShardCoordinator(Registry(zookeeper.hosts, root=zk_root, session_timeout=4.0), sid, vnodes=4,
                               settle_s=0.05) for sid in ("g0", "g1", "g2")]
    try:
        for c in coords:
            await c.start()
        await async_wait_for(lambda: settled(coords, all_keys), what="a plan for 3 scrapers")
        before = shares(coords)
        assert coords[0].assignment.overrides, "vnodes 4 should need overrides"
        _, version = await loop.run_in_executor(None, admin.read_overrides)
        await loop.run_in_executor(None, admin.write_overrides, b"\x00 not a plan", version)

        async def valid_again() -> bool:
            data, v = await loop.run_in_executor(None, admin.read_overrides)
            try:
                return v > version + 1 and OverridesDoc.decode(data, v).members == ("g0", "g1", "g2")
            except ValueError:
                return False

        deadline = loop.time() + 60
        while not await valid_again():
            assert loop.time() < deadline, "the leader did not replace the invalid overrides"
            assert shares(coords) == before, "an invalid plan changed the shares"
            await asyncio.sleep(0.05)
        await async_wait_for(lambda: settled(coords, all_keys), what="settled on the rewritten plan")
        assert shares(coords) == before
    finally:
        for c in coords:
            await c.stop()
        await loop.run_in_executor(None, admin.stop)


async def test_a_target_flap_leaves_the_plan_alone_and_a_removal_is_planned_after_the_grace(zookeeper, zk_root):
    # The flap (40 deregistrations, then 40 registrations) must fit in the grace: a few seconds
    # on a loaded machine, so the grace is generous. The lasting removal waits a grace out: on
    # scrapers started again with a short one (nothing there has to fit in it).
    grace_s, lasting_grace_s = 20.0, 3.0
    loop = asyncio.get_running_loop()
    admin = await loop.run_in_executor(None, lambda: Registry(zookeeper.hosts, root=zk_root).start(watch=False))
    await loop.run_in_executor(None, admin.create_pool, "flap")
    addresses = [f"127.0.0.1:{25000 + i}" for i in range(90)]
    await loop.run_in_executor(None, admin.register_hosts, "flap", addresses)
    all_keys = {f"flap/{a}" for a in addresses}
    def coordinators(grace: float) -> list[ShardCoordinator]:
        return [ShardCoordinator(Registry(zookeeper.hosts, root=zk_root, session_timeout=4.0), sid, vnodes=4,
                                 settle_s=0.05, target_grace_s=grace) for sid in ("f0", "f1", "f2")]

    coords = coordinators(grace_s)
    try:
        for c in coords:
            await c.start()
        await async_wait_for(lambda: settled(coords, all_keys), what="a plan for 3 scrapers")
        before, version = shares(coords), coords[0].assignment.overrides_version
        assert coords[0].assignment.overrides, "vnodes 4 should need overrides"

        # 40 hosts vanish and come back (new member nodes, same addresses) within the grace
        for a in addresses[:40]:
            await loop.run_in_executor(None, admin.deregister_host, "flap", a)
        remaining = all_keys - {f"flap/{a}" for a in addresses[:40]}
        await async_wait_for(lambda: partition_ok(coords, remaining), what="the 40 hosts gone")
        await loop.run_in_executor(None, admin.register_hosts, "flap", addresses[:40])
        await async_wait_for(lambda: settled(coords, all_keys), what="the 40 hosts back")
        assert shares(coords) == before and all(c.assignment.overrides_version == version for c in coords)

        # a removal that lasts: planned once the grace is over (the plan counts 60 targets)
        for c in coords:
            await c.stop()
        coords = coordinators(lasting_grace_s)
        for c in coords:
            await c.start()
        await async_wait_for(lambda: settled(coords, all_keys), what="a plan for the 3 scrapers started again")
        for a in addresses[:30]:
            await loop.run_in_executor(None, admin.deregister_host, "flap", a)
        remaining = all_keys - {f"flap/{a}" for a in addresses[:30]}

        def replanned() -> bool:
            data, v = admin.read_overrides()
            return OverridesDoc.decode(data, v).targets == 60

        await async_wait_for(lambda: settled(coords, remaining), what="the 30 hosts gone")
        await async_wait_for(replanned, timeout=lasting_grace_s + 60, what="a plan for the 60 remaining targets")

        def on_new_plan() -> bool:  # everyone on the stored plan (all on the old one is "settled" too)
            versions = {c.assignment.overrides_version for c in coords}
            return versions == {admin.read_overrides()[1]} and settled(coords, remaining)

        await async_wait_for(on_new_plan, what="settled on the new plan")
        assert max(len(v) for v in shares(coords).values()) <= capacity(60, 3)
    finally:
        for c in coords:
            await c.stop()
        await loop.run_in_executor(None, admin.stop)
