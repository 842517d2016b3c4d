"""Write path on a real Cassandra for issue #20: a row per sample vs one frame row per scrape.

    .venv/bin/python bench/write_path_cassandra.py [--targets 20] [--series 500] [--scrapes 60]
        [--interval 5] [--reuse-dir DIR]

Starts a local Cassandra 5.0 node (``services/cassandra/cassandra_node.py``, 1 GB heap, data
in a temp dir; ``--reuse-dir`` uses a node started there instead) and writes the same
scrapes (``bench/write_path.py``'s node_exporter-shaped targets, parsed once, outside the
timings) into a fresh keyspace per variant:

* **rows (today)**: ``CassandraStorage.write`` of one ``SampleBatch`` per (target, scrape) -
  a row per sample in ``raw_recent``, unlogged batches (the series index is written by a
  first scrape before the clock starts); **built frames**: the same writes with the store's
  frames on (``storage/cassandra_frames.py``: a ``raw_frames`` row per scrape, XOR chains);
* **frame raw**: one row per (target, scrape) in ``frames`` partitioned by (target, hour),
  its value the float64 bits in layout order (``storage/frames.py``'s codec), table
  compression LZ4 like every Ringmon table; **frame raw zstd**: the same, table compression
  Zstd; **frame zlib**: zlib level 1 of the raw bits; **frame xor**: XOR with the target's
  previous frame, byte planes, zlib level 1 (``bench/write_path.py``'s ``encode_frame``).
  Frames of one scrape go out concurrently (``execute_async``), one scrape after another.

Printed per sample: the client's CPU (``time.process_time()``, driver threads included),
the Cassandra JVM's CPU over the writes and then over ``nodetool flush`` of the keyspace
(utime + stime of its pid in ``/proc/<pid>/stat``; the JVM's idle rate, measured first, is
printed beside), and the bytes of the keyspace's SSTables after the flush. Asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.write_path import BUCKET_MS, Scrapes, encode_frame, make_scrapes  # noqa: E402 - after the path insert
from services.cassandra.cassandra_node import CassandraNode  # noqa: E402
from services.proc import free_port  # noqa: E402
from storage.frames import encode_values, layout_id  # noqa: E402
from storage.model import SampleBatch  # noqa: E402

TICK_S = 1.0 / os.sysconf("SC_CLK_TCK")


def jvm_cpu_s(pid: int) -> float:
    """utime + stime of a process in seconds (/proc/<pid>/stat fields 14 and 15)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) * TICK_S


def keyspace_bytes(node: CassandraNode, keyspace: str) -> int:
    return sum(p.stat().st_size for p in (node.dir / "data" / keyspace).rglob("*") if p.is_file())


def frames_schema(ks: str, compressor: str) -> list[str]:
    opts = (f"compression = {{'class': '{compressor}', 'chunk_length_in_kb': 16}} "
            "AND compaction = {'class': 'TimeWindowCompactionStrategy', 'compaction_window_unit': 'HOURS', "
            "'compaction_window_size': 1} AND default_time_to_live = 86400")
    return [
        f"CREATE KEYSPACE {ks} WITH replication = {{'class': 'SimpleStrategy', 'replication_factor': 1}}",
        f"CREATE TABLE {ks}.frames (target text, bucket int, ts bigint, layout_id bigint, data blob, "
        f"PRIMARY KEY ((target, bucket), ts)) WITH CLUSTERING ORDER BY (ts ASC) AND {opts}",
        f"CREATE TABLE {ks}.layouts (target text, layout_id bigint, series_ids blob, "
        f"PRIMARY KEY ((target), layout_id)) WITH {opts}",
    ]


class Measure:
    """Client and JVM CPU of one variant, then the flush's JVM CPU and the bytes on disk."""

    def __init__(self, node: CassandraNode, idle_rate: float) -> None:
        self.node, self.idle_rate = node, idle_rate
        assert node.pid is not None
        self.pid = node.pid

    def run(self, name: str, keyspace: str, samples: int, write: Callable[[], None]) -> None:
        c0, j0, w0 = time.process_time(), jvm_cpu_s(self.pid), time.monotonic()
        write()
        c1, j1, w1 = time.process_time(), jvm_cpu_s(self.pid), time.monotonic()
        self.node.nodetool("flush", keyspace)
        j2 = jvm_cpu_s(self.pid)
        size = keyspace_bytes(self.node, keyspace)
        us = 1e6 / samples
        print(f"{name:<18} client {(c1 - c0) * us:6.2f} us  cassandra {(j1 - j0) * us:6.2f} us "
              f"(idle share {self.idle_rate * (w1 - w0) * us:5.2f})  flush {(j2 - j1) * us:5.2f} us  "
              f"{size / samples:6.2f} B/sample on disk  ({w1 - w0:.1f} s)", flush=True)


def bench_rows(node: CassandraNode, sc: Scrapes, m: Measure, built: bool = False) -> None:
    """Through ``CassandraStorage.write``: rows per sample (today), or the built frames."""
    from storage.cassandra import CassandraStorage

    ks = f"wp_{'built' if built else 'rows'}_{os.getpid()}"
    store = CassandraStorage.connect_sync([node.host], node.port, ks, create_schema=True)
    store.late_after_ms = 2**62  # the scrapes' clock is not the wall clock: none is late
    if not built:
        store.frame_min_samples = 2**31  # today's path: a row per sample
    n_t, n_s = len(sc.series), len(sc.series[0])

    async def first() -> None:
        await asyncio.gather(*(store.write(SampleBatch(f"node/h{t}:9100", sc.series[t], [int(sc.timestamps[0])] * n_s,
                                                       sc.values[t][0].tolist())) for t in range(n_t)))

    async def rest() -> None:
        for k in range(1, len(sc.timestamps)):
            ts = int(sc.timestamps[k])
            await asyncio.gather(*(store.write(SampleBatch(f"node/h{t}:9100", sc.series[t], [ts] * n_s,
                                                           sc.values[t][k].tolist())) for t in range(n_t)))

    asyncio.run(first())
    name = "built frames" if built else "rows (today)"
    m.run(name, ks, n_t * n_s * (len(sc.timestamps) - 1), lambda: asyncio.run(rest()))
    from storage.matchers import Matcher, MatchOp

    one = [Matcher(k, MatchOp.EQ, v) for k, v in sc.series[0][0].labels]
    whole = [Matcher("instance", MatchOp.EQ, "h0:9100"), Matcher("__name__", MatchOp.RE, ".+")]
    lo, hi = int(sc.timestamps[0]), int(sc.timestamps[-1])
    for what, matchers in (("one series", one), (f"{n_s} series of a target", whole)):
        best = (float("inf"), float("inf"))
        for _ in range(3):
            c0, j0 = time.process_time(), jvm_cpu_s(m.pid)
            got = asyncio.run(store.select(matchers, lo, hi))
            c, j = time.process_time() - c0, jvm_cpu_s(m.pid) - j0
            best = (c, j) if c + j < sum(best) else best
        assert got and len(got[0].timestamps) == len(sc.timestamps), "read back"
        print(f"{'':<18} read {what} over {len(sc.timestamps)} scrapes: client {best[0] * 1e3:.1f} ms, "
              f"cassandra {best[1] * 1e3:.1f} ms (best of 3)", flush=True)
    store.drop_keyspace_sync()
    store.shutdown()


def bench_frames(node: CassandraNode, sc: Scrapes, m: Measure, codec: str, compressor: str) -> None:
    from cassandra.cluster import Cluster

    ks = f"wp_frames_{codec}_{compressor[:4].lower()}_{os.getpid()}"
    cluster = Cluster([node.host], port=node.port, protocol_version=4)
    session = cluster.connect()
    for stmt in frames_schema(ks, compressor):
        session.execute(stmt, timeout=60)
    ins = session.prepare(f"INSERT INTO {ks}.frames (target, bucket, ts, layout_id, data) VALUES (?, ?, ?, ?, ?)")
    n_t, n_s = len(sc.series), len(sc.series[0])
    targets = [f"node/h{t}:9100" for t in range(n_t)]
    layouts = [np.array([s.id for s in sc.series[t]], dtype=np.int64) for t in range(n_t)]
    lids = [layout_id(ids) for ids in layouts]
    ins_layout = session.prepare(f"INSERT INTO {ks}.layouts (target, layout_id, series_ids) VALUES (?, ?, ?)")
    for t in range(n_t):  # written when a target's series set changes: here once, before the clock
        session.execute(ins_layout, (targets[t], lids[t], layouts[t].tobytes()))
    prev: list[np.ndarray | None] = [None] * n_t

    def write() -> None:
        for k in range(1, len(sc.timestamps)):
            ts = int(sc.timestamps[k])
            futures = []
            for t in range(n_t):
                v = sc.values[t][k]
                if codec == "raw":
                    data = encode_values(v)
                elif codec == "zlib":
                    data = zlib.compress(encode_values(v), 1)
                else:
                    data = encode_frame(v, None if ts % BUCKET_MS == 0 else prev[t])
                prev[t] = v
                futures.append(session.execute_async(ins, (targets[t], ts // BUCKET_MS, ts, lids[t], data)))
            for f in futures:
                f.result()

    name = f"frame {codec}" + (" zstd" if compressor.startswith("Zstd") else "")
    m.run(name, ks, n_t * n_s * (len(sc.timestamps) - 1), write)
    session.execute(f"DROP KEYSPACE {ks}", timeout=60)
    cluster.shutdown()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--targets", type=int, default=20)
    ap.add_argument("--series", type=int, default=500)
    ap.add_argument("--scrapes", type=int, default=60)
    ap.add_argument("--interval", type=float, default=5.0)
    ap.add_argument("--store-only", action="store_true", help="only the writes through CassandraStorage")
    ap.add_argument("--reuse-dir", help="a node started with cassandra_node.py start --dir DIR")
    a = ap.parse_args()
    sc = make_scrapes(a.targets, a.series, a.scrapes, a.interval)
    print(f"{a.targets} targets x {len(sc.series[0])} series x {a.scrapes} scrapes; load {os.getloadavg()}")
    with tempfile.TemporaryDirectory(prefix="wp-cass-") as tmp:
        if a.reuse_dir:
            node = CassandraNode.load(a.reuse_dir)
            node.start(timeout_s=240)
        else:
            node = CassandraNode(Path(tmp), native_port=free_port(), heap="1g", fast_unsafe=True)
            node.start(timeout_s=240)
        try:
            assert node.pid is not None
            j0, w0 = jvm_cpu_s(node.pid), time.monotonic()
            time.sleep(10)
            idle = (jvm_cpu_s(node.pid) - j0) / (time.monotonic() - w0)
            print(f"cassandra pid {node.pid}: idle {idle * 1000:.0f} ms of CPU per second")
            m = Measure(node, idle)
            bench_rows(node, sc, m, built=True)  # first: the rows' flushed keyspace compacts for a while
            bench_rows(node, sc, m)
            for codec, compressor in () if a.store_only else (
                    ("raw", "LZ4Compressor"), ("raw", "ZstdCompressor"), ("zlib", "LZ4Compressor"), ("xor", "LZ4Compressor")):
                bench_frames(node, sc, m, codec, compressor)
        finally:
            if not a.reuse_dir:
                node.stop()
    print(f"load {os.getloadavg()}")


if __name__ == "__main__":
    main()
