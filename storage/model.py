"""The series model: label sets, stable 64-bit series ids, sample batches, stale markers."""

from __future__ import annotations

import hashlib
import math
import re
import struct
from dataclasses import dataclass, field

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


@dataclass(slots=True)
class SampleBatch:
    """Samples to write together; from one scrape they share ``target`` and usually a timestamp.

    ``target`` is the scrape target key (``pool/host:port``) that partitions recent raw data;
    rule outputs and other non-scraped data use a synthetic key such as ``rules/<group>``.
    """

    target: str
    series: list[Series] = field(default_factory=list)
    timestamps: list[int] = field(default_factory=list)  # milliseconds since epoch
    values: list[float] = field(default_factory=list)

    def add(self, series: Series, ts_ms: int, value: float) -> None:
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
