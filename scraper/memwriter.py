"""A SampleWriter that keeps batches in memory (tests and benchmarks)."""

from __future__ import annotations

import asyncio

from storage.base import SampleWriter
from storage.model import SampleBatch


class MemoryWriter(SampleWriter):
    """Collects every appended batch; ``changed`` is set on each append."""

    def __init__(self, keep: bool = True) -> None:
        self.batches: list[SampleBatch] = []
        self.samples = 0
        self.keep = keep
        self.changed = asyncio.Event()

    async def append(self, batch: SampleBatch) -> None:
        self.samples += len(batch)
        if self.keep:
            self.batches.append(batch)
        self.changed.set()

    def for_target(self, key: str) -> list[SampleBatch]:
        return [b for b in self.batches if b.target == key]
