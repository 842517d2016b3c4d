"""Take-over on Cassandra (issue #20): a process writing a target whose series another process
indexed today looks their index rows up and writes none of them again; a series new to the
store in the same write is indexed, and both are found by label."""

from __future__ import annotations

import asyncio
import time

from storage.cassandra import STORED_INDEX_PROBE_MIN, CassandraStorage
from storage.matchers import Matcher, MatchOp
from storage.model import SampleBatch, Series, make_labels


def scrape(series: list[Series], ts: int) -> SampleBatch:
    return SampleBatch("tk/h:1", list(series), [ts] * len(series), [float(i) for i in range(len(series))])


async def test_a_new_owner_skips_the_index_rows_the_old_one_stored(cassandra, cassandra_storage) -> None:
    old = cassandra_storage
    n = STORED_INDEX_PROBE_MIN + 16
    series = [Series.of(make_labels("takeover_check", job="tk", instance="h:1", n=str(i))) for i in range(n)]
    now = int(time.time() * 1000)
    await old.write(scrape(series, now - 20_000))  # the old owner indexes them
    new = await asyncio.to_thread(CassandraStorage.connect_sync, [cassandra.host], cassandra.port, old.keyspace)
    try:
        fresh = Series.of(make_labels("takeover_check", job="tk", instance="h:1", n="new"))
        await new.write(scrape([*series, fresh], now - 10_000))  # the new owner's first scrape
        assert new.index_found_stored == n  # looked up, not written again
        await new.write(scrape([*series, fresh], now))
        assert new.index_found_stored == n  # and remembered
        got = await new.select([Matcher("__name__", MatchOp.EQ, "takeover_check"), Matcher("job", MatchOp.EQ, "tk")],
                               now - 30_000, now + 1)
        assert {d.series.id for d in got} == {s.id for s in [*series, fresh]}
        assert all(len(d.timestamps) == (2 if d.series.id == fresh.id else 3) for d in got)
    finally:
        await asyncio.to_thread(new.shutdown)
