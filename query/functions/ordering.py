"""Ordering functions: ``sort``/``sort_desc`` (by value, NaN last, instant queries only) and
``sort_by_label``/``sort_by_label_desc`` (natural order of the named labels' values)."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

import numpy as np

from query import parse as P
from query.functions.args import FuncImpl, string_arg, vector_arg
from query.values import Value, labels_get

if TYPE_CHECKING:
    from query.engine import Evaluator


def _sort(desc: bool) -> FuncImpl:
    def impl(ev: "Evaluator", node: P.Call, times: np.ndarray) -> Value:
        vec = vector_arg(ev, node.args[0], times, node.name)
        if len(vec) == 0 or len(times) != 1:
            return vec
        v = vec.values[:, 0]
        nan = np.isnan(v)
        if desc:
            order = np.lexsort((-v, nan))
        else:
            order = np.lexsort((v, nan))
        return vec.take(order)

    return impl


def _sort_by_label(desc: bool) -> FuncImpl:
    def impl(ev: "Evaluator", node: P.Call, times: np.ndarray) -> Value:
        vec = vector_arg(ev, node.args[0], times, node.name)
        names = [string_arg(a, node.name) for a in node.args[1:]]
        if len(vec) == 0:
            return vec

        def key(i: int) -> tuple:
            lab = vec.labels[i]
            return tuple(_natural_key(labels_get(lab, n)) for n in names) + (lab,)

        order = sorted(range(len(vec)), key=key, reverse=desc)
        return vec.take(order)

    return impl


def _natural_key(s: str) -> tuple:
    parts = re.split(r"(\d+)", s)
    return tuple((0, int(p), p) if p.isdigit() else (1, 0, p) for p in parts if p != "")


FUNCS: dict[str, FuncImpl] = {
    "sort": _sort(False),
    "sort_desc": _sort(True),
    "sort_by_label": _sort_by_label(False),
    "sort_by_label_desc": _sort_by_label(True),
}
