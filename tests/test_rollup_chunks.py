"""Rollup chunks: the packing, merging and the SQLite store's chunk tables."""

from __future__ import annotations

import sqlite3

import numpy as np
import pytest

from storage import rollup_chunks as chunks
from storage.base import AGGREGATES, DAY_MS, HOUR_MS, MINUTE_MS, Resolution
from storage.matchers import Matcher, MatchOp
from storage.model import SampleBatch, Series, make_labels
from storage.rollup import Rollup
from storage.rollup_job import RollupRows
from storage.sqlite_rollup import SQLiteRollupStorage

T0 = 1_700_000_000_000 // DAY_MS * DAY_MS


def rollup(ts: list[int], seed: int = 0) -> Rollup:
    rng = np.random.default_rng(seed)
    n = len(ts)
    # (the record form keeps these; the rate aggregates are then NaN, "not known", either way)
    cols = {name: rng.random(n) * 100 for name in chunks.RECORD_AGGREGATES}
    return Rollup.from_columns(np.asarray(ts, dtype=np.int64), cols)


def test_round_trip_keeps_every_bit() -> None:
    start = T0 + 6 * HOUR_MS  # a 6 h chunk boundary (T0 is a day boundary)
    r = rollup([start + i * MINUTE_MS for i in (0, 1, 5, 359)])
    r.sum[1] = np.nan
    r.min[2] = -0.0
    r.max[3] = np.inf
    back = chunks.decode(start, chunks.encode(Resolution.MINUTE, start, r))
    assert back.bit_equal(r)
    assert chunks.decode(start, chunks.encode(Resolution.MINUTE, start, Rollup.empty())).timestamps.size == 0


def test_encode_refuses_buckets_outside_the_chunk_or_out_of_order() -> None:
    start = T0
    with pytest.raises(ValueError, match="outside the chunk"):
        chunks.encode(Resolution.MINUTE, start, rollup([start + 6 * HOUR_MS]))
    with pytest.raises(ValueError, match="ascending"):
        chunks.encode(Resolution.MINUTE, start, rollup([start + MINUTE_MS, start]))


def test_decode_names_a_corrupt_chunk() -> None:
    data = chunks.encode(Resolution.HOUR, T0, rollup([T0, T0 + HOUR_MS]))
    with pytest.raises(chunks.ChunkError, match="bytes for 2 buckets"):
        chunks.decode(T0, data[:-1])
    with pytest.raises(chunks.ChunkError, match="unknown format"):
        chunks.decode(T0, b"\x09" + data[1:])


def test_split_follows_the_aligned_spans() -> None:
    span = chunks.CHUNK_MS[Resolution.HOUR]
    base = T0 // span * span
    ts = [base + i * HOUR_MS for i in range(0, 3 * 8 * 24, 7)]
    pieces = list(chunks.split(Resolution.HOUR, rollup(ts)))
    assert [p[0] for p in pieces] == [base, base + span, base + 2 * span]
    assert sum(len(p[1]) for p in pieces) == len(ts)
    assert all(start <= int(p.timestamps[0]) and int(p.timestamps[-1]) < start + span for start, p in pieces)


def test_merge_keeps_both_and_the_newer_bucket_wins() -> None:
    old = rollup([T0, T0 + MINUTE_MS, T0 + 3 * MINUTE_MS], seed=1)
    new = rollup([T0 + MINUTE_MS, T0 + 2 * MINUTE_MS], seed=2)
    m = chunks.merge(old, new)
    assert m.timestamps.tolist() == [T0 + i * MINUTE_MS for i in range(4)]
    assert m.last.tolist() == [old.last[0], new.last[0], new.last[1], old.last[2]]


def test_splice_columns_is_merge_when_it_answers() -> None:
    """A window after, between or over (a rerun) the stored buckets is spliced into their
    bytes; stored buckets the newer range skips make it decline; what it gives is merge's."""
    m = Resolution.MINUTE
    stored = [T0 + i * MINUTE_MS for i in (0, 1, 2, 5, 6, 9)]
    cases = {  # newer bucket minutes -> splices?
        (10, 11): True, (3, 4): True, (5, 6): True, (4, 5, 6, 7): True, (0, 1, 2, 5, 6, 9): True,
        (8,): True, (5, 7): False, (0, 2): False, (1, 5, 6): False,
    }
    old_cols = chunks.encode_columns(m, T0, rollup(stored, seed=1))
    for minutes, splices in cases.items():
        new = rollup([T0 + i * MINUTE_MS for i in minutes], seed=2)
        got = chunks.splice_columns(old_cols, chunks.encode_columns(m, T0, new))
        assert (got is not None) == splices, minutes
        if got is not None:
            assert got == chunks.encode_columns(m, T0, chunks.merge(rollup(stored, seed=1), new))
    assert chunks.splice_columns({"ts": b""}, old_cols) is None  # not every column stored: decline
    assert chunks.splice_columns(chunks.encode_columns(m, T0, Rollup.empty()), old_cols) == old_cols


def test_read_series_joins_chunks_and_cuts_to_the_asked_range() -> None:
    a = rollup([T0 + i * MINUTE_MS for i in range(5)])
    b = rollup([T0 + 6 * HOUR_MS + i * MINUTE_MS for i in range(5)], seed=3)
    stored = [(T0, chunks.encode(Resolution.MINUTE, T0, a)),
              (T0 + 6 * HOUR_MS, chunks.encode(Resolution.MINUTE, T0 + 6 * HOUR_MS, b))]
    j = chunks.read_series(stored, T0 + 2 * MINUTE_MS, T0 + 6 * HOUR_MS + MINUTE_MS, Resolution.MINUTE)
    assert j.timestamps.tolist() == [T0 + i * MINUTE_MS for i in (2, 3, 4)] + [
        T0 + 6 * HOUR_MS,
        T0 + 6 * HOUR_MS + MINUTE_MS,
    ]
    assert j.increase.tolist() == a.increase[2:].tolist() + b.increase[:2].tolist()
    with pytest.raises(chunks.ChunkError):
        chunks.read_series([stored[0], (T0 + 6 * HOUR_MS, stored[1][1][:-3])], T0, T0 + DAY_MS, Resolution.MINUTE)


async def test_sqlite_store_reads_what_partial_writes_left(tmp_path) -> None:
    st = await SQLiteRollupStorage.open(tmp_path / "db")
    try:
        s = Series.of(make_labels("m", instance="a"))
        await st.write(SampleBatch("t", [s], [T0], [1.0]))
        first = rollup([T0 + i * MINUTE_MS for i in range(0, 400, 2)], seed=4)  # crosses a chunk edge
        second = rollup([T0 + i * MINUTE_MS for i in range(1, 401, 2)], seed=5)
        again = rollup([T0 + 10 * MINUTE_MS], seed=6)
        await st.write_rollups(Resolution.MINUTE, [RollupRows(s.id, first)])
        await st.write_rollups(Resolution.MINUTE, [RollupRows(s.id, second), RollupRows(s.id, again)])
        got = await st.read_rollup(Resolution.MINUTE, s.id, T0, T0 + DAY_MS)
        assert got.timestamps.tolist() == [T0 + i * MINUTE_MS for i in range(400)]
        assert got.last[10] == again.last[0] and got.last[11] == second.last[5] and got.last[12] == first.last[6]
        sel = await st.select([Matcher("__name__", MatchOp.EQ, "m")], T0 + 5 * MINUTE_MS, T0 + 7 * HOUR_MS,
                              Resolution.MINUTE)
        assert len(sel) == 1 and sel[0].timestamps[0] == T0 + 5 * MINUTE_MS
        assert sel[0].timestamps[-1] == T0 + 399 * MINUTE_MS and np.array_equal(sel[0].values, sel[0].agg["last"])
        # Retention inside a chunk keeps its newer part.
        cut = T0 + 100 * MINUTE_MS
        assert await st.delete_rollups_before(Resolution.MINUTE, cut) == 100
        left = await st.read_rollup(Resolution.MINUTE, s.id, T0, T0 + DAY_MS)
        assert left.timestamps.tolist() == [T0 + i * MINUTE_MS for i in range(100, 400)]
    finally:
        await st.close()


async def test_sqlite_store_converts_a_database_with_one_row_per_bucket(tmp_path) -> None:
    path = tmp_path / "old.db"
    st = await SQLiteRollupStorage.open(path)
    s = Series.of(make_labels("m", instance="a"))
    await st.write(SampleBatch("t", [s], [T0], [1.0]))
    await st.close()
    r = rollup([T0 + i * HOUR_MS for i in range(300)], seed=7)
    r.sum[0] = np.nan
    con = sqlite3.connect(path)
    con.execute(
        "CREATE TABLE rollup_1h (series_id INTEGER NOT NULL, ts INTEGER NOT NULL, count INTEGER NOT NULL,"
        " sum INTEGER NOT NULL, min INTEGER NOT NULL, max INTEGER NOT NULL, last INTEGER NOT NULL,"
        " increase INTEGER NOT NULL, PRIMARY KEY (series_id, ts)) WITHOUT ROWID"
    )
    bits = [getattr(r, a).view(np.int64).tolist() for a in chunks.RECORD_AGGREGATES]
    with con:
        con.executemany(
            "INSERT INTO rollup_1h VALUES (?,?,?,?,?,?,?,?)",
            [(s.id, t, *b) for t, *b in zip(r.timestamps.tolist(), *bits, strict=True)],
        )
    con.close()
    st = await SQLiteRollupStorage.open(path)
    try:
        got = await st.read_rollup(Resolution.HOUR, s.id, T0, T0 + 400 * HOUR_MS)
        assert got.bit_equal(r)
    finally:
        await st.close()
    con = sqlite3.connect(path)
    tables = {n for (n,) in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    con.close()
    assert "rollup_1h" not in tables and "rollup_1h_chunks" in tables


def test_read_series_prefers_final_buckets_then_the_later_provisional_chunk() -> None:
    a = T0  # an aligned (final) chunk with minutes 0..9 and 20
    final = rollup([a + i * MINUTE_MS for i in [*range(10), 20]], seed=8)
    early = rollup([a + i * MINUTE_MS for i in range(5, 16)], seed=9)  # provisional from minute 5
    late = rollup([a + i * MINUTE_MS for i in range(12, 18)], seed=10)  # provisional from minute 12
    stored = [
        (a, chunks.encode(Resolution.MINUTE, a, final)),
        (a + 5 * MINUTE_MS, chunks.encode(Resolution.MINUTE, a + 5 * MINUTE_MS, early)),
        (a + 12 * MINUTE_MS, chunks.encode(Resolution.MINUTE, a + 12 * MINUTE_MS, late)),
    ]
    assert [chunks.is_provisional(Resolution.MINUTE, s) for s, _ in stored] == [False, True, True]
    got = chunks.read_series(stored, a, a + HOUR_MS, Resolution.MINUTE)
    assert got.timestamps.tolist() == [a + i * MINUTE_MS for i in [*range(18), 20]]
    want = [*final.last[:10], *early.last[5:7], *late.last[:6], final.last[10]]
    assert got.last.tolist() == want


def test_hour_pieces_win_over_their_chunk_and_later_pieces_over_earlier() -> None:
    """1h pieces (keys inside the span, the Cassandra job's live seals) hold newer buckets
    than their chunk: for an equal bucket start the later key wins, the chunk's included;
    pieces after the chunk's buckets join as they are, in column form too."""
    a = T0 - T0 % chunks.chunk_span(Resolution.HOUR)
    chunk = rollup([a + i * HOUR_MS for i in range(30)], seed=21)
    p1, p2 = a + 28 * HOUR_MS, a + 29 * HOUR_MS  # (over the chunk's last two hours, then over p1's last)
    piece1, piece2 = rollup([p1, p1 + HOUR_MS, p1 + 2 * HOUR_MS], seed=22), rollup([p2 + HOUR_MS, p2 + 2 * HOUR_MS], seed=23)
    for encode in (chunks.encode, chunks.encode_columns):
        stored = [(a, encode(Resolution.HOUR, a, chunk)), (p1, encode(Resolution.HOUR, p1, piece1)),
                  (p2, encode(Resolution.HOUR, p2, piece2))]
        got = chunks.read_series(stored, a, a + 4 * DAY_MS, Resolution.HOUR)
        assert got.timestamps.tolist() == [a + i * HOUR_MS for i in range(32)]
        assert got.last.tolist() == [*chunk.last[:28], piece1.last[0], piece1.last[1], *piece2.last]
        # the same rows as MINUTE chunks would be provisional ones: the aligned chunk wins
        assert chunks.read_series(stored, a, a + 4 * DAY_MS, Resolution.MINUTE).last[28] == chunk.last[28]
    apart = [(a, chunks.encode_columns(Resolution.HOUR, a, chunk)),
             (a + 30 * HOUR_MS, chunks.encode_columns(Resolution.HOUR, a + 30 * HOUR_MS,
                                                       rollup([a + 30 * HOUR_MS, a + 31 * HOUR_MS], seed=24)))]
    rows = [(5, start, b"", c["ts"], c["last"]) for start, c in apart]
    [(ts, cols)] = chunks.read_many(rows, a, a + DAY_MS * 2, Resolution.HOUR, ("last",)).values()
    assert ts.tolist() == [a + i * HOUR_MS for i in range(32)] and cols["last"][:30].tolist() == chunk.last.tolist()


def test_read_series_joins_a_following_provisional_chunk_as_it_is() -> None:
    # The usual layout: final chunks, then the open window's provisional chunk after them.
    a = T0
    final0 = rollup([a + i * MINUTE_MS for i in range(360)], seed=11)
    final1 = rollup([a + 6 * HOUR_MS + i * MINUTE_MS for i in range(120)], seed=12)
    p = a + 8 * HOUR_MS
    prov = rollup([p + i * MINUTE_MS for i in range(37)], seed=13)
    stored = [
        (a, chunks.encode(Resolution.MINUTE, a, final0)),
        (a + 6 * HOUR_MS, chunks.encode(Resolution.MINUTE, a + 6 * HOUR_MS, final1)),
        (p, chunks.encode(Resolution.MINUTE, p, prov)),
    ]
    assert chunks._ascending_views([(t, *chunks._views(t, c, ())) for t, c in stored])
    got = chunks.read_series(stored, a + MINUTE_MS, p + 30 * MINUTE_MS, Resolution.MINUTE)
    want_ts = np.concatenate([final0.timestamps, final1.timestamps, prov.timestamps])
    want_inc = np.concatenate([final0.increase, final1.increase, prov.increase])
    keep = (want_ts >= a + MINUTE_MS) & (want_ts <= p + 30 * MINUTE_MS)
    assert got.timestamps.tolist() == want_ts[keep].tolist()
    assert got.increase.tolist() == want_inc[keep].tolist()
    # A provisional chunk overlapping the final one is not joined as it is: final buckets win.
    overlap = rollup([a + 6 * HOUR_MS + i * MINUTE_MS for i in range(100, 140)], seed=14)
    stored[2] = (a + 6 * HOUR_MS + 100 * MINUTE_MS, chunks.encode(Resolution.MINUTE, a + 6 * HOUR_MS + 100 * MINUTE_MS, overlap))
    assert not chunks._ascending_views([(t, *chunks._views(t, c, ())) for t, c in stored])
    got = chunks.read_series(stored, a, a + DAY_MS, Resolution.MINUTE)
    assert got.timestamps.tolist() == sorted(set(want_ts[:480].tolist()) | set(overlap.timestamps.tolist()))
    assert got.increase[359 + 100].tolist() == final1.increase[99].tolist()
    assert got.increase[360 + 119].tolist() == final1.increase[119].tolist()
    assert got.increase[360 + 120].tolist() == overlap.increase[20].tolist()


def test_column_form_round_trip_and_reads_of_some_columns() -> None:
    start = T0 + 6 * HOUR_MS
    r = rollup([start + i * MINUTE_MS for i in (0, 1, 5, 359)], seed=15)
    r.sum[1] = np.nan
    r.increase[2] = -0.0
    cols = chunks.encode_columns(Resolution.MINUTE, start, r)
    assert set(cols) == set(chunks.COLUMNS) and all(len(v) == 4 * 8 for v in cols.values())
    assert chunks.decode_payload(start, cols).bit_equal(r)
    assert chunks.bucket_count(start, cols) == 4
    # A read of some columns needs only those (and ts).
    ts, got = chunks.read_columns([(start, {"ts": cols["ts"], "increase": cols["increase"]})], start, start + HOUR_MS,
                                  Resolution.MINUTE, ("increase",))
    assert ts.tolist() == r.timestamps[:3].tolist() and set(got) == {"increase"}
    assert got["increase"].view(np.int64).tolist() == r.increase[:3].view(np.int64).tolist()
    with pytest.raises(chunks.ChunkError, match="column sum"):
        chunks.read_columns([(start, {"ts": cols["ts"], "increase": cols["increase"]})], start, start + HOUR_MS,
                            Resolution.MINUTE, ("sum",))
    with pytest.raises(chunks.ChunkError, match="column last"):
        chunks.decode_payload(start, {**cols, "last": cols["last"][:-8]})
    with pytest.raises(ValueError, match="outside the chunk"):
        chunks.encode_columns(Resolution.MINUTE, start + MINUTE_MS, r)


def test_record_and_column_chunks_read_together_and_provisional_overlap_in_column_form() -> None:
    a = T0
    old = rollup([a + i * MINUTE_MS for i in range(360)], seed=16)  # record form (written before)
    new = rollup([a + 6 * HOUR_MS + i * MINUTE_MS for i in range(10)], seed=17)  # column form
    prov = rollup([a + 6 * HOUR_MS + i * MINUTE_MS for i in range(5, 20)], seed=18)  # overlaps `new`
    p = a + 6 * HOUR_MS + 5 * MINUTE_MS
    stored = [
        (a, chunks.encode(Resolution.MINUTE, a, old)),
        (a + 6 * HOUR_MS, chunks.encode_columns(Resolution.MINUTE, a + 6 * HOUR_MS, new)),
        (p, chunks.encode_columns(Resolution.MINUTE, p, prov)),
    ]
    for names in (("increase",), ("sum", "count"), AGGREGATES):
        ts, got = chunks.read_columns(stored, a + MINUTE_MS, a + DAY_MS, Resolution.MINUTE, names)
        assert ts.tolist() == [a + i * MINUTE_MS for i in range(1, 380)]
        for n in names:
            want = [*getattr(old, n)[1:], *getattr(new, n), *getattr(prov, n)[5:]]  # final buckets win
            assert np.array_equal(got[n], np.array(want), equal_nan=True), n
    whole = chunks.read_series(stored, a, a + DAY_MS, Resolution.MINUTE)
    assert whole.timestamps.size == 380 and whole.last[360 + 7] == new.last[7]


def test_read_many_gives_what_read_columns_gives_series_by_series() -> None:
    """``read_many`` (one join per column for all series) against ``read_columns`` per series:
    plain column-form series, one in record form, one lacking the rate aggregates (NaN), one
    whose provisional chunk overlaps, one with a mis-sized column (ChunkError either way)."""
    a = T0
    six = 6 * HOUR_MS

    def col(start: int, ts: list[int], seed: int) -> dict[str, bytes]:
        return chunks.encode_columns(Resolution.MINUTE, start, rollup(ts, seed))

    full = [a + i * MINUTE_MS for i in range(360)]
    nxt = [a + six + i * MINUTE_MS for i in range(0, 360, 7)]
    p = a + six + 10 * MINUTE_MS
    stored: dict[int, list[tuple[int, chunks.Payload]]] = {
        1: [(a, col(a, full, 1)), (a + six, col(a + six, nxt, 2))],
        2: [(a, chunks.encode(Resolution.MINUTE, a, rollup(full, 3)))],
        3: [(a, {k: v for k, v in col(a, full[:50], 4).items() if k not in ("first", "correction")})],
        4: [(a + six, col(a + six, nxt, 5)), (p, col(p, [p + i * MINUTE_MS for i in range(30)], 6))],
        5: [(a, col(a, full[:20], 7))],
        6: [(a + six, col(a + six, [], 8)), (p, col(p, [p], 9))],
    }
    # the same chunks with their values in compact form where one fits (a chunk lacking columns: as it is)
    whole = [(sid, start, c) for sid, cs in stored.items() for start, c in cs
             if isinstance(c, dict) and all(n in c for n in chunks.COLUMNS)]
    compact = dict(zip([(sid, start) for sid, start, _ in whole], chunks.compact_dicts([c for *_, c in whole]),
                       strict=True))
    assert any(chunks.is_compact(v) for c in compact.values() for v in c.values())
    for names, form in [(n, f) for n in (("count", "first", "correction"), AGGREGATES) for f in ("plain", "compact")]:
        rows = [
            (sid, start, c if isinstance(c, bytes) else b"",
             *((compact.get((sid, start), c) if form == "compact" else c).get(n) if isinstance(c, dict) else None
               for n in ("ts", *names)))
            for sid, cs in stored.items() for start, c in cs
        ]
        # (each row's bucket count where its values are plain and of one length: a chunk cache's)
        buckets = np.array([len(r[3]) // 8 if not r[2] and r[3] is not None and len(r[3]) % 8 == 0
                            and all(v is not None and len(v) == len(r[3]) for v in r[4:]) else -1 for r in rows])
        for lo, hi in ((a, a + DAY_MS), (a + 5 * MINUTE_MS, a + six + 20 * MINUTE_MS), (a + DAY_MS, a + 2 * DAY_MS)):
            got = chunks.read_many(rows, lo, hi, Resolution.MINUTE, names)
            assert set(got) == set(stored)
            whole = {r[0] for r in rows} - {r[0] for r, n in zip(rows, buckets.tolist(), strict=True) if n < 0}
            plain = [k for k, r in enumerate(rows) if r[0] in whole]  # (the series all of whose rows are plain)
            assert form == "compact" or len(whole) >= 4
            known = chunks.read_many([rows[k] for k in plain], lo, hi, Resolution.MINUTE, names, buckets[plain])
            for sid in {rows[k][0] for k in plain}:
                assert known[sid][0].tolist() == got[sid][0].tolist()
                assert all(known[sid][1][n].tobytes() == got[sid][1][n].tobytes() for n in names), sid
            for sid, cs in stored.items():
                ts, cols = chunks.read_columns(cs, lo, hi, Resolution.MINUTE, names)
                assert got[sid][0].tolist() == ts.tolist(), sid
                for n in names:
                    assert got[sid][1][n].tobytes() == cols[n].tobytes(), (sid, n)
            # join_columns: series in any order, each then a piece made elsewhere, one array
            extra = np.array([1.5, -2.0])
            fresh = chunks.read_many(rows, lo, hi, Resolution.MINUTE, names)  # (no column read yet)
            for n in names:
                want = np.concatenate([x for sid in sorted(stored, reverse=True) for x in (got[sid][1][n], extra)])
                parts = [(fresh[sid][1], extra.data.cast("B")) for sid in sorted(stored, reverse=True)]
                assert chunks.join_columns(n, parts).tobytes() == want.tobytes(), n
            # join_plan / join_planned: the same join, planned once for all columns (the series
            # read_many joined, cut to [lo, hi] where a chunk crosses it; made rows, a series
            # with none of its own), and no plan when a part is not of that read
            fast = [sid for sid in sorted(stored, reverse=True) if type(fresh[sid][1]) is chunks.ChunkColumns]
            assert len(fast) >= 3
            made = np.array([0.5, np.nan, -0.0, 7.25, 1e300, 3.0, 2.5, -1.0])
            planned = [(fresh[sid][1], k, k + k % 3) for k, sid in enumerate(fast)] + [(None, 6, 8)]
            plan = chunks.join_plan(planned)
            assert plan is not None
            assert chunks.join_plan([*planned, ({n: np.zeros(1) for n in names}, 0, 0)]) is None
            for n in names:
                want = np.concatenate([x for p, i, j in planned for x in ((p[n] if p is not None else made[:0]), made[i:j])])
                assert chunks.join_planned(plan, n, made).tobytes() == want.tobytes(), n
    short = [(7, a, b"", *(v[:-8] if k == "last" else v for k, v in col(a, full, 10).items()))]
    with pytest.raises(chunks.ChunkError, match="column last"):
        chunks.read_many(short, a, a + DAY_MS, Resolution.MINUTE, AGGREGATES)


def _column_of_kind(rng: np.random.Generator, kind: int, ts: np.ndarray, nan_payload: float) -> np.ndarray:
    n, tsf = ts.size, ts.astype(np.float64)
    if kind == 0:
        return np.full(n, rng.choice([0.0, -0.0, 6.0, np.inf, nan_payload, 2.0**60]))
    if kind in (1, 2):
        return rng.integers(0, 2**33 if kind == 1 else 200, n).astype(np.float64)
    if kind == 3:
        return tsf + rng.integers(0, MINUTE_MS, n)
    if kind == 4:
        return tsf - rng.integers(0, 70_000, n)
    if kind == 5:
        return tsf + 1234.0
    if kind == 6:
        return rng.random(n) * 1e9
    if kind == 7:
        return 2.0**53 + rng.integers(0, 4, n) * 2.0
    if kind == 8:
        return np.where(rng.random(n) < 0.3, nan_payload, rng.integers(0, 9, n).astype(np.float64))
    return np.round(rng.random(n) * 10 ** rng.integers(1, 8), int(rng.integers(1, 5)))


def test_compact_values_give_back_every_bit() -> None:
    """``compact_columns`` on pieces of every kind a column meets (constant, regular bucket
    starts, small or large integers, decimals of 1-4 digits, sample times after the bucket
    start or before it, NaN payloads, -0.0, infinities, integers beyond 2^53, int64
    wrap-around, 1-2 buckets):
    ``expand_columns`` (all rows at once), ``payloads`` and ``payload`` give the plain bytes
    back, and a value that does not decode is a ChunkError."""
    rng = np.random.default_rng(5)
    nan_payload = np.array([0x7FF8_0000_0000_0ABC], dtype=np.int64).view(np.float64)[0]
    pieces = []
    for i in range(400):
        n = int(rng.choice([1, 2, 3, 120, 360, int(rng.integers(1, 400))]))
        ts = T0 + np.arange(n, dtype=np.int64) * MINUTE_MS
        if i % 5 == 1:
            ts = np.sort(rng.choice(10**6, n, replace=False)).astype(np.int64) * MINUTE_MS + T0
        elif i % 5 == 2:
            ts = np.int64(2**63 - 1) - np.arange(n, dtype=np.int64)[::-1] * MINUTE_MS  # (steps near the wrap)
        piece = {"ts": ts.astype("<i8").tobytes()}
        for k, name in enumerate(AGGREGATES):
            kind = (i + k) % 10
            v = _column_of_kind(rng, kind, ts, nan_payload)
            if n > 1 and kind in (1, 2, 3) and i % 7 == 0:
                v[int(rng.integers(0, n))] = -0.0
            piece[name] = np.asarray(v, dtype="<f8").tobytes()
        pieces.append(piece)
    pieces.append({name: b"" for name in chunks.COLUMNS})  # (an empty chunk)
    packed = chunks.compact_dicts(pieces)
    forms = {v[0] for c in packed for v in c.values() if chunks.is_compact(v)}
    assert forms == {chunks.REPEAT, chunks.LINEAR, chunks.BASE_UINT, chunks.TS_UINT, chunks.TS_CONST, chunks.DECIMAL}
    assert sum(len(v) for c in packed for v in c.values()) < 0.8 * sum(len(v) for c in pieces for v in c.values())
    columns = chunks.expand_columns(chunks.COLUMNS, [[c[n] for c in packed] for n in chunks.COLUMNS])
    for k, name in enumerate(chunks.COLUMNS):
        assert [bytes(v) for v in columns[k]] == [c[name] for c in pieces], name
    rows = [(i, T0, b"", *(c[n] for n in chunks.COLUMNS)) for i, c in enumerate(packed)]
    assert chunks.payloads(rows, 2) == pieces
    assert [chunks.payload(b"", chunks.COLUMNS, r[3:]) for r in rows[:20]] == pieces[:20]
    bad = dict(packed[3])
    bad["count"] = b"\x09" + bytes(8)
    with pytest.raises(chunks.ChunkError, match="column count"):
        chunks.payload(b"", chunks.COLUMNS, [bad[n] for n in chunks.COLUMNS])


async def test_sqlite_store_reads_and_rewrites_record_form_chunks_of_an_older_database(tmp_path) -> None:
    """A database whose chunk tables predate column form: the columns are added on open,
    its record-form chunks are read, and a write merges into one in column form."""
    path = tmp_path / "v3.db"
    s = Series.of(make_labels("m", instance="a"))
    r = rollup([T0 + i * MINUTE_MS for i in range(300)], seed=19)
    con = sqlite3.connect(path)
    con.executescript(
        "CREATE TABLE rollup_1m_chunks (series_id INTEGER NOT NULL, start_ts INTEGER NOT NULL,"
        " data BLOB NOT NULL, PRIMARY KEY (series_id, start_ts));"
        "CREATE TABLE rollup_1h_chunks (series_id INTEGER NOT NULL, start_ts INTEGER NOT NULL,"
        " data BLOB NOT NULL, PRIMARY KEY (series_id, start_ts));"
    )
    con.execute("INSERT INTO rollup_1m_chunks VALUES (?,?,?)", (s.id, T0, chunks.encode(Resolution.MINUTE, T0, r)))
    con.commit()
    con.close()
    st = await SQLiteRollupStorage.open(path)
    try:
        await st.write(SampleBatch("t", [s], [T0], [1.0]))
        assert (await st.read_rollup(Resolution.MINUTE, s.id, T0, T0 + DAY_MS)).bit_equal(r)
        more = rollup([T0 + i * MINUTE_MS for i in range(300, 320)], seed=20)
        await st.write_rollups(Resolution.MINUTE, [RollupRows(s.id, more)])
        sel = await st.select([Matcher("__name__", MatchOp.EQ, "m")], T0, T0 + DAY_MS, Resolution.MINUTE,
                              columns=["increase"])
        assert set(sel[0].agg) == {"increase"} and np.isnan(sel[0].values).all()
        assert sel[0].agg["increase"].tolist() == [*r.increase, *more.increase]
        data, inc = await st.run_read(
            lambda c: c.execute("SELECT data, c_increase FROM rollup_1m_chunks WHERE start_ts = ?", (T0,)).fetchone()
        )
        assert data == b"" and len(inc) == 320 * 8
    finally:
        await st.close()


async def test_sqlite_store_keeps_read_chunks_and_sees_every_rewrite(tmp_path) -> None:
    """Selects go through the store's chunk cache (``storage.chunk_cache``): a second read
    takes the kept chunks and answers the same bits; a rewritten chunk (through this store or
    another connection to the file) is read again, as is one kept with other columns."""
    st = await SQLiteRollupStorage.open(tmp_path / "db")
    other = None
    try:
        ss = [Series.of(make_labels("m", instance=i)) for i in ("a", "b")]
        await st.write(SampleBatch("t", ss, [T0, T0], [1.0, 2.0]))
        old = [rollup([T0 + i * MINUTE_MS for i in range(500)], seed=30 + k) for k in range(2)]
        await st.write_rollups(Resolution.MINUTE, [RollupRows(s.id, r) for s, r in zip(ss, old, strict=True)])
        name = [Matcher("__name__", MatchOp.EQ, "m")]

        async def sel() -> dict[str, Rollup]:
            got = await st.select(name, T0 + MINUTE_MS, T0 + DAY_MS, Resolution.MINUTE)
            return {d.series.get("instance") or "": Rollup.from_columns(d.timestamps, d.agg) for d in got}

        first = await sel()
        cache = st._chunk_caches[Resolution.MINUTE]
        assert cache.hits == 0 and len(cache) == 4  # (2 series x 2 chunks)
        again = await sel()
        assert cache.hits == 4 and all(again[k].bit_equal(first[k]) for k in first)
        assert first["a"].bit_equal(Rollup.from_columns(old[0].timestamps[1:], {n: getattr(old[0], n)[1:] for n in AGGREGATES}))
        # A late bucket rewrites a's first chunk: read again, b's chunks still kept.
        late = rollup([T0 + 7 * MINUTE_MS], seed=40)
        await st.write_rollups(Resolution.MINUTE, [RollupRows(ss[0].id, late)])
        now = await sel()
        assert cache.hits == 7 and now["a"].last[6] == late.last[0] and now["b"].bit_equal(first["b"])
        # A write through another connection to the same file.
        other = await SQLiteRollupStorage.open(tmp_path / "db")
        later = rollup([T0 + 500 * MINUTE_MS], seed=41)
        await other.write_rollups(Resolution.MINUTE, [RollupRows(ss[1].id, later)])
        now = await sel()
        assert now["b"].last[-1] == later.last[0] and now["a"].bit_equal((await sel())["a"])
        # Other columns: read and kept as asked.
        inc = await st.select(name, T0 + MINUTE_MS, T0 + DAY_MS, Resolution.MINUTE, columns=["increase"])
        assert set(inc[1].agg) == {"increase"} and np.array_equal(inc[1].agg["increase"], now["b"].increase)
        # A cache too small for a chunk keeps none and answers the same.
        st.rollup_cache_bytes = 100
        small = await sel()
        assert all(small[k].bit_equal(now[k]) for k in now) and st._chunk_caches[Resolution.MINUTE].nbytes == 0
    finally:
        await st.close()
        if other is not None:
            await other.close()


def test_chunk_cache_drops_the_least_recently_used_beyond_its_bytes() -> None:
    from storage.chunk_cache import ChunkCache

    cache = ChunkCache(max_bytes=250)
    names = ("ts",)
    for k in range(3):
        cache.store(version=k, names=names, row=(1, k, b"", b"x" * 100))
    assert len(cache) == 2 and cache.nbytes == 200
    rows, missing = cache.lookup([(1, 0, 0), (1, 1, 1), (1, 2, 2), (1, 2, 9)], names)
    assert missing == [0, 3] and rows[1] == (1, 1, b"", b"x" * 100)
    cache.store(version=5, names=names, row=(1, 5, b"", b"y" * 100))  # drops (1, 1): (1, 2) was used last
    assert cache.lookup([(1, 1, 1), (1, 2, 2)], names)[1] == [0]
    assert cache.lookup([(1, 2, 2)], ("ts", "count"))[1] == [0]  # other columns: not kept
    # Each kept row's bucket count, when its values are all plain and of one length (read_many's check)
    two = ("ts", "count")
    cache.store(version=1, names=two, row=(2, 0, b"", b"t" * 16, b"c" * 16))
    cache.store(version=1, names=two, row=(2, 1, b"", b"t" * 16, b"c" * 8))  # (of two lengths)
    cache.store(version=1, names=two, row=(2, 2, b"", b"t" * 13, b"c" * 13))  # (a compact value)
    buckets: list[int] = []
    assert cache.lookup([(2, 0, 1), (2, 1, 1), (2, 2, 1), (2, 3, 1)], two, buckets)[1] == [3]
    assert buckets == [2, -1, -1]


async def test_sqlite_chunk_cache_is_not_fooled_by_a_reused_rowid(tmp_path) -> None:
    """SQLite gives a row inserted after the DELETE of the max-rowid row that same rowid: a
    chunk deleted by retention and written again has its old rowid back, so deletes bump the
    chunk generation and a read at another generation drops the kept chunks (in this store
    and when another connection deleted)."""
    st = await SQLiteRollupStorage.open(tmp_path / "db")
    other = await SQLiteRollupStorage.open(tmp_path / "db")
    try:
        s = Series.of(make_labels("m", instance="a"))
        await st.write(SampleBatch("t", [s], [T0], [1.0]))
        name = [Matcher("__name__", MatchOp.EQ, "m")]
        rowid = "SELECT rowid FROM rollup_1m_chunks WHERE start_ts = ?"
        filler = Series.of(make_labels("f"))
        for k, writer in enumerate((st, other)):
            # (a chunk retention keeps, then ours: the max rowid, deleted and written again)
            later = rollup([T0 + (10 + k) * DAY_MS], seed=70 + k)
            await writer.write_rollups(Resolution.MINUTE, [RollupRows(filler.id, later)])
            old = rollup([T0 + i * MINUTE_MS for i in range(10)], seed=50 + k)
            await writer.write_rollups(Resolution.MINUTE, [RollupRows(s.id, old)])
            before = (await st.run_read(lambda c: c.execute(rowid, (T0,)).fetchone()))[0]
            got = await st.select(name, T0, T0 + DAY_MS, Resolution.MINUTE)
            assert got[0].values.tolist() == old.last.tolist()
            await writer.delete_rollups_before(Resolution.MINUTE, T0 + DAY_MS)
            new = rollup([T0 + i * MINUTE_MS for i in range(10)], seed=60 + k)
            await writer.write_rollups(Resolution.MINUTE, [RollupRows(s.id, new)])
            assert (await st.run_read(lambda c: c.execute(rowid, (T0,)).fetchone()))[0] == before  # (reused)
            got = await st.select(name, T0, T0 + DAY_MS, Resolution.MINUTE)
            assert got[0].values.tolist() == new.last.tolist()
    finally:
        await st.close()
        await other.close()
