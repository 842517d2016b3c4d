"""``/debug/pprof/``: the profiles parse as google/pprof parses them (``pprof_reader``) and name
the functions that really ran; ``seconds`` is capped, one CPU profile runs at a time, bad input
is a 400. promtool against the real servers: tests/test_api_fleet.py and
tests/test_api_fleet_cluster.py."""

from __future__ import annotations

import asyncio
import threading
import tracemalloc
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web
from local_http import serve
from pprof_reader import parse

from common.durations import parse_duration_ms
from web.pprof import PprofSettings, add_pprof_routes, cpu_profile, sample_stacks
from web.pprof_profile import Frame, ProfileBuilder


def test_builder_round_trip() -> None:
    prof = ProfileBuilder([("samples", "count"), ("wall", "nanoseconds")], ("wall", "nanoseconds"), period=10)
    leaf, root = Frame("m.leaf", "/m.py", 3, 5), Frame("m.root", "/m.py", 1, 2)
    prof.add([leaf, root], [1, 10], {"thread": "main"})
    prof.add([leaf, root], [2, 20], {"thread": "main"})  # same stack and labels: adds up
    prof.add([root], [1, 10], {"thread": "other"})
    prof.comments.append("hello")
    got = parse(prof.encode())
    assert got.sample_types == [("samples", "count"), ("wall", "nanoseconds")]
    assert got.period_type == ("wall", "nanoseconds") and got.period == 10
    assert sorted((s.stack, s.values, s.labels["thread"]) for s in got.samples) == [
        ([("m.leaf", 5), ("m.root", 2)], [3, 30], "main"), ([("m.root", 2)], [1, 10], "other")]
    assert got.comments == ["hello"]
    with pytest.raises(ValueError):
        prof.add([leaf], [1])


def _busy(stop: threading.Event) -> None:
    while not stop.is_set():
        parse_duration_ms("1h30m")


def test_cpu_profile_names_the_functions_that_ran() -> None:
    stop, done = threading.Event(), threading.Event()
    worker = threading.Thread(target=_busy, args=(done,), name="busy-worker")
    worker.start()
    try:
        samples = sample_stacks(0.5, 100, stop)
    finally:
        done.set()
        worker.join(timeout=10)
    got = parse(cpu_profile(samples, 100, 30.0, 0.5))
    assert got.sample_types == [("samples", "count"), ("wall", "nanoseconds")]
    busy = [s for s in got.samples if s.labels.get("thread") == "busy-worker"]
    assert busy, [s.labels for s in got.samples]
    names = {name for s in busy for name, _ in s.stack}
    assert "test_pprof._busy" in names and "threading.Thread.run" in names, names
    assert any(s.stack[0][0].startswith("common.durations.") for s in busy), [s.stack[:2] for s in busy]
    assert sum(s.values[0] for s in busy) == samples.ticks  # one sample per tick for a live thread
    assert any("30 s asked, 0.5 s sampled" in c for c in got.comments), got.comments
    assert 0 < got.duration_nanos


@pytest.fixture
async def server() -> AsyncIterator[str]:
    app = web.Application()
    add_pprof_routes(app, PprofSettings(max_seconds=0.5))
    runner, url = await serve(app)
    try:
        yield url
    finally:
        await runner.cleanup()


async def test_endpoints(server: str) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.get(server + "/debug/pprof/") as r:
            index = await r.text()
            assert r.status == 200 and all(f'href="{k}"' in index for k in ("profile", "heap", "goroutine")), index
        # promtool asks for 30 s: the answer is the capped profile, and says so
        async with http.get(server + "/debug/pprof/profile?seconds=30") as r:
            assert r.status == 200 and r.headers["Content-Type"] == "application/octet-stream"
            assert float(r.headers["X-Ringmon-Profile-Seconds"]) < 30
            cpu = parse(await r.read())
        assert any("30 s asked, 0.5 s sampled" in c for c in cpu.comments), cpu.comments
        loop_stacks = {n for s in cpu.samples if s.labels["thread"] == "MainThread" for n, _ in s.stack}
        assert "asyncio.base_events.BaseEventLoop.run_forever" in loop_stacks or not loop_stacks, loop_stacks
        for bad in ("abc", "0", "-1", "inf", "nan"):
            async with http.get(server + f"/debug/pprof/profile?seconds={bad}") as r:
                assert r.status == 400, (bad, r.status)

        # one CPU profile at a time: of three sent together, the first holds the sampler for 0.5 s
        async def status(url: str) -> int:
            async with http.get(url) as r:
                if r.status == 200:
                    parse(await r.read())
                return r.status

        statuses = await asyncio.gather(*(status(server + "/debug/pprof/profile?seconds=1") for _ in range(3)))
        assert 200 in statuses and 429 in statuses, statuses

        async with http.get(server + "/debug/pprof/goroutine") as r:
            goroutines = parse(await r.read())
        kinds = {(s.labels["kind"], s.labels["name"]) for s in goroutines.samples}
        assert ("thread", "MainThread") in kinds, kinds
        handlers = [s for s in goroutines.samples if s.labels["kind"] == "task"
                    and any(n == "web.pprof.PprofHandlers.goroutine" for n, _ in s.stack)]
        assert handlers, [s.stack for s in goroutines.samples]  # the request's own task

        for kind in ("block", "mutex", "threadcreate"):
            async with http.get(server + f"/debug/pprof/{kind}") as r:
                got = parse(await r.read())
                assert r.status == 200 and not got.samples and got.comments, (kind, got)
        async with http.get(server + "/debug/pprof/trace?seconds=30") as r:
            assert r.status == 501 and "no Python equivalent" in await r.text()

        was_tracing = tracemalloc.is_tracing()
        if not was_tracing:
            async with http.get(server + "/debug/pprof/heap") as r:
                heap = parse(await r.read())
            assert not heap.samples and any("PYTHONTRACEMALLOC" in c for c in heap.comments), heap.comments
            tracemalloc.start(5)
        try:
            kept = [bytearray(1000) for _ in range(100)]  # noqa: F841 - live while the snapshot is taken
            async with http.get(server + "/debug/pprof/heap") as r:
                heap = parse(await r.read())
        finally:
            if not was_tracing:
                tracemalloc.stop()
        assert heap.sample_types == [("inuse_objects", "count"), ("inuse_space", "bytes")]
        mine = [s for s in heap.samples if s.stack and s.stack[0][0].endswith("test_pprof.py")]
        assert mine and max(s.values[1] for s in mine) >= 100_000, [(s.stack[:1], s.values) for s in heap.samples[:5]]


def test_config() -> None:
    from cli.config import ConfigError, config_from_dict

    cfg = config_from_dict({"web": {"pprof": False, "pprof_max_seconds": "2s"}})
    assert cfg.web.pprof is False and cfg.web.pprof_max_seconds == 2.0
    assert config_from_dict({}).web.pprof is True and config_from_dict({}).web.pprof_max_seconds == 30.0
    with pytest.raises(ConfigError, match="pprof_max_seconds"):
        config_from_dict({"web": {"pprof_max_seconds": "2h"}})


@pytest.mark.parametrize("on", [True, False])
async def test_web_pprof_setting_mounts_the_endpoints(on: bool) -> None:
    from cli.config import config_from_dict
    from cli.webparts import web_app_options
    from query.engine import Engine
    from query.memory import MemoryStorage
    from web.app import create_app

    async def nothing() -> list:
        return []

    cfg = config_from_dict({"web": {"pprof": on}})
    engine = Engine(MemoryStorage())
    app = create_app(engine=engine, pools_provider=nothing, targets_provider=nothing, **web_app_options(cfg, engine))
    runner, url = await serve(app)
    try:
        async with aiohttp.ClientSession() as http:
            for path in ("/debug/pprof/", "/debug/pprof/goroutine"):
                async with http.get(url + path) as r:
                    assert r.status == (200 if on else 404), (path, r.status)
    finally:
        await runner.cleanup()
