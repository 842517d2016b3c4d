"""Alerting pages over the real alerting package: alerts, rules, silences, logins, CSRF, and the
rule editor (refuses invalid text with its line, diff, atomic save, history, rollback, reload)."""

from __future__ import annotations

import re
import textwrap
import time

import pytest
from aiohttp.test_utils import TestClient, TestServer

from alerting.evaluator import RuleManager
from alerting.notifier.silences import Silences, SQLiteSilenceStore
from alerting.rulestore import RuleStore
from alerting.sqlitedb import AlertingDB
from alerting.state import MemoryAlertStateStore
from query.engine import Engine
from query.memory import MemoryStorage
from storage.base import DirectWriter
from web.alerting_pages import AlertingViews
from web.app import create_app
from web.auth import Auth, hash_password, verify_password
from web.login_throttle import LoginThrottle

HOSTILE = '<script>alert("x")</script>'
RULES = textwrap.dedent(
    """\
    groups:
      - name: host
        interval: 1h
        rules:
          - alert: HostOnFire
            expr: label_replace(vector(1), "instance", "<script>alert(\\"x\\")</script>", "", "")
            labels:
              severity: page
            annotations:
              summary: 'Host {{ $labels.instance }} is on "fire"'
          - record: job:one
            expr: vector(1)
    """
)
NEW_RULES = RULES.replace("HostOnFire", "HostOnFireRenamed")
BAD_RULES = RULES.replace("expr: vector(1)", "expr: sum(")


class Rig:
    """A real alerting stack (rule store, evaluator, silences in SQLite) behind the web app."""

    def __init__(self, tmp_path):
        self.rule_file = tmp_path / "rules.yaml"
        self.rule_file.write_text(RULES)
        self.storage = MemoryStorage()
        engine = Engine(self.storage)
        self.store = RuleStore([str(self.rule_file)])
        self.manager = RuleManager(
            self.store, engine.instant_query, DirectWriter(self.storage), MemoryAlertStateStore()
        )
        self.db = AlertingDB(tmp_path / "alerting.db")
        self.silences = Silences(SQLiteSilenceStore(self.db), refresh_s=0)
        self.reloads = 0

        async def reload():
            self.reloads += 1
            return await self.manager.reload()

        async def status():
            return self.manager.status()

        self.views = AlertingViews(
            rules_status=status,
            silences=self.silences,
            rule_store=self.store,
            reload_rules=reload,
            history_dir=tmp_path / "history",
        )
        # What the CLI would write: the same views straight from the parts.
        plain = AlertingViews.from_parts(
            manager=self.manager, silences=self.silences, history_dir=tmp_path / "history"
        )
        assert plain.rule_store is self.store and plain.reload_rules == self.manager.reload
        self.auth = Auth(users={"ops": hash_password("s3cret pass", n=2**10)})
        self.engine = engine

    async def evaluate(self):
        for key in list(self.manager.runners):
            await self.manager.evaluate_once(key, int(time.time() * 1000))


async def _empty():
    return []


@pytest.fixture
async def rig(tmp_path):
    r = Rig(tmp_path)
    await r.manager.start()
    await r.evaluate()
    app = create_app(
        engine=r.engine, pools_provider=_empty, targets_provider=_empty, alerting=r.views, auth=r.auth
    )
    r.client = TestClient(TestServer(app))
    await r.client.start_server()
    yield r
    await r.client.close()
    await r.manager.stop()


async def page(client, path, status=200, **kw):
    resp = await client.get(path, allow_redirects=False, **kw)
    body = await resp.text()
    assert resp.status == status, f"{path}: {resp.status} {body[:400]}"
    return body


def csrf(body: str) -> str:
    return re.search(r'name="csrf_token" value="([^"]+)"', body).group(1)


async def login(client, user="ops", password="s3cret pass"):
    token = csrf(await page(client, "/login"))
    resp = await client.post(
        "/login",
        data={"username": user, "password": password, "csrf_token": token, "next": "/rules"},
        allow_redirects=False,
    )
    await resp.read()
    return resp


def test_password_hashes_verify_and_differ():
    a, b = hash_password("pw", n=2**10), hash_password("pw", n=2**10)
    assert a != b and a.startswith("scrypt$1024$")
    assert verify_password("pw", a) and not verify_password("pW", a) and not verify_password("pw", "nonsense")
    with pytest.raises(ValueError, match=r"users\.bob\.password_hash: expected scrypt"):
        Auth(users={"bob": "plaintext"})


async def test_alerts_page_shows_firing_alerts_escaped(rig):
    body = await page(rig.client, "/alerts")
    assert "HostOnFire" in body and 'class="badge state-firing">firing<' in body
    assert "<script" not in body
    assert 'instance="&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;"' in body
    assert "Host &lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt; is on &#34;fire&#34;" in body  # annotation
    assert re.search(r"\d+s ago", body)
    assert "/silences?matchers=" in body and "No firing alerts" not in body
    assert "No pending alerts" in await page(rig.client, "/alerts?state=pending")


async def test_overview_counts_alerts(rig):
    body = await page(rig.client, "/")
    assert re.search(r'<span class="num">1</span> alerts firing', body)
    assert re.search(r'<span class="num">0</span> alerts pending', body)


async def test_rules_page_shows_groups_health_and_file_errors(rig):
    body = await page(rig.client, "/rules")
    assert "HostOnFire" in body and "job:one" in body and "every 1 h" in body
    assert 'class="badge health-up">ok<' in body
    rig.rule_file.write_text(BAD_RULES)
    await rig.manager.reload()
    body = await page(rig.client, "/rules")
    assert "does not validate; its last good version is still in use" in body
    assert re.search(r"rules\.yaml:1[0-9]: ", body)
    assert "HostOnFire" in body  # still the last good rules


async def test_login_logout_and_csrf(rig):
    c = rig.client
    assert "Log in" in await page(c, "/")
    resp = await login(c, password="wrong")
    assert resp.status == 401
    token = csrf(await page(c, "/login"))
    resp = await c.post("/login", data={"username": "ops", "password": "s3cret pass"}, allow_redirects=False)
    assert resp.status == 403  # no CSRF token
    resp = await c.post(
        "/login",
        data={"username": "ops", "password": "s3cret pass", "csrf_token": token + "x"},
        allow_redirects=False,
    )
    assert resp.status == 403  # wrong token
    resp = await login(c)
    assert resp.status == 303 and resp.headers["Location"] == "/rules"
    set_cookie = resp.headers.getall("Set-Cookie")
    assert any("ringmon_session=" in h and "HttpOnly" in h and "SameSite=Lax" in h for h in set_cookie)
    body = await page(c, "/")
    assert '<span class="user">ops</span>' in body
    resp = await c.post("/logout", data={"csrf_token": csrf(body)}, allow_redirects=False)
    assert resp.status == 303
    assert '<span class="user">' not in await page(c, "/")


async def test_login_redirect_stays_on_this_site(rig):
    token = csrf(await page(rig.client, "/login"))
    for evil in ("https://evil.example/", "//evil.example/", "/\\evil.example"):
        resp = await rig.client.post(
            "/login",
            data={"username": "ops", "password": "s3cret pass", "csrf_token": token, "next": evil},
            allow_redirects=False,
        )
        assert resp.status == 303 and resp.headers["Location"] == "/"


async def test_silences_need_login_and_csrf_then_mute_the_alert(rig):
    c = rig.client
    body = await page(c, "/silences")
    assert "to create or expire silences" in body and '<form class="silence"' not in body
    resp = await c.post(
        "/silences", data={"matchers": 'alertname="HostOnFire"', "duration": "1h", "comment": "x"}
    )
    assert resp.status == 403
    await login(c)
    body = await page(c, "/silences?matchers=" + "alertname%3D%22HostOnFire%22")
    assert 'value="alertname=&#34;HostOnFire&#34;"' in body
    resp = await c.post(
        "/silences", data={"matchers": 'alertname="HostOnFire"', "duration": "1h", "comment": "fixing"}
    )
    assert resp.status == 403  # logged in but no CSRF token
    token = csrf(body)
    resp = await c.post(
        "/silences",
        data={
            "matchers": 'alertname="HostOnFire"',
            "duration": "1h",
            "comment": HOSTILE,
            "csrf_token": token,
        },
        allow_redirects=False,
    )
    assert resp.status == 303
    body = await page(c, "/silences")
    assert (
        'class="badge silence-active">active<' in body and "&lt;script&gt;" in body and "<script" not in body
    )
    assert '<div class="sub">silenced</div>' in await page(c, "/alerts")
    # An invalid silence is refused with the reason, nothing stored.
    resp = await c.post(
        "/silences",
        data={"matchers": "", "duration": "1h", "comment": "x", "csrf_token": token},
        allow_redirects=False,
    )
    assert resp.status == 422 and "at least one matcher" in await resp.text()
    (silence,) = await rig.silences.list()
    resp = await c.post(f"/silences/{silence.id}/expire", data={"csrf_token": token}, allow_redirects=False)
    assert resp.status == 303
    (silence,) = await rig.silences.list()
    assert silence.state() == "expired"
    assert "silenced" not in await page(c, "/alerts")


async def test_rule_editor_requires_login(rig):
    c = rig.client
    resp = await c.get(f"/rules/edit?file={rig.rule_file}", allow_redirects=False)
    assert resp.status == 303 and resp.headers["Location"].startswith("/login?next=")
    token = csrf(await page(c, "/login"))
    resp = await c.post("/rules/edit", data={"file": str(rig.rule_file), "text": NEW_RULES, "action": "save",
                                             "csrf_token": token})  # fmt: skip
    assert resp.status == 403
    assert rig.rule_file.read_text() == RULES


async def test_rule_editor_validates_diffs_saves_keeps_history_and_reloads(rig):
    c = rig.client
    await login(c)
    path = str(rig.rule_file)
    body = await page(c, f"/rules/edit?file={path}")
    token = csrf(body)
    base = re.search(r'name="base" value="([^"]+)"', body).group(1)
    assert "HostOnFire" in body

    # Not a configured rule file: refused.
    assert (await c.get("/rules/edit?file=/etc/passwd")).status == 400

    # Invalid: refused with its line next to the text, file untouched.
    resp = await c.post("/rules/edit", data={"file": path, "text": BAD_RULES.replace("\n", "\r\n"), "base": base,
                                             "action": "save", "csrf_token": token})  # fmt: skip
    body = await resp.text()
    assert resp.status == 422 and "Not saved: the rules do not validate." in body
    bad_line = next(i for i, line in enumerate(BAD_RULES.splitlines(), 1) if "sum(" in line)
    assert re.search(rf'<tr class="bad"><td class="ln">{bad_line}</td>', body)
    assert rig.rule_file.read_text() == RULES

    # Valid: the preview shows a diff and does not save.
    resp = await c.post("/rules/edit", data={"file": path, "text": NEW_RULES, "base": base, "action": "preview",
                                             "csrf_token": token})  # fmt: skip
    body = await resp.text()
    assert resp.status == 200
    assert '<span class="d-del">-      - alert: HostOnFire</span>' in body
    assert '<span class="d-add">+      - alert: HostOnFireRenamed</span>' in body
    assert rig.rule_file.read_text() == RULES

    # Save: atomically written, old text in history, alerter reloaded and running the new rule.
    resp = await c.post("/rules/edit", data={"file": path, "text": NEW_RULES, "base": base, "action": "save",
                                             "csrf_token": token})  # fmt: skip
    body = await resp.text()
    assert resp.status == 200 and "Saved" in body and "The alerter reloaded its rules: 1 loaded" in body
    assert rig.rule_file.read_text() == NEW_RULES and rig.reloads == 1
    await rig.evaluate()
    names = {r["name"] for g in rig.manager.status() for r in g["rules"]}
    assert "HostOnFireRenamed" in names and "HostOnFire" not in names
    assert "HostOnFireRenamed" in await page(c, "/alerts")

    # A save based on the old text is a conflict, not a silent overwrite.
    resp = await c.post("/rules/edit", data={"file": path, "text": RULES, "base": base, "action": "save",
                                             "csrf_token": token})  # fmt: skip
    assert resp.status == 409 and "changed on disk after you opened it" in await resp.text()
    assert rig.rule_file.read_text() == NEW_RULES

    # History holds the previous text; loading it into the editor is the rollback.
    body = await page(c, f"/rules/history?file={path}")
    version = re.search(r"version=(\d{8}T\d{6}\.\d{6}Z-\d+)", body).group(1)
    assert ">ops<" in body
    body = await page(c, f"/rules/edit?file={path}&version={version}")
    assert "Loaded version" in body and "- alert: HostOnFire\n" in body.replace("&#34;", '"')
    new_base = re.search(r'name="base" value="([^"]+)"', body).group(1)
    resp = await c.post("/rules/edit", data={"file": path, "text": RULES, "base": new_base, "action": "save",
                                             "csrf_token": token})  # fmt: skip
    assert resp.status == 200 and rig.rule_file.read_text() == RULES and rig.reloads == 2


async def test_repeated_failed_logins_are_throttled(rig):
    for _ in range(5):
        assert (await login(rig.client, password="guess")).status == 401
    resp = await login(rig.client)  # even the right password waits now
    assert resp.status == 429 and "Too many failed logins; try again in" in await resp.text()
    rig.auth.throttle = LoginThrottle()  # the delay over
    assert (await login(rig.client)).status == 303


async def test_form_from_another_site_is_refused(rig):
    await login(rig.client)
    token = csrf(await page(rig.client, "/silences"))
    resp = await rig.client.post(
        "/silences",
        data={"matchers": 'alertname="X"', "duration": "1h", "comment": "c", "csrf_token": token},
        headers={"Origin": "https://evil.example"},
        allow_redirects=False,
    )
    assert resp.status == 403 and "another site" in await resp.text()


async def test_rule_text_cannot_break_out_of_the_editor(rig):
    await login(rig.client)
    path = str(rig.rule_file)
    body = await page(rig.client, f"/rules/edit?file={path}")
    token, base = csrf(body), re.search(r'name="base" value="([^"]+)"', body).group(1)
    hostile = RULES.replace('is on "fire"', 'is on "fire" </textarea><script>alert(1)</script>')
    for action in ("preview", "save"):
        resp = await rig.client.post(
            "/rules/edit",
            data={"file": path, "text": hostile, "base": base, "action": action, "csrf_token": token},
        )
        body = await resp.text()
        assert resp.status == 200, body[:300]
        assert "<script>" not in body and body.count("</textarea>") == 1
        assert "&lt;/textarea&gt;&lt;script&gt;alert(1)&lt;/script&gt;" in body
    assert rig.rule_file.read_text() == hostile


async def test_without_users_pages_say_how_to_add_one_and_hide_dead_links(tmp_path):
    """No web.users: no "edit" or "Silence…" link leads to a 403; the pages say how to add a user,
    and a 403 reached anyway says it too."""
    r = Rig(tmp_path)
    r.rule_file.write_text(RULES.replace(
        "summary: 'Host {{ $labels.instance }} is on \"fire\"'",
        "summary: 'Disk {{ $value | humanizePercentage }} full on {{ $labels.instance }}'",
    ).replace("expr: label_replace(vector(1),", "expr: label_replace(vector(0.99040987556),"))  # fmt: skip
    await r.manager.start()
    await r.evaluate()
    app = create_app(engine=r.engine, pools_provider=_empty, targets_provider=_empty, alerting=r.views)
    c = TestClient(TestServer(app))
    await c.start_server()
    try:
        rules = await page(c, "/rules")
        assert "/rules/edit" not in rules and "ringmon hash-password" in rules and "web.users" in rules
        assert "/rules/history" not in rules  # the history needs a login too
        alerts = await page(c, "/alerts")
        assert "Silence…" not in alerts and "ringmon hash-password" in alerts
        # The value column reads as the summary does: "99.04%" beside "Disk 99.04% full".
        assert "Disk 99.04% full" in alerts
        assert '<td class="num" title="9.9040987556e-01">99.04%</td>' in alerts  # raw value on hover
        resp = await c.get(f"/rules/edit?file={r.rule_file}")
        assert resp.status == 403 and "ringmon hash-password" in await resp.text()
    finally:
        await c.close()
        await r.manager.stop()
