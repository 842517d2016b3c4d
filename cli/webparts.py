"""The parts of the web app that come from config, shared by standalone and ``ringmon web``:
logins, the range-query cache, dashboards, the alerting pages and what the API's status
endpoints report (flags, retention)."""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cli.config import RingmonConfig
from cli.errors import UserError

if TYPE_CHECKING:
    from alerting.notifier.journal import NotificationJournal
    from query.engine import Engine
    from storage.base import Storage
    from web.alerting_pages import AlertingViews
    from web.auth import Auth
    from web.sessions import SessionStore


def make_auth(cfg: RingmonConfig, storage: Storage | None = None) -> Auth:
    """Users from ``web.users`` (scrypt hashes); a bad hash is a config error naming the user.
    Sessions live in the Cassandra keyspace of ``storage`` when it is one (shared by the web
    processes of a cluster), else in ``<data_dir>/web-sessions.db``."""
    from web.auth import Auth
    from web.login_throttle import LoginThrottle

    secret = hashlib.sha256(cfg.web.session_secret.encode()).digest() if cfg.web.session_secret else None
    limits = cfg.web.login_limits
    try:
        kwargs: dict[str, Any] = {
            "users": dict(cfg.web.users), "secure_cookies": cfg.web.secure_cookies,
            "session_ttl_s": float(cfg.web.session_lifetime),
            "throttle": LoginThrottle(free_failures=limits.free_failures, base_delay_s=float(limits.first_delay),
                                      max_delay_s=float(limits.max_delay), address_factor=limits.address_factor),
            "sessions": session_store(cfg, storage),
            "trusted_proxies": frozenset(cfg.web.trusted_proxies),
        }
        if secret is not None:
            kwargs["secret"] = secret
        return Auth(**kwargs)
    except ValueError as exc:
        raise UserError(f"{cfg.source}: web.{exc}") from None


def session_store(cfg: RingmonConfig, storage: Storage | None = None) -> SessionStore:
    from alerting.service import uses_cassandra_state
    from web.sessions import CassandraSessionStore, SQLiteSessionStore

    if storage is not None and uses_cassandra_state("auto", storage):
        return CassandraSessionStore(storage)
    return SQLiteSessionStore(Path(cfg.data_dir) / "web-sessions.db")


def web_app_options(cfg: RingmonConfig, engine: Engine, alerting: AlertingViews | None = None,
                    storage: Storage | None = None, journal: NotificationJournal | None = None,
                    cluster: bool = True) -> dict[str, Any]:
    """Keyword arguments for ``web.app.create_app`` besides engine and providers; ``journal``:
    the notification journal of the notifications page and the webhook sink; ``cluster``:
    False for standalone."""
    from query.cache import RangeQueryCache
    from web.dashboards import DEFAULT_DIR
    from web.pprof import PprofSettings

    return {
        "auth": make_auth(cfg, storage),
        "range_cache": RangeQueryCache(engine),
        "dashboards_dirs": [DEFAULT_DIR, *cfg.web.dashboards_dirs],
        "alerting": alerting,
        "notifications": journal,
        "cluster": cluster,
        "pprof": PprofSettings(max_seconds=float(cfg.web.pprof_max_seconds)) if cfg.web.pprof else None,
    }


def alerting_views(cfg: RingmonConfig, manager: Any, silences: Any) -> AlertingViews:
    """Alerts, silences, rules and the rule editor over an in-process rule manager."""
    from web.alerting_pages import AlertingViews

    history = cfg.web.rules_history_dir or str(Path(cfg.data_dir) / "rules-history")
    return AlertingViews.from_parts(manager=manager, silences=silences, history_dir=history)


def api_flags(cfg: RingmonConfig, *, mode: str, **extra: str) -> dict[str, str]:
    """``/api/v1/status/flags``: the settings this process runs with, Prometheus-style names."""
    flags = {
        "mode": mode,
        "config.file": cfg.source,
        "web.listen-address": cfg.web.listen,
        "storage.backend": cfg.storage.backend,
        "rules.files": ",".join(cfg.rules.files),
        "alerting.file": cfg.alerting or "",
    }
    flags.update(extra)
    return {k: str(v) for k, v in flags.items()}


def retention_text() -> str:
    """``storageRetention`` of ``/api/v1/status/runtimeinfo``: how long each resolution is kept."""
    from storage.rollup import MINUTE_RETENTION_MS, QUERY_RAW_HORIZON_MS

    day = 86_400_000
    return f"raw {QUERY_RAW_HORIZON_MS // day}d, 1m rollups {MINUTE_RETENTION_MS // day}d, 1h rollups 1y"


def head_series_of(storage: Storage) -> Callable[[int, int], Awaitable[list[dict[str, str]]]]:
    """``/api/v1/status/tsdb``'s source: the label sets of every series with samples in a window."""
    from storage.matchers import Matcher, MatchOp

    async def head_series(start_ms: int, end_ms: int) -> list[dict[str, str]]:
        return [dict(s.labels) for s in await storage.series([Matcher("__name__", MatchOp.RE, ".+")], start_ms, end_ms)]

    return head_series
