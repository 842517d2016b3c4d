"""The rollup job on a real Cassandra: rows equal brute force, reruns change nothing, blocks bit-exact."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from fixtures_cassandra import fresh_keyspace
from test_rollup import assert_equal_rollups, brute_force
from test_rollup_job import HOURS, SHARDS, T0, T_END, WINDOW, generate

from storage.base import HOUR_MS, MINUTE_MS, Resolution
from storage.cassandra_rollup import CassandraRollupMixin
from storage.matchers import Matcher, MatchOp
from storage.rollup import rollup_raw, rollup_rollup
from storage.rollup_job import RollupJob
from storage.rollup_lease import LocalShardLease

pytestmark = pytest.mark.cassandra


@pytest.fixture(scope="module")
def cassandra_rollup(cassandra):
    from storage.cassandra_rollup import CassandraRollupStorage

    store = CassandraRollupStorage.connect_sync(
        [cassandra.host], cassandra.port, fresh_keyspace("rollup"), create_schema=True
    )
    try:
        yield store
    finally:
        store.drop_keyspace_sync()
        store.shutdown()


async def load(store, data) -> None:
    """Write like scrapers do: one batch per target and timestamp; retry timeouts (writes are idempotent)."""
    from storage.cassandra import TransientStorageError
    from storage.model import SampleBatch

    batches: dict[tuple[str, int], SampleBatch] = {}
    for s, (ts, v, target) in data.items():
        for t, x in zip(ts.tolist(), v.tolist(), strict=True):
            batches.setdefault((target, t), SampleBatch(target)).add(s, t, x)
    for b in batches.values():
        for attempt in range(6):
            try:
                await store.write(b)
                break
            except TransientStorageError:
                if attempt == 5:
                    raise
                await asyncio.sleep(0.5 * 2**attempt)


async def snapshot(store, data) -> dict:
    out = {}
    for s in data:
        out[s.id] = (
            await store.read_rollup(Resolution.MINUTE, s.id, T0, T_END),
            await store.read_rollup(Resolution.HOUR, s.id, T0, T_END),
            await store.read_blocks(s.id, T0, T_END),
        )
    return out


async def test_rollup_job_on_cassandra(cassandra_rollup, tmp_path):
    store = cassandra_rollup
    data = generate(seed=11)
    await load(store, data)
    job = RollupJob(
        store,
        LocalShardLease(tmp_path / "locks"),
        window_ms=WINDOW,
        shards=SHARDS,
        now_ms=lambda: T_END + HOUR_MS,
    )
    done = await job.run_once(initial_start_ms=T0)
    assert len(done) == SHARDS * HOURS * HOUR_MS // WINDOW
    assert [await store.get_checkpoint("rollup", s) for s in range(SHARDS)] == [T_END] * SHARDS

    first = await snapshot(store, data)
    for s, (ts, v, _) in data.items():
        minutes, hours, (b_ts, b_vals) = first[s.id]
        got = {
            int(t): {k: float(c[i]) for k, c in minutes.columns().items()}
            for i, t in enumerate(minutes.timestamps)
        }
        assert_equal_rollups(got, brute_force(ts, v, T0, T_END, MINUTE_MS))
        assert hours.bit_equal(rollup_rollup(rollup_raw(ts, v, T0, T_END, MINUTE_MS), HOUR_MS))
        inside = (ts >= T0) & (ts < T_END)
        np.testing.assert_array_equal(b_ts, ts[inside])
        np.testing.assert_array_equal(b_vals.view(np.uint64), v[inside].view(np.uint64))

    await job.backfill(T0, T_END)
    again = await snapshot(store, data)
    for sid, (m, h, (bt, bv)) in first.items():
        m2, h2, (bt2, bv2) = again[sid]
        assert m.bit_equal(m2) and h.bit_equal(h2)
        assert np.array_equal(bt, bt2) and np.array_equal(bv.view(np.uint64), bv2.view(np.uint64))

    got = await store.select_rollup(
        [Matcher("__name__", MatchOp.EQ, "gen_gauge")], T0, T_END, Resolution.HOUR
    )
    assert len(got) == 9 and all(
        d.timestamps.tolist() == [T0 + h * HOUR_MS for h in range(HOURS)] for d in got
    )


async def test_raw_reads_come_from_blocks_once_recent_rows_are_gone(cassandra_rollup, tmp_path):
    """Runs after the job test in this module: its blocks are in the keyspace."""
    store = cassandra_rollup
    data = generate(seed=11)
    every = [Matcher("__name__", MatchOp.RE, "gen_.*")]

    def check(got) -> None:
        by_id = {d.series.id: d for d in got}
        assert set(by_id) == {s.id for s in data}
        for s, (ts, v, _) in data.items():
            inside = (ts >= T0) & (ts < T_END)
            np.testing.assert_array_equal(by_id[s.id].timestamps, ts[inside])
            np.testing.assert_array_equal(by_id[s.id].values.view(np.uint64), v[inside].view(np.uint64))

    job = RollupJob(store, LocalShardLease(tmp_path / "locks"), window_ms=WINDOW, shards=SHARDS)
    # Seal the window before T0 too: its last minutes carry counters into the first window.
    await job.backfill(T0 - WINDOW, T0)
    before = await snapshot(store, data)
    store.recent_raw_keep_ms = 0  # as if raw_recent kept nothing: every raw read merges blocks
    try:
        check(await store.select(every, T0, T_END - 1))
        await store.execute(f"TRUNCATE {store.keyspace}.raw_recent")
        check(await store.select(every, T0, T_END - 1))
        # A rerun now works from the blocks alone and still writes identical rows.
        await job.backfill(T0, T_END)
        after = await snapshot(store, data)
        for sid, (m, h, _) in before.items():
            assert m.bit_equal(after[sid][0]) and h.bit_equal(after[sid][1])
    finally:
        store.recent_raw_keep_ms = CassandraRollupMixin.recent_raw_keep_ms
