"""What the web pages read besides the query engine: pool summaries and target health.

The CLI wires two async callables into ``create_app``: ``pools_provider()`` and
``targets_provider()``. They may return these dataclasses or plain dicts with the same
keys; ``coerce_pool`` / ``coerce_target`` turn either into the dataclass the templates use
(unknown keys are ignored, missing ones take defaults).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from query.result import QueryResult


@dataclass(frozen=True)
class HostHealth:
    """One host of a pool as the pools page shows it."""

    address: str
    status: str = "ALIVE"  # serverset status from discovery
    health: str = "unknown"  # up | down | unknown (from the last scrape)
    last_scrape: float | None = None  # unix seconds
    last_error: str = ""


@dataclass(frozen=True)
class PoolSummary:
    """A pool: its name, how many servers are running (ALIVE members), and its hosts."""

    name: str
    running: int = 0
    hosts: tuple[HostHealth, ...] = ()
    settings: Mapping[str, Any] = field(default_factory=dict)

    @property
    def up(self) -> int:
        return sum(1 for h in self.hosts if h.health == "up")

    @property
    def down(self) -> int:
        return sum(1 for h in self.hosts if h.health == "down")


@dataclass(frozen=True)
class TargetHealth:
    """A scrape target's last outcome as the targets page shows it."""

    key: str
    pool: str = ""
    address: str = ""
    url: str = ""
    health: str = "unknown"  # up | down | unknown
    last_scrape: float | None = None  # unix seconds of the last attempt
    last_duration_s: float | None = None
    last_error: str = ""
    owner: str = ""  # the scraper that owns the target
    # samples dropped for their timestamps since the scrape loop started, per reason (scraper.bounds)
    samples_dropped: Mapping[str, int] = field(default_factory=dict)
    last_drop: str = ""  # what the last scrape that dropped samples dropped, and why

    @property
    def dropped_total(self) -> int:
        return sum(self.samples_dropped.values())

    @property
    def link_url(self) -> str:
        """The URL if it is safe to put in an href (http or https only), else empty."""
        u = self.url.strip()
        return u if u.lower().startswith(("http://", "https://")) else ""


PoolsProvider = Callable[[], Awaitable[Sequence["PoolSummary | Mapping[str, Any]"]]]
TargetsProvider = Callable[[], Awaitable[Sequence["TargetHealth | Mapping[str, Any]"]]]


class QueryEngine(Protocol):
    """The part of ``query.engine.Engine`` the pages use."""

    async def range_query(self, expr: str, start_ms: int, end_ms: int, step_ms: int) -> QueryResult: ...

    async def instant_query(self, expr: str, time_ms: int) -> QueryResult: ...


def _pick(cls: type, data: Mapping[str, Any]) -> dict[str, Any]:
    names = {f.name for f in dataclasses.fields(cls)}
    return {k: v for k, v in data.items() if k in names}


def _num(value: Any) -> float | None:
    if value is None or value == "":
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _when(value: Any) -> float | None:
    """A unix time; 0 or negative means "never" (the scraper's convention)."""
    t = _num(value)
    return t if t is not None and t > 0 else None


def coerce_host(obj: HostHealth | Mapping[str, Any]) -> HostHealth:
    if isinstance(obj, HostHealth):
        return obj
    d = _pick(HostHealth, obj)
    d["address"] = str(d.get("address", ""))
    d["last_scrape"] = _when(d.get("last_scrape"))
    for k in ("status", "health", "last_error"):
        if k in d:
            d[k] = "" if d[k] is None else str(d[k])
    return HostHealth(**d)


def coerce_pool(obj: PoolSummary | Mapping[str, Any]) -> PoolSummary:
    if isinstance(obj, PoolSummary):
        return obj
    d = _pick(PoolSummary, obj)
    d["name"] = str(d.get("name", ""))
    d["running"] = int(d.get("running") or 0)
    d["hosts"] = tuple(coerce_host(h) for h in d.get("hosts") or ())
    d["settings"] = dict(d.get("settings") or {})
    return PoolSummary(**d)


def coerce_target(obj: TargetHealth | Mapping[str, Any]) -> TargetHealth:
    if isinstance(obj, TargetHealth):
        return obj
    d = _pick(TargetHealth, obj)
    # The scraper's own health record names the key "target".
    key = d.get("key") or obj.get("target") or f"{d.get('pool', '')}/{d.get('address', '')}"
    d["key"] = str(key)
    d["last_scrape"] = _when(d.get("last_scrape"))
    d["last_duration_s"] = _num(d.get("last_duration_s"))
    for k in ("pool", "address", "url", "health", "last_error", "owner", "last_drop"):
        if k in d:
            d[k] = "" if d[k] is None else str(d[k])
    dropped = d.get("samples_dropped")
    d["samples_dropped"] = ({str(k): int(v) for k, v in dropped.items()} if isinstance(dropped, Mapping) else {})
    return TargetHealth(**d)


async def targets_from_store(
    engine: QueryEngine,
    *,
    now_ms: int,
    lookback: str = "5m",
    owner_of: Callable[[str], str] | None = None,
) -> list[TargetHealth]:
    """Target health read back from the store, for a web process without its own scraper.

    Every scrape writes ``up`` and ``scrape_duration_seconds`` (job = pool, instance =
    address); the newest of each within ``lookback`` gives health, last scrape time and
    duration. ``owner_of(key)`` names the scraper that owns a target (e.g. from the ring).
    """
    up = await engine.instant_query(f"last_over_time(up[{lookback}])", now_ms)
    when = await engine.instant_query(f"timestamp(last_over_time(up[{lookback}]))", now_ms)
    took = await engine.instant_query(f"last_over_time(scrape_duration_seconds[{lookback}])", now_ms)

    def key(labels: Mapping[str, str]) -> tuple[str, str]:
        return labels.get("job", ""), labels.get("instance", "")

    def latest(result: QueryResult) -> dict[tuple[str, str], float]:
        return {key(s.labels): float(s.values[-1]) for s in result.series if len(s.values)}

    seen_at, durations = latest(when), latest(took)
    out = []
    for (job, instance), value in sorted(latest(up).items()):
        k = f"{job}/{instance}"
        out.append(
            TargetHealth(
                key=k,
                pool=job,
                address=instance,
                health="up" if value == 1 else "down",
                last_scrape=seen_at.get((job, instance)),
                last_duration_s=durations.get((job, instance)),
                owner=owner_of(k) if owner_of else "",
            )
        )
    return out
