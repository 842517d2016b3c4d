"""JSON text exactly as Prometheus writes it: sample values (Go ``strconv.FormatFloat``, 'f'
between 1e-6 and 1e21, 'e' outside, as ``util/jsonutil.MarshalFloat``), timestamps (seconds
with up to three decimals, trailing zeros kept: ``MarshalTimestamp``), scalar and string
results (``promql.Scalar.MarshalJSON``: the time as an ``encoding/json`` float, a scalar's
value always 'f'), times of targets and rules (Go's ``time.Time``: RFC 3339, nanoseconds
without trailing zeros) and compact JSON with Go's HTML-safe string escaping (``<`` as
``\\u003c``, non-ASCII written as UTF-8).
"""

from __future__ import annotations

import datetime as _dt
import json
import math
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

ZERO_TIME = "0001-01-01T00:00:00Z"  # Go's zero time.Time
_GO_ESCAPES = (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"), ("\u2028", "\\u2028"), ("\u2029", "\\u2029"))


def _digits(v: float) -> tuple[str, str, int]:
    """(sign, shortest round-trip digits without trailing zeros, decimal exponent of the first digit)."""
    _, digits, exp = Decimal(repr(abs(v))).normalize().as_tuple()
    text = "".join(map(str, digits))
    return ("-" if math.copysign(1.0, v) < 0 else ""), text, int(exp) + len(text) - 1


def go_format_float(v: float, fmt: str = "f") -> str:
    """Go's ``strconv.FormatFloat(v, fmt, -1, 64)`` for fmt 'f' or 'e'."""
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    sign, digits, exp10 = _digits(v)
    if v == 0:
        return sign + ("0e+00" if fmt == "e" else "0")
    if fmt == "e":
        mantissa = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
        return f"{sign}{mantissa}e{'-' if exp10 < 0 else '+'}{abs(exp10):02d}"
    point = exp10 + 1
    if point <= 0:
        return f"{sign}0.{'0' * -point}{digits}"
    if point >= len(digits):
        return sign + digits + "0" * (point - len(digits))
    return f"{sign}{digits[:point]}.{digits[point:]}"


def go_g(v: float) -> str:
    """Go's ``%v`` (and ``%g``) of a float64: the shortest digits that read back the same, 'e'
    form when the decimal exponent is below -4 or at least 6 (``-0`` keeps its sign)."""
    if v == 0 or math.isnan(v) or math.isinf(v):
        return go_format_float(v, "f")
    exp10 = _digits(v)[2]
    return go_format_float(v, "e" if exp10 < -4 or exp10 >= 6 else "f")


def format_value(v: float) -> str:
    """A sample value as the API writes it (``jsonutil.MarshalFloat`` without the quotes)."""
    v = float(v)
    mag = abs(v)
    return go_format_float(v, "e" if mag != 0 and (mag < 1e-6 or mag >= 1e21) else "f")


def format_timestamp(ms: int) -> str:
    """A millisecond timestamp as the API writes it: ``1435781451.781``, ``1435781451.780``,
    ``1435781451`` (``jsonutil.MarshalTimestamp``)."""
    ms = int(ms)
    sign = "-" if ms < 0 else ""
    ms = abs(ms)
    secs, frac = divmod(ms, 1000)
    return f"{sign}{secs}.{frac:03d}" if frac else f"{sign}{secs}"


def go_json_float(v: float) -> str:
    """A float64 as Go's ``encoding/json`` writes it (scalar and string results' times go
    through it: ``float64(t) / 1000``): shortest digits, 'e' below 1e-6 and from 1e21 with a
    one-digit negative exponent written ``e-7``."""
    mag = abs(v)
    if mag != 0 and (mag < 1e-6 or mag >= 1e21):
        text = go_format_float(v, "e")
        if len(text) >= 4 and text[-4] == "e" and text[-3] == "-" and text[-2] == "0":
            text = text[:-2] + text[-1]
        return text
    return go_format_float(v, "f")


def go_time(ts: float | str | None) -> str:
    """A time as Go's ``time.Time`` marshals it (RFC 3339, nanoseconds without trailing zeros, UTC);
    unix seconds, an RFC 3339 text or nothing (the zero time)."""
    if isinstance(ts, str):
        if not ts or ts.startswith("0001-"):
            return ZERO_TIME
        text = ts
        try:
            ts = _dt.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
        except ValueError:
            return text
    if not ts:
        return ZERO_TIME
    ns = round(float(ts) * 1e9)
    secs, frac = divmod(ns, 1_000_000_000)
    base = _dt.datetime.fromtimestamp(secs, _dt.UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return base + (f".{frac:09d}".rstrip("0") if frac else "") + "Z"


def go_string(s: str) -> str:
    """A JSON string literal as Go's encoder writes it (HTML-safe, UTF-8)."""
    out = json.dumps(s, ensure_ascii=False)
    for raw, esc in _GO_ESCAPES:
        if raw in out:
            out = out.replace(raw, esc)
    return out


def dumps(obj: Any) -> str:
    """Compact JSON of plain data with Go's string escaping (keys kept in the given order)."""
    return _go_escape(json.dumps(obj, ensure_ascii=False, separators=(",", ":"), allow_nan=False))


def labels_json(labels: Mapping[str, str]) -> str:
    """A label set as Prometheus writes it: keys sorted."""
    return "{" + ",".join(f"{go_string(k)}:{go_string(v)}" for k, v in sorted(labels.items())) + "}"


def _go_escape(text: str) -> str:
    # Characters escaped by Go only occur inside strings in JSON text, so a global replace is exact.
    for raw, esc in _GO_ESCAPES:
        if raw in text:
            text = text.replace(raw, esc)
    return text


__all__ = ["ZERO_TIME", "dumps", "format_timestamp", "format_value", "go_format_float", "go_json_float", "go_string", "go_time", "labels_json"]


INFO_PREFIX = "PromQL info: "


def annotations_json(messages: list[str] | None) -> str:
    """``,"warnings":[...]`` and ``,"infos":[...]`` (Prometheus 3's annotations; a message
    starting with ``PromQL info:`` is an info), or nothing for none."""
    if not messages:
        return ""
    infos = [m for m in messages if m.startswith(INFO_PREFIX)]
    warnings = [m for m in messages if not m.startswith(INFO_PREFIX)]
    tail = f',"warnings":{dumps(warnings)}' if warnings else ""
    return tail + (f',"infos":{dumps(infos)}' if infos else "")
