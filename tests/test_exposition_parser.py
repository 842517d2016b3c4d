"""Parser details: escapes, special floats, timestamp units, formats, and cache == parser."""

from __future__ import annotations

import math
import random

import pytest

from bench.scrape import run_cache
from scraper.exposition import (
    ACCEPT_HEADER,
    FMT_OPENMETRICS,
    FMT_TEXT,
    ParseError,
    content_format,
    parse,
)
from scraper.fastpath import ScrapeCache
from storage.model import format_labels


def test_content_type_picks_parser():
    assert content_format("application/openmetrics-text; version=1.0.0; charset=utf-8") == FMT_OPENMETRICS
    assert content_format("text/plain; version=0.0.4; charset=utf-8") == FMT_TEXT
    assert content_format(None) == FMT_TEXT
    assert content_format("application/json") == FMT_TEXT
    assert ACCEPT_HEADER.startswith("application/openmetrics-text;version=1.0.0,")
    assert "text/plain;version=0.0.4;q=0.5" in ACCEPT_HEADER


def test_text_escapes_specials_and_ms_timestamps():
    body = (
        b'a{p="x\\\\y",q="say \\"hi\\"",r="l1\\nl2"} +Inf 1700000000123\n'
        b"b -Inf\n"
        b"c NaN\n"
        b"d 1e-3\n"
        b'e{le="0.5"}\t\t7   \n'
    )
    s = parse(body, FMT_TEXT)
    assert s[0].labels == [("p", "x\\y"), ("q", 'say "hi"'), ("r", "l1\nl2")]
    assert s[0].value == math.inf and s[0].timestamp_ms == 1700000000123
    assert s[1].value == -math.inf and math.isnan(s[2].value) and s[3].value == 0.001
    assert s[4].value == 7 and s[4].timestamp_ms is None


def test_openmetrics_timestamps_are_seconds_and_exemplars_parse():
    body = (
        b"# TYPE a counter\n"
        b'a_total{x="1"} 3 1700000000.5 # {trace_id="abc"} 1.5 1700000000.25\n'
        b"a_created 1700000000\n"
        b"# EOF\n"
    )
    s = parse(body, FMT_OPENMETRICS, strict=True)
    assert s[0].timestamp_ms == 1700000000500
    assert s[0].exemplar == ([("trace_id", "abc")], 1.5, 1700000000.25)
    assert s[1].name == "a_created" and s[1].family == "a"


@pytest.mark.parametrize(
    "body,where",
    [
        (b"ok 1\nbad{a=1} 2\n", "line 2"),
        (b"ok 1\nok2 1 2 3\n", "line 2"),
        (b'x{a="\\q"} 1\nx{a=q} 1\n', "line 2"),
        (b"# TYPE x counter\n# TYPE x  gauge\n", "line 2"),
        (b"x 1\ny 1 -5\n", "line 2"),
        (b"x 1_000\n", "line 1"),
    ],
)
def test_text_errors_say_line_and_reason(body, where):
    with pytest.raises(ParseError) as exc:
        parse(body, FMT_TEXT)
    assert str(exc.value).startswith(where + ": ")
    cache = ScrapeCache({})
    with pytest.raises(ParseError) as exc2:
        run_cache(cache, body)
    assert str(exc2.value) == str(exc.value)


def test_invalid_utf8_is_rejected():
    with pytest.raises(ParseError, match="line 2: invalid UTF-8"):
        run_cache(ScrapeCache({}), b"a 1\nb{x=\"\xff\"} 1\n")


def _random_body(rng: random.Random, n: int) -> bytes:
    lines = []
    for f in range(n):
        kind = rng.choice(["counter", "gauge", "untyped"])
        lines.append(f"# HELP m{f} help {f} with \\\\ and \\n")
        lines.append(f"# TYPE m{f} {kind}")
        for j in range(rng.randint(1, 4)):
            val = rng.choice(["NaN", "+Inf", "-Inf", repr(rng.uniform(-1e9, 1e9)), str(rng.randint(0, 10**12))])
            lab = "" if j == 0 else rng.choice([f'{{a="{j}"}}', f'{{a="t{j}",b="x y \\" z"}}', f'{{ a = "s{j}" , }}'])
            ts = rng.choice(["", "", f" {rng.randint(0, 2**40)}"])
            sep = rng.choice([" ", " ", "\t"])
            lines.append(f"m{f}{lab}{sep}{val}{ts}")
    return ("\n".join(lines) + "\n").encode()


def test_cache_equals_full_parser_on_random_bodies():
    rng = random.Random(7)
    cache = ScrapeCache({"job": "j", "instance": "h:1"})
    for _round in range(6):
        body = _random_body(rng, 40)
        want = parse(body, FMT_TEXT)
        for _ in range(2):  # cold then warm
            out = run_cache(cache, body)
            got = {format_labels(s.labels): (v, None) for s, v in zip(out.series, out.values, strict=True)}
            exp = {}
            for s in want:
                labels = dict(s.labels)
                labels.update({"job": "j", "instance": "h:1", "__name__": s.name})
                key = format_labels(tuple(sorted(labels.items())))
                exp.setdefault(key, (s.value, None))
            assert got.keys() == exp.keys()
            for k, (v, _) in exp.items():
                g = got[k][0]
                assert g == v or (math.isnan(g) and math.isnan(v))
            ts = dict(out.explicit_ts)
            explicit = [s.timestamp_ms for s in want if s.timestamp_ms is not None]
            assert sorted(ts.values()) == sorted(explicit)


@pytest.mark.parametrize(
    "fmt,good,bad",
    [
        # what float() takes and Prometheus does not: CRLF, digit groups, blanks, signed NaN, overflow
        (FMT_TEXT, b"a 1\n", b"a 1\r\n"),
        (FMT_TEXT, b"a 1\nb 2\n", b"a 1_0\nb 2\n"),
        (FMT_TEXT, b"a 1\n", b"a +nan\n"),
        (FMT_TEXT, b"a 1\n", b"a 1e309\n"),
        (FMT_TEXT, b"a 1\n", b"a -1e999\n"),
        (FMT_TEXT, b"a 1\n", "a \u0661\n".encode()),
        (FMT_TEXT, b"a 1\n", b"a 1\n# TYPE a  counter\n"),
        (FMT_OPENMETRICS, b"a 1\nb 1\n# EOF\n", b"a 1\t\nb 1\n# EOF\n"),
        (FMT_OPENMETRICS, b"a 1\nb 1\n# EOF\n", b"a 1\nb 1\x0b\n# EOF\n"),
        (FMT_OPENMETRICS, b"a 1\n# EOF\n", b"a 1\r\n# EOF\n"),
        (FMT_OPENMETRICS, b"a 1\n# EOF\n", b"a 1\n\n# EOF\n"),
        (FMT_OPENMETRICS, b"a 1\n# EOF\n", b"a 1\n"),
    ],
)
def test_warm_cache_still_rejects_what_the_parser_rejects(fmt, good, bad):
    """Lines the cache knows from a good body must not let a reordered or broken body through."""
    with pytest.raises(ParseError):
        parse(bad, fmt)
    cache = ScrapeCache({})
    run_cache(cache, good, fmt)
    run_cache(cache, good, fmt)
    with pytest.raises(ParseError):
        run_cache(cache, bad, fmt)
    out = run_cache(cache, good, fmt)  # and it recovers
    assert out.series


def test_self_metrics_on_a_given_registry():
    from prometheus_client import CollectorRegistry, generate_latest

    from scraper.memwriter import MemoryWriter
    from scraper.pool import ScrapePool

    reg = CollectorRegistry()
    pool = ScrapePool(MemoryWriter(), name="selftest", registry=reg)
    pool.metrics.scrapes.labels("selftest").inc()
    text = generate_latest(reg).decode()
    for name in ("ringmon_scraper_scrapes_total", "ringmon_scraper_scrape_failures_total",
                 "ringmon_scraper_scrape_duration_seconds", "ringmon_scraper_samples_appended_total",
                 "ringmon_scraper_writer_queue_depth", "ringmon_scraper_targets"):
        assert name in text
    assert 'ringmon_scraper_writer_queue_depth{scraper="selftest"} 0.0' in text
    # a second pool on the same registry shares the metric set instead of failing
    ScrapePool(MemoryWriter(), name="selftest2", registry=reg)


def test_one_series_under_two_texts_keeps_the_first_sample():
    from scraper.config import ScrapeConfig
    from scraper.relabel import parse_relabel_configs

    cache = ScrapeCache({"job": "j"})
    body = b'a{x="1"} 1\na{ x = "1" } 2\nb 3\n'
    for _ in range(3):  # cold, warm, warm
        out = run_cache(cache, body)
        assert [(s.metric, v) for s, v in zip(out.series, out.values, strict=True)] == [("a", 1.0), ("b", 3.0)]
        assert out.duplicates == 1 and out.samples_scraped == 3
    # a relabelling collision behaves the same, and goes away when the collision does
    cfg = ScrapeConfig(metric_relabel_configs=parse_relabel_configs([{"action": "labeldrop", "regex": "x"}], "t"))
    cache = ScrapeCache({}, cfg)
    out = run_cache(cache, b'c{x="1"} 1\nc{x="2"} 2\n')
    assert out.values == [1.0] and out.duplicates == 1
    out = run_cache(cache, b'c{x="2"} 5\n')
    assert out.values == [5.0] and out.duplicates == 0 and not out.stale


def _warm(cache, body, fmt=FMT_TEXT):
    """Scrape twice so the next body with the same layout takes the layout plan."""
    run_cache(cache, body, fmt)
    run_cache(cache, body, fmt)
    assert cache._plan is not None


def test_layout_plan_reads_new_values_and_keeps_staleness_right():
    cache = ScrapeCache({"job": "j"})
    _warm(cache, b"# TYPE a gauge\na 1\nb{x=\"1\"} 2\nc 3\n")
    for v in range(5):  # same layout, new values: no new series, nothing stale
        out = run_cache(cache, b"# TYPE a gauge\na %d\nb{x=\"1\"} %d.5\nc -Inf\n" % (v, v))
        assert out.values == [v, v + 0.5, -math.inf] and out.series_added == 0 and not out.stale
        assert out.samples_scraped == 3
    # a series disappears after several planned scrapes: exactly it is marked stale
    out = run_cache(cache, b"# TYPE a gauge\na 1\nc 3\n")
    assert [s.metric for s in out.stale] == ["b"]
    # a failure after planned scrapes marks the last good series stale
    _warm(cache, b"a 1\nc 3\n")
    with pytest.raises(ParseError):
        run_cache(cache, b"a 1\nc 3 x y\n")
    assert sorted(s.metric for s in cache.failed()) == ["a", "c"]


@pytest.mark.parametrize(
    "fmt,good,bad,error",
    [
        (FMT_TEXT, b"a 1\nb 2\n", b"a 1\nb zz\n", "line 2: invalid value 'zz'"),
        (FMT_TEXT, b"# TYPE a gauge\na 1\n", b"# TYPE a summary\na 1\n", None),  # comment text changed
        (FMT_TEXT, b"# TYPE h histogram\nh_bucket{le=\"1\"} 1\n", b"# TYPE h histogram\nh_bucket{le=\"1\"}  1\n",
         None),
        (FMT_OPENMETRICS, b"a 1\nb 2\n# EOF\n", b"a 1\nb  2\n# EOF\n", "line 2:"),
        (FMT_OPENMETRICS, b"a 1\nb 2\n# EOF\n", b"a 1\nb 2 \n# EOF\n", "line 2:"),
    ],
)
def test_layout_plan_falls_back_to_the_line_parser(fmt, good, bad, error):
    cache = ScrapeCache({})
    _warm(cache, good, fmt)
    if error is None:
        try:
            want = parse(bad, fmt)
        except ParseError:
            want = None
        if want is not None:
            out = run_cache(cache, bad, fmt)
            assert out.values == [s.value for s in want]
        return
    with pytest.raises(ParseError, match=error):
        run_cache(cache, bad, fmt)


def test_layout_plan_checks_values_of_dropped_lines():
    from scraper.config import ScrapeConfig
    from scraper.relabel import parse_relabel_configs

    cfg = ScrapeConfig(metric_relabel_configs=parse_relabel_configs(
        [{"action": "drop", "source_labels": ["__name__"], "regex": "gone"}], "t"))
    cache = ScrapeCache({}, cfg)
    _warm(cache, b"keep 1\ngone 2\n")
    out = run_cache(cache, b"keep 5\ngone 6\n")
    assert out.values == [5.0] and out.samples_scraped == 2
    with pytest.raises(ParseError, match="line 2: invalid value"):
        run_cache(cache, b"keep 5\ngone six\n")
