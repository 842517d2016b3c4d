"""The scraper ring: which scraper owns which target, before bounded-load overrides.

Every scraper builds the same ``uhashring.HashRing`` over the ids of the live scrapers
(``<root>/scrapers/*`` in ZooKeeper). A target's ring owner is the scraper its key
(``pool/host:port``) maps to; identical inputs give identical rings in every process, and a
scraper joining or leaving moves only the targets that land on, or leave from, that
scraper. The scraper that actually scrapes a target is its ring owner unless the shared
overrides (``discovery.balance``, ``<root>/ring/overrides``) name another one: the ring
alone cannot hold max/mean <= 1.10 at 200 scrapers (table below), the overrides cap it.

``DEFAULT_VNODES`` = 1000 was chosen with ``bench/ring_sim.py`` (100,000 targets, worst of
3 scraper-id sets; goal max/mean <= 1.10 and moved <= 1.2/N). The pure ring::

    scrapers  max/mean  floor*  moved on join  moved on leave  1.2/N   ring build
          10     1.074   1.018         0.0926          0.1016  0.120      14 ms
          50     1.069   1.060         0.0198          0.0206  0.024      76 ms
         200     1.144   1.118         0.0049          0.0053  0.006     309 ms

    * floor: keys hashed straight to uniformly random scrapers (no ring at all). At 200
      scrapers each owns ~500 targets and binomial noise alone puts the fullest at
      ~1.12 x mean, so no placement by key hash can reach 1.10 there; vnodes only remove
      the ring's own share of the imbalance (500 vnodes: 1.186, 2000: 1.23, 4000: 1.16 -
      dominated by key noise, while build time grows linearly). Any stateless scheme in
      which a leave moves only the leaver's keys is a per-key preference order over
      scrapers, so its shares are binomial too: reaching 1.10 needs state (the overrides),
      which bring max/mean to 1.05 at 10, 50 and 200 scrapers (see discovery/balance.py).

Moves are always only to a joining scraper or from a leaving one (0 stray moves).
``walk(key)`` lists the scrapers in the order they would own ``key`` as owners leave: the
overrides send a shed target to the first of them with room.
"""

from __future__ import annotations

import hashlib
from bisect import bisect
from collections.abc import Iterable, Iterator, Sequence
from typing import TypeVar, cast

from uhashring import HashRing

from discovery.target import Target

DEFAULT_VNODES = 1000

T = TypeVar("T", bound=Target)


def _hash_key(key: str) -> int:
    """128-bit md5 of the key (uhashring's own scheme, spelled out so every process agrees)."""
    return int.from_bytes(hashlib.md5(key.encode("utf-8"), usedforsecurity=False).digest(), "big")


class ScraperRing:
    """A consistent-hash ring over scraper ids."""

    def __init__(self, scraper_ids: Iterable[str] = (), vnodes: int = DEFAULT_VNODES) -> None:
        if vnodes < 1:
            raise ValueError(f"vnodes must be at least 1, got {vnodes}")
        self.vnodes = vnodes
        self.members: tuple[str, ...] = tuple(sorted(set(scraper_ids)))
        self._ring = HashRing(nodes=list(self.members), vnodes=vnodes, hash_fn=_hash_key)
        # the continuum as two parallel lists (uhashring's points, sorted): fast batch
        # lookups and walks along the ring that agree with ``HashRing.get_node``
        points = self._ring.get_points()
        self._points: list[int] = [p for p, _ in points]
        self._point_owner: list[str] = [n for _, n in points]

    def __len__(self) -> int:
        return len(self.members)

    def __contains__(self, scraper_id: object) -> bool:
        return scraper_id in self.members

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ScraperRing) and (self.members, self.vnodes) == (other.members, other.vnodes)

    def __hash__(self) -> int:
        return hash((self.members, self.vnodes))

    def __repr__(self) -> str:
        return f"ScraperRing({list(self.members)!r}, vnodes={self.vnodes})"

    def owner(self, key: str) -> str | None:
        """The scraper that owns ``key`` (None on an empty ring)."""
        if not self.members:
            return None
        return cast(str, self._ring.get_node(key))  # uhashring is untyped

    def owners(self, keys: Iterable[str]) -> list[str]:
        """``owner(k)`` for each key, in order (the same answers, without per-call overhead)."""
        points, point_owner = self._points, self._point_owner
        if not points:
            return [None for _ in keys]  # type: ignore[misc]
        n = len(points)
        out = []
        for k in keys:
            pos = bisect(points, int.from_bytes(hashlib.md5(k.encode("utf-8"), usedforsecurity=False).digest(), "big"))
            out.append(point_owner[pos if pos < n else 0])
        return out

    def walk(self, key: str) -> Iterator[str]:
        """The distinct scrapers met going clockwise from ``key``: its owner first, then the
        scraper that would own it if the owner left, and so on (every member once)."""
        points, point_owner = self._points, self._point_owner
        n = len(points)
        if not n:
            return
        pos = bisect(points, _hash_key(key))
        seen: set[str] = set()
        for i in range(n):
            node = point_owner[(pos + i) % n]
            if node not in seen:
                seen.add(node)
                yield node
                if len(seen) == len(self.members):
                    return

    def assignment(self, targets: Sequence[T], me: str) -> list[T]:
        """The targets ``me`` scrapes: those whose key maps to ``me``."""
        if me not in self.members:
            return []
        return [t for t in targets if self._ring.get_node(t.key) == me]

    def split(self, targets: Sequence[T]) -> dict[str, list[T]]:
        """Every scraper's share (scrapers without targets included, with an empty list)."""
        out: dict[str, list[T]] = {m: [] for m in self.members}
        if not self.members:
            return out
        for t in targets:
            out[self._ring.get_node(t.key)].append(t)
        return out

    def counts(self, keys: Iterable[str]) -> dict[str, int]:
        """How many of ``keys`` each scraper owns."""
        out = dict.fromkeys(self.members, 0)
        if self.members:
            for k in keys:
                out[self._ring.get_node(k)] += 1
        return out
