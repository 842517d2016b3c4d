"""PromQL text -> the engine's own expression tree (via the ``promql-parser`` package).

The tree uses plain dataclasses with durations in milliseconds so the evaluator never
touches the parser's wrapper objects. Parse errors carry a character position.
"""

from __future__ import annotations

import datetime as _dt
import re
from dataclasses import dataclass

import promql_parser as pp

from query.errors import ParseError
from query.preparse import MODIFIER_LABEL, StepDuration, preparse
from storage.matchers import Matcher, MatchOp

# ---------------------------------------------------------------------------- tree


@dataclass(eq=False)
class NumberLit:
    value: float


@dataclass(eq=False)
class StringLit:
    value: str


@dataclass(eq=False)
class VectorSel:
    matchers: tuple[Matcher, ...]
    offset_ms: int = 0
    at: int | str | None = None  # ms, "start", "end" or None
    text: str = ""
    modifier: str | None = None  # "anchored" | "smoothed" (extended range selectors)
    step_durations: dict[str, StepDuration] | None = None  # field -> duration using step()

    @property
    def key(self) -> tuple:
        return tuple(sorted((m.name, m.op.value, m.value) for m in self.matchers))


@dataclass(eq=False)
class MatrixSel:
    vector: VectorSel
    range_ms: int
    step_durations: dict[str, StepDuration] | None = None


@dataclass(eq=False)
class Subquery:
    expr: "Node"
    range_ms: int
    step_ms: int  # 0 = engine default
    offset_ms: int = 0
    at: int | str | None = None
    step_durations: dict[str, StepDuration] | None = None


@dataclass(eq=False)
class Call:
    name: str
    args: list["Node"]


@dataclass(eq=False)
class Aggregate:
    op: str
    expr: "Node"
    param: "Node | None" = None
    without: bool = False
    grouping: tuple[str, ...] = ()


@dataclass(eq=False)
class Binary:
    op: str
    lhs: "Node"
    rhs: "Node"
    return_bool: bool = False
    card: str = "one-to-one"  # one-to-one | many-to-one | one-to-many | many-to-many
    on: bool = False
    match_labels: tuple[str, ...] = ()
    include: tuple[str, ...] = ()
    has_matching: bool = False
    fill_lhs: float | None = None
    fill_rhs: float | None = None


@dataclass(eq=False)
class Negate:
    expr: "Node"


Node = NumberLit | StringLit | VectorSel | MatrixSel | Subquery | Call | Aggregate | Binary | Negate

# Value types of expressions, as Prometheus names them in errors.
SCALAR, VECTOR, MATRIX, STRING = "scalar", "vector", "matrix", "string"

# ------------------------------------------------------------------ @ value rewrite

# The parser cannot represent negative `@` times (it panics converting them), so every
# numeric `@` value is shifted by this many seconds before parsing and shifted back after.
_AT_SHIFT_S = 10_000_000_000
_TOKEN_RE = re.compile(
    r"""(?P<str>"(?:[^"\\]|\\.)*"?|'(?:[^'\\]|\\.)*'?|`[^`]*`?)"""
    r"""|(?P<comment>\#[^\n]*)"""
    r"""|(?P<at>@\s*(?P<atnum>[+-]?\s*(?:(?:[0-9]+(?:ms|[smhdwy]))+(?![0-9a-zA-Z_])|0[xX][0-9a-fA-F]+|(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?|[iI][nN][fF]|[nN][aA][nN])))"""
    r"""|(?P<ident>[a-zA-Z_:][a-zA-Z0-9_:.]*)"""
    r"""|(?P<num>(?:0[xX][0-9a-fA-F]+|[0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)(?:[a-zA-Z]+[0-9]*)*)"""
    r"""|(?P<ws>\s+)"""
    r"""|(?P<op>==|!=|>=|<=|=~|!~|.)""",
    re.S,
)


def _tokens(text: str) -> list[re.Match[str]]:
    return list(_TOKEN_RE.finditer(text))


_DURATION_UNITS_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000, "y": 31_536_000_000}


def _number_or_duration_s(raw: str) -> float:
    sign = -1.0 if raw.startswith("-") else 1.0
    body = raw.lstrip("+-")
    if body.lower().startswith("0x"):
        return sign * float(int(body, 16))
    parts = re.findall(r"([0-9]+)(ms|[smhdwy])", body)
    if parts and "".join(a + b for a, b in parts) == body:
        return sign * sum(int(a) * _DURATION_UNITS_MS[b] for a, b in parts) / 1000.0
    return sign * float(body)


def _shift_at_values(text: str) -> str:
    out = []
    pos = 0
    for m in _tokens(text):
        if m.group("at"):
            raw = m.group("atnum").replace(" ", "")
            try:
                v = _number_or_duration_s(raw)
            except ValueError:
                continue
            if v != v or v in (float("inf"), float("-inf")):
                raise ParseError(f"timestamp out of bounds for @ modifier: {raw}", m.start("atnum"), text)
            out.append(text[pos : m.start()])
            out.append(f"@ {v + _AT_SHIFT_S:.3f}")
            pos = m.end()
    out.append(text[pos:])
    return "".join(out)


# --------------------------------------------------------------------- error position


def _error_position(text: str, message: str) -> int:
    """Best-effort 0-based offset of a syntax error (the parser reports none)."""
    toks = _tokens(text)
    # Unterminated strings and unbalanced brackets are found lexically.
    stack: list[tuple[str, int]] = []
    pairs = {")": "(", "]": "[", "}": "{"}
    for m in toks:
        s = m.group(0)
        if m.group("str"):
            if len(s) < 2 or s[-1] != s[0]:
                return m.start()
        elif s in "([{" and m.group("op"):
            stack.append((s, m.start()))
        elif s in ")]}" and m.group("op"):
            if not stack or stack[-1][0] != pairs[s]:
                return m.start()
            stack.pop()
    if stack and ("unclosed" in message or "end of input" in message):
        return stack[-1][1]
    # Otherwise: the first token after which no short completion makes the text valid.
    significant = [m for m in toks if not m.group("ws") and not m.group("comment")]
    for m in significant[:200]:
        if not _viable_prefix(text[: m.end()]):
            return m.start()
    return len(text.rstrip())


# To decide whether a prefix can still become valid PromQL: append a filler, close the
# brackets left open, and maybe add an operand.
_FILLERS = ("", " x", " 1", "(x)", "x[5m]", " x[5m]", ' "x"', "[5m]", "5m]", '=""', '""', "x")
_TAILS = ("", " (x)", " x")
_CLOSER = {"(": ")", "[": "]", "{": "}"}


def _closers(text: str) -> str:
    stack: list[str] = []
    for m in _tokens(text):
        s = m.group(0)
        if m.group("op") and s in "([{":
            stack.append(_CLOSER[s])
        elif m.group("op") and s in ")]}" and stack:
            stack.pop()
    return "".join(reversed(stack))


def _viable_prefix(prefix: str) -> bool:
    for filler in _FILLERS:
        body = prefix + filler
        closed = body + _closers(body)
        for tail in _TAILS:
            try:
                pp.parse(preparse(closed + tail).text)
                return True
            except BaseException:  # noqa: BLE001, S112 - the parser may panic; try the next
                continue
    return False


# -------------------------------------------------------------------------- convert


def _ms(td: _dt.timedelta | None) -> int:
    if td is None:
        return 0
    return td.days * 86_400_000 + td.seconds * 1000 + td.microseconds // 1000


_EPOCH = _dt.datetime(1970, 1, 1, tzinfo=_dt.UTC)


def _at(node: object) -> int | str | None:
    at = getattr(node, "at", None)
    if at is None:
        return None
    kind = at.type
    if kind == pp.AtModifierType.Start:
        return "start"
    if kind == pp.AtModifierType.End:
        return "end"
    when: _dt.datetime = at.at  # promql_parser is untyped
    delta = when - _EPOCH
    ms = delta.days * 86_400_000 + delta.seconds * 1000 + round(delta.microseconds / 1000)
    return ms - _AT_SHIFT_S * 1000


_MATCH_OPS = [
    (pp.MatchOp.Equal, MatchOp.EQ),
    (pp.MatchOp.NotEqual, MatchOp.NE),
    (pp.MatchOp.Re, MatchOp.RE),
    (pp.MatchOp.NotRe, MatchOp.NRE),
]


def _match_op(op: object) -> MatchOp:
    for theirs, ours in _MATCH_OPS:
        if op == theirs:
            return ours
    raise ValueError(f"unknown match operator {op}")


def _selector(vs: pp.VectorSelector, text: str) -> VectorSel:
    ms: list[Matcher] = []
    if vs.name:
        ms.append(Matcher("__name__", MatchOp.EQ, vs.name))
    pm = vs.matchers
    if pm.or_matchers:
        raise ParseError("'or' inside label matchers is not supported", 0, text)
    modifier = None
    for m in pm.matchers:
        if m.name == MODIFIER_LABEL:
            modifier = m.value
            continue
        try:
            op = _match_op(m.op)
            value = _go_string(m.value, text)
            ms.append(Matcher(m.name, op, value))
        except ValueError as exc:
            raise ParseError(str(exc), 0, text) from None
    if not any(not m.matches_empty for m in ms):
        raise ParseError(
            f"vector selector must contain at least one non-empty matcher: {vs}", 0, text
        )
    shown = str(vs)
    if modifier is not None:
        shown = re.sub(rf',?\s*{MODIFIER_LABEL}="\w+"', "", shown).replace("{, ", "{") + f" {modifier}"
    return VectorSel(tuple(ms), _ms(vs.offset), _at(vs), shown, modifier)


_CARD = [
    (pp.VectorMatchCardinality.OneToOne, "one-to-one"),
    (pp.VectorMatchCardinality.ManyToOne, "many-to-one"),
    (pp.VectorMatchCardinality.OneToMany, "one-to-many"),
    (pp.VectorMatchCardinality.ManyToMany, "many-to-many"),
]


def _card(card: object) -> str:
    for theirs, ours in _CARD:
        if card == theirs:
            return ours
    raise ValueError(f"unknown vector matching {card}")


_BYTE_ESCAPE = re.compile(r"\\(?:x[89a-fA-F][0-9a-fA-F]|[23][0-7][0-7])")


def _go_string(value: str, text: str) -> str:
    """The parser turns each ``\\xHH`` escape into one code point; Go strings hold bytes, so
    re-read such strings as UTF-8 (and reject byte sequences that are not UTF-8)."""
    if not _BYTE_ESCAPE.search(text) or not any("\x80" <= ch <= "\xff" for ch in value):
        return value
    try:
        raw = value.encode("latin-1")
    except UnicodeEncodeError:
        return value
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ParseError(f"invalid UTF-8 in string {value!r}", 0, text) from None


def _convert(e: object, text: str) -> Node:
    if isinstance(e, pp.ParenExpr):
        return _convert(e.expr, text)
    if isinstance(e, pp.NumberLiteral):
        return NumberLit(float(e.val))
    if isinstance(e, pp.StringLiteral):
        return StringLit(_go_string(e.val, text))
    if isinstance(e, pp.VectorSelector):
        return _selector(e, text)
    if isinstance(e, pp.MatrixSelector):
        return MatrixSel(_selector(e.vector_selector, text), _ms(e.range))
    if isinstance(e, pp.SubqueryExpr):
        return Subquery(_convert(e.expr, text), _ms(e.range), _ms(e.step), _ms(e.offset), _at(e))
    if isinstance(e, pp.UnaryExpr):
        return Negate(_convert(e.expr, text))
    if isinstance(e, pp.Call):
        return Call(e.func.name, [_convert(a, text) for a in e.args])
    if isinstance(e, pp.AggregateExpr):
        mod = e.modifier
        without = mod is not None and mod.type == pp.AggModifierType.Without
        grouping = tuple(mod.labels) if mod is not None else ()
        param = _convert(e.param, text) if e.param is not None else None
        return Aggregate(str(e.op), _convert(e.expr, text), param, without, grouping)
    if isinstance(e, pp.BinaryExpr):
        bmod = e.modifier
        b = Binary(str(e.op).strip(), _convert(e.lhs, text), _convert(e.rhs, text))
        if bmod is not None:
            b.return_bool = bool(bmod.return_bool)
            b.card = _card(bmod.card)
            if bmod.matching is not None:
                b.has_matching = True
                b.on = bmod.matching.type == pp.LabelModifierType.Include
                b.match_labels = tuple(bmod.matching.labels)
            b.include = tuple(bmod.group_labels or ())
            fv = bmod.fill_values
            if fv is not None:
                b.fill_lhs = fv.lhs
                b.fill_rhs = fv.rhs
        if b.op in ("and", "or", "unless"):
            b.card = "many-to-many"
        return b
    raise ParseError(f"unsupported expression {type(e).__name__}: {e}", 0, text)


# Nesting the parser may see: deeper expressions crash the native parser (stack overflow at a
# few thousand chained operators), take it seconds (its time grows with the square of the
# depth) and could not be converted or evaluated anyway (Python's recursion limit).
MAX_NESTING = 1000
_NESTING_OPS = frozenset({"+", "-", "*", "/", "%", "^", "==", "!=", "<", ">", "<=", ">="})
_NESTING_WORDS = frozenset({"and", "or", "unless", "atan2"})


def _check_nesting(text: str) -> None:
    """ParseError when open brackets plus operators outside label matchers exceed MAX_NESTING."""
    depth = braces = load = 0
    for m in _tokens(text):
        s = m.group(0)
        if m.group("op"):
            if s in "([{":
                depth += 1
                braces += s == "{"
            elif s in ")]}":
                depth = max(depth - 1, 0)
                braces = max(braces - (s == "}"), 0)
            elif s in _NESTING_OPS and not braces:
                load += 1
        elif m.group("ident") and s.lower() in _NESTING_WORDS and not braces:
            load += 1
        if depth + load > MAX_NESTING:
            raise ParseError(
                f"expression nested too deeply (more than {MAX_NESTING} levels of brackets and operators)",
                m.start(),
                text,
            )


def parse(text: str) -> Node:
    """Parse PromQL into the engine's tree; raises ``ParseError`` with a position."""
    return parse_with_features(text)[0]


FEATURE_EXPERIMENTAL_FUNCTIONS = "experimental_functions"
FEATURE_FILL_MODIFIERS = "binop_fill_modifiers"
# Functions and aggregations Prometheus gates behind --enable-feature=promql-experimental-functions.
EXPERIMENTAL_FUNCTIONS = frozenset({
    "sort_by_label", "sort_by_label_desc", "mad_over_time", "ts_of_max_over_time", "ts_of_min_over_time",
    "ts_of_last_over_time", "ts_of_first_over_time", "first_over_time", "double_exponential_smoothing",
    "info", "histogram_quantiles", "limitk", "limit_ratio",
})
# Range functions each extended range selector modifier may feed (as Prometheus allows).
MODIFIER_FUNCTIONS = {
    "anchored": ("changes", "delta", "increase", "rate", "resets"),
    "smoothed": ("delta", "increase", "rate"),
}


def parse_with_features(text: str) -> tuple[Node, frozenset[str]]:
    """Parse and also name the optional language features the expression uses
    (``duration_expr``, ``extended_range_selectors``, ``binop_fill_modifiers``,
    ``experimental_functions``), so callers can gate them like promtool's feature flags."""
    if not text.strip():
        raise ParseError("no expression found in input", 0, text)
    _check_nesting(text)
    pre = preparse(text)
    shifted = _shift_at_values(pre.text)
    try:
        ast = pp.parse(shifted)
    except BaseException as exc:  # noqa: BLE001 - the Rust parser may raise PanicException
        if isinstance(exc, (KeyboardInterrupt, SystemExit)):
            raise
        msg = str(exc) or type(exc).__name__
        raise ParseError(msg, _error_position(text, msg), text) from None
    try:
        node = _convert(ast, text)
    except ParseError:
        raise
    except BaseException as exc:  # noqa: BLE001
        if isinstance(exc, (KeyboardInterrupt, SystemExit)):
            raise
        raise ParseError(str(exc), 0, text) from None
    features = set(pre.features)
    _check_modifiers(node, None, text, features)
    if pre.step_durations:
        _attach_step_durations(node, pre.step_durations)
    return node, frozenset(features)


_DURATION_FIELDS = ("range_ms", "step_ms", "offset_ms")


def _children(node: Node) -> list[Node]:
    if isinstance(node, MatrixSel):
        return [node.vector]
    if isinstance(node, (Subquery, Negate)):
        return [node.expr]
    if isinstance(node, Call):
        return list(node.args)
    if isinstance(node, Aggregate):
        return [node.expr] + ([node.param] if node.param is not None else [])
    if isinstance(node, Binary):
        return [node.lhs, node.rhs]
    return []


def _attach_step_durations(node: Node, table: dict[int, StepDuration]) -> None:
    """Find the placeholder durations the pre-parser wrote and note what they stand for."""
    found = {f: table[getattr(node, f)] for f in _DURATION_FIELDS if getattr(node, f, None) in table}
    if found:
        node.step_durations = found  # type: ignore[union-attr]
    for child in _children(node):
        _attach_step_durations(child, table)


def bind_step(node: Node, step_ms: int) -> None:
    """Set every duration that uses ``step()`` for a query with this step (0 = instant)."""
    sd = getattr(node, "step_durations", None)
    if sd:
        for f, dur in sd.items():
            setattr(node, f, dur.value_ms(step_ms))
    for child in _children(node):
        bind_step(child, step_ms)


def _modifier_error(mod: str, context: str, text: str) -> ParseError:
    allowed = ", ".join(MODIFIER_FUNCTIONS[mod])
    return ParseError(f"{mod} modifier can only be used with: {allowed} - not with {context}", _keyword_pos(text, mod), text)


def _keyword_pos(text: str, word: str) -> int:
    m = re.search(rf"\b{word}\b", text, re.I)
    return m.start() if m else 0


def _check_modifiers(node: Node, parent: Node | None, text: str, features: set[str]) -> None:
    """Where anchored/smoothed may appear; note fill modifiers and experimental functions."""
    if isinstance(node, VectorSel):
        if node.modifier == "anchored" and not isinstance(parent, MatrixSel):
            raise ParseError("anchored modifier can only be used on range selectors", _keyword_pos(text, "anchored"), text)
        return
    if isinstance(node, MatrixSel):
        mod = node.vector.modifier
        if mod is not None:
            if not isinstance(parent, Call):
                raise _modifier_error(mod, "a range vector result" if parent is None else "this expression", text)
            if parent.name not in MODIFIER_FUNCTIONS[mod]:
                raise _modifier_error(mod, parent.name, text)
        _check_modifiers(node.vector, node, text, features)
        return
    if isinstance(node, Call):
        if node.name in EXPERIMENTAL_FUNCTIONS:
            features.add(FEATURE_EXPERIMENTAL_FUNCTIONS)
        for a in node.args:
            _check_modifiers(a, node, text, features)
    elif isinstance(node, Aggregate):
        if node.op in EXPERIMENTAL_FUNCTIONS:
            features.add(FEATURE_EXPERIMENTAL_FUNCTIONS)
        if node.param is not None:
            _check_modifiers(node.param, node, text, features)
        _check_modifiers(node.expr, node, text, features)
    elif isinstance(node, Binary):
        if node.fill_lhs is not None or node.fill_rhs is not None:
            features.add(FEATURE_FILL_MODIFIERS)
        _check_modifiers(node.lhs, node, text, features)
        _check_modifiers(node.rhs, node, text, features)
    elif isinstance(node, (Negate, Subquery)):
        _check_modifiers(node.expr, node, text, features)


def value_type(node: Node) -> str:
    """The PromQL value type an expression evaluates to."""
    if isinstance(node, NumberLit):
        return SCALAR
    if isinstance(node, StringLit):
        return STRING
    if isinstance(node, VectorSel):
        return VECTOR
    if isinstance(node, (MatrixSel, Subquery)):
        return MATRIX
    if isinstance(node, Negate):
        return value_type(node.expr)
    if isinstance(node, Aggregate):
        return VECTOR
    if isinstance(node, Binary):
        if value_type(node.lhs) == SCALAR and value_type(node.rhs) == SCALAR:
            return SCALAR
        return VECTOR
    if isinstance(node, Call):
        if node.name in ("time", "scalar", "pi", "start", "end", "step", "range", "min_of", "max_of"):
            return SCALAR
        return VECTOR
    raise TypeError(node)
