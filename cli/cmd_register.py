"""Pools and hosts in ZooKeeper from the command line, and what the scraper ring looks like.

    ringmon register pool NAME [--interval 10s --timeout 5s --path /metrics --scheme http --label k=v]
    ringmon register host POOL HOST:PORT
    ringmon deregister pool NAME [--force]
    ringmon deregister host POOL HOST:PORT
    ringmon pools [--json]
    ringmon pools --url http://127.0.0.1:8080   # a standalone instance (or any web server): its /-/pools
    ringmon pools --config configs/standalone.yaml   # the same, at the config's web.listen
    ringmon ring [--json]          # per scraper: targets, ring share, ring overrides in/out

Every command takes ``--zookeeper HOSTS`` (default: $RINGMON_ZOOKEEPER or 127.0.0.1:2181)
and ``--zookeeper-root`` (default: $RINGMON_ZOOKEEPER_ROOT or /ringmon).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Callable

from kazoo.exceptions import KazooException

from cli.errors import UserError
from discovery.balance import OverridesDoc, capacity, resolve_owners
from discovery.registry import ALIVE, STOPPING, Registry, RegistryError
from discovery.ring import DEFAULT_VNODES, ScraperRing
from discovery.target import ScrapeSettings
from discovery.validation import (
    check_address,
    check_label_name,
    check_pool_name,
    parse_duration,
    settings_from_mapping,
)

DEFAULT_ZOOKEEPER = "127.0.0.1:2181"


def _arg_type(check: Callable[[str], object]) -> Callable[[str], object]:
    def convert(text: str) -> object:
        try:
            return check(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    convert.__name__ = check.__name__.replace("check_", "").replace("parse_", "")
    return convert


def _label(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep:
        raise ValueError(f"expected NAME=VALUE, got {text!r}")
    return check_label_name(name), value


def add_zookeeper_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--zookeeper",
        default=os.environ.get("RINGMON_ZOOKEEPER", DEFAULT_ZOOKEEPER),
        metavar="HOSTS",
        help="ZooKeeper connection string (default: $RINGMON_ZOOKEEPER or %(default)s)",
    )
    p.add_argument(
        "--zookeeper-root",
        default=os.environ.get("RINGMON_ZOOKEEPER_ROOT", "/ringmon"),
        metavar="PATH",
        help="znode under which Ringmon keeps pools and scrapers (default: %(default)s)",
    )
    p.add_argument("--connect-timeout", type=float, default=10.0, metavar="SECONDS",
                   help="give up connecting after this long (default: %(default)s)")


def open_registry(args: argparse.Namespace) -> Registry:
    """Connect for a one-shot command (no watches); clear UserError when ZooKeeper is away."""
    # kazoo logs every failed connection attempt; a one-shot command reports the outcome once
    logging.getLogger("kazoo.client").setLevel(logging.ERROR)
    try:
        return Registry(args.zookeeper, root=args.zookeeper_root, connect_timeout=args.connect_timeout).start(
            watch=False
        )
    except (RegistryError, ValueError) as exc:
        raise UserError(str(exc)) from None


def _run(action: Callable[[Registry, argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        reg = open_registry(args)
        try:
            return action(reg, args)
        except (RegistryError, ValueError) as exc:
            raise UserError(str(exc)) from None
        except KazooException as exc:
            raise UserError(f"ZooKeeper at {args.zookeeper}: {type(exc).__name__} {exc}".rstrip()) from None
        finally:
            reg.stop()

    return run


def _describe(s: ScrapeSettings) -> str:
    labels = ",".join(f"{k}={v}" for k, v in s.labels)
    return (f"interval {s.interval_s:g}s, timeout {s.timeout_s:g}s, {s.scheme}, {s.path}"
            + (f", labels {labels}" if labels else ""))


# -- actions -----------------------------------------------------------------------------------


def register_pool(reg: Registry, args: argparse.Namespace) -> int:
    base = ScrapeSettings()
    if args.update:
        try:
            base = reg.get_pool(args.name)
        except RegistryError:
            base = ScrapeSettings()
    doc = base.to_dict()
    for key in ("interval", "timeout", "path", "scheme"):
        value = getattr(args, key)
        if value is not None:
            doc[key] = value
    if args.label:
        doc["labels"] = {**doc["labels"], **dict(args.label)}
    settings = settings_from_mapping(doc, f"pool {args.name}")
    created = reg.create_pool(args.name, settings, update=args.update)
    print(f"pool {args.name} {'created' if created else 'updated'}: {_describe(settings)}")
    return 0


def register_host(reg: Registry, args: argparse.Namespace) -> int:
    path, created = reg.register_host(args.pool, args.address)
    if created:
        print(f"host {args.address} registered in pool {args.pool} ({path})")
    else:
        print(f"host {args.address} is already registered in pool {args.pool} ({path})")
    return 0


def deregister_pool(reg: Registry, args: argparse.Namespace) -> int:
    removed = reg.delete_pool(args.name, force=args.force)
    print(f"pool {args.name} removed" + (f" with {removed} member(s)" if removed else ""))
    return 0


def deregister_host(reg: Registry, args: argparse.Namespace) -> int:
    removed = reg.deregister_host(args.pool, args.address)
    if not removed:
        raise UserError(f"host {args.address} is not registered in pool {args.pool}")
    print(f"host {args.address} removed from pool {args.pool}" + (f" ({removed} nodes)" if removed > 1 else ""))
    return 0


def show_pools(reg: Registry, args: argparse.Namespace) -> int:
    view = reg.snapshot()
    rows = []
    for pool, s in sorted(view.pools.items()):
        counts = view.status_counts(pool)
        rows.append({
            "pool": pool,
            "running": counts.get(ALIVE, 0),
            "stopping": counts.get(STOPPING, 0),
            "members": len(view.members.get(pool, ())),
            **s.to_dict(),
        })
    return print_pools(rows, args.json)


def print_pools(rows: list[dict], as_json: bool) -> int:
    """The pools table (or JSON); rows from ZooKeeper or from a web server's ``/-/pools``."""
    if as_json:
        json.dump(rows, sys.stdout, indent=2)
        print()
        return 0
    if not rows:
        print("no pools registered")
        return 0
    health = all("up" in r for r in rows)  # a web server also knows each host's last scrape
    header = ("POOL", "RUNNING", "STOPPING", *(("UP", "DOWN") if health else ()), "INTERVAL", "TIMEOUT", "SCHEME",
              "PATH", "LABELS")
    table = [header] + [
        (r["pool"], str(r["running"]), str(r["stopping"]), *((str(r["up"]), str(r["down"])) if health else ()),
         f"{r['interval']:g}s", f"{r['timeout']:g}s", r["scheme"], r["path"],
         ",".join(f"{k}={v}" for k, v in sorted(r["labels"].items())) or "-")
        for r in rows
    ]
    _print_table(table)
    return 0


def run_pools(args: argparse.Namespace) -> int:
    if args.config and not args.url:
        from cli.config import load_config
        from cli.wiring import listen_url

        cfg = load_config(args.config)
        if cfg.discovery.zookeeper is None:
            args.url = listen_url(cfg.web.listen)
        else:
            args.zookeeper, args.zookeeper_root = cfg.discovery.zookeeper.hosts, cfg.discovery.zookeeper.root
    return pools_from_url(args) if args.url else _run(show_pools)(args)


def pools_from_url(args: argparse.Namespace) -> int:
    """``ringmon pools --url``: the pools a running instance serves at ``/-/pools``."""
    import urllib.error
    import urllib.request

    url = f"{args.url.rstrip('/')}/-/pools"
    try:
        with urllib.request.urlopen(url, timeout=args.connect_timeout) as resp:  # noqa: S310 - an operator's URL
            rows = json.load(resp)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise UserError(f"{url}: {getattr(exc, 'reason', None) or exc}") from None
    return print_pools(rows, args.json)


def show_ring(reg: Registry, args: argparse.Namespace) -> int:
    """Each scraper's targets: its ring share, minus the targets overridden away from it,
    plus those overridden to it (the stored bounded-load plan, ``<root>/ring/overrides``)."""
    view = reg.snapshot()
    scrapers = reg.scrapers()
    vnodes = {int(info.get("vnodes", DEFAULT_VNODES)) for info in scrapers.values()} or {DEFAULT_VNODES}
    ring = ScraperRing(scrapers, vnodes=min(vnodes))
    keys = [t.key for t in view.targets()]
    try:
        plan = OverridesDoc.decode(view.ring_overrides, view.ring_overrides_version)
    except ValueError as exc:
        print(f"warning: ignoring {reg.overrides_path}: {exc}", file=sys.stderr)
        plan = OverridesDoc()
    ring_owners = ring.owners(keys)
    owners = resolve_owners(ring, plan.overrides, keys)
    count = dict.fromkeys(ring.members, 0)
    ring_count = dict.fromkeys(ring.members, 0)
    moved_in = dict.fromkeys(ring.members, 0)
    moved_out = dict.fromkeys(ring.members, 0)
    for home, owner in zip(ring_owners, owners, strict=True):
        if owner is None:
            continue
        count[owner] += 1
        ring_count[home] += 1
        if owner != home:
            moved_in[owner] += 1
            moved_out[home] += 1
    active = sum(moved_in.values())
    rows = [
        {"scraper": sid, "listen": scrapers[sid].get("listen", ""), "targets": count[sid],
         "ring_targets": ring_count[sid], "overrides_in": moved_in[sid], "overrides_out": moved_out[sid]}
        for sid in ring.members
    ]
    current = plan.members == ring.members
    cap = capacity(len(keys), len(ring), plan.cap_factor) if ring.members else 0
    if args.json:
        json.dump({"vnodes": ring.vnodes, "targets": len(keys), "scrapers": rows, "overrides": active,
                   "overrides_stored": len(plan), "overrides_version": plan.version, "plan_current": current,
                   "planned_for": list(plan.members), "cap_factor": plan.cap_factor, "cap": cap},
                  sys.stdout, indent=2)
        print()
        return 0
    if len(vnodes) > 1:
        print(f"warning: scrapers disagree on vnodes {sorted(vnodes)}: they compute different rings", file=sys.stderr)
    if not rows:
        print(f"no scrapers running; {len(keys)} target(s) unowned")
        return 0
    _print_table([("SCRAPER", "LISTEN", "TARGETS", "RING", "OVERRIDDEN_IN", "OVERRIDDEN_OUT")] + [
        (r["scraper"], r["listen"] or "-", str(r["targets"]), str(r["ring_targets"]), str(r["overrides_in"]),
         str(r["overrides_out"])) for r in rows])
    print(f"{len(keys)} targets on {len(rows)} scrapers (vnodes {ring.vnodes}); {active} ring overrides, "
          f"cap {cap} targets per scraper (x{plan.cap_factor:g} the mean)")
    if plan.version < 0:
        print("no overrides stored yet: the ring alone decides")
    elif not current:
        print(f"the stored plan (version {plan.version}) was made for other scrapers "
              f"({', '.join(plan.members) or 'none'}); the leader has not planned for these yet")
    return 0


def _print_table(rows: list[tuple[str, ...]]) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())


# -- parsers -----------------------------------------------------------------------------------


def register(sub: argparse._SubParsersAction) -> None:
    pool_name = _arg_type(check_pool_name)
    address = _arg_type(check_address)

    p = sub.add_parser("register", help="register a pool or a host in ZooKeeper")
    what = p.add_subparsers(dest="what", metavar="pool|host", required=True)
    pp = what.add_parser("pool", help="create (or --update) a pool and its scrape settings")
    pp.add_argument("name", type=pool_name, metavar="NAME")
    pp.add_argument("--interval", type=_arg_type(parse_duration), help="scrape interval (default 10s)")
    pp.add_argument("--timeout", type=_arg_type(parse_duration), help="scrape timeout (default 5s)")
    pp.add_argument("--path", help="metrics path (default /metrics)")
    pp.add_argument("--scheme", choices=["http", "https"], help="default http")
    pp.add_argument("--label", type=_arg_type(_label), action="append", default=[], metavar="NAME=VALUE",
                    help="extra label on every series of the pool (repeatable)")
    pp.add_argument("--update", action="store_true", help="change the settings of an existing pool")
    add_zookeeper_args(pp)
    pp.set_defaults(func=_run(register_pool))
    ph = what.add_parser("host", help="register HOST:PORT in POOL (persistent)")
    ph.add_argument("pool", type=pool_name, metavar="POOL")
    ph.add_argument("address", type=address, metavar="HOST:PORT")
    add_zookeeper_args(ph)
    ph.set_defaults(func=_run(register_host))

    d = sub.add_parser("deregister", help="remove a pool or a host from ZooKeeper")
    dwhat = d.add_subparsers(dest="what", metavar="pool|host", required=True)
    dp = dwhat.add_parser("pool", help="remove a pool (refused while it has members unless --force)")
    dp.add_argument("name", type=pool_name, metavar="NAME")
    dp.add_argument("--force", action="store_true", help="also remove its members")
    add_zookeeper_args(dp)
    dp.set_defaults(func=_run(deregister_pool))
    dh = dwhat.add_parser("host", help="remove HOST:PORT from POOL")
    dh.add_argument("pool", type=pool_name, metavar="POOL")
    dh.add_argument("address", type=address, metavar="HOST:PORT")
    add_zookeeper_args(dh)
    dh.set_defaults(func=_run(deregister_host))

    ps = sub.add_parser("pools", help="pools, their running server count and settings")
    ps.add_argument("--json", action="store_true", help="print JSON")
    ps.add_argument("--url", help="ask a running instance instead of ZooKeeper (standalone: http://127.0.0.1:8080)")
    ps.add_argument("--config", help="a config: a standalone's (no discovery.zookeeper) is asked at its web.listen, "
                                     "a cluster's gives the ZooKeeper hosts")
    add_zookeeper_args(ps)
    ps.set_defaults(func=run_pools)

    pr = sub.add_parser("ring", help="live scrapers and how many targets each owns (ring overrides included)")
    pr.add_argument("--json", action="store_true", help="print JSON")
    add_zookeeper_args(pr)
    pr.set_defaults(func=_run(show_ring))
