"""The parts of the web app that come from config, shared by standalone and ``ringmon web``:
logins, the range-query cache, dashboards and the alerting pages."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from cli.config import RingmonConfig
from cli.errors import UserError


def make_auth(cfg: RingmonConfig) -> Any:
    """Users from ``web.users`` (scrypt hashes); a bad hash is a config error naming the user."""
    from web.auth import Auth

    secret = hashlib.sha256(cfg.web.session_secret.encode()).digest() if cfg.web.session_secret else None
    try:
        kwargs: dict[str, Any] = {"users": dict(cfg.web.users), "secure_cookies": cfg.web.secure_cookies}
        if secret is not None:
            kwargs["secret"] = secret
        return Auth(**kwargs)
    except ValueError as exc:
        raise UserError(f"{cfg.source}: web.{exc}") from None


def web_app_options(cfg: RingmonConfig, engine: Any, alerting: Any = None) -> dict[str, Any]:
    """Keyword arguments for ``web.app.create_app`` besides engine and providers."""
    from query.cache import RangeQueryCache
    from web.dashboards import DEFAULT_DIR

    return {
        "auth": make_auth(cfg),
        "range_cache": RangeQueryCache(engine),
        "dashboards_dirs": [DEFAULT_DIR, *cfg.web.dashboards_dirs],
        "alerting": alerting,
    }


def alerting_views(cfg: RingmonConfig, manager: Any, silences: Any) -> Any:
    """Alerts, silences, rules and the rule editor over an in-process rule manager."""
    from web.alerting_pages import AlertingViews

    history = cfg.web.rules_history_dir or str(Path(cfg.data_dir) / "rules-history")
    return AlertingViews.from_parts(manager=manager, silences=silences, history_dir=history)
