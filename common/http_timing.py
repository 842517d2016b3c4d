"""The core of every request-metrics middleware: time a request, take the status it was
answered with (an ``HTTPException``'s own, 500 for any other exception, 499 when the client
went away first, nginx's convention) and hand both to an ``observe`` callback. The host
agent's ``http_requests_total`` and the web server's ``ringmon_web_*`` record through it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

Observe = Callable[[web.Request, int, float], None]  # (request, status code, seconds)


def timed_middleware(observe: Observe, should_time: Callable[[web.Request], bool] | None = None) -> Middleware:
    """An aiohttp middleware calling ``observe`` once per request ``should_time`` accepts
    (default: all); handler exceptions are re-raised unchanged."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if should_time is not None and not should_time(request):
            return await handler(request)
        started = time.perf_counter()
        code = 500
        try:
            response = await handler(request)
            code = response.status
            return response
        except web.HTTPException as exc:
            code = exc.status
            raise
        except asyncio.CancelledError:
            code = 499
            raise
        finally:
            observe(request, code, time.perf_counter() - started)

    return middleware
