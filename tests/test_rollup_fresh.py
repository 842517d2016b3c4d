"""The rollup job's fresh pass: provisional 1m buckets of the open window, on SQLite and Cassandra.

Each fresh pass writes the open window's minutes up to now - grace, bit for bit what the
seal will write; the seal's final buckets win (a late sample changes them); a query then
reads raw samples only for the newest minutes, and one beyond raw retention at now holds the
open hour's newest samples (issue #17).
"""

from __future__ import annotations

import numpy as np
import pytest
from test_rollup_job import SHARDS, T0, WINDOW, generate
from test_rollup_job import load as load_sqlite

from query.engine import Engine
from query.resolution import SourceResolution
from storage import rollup_chunks as chunks
from storage.base import AGGREGATES, MINUTE_MS, Resolution
from storage.model import SampleBatch
from storage.rollup import rollup_raw
from storage.rollup_job import DEFAULT_GRACE_MS, FRESH_GROUP_SHARDS, RollupJob
from storage.rollup_lease import LocalShardLease

OPEN = T0 + 2 * WINDOW  # the window left open: [OPEN, OPEN + WINDOW)


class Clock:
    def __init__(self, now: int) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now


@pytest.fixture(params=["sqlite", pytest.param("cassandra", marks=pytest.mark.cassandra)])
async def store(request, tmp_path):
    if request.param == "sqlite":
        from storage.sqlite_rollup import SQLiteRollupStorage

        st = await SQLiteRollupStorage.open(tmp_path / "db")
        st.late_after_ms = 2**62  # these writes stand for live scrapes
        try:
            yield st
        finally:
            await st.close()
        return
    from fixtures_cassandra import keyspace_store

    from storage.cassandra_rollup import CassandraRollupStorage

    with keyspace_store(request.getfixturevalue("cassandra"), "rollup_fresh", CassandraRollupStorage) as st:
        st.late_after_ms = 2**62
        yield st


async def load(store, data) -> None:
    if hasattr(store, "session"):
        from test_rollup_cassandra import load as load_cassandra

        await load_cassandra(store, data)
    else:
        await load_sqlite(store, data)


async def minutes_of(store, data, start: int, end: int) -> dict[int, object]:
    return {s.id: await store.read_rollup(Resolution.MINUTE, s.id, start, end - 1) for s in data}


def expected(data, start: int, end: int) -> dict[int, object]:
    return {s.id: rollup_raw(ts, v, start, end, MINUTE_MS) for s, (ts, v, _) in data.items()}


async def test_fresh_minutes_follow_the_open_window_and_the_seal_replaces_them(store, tmp_path) -> None:
    data = generate(seed=21)
    await load(store, data)
    clock = Clock(OPEN + 70 * MINUTE_MS)
    job = RollupJob(store, LocalShardLease(tmp_path / "locks"), window_ms=WINDOW, shards=SHARDS, now_ms=clock)

    await job.run_once(initial_start_ms=T0)  # seals the two closed windows, then the fresh pass
    until = OPEN + 65 * MINUTE_MS  # now - grace
    assert sorted(r.shard for r in job.fresh_done) == list(range(SHARDS))
    assert {(r.start_ms, r.end_ms, r.mode) for r in job.fresh_done} == {(OPEN, until, "fresh")}
    got, want = await minutes_of(store, data, OPEN, OPEN + WINDOW), expected(data, OPEN, until)
    assert all(got[sid].bit_equal(want[sid]) for sid in want)
    assert sum(len(r) for r in want.values()) > 0
    done = {r.shard: r for r in job.fresh_done}  # each shard's counts are its own series' minutes
    for k in range(SHARDS):
        mine = [len(want[s.id]) for s in data if s.id % SHARDS == k and len(want[s.id])]
        assert (done[k].series, done[k].minute_points) == (len(mine), sum(mine))

    clock.now += 10 * MINUTE_MS  # the next pass goes on from where this one stopped
    starts: list[int] = []  # and reads from there: the samples before come from the pass before
    for name in ("read_raw_window_arrays", "read_raw_window_group", "read_fresh_group"):
        if hasattr(store, name):
            def spy(*args, _read=getattr(store, name), **kw):
                starts.append(args[2])
                return _read(*args, **kw)
            setattr(store, name, spy)
    try:
        await job.run_once()
    finally:
        for name in ("read_raw_window_arrays", "read_raw_window_group", "read_fresh_group"):
            store.__dict__.pop(name, None)
    assert starts and set(starts) == {until}
    assert {(r.start_ms, r.end_ms) for r in job.fresh_done} == {(until, until + 10 * MINUTE_MS)}
    got, want = await minutes_of(store, data, OPEN, OPEN + WINDOW), expected(data, OPEN, until + 10 * MINUTE_MS)
    assert all(got[sid].bit_equal(want[sid]) for sid in want)

    # A query over the last day reading 1m rows (asked for: ``auto`` reads rate() raw) reads rollup rows up to the fresh minutes and raw samples
    # only for the newest minutes (without the fresh pass: from the open window's start).
    raw_reads: list[int] = []
    select, select_flat = store.select, getattr(store, "select_flat", None)

    async def spy(matchers, start_ms, end_ms, resolution=Resolution.RAW, *, columns=None):
        if resolution is Resolution.RAW:
            raw_reads.append(start_ms)
        return await select(matchers, start_ms, end_ms, resolution, columns=columns)

    async def spy_flat(matchers, start_ms, end_ms):  # (a store's flat raw columns: Cassandra's)
        raw_reads.append(start_ms)
        return await select_flat(matchers, start_ms, end_ms)

    store.select = spy
    if select_flat is not None:
        store.select_flat = spy_flat
    try:
        end = clock.now // MINUTE_MS * MINUTE_MS
        res = await Engine(store, now_ms=clock).range_query(
            "sum(rate(gen_metric_total[5m]))", end - 6 * 3_600_000, end, 60_000, source=SourceResolution.MINUTE
        )
    finally:
        store.__dict__.pop("select", None)
        store.__dict__.pop("select_flat", None)
    assert res.series and raw_reads and min(raw_reads) >= clock.now - 15 * MINUTE_MS

    # Provisional chunks of the open window. SQLite: one per pass (the first pass's merged
    # into the span's own chunk). Cassandra (``FreshBlocks``): one per 10-minute block, each
    # pass rewriting its block's chunk from the block's start (the span's first minute merged
    # into the span's chunk, the rest of its block keyed by the next), so each lies inside
    # one block: none can reach into the window after.
    before = await provisional_chunks(store, data, OPEN, OPEN + WINDOW)
    block = 10 * MINUTE_MS
    if hasattr(store, "session"):
        assert {t for _, t in before} == {OPEN + MINUTE_MS, *(OPEN + k * block for k in range(1, 8))}
        assert all(int(ts[0]) == t and int(ts[-1]) // block == t // block for (_, t), ts in before.items())
        assert max(len(ts) for (_, t), ts in before.items() if t == OPEN + 6 * block) == 10  # (both passes' minutes)
    else:
        assert {t for _, t in before} == {until}

    # A sample arrives late inside the open window; the seal's final buckets include it.
    s, (ts, v, target) = next(iter(data.items()))
    late_t = OPEN + 30 * MINUTE_MS + 7
    await store.write(SampleBatch(target, [s], [late_t], [1e9]))
    order = np.argsort(np.append(ts, late_t), kind="stable")
    data[s] = (np.append(ts, late_t)[order], np.append(v, 1e9)[order], target)
    clock.now = OPEN + WINDOW + DEFAULT_GRACE_MS
    done = await job.run_once()
    assert {(r.shard, r.start_ms) for r in done} == {(k, OPEN) for k in range(SHARDS)}
    got, want = await minutes_of(store, data, OPEN, OPEN + WINDOW), expected(data, OPEN, OPEN + WINDOW)
    assert all(got[sid].bit_equal(want[sid]) for sid in want)
    assert got[s.id].max[30] == 1e9
    # The seal drops the provisional chunks its final ones replace (Cassandra: in the final
    # chunk's own partition write), so reads of the window list none; a rerun of the window
    # (a late sample's reseal) changes nothing.
    assert not await provisional_chunks(store, data, OPEN, OPEN + WINDOW)
    for k in range(SHARDS):
        await job.process_window(k, OPEN, mode="late")
    assert not await provisional_chunks(store, data, OPEN, OPEN + WINDOW)
    got = await minutes_of(store, data, OPEN, OPEN + WINDOW)
    assert all(got[sid].bit_equal(want[sid]) for sid in want)


async def provisional_chunks(store, data, start: int, end: int) -> dict[tuple[int, int], np.ndarray]:
    """(series id, key) -> bucket starts of the provisional 1m chunks keyed in [start, end),
    as a rollup read lists them."""
    ids = sorted(s.id for s in data)
    if hasattr(store, "session"):
        ps = await store._chunk_read_ps(Resolution.MINUTE, (), versioned=True)
        rows = [r for p in await store.execute(ps, (ids, start // 86_400_000, start, end - 1)) for r in p]
        rows = [(sid, t, ts) for sid, t, _, _, ts in rows]
    else:
        rows = await store.run_read(lambda con: con.execute(
            "SELECT series_id, start_ts, c_ts FROM rollup_1m_chunks WHERE start_ts >= ? AND start_ts < ?",
            (start, end)).fetchall())
    expanded = chunks.expand_columns(("ts",), [[ts for _, _, ts in rows]])[0]
    return {(sid, t): np.frombuffer(ts, dtype="<i8") for (sid, t, _), ts in zip(rows, expanded, strict=True)
            if sid in ids and chunks.is_provisional(Resolution.MINUTE, t)}


async def test_a_new_copy_of_the_job_starts_the_fresh_pass_at_the_window_start(store, tmp_path) -> None:
    data = generate(seed=22)
    await load(store, data)
    clock = Clock(OPEN + 40 * MINUTE_MS)
    ours = old_and_young(clock.now + 7_000)
    await load_sqlite(store, ours)  # (one write per target: on Cassandra, few round trips)
    data.update(ours)
    first = RollupJob(store, LocalShardLease(tmp_path / "a"), window_ms=WINDOW, shards=SHARDS, now_ms=clock)
    await first.run_once(initial_start_ms=T0)
    await beyond_raw_retention_has_the_newest_samples(store, clock.now + 7_000, ours)
    clock.now += 20 * MINUTE_MS
    second = RollupJob(store, LocalShardLease(tmp_path / "b"), window_ms=WINDOW, shards=SHARDS, now_ms=clock)
    await second.run_once()
    assert {(r.start_ms, r.end_ms) for r in second.fresh_done} == {(OPEN, OPEN + 55 * MINUTE_MS)}
    # Overlapping provisional chunks of both copies read as one series of buckets.
    got, want = await minutes_of(store, data, OPEN, OPEN + WINDOW), expected(data, OPEN, OPEN + 55 * MINUTE_MS)
    assert all(got[sid].bit_equal(want[sid]) for sid in want)


async def test_fresh_pass_can_be_turned_off(store, tmp_path, monkeypatch) -> None:
    data = generate(seed=23)
    await load(store, data)
    job = RollupJob(store, LocalShardLease(tmp_path / "locks"), window_ms=WINDOW, shards=SHARDS,
                    now_ms=lambda: OPEN + 70 * MINUTE_MS, fresh_minutes=False)
    drops: list[tuple] = []
    if hasattr(store, "session"):  # no fresh pass marked a block: the seals delete no provisional keys
        import storage.cassandra_rollup as cassandra_rollup

        plain = cassandra_rollup._fresh_drops
        monkeypatch.setattr(cassandra_rollup, "_fresh_drops", lambda *a: drops.append(a) or plain(*a))
    await job.run_once(initial_start_ms=T0)
    assert job.fresh_done == []
    assert drops == []
    got = await minutes_of(store, data, OPEN, OPEN + WINDOW)
    assert all(len(r) == 0 for r in got.values())



def old_and_young(now: int) -> dict:
    """Two counters up to ``now``: one since T0 (where the job's rows begin) with a reset, one
    30 minutes old (younger than the open hour)."""
    from storage.model import Series, make_labels

    old_ts = np.arange(T0, now + 1, 2 * MINUTE_MS, dtype=np.int64)
    old_v = np.cumsum(np.arange(len(old_ts)) % 5).astype(np.float64)
    old_v[len(old_v) // 2 :] -= old_v[len(old_v) // 2] - 1  # a counter reset
    young_ts = np.arange(now - 30 * MINUTE_MS, now + 1, 15_000, dtype=np.int64)
    young_v = np.cumsum(np.arange(len(young_ts)) % 3).astype(np.float64)
    old, young = (Series.of(make_labels("up", instance=i, job="ours")) for i in ("old", "young"))
    return {old: (old_ts, old_v, "ours/h:9100"), young: (young_ts, young_v, "ours/h:9100")}


async def beyond_raw_retention_has_the_newest_samples(store, now: int, ours: dict) -> None:
    """Issue #17: beyond raw retention a query at ``now`` answers from 1h rollups (the sealed
    windows' rows here), yet the open hour's samples up to ``now`` are in it (minute rows, the
    newest partial minute): a series younger than an hour has an answer, exact for
    count/sum/min/max/last/increase over windows holding all its samples, with the warning
    naming the function."""
    (old_ts, old_v, _), (young_ts, young_v, _) = ours.values()
    eng = Engine(store, now_ms=lambda: now)

    def increase(v: np.ndarray) -> float:
        d = np.diff(v)
        return float(np.where(d >= 0, d, v[1:]).sum())

    want = {
        "count_over_time": lambda v: float(len(v)), "sum_over_time": lambda v: float(v.sum()),
        "min_over_time": lambda v: float(v.min()), "max_over_time": lambda v: float(v.max()),
        "last_over_time": lambda v: float(v[-1]), "increase": increase,
    }  # fmt: skip
    for func, f in want.items():
        res = await eng.instant_query(f'{func}(up{{job="ours"}}[150d])', now)
        got = {s.labels["instance"]: float(s.values[0]) for s in res.series}
        assert got == {"old": f(old_v), "young": f(young_v)}, func
        assert res.warnings == [f"{func}() answered from 1h rollups (raw samples are kept 7 days): the result is approximate"]
    # Minute rows asked for (20 d): the newest, partial minute is in the answer too.
    res = await eng.instant_query('count_over_time(up{job="ours"}[20d])', now, source=SourceResolution.MINUTE)
    assert {s.labels["instance"]: s.values[0] for s in res.series} == {"old": len(old_v), "young": len(young_v)}
    # A range query: a step earlier in the open hour holds the minutes whole by then.
    young = 'up{job="ours", instance="young"}'
    res = await eng.range_query(f"count_over_time({young}[150d])", now - 20 * MINUTE_MS, now, 10 * MINUTE_MS)
    counts = [float((young_ts < t // MINUTE_MS * MINUTE_MS).sum()) for t in (now - 20 * MINUTE_MS, now - 10 * MINUTE_MS)]
    assert [s.values.tolist() for s in res.series] == [[*counts, float(len(young_v))]]
    # Issue #17: steps inside hours already closed (an unaligned 1 h step) hold every sample
    # up to them too, not only the hours: the minutes whole by then, and the one holding the
    # step cut there from raw samples (the old series' samples sit on even minutes: one 30 s
    # before each step). The last step, the query's end, is in the open hour.
    old = 'up{job="ours", instance="old"}'
    times = [T0 + h * 3_600_000 + 24 * MINUTE_MS + 30_000 for h in (1, 2, 3, 4)]
    upto = [old_v[old_ts <= t] for t in times]
    assert [len(v) for v in upto] == [43, 73, 103, 133]  # (the hours alone: 30, 60, 90, 120)
    for func, f in want.items():
        res = await eng.range_query(f"{func}({old}[150d])", times[0], times[-1], 3_600_000)
        assert [s.values.tolist() for s in res.series] == [[f(v) for v in upto]], func
        assert res.warnings and "1h rollups" in res.warnings[0]
    # A window starting inside a closed hour holds the minutes from its start's minute on.
    res = await eng.range_query(f"count_over_time({old}[1h] offset 1h)", times[1], times[-1], 3_600_000)
    assert [s.values.tolist() for s in res.series] == [[30.0, 30.0, 30.0]]
    # A subquery over 1h rollups: its inner selector at each minute reads the minutes whole by then.
    res = await eng.instant_query(f"max_over_time({young}[30d:1m])", now)
    assert [s.values[0] for s in res.series] == [young_v[young_ts < now // MINUTE_MS * MINUTE_MS][-1]]
    assert res.warnings and "1h rollups" in res.warnings[0]


async def test_a_longer_fresh_every_steps_whole_spans_from_the_window_start(tmp_path) -> None:
    """Issue #20: with ``fresh_every_ms`` of 5 minutes a fresh pass ends a whole number of them
    after the open window's start (one raw chunk span per series read), however late it runs."""
    from storage.sqlite_rollup import SQLiteRollupStorage

    st = await SQLiteRollupStorage.open(tmp_path / "db")
    st.late_after_ms = 2**62
    try:
        data = generate(seed=25)
        await load_sqlite(st, data)
        clock = Clock(OPEN + DEFAULT_GRACE_MS + 12 * MINUTE_MS + 30_000)
        job = RollupJob(st, LocalShardLease(tmp_path / "locks"), window_ms=WINDOW, shards=SHARDS, now_ms=clock,
                        fresh_every_ms=5 * MINUTE_MS)
        await job.run_once(initial_start_ms=T0)
        assert {(r.start_ms, r.end_ms) for r in job.fresh_done} == {(OPEN, OPEN + 10 * MINUTE_MS)}
        clock.now += 4 * MINUTE_MS  # 16.5 minutes into the window (after the grace): one more step
        await job.run_once()
        assert {(r.start_ms, r.end_ms) for r in job.fresh_done} == {(OPEN + 10 * MINUTE_MS, OPEN + 15 * MINUTE_MS)}
        got, want = await minutes_of(st, data, OPEN, OPEN + WINDOW), expected(data, OPEN, OPEN + 15 * MINUTE_MS)
        assert all(got[sid].bit_equal(want[sid]) for sid in want)
        assert sum(len(r) for r in want.values()) > 0
    finally:
        await st.close()


async def test_sqlite_fresh_pass_reads_and_writes_shards_in_groups(tmp_path) -> None:
    """Issue #20: on SQLite a minute's fresh pass is one read (each frame decoded once) and one
    write transaction per FRESH_GROUP_SHARDS shards, not one of each per shard; seals stay one shard at a time
    (each drops the raw rows it sealed); the answers are the per-shard ones."""
    from storage.sqlite_rollup import SQLiteRollupStorage

    st = await SQLiteRollupStorage.open(tmp_path / "db")
    st.late_after_ms = 2**62
    try:
        data = generate(seed=24)
        await load(st, data)
        calls: list[tuple[str, tuple]] = []
        for name in ("read_raw_window_arrays", "read_fresh_group", "write_fresh_minutes"):
            def spy(*args, _read=getattr(st, name), _name=name, **kw):
                calls.append((_name, tuple(args[0]) if _name == "read_fresh_group" else args[:1]))
                return _read(*args, **kw)
            setattr(st, name, spy)
        clock = Clock(OPEN + 70 * MINUTE_MS)
        shards = 2 * FRESH_GROUP_SHARDS  # (more shards than a pass reads at once)
        job = RollupJob(st, LocalShardLease(tmp_path / "locks"), window_ms=WINDOW, shards=shards, now_ms=clock)
        await job.run_once(initial_start_ms=T0)  # seals shard by shard; the long first fresh pass too
        reads = [k for name, (k,) in calls if name == "read_raw_window_arrays"]
        assert sorted(reads) == sorted(list(range(shards)) * 3)  # two windows and the open one's minutes
        assert "read_fresh_group" not in {name for name, _ in calls}
        calls.clear()
        for _ in range(3):  # then a minute's pass: one read and one write per FRESH_GROUP_SHARDS shards
            clock.now += MINUTE_MS
            await job.run_once()
            assert [c[0] for c in calls] == ["read_fresh_group", "write_fresh_minutes"] * 2
            groups = [c[1] for c in calls[::2]]
            assert all(len(g) == FRESH_GROUP_SHARDS for g in groups)
            assert sorted(k for g in groups for k in g) == list(range(shards))
            calls.clear()
        until = clock.now - DEFAULT_GRACE_MS
        got, want = await minutes_of(st, data, OPEN, OPEN + WINDOW), expected(data, OPEN, until)
        assert all(got[sid].bit_equal(want[sid]) for sid in want)
        assert sum(len(r) for r in want.values()) > 0
    finally:
        await st.close()


def test_join_fresh_and_fresh_since_keep_each_series_buckets_in_order() -> None:
    """The job's block rows (``FreshBlocks``): two passes' rows joined per series, then cut."""
    from storage.rollup import Rollup
    from storage.rollup_job import RollupRowsList, fresh_since, join_fresh

    def rows(per_series: dict[int, list[int]]) -> RollupRowsList:
        out = RollupRowsList()  # (lazy: its items made from flat when first asked for)
        ts = np.array([t for ts in per_series.values() for t in ts], dtype=np.int64)
        out.flat = Rollup(ts, *(ts / MINUTE_MS for _ in AGGREGATES))
        out.bounds = np.cumsum([0, *map(len, per_series.values())]).astype(np.int64)
        out.ids = np.array(list(per_series), dtype=np.int64)
        out._lazy = True
        return out

    m = MINUTE_MS
    joined = join_fresh(rows({5: [m, 2 * m], 3: [2 * m]}), rows({3: [3 * m, 4 * m], 9: [4 * m], 5: [3 * m]}))
    got = {r.series_id: r.rollup.timestamps.tolist() for r in joined}
    assert got == {3: [2 * m, 3 * m, 4 * m], 5: [m, 2 * m, 3 * m], 9: [4 * m]}
    assert all((r.rollup.count == r.rollup.timestamps / m).all() for r in joined)
    cut = {r.series_id: r.rollup.timestamps.tolist() for r in fresh_since(joined, 3 * m)}
    assert cut == {3: [3 * m, 4 * m], 5: [3 * m], 9: [4 * m]}
    assert len(fresh_since(joined, 5 * m)) == 0
