"""Go's ``/debug/pprof/`` endpoints over the Python process, for ``promtool debug pprof|all``
and ``go tool pprof``: profiles in google/pprof's format (``web/pprof_profile.py``).

- ``profile?seconds=N``: samples every thread's Python stack (``sys._current_frames``) at
  ~100 Hz in a thread of its own, never on the event loop. Wall-clock sampling: a thread
  waiting (the event loop in ``select``) is sampled too. ``seconds`` is capped by
  ``web.pprof_max_seconds`` (the profile says so in a comment and the
  ``X-Ringmon-Profile-Seconds`` header); one CPU profile at a time (another is 429); the
  sampler's own CPU time is held to a tenth of the interval by stretching the interval.
- ``heap`` / ``allocs``: ``tracemalloc``'s snapshot when tracing is on (``PYTHONTRACEMALLOC=N``);
  otherwise a profile without samples whose comment says how to turn it on.
- ``goroutine``: the current stacks of the threads and of the event loop's asyncio tasks.
- ``block``, ``mutex``, ``threadcreate``: valid profiles without samples (Python keeps no such
  record); ``trace``: 501 with a line of text (Go's execution tracer has no Python equivalent).
"""

from __future__ import annotations

import asyncio
import html
import logging
import sys
import threading
import time
import tracemalloc
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from types import CodeType, FrameType
from typing import Any

from aiohttp import web

from web.pprof_profile import Frame, ProfileBuilder

log = logging.getLogger("ringmon.web.pprof")

SAMPLE_HZ = 100
MAX_DEPTH = 128  # frames kept per stack (the leaf end)
MAX_TASKS = 10_000  # asyncio tasks in one goroutine profile
MAX_HEAP_SAMPLES = 20_000  # tracemalloc statistics in one heap profile (the largest)
SAMPLER_CPU_SHARE = 0.1  # the sampler's CPU time per interval, at most
# Not started on request: tracing made allocation-heavy code 6.5x (1 frame) to 15x (25 frames) as
# dear in CPU for the whole process (building 1 M small dicts, min of 3, 2026-12-06 at load 7).
TRACEMALLOC_HINT = ("tracemalloc is off: start Ringmon with PYTHONTRACEMALLOC=25 (or python -X tracemalloc=25) "
                    "for heap profiles; tracing makes allocations several times dearer and holds a traceback "
                    "per live block, so Ringmon never turns it on by itself")

_Key = tuple[str, CodeType, int]  # (module, code, line): one frame, resolved to a Frame at encode time


@dataclass(frozen=True)
class PprofSettings:
    """``web.pprof`` (serve the endpoints) and ``web.pprof_max_seconds`` (cap of ``seconds``)."""

    max_seconds: float = 30.0
    hz: int = SAMPLE_HZ


def _frame_of(key: _Key) -> Frame:
    module, code, line = key
    return Frame(f"{module}.{code.co_qualname}", code.co_filename, code.co_firstlineno, line)


def _stack_keys(frame: FrameType | None) -> tuple[_Key, ...]:
    """A thread's stack, leaf first, at most MAX_DEPTH frames."""
    out: list[_Key] = []
    while frame is not None and len(out) < MAX_DEPTH:
        out.append((str(frame.f_globals.get("__name__", "?")), frame.f_code, frame.f_lineno or 0))
        frame = frame.f_back
    return tuple(out)


def _thread_names() -> dict[int, str]:
    return {t.ident: t.name for t in threading.enumerate() if t.ident is not None}


# -- CPU (wall-clock stack sampling) ---------------------------------------------------------


@dataclass
class CpuSamples:
    """What one sampling run saw: (thread name, stack) -> nanoseconds of wall clock."""

    seconds: float = 0.0
    ticks: int = 0
    sampler_cpu_s: float = 0.0
    stretched: int = 0  # ticks after which the interval grew to keep the sampler's share
    weights: Counter[tuple[str, tuple[_Key, ...]]] = field(default_factory=Counter)
    counts: Counter[tuple[str, tuple[_Key, ...]]] = field(default_factory=Counter)


def sample_stacks(seconds: float, hz: int, stop: threading.Event) -> CpuSamples:
    """Sample every other thread's stack ``hz`` times a second for ``seconds`` (blocking: run
    it in a thread of its own). A tick costing more than SAMPLER_CPU_SHARE of the interval
    stretches the next wait, so the sampler never takes more than that share of a CPU."""
    me = threading.get_ident()
    base = 1.0 / hz
    out = CpuSamples()
    start = last = time.monotonic()
    end = start + seconds
    cpu0 = time.thread_time()
    while not stop.is_set():
        now = time.monotonic()
        if now >= end:
            break
        tick_cpu = time.thread_time()
        weight = int((now - last) * 1e9) if out.ticks else int(base * 1e9)
        last = now
        names = _thread_names()
        for tid, stack in [(tid, _stack_keys(f)) for tid, f in sys._current_frames().items() if tid != me]:
            key = (names.get(tid, f"thread-{tid}"), stack)  # no frame object outlives the tick
            out.counts[key] += 1
            out.weights[key] += weight
        out.ticks += 1
        cost = time.thread_time() - tick_cpu
        wait = base
        if cost > base * SAMPLER_CPU_SHARE:
            wait = cost / SAMPLER_CPU_SHARE
            out.stretched += 1
        stop.wait(max(0.0, min(wait, end - time.monotonic())))
    out.seconds = time.monotonic() - start
    out.sampler_cpu_s = time.thread_time() - cpu0
    return out


def cpu_profile(samples: CpuSamples, hz: int, asked: float, capped: float) -> bytes:
    prof = ProfileBuilder([("samples", "count"), ("wall", "nanoseconds")], ("wall", "nanoseconds"),
                          period=1_000_000_000 // hz)
    prof.time_nanos = time.time_ns() - int(samples.seconds * 1e9)
    prof.duration_nanos = int(samples.seconds * 1e9)
    prof.comments.append(f"ringmon: Python thread stacks sampled at {hz} Hz (wall clock: waiting threads count too)")
    if capped < asked:
        prof.comments.append(f"ringmon: {asked:g} s asked, {capped:g} s sampled (web.pprof_max_seconds)")
    prof.comments.append(f"ringmon: {samples.ticks} ticks, sampler CPU {samples.sampler_cpu_s * 1000:.0f} ms,"
                         f" interval stretched {samples.stretched} times")
    for (thread, stack), n in samples.counts.items():
        prof.add([_frame_of(k) for k in stack], [n, samples.weights[(thread, stack)]], {"thread": thread})
    return prof.encode()


# -- goroutine (threads and tasks), heap, the empty ones --------------------------------------


def current_stacks() -> list[tuple[dict[str, str], tuple[_Key, ...]]]:
    """(labels, stack) of every thread and of the running loop's tasks (call on the loop)."""
    out: list[tuple[dict[str, str], tuple[_Key, ...]]] = []
    names = _thread_names()
    for tid, frame in sys._current_frames().items():
        out.append(({"kind": "thread", "name": names.get(tid, f"thread-{tid}")}, _stack_keys(frame)))
    try:
        tasks = list(asyncio.all_tasks())
    except RuntimeError:  # no running loop
        tasks = []
    current = asyncio.current_task() if tasks else None
    for task in tasks[:MAX_TASKS]:
        if task is current:  # running: its coroutine awaits nothing, the thread's stack is its stack
            keys = _stack_keys(sys._getframe())
        else:
            frames = task.get_stack(limit=MAX_DEPTH)  # outermost first
            keys = tuple((str(f.f_globals.get("__name__", "?")), f.f_code, f.f_lineno or 0) for f in reversed(frames))
        out.append(({"kind": "task", "name": task.get_name()}, keys))
    if len(tasks) > MAX_TASKS:
        out.append(({"kind": "truncated", "name": f"{len(tasks) - MAX_TASKS} more tasks"}, ()))
    return out


def goroutine_profile(stacks: Iterable[tuple[dict[str, str], tuple[_Key, ...]]]) -> bytes:
    prof = ProfileBuilder([("goroutine", "count")], ("goroutine", "count"), period=1)
    prof.comments.append("ringmon: the current stacks of the Python threads (kind=thread) and asyncio tasks (kind=task)")
    for labels, stack in stacks:
        prof.add([_frame_of(k) for k in stack], [1], labels)
    return prof.encode()


def heap_profile() -> bytes:
    """tracemalloc's live blocks by traceback (blocking: takes the snapshot; run off the loop)."""
    prof = ProfileBuilder([("inuse_objects", "count"), ("inuse_space", "bytes")], ("space", "bytes"))
    if not tracemalloc.is_tracing():
        prof.comments.append(f"ringmon: {TRACEMALLOC_HINT}")
        return prof.encode()
    stats = tracemalloc.take_snapshot().statistics("traceback")  # largest first
    prof.comments.append(f"ringmon: tracemalloc snapshot, {tracemalloc.get_traceback_limit()} frames per traceback;"
                         " functions are named by file (tracemalloc records file and line only)")
    if len(stats) > MAX_HEAP_SAMPLES:
        prof.comments.append(f"ringmon: the {MAX_HEAP_SAMPLES} largest of {len(stats)} tracebacks")
    for stat in stats[:MAX_HEAP_SAMPLES]:
        stack = [Frame(f.filename, f.filename, 0, f.lineno) for f in reversed(list(stat.traceback))]
        prof.add(stack, [stat.count, stat.size])
    return prof.encode()


EMPTY: dict[str, tuple[list[tuple[str, str]], str]] = {
    "block": ([("contentions", "count"), ("delay", "nanoseconds")],
              "Python records no blocking events: this profile has no samples"),
    "mutex": ([("contentions", "count"), ("delay", "nanoseconds")],
              "Python records no lock contention: this profile has no samples"),
    "threadcreate": ([("threadcreate", "count")],
                     "Python records no thread creation stacks: this profile has no samples (see goroutine)"),
}


def empty_profile(kind: str) -> bytes:
    types, comment = EMPTY[kind]
    prof = ProfileBuilder(types, types[0])
    prof.comments.append(f"ringmon: {comment}")
    return prof.encode()


# -- HTTP --------------------------------------------------------------------------------------

INDEX = [
    ("allocs", "the same as heap (tracemalloc's live blocks)"),
    ("block", "empty: Python records no blocking events"),
    ("goroutine", "stacks of the threads and asyncio tasks"),
    ("heap", "tracemalloc's live blocks by traceback, when tracing is on"),
    ("mutex", "empty: Python records no lock contention"),
    ("profile", "thread stacks sampled at 100 Hz for ?seconds= (capped by web.pprof_max_seconds)"),
    ("threadcreate", "empty: Python records no thread creation stacks"),
    ("trace", "501: Go's execution tracer has no Python equivalent"),
]


def _profile_response(body: bytes, name: str, **headers: str) -> web.Response:
    return web.Response(body=body, content_type="application/octet-stream",
                        headers={"Content-Disposition": f'attachment; filename="{name}"',
                                 "X-Content-Type-Options": "nosniff", **headers})


@dataclass
class PprofHandlers:
    settings: PprofSettings
    _cpu_busy: threading.Lock = field(default_factory=threading.Lock)

    async def index(self, request: web.Request) -> web.Response:
        rows = "".join(f'<tr><td><a href="{name}">{name}</a></td><td>{html.escape(what)}</td></tr>'
                       for name, what in INDEX)
        page = (f"<!DOCTYPE html><html><head><title>/debug/pprof/</title></head><body><h1>/debug/pprof/</h1>"
                f"<p>Profiles of this Ringmon process in google/pprof's format (<code>go tool pprof</code>,"
                f" <code>promtool debug pprof</code>). CPU profiles last at most"
                f" {self.settings.max_seconds:g} s.</p><table>{rows}</table></body></html>")
        return web.Response(text=page, content_type="text/html")

    async def profile(self, request: web.Request) -> web.Response:
        text = request.query.get("seconds", "")
        try:
            asked = float(text) if text else 30.0
        except ValueError:
            asked = -1.0
        if not 0 < asked < float("inf"):
            raise web.HTTPBadRequest(text=f"seconds: expected a positive number of seconds, got {text!r}\n")
        seconds = min(asked, self.settings.max_seconds)
        if not self._cpu_busy.acquire(blocking=False):
            raise web.HTTPTooManyRequests(text="a CPU profile is already being taken; try again when it is done\n")
        stop = threading.Event()
        try:
            samples = await _in_thread(lambda: sample_stacks(seconds, self.settings.hz, stop), "ringmon-pprof-cpu")
        except asyncio.CancelledError:
            stop.set()  # the client went away: the sampler ends at its next tick
            raise
        finally:
            self._cpu_busy.release()
        body = await asyncio.to_thread(cpu_profile, samples, self.settings.hz, asked, seconds)
        return _profile_response(body, "profile", **{"X-Ringmon-Profile-Seconds": f"{samples.seconds:.3f}"})

    async def goroutine(self, request: web.Request) -> web.Response:
        stacks = current_stacks()  # on the loop: the tasks are the loop's
        return _profile_response(await asyncio.to_thread(goroutine_profile, stacks), "goroutine")

    async def heap(self, request: web.Request) -> web.Response:
        return _profile_response(await asyncio.to_thread(heap_profile), request.match_info.get("kind", "heap"))

    async def empty(self, request: web.Request) -> web.Response:
        kind = request.match_info["kind"]
        return _profile_response(empty_profile(kind), kind)

    async def trace(self, request: web.Request) -> web.Response:
        return web.Response(status=501, text="ringmon: Go's execution tracer has no Python equivalent;"
                                             " see /debug/pprof/profile and /debug/pprof/goroutine\n")


async def _in_thread(fn: Callable[[], CpuSamples], name: str) -> CpuSamples:
    """``fn()`` in a new daemon thread (not the default executor: a profile holds it for seconds)."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[CpuSamples] = loop.create_future()

    def settle(result: Any, error: BaseException | None) -> None:
        if done.done():
            return
        if error is not None:
            done.set_exception(error)
        else:
            done.set_result(result)

    def run() -> None:
        try:
            outcome: tuple[Any, BaseException | None] = (fn(), None)
        except BaseException as exc:  # noqa: BLE001 - handed to the waiting request
            outcome = (None, exc)
        try:
            loop.call_soon_threadsafe(settle, *outcome)
        except RuntimeError:  # the loop closed meanwhile (shutdown): nobody waits any more
            pass

    threading.Thread(target=run, name=name, daemon=True).start()
    return await done


def add_pprof_routes(app: web.Application, settings: PprofSettings) -> None:
    """Mount ``/debug/pprof/*``."""
    h = PprofHandlers(settings)
    app.router.add_get("/debug/pprof", h.index)
    app.router.add_get("/debug/pprof/", h.index)
    app.router.add_get("/debug/pprof/profile", h.profile)
    app.router.add_get("/debug/pprof/goroutine", h.goroutine)
    app.router.add_get("/debug/pprof/{kind:heap|allocs}", h.heap)
    app.router.add_get("/debug/pprof/{kind:block|mutex|threadcreate}", h.empty)
    app.router.add_get("/debug/pprof/trace", h.trace)


__all__ = ["PprofSettings", "add_pprof_routes", "cpu_profile", "sample_stacks", "current_stacks", "goroutine_profile",
           "heap_profile", "empty_profile"]
