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
import time
from typing import TYPE_CHECKING, Any

from kazoo.exceptions import NodeExistsError, NoNodeError

if TYPE_CHECKING:
    from kazoo.client import KazooClient

log = logging.getLogger("ringmon.discovery.membership")


class NodeHeldError(Exception):
    """A fixed member path is held by another live session (another process with this id)."""


class EphemeralNode:
    """One ephemeral node this process holds.

    ``base`` is the node's path, or for a ``sequential`` node the path prefix ZooKeeper
    appends the sequence number to; ``path`` is the node made (empty until ``create``)."""

    def __init__(self, base: str, data: bytes = b"", sequential: bool = False) -> None:
        self.base = base
        self.data = data
        self.sequential = sequential
        self.path = ""

    def create(self, zk: "KazooClient") -> str:
        """Create the node in ``zk``'s current session (again after a new session).

        A fixed path already held by this session is ours; one held by an earlier session of
        this id (a restart, or the session before a loss) goes away when that session expires:
        wait for it, up to 1.5 session timeouts, then NodeHeldError."""
        if self.sequential:
            self.path = zk.create(self.base, self.data, ephemeral=True, sequence=True)
            return self.path
        deadline = time.monotonic() + max(zk._session_timeout / 1000.0 * 1.5, 3.0)  # noqa: SLF001
        while True:
            try:
                zk.create(self.base, self.data, ephemeral=True, makepath=True)
                self.path = self.base
                return self.path
            except NodeExistsError:
                _, stat = zk.get(self.base)
                if stat.ephemeralOwner == (zk.client_id or (None,))[0]:
                    self.path = self.base
                    return self.path
                if time.monotonic() > deadline:
                    raise NodeHeldError(
                        f"{self.base} is held by another live session (owner {stat.ephemeralOwner:#x}): "
                        "is another process running with the same id?"
                    ) from None
                time.sleep(0.2)

    def set_data(self, zk: "KazooClient", data: bytes) -> None:
        """Publish ``data`` now (when the node exists) and in every later ``create``."""
        self.data = data
        if self.path:
            zk.retry(zk.set, self.path, data)

    def delete(self, zk: "KazooClient") -> None:
        """Leave the group: the node is gone (already gone is fine)."""
        if self.path:
            try:
                zk.retry(zk.delete, self.path)
            except NoNodeError:
                pass


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
