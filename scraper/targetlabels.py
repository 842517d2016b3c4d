"""Target labels and scrape URL of a target after ``relabel_configs`` (Prometheus semantics)."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlencode

from discovery.target import Target
from scraper.config import ScrapeConfig
from scraper.relabel import relabel


def _duration(seconds: float) -> str:
    ms = round(seconds * 1000)
    return f"{ms // 1000}s" if ms % 1000 == 0 else f"{ms}ms"


@dataclass(frozen=True)
class ResolvedTarget:
    """What a scrape loop needs: the final target labels and URL."""

    labels: dict[str, str]
    url: str
    address: str


def resolve_target(target: Target, config: ScrapeConfig) -> ResolvedTarget | None:
    """Apply relabel_configs to the discovered labels; None when the target is dropped."""
    s = target.settings
    labels: dict[str, str] = {
        "__address__": target.address,
        "__scheme__": s.scheme,
        "__metrics_path__": s.path,
        "__scrape_interval__": _duration(s.interval_s),
        "__scrape_timeout__": _duration(s.timeout_s),
        "__meta_ringmon_pool": target.pool,
        "__meta_ringmon_status": target.status,
        "job": target.pool,
    }
    labels.update(dict(s.labels))
    if config.relabel_configs:
        res = relabel(labels, config.relabel_configs)
        if res is None:
            return None
        labels = res
    address = labels.get("__address__", "")
    if not address:
        return None
    labels.setdefault("instance", address)
    if not labels["instance"]:
        labels["instance"] = address
    params = {k[len("__param_"):]: v for k, v in labels.items() if k.startswith("__param_")}
    url = f"{labels.get('__scheme__') or 'http'}://{address}{labels.get('__metrics_path__') or '/metrics'}"
    if params:
        url += ("&" if "?" in url else "?") + urlencode(params)
    final = {k: v for k, v in labels.items() if not k.startswith("__") and v != ""}
    return ResolvedTarget(final, url, address)
