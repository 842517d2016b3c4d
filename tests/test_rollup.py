"""Rollup aggregates against a brute-force scalar computation; hour-from-minutes consistency."""

from __future__ import annotations

import bisect
import math
import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bench.rollup import node_exporter_host
from storage.base import HOUR_MS, MINUTE_MS
from storage.model import STALE_NAN, is_stale
from storage.rollup import DEFAULT_MAX_GAP_MS, Rollup, rollup_raw, rollup_rollup


def brute_force(ts, vals, start, end, step, max_gap=DEFAULT_MAX_GAP_MS) -> dict[int, dict[str, float]]:
    """The documented semantics, one sample at a time in plain Python."""
    samples = sorted(zip((int(t) for t in ts), (float(v) for v in vals), strict=True), key=lambda p: p[0])
    samples = [(t, v) for t, v in samples if t < end and not is_stale(v)]
    buckets: dict[int, dict[str, float]] = {}
    for t, v in samples:
        if t < start:
            continue
        b = start + (t - start) // step * step
        agg = buckets.get(b)
        if agg is None:
            agg = buckets[b] = {"count": 0.0, "sum": 0.0, "min": v, "max": v, "last": v, "increase": 0.0,
                                "first": v, "first_ts": float(t), "last_ts": float(t), "correction": 0.0}  # fmt: skip
        else:
            if v < agg["min"] or (math.isnan(agg["min"]) and not math.isnan(v)):
                agg["min"] = v
            if v > agg["max"] or (math.isnan(agg["max"]) and not math.isnan(v)):
                agg["max"] = v
            if v < agg["last"]:
                agg["correction"] += agg["last"]
            agg["last"] = v
            agg["last_ts"] = float(t)
        agg["count"] += 1
        agg["sum"] += v
    prev = None
    for t, v in samples:
        if not math.isfinite(v):
            continue
        if prev is not None and t >= start and t - prev[0] <= max_gap:
            b = start + (t - start) // step * step
            buckets[b]["increase"] += (v - prev[1]) if v >= prev[1] else v
        prev = (t, v)
    return buckets


def prom_extrapolated_rate(
    samples: list[tuple[int, float]], range_start: int, range_end: int, is_counter: bool, is_rate: bool
) -> float | None:
    """Prometheus 3.x ``extrapolatedRate`` (promql/functions.go) over a window's float samples
    (stale markers already dropped), transcribed one sample at a time; None: fewer than two."""
    if len(samples) < 2:
        return None
    (ft, fv), (lt, lv) = samples[0], samples[-1]
    result = lv - fv
    if is_counter:
        prev = fv
        for _, v in samples[1:]:
            if v < prev:
                result += prev
            prev = v
    to_start, to_end = (ft - range_start) / 1000, (range_end - lt) / 1000
    sampled = (lt - ft) / 1000
    avg = sampled / (len(samples) - 1)
    if to_start >= avg * 1.1:
        to_start = avg / 2
    if is_counter and result > 0 and fv >= 0:
        to_zero = sampled * (fv / result)
        if to_zero < to_start:
            to_start = to_zero
    if to_end >= avg * 1.1:
        to_end = avg / 2
    factor = (sampled + to_start + to_end) / sampled
    if is_rate:
        factor /= (range_end - range_start) / 1000
    return result * factor


def as_dict(r: Rollup) -> dict[int, dict[str, float]]:
    return {int(t): {k: float(c[i]) for k, c in r.columns().items()} for i, t in enumerate(r.timestamps)}


def same_bits(a: float, b: float) -> bool:
    return struct.pack("<d", a) == struct.pack("<d", b)


def assert_equal_rollups(got: dict, want: dict, exact_sums: bool = True) -> None:
    assert sorted(got) == sorted(want)
    for b in want:
        for k in want[b]:
            g, w = got[b][k], want[b][k]
            if exact_sums or k not in ("sum", "increase", "correction"):
                assert same_bits(g, w), (b, k, g, w)
            else:
                assert g == pytest.approx(w, rel=1e-9, abs=1e-6, nan_ok=True), (b, k, g, w)


value = st.one_of(
    st.integers(0, 1000).map(float),
    st.sampled_from([STALE_NAN, float("nan"), -0.0, 0.0, float("inf"), float("-inf")]),
    st.floats(-1e6, 1e6),
)


@st.composite
def counter_like(draw):
    """A counter with increments, resets, gaps, NaN and stale markers, plus noise values."""
    n = draw(st.integers(0, 200))
    t = draw(st.integers(0, 10)) * MINUTE_MS - draw(st.integers(0, 10 * MINUTE_MS))
    ts, vals = [], []
    v = float(draw(st.integers(0, 100)))
    for _ in range(n):
        t += draw(st.sampled_from([1, 1000, 10_000, 15_000, 30_000, 59_999, 60_000, 200_000, 400_000]))
        kind = draw(st.integers(0, 19))
        if kind == 0:
            v = float(draw(st.integers(0, 5)))  # reset
            out = v
        elif kind == 1:
            out = STALE_NAN
        elif kind == 2:
            out = draw(value)
        else:
            v += draw(st.integers(0, 50))
            out = v
        ts.append(t)
        vals.append(out)
    return np.array(ts, dtype=np.int64), np.array(vals, dtype=np.float64)


@settings(max_examples=200, deadline=None)
@given(series=counter_like(), window=st.integers(0, 3))
def test_minute_rollup_equals_brute_force(series, window):
    ts, vals = series
    start = window * 10 * MINUTE_MS
    end = start + 30 * MINUTE_MS
    got = rollup_raw(ts, vals, start, end, MINUTE_MS)
    assert_equal_rollups(as_dict(got), brute_force(ts, vals, start, end, MINUTE_MS))


@settings(max_examples=100, deadline=None)
@given(series=counter_like(), perm_seed=st.integers(0, 2**32 - 1))
def test_input_order_does_not_matter(series, perm_seed):
    ts, vals = series
    perm = np.random.default_rng(perm_seed).permutation(len(ts))
    a = rollup_raw(ts, vals, 0, 60 * MINUTE_MS)
    b = rollup_raw(ts[perm], vals[perm], 0, 60 * MINUTE_MS)
    assert a.bit_equal(b)


@settings(max_examples=150, deadline=None)
@given(series=counter_like())
def test_hour_from_minutes_equals_hour_from_raw(series):
    ts, vals = series
    start, end = 0, 3 * HOUR_MS
    minutes = rollup_raw(ts, vals, start, end, MINUTE_MS)
    from_minutes = rollup_rollup(minutes, HOUR_MS)
    from_raw = rollup_raw(ts, vals, start, end, HOUR_MS)
    assert_equal_rollups(as_dict(from_minutes), as_dict(from_raw), exact_sums=False)
    assert_equal_rollups(as_dict(from_raw), brute_force(ts, vals, start, end, HOUR_MS))


@settings(max_examples=100, deadline=None)
@given(series=counter_like())
def test_increases_of_adjacent_windows_add_up(series):
    """Splitting a range into windows neither loses nor double-counts an increment."""
    ts, vals = series
    whole = rollup_raw(ts, vals, 0, 2 * HOUR_MS, HOUR_MS)
    parts = [rollup_raw(ts, vals, w * 20 * MINUTE_MS, (w + 1) * 20 * MINUTE_MS, MINUTE_MS) for w in range(6)]
    total_parts = sum(float(p.increase.sum()) for p in parts)
    assert total_parts == pytest.approx(float(whole.increase.sum()))
    assert sum(len(p) for p in parts) == len(rollup_raw(ts, vals, 0, 2 * HOUR_MS, MINUTE_MS))


def test_integer_data_hour_from_minutes_is_bit_exact():
    rng = np.random.default_rng(3)
    for ts, vals in node_exporter_host(rng, 1080, 1_700_000_000_000 // HOUR_MS * HOUR_MS)[180:330]:
        start = int(ts[0]) // HOUR_MS * HOUR_MS
        end = start + 3 * HOUR_MS
        from_minutes = rollup_rollup(rollup_raw(ts, vals, start, end, MINUTE_MS), HOUR_MS)
        from_raw = rollup_raw(ts, vals, start, end, HOUR_MS)
        assert from_minutes.bit_equal(from_raw)


def test_counter_reset_and_stale_marker():
    m = MINUTE_MS
    ts = np.array([0, 20_000, 40_000, m, m + 20_000, m + 40_000, 2 * m], dtype=np.int64)
    vals = np.array([10, 15, 3, 8, STALE_NAN, 20, 25], dtype=np.float64)
    r = rollup_raw(ts, vals, 0, 3 * m)
    assert r.timestamps.tolist() == [0, m, 2 * m]
    assert r.count.tolist() == [3, 2, 1]  # the stale marker is not a value
    # 10->15 (+5), 15->3 reset (+3); 3->8 (+5); 8->(stale)->20 (+12); 20->25 (+5)
    assert r.increase.tolist() == [8, 17, 5]
    assert r.last.tolist() == [3, 20, 25]
    assert r.min.tolist() == [3, 8, 25] and r.max.tolist() == [15, 20, 25]


def test_carry_before_window_and_gap_limit():
    m = MINUTE_MS
    ts = np.array([-30_000, 30_000, 30_000 + DEFAULT_MAX_GAP_MS + 1], dtype=np.int64)
    r = rollup_raw(ts, np.array([100.0, 130.0, 150.0]), 0, 10 * m)
    # -30s -> 30s crosses the window start: attributed to minute 0; the last pair is too far apart.
    assert r.increase.tolist() == [30.0, 0.0]
    assert r.count.tolist() == [1.0, 1.0]


def test_bad_range_is_rejected():
    with pytest.raises(ValueError, match="bad rollup range"):
        rollup_raw(np.array([1]), np.array([1.0]), 30_000, 60_000, MINUTE_MS)


def test_choose_resolution_by_age_and_step():
    from storage.base import DAY_MS, Resolution
    from storage.rollup import choose_resolution

    now = 1_700_000_000_000
    assert choose_resolution(now - 6 * DAY_MS, now) is Resolution.RAW
    assert choose_resolution(now - 8 * DAY_MS, now) is Resolution.MINUTE
    assert choose_resolution(now - 29 * DAY_MS, now) is Resolution.MINUTE
    assert choose_resolution(now - 31 * DAY_MS, now) is Resolution.HOUR
    assert choose_resolution(now - DAY_MS, now, step_ms=5 * MINUTE_MS) is Resolution.MINUTE
    assert choose_resolution(now - DAY_MS, now, step_ms=HOUR_MS) is Resolution.HOUR
    assert choose_resolution(now - 40 * DAY_MS, now, step_ms=15_000) is Resolution.HOUR


@settings(max_examples=150, deadline=None)
@given(
    series=counter_like(),
    bucket=st.sampled_from([MINUTE_MS, 5 * MINUTE_MS]),
    width=st.integers(1, 12),
    hourly=st.booleans(),
)
def test_rate_parts_of_whole_buckets_give_prometheus_rate(series, bucket, width, hourly):
    """rate/increase/delta over windows of whole buckets, from the buckets' rate aggregates
    (``query.functions.rollup_rate`` and the engine's extrapolation), equal Prometheus's
    computation over the raw samples of the window (resets inside buckets and across their edges, gaps, NaN,
    infinities, stale markers); 1 h buckets made from minute rows too."""
    from query.functions.rate import _extrapolate
    from query.functions.rollup_rate import window_parts

    ts, vals = series
    start, end = -HOUR_MS, 4 * HOUR_MS
    if hourly:
        bucket = HOUR_MS
        width = min(width, 3)
        r = rollup_rollup(rollup_raw(ts, vals, start, end, MINUTE_MS), HOUR_MS)
    else:
        r = rollup_raw(ts, vals, start, end, bucket)
    keep = ~np.array([is_stale(v) for v in vals.tolist()], dtype=bool) if len(vals) else np.zeros(0, dtype=bool)
    order = np.argsort(ts[keep], kind="stable")
    samples = list(zip(ts[keep][order].tolist(), vals[keep][order].tolist(), strict=True))
    sample_ts = [a for a, _ in samples]
    rng = width * bucket
    times = np.arange(start + rng - 1, end, bucket, dtype=np.int64)  # every window is whole buckets
    times = times[:: max(1, len(times) // 40)]  # (40 windows an example: the reference is a Python loop)
    ends = r.timestamps + bucket - 1
    lo = np.searchsorted(ends, times - rng, "right")[None, :]
    hi = np.searchsorted(ends, times, "right")[None, :]
    offsets = np.array([0, len(r)], dtype=np.int64)
    for is_counter, is_rate in ((True, True), (True, False), (False, False)):
        with np.errstate(invalid="ignore", divide="ignore"):  # (as the engine evaluates)
            w = window_parts(r.columns(), offsets, lo, hi, is_counter)
            got, ok = _extrapolate(w.result, w.ok, w.n, w.ft, w.lt, w.fv, times[None, :], rng, is_counter, is_rate)
        assert w.known.all()
        for k, t in enumerate(times.tolist()):
            window = samples[bisect.bisect_right(sample_ts, t - rng) : bisect.bisect_right(sample_ts, t)]
            want = prom_extrapolated_rate(window, t - rng, t, is_counter, is_rate)
            assert bool(ok[0, k]) == (want is not None), (t, window)
            if want is not None:
                g = float(got[0, k])
                assert g == pytest.approx(want, rel=1e-9, abs=1e-9, nan_ok=True) or same_bits(g, want), (t, g, want)


def test_rate_parts_of_a_bucket_written_before_them_are_not_known():
    r = rollup_raw(np.array([0, 20_000, 40_000, 70_000]), np.array([5.0, 3.0, 4.0, 9.0]), 0, 2 * MINUTE_MS)
    assert r.correction.tolist() == [5.0, 0.0] and r.first.tolist() == [5.0, 9.0]
    assert r.first_ts.tolist() == [0.0, 70_000.0] and r.last_ts.tolist() == [40_000.0, 70_000.0]
    from query.functions.rollup_rate import window_parts

    cols = r.columns()
    cols["correction"] = np.array([np.nan, 0.0])
    w = window_parts(cols, np.array([0, 2]), np.array([[0, 1]]), np.array([[2, 2]]), True)
    assert w.known.tolist() == [[False, True]]


def test_rate_parts_on_a_full_grid_equal_the_flat_form():
    """``window_parts_grid`` (every series has every bucket: windows are column slices) gives
    what ``window_parts`` gives over the same rows."""
    from query.functions.rollup_rate import window_parts, window_parts_grid

    rng = np.random.default_rng(11)
    start, nb = 0, 180
    rows = []
    for i in range(4):
        ts = np.arange(7_000 + i * 1_000, nb * MINUTE_MS, 15_000, dtype=np.int64)
        v = np.cumsum(rng.integers(0, 20, ts.size)).astype(np.float64) / 8
        for r in rng.integers(1, ts.size, 3):
            v[r:] -= v[r] - rng.integers(0, 3)  # resets inside minutes and on their edges
        rows.append(rollup_raw(ts, v, start, nb * MINUTE_MS, MINUTE_MS))
    assert all(len(r) == nb for r in rows)
    cols = {k: np.concatenate([r.columns()[k] for r in rows]) for k in rows[0].columns()}
    offsets = np.arange(0, 5 * nb, nb, dtype=np.int64)
    for width in (1, 5, 60):
        lo = np.arange(0, nb - width + 1, 3)
        hi = lo + width
        for is_counter in (True, False):
            g = window_parts_grid(cols, 4, nb, lo, hi, is_counter)
            assert g is not None
            f = window_parts(cols, offsets, offsets[:-1, None] + lo[None, :], offsets[:-1, None] + hi[None, :], is_counter)
            for name in ("n", "ft", "lt", "fv", "ok"):
                np.testing.assert_array_equal(getattr(g, name), getattr(f, name), err_msg=name)
            np.testing.assert_allclose(g.result, f.result, rtol=1e-12, atol=1e-9)


def test_rate_over_a_full_grid_in_blocks_equals_one_pass(monkeypatch):
    """rate/increase/delta over a full grid, computed a block of series at a time (series
    without resets take the no-correction shortcut, a block with one takes the joined
    corrections), give bit for bit what one pass over all series gives, and what the flat
    form gives for the series without resets."""
    from types import SimpleNamespace

    from query import kernels
    from query.functions import rate
    from query.functions.rollup_rate import window_parts, window_parts_grid

    rng = np.random.default_rng(5)
    nb, n = 60, 7
    rows = []
    for i in range(n):
        ts = np.arange(3_000 + i * 1_000, nb * MINUTE_MS, 15_000, dtype=np.int64)
        v = np.cumsum(rng.integers(0, 20, ts.size)).astype(np.float64) / 8
        if i == 4:
            v[50:] -= v[50] - 1  # a reset: that block joins corrections
        rows.append(rollup_raw(ts, v, 0, nb * MINUTE_MS, MINUTE_MS))
    cols = {k: np.concatenate([r.columns()[k] for r in rows]) for k in rows[0].columns()}
    lo = np.arange(0, nb - 4)
    hi = lo + 5
    rv = SimpleNamespace(ends=(hi * MINUTE_MS - 1).astype(np.int64), range_ms=5 * MINUTE_MS)
    grid = SimpleNamespace(n=n, nb=nb, lo=lo, hi=hi, full=True)
    for is_counter, is_rate in ((True, True), (True, False), (False, False)):
        monkeypatch.setattr(kernels, "_module", None)  # (the NumPy form)
        monkeypatch.setattr(rate, "GRID_BLOCK_CELLS", 10**9)
        one = rate._grid_blocks(rv, cols, grid, is_counter, is_rate)
        monkeypatch.setattr(rate, "GRID_BLOCK_CELLS", 2 * nb)
        blocks = rate._grid_blocks(rv, cols, grid, is_counter, is_rate)
        assert one is not None and blocks is not None
        assert one[0].tobytes() == blocks[0].tobytes() and np.array_equal(one[1], blocks[1])
        # the no-reset shortcut (series 0..3) against the flat form
        part = {k: c[: 4 * nb] for k, c in cols.items()}
        g = window_parts_grid(part, 4, nb, lo, hi, is_counter)
        offsets = np.arange(0, 5 * nb, nb, dtype=np.int64)
        f = window_parts(part, offsets, offsets[:-1, None] + lo[None, :], offsets[:-1, None] + hi[None, :], is_counter)
        assert g is not None and g.result.tobytes() == np.ascontiguousarray(f.result).tobytes()


def test_rate_over_a_full_grid_compiled_equals_numpy(monkeypatch):
    """The compiled kernel (``query.kernels_numba.grid_rate``) gives, bit for bit, the NumPy
    form's values and presence: counters with resets inside buckets and across their edges,
    -0.0 and non-whole counts, gauges, windows moving by one bucket, by three, and irregularly,
    windows of one bucket (none holds two samples: absent), a NaN or infinite correction and
    a drop from +Inf (both forms decline: the flat form answers)."""
    from types import SimpleNamespace

    from query import kernels
    from query.functions import rate

    compiled = kernels.load()
    assert compiled is not None
    rng = np.random.default_rng(17)
    nb, n = 50, 6
    rows = []
    for i in range(n):
        ts = np.arange(2_000 + i * 1_500, nb * MINUTE_MS, 15_000, dtype=np.int64)
        v = np.cumsum(rng.integers(0, 20, ts.size)).astype(np.float64) / 8
        if i in (1, 4):
            for r in rng.integers(1, ts.size, 3):
                v[r:] -= v[r] - rng.integers(0, 3)  # resets inside minutes and on their edges
        if i == 5:
            v = 100 + rng.normal(0, 30, ts.size)  # a gauge: drops everywhere
        rows.append(rollup_raw(ts, v, 0, nb * MINUTE_MS, MINUTE_MS))
    base = {k: np.concatenate([r.columns()[k] for r in rows]) for k in rows[0].columns()}
    odd = dict(base, correction=base["correction"].copy(), count=base["count"].copy())
    odd["correction"][3] = -0.0
    odd["count"][7] += 0.5
    cases = [base, odd]
    for bad in (np.nan, np.inf):
        c = dict(base, correction=base["correction"].copy())
        c["correction"][nb + 9] = bad
        cases.append(c)
    c = dict(base, last=base["last"].copy())
    c["last"][2 * nb + 9] = np.inf  # (a drop from +Inf across the edge: the joined correction is +Inf)
    cases.append(c)
    windows = []
    for width, stride in ((5, 1), (5, 3), (1, 1), (12, 2)):
        lo = np.arange(0, nb - width + 1, stride)
        windows.append((lo, lo + width))
    lo = np.sort(rng.integers(0, nb - 4, 30))
    windows.append((lo, lo + rng.integers(1, 5, lo.size)))
    for cols in cases:
        for lo, hi in windows:
            rv = SimpleNamespace(ends=(hi * MINUTE_MS - 1).astype(np.int64), range_ms=5 * MINUTE_MS)
            grid = SimpleNamespace(n=n, nb=nb, lo=lo, hi=hi, full=True)
            for is_counter, is_rate in ((True, True), (True, False), (False, False)):
                monkeypatch.setattr(kernels, "_module", None)
                with np.errstate(all="ignore"):
                    want = rate._grid_blocks(rv, cols, grid, is_counter, is_rate)
                monkeypatch.setattr(kernels, "_module", compiled)
                got = rate._grid_blocks(rv, cols, grid, is_counter, is_rate)
                assert (got is None) == (want is None)
                if want is not None and got is not None:
                    assert np.array_equal(got[1], want[1])
                    assert np.where(got[1], got[0], 0.0).tobytes() == np.where(want[1], want[0], 0.0).tobytes()


def test_rate_over_rollups_off_the_grid_compiled_equals_numpy(monkeypatch):
    """rate/increase/delta over rollup buckets that are not a full grid (series missing
    buckets, one with none, others starting late), through the compiled kernel
    (``kernels_numba.flat_rate``: the windows and ``window_parts`` in one walk per series)
    give bit for bit the NumPy form's values and presence: resets, a drop from +Inf, a bucket
    written before the rate aggregates (its windows: the increases' approximation)."""
    from query import kernels
    from query.functions import range as R
    from query.functions.rate import RANGE_FUNCS
    from query.values import RangeVector

    compiled = kernels.load()
    assert compiled is not None
    rng = np.random.default_rng(23)
    nb, res = 60, MINUTE_MS
    labels, ts_list, cols_list = [], [], []
    for i in range(8):
        ts = np.arange(2_000 + i * 1_300, nb * res, 15_000, dtype=np.int64)
        v = np.cumsum(rng.random(ts.size) * 7) + 1e9 * (i % 2)
        if i in (1, 5):
            v[ts.size // 2 :] -= v[ts.size // 2] - 1.5  # a reset
        if i == 3:
            v[40] = np.inf  # (then a drop from +Inf)
        r = rollup_raw(ts, v, 0, nb * res, res)
        keep = np.ones(len(r), dtype=bool)
        keep[rng.integers(0, len(r), 4)] = False  # missing buckets
        if i == 6:
            keep[:25] = False  # starts late
        if i == 7:
            keep[:] = False  # none at all
        c = {k: x[keep] for k, x in r.columns().items()}
        if i == 2:
            c["correction"] = c["correction"].copy()
            c["correction"][10] = np.nan  # written before the rate aggregates
        labels.append(f"s{i}")
        ts_list.append(r.timestamps[keep] + res - 1)
        cols_list.append(c)
    agg = {k: np.concatenate([c[k] for c in cols_list]) for k in cols_list[0]}
    for range_ms, step in ((5 * res, res), (10 * res, 3 * res), (2 * res, 45_000)):
        ends = np.arange(10 * res, nb * res, step, dtype=np.int64)
        rv = RangeVector.from_lists(labels, ts_list, [c["last"] for c in cols_list], ends, range_ms, ends)
        rv.agg_flat, rv.resolution_ms = agg, res
        for name in ("rate", "increase", "delta"):
            fn = RANGE_FUNCS[name].rollup
            assert fn is not None
            with np.errstate(all="ignore"):
                monkeypatch.setattr(kernels, "_module", None)
                want = R._compute(rv, fn, [])
                monkeypatch.setattr(kernels, "_module", compiled)
                got = R._compute(rv, fn, [])
            assert np.array_equal(got[1], want[1]), (name, range_ms)
            assert np.where(got[1], got[0], 0.0).tobytes() == np.where(want[1], want[0], 0.0).tobytes(), (name, range_ms)
