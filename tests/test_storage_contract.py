"""One contract for every storage backend: what is written is what is read back.

Backends: the embedded SQLite store and the real Cassandra started for the session.
"""

from __future__ import annotations

import math
import os

import numpy as np
import pytest

from storage.base import DAY_MS, Storage
from storage.matchers import Matcher, MatchOp
from storage.model import STALE_NAN, SampleBatch, Series, float_bits, is_stale, make_labels
from storage.sqlite import SQLiteStorage

BACKENDS = ["sqlite", "cassandra"]
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
    rows = [(_series("contract_bulk", instance="h6:1", job="bulk", idx=str(i)), float(i)) for i in range(500)]
    for k in range(3):
        await store.write(_scrape("bulk/h6:1", T0 + k * 15_000, rows))
    got = await store.select([Matcher("__name__", MatchOp.EQ, "contract_bulk")], T0, T0 + 60_000)
    assert len(got) == 500
    assert all(len(d) == 3 for d in got)
    total = sum(float(np.sum(d.values)) for d in got)
    assert total == 3 * sum(range(500))


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
