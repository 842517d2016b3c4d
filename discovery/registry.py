"""The ZooKeeper registry of pools, their hosts and the live scrapers (on kazoo).

Layout under the root (``/ringmon`` by default)::

    <root>/pools/<pool>                     data: JSON scrape settings (ScrapeSettings.to_dict)
    <root>/pools/<pool>/members/member_<n>  data: Finagle serverset JSON, status ALIVE/STOPPING
    <root>/scrapers/<id>                    ephemeral, data: JSON {"id", "listen", "started"}
    <root>/ring/overrides                   data: the ring's bounded-load overrides, written by
                                            the lowest live scraper id with a version check
                                            (discovery.balance.OverridesDoc; JSON, zlib if large)

Agents register ephemerally (their node vanishes with their session); ``ringmon register
host`` registers persistently. A stock Prometheus with ``serverset_sd_configs`` on
``<root>/pools/<pool>/members`` discovers the same hosts.

``Registry.start(watch=True)`` keeps an in-memory ``RegistryView`` current with watches and
calls listeners on every change (plain callables in kazoo's thread, or coroutine-friendly
callables scheduled into an asyncio loop with ``call_soon_threadsafe``). On a SUSPENDED or
LOST session the last known view is kept; after a new session the ephemeral nodes this
process owns are created again. Every session transition is logged.

Blocking calls (every CRUD method) belong in an executor when called from asyncio code.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

from kazoo.client import KazooClient, KazooState
from kazoo.exceptions import (
    BadVersionError,
    KazooException,
    NodeExistsError,
    NoNodeError,
    NotEmptyError,
)
from kazoo.handlers.threading import KazooTimeoutError
from kazoo.recipe.watchers import ChildrenWatch, DataWatch

from discovery.membership import EphemeralNode, NodeHeldError, read_members
from discovery.target import ScrapeSettings, Target
from discovery.validation import (
    check_address,
    check_pool_name,
    check_scraper_id,
    settings_from_json,
    split_host_port,
)

log = logging.getLogger("ringmon.discovery.registry")

DEFAULT_ROOT = "/ringmon"
MEMBER_PREFIX = "member_"
ALIVE = "ALIVE"
STOPPING = "STOPPING"
# Finagle's serverset statuses; we write ALIVE and STOPPING and read any of them.
STATUSES = ("ALIVE", "STOPPING", "STARTING", "STOPPED", "DEAD", "WARNING", "UNKNOWN")


class RegistryError(Exception):
    """A registry operation failed in a way the operator can act on; the message says how."""


class UnknownPoolError(RegistryError):
    def __init__(self, pool: str, known: list[str] | None = None) -> None:
        hint = f" (known pools: {', '.join(sorted(known))})" if known else " (no pools are registered)"
        super().__init__(f"unknown pool {pool!r}{hint}; create it with `ringmon register pool {pool}`")
        self.pool = pool


class PoolExistsError(RegistryError):
    pass


class PoolNotEmptyError(RegistryError):
    pass


class ZooKeeperUnavailableError(RegistryError):
    pass


class StaleOverridesError(RegistryError):
    """The overrides znode changed since it was read (another writer won): read it again."""


# -- data model --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Member:
    """One host of a pool as registered under ``members/``."""

    pool: str
    node: str  # member_0000000007
    host: str
    port: int
    status: str = ALIVE
    ephemeral: bool = False

    @property
    def address(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def serverset_json(host: str, port: int, status: str = ALIVE) -> bytes:
    """Finagle serverset member data, the shape Prometheus' serverset discovery reads."""
    return json.dumps(
        {"serviceEndpoint": {"host": host, "port": port}, "additionalEndpoints": {}, "status": status},
        sort_keys=True,
    ).encode()


def parse_serverset(data: bytes) -> tuple[str, int, str]:
    """(host, port, status) from serverset JSON; ValueError if it is not one."""
    try:
        doc = json.loads(data.decode())
        ep = doc["serviceEndpoint"]
        host, port = ep["host"], ep["port"]
        status = doc.get("status", ALIVE)
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"not serverset JSON: {exc}") from None
    if not isinstance(host, str) or not host or isinstance(port, bool) or not isinstance(port, int):
        raise ValueError("serviceEndpoint needs a string host and an integer port")
    if status not in STATUSES:
        raise ValueError(f"unknown status {status!r}")
    return host, port, status


@dataclass(frozen=True)
class RegistryView:
    """An immutable snapshot of what the registry holds (what watches saw last)."""

    pools: dict[str, ScrapeSettings] = field(default_factory=dict)
    members: dict[str, tuple[Member, ...]] = field(default_factory=dict)
    scrapers: tuple[str, ...] = ()
    connected: bool = False
    version: int = 0
    ring_overrides: bytes | None = None  # data of <root>/ring/overrides (None: no znode)
    ring_overrides_version: int = -1  # its znode version (-1: no znode)

    def alive_count(self, pool: str) -> int:
        return sum(1 for m in self.members.get(pool, ()) if m.status == ALIVE)

    def status_counts(self, pool: str) -> dict[str, int]:
        out = {ALIVE: 0, STOPPING: 0}
        for m in self.members.get(pool, ()):
            out[m.status] = out.get(m.status, 0) + 1
        return out

    def targets(self, include_stopping: bool = False) -> list[Target]:
        """One Target per distinct (pool, address) of a registered pool; ALIVE members only by default."""
        out: dict[str, Target] = {}
        for pool in sorted(self.pools):
            settings = self.pools[pool]
            for m in sorted(self.members.get(pool, ()), key=lambda m: (m.status != ALIVE, m.node)):
                if m.status != ALIVE and not (include_stopping and m.status == STOPPING):
                    continue
                t = Target(pool=pool, address=m.address, settings=settings, status=m.status)
                out.setdefault(t.key, t)
        return list(out.values())


class MemberRegistration:
    """Handle of an ephemeral host registration (what an agent holds)."""

    def __init__(self, registry: "Registry", owned: EphemeralNode, pool: str, address: str) -> None:
        self._registry = registry
        self._owned = owned
        self.pool = pool
        self.address = address

    @property
    def path(self) -> str:
        return self._owned.path

    def set_status(self, status: str) -> None:
        self._registry._set_owned_status(self._owned, status)

    def remove(self) -> None:
        self._registry._drop_owned(self._owned)


Listener = Callable[[RegistryView], Any]


@dataclass(eq=False)
class _PoolWatch:
    """The watches of one incarnation of a pool znode; a re-created pool gets a new one, so
    callbacks of the old incarnation recognise themselves as stale."""

    members_watched: bool = False
    nodes: set[str] = field(default_factory=set)
    czxid: int | None = None  # the incarnation this watch saw first (its creating transaction)


# -- the registry ------------------------------------------------------------------------------


class Registry:
    """Pools, members and scrapers in ZooKeeper, with a watched in-memory view."""

    def __init__(
        self,
        hosts: str,
        root: str = DEFAULT_ROOT,
        session_timeout: float = 10.0,
        connect_timeout: float = 15.0,
        client: KazooClient | None = None,
    ) -> None:
        if not root.startswith("/") or root.endswith("/") and root != "/":
            raise ValueError(f"invalid ZooKeeper root {root!r}: expected an absolute path like /ringmon")
        self.hosts = hosts
        self.root = root.rstrip("/") or ""
        self.connect_timeout = connect_timeout
        self.zk = client or KazooClient(
            hosts=hosts,
            timeout=session_timeout,
            connection_retry={"max_tries": -1, "delay": 0.1, "backoff": 2, "max_delay": 1.0},
            command_retry={"max_tries": 5, "delay": 0.1, "backoff": 2, "max_delay": 1.0},
        )
        self._lock = threading.RLock()
        self._pools: dict[str, ScrapeSettings] = {}
        self._members: dict[str, dict[str, Member]] = {}
        self._pool_members: dict[str, tuple[Member, ...]] = {}
        self._dirty_pools: set[str] = set()
        self._flush_scheduled = False
        self.publish_delay_s = 0.02
        self._scrapers: tuple[str, ...] = ()
        self._overrides: tuple[bytes | None, int] = (None, -1)
        self._view = RegistryView()
        self._version = 0
        self._listeners: list[tuple[Listener, asyncio.AbstractEventLoop | None]] = []
        self._owned: list[EphemeralNode] = []
        self._pool_watches: dict[str, _PoolWatch] = {}
        self._watching = False
        self._had_session = False
        self._lost = False
        self._stopping = False
        self._session_id: int | None = None
        self.zk.add_listener(self._on_state)

    # -- paths --------------------------------------------------------------------------------

    @property
    def pools_path(self) -> str:
        return f"{self.root}/pools"

    @property
    def scrapers_path(self) -> str:
        return f"{self.root}/scrapers"

    @property
    def ring_path(self) -> str:
        return f"{self.root}/ring"

    @property
    def overrides_path(self) -> str:
        return f"{self.root}/ring/overrides"

    def pool_path(self, pool: str) -> str:
        return f"{self.pools_path}/{pool}"

    def members_path(self, pool: str) -> str:
        return f"{self.pools_path}/{pool}/members"

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self, watch: bool = True) -> "Registry":
        """Connect (bounded by ``connect_timeout``), create the base paths, start the watches."""
        try:
            self.zk.start(timeout=self.connect_timeout)
        except (KazooTimeoutError, KazooException, OSError) as exc:
            try:
                self.zk.stop()
                self.zk.close()
            except KazooException:
                pass
            raise ZooKeeperUnavailableError(
                f"cannot reach ZooKeeper at {self.hosts} within {self.connect_timeout:g}s ({exc or type(exc).__name__})"
            ) from None
        self._session_id = self.zk.client_id[0] if self.zk.client_id else None
        self._had_session = True
        self.zk.retry(self.zk.ensure_path, self.pools_path)
        self.zk.retry(self.zk.ensure_path, self.scrapers_path)
        if watch:
            self._watching = True
            ChildrenWatch(self.zk, self.pools_path, self._on_pools)
            ChildrenWatch(self.zk, self.scrapers_path, self._on_scrapers)
            DataWatch(self.zk, self.overrides_path, self._on_overrides)
            self._flush()  # the first watch callbacks ran synchronously: the view is complete now
        return self

    def stop(self) -> None:
        """Remove owned ephemeral nodes, close the session (ephemerals vanish at once)."""
        self._stopping = True
        with self._lock:
            owned, self._owned = list(self._owned), []
        for o in owned:
            o.dropped = True  # (a re-creation running now leaves it)
            try:
                if o.path:
                    self.zk.delete(o.path)
            except (NoNodeError, KazooException):
                pass
        try:
            self.zk.stop()
            self.zk.close()
        except KazooException:
            pass

    def stop_session_abruptly(self) -> None:
        """End the session without removing anything first: ZooKeeper drops this process's
        ephemeral nodes as it would after a crash (at once here, after the session timeout
        there). For tests and drills."""
        self._stopping = True
        with self._lock:
            self._owned = []
        try:
            self.zk.stop()
            self.zk.close()
        except KazooException:
            pass

    def __enter__(self) -> "Registry":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def session_id(self) -> int | None:
        return self._session_id

    # -- listeners and view -------------------------------------------------------------------

    @property
    def view(self) -> RegistryView:
        return self._view

    def add_listener(self, callback: Listener, loop: asyncio.AbstractEventLoop | None = None) -> None:
        """Call ``callback(view)`` after every change; inside ``loop`` (thread-safe) when given."""
        with self._lock:
            self._listeners.append((callback, loop))

    def remove_listener(self, callback: Listener) -> None:
        with self._lock:
            self._listeners = [(cb, lp) for cb, lp in self._listeners if cb is not callback]

    def _publish(self, pool: str | None = None) -> None:
        """Note a change (of ``pool``, when given) and schedule one view rebuild shortly.

        Watch events come in bursts (a pool of 100 hosts is 100 events); rebuilding and
        notifying once per burst keeps the cost linear in the changes, not quadratic."""
        with self._lock:
            if pool is not None:
                self._dirty_pools.add(pool)
            if self._flush_scheduled:
                return
            self._flush_scheduled = True
        timer = threading.Timer(self.publish_delay_s, self._flush, kwargs={"scheduled": True})
        timer.daemon = True
        timer.start()

    def _flush(self, scheduled: bool = False) -> None:
        """Rebuild the view and notify. Only the scheduled flush re-arms ``_publish``: a direct
        call (``start``) while a timer is pending must not let a second timer chain start, or a
        burst would be rebuilt twice as often."""
        with self._lock:
            if scheduled:
                self._flush_scheduled = False
            for pool in self._dirty_pools:
                members = self._members.get(pool)
                if members is None:
                    self._pool_members.pop(pool, None)
                else:
                    self._pool_members[pool] = tuple(sorted(members.values(), key=lambda m: m.node))
            self._dirty_pools.clear()
            for pool in [p for p in self._pool_members if p not in self._members]:
                del self._pool_members[pool]
            self._version += 1
            self._view = RegistryView(
                pools=dict(self._pools),
                members=dict(self._pool_members),
                scrapers=self._scrapers,
                connected=self.zk.state == KazooState.CONNECTED,
                version=self._version,
                ring_overrides=self._overrides[0],
                ring_overrides_version=self._overrides[1],
            )
            view = self._view
            listeners = list(self._listeners)
        for cb, loop in listeners:
            try:
                if loop is None:
                    cb(view)
                elif not loop.is_closed():
                    loop.call_soon_threadsafe(cb, view)
            except Exception:  # noqa: BLE001 - a broken listener must not stop the watches
                log.exception("registry listener failed", extra={"listener": repr(cb)})

    # -- session handling ---------------------------------------------------------------------

    def _on_state(self, state: str) -> None:
        """kazoo calls this from its connection thread: log, and never block here."""
        if self._stopping:
            return
        if state == KazooState.SUSPENDED:
            log.warning("zookeeper session suspended, keeping last known view", extra={"hosts": self.hosts})
        elif state == KazooState.LOST:
            self._lost = True
            log.error("zookeeper session lost, keeping last known view", extra={"hosts": self.hosts})
        elif state == KazooState.CONNECTED and self._had_session:
            sid = self.zk.client_id[0] if self.zk.client_id else None
            new_session = self._lost or (sid is not None and sid != self._session_id)
            self._session_id = sid
            log.info(
                "zookeeper session " + ("re-established (new session)" if new_session else "resumed"),
                extra={"hosts": self.hosts, "session": f"{sid:#x}" if sid else None},
            )
            if new_session:
                self._lost = False
                self.zk.handler.spawn(self._recreate_owned)
        if self._watching:
            self.zk.handler.spawn(self._publish)

    def _recreate_owned(self) -> None:
        with self._lock:
            owned = list(self._owned)
        for o in owned:
            try:
                before = (o.path, o.session)
                self._create_owned(o, again=True)
                if (o.path, o.session) != before:
                    log.info("ephemeral node re-created", extra={"path": o.path})
            except Exception as exc:  # noqa: BLE001 - logged; retried on the next new session
                log.error("could not re-create ephemeral node", extra={"base": o.base, "error": str(exc)})

    def _create_owned(self, o: EphemeralNode, again: bool = False) -> None:
        """Make ``o`` in this session; ``again`` (a new session): unless a status write made it
        already or it was removed meanwhile (``EphemeralNode.ensure``)."""
        try:
            o.ensure(self.zk) if again else o.create(self.zk)
        except NodeHeldError as exc:
            raise RegistryError(str(exc)) from None

    def _set_owned_status(self, o: EphemeralNode, status: str) -> None:
        if status not in STATUSES:
            raise ValueError(f"invalid status {status!r}: expected one of {', '.join(STATUSES)}")
        host, port, _ = parse_serverset(o.data)
        o.set_data(self.zk, serverset_json(host, port, status))

    def _drop_owned(self, o: EphemeralNode) -> None:
        with self._lock:
            if o in self._owned:
                self._owned.remove(o)
        o.delete(self.zk)

    # -- watches ------------------------------------------------------------------------------

    def _on_pools(self, names: list[str]) -> bool | None:
        if self._stopping:
            return False
        names_set = set(names)
        with self._lock:
            gone = (set(self._pools) | set(self._pool_watches)) - names_set
            for p in gone:
                self._forget_pool(p)
            new = sorted(names_set - set(self._pool_watches))
            watches = {p: _PoolWatch() for p in new}
            self._pool_watches.update(watches)
        for p, w in watches.items():
            DataWatch(self.zk, self.pool_path(p), self._pool_data_watcher(p, w))
        for p in gone:
            self._publish(p)
        return None

    def _forget_pool(self, pool: str) -> None:
        """Drop a pool from the view; its watches see they are stale and stop (lock held)."""
        self._pools.pop(pool, None)
        self._members.pop(pool, None)
        self._pool_watches.pop(pool, None)

    def _current(self, pool: str, w: "_PoolWatch") -> bool:
        return self._pool_watches.get(pool) is w

    def _pool_data_watcher(self, pool: str, w: "_PoolWatch") -> Callable[..., bool | None]:
        path = self.pool_path(pool)

        def on_data(data: bytes | None, stat: Any, event: Any = None) -> bool | None:
            if self._stopping:
                return False
            with self._lock:
                if not self._current(pool, w):
                    return False
                if stat is None:  # pool deleted
                    self._forget_pool(pool)
            if stat is None:
                self._publish(pool)
                return False
            with self._lock:
                if not self._current(pool, w):
                    return False
                if w.czxid is None:
                    w.czxid = stat.czxid
                recreated = stat.czxid != w.czxid
                if recreated:
                    # Deleted and created again between two reads of this watch: its members
                    # watch may have stopped on the deleted members node (kazoo ends a children
                    # watch silently on NoNode), so the new incarnation is watched afresh.
                    self._forget_pool(pool)
                    fresh = _PoolWatch()
                    self._pool_watches[pool] = fresh
            if recreated:
                self._publish(pool)
                DataWatch(self.zk, path, self._pool_data_watcher(pool, fresh))
                return False
            try:
                settings = settings_from_json(json.loads(data.decode())) if data else ScrapeSettings()
            except ValueError as exc:
                with self._lock:
                    settings = self._pools.get(pool, ScrapeSettings())
                log.error("invalid pool settings in zookeeper, keeping the last good ones",
                          extra={"path": path, "error": str(exc)})
            with self._lock:
                if not self._current(pool, w):
                    return False
                self._pools[pool] = settings
                self._members.setdefault(pool, {})
                start_members = not w.members_watched
                w.members_watched = True
            if start_members:
                try:
                    self.zk.ensure_path(self.members_path(pool))
                except KazooException as exc:
                    log.error("cannot create members node", extra={"path": self.members_path(pool), "error": str(exc)})
                ChildrenWatch(self.zk, self.members_path(pool), self._members_watcher(pool, w))
            self._publish(pool)
            return None

        return on_data

    def _members_watcher(self, pool: str, w: "_PoolWatch") -> Callable[[list[str]], bool | None]:
        def on_children(children: list[str]) -> bool | None:
            if self._stopping:
                return False
            nodes = {c for c in children if c.startswith(MEMBER_PREFIX)}
            with self._lock:
                if not self._current(pool, w):
                    return False
                current = self._members.setdefault(pool, {})
                removed = [n for n in current if n not in nodes]
                for n in removed:
                    current.pop(n, None)
                new = sorted(nodes - w.nodes)
                w.nodes |= set(new)
                w.nodes -= set(removed)
            for n in new:
                DataWatch(self.zk, f"{self.members_path(pool)}/{n}", self._member_data_watcher(pool, n, w))
            if removed:
                self._publish(pool)
            return None

        return on_children

    def _member_data_watcher(self, pool: str, node: str, w: "_PoolWatch") -> Callable[..., bool | None]:
        path = f"{self.members_path(pool)}/{node}"

        def on_data(data: bytes | None, stat: Any, event: Any = None) -> bool | None:
            if self._stopping:
                return False
            if stat is None:
                with self._lock:
                    if not self._current(pool, w):
                        return False
                    w.nodes.discard(node)
                    existed = self._members.get(pool, {}).pop(node, None) is not None
                if existed:
                    self._publish(pool)
                return False
            try:
                host, port, status = parse_serverset(data or b"")
            except ValueError as exc:
                log.error("ignoring member with invalid serverset data", extra={"path": path, "error": str(exc)})
                return None
            member = Member(pool, node, host, port, status, ephemeral=bool(stat.ephemeralOwner))
            with self._lock:
                if not self._current(pool, w) or node not in w.nodes:
                    return False
                self._members.setdefault(pool, {})[node] = member
            self._publish(pool)
            return None

        return on_data

    def _on_scrapers(self, ids: list[str]) -> bool | None:
        if self._stopping:
            return False
        with self._lock:
            self._scrapers = tuple(sorted(ids))
        self._publish()
        return None

    def _on_overrides(self, data: bytes | None, stat: Any, event: Any = None) -> bool | None:
        if self._stopping:
            return False
        with self._lock:
            self._overrides = (data, stat.version) if stat is not None else (None, -1)
        self._publish()
        return None

    # -- pools --------------------------------------------------------------------------------

    def list_pools(self) -> dict[str, ScrapeSettings]:
        """Pools and their settings, read now (not from the view)."""
        out = {}
        for name in sorted(self.zk.retry(self.zk.get_children, self.pools_path)):
            try:
                out[name] = self.get_pool(name)
            except UnknownPoolError:
                continue
        return out

    def get_pool(self, pool: str) -> ScrapeSettings:
        check_pool_name(pool)
        try:
            data, _ = self.zk.retry(self.zk.get, self.pool_path(pool))
        except NoNodeError:
            raise UnknownPoolError(pool, self.zk.retry(self.zk.get_children, self.pools_path)) from None
        if not data:
            return ScrapeSettings()
        try:
            return settings_from_json(json.loads(data.decode()))
        except ValueError as exc:
            raise RegistryError(f"pool {pool!r} holds invalid settings in ZooKeeper: {exc}") from None

    def create_pool(self, pool: str, settings: ScrapeSettings | None = None, update: bool = False) -> bool:
        """Create a pool (with its ``members`` node); with ``update`` an existing pool gets the new
        settings. Returns True when created, False when updated."""
        check_pool_name(pool)
        settings = settings or ScrapeSettings()
        data = json.dumps(settings.to_dict(), sort_keys=True).encode()
        tx = self.zk.transaction()
        tx.create(self.pool_path(pool), data)
        tx.create(self.members_path(pool), b"")
        results = self.zk.retry(tx.commit)
        if not any(isinstance(r, Exception) for r in results):
            return True
        if any(isinstance(r, NodeExistsError) for r in results):
            if not update:
                raise PoolExistsError(f"pool {pool!r} already exists (use --update to change its settings)")
            self.zk.retry(self.zk.set, self.pool_path(pool), data)
            self.zk.retry(self.zk.ensure_path, self.members_path(pool))
            return False
        raise RegistryError(f"cannot create pool {pool!r}: {results}")

    def delete_pool(self, pool: str, force: bool = False) -> int:
        """Delete a pool. Refused while it has members unless ``force``; returns members removed."""
        check_pool_name(pool)
        if not self.zk.retry(self.zk.exists, self.pool_path(pool)):
            raise UnknownPoolError(pool, self.zk.retry(self.zk.get_children, self.pools_path))
        members = self.members(pool)
        if members and not force:
            raise PoolNotEmptyError(
                f"pool {pool!r} still has {len(members)} member(s): deregister them first or use --force"
            )
        try:
            self.zk.retry(self.zk.delete, self.pool_path(pool), recursive=True)
        except NotEmptyError:
            raise RegistryError(f"pool {pool!r} changed while deleting it; try again") from None
        return len(members)

    # -- members ------------------------------------------------------------------------------

    def members(self, pool: str) -> list[Member]:
        """Members of a pool, read now; UnknownPoolError when the pool does not exist."""
        check_pool_name(pool)
        if not self.zk.retry(self.zk.exists, self.pool_path(pool)):
            raise UnknownPoolError(pool, self.zk.retry(self.zk.get_children, self.pools_path))
        out = []
        try:
            children = self.zk.retry(self.zk.get_children, self.members_path(pool))
        except NoNodeError:
            return []
        nodes = sorted(c for c in children if c.startswith(MEMBER_PREFIX))
        # one round trip for all members: the reads are pipelined on the session
        pending = [(node, self.zk.get_async(f"{self.members_path(pool)}/{node}")) for node in nodes]
        for node, result in pending:
            try:
                data, stat = result.get(timeout=self.connect_timeout)
                host, port, status = parse_serverset(data)
            except NoNodeError:
                continue
            except ValueError as exc:
                log.warning("skipping invalid member", extra={"pool": pool, "node": node, "error": str(exc)})
                continue
            out.append(Member(pool, node, host, port, status, ephemeral=bool(stat.ephemeralOwner)))
        return out

    def register_host(self, pool: str, address: str, status: str = ALIVE) -> tuple[str, bool]:
        """Register a host persistently (``ringmon register host``). Idempotent: returns
        (path, created) and does not add a second node for an address already registered
        persistently."""
        return self.register_hosts(pool, [address], status)[0]

    def register_hosts(self, pool: str, addresses: Sequence[str], status: str = ALIVE) -> list[tuple[str, bool]]:
        """``register_host`` of each address, reading the pool's members once (one by one, n
        hosts read n^2/2 member nodes) and pipelining the creations on the session."""
        parsed = {a: split_host_port(a) for a in (check_address(a) for a in addresses)}
        known = {m.address: f"{self.members_path(pool)}/{m.node}" for m in self.members(pool) if not m.ephemeral}
        self.zk.retry(self.zk.ensure_path, self.members_path(pool))
        new = [a for a in parsed if a not in known]
        pending = [self.zk.create_async(f"{self.members_path(pool)}/{MEMBER_PREFIX}",
                                        serverset_json(*parsed[a], status), sequence=True) for a in new]
        fresh = {a: p.get(timeout=self.connect_timeout) for a, p in zip(new, pending, strict=True)}
        known.update(fresh)
        out = []
        for a in (check_address(a) for a in addresses):
            out.append((known[a], fresh.pop(a, None) is not None))  # created: True for its first mention
        return out

    def deregister_host(self, pool: str, address: str) -> int:
        """Remove every member node of ``address`` in ``pool``; returns how many were removed."""
        address = check_address(address)
        removed = 0
        for m in self.members(pool):
            if m.address == address:
                try:
                    self.zk.retry(self.zk.delete, f"{self.members_path(pool)}/{m.node}")
                    removed += 1
                except NoNodeError:
                    pass
        return removed

    def register_ephemeral(self, pool: str, address: str, status: str = ALIVE) -> MemberRegistration:
        """Register this process's host ephemerally (agents); re-created after a session loss."""
        address = check_address(address)
        host, port = split_host_port(address)
        if not self.zk.retry(self.zk.exists, self.pool_path(pool)):
            check_pool_name(pool)
            raise UnknownPoolError(pool, self.zk.retry(self.zk.get_children, self.pools_path))
        self.zk.retry(self.zk.ensure_path, self.members_path(pool))
        owned = EphemeralNode(f"{self.members_path(pool)}/{MEMBER_PREFIX}", serverset_json(host, port, status), sequential=True)
        self._create_owned(owned)
        with self._lock:
            self._owned.append(owned)
        return MemberRegistration(self, owned, pool, address)

    def set_member_status(self, pool: str, node: str, status: str) -> None:
        if status not in STATUSES:
            raise ValueError(f"invalid status {status!r}: expected one of {', '.join(STATUSES)}")
        path = f"{self.members_path(pool)}/{node}"
        while True:
            data, stat = self.zk.retry(self.zk.get, path)
            host, port, _ = parse_serverset(data)
            try:
                self.zk.retry(self.zk.set, path, serverset_json(host, port, status), version=stat.version)
                return
            except BadVersionError:
                continue

    def snapshot(self) -> RegistryView:
        """The whole registry read now, without watches (for one-shot commands)."""
        pools = self.list_pools()
        members = {}
        for pool in pools:
            try:
                members[pool] = tuple(self.members(pool))
            except UnknownPoolError:
                continue
        pools = {p: s for p, s in pools.items() if p in members}
        overrides, overrides_version = self.read_overrides()
        return RegistryView(
            pools=pools,
            members=members,
            scrapers=tuple(self.scrapers()),
            connected=self.zk.connected,
            ring_overrides=overrides,
            ring_overrides_version=overrides_version,
        )

    # -- scrapers -----------------------------------------------------------------------------

    def join_scrapers(self, scraper_id: str, info: dict | None = None) -> str:
        """Hold ``<root>/scrapers/<id>`` (ephemeral) for as long as this registry runs."""
        check_scraper_id(scraper_id)
        data = json.dumps({"id": scraper_id, "started": time.time(), **(info or {})}, sort_keys=True).encode()
        owned = EphemeralNode(f"{self.scrapers_path}/{scraper_id}", data)
        self._create_owned(owned)
        with self._lock:
            self._owned.append(owned)
        return owned.path

    def leave_scrapers(self, scraper_id: str) -> None:
        with self._lock:
            owned = [o for o in self._owned if not o.sequential and o.base == f"{self.scrapers_path}/{scraper_id}"]
        for o in owned:
            self._drop_owned(o)

    def scrapers(self) -> dict[str, dict]:
        """Live scrapers and what each published about itself, read now."""
        return read_members(self.zk, self.scrapers_path)

    # -- ring overrides -----------------------------------------------------------------------

    def read_overrides(self) -> tuple[bytes | None, int]:
        """(data, znode version) of ``<root>/ring/overrides``, read now; (None, -1) when absent."""
        try:
            data, stat = self.zk.retry(self.zk.get, self.overrides_path)
        except NoNodeError:
            return None, -1
        return data, stat.version

    def write_overrides(self, data: bytes, expected_version: int) -> int:
        """Replace the overrides if the znode is still at ``expected_version`` (-1: create it);
        returns the new version. StaleOverridesError when someone else wrote first."""
        try:
            if expected_version < 0:
                self.zk.retry(self.zk.ensure_path, self.ring_path)
                self.zk.retry(self.zk.create, self.overrides_path, data)
                return 0
            stat = self.zk.retry(self.zk.set, self.overrides_path, data, version=expected_version)
            return cast(int, stat.version)  # kazoo is untyped: a ZnodeStat
        except (BadVersionError, NodeExistsError, NoNodeError):
            raise StaleOverridesError(
                f"{self.overrides_path} changed since version {expected_version} was read"
            ) from None


class ZooKeeperDiscovery:
    """The scraper's view of ZooKeeper: the targets of every registered pool, kept current.

    ``targets()`` returns the targets of the last known view, so it keeps answering while
    ZooKeeper is unreachable.
    """

    def __init__(self, registry: Registry, include_stopping: bool = False) -> None:
        self.registry = registry
        self.include_stopping = include_stopping

    def targets(self) -> list[Target]:
        return self.registry.view.targets(self.include_stopping)

    def scrapers(self) -> tuple[str, ...]:
        return self.registry.view.scrapers
