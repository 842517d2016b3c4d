"""BatchingWriter on a real Cassandra: direct writes, replay of a spool left by an earlier process."""

from __future__ import annotations

import asyncio
import os
import time
from array import array

import numpy as np
import pytest

from storage.matchers import Matcher, MatchOp
from storage.model import STALE_NAN, LayoutSeries, SampleBatch, Series, float_bits, make_labels
from storage.spool import Spool, encode_batch
from storage.writer import BatchingWriter

pytestmark = pytest.mark.cassandra


def _series(metric: str, n: int) -> list[Series]:
    return [Series.of(make_labels(metric, job="w", idx=str(i))) for i in range(n)]


async def test_direct_writes_are_stored_and_spool_cleaned(cassandra_storage, tmp_path) -> None:
    store = cassandra_storage
    writer = BatchingWriter(store, tmp_path / "spool", segment_bytes=4096)
    series = _series("writer_direct", 50)
    t0 = int(time.time() * 1000)
    for k in range(20):
        await writer.append(SampleBatch("w/h:1", series, [t0 + k * 1000] * 50, [float(k)] * 50))
    assert await writer.drain(60)
    assert writer.queue_depth() == 0 and writer.mode == writer.DIRECT
    got = await store.select([Matcher("__name__", MatchOp.EQ, "writer_direct")], t0, t0 + 20_000)
    assert len(got) == 50 and all(d.values.tolist() == [float(k) for k in range(20)] for d in got)
    hours = sorted({t0 // 3_600_000, (t0 + 19_000) // 3_600_000})
    frames = store.session.execute(
        f"SELECT count(*) FROM {store.keyspace}.raw_frames WHERE target = 'w/h:1' AND hour IN ({', '.join(map(str, hours))})")
    assert frames.one()[0] == 20  # a scrape is one frame row
    await writer.close()
    # Every stored segment is gone; at most the last (active) one remains.
    assert len(list((tmp_path / "spool").glob("seg-*"))) <= 1


async def test_a_target_whose_series_change_between_scrapes_stores_each_scrape_as_it_was(
    cassandra_storage, tmp_path
) -> None:
    store = cassandra_storage
    writer = BatchingWriter(store, tmp_path / "spool")
    more = _series("writer_layouts", 45)  # 40-44 come only in LayoutSeries: indexed from what they make
    series = more[:40]
    t0 = int(time.time() * 1000)
    made: list[int] = []

    def layout(of: list[Series]) -> LayoutSeries:  # a scrape loop's layout plan: ids, Series made when asked
        return LayoutSeries(array("q", [s.id for s in of]), lambda: made.append(len(of)) or list(of))

    lazy = layout(more)
    # the writer reuses the ids of a target's last series list; every change must be seen
    lists = [series, series, lazy, lazy, layout(more), series[::-1], list(series[::-1]), layout(series[:30]),
             series[:30] + series[35:], series]
    members = [list(lst) if isinstance(lst, list) else more if lst.ids == lazy.ids else series[:30] for lst in lists]
    # (offset of the scrape's time from t0; a late one, older than late_after_ms, goes to rows)
    offsets = [k * 1000 for k in range(len(lists) - 1)] + [-2 * store.late_after_ms]
    for k, lst in enumerate(lists):
        await writer.append(SampleBatch("w/h:layouts", lst, [t0 + offsets[k]] * len(lst),
                                        [k * 1000.0 + int(s.get("idx")) for s in members[k]]))
    assert await writer.drain(60)
    assert made == [45]  # the first LayoutSeries of ids not labeled yet: made for the series it indexes
    assert all(lst._made is None for lst in lists if isinstance(lst, LayoutSeries))  # and kept none
    got = await store.select([Matcher("__name__", MatchOp.EQ, "writer_layouts")], t0 - 3 * store.late_after_ms,
                             t0 + 10_000)
    want = {s.id: sorted((t0 + offsets[k], k * 1000.0 + int(s.get("idx"))) for k, m in enumerate(members) if s in m)
            for s in more}
    assert {d.series.id: list(zip(d.timestamps.tolist(), d.values.tolist(), strict=True)) for d in got} == want
    await writer.close()


async def test_backlog_of_a_previous_process_is_replayed_on_start(cassandra_storage, tmp_path) -> None:
    store = cassandra_storage
    series = _series("writer_backlog", 30)
    ids = np.array([s.id for s in series], dtype=np.int64)
    t0 = int(time.time() * 1000) // 1000 * 1000
    spool = Spool(tmp_path / "spool", segment_bytes=2048)  # what a killed writer left behind
    for k in range(12):
        vals = np.full(30, float(k))
        vals[0] = STALE_NAN
        defs = series if k == 0 else []  # labels travel once, with the first record
        spool.append(encode_batch("w/h:2", ids, np.full(30, t0 + k * 1000), vals, defs))
    spool.close()
    segs = sorted(p.name for p in (tmp_path / "spool").iterdir())
    last = tmp_path / "spool" / segs[-1]
    with open(last, "ab") as f:
        f.write(b"\x40\x00\x00\x00garbage")  # a torn record at the very end (crash mid-write)
    assert len(segs) > 2

    writer = BatchingWriter(store, tmp_path / "spool")
    assert writer.mode == writer.SPOOLING  # starts by replaying the backlog
    assert await writer.drain(60)
    await writer.close()
    got = await store.select([Matcher("__name__", MatchOp.EQ, "writer_backlog")], t0, t0 + 20_000)
    assert len(got) == 30
    for d in got:
        assert d.timestamps.tolist() == [t0 + k * 1000 for k in range(12)]
        if d.series.id == series[0].id:
            assert all(float_bits(float(v)) == float_bits(STALE_NAN) for v in d.values)
        else:
            assert d.values.tolist() == [float(k) for k in range(12)]
    left = [p for p in os.listdir(tmp_path / "spool")]
    assert all(p not in left for p in segs)  # the replayed backlog segments are deleted


def _count_frame_sets(store, monkeypatch) -> list[int]:  # type: ignore[no-untyped-def]
    """The sizes of the store's ``write_frame_sets`` calls from now on (each still writes)."""
    calls: list[int] = []
    sets = store.write_frame_sets

    async def counted(frame_sets):  # type: ignore[no-untyped-def]
        calls.append(len(frame_sets))
        await sets(frame_sets)

    monkeypatch.setattr(store, "write_frame_sets", counted)
    return calls


async def test_a_spool_of_frames_replays_in_order_bit_exact(cassandra_storage, tmp_path, monkeypatch) -> None:
    """A spool whose records are frames (XOR chains across records, a layout change), after a
    record of the writer before frames (version 1, rows): replayed in order, the frames-only
    records in groups (``write_frame_sets``), read bit for bit, their target marked late
    (``raw_late_frames``)."""
    from storage.cassandra_frames import Frame, FrameEncoder

    store = cassandra_storage
    series = _series("writer_frames", 20)
    ids = np.array([s.id for s in series], dtype=np.int64)
    t0 = int(time.time() * 1000) // 300_000 * 300_000 - 300_000  # one key span: frames chain
    rng = np.random.default_rng(3)
    spool = Spool(tmp_path / "spool", segment_bytes=4096)
    old = encode_batch("w/h:3", ids, np.full(20, t0), np.full(20, -1.0), series)
    spool.append(b"\x01" + old[1:-4])  # version 1: no frame count
    expected = {s.id: {t0: -1.0} for s in series}
    encoder = FrameEncoder()
    empty = np.empty(0, dtype=np.int64)
    bases = []
    for k in range(1, 12):
        lay = ids if k < 8 else ids[:18]  # two series gone: a new layout, its ids in the record
        vals = rng.random(lay.size).round(2)
        vals[k % lay.size] = STALE_NAN
        frames = [Frame(t0 + k * 10_000, lay, vals)]
        enc = encoder.encode("w/h:3", frames, t0)
        encoder.remember("w/h:3", frames, enc, t0)
        bases.append(enc[0].base_ts)
        spool.append(encode_batch("w/h:3", empty, empty, np.empty(0), [], enc))
        for sid, v in zip(lay.tolist(), vals.tolist(), strict=True):
            expected[sid][t0 + k * 10_000] = v
    spool.close()
    assert bases.count(None) == 2  # whole at the start and at the layout change, XOR'd otherwise
    calls = _count_frame_sets(store, monkeypatch)
    writer = BatchingWriter(store, tmp_path / "spool")
    assert writer.mode == writer.SPOOLING
    assert await writer.drain(60)
    await writer.close()
    assert sum(calls) == 11 and len(calls) < 11  # the 11 frames-only records went in groups
    # (replayed minutes after their scrapes: each hour of them marked for readers' kept frames)
    hours = sorted({(t0 + k * 10_000) // 3_600_000 for k in range(1, 12)})
    assert {("w/h:3", h) for h in hours} <= set(await store.late_frames(hours))
    got = await store.select([Matcher("__name__", MatchOp.EQ, "writer_frames")], t0, t0 + 120_000)
    assert len(got) == 20
    for d in got:
        want = expected[d.series.id]
        assert d.timestamps.tolist() == sorted(want)
        assert [float_bits(float(v)) for v in d.values] == [float_bits(want[t]) for t in sorted(want)]


async def test_frames_of_a_moment_go_together_and_a_rejected_group_record_by_record(
    cassandra_storage, tmp_path, monkeypatch
) -> None:
    """Frames-only records appended within ``group_s`` are one ``write_frame_sets``; a group the
    node rejects (here: over its 1 MiB batch_size_fail_threshold) is sent record by record,
    every frame stored, and later groups are smaller."""
    store = cassandra_storage
    n = 40_000  # random values: a frame of ~320 KB whatever the codec
    series = _series("writer_grouped", n)
    # Our own store's index check, not Cassandra: these series count as indexed (no index rows to write).
    monkeypatch.setattr(store, "indexed_mask", lambda ids, _ms, _target: np.ones(len(ids), dtype=bool))
    monkeypatch.setattr(store, "frame_batch_bytes", 4 << 20)  # above the node's fail threshold
    calls = _count_frame_sets(store, monkeypatch)
    writer = BatchingWriter(store, tmp_path / "spool", group_s=30.0, max_in_flight=1)  # the group holds the one slot
    t0 = int(time.time() * 1000) // 1000 * 1000
    rng = np.random.default_rng(5)
    for k in range(4):
        await writer.append(SampleBatch(f"w/g:{k}", series, [t0] * n, rng.random(n).tolist()))
    assert writer.queue_depth() == 4 and not calls  # waiting for its group's time
    assert await writer.drain(60)
    assert calls == [4] and writer.stats.stored_batches == 4 and writer.stats.dropped_batches == 0
    assert store.frame_batch_bytes == 2 << 20
    stored = store.session.execute(
        f"SELECT count(*) FROM {store.keyspace}.raw_frames WHERE target IN ('w/g:0', 'w/g:1', 'w/g:2', 'w/g:3') "
        f"AND hour = {t0 // 3_600_000}")
    assert stored.one()[0] == 4
    await writer.close()


async def test_one_record_indexes_at_a_time_and_its_turn_holds_no_write_slot(
    cassandra_storage, tmp_path, monkeypatch
) -> None:
    """Records that carry series to index are sent one at a time (``INDEXING_IN_FLIGHT``: the
    heap's peak stays, #20); one waiting for its turn gives its write slot back, so a
    frames-only record does not wait for the indexing (nor turns the writer to spooling)."""
    store = cassandra_storage
    real = store.write_frames
    gate = asyncio.Event()
    indexing: list[str] = []
    active = peak = 0

    async def gated(target, frames, ids, ts, vals, series_defs=()):  # noqa: ANN001, ANN202 - a wrapper
        nonlocal active, peak
        if not series_defs:
            return await real(target, frames, ids, ts, vals)
        active += 1
        peak = max(peak, active)
        indexing.append(target)
        try:
            await gate.wait()
            return await real(target, frames, ids, ts, vals, series_defs)
        finally:
            active -= 1

    monkeypatch.setattr(store, "write_frames", gated)
    writer = BatchingWriter(store, tmp_path / "spool", max_in_flight=2, group_s=0)
    a, b = _series("writer_turn_a", 20), _series("writer_turn_b", 20)
    t0 = int(time.time() * 1000)
    await writer.append(SampleBatch("w/a:1", a, [t0] * 20, [1.0] * 20))  # indexes (held at the gate)
    await writer.append(SampleBatch("w/b:1", b, [t0] * 20, [1.0] * 20))  # waits for its turn
    for _ in range(1000):
        if indexing:
            break
        await asyncio.sleep(0.01)
    assert indexing == ["w/a:1"]
    # a frames-only scrape gets the slot b gave back at once: without it, it would wait the
    # writer's slow_after_s and turn it to spooling
    await asyncio.wait_for(writer.append(SampleBatch("w/a:1", a, [t0 + 1000] * 20, [2.0] * 20)), 60)
    assert writer.mode == writer.DIRECT
    gate.set()
    assert await writer.drain(60)
    assert indexing == ["w/a:1", "w/b:1"] and peak == 1
    assert writer.mode == writer.DIRECT and writer.stats.stored_batches == 3
    got = await store.select([Matcher("__name__", MatchOp.EQ, "writer_turn_a")], t0, t0 + 1000)
    assert len(got) == 20 and all(d.values.tolist() == [1.0, 2.0] for d in got)
    await writer.close()
