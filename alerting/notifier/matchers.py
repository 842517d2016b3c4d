"""Alertmanager-style matcher text: ``severity="page"``, ``job=~"api|web"``, ``{a="b", c!="d"}``."""

from __future__ import annotations

import re

from storage.matchers import Matcher, MatchOp

_MATCHER_RE = re.compile(
    r"""\s*([^\s{}!=~,"']+)\s*(=~|!~|!=|=)\s*("(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|[^,}]*?)\s*(?:,|$)"""
)


class MatcherSyntaxError(ValueError):
    """Matcher text that does not parse."""


def _unquote(v: str) -> str:
    if len(v) >= 2 and v[0] == v[-1] and v[0] in "\"'":
        body = v[1:-1]
        return re.sub(r"\\(.)", lambda m: {"n": "\n", "t": "\t"}.get(m.group(1), m.group(1)), body)
    return v


def parse_matchers(text: str) -> list[Matcher]:
    """One or more comma-separated matchers, optionally inside braces."""
    s = text.strip()
    if s.startswith("{"):
        if not s.endswith("}"):
            raise MatcherSyntaxError(f"missing closing '}}' in {text!r}")
        s = s[1:-1]
    out: list[Matcher] = []
    pos = 0
    s = s.strip()
    while pos < len(s):
        m = _MATCHER_RE.match(s, pos)
        if not m or m.end() == pos:
            raise MatcherSyntaxError(f"bad matcher at {s[pos:]!r} in {text!r} (expected name=\"value\", !=, =~ or !~)")
        name, op, raw = m.group(1), m.group(2), m.group(3).strip()
        if raw[:1] in ("=", "~", "!"):
            raise MatcherSyntaxError(f"bad matcher {m.group(0).strip()!r} in {text!r}: quote values that start with {raw[0]!r}")
        try:
            out.append(Matcher(name, MatchOp(op), _unquote(raw)))
        except ValueError as exc:
            raise MatcherSyntaxError(str(exc)) from None
        pos = m.end()
        while pos < len(s) and s[pos] in " \t":
            pos += 1
    if not out and text.strip() not in ("{}", ""):
        raise MatcherSyntaxError(f"no matchers in {text!r}")
    return out


def matches(matchers: list[Matcher], labels: dict[str, str]) -> bool:
    return all(m.matches_value(labels.get(m.name, "")) for m in matchers)


def format_matchers(matchers: list[Matcher]) -> str:
    return "{" + ", ".join(str(m) for m in matchers) + "}"
