"""Issue #20's range query on a standalone SQLite store, without ``bench/peers.py``'s processes.

    .venv/bin/python -m bench.range_query [--targets 200] [--series 500] [--interval 5]
        [--minutes 4] [--window 120] [--runs 15] [--profile OUT.prof] [--db FILE] [--range-cache]

Fills a ``SQLiteRollupStorage`` (what ``ringmon standalone`` opens) through the scrapers'
write path: ``peers.py``'s node_exporter-shaped bodies parsed by the scraper's parser, one
``SampleBatch`` per scrape with the five synthetic series the scrape loop adds, each target
at its own phase (``scraper.loop.scrape_offset_s``), the batches of a 0.1 s slot stored
together (``write_many``, as ``GroupingWriter`` does), the store's clock following the
scrapes so its writer transposes closed 5-minute spans of frames into chunks by itself.
Then ``peers.py``'s query, ``sum by (mode)(rate(node_cpu_seconds_total[1m]))`` over the
last ``--window`` seconds with step = interval, through the Prometheus API over HTTP on
127.0.0.1 (``query.api``; an ``Engine`` with the standalone's defaults), one unmeasured run
then ``--runs`` measured (``--range-cache``: through ``query.cache.RangeQueryCache``, as
``ringmon web`` answers): process CPU ms per query (robust to other load) and wall ms, with
a digest of the answer (a change that must not alter answers keeps it). ``--profile``
writes a cProfile of the measured runs. ``--db FILE`` keeps a copy of the filled store there
(SQLite's backup, frames untransposed, as the query found it) and reuses it when it exists
with the same shape, so later runs skip the filling (minutes of CPU). Prints figures, asserts nothing.

``--cassandra DIR``: the same data in a ``CassandraRollupStorage`` (what ``ringmon web`` opens in
cluster mode) on a local node kept in DIR (``services/cassandra``; started unless it runs there
already), written as the scrapers write it (one frame per scrape, ``write_columns``; the first
scrape of a target indexes its series), queried as ``bench/peers.py --systems ringmon-cluster``
queries ``ringmon web``. The keyspace is reused when DIR holds one of the same shape;
``--keep-node`` leaves the node running for the next run (stop it with ``python -m
services.cassandra.cassandra_node stop --dir DIR``).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import hashlib
import json
import os
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from aiohttp.test_utils import TestClient, TestServer

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.peers import QUERY, TargetBody, node_series  # noqa: E402 - after the path insert
from bench.procfs import proc_cpu_s  # noqa: E402
from cli.malloc_tuning import tune_malloc  # noqa: E402
from query import kernels  # noqa: E402
from query.api import make_app  # noqa: E402
from query.cache import RangeQueryCache  # noqa: E402
from query.engine import Engine  # noqa: E402
from scraper.exposition import parse  # noqa: E402
from scraper.loop import SYNTHETIC, scrape_offset_s  # noqa: E402
from storage.model import SampleBatch, Series, make_labels  # noqa: E402
from storage.sqlite_rollup import SQLiteRollupStorage  # noqa: E402

if TYPE_CHECKING:
    from storage.base import Storage
    from storage.cassandra_rollup import CassandraRollupStorage

SLOT_MS = 100  # GroupingWriter's gather time: the batches of one slot share a transaction


def target_series(t: int, body: bytes) -> tuple[str, list[Series]]:
    """A target's key and its series in scrape order (the synthetic ones last, as the loop writes)."""
    inst = f"127.0.0.1:{10000 + t}"
    rows = parse(body)
    series = [Series.of(make_labels(s.name, **dict(s.labels), instance=inst, job="node")) for s in rows]
    series += [Series.of(make_labels(n, instance=inst, job="node")) for n in SYNTHETIC]
    return f"node/{inst}", series


@dataclass
class Targets:
    """The bench's targets: bodies, keys, series in scrape order, scrape phases (ms into the
    interval) and the targets in phase order."""

    bodies: list[TargetBody]
    keys: list[str]
    series: list[list[Series]]
    phases: list[int]
    order: list[int]

    @classmethod
    def of(cls, args: argparse.Namespace) -> Targets:
        layout = node_series(args.series)
        bodies = [TargetBody(t, layout) for t in range(args.targets)]
        keys, series, phases = [], [], []
        for t, body in enumerate(bodies):
            key, ser = target_series(t, body.render())
            keys.append(key)
            series.append(ser)
            phases.append(round(scrape_offset_s(key, args.interval) * 1000))
        return cls(bodies, keys, series, phases, sorted(range(args.targets), key=lambda t: phases[t]))

    def values(self, t: int) -> list[float]:
        """A scrape of target ``t``: its body's values, then the loop's synthetic series."""
        values = [s.value for s in parse(self.bodies[t].render())]
        return values + [1.0, 0.05, float(len(values)), float(len(values)), 0.0]


async def fill(store: SQLiteRollupStorage, clock: list[int], args: argparse.Namespace, t0: int) -> int:
    tg = Targets.of(args)
    keys, series, phases, order = tg.keys, tg.series, tg.phases, tg.order
    interval_ms = int(args.interval * 1000)
    scrapes = int(args.minutes * 60_000 // interval_ms)
    written = 0
    for k in range(scrapes):
        base = t0 + k * interval_ms
        slot: list[SampleBatch] = []
        for i, t in enumerate(order):
            ts = base + phases[t]
            values = tg.values(t)
            b = SampleBatch(keys[t], series[t], [ts] * len(series[t]), values)
            slot.append(b)
            last = i + 1 == len(order) or base + phases[order[i + 1]] >= (ts // SLOT_MS + 1) * SLOT_MS
            if last:
                clock[0] = ts + 50
                for err in await store.write_many(slot):
                    if err is not None:
                        raise err
                written += sum(len(x) for x in slot)
                slot = []
    return written


async def fill_cassandra(store: CassandraRollupStorage, clock: list[int], args: argparse.Namespace, t0: int) -> int:
    """``fill`` as the cluster's scrapers write: each scrape one ``write_columns`` of its target
    (a frame; the first one of a target carries its series to index), a slot's scrapes at once."""
    tg = Targets.of(args)
    keys, series, phases, order = tg.keys, tg.series, tg.phases, tg.order
    ids = [np.array([s.id for s in ser], dtype=np.int64) for ser in series]
    interval_ms = int(args.interval * 1000)
    scrapes = int(args.minutes * 60_000 // interval_ms)
    written = 0
    for k in range(scrapes):
        base = t0 + k * interval_ms
        writes = []
        for t in order:
            ts = base + phases[t]
            values = tg.values(t)
            clock[0] = max(clock[0], ts + 50)
            writes.append(store.write_columns(keys[t], ids[t], np.full(len(values), ts, dtype=np.int64),
                                              np.array(values), series[t] if k == 0 else ()))
            written += len(values)
        # the first scrapes index 100k series: a few targets at a time, as the writer's INDEXING_IN_FLIGHT
        step = 8 if k == 0 else len(writes)
        for i in range(0, len(writes), step):
            await asyncio.gather(*writes[i : i + step])
    return written


async def query_runs(store: Storage, args: argparse.Namespace, end_ms: int, node_pid: int | None = None) -> None:
    """``args.runs`` measured queries after one unmeasured; ``node_pid``: also the CPU of the
    Cassandra node's process per query (its idle CPU, a few ms per second, included)."""
    # the standalone's defaults (isolation of big queries on), its clock at the data's end
    engine = Engine(store, now_ms=lambda: end_ms + 2_000)
    start_ms = end_ms - int(args.window * 1000)
    params = {"query": QUERY, "start": f"{start_ms / 1000:.3f}", "end": f"{end_ms / 1000:.3f}",
              "step": f"{args.interval:g}"}
    cache = RangeQueryCache(engine) if args.range_cache else None
    if cache is not None:
        first_chunk = start_ms - (start_ms - start_ms % int(args.interval * 1000)) % (cache.chunk_steps * int(args.interval * 1000))
        print(f"range cache on: the query's first chunk starts {(start_ms - first_chunk) / 1000:g}s before it")
    async with TestClient(TestServer(make_app(engine, store, cache))) as client:

        async def once() -> bytes:
            resp = await client.get("/api/v1/query_range", params=params)
            body = await resp.read()
            if resp.status != 200:
                raise RuntimeError(f"query_range failed: {body[:300]!r}")
            return body

        first = await once()  # unmeasured: caches, page-ins
        prof = cProfile.Profile() if args.profile else None
        cpu, wall, node_cpu = [], [], []
        for _ in range(args.runs):
            n0 = proc_cpu_s(node_pid) if node_pid else 0.0
            c0, w0 = time.process_time(), time.perf_counter()
            if prof is not None:
                prof.enable()
            body = await once()
            if prof is not None:
                prof.disable()
            cpu.append((time.process_time() - c0) * 1000)
            wall.append((time.perf_counter() - w0) * 1000)
            if node_pid:
                node_cpu.append((proc_cpu_s(node_pid) - n0) * 1000)
            if body != first:
                raise RuntimeError("the answer changed between runs")
        if prof is not None:
            prof.dump_stats(args.profile)
    st = engine.last_stats
    print(f"query: {QUERY} over {args.window:g}s, step {args.interval:g}s ({args.runs} runs)")
    print(f"  CPU ms per query: median {statistics.median(cpu):.1f}, min {min(cpu):.1f}, max {max(cpu):.1f}")
    print(f"  wall ms per query: median {statistics.median(wall):.1f}, min {min(wall):.1f}")
    if node_cpu:
        # (/proc counts in 10 ms ticks: the mean over the runs is the figure)
        print(f"  Cassandra node CPU ms per query: mean {statistics.mean(node_cpu):.1f}, min {min(node_cpu):.0f}, "
              f"max {max(node_cpu):.0f}")
    print(f"  samples read {st.samples:,}, fetch {st.fetch_s * 1000:.1f} ms, eval {st.eval_s * 1000:.1f} ms, "
          f"isolated {st.isolated}; answer {len(first):,} bytes, digest {hashlib.sha256(first).hexdigest()[:12]}")


def backup(con: sqlite3.Connection, path: Path) -> None:
    dst = sqlite3.connect(path)
    try:
        con.backup(dst)
    finally:
        dst.close()


def shape(args: argparse.Namespace) -> dict[str, float]:
    return {"targets": args.targets, "series": args.series, "interval": args.interval, "minutes": args.minutes}


async def run_cassandra(args: argparse.Namespace) -> None:
    from services.cassandra.cassandra_node import CassandraNode, NodeError
    from services.proc import free_port
    from storage.cassandra_rollup import CassandraRollupStorage

    interval_ms = int(args.interval * 1000)
    d = Path(args.cassandra)
    d.mkdir(parents=True, exist_ok=True)
    try:
        node = CassandraNode.load(d)
    except NodeError:
        node = CassandraNode(d, native_port=free_port(), heap="1g")
    started = not node.is_running()
    node.start(timeout_s=300)
    meta = d / "bench_range.json"
    kept = json.loads(meta.read_text()) if meta.exists() else {}
    reuse = kept.get("shape") == shape(args)
    t0 = int(kept["t0"]) if reuse else (int(time.time() * 1000) // 300_000 - 2) * 300_000 + 120_000
    clock = [t0]
    loop = asyncio.get_running_loop()
    store = await loop.run_in_executor(None, lambda: CassandraRollupStorage.connect_sync(
        ["127.0.0.1"], node.port, "bench_range", create_schema=not reuse))
    store._now_ms = lambda: clock[0]
    try:
        if reuse:
            print(f"reusing keyspace bench_range in {d} (filled {time.ctime(t0 / 1000)})")
        else:
            c0, w0 = time.process_time(), time.perf_counter()
            n = await fill_cassandra(store, clock, args, t0)
            await loop.run_in_executor(None, node.nodetool, "flush", "bench_range")
            meta.write_text(json.dumps({"shape": shape(args), "t0": t0}))
            print(f"filled {n:,} samples ({args.targets} targets x {args.series} series, {args.minutes:g} min "
                  f"at {args.interval:g}s) in {time.perf_counter() - w0:.1f}s wall, "
                  f"{time.process_time() - c0:.1f}s CPU; flushed")
        end_ms = t0 + int(args.minutes * 60_000) - interval_ms
        clock[0] = end_ms + 2_000
        # as `ringmon web` opens it: a new connection, nothing cached from the writes
        reader = await loop.run_in_executor(None, lambda: CassandraRollupStorage.connect_sync(
            ["127.0.0.1"], node.port, "bench_range"))
        reader._now_ms = lambda: clock[0]
        try:
            await query_runs(reader, args, end_ms, node.pid or None)
        finally:
            reader.shutdown()
    finally:
        store.shutdown()
        if started and not args.keep_node:
            node.stop()
    print(f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


async def run(args: argparse.Namespace) -> None:
    interval_ms = int(args.interval * 1000)
    # Data starts 2 minutes into a 5-minute span: the writer's transpositions find no closed
    # span in 4 minutes, the query reads frames, as in bench/peers.py's few minutes.
    t0 = (int(time.time() * 1000) // 300_000 - 2) * 300_000 + 120_000
    saved = Path(args.db) if args.db else None
    meta = saved.with_suffix(saved.suffix + ".json") if saved else None
    with tempfile.TemporaryDirectory(prefix="rq-") as d:
        path = Path(d) / "ringmon.db"
        reuse = saved is not None and meta is not None and saved.exists() and meta.exists()
        if reuse:
            assert saved is not None and meta is not None
            kept = json.loads(meta.read_text())
            reuse = kept["shape"] == shape(args)
            if reuse:
                t0 = int(kept["t0"])
                shutil.copyfile(saved, path)
        clock = [t0]
        store = await SQLiteRollupStorage.open(path, now_ms=lambda: clock[0])
        try:
            if reuse:
                print(f"reusing {saved} (filled {time.ctime(t0 / 1000)})")
            else:
                c0, w0 = time.process_time(), time.perf_counter()
                n = await fill(store, clock, args, t0)
                print(f"filled {n:,} samples ({args.targets} targets x {args.series} series, {args.minutes:g} min "
                      f"at {args.interval:g}s) in {time.perf_counter() - w0:.1f}s wall, "
                      f"{time.process_time() - c0:.1f}s CPU")
                if saved is not None and meta is not None:
                    await store.run_read(lambda con: backup(con, saved))
                    meta.write_text(json.dumps({"shape": shape(args), "t0": t0}))
            frames = await store.run_read(lambda con: con.execute("SELECT count(*) FROM raw_frames").fetchone()[0])
            print(f"{frames:,} frames not transposed yet")
            end_ms = t0 + int(args.minutes * 60_000) - interval_ms
            clock[0] = end_ms + 2_000
            await query_runs(store, args, end_ms)
        finally:
            store._frames_written = False  # (a reused copy: leave it as it is)
            await store.close()
    print(f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--targets", type=int, default=200)
    p.add_argument("--series", type=int, default=500, help="series per target (plus the 5 synthetic ones)")
    p.add_argument("--interval", type=float, default=5.0, help="scrape interval and query step, seconds")
    p.add_argument("--minutes", type=float, default=4.0, help="minutes of scrapes written")
    p.add_argument("--window", type=float, default=120.0, help="the query's window, seconds (ending at the last scrape)")
    p.add_argument("--runs", type=int, default=15)
    p.add_argument("--profile", default="", help="write a cProfile of the measured runs here")
    p.add_argument("--db", default="", help="keep the filled store in this file and reuse it when it exists")
    p.add_argument("--cassandra", default="", metavar="DIR",
                   help="measure through a local Cassandra node kept in DIR (its keyspace reused when of the same shape)")
    p.add_argument("--keep-node", action="store_true", help="(--cassandra) leave the node running")
    p.add_argument("--range-cache", action="store_true",
                   help="answer through the range cache, as `ringmon web` and `ringmon standalone` do")
    args = p.parse_args(argv)
    np.seterr(all="ignore")
    tuned = tune_malloc()  # as every ``ringmon`` process does (cli/malloc_tuning.py)
    # A serving process loads the compiled kernels at its first big query (query.kernels); the
    # figures are those of one that has (RINGMON_KERNELS=numpy: the NumPy forms).
    print(f"query kernels: {'compiled (numba)' if kernels.load() is not None else 'NumPy'}")
    print(f"malloc thresholds {'raised as in ringmon' if tuned else 'glibc defaults'}")
    asyncio.run(run_cassandra(args) if args.cassandra else run(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
