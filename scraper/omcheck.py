"""The OpenMetrics 1.0 value and grouping rules a strict parse enforces after the syntax.

Counters and histogram parts non-negative, bucket bounds ascending with a ``+Inf``
bucket, cumulative bucket counts, ``_count`` equal to the ``+Inf`` bucket, ``_sum``
and ``_count`` together, stateset/info values, contiguous label groups and
non-decreasing timestamps per series.
"""

from __future__ import annotations

import math

from scraper.exposition import ParsedSample, ParseError, parse_om_number

_GROUP_DROP = {"histogram": ("le",), "gaugehistogram": ("le",), "summary": ("quantile",)}


def _bad(s: ParsedSample, reason: str) -> ParseError:
    return ParseError(s.line_no, reason)


def _nonneg(s: ParsedSample, what: str, allow_nan: bool = False) -> None:
    v = s.value
    if math.isnan(v):
        if not allow_nan:
            raise _bad(s, f"{what} {s.name!r} cannot be NaN")
    elif v < 0:
        raise _bad(s, f"{what} {s.name!r} cannot be negative")


def check_families(samples: list[ParsedSample], types: dict[str, str]) -> None:
    """Raise ParseError for the first sample breaking an OpenMetrics value/grouping rule."""
    by_family: dict[str, list[ParsedSample]] = {}
    for s in samples:
        by_family.setdefault(s.family, []).append(s)
    for family, fam_samples in by_family.items():
        kind = types.get(family, "unknown")
        _check_order(family, kind, fam_samples)
        groups: dict[tuple, list[ParsedSample]] = {}
        drop = _GROUP_DROP.get(kind, ())
        for s in fam_samples:
            key = tuple((k, v) for k, v in s.labels if k not in drop)
            groups.setdefault(key, []).append(s)
        for group in groups.values():
            _check_group(family, kind, group)


def _check_order(family: str, kind: str, fam_samples: list[ParsedSample]) -> None:
    drop = _GROUP_DROP.get(kind, ())
    seen_groups: set[tuple] = set()
    current = None
    last_ts: dict[tuple, int | None] = {}
    for s in fam_samples:
        key = tuple((k, v) for k, v in s.labels if k not in drop)
        if key != current:
            if key in seen_groups:
                raise _bad(s, f"samples of one label set of {family!r} are not grouped together")
            seen_groups.add(key)
            current = key
        series = (s.name, tuple(s.labels))
        if series in last_ts:
            prev = last_ts[series]
            if prev is None or s.timestamp_ms is None:
                raise _bad(s, f"duplicate sample for series {s.series_text!r}")
            if s.timestamp_ms < prev:
                raise _bad(s, f"timestamps of {s.series_text!r} go backwards")
        last_ts[series] = s.timestamp_ms


def _check_group(family: str, kind: str, group: list[ParsedSample]) -> None:
    if kind == "counter":
        for s in group:
            if s.name == family + "_total":
                _nonneg(s, "counter")
    elif kind in ("histogram", "gaugehistogram"):
        _check_histogram(family, kind, group)
    elif kind == "summary":
        for s in group:
            if s.name in (family + "_count", family + "_sum"):
                _nonneg(s, "summary part")
            elif s.name == family:
                _nonneg(s, "summary quantile", allow_nan=True)
    elif kind == "stateset":
        for s in group:
            if s.value not in (0.0, 1.0):
                raise _bad(s, f"stateset value must be 0 or 1, not {s.value_text}")
    elif kind == "info":
        for s in group:
            if s.value != 1.0:
                raise _bad(s, f"info value must be 1, not {s.value_text}")


def _check_histogram(family: str, kind: str, group: list[ParsedSample]) -> None:
    count_name, sum_name = (
        (family + "_count", family + "_sum") if kind == "histogram" else (family + "_gcount", family + "_gsum")
    )
    buckets: list[tuple[float, ParsedSample]] = []
    count = total = None
    for s in group:
        if s.name == family + "_bucket":
            le = parse_om_number(dict(s.labels)["le"])
            _nonneg(s, "bucket")
            if buckets:
                prev_le, prev = buckets[-1]
                if le <= prev_le:
                    raise _bad(s, f"buckets of {family!r} must be in increasing 'le' order")
                if s.value < prev.value:
                    raise _bad(s, f"bucket counts of {family!r} must not decrease")
            buckets.append((le, s))
        elif s.name == count_name:
            _nonneg(s, "histogram count")
            count = s
        elif s.name == sum_name:
            if math.isnan(s.value):
                raise _bad(s, f"{s.name!r} cannot be NaN")
            total = s
    first = group[0]
    if not buckets or buckets[-1][0] != math.inf:
        raise _bad(first, f"{kind} {family!r} needs a bucket with le=\"+Inf\"")
    if (count is None) != (total is None):
        raise _bad(count or total or first, f"{kind} {family!r} must have both {count_name} and {sum_name}")
    negative = buckets[0][0] < 0
    if total is not None:
        if kind == "histogram" and negative:
            raise _bad(total, f"histogram {family!r} with negative buckets cannot have {sum_name}")
        if total.value < 0 and not negative:
            raise _bad(total, f"{sum_name!r} cannot be negative")
    if count is not None and count.value != buckets[-1][1].value:
        raise _bad(count, f"{count_name!r} must equal the +Inf bucket")
