"""A running instance describes itself as JSON, for ``ringmon pools --url`` and ``ringmon status --url``.

``GET /-/pools`` (both modes): each pool with its running (ALIVE) and STOPPING members, hosts
up and down by their last scrape, and its scrape settings - the rows ``ringmon pools``
prints. ``GET /-/status`` (standalone; the cluster's web server has its own): one check per
part of the process (storage, scraper, rollup job, alerter, web server), each with ``ok``
and a one-line detail, and the write lag (age of the newest and the stalest stored ``up``
sample), computed from the process's own metrics, its targets and its store.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry

from web.providers import PoolsProvider, QueryEngine, TargetsProvider, coerce_pool, coerce_target


def pool_rows(pools: Iterable[Any]) -> list[dict[str, Any]]:
    """The pools provider's summaries as ``ringmon pools`` rows."""
    rows = []
    for p in map(coerce_pool, pools):
        rows.append({
            "pool": p.name,
            "running": p.running,
            "stopping": sum(1 for h in p.hosts if h.status == "STOPPING"),
            "members": len(p.hosts),
            "up": p.up,
            "down": p.down,
            **dict(p.settings),
        })
    return sorted(rows, key=lambda r: r["pool"])


def metric_sums(registries: Iterable[CollectorRegistry]) -> dict[str, float]:
    """Each sample name's sum over its label sets, from the process's registries."""
    out: dict[str, float] = {}
    for reg in registries:
        for family in reg.collect():
            for s in family.samples:
                out[s.name] = out.get(s.name, 0.0) + float(s.value)
    return out


def rollup_detail(m: Mapping[str, float]) -> str:
    """The rollup job's status line from its metrics (standalone's /-/status, ``ringmon status``)."""
    lag = m.get("ringmon_rollup_lag_seconds")
    return ((f"rollup lag {lag:.0f}s" if lag is not None else "rollup lag unknown")
            + f", {m.get('ringmon_rollup_shards_held', 0):g} shards held"
            + f", {m.get('ringmon_rollup_errors_total', 0):g} errors")


def alerter_detail(m: Mapping[str, float]) -> str:
    """The alerter's status line from its metrics (standalone's /-/status, ``ringmon status``)."""
    return (f"{m.get('ringmon_rule_groups_owned', 0):g} rule groups owned, "
            f"{m.get('ringmon_notifications_total', 0):g} notifications sent, "
            f"{m.get('ringmon_notifications_failed_total', 0):g} failed attempts, "
            f"{m.get('ringmon_notifications_undelivered_total', 0):g} given up")


@dataclass
class StatusCheck:
    component: str
    address: str
    ok: bool
    detail: str


@dataclass
class InstanceStatus:
    """The parts of one standalone process, read from what it already has."""

    targets: TargetsProvider
    engine: QueryEngine
    registries: tuple[CollectorRegistry, ...]
    storage: str  # e.g. "SQLite data/ringmon.db"
    address: str  # where the web server listens
    name: str = "standalone"

    async def document(self) -> dict[str, Any]:
        m = metric_sums(self.registries)
        targets = [coerce_target(t) for t in await self.targets()]
        up = sum(1 for t in targets if t.health == "up")
        down = sum(1 for t in targets if t.health == "down")
        queue = m.get("ringmon_scraper_writer_queue_depth", 0.0)
        checks = [
            StatusCheck("storage", self.storage, True, "answers queries"),
            StatusCheck(self.name, self.address, True,
                        f"scrapes {len(targets)} targets ({up} up, {down} down), writer queue {queue:g}"),
        ]
        if "ringmon_rollup_shards_held" in m:  # the rollup job runs in this process
            checks.append(StatusCheck("rollup", self.address, True, rollup_detail(m)))
        if "ringmon_rule_evaluations_total" in m or "ringmon_notifications_total" in m:
            checks.append(StatusCheck("alerter", self.address, True, alerter_detail(m)))
        checks.append(StatusCheck("web", self.address, True,
                                  f"{m.get('ringmon_web_requests_total', 0):g} requests served"))
        write_lag: dict[str, Any] = {"writer_queue_depth": queue}
        try:
            write_lag.update(await self._write_lag())
        except Exception as exc:  # noqa: BLE001 - the store failing is the finding
            checks[0] = StatusCheck("storage", self.storage, False, f"cannot read up: {type(exc).__name__}: {exc}")
        return {"checks": [asdict(c) for c in checks], "write_lag": {self.name: write_lag}}

    async def _write_lag(self) -> dict[str, float | None]:
        now_ms = int(time.time() * 1000)
        res = await self.engine.instant_query("max by (job, instance) (timestamp(up))", now_ms)
        last = [float(s.values[-1]) for s in res.series if len(s.values)]
        age: Callable[[float], float] = lambda t: round(now_ms / 1000 - t, 1)  # noqa: E731
        return {"newest_sample_age_s": age(max(last)) if last else None,
                "stalest_target_age_s": age(min(last)) if last else None}


def add_status_routes(app: web.Application, pools: PoolsProvider, status: InstanceStatus | None = None) -> None:
    """Mount ``/-/pools`` and, given a standalone's ``status``, ``/-/status``."""

    async def pools_doc(request: web.Request) -> web.Response:
        return web.json_response(pool_rows(await pools()))

    app.router.add_get("/-/pools", pools_doc, name="pools_json")
    if status is not None:

        async def status_doc(request: web.Request) -> web.Response:
            return web.json_response(await status.document())

        app.router.add_get("/-/status", status_doc, name="status")
