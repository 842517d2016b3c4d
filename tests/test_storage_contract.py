"""One contract for every storage backend: what is written is what is read back.

Backends: the embedded SQLite store and the real Cassandra started for the session.
"""

from __future__ import annotations

import math
import os

import pytest

from storage.base import DAY_MS, Storage
from storage.matchers import Matcher, MatchOp
from storage.model import STALE_NAN, SampleBatch, Series, float_bits, is_stale, make_labels
from storage.sqlite import SQLiteStorage

# The Cassandra case is marked here: the fixture asks for its store by name at run time, so
# collection cannot see that it needs Cassandra.
BACKENDS = ["sqlite", pytest.param("cassandra", marks=pytest.mark.cassandra)]
T0 = 1_700_000_000_000  # a fixed epoch ms, mid-day


@pytest.fixture(params=BACKENDS)
async def store(request, tmp_path) -> Storage:
    if request.param == "sqlite":
        s = await SQLiteStorage.open(tmp_path / "contract.db")
        yield s
        await s.close()
    else:
        yield request.getfixturevalue("cassandra_storage")


def _series(metric: str, **labels: str) -> Series:
    return Series.of(make_labels(metric, **labels))


def _scrape(target: str, ts: int, rows: list[tuple[Series, float]]) -> SampleBatch:
    b = SampleBatch(target)
    for s, v in rows:
        b.add(s, ts, v)
    return b


async def test_round_trip_values_bit_exact(store: Storage) -> None:
    a = _series("contract_cpu", instance="h1:9100", job="web", mode="idle")
    b = _series("contract_cpu", instance="h1:9100", job="web", mode="user")
    specials = [0.0, -0.0, 1.5, math.inf, -math.inf, float("nan"), STALE_NAN, 1e308, 5e-324]
    for i, v in enumerate(specials):
        await store.write(_scrape("web/h1:9100", T0 + i * 1000, [(a, v), (b, float(i))]))
    got = await store.select([Matcher("__name__", MatchOp.EQ, "contract_cpu")], T0, T0 + 60_000)
    by_mode = {d.series.get("mode"): d for d in got}
    assert set(by_mode) == {"idle", "user"}
    idle = by_mode["idle"]
    assert idle.timestamps.tolist() == [T0 + i * 1000 for i in range(len(specials))]
    assert [float_bits(float(v)) for v in idle.values] == [float_bits(v) for v in specials]
    assert is_stale(float(idle.values[6]))
    assert by_mode["user"].values.tolist() == [float(i) for i in range(len(specials))]


async def test_rewrite_is_idempotent(store: Storage) -> None:
    s = _series("contract_idem", instance="h2:9100", job="db")
    batch = _scrape("db/h2:9100", T0, [(s, 42.0)])
    await store.write(batch)
    await store.write(batch)
    got = await store.select([Matcher("__name__", MatchOp.EQ, "contract_idem")], T0 - 1, T0 + 1)
    assert len(got) == 1 and got[0].values.tolist() == [42.0]


async def test_out_of_order_and_rewritten_samples(store: Storage) -> None:
    # A late sample (a spool replay) lands among earlier ones; a rewrite of a timestamp wins.
    s = _series("contract_order", instance="h8:9100", job="web")
    for ts, v in [(30_000, 3.0), (10_000, 1.0), (20_000, 2.0), (10_000, 1.5), (330_000, 9.0), (299_999, 8.0)]:
        await store.write(_scrape("web/h8:9100", T0 + ts, [(s, v)]))
    got = await store.select([Matcher("__name__", MatchOp.EQ, "contract_order")], T0, T0 + 400_000)
    assert got[0].timestamps.tolist() == [T0 + t for t in (10_000, 20_000, 30_000, 299_999, 330_000)]
    assert got[0].values.tolist() == [1.5, 2.0, 3.0, 8.0, 9.0]
    part = await store.select([Matcher("__name__", MatchOp.EQ, "contract_order")], T0 + 15_000, T0 + 299_999)
    assert part[0].values.tolist() == [2.0, 3.0, 8.0]


async def test_time_range_is_inclusive_and_bounded(store: Storage) -> None:
    s = _series("contract_range", instance="h3:9100", job="web")
    for i in range(10):
        await store.write(_scrape("web/h3:9100", T0 + i * 10_000, [(s, float(i))]))
    got = await store.select([Matcher("__name__", MatchOp.EQ, "contract_range")], T0 + 20_000, T0 + 50_000)
    assert got[0].values.tolist() == [2.0, 3.0, 4.0, 5.0]
    none = await store.select([Matcher("__name__", MatchOp.EQ, "contract_range")], T0 + 100_000, T0 + 200_000)
    assert none == []


async def test_range_spanning_days(store: Storage) -> None:
    s = _series("contract_days", instance="h4:9100", job="web")
    stamps = [T0 - DAY_MS, T0, T0 + DAY_MS, T0 + 2 * DAY_MS]
    for i, ts in enumerate(stamps):
        await store.write(_scrape("web/h4:9100", ts, [(s, float(i))]))
    got = await store.select([Matcher("__name__", MatchOp.EQ, "contract_days")], T0 - DAY_MS, T0 + DAY_MS)
    assert got[0].timestamps.tolist() == stamps[:3]


@pytest.mark.parametrize(
    "matchers, expected",
    [
        ([("job", "=", "web")], {"a", "b"}),
        ([("job", "!=", "web")], {"c", "d"}),
        ([("mode", "=~", "us.*")], {"b", "d"}),
        ([("mode", "=~", "us")], set()),  # anchored: "us" does not match "user"
        ([("mode", "!~", "idle|system")], {"b", "d"}),
        ([("job", "=", "db"), ("mode", "=", "idle")], {"c"}),
        ([("missing", "=", "")], {"a", "b", "c", "d"}),  # absent label equals ""
        ([("extra", "!=", "")], {"d"}),
    ],
)
async def test_label_matchers(store: Storage, matchers, expected) -> None:
    name = "contract_match"
    rows = {
        "a": _series(name, job="web", mode="idle", key="a"),
        "b": _series(name, job="web", mode="user", key="b"),
        "c": _series(name, job="db", mode="idle", key="c"),
        "d": _series(name, job="db", mode="user", key="d", extra="x"),
    }
    await store.write(_scrape("mixed/h:1", T0, [(s, 1.0) for s in rows.values()]))
    ms = [Matcher("__name__", MatchOp.EQ, name)] + [Matcher(n, MatchOp(op), v) for n, op, v in matchers]
    got = await store.select(ms, T0 - 1000, T0 + 1000)
    assert {d.series.get("key") for d in got} == expected
    listed = await store.series(ms, T0 - 1000, T0 + 1000)
    assert {s.get("key") for s in listed} == expected


async def test_labels_and_values(store: Storage) -> None:
    s1 = _series("contract_lv_a", instance="h5:1", job="lv", color="red")
    s2 = _series("contract_lv_b", instance="h5:1", job="lv", shape="round")
    await store.write(_scrape("lv/h5:1", T0, [(s1, 1.0), (s2, 2.0)]))
    only_lv = [Matcher("job", MatchOp.EQ, "lv")]
    names = await store.label_names(T0 - 1, T0 + 1, only_lv)
    assert names == ["__name__", "color", "instance", "job", "shape"]
    assert await store.label_values("__name__", T0 - 1, T0 + 1, only_lv) == ["contract_lv_a", "contract_lv_b"]
    assert await store.label_values("color", T0 - 1, T0 + 1, only_lv) == ["red"]


async def test_many_series_in_one_scrape(store: Storage) -> None:
    # (more series than one IN list of the SQLite backend's reads: 500)
    rows = [(_series("contract_bulk", instance="h6:1", job="bulk", idx=str(i)), float(i)) for i in range(600)]
    for k in range(3):
        await store.write(_scrape("bulk/h6:1", T0 + k * 15_000, rows))
    got = await store.select([Matcher("__name__", MatchOp.EQ, "contract_bulk")], T0, T0 + 60_000)
    assert len(got) == 600
    assert all(len(d) == 3 for d in got)
    assert all(d.values.tolist() == [float(d.series.get("idx"))] * 3 for d in got)


async def test_a_repeated_select_sees_series_written_since(store: Storage) -> None:
    """(The SQLite store keeps its series lookups: a new series is a new lookup.)"""
    ms = [Matcher("__name__", MatchOp.EQ, "contract_new"), Matcher("job", MatchOp.RE, "n.*")]
    a, b = _series("contract_new", instance="h8:1", job="new"), _series("contract_new", instance="h8:2", job="new")
    await store.write(_scrape("new/h8:1", T0, [(a, 1.0)]))
    for _ in range(2):
        assert [d.series.get("instance") for d in await store.select(ms, T0 - 1, T0 + 1)] == ["h8:1"]
    await store.write(_scrape("new/h8:2", T0, [(b, 2.0)]))
    assert [d.series.get("instance") for d in await store.select(ms, T0 - 1, T0 + 1)] == ["h8:1", "h8:2"]


async def test_a_sqlite_reader_sees_another_writers_new_series_at_once(tmp_path) -> None:
    """Two stores on one file, as the alerter or ``ringmon web`` beside the scraping process:
    the reader keeps its series lookups, and a series the writer adds is in its next select
    (the index generation in ``meta`` moved), with no time-to-live to wait out."""
    path = tmp_path / "shared.db"
    writer, reader = await SQLiteStorage.open(path), await SQLiteStorage.open(path)
    try:
        ms = [Matcher("__name__", MatchOp.EQ, "contract_shared")]
        a, b = _series("contract_shared", instance="h9:1", job="s"), _series("contract_shared", instance="h9:2", job="s")
        await writer.write(_scrape("s/h9:1", T0, [(a, 1.0)]))
        for _ in range(2):
            assert [d.series.get("instance") for d in await reader.select(ms, T0 - 1, T0 + 1)] == ["h9:1"]
        await writer.write(_scrape("s/h9:2", T0, [(b, 2.0)]))
        assert [d.series.get("instance") for d in await reader.select(ms, T0 - 1, T0 + 1)] == ["h9:1", "h9:2"]
    finally:
        await writer.close()
        await reader.close()


async def test_sqlite_survives_reopen(tmp_path) -> None:
    path = tmp_path / "reopen.db"
    s = _series("contract_reopen", instance="h7:1", job="x")
    first = await SQLiteStorage.open(path)
    await first.write(_scrape("x/h7:1", T0, [(s, 7.0)]))
    await first.close()
    again = await SQLiteStorage.open(path)
    got = await again.select([Matcher("__name__", MatchOp.EQ, "contract_reopen")], T0 - 1, T0 + 1)
    await again.close()
    assert got[0].values.tolist() == [7.0]
    assert os.path.getsize(path) > 0


async def test_sqlite_converts_a_row_per_sample_database(tmp_path) -> None:
    """A database written before raw chunks (one ``raw_samples`` row per sample) opens with
    every sample readable, bit for bit, and the old table gone."""
    import json
    import sqlite3

    path = tmp_path / "old.db"
    s = _series("contract_old", instance="h9:1", job="x")
    samples = [(T0 - DAY_MS + i * 15_000, float(i)) for i in range(10)] + [(T0 + 5, STALE_NAN)]
    con = sqlite3.connect(path)
    con.executescript(
        "CREATE TABLE series (series_id INTEGER PRIMARY KEY, metric TEXT NOT NULL, labels TEXT NOT NULL,"
        " target TEXT NOT NULL DEFAULT '');"
        "CREATE TABLE series_day (day INTEGER NOT NULL, metric TEXT NOT NULL, series_id INTEGER NOT NULL,"
        " PRIMARY KEY (day, metric, series_id)) WITHOUT ROWID;"
        "CREATE TABLE raw_samples (series_id INTEGER NOT NULL, day INTEGER NOT NULL, ts INTEGER NOT NULL,"
        " value INTEGER NOT NULL, PRIMARY KEY (series_id, day, ts)) WITHOUT ROWID;"
    )
    con.execute("INSERT INTO series VALUES (?,?,?,?)", (s.id, s.metric, json.dumps(s.labels), "x/h9:1"))
    for day in {t // DAY_MS for t, _ in samples}:
        con.execute("INSERT INTO series_day VALUES (?,?,?)", (day, s.metric, s.id))
    con.executemany(
        "INSERT INTO raw_samples VALUES (?,?,?,?)", [(s.id, t // DAY_MS, t, float_bits(v)) for t, v in samples]
    )
    con.commit()
    con.close()
    st = await SQLiteStorage.open(path)
    try:
        got = await st.select([Matcher("__name__", MatchOp.EQ, "contract_old")], T0 - 2 * DAY_MS, T0 + DAY_MS)
    finally:
        await st.close()
    assert got[0].timestamps.tolist() == [t for t, _ in samples]
    assert [float_bits(float(v)) for v in got[0].values] == [float_bits(v) for _, v in samples]
    con = sqlite3.connect(path)
    tables = {n for (n,) in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    con.close()
    assert "raw_samples" not in tables and "raw_chunks" in tables
