"""Evaluation of big queries in forked worker processes that can be killed.

``Isolator.run(fn, deadline)`` forks the serving process: the child already holds the
fetched series (copy-on-write, nothing is serialised on the way in), lowers its priority,
caps the memory it may add (``RLIMIT_DATA``), runs ``fn`` and sends the pickled result back
through a pipe (an answer the engine already encoded travels raw after it, so the parent
holds one copy), then exits. The parent awaits the pipe on its event loop, so scrapes, rule
groups and the web server keep their cadence whatever the child computes; at the deadline
the child is killed (SIGKILL), which ends any evaluation, NumPy calls included. A child
that runs out of its memory budget reports a QueryMemoryError. At most ``max_concurrency``
children run at once; further queries wait their turn (within their own deadline).

Why processes and not threads: the engine's Python loops (aggregations, label functions,
per-series window searches) hold the GIL, and a thread cannot be stopped or capped in
memory; a forked child is all three. Fork must happen on the event loop's thread.
"""

from __future__ import annotations

import asyncio
import gc
import os
import pickle
import resource
import signal
import time
from collections.abc import Callable
from typing import Any, TypeVar, cast

from query.errors import QueryError, QueryMemoryError, QueryTimeoutError

CHILD_NICENESS = 10
_READ_CHUNK = 1 << 20
T = TypeVar("T")


def _vm_data_bytes() -> int:
    """This process's data segment size (what RLIMIT_DATA measures), from /proc."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmData:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _child(fn: Callable[[], Any], wfd: int, memory_bytes: int) -> None:
    """Run in the forked child: evaluate, write (kind, payload) pickled to ``wfd``, exit."""
    code = 0
    try:
        signal.set_wakeup_fd(-1)  # the parent's event loop owns that socket
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, signal.SIG_DFL)
        gc.disable()  # a collection would touch (copy) every page of the parent's heap
        try:
            os.nice(CHILD_NICENESS)
        except OSError:
            pass
        if memory_bytes > 0:
            limit = _vm_data_bytes() + memory_bytes
            _, hard = resource.getrlimit(resource.RLIMIT_DATA)
            if hard != resource.RLIM_INFINITY:
                limit = min(limit, hard)
            resource.setrlimit(resource.RLIMIT_DATA, (limit, hard))
        try:
            out: tuple[str, Any] = ("ok", fn())
        except MemoryError:
            out = ("memory", None)
        except QueryError as exc:
            out = ("error", (type(exc).__name__, exc.error_type, str(exc)))
        except RecursionError:
            out = ("error", ("QueryError", "execution", "query is nested too deeply to evaluate"))
        except OverflowError:
            out = ("error", ("QueryInputError", "bad_data", "query times out of range"))
        except BaseException as exc:  # noqa: BLE001 - reported to the parent, which logs it
            out = ("crash", f"{type(exc).__name__}: {exc}")
        # An answer already encoded (bytes in ``.encoded``) travels after the pickle, raw, so
        # that the parent keeps one copy of it.
        tail = getattr(out[1], "encoded", None) if out[0] == "ok" else None
        if isinstance(tail, bytes):
            out[1].encoded = None
        else:
            tail = b""
        try:
            head = pickle.dumps(out, protocol=pickle.HIGHEST_PROTOCOL)
        except MemoryError:
            head, tail = pickle.dumps(("memory", None)), b""
        for data in (len(head).to_bytes(8, "little"), head, tail):
            view = memoryview(data)
            while view:
                n = os.write(wfd, view[:_READ_CHUNK])
                view = view[n:]
    except BaseException:  # noqa: BLE001 - nothing may escape a forked child
        code = 1
    finally:
        os._exit(code)


class _Remote(QueryError):
    """A QueryError raised in a child, rebuilt in the parent with its error type."""


class Isolator:
    """Runs callables in forked children, ``max_concurrency`` at once."""

    def __init__(self, max_concurrency: int = 4, memory_bytes: int = 1 << 30) -> None:
        self.max_concurrency = max(1, max_concurrency)
        self.memory_bytes = memory_bytes
        # One semaphore per event loop (an engine may serve several loops one after another).
        self._slots: tuple[asyncio.AbstractEventLoop, asyncio.Semaphore] | None = None
        self.running = 0
        self.last_pid = 0  # the last child forked (tests)

    async def run(self, fn: Callable[[], T], deadline: float, what: str = "query") -> T:
        """``fn()`` in a child; QueryTimeoutError at ``deadline`` (time.monotonic)."""
        loop = asyncio.get_running_loop()
        if self._slots is None or self._slots[0] is not loop:
            self._slots = (loop, asyncio.Semaphore(self.max_concurrency))
        slots = self._slots[1]
        remaining = deadline - time.monotonic()
        try:
            await asyncio.wait_for(slots.acquire(), timeout=max(remaining, 0.001))
        except TimeoutError:
            raise QueryTimeoutError(f"{what} timed out waiting for an evaluation slot") from None
        self.running += 1
        try:
            return await self._fork(fn, deadline, what)
        finally:
            self.running -= 1
            slots.release()

    async def _fork(self, fn: Callable[[], T], deadline: float, what: str) -> T:
        loop = asyncio.get_running_loop()
        rfd, wfd = os.pipe()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child never returns
            os.close(rfd)
            _child(fn, wfd, self.memory_bytes)
        self.last_pid = pid
        os.close(wfd)
        os.set_blocking(rfd, False)
        buf = bytearray()
        done = loop.create_future()

        def readable() -> None:
            try:
                while True:
                    b = os.read(rfd, _READ_CHUNK)
                    if not b:
                        if not done.done():
                            done.set_result(None)
                        return
                    buf.extend(b)
            except BlockingIOError:
                return
            except OSError as exc:
                if not done.done():
                    done.set_exception(exc)

        loop.add_reader(rfd, readable)
        killed = False
        try:
            await asyncio.wait_for(asyncio.shield(done), timeout=max(deadline - time.monotonic(), 0.001))
        except (TimeoutError, asyncio.CancelledError) as exc:
            killed = True
            _kill(pid)
            if isinstance(exc, asyncio.CancelledError):
                raise
            raise QueryTimeoutError(f"{what} timed out in expression evaluation") from None
        finally:
            loop.remove_reader(rfd)
            os.close(rfd)
            if killed:
                await _reap(pid)
        status = await _reap(pid)
        if os.WIFSIGNALED(status) or len(buf) < 8:
            raise QueryMemoryError(
                f"{what} evaluation ended without an answer (status {status}); "
                f"the memory budget is {self.memory_bytes >> 20} MiB per query"
            )
        n = int.from_bytes(buf[:8], "little")
        kind, payload = pickle.loads(memoryview(buf)[8 : 8 + n])
        if kind == "ok":
            if len(buf) > 8 + n:
                payload.encoded = memoryview(buf)[8 + n :]
            return cast(T, payload)  # what fn returned, unpickled
        if kind == "memory":
            raise QueryMemoryError(
                f"query processing would exceed the memory budget of {self.memory_bytes >> 20} MiB "
                f"per query in query execution"
            )
        if kind == "error":
            _name, error_type, message = payload
            err = _Remote(message)
            err.error_type = error_type
            raise err
        raise QueryError(f"evaluation failed: {payload}")


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


async def _reap(pid: int) -> int:
    """Wait for the child to exit without blocking the loop; its wait status."""
    for delay in (0.0, 0.001, 0.005, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 1.0, 2.0, 5.0):
        try:
            got, status = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            return 0
        if got:
            return status
        await asyncio.sleep(delay)
    _kill(pid)
    return (await asyncio.to_thread(os.waitpid, pid, 0))[1]
