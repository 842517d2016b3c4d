"""Issue #17: what a range query beyond raw retention costs when its steps sit inside hours.

    .venv/bin/python -m bench.unaligned [--series 40] [--runs 5] [--db FILE]

Fills a ``SQLiteRollupStorage`` (what ``ringmon standalone`` opens) with ``--series`` counters
sampled every 30 s (10 series a target, written as scrape frames): raw samples for the last
7 d and 2 h, 1m rows for the last 30 d and 1h rows for 150 d, the rows computed as the rollup
job computes them (``bucketize``); ``--seal``: the raw samples then sealed into blocks by the
rollup job, as a running job leaves all but the newest 2 h (a query's minute of raw samples
then decodes its series' 2 h blocks). ``--db FILE`` keeps the filled store and reuses it. Then
each query, over 1h rows (``auto``), with its start on the hour (a dashboard's grid: whole
hours) and at ``:24:30`` (every step inside an hour: the hour's minutes and the step's minute
from raw samples): process CPU ms per query (median of ``--runs``, after one unmeasured run),
the samples it counts and the store selects. Prints figures, asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from query.engine import Engine, bucketize  # noqa: E402 - after the path insert
from storage.base import DAY_MS, HOUR_MS, MINUTE_MS, Resolution, SeriesData  # noqa: E402
from storage.model import SampleBatch, Series, make_labels  # noqa: E402
from storage.rollup import Rollup  # noqa: E402
from storage.rollup_job import RollupRows  # noqa: E402
from storage.sqlite_rollup import SQLiteRollupStorage  # noqa: E402

NOW = 1_750_000_000_000 // HOUR_MS * HOUR_MS + 37 * MINUTE_MS + 7_000
INTERVAL_MS = 30_000
PER_TARGET = 10
QUERIES = [
    # (expression, range, step; 0: an instant query at the range's start)
    ("max_over_time(bench_total[150d])", 150 * DAY_MS, HOUR_MS),
    ("increase(bench_total[1h])", 30 * DAY_MS, HOUR_MS),
    ("sum(rate(bench_total[6h]))", 30 * DAY_MS, 6 * HOUR_MS),
    ("count_over_time(bench_total[150d])", 10 * DAY_MS, 0),
]


async def fill(st: SQLiteRollupStorage, series: int) -> None:
    rng = np.random.default_rng(5)
    ts = np.arange((NOW - 150 * DAY_MS) // HOUR_MS * HOUR_MS, NOW, INTERVAL_MS, dtype=np.int64)
    raw_from = NOW - 7 * DAY_MS - 2 * HOUR_MS
    for t0 in range(0, series, PER_TARGET):
        datas = []
        for i in range(t0, min(t0 + PER_TARGET, series)):
            s = Series.of(make_labels("bench_total", instance=f"host-{t0 // PER_TARGET}", n=str(i)))
            vals = np.cumsum(rng.random(len(ts)) * 3.0)
            vals[len(vals) // 2 :] -= vals[len(vals) // 2] - 1.0  # a counter reset
            datas.append(SeriesData(s, ts, vals))
        for res, start in ((Resolution.HOUR, int(ts[0])), (Resolution.MINUTE, (NOW - 30 * DAY_MS) // HOUR_MS * HOUR_MS)):
            made = bucketize(datas, start, NOW // HOUR_MS * HOUR_MS, res.step_ms)
            await st.write_rollups(res, [RollupRows(d.series.id, Rollup.from_columns(b, cols)) for d, b, cols in made])
        keep = ts >= raw_from
        rts, rvals = ts[keep], np.stack([d.values[keep] for d in datas], axis=1)
        for i in range(0, len(rts), 2_500):
            t, v = rts[i : i + 2_500], rvals[i : i + 2_500]
            await st.write(SampleBatch(
                f"bench/host-{t0 // PER_TARGET}", [d.series for d in datas] * len(t),
                np.repeat(t, len(datas)).tolist(), v.ravel().tolist(),
            ))  # fmt: skip


async def measure(st: SQLiteRollupStorage, runs: int) -> None:
    selects = [0]
    select = st.select

    async def counted(*args, **kw):  # type: ignore[no-untyped-def]
        selects[0] += 1
        return await select(*args, **kw)

    st.select = counted  # type: ignore[method-assign]
    end0 = NOW // HOUR_MS * HOUR_MS - HOUR_MS
    print(f"{'query':<38} {'range':>6} {'step':>5} {'start':>8} {'cpu ms':>8} {'samples':>9} {'selects':>7}")
    for expr, rng_ms, step in QUERIES:
        for name, shift in (("on hour", 0), (":24:30", 24 * MINUTE_MS + 30_000)):
            start = end0 - rng_ms + shift
            cpu, samples, n = [], 0, 0
            for k in range(runs + 1):
                eng = Engine(st, now_ms=lambda: NOW, isolate=False)
                selects[0] = 0
                c = time.process_time()
                if step:
                    await eng.range_query(expr, start, end0 - HOUR_MS + shift, step)
                else:
                    await eng.instant_query(expr, start)
                if k:
                    cpu.append((time.process_time() - c) * 1000)
                assert eng.last_stats is not None
                samples, n = eng.last_stats.samples, selects[0]
            print(f"{expr:<38} {rng_ms // DAY_MS:>5}d {step // 60_000:>4}m {name:>8} "
                  f"{statistics.median(cpu):>8.1f} {samples:>9} {n:>7}", flush=True)


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--series", type=int, default=40)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--db", help="keep the filled store here (and reuse it)")
    ap.add_argument("--seal", action="store_true", help="seal the raw samples into blocks (the rollup job)")
    args = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="ringmon-unaligned-")
    path = args.db or os.path.join(tmp, "db")
    existed = os.path.exists(path)
    st = await SQLiteRollupStorage.open(path)
    st.late_after_ms = 2**62  # these writes stand for live scrapes, not a replay
    try:
        if not existed:
            t = time.perf_counter()
            await fill(st, args.series)
            if args.seal:
                from storage.rollup_job import RollupJob
                from storage.rollup_lease import LocalShardLease

                job = RollupJob(st, LocalShardLease(os.path.join(tmp, "locks")), shards=4, now_ms=lambda: NOW, fresh_minutes=False)
                await job.backfill(NOW - 7 * DAY_MS - 2 * HOUR_MS, NOW)
            print(f"filled {args.series} series{' (sealed)' if args.seal else ''} in {time.perf_counter() - t:.1f}s, "
                  f"{os.path.getsize(path) / 2**20:.0f} MiB")
        await measure(st, args.runs)
    finally:
        await st.close()


if __name__ == "__main__":
    asyncio.run(main())
