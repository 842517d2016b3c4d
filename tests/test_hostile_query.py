"""Issue #16's query rows sent to a running ``ringmon standalone`` as a hostile client would.

Each request (huge subqueries, deep nesting, ``count_values`` and ``topk`` over 11,000 steps,
``label_replace`` blowups, regex shapes, bad times and steps) gets a clear error or a bounded
answer, never a 500; the input errors are 400s with Prometheus's error JSON. Then four
queries of death at once: while they run, no target misses a scrape interval and the rule
group no evaluation (both measured from the timestamps stored in the database), and
``/-/healthy``, polled back to back, answers within 100 ms at p99. Waits are on the queries'
answers and on stored samples, each bounded; nothing sleeps around the measurement.
The requests and measurements are ``bench/hostile.py``'s.
"""

from __future__ import annotations

import time
from pathlib import Path

import aiohttp
import pytest

from bench.hostile import (
    EVAL_S,
    FOUR_AT_ONCE,
    SCRAPE_S,
    Hostile,
    Run,
    hostile_requests,
    p99,
    run_hostile,
    start,
    wait_warm,
)

pytestmark = pytest.mark.slow


def _check_answers(run: Run) -> None:
    for h, a in run.answers:
        assert a.status != 500, f"{h.name}: {a}"
        assert a.status in h.ok, f"{h.name}: {a.status} {a.error_type} {a.error}"
        if a.status == 400:
            assert a.error_type == "bad_data", f"{h.name}: {a}"
        elif a.status == 422:
            assert a.error_type == "execution" and a.error, f"{h.name}: {a}"
        elif a.status == 503:
            assert a.error_type == "timeout", f"{h.name}: {a}"


def _check_cadence(what: str, run: Run) -> None:
    # A missed interval shows as a gap of two intervals between stored samples.
    assert run.scrape_gap_s < 2 * SCRAPE_S, f"{what}: a target missed a scrape (gap {run.scrape_gap_s:.2f} s)"
    assert run.eval_gap_s < 2 * EVAL_S, f"{what}: the rule group missed an evaluation (gap {run.eval_gap_s:.2f} s)"
    assert run.healthy_ms, f"{what}: /-/healthy never answered"
    assert p99(run.healthy_ms) <= 100.0, f"{what}: /-/healthy p99 {p99(run.healthy_ms):.1f} ms"


async def test_hostile_queries_against_standalone(tmp_path: Path) -> None:
    site = start(tmp_path)
    try:
        async with aiohttp.ClientSession() as http:
            await wait_warm(http, site.url)
            reqs = hostile_requests(time.time())
            quick: list[Hostile] = [h for h in reqs if h.name not in FOUR_AT_ONCE]
            run = await run_hostile(http, site, quick)
            _check_answers(run)
            for h, a in run.answers:
                if h.name.startswith("subquery 365d") or h.name.startswith("subquery 150d"):
                    assert "too many samples into memory in query execution" in a.error, (h.name, a)
                if h.name == "range 11002 steps":
                    assert "exceeded maximum resolution of 11,000 points per timeseries" in a.error
            four = [h for h in reqs if h.name in FOUR_AT_ONCE]
            assert len(four) == 4
            run = await run_hostile(http, site, four)
            _check_answers(run)
            _check_cadence("four hostile queries at once", run)
            # The serving process did not take the queries' memory (their workers did, capped).
            assert run.rss_main_mb < 1024, f"serving process grew to {run.rss_main_mb:.0f} MB"
            async with http.get(site.url + "/-/healthy") as r:
                assert r.status == 200
    finally:
        site.stop()
