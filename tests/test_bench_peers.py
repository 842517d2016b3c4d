"""Smoke test of bench/peers.py's logic: the synthetic targets, /proc CPU, metric sums, the table.

No system is started and no time is asserted; the target server runs as the bench runs it.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from bench.peers import (
    Figures,
    TargetBody,
    cassandra_split,
    du_bytes,
    metric_sum,
    node_series,
    ratio,
    stop_process,
    table,
    thread_delta,
    window_rss_kb,
)
from bench.procfs import proc_cpu_s, proc_status_kb
from scraper.exposition import parse

ROOT = Path(__file__).resolve().parent.parent


def _values(body: bytes) -> dict[str, float]:
    return {s.series_text: s.value for s in parse(body)}


def test_node_series_are_distinct_node_exporter_shaped_and_counters_only_grow() -> None:
    layout = node_series(500)
    assert len(layout) == 500
    body = TargetBody(3, layout)
    first, second = _values(body.render()), _values(body.render())
    assert len(first) == 500  # every series distinct, the body parses as Prometheus text
    cpu = [k for k in first if k.startswith("node_cpu_seconds_total{")]
    assert len(cpu) == 32 and any('mode="idle"' in k for k in cpu)
    counters = [k for k in first if k.split("{")[0].endswith("_total")]
    assert counters and all(second[k] >= first[k] for k in counters)
    assert any(second[k] > first[k] for k in counters)
    gauges = [k for k in first if k.startswith("node_memory_MemFree_bytes")]
    assert gauges and first[gauges[0]] != second[gauges[0]]
    # HELP/TYPE once per family, even when families repeat to fill the count
    text = body.render().decode()
    types = [ln.split()[2] for ln in text.splitlines() if ln.startswith("# TYPE")]
    assert len(types) == len(set(types))


def test_proc_figures_of_a_running_process() -> None:
    before = proc_cpu_s(os.getpid())
    spent = time.process_time()
    x = 0
    for i in range(50_000_000):  # bounded: until /proc shows the CPU this process spent
        x += i
        if i % 1_000_000 == 0 and proc_cpu_s(os.getpid()) > before:
            break
    assert proc_cpu_s(os.getpid()) > before
    assert abs((proc_cpu_s(os.getpid()) - before) - (time.process_time() - spent)) < 1.0  # same clock, coarse ticks
    assert proc_status_kb("VmHWM", str(os.getpid())) >= proc_status_kb("VmRSS", str(os.getpid())) > 0


def test_window_rss_is_the_highest_sampled_until_the_end() -> None:
    got = window_rss_kb({"me": os.getpid()}, time.time())  # (the end now: one sample)
    assert 0 < got["me"] <= proc_status_kb("VmHWM")


def test_metric_sum_adds_label_sets_and_says_absent() -> None:
    text = ('# TYPE a counter\na{x="1"} 2\na{x="2 }"} 3.5\nab 100\n'
            'prometheus_tsdb_head_samples_appended_total 12\n')
    assert metric_sum(text, "a") == 5.5
    assert metric_sum(text, "prometheus_tsdb_head_samples_appended_total") == 12
    assert math.isnan(metric_sum(text, "missing"))


def test_du_bytes_counts_files_below(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "f").write_bytes(b"x" * 10000)
    assert du_bytes(tmp_path) >= 10000


def _fig(system: str, cpu: float, stored: float, disk: int, query: list[float], **extra: float) -> Figures:
    return Figures(system=system, series=1000, cpu_s={"p": cpu}, stored=stored, served=stored, due=stored,
                   stored_total=stored,
                   peak_rss_kb={"p": 2048}, disk_bytes=disk, query_ms=query, query_series=8, extra=dict(extra),
                   window_rss_kb={"p": 1024})


def test_table_prints_each_figure_and_the_ratio_to_prometheus() -> None:
    prom = _fig("Prometheus", cpu=2.0, stored=1e6, disk=4_000_000, query=[10, 30, 20])
    ring = _fig("Ringmon standalone", cpu=8.0, stored=1e6, disk=2_000_000, query=[40, 50, 60], seal_cpu_s=1.0)
    assert ring.cpu_us_per_sample == 8.0 and prom.query_median_ms == 20
    out = table([prom, ring]).splitlines()
    assert out[0] == "| figure | Prometheus | Ringmon standalone | Ringmon standalone / Prometheus |"
    rows = {ln.split(" | ")[0].lstrip("| "): ln for ln in out[2:]}
    assert rows["CPU per stored sample, us"] == "| CPU per stored sample, us | 2.00 | 8.00 | 4.00 |"
    assert rows["bytes on disk per sample"].endswith("| 4.0 | 2.0 | 0.50 |")
    assert rows["range query median, ms"].endswith("| 20 | 50 | 2.50 |")
    assert rows["peak RSS per series, KiB"].endswith("| 2.05 | 2.05 | 1.00 |")
    assert rows["steady RSS per series (highest in the window), KiB"].endswith("| 1.02 | 1.02 | 1.00 |")
    # Prometheus has no seal: its cell and the ratio are "-"
    assert rows["rollup seal CPU per sample, us"].endswith("| - | 1.00 | - |")
    assert math.isnan(ratio(1.0, 0.0)) and math.isnan(ratio(math.nan, 1.0))


def test_cassandra_figure_net_of_its_idle_rate_and_by_thread_group() -> None:
    fig = Figures(system="Ringmon cluster", series=1000, cpu_s={"scraper": 1.0, "cassandra": 3.0}, stored=1e6,
                  served=1e6, due=1e6, stored_total=1e6, peak_rss_kb={}, disk_bytes=0, query_ms=[], query_series=0,
                  extra={"cassandra_idle_cpu_per_s": 0.01}, window_s=100.0)
    assert fig.role_us_per_sample("cassandra") == 3.0
    assert math.isclose(fig.role_us_per_sample("cassandra_net"), 2.0)  # 3 s less 100 s at 10 ms/s
    assert thread_delta({"GC Thread": 1.0}, {"GC Thread": 1.5, "ReadStage": 0.2}) == {"GC Thread": 0.5, "ReadStage": 0.2}
    out = cassandra_split(fig, 0.01, 100.0, {"Native-Transport-Requests": 2.0, "GC Thread": 1.0}, {"GC Thread": 0.5}, 50.0)
    assert "3.00 us/sample gross" in out and "2.00 us/sample net of idle" in out
    lines = out.splitlines()
    assert "Native-Transport-Requests" in lines[2] and lines[2].rstrip().endswith("20.0 |      0.0")
    assert lines[3].rstrip().endswith("10.0 |     10.0")


def test_target_server_serves_bodies_and_counts_samples() -> None:
    proc = subprocess.Popen([sys.executable, str(ROOT / "bench" / "peers.py"), "targets", "--count", "2",
                             "--series", "50"], cwd=ROOT, stdout=subprocess.PIPE)
    try:
        assert proc.stdout is not None
        info = json.loads(proc.stdout.readline())
        assert len(info["ports"]) == 2
        for port in info["ports"]:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30) as r:
                assert len(parse(r.read())) == 50
        with urllib.request.urlopen(f"http://127.0.0.1:{info['control']}/stats", timeout=30) as r:
            assert json.loads(r.read()) == {"requests": 2, "samples": 100}
    finally:
        stop_process(proc)
    assert proc.returncode == 0
