"""Differential test: the same generated data in our engine and in a real Prometheus
(Debian's ``prometheus``, backfilled with ``promtool tsdb create-blocks-from openmetrics``);
many expressions, instant and range, must agree to a relative error of 1e-9.

The reference is Prometheus 2.42, whose range windows are closed on the left where 3.x
(which our engine follows) leaves them open; samples sit at odd milliseconds and queries at
half seconds so no sample ever falls on a window edge and both semantics coincide.
"""

from __future__ import annotations

import asyncio
import math
import shutil
import subprocess
import time
from pathlib import Path

import aiohttp
import numpy as np
import pytest
from real_prometheus import NO_SCRAPES, PROMETHEUS, running_prometheus

from query.engine import Engine
from query.errors import QueryError
from query.memory import MemoryStorage
from storage.model import SampleBatch, Series, make_labels

PROMTOOL = shutil.which("promtool")
pytestmark = pytest.mark.skipif(not (PROMETHEUS and PROMTOOL), reason="prometheus/promtool not installed")

HOUR = 3_600_000
STEP = 15_000
T0 = (int(time.time() * 1000) // HOUR - 5) * HOUR  # data spans [T0, T0 + 3h], ending 2h ago
SPAN = 3 * HOUR
EVAL_TIMES = [T0 + HOUR + 17_500, T0 + 2 * HOUR + 1_500, T0 + 3 * HOUR - 29_500]
RANGE = (T0 + 30 * 60_000 + 12_500, T0 + 3 * HOUR - 500, 60_000)

EXPRESSIONS = [
    # selectors, offset, @
    "node_cpu_seconds_total",
    'node_cpu_seconds_total{mode=~"user|system", instance!="h0"}',
    "node_memory_free_bytes offset 10m",
    "node_memory_free_bytes offset -10m",
    f"node_memory_free_bytes @ {(T0 + HOUR + 7_000) / 1000}",
    f"rate(node_cpu_seconds_total[5m] @ {(T0 + 2 * HOUR) / 1000})",
    "flaky",
    # rates and range functions
    "rate(node_cpu_seconds_total[5m])",
    "irate(node_cpu_seconds_total[5m])",
    "increase(node_cpu_seconds_total[10m])",
    "delta(node_memory_free_bytes[10m])",
    "idelta(node_memory_free_bytes[5m])",
    "deriv(node_memory_free_bytes[10m])",
    "predict_linear(node_memory_free_bytes[30m], 3600)",
    "resets(node_cpu_seconds_total[1h])",
    "changes(version[1h])",
    "avg_over_time(node_memory_free_bytes[10m])",
    "sum_over_time(node_memory_free_bytes[10m])",
    # one-hour windows (served by 1h rollups at whole-hour times: test_range_queries_over_rolled_up_data...)
    "max_over_time(node_memory_free_bytes[1h])",
    "sum_over_time(http_request_duration_seconds_count[1h])",
    "count_over_time(flaky[1h])",
    "min_over_time(node_memory_free_bytes[10m])",
    "max_over_time(node_memory_free_bytes[10m])",
    "count_over_time(node_memory_free_bytes[10m])",
    "last_over_time(node_memory_free_bytes[10m])",
    "present_over_time(flaky[10m])",
    "stddev_over_time(node_memory_free_bytes[10m])",
    "stdvar_over_time(node_memory_free_bytes[10m])",
    "quantile_over_time(0.9, node_memory_free_bytes[10m])",
    "absent_over_time(flaky[2m])",
    'absent_over_time(nonexistent{job="x"}[5m])',
    # aggregations
    "sum(rate(node_cpu_seconds_total[5m]))",
    "sum by (mode) (rate(node_cpu_seconds_total[5m]))",
    "sum without (instance) (rate(node_cpu_seconds_total[5m]))",
    "avg by (instance) (node_memory_free_bytes)",
    "min(node_memory_free_bytes)",
    "max by (job) (node_memory_free_bytes)",
    "count by (mode) (node_cpu_seconds_total)",
    "group by (instance) (node_cpu_seconds_total)",
    "stddev(node_memory_free_bytes)",
    "stdvar by (job) (node_memory_free_bytes)",
    "topk(2, node_memory_free_bytes)",
    "bottomk(2, rate(node_cpu_seconds_total[5m]))",
    "topk by (mode) (1, rate(node_cpu_seconds_total[5m]))",
    "quantile(0.75, node_memory_free_bytes)",
    "quantile by (mode) (0.5, rate(node_cpu_seconds_total[5m]))",
    'count_values("version", version)',
    # operators
    "node_memory_free_bytes / 1024 / 1024",
    "-node_memory_free_bytes + 1e9",
    "2 ^ (node_memory_free_bytes / 1e9)",
    "node_memory_free_bytes % 1000",
    "node_memory_free_bytes > 5e8",
    "node_memory_free_bytes > bool 5e8",
    "1e9 < node_memory_free_bytes",
    "rate(node_cpu_seconds_total[5m]) / on(instance) group_left sum by (instance) (rate(node_cpu_seconds_total[5m]))",
    "sum by (instance) (rate(node_cpu_seconds_total[5m])) * on(instance) group_right node_info",
    "node_memory_free_bytes * on(instance) group_left(version) node_info",
    'node_cpu_seconds_total{mode="user"} - ignoring(mode) node_cpu_seconds_total{mode="system"}',
    "node_memory_free_bytes == bool on(instance) node_memory_free_bytes",
    'up == 0 or node_memory_free_bytes{instance="h0"}',
    "node_memory_free_bytes and on(instance) up == 1",
    "node_memory_free_bytes unless on(instance) up == 0",
    # (2.42 keeps __name__ on atan2 of two selectors, a bug 3.x fixed: compare unnamed operands)
    "(node_memory_free_bytes / 1e9) atan2 (node_memory_free_bytes / 2e9)",
    # histograms
    "histogram_quantile(0.9, rate(http_request_duration_seconds_bucket[10m]))",
    "histogram_quantile(0.5, sum by (le) (rate(http_request_duration_seconds_bucket[10m])))",
    "rate(http_request_duration_seconds_sum[5m]) / rate(http_request_duration_seconds_count[5m])",
    # functions
    'label_replace(up, "host", "$1", "instance", "h(.*)")',
    'label_join(up, "id", "-", "instance", "job")',
    "absent(nonexistent)",
    'absent(flaky{instance="h0"})',
    "clamp(node_memory_free_bytes, 4e8, 6e8)",
    "clamp_min(node_memory_free_bytes, 5e8)",
    "clamp_max(node_memory_free_bytes, 5e8)",
    "abs(delta(node_memory_free_bytes[5m]))",
    "ceil(node_memory_free_bytes / 1e7)",
    "floor(node_memory_free_bytes / 1e7)",
    "round(node_memory_free_bytes / 1e7, 0.5)",
    "sqrt(node_memory_free_bytes)",
    "ln(node_memory_free_bytes)",
    "log2(node_memory_free_bytes)",
    "log10(node_memory_free_bytes)",
    "exp(node_memory_free_bytes / 1e9)",
    "sgn(delta(node_memory_free_bytes[5m]))",
    "sin(node_memory_free_bytes)",
    "deg(rad(node_memory_free_bytes))",
    "timestamp(node_memory_free_bytes)",
    "time() - timestamp(node_memory_free_bytes)",
    "hour(timestamp(node_memory_free_bytes))",
    "minute()",
    "day_of_week(vector(time()))",
    "days_in_month(vector(time()))",
    "scalar(sum(up))",
    "vector(scalar(sum(up)))",
    "sort(node_memory_free_bytes)",
    "sort_desc(rate(node_cpu_seconds_total[5m]))",
    "time()",
    "pi()",
    # subqueries
    "max_over_time(rate(node_cpu_seconds_total[5m])[30m:1m])",
    "avg_over_time(sum(node_memory_free_bytes)[1h:5m])",
    "rate(sum(node_cpu_seconds_total)[10m:30s])",
    "min_over_time(node_memory_free_bytes[20m:2m] offset 5m)",
]


def _generate() -> dict[Series, tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(42)
    n = SPAN // STEP + 1
    out: dict[Series, tuple[np.ndarray, np.ndarray]] = {}
    k = 0

    def add(labels, vals, ts=None) -> None:
        nonlocal k
        k += 1
        base = T0 + 7 + 113 * k  # odd milliseconds, a different phase per series
        t = base + np.arange(n, dtype=np.int64) * STEP if ts is None else ts
        out[Series.of(labels)] = (t, np.asarray(vals, dtype=np.float64))

    for h in range(4):
        inst = f"h{h}"
        job = "node" if h < 3 else "db"
        for mode in ("idle", "user", "system"):
            vals = 1e5 * (h + 1) + np.cumsum(rng.random(n) * (15 if mode == "idle" else 3))
            if h == 1 and mode == "user":
                vals[n // 2 :] -= vals[n // 2] - rng.random() * 10  # counter reset
            add(make_labels("node_cpu_seconds_total", instance=inst, job=job, mode=mode), vals)
        add(make_labels("node_memory_free_bytes", instance=inst, job=job), 5e8 + np.cumsum(rng.normal(0, 1e6, n)) + h * 1e8)
        add(make_labels("up", instance=inst, job=job), np.full(n, 0.0 if h == 3 else 1.0))
        add(make_labels("version", instance=inst, job=job), rng.integers(1, 3, n) + (np.arange(n) > n // 2))
        add(make_labels("node_info", instance=inst, job=job, version=f"1.{h}"), np.ones(n))
        counts = np.zeros(n)
        for le in ("0.1", "0.5", "1", "5", "+Inf"):
            counts = counts + np.cumsum(rng.integers(0, 20, n))
            add(make_labels("http_request_duration_seconds_bucket", instance=inst, job=job, le=le), counts.copy() + 1000)
        add(make_labels("http_request_duration_seconds_count", instance=inst, job=job), counts + 1000)
        add(make_labels("http_request_duration_seconds_sum", instance=inst, job=job), 1e4 + np.cumsum(rng.random(n) * 30))
    # A series with gaps: present in the first and last hour only.
    ts = T0 + 11 + np.arange(n, dtype=np.int64) * STEP
    keep = (ts < T0 + HOUR) | (ts > T0 + 2 * HOUR)
    out[Series.of(make_labels("flaky", instance="h0", job="node"))] = (ts[keep], np.arange(n, dtype=np.float64)[keep])
    return out


def _openmetrics(data: dict[Series, tuple[np.ndarray, np.ndarray]]) -> str:
    lines = []
    by_family: dict[str, list[Series]] = {}
    for s in data:
        by_family.setdefault(s.metric, []).append(s)
    for fam, series in by_family.items():
        lines.append(f"# TYPE {fam} gauge")
        for s in series:
            labels = ",".join(f'{k}="{v}"' for k, v in s.labels if k != "__name__")
            ts, vals = data[s]
            for t, v in zip(ts.tolist(), vals.tolist(), strict=True):
                lines.append(f"{fam}{{{labels}}} {v!r} {t / 1000:.3f}")
    lines.append("# EOF")
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    data = _generate()
    work: Path = tmp_path_factory.mktemp("prometheus")
    om = work / "data.om"
    om.write_text(_openmetrics(data))
    tsdb = work / "tsdb"
    subprocess.run([PROMTOOL, "tsdb", "create-blocks-from", "openmetrics", "-q", str(om), str(tsdb)], check=True, timeout=300)
    cfg = work / "prometheus.yml"
    cfg.write_text(NO_SCRAPES)
    with running_prometheus(work, cfg, tsdb=tsdb, args=["--storage.tsdb.retention.time=30d",
                            "--enable-feature=promql-negative-offset,promql-at-modifier"]) as prom:
        yield prom.url, data, work


def _close(a: float, b: float) -> bool:
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    if a == b:
        return True
    return abs(a - b) <= 1e-9 * max(abs(a), abs(b))


def _ours(res) -> tuple[str, object]:
    if res.type == "scalar":
        return "scalar", res.scalar[1]
    if res.type == "vector":
        return "vector", {tuple(sorted(s.labels.items())): float(s.values[0]) for s in res.series}
    return "matrix", {
        tuple(sorted(s.labels.items())): dict(zip(s.timestamps.tolist(), s.values.tolist(), strict=True)) for s in res.series
    }


def _theirs(body: dict) -> tuple[str, object]:
    data = body["data"]
    rt = data["resultType"]
    if rt == "scalar":
        return "scalar", float(data["result"][1])
    if rt == "vector":
        return "vector", {tuple(sorted(r["metric"].items())): float(r["value"][1]) for r in data["result"]}
    return "matrix", {
        tuple(sorted(r["metric"].items())): {round(float(t) * 1000): float(v) for t, v in r["values"]} for r in data["result"]
    }


def _compare(ours, theirs) -> str:
    (ot, ov), (tt, tv) = ours, theirs
    if ot != tt:
        return f"type {ot} != {tt}"
    if ot == "scalar":
        return "" if _close(ov, tv) else f"scalar {ov} != {tv}"
    if set(ov) != set(tv):
        return f"series differ: ours {sorted(ov)[:3]} theirs {sorted(tv)[:3]}"
    for k in ov:
        a, b = ov[k], tv[k]
        if ot == "vector":
            if not _close(a, b):
                return f"{k}: {a!r} != {b!r}"
            continue
        if set(a) != set(b):
            return f"{k}: timestamps differ ({len(a)} vs {len(b)})"
        for t in a:
            if not _close(a[t], b[t]):
                return f"{k} @{t}: {a[t]!r} != {b[t]!r}"
    return ""


async def _run_all(url: str, engine: Engine, ranges: list[tuple[int, int, int]] | None = None) -> list[str]:
    """Every expression at EVAL_TIMES (unless ``ranges`` are given) and over each range."""
    failures = []
    async with aiohttp.ClientSession() as http:
        for expr in EXPRESSIONS:
            for t in EVAL_TIMES if ranges is None else ():
                async with http.get(url + "/api/v1/query", params={"query": expr, "time": str(t / 1000)}) as r:
                    body = await r.json()
                try:
                    ours = _ours(await engine.instant_query(expr, t))
                except QueryError as exc:
                    failures.append(f"instant {expr} @ {t}: our error {exc}")
                    continue
                if body["status"] != "success":
                    failures.append(f"instant {expr} @ {t}: prometheus error {body.get('error')}")
                    continue
                msg = _compare(ours, _theirs(body))
                if msg:
                    failures.append(f"instant {expr} @ {t}: {msg}")
            for start, end, step in ranges or [RANGE]:
                params = {"query": expr, "start": str(start / 1000), "end": str(end / 1000), "step": str(step / 1000)}
                async with http.get(url + "/api/v1/query_range", params=params) as r:
                    body = await r.json()
                what = f"range {expr} [{start}, {end}] step {step // 1000}s"
                try:
                    ours = _ours(await engine.range_query(expr, start, end, step))
                except QueryError as exc:
                    failures.append(f"{what}: our error {exc}")
                    continue
                if body["status"] != "success":
                    failures.append(f"{what}: prometheus error {body.get('error')}")
                    continue
                msg = _compare(ours, _theirs(body))
                if msg:
                    failures.append(f"{what}: {msg}")
    return failures


def test_expression_count() -> None:
    assert len(EXPRESSIONS) >= 60


@pytest.mark.parametrize("backend", ["memory", "sqlite"])
async def test_same_results_as_prometheus(reference, backend: str) -> None:
    """Our engine over MemoryStorage, and over the SQLite backend written through
    ``Storage.write`` (the path scrapers use), against the same Prometheus."""
    url, data, work = reference
    if backend == "memory":
        storage = MemoryStorage()
        for s, (ts, vals) in data.items():
            storage.add_series(s, ts, vals)
    else:
        from storage.sqlite import SQLiteStorage

        storage = await SQLiteStorage.open(work / f"ringmon-{time.monotonic_ns()}.db")
        for s, (ts, vals) in data.items():
            batch = SampleBatch(target="differential/test:1")
            for t, v in zip(ts.tolist(), vals.tolist(), strict=True):
                batch.add(s, t, v)
            await storage.write(batch)
    try:
        engine = Engine(storage, downsample=False)
        failures = await asyncio.wait_for(_run_all(url, engine), timeout=600)
    finally:
        await storage.close()
    assert not failures, f"{len(failures)} differences:\n" + "\n".join(failures[:40])


async def test_range_queries_over_rolled_up_data_as_prometheus(reference, tmp_path) -> None:
    """Range queries at a 60 s and a 1 h step over data old enough to have rollups: the SQLite
    store after the real rollup job sealed it and wrote its 1m and 1h rollups, read by the
    engine as the services read it (``max_source_resolution=auto``). Each step on a half-second
    grid (rollups answer nothing there exactly: everything reads raw) and one millisecond before
    whole buckets (there the rollups serve ``sum/count/min/max/avg/last_over_time``); both must
    give Prometheus's answers. (No sample sits on a window edge in either grid, so Prometheus
    2.42's left-closed windows give the same answers as 3.x's left-open ones.)"""
    from storage.base import Resolution
    from storage.rollup_job import RollupJob
    from storage.rollup_lease import LocalShardLease
    from storage.sqlite_rollup import SQLiteRollupStorage

    url, data, work = reference
    storage = await SQLiteRollupStorage.open(tmp_path / "ringmon.db")
    storage.late_after_ms = 2**62  # these writes stand for live scrapes
    reads: set[Resolution] = set()
    try:
        for s, (ts, vals) in data.items():
            batch = SampleBatch(target="differential/test:1")
            for t, v in zip(ts.tolist(), vals.tolist(), strict=True):
                batch.add(s, t, v)
            await storage.write(batch)
        job = RollupJob(storage, LocalShardLease(tmp_path / "locks"), window_ms=HOUR, shards=2)
        assert len(await job.run_once(initial_start_ms=T0)) >= 2 * 3  # every hour of data sealed
        select = storage.select

        async def spy(matchers, start_ms, end_ms, resolution=Resolution.RAW, *, columns=None):
            reads.add(resolution)
            return await select(matchers, start_ms, end_ms, resolution, columns=columns)

        storage.select = spy
        ranges = [
            (T0 + 30 * 60_000 + 12_500, T0 + 3 * HOUR - 500, 60_000),
            (T0 + 30 * 60_000 - 1, T0 + 3 * HOUR - 1, 60_000),
            (T0 + HOUR + 500, T0 + 3 * HOUR + 500, HOUR),
            (T0 + HOUR - 1, T0 + 3 * HOUR - 1, HOUR),
        ]
        failures = await asyncio.wait_for(_run_all(url, Engine(storage), ranges), timeout=900)
    finally:
        await storage.close()
    assert not failures, f"{len(failures)} differences:\n" + "\n".join(failures[:40])
    assert {Resolution.MINUTE, Resolution.HOUR} <= reads  # the rollups did serve
