"""The series model: label sets, stable 64-bit series ids, sample batches, stale markers."""

from __future__ import annotations

import hashlib
import math
import re
import struct
from array import array
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import overload

# A label set: (name, value) pairs sorted by name, including ("__name__", metric).
Labels = tuple[tuple[str, str], ...]

METRIC_NAME = "__name__"
METRIC_NAME_RE = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
LABEL_NAME_RE = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")

# Prometheus writes this exact NaN as a staleness marker (value.StaleNaN).
STALE_NAN_BITS = 0x7FF0000000000002
STALE_NAN: float = struct.unpack("<d", struct.pack("<Q", STALE_NAN_BITS))[0]


def float_bits(v: float) -> int:
    """The IEEE-754 bit pattern of ``v`` as an unsigned 64-bit int."""
    return int.from_bytes(struct.pack("<d", v), "little")


def is_stale(v: float) -> bool:
    """True when ``v`` is the staleness marker (compared bit for bit)."""
    return v != v and float_bits(v) == STALE_NAN_BITS


def make_labels(metric: str | None = None, **labels: str) -> Labels:
    """Build a sorted label set; convenience for code and tests."""
    d = dict(labels)
    if metric is not None:
        d[METRIC_NAME] = metric
    return tuple(sorted(d.items()))


def labels_from_dict(d: dict[str, str]) -> Labels:
    """Sorted label set from a mapping; empty values are dropped as in Prometheus."""
    return tuple(sorted((k, v) for k, v in d.items() if v != ""))


def canonical(labels: Labels) -> bytes:
    """The canonical byte form a series id hashes: name\\xffvalue\\xff... sorted by name."""
    return b"\xff".join(f"{k}\xfe{v}".encode() for k, v in labels)


def series_id(labels: Labels) -> int:
    """Stable signed 64-bit id (fits Cassandra ``bigint``) of a sorted label set."""
    digest = hashlib.blake2b(canonical(labels), digest_size=8).digest()
    return int.from_bytes(digest, "little", signed=True)


@dataclass(frozen=True, slots=True)
class Series:
    """One time series: its id and its sorted labels (``__name__`` included)."""

    id: int
    labels: Labels

    @classmethod
    def of(cls, labels: Labels) -> "Series":
        return cls(series_id(labels), labels)

    @property
    def metric(self) -> str:
        for k, v in self.labels:
            if k == METRIC_NAME:
                return v
        return ""

    def get(self, name: str, default: str = "") -> str:
        for k, v in self.labels:
            if k == name:
                return v
        return default

    def as_dict(self) -> dict[str, str]:
        return dict(self.labels)


class LayoutSeries(Sequence[Series]):
    """The series of a target's known layout, kept as their ids (8 bytes each) and made as
    ``Series`` only when asked for (issue #20 memory: a ``Series``, its id and its labels
    tuple took ~170 bytes a series for as long as a layout stood).

    ``make`` builds the whole list again (the scraper parses its layout plan's line texts);
    a writer that needs only ids reads ``ids``, and ``build``/``pick`` make ``Series`` without
    keeping them. Iterating or indexing keeps the list made (consumers that walk ``Series``
    each write, such as SQLite's, pay for it once). The ids and the series never change, so
    the same object is the same layout: writers compare it by identity.
    """

    __slots__ = ("ids", "_make", "_made")

    def __init__(
        self, ids: array[int] | memoryview, make: Callable[[], list[Series]], made: list[Series] | None = None
    ) -> None:
        # int64s (an array "q" or a view of one): np.frombuffer(ids, np.int64) reads them without a copy
        self.ids = ids
        self._make = make
        self._made = made

    def __len__(self) -> int:
        return len(self.ids)

    def build(self) -> list[Series]:
        """The series, made afresh unless kept (the caller's list: not kept here)."""
        if self._made is not None:
            return list(self._made)
        out = self._make()
        if len(out) != len(self.ids) or any(s.id != i for s, i in zip(out, self.ids, strict=True)):
            raise RuntimeError("a layout's series made again differ from its ids")
        return out

    @contextmanager
    def lent(self, made: list[Series]) -> Iterator[None]:
        """Within the block the series are ``made`` (the scrape that made the layout has them:
        its writer picks what it indexes from them instead of making them again); after it
        they go, unless kept before."""
        kept = self._made
        self._made = made
        try:
            yield
        finally:
            self._made = kept

    def pick(self, rows: Sequence[int]) -> list[Series]:
        """The series at ``rows``, made without keeping the others (none made for no rows)."""
        if not rows:
            return []
        made = self._made if self._made is not None else self.build()
        return [made[i] for i in rows]

    def with_tail(self, tail: Sequence[Series]) -> LayoutSeries:
        """These series followed by ``tail`` (a scrape's synthetic series), as one layout."""
        tail = list(tail)

        def make() -> list[Series]:
            return self.build() + tail

        ids = array("q", self.ids)
        ids.extend(s.id for s in tail)
        self.ids = memoryview(ids)[: len(self.ids)]  # one copy of the ids: these are its head
        return LayoutSeries(ids, make)

    def _list(self) -> list[Series]:
        if self._made is None:
            self._made = self.build()
        return self._made

    @overload
    def __getitem__(self, i: int) -> Series: ...

    @overload
    def __getitem__(self, i: slice) -> list[Series]: ...

    def __getitem__(self, i: int | slice) -> Series | list[Series]:
        return self._list()[i]

    def __iter__(self) -> Iterator[Series]:
        return iter(self._list())

    def __eq__(self, other: object) -> bool:
        if other is self:
            return True
        if isinstance(other, LayoutSeries):
            return self.ids == other.ids and self._list() == other._list()
        if isinstance(other, list):
            return self._list() == other
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]  # a sequence, compared by its items

    def __repr__(self) -> str:
        return f"LayoutSeries({len(self.ids)} series)"


def same_series(kept: list[Series] | LayoutSeries, series: list[Series] | LayoutSeries) -> bool:
    """Whether a batch's ``series`` are the ``kept`` ones of an earlier batch of its target: the
    same ``LayoutSeries`` (a layout plan's, which never changes), or a list of the same
    ``Series`` (a C-speed identity walk). A ``LayoutSeries`` is never compared item by item."""
    if kept is series:
        return True
    return isinstance(series, list) and isinstance(kept, list) and kept == series


@dataclass(slots=True)
class SampleBatch:
    """Samples to write together; from one scrape they share ``target`` and usually a timestamp.

    ``target`` is the scrape target key (``pool/host:port``) that partitions recent raw data;
    rule outputs and other non-scraped data use a synthetic key such as ``rules/<group>``.
    """

    target: str
    series: list[Series] | LayoutSeries = field(default_factory=list)
    timestamps: list[int] = field(default_factory=list)  # milliseconds since epoch
    values: list[float] = field(default_factory=list)

    def add(self, series: Series, ts_ms: int, value: float) -> None:
        if not isinstance(self.series, list):
            self.series = list(self.series)
        self.series.append(series)
        self.timestamps.append(ts_ms)
        self.values.append(value)

    def __len__(self) -> int:
        return len(self.values)


def format_labels(labels: Labels) -> str:
    """``metric{a="b"}`` text form, for logs, errors and tests."""
    name = ""
    rest = []
    for k, v in labels:
        if k == METRIC_NAME:
            name = v
        else:
            esc = v.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')
            rest.append(f'{k}="{esc}"')
    return f"{name}{{{','.join(rest)}}}" if rest or not name else name


def is_nan(v: float) -> bool:
    return math.isnan(v)
