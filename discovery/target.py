"""The scrape target model shared by static-file and ZooKeeper discovery."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class ScrapeSettings:
    """How a pool's hosts are scraped."""

    interval_s: float = 10.0
    timeout_s: float = 5.0
    path: str = "/metrics"
    scheme: str = "http"
    labels: tuple[tuple[str, str], ...] = ()

    def to_dict(self) -> dict:
        return {
            "interval": self.interval_s,
            "timeout": self.timeout_s,
            "path": self.path,
            "scheme": self.scheme,
            "labels": dict(self.labels),
        }


@dataclass(frozen=True)
class Target:
    """One endpoint to scrape: a host of a pool.

    ``key`` (``pool/host:port``) places the target on the scraper ring and partitions
    its recent raw samples.
    """

    pool: str
    address: str  # host:port
    settings: ScrapeSettings = field(default_factory=ScrapeSettings)
    status: str = "ALIVE"  # serverset status: ALIVE, STOPPING, ...

    @property
    def key(self) -> str:
        return f"{self.pool}/{self.address}"

    @property
    def url(self) -> str:
        return f"{self.settings.scheme}://{self.address}{self.settings.path}"

    def target_labels(self) -> dict[str, str]:
        """Labels every series of this target gets: job (the pool), instance, pool extras."""
        out = {"job": self.pool, "instance": self.address}
        out.update(dict(self.settings.labels))
        return out
