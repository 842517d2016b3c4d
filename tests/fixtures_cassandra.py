"""Cassandra session fixture: one real local Cassandra 5.0 node per test session.

``cassandra`` starts the node once (free non-default ports, data under a temp dir) and
returns the ``CassandraNode`` (``.host``, ``.port``, ``.stop()``, ``.start()`` - the same node
with the same data and ports, for outage tests). ``cassandra_storage`` gives each test
module a ``CassandraStorage`` on a fresh keyspace; ``keyspace_store`` makes one (of any
``CassandraStorage`` class) for a test. Tests using either fixture get the ``cassandra``
marker, so ``-m "not cassandra"`` skips them.

When the run holds a test marked ``cassandra``, the node's start (~10 s of a JVM booting, a
test's setup before) begins in a thread as soon as collection ends, so that it passes under
the tests before the first user; that test's setup only waits for what is left of it.

For a quick edit-test loop, ``RINGMON_TEST_CASSANDRA_DIR=<dir>`` reuses a node started with
``python services/cassandra/cassandra_node.py start --dir <dir> ...`` instead of starting one.
"""

from __future__ import annotations

import contextlib
import os
import re
import uuid
from concurrent.futures import Future, ThreadPoolExecutor

import pytest

from services.cassandra.cassandra_node import CassandraNode, free_port


def pytest_collection_modifyitems(config, items) -> None:
    """Tests that use the node (directly or through another fixture) get the ``cassandra`` marker;
    a parameter that asks for it by ``request.getfixturevalue`` is marked where it is declared."""
    for item in items:
        if {"cassandra", "cassandra_storage"} & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.cassandra)


def _new_node(tmp_path_factory: pytest.TempPathFactory) -> CassandraNode:
    return CassandraNode(
        tmp_path_factory.mktemp("cassandra"),
        native_port=free_port(),
        heap="1g",
        fast_unsafe=True,
        # Cassandra runs on machines of its own in production; here it shares 2 cores with the
        # processes whose /-/healthy latency the hostile tests measure (test_hostile_regex's web
        # waited for a CPU for 85% of its stalls while the node served the hostile reads).
        nice=10,
    )


_early: list[tuple[CassandraNode, Future[None]]] = []  # the node whose start began at collection's end


def pytest_collection_finish(session: pytest.Session) -> None:
    """Begin the node's start in a thread now when a test of this run will use it."""
    if (session.config.option.collectonly or os.environ.get("RINGMON_TEST_CASSANDRA_DIR")
            or not any(item.get_closest_marker("cassandra") for item in session.items)):
        return
    node = _new_node(session.config._tmp_path_factory)  # noqa: SLF001 - the tmp_path_factory fixture's object
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="cassandra-start")
    _early.append((node, pool.submit(node.start, timeout_s=240)))
    pool.shutdown(wait=False)  # (the thread ends with the start)


def pytest_sessionfinish(session: pytest.Session) -> None:
    """A node started early that no test took (a run stopped by ``-x``) is stopped here."""
    while _early:
        node, future = _early.pop()
        with contextlib.suppress(Exception):  # its own start failed: stopped below all the same
            future.result(timeout=300)
        node.stop(kill=True)


@pytest.fixture(scope="session")
def cassandra(tmp_path_factory):
    reuse = os.environ.get("RINGMON_TEST_CASSANDRA_DIR")
    if reuse:
        node = CassandraNode.load(reuse)
        node.start(timeout_s=240)
        yield node
        return
    if _early:
        node, future = _early.pop()
        try:
            future.result(timeout=300)  # (its start failure is raised here)
        except BaseException:
            node.stop(kill=True)
            raise
    else:
        node = _new_node(tmp_path_factory)
        node.start(timeout_s=240)
    try:
        yield node
    finally:
        node.stop(kill=True)  # (its data goes with the session's temp dir: nothing to drain)


def fresh_keyspace(prefix: str) -> str:
    """A keyspace name that is unique per call (Cassandra names: letters, digits, _ ; <= 48)."""
    base = re.sub(r"[^a-z0-9_]", "_", prefix.lower())[:30]
    return f"t_{base}_{uuid.uuid4().hex[:8]}"


@contextlib.contextmanager
def keyspace_store(cassandra, prefix: str, cls: type | None = None):
    """A store of ``cls`` (default ``CassandraStorage``) on a fresh keyspace with its schema;
    the keyspace is dropped and the store shut down afterwards."""
    from storage.cassandra import CassandraStorage

    store = (cls or CassandraStorage).connect_sync(
        [cassandra.host], cassandra.port, fresh_keyspace(prefix), create_schema=True
    )
    try:
        yield store
    finally:
        store.drop_keyspace_sync()
        store.shutdown()


@pytest.fixture(scope="module")
def cassandra_storage(cassandra, request):
    """A ``CassandraStorage`` on a fresh keyspace (schema created) for the test module."""
    with keyspace_store(cassandra, request.module.__name__.rsplit(".", 1)[-1]) as store:
        yield store
