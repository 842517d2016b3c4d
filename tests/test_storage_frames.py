"""Scrape frames on SQLite (issue #20): what is read back is what the per-series path reads.

The same batches go to a store that writes frames and to one that never does
(``frame_min_samples`` out of reach: the path every other storage test pins), and the reads
of both are compared bit for bit before any transposition, after a partial one and after
all; a concurrent reader sees every sample exactly once while frames move; retention drops
frames; the rollup job's output over frames equals its output over the per-series path; a
database written before frames opens and keeps its data.
"""

from __future__ import annotations

import asyncio
import json
import math
import sqlite3
import tempfile
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_rollup_job import dump, generate, load, make_job

from storage.base import DAY_MS, SeriesData
from storage.matchers import Matcher, MatchOp
from storage.model import STALE_NAN, SampleBatch, Series, make_labels
from storage.sqlite import APPEND_RAW, FOREVER_MS, SQLiteStorage, raw_chunk_rows
from storage.sqlite_rollup import SQLiteRollupStorage

DAY0 = 1_699_920_000_000  # a day boundary (ms)
BASE = DAY0 + 10 * 3_600_000
NOW = BASE + 70_000  # with the default 60 s: timestamps before BASE + 10 s are late
TARGETS = ["web/h0:9100", "web/h1:9100", "rules/g"]
SERIES = {
    t: [Series.of(make_labels("fr_metric" if k % 2 else "fr_other", instance=t, k=str(k))) for k in range(12)]
    for t in TARGETS
}
TS = [BASE + k * 5_000 for k in range(16)]
VALUES = [0.0, -0.0, 1.5, 2.5, -7.0, float("nan"), STALE_NAN, math.inf, 1e308]
ALL = [Matcher("__name__", MatchOp.RE, "fr_.+")]
SOME = [Matcher("__name__", MatchOp.EQ, "fr_metric"), Matcher("k", MatchOp.RE, "[1-7]")]  # columns in between


def rows_of(got: list[SeriesData]) -> list[tuple[object, list[int], list[int]]]:
    return [(d.series.labels, d.timestamps.tolist(), d.values.view(np.int64).tolist()) for d in got]


async def open_pair(tmp: Path, now: int = NOW) -> tuple[SQLiteRollupStorage, SQLiteRollupStorage]:
    """(frames, per-series path); the frame store transposes only when asked."""
    frames = await SQLiteRollupStorage.open(tmp / "frames.db", now_ms=lambda: now)
    frames.frame_span_ms = FOREVER_MS
    plain = await SQLiteRollupStorage.open(tmp / "plain.db", now_ms=lambda: now)
    plain.frame_min_samples = 2**31
    return frames, plain


def count(path: Path, table: str) -> int:
    con = sqlite3.connect(path)
    try:
        return int(con.execute(f"SELECT count(*) FROM {table}").fetchone()[0])
    finally:
        con.close()


@st.composite
def batches(draw: st.DrawFn) -> SampleBatch:
    target = draw(st.sampled_from(TARGETS))
    scrape = st.lists(st.integers(0, 11), min_size=8, max_size=12, unique=True)  # a frame, layouts vary
    anything = st.lists(st.integers(0, 11), min_size=1, max_size=14)  # duplicates, small groups
    idx = draw(st.one_of(scrape, scrape, anything))
    ts = draw(st.sampled_from(TS))
    timestamps = [ts] * len(idx)
    for i, t in draw(st.lists(st.tuples(st.integers(0, len(idx) - 1), st.sampled_from(TS)), max_size=3)):
        timestamps[i] = t  # explicit timestamps: a mixed-ts batch
    values = draw(st.lists(st.sampled_from(VALUES), min_size=len(idx), max_size=len(idx)))
    return SampleBatch(target, [SERIES[target][i] for i in idx], timestamps, values)


async def _same_reads(ops: list[SampleBatch], cut: int) -> None:
    with tempfile.TemporaryDirectory(prefix="ringmon-frames-") as tmp:
        frames, plain = await open_pair(Path(tmp))
        try:
            for k, b in enumerate(ops):
                if k == len(ops) // 2:  # the reader learns these layouts: later reads cut frames by them
                    await frames.select(SOME, BASE - 1, BASE + 100_000)
                await frames.write(b)
                await plain.write(b)
            some = rows_of(await plain.select(SOME, BASE - 1, BASE + 100_000))
            assert rows_of(await frames.select(SOME, BASE - 1, BASE + 100_000)) == some
            want = rows_of(await plain.select(ALL, BASE - 1, BASE + 100_000))
            window = [rows_of(await s.read_raw_window(0, 1, BASE - 1, BASE + 100_000)) for s in (frames, plain)]
            assert window[0] == window[1]
            assert rows_of(await frames.select(ALL, BASE - 1, BASE + 100_000)) == want
            await frames.transpose_frames(cut)
            assert rows_of(await frames.select(ALL, BASE - 1, BASE + 100_000)) == want
            part = rows_of(await frames.select(ALL, BASE + 20_000, BASE + 50_000))
            assert part == rows_of(await plain.select(ALL, BASE + 20_000, BASE + 50_000))
            await frames.transpose_frames(FOREVER_MS)
            assert rows_of(await frames.select(ALL, BASE - 1, BASE + 100_000)) == want
            assert rows_of(await frames.read_raw_window(0, 1, BASE - 1, BASE + 100_000)) == window[1]
        finally:
            await frames.close()
            await plain.close()


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    ops=st.lists(batches(), min_size=1, max_size=10),
    repeats=st.lists(st.integers(0, 9), max_size=3),
    cut=st.sampled_from(TS),
)
def test_frames_read_back_what_the_per_series_path_reads(ops: list[SampleBatch], repeats: list[int], cut: int) -> None:
    """Random batches (layout changes, duplicated series, explicit and late timestamps,
    stale markers and NaN, the same scrape written again with other values): the frame
    store reads what the per-series store reads, before, during and after transposition."""
    ops = ops + [ops[i % len(ops)] for i in repeats]
    asyncio.run(_same_reads(ops, cut))


def scrape(target: str, k: int, ts: int, n: int = 40) -> SampleBatch:
    series = [Series.of(make_labels("fr_metric", instance=target, k=str(i))) for i in range(n)]
    return SampleBatch(target, series, [ts] * n, [float(k * 1000 + i) for i in range(n)])


async def test_frames_are_one_row_per_scrape_and_idempotent(tmp_path: Path) -> None:
    frames, plain = await open_pair(tmp_path)
    try:
        for k in range(6):
            b = scrape("web/h0:9100", k, BASE + 20_000 + k * 5_000)
            await frames.write(b)
            await frames.write(b)  # a replay: stored once
            await plain.write(b)
        assert count(tmp_path / "frames.db", "raw_frames") == 6
        assert count(tmp_path / "frames.db", "raw_layouts") == 1
        assert count(tmp_path / "frames.db", "raw_chunks") == 0
        want = rows_of(await plain.select(ALL, BASE, BASE + 100_000))
        assert rows_of(await frames.select(ALL, BASE, BASE + 100_000)) == want
        assert len(want) == 40 and all(len(r[1]) == 6 for r in want)
        assert await frames.transpose_frames(FOREVER_MS) == 6
        assert count(tmp_path / "frames.db", "raw_frames") == 0
        assert count(tmp_path / "frames.db", "raw_chunks") == 40
        assert rows_of(await frames.select(ALL, BASE, BASE + 100_000)) == want
    finally:
        await frames.close()
        await plain.close()


async def test_the_writer_transposes_closed_spans_by_itself(tmp_path: Path) -> None:
    clock = [BASE]
    store = await SQLiteStorage.open(tmp_path / "auto.db", now_ms=lambda: clock[0])
    try:
        for k in range(5 * 12 + 1):  # 5 minutes and one scrape at 5 s, the clock at each scrape
            clock[0] = BASE + k * 5_000
            await store.write(scrape("web/h0:9100", k, clock[0]))
        clock[0] = BASE + 12 * 60_000
        await store.write(scrape("web/h0:9100", 999, clock[0]))
        # the writer moved the frames of every whole span that ended a minute ago
        horizon = (clock[0] - store.frame_grace_ms) // store.frame_span_ms * store.frame_span_ms
        con = sqlite3.connect(tmp_path / "auto.db")
        oldest = con.execute("SELECT min(ts) FROM raw_frames").fetchone()[0]
        con.close()
        assert oldest >= horizon
        got = await store.select(ALL, BASE, clock[0])
        assert len(got) == 40 and all(len(d) == 5 * 12 + 2 for d in got)
    finally:
        await store.close()
    assert count(tmp_path / "auto.db", "raw_frames") == 0  # close() moves the rest


async def test_a_reader_during_transposition_sees_every_sample_once(tmp_path: Path) -> None:
    frames, plain = await open_pair(tmp_path)
    try:
        for k in range(60):
            for t in ("web/h0:9100", "web/h1:9100", "web/h2:9100"):
                b = scrape(t, k, BASE + k * 5_000, 60)
                await frames.write(b)
                await plain.write(b)
        want = rows_of(await plain.select(ALL, BASE, BASE + 400_000))
        done = asyncio.Event()
        reads = 0

        async def transpose() -> None:
            for minute in range(1, 6):  # five transactions, readers between and during them
                await frames.transpose_frames(BASE + minute * 60_000)
            done.set()

        async def read() -> None:
            nonlocal reads
            while not done.is_set() and reads < 200:
                assert rows_of(await frames.select(ALL, BASE, BASE + 400_000)) == want
                reads += 1

        await asyncio.gather(transpose(), read(), read())
        assert reads >= 2
        assert rows_of(await frames.select(ALL, BASE, BASE + 400_000)) == want
    finally:
        await frames.close()
        await plain.close()


async def test_retention_drops_old_frames(tmp_path: Path) -> None:
    clock = [BASE - 2 * DAY_MS]
    store = await SQLiteStorage.open(tmp_path / "ret.db", now_ms=lambda: clock[0])
    store.frame_span_ms = FOREVER_MS
    try:
        await store.write(scrape("web/h0:9100", 1, clock[0]))
        clock[0] = BASE
        await store.write(scrape("web/h0:9100", 2, clock[0]))
        assert count(tmp_path / "ret.db", "raw_frames") == 2
        assert await store.delete_raw_before(DAY0) == 1
        got = await store.select(ALL, BASE - 3 * DAY_MS, BASE + 1)
        assert {d.timestamps.tolist()[0] for d in got} == {BASE} and all(len(d) == 1 for d in got)
        assert count(tmp_path / "ret.db", "raw_layouts") == 1  # still in use
    finally:
        await store.close()


async def test_rollup_job_over_frames_equals_the_per_series_path(tmp_path: Path) -> None:
    data = generate()
    out = []
    for name, frame_min in (("frames", 8), ("plain", 2**31)):
        store = await SQLiteRollupStorage.open(tmp_path / f"{name}.db")
        store.late_after_ms = 2**62  # every scrape is recent: the frame store writes frames
        store.frame_span_ms = FOREVER_MS
        store.frame_min_samples = frame_min
        try:
            await load(store, data)
            if name == "frames":
                assert count(tmp_path / "frames.db", "raw_frames") > 1000
            await make_job(store, tmp_path / f"locks-{name}").run_once(initial_start_ms=BASE - 10 * 3_600_000)
        finally:
            store.frame_span_ms = FOREVER_MS
            await store.close()
        out.append(dump(tmp_path / f"{name}.db"))
    assert out[0]["raw_blocks"] and out[0] == out[1]


# The schema of a database written before frames (schema_version 1), as it was.
SCHEMA_V1 = """
CREATE TABLE series (series_id INTEGER PRIMARY KEY, metric TEXT NOT NULL, labels TEXT NOT NULL,
                     target TEXT NOT NULL DEFAULT '');
CREATE TABLE series_day (day INTEGER NOT NULL, metric TEXT NOT NULL, series_id INTEGER NOT NULL,
                         PRIMARY KEY (day, metric, series_id)) WITHOUT ROWID;
CREATE TABLE raw_chunks (series_id INTEGER NOT NULL, start_ts INTEGER NOT NULL, data BLOB NOT NULL,
                         PRIMARY KEY (series_id, start_ts)) WITHOUT ROWID;
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE raw_late (hour INTEGER PRIMARY KEY, written_at INTEGER NOT NULL);
INSERT INTO meta (key, value) VALUES ('schema_version', '1');
"""


async def test_a_database_from_before_frames_opens_and_keeps_its_data(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    old = [scrape("web/h0:9100", k, BASE + k * 5_000) for k in range(10)]
    con = sqlite3.connect(path, isolation_level=None)
    con.executescript(SCHEMA_V1)
    for b in old:
        for s in b.series:
            con.execute("INSERT OR IGNORE INTO series VALUES (?,?,?,?)",
                        (s.id, s.metric, json.dumps(s.labels), b.target))
            con.execute("INSERT OR IGNORE INTO series_day VALUES (?,?,?)", (BASE // DAY_MS, s.metric, s.id))
        bits = np.asarray(b.values, dtype=np.float64).view(np.int64).tolist()
        con.executemany(APPEND_RAW, raw_chunk_rows([s.id for s in b.series], b.timestamps, bits))
    con.close()
    new = [scrape("web/h0:9100", k, BASE + k * 5_000) for k in range(10, 16)]
    plain = await SQLiteStorage.open(tmp_path / "plain.db", now_ms=lambda: NOW)
    plain.frame_min_samples = 2**31
    store = await SQLiteStorage.open(path, now_ms=lambda: NOW)
    store.frame_span_ms = FOREVER_MS
    try:
        for b in old:
            await plain.write(b)
        assert rows_of(await store.select(ALL, BASE, BASE + 100_000)) == rows_of(
            await plain.select(ALL, BASE, BASE + 100_000)
        )
        for b in new:
            await store.write(b)
            await plain.write(b)
        assert count(path, "raw_frames") == len(new)
        want = rows_of(await plain.select(ALL, BASE, BASE + 100_000))
        assert rows_of(await store.select(ALL, BASE, BASE + 100_000)) == want
        await store.transpose_frames(FOREVER_MS)
        assert rows_of(await store.select(ALL, BASE, BASE + 100_000)) == want
    finally:
        await store.close()
        await plain.close()
    con = sqlite3.connect(path)
    assert con.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[0] == "2"
    # raw_chunks, a WITHOUT ROWID table then, is rebuilt as a rowid table (its rows kept: the reads above)
    assert "WITHOUT ROWID" not in con.execute("SELECT sql FROM sqlite_master WHERE name = 'raw_chunks'").fetchone()[0]
    con.close()


async def test_a_series_of_another_target_keeps_the_per_series_path(tmp_path: Path) -> None:
    """Reads find a series' frames by its target: a scrape holding a series first written by
    another target is not a frame (its samples still read back, the later write winning)."""
    frames, plain = await open_pair(tmp_path)
    try:
        ops = [scrape("web/h0:9100", 1, BASE + 20_000), scrape("web/h1:9100", 2, BASE + 25_000)]
        moved = scrape("web/h1:9100", 3, BASE + 30_000)
        moved.series[0] = ops[0].series[0]  # a series of h0 in a scrape of h1
        ops += [moved, scrape("web/h0:9100", 4, BASE + 30_000)]
        for b in ops:
            await frames.write(b)
            await plain.write(b)
        assert count(tmp_path / "frames.db", "raw_frames") == 3
        want = rows_of(await plain.select(ALL, BASE, BASE + 100_000))
        assert rows_of(await frames.select(ALL, BASE, BASE + 100_000)) == want
        await frames.transpose_frames(FOREVER_MS)
        assert rows_of(await frames.select(ALL, BASE, BASE + 100_000)) == want
    finally:
        await frames.close()
        await plain.close()


async def test_the_later_write_of_a_timestamp_wins_across_frames_and_chunks(tmp_path: Path) -> None:
    """A frame, then a per-series write of the same (target, ts) (a small batch), then a frame
    of another layout, then the first layout again: each later write wins, as on one path."""
    frames, plain = await open_pair(tmp_path)
    ts = BASE + 30_000
    full = scrape("web/h0:9100", 1, ts)
    small = SampleBatch("web/h0:9100", full.series[:3], [ts] * 3, [-1.0, -2.0, -3.0])
    other = SampleBatch("web/h0:9100", full.series[2:20], [ts] * 18, [float(-10 - i) for i in range(18)])
    try:
        for b in (full, small, other, small, full, other):
            for store in (frames, plain):
                await store.write(b)
            assert rows_of(await frames.select(ALL, BASE, BASE + 100_000)) == rows_of(
                await plain.select(ALL, BASE, BASE + 100_000)
            )
        await frames.transpose_frames(FOREVER_MS)
        assert rows_of(await frames.select(ALL, BASE, BASE + 100_000)) == rows_of(
            await plain.select(ALL, BASE, BASE + 100_000)
        )
    finally:
        await frames.close()
        await plain.close()
