"""The alerter process: rules -> engine -> evaluator -> notifier -> channels, plus its HTTP API.

``AlerterService`` wires a Storage (and its writer) with the query engine, the rule store,
the evaluator (with group ownership), the notifier, silences and the SQLite (or Cassandra)
state. It reloads rules and the notifier config on file change, on SIGHUP and on
``POST /-/reload``; an invalid file is reported and the last good one stays in force.

HTTP: ``/metrics``, ``/-/healthy``, ``/-/ready``, ``POST /-/reload``, ``GET /api/v1/rules``,
``GET /api/v1/alerts`` (Prometheus shapes), ``GET /api/v1/notifier/alerts``, ``GET|POST /api/v1/silences``, ``DELETE /api/v1/silence/<id>``.
Every call but ``/metrics`` and the health checks needs the API token (``alerting/api_auth.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
import math
import signal
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, Counter, generate_latest

from alerting.api_auth import USER_HEADER, ApiTokenError, api_middleware, resolve_token
from alerting.channels.base import LocalReceivers
from alerting.evaluator import EvalOptions, RuleManager
from alerting.notifier.config import NotifierConfig, NotifierConfigError, config_from_dict
from alerting.notifier.dispatcher import Notifier
from alerting.notifier.model import rfc3339
from alerting.notifier.nflog import SQLiteNotificationLog
from alerting.notifier.silences import SilenceError, Silences, SQLiteSilenceStore, new_silence
from alerting.ownership import GroupOwnership, LocalOwnership, ZooKeeperOwnership
from alerting.rulefile import LoadOptions
from alerting.rulestore import RuleStore
from alerting.sqlitedb import AlertingDB
from alerting.state import SQLiteAlertStateStore
from alerting.template import DEFAULT_LIMITS, TemplateLimits
from common.config_keys import check_keys, key_error
from common.durations import DurationError, seconds_of
from common.yamlfile import YamlFileError, load_yaml_file
from query.engine import Engine
from storage.base import SampleWriter, Storage

if TYPE_CHECKING:
    from storage.cassandra import CassandraStorage

log = logging.getLogger("ringmon.alerting.service")

RELOADS = Counter("ringmon_alerter_reloads_total", "Config and rule reloads", ["result"])

SETTINGS_KEYS = ("listen", "state_db", "rule_files", "evaluation_interval", "resend_delay", "external_labels",
                 "external_url", "name_validation", "watch_interval", "ownership", "zookeeper_hosts", "zookeeper_path",
                 "zookeeper_session_timeout", "id", "state_backend", "api_token", "api_token_file", "templates")
TEMPLATE_KEYS = ("timeout", "max_output", "max_iterations")


def uses_cassandra_state(state_backend: str, storage: Any) -> bool:
    """Whether alert state, silences and the notification log live in the Cassandra keyspace of
    ``storage``: ``cassandra``, or ``auto`` on any Cassandra storage class (rollup-aware ones too)."""
    is_cassandra = any(c.__name__ == "CassandraStorage" for c in type(storage).__mro__)
    return state_backend == "cassandra" or (state_backend == "auto" and is_cassandra)


class AlerterConfigError(ValueError):
    """The alerter's settings are wrong; the message names file and key."""


@dataclass
class AlerterSettings:
    """The ``alerter:`` section of the alerting config file."""

    listen: str = "127.0.0.1:9095"
    state_db: str = "data/alerting.db"
    rule_files: list[str] = field(default_factory=list)
    evaluation_interval_ms: int = 15_000
    resend_delay_s: float = 60.0
    external_labels: dict[str, str] = field(default_factory=dict)
    external_url: str = ""
    name_validation: str = "utf8"
    watch_interval_s: float = 5.0
    ownership: str = "local"  # local | zookeeper
    zookeeper_hosts: str = ""
    zookeeper_path: str = "/ringmon/alerters"
    zookeeper_session_timeout_s: float = 10.0
    id: str = ""
    state_backend: str = "auto"  # auto (Cassandra when the storage is), sqlite, cassandra
    api_token: str = ""  # the HTTP API's bearer token; empty: the token file's
    api_token_file: str = ""  # default: alerter-api-token next to state_db, made on first start
    templates: TemplateLimits = DEFAULT_LIMITS  # budgets of each alert label/annotation expansion


def _dur_s(d: dict, where: str, key: str) -> float:
    """The duration ``d[key]`` in seconds; an error names the key's file and line."""
    v = d[key]
    if isinstance(v, int | float) and not isinstance(v, bool):
        if not math.isfinite(v):
            raise AlerterConfigError(key_error(d, where, key, "expected a finite number of seconds or a duration like 1h"))
    try:
        return seconds_of(v)
    except DurationError as exc:
        raise AlerterConfigError(key_error(d, where, key, str(exc))) from None


def _unix_s(v: Any, where: str) -> float | None:
    """A silence's start or end from an API body: unix seconds, or absent."""
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
        raise ValueError(f"{where}: expected unix seconds (a number)")
    return float(v)


def _template_limits(d: Any, where: str) -> TemplateLimits:
    """``templates: {timeout: 2s, max_output: 1048576, max_iterations: 100000}`` (each optional)."""
    if not isinstance(d, dict):
        raise AlerterConfigError(f"{where}: expected a mapping with {', '.join(TEMPLATE_KEYS)}")
    check_keys(d, TEMPLATE_KEYS, where, AlerterConfigError)
    kw: dict[str, Any] = {}
    if "timeout" in d:
        kw["timeout_s"] = _dur_s(d, where, "timeout")
        if kw["timeout_s"] <= 0:
            raise AlerterConfigError(key_error(d, where, "timeout", "must be positive"))
    for k in ("max_output", "max_iterations"):
        if k in d:
            v = d[k]
            if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
                raise AlerterConfigError(key_error(d, where, k, f"expected a positive integer, got {v!r}"))
            kw[k] = v
    return replace(DEFAULT_LIMITS, **kw)


def settings_from_dict(d: Any, source: str, defaults: AlerterSettings | None = None) -> AlerterSettings:  # noqa: C901 - one branch per alerter setting, each with its own error
    s = defaults or AlerterSettings()
    if d is None:
        return s
    if not isinstance(d, dict):
        raise AlerterConfigError(f"{source}: alerter: expected a mapping")
    check_keys(d, SETTINGS_KEYS, f"{source}: alerter", AlerterConfigError)
    for k in ("listen", "state_db", "external_url", "name_validation", "ownership", "zookeeper_hosts",
              "zookeeper_path", "id", "state_backend", "api_token", "api_token_file"):
        if k in d:
            setattr(s, k, str(d[k]))
    if "rule_files" in d:
        rf = d["rule_files"]
        if not isinstance(rf, list) or not all(isinstance(x, str) for x in rf):
            raise AlerterConfigError(key_error(d, f"{source}: alerter", "rule_files", "expected a list of paths or globs"))
        s.rule_files = list(rf)
    if "evaluation_interval" in d:
        s.evaluation_interval_ms = int(_dur_s(d, f"{source}: alerter", "evaluation_interval") * 1000)
    if "resend_delay" in d:
        s.resend_delay_s = _dur_s(d, f"{source}: alerter", "resend_delay")
    if "zookeeper_session_timeout" in d:
        s.zookeeper_session_timeout_s = _dur_s(d, f"{source}: alerter", "zookeeper_session_timeout")
    if "watch_interval" in d:
        s.watch_interval_s = _dur_s(d, f"{source}: alerter", "watch_interval")
    if "external_labels" in d:
        el = d["external_labels"] or {}
        if not isinstance(el, dict):
            raise AlerterConfigError(key_error(d, f"{source}: alerter", "external_labels", "expected a mapping"))
        s.external_labels = {str(k): str(v) for k, v in el.items()}
    if "templates" in d:
        s.templates = _template_limits(d["templates"], f"{source}: alerter.templates")
    if s.ownership not in ("local", "zookeeper"):
        raise AlerterConfigError(key_error(d, f"{source}: alerter", "ownership", f"expected local or zookeeper, got {s.ownership!r}"))
    if s.ownership == "zookeeper" and not s.zookeeper_hosts:
        raise AlerterConfigError(key_error(d, f"{source}: alerter", "zookeeper_hosts", "required when ownership is zookeeper"))
    if s.state_backend not in ("auto", "sqlite", "cassandra"):
        raise AlerterConfigError(key_error(d, f"{source}: alerter", "state_backend", "expected auto, sqlite or cassandra"))
    if s.name_validation not in ("utf8", "legacy"):
        raise AlerterConfigError(key_error(d, f"{source}: alerter", "name_validation", "expected utf8 or legacy"))
    if s.evaluation_interval_ms <= 0:
        raise AlerterConfigError(key_error(d, f"{source}: alerter", "evaluation_interval", "must be positive"))
    return s


def load_alerting_file(path: str, defaults: AlerterSettings | None = None) -> tuple[AlerterSettings, NotifierConfig]:
    """Read the alerting config: the ``alerter:`` section plus the notifier (route, receivers ...)."""
    p = Path(path)
    try:
        data = load_yaml_file(p)
    except YamlFileError as exc:
        raise AlerterConfigError(str(exc)) from None
    if not isinstance(data, dict):
        raise AlerterConfigError(f"{p}: the top level must be a mapping")
    data = copy.copy(data)  # a shallow copy that keeps the YamlMap (its key lines)
    settings = settings_from_dict(data.pop("alerter", None), str(p), defaults)
    try:
        notifier = config_from_dict(data, str(p))
    except NotifierConfigError as exc:
        raise AlerterConfigError(str(exc)) from None
    return settings, notifier


class AlerterService:
    def __init__(
        self,
        settings: AlerterSettings,
        notifier_config: NotifierConfig,
        storage: Storage,
        writer: SampleWriter,
        alerting_config_path: str | None = None,
        ownership: GroupOwnership | None = None,
        local: LocalReceivers | None = None,
    ) -> None:
        """``local``: the receivers this process offers (standalone: the notification journal and
        its web server); default: webhook paths go to ``external_url``, no notification log."""
        self.settings = settings
        self.notifier_config = notifier_config
        self.storage = storage
        self.writer = writer
        self.config_path = alerting_config_path
        self.ownership = ownership or self._make_ownership()
        self.db = AlertingDB(settings.state_db)
        if uses_cassandra_state(settings.state_backend, storage):
            from alerting.cassandra_stores import (
                CassandraAlertStateStore,
                CassandraNotificationLog,
                CassandraSilenceStore,
            )

            cstorage = cast("CassandraStorage", storage)  # checked by uses_cassandra_state
            state_store: Any = CassandraAlertStateStore(cstorage)
            nflog: Any = CassandraNotificationLog(cstorage)
            silence_store: Any = CassandraSilenceStore(cstorage)
        else:
            state_store = SQLiteAlertStateStore(self.db)
            nflog = SQLiteNotificationLog(self.db)
            silence_store = SQLiteSilenceStore(self.db)
        self.silences = Silences(silence_store)
        self.local = local or LocalReceivers(web_url=settings.external_url)
        self.notifier = Notifier(notifier_config, nflog, self.silences, local=self.local)
        self.engine = Engine(storage)
        self.rules = RuleStore(settings.rule_files, LoadOptions(name_validation=settings.name_validation))
        self.manager = RuleManager(
            self.rules, self.engine.instant_query, writer, state_store, self.notifier,
            self.ownership,
            EvalOptions(default_interval_ms=settings.evaluation_interval_ms, external_labels=settings.external_labels,
                        external_url=settings.external_url, resend_delay_s=settings.resend_delay_s,
                        template_limits=settings.templates),
        )
        self.runner: web.AppRunner | None = None
        self.port = 0
        self._watch_task: asyncio.Task | None = None
        self._config_stamp = self._stamp()
        self._stop = asyncio.Event()
        self.last_reload: dict = {}
        self.api_token = ""

    def _make_ownership(self) -> GroupOwnership:
        if self.settings.ownership == "zookeeper":
            return ZooKeeperOwnership(self.settings.zookeeper_hosts, self.settings.id or None,
                                      root=self.settings.zookeeper_path,
                                      session_timeout_s=self.settings.zookeeper_session_timeout_s)
        return LocalOwnership()

    def _stamp(self) -> tuple[float, int] | None:
        if not self.config_path:
            return None
        try:
            st = Path(self.config_path).stat()
            return (st.st_mtime, st.st_size)
        except OSError:
            return None

    # ------------------------------------------------------------------ lifecycle

    def set_external_url(self, url: str) -> None:
        """The URL alerts link back to (``generatorURL``), when it is known only once the web
        server has bound its port (a configured port 0); before ``start``."""
        self.settings.external_url = url
        self.manager.options.external_url = url

    async def start(self, serve_http: bool = True) -> None:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, self.ownership.start)
        await self.notifier.start()
        report = await self.manager.start()
        self.last_reload = self._report(report, None)
        if serve_http:
            await self._serve()
            publish = getattr(self.ownership, "publish_address", None)
            if publish is not None:
                host = self.settings.listen.rpartition(":")[0] or "127.0.0.1"
                await loop.run_in_executor(None, publish, f"{host}:{self.port}")
        self._watch_task = asyncio.create_task(self._watch(), name="alerter-watch")
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signal.SIGHUP, lambda: asyncio.ensure_future(self.reload("SIGHUP")))
        log.info("alerter started: %d rule groups, listening on %s", len(self.rules.groups()), self.port)

    async def run_forever(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, self._stop.set)
        await self._stop.wait()

    def request_stop(self) -> None:
        self._stop.set()

    async def stop(self) -> None:
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            asyncio.get_running_loop().remove_signal_handler(signal.SIGHUP)
        if self._watch_task is not None:
            self._watch_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch_task
        await self.manager.stop()
        await self.notifier.stop()
        await asyncio.get_running_loop().run_in_executor(None, self.ownership.stop)
        if self.runner is not None:
            await self.runner.cleanup()
        with contextlib.suppress(Exception):
            await self.writer.flush()
        await self.db.close()

    # ------------------------------------------------------------------ reload

    async def reload(self, reason: str = "api") -> dict:
        """Reload the notifier config and the rule files; invalid ones keep the last good version."""
        notifier_error = None
        if self.config_path:
            try:
                _, cfg = load_alerting_file(self.config_path)
                self.notifier.apply_config(cfg)
                self.notifier_config = cfg
            except AlerterConfigError as exc:
                notifier_error = str(exc)
                log.error("invalid alerting config, keeping the last good one: %s", exc)
            self._config_stamp = self._stamp()
        report = await self.manager.reload()
        out = self._report(report, notifier_error)
        ok = out["success"]
        RELOADS.labels("success" if ok else "failure").inc()
        log.info("reload (%s): %s", reason, "ok" if ok else "with errors")
        self.last_reload = out
        return out

    @staticmethod
    def _report(report: Any, notifier_error: str | None) -> dict:
        errors = [str(e) for errs in report.failed.values() for e in errs]
        if notifier_error:
            errors.insert(0, notifier_error)
        return {"success": not errors, "errors": errors, "loaded": report.loaded, "unchanged": report.unchanged,
                "removed": report.removed, "at": time.time()}

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self.settings.watch_interval_s)
            try:
                if self.rules.changed_on_disk() or self._stamp() != self._config_stamp:
                    await self.reload("file change")
            except Exception:
                log.exception("watching rule files failed")

    # ------------------------------------------------------------------ HTTP

    async def _serve(self) -> None:
        s = self.settings
        try:
            self.api_token = await asyncio.get_running_loop().run_in_executor(
                None, resolve_token, s.api_token, s.api_token_file, s.state_db)
        except ApiTokenError as exc:
            raise AlerterConfigError(f"alerter: {exc}") from None
        app = web.Application(middlewares=[api_middleware(self.api_token)], client_max_size=1 << 20)
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/-/healthy", self._ok)
        app.router.add_get("/-/ready", self._ok)
        app.router.add_post("/-/reload", self._reload)
        app.router.add_get("/api/v1/rules", self._rules)
        app.router.add_get("/api/v1/alerts", self._alerts)
        app.router.add_get("/api/v1/notifier/alerts", self._notifier_alerts)
        app.router.add_get("/api/v1/silences", self._silences)
        app.router.add_post("/api/v1/silences", self._add_silence)
        app.router.add_delete("/api/v1/silence/{id}", self._expire_silence)
        host, _, port = self.settings.listen.rpartition(":")
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, host or "127.0.0.1", int(port))
        try:
            await site.start()
        except OSError as exc:
            await self.runner.cleanup()
            self.runner = None
            raise AlerterConfigError(f"alerter: cannot listen on {self.settings.listen}: {exc.strerror or exc}") from None
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def _ok(self, request: web.Request) -> web.Response:
        return web.Response(text="OK\n")

    async def _metrics(self, request: web.Request) -> web.Response:
        return web.Response(body=generate_latest(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _reload(self, request: web.Request) -> web.Response:
        out = await self.reload("http")
        return web.json_response(out, status=200 if out["success"] else 400)

    def rules_api(self) -> dict:
        """``/api/v1/rules`` data in Prometheus' shape (timestamps RFC3339, values as strings)."""
        groups = []
        for g in self.manager.status():
            g = dict(g)
            g["lastEvaluation"] = rfc3339(g["lastEvaluation"] or None)
            rules = []
            for r in g["rules"]:
                r = dict(r)
                r["lastEvaluation"] = rfc3339(r["lastEvaluation"] or None)
                if "alerts" in r:
                    r["alerts"] = [{**a, "activeAt": rfc3339(a["activeAt"])} for a in r["alerts"]]
                rules.append(r)
            g["rules"] = rules
            groups.append(g)
        return {"groups": groups, "errors": {k: [str(e) for e in v] for k, v in self.rules.errors().items()}}

    def alerts_api(self) -> list[dict]:
        """``/api/v1/alerts`` data as Prometheus returns it: pending and firing alerts of owned groups."""
        out = []
        for g in self.manager.status():
            if not g["owned"]:
                continue
            for r in g["rules"]:
                for a in r.get("alerts", []):
                    out.append({"labels": a["labels"], "annotations": a["annotations"], "state": a["state"],
                                "activeAt": rfc3339(a["activeAt"]), "value": a["value"]})
        return out

    async def _rules(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "success", "data": self.rules_api()})

    async def _alerts(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "success", "data": {"alerts": self.alerts_api()}})

    async def _notifier_alerts(self, request: web.Request) -> web.Response:
        """The notifier's view (Alertmanager-like): active, suppressed (silenced/inhibited) or resolved."""
        items = []
        for st in await self.notifier.status():
            d = st.alert.to_v4()
            d.update({"state": st.state, "silencedBy": st.silenced_by, "inhibited": st.inhibited})
            items.append(d)
        return web.json_response({"status": "success", "data": {"alerts": items}})

    async def _silences(self, request: web.Request) -> web.Response:
        items = [{**s.to_json(), "state": s.state()} for s in await self.silences.list()]
        return web.json_response({"status": "success", "data": items})

    async def _add_silence(self, request: web.Request) -> web.Response:
        try:
            body = await request.json()
            if not isinstance(body, dict):
                raise ValueError("the body must be a JSON object")
            author = request.headers.get(USER_HEADER) or str(body.get("created_by", ""))
            matchers = body.get("matchers", "")
            if not isinstance(matchers, str):
                raise ValueError("matchers: expected a string of matchers, e.g. 'alertname=\"X\",job=\"web\"'")
            dur = body.get("duration")
            dur_s = _dur_s(body, "", "duration") if dur is not None else None
            s = new_silence(matchers, author, str(body.get("comment", "")), duration_s=dur_s,
                            starts_at=_unix_s(body.get("starts_at"), "starts_at"),
                            ends_at=_unix_s(body.get("ends_at"), "ends_at"))
        except (ValueError, SilenceError, AlerterConfigError) as exc:
            return web.json_response({"status": "error", "error": str(exc)}, status=400)
        await self.silences.add(s)
        return web.json_response({"status": "success", "data": {**s.to_json(), "state": s.state()}})

    async def _expire_silence(self, request: web.Request) -> web.Response:
        try:
            s = await self.silences.expire(request.match_info["id"])
        except SilenceError as exc:
            return web.json_response({"status": "error", "error": str(exc)}, status=404)
        return web.json_response({"status": "success", "data": s.to_json()})
