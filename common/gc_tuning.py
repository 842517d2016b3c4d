"""Garbage collection of a long-running service: keep the startup heap out of full collections.

A full (generation 2) collection traverses every container object the process holds, and it
runs in whichever thread allocates when the threshold is reached, holding the GIL: in a
service, on its event loop. ``ringmon web`` holds ~74,000 objects once started (modules, the
Cassandra driver's schema metadata, the app's routes), which alone cost a full collection
34 ms of CPU on our 2-core VM, with nothing to free among them. ``freeze_startup_heap``,
called once the process has started, moves them to the permanent generation (``gc.freeze``):
later collections traverse only what came after. ``gc_paused`` keeps collections out of a
query's evaluation and of the rollup job's seal of a window.
"""

from __future__ import annotations

import contextlib
import gc
import threading
import time
from collections.abc import Iterator


def freeze_startup_heap() -> int:
    """Collect once, then freeze what survived; the number of objects frozen."""
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()


# A chain of overlapping pauses (queries back to back, a client that keeps several running)
# never reaches zero: the cyclic garbage of everything else (scrapes, rules) would pile up. So
# a block that ends while the collector has been off longer than this collects once itself.
MAX_PAUSE_S = 5.0

_pause_lock = threading.Lock()
_pauses = 0
_restore = False
_off_since = 0.0


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """Cyclic collection off while the block runs (nested and overlapping blocks counted; it
    stays off if something else turned it off). A query makes tens of thousands of short-lived
    containers (a range query over 6,400 series: a tuple or two per series and sample run)
    that reference counting frees; collections in the middle of it traverse them for nothing,
    and a full one the whole heap (100,000 series' labels in a standalone process): ~10-15 ms
    of ~90 ms per query in ``bench/range_query.py``. Only for work bounded in time (a query
    has its deadline): nothing cyclic is freed meanwhile, except that a block ending after
    ``MAX_PAUSE_S`` of overlapping pauses collects once (the chain may never end)."""
    global _pauses, _restore, _off_since
    with _pause_lock:
        _pauses += 1
        if _pauses == 1:
            _restore = gc.isenabled()
            _off_since = time.monotonic()
            gc.disable()
    try:
        yield
    finally:
        overdue = False
        with _pause_lock:
            _pauses -= 1
            if _pauses == 0 and _restore:
                gc.enable()
            elif _pauses and _restore and time.monotonic() - _off_since > MAX_PAUSE_S:
                _off_since = time.monotonic()
                overdue = True
        if overdue:  # (outside the lock: the collection may take tens of ms)
            gc.collect()
