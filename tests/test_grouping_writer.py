"""The standalone scrape pool's ``GroupingWriter`` over SQLite: concurrent scrapes' batches are
stored together, each ``append`` returns once its batch is stored, and a failing batch gets
its own error while the rest of its group is stored."""

from __future__ import annotations

import asyncio
from pathlib import Path

from storage.base import GroupingWriter
from storage.matchers import Matcher, MatchOp
from storage.model import SampleBatch, Series, make_labels
from storage.sqlite import SQLiteStorage

T0 = 1_700_000_000_000


class CountingStore(SQLiteStorage):
    """SQLite that counts its ``write_many`` calls."""

    calls = 0

    async def write_many(self, batches):  # type: ignore[no-untyped-def]
        self.calls += 1
        return await super().write_many(batches)


def batch(target: int, n: int = 20) -> SampleBatch:
    b = SampleBatch(f"web/h{target}:9100")
    b.series = [Series.of(make_labels("gw_metric", instance=f"h{target}", k=str(k))) for k in range(n)]
    b.timestamps = [T0 + target] * n
    b.values = [float(target * 100 + k) for k in range(n)]
    return b


async def stored(store: SQLiteStorage) -> dict[str, float]:
    data = await store.select([Matcher("__name__", MatchOp.EQ, "gw_metric")], T0 - 1, T0 + 1000)
    return {f"{d.series.get('instance')}/{d.series.get('k')}": float(d.values[0]) for d in data}


async def test_concurrent_appends_go_in_few_groups(tmp_path: Path):
    store = await CountingStore.open(tmp_path / "g.db", now_ms=lambda: T0 + 5_000)
    writer = GroupingWriter(store, gather_s=0.05)
    try:
        await asyncio.gather(*(writer.append(batch(t)) for t in range(30)))
        assert store.calls < 30  # every append waited for its group, not for a write of its own
        got = await stored(store)
        assert len(got) == 30 * 20 and got["h7/3"] == 703.0
        await writer.append(batch(40))  # a lone append is stored too, after the gather time
        assert (await stored(store))["h40/0"] == 4000.0
    finally:
        await writer.close()
        await store.close()


async def test_a_failing_batch_gets_its_error_and_the_rest_is_stored(tmp_path: Path):
    store = await SQLiteStorage.open(tmp_path / "f.db", now_ms=lambda: T0 + 5_000)
    writer = GroupingWriter(store, gather_s=0.05)
    bad = batch(1)
    bad.timestamps = []  # as many values as series, no timestamps: the store cannot take it
    try:
        results = await asyncio.gather(writer.append(batch(0)), writer.append(bad), writer.append(batch(2)),
                                       return_exceptions=True)
        assert results[0] is None and results[2] is None
        assert isinstance(results[1], IndexError)  # its own error, not its neighbours'
        got = await stored(store)
        assert got["h0/1"] == 1.0 and got["h2/19"] == 219.0 and "h1/0" not in got
    finally:
        await writer.close()
        await store.close()


async def test_close_stores_what_is_pending(tmp_path: Path):
    store = await SQLiteStorage.open(tmp_path / "c.db", now_ms=lambda: T0 + 5_000)
    writer = GroupingWriter(store, gather_s=30.0)  # only close() can hurry it
    try:
        pending = asyncio.ensure_future(writer.append(batch(3)))
        await asyncio.sleep(0)
        assert writer.queue_depth() == 1
        await asyncio.wait_for(writer.close(), 10)
        await pending
        assert (await stored(store))["h3/5"] == 305.0
    finally:
        await store.close()


async def test_an_empty_append_returns_at_once(tmp_path: Path):
    store = await SQLiteStorage.open(tmp_path / "e.db")
    writer = GroupingWriter(store, gather_s=30.0)
    try:
        await asyncio.wait_for(writer.append(SampleBatch("x")), 5)
        assert writer.queue_depth() == 0
    finally:
        await store.close()


async def test_a_series_list_changed_in_place_is_not_taken_for_the_last_one(tmp_path: Path):
    """The writer remembers each target's last series list (and its ids): a caller that
    reuses its list object with other series in it gets them stored as they are now."""
    store = await SQLiteStorage.open(tmp_path / "r.db", now_ms=lambda: T0 + 5_000)
    try:
        b = batch(5)
        await store.write(b)
        b.series[3] = Series.of(make_labels("gw_metric", instance="h5", k="new"))
        b.timestamps = [T0 + 10] * len(b.series)
        b.values = [-1.0] * len(b.series)
        await store.write(b)
        data = await store.select([Matcher("__name__", MatchOp.EQ, "gw_metric")], T0 - 1, T0 + 1000)
        got = {d.series.get("k"): d.values.tolist() for d in data}
        assert got["new"] == [-1.0] and got["3"] == [503.0] and got["4"] == [504.0, -1.0]
    finally:
        await store.close()
