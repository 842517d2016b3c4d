"""What every PromQL function family shares: the implementation signature, argument
evaluation with Prometheus' error messages, Kahan summation and the result builder."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import numpy as np

from query import parse as P
from query.errors import QueryError
from query.values import InstantVector, Labels, RangeVector, Scalar, Value

if TYPE_CHECKING:
    from query.engine import Evaluator

# One PromQL function: its arguments are evaluated by the implementation itself.
FuncImpl = Callable[["Evaluator", P.Call, np.ndarray], Value]


def kahan(inc: float, s: float, c: float) -> tuple[float, float]:
    t = s + inc
    if math.isinf(t):
        c = 0.0
    elif abs(s) >= abs(inc):
        c += (s - t) + inc
    else:
        c += (inc - t) + s
    return t, c


def scalar_arg(ev: "Evaluator", node: P.Node, times: np.ndarray, fname: str) -> np.ndarray:
    v = ev.eval(node, times)
    if not isinstance(v, Scalar):
        raise QueryError(f"expected scalar argument in call to function {fname!r}")
    return v.values


def string_arg(node: P.Node, fname: str) -> str:
    if not isinstance(node, P.StringLit):
        raise QueryError(f"expected string argument in call to function {fname!r}")
    return node.value


def vector_arg(ev: "Evaluator", node: P.Node, times: np.ndarray, fname: str) -> InstantVector:
    v = ev.eval(node, times)
    if not isinstance(v, InstantVector):
        raise QueryError(f"expected instant vector argument in call to function {fname!r}")
    return v


def range_arg(ev: "Evaluator", node: P.Node, times: np.ndarray, fname: str) -> RangeVector:
    v = ev.eval(node, times)
    if not isinstance(v, RangeVector):
        raise QueryError(f"expected range vector argument in call to function {fname!r}")
    return v


def finish(
    labels: list[Labels], values: list[np.ndarray], present: Sequence[np.ndarray | np.bool_], steps: int, drop: bool = True
) -> InstantVector:
    if not labels:
        return InstantVector.empty(steps)
    vec = InstantVector(labels, np.array(values, dtype=np.float64), np.array(present, dtype=bool))
    return vec.with_drop(drop).compact()

