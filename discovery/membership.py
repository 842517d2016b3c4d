"""ZooKeeper group membership, the one recipe the scraper ring, agents and alerters use.

A process belongs to a group by holding an ephemeral node under the group's path
(``EphemeralNode``): ``<group>/<id>``, or ``<group>/<prefix><sequence>`` for sequential
members. ZooKeeper deletes the node with the session that made it, so the holder creates it
again after every new session. The group is the children of its path; ``read_members`` reads
each member's id and the JSON it published. Blocking (kazoo): call from an executor in
asyncio code.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from typing import TYPE_CHECKING, Any

from kazoo.exceptions import NodeExistsError, NoNodeError
from kazoo.retry import KazooRetry

if TYPE_CHECKING:
    from kazoo.client import KazooClient

log = logging.getLogger("ringmon.discovery.membership")


class NodeHeldError(Exception):
    """A fixed member path is held by another live session (another process with this id)."""


class EphemeralNode:
    """One ephemeral node this process holds.

    ``base`` is the node's path, or for a ``sequential`` node the path prefix ZooKeeper
    appends the sequence number to; ``path`` is the node made (empty until ``create``) and
    ``session`` the session that made it. ``create``, ``ensure``, ``set_data`` and ``delete``
    are serialised, so a write racing the re-creation after a new session neither goes to
    the node the old session took with it nor is overwritten by the re-creation's older data."""

    def __init__(self, base: str, data: bytes = b"", sequential: bool = False) -> None:
        self.base = base
        self.data = data
        self.sequential = sequential
        self.path = ""
        self.session: int | None = None
        self.dropped = False  # deleted on purpose: ``ensure`` does not make it again
        self._lock = threading.RLock()

    def create(self, zk: "KazooClient") -> str:
        """Create the node in ``zk``'s current session (again after a new session).

        A fixed path already held by this session is ours; one held by an earlier session of
        this id (a restart, or the session before a loss) goes away when that session expires:
        wait for it, up to 1.5 session timeouts, then NodeHeldError."""
        with self._lock:
            self.dropped = False
            return self._create(zk)

    def ensure(self, zk: "KazooClient") -> str:
        """``create``, unless the node was deleted on purpose or ``zk``'s current session made
        it already (a ``set_data`` after the session loss may have): what a new session calls."""
        with self._lock:
            if self.dropped or (self.path and self.session is not None and self.session == _session_id(zk)):
                return self.path
            return self._create(zk)

    def _create(self, zk: "KazooClient") -> str:
        session = _session_id(zk)  # (read first: a node made as the session changes is made again)
        if self.sequential:
            self.path = zk.create(self.base, self.data, ephemeral=True, sequence=True)
            self.session = session
            return self.path
        deadline = time.monotonic() + max(zk._session_timeout / 1000.0 * 1.5, 3.0)  # noqa: SLF001
        while True:
            try:
                zk.create(self.base, self.data, ephemeral=True, makepath=True)
                self.path, self.session = self.base, session
                return self.path
            except NodeExistsError:
                _, stat = zk.get(self.base)
                if stat.ephemeralOwner == (zk.client_id or (None,))[0]:
                    self.path, self.session = self.base, session
                    return self.path
                if time.monotonic() > deadline:
                    raise NodeHeldError(
                        f"{self.base} is held by another live session (owner {stat.ephemeralOwner:#x}): "
                        "is another process running with the same id?"
                    ) from None
                time.sleep(0.2)

    def set_data(self, zk: "KazooClient", data: bytes) -> None:
        """Publish ``data`` now (when the node exists) and in every later ``create``. The write
        is retried through a reconnect for up to 1.5 session timeouts (the client's own command
        retry gives up after ~2.5 s, and an agent's STOPPING would then be lost). When the node
        went with an earlier session (expired while the write waited, or before the new session
        made it again), it is made now, in this session, with ``data``."""
        with self._lock:
            self.data = data
            if not self.path:
                return
            retry = KazooRetry(max_tries=-1, delay=0.1, backoff=2, max_delay=1.0,
                               deadline=max(zk._session_timeout / 1000.0 * 1.5, 3.0))  # noqa: SLF001
            try:
                retry(zk.set, self.path, data)
            except NoNodeError:
                if self.session is not None and self.session == _session_id(zk):
                    raise  # deleted by someone else in this session: not ours to bring back
                log.info("ephemeral node went with its session, made again", extra={"path": self.path})
                self._create(zk)

    def delete(self, zk: "KazooClient") -> None:
        """Leave the group: the node is gone (already gone is fine)."""
        with self._lock:
            self.dropped = True
            if self.path:
                try:
                    zk.retry(zk.delete, self.path)
                except NoNodeError:
                    pass


def _session_id(zk: "KazooClient") -> int | None:
    client_id = zk.client_id
    return client_id[0] if client_id else None


def read_members(zk: Any, group: str) -> dict[str, dict]:
    """The group's live member ids, sorted, each with the JSON object it published ({} when
    none or unreadable), read now; {} when the group's path does not exist."""
    group = group.rstrip("/")
    try:
        children = sorted(zk.retry(zk.get_children, group))
    except NoNodeError:
        return {}
    out: dict[str, dict] = {}
    for child in children:
        try:
            data, _ = zk.retry(zk.get, f"{group}/{child}")
        except NoNodeError:
            continue  # gone since the listing
        try:
            info = json.loads(data.decode()) if data else {}
        except ValueError:
            info = None
        if not isinstance(info, dict):
            log.warning("group member without readable JSON", extra={"node": f"{group}/{child}"})
            info = {}
        out[child] = info
    return out
