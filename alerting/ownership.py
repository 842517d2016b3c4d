"""Which alerter evaluates which rule group: exactly one at a time.

``LocalOwnership`` owns everything (one alerter). ``ZooKeeperOwnership`` registers this
alerter as an ephemeral node under ``/ringmon/alerters`` and places groups on a consistent
hash ring (uhashring) over the live alerter ids; every alerter computes the same ring, so each
group has one owner, and when an alerter dies its session expires and its groups move.
Without a ZooKeeper session an alerter owns nothing (another may have taken over), so a
partition never produces two evaluators of one group for longer than a session timeout.
"""

from __future__ import annotations

import abc
import hashlib
import json
import logging
import os
import socket
import threading
import uuid
from typing import TYPE_CHECKING, cast

from uhashring import HashRing

from discovery.membership import EphemeralNode

if TYPE_CHECKING:
    from kazoo.client import KazooClient

log = logging.getLogger("ringmon.alerting.ownership")

ALERTERS_PATH = "/ringmon/alerters"


def _hash_key(key: str) -> int:
    return int.from_bytes(hashlib.md5(key.encode("utf-8"), usedforsecurity=False).digest(), "big")


class GroupOwnership(abc.ABC):
    @abc.abstractmethod
    def owns(self, group_key: str) -> bool: ...

    def start(self) -> None:
        return None

    def stop(self) -> None:
        return None

    def members(self) -> list[str]:
        return []


class LocalOwnership(GroupOwnership):
    """A single alerter: every group is ours."""

    def owns(self, group_key: str) -> bool:
        return True


class RingOwnership(GroupOwnership):
    """Ownership by a consistent-hash ring over member ids (the membership is fed in)."""

    def __init__(self, my_id: str, vnodes: int = 160) -> None:
        self.my_id = my_id
        self.vnodes = vnodes
        self._lock = threading.Lock()
        self._members: tuple[str, ...] = ()
        self._ring: HashRing | None = None
        self.active = False

    def set_members(self, members: list[str]) -> None:
        ms = tuple(sorted(set(members)))
        with self._lock:
            if ms == self._members and self._ring is not None:
                return
            self._members = ms
            self._ring = HashRing(nodes=list(ms), vnodes=self.vnodes, hash_fn=_hash_key) if ms else None
        log.info("alerter ring: %d members %s", len(ms), ", ".join(ms))

    def members(self) -> list[str]:
        return list(self._members)

    def owner_of(self, group_key: str) -> str | None:
        with self._lock:
            if self._ring is None:
                return None
            return cast(str, self._ring.get_node(group_key))  # uhashring is untyped

    def owns(self, group_key: str) -> bool:
        return self.active and self.owner_of(group_key) == self.my_id


class ZooKeeperOwnership(RingOwnership):
    """Members are the ephemeral children of ``/ringmon/alerters``, watched through kazoo."""

    def __init__(self, hosts: str, my_id: str | None = None, root: str = ALERTERS_PATH,
                 session_timeout_s: float = 10.0, vnodes: int = 160) -> None:
        super().__init__(my_id or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}", vnodes)
        self.hosts = hosts
        self.root = root.rstrip("/")
        self.session_timeout_s = session_timeout_s
        self.zk: KazooClient | None = None
        # data: {"listen": "host:port"} once the alerter serves HTTP
        self.node = EphemeralNode(f"{self.root}/{self.my_id}")

    def publish_address(self, listen: str) -> None:
        """Write where this alerter's HTTP API is into its node (the web finds alerters there)."""
        data = json.dumps({"listen": listen}).encode()
        if self.zk is None or not self.zk.connected:
            self.node.data = data  # the next registration writes it
            return
        try:
            self.node.set_data(self.zk, data)
        except Exception as exc:  # the next registration writes it
            log.warning("cannot publish alerter address in ZooKeeper: %s", exc)

    def start(self) -> None:
        from kazoo.client import KazooClient, KazooState

        zk = self.zk = KazooClient(hosts=self.hosts, timeout=self.session_timeout_s)

        def on_state(state: str) -> None:
            if state == KazooState.LOST:
                self.active = False
                log.warning("ZooKeeper session lost: this alerter evaluates no group until it re-registers")
            elif state == KazooState.SUSPENDED:
                log.warning("ZooKeeper connection suspended; keeping the current assignment")
            elif state == KazooState.CONNECTED:
                assert self.zk is not None
                self.zk.handler.spawn(self._register)  # a new session needs our ephemeral node again

        zk.add_listener(on_state)
        zk.start(timeout=max(5.0, self.session_timeout_s))
        self._register()
        # The recipe re-reads the children after reconnects and session loss.
        zk.ChildrenWatch(self.root, self._on_children)

    def _register(self) -> None:
        if self.zk is None:
            return
        try:
            self.zk.ensure_path(self.root)
            self.node.create(self.zk)
        except Exception as exc:  # retried on the next (re)connection
            log.warning("cannot register alerter in ZooKeeper: %s", exc)

    def _on_children(self, children: list[str]) -> bool:
        self.set_members(children)
        self.active = self.my_id in children
        if not self.active and self.zk is not None and self.zk.connected:
            # e.g. the node we found at start belonged to our previous, now expired, session
            self.zk.handler.spawn(self._register)
        return True

    def stop(self) -> None:
        if self.zk is not None:
            self.active = False
            try:
                self.zk.stop()
                self.zk.close()
            except Exception as exc:
                log.debug("closing ZooKeeper: %s", exc)
            self.zk = None
