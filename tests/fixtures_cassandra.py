"""Cassandra session fixture: one real local Cassandra 5.0 node per test session.

``cassandra`` starts the node once (free non-default ports, data under a temp dir) and
returns the ``CassandraNode`` (``.host``, ``.port``, ``.stop()``, ``.start()`` - the same node
with the same data and ports, for outage tests). ``cassandra_storage`` gives each test
module a ``CassandraStorage`` on a fresh keyspace; ``keyspace_store`` makes one (of any
``CassandraStorage`` class) for a test. Tests using either fixture get the ``cassandra``
marker, so ``-m "not cassandra"`` skips them.

The schema changes behind those fresh keyspaces are the node's, not the test's: when a test
hands its keyspace back, one thread of the session (``KeyspacePool``) drops it and makes the
next one, under the tests that follow, so that a test's setup and teardown do not wait for
them (about 0.5 s of the node's CPU to create a keyspace's tables and 0.7 s to drop them, on
an idle machine; 2-4 s at load 5). A test that takes a keyspace waits until none of them is
under way (none runs beside it); a test that stops the node calls ``settle_keyspaces`` first.

When the run holds a test marked ``cassandra``, the node's start (~10 s of a JVM booting, a
test's setup before) begins in a thread as soon as collection ends, so that it passes under
the tests before the first user; that test's setup only waits for what is left of it.

For a quick edit-test loop, ``RINGMON_TEST_CASSANDRA_DIR=<dir>`` reuses a node started with
``python services/cassandra/cassandra_node.py start --dir <dir> ...`` instead of starting one.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import uuid
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import pytest

from services.cassandra.cassandra_node import CassandraNode, free_port

log = logging.getLogger(__name__)


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
        pool = _pools.pop(id(node), None)
        if pool is not None:
            pool.close()
        node.stop(kill=True)  # (its data goes with the session's temp dir: nothing to drain)


def fresh_keyspace(prefix: str) -> str:
    """A keyspace name that is unique per call (Cassandra names: letters, digits, _ ; <= 48)."""
    base = re.sub(r"[^a-z0-9_]", "_", prefix.lower())[:30]
    return f"t_{base}_{uuid.uuid4().hex[:8]}"


class KeyspacePool:
    """Fresh keyspaces with the current schema, made one ahead and dropped after use by one
    thread of their own (its own driver session), so that the tests do not wait for the
    node's schema changes. Every keyspace is used by one test only, as before."""

    def __init__(self, node: CassandraNode) -> None:
        self.node = node
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="keyspaces")
        self._cluster: Any = None
        self._session: Any = None
        self._next: Future[str] | None = None
        self._closed = False

    def _session_(self) -> Any:
        if self._session is None:
            from cassandra.cluster import EXEC_PROFILE_DEFAULT, Cluster, ExecutionProfile
            from cassandra.policies import ConstantReconnectionPolicy, RoundRobinPolicy

            # (back within a second of a node restarted by an outage test, as the stores are;
            # no metadata refresh on the node's events: the driver schedules those with the global
            # ``random``, and a Hypothesis test running meanwhile warns when that state moves)
            self._cluster = Cluster([self.node.host], port=self.node.port, protocol_version=4,
                                    execution_profiles={EXEC_PROFILE_DEFAULT: ExecutionProfile(
                                        load_balancing_policy=RoundRobinPolicy())},
                                    reconnection_policy=ConstantReconnectionPolicy(1.0, max_attempts=None),
                                    schema_event_refresh_window=-1, topology_event_refresh_window=-1,
                                    status_event_refresh_window=-1)
            self._session = self._cluster.connect()
        return self._session

    def _reconnect(self) -> None:
        if self._cluster is not None:
            self._cluster.shutdown()
        self._cluster = self._session = None

    def _create(self) -> str:
        from storage import schema as sch

        name = fresh_keyspace("pool")
        sch.create_schema(self._session_(), sch.SchemaSpec(keyspace=name))
        return name

    def _drop(self, name: str) -> None:
        try:
            self._session_().execute(f"DROP KEYSPACE IF EXISTS {name}", timeout=60)
        except Exception as exc:  # noqa: BLE001 - only tidiness: the node's data goes at the session's end
            if not self._closed:
                log.warning("keyspace %s not dropped: %s", name, exc)

    def take(self) -> str:
        """A keyspace of its own for the caller: the one made after the last was handed back
        (else one made now). Returns once nothing of the pool's is under way, so that no
        schema change of its own runs beside the caller's test (its stores' CREATE TABLEs
        wait behind the node's other schema changes, within their 10 s request timeout)."""
        ahead, self._next = self._next, None
        name = None
        if ahead is not None:
            try:
                name = ahead.result(timeout=300)
            except Exception as exc:  # noqa: BLE001 - e.g. the node was stopped meanwhile: made again
                log.warning("keyspace made ahead failed (%s); making another", exc)
        self.settle()
        if name is None:
            self._thread.submit(self._reconnect).result(timeout=60)
            name = self._thread.submit(self._create).result(timeout=300)
        return name

    def give_back(self, name: str) -> None:
        """Drop ``name`` and make the next keyspace, in the pool's thread (the caller has shut
        its store down): they run under the tests that follow, until the next ``take``."""
        self._thread.submit(self._drop, name)
        if self._next is None:
            self._next = self._thread.submit(self._create)

    def settle(self) -> None:
        """Until nothing the pool began is under way (the keyspace made ahead is kept)."""
        self._thread.submit(lambda: None).result(timeout=300)

    def close(self) -> None:
        """Stop (the node is stopped next: a drop under way fails quietly)."""
        self._closed = True
        self._thread.shutdown(wait=False, cancel_futures=True)
        if self._cluster is not None:
            self._cluster.shutdown()


_pools: dict[int, KeyspacePool] = {}  # per node (id of the CassandraNode): one a session


def _pool(cassandra: CassandraNode) -> KeyspacePool:
    pool = _pools.get(id(cassandra))
    if pool is None:
        pool = _pools[id(cassandra)] = KeyspacePool(cassandra)
    return pool


def settle_keyspaces(cassandra: CassandraNode) -> None:
    """Wait for the schema changes the keyspace pool has under way (before stopping the node)."""
    pool = _pools.get(id(cassandra))
    if pool is not None:
        pool.settle()


@contextlib.contextmanager
def keyspace_store(cassandra, prefix: str, cls: type | None = None):
    """A store of ``cls`` (default ``CassandraStorage``) on a fresh keyspace with its schema
    (``KeyspacePool``; ``prefix``, which named it, is logged); the store is shut down and the
    keyspace dropped afterwards."""
    from storage.cassandra import CassandraStorage

    pool = _pool(cassandra)
    name = pool.take()
    log.info("keyspace %s for %s", name, prefix)
    try:
        store = (cls or CassandraStorage).connect_sync([cassandra.host], cassandra.port, name)
        try:
            yield store
        finally:
            store.shutdown()
    finally:
        pool.give_back(name)


@pytest.fixture(scope="module")
def cassandra_storage(cassandra, request):
    """A ``CassandraStorage`` on a fresh keyspace (schema created) for the test module."""
    with keyspace_store(cassandra, request.module.__name__.rsplit(".", 1)[-1]) as store:
        yield store
