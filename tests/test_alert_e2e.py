"""End to end: ``ringmon alerter`` processes on SQLite storage, real receivers on 127.0.0.1.

aiosmtpd for email, HTTP recorders checking the webhook, PagerDuty and Twilio-style payloads,
and Debian's prometheus-alertmanager receiving forwarded alerts (checked through its API).
"""

from __future__ import annotations

import asyncio
import json
import os
import pathlib
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor

import pytest
from aiosmtpd.controller import Controller

from alerting.api_auth import bearer
from alerting.ownership import RingOwnership
from alerting.testing import AlertmanagerProcess, RecordingReceiver, free_port
from storage.model import SampleBatch, Series, make_labels
from storage.sqlite import SQLiteStorage

ROOT = pathlib.Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow


class Mailbox:
    def __init__(self) -> None:
        self.messages: list[bytes] = []

    async def handle_DATA(self, server, session, envelope):  # noqa: N802 - aiosmtpd API
        self.messages.append(envelope.original_content or envelope.content)
        return "250 OK"


RULES = """groups:
  - name: e2e
    interval: 300ms
    rules:
      - alert: HighLoad
        expr: e2e_load > 5
        labels: {severity: page}
        annotations:
          summary: "load {{ $value }} on {{ $labels.instance }}"
"""


def _alerting_yaml(tmp: pathlib.Path, port: int, hook: str, pd: str, phone: str, smtp_port: int, am: str,
                   group_wait: float = 0.2, extra: dict | None = None, rules: str = "rules.yml") -> pathlib.Path:
    cfg = {
        "alerter": {"listen": f"127.0.0.1:{port}", "state_db": str(tmp / "state.db"),
                    "rule_files": [str(tmp / rules)], "evaluation_interval": "300ms", "resend_delay": "1s",
                    "watch_interval": "300ms", **(extra or {})},
        "global": {"retry_initial": 0.1, "retry_max": 0.5},
        "route": {"receiver": "all", "group_by": ["alertname", "instance"], "group_wait": group_wait,
                  "group_interval": 1.0, "repeat_interval": "1h"},
        "receivers": [{
            "name": "all",
            "webhook_configs": [{"url": hook}],
            "pagerduty_configs": [{"routing_key": "rk", "url": pd}] if pd else [],
            "phone_configs": [{"base_url": phone, "account_sid": "AC1", "auth_token": "t", "from": "+1",
                               "to": ["+2"]}] if phone else [],
            "email_configs": [{"to": "oncall@example.org", "from": "ringmon@example.org",
                               "smarthost": f"127.0.0.1:{smtp_port}", "starttls": "never"}] if smtp_port else [],
            "alertmanager_configs": [{"url": am}] if am else [],
        }],
    }
    path = tmp / "alerting.yaml"
    path.write_text(json.dumps(cfg))
    return path


class Alerter:
    """One ``ringmon alerter`` subprocess."""

    def __init__(self, tmp: pathlib.Path, config: pathlib.Path, port: int, name: str = "a") -> None:
        self.tmp, self.config, self.port, self.name = tmp, config, port, name
        self.proc: subprocess.Popen | None = None

    def start(self) -> Alerter:
        log = open(self.tmp / f"alerter-{self.name}.log", "ab")
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "cli.main", "alerter", "--sqlite", str(self.tmp / "storage.db"),
             "--alerting", str(self.config), "--id", f"alerter-{self.name}"],
            cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"alerter exited: {self.log()[-3000:]}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/-/ready", timeout=1):
                    return self
            except OSError:
                time.sleep(0.1)
        raise AssertionError("alerter not ready within 90 s")

    def log(self) -> str:
        return (self.tmp / f"alerter-{self.name}.log").read_text(errors="replace")

    def get(self, path: str) -> dict:
        state_db = pathlib.Path(json.loads(self.config.read_text())["alerter"]["state_db"])
        token = (state_db.parent / "alerter-api-token").read_text().strip()  # made by the alerter at start
        req = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", headers=bearer(token))
        with urllib.request.urlopen(req, timeout=5) as r:
            return json.loads(r.read())

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()


async def _write(storage: SQLiteStorage, value: float, instance: str = "h1:9100", metric: str = "e2e_load") -> None:
    b = SampleBatch(f"e2e/{instance}")
    b.add(Series.of(make_labels(metric, instance=instance, job="e2e")), int(time.time() * 1000), value)
    await storage.write(b)


def _firing_in_state_db(path: pathlib.Path) -> bool:
    try:
        con = sqlite3.connect(path, timeout=5)
        try:
            rows = con.execute("SELECT body FROM alert_state").fetchall()
        finally:
            con.close()
    except sqlite3.Error:
        return False
    return any(json.loads(r[0])["state"] == "firing" for r in rows)


async def _until(pred, timeout: float, step: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        await asyncio.sleep(step)
    return pred()


@pytest.fixture
async def receivers(tmp_path: pathlib.Path):
    hook = await RecordingReceiver().start()
    box = Mailbox()
    smtp = Controller(box, hostname="127.0.0.1", port=free_port())
    smtp.start()
    am = AlertmanagerProcess(str(tmp_path)).start()
    try:
        yield hook, box, smtp, am
    finally:
        smtp.stop()
        am.stop()
        await hook.stop()


async def _am_alerts(url: str) -> list[dict]:
    def get() -> list[dict]:
        with urllib.request.urlopen(url + "/api/v2/alerts?active=true&silenced=true&inhibited=true&unprocessed=true",
                                    timeout=5) as r:
            return [a for a in json.loads(r.read()) if a["labels"].get("alertname") == "HighLoad"]

    return await asyncio.get_running_loop().run_in_executor(None, get)


async def test_rule_fires_notifies_every_channel_once_then_resolves_once(tmp_path: pathlib.Path, receivers) -> None:
    hook, box, smtp, am = receivers
    (tmp_path / "rules.yml").write_text(RULES)
    port = free_port()
    cfg = _alerting_yaml(tmp_path, port, hook.url + "/hook", hook.url + "/pd", hook.url + "/tw", smtp.port, am.url)
    storage = await SQLiteStorage.open(tmp_path / "storage.db")
    alerter = Alerter(tmp_path, cfg, port).start()
    try:
        await _write(storage, 10)
        got = await hook.wait_for(1, timeout=60, path_prefix="/hook")
        assert len(got) == 1, alerter.log()
        assert got[0].body["status"] == "firing"
        a = got[0].body["alerts"][0]
        assert a["labels"] == {"alertname": "HighLoad", "instance": "h1:9100", "job": "e2e", "severity": "page"}
        assert a["annotations"] == {"summary": "load 10 on h1:9100"}
        assert len(await hook.wait_for(1, timeout=60, path_prefix="/pd")) == 1
        assert len(await hook.wait_for(2, timeout=60, path_prefix="/tw")) == 2  # a call and an SMS
        assert await _until(lambda: len(box.messages) == 1, 60)
        am_alerts = await _am_alerts(am.url)
        assert len(am_alerts) == 1 and am_alerts[0]["status"]["state"] == "active"
        await asyncio.sleep(2.5)  # several evaluations and group intervals: nothing is sent again
        counts = [len([r for r in hook.requests if r.path.startswith(p)]) for p in ("/hook", "/pd", "/tw")]
        assert counts == [1, 1, 2] and len(box.messages) == 1

        await _write(storage, 1)  # the condition clears
        got = await hook.wait_for(2, timeout=60, path_prefix="/hook")
        assert len(got) == 2 and got[1].body["status"] == "resolved"
        pd = await hook.wait_for(2, timeout=60, path_prefix="/pd")
        assert pd[1].body["event_action"] == "resolve" and pd[1].body["dedup_key"] == pd[0].body["dedup_key"]
        assert await _until(lambda: len(box.messages) == 2, 60)
        assert b"RESOLVED" in box.messages[1]
        for _ in range(50):
            if not await _am_alerts(am.url):
                break
            await asyncio.sleep(0.2)
        assert await _am_alerts(am.url) == []
        await asyncio.sleep(2.5)
        counts = [len([r for r in hook.requests if r.path.startswith(p)]) for p in ("/hook", "/pd", "/tw")]
        assert counts == [2, 2, 2] and len(box.messages) == 2  # phone: send_resolved is off
        metrics = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
        assert 'ringmon_notifications_total{integration="webhook"} 2.0' in metrics
    finally:
        alerter.stop()
        await storage.close()


async def test_killed_between_firing_and_delivery_delivers_once_after_restart(tmp_path: pathlib.Path) -> None:
    hook = await RecordingReceiver().start()
    (tmp_path / "rules.yml").write_text(RULES)
    port = free_port()
    cfg = _alerting_yaml(tmp_path, port, hook.url + "/hook", "", "", 0, "", group_wait=5.0)
    storage = await SQLiteStorage.open(tmp_path / "storage.db")
    alerter = Alerter(tmp_path, cfg, port).start()
    try:
        await _write(storage, 10)
        assert await _until(lambda: _firing_in_state_db(tmp_path / "state.db"), 60), alerter.log()
        alerter.kill()  # firing and saved, but group_wait (5 s) has not passed: nothing delivered
        assert hook.requests == []
        alerter = Alerter(tmp_path, cfg, port, name="b").start()
        got = await hook.wait_for(1, timeout=60, path_prefix="/hook")
        assert len(got) == 1 and got[0].body["status"] == "firing"
        await asyncio.sleep(3)
        assert len(hook.requests) == 1
        # and once delivered, another restart does not re-send
        alerter.kill()
        alerter = Alerter(tmp_path, cfg, port, name="c").start()
        await asyncio.sleep(3)
        assert len(hook.requests) == 1
    finally:
        alerter.stop()
        await storage.close()
        await hook.stop()


async def _receiver_failing_then_recovering(tmp_path: pathlib.Path, window_s: float) -> None:
    """A receiver answers 500 for ``window_s`` from its first attempt, then 200: the alert is
    delivered once after it recovers (the alerter retried more than twice), and not again."""
    first: list[float] = []

    def status(i: int, path: str) -> int:
        if not first:
            first.append(time.monotonic())
        return 500 if time.monotonic() - first[0] < window_s else 200

    hook = await RecordingReceiver(status_for=status).start()
    (tmp_path / "rules.yml").write_text(RULES)
    port = free_port()
    cfg = _alerting_yaml(tmp_path, port, hook.url + "/hook", "", "", 0, "")
    storage = await SQLiteStorage.open(tmp_path / "storage.db")
    alerter = Alerter(tmp_path, cfg, port).start()
    try:
        await _write(storage, 10)
        got = await hook.wait_for(1, timeout=window_s + 30, path_prefix="/hook")
        assert len(got) == 1 and hook.attempts > 2, alerter.log()
        await asyncio.sleep(3)
        assert len(hook.requests) == 1
    finally:
        alerter.stop()
        await storage.close()
        await hook.stop()


ACCEPTANCE_WINDOW_S = 30.0
ACCEPTANCE = "test_receiver_failing_then_recovering_gets_it_once[500-for-30s-acceptance]"


@pytest.fixture(scope="module", autouse=True)
def acceptance_outage(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Future[None] | None]:
    """The acceptance case (a receiver failing for 30 s) is mostly waiting: when the run holds
    it, it runs in a thread of its own (its own event loop, receiver and alerter process) from
    the module's first test on, under the module's other tests, and its test takes its outcome
    (an assertion or error inside it is raised there)."""
    if not any(item.name == ACCEPTANCE and item.module is request.module for item in request.session.items):
        yield None
        return
    tmp = tmp_path_factory.mktemp("receiver-outage-30s")
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="receiver-outage-30s")
    future = pool.submit(lambda: asyncio.run(_receiver_failing_then_recovering(tmp, ACCEPTANCE_WINDOW_S)))
    try:
        yield future
    finally:
        pool.shutdown(wait=True)  # (a run stopped before its test: the scenario ends by itself, bounded)


@pytest.mark.zookeeper
async def test_two_alerters_split_groups_and_notify_once(tmp_path: pathlib.Path, zookeeper, zk_root: str) -> None:
    hook = await RecordingReceiver().start()
    rules_path = tmp_path / "rules.yml"
    # A group's ring key is "<rule file>;<group>" and the file lives in a fresh temp dir, so six
    # fixed names land all on one alerter in 1 run of 32. Pick six names the two alerters'
    # ring splits 3/3, so every run checks a real split.
    ring = RingOwnership("alerter-a")
    ring.set_members(["alerter-a", "alerter-b"])
    names: list[str] = []
    per_owner = {"alerter-a": 0, "alerter-b": 0}
    for n in range(200):
        owner = ring.owner_of(f"{rules_path};g{n}")
        if owner is not None and per_owner[owner] < 3:
            names.append(f"g{n}")
            per_owner[owner] += 1
    names = names[:6]
    assert per_owner == {"alerter-a": 3, "alerter-b": 3}
    groups = "\n".join(
        f"""  - name: {name}
    interval: 300ms
    rules:
      - alert: Load{i}
        expr: e2e_load{{instance="h{i}:9100"}} > 5
""" for i, name in enumerate(names))
    rules_path.write_text("groups:\n" + groups)
    ports = [free_port(), free_port()]
    alerters = []
    storage = await SQLiteStorage.open(tmp_path / "storage.db")
    try:
        for name, port in zip("ab", ports, strict=True):
            d = tmp_path / name
            d.mkdir()
            cfg = _alerting_yaml(d, port, hook.url + "/hook", "", "", 0, "", extra={
                "ownership": "zookeeper", "zookeeper_hosts": zookeeper.hosts,
                "zookeeper_path": f"{zk_root}/alerters", "zookeeper_session_timeout": "4s",
                "state_db": str(tmp_path / "state.db"), "rule_files": [str(rules_path)]})
            alerters.append(Alerter(d, cfg, port, name=name))
            (d / "storage.db").symlink_to(tmp_path / "storage.db")
        for a in alerters:
            a.start()

        def owned() -> list[set[str]]:
            return [{g["name"] for g in a.get("/api/v1/rules")["data"]["groups"] if g["owned"]} for a in alerters]

        assert await _until(lambda: all(owned()) and set.union(*owned()) == set(names)
                            and not set.intersection(*owned()), 60), owned()

        def evals() -> list[dict[str, float]]:
            out = []
            for a in alerters:
                text = urllib.request.urlopen(f"http://127.0.0.1:{a.port}/metrics", timeout=5).read().decode()
                d = {}
                for line in text.splitlines():
                    if line.startswith("ringmon_rule_evaluations_total{"):
                        g = line.split('group="')[1].split('"')[0]
                        d[g] = float(line.rsplit(" ", 1)[1])
                out.append(d)
            return out

        # every group evaluated a few times (300 ms interval) by its owner, and not at all by the other
        before = evals()

        def moved() -> list[list[float]]:
            after = evals()
            return [[after[k].get(g, 0) - before[k].get(g, 0) for k in range(2)] for g in names]

        assert await _until(lambda: all(max(m) >= 3 for m in moved()), 60), moved()
        for g, m in zip(names, moved(), strict=True):
            assert sum(1 for x in m if x > 0) == 1, (g, m)
        for i in range(6):
            await _write(storage, 10, instance=f"h{i}:9100")
        got = await hook.wait_for(6, timeout=60, path_prefix="/hook")
        assert sorted(r.body["alerts"][0]["labels"]["alertname"] for r in got) == [f"Load{i}" for i in range(6)]
        await asyncio.sleep(2.5)
        assert len(hook.requests) == 6  # each notification once

        # Failover: alerter a dies; when its session expires b takes its groups over, resumes
        # their firing alerts from the shared state and does not notify again.
        lost = owned()[0]
        alerters[0].kill()
        b = alerters[1]

        def b_owns_all() -> bool:
            return {g["name"] for g in b.get("/api/v1/rules")["data"]["groups"] if g["owned"]} == set(names)

        assert await _until(b_owns_all, 60)
        await asyncio.sleep(2.5)
        assert len(hook.requests) == 6, [r.body["alerts"][0]["labels"] for r in hook.requests[6:]]
        for i in range(6):
            await _write(storage, 1, instance=f"h{i}:9100")
        got = await hook.wait_for(12, timeout=60, path_prefix="/hook")
        resolved = sorted(r.body["alerts"][0]["labels"]["alertname"] for r in got[6:])
        assert resolved == [f"Load{i}" for i in range(6)] and all(r.body["status"] == "resolved" for r in got[6:])
        assert lost  # a owned some groups before it died
        await asyncio.sleep(2)
        assert len(hook.requests) == 12
    finally:
        for a in alerters:
            a.stop()
        await storage.close()
        await hook.stop()


@pytest.mark.parametrize("window_s", [4.0, ACCEPTANCE_WINDOW_S], ids=["500-for-4s", "500-for-30s-acceptance"])
async def test_receiver_failing_then_recovering_gets_it_once(tmp_path: pathlib.Path, window_s: float,
                                                              acceptance_outage: Future[None] | None) -> None:
    # The acceptance case is 500 for 30 s (started under the module's other tests, awaited
    # here, last in the module); the 4 s case runs the same backoff path quickly.
    if window_s == ACCEPTANCE_WINDOW_S:
        assert acceptance_outage is not None
        await asyncio.wait_for(asyncio.wrap_future(acceptance_outage), ACCEPTANCE_WINDOW_S + 300)
    else:
        await _receiver_failing_then_recovering(tmp_path, window_s)
