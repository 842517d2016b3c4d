"""Scrape frames on Cassandra (issue #20): a scrape is one ``raw_frames`` row, read back bit
for bit (XOR chains, a changed layout, stale markers), with ``raw_recent`` rows winning an
equal (series, ts); the codec's chains without Cassandra."""

from __future__ import annotations

import asyncio
import time
import zlib

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from storage.base import HOUR_MS
from storage.cassandra import (
    FRAME_GROUP_SERIES,
    FRAME_GROUP_TARGETS,
    _frame_groups,
    series_major,
    series_spans,
)
from storage.cassandra_frames import (
    KEY_SPAN_MS,
    CachedFrames,
    EncodedFrame,
    FrameBlock,
    FrameChains,
    FrameRows,
    blocks_in_order,
    extend_many,
    frame_samples,
    frame_samples_many,
    has_repeats,
    split_frames,
)
from storage.frames import ZSTD_MAGIC, decode_delta, decode_deltas, encode_delta, layout_id
from storage.matchers import Matcher, MatchOp
from storage.model import STALE_NAN, SampleBatch, Series, make_labels


def _lexsorted(parts: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]) -> list[list]:
    """The reference merge: every sample sorted by (series, ts, prio, part), the first of each (series, ts)."""
    rows = sorted((int(s), int(t), int(p), k, i, int(v)) for k, (sid, ts, val, prio) in enumerate(parts)
                  for i, (s, t, v, p) in enumerate(zip(sid, ts, val.view(np.int64), prio, strict=True)))
    out: list[list] = [[], [], []]
    for s, t, _, _, _, v in rows:
        if out[0] and out[0][-1] == s and out[1][-1] == t:
            continue
        out[0].append(s)
        out[1].append(t)
        out[2].append(v)
    return out


@given(st.lists(st.tuples(st.lists(st.integers(-3, 3), min_size=1, max_size=4, unique=True),  # series of a part
                          st.integers(1, 4), st.booleans(), st.integers(0, 1)), min_size=1, max_size=12),
       st.booleans())
def test_series_major_merges_read_parts_as_a_full_sort_does(specs, shuffle) -> None:
    """A read's parts (a target's frames, rows) put in series then time order: usually by
    moving whole runs, else sorted sample by sample, a row winning an equal (series, ts)."""
    rng = np.random.default_rng(len(specs))
    parts = []
    for k, (ids, n, offset, prio) in enumerate(specs):
        times = (np.arange(n) * 10 + (5 if offset else 0) + k * 1000 * (not shuffle)).astype(np.int64)
        sid = np.repeat(np.array(sorted(ids), dtype=np.int64), n)
        ts = np.tile(times, len(ids))
        if shuffle and k == 0:
            perm = rng.permutation(sid.size)
            sid, ts = sid[perm], ts[perm]
        val = rng.random(sid.size)
        parts.append((sid, ts, val, np.full(sid.size, prio, dtype=np.int8)))
    got = series_major(*(list(col) for col in zip(*parts, strict=True)))
    assert [got[0].tolist(), got[1].tolist(), got[2].view(np.int64).tolist()] == _lexsorted(parts)
    # (more than 8 parts: joined at once) the runs where they lie, as a query's read takes them
    ids, lo, hi, ts, val = series_spans(*(list(col) for col in zip(*parts, strict=True)))
    rows = np.concatenate([np.arange(a, b) for a, b in zip(lo.tolist(), hi.tolist(), strict=True)])
    assert [np.repeat(ids, hi - lo).tolist(), ts[rows].tolist(), val[rows].view(np.int64).tolist()] == _lexsorted(parts)


@given(st.lists(st.tuples(st.lists(st.integers(0, 40), max_size=5, unique=True), st.integers(0, 4), st.integers(0, 3)),
                min_size=1, max_size=6), st.lists(st.integers(0, 45), max_size=30, unique=True))
def test_blocks_in_order_place_kept_frames_as_their_parts_would_be(specs, order) -> None:
    """A read of kept frames only (``FrameBlock`` per target: some columns of the kept rows)
    placed straight in the label order the read answers in: each series of ``order`` held by a
    block, with samples, its samples in time order, as the blocks' parts give them; None when
    a series is in two blocks. Blocks of the same shape again (another read's values) take
    the placement kept in ``memo``."""
    rng = np.random.default_rng(len(specs))
    order_ids = np.array(order, dtype=np.int64)
    every = [i for ids, _, _ in specs for i in ids]
    memo: dict = {}
    for again in range(2):
        blocks = []
        for k, (ids, n, extra) in enumerate(specs):
            width = len(ids) + extra
            at = np.random.default_rng(k).permutation(width)[: len(ids)].astype(np.int64)
            times = np.arange(n, dtype=np.int64) * 10 + k + again
            bits = rng.integers(0, 2**63, size=(n, width), dtype=np.int64).view(np.uint64)
            blocks.append(FrameBlock(np.array(ids, dtype=np.int64), at, times, bits))
        got = blocks_in_order(blocks, order_ids, memo)
        assert len(memo) == 1
        if len(set(every)) < len(every):
            assert got is None
            continue
        assert got is not None
        runs = {}
        for b in blocks:
            sid, ts, val = b.samples()
            for i in np.unique(sid).tolist():
                mine = sid == i
                runs[i] = (ts[mine].tolist(), val[mine].view(np.int64).tolist())
        want = [(p, *runs[i]) for p, i in enumerate(order) if i in runs and runs[i][0]]
        found, offsets, ts, val = got
        assert [(p, ts[a:b].tolist(), val[a:b].view(np.int64).tolist())
                for p, a, b in zip(found.tolist(), offsets[:-1].tolist(), offsets[1:].tolist(), strict=True)] == want


def test_series_major_moves_whole_runs_of_disjoint_series() -> None:
    a = (np.array([5, 5, 9, 9]), np.array([1, 2, 1, 2]), np.array([1.0, 2.0, 3.0, 4.0]), np.ones(4, np.int8))
    b = (np.array([7, 7]), np.array([1, 3]), np.array([5.0, 6.0]), np.zeros(2, np.int8))
    sid, ts, val = series_major(*(list(col) for col in zip(a, b, strict=True)))
    assert sid.tolist() == [5, 5, 7, 7, 9, 9] and ts.tolist() == [1, 2, 1, 3, 1, 2]
    assert val.tolist() == [1.0, 2.0, 5.0, 6.0, 3.0, 4.0]

def test_frame_samples_follow_base_chains_and_skip_a_frame_whose_base_is_gone() -> None:
    ids = np.array([7, 3, 9], dtype=np.int64)
    values = np.array([[1.0, 2.0, 3.0], [1.5, STALE_NAN, 3.0], [2.0, 2.5, np.nan]])
    lid = layout_id(ids)
    rows = [(1000, None, lid, encode_delta(values[0], None)),
            (2000, 1000, lid, encode_delta(values[1], values[0])),
            (3000, 2000, lid, encode_delta(values[2], values[1]))]
    sid, ts, val = frame_samples(rows, {lid: ids}, np.array([3, 9]), 1500, 3000)
    assert sid.tolist() == [3, 3, 9, 9] and ts.tolist() == [2000, 3000, 2000, 3000]
    assert val.view(np.int64).tolist() == np.array([STALE_NAN, 2.5, 3.0, np.nan]).view(np.int64).tolist()
    assert frame_samples(rows[1:], {lid: ids}, np.array([3]), 0, 9999)[1].size == 0  # base 1000 not read


def _zlib_delta(values: np.ndarray, base: np.ndarray | None) -> bytes:
    """A payload as written before Zstandard: the same byte planes, zlib level 1."""
    bits = values.view(np.uint64) if base is None else values.view(np.uint64) ^ base.view(np.uint64)
    return zlib.compress(bits.view(np.uint8).reshape(-1, 8).T.tobytes(), 1)


def test_frames_written_with_zlib_still_read_in_a_chain_with_zstandard_ones() -> None:
    """Keyspaces and spools hold zlib payloads from before: a chain may mix both codecs (a
    zlib whole frame, a Zstandard delta on it), each read by its first bytes."""
    ids = np.array([7, 3, 9, 4, 1, 8, 2, 6, 5], dtype=np.int64)
    rng = np.random.default_rng(5)
    values = np.cumsum(rng.random((4, ids.size)), axis=0)
    lid = layout_id(ids)
    new = encode_delta(values[1], values[0])
    assert new[:4] == ZSTD_MAGIC and _zlib_delta(values[0], None)[:1] == b"\x78"
    rows = [(1000, None, lid, _zlib_delta(values[0], None)), (2000, 1000, lid, new),
            (3000, 2000, lid, _zlib_delta(values[2], values[1])), (4000, 3000, lid, encode_delta(values[3], values[2]))]
    sid, ts, val = frame_samples(rows, {lid: ids}, ids, 0, 9999)
    want = {(int(s), t): v for t, row in zip((1000, 2000, 3000, 4000), values, strict=True) for s, v in zip(ids, row, strict=True)}
    assert sorted(zip(sid.tolist(), ts.tolist(), val.tolist(), strict=True)) == sorted((s, t, v) for (s, t), v in want.items())
    assert decode_deltas([rows[0][3], encode_delta(values[0], None)], ids.size).tolist() == [values[0].view(np.uint64).tolist()] * 2
    with pytest.raises(ValueError, match="does not decompress"):
        decode_delta(new[:-3], ids.size)


def test_frame_samples_many_decodes_targets_together_as_each_alone() -> None:
    rng = np.random.default_rng(3)
    vals = rng.random((6, 3))

    def chain(ids: np.ndarray, bases: list[int | None]) -> list[tuple[int, int | None, int, bytes]]:
        w, lid = ids.size, layout_id(ids)
        by_ts = {1000 * (i + 1): vals[i, :w] for i in range(len(bases))}
        return [(t, b, lid, encode_delta(by_ts[t], None if b is None else by_ts[b])) for t, b in zip(by_ts, bases, strict=True)]

    def target(k: int, parts: list[tuple[list[int], list[int | None], int]], wanted: list[int]) -> tuple:
        """Target k's frames: for each (layout ids, bases, which frames), ids offset by 100 k."""
        rows, layouts = [], {}
        for ids, bases, pick in parts:
            lay = np.array(ids, dtype=np.int64) + 100 * k
            layouts[layout_id(lay)] = lay
            rows += chain(lay, bases)[pick : pick + 1] if pick >= 0 else chain(lay, bases)
        return rows, layouts, np.array(wanted, dtype=np.int64) + 100 * k

    narrow, wide = [4, 1], [8, 2, 6]
    targets = [
        target(0, [(wide, [None, 1000, 2000, None, 4000], -1)], [2, 6, 8]),  # two chains
        target(1, [(narrow, [None, 1000, 1000, 3000], -1)], [1, 4]),  # a base further back
        target(2, [(narrow, [2000, 2000, 3000], -1)], [1]),  # base never read
        target(3, [(narrow, [None], 0), (wide, [None, None], 1), (narrow, [None, 1000, 1000], 2)], [1, 2, 4, 6, 8]),
        target(4, [(wide, [None, 1000, 2000, 3000], -1)], [2, 6, 8]),  # scraped alike: one part
        target(5, [(wide, [None, 1000, 2000, 3000], -1)], [2, 6, 8]),
    ]
    alone = [frame_samples(rows, layouts, wanted, 1500, 4500) for rows, layouts, wanted in targets]
    sid, ts, val = alone[0]
    assert sid.tolist() == [8, 8, 8, 2, 2, 2, 6, 6, 6] and ts.tolist() == [2000, 3000, 4000] * 3
    assert val.tolist() == vals[1:4, :3].T.reshape(-1).tolist()
    assert alone[1][0].tolist() == [104] * 3 + [101] * 3
    assert alone[1][2].tolist() == vals[1:4, 0].tolist() + vals[1:4, 1].tolist()
    assert alone[2][0].size == 0 and frame_samples([], {}, np.array([1]), 0, 9999)[0].size == 0
    assert alone[3][0].tolist() == [304, 301, 308, 302, 306] and alone[3][1].tolist() == [3000, 3000, 2000, 2000, 2000]
    tagged = [(k, *r) for k, (rows, _, _) in enumerate(targets) for r in rows]
    tagged = [tagged[i] for i in rng.permutation(len(tagged))]  # (rows come in any order)
    frames = FrameRows.of([r[0] for r in tagged], [r[1:] for r in tagged])
    parts = frame_samples_many([(layouts, wanted) for _, layouts, wanted in targets], frames, 1500, 4500)

    def samples(parts: list) -> dict[int, list[tuple[int, int]]]:
        out: dict[int, list[tuple[int, int]]] = {}
        for sids, times, values in parts:
            for s_, t, v in zip(sids.tolist(), times.tolist(), values.view(np.int64).tolist(), strict=True):
                out.setdefault(s_, []).append((t, v))
        return out

    assert samples(parts) == samples(alone)
    alike = [r for r in tagged if r[0] in (0, 4, 5)]  # (the same width, frames in the range, all series wanted)
    parts = frame_samples_many([targets[k][1:] for k in range(6)], FrameRows.of([r[0] for r in alike], [r[1:] for r in alike]), 1500, 4500)
    assert len(parts) == 1 and samples(parts) == samples([alone[0], alone[4], alone[5]])
    ragged = frame_samples_many([targets[k][1:] for k in range(6)], FrameRows.of([r[0] for r in alike], [r[1:] for r in alike]), 1500, 5000)
    assert len(ragged) == 1 and samples(ragged) == samples([frame_samples(*targets[k], 1500, 5000) for k in (0, 4, 5)])


def test_kept_frames_of_many_targets_extend_at_once_as_each_alone() -> None:
    """``extend_many`` (a refresh's kept targets: their new frames decoded together) keeps
    each target's frames as its values are, new frames chained on held ones, out of order,
    inserted among the held ones or of a narrower column set; None for a new frame of
    another layout or one whose base is not held; as ``extended`` gives each alone."""
    rng = np.random.default_rng(11)

    def entry(k: int, width: int, cols: list[int], kept: int, held_tail: int = 2) -> tuple:
        """Target k: 10 frames at 1000 ms steps, the first ``kept`` held (complete up to the
        one ``held_tail`` before the last of them), each XOR'd with the one before."""
        ids = np.arange(width, dtype=np.int64) + 100 * k
        vals = rng.random((10, width))
        vals[3, 0] = STALE_NAN
        ts = np.arange(1, 11, dtype=np.int64) * 1000
        c = np.array(cols, dtype=np.int64)
        e = CachedFrames(layout_id(ids), width, c, ts[:kept], np.ascontiguousarray(vals[:kept][:, c]).view(np.uint64),
                         np.arange(kept, dtype=np.int64), 0, int(ts[kept - 1 - held_tail]), 0)
        frames = [(int(ts[i]), None if i == 0 else int(ts[i - 1]), layout_id(ids),
                   encode_delta(vals[i], None if i == 0 else vals[i - 1])) for i in range(10)]
        return e, vals, frames

    def rows(frames: list, versions: list[int]) -> FrameRows:
        got = FrameRows.of([0] * len(frames), frames)
        got.version = np.array(versions, dtype=np.int64)
        return got

    a, a_vals, a_frames = entry(0, 8, list(range(8)), 6)
    b, b_vals, b_frames = entry(1, 8, list(range(8)), 5)
    c, c_vals, _ = entry(2, 8, list(range(8)), 6)
    d, _, _ = entry(3, 8, list(range(8)), 6)
    f, f_vals, f_frames = entry(5, 16, [1, 4, 7], 4)
    g, g_vals, g_frames = entry(6, 8, list(range(8)), 8)
    h, h_vals, h_frames = entry(7, 8, list(range(8)), 6)
    restart = (7000, None, h.layout, encode_delta(h_vals[6], None))  # (a chain's whole first frame: a new key span)
    other = (7000, None, layout_id(np.arange(3, dtype=np.int64)), encode_delta(np.zeros(3), None))
    inserted = (7500, None, g.layout, encode_delta(g_vals[6] + 1, None))  # (a late frame among the held ones)
    items = [
        (a, rows(a_frames[6:9], [60, 70, 80]), a.ts[-2:]),  # chained on the newest held frame
        (b, rows(b_frames[5:8][::-1], [7, 6, 5]), b.ts[-2:]),  # read out of order
        (c, rows([], []), c.ts[-2:-1]),  # nothing new; the newest kept frame was stored again
        (d, rows([other], [1]), d.ts[-2:]),  # another layout
        (c, rows(a_frames[8:9], [1]), c.ts[-2:]),  # its base (8000) is not held
        (f, rows(f_frames[4:7], [4, 5, 6]), f.ts[-2:]),  # a narrower column set, of another width
        (g, rows([inserted, g_frames[8]], [75, 8]), g.ts[-2:]),  # among the held ones; the base 8000 held
        (h, rows([restart, h_frames[7]], [6, 7]), h.ts[-2:]),  # whole, then XOR'd with it
    ]
    got = extend_many(items, 20_000, 99)
    assert got[3] is None and got[4] is None
    want = {0: (a_vals[:9], [0, 1, 2, 3, 4, 5, 60, 70, 80]), 1: (b_vals[:8], [0, 1, 2, 3, 4, 5, 6, 7]),
            2: (c_vals[:5], [0, 1, 2, 3, 4]), 5: (f_vals[:7][:, [1, 4, 7]], [0, 1, 2, 3, 4, 5, 6]),
            7: (h_vals[:8], [0, 1, 2, 3, 4, 5, 6, 7])}
    for k, (vals, versions) in want.items():
        e = got[k]
        assert e is not None and (e.hi, e.read_at, e.lo) == (20_000, 99, 0)
        assert e.ts.tolist() == [1000 * (i + 1) for i in range(len(vals))] and e.versions.tolist() == versions
        assert e.bits.tolist() == np.ascontiguousarray(vals).view(np.uint64).tolist()
    e = got[6]
    assert e is not None and e.ts.tolist() == [1000, 2000, 3000, 4000, 5000, 6000, 7000, 7500, 8000, 9000]
    assert e.bits.tolist() == np.vstack([g_vals[:7], g_vals[6] + 1, g_vals[7:9]]).view(np.uint64).tolist()
    assert e.versions.tolist() == [0, 1, 2, 3, 4, 5, 6, 75, 7, 8]
    alone = [x.extended(r, h, 20_000, 99) for x, r, h in items]
    assert [None if x is None else (x.ts.tolist(), x.bits.tolist(), x.versions.tolist()) for x in alone] == \
        [None if x is None else (x.ts.tolist(), x.bits.tolist(), x.versions.tolist()) for x in got]


def test_chains_restart_whole_at_a_key_span_a_layout_change_and_after_a_failure() -> None:
    chains = FrameChains()
    v = np.zeros(3)
    chains.stored("t", KEY_SPAN_MS + 5000, 1, v)
    assert chains.base("t", KEY_SPAN_MS + 10_000, 1) is not None
    assert chains.base("t", KEY_SPAN_MS + 10_000, 2) is None
    assert chains.base("t", 2 * KEY_SPAN_MS, 1) is None
    chains.forget("t")
    assert chains.base("t", KEY_SPAN_MS + 10_000, 1) is None


def test_split_frames_keeps_small_late_and_duplicated_groups_for_rows() -> None:
    ids = np.arange(30, dtype=np.int64) % 20
    ts = np.array([100] * 10 + [200] * 5 + [50] * 15, dtype=np.int64)
    vals = np.arange(30, dtype=np.float64)
    ids[25] = ids[24]  # the ts=50 group names a series twice
    frames, rest = split_frames(ids, ts, vals, cutoff_ms=60)
    assert [f.ts for f in frames] == [100] and rest.tolist() == [False] * 10 + [True] * 20
    frames, _ = split_frames(ids, ts, vals, cutoff_ms=0)
    assert [f.ts for f in frames] == [100]  # ts=50 names a series twice, ts=200 is small


def test_frame_groups_hold_up_to_a_budget_of_series_and_targets() -> None:
    sizes = {"a": 1500, "b": 600, "c": 3000, "d": 8, **{f"t{i}": 1 for i in range(200)}}
    groups = _frame_groups({t: list(range(n)) for t, n in sizes.items()})
    assert [list(g) for g in groups[:3]] == [["a"], ["b"], ["c"]]  # (a target over the budget alone)
    assert [len(g) for g in groups[3:]] == [FRAME_GROUP_TARGETS, 201 - FRAME_GROUP_TARGETS]
    assert all(sum(map(len, g.values())) <= FRAME_GROUP_SERIES for g in groups if len(g) > 1)


@given(st.lists(st.integers(-(2**63), 2**63 - 1) | st.integers(-3, 3), max_size=40))
def test_has_repeats_is_a_set_check(ids: list[int]) -> None:
    assert has_repeats(np.array(ids, dtype=np.int64)) == (len(set(ids)) != len(ids))


@pytest.mark.cassandra
async def test_scrapes_stored_as_frames_read_back_bit_exact_and_rows_win(cassandra_storage) -> None:
    store = cassandra_storage
    series = [Series.of(make_labels("frame_check", job="f", instance="h:1", n=str(i))) for i in range(12)]
    # (a second target: a read of both takes their frames with one request, _frame_groups)
    other = [Series.of(make_labels("frame_check", job="f", instance="h:2", n=str(i))) for i in range(9)]
    now = int(time.time() * 1000)
    t0 = now - 30_000
    rng = np.random.default_rng(1)
    expected: dict[int, dict[int, float]] = {s.id: {} for s in series + other}
    for k in range(6):
        ts = t0 + k * 5000
        layout = series if k < 4 else series[:10]  # the target lost two series: a new layout
        vals = rng.random(len(layout)).round(3)
        if k == 2:
            vals[0] = STALE_NAN
        await store.write(SampleBatch("f/h:1", layout, [ts] * len(layout), vals.tolist()))
        for s, v in zip(layout, vals.tolist(), strict=True):
            expected[s.id][ts] = v
        vals = rng.random(len(other)).round(3)
        await store.write(SampleBatch("f/h:2", other, [ts + 1] * len(other), vals.tolist()))
        for s, v in zip(other, vals.tolist(), strict=True):
            expected[s.id][ts + 1] = v
    read = store.session.prepare(f"SELECT ts, base_ts FROM {store.keyspace}.raw_frames WHERE target = ? AND hour = ?")
    frames = [r for h in {t0 // 3_600_000, (t0 + 30_000) // 3_600_000} for r in store.session.execute(read, ("f/h:1", h))]
    assert len(frames) == 6 and any(b is not None for _, b in frames)
    rows = list(store.session.execute(
        f"SELECT ts FROM {store.keyspace}.raw_recent WHERE target = 'f/h:1' AND hour = %s", (t0 // 3_600_000,)))
    assert rows == []  # no row per sample
    one = SampleBatch("f/h:1")
    one.add(series[1], t0 + 5000, -1.0)  # a row at a frame's (series, ts): the later write
    await store.write(one)
    expected[series[1].id][t0 + 5000] = -1.0
    got = await store.select([Matcher("__name__", MatchOp.EQ, "frame_check")], t0, now)
    assert {d.series.id for d in got} == {s.id for s in series + other}
    for d in got:
        want = expected[d.series.id]
        assert d.timestamps.tolist() == sorted(want)
        assert d.values.view(np.int64).tolist() == np.array([want[t] for t in sorted(want)]).view(np.int64).tolist()


@pytest.mark.cassandra
async def test_short_reads_keep_frames_read_only_newer_ones_and_a_late_frame_drops_them(cassandra_storage) -> None:
    """A short read keeps the targets' resolved frames (``frame_cache``), narrow targets'
    too, and a read of one target; a later read asks Cassandra only for frames after where
    the kept ones are complete and answers as a read without the cache; a frame stored later than ``settle_after_ms`` after its time (a slow
    scrape, a spool replay) into the kept range marks its target (``raw_late_frames``; one
    older than ``late_after_ms`` its hour too), so the next read reads that target whole
    again and has it."""
    store = cassandra_storage
    targets = {f"k/h:{i}": [Series.of(make_labels("keep_check", job="k", instance=f"h:{i}", n=str(j)))
                            for j in range(64 + i)] for i in range(2)}
    # (a narrow target: a node exporter's 8 CPU modes, bench/query.py's panel)
    targets["k/n:0"] = [Series.of(make_labels("keep_check", job="k", instance="n:0", n=str(j))) for j in range(8)]
    narrow = [Matcher("__name__", MatchOp.EQ, "keep_check"), Matcher("instance", MatchOp.EQ, "n:0")]
    clock = [0]
    t0 = (int(time.time() * 1000) // KEY_SPAN_MS - 2) * KEY_SPAN_MS  # a key span's start, 10-15 min ago
    rng = np.random.default_rng(7)
    store._now_ms = lambda: clock[0]
    matchers = [Matcher("__name__", MatchOp.EQ, "keep_check")]

    async def scrape(k: int) -> None:
        for i, (t, series) in enumerate(targets.items()):
            ts = t0 + k * 5000 + min(i, 1)  # (the narrow target at the second one's times)
            clock[0] = ts + 100  # written on time: no late mark
            await store.write(SampleBatch(t, series, [ts] * len(series), rng.random(len(series)).round(3).tolist()))

    async def both(lo: int, hi: int, matchers: list[Matcher] = matchers) -> list:
        return await _kept_and_plain(store, matchers, lo, hi)

    try:
        for k in range(30):
            await scrape(k)
        cache = store.frame_cache
        assert cache is not None
        cache.clear()
        clock[0] = t0 + 150_000
        one = [*matchers, Matcher("n", MatchOp.EQ, "3")]
        await both(t0 + 60_000, t0 + 145_001, one)  # (one column of each target kept)
        got = await both(t0 + 60_000, t0 + 145_001)
        assert len(cache) == 6 and all(len(d) == 18 for d in got)  # (and every column, beside it)
        for k in range(30, 36):
            await scrape(k)
        clock[0] = t0 + 181_000
        hits = cache.hits
        got = await both(t0 + 90_000, t0 + 176_000)
        assert cache.hits == hits + 3 and all(len(d) == 18 for d in got)  # kept, extended
        got = await both(t0 + 90_000, t0 + 176_000, one)
        assert cache.hits == hits + 6 and len(got) == 3
        got = await both(t0 + 90_000, t0 + 176_000, narrow)  # (one target's read: kept too)
        assert cache.hits == hits + 7 and len(got) == 8
        empty = np.empty(0, dtype=np.int64)

        async def late_frame(target: str, ts: int, written_at: int) -> set[int]:
            # (another process's write, as a scraper's: the reader learns of it by the marks)
            ids = np.array([s.id for s in targets[target]], dtype=np.int64)
            frame = EncodedFrame(ts, None, layout_id(ids), ids.size, encode_delta(np.full(ids.size, 0.25), None))
            writer = await type(store).connect(["127.0.0.1"], store.cluster.port, store.keyspace)
            clock[0] = written_at
            writer._now_ms = lambda: clock[0]
            try:
                await writer.write_frames(target, [frame], empty, empty, np.empty(0))
            finally:
                await writer.close()
            return set(ids.tolist())

        # A frame of target 1 at a time the kept frames hold complete (up to t0 + 161 s: the
        # read's clock less frame_settle_ms), stored 30 s after it: later than settle_after_ms,
        # not than late_after_ms (no hour mark). The next read reads target 1 whole again.
        assert store.frame_settle_ms <= 20_000 and store.settle_after_ms < 30_000 < store.late_after_ms
        late1 = await late_frame("k/h:1", t0 + 150_500, t0 + 180_500)
        assert await store.late_hours(t0, t0 + 200_000) == {}
        marks = await store.late_frames([(t0 + 150_500) // HOUR_MS])  # (of this test's targets: others share the hour)
        assert {k: v for k, v in marks.items() if k[0] in targets} == {("k/h:1", (t0 + 150_500) // HOUR_MS): t0 + 180_500}
        clock[0] = t0 + 186_000
        hits, misses = cache.hits, cache.misses
        got = await both(t0 + 90_000, t0 + 176_000)
        assert all(len(d) == (19 if d.series.id in late1 else 18) for d in got)
        assert (cache.hits, cache.misses) == (hits + 2, misses + 1)  # (target 0 and the narrow one still kept)
        # Replayed frames of target 0 and the narrow one at a time inside what is kept,
        # written 90 s late.
        late0 = await late_frame("k/h:0", t0 + 100_500, t0 + 190_500)
        late0 |= await late_frame("k/n:0", t0 + 100_500, t0 + 190_500)
        clock[0] = t0 + 211_000
        got = await both(t0 + 90_000, t0 + 176_000)
        assert all(len(d) == 19 for d in got) and {d.series.id for d in got} == late0 | late1
        assert cache.misses >= misses + 4
        got = await both(t0 + 90_000, t0 + 176_000, narrow)
        assert len(got) == 8 and all(len(d) == 19 for d in got)
        # The series a query found in the index are kept while the index's stamp of their
        # metric and bucket is older than that read (the skew set to 0: the writes above are
        # before the reads below), and read again once another process indexed new series.
        store.index_skew_ms = 0
        await both(t0 + 90_000, t0 + 176_000)
        found = store.index_kept_hits
        await both(t0 + 90_000, t0 + 176_000)
        assert store.index_kept_hits == found + 2  # (both reads of it)
        new = [Series.of(make_labels("keep_check", job="k", instance="h:2", n=str(j))) for j in range(64)]
        clock[0] = t0 + 170_100
        writer = await type(store).connect(["127.0.0.1"], store.cluster.port, store.keyspace)
        writer._now_ms = lambda: clock[0]
        try:
            await writer.write(SampleBatch("k/h:2", new, [t0 + 170_000] * len(new), [1.0] * len(new)))
        finally:
            await writer.close()
        clock[0] = t0 + 211_000
        got = await both(t0 + 90_000, t0 + 176_000)
        assert {d.series.id for d in got} == {s.id for s in [*targets["k/h:0"], *targets["k/h:1"], *targets["k/n:0"], *new]}
    finally:
        store._now_ms = None


async def _kept_and_plain(store, matchers: list[Matcher], lo: int, hi: int) -> list:
    """The query engine's read (flat columns, through ``frame_cache``), asserted equal to a
    read without the cache; its series."""
    got = (await store.select_flat(matchers, lo, hi)).as_data()
    cache, store.frame_cache = store.frame_cache, None
    try:
        plain = await store.select(matchers, lo, hi)
    finally:
        store.frame_cache = cache
    assert [(d.series.id, d.timestamps.tolist(), d.values.view(np.int64).tolist()) for d in got] == \
        [(d.series.id, d.timestamps.tolist(), d.values.view(np.int64).tolist()) for d in plain]
    return got


@pytest.mark.cassandra
async def test_a_repeated_read_goes_through_its_targets_kept_as_one_group_until_something_changes(
    cassandra_storage,
) -> None:
    """A read that found every target kept and no frame new keeps its targets' entries as one
    ``FrameGroup``; the same read again (same targets and series) goes through it: answers as
    a read without the cache, and the group moves where it is complete on with the clock. It
    goes, and the read answers through the targets' entries (read whole where needed), at: the
    store's own write of a frame inside what the group holds complete (beyond its entries'),
    another process's late frame (a mark), new frames after where it is complete (a later end),
    a new target (another set of targets: another group), and a target's new layout (a series
    the query does not want: that target is read whole while its range holds two layouts)."""
    store = cassandra_storage
    targets = {f"g/h:{i}": [Series.of(make_labels("group_check", job="g", instance=f"h:{i}", n=str(j)))
                            for j in range(16 + i)] for i in range(3)}
    clock = [0]
    # (hours ago, in an hour of its own: the module's other tests' late marks are not in it)
    t0 = (int(time.time() * 1000) // HOUR_MS - 3) * HOUR_MS + 2 * KEY_SPAN_MS
    rng = np.random.default_rng(11)
    store._now_ms = lambda: clock[0]
    store.index_skew_ms = 0  # (the index's writes below are before the reads that must see them)
    matchers = [Matcher("__name__", MatchOp.EQ, "group_check"), Matcher("n", MatchOp.RE, "[0-9]|1[0-5]")]

    async def write(target: str, series: list[Series], ts: int) -> None:
        clock[0] = ts + 100  # written on time: no late mark
        await store.write(SampleBatch(target, series, [ts] * len(series), rng.random(len(series)).round(3).tolist()))

    async def scrape(k: int) -> None:
        for i, (t, series) in enumerate(targets.items()):
            await write(t, series, t0 + k * 5000 + i)

    try:
        for k in range(30):
            await scrape(k)
        cache = store.frame_cache
        assert cache is not None
        cache.clear()
        lo, hi = t0 + 60_000, t0 + 145_002
        clock[0] = t0 + 150_000  # (complete up to t0 + 130 s: the keys after it are read)
        await _kept_and_plain(store, matchers, lo, hi)  # (read whole)
        assert cache.group_reads == 0
        got = await _kept_and_plain(store, matchers, lo, hi)  # (kept, none new: the group is made)
        assert cache.group_reads == 0 and len(got) == 48 and all(len(d) == 18 for d in got)
        hits = cache.hits
        await _kept_and_plain(store, matchers, lo, hi)
        assert cache.group_reads == 1 and cache.hits == hits + 3
        clock[0] = t0 + 160_000  # (the group complete up to t0 + 140 s, its entries still to 130 s)
        await _kept_and_plain(store, matchers, lo, hi)
        assert cache.group_reads == 2

        # The store's own write of a frame of target 0 at t0 + 137.5 s: its entry (complete
        # to 130 s) would not go, the group (to 140 s) does.
        await write("g/h:0", targets["g/h:0"], t0 + 137_500)
        clock[0] = t0 + 165_000
        got = await _kept_and_plain(store, matchers, lo, hi)
        assert cache.group_reads == 2
        assert {len(d) for d in got if d.series.id in {s.id for s in targets["g/h:0"]}} == {19}
        await _kept_and_plain(store, matchers, lo, hi)  # (made again)
        await _kept_and_plain(store, matchers, lo, hi)
        assert cache.group_reads == 3

        # Another process's frame of target 1 at t0 + 120.5 s, stored 30 s after it: marked.
        ids = np.array([s.id for s in targets["g/h:1"]], dtype=np.int64)
        late = EncodedFrame(t0 + 120_500, None, layout_id(ids), ids.size, encode_delta(np.full(ids.size, 0.25), None))
        writer = await type(store).connect(["127.0.0.1"], store.cluster.port, store.keyspace)
        clock[0] = t0 + 150_500
        writer._now_ms = lambda: clock[0]
        empty = np.empty(0, dtype=np.int64)
        try:
            await writer.write_frames("g/h:1", [late], empty, empty, np.empty(0))
        finally:
            await writer.close()
        clock[0] = t0 + 166_000
        got = await _kept_and_plain(store, matchers, lo, hi)
        assert cache.group_reads == 3
        assert {len(d) for d in got if d.series.id in set(ids.tolist())} == {19}

        # New frames after where the group is complete: a later end.
        for k in range(30, 36):
            await scrape(k)
        clock[0] = t0 + 200_000
        got = await _kept_and_plain(store, matchers, lo, t0 + 175_002)
        assert cache.group_reads == 3
        await _kept_and_plain(store, matchers, lo, t0 + 175_002)
        got = await _kept_and_plain(store, matchers, lo, t0 + 175_002)
        assert cache.group_reads == 4 and all(len(d) in (24, 25) for d in got)

        # A new target (another process indexes it): the read's targets differ, another group.
        new = [Series.of(make_labels("group_check", job="g", instance="h:3", n=str(j))) for j in range(16)]
        writer = await type(store).connect(["127.0.0.1"], store.cluster.port, store.keyspace)
        clock[0] = t0 + 170_100
        writer._now_ms = lambda: clock[0]
        try:
            await writer.write(SampleBatch("g/h:3", new, [t0 + 170_000] * len(new), [1.0] * len(new)))
        finally:
            await writer.close()
        clock[0] = t0 + 201_000
        # (the read of the series found before, begun beside the index's check, may go
        # through the old group: it is dropped once the check found other series)
        got = await _kept_and_plain(store, matchers, lo, t0 + 175_002)
        assert {s.id for s in new} <= {d.series.id for d in got}
        await _kept_and_plain(store, matchers, lo, t0 + 175_002)
        reads = cache.group_reads
        got = await _kept_and_plain(store, matchers, lo, t0 + 175_002)
        assert cache.group_reads == reads + 1 and len(got) == 64

        # Target 2 gains a series the query does not want: its frames' layout changes.
        targets["g/h:2"].append(Series.of(make_labels("group_check", job="g", instance="h:2", n="x")))
        for k in range(36, 38):
            await scrape(k)
        clock[0] = t0 + 210_000
        got = await _kept_and_plain(store, matchers, lo, t0 + 185_002)
        assert cache.group_reads == reads + 1
        assert all(len(d) in (26, 27) for d in got if d.series.id not in {s.id for s in new})
        # (a target with frames of two layouts in the range is not kept: no group while they are)
        misses = cache.misses
        await _kept_and_plain(store, matchers, lo, t0 + 185_002)
        assert cache.group_reads == reads + 1 and cache.misses == misses + 1
    finally:
        store._now_ms = None
        store.index_skew_ms = type(store).index_skew_ms


@pytest.mark.cassandra
async def test_the_rollup_job_seals_frames_into_blocks_bit_exact(cassandra, tmp_path) -> None:
    """Frames written as if scraped live over 5 hours, sealed by the rollup job: the sealed
    blocks hold every frame's values bit for bit, and reads agree."""
    from fixtures_cassandra import keyspace_store

    from storage.base import Resolution
    from storage.cassandra_rollup import CassandraRollupStorage
    from storage.rollup_job import RawWindow, RawWindowArrays, RollupJob
    from storage.rollup_lease import LocalShardLease

    window = 2 * HOUR_MS
    with keyspace_store(cassandra, "frames_seal", CassandraRollupStorage) as store:
        now = int(time.time() * 1000)
        start = (now - 5 * HOUR_MS) // 10_000 * 10_000
        series = [Series.of(make_labels("frame_seal", instance="h:1", n=str(i))) for i in range(10)]
        ts = np.arange(start, now + 1, 30_000, dtype=np.int64)
        vals = np.random.default_rng(2).random((ts.size, len(series))).round(2)
        vals[ts.size // 3, 4] = STALE_NAN
        store._now_ms = lambda: now
        store.late_after_ms = 10**12  # loaded in a burst, but as if scraped live: frames
        for lo in range(0, ts.size, 25):  # bounded concurrency: the node is shared with the suite
            await asyncio.gather(*(store.write(SampleBatch("f/h:1", series, [int(t)] * len(series), vals[k].tolist()))
                                   for k, t in enumerate(ts.tolist()) if lo <= k < lo + 25))
        frames = await store.execute(f"SELECT count(*) FROM {store.keyspace}.raw_frames")
        assert frames[0][0][0] == ts.size
        assert isinstance(store, RawWindowArrays)  # the job takes the arrays path
        for shard in range(2):  # the job's input as arrays: what the per-series read gives
            arrays = await store.read_raw_window_arrays(shard, 2, start, start + window)
            want = RawWindow.of(await store.read_raw_window(shard, 2, start, start + window))
            assert arrays.ids.tolist() == want.ids.tolist() and arrays.bounds.tolist() == want.bounds.tolist()
            assert arrays.timestamps.tolist() == want.timestamps.tolist()
            assert arrays.values.view(np.int64).tolist() == want.values.view(np.int64).tolist()
            assert arrays.ids.size == sum(1 for s in series if s.id % 2 == shard)
        # Both shards at once (each frame decoded once): each series as its shard's read gives it.
        group = await store.read_raw_window_group([0, 1], 2, start, start + window)
        alone = {shard: await store.read_raw_window_arrays(shard, 2, start, start + window) for shard in range(2)}
        assert sorted(group.ids.tolist()) == group.ids.tolist() == sorted(s.id for s in series)
        for i, sid in enumerate(group.ids.tolist()):
            one = alone[sid % 2]
            k = one.ids.tolist().index(sid)
            lo, hi = one.bounds[k], one.bounds[k + 1]
            assert group.timestamps[group.bounds[i]:group.bounds[i + 1]].tolist() == one.timestamps[lo:hi].tolist()
            got_vals = group.values[group.bounds[i]:group.bounds[i + 1]].view(np.int64).tolist()
            assert got_vals == one.values[lo:hi].view(np.int64).tolist()
        job = RollupJob(store, LocalShardLease(tmp_path / "locks"), window_ms=window, shards=2, now_ms=lambda: now)
        await job.backfill(start - window, now)
        sealed_until = job.closed_until()
        assert sealed_until > start + window
        for j, s in enumerate(series):
            b_ts, b_vals = await store.read_blocks(s.id, start, sealed_until)
            inside = ts < sealed_until
            assert b_ts.tolist() == ts[inside].tolist()
            assert b_vals.view(np.int64).tolist() == vals[inside, j].view(np.int64).tolist()
        # The shards sealed together wrote what they write one at a time, bit for bit.
        rollups = {(s.id, res): await store.read_rollup(res, s.id, start - window, now)
                   for s in series for res in (Resolution.MINUTE, Resolution.HOUR)}
        assert all(len(r) for r in rollups.values())
        one_by_one = RollupJob(store, LocalShardLease(tmp_path / "locks"), window_ms=window, shards=2,
                               now_ms=lambda: now, shards_at_once=1)
        done = await one_by_one.backfill(start - window, now)
        assert sorted({r.shard for r in done}) == [0, 1] and sum(r.samples for r in done) == ts[ts < sealed_until].size * 10
        for (sid, res), want in rollups.items():
            assert (await store.read_rollup(res, sid, start - window, now)).bit_equal(want)
        got = await store.select([Matcher("__name__", MatchOp.EQ, "frame_seal")], start, now)
        for d in got:
            j = next(i for i, s in enumerate(series) if s.id == d.series.id)
            assert d.timestamps.tolist() == ts.tolist()
            assert d.values.view(np.int64).tolist() == vals[:, j].view(np.int64).tolist()


@pytest.mark.cassandra
def test_storage_init_adds_the_frame_tables_to_a_version_5_keyspace(cassandra) -> None:
    from fixtures_cassandra import keyspace_store

    from storage import schema as sch
    from storage.base import StorageError
    from storage.cassandra import CassandraStorage

    with keyspace_store(cassandra, "frames_init") as store:
        ks = store.keyspace
        for table in ("raw_frames", "raw_layouts", "raw_late_frames", "raw_block_times"):  # (versions 7, 8)
            store.session.execute(f"DROP TABLE {ks}.{table}", timeout=60)
        store.session.execute(f"INSERT INTO {ks}.meta (key, value) VALUES ('schema_version', '5')")
        with pytest.raises(StorageError, match="schema version 5.*ringmon storage init"):
            CassandraStorage.connect_sync([cassandra.host], cassandra.port, ks)
        assert sorted(sch.create_schema(store.session, sch.SchemaSpec(keyspace=ks))) == \
            ["raw_block_times", "raw_frames", "raw_late_frames", "raw_layouts"]
        assert sch.schema_version(store.session, ks) == sch.SCHEMA_VERSION == 8
        CassandraStorage.connect_sync([cassandra.host], cassandra.port, ks).shutdown()
        ttl = {r[0]: r[1] for r in store.session.execute(
            "SELECT table_name, default_time_to_live FROM system_schema.tables WHERE keyspace_name = %s", (ks,))}
        # frames live as long as raw rows (an outage of the rollup job shorter than that loses
        # nothing); a layout outlives the frames naming it
        assert ttl["raw_frames"] == ttl["raw_recent"] < ttl["raw_layouts"]
