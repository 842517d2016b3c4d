"""Cassandra's CPU per stored sample at the cluster's write rate, through the real ``BatchingWriter``.

    .venv/bin/python bench/frame_writes.py [--targets 200] [--series 500] [--interval 5]
        [--seconds 60] [--groups 0,1] [--rounds 1] [--idle 20] [--dir NODE_DIR]

``bench/peers.py --systems ringmon-cluster`` found the node's CPU nearly all in its request
workers at ~40 frame writes/s: this bench isolates that path. ``--targets`` targets of
``--series`` node_exporter-shaped series (``bench/write_path.py``'s scrapes, parsed once,
cycled) are appended to a ``BatchingWriter`` on a real local Cassandra 5.0 node, each target
once per ``--interval`` at its own offset in the interval, as a scraper does (200 x 500 every
5 s: 40 appends/s, 20,000 samples/s), with the wall clock's timestamps. Every variant of
``--groups`` (the writer's ``group_s``: 0 = a request per record, as before grouping) runs
``--seconds`` per round, in turn, ``--rounds`` times, after an unmeasured first minute of
writes (the JVM compiles its write path) and writes into a fresh keyspace of its own.

Printed per run: samples stored, the node's CPU (utime + stime of its pid, /proc) per second
and per stored sample, gross and net of its idle rate (measured over ``--idle`` seconds
before the runs, nothing writing), the writer's requests (``write_frame_sets`` calls and
single-record writes) and the process's own CPU per sample. Starts its own node (1 GB heap,
temp dir) unless ``--dir`` names a running ``cassandra_node.py`` node. Asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.procfs import proc_cpu_s  # noqa: E402 - after the path insert
from bench.write_path import Scrapes, make_scrapes  # noqa: E402
from services.cassandra.cassandra_node import CassandraNode  # noqa: E402
from services.proc import free_port  # noqa: E402
from storage.cassandra import CassandraStorage  # noqa: E402
from storage.model import SampleBatch  # noqa: E402
from storage.writer import BatchingWriter  # noqa: E402

SCRAPES = 12  # distinct scrapes per target, cycled


class Counting(CassandraStorage):
    """The store, counting the writer's requests to it."""

    sets = 0
    singles = 0

    async def write_frame_sets(self, sets):  # type: ignore[no-untyped-def]
        self.sets += 1
        await super().write_frame_sets(sets)

    async def write_frames(self, *a, **kw):  # type: ignore[no-untyped-def]
        self.singles += 1
        await super().write_frames(*a, **kw)


async def paced(writer: BatchingWriter, sc: Scrapes, interval_s: float, seconds: float, k0: int) -> tuple[int, int]:
    """Appends each target once per interval at its own offset; (samples appended, next scrape no)."""
    n_t = len(sc.series)
    step = interval_s / n_t
    t0 = time.monotonic()
    i = 0
    samples = 0
    while True:
        due = t0 + i * step
        if due - t0 >= seconds:
            break
        await asyncio.sleep(max(0.0, due - time.monotonic()))
        t, k = i % n_t, k0 + i // n_t
        series = sc.series[t]
        now = int(time.time() * 1000)
        await writer.append(SampleBatch(f"node/h{t}:9100", series, [now] * len(series),
                                        sc.values[t][k % SCRAPES].tolist()))
        samples += len(series)
        i += 1
    return samples, k0 + i // n_t + 1


async def run(store: Counting, spool: Path, sc: Scrapes, a: argparse.Namespace, group_s: float,
              pid: int, idle_per_s: float, warm_s: float) -> None:
    writer = BatchingWriter(store, spool, group_s=group_s)
    k = 0
    if warm_s:
        _n, k = await paced(writer, sc, a.interval, warm_s, k)  # first sight indexes; the JVM compiles
        await writer.drain(300)
    store.sets = store.singles = 0
    stored0 = writer.stats.appended_samples
    c0, p0, w0 = proc_cpu_s(pid), time.process_time(), time.monotonic()
    n, k = await paced(writer, sc, a.interval, a.seconds, k)
    ok = await writer.drain(300)
    wall, cpu, own = time.monotonic() - w0, proc_cpu_s(pid) - c0, time.process_time() - p0
    assert writer.stats.appended_samples - stored0 == n
    print(f"group_s={group_s:g}: {n:,} samples in {wall:.1f} s (all stored: {ok}); requests: "
          f"{store.sets} frame sets + {store.singles} single records = {(store.sets + store.singles) / wall:.1f}/s; "
          f"Cassandra {cpu / wall * 1e3:.1f} CPU-ms/s = {cpu / n * 1e6:.2f} us/sample gross, "
          f"{(cpu - idle_per_s * wall) / n * 1e6:.2f} net of idle; writer process {own / n * 1e6:.2f} us/sample; "
          f"load {os.getloadavg()[0]:.1f}", flush=True)
    await writer.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--targets", type=int, default=200)
    ap.add_argument("--series", type=int, default=500)
    ap.add_argument("--interval", type=float, default=5.0)
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--groups", default="0,1", help="the writer's group_s values, comma-separated")
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--idle", type=float, default=20.0)
    ap.add_argument("--warmup", type=float, default=60.0, help="unmeasured writes before the first run")
    ap.add_argument("--dir", help="a node started with cassandra_node.py start --dir DIR")
    a = ap.parse_args()
    groups = [float(g) for g in a.groups.split(",")]
    print(f"{time.strftime('%H:%M:%S', time.gmtime())} UTC, load {os.getloadavg()[0]:.1f}; "
          f"{a.targets} targets x {a.series} series every {a.interval:g} s", flush=True)
    sc = make_scrapes(a.targets, a.series, SCRAPES, a.interval)
    with tempfile.TemporaryDirectory(prefix="ringmon-fw-") as d:
        tmp = Path(d)
        node = CassandraNode.load(a.dir) if a.dir else CassandraNode(tmp / "node", native_port=free_port(), heap="1g")
        if not a.dir:
            node.start(timeout_s=300)
        assert node.pid
        try:
            c0 = proc_cpu_s(node.pid)
            time.sleep(a.idle)
            idle = (proc_cpu_s(node.pid) - c0) / a.idle
            print(f"Cassandra idle: {idle * 1e3:.1f} CPU-ms/s "
                  f"({idle / (a.targets * a.series / a.interval) * 1e6:.2f} us per sample at this rate)", flush=True)
            for r in range(a.rounds):
                for g in groups:
                    ks = f"fw_{os.getpid()}_{r}_{str(g).replace('.', '_')}"
                    store = Counting.connect_sync([node.host], node.port, ks, create_schema=True)
                    try:
                        asyncio.run(run(store, tmp / f"spool-{ks}", sc, a, g, node.pid, idle,
                                        a.warmup if r == 0 and g == groups[0] else min(a.warmup, a.interval * 2)))
                    finally:
                        store.drop_keyspace_sync()
                        store.shutdown()
        finally:
            if not a.dir:
                node.stop()
    print(f"{time.strftime('%H:%M:%S', time.gmtime())} UTC, load {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
