"""Whether a request comes from another site: its ``Origin`` header against the host it was
sent to. One check for the web's forms (CSRF) and the alerter's API; an ``Origin`` that does
not parse as a URL counts as another site (a 403, not a traceback)."""

from __future__ import annotations

from urllib.parse import urlsplit

from aiohttp import web


def foreign_origin(request: web.Request, *, null_is_foreign: bool) -> bool:
    """True when the browser says the request was made by a page of another site. ``Origin:
    null`` (sandboxed pages, some redirects) counts as foreign only when ``null_is_foreign``."""
    origin = request.headers.get("Origin")
    if not origin:
        return False
    if origin == "null":
        return null_is_foreign
    try:
        return urlsplit(origin).netloc != request.host
    except ValueError:
        return True
