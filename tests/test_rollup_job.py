"""The rollup job on SQLite: output equals brute force, reruns and concurrent copies change nothing."""

from __future__ import annotations

import asyncio
import io
import sqlite3
from pathlib import Path

import numpy as np
import pytest
from test_rollup import assert_equal_rollups, brute_force

from storage import rollup_chunks
from storage.base import AGGREGATES, HOUR_MS, MINUTE_MS, Resolution
from storage.blocks import (
    TIMES,
    VERSION,
    VERSION_SHARED_TIMES,
    decode_group,
    encode_block,
    encode_group,
    group_members,
)
from storage.matchers import Matcher, MatchOp
from storage.model import STALE_NAN, SampleBatch, Series, make_labels
from storage.rollup import Rollup, rollup_raw, rollup_rollup
from storage.rollup_job import ProgressBar, RawWindow, RollupJob, RollupRows, SealedBlock, compute_window
from storage.rollup_lease import LocalShardLease, ZooKeeperShardLease
from storage.sqlite_rollup import SQLiteRollupStorage, sealed_blocks

DAY0 = 1_699_920_000_000  # a day boundary (ms)
T0 = DAY0 + 2 * HOUR_MS
HOURS = 6
T_END = T0 + HOURS * HOUR_MS
WINDOW = 2 * HOUR_MS
SHARDS = 4


def generate(seed: int = 5) -> dict[Series, tuple[np.ndarray, np.ndarray, str]]:
    """Series of 3 targets: counters with resets, gauges, NaN, stale markers, gaps, jitter."""
    rng = np.random.default_rng(seed)
    out: dict[Series, tuple[np.ndarray, np.ndarray, str]] = {}
    for t in range(3):
        target = f"web/h{t}:9100"
        step = (10_000, 15_000, 30_000)[t]
        n = (T_END + 10 * MINUTE_MS - T0) // step
        ts = T0 - 10 * MINUTE_MS + np.arange(n, dtype=np.int64) * step + rng.integers(-3, 4, n)
        gap = rng.integers(n // 4, n // 2)
        keep = np.ones(n, dtype=bool)
        keep[gap : gap + 40] = False  # an outage longer than the 5-minute gap limit
        keep[gap + 100 : gap + 103] = False  # a short one
        ts = ts[keep]
        m = ts.shape[0]
        for k in range(8):
            labels = make_labels(
                "gen_metric_total" if k < 5 else "gen_gauge", instance=f"h{t}:9100", k=str(k)
            )
            if k < 5:
                v = float(rng.integers(0, 1000)) + np.cumsum(rng.integers(0, 100, m)).astype(np.float64)
                for r in rng.integers(1, m, 2):
                    v[r:] -= v[r - 1] - rng.integers(0, 5)
                v = np.round(v / (10 ** (k % 3)), k % 3)
            else:
                v = rng.normal(0, 100, m)
            v[rng.integers(0, m, 3)] = float("nan")
            v[rng.integers(0, m, 2)] = STALE_NAN
            v[rng.integers(0, m, 1)] = -0.0
            out[Series.of(labels)] = (ts.copy(), v, target)
    return out


def batches(data) -> list[SampleBatch]:
    """``generate``'s samples as one batch per target (a spool replay or a scrape writes so)."""
    by_target: dict[str, SampleBatch] = {}
    for s, (ts, v, target) in data.items():
        b = by_target.setdefault(target, SampleBatch(target))
        for t, x in zip(ts.tolist(), v.tolist(), strict=True):
            b.add(s, t, x)
    return list(by_target.values())


async def load(store: SQLiteRollupStorage, data) -> None:
    for b in batches(data):
        await store.write(b)


def dump(path) -> dict[str, list[tuple]]:
    """Every stored block (its samples' timestamps and value bits: whether a block keeps its
    timestamp frame apart depends on the blocks written with it), and every rollup bucket as
    (series id, start, six aggregates' bits)."""
    con = sqlite3.connect(path)
    try:
        out = {"raw_blocks": [
            (sid, start, end, len(ts), ts.tolist(), v.view(np.int64).tolist())
            for sid, start, end, ts, v in sealed_blocks(con)
        ]}
        for name in ("rollup_1m", "rollup_1h"):
            rows = []
            cols = ", ".join(f"c_{c}" for c in rollup_chunks.COLUMNS)
            for sid, start, data, *values in con.execute(
                f"SELECT series_id, start_ts, data, {cols} FROM {name}_chunks ORDER BY 1, 2"
            ):
                stored = rollup_chunks.payload(data, rollup_chunks.COLUMNS, values)
                r = rollup_chunks.decode_payload(start, stored)
                bits = [getattr(r, a).view(np.int64).tolist() for a in AGGREGATES]
                rows += [(sid, t, *b) for t, *b in zip(r.timestamps.tolist(), *bits, strict=True)]
            out[name] = rows
        return out
    finally:
        con.close()


def make_job(store, lease_dir, now=T_END + HOUR_MS, **kw) -> RollupJob:
    return RollupJob(
        store, LocalShardLease(lease_dir), window_ms=WINDOW, shards=SHARDS, now_ms=lambda: now, **kw
    )


@pytest.fixture
def data():
    return generate()


@pytest.fixture
async def store(tmp_path, data):
    s = await SQLiteRollupStorage.open(tmp_path / "ringmon.db")
    await load(s, data)
    yield s
    await s.close()


async def test_job_output_equals_brute_force(store, data, tmp_path):
    job = make_job(store, tmp_path / "locks")
    done = await job.run_once(initial_start_ms=T0)
    assert len(done) == SHARDS * HOURS * HOUR_MS // WINDOW
    for s, (ts, v, _) in data.items():
        minutes = await store.read_rollup(Resolution.MINUTE, s.id, T0, T_END)
        got = {
            int(t): {k: float(c[i]) for k, c in minutes.columns().items()}
            for i, t in enumerate(minutes.timestamps)
        }
        assert_equal_rollups(got, brute_force(ts, v, T0, T_END, MINUTE_MS))
        hours = await store.read_rollup(Resolution.HOUR, s.id, T0, T_END)
        assert hours.bit_equal(rollup_rollup(rollup_raw(ts, v, T0, T_END, MINUTE_MS), HOUR_MS))
        hour_raw = {
            int(t): {k: float(c[i]) for k, c in hours.columns().items()}
            for i, t in enumerate(hours.timestamps)
        }
        assert_equal_rollups(hour_raw, brute_force(ts, v, T0, T_END, HOUR_MS), exact_sums=False)
    # Blocks decode to exactly the raw samples of their window: grouped per target, part and
    # window (block version 5, raw_groups), none of them per series.
    con = sqlite3.connect(tmp_path / "ringmon.db")
    blocks = sealed_blocks(con)
    groups = con.execute("SELECT target, part, start_ts, length(ids) / 8 FROM raw_groups").fetchall()
    assert con.execute("SELECT count(*) FROM raw_blocks").fetchone()[0] == 0
    con.close()
    by_id = {s.id: d for s, d in data.items()}
    assert len(blocks) == len(data) * HOURS * HOUR_MS // WINDOW
    assert sum(g[3] for g in groups) == len(blocks) and {g[0] for g in groups} == {d[2] for d in data.values()}
    assert len({g[:3] for g in groups}) == len(groups) and any(g[3] > 1 for g in groups)
    for sid, start, end, got_ts, got_v in blocks:
        ts, v, target = by_id[sid]
        inside = (ts >= start) & (ts < end)
        np.testing.assert_array_equal(got_ts, ts[inside])
        np.testing.assert_array_equal(got_v.view(np.uint64), v[inside].view(np.uint64))
    # Reads find the groups (none kept by the process); blocks written before groups (per series,
    # versions 3 and 4, their times in raw_block_times) read the same beside them.
    every = [Matcher("__name__", MatchOp.RE, ".+")]

    async def read_all() -> dict[int, tuple[list[int], list[int]]]:
        TIMES.clear()
        got = await store.select(every, T0, T_END - 1)
        return {d.series.id: (d.timestamps.tolist(), d.values.view(np.int64).tolist()) for d in got}

    want = {s.id: (ts[(ts >= T0) & (ts < T_END)].tolist(), v[(ts >= T0) & (ts < T_END)].view(np.int64).tolist())
            for s, (ts, v, _) in data.items()}
    assert await read_all() == want
    # Half the series' blocks as the code before groups wrote them: per series, version 4 where a
    # window's blocks of a target shared their times, else 3 (their groups without them).
    old = [b for b in blocks if b[0] % 2]
    singles = [SealedBlock(sid, start, end, len(ts), int(ts[0]), int(ts[-1]), encode_block(ts, v))
               for sid, start, end, ts, v in old]
    await store.write_blocks(singles[:-3])  # (a write's blocks share their times: version 4)
    for b in singles[-3:]:
        await store.write_blocks([b])  # (alone: version 3)
    await store.run_write(lambda con: _drop_from_groups(con, {b[0] for b in old}))
    con = sqlite3.connect(tmp_path / "ringmon.db")
    versions = {d[0] for (d,) in con.execute("SELECT data FROM raw_blocks")}
    con.close()
    assert versions == {VERSION, VERSION_SHARED_TIMES}
    store.__dict__.pop("_chunk_caches", None)
    assert await read_all() == want
    # A seal again (a late pass, a backfill) puts those series back into their groups.
    await job.backfill(T0, T_END)
    con = sqlite3.connect(tmp_path / "ringmon.db")
    assert con.execute("SELECT count(*) FROM raw_blocks").fetchone()[0] == 0
    assert [b[:3] for b in sealed_blocks(con)] == [b[:3] for b in blocks]
    con.close()
    assert await read_all() == want


def _drop_from_groups(con: sqlite3.Connection, series: set[int]) -> None:
    """Rewrite every group of ``raw_groups`` without ``series`` (as groups of the code after
    per-series blocks had them)."""
    for gid, ids_blob, data in con.execute("SELECT id, ids, data FROM raw_groups").fetchall():
        members = group_members(ids_blob)
        keep = [m for m in members.tolist() if m not in series]
        if not keep:
            con.execute("DELETE FROM raw_groups WHERE id = ?", (gid,))
            continue
        got = decode_group(data, members, keep)
        ids, value = encode_group(keep, [encode_block(got[m].timestamps, got[m].values, plain=True) for m in keep])
        con.execute("UPDATE raw_groups SET ids = ?, data = ? WHERE id = ?", (ids.tobytes(), value, gid))
    con.commit()


async def test_rerun_changes_nothing(store, tmp_path):
    job = make_job(store, tmp_path / "locks")
    await job.run_once(initial_start_ms=T0)
    before = dump(tmp_path / "ringmon.db")
    out = io.StringIO()
    await job.backfill(T0, T_END, progress=ProgressBar(0, "backfill", stream=out))
    assert dump(tmp_path / "ringmon.db") == before
    assert f"{SHARDS * HOURS // 2}/{SHARDS * HOURS // 2}" in out.getvalue()
    # Nothing new is closed: a further pass does nothing.
    assert await job.run_once() == []
    # A job of 32 shards seals half a group's part at a time: each seal keeps the other
    # half's series in the group it writes; the same blocks, one group per target and part.
    other = RollupJob(store, LocalShardLease(tmp_path / "locks32"), window_ms=WINDOW, shards=32,
                      now_ms=lambda: T_END + HOUR_MS)
    await other.backfill(T0, T_END)
    assert dump(tmp_path / "ringmon.db") == before
    con = sqlite3.connect(tmp_path / "ringmon.db")
    keys = con.execute("SELECT target, part, start_ts FROM raw_groups").fetchall()
    con.close()
    assert len(keys) == len(set(keys))


async def test_resumes_from_checkpoints(store, data, tmp_path):
    await make_job(store, tmp_path / "locks", now=T0 + 3 * HOUR_MS).run_once(initial_start_ms=T0)
    assert [await store.get_checkpoint("rollup", s) for s in range(SHARDS)] == [T0 + WINDOW] * SHARDS
    await make_job(store, tmp_path / "locks").run_once()
    assert [await store.get_checkpoint("rollup", s) for s in range(SHARDS)] == [T_END] * SHARDS
    other = await SQLiteRollupStorage.open(tmp_path / "fresh.db")
    try:
        await load(other, data)
        await make_job(other, tmp_path / "locks2").run_once(initial_start_ms=T0)
    finally:
        await other.close()
    assert dump(tmp_path / "ringmon.db") == dump(tmp_path / "fresh.db")


async def sealed_by_one_copy(data, db: Path, locks: Path) -> None:
    """The reference database: ``data`` loaded into ``db`` and sealed by one copy of the job."""
    store = await SQLiteRollupStorage.open(db)
    try:
        await load(store, data)
        await make_job(store, locks).run_once(initial_start_ms=T0)
    finally:
        await store.close()


async def test_two_copies_at_once_equal_one(data, tmp_path):
    await sealed_by_one_copy(data, tmp_path / "single.db", tmp_path / "l1")

    a = await SQLiteRollupStorage.open(tmp_path / "pair.db")
    await load(a, data)
    b = await SQLiteRollupStorage.open(tmp_path / "pair.db")
    job_a, job_b = make_job(a, tmp_path / "l2"), make_job(b, tmp_path / "l2")
    ra, rb = await asyncio.gather(job_a.run_once(initial_start_ms=T0), job_b.run_once(initial_start_ms=T0))
    # A second pass of both picks up whatever a held-shard skip left behind.
    ra += await job_a.run_once(initial_start_ms=T0)
    rb += await job_b.run_once(initial_start_ms=T0)
    await a.close()
    await b.close()
    keys = [(r.shard, r.start_ms) for r in ra + rb]
    assert len(keys) == len(set(keys)) == SHARDS * HOURS * HOUR_MS // WINDOW
    assert dump(tmp_path / "pair.db") == dump(tmp_path / "single.db")


class GroupReads:
    """A SQLite store that also reads several shards' windows at once (as Cassandra does, whose
    frames hold every shard's series): the job then works the shards it holds together."""

    def __init__(self, inner: SQLiteRollupStorage) -> None:
        self.inner = inner
        self.groups: list[list[int]] = []

    def __getattr__(self, name: str):
        return getattr(self.inner, name)

    async def read_raw_window_group(self, group, shards, start_ms, end_ms, *, kept_index=False) -> RawWindow:
        self.groups.append(sorted(group))
        return RawWindow.of([d for k in group for d in await self.inner.read_raw_window(k, shards, start_ms, end_ms)])


async def test_shards_worked_together_equal_one_at_a_time(data, tmp_path):
    await sealed_by_one_copy(data, tmp_path / "one.db", tmp_path / "l1")

    inner = await SQLiteRollupStorage.open(tmp_path / "together.db")
    await load(inner, data)
    # Shard 2 is a window ahead (sealed alone while another copy held the rest) ...
    other = LocalShardLease(tmp_path / "l2")
    for k in (0, 1, 3):
        assert await other.try_acquire(k)
    ahead = await make_job(inner, tmp_path / "l2", max_windows_per_pass=1).run_once(initial_start_ms=T0)
    assert [(r.shard, r.start_ms) for r in ahead] == [(2, T0)]
    await other.close()
    # ... and joins the others once they reach its checkpoint.
    store = GroupReads(inner)
    job = make_job(store, tmp_path / "l2")
    done = await job.run_once(initial_start_ms=T0)
    # two windows of all four, then their fresh minutes of the open window: one read each
    assert store.groups == [[0, 1, 3], [0, 1, 2, 3], [0, 1, 2, 3], [0, 1, 2, 3]]
    assert sorted(r.shard for r in job.fresh_done) == list(range(SHARDS))
    assert sorted((r.shard, r.start_ms) for r in done) == sorted(
        [(k, T0) for k in (0, 1, 3)] + [(k, w) for k in range(SHARDS) for w in (T0 + WINDOW, T0 + 2 * WINDOW)])
    assert all(r.samples and r.series and r.minute_points and r.hour_points for r in done)
    assert [await inner.get_checkpoint("rollup", k) for k in range(SHARDS)] == [T_END] * SHARDS
    await inner.close()
    assert dump(tmp_path / "together.db") == dump(tmp_path / "one.db")

async def test_failed_window_is_retried_and_metrics(store, tmp_path):
    class Flaky:
        def __init__(self, inner):
            self.inner = inner
            self.fail = 1

        def __getattr__(self, name):
            return getattr(self.inner, name)

        async def write_rollups(self, resolution, rows):
            if self.fail:
                self.fail -= 1
                raise OSError("disk full")
            await self.inner.write_rollups(resolution, rows)

    job = make_job(Flaky(store), tmp_path / "locks")
    first = await job.run_once(initial_start_ms=T0)
    # The first shard's first window fails: that shard stops (checkpoints stay contiguous).
    assert len(first) == SHARDS * 3 - 3
    reg = job.metrics.registry
    assert reg.get_sample_value("ringmon_rollup_errors_total") == 1
    # The lag is how far the stuck shard is behind the newest closed window (T_END), not the clock.
    assert job.closed_until() == T_END
    assert reg.get_sample_value("ringmon_rollup_lag_seconds") == pytest.approx((T_END - T0) / 1000)
    second = await job.run_once()
    assert len(second) == 3
    assert reg.get_sample_value("ringmon_rollup_windows_total", {"mode": "live"}) == SHARDS * 3
    # Caught up an hour into the open window: no lag (a fresh instance reads 0, not the open window's age).
    assert reg.get_sample_value("ringmon_rollup_lag_seconds") == 0
    assert reg.get_sample_value("ringmon_rollup_samples_sealed_total") > 0


async def test_held_shard_is_skipped(store, tmp_path):
    other = LocalShardLease(tmp_path / "locks")
    assert await other.try_acquire(1)
    done = await make_job(store, tmp_path / "locks").run_once(initial_start_ms=T0)
    assert {r.shard for r in done} == {0, 2, 3}
    await other.close()


async def test_lag_is_of_the_shards_held(store, tmp_path):
    job = make_job(store, tmp_path / "locks", max_windows_per_pass=1)
    await job.run_once(initial_start_ms=T0)
    reg = job.metrics.registry
    assert reg.get_sample_value("ringmon_rollup_lag_seconds") == pytest.approx((T_END - T0 - WINDOW) / 1000)
    other = LocalShardLease(tmp_path / "locks")  # another copy takes every shard
    for shard in range(SHARDS):
        assert await other.try_acquire(shard)
    assert await job.run_once() == []
    assert reg.get_sample_value("ringmon_rollup_shards_held") == 0
    assert reg.get_sample_value("ringmon_rollup_lag_seconds") == 0  # not the last pass's lag, kept
    await other.close()


async def test_select_rollup_through_storage_interface(store, data, tmp_path):
    await make_job(store, tmp_path / "locks").run_once(initial_start_ms=T0)
    got = await store.select([Matcher("__name__", MatchOp.EQ, "gen_gauge")], T0, T_END, Resolution.HOUR)
    assert len(got) == 9
    for d in got:
        assert d.resolution is Resolution.HOUR and set(d.agg) == set(AGGREGATES)
        np.testing.assert_array_equal(d.values.view(np.uint64), d.agg["last"].view(np.uint64))
        assert d.timestamps.tolist() == [T0 + h * HOUR_MS for h in range(HOURS)]


def test_compute_window_is_deterministic(data):
    from storage.base import SeriesData

    sds = [SeriesData(s, ts, v) for s, (ts, v, _) in data.items()]
    a = compute_window(sds, T0, T0 + WINDOW)
    b = compute_window(list(reversed(sds)), T0, T0 + WINDOW)
    assert a[0] == b[0]
    for x, y in zip(a[1] + a[2], b[1] + b[2], strict=True):
        assert isinstance(x, RollupRows) and x.series_id == y.series_id and x.rollup.bit_equal(y.rollup)
    assert all(isinstance(blk, SealedBlock) for blk in a[0])
    assert isinstance(a[1][0].rollup, Rollup)


def test_bad_window_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="whole number of hours dividing a day"):
        RollupJob(None, LocalShardLease(tmp_path), window_ms=5 * HOUR_MS)  # type: ignore[arg-type]


@pytest.mark.zookeeper
async def test_zookeeper_lease_is_exclusive(zookeeper, zk_root):
    from kazoo.client import KazooClient

    c1, c2 = KazooClient(hosts=zookeeper.hosts), KazooClient(hosts=zookeeper.hosts)
    c1.start(timeout=30)
    c2.start(timeout=30)
    try:
        l1 = ZooKeeperShardLease(c1, root=f"{zk_root}/rollup/locks", identifier="one")
        l2 = ZooKeeperShardLease(c2, root=f"{zk_root}/rollup/locks", identifier="two")
        assert await l1.try_acquire(3)
        assert l1.held(3)
        assert not await l2.try_acquire(3)
        assert await l2.try_acquire(4)
        await l1.release(3)
        assert not l1.held(3)
        assert await l2.try_acquire(3)
        c2.stop()  # session gone: its locks go with it
        c2.close()
        assert await l1.try_acquire(3)
        await l1.close()
    finally:
        for c in (c1, c2):
            try:
                c.stop()
                c.close()
            except Exception:
                pass


@pytest.mark.zookeeper
async def test_two_copies_with_zookeeper_leases(zookeeper, zk_root, data, tmp_path):
    from kazoo.client import KazooClient

    single = await SQLiteRollupStorage.open(tmp_path / "single.db")
    await load(single, data)
    await make_job(single, tmp_path / "l1").run_once(initial_start_ms=T0)
    await single.close()

    clients = [KazooClient(hosts=zookeeper.hosts) for _ in range(2)]
    stores = []
    try:
        jobs = []
        for i, c in enumerate(clients):
            c.start(timeout=30)
            s = await SQLiteRollupStorage.open(tmp_path / "pair.db")
            stores.append(s)
            if i == 0:
                await load(s, data)
            lease = ZooKeeperShardLease(c, root=f"{zk_root}/rollup/locks", identifier=f"copy{i}")
            jobs.append(RollupJob(s, lease, window_ms=WINDOW, shards=SHARDS, now_ms=lambda: T_END + HOUR_MS))
        for _ in range(2):
            await asyncio.gather(*(j.run_once(initial_start_ms=T0) for j in jobs))
    finally:
        for s in stores:
            await s.close()
        for c in clients:
            c.stop()
            c.close()
    assert dump(tmp_path / "pair.db") == dump(tmp_path / "single.db")


async def test_sqlite_retention_of_blocks_and_rollups(store, tmp_path):
    await make_job(store, tmp_path / "locks").run_once(initial_start_ms=T0)
    before = dump(tmp_path / "ringmon.db")
    cut = T0 + WINDOW
    assert await store.delete_blocks_before(cut) == sum(1 for r in before["raw_blocks"] if r[2] <= cut)
    assert await store.delete_rollups_before(Resolution.MINUTE, cut) == sum(
        1 for r in before["rollup_1m"] if r[1] < cut
    )
    assert await store.delete_rollups_before(Resolution.HOUR, cut) == sum(
        1 for r in before["rollup_1h"] if r[1] < cut
    )
    after = dump(tmp_path / "ringmon.db")
    assert all(r[1] >= cut for r in after["raw_blocks"]) and after["rollup_1h"]
    assert all(r[1] >= cut for t in ("rollup_1m", "rollup_1h") for r in after[t])


async def test_sqlite_retention_matches_the_cassandra_ttls(tmp_path) -> None:
    """Standalone (SQLite has no TTLs): the job's hourly retention drops raw samples, blocks
    and 1 m / 1 h buckets past their horizons (8 d, 8 d, 32 d, 370 d) and keeps the rest."""
    day = 86_400_000
    now = DAY0 + 400 * day
    clock = [now]
    st = await SQLiteRollupStorage.open(tmp_path / "ret.db", now_ms=lambda: clock[0])
    st.late_after_ms = 2**62
    s = Series.of(make_labels("ret_metric", instance="h:1"))
    name = [Matcher("__name__", MatchOp.EQ, "ret_metric")]
    try:
        for ts in (now - 10 * day, now - 3 * day, now - HOUR_MS):
            await st.write(SampleBatch("t/h:1", [s], [ts], [1.0]))
        block = SealedBlock(s.id, now - 10 * day, now - 10 * day + 2 * HOUR_MS, 1, now - 10 * day, now - 10 * day, b"x")
        await st.write_blocks([block])

        def rows(ts: list[int]) -> list[RollupRows]:
            arr = np.array(ts, dtype=np.int64)
            return [RollupRows(s.id, Rollup.from_columns(arr, {a: np.ones(len(ts)) for a in AGGREGATES}))]

        await st.write_rollups(Resolution.MINUTE, rows([now - 40 * day, now - 40 * day + MINUTE_MS, now - day]))
        await st.write_rollups(Resolution.HOUR, rows([now - 380 * day, now - 100 * day]))
        job = RollupJob(st, LocalShardLease(tmp_path / "locks"), now_ms=lambda: clock[0])
        deleted = await job.apply_retention()
        assert deleted is not None
        assert deleted["raw_chunks"] == 1 and deleted["raw_blocks"] == 1
        assert deleted["rollup_1m"] == 2 and deleted["rollup_1h"] == 1
        raw = await st.select(name, now - 20 * day, now)
        assert raw[0].timestamps.tolist() == [now - 3 * day, now - HOUR_MS]
        minute = await st.select(name, now - 50 * day, now, Resolution.MINUTE)
        assert minute[0].timestamps.tolist() == [now - day]
        hour = await st.select(name, now - 390 * day, now, Resolution.HOUR)
        assert hour[0].timestamps.tolist() == [now - 100 * day]
        assert await job.apply_retention() is None  # at most once an hour
        clock[0] += HOUR_MS
        assert await job.apply_retention() == {"raw_chunks": 0, "raw_blocks": 0, "rollup_1m": 0, "rollup_1h": 0}
    finally:
        await st.close()


async def test_a_job_half_the_raw_expiry_behind_logs_an_error(store, tmp_path, caplog):
    """Raw samples that expire unsealed (Cassandra's frames) would be lost silently: a copy of
    the job that far behind says so, with the hours left, on every pass."""
    job = make_job(store, tmp_path / "locks", max_windows_per_pass=1)
    lag_ms = T_END - T0 - WINDOW
    store.raw_expiry_ms = 2 * lag_ms + 2  # not yet half behind
    await job.run_once(initial_start_ms=T0)
    assert not [r for r in caplog.records if r.levelname == "ERROR"]
    store.raw_expiry_ms = 2 * lag_ms - 2 * WINDOW - 2  # after the next window, more than half behind
    await job.run_once()
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and "behind: raw samples expire" in errors[0]


async def test_seal_drops_its_raw_rows_and_reads_take_the_blocks(store, data, tmp_path):
    """After the seal a window's raw chunk rows are gone (its blocks hold them): selects give
    the same samples bit for bit, a late sample written after the seal is read at once, and
    a row written between a seal's read and its drop stays."""
    everything = [Matcher("__name__", MatchOp.RE, "gen_.*")]
    before = {d.series.id: (d.timestamps, d.values.view(np.int64)) for d in await store.select(everything, T0 - HOUR_MS, T_END + HOUR_MS)}

    def rows_in(lo: int, hi: int) -> int:
        con = sqlite3.connect(tmp_path / "ringmon.db")
        try:
            return int(con.execute("SELECT count(*) FROM raw_chunks WHERE start_ts >= ? AND start_ts < ?", (lo, hi)).fetchone()[0])
        finally:
            con.close()

    assert rows_in(T0, T_END) > 0
    await make_job(store, tmp_path / "locks").run_once(initial_start_ms=T0)
    assert rows_in(T0, T_END) == 0 and rows_in(T0 - HOUR_MS, T0) > 0  # before the first window: not sealed
    after = {d.series.id: (d.timestamps, d.values.view(np.int64)) for d in await store.select(everything, T0 - HOUR_MS, T_END + HOUR_MS)}
    assert after.keys() == before.keys()
    for sid, (ts, bits) in before.items():
        np.testing.assert_array_equal(after[sid][0], ts)
        np.testing.assert_array_equal(after[sid][1], bits)
    # The flat read (``FlatRawReader``, as queries read) of the blocks gives the samples the
    # rows gave before the seal, the series in label order, for ranges across and on the
    # windows' edges (a block holding only the range's last millisecond, or none of it) and
    # inside one window.
    edge = T0 + WINDOW
    for lo, hi in [(T0 - HOUR_MS, T_END + HOUR_MS), (edge - 5 * MINUTE_MS, edge), (edge - 5 * MINUTE_MS, edge - 1),
                   (edge, edge + 5 * MINUTE_MS), (edge - 1, edge + 1), (T0 + 5 * MINUTE_MS, T0 + 20 * MINUTE_MS)]:
        flat = await store.select_flat(everything, lo, hi)
        assert [s.labels for s in flat.series] == sorted(s.labels for s in flat.series)
        want = {sid: (ts[(ts >= lo) & (ts <= hi)], bits[(ts >= lo) & (ts <= hi)]) for sid, (ts, bits) in before.items()}
        assert [s.id for s in flat.series] == sorted((sid for sid, (ts, _) in want.items() if ts.size),
                                                     key=lambda sid: next(s.labels for s in data if s.id == sid))
        for s, got in zip(flat.series, flat.as_data(), strict=True):
            np.testing.assert_array_equal(got.timestamps, want[s.id][0])
            np.testing.assert_array_equal(got.values.view(np.int64), want[s.id][1])
    s, (ts, _, target) = next(iter(data.items()))
    late_ts = int(ts[(ts >= T0) & (ts < T_END)][10])
    await store.write(SampleBatch(target, [s], [late_ts], [4242.5]))  # a new value for a sealed sample
    got = (await store.select([Matcher("__name__", MatchOp.EQ, s.metric), *[Matcher(k, MatchOp.EQ, v) for k, v in s.labels if k != "__name__"]], late_ts, late_ts))[0]
    assert got.values.tolist() == [4242.5]
    # A seal's read, then a write to one of the rows it read, then its drop: that row stays.
    window = await store.read_raw_window_arrays(0, 1, T0 - 5 * MINUTE_MS, T0 + WINDOW, seal_from_ms=T0)
    assert any(r[0] == s.id for r in window.sealed_rows)
    await store.write(SampleBatch(target, [s], [late_ts + 1], [1.0]))
    assert await store.drop_sealed_raw(window.sealed_rows) == len(window.sealed_rows) - 1
    assert rows_in(T0, T0 + WINDOW) == 1


async def test_blocks_table_of_an_older_database_becomes_a_rowid_table(tmp_path):
    """raw_blocks was a WITHOUT ROWID table (a 1 KB block overflowed into a page of its own):
    opening the file rebuilds it as a rowid table with its rows."""
    path = tmp_path / "old.db"
    con = sqlite3.connect(path)
    con.execute(
        "CREATE TABLE raw_blocks (series_id INTEGER NOT NULL, start_ts INTEGER NOT NULL, end_ts INTEGER NOT NULL,"
        " count INTEGER NOT NULL, first_ts INTEGER NOT NULL, last_ts INTEGER NOT NULL, data BLOB NOT NULL,"
        " PRIMARY KEY (series_id, start_ts)) WITHOUT ROWID"
    )
    con.execute("INSERT INTO raw_blocks VALUES (-5, ?, ?, 1, ?, ?, x'0102')", (T0, T0 + WINDOW, T0 + 1, T0 + 1))
    con.commit()
    con.close()
    store = await SQLiteRollupStorage.open(path)
    try:
        assert await store.get_checkpoint("rollup", 0) is None  # opens the rollup tables
    finally:
        await store.close()
    con = sqlite3.connect(path)
    try:
        sql = con.execute("SELECT sql FROM sqlite_master WHERE name = 'raw_blocks'").fetchone()[0]
        assert "WITHOUT ROWID" not in sql.upper()
        assert con.execute("SELECT * FROM raw_blocks").fetchall() == [(-5, T0, T0 + WINDOW, 1, T0 + 1, T0 + 1, b"\x01\x02")]
        assert con.execute("SELECT 1 FROM sqlite_master WHERE name = 'raw_blocks_span'").fetchone() is not None
        assert con.execute("SELECT 1 FROM sqlite_master WHERE name = 'raw_blocks_end'").fetchone() is not None
    finally:
        con.close()


async def test_window_reads_per_shard_and_series_written_since(store, data):
    """Each shard's window read holds exactly its series (one scan of the index serves every
    shard's read), negative ids by Python's modulo; a series written after a read is in the
    next read at once."""
    assert any(s.id < 0 for s in data) and any(s.id > 0 for s in data)
    got = {k: (await store.read_raw_window_arrays(k, SHARDS, T0, T0 + WINDOW)).ids.tolist() for k in range(SHARDS)}
    assert all(sid % SHARDS == k for k, ids in got.items() for sid in ids)
    assert sorted(sid for ids in got.values() for sid in ids) == sorted(s.id for s in data)
    new = Series.of(make_labels("added_later_total", k="x"))
    batch = SampleBatch("web/h9:9100")
    batch.add(new, T0 + MINUTE_MS, 1.0)
    await store.write(batch)
    again = await store.read_raw_window_arrays(new.id % SHARDS, SHARDS, T0, T0 + WINDOW)
    assert sorted(again.ids.tolist()) == sorted([*got[new.id % SHARDS], new.id])
