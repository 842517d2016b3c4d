"""Write path micro-benchmark for issue #20: per-series appends vs scrape frames vs head chunks, on SQLite.

    .venv/bin/python bench/write_path.py [--targets 20] [--series 500] [--scrapes 60] [--interval 5]

The same scrapes (node_exporter-shaped values from ``bench/peers.py``'s targets, parsed once,
outside the timings) are written three ways into a fresh SQLite file each; CPU is
``time.process_time()`` of the whole process (SQLiteStorage's writer thread included), bytes
are the database file after closing it. Printed per sample:

* **appends (today)**: ``SQLiteStorage.write`` of one ``SampleBatch`` per scrape - every
  sample an upsert into its series' 5-minute blob (``data || excluded.data``);
* **frame**: one row per (target, scrape) - timestamp, layout id and the values in layout
  order, XOR'd with the target's previous frame in the same bucket, byte planes shuffled,
  zlib level 1 - in one INSERT; the layout row is written once. Also the frame without the
  XOR (zlib of the raw float64s), and the seal-side cost the frame path adds: decoding a
  target's window of frames and transposing it into per-series columns (``encode_block`` of
  each column is what the rollup job already does today, timed separately);
* **head chunks**: the scraper's per-series head in memory (a column write per scrape into a
  series x samples matrix) with a write-ahead log entry per scrape (the frame's bytes,
  appended to a file), then the flush: ``encode_block`` per series and one row per series;
* one series read back from recent data: from today's blobs (``SQLiteStorage.select``) and
  from frames (every frame of its target decoded, one column kept);
* **built: frames** - the write path ``SQLiteStorage`` runs now (``storage/frames.py``'s
  codec: raw float64s in layout order, one ``raw_frames`` row per scrape), its clock
  following the scrapes so the writer transposes closed spans into the per-series chunks
  by itself, once with 1-minute spans and once with 5-minute ones: write CPU per sample
  with the transposition included (and the transposition's share, timed on the writer
  thread), and reads of one series and of 800 (40 of each target) over the last hour
  (best of 3): from the store as the writer left it (chunks plus a head of frames) and with
  everything in chunks.

Prints figures, asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
import sys
import tempfile
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.peers import TargetBody, node_series  # noqa: E402 - after the path insert
from storage.model import SampleBatch  # noqa: E402

BUCKET_MS = 3_600_000  # frames of one target and hour share a partition; the first of a bucket is whole


@dataclass
class Scrapes:
    """Every target's series and its values per scrape: ``values[t]`` is scrapes x series."""

    series: list[list]  # per target: storage.model.Series in layout order
    values: list[np.ndarray]
    timestamps: np.ndarray  # ms, one per scrape (all targets scraped at once)


def make_scrapes(targets: int, series: int, scrapes: int, interval_s: float) -> Scrapes:
    from scraper.exposition import parse
    from storage.model import Series, make_labels

    layout = node_series(series)
    t0 = (int(time.time() * 1000) // BUCKET_MS) * BUCKET_MS
    out_series: list[list] = []
    out_values: list[np.ndarray] = []
    for t in range(targets):
        body = TargetBody(t, layout)
        rows = [parse(body.render()) for _ in range(scrapes)]
        out_series.append([Series.of(make_labels(s.name, **dict(s.labels), job="node", instance=f"h{t}:9100"))
                           for s in rows[0]])
        out_values.append(np.array([[s.value for s in r] for r in rows], dtype=np.float64))
    ts = t0 + np.arange(scrapes, dtype=np.int64) * int(interval_s * 1000)
    return Scrapes(out_series, out_values, ts)


def shuffle_bytes(bits: np.ndarray) -> bytes:
    """The 8 byte planes of 64-bit words one after another (high bytes of XORs are mostly 0)."""
    return np.ascontiguousarray(bits.view(np.uint8).reshape(-1, 8).T).tobytes()


def unshuffle_bytes(data: bytes, n: int) -> np.ndarray:
    return np.frombuffer(data, dtype=np.uint8).reshape(8, n).T.copy().view(np.uint64).reshape(n)


def encode_frame(values: np.ndarray, previous: np.ndarray | None) -> bytes:
    bits = values.view(np.uint64)
    delta = bits if previous is None else bits ^ previous.view(np.uint64)
    return zlib.compress(shuffle_bytes(delta), 1)


def decode_frames(frames: list[bytes], n: int) -> np.ndarray:
    """scrapes x series float64 from a bucket's frames (XOR chain from its first)."""
    out = np.empty((len(frames), n), dtype=np.uint64)
    prev = None
    for i, f in enumerate(frames):
        d = unshuffle_bytes(zlib.decompress(f), n)
        prev = d if prev is None else prev ^ d
        out[i] = prev
    return out.view(np.float64)


FRAME_SCHEMA = """
CREATE TABLE frames (target TEXT, bucket INTEGER, ts INTEGER, layout INTEGER, data BLOB,
                     PRIMARY KEY (target, bucket, ts));
CREATE TABLE layouts (layout INTEGER PRIMARY KEY, series BLOB);
"""


def connect(path: Path) -> sqlite3.Connection:
    con = sqlite3.connect(path, isolation_level=None)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("PRAGMA synchronous=NORMAL")
    return con


def file_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.parent.glob(path.name + "*"))


async def bench_appends(sc: Scrapes, path: Path) -> tuple[float, int, float]:
    """Today's path; returns (CPU s, bytes, one-series read CPU s)."""
    from storage.matchers import Matcher, MatchOp
    from storage.sqlite import SQLiteStorage

    store = await SQLiteStorage.open(path)
    store.frame_min_samples = 2**31  # today's path: no frames
    n_t, n_s = len(sc.series), len(sc.series[0])
    # the series index rows (first scrape) are written before the clock starts: both paths have them
    for t in range(n_t):
        await store.write(SampleBatch(f"node/h{t}:9100", sc.series[t], [int(sc.timestamps[0])] * n_s,
                                      sc.values[t][0].tolist()))
    cpu0 = time.process_time()
    for k in range(1, len(sc.timestamps)):
        ts = int(sc.timestamps[k])
        for t in range(n_t):
            await store.write(SampleBatch(f"node/h{t}:9100", sc.series[t], [ts] * n_s, sc.values[t][k].tolist()))
    cpu = time.process_time() - cpu0
    one = sc.series[0][0]
    matchers = [Matcher(k, MatchOp.EQ, v) for k, v in one.labels]
    r0 = time.process_time()
    got = await store.select(matchers, int(sc.timestamps[0]), int(sc.timestamps[-1]))
    read = time.process_time() - r0
    assert got and len(got[0].timestamps) == len(sc.timestamps), "read back the series"
    await store.close()
    return cpu, file_bytes(path), read


def bench_frames(sc: Scrapes, path: Path, codec: str) -> tuple[float, int, int]:
    """(CPU s, file bytes, frame payload bytes); ``codec``: "xor" (XOR with the previous
    frame, planes, zlib), "zlib" (zlib of the raw values), "raw" (the built path's)."""
    from storage.frames import encode_values

    con = connect(path)
    con.executescript(FRAME_SCHEMA)
    n_t = len(sc.series)
    for t in range(n_t):  # one layout per target, written when its series set changes (here: once)
        con.execute("INSERT INTO layouts VALUES (?, ?)",
                    (t, zlib.compress(np.array([s.id for s in sc.series[t]], dtype=np.int64).tobytes())))
    prev: list[np.ndarray | None] = [None] * n_t
    cpu0 = time.process_time()
    for k in range(1, len(sc.timestamps)):
        ts = int(sc.timestamps[k])
        for t in range(n_t):
            v = sc.values[t][k]
            data = encode_values(v) if codec == "raw" else encode_frame(v, prev[t] if codec == "xor" else None)
            prev[t] = v
            con.execute("BEGIN")
            con.execute("INSERT INTO frames VALUES (?,?,?,?,?)", (f"node/h{t}:9100", ts // BUCKET_MS, ts, t, data))
            con.execute("COMMIT")
    cpu = time.process_time() - cpu0
    payload = int(con.execute("SELECT sum(length(data)) FROM frames").fetchone()[0])
    con.close()
    return cpu, file_bytes(path), payload


@dataclass
class Built:
    """Figures of the built frame path (CPU in seconds)."""

    write: float  # every write, the writer's own transpositions included
    transpose: float  # their share (thread CPU of the writer's transpositions)
    frames_left: int  # frames the writer had not transposed yet at the end (the head)
    reads: dict[str, float]


async def bench_built(sc: Scrapes, path: Path, span_ms: int) -> Built:
    """The write path SQLiteStorage runs, the clock at each scrape's time."""
    from storage.sqlite import FOREVER_MS, SQLiteStorage

    clock = [int(sc.timestamps[0])]
    store = await SQLiteStorage.open(path, now_ms=lambda: clock[0])
    store.frame_span_ms = span_ms
    spent = [0.0]
    transpose = store._transpose_sync

    def timed(before_ms: int) -> int:
        t0 = time.thread_time()
        try:
            return transpose(before_ms)
        finally:
            spent[0] += time.thread_time() - t0

    store._transpose_sync = timed  # type: ignore[method-assign]
    n_t, n_s = len(sc.series), len(sc.series[0])
    targets = [f"node/h{t}:9100" for t in range(n_t)]
    for t in range(n_t):  # the index rows, as for today's path
        await store.write(SampleBatch(targets[t], sc.series[t], [clock[0]] * n_s, sc.values[t][0].tolist()))
    cpu0 = time.process_time()
    for k in range(1, len(sc.timestamps)):
        clock[0] = ts = int(sc.timestamps[k])
        for t in range(n_t):
            await store.write(SampleBatch(targets[t], sc.series[t], [ts] * n_s, sc.values[t][k].tolist()))
    cpu = time.process_time() - cpu0
    in_writes = spent[0]
    left = await store.run_read(lambda con: int(con.execute("SELECT count(*) FROM raw_frames").fetchone()[0]))
    end = int(sc.timestamps[-1]) + 1
    start = end - 3_600_000
    one = [sc.series[0][0].id]
    many = [s.id for t in range(n_t) for s in sc.series[t][: 800 // n_t]]
    reads = {}
    for state in ("head", "chunks"):
        if state == "chunks":
            await store.transpose_frames(FOREVER_MS)
        for name, ids in (("one", one), ("800", many)):

            def read(con: sqlite3.Connection, ids: list[int] = ids) -> dict[int, tuple[np.ndarray, np.ndarray]]:
                return store.raw_samples(con, ids, start, end)

            best = float("inf")
            for _ in range(3):  # the best of 3: the first read after a big commit pays for the WAL's pages
                r0 = time.process_time()
                got = await store.run_read(read)
                best = min(best, time.process_time() - r0)
            reads[f"{name} {state}"] = best
            due = int(np.count_nonzero((sc.timestamps >= start) & (sc.timestamps < end)))
            assert len(got) == len(ids) and all(v[0].size == due for v in got.values()), "every sample read back"
    store.frame_span_ms = FOREVER_MS
    await store.close()
    return Built(cpu, in_writes, left, reads)


def bench_frame_reads(sc: Scrapes, path: Path) -> tuple[float, float, int]:
    """(CPU s to read one series back from frames, CPU s to transpose every target's window, samples)."""
    con = connect(path)
    n_s = len(sc.series[0])
    r0 = time.process_time()
    rows = con.execute("SELECT ts, data FROM frames WHERE target = ? AND bucket = ? ORDER BY ts",
                       ("node/h0:9100", int(sc.timestamps[1]) // BUCKET_MS)).fetchall()
    one = decode_frames([d for _, d in rows], n_s)[:, 0].copy()
    read = time.process_time() - r0
    assert np.array_equal(one, sc.values[0][1:, 0]), "frames read back bit for bit"
    t0 = time.process_time()
    samples = 0
    for t in range(len(sc.series)):
        rows = con.execute("SELECT ts, data FROM frames WHERE target = ? AND bucket = ? ORDER BY ts",
                           (f"node/h{t}:9100", int(sc.timestamps[1]) // BUCKET_MS)).fetchall()
        matrix = decode_frames([d for _, d in rows], n_s)
        columns = np.ascontiguousarray(matrix.T)  # series x scrapes: what per-series blocks are cut from
        samples += columns.size
    transpose = time.process_time() - t0
    con.close()
    return read, transpose, samples


def bench_encode_blocks(sc: Scrapes) -> tuple[float, int, int]:
    """encode_block of every series' window: the rollup seal's (and a head flush's) encoding."""
    from storage.blocks import encode_block

    ts = sc.timestamps[1:]
    c0 = time.process_time()
    size = 0
    for t in range(len(sc.series)):
        cols = np.ascontiguousarray(sc.values[t][1:].T)
        for col in cols:
            size += len(encode_block(ts, col))
    return time.process_time() - c0, size, sum(v[1:].size for v in sc.values)


def bench_head_chunks(sc: Scrapes, path: Path) -> tuple[float, float, int]:
    """(CPU s of the per-scrape part: WAL append + head column write, CPU s of the flush, bytes)."""
    from storage.blocks import encode_block

    n_t, n_s, n_k = len(sc.series), len(sc.series[0]), len(sc.timestamps) - 1
    heads = [np.empty((n_s, n_k), dtype=np.float64) for _ in range(n_t)]
    prev: list[np.ndarray | None] = [None] * n_t
    wal_path = path.with_suffix(".wal-log")
    c0 = time.process_time()
    with open(wal_path, "ab") as wal:
        for k in range(1, len(sc.timestamps)):
            for t in range(n_t):
                v = sc.values[t][k]
                data = encode_frame(v, prev[t])
                prev[t] = v
                wal.write(len(data).to_bytes(4, "little") + data)
                wal.flush()
                heads[t][:, k - 1] = v
    append = time.process_time() - c0
    con = connect(path)
    con.execute("CREATE TABLE chunks (series_id INTEGER, start_ts INTEGER, data BLOB, PRIMARY KEY (series_id, start_ts))"
                " WITHOUT ROWID")
    ts = sc.timestamps[1:]
    f0 = time.process_time()
    for t in range(n_t):
        rows = [(s.id, int(ts[0]), encode_block(ts, heads[t][i])) for i, s in enumerate(sc.series[t])]
        con.execute("BEGIN")
        con.executemany("INSERT INTO chunks VALUES (?,?,?)", rows)
        con.execute("COMMIT")
    flush = time.process_time() - f0
    con.close()
    return append, flush, file_bytes(path)


def us(cpu: float, samples: int) -> str:
    return f"{cpu / samples * 1e6:7.3f} us/sample"


def print_design(sc: Scrapes, d: Path, n: int, args: argparse.Namespace) -> None:
    """The design comparison: today's path, frame codecs, the seal's transposition, head chunks."""
    a_cpu, a_bytes, a_read = asyncio.run(bench_appends(sc, d / "appends.db"))
    f_cpu, f_bytes, f_payload = bench_frames(sc, d / "frames.db", "xor")
    z_cpu, z_bytes, z_payload = bench_frames(sc, d / "frames_plain.db", "zlib")
    r_cpu, r_bytes, r_payload = bench_frames(sc, d / "frames_raw.db", "raw")
    f_read, f_transpose, f_samples = bench_frame_reads(sc, d / "frames.db")
    e_cpu, e_bytes, e_samples = bench_encode_blocks(sc)
    h_append, h_flush, h_bytes = bench_head_chunks(sc, d / "heads.db")
    print(f"  appends (today): upsert per sample    {us(a_cpu, n)}  {a_bytes / n:6.1f} bytes/sample on disk "
          f"(series index included)")
    print(f"  frame per scrape, XOR + planes + zlib {us(f_cpu, n)}  {f_bytes / n:6.2f} bytes/sample on disk "
          f"({f_payload / n:.2f} in the frames)")
    print(f"  frame per scrape, zlib of raw values  {us(z_cpu, n)}  {z_bytes / n:6.2f} bytes/sample on disk "
          f"({z_payload / n:.2f} in the frames)")
    print(f"  frame per scrape, raw values (built)  {us(r_cpu, n)}  {r_bytes / n:6.2f} bytes/sample on disk "
          f"({r_payload / n:.2f} in the frames)")
    print(f"  frames -> per-series columns (seal)   {us(f_transpose, f_samples)}  (decode + transpose a window)")
    print(f"  encode_block per series (seal, both)  {us(e_cpu, e_samples)}  {e_bytes / e_samples:6.2f} bytes/sample "
          f"sealed")
    print(f"  head chunks: WAL + head per scrape    {us(h_append, n)}; flush {us(h_flush, n)} "
          f"(encode_block + a row per series), {h_bytes / n:6.2f} bytes/sample on disk; head in memory "
          f"{8 * args.scrapes} bytes/series for {args.scrapes} raw samples")
    print(f"  one series, {args.scrapes} samples back: from appends {a_read * 1e3:.2f} ms CPU, from frames "
          f"{f_read * 1e3:.2f} ms CPU (its target's {args.series} series decoded)")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--targets", type=int, default=20)
    p.add_argument("--series", type=int, default=500, help="series per target")
    p.add_argument("--scrapes", type=int, default=60, help="scrapes per target (60 x 5 s: one 5-minute blob)")
    p.add_argument("--interval", type=float, default=5.0)
    p.add_argument("--built-only", action="store_true",
                   help="only the built frame path (e.g. --scrapes 720 for a whole hour of reads)")
    args = p.parse_args(argv)
    import os

    sc = make_scrapes(args.targets, args.series, args.scrapes + 1, args.interval)
    n = args.targets * args.series * args.scrapes  # samples written in the timed part
    print(f"write_path: {args.targets} targets x {args.series} series x {args.scrapes} scrapes = {n:,} samples, "
          f"load {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    with tempfile.TemporaryDirectory(prefix="ringmon-write-path-") as tmp:
        d = Path(tmp)
        if not args.built_only:
            print_design(sc, d, n, args)
        for span in (1, 5):
            b = asyncio.run(bench_built(sc, d / f"built{span}.db", span * 60_000))
            r = b.reads
            print(f"  built: frames, {span}-min spans transposed  {us(b.write, n)} written (transposition "
                  f"{us(b.transpose, n)} of it), head left {b.frames_left} frames; last hour read CPU: one series "
                  f"{r['one head'] * 1e3:.2f} ms (all in chunks {r['one chunks'] * 1e3:.2f}), 800 series "
                  f"{r['800 head'] * 1e3:.1f} ms (all in chunks {r['800 chunks'] * 1e3:.1f})")
    print(f"  load after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
