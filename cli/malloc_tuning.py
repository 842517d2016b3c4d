"""glibc malloc thresholds for Ringmon's processes: keep freed memory for the next query.

A query over 800 series allocates tens of megabytes of NumPy arrays and bytes and frees
them when it answers. glibc serves blocks above its mmap threshold (128 KiB, adjusted up to
32 MiB) with fresh mappings and gives the top of the heap back to the system above its
trim threshold, so the next query takes a page fault for every 4 KiB it touches again: on
our 2-core VM that was a fifth of a 24 h panel's time (measured 125-150 ms against
105-120 ms with these settings). ``tune_malloc`` raises both thresholds: blocks up to
256 MiB come from the heap, and up to 512 MiB of freed heap stays with the process. It also
keeps every thread on that one heap (``M_ARENA_MAX`` 1): glibc gives other threads arenas of
64 MiB heaps, mapped and unmapped whole as a query's blocks come and go, whatever the
thresholds, and a query's copies happen off the event loop (SQLite's reader thread joins
the chunks, an executor thread evaluates): 7 joins of 4,800 chunks into 13 MiB columns took
43-63 ms in a thread against 11-12 ms on the main thread's heap (the GIL serializes most
allocations anyway, so one arena's lock costs little).

``RINGMON_MALLOC_TUNING=off`` leaves glibc's defaults; on a libc without ``mallopt`` (musl,
macOS) nothing changes.

A scraper is the other way round: it answers no queries, and a warm-up or take-over (the
first scrapes of many targets: full parses, series index writes) frees hundreds of megabytes
it will not need again. Kept, that was most of its RSS (``bench/load.py``: ~700 MiB for 100k
series where its live objects were ~100 MiB). ``ringmon scraper`` skips the thresholds and
runs ``trim_periodically``: ``malloc_trim(0)`` gives free pages back, from the middle of
the heaps too.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import functools
import os

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
M_ARENA_MAX = -8
MMAP_THRESHOLD_BYTES = 256 << 20
TRIM_THRESHOLD_BYTES = 512 << 20


@functools.cache
def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    if not name:
        return None
    try:
        return ctypes.CDLL(name)
    except OSError:
        return None


def tune_malloc() -> bool:
    """Apply the thresholds (once per process is enough); whether they were applied."""
    if os.environ.get("RINGMON_MALLOC_TUNING", "").lower() in ("off", "0", "false", "no"):
        return False
    libc = _libc()
    mallopt = getattr(libc, "mallopt", None)
    if mallopt is None:
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return (
        bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES))
        and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES))
        and bool(mallopt(M_ARENA_MAX, 1))
    )


def one_arena() -> bool:
    """Keep every thread on the main heap (``M_ARENA_MAX`` 1) and glibc's other defaults: the
    scraper's (issue #20 memory). Its driver, ZooKeeper and executor threads otherwise get
    arenas of their own, each a heap that ``malloc_trim`` gives back only in part. Applies to
    arenas made after the call: call it before the threads start. Whether it was applied."""
    if os.environ.get("RINGMON_MALLOC_TUNING", "").lower() in ("off", "0", "false", "no"):
        return False
    mallopt = getattr(_libc(), "mallopt", None)
    if mallopt is None:
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(mallopt(M_ARENA_MAX, 1))


def trim_malloc() -> bool:
    """Give the free memory of glibc's heaps back to the system (``malloc_trim(0)``); whether
    any was released. It holds each arena's lock while it walks it, not the GIL."""
    trim = getattr(_libc(), "malloc_trim", None)
    if trim is None:
        return False
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return bool(trim(0))


async def trim_periodically(interval_s: float = 30.0) -> None:
    """``trim_malloc`` every ``interval_s`` in an executor thread, until cancelled."""
    loop = asyncio.get_running_loop()
    while True:
        await asyncio.sleep(interval_s)
        await loop.run_in_executor(None, trim_malloc)
