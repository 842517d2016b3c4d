"""``ringmon_pool_members{pool,status}``: how many members of each pool are ALIVE or STOPPING,
from the scraper's registry view, written once per interval by the one scraper the ring names
the recorder; a pool or status that disappears gets one stale marker."""

from __future__ import annotations

import asyncio
import logging
import math
import time

from discovery.registry import ALIVE, STOPPING
from discovery.sharding import ShardCoordinator
from storage.base import SampleWriter
from storage.model import STALE_NAN, SampleBatch, Series, make_labels

log = logging.getLogger("ringmon.scraper")

POOL_MEMBERS_METRIC = "ringmon_pool_members"
POOL_MEMBERS_TARGET = "ringmon/pool-members"  # the partition key of the recorded series


class PoolMembersRecorder:
    """Writes ``ringmon_pool_members{pool,status}`` from the registry view, when this scraper
    is the recorder; pools or statuses that disappear get a stale marker once."""

    STATUSES = (ALIVE, STOPPING)

    def __init__(self, coordinator: ShardCoordinator, writer: SampleWriter, interval_s: float) -> None:
        self.coordinator = coordinator
        self.writer = writer
        self.interval_s = max(0.5, interval_s)
        self._written: dict[tuple[str, str], Series] = {}
        self.batches_written = 0

    def batch(self, now_ms: int) -> SampleBatch:
        view = self.coordinator.registry.view
        batch = SampleBatch(POOL_MEMBERS_TARGET)
        current: dict[tuple[str, str], Series] = {}
        for pool in sorted(view.pools):
            counts = view.status_counts(pool)
            for status in self.STATUSES:
                series = self._written.get((pool, status)) or Series.of(
                    make_labels(POOL_MEMBERS_METRIC, pool=pool, status=status)
                )
                current[(pool, status)] = series
                batch.add(series, now_ms, float(counts.get(status, 0)))
        for key, series in self._written.items():
            if key not in current:
                batch.add(series, now_ms, STALE_NAN)
        self._written = current
        return batch

    async def run(self) -> None:
        while True:
            # align to the interval so a change of recorder keeps one sample per interval
            now = time.time()
            await asyncio.sleep(math.ceil(now / self.interval_s) * self.interval_s - now)
            if not self.coordinator.is_recorder():
                self._written = {}
                continue
            try:
                batch = self.batch(int(time.time() // self.interval_s * self.interval_s * 1000))
                if len(batch):
                    await self.writer.append(batch)
                    self.batches_written += 1
            except Exception:  # noqa: BLE001 - a storage hiccup must not stop the recorder
                log.exception("could not record pool member counts")
