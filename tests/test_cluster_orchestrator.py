"""cluster.orchestrator without the services: the configs it writes, PID checks, stop by PID, errors.

The full bring-up (ZooKeeper, Cassandra, 17 processes) takes minutes on 2 shared cores and
runs in ``make drills``; here the parts that decide what gets started and stopped.
"""

from __future__ import annotations

import json
import subprocess
import sys

import yaml

from cli.config import load_config
from cluster import orchestrator as cl


def settings(tmp_path) -> cl.ClusterSettings:
    return cl.ClusterSettings(dir=str(tmp_path / "c"), zookeeper_port=23456, cassandra_port=23457,
                              web_listen="127.0.0.1:23458", scrapers=3)


def test_configs_point_every_process_at_the_cluster_with_its_own_spool(tmp_path):
    s = settings(tmp_path)
    paths = cl.write_configs(s)
    assert set(paths) == {"ringmon", "scraper-1", "scraper-2", "scraper-3", "web", "alerter"}
    spools = set()
    for path in paths.values():
        cfg = load_config(path)  # valid by the project's own loader
        assert cfg.storage.backend == "cassandra" and cfg.storage.cassandra.port == 23457
        assert cfg.discovery.zookeeper is not None and cfg.discovery.zookeeper.hosts == "127.0.0.1:23456"
        assert cfg.web.listen == "127.0.0.1:23458"
        spools.add(cfg.storage.cassandra.spool_dir)
    assert len(spools) == len(paths)  # two writers never share a spool


def test_alerting_config_gets_the_cluster_addresses(tmp_path):
    s = settings(tmp_path)
    (s.path / "conf").mkdir(parents=True)
    doc = yaml.safe_load(cl.write_alerting_config(s).read_text())
    assert doc["alerter"]["zookeeper_hosts"] == "127.0.0.1:23456"
    assert doc["alerter"]["listen"] == s.alerter_listen
    # the alerters deliver to the web process's webhook sink, over 127.0.0.1
    assert all(w["url"] == f"http://{s.web_listen}/-/webhook-sink/cluster" for r in doc["receivers"] for w in r["webhook_configs"])
    assert any(f.endswith("ringmon-self.yaml") for f in doc["alerter"]["rule_files"])
    from alerting.service import load_alerting_file

    load_alerting_file(str(s.path / "conf" / "alerting.yaml"))


def test_stop_signals_only_processes_still_running_their_command(tmp_path):
    s = settings(tmp_path)
    s.path.mkdir(parents=True)
    cmd = [sys.executable, "-c", "import time; time.sleep(60)"]
    state = cl.ClusterState(settings={"dir": s.dir})
    launcher = cl.Launcher(s, state, s.path / "pids.json")
    proc = launcher.spawn("sleeper", cmd)
    # a record whose PID now runs something else must be left alone
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "x"])
    state.processes.append(cl.Proc("impostor", other.pid, cmd, "log"))
    state.save(s.path / "pids.json")
    try:
        assert cl.runs_command(proc.pid, cmd) and not cl.runs_command(other.pid, cmd)
        cl.stop_processes(cl.ClusterState.load(s.path / "pids.json").processes, timeout_s=10)
        assert cl.wait_exit(proc.pid, 10)
        assert other.poll() is None  # untouched
        with_restart = cl.restart_process(s, "sleeper")
        assert with_restart.pid != proc.pid and cl.runs_command(with_restart.pid, cmd)
        saved = json.loads((s.path / "pids.json").read_text())
        assert [p["pid"] for p in saved["processes"] if p["name"] == "sleeper"] == [with_restart.pid]
        cl.signal_process(s, "sleeper", 15)
        assert cl.wait_exit(with_restart.pid, 10)
    finally:
        other.kill()
        other.wait()


def test_up_refuses_busy_ports_and_down_without_state_is_a_no_op(tmp_path, capsys):
    import socket

    s = settings(tmp_path)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        s.web_listen = f"127.0.0.1:{busy.getsockname()[1]}"
        try:
            cl._check_ports(s, with_alerter=False)  # noqa: SLF001
        except cl.ClusterError as exc:
            assert "web 127.0.0.1:" in str(exc) and "--web-listen" in str(exc)
        else:
            raise AssertionError("a busy web port was not refused")
    assert cl.down(s) == 0
    assert "nothing to stop" in capsys.readouterr().out
    assert cl.main(["check", "--dir", s.dir, "--timeout", "1"]) == 2
    assert "no running cluster" in capsys.readouterr().err
