"""ZooKeeper session fixture: one real standalone server per test session.

``zookeeper`` starts Debian's ZooKeeper once, on a free port with its data under the
session's temp dir, and kills it at session end. It yields the ``ZooKeeperServer``:
``.hosts`` ("127.0.0.1:port") for clients, ``.stop()`` / ``.start()`` for outage tests
(same port, same data; a test that stops it must start it again, e.g. in ``finally``).
``zk_root`` gives each test its own fresh znode root so tests never see each other's data.
Tests using either fixture get the ``zookeeper`` marker, so ``-m "not zookeeper"`` skips them.
"""

from __future__ import annotations

import os
import uuid
import weakref

import pytest
from kazoo.client import KazooClient

from services.zookeeper.zkserver import ZooKeeperError, ZooKeeperServer

ZOOKEEPER_JAR = "/usr/share/java/zookeeper.jar"

# Every KazooClient started in this process, with the test that started it, so clients a test
# forgot to close are closed before the server goes away (their reconnect loop would otherwise
# log into streams pytest has already closed) and the leaking tests are named.
_started_clients: weakref.WeakKeyDictionary[KazooClient, str] = weakref.WeakKeyDictionary()
_current_test = "<session>"
_original_start = KazooClient.start


def _tracking_start(self: KazooClient, *args, **kwargs):
    _started_clients[self] = _current_test
    return _original_start(self, *args, **kwargs)


KazooClient.start = _tracking_start  # type: ignore[method-assign]


def pytest_collection_modifyitems(config, items) -> None:
    """Tests that use the server (directly or through another fixture) get the ``zookeeper`` marker."""
    for item in items:
        if {"zookeeper", "zk_root"} & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.zookeeper)


def pytest_runtest_setup(item):
    global _current_test
    _current_test = item.nodeid


def _close_leftover_clients() -> list[str]:
    """Stop and close clients still connecting; return the tests that started them."""
    leaked = []
    for client, nodeid in list(_started_clients.items()):
        if client._stopped.is_set():
            continue
        leaked.append(nodeid)
        try:
            client.stop()
            client.close()
        except Exception:  # noqa: BLE001 - best effort at session end
            pass
    return leaked


@pytest.fixture(scope="session")
def zookeeper(tmp_path_factory):
    if not os.path.exists(ZOOKEEPER_JAR):
        pytest.fail(f"ZooKeeper is not installed ({ZOOKEEPER_JAR} missing): run `make system-deps`")
    server = ZooKeeperServer(tmp_path_factory.mktemp("zookeeper"))
    try:
        server.start(wait=True, timeout=90.0)
    except ZooKeeperError as exc:
        server.stop(kill=True)
        pytest.fail(f"could not start the test ZooKeeper: {exc}")
    try:
        yield server
    finally:
        leaked = _close_leftover_clients()
        if leaked:
            print(f"\nkazoo clients left open (closed at session end) by: {sorted(set(leaked))}")
        server.stop(kill=True)


@pytest.fixture
def zk_root(zookeeper) -> str:
    """A znode root unique to the test (e.g. ``/t-3f2a...``), under which it puts its tree."""
    zookeeper.start()  # a no-op when it runs; brings it back if an earlier test left it stopped
    return f"/t-{uuid.uuid4().hex[:12]}"
