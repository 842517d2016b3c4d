"""PromQL syntax the ``promql-parser`` package does not know, rewritten before it parses.

Two extensions of Prometheus 3.x are handled here, over a real token stream (strings and
comments are tokens of their own, so nothing inside them is ever touched):

* duration expressions: ``foo[1m * 2]``, ``foo[5m:30s+30s]``, ``foo offset (1h / 2)``.
  Constant arithmetic (``+ - * / % ^``, parentheses, numbers as seconds, durations,
  ``min_of``/``max_of``) is folded into a literal ``<n>ms`` duration; one using ``step()``
  becomes a placeholder duration that ``query.parse.bind_step`` sets for each query.
  ``range()`` is refused (the range-query cache would evaluate it per chunk).
* extended range selectors: ``foo[5m] anchored`` / ``foo smoothed``. The keyword is removed
  and the selector gets a marker matcher (``MODIFIER_LABEL``) that ``query.parse`` turns
  back into ``VectorSel.modifier``.

Errors are ``ParseError`` with positions in the ORIGINAL text. ``preparse`` returns the
rewritten text and the set of extension features it saw.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

from query.errors import ParseError

MODIFIER_LABEL = "__ringmon_range_modifier__"
RANGE_MODIFIERS = ("anchored", "smoothed")

FEATURE_DURATION_EXPR = "duration_expr"
FEATURE_EXTENDED_RANGE = "extended_range_selectors"

_DURATION_UNITS_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0, "y": 31536000.0}
_DURATION_RE = re.compile(r"(?:[0-9]+(?:ms|s|m|h|d|w|y))+(?![0-9A-Za-z_])")
_DURATION_PART_RE = re.compile(r"([0-9]+)(ms|s|m|h|d|w|y)")
_NUMBER_RE = re.compile(r"0[xX][0-9a-fA-F]+|(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_IDENT_RE = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")
_BRACKET_IDENT_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")  # inside [...], ":" separates
_TWO_CHAR_OPS = ("==", "!=", ">=", "<=", "=~", "!~")

# Words that are never metric names where they stand (binary operators and modifiers).
_KEYWORDS = frozenset({
    "and", "or", "unless", "atan2", "bool", "by", "without", "on", "ignoring", "group_left",
    "group_right", "offset", "fill", "fill_left", "fill_right", *RANGE_MODIFIERS,
})
_GROUPING_WORDS = frozenset({"by", "without", "on", "ignoring", "group_left", "group_right"})
_DURATION_FUNCS = frozenset({"min_of", "max_of"})
_QUERY_DURATION_FUNCS = frozenset({"step", "range"})


@dataclass(frozen=True)
class Token:
    kind: str  # ws comment str num dur ident op
    text: str
    start: int

    @property
    def end(self) -> int:
        return self.start + len(self.text)

    @property
    def low(self) -> str:
        return self.text.lower()


def tokenize(text: str) -> list[Token]:
    """Split PromQL into tokens; unterminated strings run to the end (the parser reports them)."""
    out: list[Token] = []
    i, n = 0, len(text)
    brackets = 0
    while i < n:
        c = text[i]
        if c.isspace():
            j = i + 1
            while j < n and text[j].isspace():
                j += 1
            out.append(Token("ws", text[i:j], i))
        elif c == "#":
            j = text.find("\n", i)
            j = n if j < 0 else j
            out.append(Token("comment", text[i:j], i))
        elif c in "\"'`":
            j = i + 1
            while j < n and text[j] != c:
                j += 2 if (text[j] == "\\" and c != "`") else 1
            j = min(j + 1, n)
            out.append(Token("str", text[i:j], i))
        elif c.isdigit() or (c == "." and i + 1 < n and text[i + 1].isdigit()):
            m = _DURATION_RE.match(text, i)
            if m:
                out.append(Token("dur", m.group(0), i))
                j = m.end()
            else:
                m = _NUMBER_RE.match(text, i)
                j = m.end() if m else i + 1
                out.append(Token("num", text[i:j], i))
        elif c.isalpha() or c == "_" or (c == ":" and not brackets):
            m = (_BRACKET_IDENT_RE if brackets else _IDENT_RE).match(text, i)
            j = m.end() if m else i + 1  # a non-ASCII letter: one character the parser rejects
            out.append(Token("ident" if m else "op", text[i:j], i))
        else:
            two = text[i : i + 2]
            j = i + (2 if two in _TWO_CHAR_OPS else 1)
            out.append(Token("op", text[i:j], i))
            if c == "[":
                brackets += 1
            elif c == "]" and brackets:
                brackets -= 1
        i = j
    return out


def duration_seconds(text: str) -> float:
    """``1h30m`` -> 5400.0."""
    return sum(int(a) * _DURATION_UNITS_S[b] for a, b in _DURATION_PART_RE.findall(text))


# ------------------------------------------------------------------ duration arithmetic


class _NeedsStep(Exception):
    """The duration uses step(): it is known only when a query runs."""


class _DurationExpr:
    """Recursive-descent evaluation of a duration expression (value in seconds). ``step_s``
    is the query step for ``step()``; None while parsing (``_NeedsStep`` is raised then)."""

    def __init__(self, toks: list[Token], text: str, step_s: float | None = None) -> None:
        self.toks = toks
        self.i = 0
        self.text = text
        self.step_s = step_s

    def error(self, msg: str, tok: Token | None = None) -> ParseError:
        pos = tok.start if tok is not None else (self.toks[-1].end if self.toks else 0)
        return ParseError(msg, pos, self.text)

    def peek(self) -> Token | None:
        return self.toks[self.i] if self.i < len(self.toks) else None

    def take(self) -> Token:
        tok = self.peek()
        if tok is None:
            raise self.error("unexpected end of duration expression")
        self.i += 1
        return tok

    def expect(self, s: str) -> Token:
        tok = self.take()
        if tok.text != s:
            raise self.error(f"unexpected {tok.text!r} in duration expression, expected {s!r}", tok)
        return tok

    def run(self) -> float:
        v = self.sum()
        tok = self.peek()
        if tok is not None:
            raise self.error(f"unexpected {tok.text!r} in duration expression", tok)
        return v

    def sum(self) -> float:
        v = self.product()
        while (tok := self.peek()) is not None and tok.text in ("+", "-"):
            self.i += 1
            rhs = self.product()
            v = v + rhs if tok.text == "+" else v - rhs
        return v

    def product(self) -> float:
        v = self.unary()
        while (tok := self.peek()) is not None and tok.text in ("*", "/", "%"):
            self.i += 1
            rhs = self.unary()
            if tok.text == "*":
                v *= rhs
            elif rhs == 0:
                raise self.error("division by zero in duration expression", tok)
            elif tok.text == "/":
                v /= rhs
            else:
                v = math.fmod(v, rhs)
        return v

    def unary(self) -> float:
        tok = self.peek()
        if tok is not None and tok.text in ("+", "-"):
            self.i += 1
            v = self.unary()
            return -v if tok.text == "-" else v
        return self.power()

    def power(self) -> float:
        base = self.primary()
        tok = self.peek()
        if tok is not None and tok.text == "^":
            self.i += 1
            return float(base ** self.unary())
        return base

    def primary(self) -> float:
        tok = self.take()
        if tok.kind == "dur":
            return duration_seconds(tok.text)
        if tok.kind == "num":
            return float(int(tok.text, 16)) if tok.low.startswith("0x") else float(tok.text)
        if tok.text == "(":
            v = self.sum()
            self.expect(")")
            return v
        if tok.kind == "ident" and tok.low in _DURATION_FUNCS:
            self.expect("(")
            a = self.sum()
            self.expect(",")
            b = self.sum()
            self.expect(")")
            return min(a, b) if tok.low == "min_of" else max(a, b)
        if tok.kind == "ident" and tok.low == "step":
            self.expect("(")
            self.expect(")")
            if self.step_s is None:
                raise _NeedsStep
            return self.step_s
        if tok.kind == "ident" and tok.low in _QUERY_DURATION_FUNCS:
            raise self.error(f"{tok.low}() in a duration is not supported by the Ringmon engine", tok)
        raise self.error(f"unexpected {tok.text!r} in duration expression", tok)


# Placeholder durations stand for step()-dependent ones until a query binds them.
PLACEHOLDER_BASE_MS = 1_000_000_000_000


def format_ms(ms: int) -> str:
    """``5400000`` -> ``1h30m``: a duration literal the parser reads (it keeps each unit's
    number below 2**32, so a plain ``<n>ms`` would overflow beyond 49 days)."""
    if ms == 0:
        return "0s"
    sign, rest = ("-" if ms < 0 else ""), abs(ms)
    out = []
    for unit, size in (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000), ("ms", 1)):
        n, rest = divmod(rest, size)
        if n:
            out.append(f"{n}{unit}")
    return sign + "".join(out)


@dataclass
class StepDuration:
    """A duration that uses ``step()``: evaluated for each query (``value_ms``)."""

    toks: list[Token]
    text: str
    what: str
    positive: bool

    def value_ms(self, step_ms: int) -> int:
        return _to_ms(_DurationExpr(self.toks, self.text, step_ms / 1000.0).run(), self.toks, self.text,
                      self.what, self.positive)


def _to_ms(seconds: float, toks: list[Token], text: str, what: str, positive: bool) -> int:
    if math.isnan(seconds) or math.isinf(seconds) or abs(seconds) > 9.2e15:
        raise ParseError(f"{what} out of range: {seconds:g}s", toks[0].start, text)
    ms = round(seconds * 1000)
    if positive and ms <= 0:
        raise ParseError(f"{what} must be greater than 0", toks[0].start, text)
    return ms


def _fold(toks: list[Token], text: str, what: str, positive: bool, deferred: dict[int, StepDuration]) -> str | None:
    """Replacement text for a duration operand, or None when it is a plain literal already."""
    if len(toks) == 1 and toks[0].kind in ("dur", "num"):
        return None
    if len(toks) == 2 and toks[0].text in ("+", "-") and toks[1].kind in ("dur", "num"):
        return None
    try:
        seconds = _DurationExpr(toks, text).run()
    except _NeedsStep:
        placeholder = PLACEHOLDER_BASE_MS + len(deferred)
        deferred[placeholder] = StepDuration(toks, text, what, positive)
        return format_ms(placeholder)
    return format_ms(_to_ms(seconds, toks, text, what, positive))


# --------------------------------------------------------------------------- rewriting


@dataclass
class Preparsed:
    text: str
    features: set[str] = field(default_factory=set)
    step_durations: dict[int, StepDuration] = field(default_factory=dict)  # placeholder ms -> duration


@dataclass
class _Selector:
    """Where the marker matcher of the selector that ended last would go."""

    insert_at: int
    in_braces: bool  # insert inside existing braces (else add "{...}" after the name)
    needs_comma: bool
    modifier_tok: Token | None = None


def _matching(sig: list[Token], i: int, text: str) -> int:
    """Index of the bracket closing the one at ``sig[i]``."""
    pairs = {"(": ")", "[": "]", "{": "}"}
    stack = [pairs[sig[i].text]]
    j = i + 1
    while j < len(sig):
        t = sig[j].text if sig[j].kind == "op" else ""
        if t in pairs:
            stack.append(pairs[t])
        elif t in (")", "]", "}"):
            if t != stack[-1]:
                raise ParseError(f"unexpected {t!r}", sig[j].start, text)
            stack.pop()
            if not stack:
                return j
        j += 1
    raise ParseError(f"unclosed {sig[i].text!r}", sig[i].start, text)


def _offset_operand_end(sig: list[Token], i: int, text: str) -> int:
    """``sig[i]`` starts an offset operand: index one past its end (sign, then one primary)."""
    j = i
    while j < len(sig) and sig[j].text in ("+", "-"):
        j += 1
    if j >= len(sig):
        raise ParseError("unexpected end of input after offset", sig[-1].end, text)
    t = sig[j]
    if t.text == "(":
        return _matching(sig, j, text) + 1
    if t.kind == "ident" and j + 1 < len(sig) and sig[j + 1].text == "(":
        return _matching(sig, j + 1, text) + 1
    return j + 1


_ANY_BRACKET = re.compile(r"\[[^\]]*\]?")
_PLAIN_BRACKET = re.compile(r"\[\s*[0-9A-Za-z]*\s*(?::\s*[0-9A-Za-z]*\s*)?\]")
_OFFSET_WORD = re.compile(r"offset", re.I)
_PLAIN_OFFSET = re.compile(r"offset\s+[+-]?\s*[0-9]", re.I)


def _nothing_to_rewrite(text: str) -> bool:
    """Cheap, conservative test: no modifier words, only literal ranges and offsets."""
    low = text.lower()
    if "anchored" in low or "smoothed" in low:
        return False
    if "[" in text and len(_ANY_BRACKET.findall(text)) != len(_PLAIN_BRACKET.findall(text)):
        return False
    return "offset" not in low or len(_OFFSET_WORD.findall(text)) == len(_PLAIN_OFFSET.findall(text))


def preparse(text: str) -> Preparsed:  # noqa: C901, PLR0915 - a single-pass rewriter over the token stream; its rewrites share the cursor
    """Rewrite duration expressions and range modifiers into syntax ``promql-parser`` reads."""
    if _nothing_to_rewrite(text):
        return Preparsed(text)
    sig = [t for t in tokenize(text) if t.kind not in ("ws", "comment")]
    edits: list[tuple[int, int, str]] = []
    features: set[str] = set()
    deferred: dict[int, StepDuration] = {}
    last: _Selector | None = None  # selector that may still take modifiers
    after_subquery: Token | None = None
    i = 0
    while i < len(sig):
        t = sig[i]
        nxt = sig[i + 1] if i + 1 < len(sig) else None
        if t.kind == "op" and t.text == "{":
            close = _matching(sig, i, text)
            prev = sig[close - 1]
            last = _Selector(sig[close].start, True, prev.text not in ("{", ","))
            after_subquery = None
            i = close + 1
            continue
        if t.kind == "op" and t.text == "[":
            close = _matching(sig, i, text)
            parts: list[list[Token]] = [[]]
            depth = 0
            for tok in sig[i + 1 : close]:
                if tok.text in ("(", "["):
                    depth += 1
                elif tok.text in (")", "]"):
                    depth -= 1
                if tok.text == ":" and depth == 0 and len(parts) == 1:
                    parts.append([])
                else:
                    parts[-1].append(tok)
            is_subquery = len(parts) == 2
            for k, part in enumerate(parts):
                if not part:
                    continue
                what = "subquery step" if k == 1 else "range"
                new = _fold(part, text, what, True, deferred)
                if new is not None:
                    edits.append((part[0].start, part[-1].end, new))
                    features.add(FEATURE_DURATION_EXPR)
            if is_subquery:
                last, after_subquery = None, t
            i = close + 1
            continue
        if t.kind == "ident" and t.low == "offset" and nxt is not None and (
            nxt.kind in ("num", "dur") or nxt.text in ("(", "+", "-")
            or (nxt.kind == "ident" and nxt.low in _DURATION_FUNCS | _QUERY_DURATION_FUNCS)
        ):
            end = _offset_operand_end(sig, i + 1, text)
            operand = sig[i + 1 : end]
            new = _fold(operand, text, "offset", False, deferred)
            if new == "0s":  # the parser rejects a zero offset literal; no offset is the same
                edits.append((t.start, operand[-1].end, ""))
            elif new is not None:
                edits.append((operand[0].start, operand[-1].end, new))
                features.add(FEATURE_DURATION_EXPR)
            i = end
            continue
        if t.kind == "op" and t.text == "@" and nxt is not None:
            j = i + 1
            while j < len(sig) and sig[j].text in ("+", "-"):
                j += 1
            if j < len(sig) and sig[j].kind == "ident" and j + 1 < len(sig) and sig[j + 1].text == "(":
                j = _matching(sig, j + 1, text)
            i = j + 1
            continue
        if t.kind == "ident" and t.low in RANGE_MODIFIERS and (last is not None or after_subquery is not None):
            if last is None:
                raise ParseError(f"{t.low} modifier is not supported for subqueries", t.start, text)
            if last.modifier_tok is not None:
                raise ParseError(
                    f"{t.low} modifier cannot follow the {last.modifier_tok.low} modifier", t.start, text
                )
            last.modifier_tok = t
            mark = f'{MODIFIER_LABEL}="{t.low}"'
            if last.in_braces:
                edits.append((last.insert_at, last.insert_at, (", " if last.needs_comma else "") + mark))
            else:
                edits.append((last.insert_at, last.insert_at, "{" + mark + "}"))
            edits.append((t.start, t.end, ""))
            features.add(FEATURE_EXTENDED_RANGE)
            i += 1
            continue
        if t.kind == "ident" and t.low in _GROUPING_WORDS and nxt is not None and nxt.text == "(":
            i = _matching(sig, i + 1, text) + 1
            last = after_subquery = None
            continue
        if t.kind == "ident" and t.low not in _KEYWORDS and (nxt is None or nxt.text != "(") and t.low not in ("inf", "nan"):
            # A metric name: the selector ends here unless label matchers follow.
            last = None if (nxt is not None and nxt.text == "{") else _Selector(t.end, False, False)
            after_subquery = None
            i += 1
            continue
        last = after_subquery = None
        i += 1
    if not edits:
        return Preparsed(text, features, deferred)
    out: list[str] = []
    pos = 0
    for start, end, new in sorted(edits, key=lambda e: (e[0], e[1])):
        out.append(text[pos:start])
        out.append(new)
        pos = max(pos, end)
    out.append(text[pos:])
    return Preparsed("".join(out), features, deferred)
