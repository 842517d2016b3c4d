"""Shared by the page modules: app keys, the Jinja2 environment, ``render`` and small helpers."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import jinja2
from aiohttp import web

from web import chart
from web.auth import CSRF_FIELD, CSRF_KEY, USER_KEY, Auth
from web.dashboards import DashboardStore
from web.providers import PoolsProvider, QueryEngine, TargetsProvider
from web.timerange import PRESETS, REFRESH_CHOICES, SOURCE_CHOICES

HERE = Path(__file__).resolve().parent
TEMPLATES_DIR = HERE / "templates"
STATIC_DIR = HERE / "static"

CONTENT_SECURITY_POLICY = (
    "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Cross-Origin-Opener-Policy": "same-origin",
}
# Paths whose errors are not turned into HTML pages (JSON APIs mounted by other packages).
NON_HTML_PREFIXES = ("/api/", "/metrics", "/-/", "/debug/")

ENGINE = web.AppKey("engine", QueryEngine)
RANGE_ENGINE = web.AppKey("range_engine", QueryEngine)  # a range-query cache, or the engine itself
POOLS: web.AppKey[PoolsProvider] = web.AppKey("pools_provider")
TARGETS: web.AppKey[TargetsProvider] = web.AppKey("targets_provider")
JINJA = web.AppKey("jinja", jinja2.Environment)
TITLE = web.AppKey("title", str)
DASHBOARDS = web.AppKey("dashboards", DashboardStore)

NAV = web.AppKey("nav", list)
AUTH = web.AppKey("auth", Auth)

BASE_NAV = [
    ("/", "Overview"),
    ("/pools", "Pools"),
    ("/targets", "Targets"),
    ("/dashboards", "Dashboards"),
    ("/query", "Query"),
]


# -- helpers -------------------------------------------------------------------------------------


def promql_string(value: str) -> str:
    """A PromQL double-quoted string literal holding ``value`` exactly (no query injection)."""
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\r", "\\r")
    return f'"{escaped}"'


def path_segment(value: object) -> str:
    """``value`` quoted to be one URL path segment (slashes included)."""
    return quote(str(value), safe="")


def ago(ts: float | None, now: float | None = None) -> str:
    if ts is None:
        return "never"
    delta = (time.time() if now is None else now) - float(ts)
    if delta < 0:
        return "just now"
    if delta < 90:
        return f"{delta:.0f}s ago"
    if delta < 5400:
        return f"{delta / 60:.0f}m ago"
    if delta < 2 * 86400:
        return f"{delta / 3600:.1f}h ago"
    return f"{delta / 86400:.0f}d ago"


def abs_time(ts: float | None) -> str:
    if ts is None:
        return ""
    return chart.format_time(int(float(ts) * 1000))


def seconds(value: float | None) -> str:
    return "" if value is None else chart.humanize(float(value), "seconds")


# What a page that needs a login says when no user is configured: how to add one.
ADD_USER_HELP = (
    "No user is configured, so pages are read-only. To add one: run `ringmon hash-password`, "
    "put its output under web.users in the config (web: {users: {NAME: HASH}}), restart Ringmon, "
    "then log in."
)


def make_jinja() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATES_DIR)),
        autoescape=True,  # every template, whatever its extension
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["ago"] = ago
    env.filters["abs_time"] = abs_time
    env.filters["seconds"] = seconds
    env.filters["humanize"] = chart.humanize
    env.filters["pathseg"] = path_segment
    env.globals["urlencode"] = urlencode
    env.globals["RANGE_PRESETS"] = PRESETS
    env.globals["REFRESH_CHOICES"] = REFRESH_CHOICES
    env.globals["SOURCE_CHOICES"] = SOURCE_CHOICES
    env.globals["CSRF_FIELD"] = CSRF_FIELD
    env.globals["ADD_USER_HELP"] = ADD_USER_HELP
    return env


def render(request: web.Request, template: str, *, status: int = 200, **context: Any) -> web.Response:
    env = request.app[JINJA]
    context.setdefault("page_title", "")
    context.setdefault("time_range", None)
    context.setdefault("errors", [])
    context.setdefault("warnings", [])
    html = env.get_template(template).render(
        app_title=request.app[TITLE],
        path=request.path,
        request_query=dict(request.query),
        now_text=chart.format_time(int(time.time() * 1000)),
        nav=request.app[NAV],
        user=request.get(USER_KEY),
        csrf_token=request.get(CSRF_KEY, ""),
        auth_enabled=bool(request.app.get(AUTH) is not None and request.app[AUTH].enabled),
        **context,
    )
    return web.Response(text=html, content_type="text/html", status=status)


def is_query_error(exc: BaseException) -> bool:
    """Whether ``exc`` is the engine's own error for a bad or failing query (no traceback needed)."""
    return any(c.__name__ == "QueryError" for c in type(exc).__mro__)
