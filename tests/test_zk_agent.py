"""`ringmon agent` as a real process: registers ephemerally, SIGTERM -> STOPPING -> gone."""

from __future__ import annotations

import os
import pathlib
import signal
import subprocess
import sys
import urllib.request

import pytest
from zk_helpers import wait_for

from discovery.registry import ALIVE, STOPPING, Registry
from services.zookeeper.zkserver import free_port

pytestmark = pytest.mark.zookeeper
ROOT = pathlib.Path(__file__).resolve().parent.parent


def start_agent(zookeeper, zk_root, pool: str, port: int, *extra: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "cli.main", "agent", "--pool", pool, "--listen", f"127.0.0.1:{port}",
         "--zookeeper", zookeeper.hosts, "--zookeeper-root", zk_root, "--session-timeout", "4",
         "--stop-grace", "1.5", *extra],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


def finish(proc: subprocess.Popen) -> tuple[int, str]:
    try:
        _, err = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate(timeout=10)
    return proc.returncode, err


def test_agent_registers_serves_and_leaves_on_sigterm(zookeeper, zk_root):
    watcher = Registry(zookeeper.hosts, root=zk_root).start()
    try:
        watcher.create_pool("web")
        port = free_port()
        proc = start_agent(zookeeper, zk_root, "web", port)
        try:
            address = f"127.0.0.1:{port}"
            wait_for(lambda: [(m.address, m.status, m.ephemeral) for m in watcher.view.members.get("web", ())]
                     == [(address, ALIVE, True)], timeout=30, what="agent registered")
            with urllib.request.urlopen(f"http://{address}/metrics", timeout=5) as r:
                body = r.read().decode()
            assert r.status == 200 and 'ringmon_agent_info{pool="web"' in body

            # ZooKeeper goes away and comes back: the agent's registration is there afterwards
            zookeeper.stop()
            try:
                with urllib.request.urlopen(f"http://{address}/metrics", timeout=5) as r:
                    assert r.status == 200  # still serving during the outage
            finally:
                zookeeper.start()
            wait_for(lambda: watcher.view.connected and [m.address for m in watcher.members("web")] == [address],
                     timeout=30, what="registration back after the outage")

            # every view the watcher publishes, not a poll of the latest: STOPPING lasts --stop-grace
            statuses: list[list[str]] = []
            watcher.add_listener(lambda view: statuses.append([m.status for m in view.members.get("web", ())]))
            proc.send_signal(signal.SIGTERM)
            wait_for(lambda: [STOPPING] in statuses, timeout=60, what="STOPPING seen")
            wait_for(lambda: watcher.view.members.get("web") == (), timeout=60, what="member removed")
        finally:
            code, err = finish(proc)
            sys.stderr.write(err)  # (the agent's log, shown by pytest when a wait above fails)
        assert code == 0, err
        assert "agent stopping" in err
    finally:
        watcher.stop()


def test_agent_for_an_unknown_pool_fails_with_one_line(zookeeper, zk_root):
    Registry(zookeeper.hosts, root=zk_root).start(watch=False).stop()
    proc = start_agent(zookeeper, zk_root, "nosuch", free_port())
    code, err = finish(proc)
    assert code == 2
    assert "ringmon agent: unknown pool 'nosuch'" in err and "Traceback" not in err
