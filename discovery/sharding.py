"""Which targets this scraper owns, kept current as the registry changes.

``ShardCoordinator`` joins ``<root>/scrapers/<id>``, watches the registry and, after each
burst of changes (coalesced for ``settle_s``), rebuilds the ring over the live scraper ids
and computes this scraper's share of the targets. Consumers read ``assignment`` and wait on
``updated`` (an ``asyncio.Event``) to resync their scrape loops; nothing here knows how
scraping works.

Fault behaviour:
- ZooKeeper unreachable (SUSPENDED/LOST): the registry keeps its last view, so the
  assignment does not change and scraping goes on.
- This scraper missing from the live ids while it is joined (the moment between a new
  session and its node being re-created): the previous assignment is kept for
  ``absent_grace_s``; only a longer absence empties it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from discovery.registry import Registry, RegistryView
from discovery.ring import DEFAULT_VNODES, ScraperRing
from discovery.target import Target

log = logging.getLogger("ringmon.discovery.sharding")

# The ring owner of this key records the pool member counts (one writer at steady state).
POOL_MEMBERS_KEY = "ringmon/pool-members-recorder"


@dataclass(frozen=True)
class Assignment:
    """One consistent answer to "what do I scrape": the ring, every target, my share."""

    me: str
    ring: ScraperRing
    targets: tuple[Target, ...] = ()
    owned: tuple[Target, ...] = ()
    connected: bool = False
    view_version: int = 0
    computed_at: float = field(default_factory=time.time)

    @property
    def owned_keys(self) -> frozenset[str]:
        return frozenset(t.key for t in self.owned)

    def owner(self, key: str) -> str | None:
        return self.ring.owner(key)

    def is_owner(self, key: str) -> bool:
        return self.ring.owner(key) == self.me


class ShardCoordinator:
    """Keeps this scraper's share of the targets current; see the module docstring."""

    def __init__(
        self,
        registry: Registry,
        scraper_id: str,
        *,
        vnodes: int = DEFAULT_VNODES,
        info: dict | None = None,
        extra_targets: Callable[[], list[Target]] | None = None,
        settle_s: float = 0.2,
        absent_grace_s: float | None = None,
    ) -> None:
        self.registry = registry
        self.me = scraper_id
        self.vnodes = vnodes
        self.info = {"vnodes": vnodes, **(info or {})}
        self.extra_targets = extra_targets
        self.settle_s = settle_s
        self.absent_grace_s = absent_grace_s if absent_grace_s is not None else max(
            2.0, registry.zk._session_timeout / 1000.0  # noqa: SLF001 - the negotiated-for timeout
        )
        self.assignment = Assignment(me=scraper_id, ring=ScraperRing((), vnodes=vnodes))
        self.updated = asyncio.Event()
        self._dirty = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._ring_cache: ScraperRing | None = None
        self._owner_cache: dict[str, str | None] = {}
        # one worker: computations run one at a time and in order
        self._executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix=f"ring-{scraper_id}")
        self._absent_since: float | None = None
        self._joined = False
        self._listeners: list[Callable[[Assignment], object]] = []

    # -- lifecycle ----------------------------------------------------------------------------

    async def start(self, connect: bool = True, ready_timeout: float = 15.0) -> None:
        """Connect (unless the registry runs already), join the scrapers, compute the first share."""
        loop = asyncio.get_running_loop()
        if connect:
            await loop.run_in_executor(None, self.registry.start)
        self.registry.add_listener(self._on_view, loop)
        await loop.run_in_executor(None, self.registry.join_scrapers, self.me, self.info)
        self._joined = True
        log.info("joined the scraper ring", extra={"scraper": self.me, "vnodes": self.vnodes})
        # wait (bounded) until our own node shows in the watched view, so the first share is real
        deadline = loop.time() + ready_timeout
        while self.me not in self.registry.view.scrapers and loop.time() < deadline:
            await asyncio.sleep(0.05)
        await self._recompute()
        self._task = asyncio.create_task(self._run(), name=f"shard-coordinator-{self.me}")

    async def stop(self, close_registry: bool = True) -> None:
        """Leave the ring first (others take our targets at once), then close the session."""
        self._joined = False
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self.registry.remove_listener(self._on_view)
        self._executor.shutdown(wait=False)
        loop = asyncio.get_running_loop()
        with contextlib.suppress(Exception):
            await loop.run_in_executor(None, self.registry.leave_scrapers, self.me)
        if close_registry:
            await loop.run_in_executor(None, self.registry.stop)
        log.info("left the scraper ring", extra={"scraper": self.me})

    def add_listener(self, callback: Callable[[Assignment], object]) -> None:
        """Called in the event loop with each new assignment."""
        self._listeners.append(callback)

    def refresh(self) -> None:
        """Recompute soon (e.g. the static targets file changed)."""
        self._dirty.set()

    # -- internals ----------------------------------------------------------------------------

    def _on_view(self, view: RegistryView) -> None:
        self._dirty.set()

    async def _run(self) -> None:
        while True:
            timeout = None
            if self._absent_since is not None:
                timeout = max(0.05, self._absent_since + self.absent_grace_s - time.monotonic())
            try:
                await asyncio.wait_for(self._dirty.wait(), timeout)
            except TimeoutError:
                pass
            await asyncio.sleep(self.settle_s)  # let a burst of watch events land
            self._dirty.clear()
            try:
                await self._recompute()
            except Exception:  # noqa: BLE001 - keep the last assignment, try again on the next change
                log.exception("could not recompute the assignment", extra={"scraper": self.me})

    def _ring_for(self, ids: tuple[str, ...]) -> ScraperRing:
        if self._ring_cache is None or self._ring_cache.members != tuple(sorted(set(ids))):
            self._ring_cache = ScraperRing(ids, vnodes=self.vnodes)
            self._owner_cache = {}
        return self._ring_cache

    def _compute(self, view: RegistryView) -> Assignment:
        """Ring and share for a view (CPU-bound: runs in an executor thread)."""
        targets = list(view.targets())
        if self.extra_targets is not None:
            seen = {t.key for t in targets}
            targets += [t for t in self.extra_targets() if t.key not in seen]
        targets.sort(key=lambda t: t.key)
        ring = self._ring_for(view.scrapers)
        owners = self._owner_cache
        owned = []
        for t in targets:
            owner = owners.get(t.key)
            if owner is None:
                owner = owners[t.key] = ring.owner(t.key)
            if owner == self.me:
                owned.append(t)
        if len(owners) > 2 * len(targets) + 1000:  # forget targets long gone
            live = {t.key for t in targets}
            self._owner_cache = {k: v for k, v in owners.items() if k in live}
        return Assignment(
            me=self.me, ring=ring, targets=tuple(targets), owned=tuple(owned),
            connected=view.connected, view_version=view.version,
        )

    async def _recompute(self) -> None:
        view = self.registry.view
        if self._joined and self.me not in view.scrapers:
            now = time.monotonic()
            if self._absent_since is None:
                self._absent_since = now
                log.warning("this scraper is missing from the live scrapers; keeping its share for now",
                            extra={"scraper": self.me, "grace_s": self.absent_grace_s})
            if now - self._absent_since < self.absent_grace_s:
                return
        elif self._absent_since is not None:
            self._absent_since = None
        new = await asyncio.get_running_loop().run_in_executor(self._executor, self._compute, view)
        old = self.assignment
        changed = new.owned != old.owned or new.ring != old.ring
        self.assignment = new
        if changed:
            gained = new.owned_keys - old.owned_keys
            lost = old.owned_keys - new.owned_keys
            log.info(
                "assignment changed",
                extra={"scraper": self.me, "scrapers": len(new.ring), "targets": len(new.targets),
                       "owned": len(new.owned), "gained": len(gained), "released": len(lost)},
            )
            self.updated.set()
            for cb in list(self._listeners):
                try:
                    cb(new)
                except Exception:  # noqa: BLE001
                    log.exception("assignment listener failed")

    def is_recorder(self) -> bool:
        """True on the one scraper that records fleet-wide series (the owner of a fixed key)."""
        return self.assignment.is_owner(POOL_MEMBERS_KEY)
