"""The engine's compiled kernels (``query.kernels_numba``), loaded once per process when a big
query first wants them, never at import.

A kernel fuses what a run of NumPy passes over a panel's million windows computes (rate over
rollup buckets, rate over raw samples, ``sum by``) into one loop, with the same float
operations in the same order: answers are bit for bit the NumPy forms' (which stay, and serve
until the kernels are loaded, or when numba is missing or ``RINGMON_KERNELS=numpy``).

Loading numba costs ~0.4 s of CPU and ~150 MB of RSS (LLVM's library: ~120 MB of it shared,
file-backed pages), so nothing loads it before a query needs it: ``prefetch`` (the engine
calls it in the serving process when a query estimated big has been answered, for the next
ones) starts the import in a background thread and returns; ``loaded`` is what the evaluation asks, and is
None until the import is done, so no evaluation waits for it. A worker process forked by the
isolator inherits the kernels when they were loaded before the fork, and never starts a load
of its own (a fork waits for a load under way to end, at most once per process, so that no
child holds a module numba's import left half done). ``load`` imports synchronously (``make
venv`` compiles the kernels into numba's cache beside the module, the test session loads them
once). The scraper never imports numba: only the query engine calls ``prefetch``.
"""

from __future__ import annotations

import logging
import os
import threading
from types import ModuleType

log = logging.getLogger(__name__)

_lock = threading.Lock()
_module: ModuleType | None = None
_started = False


def disabled() -> bool:
    """``RINGMON_KERNELS=numpy``: NumPy forms only (A/B measurements)."""
    return os.environ.get("RINGMON_KERNELS", "").lower() == "numpy"


def loaded() -> ModuleType | None:
    """The kernels module when loaded in this process (None: use the NumPy forms)."""
    return _module


def load() -> ModuleType | None:
    """Import (and, when numba's cache lacks them, compile) the kernels now; None when numba
    cannot be imported or the kernels are disabled."""
    global _module, _started
    if disabled():
        return None
    with _lock:
        _started = True
        if _module is None:
            try:
                import query.kernels_numba as mod
            except Exception:  # noqa: BLE001 - the NumPy forms answer the same
                log.warning("compiled query kernels unavailable; NumPy forms serve", exc_info=True)
                return None
            _module = mod
    return _module


def _hold_while_forking() -> None:
    _lock.acquire()  # (a load under way ends first: no half-imported module in a forked child)


def _release_after_fork() -> None:
    _lock.release()


os.register_at_fork(before=_hold_while_forking, after_in_parent=_release_after_fork, after_in_child=_release_after_fork)


def prefetch() -> None:
    """Start loading the kernels in a background thread, once per process."""
    global _started
    if _started or disabled():
        return
    _started = True
    threading.Thread(target=load, name="ringmon-query-kernels", daemon=True).start()


if __name__ == "__main__":  # (make venv: compile into numba's cache once)
    import sys

    sys.exit(0 if load() is not None else 1)
