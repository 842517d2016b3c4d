"""The PromQL function library for float samples, one module per family, and the one
registry the engine looks functions up in (``eval_call``).

- ``rate``: rate, increase, delta, irate, idelta, changes, resets
- ``over_time``: the ``*_over_time`` functions
- ``trend``: deriv, predict_linear, double_exponential_smoothing
- ``instant``: math, date, ``time``/``vector``/``scalar``/``timestamp``, absent, query scalars
- ``labels``: label_replace, label_join; ``ordering``: sort, sort_by_label
- ``histograms``: histogram_quantile(s), histogram_fraction, native histogram fields

Range functions compute every step's window of every series with NumPy index arithmetic
(``windows``: searchsorted windows, prefix sums, sparse tables) and fall back to exact
per-window loops only where floating-point cancellation would change the result; ``range``
runs them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from query import parse as P
from query.errors import QueryError
from query.functions import histograms, instant, labels, ordering, over_time, rate, trend
from query.functions.args import FuncImpl
from query.functions.histograms import bucket_quantile
from query.functions.range import RangeFunc, eval_range_function
from query.functions.trend import linear_regression
from query.values import Value

if TYPE_CHECKING:
    from query.engine import Evaluator

RANGE_FUNCS: dict[str, RangeFunc] = {**rate.RANGE_FUNCS, **over_time.RANGE_FUNCS, **trend.RANGE_FUNCS}
FUNCS: dict[str, FuncImpl] = {**instant.FUNCS, **labels.FUNCS, **ordering.FUNCS, **histograms.FUNCS}


def eval_call(ev: "Evaluator", node: P.Call, times: np.ndarray) -> Value:
    name = node.name
    for arg in node.args:
        if isinstance(arg, P.MatrixSel) and arg.vector.modifier is not None:
            from query.extended import eval_extended_range

            return eval_extended_range(ev, node, arg, times)
    rf = RANGE_FUNCS.get(name)
    if rf is not None:
        return eval_range_function(ev, node, times, rf)
    impl = FUNCS.get(name)
    if impl is None:
        raise QueryError(f"unknown function with name {name!r}")
    return impl(ev, node, times)


__all__ = ["FUNCS", "RANGE_FUNCS", "bucket_quantile", "eval_call", "linear_regression"]
