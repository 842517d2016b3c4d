"""The standalone process's storage work in steady state, on a simulated clock (issue #20).

    .venv/bin/python bench/steady.py [--targets 50] [--series 500] [--interval 5]
                                     [--warm 8] [--minutes 6] [--fresh-every 60] [--seal]

What ``ringmon standalone`` does with SQLite after its warm-up, without the scrapes: every
``--interval`` seconds one ``SampleBatch`` per target (``bench/peers.py``'s node_exporter
shapes, values moved with NumPy; each target at its own phase of the interval) through
``SQLiteRollupStorage.write_many`` (frames; the writer transposes closed 5-minute spans
into the raw chunks by itself), and every 60 s one ``RollupJob.run_once`` (the fresh pass:
the new minutes of every shard, in groups of ``FRESH_GROUP_SHARDS``) plus its hourly
retention, as the process's rollup loop runs them. The store's and the job's clock is the
simulated one, so ``--warm`` + ``--minutes`` of a 5 s scrape take seconds of CPU, not
minutes of waiting; the first run seals the (empty) window before the start.

Printed after ``--warm`` minutes, over ``--minutes`` more: CPU (``time.process_time``: the
driver awaits each step, so no two overlap) per stored sample of each part - the writes
(frames, index), the transposition (timed on the writer thread), the fresh pass's read,
computation and write - and peak RSS. ``--seal`` moves the clock on to the window's close
after the measured minutes and times that seal (one 2-hour window's blocks and 1 m / 1 h
rows, of the minutes written) on its own. Asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.peers import node_series  # noqa: E402 - after the path insert
from storage.model import SampleBatch, Series, make_labels  # noqa: E402

HOUR_MS = 3_600_000
MINUTE_MS = 60_000


def target_series(t: int, series: int) -> tuple[list[Series], np.ndarray, np.ndarray]:
    """One target's series, their first values and how much each moves per scrape."""
    out, base, step = [], [], []
    for i, (prefix, kind, _header, rate) in enumerate(node_series(series)):
        name, _, rest = prefix.strip().partition("{")
        labels = dict(kv.split("=", 1) for kv in rest.rstrip("}").split('",') if kv) if rest else {}
        labels = {k: v.strip('"') for k, v in labels.items()}
        out.append(Series.of(make_labels(name, **labels, job="node", instance=f"h{t}:9100")))
        base.append(1e6 * (1 + (t * 31 + i * 17) % 97))
        step.append(rate if kind in "ci" else 0.0)
    return out, np.array(base), np.array(step)


class Parts:
    """CPU seconds per part, counted only while ``on``."""

    def __init__(self) -> None:
        self.cpu: dict[str, float] = defaultdict(float)
        self.on = False

    def add(self, part: str, seconds: float) -> None:
        if self.on:
            self.cpu[part] += seconds


def timed_async(fn: Callable[..., Awaitable[Any]], name: str, parts: Parts) -> Callable[..., Awaitable[Any]]:
    """``fn`` counting the process's CPU while it is awaited as part ``name``."""

    async def timed(*a: Any, **kw: Any) -> Any:
        c = time.process_time()
        try:
            return await fn(*a, **kw)
        finally:
            parts.add(name, time.process_time() - c)

    return timed


async def run(args: argparse.Namespace) -> None:
    from storage.rollup_job import RollupJob
    from storage.rollup_lease import LocalShardLease
    from storage.sqlite_rollup import SQLiteRollupStorage

    interval = int(args.interval * 1000)
    t0 = (int(time.time() * 1000) // (2 * HOUR_MS)) * 2 * HOUR_MS + 7 * MINUTE_MS  # inside a window
    clock = [t0]
    parts = Parts()
    tmp = Path(tempfile.mkdtemp(prefix="ringmon-steady-"))
    store = await SQLiteRollupStorage.open(tmp / "ringmon.db", now_ms=lambda: clock[0])
    transpose = store._transpose_sync

    def timed_transpose(before_ms: int) -> int:
        c = time.thread_time()
        try:
            return transpose(before_ms)
        finally:
            parts.add("transpose", time.thread_time() - c)

    store._transpose_sync = timed_transpose  # type: ignore[method-assign]
    for name in ("read_fresh_group", "write_fresh_minutes", "read_raw_window_arrays", "write_seal",
                 "write_blocks", "write_rollups", "drop_sealed_raw", "apply_retention"):
        if not hasattr(store, name):
            continue

        setattr(store, name, timed_async(getattr(store, name), name, parts))
    job = RollupJob(store, LocalShardLease(tmp / "locks"), now_ms=lambda: clock[0],
                    fresh_every_ms=int(args.fresh_every * 1000))
    targets = [target_series(t, args.series) for t in range(args.targets)]
    names = [f"node/h{t}:9100" for t in range(args.targets)]
    phases = [(t * 997) % interval for t in range(args.targets)]
    rng = np.random.default_rng(1)
    k = 0
    next_pass = t0
    samples = 0
    measured_from = t0 + args.warm * MINUTE_MS
    end = measured_from + args.minutes * MINUTE_MS
    while clock[0] < end:
        if not parts.on and clock[0] >= measured_from:
            parts.on, samples, cpu0 = True, 0, time.process_time()
        tick = t0 + k * interval
        batches = []
        for t, (series, base, step) in enumerate(targets):
            vals = base + step * k * (1 + 0.5 * rng.random(step.size))
            vals = np.where(step == 0, base * (1 + 0.01 * rng.random(step.size)), vals)
            ts = tick + phases[t]
            batches.append(SampleBatch(names[t], series, [ts] * len(series), vals.tolist()))
        clock[0] = tick + interval - 1
        c = time.process_time()
        await store.write_many(batches)
        parts.add("write", time.process_time() - c)
        samples += sum(len(b) for b in batches)
        k += 1
        if clock[0] >= next_pass:
            c = time.process_time()
            await job.run_once()
            await job.apply_retention()
            parts.add("job", time.process_time() - c)
            next_pass = clock[0] + MINUTE_MS
    total = time.process_time() - cpu0
    parts.on = False
    cpu = dict(parts.cpu)
    cpu["write"] -= cpu.get("transpose", 0.0)
    job_parts = sum(v for n, v in cpu.items() if n not in ("write", "transpose", "job"))
    cpu["job"] -= job_parts
    cpu["job"] = max(cpu["job"], 0.0)
    print(f"steady: {args.targets} x {args.series} series every {args.interval:g}s, {args.minutes} min measured after "
          f"{args.warm} warm: {samples:,} samples, CPU {total:.2f}s = {total / samples * 1e6:.3f} us/sample")
    for n, v in sorted(cpu.items(), key=lambda kv: -kv[1]):
        label = "job (rest: compute, checkpoints)" if n == "job" else n
        print(f"  {label:<36} {v:7.2f}s  {v / samples * 1e6:.3f} us/sample")
    print(f"  peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")
    if args.seal:
        parts.cpu.clear()
        parts.on = True
        clock[0] = (clock[0] // (2 * HOUR_MS) + 1) * 2 * HOUR_MS + job.grace_ms
        c = time.process_time()
        done = await job.run_once()
        seal = time.process_time() - c
        sealed = sum(r.samples for r in done)
        print(f"  seal of the window: {seal:.2f}s CPU, {sealed:,} samples sealed "
              f"({seal / max(sealed, 1) * 1e6:.3f} us/sample); "
              + ", ".join(f"{n} {v:.2f}s" for n, v in parts.cpu.items()))
    await store.close()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--targets", type=int, default=50)
    p.add_argument("--series", type=int, default=500, help="series per target")
    p.add_argument("--interval", type=float, default=5.0, help="scrape interval, seconds")
    p.add_argument("--warm", type=int, default=8, help="simulated minutes before the measured ones")
    p.add_argument("--minutes", type=int, default=6, help="simulated minutes measured")
    p.add_argument("--fresh-every", type=float, default=60.0, help="the job's fresh pass spacing, seconds")
    p.add_argument("--seal", action="store_true", help="then seal the window and time that")
    asyncio.run(run(p.parse_args(argv)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
