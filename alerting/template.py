"""A small, safe interpreter for the Go ``text/template`` subset used in alert labels and annotations.

Supported: text and ``{{ }}`` actions with ``{{-``/``-}}`` trimming, comments, pipelines
(``a | f "x"``), variables (``$labels``, ``$value``, ``$``, ``$x := ...``, ``$x = ...``), field
chains (``$labels.instance``, ``.Labels.job``), literals, parentheses, ``if``/``else if``/
``else``/``end``, ``range`` (lists and maps, with ``$k, $v :=``), ``with``, and the functions
Prometheus offers (``humanize*``, ``printf``, ``toUpper`` ...). Nothing is ever ``eval``'d;
undefined variables and functions are parse errors, as in Go.

Every expansion runs under ``TemplateLimits``: a deadline, an output size (text written and any
string a function returns, ``printf`` widths checked before formatting) and a count of loop
iterations (``range 100000000`` fails before it starts). Over budget, the expansion fails with a
TemplateError that names the limit; regexes (``match``, ``reReplaceAll``) are RE2 (linear time).
"""

from __future__ import annotations

import contextvars
import datetime as _dt
import html
import math
import re
import time
import urllib.parse
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from common.regex import RegexBudgetError, compile_regex

ALERT_VARIABLES = ("$labels", "$externalLabels", "$externalURL", "$value")


class TemplateError(ValueError):
    """A template that does not parse or fails while expanding."""

    def __init__(self, name: str, line: int, reason: str) -> None:
        super().__init__(f"template: {name}:{line}: {reason}")
        self.name = name
        self.line = line
        self.reason = reason


@dataclass(frozen=True)
class TemplateLimits:
    """Budgets of one expansion (the ``alerter.templates`` settings)."""

    timeout_s: float = 2.0  # wall time of one expansion
    max_output: int = 1 << 20  # characters written, and the longest string any function returns
    max_iterations: int = 100_000  # range iterations, all loops of the expansion together
    max_steps: int = 2_000_000  # actions and commands executed (a backstop for the deadline)


DEFAULT_LIMITS = TemplateLimits()
# The limits and deadline of the expansion running in this thread (printf, reReplaceAll consult them).
_ACTIVE: contextvars.ContextVar[tuple[TemplateLimits, float]] = contextvars.ContextVar(
    "template_limits", default=(DEFAULT_LIMITS, math.inf))


# --------------------------------------------------------------------------------- formatting


def go_float(v: float) -> str:
    """A float as Go's ``%v`` prints it (shortest digits; exponent form from 1e6 or below 1e-4)."""
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    if v == 0:
        return "-0" if math.copysign(1, v) < 0 else "0"
    sign, digits, exp = Decimal(repr(float(v))).normalize().as_tuple()
    ds = "".join(map(str, digits))
    point = len(ds) + int(exp)  # position of the decimal point
    e = point - 1
    s = "-" if sign else ""
    if e < -4 or e >= 6:
        mant = ds[0] + ("." + ds[1:] if len(ds) > 1 else "")
        return f"{s}{mant}e{'+' if e >= 0 else '-'}{abs(e):02d}"
    if point <= 0:
        return f"{s}0.{'0' * -point}{ds}"
    if point >= len(ds):
        return f"{s}{ds}{'0' * (point - len(ds))}"
    return f"{s}{ds[:point]}.{ds[point:]}"


def go_g(v: float, prec: int = 4) -> str:
    """Go's ``%.<prec>g``."""
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    return f"%.{prec}g" % v


def to_text(v: Any) -> str:
    """How a value prints in template output (Go ``fmt.Sprint`` style)."""
    if v is None:
        return ""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return go_float(v)
    if isinstance(v, dict):
        return "map[" + " ".join(f"{k}:{to_text(v[k])}" for k in sorted(v)) + "]"
    if isinstance(v, list | tuple):
        return "[" + " ".join(to_text(x) for x in v) + "]"
    return str(v)


def _go_quote(s: str) -> str:
    out = ['"']
    for ch in s:
        if ch == '"':
            out.append('\\"')
        elif ch == "\\":
            out.append("\\\\")
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\t":
            out.append("\\t")
        elif ch == "\r":
            out.append("\\r")
        elif ord(ch) < 32:
            out.append(f"\\x{ord(ch):02x}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


_VERB_RE = re.compile(r"%([-+# 0]*)(\d+|\*)?(?:\.(\d+|\*)?)?([a-zA-Z%])")


def go_sprintf(fmt: str, *args: Any) -> str:
    """Go ``fmt.Sprintf`` for the common verbs (%s %v %d %f %e %g %q %x %X %o %b %t %c %%).
    A width or precision beyond the active output budget is refused before formatting, and the
    text is refused as soon as it grows over that budget (many wide verbs in one format)."""
    out: list[str] = []
    size = 0
    budget = _ACTIVE.get()[0].max_output

    def add(piece: str) -> None:
        nonlocal size
        size += len(piece)
        if size > budget:
            raise ValueError(f"printf output over the budget of {budget} characters")
        out.append(piece)

    pos = 0
    ai = 0
    for m in _VERB_RE.finditer(fmt):
        add(fmt[pos : m.start()])
        pos = m.end()
        flags, width, prec, verb = m.group(1), m.group(2), m.group(3), m.group(4)
        for what, digits in (("width", width), ("precision", prec)):
            if digits is not None and digits != "*" and (len(digits) > 9 or int(digits) > budget):
                raise ValueError(f"printf {what} {digits} is over the output budget of {budget} characters")
        if verb == "%":
            add("%")
            continue
        if ai >= len(args):
            add(f"%!{verb}(MISSING)")
            continue
        arg = args[ai]
        ai += 1
        spec = "%" + flags + (width or "") + (f".{prec}" if prec is not None else "")
        try:
            piece = _format_one(spec, verb, arg, prec)
        except (TypeError, ValueError):
            piece = f"%!{verb}({type(arg).__name__}={to_text(arg)})"
        add(piece)
    add(fmt[pos:])
    if ai < len(args):
        add("%!(EXTRA " + ", ".join(f"{type(a).__name__}={to_text(a)}" for a in args[ai:]) + ")")
    return "".join(out)


def _format_one(spec: str, verb: str, arg: Any, prec: str | None) -> str:
    if verb in ("v", "s"):
        if verb == "s" and isinstance(arg, int | float) and not isinstance(arg, bool):
            raise TypeError("not a string")
        return (spec + "s") % to_text(arg)
    if verb == "q":
        return (spec + "s") % _go_quote(to_text(arg))
    if verb == "t":
        if not isinstance(arg, bool):
            raise TypeError("not a bool")
        return (spec + "s") % to_text(arg)
    if verb in ("d", "x", "X", "o", "b", "c"):
        if isinstance(arg, str) and verb in ("x", "X"):
            return (spec + verb) % int.from_bytes(arg.encode(), "big") if arg else ""
        if isinstance(arg, float) or isinstance(arg, bool) or not isinstance(arg, int):
            raise TypeError("not an int")
        if verb == "b":
            return format(arg, "b")
        if verb == "c":
            return chr(arg)
        return (spec + verb) % arg
    if verb in ("f", "F", "e", "E", "g", "G"):
        if isinstance(arg, bool) or not isinstance(arg, int | float):
            raise TypeError("not a float")
        v = float(arg)
        if math.isnan(v) or math.isinf(v):
            return go_float(v)
        if verb in ("g", "G") and prec is None:
            return go_float(v)
        return (spec + verb.lower() if verb == "F" else spec + verb) % v
    raise TypeError(f"unknown verb {verb}")


# ---------------------------------------------------------------------------- functions


def _to_float(v: Any) -> float:
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


def humanize(v: Any) -> str:
    x = _to_float(v)
    if x == 0 or math.isnan(x) or math.isinf(x):
        return go_g(x)
    prefix = ""
    if abs(x) >= 1:
        for p in ("k", "M", "G", "T", "P", "E", "Z", "Y"):
            if abs(x) < 1000:
                break
            prefix = p
            x /= 1000
        return go_g(x) + prefix
    for p in ("m", "u", "n", "p", "f", "a", "z", "y"):
        if abs(x) >= 1:
            break
        prefix = p
        x *= 1000
    return go_g(x) + prefix


def humanize1024(v: Any) -> str:
    x = _to_float(v)
    if abs(x) <= 1 or math.isnan(x) or math.isinf(x):
        return go_g(x)
    prefix = ""
    for p in ("ki", "Mi", "Gi", "Ti", "Pi", "Ei", "Zi", "Yi"):
        if abs(x) < 1024:
            break
        prefix = p
        x /= 1024
    return go_g(x) + prefix


def humanize_duration(v: Any) -> str:
    x = _to_float(v)
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
    prefix = ""
    for p in ("m", "u", "n", "p", "f", "a", "z", "y"):
        if abs(x) >= 1:
            break
        prefix = p
        x *= 1000
    return f"{go_g(x)}{prefix}s"


def humanize_percentage(v: Any) -> str:
    return go_g(_to_float(v) * 100) + "%"


def _go_time(ts: float) -> str:
    t = _dt.datetime.fromtimestamp(0, _dt.UTC) + _dt.timedelta(seconds=ts)
    base = t.strftime("%Y-%m-%d %H:%M:%S")
    frac = f"{t.microsecond:06d}".rstrip("0")
    return f"{base}{'.' + frac if frac else ''} +0000 UTC"


def humanize_timestamp(v: Any) -> str:
    x = _to_float(v)
    if math.isnan(x) or math.isinf(x):
        return go_g(x)
    return _go_time(x)


def _title(s: str) -> str:
    out, prev_letter = [], False
    for ch in str(s):
        out.append(ch.upper() if not prev_letter and ch.isalpha() else ch)
        prev_letter = ch.isalnum() or ch == "_" or ch == "'"
    return "".join(out)


def _truth(v: Any) -> bool:
    if v is None:
        return False
    if isinstance(v, bool):
        return v
    if isinstance(v, int | float):
        return v != 0
    if isinstance(v, str | list | tuple | dict):
        return len(v) > 0
    return True


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
    return _go_time(_to_float(v))


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
    limits, deadline = _ACTIVE.get()
    try:
        return compile_regex(str(pattern), anchored=False).replace_all(str(text), str(repl), limits.max_output, deadline)
    except RegexBudgetError as exc:
        raise ValueError(f"{exc} (output budget {limits.max_output} characters, time budget {limits.timeout_s:g}s)") from None


FUNCTIONS: dict[str, Callable[..., Any]] = {
    "and": lambda *a: next((x for x in a if not _truth(x)), a[-1]),
    "or": lambda *a: next((x for x in a if _truth(x)), a[-1]),
    "not": lambda a: not _truth(a),
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


@dataclass(slots=True)
class Tok:
    kind: str  # text, open, close, ident, var, field, string, number, char, pipe, lparen, rparen, decl, assign, comma, bool, nil, dot, space, eof
    value: Any
    line: int


_NUM_RE = re.compile(r"[+-]?(?:0[xX][0-9a-fA-F_]+|0[bB][01_]+|0[oO][0-7_]+|(?:\d[\d_]*\.?[\d_]*|\.\d[\d_]*)(?:[eE][+-]?\d+)?)")
_IDENT_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _lex(text: str, name: str) -> list[Tok]:  # noqa: C901, PLR0915 - Go's text/template lexer states as branches of one loop over the text
    toks: list[Tok] = []
    pos = 0
    line = 1
    n = len(text)
    while pos < n:
        start = text.find("{{", pos)
        if start < 0:
            toks.append(Tok("text", text[pos:], line))
            break
        chunk = text[pos:start]
        trim_left = text.startswith("{{- ", start) or text.startswith("{{-\t", start) or text.startswith("{{-\n", start)
        if trim_left:
            chunk = chunk.rstrip(" \t\r\n")
        if chunk:
            toks.append(Tok("text", chunk, line))
        line += text.count("\n", pos, start)
        pos = start + (3 if trim_left else 2)
        # comment
        rest = text[pos:].lstrip(" \t\r\n") if trim_left else text[pos:]
        if rest.startswith("/*"):
            cstart = pos + (len(text[pos:]) - len(rest))
            cend = text.find("*/", cstart + 2)
            if cend < 0:
                raise TemplateError(name, line, "unclosed comment")
            after = cend + 2
            trim_right = False
            m = re.match(r"\s*-}}|}}", text[after:])
            if not m:
                raise TemplateError(name, line, "comment ends before closing delimiter")
            trim_right = m.group(0).endswith("-}}")
            line += text.count("\n", pos, after + m.end())
            pos = after + m.end()
            if trim_right:
                while pos < n and text[pos] in " \t\r\n":
                    if text[pos] == "\n":
                        line += 1
                    pos += 1
            continue
        toks.append(Tok("open", None, line))
        while True:
            if pos >= n:
                raise TemplateError(name, line, "unclosed action")
            ch = text[pos]
            if text.startswith(" -}}", pos) or text.startswith("\t-}}", pos) or text.startswith("\n-}}", pos):
                line += text[pos] == "\n"
                pos += 4
                toks.append(Tok("close", None, line))
                while pos < n and text[pos] in " \t\r\n":
                    if text[pos] == "\n":
                        line += 1
                    pos += 1
                break
            if text.startswith("}}", pos):
                pos += 2
                toks.append(Tok("close", None, line))
                break
            if ch in " \t\r\n":
                if ch == "\n":
                    line += 1
                pos += 1
                if toks[-1].kind != "space":
                    toks.append(Tok("space", None, line))
                continue
            if ch == "|":
                toks.append(Tok("pipe", None, line))
                pos += 1
            elif ch == "(":
                toks.append(Tok("lparen", None, line))
                pos += 1
            elif ch == ")":
                toks.append(Tok("rparen", None, line))
                pos += 1
            elif ch == ",":
                toks.append(Tok("comma", None, line))
                pos += 1
            elif text.startswith(":=", pos):
                toks.append(Tok("decl", None, line))
                pos += 2
            elif ch == "=":
                toks.append(Tok("assign", None, line))
                pos += 1
            elif ch == '"':
                end = pos + 1
                while end < n and text[end] != '"':
                    if text[end] == "\\":
                        end += 1
                    if end < n and text[end] == "\n":
                        raise TemplateError(name, line, "unterminated quoted string")
                    end += 1
                if end >= n:
                    raise TemplateError(name, line, "unterminated quoted string")
                raw = text[pos : end + 1]
                try:
                    value = _unquote(raw)
                except ValueError as exc:
                    raise TemplateError(name, line, str(exc)) from None
                toks.append(Tok("string", value, line))
                pos = end + 1
            elif ch == "`":
                end = text.find("`", pos + 1)
                if end < 0:
                    raise TemplateError(name, line, "unterminated raw quoted string")
                toks.append(Tok("string", text[pos + 1 : end], line))
                line += text.count("\n", pos, end)
                pos = end + 1
            elif ch == "'":
                m = re.match(r"'(\\.|[^\\'])'", text[pos:])
                if not m:
                    raise TemplateError(name, line, "bad character constant")
                toks.append(Tok("number", ord(_unquote('"' + m.group(1) + '"')), line))
                pos += m.end()
            elif ch == "$":
                m = _IDENT_RE.match(text, pos + 1)
                nm = "$" + (m.group(0) if m else "")
                toks.append(Tok("var", nm, line))
                pos = m.end() if m else pos + 1
            elif ch == ".":
                m = _IDENT_RE.match(text, pos + 1)
                if m:
                    toks.append(Tok("field", m.group(0), line))
                    pos = m.end()
                elif pos + 1 < n and text[pos + 1].isdigit():
                    m2 = _NUM_RE.match(text, pos)
                    if not m2:  # a non-ASCII digit (str.isdigit is wider than the number syntax)
                        raise TemplateError(name, line, f"bad number syntax near {text[pos:pos + 10]!r}")
                    toks.append(Tok("number", _number(m2.group(0)), line))
                    pos = m2.end()
                else:
                    toks.append(Tok("dot", None, line))
                    pos += 1
            elif ch.isdigit() or (ch in "+-" and pos + 1 < n and (text[pos + 1].isdigit() or text[pos + 1] == ".")):
                m = _NUM_RE.match(text, pos)
                if not m:
                    raise TemplateError(name, line, f"bad number syntax near {text[pos:pos + 10]!r}")
                try:
                    toks.append(Tok("number", _number(m.group(0)), line))
                except ValueError:
                    raise TemplateError(name, line, f"bad number syntax: {m.group(0)!r}") from None
                pos = m.end()
            elif ch.isalpha() or ch == "_":
                m = _IDENT_RE.match(text, pos)
                if not m:  # a non-ASCII letter (str.isalpha is wider than the identifier syntax)
                    raise TemplateError(name, line, f"unexpected {ch!r} in command")
                word = m.group(0)
                if word in ("true", "false"):
                    toks.append(Tok("bool", word == "true", line))
                elif word == "nil":
                    toks.append(Tok("nil", None, line))
                else:
                    toks.append(Tok("ident", word, line))
                pos = m.end()
            else:
                raise TemplateError(name, line, f"unexpected {ch!r} in command")
    toks.append(Tok("eof", None, line))
    return toks


def _unquote(raw: str) -> str:
    body = raw[1:-1]
    out = []
    i = 0
    esc = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\", '"': '"', "'": "'", "a": "\a", "b": "\b", "f": "\f", "v": "\v"}
    while i < len(body):
        c = body[i]
        if c != "\\":
            out.append(c)
            i += 1
            continue
        i += 1
        if i >= len(body):
            raise ValueError("bad escape at end of string")
        c = body[i]
        if c in esc:
            out.append(esc[c])
            i += 1
        elif c == "x":
            out.append(chr(int(body[i + 1 : i + 3], 16)))
            i += 3
        elif c == "u":
            out.append(chr(int(body[i + 1 : i + 5], 16)))
            i += 5
        elif c == "U":
            out.append(chr(int(body[i + 1 : i + 9], 16)))
            i += 9
        elif c.isdigit():
            out.append(chr(int(body[i : i + 3], 8)))
            i += 3
        else:
            raise ValueError(f"unknown escape sequence: \\{c}")
    return "".join(out)


def _number(s: str) -> int | float:
    t = s.replace("_", "")
    low = t.lower().lstrip("+-")
    if low.startswith(("0x", "0b", "0o")):
        return int(t, 0)
    if any(c in t for c in ".eE"):
        return float(t)
    return int(t)


# ---------------------------------------------------------------------------------- parser


@dataclass
class Node:
    line: int


@dataclass
class TextNode(Node):
    text: str


@dataclass
class Operand(Node):
    kind: str  # var, field, dot, literal, ident, pipe
    value: Any = None
    fields: list[str] = field(default_factory=list)


@dataclass
class Command(Node):
    args: list[Operand]


@dataclass
class Pipeline(Node):
    decl: list[str]
    is_assign: bool
    cmds: list[Command]


@dataclass
class ActionNode(Node):
    pipe: Pipeline


@dataclass
class ListNode(Node):
    nodes: list[Node]


@dataclass
class BranchNode(Node):
    kind: str  # if, range, with
    pipe: Pipeline
    body: ListNode
    else_body: ListNode | None


class _Parser:
    def __init__(self, toks: list[Tok], name: str, predefined: tuple[str, ...], funcs: dict[str, Any]) -> None:
        self.toks = toks
        self.i = 0
        self.name = name
        self.funcs = funcs
        self.scopes: list[list[str]] = [["$", *predefined]]

    # token helpers (spaces are significant only between operands)
    def peek(self, skip_space: bool = True) -> Tok:
        j = self.i
        while skip_space and self.toks[j].kind == "space":
            j += 1
        return self.toks[j]

    def next(self, skip_space: bool = True) -> Tok:
        while skip_space and self.toks[self.i].kind == "space":
            self.i += 1
        t = self.toks[self.i]
        self.i += 1
        return t

    def err(self, line: int, msg: str) -> TemplateError:
        return TemplateError(self.name, line, msg)

    def defined(self, var: str) -> bool:
        return any(var in s for s in self.scopes)

    def parse(self) -> ListNode:
        body, end = self.parse_list(top=True)
        return body

    def parse_list(self, top: bool = False) -> tuple[ListNode, str]:
        nodes: list[Node] = []
        line = self.toks[self.i].line
        while True:
            t = self.next(skip_space=False)
            if t.kind == "eof":
                if not top:
                    raise self.err(t.line, "unexpected EOF")
                return ListNode(line, nodes), "eof"
            if t.kind == "text":
                nodes.append(TextNode(t.line, t.value))
                continue
            assert t.kind == "open"
            head = self.peek()
            if head.kind == "ident" and head.value in ("end", "else"):
                self.next()
                if top:
                    raise self.err(head.line, f"unexpected {{{{{head.value}}}}}")
                if head.value == "end":
                    self.expect_close()
                return ListNode(line, nodes), head.value
            if head.kind == "ident" and head.value in ("if", "range", "with"):
                self.next()
                nodes.append(self.parse_branch(head.value, head.line))
                continue
            if head.kind == "ident" and head.value in ("define", "template", "block"):
                raise self.err(head.line, f"{{{{{head.value}}}}} is not supported in alert templates")
            if head.kind == "ident" and head.value in ("break", "continue"):
                raise self.err(head.line, f"{{{{{head.value}}}}} is not supported")
            pipe = self.parse_pipeline(head.line, allow_decl=True)
            nodes.append(ActionNode(head.line, pipe))

    def expect_close(self) -> None:
        t = self.next()
        if t.kind != "close":
            raise self.err(t.line, f"unexpected {self._desc(t)} in command")

    @staticmethod
    def _desc(t: Tok) -> str:
        return {"eof": "EOF", "close": "right delimiter"}.get(t.kind, f"<{t.value if t.value is not None else t.kind}>")

    def parse_branch(self, kind: str, line: int) -> BranchNode:
        self.scopes.append([])
        pipe = self.parse_pipeline(line, allow_decl=True, allow_two=kind == "range")
        if not pipe.cmds:
            raise self.err(line, f"missing value for {kind}")
        body, end = self.parse_list()
        else_body = None
        if end == "else":
            self.scopes[-1] = self.scopes[-1][: len(pipe.decl)] if pipe.decl else []
            nxt = self.peek()
            if nxt.kind == "ident" and nxt.value in ("if", "with") and kind in ("if", "with"):
                # {{else if ...}}: a nested branch that shares our {{end}}
                self.next()
                nested = self.parse_branch(nxt.value, nxt.line)
                else_body = ListNode(nxt.line, [nested])
            else:
                self.expect_close()
                else_body, end2 = self.parse_list()
                if end2 != "end":
                    raise self.err(line, "expected end; found {{else}}")
        self.scopes.pop()
        return BranchNode(line, kind, pipe, body, else_body)

    def parse_pipeline(self, line: int, allow_decl: bool, allow_two: bool = False) -> Pipeline:
        decl: list[str] = []
        is_assign = False
        # look ahead for "$x :=" / "$x =" / "$k, $v :="
        save = self.i
        t = self.peek()
        if allow_decl and t.kind == "var":
            self.next()
            names = [t.value]
            nt = self.peek()
            if allow_two and nt.kind == "comma":
                self.next()
                t2 = self.next()
                if t2.kind != "var":
                    raise self.err(t2.line, "range can only initialize variables")
                names.append(t2.value)
                nt = self.peek()
            if nt.kind in ("decl", "assign"):
                self.next()
                if nt.kind == "assign":
                    for nm in names:
                        if not self.defined(nm):
                            raise self.err(nt.line, f'undefined variable "{nm}"')
                    is_assign = True
                decl = names
            else:
                self.i = save
        cmds: list[Command] = []
        while True:
            cmd = self.parse_command(line)
            if cmd is None:
                break
            cmds.append(cmd)
            t = self.peek()
            if t.kind == "pipe":
                self.next()
                continue
            break
        end = self.next()
        if end.kind != "close":
            raise self.err(end.line, f"unexpected {self._desc(end)} in operand")
        if not cmds and decl:
            raise self.err(line, "missing value for command")
        if decl and not is_assign:
            self.scopes[-1].extend(decl)
        if not cmds and not decl:
            raise self.err(line, "missing value for command")
        return Pipeline(line, decl, is_assign, cmds)

    def parse_command(self, line: int) -> Command | None:
        args: list[Operand] = []
        while True:
            t = self.peek()
            if t.kind in ("close", "pipe", "rparen", "eof"):
                break
            if args and self.toks[self.i].kind != "space":
                raise self.err(t.line, f"missing space before {self._desc(t)}")
            op = self.parse_operand()
            args.append(op)
        if not args:
            t = self.peek()
            if t.kind == "pipe":
                raise self.err(t.line, "missing command")
            return None
        first = args[0]
        if first.kind == "literal" and len(args) > 1:
            raise self.err(first.line, f"can't give argument to non-function {to_text(first.value)}")
        return Command(line, args)

    def parse_operand(self) -> Operand:
        t = self.next()
        if t.kind == "var":
            if not self.defined(t.value):
                raise self.err(t.line, f'undefined variable "{t.value}"')
            op = Operand(t.line, "var", t.value)
        elif t.kind == "field":
            op = Operand(t.line, "dot", None, [t.value])
        elif t.kind == "dot":
            op = Operand(t.line, "dot")
        elif t.kind in ("string", "number", "bool"):
            op = Operand(t.line, "literal", t.value)
        elif t.kind == "nil":
            op = Operand(t.line, "literal", None)
        elif t.kind == "ident":
            if t.value not in self.funcs:
                raise self.err(t.line, f'function "{t.value}" not defined')
            op = Operand(t.line, "ident", t.value)
        elif t.kind == "lparen":
            inner = self._parse_paren(t.line)
            op = Operand(t.line, "pipe", inner)
        else:
            raise self.err(t.line, f"unexpected {self._desc(t)} in operand")
        # field chain directly attached (no space)
        while self.toks[self.i].kind == "field":
            ft = self.toks[self.i]
            self.i += 1
            if op.kind in ("ident", "literal"):
                raise self.err(ft.line, f"unexpected . after term {op.value!r}")
            op.fields.append(ft.value)
        return op

    def _parse_paren(self, line: int) -> Pipeline:
        cmds: list[Command] = []
        decl: list[str] = []
        t = self.peek()
        save = self.i
        if t.kind == "var":
            self.next()
            if self.peek().kind == "decl":
                self.next()
                decl = [t.value]
            else:
                self.i = save
        while True:
            cmd = self.parse_command(line)
            if cmd is None:
                break
            cmds.append(cmd)
            if self.peek().kind == "pipe":
                self.next()
                continue
            break
        end = self.next()
        if end.kind != "rparen":
            raise self.err(end.line, f"unclosed left paren (found {self._desc(end)})")
        if not cmds:
            raise self.err(line, "missing value for parenthesized pipeline")
        if decl:
            self.scopes[-1].extend(decl)
        return Pipeline(line, decl, False, cmds)


# --------------------------------------------------------------------------------- executor


class _Exec:
    def __init__(self, name: str, funcs: dict[str, Callable[..., Any]], limits: TemplateLimits) -> None:
        self.name = name
        self.funcs = funcs
        self.out: list[str] = []
        self.size = 0
        self.limits = limits
        self.steps = 0
        self.iterations = 0
        self.deadline = time.monotonic() + limits.timeout_s

    def err(self, line: int, msg: str) -> TemplateError:
        return TemplateError(self.name, line, msg)

    def tick(self, line: int) -> None:
        self.steps += 1
        if self.steps > self.limits.max_steps:
            raise self.err(line, f"template over its budget of {self.limits.max_steps} steps")
        if not self.steps & 0xFF and time.monotonic() > self.deadline:
            raise self.err(line, f"template expansion over its time budget of {self.limits.timeout_s:g}s")

    def iterate(self, count: int, line: int) -> None:
        self.iterations += count
        if self.iterations > self.limits.max_iterations:
            raise self.err(line, f"range over the budget of {self.limits.max_iterations} loop iterations")

    def emit(self, s: str, line: int) -> None:
        self.size += len(s)
        if self.size > self.limits.max_output:
            raise self.err(line, f"template output over its budget of {self.limits.max_output} characters")
        self.out.append(s)

    def walk(self, node: Node, dot: Any, vars_: list[dict[str, Any]]) -> None:
        self.tick(node.line)
        if isinstance(node, TextNode):
            self.emit(node.text, node.line)
        elif isinstance(node, ListNode):
            for n in node.nodes:
                self.walk(n, dot, vars_)
        elif isinstance(node, ActionNode):
            v = self.pipeline(node.pipe, dot, vars_)
            if not node.pipe.decl:
                self.emit(to_text(v), node.line)
        elif isinstance(node, BranchNode):
            self.branch(node, dot, vars_)

    def branch(self, node: BranchNode, dot: Any, vars_: list[dict[str, Any]]) -> None:
        scope: dict[str, Any] = {}
        vars_.append(scope)
        try:
            if node.kind == "range":
                self.range_(node, dot, vars_)
                return
            decl = node.pipe.decl
            node.pipe.decl = []  # evaluate value, then bind ourselves
            try:
                v = self.pipeline(node.pipe, dot, vars_)
            finally:
                node.pipe.decl = decl
            if decl:
                scope[decl[0]] = v
            if _truth(v):
                self.walk(node.body, v if node.kind == "with" else dot, vars_)
            elif node.else_body is not None:
                self.walk(node.else_body, dot, vars_)
        finally:
            vars_.pop()

    def range_(self, node: BranchNode, dot: Any, vars_: list[dict[str, Any]]) -> None:
        decl = node.pipe.decl
        node.pipe.decl = []
        try:
            v = self.pipeline(node.pipe, dot, vars_)
        finally:
            node.pipe.decl = decl
        items: Iterable[tuple[Any, Any]]
        if isinstance(v, dict):
            count, items = len(v), ((k, v[k]) for k in sorted(v))
        elif isinstance(v, list | tuple):
            count, items = len(v), enumerate(v)
        elif isinstance(v, int) and not isinstance(v, bool):
            count, items = max(v, 0), ((i, i) for i in range(v))
        elif v is None:
            count, items = 0, ()
        else:
            raise self.err(node.line, f"range can't iterate over {to_text(v)}")
        if not count:
            if node.else_body is not None:
                self.walk(node.else_body, dot, vars_)
            return
        self.iterate(count, node.line)  # the whole loop is counted before it starts
        for k, item in items:
            if len(decl) == 1:
                vars_[-1][decl[0]] = item
            elif len(decl) == 2:
                vars_[-1][decl[0]] = k
                vars_[-1][decl[1]] = item
            self.walk(node.body, item, vars_)

    def lookup(self, name: str, vars_: list[dict[str, Any]], line: int) -> Any:
        for scope in reversed(vars_):
            if name in scope:
                return scope[name]
        raise self.err(line, f'undefined variable "{name}"')

    def setvar(self, name: str, value: Any, vars_: list[dict[str, Any]]) -> None:
        for scope in reversed(vars_):
            if name in scope:
                scope[name] = value
                return
        vars_[-1][name] = value

    def pipeline(self, pipe: Pipeline, dot: Any, vars_: list[dict[str, Any]]) -> Any:
        value: Any = None
        has_value = False
        for cmd in pipe.cmds:
            value = self.command(cmd, dot, vars_, value, has_value)
            has_value = True
        for nm in pipe.decl:
            if pipe.is_assign:
                self.setvar(nm, value, vars_)
            else:
                vars_[-1][nm] = value
        return value

    def command(self, cmd: Command, dot: Any, vars_: list[dict[str, Any]], prev: Any, has_prev: bool) -> Any:
        first = cmd.args[0]
        self.tick(cmd.line)
        if first.kind == "ident":
            fn = self.funcs[first.value]
            args = [self.operand(a, dot, vars_) for a in cmd.args[1:]]
            if has_prev:
                args.append(prev)
            try:
                result = fn(*args)
            except TemplateError:
                raise
            except (TypeError, ValueError, KeyError, IndexError, OverflowError, re.error) as exc:
                raise self.err(cmd.line, f"error calling {first.value}: {exc}") from None
            if isinstance(result, str) and len(result) > self.limits.max_output:
                raise self.err(cmd.line, f"error calling {first.value}: result over the output budget of "
                                         f"{self.limits.max_output} characters")
            return result
        if len(cmd.args) > 1 or has_prev:
            raise self.err(cmd.line, f"can't give argument to non-function {self._name(first)}")
        return self.operand(first, dot, vars_)

    @staticmethod
    def _name(op: Operand) -> str:
        if op.kind == "var":
            return op.value + "".join("." + f for f in op.fields)
        return "." + ".".join(op.fields)

    def operand(self, op: Operand, dot: Any, vars_: list[dict[str, Any]]) -> Any:
        if op.kind == "literal":
            base = op.value
        elif op.kind == "var":
            base = self.lookup(op.value, vars_, op.line)
        elif op.kind == "dot":
            base = dot
        elif op.kind == "pipe":
            base = self.pipeline(op.value, dot, vars_)
        else:  # a bare function name used as an argument: call with no args
            try:
                return self.funcs[op.value]()
            except (TypeError, ValueError, KeyError, IndexError, OverflowError, re.error) as exc:  # as in command()
                raise self.err(op.line, f"error calling {op.value}: {exc}") from None
        for f in op.fields:
            base = self.field(base, f, op.line)
        return base

    def field(self, base: Any, name: str, line: int) -> Any:
        if isinstance(base, dict):
            if name in base:
                return base[name]
            return ""  # missingkey=zero, as Prometheus expands alert templates
        if base is None:
            raise self.err(line, f"nil pointer evaluating .{name}")
        raise self.err(line, f"can't evaluate field {name} in type {type(base).__name__}")


@dataclass
class Template:
    """A parsed template; ``expand`` runs it against data and variables."""

    name: str
    text: str
    root: ListNode
    predefined: tuple[str, ...]
    funcs: dict[str, Callable[..., Any]]

    def expand(self, data: Any = None, variables: dict[str, Any] | None = None,
               limits: TemplateLimits = DEFAULT_LIMITS) -> str:
        """Run the template; TemplateError when it fails or goes over one of ``limits``."""
        ex = _Exec(self.name, self.funcs, limits)
        scope = {"$": data}
        scope.update(variables or {})
        token = _ACTIVE.set((limits, ex.deadline))
        try:
            ex.walk(self.root, data, [scope])
        except RecursionError:
            raise TemplateError(self.name, 0, "template nested too deeply") from None
        finally:
            _ACTIVE.reset(token)
        return "".join(ex.out)


def parse_template(
    text: str,
    name: str = "template",
    predefined: tuple[str, ...] = ALERT_VARIABLES,
    funcs: dict[str, Callable[..., Any]] | None = None,
) -> Template:
    """Parse ``text``; raises TemplateError (with the line) for syntax errors and undefined names."""
    fn = dict(FUNCTIONS)
    if funcs:
        fn.update(funcs)
    toks = _lex(text, name)
    try:
        root = _Parser(toks, name, predefined, fn).parse()
    except RecursionError:
        raise TemplateError(name, 0, "template nested too deeply") from None
    return Template(name, text, root, predefined, fn)


def alert_template_data(
    labels: dict[str, str], value: float, external_labels: dict[str, str] | None = None, external_url: str = ""
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The data and variables Prometheus gives alert label/annotation templates."""
    ext = dict(external_labels or {})
    data = {
        "Labels": dict(labels),
        "ExternalLabels": ext,
        "ExternalURL": external_url,
        "Value": value,
        # lower-case aliases: rule files in the wild write $.labels.x
        "labels": dict(labels),
        "value": value,
    }
    variables = {"$labels": data["Labels"], "$externalLabels": ext, "$externalURL": external_url, "$value": value}
    return data, variables


def expand_alert_template(
    text: str,
    name: str,
    labels: dict[str, str],
    value: float,
    external_labels: dict[str, str] | None = None,
    external_url: str = "",
    query: Callable[[str], list[dict]] | None = None,
    limits: TemplateLimits = DEFAULT_LIMITS,
) -> str:
    """Expand one alert label/annotation template; Prometheus-style error text on failure
    (over a budget of ``limits`` too, so the alert still goes out with the reason in it).

    ``query(expr)`` (blocking) backs the ``query`` function: a list of {"Labels", "Value"}.
    """
    if "{{" not in text:
        return text
    try:
        tmpl = parse_template(text, name, funcs={"query": query} if query else None)
        data, variables = alert_template_data(labels, value, external_labels, external_url)
        return tmpl.expand(data, variables, limits)
    except TemplateError as exc:
        return f"<error expanding template: {exc}>"


_VALUE_ACTION = re.compile(r"\{\{-?\s*((?:(?!\}\})[^{])*\$value(?:(?!\}\})[^{])*?)\s*-?\}\}")


# One action formatting one number: small budgets.
_VALUE_LIMITS = TemplateLimits(timeout_s=0.5, max_output=1000, max_iterations=100, max_steps=1000)


def format_alert_value(value: float, templates: Any = ()) -> str:
    """An alert's value as its annotations print it, for tables beside those annotations.

    The first ``{{ ... }}`` action of ``templates`` (the rule's annotation templates) that
    uses ``$value`` on its own (``{{ $value | humanizePercentage }}``, ``{{ printf "%.1f"
    $value }}``) is expanded with this value: "99.04%" next to a summary saying "99.04%".
    Without such an action (or when it needs more than the value) ``humanize`` writes it.
    """
    for text in templates:
        for m in _VALUE_ACTION.finditer(str(text)):
            try:
                tmpl = parse_template("{{ " + m.group(1) + " }}", "value")
                out = tmpl.expand(*alert_template_data({}, value), limits=_VALUE_LIMITS)
            except TemplateError:
                continue
            if out.strip():
                return out.strip()
    return humanize(value)
