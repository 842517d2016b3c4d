"""Bounded polling for the tests that watch a running process for a state it reaches by itself
(a scrape stored, an alert firing): one ``wait_for`` instead of a copy per test file."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any


async def wait_for(check: Callable[[], Awaitable[Any]], what: str, timeout_s: float = 60.0,
                   every_s: float = 0.25) -> Any:
    """Poll ``check`` until it returns something truthy and return that; raise AssertionError
    naming ``what`` and the last answer after ``timeout_s`` (a safety limit, not a measurement)."""
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while True:
        last = await check()
        if last:
            return last
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what} (last: {last!r})")
        await asyncio.sleep(every_s)
