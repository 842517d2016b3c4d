"""A watchdog of the asyncio event loop: notices when the loop is late and says what held it.

A heartbeat callback on the loop stamps the time every ``tick_s``; a daemon thread checks
the stamp. When it is older than ``threshold_s`` the loop is stalled. The thread samples the
loop thread's stack then and, once the loop beats again, logs one warning with the stall's
length, that stack, the time garbage collections took meanwhile (they hold the GIL, in
whichever thread they run) and, on Linux, how long the loop thread ran, how long it waited for
a CPU (a machine too busy to run the process: no code of ours to blame) and how long it was
blocked (the GIL held by another thread, or a blocking call). Each stall is
observed in the ``ringmon_event_loop_stall_seconds`` histogram, which ``register`` adds to a
process's metrics registry.
"""

from __future__ import annotations

import asyncio
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

from prometheus_client import CollectorRegistry, Histogram

log = logging.getLogger("ringmon.loop")
STALL_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


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


@dataclass
class LoopWatchdog:
    """``start()`` on the loop's thread, ``stop()`` when done. ``stalls`` lists the last
    ``keep`` stalls (newest last); ``on_stall`` runs in the watchdog thread for each."""

    threshold_s: float = 0.05
    tick_s: float = 0.025  # beats and looks per second cost CPU in every process: 40 of each
    keep: int = 32
    on_stall: Callable[[Stall], None] | None = None
    stalls: list[Stall] = field(default_factory=list)
    histogram: Histogram = field(default_factory=lambda: Histogram(
        "ringmon_event_loop_stall_seconds",
        "Stalls of the process's event loop longer than the watchdog's threshold (50 ms): no callback ran.",
        buckets=STALL_BUCKETS, registry=None))
    _last: float = 0.0
    _gc_s: float = 0.0
    _gc_started: float = 0.0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _handle: asyncio.TimerHandle | None = None

    def register(self, registry: CollectorRegistry) -> LoopWatchdog:
        registry.register(self.histogram)
        return self

    def start(self) -> LoopWatchdog:
        loop = asyncio.get_running_loop()
        self._last = time.monotonic()
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

    def _watch(self, loop_thread: int, schedstat: Callable[[], tuple[float, float] | None]) -> None:
        stall: Stall | None = None
        since = 0.0
        sched = before = schedstat()
        gc_before = 0.0
        while not self._stop.wait(self.tick_s):
            last = self._last
            if stall is None:
                if time.monotonic() - last - self.tick_s <= self.threshold_s:
                    sched, gc_before = schedstat(), self._gc_s
                    continue
                frame = sys._current_frames().get(loop_thread)
                stack = "".join(traceback.format_stack(frame)) if frame is not None else "(no frame)\n"
                stall, since, before = Stall(0.0, stack), last, sched
            elif last > since:  # the loop beat again
                stall.seconds = max(0.0, last - since - self.tick_s)
                stall.gc_s = self._gc_s - gc_before
                after = schedstat()
                if before is not None and after is not None:
                    stall.ran_s, stall.cpu_wait_s = after[0] - before[0], after[1] - before[1]
                self._report(stall)
                stall, sched, gc_before = None, after, self._gc_s

    def _report(self, stall: Stall) -> None:
        self.stalls = [*self.stalls[-(self.keep - 1):], stall]
        self.histogram.observe(stall.seconds)
        log.warning(stall.describe())
        if self.on_stall is not None:
            self.on_stall(stall)
