"""A set of scrape loops kept in step with the discovered targets, over one HTTP session."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

import aiohttp
from prometheus_client import CollectorRegistry

from discovery.target import Target
from scraper.config import ScrapeConfig
from scraper.health import TargetHealth
from scraper.loop import ScrapeLoop
from scraper.selfmetrics import scraper_metrics
from scraper.targetlabels import discovered_labels, resolve_target
from storage.base import SampleWriter


class ScrapePool:
    """Runs one ``ScrapeLoop`` per target; ``sync`` starts, stops and restarts only what changed.

    ``configs`` maps a pool name to its ``ScrapeConfig`` (limits, relabelling); pools
    without one use ``default_config``.
    """

    def __init__(
        self,
        writer: SampleWriter,
        *,
        name: str = "scraper",
        configs: Mapping[str, ScrapeConfig] | None = None,
        default_config: ScrapeConfig | None = None,
        registry: CollectorRegistry | None = None,
    ) -> None:
        self.writer = writer
        self.name = name
        self.configs: dict[str, ScrapeConfig] = dict(configs or {})
        self.default_config = default_config or ScrapeConfig()
        self.metrics = scraper_metrics(registry)
        self.loops: dict[str, ScrapeLoop] = {}
        self.dropped: dict[str, Target] = {}  # targets relabel_configs dropped
        self._session: aiohttp.ClientSession | None = None
        self._lock = asyncio.Lock()
        self.metrics.queue_depth.labels(name).set_function(writer.queue_depth)

    def config_for(self, pool: str) -> ScrapeConfig:
        return self.configs.get(pool, self.default_config)

    def set_configs(self, configs: Mapping[str, ScrapeConfig]) -> None:
        """Replace the per-pool configs; takes effect at the next ``sync``."""
        self.configs = dict(configs)

    def _session_get(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            # No connection cap: a hanging target must never hold up another target's request.
            connector = aiohttp.TCPConnector(limit=0, limit_per_host=0, ttl_dns_cache=300)
            self._session = aiohttp.ClientSession(connector=connector, cookie_jar=aiohttp.DummyCookieJar())
        return self._session

    async def sync(self, targets: list[Target], configs: Mapping[str, ScrapeConfig] | None = None) -> None:
        """Make the running loops match ``targets`` (and ``configs`` when given)."""
        async with self._lock:
            if configs is not None:
                self.configs = dict(configs)
            wanted: dict[str, tuple[Target, ScrapeConfig]] = {}
            for t in targets:
                wanted[t.key] = (t, self.config_for(t.pool))
            stops = []
            for key, loop in list(self.loops.items()):
                want = wanted.get(key)
                if want is None:
                    stops.append(loop.stop(mark_stale=True))
                    del self.loops[key]
                elif want[0] != loop.target or want[1] != loop.config:
                    stops.append(loop.stop(mark_stale=False))
                    del self.loops[key]
            if stops:
                await asyncio.gather(*stops)
            self.dropped = {}
            session = self._session_get()
            for key, (target, config) in wanted.items():
                if key in self.loops:
                    continue
                resolved = resolve_target(target, config)
                if resolved is None:
                    self.dropped[key] = target
                    continue
                loop = ScrapeLoop(target, self.writer, session, config=config, pool_name=self.name,
                                  metrics=self.metrics, resolved=resolved)
                self.loops[key] = loop
                loop.start()
            self.metrics.targets.labels(self.name).set(len(self.loops))

    async def stop(self) -> None:
        """Stop every loop and close the HTTP session."""
        async with self._lock:
            loops = list(self.loops.values())
            self.loops.clear()
            await asyncio.gather(*(loop.stop() for loop in loops))
            if self._session is not None:
                await self._session.close()
                self._session = None
            self.metrics.targets.labels(self.name).set(0)

    def health(self) -> list[TargetHealth]:
        """Status of every running target, sorted by key."""
        return [self.loops[k].health for k in sorted(self.loops)]

    def dropped_targets(self) -> list[dict]:
        """Targets relabel_configs dropped: ``{"pool", "discoveredLabels"}``, sorted by key."""
        return [{"pool": t.pool, "discoveredLabels": discovered_labels(t)} for _, t in sorted(self.dropped.items())]

    def metadata(self, *, per_target: bool = True, metric: str = "") -> list[dict]:
        """Metric metadata (``[metric, type, help, unit]``) of the running targets, of one
        ``metric`` or all: per target (key, labels, metadata), or one record holding each
        distinct entry once (what ``/api/v1/metadata`` needs, a fraction of the size)."""
        out = []
        for k, loop in sorted(self.loops.items()):
            md = loop.metadata.current
            items = [md[metric]] if metric and metric in md else [] if metric else list(md.values())
            out.append({"key": k, "labels": dict(loop.labels), "metadata": [m.to_list() for m in items]})
        if per_target:
            return out
        distinct = {tuple(item): None for rec in out for item in rec["metadata"]}
        return [{"key": "", "labels": {}, "metadata": [list(item) for item in distinct]}]
