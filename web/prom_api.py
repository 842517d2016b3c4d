"""The Prometheus HTTP API v1 endpoints about the fleet rather than the samples: targets,
targets/metadata, scrape_pools, metadata, rules, alerts, alertmanagers and status (config,
flags, runtimeinfo, tsdb, walreplay), in Prometheus' shapes.

``add_fleet_api_routes(app, FleetApiSources(...))`` mounts them next to ``query.api``'s;
``cli/`` fills the sources for each mode: standalone from its scrape pool and in-process
alerter, ``ringmon web`` from the scrapers' ``/targets`` and ``/metadata`` documents and the
alerters' HTTP APIs. A missing source answers as a Prometheus with nothing of that kind.
"""

from __future__ import annotations

import os
import re
import socket
import threading
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import yaml
from aiohttp import web

from common.durations import format_duration_ms
from query.api import ApiError, answer, matchers_of, one, success
from query.promjson import go_format_float, go_time

Records = Callable[[], Awaitable[Sequence[Mapping[str, Any]]]]
# (per target, metric or "") -> {"key", "labels", "metadata": [[metric, type, help, unit], ...]} records;
# not per target: records whose labels do not matter (each distinct entry at least once)
MetadataRecords = Callable[[bool, str], Awaitable[Sequence[Mapping[str, Any]]]]
SeriesLabels = Callable[[int, int], Awaitable[Sequence[Mapping[str, str]]]]  # (start ms, end ms) -> label sets

SECRET_KEY_RE = re.compile(r"password|secret|token|credential|auth|users|(?:^|_)key$", re.IGNORECASE)
TSDB_WINDOW_MS = 2 * 3_600_000  # the "head": series seen in the last two hours


@dataclass
class FleetApiSources:
    """Where the fleet endpoints read from; every source is optional."""

    targets: Records | None = None  # scraper health records (scraper.health.TargetHealth.to_dict shape)
    dropped: Records | None = None  # {"pool", "discoveredLabels"} of targets relabelling dropped
    metadata: MetadataRecords | None = None
    rules_status: Callable[[], Awaitable[list[dict]]] | None = None  # RuleManager.status() shape
    alertmanagers: Callable[[], Sequence[str]] | None = None
    head_series: SeriesLabels | None = None  # series with samples in a window, for status/tsdb
    config_file: str = ""
    flags: Mapping[str, str] = field(default_factory=dict)
    retention: str = ""
    started_at: float = field(default_factory=time.time)


def _int_param(params: dict[str, list[str]], name: str, default: int) -> int:
    text = one(params, name)
    if not text:
        return default
    try:
        return int(text)
    except ValueError:
        raise ApiError("bad_data", f"{name} must be a number") from None


class FleetApi:
    """Handlers of the fleet endpoints over one ``FleetApiSources``."""

    def __init__(self, sources: FleetApiSources) -> None:
        self.src = sources

    # -- targets ---------------------------------------------------------------------------------

    async def _active(self) -> list[dict[str, Any]]:
        if self.src.targets is None:
            return []
        out: list[dict[str, Any]] = []
        for rec in await self.src.targets():
            pool = str(rec.get("pool") or "")
            address = str(rec.get("address") or "")
            labels = dict(rec.get("labels") or {"job": pool, "instance": address})
            interval = float(rec.get("interval_s") or 0.0)
            timeout = float(rec.get("timeout_s") or 0.0)
            discovered = dict(rec.get("discovered_labels") or {"__address__": address, "job": pool})
            health = str(rec.get("health") or "unknown")
            url = str(rec.get("url") or "")
            out.append({
                "discoveredLabels": dict(sorted(discovered.items())),
                "labels": dict(sorted(labels.items())),
                "scrapePool": pool,
                "scrapeUrl": url,
                "globalUrl": url,
                "lastError": str(rec.get("last_error") or ""),
                "lastScrape": go_time(rec.get("last_scrape") or None),
                "lastScrapeDuration": float(rec.get("last_duration_s") or 0.0),
                "health": health if health in ("up", "down") else "unknown",
                "scrapeInterval": format_duration_ms(round(interval * 1000)) if interval else "",
                "scrapeTimeout": format_duration_ms(round(timeout * 1000)) if timeout else "",
                # Ringmon's: samples dropped for their own timestamps since the scrape loop started,
                # per reason (scraper.bounds), and what the last such scrape dropped
                "samplesDropped": {str(k): int(v) for k, v in dict(rec.get("samples_dropped") or {}).items()},
                "lastDrop": str(rec.get("last_drop") or ""),
            })
        out.sort(key=lambda t: (t["scrapePool"], t["scrapeUrl"], sorted(t["labels"].items())))
        return out

    async def targets(self, request: web.Request) -> web.StreamResponse:
        async def run(params: dict[str, list[str]]) -> web.Response:
            state = (one(params, "state") or "").lower()
            pool = one(params, "scrapePool") or ""
            data: dict[str, Any] = {"activeTargets": [], "droppedTargets": []}
            if state in ("", "any", "active"):
                data["activeTargets"] = [t for t in await self._active() if not pool or t["scrapePool"] == pool]
            if state in ("", "any", "dropped"):
                dropped = list(await self.src.dropped()) if self.src.dropped is not None else []
                counts: dict[str, int] = {}
                for d in dropped:
                    counts[str(d.get("pool", ""))] = counts.get(str(d.get("pool", "")), 0) + 1
                data["droppedTargets"] = [
                    {"discoveredLabels": dict(sorted(dict(d.get("discoveredLabels") or {}).items())),
                     "scrapePool": str(d.get("pool", ""))}
                    for d in dropped if not pool or d.get("pool") == pool
                ]
                data["droppedTargetCounts"] = counts
            return success(data)

        return await answer(request, run)

    async def scrape_pools(self, request: web.Request) -> web.StreamResponse:
        async def run(params: dict[str, list[str]]) -> web.Response:
            pools = {t["scrapePool"] for t in await self._active()}
            if self.src.dropped is not None:
                pools.update(str(d.get("pool", "")) for d in await self.src.dropped())
            return success({"scrapePools": sorted(pools)})

        return await answer(request, run)

    # -- metadata --------------------------------------------------------------------------------

    async def _metadata_records(self, per_target: bool, metric: str) -> list[Mapping[str, Any]]:
        return list(await self.src.metadata(per_target, metric)) if self.src.metadata is not None else []

    async def metadata(self, request: web.Request) -> web.StreamResponse:
        async def run(params: dict[str, list[str]]) -> web.Response:
            limit = _int_param(params, "limit", -1)
            per_metric = _int_param(params, "limit_per_metric", -1)
            metric = one(params, "metric") or ""
            found: dict[str, list[dict[str, str]]] = {}
            for rec in await self._metadata_records(False, metric):
                for item in rec.get("metadata") or ():
                    name, typ, help_text, unit = (list(item) + ["", "", "", ""])[:4]
                    if metric and name != metric:
                        continue
                    entry = {"type": typ or "unknown", "help": help_text, "unit": unit}
                    have = found.setdefault(name, [])
                    if entry in have or (per_metric > 0 and len(have) >= per_metric):
                        continue
                    have.append(entry)
            names = sorted(found)
            if limit >= 0:
                names = names[:limit]
            return success({n: found[n] for n in names})

        return await answer(request, run)

    async def targets_metadata(self, request: web.Request) -> web.StreamResponse:
        async def run(params: dict[str, list[str]]) -> web.Response:
            limit = _int_param(params, "limit", -1)
            metric = one(params, "metric") or ""
            match_target = one(params, "match_target")
            matchers = matchers_of([match_target], "match_target")[0] if match_target else []
            out: list[dict[str, Any]] = []
            for rec in await self._metadata_records(True, metric):
                if 0 <= limit <= len(out):
                    break
                labels = dict(rec.get("labels") or {})
                if not all(m.matches_value(labels.get(m.name, "")) for m in matchers):
                    continue
                for item in rec.get("metadata") or ():
                    name, typ, help_text, unit = (list(item) + ["", "", "", ""])[:4]
                    if metric and name != metric:
                        continue
                    entry: dict[str, Any] = {"target": dict(sorted(labels.items()))}
                    if not metric:
                        entry["metric"] = name
                    entry.update({"type": typ or "unknown", "help": help_text, "unit": unit})
                    out.append(entry)
            return success(out)

        return await answer(request, run)

    # -- rules and alerts ------------------------------------------------------------------------

    async def _groups(self) -> list[dict]:
        if self.src.rules_status is None:
            return []
        try:
            return list(await self.src.rules_status())
        except Exception as exc:  # noqa: BLE001 - alerters away: say so in the API's format
            raise ApiError("unavailable", f"rule status unavailable: {exc}") from None

    async def rules(self, request: web.Request) -> web.StreamResponse:
        async def run(params: dict[str, list[str]]) -> web.Response:
            typ = (one(params, "type") or "").lower()
            if typ not in ("", "alert", "record"):
                raise ApiError("bad_data", f'invalid parameter "type": not supported value "{typ}"')
            exclude = (one(params, "exclude_alerts") or "").lower() in ("true", "1", "t")
            names = set(params.get("rule_name[]", []))
            groups_wanted = set(params.get("rule_group[]", []))
            files = set(params.get("file[]", []))
            out = []
            for g in await self._groups():
                if (groups_wanted and g.get("name") not in groups_wanted) or (files and g.get("file") not in files):
                    continue
                rules = []
                for r in g.get("rules") or ():
                    alerting = r.get("type") == "alerting"
                    if (typ == "alert" and not alerting) or (typ == "record" and alerting):
                        continue
                    if names and r.get("name") not in names:
                        continue
                    rules.append(_rule(r, exclude))
                if not rules:
                    continue
                out.append({
                    "name": g.get("name", ""),
                    "file": g.get("file", ""),
                    "rules": rules,
                    "interval": float(g.get("interval") or 0.0),
                    "limit": int(g.get("limit") or 0),
                    "evaluationTime": float(g.get("evaluationTime") or 0.0),
                    "lastEvaluation": go_time(g.get("lastEvaluation") or None),
                })
            return success({"groups": out})

        return await answer(request, run)

    async def alerts(self, request: web.Request) -> web.StreamResponse:
        async def run(params: dict[str, list[str]]) -> web.Response:
            alerts: list[dict[str, Any]] = []
            for g in await self._groups():
                for r in g.get("rules") or ():
                    if r.get("type") == "alerting":
                        alerts.extend(_alert(a) for a in r.get("alerts") or ())
            return success({"alerts": alerts})

        return await answer(request, run)

    async def alertmanagers(self, request: web.Request) -> web.StreamResponse:
        async def run(params: dict[str, list[str]]) -> web.Response:
            urls = list(self.src.alertmanagers()) if self.src.alertmanagers is not None else []
            return success({"activeAlertmanagers": [{"url": u} for u in urls], "droppedAlertmanagers": []})

        return await answer(request, run)

    # -- status ----------------------------------------------------------------------------------

    async def config(self, request: web.Request) -> web.StreamResponse:
        async def run(params: dict[str, list[str]]) -> web.Response:
            return success({"yaml": redacted_config(self.src.config_file)})

        return await answer(request, run)

    async def flags(self, request: web.Request) -> web.StreamResponse:
        async def run(params: dict[str, list[str]]) -> web.Response:
            return success(dict(sorted(self.src.flags.items())))

        return await answer(request, run)

    async def runtimeinfo(self, request: web.Request) -> web.StreamResponse:
        async def run(params: dict[str, list[str]]) -> web.Response:
            now = time.time()
            return success({
                "startTime": go_time(self.src.started_at),
                "CWD": os.getcwd(),
                "hostname": socket.gethostname(),
                "serverTime": go_time(now),
                "reloadConfigSuccess": True,
                "lastConfigTime": go_time(self.src.started_at),
                "corruptionCount": 0,
                "goroutineCount": threading.active_count(),
                "GOMAXPROCS": os.cpu_count() or 1,
                "GOMEMLIMIT": 9_223_372_036_854_775_807,
                "GOGC": "",
                "GODEBUG": "",
                "storageRetention": self.src.retention,
            })

        return await answer(request, run)

    async def walreplay(self, request: web.Request) -> web.StreamResponse:
        """No write-ahead log to replay: the store is open before the server listens."""
        return success({"min": 0, "max": 0, "current": 0})

    async def tsdb(self, request: web.Request) -> web.StreamResponse:
        async def run(params: dict[str, list[str]]) -> web.Response:
            limit = _int_param(params, "limit", 10)
            if limit < 1:
                raise ApiError("bad_data", "limit must be a positive number")
            if limit > 10_000:
                raise ApiError("bad_data", "limit must not exceed 10000")
            now = int(time.time() * 1000)
            series = []
            if self.src.head_series is not None:
                series = list(await self.src.head_series(now - TSDB_WINDOW_MS, now))
            return success(tsdb_status(series, now - TSDB_WINDOW_MS, now, limit))

        return await answer(request, run)


def _rule(r: Mapping[str, Any], exclude_alerts: bool) -> dict[str, Any]:
    common = {
        "name": r.get("name", ""),
        "query": r.get("query", ""),
        "labels": dict(sorted(dict(r.get("labels") or {}).items())),
        "health": r.get("health") or "unknown",
    }
    if r.get("lastError"):
        common["lastError"] = r["lastError"]
    timing = {"evaluationTime": float(r.get("evaluationTime") or 0.0),
              "lastEvaluation": go_time(r.get("lastEvaluation") or None)}
    if r.get("type") != "alerting":
        return {**common, **timing, "type": "recording"}
    return {
        "state": r.get("state") or "inactive",
        "name": common["name"],
        "query": common["query"],
        "duration": float(r.get("duration") or 0.0),
        "keepFiringFor": float(r.get("keepFiringFor") or 0.0),
        "labels": common["labels"],
        "annotations": dict(sorted(dict(r.get("annotations") or {}).items())),
        "alerts": None if exclude_alerts else [_alert(a) for a in r.get("alerts") or ()],
        "health": common["health"],
        **({"lastError": common["lastError"]} if "lastError" in common else {}),
        **timing,
        "type": "alerting",
    }


def _alert(a: Mapping[str, Any]) -> dict[str, Any]:
    try:
        value = go_format_float(float(a.get("value", "nan")), "e")
    except (TypeError, ValueError):
        value = str(a.get("value", ""))
    return {
        "labels": dict(sorted(dict(a.get("labels") or {}).items())),
        "annotations": dict(sorted(dict(a.get("annotations") or {}).items())),
        "state": a.get("state", ""),
        "activeAt": go_time(a.get("activeAt") or None),
        "value": value,
    }


def tsdb_status(series: Sequence[Mapping[str, str]], min_ms: int, max_ms: int, limit: int) -> dict[str, Any]:
    """Prometheus' ``/status/tsdb`` document over a list of label sets (the top ``limit`` of each)."""
    by_metric: dict[str, int] = {}
    values_by_name: dict[str, set[str]] = {}
    pairs: dict[str, int] = {}
    for labels in series:
        by_metric[labels.get("__name__", "")] = by_metric.get(labels.get("__name__", ""), 0) + 1
        for k, v in labels.items():
            values_by_name.setdefault(k, set()).add(v)
            pair = f"{k}={v}"
            pairs[pair] = pairs.get(pair, 0) + 1

    memory: dict[str, int] = {}  # labels.SizeOfLabels (stringlabels) of each pair x its series
    for pair, n in pairs.items():
        name, _, value = pair.partition("=")
        size = _varint_len(len(name.encode())) + len(name.encode()) + _varint_len(len(value.encode())) + len(value.encode())
        memory[name] = memory.get(name, 0) + size * n

    def top(counts: Mapping[str, int]) -> list[dict[str, Any]]:
        ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:limit]
        return [{"name": k, "value": v} for k, v in ranked]

    return {
        "headStats": {"numSeries": len(series), "numLabelPairs": len(pairs), "chunkCount": 0,
                      "minTime": min_ms if series else 0, "maxTime": max_ms if series else 0},
        "seriesCountByMetricName": top(by_metric),
        "labelValueCountByLabelName": top({k: len(v) for k, v in values_by_name.items()}),
        "memoryInBytesByLabelName": top(memory),
        "seriesCountByLabelValuePair": top(pairs),
    }


def _varint_len(n: int) -> int:
    return max(1, (n.bit_length() + 6) // 7)


def redacted_config(path: str) -> str:
    """The config file as YAML with every secret-looking value replaced by ``<secret>``."""
    if not path:
        return ""
    try:
        with open(path, encoding="utf-8") as f:
            doc = yaml.safe_load(f)
    except (OSError, yaml.YAMLError) as exc:
        raise ApiError("internal", f"cannot read the config file: {exc}") from None

    def clean(node: Any) -> Any:
        if isinstance(node, Mapping):
            return {k: "<secret>" if SECRET_KEY_RE.search(str(k)) and node[k] else clean(node[k]) for k in node}
        if isinstance(node, list):
            return [clean(x) for x in node]
        return node

    return yaml.safe_dump(clean(doc), sort_keys=False, default_flow_style=False)


def alertmanager_urls(notifier_config: Any) -> list[str]:
    """The Alertmanagers a notifier config forwards to (its ``alertmanager_configs``)."""
    from alerting.channels.alertmanager import AlertmanagerIntegration

    urls = []
    for receiver in getattr(notifier_config, "receivers", {}).values():
        for integ in receiver.integrations:
            if isinstance(integ, AlertmanagerIntegration):
                u = integ.url if integ.url.endswith("/api/v2/alerts") else integ.url + "/api/v2/alerts"
                if u not in urls:
                    urls.append(u)
    return urls


def add_fleet_api_routes(app: web.Application, sources: FleetApiSources, prefix: str = "/api/v1") -> FleetApi:
    """Mount the fleet endpoints (GET, as Prometheus serves them) under ``prefix``."""
    api = FleetApi(sources)
    for path, handler in (
        ("/targets", api.targets),
        ("/scrape_pools", api.scrape_pools),
        ("/targets/metadata", api.targets_metadata),
        ("/metadata", api.metadata),
        ("/rules", api.rules),
        ("/alerts", api.alerts),
        ("/alertmanagers", api.alertmanagers),
        ("/status/config", api.config),
        ("/status/flags", api.flags),
        ("/status/runtimeinfo", api.runtimeinfo),
        ("/status/tsdb", api.tsdb),
        ("/status/walreplay", api.walreplay),
    ):
        app.router.add_get(prefix + path, handler)
    return api


__all__ = ["FleetApi", "FleetApiSources", "add_fleet_api_routes", "alertmanager_urls", "tsdb_status"]
