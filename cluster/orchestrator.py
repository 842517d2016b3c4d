"""A whole Ringmon cluster on this machine: ``make cluster`` / ``make cluster-down``.

    .venv/bin/python -m cluster up   [--dir run/cluster] [--web-listen 127.0.0.1:8080] ...
    .venv/bin/python -m cluster check [--timeout 120]
    .venv/bin/python -m cluster down

``up`` starts, under ``--dir`` (``run/cluster/``, gitignored): ZooKeeper and Cassandra on
non-default ports (services/zookeeper/zkserver.py, services/cassandra/cassandra_node.py),
runs ``ringmon storage init``, registers 10 pools, starts simulated hosts (one process per
pool, each serving 10 agents on their own ports, each registered ephemerally as its own
member), 3 scrapers, the rollup job, an alerter (when this build has ``ringmon alerter``)
and the web server. The cluster monitors itself: the ``ringmon`` pool holds the /metrics
address of every Ringmon process. Every PID goes to ``<dir>/pids.json``; ``down`` stops
exactly those processes (after checking each PID still runs the command it started), then
Cassandra and ZooKeeper by their own PID files. ``check`` waits until the fleet is visible
through the web server's API (every pool with all its hosts ALIVE and up).

``agents`` is the simulated-host process ``up`` starts (one per pool); besides the host
metrics each agent exports ``ringmon_sim_seconds_total`` (+1 per second) so the drills can
count stored samples exactly.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

from common.entrypoint import exit_status, stop_event
from common.yamlfile import load_yaml_file
from services.proc import pid_alive

if TYPE_CHECKING:
    from prometheus_client.core import CounterMetricFamily

REPO = Path(__file__).resolve().parent.parent
BASE_CONFIG = REPO / "configs" / "cluster" / "ringmon.yaml"
SELF_POOL = "ringmon"
SIM_COUNTER = "ringmon_sim_seconds_total"
SIM_SCRAPES = "ringmon_sim_scrapes_total"


# -- settings ----------------------------------------------------------------------------------


@dataclass
class ClusterSettings:
    """Everything ``up`` needs; defaults are the documented local cluster."""

    dir: str = "run/cluster"
    zookeeper_port: int = 12181
    cassandra_port: int = 19542
    cassandra_heap: str = "1g"
    pools: int = 10
    hosts_per_pool: int = 10
    scrapers: int = 3
    scraper_base_port: int = 9401
    rollup_listen: str = "127.0.0.1:9466"
    alerter_listen: str = "127.0.0.1:9467"
    sink_listen: str = "127.0.0.1:9468"  # a webhook receiver of one's own (the drills serve theirs here)
    web_listen: str = "127.0.0.1:8080"
    interval: str = "10s"
    synthetic_load_rps: float = 0.2
    zookeeper_root: str = "/ringmon"
    base_config: str = str(BASE_CONFIG)
    alerting_template: str = str(REPO / "configs" / "cluster" / "alerting.yaml")
    light_hosts: bool = False  # simulated hosts without the host collector (fewer series, for drills)

    @property
    def path(self) -> Path:
        p = Path(self.dir)
        return p if p.is_absolute() else REPO / p

    @classmethod
    def from_state(cls, settings: dict) -> ClusterSettings:
        """The settings a cluster was started with (keys an older version wrote are ignored)."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in settings.items() if k in known})

    def pool_names(self) -> list[str]:
        return [f"pool-{i:02d}" for i in range(self.pools)]

    def scraper_listen(self, i: int) -> str:
        return f"127.0.0.1:{self.scraper_base_port + i}"


@dataclass
class Proc:
    name: str
    pid: int
    cmd: list[str]
    log: str
    kind: str = "ringmon"  # ringmon | agents
    metrics: str = ""  # HOST:PORT of its /metrics, when it has one


@dataclass
class ClusterState:
    """What ``pids.json`` holds."""

    settings: dict
    processes: list[Proc] = field(default_factory=list)
    zookeeper_dir: str = ""
    cassandra_dir: str = ""
    config: str = ""
    web_url: str = ""
    started: float = 0.0

    def save(self, path: Path) -> None:
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=1))
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path) -> ClusterState:
        d = json.loads(path.read_text())
        d["processes"] = [Proc(**p) for p in d.get("processes", [])]
        return cls(**d)


class ClusterError(RuntimeError):
    """One line for the operator."""


# -- helpers -----------------------------------------------------------------------------------


def say(msg: str) -> None:
    print(f"[cluster {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def port_free(listen: str) -> bool:
    host, _, port = listen.rpartition(":")
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host or "127.0.0.1", int(port)))
        except OSError:
            return False
    return True


def runs_command(pid: int, cmd: list[str]) -> bool:
    """True when ``pid`` still runs ``cmd`` (a recycled PID is never signalled)."""
    try:
        have = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return [a.decode(errors="replace") for a in have if a] == [a for a in cmd if a]


def _wait_exec_visible(p: subprocess.Popen[bytes], cmd: list[str], timeout_s: float = 10.0) -> None:
    """Return once ``p``'s /proc cmdline shows ``cmd`` (or it exited, or ``timeout_s`` passed).

    Popen returns as soon as exec has begun: the kernel sets the new program's argument area a
    moment later, and until then /proc/PID/cmdline reads empty (on a busy machine half the time,
    measured).  A PID recorded in pids.json must be recognisable by ``runs_command`` at once.
    """
    deadline = time.monotonic() + timeout_s
    while not runs_command(p.pid, cmd) and p.poll() is None and time.monotonic() < deadline:
        time.sleep(0.001)


def http_get(url: str, timeout: float = 3.0) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 - 127.0.0.1 URLs we built
        body: bytes = resp.read()
    return body


def api_query(web_url: str, expr: str, timeout: float = 5.0) -> list[dict]:
    """Instant query through the web server's Prometheus API; [] on any failure."""
    try:
        body = json.loads(http_get(f"{web_url}/api/v1/query?" + urllib.parse.urlencode({"query": expr}), timeout))
    except (OSError, ValueError, urllib.error.URLError):
        return []
    if body.get("status") != "success":
        return []
    result: list[dict] = body["data"]["result"]
    return result


def ringmon_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "cli.main", *args]


def has_subcommand(name: str) -> bool:
    from cli.main import build_parser

    parser = build_parser()
    subparsers = parser._subparsers  # noqa: SLF001 - argparse has no public listing
    assert subparsers is not None
    for action in subparsers._group_actions:  # noqa: SLF001
        if name in getattr(action, "choices", {}):
            return True
    return False


# -- configs -----------------------------------------------------------------------------------


def write_configs(s: ClusterSettings) -> dict[str, Path]:
    """The base config with this cluster's ports, and one per scraper (each its own spool)."""
    base = load_yaml_file(s.base_config)
    base.setdefault("storage", {}).setdefault("cassandra", {})["port"] = s.cassandra_port
    base["storage"]["cassandra"]["hosts"] = ["127.0.0.1"]
    base.setdefault("discovery", {}).setdefault("zookeeper", {})["hosts"] = f"127.0.0.1:{s.zookeeper_port}"
    base.setdefault("web", {})["listen"] = s.web_listen
    base.setdefault("scrape", {})["interval"] = s.interval
    base["data_dir"] = str(s.path / "data")
    conf = s.path / "conf"
    conf.mkdir(parents=True, exist_ok=True)
    out = {}
    rules = REPO / "configs" / "rules" / "ringmon-self.yaml"
    if rules.exists():
        base.setdefault("rules", {})["files"] = [str(rules)]
    for name in ["ringmon", *(f"scraper-{i + 1}" for i in range(s.scrapers)), "web", "alerter"]:
        cfg = json.loads(json.dumps(base))
        cfg["storage"]["cassandra"]["spool_dir"] = str(s.path / "data" / "spool" / name)
        path = conf / f"{name}.yaml"
        path.write_text(yaml.safe_dump(cfg, sort_keys=False))
        out[name] = path
    from cli.config import load_config  # validate what we wrote: a typo in the template is one line

    for path in out.values():
        load_config(path)
    return out


def write_alerting_config(s: ClusterSettings) -> Path:
    """configs/cluster/alerting.yaml with this cluster's addresses."""
    doc = load_yaml_file(s.alerting_template)
    a = doc["alerter"]
    a["listen"] = s.alerter_listen
    a["state_db"] = str(s.path / "data" / "alerting.db")
    a["api_token_file"] = str(s.path / "data" / "alerter-api-token")  # the web reads this file too
    a["zookeeper_hosts"] = f"127.0.0.1:{s.zookeeper_port}"
    a["external_url"] = f"http://{s.web_listen}"
    a["rule_files"] = [str(REPO / f) for f in a.get("rule_files", []) if (REPO / f).exists() or Path(f).is_absolute()]
    for r in doc.get("receivers", []):  # the web process's webhook sink, wherever it listens
        for w in r.get("webhook_configs", []):
            path = urllib.parse.urlsplit(w["url"]).path
            if path.startswith("/-/webhook-sink/"):
                w["url"] = f"http://{s.web_listen}{path}"
    path = s.path / "conf" / "alerting.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


# -- up ----------------------------------------------------------------------------------------


class Launcher:
    def __init__(self, s: ClusterSettings, state: ClusterState, state_path: Path) -> None:
        self.s = s
        self.state = state
        self.state_path = state_path
        self.logs = s.path / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)

    def spawn(self, name: str, cmd: list[str], kind: str = "ringmon", metrics: str = "") -> Proc:
        log = self.logs / f"{name}.log"
        with open(log, "ab") as out:
            p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, cwd=str(REPO),
                                 start_new_session=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        _wait_exec_visible(p, cmd)
        proc = Proc(name, p.pid, cmd, str(log), kind, metrics)
        self.state.processes.append(proc)
        self.state.save(self.state_path)
        return proc


def _check_ports(s: ClusterSettings, with_alerter: bool) -> None:
    wanted = [("web", s.web_listen), ("rollup", s.rollup_listen)]
    wanted += [(f"scraper-{i + 1}", s.scraper_listen(i)) for i in range(s.scrapers)]
    if with_alerter:
        wanted.append(("alerter", s.alerter_listen))
    busy = [f"{n} {addr}" for n, addr in wanted if not port_free(addr)]
    if busy:
        raise ClusterError(f"ports already in use: {', '.join(busy)} (stop what uses them, or pick others: "
                           "--web-listen, --scraper-base-port, --rollup-listen, --alerter-listen)")


def register_fleet(s: ClusterSettings, self_targets: list[str]) -> None:
    from discovery.registry import Registry
    from discovery.target import ScrapeSettings

    interval = _seconds(s.interval)
    settings = ScrapeSettings(interval_s=interval, timeout_s=min(5.0, interval))
    reg = Registry(f"127.0.0.1:{s.zookeeper_port}", root=s.zookeeper_root).start(watch=False)
    try:
        for pool in [*s.pool_names(), SELF_POOL]:
            reg.create_pool(pool, settings, update=True)
        current = {m.address for m in reg.members(SELF_POOL) if not m.ephemeral}
        for address in self_targets:
            if address not in current:
                reg.register_host(SELF_POOL, address)
        for stale in current - set(self_targets):
            reg.deregister_host(SELF_POOL, stale)
    finally:
        reg.stop()


def _seconds(text: str) -> float:
    from cli.config import parse_duration

    return parse_duration(text)


def up(s: ClusterSettings, wait_fleet_s: float = 120.0) -> int:  # noqa: PLR0915 - a linear start script: each service in dependency order, cleanup on failure
    from services.cassandra.cassandra_node import CassandraNode, NodeError
    from services.zookeeper.zkserver import ZooKeeperError, ZooKeeperServer

    t0 = time.monotonic()
    s.path.mkdir(parents=True, exist_ok=True)
    state_path = s.path / "pids.json"
    if state_path.exists():
        old = ClusterState.load(state_path)
        alive = [p.name for p in old.processes if pid_alive(p.pid) and runs_command(p.pid, p.cmd)]
        if alive:
            raise ClusterError(f"the cluster in {s.path} is already running ({len(alive)} processes, e.g. "
                               f"{', '.join(alive[:3])}): `make cluster-down` first")
    with_alerter = has_subcommand("alerter")
    _check_ports(s, with_alerter)
    state = ClusterState(settings=asdict(s), started=time.time())
    state.save(state_path)
    launcher = Launcher(s, state, state_path)

    # Cassandra is the slow one: start it first and wait for it last.
    cdir = s.path / "cassandra"
    try:
        node = CassandraNode.load(cdir)
        node.native_port = s.cassandra_port
        node.heap = s.cassandra_heap
    except NodeError:
        node = CassandraNode(cdir, s.cassandra_port, heap=s.cassandra_heap)
    if not node.is_running() and not port_free(f"127.0.0.1:{s.cassandra_port}"):
        raise ClusterError(f"Cassandra port 127.0.0.1:{s.cassandra_port} is already in use by another process "
                           "(pick another with --cassandra-port)")
    if not port_free(f"127.0.0.1:{s.zookeeper_port}") and not (s.path / "zookeeper" / "zookeeper.pid").exists():
        raise ClusterError(f"ZooKeeper port 127.0.0.1:{s.zookeeper_port} is already in use by another process "
                           "(pick another with --zookeeper-port)")
    say(f"starting Cassandra on 127.0.0.1:{s.cassandra_port} (data in {cdir})")
    try:
        node.start(wait=False)
    except NodeError as exc:
        raise ClusterError(f"Cassandra: {exc}") from None
    state.cassandra_dir = str(cdir)
    state.save(state_path)

    zk = ZooKeeperServer(s.path / "zookeeper", port=s.zookeeper_port)
    say(f"starting ZooKeeper on 127.0.0.1:{s.zookeeper_port}")
    try:
        zk.start(wait=True, timeout=90)
    except ZooKeeperError as exc:
        raise ClusterError(f"ZooKeeper: {exc}") from None
    state.zookeeper_dir = str(zk.base_dir)
    state.save(state_path)

    configs = write_configs(s)
    state.config = str(configs["ringmon"])
    zk_hosts = f"127.0.0.1:{s.zookeeper_port}"
    self_targets = [s.scraper_listen(i) for i in range(s.scrapers)] + [s.rollup_listen, s.web_listen]
    if with_alerter:
        self_targets.append(s.alerter_listen)
    register_fleet(s, self_targets)
    say(f"registered {s.pools} pools and the {SELF_POOL!r} self-monitoring pool ({len(self_targets)} targets)")

    for pool in s.pool_names():
        launcher.spawn(f"agents-{pool}", [
            sys.executable, "-m", "cluster", "agents", "--pool", pool, "--count", str(s.hosts_per_pool),
            "--zookeeper", zk_hosts, "--zookeeper-root", s.zookeeper_root,
            "--synthetic-load-rps", str(s.synthetic_load_rps), *(["--light"] if s.light_hosts else []),
        ], kind="agents")
    say(f"started {s.pools * s.hosts_per_pool} simulated hosts in {s.pools} processes")

    say("waiting for Cassandra")
    try:
        node.wait_ready(timeout_s=300)
    except NodeError as exc:
        raise ClusterError(f"Cassandra: {exc}") from None
    state.save(state_path)
    init = subprocess.run(ringmon_cmd("storage", "init", "--hosts", "127.0.0.1", "--port", str(s.cassandra_port)),
                          cwd=str(REPO), capture_output=True, text=True, timeout=300)
    if init.returncode != 0:
        raise ClusterError(f"ringmon storage init failed: {(init.stderr or init.stdout).strip()}")
    say(f"Cassandra ready after {time.monotonic() - t0:.0f}s; {init.stdout.strip().splitlines()[0]}")

    for i in range(s.scrapers):
        name = f"scraper-{i + 1}"
        launcher.spawn(name, ringmon_cmd("scraper", "--config", str(configs[name]), "--id", name,
                                         "--listen", s.scraper_listen(i)), metrics=s.scraper_listen(i))
    launcher.spawn("rollup", ringmon_cmd("rollup", "--config", str(configs["ringmon"]),
                                         "--metrics-listen", s.rollup_listen), metrics=s.rollup_listen)
    if with_alerter:
        alerting = write_alerting_config(s)
    else:
        say("this build has no `ringmon alerter` yet: not started")
    web_alerting = ["--alerting", str(alerting)] if with_alerter else []  # alerter address and API token
    launcher.spawn("web", ringmon_cmd("web", "--config", str(configs["web"]), "--listen", s.web_listen,
                                      *web_alerting), metrics=s.web_listen)
    state.web_url = f"http://{s.web_listen}"
    state.save(state_path)

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            http_get(f"{state.web_url}/-/healthy", 2)
            break
        except (OSError, urllib.error.URLError):
            dead = [p for p in state.processes if not pid_alive(p.pid)]
            if dead:
                raise ClusterError(f"{dead[0].name} exited during start; see {dead[0].log}: "
                                   + _tail(Path(dead[0].log))) from None
            time.sleep(0.5)
    else:
        raise ClusterError(f"the web server did not answer on {state.web_url} within 60s; see {s.path}/logs/web.log")
    if with_alerter:  # after the web server: its webhook sink receives the alerters' notifications
        launcher.spawn("alerter", ringmon_cmd("alerter", "--config", str(configs["alerter"]), "--alerting",
                                              str(alerting), "--listen", s.alerter_listen, "--id", "alerter-1"),
                       metrics=s.alerter_listen)
    say(f"all processes started after {time.monotonic() - t0:.0f}s")
    print_where(state)
    if wait_fleet_s > 0:
        ok = check(state.web_url, s, timeout_s=max(0.0, wait_fleet_s - (time.monotonic() - t0)), t0=t0)
        if not ok:
            # every process runs: the fleet is still converging (a busy machine, a cold Cassandra)
            say("the cluster is running but not every host is visible yet; "
                f"`.venv/bin/python -m cluster check --dir {s.dir}` waits for it")
    return 0


def _tail(path: Path, n: int = 5) -> str:
    try:
        return " | ".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return ""


def print_where(state: ClusterState) -> None:
    s = ClusterSettings.from_state(state.settings)
    print(f"""
Ringmon cluster is up ({len(state.processes)} processes, PIDs in {s.path / 'pids.json'}):
  web (Fleet dashboard)  {state.web_url}/d/fleet     pools: {state.web_url}/pools   targets: {state.web_url}/targets
  Ringmon's own health   {state.web_url}/d/ringmon
  Prometheus API         {state.web_url}/api/v1/query?query=up
  status                 .venv/bin/ringmon status --config {state.config}
  scrapers               {', '.join(f'http://{s.scraper_listen(i)}/targets' for i in range(s.scrapers))}
  rollup /metrics        http://{s.rollup_listen}/metrics
  alerter                http://{s.alerter_listen}/metrics   notifications received: {state.web_url}/notifications
  ZooKeeper              127.0.0.1:{s.zookeeper_port} (root {s.zookeeper_root})
  Cassandra              127.0.0.1:{s.cassandra_port}
  logs                   {s.path / 'logs'}/
  stop                   {"make cluster-down" if s.dir == ClusterSettings.dir else f".venv/bin/python -m cluster down --dir {s.dir}"}
""", flush=True)


def fleet_ready(web_url: str, s: ClusterSettings) -> tuple[bool, str]:
    """Every pool has all its hosts ALIVE (``ringmon_pool_members``, the pools' running count) and
    every host was scraped successfully within the last minute (``up`` == 1, what the Fleet
    dashboard's "Servers up per pool" panel sums)."""
    members = {r["metric"].get("pool"): float(r["value"][1])
               for r in api_query(web_url, 'ringmon_pool_members{status="ALIVE"}')}
    scraped = {r["metric"].get("job"): float(r["value"][1])
               for r in api_query(web_url, "count by (job) (max_over_time(up[1m]) == 1)")}
    up_now = {r["metric"].get("job"): float(r["value"][1]) for r in api_query(web_url, "sum by (job) (up)")}
    want = s.pool_names()
    n = s.hosts_per_pool
    ok = all(members.get(p) == n and scraped.get(p) == n for p in want)
    summary = (f"{sum(1 for p in want if members.get(p) == n)}/{len(want)} pools with {n} ALIVE members, "
               f"{sum(1 for p in want if scraped.get(p) == n)}/{len(want)} with {n} servers scraped up in the "
               f"last minute (up right now: {int(sum(up_now.get(p, 0) for p in want))}/{len(want) * n})")
    return ok, summary


def check(web_url: str, s: ClusterSettings, timeout_s: float = 120.0, t0: float | None = None) -> bool:
    t0 = time.monotonic() if t0 is None else t0
    deadline = time.monotonic() + timeout_s
    last = ""
    while True:
        ok, summary = fleet_ready(web_url, s)
        if summary != last:
            say(summary)
            last = summary
        if ok:
            say(f"fleet visible: {s.pools} pools x {s.hosts_per_pool} servers, {time.monotonic() - t0:.0f}s "
                "after start")
            return True
        if time.monotonic() >= deadline:
            say(f"fleet NOT complete after {time.monotonic() - t0:.0f}s: {summary}")
            return False
        time.sleep(2)


# -- down --------------------------------------------------------------------------------------


def stop_processes(procs: list[Proc], timeout_s: float = 15.0) -> None:
    """SIGTERM to all of ``procs`` at once, SIGKILL to those still running after ``timeout_s``."""
    signalled = []
    for p in procs:
        if not pid_alive(p.pid):
            say(f"{p.name} (pid {p.pid}): not running")
        elif not runs_command(p.pid, p.cmd):
            say(f"{p.name} (pid {p.pid}): PID now runs another command: left alone")
        else:
            os.kill(p.pid, signal.SIGTERM)
            signalled.append(p)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and any(pid_alive(p.pid) for p in signalled):
        time.sleep(0.1)
    for p in signalled:
        if pid_alive(p.pid):
            os.kill(p.pid, signal.SIGKILL)
            say(f"{p.name} (pid {p.pid}): killed (did not stop on SIGTERM within {timeout_s:g}s)")
        else:
            say(f"{p.name} (pid {p.pid}): stopped")


def down(s: ClusterSettings) -> int:
    from services.cassandra.cassandra_node import CassandraNode, NodeError
    from services.zookeeper.zkserver import ZooKeeperServer

    state_path = s.path / "pids.json"
    if not state_path.exists():
        say(f"no cluster state in {state_path}: nothing to stop")
        return 0
    state = ClusterState.load(state_path)
    # web first (no more queries), then scrapers/rollup/alerter, then agents
    stop_processes([p for p in state.processes if p.name == "web"])
    stop_processes([p for p in state.processes if p.kind == "ringmon" and p.name != "web"])
    stop_processes([p for p in state.processes if p.kind != "ringmon"])
    if state.cassandra_dir:
        try:
            node = CassandraNode.load(state.cassandra_dir)
            say(f"Cassandra (pid {node.pid}): stopping")
            node.stop()
        except NodeError as exc:
            say(f"Cassandra: {exc}")
    if state.zookeeper_dir:
        zk = ZooKeeperServer(Path(state.zookeeper_dir))
        say(f"ZooKeeper (pid {zk.pid()}): stopping")
        zk.stop()
    state_path.rename(state_path.with_suffix(".stopped.json"))
    say("cluster stopped (data kept in " + str(s.path) + "; `python -m cluster wipe` removes it)")
    return 0


def find_process(s: ClusterSettings, name: str) -> Proc:
    state = ClusterState.load(s.path / "pids.json")
    for p in state.processes:
        if p.name == name:
            return p
    raise ClusterError(f"no process {name!r} in {s.path / 'pids.json'}")


def signal_process(s: ClusterSettings, name: str, sig: int) -> Proc:
    """Send ``sig`` to a process of the cluster (checked to still run its command)."""
    p = find_process(s, name)
    if not pid_alive(p.pid) or not runs_command(p.pid, p.cmd):
        raise ClusterError(f"{name} (pid {p.pid}) is not running")
    os.kill(p.pid, sig)
    return p


def wait_exit(pid: int, timeout_s: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not pid_alive(pid):
            return True
        time.sleep(0.05)
    return False


def restart_process(s: ClusterSettings, name: str) -> Proc:
    """Start ``name`` again with its recorded command (after it stopped); pids.json is updated."""
    state_path = s.path / "pids.json"
    state = ClusterState.load(state_path)
    old = next((p for p in state.processes if p.name == name), None)
    if old is None:
        raise ClusterError(f"no process {name!r} in {state_path}")
    if pid_alive(old.pid) and runs_command(old.pid, old.cmd):
        raise ClusterError(f"{name} (pid {old.pid}) still runs")
    state.processes = [p for p in state.processes if p.name != name]
    return Launcher(s, state, state_path).spawn(old.name, old.cmd, old.kind, old.metrics)


def wipe(s: ClusterSettings) -> int:
    if (s.path / "pids.json").exists():
        raise ClusterError("the cluster is running: `make cluster-down` first")
    if s.path.exists():
        shutil.rmtree(s.path)
    say(f"removed {s.path}")
    return 0


# -- simulated hosts (one process per pool) ----------------------------------------------------


class SimSecondsCollector:
    """``ringmon_sim_seconds_total``: whole seconds since the agent started (+1 per second)."""

    def __init__(self) -> None:
        self.started = time.time()

    def collect(self) -> Iterator[CounterMetricFamily]:
        from prometheus_client.core import CounterMetricFamily

        c = CounterMetricFamily(SIM_COUNTER, "Seconds since this simulated host started (+1 per second).")
        c.add_metric([], float(int(time.time() - self.started)))
        yield c


class SimScrapesCollector:
    """``ringmon_sim_scrapes_total``: how many times this host's /metrics was served, this one
    included. Stored values of one target are consecutive integers unless a served scrape was
    lost (or failed, which the scraper records as ``up`` 0): the drills count the holes."""

    def __init__(self) -> None:
        self.served = 0

    def describe(self) -> Iterator[CounterMetricFamily]:
        from prometheus_client.core import CounterMetricFamily

        yield CounterMetricFamily(SIM_SCRAPES, "Times this simulated host's /metrics was served.")

    def collect(self) -> Iterator[CounterMetricFamily]:
        from prometheus_client.core import CounterMetricFamily

        self.served += 1
        c = CounterMetricFamily(SIM_SCRAPES, "Times this simulated host's /metrics was served.")
        c.add_metric([], float(self.served))
        yield c


async def run_agents(pool: str, count: int, zookeeper: str, root: str, rps: float, session_timeout: float,
                     light: bool = False) -> int:
    from agent.server import AgentServer
    from discovery.registry import STOPPING, Registry, RegistryError

    loop = asyncio.get_running_loop()
    stop = stop_event()
    agents = [AgentServer("127.0.0.1", 0, pool=pool, synthetic_load_rps=rps, host_metrics=not light,
                          extra_collectors=[SimSecondsCollector(), SimScrapesCollector()])
              for _ in range(count)]
    for a in agents:
        await a.start()
    registry = None
    regs = []
    try:
        while registry is None and not stop.is_set():
            candidate = Registry(zookeeper, root=root, session_timeout=session_timeout, connect_timeout=10)
            try:
                await loop.run_in_executor(None, candidate.start, False)
                for a in agents:
                    regs.append(await loop.run_in_executor(None, candidate.register_ephemeral, pool, a.address))
                registry = candidate
            except RegistryError as exc:
                print(f"agents {pool}: cannot register yet ({exc}); retrying", file=sys.stderr, flush=True)
                with contextlib.suppress(Exception):
                    await loop.run_in_executor(None, candidate.stop)
                regs = []
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 3)
        print(f"agents {pool}: {len(agents)} hosts registered: {', '.join(a.address for a in agents)}", flush=True)
        await stop.wait()
        for r in regs:
            with contextlib.suppress(Exception):
                await loop.run_in_executor(None, r.set_status, STOPPING)
        await asyncio.sleep(0.5)
    finally:
        if registry is not None:
            await loop.run_in_executor(None, registry.stop)
        for a in agents:
            await a.stop()
    return 0


# -- command line ------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m cluster", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="action", required=True)
    defaults = ClusterSettings()
    for name in ("up", "down", "check", "wipe"):
        sp = sub.add_parser(name)
        sp.add_argument("--dir", default=defaults.dir, help="cluster state, data and logs (default %(default)s)")
        if name == "up":
            sp.add_argument("--web-listen", default=defaults.web_listen)
            sp.add_argument("--zookeeper-port", type=int, default=defaults.zookeeper_port)
            sp.add_argument("--cassandra-port", type=int, default=defaults.cassandra_port)
            sp.add_argument("--cassandra-heap", default=defaults.cassandra_heap)
            sp.add_argument("--pools", type=int, default=defaults.pools)
            sp.add_argument("--hosts-per-pool", type=int, default=defaults.hosts_per_pool)
            sp.add_argument("--scrapers", type=int, default=defaults.scrapers)
            sp.add_argument("--scraper-base-port", type=int, default=defaults.scraper_base_port)
            sp.add_argument("--rollup-listen", default=defaults.rollup_listen)
            sp.add_argument("--alerter-listen", default=defaults.alerter_listen)
            sp.add_argument("--interval", default=defaults.interval, help="scrape interval of the pools")
            sp.add_argument("--synthetic-load-rps", type=float, default=defaults.synthetic_load_rps)
            sp.add_argument("--wait-fleet", type=float, default=120.0, metavar="SECONDS",
                            help="then wait this long for the whole fleet in the web API (0: don't)")
        if name == "check":
            sp.add_argument("--timeout", type=float, default=120.0)
    a = sub.add_parser("agents", help="(internal) serve COUNT simulated hosts of one pool")
    a.add_argument("--pool", required=True)
    a.add_argument("--count", type=int, default=10)
    a.add_argument("--zookeeper", required=True)
    a.add_argument("--zookeeper-root", default="/ringmon")
    a.add_argument("--synthetic-load-rps", type=float, default=0.0)
    a.add_argument("--session-timeout", type=float, default=10.0)
    a.add_argument("--light", action="store_true", help="no host collector: only the simulated counters")
    args = p.parse_args(argv)
    return exit_status(lambda: run_action(args), ClusterError, "cluster")


def run_action(args: argparse.Namespace) -> int:
    """The chosen action of ``python -m cluster``; its exit status."""
    if args.action == "agents":
        return asyncio.run(run_agents(args.pool, args.count, args.zookeeper, args.zookeeper_root,
                                      args.synthetic_load_rps, args.session_timeout, args.light))
    s = ClusterSettings(dir=args.dir)
    if args.action == "up":
        for k in ("web_listen", "zookeeper_port", "cassandra_port", "cassandra_heap", "pools", "hosts_per_pool",
                  "scrapers", "scraper_base_port", "rollup_listen", "alerter_listen", "interval",
                  "synthetic_load_rps"):
            setattr(s, k, getattr(args, k))
        return up(s, args.wait_fleet)
    if args.action == "down":
        return down(s)
    if args.action == "wipe":
        return wipe(s)
    state_path = s.path / "pids.json"
    if not state_path.exists():
        raise ClusterError(f"no running cluster in {s.path} (`make cluster` first)")
    state = ClusterState.load(state_path)
    return 0 if check(state.web_url, ClusterSettings.from_state(state.settings), args.timeout) else 1


if __name__ == "__main__":
    sys.exit(main())
