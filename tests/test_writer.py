"""BatchingWriter on a real Cassandra: direct writes, replay of a spool left by an earlier process."""

from __future__ import annotations

import os
import time

import numpy as np
import pytest

from storage.matchers import Matcher, MatchOp
from storage.model import STALE_NAN, SampleBatch, Series, float_bits, make_labels
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
    await writer.close()
    # Every stored segment is gone; at most the last (active) one remains.
    assert len(list((tmp_path / "spool").iterdir())) <= 1


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
