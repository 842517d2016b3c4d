"""The template functions Prometheus offers (``humanize*``, comparisons, ``index``, ``printf``,
``match``, ``reReplaceAll``, ``query`` helpers ...): each function and the ``FUNCTIONS`` table."""

from __future__ import annotations

import html
import math
import re
import urllib.parse
from collections.abc import Callable
from typing import Any

from alerting.template.exec import truth
from alerting.template.format import go_g, go_sprintf, go_time, to_text
from alerting.template.limits import ACTIVE
from common.regex import RegexBudgetError, compile_regex


def to_float(v: Any) -> float:
    if isinstance(v, bool):
        raise ValueError(f"can't convert {v!r} to float")
    if isinstance(v, int | float):
        return float(v)
    if isinstance(v, str):
        s = v.strip()
        low = s.lower()
        if low in ("+inf", "inf"):
            return math.inf
        if low == "-inf":
            return -math.inf
        if low == "nan":
            return math.nan
        return float(s)
    raise ValueError(f"can't convert {type(v).__name__} to float")


def _scale_down(x: float, base: float, prefixes: tuple[str, ...]) -> tuple[float, str]:
    """``x`` divided by ``base`` while it is ``base`` or more (at most once per prefix), and its prefix."""
    prefix = ""
    for p in prefixes:
        if abs(x) < base:
            break
        prefix = p
        x /= base
    return x, prefix


def _scale_up(x: float) -> tuple[float, str]:
    """``x`` (below 1) multiplied by 1000 until it is 1 or more (at most 8 times), and its SI prefix."""
    prefix = ""
    for p in ("m", "u", "n", "p", "f", "a", "z", "y"):
        if abs(x) >= 1:
            break
        prefix = p
        x *= 1000
    return x, prefix


def humanize(v: Any) -> str:
    x = to_float(v)
    if x == 0 or math.isnan(x) or math.isinf(x):
        return go_g(x)
    if abs(x) >= 1:
        x, prefix = _scale_down(x, 1000, ("k", "M", "G", "T", "P", "E", "Z", "Y"))
    else:
        x, prefix = _scale_up(x)
    return go_g(x) + prefix


def humanize1024(v: Any) -> str:
    x = to_float(v)
    if abs(x) <= 1 or math.isnan(x) or math.isinf(x):
        return go_g(x)
    x, prefix = _scale_down(x, 1024, ("ki", "Mi", "Gi", "Ti", "Pi", "Ei", "Zi", "Yi"))
    return go_g(x) + prefix


def humanize_duration(v: Any) -> str:
    x = to_float(v)
    if math.isnan(x) or math.isinf(x):
        return go_g(x)
    if x == 0:
        return go_g(x) + "s"
    if abs(x) >= 1:
        sign = "-" if x < 0 else ""
        x = abs(x)
        d = int(x)
        seconds, minutes, hours, days = d % 60, (d // 60) % 60, (d // 3600) % 24, d // 86400
        if days:
            return f"{sign}{days}d {hours}h {minutes}m {seconds}s"
        if hours:
            return f"{sign}{hours}h {minutes}m {seconds}s"
        if minutes:
            return f"{sign}{minutes}m {seconds}s"
        return f"{sign}{go_g(x)}s"
    x, prefix = _scale_up(x)
    return f"{go_g(x)}{prefix}s"


def humanize_percentage(v: Any) -> str:
    return go_g(to_float(v) * 100) + "%"


def humanize_timestamp(v: Any) -> str:
    x = to_float(v)
    if math.isnan(x) or math.isinf(x):
        return go_g(x)
    return go_time(x)


def _title(s: str) -> str:
    out, prev_letter = [], False
    for ch in str(s):
        out.append(ch.upper() if not prev_letter and ch.isalpha() else ch)
        prev_letter = ch.isalnum() or ch == "_" or ch == "'"
    return "".join(out)


def _cmp_args(a: Any, b: Any) -> tuple[Any, Any]:
    if isinstance(a, bool) or isinstance(b, bool):
        if type(a) is not type(b):
            raise ValueError("incompatible types for comparison")
        return a, b
    if isinstance(a, int | float) and isinstance(b, int | float):
        return a, b
    if isinstance(a, str) and isinstance(b, str):
        return a, b
    if a is None or b is None:
        return a, b
    raise ValueError("incompatible types for comparison")


def _eq(a: Any, *bs: Any) -> bool:
    if not bs:
        raise ValueError("missing argument for comparison")
    for b in bs:
        x, y = _cmp_args(a, b)
        if x == y:
            return True
    return False


def _ordered(op: Callable[[Any, Any], bool]) -> Callable[[Any, Any], bool]:
    def run(a: Any, b: Any) -> bool:
        x, y = _cmp_args(a, b)
        if x is None or y is None:
            raise ValueError("invalid type for comparison")
        return op(x, y)

    return run


def _index(item: Any, *keys: Any) -> Any:
    for k in keys:
        if isinstance(item, dict):
            if not isinstance(k, str):
                raise ValueError(f"value has type {type(k).__name__}; should be string")
            item = item.get(k, "")
        elif isinstance(item, list | tuple | str):
            if not isinstance(k, int) or not (0 <= k < len(item)):
                raise ValueError(f"index out of range: {k}")
            item = item[k]
        else:
            raise ValueError(f"can't index item of type {type(item).__name__}")
    return item


def _strip_port(hostport: str) -> str:
    if hostport.startswith("["):
        end = hostport.find("]")
        return hostport[1:end] if end > 0 else hostport
    host, sep, port = hostport.rpartition(":")
    if not sep or ":" in host:
        return hostport
    return host


def _strip_domain(hostport: str) -> str:
    host, sep, port = hostport.partition(":")
    if re.fullmatch(r"[0-9.]+", host) or hostport.startswith("["):
        return hostport
    return host.split(".")[0] + (sep + port if sep else "")


def _parse_duration_seconds(s: str) -> float:
    from common.durations import parse_duration_ms

    return parse_duration_ms(s) / 1000.0


def _to_time(v: Any) -> str:
    return go_time(to_float(v))


def _not_available(name: str) -> Callable[..., Any]:
    def run(*_: Any) -> Any:
        raise ValueError(f"function {name} is not available in this context")

    return run


def _samples_arg(v: Any, fn: str) -> list[dict]:
    if v is None:
        return []
    if not isinstance(v, list):
        raise ValueError(f"{fn}: expected query results, got {type(v).__name__}")
    return v


def _sample_arg(v: Any, fn: str) -> dict:
    if not isinstance(v, dict):
        raise ValueError(f"{fn}: expected one query result (e.g. from first), got {type(v).__name__}")
    return v


def _println(*a: Any) -> str:
    return " ".join(to_text(x) for x in a) + "\n"


def _print(*a: Any) -> str:
    # Go's Sprint adds spaces between operands when neither is a string.
    out = []
    for i, x in enumerate(a):
        if i and not isinstance(x, str) and not isinstance(a[i - 1], str):
            out.append(" ")
        out.append(to_text(x))
    return "".join(out)


def _re_replace_all(pattern: str, repl: str, text: str) -> str:
    limits, deadline = ACTIVE.get()
    try:
        return compile_regex(str(pattern), anchored=False).replace_all(str(text), str(repl), limits.max_output, deadline)
    except RegexBudgetError as exc:
        raise ValueError(f"{exc} (output budget {limits.max_output} characters, time budget {limits.timeout_s:g}s)") from None


FUNCTIONS: dict[str, Callable[..., Any]] = {
    "and": lambda *a: next((x for x in a if not truth(x)), a[-1]),
    "or": lambda *a: next((x for x in a if truth(x)), a[-1]),
    "not": lambda a: not truth(a),
    "eq": _eq,
    "ne": lambda a, b: not _eq(a, b),
    "lt": _ordered(lambda a, b: a < b),
    "le": _ordered(lambda a, b: a <= b),
    "gt": _ordered(lambda a, b: a > b),
    "ge": _ordered(lambda a, b: a >= b),
    "len": lambda a: len(a),
    "index": _index,
    "print": _print,
    "printf": lambda f, *a: go_sprintf(str(f), *a),
    "println": _println,
    "html": lambda *a: html.escape(_print(*a), quote=True),
    "js": lambda *a: _print(*a).replace("\\", "\\\\").replace("'", "\\'").replace('"', '\\"'),
    "urlquery": lambda *a: urllib.parse.quote_plus(_print(*a)),
    "humanize": humanize,
    "humanize1024": humanize1024,
    "humanizeDuration": humanize_duration,
    "humanizePercentage": humanize_percentage,
    "humanizeTimestamp": humanize_timestamp,
    "toUpper": lambda s: str(s).upper(),
    "toLower": lambda s: str(s).lower(),
    "title": _title,
    "match": lambda pattern, text: compile_regex(str(pattern), anchored=False).matches(str(text)),
    "reReplaceAll": _re_replace_all,
    "safeHtml": lambda s: str(s),
    "stripPort": _strip_port,
    "stripDomain": _strip_domain,
    "toTime": _to_time,
    "toDuration": lambda v: humanize_duration(v),
    "parseDuration": _parse_duration_seconds,
    "args": lambda *a: {f"arg{i}": x for i, x in enumerate(a)},
    "pathPrefix": lambda: "",
    "externalURL": lambda: "",
    "graphLink": lambda expr: "/graph?g0.expr=" + urllib.parse.quote_plus(str(expr)) + "&g0.tab=0",
    "tableLink": lambda expr: "/graph?g0.expr=" + urllib.parse.quote_plus(str(expr)) + "&g0.tab=1",
    "query": _not_available("query"),
    "first": lambda samples: _samples_arg(samples, "first")[0] if _samples_arg(samples, "first") else None,
    "label": lambda name, sample: (_sample_arg(sample, "label").get("Labels") or {}).get(name, ""),
    "value": lambda sample: _sample_arg(sample, "value").get("Value"),
    "strvalue": lambda sample: (_sample_arg(sample, "strvalue").get("Labels") or {}).get("__value__", ""),
    "sortByLabel": lambda name, samples: sorted(_samples_arg(samples, "sortByLabel"),
                                                key=lambda x: (x.get("Labels") or {}).get(name, "")),
}

# ----------------------------------------------------------------------------------- lexer

