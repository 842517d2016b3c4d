"""Server-side SVG charts: series of (timestamp, value) points to one self-contained <svg>.

Pure functions, no I/O: ``render_chart(series, ChartSpec(...))`` returns SVG markup with
a time axis of round ticks in the viewer's zone, a y axis with humanised values in the
panel's unit, one ``<path>`` per series (line mode) or stacked filled areas, gaps where
points are missing, tooltips (SVG ``<title>``), threshold lines and a legend. Every
piece of text is escaped, so label values cannot inject markup. Presentation is set with
SVG attributes and classes (no ``style=``), so a strict CSP needs no ``unsafe-inline``.

Page weight: a series with more than two points per pixel column is thinned to the first,
last, lowest and highest point of each column (M4), so spikes and gaps stay; paths are
relative steps in tenths of a pixel. Up to ``max_point_titles`` points each carry their own
tooltip; beyond that, invisible hover bands (one per step, at least ``TIP_BAND_PX`` wide)
list every series' value, or its lowest - highest value when a band spans several steps.
"""

from __future__ import annotations

import datetime as dt
import functools
import itertools
import math
import re
import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from html import escape
from typing import Any

import numpy as np
import numpy.typing as npt

# Distinct colours (Tableau 10 + two); a series' colour comes from its key (see series_styles),
# and past the palette's size a dash pattern tells series of one colour apart.
PALETTE = (
    "#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#d4a72c",
    "#b07aa1", "#ff9da7", "#9c755f", "#6b6ecf", "#1f77b4", "#17becf",
)  # fmt: skip  (Tableau's yellow and grey darkened: thin lines stay readable on white)
DASHES = ("", "6 3", "2 2", "8 3 2 3")
# A unit its tick labels do not carry is written along the y axis.
AXIS_CAPTION = {"cores": "cores"}

UNITS = ("none", "bytes", "bytes/s", "seconds", "percent", "ratio", "/s", "cores")
MODES = ("line", "stacked")

_SI = ((1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k"))
_SI_SMALL = ((1e-3, "m"), (1e-6, "µ"), (1e-9, "n"))
_BINARY = ("B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB")

# Candidate time-axis tick spacings in seconds; months and years are handled by calendar.
_TIME_STEPS = (
    1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 2 * 3600, 3 * 3600, 6 * 3600,
    12 * 3600, 86400, 2 * 86400, 7 * 86400, 14 * 86400,
)  # fmt: skip
_MONTH = 30 * 86400
_YEAR = 365 * 86400


@dataclass
class ChartSeries:
    """One line: its legend name, label set, timestamps (ms) and values (NaN = missing).

    ``key`` is what its colour is derived from (see ``series_styles``); empty: its legend name.
    """

    name: str
    timestamps: Sequence[int] | np.ndarray
    values: Sequence[float] | np.ndarray
    labels: Mapping[str, str] = field(default_factory=dict)
    key: str = ""


@dataclass
class ChartSpec:
    """How to draw: size, unit, mode and the time window.

    ``step_ms`` is the query step: consecutive points further apart than 1.5 steps are a gap.
    Without it the median spacing of the data is used.
    """

    title: str = ""
    unit: str = "none"
    mode: str = "line"
    width: int = 800
    height: int = 240  # plot area plus axes; the legend adds below
    start_ms: int | None = None
    end_ms: int | None = None
    step_ms: int | None = None
    tz: dt.tzinfo = dt.UTC
    thresholds: Sequence[float] = ()
    # A name written next to a threshold line (e.g. the alerting rule it comes from).
    threshold_names: Mapping[float, str] = field(default_factory=dict)
    y_min: float | None = None
    y_max: float | None = None
    max_series: int = 40
    # Up to this many drawn points each gets its own tooltip; beyond it (page weight) one
    # hover band per time step (at least TIP_BAND_PX wide) lists every series' value there.
    max_point_titles: int = 1000
    legend: bool = True
    empty_text: str = "No data"  # drawn on a chart without a point: say what "empty" means here

    def __post_init__(self) -> None:
        if self.unit not in UNITS:
            raise ValueError(f"unit: expected one of {', '.join(UNITS)}, got {self.unit!r}")
        if self.mode not in MODES:
            raise ValueError(f"mode: expected one of {', '.join(MODES)}, got {self.mode!r}")


# -- number and time formatting ------------------------------------------------------------------


def _trim(x: float, digits: int = 3) -> str:
    """``x`` with about ``digits`` significant digits and no trailing zeros."""
    if x == 0:
        return "0"
    if 1e-4 <= abs(x) < 1000:  # the common case, in one formatting call
        text = f"{x:.{digits}g}"
        return text if "e" not in text else f"{x:f}".rstrip("0").rstrip(".")
    mag = math.floor(math.log10(abs(x)))
    decimals = max(0, digits - 1 - mag)
    text = f"{x:.{decimals}f}"
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def _si(v: float) -> str:
    a = abs(v)
    for scale, prefix in _SI:
        if a >= scale:
            return f"{_trim(v / scale)}{prefix}"
    if a and a < 0.001:
        for scale, prefix in _SI_SMALL:
            if a >= scale:
                return f"{_trim(v / scale)}{prefix}"
    return _trim(v)


def _binary(v: float) -> str:
    a = abs(v)
    i = 0
    while a >= 1024 and i < len(_BINARY) - 1:
        a /= 1024
        i += 1
    return f"{_trim(math.copysign(a, v))} {_BINARY[i]}"


def _duration(v: float) -> str:
    a = abs(v)
    if a == 0:
        return "0 s"
    if a < 1e-6:
        return f"{_trim(v * 1e9)} ns"
    if a < 1e-3:
        return f"{_trim(v * 1e6)} µs"
    if a < 1:
        return f"{_trim(v * 1e3)} ms"
    if a < 60:
        return f"{_trim(v)} s"
    if a < 3600:
        return f"{_trim(v / 60)} min"
    if a < 86400:
        return f"{_trim(v / 3600)} h"
    return f"{_trim(v / 86400)} d"


def humanize(value: float, unit: str = "none") -> str:
    """A value as an operator reads it: ``1.5 GiB``, ``250 ms``, ``42%``, ``1.2k/s``."""
    if value is None or math.isnan(value):
        return "no value"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if unit == "bytes":
        return _binary(value)
    if unit == "bytes/s":
        return _binary(value) + "/s"
    if unit == "seconds":
        return _duration(value)
    if unit == "percent":
        return f"{_trim(value)}%"
    if unit == "ratio":
        return f"{_trim(value * 100)}%"
    if unit == "/s":
        return f"{_si(value)}/s"
    if unit == "cores":
        return _si(value)
    return _si(value)


_SI_SCALES = np.array([1.0] + [s for s, _ in _SI] + [s for s, _ in _SI_SMALL])
_SI_PREFIXES = np.array([""] + [p for _, p in _SI] + [p for _, p in _SI_SMALL], dtype=object)


def _trim_many(x: np.ndarray, suffix: str = "") -> list[str]:
    """``[_trim(v) + suffix for v in x]``, with the common case in one formatting pass.

    ``.3g`` writes no exponent for 1e-4 <= |v| < 999.5 (from 999.5 it rounds to ``1e+03``);
    the rest go through ``_trim``.
    """
    out = list(map(("{:.3g}" + suffix).format, x.tolist()))  # suffixes are "%", "/s": no braces
    a = np.abs(x)
    for i in np.flatnonzero(~((a >= 1e-4) & (a < 999.5))).tolist():
        out[i] = _trim(float(x[i])) + suffix
    return out


def _si_many(v: np.ndarray, suffix: str = "") -> list[str]:
    a = np.abs(v)
    idx = np.zeros(len(v), dtype=np.intp)
    for k in range(len(_SI_SMALL), 0, -1):  # the largest small scale the value reaches
        k_at = len(_SI) + k
        idx = np.where((a > 0) & (a < 0.001) & (a >= _SI_SCALES[k_at]), k_at, idx)
    for k in range(len(_SI), 0, -1):  # the largest scale the value reaches
        idx = np.where(a >= _SI_SCALES[k], k, idx)
    if not idx.any():
        return _trim_many(v, suffix)
    texts = _trim_many(v / _SI_SCALES[idx])
    return list(map(str.__add__, texts, (_SI_PREFIXES + suffix)[idx].tolist()))


def _binary_many(v: np.ndarray, suffix: str = "") -> list[str]:
    a = np.abs(v)
    i = np.zeros(len(v), dtype=np.intp)
    for k in range(1, len(_BINARY)):
        i = np.where(a >= 1024.0**k, k, i)
    texts = _trim_many(np.copysign(a / (1024.0**i), v))
    suffixes = (" " + np.array(_BINARY, dtype=object) + suffix)[i].tolist()
    return list(map(str.__add__, texts, suffixes))


def humanize_many(values: Sequence[float] | np.ndarray, unit: str = "none") -> list[str]:
    """``[humanize(v, unit) for v in values]``, computed a whole array at a time."""
    v = np.asarray(values, dtype=np.float64)
    if v.ndim != 1:
        v = v.reshape(-1)
    odd = ~np.isfinite(v) | (v == 0)
    if unit == "seconds" or len(v) < 8:
        return [humanize(x, unit) for x in v.tolist()]
    clean = np.where(odd, 1.0, v)
    if unit in ("bytes", "bytes/s"):
        out = _binary_many(clean, unit.removeprefix("bytes"))
    elif unit == "percent":
        out = _trim_many(clean, "%")
    elif unit == "ratio":
        out = _trim_many(clean * 100, "%")
    elif unit == "/s":
        out = _si_many(clean, "/s")
    else:
        out = _si_many(clean)
    for i in np.flatnonzero(odd).tolist():
        out[i] = humanize(float(v[i]), unit)
    return out


def format_time(ts_ms: int, tz: dt.tzinfo = dt.UTC) -> str:
    """``2026-11-25 16:00:05 UTC`` in ``tz``."""
    t = dt.datetime.fromtimestamp(ts_ms / 1000, tz)
    return t.strftime("%Y-%m-%d %H:%M:%S ") + (t.tzname() or "")


def nice_step(raw: float) -> float:
    """The smallest of 1, 2, 5 x 10^k that is at least ``raw``."""
    if raw <= 0 or not math.isfinite(raw):
        return 1.0
    base = 10.0 ** math.floor(math.log10(raw))
    for m in (1, 2, 5, 10):
        if m * base >= raw * (1 - 1e-9):
            return m * base
    return 10 * base


# Round steps of a duration axis from one second up: seconds, minutes, hours, days.
_DURATION_STEPS = (
    1, 2, 5, 10, 15, 30, 60, 2 * 60, 5 * 60, 10 * 60, 15 * 60, 30 * 60, 3600, 2 * 3600, 3 * 3600,
    6 * 3600, 12 * 3600, 86400, 2 * 86400, 7 * 86400, 14 * 86400, 28 * 86400,
)  # fmt: skip


def unit_step(raw: float, unit: str, scale: float = 1.0) -> float:
    """A round tick step of at least ``raw`` in ``unit``: 1, 2, 5 x 10^k of ``scale`` (a power
    of 1024 for bytes); for durations of a second or more a round number of seconds, minutes,
    hours or days; for bytes never less than one byte."""
    if unit == "seconds" and raw >= 1:
        step = next((s for s in _DURATION_STEPS if s >= raw * (1 - 1e-9)), None)
        return float(step) if step is not None else nice_step(raw / 86400) * 86400
    nice = nice_step(raw / scale) * scale
    return max(nice, 1.0) if unit == "bytes" else nice


def y_ticks(lo: float, hi: float, unit: str, max_ticks: int = 6) -> tuple[float, float, list[float]]:
    """Round axis bounds and tick values covering [lo, hi] (see ``unit_step``)."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        lo, hi = 0.0, 1.0
    if hi <= lo:
        hi = lo + (abs(lo) or 1.0)
    scale = 1.0
    if unit in ("bytes", "bytes/s"):
        while max(abs(lo), abs(hi)) / scale >= 1024:
            scale *= 1024
    step = unit_step((hi - lo) / max(max_ticks - 1, 1), unit, scale)
    first = math.floor(lo / step + 1e-9) * step
    last = math.ceil(hi / step - 1e-9) * step
    n = int(round((last - first) / step))
    ticks = [first + i * step for i in range(n + 1)]
    return first, last, ticks


def time_ticks(start_ms: int, end_ms: int, tz: dt.tzinfo, max_ticks: int) -> list[tuple[int, str]]:
    """Round-valued ticks (ms, label) in ``tz`` between start and end."""
    span = max((end_ms - start_ms) / 1000, 1.0)
    max_ticks = max(max_ticks, 2)
    step = next((s for s in _TIME_STEPS if span / s <= max_ticks), None)
    start = dt.datetime.fromtimestamp(start_ms / 1000, tz)
    out: list[tuple[int, str]] = []
    if step is not None and step < 86400:
        utc_offset = start.utcoffset()
        offset = utc_offset.total_seconds() if utc_offset else 0.0
        t = math.ceil((start_ms / 1000 + offset) / step) * step - offset
        while t * 1000 <= end_ms and len(out) <= max_ticks + 1:
            local = dt.datetime.fromtimestamp(t, tz)
            if local.hour == 0 and local.minute == 0 and local.second == 0 and span > 3600:
                label = local.strftime("%b %d")
            elif step < 60:
                label = local.strftime("%H:%M:%S")
            else:
                label = local.strftime("%H:%M")
            out.append((int(round(t * 1000)), label))
            t += step
        return out
    if step is not None:  # whole days from local midnight
        days = step // 86400
        day = start.replace(hour=0, minute=0, second=0, microsecond=0)
        if day < start:
            day += dt.timedelta(days=1)
        if days == 7:
            day += dt.timedelta(days=(7 - day.weekday()) % 7)  # weeks start on Monday
        while day.timestamp() * 1000 <= end_ms and len(out) <= max_ticks + 1:
            out.append((int(day.timestamp() * 1000), day.strftime("%b %d")))
            day = (day + dt.timedelta(days=days)).replace(hour=0)
        return out
    months = next(m for m in (1, 2, 3, 6, 12, 24, 60, 120) if span / (m * _MONTH) <= max_ticks)
    year, month = start.year, start.month
    month += 1 if (start.day, start.hour, start.minute) != (1, 0, 0) else 0
    while True:
        year += (month - 1) // 12
        month = (month - 1) % 12 + 1
        if (month - 1) % months == 0:
            first = dt.datetime(year, month, 1, tzinfo=tz)
            if first.timestamp() * 1000 > end_ms or len(out) > max_ticks + 1:
                break
            out.append(
                (int(first.timestamp() * 1000), first.strftime("%b %Y" if month == 1 or months >= 12 else "%b"))
            )
        month += 1
    return out


# -- series helpers ------------------------------------------------------------------------------

_TEMPLATE = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")


def legend_name(labels: Mapping[str, str], template: str | None = None) -> str:
    """The legend text of a series: the template with ``{{label}}`` filled, else its label set."""
    if template:
        return _TEMPLATE.sub(lambda m: str(labels.get(m.group(1), "")), template)
    name = labels.get("__name__", "")
    rest = ", ".join(f'{k}="{v}"' for k, v in sorted(labels.items()) if k != "__name__")
    if rest:
        return f"{name}{{{rest}}}"
    return name or "{}"


def series_key(labels: Mapping[str, str], template: str | None = None) -> str:
    """What a series' colour is derived from: its legend text when a template names it (the
    same pool is "web" on every panel), else its label set without the metric name."""
    if template:
        return legend_name(labels, template)
    rest = {k: v for k, v in labels.items() if k != "__name__"}
    return legend_name(rest) if rest else legend_name(labels)


def series_from_result(result: Any, legend: str | None = None) -> list[ChartSeries]:
    """Chart series from a ``query.result.QueryResult`` (matrix or vector; scalar as one series)."""
    out: list[ChartSeries] = []
    if getattr(result, "type", None) == "scalar" and result.scalar is not None:
        ts, v = result.scalar
        return [ChartSeries(legend or "scalar", [ts], [v], {})]
    for s in getattr(result, "series", None) or ():
        out.append(
            ChartSeries(
                legend_name(s.labels, legend), s.timestamps, s.values, dict(s.labels), series_key(s.labels, legend)
            )
        )
    out.sort(key=lambda s: s.name)
    return out


def _stable_hash(text: str) -> int:
    return zlib.crc32(text.encode("utf-8", "surrogatepass"))


def series_styles(keys: Sequence[str]) -> list[tuple[str, str]]:
    """(colour, dash pattern) of each key: the same key gets the same colour on every chart.

    A key's colour is ``PALETTE[crc32(key) % len(PALETTE)]``. Two keys of one chart that
    want the same colour: the first in sorted order keeps it, the other takes the next free
    colour of the palette (so a chart whose keys do not collide shows every key in its own
    colour); past the palette's size, dash patterns tell series of one colour apart.
    """
    n = len(PALETTE)
    taken: set[tuple[int, int]] = set()
    styles: dict[str, tuple[str, str]] = {}
    for key in sorted(set(keys)):
        want = _stable_hash(key) % n
        for round_ in itertools.count():
            dash = round_ % len(DASHES)
            free = next(((want + k) % n for k in range(n) if ((want + k) % n, round_) not in taken), None)
            if free is not None:
                taken.add((free, round_))
                styles[key] = (PALETTE[free], DASHES[dash])
                break
    return [styles[k] for k in keys]


# -- rendering -----------------------------------------------------------------------------------

MARGIN_LEFT = 70
MARGIN_RIGHT = 16
MARGIN_TOP = 12
AXIS_HEIGHT = 26
LEGEND_ROW = 18
CHAR_W = 6.6  # average glyph width at the legend's font size
LEGEND_MAX_CHARS = 60
_clip_ids = itertools.count(1)  # clipPath ids unique within a page of many charts


def _attr(value: object) -> str:
    return escape(str(value), quote=True)


def _f(x: float) -> str:
    return f"{x:.1f}".rstrip("0").rstrip(".") if x != int(x) else str(int(x))


@dataclass
class _Prepared:
    series: ChartSeries
    ts: np.ndarray
    vals: np.ndarray
    base: np.ndarray  # the stack baseline under each point (zeros in line mode)


def _prepare(series: Sequence[ChartSeries], spec: ChartSpec) -> list[_Prepared]:
    out: list[_Prepared] = []
    for s in series:
        ts = np.asarray(s.timestamps, dtype=np.int64)
        vals = np.asarray(s.values, dtype=np.float64)
        if ts.shape != vals.shape:
            raise ValueError(f"series {s.name!r}: {len(ts)} timestamps but {len(vals)} values")
        if len(ts) > 1 and np.any(ts[1:] < ts[:-1]):
            order = np.argsort(ts, kind="stable")
            ts, vals = ts[order], vals[order]
        vals = np.where(np.isfinite(vals), vals, np.nan)
        out.append(_Prepared(s, ts, vals, np.zeros_like(vals)))
    if spec.mode == "stacked" and out:
        # Each series sits on the running total of the ones before it at the same timestamp.
        grid = np.unique(np.concatenate([p.ts for p in out]))
        running = np.zeros(len(grid))
        for p in out:
            at = np.searchsorted(grid, p.ts)
            p.base = running[at]
            ok = ~np.isnan(p.vals)
            running[at[ok]] = p.base[ok] + p.vals[ok]
    return out


def _gap_ms(prepared: list[_Prepared], spec: ChartSpec) -> float:
    if spec.step_ms:
        return spec.step_ms * 1.5
    diffs = [np.diff(p.ts) for p in prepared if len(p.ts) > 1]
    if not diffs:
        return math.inf
    return float(np.median(np.concatenate(diffs))) * 1.5


def _segments(ts: np.ndarray, vals: np.ndarray, gap_ms: float) -> list[tuple[int, int]]:
    """Index ranges [i, j) of consecutive present points without a gap between them."""
    idx = np.flatnonzero(~np.isnan(vals))
    if idx.size == 0:
        return []
    breaks = (np.diff(idx) > 1) | (np.diff(ts[idx]) > gap_ms)
    starts = np.concatenate(([idx[0]], idx[1:][breaks]))
    ends = np.concatenate((idx[:-1][breaks] + 1, [idx[-1] + 1]))
    return list(zip(starts.tolist(), ends.tolist(), strict=True))


THIN_ABOVE_PER_PX = 2  # a series with more points than this per pixel column is thinned
TIP_BAND_PX = 6.0  # hover bands are at least this wide (one per time step when steps are wider)


@functools.lru_cache(maxsize=16384)
def _when(ts_ms: int, tz: dt.tzinfo) -> str:
    return dt.datetime.fromtimestamp(ts_ms / 1000, tz).strftime("%Y-%m-%d %H:%M:%S")


def _px(coords: np.ndarray) -> list[str]:
    """Pixel coordinates as text with one decimal (``12.3``; ``repr`` of the rounded float)."""
    return list(map(repr, coords.round(1).tolist()))


def _tenths_text(i: int) -> str:
    """A count of tenths of a pixel as the shortest SVG number: 23 -> 2.3, -4 -> -.4, 10 -> 1."""
    whole, tenth = divmod(abs(i), 10)
    text = (str(whole) if whole or not tenth else "") + (f".{tenth}" if tenth else "")
    return "-" + text if i < 0 else text


_TENTHS_MAX = 4000  # +-400 px covers nearly every step between neighbouring points
_TENTHS = np.array([_tenths_text(i) for i in range(-_TENTHS_MAX, _TENTHS_MAX + 1)], dtype=object)


def _tenths_many(tenths: np.ndarray) -> list[str]:
    """``[_tenths_text(i) for i in tenths]``, looked up for the common small values."""
    inside = np.abs(tenths) <= _TENTHS_MAX
    out: list[str] = _TENTHS[np.where(inside, tenths, 0) + _TENTHS_MAX].tolist()
    for i in np.flatnonzero(~inside).tolist():
        out[i] = _tenths_text(int(tenths[i]))
    return out


def _subpaths(x10: np.ndarray, y10: np.ndarray, segs: list[tuple[int, int]], move: str = "M") -> list[str]:
    """``M x,y l dx,dy dx,dy ...`` per segment, from positions in whole tenths of a pixel.

    Relative steps are differences of the rounded positions, so they add up exactly (no
    drift) and are short: about 8 characters a point instead of 12, and they deflate better.
    """
    if not segs:
        return []
    steps = [f"{a},{b}" for a, b in zip(_tenths_many(np.diff(x10)), _tenths_many(np.diff(y10)), strict=True)]
    firsts = [a for a, _ in segs]
    out = []
    for (a, b), x0, y0 in zip(segs, _tenths_many(x10[firsts]), _tenths_many(y10[firsts]), strict=True):
        out.append(f"{move}{x0},{y0}l{' '.join(steps[a : b - 1])}" if b - a > 1 else f"{move}{x0},{y0}")
    return out


def _thin(
    xs: np.ndarray, tops: np.ndarray, segs: list[tuple[int, int]], plot_w: float
) -> tuple[np.ndarray | None, list[tuple[int, int]]]:
    """Min/max decimation (M4) of a series denser than ``THIN_ABOVE_PER_PX`` points per pixel.

    Within each gap-free segment, per 1-px column, keeps the first, last, lowest and highest
    point, so the drawn line covers exactly the pixels the full line would (spikes stay) and
    gaps stay where they were. Returns the kept indices (None: keep all) and the segments
    as ranges of the kept points.
    """
    present = sum(b - a for a, b in segs)
    if present <= THIN_ABOVE_PER_PX * max(plot_w, 1.0):
        return None, segs
    idx = np.concatenate([np.arange(a, b) for a, b in segs])
    seg_of = np.repeat(np.arange(len(segs)), [b - a for a, b in segs])
    cols = np.clip(np.floor(xs[idx]), -1, plot_w * 4).astype(np.int64) + 1
    key = seg_of * (int(plot_w * 4) + 3) + cols  # non-decreasing: segments and x both ascend
    starts = np.flatnonzero(np.r_[True, key[1:] != key[:-1]])
    ends = np.r_[starts[1:], len(key)]
    by_value = np.lexsort((tops[idx], key))  # groups keep their places; low to high inside
    kept = np.unique(
        np.concatenate((idx[starts], idx[ends - 1], idx[by_value[starts]], idx[by_value[ends - 1]]))
    )
    lo = np.searchsorted(kept, [a for a, _ in segs])
    hi = np.searchsorted(kept, [b for _, b in segs])
    return kept, list(zip(lo.tolist(), hi.tolist(), strict=True))


def _band_tooltips(
    prepared: list[_Prepared], spec: ChartSpec, x_scale: float, t_lo: int, left: float, top: float,
    plot_w: float, plot_h: float,
) -> str:  # fmt: skip
    """Invisible hover bands, one per time step or per ``TIP_BAND_PX`` if steps are denser.

    A band's tooltip gives its time (or first - last time) and each series' value there, or
    its lowest - highest value when the band spans several steps (spikes stay visible).
    """
    present = [p.ts[~np.isnan(p.vals)] for p in prepared]
    stamps = np.unique(np.concatenate(present)) if present else np.empty(0, np.int64)
    if not stamps.size:
        return ""
    xs = (stamps - t_lo) * x_scale + left
    col = np.floor((xs - left) / TIP_BAND_PX)
    starts = np.flatnonzero(np.concatenate(([True], col[1:] != col[:-1])))
    ends = np.append(starts[1:], len(stamps))
    band_of = np.repeat(np.arange(len(starts)), ends - starts)
    edges = np.empty(len(starts) + 1)
    edges[0], edges[-1] = left, left + plot_w
    edges[1:-1] = (xs[ends[:-1] - 1] + xs[starts[1:]]) / 2
    edges = np.clip(edges, left, left + plot_w).round(1)
    # Each series' lowest and highest value per band, all series' numbers humanised at once.
    n_bands = len(starts)
    shown = [(p, ts) for p, ts in zip(prepared, present, strict=True) if ts.size]
    prefixes = np.array([escape(p.series.name) + ": " for p, _ in shown], dtype=object)
    if all(np.array_equal(ts, stamps) for _, ts in shown):  # the usual case: every series at every step
        matrix = np.stack([p.vals[~np.isnan(p.vals)] for p, _ in shown])
        low = np.minimum.reduceat(matrix, starts, axis=1).ravel()
        high = np.maximum.reduceat(matrix, starts, axis=1).ravel()
        placed = [np.arange(n_bands)] * len(shown)
    else:
        lows, highs, placed = [], [], []  # and the bands each series has values in
        for p, ts in shown:
            vals = p.vals[~np.isnan(p.vals)]
            bands = band_of[np.searchsorted(stamps, ts)]
            first = np.flatnonzero(np.concatenate(([True], bands[1:] != bands[:-1])))
            lows.append(np.minimum.reduceat(vals, first))
            highs.append(np.maximum.reduceat(vals, first))
            placed.append(bands[first])
        low, high = np.concatenate(lows), np.concatenate(highs)
    texts = np.array(humanize_many(low, spec.unit), dtype=object)
    spread = np.flatnonzero(low != high)
    if spread.size:
        high_texts = np.array(humanize_many(high[spread], spec.unit), dtype=object)
        differs = high_texts != texts[spread]
        at = spread[differs]
        texts[at] = texts[at] + " – " + high_texts[differs]
    table = np.full((len(shown), n_bands), "", dtype=object)  # one row per series
    offset = 0
    for row, bands in enumerate(placed):
        table[row, bands] = prefixes[row] + texts[offset : offset + len(bands)]
        offset += len(bands)
    lines = ["\n".join(filter(None, column)) for column in table.T.tolist()]
    x_text = _px(edges)
    widths = _px(np.diff(edges))
    first_ts, last_ts = stamps[starts].tolist(), stamps[ends - 1].tolist()
    out = ['<g class="cols" fill="#000" fill-opacity="0">']
    for k, band_lines in enumerate(lines):
        if edges[k + 1] <= edges[k]:
            continue
        when = _when(first_ts[k], spec.tz)
        if last_ts[k] != first_ts[k]:
            to = _when(last_ts[k], spec.tz)
            when += " – " + (to[11:] if to[:10] == when[:10] else to)
        out.append(
            f'<rect x="{x_text[k]}" y="{top}" width="{widths[k]}" height="{plot_h}">'
            f"<title>{when}\n{band_lines}</title></rect>"
        )
    out.append("</g>")
    return "".join(out)


COINCIDE_PX = 1.5  # two lines closer than this at (nearly) every shared time look like one
COINCIDE_SHARE = 0.9


def _under(prepared: list[_Prepared], px_per_unit: float) -> list[int | None]:
    """For each series, the series drawn after it that covers its line (``None``: nothing does).

    A line is covered when, at ``COINCIDE_SHARE`` of the times either has a point, both have
    one within ``COINCIDE_PX`` pixels: drawn over it the later line would hide it. The
    cover of each series is the last of the series that coincide with it.
    """
    out: list[int | None] = [None] * len(prepared)
    tops = [p.vals + p.base for p in prepared]
    for i, a in enumerate(prepared):
        for j in range(len(prepared) - 1, i, -1):
            b = prepared[j]
            if len(a.ts) == len(b.ts) and np.array_equal(a.ts, b.ts):
                ya, yb = tops[i], tops[j]
            else:
                grid, ia, ib = np.intersect1d(a.ts, b.ts, return_indices=True)
                either = len(np.union1d(a.ts[~np.isnan(a.vals)], b.ts[~np.isnan(b.vals)]))
                if not grid.size or grid.size < COINCIDE_SHARE * either:
                    continue
                ya, yb = tops[i][ia], tops[j][ib]
            both = ~np.isnan(ya) & ~np.isnan(yb)
            either_n = int(np.count_nonzero(~np.isnan(ya) | ~np.isnan(yb)))
            if not both.any():
                continue
            close = np.abs(ya[both] - yb[both]) * px_per_unit <= COINCIDE_PX
            if np.count_nonzero(close) >= COINCIDE_SHARE * max(either_n, 1):
                out[i] = j
                break
    return out


def _too_thin(vals: np.ndarray, px_per_unit: float) -> bool:
    """Whether a stacked band is under ``COINCIDE_PX`` thick at ``COINCIDE_SHARE`` of its points."""
    present = vals[~np.isnan(vals)]
    if not present.size:
        return False
    return bool(np.count_nonzero(np.abs(present) * px_per_unit <= COINCIDE_PX) >= COINCIDE_SHARE * present.size)


def render_chart(series: Iterable[ChartSeries], spec: ChartSpec | None = None) -> str:  # noqa: C901, PLR0915 - the SVG laid out in one pass: axes, bands, lines, markers and legend share the scales
    """The whole chart as one ``<svg>`` element (a string safe to embed in HTML)."""
    spec = spec or ChartSpec()
    all_series = list(series)
    shown = all_series[: spec.max_series]
    prepared = _prepare(shown, spec)

    present = [p for p in prepared if np.any(~np.isnan(p.vals))]
    t_lo = spec.start_ms if spec.start_ms is not None else min((int(p.ts[0]) for p in present), default=0)
    t_hi = spec.end_ms if spec.end_ms is not None else max((int(p.ts[-1]) for p in present), default=t_lo + 1)
    if t_hi <= t_lo:
        t_hi = t_lo + 1000

    lows = [float(np.nanmin(p.vals + p.base)) for p in present]
    highs = [float(np.nanmax(p.vals + p.base)) for p in present]
    lows += list(spec.thresholds)
    highs += list(spec.thresholds)
    data_lo = min(lows, default=0.0)
    data_hi = max(highs, default=1.0)
    lo = spec.y_min if spec.y_min is not None else min(0.0, data_lo)
    hi = spec.y_max if spec.y_max is not None else data_hi
    y_lo, y_hi, yt = y_ticks(lo, hi, spec.unit)
    if spec.y_min is not None:
        y_lo = spec.y_min
    if spec.y_max is not None:
        y_hi = spec.y_max
    yt = [t for t in yt if y_lo - 1e-9 * abs(y_hi - y_lo) <= t <= y_hi + 1e-9 * abs(y_hi - y_lo)]

    width = max(spec.width, 200)
    plot_w = width - MARGIN_LEFT - MARGIN_RIGHT
    plot_h = max(spec.height - MARGIN_TOP - AXIS_HEIGHT, 40)
    left, top = MARGIN_LEFT, MARGIN_TOP
    bottom = top + plot_h

    def x(t: float) -> float:
        return left + (t - t_lo) / (t_hi - t_lo) * plot_w

    def y(v: float) -> float:
        return bottom - (v - y_lo) / ((y_hi - y_lo) or 1.0) * plot_h

    # Colours from the series' keys; a line another one would hide is drawn wider under it
    # (a rim of its colour shows) and its legend entry says what it is under.
    styles = series_styles([s.key or s.name for s in shown])
    px_per_unit = plot_h / ((y_hi - y_lo) or 1.0)
    # Stacked, a series is hidden when its band is too thin to see; drawn as lines, when a
    # later line covers it.
    stacked = spec.mode == "stacked"
    cover: list[int | None] = [None] * len(prepared) if stacked else _under(prepared, px_per_unit)
    thin = [stacked and _too_thin(p.vals, px_per_unit) for p in prepared]
    depth = [0] * len(prepared)  # how many coinciding lines are drawn over each line
    for i in range(len(prepared) - 1, -1, -1):
        over = cover[i]
        if over is not None:
            depth[i] = depth[over] + 1
    top_of = list(range(len(prepared)))
    for i in range(len(prepared) - 1, -1, -1):
        over = cover[i]
        if over is not None:
            top_of[i] = top_of[over]
    legend_texts = []
    for i, s in enumerate(shown):
        text = s.name or "{}"
        if cover[i] is not None:
            text += f" (under {shown[top_of[i]].name or '{}'})"
        elif thin[i]:
            text += " (too thin to see)"
        legend_texts.append(text if len(text) <= LEGEND_MAX_CHARS else text[: LEGEND_MAX_CHARS - 1] + "…")

    # Legend layout: items flow left to right in rows.
    legend_items: list[tuple[float, int, int]] = []
    legend_h = 0
    if spec.legend and shown:
        lx: float = left
        row = 0
        for i in range(len(shown)):
            w = 18 + len(legend_texts[i]) * CHAR_W + 14
            if lx + w > width - MARGIN_RIGHT and lx > left:
                row += 1
                lx = left
            legend_items.append((lx, row, i))
            lx += w
        legend_h = (row + 1) * LEGEND_ROW + 6
        if len(all_series) > len(shown):
            legend_h += LEGEND_ROW
    height = top + plot_h + AXIS_HEIGHT + legend_h

    parts: list[str] = []
    label = spec.title or "chart"
    parts.append(
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="{_attr(label)}" '
        f'data-unit="{_attr(spec.unit)}" data-mode="{_attr(spec.mode)}" '
        f'data-start="{t_lo}" data-end="{t_hi}">'
    )
    parts.append(f"<title>{escape(label)}</title>")
    parts.append(
        f'<rect class="plot-bg" x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="none"/>'
    )

    # Y grid and labels.
    parts.append('<g class="axis y-axis" font-size="11" text-anchor="end">')
    for v in yt:
        yy = y(v)
        parts.append(
            f'<line class="grid" x1="{left}" x2="{left + plot_w}" y1="{_f(yy)}" y2="{_f(yy)}" '
            f'stroke="#ddd" stroke-width="1"/>'
            f'<text x="{left - 6}" y="{_f(yy + 4)}">{escape(humanize(v, spec.unit))}</text>'
        )
    caption = AXIS_CAPTION.get(spec.unit)
    if caption:
        cy = _f(top + plot_h / 2)
        parts.append(
            f'<text class="unit" x="14" y="{cy}" text-anchor="middle" transform="rotate(-90 14 {cy})">'
            f"{escape(caption)}</text>"
        )
    parts.append("</g>")

    # Time axis.
    n_ticks = max(int(plot_w // 90), 2)
    parts.append('<g class="axis x-axis" font-size="11" text-anchor="middle">')
    parts.append(
        f'<line x1="{left}" x2="{left + plot_w}" y1="{bottom}" y2="{bottom}" stroke="#999" stroke-width="1"/>'
    )
    for t, text in time_ticks(t_lo, t_hi, spec.tz, n_ticks):
        xx = x(t)
        if xx < left - 0.5 or xx > left + plot_w + 0.5:
            continue
        parts.append(
            f'<line class="tick" x1="{_f(xx)}" x2="{_f(xx)}" y1="{bottom}" y2="{bottom + 4}" stroke="#999"/>'
            f'<text x="{_f(xx)}" y="{bottom + 16}" data-ts="{t}">{escape(text)}</text>'
        )
    tzname = dt.datetime.fromtimestamp(t_hi / 1000, spec.tz).tzname() or ""
    parts.append(
        f'<text class="tz" x="{left + plot_w}" y="{bottom + AXIS_HEIGHT - 1}" text-anchor="end" '
        f'font-size="10" fill="#777">{escape(tzname)}</text>'
    )
    parts.append("</g>")

    if not present:
        parts.append(
            f'<text class="no-data" x="{_f(left + plot_w / 2)}" y="{_f(top + plot_h / 2)}" '
            f'text-anchor="middle" font-size="14" fill="#888">{escape(spec.empty_text)}</text>'
        )

    # Series.
    gap = _gap_ms(prepared, spec)
    x_scale = plot_w / (t_hi - t_lo)
    y_scale = plot_h / ((y_hi - y_lo) or 1.0)

    def y_px(values: np.ndarray) -> np.ndarray:
        # Far off-chart points (a fixed y range) are clipped anyway: keep their text finite.
        with np.errstate(over="ignore", invalid="ignore"):
            return np.minimum(np.maximum(bottom - (values - y_lo) * y_scale, -1e6), 1e6)

    def tenths(px: npt.NDArray[np.float64]) -> np.ndarray:
        return np.rint(px * 10).astype(np.int64)

    drawn: list[tuple[_Prepared, np.ndarray, np.ndarray, np.ndarray, list[tuple[int, int]]]] = []
    for p in prepared:  # (series, kept indices, x and y of each kept point in 0.1 px, gap-free segments)
        segs = _segments(p.ts, p.vals, gap)
        xs = (p.ts - t_lo) * x_scale + left
        tops = p.vals + p.base
        kept, segs = _thin(xs, tops, segs, plot_w)
        keep = np.arange(len(xs)) if kept is None else kept
        x10 = tenths(np.minimum(np.maximum(xs[keep], -1e6), 1e6))
        drawn.append((p, keep, x10, tenths(y_px(np.nan_to_num(tops[keep]))), segs))
    total_points = sum(b - a for *_, segs in drawn for a, b in segs)
    with_titles = total_points <= spec.max_point_titles
    clip_id = f"clip{next(_clip_ids)}"
    parts.append(
        f'<clipPath id="{clip_id}"><rect x="{left}" y="{top - 2}" width="{plot_w}" height="{plot_h + 4}"/></clipPath>'
    )
    parts.append(f'<g class="series" data-count="{len(prepared)}">')
    ly0 = bottom + AXIS_HEIGHT + 4
    legend_at = {i: (lx, row) for lx, row, i in legend_items}
    for i, (p, keep, x10, y10, segs) in enumerate(drawn):
        colour, dash = styles[i]
        dash_attr = f' stroke-dasharray="{dash}"' if dash else ""
        d_line = _subpaths(x10, y10, segs)
        d_area: list[str] = []
        if spec.mode == "stacked":  # down the line, back along the stack below (reversed)
            n = len(x10)
            back = _subpaths(
                x10[::-1], tenths(y_px(p.base[keep]))[::-1], [(n - b, n - a) for a, b in segs], "L"
            )
            d_area = [f"{line} {under} Z" for line, under in zip(d_line, back, strict=True)]
        name = _attr(p.series.name)
        # One group per series: its area, line, point markers and legend entry, so hovering
        # any of them highlights the series (CSS dims the others).
        parts.append(f'<g class="s" data-name="{name}" fill="{colour}" fill-opacity="0">')
        parts.append(f'<g clip-path="url(#{clip_id})">')
        if d_area:
            parts.append(f'<path class="area" d="{" ".join(d_area)}" fill-opacity="0.35" stroke="none"/>')
        stroke_w = _f(1.5 + 2.5 * min(depth[i], 2))  # past two rims the legend tells the rest
        parts.append(
            f'<path class="line" d="{" ".join(d_line)}" fill="none" stroke="{colour}" '
            f'stroke-width="{stroke_w}" stroke-linejoin="round"{dash_attr} data-name="{name}" '
            f'data-segments="{len(segs)}"'
            + (f' data-under="{_attr(shown[top_of[i]].name)}"' if cover[i] is not None else "")
            + "/>"
        )
        # Point markers: invisible until hovered (they carry the tooltip); isolated points,
        # which draw no line, are always visible. Humanised numbers hold no markup characters.
        marked = [(a, b) for a, b in segs if with_titles or b - a == 1]
        if marked:
            tip = escape(p.series.name) + "\n"
            at = np.concatenate([np.arange(a, b) for a, b in marked])
            texts = humanize_many(p.vals[keep[at]], spec.unit) if with_titles else None
            stamps = p.ts[keep[at]].tolist()
            cxs, cys = _tenths_many(x10[at]), _tenths_many(y10[at])
            n = 0
            for a, b in marked:
                extra = ' class="iso" fill-opacity="1"' if b - a == 1 else ""
                for _ in range(a, b):
                    title = f"<title>{tip}{_when(stamps[n], spec.tz)}: {texts[n]}</title>" if texts else ""
                    parts.append(f'<circle cx="{cxs[n]}" cy="{cys[n]}" r="3"{extra}>{title}</circle>')
                    n += 1
        parts.append("</g>")
        if i in legend_at:
            lx, row = legend_at[i]
            yy = ly0 + row * LEGEND_ROW
            full = p.series.name or "{}"
            if cover[i] is not None:
                full += f"\ndrawn under {shown[top_of[i]].name or '{}'}: the same values"
            elif thin[i]:
                full += "\nits band is thinner than the line: values near 0 next to the others"
            parts.append(
                f'<g class="legend-item" font-size="11" fill-opacity="1"><title>{escape(full)}</title>'
                f'<rect x="{_f(lx)}" y="{_f(yy)}" width="12" height="10" fill-opacity="1"/>'
                f'<text x="{_f(lx + 16)}" y="{_f(yy + 9)}" fill="#1f2328">{escape(legend_texts[i])}</text></g>'
            )
        parts.append("</g>")
    parts.append("</g>")

    if not with_titles and present:
        parts.append(_band_tooltips(prepared, spec, x_scale, t_lo, left, top, plot_w, plot_h))

    # Thresholds: a dashed line, its value (and name) written at its right end.
    for th in spec.thresholds:
        if y_lo <= th <= y_hi:
            yy = y(th)
            text = humanize(th, spec.unit)
            if spec.threshold_names.get(th):
                text = f"{spec.threshold_names[th]} {text}"
            ty = yy - 4 if yy - 4 - 10 >= top else yy + 12  # above the line, unless at the top
            # At the line's left end: the newest data, at the right, is what people look at.
            parts.append(
                f'<g class="threshold"><line class="threshold" x1="{left}" x2="{left + plot_w}" '
                f'y1="{_f(yy)}" y2="{_f(yy)}" stroke="#d62728" stroke-width="1.5" stroke-dasharray="5 4">'
                f"<title>threshold {escape(text)}</title></line>"
                f'<text class="threshold-label" x="{left + 4}" y="{_f(ty)}" text-anchor="start" '
                f'font-size="10" fill="#d62728">{escape(text)}</text></g>'
            )

    if len(all_series) > len(shown) and legend_items:
        yy = ly0 + (legend_items[-1][1] + 1) * LEGEND_ROW
        parts.append(
            f'<g class="legend" font-size="11"><text class="more" x="{left}" y="{_f(yy + 9)}" fill="#a00">'
            f"showing {len(shown)} of {len(all_series)} series</text></g>"
        )
    parts.append("</svg>")
    return "".join(parts)
