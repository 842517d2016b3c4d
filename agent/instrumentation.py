"""Application instrumentation for aiohttp servers: request counts and latency histograms.

``instrument_middleware(registry)`` returns an aiohttp middleware that counts every
handled request in ``http_requests_total{method,code}`` and observes its duration in
``http_request_duration_seconds{method}`` (a histogram), both registered in ``registry``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Histogram

from common.http_timing import timed_middleware

# Latency buckets from 1 ms to 10 s: fine enough for local handlers, wide enough for slow ones.
DEFAULT_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

# Methods outside this set are counted as "other" so a client cannot blow up label cardinality.
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "CONNECT", "TRACE"})


@dataclass(frozen=True)
class HttpMetrics:
    """The two request metrics of one registry."""

    requests: Counter
    duration: Histogram

    @classmethod
    def create(cls, registry: CollectorRegistry, buckets: tuple[float, ...] = DEFAULT_BUCKETS) -> HttpMetrics:
        requests = Counter(
            "http_requests",
            "HTTP requests handled, by method and status code.",
            ["method", "code"],
            registry=registry,
        )
        duration = Histogram(
            "http_request_duration_seconds",
            "Time to handle an HTTP request, by method.",
            ["method"],
            buckets=buckets,
            registry=registry,
        )
        return cls(requests, duration)

    def observe(self, method: str, code: int, seconds: float) -> None:
        m = method.upper()
        if m not in KNOWN_METHODS:
            m = "other"
        self.requests.labels(m, str(code)).inc()
        self.duration.labels(m).observe(seconds)


def instrument_middleware(
    registry: CollectorRegistry,
    *,
    should_instrument: Callable[[web.Request], bool] | None = None,
    buckets: tuple[float, ...] = DEFAULT_BUCKETS,
    metrics: HttpMetrics | None = None,
) -> Callable:
    """An aiohttp middleware recording every request ``should_instrument`` accepts (default: all).

    Handler exceptions are counted with their HTTP status (``common.http_timing``) and re-raised
    unchanged.
    """
    m = metrics or HttpMetrics.create(registry, buckets)
    middleware = timed_middleware(lambda request, code, seconds: m.observe(request.method, code, seconds),
                                  should_instrument)
    middleware.metrics = m  # type: ignore[attr-defined]  # for callers that want to read them
    return middleware
