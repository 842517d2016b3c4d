"""The rollup job reseals windows that received late samples, on SQLite and on a real Cassandra.

Scenario: samples of three windows are written on time and sealed; then samples held back
from the middle window (and from the last minutes before the next window, which feed its
counter increases) are written late - timestamps in the past, written "now", so the store
marks their hours. Once the marks are settled the job's late pass redoes those windows:
blocks, 1m and 1h rows then equal a brute-force rollup of all samples, a rerun changes
nothing, and a late mark for a window not sealed yet costs no extra work.
"""

from __future__ import annotations

import asyncio
import sqlite3

import numpy as np
import pytest
from test_rollup import assert_equal_rollups, brute_force
from test_rollup_job import SHARDS, T0, T_END, WINDOW, batches, generate

from storage.base import HOUR_MS, MINUTE_MS, Resolution
from storage.model import SampleBatch, Series, make_labels
from storage.rollup import rollup_raw, rollup_rollup
from storage.rollup_job import (
    DEFAULT_LATE_SETTLE_MS,
    RollupJob,
    pack_late_cursor,
    unpack_late_cursor,
)
from storage.rollup_lease import LocalShardLease
from storage.sqlite_rollup import SQLiteRollupStorage, sealed_blocks

LATE_WINDOW = T0 + WINDOW  # the middle window gets late samples
NEXT_WINDOW = T0 + 2 * WINDOW  # fed by the late samples just before its start (counter carry)
WRITE_ON_TIME = T0 - 20 * MINUTE_MS  # clock while loading on-time data: nothing is late
FIRST_RUN = T_END + HOUR_MS  # all three windows closed
FUTURE = Series.of(make_labels("late_future_gauge", instance="h9:9100"))


class Clock:
    """The fake wall clock of the store (dates late marks) and of the job."""

    def __init__(self, now: int) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now


def split_late(data) -> tuple[dict, dict]:
    """(on-time part, late part) of every series: the late part is a 30-minute stretch of the
    middle window for half the series, plus the last 3 minutes of that window for all."""
    on_time, late = {}, {}
    for i, (s, (ts, v, target)) in enumerate(data.items()):
        held = (ts >= NEXT_WINDOW - 3 * MINUTE_MS) & (ts < NEXT_WINDOW)
        if i % 2 == 0:
            held |= (ts >= LATE_WINDOW + 20 * MINUTE_MS) & (ts < LATE_WINDOW + 50 * MINUTE_MS)
        on_time[s] = (ts[~held], v[~held], target)
        late[s] = (ts[held], v[held], target)
    return on_time, late


async def write(store, data) -> None:
    """One batch per target (a spool replay or a scrape), retrying Cassandra timeouts."""
    from storage.base import StorageError

    for b in batches(data):
        for attempt in range(6):
            try:
                await store.write(b)
                break
            except StorageError:
                if attempt == 5:
                    raise
                await asyncio.sleep(0.5 * 2**attempt)


async def blocks_of(store, series_id: int) -> tuple[np.ndarray, np.ndarray]:
    """The samples in the sealed blocks of [T0, T_END) of one series."""
    if hasattr(store, "read_blocks"):
        return await store.read_blocks(series_id, T0, T_END)

    def run(con: sqlite3.Connection):
        return [(ts, v) for sid, start, _, ts, v in sealed_blocks(con) if sid == series_id and T0 <= start < T_END]

    parts = await store.run_read(run)
    if not parts:
        return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.float64)
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


async def snapshot(store, series) -> dict:
    out = {}
    for s in series:
        b_ts, b_vals = await blocks_of(store, s.id)
        out[s.id] = (
            await store.read_rollup(Resolution.MINUTE, s.id, T0, T_END),
            await store.read_rollup(Resolution.HOUR, s.id, T0, T_END),
            b_ts,
            b_vals.view(np.uint64),
        )
    return out


def same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(
        m.bit_equal(b[k][0]) and h.bit_equal(b[k][1]) and np.array_equal(bt, b[k][2]) and np.array_equal(bv, b[k][3])
        for k, (m, h, bt, bv) in a.items()
    )


def assert_brute_force(snap: dict, data) -> None:
    """Blocks, 1m and 1h rows of [T0, T_END) equal a brute-force rollup of ``data``."""
    for s, (ts, v, _) in data.items():
        minutes, hours, b_ts, b_bits = snap[s.id]
        got = {
            int(t): {k: float(c[i]) for k, c in minutes.columns().items()} for i, t in enumerate(minutes.timestamps)
        }
        assert_equal_rollups(got, brute_force(ts, v, T0, T_END, MINUTE_MS))
        assert hours.bit_equal(rollup_rollup(rollup_raw(ts, v, T0, T_END, MINUTE_MS), HOUR_MS))
        inside = (ts >= T0) & (ts < T_END)
        np.testing.assert_array_equal(b_ts, ts[inside])
        np.testing.assert_array_equal(b_bits, v[inside].view(np.uint64))


def merged(*parts) -> dict:
    out = {}
    for s in parts[0]:
        ts = np.concatenate([p[s][0] for p in parts])
        v = np.concatenate([p[s][1] for p in parts])
        order = np.argsort(ts, kind="stable")
        out[s] = (ts[order], v[order], parts[0][s][2])
    return out


def late_count(job: RollupJob) -> float:
    return job.metrics.registry.get_sample_value("ringmon_rollup_windows_total", {"mode": "late"}) or 0.0


async def run_late_scenario(store, clock: Clock, lease_dir) -> None:
    data = generate(seed=7)
    on_time, late = split_late(data)
    assert sum(p[0].size for p in late.values()) > 100
    clock.now = WRITE_ON_TIME
    await write(store, on_time)
    clock.now = FIRST_RUN
    job = RollupJob(store, LocalShardLease(lease_dir), window_ms=WINDOW, shards=SHARDS, now_ms=clock)
    done = await job.run_once(initial_start_ms=T0)
    assert len(done) == SHARDS * 3 and {r.mode for r in done} == {"live"}
    sealed = await snapshot(store, data)
    assert_brute_force(sealed, on_time)

    # Late samples arrive (a spool replay): the middle window and, in another series, the
    # window after the checkpoint (not sealed yet).
    late_written = clock.now
    await write(store, late)
    f_ts = np.arange(T_END + 10 * MINUTE_MS, T_END + 20 * MINUTE_MS, 15_000, dtype=np.int64)
    await write(store, {FUTURE: (f_ts, np.arange(f_ts.size, dtype=np.float64), "web/h9:9100")})
    marks = await store.late_marks_since(late_written - 1)
    assert {h for h, _ in marks} == {LATE_WINDOW, LATE_WINDOW + HOUR_MS, T_END}
    assert {w for _, w in marks} == {late_written}

    # Not settled yet: nothing is redone, and the rows still miss the late samples.
    clock.now = late_written + DEFAULT_LATE_SETTLE_MS - 1
    assert await job.run_once() == []
    assert same(await snapshot(store, data), sealed)
    with pytest.raises(AssertionError):
        assert_brute_force(sealed, merged(on_time, late))

    # Settled: the late pass redoes the middle window and the next one, for every shard.
    clock.now = late_written + DEFAULT_LATE_SETTLE_MS + MINUTE_MS
    done = await job.run_once()
    assert {r.mode for r in done} == {"late"}
    assert sorted((r.shard, r.start_ms) for r in done) == sorted(
        (s, w) for s in range(SHARDS) for w in (LATE_WINDOW, NEXT_WINDOW)
    )
    assert late_count(job) == 2 * SHARDS
    resealed = await snapshot(store, data)
    assert_brute_force(resealed, merged(on_time, late))
    for s in range(SHARDS):
        cursor = await store.get_checkpoint("rollup:late", s)
        assert unpack_late_cursor(cursor) == (late_written, T_END)

    # A rerun changes nothing and does nothing.
    assert await job.run_once() == []
    assert same(await snapshot(store, data), resealed)
    # The window the future series was written into is sealed by the normal pass only.
    clock.now = T_END + WINDOW + HOUR_MS
    done = await job.run_once()
    assert sorted((r.shard, r.start_ms, r.mode) for r in done) == [(s, T_END, "live") for s in range(SHARDS)]
    assert late_count(job) == 2 * SHARDS
    assert same(await snapshot(store, data), resealed)


# -- SQLite ---------------------------------------------------------------------------------


@pytest.fixture
def clock():
    return Clock(WRITE_ON_TIME)


@pytest.fixture
async def sqlite_store(tmp_path, clock):
    s = await SQLiteRollupStorage.open(tmp_path / "ringmon.db", now_ms=clock)
    yield s
    await s.close()


async def test_late_samples_are_resealed_on_sqlite(sqlite_store, clock, tmp_path):
    await run_late_scenario(sqlite_store, clock, tmp_path / "locks")


async def test_late_pass_is_bounded_and_resumes(sqlite_store, clock, tmp_path):
    """One window per shard and pass: the marks are worked off over passes, none skipped."""
    data = generate(seed=3)
    on_time, late = split_late(data)
    await write(sqlite_store, on_time)
    clock.now = FIRST_RUN
    job = RollupJob(
        sqlite_store,
        LocalShardLease(tmp_path / "locks"),
        window_ms=WINDOW,
        shards=SHARDS,
        now_ms=clock,
        late_windows_per_pass=1,
    )
    await job.run_once(initial_start_ms=T0)
    await write(sqlite_store, late)  # one write: both hours' marks carry the same time
    clock.now += DEFAULT_LATE_SETTLE_MS + 1
    passes, backlog = [], []
    for _ in range(5):
        passes.append(sorted({r.start_ms for r in await job.run_once()}))
        backlog.append(job.metrics.registry.get_sample_value("ringmon_rollup_late_marks_pending"))
    # Hour 1 of the middle window feeds it; hour 2 feeds it and the next window (one mark's
    # windows are not split, so the middle window is redone twice).
    assert passes == [[LATE_WINDOW], [LATE_WINDOW, NEXT_WINDOW], [], [], []]
    assert backlog == [SHARDS, 0, 0, 0, 0]
    assert_brute_force(await snapshot(sqlite_store, data), merged(on_time, late))


class FailingOnce(SQLiteRollupStorage):
    """SQLite store whose block write of one window fails once, or whose late marks cannot
    be read once (storage hiccups)."""

    fail_window: int | None = None
    fail_marks: bool = False

    async def late_marks_since(self, cursor_ms):
        if self.fail_marks:
            self.fail_marks = False
            raise OSError("database is locked")
        return await super().late_marks_since(cursor_ms)

    async def write_plain_blocks(self, blocks):
        if self.fail_window is not None and any(b.start_ms == self.fail_window for b in blocks):
            self.fail_window = None
            raise OSError("disk hiccup")
        return await super().write_plain_blocks(blocks)


async def test_late_pass_retries_failures_and_leased_shards(clock, tmp_path):
    """A failed window and a shard held by another copy are redone by a later pass."""
    store = await FailingOnce.open(tmp_path / "ringmon.db", now_ms=clock)
    try:
        data = generate(seed=9)
        on_time, late = split_late(data)
        await write(store, on_time)
        clock.now = FIRST_RUN
        job = RollupJob(store, LocalShardLease(tmp_path / "locks"), window_ms=WINDOW, shards=SHARDS, now_ms=clock)
        await job.run_once(initial_start_ms=T0)
        await write(store, late)
        clock.now += DEFAULT_LATE_SETTLE_MS + 1
        store.fail_marks = True  # the first shard's late pass fails, the others go on
        done = await job.run_once()
        assert len(done) == 2 * (SHARDS - 1)
        assert job.metrics.registry.get_sample_value("ringmon_rollup_errors_total") == 1
        # Forget the late cursors, to test the failures below from the start.
        await store.run_write(lambda con: con.execute("DELETE FROM rollup_checkpoints WHERE job = 'rollup:late'"))
        other = LocalShardLease(tmp_path / "locks")
        assert await other.try_acquire(1)
        store.fail_window = NEXT_WINDOW  # the first shard to write that window fails
        done = await job.run_once()
        assert job.metrics.registry.get_sample_value("ringmon_rollup_errors_total") == 2
        first = {(r.shard, r.start_ms) for r in done}
        assert not any(shard == 1 for shard, _ in first)
        await other.release(1)
        done = await job.run_once()
        second = {(r.shard, r.start_ms) for r in done}
        everything = {(s, w) for s in range(SHARDS) for w in (LATE_WINDOW, NEXT_WINDOW)}
        assert first | second == everything and {(1, LATE_WINDOW), (1, NEXT_WINDOW)} <= second
        # The shard whose write failed redoes that mark's windows (both) in the next pass.
        failed = second - {(1, LATE_WINDOW), (1, NEXT_WINDOW)}
        assert len(failed) == 2 and len({shard for shard, _ in failed}) == 1
        assert await job.run_once() == []
        assert_brute_force(await snapshot(store, data), merged(on_time, late))
        await other.close()
    finally:
        await store.close()


async def raw_read(store, series) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """The raw samples in [T0, T_END) of ``series`` as a SQLite store reads them for a query
    (``raw_samples``: chunks, frames and blocks; retention dropped their index rows)."""
    ids = [s.id for s in series]
    got = await store.run_read(lambda con: store.raw_samples(con, ids, T0, T_END))
    return {sid: (ts, vals.view(np.uint64)) for sid, (ts, vals) in got.items()}


async def run_retention_scenario(store, clock: Clock, lease_dir, drop_raw_rows, read_raw: bool = False) -> None:
    """Raw rows gone (retention) before late samples and a corrected value arrive: the redo
    merges the late rows with the sealed blocks, a row winning over a block on equal ts.
    ``read_raw``: raw queries before and after the redo answer from the blocks of their time
    (SQLite keeps blocks decoded between reads: a resealed one must be read again)."""
    data = generate(seed=5)
    on_time, late = split_late(data)
    clock.now = WRITE_ON_TIME
    await write(store, on_time)
    clock.now = FIRST_RUN
    job = RollupJob(store, LocalShardLease(lease_dir), window_ms=WINDOW, shards=SHARDS, now_ms=clock)
    await job.run_once(initial_start_ms=T0)
    await drop_raw_rows()
    if read_raw:
        assert_same_answer(await raw_read(store, data), expected_answer(on_time, T0, T_END - 1))
    # A correction of a sealed sample (an operator backfill) plus the late samples.
    gauge = next(s for s in data if s.metric == "gen_gauge")
    g_ts, g_v, g_target = on_time[gauge]
    fix = int(np.searchsorted(g_ts, LATE_WINDOW + 70 * MINUTE_MS))
    await write(store, {gauge: (g_ts[fix : fix + 1], np.array([12345.5]), g_target)})
    await write(store, late)
    clock.now += DEFAULT_LATE_SETTLE_MS + 1
    done = await job.run_once()
    assert sorted((r.shard, r.start_ms) for r in done) == sorted(
        (s, w) for s in range(SHARDS) for w in (LATE_WINDOW, NEXT_WINDOW)
    )
    everything = merged(on_time, late)
    e_ts, e_v, _ = everything[gauge]
    e_v = e_v.copy()
    e_v[np.searchsorted(e_ts, g_ts[fix])] = 12345.5
    everything[gauge] = (e_ts, e_v, g_target)
    # Window 1 keeps what it had; the redone windows equal brute force over every sample
    # from T0 on (the carry-in before T0 went with the rows).
    snap = await snapshot(store, data)
    for s, (ts, v, _) in everything.items():
        minutes, _, b_ts, b_bits = snap[s.id]
        keep = minutes.timestamps >= LATE_WINDOW
        got = {
            int(t): {k: float(c[i]) for k, c in minutes.columns().items()}
            for i, t in enumerate(minutes.timestamps)
            if keep[i]
        }
        after_t0 = ts >= T0
        assert_equal_rollups(got, brute_force(ts[after_t0], v[after_t0], LATE_WINDOW, T_END, MINUTE_MS))
        inside = (ts >= LATE_WINDOW) & (ts < T_END)
        np.testing.assert_array_equal(b_ts[b_ts >= LATE_WINDOW], ts[inside])
        np.testing.assert_array_equal(b_bits[b_ts >= LATE_WINDOW], v[inside].view(np.uint64))
    m = snap[gauge.id][0]
    assert 12345.5 in m.max.tolist()
    if read_raw:
        assert_same_answer(await raw_read(store, data), expected_answer(everything, T0, T_END - 1))


async def test_late_samples_merge_with_blocks_after_raw_retention(sqlite_store, clock, tmp_path):
    async def drop() -> None:
        assert await sqlite_store.delete_raw_before(T_END + 24 * HOUR_MS) > 0

    await run_retention_scenario(sqlite_store, clock, tmp_path / "locks", drop, read_raw=True)


async def test_late_pass_alone(sqlite_store, clock, tmp_path):
    """``late_pass`` without the normal windows; a fresh job without checkpoints does nothing."""
    data = generate(seed=4)
    on_time, late = split_late(data)
    await write(sqlite_store, on_time)
    clock.now = FIRST_RUN
    job = RollupJob(sqlite_store, LocalShardLease(tmp_path / "locks"), window_ms=WINDOW, shards=SHARDS, now_ms=clock)
    await write(sqlite_store, late)
    clock.now += DEFAULT_LATE_SETTLE_MS + 1
    assert await job.late_pass() == []  # nothing sealed yet
    # Sealing reads the settled late rows: the marks are handled without a redo.
    done = await job.run_once(initial_start_ms=T0)
    assert len(done) == 3 * SHARDS and {r.mode for r in done} == {"live"}
    assert await job.late_pass() == []
    assert_brute_force(await snapshot(sqlite_store, data), merged(on_time, late))
    await write(sqlite_store, late)  # the same samples again: marked again, redone identically
    before = await snapshot(sqlite_store, data)
    clock.now += DEFAULT_LATE_SETTLE_MS + 1
    assert len(await job.late_pass()) == 2 * SHARDS
    assert same(await snapshot(sqlite_store, data), before)


async def test_sqlite_marks_only_late_writes(sqlite_store, clock):
    s = Series.of(make_labels("g", instance="a:1"))
    clock.now = T0 + HOUR_MS
    b = SampleBatch("t")
    b.add(s, clock.now - 30_000, 1.0)  # recent: no mark
    await sqlite_store.write(b)
    assert await sqlite_store.late_marks_since(-1) == []
    b = SampleBatch("t")
    b.add(s, T0 + 5 * MINUTE_MS, 2.0)  # older than late_after_ms
    b.add(s, clock.now - 1_000, 3.0)
    await sqlite_store.write(b)
    assert await sqlite_store.late_marks_since(-1) == [(T0, clock.now)]
    assert await sqlite_store.late_marks_since(clock.now) == []


def test_late_cursor_orders_like_its_pair():
    pairs = [(1_700_000_000_000, T0), (1_700_000_000_000, T0 + HOUR_MS), (1_700_000_000_001, T0 - HOUR_MS)]
    packed = [pack_late_cursor(*p) for p in pairs]
    assert packed == sorted(packed) and [unpack_late_cursor(c) for c in packed] == pairs
    with pytest.raises(ValueError):
        pack_late_cursor(1, -HOUR_MS)


def test_windows_fed_by_an_hour(tmp_path):
    job = RollupJob(None, LocalShardLease(tmp_path), window_ms=WINDOW, shards=SHARDS)  # type: ignore[arg-type]
    assert job.windows_fed_by_hour(LATE_WINDOW) == [LATE_WINDOW]
    assert job.windows_fed_by_hour(LATE_WINDOW + HOUR_MS) == [LATE_WINDOW, NEXT_WINDOW]
    job.max_gap_ms = 0
    assert job.windows_fed_by_hour(LATE_WINDOW + HOUR_MS) == [LATE_WINDOW]


# -- Cassandra ------------------------------------------------------------------------------


@pytest.fixture
async def cassandra_store(cassandra, clock):
    """A fresh keyspace per test, the store on the fake clock."""
    from fixtures_cassandra import keyspace_store

    from storage.cassandra_rollup import CassandraRollupStorage

    loop = asyncio.get_running_loop()
    ctx = keyspace_store(cassandra, "late", CassandraRollupStorage)
    store = await loop.run_in_executor(None, ctx.__enter__)
    store._now_ms = clock
    try:
        yield store
    finally:
        await loop.run_in_executor(None, ctx.__exit__, None, None, None)


@pytest.mark.cassandra
async def test_late_samples_are_resealed_on_cassandra(cassandra_store, clock, tmp_path):
    await run_late_scenario(cassandra_store, clock, tmp_path / "locks")


@pytest.mark.cassandra
async def test_late_samples_merge_with_blocks_on_cassandra(cassandra_store, clock, tmp_path):
    """raw_recent emptied and older than ``recent_raw_keep_ms``: the job reads blocks + late rows."""

    async def drop() -> None:
        await cassandra_store.execute(f"TRUNCATE {cassandra_store.keyspace}.raw_recent")
        cassandra_store.recent_raw_keep_ms = HOUR_MS

    await run_retention_scenario(cassandra_store, clock, tmp_path / "locks", drop)


async def raw_hours(store) -> dict[str, set[int]]:
    """Per raw table, the hours (ms) that have rows (tombstoned partitions read as none)."""
    out: dict[str, set[int]] = {}
    for table in ("raw_frames", "raw_recent"):
        pages = await store.execute(f"SELECT DISTINCT target, hour FROM {store.keyspace}.{table}")
        out[table] = {int(r[1]) * HOUR_MS for page in pages for r in page}
    return out


async def raw_answer(store, series, start: int, end: int) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """What a raw query of every series answers in [start, end]: id -> (ts, value bits)."""
    from storage.matchers import Matcher, MatchOp

    got = await store.select([Matcher("__name__", MatchOp.RE, "gen_.*")], start, end)
    assert {d.series.id for d in got} == {s.id for s in series}
    return {d.series.id: (np.asarray(d.timestamps), np.asarray(d.values).view(np.uint64)) for d in got}


def expected_answer(data, start: int, end: int) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    out = {}
    for s, (ts, v, _) in data.items():
        inside = (ts >= start) & (ts <= end)
        out[s.id] = (ts[inside], v[inside].view(np.uint64))
    return out


def assert_same_answer(got: dict, want: dict) -> None:
    assert got.keys() == want.keys()
    for k, (ts, bits) in want.items():
        np.testing.assert_array_equal(got[k][0], ts)
        np.testing.assert_array_equal(got[k][1], bits)


@pytest.mark.cassandra
async def test_sealed_raw_is_dropped_on_cassandra(cassandra_store, clock, tmp_path):
    """Once every shard sealed an hour and reads take it from blocks, its raw partitions
    (frames and rows) are tombstoned: raw answers and rollups stay the same, late samples
    written after the drop are folded in from blocks plus the late rows, and an hour whose
    late mark is not handled yet keeps its raw input until its reseal."""
    store = cassandra_store
    store.raw_drop_skew_ms = 0  # (writes here are awaited: nothing in flight)
    data = generate(seed=11)
    on_time, late = split_late(data)
    third = T0 + 2 * WINDOW  # the last window: late samples before its drop
    for i, (s, (ts, v, target)) in enumerate(list(on_time.items())):
        if i % 3 == 0:
            held = (ts >= third + 10 * MINUTE_MS) & (ts < third + 30 * MINUTE_MS)
            late[s] = tuple(np.concatenate([a, b[held]]) for a, b in zip(late[s][:2], (ts, v), strict=True)) + (target,)
            on_time[s] = (ts[~held], v[~held], target)
    everything = merged(on_time, late)
    clock.now = WRITE_ON_TIME
    await write(store, on_time)
    assert T0 + HOUR_MS in (await raw_hours(store))["raw_frames"]
    truth = await raw_answer(store, data, T0, T_END - 1)  # every hour from raw input
    assert_same_answer(truth, expected_answer(on_time, T0, T_END - 1))
    await store.set_checkpoint("rollup:drop", 0, T0)  # (the job's first call would record where it stood)

    # Sealed at T_END + 1 h; the hours older than raw_hot_ms go: windows 1 and 2.
    clock.now = FIRST_RUN
    job = RollupJob(store, LocalShardLease(tmp_path / "locks"), window_ms=WINDOW, shards=SHARDS, now_ms=clock)
    done = await job.run_once(initial_start_ms=T0)
    assert len(done) == SHARDS * 3
    dropped_until = (FIRST_RUN - store.raw_hot_ms) // HOUR_MS * HOUR_MS
    assert dropped_until == third and await store.get_checkpoint("rollup:drop", 0) == third
    left = await raw_hours(store)
    for table in ("raw_frames", "raw_recent"):
        assert not {h for h in left[table] if T0 <= h < third}, table
    assert {third, third + HOUR_MS} <= left["raw_frames"]
    assert_brute_force(await snapshot(store, data), on_time)
    assert_same_answer(await raw_answer(store, data, T0, T_END - 1), truth)
    assert_same_answer(await raw_answer(store, data, T0 + 30 * MINUTE_MS, T0 + 90 * MINUTE_MS),
                       expected_answer(on_time, T0 + 30 * MINUTE_MS, T0 + 90 * MINUTE_MS))

    # Late samples into dropped hours and into the last window, whose drop is due meanwhile:
    # the unhandled late mark holds its raw input back.
    clock.now = T_END + store.raw_hot_ms + 5 * MINUTE_MS
    late_written = clock.now
    await write(store, late)
    clock.now += MINUTE_MS
    done = await job.run_once()  # not settled: no reseal, and no drop of the last window
    assert {r.mode for r in done} == {"live"}
    assert await store.get_checkpoint("rollup:drop", 0) == third
    assert {third, third + HOUR_MS} <= (await raw_hours(store))["raw_frames"]

    # Settled: the late pass reseals windows 2 and 3 (2 from blocks + late rows), then the
    # last window's raw input goes too.
    clock.now = late_written + DEFAULT_LATE_SETTLE_MS + MINUTE_MS
    done = await job.run_once()
    assert sorted((r.shard, r.start_ms) for r in done) == sorted(
        (s, w) for s in range(SHARDS) for w in (LATE_WINDOW, third)
    )
    assert await store.get_checkpoint("rollup:drop", 0) == T_END
    left = await raw_hours(store)
    assert not {h for t in left.values() for h in t if T0 <= h < T_END}
    assert_brute_force(await snapshot(store, data), everything)
    assert_same_answer(await raw_answer(store, data, T0, T_END - 1), expected_answer(everything, T0, T_END - 1))
    assert job.metrics.registry.get_sample_value("ringmon_rollup_raw_partitions_dropped_total") > 0
    # (the seal's write batches were sized by this node's batch thresholds: 256 KiB, 256 partitions)
    assert await store._batch_limits() == (128, 128 << 10)  # (half of each)


def spooled_frames(spool) -> list:
    """Every frame of the records in ``spool``, in spool order."""
    from storage.spool import Position, decode_batch

    out = []
    for seg in spool.segments():
        pos = Position(seg, 0)
        while (item := spool.read(pos)) is not None:
            record, pos = item
            out += decode_batch(record).frames
    return out


@pytest.mark.cassandra
async def test_a_cut_off_writer_holds_the_drop_of_its_spooled_hour(cassandra, cassandra_store, clock, tmp_path):
    """A writer stores frames of an hour, then loses its path to Cassandra and spools the
    rest of the chain (XOR'd with a stored frame). The job seals that hour meanwhile; the
    writer's raw floor holds its drop back. Once the writer is back and has replayed, the
    late pass reseals the hour and the drop goes ahead: every sample reads back bit for bit."""
    from tcp_relay import TcpRelay
    from waiting import wait_for

    from storage.cassandra import CassandraStorage
    from storage.matchers import Matcher, MatchOp
    from storage.writer import BatchingWriter

    store = cassandra_store
    store.raw_drop_skew_ms = 0  # (the job's writes are awaited; the writer's are done before it)
    relay = await TcpRelay(cassandra.host, cassandra.port).start()
    path = await CassandraStorage.connect(["127.0.0.1"], relay.port, store.keyspace)
    path._now_ms = clock
    writer = BatchingWriter(path, tmp_path / "spool", retry_interval_s=0.2, slow_after_s=1.0, group_s=0)
    series = [Series.of(make_labels("cutoff_gauge", instance="h1:9100", idx=str(i))) for i in range(20)]
    t0 = T0 + 10 * MINUTE_MS  # ten scrapes in one key span (5 min) of the hour T0
    stamps = [t0 + k * 10_000 for k in range(10)]

    def value(k: int, i: int) -> float:
        return 1000.0 * k + i + 0.25

    async def scrape(k: int) -> None:
        clock.now = stamps[k]
        batch = SampleBatch("pool/h1:9100")
        for i, s in enumerate(series):
            batch.add(s, stamps[k], value(k, i))
        await writer.append(batch)

    try:
        clock.now = t0
        floor = await writer.publish_floor()
        assert T0 <= floor < t0
        for k in range(5):
            await scrape(k)
        await writer.flush()
        assert writer.queue_depth() == 0 and writer.mode == writer.DIRECT

        await relay.cut()
        for k in range(5, 10):
            await scrape(k)
        await wait_for(lambda: asyncio.sleep(0, writer.mode == writer.SPOOLING), "the writer spooling")
        chained = [f for f in spooled_frames(writer.spool) if f.ts == stamps[5]]
        assert chained and chained[0].base_ts == stamps[4]  # XOR'd with a frame stored before the cut

        # The hour is sealed and old enough to drop: the cut-off writer's floor holds it.
        await store.set_checkpoint("rollup:drop", 0, T0)
        clock.now = T0 + HOUR_MS + store.raw_hot_ms + MINUTE_MS
        job = RollupJob(store, LocalShardLease(tmp_path / "locks"), window_ms=HOUR_MS, shards=1, now_ms=clock)
        assert T0 in {r.start_ms for r in await job.run_once(initial_start_ms=T0)}
        assert await store.get_checkpoint("rollup:drop", 0) == T0
        assert T0 in (await raw_hours(store))["raw_frames"]

        # Back: the spool replays (late writes), the floor moves on, the hour is resealed and dropped.
        await relay.restore()
        assert await writer.drain(120)
        assert await writer.publish_floor() > T0 + HOUR_MS
        clock.now += DEFAULT_LATE_SETTLE_MS + MINUTE_MS
        assert T0 in {r.start_ms for r in await job.run_once()}  # the late pass
        assert await store.get_checkpoint("rollup:drop", 0) == T0 + HOUR_MS
        assert T0 not in (await raw_hours(store))["raw_frames"]
        got = await store.select([Matcher("__name__", MatchOp.EQ, "cutoff_gauge")], T0, T0 + HOUR_MS - 1)
        by_id = {d.series.id: d for d in got}
        for i, s in enumerate(series):
            assert by_id[s.id].timestamps.tolist() == stamps
            assert by_id[s.id].values.tolist() == [value(k, i) for k in range(10)]
    finally:
        await writer.close()
        await path.close()
        await relay.cut()
