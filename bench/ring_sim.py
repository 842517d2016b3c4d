"""Simulate the scraper ring: balance and movement for 100,000 targets.

For 10, 50 and 200 scrapers with the chosen vnode count (``discovery.ring.DEFAULT_VNODES``)
it prints max/mean targets per scraper and the fraction of targets that move when one
scraper joins and when one leaves, against the goals max/mean <= 1.10 and moved <= 1.2/N.

    .venv/bin/python bench/ring_sim.py                    # the chosen vnode count
    .venv/bin/python bench/ring_sim.py --vnodes 100 500   # compare others
    .venv/bin/python bench/ring_sim.py --trials 5         # several scraper-id sets

Also prints the floor no hash ring can beat: with random keys, per-scraper counts are
binomial, so even a perfect ring shows max/mean ~ 1 + z*sqrt(N/targets) for the
largest of N bins (the "ideal" column: keys hashed straight to a uniformly random bin).
"""

from __future__ import annotations

import argparse
import hashlib
import pathlib
import random
import statistics
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

from discovery.ring import DEFAULT_VNODES, ScraperRing  # noqa: E402


def target_keys(n: int, seed: int = 7) -> list[str]:
    """Realistic keys: pools of 100 hosts on 10.x.y.z:9100."""
    rnd = random.Random(seed)
    keys = []
    for i in range(n):
        pool = f"pool-{i // 100:04d}"
        keys.append(f"{pool}/10.{rnd.randrange(256)}.{rnd.randrange(256)}.{rnd.randrange(1, 255)}:9100#{i}")
    return keys


def owners(ring: ScraperRing, keys: list[str]) -> list[str]:
    return [ring.owner(k) for k in keys]


def ideal_max_over_mean(keys: list[str], n: int) -> float:
    counts = [0] * n
    for k in keys:
        counts[int.from_bytes(hashlib.blake2b(k.encode(), digest_size=8).digest(), "big") % n] += 1
    return max(counts) / (len(keys) / n)


def simulate(keys: list[str], n: int, vnodes: int, seed: int) -> dict[str, float]:
    rnd = random.Random(seed)
    ids = [f"scraper-{rnd.getrandbits(48):012x}" for _ in range(n + 1)]
    base_ids, joiner = ids[:n], ids[n]
    t0 = time.perf_counter()
    ring = ScraperRing(base_ids, vnodes=vnodes)
    build_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    before = owners(ring, keys)
    lookup_s = time.perf_counter() - t0
    counts = {m: 0 for m in base_ids}
    for o in before:
        counts[o] += 1
    mean = len(keys) / n
    joined = owners(ScraperRing(ids, vnodes=vnodes), keys)
    moved_join = sum(1 for a, b in zip(before, joined, strict=True) if a != b) / len(keys)
    wrong_join = sum(1 for a, b in zip(before, joined, strict=True) if a != b and b != joiner)
    leaver = base_ids[rnd.randrange(n)]
    left = owners(ScraperRing([i for i in base_ids if i != leaver], vnodes=vnodes), keys)
    moved_leave = sum(1 for a, b in zip(before, left, strict=True) if a != b) / len(keys)
    wrong_leave = sum(1 for a, b in zip(before, left, strict=True) if a != b and a != leaver)
    return {
        "max_mean": max(counts.values()) / mean,
        "min_mean": min(counts.values()) / mean,
        "moved_join": moved_join,
        "moved_leave": moved_leave,
        "stray": wrong_join + wrong_leave,  # moves not to the joiner / not from the leaver: must be 0
        "build_ms": build_s * 1000,
        "lookup_us": lookup_s / len(keys) * 1e6,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--targets", type=int, default=100_000)
    p.add_argument("--scrapers", type=int, nargs="+", default=[10, 50, 200])
    p.add_argument("--vnodes", type=int, nargs="+", default=[DEFAULT_VNODES])
    p.add_argument("--trials", type=int, default=3, help="scraper-id sets per case (figures are the worst)")
    args = p.parse_args(argv)
    keys = target_keys(args.targets)
    print(f"ring_sim: {args.targets} targets, uhashring HashRing (md5), worst of {args.trials} scraper-id sets")
    print(f"{'scrapers':>8} {'vnodes':>6} {'max/mean':>8} {'ideal':>6} {'min/mean':>8} "
          f"{'moved_join':>10} {'moved_leave':>11} {'1.2/N':>6} {'stray':>5} {'build_ms':>8} {'lookup_us':>9}  goal")
    ok = True
    for n in args.scrapers:
        ideal = ideal_max_over_mean(keys, n)
        for v in args.vnodes:
            runs = [simulate(keys, n, v, seed) for seed in range(args.trials)]
            worst = {
                "max_mean": max(r["max_mean"] for r in runs),
                "min_mean": min(r["min_mean"] for r in runs),
                "moved_join": max(r["moved_join"] for r in runs),
                "moved_leave": max(r["moved_leave"] for r in runs),
                "stray": sum(r["stray"] for r in runs),
                "build_ms": statistics.mean(r["build_ms"] for r in runs),
                "lookup_us": statistics.mean(r["lookup_us"] for r in runs),
            }
            limit = 1.2 / n
            meets = worst["max_mean"] <= 1.10 and worst["moved_join"] <= limit and worst["moved_leave"] <= limit
            ok = ok and meets and worst["stray"] == 0
            print(f"{n:>8} {v:>6} {worst['max_mean']:>8.3f} {ideal:>6.3f} {worst['min_mean']:>8.3f} "
                  f"{worst['moved_join']:>10.4f} {worst['moved_leave']:>11.4f} {limit:>6.4f} {worst['stray']:>5} "
                  f"{worst['build_ms']:>8.1f} {worst['lookup_us']:>9.2f}  {'met' if meets else 'MISSED'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
