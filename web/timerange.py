"""The time window of a page from its query string: range presets, custom from/to, step, zone.

``?range=6h`` (presets 1h, 6h, 24h, 7d, 30d, 1y or any duration such as ``90m``), or
``?range=custom&from=2026-11-25T10:00&to=2026-11-25T12:00`` (local to ``tz``, or unix
seconds; ``from``/``to`` are read only when ``range`` is ``custom`` or absent),
``?tz=Europe/Berlin`` and ``?refresh=30s``. Bad values fall back to defaults and are
reported in ``TimeRange.errors`` so the page can say what it ignored.
"""

from __future__ import annotations

import datetime as dt
import math
import time
import zoneinfo
from collections.abc import Mapping
from dataclasses import dataclass, field

from common.durations import DurationError, parse_duration_ms

PRESETS = ("1h", "6h", "24h", "7d", "30d", "1y")
REFRESH_CHOICES = ("off", "10s", "30s", "1m", "5m", "15m")
# ``max_source_resolution`` choices (query.resolution.SourceResolution): auto, or force one.
SOURCE_CHOICES = ("auto", "raw", "1m", "1h")
DEFAULT_RANGE = "1h"
TARGET_POINTS = 240  # about one point per 3 px of an 800 px chart
MIN_STEP_S = 15
MAX_RANGE_S = 5 * 365 * 86400
NICE_STEPS_S = (
    15,
    30,
    60,
    120,
    300,
    600,
    900,
    1800,
    3600,
    7200,
    10800,
    21600,
    43200,
    86400,
    2 * 86400,
    7 * 86400,
)

def parse_duration_s(text: str) -> int:
    """``90m`` -> 5400 (whole seconds); raises ValueError on anything that is not a positive duration."""
    try:
        total = parse_duration_ms(text) // 1000
    except DurationError:
        raise ValueError(f"not a duration: {text!r} (use e.g. 1h, 90m, 7d)") from None
    if total <= 0:
        raise ValueError(f"not a positive duration: {text!r}")
    return total


def format_duration_s(seconds: float) -> str:
    """5400 -> ``1h30m``; the PromQL duration syntax."""
    s = int(round(seconds))
    if s <= 0:
        return "0s"
    out = []
    for unit, suffix in ((86400, "d"), (3600, "h"), (60, "m"), (1, "s")):
        if s >= unit:
            out.append(f"{s // unit}{suffix}")
            s %= unit
    return "".join(out)


def choose_step_s(range_s: float, points: int = TARGET_POINTS) -> int:
    """A round step giving about ``points`` points over the range, at least 15 s."""
    raw = max(range_s / max(points, 1), MIN_STEP_S)
    for s in NICE_STEPS_S:
        if s >= raw:
            return s
    return int(math.ceil(raw / 86400) * 86400)


def _parse_instant(text: str, tz: dt.tzinfo) -> float:
    text = text.strip()
    try:
        return float(text)
    except ValueError:
        pass
    try:
        t = dt.datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"not a time: {text!r} (use YYYY-MM-DDTHH:MM or unix seconds)") from None
    if t.tzinfo is None:
        t = t.replace(tzinfo=tz)
    return t.timestamp()


@dataclass
class TimeRange:
    start_ms: int
    end_ms: int
    step_ms: int
    range_key: str  # a preset, a duration, or "custom"
    tz: dt.tzinfo
    tz_name: str
    refresh: str = "off"
    errors: list[str] = field(default_factory=list)
    # The moment the page shows as "now": after ``end_ms`` (the last step of the grid) by
    # less than a step for a "last N" window; equal to it for a custom window (-1: end_ms).
    now_ms: int = -1
    # The max_source_resolution the page's queries ask for (``?max_source_resolution=``).
    source: str = "auto"

    def __post_init__(self) -> None:
        if self.now_ms < 0:
            self.now_ms = self.end_ms

    @property
    def range_s(self) -> float:
        return (self.end_ms - self.start_ms) / 1000

    @property
    def step_s(self) -> float:
        return self.step_ms / 1000

    @property
    def rate_window(self) -> str:
        """A ``rate()`` window that covers each step and holds at least a few scrapes."""
        return format_duration_s(max(60, self.step_s))

    @property
    def refresh_s(self) -> int:
        return 0 if self.refresh == "off" else parse_duration_s(self.refresh)

    def local_input(self, ts_ms: int) -> str:
        """``YYYY-MM-DDTHH:MM`` in the page's zone, for ``<input type=datetime-local>``."""
        return dt.datetime.fromtimestamp(ts_ms / 1000, self.tz).strftime("%Y-%m-%dT%H:%M")

    def _keep_settings(self, params: dict[str, str]) -> None:
        """The page's zone, refresh and source resolution, where not the defaults."""
        if self.tz_name != "UTC":
            params["tz"] = self.tz_name
        if self.refresh != "off":
            params["refresh"] = self.refresh
        if self.source != "auto":
            params["max_source_resolution"] = self.source

    def preset_params(self, preset: str, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        """Parameters for the same page over the last ``preset`` (zone, refresh, ``extra`` kept)."""
        params = dict(extra or {})
        params["range"] = preset
        self._keep_settings(params)
        return params

    def query_params(self, **override: str) -> dict[str, str]:
        """The parameters that reproduce this range (for links that keep it)."""
        params: dict[str, str] = {}
        if self.range_key == "custom":
            params["range"] = "custom"
            params["from"] = str(self.start_ms // 1000)
            params["to"] = str(self.end_ms // 1000)
        else:
            params["range"] = self.range_key
        self._keep_settings(params)
        params.update(override)
        return params


def parse_time_range(
    query: Mapping[str, str], now_s: float | None = None, points: int = TARGET_POINTS
) -> TimeRange:
    """The page's window from its query parameters; never raises on bad input."""
    errors: list[str] = []
    now = time.time() if now_s is None else now_s
    tz_name = (query.get("tz") or "UTC").strip()
    try:
        tz: dt.tzinfo = zoneinfo.ZoneInfo(tz_name) if tz_name != "UTC" else dt.UTC
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        errors.append(f"tz: unknown time zone {tz_name!r}; showing UTC")
        tz, tz_name = dt.UTC, "UTC"
    refresh = (query.get("refresh") or "off").strip()
    if refresh not in REFRESH_CHOICES:
        errors.append(f"refresh: expected one of {', '.join(REFRESH_CHOICES)}; auto refresh is off")
        refresh = "off"
    source = (query.get("max_source_resolution") or "auto").strip()
    if source not in SOURCE_CHOICES:
        errors.append(f"max_source_resolution: expected one of {', '.join(SOURCE_CHOICES)}; using auto")
        source = "auto"

    start = end = None
    range_key = DEFAULT_RANGE
    wants_custom = (query.get("range") or "custom").strip() == "custom"
    if wants_custom and (query.get("from") or "").strip():
        try:
            start = _parse_instant(query["from"], tz)
            end = _parse_instant(query["to"], tz) if (query.get("to") or "").strip() else now
            if end <= start:
                raise ValueError("'to' must be after 'from'")
            if end - start > MAX_RANGE_S:
                raise ValueError("the range may span at most 5 years")
            range_key = "custom"
        except ValueError as exc:
            errors.append(f"from/to: {exc}; showing the last {DEFAULT_RANGE}")
            start = end = None
    if start is None:
        key = (query.get("range") or DEFAULT_RANGE).strip()
        if key == "custom":
            key = DEFAULT_RANGE
        try:
            span = parse_duration_s(key)
            if span > MAX_RANGE_S:
                raise ValueError("the range may span at most 5 years")
            range_key = key
        except ValueError as exc:
            errors.append(f"range: {exc}; showing the last {DEFAULT_RANGE}")
            span = parse_duration_s(DEFAULT_RANGE)
            range_key = DEFAULT_RANGE
        end = now
        start = now - span
    assert end is not None
    step = choose_step_s(end - start, points)
    if range_key == "custom":
        return TimeRange(
            int(start * 1000), int(end * 1000), step * 1000, range_key, tz, tz_name, refresh, errors, source=source
        )
    # "Last N": the step grid ends at the last step boundary at or before now, so refreshes
    # evaluate the same grid (a range-query cache reuses every complete chunk), and charts
    # add one point at ``now_ms`` itself. Not the next boundary: a step in the future sees
    # only part of its rate window, so every rate panel would dip at its right edge.
    span_ms = int(round((end - start) * 1000))
    step_ms = step * 1000
    now_ms = int(end * 1000)
    end_ms = now_ms // step_ms * step_ms
    return TimeRange(end_ms - span_ms, end_ms, step_ms, range_key, tz, tz_name, refresh, errors, now_ms, source)
