"""Channels against real receivers on 127.0.0.1: HTTP recorders (PagerDuty, Twilio-style, webhook),
aiosmtpd (plain, STARTTLS, auth) and Debian's prometheus-alertmanager."""

from __future__ import annotations

import asyncio
import email
import json
import pathlib
import socket
import subprocess
import time
import urllib.request
from email import policy

import aiohttp
import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from alerting.channels.alertmanager import AlertmanagerIntegration
from alerting.channels.base import DeliveryError
from alerting.channels.email import EmailIntegration
from alerting.channels.pagerduty import PagerDutyIntegration, dedup_key
from alerting.channels.phone import PhoneIntegration
from alerting.channels.webhook import WebhookIntegration
from alerting.notifier.config import config_from_dict
from alerting.notifier.dispatcher import Notifier
from alerting.notifier.model import Alert, Notification
from alerting.notifier.nflog import MemoryNotificationLog
from alerting.testing import RecordingReceiver


def _note(resolved: bool = False, n: int = 1, severity: str = "critical") -> Notification:
    now = time.time()
    alerts = [
        Alert({"alertname": "DiskFull", "instance": f"db-{i}:9100", "severity": severity},
              {"summary": f"disk of db-{i} is full", "description": "less than 1% left"},
              starts_at=now - 60, ends_at=now - 1 if resolved else None, generator_url="http://ringmon/graph")
        for i in range(n)
    ]
    return Notification("ops", 'root:{alertname="DiskFull"}', {"alertname": "DiskFull"}, alerts, "http://ringmon", now=now)


@pytest.fixture
async def rec():
    r = await RecordingReceiver().start()
    yield r
    await r.stop()


async def test_webhook_posts_alertmanager_v4_payload(rec: RecordingReceiver) -> None:
    hook = WebhookIntegration.from_config(0, {"url": rec.url + "/hook", "max_alerts": 2, "headers": {"X-Token": "t"}}, "w")
    async with aiohttp.ClientSession() as s:
        await hook.notify(_note(n=3), s)
    (got,) = rec.requests
    b = got.body
    assert got.headers["X-Token"] == "t"
    assert set(b) == {"version", "groupKey", "truncatedAlerts", "status", "receiver", "groupLabels", "commonLabels",
                      "commonAnnotations", "externalURL", "alerts"}
    assert b["truncatedAlerts"] == 1 and len(b["alerts"]) == 2
    assert b["commonLabels"] == {"alertname": "DiskFull", "severity": "critical"}
    assert b["commonAnnotations"] == {"description": "less than 1% left"}
    a = b["alerts"][0]
    assert set(a) == {"status", "labels", "annotations", "startsAt", "endsAt", "generatorURL", "fingerprint"}
    assert a["startsAt"].endswith("Z") and a["endsAt"] == "0001-01-01T00:00:00Z"


async def test_pagerduty_trigger_resolve_same_dedup_key_and_severity(rec: RecordingReceiver) -> None:
    pd = PagerDutyIntegration.from_config(0, {"routing_key": "R0UT1NG", "url": rec.url + "/v2/enqueue",
                                              "severity_map": {"critical": "critical", "minor": "warning"}}, "pd")
    async with aiohttp.ClientSession() as s:
        await pd.notify(_note(), s)
        await pd.notify(_note(severity="minor"), s)
        await pd.notify(_note(resolved=True), s)
    trig, minor, res = (r.body for r in rec.requests)
    assert trig["event_action"] == "trigger" and res["event_action"] == "resolve"
    assert trig["dedup_key"] == res["dedup_key"] == dedup_key('root:{alertname="DiskFull"}')
    assert trig["routing_key"] == "R0UT1NG"
    p = trig["payload"]
    assert p["severity"] == "critical" and minor["payload"]["severity"] == "warning"
    assert p["summary"].startswith("DiskFull: disk of db-0 is full")
    assert p["source"] == "db-0:9100" and p["custom_details"]["num_firing"] == 1
    assert "payload" not in res


async def test_pagerduty_retries_429_and_5xx_but_not_400(tmp_path: pathlib.Path) -> None:
    statuses = iter([429, 503, 202])
    r = await RecordingReceiver(status_for=lambda i, p: next(statuses) if p == "/retry" else 400).start()
    cfg = config_from_dict({"global": {"retry_initial": 0.05}, "route": {"receiver": "x"}, "receivers": [{"name": "x"}]})
    n = Notifier(cfg, MemoryNotificationLog())
    await n.start()
    ok = PagerDutyIntegration(0, "k", url=r.url + "/retry")
    bad = PagerDutyIntegration(1, "k", url=r.url + "/bad")
    assert await n.send_with_retry(ok, _note(), 10) is True
    assert r.attempts == 3 and len(r.requests) == 1
    assert await n.send_with_retry(bad, _note(), 10) is False
    assert r.attempts == 4  # a 400 is not retried
    await n.stop()
    await r.stop()


async def test_phone_voice_call_and_sms_twilio_style(rec: RecordingReceiver) -> None:
    ph = PhoneIntegration.from_config(0, {"base_url": rec.url, "account_sid": "AC123", "auth_token": "secret",
                                          "from": "+15550001", "to": ["+15550002", "+15550003"]}, "phone")
    async with aiohttp.ClientSession() as s:
        await ph.notify(_note(), s)
    paths = [r.path for r in rec.requests]
    assert paths == ["/2010-04-01/Accounts/AC123/Calls.json", "/2010-04-01/Accounts/AC123/Messages.json"] * 2
    call, sms = rec.requests[0], rec.requests[1]
    assert call.headers["Authorization"].startswith("Basic ")
    import base64
    assert base64.b64decode(call.headers["Authorization"][6:]).decode() == "AC123:secret"
    assert call.body["To"] == "+15550002" and call.body["From"] == "+15550001"
    assert call.body["Twiml"].startswith("<?xml") and "<Say" in call.body["Twiml"]
    assert "DiskFull is firing: disk of db-0 is full." in call.body["Twiml"]
    assert sms.body["Body"] == "[FIRING] DiskFull: disk of db-0 is full (1 alert)"


async def test_http_errors_classified(rec: RecordingReceiver) -> None:
    hook = WebhookIntegration(0, "http://127.0.0.1:1/nothing-listens")
    async with aiohttp.ClientSession() as s:
        with pytest.raises(DeliveryError) as info:
            await hook.notify(_note(), s)
    assert info.value.retryable


# ------------------------------------------------------------------------------ email


class _Mailbox:
    def __init__(self) -> None:
        self.messages: list[tuple[str, list[str], bytes, bool]] = []

    async def handle_DATA(self, server, session, envelope):  # noqa: N802 - aiosmtpd API
        self.messages.append((envelope.mail_from, list(envelope.rcpt_tos), envelope.original_content or envelope.content,
                              session.ssl is not None))
        return "250 OK"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory) -> tuple[str, str]:
    d = tmp_path_factory.mktemp("tls")
    cert, key = d / "cert.pem", d / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
                    "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True, timeout=60)
    return str(cert), str(key)


def _authenticator(server, session, envelope, mechanism, auth_data):
    ok = isinstance(auth_data, LoginPassword) and auth_data.login == b"alerts" and auth_data.password == b"pw"
    return AuthResult(success=ok, handled=False)


async def test_email_plain_text_and_html(tmp_path: pathlib.Path) -> None:
    box = _Mailbox()
    ctl = Controller(box, hostname="127.0.0.1", port=_free_port())
    ctl.start()
    try:
        em = EmailIntegration.from_config(0, {"to": ["oncall@example.org"], "from": "ringmon@example.org",
                                              "smarthost": f"127.0.0.1:{ctl.port}", "starttls": "never"}, "email")
        async with aiohttp.ClientSession() as s:
            await em.notify(_note(n=2), s)
        (mail_from, rcpts, raw, tls) = box.messages[0]
        assert mail_from == "ringmon@example.org" and rcpts == ["oncall@example.org"] and not tls
        msg = email.message_from_bytes(raw, policy=policy.default)
        assert msg["Subject"] == "[FIRING:2] DiskFull"
        text = msg.get_body(("plain",)).get_content()
        html = msg.get_body(("html",)).get_content()
        assert "instance = db-1:9100" in text and "summary: disk of db-0 is full" in text
        assert "<h2>FIRING: DiskFull</h2>" in html and "less than 1% left" in html
    finally:
        ctl.stop()


async def test_email_starttls_and_auth(tls_files: tuple[str, str]) -> None:
    import ssl

    cert, key = tls_files
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    box = _Mailbox()
    ctl = Controller(box, hostname="127.0.0.1", port=_free_port(), tls_context=ctx, require_starttls=True,
                     auth_required=True, authenticator=_authenticator)
    ctl.start()
    try:
        base = {"to": "oncall@example.org", "from": "ringmon@example.org", "smarthost": f"127.0.0.1:{ctl.port}",
                "require_tls": True, "ca_file": cert, "auth_username": "alerts", "auth_password": "pw"}
        em = EmailIntegration.from_config(0, base, "email")
        async with aiohttp.ClientSession() as s:
            await em.notify(_note(resolved=True), s)
            assert box.messages[0][3] is True  # delivered over TLS
            msg = email.message_from_bytes(box.messages[0][2], policy=policy.default)
            assert msg["Subject"] == "[RESOLVED] DiskFull"
    finally:
        ctl.stop()


async def test_email_wrong_password_is_a_permanent_error() -> None:
    box = _Mailbox()
    ctl = Controller(box, hostname="127.0.0.1", port=_free_port(), auth_required=True, auth_require_tls=False,
                     authenticator=_authenticator)
    ctl.start()
    try:
        em = EmailIntegration.from_config(0, {"to": "a@example.org", "from": "b@example.org", "starttls": "never",
                                              "smarthost": f"127.0.0.1:{ctl.port}", "auth_username": "alerts",
                                              "auth_password": "nope"}, "email")
        async with aiohttp.ClientSession() as s:
            with pytest.raises(DeliveryError, match="authentication failed") as info:
                await em.notify(_note(), s)
        assert not info.value.retryable and box.messages == []
    finally:
        ctl.stop()


# ------------------------------------------------------------------------ alertmanager


@pytest.fixture(scope="module")
def alertmanager(tmp_path_factory):
    d = tmp_path_factory.mktemp("alertmanager")
    cfg = d / "am.yml"
    cfg.write_text("route:\n  receiver: 'null'\nreceivers:\n  - name: 'null'\n")
    port = _free_port()
    log = open(d / "am.log", "wb")
    proc = subprocess.Popen(
        ["prometheus-alertmanager", f"--config.file={cfg}", f"--storage.path={d / 'data'}",
         f"--web.listen-address=127.0.0.1:{port}", "--cluster.listen-address="],
        stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url + "/-/ready", timeout=1) as r:
                if r.status == 200:
                    break
        except OSError:
            time.sleep(0.2)
        if proc.poll() is not None:
            pytest.fail(f"alertmanager exited: {(d / 'am.log').read_text()[-2000:]}")
    else:
        proc.kill()
        pytest.fail("alertmanager did not become ready within 90 s")
    yield url
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)
    log.close()


async def test_forward_to_real_alertmanager(alertmanager: str) -> None:
    am = AlertmanagerIntegration.from_config(0, {"url": alertmanager}, "am")
    async with aiohttp.ClientSession() as s:
        await am.notify(_note(n=2), s)
        async with s.get(alertmanager + "/api/v2/alerts") as r:
            alerts = await r.json()
        got = sorted(a["labels"]["instance"] for a in alerts if a["labels"].get("alertname") == "DiskFull")
        assert got == ["db-0:9100", "db-1:9100"]
        assert all(a["status"]["state"] == "active" for a in alerts)
        assert {a["annotations"]["summary"] for a in alerts} == {"disk of db-0 is full", "disk of db-1 is full"}
        await am.notify(_note(resolved=True, n=2), s)
        await asyncio.sleep(0.2)
        async with s.get(alertmanager + "/api/v2/alerts", params={"active": "true", "silenced": "true",
                                                                   "inhibited": "true", "unprocessed": "true"}) as r:
            left = [a for a in await r.json() if a["labels"].get("alertname") == "DiskFull"]
        assert left == []  # resolved alerts are no longer active


def test_alertmanager_payload_shape() -> None:
    body = AlertmanagerIntegration.payload(_note(resolved=True))
    assert set(body[0]) == {"labels", "annotations", "startsAt", "endsAt", "generatorURL"}
    json.dumps(body)
