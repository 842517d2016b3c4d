"""PromQL syntax checks for rule expressions (parse only; evaluation is the engine's job).

Uses the ``promql-parser`` package directly. ``at_modifier`` and ``negative_offset`` mirror
promtool's feature flags: when off, expressions using them are rejected.
"""

from __future__ import annotations

import datetime as _dt
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


DEFAULT_FEATURES = ParserFeatures()


def check_expr(expr: str, features: ParserFeatures = DEFAULT_FEATURES) -> object:
    """Parse ``expr``; returns the AST or raises PromQLSyntaxError (``line:col: parse error: ...``)."""
    try:
        from query.errors import ParseError
        from query.parse import parse as engine_parse
    except ImportError:  # engine not available: the raw parser still checks syntax
        engine_parse = None
    if engine_parse is not None:
        try:
            engine_parse(expr)
        except ParseError as exc:
            raise PromQLSyntaxError(str(exc), exc.line) from None
    try:
        ast = promql_parser.parse(expr)
    except ValueError as exc:
        raise PromQLSyntaxError(f"parse error: {exc}") from None
    except Exception as exc:  # the binding may raise other types on odd input
        raise PromQLSyntaxError(f"parse error: {exc}") from None
    if not (features.at_modifier and features.negative_offset):
        problems: list[str] = []

        def visit(node: object, *_: object) -> None:
            at = getattr(node, "at", None)
            if at is not None and not features.at_modifier:
                problems.append("@ modifier is disabled")
            off = getattr(node, "offset", None)
            if isinstance(off, _dt.timedelta) and off < _dt.timedelta(0) and not features.negative_offset:
                problems.append("negative offset is disabled")

        promql_parser.walk(ast, visit)
        if problems:
            raise PromQLSyntaxError(f"parse error: {problems[0]}")
    return ast
