"""Losslessness of the batching writer with a real Cassandra that goes away for 15 s.

One scenario (module fixture) drives 20 targets scraped every second into a
``BatchingWriter``; Cassandra is stopped, kept down for 15 s (``RINGMON_TEST_OUTAGE_S``;
``make drills`` keeps it down 60 s) and started again. 15 s outlast every timer the writer and
its store have: the writer's slow_after_s (1 s) and retry interval (0.5 s), the driver's
reconnection (every 1 s), request timeout (10 s) and heartbeat (5 s, 5 s to answer). Meanwhile a
second writer *process* appends while spooling, is SIGKILLed, and is restarted once
Cassandra is back. Afterwards every sample of both must be stored exactly once with the
same value bits. This module is also the child process's program (``python <file> child``).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from storage.cassandra import CassandraStorage  # noqa: E402
from storage.matchers import Matcher, MatchOp  # noqa: E402
from storage.model import STALE_NAN, SampleBatch, Series, float_bits, make_labels  # noqa: E402
from storage.writer import BatchingWriter  # noqa: E402

pytestmark = [pytest.mark.cassandra, pytest.mark.slow]

TARGETS = 20
SERIES_PER_TARGET = 25
OUTAGE_S = float(os.environ.get("RINGMON_TEST_OUTAGE_S", "15"))  # past every timer of the writer and its store
CHILD_SERIES = 10
CHILD_INTERVAL_S = 0.2


def _child_series() -> list[Series]:
    return [Series.of(make_labels("kid_metric", job="kid", idx=str(i))) for i in range(CHILD_SERIES)]


def _child_value(ts: int, idx: int) -> float:
    return ts / 1000.0 + idx


async def _child_main(a: argparse.Namespace) -> int:
    store = await CassandraStorage.connect(["127.0.0.1"], a.port, a.keyspace)
    writer = BatchingWriter(store, a.spool, retry_interval_s=0.5, slow_after_s=1.0)
    if a.mode == "replay":
        ok = await writer.drain(180)
        await writer.close()
        await store.close()
        return 0 if ok else 3
    series = _child_series()
    log = open(a.log, "a", buffering=1)
    ts = int(time.time() * 1000)
    deadline = time.monotonic() + 600  # bounded; the test kills us long before
    while time.monotonic() < deadline:
        ts += int(CHILD_INTERVAL_S * 1000)
        b = SampleBatch("kid/h:1")
        for i, s in enumerate(series):
            b.add(s, ts, _child_value(ts, i))
        await writer.append(b)
        log.write(f"{ts} {writer.mode}\n")  # after append returned: the batch is in the spool
        await asyncio.sleep(CHILD_INTERVAL_S)
    return 1


def _spawn_child(port: int, keyspace: str, spool: Path, log: Path, mode: str) -> subprocess.Popen:
    cmd = [sys.executable, __file__, "child", "--port", str(port), "--keyspace", keyspace]
    cmd += ["--spool", str(spool), "--log", str(log), "--mode", mode]
    return subprocess.Popen(cmd, cwd=str(ROOT), stdout=subprocess.DEVNULL, stderr=open(str(log) + ".err", "a"))


async def _scenario(cassandra, store: CassandraStorage, spool: Path, child_dir: Path) -> dict:
    loop = asyncio.get_running_loop()
    writer = BatchingWriter(store, spool, retry_interval_s=0.5, slow_after_s=1.0)
    rnd = random.Random(7)
    series = {
        f"out/h{t}:9100": [
            Series.of(make_labels("outage_metric", instance=f"h{t}:9100", job="out", idx=str(i)))
            for i in range(SERIES_PER_TARGET)
        ]
        for t in range(TARGETS)
    }
    expected: dict[int, list[tuple[int, float]]] = {s.id: [] for group in series.values() for s in group}
    child_log = child_dir / "acked.log"
    child = _spawn_child(cassandra.port, store.keyspace, child_dir / "child_spool", child_log, "append")
    events: dict[str, float] = {}
    spooled_seen = False
    direct_ticks = 0  # ticks whose batches the writer took in DIRECT mode (before / after the outage)

    def child_lines(mode: str = "") -> int:
        try:
            return sum(1 for ln in child_log.read_text().splitlines() if mode in ln)
        except FileNotFoundError:
            return 0

    async def wait_child(mode: str, n: int) -> None:
        deadline = time.monotonic() + 90
        while child_lines(mode) < n and time.monotonic() < deadline and child.poll() is None:
            await asyncio.sleep(0.2)

    async def outage() -> None:
        # both writers write directly before the outage: this one 3 ticks, the child 5 batches
        deadline = time.monotonic() + 90
        while direct_ticks < 3 and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        await wait_child("direct", 5)
        await loop.run_in_executor(None, cassandra.stop)
        events["down"] = time.monotonic()
        await asyncio.sleep(OUTAGE_S / 2)
        await wait_child("spooling", 5)
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=30)
        await asyncio.sleep(OUTAGE_S / 2)
        events["up_called"] = time.monotonic()
        await loop.run_in_executor(None, lambda: cassandra.start(timeout_s=240))
        events["up"] = time.monotonic()

    outage_task = asyncio.create_task(outage())
    tick = int(time.time())
    done_after: tuple[int, float] | None = None
    while True:
        tick += 1
        delay = tick - time.time()
        if delay > 0:
            await asyncio.sleep(delay)
        ts = tick * 1000
        for target, group in series.items():
            b = SampleBatch(target)
            for s in group:
                v = STALE_NAN if rnd.random() < 0.02 else rnd.uniform(-1e6, 1e6)
                b.add(s, ts, v)
                expected[s.id].append((ts, v))
            await writer.append(b)
        spooled_seen = spooled_seen or writer.mode == writer.SPOOLING
        if writer.mode == writer.DIRECT:
            direct_ticks += 1
        if outage_task.done() and done_after is None:
            outage_task.result()
            # Cassandra is back: 2 more ticks written directly (bounded; drain() below judges)
            done_after = (direct_ticks + 2, time.monotonic() + 180)
        if done_after is not None and (direct_ticks >= done_after[0] or time.monotonic() > done_after[1]):
            break
    drained = await writer.drain(180)
    diag = f"mode={writer.mode} depth={writer.queue_depth()} cursor={writer._cursor} stats={writer.stats}"
    if not drained:
        import io
        import traceback

        buf = io.StringIO()
        for t in [writer._replayer, *writer._tasks]:
            if t is not None and not t.done():
                t.print_stack(file=buf)
        if writer._replayer is not None and writer._replayer.done() and not writer._replayer.cancelled():
            diag += f" replayer_exc={writer._replayer.exception()!r}"
        diag += f" free={writer._slots.free} waiters={len(writer._slots._waiters)} tasks={len(writer._tasks)}\n"
        diag += buf.getvalue() + "".join(traceback.format_stack(limit=1))
    await writer.close()
    restarted = _spawn_child(cassandra.port, store.keyspace, child_dir / "child_spool", child_log, "replay")
    try:
        rc = await loop.run_in_executor(None, lambda: restarted.wait(timeout=240))
    except subprocess.TimeoutExpired:
        restarted.kill()
        rc = -1
    return {
        "series": series,
        "expected": expected,
        "drained": drained,
        "diag": diag,
        "spooled_seen": spooled_seen,
        "stats": writer.stats,
        "events": events,
        "child_rc": rc,
        "child_log": child_log,
        "spool_left": sorted(p.name for p in spool.glob("seg-*")),  # (and the writer's id file)
    }


@pytest.fixture(scope="module")
def outage_run(cassandra, tmp_path_factory):
    from fixtures_cassandra import keyspace_store, settle_keyspaces

    base = tmp_path_factory.mktemp("outage")
    with keyspace_store(cassandra, "outage") as store:  # (dropped afterwards by the pool's thread)
        settle_keyspaces(cassandra)  # (no schema change of the keyspace pool under way when the node stops)
        yield store, asyncio.run(_scenario(cassandra, store, base / "writer_spool", base))


def test_outage_stores_every_sample_exactly_once(outage_run) -> None:
    store, run = outage_run
    assert run["spooled_seen"], "the writer never spooled: Cassandra outage not observed"
    assert run["events"]["up_called"] - run["events"]["down"] >= OUTAGE_S - 1
    assert run["drained"], f"spool not drained: {run['diag']}"
    assert run["stats"].dropped_batches == 0
    start = min(ts for samples in run["expected"].values() for ts, _ in samples)
    end = max(ts for samples in run["expected"].values() for ts, _ in samples)
    got = asyncio.run(store.select([Matcher("__name__", MatchOp.EQ, "outage_metric")], start, end))
    by_id = {d.series.id: d for d in got}
    assert set(by_id) == set(run["expected"])
    for sid, samples in run["expected"].items():
        d = by_id[sid]
        assert d.timestamps.tolist() == [ts for ts, _ in samples]  # every sample, once, in order
        assert [float_bits(float(v)) for v in d.values] == [float_bits(v) for _, v in samples]
    total = sum(len(d) for d in got)
    assert total == run["stats"].appended_samples
    assert run["spool_left"] == [] or all(name.endswith(".spool") for name in run["spool_left"])


def test_sigkilled_spooling_writer_loses_nothing_after_restart(outage_run) -> None:
    store, run = outage_run
    assert run["child_rc"] == 0, Path(str(run["child_log"]) + ".err").read_text()[-3000:]
    lines = [ln.split() for ln in run["child_log"].read_text().splitlines() if ln.strip()]
    acked = [int(ts) for ts, _mode in lines]
    assert any(mode == "spooling" for _ts, mode in lines), "child never spooled before the kill"
    got = asyncio.run(
        store.select([Matcher("__name__", MatchOp.EQ, "kid_metric")], min(acked) - 1, max(acked) + 10_000)
    )
    assert len(got) == CHILD_SERIES
    for d in got:
        idx = int(d.series.get("idx"))
        stored = d.timestamps.tolist()
        assert len(stored) == len(set(stored))
        # Every append that returned before the SIGKILL is stored (at most one more, in flight).
        assert set(acked) <= set(stored)
        assert len(stored) - len(acked) <= 1
        assert np.array_equal(d.values, np.array([_child_value(t, idx) for t in stored]))


if __name__ == "__main__" and len(sys.argv) > 1 and sys.argv[1] == "child":
    p = argparse.ArgumentParser()
    p.add_argument("child")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--keyspace", required=True)
    p.add_argument("--spool", required=True)
    p.add_argument("--log", required=True)
    p.add_argument("--mode", choices=["append", "replay"], required=True)
    sys.exit(asyncio.run(_child_main(p.parse_args())))
