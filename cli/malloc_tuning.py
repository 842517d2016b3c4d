"""glibc malloc thresholds for Ringmon's processes: keep freed memory for the next query.

A query over 800 series allocates tens of megabytes of NumPy arrays and bytes and frees
them when it answers. glibc serves blocks above its mmap threshold (128 KiB, adjusted up to
32 MiB) with fresh mappings and gives the top of the heap back to the system above its
trim threshold, so the next query takes a page fault for every 4 KiB it touches again: on
our 2-core VM that was a fifth of a 24 h panel's time (measured 125-150 ms against
105-120 ms with these settings). ``tune_malloc`` raises both thresholds: blocks up to
256 MiB come from the heap, and up to 512 MiB of freed heap stays with the process.

``RINGMON_MALLOC_TUNING=off`` leaves glibc's defaults; on a libc without ``mallopt`` (musl,
macOS) nothing changes.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_BYTES = 256 << 20
TRIM_THRESHOLD_BYTES = 512 << 20


def tune_malloc() -> bool:
    """Apply the thresholds (once per process is enough); whether they were applied."""
    if os.environ.get("RINGMON_MALLOC_TUNING", "").lower() in ("off", "0", "false", "no"):
        return False
    name = ctypes.util.find_library("c")
    if not name:
        return False
    try:
        mallopt = ctypes.CDLL(name).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES))
