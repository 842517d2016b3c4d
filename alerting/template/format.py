"""Go's ``fmt`` as templates print values: ``%v`` of floats, ``%g``, ``Sprint`` of any value,
``Sprintf`` (``printf``, within the active output budget) and ``time.Time`` in UTC."""

from __future__ import annotations

import datetime as _dt
import math
import re
from typing import Any

from alerting.template.limits import ACTIVE
from query import promjson

go_float = promjson.go_g  # Go's %v of a float64 (shortest digits), as the API formats it


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
    budget = ACTIVE.get()[0].max_output

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



def go_time(ts: float) -> str:
    """A Unix time as Go prints a ``time.Time`` in UTC."""
    t = _dt.datetime.fromtimestamp(0, _dt.UTC) + _dt.timedelta(seconds=ts)
    base = t.strftime("%Y-%m-%d %H:%M:%S")
    frac = f"{t.microsecond:06d}".rstrip("0")
    return f"{base}{'.' + frac if frac else ''} +0000 UTC"

