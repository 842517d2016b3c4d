"""The Ringmon web pages: aiohttp handlers rendering Jinja2 templates with server-side SVG charts.

``create_app(engine=..., pools_provider=..., targets_provider=...)`` builds the application.
Pages work without JavaScript; every value is escaped (autoescape on, charts escape their
own text); every response carries security headers (a CSP without inline scripts or
styles, nosniff, no framing, a strict referrer policy). Other routes (the Prometheus HTTP
API, ``/metrics``) may be added to the returned app before it starts.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import math
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlencode

import numpy as np
from aiohttp import web
from aiohttp.typedefs import Handler
from markupsafe import Markup

from alerting.notifier.journal import NotificationJournal
from query.promjson import INFO_PREFIX
from query.resolution import SourceResolution
from query.result import ResultSeries
from web import chart
from web.alerting_pages import ALERTING, AlertingViews, add_alerting_routes, add_login_routes
from web.auth import Auth, auth_middleware
from web.common import (
    AUTH,
    BASE_NAV,
    CONTENT_SECURITY_POLICY,
    DASHBOARDS,
    ENGINE,
    JINJA,
    NAV,
    NON_HTML_PREFIXES,
    POOLS,
    RANGE_ENGINE,
    SECURITY_HEADERS,
    STATIC_DIR,
    TARGETS,
    TITLE,
    is_query_error,
    make_jinja,
    promql_string,
    render,
)
from web.dashboards import DEFAULT_DIR as DEFAULT_DASHBOARDS
from web.dashboards import Dashboard, DashboardStore, alert_threshold, expand
from web.notifications import add_notification_routes
from web.pprof import PprofSettings, add_pprof_routes
from web.providers import (
    PoolsProvider,
    PoolSummary,
    QueryEngine,
    TargetHealth,
    TargetsProvider,
    coerce_pool,
    coerce_target,
)
from web.timerange import TimeRange, parse_time_range

__all__ = ["CONTENT_SECURITY_POLICY", "create_app", "promql_string"]

log = logging.getLogger("ringmon.web")
_T = TypeVar("_T")

MAX_EXPR_LEN = 10_000
MAX_TABLE_ROWS = 500
PANEL_WIDTH = {"half": 640, "full": 1300}

HOST_CPU_EXPR = "sum by (mode) (rate(node_cpu_seconds_total{{job={job}, instance={instance}}}[{window}]))"


TZ_COOKIE = "ringmon_tz"
_RequestKey = getattr(web, "RequestKey", None)
REMEMBER_TZ = _RequestKey("ringmon_remember_tz", str) if _RequestKey else "ringmon_remember_tz"


def page_time_range(request: web.Request) -> TimeRange:
    """The page's window; the zone comes from ``?tz=`` or, failing that, the zone cookie."""
    query = dict(request.query)
    if not query.get("tz") and request.cookies.get(TZ_COOKIE):
        query["tz"] = request.cookies[TZ_COOKIE]
    tr = parse_time_range(query)
    if request.query.get("tz") and tr.tz_name == request.query["tz"].strip():
        request[REMEMBER_TZ] = tr.tz_name
    return tr


async def _call_provider(
    provider: Callable[[], Awaitable[Sequence[Any]]], what: str
) -> tuple[list[Any], str]:
    """The provider's items, or an empty list and a one-line error for the page."""
    try:
        return list(await provider()), ""
    except Exception as exc:
        log.exception("provider failed", extra={"provider": what})
        return [], f"{what} are unavailable: {type(exc).__name__}: {exc}"


async def load_pools(request: web.Request) -> tuple[list[PoolSummary], str]:
    pools, err = await _load_items(request.app[POOLS], "pools", coerce_pool, "a pool summary")
    pools.sort(key=lambda p: p.name)
    return pools, err


async def load_targets(request: web.Request) -> tuple[list[TargetHealth], str]:
    targets, err = await _load_items(request.app[TARGETS], "targets", coerce_target, "a target")
    targets.sort(key=lambda t: (t.pool, t.address, t.key))
    return targets, err


async def _load_items(
    provider: Callable[[], Awaitable[Sequence[Any]]], what: str, coerce: Callable[[Any], _T], one: str
) -> tuple[list[_T], str]:
    """The provider's items read by ``coerce``; the first one that cannot be read (or the
    provider failing) is the page's one-line error, the others are still shown."""
    raw, err = await _call_provider(provider, what)
    items = []
    for item in raw:
        try:
            items.append(coerce(item))
        except (TypeError, ValueError) as exc:
            err = err or f"{one} could not be read: {exc}"
    return items, err


def source_kw(tr: TimeRange) -> dict[str, Any]:
    """The engine's ``source`` argument for the page's ``max_source_resolution`` (none for auto)."""
    return {} if tr.source == "auto" else {"source": SourceResolution(tr.source)}


async def query_to_now(ranges: QueryEngine, instant: QueryEngine | None, expr: str, tr: TimeRange) -> Any:
    """``expr`` over the page's step grid plus, when the page's now is past the grid's last
    step, one more point at now from an instant query: the chart reaches now without
    evaluating a step in the future (whose rate window would be partly empty). A failing
    instant query costs only that point."""
    kw = source_kw(tr)
    result = await ranges.range_query(expr, tr.start_ms, tr.end_ms, tr.step_ms, **kw)
    if instant is None or tr.now_ms <= tr.end_ms or getattr(result, "type", "matrix") != "matrix":
        return result
    try:
        head = await instant.instant_query(expr, tr.now_ms, **kw)
    except Exception as exc:
        log.warning("instant query for the newest point failed", extra={"expr": expr, "error": repr(exc)})
        return result
    return with_point_at(result, head, tr.now_ms)


def with_point_at(result: Any, head: Any, ts_ms: int) -> Any:
    """A copy of the matrix ``result`` with the instant result ``head`` appended at ``ts_ms``
    (series matched by labels; a series only in ``head`` gets that one point)."""
    if head.type == "scalar" and head.scalar is not None:
        points = {(): float(head.scalar[1])}
    else:
        points = {tuple(sorted(s.labels.items())): float(s.values[-1]) for s in head.series if len(s.values)}
    if not points:
        return result
    ts = np.array([ts_ms], dtype=np.int64)
    series = []
    for s in result.series:
        value = points.pop(tuple(sorted(s.labels.items())), None)
        if value is None:
            series.append(s)
        else:
            series.append(ResultSeries(s.labels, np.append(s.timestamps, ts), np.append(s.values, value)))
    series.extend(ResultSeries(dict(k), ts, np.array([v])) for k, v in points.items())
    return dataclasses.replace(result, series=series)


@dataclasses.dataclass(frozen=True)
class RangeChart:
    """A drawn range query: the chart, why it failed (``error``, then the chart is empty), the
    caveats of an answer that stands (``warning``: e.g. approximate from rollups), its series."""

    svg: Markup
    error: str
    warning: str
    series_count: int


async def range_chart(
    engine: QueryEngine,
    expr: str,
    tr: TimeRange,
    *,
    instant: QueryEngine | None = None,
    title: str,
    unit: str = "none",
    mode: str = "line",
    legend: str | None = None,
    thresholds: Sequence[float] = (),
    width: int = 800,
    height: int = 240,
    empty_text: str = "No data",
) -> RangeChart:
    """Run ``expr`` over the page's range and draw it.

    ``engine`` answers the range query (perhaps through the range cache); ``instant``, when
    given, adds the point at the page's now (see ``query_to_now``)."""
    try:
        result = await query_to_now(engine, instant, expr, tr)
        series = chart.series_from_result(result, legend)
        err, warning = "", "; ".join(w for w in getattr(result, "warnings", None) or [] if not w.startswith(INFO_PREFIX))
    except Exception as exc:  # a bad or failing query is shown on its panel, not as a 500
        if not is_query_error(exc):
            log.exception("range query failed", extra={"expr": expr})
        series, err, warning = [], f"{type(exc).__name__}: {exc}", ""
    spec = chart.ChartSpec(
        title=title,
        unit=unit,
        mode=mode,
        width=width,
        height=height,
        start_ms=tr.start_ms,
        end_ms=tr.now_ms,
        step_ms=tr.step_ms,
        tz=tr.tz,
        thresholds=thresholds,
        empty_text=empty_text,
    )
    return RangeChart(Markup(chart.render_chart(series, spec)), err, warning, len(series))


# -- handlers ------------------------------------------------------------------------------------


async def overview(request: web.Request) -> web.Response:
    pools, perr = await load_pools(request)
    targets, terr = await load_targets(request)
    up = sum(1 for t in targets if t.health == "up")
    down = sum(1 for t in targets if t.health == "down")
    alert_counts = await _alert_counts(request)
    return render(
        request,
        "overview.html",
        page_title="Overview",
        pools=pools,
        running=sum(p.running for p in pools),
        targets_total=len(targets),
        targets_up=up,
        targets_down=down,
        problem_targets=[t for t in targets if t.health == "down"][:20],
        alert_counts=alert_counts,
        errors=[e for e in (perr, terr) if e],
    )


async def _alert_counts(request: web.Request) -> dict[str, int] | None:
    """Firing and pending alerts for the overview, when this process evaluates rules."""
    views = request.app.get(ALERTING)
    if views is None or views.rules_status is None:
        return None
    try:
        groups = await views.rules_status()
    except Exception:
        log.exception("rules status failed")
        return None
    counts = {"firing": 0, "pending": 0}
    for g in groups:
        for r in g.get("rules", []):
            for a in r.get("alerts", []):
                if a.get("state") in counts:
                    counts[a["state"]] += 1
    return counts


async def pools_page(request: web.Request) -> web.Response:
    pools, err = await load_pools(request)
    return render(request, "pools.html", page_title="Pools", pools=pools, errors=[err] if err else [])


async def targets_page(request: web.Request) -> web.Response:
    targets, err = await load_targets(request)
    pool = request.query.get("pool", "")
    health = request.query.get("health", "")
    shown = [t for t in targets if (not pool or t.pool == pool) and (not health or t.health == health)]
    pool_names = sorted({t.pool for t in targets})
    errors = [err] if err else []
    if pool and pool not in pool_names and not err:
        errors.append(f"There is no pool {pool!r} (pools: {', '.join(pool_names) or 'none yet'}).")
    return render(
        request,
        "targets.html",
        page_title="Targets",
        targets=shown,
        total=len(targets),
        pool_filter=pool,
        health_filter=health,
        pool_names=pool_names,
        errors=errors,
        status=404 if len(errors) > bool(err) else 200,
    )


async def host_page(request: web.Request) -> web.Response:
    """One host's CPU chart; a pool or host the targets do not know (and that has no data)
    is answered 404 with the pools or hosts there are, not with an empty chart."""
    pool = request.match_info["pool"]
    instance = request.match_info["instance"]
    tr = page_time_range(request)
    expr = HOST_CPU_EXPR.format(
        job=promql_string(pool), instance=promql_string(instance), window=tr.rate_window
    )
    drawn, (targets, terr) = await asyncio.gather(
        range_chart(
            request.app[RANGE_ENGINE],
            expr,
            tr,
            instant=request.app[ENGINE],
            title=f"CPU usage by mode: {instance}",
            unit="cores",
            legend="{{mode}}",
            width=PANEL_WIDTH["full"],
            height=320,
            empty_text=f"No CPU samples of {instance} in this range",
        ),
        load_targets(request),
    )
    target = next((t for t in targets if t.pool == pool and t.address == instance), None)
    pool_hosts = sorted(t.address for t in targets if t.pool == pool)
    unknown = ""
    if target is None and not terr and drawn.series_count == 0 and not drawn.error:
        if pool_hosts:
            unknown = f"Pool {pool!r} has no host {instance!r}."
        else:
            unknown = f"There is no pool {pool!r}."
    return render(
        request,
        "host.html",
        status=404 if unknown else 200,
        page_title=f"Host {instance}",
        pool=pool,
        instance=instance,
        target=target,
        expr=expr,
        cpu_chart=drawn.svg,
        chart_error=drawn.error,
        chart_warning=drawn.warning,
        series_count=drawn.series_count,
        time_range=tr,
        unknown=unknown,
        pool_hosts=pool_hosts,
        pool_names=sorted({t.pool for t in targets}),
        errors=tr.errors + ([terr] if terr else []),
    )


async def dashboards_index(request: web.Request) -> web.Response:
    store = request.app[DASHBOARDS]
    return render(
        request,
        "dashboards.html",
        page_title="Dashboards",
        dashboards=store.all(),
        load_errors=store.errors,
    )


async def _variable_values(
    engine: QueryEngine, dash: Dashboard, query: Mapping[str, str], tr: TimeRange
) -> tuple[dict[str, str], dict[str, list[str]], list[str], list[str]]:
    """Each variable's value (request, else default, else first option), its options, errors,
    and the values that are none of their variable's choices (``Host '10.0.0.9:9100'``)."""
    values: dict[str, str] = {}
    options: dict[str, list[str]] = {}
    errors: list[str] = []
    unknown: list[str] = []
    builtins = _builtins(tr)
    for var in dash.variables:
        value = (query.get(var.name) or var.default or "").strip()
        opts: list[str] = []
        if var.options_query:
            expr = expand(var.options_query, values, builtins)
            try:
                result = await engine.instant_query(expr, tr.now_ms)
                opts = sorted({s.labels.get(var.options_label, "") for s in result.series} - {""})
            except Exception as exc:
                errors.append(f"{var.label}: choices unavailable: {type(exc).__name__}: {exc}")
        if not value and opts:
            value = opts[0]
        if value and value not in opts and var.options_query:
            if opts:  # the choices came back: this value is none of them
                unknown.append(f"{var.label} {value!r}")
                errors.append(
                    f"{var.label} {value!r} is unknown: no series of {expr} has {var.options_label}={value!r}"
                    f" (choices: {', '.join(opts[:20])}{', …' if len(opts) > 20 else ''})"
                )
            opts = [value, *opts]
        values[var.name] = value
        options[var.name] = opts
    return values, options, errors, unknown


def _builtins(tr: TimeRange) -> dict[str, str]:
    from web.timerange import format_duration_s

    return {
        "__rate_interval": tr.rate_window,
        "__interval": format_duration_s(tr.step_s),
        "__range": format_duration_s(tr.range_s),
    }


async def _alert_thresholds(request: web.Request, dash: Dashboard) -> dict[str, float]:
    """Threshold of each alerting rule a panel of ``dash`` names (rules of this process)."""
    wanted = {p.alert for p in dash.panels if p.alert}
    views = request.app.get(ALERTING)
    if not wanted or views is None or views.rules_status is None:
        return {}
    try:
        groups = await views.rules_status()
    except Exception:
        log.exception("rules status failed")
        return {}
    out: dict[str, float] = {}
    for g in groups:
        for r in g.get("rules", []):
            if r.get("type") == "alerting" and r.get("name") in wanted and r["name"] not in out:
                value = alert_threshold(r.get("query", ""))
                if value is not None:
                    out[r["name"]] = value
    return out


async def _panel_chart(
    engine: QueryEngine,
    panel: Any,
    values: Mapping[str, str],
    tr: TimeRange,
    alert_line: tuple[str, float] | None = None,
    instant: QueryEngine | None = None,
    empty_text: str = "",
) -> dict[str, Any]:
    """One panel: its queries over the page's range drawn as one chart (an alerting rule's
    threshold, when the panel names one, drawn and labelled with the rule's name)."""
    builtins = _builtins(tr)
    exprs = [(expand(q.expr, values, builtins), q.legend or None) for q in panel.queries]
    results = await asyncio.gather(*(query_to_now(engine, instant, e, tr) for e, _ in exprs), return_exceptions=True)
    series: list[chart.ChartSeries] = []
    errors: list[str] = []
    warnings: list[str] = []  # the answer stands, with a caveat (e.g. approximate from rollups)
    for (expr, legend), res in zip(exprs, results, strict=True):
        if isinstance(res, BaseException):
            if not isinstance(res, Exception):
                raise res
            if not is_query_error(res):
                log.error("panel query failed", extra={"expr": expr, "error": repr(res)})
            errors.append(f"{type(res).__name__}: {res}")
            continue
        series.extend(chart.series_from_result(res, legend))
        warnings.extend(w for w in getattr(res, "warnings", None) or [] if not w.startswith(INFO_PREFIX))
    spec = chart.ChartSpec(
        title=panel.title,
        unit=panel.unit,
        mode=panel.mode,
        width=PANEL_WIDTH.get(panel.width, 640),
        height=220,
        start_ms=tr.start_ms,
        end_ms=tr.now_ms,
        step_ms=tr.step_ms,
        tz=tr.tz,
        thresholds=tuple(sorted(set(panel.thresholds) | ({alert_line[1]} if alert_line else set()))),
        threshold_names={alert_line[1]: alert_line[0]} if alert_line else {},
        empty_text=empty_text or panel.empty or "No data",
    )
    return {
        "panel": panel,
        "svg": Markup(chart.render_chart(series, spec)),
        "errors": errors,
        "warnings": warnings,
        "exprs": [e for e, _ in exprs],
        "series_count": len(series),
    }


async def dashboard_page(request: web.Request) -> web.Response:
    dash = request.app[DASHBOARDS].get(request.match_info["name"])
    if dash is None:
        raise web.HTTPNotFound(text=f"There is no dashboard named {request.match_info['name']!r}.")
    engine = request.app[ENGINE]
    tr = page_time_range(request)
    values, options, var_errors, unknown = await _variable_values(engine, dash, request.query, tr)
    empty_text = f"No data: {', '.join(unknown)} unknown" if unknown else ""
    ranges = request.app[RANGE_ENGINE]
    alert_lines = await _alert_thresholds(request, dash)
    panels = await asyncio.gather(
        *(
            _panel_chart(
                ranges, p, values, tr, (p.alert, alert_lines[p.alert]) if p.alert in alert_lines else None,
                request.app[ENGINE], empty_text,
            )  # fmt: skip
            for p in dash.panels
        )
    )
    return render(
        request,
        "dashboard.html",
        page_title=dash.title,
        dashboard=dash,
        panels=panels,
        values=values,
        options=options,
        time_range=tr,
        errors=tr.errors + var_errors,
    )


def _cell(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    return repr(float(value)) if not float(value).is_integer() or abs(value) >= 1e15 else str(int(value))


async def graph_redirect(request: web.Request) -> web.Response:
    """Prometheus-style links (an alert's generatorURL, ``graphLink``): ``/graph?g0.expr=...``."""
    raise web.HTTPFound("/query?" + urlencode({"expr": request.query.get("g0.expr", "")}))


async def query_page(request: web.Request) -> web.Response:
    """Ad-hoc PromQL: a chart over the range and a table of the values at its end."""
    expr = request.query.get("expr", "").strip()
    tr = page_time_range(request)
    errors = list(tr.errors)
    svg: Markup | None = None
    rows: list[dict[str, Any]] = []
    truncated = 0
    error_position = None
    warning = ""
    if len(expr) > MAX_EXPR_LEN:
        errors.append(f"expr: at most {MAX_EXPR_LEN} characters, got {len(expr)}")
        expr_run = ""
    else:
        expr_run = expr
    if expr_run:
        engine = request.app[ENGINE]
        drawn = await range_chart(
            request.app[RANGE_ENGINE], expr_run, tr, instant=engine, title=expr_run, width=1300, height=320,
            empty_text="No series matched in this range",
        )  # fmt: skip
        svg, chart_error, warning = drawn.svg, drawn.error, drawn.warning
        try:
            result = await engine.instant_query(expr_run, tr.now_ms, **source_kw(tr))
            if result.type == "scalar" and result.scalar is not None:
                rows.append({"labels": "scalar", "value": _cell(result.scalar[1])})
            elif result.type == "string" and result.string is not None:
                rows.append({"labels": "string", "value": result.string[1]})
            for s in result.series:
                if len(rows) >= MAX_TABLE_ROWS:
                    truncated += 1
                    continue
                v = _cell(float(s.values[-1])) if len(s.values) else ""
                rows.append({"labels": chart.legend_name(s.labels), "value": v})
        except Exception as exc:
            if not is_query_error(exc):
                log.exception("instant query failed", extra={"expr": expr_run})
            line, col = getattr(exc, "line", None), getattr(exc, "column", None)
            if line is not None:
                error_position = (line, col)
            errors.append(f"{type(exc).__name__}: {exc}")
            chart_error = warning = ""
            svg = None  # the error is the answer: no empty chart, no "No series." under it
        if chart_error and chart_error not in " ".join(errors):
            errors.append(chart_error)
    return render(
        request,
        "query.html",
        page_title="Query",
        expr=expr,
        chart_svg=svg,
        rows=rows,
        truncated=truncated,
        error_position=error_position,
        time_range=tr,
        errors=errors,
        warnings=[warning] if warning else [],
    )


async def favicon(request: web.Request) -> web.FileResponse:
    return web.FileResponse(STATIC_DIR / "favicon.svg", headers={"Content-Type": "image/svg+xml"})


async def healthy(request: web.Request) -> web.Response:
    return web.Response(text=f"{request.app[TITLE]} is Healthy.\n")


async def ready(request: web.Request) -> web.Response:
    """Serving means ready: the store and engine are opened before the server listens."""
    return web.Response(text=f"{request.app[TITLE]} is Ready.\n")


# -- middleware and signals ----------------------------------------------------------------------


async def _security_headers(request: web.Request, response: web.StreamResponse) -> None:
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    if response.content_type == "text/html":
        response.headers.setdefault("Cache-Control", "no-store")


@web.middleware
async def error_pages(request: web.Request, handler: Handler) -> web.StreamResponse:
    """HTML error pages for page routes; no traceback ever reaches the browser."""
    if request.path.startswith(NON_HTML_PREFIXES):
        return await handler(request)
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        message = exc.text if exc.status != 404 else f"There is no page at {request.path}."
        return render(request, "error.html", status=exc.status, page_title=exc.reason, message=message)
    except Exception:
        log.exception("page failed", extra={"path": request.path})
        return render(
            request,
            "error.html",
            status=500,
            page_title="Internal error",
            message="The page could not be rendered; the server log has the details.",
        )
    if isinstance(response, web.Response) and response.content_type == "text/html":
        response.enable_compression()  # gzip/deflate if the client accepts it
    zone = request.get(REMEMBER_TZ)
    if zone and isinstance(response, web.StreamResponse):  # the viewer chose a zone: keep it
        response.set_cookie(TZ_COOKIE, zone, max_age=365 * 86400, httponly=True, samesite="Lax", path="/")
    return response


async def _close_sessions(app: web.Application) -> None:
    close = getattr(app[AUTH].sessions, "close", None)
    if close is not None:
        await close()


def create_app(
    *,
    engine: QueryEngine,
    pools_provider: PoolsProvider,
    targets_provider: TargetsProvider,
    title: str = "Ringmon",
    dashboards_dirs: Sequence[str | Path] | None = None,
    alerting: AlertingViews | None = None,
    auth: Auth | None = None,
    range_cache: Any = None,
    middlewares: Sequence[Callable] = (),
    notifications: NotificationJournal | None = None,
    cluster: bool = True,
    pprof: PprofSettings | None = None,
) -> web.Application:
    """The web application.

    ``dashboards_dirs``: directories of dashboard YAML files (default: the dashboards shipped
    in ``web/dashboards``). ``alerting``: the alerts, silences and rules pages and the rule
    editor (absent: those pages are not mounted). ``auth``: users who may change things
    (absent or without users: nothing can be changed from the browser). ``range_cache``: an
    object with the engine's ``range_query`` (e.g. ``query.cache.RangeQueryCache``) that
    charts use instead of the engine. ``middlewares`` run outside ours (e.g. request
    instrumentation). ``notifications``: the notification journal behind the notifications page and the
    webhook sink (absent: neither is mounted). ``cluster``: False in standalone (dashboards
    leave out their ``cluster_only`` panels). ``pprof``: serve ``/debug/pprof/`` (absent: not mounted).
    """
    auth = auth if auth is not None else Auth(users={})
    app = web.Application(middlewares=[*middlewares, error_pages, auth_middleware(auth)])
    app[AUTH] = auth
    app.on_cleanup.append(_close_sessions)
    app[ENGINE] = engine
    app[RANGE_ENGINE] = range_cache if range_cache is not None else engine
    app[POOLS] = pools_provider
    app[TARGETS] = targets_provider
    app[TITLE] = title
    app[JINJA] = make_jinja()
    app[DASHBOARDS] = DashboardStore(
        list(dashboards_dirs) if dashboards_dirs is not None else [DEFAULT_DASHBOARDS], cluster=cluster
    )
    app.on_response_prepare.append(_security_headers)
    app.router.add_get("/", overview, name="overview")
    app.router.add_get("/pools", pools_page, name="pools")
    app.router.add_get("/targets", targets_page, name="targets")
    app.router.add_get("/host/{pool}/{instance}", host_page, name="host")
    app.router.add_get("/dashboards", dashboards_index, name="dashboards")
    app.router.add_get("/d/{name}", dashboard_page, name="dashboard")
    app.router.add_get("/query", query_page, name="query")
    app.router.add_get("/graph", graph_redirect, name="graph")
    app.router.add_get("/-/healthy", healthy, name="healthy")
    app.router.add_get("/-/ready", ready, name="ready")
    app.router.add_get("/favicon.ico", favicon, name="favicon")
    app.router.add_static("/static/", STATIC_DIR, name="static")
    if pprof is not None:
        add_pprof_routes(app, pprof)
    nav = list(BASE_NAV)
    if alerting is not None:
        nav.extend(add_alerting_routes(app, alerting))
    if notifications is not None:
        nav.extend(add_notification_routes(app, notifications))
    add_login_routes(app)
    app[NAV] = nav
    return app
