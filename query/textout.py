"""Query results written for a terminal or a script (``ringmon query instant|range``).

``format_table`` gives one row per point: the series' labels, its time (RFC 3339 in UTC, or
Unix seconds) and its value, under a header, columns aligned. ``response_text`` is the body
``/api/v1/query`` and ``/api/v1/query_range`` answer with, byte for byte (``status``, ``data``,
``warnings``), so a script reads the CLI's output and the HTTP API's alike.
"""

from __future__ import annotations

import datetime as dt
import json

from query.api import format_ts, format_value, result_text, success_body
from query.result import QueryResult
from query.values import format_labels


def format_time(ts_ms: int, *, unix: bool = False) -> str:
    """``2026-12-06T00:45:10Z`` (milliseconds only when there are some), or ``1796517910``."""
    if unix:
        return str(format_ts(ts_ms))
    t = dt.datetime.fromtimestamp(ts_ms / 1000, dt.UTC)
    text = t.strftime("%Y-%m-%dT%H:%M:%S")
    if ts_ms % 1000:
        text += f".{ts_ms % 1000:03d}"
    return text + "Z"


def result_rows(res: QueryResult, *, unix: bool = False) -> list[tuple[str, str, str]]:
    """(series, time, value) for every point of the result, series by series, time ascending."""
    if res.type == "scalar":
        if res.scalar is None:
            return []
        ts, v = res.scalar
        return [("scalar", format_time(ts, unix=unix), format_value(v))]
    if res.type == "string":
        if res.string is None:
            return []
        ts, s = res.string
        return [("string", format_time(ts, unix=unix), json.dumps(s))]
    rows: list[tuple[str, str, str]] = []
    for rs in res.series:
        name = format_labels(tuple(sorted(rs.labels.items())))
        for t, v in zip(rs.timestamps.tolist(), rs.values.tolist(), strict=True):
            rows.append((name, format_time(int(t), unix=unix), format_value(float(v))))
    return rows


def format_table(res: QueryResult, *, unix: bool = False) -> str:
    """The rows of ``result_rows`` under a ``SERIES TIME VALUE`` header, columns aligned;
    an empty string when the result has no point."""
    rows = result_rows(res, unix=unix)
    if not rows:
        return ""
    header = ("SERIES", "UNIX TIME" if unix else "TIME (UTC)", "VALUE")
    w0 = max(len(header[0]), *(len(r[0]) for r in rows))
    w1 = max(len(header[1]), *(len(r[1]) for r in rows))
    return "\n".join(f"{a:<{w0}}  {b:<{w1}}  {c}".rstrip() for a, b, c in [header, *rows])


def response_text(res: QueryResult) -> str:
    """What the Prometheus HTTP API answers for this result, as the API writes it."""
    return success_body(result_text(res), list(res.warnings) or None)
