"""Prometheus duration syntax (``1h30m``, ``5m``, ``250ms``): parse to milliseconds and format back.

The one parser of durations in configs, rule files, CLI flags, API parameters and page controls;
each caller adds its own policy (numbers accepted, positive only, its error wording). PromQL's
lexer (query/preparse.py) reads durations inside query text itself."""

from __future__ import annotations

import re

_UNITS_MS = (
    ("y", 365 * 86_400_000),
    ("w", 7 * 86_400_000),
    ("d", 86_400_000),
    ("h", 3_600_000),
    ("m", 60_000),
    ("s", 1000),
    ("ms", 1),
)
_DURATION_RE = re.compile(r"^(?:(\d+)y)?(?:(\d+)w)?(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?(?:(\d+)ms)?$")


class DurationError(ValueError):
    """Text that is not a Prometheus duration."""


def parse_duration_ms(text: str) -> int:
    """``1h30m`` -> 5_400_000. Units must appear once each, largest first, as in Prometheus."""
    s = str(text).strip()
    if s == "0":
        return 0
    m = _DURATION_RE.match(s)
    if not s or not m or not any(m.groups()):
        raise DurationError(f'not a valid duration string: "{text}" (use e.g. 30s, 5m, 1h30m)')
    if any(g and len(g) > 18 for g in m.groups()):  # int() refuses >4300 digits; Prometheus caps at int64
        raise DurationError(f'duration out of range: "{str(text)[:40]}"')
    return sum(int(g) * ms for g, (_, ms) in zip(m.groups(), _UNITS_MS, strict=True) if g)


def seconds_of(value: object) -> float:
    """A config value as seconds: a number (not a bool) as it is, anything else read as a
    Prometheus duration (``DurationError`` when it is not one)."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return parse_duration_ms(str(value)) / 1000.0


def format_duration_ms(ms: int) -> str:
    """5_400_000 -> ``1h30m``; 0 -> ``0s`` (the Prometheus string form)."""
    if ms == 0:
        return "0s"
    out = []
    sign = "-" if ms < 0 else ""
    rest = abs(int(ms))
    for unit, size in _UNITS_MS:
        if rest >= size:
            n, rest = divmod(rest, size)
            out.append(f"{n}{unit}")
    return sign + "".join(out)
