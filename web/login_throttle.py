"""How many password checks a login form allows: per (user, client address), growing delays.

Each key, ``user@address`` and the address alone, counts its failed logins. The first
``free_failures`` cost nothing; from then on each failure makes the key wait
``base_delay_s * 2**k`` (k = failures beyond the free ones), at most ``max_delay_s``. A
stranger's failures therefore slow only the stranger: the same user from another address
is not affected. ``begin`` counts an attempt as a failure *before* the password is checked
(no await in between, so parallel requests cannot all pass a check made before any of them
counted); a correct password then clears both keys. An address alone gets
``address_factor`` times the free failures (several users behind one NAT, or one user
trying a few names). State is per process and bounded: at most ``max_keys`` keys in a
``cachetools.LRUCache``, the least recently used forgotten first.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from cachetools import LRUCache


@dataclass
class _Key:
    failures: int = 0
    not_before: float = 0.0  # monotonic time of the next allowed attempt
    last: float = 0.0


@dataclass(frozen=True)
class Attempt:
    """An attempt ``begin`` let through; pass it to ``succeeded`` when the password matched."""

    keys: tuple[str, ...]


@dataclass
class LoginThrottle:
    free_failures: int = 5
    base_delay_s: float = 30.0
    max_delay_s: float = 900.0
    address_factor: int = 4
    forget_after_s: float = 3600.0  # a key without failures for this long starts afresh
    max_keys: int = 100_000
    _keys: LRUCache[str, _Key] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._keys = LRUCache(maxsize=self.max_keys)

    def _free(self, key: str) -> int:
        return self.free_failures * (self.address_factor if key.startswith("addr:") else 1)

    def delay_after(self, failures: int, free: int) -> float:
        """Seconds a key waits after its ``failures``-th failure."""
        if failures < free:
            return 0.0
        return min(self.max_delay_s, self.base_delay_s * 2.0 ** min(failures - free, 40))

    def _get(self, key: str, now: float) -> _Key:
        k = self._keys.get(key)  # a read marks the key as the most recently used
        if k is None or (now - k.last > self.forget_after_s and now >= k.not_before):
            k = _Key()
            self._keys[key] = k  # when full, the least recently used key is forgotten
        return k

    def begin(self, user: str, address: str, now: float | None = None) -> Attempt | float:
        """An ``Attempt`` (already counted as a failure), or the seconds to wait when refused."""
        t = time.monotonic() if now is None else now
        keys = (f"user:{user}@{address}", f"addr:{address}")
        states = [self._get(k, t) for k in keys]
        wait = max(s.not_before - t for s in states)
        if wait > 0:
            return wait
        for key, s in zip(keys, states, strict=True):
            s.failures += 1
            s.last = t
            s.not_before = t + self.delay_after(s.failures, self._free(key))
        return Attempt(keys)

    def succeeded(self, attempt: Attempt) -> None:
        for key in attempt.keys:
            self._keys.pop(key, None)
