"""Time bounds of scraped samples: explicit timestamps the store would not keep are dropped.

A sample whose exposition timestamp is older than the raw retention (what the store keeps
of raw samples, ``storage.schema.DEFAULT_TTLS_S["raw_recent"]``: the Cassandra TTL and the
horizon the rollup job applies to SQLite) would be deleted at once or never read; one more
than ``FUTURE_TOLERANCE_MS`` (10 minutes) ahead of the scrape is a broken clock. Both are
dropped, the rest of the scrape is written, and the loop counts them per target and reason,
as Prometheus drops samples outside its head's bounds ("out of bounds") and counts them.
Samples stamped with the scrape time are never out of bounds. The lower bound is the default
raw retention: a Cassandra keyspace created with another ``raw_recent`` TTL does not move it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from scraper.fastpath import ScrapeOutcome
from storage.schema import DEFAULT_TTLS_S

TOO_OLD = "too_old"
TOO_FAR_IN_FUTURE = "too_far_in_future"
RAW_RETENTION_MS = DEFAULT_TTLS_S["raw_recent"] * 1000
FUTURE_TOLERANCE_MS = 10 * 60_000


@dataclass(frozen=True)
class Dropped:
    """The samples one scrape dropped: how many per reason, and the bounds they fell outside."""

    counts: dict[str, int]
    oldest_ms: int
    newest_ms: int

    def describe(self) -> str:
        """For the target's health record: ``2 samples too old (timestamp before 2026-...)``."""
        def rfc3339_ms(ms: int) -> str:
            return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")

        parts = []
        if self.counts.get(TOO_OLD):
            parts.append(f"{self.counts[TOO_OLD]} too old (timestamp before {rfc3339_ms(self.oldest_ms)}, "
                         f"the raw retention)")
        if self.counts.get(TOO_FAR_IN_FUTURE):
            parts.append(f"{self.counts[TOO_FAR_IN_FUTURE]} too far in the future (timestamp after "
                         f"{rfc3339_ms(self.newest_ms)}, scrape time + {FUTURE_TOLERANCE_MS // 60_000} min)")
        return "samples dropped: " + "; ".join(parts)


def drop_out_of_bounds(out: ScrapeOutcome, now_ms: int, *, retention_ms: int = RAW_RETENTION_MS,
                       future_ms: int = FUTURE_TOLERANCE_MS) -> Dropped | None:
    """Remove the samples of ``out`` whose explicit timestamp is outside
    ``[now_ms - retention_ms, now_ms + future_ms]``; None when there were none.

    ``out.series``/``out.values`` are replaced, never edited in place (the scrape cache
    keeps the series list of its last scrape)."""
    if not out.explicit_ts:
        return None
    lo, hi = now_ms - retention_ms, now_ms + future_ms
    bad = {i: (TOO_OLD if ts < lo else TOO_FAR_IN_FUTURE) for i, ts in out.explicit_ts if not lo <= ts <= hi}
    if not bad:
        return None
    counts: dict[str, int] = {}
    for reason in bad.values():
        counts[reason] = counts.get(reason, 0) + 1
    keep = [i for i in range(len(out.series)) if i not in bad]
    new_index = {old: new for new, old in enumerate(keep)}
    out.series = [out.series[i] for i in keep]
    out.values = [out.values[i] for i in keep]
    out.explicit_ts = [(new_index[i], ts) for i, ts in out.explicit_ts if i in new_index]
    return Dropped(counts, lo, hi)
