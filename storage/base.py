"""The storage interface every backend implements, and the writer interface scrapers use."""

from __future__ import annotations

import abc
import asyncio
import contextlib
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import numpy as np

from storage.matchers import Matcher
from storage.model import SampleBatch, Series

if TYPE_CHECKING:
    from storage.rollup_job import RollupRows, SealedBlock

DAY_MS = 86_400_000
HOUR_MS = 3_600_000
MINUTE_MS = 60_000


class Resolution(str, Enum):
    """Stored resolutions: raw samples, 1-minute and 1-hour rollups."""

    RAW = "raw"
    MINUTE = "1m"
    HOUR = "1h"

    @property
    def step_ms(self) -> int:
        return {"raw": 0, "1m": MINUTE_MS, "1h": HOUR_MS}[self.value]


# Rollup aggregate columns kept per (series, minute|hour) bucket.
AGGREGATES = ("count", "sum", "min", "max", "last", "increase", "first", "first_ts", "last_ts", "correction")
# A rollup chunk's columns (``storage.rollup_chunks``) and each one's name in the stores' chunk
# tables (SQLite and Cassandra alike); here so that the schema needs no chunk codec (the
# scraper's imports, issue #20 memory).
CHUNK_COLUMNS = ("ts", *AGGREGATES)
STORED_CHUNK_COLUMNS = {name: f"c_{name}" for name in CHUNK_COLUMNS}
# The aggregates rate/increase/delta read to answer as Prometheus does (``storage.rollup``).
RATE_AGGREGATES = ("count", "first", "first_ts", "last", "last_ts", "correction")
# Those of them added in schema version 5: buckets written before lack them and read NaN there
# (a NaN ``correction`` means "not known": a real one never is NaN).
ADDED_IN_V5 = ("first", "first_ts", "last_ts", "correction")


def aggregate_names(columns: Collection[str] | None) -> tuple[str, ...]:
    """The aggregates ``columns`` names, in ``AGGREGATES`` order (None: all of them)."""
    if columns is None:
        return AGGREGATES
    unknown = set(columns) - set(AGGREGATES)
    if unknown:
        raise ValueError(f"unknown rollup aggregates: {', '.join(sorted(unknown))}")
    return tuple(n for n in AGGREGATES if n in columns)


_NANS = np.full(4096, np.nan)  # (read-only: ``bucket_values`` hands out slices of it)
_NANS.flags.writeable = False


def bucket_values(agg: Mapping[str, np.ndarray], n: int) -> np.ndarray:
    """The sample values of ``n`` rollup buckets: their ``last`` column, or NaN when a read
    left it out (its query uses other aggregates only). Read-only either way; up to 4,096
    buckets a slice of one NaN row (``np.broadcast_to`` took ~3 us a call: a store's rollup
    read makes one per series, 800 of them each refresh of a rate panel)."""
    if "last" in agg.keys():
        return agg["last"]
    if n <= _NANS.size:
        return _NANS[:n]
    return np.broadcast_to(np.float64(np.nan), (n,))


@dataclass(slots=True)
class SeriesData:
    """Samples of one series over a time range, as NumPy columns.

    For raw data ``values`` holds the samples. For rollups ``timestamps`` are bucket
    starts, ``values`` holds the bucket's last value and ``agg`` the aggregate columns read
    (every one unless a select asked for some: then ``values`` is NaN without ``last``).
    """

    series: Series
    timestamps: np.ndarray  # int64 milliseconds, ascending
    values: np.ndarray  # float64, bit-exact (stale NaNs preserved)
    resolution: Resolution = Resolution.RAW
    agg: dict[str, np.ndarray] | None = field(default=None)

    def __len__(self) -> int:
        return len(self.timestamps)  # (called per series and query a few times: the cheapest form)


@dataclass(slots=True)
class FlatSamples:
    """Raw samples of many series in flat NumPy columns (``FlatRawReader.select_flat``):
    series ``series[i]`` (in label order, only series with samples) is rows
    ``offsets[i]:offsets[i + 1]`` of ``timestamps`` / ``values``, in time order."""

    series: list[Series]
    offsets: np.ndarray  # int64, len(series) + 1, from 0
    timestamps: np.ndarray  # int64 milliseconds
    values: np.ndarray  # float64, bit-exact (stale NaNs preserved)

    @classmethod
    def of(cls, data: Sequence[SeriesData]) -> FlatSamples:
        """From ``select``'s answer (raw, one part per series, in label order)."""
        data = [d for d in data if d.timestamps.shape[0]]
        offsets = np.zeros(len(data) + 1, dtype=np.int64)
        if not data:
            return cls([], offsets, np.zeros(0, dtype=np.int64), np.zeros(0))
        np.cumsum([d.timestamps.shape[0] for d in data], out=offsets[1:])
        return cls([d.series for d in data], offsets, np.concatenate([d.timestamps for d in data]),
                   np.concatenate([d.values for d in data]))

    def as_data(self) -> list[SeriesData]:
        """As ``select`` answers (a ``SeriesData`` per series)."""
        o = self.offsets.tolist()
        return [SeriesData(s, self.timestamps[a:b], self.values[a:b])
                for s, a, b in zip(self.series, o[:-1], o[1:], strict=True)]


def samples_of(data: Iterable[SeriesData]) -> int:
    """The samples in some series' data (an attribute walk: a Python ``__len__`` call per
    series cost a 6,400-series query 1-2 ms each time it counted)."""
    return sum([d.timestamps.shape[0] for d in data])


class StorageError(Exception):
    """A storage operation failed; the message says which and why."""


class Storage(abc.ABC):
    """What the rest of Ringmon needs of a store. All methods are coroutines."""

    @abc.abstractmethod
    async def write(self, batch: SampleBatch) -> None:
        """Persist a batch (idempotent: writing the same samples twice stores them once)."""

    @abc.abstractmethod
    async def select(
        self,
        matchers: Sequence[Matcher],
        start_ms: int,
        end_ms: int,
        resolution: Resolution = Resolution.RAW,
        *,
        columns: Collection[str] | None = None,
    ) -> list[SeriesData]:
        """Series matching all matchers with their samples in [start_ms, end_ms].

        ``columns``: for a rollup resolution, the aggregates the caller reads (None: all);
        a store may return more than asked, never fewer."""

    @abc.abstractmethod
    async def series(self, matchers: Sequence[Matcher], start_ms: int, end_ms: int) -> list[Series]:
        """Series matching all matchers that have data in the range (from the index)."""

    @abc.abstractmethod
    async def label_names(
        self, start_ms: int, end_ms: int, matchers: Sequence[Matcher] = ()
    ) -> list[str]:
        """Sorted label names of series active in the range."""

    @abc.abstractmethod
    async def label_values(
        self, name: str, start_ms: int, end_ms: int, matchers: Sequence[Matcher] = ()
    ) -> list[str]:
        """Sorted values of one label over series active in the range."""

    async def close(self) -> None:  # noqa: B027 - optional hook, no-op by default
        """Release connections and threads."""


# Optional capabilities of a store. A backend has one by defining the method; callers ask with
# ``isinstance(store, Capability)`` (runtime-checkable: the method's presence is what is checked).


@runtime_checkable
class RollupReader(Protocol):
    """A store that keeps 1-minute and 1-hour rollups beside raw samples (``select`` of a
    rollup resolution comes here)."""

    async def select_rollup(
        self,
        matchers: Sequence[Matcher],
        start_ms: int,
        end_ms: int,
        resolution: Resolution,
        columns: Collection[str] | None = None,
    ) -> list[SeriesData]: ...


@runtime_checkable
class LateMarks(Protocol):
    """A store that records the hours that received late samples, for the rollup job's late
    pass: ``(hour start ms, written at ms)`` per hour written after ``cursor_ms``."""

    async def late_marks_since(self, cursor_ms: int) -> list[tuple[int, int]]: ...


@runtime_checkable
class FlatRawReader(Protocol):
    """A store that answers a raw ``select`` as flat columns without an object per series
    (Cassandra: a read's samples arrive as columns; issue #20's range query over 6,400
    series made a ``SeriesData`` of each that the engine joined back into flat arrays).
    The same samples as ``select(matchers, start_ms, end_ms)``."""

    async def select_flat(self, matchers: Sequence[Matcher], start_ms: int, end_ms: int) -> FlatSamples: ...


@runtime_checkable
class FreshMinutes(Protocol):
    """A store that takes provisional minute buckets of the open rollup window (the fresh pass)."""

    async def write_fresh_minutes(self, rows: Sequence[RollupRows]) -> None: ...


@runtime_checkable
class FreshBlocks(Protocol):
    """A ``FreshMinutes`` store whose provisional chunks each hold a series' buckets of one
    *block* of the open window, keyed by the first: the fresh pass then writes each block's
    buckets from the block's start (those of its earlier passes again, kept by the job), so
    the chunk of each series and block is rewritten in place, and a read lists a chunk per
    block instead of one per pass (Cassandra: a 24 h read listed and joined up to ~120 per
    series and open window with a pass a minute)."""

    def fresh_block_start(self, ts_ms: int) -> int:
        """Where the chunk of the block holding bucket ``ts_ms`` starts: the job sends the
        buckets its passes wrote from there on again with each pass of that block."""
        ...


@runtime_checkable
class SealWrites(Protocol):
    """A store that writes a window's blocks and 1m and 1h rollups in one go, cheaper than
    ``write_blocks`` and two ``write_rollups`` apart (Cassandra: a series' block and its 1m
    chunk share a partition key, so they go as one request)."""

    async def write_seal(
        self, blocks: Sequence[SealedBlock], minutes: Sequence[RollupRows], hours: Sequence[RollupRows], *,
        new_from_ms: int | None = None, window_end_ms: int | None = None,
    ) -> None:
        """``new_from_ms`` (a live seal: its window's start): rollup chunks starting there or
        later hold nothing the seal must keep, so they are written without being read first.
        ``window_end_ms`` (a live seal's window end): a store may write the window's rollups
        of chunks started before it apart, unread, and merge them later (Cassandra's 1h
        pieces, merged every 6 h)."""
        ...


@runtime_checkable
class GroupedBlocks(Protocol):
    """A store that keeps a window's blocks of many series compressed together (SQLite: per
    target and part, ``storage.blocks.encode_group``): the seal hands it *plain* blocks
    (``storage.blocks.VERSION_PLAIN``: not compressed one by one, which would be work thrown
    away); returns the bytes it stored."""

    async def write_plain_blocks(self, blocks: Sequence[SealedBlock]) -> int: ...


@runtime_checkable
class RetentionByDeletion(Protocol):
    """A store without TTLs (SQLite): the rollup job applies its retention hourly; what was
    deleted per table."""

    async def apply_retention(self, now_ms: int) -> dict[str, int]: ...


@runtime_checkable
class HistogramSamples(Protocol):
    """A store that may hold native-histogram samples (the in-memory store of rule unit tests)."""

    @property
    def has_histograms(self) -> bool: ...


class SampleWriter(abc.ABC):
    """Where scrapers put samples. ``append`` may wait: that wait is the backpressure."""

    @abc.abstractmethod
    async def append(self, batch: SampleBatch) -> None: ...

    async def flush(self) -> None:  # noqa: B027 - optional hook, no-op by default
        """Wait until everything appended so far is stored (or spooled)."""

    async def close(self) -> None:
        await self.flush()

    def queue_depth(self) -> int:
        return 0


@runtime_checkable
class GroupWrites(Protocol):
    """A store that takes many batches in one call (SQLite: one transaction); the error of
    each batch, None where it was stored."""

    async def write_many(self, batches: Sequence[SampleBatch]) -> list[Exception | None]: ...


class GroupingWriter(SampleWriter):
    """The scrape loops' writer on an embedded store: the batches appended within
    ``gather_s`` of the first waiting one are stored together (``GroupWrites.write_many``:
    one hop to the store's writer thread and one transaction instead of one per scrape).
    ``append`` still returns once its batch is stored, or raises that batch's error; the
    wait is the backpressure, as with ``DirectWriter``."""

    def __init__(self, storage: GroupWrites, gather_s: float = 0.1) -> None:
        self.storage = storage
        self.gather_s = gather_s
        self._pending: list[tuple[SampleBatch, asyncio.Future[None]]] = []
        self._task: asyncio.Task[None] | None = None
        self._hurry = asyncio.Event()

    async def append(self, batch: SampleBatch) -> None:
        if not len(batch):
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append((batch, fut))
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="grouped writes")
        await fut

    async def _run(self) -> None:
        try:
            while self._pending:
                if not self._hurry.is_set():
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(self.gather_s):
                            await self._hurry.wait()
                group, self._pending = self._pending, []
                try:
                    errors = await self.storage.write_many([b for b, _ in group])
                except Exception as exc:  # noqa: BLE001 - every batch of the group gets it
                    errors = [exc] * len(group)
                except asyncio.CancelledError:
                    for _, fut in group:
                        fut.cancel()
                    raise
                for (_, fut), err in zip(group, errors, strict=True):
                    if fut.done():
                        continue
                    if err is None:
                        fut.set_result(None)
                    else:
                        fut.set_exception(err)
        finally:
            self._task = None

    async def flush(self) -> None:
        task = self._task
        if task is None:
            return
        self._hurry.set()
        try:
            await asyncio.shield(task)
        finally:
            self._hurry.clear()

    def queue_depth(self) -> int:
        return len(self._pending)


class DirectWriter(SampleWriter):
    """A writer that stores each batch straight through a ``Storage`` (embedded mode)."""

    def __init__(self, storage: Storage) -> None:
        self.storage = storage

    async def append(self, batch: SampleBatch) -> None:
        if len(batch):
            await self.storage.write(batch)
