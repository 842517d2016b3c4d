"""Binary operators: arithmetic, comparison (with ``bool``) and set operators, with vector
matching (on/ignoring, group_left/group_right) evaluated over all steps at once."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from query import parse as P
from query.errors import QueryError
from query.values import (
    InstantVector,
    Labels,
    Scalar,
    Value,
    format_labels,
    merge_same_labels,
)

if TYPE_CHECKING:
    from query.engine import Evaluator

ARITHMETIC = {"+", "-", "*", "/", "%", "^", "atan2"}
COMPARISON = {"==", "!=", ">", "<", ">=", "<="}
SET_OPS = {"and", "or", "unless"}


def arith(op: str, a: npt.NDArray[np.float64], b: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    if op == "+":
        return a + b
    if op == "-":
        return a - b
    if op == "*":
        return a * b
    if op == "/":
        return a / b
    if op == "%":
        return np.fmod(a, b)
    if op == "^":
        return np.power(a, b)
    if op == "atan2":
        return np.arctan2(a, b)
    raise QueryError(f"unknown arithmetic operator {op}")


def compare(op: str, a: npt.NDArray[np.float64], b: npt.NDArray[np.float64]) -> npt.NDArray[np.bool_]:
    if op == "==":
        return np.equal(a, b)
    if op == "!=":
        return np.not_equal(a, b)
    if op == ">":
        return np.greater(a, b)
    if op == "<":
        return np.less(a, b)
    if op == ">=":
        return np.greater_equal(a, b)
    if op == "<=":
        return np.less_equal(a, b)
    raise QueryError(f"unknown comparison operator {op}")


def eval_binary(ev: "Evaluator", node: P.Binary, times: np.ndarray) -> Value:
    lhs = ev.eval(node.lhs, times)
    rhs = ev.eval(node.rhs, times)
    op = node.op
    if isinstance(lhs, Scalar) and isinstance(rhs, Scalar):
        if op in COMPARISON:
            if not node.return_bool:
                raise QueryError("comparisons between scalars must use BOOL modifier")
            return Scalar(compare(op, lhs.values, rhs.values).astype(np.float64))
        return Scalar(arith(op, lhs.values, rhs.values))
    if isinstance(lhs, InstantVector) and isinstance(rhs, Scalar):
        return _vector_scalar(op, lhs, rhs.values, node.return_bool, swap=False)
    if isinstance(lhs, Scalar) and isinstance(rhs, InstantVector):
        return _vector_scalar(op, rhs, lhs.values, node.return_bool, swap=True)
    if isinstance(lhs, InstantVector) and isinstance(rhs, InstantVector):
        if op in SET_OPS:
            return _set_op(node, lhs, rhs)
        return _vector_vector(node, lhs, rhs)
    raise QueryError(f"binary operator {op!r} is not defined between these operand types")


def _vector_scalar(op: str, vec: InstantVector, s: np.ndarray, return_bool: bool, swap: bool) -> InstantVector:
    if op in SET_OPS:
        raise QueryError(f"set operator {op} not allowed in binary scalar expression")
    row = s[None, :]
    a, b = (row, vec.values) if swap else (vec.values, row)
    if op in COMPARISON:
        ok = compare(op, a, b)
        if return_bool:
            return InstantVector(vec.labels, ok.astype(np.float64), vec.present).with_drop(True)
        return InstantVector(vec.labels, vec.values, vec.present & ok, vec.drop).compact()
    return InstantVector(vec.labels, arith(op, a, b), vec.present).with_drop(True)


def _signature_fn(node: P.Binary) -> Callable[[Labels], tuple]:
    names = tuple(sorted(set(node.match_labels)))
    if node.on:
        def sig(lab: Labels) -> tuple:
            d = dict(lab)
            return tuple(d.get(n, "") for n in names)
    else:
        skip = set(names) | {"__name__"}

        def sig(lab: Labels) -> tuple:
            return tuple(p for p in lab if p[0] not in skip)
    return sig


def _match_labels_str(node: P.Binary, lab: Labels) -> str:
    d = dict(lab)
    if node.on:
        pairs = [(n, d.get(n, "")) for n in sorted(set(node.match_labels)) if d.get(n, "")]
    else:
        skip = set(node.match_labels) | {"__name__"}
        pairs = [(k, v) for k, v in lab if k not in skip]
    return "{" + ", ".join(f'{k}="{v}"' for k, v in pairs) + "}"


def _group_labels(node: P.Binary, lab: Labels) -> Labels:
    """The labels that define a match group (what ``on``/``ignoring`` compare)."""
    if node.on:
        keep = set(node.match_labels)
        return tuple(p for p in lab if p[0] in keep)
    skip = set(node.match_labels) | {"__name__"}
    return tuple(p for p in lab if p[0] not in skip)


def _set_op(node: P.Binary, lhs: InstantVector, rhs: InstantVector) -> InstantVector:
    sig = _signature_fn(node)
    steps = lhs.steps

    def any_present(vec: InstantVector) -> dict[tuple, np.ndarray]:
        out: dict[tuple, np.ndarray] = {}
        for i, lab in enumerate(vec.labels):
            k = sig(lab)
            cur = out.get(k)
            out[k] = vec.present[i].copy() if cur is None else (cur | vec.present[i])
        return out

    none = np.zeros(steps, dtype=bool)
    if node.op in ("and", "unless"):
        rsig = any_present(rhs)
        present = lhs.present.copy()
        for i, lab in enumerate(lhs.labels):
            m = rsig.get(sig(lab), none)
            present[i] &= m if node.op == "and" else ~m
        return InstantVector(lhs.labels, lhs.values, present, lhs.drop).compact()
    lsig = any_present(lhs)
    rpresent = rhs.present.copy()
    for i, lab in enumerate(rhs.labels):
        rpresent[i] &= ~lsig.get(sig(lab), none)
    out = InstantVector(
        lhs.labels + rhs.labels,
        np.concatenate([lhs.values, rhs.values]),
        np.concatenate([lhs.present, rpresent]),
        np.concatenate([lhs.drops(), rhs.drops()]),
    )
    return out.compact()


def _vector_vector(node: P.Binary, lhs: InstantVector, rhs: InstantVector) -> InstantVector:  # noqa: C901, PLR0915 - Prometheus's VectorBinop matching (one-to-one, group_left/right, set ops) in one pass
    op = node.op
    card = node.card
    if card == "many-to-many":
        raise QueryError(f"many-to-many matching is only allowed for set operators, not {op}")
    sig = _signature_fn(node)
    many, one = (rhs, lhs) if card == "one-to-many" else (lhs, rhs)
    one_side = "left" if card == "one-to-many" else "right"
    steps = lhs.steps
    drop_name = op in ARITHMETIC or node.return_bool
    include = node.include

    one_by_sig: dict[tuple, list[int]] = {}
    for i, lab in enumerate(one.labels):
        one_by_sig.setdefault(sig(lab), []).append(i)
    for rows in one_by_sig.values():
        if len(rows) > 1:
            counts = one.present[rows].sum(axis=0)
            if (counts > 1).any():
                step = int(np.argmax(counts > 1))
                dup = [r for r in rows if one.present[r, step]][:2]
                raise QueryError(
                    f"found duplicate series for the match group {_match_labels_str(node, one.labels[dup[0]])} "
                    f"on the {one_side} hand-side of the operation: [{format_labels(one.labels[dup[0]])}, "
                    f"{format_labels(one.labels[dup[1]])}];many-to-many matching not allowed: "
                    "matching labels must be unique on one side"
                )

    def result_labels(m_lab: Labels, o_lab: Labels) -> Labels:
        d = dict(m_lab)
        if card == "one-to-one" and node.has_matching:
            if node.on:
                keep = set(node.match_labels)
                d = {k: v for k, v in d.items() if k in keep}
            else:
                for n in node.match_labels:
                    d.pop(n, None)
        if include:
            o = dict(o_lab)
            for n in include:
                v = o.get(n, "")
                if v:
                    d[n] = v
                else:
                    d.pop(n, None)
        return tuple(sorted(d.items()))

    out_labels: list[Labels] = []
    out_values: list[np.ndarray] = []
    out_present: list[np.ndarray] = []
    out_drop: list[bool] = []
    many_drop = many.drops()
    many_by_sig: dict[tuple, list[int]] = {}
    for i, lab in enumerate(many.labels):
        many_by_sig.setdefault(sig(lab), []).append(i)
    fill_one, fill_many = node.fill_rhs, node.fill_lhs  # sides as matched (group_right swaps)

    def emit(lab: Labels, vl: np.ndarray, vr: np.ndarray, mask: np.ndarray, drop: bool,
             group_out: dict[Labels, np.ndarray] | None) -> None:
        if op in COMPARISON:
            ok = compare(op, vl, vr)
            if node.return_bool:
                value, keep = ok.astype(np.float64), mask
            else:
                value, keep = vl, mask & ok
        else:
            value, keep = arith(op, vl, vr), mask
        if not keep.any():
            return
        if group_out is not None:
            prev = group_out.get(lab)
            if prev is not None and (prev & keep).any():
                raise QueryError("multiple matches for labels: grouping labels must ensure unique matches")
            group_out[lab] = keep if prev is None else (prev | keep)
        out_labels.append(lab)
        out_values.append(np.where(keep, value, 0.0))
        out_present.append(keep)
        out_drop.append(drop)

    def oriented(m_vals: np.ndarray, o_vals: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return (o_vals, m_vals) if card == "one-to-many" else (m_vals, o_vals)

    none = np.zeros(steps, dtype=bool)
    for k, mrows in many_by_sig.items():
        orows = one_by_sig.get(k, [])
        kept_total = np.zeros(steps, dtype=np.int64)
        group_out: dict[Labels, np.ndarray] | None = None if card == "one-to-one" else {}
        o_any = one.present[orows].any(axis=0) if orows else none
        for m in mrows:
            for o in orows:
                mask = many.present[m] & one.present[o]
                if not mask.any():
                    continue
                if card == "one-to-one":
                    kept_total += mask
                    if (kept_total > 1).any():
                        raise QueryError(
                            "multiple matches for labels: many-to-one matching must be explicit "
                            "(group_left/group_right)"
                        )
                vl, vr = oriented(many.values[m], one.values[o])
                emit(result_labels(many.labels[m], one.labels[o]), vl, vr, mask, drop_name or bool(many_drop[m]), group_out)
            if fill_one is not None:
                mask = many.present[m] & ~o_any
                if mask.any():
                    vl, vr = oriented(many.values[m], np.full(steps, fill_one))
                    emit(result_labels(many.labels[m], ()), vl, vr, mask, drop_name or bool(many_drop[m]), group_out)
    if fill_many is not None:
        # Match groups only the "one" side has: one series with the group's labels.
        for k, orows in one_by_sig.items():
            o_any = np.asarray(one.present[orows].any(axis=0))
            m_any = many.present[many_by_sig[k]].any(axis=0) if k in many_by_sig else none
            mask = o_any & ~m_any
            if not mask.any():
                continue
            o_vals = np.where(one.present[orows], one.values[orows], 0.0).sum(axis=0)
            vl, vr = oriented(np.full(steps, fill_many), o_vals)
            emit(_group_labels(node, one.labels[orows[0]]), vl, vr, mask, False, None)
    if not out_labels:
        return InstantVector.empty(steps)
    return merge_same_labels(
        InstantVector(out_labels, np.array(out_values), np.array(out_present, dtype=bool), np.array(out_drop))
    )
