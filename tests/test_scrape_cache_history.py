"""A target's history through the scrape cache: with its layout plan (which forgets the per-line
entries while it stands for them, and rebuilds them when a body leaves the layout) and without
one, every scrape has the same outcome: series, values, stale markers, series added, samples
scraped, duplicates; and a failed scrape marks the same series stale.
(Stale markers compare as sets: their order follows the entries', which a rebuild changes.)"""

from __future__ import annotations

import struct

from fuzz_harness import fuzz_settings
from hypothesis import given
from hypothesis import strategies as st

from scraper import fastpath
from scraper.config import ScrapeConfig
from scraper.fastpath import ScrapeCache, ScrapeOutcome, meta_cache
from scraper.metadata import extract_metadata
from scraper.relabel import parse_relabel_configs
from storage.model import LayoutSeries, Series, make_labels

# lines a body is drawn from (in this order): families with metadata, a series relabelling
# drops, one series text whose label order differs (two texts, one series)
LINES = [
    b"# HELP a_total A counter.", b"# TYPE a_total counter", b'a_total{x="1"} {v}', b'a_total{x="2"} {v}',
    b'a_total{x="3",y="q"} {v}', b'a_total{y="q",x="3"} {v}', b"# TYPE g gauge", b"g {v}", b'g{k="v"} {v}',
    b"drop_me {v}", b'drop_me{k="w"} {v}', b"", b"# a comment", b"h {v}", b'h{z="1"} {v}',
]
DROP = parse_relabel_configs([{"action": "drop", "source_labels": ["__name__"], "regex": "drop_.*"}], "t")
FAIL = None  # a scrape that failed (timeout): the cache's ``failed()``

bodies = st.lists(st.sets(st.integers(0, len(LINES) - 1), min_size=1), min_size=1, max_size=3)
history = st.lists(st.one_of(bodies.map(lambda b: [sorted(s) for s in b]), st.just(FAIL)), min_size=2, max_size=8)


def render(picks: list[int], step: int) -> bytes:
    return b"".join(LINES[i].replace(b"{v}", b"%d" % (step + i)) + b"\n" for i in picks)


def outcome(cache: ScrapeCache, body: bytes) -> tuple:
    proc = cache.process(body, "text")
    try:
        while True:
            next(proc)
    except StopIteration as stop:
        o = stop.value
    # stale markers as a set: the cache walks its entries in their order, which a rebuild changes
    return ([s.labels for s in o.series], [struct.pack(">d", v) for v in o.values], sorted(s.labels for s in o.stale),
            o.series_added, o.samples_scraped, o.duplicates)


@fuzz_settings(200)
@given(history)
def test_the_plan_changes_no_outcome(steps):
    cfg = ScrapeConfig(metric_relabel_configs=DROP)
    planned = ScrapeCache({"job": "j", "instance": "i:1"}, cfg)
    lines_only = ScrapeCache({"job": "j", "instance": "i:1"}, cfg)
    lines_only._make_plan = lambda *_args: None  # type: ignore[method-assign]
    step = 0
    for s in steps:
        if s is FAIL:
            assert sorted(x.labels for x in planned.failed()) == sorted(x.labels for x in lines_only.failed())
            continue
        for picks in s:  # a body repeated gives the plan its chance
            for _ in range(2):
                step += 1
                body = render(picks, step)
                assert outcome(planned, body) == outcome(lines_only, body), (step, body)


def test_targets_share_one_parsed_copy_of_their_comment_lines_and_metadata() -> None:
    """Comment lines parse the same whatever the target: the targets of one exporter keep one
    copy of each line's syntax and of each family's metadata, and each still gets its own outcome."""
    body = render(list(range(len(LINES))), 1)
    first, second = ScrapeCache({"job": "j", "instance": "i:1"}), ScrapeCache({"job": "j", "instance": "i:2"})
    got = outcome(first, body), outcome(second, body)
    assert got[0][1:] == got[1][1:] and got[0][0] != got[1][0]  # same values, each its own instance label
    shared = meta_cache("text")
    assert shared[b"# TYPE g gauge"] == ("TYPE", "g", "gauge") and first._meta is second._meta is shared
    one, other = extract_metadata(body, "text"), extract_metadata(body, "text")
    assert one == other and all(one[k] is other[k] for k in one) and one["a_total"].help == "A counter."


def test_plans_share_their_line_texts_and_a_full_table_keeps_only_texts_in_use(monkeypatch) -> None:
    picks = [i for i in range(len(LINES)) if i != 5]  # not the series written two ways: a plan is made
    body = render(picks, 3)
    first, second = ScrapeCache({"job": "j", "instance": "i:1"}), ScrapeCache({"job": "j", "instance": "i:2"})
    for cache in (first, second):
        for step in (1, 2):  # a clean scrape of a layout leaves a plan
            outcome(cache, render(picks, step))
    assert first._plan is not None and second._plan is not None
    one, other = first._plan.segments[0], second._plan.segments[0]
    assert one is other  # the same layout: one segment (texts, getters) for both plans
    assert one.prefixes == other.prefixes and all(a is b for a, b in zip(one.prefixes, other.prefixes, strict=True))
    assert all(a is b for a, b in zip(one.other_lines, other.other_lines, strict=True))
    assert fastpath._shared_indices([300, 7])[0] is fastpath._shared_indices([int("300")])[0]  # one int per index
    planned, fresh = outcome(first, body), outcome(ScrapeCache({"job": "j", "instance": "i:1"}), body)
    assert planned[:3] == fresh[:3] and planned[4:] == fresh[4:]  # all but series added: the same
    monkeypatch.setattr(fastpath, "_TEXTS", {})
    monkeypatch.setattr(fastpath, "_TEXTS_MAX", 8)
    held = [fastpath.intern_text(b"held %d" % i) for i in range(2)]
    for i in range(6):
        fastpath.intern_text(b"dropped %d" % i)
    fastpath.intern_text(b"one more")  # full: the texts nobody holds go
    assert sorted(fastpath._TEXTS) == [b"held 0", b"held 1", b"one more"]
    assert fastpath.intern_text(b"held %d" % 0) is held[0]
    # a full segment table keeps only the segments plans hold
    monkeypatch.setattr(fastpath, "_SEGMENTS", {})
    monkeypatch.setattr(fastpath, "_segment_lines", 0)
    monkeypatch.setattr(fastpath, "_SEGMENTS_MAX_LINES", 2 * len(LINES))

    def planned_cache(instance: str, layout: list[int]) -> ScrapeCache:
        cache = ScrapeCache({"job": "j", "instance": instance})
        for step in (1, 2):
            outcome(cache, render(layout, step))
        assert cache._plan is not None
        return cache

    kept = planned_cache("i:3", [i for i in picks if i != 3])
    gone = planned_cache("i:4", picks)
    assert len(fastpath._SEGMENTS) == 2
    del gone
    last = planned_cache("i:5", [i for i in picks if i not in (3, 4)])  # full: the segment no plan holds goes
    assert kept._plan is not None and last._plan is not None
    assert list(fastpath._SEGMENTS.values()) == [kept._plan.segments[0], last._plan.segments[0]]
    other_body = render([i for i in picks if i != 3], 3)
    planned, fresh = outcome(kept, other_body), outcome(ScrapeCache({"job": "j", "instance": "i:3"}), other_body)
    assert planned[:3] == fresh[:3] and planned[4:] == fresh[4:]  # all but series added: the same


def test_a_plan_keeps_its_series_as_ids_and_makes_them_again_when_asked() -> None:
    """Issue #20 memory: a plan's scrape hands its Series over (``made``) and keeps ids alone;
    the writer, stale markers and the entries get them made again from the plan's texts."""
    cfg = ScrapeConfig(metric_relabel_configs=DROP)
    cache = ScrapeCache({"job": "j", "instance": "i:1"}, cfg)
    picks = [i for i in range(len(LINES)) if i != 5]  # no aliased text: the body gets a plan

    def run(step: int) -> ScrapeOutcome:
        proc = cache.process(render(picks, step), "text")
        try:
            while True:
                next(proc)
        except StopIteration as stop:
            return stop.value

    first = run(0)
    assert isinstance(first.series, LayoutSeries) and first.made is not None
    assert list(first.series.ids) == [s.id for s in first.made]
    second = run(1)
    assert second.series is first.series and second.made is None  # the plan's: no Series kept
    assert first.series._made is None and first.series.build() == first.made  # made again, equal
    with first.series.lent(first.made):  # the scrape that made them lends them: none made again
        assert all(a is b for a, b in zip(first.series.pick(range(len(first.made))), first.made, strict=True))
    assert first.series._made is None
    tail = [Series.of(make_labels("up", job="j", instance="i:1"))]  # as the scrape loop adds its synthetic series
    both = first.series.with_tail(tail)
    assert isinstance(first.series.ids, memoryview) and first.series.ids.obj is both.ids  # one copy of the ids
    assert list(both.ids) == [s.id for s in first.made + tail] and both.build() == first.made + tail
    stale = cache.failed()  # stale markers for every series of the plan, made again
    assert stale == first.made and cache._plan is None and len(cache.entries) == 9  # sample lines
