"""Rule evaluation through the real engine over MemoryStorage: states, ALERTS series, restarts, ownership."""

from __future__ import annotations

import pathlib

import pytest

from alerting.evaluator import EvalOptions, GroupRunner, RuleManager
from alerting.notifier.model import Alert
from alerting.ownership import RingOwnership
from alerting.rulefile import parse_rule_text
from alerting.rulestore import RuleStore
from alerting.sqlitedb import AlertingDB
from alerting.state import FIRING, INACTIVE, PENDING, SQLiteAlertStateStore
from query.engine import Engine
from query.memory import MemoryStorage
from storage.base import DirectWriter
from storage.model import SampleBatch, Series, make_labels

RULES = """groups:
  - name: node
    interval: 1m
    rules:
      - record: instance:up:sum
        expr: sum by (instance) (up)
        labels: {source: rule}
      - alert: InstanceDown
        expr: up == 0
        for: 2m
        keep_firing_for: 1m
        labels:
          severity: page
          summary_label: "{{ $labels.instance }} down"
        annotations:
          summary: "{{ $labels.instance }} of {{ $labels.job }} is down (value {{ $value }})"
"""


class Sink:
    def __init__(self) -> None:
        self.received: list[Alert] = []

    async def receive(self, alerts: list[Alert]) -> None:
        self.received.extend(alerts)


def _up(storage: MemoryStorage, ts_s: int, value: float, instance: str = "web-1:9100") -> None:
    b = SampleBatch("node/" + instance)
    b.add(Series.of(make_labels("up", instance=instance, job="node")), ts_s * 1000, value)
    storage.write_sync(b)


async def _runner(tmp_path: pathlib.Path, storage: MemoryStorage, sink: Sink) -> tuple[GroupRunner, AlertingDB]:
    group = parse_rule_text(RULES, "node.yml").groups[0]
    db = AlertingDB(tmp_path / "state.db")
    engine = Engine(storage)
    runner = GroupRunner(group, engine.instant_query, DirectWriter(storage), SQLiteAlertStateStore(db), sink,
                         EvalOptions(resend_delay_s=60))
    return runner, db


async def _query(storage: MemoryStorage, expr: str, ts_s: int) -> dict:
    res = await Engine(storage).instant_query(expr, ts_s * 1000)
    return {tuple(sorted(s.labels.items())): float(s.values[-1]) for s in res.series}


async def test_pending_firing_keep_firing_resolved_and_series(tmp_path: pathlib.Path) -> None:
    storage, sink = MemoryStorage(), Sink()
    runner, db = await _runner(tmp_path, storage, sink)
    for t in range(0, 600, 15):
        _up(storage, t, 0 if 60 <= t < 300 else 1)
    states = {}
    for t in range(0, 600, 60):
        await runner.evaluate(t * 1000)
        recs = runner.active_alerts()
        states[t] = recs[0].state if recs else INACTIVE
    # down from 60 s: pending at 60, 120; firing from 180 (for: 2m); condition clears at 300,
    # keep_firing_for 1m keeps it firing at 300, resolved at 360.
    assert [states[t] for t in range(0, 600, 60)] == [
        INACTIVE, PENDING, PENDING, FIRING, FIRING, FIRING, INACTIVE, INACTIVE, INACTIVE, INACTIVE]
    sent = [(a.labels["alertname"], a.resolved(361)) for a in sink.received]
    assert sent[0] == ("InstanceDown", False) and ("InstanceDown", True) in sent
    first = sink.received[0]
    assert first.labels["severity"] == "page" and first.labels["summary_label"] == "web-1:9100 down"
    assert first.annotations["summary"] == "web-1:9100 of node is down (value 0)"
    assert await _query(storage, "ALERTS", 120) == {
        (("__name__", "ALERTS"), ("alertname", "InstanceDown"), ("alertstate", "pending"), ("instance", "web-1:9100"),
         ("job", "node"), ("severity", "page"), ("summary_label", "web-1:9100 down")): 1.0}
    fired = await _query(storage, 'ALERTS{alertstate="firing"}', 240)
    assert len(fired) == 1
    assert await _query(storage, 'ALERTS{alertstate="pending"}', 240) == {}  # stale marker ended pending
    assert list((await _query(storage, "ALERTS_FOR_STATE", 240)).values()) == [60.0]
    assert await _query(storage, "ALERTS", 360) == {}
    rec = await _query(storage, "instance:up:sum", 240)
    assert rec == {(("__name__", "instance:up:sum"), ("instance", "web-1:9100"), ("source", "rule")): 0.0}
    await db.close()


async def test_restart_resumes_pending_timer_and_firing_alerts(tmp_path: pathlib.Path) -> None:
    storage, sink = MemoryStorage(), Sink()
    for t in range(0, 600, 15):
        _up(storage, t, 0)
    runner, db = await _runner(tmp_path, storage, sink)
    await runner.evaluate(0)
    await runner.evaluate(60_000)
    assert runner.active_alerts()[0].state == PENDING
    await db.close()
    # "restart": a new runner on the same state file resumes the timer started at 0 s
    sink2 = Sink()
    runner2, db2 = await _runner(tmp_path, storage, sink2)
    await runner2.evaluate(120_000)
    (rec,) = runner2.active_alerts()
    assert rec.state == FIRING and rec.active_at == 0.0
    assert len(sink2.received) == 1
    await db2.close()
    sink3 = Sink()
    runner3, db3 = await _runner(tmp_path, storage, sink3)
    await runner3.evaluate(150_000)  # firing alert restored and re-sent (the notifier log dedups)
    assert [a.labels["alertname"] for a in sink3.received] == ["InstanceDown"]
    assert runner3.active_alerts()[0].fired_at == 120.0
    await db3.close()


async def test_rule_failure_is_reported_and_others_still_run(tmp_path: pathlib.Path) -> None:
    storage = MemoryStorage()
    text = """groups:
- name: g
  rules:
  - record: bad
    expr: a + on(x) group_left b
  - record: good
    expr: vector(1)
"""
    _up(storage, 0, 1)
    for name in ("a", "b"):
        for i in range(2):
            bt = SampleBatch("t")
            bt.add(Series.of(make_labels(name, x="1", y=str(i))), 0, 1.0)
            storage.write_sync(bt)
    store = RuleStore([])
    db = AlertingDB(tmp_path / "s.db")
    rf = parse_rule_text(text, "g.yml")
    runner = GroupRunner(rf.groups[0], Engine(storage).instant_query, DirectWriter(storage), SQLiteAlertStateStore(db), None, EvalOptions())
    await runner.evaluate(0)
    health = list(runner.health.values())
    assert health[0].health == "err" and health[0].last_error
    assert health[1].health == "ok"
    assert await _query(storage, "good", 0) == {(("__name__", "good"),): 1.0}
    del store
    await db.close()


def test_ring_ownership_gives_each_group_one_owner() -> None:
    a, b = RingOwnership("alerter-a"), RingOwnership("alerter-b")
    for o in (a, b):
        o.set_members(["alerter-a", "alerter-b"])
        o.active = True
    keys = [f"rules/f{i}.yml;group{i}" for i in range(40)]
    owners = [(a.owns(k), b.owns(k)) for k in keys]
    assert all(x != y for x, y in owners)
    assert any(x for x, _ in owners) and any(y for _, y in owners)
    b.set_members(["alerter-b"])
    assert all(b.owns(k) for k in keys)


async def test_manager_runs_groups_on_their_interval_and_reloads(tmp_path: pathlib.Path) -> None:
    storage = MemoryStorage()
    f = tmp_path / "r.yml"
    f.write_text("groups:\n- name: fast\n  interval: 100ms\n  rules:\n  - record: one\n    expr: vector(1)\n")
    db = AlertingDB(tmp_path / "s.db")
    mgr = RuleManager(RuleStore([str(f)]), Engine(storage).instant_query, DirectWriter(storage),
                      SQLiteAlertStateStore(db), options=EvalOptions(default_interval_ms=1000))
    rep = await mgr.start()
    assert rep.ok
    import asyncio
    for _ in range(100):
        if mgr.evaluations.get(f"{f};fast", 0) >= 3:
            break
        await asyncio.sleep(0.05)
    assert mgr.evaluations[f"{f};fast"] >= 3
    f.write_text("groups:\n- name: fast\n  rules:\n  - record: one\n    expr: vector(\n")
    rep = await mgr.reload()
    assert not rep.ok and mgr.runners  # last good kept running
    (g,) = mgr.status()
    assert g["rules"][0]["health"] == "ok" and g["interval"] == 0.1
    await mgr.stop()
    await db.close()


def test_rule_ids_are_stable() -> None:
    from alerting.evaluator import rule_ids

    g = parse_rule_text(RULES, "x.yml").groups[0]
    assert rule_ids(g) == rule_ids(parse_rule_text(RULES, "x.yml").groups[0])


@pytest.mark.zookeeper
def test_zookeeper_ownership_splits_groups_and_moves_them_when_an_alerter_leaves(zookeeper, zk_root: str) -> None:
    import time

    from alerting.ownership import ZooKeeperOwnership

    a = ZooKeeperOwnership(zookeeper.hosts, "alerter-a", root=f"{zk_root}/alerters", session_timeout_s=4)
    b = ZooKeeperOwnership(zookeeper.hosts, "alerter-b", root=f"{zk_root}/alerters", session_timeout_s=4)
    a.start()
    b.start()
    try:
        keys = [f"r.yml;g{i}" for i in range(30)]
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not (len(a.members()) == 2 and len(b.members()) == 2):
            time.sleep(0.05)
        assert a.members() == b.members() == ["alerter-a", "alerter-b"]
        owners = [(a.owns(k), b.owns(k)) for k in keys]
        assert all(x != y for x, y in owners) and any(x for x, _ in owners) and any(y for _, y in owners)
        a.stop()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and b.members() != ["alerter-b"]:
            time.sleep(0.05)
        assert all(b.owns(k) for k in keys) and not any(a.owns(k) for k in keys)
    finally:
        a.stop()
        b.stop()


async def test_annotation_templates_can_query_the_engine(tmp_path: pathlib.Path) -> None:
    storage, sink = MemoryStorage(), Sink()
    _up(storage, 0, 0, "web-1:9100")
    _up(storage, 0, 1, "web-2:9100")
    text = """groups:
- name: q
  rules:
  - alert: SomeDown
    expr: up == 0
    annotations:
      summary: "{{ with query \\"count(up == 1)\\" }}{{ . | first | value }}{{ end }} still up"
      first_up: '{{ range query "up == 1" }}{{ label "instance" . }}{{ end }}'
"""
    group = parse_rule_text(text, "q.yml").groups[0]
    db = AlertingDB(tmp_path / "s.db")
    runner = GroupRunner(group, Engine(storage).instant_query, DirectWriter(storage), SQLiteAlertStateStore(db), sink,
                         EvalOptions())
    await runner.evaluate(0)
    (a,) = sink.received
    assert a.annotations == {"summary": "1 still up", "first_up": "web-2:9100"}
    await db.close()


async def test_group_limit_and_duplicate_labelsets_are_rule_errors(tmp_path: pathlib.Path) -> None:
    storage = MemoryStorage()
    for i in range(3):
        _up(storage, 0, 0, f"h{i}:1")
    text = """groups:
- name: lim
  limit: 2
  rules:
  - alert: Down
    expr: up == 0
  - record: collapsed
    expr: up
    labels: {instance: same}
"""
    group = parse_rule_text(text, "l.yml").groups[0]
    db = AlertingDB(tmp_path / "s.db")
    runner = GroupRunner(group, Engine(storage).instant_query, DirectWriter(storage), SQLiteAlertStateStore(db), None,
                         EvalOptions())
    await runner.evaluate(0)
    down, collapsed = runner.health.values()
    assert down.health == "err" and "exceeded limit of 2 with 3 alerts" in down.last_error
    assert collapsed.health == "err" and "same labelset" in collapsed.last_error
    assert runner.active_alerts() == []
    await db.close()


@pytest.mark.zookeeper
def test_zookeeper_ownership_comes_back_after_a_zookeeper_restart(zookeeper, zk_root: str) -> None:
    import time

    from alerting.ownership import ZooKeeperOwnership

    a = ZooKeeperOwnership(zookeeper.hosts, "alerter-a", root=f"{zk_root}/alerters", session_timeout_s=4)
    a.start()
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not a.owns("g"):
            time.sleep(0.05)
        assert a.owns("g")
        zookeeper.stop()
        try:
            time.sleep(1)
        finally:
            zookeeper.start()
        def registered() -> bool:
            try:
                return a.zk is not None and a.zk.exists(f"{zk_root}/alerters/alerter-a") is not None
            except Exception:  # still reconnecting
                return False

        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not (a.owns("g") and registered()):
            time.sleep(0.1)
        assert a.owns("g") and registered() and a.members() == ["alerter-a"]
    finally:
        a.stop()
