"""A typed PromQL grammar for Hypothesis: ``exprs(kind)`` draws well-formed expressions of a value type.

Selectors with escaped and regex matchers, ranges, offsets, ``@``, subqueries, functions,
aggregations and binary operators with ``bool``/``on``/``ignoring``/``group_*``. Used by the
PromQL and rule-file fuzz tests and by ``bench/fuzz.py``.
"""

from __future__ import annotations

from hypothesis import strategies as st

from query.parse import MATRIX, SCALAR, STRING, VECTOR

METRICS = ["x", "up", "http_requests_total", "node_cpu_seconds_total", "job:rate5m:sum", "m_1"]
LABELS = ["job", "instance", "a", "le", "mode", "x_1"]
DURATIONS = ["1s", "30s", "5m", "1h", "1h30m", "250ms", "1d", "1w", "2m30s"]
REGEXES = ["x.*", "a|b", "[0-9]+", ".+", "", "(?i)foo", "ab?c", "^x$", "a\\\\.b", "[^/]+", ".*"]
AGG_SIMPLE = ["sum", "avg", "min", "max", "count", "stddev", "stdvar", "group"]
FN_V = ["abs", "ceil", "floor", "exp", "ln", "log2", "log10", "sqrt", "sgn", "sort", "sort_desc", "timestamp",
        "absent", "-"]
FN_M = ["rate", "irate", "increase", "delta", "idelta", "deriv", "resets", "changes", "avg_over_time",
        "min_over_time", "max_over_time", "sum_over_time", "count_over_time", "last_over_time",
        "stddev_over_time", "stdvar_over_time", "present_over_time", "absent_over_time"]
ARITH = ["+", "-", "*", "/", "%", "^", "atan2"]
COMPARE = ["==", "!=", ">", "<", ">=", "<="]
SETOPS = ["and", "or", "unless"]

label_value_chars = st.characters(exclude_categories=("Cs",)) | st.sampled_from(['"', "\\", "\n", "'", "{", "}"])


def go_quote(s: str) -> str:
    """A double-quoted PromQL string literal for ``s``."""
    out = []
    for ch in s:
        if ch == "\\":
            out.append("\\\\")
        elif ch == '"':
            out.append('\\"')
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\t":
            out.append("\\t")
        elif ord(ch) < 0x20 or ch == "\x7f":
            out.append(f"\\x{ord(ch):02x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


@st.composite
def selectors(draw: st.DrawFn) -> str:
    name = draw(st.sampled_from(METRICS + [""]))
    matchers = []
    for label in draw(st.lists(st.sampled_from(LABELS), max_size=3, unique=True)):
        op = draw(st.sampled_from(["=", "!=", "=~", "!~"]))
        if op in ("=~", "!~"):
            value = go_quote(draw(st.sampled_from(REGEXES)))
        else:
            value = go_quote(draw(st.text(label_value_chars, max_size=6)))
        matchers.append(f"{label}{op}{value}")
    if not name:
        # a selector needs a matcher that does not match the empty string
        matchers.insert(0, draw(st.sampled_from(['job="api"', 'a=~".+"', '__name__="up"', 'instance!=""'])))
    text = name + ("{" + ",".join(matchers) + "}" if matchers or draw(st.booleans()) else "")
    return text


@st.composite
def modifiers(draw: st.DrawFn) -> str:
    out = ""
    if draw(st.booleans()):
        out += " offset " + draw(st.sampled_from(["", "-"])) + draw(st.sampled_from(DURATIONS))
    if draw(st.integers(0, 3)) == 0:
        out += " @ " + draw(st.sampled_from(["start()", "end()", "100", "1.5e3", "-60", "0x10"]))
    return out


numbers = st.sampled_from(["1", "0", "-2.5", "1e3", "0x1F", "Inf", "-Inf", "NaN", "0.001", ".5", "1E-3", "+7"])


def _p(draw: st.DrawFn, text: str) -> str:
    """Maybe wrap in parentheses."""
    return f"({text})" if draw(st.integers(0, 4)) == 0 else text


def _operand(text: str) -> str:
    """An operand of a vector binary operation: compound ones in parentheses, so that operator
    precedence cannot regroup them (``a <= bool on(x) 1 != b`` is ``(a <= ...) != b``)."""
    return f"({text})" if " " in text else text


@st.composite
def exprs(draw: st.DrawFn, kind: str, depth: int = 3) -> str:
    """A well-typed expression of ``kind`` (scalar, vector, matrix, string)."""
    leaf = depth <= 0
    if kind == STRING:
        return go_quote(draw(st.text(label_value_chars, max_size=8)))
    if kind == MATRIX:
        if leaf or draw(st.booleans()):
            return draw(selectors()) + f"[{draw(st.sampled_from(DURATIONS))}]" + draw(modifiers())
        inner = draw(exprs(VECTOR, depth - 1))
        step = draw(st.sampled_from(["", "1m", "30s"]))
        return f"({inner})[{draw(st.sampled_from(DURATIONS))}:{step}]" + draw(modifiers())
    if kind == SCALAR:
        choice = 0 if leaf else draw(st.integers(0, 5))
        if choice <= 1:
            return draw(numbers)
        if choice == 2:
            return draw(st.sampled_from(["time()", "pi()"]))
        if choice == 3:
            return f"scalar({draw(exprs(VECTOR, depth - 1))})"
        if choice == 4:
            return "-" + _p(draw, draw(exprs(SCALAR, depth - 1)))
        op = draw(st.sampled_from(ARITH[:-1] + COMPARE))
        mod = " bool" if op in COMPARE else ""
        return _p(draw, f"{draw(exprs(SCALAR, depth - 1))} {op}{mod} {draw(exprs(SCALAR, depth - 1))}")
    # vector
    choice = 0 if leaf else draw(st.integers(0, 11))
    if choice <= 1:
        return draw(selectors()) + draw(modifiers())
    if choice == 2:
        fn = draw(st.sampled_from(FN_V))
        v = draw(exprs(VECTOR, depth - 1))
        return f"-{_p(draw, v)}" if fn == "-" else f"{fn}({v})"
    if choice == 3:
        fn = draw(st.sampled_from(FN_M))
        return f"{fn}({draw(exprs(MATRIX, depth - 1))})"
    if choice == 4:
        fn = draw(st.sampled_from(["quantile_over_time", "predict_linear", "round", "clamp_min", "clamp_max",
                                   "histogram_quantile", "vector", "clamp", "label_replace", "label_join"]))
        s = draw(exprs(SCALAR, depth - 1))
        if fn == "quantile_over_time":
            return f"{fn}({s}, {draw(exprs(MATRIX, depth - 1))})"
        if fn == "predict_linear":
            return f"{fn}({draw(exprs(MATRIX, depth - 1))}, {s})"
        if fn == "histogram_quantile":
            return f"{fn}({s}, {draw(exprs(VECTOR, depth - 1))})"
        if fn == "vector":
            return f"vector({s})"
        v = draw(exprs(VECTOR, depth - 1))
        if fn == "clamp":
            return f"clamp({v}, {s}, {draw(exprs(SCALAR, depth - 1))})"
        if fn == "label_replace":
            return (f"label_replace({v}, {go_quote(draw(st.sampled_from(LABELS)))}, {draw(exprs(STRING))}, "
                    f"{go_quote(draw(st.sampled_from(LABELS)))}, {go_quote(draw(st.sampled_from(REGEXES)))})")
        if fn == "label_join":
            srcs = ", ".join(go_quote(x) for x in draw(st.lists(st.sampled_from(LABELS), max_size=3)))
            return f"label_join({v}, {go_quote(draw(st.sampled_from(LABELS)))}, {draw(exprs(STRING))}" + (
                f", {srcs})" if srcs else ")")
        return f"{fn}({v}, {s})"
    if choice in (5, 6):
        op = draw(st.sampled_from(AGG_SIMPLE + ["topk", "bottomk", "quantile", "count_values"]))
        v = draw(exprs(VECTOR, depth - 1))
        if op in ("topk", "bottomk", "quantile"):
            args = f"{draw(exprs(SCALAR, depth - 1))}, {v}"
        elif op == "count_values":
            args = f"{go_quote(draw(st.sampled_from(LABELS)))}, {v}"
        else:
            args = v
        grouping = ""
        if draw(st.booleans()):
            labels = ", ".join(draw(st.lists(st.sampled_from(LABELS), max_size=3, unique=True)))
            grouping = f" {draw(st.sampled_from(['by', 'without']))} ({labels})"
        if draw(st.booleans()):
            return f"{op}{grouping} ({args})"
        return f"{op}({args}){grouping}"
    # binary operations
    if choice == 7:
        op = draw(st.sampled_from(SETOPS))
        lhs, rhs = _operand(draw(exprs(VECTOR, depth - 1))), _operand(draw(exprs(VECTOR, depth - 1)))
        match = draw(_matching(allow_group=False))
        return _p(draw, f"{lhs} {op}{match} {rhs}")
    op = draw(st.sampled_from(ARITH + COMPARE))
    bool_mod = " bool" if op in COMPARE and draw(st.booleans()) else ""
    if choice == 8:
        s = _operand(draw(exprs(SCALAR, depth - 1)))
        v = _operand(draw(exprs(VECTOR, depth - 1)))
        if op == "atan2":
            op = "+"
        return _p(draw, f"{s} {op}{bool_mod} {v}" if draw(st.booleans()) else f"{v} {op}{bool_mod} {s}")
    lhs, rhs = _operand(draw(exprs(VECTOR, depth - 1))), _operand(draw(exprs(VECTOR, depth - 1)))
    return _p(draw, f"{lhs} {op}{bool_mod}{draw(_matching(allow_group=True))} {rhs}")


@st.composite
def _matching(draw: st.DrawFn, allow_group: bool) -> str:
    if not draw(st.booleans()):
        return ""
    on = draw(st.lists(st.sampled_from(LABELS), max_size=2, unique=True))
    kind = draw(st.sampled_from(["on", "ignoring"]))
    out = f" {kind}({', '.join(on)})"
    if allow_group and draw(st.booleans()):
        # a label may not be in on(...) and group_x(...) at once
        rest = [x for x in LABELS if kind == "ignoring" or x not in on]
        extra = ", ".join(draw(st.lists(st.sampled_from(rest), max_size=2, unique=True)))
        out += f" {draw(st.sampled_from(['group_left', 'group_right']))}({extra})"
    return out


typed_exprs = st.sampled_from([SCALAR, VECTOR, VECTOR, MATRIX, STRING]).flatmap(
    lambda k: exprs(k).map(lambda text: (k, text))
)


