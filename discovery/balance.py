"""Bounded loads on the scraper ring: a small, sticky map of overrides.

The pure ring (``discovery.ring.ScraperRing``) moves only a leaver's or a joiner's targets,
but its shares are as uneven as the key hashes: at 200 scrapers (~500 targets each) the
fullest holds ~1.14 x the mean, and no stateless per-key placement can do better than the
binomial noise of the keys (~1.12 x). So ownership is the ring owner of a target EXCEPT for
a few targets listed in an overrides map ``{target key: scraper id}``, planned by one leader
and shared through ZooKeeper (after Mirrokni, Thorup and Zadimoghaddam, "Consistent
Hashing with Bounded Loads", 2018, made sticky so that a leave moves only the leaver's
targets).

``plan_overrides`` is a pure function of (ring, target keys, previous overrides, the ring
those were planned on, cap factor):

1. every previous override whose scraper is alive and whose target still exists is kept,
   except those of targets whose ring owner just joined (they go to it as on the pure ring);
2. each scraper's load is counted against ``cap = ceil(cap_factor * targets / scrapers)``;
3. a scraper above cap sheds its excess: first targets it did not hold under the previous
   plan (arrivals: a leaver's orphans, a joiner's takings, new targets), then targets
   overridden to it, then its own ring targets; highest key hash first within each group.
   An arrival goes back to its previous holder if that is alive and below cap (done for
   every scraper before any other spill); any other shed target goes to the first scraper
   along its ring walk (its ring owner, then the one that would own it if that left, ...)
   that is below cap.

Hence, with the target set unchanged:
- a leave moves only the leaver's targets: the cap only grows, every survivor's previous
  holdings fit under it, so a survivor sheds only orphans it just received;
- a join moves ~1/N: the joiner takes its ring share (capped; its excess goes back to the
  previous owners), plus the few targets that scrapers still above the lowered cap shed;
  a scraper that was not above the lowered cap loses targets only to the joiner;
- max load <= cap always (receivers are below cap; total capacity >= targets);
- planning the same inputs again returns the same overrides (no churn).

Measured with ``bench/ring_sim.py`` (100,000 targets, worst of 3 scraper-id sets,
``DEFAULT_CAP_FACTOR`` = 1.05, ring vnodes 1000; stateful: plan, one join, one leave;
load average ~3-5 from other work, so plan times are high)::

    scrapers  max/mean  min/mean  moved: join   leave  1.2/N  stray  flap  overrides  znode bytes  plan
          10     1.050     0.918       0.0926  0.0926  0.120      0    45        243        9,447  0.4 s
          50     1.050     0.909       0.0199  0.0204  0.024      0     9        156        7,685  0.3 s
         200     1.051     0.842       0.0052  0.0052  0.006      0     5        601       30,527  0.9 s

    pure ring (no overrides), same runs: max/mean 1.074, 1.069, 1.144
    stray: survivors' targets moved on the leave, after the plan and in the interim
    (followers applying the old overrides to the new ring); must be 0, and is by design
    flap: targets (of 100,000) not back on their scraper after the leaver rejoins

``DEFAULT_CAP_FACTOR`` = 1.05 (``bench/ring_sim.py --cap-factor 1.03 1.05 1.08 --trials 2``):
1.03 doubles the overrides (591 / 443 / 999, up to 45 KB) and spills up to 113 targets on
a join for a balance the goal does not ask for; 1.08 needs no overrides at 10 and 50
scrapers but leaves 200 at 1.081, close to the goal once targets are added between plans.
1.05 keeps a margin under 1.10, overrides under 1% of the targets, and moves within 1.2/N.
Overrides grow a little under churn, then level off: alternating joins and leaves of random
scrapers take them from 282 to 415-542 at 50 scrapers (``--scrapers 50 --churn 40``, no
trend after round ~15) and from 557 to ~810 at 200 (``--scrapers 200 --churn 16``, level
over the last 4 rounds), every step moving < 1.2/N with max/mean <= 1.051.

The document is what the leader writes to ``<root>/ring/overrides`` in ZooKeeper (see
``OverridesDoc.encode``): compact JSON, zlib-compressed above ``COMPRESS_ABOVE`` bytes.
"""

from __future__ import annotations

import hashlib
import json
import math
import zlib
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from discovery.ring import ScraperRing

DEFAULT_CAP_FACTOR = 1.05
FORMAT = 1
COMPRESS_ABOVE = 64 * 1024
MAX_DOC_BYTES = 1_000_000  # ZooKeeper's default jute.maxbuffer is 1 MiB; stay below it


class OverridesTooLargeError(ValueError):
    """The encoded overrides do not fit in one znode."""


def _key_hash(key: str) -> int:
    return int.from_bytes(hashlib.md5(key.encode("utf-8"), usedforsecurity=False).digest(), "big")


def capacity(n_targets: int, n_scrapers: int, cap_factor: float = DEFAULT_CAP_FACTOR) -> int:
    """Most targets one scraper may hold: ``ceil(cap_factor * targets / scrapers)``."""
    if n_scrapers <= 0:
        return 0
    return math.ceil(cap_factor * n_targets / n_scrapers)


def plan_overrides(
    ring: ScraperRing,
    target_keys: Iterable[str],
    previous_overrides: Mapping[str, str],
    cap_factor: float = DEFAULT_CAP_FACTOR,
    *,
    previous_ring: ScraperRing | None = None,
) -> dict[str, str]:
    """The new overrides ``{target key: scraper id}``; see the module docstring.

    ``previous_ring`` is the ring ``previous_overrides`` were planned on (None: ``ring``):
    it tells who held each target before, so that a scraper above cap sheds what it just
    received rather than what it has been scraping. Deterministic: the order of
    ``target_keys`` and of the mapping does not matter."""
    if cap_factor < 1.0:
        raise ValueError(f"cap_factor must be at least 1.0 (room for every target), got {cap_factor}")
    members = ring.members
    keys = sorted(set(target_keys))
    if not members or not keys:
        return {}
    live = set(members)
    home = ring.owners(keys)
    if previous_ring is None or previous_ring.members == members:
        prev_home, prev_live = home, live
    else:
        prev_home, prev_live = previous_ring.owners(keys), set(previous_ring.members)

    joiners = live - prev_live
    owner: list[str] = []
    held_before: list[str | None] = []
    for k, h, ph in zip(keys, home, prev_home, strict=True):
        o = previous_overrides.get(k)
        held_before.append(o if o is not None and o in prev_live else ph)
        # a target whose ring owner just joined goes to it, overridden or not, as on the pure
        # ring (it comes back below if the joiner is full): a scraper that leaves and comes
        # back gets its ring share back instead of leaving it spread by overrides
        owner.append(o if o is not None and o in live and h not in joiners else h)

    cap = capacity(len(keys), len(members), cap_factor)
    load = Counter(owner)
    over = sorted(s for s in members if load[s] > cap)
    if over:
        over_set = set(over)
        held: dict[str, list[int]] = defaultdict(list)
        for i, o in enumerate(owner):
            if o in over_set:
                held[o].append(i)
        for s in over:
            held[s].sort(key=lambda i: (held_before[i] == s, home[i] == s, -_key_hash(keys[i])))
        # first, arrivals go back to the scraper that held them, where it has room (a joiner's
        # excess returns to the previous owners before anyone else's spills can fill them)
        for s in over:
            for i in held[s]:
                if load[s] <= cap or held_before[i] == s:
                    break
                back = held_before[i]
                if back is not None and back in live and load[back] < cap:
                    owner[i] = back
                    load[back] += 1
                    load[s] -= 1
        # then the rest of the excess walks the ring to the first scraper with room
        for s in over:
            excess = load[s] - cap
            for i in (i for i in held[s] if owner[i] == s):
                if excess <= 0:
                    break
                for cand in ring.walk(keys[i]):
                    if cand != s and load[cand] < cap:
                        owner[i] = cand
                        load[cand] += 1
                        load[s] -= 1
                        excess -= 1
                        break
    return {k: o for k, o, h in zip(keys, owner, home, strict=True) if o != h}


def resolve_owner(ring: ScraperRing, overrides: Mapping[str, str], key: str) -> str | None:
    """Who scrapes ``key``: its override when that scraper is alive, else its ring owner."""
    o = overrides.get(key)
    if o is not None and o in ring:
        return o
    return ring.owner(key)


def resolve_owners(ring: ScraperRing, overrides: Mapping[str, str], keys: Iterable[str]) -> list[str | None]:
    """``resolve_owner`` for each key, in order."""
    keys = list(keys)
    live = set(ring.members)
    out: list[str | None] = list(ring.owners(keys))
    if overrides:
        for i, k in enumerate(keys):
            o = overrides.get(k)
            if o is not None and o in live:
                out[i] = o
    return out


def loads(ring: ScraperRing, overrides: Mapping[str, str], keys: Iterable[str]) -> dict[str, int]:
    """Targets per scraper, overrides included (every member listed, idle ones with 0)."""
    out = dict.fromkeys(ring.members, 0)
    for o in resolve_owners(ring, overrides, keys):
        if o is not None:
            out[o] += 1
    return out


@dataclass(frozen=True)
class OverridesDoc:
    """The shared plan: the scrapers it was made for and its overrides.

    ``version`` is the znode version it was read at (-1: no znode), not part of the data."""

    members: tuple[str, ...] = ()
    overrides: Mapping[str, str] = field(default_factory=dict, hash=False)
    cap_factor: float = DEFAULT_CAP_FACTOR
    vnodes: int = 0
    targets: int = 0
    version: int = field(default=-1, compare=False)

    def __len__(self) -> int:
        return len(self.overrides)

    def owner(self, ring: ScraperRing, key: str) -> str | None:
        return resolve_owner(ring, self.overrides, key)

    def loads(self, ring: ScraperRing, keys: Iterable[str]) -> dict[str, int]:
        return loads(ring, self.overrides, keys)

    def encode(self) -> bytes:
        """Compact JSON, overrides grouped by scraper; zlib above ``COMPRESS_ABOVE`` bytes.
        Raises OverridesTooLargeError above ``MAX_DOC_BYTES``."""
        by_scraper: dict[str, list[str]] = defaultdict(list)
        for k, s in self.overrides.items():
            by_scraper[s].append(k)
        doc = {
            "format": FORMAT,
            "members": list(self.members),
            "vnodes": self.vnodes,
            "cap_factor": self.cap_factor,
            "targets": self.targets,
            "overrides": {s: sorted(ks) for s, ks in sorted(by_scraper.items())},
        }
        data = json.dumps(doc, separators=(",", ":"), sort_keys=True).encode()
        if len(data) > COMPRESS_ABOVE:
            data = zlib.compress(data, 9)
        if len(data) > MAX_DOC_BYTES:
            raise OverridesTooLargeError(
                f"{len(self.overrides)} ring overrides encode to {len(data)} bytes, above {MAX_DOC_BYTES}"
            )
        return data

    @classmethod
    def decode(cls, data: bytes | None, version: int = -1) -> "OverridesDoc":
        """The document from znode data (None or empty: no overrides). ValueError when it is
        not one, with what is wrong."""
        if not data:
            return cls(version=version)
        try:
            raw = zlib.decompress(data) if data[:1] != b"{" else data
            doc = json.loads(raw.decode())
        except (zlib.error, UnicodeDecodeError, ValueError) as exc:
            raise ValueError(f"ring overrides are neither JSON nor zlib-compressed JSON: {exc}") from None
        if not isinstance(doc, dict) or doc.get("format") != FORMAT:
            raise ValueError(f"ring overrides: expected an object with format {FORMAT}")
        members, grouped = doc.get("members"), doc.get("overrides")
        if not isinstance(members, list) or not all(isinstance(m, str) for m in members):
            raise ValueError("ring overrides: 'members' must be a list of scraper ids")
        if not isinstance(grouped, dict):
            raise ValueError("ring overrides: 'overrides' must map scraper ids to lists of target keys")
        overrides: dict[str, str] = {}
        for sid, ks in grouped.items():
            if not isinstance(ks, list) or not all(isinstance(k, str) for k in ks):
                raise ValueError(f"ring overrides: the targets of {sid!r} must be a list of keys")
            for k in ks:
                overrides[k] = sid
        try:
            return cls(
                members=tuple(members), overrides=overrides, cap_factor=float(doc.get("cap_factor", DEFAULT_CAP_FACTOR)),
                vnodes=int(doc.get("vnodes", 0)), targets=int(doc.get("targets", 0)), version=version,
            )
        except (TypeError, ValueError) as exc:
            raise ValueError(f"ring overrides: bad number ({exc})") from None
