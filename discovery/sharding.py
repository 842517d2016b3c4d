"""Which targets this scraper owns, kept current as the registry changes.

``ShardCoordinator`` joins ``<root>/scrapers/<id>``, watches the registry and, after each
burst of changes (coalesced for ``settle_s``), rebuilds the ring over the live scraper ids
and computes this scraper's share of the targets: those whose owner is this scraper, where
the owner is the target's override in ``<root>/ring/overrides`` when that scraper is alive,
else its ring owner (``discovery.balance``). Consumers read ``assignment`` and wait on
``updated`` (an ``asyncio.Event``) to resync their scrape loops; nothing here knows how
scraping works.

The leader (the lowest live scraper id) also plans: after each settled change it runs
``plan_overrides`` from the stored overrides (and the ring they were planned on) and, when
the plan differs, writes it with a version check, so a stale leader cannot clobber a newer
plan. Until the new plan is stored, followers apply the stored overrides to the new ring:
a survivor's targets never move, and a leaver's targets go to their ring successors, then
perhaps once more to a scraper below cap when the plan arrives. A new leader (the old one
died) reads the stored plan and goes on from it. The leader plans with targets that vanished
less than ``target_grace_s`` ago still counted, so a flap (an agent's session expiring and
its registration coming back) leaves the plan, and so every share, as it was.

Fault behaviour:
- ZooKeeper unreachable (SUSPENDED/LOST): the registry keeps its last view and overrides,
  so the assignment does not change and scraping goes on; the leader does not plan.
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
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace

from kazoo.exceptions import KazooException

from discovery.balance import (
    DEFAULT_CAP_FACTOR,
    OverridesDoc,
    OverridesTooLargeError,
    plan_overrides,
    resolve_owner,
)
from discovery.registry import Registry, RegistryError, RegistryView, StaleOverridesError
from discovery.ring import DEFAULT_VNODES, ScraperRing
from discovery.target import Target

log = logging.getLogger("ringmon.discovery.sharding")

# The ring owner of this key records the pool member counts (one writer at steady state).
POOL_MEMBERS_KEY = "ringmon/pool-members-recorder"


@dataclass(frozen=True)
class Assignment:
    """One consistent answer to "what do I scrape": the ring, its overrides, every target, my share."""

    me: str
    ring: ScraperRing
    targets: tuple[Target, ...] = ()
    owned: tuple[Target, ...] = ()
    connected: bool = False
    view_version: int = 0
    computed_at: float = field(default_factory=time.time)
    overrides: Mapping[str, str] = field(default_factory=dict, hash=False)  # key -> scraper (stored plan)
    overrides_version: int = -1  # znode version of the stored plan (-1: none)
    planned_for: tuple[str, ...] = ()  # the scrapers the stored plan was made for

    @property
    def owned_keys(self) -> frozenset[str]:
        return frozenset(t.key for t in self.owned)

    @property
    def plan_current(self) -> bool:
        """True when the stored plan was made for the live scrapers (no leader work pending)."""
        return self.planned_for == self.ring.members

    def owner(self, key: str) -> str | None:
        """Who scrapes ``key``: its override when that scraper is alive, else its ring owner."""
        return resolve_owner(self.ring, self.overrides, key)

    def is_owner(self, key: str) -> bool:
        return self.owner(key) == self.me


class ShardCoordinator:
    """Keeps this scraper's share of the targets current; see the module docstring."""

    def __init__(
        self,
        registry: Registry,
        scraper_id: str,
        *,
        vnodes: int = DEFAULT_VNODES,
        cap_factor: float = DEFAULT_CAP_FACTOR,
        info: dict | None = None,
        extra_targets: Callable[[], list[Target]] | None = None,
        settle_s: float = 0.2,
        absent_grace_s: float | None = None,
        target_grace_s: float = 30.0,
    ) -> None:
        self.registry = registry
        self.me = scraper_id
        if cap_factor < 1.0:
            raise ValueError(f"cap_factor must be at least 1.0, got {cap_factor}")
        self.vnodes = vnodes
        self.cap_factor = cap_factor
        self.info = {"vnodes": vnodes, **(info or {})}
        self.extra_targets = extra_targets
        self.settle_s = settle_s
        self.target_grace_s = target_grace_s
        self.absent_grace_s = absent_grace_s if absent_grace_s is not None else max(
            2.0, registry.zk._session_timeout / 1000.0  # noqa: SLF001 - the negotiated-for timeout
        )
        self.assignment = Assignment(me=scraper_id, ring=ScraperRing((), vnodes=vnodes))
        self.updated = asyncio.Event()
        self._dirty = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._ring_cache: ScraperRing | None = None
        self._owner_cache: dict[str, str | None] = {}
        self._other_rings: dict[tuple[tuple[str, ...], int], ScraperRing] = {}  # rings of earlier plans
        self._doc = OverridesDoc()  # the stored plan, as last read
        self._doc_data: bytes | None = None
        self._plan_signature: tuple | None = None  # inputs of the last plan this leader made
        self._written_version: int | None = None  # the version this leader wrote, until the watch shows it
        self._doc_invalid = False  # the stored data did not decode: the leader rewrites it
        self._planned_keys: frozenset[str] = frozenset()  # what the leader planned on last
        self._gone: dict[str, float] = {}  # targets that vanished, and since when (leader only)
        self._loop: asyncio.AbstractEventLoop | None = None
        # one worker: computations run one at a time and in order
        self._executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix=f"ring-{scraper_id}")
        self._absent_since: float | None = None
        self._joined = False
        self._listeners: list[Callable[[Assignment], object]] = []

    # -- lifecycle ----------------------------------------------------------------------------

    async def start(self, connect: bool = True, ready_timeout: float = 15.0) -> None:
        """Connect (unless the registry runs already), join the scrapers, compute the first share."""
        loop = self._loop = asyncio.get_running_loop()
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

    def _ring_of(self, members: tuple[str, ...], vnodes: int) -> ScraperRing:
        """The ring a stored plan was made on (kept for the next plans)."""
        if self._ring_cache is not None and (self._ring_cache.members, self._ring_cache.vnodes) == (members, vnodes):
            return self._ring_cache
        ring = self._other_rings.get((members, vnodes))
        if ring is None:
            ring = ScraperRing(members, vnodes=vnodes)
            while len(self._other_rings) >= 3:
                self._other_rings.pop(next(iter(self._other_rings)))
            self._other_rings[(members, vnodes)] = ring
        return ring

    def _stored_plan(self, view: RegistryView) -> OverridesDoc:
        """The overrides of the view, decoded once per znode version; bad data keeps the last good."""
        data, version = view.ring_overrides, view.ring_overrides_version
        if version == self._doc.version and data == self._doc_data:
            return self._doc
        if self._written_version is not None and 0 <= version < self._written_version:
            return self._doc  # our own write has not come back through the watch yet
        self._written_version = None
        self._doc_invalid = False
        try:
            doc = OverridesDoc.decode(data, version)
        except ValueError as exc:
            self._doc_invalid = True
            log.error("invalid ring overrides in zookeeper, keeping the last good ones",
                      extra={"scraper": self.me, "error": str(exc), "version": version})
            doc = replace(self._doc, version=version)  # the leader overwrites it at this version
        self._doc, self._doc_data = doc, data
        return doc

    def _is_leader(self, view: RegistryView) -> bool:
        return self._joined and view.connected and bool(view.scrapers) and view.scrapers[0] == self.me

    def _planning_keys(self, targets: list[Target]) -> list[str]:
        """The live targets plus those gone for less than ``target_grace_s`` (leader only)."""
        now = time.monotonic()
        current = {t.key for t in targets}
        for k in self._planned_keys - current:
            self._gone.setdefault(k, now)
        for k in [k for k, since in self._gone.items() if k in current or now - since >= self.target_grace_s]:
            del self._gone[k]
        if self._gone and self._loop is not None:  # plan again once the oldest grace is over
            wait = max(0.0, min(self._gone.values()) + self.target_grace_s - now) + 0.05
            self._loop.call_soon_threadsafe(self._loop.call_later, wait, self._dirty.set)
        keys = current | self._gone.keys()
        self._planned_keys = frozenset(keys)
        return sorted(keys)

    def _plan(self, view: RegistryView, ring: ScraperRing, keys: list[str], doc: OverridesDoc) -> OverridesDoc:
        """Leader only: plan from the stored overrides and store the plan when it changed."""
        signature = (ring.members, ring.vnodes, hash(tuple(keys)), doc.version)
        if signature == self._plan_signature:
            return doc
        previous_ring = self._ring_of(doc.members, doc.vnodes or ring.vnodes) if doc.members else None
        started = time.perf_counter()
        plan = plan_overrides(ring, keys, doc.overrides, self.cap_factor, previous_ring=previous_ring)
        plan_s = time.perf_counter() - started
        self._plan_signature = signature
        if plan == dict(doc.overrides) and doc.members == ring.members and not self._doc_invalid:
            return doc
        new = OverridesDoc(ring.members, plan, self.cap_factor, ring.vnodes, len(keys))
        try:
            data = new.encode()
            version = self.registry.write_overrides(data, doc.version)
        except StaleOverridesError:
            # someone wrote first (a leader of another view): its data arrives by the watch
            log.info("ring overrides changed under us; planning again from the stored ones",
                     extra={"scraper": self.me, "read_version": doc.version})
            self._plan_signature = None
            return doc
        except OverridesTooLargeError as exc:
            log.error("cannot store the ring overrides", extra={"scraper": self.me, "error": str(exc)})
            return doc
        except (KazooException, RegistryError, OSError) as exc:
            log.warning("could not store the ring overrides; retrying", extra={"scraper": self.me, "error": str(exc)})
            self._plan_signature = None
            if self._loop is not None:
                self._loop.call_soon_threadsafe(self._dirty.set)
            return doc
        log.info("ring overrides planned", extra={
            "scraper": self.me, "scrapers": len(ring), "targets": len(keys), "overrides": len(plan),
            "bytes": len(data), "version": version, "plan_ms": round(plan_s * 1000, 1)})
        stored = replace(new, version=version)
        self._doc, self._doc_data, self._written_version = stored, data, version
        self._doc_invalid = False
        return stored

    def _compute(self, view: RegistryView) -> Assignment:
        """Ring, overrides and share for a view (CPU-bound: runs in an executor thread)."""
        targets = list(view.targets())
        if self.extra_targets is not None:
            seen = {t.key for t in targets}
            targets += [t for t in self.extra_targets() if t.key not in seen]
        targets.sort(key=lambda t: t.key)
        ring = self._ring_for(view.scrapers)
        doc = self._stored_plan(view)
        if self._is_leader(view):
            doc = self._plan(view, ring, self._planning_keys(targets), doc)
        overrides = doc.overrides
        live = set(ring.members)
        owners = self._owner_cache
        owned = []
        for t in targets:
            owner = overrides.get(t.key)
            if owner is None or owner not in live:
                owner = owners.get(t.key)
                if owner is None:
                    owner = owners[t.key] = ring.owner(t.key)
            if owner == self.me:
                owned.append(t)
        if len(owners) > 2 * len(targets) + 1000:  # forget targets long gone
            keys = {t.key for t in targets}
            self._owner_cache = {k: v for k, v in owners.items() if k in keys}
        return Assignment(
            me=self.me, ring=ring, targets=tuple(targets), owned=tuple(owned),
            connected=view.connected, view_version=view.version,
            overrides=overrides, overrides_version=doc.version, planned_for=doc.members,
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
                       "owned": len(new.owned), "gained": len(gained), "released": len(lost),
                       "overrides": len(new.overrides), "overrides_version": new.overrides_version},
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
