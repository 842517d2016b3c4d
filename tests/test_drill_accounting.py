"""The drills' sample accounting (``drills.__main__.DrillRunner.count``) on known data.

The outage drills themselves run under ``make drills`` (minutes of real outages); here the
counting they rely on is checked on series written to a MemoryStorage: consecutive values of
``ringmon_sim_scrapes_total`` are complete, a hole with an ``up`` 0 sample is a recorded
failure, a hole without one is a silently lost sample, a repeated value is a duplicate, and
the longest gap is the longest time between two stored samples.
"""

from __future__ import annotations

import numpy as np

from cluster.orchestrator import SIM_SCRAPES, SimScrapesCollector
from drills.__main__ import DrillRunner, drill_settings
from query.memory import MemoryStorage
from storage.model import SampleBatch, Series, make_labels

T0 = 1_700_000_000_000


async def write(storage, instance: str, values: list[float], ups: list[float], step_ms: int = 2000) -> None:
    sim = Series.of(make_labels(SIM_SCRAPES, job="pool-00", instance=instance))
    up = Series.of(make_labels("up", job="pool-00", instance=instance))
    batch = SampleBatch(f"pool-00/{instance}")
    for i, (v, u) in enumerate(zip(values, ups, strict=True)):
        t = T0 + i * step_ms
        if not np.isnan(v):
            batch.add(sim, t, v)
        batch.add(up, t, u)
    await storage.write(batch)


async def test_count_tells_complete_failed_lost_and_duplicated_samples():
    storage = MemoryStorage()
    nan = float("nan")
    # complete: 1..10
    await write(storage, "a:1", [float(v) for v in range(1, 11)], [1.0] * 10)
    # served 4 was a timeout: no sample, up 0 recorded -> accounted for
    await write(storage, "b:1", [1, 2, 3, nan, 5, 6, 7, 8, 9, 10], [1, 1, 1, 0, 1, 1, 1, 1, 1, 1])
    # served 4 and 5 never reached storage, no failure recorded -> 2 silently lost; 8 stored twice
    await write(storage, "c:1", [1, 2, 3, 6, 7, 8, 8, 9, 10, 11], [1.0] * 10)
    runner = DrillRunner(drill_settings())
    runner.storage = storage
    c = await runner.count(T0 / 1000, (T0 + 20_000) / 1000)
    assert c.targets == 3
    assert c.stored == 10 + 9 + 10
    assert c.holes == 1 + 2
    assert c.failed == 1
    assert c.silent == 2
    assert c.per_target_silent == {"pool-00/c:1": 2}
    assert c.duplicates == 1
    assert c.max_gap_s == 4.0  # b:1 has no sample at the 4th slot
    assert "2 samples silently lost, 1 failed scrapes recorded, 1 duplicates" in c.line()


def test_sim_scrapes_counter_counts_each_serve_and_not_its_registration():
    from prometheus_client import CollectorRegistry, generate_latest

    reg = CollectorRegistry()
    reg.register(SimScrapesCollector())
    values = []
    for _ in range(3):
        text = generate_latest(reg).decode()
        values.append(next(float(line.split()[-1]) for line in text.splitlines()
                           if line.startswith(SIM_SCRAPES) and not line.startswith("#")))
    assert values == [1.0, 2.0, 3.0]
