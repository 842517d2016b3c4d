"""PromQL syntax checks for rule expressions (parse only; evaluation is the engine's job).

Parses with the engine's parser (``query.parse``), which also reads Prometheus 3.x duration
expressions and anchored/smoothed range selectors. ``ParserFeatures`` mirrors promtool's
``--enable-feature`` flags: when a flag is off, expressions using it are rejected.
Duration expressions are always accepted (no longer behind a flag upstream).
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Iterator
from dataclasses import dataclass

import promql_parser


class PromQLSyntaxError(ValueError):
    """The expression does not parse; the message reads like Prometheus' ``parse error: ...``.

    ``line`` is the 1-based line inside the expression (0 when unknown).
    """

    def __init__(self, message: str, line: int = 0) -> None:
        super().__init__(message)
        self.line = line


@dataclass(frozen=True)
class ParserFeatures:
    at_modifier: bool = True
    negative_offset: bool = True
    experimental_functions: bool = True
    extended_range_selectors: bool = True
    binop_fill_modifiers: bool = True


DEFAULT_FEATURES = ParserFeatures()
NO_OPTIONAL_FEATURES = ParserFeatures(False, False, False, False, False)

# promtool --enable-feature names -> ParserFeatures field ("" = accepted, nothing to enable).
FEATURE_FLAGS: dict[str, str] = {
    "promql-at-modifier": "at_modifier",
    "promql-negative-offset": "negative_offset",
    "promql-experimental-functions": "experimental_functions",
    "promql-extended-range-selectors": "extended_range_selectors",
    "promql-binop-fill-modifiers": "binop_fill_modifiers",
    "promql-duration-expr": "",
}

# Feature names reported by query.parse.parse_with_features -> (ParserFeatures field, flag).
_GATED = {
    "experimental_functions": ("experimental_functions", "promql-experimental-functions",
                               "experimental functions are disabled"),
    "extended_range_selectors": ("extended_range_selectors", "promql-extended-range-selectors",
                                 "the anchored and smoothed range selector modifiers are disabled"),
    "binop_fill_modifiers": ("binop_fill_modifiers", "promql-binop-fill-modifiers",
                             "binary operator fill modifiers are disabled"),
}


def features_from_flags(flags: list[str], base: ParserFeatures = NO_OPTIONAL_FEATURES) -> ParserFeatures:
    """``base`` with the named ``--enable-feature`` flags switched on; ValueError on an unknown name."""
    on = {f: getattr(base, f) for f in ParserFeatures.__dataclass_fields__}
    for raw in flags:
        name = raw.strip()
        if name not in FEATURE_FLAGS:  # also accept the short forms "at-modifier", "at_modifier"
            name = "promql-" + name.replace("_", "-")
        if name not in FEATURE_FLAGS:
            raise ValueError(f"unknown feature {raw!r} (known: {', '.join(FEATURE_FLAGS)})")
        if FEATURE_FLAGS[name]:
            on[FEATURE_FLAGS[name]] = True
    return ParserFeatures(**on)


def check_expr(expr: str, features: ParserFeatures = DEFAULT_FEATURES) -> object:
    """Parse ``expr``; returns the tree or raises PromQLSyntaxError (``line:col: parse error: ...``)."""
    try:
        from query.errors import ParseError
        from query.parse import parse_with_features
    except ImportError:  # engine not available: the raw parser still checks syntax
        return _check_raw(expr, features)
    try:
        node, used = parse_with_features(expr)
    except ParseError as exc:
        raise PromQLSyntaxError(str(exc), exc.line) from None
    for name in sorted(used):
        gate = _GATED.get(name)
        if gate is not None and not getattr(features, gate[0]):
            raise PromQLSyntaxError(f"parse error: {gate[2]} (enable them with --enable-feature={gate[1]})")
    if not (features.at_modifier and features.negative_offset):
        for n in _walk(node):
            at = getattr(n, "at", None)
            if at is not None and not features.at_modifier:
                raise PromQLSyntaxError("parse error: @ modifier is disabled")
            if getattr(n, "offset_ms", 0) < 0 and not features.negative_offset:
                raise PromQLSyntaxError("parse error: negative offset is disabled")
    return node


def _walk(node: object) -> Iterator[object]:
    yield node
    for attr in ("expr", "vector", "lhs", "rhs", "param"):
        child = getattr(node, attr, None)
        if child is not None and not isinstance(child, (str, int, float)):
            yield from _walk(child)
    for child in getattr(node, "args", None) or []:
        yield from _walk(child)


def _check_raw(expr: str, features: ParserFeatures) -> object:
    try:
        ast = promql_parser.parse(expr)
    except Exception as exc:  # the binding raises ValueError, and other types on odd input
        raise PromQLSyntaxError(f"parse error: {exc}") from None
    if not (features.at_modifier and features.negative_offset):
        problems: list[str] = []

        def visit(node: object, *_: object) -> None:
            if getattr(node, "at", None) is not None and not features.at_modifier:
                problems.append("@ modifier is disabled")
            off = getattr(node, "offset", None)
            if isinstance(off, _dt.timedelta) and off < _dt.timedelta(0) and not features.negative_offset:
                problems.append("negative offset is disabled")

        promql_parser.walk(ast, visit)
        if problems:
            raise PromQLSyntaxError(f"parse error: {problems[0]}")
    return ast
