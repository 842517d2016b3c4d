"""The per-target scrape status the web pages and the API show."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

UP = "up"
DOWN = "down"
UNKNOWN = "unknown"


@dataclass
class TargetHealth:
    """The last scrape of one target as seen by its scrape loop."""

    target: str  # pool/host:port
    pool: str
    address: str
    url: str
    health: str = UNKNOWN  # up | down | unknown
    last_scrape: float = 0.0  # unix seconds of the last scrape start, 0 = never
    last_duration_s: float = 0.0
    last_error: str = ""
    samples_scraped: int = 0
    interval_s: float = 0.0
    labels: dict[str, str] | None = None  # target labels after relabel_configs
    # samples dropped for their timestamps (scraper.bounds), per reason, since the loop started
    samples_dropped: dict[str, int] = field(default_factory=dict)
    last_drop: str = ""  # what the last scrape that dropped samples dropped, and why
    last_drop_at: float = 0.0  # unix seconds of that scrape
    timeout_s: float = 0.0
    discovered_labels: dict[str, str] | None = None  # before relabel_configs

    def to_dict(self) -> dict:
        return asdict(self)
