"""Defaults that stay home: shipped configs name only this machine, and their receivers are
Ringmon's own (the notification log and the web server's webhook sink, shown on /notifications).
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import time
import urllib.parse
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp.test_utils import TestClient, TestServer

from alerting.channels.alertmanager import AlertmanagerIntegration
from alerting.channels.base import LocalReceivers
from alerting.channels.email import EmailIntegration
from alerting.channels.notification_log import NotificationLogIntegration
from alerting.channels.pagerduty import PagerDutyIntegration
from alerting.channels.phone import PhoneIntegration
from alerting.channels.webhook import WebhookIntegration
from alerting.notifier.config import config_from_dict
from alerting.notifier.dispatcher import Notifier
from alerting.notifier.journal import NotificationJournal
from alerting.notifier.model import Alert
from alerting.notifier.nflog import MemoryNotificationLog
from alerting.service import load_alerting_file
from query.engine import Engine
from query.memory import MemoryStorage
from web.app import create_app

ROOT = Path(__file__).resolve().parent.parent
URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
HOST_PORT = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9][A-Za-z0-9.-]*):(\d{1,5})$")
HOST_KEYS = {"host", "hosts", "smarthost", "zookeeper_hosts", "listen", "alerters"}


def shipped_configs() -> list[Path]:
    files = [p for p in (ROOT / "configs").rglob("*") if p.suffix in (".yaml", ".yml") and ".example." not in p.name]
    return sorted(files + list((ROOT / "web" / "dashboards").glob("*.yaml")))


def is_loopback(host: str) -> bool:
    host = host.strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def addresses(value: Any, key: str = "") -> list[tuple[str, str]]:
    """Every (host, where) a config value names: URLs, HOST:PORT values, items of host keys."""
    out: list[tuple[str, str]] = []
    if isinstance(value, dict):
        for k, v in value.items():
            out += addresses(v, str(k))
    elif isinstance(value, list):
        for v in value:
            out += addresses(v, key)
    elif isinstance(value, str):
        for part in (p.strip() for p in value.split(",")):
            if URL.match(part):
                out.append((urllib.parse.urlsplit(part).hostname or "", part))
            elif m := HOST_PORT.match(part):
                out.append((m.group(1), part))
            elif key in HOST_KEYS and part:
                out.append((part, part))
    return out


def test_the_address_finder_sees_what_leaves_the_machine() -> None:
    doc = yaml.safe_load(
        "a: {url: 'https://api.twilio.com/x', smarthost: 'mail.example.org:25', hosts: [db1, '127.0.0.1']}\n"
        "b: ['10.0.0.1:9100', 'http://[::1]:8080/x', '127.0.0.1:2181,zk2:2181']\nc: 'rate(x[5m]) > 0.9'\n"
    )
    found = {h for h, _ in addresses(doc)}
    assert found == {"api.twilio.com", "mail.example.org", "db1", "127.0.0.1", "10.0.0.1", "::1", "zk2"}
    assert {h for h in found if not is_loopback(h)} == {"api.twilio.com", "mail.example.org", "db1", "10.0.0.1", "zk2"}


@pytest.mark.parametrize("path", shipped_configs(), ids=lambda p: str(p.relative_to(ROOT)))
def test_shipped_config_names_only_loopback_addresses(path: Path) -> None:
    doc = yaml.safe_load(path.read_text())
    off = [where for host, where in addresses(doc) if not is_loopback(host)]
    assert not off, f"{path.relative_to(ROOT)} names addresses off this machine: {off}"


def destinations(path: Path) -> list[str]:
    """Where each channel of an alerting file delivers, defaults included (a path: Ringmon's own web server)."""
    _, cfg = load_alerting_file(str(path))
    out = []
    for r in cfg.receivers.values():
        for i in r.integrations:
            if isinstance(i, WebhookIntegration | AlertmanagerIntegration):
                out.append(i.url)
            elif isinstance(i, PagerDutyIntegration):
                out.append(i.url)
            elif isinstance(i, PhoneIntegration):
                out.append(i.base_url)
            elif isinstance(i, EmailIntegration):
                out.append(f"smtp://{i.host}:{i.port}")
            else:
                assert isinstance(i, NotificationLogIntegration), i
                out.append("notification log")
    return out


@pytest.mark.parametrize("path", [ROOT / "configs" / "alerting.yaml", ROOT / "configs" / "cluster" / "alerting.yaml",
                                  ROOT / "configs" / "alerting.example.yaml"], ids=lambda p: str(p.relative_to(ROOT)))
def test_alerting_files_deliver_only_on_this_machine(path: Path) -> None:
    for d in destinations(path):
        assert d == "notification log" or d.startswith("/") or is_loopback(urllib.parse.urlsplit(d).hostname or ""), d


def test_example_file_uncommented_is_valid_and_has_every_real_channel(tmp_path: Path) -> None:
    text = (ROOT / "configs" / "alerting.example.yaml").read_text()
    uncommented = re.sub(r"(?m)^(\s*)# ", r"\1", text)
    copy = tmp_path / "alerting.yaml"
    copy.write_text(uncommented)
    _, cfg = load_alerting_file(str(copy))
    kinds = {i.kind for r in cfg.receivers.values() for i in r.integrations}
    assert kinds == {"email", "phone", "pagerduty", "alertmanager", "webhook", "notification_log"}
    # the real channels are off the machine: that is why they stay commented out in configs/
    assert any(not is_loopback(urllib.parse.urlsplit(d).hostname or "") for d in destinations(copy) if "://" in d)


# -- the receivers ---------------------------------------------------------------------------------


async def _web(journal: NotificationJournal) -> TestClient:
    async def none() -> list:
        return []

    app = create_app(engine=Engine(MemoryStorage()), pools_provider=none, targets_provider=none, notifications=journal)
    client = TestClient(TestServer(app, host="127.0.0.1"))
    await client.start_server()
    return client


async def test_shipped_receivers_deliver_through_the_sink_and_the_log(tmp_path: Path) -> None:
    """configs/alerting.yaml's receivers as shipped (timers shortened): a page alert goes over HTTP
    to the web server's sink, a warning into the notification log; the page lists both."""
    journal = NotificationJournal(tmp_path / "notifications.db")
    client = await _web(journal)
    doc = yaml.safe_load((ROOT / "configs" / "alerting.yaml").read_text())
    doc.pop("alerter")
    doc["route"]["group_wait"] = "0s"
    for r in doc["route"].get("routes", []):
        r["group_wait"] = "0s"
    cfg = config_from_dict(doc, "configs/alerting.yaml")
    local = LocalReceivers(journal=journal, web_url=str(client.make_url("/")))
    notifier = Notifier(cfg, MemoryNotificationLog(), local=local)
    await notifier.start()
    try:
        await notifier.receive([
            Alert({"alertname": "HighCPU", "job": "web", "severity": "warning"}, {"summary": "CPU at 95%"}),
            Alert({"alertname": "PoolDown", "job": "db", "severity": "page"}, {"summary": "no db is up"}),
        ])
        deadline = time.monotonic() + 30
        while len(entries := await journal.recent()) < 2 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert sorted((e.receiver, e.via, e.status) for e in entries) == [
            ("notification-log", "notification log", "firing"),
            ("oncall-sink", "webhook sink oncall", "firing"),
        ]
        page = await (await client.get("/notifications")).text()
        assert "webhook sink oncall" in page and "PoolDown" in page and "no db is up" in page
        assert "HighCPU" in page and 'href="/notifications"' in page
    finally:
        await notifier.stop()
        await client.close()
        await journal.close()


async def test_sink_refuses_bad_input_with_a_clear_400(tmp_path: Path) -> None:
    journal = NotificationJournal(tmp_path / "notifications.db")
    client = await _web(journal)
    try:
        for path, body in (("/-/webhook-sink/x", "not json"), ("/-/webhook-sink/x", '{"status": "firing"}'),
                           ("/-/webhook-sink/x", '{"status": "odd", "alerts": []}'),
                           ("/-/webhook-sink/x", '{"status": "firing", "alerts": [{"labels": {"a": 1}}]}'),
                           ("/-/webhook-sink/x", '{"status": "firing", "alerts": [{"labels": [1]}]}'),
                           # once stored, these made /notifications answer 500 from then on
                           ("/-/webhook-sink/x", '{"status": "firing", "alerts": [{"annotations": 5}]}'),
                           ("/-/webhook-sink/x", '{"status": "firing", "alerts": [{"annotations": {"summary": [1]}}]}'),
                           ("/-/webhook-sink/a%20b", '{"status": "firing", "alerts": []}')):
            r = await client.post(path, data=body)
            assert r.status == 400, (path, body)
            doc = await r.json()
            assert doc["status"] == "error" and doc["errorType"] == "bad_data" and doc["error"], doc
        assert await journal.recent() == []
        assert "No notifications yet" in await (await client.get("/notifications")).text()
        # odd but harmless fields are kept and the page still renders them
        odd = '{"status": "resolved", "alerts": [{}, {"annotations": null, "status": 9, "startsAt": 5}], "receiver": 7}'
        assert (await client.post("/-/webhook-sink/x", data=odd)).status == 200
        page = await client.get("/notifications")
        assert page.status == 200 and "webhook sink x" in await page.text()
    finally:
        await client.close()
        await journal.close()


async def test_journal_keeps_the_newest_entries(tmp_path: Path) -> None:
    from alerting.notifier.journal import JournalEntry

    journal = NotificationJournal(tmp_path / "n.db", max_entries=3)
    try:
        for i in range(5):
            await journal.record(JournalEntry(f"r{i}", "notification log", "firing"))
        assert [e.receiver for e in await journal.recent()] == ["r4", "r3", "r2"]
    finally:
        await journal.close()


async def test_notification_log_channel_without_a_journal_says_where_to_send() -> None:
    from alerting.channels.base import DeliveryError
    from alerting.notifier.model import Notification

    integ = NotificationLogIntegration(0)
    with pytest.raises(DeliveryError, match="webhook-sink") as err:
        await integ.notify(Notification("r", "g", {}, [Alert({"alertname": "A"})]), None)  # type: ignore[arg-type]
    assert not err.value.retryable


def test_sink_takes_notifications_from_this_machine_only() -> None:
    from web.notifications import is_loopback_peer

    assert all(map(is_loopback_peer, ("127.0.0.1", "127.1.2.3", "::1", "::ffff:127.0.0.1")))
    assert not any(map(is_loopback_peer, ("10.0.0.1", "::ffff:10.0.0.1", "2001:db8::1", "", None, "unix")))
