"""Ringmon against its peers: Prometheus and VictoriaMetrics on the same targets, one at a time.

    .venv/bin/python bench/peers.py [--targets 200] [--series 500] [--interval 5]
                                    [--warmup 40] [--window 120]
                                    [--systems prometheus,victoriametrics,ringmon,ringmon-cluster]

One process serves ``--targets`` node_exporter-shaped /metrics endpoints of ``--series``
series each on 127.0.0.1 (counters that only grow, gauges that move, a few constants: see
``node_series``/``TargetBody``) and counts the samples it serves. Each system in turn - Debian's
``prometheus``, Debian's ``victoria-metrics`` (single node, its own scraper), ``ringmon
standalone`` (SQLite) and Ringmon's cluster mode (ZooKeeper, one Cassandra node, one
``ringmon scraper``; queried through a ``ringmon web`` started after the window) - scrapes
all of them every ``--interval`` seconds from a temp dir, listening on 127.0.0.1 only;
after ``--warmup`` seconds (the cluster: ``--cluster-warmup``) it is measured for
``--window`` seconds, then stopped. Per system:

* CPU per stored sample: the process's CPU time over the window (utime + stime from /proc)
  over the samples it stored in the window, counted by its own metrics
  (``prometheus_tsdb_head_samples_appended_total``, ``vm_rows_added_to_storage_total``,
  ``ringmon_scraper_samples_appended_total``: SQLite's writer stores before the next scrape,
  the cluster's batching writer stores or spools). Cluster mode: scraper and Cassandra
  separately, and summed; Cassandra also net of its idle CPU rate, measured for
  ``--cluster-idle`` seconds before any target (node up, schema made), and its CPU by JVM
  thread group (``bench.procfs.thread_cpu_s``) in the window beside the idle rate;
* samples served of those due in the window (every target scraped every interval: below 1,
  the system's scrapes fall behind) and samples stored of those served (below 1: it drops
  what it scraped; above 1 by the synthetic ``up``-style series each system adds per scrape);
* peak RSS (VmHWM, the warm-up included) and peak RSS per served series; and the steady RSS
  per served series: the highest RSS sampled every 2 s in the window (the cluster's scraper apart);
* bytes on disk per stored sample: ``du`` of the data dir after the system stopped, over the
  samples it stored since start. For Ringmon the rollup job first seals the window holding the
  data (Ringmon standalone first scrapes on after its queries, unmeasured, until
  ``--standalone-run`` seconds after its first samples: by default as long as the cluster
  runs, so that both stores' blocks hold about as many samples per series; ``RollupJob.run_once`` with its clock moved past the window's end plus grace, in a child
  process whose CPU - plus Cassandra's during the seal - is reported as its own row; on
  SQLite the seal drops the raw rows it sealed; on Cassandra the job drops the raw partitions
  of sealed hours later, once query reads take them from blocks: ``drop_sealed_raw`` with its
  clock moved on by that, then ``nodetool flush`` and a compaction of the raw tables, which
  meets the tombstones with their data; the keyspace's directory); and raw bytes per sample
  after sealing: Ringmon's raw tables with their indexes (SQLite: their pages by ``dbstat``;
  Cassandra: their table directories), a peer's data dir;
* the median wall time of ``sum by (mode)(rate(node_cpu_seconds_total[1m]))`` over the
  window (step = interval) through each system's /api/v1/query_range, 5 runs after one
  unmeasured run.

Then a table with the Ringmon / Prometheus ratio of each figure. Ringmon standalone also
scrapes its own /metrics (a few hundred series, counted as stored). Prints figures, asserts
nothing. Every loop is bounded; every process is stopped on exit.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.procfs import proc_cpu_s, proc_status_kb, thread_cpu_s  # noqa: E402 - after the path insert
from common.entrypoint import stop_event  # noqa: E402
from services.proc import free_port  # noqa: E402

if TYPE_CHECKING:
    from services.cassandra.cassandra_node import CassandraNode
    from services.zookeeper.zkserver import ZooKeeperServer
    from storage.rollup_job import WindowResult

QUERY = "sum by (mode)(rate(node_cpu_seconds_total[1m]))"
QUERY_RUNS = 5
WARM_AFTER_FIRST_QUERY_S = 3.0
STOP_WAIT_S = 30.0
RSS_EVERY_S = 2.0  # the window's RSS samples
JIT_THREADS = ("C1 CompilerThre", "C2 CompilerThre")  # a JVM's JIT compiler threads (names cut at 15)

# ---------------------------------------------------------------------------- synthetic targets

MODES = ("idle", "iowait", "irq", "nice", "softirq", "steal", "system", "user")
# (kind, rate per scrape) of a series: c = counter (float seconds), i = counter (integer),
# g = gauge that moves, k = gauge that stays (sizes, info)


def node_series(series: int) -> list[tuple[str, str, str, float]]:
    """``series`` (prefix, kind, help/type header or "", step) of one node_exporter-shaped target.

    ``node_cpu_seconds_total`` (4 CPUs x 8 modes) first, then memory, disk, network and
    filesystem families as node_exporter names them, then hwmon/interrupt families repeated
    with more labels until ``series`` are listed."""
    fams: list[tuple[str, str, str, list[tuple[str, float]]]] = []
    fams.append(("node_cpu_seconds_total", "counter", "c",
                 [(f'cpu="{c}",mode="{m}"', 0.9 if m == "idle" else 0.05 + 0.01 * i)
                  for c in range(4) for i, m in enumerate(MODES)]))
    mem = ("Active", "Inactive", "MemFree", "MemAvailable", "Buffers", "Cached", "Dirty", "Slab",
           "SwapFree", "Mapped", "Shmem", "PageTables", "KernelStack", "AnonPages", "Committed_AS")
    fams += [(f"node_memory_{m}_bytes", "gauge", "g", [("", 4096.0)]) for m in mem]
    fams += [(f"node_memory_{m}_bytes", "gauge", "k", [("", 0.0)]) for m in ("MemTotal", "SwapTotal")]
    disks = [f"sd{chr(97 + d)}" for d in range(6)]
    for name, kind, step in (("reads_completed_total", "i", 12), ("writes_completed_total", "i", 40),
                             ("read_bytes_total", "i", 49152), ("written_bytes_total", "i", 163840),
                             ("io_time_seconds_total", "c", 0.3), ("io_now", "g", 1.0)):
        fams.append((f"node_disk_{name}", "gauge" if kind == "g" else "counter", kind,
                     [(f'device="{d}"', float(step)) for d in disks]))
    nics = ("eth0", "eth1", "lo", "docker0", "veth1a2b3c", "veth4d5e6f")
    for name, kind, step in (("receive_bytes_total", "i", 250000), ("transmit_bytes_total", "i", 180000),
                             ("receive_packets_total", "i", 900), ("transmit_packets_total", "i", 700),
                             ("receive_errs_total", "i", 0), ("receive_drop_total", "i", 0),
                             ("mtu_bytes", "k", 0)):
        fams.append((f"node_network_{name}", "gauge" if kind == "k" else "counter", kind,
                     [(f'device="{n}"', float(step)) for n in nics]))
    mounts = [(f"/dev/vd{chr(97 + i)}1", "ext4", p) for i, p in enumerate(("/", "/boot", "/var", "/srv", "/home"))]
    for name, kind in (("avail_bytes", "g"), ("free_bytes", "g"), ("size_bytes", "k"),
                       ("files", "k"), ("files_free", "g"), ("readonly", "k")):
        fams.append((f"node_filesystem_{name}", "gauge", kind,
                     [(f'device="{d}",fstype="{t}",mountpoint="{p}"', 8192.0) for d, t, p in mounts]))
    fams += [("node_load1", "gauge", "g", [("", 0.1)]), ("node_load5", "gauge", "g", [("", 0.05)]),
             ("node_context_switches_total", "counter", "i", [("", 15000.0)]),
             ("node_intr_total", "counter", "i", [("", 9000.0)]),
             ("node_boot_time_seconds", "gauge", "k", [("", 0.0)])]
    out: list[tuple[str, str, str, float]] = []
    headed: set[str] = set()
    rnd = 0
    while len(out) < series:
        for name, typ, kind, members in fams:
            header = "" if name in headed else f"# HELP {name} {name.replace('_', ' ')}.\n# TYPE {name} {typ}\n"
            headed.add(name)
            for j, (labels, step) in enumerate(members):
                if len(out) == series:
                    break
                lbl = f"{labels},repeat=\"{rnd}\"" if rnd and labels else (f'repeat="{rnd}"' if rnd else labels)
                out.append((f"{name}{{{lbl}}} " if lbl else f"{name} ", kind, "" if j else header, step))
        rnd += 1
        # after the first round: hwmon and interrupt families fill the rest
        fams = [("node_hwmon_temp_celsius", "gauge", "g",
                 [(f'chip="platform_coretemp_{c}",sensor="temp{s}"', 0.5) for c in range(2) for s in range(8)]),
                ("node_interrupts_total", "counter", "i",
                 [(f'cpu="{c}",devices="eth{d}",type="{30 + d}"', 120.0) for c in range(4) for d in range(4)])]
    return out


@dataclass
class TargetBody:
    """One target's series and how its values move: rendered anew for every scrape."""

    index: int
    series: list[tuple[str, str, str, float]]
    scrapes: int = 0
    base: list[float] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.base = [1e6 * (1 + (self.index * 31 + i * 17) % 97) for i in range(len(self.series))]

    def render(self) -> bytes:
        self.scrapes += 1
        n = self.scrapes
        parts: list[str] = []
        for i, (prefix, kind, header, step) in enumerate(self.series):
            b = self.base[i]
            jitter = ((n * 7919 + i * 104729 + self.index * 13) % 1000) / 1000  # in [0, 1)
            if kind == "c":
                text = f"{b / 1000 + n * step * (0.5 + jitter):.2f}"
            elif kind == "i":
                text = str(int(b + n * step + n * step * jitter))
            elif kind == "g":
                text = f"{b * (1 + 0.01 * jitter) + step * (n % 17):.6g}"
            else:
                text = str(int(b))
            parts.append(f"{header}{prefix}{text}\n")
        return "".join(parts).encode()


async def serve_targets(count: int, series: int) -> None:
    """The targets on their own ports plus a control port whose /stats counts samples served;
    prints {"ports": [...], "control": port} on stdout, runs until SIGTERM."""
    from aiohttp import web

    from cli.wiring import serve_app

    layout = node_series(series)
    bodies = [TargetBody(i, layout) for i in range(count)]
    served = {"requests": 0, "samples": 0}
    runners: list[web.AppRunner] = []

    def handler_for(body: TargetBody) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def metrics(request: web.Request) -> web.Response:
            served["requests"] += 1
            served["samples"] += series
            return web.Response(body=body.render(),
                                headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"})
        return metrics

    async def stats(request: web.Request) -> web.Response:
        return web.json_response(served)

    async def listen(app: web.Application) -> int:
        runner, port = await serve_app(app, "127.0.0.1:0", "peers targets")
        runners.append(runner)
        return port

    ports = []
    for body in bodies:
        app = web.Application()
        app.router.add_get("/metrics", handler_for(body))
        ports.append(await listen(app))
    control = web.Application()
    control.router.add_get("/stats", stats)
    print(json.dumps({"ports": ports, "control": await listen(control)}), flush=True)
    await stop_event().wait()
    for r in runners:
        await r.cleanup()


# ---------------------------------------------------------------------------- helpers


def http_get(url: str, timeout: float = 30.0) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as r:  # noqa: S310 - 127.0.0.1 only
        body: bytes = r.read()
    return body


def metric_sum(text: str, name: str) -> float:
    """Sum of the samples of ``name`` (any labels) in an exposition text; NaN when absent."""
    from scraper.exposition import sample_sums as parse_metrics

    return parse_metrics(text).get(name, math.nan)


def du_bytes(path: Path) -> int:
    """Bytes of the files under ``path`` (allocated blocks, as ``du`` counts them)."""
    total = 0
    for p in path.rglob("*"):
        try:
            if p.is_file() and not p.is_symlink():
                total += p.stat().st_blocks * 512
        except OSError:
            continue
    return total


def wait_until(check: Callable[[], bool], timeout_s: float, what: str, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what}: the process exited with {proc.returncode}")
        try:
            if check():
                return
        except OSError:
            pass
        time.sleep(0.25)
    raise RuntimeError(f"{what}: not within {timeout_s:g}s")


def stop_process(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(STOP_WAIT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


# ---------------------------------------------------------------------------- the systems


class System(Protocol):
    """One system under test, started in ``tmp`` on the given targets."""

    name: str
    api: str  # base URL of its Prometheus-compatible API

    def start(self, tmp: Path, ports: list[int], interval: float) -> None: ...
    def pids(self) -> dict[str, int]: ...  # the processes whose CPU counts, by role
    def samples_stored(self) -> float: ...  # since start, from its own metrics
    def finish(self) -> dict[str, float]: ...  # stop; extra figures (e.g. a seal's CPU)
    def data_dir(self) -> Path: ...


def thread_delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """CPU seconds by thread group between two ``thread_cpu_s`` readings (threads started meanwhile count whole)."""
    return {k: v - before.get(k, 0.0) for k, v in after.items()}


def write_scrape_config(path: Path, ports: list[int], interval: float) -> None:
    """A Prometheus-format scrape config for the local targets (Prometheus and VictoriaMetrics read it)."""
    targets = ", ".join(f"'127.0.0.1:{p}'" for p in ports)
    ms = round(interval * 1000)
    path.write_text(f"global:\n  scrape_interval: {ms}ms\n  scrape_timeout: {ms}ms\n"
                    f"scrape_configs:\n  - job_name: node\n    static_configs:\n      - targets: [{targets}]\n")


@dataclass
class ExternalPeer:
    """A peer run from its Debian binary: started on a free loopback port with its data under
    ``tmp/data``, counted by the samples counter its own /metrics exports."""

    name: str
    binary: str
    counter: str  # its own total of samples stored
    argv: tuple[str, ...]  # its arguments; {port}, {data} and {cfg} (the scrape config) filled in
    api: str = ""
    proc: subprocess.Popen[bytes] | None = None
    tmp: Path = Path()

    def args(self, port: int, cfg: Path) -> list[str]:
        return [a.format(port=port, data=self.data_dir(), cfg=cfg) for a in self.argv]

    def start(self, tmp: Path, ports: list[int], interval: float) -> None:
        binary = shutil.which(self.binary)
        if binary is None:
            raise RuntimeError(f"the {self.binary} binary is not installed (make system-deps)")
        self.tmp = tmp
        cfg = tmp / "scrape.yml"
        write_scrape_config(cfg, ports, interval)
        port = free_port()
        self.api = f"http://127.0.0.1:{port}"
        self.proc = subprocess.Popen([binary, *self.args(port, cfg)], stdout=subprocess.DEVNULL,
                                     stderr=open(tmp / f"{self.binary}.log", "ab"))
        wait_until(lambda: self.counter.encode() in http_get(f"{self.api}/metrics"),
                   90, f"{self.binary} start", self.proc)

    def pids(self) -> dict[str, int]:
        assert self.proc is not None
        return {self.binary: self.proc.pid}

    def samples_stored(self) -> float:
        return metric_sum(http_get(f"{self.api}/metrics").decode(), self.counter)

    def finish(self) -> dict[str, float]:
        if self.proc is not None:
            stop_process(self.proc)
        return {}

    def data_dir(self) -> Path:
        return self.tmp / "data"


PROMETHEUS = ("Prometheus", "prometheus", "prometheus_tsdb_head_samples_appended_total",
              ("--config.file={cfg}", "--storage.tsdb.path={data}", "--web.listen-address=127.0.0.1:{port}"))
VICTORIAMETRICS = ("VictoriaMetrics", "victoria-metrics", "vm_rows_added_to_storage_total",
                   ("-httpListenAddr=127.0.0.1:{port}", "-storageDataPath={data}", "-promscrape.config={cfg}",
                    "-search.latencyOffset=5s", "-retentionPeriod=1d"))


@dataclass
class RingmonStandalone:
    name: str = "Ringmon standalone"
    api: str = ""
    proc: subprocess.Popen | None = None
    tmp: Path = Path()
    cfg_path: Path = Path()

    def start(self, tmp: Path, ports: list[int], interval: float) -> None:
        import yaml

        self.tmp = tmp
        port = free_port()
        self.api = f"http://127.0.0.1:{port}"
        targets = tmp / "targets.yaml"
        targets.write_text(yaml.safe_dump({"pools": {"node": {
            "interval": f"{interval:g}s", "timeout": f"{interval:g}s",
            "hosts": [f"127.0.0.1:{p}" for p in ports]}}}))
        self.cfg_path = tmp / "ringmon.yaml"
        self.cfg_path.write_text(yaml.safe_dump({
            "data_dir": str(tmp / "data"),
            "storage": {"backend": "sqlite"},
            "discovery": {"static_file": str(targets), "refresh_interval": "30s"},
            "scrape": {"interval": f"{interval:g}s", "timeout": f"{interval:g}s"},
            "agents": [],
            "web": {"listen": f"127.0.0.1:{port}"},
            "rules": {"files": []},
            "alerting": "",
        }))
        self.proc = subprocess.Popen([sys.executable, "-m", "cli.main", "standalone", "--config", str(self.cfg_path)],
                                     cwd=ROOT, stdout=subprocess.DEVNULL, stderr=open(tmp / "ringmon.log", "ab"))
        wait_until(lambda: b"ringmon_scraper_samples_appended_total" in http_get(f"{self.api}/metrics"),
                   120, "ringmon standalone start", self.proc)

    def pids(self) -> dict[str, int]:
        assert self.proc is not None
        return {"ringmon standalone": self.proc.pid}

    def samples_stored(self) -> float:
        return metric_sum(http_get(f"{self.api}/metrics").decode(), "ringmon_scraper_samples_appended_total")

    def finish(self) -> dict[str, float]:
        if self.proc is None:
            return {}
        stop_process(self.proc)
        return seal(self.cfg_path)

    def data_dir(self) -> Path:
        return self.tmp / "data"


@dataclass
class RingmonCluster:
    """ZooKeeper + Cassandra (one node, RF 1) + one ``ringmon scraper``; queries through a
    ``ringmon web`` started after the window (its CPU is not counted)."""

    name: str = "Ringmon cluster"
    api: str = ""
    tmp: Path = Path()
    cfg_path: Path = Path()
    scraper: subprocess.Popen | None = None
    web: subprocess.Popen | None = None
    zk: ZooKeeperServer | None = None
    node: CassandraNode | None = None
    scraper_url: str = ""
    idle_s: float = 60.0  # the node's idle CPU is measured this long (schema made, no targets yet)
    idle_cpu_s: float = math.nan
    idle_threads: dict[str, float] = field(default_factory=dict)  # CPU seconds by thread group, idle

    def start(self, tmp: Path, ports: list[int], interval: float) -> None:
        import yaml

        from discovery.registry import Registry
        from discovery.target import ScrapeSettings
        from services.cassandra.cassandra_node import CassandraNode
        from services.zookeeper.zkserver import ZooKeeperServer

        self.tmp = tmp
        cport = free_port()
        self.zk = zk = ZooKeeperServer(tmp / "zookeeper", port=free_port())
        self.node = node = CassandraNode(tmp / "cassandra", cport, heap="1g")
        node.start(wait=False)
        zk.start(wait=True, timeout=120)
        node.wait_ready(400)
        subprocess.run([sys.executable, "-m", "cli.main", "storage", "init", "--port", str(cport)],
                       cwd=ROOT, check=True, capture_output=True, timeout=400)
        if self.idle_s > 0 and node.pid is not None:  # the node's fixed CPU: up, schema made, no writes
            c0, th0 = proc_cpu_s(node.pid), thread_cpu_s(node.pid)
            time.sleep(self.idle_s)
            self.idle_cpu_s = proc_cpu_s(node.pid) - c0
            self.idle_threads = thread_delta(th0, thread_cpu_s(node.pid))
        self.cfg_path = tmp / "ringmon.yaml"
        self.cfg_path.write_text(yaml.safe_dump({
            "data_dir": str(tmp / "data"),
            "storage": {"backend": "cassandra", "cassandra": {"hosts": ["127.0.0.1"], "port": cport,
                                                               "spool_dir": str(tmp / "data" / "spool")}},
            "discovery": {"zookeeper": {"hosts": zk.hosts, "session_timeout": "10s"}},
            "scrape": {"interval": f"{interval:g}s", "timeout": f"{interval:g}s"},
        }))
        reg = Registry(zk.hosts).start(watch=False)
        try:
            reg.create_pool("node", ScrapeSettings(interval_s=interval, timeout_s=interval), update=True)
            for p in ports:
                reg.register_host("node", f"127.0.0.1:{p}")
        finally:
            reg.stop()
        listen = f"127.0.0.1:{free_port()}"
        self.scraper_url = f"http://{listen}"
        self.scraper = subprocess.Popen(
            [sys.executable, "-m", "cli.main", "scraper", "--config", str(self.cfg_path), "--id", "peers-1",
             "--listen", listen], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=open(tmp / "scraper.log", "ab"))
        wait_until(lambda: b"ringmon_scraper_samples_appended_total" in http_get(f"{self.scraper_url}/metrics"),
                   120, "ringmon scraper start", self.scraper)

    def pids(self) -> dict[str, int]:
        assert self.scraper is not None and self.node is not None
        return {"scraper": self.scraper.pid, "cassandra": self.node.pid or 0}

    def samples_stored(self) -> float:
        # appended to the batching writer, which stores them in Cassandra or spools them: what the
        # scraper keeps up with. A scraper busy warming up answers its /metrics late: 3 tries of 60 s.
        for attempt in range(3):
            try:
                text = http_get(f"{self.scraper_url}/metrics", timeout=60).decode()
                return metric_sum(text, "ringmon_scraper_samples_appended_total")
            except (OSError, TimeoutError):
                if attempt == 2:
                    raise
        return math.nan

    def before_query(self) -> None:
        """The query server, started after the window."""
        port = free_port()
        self.api = f"http://127.0.0.1:{port}"
        self.web = subprocess.Popen(
            [sys.executable, "-m", "cli.main", "web", "--config", str(self.cfg_path), "--listen", f"127.0.0.1:{port}"],
            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=open(self.tmp / "web.log", "ab"))
        wait_until(lambda: http_get(f"{self.api}/-/ready") is not None, 120, "ringmon web start", self.web)

    def finish(self) -> dict[str, float]:
        extra: dict[str, float] = {}
        try:
            for p in (self.web, self.scraper):  # the scraper's writer drains its queue on SIGTERM
                if p is not None:
                    stop_process(p)
            node = self.node
            if self.scraper is not None and node is not None and node.is_running() and node.pid is not None:
                c0, th0 = proc_cpu_s(node.pid), thread_cpu_s(node.pid)
                extra = seal(self.cfg_path)
                extra["seal_cassandra_cpu_s"] = proc_cpu_s(node.pid) - c0
                extra["seal_cpu_s"] += extra["seal_cassandra_cpu_s"]
                # of it the JVM's JIT compilers (a node that ran for hours compiles next to nothing)
                extra["seal_cassandra_jit_cpu_s"] = sum(
                    v for k, v in thread_delta(th0, thread_cpu_s(node.pid)).items() if k.startswith(JIT_THREADS))
                node.nodetool("flush", "ringmon", timeout_s=300)
                extra["raw_disk_bytes_flushed"] = float(cassandra_raw_bytes(self.data_dir()))
                # the tombstones of the dropped raw partitions meet their data in a compaction
                node.nodetool("compact", "ringmon", *RAW_TABLES_CASSANDRA, timeout_s=600)
                extra["raw_disk_bytes"] = float(cassandra_raw_bytes(self.data_dir()))
                for table, size in cassandra_raw_bytes_by_table(self.data_dir()).items():
                    extra[f"raw_disk_bytes:{table}"] = float(size)
                for line in node.nodetool("tablestats", "ringmon.raw_blocks", timeout_s=120).splitlines():
                    if "SSTable Compression Ratio:" in line:  # (the table compressor's, over the blocks' bytes)
                        extra["raw_blocks_compression_ratio"] = float(line.split(":")[1])
        finally:
            if self.node is not None:
                self.node.stop()
            if self.zk is not None:
                self.zk.stop()
        return extra

    def data_dir(self) -> Path:
        return self.tmp / "cassandra" / "data" / "ringmon"


def seal(cfg_path: Path) -> dict[str, float]:
    """The rollup job's seal of the window holding the run, in a child process (its CPU)."""
    out = subprocess.run([sys.executable, str(Path(__file__).resolve()), "seal", "--config", str(cfg_path)],
                         cwd=ROOT, capture_output=True, text=True, timeout=900)
    if out.returncode != 0:
        raise RuntimeError(f"seal failed:\n{out.stderr[-2000:]}")
    figures: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
    return figures


async def seal_child(cfg_path: str) -> dict[str, float]:
    """``RollupJob.run_once`` with its clock past the open window's end plus grace: what the
    job does to this data once the window closes. Prints CPU seconds and samples sealed."""
    from cli.config import load_config
    from cli.wiring import make_storage
    from storage.rollup_job import RollupJob, RollupStore, SealedRawDrop, window_floor
    from storage.rollup_lease import LocalShardLease

    cfg = load_config(cfg_path, {})
    store = await make_storage(cfg.storage)
    assert isinstance(store, RollupStore), "make_storage opens a rollup-capable store"
    try:
        probe = RollupJob(store, LocalShardLease(Path(cfg.data_dir) / "rollup-locks"))
        future = window_floor(int(time.time() * 1000), probe.window_ms) + probe.window_ms + probe.grace_ms + 1
        job = RollupJob(store, probe.lease, now_ms=lambda: future)
        cpu0 = time.process_time()
        done = await job.run_once()
        cpu = time.process_time() - cpu0
        dropped, drop_cpu = 0, 0.0
        if isinstance(store, SealedRawDrop):
            # Later, once query reads take the window from blocks, the job drops its raw input
            # (the scraper stopped before the seal: no write in flight to spare).
            store.raw_drop_skew_ms = 0
            later = RollupJob(store, probe.lease, now_ms=lambda: future + store.raw_hot_ms)
            cpu0 = time.process_time()
            dropped = await later.drop_sealed_raw()
            drop_cpu = time.process_time() - cpu0
        try:
            reads = await one_series_reads(store, done)
        except Exception as exc:  # noqa: BLE001 - a figure beside the seal's: the seal's figures still count
            print(f"one-series reads not measured: {exc!r}", file=sys.stderr)
            reads = {}
    finally:
        await store.close()
    sealed = sum(getattr(w, "samples", 0) for w in done)
    out = {"seal_cpu_s": cpu, "seal_windows": float(len(done)), "raw_partitions_dropped": float(dropped),
           "drop_cpu_s": drop_cpu,
           "series_sealed": float(sum(getattr(w, "series", 0) for w in done)),
           "samples_sealed": float(sealed), "block_bytes": float(sum(getattr(w, "block_bytes", 0) for w in done)),
           **reads}
    if cfg.storage.backend == "sqlite":
        by_name, free, blobs = sqlite_raw_bytes_by_name(Path(cfg.storage.sqlite.path))
        out["raw_disk_bytes"] = float(sum(by_name.values()))
        out["sqlite_freelist_bytes"], out["raw_blocks_data_bytes"] = float(free), float(blobs)
        for name, size in by_name.items():
            out[f"raw_disk_bytes:{name}"] = float(size)
    return out


ONE_SERIES_READS = 7


async def one_series_reads(store: object, done: Sequence[WindowResult]) -> dict[str, float]:
    """Cassandra: the median wall ms of a read of one series' sealed blocks (``read_blocks``; a
    series of a 500-series target) with its blocks' shared timestamps (block version 4) read
    from the store each time, and kept by the process (``storage.blocks.TIMES``)."""
    from storage.blocks import TIMES
    from storage.cassandra_rollup import CassandraRollupStorage

    if not isinstance(store, CassandraRollupStorage) or not done:
        return {}
    rows = [r for page in await store.execute(f"SELECT series_id FROM {store.keyspace}.raw_blocks LIMIT 1")
            for r in page]
    if not rows:
        return {}
    sid, start, end = rows[0][0], min(w.start_ms for w in done), max(w.end_ms for w in done)
    out: dict[str, float] = {}
    for label, clear in (("one_series_read_ms_times_read", True), ("one_series_read_ms_times_kept", False)):
        ms = []
        for _ in range(ONE_SERIES_READS):
            if clear:
                TIMES.clear()
            t = time.perf_counter()
            await store.read_blocks(sid, start, end)
            ms.append((time.perf_counter() - t) * 1e3)
        out[label] = statistics.median(ms)
    return out


RAW_TABLES = ("raw_chunks", "raw_frames", "raw_layouts", "raw_blocks", "raw_groups", "raw_block_times", "raw_late",
              "raw_recent")
RAW_TABLES_CASSANDRA = ("raw_frames", "raw_layouts", "raw_blocks", "raw_block_times", "raw_late", "raw_late_frames",
                        "raw_recent")


def sqlite_raw_bytes_by_name(path: Path) -> tuple[dict[str, int], int, int]:
    """Pages of each raw table and index in a SQLite file (``dbstat``, whole pages with their
    unused bytes): what raw samples take on disk; and, apart, the bytes of the file's freelist
    and of the blocks themselves (``raw_blocks.data``, ``raw_groups.data`` and ``.ids``, within the tables' pages). Pages the
    seal freed by dropping sealed raw rows are not counted: they are on the freelist, and the
    next writes reuse them."""
    import sqlite3

    con = sqlite3.connect(path)
    try:
        marks = ",".join("?" * len(RAW_TABLES))
        rows = con.execute(f"SELECT s.name, sum(s.pgsize) FROM dbstat s JOIN sqlite_master m ON m.name = s.name"
                           f" WHERE m.tbl_name IN ({marks}) GROUP BY s.name", RAW_TABLES).fetchall()
        page = int(con.execute("PRAGMA page_size").fetchone()[0])
        free = int(con.execute("PRAGMA freelist_count").fetchone()[0]) * page
        blobs = int(con.execute("SELECT coalesce(sum(length(data)), 0) FROM raw_blocks").fetchone()[0])
        if con.execute("SELECT 1 FROM sqlite_master WHERE name = 'raw_groups'").fetchone() is not None:
            blobs += int(con.execute("SELECT coalesce(sum(length(data) + length(ids)), 0) FROM raw_groups").fetchone()[0])
    finally:
        con.close()
    return {str(name): int(size) for name, size in rows}, free, blobs


def sqlite_raw_bytes(path: Path) -> int:
    """Pages of the raw tables and their indexes in a SQLite file (``sqlite_raw_bytes_by_name``)."""
    return sum(sqlite_raw_bytes_by_name(path)[0].values())


def cassandra_raw_bytes_by_table(keyspace_dir: Path) -> dict[str, int]:
    """Bytes of each raw table's directory of a flushed Cassandra keyspace (``<table>-<id>``)."""
    out: dict[str, int] = {}
    for d in keyspace_dir.glob("*-*"):
        table = d.name.rsplit("-", 1)[0]
        if table in RAW_TABLES:
            out[table] = out.get(table, 0) + du_bytes(d)
    return out


def cassandra_raw_bytes(keyspace_dir: Path) -> int:
    """Bytes of the raw tables' directories of a flushed Cassandra keyspace."""
    return sum(cassandra_raw_bytes_by_table(keyspace_dir).values())


SYSTEMS: dict[str, Callable[[], System]] = {
    "prometheus": partial(ExternalPeer, *PROMETHEUS), "victoriametrics": partial(ExternalPeer, *VICTORIAMETRICS),
    "ringmon": RingmonStandalone,
    "ringmon-cluster": RingmonCluster,
}


# ---------------------------------------------------------------------------- measuring


@dataclass
class Figures:
    """What one system did in the measuring window."""

    system: str
    series: int  # served series (targets x series per target)
    cpu_s: dict[str, float]  # by process role, over the window
    stored: float  # samples stored in the window
    served: float  # samples served in the window
    due: float  # samples a scrape of every target every interval would have served in the window
    stored_total: float  # samples stored since start (what the disk holds)
    peak_rss_kb: dict[str, int]
    disk_bytes: int
    query_ms: list[float]
    query_series: int
    extra: dict[str, float] = field(default_factory=dict)
    window_s: float = 0.0
    # the highest RSS sampled in the window: steady (VmHWM holds the warm-up's)
    window_rss_kb: dict[str, int] = field(default_factory=dict)

    @property
    def cpu_us_per_sample(self) -> float:
        return sum(self.cpu_s.values()) / self.stored * 1e6 if self.stored else math.nan

    def role_us_per_sample(self, role: str) -> float:
        """A role's CPU per stored sample; ``cassandra_net``: Cassandra's net of its idle CPU rate."""
        if role == "cassandra_net" and "cassandra_idle_cpu_per_s" in self.extra and self.window_s:
            net = self.cpu_s["cassandra"] - self.extra["cassandra_idle_cpu_per_s"] * self.window_s
            return net / self.stored * 1e6 if self.stored else math.nan
        return self.cpu_s[role] / self.stored * 1e6 if role in self.cpu_s and self.stored else math.nan

    def role_rss_kib_per_series(self, role: str, *, window: bool = False) -> float:
        """A role's peak RSS per served series (``window``: its highest RSS sampled in the window)."""
        kb = self.window_rss_kb if window else self.peak_rss_kb
        return kb[role] / self.series if role in kb and self.series else math.nan

    @property
    def served_of_due(self) -> float:
        return self.served / self.due if self.due else math.nan

    @property
    def stored_of_served(self) -> float:
        return self.stored / self.served if self.served else math.nan

    @property
    def rss_mib(self) -> float:
        return sum(self.peak_rss_kb.values()) / 1024

    @property
    def rss_kib_per_series(self) -> float:
        return sum(self.peak_rss_kb.values()) / self.series if self.series else math.nan

    @property
    def window_rss_kib_per_series(self) -> float:
        return sum(self.window_rss_kb.values()) / self.series if self.series else math.nan

    @property
    def bytes_per_sample(self) -> float:
        return self.disk_bytes / self.stored_total if self.stored_total else math.nan

    @property
    def raw_bytes_per_sample(self) -> float:
        """Raw samples' bytes on disk (Ringmon: its raw tables after the seal; a peer: its data dir)."""
        raw = self.extra.get("raw_disk_bytes", float(self.disk_bytes))
        return raw / self.stored_total if self.stored_total else math.nan

    @property
    def query_median_ms(self) -> float:
        return statistics.median(self.query_ms) if self.query_ms else math.nan

    @property
    def seal_us_per_sample(self) -> float:
        cpu = self.extra.get("seal_cpu_s")
        return cpu / self.stored_total * 1e6 if cpu is not None and self.stored_total else math.nan


# (label, figure, format); the ratio column divides Ringmon's figure by Prometheus's
ROWS: list[tuple[str, Callable[[Figures], float], str]] = [
    ("CPU per stored sample, us", lambda f: f.cpu_us_per_sample, "{:.2f}"),
    ("  of which scraper (cluster)", lambda f: f.role_us_per_sample("scraper"), "{:.2f}"),
    ("  of which Cassandra (cluster)", lambda f: f.role_us_per_sample("cassandra"), "{:.2f}"),
    ("    Cassandra net of its idle CPU (cluster)", lambda f: f.role_us_per_sample("cassandra_net"), "{:.2f}"),
    ("samples served of those due (scrapes kept up)", lambda f: f.served_of_due, "{:.3f}"),
    ("samples stored of those served", lambda f: f.stored_of_served, "{:.3f}"),
    ("peak RSS, MiB", lambda f: f.rss_mib, "{:.0f}"),
    ("peak RSS per series, KiB", lambda f: f.rss_kib_per_series, "{:.2f}"),
    ("  scraper peak RSS per series, KiB (cluster)", lambda f: f.role_rss_kib_per_series("scraper"), "{:.2f}"),
    ("steady RSS per series (highest in the window), KiB", lambda f: f.window_rss_kib_per_series, "{:.2f}"),
    ("  scraper steady RSS per series, KiB (cluster)", lambda f: f.role_rss_kib_per_series("scraper", window=True),
     "{:.2f}"),
    ("bytes on disk per sample", lambda f: f.bytes_per_sample, "{:.1f}"),
    ("raw bytes on disk per sample after sealing", lambda f: f.raw_bytes_per_sample, "{:.2f}"),
    ("range query median, ms", lambda f: f.query_median_ms, "{:.0f}"),
    ("rollup seal CPU per sample, us", lambda f: f.seal_us_per_sample, "{:.2f}"),
]


def fmt(template: str, value: float) -> str:
    return "-" if value is None or math.isnan(value) else template.format(value)


def ratio(a: float, b: float) -> float:
    """a / b, NaN when either is missing or b is 0."""
    if a is None or b is None or math.isnan(a) or math.isnan(b) or b == 0:
        return math.nan
    return a / b


def table(figs: Sequence[Figures], base: str = "Prometheus") -> str:
    """A Markdown table: a row per figure, a column per system, and each Ringmon column over ``base``'s."""
    by = {f.system: f for f in figs}
    ours = [f.system for f in figs if f.system.startswith("Ringmon")] if base in by else []
    head = ["figure", *(f.system for f in figs), *(f"{o} / {base}" for o in ours)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for label, get, template in ROWS:
        cells = [fmt(template, get(f)) for f in figs]
        if all(c == "-" for c in cells):
            continue
        ratios = [fmt("{:.2f}", ratio(get(by[o]), get(by[base]))) for o in ours]
        lines.append("| " + " | ".join([label, *cells, *ratios]) + " |")
    return "\n".join(lines)


def range_query(api: str, start: float, end: float, step: float) -> tuple[float, int]:
    """Wall ms of one query_range call and the series it returned."""
    qs = urllib.parse.urlencode({"query": QUERY, "start": f"{start:.3f}", "end": f"{end:.3f}", "step": f"{step:g}"})
    t0 = time.perf_counter()
    body = http_get(f"{api}/api/v1/query_range?{qs}", timeout=300)
    ms = (time.perf_counter() - t0) * 1000
    doc = json.loads(body)
    if doc.get("status") != "success":
        raise RuntimeError(f"query_range failed: {body[:300]!r}")
    return ms, len(doc["data"]["result"])


def window_rss_kb(pids: dict[str, int], until: float) -> dict[str, int]:
    """Sleep until ``until`` (``time.time()``), sampling each process's RSS every
    ``RSS_EVERY_S``; the highest of each: its steady peak, the warm-up left out."""
    high = {r: 0 for r in pids}
    while True:
        for r, p in pids.items():
            high[r] = max(high[r], proc_status_kb("VmRSS", str(p)))
        left = until - time.time()
        if left <= 0:
            return high
        time.sleep(min(RSS_EVERY_S, left))


def served_samples(control: int) -> float:
    return float(json.loads(http_get(f"http://127.0.0.1:{control}/stats"))["samples"])


def measure(system: System, tmp: Path, ports: list[int], control: int, args: argparse.Namespace) -> Figures:
    print(f"-- {system.name}: starting in {tmp}", flush=True)
    if isinstance(system, RingmonCluster):
        system.idle_s = args.cluster_idle
    try:
        system.start(tmp, ports, args.interval)
        wait_until(lambda: system.samples_stored() > 0, 60 + 3 * args.interval, f"{system.name}: first samples")
        first_samples = time.time()
        time.sleep(args.cluster_warmup if isinstance(system, RingmonCluster) else args.warmup)
        pids = system.pids()
        cpu0 = {r: proc_cpu_s(p) for r, p in pids.items()}
        th0 = thread_cpu_s(pids["cassandra"]) if "cassandra" in pids else {}
        stored0, served0, t0 = system.samples_stored(), served_samples(control), time.time()
        print(f"   warm; measuring {args.window:g}s", flush=True)
        rss_window = window_rss_kb(pids, t0 + args.window)
        cpu1 = {r: proc_cpu_s(p) for r, p in pids.items()}
        stored1, served1, t1 = system.samples_stored(), served_samples(control), time.time()
        threads = thread_delta(th0, thread_cpu_s(pids["cassandra"])) if "cassandra" in pids else {}
        rss = {r: proc_status_kb("VmHWM", str(p)) for r, p in pids.items()}
        if hasattr(system, "before_query"):
            system.before_query()
        range_query(system.api, t0, t1, args.interval)  # unmeasured: caches, page-ins
        # ... and what a server loads once it has answered a big query (ringmon: the compiled
        # query kernels, ~0.5 s of CPU in a background thread, query/kernels.py): the measured
        # runs are those of a server that has answered queries before, as a dashboard's has.
        time.sleep(WARM_AFTER_FIRST_QUERY_S)
        runs = [range_query(system.api, t0, t1, args.interval) for _ in range(QUERY_RUNS)]
        if isinstance(system, RingmonStandalone) and args.standalone_run > 0:
            # scrape on, so that its seal holds about as many samples per series as the cluster's
            # (a block's fixed bytes over 33 samples are not those over 109)
            more = first_samples + args.standalone_run - time.time()
            if more > 0:
                print(f"   scraping {more:.0f}s more before the seal (--standalone-run)", flush=True)
                time.sleep(more)
        stored_total = system.samples_stored()
    finally:
        extra = system.finish()
    fig = Figures(system=system.name, series=len(ports) * args.series,
                  cpu_s={r: cpu1[r] - cpu0[r] for r in pids}, stored=stored1 - stored0, served=served1 - served0,
                  due=len(ports) * args.series * (t1 - t0) / args.interval,
                  stored_total=stored_total, peak_rss_kb=rss, window_rss_kb=rss_window, disk_bytes=du_bytes(system.data_dir()),
                  query_ms=[ms for ms, _ in runs], query_series=runs[-1][1], extra=extra, window_s=t1 - t0)
    print(f"   CPU {sum(fig.cpu_s.values()):.1f}s for {fig.stored:,.0f} samples stored of {fig.served:,.0f} served "
          f"({fig.cpu_us_per_sample:.2f} us/sample); peak RSS {fig.rss_mib:.0f} MiB; "
          f"{fig.disk_bytes / 2**20:.1f} MiB on disk for {fig.stored_total:,.0f} samples; "
          f"query {fig.query_median_ms:.0f} ms ({fig.query_series} series)"
          + (f"; seal {extra['seal_cpu_s']:.1f}s CPU (the job {extra['seal_cpu_s'] - extra.get('seal_cassandra_cpu_s', 0):.1f}"
             f", Cassandra {extra.get('seal_cassandra_cpu_s', 0):.1f} of which its JIT compilers "
             f"{extra.get('seal_cassandra_jit_cpu_s', 0):.1f}), {extra['samples_sealed']:,.0f} samples sealed, "
             f"{extra['samples_sealed'] / max(extra.get('series_sealed', 0), 1):.0f} per series, "
             f"{extra['block_bytes'] / max(extra['samples_sealed'], 1):.2f} bytes/sample in blocks, "
             f"{fig.raw_bytes_per_sample:.2f} raw bytes/sample on disk"
             if "seal_cpu_s" in extra else ""), flush=True)
    if "raw_disk_bytes_flushed" in extra and fig.stored_total:
        print(f"   raw bytes/sample: {extra['raw_disk_bytes_flushed'] / fig.stored_total:.2f} after the seal, the drop "
              f"of {extra.get('raw_partitions_dropped', 0):,.0f} sealed raw partitions "
              f"({extra.get('drop_cpu_s', 0.0):.2f}s CPU) and a flush; {fig.raw_bytes_per_sample:.2f} after a "
              "compaction of the raw tables", flush=True)
    tables = {k.split(":", 1)[1]: v for k, v in extra.items() if k.startswith("raw_disk_bytes:")}
    if tables and fig.stored_total:
        print("   raw bytes/sample by table" + (" and index" if "raw_blocks_data_bytes" in extra else "") + ": " + ", ".join(
            f"{t} {v / fig.stored_total:.3f}" for t, v in sorted(tables.items(), key=lambda kv: -kv[1])), flush=True)
    if "one_series_read_ms_times_read" in extra:
        print(f"   one series' sealed blocks read: {extra['one_series_read_ms_times_read']:.2f} ms wall with their "
              f"shared timestamps read from the store, {extra['one_series_read_ms_times_kept']:.2f} ms with them kept "
              f"(median of {ONE_SERIES_READS})", flush=True)
    if "raw_blocks_compression_ratio" in extra:
        print(f"   raw_blocks: SSTable compression ratio {extra['raw_blocks_compression_ratio']:.3f} (the table "
              "compressor's, over rows holding the blocks)", flush=True)
    if "raw_blocks_data_bytes" in extra and fig.stored_total:
        print(f"   SQLite: the blocks' own bytes {extra['raw_blocks_data_bytes'] / fig.stored_total:.3f} B/sample "
              f"(in raw_blocks' pages); freelist {extra['sqlite_freelist_bytes'] / 2**20:.1f} MiB (not counted: "
              "the pages the drop freed, reused by the next writes)", flush=True)
    if isinstance(system, RingmonCluster) and not math.isnan(system.idle_cpu_s):
        fig.extra["cassandra_idle_cpu_per_s"] = idle = system.idle_cpu_s / system.idle_s
        print(cassandra_split(fig, idle, t1 - t0, threads, system.idle_threads, system.idle_s), flush=True)
    return fig


def cassandra_split(fig: Figures, idle_per_s: float, window_s: float, threads: dict[str, float],
                    idle_threads: dict[str, float], idle_s: float, top: int = 10) -> str:
    """The Cassandra node's CPU per sample, gross and net of its idle rate, and its thread groups' CPU
    per second in the window beside their idle rate: the node's fixed CPU against its work per write."""
    lines = [f"   Cassandra: {fig.role_us_per_sample('cassandra'):.2f} us/sample gross; idle {idle_per_s:.3f} CPU-s/s "
             f"(over {idle_s:g}s, schema made, no targets) -> {fig.role_us_per_sample('cassandra_net'):.2f} "
             f"us/sample net of idle",
             "   Cassandra CPU by thread group, CPU-ms per second: window | idle"]
    for name in sorted(threads, key=lambda k: -threads[k])[:top]:
        lines.append(f"     {name:<32} {threads[name] / window_s * 1e3:8.1f} | "
                     f"{idle_threads.get(name, 0.0) / idle_s * 1e3:8.1f}")
    return "\n".join(lines)


def load_text() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def run(args: argparse.Namespace) -> int:
    names = [n.strip() for n in args.systems.split(",") if n.strip()]
    unknown = [n for n in names if n not in SYSTEMS]
    if unknown:
        print(f"peers: unknown system(s) {unknown}; choose from {sorted(SYSTEMS)}", file=sys.stderr)
        return 2
    server = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "targets", "--count",
                               str(args.targets), "--series", str(args.series)], cwd=ROOT, stdout=subprocess.PIPE)
    figs: list[Figures] = []
    loads = [load_text()]
    try:
        assert server.stdout is not None
        line = server.stdout.readline()
        if not line:
            raise RuntimeError("the synthetic target server did not start")
        info = json.loads(line)
        ports, control = info["ports"], info["control"]
        print(f"peers: {args.targets} targets x {args.series} series = {args.targets * args.series:,} series every "
              f"{args.interval:g}s, warm-up {args.warmup:g}s, window {args.window:g}s, {os.cpu_count()} cores, "
              f"load {loads[0]}", flush=True)
        for name in names:
            with tempfile.TemporaryDirectory(prefix=f"ringmon-peers-{name}-") as tmp:
                try:
                    figs.append(measure(SYSTEMS[name](), Path(tmp), ports, control, args))
                except (RuntimeError, OSError, subprocess.SubprocessError) as exc:  # the others' figures still count
                    print(f"   {name}: no figures: {exc!r}", flush=True)
            loads.append(load_text())
    finally:
        stop_process(server)
    print()
    print(f"peers: {args.targets * args.series:,} series, {args.interval:g}s interval, window {args.window:g}s; "
          f"load average (1/5/15 min) before and after each system: {' | '.join(loads)}")
    print(table(figs))
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd")
    t = sub.add_parser("targets", help="(internal) serve the synthetic targets")
    t.add_argument("--count", type=int, required=True)
    t.add_argument("--series", type=int, required=True)
    s = sub.add_parser("seal", help="(internal) seal a Ringmon store's open window")
    s.add_argument("--config", required=True)
    p.add_argument("--targets", type=int, default=200)
    p.add_argument("--series", type=int, default=500, help="series per target")
    p.add_argument("--interval", type=float, default=5.0, help="scrape interval, seconds")
    p.add_argument("--warmup", type=float, default=40.0, help="seconds before the window")
    p.add_argument("--window", type=float, default=120.0, help="measured seconds")
    p.add_argument("--cluster-warmup", type=float, default=240.0,
                   help="seconds before the cluster's window: a scraper's first minutes write every new series' "
                        "index rows (bench/load.py: 4 min at 10,000 samples/s)")
    p.add_argument("--standalone-run", type=float, default=None,
                   help="seconds from Ringmon standalone's first samples to its seal: it scrapes on after its "
                        "window and queries (not measured) so that its sealed blocks hold as many samples per "
                        "series as the cluster's (default --cluster-warmup + --window; 0: seal after the queries)")
    p.add_argument("--cluster-idle", type=float, default=60.0,
                   help="seconds the Cassandra node's idle CPU is measured (up, schema made, no targets; 0: not)")
    p.add_argument("--systems", default="prometheus,victoriametrics,ringmon,ringmon-cluster",
                   help="comma-separated, run in this order: " + ", ".join(SYSTEMS))
    args = p.parse_args(argv)
    if args.cmd is None and args.standalone_run is None:
        args.standalone_run = args.cluster_warmup + args.window
    if args.cmd == "targets":
        asyncio.run(serve_targets(args.count, args.series))
        return 0
    if args.cmd == "seal":
        from cli.malloc_tuning import tune_malloc

        tune_malloc()  # as ``ringmon rollup`` runs (cli/main.py: every command but the scraper)
        print(json.dumps(asyncio.run(seal_child(args.config))))
        return 0
    try:
        return run(args)
    except RuntimeError as exc:
        print(f"peers: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
