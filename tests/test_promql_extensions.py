"""Prometheus 3.x syntax beyond promql-parser 0.12: duration expressions, anchored/smoothed
range selectors (parse, positions, semantics) and the feature gates of the rule checker."""

from __future__ import annotations

import numpy as np
import pytest

from alerting.promql_check import NO_OPTIONAL_FEATURES, PromQLSyntaxError, check_expr, features_from_flags
from query.engine import Engine
from query.errors import ParseError
from query.memory import MemoryStorage
from query.parse import parse, parse_with_features
from query.preparse import preparse, tokenize
from storage.model import Series, make_labels

# ------------------------------------------------------------------------ tokenizer


def test_tokenizer_keeps_strings_and_comments_whole() -> None:
    toks = tokenize('foo{a="x[1m*2] \\" anchored"} # [5m*2] smoothed\n+ `raw[1m]`')
    kinds = [(t.kind, t.text) for t in toks if t.kind not in ("ws",)]
    assert ("str", '"x[1m*2] \\" anchored"') in kinds
    assert ("comment", "# [5m*2] smoothed") in kinds
    assert ("str", "`raw[1m]`") in kinds


def test_strings_and_comments_are_never_rewritten() -> None:
    text = 'label_replace(up, "d", "[1m*2] anchored", "", "") # offset (1m+1m)'
    assert preparse(text).text == text
    assert preparse(text).features == set()


def test_colon_in_brackets_is_the_subquery_separator() -> None:
    node = parse("max_over_time(rate(x[1m])[5m+5m:30s*2])")
    sub = node.args[0]  # type: ignore[attr-defined]
    assert (sub.range_ms, sub.step_ms) == (600_000, 60_000)
    assert parse("job:x:rate5m[5m]").range_ms == 300_000  # type: ignore[attr-defined]


# ------------------------------------------------------------------ duration folding


@pytest.mark.parametrize(
    ("expr", "range_ms"),
    [
        ("x[1m * 2]", 120_000),
        ("x[26m+4m]", 1_800_000),
        ("x[60*30]", 1_800_000),
        ("x[2m*(10+5)]", 1_800_000),
        ("x[-5m+35m]", 1_800_000),
        ("x[1h/2]", 1_800_000),
        ("x[1h30m % 1h]", 1_800_000),
        ("x[(9m30s+30s)*3]", 1_800_000),
        ("x[min_of(1h, 30m)]", 1_800_000),
        ("x[1800]", 1_800_000),
        ("x[1m1ms]", 60_001),
    ],
)
def test_range_duration_arithmetic(expr: str, range_ms: int) -> None:
    assert parse(expr).range_ms == range_ms  # type: ignore[attr-defined]


def test_long_and_zero_durations() -> None:
    assert parse("x[60d * 2]").range_ms == 120 * 86_400_000  # type: ignore[attr-defined]
    assert parse("x offset (1m - 1m)").offset_ms == 0  # type: ignore[attr-defined]


async def test_step_in_durations_is_bound_per_query() -> None:
    eng = _engine({"m": (1_000, [float(i) for i in range(101)])})
    r = await eng.range_query("count_over_time(m[step()])", 50_000, 60_000, 10_000)
    assert r.series[0].values.tolist() == [10, 10]
    r = await eng.range_query("count_over_time(m[step() + 1])", 50_000, 60_000, 5_000)
    assert r.series[0].values.tolist() == [6, 6, 6]
    r = await eng.range_query("m offset min_of(step(), 1s) + 8000", 50_000, 60_000, 5_000)
    assert r.series[0].values.tolist() == [8049, 8054, 8059]
    with pytest.raises(ParseError, match="range must be greater than 0"):
        await eng.instant_query("count_over_time(m[step()])", 50_000)  # an instant query's step is 0


def test_offset_takes_one_operand_unless_parenthesised() -> None:
    n = parse("x offset 100 + 2")
    assert n.op == "+" and n.lhs.offset_ms == 100_000  # type: ignore[attr-defined]
    assert parse("x offset (100 + 2)").offset_ms == 102_000  # type: ignore[attr-defined]
    n = parse("x offset -2 * 2")
    assert n.op == "*" and n.lhs.offset_ms == -2_000  # type: ignore[attr-defined]
    assert parse("x offset -(2 * 2)").offset_ms == -4_000  # type: ignore[attr-defined]
    _, feats = parse_with_features("x offset (1m+1m)")
    assert feats == {"duration_expr"}
    assert parse_with_features("x offset 5m")[1] == frozenset()


@pytest.mark.parametrize(
    ("expr", "message", "column"),
    [
        ("rate(x[1m-1m])", "range must be greater than 0", 8),
        ("rate(x[1m/0])", "division by zero", 10),
        ("rate(x[1m*])", "unexpected end of duration expression", 11),
        ('up{a="b"} +\n rate(x[1m+foo])', "unexpected 'foo'", 12),
        ("x[range()]", "range() in a duration is not supported", 3),
    ],
)
def test_duration_errors_point_into_the_original_text(expr: str, message: str, column: int) -> None:
    with pytest.raises(ParseError) as info:
        parse(expr)
    assert message in str(info.value)
    assert info.value.column == column


# ------------------------------------------------------------ anchored / smoothed parse


def test_modifiers_are_recorded_on_the_selector() -> None:
    n, feats = parse_with_features('rate(x{a="b",}[5m] offset 1m anchored)')
    sel = n.args[0].vector  # type: ignore[attr-defined]
    assert sel.modifier == "anchored" and sel.offset_ms == 60_000
    assert {m.name for m in sel.matchers} == {"__name__", "a"}
    assert feats == {"extended_range_selectors"}
    assert parse("x smoothed").modifier == "smoothed"  # type: ignore[attr-defined]
    assert parse("x @ 100 smoothed + 0").lhs.modifier == "smoothed"  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("expr", "message"),
    [
        ("deriv(foo[3m] smoothed)", "smoothed modifier can only be used with: delta, increase, rate - not with deriv"),
        ("max_over_time(foo[3m] anchored)",
         "anchored modifier can only be used with: changes, delta, increase, rate, resets - not with max_over_time"),
        ("rate(foo[5m:1m] anchored)", "not supported for subqueries"),
        ("foo anchored", "anchored modifier can only be used on range selectors"),
        ("rate(foo[1m] anchored smoothed)", "cannot follow the anchored modifier"),
    ],
)
def test_modifier_misuse_is_a_parse_error(expr: str, message: str) -> None:
    with pytest.raises(ParseError, match=message):
        parse(expr)


# ------------------------------------------------------------------------ semantics


def _engine(series: dict[str, tuple[int, list[float | None]]]) -> Engine:
    st = MemoryStorage()
    for name, (step_ms, values) in series.items():
        s = Series.of(make_labels(name))
        ts = [i * step_ms for i, v in enumerate(values) if v is not None]
        st.add_series(s, np.array(ts), np.array([v for v in values if v is not None]))
    return Engine(st, downsample=False)


async def _value(eng: Engine, expr: str, at_ms: int) -> float | None:
    r = await eng.instant_query(expr, at_ms)
    assert r.type == "vector"
    return float(r.series[0].values[0]) if r.series else None


async def test_anchored_uses_the_sample_before_the_window_and_no_extrapolation() -> None:
    eng = _engine({"m": (15_000, [1, 2, 3, 4, 5, 9, 10, 11, 12, 13])})
    assert await _value(eng, "increase(m[1m] anchored)", 5_000) == 0
    assert await _value(eng, "increase(m[1m] anchored)", 65_000) == 4  # 5 - 1 (sample at 0s anchors)
    assert await _value(eng, "increase(m[1m] anchored)", 80_000) == 7
    assert await _value(eng, "rate(m[1m] anchored)", 80_000) == pytest.approx(7 / 60)
    assert await _value(eng, "increase(m[1m])", 80_000) == 8  # plain increase extrapolates


async def test_anchored_counts_resets_and_changes() -> None:
    eng = _engine({"c": (60_000, [99, 98, 97, 96, 95, 94]), "g": (60_000, [1, 1, 2, 3, 4, 5])})
    assert await _value(eng, "resets(c[5m] anchored)", 330_000) == 5
    assert await _value(eng, "changes(g[5m] anchored)", 300_000) == 4
    assert await _value(eng, "delta(c[5m] anchored)", 300_000) == -5


async def test_smoothed_interpolates_both_edges_and_across_resets() -> None:
    eng = _engine({"m": (60_000, [1, 2, None, 4, 5]), "r": (60_000, [9, 8, 5, 4])})
    assert await _value(eng, "increase(m[1m] smoothed)", 120_000) == 1  # (2m: 3 interpolated) - (1m: 2)
    assert await _value(eng, "increase(m[1m] anchored)", 120_000) is None  # nothing inside (1m, 2m]
    assert await _value(eng, "increase(r[2m] smoothed)", 135_000) == pytest.approx(12)
    eng = _engine({"late": (10_000, [None, 5, 6, 7, 8, 9])})
    assert await _value(eng, "increase(late[5s] smoothed)", 5_000) is None  # data only after the range
    assert await _value(eng, "increase(late[10s] smoothed)", 15_000) == pytest.approx(0.5)
    assert await _value(eng, "rate(late[5s] smoothed)", 60_000) is None  # data only before the range


async def test_smoothed_instant_selector_interpolates_plainly() -> None:
    eng = _engine({"m": (10_000, [1, 2, 3, 4, 5, 1, 2])})
    assert await _value(eng, "m smoothed", 15_000) == 2.5
    assert await _value(eng, "m smoothed", 45_000) == 3  # no counter logic for the selector
    assert await _value(eng, "m smoothed", 70_000) == 2  # carried forward
    r = await eng.range_query("m offset -10s smoothed", 0, 20_000, 5_000)
    assert r.series[0].values.tolist() == [2, 2.5, 3, 3.5, 4]


async def test_fill_modifier_fills_the_missing_side() -> None:
    st = MemoryStorage()
    for name, job, v in (("a", "x", 1.0), ("a", "y", 2.0), ("b", "x", 10.0), ("b", "z", 30.0)):
        st.add_series(Series.of(make_labels(name, job=job)), np.array([0]), np.array([v]))
    r = await Engine(st).instant_query("a + fill(100) b", 0)
    assert {s.labels["job"]: float(s.values[0]) for s in r.series} == {"x": 11, "y": 102, "z": 130}
    r = await Engine(st).instant_query("a + fill_right(0) b", 0)
    assert {s.labels["job"]: float(s.values[0]) for s in r.series} == {"x": 11, "y": 2}


# ------------------------------------------------------------------------- gating


def test_rule_checker_gates_each_feature() -> None:
    off = NO_OPTIONAL_FEATURES
    check_expr("rate(up[1m * 2])", off)  # duration expressions need no flag
    cases = {
        'sort_by_label(up, "instance")': "promql-experimental-functions",
        "rate(up[1m] anchored)": "promql-extended-range-selectors",
        "rate(up[5m]) + fill(0) rate(down[5m])": "promql-binop-fill-modifiers",
        "up @ 100": None,
    }
    for expr, flag in cases.items():
        with pytest.raises(PromQLSyntaxError):
            check_expr(expr, off)
        if flag is not None:
            check_expr(expr, features_from_flags([flag]))
    check_expr("up @ 100", features_from_flags(["at-modifier"]))
    with pytest.raises(ValueError, match="unknown feature"):
        features_from_flags(["promql-nope"])
