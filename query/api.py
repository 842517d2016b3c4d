"""Prometheus HTTP API v1 over our engine: query, query_range (with ``stats``), series, labels,
label values, format_query, parse_query, status/buildinfo; GET and POST form, the upstream JSON
written byte for byte as Prometheus writes it (``query.promjson``), its error format, and JSON
404/405 answers for unknown paths and methods. The fleet endpoints (targets, metadata, rules,
alerts, status) are mounted by ``web.prom_api``.

Mount with ``add_api_routes(app, engine, storage)`` (optionally with a ``RangeQueryCache``).
"""

from __future__ import annotations

import datetime as _dt
import logging
import math
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from common import durations
from common.http_body import piecewise
from query.engine import Engine
from query.errors import ParseError, QueryError
from query.parse import MatrixSel, VectorSel
from query.parse import parse as parse_promql
from query.promjson import (
    annotations_json,
    dumps,
    format_timestamp,
    format_value,
    go_format_float,
    go_json_float,
    go_string,
    labels_json,
)
from query.promql_text import ast_json, pretty_promql
from query.resolution import SourceResolution
from query.result import QueryResult
from storage.base import Storage, StorageError
from storage.matchers import Matcher

if TYPE_CHECKING:
    from query.cache import RangeQueryCache

log = logging.getLogger("ringmon.query.api")

API_VERSION = "2.53.0-ringmon"
MIN_TIME_MS = -9_223_372_036_854_775 // 1000 * 1000
MAX_TIME_MS = 9_223_372_036_854_775 // 1000 * 1000
# Times a request may name: up to 9999-12-31 (RFC 3339's last second), as far before 1970, so that
# the engine's time arithmetic (ranges, offsets, lookback) stays inside int64 milliseconds.
MAX_QUERY_TIME_MS = 253_402_300_799_000  # 9999-12-31T23:59:59Z
MIN_QUERY_TIME_MS = -MAX_QUERY_TIME_MS


class ApiError(Exception):
    """An error answered in the Prometheus format."""

    STATUS = {"bad_data": 400, "execution": 422, "timeout": 503, "canceled": 499, "internal": 500, "not_found": 404,
              "unavailable": 503}

    def __init__(self, error_type: str, message: str) -> None:
        super().__init__(message)
        self.error_type = error_type
        self.message = message

    def response(self, status: int | None = None) -> web.Response:
        return web.Response(
            text=dumps({"status": "error", "errorType": self.error_type, "error": self.message}),
            status=status or self.STATUS.get(self.error_type, 500),
            content_type="application/json",
        )


# ----------------------------------------------------------------- formatting
# From this many values on, ``format_values`` looks for repeats: a series' values often are a
# few distinct ones (a gauge that holds still, a counter between scrapes, the steps of a range
# query that all see the same last sample), each then written once.
REPEATS_MIN = 64


def format_values(values: np.ndarray) -> list[str]:
    """``format_value`` of every element, vectorised: Python's shortest repr is what Go
    writes for finite values outside exponent range, less a trailing ".0". Values that
    repeat (the same bits: -0 apart from 0, every NaN as it is) are formatted once."""
    vals = np.ascontiguousarray(values, dtype=np.float64)
    if vals.size >= REPEATS_MIN:
        bits, where = np.unique(vals.reshape(-1).view(np.int64), return_inverse=True)
        if bits.size * 4 <= vals.size:
            distinct = _format_values(bits.view(np.float64))
            return list(map(distinct.__getitem__, where.tolist()))
    return _format_values(vals)


def _format_values(vals: np.ndarray) -> list[str]:
    out = list(map(float.__repr__, vals.tolist()))
    with np.errstate(invalid="ignore"):
        mag = np.abs(vals)
        odd = ~np.isfinite(vals) | (mag >= 1e16) | ((mag < 1e-4) & (mag > 0))
        whole = ~odd & (vals == np.floor(vals))
    for i in np.flatnonzero(whole).tolist():
        out[i] = out[i][:-2]
    for i in np.flatnonzero(odd).tolist():
        out[i] = format_value(float(vals[i]))
    return out


def format_timestamps(ms: np.ndarray) -> list[str]:
    """``format_timestamp`` of every element (whole seconds, the usual case, in one pass)."""
    ts = np.asarray(ms, dtype=np.int64)
    if not (ts % 1000).any():
        return list(map(str, (ts // 1000).tolist()))
    return [format_timestamp(t) for t in ts.tolist()]


def format_ts(ms: int) -> float | int:
    """Timestamps as float seconds with millisecond precision (ints stay ints), for callers
    that build JSON with ``json.dumps``; the API writes ``format_timestamp`` text."""
    ms = int(ms)
    if ms % 1000 == 0:
        return ms // 1000
    return round(ms / 1000.0, 3)


def result_json(res: QueryResult) -> dict[str, Any]:
    """The result as plain data (for ``json.dumps`` callers such as ``ringmon query``)."""
    if res.type == "scalar":
        ts, v = res.scalar or (0, math.nan)
        result: Any = [format_ts(ts), format_value(v)]
    elif res.type == "string":
        ts, s = res.string or (0, "")
        result = [format_ts(ts), s]
    elif res.type == "vector":
        result = [
            {"metric": s.labels, "value": [format_ts(int(s.timestamps[0])), format_value(float(s.values[0]))]}
            for s in res.series
        ]
    else:
        result = [
            {
                "metric": s.labels,
                "values": [
                    [t, v] for t, v in zip(format_ts_list(s.timestamps), format_values(s.values), strict=True)
                ],
            }
            for s in res.series
        ]
    return {"resultType": res.type, "result": result}


def format_ts_list(ms: np.ndarray) -> list[float | int]:
    return [format_ts(t) for t in np.asarray(ms, dtype=np.int64).tolist()]


def result_text(res: QueryResult, stats: dict[str, Any] | None = None) -> str:
    """The ``data`` member of a query answer, byte for byte as Prometheus writes it."""
    if res.type == "scalar":  # promql.Scalar.MarshalJSON: a float time, the value always 'f'
        ts, v = res.scalar or (0, math.nan)
        result = f'[{go_json_float(ts / 1000)},"{go_format_float(v, "f")}"]'
    elif res.type == "string":
        ts, text = res.string or (0, "")
        result = f"[{go_json_float(ts / 1000)},{go_string(text)}]"
    elif res.type == "vector":
        result = "[" + ",".join(
            f'{{"metric":{labels_json(s.labels)},"value":'
            f'[{format_timestamp(int(s.timestamps[0]))},"{format_value(float(s.values[0]))}"]}}'
            for s in res.series
        ) + "]"
    else:
        parts = []
        heads: dict[bytes, list[str]] = {}  # '[<t>,"' per timestamp, per distinct timestamps (the steps)
        for s in res.series:
            key = np.ascontiguousarray(s.timestamps, dtype=np.int64).tobytes()
            head = heads.get(key)
            if head is None:
                head = heads[key] = [f'[{t},"' for t in format_timestamps(s.timestamps)]
            # '[t0,"v0' '"],' '[t1,"v1' ... '"]': each point as f'[{t},"{v}"]', comma-separated
            values = format_values(s.values)
            if len(values) != len(head):
                raise ValueError(f"{len(head)} timestamps, {len(values)} values")
            points = '"],'.join(map(str.__add__, head, values)) + '"]' if values else ""
            parts.append(f'{{"metric":{labels_json(s.labels)},"values":[{points}]}}')
        result = "[" + ",".join(parts) + "]"
    tail = f',"stats":{dumps(stats)}' if stats is not None else ""
    return f'{{"resultType":"{res.type}","result":{result}{tail}}}'


def success_body(data: str, warnings: list[str] | None = None) -> str:
    """The body of a success answer around ``data`` already written as JSON text."""
    return f'{{"status":"success","data":{data}{annotations_json(warnings)}}}'


def success_text(data: str, warnings: list[str] | None = None) -> web.Response:
    """A success answer around ``data`` already written as JSON text."""
    return web.Response(text=success_body(data, warnings), content_type="application/json")


def success(data: Any, warnings: list[str] | None = None) -> web.Response:
    return success_text(dumps(data), warnings)


# ------------------------------------------------------------------- parsing


def _seconds_ms(t: str) -> int | None:
    """A finite number of seconds in milliseconds, or None."""
    try:
        v = float(t)
        return None if math.isnan(v) or math.isinf(v) else int(round(v * 1000))
    except (ValueError, OverflowError):
        return None


def parse_time_ms(text: str, name: str) -> int:
    """Unix seconds (float) or RFC 3339, as the Prometheus API accepts."""
    t = text.strip()
    ms = _seconds_ms(t)
    if ms is None:
        try:
            iso = t.replace("Z", "+00:00")
            dt = _dt.datetime.fromisoformat(iso)
            if dt.tzinfo is None:
                dt = dt.replace(tzinfo=_dt.UTC)
            ms = int(round(dt.timestamp() * 1000))
        except ValueError:
            raise ApiError("bad_data", f'invalid parameter "{name}": cannot parse "{text}" to a valid timestamp') from None
    if not MIN_QUERY_TIME_MS <= ms <= MAX_QUERY_TIME_MS:
        raise ApiError(
            "bad_data",
            f'invalid parameter "{name}": timestamp "{text}" is out of range '
            f"(between {MIN_QUERY_TIME_MS // 1000} and {MAX_QUERY_TIME_MS // 1000} seconds)",
        )
    return ms


def parse_duration_ms(text: str, name: str) -> int:
    """Seconds (float) or a Prometheus duration, as the API accepts."""
    t = text.strip()
    ms = _seconds_ms(t)
    if ms is None:
        try:
            ms = durations.parse_duration_ms(t)
        except durations.DurationError:
            ms = None
    if ms is None:
        raise ApiError("bad_data", f'invalid parameter "{name}": cannot parse "{text}" to a valid duration')
    if abs(ms) > MAX_QUERY_TIME_MS - MIN_QUERY_TIME_MS:
        raise ApiError("bad_data", f'invalid parameter "{name}": duration "{text}" is out of range')
    return ms


# An endpoint's body: the request's query and form parameters in, a response out.
ParamsHandler = Callable[[dict[str, list[str]]], Awaitable[web.StreamResponse]]


async def _params(request: web.Request) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for k, v in request.query.items():
        out.setdefault(k, []).append(v)
    if request.method == "POST":
        ctype = request.content_type or ""
        if ctype not in ("application/x-www-form-urlencoded", "multipart/form-data", ""):
            raise ApiError("bad_data", f"unsupported content type {ctype!r}: use a form")
        form = await request.post()
        for k, fv in form.items():
            out.setdefault(k, []).append(str(fv))
    return out


def one(params: dict[str, list[str]], name: str) -> str | None:
    """The last value of a request parameter (query string or form), or None."""
    vals = params.get(name)
    return vals[-1] if vals else None


_one = one


def matchers_of(selectors: list[str], param: str = "match[]") -> list[list[Matcher]]:
    """The matchers of each series selector; a bad one is a ``bad_data`` error naming ``param``."""
    out = []
    for sel in selectors:
        try:
            node = parse_promql(sel)
        except ParseError as exc:
            raise ApiError("bad_data", f'invalid parameter "{param}": {exc}') from None
        if isinstance(node, MatrixSel):
            node = node.vector
        if not isinstance(node, VectorSel):
            raise ApiError("bad_data", f'invalid parameter "{param}": {sel!r} is not a series selector')
        out.append(list(node.matchers))
    return out


_matchers_of = matchers_of


# Metadata lookups (series, labels, label values) never reach further than the longest
# retention (1-hour rollups, a year) nor past tomorrow: clients such as promtool send
# "all time" by default and the series index is partitioned by day.
METADATA_LOOKBACK_MS = 366 * 86_400_000


def _range_params(params: dict[str, list[str]]) -> tuple[int, int]:
    start = _one(params, "start")
    end = _one(params, "end")
    s = parse_time_ms(start, "start") if start else MIN_TIME_MS
    e = parse_time_ms(end, "end") if end else MAX_TIME_MS
    if e < s:
        raise ApiError("bad_data", 'invalid parameter "end": end timestamp must not be before start time')
    now = int(time.time() * 1000)
    s = max(s, now - METADATA_LOOKBACK_MS)
    e = min(e, now + 86_400_000)
    return s, max(s, e)


def _limit(params: dict[str, list[str]]) -> int:
    text = _one(params, "limit")
    if not text:
        return 0
    try:
        n = int(text)
    except ValueError:
        raise ApiError("bad_data", f'invalid parameter "limit": cannot parse "{text}" to a valid limit') from None
    if n < 0:
        raise ApiError("bad_data", 'invalid parameter "limit": limit must be non-negative')
    return n


def _limited(data: list, limit: int) -> web.Response:
    """The first ``limit`` items (all for 0), with Prometheus' warning when that cut any."""
    if limit and len(data) > limit:
        return success(data[:limit], ["results truncated due to limit"])
    return success(data, [])


async def _over_selectors(
    params: dict[str, list[str]], read: Callable[[Sequence[Matcher]], Awaitable[list[str]]]
) -> list[str]:
    """The sorted union of ``read`` over the ``match[]`` selectors (over all series without one)."""
    selectors = params.get("match[]", [])
    out: set[str] = set()
    for ms in _matchers_of(selectors) if selectors else [()]:
        out.update(await read(ms))
    return sorted(out)


def _timeout(params: dict[str, list[str]]) -> float | None:
    text = _one(params, "timeout")
    if not text:
        return None
    return parse_duration_ms(text, "timeout") / 1000.0


def _source(params: dict[str, list[str]]) -> SourceResolution:
    """The ``max_source_resolution`` asked for (auto, raw, 1m, 1h; query.resolution)."""
    try:
        return SourceResolution.parse(_one(params, "max_source_resolution"))
    except QueryError as exc:
        raise ApiError("bad_data", str(exc)) from None


def _query_error(exc: QueryError, param: str = "query") -> ApiError:
    if isinstance(exc, ParseError):
        return ApiError("bad_data", f'invalid parameter "{param}": {exc}')
    # timeout (503), execution (422: over a budget, or failed), bad_data (400: the input)
    return ApiError(exc.error_type, str(exc))


def _encoder(params: dict[str, list[str]]) -> Callable[[QueryResult], bytes] | None:
    """The answer's JSON is written where the query evaluates (a worker process for a big
    one: formatting millions of points must not stall the server); not when ``stats`` are
    asked for, which need the timings of the whole request."""
    return None if _one(params, "stats") else _answer_bytes


def _answer_bytes(res: QueryResult) -> bytes:
    return success_body(result_text(res), res.warnings).encode()


def _result_response(res: QueryResult, params: dict[str, list[str]], started: float) -> web.Response:
    """A query's success answer: the body the worker encoded, or encoded here (with stats)."""
    if res.encoded is not None:  # (hundreds of MB for a big query: written a piece at a time)
        return web.Response(body=piecewise(res.encoded, content_type="application/json"))
    return success_text(result_text(res, _stats(res, params, started)), res.warnings)


def _stats(res: QueryResult, params: dict[str, list[str]], started: float) -> dict[str, Any] | None:
    """Prometheus' ``stats`` object when the request asks for it (any non-empty ``stats``).
    Timings split into fetching (``queryPreparationTime``) and evaluating (``innerEvalTime``);
    samples are those read from the store. Per-step sample counts are not kept."""
    if not _one(params, "stats"):
        return None
    st = res.stats
    total = time.perf_counter() - started
    fetched = int(getattr(st, "samples", 0))
    points = sum(len(s.timestamps) for s in res.series) or (1 if res.type in ("scalar", "string") else 0)
    return {
        "timings": {
            "evalTotalTime": total,
            "resultSortTime": 0,
            "queryPreparationTime": float(getattr(st, "fetch_s", 0.0)),
            "innerEvalTime": float(getattr(st, "eval_s", 0.0)),
            "execQueueTime": 0,
            "execTotalTime": total,
        },
        "samples": {"totalQueryableSamples": fetched, "peakSamples": max(fetched, points)},
    }


async def answer(request: web.Request, handler: ParamsHandler) -> web.StreamResponse:
    """Run ``handler(params)``; every failure becomes an answer in the API's error format."""
    try:
        params = await _params(request)
        return await handler(params)
    except ApiError as exc:
        return exc.response()
    except QueryError as exc:
        return _query_error(exc).response()
    except StorageError as exc:
        return ApiError("internal", f"storage error: {exc}").response()
    except Exception as exc:  # noqa: BLE001 - answer in the API's format, log the details
        log.exception("API request failed: %s %s", request.method, request.path_qs)
        return ApiError("internal", f"internal error: {type(exc).__name__}: {exc}").response()


# ------------------------------------------------------------------- handlers
class PrometheusApi:
    """Handlers of the v1 API bound to one engine, storage and optional range cache."""

    def __init__(self, engine: Engine, storage: Storage, cache: "RangeQueryCache | None" = None) -> None:
        self.engine = engine
        self.storage = storage
        self.cache = cache

    async def _guard(self, request: web.Request, handler: ParamsHandler) -> web.StreamResponse:
        return await answer(request, handler)

    async def query(self, request: web.Request) -> web.StreamResponse:
        async def run(params: dict[str, list[str]]) -> web.Response:
            expr = _one(params, "query")
            if not expr:
                raise ApiError("bad_data", 'invalid parameter "query": query must not be empty')
            t = _one(params, "time")
            ts = parse_time_ms(t, "time") if t else int(time.time() * 1000)
            started = time.perf_counter()
            try:
                res = await self.engine.instant_query(
                    expr, ts, timeout_s=_timeout(params), source=_source(params), encode=_encoder(params)
                )
            except QueryError as exc:
                raise _query_error(exc) from None
            return _result_response(res, params, started)

        return await self._guard(request, run)

    async def query_range(self, request: web.Request) -> web.StreamResponse:
        async def run(params: dict[str, list[str]]) -> web.Response:
            expr = _one(params, "query")
            if not expr:
                raise ApiError("bad_data", 'invalid parameter "query": query must not be empty')
            for name in ("start", "end", "step"):
                if not _one(params, name):
                    raise ApiError("bad_data", f'invalid parameter "{name}": missing')
            start = parse_time_ms(_one(params, "start") or "", "start")
            end = parse_time_ms(_one(params, "end") or "", "end")
            if end < start:
                raise ApiError("bad_data", 'invalid parameter "end": end timestamp must not be before start time')
            step = parse_duration_ms(_one(params, "step") or "", "step")
            if step <= 0:
                raise ApiError(
                    "bad_data",
                    'invalid parameter "step": zero or negative query resolution step widths are not accepted. '
                    "Try a positive integer",
                )
            if (end - start) // step > 11_000:
                raise ApiError(
                    "bad_data",
                    "exceeded maximum resolution of 11,000 points per timeseries. "
                    "Try decreasing the query resolution (?step=XX)",
                )
            started = time.perf_counter()
            try:
                timeout_s = _timeout(params)
                source = _source(params)
                if self.cache is not None and timeout_s is None and not _one(params, "stats"):
                    # The cache keeps its chunks' points as JSON text: a refresh only formats new ones.
                    body = await self.cache.range_query_json(expr, start, end, step, source)
                    return web.Response(text=body, content_type="application/json")
                res = await self.engine.range_query(
                    expr, start, end, step, timeout_s=timeout_s, source=source, encode=_encoder(params)
                )
            except QueryError as exc:
                raise _query_error(exc) from None
            return _result_response(res, params, started)

        return await self._guard(request, run)

    async def series(self, request: web.Request) -> web.StreamResponse:
        async def run(params: dict[str, list[str]]) -> web.Response:
            selectors = params.get("match[]", [])
            if not selectors:
                raise ApiError("bad_data", "no match[] parameter provided")
            start, end = _range_params(params)
            limit = _limit(params)
            seen: dict[tuple, dict[str, str]] = {}
            for ms in _matchers_of(selectors):
                for s in await self.storage.series(ms, start, end):
                    seen.setdefault(s.labels, dict(s.labels))
            return _limited([seen[k] for k in sorted(seen)], limit)

        return await self._guard(request, run)

    async def labels(self, request: web.Request) -> web.StreamResponse:
        async def run(params: dict[str, list[str]]) -> web.Response:
            start, end = _range_params(params)
            limit = _limit(params)
            names = await _over_selectors(params, lambda ms: self.storage.label_names(start, end, ms))
            return _limited(names, limit)

        return await self._guard(request, run)

    async def label_values(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]

        async def run(params: dict[str, list[str]]) -> web.Response:
            label = name
            if label.startswith("U__"):
                label = _unescape_label(label)
            if not label:
                raise ApiError("bad_data", f"invalid label name: {name!r}")
            start, end = _range_params(params)
            limit = _limit(params)
            values = await _over_selectors(params, lambda ms: self.storage.label_values(label, start, end, ms))
            return _limited(values, limit)

        return await self._guard(request, run)

    async def format_query(self, request: web.Request) -> web.StreamResponse:
        async def run(params: dict[str, list[str]]) -> web.Response:
            expr = _one(params, "query") or ""
            parse_promql(expr)  # our grammar decides what is valid (a ParseError is a 400)
            return success(pretty_promql(expr))

        return await self._guard(request, run)

    async def parse_query(self, request: web.Request) -> web.StreamResponse:
        async def run(params: dict[str, list[str]]) -> web.Response:
            expr = _one(params, "query") or ""
            parse_promql(expr)
            return success(ast_json(expr))

        return await self._guard(request, run)

    async def query_exemplars(self, request: web.Request) -> web.StreamResponse:
        """No exemplars are stored, but the request is checked as Prometheus checks it: a bad
        start/end or a query that does not parse is a 400 ``bad_data``, not an empty success."""
        async def run(params: dict[str, list[str]]) -> web.Response:
            _range_params(params)
            parse_promql(_one(params, "query") or "")
            return success([])

        return await self._guard(request, run)

    async def buildinfo(self, request: web.Request) -> web.StreamResponse:
        return success(
            {
                "version": API_VERSION,
                "revision": "ringmon",
                "branch": "main",
                "buildUser": "ringmon",
                "buildDate": "",
                "goVersion": "python",
            }
        )


def _unescape_label(text: str) -> str:
    """Prometheus' ``U__`` label-name escaping (``_2e_`` -> ``.``, ``__`` -> ``_``)."""
    body = text[3:]
    out = []
    i = 0
    while i < len(body):
        if body.startswith("__", i):
            out.append("_")
            i += 2
        elif body[i] == "_":
            j = body.find("_", i + 1)
            if j < 0:
                return text
            try:
                out.append(chr(int(body[i + 1 : j], 16)))
            except ValueError:
                return text
            i = j + 1
        else:
            out.append(body[i])
            i += 1
    return "".join(out)


def add_api_routes(
    app: web.Application,
    engine: Engine,
    storage: Storage,
    cache: "RangeQueryCache | None" = None,
    prefix: str = "/api/v1",
) -> PrometheusApi:
    """Mount the Prometheus-compatible API under ``prefix``; returns the handler object."""
    api = PrometheusApi(engine, storage, cache)
    for path, handler in (
        ("/query", api.query),
        ("/query_range", api.query_range),
        ("/series", api.series),
        ("/labels", api.labels),
        ("/label/{name}/values", api.label_values),
        ("/query_exemplars", api.query_exemplars),
        ("/format_query", api.format_query),
        ("/parse_query", api.parse_query),
    ):
        app.router.add_route("GET", prefix + path, handler)
        app.router.add_route("POST", prefix + path, handler)
    app.router.add_get(prefix + "/status/buildinfo", api.buildinfo)
    app.middlewares.append(api_errors(prefix))
    return api


def api_errors(prefix: str) -> Middleware:
    """Middleware: under ``prefix``, an unknown path is a JSON 404 and a wrong method a JSON
    405 (with ``Allow``), as API clients expect; OPTIONS answers 204 like Prometheus."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if not (request.path == prefix or request.path.startswith(prefix + "/")):
            return await handler(request)
        try:
            return await handler(request)
        except web.HTTPMethodNotAllowed as exc:
            if request.method == "OPTIONS":
                return web.Response(status=204, headers={"Allow": ",".join(sorted(exc.allowed_methods))})
            resp = ApiError("bad_data", f"method {request.method} is not allowed for {request.path}").response(405)
            resp.headers["Allow"] = ",".join(sorted(exc.allowed_methods))
            return resp
        except web.HTTPNotFound:
            return ApiError("not_found", f"unknown API endpoint {request.path}").response()

    return middleware


def make_app(engine: Engine, storage: Storage, cache: "RangeQueryCache | None" = None) -> web.Application:
    """A standalone aiohttp application serving only the query API (tests, ``ringmon query serve``
    adds the fleet endpoints, empty, from ``web.prom_api``)."""
    app = web.Application()
    add_api_routes(app, engine, storage, cache)
    return app


__all__ = ["ApiError", "PrometheusApi", "add_api_routes", "make_app", "result_json", "format_value"]
