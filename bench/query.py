"""Query latency of typical dashboard panels, cold and through the range-query cache.

``sum by (mode) (rate(node_cpu_seconds_total[R]))`` over 100 hosts x 8 CPU modes for 1 h,
24 h, 30 d and 1 y windows, with Grafana-like steps (about 1000 points; R = max(5m, step)).
Each host's 15 s samples sit at its scrape phase (``scraper.loop.scrape_offset_s``).
Data lives in a MemoryStorage: raw 15 s samples for the last 25 h, 1-minute rollup rows
for the last 25 h (the rollup job lagging 2 minutes) and 1-hour rows for a year, so the
figures are the engine's (planning, resolution choice, evaluation), not a database's.

``--sqlite`` (the standalone store, ``SQLiteRollupStorage`` in a temporary directory) and
``--cassandra`` (a local Cassandra node from ``services/cassandra``, read through
``CassandraRollupStorage``, which reads by the panels' clock; the node's own CPU per query is
printed below the table) write the raw samples and 1-hour rows, then let the real
``RollupJob`` seal the last 25 h into blocks and 1-minute rows, and measure as the services
read, then one ``run_once`` pass whose fresh pass writes the open window's minutes: the
newest 1-minute rows are 5 minutes old, as with a running job (in memory they lag 2
minutes). ``--no-fresh`` leaves that pass out: the newest rows are then up to 2 h 5 min old
(the last closed window) and a cold panel builds the rest from raw samples. ``--fresh-minutes
N`` seals only up to N minutes ago, then runs the job as a node does for those N minutes
(``run_once`` a minute, its clock stepped: a fresh pass each minute, each window sealed as it
closes), so the store holds what N minutes of provisional chunks leave (at most 24 h).
``--store-hours H`` (Cassandra) has the store read as H hours after the data set's end rather
than by the panels' clock: a panel's newest minutes then come from sealed blocks, as for a
dashboard left open while its step is hours old.

Run: ``.venv/bin/python bench/query.py [--hosts 100] [--runs 15] [--sqlite [--db DIR] | --cassandra [--no-fresh |
--fresh-minutes N] [--store-hours H]] [--panel "24 h"]``; ``--db`` keeps the SQLite database or the Cassandra node (left running; stop it with ``python -m
services.cassandra.cassandra_node stop --dir DIR/cassandra``) and the clock it was built at for the
next run, so two versions of the code can be measured alternately on the same data. Goals: 24 h <= 100 ms p50
cold, any cached refresh <= 20 ms. The last column digests the answers (a cold one, the last
refresh: ``--runs`` minutes on, so runs with the same ``--runs`` compare): a change that must not
alter answers keeps it (30 d and 1 y: their synthetic 1 h rows sit on the clock's hours, so those
digests change with the minute a run starts). A refresh k minutes after the first answer recomputes
the steps of the last 5 minutes (RangeQueryCache.recent_ms) and takes the rest from the cache;
with 1 h and 8 h steps most refreshes recompute nothing, so p99 is the recomputing refresh.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import re
import sys
import tempfile
import time
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.procfs import proc_cpu_s  # noqa: E402
from cli.malloc_tuning import tune_malloc  # noqa: E402
from query import kernels  # noqa: E402
from query.cache import RangeQueryCache  # noqa: E402
from query.engine import Engine, bucketize  # noqa: E402
from query.memory import MemoryStorage  # noqa: E402
from query.resolution import SourceResolution  # noqa: E402
from scraper.loop import scrape_offset_s  # noqa: E402
from storage.base import HOUR_MS, MINUTE_MS, Resolution, SeriesData  # noqa: E402
from storage.model import SampleBatch, Series, make_labels  # noqa: E402
from storage.rollup import Rollup  # noqa: E402
from storage.rollup_job import RollupRows  # noqa: E402

if TYPE_CHECKING:
    from storage.base import Storage
    from storage.cassandra_rollup import CassandraRollupStorage
    from storage.rollup_job import RollupJob
    from storage.sqlite_rollup import SQLiteRollupStorage

DAY_MS = 24 * HOUR_MS
# --source (max_source_resolution) and --no-isolate (big queries evaluate in this process, so
# that "cold cpu" counts their evaluation instead of a worker process's)
SOURCE = SourceResolution.AUTO
ISOLATE = True
MODES = ("idle", "user", "system", "iowait", "irq", "softirq", "steal", "nice")
SCRAPE_MS = 15_000


def build(hosts: int, now: int) -> MemoryStorage:
    rng = np.random.default_rng(1)
    st = MemoryStorage()
    hour_ts = np.arange((now - 366 * DAY_MS) // HOUR_MS * HOUR_MS, now - HOUR_MS, HOUR_MS, dtype=np.int64)
    raw_data = []
    for h in range(hosts):
        # Each host scraped at its own phase, as the scraper does (a minute's edge rarely holds one).
        phase = round(scrape_offset_s(f"node/host-{h:03d}:9100", SCRAPE_MS / 1000) * 1000)
        raw_ts = np.arange(now - 25 * HOUR_MS + phase, now + 1, SCRAPE_MS, dtype=np.int64)
        for mode in MODES:
            s = Series.of(make_labels("node_cpu_seconds_total", instance=f"host-{h:03d}:9100", job="node", mode=mode))
            speed = 0.7 if mode == "idle" else 0.3 / 7
            vals = 1e6 + np.cumsum(rng.random(len(raw_ts)) * 2 * speed * SCRAPE_MS / 1000)
            st.add_series(s, raw_ts, vals)
            raw_data.append(SeriesData(s, raw_ts, vals))
            inc = rng.random(len(hour_ts)) * 2 * speed * 3600
            last = 1e6 + np.cumsum(inc)
            cols = {
                "count": np.full(len(hour_ts), 240.0),
                "sum": last * 240 - inc * 120,
                "min": last - inc,
                "max": last,
                "last": last,
                "increase": inc,
                "first": last - inc,
                "first_ts": (hour_ts + 7_000).astype(np.float64),
                "last_ts": (hour_ts + HOUR_MS - 8_000).astype(np.float64),
                "correction": np.zeros(len(hour_ts)),
            }
            st.put_rollup(SeriesData(s, hour_ts, last, Resolution.HOUR, cols))
    # 1-minute rows as the rollup job writes them, two minutes behind.
    minute_end = (now - 2 * MINUTE_MS) // MINUTE_MS * MINUTE_MS
    for d, bucket_ts, cols in bucketize(raw_data, (now - 25 * HOUR_MS) // MINUTE_MS * MINUTE_MS, minute_end, MINUTE_MS):
        st.put_rollup(SeriesData(d.series, bucket_ts, cols["last"], Resolution.MINUTE, cols))
    for d in raw_data:  # settle the store's lazily sorted arrays before timing
        st.add_series(d.series, d.timestamps[:0], d.values[:0])
    for col in st._series.values():
        col.arrays()
    return st


RollupStorage = TypeVar("RollupStorage", "SQLiteRollupStorage", "CassandraRollupStorage")


async def copy_store(mem: MemoryStorage, st: RollupStorage) -> RollupStorage:
    """The memory store's raw samples and 1 h rows written to ``st`` (SQLite or Cassandra);
    the rollup job writes the 1 m rows and blocks."""
    from storage.matchers import Matcher, MatchOp

    name = [Matcher("__name__", MatchOp.EQ, "node_cpu_seconds_total")]
    by_host: dict[str, list[SeriesData]] = {}
    for d in await mem.select(name, 0, 2**62):
        by_host.setdefault(d.series.get("instance") or "", []).append(d)
    for host, ds in by_host.items():
        # As the scraper writes them: a host's series of one scrape together, so the stores
        # keep them as scrape frames (storage.frames), as in production.
        ts = ds[0].timestamps
        assert all(np.array_equal(d.timestamps, ts) for d in ds), "a host's series share its scrapes"
        vals = np.stack([d.values for d in ds], axis=1)
        for i in range(0, len(ts), 2_500):
            t, v = ts[i : i + 2_500], vals[i : i + 2_500]
            series = [d.series for d in ds] * len(t)
            await st.write(SampleBatch(f"node/{host}", series, np.repeat(t, len(ds)).tolist(), v.ravel().tolist()))
    rows = []
    for d in await mem.select(name, 0, 2**62, Resolution.HOUR):
        assert d.agg is not None, "a select of 1 h rows has their aggregate columns"
        rows.append(RollupRows(d.series.id, Rollup.from_columns(d.timestamps, d.agg)))
    for i in range(0, len(rows), 50):
        await st.write_rollups(Resolution.HOUR, rows[i : i + 50])
    return st


PANELS = [
    # name, window, step
    ("1 h", HOUR_MS, 15_000),
    ("24 h", DAY_MS, 60_000),
    ("30 d", 30 * DAY_MS, HOUR_MS),
    ("1 y", 365 * DAY_MS, 8 * HOUR_MS),
]


def expr_for(step_ms: int) -> str:
    rng_s = max(300, step_ms // 1000)
    return f"sum by (mode) (rate(node_cpu_seconds_total[{rng_s}s]))"


def calibrate() -> float:
    """Milliseconds for a fixed workload, to read the figures against the machine's load."""
    a = np.random.default_rng(0).random((800, 1441))
    best = float("inf")
    for _ in range(5):
        t = time.perf_counter()
        np.cumsum(a, axis=1)
        total = 0
        for i in range(100_000):
            total += i
        best = min(best, (time.perf_counter() - t) * 1000)
    return best


def answer_hash(res: Any, origin: int) -> str:
    """A digest of an answer's labels, steps (from ``origin``, so that runs at other times
    compare) and value bits: equal answers, equal digests."""
    h = hashlib.blake2b(digest_size=6)
    for s in sorted(res.series, key=lambda s: sorted(s.labels.items())):
        h.update(repr(sorted(s.labels.items())).encode())
        h.update((np.asarray(s.timestamps, dtype=np.int64) - origin).tobytes())
        h.update(np.asarray(s.values, dtype=np.float64).tobytes())
    return h.hexdigest()


def pct(xs: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(xs) * 1000, q))


class Clock:
    def __init__(self, now: int) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now


async def measure(
    st: Storage, data_end: int, runs: int, downsample: bool, store_clock: bool = False, node_pid: int | None = None,
    store_hours: float | None = None,
) -> list[dict[str, Any]]:
    """``node_pid``: the Cassandra node's process, whose CPU per query is given too (mean of
    the cold queries, of the refreshes). ``store_clock``: the store reads by the panels' clock too (Cassandra: which hours it reads
    from ``raw_recent`` rows and frames rather than sealed blocks goes by its clock; by the wall
    clock, a data set kept with ``--db`` moved into the sealed-block path as it aged, and a
    refresh's newest minutes cost several times what they cost when just written).
    ``store_hours``: the store's clock is that many hours after the data set's end instead,
    moving on with the panels' (``--store-hours``: a dashboard left open, its step hours old)."""
    rows = []
    for name, window, step in PANELS:
        expr = expr_for(step)
        end0 = (data_end - 10 * MINUTE_MS) // step * step
        clock = Clock(end0)
        if store_hours is not None:
            ahead = data_end + round(store_hours * HOUR_MS) - end0
            st._now_ms = lambda clock=clock, ahead=ahead: clock.now + ahead  # type: ignore[attr-defined]
        elif store_clock:
            st._now_ms = clock  # type: ignore[attr-defined]
        cold, cold_cpu = [], []
        selects: set[str] = set()
        node0 = proc_cpu_s(node_pid) if node_pid else 0.0
        for _ in range(runs):
            eng = Engine(st, now_ms=clock, downsample=downsample, isolate=ISOLATE)
            log = getattr(st, "select_log", None)  # (MemoryStorage only)
            if log is not None:
                log.clear()
            t, c = time.perf_counter(), time.process_time()
            res = await eng.range_query(expr, end0 - window, end0, step, source=SOURCE)
            cold.append(time.perf_counter() - t)
            cold_cpu.append(time.process_time() - c)
            selects = {r for r, _, _ in log} if log is not None else {"?"}
        node_cold = (proc_cpu_s(node_pid) - node0) / runs if node_pid else 0.0
        points = sum(len(s.values) for s in res.series)
        cold_hash = answer_hash(res, end0)
        eng = Engine(st, now_ms=clock, downsample=downsample, isolate=ISOLATE)
        cache = RangeQueryCache(eng, now_ms=clock)
        await cache.range_query(expr, end0 - window, end0, step, SOURCE)
        cached, cached_cpu = [], []
        node0 = proc_cpu_s(node_pid) if node_pid else 0.0
        for k in range(1, runs + 1):
            # A dashboard refresh a minute later; like Grafana, the window is aligned to the step.
            clock.now = end0 + k * MINUTE_MS
            end = clock.now // step * step
            t, c = time.perf_counter(), time.process_time()
            refreshed = await cache.range_query(expr, end - window, end, step, SOURCE)
            cached.append(time.perf_counter() - t)
            cached_cpu.append(time.process_time() - c)
        node_cached = (proc_cpu_s(node_pid) - node0) / runs if node_pid else 0.0
        # The same refreshes answered as the HTTP API does (JSON body, chunks kept as text).
        clock.now = end0
        eng = Engine(st, now_ms=clock, downsample=downsample, isolate=ISOLATE)
        cache = RangeQueryCache(eng, now_ms=clock)
        await cache.range_query_json(expr, end0 - window, end0, step, SOURCE)
        as_json = []
        for k in range(1, runs + 1):
            clock.now = end0 + k * MINUTE_MS
            end = clock.now // step * step
            t = time.perf_counter()
            await cache.range_query_json(expr, end - window, end, step, SOURCE)
            as_json.append(time.perf_counter() - t)
        rows.append(
            {
                "panel": name,
                "step": f"{step // 1000}s",
                "read": "+".join(sorted(selects)),
                "points": points,
                "cold_p50": pct(cold, 50),
                "cold_p99": pct(cold, 99),
                "cached_p50": pct(cached, 50),
                "cached_p99": pct(cached, 99),
                "cold_cpu": pct(cold_cpu, 50),
                "cached_cpu": pct(cached_cpu, 50),
                "json_p50": pct(as_json, 50),
                "json_p99": pct(as_json, 99),
                "hash": f"{cold_hash}/{answer_hash(refreshed, end)}",
                "node_cold_cpu": node_cold * 1000,
                "node_cached_cpu": node_cached * 1000,
            }
        )
    return rows


def _fresh_note(job: RollupJob) -> str:
    if not job.fresh_done:
        return "no fresh pass"
    return f"fresh 1 m rows up to {(job.now_ms() - job.fresh_done[0].end_ms) / 60_000:.0f} min ago"


async def run_job(job: RollupJob, clock: Clock, now: int, fresh_minutes: int) -> int:
    """The rollup job's work on the store up to ``now``: the last 25 h sealed, then one
    ``run_once`` (the fresh pass); with ``fresh_minutes``, sealed up to that many minutes
    before ``now`` and then a ``run_once`` a minute of the job's clock up to ``now`` (a
    node's minutes). Returns the windows sealed."""
    clock.now = now - fresh_minutes * MINUTE_MS
    done = len(await job.backfill(now - 25 * HOUR_MS, clock.now))
    t = time.perf_counter()
    while True:
        done += len(await job.run_once())
        if clock.now >= now:
            return done
        clock.now += MINUTE_MS
        if fresh_minutes and (now - clock.now) % (60 * MINUTE_MS) == 0:
            print(f"  job at {(now - clock.now) // MINUTE_MS} min before now, {time.perf_counter() - t:.0f}s", flush=True)


async def _measure_sqlite(
    mem: MemoryStorage | None, path: str, now: int, runs: int, downsample: bool, fresh: bool, fresh_minutes: int = 0
) -> list[dict]:
    """Measure through SQLite at ``path``; ``mem`` None: the database is there already (``--db``)."""
    from pathlib import Path

    from storage.rollup_job import RollupJob
    from storage.rollup_lease import LocalShardLease
    from storage.sqlite_rollup import SQLiteRollupStorage

    t = time.perf_counter()
    st = await SQLiteRollupStorage.open(path)
    if mem is not None:
        st.late_after_ms = 2**62  # these writes stand for live scrapes, not a replay (no late marks)
        await copy_store(mem, st)
        clock = Clock(now)
        job = RollupJob(st, LocalShardLease(Path(path).parent / "locks"), shards=4, fresh_minutes=fresh, now_ms=clock)
        done = await run_job(job, clock, now, fresh_minutes)
        print(f"sqlite: raw and 1 h rows written, {done} windows sealed by the rollup job (blocks and 1 m rows), "
              f"{_fresh_note(job)} in {time.perf_counter() - t:.1f}s, {os.path.getsize(path) / 2**20:.0f} MiB", flush=True)
    try:
        return await measure(st, now, runs, downsample)
    finally:
        await st.close()


def _measure_cassandra(
    mem: MemoryStorage | None, tmp: str, now: int, runs: int, downsample: bool, fresh: bool, keep: bool = False,
    fresh_minutes: int = 0, store_hours: float | None = None,
) -> list[dict]:
    """Measure through a Cassandra node in ``tmp`` (``mem`` None: its keyspace holds the data
    already, ``--node``); ``keep``: leave the node running; ``store_hours``: ``measure``'s."""
    from pathlib import Path

    from services.cassandra.cassandra_node import CassandraNode, NodeError
    from services.proc import free_port
    from storage.cassandra_rollup import CassandraRollupStorage
    from storage.rollup_job import RollupJob
    from storage.rollup_lease import LocalShardLease

    try:
        node = CassandraNode.load(Path(tmp) / "cassandra")
    except NodeError:
        node = CassandraNode(Path(tmp) / "cassandra", native_port=free_port(), heap="1g")
    t = time.perf_counter()
    node.start(timeout_s=300)
    print(f"cassandra: started in {time.perf_counter() - t:.1f}s on port {node.port}", flush=True)
    st = CassandraRollupStorage.connect_sync(["127.0.0.1"], node.port, "bench_query", create_schema=mem is not None)
    st.late_after_ms = 2**62  # these writes stand for live scrapes, not a replay (no late marks)
    # ... nor slow ones: frames stored later than settle_after_ms after their scrape mark their
    # target and hour (``raw_late_frames``, at the wall clock of the build), and a mark newer
    # than a kept read drops the frames it kept: the panels, read by their own clock (before
    # the build's), then read every target's frames whole at each refresh.
    st.settle_after_ms = 2**62

    async def run() -> list[dict]:
        if mem is None:
            return await measure(st, now, runs, downsample, store_clock=True, node_pid=node.pid, store_hours=store_hours)
        t = time.perf_counter()
        await copy_store(mem, st)
        clock = Clock(now)
        job = RollupJob(st, LocalShardLease(Path(tmp) / "locks"), shards=4, fresh_minutes=fresh, now_ms=clock)
        done = await run_job(job, clock, now, fresh_minutes)
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, node.nodetool, "flush", st.keyspace)
        print(f"cassandra: raw and 1 h rows written, {done} windows sealed by the rollup job (blocks and "
              f"1 m rows), {_fresh_note(job)}, memtables flushed, in {time.perf_counter() - t:.1f}s", flush=True)
        t, settled = time.perf_counter(), False
        for _ in range(60):  # bounded: let the compactions the load started finish (at most ~5 min)
            stats = await loop.run_in_executor(None, node.nodetool, "compactionstats")
            settled = re.search(r"pending tasks:?\s+0\b", stats) is not None
            if settled:
                break
            await asyncio.sleep(5)
        print(f"cassandra: compactions {'settled' if settled else 'still pending'} after "
              f"{time.perf_counter() - t:.0f}s; load average {os.getloadavg()[0]:.1f}", flush=True)
        t = time.perf_counter()
        for _ in range(36):  # bounded: up to 3 min for the node's flushes and the load to calm down
            if os.getloadavg()[0] < 1.5:
                break
            await asyncio.sleep(5)
        print(f"cassandra: measuring after {time.perf_counter() - t:.0f}s more, load average "
              f"{os.getloadavg()[0]:.1f}", flush=True)
        return await measure(st, now, runs, downsample, store_clock=True, node_pid=node.pid, store_hours=store_hours)

    try:
        return asyncio.run(run())
    finally:
        st.shutdown()
        if not keep:
            node.stop()


def main() -> int:
    global SOURCE, ISOLATE, PANELS
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hosts", type=int, default=100)
    ap.add_argument("--runs", type=int, default=15)
    ap.add_argument("--raw-only", action="store_true", help="also measure with downsampling off")
    ap.add_argument("--sqlite", action="store_true", help="measure through the standalone SQLite store")
    ap.add_argument("--cassandra", action="store_true", help="measure through a local Cassandra node")
    ap.add_argument("--source", default="auto", choices=[r.value for r in SourceResolution],
                    help="max_source_resolution of every query (default auto)")
    ap.add_argument("--no-isolate", action="store_true", help="evaluate big queries in this process (cpu columns count them)")
    ap.add_argument("--no-fresh", action="store_true", help="(--sqlite/--cassandra) no fresh pass of the rollup job")
    ap.add_argument("--fresh-minutes", type=int, default=0, metavar="N",
                    help="(--sqlite/--cassandra) seal up to N minutes ago, then run the job a pass a minute up to now")
    ap.add_argument("--db", metavar="DIR", help="(--sqlite, --cassandra) keep the database (the Cassandra node, left "
                    "running) in DIR and measure the one there if there is one (its clock, hosts and fresh pass as "
                    "built): A/B runs of two versions of the code on the same data, without rebuilding it")
    ap.add_argument("--store-hours", type=float, metavar="H",
                    help="(--cassandra) the store reads as H hours after the data set's end (its clock moving on "
                    "with the refreshes), not by the panels' clock: with H >= 2.5 the panels' newest minutes come "
                    "from sealed blocks, as for a dashboard left open for hours")
    ap.add_argument("--panel", action="append", choices=[p[0] for p in PANELS],
                    help="measure only this panel (repeatable; default all)")
    args = ap.parse_args()
    SOURCE, ISOLATE = SourceResolution(args.source), not args.no_isolate
    if args.panel:
        PANELS = [p for p in PANELS if p[0] in args.panel]
    if args.db and not (args.sqlite or args.cassandra):
        ap.error("--db needs --sqlite or --cassandra")
    if args.store_hours is not None and not args.cassandra:
        ap.error("--store-hours needs --cassandra")
    if not 0 <= args.fresh_minutes <= 24 * 60 or (args.fresh_minutes and args.no_fresh):
        ap.error("--fresh-minutes: 0 to 1440, without --no-fresh")
    tuned = tune_malloc()  # as every ``ringmon`` process does (cli/malloc_tuning.py)
    # A serving process loads the compiled kernels at its first big query (query.kernels); the
    # figures are those of one that has (RINGMON_KERNELS=numpy: the NumPy forms).
    print(f"query kernels: {'compiled (numba)' if kernels.load() is not None else 'NumPy'}")
    now = int(time.time() * 1000) // MINUTE_MS * MINUTE_MS
    print(f"machine: {calibrate():.1f} ms for a fixed NumPy+Python workload (best of 5); "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs; "
          f"malloc thresholds {'raised as in ringmon' if tuned else 'glibc defaults'}")
    saved = os.path.join(args.db, "bench.json") if args.db else ""
    st: MemoryStorage | None = None
    if saved and os.path.exists(saved):
        with open(saved) as f:
            meta = json.load(f)
        now = meta["now"]
        print(f"data: the database in {args.db} ({meta['hosts'] * len(MODES)} series, built "
              f"{(time.time() * 1000 - now) / 60_000:.0f} min ago, fresh pass {meta['fresh']}, "
              f"{meta.get('fresh_minutes', 0)} minutes of job passes; its clock)", flush=True)
    else:
        if saved and os.path.exists(os.path.join(args.db, "ringmon.db")):
            ap.error(f"{args.db} holds a database without bench.json (an interrupted build?): remove it")
        t = time.perf_counter()
        st = build(args.hosts, now)
        print(f"data: {args.hosts * len(MODES)} series, built in {time.perf_counter() - t:.1f}s", flush=True)
    modes = [True, False] if args.raw_only else [True]
    tmp = tempfile.TemporaryDirectory(prefix="ringmon-bench-query-") if (args.sqlite and not args.db) or args.cassandra else None
    tmp_dir = args.db or (tmp.name if tmp is not None else "")
    store_name = "SQLite (standalone)" if args.sqlite else "Cassandra (cluster)" if args.cassandra else "MemoryStorage"
    for downsample in modes:
        if args.sqlite:
            if saved:
                os.makedirs(args.db, exist_ok=True)
            rows = asyncio.run(
                _measure_sqlite(st, f"{tmp_dir}/ringmon.db", now, args.runs, downsample, not args.no_fresh,
                                args.fresh_minutes)
            )
            if saved and st is not None:
                with open(saved, "w") as f:
                    json.dump({"now": now, "hosts": args.hosts, "fresh": not args.no_fresh,
                               "fresh_minutes": args.fresh_minutes}, f)
                st = None  # (a --raw-only second pass measures the database just written)
        elif args.cassandra:
            if saved:
                os.makedirs(args.db, exist_ok=True)
            rows = _measure_cassandra(st, tmp_dir, now, args.runs, downsample, not args.no_fresh, keep=bool(saved),
                                      fresh_minutes=args.fresh_minutes, store_hours=args.store_hours)
            if saved and st is not None:
                with open(saved, "w") as f:
                    json.dump({"now": now, "hosts": args.hosts, "fresh": not args.no_fresh,
                               "fresh_minutes": args.fresh_minutes}, f)
                st = None
        else:
            assert st is not None, "built above: --db needs --sqlite"
            rows = asyncio.run(measure(st, now, args.runs, downsample))
        print(f"\nstore: {store_name}")
        print(f"sum by (mode) (rate(node_cpu_seconds_total[max(5m, step)])), downsample={downsample}, max_source_resolution={SOURCE.value}, isolate={ISOLATE}")
        if args.store_hours is not None:
            print(f"the store's clock: {args.store_hours:g} h after the data set's end (--store-hours), not the panels'")
        print("wall-clock p50/p99, and p50 of this process's CPU time (what the figures would be on an idle core);")
        print("json: the cached refresh answered as the HTTP API's JSON body (RangeQueryCache.range_query_json)")
        print(
            f"{'panel':<6} {'step':>6} {'read':>8} {'points':>7} {'cold p50':>9} {'cold p99':>9} {'cold cpu':>9}"
            f" {'cached p50':>11} {'cached p99':>11} {'cached cpu':>11} {'json p50':>9} {'json p99':>9}  answer (cold/refresh)"
        )
        for r in rows:
            print(
                f"{r['panel']:<6} {r['step']:>6} {r['read']:>8} {r['points']:>7} {r['cold_p50']:>7.1f}ms {r['cold_p99']:>7.1f}ms"
                f" {r['cold_cpu']:>7.1f}ms {r['cached_p50']:>9.1f}ms {r['cached_p99']:>9.1f}ms {r['cached_cpu']:>9.1f}ms"
                f" {r['json_p50']:>7.1f}ms {r['json_p99']:>7.1f}ms  {r['hash']}"
            )
        if args.cassandra:
            print("the Cassandra node's CPU per query (mean; /proc, 10 ms ticks), cold / cached refresh: "
                  + ", ".join(f"{r['panel']} {r['node_cold_cpu']:.1f} / {r['node_cached_cpu']:.1f} ms" for r in rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
