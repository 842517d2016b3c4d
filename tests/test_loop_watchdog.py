"""The event-loop watchdog (common/loop_watchdog.py) and the garbage collector settings (common/gc_tuning.py)."""

from __future__ import annotations

import asyncio
import gc
import linecache
import time

from prometheus_client import CollectorRegistry

from common.gc_tuning import freeze_startup_heap, gc_paused
from common.loop_watchdog import LoopWatchdog, Stall


def blocking_handler() -> None:
    """What a handler that blocks the loop looks like: a sleep and a full garbage collection."""
    time.sleep(1.0)  # first: the watchdog notices the stall 50 ms into it (a busy machine: later), in this call
    junk = []
    for _ in range(50_000):  # cyclic garbage for the collection to find
        a: list = []
        a.append(a)
        junk.append(a)
    del junk
    gc.collect()


async def test_a_blocked_loop_is_reported_with_its_stack_gc_time_and_metric() -> None:
    registry = CollectorRegistry()
    seen: list[Stall] = []
    reported = asyncio.Event()
    loop = asyncio.get_running_loop()
    dog = LoopWatchdog(on_stall=lambda s: (seen.append(s), loop.call_soon_threadsafe(reported.set))).start()
    dog.register(registry)
    try:
        await asyncio.sleep(0.05)  # the watchdog beats
        linecache.cache.pop(__file__, None)
        blocking_handler()  # on the loop: nothing else runs for >= 1 s
        await asyncio.wait_for(reported.wait(), 30)
    finally:
        dog.stop()
    stall = next(s for s in seen if "blocking_handler" in s.loop_stack)  # the stack names the culprit
    assert "time.sleep(1.0)" in stall.loop_stack  # with its source line
    assert len(linecache.cache.get(__file__, ())) != 4  # read from the file, not kept in linecache
    assert stall.seconds >= 0.9  # the loop truly did not beat for 1 s (a lower bound: load only adds)
    assert stall.gc_s > 0  # the collection ran inside the stall
    if stall.ran_s is not None:  # Linux: the thread slept, so the stall is time it was blocked
        assert stall.blocked_s is not None and stall.blocked_s >= 0.5 and "blocked" in stall.describe()
    described = stall.describe()
    assert described.startswith("event loop stalled for") and "garbage collection" in described
    assert stall in dog.stalls
    # every stall counted: also any over before the thread looked (then not described)
    count = registry.get_sample_value("ringmon_event_loop_stall_seconds_count")
    assert count is not None and count >= len(dog.stalls) >= 1
    assert registry.get_sample_value("ringmon_event_loop_stall_seconds_bucket", {"le": "0.25"}) < count
    assert dog._gc_timer not in gc.callbacks  # stop() removed its collection timer


async def test_an_idle_loop_is_not_woken_and_gets_its_selector_back() -> None:
    loop = asyncio.get_running_loop()
    inner = loop._selector  # type: ignore[attr-defined]
    real = inner.select
    calls = 0

    def counting(timeout: float | None = None) -> list:
        nonlocal calls
        calls += 1
        return real(timeout)

    inner.select = counting  # the loop's own selector, counting the loop's wake-ups
    try:
        dog = LoopWatchdog().start()
        assert loop._selector is not inner  # type: ignore[attr-defined] # wrapped: it stamps steps
        calls = 0
        await asyncio.sleep(0.5)  # idle: a heartbeat every tick_s would wake the loop ~10 times
        idle_calls = calls
        dog.stop()
    finally:
        del inner.select
    assert idle_calls <= 3
    assert loop._selector is inner  # type: ignore[attr-defined]


def test_freeze_keeps_the_startup_heap_out_of_collections() -> None:
    try:
        frozen = freeze_startup_heap()
        assert frozen == gc.get_freeze_count() > 1000  # pytest and its plugins, all imported
        assert len(gc.get_objects()) < frozen  # what full collections still traverse
    finally:
        gc.unfreeze()


def test_gc_paused_counts_overlapping_blocks_and_keeps_a_collector_turned_off_off() -> None:
    assert gc.isenabled()
    outer = gc_paused()
    outer.__enter__()
    inner = gc_paused()
    inner.__enter__()
    assert not gc.isenabled()
    outer.__exit__(None, None, None)  # (overlapping, not nested: another query ended first)
    assert not gc.isenabled()
    inner.__exit__(None, None, None)
    assert gc.isenabled()
    gc.disable()
    try:
        with gc_paused():
            assert not gc.isenabled()
        assert not gc.isenabled()  # whoever turned it off turns it on
    finally:
        gc.enable()


def test_a_chain_of_overlapping_gc_pauses_still_collects(monkeypatch) -> None:
    """Queries that overlap back to back never let the pause count reach zero: a block ending
    after MAX_PAUSE_S of pause collects the cyclic garbage meanwhile (set to 0 here, no clock)."""
    import weakref

    from common import gc_tuning

    class Node:
        pass

    monkeypatch.setattr(gc_tuning, "MAX_PAUSE_S", 0.0)
    outer = gc_paused()
    outer.__enter__()
    try:
        node = Node()
        node.self = node  # type: ignore[attr-defined]  # a cycle: only the collector frees it
        alive = weakref.ref(node)
        del node
        with gc_paused():  # another query, inside the first one's pause
            pass
        assert alive() is None and not gc.isenabled()
    finally:
        outer.__exit__(None, None, None)
    assert gc.isenabled()
