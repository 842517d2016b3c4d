"""Which stored resolution (raw samples, 1m or 1h rollups) serves a selector, and what the
user is told about it.

The rules (docs/ARCHITECTURE.md, "Query resolution"):

- ``auto`` (the default) while the selector's range is within raw retention: a rollup serves
  only a range function it answers exactly - ``sum/count/min/max/avg/last/present_over_time``,
  ``absent_over_time`` and ``rate/increase/delta`` (the buckets keep what their extrapolation
  reads: ``query.functions.rollup_rate``) - and only when every window is whole buckets. A
  bucket holds the samples of ``[b, b + step)``; PromQL's window is ``(t - range, t]``; they coincide only when
  ``t + 1`` is a bucket boundary (``t`` ends in ``:59.999`` for 1m buckets) and the range is a
  whole number of buckets. Or when ``t`` is on a bucket boundary (a dashboard's grid) and no
  sample sits exactly on a window's edge: the engine checks the buckets' first sample times
  after reading and reads raw samples where one does. Everything else (irate, deriv, stddev,
  quantiles, timestamp(), plain selectors, subqueries, ...) reads raw samples. Buckets written before the rate aggregates
  existed answer rate/increase/delta only approximately: the engine then reads raw samples
  (while kept) or warns (``RATE_FUNCTIONS``).
- ``auto`` beyond raw retention: the finest rollup still kept (or the coarser one the step
  allows) serves every function with its best approximation, and a warning names the function (an exact rollup answer gets
  an info note: the API's ``infos``).
- ``raw`` / ``1m`` / ``1h`` (the ``max_source_resolution`` parameter): that resolution serves
  every selector (a coarser one where it is no longer kept); approximations are named in warnings.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from query.errors import QueryInputError
from query.promjson import INFO_PREFIX
from storage.base import DAY_MS, Resolution
from storage.rollup import QUERY_RAW_HORIZON_MS, choose_resolution

# Range functions whose value from whole, aligned rollup buckets equals the value from raw
# samples (sum and avg up to float rounding: partial sums are added bucket by bucket).
EXACT_FROM_ROLLUP = frozenset({
    "sum_over_time", "count_over_time", "min_over_time", "max_over_time", "avg_over_time",
    "last_over_time", "present_over_time", "absent_over_time", "rate", "increase", "delta",
})
# Those of them that need the buckets' rate aggregates (``storage.base.ADDED_IN_V5``).
RATE_FUNCTIONS = frozenset({"rate", "increase", "delta"})

# Functions that need two samples in a window: over rollups their window spans at least two
# buckets (one bucket holds one value, its last), so that they answer where data exists.
TWO_POINT_FUNCTIONS = frozenset({
    "irate", "idelta", "deriv", "predict_linear", "changes", "resets",
    "double_exponential_smoothing", "holt_winters",
})

_ORDER = (Resolution.RAW, Resolution.MINUTE, Resolution.HOUR)


class SourceResolution(str, Enum):
    """The ``max_source_resolution`` a query asks for."""

    AUTO = "auto"
    RAW = "raw"
    MINUTE = "1m"
    HOUR = "1h"

    @classmethod
    def parse(cls, text: str | None) -> "SourceResolution":
        """``auto`` for None or empty; Thanos's spellings ``0s`` (raw) and ``60s`` (1m) too."""
        if not text:
            return cls.AUTO
        t = text.strip().lower()
        t = {"0": "raw", "0s": "raw", "60s": "1m", "3600s": "1h", "60m": "1h"}.get(t, t)
        try:
            return cls(t)
        except ValueError:
            raise QueryInputError(
                f'invalid parameter "max_source_resolution": {text!r} is not one of auto, raw, 1m, 1h'
            ) from None


@dataclass(frozen=True, slots=True)
class SelectorUse:
    """How a selector is evaluated: the function its range feeds (None: none, or the selector is
    a plain one), its range (None for a plain selector), the first evaluation time it is read
    at (after offset and @), and the spacing of those times (0: one time only)."""

    func: str | None
    window_ms: int | None
    first_ms: int
    step_ms: int

    def aligned(self, bucket_ms: int) -> bool:
        """True when every window ``(t - range, t]`` is a union of whole ``bucket_ms`` buckets."""
        if self.window_ms is None or self.window_ms <= 0 or self.window_ms % bucket_ms:
            return False
        if (self.first_ms + 1) % bucket_ms:
            return False
        return self.step_ms == 0 or self.step_ms % bucket_ms == 0

    def on_edges(self, bucket_ms: int) -> bool:
        """True when every window ``(t - range, t]`` has ``t`` on a bucket boundary (a panel's
        grid: ``t`` at ``hh:mm:00.000``), range and step whole buckets: the buckets
        ``[t - range, t)`` then hold the window's samples unless one sits exactly at
        ``t - range`` (in them, not in the window) or at ``t`` (the reverse)."""
        if self.window_ms is None or self.window_ms <= 0 or self.window_ms % bucket_ms:
            return False
        if self.first_ms % bucket_ms:
            return False
        return self.step_ms == 0 or self.step_ms % bucket_ms == 0

    def exact(self, res: Resolution) -> bool:
        """True when ``res`` answers this use exactly (raw always does)."""
        if res is Resolution.RAW:
            return True
        return self.func in EXACT_FROM_ROLLUP and self.aligned(res.step_ms)

    def exact_without_edge_samples(self, res: Resolution) -> bool:
        """True when ``res`` answers this use exactly unless a sample sits on a window's edge
        (``on_edges``: the buckets' ``first_ts`` tell; the engine reads raw then)."""
        return res is not Resolution.RAW and self.func in EXACT_FROM_ROLLUP and self.on_edges(res.step_ms)

    def what(self) -> str:
        if self.func is not None:
            return f"{self.func}()"
        return "plain selectors and subqueries" if self.window_ms is None else "range selectors"


def coarser(a: Resolution, b: Resolution) -> Resolution:
    return max(a, b, key=_ORDER.index)


def kept_at(start_ms: int, now_ms: int) -> Resolution:
    """The finest resolution still kept for data from ``start_ms`` on."""
    return choose_resolution(start_ms, now_ms, 0)


def served_exactly(use: SelectorUse, res: Resolution) -> str:
    """The info note (Prometheus 3's ``infos``) of an answer rollups gave exactly."""
    return f"{INFO_PREFIX}{use.what()} answered exactly from {res.value} rollups (whole buckets)"


def choose(
    mode: SourceResolution, start_ms: int, now_ms: int, hint_ms: int, use: SelectorUse
) -> tuple[Resolution, str | None]:
    """(resolution to read, warning or None) for a selector reading from ``start_ms``.

    ``hint_ms``: the smallest duration the query needs (its step and any window), which may
    make a coarser rollup enough."""
    kept = kept_at(start_ms, now_ms)
    if mode is SourceResolution.RAW:
        if kept is not Resolution.RAW:
            return Resolution.RAW, (
                f"max_source_resolution=raw: raw samples are kept {QUERY_RAW_HORIZON_MS // DAY_MS} days; "
                "older data is not read"
            )
        return Resolution.RAW, None
    if mode is SourceResolution.AUTO:
        if kept is Resolution.RAW:
            by_step = choose_resolution(now_ms, now_ms, hint_ms)
            for res in (by_step, Resolution.MINUTE):
                if res is not Resolution.RAW and _ORDER.index(res) <= _ORDER.index(by_step) and (
                    use.exact(res) or use.exact_without_edge_samples(res)
                ):
                    return res, served_exactly(use, res)
            return Resolution.RAW, None
        res = coarser(kept, choose_resolution(now_ms, now_ms, hint_ms))
    else:
        res = coarser(kept, Resolution(mode.value))
    if use.exact(res):
        return res, served_exactly(use, res)
    why = (
        f"raw samples are kept {QUERY_RAW_HORIZON_MS // DAY_MS} days"
        if mode is SourceResolution.AUTO
        else f"max_source_resolution={mode.value}"
    )
    return res, f"{use.what()} answered from {res.value} rollups ({why}): the result is approximate"
