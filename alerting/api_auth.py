"""Who may call the alerter's HTTP API: one bearer token, same-origin only, JSON state changes.

The token comes from ``alerter.api_token`` or the file ``alerter.api_token_file`` (default:
``alerter-api-token`` next to ``alerter.state_db``); a missing file is created with a random
token (mode 0600) by whichever process starts first, so ``ringmon alerter`` and ``ringmon web``
reading the same alerting file share it with no setup. ``api_middleware`` then refuses, in
this order: a request whose ``Origin`` is another site (403), a call without the token (401,
``/metrics`` and the health checks aside), a state change whose body is not JSON (415).
The web forwards its logged-in user in ``USER_HEADER``; the alerter records it as a silence's
author, so the body cannot name someone else.
"""

from __future__ import annotations

import hmac
import os
import secrets
from pathlib import Path

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from common.origin import foreign_origin

TOKEN_FILE_NAME = "alerter-api-token"
USER_HEADER = "X-Ringmon-User"
OPEN_PATHS = frozenset({"/metrics", "/-/healthy", "/-/ready"})  # no alert data; scraped and probed
STATE_CHANGES = frozenset({"POST", "PUT", "PATCH", "DELETE"})


class ApiTokenError(ValueError):
    """The token file cannot be read or made; the message names the file."""


def token_path(api_token_file: str, state_db: str) -> Path:
    """The token file: ``api_token_file``, else ``alerter-api-token`` next to the state database."""
    if api_token_file:
        return Path(api_token_file)
    base = Path(state_db).parent if state_db and state_db != ":memory:" else Path("data")
    return base / TOKEN_FILE_NAME


def load_or_create_token(path: Path) -> str:
    """The token in ``path``; a missing file is created with a random token, readable only by us.
    Two processes starting at once agree: the full file is linked into place, the loser reads it."""
    if not path.exists():
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(secrets.token_urlsafe(32) + "\n")
            try:
                os.link(tmp, path)
            except FileExistsError:
                pass
            finally:
                tmp.unlink()
        except OSError as exc:
            raise ApiTokenError(f"{path}: cannot create the alerter API token file: {exc.strerror or exc}") from None
    try:
        token = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ApiTokenError(f"{path}: cannot read the alerter API token: {exc}") from None
    if len(token) < 16:
        raise ApiTokenError(f"{path}: the alerter API token must be at least 16 characters")
    return token


def resolve_token(api_token: str, api_token_file: str, state_db: str) -> str:
    """``api_token`` when set, else the token file's (made when absent)."""
    if api_token:
        if len(api_token) < 16:
            raise ApiTokenError("alerter.api_token: must be at least 16 characters")
        return api_token
    return load_or_create_token(token_path(api_token_file, state_db))


def bearer(token: str) -> dict[str, str]:
    """The request header that carries ``token``."""
    return {"Authorization": f"Bearer {token}"}


def _error(status: int, message: str, **headers: str) -> web.Response:
    return web.json_response({"status": "error", "errorType": "unauthorized" if status == 401 else "bad_data",
                              "error": message}, status=status, headers=headers or None)


def api_middleware(token: str) -> Middleware:
    """aiohttp middleware enforcing origin, token and JSON bodies (see the module docstring)."""
    want = f"Bearer {token}".encode()

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if foreign_origin(request, null_is_foreign=True):
            return _error(403, "cross-origin requests are refused")
        if request.path not in OPEN_PATHS:
            got = request.headers.get("Authorization", "").encode("utf-8", "surrogatepass")
            if not hmac.compare_digest(got, want):
                return _error(401, "missing or wrong API token (Authorization: Bearer <token>; "
                                   "see alerter.api_token_file)", **{"WWW-Authenticate": 'Bearer realm="ringmon"'})
        if request.method in STATE_CHANGES and (request.body_exists or request.content_type != "application/octet-stream"):
            if request.content_type != "application/json":
                return _error(415, "state changes take a JSON body (Content-Type: application/json)")
        return await handler(request)

    return middleware
