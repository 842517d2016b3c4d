"""Alerting pages over alerters running in other processes (``ringmon web`` in cluster mode).

``RemoteAlerters`` talks to one or more ``ringmon alerter`` HTTP APIs: rule status is the
merge of every alerter's ``/api/v1/rules`` (each group taken from the alerter that evaluates
it), a rule reload is ``POST /-/reload`` to every alerter. ``SharedRuleFiles`` is the rule
store the editor works on: the rule files the alerters read, seen from this machine (same
host or a shared config directory). Silences go to the shared silence store when there is one
(Cassandra), else through ``RemoteSilences`` to the alerter's silences API. Every call carries
the alerters' API token (``alerting/api_auth.py``) and a silence the logged-in user's name.
``remote_alerting_views`` puts these together as the ``AlertingViews`` the pages read.
"""

from __future__ import annotations

import asyncio
import builtins
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from alerting.api_auth import USER_HEADER, bearer
from alerting.notifier.silences import Silence, SilenceError, Silences, SilenceStore
from alerting.rulefile import LoadOptions
from alerting.rulestore import RuleStore
from discovery.membership import read_members
from web.alerting_pages import AlertingViews

log = logging.getLogger("ringmon.web.alerting_remote")

ZERO_TIME = "0001-01-01T00:00:00Z"  # what the alerter's API says for "never"


class AlerterUnavailable(RuntimeError):
    """No alerter answered (or none is configured); the message names each address and why."""


class SilencesUnavailable(web.HTTPServiceUnavailable):
    """The silences API cannot be reached: a 503 page (or a line on /alerts) saying why."""

    def __init__(self, why: str) -> None:
        super().__init__(text=f"Silences are unavailable: {why}")

    def __str__(self) -> str:
        return self.text or "Silences are unavailable"


def alerter_url(address: str) -> str:
    """``http://host:port`` from an ``--alerter`` value or a listen address (``0.0.0.0``/empty host -> 127.0.0.1)."""
    a = address.strip().rstrip("/")
    if not a:
        raise ValueError("empty alerter address")
    if "://" in a:
        scheme, _, rest = a.partition("://")
        if scheme not in ("http", "https") or not rest:
            raise ValueError(f"alerter address {address!r}: expected http://HOST:PORT or HOST:PORT")
        return a
    host, sep, port = a.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"alerter address {address!r}: expected HOST:PORT or http://HOST:PORT")
    if host in ("", "0.0.0.0", "[::]", "::"):
        host = "127.0.0.1"
    return f"http://{host}:{port}"


def _unix(ts: Any) -> float:
    """Seconds since the epoch from the API's RFC 3339 text (0.0 for "never" or garbage)."""
    if isinstance(ts, int | float) and not isinstance(ts, bool):
        return float(ts)
    if not isinstance(ts, str) or not ts or ts == ZERO_TIME:
        return 0.0
    try:
        return datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return 0.0


def group_from_api(group: dict, alerter: str) -> dict:
    """One group of ``/api/v1/rules`` back in ``RuleManager.status()`` shape (unix-second times)."""
    g = dict(group)
    g["lastEvaluation"] = _unix(g.get("lastEvaluation"))
    rules = []
    for r in g.get("rules") or []:
        r = dict(r)
        r["lastEvaluation"] = _unix(r.get("lastEvaluation"))
        if "alerts" in r:
            r["alerts"] = [{**a, "activeAt": _unix(a.get("activeAt"))} for a in r.get("alerts") or []]
        rules.append(r)
    g["rules"] = rules
    g["alerter"] = alerter
    return g


def merge_rule_status(per_alerter: Sequence[tuple[str, list[dict]]]) -> list[dict]:
    """One entry per group: the alerter that owns it (most recent evaluation among owners, or
    among all when no alerter claims it right now, e.g. during a hand-over)."""
    best: dict[str, dict] = {}
    for alerter, groups in per_alerter:
        for raw in groups:
            g = group_from_api(raw, alerter)
            key = str(g.get("key") or f"{g.get('file', '')};{g.get('name', '')}")
            cur = best.get(key)
            if cur is None or _rank(g) > _rank(cur):
                best[key] = g
    return list(best.values())


def _rank(g: dict) -> tuple[bool, float]:
    return (bool(g.get("owned")), float(g.get("lastEvaluation") or 0.0))


@dataclass
class RemoteReloadReport:
    """What ``POST /-/reload`` answered on each alerter (``failed`` by file, like ``ReloadReport``)."""

    answers: dict[str, dict] = field(default_factory=dict)  # alerter -> its reload document
    unreachable: dict[str, str] = field(default_factory=dict)  # alerter -> why
    failed: dict[str, list[str]] = field(default_factory=dict)  # rule file ("" = other) -> errors

    @property
    def ok(self) -> bool:
        return not self.failed and not self.unreachable

    def summary(self) -> str:
        parts = []
        for url, doc in self.answers.items():
            counts = (f"{len(doc.get('loaded') or [])} loaded, {len(doc.get('unchanged') or [])} unchanged, "
                      f"{len(doc.get('errors') or [])} errors")
            parts.append(f"{_host(url)}: {counts}")
        parts.extend(f"{_host(url)} unreachable ({why})" for url, why in self.unreachable.items())
        return "; ".join(parts)


def _host(url: str) -> str:
    return url.partition("://")[2] or url


def _errors_by_file(errors: Sequence[str], paths: Sequence[str]) -> dict[str, list[str]]:
    """Errors of a reload answer by rule file (``"file:line: reason"``); others under ``""``."""
    out: dict[str, list[str]] = {}
    ordered = sorted(paths, key=len, reverse=True)  # longest first: "a.yml" must not take "a.yml.bak"
    for e in errors:
        path = next((p for p in ordered if e.startswith(p + ":")), "")
        out.setdefault(path, []).append(e)
    return out


class RemoteAlerters:
    """HTTP client of the alerters: rule status, reloads, silences. ``close()`` when done."""

    def __init__(
        self,
        urls: Sequence[str] = (),
        discover: Callable[[], Awaitable[list[str]]] | None = None,
        timeout_s: float = 3.0,
        status_cache_s: float = 1.0,
        fallback_urls: Sequence[str] = (),
        token: str = "",
    ) -> None:
        self.token = token  # the alerters' API token (alerter.api_token / api_token_file)
        self.static_urls = [alerter_url(u) for u in urls]
        self.discover = discover
        self.fallback_urls = [alerter_url(u) for u in fallback_urls]  # when nothing else is known
        self.timeout_s = timeout_s
        # Pages that ask at once (overview, dashboards, alerts) share one round of requests.
        self.status_cache_s = status_cache_s
        self._status: list[dict] | None = None
        self._status_at = 0.0
        self._status_lock = asyncio.Lock()
        self.file_errors: dict[str, list[str]] = {}  # rule file errors the alerters reported last
        self.last_errors: dict[str, str] = {}  # alerter -> why the last call failed
        self._session: aiohttp.ClientSession | None = None

    async def urls(self) -> list[str]:
        found: list[str] = []
        if self.discover is not None:
            try:
                found = [alerter_url(u) for u in await self.discover()]
            except Exception as exc:  # noqa: BLE001 - discovery away: the configured ones still work
                log.warning("alerter discovery failed", extra={"error": str(exc)})
        urls = list(dict.fromkeys([*self.static_urls, *found]))  # in order, each once
        return urls or list(self.fallback_urls)

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout_s),
                                                  trust_env=False)
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def call(self, method: str, url: str, path: str, body: Any = None,
                   user: str = "") -> tuple[int, Any]:
        """One request (as ``user`` when given); returns (status, JSON body). Connection problems
        raise ``AlerterUnavailable``."""
        headers = bearer(self.token) if self.token else {}
        if user:
            headers[USER_HEADER] = user
        try:
            async with self._http().request(method, url + path, json=body, headers=headers) as resp:
                try:
                    doc = await resp.json(content_type=None)
                except ValueError:
                    doc = None
                return resp.status, doc
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            why = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            raise AlerterUnavailable(f"{_host(url)}: {why}") from None

    async def _each(self, method: str, path: str) -> tuple[list[tuple[str, int, Any]], dict[str, str]]:
        urls = await self.urls()
        if not urls:
            raise AlerterUnavailable("no alerter address is configured (ringmon web --alerter HOST:PORT)")
        results = await asyncio.gather(*(self.call(method, u, path) for u in urls), return_exceptions=True)
        answers: list[tuple[str, int, Any]] = []
        failures: dict[str, str] = {}
        for u, res in zip(urls, results, strict=True):
            if isinstance(res, AlerterUnavailable):
                failures[u] = str(res).partition(": ")[2] or str(res)
            elif isinstance(res, BaseException):
                raise res
            else:
                answers.append((u, *res))
        self.last_errors = dict(failures)
        return answers, failures

    async def rules_status(self) -> list[dict]:
        """Every alerter's groups merged (``RuleManager.status()`` shape); raises when none answers.
        Answers are reused for ``status_cache_s`` (a reload forgets them)."""
        async with self._status_lock:
            if self._status is not None and time.monotonic() - self._status_at < self.status_cache_s:
                return [dict(g) for g in self._status]
            groups = await self._fetch_status()
            self._status, self._status_at = groups, time.monotonic()
            return [dict(g) for g in groups]

    def forget_status(self) -> None:
        self._status = None

    async def _fetch_status(self) -> list[dict]:
        answers, failures = await self._each("GET", "/api/v1/rules")
        per_alerter = []
        file_errors: dict[str, list[str]] = {}
        for url, status, doc in answers:
            data = doc.get("data") if isinstance(doc, dict) else None
            if status != 200 or not isinstance(data, dict):
                failures[url] = f"HTTP {status}"
                continue
            per_alerter.append((url, list(data.get("groups") or [])))
            for path, errs in (data.get("errors") or {}).items():
                file_errors.setdefault(str(path), [str(e) for e in errs])
        if not per_alerter:
            raise AlerterUnavailable("no alerter answered: " + "; ".join(f"{_host(u)} {w}" for u, w in failures.items()))
        for url, why in failures.items():
            log.warning("alerter did not answer /api/v1/rules", extra={"alerter": url, "error": why})
        self.last_errors = failures
        self.file_errors = file_errors
        return merge_rule_status(per_alerter)

    async def reload(self, rule_paths: Sequence[str] = ()) -> RemoteReloadReport:
        """``POST /-/reload`` to every alerter; raises when none answers."""
        self.forget_status()
        answers, failures = await self._each("POST", "/-/reload")
        report = RemoteReloadReport(unreachable=dict(failures))
        for url, status, doc in answers:
            if not isinstance(doc, dict):
                report.unreachable[url] = f"HTTP {status}, no reload report"
                continue
            report.answers[url] = doc
            for path, errs in _errors_by_file([str(e) for e in doc.get("errors") or []], rule_paths).items():
                report.failed.setdefault(path, []).extend(f"{_host(url)}: {e}" for e in errs)
        if not report.answers:
            raise AlerterUnavailable("no alerter took the reload: " + "; ".join(
                f"{_host(u)} {w}" for u, w in report.unreachable.items()))
        for url, why in report.unreachable.items():
            log.warning("alerter did not reload", extra={"alerter": url, "error": why})
        self.forget_status()  # a page load during the reload may have cached the old rules
        return report


class RemoteSilences:
    """What the pages call on ``Silences`` (list, add, expire, refresh, muted_by), over the
    silences API of the first alerter that answers. With several alerters use a shared silence
    store (Cassandra) instead: each alerter's own SQLite file holds only its silences."""

    def __init__(self, alerters: RemoteAlerters, refresh_s: float = 1.0) -> None:
        self.alerters = alerters
        self.refresh_s = refresh_s
        self._cache: list[Silence] = []
        self._loaded_at = -1e18

    async def _first(self, method: str, path: str, body: Any = None, user: str = "") -> tuple[int, Any]:
        urls = await self.alerters.urls()
        if not urls:
            raise SilencesUnavailable("no alerter address is configured (ringmon web --alerter HOST:PORT)")
        reasons = []
        for url in urls:
            try:
                return await self.alerters.call(method, url, path, body, user)
            except AlerterUnavailable as exc:
                reasons.append(str(exc))
        raise SilencesUnavailable("no alerter answered: " + "; ".join(reasons))

    async def list(self, include_expired: bool = True, now: float | None = None) -> list[Silence]:
        status, doc = await self._first("GET", "/api/v1/silences")
        if status != 200 or not isinstance(doc, dict) or not isinstance(doc.get("data"), list):
            raise SilencesUnavailable(f"the alerter's silences API answered HTTP {status}")
        items = [Silence.from_json(d) for d in doc["data"]]
        items.sort(key=lambda s: (s.starts_at, s.id))
        if not include_expired:
            items = [s for s in items if s.state(now) != "expired"]
        return items

    async def add(self, silence: Silence) -> Silence:
        body = {"matchers": silence.describe(), "created_by": silence.created_by, "comment": silence.comment,
                "starts_at": silence.starts_at, "ends_at": silence.ends_at}
        status, doc = await self._first("POST", "/api/v1/silences", body, user=silence.created_by)
        if status != 200 or not isinstance(doc, dict) or not isinstance(doc.get("data"), dict):
            raise SilenceError(_api_error(doc, status))
        self._loaded_at = -1e18
        return Silence.from_json(doc["data"])

    async def expire(self, silence_id: str, now: float | None = None) -> Silence:
        from urllib.parse import quote

        status, doc = await self._first("DELETE", f"/api/v1/silence/{quote(silence_id, safe='')}")
        if status != 200 or not isinstance(doc, dict) or not isinstance(doc.get("data"), dict):
            raise SilenceError(_api_error(doc, status))
        self._loaded_at = -1e18
        return Silence.from_json(doc["data"])

    async def refresh(self, now: float | None = None) -> None:
        t = time.monotonic()
        if t - self._loaded_at >= self.refresh_s:
            self._cache = await self.list()
            self._loaded_at = t

    def muted_by(self, labels: dict[str, str], now: float | None = None) -> builtins.list[str]:
        return [s.id for s in self._cache if s.mutes(labels, now)]


def _api_error(doc: Any, status: int) -> str:
    if isinstance(doc, dict) and doc.get("error"):
        return str(doc["error"])
    return f"the alerter answered HTTP {status}"


class SharedRuleFiles(RuleStore):
    """The rule files the alerters read, as this machine sees them: what the editor edits.
    ``errors()`` re-reads changed files and adds the errors the alerters reported themselves."""

    def __init__(self, paths: list[str], options: LoadOptions, alerters: RemoteAlerters | None = None) -> None:
        super().__init__(paths, options)
        self.alerters = alerters

    def errors(self) -> dict[str, list[Any]]:
        if self.changed_on_disk():
            self.reload()
        out: dict[str, list[Any]] = {p: list(e) for p, e in super().errors().items()}
        if self.alerters is not None:
            for path, errs in self.alerters.file_errors.items():
                out.setdefault(path, list(errs))
        return out


def remote_alerting_views(
    *,
    alerters: RemoteAlerters,
    rule_files: Sequence[str],
    load_options: LoadOptions | None = None,
    silence_store: SilenceStore | None = None,
    history_dir: str | Path | None = None,
) -> AlertingViews:
    """The alerting pages' views over remote alerters. ``silence_store``: the store the
    alerters share (e.g. ``CassandraSilenceStore``); absent, silences go through the API."""
    rules = SharedRuleFiles(list(rule_files), load_options or LoadOptions(), alerters)
    rules.reload()
    silences: Any = Silences(silence_store) if silence_store is not None else RemoteSilences(alerters)

    async def reload() -> RemoteReloadReport:
        report = await alerters.reload(rules.expand_paths())
        alerters.file_errors = {}  # stale now; the next status fetch brings the alerters' view
        return report

    return AlertingViews(
        rules_status=alerters.rules_status,
        silences=silences,
        rule_store=rules,
        reload_rules=reload,
        history_dir=history_dir,
    )


def read_alerter_addresses(zk: Any, path: str) -> list[str]:
    """Listen addresses the alerters published in their ownership nodes (``<path>/<id>`` holding
    JSON ``{"listen": "HOST:PORT"}``); nodes without one are skipped. Blocking (kazoo)."""
    out = []
    for child, info in read_members(zk, path).items():
        listen = info.get("listen")
        if not (isinstance(listen, str) and listen):
            continue  # not serving HTTP yet
        try:
            out.append(alerter_url(listen))
        except ValueError as exc:
            log.warning("alerter node with a bad address", extra={"node": f"{path}/{child}", "error": str(exc)})
    return out


def zookeeper_alerter_addresses(client: Callable[[], Any], path: str) -> Callable[[], Awaitable[list[str]]]:
    """A ``RemoteAlerters.discover`` reading ``read_alerter_addresses`` through ``client()``."""

    async def discover() -> list[str]:
        zk = client()
        if zk is None or not getattr(zk, "connected", False):
            return []
        return await asyncio.get_running_loop().run_in_executor(None, read_alerter_addresses, zk, path)

    return discover


def shares_alerting_state(state_backend: str, storage: Any) -> bool:
    """Whether the alerters keep state and silences in the Cassandra keyspace of ``storage``."""
    from alerting.service import uses_cassandra_state

    return uses_cassandra_state(state_backend, storage)


def cluster_alerting_views(
    *,
    alerter_addresses: Sequence[str],
    alerting_file: str,
    rule_files: Sequence[str],
    storage: Any,
    history_dir: str | Path | None,
    zookeeper_client: Callable[[], Any] | None = None,
    data_dir: str = "data",
) -> tuple[AlertingViews, RemoteAlerters]:
    """Views for ``ringmon web``: rule files, alerter address and state backend as the alerter
    sees them (its alerting file when given, read like ``ringmon alerter`` does). Alerters are
    the ``--alerter`` addresses, plus those published in ZooKeeper when ownership is
    ``zookeeper`` (``zookeeper_client`` returns a connected kazoo client or None), else
    ``alerter.listen`` of the file. The API token is the file's (``alerter.api_token[_file]``, default
    next to ``state_db``); without a file, ``<data_dir>/alerter-api-token``. Raises ``ValueError`` (``AlerterConfigError``, ``ApiTokenError``) naming file and key."""
    from alerting.api_auth import TOKEN_FILE_NAME, resolve_token
    from alerting.service import AlerterSettings, load_alerting_file

    settings = AlerterSettings(rule_files=list(rule_files))
    if alerting_file:
        settings, _ = load_alerting_file(alerting_file, settings)
    token_file = settings.api_token_file or ("" if alerting_file else str(Path(data_dir) / TOKEN_FILE_NAME))
    token = resolve_token(settings.api_token, token_file, settings.state_db)
    discover = None
    if settings.ownership == "zookeeper" and zookeeper_client is not None:
        discover = zookeeper_alerter_addresses(zookeeper_client, settings.zookeeper_path)
    alerters = RemoteAlerters(alerter_addresses, discover=discover,
                              fallback_urls=[settings.listen] if alerting_file else [], token=token)
    store: SilenceStore | None = None
    if shares_alerting_state(settings.state_backend, storage):
        from alerting.cassandra_stores import CassandraSilenceStore

        store = CassandraSilenceStore(storage)
    elif len(alerters.static_urls) > 1 or discover is not None:
        log.warning("silences go to the first alerter that answers: with several alerters and no shared "
                    "(Cassandra) state each alerter only knows its own silences")
    views = remote_alerting_views(
        alerters=alerters,
        rule_files=settings.rule_files,
        load_options=LoadOptions(name_validation=settings.name_validation),
        silence_store=store,
        history_dir=history_dir,
    )
    return views, alerters


__all__ = [
    "cluster_alerting_views",
    "read_alerter_addresses",
    "zookeeper_alerter_addresses",
    "shares_alerting_state",
    "AlerterUnavailable",
    "RemoteAlerters",
    "RemoteReloadReport",
    "RemoteSilences",
    "SharedRuleFiles",
    "alerter_url",
    "merge_rule_status",
    "remote_alerting_views",
]
