"""Label functions: ``label_replace`` and ``label_join`` (and the check, shared with
``histogram_quantiles``, that a function made no two series with one label set)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from common.regex import RegexError, compile_regex
from query import parse as P
from query.budget import BYTES_PER_POINT
from query.errors import QueryError, QueryInputError
from query.functions.args import FuncImpl, string_arg, vector_arg
from query.values import InstantVector, Value, labels_get, merge_same_labels
from storage.model import LABEL_NAME_RE

if TYPE_CHECKING:
    from query.engine import Evaluator


def _valid_label_name(name: str) -> bool:
    return bool(name) and (LABEL_NAME_RE.match(name) is not None or _utf8_ok(name))


def _utf8_ok(name: str) -> bool:
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _label_replace(ev: "Evaluator", node: P.Call, times: np.ndarray) -> Value:
    vec = vector_arg(ev, node.args[0], times, node.name)
    dst = string_arg(node.args[1], node.name)
    repl = string_arg(node.args[2], node.name)
    src = string_arg(node.args[3], node.name)
    rx_text = string_arg(node.args[4], node.name)
    try:
        rx = compile_regex(rx_text)
    except RegexError as exc:
        raise QueryInputError(f"invalid regular expression in label_replace(): {exc}") from None
    if not _valid_label_name(dst):
        raise QueryError(f"invalid destination label name in label_replace(): {dst}")
    labels = []
    drop = vec.drops().copy()
    for i, lab in enumerate(vec.labels):
        ev.check_deadline()
        groups = rx.groups_of(labels_get(lab, src))
        if groups is None:
            labels.append(lab)
            continue
        val = rx.expand(repl, groups)
        ev.reserve(len(val) // BYTES_PER_POINT, "label_replace output labels: ")  # long values cost memory too
        labels.append(_set_label(lab, dst, val, drop, i))
    return check_unique(InstantVector(labels, vec.values, vec.present, drop))


def _set_label(lab: tuple, dst: str, val: str, drop: np.ndarray, i: int) -> tuple:
    """``lab`` with ``dst`` set to ``val`` (removed when empty), as label_replace/label_join do;
    writing ``__name__`` keeps the name on this series."""
    d = dict(lab)
    if val:
        d[dst] = val
    else:
        d.pop(dst, None)
    if dst == "__name__":
        drop[i] = False
    return tuple(sorted(d.items()))


def check_unique(vec: InstantVector) -> InstantVector:
    """label_replace/label_join must not create two series with one label set at one step."""
    merge_same_labels(InstantVector(vec.labels, vec.values, vec.present))
    return vec


def _label_join(ev: "Evaluator", node: P.Call, times: np.ndarray) -> Value:
    vec = vector_arg(ev, node.args[0], times, node.name)
    dst = string_arg(node.args[1], node.name)
    sep = string_arg(node.args[2], node.name)
    srcs = [string_arg(a, node.name) for a in node.args[3:]]
    if not _valid_label_name(dst):
        raise QueryError(f"invalid destination label name in label_join(): {dst}")
    labels = []
    drop = vec.drops().copy()
    for i, lab in enumerate(vec.labels):
        ev.check_deadline()
        val = sep.join(labels_get(lab, s) for s in srcs)
        ev.reserve(len(val) // BYTES_PER_POINT, "label_join output labels: ")
        labels.append(_set_label(lab, dst, val, drop, i))
    return check_unique(InstantVector(labels, vec.values, vec.present, drop))


FUNCS: dict[str, FuncImpl] = {
    "label_replace": _label_replace,
    "label_join": _label_join,
}
