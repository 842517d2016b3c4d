"""Notifier pipeline: routing, grouping, inhibition, silences, dedup, retries and the persistent log."""

from __future__ import annotations

import pathlib
import time

import pytest

from alerting.notifier.config import NotifierConfigError, config_from_dict
from alerting.notifier.dispatcher import Notifier
from alerting.notifier.inhibit import Inhibitor, InhibitRule
from alerting.notifier.matchers import MatcherSyntaxError, parse_matchers
from alerting.notifier.model import Alert
from alerting.notifier.nflog import NflogEntry, SQLiteNotificationLog, needs_update
from alerting.notifier.silences import SilenceError, Silences, SQLiteSilenceStore, new_silence
from alerting.sqlitedb import AlertingDB
from alerting.testing import RecordingReceiver


def _cfg(url: str, **route_extra: object) -> dict:
    route = {"receiver": "hook", "group_by": ["alertname"], "group_wait": 0.05, "group_interval": 0.3,
             "repeat_interval": "1h", **route_extra}
    return {
        "global": {"retry_initial": 0.05, "retry_max": 0.2},
        "route": route,
        "receivers": [{"name": "hook", "webhook_configs": [{"url": url + "/hook"}]}],
    }


def _alert(name: str = "HighLoad", resolved: bool = False, **labels: str) -> Alert:
    now = time.time()
    return Alert({"alertname": name, **labels}, {"summary": f"{name} happened"}, starts_at=now - 1,
                 ends_at=now - 0.001 if resolved else None)


# ---------------------------------------------------------------------- pure parts


def test_routing_tree_matchers_continue_and_inheritance() -> None:
    cfg = config_from_dict({
        "route": {"receiver": "default", "group_by": ["alertname"], "group_wait": "10s", "routes": [
            {"matchers": ['severity="page"'], "receiver": "pager", "continue": True, "group_wait": "1s"},
            {"matchers": ['team=~"db|storage"'], "receiver": "db", "group_by": ["alertname", "cluster"],
             "routes": [{"match": {"env": "prod"}, "receiver": "db-prod"}]},
            {"matchers": ['severity="page"'], "receiver": "never"},
        ]},
        "receivers": [{"name": n} for n in ("default", "pager", "db", "db-prod", "never")],
    })
    r = cfg.route
    assert [x.receiver for x in r.match({"alertname": "A"})] == ["default"]
    hits = r.match({"alertname": "A", "severity": "page", "team": "db", "env": "prod"})
    assert [x.receiver for x in hits] == ["pager", "db-prod"]
    assert hits[0].group_wait_s == 1.0 and hits[1].group_wait_s == 10.0
    assert hits[1].group_by == ["alertname", "cluster"]
    assert hits[1].group_key({"alertname": "A", "cluster": "c1", "x": "y"}) == 'root/1/0:{alertname="A",cluster="c1"}'


@pytest.mark.parametrize(
    "data, fragment",
    [
        ({"route": {"receiver": "x"}, "receivers": [{"name": "y"}]}, "route.receiver: no receiver named 'x'"),
        ({"route": {"receiver": "y", "group_wait": "soon"}, "receivers": [{"name": "y"}]}, "route.group_wait"),
        ({"route": {"receiver": "y", "routes": [{"matchers": ["a=="]}]}, "receivers": [{"name": "y"}]}, "route.routes[0].matchers[0]"),
        ({"route": {"receiver": "y"}, "receivers": [{"name": "y", "webhook_configs": [{"url": "ftp://x"}]}]}, "webhook_configs[0].url"),
        ({"route": {"receiver": "y"}, "receivers": [{"name": "y", "pagerduty_configs": [{}]}]}, "routing_key: required"),
        ({"route": {"receiver": "y", "bogus": 1}, "receivers": [{"name": "y"}]}, "route.bogus: unknown key"),
        ({"route": {"receiver": "y"}, "receivers": [{"name": "y", "email_configs": [{"to": "a@b", "from": "c@d", "smarthost": "h:25", "subject": "{{ .X"}]}]}, "subject: invalid template"),
    ],
)
def test_config_errors_name_the_key(data: dict, fragment: str) -> None:
    with pytest.raises(NotifierConfigError) as info:
        config_from_dict(data, "alerting.yaml")
    assert str(info.value).startswith("alerting.yaml: ") and fragment in str(info.value)


def test_matcher_text() -> None:
    ms = parse_matchers('{alertname="Disk Full", instance=~"web-.*",job!="x"}')
    assert [(m.name, m.op.value, m.value) for m in ms] == [
        ("alertname", "=", "Disk Full"), ("instance", "=~", "web-.*"), ("job", "!=", "x")]
    with pytest.raises(MatcherSyntaxError):
        parse_matchers("severity")


def test_inhibition_needs_equal_labels_and_firing_source() -> None:
    inh = Inhibitor([InhibitRule(parse_matchers('severity="critical"'), parse_matchers('severity="warning"'), ["cluster"])])
    src = _alert("NodeDown", severity="critical", cluster="a")
    tgt = _alert("HighLatency", severity="warning", cluster="a")
    other = _alert("HighLatency", severity="warning", cluster="b")
    now = time.time()
    assert inh.inhibited(tgt, [src, tgt, other], now)
    assert not inh.inhibited(other, [src, tgt, other], now)
    gone = _alert("NodeDown", resolved=True, severity="critical", cluster="a")
    assert not inh.inhibited(tgt, [gone], time.time())


def test_dedup_rule() -> None:
    now = 1000.0
    e = NflogEntry("k", {"a"}, set(), now - 10)
    assert needs_update(None, {"a"}, set(), True, 3600, now)
    assert not needs_update(None, set(), {"a"}, True, 3600, now)
    assert not needs_update(e, {"a"}, set(), True, 3600, now)
    assert needs_update(e, {"a", "b"}, set(), True, 3600, now)
    assert needs_update(e, set(), {"a"}, False, 3600, now)  # all resolved clears the log entry
    assert needs_update(e, {"a"}, set(), True, 5, now)  # repeat interval elapsed


async def test_silences_are_validated_stored_and_expire(tmp_path: pathlib.Path) -> None:
    db = AlertingDB(tmp_path / "a.db")
    sil = Silences(SQLiteSilenceStore(db), refresh_s=0)
    with pytest.raises(SilenceError, match="comment"):
        new_silence('alertname="X"', "ann", " ", 60)
    with pytest.raises(SilenceError, match="empty string"):
        new_silence('x=~".*"', "ann", "maintenance", 60)
    s = await sil.create('alertname="Disk", instance=~"db-.*"', "ann", "disk swap", 3600)
    await sil.refresh()
    assert sil.muted_by({"alertname": "Disk", "instance": "db-1"}) == [s.id]
    assert sil.muted_by({"alertname": "Disk", "instance": "web-1"}) == []
    await db.close()
    db2 = AlertingDB(tmp_path / "a.db")  # a restart keeps silences
    sil2 = Silences(SQLiteSilenceStore(db2), refresh_s=0)
    (back,) = await sil2.list()
    assert back.id == s.id and back.created_by == "ann" and back.comment == "disk swap"
    await sil2.expire(s.id[:8])
    await sil2.refresh()
    assert sil2.muted_by({"alertname": "Disk", "instance": "db-1"}) == []
    with pytest.raises(SilenceError, match="already expired"):
        await sil2.expire(s.id)
    await db2.close()


# ------------------------------------------------------------------ with a receiver


@pytest.fixture
async def receiver():
    r = await RecordingReceiver().start()
    yield r
    await r.stop()


async def _notifier(cfg: dict, db: AlertingDB, silences: Silences | None = None) -> Notifier:
    n = Notifier(config_from_dict(cfg), SQLiteNotificationLog(db), silences)
    await n.start()
    return n


async def test_fire_dedup_resolve_and_restart(receiver: RecordingReceiver, tmp_path: pathlib.Path) -> None:
    db = AlertingDB(tmp_path / "a.db")
    n = await _notifier(_cfg(receiver.url), db)
    a = _alert(instance="web-1")
    await n.receive([a])
    await n.receive([_alert(instance="web-1")])  # the evaluator re-sends each interval
    got = await receiver.wait_for(1)
    assert len(got) == 1
    body = got[0].body
    assert body["version"] == "4" and body["status"] == "firing" and body["receiver"] == "hook"
    assert body["groupLabels"] == {"alertname": "HighLoad"}
    assert body["alerts"][0]["labels"] == {"alertname": "HighLoad", "instance": "web-1"}
    assert body["alerts"][0]["endsAt"] == "0001-01-01T00:00:00Z"
    await n.stop()

    n2 = await _notifier(_cfg(receiver.url), db)  # restart: same log, alert still firing -> no re-send
    await n2.receive([_alert(instance="web-1")])
    assert len(await receiver.wait_for(2, timeout=1.0)) == 1
    await n2.receive([_alert(instance="web-1", resolved=True)])
    got = await receiver.wait_for(2)
    assert len(got) == 2 and got[1].body["status"] == "resolved"
    assert got[1].body["alerts"][0]["endsAt"] != "0001-01-01T00:00:00Z"
    await n2.receive([_alert(instance="web-1", resolved=True)])
    assert len(await receiver.wait_for(3, timeout=1.0)) == 2
    await n2.stop()
    await db.close()


async def test_grouping_puts_alerts_of_a_group_in_one_notification(receiver: RecordingReceiver, tmp_path: pathlib.Path) -> None:
    db = AlertingDB(tmp_path / "a.db")
    cfg = _cfg(receiver.url, group_wait=0.4)
    n = await _notifier(cfg, db)
    await n.receive([_alert(instance="a"), _alert(instance="b"), _alert("Other", instance="a")])
    got = await receiver.wait_for(2)
    assert sorted(len(r.body["alerts"]) for r in got) == [1, 2]
    await n.stop()
    await db.close()


def _delivery_counts() -> tuple[float, float]:
    """(failed attempts, notifications given up) of the webhook integration, in this process."""
    from prometheus_client import REGISTRY

    failed = sum(REGISTRY.get_sample_value("ringmon_notifications_failed_total",
                                           {"integration": "webhook", "retryable": r}) or 0.0
                 for r in ("true", "false"))
    undelivered = REGISTRY.get_sample_value("ringmon_notifications_undelivered_total", {"integration": "webhook"})
    return failed, undelivered or 0.0


async def test_retries_with_backoff_until_receiver_recovers(tmp_path: pathlib.Path) -> None:
    # 500 for the first three attempts (a short stand-in for the 30 s outage), then 200.
    r = await RecordingReceiver(status_for=lambda i, p: 500 if i < 3 else 200).start()
    db = AlertingDB(tmp_path / "a.db")
    cfg = _cfg(r.url)
    cfg["route"]["group_interval"] = 0.5
    cfg["global"]["retry_timeout"] = 60  # the retries of one flush outlast the three failures
    failed0, undelivered0 = _delivery_counts()
    n = await _notifier(cfg, db)
    await n.receive([_alert(instance="x")])
    got = await r.wait_for(1, timeout=60)
    assert len(got) == 1 and r.attempts == 4
    # Three failed attempts, and the notification was delivered: nothing given up.
    assert _delivery_counts() == (failed0 + 3, undelivered0)
    for _ in range(3):
        await n.receive([_alert(instance="x")])
    assert len(await r.wait_for(2, timeout=1.5)) == 1  # delivered once
    await n.stop()
    await r.stop()
    await db.close()


async def test_permanent_error_gives_the_notification_up(tmp_path: pathlib.Path) -> None:
    # 400 is permanent: no retry; the next flush sends it again (nothing recorded) and 200 takes it.
    r = await RecordingReceiver(status_for=lambda i, p: 400 if i == 0 else 200).start()
    db = AlertingDB(tmp_path / "a.db")
    failed0, undelivered0 = _delivery_counts()
    n = await _notifier(_cfg(r.url), db)
    await n.receive([_alert(instance="x")])
    assert len(await r.wait_for(1, timeout=60)) == 1
    assert r.attempts == 2
    assert _delivery_counts() == (failed0 + 1, undelivered0 + 1)
    await n.stop()
    await r.stop()
    await db.close()


async def test_silenced_alert_is_not_sent_until_silence_expires(receiver: RecordingReceiver, tmp_path: pathlib.Path) -> None:
    db = AlertingDB(tmp_path / "a.db")
    sil = Silences(SQLiteSilenceStore(db), refresh_s=0)
    s = await sil.create('instance="db-1"', "ops", "planned", 3600)
    n = await _notifier(_cfg(receiver.url), db, sil)
    await n.receive([_alert(instance="db-1")])
    assert await receiver.wait_for(1, timeout=1.0) == []
    assert [st.state for st in await n.status()] == ["suppressed"]
    await sil.expire(s.id)
    await n.receive([_alert(instance="db-1")])
    assert len(await receiver.wait_for(1, timeout=60)) == 1
    await n.stop()
    await db.close()


async def test_repeat_interval_resends(receiver: RecordingReceiver, tmp_path: pathlib.Path) -> None:
    db = AlertingDB(tmp_path / "a.db")
    n = await _notifier(_cfg(receiver.url, repeat_interval=0.5), db)
    await n.receive([_alert(instance="a")])
    got = await receiver.wait_for(2, timeout=60)
    assert len(got) == 2 and got[1].body["status"] == "firing"
    await n.stop()
    await db.close()


async def test_continue_routes_to_two_receivers_once_each(tmp_path: pathlib.Path) -> None:
    r = await RecordingReceiver().start()
    db = AlertingDB(tmp_path / "a.db")
    cfg = {
        "global": {"retry_initial": 0.05},
        "route": {"receiver": "a", "group_wait": 0.05, "group_interval": 0.3, "routes": [
            {"matchers": ['severity="page"'], "receiver": "a", "continue": True},
            {"matchers": ['severity="page"'], "receiver": "b"}]},
        "receivers": [{"name": "a", "webhook_configs": [{"url": r.url + "/a"}]},
                      {"name": "b", "webhook_configs": [{"url": r.url + "/b"}]}],
    }
    n = await _notifier(cfg, db)
    await n.receive([_alert(severity="page")])
    got = await r.wait_for(2)
    assert sorted(x.path for x in got) == ["/a", "/b"]
    assert len(await r.wait_for(3, timeout=1.0)) == 2
    await n.stop()
    await r.stop()
    await db.close()


async def test_inhibited_alert_is_not_sent_while_its_source_fires(receiver: RecordingReceiver, tmp_path: pathlib.Path) -> None:
    db = AlertingDB(tmp_path / "a.db")
    cfg = _cfg(receiver.url)
    cfg["inhibit_rules"] = [{"source_matchers": ['alertname="PoolDown"'], "target_matchers": ['severity="warning"'],
                             "equal": ["pool"]}]
    n = await _notifier(cfg, db)
    await n.receive([_alert("PoolDown", pool="web"), _alert("HighCPU", severity="warning", pool="web"),
                     _alert("HighCPU", severity="warning", pool="db")])
    got = await receiver.wait_for(2, timeout=60)
    sent = sorted((r.body["groupLabels"]["alertname"], a["labels"].get("pool")) for r in got for a in r.body["alerts"])
    assert sent == [("HighCPU", "db"), ("PoolDown", "web")]
    await n.receive([_alert("PoolDown", resolved=True, pool="web")])  # source resolved: target goes out
    got = await receiver.wait_for(4, timeout=60)
    later = [(r.body["status"], sorted(a["labels"].get("pool") for a in r.body["alerts"] if a["status"] == "firing"))
             for r in got[2:]]
    assert ("firing", ["db", "web"]) in later and ("resolved", []) in later
    await n.stop()
    await db.close()
