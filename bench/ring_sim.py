"""Simulate target ownership: the pure ring and the ring with bounded-load overrides.

For 100,000 targets and 10, 50 and 200 scrapers it runs the full stateful procedure of
``discovery.balance`` (what the leader does): a first plan from no overrides, one scraper
joining (planned from the previous overrides), then one scraper of the base set leaving
(planned from the post-join overrides). It prints, against the goals max/mean <= 1.10 and
moved <= 1.2/N:

- max/mean and min/mean targets per scraper (worst over the three states);
- moved on join, moved on leave (fractions of all targets);
- stray moves on leave: targets of surviving scrapers that moved (must be 0), also for the
  interim state where followers apply the old overrides to the new ring;
- double moves: orphans that moved once to their ring successor (interim) and once more
  when the leader's plan arrived;
- flap: targets not back on their scraper after the leaver comes back (same id);
- overrides count, their document size in bytes (as written to ZooKeeper) and plan time;
- the pure ring's max/mean and moves, for comparison (the "ring" columns).

    .venv/bin/python bench/ring_sim.py                              # the defaults
    .venv/bin/python bench/ring_sim.py --cap-factor 1.03 1.05 1.08  # compare cap factors
    .venv/bin/python bench/ring_sim.py --trials 5 --vnodes 500      # more id sets, other vnodes
    .venv/bin/python bench/ring_sim.py --scrapers 50 --churn 20     # 20 alternating joins/leaves:
                                                                    # do the overrides pile up?

The "binomial" column is the floor of any stateless placement: keys hashed straight to a
uniformly random scraper (per-scraper counts are binomial).
"""

from __future__ import annotations

import argparse
import hashlib
import pathlib
import random
import sys
import time
from collections.abc import Sequence

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

from discovery.balance import (  # noqa: E402
    DEFAULT_CAP_FACTOR,
    OverridesDoc,
    plan_overrides,
    resolve_owners,
)
from discovery.ring import DEFAULT_VNODES, ScraperRing  # noqa: E402


def target_keys(n: int, seed: int = 7) -> list[str]:
    """Realistic keys: pools of 100 hosts on 10.x.y.z:9100."""
    rnd = random.Random(seed)
    keys = []
    for i in range(n):
        pool = f"pool-{i // 100:04d}"
        keys.append(f"{pool}/10.{rnd.randrange(256)}.{rnd.randrange(256)}.{rnd.randrange(1, 255)}:9100#{i}")
    return keys


def binomial_max_over_mean(keys: list[str], n: int) -> float:
    counts = [0] * n
    for k in keys:
        counts[int.from_bytes(hashlib.blake2b(k.encode(), digest_size=8).digest(), "big") % n] += 1
    return max(counts) / (len(keys) / n)


def spread(owners: Sequence[str | None], members: tuple[str, ...]) -> tuple[float, float]:
    counts = dict.fromkeys(members, 0)
    for o in owners:
        if o is None:
            raise AssertionError("a target with no live owner")
        counts[o] += 1
    mean = len(owners) / len(members)
    return max(counts.values()) / mean, min(counts.values()) / mean


def moved(a: Sequence[str | None], b: Sequence[str | None]) -> int:
    return sum(1 for x, y in zip(a, b, strict=True) if x != y)


def simulate(keys: list[str], n: int, vnodes: int, cap_factors: list[float], seed: int) -> dict[float, dict]:
    rnd = random.Random(seed)
    ids = [f"scraper-{rnd.getrandbits(48):012x}" for _ in range(n + 1)]
    base_ids, joiner = ids[:n], ids[n]
    leaver = base_ids[rnd.randrange(n)]
    base = ScraperRing(base_ids, vnodes=vnodes)
    joined = ScraperRing(ids, vnodes=vnodes)
    left = ScraperRing([i for i in ids if i != leaver], vnodes=vnodes)  # after the join
    pure_left = ScraperRing([i for i in base_ids if i != leaver], vnodes=vnodes)
    total = len(keys)

    r0, r1, r_left = base.owners(keys), joined.owners(keys), pure_left.owners(keys)
    ring_fig = {
        "ring_max": spread(r0, base.members)[0],
        "ring_join": moved(r0, r1) / total,
        "ring_leave": moved(r0, r_left) / total,
        "ring_stray": sum(1 for a, b in zip(r0, r1, strict=True) if a != b and b != joiner)
        + sum(1 for a, b in zip(r0, r_left, strict=True) if a != b and a != leaver),
    }
    out = {}
    for c in cap_factors:
        plans: list[dict[str, str]] = []
        times: list[float] = []
        steps: list[tuple[ScraperRing, ScraperRing | None]] = [(base, None), (joined, base), (left, joined)]
        for ring, prev_ring in steps:  # each planned from the previous plan, the first from none
            prev = plans[-1] if plans else {}
            t0 = time.perf_counter()
            plans.append(plan_overrides(ring, keys, prev, c, previous_ring=prev_ring))
            times.append(time.perf_counter() - t0)
        rejoin = plan_overrides(joined, keys, plans[2], c, previous_ring=left)  # the leaver comes back
        f0 = resolve_owners(base, plans[0], keys)
        f1 = resolve_owners(joined, plans[1], keys)
        f2 = resolve_owners(left, plans[2], keys)
        interim = resolve_owners(left, plans[1], keys)  # followers before the leader's new plan
        spreads = [spread(f0, base.members), spread(f1, joined.members), spread(f2, left.members)]
        docs = [OverridesDoc(r.members, p, c, vnodes, total).encode() for r, p in
                ((base, plans[0]), (joined, plans[1]), (left, plans[2]))]
        out[c] = {
            **ring_fig,
            "max_mean": max(s[0] for s in spreads),
            "min_mean": min(s[1] for s in spreads),
            "moved_join": moved(f0, f1) / total,
            "join_spills": sum(1 for a, b in zip(f0, f1, strict=True) if a != b and b != joiner),
            "moved_leave": moved(f1, f2) / total,
            "stray_leave": sum(1 for a, b in zip(f1, f2, strict=True) if a != b and a != leaver)
            + sum(1 for a, b in zip(f1, interim, strict=True) if a != b and a != leaver),
            "double_moves": sum(1 for a, b, d in zip(f1, interim, f2, strict=True) if a != b and b != d),
            "flap": moved(f1, resolve_owners(joined, rejoin, keys)),
            "overrides": max(len(p) for p in plans),
            "bytes": max(len(d) for d in docs),
            "plan_ms": max(times) * 1000,
        }
    return out


def churn(keys: list[str], n: int, vnodes: int, cap_factor: float, rounds: int, seed: int = 11) -> None:
    """Alternate joins and leaves of random scrapers, each planned from the last plan."""
    rnd = random.Random(seed)
    ids = [f"scraper-{rnd.getrandbits(48):012x}" for _ in range(n)]
    ring = ScraperRing(ids, vnodes=vnodes)
    plan = plan_overrides(ring, keys, {}, cap_factor)
    print(f"churn at ~{n} scrapers, cap {cap_factor:g}: round 0: {len(plan)} overrides")
    for r in range(1, rounds + 1):
        if r % 2:
            new_ids = [*ids, f"scraper-{rnd.getrandbits(48):012x}"]
        else:
            leaver = rnd.choice(ids)
            new_ids = [i for i in ids if i != leaver]
        new_ring = ScraperRing(new_ids, vnodes=vnodes)
        new_plan = plan_overrides(new_ring, keys, plan, cap_factor, previous_ring=ring)
        before, after = resolve_owners(ring, plan, keys), resolve_owners(new_ring, new_plan, keys)
        mx = spread(after, new_ring.members)[0]
        print(f"  round {r:>2} ({'join' if r % 2 else 'leave'}, {len(new_ids)} scrapers): {len(new_plan):>5} overrides, "
              f"moved {moved(before, after) / len(keys):.4f} (1.2/N {1.2 / len(ids):.4f}), max/mean {mx:.3f}")
        ids, ring, plan = new_ids, new_ring, new_plan


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--targets", type=int, default=100_000)
    p.add_argument("--scrapers", type=int, nargs="+", default=[10, 50, 200])
    p.add_argument("--vnodes", type=int, default=DEFAULT_VNODES)
    p.add_argument("--cap-factor", type=float, nargs="+", default=[DEFAULT_CAP_FACTOR])
    p.add_argument("--trials", type=int, default=3, help="scraper-id sets per case (figures are the worst)")
    p.add_argument("--churn", type=int, default=0, metavar="ROUNDS",
                   help="instead: alternate ROUNDS joins and leaves at each --scrapers count, printing each round")
    args = p.parse_args(argv)
    keys = target_keys(args.targets)
    if args.churn:
        for n in args.scrapers:
            churn(keys, n, args.vnodes, args.cap_factor[0], args.churn)
        return 0
    started = time.perf_counter()
    print(f"ring_sim: {args.targets} targets, vnodes {args.vnodes}, worst of {args.trials} scraper-id sets; "
          "plan, one join, one leave")
    print(f"{'N':>4} {'cap':>5} | {'max/mean':>8} {'min/mean':>8} {'join':>7} {'leave':>7} {'1.2/N':>7} "
          f"{'stray':>5} {'spills':>6} {'double':>6} {'flap':>5} {'overr':>6} {'bytes':>7} {'plan_ms':>7} | "
          f"{'ring max':>8} {'binom':>6} {'r.join':>7} {'r.leave':>7} {'r.stray':>7} | goal")
    ok = True
    for n in args.scrapers:
        binom = binomial_max_over_mean(keys, n)
        runs = [simulate(keys, n, args.vnodes, args.cap_factor, seed) for seed in range(args.trials)]
        for c in args.cap_factor:
            rs = [r[c] for r in runs]
            w = {k: max(r[k] for r in rs) for k in rs[0]}
            w["min_mean"] = min(r["min_mean"] for r in rs)
            w["stray_leave"] = sum(r["stray_leave"] for r in rs)
            limit = 1.2 / n
            meets = (w["max_mean"] <= 1.10 and w["moved_join"] <= limit and w["moved_leave"] <= limit
                     and w["stray_leave"] == 0)
            ok = ok and meets
            print(f"{n:>4} {c:>5.2f} | {w['max_mean']:>8.3f} {w['min_mean']:>8.3f} {w['moved_join']:>7.4f} "
                  f"{w['moved_leave']:>7.4f} {limit:>7.4f} {w['stray_leave']:>5} {w['join_spills']:>6} "
                  f"{w['double_moves']:>6} {w['flap']:>5} {w['overrides']:>6} {w['bytes']:>7} {w['plan_ms']:>7.0f} | "
                  f"{w['ring_max']:>8.3f} {binom:>6.3f} {w['ring_join']:>7.4f} {w['ring_leave']:>7.4f} "
                  f"{w['ring_stray']:>7} | {'met' if meets else 'MISSED'}")
    print("columns: join/leave = fraction of targets moved; stray = survivors' targets moved on the leave "
          "(final and interim, must be 0); spills = targets moved on the join not to the joiner (count); "
          "double = orphans moved twice (interim, then plan); flap = targets not back where they were after "
          "the leaver rejoins; overr = overrides; bytes = znode data")
    print(f"all goals {'met' if ok else 'NOT met'}; {time.perf_counter() - started:.1f}s")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
