"""Helpers for tests against the real ZooKeeper: bounded waits, forced session expiry and an
in-process cluster scraper."""

from __future__ import annotations

import time
from collections.abc import Callable

import waiting
from kazoo.client import KazooClient

from cli.cmd_scraper import ScraperOptions, ScraperProcess
from cli.config import RingmonConfig
from cli.wiring import make_storage, make_writer
from storage.base import SampleWriter, Storage


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
    """``wait_for`` in a coroutine: the event loop runs between the polls (``waiting.wait_for``)."""

    async def check() -> object:
        return predicate()

    return await waiting.wait_for(check, what, timeout, every_s=0.05)


async def cluster_scraper(cfg: RingmonConfig, zookeeper_hosts: str, zk_root: str) -> tuple[Storage, SampleWriter, ScraperProcess]:
    """The configured storage and writer, and an in-process cluster scraper ``s-1`` on them that
    takes its pools from the ZooKeeper under test (not started; 4 s sessions, 1 s records)."""
    storage = await make_storage(cfg.storage)
    writer = await make_writer(cfg.storage, storage)
    scraper = ScraperProcess(
        ScraperOptions(scraper_id="s-1", listen="127.0.0.1:0", zookeeper=zookeeper_hosts, zookeeper_root=zk_root,
                       session_timeout=4.0, record_interval=1.0),
        writer,
    )
    return storage, writer, scraper


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
