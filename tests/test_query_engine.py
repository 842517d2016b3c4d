"""Engine basics over MemoryStorage: selectors, staleness, errors, limits, result shapes."""

from __future__ import annotations

import math

import numpy as np
import pytest

from query.engine import Engine
from query.errors import ParseError, QueryError, QueryLimitError
from query.memory import MemoryStorage
from storage.model import STALE_NAN, Series, make_labels


def _storage() -> MemoryStorage:
    st = MemoryStorage()
    for h in range(3):
        for mode in ("user", "idle"):
            s = Series.of(make_labels("cpu", host=f"h{h}", mode=mode))
            ts = np.arange(0, 3_600_000, 15_000)
            st.add_series(s, ts, np.arange(len(ts)) * 1.5 * (h + 1))
    return st


async def test_instant_selector_and_rate() -> None:
    eng = Engine(_storage())
    r = await eng.instant_query("cpu{host='h1'}", 1_800_000)
    assert r.type == "vector"
    assert [s.labels["mode"] for s in r.series] == ["idle", "user"]
    assert r.series[0].values[0] == 120 * 3.0
    r = await eng.instant_query("sum by (mode) (rate(cpu[5m]))", 1_800_000)
    assert {s.labels["mode"]: round(float(s.values[0]), 9) for s in r.series} == {"idle": 0.6, "user": 0.6}


async def test_range_query_shape() -> None:
    eng = Engine(_storage())
    r = await eng.range_query("sum(rate(cpu[5m]))", 600_000, 1_200_000, 60_000)
    assert r.type == "matrix" and len(r.series) == 1
    assert r.series[0].timestamps.tolist() == list(range(600_000, 1_200_001, 60_000))
    np.testing.assert_allclose(r.series[0].values, 1.2)


async def test_staleness_ends_lookback() -> None:
    st = MemoryStorage()
    s = Series.of(make_labels("up", job="a"))
    st.add_series(s, np.array([0, 15_000, 30_000]), np.array([1.0, 1.0, STALE_NAN]))
    eng = Engine(st)
    assert len((await eng.instant_query("up", 20_000)).series) == 1
    assert (await eng.instant_query("up", 40_000)).series == []
    # Without the marker the sample would be visible for 5 minutes.
    assert len((await eng.instant_query("up offset 20s", 40_000)).series) == 1


async def test_parse_error_has_position() -> None:
    eng = Engine(MemoryStorage())
    with pytest.raises(ParseError) as exc:
        await eng.instant_query("sum(rate(foo[5m])", 0)
    assert exc.value.position == 3
    assert str(exc.value).startswith("1:4: parse error")
    with pytest.raises(ParseError) as exc:
        await eng.instant_query("foo bar", 0)
    assert exc.value.position == 4


async def test_sample_limit() -> None:
    eng = Engine(_storage(), max_samples=100)
    with pytest.raises(QueryLimitError, match="too many samples"):
        await eng.instant_query("count_over_time(cpu[1h])", 3_600_000)


async def test_range_query_rejects_matrix() -> None:
    eng = Engine(_storage())
    with pytest.raises(QueryError, match="range vector"):
        await eng.range_query("cpu[5m]", 0, 60_000, 15_000)


async def test_negative_at_and_offset() -> None:
    st = MemoryStorage()
    s = Series.of(make_labels("m"))
    st.add_series(s, np.array([-100_000, 0, 100_000]), np.array([1.0, 2.0, 3.0]))
    eng = Engine(st)
    r = await eng.instant_query("m @ -50", 100_000)
    assert r.series[0].values[0] == 1.0
    r = await eng.instant_query("m offset -100s", 0)
    assert r.series[0].values[0] == 3.0


async def test_sample_limit_stops_long_reads_early() -> None:
    """A raw read over many days stops at the first piece that crosses the limit."""
    st = MemoryStorage()
    s = Series.of(make_labels("m"))
    ts = np.arange(0, 10 * 86_400_000, 60_000)
    st.add_series(s, ts, np.ones(len(ts)))
    eng = Engine(st, max_samples=3000, downsample=False)
    with pytest.raises(QueryLimitError):
        await eng.instant_query("count_over_time(m[10d])", 10 * 86_400_000)
    assert st.selected_samples <= 2 * 2880 + 1  # one two-day piece read, not ten days
    st.selected_samples = 0
    r = await Engine(st, downsample=False).instant_query("count_over_time(m[10d])", 10 * 86_400_000)
    assert r.series[0].values[0] == len(ts) - 1  # pieces join into one series (window is left-open)


def test_an_engine_loads_its_evaluation_modules_at_start() -> None:
    """Not in the first query, on a server's event loop (query.engine._load_evaluators); the
    compiled kernels (numba: ~150 MB of RSS) neither at start nor for a small query, but in
    the background after the first big one (query.kernels), which later queries then use."""
    import subprocess
    import sys

    code = ("import asyncio, sys, numpy as np; from query.memory import MemoryStorage; from query.engine import Engine; "
            "from query import kernels; from storage.model import Series, make_labels; "
            "before = 'query.functions' in sys.modules; st = MemoryStorage(); eng = Engine(st); "
            "print(before, all(m in sys.modules for m in ('query.functions', 'query.operators', "
            "'query.aggregations', 'query.histogram', 'query.extended', 'numpy.ma'))); "
            "ts = np.arange(0, 3_600_000, 15_000); "
            "[st.add_series(Series.of(make_labels('m', i=str(i))), ts, ts / 1e3) for i in range(100)]; "
            "asyncio.run(eng.range_query('rate(m[1m])', 0, 600_000, 15_000)); print('numba' in sys.modules); "
            "asyncio.run(eng.range_query('rate(m[1m])', 0, 3_600_000, 1_000)); "
            "[t.join() for t in __import__('threading').enumerate() if t.name == 'ringmon-query-kernels']; "
            "print(kernels.loaded() is not None)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.split() == ["False", "True", "False", "True"]


def test_flat_windows_counted_and_searched_agree() -> None:
    """``flat_windows`` counts samples among few edges or searches per window (many edges):
    both give each window's bounds as a search of its own series would."""
    from query import values as V

    rng = np.random.default_rng(7)
    for _ in range(300):
        n = int(rng.integers(1, 12))
        counts = rng.integers(0, 30, n)
        ts = np.concatenate([np.sort(rng.choice(np.arange(-40, 400), size=c, replace=False)) for c in counts])
        ts = ts.astype(np.int64)
        offsets = np.zeros(n + 1, dtype=np.int64)
        offsets[1:] = np.cumsum(counts)
        steps = int(rng.integers(1, 60))  # (few steps count, many search)
        hi_e = np.sort(rng.integers(-50, 420, steps)).astype(np.int64)
        lo_e = hi_e - int(rng.integers(0, 150))
        lo, hi = V.flat_windows(ts, offsets, lo_e, hi_e)
        runs = list(zip(offsets[:-1], offsets[1:], strict=True))
        want_lo = np.array([np.searchsorted(ts[a:b], lo_e, "right") + a for a, b in runs])
        want_hi = np.array([np.searchsorted(ts[a:b], hi_e, "right") + a for a, b in runs])
        np.testing.assert_array_equal(lo, want_lo.reshape(n, steps))
        np.testing.assert_array_equal(hi, want_hi.reshape(n, steps))


async def test_a_steps_sum_does_not_depend_on_the_steps_computed_with_it() -> None:
    """``sum``/``avg`` add a step plainly or compensated by that step's own values, so a
    step's answer in a range query (or a range-cache chunk) is bit for bit its instant
    answer, and steps of cancelling magnitudes get Prometheus's compensated sum."""
    st = MemoryStorage()
    rng = np.random.default_rng(11)
    ts = np.arange(0, 600_000, 15_000)
    stored: dict[str, np.ndarray] = {}
    for i in range(12):
        vals = rng.normal(size=len(ts)) * 10 + 0.1 * i
        if i in (5, 9):  # (+1e20 and -1e20 at steps 10-15: a plain sum loses what lies between)
            vals[10:16] = 1e20 if i == 5 else -1e20
        stored[str(i)] = vals
        st.add_series(Series.of(make_labels("m", i=str(i), g=str(i % 3))), ts, vals)
    eng = Engine(st)
    for q in ("sum by (g) (m)", "avg by (g) (m)", "sum(m)", "avg(m)"):
        r = await eng.range_query(q, 0, 585_000, 15_000)
        by_step = {
            tuple(sorted(s.labels.items())): dict(zip(s.timestamps.tolist(), s.values.tolist(), strict=True))
            for s in r.series
        }
        for t in range(0, 600_000, 15_000):
            for s in (await eng.instant_query(q, t)).series:
                assert by_step[tuple(sorted(s.labels.items()))][t] == float(s.values[0]), (q, t)
    # Where the big values cancel, the small ones survive, as in a compensated sum.
    r = await eng.instant_query("sum(m)", 150_000)
    exact = math.fsum(float(v[10]) for v in stored.values())
    assert abs(float(r.series[0].values[0]) - exact) <= 1e-9 * abs(exact)


def test_group_ids_are_remembered_for_the_same_label_objects_only() -> None:
    """``group_ids`` keeps the groups of the label list grouped last (a refresh groups the very
    same label objects): the same objects again give the kept ids; equal labels made anew, or
    one label set changed, are grouped again, and the answer follows the labels."""
    from query import aggregations
    from query import parse as P

    node = P.parse("sum by (g) (m)")
    assert isinstance(node, P.Aggregate)
    labels = [(("__name__", "m"), ("g", str(i % 5)), ("i", str(i))) for i in range(300)]
    keys, gid = aggregations.group_ids(node, labels)
    assert keys == [(("g", str(g)),) for g in range(5)] and gid.tolist() == [i % 5 for i in range(300)]
    assert not gid.flags.writeable  # (kept: never changed in place)
    again_keys, again = aggregations.group_ids(node, list(labels))
    assert again is gid and again_keys == keys and again_keys is not keys
    copied = [tuple((k, v) for k, v in lab) for lab in labels]  # (equal, other objects)
    _, regrouped = aggregations.group_ids(node, copied)
    assert regrouped is not gid and regrouped.tolist() == gid.tolist()
    changed = list(copied)
    changed[0] = (("__name__", "m"), ("g", "new"), ("i", "0"))
    keys2, gid2 = aggregations.group_ids(node, changed)
    assert keys2[0] == (("g", "new"),) and gid2.tolist() == [0] + [i % 5 or 5 for i in range(1, 300)]


def test_compiled_group_sums_equal_numpy(monkeypatch) -> None:
    """``sum``/``avg`` by groups through the compiled kernel (``kernels_numba.group_sums``) give
    bit for bit the NumPy form's values, presence and labels: groups interleaved, values absent
    here and there, -0.0 first in a group, and steps that are not well conditioned (NaN, +Inf,
    cancelling magnitudes: both take the compensated sums)."""
    from query import aggregations, kernels
    from query.values import InstantVector

    compiled = kernels.load()
    assert compiled is not None
    rng = np.random.default_rng(3)
    n, steps = 400, 33
    values = rng.normal(size=(n, steps)) * 100
    values[0, 2] = -0.0
    present = rng.random((n, steps)) > 0.2
    present[:, 5] = False
    # Groups of ~200 rows (NumPy's pairwise sum splits them), ~50 (eight running sums), 1 and 3.
    gid = np.where(rng.random(n) < 0.5, 0, rng.integers(1, 5, n))
    gid[:7] = [0, 1, 2, 3, 4, 5, 6]  # (numbered in order of first appearance, as eval_aggregate does)
    gid[gid == 6] = 4
    gid[[10, 20]] = 6
    keys = [(("g", str(g)),) for g in range(7)]
    cases = [values.copy()]
    for bad in (np.nan, np.inf, 1e20):
        v = values.copy()
        v[7, 9] = bad
        cases.append(v)
    for v in cases:
        for op in ("sum", "avg"):
            vec = InstantVector(list(map(str, range(n))), v, present)
            monkeypatch.setattr(kernels, "_module", None)
            with np.errstate(all="ignore"):  # (the compensated sums of +Inf: as the engine evaluates)
                want = aggregations._simple(op, vec, gid, keys, steps)
                monkeypatch.setattr(kernels, "_module", compiled)
                got = aggregations._simple(op, vec, gid, keys, steps)
            assert got.labels == want.labels and np.array_equal(got.present, want.present)
            assert np.where(got.present, got.values, 0.0).tobytes() == np.where(want.present, want.values, 0.0).tobytes()


def test_compiled_raw_rate_equals_numpy(monkeypatch) -> None:
    """rate/increase/delta over raw samples through the compiled kernel (windows found by a
    walk over each series, ``kernels_numba.raw_rate``) give bit for bit the NumPy form's
    values and presence (``windows_all`` then the batched compute): irregular samples, resets
    (none, one, at a series' first sample), NaN and +Inf values (a drop from +Inf makes its
    own windows' increase infinite, not every later series' NaN), empty and one-sample series,
    windows shorter and longer than the scrape interval, one step and many."""
    from query import kernels
    from query.functions import range as R
    from query.functions.rate import RANGE_FUNCS
    from query.values import RangeVector

    compiled = kernels.load()
    assert compiled is not None
    rng = np.random.default_rng(7)
    ts_list, v_list = [], []
    for i in range(30):
        count = 0 if i == 3 else 1 if i == 4 else int(rng.integers(2, 80))
        ts = np.sort(rng.choice(np.arange(0, 900_000, 1_000), count, replace=False)).astype(np.int64)
        v = np.cumsum(rng.random(count) * 9) + 1e13 * (i % 3)  # (drops across series: big)
        if i % 5 == 1 and count > 10:
            v[count // 2 :] -= v[count // 2] - 1  # a reset
        if i == 28:
            v[5] = np.nan
        if i == 12:
            v[6] = np.inf  # (then a drop from +Inf: +Inf in its windows only, no NaN in later series')
        ts_list.append(ts)
        v_list.append(v)
    for drops in (True, False):
        vs = v_list if drops else [np.maximum.accumulate(np.nan_to_num(v)) for v in v_list]
        for range_ms, ends in (
            (60_000, np.arange(100_000, 900_000, 15_000)),
            (5_000, np.arange(0, 910_000, 7_000)),
            (300_000, np.array([600_000])),
        ):
            rv = RangeVector.from_lists([str(i) for i in range(len(ts_list))], ts_list, vs, ends.astype(np.int64),
                                        range_ms, ends.astype(np.int64))
            for name in ("rate", "increase", "delta"):
                fn = RANGE_FUNCS[name].batched
                assert fn is not None
                with np.errstate(all="ignore"):
                    monkeypatch.setattr(kernels, "_module", None)
                    want = R._compute(rv, fn, [])
                    monkeypatch.setattr(kernels, "_module", compiled)
                    got = R._compute(rv, fn, [])
                assert np.array_equal(got[1], want[1]), (name, range_ms)
                assert np.where(got[1], got[0], 0.0).tobytes() == np.where(want[1], want[0], 0.0).tobytes(), (name, range_ms)
                assert not np.isnan(want[0][13:28][want[1][13:28]]).any()
