"""PromQL text services of the API: ``format_query`` (Prometheus' pretty printer, through the
``promql-parser`` package's ``prettify``) and ``parse_query`` (the expression tree as the JSON
the Prometheus UI's tree view reads, built from our own parse tree).
"""

from __future__ import annotations

from typing import Any

import promql_parser as pp

from query import parse as P
from query.promjson import go_format_float


def pretty_promql(expr: str) -> str:
    """``expr`` pretty-printed as Prometheus' ``Expr.Pretty`` does (one line when it fits in 100
    characters). Syntax the upstream grammar lacks (our extensions) comes back as written."""
    try:
        return pp.parse(expr).prettify()
    except (ValueError, TypeError, RuntimeError):
        return expr.strip()


def ast_json(expr: str) -> Any:
    """The tree of ``expr`` in the shape of Prometheus' ``/api/v1/parse_query`` (``translateAST``)."""
    return _node(P.parse(expr))


def _at(at: Any) -> tuple[Any, Any]:
    if at in ("start", "end"):
        return None, at
    return at, None


def _matchers(ms: Any) -> list[dict[str, str]]:
    return [{"name": m.name, "value": m.value, "type": m.op.value} for m in ms]


def _vector(v: P.VectorSel) -> dict[str, Any]:
    name = next((m.value for m in v.matchers if m.name == "__name__" and m.op.value == "="), "")
    ts, start_or_end = _at(v.at)
    return {
        "name": name,
        "offset": v.offset_ms,
        "matchers": _matchers(v.matchers),
        "timestamp": ts,
        "startOrEnd": start_or_end,
        "anchored": v.modifier == "anchored",
        "smoothed": v.modifier == "smoothed",
    }


def _node(n: Any) -> Any:
    if isinstance(n, P.NumberLit):
        return {"type": "numberLiteral", "val": go_format_float(n.value)}
    if isinstance(n, P.StringLit):
        return {"type": "stringLiteral", "val": n.value}
    if isinstance(n, P.VectorSel):
        return {"type": "vectorSelector", **_vector(n)}
    if isinstance(n, P.MatrixSel):
        d = _vector(n.vector)
        return {"type": "matrixSelector", "name": d.pop("name"), "range": n.range_ms, **d}
    if isinstance(n, P.Subquery):
        ts, start_or_end = _at(n.at)
        return {"type": "subquery", "expr": _node(n.expr), "range": n.range_ms, "offset": n.offset_ms,
                "step": n.step_ms, "timestamp": ts, "startOrEnd": start_or_end}
    if isinstance(n, P.Call):
        return {
            "type": "call",
            "func": {"name": n.name, "argTypes": [P.value_type(a) for a in n.args], "variadic": 0,
                     "returnType": P.value_type(n)},
            "args": [_node(a) for a in n.args],
        }
    if isinstance(n, P.Aggregate):
        return {"type": "aggregation", "op": n.op, "expr": _node(n.expr),
                "param": _node(n.param) if n.param is not None else None,
                "grouping": list(n.grouping), "without": n.without}
    if isinstance(n, P.Binary):
        matching = None
        if P.value_type(n.lhs) == P.VECTOR and P.value_type(n.rhs) == P.VECTOR:
            matching = {"card": n.card, "labels": list(n.match_labels), "on": n.on, "include": list(n.include)}
        return {"type": "binaryExpr", "op": n.op, "lhs": _node(n.lhs), "rhs": _node(n.rhs),
                "matching": matching, "bool": n.return_bool}
    if isinstance(n, P.Negate):
        return {"type": "unaryExpr", "op": "-", "expr": _node(n.expr)}
    raise TypeError(f"unknown expression node {type(n).__name__}")
