"""Benchmark of sealing and rollups on node_exporter-like data (prints figures, asserts nothing).

Also the home of ``node_exporter_host()``, the synthetic host the tests and the benchmark
share: per host ~600 series in the proportions node_exporter exposes them - constant
series (info, sizes, idle interfaces), integer counters (bytes, packets) with an
occasional reset, CPU-seconds counters with 2 decimals, integer memory/filesystem gauges,
load averages with 2 decimals, millisecond io-time counters, and full-precision floats
(scrape and GC durations). All series of a host share the scrape timestamps.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypedDict

import numpy as np

if TYPE_CHECKING:
    from services.cassandra.cassandra_node import CassandraNode
    from storage.cassandra_rollup import CassandraRollupStorage
    from storage.rollup_job import RollupJob

STEP_MS = 10_000
LATENESS_MS = np.array([0, 1, 2, 3, 4, 5, 15, 20])
LATENESS_P = np.array([0.665, 0.24, 0.02, 0.04, 0.01, 0.015, 0.005, 0.005])


def node_exporter_host(
    rng: np.random.Generator,
    n_samples: int,
    t0_ms: int,
    jitter_ms: int = 0,
    step_ms: int = STEP_MS,
    late: bool = False,
) -> list[tuple[np.ndarray, np.ndarray]]:
    """(timestamps, values) of every series of one host over ``n_samples`` scrapes.

    ``jitter_ms`` adds uniform +-jitter to each scrape timestamp (0 = aligned scrapes, as a
    scraper that snaps timestamps to its schedule, like Prometheus, produces). ``late``
    adds the wake-up lateness of an asyncio timer measured on a loaded 2-core box
    (0 ms 66%, 1 ms 24%, 2-5 ms 8.5%, 15-20 ms 1%): a scraper stamping ``time.time()``.
    """
    n = n_samples
    ts = t0_ms + np.arange(n, dtype=np.int64) * step_ms
    if jitter_ms:
        ts = ts + rng.integers(-jitter_ms, jitter_ms + 1, n)
    if late:
        ts = ts + rng.choice(LATENESS_MS, n, p=LATENESS_P)
    out: list[tuple[np.ndarray, np.ndarray]] = []

    def add(v: np.ndarray) -> None:
        out.append((ts, np.asarray(v, dtype=np.float64)))

    for _ in range(180):  # constant: info metrics, sizes, idle interfaces, flags
        add(np.full(n, float(rng.choice([0, 1, 2, 8, 4096 * int(rng.integers(1, 10**6)), 1e9]))))
    for _ in range(150):  # integer counters, some idle, a few resets
        rate = float(rng.choice([0, 1, 50, 1000, 1e5, 1e6]))
        inc = rng.poisson(rate * step_ms / 1000, n).astype(np.float64) if rate else np.zeros(n)
        v = float(rng.integers(0, 10**9)) + np.cumsum(inc)
        if rng.random() < 0.05:
            k = int(rng.integers(1, n)) if n > 1 else 0
            v[k:] -= v[k - 1] if k else 0.0
        add(v)
    for _ in range(90):  # CPU seconds: counters with 2 decimals
        r = float(rng.choice([0.01, 0.1, 1.0, 9.9]))
        inc = np.round(rng.normal(r, r * 0.1 + 0.005, n).clip(0), 2)
        add(np.round(int(rng.integers(0, 10**7)) / 100 + np.cumsum(inc), 2))
    for _ in range(60):  # memory / filesystem bytes: integer gauges in pages
        base = int(rng.integers(10**6, 10**10)) // 4096 * 4096
        add(base + np.cumsum(rng.integers(-200, 201, n) * 4096 * (rng.random(n) < 0.5)).astype(np.float64))
    for _ in range(30):  # load averages: gauges with 2 decimals
        add(np.round(np.abs(np.cumsum(rng.normal(0, 0.05, n))) + 0.5, 2))
    for _ in range(60):  # io time seconds: counters with 3 decimals
        add(np.round(np.cumsum(rng.integers(0, 50, n)) / 1000 + int(rng.integers(0, 10**6)) / 1000, 3))
    for _ in range(30):  # durations, timestamps: full-precision floats
        add(rng.random(n) * float(rng.choice([1e-3, 1.0, 1e9])))
    return out


# -- benchmark ------------------------------------------------------------------------------


class Profile(TypedDict, total=False):
    """How a synthetic host's scrape timestamps stray (``node_exporter_host``'s keywords)."""

    jitter_ms: int
    late: bool


PROFILES: dict[str, Profile] = {"aligned": {}, "scraper lateness": {"late": True}, "uniform +-2 ms": {"jitter_ms": 2}}


def _hosts(n_hosts: int, n_samples: int, t0_ms: int, profile: str,
           seed: int = 1) -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(seed)
    series = []
    for _ in range(n_hosts):
        series += node_exporter_host(rng, n_samples, t0_ms, **PROFILES[profile])
    return series


def bench_codec(n_hosts: int) -> None:
    import time

    from storage.blocks import decode_block, encode_block

    print("== block codec (one core), node_exporter-like hosts, 10 s scrape interval ==")
    print(
        f"{'timestamps':>18} {'block':>6} {'bytes/sample':>13} {'encode samples/s':>17} {'decode samples/s':>17}"
    )
    t0 = 1_700_000_000_000 // 86_400_000 * 86_400_000
    for label in PROFILES:
        for hours in (1, 2, 24):
            data = _hosts(n_hosts if hours < 24 else 1, hours * 360, t0, label)
            total = sum(len(ts) for ts, _ in data)
            start = time.process_time()
            blocks = [encode_block(ts, v) for ts, v in data]
            enc = time.process_time() - start
            start = time.process_time()
            for b in blocks:
                decode_block(b)
            dec = time.process_time() - start
            print(
                f"{label:>18} {hours:>5}h {sum(map(len, blocks)) / total:13.3f} "
                f"{total / enc:17,.0f} {total / dec:17,.0f}"
            )


def bench_seal_and_rollup(n_hosts: int) -> None:
    import time

    from storage.base import SeriesData
    from storage.blocks import encode_columns
    from storage.model import Series, make_labels
    from storage.rollup_job import compute_window

    print("\n== seal + 1m + 1h rollup of one 2 h window (compute_window, one core) ==")
    t0 = 1_700_000_000_000 // 86_400_000 * 86_400_000
    window = 2 * 3_600_000
    for label in PROFILES:
        data = _hosts(n_hosts, 720 + 30, t0 - 300_000, label)
        sds = [SeriesData(Series.of(make_labels("bench", i=str(i))), ts, v) for i, (ts, v) in enumerate(data)]
        start = time.process_time()
        blocks, minutes, hours = compute_window(sds, t0, t0 + window)
        cpu = time.process_time() - start
        sealed = sum(b.count for b in blocks)
        print(
            f"{label:>18}: {len(sds)} series, {sealed:,} samples sealed at {sealed / cpu:,.0f} samples/s per core "
            f"({sum(len(b.data) for b in blocks) / sealed:.3f} bytes/sample in blocks)"
        )
    # Rollup points as blocks (how compact 1m/1h aggregates get if stored encoded).
    day = [r.rollup for r in minutes]
    pts = sum(len(r) for r in day)
    size = sum(len(encode_columns(r.timestamps, list(r.columns().values()))) for r in day)
    print(
        f"  1m aggregates encoded per series-window block: {size / pts:.2f} bytes per 1m point (6 aggregates)"
    )


async def _bench_sqlite(n_hosts: int, hours: int, tmp: str, late: bool = False) -> None:
    import time

    from storage.base import AGGREGATES, HOUR_MS, MINUTE_MS, Resolution
    from storage.model import SampleBatch, Series, make_labels
    from storage.rollup import Rollup
    from storage.rollup_job import RollupJob, RollupRows
    from storage.rollup_lease import LocalShardLease
    from storage.sqlite_rollup import SQLiteRollupStorage

    print(f"\n== RollupJob on SQLite: {n_hosts} hosts x {hours} h at 10 s"
          f"{', a scraper lateness' if late else ', aligned timestamps'} ==")
    t0 = 1_700_000_000_000 // 86_400_000 * 86_400_000
    store = await SQLiteRollupStorage.open(f"{tmp}/bench.db")
    rng = np.random.default_rng(2)
    total = 0
    for h in range(n_hosts):
        series: list[Series] = []
        batch = SampleBatch(f"bench/h{h}:9100", series)
        for i, (ts, v) in enumerate(node_exporter_host(rng, hours * 360, t0, jitter_ms=0, late=late)):
            s = Series.of(make_labels("bench_metric", instance=f"h{h}:9100", i=str(i)))
            series.extend([s] * len(ts))
            batch.timestamps.extend(ts.tolist())
            batch.values.extend(v.tolist())
            total += len(ts)
        await store.write(batch)
    job = RollupJob(store, LocalShardLease(f"{tmp}/locks"), now_ms=lambda: t0 + (hours + 1) * HOUR_MS)
    wall, cpu = time.perf_counter(), time.process_time()
    done = await job.run_once(initial_start_ms=t0)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    sealed = sum(r.samples for r in done)
    print(
        f"  {len(done)} shard windows, {sealed:,} samples: {sealed / wall:,.0f} samples/s wall, "
        f"{sealed / cpu:,.0f} samples/s per core (CPU time, incl. SQLite reads/writes), "
        f"{cpu / sealed * 1e6:.2f} us CPU per sample"
    )
    from bench.peers import sqlite_raw_bytes_by_name

    await store.close()
    by_name, _, blobs = sqlite_raw_bytes_by_name(Path(f"{tmp}/bench.db"))
    raw, times = sum(by_name.values()), by_name.get("raw_block_times", 0)
    blocks = sum(r.block_bytes for r in done)
    print(f"  raw on disk after sealing: {raw / total:.3f} bytes/sample (raw tables and their indexes; "
          f"the blocks' bytes alone {blocks / sealed:.3f} as sealed, {blobs / sealed:.3f} as stored with "
          f"{times / sealed:.3f} of timestamp frames apart)")
    store = await SQLiteRollupStorage.open(f"{tmp}/bench.db")

    # Read latency of one series: 30 d of 1m and 1 y of 1h rows.
    sid = 4242
    m_ts = t0 - 30 * 86_400_000 + np.arange(30 * 1440, dtype=np.int64) * MINUTE_MS
    h_ts = t0 - 365 * 86_400_000 + np.arange(365 * 24, dtype=np.int64) * HOUR_MS
    for res, ts in ((Resolution.MINUTE, m_ts), (Resolution.HOUR, h_ts)):
        n = len(ts)
        cols = {k: rng.random(n) for k in AGGREGATES}
        await store.write_rollups(res, [RollupRows(sid, Rollup.from_columns(ts, cols))])
    for label, res, ts in (("30 d of 1m", Resolution.MINUTE, m_ts), ("1 y of 1h", Resolution.HOUR, h_ts)):
        lat = []
        for _ in range(15):
            t = time.perf_counter()
            r = await store.read_rollup(res, sid, int(ts[0]), int(ts[-1]))
            lat.append(time.perf_counter() - t)
            assert len(r) == len(ts)
        print(f"  read {label} ({len(ts)} points) of one series: p50 {np.median(lat) * 1000:.1f} ms")
    await store.close()


async def _bench_sqlite_short(n_hosts: int, minutes: int, step_s: int, tmp: str, reads: int = 7, keep: str = "") -> None:
    """``bench/peers.py``'s standalone seal, cheaply: ``n_hosts`` node_exporter-like targets
    written one batch per scrape (``step_s``, a scraper's lateness) for ``minutes`` at the
    store's clock (so in frames, with their layouts, as the scraper writes them), sealed by
    the rollup job once its window closed (one window: ~108 samples per series at 9 minutes of
    5 s scrapes, as in ``bench/peers.py``'s window). Prints raw bytes on disk per sample by
    table and index, the seal's CPU, and reads of sealed blocks: one series, one metric of
    every target, every series (CPU ms, median of ``reads``; cold: the store's kept blocks
    and times dropped before each)."""
    import hashlib
    import shutil
    import sqlite3
    import statistics
    import time

    import storage.blocks
    from bench.peers import sqlite_raw_bytes_by_name
    from storage.base import DAY_MS, HOUR_MS, MINUTE_MS
    from storage.blocks import TIMES
    from storage.matchers import Matcher, MatchOp
    from storage.model import SampleBatch, Series, make_labels
    from storage.rollup_job import RollupJob
    from storage.rollup_lease import LocalShardLease
    from storage.sqlite_rollup import SQLiteRollupStorage
    group_times = getattr(storage.blocks, "GROUP_TIMES", None)  # (None: code before grouped blocks)

    print(f"\n== RollupJob on SQLite, a short window: {n_hosts} targets x {minutes} min at {step_s} s, "
          "a scraper's lateness, written as scrapes ==")
    base = 1_700_000_000_000 // DAY_MS * DAY_MS + 10 * DAY_MS + 30 * MINUTE_MS
    clock = [base]
    path = f"{tmp}/short.db"
    store = await SQLiteRollupStorage.open(path, now_ms=lambda: clock[0])
    rng = np.random.default_rng(7)
    n = minutes * 60 // step_s
    hosts = [node_exporter_host(rng, n, base, step_ms=step_s * 1000, late=True) for _ in range(n_hosts)]
    series = [[Series.of(make_labels(f"bench_m{i % 40}", instance=f"h{h}:9100", i=str(i))) for i in range(len(host))]
              for h, host in enumerate(hosts)]
    values = [np.array([v for _, v in host]) for host in hosts]
    for j in range(n):
        for h, host in enumerate(hosts):
            ts = int(host[0][0][j])
            clock[0] = max(clock[0], ts)
            await store.write(SampleBatch(f"bench/h{h}:9100", series[h], [ts] * len(series[h]), values[h][:, j].tolist()))
    total = sum(v.size for v in values)
    window = 2 * HOUR_MS
    start = base // window * window
    clock[0] = start + window + 5 * MINUTE_MS + 1
    job = RollupJob(store, LocalShardLease(f"{tmp}/locks-short"), now_ms=lambda: clock[0], fresh_minutes=False)
    cpu = time.process_time()
    done = await job.run_once(initial_start_ms=start)
    cpu = time.process_time() - cpu
    sealed = sum(r.samples for r in done)
    print(f"  sealed {sealed:,} of {total:,} samples written ({sealed / max(1, sum(r.series for r in done)):.0f} per series) "
          f"in {len(done)} shard windows: {cpu / max(sealed, 1) * 1e6:.2f} us CPU per sample")
    await store.close()
    by_name, free, blobs = sqlite_raw_bytes_by_name(Path(path))
    print(f"  raw on disk after sealing: {sum(by_name.values()) / total:.3f} bytes/sample ("
          + ", ".join(f"{k} {v / total:.3f}" for k, v in sorted(by_name.items(), key=lambda kv: -kv[1]) if v)
          + f"); the blocks' bytes as sealed {sum(r.block_bytes for r in done) / max(sealed, 1):.3f}")
    con = sqlite3.connect(path)
    try:
        for name, pages, unused, payload in con.execute(
            "SELECT name, count(*), sum(unused), sum(payload) FROM dbstat WHERE name IN ('raw_blocks', 'raw_groups')"
            " GROUP BY name"
        ):
            if pages > 1:
                print(f"  {name}: {pages:,} pages, payload {payload / total:.3f} and unused {unused / total:.3f} B/sample")
    finally:
        con.close()
    if keep:
        shutil.copy(path, keep)
    store = await SQLiteRollupStorage.open(path, now_ms=lambda: clock[0])
    try:
        one = [Matcher("__name__", MatchOp.EQ, "bench_m3"), Matcher("instance", MatchOp.EQ, "h0:9100"),
               Matcher("i", MatchOp.EQ, "3")]
        cases = (("one series", one), ("one metric of every target", [Matcher("__name__", MatchOp.EQ, "bench_m3")]),
                 ("every series", [Matcher("__name__", MatchOp.RE, "bench_m.*")]))
        digest = hashlib.blake2b(digest_size=6)
        for label, matchers in cases:
            out = []
            for cold in (True, False):
                cpus = []
                for _ in range(reads):
                    if cold:
                        store.__dict__.pop("_chunk_caches", None)
                        TIMES.clear()
                        if group_times is not None:
                            group_times.clear()
                    c = time.process_time()
                    got = await store.select(matchers, start, start + window)
                    cpus.append((time.process_time() - c) * 1e3)
                out.append(statistics.median(cpus))
            n_got = sum(len(d.timestamps) for d in got)
            for d in sorted(got, key=lambda d: d.series.id):
                digest.update(d.series.id.to_bytes(8, "little", signed=True) + d.timestamps.tobytes() + d.values.tobytes())
            print(f"  read {label} ({len(got)} series, {n_got:,} samples): CPU ms p50 cold {out[0]:.2f}, kept {out[1]:.2f}")
        print(f"  digest of the reads {digest.hexdigest()}")
    finally:
        await store.close()


def _space_used(node: CassandraNode, keyspace: str, table: str) -> int:
    out = node.nodetool("tablestats", f"{keyspace}.{table}")
    for line in out.splitlines():
        if "Space used (live):" in line:
            return int(line.split(":")[1].strip())
    raise RuntimeError(f"no 'Space used (live)' in tablestats of {keyspace}.{table}")


class FramesSeal(TypedDict):
    """What ``_seal_frames`` measured (CPU seconds)."""

    hosts: int
    shards: int
    series: int
    samples: int
    block_bytes: int  # the sealed blocks' own bytes (``WindowResult.block_bytes``)
    job_cpu: float
    decode_cpu: float
    compute_cpu: float
    node_cpu: float
    node_threads: dict[str, float]  # the node's CPU during the pass by thread group
    requests: int  # requests the job sent to the node
    wall: float
    warm: bool  # a warm-up pass (over the window before), not counted


async def _seal_frames(
    store: CassandraRollupStorage, node: CassandraNode, n_hosts: int, minutes: int, shards: int, tmp: str,
    repeats: int = 3, warm_minutes: int = 20, warm_passes: int = 12,
) -> list[FramesSeal]:
    """The rollup job's seal of scrape frames, as cluster mode stores them: ``n_hosts``
    node_exporter-like targets written one frame per scrape for ``minutes`` of a 2 h window
    (plus the 5 minutes before it the window's counters look back at), then passes of the
    job over ``shards`` shards with its clock past the window's close (``repeats``, each a job
    of its own name: the first writes new chunks, the later ones rerun the window - they read
    the 1h chunks back and merge the same buckets, a late pass's work; a live window after the
    stored ones joins bytes, between the two; the window starts a 1m chunk, which a live seal
    writes without reading it). Measures the job's
    process CPU, the parts of it spent decoding frames (``frame_samples``) and computing
    blocks and rollups (``compute_window``), each on the thread it ran on, and the node's CPU
    during the pass.

    The window before (the 5 minutes of lookback and ``warm_minutes`` of scrapes before them)
    is sealed by jobs of their own: with ``warm_minutes``, before the measured passes, so that
    they meet a warm node, and in any case before the raw bytes are measured, so that every
    sample written is sealed and the bytes left beside the blocks are what the drop leaves
    (tombstones, layouts), not the 5 minutes of lookback no pass seals. A freshly started
    node's JIT compilers work for minutes: in the first passes over a window they took
    0.25-0.43 us per sample, still 0.23 in a sixth pass (74 s of compilation by then,
    ``jstat -compiler``, 16,500 methods and counting); a production node that has run for
    hours compiles next to nothing. Twelve warm-up passes took them from 1.6-1.8 to 0.2-0.3
    us per warm-up sample (2026-12-07 00:41-00:47 UTC).
    So warm-up passes (each a job of its own name over the window before) repeat, up to
    ``warm_passes``, until the node's compiler threads took under a tenth of its CPU in one;
    they are returned too (``warm``)."""
    import asyncio
    import time

    import storage.cassandra as cassandra_mod
    import storage.rollup_job as rollup_job_mod
    from bench.procfs import proc_cpu_s, thread_cpu_s
    from storage.base import DAY_MS, HOUR_MS
    from storage.model import SampleBatch, Series, make_labels
    from storage.rollup_job import RollupJob
    from storage.rollup_lease import LocalShardLease

    window = 2 * HOUR_MS
    base = 1_700_000_000_000 // DAY_MS * DAY_MS + 10 * DAY_MS
    clock = [base - 300_000 - warm_minutes * 60_000]
    store._now_ms = lambda: clock[0]
    store.recent_raw_keep_ms = 100 * 365 * DAY_MS  # the data lies in the past: read frames, not blocks
    rng = np.random.default_rng(12)
    first_ms = base - 300_000 - warm_minutes * 60_000
    n_scrapes = (base + minutes * 60_000 - first_ms) // STEP_MS
    hosts = [node_exporter_host(rng, n_scrapes, first_ms, late=True) for _ in range(n_hosts)]
    series = [[Series.of(make_labels("bench_frames", h=str(h), i=str(i))) for i in range(len(host))]
              for h, host in enumerate(hosts)]
    values = [np.array([v for _, v in host]) for host in hosts]
    for j in range(n_scrapes):  # one frame per target and scrape, as the scrapers write them
        writes = []
        for h, host in enumerate(hosts):
            ts = int(host[0][0][j])
            clock[0] = max(clock[0], ts)
            writes.append(store.write(SampleBatch(f"bench/frames{h}:9100", series[h], [ts] * len(series[h]),
                                                  values[h][:, j].tolist())))
        await asyncio.gather(*writes)
    closed = base + window + 300_000 + 1
    clock[0] = closed
    spent = {"frame_samples": 0.0, "compute_window": 0.0}  # CPU of each, on the thread it ran on
    hooks = [vars(cassandra_mod), vars(rollup_job_mod)]  # the names storage.cassandra and the job call
    plain = [names[name] for names in hooks for name in spent if name in names]

    def timed(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def run(*args: Any) -> Any:
            c = time.thread_time()
            try:
                return fn(*args)
            finally:
                spent[name] += time.thread_time() - c

        return run

    for names in hooks:
        for name in spent:
            if name in names:
                names[name] = timed(name, names[name])
    out: list[FramesSeal] = []
    sent = [0]
    lease = LocalShardLease(f"{tmp}/locks-frames")

    def warm_job(now_ms: int, k: int = 0) -> RollupJob:  # a job that seals the window before (not the next one's minutes)
        return RollupJob(store, lease, shards=shards, now_ms=lambda: now_ms, job=f"warm{k}", fresh_minutes=False)
    plain_execute = store.execute

    async def counted(*args: Any, **kw: Any) -> list:
        sent[0] += 1
        return await plain_execute(*args, **kw)

    store.execute = counted  # type: ignore[method-assign]
    try:
        assert node.pid is not None
        passes = [warm_job(base + 300_000 + 1, k) for k in range(warm_passes if warm_minutes else 0)] + [
            # each pass a job of its own name: its own checkpoints, the same work
            RollupJob(store, lease, shards=shards, now_ms=lambda: closed, job=f"bench{rep}") for rep in range(repeats)]
        warming = bool(warm_minutes)
        for job in passes:
            warm = job.job.startswith("warm")
            if warm and not warming:
                continue
            start_ms = base - window if warm else base
            spent.update(dict.fromkeys(spent, 0.0))
            t0, sent[0] = thread_cpu_s(node.pid), 0
            n0, c0, w0 = proc_cpu_s(node.pid), time.process_time(), time.perf_counter()
            done = await job.run_once(initial_start_ms=start_ms)
            c1, w1, n1 = time.process_time(), time.perf_counter(), proc_cpu_s(node.pid)
            t1 = thread_cpu_s(node.pid)
            assert len(done) == shards, f"{len(done)} shard windows sealed, not {shards}"
            out.append(FramesSeal(hosts=n_hosts, shards=shards, series=sum(r.series for r in done),
                                  samples=sum(r.samples for r in done),
                                  block_bytes=sum(r.block_bytes for r in done), job_cpu=c1 - c0,
                                  decode_cpu=spent["frame_samples"], compute_cpu=spent["compute_window"],
                                  node_cpu=n1 - n0, node_threads={k: v - t0.get(k, 0.0) for k, v in t1.items()},
                                  requests=sent[0],
                                  wall=w1 - w0, warm=warm))
            if warm:
                jit = sum(v for k, v in out[-1]["node_threads"].items() if k.startswith(_COMPILER_THREADS))
                warming = jit >= 0.1 * (n1 - n0)
    finally:
        del store.execute
        fns = iter(plain)
        for names in hooks:
            for name in spent:
                if name in names:
                    names[name] = next(fns)
    if not warm_minutes:
        assert len(await warm_job(base + 300_000 + 1).run_once(initial_start_ms=base - window)) == shards
    assert len(await warm_job(closed).run_once(initial_start_ms=base - window)) == shards  # (the job that drops)
    written = sum(v.size for v in values)
    await _raw_bytes_after_drop(store, node, warm_job(closed + store.raw_hot_ms), base - window, written)
    return out


async def _raw_bytes_after_drop(store: CassandraRollupStorage, node: CassandraNode, job: RollupJob, base: int,
                                written: int) -> None:
    """Raw tables' bytes per written sample after ``nodetool flush`` + ``compact`` of them, before
    and after ``job`` (whose shards sealed the window from ``base``) drops the raw partitions of
    its sealed hours."""
    import asyncio
    import time

    raw = ("raw_frames", "raw_recent", "raw_layouts", "raw_late", "raw_late_frames", "raw_blocks",
           "raw_block_times")
    loop = asyncio.get_running_loop()

    def on_disk() -> dict[str, int]:
        node.nodetool("flush", store.keyspace, *raw)
        node.nodetool("compact", store.keyspace, *raw, timeout_s=900)
        return {t: _space_used(node, store.keyspace, t) for t in raw}

    before = await loop.run_in_executor(None, on_disk)
    await store.set_checkpoint(job.drop_cursor_job, 0, base)  # (a job's first pass records where it starts)
    store.raw_drop_skew_ms = 0  # every write is done
    c = time.process_time()
    dropped = await job.drop_sealed_raw()
    cpu = time.process_time() - c
    after = await loop.run_in_executor(None, on_disk)
    for label, got in (("before the drop", before), ("after the drop", after)):
        print(f"  raw tables on disk {label} (flush + compaction): {sum(got.values()) / written:.2f} bytes per written "
              "sample (" + ", ".join(f"{t} {b / written:.2f}" for t, b in got.items()) + ")")
    print(f"  the drop: {dropped:,} partitions tombstoned, {cpu * 1e3:.0f} ms CPU")


# Cassandra's request stages share one pool of threads, each named by the stage it works for
_REQUEST_STAGES = ("Native-Transpor", "MutationStage", "ReadStage", "RequestResponse", "CounterMutation")
_COMPILER_THREADS = ("C1 CompilerThre", "C2 CompilerThre")  # the JVM's JIT compilers (names cut at 15)


def _print_frames_seal(every: list[FramesSeal]) -> None:
    warm = [f for f in every if f["warm"]]
    runs = [f for f in every if not f["warm"]]
    if warm:
        print(f"  {len(warm)} warm-up passes over the window before ({warm[0]['samples']:,} samples each; not counted "
              "below), job + Cassandra (of it the JIT compilers) per sample: " + ", ".join(
                  f"{(f['job_cpu'] + f['node_cpu']) / max(f['samples'], 1) * 1e6:.2f} "
                  f"({sum(v for k, v in f['node_threads'].items() if k.startswith(_COMPILER_THREADS)) / max(f['samples'], 1) * 1e6:.2f})"
                  for f in warm) + " us")
    for f in runs:
        n = max(f["samples"], 1)
        if f is runs[0]:
            print(f"  RollupJob seal of scrape frames ({f['hosts']} targets, {f['shards']} shards): {f['samples']:,} "
                  f"samples, {f['samples'] / max(f['series'], 1):.0f} per series, blocks {f['block_bytes'] / n:.3f} "
                  f"bytes per sample; CPU per sample, pass by pass{' on a warm node' if warm else ''}:")
        print(
            f"    job {f['job_cpu'] / n * 1e6:.2f} us (frame decode {f['decode_cpu'] / n * 1e6:.2f}, blocks + rollup math "
            f"{f['compute_cpu'] / n * 1e6:.2f}, the rest - index, reads, writes - "
            f"{(f['job_cpu'] - f['decode_cpu'] - f['compute_cpu']) / n * 1e6:.2f}), Cassandra {f['node_cpu'] / n * 1e6:.2f},"
            f" job + Cassandra {(f['job_cpu'] + f['node_cpu']) / n * 1e6:.2f} us; {f['wall']:.1f} s wall"
        )
        groups: dict[str, float] = {}
        for name, cpu in f["node_threads"].items():  # a pool's workers rename themselves by stage
            name = "request stages" if name.startswith(_REQUEST_STAGES) else name
            groups[name] = groups.get(name, 0.0) + cpu
        top = sorted(groups.items(), key=lambda kv: -kv[1])[:6]
        print(f"      {f['requests']:,} requests; Cassandra by thread: " + ", ".join(f"{k} {v / n * 1e6:.2f}" for k, v in top))
    total = sorted((f["job_cpu"] + f["node_cpu"]) / max(f["samples"], 1) * 1e6 for f in runs)
    print(f"  seal of frames, job + Cassandra CPU per sample: median {total[len(total) // 2]:.2f} us of {len(total)} passes")


def bench_cassandra(
    n_hosts: int, hours: int, node_dir: str, tmp: str, *, frames_only: bool = False, frame_hosts: int = 20,
    frame_minutes: int = 20, shards: int = 16, repeats: int = 3, warm_minutes: int = 20, warm_passes: int = 12,
) -> None:
    import asyncio
    import time
    from pathlib import Path

    from services.cassandra.cassandra_node import CassandraNode
    from services.proc import free_port
    from storage.base import DAY_MS, HOUR_MS, MINUTE_MS, Resolution, SeriesData
    from storage.cassandra_rollup import CassandraRollupStorage
    from storage.model import SampleBatch, Series, make_labels
    from storage.rollup import rollup_raw, rollup_rollup
    from storage.rollup_job import RollupJob, RollupRows, compute_window
    from storage.rollup_lease import LocalShardLease

    print(f"\n== Cassandra 5.0 (local node, 1 g heap): {n_hosts} hosts x {hours} h sealed ==")
    if node_dir:
        node = CassandraNode.load(node_dir)
        node.start(timeout_s=300)
        own = False
    else:
        node = CassandraNode(Path(tmp) / "cassandra", native_port=free_port(), heap="1g", fast_unsafe=True)
        t = time.perf_counter()
        node.start(timeout_s=300)
        own = True
        print(f"  node started in {time.perf_counter() - t:.0f} s")
    keyspace = f"bench_rollup_{int(time.time())}"
    store = CassandraRollupStorage.connect_sync([node.host], node.port, keyspace, create_schema=True)
    window = 2 * HOUR_MS
    t0 = 1_700_000_000_000 // DAY_MS * DAY_MS

    async def seal_bulk() -> tuple[int, int, int, dict[str, float], float]:
        """compute_window + writes of blocks and rollups, window after window (no raw read)."""
        rng = np.random.default_rng(9)
        hosts = [node_exporter_host(rng, hours * 360 + 30, t0 - 300_000, late=True) for _ in range(n_hosts)]
        sds = [
            SeriesData(Series.of(make_labels("bench", h=str(h), i=str(i))), ts, v)
            for h, host in enumerate(hosts)
            for i, (ts, v) in enumerate(host)
        ]
        sealed = minutes = hours_n = 0
        cpu = {"compute": 0.0, "blocks": 0.0, "rollups": 0.0}
        wall = 0.0
        for w in range(hours * HOUR_MS // window):
            start = t0 + w * window
            lo_hi = [np.searchsorted(d.timestamps, [start - 300_000, start + window]) for d in sds]
            part = [
                SeriesData(d.series, d.timestamps[a:b], d.values[a:b])
                for d, (a, b) in zip(sds, lo_hi, strict=True)
            ]
            t = time.perf_counter()
            c = time.process_time()
            blocks, m, h = compute_window(part, start, start + window)
            c2 = time.process_time()
            await store.write_blocks(blocks)
            c3 = time.process_time()
            await store.write_rollups(Resolution.MINUTE, m)
            await store.write_rollups(Resolution.HOUR, h)
            c4 = time.process_time()
            wall += time.perf_counter() - t
            cpu["compute"] += c2 - c
            cpu["blocks"] += c3 - c2
            cpu["rollups"] += c4 - c3
            sealed += sum(b.count for b in blocks)
            minutes += sum(len(r.rollup) for r in m)
            hours_n += sum(len(r.rollup) for r in h)
        return sealed, minutes, hours_n, cpu, wall

    async def end_to_end() -> tuple[int, float, float]:
        """The job itself over raw rows written to raw_recent (1 host, 2 windows)."""
        rng = np.random.default_rng(10)
        base = t0 + 2 * DAY_MS
        # The bench's data lies in the past: keep reads on raw_recent rows as for recent data.
        store.recent_raw_keep_ms = 100 * 365 * DAY_MS
        for h in range(1):
            host = node_exporter_host(rng, 2 * 720, base, late=True)
            series = [Series.of(make_labels("bench_e2e", h=str(h), i=str(i))) for i in range(len(host))]
            values = np.array([v for _, v in host])
            for j, ts in enumerate(host[0][0].tolist()):  # one batch per scrape, as a scraper writes
                await store.write(
                    SampleBatch(f"bench/e2e{h}:9100", series, [ts] * len(series), values[:, j].tolist())
                )
        job = RollupJob(store, LocalShardLease(f"{tmp}/locks"), shards=1, now_ms=lambda: base + 5 * HOUR_MS)
        c, t = time.process_time(), time.perf_counter()
        done = []
        for _ in range(5):  # a pass that hits a timeout leaves the window for the next pass
            done += await job.run_once(initial_start_ms=base)
            if await store.get_checkpoint("rollup", 0) == base + 4 * HOUR_MS:
                break
        return sum(r.samples for r in done), time.process_time() - c, time.perf_counter() - t

    async def reads() -> tuple[list[float], list[float]]:
        rng = np.random.default_rng(11)
        now = t0 + 400 * DAY_MS
        ids = []
        for k in range(5):
            ts = now - 365 * DAY_MS + np.arange(365 * 8640, dtype=np.int64) * 10_000
            v = np.cumsum(rng.poisson(1000, ts.shape[0])).astype(np.float64)
            m = rollup_raw(ts, v, int(ts[0]), now, MINUTE_MS)
            sid = 10_000 + k
            await store.write_rollups(Resolution.MINUTE, [RollupRows(sid, m.slice(now - 30 * DAY_MS, now))])
            await store.write_rollups(Resolution.HOUR, [RollupRows(sid, rollup_rollup(m, HOUR_MS))])
            ids.append(sid)
        await asyncio.get_running_loop().run_in_executor(None, node.nodetool, "flush", keyspace)
        lat_m, lat_h = [], []
        for _ in range(6):
            for sid in ids:
                t = time.perf_counter()
                r = await store.read_rollup(Resolution.MINUTE, sid, now - 30 * DAY_MS, now)
                lat_m.append(time.perf_counter() - t)
                assert len(r) == 30 * 1440
                t = time.perf_counter()
                r = await store.read_rollup(Resolution.HOUR, sid, now - 365 * DAY_MS, now)
                lat_h.append(time.perf_counter() - t)
                assert len(r) >= 365 * 24
        return lat_m[len(ids) :], lat_h[len(ids) :]

    try:
        if frames_only:
            _print_frames_seal(asyncio.run(_seal_frames(store, node, frame_hosts, frame_minutes, shards, tmp, repeats,
                                                        warm_minutes, warm_passes)))
            return
        sealed, minutes, hours_n, cpu, wall = asyncio.run(seal_bulk())
        print(f"  sealed {sealed:,} samples into blocks, wrote {minutes:,} 1m + {hours_n:,} 1h rollup rows:")
        print(
            f"    encode + rollup math {sealed / cpu['compute']:,.0f} samples/s per core; block writes "
            f"{sealed / cpu['blocks']:,.0f}; seal = math + block writes "
            f"{sealed / (cpu['compute'] + cpu['blocks']):,.0f} samples/s per core"
        )
        print(
            f"    1m/1h row writes {sealed / cpu['rollups']:,.0f} raw samples/s per core "
            f"({minutes / cpu['rollups']:,.0f} rows/s); all together {sealed / sum(cpu.values()):,.0f} samples/s "
            f"per core, {sealed / wall:,.0f} samples/s wall"
        )
        for table in ("raw_blocks", "rollup_1m_chunks", "rollup_1h_chunks"):
            node.nodetool("flush", keyspace, table)
            node.nodetool("compact", keyspace, table)
        raw_b = _space_used(node, keyspace, "raw_blocks")
        m_b = _space_used(node, keyspace, "rollup_1m_chunks")
        h_b = _space_used(node, keyspace, "rollup_1h_chunks")
        print(
            f"  on disk after flush + compaction (LZ4 16 KB chunks): raw_blocks {raw_b:,} B = "
            f"{raw_b / sealed:.3f} bytes per sealed raw sample"
        )
        print(
            f"  rollup_1m_chunks {m_b:,} B = {m_b / minutes:.1f} bytes per 1m point; "
            f"rollup_1h_chunks {h_b:,} B = {h_b / hours_n:.1f} bytes per 1h point"
        )
        n, e2e_cpu, e2e_wall = asyncio.run(end_to_end())
        print(
            f"  RollupJob end to end (raw_recent read + seal + rollup + writes): {n:,} samples, "
            f"{n / e2e_cpu:,.0f} samples/s per core (CPU), {n / e2e_wall:,.0f} samples/s wall"
        )
        _print_frames_seal(asyncio.run(_seal_frames(store, node, frame_hosts, frame_minutes, shards, tmp, repeats,
                                                    warm_minutes, warm_passes)))
        lat_m, lat_h = asyncio.run(reads())
        print(
            f"  read one series, 30 d of 1m (43,200 points): p50 {np.median(lat_m) * 1000:.1f} ms, "
            f"p99 {np.percentile(lat_m, 99) * 1000:.1f} ms"
        )
        print(
            f"  read one series, 1 y of 1h (8,760 points): p50 {np.median(lat_h) * 1000:.1f} ms, "
            f"p99 {np.percentile(lat_h, 99) * 1000:.1f} ms"
        )
    finally:
        try:
            store.drop_keyspace_sync()
        finally:
            store.shutdown()
            if own:
                node.stop()


def main(argv: list[str] | None = None) -> int:
    import argparse
    import asyncio
    import sys
    import tempfile

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--hosts", type=int, default=10, help="node_exporter-like hosts (~600 series each)")
    p.add_argument("--sqlite-hours", type=int, default=4, help="hours of raw data for the SQLite job run")
    p.add_argument("--sqlite-late", action="store_true",
                   help="the SQLite job run's timestamps with a scraper's lateness, as Ringmon's scraper stamps "
                        "them (else aligned)")
    p.add_argument("--sqlite-short", action="store_true",
                   help="only the SQLite seal of a short window as bench/peers.py's standalone run has (its bytes "
                        "per sample by table, seal CPU, reads of the sealed blocks)")
    p.add_argument("--short-minutes", type=int, default=9, help="minutes of scrapes of --sqlite-short")
    p.add_argument("--short-step", type=int, default=5, help="scrape interval (s) of --sqlite-short")
    p.add_argument("--short-keep", default="", help="copy --sqlite-short's sealed database to this path")
    p.add_argument("--cassandra", action="store_true", help="also measure on a local Cassandra node")
    p.add_argument("--cassandra-hours", type=int, default=24, help="hours of data sealed into Cassandra")
    p.add_argument(
        "--cassandra-dir", default="", help="reuse a node started with services/cassandra/cassandra_node.py"
    )
    p.add_argument("--only-cassandra", action="store_true", help="skip the codec and SQLite figures")
    p.add_argument("--frames-only", action="store_true",
                   help="of the Cassandra legs only the job's seal of scrape frames (cluster mode's raw data)")
    p.add_argument("--frame-hosts", type=int, default=20, help="targets (~600 series each) of the frames leg")
    p.add_argument("--frame-minutes", type=int, default=20, help="minutes of scrapes (10 s) the frames leg seals")
    p.add_argument("--shards", type=int, default=16, help="rollup shards of the frames leg")
    p.add_argument("--seal-passes", type=int, default=3,
                   help="passes of the job over the frames leg's window (the first writes new chunks, the rest rerun it)")
    p.add_argument("--warm-minutes", type=int, default=20,
                   help="minutes of scrapes in the window before the frames leg's, sealed before the measured passes "
                        "(a warm node, as in production); 0: the passes meet a freshly started node")
    p.add_argument("--warm-passes", type=int, default=12,
                   help="at most this many warm-up passes (they stop once the node's JIT compilers took under a tenth "
                        "of its CPU in one)")
    args = p.parse_args(argv)
    from cli.malloc_tuning import tune_malloc

    # As ``ringmon rollup`` runs (cli/main.py): with glibc's defaults every window's arrays are
    # fresh mappings, a page fault per 4 KiB touched (series_runs of a 16-shard window: ~1 s).
    print(f"malloc thresholds {'raised as in ringmon' if tune_malloc() else 'glibc defaults'}")
    if args.sqlite_short:
        with tempfile.TemporaryDirectory() as tmp:
            asyncio.run(_bench_sqlite_short(args.hosts, args.short_minutes, args.short_step, tmp, keep=args.short_keep))
        return 0
    if not args.only_cassandra:
        bench_codec(args.hosts)
        bench_seal_and_rollup(args.hosts)
    with tempfile.TemporaryDirectory() as tmp:
        if not args.only_cassandra:
            asyncio.run(_bench_sqlite(max(1, args.hosts // 2), args.sqlite_hours, tmp, args.sqlite_late))
        if args.cassandra or args.only_cassandra:
            bench_cassandra(args.hosts, args.cassandra_hours, args.cassandra_dir, tmp, frames_only=args.frames_only,
                            frame_hosts=args.frame_hosts, frame_minutes=args.frame_minutes, shards=args.shards,
                            repeats=args.seal_passes, warm_minutes=args.warm_minutes, warm_passes=args.warm_passes)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
