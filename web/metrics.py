"""The web server's own metrics, the same in standalone and cluster mode: requests answered by
handler and status code, and the time to answer them (``ringmon_web_*``)."""

from __future__ import annotations

import time

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware
from prometheus_client import CollectorRegistry, Counter, Histogram

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class WebMetrics:
    """Request metrics in ``registry`` (a new one by default); ``middleware()`` records them."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.requests = Counter("ringmon_web_requests_total", "HTTP requests answered.", ["handler", "code"],
                                registry=r)
        self.latency = Histogram("ringmon_web_request_duration_seconds", "Time to answer a request.",
                                 ["handler"], buckets=LATENCY_BUCKETS, registry=r)

    def middleware(self) -> Middleware:
        @web.middleware
        async def instrument(request: web.Request, handler: Handler) -> web.StreamResponse:
            route = request.match_info.route
            name = getattr(route, "name", None) or (route.resource.canonical if route.resource else "unmatched")
            started = time.perf_counter()
            code = 500
            try:
                response = await handler(request)
                code = response.status
                return response
            except web.HTTPException as exc:
                code = exc.status
                raise
            finally:
                self.requests.labels(name, str(code)).inc()
                self.latency.labels(name).observe(time.perf_counter() - started)

        return instrument
