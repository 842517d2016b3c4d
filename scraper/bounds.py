"""Time rules of scraped samples: explicit timestamps the store would not keep, or that go
back in time within one scrape, are dropped.

A sample whose exposition timestamp is older than the raw retention (what the store keeps
of raw samples, ``storage.schema.DEFAULT_TTLS_S["raw_recent"]``: the Cassandra TTL and the
horizon the rollup job applies to SQLite) would be deleted at once or never read; one more
than ``FUTURE_TOLERANCE_MS`` (10 minutes) ahead of the scrape is a broken clock. Both are
dropped, the rest of the scrape is written, and the loop counts them per target and reason,
as Prometheus drops samples outside its head's bounds ("out of bounds") and counts them.
Within one scrape, a series' sample whose own timestamp is before (``out_of_order``) or equal
to (``duplicate_timestamp``) that of an earlier sample of it in the body is dropped too, as
Prometheus's head appender refuses it (the first one wins). Samples stamped with the scrape
time are never out of bounds. The lower bound is the default
raw retention: a Cassandra keyspace created with another ``raw_recent`` TTL does not move it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from scraper.fastpath import ScrapeOutcome
from storage.schema import DEFAULT_TTLS_S

TOO_OLD = "too_old"
TOO_FAR_IN_FUTURE = "too_far_in_future"
OUT_OF_ORDER = "out_of_order"
DUPLICATE_TIMESTAMP = "duplicate_timestamp"
# how long the store keeps a raw sample (its TTL): an older explicit timestamp is dropped at
# scrape time (queries read raw over a shorter horizon: storage.rollup.QUERY_RAW_HORIZON_MS)
STORE_RAW_KEEP_MS = DEFAULT_TTLS_S["raw_recent"] * 1000
FUTURE_TOLERANCE_MS = 10 * 60_000


@dataclass(frozen=True)
class Dropped:
    """The samples one scrape dropped: how many per reason, and the bounds they fell outside."""

    counts: dict[str, int]
    oldest_ms: int
    newest_ms: int

    def describe(self) -> str:
        """For the target's health record: ``samples dropped: 2 too old (timestamp before ...)``."""
        def rfc3339_ms(ms: int) -> str:
            return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")

        why = {
            TOO_OLD: f"too old (timestamp before {rfc3339_ms(self.oldest_ms)}, the raw retention)",
            TOO_FAR_IN_FUTURE: f"too far in the future (timestamp after {rfc3339_ms(self.newest_ms)}, "
                               f"scrape time + {FUTURE_TOLERANCE_MS // 60_000} min)",
            OUT_OF_ORDER: "out of order (before an earlier sample of the series in the body)",
            DUPLICATE_TIMESTAMP: "with the timestamp of an earlier sample of the series in the body",
        }
        return "samples dropped: " + "; ".join(f"{n} {why[r]}" for r, n in sorted(self.counts.items()) if n)


def drop_out_of_bounds(out: ScrapeOutcome, now_ms: int, *, retention_ms: int = STORE_RAW_KEEP_MS,
                       future_ms: int = FUTURE_TOLERANCE_MS) -> Dropped | None:
    """Remove the samples of ``out`` whose explicit timestamp is outside
    ``[now_ms - retention_ms, now_ms + future_ms]`` or not after that of an earlier sample of
    the same series in the body; None when there were none.

    ``out.series``/``out.values`` are replaced, never edited in place (the scrape cache
    keeps the series list of its last scrape)."""
    if not out.explicit_ts:
        return None
    lo, hi = now_ms - retention_ms, now_ms + future_ms
    bad = {i: (TOO_OLD if ts < lo else TOO_FAR_IN_FUTURE) for i, ts in out.explicit_ts if not lo <= ts <= hi}
    if len(out.explicit_ts) > 1:
        last: dict[int, int] = {}
        series = out.series
        for i, ts in out.explicit_ts:  # in body order
            if i in bad:
                continue
            sid = series[i].id
            prev = last.get(sid)
            if prev is not None and ts <= prev:
                bad[i] = OUT_OF_ORDER if ts < prev else DUPLICATE_TIMESTAMP
            else:
                last[sid] = ts
    if not bad:
        return None
    counts: dict[str, int] = {}
    for reason in bad.values():
        counts[reason] = counts.get(reason, 0) + 1
    out.drop(bad)
    out.series_added = len(out.added)  # a series whose samples were all dropped was not added
    return Dropped(counts, lo, hi)
