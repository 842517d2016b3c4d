"""A watchdog of the asyncio event loop: notices when the loop is late and says what held it.

On a selector event loop (asyncio's default), the loop's selector is wrapped to stamp the time
whenever the loop leaves ``select`` (a step of callbacks starts) and enters it again (the step
is over): an idle loop costs nothing, and no timer wakes it; a step longer than
``threshold_s`` is observed as it ends. A daemon thread looks every ``tick_s`` (250 ms): when a
step has run longer than ``threshold_s``, the loop is stalled (on any other
loop a heartbeat callback stamps the time every ``tick_s`` and a stall is a late beat). The
thread samples the loop thread's stack then and, once the step is over, logs one warning with
the stall's length, that stack, the time garbage collections took meanwhile (they hold the
GIL, in whichever thread they run) and, on Linux, how long the loop thread ran, how long it
waited for a CPU (a machine too busy to run the process: no code of ours to blame) and how long
it was blocked (the GIL held by another thread, or a blocking call). Each stall is
observed in the ``ringmon_event_loop_stall_seconds`` histogram, which ``register`` adds to a
process's metrics registry (on a selector loop every one, also those over before the thread
looked: counted, not described).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import gc
import logging
import os
import sys
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, Histogram

log = logging.getLogger("ringmon.loop")
STALL_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


def _source_line(filename: str, lineno: int | None) -> str:
    """Line ``lineno`` of a source file, read from the file (empty when it cannot be read)."""
    if not lineno:
        return ""
    try:
        with open(filename, encoding="utf-8", errors="replace") as f:
            for i, line in enumerate(f, 1):
                if i == lineno:
                    return line
    except OSError:
        pass
    return ""


def format_stack(frame: Any) -> str:
    """``traceback.format_stack(frame)`` without ``linecache``, which would keep every line of
    every file on the stack for the life of the process (1.6 MiB in a scraper after the stalls
    of its first scrapes)."""
    frames = traceback.StackSummary.extract(traceback.walk_stack(frame), lookup_lines=False)
    frames.reverse()
    return "".join(traceback.StackSummary.from_list([
        traceback.FrameSummary(f.filename, f.lineno, f.name, lookup_line=False, line=_source_line(f.filename, f.lineno))
        for f in frames
    ]).format())


@dataclass
class Stall:
    """One stall: how long the loop did not beat, where its thread was when the watchdog
    noticed, and what the process did meanwhile (seconds; ``None``: not known here)."""

    seconds: float
    loop_stack: str
    gc_s: float = 0.0
    ran_s: float | None = None  # the loop thread on a CPU
    cpu_wait_s: float | None = None  # the loop thread runnable, waiting for a CPU

    @property
    def blocked_s(self) -> float | None:
        """The rest: the loop thread neither ran nor waited for a CPU (it waited for the GIL, or
        was blocked in a call: a sleep, a lock, a page fault)."""
        if self.ran_s is None or self.cpu_wait_s is None:
            return None
        return max(0.0, self.seconds - self.ran_s - self.cpu_wait_s)

    def describe(self) -> str:
        parts = [f"event loop stalled for {self.seconds * 1000:.0f} ms"]
        if self.gc_s:
            parts.append(f"garbage collection {self.gc_s * 1000:.0f} ms")
        if self.ran_s is not None and self.cpu_wait_s is not None:
            parts.append(f"loop thread ran {self.ran_s * 1000:.0f} ms, waited for a CPU {self.cpu_wait_s * 1000:.0f} ms, "
                         f"blocked {(self.blocked_s or 0.0) * 1000:.0f} ms")
        return "; ".join(parts) + "; the loop thread was in:\n" + self.loop_stack


def _schedstat_reader(native_id: int) -> Callable[[], tuple[float, float] | None]:
    """(seconds on a CPU, seconds waiting for one) of a thread, from Linux's schedstat."""
    try:
        fd = os.open(f"/proc/self/task/{native_id}/schedstat", os.O_RDONLY)
    except OSError:
        return lambda: None

    def read() -> tuple[float, float] | None:
        try:
            run, wait, _ = os.pread(fd, 128, 0).split()
        except (OSError, ValueError):
            return None
        return int(run) / 1e9, int(wait) / 1e9

    return read


class _StampingSelector:
    """A loop's selector that stamps a ``LoopWatchdog`` when the loop enters and leaves
    ``select``; everything else goes to the selector it wraps."""

    def __init__(self, inner: Any, dog: LoopWatchdog) -> None:
        self.inner = inner
        self._dog = dog

    def select(self, timeout: float | None = None) -> Any:
        dog = self._dog
        busy = time.monotonic() - dog._last
        if busy > dog.threshold_s:
            dog._ended.append((dog._last, busy))
            dog.histogram.observe(busy)
        dog._idle = True
        try:
            return self.inner.select(timeout)
        finally:
            dog._last = time.monotonic()  # before _idle: a watchdog that sees it busy sees this stamp
            dog._idle = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


@dataclass
class LoopWatchdog:
    """``start()`` on the loop's thread, ``stop()`` when done. ``stalls`` lists the last
    ``keep`` stalls (newest last); ``on_stall`` runs in the watchdog thread for each."""

    threshold_s: float = 0.05
    # the thread's looks per second cost CPU in every process: each takes the GIL from a busy
    # loop thread (issue #20: at 20 a second, ~225 us each in the standalone process at 100,000
    # series every 5 s, 0.23 us per stored sample); with the heartbeat of a loop that is not a
    # selector loop, as many wake-ups of the loop. A stall shorter than this can end unseen:
    # the selector counts it in the histogram, without a stack.
    tick_s: float = 0.25
    keep: int = 32
    on_stall: Callable[[Stall], None] | None = None
    stalls: list[Stall] = field(default_factory=list)
    histogram: Histogram = field(default_factory=lambda: Histogram(
        "ringmon_event_loop_stall_seconds",
        "Stalls of the process's event loop longer than the watchdog's threshold (50 ms): no callback ran.",
        buckets=STALL_BUCKETS, registry=None))
    _last: float = 0.0  # the last beat, or when the loop last left select
    _idle: bool = False  # the loop is in select (selector stamps only)
    _ended: collections.deque[tuple[float, float]] = field(default_factory=lambda: collections.deque(maxlen=8))
    _selector: _StampingSelector | None = None
    _loop: asyncio.AbstractEventLoop | None = None
    _gc_s: float = 0.0
    _gc_started: float = 0.0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _handle: asyncio.TimerHandle | None = None

    def register(self, registry: CollectorRegistry) -> LoopWatchdog:
        registry.register(self.histogram)
        return self

    def start(self) -> LoopWatchdog:
        self._loop = loop = asyncio.get_running_loop()
        self._last = time.monotonic()
        inner = getattr(loop, "_selector", None)
        if callable(getattr(inner, "select", None)):
            self._selector = _StampingSelector(inner, self)
            setattr(loop, "_selector", self._selector)  # noqa: B010 - asyncio's own attribute, wrapped
        else:
            self._beat(loop)
        gc.callbacks.append(self._gc_timer)
        schedstat = _schedstat_reader(threading.get_native_id())
        self._thread = threading.Thread(target=self._watch, args=(threading.get_ident(), schedstat),
                                        name="loop-watchdog", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._handle is not None:
            self._handle.cancel()
        wrapped = self._selector
        if wrapped is not None:
            inner = wrapped.inner
            if getattr(self._loop, "_selector", None) is wrapped:
                setattr(self._loop, "_selector", inner)  # noqa: B010 - put back what start wrapped
        with contextlib.suppress(ValueError):
            gc.callbacks.remove(self._gc_timer)
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _beat(self, loop: asyncio.AbstractEventLoop) -> None:
        self._last = time.monotonic()
        if not self._stop.is_set():
            self._handle = loop.call_later(self.tick_s, self._beat, loop)

    def _gc_timer(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._gc_started = time.perf_counter()
        elif self._gc_started:
            self._gc_s += time.perf_counter() - self._gc_started

    def _length(self, since: float, last: float) -> float:
        """How long the stall that started at ``since`` lasted (``last``: the stamp that ended it)."""
        if self._selector is None:
            return max(0.0, last - since - self.tick_s)  # beats: the stall is the late part of the gap
        return next((busy for start, busy in tuple(self._ended) if start == since), max(0.0, last - since))

    def _watch(self, loop_thread: int, schedstat: Callable[[], tuple[float, float] | None]) -> None:
        stall: Stall | None = None
        since = 0.0
        sched = before = schedstat()
        gc_before = 0.0
        late_s = self.threshold_s + (0.0 if self._selector is not None else self.tick_s)
        while True:
            time.sleep(self.tick_s)  # cheaper than a timed wait on the stop event (~40 against ~100 us)
            if self._stop.is_set():
                return
            last = self._last
            idle = self._idle
            if stall is None:
                if idle or time.monotonic() - last <= late_s:
                    sched, gc_before = schedstat(), self._gc_s
                    continue
                frame = sys._current_frames().get(loop_thread)
                stack = format_stack(frame) if frame is not None else "(no frame)\n"
                stall, since, before = Stall(0.0, stack), last, sched
            elif idle or last > since:  # the step is over (the loop beat again)
                stall.seconds = self._length(since, last)
                stall.gc_s = self._gc_s - gc_before
                after = schedstat()
                if before is not None and after is not None:
                    stall.ran_s, stall.cpu_wait_s = after[0] - before[0], after[1] - before[1]
                self._report(stall)
                stall, sched, gc_before = None, after, self._gc_s

    def _report(self, stall: Stall) -> None:
        self.stalls = [*self.stalls[-(self.keep - 1):], stall]
        if self._selector is None:  # (a selector loop's stalls are observed as they end)
            self.histogram.observe(stall.seconds)
        log.warning(stall.describe())
        if self.on_stall is not None:
            self.on_stall(stall)
