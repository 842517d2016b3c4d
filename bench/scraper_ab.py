"""The cluster scraper's CPU per stored sample, code A against code B in turns (issue #20).

    .venv/bin/python bench/scraper_ab.py --code OLD_TREE,NEW_TREE [--rounds 3] [--index-warmup 420]
        [--warmup 40] [--window 120] [--targets 200] [--series 500] [--interval 5] [--profile N]

``bench/peers.py``'s cluster mode measures one scraper once, after minutes of warm-up (a
scraper process's first minutes write every series' index rows, ~20x the CPU per sample of
its steady state), beside its peers. This bench holds one ZooKeeper, one Cassandra node (1 GB
heap, schema made) and ``bench/peers.py targets`` (the same node_exporter-shaped bodies) for
the whole run, and one real ``ringmon scraper`` process per ``--code`` tree (``python -m
cli.main scraper`` with that tree as its working directory, so its modules are the ones
imported; the venv is this one), each on a ZooKeeper root of its own whose pool ``node``
lists every target (ALIVE: scraped). All scrape for ``--index-warmup`` seconds at once (their index rows),
then every pool's members are set STOPPED, and each round gives each tree its turn, every
other round in the reverse order (in two runs of ``--rounds 2`` on 2026-12-07, 22:20 and 22:42
UTC, the tree going first in a round did better by 1-18%, whichever it was): its targets
ALIVE, ``--warmup`` seconds (first scrapes, layout plans), then its CPU (utime + stime of its
pid, /proc) over ``--window`` seconds and the samples it appended to its writer in that
window (``ringmon_scraper_samples_appended_total``, as bench/peers.py counts them), then its
targets STOPPED again. ``--profile N`` adds, before the rounds, one window of each of the first
N trees under ``py-spy record --nonblocking --gil`` at 250 Hz (when installed beside the
interpreter: the threads holding the GIL; its figures are printed, not counted), raw stacks
in ``--out``.

Prints per window the UTC time, the load average, CPU us per stored sample, the CPU's user and
system shares and the main (event loop) thread's, and at the end each tree's windows and
median. Asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.peers import http_get, metric_sum, stop_process, wait_until  # noqa: E402 - after the path insert
from bench.procfs import proc_cpu_s, proc_status_kb  # noqa: E402
from services.proc import free_port  # noqa: E402


def utc() -> str:
    return time.strftime("%H:%M:%S", time.gmtime())


def load_text() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def cpu_split(pid: int) -> tuple[float, float, float]:
    """(user, system, of the two the main thread's) CPU seconds of a process."""
    tick = os.sysconf("SC_CLK_TCK")
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    main = Path(f"/proc/{pid}/task/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) / tick, int(fields[12]) / tick, (int(main[11]) + int(main[12])) / tick


def appended(url: str) -> float:
    for attempt in range(3):
        try:
            return metric_sum(http_get(f"{url}/metrics", timeout=60).decode(), "ringmon_scraper_samples_appended_total")
        except (OSError, TimeoutError):
            if attempt == 2:
                raise
    return 0.0


def start_scraper(code: Path, cfg: Path, tmp: Path, root: str, tag: str) -> tuple[subprocess.Popen, str]:
    """A ``ringmon scraper`` of ``code`` on ZooKeeper root ``root``; (process, its /metrics base URL)."""
    listen = f"127.0.0.1:{free_port()}"
    url = f"http://{listen}"
    log = open(tmp / f"scraper-{tag}.log", "ab")  # noqa: SIM115 - the child holds it
    proc = subprocess.Popen([sys.executable, "-m", "cli.main", "scraper", "--config", str(cfg), "--id", "ab-1",
                             "--zookeeper-root", root, "--listen", listen], cwd=code, stdout=subprocess.DEVNULL,
                            stderr=log)
    log.close()
    wait_until(lambda: b"ringmon_scraper_samples_appended_total" in http_get(f"{url}/metrics"), 120,
               "ringmon scraper start", proc)
    return proc, url


def set_targets(hosts: str, root: str, ports: list[int], interval: float, on: bool) -> None:
    """The members of pool ``node`` under ``root``: every target, ALIVE (``on``) or STOPPED (off:
    the scraper stops their loops; a pool deleted and made again was not seen again)."""
    from discovery.registry import ALIVE, Registry
    from discovery.target import ScrapeSettings

    reg = Registry(hosts, root=root).start(watch=False)
    try:
        if not reg.zk.exists(reg.pool_path("node")):
            reg.create_pool("node", ScrapeSettings(interval_s=interval, timeout_s=interval), update=True)
            reg.register_hosts("node", [f"127.0.0.1:{p}" for p in ports])
        for m in reg.members("node"):
            reg.set_member_status("node", m.node, ALIVE if on else "STOPPED")
    finally:
        reg.stop()


def measure(proc: subprocess.Popen, url: str, args: argparse.Namespace, tag: str, profile: bool = False) -> dict[str, Any]:
    """One window of a running scraper (``profile``: with py-spy, the figures not counted)."""
    start, load0 = utc(), load_text()
    c0, s0, t0, split0 = proc_cpu_s(proc.pid), appended(url), time.monotonic(), cpu_split(proc.pid)
    spy = None
    py_spy = Path(sys.executable).parent / "py-spy"
    if profile and py_spy.exists():
        spy = subprocess.Popen([str(py_spy), "record", "-p", str(proc.pid), "-d", str(int(args.window)),
                                "-r", "250", "--nonblocking", "--gil", "-o", str(Path(args.out) / f"profile-{tag}.txt"), "-f", "raw"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(args.window)
    c1, s1, t1, split1 = proc_cpu_s(proc.pid), appended(url), time.monotonic(), cpu_split(proc.pid)
    rss_kb = proc_status_kb("VmRSS", proc.pid)
    if spy is not None:
        spy.wait(timeout=args.window + 60)
    cpu, stored = c1 - c0, s1 - s0
    user, system, main = (b - a for a, b in zip(split0, split1, strict=True))
    due = args.targets * (args.series + 5) * (t1 - t0) / args.interval
    return {"us": cpu / max(stored, 1) * 1e6, "user": user / cpu, "system": system / cpu, "main": main / cpu,
            "cpu_s": cpu, "stored": stored, "stored_of_due": stored / due,
            "rss_kib_per_series": rss_kb / (args.targets * args.series), "start": start, "load0": load0,
            "load1": load_text()}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--code", required=True, help="comma-separated code trees, run in this order each round")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--index-warmup", type=float, default=420.0,
                   help="seconds every scraper scrapes all targets at the start (its series' index rows)")
    p.add_argument("--warmup", type=float, default=40.0, help="seconds from a scraper's targets on to its window")
    p.add_argument("--window", type=float, default=120.0)
    p.add_argument("--targets", type=int, default=200)
    p.add_argument("--series", type=int, default=500)
    p.add_argument("--interval", type=float, default=5.0)
    p.add_argument("--profile", type=int, default=0,
                   help="before the rounds, a window of each of the first N codes under py-spy (not counted)")
    p.add_argument("--out", default=".", help="directory of the profiles")
    args = p.parse_args(argv)
    import yaml

    from services.cassandra.cassandra_node import CassandraNode
    from services.zookeeper.zkserver import ZooKeeperServer

    codes = [Path(c).resolve() for c in args.code.split(",") if c]
    tmp = Path(tempfile.mkdtemp(prefix="ringmon-scraper-ab-"))
    server = subprocess.Popen([sys.executable, str(ROOT / "bench" / "peers.py"), "targets", "--count",
                               str(args.targets), "--series", str(args.series)], cwd=ROOT, stdout=subprocess.PIPE)
    zk = ZooKeeperServer(tmp / "zookeeper", port=free_port())
    cport = free_port()
    node = CassandraNode(tmp / "cassandra", cport, heap="1g")
    results: dict[Path, list[dict[str, Any]]] = {c: [] for c in codes}
    procs: list[tuple[subprocess.Popen, str]] = []
    try:
        assert server.stdout is not None
        ports = json.loads(server.stdout.readline())["ports"]
        node.start(wait=False)
        zk.start(wait=True, timeout=120)
        node.wait_ready(400)
        subprocess.run([sys.executable, "-m", "cli.main", "storage", "init", "--port", str(cport)],
                       cwd=ROOT, check=True, capture_output=True, timeout=400)
        for i, code in enumerate(codes):
            cfg = tmp / f"ringmon-{i}.yaml"
            cfg.write_text(yaml.safe_dump({
                "data_dir": str(tmp / f"data-{i}"),
                "storage": {"backend": "cassandra", "cassandra": {
                    "hosts": ["127.0.0.1"], "port": cport, "spool_dir": str(tmp / f"data-{i}" / "spool")}},
                "discovery": {"zookeeper": {"hosts": zk.hosts, "session_timeout": "10s"}},
                "scrape": {"interval": f"{args.interval:g}s", "timeout": f"{args.interval:g}s"},
            }))
            set_targets(zk.hosts, f"/ab{i}", ports, args.interval, on=True)
            procs.append(start_scraper(code, cfg, tmp, f"/ab{i}", str(i)))
        print(f"scraper_ab: {args.targets} x {args.series} series every {args.interval:g}s, {os.cpu_count()} cores; "
              f"every scraper indexes its series for {args.index_warmup:g}s (all at once), then in turns: targets "
              f"on, {args.warmup:g}s, a {args.window:g}s window, targets off; codes {[str(c) for c in codes]}",
              flush=True)
        time.sleep(args.index_warmup)
        for i in range(len(codes)):
            set_targets(zk.hosts, f"/ab{i}", ports, args.interval, on=False)
        for i, code in enumerate(codes[: args.profile]):  # before the rounds: a profiled window each
            set_targets(zk.hosts, f"/ab{i}", ports, args.interval, on=True)
            time.sleep(args.warmup)
            r = measure(*procs[i], args, f"profiled-{i}", profile=True)
            set_targets(zk.hosts, f"/ab{i}", ports, args.interval, on=False)
            print(f"  profiled {code}: {r['start']} UTC {r['us']:.3f} us/sample (not counted)", flush=True)
            time.sleep(5)
        for rnd in range(args.rounds):
            order = list(enumerate(codes))
            for i, code in order if rnd % 2 == 0 else order[::-1]:
                set_targets(zk.hosts, f"/ab{i}", ports, args.interval, on=True)
                time.sleep(args.warmup)
                r = measure(*procs[i], args, f"{rnd}-{i}")
                set_targets(zk.hosts, f"/ab{i}", ports, args.interval, on=False)
                results[code].append(r)
                print(f"  round {rnd + 1} {code}: {r['start']} UTC load {r['load0']} -> {r['load1']}: "
                      f"{r['us']:.3f} us/sample ({r['cpu_s']:.1f} s CPU, {r['stored']:,.0f} stored, "
                      f"{r['stored_of_due']:.3f} of due; user {r['user']:.0%} system {r['system']:.0%}, "
                      f"main thread {r['main']:.0%}), RSS {r['rss_kib_per_series']:.2f} KiB/series", flush=True)
                time.sleep(5)
        print("scraper_ab: CPU us per stored sample")
        for code, runs in results.items():
            us = [r["us"] for r in runs]
            print(f"  {code}: {' '.join(f'{u:.3f}' for u in us)}  median {statistics.median(us):.3f}")
    finally:
        for proc, _url in procs:
            stop_process(proc)
        stop_process(server)
        zk.stop()
        node.stop()
        if os.environ.get("SCRAPER_AB_KEEP") is None:
            shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    sys.exit(main())
