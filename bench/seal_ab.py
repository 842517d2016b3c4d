"""The cluster rollup job's one short seal (``bench/peers.py``'s) on code trees in turns (issue #20).

``bench/peers.py --systems ringmon-cluster`` seals one window holding ~9 minutes of 5 s scrapes
(~109 samples per series, 100,000 series) and reports the job's and Cassandra's CPU; it takes
~12 minutes a run. This bench writes such a window once, as scrape frames, into a keyspace of a
node it keeps (``prep``), then seals it with ``RollupJob.run_once`` (all 16 shards at once, the
fresh pass on, as ``ringmon rollup``) in a child process per pass, each pass with the Python
code of a given tree (``--tree``, first on ``sys.path``), so that the code before a change and
after it take turns on the same data and node (``ab``). Before each pass the sealed tables
(``raw_blocks``, ``raw_block_times``, ``rollup_1m_chunks``, ``rollup_1h_chunks``) are
truncated, so every pass is the window's first seal, as in ``bench/peers.py``. With
``--hour-history`` each pass then writes (and flushes) a 1h chunk of the span's hours before the
window for every series, so the seal merges into real chunks, as a running job's seals do.

A pass prints the job process's CPU for ``run_once`` (and its split by ``--profile``), the
node's CPU meanwhile, the job's requests (``execute`` calls; the statements in them) and,
with ``--digest``, a SHA-256 of the sealed tables' rows (their cells, not their write times):
two trees that write the same rows give the same digest; with ``--answers K``, a SHA-256 of the
1m and 1h rollup reads of every K-th sealed series, each tree reading with its own code: trees
whose stored form differs by design (e.g. 1h pieces) give the same one when they answer alike.

    python bench/seal_ab.py prep --dir /tmp/seal-ab --targets 167
    python bench/seal_ab.py ab --dir /tmp/seal-ab --tree A=/old/tree --tree B=. --rounds 3
    python bench/seal_ab.py stop --dir /tmp/seal-ab

Prints figures, asserts nothing but that each pass sealed every shard.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SEALED = ("raw_blocks", "raw_block_times", "rollup_1m_chunks", "rollup_1h_chunks")
STEP_MS = 5_000


def _node(dir_: Path) -> Any:
    from services.cassandra.cassandra_node import CassandraNode
    from services.proc import free_port

    state = dir_ / "cassandra" / "node.json"
    if state.exists():
        node = CassandraNode.load(dir_ / "cassandra")
    else:
        node = CassandraNode(dir_ / "cassandra", native_port=free_port(), heap="1g")
    node.start(timeout_s=300)
    return node


def prep(args: argparse.Namespace) -> None:
    """A keyspace holding ``--targets`` node_exporter-like targets' frames (~600 series each) of
    ``--minutes`` of 5 s scrapes from ``--offset-minutes`` into a 2 h window starting at
    ``--window-hour`` of a day; writes ``meta.json`` beside the node."""
    import asyncio

    import numpy as np

    from bench.rollup import node_exporter_host
    from storage.base import DAY_MS, HOUR_MS
    from storage.cassandra_rollup import CassandraRollupStorage
    from storage.model import SampleBatch, Series, make_labels

    dir_ = Path(args.dir)
    dir_.mkdir(parents=True, exist_ok=True)
    node = _node(dir_)
    keyspace = f"seal_ab_{int(time.time())}"
    store = CassandraRollupStorage.connect_sync([node.host], node.port, keyspace, create_schema=True)
    window = 2 * HOUR_MS
    start = 1_700_000_000_000 // DAY_MS * DAY_MS + 10 * DAY_MS + args.window_hour * HOUR_MS
    first = start + args.offset_minutes * 60_000
    n = args.minutes * 60_000 // STEP_MS + 1
    clock = [first]
    store._now_ms = lambda: clock[0]
    store.recent_raw_keep_ms = 100 * 365 * DAY_MS  # the data lies in the past: read frames, not blocks
    rng = np.random.default_rng(20)
    hosts = [node_exporter_host(rng, n, first, step_ms=STEP_MS, late=True) for _ in range(args.targets)]
    series = [[Series.of(make_labels("seal_ab", h=str(h), i=str(i))) for i in range(len(host))]
              for h, host in enumerate(hosts)]
    values = [np.array([v for _, v in host]) for host in hosts]

    async def write() -> None:
        for j in range(n):  # one frame per target and scrape, as the scrapers write them
            writes = []
            for h, host in enumerate(hosts):
                ts = int(host[0][0][j])
                clock[0] = max(clock[0], ts)
                writes.append(store.write(SampleBatch(f"seal_ab/t{h}:9100", series[h], [ts] * len(series[h]),
                                                      values[h][:, j].tolist())))
            await asyncio.gather(*writes)

    t = time.perf_counter()
    asyncio.run(write())
    store.shutdown()
    node.nodetool("flush", keyspace)
    meta = {"keyspace": keyspace, "host": node.host, "port": node.port, "pid": node.pid, "window_start": start,
            "closed": start + window + 300_000 + 1, "series": sum(len(s) for s in series), "scrapes": n}
    (dir_ / "meta.json").write_text(json.dumps(meta))
    print(f"prepared {keyspace}: {meta['series']:,} series x {n} scrapes in {time.perf_counter() - t:.0f} s")


def _digest(store: Any) -> str:
    import hashlib

    h = hashlib.sha256()
    for table in SEALED:
        rows = sorted(tuple(r) for r in store.session.execute(f"SELECT * FROM {store.keyspace}.{table}"))
        h.update(f"{table}:{len(rows)}".encode())
        for r in rows:
            h.update(repr(r).encode())
    return h.hexdigest()[:16]


def _hour_history(store: Any, meta: dict[str, Any], dir_: Path) -> None:
    """A 1h chunk holding every hour from its span's start to the window's for every series of
    the window (as a seal later in a span than its first finds), flushed to an SSTable: the
    seal then merges into a real chunk, as a running job's do, not into truncated tables."""
    import asyncio

    import numpy as np

    from services.cassandra.cassandra_node import CassandraNode
    from storage import rollup_chunks as chunks
    from storage.base import AGGREGATES, HOUR_MS, Resolution
    from storage.rollup import Rollup
    from storage.rollup_job import RollupRows

    start = meta["window_start"]
    ts = np.arange(start - start % chunks.chunk_span(Resolution.HOUR), start, HOUR_MS, dtype=np.int64)
    rng = np.random.default_rng(5)
    regular = {"count": np.full(ts.size, 720.0), "first_ts": (ts + 1234).astype(np.float64),
               "last_ts": (ts + HOUR_MS - 3766).astype(np.float64), "correction": np.zeros(ts.size)}

    async def write() -> None:
        ids = sorted(i.series.id for i in await store._shard_infos(range(16), 16, start, meta["closed"]))
        for k in range(0, len(ids), 2000):
            await store.write_rollups(Resolution.HOUR, [
                RollupRows(sid, Rollup(ts, *(regular[a] if a in regular else rng.random(ts.size) for a in AGGREGATES)))
                for sid in ids[k : k + 2000]])

    asyncio.run(write())
    CassandraNode.load(dir_ / "cassandra").nodetool("flush", meta["keyspace"], "rollup_1h_chunks")


def _answers(store: Any, window_start: int, closed: int, every: int) -> str:
    """A SHA-256 of the 1m and 1h rollup reads (every aggregate, by the tree's own reader) of
    every ``every``-th sealed series by id, over the sealed window's day and 1h span: two trees
    whose stored form differs (a format change) give the same digest when they answer alike."""
    import asyncio
    import hashlib

    from storage.base import AGGREGATES, DAY_MS, Resolution

    ids = sorted({r[0] for r in store.session.execute(f"SELECT DISTINCT series_id, day FROM {store.keyspace}.raw_blocks")})
    some = ids[::every]
    h = hashlib.sha256()

    async def read() -> None:
        for resolution, lo in ((Resolution.MINUTE, window_start - window_start % DAY_MS),
                               (Resolution.HOUR, window_start - 8 * DAY_MS)):
            got = await store._read_chunks(resolution, some, lo, closed, AGGREGATES)
            for sid in some:
                ts, cols = got.get(sid, (None, {}))
                h.update(f"{resolution.value}:{sid}:".encode())
                if ts is not None:
                    h.update(ts.tobytes())
                    for name in AGGREGATES:
                        h.update(cols[name].tobytes())

    asyncio.run(read())
    return f"{h.hexdigest()[:16]} ({len(some):,} series)"


def _query_of(store: Any, statement: Any) -> str:
    """A short name of a statement (or a prepared statement's id) for the request counts."""
    import re

    if isinstance(statement, bytes):
        for ps in store.session.cluster._prepared_statements.values():
            if ps.query_id == statement:
                statement = ps
                break
    text = getattr(statement, "query_string", None) or getattr(getattr(statement, "prepared_statement", None),
                                                                 "query_string", None) or str(statement)
    return re.sub(r"\s+", " ", re.sub(r"\b\w+\.", "", text))[:70]


def _thread_cpu() -> dict[int, float]:
    """CPU seconds of each of this process's threads by native id."""
    import os

    tick = os.sysconf("SC_CLK_TCK")
    out = {}
    for task in Path("/proc/self/task").iterdir():
        try:
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        out[int(task.name)] = (int(fields[11]) + int(fields[12])) / tick
    return out


def _thread_name(tid: int) -> str:
    import threading

    for t in threading.enumerate():
        if t.native_id == tid:
            return t.name
    return str(tid)


def seal_child(args: argparse.Namespace) -> None:
    """One pass: ``run_once`` of a job of its own name with the clock past the window's close."""
    import asyncio

    from bench.procfs import proc_cpu_s, thread_cpu_s
    from storage.base import DAY_MS
    from storage.cassandra_rollup import CassandraRollupStorage
    from storage.rollup_job import RollupJob
    from storage.rollup_lease import LocalShardLease

    meta = json.loads((Path(args.dir) / "meta.json").read_text())
    store = CassandraRollupStorage.connect_sync([meta["host"]], meta["port"], meta["keyspace"])
    for table in SEALED:
        store.session.execute(f"TRUNCATE {meta['keyspace']}.{table}")
    if args.hour_history:
        _hour_history(store, meta, Path(args.dir))
    closed = meta["closed"]
    store._now_ms = lambda: closed
    store.recent_raw_keep_ms = 100 * 365 * DAY_MS
    job = RollupJob(store, LocalShardLease(Path(args.dir) / f"locks-{args.job}"), now_ms=lambda: closed, job=args.job)
    sent = {"requests": 0, "statements": 0}
    kinds: dict[str, int] = {}
    plain = store.execute

    async def counted(statement: Any, *a: Any, **kw: Any) -> Any:
        sent["requests"] += 1
        batch = getattr(statement, "_statements_and_parameters", None)
        sent["statements"] += len(batch or [None])
        if args.kinds:
            if batch:
                name = "batch of " + ",".join(sorted({_query_of(store, q[1]) for q in batch}))
            else:
                name = _query_of(store, statement)
            kinds[name] = kinds.get(name, 0) + 1
        return await plain(statement, *a, **kw)

    store.execute = counted  # type: ignore[method-assign]
    pid = meta["pid"]
    prof = None
    if args.profile:
        import cProfile

        prof = cProfile.Profile()

    threads: dict[int, float] = {}

    async def run() -> list:
        if prof is not None:
            prof.enable()
        try:
            return await job.run_once()
        finally:
            if prof is not None:
                prof.disable()
            threads.update(_thread_cpu())  # (before asyncio.run ends the executor's threads)

    own0 = _thread_cpu()
    threads0, n0, c0, w0 = thread_cpu_s(pid), proc_cpu_s(pid), time.process_time(), time.perf_counter()
    done = asyncio.run(run())
    c1, w1, n1, threads1 = time.process_time(), time.perf_counter(), proc_cpu_s(pid), thread_cpu_s(pid)
    assert len([r for r in done if r.mode == "live"]) == job.shards, [r.mode for r in done]
    samples = sum(r.samples for r in done if r.mode == "live")
    series = sum(r.series for r in done if r.mode == "live")
    jit = sum(v - threads0.get(k, 0.0) for k, v in threads1.items() if k.startswith(("C1 CompilerThre", "C2 CompilerThre")))
    out = {"tree": args.tree, "job_cpu_s": c1 - c0, "node_cpu_s": n1 - n0, "jit_cpu_s": jit, "wall_s": w1 - w0,
           "samples": samples, "series": series, **sent,
           "threads": {_thread_name(t): round(v - own0.get(t, 0.0), 3) for t, v in threads.items()
                       if v - own0.get(t, 0.0) > 0.005}}
    if args.kinds:
        out["kinds"] = kinds
    if prof is not None:
        prof.dump_stats(args.profile)
    if args.digest:
        out["digest"] = _digest(store)
    if args.answers:
        out["answers"] = _answers(store, meta["window_start"], closed, args.answers)
    store.shutdown()
    print(json.dumps(out))


def _pass(dir_: str, tree: str, job: str, profile: str = "", digest: bool = False, kinds: bool = False,
          answers: int = 0, hour_history: bool = False) -> dict[str, Any]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "seal", "--dir", dir_, "--tree", tree, "--job", job]
    if hour_history:
        cmd.append("--hour-history")
    if answers:
        cmd += ["--answers", str(answers)]
    if profile:
        cmd += ["--profile", profile]
    if digest:
        cmd.append("--digest")
    if kinds:
        cmd.append("--kinds")
    got = subprocess.run(cmd, capture_output=True, text=True, timeout=1200)
    if got.returncode:
        raise RuntimeError(f"seal pass failed:\n{got.stderr[-3000:]}")
    out: dict[str, Any] = json.loads(got.stdout.strip().splitlines()[-1])
    return out


def ab(args: argparse.Namespace) -> None:
    """Passes of each tree in turns, ``--rounds`` times; a line per pass."""
    import os

    trees = [t.split("=", 1) for t in args.tree]
    load = os.getloadavg()[0]
    print(f"{time.strftime('%H:%M:%S', time.gmtime())} UTC, load {load:.1f}")
    k = 0
    for r in range(args.rounds):
        for name, tree in trees:
            k += 1
            f = _pass(args.dir, tree, f"ab{int(time.time())}x{k}", digest=args.digest, answers=args.answers,
                      hour_history=args.hour_history)
            n = max(f["samples"], 1)
            print(f"round {r} {name}: job {f['job_cpu_s'] / n * 1e6:.3f} us/sample ({f['job_cpu_s']:.2f} s), node "
                  f"{f['node_cpu_s'] / n * 1e6:.3f} (JIT {f['jit_cpu_s'] / n * 1e6:.3f}), wall {f['wall_s']:.1f} s, "
                  f"{f['requests']:,} requests / {f['statements']:,} statements for {f['series']:,} series, "
                  f"{f['samples']:,} samples" + (f", digest {f['digest']}" if "digest" in f else "")
                  + (f", answers {f['answers']}" if "answers" in f else "")
                  + "; threads " + ", ".join(f"{k} {v:.2f}" for k, v in f["threads"].items() if v >= 0.05), flush=True)
    print(f"{time.strftime('%H:%M:%S', time.gmtime())} UTC, load {os.getloadavg()[0]:.1f}")


def stop(args: argparse.Namespace) -> None:
    from services.cassandra.cassandra_node import CassandraNode

    CassandraNode.load(Path(args.dir) / "cassandra").stop()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("prep", help="start a node (or reuse --dir's) and write the window's frames")
    s.add_argument("--dir", required=True)
    s.add_argument("--targets", type=int, default=167, help="targets of ~600 series (167: ~100,000 series)")
    s.add_argument("--minutes", type=int, default=9, help="minutes of 5 s scrapes (9: ~109 samples per series)")
    s.add_argument("--window-hour", type=int, default=18,
                   help="the window's start hour (18 starts a 6 h 1m chunk, which a live seal does not read; 20 not)")
    s.add_argument("--offset-minutes", type=int, default=30, help="the first scrape's minute in the window")
    s = sub.add_parser("seal", help="(internal) one pass")
    s.add_argument("--dir", required=True)
    s.add_argument("--tree", required=True)
    s.add_argument("--job", required=True)
    s.add_argument("--profile", default="")
    s.add_argument("--digest", action="store_true")
    s.add_argument("--kinds", action="store_true")
    s.add_argument("--answers", type=int, default=0)
    s.add_argument("--hour-history", action="store_true")
    s = sub.add_parser("ab", help="passes of each --tree NAME=PATH in turns")
    s.add_argument("--dir", required=True)
    s.add_argument("--tree", action="append", required=True)
    s.add_argument("--rounds", type=int, default=3)
    s.add_argument("--digest", action="store_true")
    s.add_argument("--answers", type=int, default=0, metavar="K",
                   help="also a digest of the rollup reads of every K-th sealed series (compares trees whose "
                        "stored form differs)")
    s.add_argument("--hour-history", action="store_true",
                   help="before each pass, a flushed 1h chunk of the span's hours before the window for every series")
    s = sub.add_parser("one", help="one pass of --tree (with --profile FILE: cProfile of run_once)")
    s.add_argument("--dir", required=True)
    s.add_argument("--tree", default=str(ROOT))
    s.add_argument("--profile", default="")
    s.add_argument("--digest", action="store_true")
    s.add_argument("--kinds", action="store_true", help="count requests by statement")
    s = sub.add_parser("stop", help="stop the node of --dir")
    s.add_argument("--dir", required=True)
    args = p.parse_args(argv)
    if args.cmd == "seal":
        sys.path.insert(0, str(Path(args.tree).resolve()))
        for name in [m for m in sys.modules if m.split(".")[0] in ("storage", "bench", "common", "services")]:
            del sys.modules[name]
        seal_child(args)
        return 0
    sys.path.insert(0, str(ROOT))
    if args.cmd == "prep":
        prep(args)
    elif args.cmd == "ab":
        ab(args)
    elif args.cmd == "one":
        print(json.dumps(_pass(args.dir, args.tree, f"one{int(time.time())}", args.profile, args.digest, args.kinds)))
    else:
        stop(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
