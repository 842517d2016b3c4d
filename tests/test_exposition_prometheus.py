"""Ingest as the Prometheus server reads it: its number rules, escapes, lexer quirks and le/quantile form.

The expected values come from Go (strconv.ParseFloat behind Prometheus's parseFloat, and
labels.FormatOpenMetricsFloat) and from Prometheus's textparse lexers; every body is checked
through the full parser and through the scrape cache cold, warm and on its layout plan, so the
verdict never depends on the target's history.
"""

from __future__ import annotations

import math

import pytest
from fuzz_harness import fuzz_settings
from hypothesis import given
from hypothesis import strategies as st

from bench.scrape import run_cache
from scraper.exposition import FMT_OPENMETRICS, FMT_TEXT, ParseError, parse
from scraper.fastpath import ScrapeCache
from scraper.gofloat import json_decimals, parse_value
from scraper.lenient import format_om_float

# strconv.ParseFloat(s, 64) after Prometheus's "no p, P or _" rule (go1.22 on this machine)
GO_ACCEPTS = {
    "1e-400": 0.0, "nan": math.nan, "NaN": math.nan, "Inf": math.inf, "+inf": math.inf, "-Infinity": -math.inf,
    "infinity": math.inf, "iNf": math.inf, "1.": 1.0, ".5": 0.5, "+.5e-3": 0.0005, "00012": 12.0, "1e0005": 1e5,
    "-0": -0.0, "4.9e-324": 5e-324, "2e-324": 0.0, "1.7976931348623157e308": 1.7976931348623157e308,
    "inF": math.inf, "+Infinity": math.inf, "0.": 0.0,
}
GO_REJECTS = ["1_0", "1e309", "+NaN", "-nan", "infin", ".", "1e", "1e+", "0x10", "0x1p3", "1.7976931348623159e308",
              "1e99999999999", " 1", "1 ", "\u0661", "Infinityx", "-.e1", "1\r", "1\t", "\uff11", ""]


def _same(got: float, want: float) -> bool:
    return (math.isnan(got) and math.isnan(want)) or (got == want and math.copysign(1, got) == math.copysign(1, want))


@pytest.mark.parametrize("tok,want", GO_ACCEPTS.items())
def test_values_go_accepts(tok, want):
    assert _same(parse_value(tok), want)


@pytest.mark.parametrize("tok", GO_REJECTS)
def test_values_go_rejects(tok):
    with pytest.raises(ValueError):
        parse_value(tok)


# Decimals in every spelling (JSON's and Go's others), near the float64 limits and with more digits than it holds.
_DIGITS = st.text("0123456789", min_size=1, max_size=30)
DECIMALS = st.builds(
    lambda sign, whole, frac, exp: f"{sign}{whole}{frac}{exp}",
    st.sampled_from(["", "-", "+"]), st.one_of(_DIGITS, st.just("")),
    st.one_of(st.just(""), st.just("."), _DIGITS.map(lambda d: "." + d)),
    st.one_of(st.just(""), st.builds(lambda e, sign, n: f"{e}{sign}{n}", st.sampled_from("eE"),
                                     st.sampled_from(["", "+", "-"]), st.integers(0, 400))),
)
JSON_DECIMALS = st.builds(  # JSON's own spelling: the lists the one-call read takes
    lambda sign, whole, frac, exp: f"{sign}{whole}{frac}{exp}",
    st.sampled_from(["", "-"]), st.one_of(st.just("0"), st.from_regex(r"[1-9][0-9]{0,25}", fullmatch=True)),
    st.one_of(st.just(""), _DIGITS.map(lambda d: "." + d)),
    st.one_of(st.just(""), st.builds(lambda e, sign, n: f"{e}{sign}{n}", st.sampled_from("eE"),
                                     st.sampled_from(["", "+", "-"]), st.integers(0, 330))),
)
VALUE_TOKENS = st.one_of(DECIMALS, JSON_DECIMALS,
                         st.sampled_from([*GO_ACCEPTS, *GO_REJECTS, "1,2", "-0", "-0.0", "-0e5", "1e-0"]))


@fuzz_settings(300)
@given(st.one_of(st.lists(JSON_DECIMALS, min_size=1, max_size=20), st.lists(VALUE_TOKENS, min_size=1, max_size=20)))
def test_json_decimals_read_what_go_reads(toks):
    """The plan's one-call read of a segment's values gives Prometheus's value for every token,
    bit for bit, or hands the lot back (None): never another value, never a token Go refuses."""
    raws = [t.encode() for t in toks]
    got = json_decimals(raws)
    if got is None:
        return
    assert len(got) == len(raws)
    for tok, v in zip(toks, got, strict=True):
        assert _same(v, parse_value(tok)), (tok, v)


def test_json_decimals_take_plain_scrapes_whole():
    """Bodies as exporters write them (ints, fixed and exponent forms, negatives) go in one call;
    spellings JSON has not (Inf, NaN, "-0", "+1", "1.") are handed back."""
    raws = [b"0", b"12345", b"-2.5", b"1.23457e+07", b"4.9e-324", b"1e-400", b"18446744073709551616", b"-0.0"]
    got = json_decimals(raws)
    assert got is not None
    assert all(_same(v, float(r)) for r, v in zip(raws, got, strict=True))
    for odd in (b"NaN", b"+Inf", b"-0", b"+1", b"1.", b".5", b"00012", b"1e309", b"1,2", b"", b"1\t"):
        assert json_decimals([b"1", odd]) is None, odd
        assert json_decimals([odd, b"1"]) is None, odd  # (first: "-0" before a comma)
    assert json_decimals([b"-0", b"-1e-05"]) is None and json_decimals([b"-10", b"-1e-05"]) == [-10.0, -1e-05]


# labels.FormatOpenMetricsFloat of strconv.ParseFloat(s), printed by Go
OM_FLOAT = {
    "1": "1.0", "0.5": "0.5", "1e6": "1e+06", "100000": "100000.0", "123456": "123456.0", "1234567": "1.234567e+06",
    "0.0001": "0.0001", "0.00001": "1e-05", "1e-7": "1e-07", "2.5e+21": "2.5e+21", "1e20": "1e+20",
    "123456789012345678": "1.2345678901234568e+17", "-0": "0.0", "0.005": "0.005", "10": "10.0", "+Inf": "+Inf",
    "-2.5": "-2.5", "3.0000000000000004": "3.0000000000000004", "1.7976931348623157e308": "1.7976931348623157e+308",
    "5e-324": "5e-324", "999999": "999999.0", "9999999": "9.999999e+06",
}


@pytest.mark.parametrize("tok,want", OM_FLOAT.items())
def test_openmetrics_float_form(tok, want):
    assert format_om_float(float(tok)) == want


def outcomes(body: bytes, fmt: str) -> list:
    """parse(), then the scrape cache cold, warm (per line) and on its layout plan (after a clean
    scrape of the same layout): each a sorted list of (labels, value) or the error text."""
    def norm(pairs):
        return sorted((str(k), "nan" if isinstance(v, float) and math.isnan(v) else v) for k, v in pairs)

    res = []
    try:
        res.append(norm((tuple(sorted([(k, v) for k, v in s.labels if v] + [("__name__", s.name)])), s.value)
                        for s in parse(body, fmt)))
    except ParseError as exc:
        res.append(str(exc))
    clean = b"\n".join(_clean_line(ln) for ln in body.split(b"\n"))
    for prime in (None, clean, clean + b"|twice"):
        cache = ScrapeCache({})
        if prime is not None:
            for _ in range(2 if prime.endswith(b"|twice") else 1):
                try:
                    run_cache(cache, prime.removesuffix(b"|twice"), fmt)
                except ParseError:
                    pass
        try:
            out = run_cache(cache, body, fmt)
            res.append(norm((tuple(s.labels), v) for s, v in zip(out.series, out.values, strict=True)))
        except ParseError as exc:
            res.append(str(exc))
    return res


def _clean_line(line: bytes) -> bytes:
    """The same line with a plain value, so a cache primed with it knows the series text."""
    if line.startswith(b"#") or b" " not in line:
        return line
    return line.rpartition(b" ")[0] + b" 1"


HOSTILE_TEXT = [
    # label escapes Prometheus keeps as written
    (b'a{p="C:\\Program Files\\x"} 1\n', [("p", "C:\\Program Files\\x")]),
    (b'a{t="\\t",z="\\z",q="\\"",n="\\n",b="\\\\"} 1\n', [("t", "\\t"), ("z", "\\z"), ("q", '"'), ("n", "\n"), ("b", "\\")]),
    # promlex: labels without commas, blanks anywhere, a value glued to the name
    (b'a { x = "1" y="2" , } 3\n', [("x", "1"), ("y", "2")]),
    (b"a-1\n", []),
    # le/quantile in OpenMetrics form after a histogram/summary TYPE line
    (b'# TYPE h histogram\nh_bucket{le="1"} 1\n', [("le", "1.0")]),
    (b'# TYPE s summary\ns{quantile="0.50"} 1\n', [("quantile", "0.5")]),
    (b'# TYPE g gauge\ng{le="1"} 1\n', [("le", "1")]),
]


@pytest.mark.parametrize("body,labels", HOSTILE_TEXT)
def test_text_shapes_prometheus_accepts(body, labels):
    res = outcomes(body, FMT_TEXT)
    assert not isinstance(res[0], str), res[0]
    assert all(r == res[0] for r in res), res
    got = parse(body, FMT_TEXT)[-1]
    assert got.labels == labels


REJECTED = [
    (FMT_TEXT, b"a 1e309\n"), (FMT_TEXT, b"a +NaN\n"), (FMT_TEXT, b"a -nan\n"), (FMT_TEXT, "a \u0661\n".encode()),
    (FMT_TEXT, "a 1\uff10\n".encode()), (FMT_TEXT, b"a 0x1p3\n"), (FMT_TEXT, b"a 0x10\n"), (FMT_TEXT, b"a 1_0\n"),
    (FMT_TEXT, b"a 1\r\nb 2\r\n"), (FMT_TEXT, b"a 1 -5\n"), (FMT_TEXT, b"a 1 +5\n"), (FMT_TEXT, b"a 1 99999999999999999999\n"),
    (FMT_TEXT, b"# TYPE a  counter\na 1\n"), (FMT_TEXT, b"# TYPE a counter \na 1\n"), (FMT_TEXT, b"# TYPE a\n"), (FMT_TEXT, b"#  TYPE a bad\n"),
    (FMT_TEXT, b"# HELP \na 1\n"), (FMT_TEXT, b'a{x="1",,} 1\n'), (FMT_TEXT, b'a{x="1",x="2"} 1\n'),
    (FMT_TEXT, b'a{__name__="b"} 1\n'), (FMT_TEXT, b'{"a.b"} 1\n'), (FMT_TEXT, b" a 1\n"),
    (FMT_OPENMETRICS, b"a 1\t\n# EOF\n"), (FMT_OPENMETRICS, b"a 1\r\n# EOF\n"), (FMT_OPENMETRICS, b"a  1\n# EOF\n"),
    (FMT_OPENMETRICS, b"a 1 \n# EOF\n"), (FMT_OPENMETRICS, b"a 1e309\n# EOF\n"), (FMT_OPENMETRICS, b"a 1 NaN\n# EOF\n"),
    (FMT_OPENMETRICS, b"# HELP a\n# EOF\n"), (FMT_OPENMETRICS, b'a{x="1" ,y="2"} 1\n# EOF\n'),
    (FMT_OPENMETRICS, b"# comment\n# EOF\n"), (FMT_OPENMETRICS, b"a 1\n\n# EOF\n"), (FMT_OPENMETRICS, b"a 1\n"),
]


@pytest.mark.parametrize("fmt,body", REJECTED)
def test_shapes_prometheus_rejects_whatever_the_history(fmt, body):
    res = outcomes(body, fmt)
    assert all(isinstance(r, str) and r == res[0] for r in res), res


ACCEPTED = [
    (FMT_TEXT, b"a 1\n# no newline at the end"), (FMT_TEXT, b"a 1"), (FMT_TEXT, b'ml{a="x\ny"} 1\nb 2\n'), (FMT_TEXT, b"a 1\n  "), (FMT_TEXT, b"a 1\n\x00garbage\n"),
    (FMT_TEXT, b"# TYPE a counter\n# TYPE a gauge\na 1\n# HELP a late\n"), (FMT_TEXT, b"a 1\t\n"),
    (FMT_TEXT, b"a 1 0005\n"), (FMT_TEXT, b"#HELP a x\n#TYPE a bad\n# HELPER\na 1\n"), (FMT_TEXT, b"a 1e-400\n"),
    (FMT_OPENMETRICS, b'a{x="1",} 1\n# EOF'), (FMT_OPENMETRICS, b"# TYPE a gauge\na_total 1\nb 1\na 2\n# EOF\n"),
    (FMT_OPENMETRICS, b"a 1 1.5 # {t=\"x\"} 2 1.5\n# EOF\n"), (FMT_OPENMETRICS, b"# HELP a \n# EOF\n"),
]


@pytest.mark.parametrize("fmt,body", ACCEPTED)
def test_shapes_prometheus_accepts_whatever_the_history(fmt, body):
    res = outcomes(body, fmt)
    assert not isinstance(res[0], str), res[0]
    assert all(r == res[0] for r in res), res


def test_openmetrics_timestamps_truncate_as_go():
    (s,) = parse(b"a 1 1.001\n# EOF\n", FMT_OPENMETRICS)
    assert s.timestamp_ms == 1000  # int64(1.001 * 1000) = int64(1000.9999999999999)
