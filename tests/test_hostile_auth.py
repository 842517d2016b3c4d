"""Issue #16's authentication rows, sent to running Ringmon processes as a hostile client would.

Standalone (``ringmon standalone``, SQLite): 200 parallel wrong logins reach the password
check at most ``free_failures`` times (``ringmon_web_login_attempts_total``), a stranger's
failures do not keep the user out from another address (127.0.0.2, still loopback), a
session cookie replayed after logout or after a password change is refused, also after a
restart, while a session that was not ended survives the restart; a cross-site form POST is
refused. ``ringmon alerter`` (SQLite, then Cassandra): a cross-site ``text/plain`` silence is
refused, calls without the token or with a wrong one are 401, a foreign ``Origin`` 403, a
non-JSON state change 415, and a silence's author is the user the web forwards. Cluster
(real ZooKeeper and Cassandra): two ``ringmon web`` processes share sessions, so a logout
on one ends the session on the other.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import pytest

from alerting.api_auth import USER_HEADER, bearer
from alerting.service import AlerterSettings
from services.zookeeper.zkserver import free_port
from web.auth import CSRF_COOKIE, SESSION_COOKIE, hash_password

ROOT = Path(__file__).resolve().parent.parent
PASSWORD = "correct horse"
FREE_FAILURES = 5  # web.login_limits.free_failures default
EVIL = "http://evil.example"


class Proc:
    """One ringmon subprocess with its log; ``start`` waits (bounded) until ``ready`` answers."""

    def __init__(self, tmp: Path, name: str, args: list[str], ready: str) -> None:
        self.tmp, self.name, self.args, self.ready = tmp, name, args, ready
        self.proc: subprocess.Popen | None = None

    def log(self) -> str:
        return (self.tmp / f"{self.name}.log").read_text(errors="replace")[-3000:]

    async def start(self) -> Proc:
        out = open(self.tmp / f"{self.name}.log", "ab")  # noqa: SIM115 - the child writes it until stopped
        self.proc = subprocess.Popen([sys.executable, "-m", "cli.main", *self.args], cwd=ROOT, stdout=out,
                                     stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        out.close()
        deadline = time.monotonic() + 90
        async with aiohttp.ClientSession() as http:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise AssertionError(f"{self.name} exited:\n{self.log()}")
                try:
                    async with http.get(self.ready, timeout=aiohttp.ClientTimeout(total=2)) as r:
                        if r.status == 200:
                            return self
                except (aiohttp.ClientError, TimeoutError):
                    pass
                await asyncio.sleep(0.2)
        raise AssertionError(f"{self.name} not ready in 90 s:\n{self.log()}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


class Browser:
    """A cookie-keeping client; ``source`` sets the client address (any 127/8 address is loopback)."""

    def __init__(self, base: str, source: str = "127.0.0.1") -> None:
        self.base = base
        self.http = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True),
                                          connector=aiohttp.TCPConnector(local_addr=(source, 0), limit=0))

    async def text(self, path: str) -> str:
        async with self.http.get(self.base + path, allow_redirects=False) as r:
            return await r.text()

    async def csrf(self) -> str:
        m = re.search(r'name="csrf_token" value="([^"]+)"', await self.text("/login"))
        assert m
        return m.group(1)

    async def login(self, password: str = PASSWORD, token: str | None = None) -> int:
        data = {"username": "ops", "password": password, "csrf_token": token or await self.csrf(), "next": "/"}
        async with self.http.post(self.base + "/login", data=data, allow_redirects=False) as r:
            await r.read()
            return r.status

    async def logout(self) -> int:
        page = await self.text("/")
        token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
        async with self.http.post(self.base + "/logout", data={"csrf_token": token}, allow_redirects=False) as r:
            return r.status

    def session_cookie(self) -> str:
        (value,) = [c.value for c in self.http.cookie_jar if c.key == SESSION_COOKIE]
        return value

    async def close(self) -> None:
        await self.http.close()


async def logged_in_as(base: str, cookie: str) -> str | None:
    """The user the page header shows for a bare replay of ``cookie`` (None: not logged in)."""
    async with aiohttp.ClientSession() as http, http.get(base + "/", headers={"Cookie": f"{SESSION_COOKIE}={cookie}"}) as r:
        m = re.search(r'<span class="user">([^<]+)</span>', await r.text())
    return m.group(1) if m else None


async def password_checks(base: str) -> float:
    """``ringmon_web_login_attempts_total`` whose password was checked (success + wrong)."""
    async with aiohttp.ClientSession() as http, http.get(base + "/metrics") as r:
        text = await r.text()
    return sum(float(v) for v in re.findall(
        r'^ringmon_web_login_attempts_total\{result="(?:success|wrong)"\} (\S+)$', text, re.M))


async def parallel_wrong_logins(base: str, n: int = 200) -> dict[int, int]:
    """``n`` wrong logins at once from one client; returns {HTTP status: count}."""
    b = Browser(base)
    try:
        token = await b.csrf()
        statuses = await asyncio.gather(*(b.login("wrong guess", token) for _ in range(n)))
    finally:
        await b.close()
    out: dict[int, int] = {}
    for s in statuses:
        out[s] = out.get(s, 0) + 1
    return out


async def check_logins(base: str) -> None:
    """The throttling rows against one web server: parallel guesses, then the real user elsewhere."""
    before = await password_checks(base)
    statuses = await parallel_wrong_logins(base)
    checked = await password_checks(base) - before
    print(f"\n{base}: 200 parallel wrong logins -> {checked:.0f} password checks, HTTP statuses {statuses}")
    assert checked <= FREE_FAILURES, (checked, statuses)
    assert statuses.get(401, 0) == checked and statuses.get(429, 0) == 200 - checked, statuses
    stranger = Browser(base)  # the guesser, now with the right password: still waits
    user = Browser(base, source="127.0.0.2")  # the real user at another address: not locked out
    try:
        assert await stranger.login() == 429
        assert await user.login() == 303
        assert await logged_in_as(base, user.session_cookie()) == "ops"
    finally:
        await stranger.close()
        await user.close()


def standalone_config(tmp: Path, port: int, password: str = PASSWORD) -> Path:
    cfg = tmp / "standalone.yaml"
    cfg.write_text(json.dumps({
        "data_dir": str(tmp / "data"),
        "storage": {"sqlite": {"path": str(tmp / "ringmon.db")}},
        "web": {"listen": f"127.0.0.1:{port}", "users": {"ops": hash_password(password, n=2**10)},
                "session_secret": "a stable secret for the test"},
    }))
    return cfg


@pytest.mark.slow
async def test_standalone_logins_and_sessions(tmp_path: Path) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    cfg = standalone_config(tmp_path, port)
    proc = await Proc(tmp_path, "standalone", ["standalone", "--config", str(cfg)], base + "/-/ready").start()
    try:
        await check_logins(base)

        # a form posted from another site (text/plain, foreign Origin, no CSRF token) changes nothing
        async with aiohttp.ClientSession() as http, http.post(
                base + "/logout", data="x=1", headers={"Content-Type": "text/plain", "Origin": EVIL}) as r:
            assert r.status == 403
        async with aiohttp.ClientSession() as http, http.post(
                base + "/logout", data="x=1", headers={"Origin": "http://[not-a-host"}) as r:
            assert r.status == 403  # an Origin that is no URL is another site, not a 500
        # cookies and form fields that are not ASCII or not UTF-8: read as no session, a wrong token
        for cookie in (b"x.\xc3\xa9", b"\xff.abc", b"\xed\xa0\x80.x"):
            assert await raw_status(base, b"GET /login HTTP/1.1\r\nHost: x\r\nCookie: " + SESSION_COOKIE.encode()
                                    + b"=" + cookie + b"\r\nConnection: close\r\n\r\n") == 200, cookie
        for token in (b"%ff", b"%c3%a9", b"%ed%a0%80"):
            body = b"username=ops&password=x&csrf_token=" + token
            assert await raw_status(base, b"POST /login HTTP/1.1\r\nHost: x\r\nCookie: " + CSRF_COOKIE.encode()
                                    + b"=abc\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: "
                                    + str(len(body)).encode() + b"\r\nConnection: close\r\n\r\n" + body) == 403, token

        ended, kept = Browser(base, "127.0.0.3"), Browser(base, "127.0.0.4")
        try:
            assert await ended.login() == 303 and await kept.login() == 303
            ended_cookie, kept_cookie = ended.session_cookie(), kept.session_cookie()
            assert await logged_in_as(base, ended_cookie) == "ops"
            assert await ended.logout() == 303
            assert await logged_in_as(base, ended_cookie) is None  # replay after logout
            assert await logged_in_as(base, kept_cookie) == "ops"
        finally:
            await ended.close()
            await kept.close()

        proc.stop()
        proc = await proc.start()  # same config, same data dir
        assert await logged_in_as(base, ended_cookie) is None  # still ended after a restart
        assert await logged_in_as(base, kept_cookie) == "ops"  # sessions are kept across restarts

        proc.stop()
        standalone_config(tmp_path, port, password="a new password")  # the password changes
        proc = await proc.start()
        assert await logged_in_as(base, kept_cookie) is None  # made with the old password: void
        b = Browser(base, "127.0.0.5")
        try:
            assert await b.login("a new password") == 303
        finally:
            await b.close()
    finally:
        proc.stop()


async def raw_status(base: str, request: bytes) -> int:
    """Send ``request`` as bytes (headers a client library would refuse to write) and read the status."""
    host, port = base.removeprefix("http://").rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(request)
        await writer.drain()
        return int((await reader.readline()).split()[1])
    finally:
        writer.close()


async def check_alerter_api(base: str, token: str) -> None:
    """Every refusal of the alerter's API, then the same calls done right."""
    forged = json.dumps({"matchers": 'alertname=~".+"', "created_by": "the boss", "comment": "x", "duration": "7d"})
    auth = bearer(token)
    async with aiohttp.ClientSession() as http:
        async def status(method: str, path: str, headers: dict | None = None, data: str | None = None) -> int:
            async with http.request(method, base + path, headers=headers or {}, data=data) as r:
                await r.read()
                return r.status

        # the cross-site silence of the issue: text/plain, foreign Origin, no token
        assert await status("POST", "/api/v1/silences", {"Content-Type": "text/plain", "Origin": EVIL}, forged) == 403
        assert await status("POST", "/api/v1/silences", {"Content-Type": "text/plain"}, forged) == 401
        for method, path in (("GET", "/api/v1/silences"), ("GET", "/api/v1/alerts"), ("GET", "/api/v1/rules"),
                             ("DELETE", "/api/v1/silence/x"), ("POST", "/-/reload")):
            assert await status(method, path) == 401, (method, path)
            assert await status(method, path, bearer("wrong-token-0123456789")) == 401, (method, path)
            assert await status(method, path, {**auth, "Origin": EVIL}) == 403, (method, path)
        # headers that are not what they claim: an Origin that is no URL, a token that is not UTF-8
        assert await status("GET", "/api/v1/alerts", {**auth, "Origin": "http://[not-a-host"}) == 403
        assert await raw_status(base, b"GET /api/v1/alerts HTTP/1.1\r\nHost: x\r\n"
                                      b"Authorization: Bearer \xff\xfe\r\nConnection: close\r\n\r\n") == 401
        assert await status("POST", "/api/v1/silences", {**auth, "Content-Type": "text/plain"}, forged) == 415
        assert await status("POST", "/api/v1/silences", {**auth, "Content-Type": "application/x-www-form-urlencoded"},
                            "matchers=x") == 415
        async with http.get(base + "/api/v1/silences", headers=auth) as r:
            assert r.status == 200 and (await r.json())["data"] == []  # none of the above made one
        for path in ("/metrics", "/-/healthy", "/-/ready"):  # no alert data: open to scrapers and probes
            assert await status("GET", path) == 200, path

        # done right: the web's call, with its user as the author whatever the body says
        headers = {**auth, "Content-Type": "application/json", USER_HEADER: "ops", "Origin": base}
        async with http.post(base + "/api/v1/silences", headers=headers, data=forged) as r:
            assert r.status == 200, await r.text()
            silence = (await r.json())["data"]
        assert silence["created_by"] == "ops"
        assert await status("DELETE", f"/api/v1/silence/{silence['id']}", auth) == 200
        assert await status("POST", "/-/reload", auth) == 200


def alerting_file(tmp: Path, port: int) -> Path:
    p = tmp / "alerting.yaml"
    p.write_text(json.dumps({
        "alerter": {"listen": f"127.0.0.1:{port}", "state_db": str(tmp / "state" / "alerting.db")},
        "route": {"receiver": "nobody"},
        "receivers": [{"name": "nobody"}],
    }))
    return p


async def test_alerter_api_sqlite(tmp_path: Path) -> None:
    assert AlerterSettings().listen.startswith("127.0.0.1:")  # loopback unless configured otherwise
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    alerting = alerting_file(tmp_path, port)
    proc = await Proc(tmp_path, "alerter", ["alerter", "--sqlite", str(tmp_path / "s.db"), "--alerting", str(alerting)],
                      base + "/-/ready").start()
    try:
        token_file = tmp_path / "state" / "alerter-api-token"  # made on first start, next to state_db
        assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
        await check_alerter_api(base, token_file.read_text().strip())
        proc.stop()
        token = token_file.read_text()
        proc = await proc.start()
        assert token_file.read_text() == token  # kept, not re-made
    finally:
        proc.stop()


@pytest.mark.zookeeper
async def test_cluster_alerter_and_web_processes(tmp_path: Path, zookeeper, zk_root, cassandra,
                                                 cassandra_storage) -> None:
    """``ringmon alerter`` and two ``ringmon web`` on real ZooKeeper and Cassandra."""
    a_port, w1_port, w2_port = free_port(), free_port(), free_port()
    alerting = alerting_file(tmp_path, a_port)
    doc = {
        "storage": {"backend": "cassandra", "cassandra": {
            "hosts": [cassandra.host], "port": cassandra.port, "keyspace": cassandra_storage.keyspace,
            "spool_dir": str(tmp_path / "spool")}},
        "discovery": {"zookeeper": {"hosts": zookeeper.hosts, "session_timeout": "4s"}},
        "web": {"users": {"ops": hash_password(PASSWORD, n=2**10)}, "session_secret": "cluster secret"},
        "data_dir": str(tmp_path / "data"),
        "alerting": str(alerting),
    }
    cfg = tmp_path / "ringmon.yaml"
    cfg.write_text(json.dumps(doc))
    a_base, w1, w2 = (f"http://127.0.0.1:{p}" for p in (a_port, w1_port, w2_port))
    zk = ["--zookeeper-root", zk_root]
    alerter = Proc(tmp_path, "alerter", ["alerter", "--config", str(cfg), "--alerting", str(alerting)],
                   a_base + "/-/ready")
    web1 = Proc(tmp_path, "web1", ["web", "--config", str(cfg), "--listen", f"127.0.0.1:{w1_port}", *zk], w1 + "/-/ready")
    web2 = Proc(tmp_path, "web2", ["web", "--config", str(cfg), "--listen", f"127.0.0.1:{w2_port}", *zk], w2 + "/-/ready")
    try:
        await alerter.start()
        await web1.start()
        await web2.start()
        await check_alerter_api(a_base, (tmp_path / "state" / "alerter-api-token").read_text().strip())
        await check_logins(w1)

        b = Browser(w1, "127.0.0.6")
        try:
            assert await b.login() == 303
            cookie = b.session_cookie()
            assert await logged_in_as(w2, cookie) == "ops"  # one session for every web process
            page = await b.text("/alerts")  # the web reaches the alerter with the token
            assert "rule status unavailable" not in page, page[:2000]
            assert await b.logout() == 303
        finally:
            await b.close()
        assert await logged_in_as(w2, cookie) is None  # ended on web1, refused on web2
        web2.stop()
        await web2.start()
        assert await logged_in_as(w2, cookie) is None  # and after a restart
    finally:
        for p in (web2, web1, alerter):
            p.stop()


def test_login_delays_grow_per_user_and_address() -> None:
    """The policy itself, on a clock the test sets: free failures, then doubling waits up to the cap,
    per (user, address); a correct password clears it; another address is never affected."""
    from web.login_throttle import Attempt, LoginThrottle

    t = LoginThrottle(free_failures=3, base_delay_s=10, max_delay_s=40, address_factor=100)
    now = 1000.0
    for _ in range(3):
        assert isinstance(t.begin("ops", "10.0.0.1", now), Attempt)
    waits = []
    for _ in range(5):
        wait = t.begin("ops", "10.0.0.1", now)
        assert isinstance(wait, float) and wait > 0
        waits.append(wait)
        now += wait
        assert isinstance(t.begin("ops", "10.0.0.1", now), Attempt)  # one more try once the wait is over
    assert waits == [10, 20, 40, 40, 40]
    ok = t.begin("ops", "10.0.0.2", now)  # the same user elsewhere: free
    assert isinstance(ok, Attempt)
    t.succeeded(ok)
    assert isinstance(t.begin("ops", "10.0.0.1", now), float)  # the guesser still waits


def test_login_throttle_state_is_bounded_and_keeps_the_recently_used() -> None:
    """A flood of addresses holds at most ``max_keys`` keys; a guesser who keeps trying stays
    counted (used recently), the flood's oldest keys go."""
    from web.login_throttle import Attempt, LoginThrottle

    t = LoginThrottle(free_failures=1, base_delay_s=10, max_delay_s=40, address_factor=1, max_keys=50)
    now = 1000.0
    assert isinstance(t.begin("ops", "10.0.0.1", now), Attempt)
    for i in range(500):
        t.begin("x", f"192.0.2.{i % 250}:{i}", now)
        assert isinstance(t.begin("ops", "10.0.0.1", now), float)  # still waiting: not forgotten
        assert len(t._keys) <= 50
    assert isinstance(t.begin("x", "192.0.2.0:0", now), Attempt)  # the flood's first key was forgotten


def test_logins_behind_a_trusted_proxy_count_the_forwarded_client() -> None:
    from aiohttp.test_utils import make_mocked_request

    from web.auth import Auth

    auth = Auth(trusted_proxies=frozenset({"10.0.0.9"}))

    def address(peer: str, forwarded: str | None) -> str:
        headers = {"X-Forwarded-For": forwarded} if forwarded else {}
        transport = type("T", (), {"get_extra_info": lambda self, k, d=None: (peer, 1) if k == "peername" else d})()
        return auth.client_address(make_mocked_request("POST", "/login", headers=headers, transport=transport))

    assert address("10.0.0.9", "203.0.113.7") == "203.0.113.7"  # through the proxy: the client
    assert address("10.0.0.9", "1.2.3.4, 203.0.113.7") == "203.0.113.7"  # the leftmost hop is the client's to forge
    assert address("10.0.0.9", None) == "10.0.0.9"
    assert address("198.51.100.1", "203.0.113.7") == "198.51.100.1"  # not a trusted proxy: its header is ignored
