"""Cassandra storage benchmark: write throughput of one Python writer process, read latency.

Starts its own local Cassandra 5.0 node (temp dir, free ports) unless ``--port`` points at
a running one, then prints:

- samples/s written by one Python process through ``BatchingWriter`` (spool included),
  scrape-shaped batches (one target, hundreds of series, one timestamp);
- CPU microseconds per sample on the Python side (process CPU time / samples);
- select latency p50/p99 for one series over 1 h and 24 h of raw data (10 s interval),
  after a memtable flush so reads come from SSTables, in two forms:
  "24h raw, unsealed rows" - every sample a ``raw_recent`` row (``CassandraStorage.select``,
  as before the rollup job has run), and "24h as the services read it" - after the real
  ``RollupJob`` sealed the closed 2 h windows, through ``CassandraRollupStorage.select``
  (what ``make_storage`` gives ``ringmon web``/``query`` in cluster mode): sealed blocks
  plus the rows of the last hours.

The read data (24 h x ``--read-series`` series of one target) lives in a keyspace of its
own, loaded in a burst but as if scraped live (no late-write marks: ``late_after_ms`` is
lifted while loading).

Usage: python bench/storage.py [--seconds 20] [--targets 40] [--series 500] [--dir NODE_DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import pathlib
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.procfs import proc_cpu_s  # noqa: E402
from services.cassandra.cassandra_node import CassandraNode  # noqa: E402
from services.proc import free_port  # noqa: E402
from storage.base import DAY_MS, HOUR_MS, SeriesData  # noqa: E402
from storage.cassandra import CassandraStorage  # noqa: E402
from storage.cassandra_rollup import CassandraRollupStorage  # noqa: E402
from storage.matchers import Matcher, MatchOp  # noqa: E402
from storage.model import SampleBatch, Series, make_labels  # noqa: E402
from storage.rollup_job import RollupJob  # noqa: E402
from storage.rollup_lease import LocalShardLease  # noqa: E402
from storage.writer import BatchingWriter  # noqa: E402


def process_cpu_s(pid: int | None) -> float:
    """User+system CPU seconds of a process (the Cassandra JVM), from /proc."""
    if not pid:
        return 0.0
    try:
        return proc_cpu_s(pid)
    except OSError:
        return 0.0


async def bench_write(
    store: CassandraStorage, spool: pathlib.Path, seconds: float, targets: int, per: int, node_pid: int | None
) -> None:
    writer = BatchingWriter(store, spool, max_in_flight=64, slow_after_s=30)
    groups = {
        f"bench/h{t}:9100": [
            Series.of(make_labels(f"bench_metric_{i % 50}", instance=f"h{t}:9100", job="bench", idx=str(i)))
            for i in range(per)
        ]
        for t in range(targets)
    }
    ts = (int(time.time() * 1000) // 1000) * 1000
    # Warm-up: index the series (first sight writes index rows), not counted.
    for target, series in groups.items():
        await writer.append(SampleBatch(target, series, [ts] * per, [0.0] * per))
    await writer.drain(600)
    n = 0
    t0, c0, j0 = time.perf_counter(), time.process_time(), process_cpu_s(node_pid)
    k = 0
    while time.perf_counter() - t0 < seconds:
        k += 1
        for target, series in groups.items():
            await writer.append(SampleBatch(target, series, [ts + k * 10] * per, [float(k)] * per))
            n += per
    stored = await writer.drain(900)  # the clock stops when every sample is in Cassandra
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    jvm = process_cpu_s(node_pid) - j0
    spooled = any(m == writer.SPOOLING for _t, m in writer.stats.mode_changes)
    print(
        f"write: {n} samples stored in {wall:.1f}s = {n / wall:,.0f} samples/s "
        f"(one process, {targets} targets x {per} series; all stored: {stored}; spooled meanwhile: {spooled})"
    )
    print(f"write: Python CPU {cpu / n * 1e6:.2f} us/sample ({cpu / wall * 100:.0f}% of one core)")
    if jvm:
        print(f"write: Cassandra CPU {jvm / n * 1e6:.2f} us/sample ({jvm / wall * 100:.0f}% of one core)")
    print(f"write: mode={writer.mode} spooled_bytes={writer.spool.total_bytes()} stats={writer.stats}")
    await writer.close()


async def load_day(store: CassandraStorage, spool: pathlib.Path, end_ms: int, per: int) -> list[Series]:
    """24 h of one target at a 10 s interval for ``per`` series, written as if scraped live."""
    store.late_after_ms = 10 * DAY_MS  # a burst of old samples, but no replay: no late-write marks
    writer = BatchingWriter(store, spool, max_in_flight=64, slow_after_s=30)
    series = [Series.of(make_labels("bench_read", instance="r1:9100", job="read", idx=str(i))) for i in range(per)]
    start = end_ms - DAY_MS
    for ts in range(start, end_ms + 1, 10_000):
        await writer.append(SampleBatch("read/r1:9100", series, [ts] * per, [ts / 1000.0] * per))
    await writer.drain(900)
    await writer.close()
    del store.late_after_ms
    return series


Select = Callable[[Sequence[Matcher], int, int], Awaitable[list[SeriesData]]]


async def bench_read(select: Select, series: list[Series], end_ms: int, rounds: int,
                     spans: Sequence[tuple[str, int]]) -> None:
    for label, span in spans:
        lat = []
        n = 0
        for r in range(rounds + 3):
            s = series[r % len(series)]
            ms = [
                Matcher("__name__", MatchOp.EQ, "bench_read"),
                Matcher("instance", MatchOp.EQ, "r1:9100"),
                Matcher("idx", MatchOp.EQ, s.get("idx")),
            ]
            t0 = time.perf_counter()
            got = await select(ms, end_ms - span, end_ms)
            dt = time.perf_counter() - t0
            if r >= 3:  # the first rounds warm the series cache
                lat.append(dt)
                n = len(got[0]) if got else 0
        q = statistics.quantiles(lat, n=100)
        print(f"read {label}: one series, {n} samples: p50 {q[49] * 1000:.1f} ms, p99 {q[98] * 1000:.1f} ms ({rounds} selects)")


async def bench_reads(store: CassandraRollupStorage, node: CassandraNode, tmp: pathlib.Path,
                      a: argparse.Namespace) -> None:
    end_ms = (int(time.time() * 1000) // 10_000) * 10_000
    loop = asyncio.get_running_loop()
    t0 = time.perf_counter()
    series = await load_day(store, tmp / "spool-r", end_ms, a.read_series)
    print(f"read: loaded 24h x {a.read_series} series in {time.perf_counter() - t0:.1f}s")
    await loop.run_in_executor(None, node.nodetool, "flush", store.keyspace)
    print("read: memtables flushed (reads come from SSTables)")

    def rows_only(ms: Sequence[Matcher], lo: int, hi: int) -> Awaitable[list[SeriesData]]:
        return CassandraStorage.select(store, ms, lo, hi)

    await bench_read(rows_only, series, end_ms, a.rounds, (("1h", HOUR_MS), ("24h raw, unsealed rows", DAY_MS)))

    job = RollupJob(store, LocalShardLease(tmp / "locks"), shards=1)
    t0 = time.perf_counter()
    done = await job.backfill(end_ms - DAY_MS - job.window_ms, end_ms)
    await loop.run_in_executor(None, node.nodetool, "flush", store.keyspace)
    print(
        f"read: rollup job sealed {len(done)} windows ({sum(r.samples for r in done)} samples, "
        f"{sum(r.block_bytes for r in done) / max(1, sum(r.samples for r in done)):.2f} B/sample) "
        f"in {time.perf_counter() - t0:.1f}s, up to {time.strftime('%H:%M', time.gmtime(job.closed_until() / 1000))} UTC"
    )
    await bench_read(store.select, series, end_ms, a.rounds, (("24h as the services read it (sealed blocks + recent rows)", DAY_MS),))


def main() -> int:
    print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at start")
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=20.0)
    p.add_argument("--targets", type=int, default=40)
    p.add_argument("--series", type=int, default=500)
    p.add_argument("--read-series", type=int, default=20)
    p.add_argument("--rounds", type=int, default=100)
    p.add_argument("--dir", help="use the running node of this cassandra_node.py dir instead of starting one")
    a = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="ringmon-bench-") as d:
        tmp = pathlib.Path(d)
        own = not a.dir
        if own:
            node = CassandraNode(tmp / "cassandra", native_port=free_port(), heap="1g")
            t0 = time.perf_counter()
            node.start(timeout_s=300)
            print(f"cassandra: started in {time.perf_counter() - t0:.1f}s on port {node.port}")
        else:
            node = CassandraNode.load(a.dir)
        port = node.port
        keyspace = f"bench_{int(time.time())}"
        store = CassandraStorage.connect_sync(["127.0.0.1"], port, keyspace, create_schema=True)
        read_store = CassandraRollupStorage.connect_sync(["127.0.0.1"], port, keyspace + "_r", create_schema=True)
        try:

            async def run() -> None:
                await bench_write(store, tmp / "spool-w", a.seconds, a.targets, a.series, node.pid)
                await bench_reads(read_store, node, tmp, a)

            asyncio.run(run())
        finally:
            print(f"machine: load average {os.getloadavg()[0]:.1f} at end")
            for st in (store, read_store):
                st.drop_keyspace_sync()
                st.shutdown()
            if own:
                node.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
