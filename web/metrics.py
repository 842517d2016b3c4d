"""The web server's own metrics, the same in standalone and cluster mode: requests answered by
handler and status code, and the time to answer them (``ringmon_web_*``)."""

from __future__ import annotations

from aiohttp import web
from aiohttp.typedefs import Middleware
from prometheus_client import CollectorRegistry, Counter, Histogram

from common.http_timing import timed_middleware

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
        return timed_middleware(self._observe)

    def _observe(self, request: web.Request, code: int, seconds: float) -> None:
        route = request.match_info.route
        name = getattr(route, "name", None) or (route.resource.canonical if route.resource else "unmatched")
        self.requests.labels(name, str(code)).inc()
        self.latency.labels(name).observe(seconds)
