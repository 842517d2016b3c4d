"""Garbage collection of a long-running service: keep the startup heap out of full collections.

A full (generation 2) collection traverses every container object the process holds, and it
runs in whichever thread allocates when the threshold is reached, holding the GIL: in a
service, on its event loop. ``ringmon web`` holds ~74,000 objects once started (modules, the
Cassandra driver's schema metadata, the app's routes), which alone cost a full collection
34 ms of CPU on our 2-core VM, with nothing to free among them. ``freeze_startup_heap``,
called once the process has started, moves them to the permanent generation (``gc.freeze``):
later collections traverse only what came after. ``gc_paused`` keeps collections out of a
query's evaluation.
"""

from __future__ import annotations

import contextlib
import gc
import threading
from collections.abc import Iterator


def freeze_startup_heap() -> int:
    """Collect once, then freeze what survived; the number of objects frozen."""
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()


_pause_lock = threading.Lock()
_pauses = 0
_restore = False


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """Cyclic collection off while the block runs (nested and overlapping blocks counted; it
    stays off if something else turned it off). A query makes tens of thousands of short-lived
    containers (a range query over 6,400 series: a tuple or two per series and sample run)
    that reference counting frees; collections in the middle of it traverse them for nothing,
    and a full one the whole heap (100,000 series' labels in a standalone process): ~10-15 ms
    of ~90 ms per query in ``bench/range_query.py``. Only for work bounded in time (a query
    has its deadline): nothing cyclic is freed meanwhile."""
    global _pauses, _restore
    with _pause_lock:
        _pauses += 1
        if _pauses == 1:
            _restore = gc.isenabled()
            gc.disable()
    try:
        yield
    finally:
        with _pause_lock:
            _pauses -= 1
            if _pauses == 0 and _restore:
                gc.enable()
