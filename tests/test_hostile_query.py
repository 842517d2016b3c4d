"""Issue #16's query rows sent to a running ``ringmon standalone`` as a hostile client would.

Each request (huge subqueries, deep nesting, ``count_values`` and ``topk`` over 11,000 steps,
``label_replace`` blowups, regex shapes, bad times and steps) gets a clear error or a bounded
answer, never a 500; the input errors are 400s with Prometheus's error JSON. Then four
queries of death at once: while they run, no target misses a scrape interval and the rule
group no evaluation (both measured from the timestamps stored in the database), and
``/-/healthy``, probed every 20 ms from another process, answers within 100 ms at p99 --
each judged against a baseline window of the same process left alone just before, so that
a machine overloaded by others fails only what the hostile queries made worse
(``bench.hostile.cadence_problems``). Waits are on the queries' answers and on stored
samples, each bounded. The requests and measurements are ``bench/hostile.py``'s.

Cluster mode: the same requests to a ``ringmon web`` process on real ZooKeeper and
Cassandra, with a ``ringmon scraper`` and a ``ringmon alerter`` process writing the scrapes
and the rule group's evaluations that the checks read back.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from dataclasses import replace
from pathlib import Path

import aiohttp
import pytest
from test_hostile_auth import Proc

from bench.hostile import (
    EVAL_S,
    FOUR_AT_ONCE,
    SCRAPE_S,
    Answer,
    Hostile,
    Run,
    cadence_problems,
    describe,
    hostile_requests,
    judged_cadence,
    run_hostile,
    send,
    start,
    wait_warm,
    write_alerting,
)
from discovery.registry import Registry
from discovery.target import ScrapeSettings
from services.zookeeper.zkserver import free_port

pytestmark = pytest.mark.slow


def _check_answers(answers: list[tuple[Hostile, Answer]]) -> None:
    for h, a in answers:
        assert a.status != 500, f"{h.name}: {a}"
        assert a.status in h.ok, f"{h.name}: {a.status} {a.error_type} {a.error}"
        if a.status == 400:
            assert a.error_type == "bad_data", f"{h.name}: {a}"
        elif a.status == 422:
            assert a.error_type == "execution" and a.error, f"{h.name}: {a}"
        elif a.status == 503:
            assert a.error_type == "timeout", f"{h.name}: {a}"


BASELINE_S = 10.0  # the process left alone just before the four (as bench/hostile.py's baseline row)
# The requests sent one round at once before the four wait for the slowest of them: each asks
# for a 503 `timeout` after this (Prometheus's `timeout` parameter), not the server's 30 s
# (the one that runs into it, `range 365d x 11000 steps`, is cut as clearly after 5 s as after
# 10; the others answer within 0.3 s, 2.6 s at most for the label_replace blowup, on a machine
# at load 7). The four keep the server's timeout: their window is the one the cadence checks
# judge, and a shorter one weighs the same few slow /-/healthy answers more in its p99.
QUICK_TIMEOUT_S = 5.0
# Stored scrapes of every target before the requests: 2 show every series (what the hostile
# requests' sizes depend on) and the rule recorded; the baseline window comes after the
# requests sent one at once, so the process has long settled by then.
WARM_SCRAPES = 2


async def check_hostile(http: aiohttp.ClientSession, base: str, pid: int, reqs: list[Hostile]) -> None:
    """Every request alone: a clear error or a bounded answer; then four at once, with the
    process's cadence checked while they run."""
    quick: list[Hostile] = [replace(h, params={**h.params, "timeout": f"{QUICK_TIMEOUT_S:g}s"})
                            for h in reqs if h.name not in FOUR_AT_ONCE]
    # (their answers are what is checked: sent without run_hostile's cadence measurement, whose
    # /-/healthy prober and waits for the stored samples after the window nothing here reads)
    answers = list(zip(quick, await asyncio.gather(*(send(http, base, h) for h in quick)), strict=True))
    _check_answers(answers)
    for h, a in answers:
        if h.name.startswith("subquery 365d") or h.name.startswith("subquery 150d"):
            assert "too many samples into memory in query execution" in a.error, (h.name, a)
        if h.name == "range 11002 steps":
            assert "exceeded maximum resolution of 11,000 points per timeseries" in a.error
    four = [h for h in reqs if h.name in FOUR_AT_ONCE]
    assert len(four) == 4
    runs: list[Run] = []

    async def attempt() -> tuple[list[str], float | None]:
        baseline = await run_hostile(http, base, pid, [], BASELINE_S)
        run = await run_hostile(http, base, pid, four)
        print(f"\nbaseline (nothing sent): {describe(baseline)}\nfour hostile queries at once: {describe(run)}; "
              f"load {os.getloadavg()[0]:.1f}")
        _check_answers(run.answers)
        runs.append(run)
        return cadence_problems("four hostile queries at once", run, baseline, SCRAPE_S, EVAL_S), run.cpu_pressure

    problems = await judged_cadence(attempt)
    assert not problems, "\n".join(problems)
    run = runs[-1]
    # The serving process did not take the queries' memory (their workers did, capped).
    assert run.rss_main_mb < 1024, f"serving process grew to {run.rss_main_mb:.0f} MB"
    async with http.get(base + "/-/healthy") as r:
        assert r.status == 200


async def test_hostile_queries_against_standalone(tmp_path: Path) -> None:
    site = start(tmp_path)
    try:
        async with aiohttp.ClientSession() as http:
            await wait_warm(http, site.url, scrapes=WARM_SCRAPES)
            await check_hostile(http, site.url, site.proc.pid, hostile_requests(time.time()))
    finally:
        site.stop()


@pytest.mark.zookeeper
@pytest.mark.cassandra
async def test_hostile_queries_against_cluster_web(tmp_path: Path, zookeeper, zk_root, cassandra,
                                                   cassandra_storage) -> None:
    loop = asyncio.get_running_loop()
    admin = await loop.run_in_executor(None, lambda: Registry(zookeeper.hosts, root=zk_root).start(watch=False))
    await loop.run_in_executor(None, admin.create_pool, "api", ScrapeSettings(interval_s=SCRAPE_S, timeout_s=SCRAPE_S))
    a_port, s_port, w_port = free_port(), free_port(), free_port()
    agent_zk = ["--zookeeper", zookeeper.hosts, "--zookeeper-root", zk_root]
    # The scraped hosts are processes of their own: served from this test's event loop, a
    # scrape would wait on the client reading the hostile queries' answers (a missed scrape
    # the test made itself).
    agent_listen = [f"127.0.0.1:{free_port()}" for _ in range(3)]
    agents = [Proc(tmp_path, f"agent-{i}", ["agent", "--pool", "api", "--listen", listen, *agent_zk],
                   f"http://{listen}/metrics") for i, listen in enumerate(agent_listen)]
    cfg = tmp_path / "ringmon.yaml"
    cfg.write_text(json.dumps({
        "storage": {"backend": "cassandra", "cassandra": {
            "hosts": [cassandra.host], "port": cassandra.port, "keyspace": cassandra_storage.keyspace,
            "spool_dir": str(tmp_path / "spool")}},
        "discovery": {"zookeeper": {"hosts": zookeeper.hosts, "session_timeout": "4s"}},
        "scrape": {"interval": f"{SCRAPE_S:g}s", "timeout": f"{SCRAPE_S:g}s"},
        "data_dir": str(tmp_path / "data"),
    }))
    alerting = write_alerting(tmp_path, listen=f"127.0.0.1:{a_port}")
    zk = ["--zookeeper-root", zk_root]
    base = f"http://127.0.0.1:{w_port}"
    procs = [
        *agents,
        Proc(tmp_path, "scraper", ["scraper", "--config", str(cfg), "--id", "s-1", "--listen", f"127.0.0.1:{s_port}",
                                   *zk], f"http://127.0.0.1:{s_port}/metrics"),
        Proc(tmp_path, "alerter", ["alerter", "--config", str(cfg), "--alerting", str(alerting)],
             f"http://127.0.0.1:{a_port}/-/ready"),
        Proc(tmp_path, "web", ["web", "--config", str(cfg), "--listen", f"127.0.0.1:{w_port}", *zk], base + "/-/ready"),
    ]
    try:
        for p in procs:
            await p.start()
        web = procs[-1]
        assert web.proc is not None
        async with aiohttp.ClientSession() as http:
            await wait_warm(http, base, scrapes=WARM_SCRAPES)
            one = f'up{{instance="{agent_listen[0]}"}}'
            await check_hostile(http, base, web.proc.pid, hostile_requests(time.time(), one=one))
    finally:
        for p in reversed(procs):
            p.stop()
        await loop.run_in_executor(None, admin.stop)
