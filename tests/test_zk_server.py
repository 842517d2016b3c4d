"""The local ZooKeeper runner: start, readiness, stop by PID, restart with the same data."""

from __future__ import annotations

import pathlib
import subprocess
import sys

import pytest
from kazoo.client import KazooClient

from services.zookeeper.zkserver import ZooKeeperServer, four_letter_word, free_port

pytestmark = pytest.mark.zookeeper


def test_session_server_serves_and_survives_a_restart(zookeeper, zk_root):
    zk = KazooClient(hosts=zookeeper.hosts, timeout=5.0)
    zk.start(timeout=10)
    try:
        zk.create(f"{zk_root}/kept", b"v1", makepath=True)
    finally:
        zk.stop()
        zk.close()
    assert four_letter_word("127.0.0.1", zookeeper.port, "ruok") == "imok"
    pid = zookeeper.pid()
    zookeeper.stop()
    try:
        assert zookeeper.pid() is None
        assert four_letter_word("127.0.0.1", zookeeper.port, "ruok", timeout=0.5) == ""
    finally:
        zookeeper.start(wait=True, timeout=60)
    assert zookeeper.pid() not in (None, pid)
    zk = KazooClient(hosts=zookeeper.hosts, timeout=5.0)
    zk.start(timeout=10)
    try:
        assert zk.get(f"{zk_root}/kept")[0] == b"v1"
    finally:
        zk.stop()
        zk.close()


def test_command_line_start_wait_stop(tmp_path):
    port = free_port()
    script = [str(pathlib.Path(__file__).resolve().parent.parent / "services" / "zookeeper" / "zkserver.py")]
    run = lambda *a: subprocess.run(  # noqa: E731
        [sys.executable, *script, *a, "--dir", str(tmp_path)], capture_output=True, text=True, timeout=120
    )
    try:
        r = run("start", "--port", str(port))
        assert r.returncode == 0, r.stderr
        assert f"127.0.0.1:{port}" in r.stdout
        assert run("wait").returncode == 0  # port read back from DIR/zoo.cfg
        assert run("status").returncode == 0
        cfg = (tmp_path / "zoo.cfg").read_text()
        assert "admin.enableServer=false" in cfg and "4lw.commands.whitelist=" in cfg
        r = run("stop")
        assert r.returncode == 0, r.stderr
        assert run("status").returncode == 1
        assert not (tmp_path / "zookeeper.pid").exists()
    finally:
        ZooKeeperServer(tmp_path).stop(kill=True)


def test_stale_pidfile_is_not_trusted(tmp_path):
    server = ZooKeeperServer(tmp_path, port=free_port())
    server.write_config()
    # our own PID is alive but is not a ZooKeeper started with this zoo.cfg: never signal it
    server.pid_path.write_text(f"{__import__('os').getpid()}\n")
    assert server.pid() is None
    server.stop()  # must not kill the test process
    assert not server.pid_path.exists()
