"""The rollup job on a real Cassandra: rows equal brute force, reruns change nothing, blocks bit-exact."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import pytest
from fixtures_cassandra import keyspace_store
from test_rollup import assert_equal_rollups, brute_force
from test_rollup_job import DAY0, HOURS, SHARDS, T0, T_END, WINDOW, generate

from storage import rollup_chunks
from storage.base import AGGREGATES, DAY_MS, HOUR_MS, MINUTE_MS, Resolution
from storage.blocks import TIMES, VERSION_SHARED_TIMES, inline_times, times_key
from storage.cassandra_rollup import RECENT_RAW_MS, CassandraRollupMixin
from storage.matchers import Matcher, MatchOp
from storage.rollup import rollup_raw, rollup_rollup
from storage.rollup_job import RollupJob
from storage.rollup_lease import LocalShardLease

pytestmark = pytest.mark.cassandra


@pytest.fixture(scope="module")
def cassandra_rollup(cassandra):
    from storage.cassandra_rollup import CassandraRollupStorage

    with keyspace_store(cassandra, "rollup", CassandraRollupStorage) as store:
        yield store


@contextmanager
def chunk_reads(store, table: str) -> Iterator[list[str]]:
    """The SELECTs naming ``table`` that ``store`` sends to the real node while inside, in order."""
    reads: list[str] = []
    plain = store.execute

    async def counted(statement, *args, **kw):
        query = getattr(statement, "query_string", "")
        if table in query and query.startswith("SELECT"):
            reads.append(query)
        return await plain(statement, *args, **kw)

    store.execute = counted
    try:
        yield reads
    finally:
        del store.execute


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
        # The blocks of a target's window name their shared timestamp frame (version 4): read
        # from raw_block_times when the process keeps none; blocks of version 3 (written
        # before) read the same beside them.
        ks = store.keyspace
        blocks = [r for page in await store.execute(f"SELECT series_id, day, start_ts, data FROM {ks}.raw_blocks")
                  for r in page]
        frames = {k: d for page in await store.execute(f"SELECT key, data FROM {ks}.raw_block_times") for k, d in page}
        assert VERSION_SHARED_TIMES in {r[3][0] for r in blocks} and frames
        TIMES.clear()
        check(await store.select(every, T0, T_END - 1))
        old = [(inline_times(d, frames[times_key(d)]), sid, day, start) for sid, day, start, d in blocks[::2]
               if d[0] == VERSION_SHARED_TIMES]
        update = f"UPDATE {ks}.raw_blocks SET data = ? WHERE series_id = ? AND day = ? AND start_ts = ?"
        ps = store.session.prepare(update)
        await asyncio.gather(*(store.execute(ps, params) for params in old))
        TIMES.clear()
        check(await store.select(every, T0, T_END - 1))
        # A rerun now works from the blocks alone and still writes identical rows.
        await job.backfill(T0, T_END)
        after = await snapshot(store, data)
        for sid, (m, h, _) in before.items():
            assert m.bit_equal(after[sid][0]) and h.bit_equal(after[sid][1])
    finally:
        store.recent_raw_keep_ms = CassandraRollupMixin.recent_raw_keep_ms


# -- raw selects: sealed windows from blocks, the rest from rows ------------------------------


def _expect(got, data: dict) -> None:
    by_id = {d.series.id: d for d in got}
    assert set(by_id) == set(data)
    for sid, (ts, v) in data.items():
        np.testing.assert_array_equal(by_id[sid].timestamps, ts)
        np.testing.assert_array_equal(by_id[sid].values.view(np.uint64), v.view(np.uint64))


async def test_select_takes_sealed_windows_from_blocks_and_late_writes_from_rows(cassandra_rollup, tmp_path):
    """Written as if scraped live, sealed by the job: sealed hours come from blocks (their rows
    can go), the last hours from rows; a late write into a sealed hour is still read (from its
    rows) until a reseal after it puts it into the block."""
    from storage.model import STALE_NAN, Series, make_labels

    store = cassandra_rollup
    now = int(time.time() * 1000)
    start = (now - 10 * HOUR_MS) // 10_000 * 10_000
    target = "sealed/h1:9100"
    series = [Series.of(make_labels("sealed_read", instance="h1:9100", idx=str(i))) for i in range(3)]
    ts = np.arange(start, now + 1, 10_000, dtype=np.int64)
    data = {}
    for i, s in enumerate(series):
        v = i * 1000 + np.arange(ts.size) * 0.25
        v[ts.size // 3] = STALE_NAN
        v[ts.size // 2] = -0.0
        data[s.id] = (ts, v)
    ms = [Matcher("__name__", MatchOp.EQ, "sealed_read")]
    store._now_ms = lambda: now
    store.late_after_ms = 100 * 365 * 24 * HOUR_MS  # loaded in a burst, but as if scraped live
    try:
        ids = np.repeat([s.id for s in series], ts.size)
        vals = np.concatenate([data[s.id][1] for s in series])
        await store.write_columns(target, ids, np.tile(ts, len(series)), vals, series)
        assert await store.late_hours(start, now) == {}
        job = RollupJob(store, LocalShardLease(tmp_path / "locks"), window_ms=WINDOW, shards=2, now_ms=lambda: now)
        await job.backfill(start - WINDOW, now)
        sealed_until = job.closed_until()
        _expect(await store.select(ms, start, now), data)
        # (the query engine's flat read: the same, sealed hours or only the newest ones)
        _expect((await store.select_flat(ms, start, now)).as_data(), data)
        recent = now - 20 * 60_000
        _expect((await store.select_flat(ms, recent, now)).as_data(),
                {sid: (t[t >= recent], v[t >= recent]) for sid, (t, v) in data.items()})

        # Sealed hours no longer need their rows: blocks answer them.
        first_hot = (now - RECENT_RAW_MS) // HOUR_MS
        late_hour = start // HOUR_MS + 2
        late_window = {h for h in range(late_hour - late_hour % 2, late_hour - late_hour % 2 + 2)}
        assert (late_hour + 2) * HOUR_MS <= sealed_until
        for h in range(start // HOUR_MS, first_hot):
            if h not in late_window:
                await store.execute(f"DELETE FROM {store.keyspace}.raw_recent WHERE target = %s AND hour = %s", (target, h))
        _expect(await store.select(ms, start, now), data)
        # The flat read of cold ranges on a window's edge (the next window's block holds the
        # range's last millisecond at most; blocks cut by their first and last timestamps),
        # in a window, and across the cold and hot hours.
        edge = (start // WINDOW + 2) * WINDOW
        for lo, hi in [(edge - 300_000, edge), (edge - 300_000, edge - 1), (edge, edge + 300_000), (edge - 1, edge + 1),
                       (edge + 60_000, edge + 600_000), (edge - 300_000, now)]:
            assert hi < first_hot * HOUR_MS or lo < first_hot * HOUR_MS <= hi
            _expect((await store.select_flat(ms, lo, hi)).as_data(),
                    {sid: (t[(t >= lo) & (t <= hi)], v[(t >= lo) & (t <= hi)]) for sid, (t, v) in data.items()})

        # A late write into a sealed hour (a spool replay): marked, read from rows and merged.
        del store.late_after_ms  # back to the class default
        late_ts = late_hour * HOUR_MS + 5_003
        s0 = series[0]
        await store.write_columns(target, [s0.id], [late_ts], [42.5], [s0])
        assert set(await store.late_hours(start, now)) == {late_hour}
        ts0, v0 = data[s0.id]
        at = np.searchsorted(ts0, late_ts)
        data[s0.id] = (np.insert(ts0, at, late_ts), np.insert(v0, at, 42.5))
        _expect(await store.select(ms, start, now), data)

        # Resealed after the late write: the block holds it, the rows are not needed any more.
        store.late_seal_margin_ms = 0
        await job.backfill(late_hour * HOUR_MS, late_hour * HOUR_MS + 1)
        for h in late_window:
            await store.execute(f"DELETE FROM {store.keyspace}.raw_recent WHERE target = %s AND hour = %s", (target, h))
        _expect(await store.select(ms, start, now), data)
        # With the default margin the reseal is too close to the late write to be trusted:
        # the hour is read from (now deleted) rows and blocks merged - still complete.
        del store.late_seal_margin_ms  # back to the class default
        _expect(await store.select(ms, start, now), data)
    finally:
        store._now_ms = None
        vars(store).pop("late_after_ms", None)
        vars(store).pop("late_seal_margin_ms", None)


async def test_sealed_reads_fetch_only_blocks_not_kept_and_follow_reseals(cassandra_rollup, tmp_path):
    """A read of sealed hours reads the blocks' keys and write times, and fetches the bytes of
    those it does not keep decoded at that write time only: a second read fetches none and
    answers the same bits; after a late write and its window's reseal (the rows gone, so the
    new blocks alone hold the late sample) the next read fetches that window's blocks and
    answers with it; a deleted block is not answered from what was kept."""
    from storage.model import Series, make_labels

    store = cassandra_rollup
    now = int(time.time() * 1000)
    start = (now - 9 * HOUR_MS) // 10_000 * 10_000
    target = "kept/h1:9100"
    series = [Series.of(make_labels("kept_read", instance="h1:9100", idx=str(i))) for i in range(3)]
    ts = np.arange(start, now + 1, 10_000, dtype=np.int64)
    data = {s.id: (ts, i * 1000 + np.arange(ts.size) * 0.5) for i, s in enumerate(series)}
    ms = [Matcher("__name__", MatchOp.EQ, "kept_read")]
    ks = store.keyspace
    store._now_ms = lambda: now
    store.late_after_ms = 100 * 365 * 24 * HOUR_MS  # loaded in a burst, but as if scraped live
    try:
        await store.write_columns(target, np.repeat([s.id for s in series], ts.size), np.tile(ts, len(series)),
                                  np.concatenate([data[s.id][1] for s in series]), series)
        job = RollupJob(store, LocalShardLease(tmp_path / "locks"), window_ms=WINDOW, shards=2, now_ms=lambda: now)
        await job.backfill(start - WINDOW, now)
        first_hot = (now - RECENT_RAW_MS) // HOUR_MS
        late_window = (start // WINDOW + 1) * WINDOW  # a sealed window inside the range read
        window_hours = range(late_window // HOUR_MS, (late_window + WINDOW) // HOUR_MS)
        for h in range(start // HOUR_MS, first_hot):  # the sealed hours' rows gone: blocks alone answer them
            if h not in window_hours:  # (a reseal reads its window's rows while they are kept)
                await store.execute(f"DELETE FROM {ks}.raw_recent WHERE target = %s AND hour = %s", (target, h))
        lo, hi = late_window - WINDOW - 30 * MINUTE_MS, first_hot * HOUR_MS - 1
        assert late_window + WINDOW <= job.closed_until() and late_window + WINDOW <= hi

        def expect(want: dict, a: int = lo, z: int = hi) -> dict:  # (series without samples there left out)
            return {sid: (t[(t >= a) & (t <= z)], v[(t >= a) & (t <= z)]) for sid, (t, v) in want.items()
                    if ((t >= a) & (t <= z)).any()}

        fetched = store.blocks_fetched
        first = await store.select_flat(ms, lo, hi)
        _expect(first.as_data(), expect(data))
        assert store.blocks_fetched > fetched
        fetched = store.blocks_fetched
        hits = store.blocks_joined_hits
        again = await store.select_flat(ms, lo, hi)
        assert store.blocks_fetched == fetched  # every block kept at its write time
        _expect(again.as_data(), expect(data))
        assert store.blocks_joined_hits == hits  # (a set read twice is joined for the next reads)
        # The same blocks read again, for ranges cut inside blocks, on samples and between them
        # (the keys' set unchanged: the first block still ends after each start, the last
        # starts by each end): cut joined. Ranges of other sets: read block by block.
        a_on = int(ts[np.searchsorted(ts, lo + 7 * MINUTE_MS)])
        z_on = int(ts[np.searchsorted(ts, hi - 13 * MINUTE_MS) - 1])
        for a, z in ((lo, hi), (lo + 7 * MINUTE_MS + 1, hi - 13 * MINUTE_MS), (a_on, z_on), (a_on + 1, z_on - 1),
                     (a_on - 1, z_on + 1)):
            _expect((await store.select_flat(ms, a, z)).as_data(), expect(data, a, z))
        assert store.blocks_joined_hits == hits + 5
        for a, z in ((a_on, a_on), (late_window - 1, late_window + WINDOW // 2), (hi - 1, hi), (hi - 10_000, hi)):
            _expect((await store.select_flat(ms, a, z)).as_data(), expect(data, a, z))
        assert store.blocks_joined_hits == hits + 5
        assert store.blocks_fetched == fetched

        # A late write into the window, resealed (trusted at once), then its rows deleted.
        del store.late_after_ms  # back to the class default: the write is marked late
        late_ts = late_window + HOUR_MS + 5_003
        s0 = series[0]
        await store.write_columns(target, [s0.id], [late_ts], [42.5], [s0])
        store.late_seal_margin_ms = 0
        await job.backfill(late_window, late_window + 1)
        for h in window_hours:
            await store.execute(f"DELETE FROM {ks}.raw_recent WHERE target = %s AND hour = %s", (target, h))
        t0, v0 = data[s0.id]
        at = int(np.searchsorted(t0, late_ts))
        data[s0.id] = (np.insert(t0, at, late_ts), np.insert(v0, at, 42.5))
        hits = store.blocks_joined_hits
        _expect((await store.select_flat(ms, lo, hi)).as_data(), expect(data))
        assert store.blocks_fetched == fetched + len(series)  # the resealed window's blocks only
        assert store.blocks_joined_hits == hits  # (the joined set was of the blocks before the reseal)
        fetched = store.blocks_fetched
        for _ in range(3):  # (read, joined, then answered joined: with the late sample)
            _expect((await store.select_flat(ms, lo, hi)).as_data(), expect(data))
        _expect((await store.select_flat(ms, late_ts, late_ts)).as_data(), expect(data, late_ts, late_ts))
        assert store.blocks_fetched == fetched
        assert store.blocks_joined_hits == hits + 2

        # A block deleted: its samples are gone from the answer (no rows left either).
        s1 = series[1]
        await store.execute(f"DELETE FROM {ks}.raw_blocks WHERE series_id = %s AND day = %s AND start_ts = %s",
                            (s1.id, late_window // DAY_MS, late_window))
        t1, v1 = data[s1.id]
        gone = (t1 >= late_window) & (t1 < late_window + WINDOW)
        data[s1.id] = (t1[~gone], v1[~gone])
        _expect((await store.select_flat(ms, lo, hi)).as_data(), expect(data))
    finally:
        store._now_ms = None
        vars(store).pop("late_after_ms", None)
        vars(store).pop("late_seal_margin_ms", None)


async def test_rollup_selects_keep_chunks_and_read_rewritten_ones_again(cassandra_rollup):
    """Selects go through the chunk cache (``storage.chunk_cache``, versions by writetime): a
    second read takes kept chunks and answers the same bits; a rewritten chunk is read again."""
    from storage.model import SampleBatch, Series, make_labels
    from storage.rollup import Rollup
    from storage.rollup_job import RollupRows

    store = cassandra_rollup
    t0 = T0 // (6 * HOUR_MS) * (6 * HOUR_MS)
    ss = [Series.of(make_labels("cache_m", instance=i)) for i in ("a", "b")]
    await store.write(SampleBatch("cache/t", ss, [t0, t0], [1.0, 2.0]))
    rng = np.random.default_rng(3)

    def rollup(ts: list[int]) -> Rollup:
        n = len(ts)
        cols = {k: rng.random(n) * 100 for k in ("count", "sum", "min", "max", "last", "increase", "first", "correction")}
        cols["first_ts"] = cols["last_ts"] = np.asarray(ts, dtype=np.float64) + 1000
        return Rollup.from_columns(np.asarray(ts, dtype=np.int64), cols)

    await store.write_rollups(Resolution.MINUTE, [RollupRows(s.id, rollup([t0 + i * MINUTE_MS for i in range(500)])) for s in ss])
    name = [Matcher("__name__", MatchOp.EQ, "cache_m")]

    async def sel() -> dict:
        got = await store.select_rollup(name, t0 + MINUTE_MS, t0 + 12 * HOUR_MS, Resolution.MINUTE)
        return {d.series.get("instance"): Rollup.from_columns(d.timestamps, d.agg) for d in got}

    first = await sel()
    cache = store._chunk_caches[Resolution.MINUTE]
    hits = cache.hits
    again = await sel()
    assert cache.hits == hits + 4 and all(again[k].bit_equal(first[k]) for k in first)
    late = rollup([t0 + 7 * MINUTE_MS])
    await store.write_rollups(Resolution.MINUTE, [RollupRows(ss[0].id, late)])
    now = await sel()
    assert cache.hits == hits + 7 and now["a"].last[6] == late.last[0] and now["b"].bit_equal(first["b"])
    assert len(now["a"]) == 499 and now["a"].last[7] == first["a"].last[7]
    # The fresh pass's provisional chunks are kept too (under their writetime): two 10-minute
    # blocks' each.
    fresh = rollup([t0 + i * MINUTE_MS for i in range(500, 520)])
    await store.write_fresh_minutes([RollupRows(s.id, fresh) for s in ss])
    read = await sel()
    hits = cache.hits
    again = await sel()
    assert cache.hits == hits + 8 and all(again[k].bit_equal(read[k]) for k in read)
    assert len(again["a"]) == 519 and again["b"].last[-1] == fresh.last[-1]


async def test_write_seal_of_a_window_across_two_minute_chunks(cassandra_rollup):
    """``write_seal`` sends a series' block with its 1m chunks of that day (one partition
    key) and the deletes of the fresh pass's provisional chunks of the window in one
    request: blocks and rollups read back as computed, the window's provisional chunks are
    gone, the next window's stay."""
    from storage.rollup import Rollup
    from storage.rollup_job import RawWindow, RollupRows, compute_window

    store = cassandra_rollup
    start, end = T0 + 2 * HOUR_MS, T0 + 6 * HOUR_MS  # 4 h from 04:00: 1m chunks [00:00, 06:00) and [06:00, 12:00)
    ts = np.arange(start, end, 15_000, dtype=np.int64)
    ids = np.array([7_000_001, 7_000_002], dtype=np.int64)
    vals = np.concatenate([np.cumsum(np.ones(ts.size)), np.sin(np.arange(ts.size))])
    window = RawWindow(ids, np.array([0, ts.size, 2 * ts.size]), np.concatenate([ts, ts]), vals)
    blocks, minutes, hours = compute_window(window, start, end)
    # Fresh passes over 05:10-06:50 (cut at each 10-minute block: 05:10 ... 06:40; the span's
    # first minute, 06:00, merged into its chunk, the rest of its block keyed 06:01) and
    # 06:50-07:20 (06:50, 07:00, 07:10), and one of the next window (08:03).
    nxt = [Rollup(r.timestamps + end + 3 * MINUTE_MS - start, *(getattr(r, n) for n in AGGREGATES))
           for r in (m.rollup.slice(start, start + 5 * MINUTE_MS) for m in minutes)]
    for lo, hi in ((70, 170), (170, 200)):
        await store.write_fresh_minutes(
            [RollupRows(m.series_id, m.rollup.slice(start + lo * MINUTE_MS, start + hi * MINUTE_MS)) for m in minutes])
    await store.write_fresh_minutes([RollupRows(m.series_id, r) for m, r in zip(minutes, nxt, strict=True)])
    keyed = {start + (m + (m == 120)) * MINUTE_MS for m in range(70, 200, 10)}
    assert await provisional_keys(store, ids, start // DAY_MS) == {(sid, t) for sid in ids.tolist()
                                                                   for t in (*keyed, end + 3 * MINUTE_MS)}
    await store.write_seal(blocks, minutes, hours)
    assert await provisional_keys(store, ids, start // DAY_MS) == {(sid, end + 3 * MINUTE_MS) for sid in ids.tolist()}
    for m, r in zip(minutes, nxt, strict=True):
        assert (await store.read_rollup(Resolution.MINUTE, m.series_id, end, end + HOUR_MS)).bit_equal(r)
    for i, sid in enumerate(ids.tolist()):
        b_ts, b_vals = await store.read_blocks(sid, start, end)
        np.testing.assert_array_equal(b_ts, ts)
        np.testing.assert_array_equal(b_vals.view(np.uint64), vals[i * ts.size : (i + 1) * ts.size].view(np.uint64))
        assert (await store.read_rollup(Resolution.MINUTE, sid, start, end)).bit_equal(minutes[i].rollup)
        assert (await store.read_rollup(Resolution.HOUR, sid, start, end)).bit_equal(hours[i].rollup)
    # stored compact (``rollup_chunks.compact_columns``): bucket starts a minute apart, a count of 4 a minute
    got = await store.execute(f"SELECT start_ts, c_ts, c_count FROM {store.keyspace}.rollup_1m_chunks WHERE"
                              " series_id = %s AND day = %s AND start_ts < %s", (int(ids[0]), start // DAY_MS, end))
    assert [(len(ts_v), ts_v[0], count_v[0]) for page in got for _, ts_v, count_v in page] == [
        (21, rollup_chunks.LINEAR, rollup_chunks.REPEAT)] * 2


async def provisional_keys(store, ids, day: int) -> set[tuple[int, int]]:
    """(series id, key) of the provisional 1m chunks of ``ids`` in partition ``day``."""
    out = set()
    for sid in ids.tolist():
        got = await store.execute(f"SELECT start_ts FROM {store.keyspace}.rollup_1m_chunks"
                                  " WHERE series_id = %s AND day = %s", (sid, day))
        out |= {(sid, t) for page in got for (t,) in page if rollup_chunks.is_provisional(Resolution.MINUTE, t)}
    return out


async def test_seal_batches_are_the_drivers(cassandra_rollup):
    """``partition_batches`` of packed rows (``pack_values``) makes the batches the driver's
    ``BatchStatement.add`` of bound statements makes: each statement's query id and values,
    the first one's routing key and keyspace, the strongest consistency level."""
    from cassandra.query import BatchStatement, BatchType, BoundStatement

    from storage.cassandra import pack_values, partition_batches

    store = cassandra_rollup
    ps = await store._ps()
    rng = np.random.default_rng(5)
    units = []
    for k in range(150):
        sid, day = int(rng.integers(-(2**63), 2**63 - 1)), 20_000 + k % 3
        chunk = (ps["1m_chunk_ins"], (sid, day, day * DAY_MS, b"", *(rng.bytes(k % 40) for _ in rollup_chunks.COLUMNS)))
        block = (ps["block_ins"], (sid, day, day * DAY_MS, day * DAY_MS + HOUR_MS, rng.bytes(100)))
        units.append([chunk, block] if k % 2 else [block])
    meta = store.session.cluster.metadata
    got = partition_batches(meta, store.keyspace, [([(s, pack_values(s, p)) for s, p in u], 100) for u in units], 64, 1 << 20)
    assert [len(r) if isinstance(r, BatchStatement) else 1 for r in got] == [96, 96, 33]  # (statements: 64, 64, 22 units)
    it = iter(units)
    for request in got:
        want = BatchStatement(BatchType.UNLOGGED, consistency_level=request.consistency_level)
        count = 0
        while count < 64:
            u = next(it, None)
            if u is None:
                break
            for s, p in u:
                want.add(s.bind(p))
            count += 1
        assert isinstance(request, BatchStatement) and not isinstance(request, BoundStatement)
        assert request._statements_and_parameters == want._statements_and_parameters
        assert (request.routing_key, request.keyspace) == (want.routing_key, want.keyspace)
        assert request.consistency_level == ps["1m_chunk_ins"].consistency_level
    # one unit alone: a bound statement as the driver binds it
    [one] = partition_batches(meta, store.keyspace, [([(units[0][0][0], pack_values(*units[0][0]))], 100)], 64, 1 << 20)
    bound = units[0][0][0].bind(units[0][0][1])
    assert isinstance(one, BoundStatement) and (one.values, one.routing_key) == (bound.values, bound.routing_key)


async def test_live_seal_reads_only_chunks_started_before_its_window(cassandra_rollup):
    """A live seal (``new_from_ms``: its window's start) writes the chunks starting in its
    window without reading them; the chunks it merges into (started before) are read and
    merged as before. A seal without it reads every chunk."""
    from storage.rollup_job import RawWindow, compute_window

    store = cassandra_rollup
    start = T0 + 4 * HOUR_MS  # a 1m chunk starts here (6 h spans)
    assert start % rollup_chunks.chunk_span(Resolution.MINUTE) == 0
    hour_chunk_before = start % rollup_chunks.chunk_span(Resolution.HOUR) != 0
    end = start + 2 * HOUR_MS
    ts = np.arange(start - 5 * MINUTE_MS, end, 10_000, dtype=np.int64)
    ids = np.array([7_100_001, 7_100_002], dtype=np.int64)
    window = RawWindow(ids, np.array([0, ts.size, 2 * ts.size]), np.concatenate([ts, ts]),
                       np.concatenate([np.cumsum(np.ones(ts.size)), np.cos(np.arange(ts.size))]))
    blocks, minutes, hours = compute_window(window, start, end)
    with chunk_reads(store, "chunks") as reads:
        await store.write_seal(blocks, minutes, hours, new_from_ms=start)
        assert all("rollup_1h_chunks" in q for q in reads) and bool(reads) == hour_chunk_before
        reads.clear()
        await store.write_seal(blocks, minutes, hours)
        assert any("rollup_1m_chunks" in q for q in reads) and any("rollup_1h_chunks" in q for q in reads)
    for i, sid in enumerate(ids.tolist()):
        assert (await store.read_rollup(Resolution.MINUTE, sid, start, end)).bit_equal(minutes[i].rollup)
        assert (await store.read_rollup(Resolution.HOUR, sid, start, end)).bit_equal(hours[i].rollup)


async def test_seal_rows_carry_the_start_their_upsert_writes(cassandra_rollup):
    """Each packed row of a seal carries its block's or chunk's start beside the upsert (what
    ``write_seal`` hands ``_fresh_drops``): it is the start the upsert's third value writes, a
    block's window start, and every 1m and 1h chunk the window's rows touch."""
    from storage.rollup_job import RawWindow, compute_window

    store = cassandra_rollup
    start, end = T0 + 2 * HOUR_MS, T0 + 6 * HOUR_MS  # 1m chunks from 00:00 and 06:00 of the day
    ts = np.arange(start, end, 30_000, dtype=np.int64)
    ids = np.array([7_200_001, 7_200_002, 7_200_003], dtype=np.int64)
    window = RawWindow(ids, np.arange(0, 4 * ts.size, ts.size), np.tile(ts, 3), np.arange(3 * ts.size, dtype=np.float64))
    blocks, minutes, hours = compute_window(window, start, end)

    def written_start(row) -> int:
        return int.from_bytes(row[3][1][2], "big", signed=True)

    block_rows = await store._block_rows(blocks)
    assert [(r[0], r[2]) for r in block_rows] == [(b.series_id, start) for b in blocks]
    assert all(written_start(r) == r[2] for r in block_rows)
    for resolution, rows in ((Resolution.MINUTE, minutes), (Resolution.HOUR, hours)):
        span = rollup_chunks.chunk_span(resolution)
        sealed = await store._rollup_rows(resolution, rows)
        assert all(written_start(r) == r[2] for r in sealed)
        assert sorted((r[0], r[2]) for r in sealed) == sorted(
            (sid, c) for sid in ids.tolist() for c in range(start - start % span, end, span))


async def hour_keys(store, sid: int, bucket: int) -> list[int]:
    """The keys of series ``sid``'s rows (chunks and pieces) in 1h partition ``bucket``."""
    got = await store.execute(f"SELECT start_ts FROM {store.keyspace}.rollup_1h_chunks"
                              " WHERE series_id = %s AND bucket = %s", (sid, bucket))
    return [t for page in got for (t,) in page]


async def test_live_seals_write_hour_pieces_that_a_later_window_merges(cassandra_rollup):
    """A live seal (``write_seal`` with its window) writes its 1h buckets of a chunk begun
    before the window as a piece keyed by its first bucket, without reading the chunk; a
    window ending a multiple of HOUR_PIECES_MERGE_MS reads the chunk with its pieces and
    writes it back merged, the pieces deleted. A reseal (late samples) over a piece merges the same way, and a live seal
    over buckets a backfill wrote into the chunk before wins with its piece. After every step
    1h reads equal the brute-force rollup of the samples."""
    from storage.cassandra_rollup import HOUR_PIECES_MERGE_MS, ROLLUP_1H_BUCKET_MS
    from storage.rollup_job import RawWindow, compute_window
    from storage.schema import DEFAULT_TTLS_S

    store = cassandra_rollup
    day = DAY0 + 3 * DAY_MS  # (its 8-day 1h span began 6 days before, the next day is in it too)
    span = rollup_chunks.chunk_span(Resolution.HOUR)
    chunk = day - day % span
    assert chunk < day and (day + DAY_MS) // span == day // span
    bucket = chunk // ROLLUP_1H_BUCKET_MS
    ids = [7_300_001, 7_300_002]
    first, last = day + 14 * HOUR_MS, day + DAY_MS + 4 * HOUR_MS  # windows 14:00 ... 02:00 the next day
    ts = np.arange(first - 10 * MINUTE_MS, last, 20_000, dtype=np.int64)
    values = {ids[0]: np.cumsum(np.ones(ts.size)), ids[1]: np.sin(np.arange(ts.size) / 7.0)}

    def window_of(start: int, end: int) -> RawWindow:
        keep = ts < end
        n = int(keep.sum())
        return RawWindow(np.array(ids, dtype=np.int64), np.array([0, n, 2 * n]), np.concatenate([ts[keep], ts[keep]]),
                         np.concatenate([values[ids[0]][keep], values[ids[1]][keep]]))

    async def expect_brute_force(until: int) -> None:
        for sid in ids:
            want = rollup_rollup(rollup_raw(ts, values[sid], first, until, MINUTE_MS), HOUR_MS)
            got = await store.read_rollup(Resolution.HOUR, sid, chunk, chunk + span - 1)
            assert got.bit_equal(want), (sid, until)

    with chunk_reads(store, "rollup_1h_chunks") as reads:
        for start in range(first, last, 2 * HOUR_MS):
            end = start + 2 * HOUR_MS
            blocks, minutes, hours = compute_window(window_of(start, end), start, end)
            reads.clear()
            await store.write_seal(blocks, minutes, hours, new_from_ms=start, window_end_ms=end)
            keys = {sid: await hour_keys(store, sid, bucket) for sid in ids}
            merged = end - end % HOUR_PIECES_MERGE_MS  # (the last merge's window end)
            if end == merged:  # chunk and pieces read, merged into the chunk
                assert reads and keys == {sid: [chunk] for sid in ids}
            else:  # the pieces since the last merge, after the chunk once one wrote it
                assert not reads and keys == {
                    sid: [*([chunk] if merged > first else []), *range(max(merged, first), end, 2 * HOUR_MS)] for sid in ids}
            await expect_brute_force(end)
    # Pieces live as long as chunks (the table's TTL, the 1h retention), counted from their write.
    got = await store.execute(f"SELECT start_ts, TTL(c_ts) FROM {store.keyspace}.rollup_1h_chunks"
                              " WHERE series_id = %s AND bucket = %s", (ids[0], bucket))
    ttls = {t: ttl for page in got for t, ttl in page}
    assert len(ttls) == 3 and all(0 <= DEFAULT_TTLS_S["rollup_1h"] - ttl < 600 for ttl in ttls.values()), ttls

    # Late samples in 00:00-02:00 of the next day (a piece): the reseal merges chunk and pieces.
    late = (ts >= day + DAY_MS + 30 * MINUTE_MS) & (ts < day + DAY_MS + 40 * MINUTE_MS)
    values[ids[1]][late] += 100.0
    start, end = day + DAY_MS, day + DAY_MS + 2 * HOUR_MS
    blocks, minutes, hours = compute_window(window_of(start, end), start, end)
    await store.write_seal(blocks, minutes, hours)
    assert {sid: await hour_keys(store, sid, bucket) for sid in ids} == {sid: [chunk] for sid in ids}
    await expect_brute_force(last)

    # A backfill ahead of the job wrote 06:00-08:00 into the chunk with values since changed;
    # the job's live seal of that window writes a piece, which reads take over the chunk's buckets.
    start, end = last + 2 * HOUR_MS, last + 4 * HOUR_MS
    assert end % HOUR_PIECES_MERGE_MS
    ts = np.concatenate([ts, np.arange(start, end, 20_000, dtype=np.int64)])
    values = {sid: np.concatenate([v, np.full(ts.size - v.size, float(k + 1))]) for k, (sid, v) in enumerate(values.items())}
    stale = {sid: v.copy() for sid, v in values.items()}
    for v in stale.values():
        v[ts >= start] = -5.0
    fresh, values = values, stale
    blocks, minutes, hours = compute_window(window_of(start, end), start, end)
    await store.write_rollups(Resolution.HOUR, hours)
    values = fresh
    blocks, minutes, hours = compute_window(window_of(start, end), start, end)
    await store.write_seal(blocks, minutes, hours, new_from_ms=start, window_end_ms=end)
    assert {sid: await hour_keys(store, sid, bucket) for sid in ids} == {sid: [chunk, start] for sid in ids}
    await expect_brute_force(end)
