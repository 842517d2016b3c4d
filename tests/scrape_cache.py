"""``run_cache``: a ``ScrapeCache.process`` generator driven to its end in one go (a scrape loop
does the same with event-loop yields between chunks); its ``ScrapeOutcome`` is returned, parse and
limit errors propagate."""

from __future__ import annotations

from scraper.fastpath import ScrapeCache, ScrapeOutcome
from scraper.lenient import FMT_TEXT


def run_cache(cache: ScrapeCache, body: bytes, fmt: str = FMT_TEXT) -> ScrapeOutcome:
    proc = cache.process(body, fmt)
    try:
        while True:
            next(proc)
    except StopIteration as stop:
        outcome: ScrapeOutcome = stop.value
        return outcome
