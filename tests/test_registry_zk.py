"""The ZooKeeper registry against a real ZooKeeper: CRUD, watches, session loss, outage."""

from __future__ import annotations

import asyncio
import json
import logging
import time

import pytest
from zk_helpers import async_wait_for, expire_session, wait_for

from discovery.registry import (
    ALIVE,
    STOPPING,
    PoolExistsError,
    PoolNotEmptyError,
    Registry,
    RegistryError,
    UnknownPoolError,
    ZooKeeperDiscovery,
    ZooKeeperUnavailableError,
    serverset_json,
)
from discovery.target import ScrapeSettings
from services.zookeeper.zkserver import free_port

pytestmark = pytest.mark.zookeeper


@pytest.fixture
def registries(zookeeper, zk_root):
    made: list[Registry] = []

    def make(watch: bool = True, session_timeout: float = 4.0) -> Registry:
        reg = Registry(zookeeper.hosts, root=zk_root, session_timeout=session_timeout)
        reg.start(watch=watch)
        made.append(reg)
        return reg

    yield make
    for reg in made:
        reg.stop()


def test_pool_and_host_crud(registries):
    reg = registries(watch=False)
    settings = ScrapeSettings(interval_s=5.0, timeout_s=2.0, path="/m", scheme="http", labels=(("team", "a"),))
    assert reg.create_pool("web", settings) is True
    assert reg.get_pool("web") == settings
    with pytest.raises(PoolExistsError, match="already exists"):
        reg.create_pool("web")
    assert reg.create_pool("web", ScrapeSettings(interval_s=7.0), update=True) is False
    assert reg.get_pool("web").interval_s == 7.0
    # pool data is the JSON settings document
    data, _ = reg.zk.get(reg.pool_path("web"))
    assert json.loads(data)["interval"] == 7.0

    path, created = reg.register_host("web", "10.0.0.1:9100")
    assert created and path.startswith(reg.members_path("web") + "/member_")
    assert reg.register_host("web", "10.0.0.1:9100") == (path, False)  # idempotent
    reg.register_host("web", "10.0.0.2:9100")
    data, stat = reg.zk.get(path)
    assert json.loads(data) == {
        "serviceEndpoint": {"host": "10.0.0.1", "port": 9100},
        "additionalEndpoints": {},
        "status": "ALIVE",
    }
    assert stat.ephemeralOwner == 0  # `register host` is persistent
    members = reg.members("web")
    assert [m.address for m in members] == ["10.0.0.1:9100", "10.0.0.2:9100"]
    assert reg.list_pools() == {"web": reg.get_pool("web")}

    with pytest.raises(PoolNotEmptyError, match="2 member"):
        reg.delete_pool("web")
    assert reg.deregister_host("web", "10.0.0.1:9100") == 1
    assert reg.deregister_host("web", "10.0.0.1:9100") == 0
    # many at once: a registered address kept, a new one named twice registered once
    got = reg.register_hosts("web", ["10.0.0.2:9100", "10.0.0.3:9100", "10.0.0.3:9100"])
    two = f"{reg.members_path('web')}/{members[1].node}"
    assert got == [(two, False), (got[1][0], True), (got[1][0], False)] and got[1][0] != two
    assert [m.address for m in reg.members("web")] == ["10.0.0.2:9100", "10.0.0.3:9100"]
    assert reg.deregister_host("web", "10.0.0.3:9100") == 1
    assert reg.delete_pool("web", force=True) == 1
    assert reg.list_pools() == {}


def test_unknown_pools_and_bad_names_get_clear_errors(registries):
    reg = registries(watch=False)
    reg.create_pool("db")
    with pytest.raises(UnknownPoolError, match=r"unknown pool 'web' \(known pools: db\)"):
        reg.register_host("web", "h:1")
    with pytest.raises(UnknownPoolError):
        reg.register_ephemeral("web", "h:1")
    with pytest.raises(UnknownPoolError):
        reg.delete_pool("web")
    with pytest.raises(ValueError, match="invalid pool name 'a/b'"):
        reg.create_pool("a/b")
    with pytest.raises(ValueError, match="invalid address 'nope'"):
        reg.register_host("db", "nope")
    with pytest.raises(ValueError, match="invalid scraper id"):
        reg.join_scrapers("../x")


def test_unreachable_zookeeper_is_one_clear_error():
    reg = Registry(f"127.0.0.1:{free_port()}", connect_timeout=1.0)
    with pytest.raises(ZooKeeperUnavailableError, match="cannot reach ZooKeeper at 127.0.0.1:"):
        reg.start()


def test_watches_keep_the_view_current(registries):
    watcher = registries()
    writer = registries(watch=False)
    changes = []
    watcher.add_listener(lambda view: changes.append(view.version))
    writer.create_pool("web", ScrapeSettings(interval_s=3.0, timeout_s=1.0))
    writer.register_host("web", "10.0.0.1:9100")
    wait_for(lambda: [t.key for t in watcher.view.targets()] == ["web/10.0.0.1:9100"], what="first target")
    assert watcher.view.targets()[0].settings.interval_s == 3.0

    agent = registries(watch=False)
    reg = agent.register_ephemeral("web", "10.0.0.9:9100")
    wait_for(lambda: watcher.view.alive_count("web") == 2, what="agent seen")
    m = next(m for m in watcher.view.members["web"] if m.address == "10.0.0.9:9100")
    assert m.ephemeral and m.status == ALIVE

    reg.set_status(STOPPING)
    wait_for(lambda: watcher.view.status_counts("web") == {ALIVE: 1, STOPPING: 1}, what="STOPPING seen")
    assert [t.address for t in watcher.view.targets()] == ["10.0.0.1:9100"]  # stopping hosts not scraped
    assert len(watcher.view.targets(include_stopping=True)) == 2
    reg.remove()
    wait_for(lambda: watcher.view.status_counts("web") == {ALIVE: 1, STOPPING: 0}, what="agent gone")

    writer.create_pool("web", ScrapeSettings(interval_s=9.0, timeout_s=1.0), update=True)
    wait_for(lambda: watcher.view.pools["web"].interval_s == 9.0, what="settings change seen")

    writer.join_scrapers("s1", {"listen": "127.0.0.1:1"})
    wait_for(lambda: watcher.view.scrapers == ("s1",), what="scraper seen")
    assert ZooKeeperDiscovery(watcher).scrapers() == ("s1",)
    writer.leave_scrapers("s1")
    wait_for(lambda: watcher.view.scrapers == (), what="scraper gone")

    writer.delete_pool("web", force=True)
    wait_for(lambda: "web" not in watcher.view.pools and watcher.view.targets() == [], what="pool gone")
    assert len(changes) >= 6


async def test_listeners_run_in_the_event_loop(registries):
    loop = asyncio.get_running_loop()
    watcher = await loop.run_in_executor(None, registries)
    writer = await loop.run_in_executor(None, lambda: registries(watch=False))
    seen: list[int] = []
    in_loop: list[bool] = []

    def on_change(view):
        in_loop.append(asyncio.get_running_loop() is loop)
        seen.append(len(view.targets()))

    watcher.add_listener(on_change, loop)
    await loop.run_in_executor(None, writer.create_pool, "api")
    for i in range(5):
        await loop.run_in_executor(None, writer.register_host, "api", f"10.1.0.{i}:80")
    await async_wait_for(lambda: seen and seen[-1] == 5, what="five targets via listener")
    assert all(in_loop)


def test_ephemeral_nodes_come_back_after_session_expiry(registries, zookeeper, caplog):
    caplog.set_level(logging.INFO, logger="ringmon.discovery.registry")
    watcher = registries()
    agent = registries(watch=False)
    agent.create_pool("web")
    reg = agent.register_ephemeral("web", "10.0.0.5:9100")
    agent.join_scrapers("scraper-a")
    wait_for(lambda: watcher.view.alive_count("web") == 1 and watcher.view.scrapers == ("scraper-a",))
    old_path, old_session = reg.path, agent.session_id

    expire_session(zookeeper.hosts, agent.zk)

    wait_for(lambda: agent.session_id not in (None, old_session), what="a new session")
    wait_for(lambda: reg.path != old_path and agent.zk.exists(reg.path), what="member re-created")
    wait_for(lambda: watcher.view.alive_count("web") == 1 and watcher.view.scrapers == ("scraper-a",),
             what="watcher sees the re-created nodes")
    assert [m.node for m in watcher.view.members["web"]] == [reg.path.rsplit("/", 1)[1]]
    messages = [r.getMessage() for r in caplog.records]
    assert "zookeeper session lost, keeping last known view" in messages
    assert "zookeeper session re-established (new session)" in messages
    assert any(m == "ephemeral node re-created" for m in messages)

    # A status written as the session goes (the agent's STOPPING on SIGTERM, just after a
    # ZooKeeper restart expired its session) is not lost with the old session's node: the
    # node is made again in the new session with that status, once.
    old_path = reg.path
    expire_session(zookeeper.hosts, agent.zk)
    reg.set_status(STOPPING)
    wait_for(lambda: [(m.status, m.ephemeral) for m in watcher.view.members.get("web", ())] == [(STOPPING, True)],
             what="the STOPPING status written across the session loss")
    assert reg.path != old_path and [m.node for m in watcher.members("web")] == [reg.path.rsplit("/", 1)[1]]


def test_view_is_kept_while_zookeeper_is_down(registries, zookeeper, caplog):
    caplog.set_level(logging.INFO, logger="ringmon.discovery.registry")
    watcher = registries()
    agent = registries(watch=False)
    agent.create_pool("web")
    agent.register_host("web", "10.0.0.1:9100")
    reg = agent.register_ephemeral("web", "10.0.0.2:9100")
    agent.join_scrapers("scraper-b")
    wait_for(lambda: watcher.view.alive_count("web") == 2 and watcher.view.scrapers == ("scraper-b",))
    before = watcher.view.targets()

    zookeeper.stop()
    try:
        wait_for(lambda: not watcher.view.connected, what="watcher notices the outage")
        assert watcher.view.targets() == before
        assert watcher.view.scrapers == ("scraper-b",)
    finally:
        zookeeper.start()
    wait_for(lambda: watcher.view.connected, timeout=30, what="watcher reconnected")
    wait_for(lambda: agent.zk.connected and agent.zk.exists(reg.path) and agent.zk.exists(agent.scrapers_path + "/scraper-b"),
             timeout=30, what="ephemeral nodes back")
    wait_for(lambda: watcher.view.alive_count("web") == 2 and watcher.view.scrapers == ("scraper-b",),
             timeout=30, what="view complete after the outage")
    assert "zookeeper session suspended, keeping last known view" in [r.getMessage() for r in caplog.records]


def test_invalid_member_data_is_skipped_not_fatal(registries):
    watcher = registries()
    writer = registries(watch=False)
    writer.create_pool("odd")
    writer.zk.create(writer.members_path("odd") + "/member_", b"not json", sequence=True)
    writer.register_host("odd", "10.0.0.3:80")
    wait_for(lambda: [t.address for t in watcher.view.targets()] == ["10.0.0.3:80"])
    assert [m.address for m in writer.members("odd")] == ["10.0.0.3:80"]


def test_registry_error_is_the_base_of_operator_errors():
    assert issubclass(UnknownPoolError, RegistryError) and issubclass(PoolExistsError, RegistryError)


def test_a_pool_deleted_and_created_again_is_watched_again(registries):
    watcher = registries()
    writer = registries(watch=False)
    for round_ in range(3):
        writer.create_pool("again", ScrapeSettings(interval_s=float(round_ + 1), timeout_s=1.0))
        for i in range(3):  # sequence numbers restart at member_0000000000 in a new pool znode
            writer.register_host("again", f"10.9.{round_}.{i}:80")
        expected = [f"again/10.9.{round_}.{i}:80" for i in range(3)]
        wait_for(lambda: [t.key for t in watcher.view.targets()] == expected  # noqa: B023
                 and watcher.view.pools["again"].interval_s == round_ + 1, what=f"round {round_}")  # noqa: B023
        writer.delete_pool("again", force=True)
        wait_for(lambda: "again" not in watcher.view.pools and not watcher.view.targets(), what="pool gone")


def test_a_pool_recreated_between_two_reads_of_its_watch_is_watched_again(registries):
    """One transaction deletes a pool with its members and creates the pool again without its
    members node: the pool's data watch reads the new incarnation at once, while the members
    watch found its node gone and stopped. The new incarnation's members must still be seen,
    and the old ones must not stay in the view."""
    watcher = registries()
    writer = registries(watch=False)
    writer.create_pool("twice", ScrapeSettings(interval_s=1.0, timeout_s=1.0))
    writer.register_hosts("twice", ["10.8.0.1:80", "10.8.0.2:80"])
    wait_for(lambda: len(watcher.view.targets()) == 2, what="first incarnation's members")

    members = writer.zk.get_children(writer.members_path("twice"))
    tx = writer.zk.transaction()
    for node in members:
        tx.delete(f"{writer.members_path('twice')}/{node}")
    tx.delete(writer.members_path("twice"))
    tx.delete(writer.pool_path("twice"))
    tx.create(writer.pool_path("twice"), json.dumps(ScrapeSettings(interval_s=2.0, timeout_s=1.0).to_dict()).encode())
    assert not any(isinstance(r, Exception) for r in tx.commit())
    wait_for(lambda: "twice" in watcher.view.pools and watcher.view.pools["twice"].interval_s == 2.0,
             what="the new incarnation's settings")

    writer.register_host("twice", "10.8.1.1:80")
    wait_for(lambda: [t.key for t in watcher.view.targets()] == ["twice/10.8.1.1:80"], timeout=30.0,
             what="only the new incarnation's member")


def test_a_burst_of_registrations_coalesces_into_few_complete_rebuilds(registries):
    """The map's promise: a burst of watch events coalesces into few view rebuilds. After a
    rebuild the next one waits ``publish_delay_s`` for more events, so while a burst lasts there
    is at most one rebuild per delay: the count is bounded by the burst's duration over the delay,
    whatever the machine's load, and with the delay raised here it is far below one per event."""
    watcher = registries()
    writer = registries(watch=False)
    watcher.publish_delay_s = 0.2
    rebuilt_at = []
    watcher.add_listener(lambda view: rebuilt_at.append((time.monotonic(), view)))
    writer.create_pool("burst")
    wait_for(lambda: "burst" in watcher.view.pools, what="the pool")
    start = time.monotonic()
    for i in range(200):  # straight creates: register_host's duplicate check would dominate the time
        writer.zk.create(writer.members_path("burst") + "/member_", serverset_json(f"10.8.{i // 100}.{i % 100}", 80),
                         sequence=True)
    wait_for(lambda: rebuilt_at and rebuilt_at[-1][1].alive_count("burst") == 200, timeout=60,
             what="a view with the 200 members")
    elapsed = time.monotonic() - start
    during = [t - start for t, _ in rebuilt_at if t >= start]
    print(f"200 registrations in {elapsed:.2f}s -> {len(during)} view rebuilds (delay {watcher.publish_delay_s:g}s)")
    assert len(during) <= elapsed / watcher.publish_delay_s + 2, [round(t, 3) for t in during]
    assert len(during) < 200 // 2, "registrations were not coalesced"
