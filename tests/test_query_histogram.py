"""Native histograms on the unit-test path: notation, canonical text, storage hints, engine use."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest

from alerting.unittest_runner import UnitTestError, expand_values
from query.engine import Engine
from query.errors import QueryError
from query.histogram import (
    FloatHistogram,
    HistogramError,
    decode_ref,
    encode_ref,
    expand_histogram,
    go_g,
    parse_histogram,
    ref_mask,
    split_series_values,
)
from query.memory import MemoryStorage
from storage.model import STALE_NAN, Series, is_stale, make_labels

FULL = "{{schema:1 sum:-0.3 count:32.1 z_bucket:7.1 z_bucket_w:0.05 buckets:[5.1 10 7] offset:-3 n_buckets:[4.1 5] n_offset:-5}}"


def test_parse_every_field_and_render_canonically() -> None:
    h = parse_histogram(FULL)
    assert (h.schema, h.sum, h.count, h.zero_count, h.zero_threshold) == (1, -0.3, 32.1, 7.1, 0.05)
    assert (h.pos_buckets, h.pos_offset, h.neg_buckets, h.neg_offset) == ([5.1, 10, 7], -3, [4.1, 5], -5)
    assert h.test_expression() == (
        "{{schema:1 count:32.1 sum:-0.3 z_bucket:7.1 z_bucket_w:0.05 offset:-3 buckets:[5.1 10 7] "
        "n_offset:-5 n_buckets:[4.1 5]}}"
    )
    c = parse_histogram("{{schema:-53 count:1 custom_values:[5 10] buckets:[1] counter_reset_hint:gauge}}")
    assert c.uses_custom_buckets and c.hint == "gauge"
    assert c.test_expression() == "{{schema:-53 count:1 custom_values:[5 10] counter_reset_hint:gauge buckets:[1]}}"


def test_canonical_text_trims_empty_edge_buckets_and_zero_fields() -> None:
    assert parse_histogram("{{buckets:[0 0 1 0 2 0] offset:3 sum:0}}").test_expression() == "{{offset:5 buckets:[1 0 2]}}"
    assert parse_histogram("{{buckets:[0 0]}}").test_expression() == "{{}}"
    assert parse_histogram("{{ sum:5.6 count:4 buckets:[4] }}").test_expression() == parse_histogram(
        "{{count:4 buckets:[4] sum:5.6}}").test_expression()


@pytest.mark.parametrize(
    "bad",
    ["{{sum:1 sum:2}}", "{{bogus:1}}", "{{buckets:1}}", "{{schema:x}}", "{{counter_reset_hint:maybe}}",
     "{{custom_values:[1 2]}}", "{sum:1}", "{{count:abc}}"],
)
def test_bad_histograms_are_rejected(bad: str) -> None:
    with pytest.raises(HistogramError):
        parse_histogram(bad)


def test_go_g_formatting() -> None:
    cases = {5.1: "5.1", 1e6: "1e+06", 123456.0: "123456", 1234567.0: "1.234567e+06", 0.0001: "0.0001",
             0.00001: "1e-05", 100.0: "100", -0.3: "-0.3", 2.5e-7: "2.5e-07", math.inf: "+Inf"}
    for x, want in cases.items():
        assert go_g(x) == want, x


def test_expanding_notation() -> None:
    seq = expand_histogram("{{sum:3 count:2 buckets:[2]}}+{{sum:1.3 count:1 buckets:[1]}}x2")
    assert [h.test_expression() for h in seq] == [
        "{{count:2 sum:3 buckets:[2]}}", "{{count:3 sum:4.3 buckets:[3]}}", "{{count:4 sum:5.6 buckets:[4]}}"]
    assert len(expand_histogram("{{count:1}}x3")) == 4
    down = expand_histogram("{{count:5 buckets:[5]}}-{{count:1 buckets:[1]}}x2")
    assert [h.count for h in down] == [5, 4, 3]
    # Different schemas merge into the lower one.
    mixed = expand_histogram("{{schema:0 buckets:[1]}}+{{schema:1 buckets:[1 1] offset:1}}x1")
    assert mixed[1].schema == 0 and mixed[1].compact().pos_buckets == [1, 2]
    with pytest.raises(HistogramError, match="cannot merge from schema 0 to 1"):
        expand_histogram("{{schema:1 count:1}}+{{schema:0 count:1}}x1")


def test_series_values_mix_floats_and_histograms() -> None:
    assert split_series_values("1 {{a:1 b:[1 2]}}+{{c:2}}x3 _ stale") == ["1", "{{a:1 b:[1 2]}}+{{c:2}}x3", "_", "stale"]
    vals = expand_values("1 {{count:1}}x1 _ stale")
    assert vals[0] == 1 and isinstance(vals[1], FloatHistogram) and isinstance(vals[2], FloatHistogram)
    assert vals[3] is None and is_stale(vals[4])  # type: ignore[arg-type]
    with pytest.raises(UnitTestError, match="unclosed"):
        expand_values("{{count:1")


def test_references_are_tagged_nans_distinct_from_stale_markers() -> None:
    ref = encode_ref(42)
    assert math.isnan(ref) and decode_ref(ref) == 42
    assert decode_ref(float("nan")) is None and decode_ref(STALE_NAN) is None and decode_ref(1.5) is None
    assert ref_mask(np.array([1.0, ref, float("nan"), STALE_NAN])).tolist() == [False, True, False, False]


def test_storage_sets_counter_reset_hints_like_a_tsdb_chunk() -> None:
    st = MemoryStorage()
    s = Series.of(make_labels("h"))
    for i, h in enumerate(expand_histogram("{{count:2 buckets:[2]}}x1")):
        st.add_histogram(s, i * 60_000, h)
    st.add_histogram(s, 120_000, parse_histogram("{{count:1 buckets:[1]}}"))  # count went down
    st.add_histogram(s, 180_000, parse_histogram("{{count:1 buckets:[1] counter_reset_hint:gauge}}"))
    g = Series.of(make_labels("g"))
    st.add_histogram(g, 0, parse_histogram("{{count:1 counter_reset_hint:reset}}"))
    col = st._series[s.id].arrays()[1]
    assert [st.histogram(v).hint for v in col] == ["unknown", "not_reset", "reset", "gauge"]  # type: ignore[union-attr]
    assert st.histogram(st._series[g.id].arrays()[1][0]).hint == "reset"  # type: ignore[union-attr]


async def test_selectors_return_histograms_and_everything_else_refuses_them() -> None:
    st = MemoryStorage()
    s = Series.of(make_labels("h", job="a"))
    for i, h in enumerate(expand_histogram("{{sum:3 count:2 buckets:[2]}}+{{sum:1 count:1 buckets:[1]}}x4")):
        st.add_histogram(s, i * 60_000, h)
    eng = Engine(st)
    r = await eng.instant_query("h", 270_000)  # lookback finds the sample at 4m
    h = st.histogram(float(r.series[0].values[0]))
    assert h is not None and h.count == 6 and h.hint == "not_reset"
    r = await eng.instant_query("h[2m]", 240_000)
    assert r.type == "matrix" and len(r.series[0].values) == 2
    for q, want in (("histogram_count(h)", 6), ("histogram_sum(h)", 7), ("count_over_time(h[5m])", 5),
                    ("timestamp(h)", 240)):
        r = await eng.instant_query(q, 240_000)
        assert float(r.series[0].values[0]) == want, q
    for q, what in (("h + 1", "the + operator"), ("sum(h)", "the sum aggregation"), ("rate(h[5m])", "rate()"),
                    ("-h", "unary minus"), ("max_over_time(h[5m:1m])", "subqueries")):
        with pytest.raises(QueryError, match=re.escape(f"native histograms are not supported by {what}")):
            await eng.instant_query(q, 240_000)


def test_api_json_shape() -> None:
    from query.histogram import api_json

    h = parse_histogram("{{schema:0 count:9 sum:20 z_bucket:1 z_bucket_w:0.001 buckets:[1 2] offset:1 n_buckets:[3 0 2]}}")
    assert api_json(h) == {"count": "9", "sum": "20", "buckets": [
        [1, "-4", "-2", "2"], [1, "-1", "-0.5", "3"], [3, "-0.001", "0.001", "1"], [0, "1", "2", "1"], [0, "2", "4", "2"]]}
    c = parse_histogram("{{schema:-53 count:3 sum:7 custom_values:[5 10] buckets:[1 0 2]}}")
    assert api_json(c)["buckets"] == [[0, "-Inf", "5", "1"], [0, "10", "+Inf", "2"]]
    assert "buckets" not in api_json(parse_histogram("{{count:0}}"))
    s1 = parse_histogram("{{schema:1 count:1 buckets:[1] offset:1}}")
    assert api_json(s1)["buckets"][0][1:3] == ["1", go_g(2 ** 0.5)]
