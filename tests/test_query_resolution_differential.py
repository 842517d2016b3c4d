"""Answers that do not depend on the resolution that served them (issue #17), on SQLite and Cassandra.

Raw samples (counters with resets, gauges, NaN, stale markers, -0.0, outages, +-3 ms jitter so
that some samples sit exactly on minute boundaries; and a counter that starts mid-window with
resets inside a minute and across a minute's edge) are written to the store and the real
``RollupJob`` seals them and writes the 1m and 1h rollups. Every PromQL range-vector function,
plain selectors, ``timestamp()`` and subqueries are then evaluated at steps 15 s, 1 m, 5 m and
1 h (on the step grid, and one millisecond before it, where windows are whole buckets), and:

- ``auto`` while raw samples are kept: the answer equals the raw answer (an engine over the same
  samples in memory without rollups), up to float rounding of sums (relative 1e-12); the
  exact functions at whole-bucket times are served by the rollups (checked), with no warning
  (``rate``/``increase``: relative and absolute 1e-9, the counter corrections being added in
  another grouping);
- beyond raw retention (``auto``), and ``max_source_resolution=1m|1h``: the answer is the bound
  ``docs/ARCHITECTURE.md`` documents, computed independently of the engine's rollup path:
  * ``sum/count/avg/min/max_over_time``: the raw answer at ``t'``, the end of the last whole
    bucket at or before ``t``, over the range widened to a bucket (equal at whole-bucket times);
  * ``delta`` (and ``rate``/``increase`` at whole-bucket times): Prometheus's extrapolation
    over the raw samples of the buckets that end in the window, the window widened to a bucket;
  * ``rate``/``increase`` elsewhere: the sum of the counter increases of those buckets (no
    extrapolation), ``rate`` divided by the widened range;
  * everything else: the raw answer over one sample per bucket (its last value at the bucket's
    last millisecond), windows widened to a bucket (two for functions of two samples), the
    lookback to at least a bucket;
  and a warning names the function whenever the answer is not exact; never an empty result
  where the raw answer has data.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
from test_rollup import prom_extrapolated_rate
from test_rollup_job import SHARDS, T0, T_END, WINDOW, generate
from test_rollup_job import load as load_sqlite

from query.engine import Engine
from query.memory import MemoryStorage
from query.promjson import INFO_PREFIX
from query.resolution import EXACT_FROM_ROLLUP, TWO_POINT_FUNCTIONS, SourceResolution
from storage.base import DAY_MS, HOUR_MS, MINUTE_MS, Resolution
from storage.model import Series, make_labels
from storage.rollup import rollup_raw, stale_mask
from storage.rollup_job import RollupJob
from storage.rollup_lease import LocalShardLease

C = "gen_metric_total"
G = "gen_gauge"
IN = T_END + HOUR_MS  # now, while raw samples are kept
BEYOND = T_END + 8 * DAY_MS  # now, past raw retention (the raw samples are still there to compare)
# (Windows, widened to two 1 h buckets at most, stay after T0, where the job's rows begin.)
STEPS = {15_000: (T0 + 2 * HOUR_MS, T0 + 3 * HOUR_MS), MINUTE_MS: (T0 + 2 * HOUR_MS, T0 + 5 * HOUR_MS),
         5 * MINUTE_MS: (T0 + 2 * HOUR_MS, T_END), HOUR_MS: (T0 + 2 * HOUR_MS, T_END)}  # fmt: skip
WINDOWS = ("1m", "5m", "1h")
WINDOW_MS = {"1m": MINUTE_MS, "5m": 5 * MINUTE_MS, "1h": HOUR_MS}
COUNTER_FUNCS = ("rate", "increase", "irate", "resets")
GAUGE_FUNCS = (
    "delta", "idelta", "deriv", "changes", "avg_over_time", "min_over_time", "max_over_time", "sum_over_time",
    "count_over_time", "stddev_over_time", "stdvar_over_time", "last_over_time", "first_over_time",
    "present_over_time", "mad_over_time", "ts_of_max_over_time", "ts_of_min_over_time", "ts_of_last_over_time",
    "ts_of_first_over_time",
)  # fmt: skip
COLUMN_FUNCS = {"sum_over_time", "count_over_time", "avg_over_time", "min_over_time", "max_over_time"}


def expressions() -> list[tuple[str, str | None, str | None]]:
    """(expression with {w} for the window, function, window key) for every case."""
    out: list[tuple[str, str | None, str | None]] = []
    for w in WINDOWS:
        out += [(f"{f}({C}[{w}])", f, w) for f in COUNTER_FUNCS]
        out += [(f"{f}({G}[{w}])", f, w) for f in GAUGE_FUNCS]
        out += [
            (f"quantile_over_time(0.9, {G}[{w}])", "quantile_over_time", w),
            (f"predict_linear({G}[{w}], 600)", "predict_linear", w),
            (f"double_exponential_smoothing({G}[{w}], 0.5, 0.5)", "double_exponential_smoothing", w),
            (f"absent_over_time(nothing_here[{w}])", "absent_over_time", w),
            (f"max_over_time({G}[{w}:1m])", None, None),  # a subquery: its inner selector is plain
        ]
    out += [(G, None, None), (f"timestamp({G})", "timestamp", None), (f"sum by (instance) ({G})", None, None)]
    return out


class Clock:
    def __init__(self, now: int) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now


@pytest.fixture(params=["sqlite", pytest.param("cassandra", marks=pytest.mark.cassandra)])
async def store(request, tmp_path):
    if request.param == "sqlite":
        from storage.sqlite_rollup import SQLiteRollupStorage

        st = await SQLiteRollupStorage.open(tmp_path / "db")
        st.late_after_ms = 2**62  # these writes stand for live scrapes
        try:
            yield st
        finally:
            await st.close()
        return
    from fixtures_cassandra import keyspace_store
    from test_rollup_cassandra import load as load_cassandra

    from storage.cassandra_rollup import CassandraRollupStorage

    with keyspace_store(request.getfixturevalue("cassandra"), "resolution_diff", CassandraRollupStorage) as st:
        st.late_after_ms = 2**62
        st.load = load_cassandra  # type: ignore[attr-defined]
        yield st


class References:
    """The store-independent reference answers (raw engine, last-value engines, the rate and
    increase references), computed once per (kind, query) and shared by both stores' runs:
    they depend only on the generated samples, which are the same for both (checked by a
    fingerprint of the samples)."""

    def __init__(self) -> None:
        self.fingerprint: bytes = b""
        self.answers: dict[tuple, dict] = {}

    def bind(self, data: dict) -> None:
        import hashlib

        h = hashlib.sha256()
        for s in sorted(data, key=lambda s: s.id):
            ts, v, _ = data[s]
            h.update(str(s.id).encode())
            h.update(np.ascontiguousarray(ts).tobytes())
            h.update(np.ascontiguousarray(v).tobytes())
        if h.digest() != self.fingerprint:
            self.fingerprint, self.answers = h.digest(), {}

    async def query(self, kind: tuple, eng: Engine, expr: str, start: int, end: int, step: int) -> dict:
        key = (kind, expr, start, end, step)
        if key not in self.answers:
            self.answers[key] = _as_dict(await eng.range_query(expr, start, end, step))
        return self.answers[key]

    def computed(self, key: tuple, make, *args) -> dict:
        if key not in self.answers:
            self.answers[key] = make(*args)
        return self.answers[key]


REFERENCES = References()


def _as_dict(res) -> dict[tuple, tuple[np.ndarray, np.ndarray]]:
    return {tuple(sorted(s.labels.items())): (np.asarray(s.timestamps), np.asarray(s.values)) for s in res.series}


def _close(got: dict, want: dict, rtol: float, atol: float = 0.0) -> str | None:
    """None when equal (values up to ``rtol`` and ``atol``, NaN equal to NaN), else what differs."""
    if got.keys() != want.keys():
        return f"series {sorted(got.keys() ^ want.keys())[:3]} in one answer only"
    for k, (ts, vs) in want.items():
        gts, gvs = got[k]
        if not np.array_equal(gts, ts):
            return f"{dict(k)}: steps {gts[:5].tolist()}... vs {ts[:5].tolist()}... ({len(gts)} vs {len(ts)})"
        if not np.allclose(gvs, vs, rtol=rtol, atol=atol, equal_nan=True):
            bad = np.flatnonzero(~np.isclose(gvs, vs, rtol=rtol, atol=atol, equal_nan=True))[0]
            return f"{dict(k)} at {int(ts[bad])}: {gvs[bad]!r} vs {vs[bad]!r}"
    return None


def _last_value_store(data, bucket: int) -> MemoryStorage:
    """One sample per bucket: its last value at its last millisecond (from ``rollup_raw``)."""
    mem = MemoryStorage()
    start = (T0 - HOUR_MS) // bucket * bucket
    for s, (ts, v, _) in data.items():
        r = rollup_raw(ts, v, start, T_END + HOUR_MS, bucket)
        mem.add_series(s, r.timestamps + bucket - 1, r.last)
    return mem


def _increase_reference(data, bucket: int, rng_ms: int, times: np.ndarray, per_second: bool) -> dict:
    """rate/increase over rollups, windows not of whole buckets: the buckets ending in
    (t - range, t] add their increases."""
    out = {}
    start = (T0 - HOUR_MS) // bucket * bucket
    for s, (ts, v, _) in data.items():
        if s.metric != C:
            continue
        r = rollup_raw(ts, v, start, T_END + HOUR_MS, bucket)
        ends = r.timestamps + bucket - 1
        lo = np.searchsorted(ends, times - rng_ms, "right")
        hi = np.searchsorted(ends, times, "right")
        ok = hi > lo
        if not ok.any():
            continue
        csum = np.concatenate(([0.0], np.cumsum(r.increase)))
        vals = (csum[hi] - csum[lo])[ok]
        if per_second:
            vals = vals / (rng_ms / 1000)
        labels = tuple(sorted((k, v) for k, v in s.labels if k != "__name__"))
        out[labels] = (times[ok], vals)
    return out


def _rate_reference(data, func: str, bucket: int, rng_ms: int, times: np.ndarray) -> dict:
    """rate/increase/delta over rollups: Prometheus's extrapolation over the samples of the
    buckets ending in (t - range, t], for the window (t - range, t]."""
    out = {}
    for s, (ts, v, _) in data.items():
        if s.metric != (G if func == "delta" else C):
            continue
        keep = ~stale_mask(v)
        ts, v = ts[keep], v[keep]
        ends = ts // bucket * bucket + bucket - 1
        got_t, got_v = [], []
        for t in times.tolist():
            inside = (ends > t - rng_ms) & (ends <= t)
            window = list(zip(ts[inside].tolist(), v[inside].tolist(), strict=True))
            x = prom_extrapolated_rate(window, t - rng_ms, t, func != "delta", func == "rate")
            if x is not None:
                got_t.append(t)
                got_v.append(x)
        if got_t:
            labels = tuple(sorted((k, v) for k, v in s.labels if k != "__name__"))
            out[labels] = (np.array(got_t, dtype=np.int64), np.array(got_v))
    return out


def _mid_window_counter() -> dict:
    """A counter that starts mid-window (T0 + 2 h 17 min 5 s), every 10 s, with a reset inside a
    minute and one at a minute's edge (the minute's first sample below the previous minute's last)."""
    ts = T0 + 2 * HOUR_MS + 17 * MINUTE_MS + 5_000 + np.arange(0, 2 * HOUR_MS, 10_000, dtype=np.int64)
    v = np.arange(ts.size, dtype=np.float64) * 7 + 100
    inside = int(np.searchsorted(ts, T0 + 2 * HOUR_MS + 40 * MINUTE_MS + 30_000))
    v[inside:] -= v[inside] - 2
    edge = int(np.searchsorted(ts, T0 + 3 * HOUR_MS + 10 * MINUTE_MS))  # the minute's first sample
    v[edge:] -= v[edge] - 1
    return {Series.of(make_labels(C, instance="mid:9100", k="m")): (ts, v, "web/mid:9100")}


def _widened(expr: str, w: str | None, rng_ms: int) -> str:
    if w is None:
        return expr
    return re.sub(rf"\[{w}(?=[:\]])", f"[{rng_ms // 1000}s", expr, count=1)


async def _sealed(store, tmp_path, data) -> tuple[MemoryStorage, Engine]:
    """``data`` written to the store and sealed by the real job; the same samples in memory,
    and an engine over them without rollups (the raw reference)."""
    await (getattr(store, "load", None) or load_sqlite)(store, data)
    job = RollupJob(store, LocalShardLease(tmp_path / "locks"), window_ms=WINDOW, shards=SHARDS, now_ms=lambda: IN)
    assert await job.run_once(initial_start_ms=T0)
    mem = MemoryStorage()
    for s, (t, v, _) in data.items():
        mem.add_series(s, t, v)
    return mem, Engine(mem, downsample=False, isolate=False)


async def test_answers_do_not_depend_on_the_resolution(store, tmp_path) -> None:
    data = generate(seed=17) | _mid_window_counter()
    _, raw_ref = await _sealed(store, tmp_path, data)
    last_refs = {b: _last_value_store(data, b) for b in (MINUTE_MS, HOUR_MS)}
    refs = REFERENCES
    refs.bind(data)

    reads: list[Resolution] = []
    select = store.select
    # The store's answer to each distinct read, asked once: the store does not change while
    # the cases run, and the ~2,400 queries repeat the same reads many times over (every
    # function of a window reads what the others of that window read).
    answers: dict[tuple, list] = {}

    async def spy(matchers, start_ms, end_ms, resolution=Resolution.RAW, *, columns=None):
        reads.append(resolution)
        key = (tuple(matchers), start_ms, end_ms, resolution, None if columns is None else tuple(columns))
        if key not in answers:
            answers[key] = await select(matchers, start_ms, end_ms, resolution, columns=columns)
        return answers[key]

    store.select = spy
    clock = Clock(IN)
    eng = Engine(store, now_ms=clock, isolate=False)
    failures: list[str] = []
    served_exactly: set[Resolution] = set()
    served_funcs: set[str | None] = set()
    cases = 0
    try:
        for step, (start0, end0) in STEPS.items():
            for shift in (0, 1) if step >= MINUTE_MS else (0,):
                start, end = start0 - shift, end0 - shift
                times = np.arange(start, end + 1, step, dtype=np.int64)
                for expr, func, w in expressions():
                    want_raw = await refs.query(("raw",), raw_ref, expr, start, end, step)
                    for source, now in (
                        (SourceResolution.AUTO, IN), (SourceResolution.AUTO, BEYOND),
                        (SourceResolution.MINUTE, IN), (SourceResolution.HOUR, IN),
                    ):  # fmt: skip
                        cases += 1
                        clock.now = now
                        reads.clear()
                        res = await eng.range_query(expr, start, end, step, source=source)
                        infos = [x for x in res.warnings if x.startswith(INFO_PREFIX)]
                        res.warnings = [x for x in res.warnings if not x.startswith(INFO_PREFIX)]
                        got = _as_dict(res)
                        rolled = {r for r in reads if r is not Resolution.RAW}
                        what = f"{expr} step {step // 1000}s start {start} {source.value} now={'in' if now == IN else 'beyond'}"
                        if not rolled:
                            if source is SourceResolution.AUTO and now == BEYOND and want_raw:
                                failures.append(f"{what}: read raw samples past raw retention")
                            why = _close(got, want_raw, 1e-12)
                            if why or res.warnings or infos:
                                failures.append(f"{what}: {why or res.warnings or infos}")
                            continue
                        if source is SourceResolution.AUTO and now == IN:
                            # Rollups served while raw samples are kept: only where exact (rate and
                            # increase up to the rounding of the counter corrections, added in
                            # another grouping: the raw engine's prefix sums, the buckets' sums).
                            tol = (1e-9, 1e-9) if func in ("rate", "increase") else (1e-12, 0.0)
                            why = _close(got, want_raw, *tol)
                            # (no info: the rows had a sample on a window's edge, raw was read then)
                            fell_back = not infos and reads[-1] is Resolution.RAW and (start + 1) % MINUTE_MS != 0
                            if why or res.warnings or not (infos or fell_back):
                                failures.append(f"{what}: rollup answer differs from raw: {why or res.warnings or 'no info'}")
                            if infos:
                                served_exactly |= rolled
                                served_funcs.add(func)
                            continue
                        assert len(rolled) == 1, (what, rolled)
                        bucket = next(iter(rolled)).step_ms
                        w_ms = WINDOW_MS[w] if w else None
                        aligned = (
                            w_ms is not None and w_ms % bucket == 0 and (start + 1) % bucket == 0 and step % bucket == 0
                        )
                        exact = func in EXACT_FROM_ROLLUP and aligned
                        if exact != (not res.warnings) or exact != bool(infos):
                            failures.append(f"{what}: warnings {res.warnings} for an {'exact' if exact else 'approximate'} answer")
                        elif res.warnings and not any((f"{func}()" if func else "plain selectors") in x for x in res.warnings):
                            failures.append(f"{what}: the warning does not name the function: {res.warnings}")
                        if want_raw and not got:
                            failures.append(f"{what}: empty where raw samples have data")
                        if func in COLUMN_FUNCS:
                            rng_ms = max(w_ms or 0, bucket)
                            t2 = times - (times + 1) % bucket  # the last whole bucket's end at or before t
                            by_t = await refs.query(("raw",), raw_ref, _widened(expr, w, rng_ms), int(t2[0]), int(t2[-1]), bucket)
                            want = {}
                            for k, (ts, vs) in by_t.items():
                                pos = np.searchsorted(ts, t2)
                                hit = (pos < len(ts)) & (ts[np.minimum(pos, len(ts) - 1)] == t2)
                                if hit.any():
                                    want[k] = (times[hit], vs[pos[hit]])
                            why = _close(got, want, 1e-9)
                        elif func in ("rate", "increase", "delta"):
                            rng_ms = max(w_ms or 0, bucket)
                            key = ("rate", func, exact, bucket, rng_ms, times.tobytes())
                            if exact or func == "delta":
                                want = refs.computed(key, _rate_reference, data, func, bucket, rng_ms, times)
                            else:
                                want = refs.computed(key, _increase_reference, data, bucket, rng_ms, times, func == "rate")
                            why = _close(got, want, 1e-9)
                        else:
                            mul = 2 if func in TWO_POINT_FUNCTIONS else 1
                            rng_ms = max(w_ms or 0, bucket * mul)
                            lookback = max(300_000, bucket)
                            ref_eng = Engine(last_refs[bucket], downsample=False, isolate=False, lookback_ms=lookback)
                            want = await refs.query(("last", bucket, lookback), ref_eng, _widened(expr, w, rng_ms), start, end, step)
                            why = _close(got, want, 1e-9)
                        if why:
                            failures.append(f"{what} ({bucket // 1000}s buckets): differs from the documented bound: {why}")
    finally:
        del store.select
    print(f"{cases} cases, {len(answers)} distinct reads of the store")
    assert not failures, f"{len(failures)} of {cases} cases:\n" + "\n".join(failures[:40])
    # The exact functions at whole-bucket times were served by both rollups while raw samples are kept.
    assert served_exactly == {Resolution.MINUTE, Resolution.HOUR}, served_exactly
    assert {"rate", "increase", "delta", "sum_over_time"} <= served_funcs, served_funcs


def test_last_value_store_drops_stale_markers() -> None:
    """(The reference for last-value functions has no stale markers, as rollup buckets have none.)"""
    data = generate(seed=17)
    mem = _last_value_store(data, MINUTE_MS)
    for col in mem._series.values():
        assert not stale_mask(col.arrays()[1]).any()


async def _with_rows_of_schema_4(store, tmp_path):
    """A store on the same data whose rollup tables lost the rate aggregates' columns (the
    layout of schema version 4, its rows without them), then upgraded as a deployment does:
    SQLite on open, Cassandra by ``ringmon storage init`` (``create_schema``)."""
    from storage.base import ADDED_IN_V5

    dropped = [f"c_{n}" for n in ADDED_IN_V5]
    if getattr(store, "keyspace", None) is None:
        import sqlite3

        from storage.sqlite_rollup import SQLiteRollupStorage

        con = sqlite3.connect(tmp_path / "db")
        with con:
            for table in ("rollup_1m_chunks", "rollup_1h_chunks"):
                for col in dropped:
                    con.execute(f"ALTER TABLE {table} DROP COLUMN {col}")
        con.close()
        fresh = await SQLiteRollupStorage.open(tmp_path / "db")
        await fresh.read_rollup(Resolution.MINUTE, 0, 0, 0)  # (the rollup tables are opened on first use)
        have = {r[1] for r in sqlite3.connect(tmp_path / "db").execute("PRAGMA table_info(rollup_1m_chunks)")}
        assert set(dropped) <= have
        return fresh
    from storage import schema as sch
    from storage.cassandra_rollup import CassandraRollupStorage

    ks = store.keyspace
    for table in sch.CHUNK_TABLES:
        for col in dropped:
            store.session.execute(f"ALTER TABLE {ks}.{table} DROP {col}", timeout=60)
    store.session.execute(f"INSERT INTO {ks}.meta (key, value) VALUES ('schema_version', '4')")
    sch.create_schema(store.session, sch.SchemaSpec(keyspace=ks))
    assert sch.schema_version(store.session, ks) == sch.SCHEMA_VERSION >= 5  # (upgraded to the current version, which has them)
    host, port = store.session.cluster.contact_points[0], store.session.cluster.port
    return CassandraRollupStorage.connect_sync([host], port, ks)


async def test_rows_written_before_the_rate_aggregates_do_not_claim_exactness(store, tmp_path) -> None:
    """After the schema upgrade, rollup rows written before it lack first/last times and the
    counter correction: rate() reads raw samples while they are kept (the raw answer, no
    claim of exactness); beyond raw retention it answers from the old rows with a warning.
    The other exact functions still read those rows."""
    data = {s: d for s, d in generate(seed=3).items() if s.get("instance") == "h1:9100"}
    await (getattr(store, "load", None) or load_sqlite)(store, data)
    job = RollupJob(store, LocalShardLease(tmp_path / "locks"), window_ms=WINDOW, shards=SHARDS, now_ms=lambda: IN)
    assert await job.run_once(initial_start_ms=T0)
    fresh = await _with_rows_of_schema_4(store, tmp_path)
    try:
        fresh.late_after_ms = 2**62
        mem = MemoryStorage()
        for s, (ts, v, _) in data.items():
            mem.add_series(s, ts, v)
        raw_ref = Engine(mem, downsample=False, isolate=False)
        reads: list[Resolution] = []
        select = fresh.select

        async def spy(matchers, start_ms, end_ms, resolution=Resolution.RAW, *, columns=None):
            reads.append(resolution)
            return await select(matchers, start_ms, end_ms, resolution, columns=columns)

        fresh.select = spy
        clock = Clock(IN)
        eng = Engine(fresh, now_ms=clock, isolate=False)
        start, end = T0 + 2 * HOUR_MS - 1, T0 + 5 * HOUR_MS - 1  # whole minutes
        for expr in (f"rate({C}[5m])", f"delta({G}[5m])"):
            reads.clear()
            res = await eng.range_query(expr, start, end, MINUTE_MS)
            assert Resolution.MINUTE in reads and reads[-1] is Resolution.RAW, (expr, reads)
            assert not res.warnings, res.warnings
            assert _close(_as_dict(res), _as_dict(await raw_ref.range_query(expr, start, end, MINUTE_MS)), 1e-9, 1e-9) is None
        reads.clear()
        res = await eng.range_query(f"sum_over_time({G}[5m])", start, end, MINUTE_MS)
        assert reads == [Resolution.MINUTE] and res.warnings and res.warnings[0].startswith(INFO_PREFIX)
        clock.now = BEYOND
        res = await eng.range_query(f"rate({C}[5m])", start, end, MINUTE_MS)
        assert res.series and any("rate()" in w and "approximate" in w for w in res.warnings), res.warnings
        assert not any(w.startswith(INFO_PREFIX) for w in res.warnings)
    finally:
        await fresh.close()
        if hasattr(fresh, "shutdown"):
            fresh.shutdown()


async def test_panel_grid_windows_from_rollups_unless_a_sample_sits_on_an_edge(store, tmp_path) -> None:
    """A dashboard's grid (``t`` on minute boundaries: windows ``(t - R, t]`` are the buckets
    ``[t - R, t)`` but for samples exactly at ``t - R`` or ``t``) is served by the 1m rollups when
    no sample sits on a window's edge, and equals the raw answer; a sample on an edge makes the
    engine read raw samples instead (the same answer)."""
    data = _mid_window_counter()
    ts = T0 + 2 * HOUR_MS + 7_123 + np.arange(0, 3 * HOUR_MS, 15_000, dtype=np.int64)  # never on a minute
    data[Series.of(make_labels(G, instance="mid:9100", k="g"))] = (ts, np.sin(ts / 1e6) * 100, "web/mid:9100")
    mem, raw_ref = await _sealed(store, tmp_path, data)
    reads: list[Resolution] = []
    select = store.select

    async def spy(matchers, start_ms, end_ms, resolution=Resolution.RAW, *, columns=None):
        reads.append(resolution)
        return await select(matchers, start_ms, end_ms, resolution, columns=columns)

    store.select = spy
    try:
        eng = Engine(store, now_ms=Clock(IN), isolate=False)
        start, end = T0 + 2 * HOUR_MS + 30 * MINUTE_MS, T0 + 4 * HOUR_MS
        exprs = [f"rate({C}[5m])", f"increase({C}[1h])", f"delta({G}[5m])", f"sum_over_time({G}[5m])"]
        for expr in exprs:
            reads.clear()
            res = await eng.range_query(expr, start, end, MINUTE_MS)
            assert reads == [Resolution.MINUTE], (expr, reads)
            assert res.warnings and res.warnings[0].startswith(INFO_PREFIX), (expr, res.warnings)
            want = _as_dict(await raw_ref.range_query(expr, start, end, MINUTE_MS))
            assert want and _close(_as_dict(res), want, 1e-12, 1e-12) is None, expr
        # A sample exactly on a minute that is a window's edge: raw samples answer.
        edge = T0 + 3 * HOUR_MS + 5 * MINUTE_MS
        extra = {s: (np.array([edge]), np.array([d[1][np.searchsorted(d[0], edge)]]), d[2]) for s, d in data.items()}
        await (getattr(store, "load", None) or load_sqlite)(store, extra)
        for s, (t, v, _) in extra.items():
            mem.add_series(s, t, v)
        job2 = RollupJob(store, LocalShardLease(tmp_path / "locks"), window_ms=WINDOW, shards=SHARDS, now_ms=lambda: IN)
        await job2.backfill(T0 + 2 * HOUR_MS, T0 + 4 * HOUR_MS)
        for expr in exprs:
            reads.clear()
            res = await eng.range_query(expr, start, end, MINUTE_MS)
            assert reads == [Resolution.MINUTE, Resolution.RAW] and not res.warnings, (expr, reads, res.warnings)
            want = _as_dict(await raw_ref.range_query(expr, start, end, MINUTE_MS))
            assert _close(_as_dict(res), want, 1e-9, 1e-9) is None, expr
    finally:
        del store.select


async def test_a_series_with_an_edge_sample_reads_raw_alone(store, tmp_path) -> None:
    """Of a panel's series, only those with a sample on a window's edge are read raw (one
    select narrowed to them); the others stay with the rollups, and the answer equals the raw
    one bit for bit (rate, increase, delta, and a sum over them)."""
    ts = T0 + 2 * HOUR_MS + 7_123 + np.arange(0, 3 * HOUR_MS, 15_000, dtype=np.int64)  # never on a minute
    edge = T0 + 3 * HOUR_MS + 5 * MINUTE_MS
    data = {}
    for host in ("a", "b", "c"):
        t = np.sort(np.append(ts, edge)) if host == "b" else ts  # host b: a sample on a window's edge
        data[Series.of(make_labels(C, instance=f"{host}:9100"))] = (t, np.cumsum(t % 7_919 / 1e3), f"web/{host}:9100")
        data[Series.of(make_labels(G, instance=f"{host}:9100"))] = (t, np.sin(t / 1e6) * 100, f"web/{host}:9100")
    mem, raw_ref = await _sealed(store, tmp_path, data)
    reads: list[tuple[Resolution, list[str]]] = []
    select = store.select

    async def spy(matchers, start_ms, end_ms, resolution=Resolution.RAW, *, columns=None):
        got = await select(matchers, start_ms, end_ms, resolution, columns=columns)
        reads.append((resolution, sorted(d.series.get("instance") for d in got)))
        return got

    store.select = spy
    try:
        eng = Engine(store, now_ms=Clock(IN), isolate=False)
        start, end = T0 + 2 * HOUR_MS + 30 * MINUTE_MS, T0 + 4 * HOUR_MS
        for expr in (f"rate({C}[5m])", f"increase({C}[10m])", f"delta({G}[5m])", f"sum(rate({C}[5m]))"):
            reads.clear()
            res = await eng.range_query(expr, start, end, MINUTE_MS)
            assert reads == [(Resolution.MINUTE, ["a:9100", "b:9100", "c:9100"]), (Resolution.RAW, ["b:9100"])], expr
            assert res.warnings and res.warnings[0].startswith(INFO_PREFIX), (expr, res.warnings)
            want = _as_dict(await raw_ref.range_query(expr, start, end, MINUTE_MS))
            assert want and _close(_as_dict(res), want, 0.0, 0.0) is None, expr
    finally:
        del store.select
