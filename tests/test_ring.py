"""The scraper ring: one owner per target, identical in every process, minimal movement."""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys

from discovery.ring import DEFAULT_VNODES, ScraperRing
from discovery.target import Target


def targets(n: int) -> list[Target]:
    return [Target(pool=f"p{i % 7}", address=f"10.0.{i // 250}.{i % 250}:9100") for i in range(n)]


def test_every_target_has_exactly_one_owner():
    ts = targets(3000)
    ring = ScraperRing(["a", "b", "c"])
    shares = {sid: ring.assignment(ts, sid) for sid in ring.members}
    keys = [t.key for share in shares.values() for t in share]
    assert sorted(keys) == sorted(t.key for t in ts)  # no gap, no duplicate
    assert ring.split(ts) == shares
    assert all(ring.owner(t.key) == sid for sid, share in shares.items() for t in share)
    assert ring.assignment(ts, "not-a-member") == []


def test_same_members_give_the_same_ring_in_another_process():
    ts = targets(500)
    ring = ScraperRing(["s3", "s1", "s2"])  # order of ids does not matter
    code = (
        "import sys, json; sys.path.insert(0, '.');"
        "from discovery.ring import ScraperRing;"
        "keys = json.loads(sys.stdin.read());"
        "r = ScraperRing(['s1', 's2', 's3']);"
        "print(json.dumps([r.owner(k) for k in keys]))"
    )
    root = pathlib.Path(__file__).resolve().parent.parent
    out = subprocess.run(
        [sys.executable, "-c", code], input=json.dumps([t.key for t in ts]), capture_output=True,
        text=True, cwd=root, timeout=60, env={"PYTHONHASHSEED": "123", "PATH": "/usr/bin:/bin"},
    )
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == [ring.owner(t.key) for t in ts]


def test_join_moves_only_targets_to_the_joiner_and_leave_only_the_leavers():
    ts = targets(6000)
    before = ScraperRing([f"s{i}" for i in range(5)])
    joined = ScraperRing([f"s{i}" for i in range(6)])
    left = ScraperRing([f"s{i}" for i in range(5) if i != 2])
    moved_join = [t for t in ts if before.owner(t.key) != joined.owner(t.key)]
    assert moved_join and all(joined.owner(t.key) == "s5" for t in moved_join)
    assert len(moved_join) / len(ts) <= 1.2 / 6
    moved_leave = [t for t in ts if before.owner(t.key) != left.owner(t.key)]
    assert moved_leave and all(before.owner(t.key) == "s2" for t in moved_leave)
    assert len(moved_leave) == len(before.assignment(ts, "s2"))


def test_balance_with_the_default_vnodes():
    ts = targets(20000)
    ring = ScraperRing([f"scraper-{i}" for i in range(10)])
    counts = ring.counts(t.key for t in ts)
    mean = len(ts) / 10
    assert max(counts.values()) / mean <= 1.10
    assert ring.vnodes == DEFAULT_VNODES


def test_empty_ring_and_equality():
    empty = ScraperRing()
    assert empty.owner("p/h:1") is None and empty.split(targets(3)) == {} and len(empty) == 0
    assert ScraperRing(["a", "b"]) == ScraperRing(["b", "a", "a"])
    assert ScraperRing(["a"]) != ScraperRing(["a"], vnodes=10)
    assert "a" in ScraperRing(["a"])
