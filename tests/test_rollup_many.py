"""The rollup job's many-series pass equals the per-series functions, bit for bit.

``compute_window`` works a whole shard window at once (``rollup_raw_many``,
``rollup_rollup_many``, ``encode_blocks``); each series' block and buckets must be exactly
what ``encode_block``, ``rollup_raw`` and ``rollup_rollup`` make of that series alone.
"""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from bench.rollup import node_exporter_host
from storage.base import HOUR_MS, MINUTE_MS, Resolution, SeriesData
from storage.blocks import encode_block, encode_blocks
from storage.model import STALE_NAN, Series
from storage.rollup import Rollup, rollup_raw, rollup_rollup
from storage.rollup_chunks import encode_columns_many
from storage.rollup_job import (
    RawWindow,
    RollupRowsList,
    compute_minutes,
    compute_window,
    compute_window_sliced,
    fresh_carry,
    with_carry,
)

START, END = 2 * HOUR_MS, 4 * HOUR_MS
SPECIAL = [STALE_NAN, float("nan"), -0.0, 0.0, float("inf"), float("-inf"), 5e-324, 1.5, 0.25]


Reference = tuple[dict[int, tuple[int, bytes]], dict[int, Rollup], dict[int, Rollup]]


def reference(data: list[SeriesData], start: int, end: int) -> Reference:
    """The per-series computation the job made before it worked many series at once."""
    blocks: dict[int, tuple[int, bytes]] = {}
    minutes: dict[int, Rollup] = {}
    hours: dict[int, Rollup] = {}
    for sd in data:
        order = np.argsort(sd.timestamps, kind="stable")
        ts, vals = sd.timestamps[order], sd.values[order]
        inside = (ts >= start) & (ts < end)
        if inside.any():
            blocks[sd.series.id] = (int(inside.sum()), encode_block(ts[inside], vals[inside]))
        m = rollup_raw(ts, vals, start, end, MINUTE_MS)
        if len(m):
            minutes[sd.series.id] = m
            hours[sd.series.id] = rollup_rollup(m, HOUR_MS)
    return blocks, minutes, hours


def check(data: list[SeriesData], start: int = START, end: int = END) -> None:
    blocks, minutes, hours = compute_window(data, start, end)
    want_b, want_m, want_h = reference(data, start, end)
    assert {b.series_id: (b.count, b.data) for b in blocks} == want_b
    for b in blocks:
        assert b.first_ts >= start and b.last_ts < end
    for got, want in ((minutes, want_m), (hours, want_h)):
        assert [r.series_id for r in got] == sorted(want)
        for r in got:
            assert r.rollup.bit_equal(want[r.series_id]), r.series_id
    for res, got in ((Resolution.MINUTE, minutes), (Resolution.HOUR, hours)):
        assert isinstance(got, RollupRowsList)
        rollups = [r.rollup for r in got]
        assert encode_columns_many(res, rollups, (got.flat, got.bounds)) == encode_columns_many(res, rollups)
    # In slices of a few series (the job's cache-sized pieces of a big window): the same output.
    s_blocks, s_minutes, s_hours = compute_window_sliced(data, start, end, slice_samples=7)
    assert s_blocks == blocks
    for got, sliced in ((minutes, s_minutes), (hours, s_hours)):
        assert isinstance(sliced, RollupRowsList) and isinstance(got, RollupRowsList)
        assert [r.series_id for r in sliced] == [r.series_id for r in got]
        assert all(a.rollup.bit_equal(b.rollup) for a, b in zip(got, sliced, strict=True))
        assert sliced.flat.bit_equal(got.flat) and sliced.bounds.tolist() == got.bounds.tolist()
    fresh = compute_minutes(data, start, end)
    assert [r.series_id for r in fresh] == sorted(want_m)
    assert all(r.rollup.bit_equal(want_m[r.series_id]) for r in fresh)


def test_node_exporter_hosts_equal_the_per_series_results() -> None:
    rng = np.random.default_rng(7)
    data = []
    for h, n in enumerate((750, 30, 31)):  # a whole window, and scrapes of a short run
        for i, (ts, v) in enumerate(node_exporter_host(rng, n, START - 5 * MINUTE_MS, late=h == 1)):
            data.append(SeriesData(Series(1000 * h + i, ()), ts, v))
    check(data)


@st.composite
def series_set(draw: st.DrawFn) -> list[SeriesData]:
    out = []
    shared = None
    for sid in draw(st.lists(st.integers(-(2**62), 2**62), min_size=1, max_size=8, unique=True)):
        n = draw(st.integers(0, 40))
        if shared is None or len(shared) != n or draw(st.booleans()):
            t = START + draw(st.integers(-10, 130)) * MINUTE_MS
            steps = draw(st.lists(st.sampled_from([1, 999, 15_000, 60_000, 400_000]), min_size=n, max_size=n))
            shared = t + np.cumsum(np.array(steps, dtype=np.int64))
            if n and draw(st.booleans()):  # out of order, as a late write leaves a series
                shared = shared[np.random.default_rng(n).permutation(n)]
        kind = draw(st.integers(0, 3))
        if kind == 0:
            vals = [draw(st.sampled_from(SPECIAL)) for _ in range(n)]
        elif kind == 1:
            vals = [float(x) / 100 for x in np.cumsum(draw(st.lists(st.integers(0, 500), min_size=n, max_size=n)))]
        else:
            vals = draw(st.lists(st.floats(allow_nan=True) | st.sampled_from(SPECIAL), min_size=n, max_size=n))
        out.append(SeriesData(Series(sid, ()), shared.copy(), np.array(vals, dtype=np.float64)))
    return out


@settings(max_examples=150, deadline=None)
@given(data=series_set())
def test_any_series_equal_the_per_series_results(data: list[SeriesData]) -> None:
    check(data)


@settings(max_examples=100, deadline=None)
@given(data=series_set(), first=st.integers(0, 90), lengths=st.lists(st.integers(1, 12), min_size=1, max_size=4))
def test_fresh_passes_with_a_carry_equal_full_reads(data: list[SeriesData], first: int, lengths: list[int]) -> None:
    """A fresh pass reads from its start and takes what came before from the pass before it
    (``fresh_carry``, passes shorter and longer than the gap): its minutes are those of a read
    from ``max_gap_ms`` before its start."""
    gap = 5 * MINUTE_MS

    def part(lo: int, hi: int) -> RawWindow:
        cut = [(d, (d.timestamps >= lo) & (d.timestamps < hi)) for d in data]
        return RawWindow.of([SeriesData(d.series, d.timestamps[m], d.values[m]) for d, m in cut])

    lo = START + first * MINUTE_MS
    carry = fresh_carry(part(lo - gap, lo), lo, gap)
    for n in lengths:
        hi = lo + n * MINUTE_MS
        read = with_carry(carry, part(lo, hi))
        got, want = compute_minutes(read, lo, hi, gap), compute_minutes(part(lo - gap, hi), lo, hi, gap)
        assert [r.series_id for r in got] == [r.series_id for r in want]
        assert all(a.rollup.bit_equal(b.rollup) for a, b in zip(got, want, strict=True))
        carry, lo = fresh_carry(read, hi, gap), hi


def test_fresh_carry_skips_what_the_counter_chain_skips() -> None:
    """The carried sample is the last finite one: Inf, NaN and stale markers after it do not
    take its place, so the next pass's increase is 5 - 1, as a full read gives."""
    lo, gap = START, 5 * MINUTE_MS
    ts = lo - np.array([240_000, 180_000, 120_000, 60_000], dtype=np.int64)
    before = RawWindow(np.array([7]), np.array([0, 4]), ts, np.array([1.0, float("inf"), float("nan"), STALE_NAN]))
    carry = fresh_carry(before, lo, gap)
    assert carry.values.tolist() == [1.0]
    after = RawWindow(np.array([7]), np.array([0, 1]), np.array([lo + 30_000]), np.array([5.0]))
    (row,) = compute_minutes(with_carry(carry, after), lo, lo + MINUTE_MS, gap)
    assert row.rollup.increase.tolist() == [4.0]


def test_blocks_of_equal_and_mixed_lengths() -> None:
    rng = np.random.default_rng(3)
    parts = [(np.arange(n, dtype=np.int64) * 5000 + int(rng.integers(0, 3)), rng.random(n).round(int(rng.integers(0, 14))))
             for n in (1, 2, 2, 3, 30, 30, 30, 7)]
    parts.append((np.arange(30, dtype=np.int64) * 5000, np.full(30, STALE_NAN)))
    ts = np.concatenate([p[0] for p in parts])
    vals = np.concatenate([p[1] for p in parts])
    bounds = np.concatenate(([0], np.cumsum([len(p[0]) for p in parts])))
    assert encode_blocks(ts, vals, bounds) == [encode_block(t, v) for t, v in parts]


def test_raw_window_of_no_series() -> None:
    w = RawWindow.of([])
    assert w.ids.size == 0 and compute_window(w, START, END) == ([], [], [])
