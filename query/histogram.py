"""Native histogram samples for the rule unit-test path: a FloatHistogram value, its test
notation and the way histogram samples travel through float columns.

Notation (promtool / promqltest): ``{{schema:1 sum:3 count:22 z_bucket:1 z_bucket_w:0.001
buckets:[5 10 7] offset:-3 n_buckets:[4 5] n_offset:-5 counter_reset_hint:gauge
custom_values:[1 2]}}``; a field left out is 0. A series value may also be
``{{a}}+{{b}}xN`` / ``{{a}}-{{b}}xN`` (N+1 samples a, a+b, ...) or ``{{a}}xN`` (N+1 copies).

Storage keeps float columns, so a histogram sample is stored as a NaN whose payload is
``HIST_TAG | index`` into a table kept by the store (see ``MemoryStorage.add_histogram``).
Arithmetic on such a value is never meaningful: the engine refuses it with a clear error.
"""

from __future__ import annotations

import math
import re
import struct
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np

from query.promjson import go_g

HINTS = ("unknown", "reset", "not_reset", "gauge")
CUSTOM_BUCKETS_SCHEMA = -53

# Quiet NaN with a tag in the upper payload bits; the low 32 bits index the store's table.
HIST_TAG = 0x7FFA_4E48_0000_0000
_TAG_MASK = 0xFFFF_FFFF_0000_0000


class HistogramError(ValueError):
    """A histogram value written wrongly, or two histograms that cannot be combined."""


def encode_ref(index: int) -> float:
    ref: float = struct.unpack("<d", struct.pack("<Q", HIST_TAG | index))[0]
    return ref


def decode_ref(value: float) -> int | None:
    """Table index of a histogram reference, or None for an ordinary float."""
    if value == value:
        return None
    bits = struct.unpack("<Q", struct.pack("<d", value))[0]
    return bits & 0xFFFF_FFFF if bits & _TAG_MASK == HIST_TAG else None


def ref_mask(values: np.ndarray) -> np.ndarray:
    """Which elements of a float64 array are histogram references."""
    arr = np.ascontiguousarray(values, dtype=np.float64)
    return np.equal(np.bitwise_and(arr.view(np.uint64), np.uint64(_TAG_MASK)), np.uint64(HIST_TAG))


@dataclass
class FloatHistogram:
    """One native histogram (exponential schema, or custom buckets with schema -53).

    Buckets are one span per sign: ``pos_buckets[i]`` is bucket index ``pos_offset + i``."""

    schema: int = 0
    count: float = 0.0
    sum: float = 0.0
    zero_count: float = 0.0
    zero_threshold: float = 0.0
    pos_buckets: list[float] = field(default_factory=list)
    pos_offset: int = 0
    neg_buckets: list[float] = field(default_factory=list)
    neg_offset: int = 0
    custom_values: list[float] = field(default_factory=list)
    hint: str = "unknown"

    @property
    def uses_custom_buckets(self) -> bool:
        return self.schema == CUSTOM_BUCKETS_SCHEMA

    def copy(self) -> "FloatHistogram":
        return replace(self, pos_buckets=list(self.pos_buckets), neg_buckets=list(self.neg_buckets),
                       custom_values=list(self.custom_values))

    # ------------------------------------------------------------------ buckets
    def _indexed(self, negative: bool) -> dict[int, float]:
        buckets, offset = (self.neg_buckets, self.neg_offset) if negative else (self.pos_buckets, self.pos_offset)
        return {offset + i: c for i, c in enumerate(buckets)}

    @staticmethod
    def _span(indexed: dict[int, float]) -> tuple[list[float], int]:
        """Dense span over the non-zero buckets (zeros inside are kept, as a Compact does)."""
        used = [i for i, c in indexed.items() if c != 0]
        if not used:
            return [], 0
        lo, hi = min(used), max(used)
        return [indexed.get(i, 0.0) for i in range(lo, hi + 1)], lo

    def compact(self) -> "FloatHistogram":
        """Empty buckets at either end removed (offsets adjusted), as Prometheus compacts."""
        pos, po = self._span(self._indexed(False))
        neg, no = self._span(self._indexed(True))
        return replace(self.copy(), pos_buckets=pos, pos_offset=po, neg_buckets=neg, neg_offset=no)

    def _reduced(self, schema: int) -> "FloatHistogram":
        """The same histogram at a lower exponential schema (adjacent buckets merged)."""
        if schema == self.schema:
            return self
        shift = self.schema - schema

        def merge(indexed: dict[int, float]) -> dict[int, float]:
            out: dict[int, float] = {}
            for i, c in indexed.items():
                j = ((i - 1) >> shift) + 1
                out[j] = out.get(j, 0.0) + c
            return out

        pos, po = self._span(merge(self._indexed(False)))
        neg, no = self._span(merge(self._indexed(True)))
        return replace(self.copy(), schema=schema, pos_buckets=pos, pos_offset=po, neg_buckets=neg, neg_offset=no)

    def combine(self, other: "FloatHistogram", sign: float) -> "FloatHistogram":
        """``self + other`` (sign 1) or ``self - other`` (sign -1), bucket by bucket."""
        if self.uses_custom_buckets != other.uses_custom_buckets:
            raise HistogramError("cannot combine histograms with exponential and custom buckets")
        if self.uses_custom_buckets and self.custom_values != other.custom_values:
            raise HistogramError("cannot combine histograms with different custom bucket bounds")
        a, b = self, other
        if not self.uses_custom_buckets and a.schema != b.schema:
            low = min(a.schema, b.schema)
            a, b = a._reduced(low), b._reduced(low)
        out = a.copy()
        out.count = a.count + sign * b.count
        out.sum = a.sum + sign * b.sum
        out.zero_count = a.zero_count + sign * b.zero_count
        out.zero_threshold = max(a.zero_threshold, b.zero_threshold)
        for negative in (False, True):
            merged = a._indexed(negative)
            for i, c in b._indexed(negative).items():
                merged[i] = merged.get(i, 0.0) + sign * c
            lo = min(merged) if merged else 0
            hi = max(merged) if merged else -1
            dense = [merged.get(i, 0.0) for i in range(lo, hi + 1)]
            if negative:
                out.neg_buckets, out.neg_offset = dense, lo
            else:
                out.pos_buckets, out.pos_offset = dense, lo
        return out

    def detect_reset(self, prev: "FloatHistogram") -> bool:
        """Whether ``self`` following ``prev`` is a counter reset (as a TSDB appender judges)."""
        if self.hint == "gauge":
            return False
        if self.uses_custom_buckets != prev.uses_custom_buckets or self.custom_values != prev.custom_values:
            return True
        if self.schema > prev.schema or self.zero_threshold < prev.zero_threshold:
            return True
        if self.count < prev.count or self.zero_count < prev.zero_count:
            return True
        cur, old = self, prev
        if not self.uses_custom_buckets and cur.schema != old.schema:
            old = old._reduced(cur.schema)
        for negative in (False, True):
            now = cur._indexed(negative)
            for i, c in old._indexed(negative).items():
                if now.get(i, 0.0) < c:
                    return True
        return False

    # ------------------------------------------------------------------ notation
    def test_expression(self) -> str:
        """The canonical ``{{...}}`` text promtool compares expectations with."""
        m = self.compact()
        parts: list[str] = []
        if m.schema != 0:
            parts.append(f"schema:{m.schema}")
        for key, v in (("count", m.count), ("sum", m.sum), ("z_bucket", m.zero_count), ("z_bucket_w", m.zero_threshold)):
            if v != 0:
                parts.append(f"{key}:{go_g(v)}")
        if m.uses_custom_buckets:
            parts.append("custom_values:[" + " ".join(go_g(v) for v in m.custom_values) + "]")
        if m.hint != "unknown":
            parts.append(f"counter_reset_hint:{m.hint}")
        for key, okey, buckets, offset in (("buckets", "offset", m.pos_buckets, m.pos_offset),
                                           ("n_buckets", "n_offset", m.neg_buckets, m.neg_offset)):
            if buckets:
                if offset != 0:
                    parts.append(f"{okey}:{offset}")
                parts.append(f"{key}:[" + " ".join(go_g(v) for v in buckets) + "]")
        return "{{" + " ".join(parts) + "}}"

    def __str__(self) -> str:
        return self.test_expression()


# ---------------------------------------------------------------------- parsing

_FIELD_RE = re.compile(r"\s*([a-z_]+)\s*:\s*(\[[^\]]*\]|[^\s\[\]]+)")
_NUM_FIELDS = {"sum": "sum", "count": "count", "z_bucket": "zero_count", "z_bucket_w": "zero_threshold"}
_INT_FIELDS = {"schema": "schema", "offset": "pos_offset", "n_offset": "neg_offset"}
_LIST_FIELDS = {"buckets": "pos_buckets", "n_buckets": "neg_buckets", "custom_values": "custom_values"}


def _number(text: str, where: str) -> float:
    low = text.lower().lstrip("+")
    try:
        if low in ("inf", "-inf", "nan"):
            return float(low)
        return float(int(text, 0)) if low.startswith(("0x", "-0x")) else float(text)
    except ValueError:
        raise HistogramError(f"invalid number {text!r} in {where}") from None


def parse_histogram(text: str) -> FloatHistogram:
    """``{{schema:1 sum:3 buckets:[1 2]}}`` -> FloatHistogram."""
    s = text.strip()
    if not (s.startswith("{{") and s.endswith("}}")):
        raise HistogramError(f"a histogram is written {{{{...}}}}, got {text!r}")
    body = s[2:-2]
    h = FloatHistogram()
    seen: set[str] = set()
    pos = 0
    while pos < len(body):
        if not body[pos:].strip():
            break
        m = _FIELD_RE.match(body, pos)
        if not m:
            raise HistogramError(f"cannot read histogram field at {body[pos:].strip()[:30]!r} in {text!r}")
        key, raw = m.group(1), m.group(2)
        if key in seen:
            raise HistogramError(f'duplicate key "{key}" in histogram {text!r}')
        seen.add(key)
        if key in _NUM_FIELDS:
            setattr(h, _NUM_FIELDS[key], _number(raw, key))
        elif key in _INT_FIELDS:
            try:
                setattr(h, _INT_FIELDS[key], int(raw))
            except ValueError:
                raise HistogramError(f"{key} must be an integer, got {raw!r} in {text!r}") from None
        elif key in _LIST_FIELDS:
            if not (raw.startswith("[") and raw.endswith("]")):
                raise HistogramError(f"{key} must be a list like [1 2 3], got {raw!r}")
            setattr(h, _LIST_FIELDS[key], [_number(x, key) for x in raw[1:-1].split()])
        elif key == "counter_reset_hint":
            if raw not in HINTS:
                raise HistogramError(f"counter_reset_hint must be one of {', '.join(HINTS)}, got {raw!r}")
            h.hint = raw
        else:
            raise HistogramError(f"unknown histogram field {key!r} in {text!r}")
        pos = m.end()
    if h.custom_values and not h.uses_custom_buckets:
        raise HistogramError(f"custom_values need schema:{CUSTOM_BUCKETS_SCHEMA} in {text!r}")
    return h


_SERIES_RE = re.compile(r"^(\{\{.*?\}\})(?:([+-])(\{\{.*?\}\}))?(?:x([0-9]+))?$", re.S)


def expand_histogram(token: str) -> list[FloatHistogram]:
    """One series-values item: ``{{a}}``, ``{{a}}xN``, ``{{a}}+{{b}}xN`` or ``{{a}}-{{b}}xN``."""
    m = _SERIES_RE.match(token.strip())
    if not m or (m.group(3) and m.group(4) is None):
        raise HistogramError(f"invalid histogram series item {token!r} (expected {{{{...}}}}, {{{{...}}}}xN or "
                             "{{...}}+{{...}}xN)")
    base = parse_histogram(m.group(1))
    times = int(m.group(4)) if m.group(4) is not None else 0
    if m.group(3) is None:
        return [base.copy() for _ in range(times + 1)]
    inc = parse_histogram(m.group(3))
    if not base.uses_custom_buckets and base.schema > inc.schema:
        raise HistogramError(f"error combining histograms: cannot merge from schema {inc.schema} to {base.schema}")
    out = [base]
    cur = base
    for _ in range(times):
        cur = cur.combine(inc, 1.0 if m.group(2) == "+" else -1.0)
        out.append(cur)
    return out


def split_series_values(text: str) -> list[str]:
    """Split a series-values string on blanks, keeping each ``{{...}}`` item (with its
    ``+{{...}}xN`` tail) whole."""
    out: list[str] = []
    i, n = 0, len(text)
    while i < n:
        if text[i].isspace():
            i += 1
            continue
        j = i
        while j < n and not text[j].isspace():
            if text.startswith("{{", j):
                close = text.find("}}", j)
                if close < 0:
                    raise HistogramError(f"unclosed '{{{{' in series values {text!r}")
                j = close + 2
            else:
                j += 1
        out.append(text[i:j])
        i = j
    return out


# ------------------------------------------------------------------- HTTP API shape

# Prometheus' bucket boundary rules in the JSON API.
_OPEN_LEFT, _OPEN_RIGHT, _CLOSED_BOTH = 0, 1, 3


def _exp_upper(index: int, schema: int) -> float:
    return math.pow(2.0, index * 2.0**-schema)


def api_buckets(h: FloatHistogram) -> list[tuple[int, float, float, float]]:
    """Non-empty buckets as (boundary rule, lower, upper, count), lowest first: negative
    buckets, the zero bucket, then positive ones (as Prometheus' API lists them)."""
    out: list[tuple[int, float, float, float]] = []
    if h.uses_custom_buckets:
        bounds = [-math.inf, *h.custom_values, math.inf]
        for i, c in enumerate(h.pos_buckets):
            k = h.pos_offset + i
            if c != 0 and 0 <= k < len(bounds) - 1:
                out.append((_OPEN_LEFT, bounds[k], bounds[k + 1], c))
        return out
    for i in range(len(h.neg_buckets) - 1, -1, -1):
        c, k = h.neg_buckets[i], h.neg_offset + i
        if c != 0:
            out.append((_OPEN_RIGHT, -_exp_upper(k, h.schema), -_exp_upper(k - 1, h.schema), c))
    if h.zero_count != 0:
        out.append((_CLOSED_BOTH, -h.zero_threshold, h.zero_threshold, h.zero_count))
    for i, c in enumerate(h.pos_buckets):
        k = h.pos_offset + i
        if c != 0:
            out.append((_OPEN_LEFT, _exp_upper(k - 1, h.schema), _exp_upper(k, h.schema), c))
    return out


def api_json(h: FloatHistogram, fmt: Callable[[float], str] = go_g) -> dict:
    """The ``histogram`` object of a Prometheus API sample: ``{"count", "sum", "buckets"}``
    with numbers as strings (``fmt`` formats them; pass the API's float formatter)."""
    body: dict = {"count": fmt(h.count), "sum": fmt(h.sum)}
    buckets = [[rule, fmt(lo), fmt(hi), fmt(c)] for rule, lo, hi, c in api_buckets(h)]
    if buckets:
        body["buckets"] = buckets
    return body
