"""How a command's process runs and ends: ``stop_event`` is set by SIGTERM or SIGINT (the
graceful stop every long-running service waits for); ``exit_status`` turns an entry point's
expected error into one line on stderr and status 2, and Ctrl-C into 130 (128 + SIGINT)."""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import Callable


def stop_event() -> asyncio.Event:
    """An event of the running loop that SIGTERM and SIGINT set."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    return stop


def exit_status(run: Callable[[], int], errors: type[Exception] | tuple[type[Exception], ...], prefix: str) -> int:
    """``run()``'s status; one of ``errors`` is printed as ``prefix: message`` (status 2) instead
    of a traceback, and Ctrl-C ends with 130."""
    try:
        return run()
    except errors as exc:
        print(f"{prefix}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
