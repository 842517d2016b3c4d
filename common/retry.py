"""Retry with exponential backoff: the one schedule of delays, and a loop for idempotent steps.

Every package that retries (notification delivery, Cassandra rollup writes, the web's ZooKeeper
connect) takes its delays from ``backoff_delays``; ``retry_async`` is the whole loop for a step
that is simply run again on a given error.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable, Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")


def backoff_delays(initial_s: float, max_s: float, *, factor: float = 2.0, jitter: float = 0.0) -> Iterator[float]:
    """``initial_s``, then each delay ``factor`` times the one before, never above ``max_s``;
    each multiplied by a random factor in [1 - jitter, 1 + jitter] (0: none). Endless."""
    delay = initial_s
    while True:
        yield delay * random.uniform(1.0 - jitter, 1.0 + jitter) if jitter else delay
        delay = min(delay * factor, max_s)


async def retry_async(
    step: Callable[[], Awaitable[T]],
    *,
    retry_on: type[BaseException] | tuple[type[BaseException], ...],
    attempts: int,
    delays: Iterable[float],
    sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
) -> T:
    """Run ``step`` until it returns; on ``retry_on`` wait the next delay and run it again from
    its start, at most ``attempts`` runs in all (the last error is raised)."""
    waits = iter(delays)
    for attempt in range(1, attempts + 1):
        try:
            return await step()
        except retry_on:
            if attempt == attempts:
                raise
        await sleep(next(waits))
    raise ValueError(f"attempts must be at least 1, got {attempts}")
