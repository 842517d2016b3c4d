"""Conformance: the OpenMetrics suite, Prometheus' textparse fixtures and the expfmt corpus.

Every case runs through the whole-body parser and through the scrape cache (cold and
warm), which must agree with it.
"""

from __future__ import annotations

import json
import math

import pytest
from conftest import CONFORMANCE

from bench.scrape import run_cache
from scraper.config import ScrapeConfig
from scraper.exposition import FMT_OPENMETRICS, FMT_TEXT, ParseError, parse
from scraper.fastpath import ScrapeCache, ScrapeError

EXPO = CONFORMANCE / "exposition"
OM_CASES = sorted(p for p in (EXPO / "openmetrics").iterdir() if p.is_dir())
FUZZ = sorted((EXPO / "expfmt" / "fuzz-corpus").iterdir())
PROM_FIXTURES = sorted((EXPO / "prometheus").iterdir())


def outcome(fn):
    try:
        return True, fn()
    except (ParseError, ScrapeError) as exc:
        return False, str(exc)


def same_values(a: list[float], b: list[float]) -> bool:
    return len(a) == len(b) and all((x == y) or (math.isnan(x) and math.isnan(y)) for x, y in zip(a, b, strict=True))


def test_case_counts():
    assert len(OM_CASES) == 211
    assert sum(1 for c in OM_CASES if json.loads((c / "test.json").read_text())["shouldParse"]) == 44
    assert len(FUZZ) == 26


@pytest.mark.parametrize("case", OM_CASES, ids=[c.name for c in OM_CASES])
def test_openmetrics_case(case):
    spec = json.loads((case / "test.json").read_text())
    body = (case / spec["file"]).read_bytes()
    ok, detail = outcome(lambda: parse(body, FMT_OPENMETRICS, strict=True))
    assert ok == spec["shouldParse"], f"{case.name}: {detail}"
    if not ok:
        assert detail.startswith("line "), detail  # says where
    # the scrape cache in strict mode agrees, cold and warm
    strict = ScrapeCache({"job": "j", "instance": "i"}, ScrapeConfig(strict_openmetrics=True))
    for _ in range(2):
        c_ok, _detail = outcome(lambda: run_cache(strict, body, FMT_OPENMETRICS))
        assert c_ok == spec["shouldParse"], f"{case.name} (cache): {_detail}"
    # the default scrape cache (Prometheus-like: syntax only) agrees with the non-strict parser
    lenient = ScrapeCache({})
    want_ok, want = outcome(lambda: parse(body, FMT_OPENMETRICS))
    for _ in range(2):
        got_ok, got = outcome(lambda: run_cache(lenient, body, FMT_OPENMETRICS))
        assert got_ok == want_ok, f"{case.name}: parser {want} vs cache {got}"
        if want_ok:
            assert same_values(got.values, [s.value for s in want]) or len({s.series_text for s in want}) < len(want)
    if spec["shouldParse"]:
        assert want_ok


# Where the Prometheus server (which Ringmon follows; tests/test_ingest_vs_prometheus.py checks
# these against a real one) and expfmt (which wrote these seeds' verdicts) disagree: a negative
# timestamp is not a promlex token; the server appends a final newline, keeps unknown escapes,
# and does not check repeated or late HELP/TYPE lines, nor the values of le and quantile labels.
PROMETHEUS_VERDICT = {
    "from_test_parse_error_0": True,  # "bla 3.14": no final newline (Prometheus appends one)
    "from_test_parse_error_1": True,  # a label value with the escape \t (kept as written), no final newline
    "from_test_parse_error_2": True,  # a label value with a line break in it
    "from_test_parse_3": False,  # "decoy -1 -2"
    "from_test_parse_error_7": True,  # quantile="bla"
    "from_test_parse_error_12": True,  # a second HELP
    "from_test_parse_error_13": True,  # a second TYPE
    "from_test_parse_error_14": True,  # TYPE after samples
    "from_test_parse_error_19": True,  # le="bla"
}


def _fuzz_should_parse(path) -> bool:
    return PROMETHEUS_VERDICT.get(path.name, "error" not in path.name)


@pytest.mark.parametrize("path", FUZZ, ids=[p.name for p in FUZZ])
def test_expfmt_fuzz_seed(path):
    body = path.read_bytes()
    ok, detail = outcome(lambda: parse(body, FMT_TEXT))
    assert ok == _fuzz_should_parse(path), detail
    cache = ScrapeCache({})
    for _ in range(2):
        c_ok, c_detail = outcome(lambda: run_cache(cache, body, FMT_TEXT))
        assert c_ok == ok, c_detail
        if not ok:
            assert c_detail == detail  # same line and reason


def test_expfmt_text_sample():
    body = (EXPO / "expfmt" / "text").read_bytes()
    samples = parse(body, FMT_TEXT)
    assert len(samples) == 248
    cache = ScrapeCache({})
    run_cache(cache, body, FMT_TEXT)
    out = run_cache(cache, body, FMT_TEXT)
    assert same_values(out.values, [s.value for s in samples])


@pytest.mark.parametrize("path", PROM_FIXTURES, ids=[p.name for p in PROM_FIXTURES])
def test_prometheus_textparse_fixtures(path):
    fmt = FMT_OPENMETRICS if ".om." in path.name else FMT_TEXT
    body = path.read_bytes()
    samples = parse(body, fmt)
    assert samples
    cache = ScrapeCache({"job": "j", "instance": "i"})
    cold = run_cache(cache, body, fmt)
    warm = run_cache(cache, body, fmt)
    assert [s.id for s in cold.series] == [s.id for s in warm.series]
    assert same_values(warm.values, cold.values)
    assert cold.samples_scraped == len(samples)
    assert warm.series_added == 0 and not warm.stale


def test_strict_rejects_negative_bucket_sum_in_alltypes_om():
    """alltypes.5mfs.om.txt has a histogram with negative buckets and a _sum, which the spec forbids."""
    body = (EXPO / "prometheus" / "alltypes.5mfs.om.txt").read_bytes()
    with pytest.raises(ParseError, match="negative buckets"):
        parse(body, FMT_OPENMETRICS, strict=True)
