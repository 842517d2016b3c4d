"""Cassandra backend beyond the contract: schema, TTLs, freshness, and index selection at 100k series."""

from __future__ import annotations

import asyncio
import random
import time

import numpy as np
import pytest

from storage import schema as sch
from storage.base import DAY_MS, HOUR_MS
from storage.matchers import Matcher, MatchOp, match_all
from storage.model import STALE_NAN, SampleBatch, Series, make_labels

pytestmark = pytest.mark.cassandra


def _rows(store, cql: str, params=()) -> list:
    return list(store.session.execute(cql, params))


def test_schema_is_idempotent_and_versioned(cassandra_storage) -> None:
    store = cassandra_storage
    again = sch.create_schema(store.session, sch.SchemaSpec(keyspace=store.keyspace))
    assert again == []  # nothing created twice
    assert sch.schema_version(store.session, store.keyspace) == sch.SCHEMA_VERSION
    tables = {
        r[0]: (r[1], r[2])
        for r in _rows(
            store,
            "SELECT table_name, default_time_to_live, compaction FROM system_schema.tables WHERE keyspace_name = %s",
            (store.keyspace,),
        )
    }
    for name, ttl_key in [("raw_recent", "raw_recent"), ("rollup_1m_chunks", "rollup_1m"), ("rollup_1h_chunks", "rollup_1h")]:
        ttl, compaction = tables[name]
        assert ttl == sch.DEFAULT_TTLS_S[ttl_key]
        assert compaction["class"].endswith("TimeWindowCompactionStrategy")
        unit, size = sch.DROPPED_RAW_TWCS if name == "raw_recent" else sch.twcs_window(ttl)
        assert compaction["compaction_window_unit"] == unit and int(compaction["compaction_window_size"]) == size
    assert tables["postings_day"][0] == sch.DEFAULT_TTLS_S["index_day"]
    # a block's shared timestamp frame outlives the block (written before it, same TTL would expire first)
    assert tables["raw_block_times"][0] > tables["raw_blocks"][0]
    compression = {r[0]: r[1] for r in _rows(
        store, "SELECT table_name, compression FROM system_schema.tables WHERE keyspace_name = %s", (store.keyspace,))}
    assert compression["raw_blocks"]["class"].endswith("ZstdCompressor")  # (its blocks are Zstd frames already)
    assert compression["raw_recent"]["class"].endswith("LZ4Compressor")


def test_older_schema_version_asks_for_storage_init_which_upgrades_it(cassandra) -> None:
    from fixtures_cassandra import fresh_keyspace

    from storage.base import StorageError
    from storage.cassandra import CassandraStorage

    ks = fresh_keyspace("upgrade")
    store = CassandraStorage.connect_sync([cassandra.host], cassandra.port, ks, create_schema=True)
    try:
        store.session.execute(f"DROP TABLE {ks}.raw_late", timeout=60)
        store.session.execute(f"ALTER TABLE {ks}.raw_blocks WITH compression = {sch.LZ4_16K}", timeout=60)
        store.session.execute(f"INSERT INTO {ks}.meta (key, value) VALUES ('schema_version', '1')")
        with pytest.raises(StorageError, match=f"schema version 1.*ringmon storage init --keyspace {ks}"):
            CassandraStorage.connect_sync([cassandra.host], cassandra.port, ks)
        assert sch.create_schema(store.session, sch.SchemaSpec(keyspace=ks)) == ["raw_late"]
        compression = store.session.execute(
            "SELECT compression FROM system_schema.tables WHERE keyspace_name = %s AND table_name = 'raw_blocks'", (ks,)
        ).one()[0]
        assert compression["class"].endswith("ZstdCompressor")  # (set on a keyspace made before)
        assert sch.schema_version(store.session, ks) == sch.SCHEMA_VERSION == 8
        CassandraStorage.connect_sync([cassandra.host], cassandra.port, ks).shutdown()
    finally:
        store.drop_keyspace_sync()
        store.shutdown()


async def test_storage_init_packs_version_2_rollup_rows_into_chunks(cassandra) -> None:
    """A version-2 keyspace kept one row per bucket; init converts them, bit for bit, with
    the TTL they had left, keeps a chunk already written, and drops the old tables."""
    from fixtures_cassandra import keyspace_store

    from storage.base import AGGREGATES, MINUTE_MS, Resolution
    from storage.cassandra_rollup import CassandraRollupStorage
    from storage.rollup import Rollup
    from storage.rollup_chunks import RECORD_AGGREGATES
    from storage.rollup_job import RollupRows

    with keyspace_store(cassandra, "chunks_upgrade", CassandraRollupStorage) as store:
        ks = store.keyspace
        now = int(time.time() * 1000) // HOUR_MS * HOUR_MS
        s = Series.of(make_labels("upgrade_check", job="u"))
        store.session.execute(
            f"CREATE TABLE {ks}.rollup_1m (series_id bigint, day int, ts bigint, count int, sum double,"
            " min double, max double, last double, increase double, PRIMARY KEY ((series_id, day), ts))"
        )
        store.session.execute(
            f"CREATE TABLE {ks}.rollup_1h (series_id bigint, bucket int, ts bigint, count int, sum double,"
            " min double, max double, last double, increase double, PRIMARY KEY ((series_id, bucket), ts))"
        )
        minutes = np.arange(now - 30 * HOUR_MS, now, MINUTE_MS, dtype=np.int64)  # crosses days and chunks
        rng = np.random.default_rng(3)
        cols = {name: rng.random(minutes.size) * 10 for name in RECORD_AGGREGATES}
        cols["count"] = np.full(minutes.size, 4.0)
        cols["sum"][7] = float("nan")
        ins = store.session.prepare(
            f"INSERT INTO {ks}.rollup_1m (series_id, day, ts, count, sum, min, max, last, increase)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
        )
        for i, t in enumerate(minutes.tolist()):
            store.session.execute(ins, (s.id, t // DAY_MS, t, 4, *(float(cols[n][i]) for n in RECORD_AGGREGATES[1:])))
        expired = now - 40 * DAY_MS  # older than the 1 h table's TTL allows: not carried over
        store.session.execute(
            f"INSERT INTO {ks}.rollup_1h (series_id, bucket, ts, count, sum, min, max, last, increase)"
            " VALUES (%s, %s, %s, 1, 1, 1, 1, 1, 1)",
            (s.id, (now - 2 * HOUR_MS) // (32 * DAY_MS), now - 2 * HOUR_MS),
        )
        store.session.execute(
            f"INSERT INTO {ks}.rollup_1h (series_id, bucket, ts, count, sum, min, max, last, increase)"
            " VALUES (%s, %s, %s, 1, 1, 1, 1, 1, 1)",
            (s.id, expired // (32 * DAY_MS), expired),
        )
        # A chunk written since (by the new code) wins over the old row of the same bucket.
        newer = Rollup.from_columns(np.array([minutes[-1]]), {n: np.array([99.0]) for n in AGGREGATES})
        await store.write_rollups(Resolution.MINUTE, [RollupRows(s.id, newer)])
        store.session.execute(f"INSERT INTO {ks}.meta (key, value) VALUES ('schema_version', '2')")

        created = sch.create_schema(store.session, sch.SchemaSpec(keyspace=ks, ttls_s={**sch.DEFAULT_TTLS_S, "rollup_1h": 30 * 86_400}))
        assert created == [] and sch.schema_version(store.session, ks) == sch.SCHEMA_VERSION
        tables = {r[0] for r in _rows(store, "SELECT table_name FROM system_schema.tables WHERE keyspace_name = %s",
                                      (ks,))}
        assert "rollup_1m" not in tables and "rollup_1h" not in tables
        got = await store.read_rollup(Resolution.MINUTE, s.id, int(minutes[0]), int(minutes[-1]))
        assert got.timestamps.tolist() == minutes.tolist()
        for name in RECORD_AGGREGATES:  # (the rate aggregates: NaN, not known)
            want = cols[name].copy()
            want[-1] = 99.0
            np.testing.assert_array_equal(getattr(got, name), want, err_msg=name)
        hours = await store.read_rollup(Resolution.HOUR, s.id, expired - DAY_MS, now)
        assert hours.timestamps.tolist() == [now - 2 * HOUR_MS]
        (ttl,) = _rows(store, f"SELECT TTL(data) FROM {ks}.rollup_1h_chunks")[0]
        assert 0 < ttl <= 30 * 86_400


async def test_late_writes_mark_their_hours(cassandra_storage) -> None:
    """Samples older than late_after_ms when written mark their hour in raw_late with the write time."""
    store = cassandra_storage
    s = Series.of(make_labels("late_check", job="l"))
    now = int(time.time() * 1000)
    old = now - 3 * HOUR_MS
    await store.write_columns("l/h:1", [s.id, s.id], [now - 1000, now], [1.0, 2.0], [s])
    assert await store.late_hours(now - 4 * HOUR_MS, now) == {}
    await store.write_columns("l/h:1", [s.id, s.id], [old, now], [3.0, 4.0], [s])
    marks = await store.late_hours(now - 4 * HOUR_MS, now)
    assert list(marks) == [old // HOUR_MS] and now - 5000 <= marks[old // HOUR_MS] <= int(time.time() * 1000)
    (ttl,) = _rows(
        store,
        f"SELECT TTL(written_at) FROM {store.keyspace}.raw_late WHERE day = %s AND hour = %s",
        (old // DAY_MS, old // HOUR_MS),
    )[0]
    assert sch.DEFAULT_TTLS_S["raw_recent"] - 60 <= ttl <= sch.DEFAULT_TTLS_S["raw_recent"]


def test_twcs_windows_are_about_a_24th_of_the_ttl() -> None:
    assert sch.twcs_window(8 * 86_400) == ("HOURS", 8)
    assert sch.twcs_window(32 * 86_400) == ("DAYS", 1)
    assert sch.twcs_window(370 * 86_400) == ("DAYS", 15)


async def test_ttl_of_written_cells_matches_table(cassandra_storage) -> None:
    store = cassandra_storage
    s = Series.of(make_labels("ttl_check", job="t"))
    ts = int(time.time() * 1000)
    b = SampleBatch("ttl/h:1")
    b.add(s, ts, 1.0)
    await store.write(b)
    (ttl,) = _rows(
        store,
        f"SELECT TTL(value) FROM {store.keyspace}.raw_recent WHERE target = %s AND hour = %s AND series_id = %s",
        ("ttl/h:1", ts // HOUR_MS, s.id),
    )[0]
    assert sch.DEFAULT_TTLS_S["raw_recent"] - 60 <= ttl <= sch.DEFAULT_TTLS_S["raw_recent"]
    from storage.cassandra import shard_of

    for level in sch.INDEX_LEVELS:
        (ttl,) = _rows(
            store,
            f"SELECT TTL(labels) FROM {store.keyspace}.series_{level.suffix} "
            "WHERE metric = %s AND bucket = %s AND shard = %s AND series_id = %s",
            ("ttl_check", ts // level.bucket_ms, shard_of(s.id), s.id),
        )[0]
        assert level.ttl_s - 60 <= ttl <= level.ttl_s


async def test_recent_samples_readable_right_after_write(cassandra_storage) -> None:
    store = cassandra_storage
    s = Series.of(make_labels("fresh_check", job="f", instance="h:1"))
    now = int(time.time() * 1000)
    b = SampleBatch("f/h:1")
    b.add(s, now, 3.25)
    await store.write(b)
    got = await store.select([Matcher("__name__", MatchOp.EQ, "fresh_check")], now - 1000, now + 1000)
    assert [d.values.tolist() for d in got] == [[3.25]]


async def test_finished_requests_leave_no_cyclic_garbage(cassandra_storage) -> None:
    """Each finished request is freed at once (storage.cassandra._release): left in reference
    cycles (~25 objects each), a flood of queries made full collections of 50-60 ms on the loop."""
    import gc

    store = cassandra_storage
    s = Series.of(make_labels("gc_check", job="g", instance="h:1"))
    now = int(time.time() * 1000)
    b = SampleBatch("g/h:1")
    b.add(s, now, 1.0)
    await store.write(b)
    sel = [Matcher("__name__", MatchOp.EQ, "gc_check"), Matcher("job", MatchOp.RE, "g|x")]
    for _ in range(3):  # caches, prepared statements and the driver's connections settled
        await store.select(sel, now - 1000, now + 1000)
    from cassandra.cluster import ResponseFuture

    gc.collect()
    gc.disable()
    gc.set_debug(gc.DEBUG_SAVEALL)  # what a collection finds stays in gc.garbage, to be looked at
    try:
        for _ in range(20):
            got = await store.select(sel, now - 1000, now + 1000)
            assert [d.values.tolist() for d in got] == [[1.0]]
        gc.collect()
        # Only the requests' own cycles count: on a loaded machine the driver's threads may leave
        # others (a heartbeat's or a timed-out connection's exception and its frames).
        futures = sum(isinstance(o, ResponseFuture) for o in gc.garbage)
        found = len(gc.garbage)
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()
    assert futures == 0, f"{futures} requests of 20 reads freed only by the cyclic collector ({found} objects in all)"


async def test_raw_batch_spanning_an_hour_boundary(cassandra_storage) -> None:
    store = cassandra_storage
    s = Series.of(make_labels("hour_edge", job="e"))
    h = (int(time.time() * 1000) // HOUR_MS) * HOUR_MS
    stamps = [h - 2000, h - 1, h, h + 1]
    await store.write_columns("e/h:1", [s.id] * 4, stamps, [1.0, 2.0, 3.0, 4.0], [s])
    got = await store.select([Matcher("__name__", MatchOp.EQ, "hour_edge")], h - 10_000, h + 10_000)
    assert got[0].timestamps.tolist() == stamps and got[0].values.tolist() == [1.0, 2.0, 3.0, 4.0]


async def test_raw_reads_decode_to_numpy_columns_bit_exact(cassandra_storage) -> None:
    """The columnar session turns bigint/double rows into arrays (NaN payloads, -0.0, inf kept);
    other results (a text column) still come back as tuples."""
    store = cassandra_storage
    a = Series.of(make_labels("columnar_check", job="c", idx="a"))
    b = Series.of(make_labels("columnar_check", job="c", idx="b"))
    h = (int(time.time() * 1000) // HOUR_MS) * HOUR_MS - 3 * HOUR_MS
    stamps = np.array([h - 5, h, h + 1, h + HOUR_MS + 7, h + 2 * HOUR_MS], dtype=np.int64)
    vals = np.array([STALE_NAN, -0.0, np.inf, 1e-310, 123.456], dtype=np.float64)
    n = stamps.size
    await store.write_columns("c/h:1", [a.id] * n + [b.id] * n, np.tile(stamps, 2), np.tile(vals, 2), [a, b])
    hours = sorted({int(t) // HOUR_MS for t in stamps})
    pages = await store.execute_columnar(store.ps_read_raw_one, ("c/h:1", hours, a.id, h - 10, h + 3 * HOUR_MS))
    assert pages and all(isinstance(p, dict) for p in pages)
    assert pages[0]["ts"].dtype == np.int64 and pages[0]["value"].dtype == np.float64
    got = await store.select([Matcher("__name__", MatchOp.EQ, "columnar_check")], h - 10, h + 3 * HOUR_MS)
    assert [d.series.id for d in got] == sorted([a.id, b.id], key=lambda i: (a if i == a.id else b).labels)
    for d in got:
        assert d.timestamps.tolist() == stamps.tolist()
        assert d.values.view(np.uint64).tolist() == vals.view(np.uint64).tolist()
    text = await store.execute(
        f"SELECT value FROM {store.keyspace}.meta WHERE key = 'schema_version'", session=store.columnar_session
    )
    assert [list(p) for p in text] == [[(str(sch.SCHEMA_VERSION),)]]


async def test_reads_and_writes_survive_shut_down_connection_pools(cassandra_storage, caplog) -> None:
    """The driver shuts a session's pool after a failed idle heartbeat and, while the host
    still counts as up, never opens a new one ("Pool is shutdown" for every later request;
    seen in ``make cluster``). The store renews the pool and sends the request again."""
    store = cassandra_storage
    s = Series.of(make_labels("pool_check", job="p"))
    now = int(time.time() * 1000)
    await store.write_columns("p/h:1", [s.id], [now - 1000], [1.0], [s])
    sessions = (store.session, store.columnar_session)

    def shut_all() -> None:
        for session in sessions:
            for pool in list(session._pools.values()):
                pool.shutdown()

    shut_all()
    await store.write_columns("p/h:1", [s.id], [now], [2.0], [s])  # the main session's pool, renewed
    ms = [Matcher("__name__", MatchOp.EQ, "pool_check")]
    shut_all()
    got = await store.select(ms, now - 5000, now)  # index reads (main) and raw reads (columnar)
    assert [d.values.tolist() for d in got] == [[1.0, 2.0]]
    assert "lost its connection pool" in caplog.text
    assert all(not p.is_shutdown for session in sessions for p in session._pools.values())
    caplog.clear()
    pages = await store.execute_columnar(store.ps_read_raw_one, ("p/h:1", [now // HOUR_MS], s.id, now - 5000, now))
    assert [p["value"].tolist() for p in pages] == [[1.0, 2.0]]  # NumPy columns again: the columnar pool is back
    assert "lost its connection pool" not in caplog.text


@pytest.mark.parametrize("probe_rows", [5, 6, 1000])
async def test_long_posting_lists_are_read_whole(cassandra_storage, monkeypatch, probe_rows) -> None:
    """A label value's postings are probed unpaged up to POSTING_PROBE_ROWS; longer lists are
    read again, paged: either way every series comes back."""
    import storage.cassandra as cas

    store = cassandra_storage
    monkeypatch.setattr(cas, "POSTING_PROBE_ROWS", probe_rows)
    now = int(time.time() * 1000)
    series = [Series.of(make_labels("probe_check", job="same", idx=str(i))) for i in range(6)]
    await store.write_columns("pr/h:1", [s.id for s in series], [now] * 6, [1.0] * 6, series)
    got = await store.series([Matcher("__name__", MatchOp.EQ, "probe_check"), Matcher("job", MatchOp.EQ, "same")], now - 1000, now)
    assert sorted(s.id for s in got) == sorted(s.id for s in series)


# -- 100k series: exact label-matcher selection touching only the queried buckets ----------

METRICS = ["sel_cpu", "sel_mem", "sel_disk", "sel_net"]
JOBS = ["node", "db", "web", "cache", "queue"]
MODES = ["idle", "user", "system", "iowait"]


def _generate(n: int, seed: int) -> list[Series]:
    rnd = random.Random(seed)
    out = []
    for i in range(n):
        labels = {
            "job": JOBS[i % 5],
            "instance": f"h{i % 1000}:9100",
            "mode": MODES[(i // 5) % 4],
            "idx": str(i),
        }
        if rnd.random() < 0.3:
            labels["path"] = rnd.choice(["/", "/var", "/home"])
        out.append(Series.of(make_labels(METRICS[(i // 20) % 4], **labels)))
    return out


async def _write_all(store, series: list[Series], ts: int) -> None:
    # One write per job (20,000 series of the 100k each, a big exporter's scrape): the index
    # rows go in a request per partition and chunk (INDEX_CHUNKS_MAX chunks a write), so the
    # 100k took 42 s as 20 targets of 5,000 and take 29 s as 5 of 20,000 (measured at load 4);
    # what is checked is what the reads select.
    by_target: dict[str, list[Series]] = {}
    for s in series:
        by_target.setdefault(f"{s.get('job')}/all", []).append(s)
    from storage.cassandra import TransientStorageError

    for target, group in by_target.items():
        ids = np.array([s.id for s in group], dtype=np.int64)
        for attempt in range(6):  # as the lossless writer does: writes are idempotent, retry an overload
            try:
                await store.write_columns(
                    target, ids, np.full(ids.size, ts), np.arange(ids.size, dtype=np.float64), group
                )
                break
            except TransientStorageError:
                if attempt == 5:
                    raise
                await asyncio.sleep(0.5 * 2**attempt)


SELECTIONS = [
    [("__name__", "=", "sel_cpu"), ("job", "=", "db")],
    [("__name__", "=", "sel_cpu"), ("instance", "=", "h7:9100")],
    [("__name__", "=", "sel_mem"), ("job", "!=", "node"), ("mode", "=~", "idle|user")],
    [("__name__", "=", "sel_disk"), ("instance", "=~", "h1[0-9]:9100"), ("mode", "!~", "i.*")],
    [("__name__", "=", "sel_net"), ("path", "=", "")],
    [("__name__", "=", "sel_net"), ("path", "!=", ""), ("job", "=", "web")],
    [("__name__", "=~", "sel_(cpu|mem)"), ("instance", "=", "h42:9100")],
    [("__name__", "=", "sel_cpu"), ("path", "=~", "/v.*|"), ("job", "=", "cache"), ("instance", "=~", "h9.*")],
    [("__name__", "=", "sel_cpu"), ("job", "=", "nope")],
    [("__name__", "!~", "sel_(cpu|mem|disk)"), ("idx", "=~", "1234.")],
]


async def test_label_matchers_exact_on_100k_series_and_bucket_local(cassandra_storage) -> None:
    store = cassandra_storage
    day = int(time.time() * 1000) // DAY_MS - 1  # yesterday, well inside the day index TTL
    t_query = day * DAY_MS + 6 * HOUR_MS
    series = _generate(100_000, seed=1)
    await _write_all(store, series, t_query)
    # Other days carry other series (and some of the same): they must not be read or returned.
    before = _generate(2_000, seed=2)
    before = [Series.of(s.labels + (("zz_other", "before"),)) for s in before]
    await _write_all(store, before, t_query - 2 * DAY_MS)
    await _write_all(store, series[:500], t_query + 2 * DAY_MS)

    for spec in SELECTIONS:
        ms = [Matcher(n, MatchOp(op), v) for n, op, v in spec]
        store.index_reads.clear()
        got = await store.series(ms, t_query - HOUR_MS, t_query + HOUR_MS)
        expected = {s.id for s in series if match_all(ms, s.labels)}
        assert {s.id for s in got} == expected, spec
        # Only index partitions of the queried range's day bucket were read.
        assert store.index_reads, spec
        assert {bucket for (_table, bucket) in store.index_reads} == {day}, (spec, store.index_reads)
        assert all(t.endswith("_day") for (t, _b) in store.index_reads)

    ms = [Matcher("__name__", MatchOp.EQ, "sel_cpu"), Matcher("instance", MatchOp.EQ, "h7:9100")]
    data = await store.select(ms, t_query - HOUR_MS, t_query + HOUR_MS)
    assert {d.series.id for d in data} == {s.id for s in series if match_all(ms, s.labels)}
    assert all(d.timestamps.tolist() == [t_query] for d in data)


async def test_storage_init_gives_version_3_chunk_tables_their_columns(cassandra) -> None:
    """Version 3 stored a chunk as one record blob (``data``). Init adds the column blobs;
    the record-form chunks are read as they are, and a write merges into one in column form."""
    from fixtures_cassandra import keyspace_store

    from storage import rollup_chunks as chunks
    from storage.base import AGGREGATES, MINUTE_MS, Resolution
    from storage.cassandra_rollup import CassandraRollupStorage
    from storage.rollup import Rollup
    from storage.rollup_job import RollupRows

    with keyspace_store(cassandra, "chunks_v4", CassandraRollupStorage) as store:
        ks = store.keyspace
        day = int(time.time() * 1000) // DAY_MS * DAY_MS - DAY_MS
        s = Series.of(make_labels("v4_check", job="u"))
        await store.write(SampleBatch("u/x", [s], [day + MINUTE_MS], [1.0]))
        for col in sch.CHUNK_COLUMNS:
            store.session.execute(f"ALTER TABLE {ks}.rollup_1m_chunks DROP {col}", timeout=60)
        store.session.execute(f"INSERT INTO {ks}.meta (key, value) VALUES ('schema_version', '3')")
        rng = np.random.default_rng(4)
        ts = np.arange(day, day + 200 * MINUTE_MS, MINUTE_MS, dtype=np.int64)
        old = Rollup.from_columns(ts, {n: rng.random(ts.size) for n in chunks.RECORD_AGGREGATES})
        store.session.execute(
            f"INSERT INTO {ks}.rollup_1m_chunks (series_id, day, start_ts, data) VALUES (%s, %s, %s, %s)",
            (s.id, day // DAY_MS, day, chunks.encode(Resolution.MINUTE, day, old)),
        )
        assert sch.create_schema(store.session, sch.SchemaSpec(keyspace=ks)) == []
        assert sch.schema_version(store.session, ks) == sch.SCHEMA_VERSION
        fresh = CassandraRollupStorage.connect_sync([cassandra.host], cassandra.port, ks)
        try:
            assert (await fresh.read_rollup(Resolution.MINUTE, s.id, day, day + DAY_MS)).bit_equal(old)
            more = Rollup.from_columns(ts[-1:] + MINUTE_MS, {n: np.array([7.0]) for n in AGGREGATES})
            await fresh.write_rollups(Resolution.MINUTE, [RollupRows(s.id, more)])
            got = await fresh.select(
                [Matcher("__name__", MatchOp.EQ, "v4_check")], day, day + DAY_MS, Resolution.MINUTE, columns=["increase"]
            )
            assert set(got[0].agg) == {"increase"}
            assert got[0].agg["increase"].tolist() == [*old.increase, 7.0]
            data, inc = _rows(fresh, f"SELECT data, c_increase FROM {ks}.rollup_1m_chunks")[0]
            assert not data and len(inc) == 201 * 8
        finally:
            fresh.shutdown()
