"""The scraper's own Prometheus metrics (prometheus-client), one set per registry."""

from __future__ import annotations

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram

DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class ScraperMetrics:
    """Counters and gauges labelled by scraper (pool) name."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.scrapes = Counter("ringmon_scraper_scrapes_total", "Scrapes attempted.", ["scraper"],
                               registry=registry)
        self.failures = Counter("ringmon_scraper_scrape_failures_total", "Scrapes rejected, by reason.",
                                ["scraper", "reason"], registry=registry)
        self.duration = Histogram("ringmon_scraper_scrape_duration_seconds",
                                  "Time from request to samples handed to the writer.", ["scraper"],
                                  buckets=DURATION_BUCKETS, registry=registry)
        self.samples = Counter("ringmon_scraper_samples_appended_total",
                               "Samples (scraped, synthetic and stale markers) appended to the writer.",
                               ["scraper"], registry=registry)
        self.samples_dropped = Counter("ringmon_scrape_samples_dropped_total",
                                       "Scraped samples dropped for their timestamps (outside the raw retention "
                                       "or too far ahead), per target and reason.",
                                       ["scraper", "target", "reason"], registry=registry)
        self.queue_depth = Gauge("ringmon_scraper_writer_queue_depth", "Batches waiting in the sample writer.",
                                 ["scraper"], registry=registry)
        self.targets = Gauge("ringmon_scraper_targets", "Targets with a running scrape loop.", ["scraper"],
                             registry=registry)


_BY_REGISTRY: dict[int, tuple[CollectorRegistry, ScraperMetrics]] = {}


def scraper_metrics(registry: CollectorRegistry | None = None) -> ScraperMetrics:
    """The metric set registered on ``registry`` (the global one by default), created once."""
    reg = registry if registry is not None else REGISTRY
    hit = _BY_REGISTRY.get(id(reg))
    if hit is None or hit[0] is not reg:
        hit = (reg, ScraperMetrics(reg))
        _BY_REGISTRY[id(reg)] = hit
    return hit[1]
