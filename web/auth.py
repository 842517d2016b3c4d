"""Logins, sessions and CSRF tokens for the pages that change things (silences, rule editor).

Users come from the config as ``name -> password hash``; hashes are scrypt with a random
salt (``hash_password``), checked in constant time off the event loop. A session is a
signed cookie (HMAC-SHA256 over a random session id, user, expiry and a fingerprint of the
user's password hash; HttpOnly, SameSite=Lax, so a link from an alert e-mail arrives logged
in while no other site can POST with it) that is valid only while its record is in the
session store (``web/sessions.py``): logout deletes the record, a changed password hash
voids every cookie made with the old one. Failed logins slow down per (user, address)
with growing delays (``web/login_throttle.py``), counted before the password is checked.
Every form carries a CSRF token: the HMAC of a random per-browser cookie, so a page on
another site can neither read nor forge it; every POST without the matching token is refused.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import logging
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware
from prometheus_client import Counter

from common.origin import foreign_origin
from web.login_throttle import Attempt, LoginThrottle
from web.sessions import MemorySessionStore, SessionStore

log = logging.getLogger("ringmon.web.auth")

LOGIN_ATTEMPTS = Counter("ringmon_web_login_attempts_total",
                         "Logins tried: result=success or wrong (the password was checked), throttled (it was not).",
                         ["result"])
SESSION_COOKIE = "ringmon_session"
CSRF_COOKIE = "ringmon_csrf"
CSRF_FIELD = "csrf_token"
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1

# Typed request keys where aiohttp has them (3.12+), plain strings before.
_RequestKey = getattr(web, "RequestKey", None)
USER_KEY = _RequestKey("ringmon_user", object) if _RequestKey else "ringmon_user"
CSRF_KEY = _RequestKey("ringmon_csrf_form_token", str) if _RequestKey else "ringmon_csrf_form_token"
NEW_CSRF_COOKIE_KEY = (
    _RequestKey("ringmon_new_csrf_cookie", str) if _RequestKey else "ringmon_new_csrf_cookie"
)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _raw(text: str) -> bytes:
    """A cookie's or form's text as the bytes it came as: any character, undecodable bytes
    included (kept as surrogates), compares and signs without an error."""
    return text.encode("utf-8", "surrogatepass")


def hash_password(password: str, *, n: int = SCRYPT_N) -> str:
    """``scrypt$<n>$<r>$<p>$<salt>$<hash>`` for the config file's ``password_hash``."""
    if not password:
        raise ValueError("the password must not be empty")
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=n, r=SCRYPT_R, p=SCRYPT_P, dklen=32)
    return f"scrypt${n}${SCRYPT_R}${SCRYPT_P}${_b64(salt)}${_b64(digest)}"


def check_password_hash(encoded: str) -> None:
    """Raise ValueError unless ``encoded`` is a hash ``hash_password`` could have made."""
    parts = encoded.split("$")
    if len(parts) != 6 or parts[0] != "scrypt":
        raise ValueError("expected scrypt$N$r$p$salt$hash (make one with `ringmon hash-password`)")
    try:
        n, r, p = int(parts[1]), int(parts[2]), int(parts[3])
        _unb64(parts[4])
        _unb64(parts[5])
    except (ValueError, TypeError):
        raise ValueError("the scrypt parameters, salt or hash are malformed") from None
    if n < 2**10 or n & (n - 1) or not (1 <= r <= 64) or not (1 <= p <= 16):
        raise ValueError("scrypt parameters out of range")


def verify_password(password: str, encoded: str) -> bool:
    """Whether ``password`` matches ``encoded`` (constant-time compare; False on a bad hash)."""
    try:
        check_password_hash(encoded)
        _, n, r, p, salt, want = encoded.split("$")
        got = hashlib.scrypt(
            password.encode(),
            salt=_unb64(salt),
            n=int(n),
            r=int(r),
            p=int(p),
            dklen=len(_unb64(want)),
            maxmem=2**27,
        )
    except ValueError:
        return False
    return hmac.compare_digest(got, _unb64(want))


@dataclass
class Auth:
    """The users who may log in and the key that signs sessions and CSRF tokens.

    ``secret``: keep it stable across restarts (and equal across web processes) to keep
    sessions valid; a random one is made when none is given.
    """

    users: Mapping[str, str] = field(default_factory=dict)  # name -> password hash
    secret: bytes = field(default_factory=lambda: secrets.token_bytes(32))
    session_ttl_s: float = 12 * 3600
    secure_cookies: bool = False  # set when served over HTTPS
    throttle: LoginThrottle = field(default_factory=LoginThrottle)
    sessions: SessionStore = field(default_factory=MemorySessionStore)
    trusted_proxies: frozenset[str] = frozenset()  # peers whose X-Forwarded-For names the client

    def __post_init__(self) -> None:
        for name, encoded in self.users.items():
            try:
                check_password_hash(encoded)
            except ValueError as exc:
                raise ValueError(f"users.{name}.password_hash: {exc}") from None
        # A user that does not exist still costs one scrypt, so timing does not reveal names.
        self._dummy_hash = hash_password(secrets.token_hex(8))

    @property
    def enabled(self) -> bool:
        return bool(self.users)

    def _sign(self, purpose: str, payload: str) -> str:
        return _b64(hmac.new(self.secret, _raw(f"{purpose}:{payload}"), hashlib.sha256).digest())

    def client_address(self, request: web.Request) -> str:
        """The address logins are counted for: the peer, or behind a trusted proxy the last
        ``X-Forwarded-For`` entry that is not one of the trusted proxies (the others are forgeable)."""
        peer = request.remote or ""
        if peer not in self.trusted_proxies:
            return peer
        hops = [h.strip() for h in request.headers.get("X-Forwarded-For", "").split(",") if h.strip()]
        for hop in reversed(hops):
            if hop not in self.trusted_proxies:
                return hop[:64]
        return peer

    # -- sessions ---------------------------------------------------------------------------

    async def login(self, user: str, password: str, address: str) -> bool | float:
        """True when ``password`` is ``user``'s, False when not, or the seconds to wait when this
        (user, address) or address must slow down (then no password is checked at all)."""
        attempt = self.throttle.begin(user, address)  # counted before the check, no await in between
        if not isinstance(attempt, Attempt):
            LOGIN_ATTEMPTS.labels("throttled").inc()
            return attempt
        ok = await self.authenticate(user, password)
        LOGIN_ATTEMPTS.labels("success" if ok else "wrong").inc()
        if ok:
            self.throttle.succeeded(attempt)
        return ok

    async def authenticate(self, user: str, password: str) -> bool:
        encoded = self.users.get(user)
        loop = asyncio.get_running_loop()
        ok = await loop.run_in_executor(None, verify_password, password, encoded or self._dummy_hash)
        return ok and encoded is not None

    def _fingerprint(self, user: str) -> str:
        """Changes when the user's password hash changes: cookies made before are void."""
        return self._sign("password", self.users.get(user, ""))[:16]

    def session_value(self, user: str, sid: str, exp: int) -> str:
        payload = _b64(json.dumps({"u": user, "exp": exp, "sid": sid, "pw": self._fingerprint(user)},
                                  separators=(",", ":")).encode())
        return f"{payload}.{self._sign('session', payload)}"

    def _session_fields(self, value: str | None, now: float | None = None) -> tuple[str, str] | None:
        """(user, session id) of a well-signed, unexpired cookie of a current user and password."""
        if not value or "." not in value:
            return None
        payload, sig = value.rsplit(".", 1)
        if not hmac.compare_digest(_raw(sig), _raw(self._sign("session", payload))):
            return None
        try:
            data = json.loads(_unb64(payload))
            user, exp, sid, pw = str(data["u"]), float(data["exp"]), str(data["sid"]), str(data["pw"])
        except (ValueError, KeyError, TypeError):
            return None
        if exp < (time.time() if now is None else now) or user not in self.users:
            return None
        if not hmac.compare_digest(pw, self._fingerprint(user)):
            return None
        return user, sid

    async def user_from_session(self, value: str | None, now: float | None = None) -> str | None:
        """The user of a session cookie whose server-side record is still there."""
        fields = self._session_fields(value, now)
        if fields is None:
            return None
        user, sid = fields
        try:
            found = await self.sessions.user(sid, now)
        except Exception as exc:  # noqa: BLE001 - store away: not logged in (pages stay read-only), said in the log
            log.warning("session store unavailable", extra={"error": f"{type(exc).__name__}: {exc}"})
            return None
        return user if found == user else None

    async def start_session(self, response: web.StreamResponse, user: str) -> None:
        sid = secrets.token_urlsafe(24)
        exp = int(time.time() + self.session_ttl_s)
        try:
            await self.sessions.create(sid, user, exp)
        except Exception as exc:  # noqa: BLE001 - one line for the user, not a 500
            log.warning("session store unavailable", extra={"error": f"{type(exc).__name__}: {exc}"})
            raise web.HTTPServiceUnavailable(text="Logins are unavailable: the session store did not answer.") from None
        response.set_cookie(
            SESSION_COOKIE,
            self.session_value(user, sid, exp),
            max_age=int(self.session_ttl_s),
            httponly=True,
            samesite="Lax",
            secure=self.secure_cookies,
            path="/",
        )

    async def end_session(self, request: web.Request, response: web.StreamResponse) -> None:
        """Logout: the session's record goes (the cookie is void everywhere), the cookie too."""
        fields = self._session_fields(request.cookies.get(SESSION_COOKIE))
        if fields is not None:
            await self.sessions.delete(fields[1])
        response.del_cookie(SESSION_COOKIE, path="/")

    # -- CSRF -------------------------------------------------------------------------------

    def csrf_for(self, cookie_value: str) -> str:
        return self._sign("csrf", cookie_value)

    def check_csrf(self, request: web.Request, form: Mapping[str, object]) -> None:
        """Raise 403 unless the form's token matches this browser's CSRF cookie (and, when the
        browser says where the form came from, it came from this site)."""
        if foreign_origin(request, null_is_foreign=False):
            raise web.HTTPForbidden(text="The form was sent from another site.")
        cookie = request.cookies.get(CSRF_COOKIE, "")
        token = str(form.get(CSRF_FIELD, ""))
        if not cookie or not token or not hmac.compare_digest(_raw(token), _raw(self.csrf_for(cookie))):
            raise web.HTTPForbidden(
                text="The form's security token is missing or stale. Reload the page and submit it again."
            )


NO_USER_PATHS = ("/api/", "/static/", "/metrics", "/-/")  # never show or need the user: no session lookup


def auth_middleware(auth: Auth) -> Middleware:
    """Puts the logged-in user and this browser's CSRF form token on every request."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        cookie = request.cookies.get(CSRF_COOKIE, "")
        if len(cookie) < 20:
            cookie = secrets.token_urlsafe(24)
            request[NEW_CSRF_COOKIE_KEY] = cookie
        request[CSRF_KEY] = auth.csrf_for(cookie)
        session = request.cookies.get(SESSION_COOKIE)
        needs_user = not request.path.startswith(NO_USER_PATHS)
        request[USER_KEY] = await auth.user_from_session(session) if session and needs_user else None
        response = await handler(request)
        if (
            NEW_CSRF_COOKIE_KEY in request
            and isinstance(response, web.StreamResponse)
            and not response.prepared
        ):
            response.set_cookie(
                CSRF_COOKIE, cookie, httponly=True, samesite="Lax", secure=auth.secure_cookies, path="/"
            )
        return response

    return middleware


def safe_next(target: str | None) -> str:
    """A local path to return to after login (never another site)."""
    t = (target or "").strip()
    if not t.startswith("/") or t.startswith("//") or "\\" in t or any(ord(c) < 32 for c in t):
        return "/"
    return t
