"""Helpers for tests against the real ZooKeeper: bounded waits and forced session expiry."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from kazoo.client import KazooClient


def wait_for(predicate: Callable[[], object], timeout: float = 60.0, what: str = "condition") -> object:
    """Poll ``predicate`` until it returns something truthy; AssertionError after ``timeout``."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout:g}s waiting for {what} (last value: {last!r})")


async def async_wait_for(predicate: Callable[[], object], timeout: float = 60.0, what: str = "condition") -> object:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out after {timeout:g}s waiting for {what} (last value: {last!r})")


def expire_session(hosts: str, client: KazooClient) -> None:
    """Make ZooKeeper expire ``client``'s session now (its ephemeral nodes are deleted).

    A second client attaches to the same session and closes it; the first then finds its
    session expired when it reconnects (KazooState.LOST), as after a long partition.
    """
    session_id, password = client.client_id
    other = KazooClient(hosts=hosts, client_id=(session_id, password), timeout=client._session_timeout / 1000)
    other.start(timeout=10)
    other.stop()
    other.close()
