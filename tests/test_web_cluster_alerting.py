"""``ringmon web`` in cluster mode serves the alerting pages over alerters in other processes.

A real ``AlerterService`` serving its HTTP API on 127.0.0.1 (SQLite state, its own memory
storage), a real webhook receiver, and ``ClusterWeb`` (real ZooKeeper, SQLite storage) with
logins from ``web.users``. Checked over HTTP: /alerts shows the alerter's firing alert, a
silence created and expired in the browser is honoured by the alerter, /rules shows the
groups and their last evaluation, a rule edit reloads the alerter (POST /-/reload seen by the
alerter) which then evaluates the new rule, and two alerters sharing groups through
ZooKeeper ownership are merged into one view.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from pathlib import Path
from urllib.parse import urlencode

import aiohttp
import pytest

from alerting.api_auth import bearer
from alerting.service import AlerterService, load_alerting_file
from alerting.testing import RecordingReceiver
from cli.cmd_web import ClusterWeb, WebOptions
from cli.config import config_from_dict
from cli.errors import UserError
from query.memory import MemoryStorage
from services.zookeeper.zkserver import free_port
from storage.base import DirectWriter
from storage.model import SampleBatch, Series, make_labels
from web.alerting_remote import alerter_url, merge_rule_status
from web.auth import hash_password

pytestmark = [pytest.mark.zookeeper]

PASSWORD = "s3cret pass"
RULES = """groups:
  - name: svc
    interval: 200ms
    rules:
      - alert: Hot
        expr: svc_temp > 50
        labels: {severity: page}
        annotations: {summary: "temp {{ $value }}"}
"""
NEW_RULES = RULES + """      - alert: AlwaysOn
        expr: vector(1)
"""
BAD_RULES = RULES.replace("svc_temp > 50", "svc_temp >")


class RecordingAlerter(AlerterService):
    """The real alerter service; it notes why each reload happened."""

    reasons: list[str]

    async def reload(self, reason: str = "api") -> dict:
        self.reasons.append(reason)
        return await super().reload(reason)


def alerting_file(tmp: Path, name: str, rule_files: list[str], hook: str, **extra) -> Path:
    p = tmp / f"{name}.alerting.yaml"
    p.write_text(json.dumps({
        "alerter": {"listen": f"127.0.0.1:{free_port()}", "state_db": str(tmp / f"{name}.state.db"),
                    "rule_files": rule_files, "evaluation_interval": "200ms", "watch_interval": "1h",
                    "resend_delay": "1s", "api_token_file": str(tmp / "data" / "alerter-api-token"), **extra},
        "global": {"retry_initial": 0.05},
        "route": {"receiver": "hook", "group_wait": 0.1, "group_interval": 0.5},
        "receivers": [{"name": "hook", "webhook_configs": [{"url": hook}]}],
    }))
    return p


async def start_alerter(path: Path) -> tuple[RecordingAlerter, MemoryStorage]:
    settings, ncfg = load_alerting_file(str(path))
    storage = MemoryStorage()
    svc = RecordingAlerter(settings, ncfg, storage, DirectWriter(storage), alerting_config_path=str(path))
    svc.reasons = []
    await svc.start(serve_http=True)
    return svc, storage


def temp(storage: MemoryStorage, v: float) -> None:
    b = SampleBatch("t")
    b.add(Series.of(make_labels("svc_temp", instance="a")), int(time.time() * 1000), v)
    storage.write_sync(b)


def web_config(tmp: Path, zookeeper, alerting: Path | None):
    doc = {
        "storage": {"backend": "sqlite", "sqlite": {"path": str(tmp / "web.db")}},
        "discovery": {"zookeeper": {"hosts": zookeeper.hosts, "session_timeout": "4s"}},
        "web": {"users": {"ops": hash_password(PASSWORD, n=2**10)}, "session_secret": "test secret"},
        "data_dir": str(tmp / "data"),
    }
    if alerting is not None:
        doc["alerting"] = str(alerting)
    return config_from_dict(doc)


async def until(pred, timeout: float = 60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = await pred()
        if got:
            return got
        await asyncio.sleep(0.1)
    return await pred()


class Browser:
    """An HTTP client with a cookie jar, like the browser of an operator."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.http = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))

    async def get(self, path: str, status: int = 200) -> str:
        async with self.http.get(self.base + path, allow_redirects=False) as r:
            body = await r.text()
            assert r.status == status, f"{path}: {r.status} {body[:500]}"
            return body

    async def post(self, path: str, data: dict) -> tuple[int, str, str]:
        async with self.http.post(self.base + path, data=data, allow_redirects=False) as r:
            return r.status, await r.text(), r.headers.get("Location", "")

    async def login(self) -> None:
        token = csrf(await self.get("/login"))
        status, body, _ = await self.post("/login", {"username": "ops", "password": PASSWORD,
                                                     "csrf_token": token, "next": "/"})
        assert status == 303, body[:300]

    async def close(self) -> None:
        await self.http.close()


def csrf(body: str) -> str:
    m = re.search(r'name="csrf_token" value="([^"]+)"', body)
    assert m, body[:300]
    return m.group(1)


@pytest.fixture
async def rig(tmp_path, zookeeper, zk_root):
    hook = await RecordingReceiver().start()
    rules = tmp_path / "svc.rules.yml"
    rules.write_text(RULES)
    path = alerting_file(tmp_path, "a1", [str(rules)], hook.url + "/hook")
    alerter, storage = await start_alerter(path)
    web_port = free_port()
    # no --alerter: rule files and the alerter's address come from the alerting file
    server = ClusterWeb(web_config(tmp_path, zookeeper, path),
                        WebOptions(listen=f"127.0.0.1:{web_port}", zookeeper=zookeeper.hosts, zookeeper_root=zk_root,
                                   session_timeout=4.0, alerting_file=str(path)))
    await server.start()
    browser = Browser(f"http://127.0.0.1:{web_port}")
    try:
        yield alerter, storage, hook, browser, rules
    finally:
        await browser.close()
        await server.stop()
        await alerter.stop()
        await hook.stop()


async def test_alerts_and_rules_pages_show_the_alerters_state(rig) -> None:
    alerter, storage, hook, browser, rules = rig
    temp(storage, 80)

    async def firing() -> str | None:
        body = await browser.get("/alerts?state=firing")
        return body if "Hot" in body else None

    body = await until(firing)
    assert body, "the firing alert never showed on /alerts"
    assert 'class="badge state-firing">firing<' in body and 'severity="page"' in body
    assert "temp 80" in body and re.search(r"\d+s ago", body)
    assert "rule status unavailable" not in body
    overview = await browser.get("/")
    assert re.search(r'<span class="num">1</span> alerts firing', overview)

    page = await browser.get("/rules")
    assert "<h2>svc <span" in page and "evaluated by another alerter" not in page
    assert re.search(r"last evaluation \d+s ago", page), page[page.find("<h2>svc"):][:400]
    assert 'class="badge health-up">ok<' in page and "svc_temp &gt; 50" in page
    assert "/rules/edit?" + urlencode({"file": str(rules)}) in page

    rules.write_text(BAD_RULES)  # the alerter reports the file; the page says the last good one runs
    async with aiohttp.ClientSession(headers=bearer(alerter.api_token)) as s, \
            s.post(alerter_url(alerter.settings.listen) + "/-/reload") as r:
        assert r.status == 400
    page = await browser.get("/rules")
    assert "does not validate; its last good version is still in use" in page
    assert re.search(r"svc\.rules\.yml:6: ", page) and "<h2>svc <span" in page


async def test_silence_from_the_web_is_honoured_by_the_alerter_and_expired(rig) -> None:
    alerter, storage, hook, browser, rules = rig
    body = await browser.get("/silences")
    assert "Log in" in body
    status, _, _ = await browser.post("/silences", {"matchers": 'alertname="Hot"', "duration": "1h",
                                                    "comment": "no login", "csrf_token": csrf(await browser.get("/login"))})
    assert status == 403  # not logged in
    await browser.login()
    form = await browser.get("/silences")
    status, _, _ = await browser.post("/silences", {"matchers": 'alertname="Hot"', "duration": "1h",
                                                    "comment": "no token"})
    assert status == 403  # no CSRF token
    status, body, _ = await browser.post("/silences", {"matchers": "bad matcher", "duration": "1h",
                                                       "comment": "x", "csrf_token": csrf(form)})
    assert status == 422 and "bad matcher" in body
    status, body, location = await browser.post("/silences", {
        "matchers": 'alertname="Hot"', "duration": "1h", "comment": "maintenance <b>", "csrf_token": csrf(form)})
    assert (status, location) == (303, "/silences"), body[:400]
    (silence,) = await alerter.silences.list()  # it is in the alerter's own store
    assert silence.created_by == "ops" and silence.comment == "maintenance <b>" and silence.is_active()
    page = await browser.get("/silences")
    assert silence.id in page and "maintenance &lt;b&gt;" in page and 'alertname=&#34;Hot&#34;' in page

    temp(storage, 80)
    url = alerter_url(alerter.settings.listen)

    async def notifier_state() -> str | None:
        async with aiohttp.ClientSession(headers=bearer(alerter.api_token)) as s, \
                s.get(url + "/api/v1/notifier/alerts") as r:
            alerts = (await r.json())["data"]["alerts"]
        return alerts[0]["state"] if alerts else None

    assert await until(lambda: _is(notifier_state(), "suppressed")), await notifier_state()
    assert await hook.wait_for(1, timeout=1.0) == []  # muted by the silence made in the browser
    alerts_page = await until(lambda: _page_with(browser, "/alerts", "<div class=\"sub\">silenced</div>"))
    assert alerts_page and "Hot" in alerts_page

    status, body, location = await browser.post(f"/silences/{silence.id}/expire",
                                                {"csrf_token": csrf(await browser.get("/silences"))})
    assert (status, location) == (303, "/silences"), body[:400]
    assert (await alerter.silences.find(silence.id)).state() == "expired"
    status, body, _ = await browser.post(f"/silences/{silence.id}/expire",
                                         {"csrf_token": csrf(await browser.get("/silences"))})
    assert status == 422 and "already expired" in body
    received = await hook.wait_for(1, timeout=60.0)  # no longer muted: notified once
    assert len(received) == 1 and "Hot" in json.dumps(received[0].body)
    assert silence.id not in await browser.get("/silences")  # expired ones are hidden ...
    assert silence.id in await browser.get("/silences?expired=1")  # ... unless asked for


async def _is(coro, want) -> bool:
    return await coro == want


async def _page_with(browser: Browser, path: str, text: str) -> str | None:
    body = await browser.get(path)
    return body if text in body else None


async def test_rule_edit_reloads_the_alerter_which_runs_the_new_rule(rig) -> None:
    alerter, storage, hook, browser, rules = rig
    edit = f"/rules/edit?file={rules}"
    await browser.get(edit, status=303)  # login first
    await browser.login()
    page = await browser.get(edit)
    token, base = csrf(page), re.search(r'name="base" value="([^"]+)"', page).group(1)
    status, body, _ = await browser.post("/rules/edit", {"file": str(rules), "text": BAD_RULES, "base": base,
                                                         "action": "save", "csrf_token": token})
    assert status == 422 and "Not saved" in body and "<li>line 6: " in body and "parse error" in body
    assert rules.read_text() == RULES and alerter.reasons == []
    status, body, _ = await browser.post("/rules/edit", {"file": str(rules), "text": NEW_RULES, "base": base,
                                                         "action": "save", "csrf_token": token})
    assert status == 200, body[:500]
    assert "The alerter reloaded its rules" in body and "1 loaded" in body, body[body.find("<main"):][:800]
    assert "did not take the new rules" not in body
    assert rules.read_text() == NEW_RULES
    assert alerter.reasons == ["http"]  # the web server's POST /-/reload (the file watcher is at 1 h)

    async def always_on() -> str | None:
        body = await browser.get("/alerts?state=firing")
        return body if "AlwaysOn" in body else None

    assert await until(always_on), "the alerter never evaluated the edited rule"
    assert any(r.name == "AlwaysOn" for g in alerter.rules.groups() for r in g.rules)
    page = await browser.get("/rules")
    assert "AlwaysOn" in page and "vector(1)" in page
    history = await browser.get(f"/rules/history?file={rules}")
    assert "ops" in history  # the previous text was kept, by whom


async def test_no_reachable_alerter_is_said_on_the_pages(tmp_path, zookeeper, zk_root) -> None:
    rules = tmp_path / "svc.rules.yml"
    rules.write_text(RULES)
    cfg = web_config(tmp_path, zookeeper, None)
    cfg.rules.files = [str(rules)]
    dead = f"127.0.0.1:{free_port()}"
    web_port = free_port()
    server = ClusterWeb(cfg, WebOptions(listen=f"127.0.0.1:{web_port}", zookeeper=zookeeper.hosts,
                                        zookeeper_root=zk_root, alerters=[dead]))
    await server.start()
    browser = Browser(f"http://127.0.0.1:{web_port}")
    try:
        body = await browser.get("/alerts")
        assert "rule status unavailable" in body and dead in body
        page = await browser.get("/rules")
        assert str(rules) in page  # the editor still lists the configured files
        assert "rule status unavailable" in page
        body = await browser.get("/silences", status=503)
        assert "Silences are unavailable: no alerter answered" in body and dead in body
    finally:
        await browser.close()
        await server.stop()


async def test_a_bad_alerter_address_is_a_one_line_error(tmp_path, zookeeper, zk_root) -> None:
    server = ClusterWeb(web_config(tmp_path, zookeeper, None),
                        WebOptions(listen=f"127.0.0.1:{free_port()}", zookeeper=zookeeper.hosts,
                                   zookeeper_root=zk_root, alerters=["not an address"]))
    with pytest.raises(UserError, match=r"alerter address 'not an address': expected HOST:PORT"):
        await server.start()
    missing = tmp_path / "no-such-alerting.yaml"
    server = ClusterWeb(web_config(tmp_path, zookeeper, None),
                        WebOptions(listen=f"127.0.0.1:{free_port()}", zookeeper=zookeeper.hosts,
                                   zookeeper_root=zk_root, alerting_file=str(missing)))
    with pytest.raises(UserError, match=rf"{re.escape(str(missing))}: cannot read"):
        await server.start()
    with pytest.raises(ValueError, match="expected http://HOST:PORT"):
        alerter_url("ftp://x:1")
    assert alerter_url("0.0.0.0:9467") == "http://127.0.0.1:9467"
    assert alerter_url("http://a:1/") == "http://a:1"


async def test_two_alerters_are_one_view(tmp_path, zookeeper, zk_root) -> None:
    """Groups split between two alerters by ZooKeeper ownership: each group shown once, from
    the alerter evaluating it; a reload reaches both; one alerter gone, the other covers."""
    hook = await RecordingReceiver().start()
    files = []
    for i in range(4):
        f = tmp_path / f"g{i}.rules.yml"
        f.write_text(f"groups:\n  - name: g{i}\n    interval: 200ms\n    rules:\n"
                     f"      - alert: Always{i}\n        expr: vector({i})\n")
        files.append(str(f))
    zk = {"ownership": "zookeeper", "zookeeper_hosts": zookeeper.hosts, "zookeeper_path": f"{zk_root}/alerters",
          "zookeeper_session_timeout": "4s"}
    alerters = []
    for name in ("a1", "a2"):
        alerters.append((await start_alerter(alerting_file(tmp_path, name, files, hook.url + "/hook",
                                                           id=name, **zk)))[0])
    web_port = free_port()
    server = ClusterWeb(web_config(tmp_path, zookeeper, None),
                        WebOptions(listen=f"127.0.0.1:{web_port}", zookeeper=zookeeper.hosts, zookeeper_root=zk_root,
                                   alerters=[a.settings.listen for a in alerters], alerting_file=""))
    server.cfg.rules.files = files
    await server.start()
    browser = Browser(f"http://127.0.0.1:{web_port}")
    try:
        async def all_firing() -> str | None:
            body = await browser.get("/alerts?state=firing")
            return body if all(f"Always{i}" in body for i in range(4)) else None

        body = await until(all_firing, 60)
        assert body, await browser.get("/alerts")
        assert server.alerters is not None

        async def one_owner_each() -> tuple[dict[str, str], list[dict]] | None:
            """Each group owned by exactly one alerter, which has evaluated it, and the web says so.

            The alerters learn of each other through a ZooKeeper watch: until both have seen the
            same members, a group can be owned by none (its alerts still shown from the alerter
            that evaluated it last), so the test waits for that, not for a time."""
            owned = [(g["name"], a.settings.id) for a in alerters for g in a.manager.status() if g["owned"]]
            owners = dict(owned)
            if len(owned) != 4 or sorted(owners) != ["g0", "g1", "g2", "g3"]:
                return None
            groups = await server.alerters.rules_status()
            converged = all(g["owned"] and g["lastEvaluation"] > 0 for g in groups)
            return (owners, groups) if converged and sorted(g["name"] for g in groups) == sorted(owners) else None

        settled = await until(one_owner_each, 60)
        assert settled, [(a.settings.id, a.manager.status()) for a in alerters]
        owners, groups = settled
        assert {g["name"]: g["alerter"] for g in groups} == {
            n: alerter_url(next(a.settings.listen for a in alerters if a.settings.id == o)) for n, o in owners.items()}
        page = await browser.get("/rules")
        assert page.count("<h2>g") == 4 and "evaluated by another alerter" not in page

        await browser.login()
        edit = await browser.get(f"/rules/edit?file={files[0]}")
        base = re.search(r'name="base" value="([^"]+)"', edit).group(1)
        status, body, _ = await browser.post("/rules/edit", {
            "file": files[0], "text": Path(files[0]).read_text().replace("Always0", "Renamed0"), "base": base,
            "action": "save", "csrf_token": csrf(edit)})
        assert status == 200 and "The alerter reloaded its rules" in body, body[:600]
        assert [a.reasons for a in alerters] == [["http"], ["http"]]  # both reloaded

        await alerters[1].stop()  # its ZooKeeper node goes: a1 takes every group
        assert await until(lambda: _page_with(browser, "/alerts?state=firing", "Renamed0"), 60)
        groups = await server.alerters.rules_status()
        assert sorted(g["name"] for g in groups) == ["g0", "g1", "g2", "g3"]
        assert {g["alerter"] for g in groups} == {alerter_url(alerters[0].settings.listen)}
        assert alerter_url(alerters[1].settings.listen) in server.alerters.last_errors
    finally:
        await browser.close()
        await server.stop()
        for a in alerters:
            if a.runner is not None:
                await a.stop()
        await hook.stop()


def test_merge_prefers_the_owner_then_the_latest_evaluation() -> None:
    def group(owned: bool, last: str, alerts: int) -> dict:
        return {"name": "g", "file": "f", "key": "f;g", "owned": owned, "lastEvaluation": last, "rules": [
            {"name": "A", "type": "alerting", "lastEvaluation": last,
             "alerts": [{"labels": {"i": str(i)}, "activeAt": "2026-01-01T00:00:00.500Z"} for i in range(alerts)]}]}

    merged = merge_rule_status([("http://a", [group(False, "2026-01-01T00:00:09Z", 0)]),
                                ("http://b", [group(True, "2026-01-01T00:00:05Z", 2)]),
                                ("http://c", [group(False, "0001-01-01T00:00:00Z", 0)])])
    (g,) = merged
    assert g["alerter"] == "http://b" and g["lastEvaluation"] == 1767225605.0
    assert [a["activeAt"] for a in g["rules"][0]["alerts"]] == [1767225600.5, 1767225600.5]
    (g,) = merge_rule_status([("http://a", [group(False, "2026-01-01T00:00:09Z", 0)]),
                              ("http://c", [group(False, "0001-01-01T00:00:00Z", 0)])])
    assert g["alerter"] == "http://a" and g["rules"][0]["lastEvaluation"] == 1767225609.0


async def test_silences_go_through_the_shared_cassandra_store(tmp_path, zookeeper, zk_root, cassandra,
                                                               cassandra_storage) -> None:
    """Cassandra storage: the web server writes silences into the keyspace the alerter reads,
    so they work with no alerter reachable from the web server at all."""
    hook = await RecordingReceiver().start()
    rules = tmp_path / "svc.rules.yml"
    rules.write_text(RULES)
    path = alerting_file(tmp_path, "c1", [str(rules)], hook.url + "/hook")
    settings, ncfg = load_alerting_file(str(path))
    alerter = AlerterService(settings, ncfg, cassandra_storage, DirectWriter(cassandra_storage),
                             alerting_config_path=str(path))
    await alerter.start(serve_http=True)
    cfg = config_from_dict({
        "storage": {"backend": "cassandra", "cassandra": {
            "hosts": [cassandra.host], "port": cassandra.port, "keyspace": cassandra_storage.keyspace,
            "spool_dir": str(tmp_path / "spool")}},
        "discovery": {"zookeeper": {"hosts": zookeeper.hosts, "session_timeout": "4s"}},
        "web": {"users": {"ops": hash_password(PASSWORD, n=2**10)}, "session_secret": "test secret"},
        "data_dir": str(tmp_path / "data"),
        "alerting": str(path),
    })
    dead = f"127.0.0.1:{free_port()}"
    web_port = free_port()
    server = ClusterWeb(cfg, WebOptions(listen=f"127.0.0.1:{web_port}", zookeeper=zookeeper.hosts,
                                        zookeeper_root=zk_root, alerters=[dead], alerting_file=str(path)))
    await server.start()
    browser = Browser(f"http://127.0.0.1:{web_port}")
    try:
        assert server.storage is not None and type(server.storage).__name__ != "CassandraStorage"  # a subclass
        await browser.login()
        form = await browser.get("/silences")
        status, body, _ = await browser.post("/silences", {
            "matchers": 'alertname="Hot"', "duration": "1h", "comment": "cluster-wide", "csrf_token": csrf(form)})
        assert status == 303, body[:400]
        (silence,) = [s for s in await alerter.silences.list() if s.comment == "cluster-wide"]
        assert silence.is_active()

        b = SampleBatch("t")
        b.add(Series.of(make_labels("svc_temp", instance="a")), int(time.time() * 1000), 80.0)
        await cassandra_storage.write(b)
        url = alerter_url(alerter.settings.listen)

        async def notifier_state() -> str | None:
            async with aiohttp.ClientSession(headers=bearer(alerter.api_token)) as s, \
                s.get(url + "/api/v1/notifier/alerts") as r:
                alerts = (await r.json())["data"]["alerts"]
            return alerts[0]["state"] if alerts else None

        assert await until(lambda: _is(notifier_state(), "suppressed"), 60), await notifier_state()
        assert await hook.wait_for(1, timeout=1.0) == []
        page = await browser.get("/silences")
        status, body, _ = await browser.post(f"/silences/{silence.id}/expire", {"csrf_token": csrf(page)})
        assert status == 303, body[:400]
        assert len(await hook.wait_for(1, timeout=60.0)) == 1  # expired in the web: the alerter notifies
        assert "rule status unavailable" in await browser.get("/alerts")  # the web never reached the alerter
    finally:
        await browser.close()
        await server.stop()
        await alerter.stop()
        await hook.stop()


def test_command_line_alerters_and_alerting_file(tmp_path) -> None:
    import argparse

    from cli.cmd_web import options_from, register

    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    cfg = config_from_dict({"discovery": {"zookeeper": {"hosts": "127.0.0.1:1"}}, "alerting": "conf/alerting.yaml"})
    args = parser.parse_args(["web", "--config", "x.yaml", "--alerter", "a:9467", "--alerter", "http://b:9467"])
    opts = options_from(args, cfg)
    assert opts.alerters == ["a:9467", "http://b:9467"] and opts.alerting_file == "conf/alerting.yaml"
    args = parser.parse_args(["web", "--config", "x.yaml", "--alerting", "other.yaml"])
    opts = options_from(args, cfg)
    assert opts.alerters == [] and opts.alerting_file == "other.yaml"


async def test_alerters_found_through_their_zookeeper_nodes(tmp_path, zookeeper, zk_root) -> None:
    """With ZooKeeper ownership and no --alerter, the web server reads the addresses the
    alerters publish in their ownership nodes."""
    from kazoo.client import KazooClient

    hook = await RecordingReceiver().start()
    files = []
    for i in range(3):
        f = tmp_path / f"g{i}.rules.yml"
        f.write_text(f"groups:\n  - name: g{i}\n    interval: 200ms\n    rules:\n"
                     f"      - alert: Always{i}\n        expr: vector({i})\n")
        files.append(str(f))
    node_path = f"{zk_root}/alerters"
    zk = {"ownership": "zookeeper", "zookeeper_hosts": zookeeper.hosts, "zookeeper_path": node_path,
          "zookeeper_session_timeout": "4s"}
    paths = [alerting_file(tmp_path, name, files, hook.url + "/hook", id=name, **zk) for name in ("a1", "a2")]
    alerters = [(await start_alerter(p))[0] for p in paths]
    web_port = free_port()
    server = ClusterWeb(web_config(tmp_path, zookeeper, None),
                        WebOptions(listen=f"127.0.0.1:{web_port}", zookeeper=zookeeper.hosts, zookeeper_root=zk_root,
                                   session_timeout=4.0, alerting_file=str(paths[0])))
    await server.start()
    admin = KazooClient(hosts=zookeeper.hosts)
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, lambda: admin.start(timeout=10))
    try:
        assert server.alerters is not None
        for a in alerters:  # each alerter wrote its own address into its node
            raw, _ = await loop.run_in_executor(None, admin.get, f"{node_path}/{a.settings.id}")
            assert json.loads(raw) == {"listen": a.settings.listen}

        async def both() -> list[str] | None:
            urls = await server.alerters.urls()
            return urls if len(urls) == 2 else None

        assert sorted(await until(both, 60) or []) == sorted(alerter_url(a.settings.listen) for a in alerters)
        server.alerters.forget_status()

        async def all_owned() -> list[dict] | None:
            server.alerters.forget_status()
            groups = await server.alerters.rules_status()
            return groups if len(groups) == 3 and all(g["owned"] and g["lastEvaluation"] for g in groups) else None

        groups = await until(all_owned, 60)
        assert groups, await server.alerters.rules_status()
        owners = {g["name"]: a.settings.listen for a in alerters for g in a.manager.status() if g["owned"]}
        assert {g["name"]: g["alerter"] for g in groups} == {n: alerter_url(u) for n, u in owners.items()}
        page = await browser_get(web_port, "/rules")
        assert page.count("<h2>g") == 3 and "evaluated by another alerter" not in page
    finally:
        await loop.run_in_executor(None, admin.stop)
        await server.stop()
        for a in alerters:
            await a.stop()
        await hook.stop()


async def browser_get(port: int, path: str) -> str:
    b = Browser(f"http://127.0.0.1:{port}")
    try:
        return await b.get(path)
    finally:
        await b.close()
