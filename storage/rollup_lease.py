"""Leases on rollup shards, so several copies of the rollup job split the work safely.

``ShardLease`` is what the job needs: try to take a shard, know whether it is still held,
give it back. Two implementations:

- ``LocalShardLease``: ``fcntl`` locks on files ``<dir>/shard-<n>.lock`` - copies on one
  host (standalone mode, tests). The kernel drops a lock when its process dies.
- ``ZooKeeperShardLease``: kazoo's ``Lock`` recipe on ``<root>/shard-<n>``; the lock is
  an ephemeral sequential znode, so it goes when the holder's session expires.

A lost lease is never a correctness problem: rollup output is idempotent, so two copies
working one window write identical rows. Leases only keep copies from doing the same work.
"""

from __future__ import annotations

import abc
import asyncio
import fcntl
import logging
import os
import socket
from pathlib import Path
from typing import Any

log = logging.getLogger("ringmon.rollup")


class ShardLease(abc.ABC):
    """Exclusive, non-blocking claims on numbered shards."""

    @abc.abstractmethod
    async def try_acquire(self, shard: int) -> bool:
        """Take ``shard`` if nobody holds it; True when this process now holds it."""

    @abc.abstractmethod
    async def release(self, shard: int) -> None:
        """Give ``shard`` back (no-op if not held)."""

    @abc.abstractmethod
    def held(self, shard: int) -> bool:
        """True while this process still holds ``shard``."""

    async def close(self) -> None:  # noqa: B027 - optional hook, no-op by default
        """Release everything held."""


class LocalShardLease(ShardLease):
    """Shard locks between processes of one host, as ``flock`` on files in ``directory``."""

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self._fds: dict[int, int] = {}

    async def try_acquire(self, shard: int) -> bool:
        if shard in self._fds:
            return True
        fd = os.open(self.directory / f"shard-{shard}.lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        except BaseException:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.write(fd, f"{socket.gethostname()} {os.getpid()}\n".encode())
        self._fds[shard] = fd
        return True

    async def release(self, shard: int) -> None:
        fd = self._fds.pop(shard, None)
        if fd is not None:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def held(self, shard: int) -> bool:
        return shard in self._fds

    async def close(self) -> None:
        for shard in list(self._fds):
            await self.release(shard)


class ZooKeeperShardLease(ShardLease):
    """Shard locks in ZooKeeper with kazoo's ``Lock`` recipe (``client`` is a started KazooClient)."""

    def __init__(
        self, client: Any, root: str = "/ringmon/rollup/locks", identifier: str | None = None
    ) -> None:
        self.client = client
        self.root = root.rstrip("/")
        self.identifier = identifier or f"{socket.gethostname()}:{os.getpid()}"
        self._locks: dict[int, Any] = {}

    async def try_acquire(self, shard: int) -> bool:
        lock = self._locks.get(shard)
        if lock is not None and lock.is_acquired:
            return True
        if lock is None:
            lock = self.client.Lock(f"{self.root}/shard-{shard}", self.identifier)
        loop = asyncio.get_running_loop()
        try:
            got = await loop.run_in_executor(None, lambda: lock.acquire(blocking=False))
        except Exception as exc:  # ZooKeeper unreachable or session lost: not ours this pass
            log.warning(
                "cannot take rollup shard %d lease in ZooKeeper: %s: %s", shard, type(exc).__name__, exc
            )
            return False
        if got:
            self._locks[shard] = lock
        return bool(got)

    async def release(self, shard: int) -> None:
        lock = self._locks.pop(shard, None)
        if lock is not None:
            loop = asyncio.get_running_loop()
            try:
                await loop.run_in_executor(None, lock.release)
            except Exception:  # session gone: the ephemeral node went with it
                pass

    def held(self, shard: int) -> bool:
        lock = self._locks.get(shard)
        if lock is None or not lock.is_acquired:
            return False
        # A suspended or lost session may already have let another copy in.
        return bool(self.client.connected)

    async def close(self) -> None:
        for shard in list(self._locks):
            await self.release(shard)
