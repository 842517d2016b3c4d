"""Target labels and scrape URL of a target after ``relabel_configs`` (Prometheus semantics)."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlencode

from discovery.target import Target
from scraper.config import ScrapeConfig
from scraper.relabel import relabel


def _duration(seconds: float) -> str:
    """As Prometheus' ``model.Duration`` prints it: ``1m``, ``1m30s``, ``500ms``."""
    ms = round(seconds * 1000)
    if ms <= 0:
        return "0s"
    out = []
    for unit, size in (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000), ("ms", 1)):
        n, ms = divmod(ms, size)
        if n:
            out.append(f"{n}{unit}")
    return "".join(out)


@dataclass(frozen=True)
class ResolvedTarget:
    """What a scrape loop needs: the final target labels and URL."""

    labels: dict[str, str]
    url: str
    address: str


def discovered_labels(target: Target) -> dict[str, str]:
    """The target's labels before relabelling (Prometheus' ``discoveredLabels``)."""
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
    return labels


def resolve_target(target: Target, config: ScrapeConfig) -> ResolvedTarget | None:
    """Apply relabel_configs to the discovered labels; None when the target is dropped."""
    labels = discovered_labels(target)
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
