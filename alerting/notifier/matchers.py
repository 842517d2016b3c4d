"""Alertmanager-style matcher text: ``severity="page"``, ``job=~"api|web"``, ``{a="b", c!="d"}``.

The text comes from users (silences, routes), so it is scanned with RE2: Python's backtracking
took 87 s on ``a=`` followed by 2000 spaces and ``x}y``."""

from __future__ import annotations

import re

from common.regex import compile_regex
from storage.matchers import Matcher, MatchOp

_MATCHER_RE = compile_regex(
    r"""\s*([^\s{}!=~,"']+)\s*(=~|!~|!=|=)\s*("(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|[^,}]*?)\s*(?:,|$)""",
    anchored=False,
)


class MatcherSyntaxError(ValueError):
    """Matcher text that does not parse."""


def _unquote(v: str) -> str:
    if len(v) >= 2 and v[0] == v[-1] and v[0] in "\"'":
        body = v[1:-1]
        return re.sub(r"\\(.)", lambda m: {"n": "\n", "t": "\t"}.get(m.group(1), m.group(1)), body)
    return v


def _clip(s: str, n: int = 120) -> str:
    return s if len(s) <= n else s[:n] + "..."


def parse_matchers(text: str) -> list[Matcher]:
    """One or more comma-separated matchers, optionally inside braces."""
    s = text.strip()
    if s.startswith("{"):
        if not s.endswith("}"):
            raise MatcherSyntaxError(f"missing closing '}}' in {text!r}")
        s = s[1:-1]
    out: list[Matcher] = []
    data = s.strip().encode("utf-8", "surrogatepass")
    pos = 0
    while pos < len(data):
        spans = _MATCHER_RE.scan(data, pos)
        if spans is None or spans[0][1] == pos:
            rest = data[pos:].decode("utf-8", "replace")
            raise MatcherSyntaxError(
                f"bad matcher at {_clip(rest)!r} in {_clip(text)!r} (expected name=\"value\", !=, =~ or !~)")
        whole, name, op, raw = (data[a:b].decode("utf-8", "surrogatepass") for a, b in spans[:4])
        raw = raw.strip()
        if raw[:1] in ("=", "~", "!"):
            raise MatcherSyntaxError(f"bad matcher {whole.strip()!r} in {text!r}: quote values that start with {raw[0]!r}")
        try:
            out.append(Matcher(name, MatchOp(op), _unquote(raw)))
        except ValueError as exc:
            raise MatcherSyntaxError(str(exc)) from None
        pos = spans[0][1]
        while pos < len(data) and data[pos] in b" \t":
            pos += 1
    if not out and text.strip() not in ("{}", ""):
        raise MatcherSyntaxError(f"no matchers in {text!r}")
    return out


def matches(matchers: list[Matcher], labels: dict[str, str]) -> bool:
    return all(m.matches_value(labels.get(m.name, "")) for m in matchers)


def format_matchers(matchers: list[Matcher]) -> str:
    return "{" + ", ".join(str(m) for m in matchers) + "}"
