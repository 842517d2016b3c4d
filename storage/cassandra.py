"""Cassandra backend of the storage interface.

Prepared statements only. Every driver call is ``execute_async`` bridged to an asyncio future
(the driver's own I/O thread completes it; the event loop never blocks). Writes are grouped
per partition: one scrape of one target (same hour) is one UNLOGGED single-partition batch
of ``raw_recent`` rows; index rows for series first seen in a time bucket are batched per
index partition. The writer's frames of a moment, many targets' scrapes, go together
(``write_frame_sets``: UNLOGGED batches per replica set, ``replica_batches``): the node's CPU
is per request more than per byte.

Raw reads: one request per (target, series chunk, hour chunk), all concurrent, each small
enough (``RAW_REQUEST_SERIES_HOURS``) to run unpaged - a paged multi-partition ``IN`` makes
Cassandra walk the partitions one after another, an unpaged one reads them together. Their
results are decoded straight into NumPy columns by ``ColumnarProtocolHandler`` (a second
session): rows of fixed 8-byte cells are one ``np.frombuffer``, no Python object per cell.
(The driver's own ``NumpyProtocolHandler`` is unusable with NumPy 2: it calls the removed
``ndarray.newbyteorder`` and the driver swallows the error, returning no rows at all.)

Floats are stored as CQL ``double``: 8 raw IEEE bytes end to end, so NaN payloads (stale
markers) survive bit for bit (tested).

The series index (see storage/schema.py) selects by metric name and label matchers over a
time range and reads only index partitions of that range's buckets; every index partition
read is recorded in ``index_reads`` (a counter of (table, bucket)) so tests can prove it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import struct
import sys
import time
import zlib
from collections import Counter
from collections.abc import Callable, Collection, Coroutine, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Self, TypeVar, cast

import numpy as np
from cachetools import LRUCache
from cassandra import ConsistencyLevel, OperationTimedOut, Unavailable, WriteTimeout
from cassandra.cluster import (
    EXEC_PROFILE_DEFAULT,
    Cluster,
    ExecutionProfile,
    NoHostAvailable,
    ResponseFuture,
    Session,
)
from cassandra.connection import ConnectionException
from cassandra.cqltypes import BytesType, DoubleType, Int32Type, LongType, UTF8Type
from cassandra.marshal import int32_pack, int64_pack
from cassandra.metadata import Metadata
from cassandra.policies import ConstantReconnectionPolicy, DCAwareRoundRobinPolicy, TokenAwarePolicy
from cassandra.protocol import ProtocolHandler, ResultMessage, read_int
from cassandra.query import BatchStatement, BatchType, BoundStatement, PreparedStatement, tuple_factory

from common.sequences import slices
from storage import schema as sch
from storage.base import FlatSamples, Resolution, SeriesData, Storage, StorageError
from storage.cassandra_frames import (
    FRAME_CACHE_BYTES,
    CachedFrames,
    EncodedFrame,
    FrameBlock,
    FrameCache,
    FrameEncoder,
    FrameGroup,
    FrameRows,
    GroupBlock,
    Keep,
    KeptBlock,
    Placement,
    blocks_in_order,
    extend_many,
    frame_samples,
    frame_samples_many,
    key_span_start,
    split_frames,
)
from storage.frames import FRAME_MIN_SAMPLES, decode_layout, encode_layout, layout_id
from storage.idsets import TargetIds
from storage.matchers import Matcher, MatchOp, match_all
from storage.model import METRIC_NAME, SampleBatch, Series

log = logging.getLogger(__name__)
_Kept = TypeVar("_Kept")  # what a kept index read found (``_unchanged_since``)

WRITER_FLOOR_KEY = "raw_writer_floor:"  # meta key prefix of a writer's raw floor (``publish_raw_floor``)
POOL_SHUT = "Pool is shutdown"  # the driver's error for a session whose host pool it closed
MAX_ROWS_PER_BATCH = 1000  # rows of one partition per UNLOGGED batch
SERIES_LOOKUP_CHUNK = 100  # ids per `series_id IN ?` lookup
# index partitions (shards of a metric and bucket) per read of their series' targets
# (``_index_target_sets``): all 32 at once, paged, timed out on a freshly started node under load
TARGETS_READ_SHARDS = 8
RAW_READ_SERIES_CHUNK = 100
POSTING_PROBE_ROWS = 20_000  # a label value's postings read unpaged up to this many series
STORED_INDEX_PROBE_MIN = 64  # series to index in one write from which their rows are looked up first
STORED_INDEX_PROBE_IN = 100  # series ids per lookup
INDEX_CHUNK_SERIES = 256  # series whose index rows are built and stored at a time (write_frames)
# ... in at most this many chunks: a chunk costs about one request per index partition it
# touches, whatever its size, so a huge write (a 5,000-series target) is not 20x the requests
INDEX_CHUNKS_MAX = 4
# Series x hour partitions per raw read request; requests are unpaged, so this bounds a
# response: 128 series-hours = 46k rows at a 10 s interval (~1.6 MB), 461k at 1 s (~16 MB).
RAW_REQUEST_SERIES_HOURS = 128
# Frames of a read spanning at most FRAME_READ_SPAN_MS (a refresh's or a panel's newest minutes):
# several targets per request (``_frame_groups``), not a request per target.
FRAME_READ_SPAN_MS = 15 * 60_000
# The raw_recent rows of a short read (most often none: a scrape of >= 8 series is a frame):
# the series of up to ROWS_GROUP_TARGETS targets, up to ROWS_GROUP_SERIES together, per request
# (``_target_groups``). Issue #20's range query over 200 targets' 6,400 series made 67 requests
# of 16 targets and 100 series: ~26 ms of the reader's CPU and 34-80 ms of the node's, against
# 9 and 14 ms as 7 requests of 1,024; but a request's series are one IN the node reads in turn,
# and bench/query.py's cached 24 h refresh (100 targets x 8 series) took 110-135 ms wall in 2
# requests of 1,024, 70-90 in 9 of 100 and 48-75 in 4 of 256 (23:09-23:10 UTC, load 0.4-1.7).
ROWS_GROUP_SERIES = 256
ROWS_GROUP_TARGETS = 64
# Which (target, hour) partitions of raw_recent hold rows (``_short_rows``): up to this many
# targets per request, in at least two (one request walks its partitions in turn: 200 targets
# took ~47 ms wall in one, ~6.5 in 2 or 4); the node's CPU is per request more than per
# partition (issue #20's 200 targets after 30 ms idle: 5.9 ms in 2, 8.5 in 4, 8.9 in 8).
PROBE_GROUP_TARGETS = 128
# The frames of targets holding FRAME_GROUP_SERIES series together (at most FRAME_GROUP_TARGETS
# targets) per request: ~3 bytes per sample on disk, 20 min of 5 s scrapes is ~0.7 KB per
# series, ~1.5 MB a response; 100 node_exporter-like targets of 8 series are one request and
# one decode (``frame_samples_many``), not seven (issue #17: a refresh's CPU is per request).
FRAME_GROUP_SERIES = 2048
FRAME_GROUP_TARGETS = 128
# ``series_runs`` joins the parts of a read of up to this many samples and gathers its runs
# with one index (up to ~100 MB more), a bigger read (the rollup job's window) run by run.
RUNS_GATHER_SAMPLES = 4_000_000
# Clock skew between writers and readers and writes in flight, allowed for by the frames a
# query read keeps (``CassandraStorage.frame_settle_ms``, ``_drop_marked``).
FRAME_SETTLE_SKEW_MS = 15_000
# A frame stored later than this after its scrape marks its target and hour in
# ``raw_late_frames`` (``CassandraStorage.settle_after_ms``, ``_mark_late_frames``): a scrape
# takes at most its timeout (5 s by default, at most the interval; 10 s in many Prometheus
# configurations), the writer groups a moment's frames for up to ``storage.writer.GROUP_S``
# (1 s) and its request takes milliseconds, so a target answering within its timeout is not
# marked (a slower one is: its kept frames are read again, nothing is wrong). Readers take
# frames older than this plus FRAME_CLOCK_SKEW_MS as complete unless so marked.
FRAME_SETTLE_AFTER_MS = 15_000
# Clock skew between writers and readers allowed for by that (writes in flight need none: a
# frame found late once stored is marked then, ``_mark_late_frames``).
FRAME_CLOCK_SKEW_MS = 5_000
# The series index's change stamps: per (metric, bucket) of a level, one row in partition
# (metric, bucket, INDEX_STAMP_SHARD) of ``series_<level>`` (never a series' shard: reads of
# the series' 32 shards do not see it), rewritten after every write of series rows there
# (new series, a series under a new target); its write time is when the index of that metric
# and bucket last changed. A query keeps what it found in the index (``_select_ids``) and
# trusts it again while the stamp is older than its read (less FRAME_SETTLE_SKEW_MS) and
# for at most INDEX_CACHE_MAX_AGE_MS (a writer of older code writes no stamp).
INDEX_STAMP_SHARD = -1
INDEX_STAMP_ID = 0
INDEX_CACHE_MAX_AGE_MS = 60_000
MAX_CONCURRENT_REQUESTS = 512  # per write_columns / read call
# Frames of several targets per request (``write_frame_sets``): a node spends ~3-7 ms of CPU per
# write request at a few dozen requests/s whatever its size (its request and mutation workers
# wake, spin and park), so the writer's frames of a moment go as few UNLOGGED batches (one per
# replica set), each under the node's batch_size_warn_threshold (services/cassandra: 256 KiB;
# a stock node fails batches over 50 KiB: the writer then halves ``frame_batch_bytes``).
FRAME_BATCH_ROWS = 256
FRAME_BATCH_BYTES = 192 << 10
FRAME_ROW_BYTES = 48  # a frame row's keys and cells beside its blob and target, for the size bound
# Bytes per socket read of a driver connection (the driver's default is 4 KiB: a 24 h panel's
# ~60 MB of rollup chunks took ~15,000 reads, each a Python loop turn and a buffer write; with
# 256 KiB the cold 24 h panel of bench/query.py --cassandra took ~9% less CPU, 270 against 297 ms).
READ_BUFFER_BYTES = 1 << 18
# The driver's connection class (libev where built) reading READ_BUFFER_BYTES at a time.
_Connection = type("RingmonConnection", (Cluster.connection_class,), {"in_buffer_size": READ_BUFFER_BYTES})

# Errors that mean "Cassandra is down or slow right now": the writer spools and retries.
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    NoHostAvailable,
    OperationTimedOut,
    WriteTimeout,
    Unavailable,
    ConnectionException,
    ConnectionError,
    TimeoutError,
)


def is_transient(exc: BaseException) -> bool:
    """True when retrying later can succeed (node down, timeout, overload)."""
    if isinstance(exc, TRANSIENT_ERRORS):
        return True
    name = type(exc).__name__
    return name in {"OverloadedErrorMessage", "ConnectionShutdown", "ConnectionBusy", "ReadTimeout"}


class TransientStorageError(StorageError):
    """Cassandra is unavailable or too slow; the same write can be retried later."""


_I4 = struct.Struct(">i")
_I2 = struct.Struct(">h")


def _be8_list(values: Sequence[int] | np.ndarray, dtype: str) -> list[bytes]:
    """Each value as its 8-byte big-endian CQL encoding (bigint '>i8' or double '>f8')."""
    raw = np.asarray(values, dtype=dtype).tobytes()
    return [raw[i : i + 8] for i in range(0, len(raw), 8)]


_I8 = struct.Struct(">q")


def _text_set(values: frozenset[str]) -> bytes:
    parts = [_I4.pack(len(values))]
    for v in values:
        b = v.encode()
        parts += [_I4.pack(len(b)), b]
    return b"".join(parts)


class _Encoded(dict):
    """Values' CQL encodings by value, each made once (``encode`` on first use)."""

    __slots__ = ("_encode",)

    def __init__(self, encode: Callable[[Any], bytes]) -> None:
        super().__init__()
        self._encode = encode

    def __missing__(self, v: Any) -> bytes:
        b = self[v] = self._encode(v)
        return b


class _RowEncoder:
    """CQL encodings of index rows (values in the order of the statement's bind markers), each
    distinct text or number encoded once per ``_index_statements`` call: a warm-up write's rows
    repeat their metric, bucket, label names and values and series ids, and six new bytes
    objects per posting row were most of a scraper's heap peak while it indexed (#20)."""

    __slots__ = ("text", "i2", "i4", "i8", "sets")

    def __init__(self) -> None:
        self.text = _Encoded(str.encode)
        self.i2 = _Encoded(_I2.pack)
        self.i4 = _Encoded(_I4.pack)
        self.i8 = _Encoded(_I8.pack)
        self.sets = _Encoded(_text_set)

    def series(self, r: tuple) -> list[bytes]:
        return [r[0].encode(), self.sets[r[1]], self.text[r[2]], self.i4[r[3]], self.i2[r[4]], self.i8[r[5]]]

    def posting(self, r: tuple) -> list[bytes]:
        return [self.text[r[0]], self.i4[r[1]], self.text[r[2]], self.i2[r[3]], self.text[r[4]], self.i8[r[5]]]

    def label_value(self, r: tuple) -> list[bytes]:
        return [self.i4[r[0]], self.text[r[1]], self.i2[r[2]], self.text[r[3]]]

    def label_name(self, r: tuple) -> list[bytes]:
        return [self.i4[r[0]], self.text[r[1]]]


_ENCODERS: dict[bytes, str] = {}  # prepared query id -> its _RowEncoder method, filled by _prepare


# -- columnar result decoding ------------------------------------------------------------------

_RowsMessage = ProtocolHandler.message_types_by_opcode[ResultMessage.opcode]  # the driver's (Cython) one
_FIXED = {LongType: ">i8", DoubleType: ">f8", Int32Type: ">i4"}  # CQL types of fixed-size cells


class ColumnarResultMessage(_RowsMessage):  # type: ignore[misc,valid-type]  # the driver picks it at import
    """A RESULT whose columns are all ``bigint``/``double``/``int`` becomes ``{column: numpy array}``.

    Such a row is, per cell, a 4-byte length (8 or 4) and that many big-endian bytes, so the
    whole page is one structured ``np.frombuffer``. Anything else (other types, a null cell, column
    encryption) is decoded by the driver's own parser into the usual list of tuples.
    """

    def recv_results_rows(
        self, f: Any, protocol_version: int, user_type_map: Any, result_metadata: Any, column_encryption_policy: Any
    ) -> None:
        start = f.tell()
        self.recv_results_metadata(f, user_type_map)
        meta = self.column_metadata or result_metadata
        types = [_FIXED.get(m[3]) for m in meta] if meta else [None]
        if column_encryption_policy is None and None not in types:
            n = read_int(f)
            row = np.dtype([x for i, t in enumerate(types) for x in ((f"n{i}", ">i4"), (f"c{i}", t))])
            body = f.read()
            if len(body) == n * row.itemsize:
                cells = np.frombuffer(body, dtype=row, count=n)
                if all(bool(np.all(cells[f"n{i}"] == int(str(t)[-1]))) for i, t in enumerate(types)):
                    self.column_names = [m[2] for m in meta]
                    self.column_types = [m[3] for m in meta]
                    self.parsed_rows = {m[2]: _native(cells[f"c{i}"]) for i, m in enumerate(meta)}
                    return
        f.seek(start)
        _RowsMessage.recv_results_rows(self, f, protocol_version, user_type_map, result_metadata, column_encryption_policy)


def _native(column: np.ndarray) -> np.ndarray:
    """A contiguous native-endian copy of a big-endian column, moved byte for byte (NaN payloads kept)."""
    big = np.ascontiguousarray(column)
    if sys.byteorder == "big":
        return big
    return big.byteswap().view(big.dtype.newbyteorder("="))


class ColumnarProtocolHandler(ProtocolHandler):
    """The driver's protocol handler with ``ColumnarResultMessage`` for RESULT messages."""

    message_types_by_opcode = {**ProtocolHandler.message_types_by_opcode, ResultMessage.opcode: ColumnarResultMessage}


def page_columns(page: dict | Iterable[tuple] | None, names: Sequence[str], dtypes: Sequence[str]) -> list[np.ndarray]:
    """The named columns of one result page as arrays (columnar dict or list of tuples)."""
    if isinstance(page, dict):
        return [page[n] for n in names]
    rows = list(page or ())
    if not rows:
        return [np.empty(0, dtype=d) for d in dtypes]
    return [np.array(c, dtype=d) for c, d in zip(zip(*rows, strict=True), dtypes, strict=True)]


def shard_of(series_id: int) -> int:
    return series_id % sch.INDEX_SHARDS


def value_shard(value: str) -> int:
    return zlib.crc32(value.encode()) % sch.INDEX_SHARDS


ALL_SHARDS = list(range(sch.INDEX_SHARDS))


def posting_shard(value: str, series_id: int) -> int:
    """Postings of one label value spread over POSTING_SPREAD of the shards (by series id)."""
    return (zlib.crc32(value.encode()) + series_id % sch.POSTING_SPREAD) % sch.INDEX_SHARDS


def posting_shards(value: str) -> list[int]:
    """The shards holding the postings of ``value``: an "=" lookup reads only these."""
    base = zlib.crc32(value.encode())
    return sorted({(base + j) % sch.INDEX_SHARDS for j in range(sch.POSTING_SPREAD)})


@dataclass(frozen=True, slots=True)
class SeriesInfo:
    series: Series
    targets: frozenset[str]


class TargetSeries(dict[str, list[int]]):
    """A read's series ids per target, and each target's as a sorted array once asked for
    (``wanted``; kept with a ``SeriesInfos``: a repeated query's 200 targets made them each
    time, ~1 ms). Never changed once made."""

    def __init__(self) -> None:
        super().__init__()
        self._arrays: dict[str, np.ndarray] = {}
        self._key: bytes | None = None

    def wanted(self, target: str) -> np.ndarray:
        got = self._arrays.get(target)
        if got is None:
            got = self._arrays[target] = np.array(sorted(self[target]), dtype=np.int64)
        return got

    def key(self) -> bytes:
        """The targets in order and each one's series, as bytes (made once: ``FrameCache.group``'s key)."""
        if self._key is None:
            names = list(self)
            lens = np.array([len(self[t]) for t in names], dtype=np.int64)
            ids = np.concatenate([self.wanted(t) for t in names]) if names else lens
            self._key = b"\0".join(t.encode() for t in names) + b"\1" + lens.tobytes() + ids.tobytes()
        return self._key


def _wanted(by_target: dict[str, list[int]], target: str) -> np.ndarray:
    """The series ids of ``target`` in ``by_target``, sorted, as an array."""
    if isinstance(by_target, TargetSeries):
        return by_target.wanted(target)
    return np.array(sorted(by_target[target]), dtype=np.int64)


class SeriesInfos(list[SeriesInfo]):
    """A query's series as ``_select_series`` found them: the same object again while the
    index gives the same ids (``CassandraStorage._selected``), so what a read derives of it
    is made once (issue #20's range query over 6,400 series: the ids per target and the
    label order, ~5 ms a query). Never changed once made."""

    by_target: TargetSeries | None = None  # target -> its series ids (``_read_parts``)
    label_order: tuple[np.ndarray, list[Series]] | None = None  # (``_in_label_order``)


class CassandraStorage(Storage):
    """Storage on a Cassandra keyspace created by ``storage.schema.create_schema``.

    A write carrying samples older than ``late_after_ms`` (a spool replay, a backfill) also
    upserts ``raw_late`` rows for their hours with the time of the write, at most once a
    minute per hour: blocks sealed before that may miss those samples (see
    ``storage.cassandra_rollup``). Keep ``late_after_ms`` well under the rollup grace.
    """

    late_after_ms: int = 60_000
    frame_min_samples: int = FRAME_MIN_SAMPLES  # a smaller timestamp group of a target is written as rows
    LATE_REMARK_MS = 60_000  # re-mark an hour at most this often (marks carry the write time)
    frame_batch_bytes: int = FRAME_BATCH_BYTES  # of frame rows per batch of ``write_frame_sets``
    # A frame stored later than this after its scrape (writer's clock) first marks its target
    # and hour in ``raw_late_frames`` (``_late_frame_statements``), at most once a
    # LATE_FRAME_REMARK_MS per (target, hour) and process.
    settle_after_ms: int = FRAME_SETTLE_AFTER_MS
    LATE_FRAME_REMARK_MS = 30_000
    # Frames older than this (reader's clock) are taken as complete (``_frames_recent``):
    # writers' settle_after_ms (the default above) plus FRAME_CLOCK_SKEW_MS. (A mark newer
    # than a kept read less LATE_FRAME_REMARK_MS and FRAME_SETTLE_SKEW_MS drops it.)
    frame_settle_ms: int = FRAME_SETTLE_AFTER_MS + FRAME_CLOCK_SKEW_MS
    # Writers' and readers' clock skew and index writes in flight, allowed for by the index a
    # query keeps (``_kept_ids``): a stamp this close to a kept read makes it be read again.
    index_skew_ms: int = FRAME_SETTLE_SKEW_MS

    def __init__(
        self,
        cluster: Cluster,
        session: Session,
        keyspace: str,
        consistency: int = ConsistencyLevel.LOCAL_ONE,
        now_ms: Callable[[], float] | None = None,
    ) -> None:
        self.cluster = cluster
        self.session = session
        self.keyspace = keyspace
        self.consistency = consistency
        self._now_ms = now_ms
        self.index_reads: Counter[tuple[str, int]] = Counter()  # (table, bucket) -> partitions read
        self.index_found_stored = 0  # series a write did not index: another process had (_skip_stored_index)
        # (level, bucket) -> the series ids indexed under each target
        self._indexed: dict[tuple[str, int], TargetIds] = {}
        self._label_values_done: set[tuple[str, int, str, str]] = set()
        self._label_names_done: set[tuple[str, int, str]] = set()
        self._series_info: LRUCache[int, SeriesInfo] = LRUCache(maxsize=1_000_000)
        # (level, metric, bucket) -> the series ids an index read found there and their infos
        # (``_infos``: a query repeated over 6,400 series spent ~10 ms in the LRU's per-id gets)
        self._found_infos: LRUCache[tuple[str, str, int], tuple[frozenset[int], dict[int, SeriesInfo]]] = \
            LRUCache(maxsize=2_000_000, getsizeof=lambda e: len(e[1]) + 1)
        # (level, metric, bucket, matchers) -> when a query's index read started (us) and the
        # ids it found (``_select_ids``; each entry's ids counted against the size)
        self._index_kept: LRUCache[tuple, tuple[int, frozenset[int]]] = \
            LRUCache(maxsize=2_000_000, getsizeof=lambda e: len(e[1]) + 1)
        self.index_kept_hits = 0  # (metric, bucket)s whose kept index a query took again
        # (level, metric, bucket) -> when an ``_index_target_sets`` read of it started (us) and what
        # it found: series id -> targets (taken again while the index stamp allows, as _index_kept)
        self._targets_kept: LRUCache[tuple[str, str, int], tuple[int, dict[int, frozenset[str]]]] = \
            LRUCache(maxsize=2_000_000, getsizeof=lambda e: len(e[1]) + 1)
        self._late_marked: LRUCache[int, int] = LRUCache(maxsize=10_000)  # hour -> when this process last marked it late
        # (target, hour) -> when this process last marked a late frame of them (raw_late_frames)
        self._late_frames_marked: LRUCache[tuple[str, int], int] = LRUCache(maxsize=100_000)
        self._renewals: dict[int, asyncio.Future] = {}  # id(session) -> pool renewal under way
        self._frames = FrameEncoder()  # chains and layout rows of direct writes (storage.cassandra_frames)
        self._layouts: LRUCache[tuple[str, int], np.ndarray] = LRUCache(maxsize=100_000)
        # series ids in label order by their set (``_in_label_order``), at most 32 MB of them
        self._label_orders: LRUCache[bytes, tuple[np.ndarray, list[Series]]] = \
            LRUCache(maxsize=32 << 20, getsizeof=lambda e: 2 * e[0].nbytes)
        # (level, matchers) -> the ids a query read found per (metric, bucket) and the series
        # it answered (``_select_series``), at most 2 M series
        self._selected: LRUCache[tuple, tuple[dict[tuple[str, int], set[int]], SeriesInfos]] = \
            LRUCache(maxsize=2_000_000, getsizeof=lambda e: len(e[1]) + 1)
        # where a read of kept frames of a shape placed its samples (``blocks_in_order``), 32 MB
        self._placements: LRUCache[bytes, Placement | None] = \
            LRUCache(maxsize=32 << 20, getsizeof=lambda e: 1 + (sum(a.nbytes for a in e) if e is not None else 0))
        # resolved frames of short reads (``_frames_recent``; None: every read asks Cassandra)
        self.frame_cache: FrameCache | None = FrameCache(FRAME_CACHE_BYTES)
        # (target, layout id, index buckets) whose series a stored write indexed: a frame of
        # it skips the per-series index check (SQLite's writer does the same)
        self._layouts_indexed: LRUCache[tuple, bool] = LRUCache(maxsize=100_000)
        self._prepare()
        # Raw reads run on a session of their own whose results are NumPy columns.
        self.columnar_session = cluster.connect()
        self.columnar_session.client_protocol_handler = ColumnarProtocolHandler
        self._prepare_raw_reads(self.columnar_session)

    # -- connection -------------------------------------------------------------------------

    @classmethod
    def connect_sync(
        cls,
        hosts: Sequence[str],
        port: int,
        keyspace: str = "ringmon",
        *,
        create_schema: bool = False,
        spec: sch.SchemaSpec | None = None,
        consistency: int = ConsistencyLevel.LOCAL_ONE,
        connect_timeout_s: float = 10.0,
        request_timeout_s: float = 10.0,
    ) -> Self:
        """Connect (blocking; call from a thread or at start-up) and prepare statements."""
        profile = ExecutionProfile(
            load_balancing_policy=TokenAwarePolicy(DCAwareRoundRobinPolicy()),
            consistency_level=consistency,
            request_timeout=request_timeout_s,
            row_factory=tuple_factory,
        )
        cluster = Cluster(
            list(hosts),
            port=port,
            connection_class=_Connection,
            execution_profiles={EXEC_PROFILE_DEFAULT: profile},
            reconnection_policy=ConstantReconnectionPolicy(1.0, max_attempts=None),
            connect_timeout=connect_timeout_s,
            control_connection_timeout=connect_timeout_s,
            idle_heartbeat_interval=5,
            idle_heartbeat_timeout=5,
            # v4, not v5: v5 frames responses in checksummed segments, and the driver's
            # pure-Python segment handling cost 25% more time on large reads (measured: a 24 h
            # read of 800 series' 1 m chunks, 59 MB, 265 ms on v5 against 230 ms on v4).
            protocol_version=4,
        )
        try:
            session = cluster.connect()
            if create_schema:
                sch.create_schema(session, spec or sch.SchemaSpec(keyspace=keyspace))
            else:
                version = sch.schema_version(session, keyspace)
                if version is None:
                    raise StorageError(
                        f"keyspace {keyspace!r} has no Ringmon schema: run `ringmon storage init --keyspace {keyspace}`"
                    )
                if version < sch.SCHEMA_VERSION:
                    raise StorageError(
                        f"keyspace {keyspace!r} has schema version {version}, this Ringmon needs "
                        f"{sch.SCHEMA_VERSION}: run `ringmon storage init --keyspace {keyspace}` (adds the missing tables)"
                    )
        except NoHostAvailable as exc:
            cluster.shutdown()
            raise StorageError(f"cannot reach Cassandra at {','.join(hosts)}:{port}: {exc}") from None
        except Exception:
            cluster.shutdown()
            raise
        return cls(cluster, session, keyspace, consistency)

    @classmethod
    async def connect(cls, hosts: Sequence[str], port: int, keyspace: str = "ringmon", **kw: Any) -> Self:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(None, lambda: cls.connect_sync(hosts, port, keyspace, **kw))

    def shutdown(self) -> None:
        self.cluster.shutdown()

    async def close(self) -> None:
        await asyncio.get_running_loop().run_in_executor(None, self.shutdown)

    def drop_keyspace_sync(self) -> None:
        self.session.execute(f"DROP KEYSPACE IF EXISTS {self.keyspace}", timeout=60)

    def _prepare(self) -> None:
        p = self.session.prepare
        ks = self.keyspace
        self.ps_insert_raw: PreparedStatement = p(
            f"INSERT INTO {ks}.raw_recent (target, hour, series_id, ts, value) VALUES (?, ?, ?, ?, ?)"
        )
        self.ps_late_ins = p(f"INSERT INTO {ks}.raw_late (day, hour, written_at) VALUES (?, ?, ?)")
        self.ps_late_frame_ins = p(f"INSERT INTO {ks}.raw_late_frames (hour, target, written_at) VALUES (?, ?, ?)")
        self.ps_late_frame_ins.consistency_level = self.consistency
        self.ps_late_frames_read = p(f"SELECT hour, target, written_at FROM {ks}.raw_late_frames WHERE hour IN ?")
        self.ps_late_frames_read.fetch_size = None
        self.ps_frame_ins = p(
            f"INSERT INTO {ks}.raw_frames (target, hour, ts, base_ts, layout_id, data) VALUES (?, ?, ?, ?, ?, ?)"
        )
        self.ps_layout_ins = p(f"INSERT INTO {ks}.raw_layouts (target, layout_id, series_ids) VALUES (?, ?, ?)")
        self.ps_frames_read = p(
            f"SELECT ts, base_ts, layout_id, data FROM {ks}.raw_frames WHERE target = ? AND hour IN ? "
            "AND ts >= ? AND ts <= ?"
        )
        # A frame's version is the write time of its cells: every frame is one INSERT of all
        # of them, so ``layout_id``'s is ``data``'s, and the keys' read of it costs the node
        # less (issue #20's re-check of 200 targets' newest 75 s: 33 -> 26 ms of its CPU).
        self.ps_frames_read_many = p(
            f"SELECT target, ts, base_ts, layout_id, data, writetime(layout_id) FROM {ks}.raw_frames "
            "WHERE target IN ? AND hour IN ? AND ts >= ? AND ts <= ?"
        )
        # (the frames a short read holds in ``frame_cache`` after where they are complete)
        self.ps_frame_keys_many = p(
            f"SELECT target, ts, writetime(layout_id) FROM {ks}.raw_frames WHERE target IN ? AND hour IN ? "
            "AND ts >= ? AND ts <= ?"
        )
        self.ps_frame_keys_many.fetch_size = None
        # (which (target, hour) partitions of raw_recent hold rows: ``_short_rows``)
        self.ps_rows_written = p(f"SELECT DISTINCT target, hour FROM {ks}.raw_recent WHERE target IN ? AND hour IN ?")
        self.ps_rows_written.fetch_size = None
        self.ps_rows_written.consistency_level = self.consistency
        self.ps_layouts_read = p(f"SELECT layout_id, series_ids FROM {ks}.raw_layouts WHERE target = ?")
        self.ps_floor_set = p(f"INSERT INTO {ks}.meta (key, value) VALUES (?, ?) USING TTL ?")
        self.ps_floor_del = p(f"DELETE FROM {ks}.meta WHERE key = ?")
        for ps in (self.ps_frame_ins, self.ps_layout_ins):
            ps.consistency_level = self.consistency
        for ps in (self.ps_floor_set, self.ps_floor_del):
            ps.consistency_level = ConsistencyLevel.LOCAL_QUORUM  # the job reads them at quorum
        self.ps_frames_read.fetch_size = None  # unpaged: one target's frames of a range (TTL-bounded)
        self.ps_frames_read_many.fetch_size = None  # (FRAME_GROUP_SERIES series, FRAME_READ_SPAN_MS at most)
        self.ps_late_read = p(f"SELECT hour, written_at FROM {ks}.raw_late WHERE day = ?")
        self.ps_index: dict[str, dict[str, PreparedStatement]] = {}
        for level in sch.INDEX_LEVELS:
            s = level.suffix
            self.ps_index[s] = {
                "series_ins": p(
                    f"UPDATE {ks}.series_{s} SET labels = ?, targets = targets + ? "
                    "WHERE metric = ? AND bucket = ? AND shard = ? AND series_id = ?"
                ),
                "series_lookup": p(
                    f"SELECT series_id, labels, targets FROM {ks}.series_{s} "
                    "WHERE metric = ? AND bucket = ? AND shard = ? AND series_id IN ?"
                ),
                "stamp_ins": p(
                    f"UPDATE {ks}.series_{s} SET labels = '' WHERE metric = ? AND bucket = ? AND shard = ? "
                    "AND series_id = ?"
                ),
                "stamp_read": p(
                    f"SELECT metric, bucket, writetime(labels) FROM {ks}.series_{s} "
                    "WHERE metric IN ? AND bucket IN ? AND shard = ? AND series_id = ?"
                ),
                "post_ins": p(
                    f"INSERT INTO {ks}.postings_{s} (metric, bucket, name, shard, value, series_id) VALUES (?, ?, ?, ?, ?, ?)"
                ),
                "lv_ins": p(f"INSERT INTO {ks}.label_values_{s} (bucket, name, shard, value) VALUES (?, ?, ?, ?)"),
                "ln_ins": p(f"INSERT INTO {ks}.label_names_{s} (bucket, name) VALUES (?, ?)"),
                "series_all": p(
                    f"SELECT series_id FROM {ks}.series_{s} WHERE metric = ? AND bucket = ? AND shard IN ?"
                ),
                "series_targets": p(
                    f"SELECT series_id, targets FROM {ks}.series_{s} WHERE metric = ? AND bucket = ? AND shard IN ?"
                ),
                "post_eq": p(
                    f"SELECT series_id FROM {ks}.postings_{s} WHERE metric = ? AND bucket = ? AND name = ? "
                    "AND shard IN ? AND value = ?"
                ),
                "post_eq_probe": p(
                    f"SELECT series_id FROM {ks}.postings_{s} WHERE metric = ? AND bucket = ? AND name = ? "
                    "AND shard IN ? AND value = ? LIMIT ?"
                ),
                "post_all": p(
                    f"SELECT value, series_id FROM {ks}.postings_{s} WHERE metric = ? AND bucket = ? AND name = ? "
                    "AND shard IN ?"
                ),
                "lv_read": p(f"SELECT value FROM {ks}.label_values_{s} WHERE bucket = ? AND name = ? AND shard IN ?"),
                "ln_read": p(f"SELECT name FROM {ks}.label_names_{s} WHERE bucket = ?"),
            }
        for ps in self.ps_index.values():
            ps["post_eq_probe"].fetch_size = None  # bounded by its LIMIT: see _posting_ids
            for key, enc in (
                ("series_ins", "series"),
                ("post_ins", "posting"),
                ("lv_ins", "label_value"),
                ("ln_ins", "label_name"),
            ):
                _ENCODERS[ps[key].query_id] = enc
        self.ps_insert_raw.consistency_level = self.consistency

    def _prepare_raw_reads(self, session: Session) -> None:
        p = session.prepare
        ks = self.keyspace
        self.ps_read_raw = p(
            f"SELECT series_id, ts, value FROM {ks}.raw_recent WHERE target = ? AND hour IN ? "
            "AND series_id IN ? AND ts >= ? AND ts <= ?"
        )
        self.ps_read_raw_one = p(
            f"SELECT ts, value FROM {ks}.raw_recent WHERE target = ? AND hour IN ? "
            "AND series_id = ? AND ts >= ? AND ts <= ?"
        )
        self.ps_read_raw_many = p(
            f"SELECT series_id, ts, value FROM {ks}.raw_recent WHERE target IN ? AND hour IN ? "
            "AND series_id IN ? AND ts >= ? AND ts <= ?"
        )
        for ps in (self.ps_read_raw, self.ps_read_raw_one, self.ps_read_raw_many):
            ps.fetch_size = None  # unpaged: requests are bounded by RAW_REQUEST_SERIES_HOURS
            ps.consistency_level = self.consistency

    # -- async bridge -----------------------------------------------------------------------

    def _bridge(self, rf: ResponseFuture, loop: asyncio.AbstractEventLoop) -> asyncio.Future[list[Any]]:
        """An asyncio future completed (with all pages) from the driver's I/O thread."""
        fut: asyncio.Future[list[Any]] = loop.create_future()
        pages: list[Any] = []

        def done(rows: object) -> None:
            pages.append(rows)
            if rf.has_more_pages:
                rf.start_fetching_next_page()
                return
            _release(rf)
            loop.call_soon_threadsafe(_resolve, fut, pages)

        def failed(exc: BaseException) -> None:
            _release(rf)
            loop.call_soon_threadsafe(_reject, fut, exc)

        rf.add_callbacks(done, failed)
        return fut

    async def execute(self, statement: object, params: Sequence | None = None, *, session: Session | None = None, renew: bool = True) -> list:
        """Run one statement asynchronously; returns the list of result pages.

        A request that finds its session's connection pool shut down renews the pool and is
        sent once more (see ``_renew_pools``)."""
        s = session or self.session
        loop = asyncio.get_running_loop()
        try:
            return await self._bridge(s.execute_async(statement, params), loop)
        except StorageError:
            raise
        except Exception as exc:
            if renew and POOL_SHUT in str(exc):
                await self._renew_pools(s)
                return await self.execute(statement, params, session=s, renew=False)
            if is_transient(exc):
                raise TransientStorageError(f"cassandra unavailable: {type(exc).__name__}: {exc}") from exc
            raise StorageError(f"cassandra request failed: {type(exc).__name__}: {exc}") from exc

    async def _renew_pools(self, session: Session) -> None:
        """Open new connection pools for ``session`` where the driver shut them.

        The driver shuts a session's pool when a heartbeat on an idle connection fails (a
        node busy for a few seconds is enough) and, as long as the host still counts as up
        (the control connection or another session reaches it), never opens a new one: every
        later request fails with "Pool is shutdown", for good (seen in ``make cluster``: the
        web server answered every query with that error until the node was restarted).
        One renewal per session at a time; concurrent requests wait for it, at most 10 s.
        """
        task = self._renewals.get(id(session))
        if task is None or task.done():
            log.warning("cassandra session lost its connection pool; opening a new one")
            futures = [asyncio.wrap_future(f) for f in session.update_created_pools() or ()]
            task = asyncio.ensure_future(asyncio.wait(futures, timeout=10.0) if futures else asyncio.sleep(0))
            self._renewals[id(session)] = task
        await asyncio.shield(task)

    async def publish_raw_floor(self, writer: str, floor_ms: int) -> None:
        """Record that ``writer`` (a ``BatchingWriter``) may still store frames XOR'd with
        stored frames from ``floor_ms`` on: the rollup job drops no raw hour at or after it
        (``CassandraRollupMixin.raw_writers_floor_ms``). It lives as long as raw input (TTL):
        a writer that never comes back holds drops no longer than its frames would live."""
        await self.execute(self.ps_floor_set, (f"{WRITER_FLOOR_KEY}{writer}", str(floor_ms),
                                               sch.DEFAULT_TTLS_S["raw_frames"]))

    async def clear_raw_floor(self, writer: str) -> None:
        """``writer`` closed with nothing left to store: it holds no drop back."""
        await self.execute(self.ps_floor_del, (f"{WRITER_FLOOR_KEY}{writer}",))

    async def execute_columnar(self, statement: object, params: Sequence) -> list:
        """``execute`` on the columnar session (pages of bigint/double columns are dicts of arrays).

        When that session's pool cannot be renewed (``execute`` tries once), the read runs on
        the main session (tuple rows, which callers accept too)."""
        try:
            return await self.execute(statement, params, session=self.columnar_session)
        except TransientStorageError as exc:
            if POOL_SHUT not in str(exc):
                raise
            log.warning("columnar read session has no connection pool; reading on the main session")
            return await self.execute(statement, params)

    async def _rows(self, statement: object, params: Sequence | None) -> list:
        pages = await self.execute(statement, params)
        return [r for page in pages for r in page]

    # -- writes -----------------------------------------------------------------------------

    def now_ms(self) -> int:
        if self._now_ms is not None:
            return int(self._now_ms())
        return int(time.time() * 1000)

    async def write(self, batch: SampleBatch) -> None:
        if not len(batch):
            return
        ids = [s.id for s in batch.series]
        await self.write_columns(batch.target, ids, batch.timestamps, batch.values, batch.series)

    async def write_columns(
        self,
        target: str,
        series_ids: Sequence[int] | np.ndarray,
        timestamps: Sequence[int] | np.ndarray,
        values: Sequence[float] | np.ndarray,
        series_defs: Iterable[Series] = (),
    ) -> None:
        """Write samples given as columns; index the series in ``series_defs`` not yet indexed.

        Samples of series never indexed by anyone must come with their ``Series`` in
        ``series_defs`` (the writer's spool keeps them for that reason). Idempotent.
        """
        ts_arr = np.asarray(timestamps, dtype=np.int64)
        if ts_arr.size == 0:
            return
        ids_arr = np.asarray(series_ids, dtype=np.int64)
        vals_arr = np.asarray(values, dtype=np.float64)
        now = self.now_ms()
        frames, rest = split_frames(ids_arr, ts_arr, vals_arr, now - self.late_after_ms, self.frame_min_samples)
        indexed_key = None
        if len(frames) == 1 and not rest.any():
            indexed_key = (target, layout_id(frames[0].ids),
                           tuple(frames[0].ts // level.bucket_ms for level in sch.INDEX_LEVELS))
            if indexed_key in self._layouts_indexed:
                series_defs = ()
            else:
                series_defs = list(series_defs)
                if {d.id for d in series_defs} != set(frames[0].ids.tolist()):
                    indexed_key = None  # only a write that indexes every series of the layout marks it
        series_defs = list(series_defs)
        encoded = self._frames.encode(target, frames, now, with_ids=bool(series_defs))
        if frames:
            ids_arr, ts_arr, vals_arr = ids_arr[rest], ts_arr[rest], vals_arr[rest]
        try:
            await self.write_frames(target, encoded, ids_arr, ts_arr, vals_arr, series_defs)
        except BaseException:
            self._frames.forget(target)
            raise
        self._frames.remember(target, frames, encoded, now)
        if indexed_key is not None:
            self._layouts_indexed[indexed_key] = True

    async def write_frames(
        self,
        target: str,
        frames: Sequence[EncodedFrame],
        series_ids: np.ndarray,
        timestamps: np.ndarray,
        values: np.ndarray,
        series_defs: Sequence[Series] = (),
    ) -> None:
        """Write encoded frames (``storage.cassandra_frames``; a layout they carry is written
        too) and samples given as columns, as rows. The writer's spool records exactly this,
        so a replay writes it as recorded. Idempotent."""
        ts_all = timestamps
        if frames:
            ts_all = np.concatenate([timestamps, np.fromiter((f.ts for f in frames), np.int64, len(frames))])
            self._written_frames(target, min(f.ts for f in frames))
        if ts_all.size == 0:
            return
        which: tuple[np.ndarray, np.ndarray] | None = (series_ids, timestamps)  # series per bucket
        if frames and series_defs:
            if all(f.ids is not None for f in frames):
                which = (np.concatenate([series_ids, *(f.ids for f in frames if f.ids is not None)]),
                         np.concatenate([timestamps, *(np.full(f.width, f.ts, np.int64) for f in frames)]))
            else:
                which = None  # not known: every series given is indexed in every bucket of the write
        if len(series_defs) >= STORED_INDEX_PROBE_MIN:
            series_defs = await self._skip_stored_index(target, series_defs, ts_all)
        defs = list(series_defs)
        if defs:
            marks: list = []
            changed: set[tuple[str, str, int]] = set()
            step = max(INDEX_CHUNK_SERIES, -(-len(defs) // INDEX_CHUNKS_MAX))
            for part in slices(defs, step):
                await self._write_index(target, part, ts_all, which, marks, changed)
            # then the stamps of the (level, metric, bucket)s whose series rows it wrote: a
            # reader that kept their index reads it again (INDEX_STAMP_SHARD); only then are
            # the series marked indexed (a failed write is retried whole, stamps too) and the
            # write's samples stored
            await self._execute_all([self.ps_index[suffix]["stamp_ins"].bind((metric, bucket, INDEX_STAMP_SHARD,
                                                                              INDEX_STAMP_ID))
                                     for suffix, metric, bucket in sorted(changed)])
            self._commit_marks(marks)
        if frames:
            await self._mark_late_frames(((target, frames),))
        late_stmts, late_marks = self._late_statements(ts_all)
        frame_stmts = self._frame_statements(target, frames)
        rows = self._raw_batches(target, series_ids, timestamps, values) if timestamps.size else []
        await self._execute_all(late_stmts + frame_stmts + rows)
        if frames:
            await self._mark_late_frames(((target, frames),))  # (late once stored: a slow write)
        if late_marks:
            self._late_marked.update(late_marks)

    async def _write_index(
        self, target: str, series_defs: Sequence[Series], ts: np.ndarray, which: tuple[np.ndarray, np.ndarray] | None,
        marks: list, changed: set[tuple[str, str, int]],
    ) -> None:
        """Store the index rows of ``series_defs`` (those not marked yet); their marks (for
        ``_commit_marks``) and the (level, metric, bucket)s of their series rows (stamps due)
        are added to ``marks`` and ``changed``.

        ``write_frames`` gives ``INDEX_CHUNK_SERIES`` series at a time (more for a write of
        over ``INDEX_CHUNKS_MAX`` chunks: each chunk costs a request per index partition it
        touches, and its rows are few per partition): a chunk's rows
        (tens of small objects per series) live until Cassandra answers, and the series the
        scrape loops make meanwhile land between them; when the rows go, their holes stay in
        the heap for good (a warm-up of 100k series left ~20 MiB of them, #20)."""
        index_stmts, series_rows, chunk_marks, chunk_changed = self._index_statements(target, series_defs, ts, which)
        # a series' own row goes last: stored, it vouches for its postings and label values
        await self._execute_all(index_stmts)
        await self._execute_all(series_rows)
        marks.extend(chunk_marks)
        changed.update(chunk_changed)

    async def _execute_all(self, statements: list) -> None:
        """Run ``statements`` (in waves); the first transient error, else the first error, raised."""
        results = await _gather_waves([self.execute(s) for s in statements], return_exceptions=True)
        errors = [r for r in results if isinstance(r, BaseException)]
        if errors:
            transient = [e for e in errors if isinstance(e, TransientStorageError)]
            raise (transient[0] if transient else errors[0])

    async def write_frame_sets(self, sets: Sequence[tuple[str, Sequence[EncodedFrame]]]) -> None:
        """Write the encoded frames of several targets ``(target, frames)`` (a writer's records
        of a moment: no rows, no series to index) in few requests: ``replica_batches`` of
        their rows, the layouts they carry apart, late marks as ``write_frames`` makes them.
        Idempotent; on an error some batches may be stored: the caller sends all again."""
        rows: list[tuple[BoundStatement, int]] = []
        for target, frames in sets:
            if frames:
                self._written_frames(target, min(f.ts for f in frames))
            for f in frames:
                stmts = self._frame_statements(target, (f,))  # [its layout's row,] its row
                if f.ids is not None:
                    rows.append((stmts[0], FRAME_ROW_BYTES + len(target) + 8 * f.width))
                rows.append((stmts[-1], FRAME_ROW_BYTES + len(target) + len(f.data)))
        if not rows:
            return
        ts = np.fromiter((f.ts for _t, frames in sets for f in frames), np.int64)
        if int(ts.min()) < self.now_ms() - self.settle_after_ms:
            await self._mark_late_frames(sets)
        late_stmts, late_marks = self._late_statements(ts)
        requests = late_stmts + replica_batches(
            self.cluster.metadata, self.keyspace, rows, FRAME_BATCH_ROWS, self.frame_batch_bytes
        )
        results = await _gather_waves([self.execute(r) for r in requests], return_exceptions=True)
        errors = [r for r in results if isinstance(r, BaseException)]
        if errors:
            transient = [e for e in errors if isinstance(e, TransientStorageError)]
            raise (transient[0] if transient else errors[0])
        if late_marks:
            self._late_marked.update(late_marks)
        if int(ts.min()) < self.now_ms() - self.settle_after_ms:
            await self._mark_late_frames(sets)  # (late once stored: a slow write)

    async def _mark_late_frames(self, sets: Iterable[tuple[str, Sequence[EncodedFrame]]]) -> None:
        """Store the ``raw_late_frames`` marks of the frames of ``sets`` ``(target, frames)``
        older than ``settle_after_ms`` (a slow scrape, a spool replay, a backfill, a frame
        stored again). Writers call it before they send the frames: a reader that kept a
        target's frames as complete (``_frames_recent``) takes its clock before it reads the
        marks and the frames' keys, so a frame its read missed was stored after that clock
        and its mark (written before the frame) drops at the next read what this one kept:
        it never keeps "no frame at ts" past a frame stored there without seeing its mark;
        and again once they are stored (a frame whose write took long is late by then: its
        mark, newer than any read that missed it, drops what such a read kept; a failure
        fails the write, which is sent again). A (target, hour) is marked at most once a
        ``LATE_FRAME_REMARK_MS`` by this process (readers allow for it)."""
        now = self.now_ms()
        cutoff = now - self.settle_after_ms
        by_hour: dict[int, list[BoundStatement]] = {}
        marks: dict[tuple[str, int], int] = {}
        for target, frames in sets:
            for f in frames:
                if f.ts >= cutoff:
                    continue
                key = (target, f.ts // sch.RAW_BUCKET_MS)
                if key in marks:
                    continue
                last = self._late_frames_marked.get(key)
                if last is not None and 0 <= now - last < self.LATE_FRAME_REMARK_MS:
                    continue
                marks[key] = now
                by_hour.setdefault(key[1], []).append(self.ps_late_frame_ins.bind((key[1], target, now)))
        if not marks:
            return
        stmts: list = []
        for rows in by_hour.values():  # (one partition per hour: an UNLOGGED batch of its marks)
            for part in slices(rows, FRAME_BATCH_ROWS):
                if len(part) == 1:
                    stmts.append(part[0])
                    continue
                b = BatchStatement(BatchType.UNLOGGED, consistency_level=self.consistency)
                for r in part:
                    b.add(r)
                stmts.append(b)
        await self._execute_all(stmts)
        self._late_frames_marked.update(marks)

    def _written_frames(self, target: str, first_ts: int) -> None:
        """This process writes frames of ``target`` from ``first_ts`` on: what its
        ``frame_cache`` holds complete of them goes (its own writes need no late mark)."""
        if self.frame_cache is not None:
            self.frame_cache.written(target, first_ts)

    def _frame_statements(self, target: str, frames: Sequence[EncodedFrame]) -> list:
        """A ``raw_frames`` insert per frame and a ``raw_layouts`` insert per layout carried."""
        stmts: list = []
        for f in frames:
            if f.ids is not None:
                stmts.append(self.ps_layout_ins.bind((target, f.layout_id, encode_layout(f.ids))))
            stmts.append(self.ps_frame_ins.bind((target, f.ts // sch.RAW_BUCKET_MS, f.ts, f.base_ts, f.layout_id, f.data)))
        return stmts

    async def _target_layouts(self, target: str, wanted: Collection[int]) -> dict[int, np.ndarray]:
        """The layouts ``wanted`` of a target (cached: a layout id names one series list)."""
        out = {lid: lay for lid in wanted if (lay := self._layouts.get((target, lid))) is not None}
        if len(out) < len(wanted):
            for page in await self.execute(self.ps_layouts_read, (target,)):
                for lid, blob in page:
                    lay = decode_layout(blob)
                    self._layouts[(target, lid)] = lay
                    if lid in wanted:
                        out[lid] = lay
        return out

    async def _frame_columns(
        self, target: str, ids: list[int], hours: list[int], start_ms: int, end_ms: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(series ids, ts, values) of a target's series in [start_ms, end_ms] from its frames."""
        pages = await self.execute(self.ps_frames_read, (target, hours, key_span_start(start_ms), end_ms))
        rows = sorted((r for page in pages for r in page), key=lambda r: r[0])
        layouts = await self._target_layouts(target, {r[2] for r in rows}) if rows else {}
        return frame_samples(rows, layouts, np.array(sorted(ids), dtype=np.int64), start_ms, end_ms)

    async def _frame_columns_many(
        self, by_target: dict[str, list[int]], hours: list[int], start_ms: int, end_ms: int,
        keep: Callable[[str, int, np.ndarray, np.ndarray, np.ndarray, np.ndarray | None], None] | None = None,
    ) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """``_frame_columns`` of several targets with one request (a short range: a refresh's
        newest minutes of 100 targets were 100 requests, each ~0.3 ms of the driver's CPU);
        ``keep`` as ``frame_samples_many``'s, with the target's name."""
        names = sorted(by_target)
        pages = await self.execute(self.ps_frames_read_many, (names, hours, key_span_start(start_ms), end_ms))
        index = {t: k for k, t in enumerate(names)}
        rows = [r for page in pages for r in page]
        if not rows:
            return []
        names_col, ts, base, lid, data, written = zip(*rows, strict=True)
        frames = FrameRows(np.array([index[t] for t in names_col], dtype=np.int64), np.array(ts, dtype=np.int64),
                           list(base), np.array(lid, dtype=np.int64), list(data),
                           np.array([-1 if w is None else w for w in written], dtype=np.int64))
        lids_of: dict[str, set[int]] = {}
        for t, layout in set(zip(names_col, lid, strict=True)):
            lids_of.setdefault(t, set()).add(layout)
        layouts = [await self._target_layouts(t, lids_of[t]) if t in lids_of else {} for t in names]
        wanted = [_wanted(by_target, t) for t in names]
        named: Keep | None = None
        if keep is not None:
            def named(k: int, *run: Any) -> None:
                keep(names[k], *run)
        return frame_samples_many(list(zip(layouts, wanted, strict=True)), frames, start_ms, end_ms, named)

    def _kept_candidates(
        self, cache: FrameCache, by_target: dict[str, list[int]], start_ms: int
    ) -> tuple[dict[str, CachedFrames], dict[str, tuple[np.ndarray, np.ndarray]]]:
        """The cache's frames of the targets holding their wanted series complete from
        ``start_ms`` on, and per target the series and their columns there (before the late
        marks: ``_drop_marked``)."""
        entries: dict[str, CachedFrames] = {}
        cols_of: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        span = key_span_start(start_ms) - 1
        for t in by_target:
            wanted = None
            for e in cache.of(t):
                # (read after e.hi: never more than a whole read, from the key span's start)
                if e.lo > start_ms or e.hi < span:
                    continue
                if wanted is None:
                    wanted = _wanted(by_target, t)
                # (the entry's columns of these series as found before: no layout needed)
                key = wanted.tobytes()
                if key in e.memo:
                    cols = e.memo[key]
                else:
                    layout = self._layouts.get((t, e.layout))
                    if layout is None:
                        continue
                    cols = e.columns_of(layout, wanted)
                if cols is not None:
                    entries[t], cols_of[t] = e, cols
                    break
        return entries, cols_of

    async def _drop_marked(
        self, cache: FrameCache, entries: dict[str, CachedFrames], cols_of: dict[str, tuple[np.ndarray, np.ndarray]],
        now: int,
    ) -> None:
        """``entries`` less those with a late mark newer than their read (their target and
        hour in ``raw_late_frames``, or their hour in ``raw_late``: ``_frames_recent``) or
        read too long ago for the marks to be kept (dropped from ``cache`` too)."""
        if not entries:
            return
        hours = sorted({h for e in entries.values() for h in range(e.lo // sch.RAW_BUCKET_MS, e.hi // sch.RAW_BUCKET_MS + 1)})
        # (the hour marks too: a writer of older code marks only those, > late_after_ms)
        marks, frame_marks = await asyncio.gather(
            self.late_hours(min(e.lo for e in entries.values()), max(e.hi for e in entries.values())),
            self.late_frames(hours))
        margin = self.LATE_REMARK_MS + FRAME_SETTLE_SKEW_MS
        frame_margin = self.LATE_FRAME_REMARK_MS + FRAME_SETTLE_SKEW_MS
        oldest = now - sch.LATE_FRAMES_TTL_S * 1000 // 2
        never = -(2**62)
        for t, e in list(entries.items()):
            hs = range(e.lo // sch.RAW_BUCKET_MS, e.hi // sch.RAW_BUCKET_MS + 1)
            if e.read_at < oldest or any(marks.get(h, never) >= e.read_at - margin
                                         or frame_marks.get((t, h), never) >= e.read_at - frame_margin for h in hs):
                cache.drop(t, e)
                del entries[t], cols_of[t]

    async def _frame_keys(self, names: list[str], hours: list[int], hi: int, end_ms: int) -> list:
        """The keys (target, ts, version) of the frames of ``names`` in (hi, end_ms]."""
        hs = [h for h in hours if h >= (hi + 1) // sch.RAW_BUCKET_MS]
        return [r for page in await self.execute(self.ps_frame_keys_many, (names, hs, hi + 1, end_ms)) for r in page] \
            if hs else []

    async def _extend_kept(
        self, cache: FrameCache, entries: dict[str, CachedFrames], rows: list, hours: list[int], end_ms: int,
        complete_to: int, now: int,
    ) -> tuple[dict[str, CachedFrames | None], bool]:
        """The frames of the targets of ``entries`` after their ``hi`` (where those kept frames
        are complete, the same for all) up to ``end_ms`` added to them: ``rows``, the keys
        (target, ts, version) of their frames there (``_frame_keys``), then only the frames
        not held at that version. The new entries (kept too), None for a target that must be
        read whole instead; and whether no frame was new (every key one held)."""
        names = sorted(entries)
        index = {t: k for k, t in enumerate(names)}
        k_t = np.fromiter((index[r[0]] for r in rows), dtype=np.int64, count=len(rows))
        k_ts = np.fromiter((r[1] for r in rows), dtype=np.int64, count=len(rows))
        k_ver = np.fromiter((-1 if r[2] is None else r[2] for r in rows), dtype=np.int64, count=len(rows))
        order = np.lexsort((k_ts, k_t))
        k_t, k_ts, k_ver = k_t[order], k_ts[order], k_ver[order]
        cuts = np.searchsorted(k_t, np.arange(len(names) + 1)).tolist()
        held: dict[str, np.ndarray] = {}
        need_from: dict[str, int] = {}
        tails = [entries[t].tail() for t in names]
        out: dict[str, CachedFrames | None] = {}
        if _same_keys(tails, cuts, k_ts, k_ver):
            # (usual: every frame after where they are complete stored as held, none new)
            for t in names:
                out[t] = settled = entries[t].settled(complete_to, now)
                cache.put(t, settled)
            return out, True
        for k, t in enumerate(names):
            t_ts, t_ver = k_ts[cuts[k] : cuts[k + 1]], k_ver[cuts[k] : cuts[k + 1]]
            same = entries[t].unchanged(t_ts, t_ver)
            held[t] = t_ts[same]
            if not bool(same.all()):
                need_from[t] = int(t_ts[~same].min())
        rows_of: dict[str, list] = {t: [] for t in names}
        if need_from:
            first = min(need_from.values())
            hs = [h for h in hours if h >= first // sch.RAW_BUCKET_MS]
            skip = {t: set(held[t].tolist()) for t in need_from}
            for page in await self.execute(self.ps_frames_read_many, (sorted(need_from), hs, first, end_ms)):
                for r in page:
                    if r[1] >= need_from[r[0]] and r[1] not in skip[r[0]]:
                        rows_of[r[0]].append(r[1:])
        nothing = FrameRows.of([], [])
        items = []
        for t in names:
            got = nothing
            if rows_of[t]:
                got = FrameRows.of([0] * len(rows_of[t]), [r[:4] for r in rows_of[t]])
                got.version = np.array([-1 if r[4] is None else r[4] for r in rows_of[t]], dtype=np.int64)
            items.append((entries[t], got, held[t]))
        # (the targets' new frames decoded together: ``extend_many``)
        for t, new in zip(names, extend_many(items, complete_to, now), strict=True):
            out[t] = new
            if new is None:
                cache.drop(t, entries[t])
            else:
                cache.put(t, new)
        return out, False

    async def _kept_and_keys(
        self, cache: FrameCache, by_target: dict[str, list[int]], hours: list[int], start_ms: int, end_ms: int,
        now: int,
    ) -> tuple[dict[str, CachedFrames], dict[str, tuple[np.ndarray, np.ndarray]], list[tuple[dict[str, CachedFrames], list]]]:
        """``_kept_candidates`` less ``_drop_marked``'s, their series and columns, and the
        keys of their frames after where they are complete (``_frame_keys``: a request per
        ``_frame_groups`` of the targets complete up to the same time) with those targets."""
        entries, served = self._kept_candidates(cache, by_target, start_ms)
        after: dict[int, dict[str, list[int]]] = {}  # entry.hi -> targets to read after it
        for t, e in entries.items():
            if e.hi < end_ms:
                after.setdefault(e.hi, {})[t] = by_target[t]
        groups = [(hi, sorted(g)) for hi, group in after.items() for g in _frame_groups(group)]
        # The keys asked for with the late marks, not after them: one burst of requests (the
        # node's cost is per burst; issue #20's query: 2 round trips -> 1). A target a mark
        # drops is read whole; its keys go unused. (Either order is safe: a frame these keys
        # miss was stored after ``now``, so its mark, written before it and again at least
        # every LATE_FRAME_REMARK_MS, is newer than this read less the margin, and drops at
        # the next read what this one keeps: ``_mark_late_frames``.)
        keys_read = [asyncio.ensure_future(self._frame_keys(names, hours, hi, end_ms)) for hi, names in groups]
        try:
            await self._drop_marked(cache, entries, served, now)
            keys = await asyncio.gather(*keys_read)
        except BaseException:
            for f in keys_read:
                _abandon(f)
            raise
        keyed = []
        for (_, names), rows in zip(groups, keys, strict=True):
            held = {t: entries[t] for t in names if t in entries}
            if len(held) < len(names):  # (a mark dropped some: their keys go)
                rows = [r for r in rows if r[0] in held]
            if held:
                keyed.append((held, rows))
        return entries, served, keyed

    async def _frames_recent(
        self, by_target: dict[str, list[int]], hours: list[int], start_ms: int, end_ms: int, kept: bool = True,
        blocks: list[KeptBlock] | None = None,
    ) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """The frames of a short range (``_frame_columns_many`` per ``_frame_groups``) through
        the store's ``frame_cache``: a target whose frames the cache holds complete from before
        ``start_ms`` is read only after where they are complete (``CachedFrames.extended``);
        the others are read whole and kept. Frames count as complete up to ``frame_settle_ms``
        before the reader's clock: a frame written later than ``settle_after_ms`` after its
        scrape first marks its target and hour (``_mark_late_frames``), and a mark newer than
        the kept read (less ``LATE_FRAME_REMARK_MS`` and the skew) drops what is kept of the
        target (so does an hour's ``raw_late`` mark, as before: ``_drop_marked``). A read of the
        same targets and series as one that found all of them kept and no frame new goes
        through their ``FrameGroup`` (``_group_read``) when the cache still holds it.
        ``blocks``: the kept targets' samples go there as they are kept (``FrameBlock``, or one
        ``GroupBlock``), not as parts."""
        cache = self.frame_cache if kept else None
        if cache is None:
            got = await _gather_waves([self._frame_columns_many(g, hours, start_ms, end_ms)
                                       for g in _frame_groups(by_target)])
            return [part for parts in got for part in parts]
        now = self.now_ms()
        complete_to = min(end_ms, now - self.frame_settle_ms)
        key = by_target.key() if isinstance(by_target, TargetSeries) else None
        if key is not None and (group := cache.group(key)) is not None:
            got_block = await self._group_read(cache, key, group, by_target, hours, start_ms, end_ms, complete_to, now)
            if got_block is not None:
                cache.hits += len(group.names)
                cache.group_reads += 1
                if blocks is not None:
                    blocks.append(got_block)
                    return []
                part = got_block.samples()
                return [part] if part[0].size else []
        entries, served, keyed = await self._kept_and_keys(cache, by_target, hours, start_ms, end_ms, now)
        whole: dict[str, list[int]] = {t: ids for t, ids in by_target.items() if t not in entries}
        out: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        no_new = True  # (every kept target's frames after where they were complete held)
        for extended, same in await _gather_waves([self._extend_kept(cache, held, rows, hours, end_ms, complete_to, now)
                                                   for held, rows in keyed]):
            no_new &= same
            for t, new in extended.items():
                if new is None:  # (read whole below)
                    del entries[t], served[t]
                    whole[t] = by_target[t]
                else:
                    entries[t] = new
        if whole:
            cache.misses += len(whole)
            lo = key_span_start(start_ms)
            runs_of: dict[str, list[tuple]] = {}

            def keep(t: str, lid: int, used: np.ndarray, ts: np.ndarray, bits: np.ndarray, ver: np.ndarray | None) -> None:
                runs_of.setdefault(t, []).append((lid, used, ts, bits, ver))

            got = await _gather_waves([self._frame_columns_many(g, hours, start_ms, end_ms, keep)
                                       for g in _frame_groups(whole)])
            out.extend(part for parts in got for part in parts)
            if complete_to >= lo:
                for t, runs in runs_of.items():
                    if len(runs) != 1 or runs[0][4] is None:
                        continue  # (several layouts, or a frame without its base: not kept)
                    lid, used, ts, bits, ver = runs[0]
                    layout = self._layouts.get((t, lid))
                    # (narrow targets too: a cached refresh of bench/query.py's 24 h panel over
                    # 100 targets of 8 series decoded ~3,500 frames each time, 19-25 ms CPU
                    # where keeping them takes 12-15)
                    if layout is not None:
                        cache.put(t, CachedFrames(lid, int(layout.size), used, ts, bits.copy(), ver, lo, complete_to, now))
        elif key is not None and no_new and entries and len(served) == len(by_target):
            # Every target kept and none with a new frame (a repeated query's refresh): the
            # next such read goes through the targets' entries as one.
            cache.put_group(key, FrameGroup(list(by_target), [entries[t] for t in by_target],
                                            [served[t] for t in by_target]))
        cache.hits += len(served)
        for t, (sids, at) in served.items():
            if sids.size:
                block = entries[t].block(sids, at, start_ms, end_ms)
                if blocks is not None:
                    blocks.append(block)
                else:
                    out.append(block.samples())
        return [part for part in out if part[0].size]

    async def _group_read(
        self, cache: FrameCache, key: bytes, group: FrameGroup, by_target: dict[str, list[int]], hours: list[int],
        start_ms: int, end_ms: int, complete_to: int, now: int,
    ) -> GroupBlock | None:
        """``_frames_recent``'s read of kept targets through their ``FrameGroup``: one burst of
        requests (the late marks of its hours, ``_drop_marked``'s, and the keys of its frames
        after its ``hi``, ``_frame_keys``'s, in two requests: ``_probe_groups``), checked for
        all targets at once; when no mark is newer than the group's read (less the margins), the group was
        read within half the marks' TTL and the keys are the frames it holds, its block of
        [start_ms, end_ms] (the group settled at ``complete_to`` and ``now``, as
        ``CachedFrames.settled``). Otherwise None, and the group goes (the read goes through
        the targets' entries, which lag the group: they drop at every mark it would)."""
        if group.lo > start_ms or group.hi < key_span_start(start_ms) - 1:
            return None
        if group.requests is None:  # (keys are small: two requests, as the rows' probe; 4 before)
            group.requests = _probe_groups(group.names)
        hs = list(range(group.first // sch.RAW_BUCKET_MS, group.hi // sch.RAW_BUCKET_MS + 1))
        keyed = group.hi < end_ms
        reads = [asyncio.ensure_future(self.late_hours(group.first, group.hi)),
                 asyncio.ensure_future(self.late_frames(hs))]
        if keyed:
            reads += [asyncio.ensure_future(self._frame_keys(names, hours, group.hi, end_ms)) for names in group.requests]
        try:
            got = await asyncio.gather(*reads)
            marks = cast(dict[int, int], got[0])
            frame_marks = cast(dict[tuple[str, int], int], got[1])
            keys = cast(list[list], got[2:])
        except BaseException:
            for f in reads:
                _abandon(f)
            raise
        never = -(2**62)
        fresh = group.read_at >= now - sch.LATE_FRAMES_TTL_S * 1000 // 2
        if fresh:
            since = group.read_at - self.LATE_REMARK_MS - FRAME_SETTLE_SKEW_MS
            fresh = all(marks.get(h, never) < since for h in hs)
        if fresh:
            since = group.read_at - self.LATE_FRAME_REMARK_MS - FRAME_SETTLE_SKEW_MS
            first_h, last_h = hs[0], hs[-1]
            fresh = not any(w >= since and first_h <= h <= last_h and t in group.index for (t, h), w in frame_marks.items())
        if fresh and keyed:
            fresh = group.same_keys([r for rows in keys for r in rows])
            if fresh:
                group.settle(complete_to, now)
        if not fresh:
            cache.drop_group(key)
            return None
        return group.block(start_ms, end_ms)

    def _late_statements(self, ts: np.ndarray) -> tuple[list, dict[int, int]]:
        """``raw_late`` upserts for the hours of samples older than ``late_after_ms``."""
        now = self.now_ms()
        cutoff = now - self.late_after_ms
        if int(ts.min()) >= cutoff:
            return [], {}
        stmts, marks = [], {}
        for hour in np.unique(ts[ts < cutoff] // sch.RAW_BUCKET_MS).tolist():
            last = self._late_marked.get(hour)
            if last is not None and 0 <= now - last < self.LATE_REMARK_MS:
                continue
            stmts.append(self.ps_late_ins.bind((hour * sch.RAW_BUCKET_MS // sch.BLOCK_BUCKET_MS, hour, now)))
            marks[hour] = now
        return stmts, marks

    async def late_frames(self, hours: Sequence[int]) -> dict[tuple[str, int], int]:
        """(target, hour) of ``hours`` that got frames stored late (``raw_late_frames``) ->
        time of the newest such write (ms), as far as marked (``_mark_late_frames``)."""
        out: dict[tuple[str, int], int] = {}
        for part in slices(hours, 100):
            for page in await self.execute(self.ps_late_frames_read, (list(part),)):
                for h, t, w in page:
                    out[(t, h)] = w
        return out

    async def late_hours(self, start_ms: int, end_ms: int) -> dict[int, int]:
        """Hours in [start_ms, end_ms] that got late writes -> time of the newest such write (ms)."""
        days = range(start_ms // sch.BLOCK_BUCKET_MS, end_ms // sch.BLOCK_BUCKET_MS + 1)
        pages = await asyncio.gather(*(self.execute(self.ps_late_read, (d,)) for d in days))
        lo, hi = start_ms // sch.RAW_BUCKET_MS, end_ms // sch.RAW_BUCKET_MS
        return {h: w for day in pages for page in day for h, w in page if lo <= h <= hi}

    def _raw_batches(self, target: str, ids: np.ndarray, ts: np.ndarray, vals: np.ndarray) -> list[BatchStatement]:
        hours = ts // sch.RAW_BUCKET_MS
        out = []
        tgt = target.encode()
        qid = self.ps_insert_raw.query_id
        if hours[0] == hours[-1] and (hours.size == 1 or (hours.min() == hours.max())):
            groups = [(int(hours[0]), np.arange(ts.size))]
        else:
            groups = [(int(h), np.nonzero(hours == h)[0]) for h in np.unique(hours)]
        for hour, idx in groups:
            hb = _I4.pack(hour)
            g_ids = _be8_list(ids[idx], ">i8")
            g_ts = _be8_list(ts[idx], ">i8")
            g_vals = _be8_list(vals[idx], ">f8")
            for lo in range(0, len(g_ids), MAX_ROWS_PER_BATCH):
                b = BatchStatement(BatchType.UNLOGGED, consistency_level=self.consistency)
                # The first row goes through bind() to set the routing key (token-aware).
                b.add(self.ps_insert_raw, (target, hour, int(ids[idx[lo]]), int(ts[idx[lo]]), float(vals[idx[lo]])))
                rows = b._statements_and_parameters  # pre-serialised values: no per-row bind()
                for i in range(lo + 1, min(lo + MAX_ROWS_PER_BATCH, len(g_ids))):
                    rows.append((True, qid, [tgt, hb, g_ids[i], g_ts[i], g_vals[i]]))
                out.append(b)
        return out

    async def _skip_stored_index(self, target: str, series_defs: Sequence[Series], ts: np.ndarray) -> Sequence[Series]:
        """``series_defs`` without the series whose index rows under ``target`` are stored for
        every bucket of ``ts`` already (a take-over: the target's previous scraper indexed
        them), found by looking up their ``series_<level>`` rows (written last, so a stored one
        vouches for its postings and label values) and remembered as indexed."""
        lo, hi = int(ts.min()), int(ts.max())
        buckets = [(lv.suffix, lo // lv.bucket_ms) for lv in sch.INDEX_LEVELS]
        if any(lo // lv.bucket_ms != hi // lv.bucket_ms for lv in sch.INDEX_LEVELS):
            return series_defs
        done = np.ones(len(series_defs), dtype=bool)
        def_ids = np.fromiter((d.id for d in series_defs), dtype=np.int64, count=len(series_defs))
        for k in buckets:
            marked = self._indexed.get(k)
            done &= marked.contains(target, def_ids) if marked is not None else False
        ask = [d for d, known in zip(series_defs, done.tolist(), strict=True) if not known]
        if len(ask) < STORED_INDEX_PROBE_MIN:
            return series_defs
        found: set[int] = set()
        try:
            for suffix, bucket in buckets:  # a series not in the day level is not looked up in the month's
                groups: dict[tuple[str, int], list[int]] = {}
                for d in ask:
                    groups.setdefault((d.metric, shard_of(d.id)), []).append(d.id)
                ps = self.ps_index[suffix]["series_lookup"]
                lookups = [self._rows(ps, (metric, bucket, shard, part))
                           for (metric, shard), ids in groups.items() for part in slices(ids, STORED_INDEX_PROBE_IN)]
                found = {r[0] for rows in await _gather_waves(lookups) for r in rows if r[2] and target in r[2]}
                ask = [d for d in ask if d.id in found]
                if not ask:
                    return series_defs
        except StorageError as exc:  # not known: index them all, as without the lookup
            log.debug("index lookup for %s failed: %s", target, exc)
            return series_defs
        for key in buckets:
            self._indexed.setdefault(key, TargetIds()).add(target, found)
        self.index_found_stored += len(found)
        return [d for d in series_defs if d.id not in found]

    def _index_statements(
        self, target: str, series_defs: Iterable[Series], ts: np.ndarray, which: tuple[np.ndarray, np.ndarray] | None
    ) -> tuple[list[BatchStatement], list[BatchStatement], list, set[tuple[str, str, int]]]:
        """Index rows for (series, bucket) pairs not yet indexed (or seen under a new target),
        batched per index partition with pre-serialised values; ``which`` (series ids, ts)
        says which series a bucket has when ``ts`` spans buckets. Returns the postings and
        label rows, the ``series_<level>`` rows apart (written after the others), the marks
        and the (level, metric, bucket)s whose series rows they write (their stamps are due)."""
        defs = {s.id: s for s in series_defs}
        if not defs:
            return [], [], [], set()
        def_ids = np.fromiter(defs, dtype=np.int64, count=len(defs))
        lo, hi = int(ts.min()), int(ts.max())
        groups: dict[tuple, tuple[PreparedStatement, list[tuple]]] = {}
        marks: list = []
        key: tuple
        tgt_set = frozenset((target,))
        for level in sch.INDEX_LEVELS:
            s = level.suffix
            ps = self.ps_index[s]
            ps_series, ps_post, ps_lv, ps_ln = ps["series_ins"], ps["post_ins"], ps["lv_ins"], ps["ln_ins"]
            for bucket in range(lo // level.bucket_ms, hi // level.bucket_ms + 1):
                if lo // level.bucket_ms != hi // level.bucket_ms and which is not None:
                    # Mixed-bucket batch (rare): only series with samples in this bucket.
                    in_bucket = set(which[0][(which[1] // level.bucket_ms) == bucket].tolist())
                else:
                    in_bucket = None
                marked = self._indexed.get((s, bucket))
                done = set() if marked is None else set(def_ids[marked.contains(target, def_ids)].tolist())
                ix_ids: list[int] = []
                for sid, series in defs.items():
                    if sid in done or (in_bucket is not None and sid not in in_bucket):
                        continue
                    metric = series.metric
                    shard = shard_of(sid)
                    labels = json.dumps(series.labels, separators=(",", ":"))
                    key = ("s", s, metric, bucket, shard)
                    if key not in groups:
                        groups[key] = (ps_series, [])
                    groups[key][1].append((labels, tgt_set, metric, bucket, shard, sid))
                    for name, value in series.labels:
                        if name != METRIC_NAME:
                            pshard = posting_shard(value, sid)
                            key = ("p", s, metric, bucket, name, pshard)
                            if key not in groups:
                                groups[key] = (ps_post, [])
                            groups[key][1].append((metric, bucket, name, pshard, value, sid))
                        lv_key = (s, bucket, name, value)
                        if lv_key not in self._label_values_done:
                            vs = value_shard(value)
                            key = ("v", s, bucket, name, vs)
                            if key not in groups:
                                groups[key] = (ps_lv, [])
                            groups[key][1].append((bucket, name, vs, value))
                            marks.append(("lv", lv_key))
                        ln_key = (s, bucket, name)
                        if ln_key not in self._label_names_done:
                            key = ("n", s, bucket)
                            if key not in groups:
                                groups[key] = (ps_ln, [])
                            groups[key][1].append((bucket, name))
                            marks.append(("ln", ln_key))
                    ix_ids.append(sid)
                if ix_ids:
                    marks.append(("ix", (s, bucket), target, ix_ids))
        stmts, series_rows = self._index_batches(groups)
        changed = {(k[1], k[2], k[3]) for k in groups if k[0] == "s"}
        return stmts, series_rows, marks, changed

    def _index_batches(
        self, groups: dict[tuple, tuple[PreparedStatement, list[tuple]]]
    ) -> tuple[list[BatchStatement], list[BatchStatement]]:
        """The index rows of each partition in unlogged batches, values pre-serialised; the
        ``series_<level>`` rows (groups keyed "s") apart."""
        stmts: list[BatchStatement] = []
        series_rows: list[BatchStatement] = []
        encoder = _RowEncoder()
        for key, (ps, rows) in groups.items():
            rows = list(dict.fromkeys(rows))  # the same label value twice in one call
            enc = getattr(encoder, _ENCODERS[ps.query_id])
            for chunk in slices(rows, MAX_ROWS_PER_BATCH):
                b = BatchStatement(BatchType.UNLOGGED, consistency_level=self.consistency)
                b.add(ps, chunk[0])  # bound normally once: sets the routing key
                out = b._statements_and_parameters
                qid = ps.query_id
                for row in chunk[1:]:
                    out.append((True, qid, enc(row)))
                (series_rows if key[0] == "s" else stmts).append(b)
        return stmts, series_rows

    def _commit_marks(self, marks: list) -> None:
        indexed: dict[tuple[tuple[str, int], str], list[int]] = {}
        for m in marks:
            if m[0] == "ix":
                indexed.setdefault((m[1], m[2]), []).extend(m[3])
            elif m[0] == "lv":
                self._label_values_done.add(m[1])
            else:
                self._label_names_done.add(m[1])
        for (key, target), sids in indexed.items():
            self._indexed.setdefault(key, TargetIds()).add(target, sids)
        if len(self._indexed) > 8:  # forget old buckets (keep the newest few per level)
            for level in sch.INDEX_LEVELS:
                keys = sorted(k for k in self._indexed if k[0] == level.suffix)
                for k in keys[:-3]:
                    del self._indexed[k]
        if len(self._label_values_done) > 2_000_000:
            self._label_values_done.clear()
            self._label_names_done.clear()

    def is_indexed(self, series_id: int, ts_ms: int, target: str) -> bool:
        """True when this process stored the index rows of ``series_id`` (under ``target``) for ``ts_ms``."""
        return bool(self.indexed_mask(np.array([series_id], dtype=np.int64), ts_ms, target)[0])

    def indexed_mask(self, series_ids: np.ndarray, ts_ms: int, target: str) -> np.ndarray:
        """``is_indexed`` of each of ``series_ids`` (all at ``ts_ms``), as one bool array."""
        done = np.ones(series_ids.size, dtype=bool)
        for lv in sch.INDEX_LEVELS:
            marked = self._indexed.get((lv.suffix, ts_ms // lv.bucket_ms))
            if marked is None:
                return np.zeros(series_ids.size, dtype=bool)
            done &= marked.contains(target, series_ids)
        return done

    # -- index reads ------------------------------------------------------------------------

    def _level_for(self, start_ms: int, end_ms: int) -> sch.IndexLevel:
        day = sch.INDEX_LEVELS[0]
        n_days = end_ms // day.bucket_ms - start_ms // day.bucket_ms + 1
        if n_days <= 32 and start_ms >= self.now_ms() - (day.ttl_s - 86_400) * 1000:
            return day
        if n_days <= 2:  # old but short range: day buckets are still the tightest that exist
            return day
        return sch.INDEX_LEVELS[1]

    async def _index_rows(self, level: str, key: str, params: tuple, bucket: int, shards: int) -> list:
        self.index_reads[(key.split("_")[0] + "_" + level, bucket)] += shards
        return await self._rows(self.ps_index[level][key], params)

    async def _metric_names(self, level: sch.IndexLevel, buckets: range, matchers: Sequence[Matcher]) -> list[str]:
        name_ms = [m for m in matchers if m.name == METRIC_NAME]
        for m in name_ms:
            if m.op is MatchOp.EQ:
                return [m.value] if all(x.matches_value(m.value) for x in name_ms) else []
        rows = await asyncio.gather(
            *(
                self._index_rows(level.suffix, "lv_read", (b, METRIC_NAME, ALL_SHARDS), b, len(ALL_SHARDS))
                for b in buckets
            )
        )
        names = {r[0] for page in rows for r in page}
        return sorted(n for n in names if all(m.matches_value(n) for m in name_ms))

    async def _posting_ids(self, level: str, metric: str, bucket: int, name: str, value: str) -> list:
        """Postings of one label value: its shards read unpaged (Cassandra reads the partitions
        of an unpaged ``IN`` together, a paged one partition after partition) up to
        ``POSTING_PROBE_ROWS``; a longer list is read again, paged."""
        shards = posting_shards(value)
        params = (metric, bucket, name, shards, value)
        rows = await self._index_rows(level, "post_eq_probe", (*params, POSTING_PROBE_ROWS + 1), bucket, len(shards))
        if len(rows) > POSTING_PROBE_ROWS:
            rows = await self._rows(self.ps_index[level]["post_eq"], params)
        return rows

    async def _ids_in_bucket(self, level: str, metric: str, bucket: int, matchers: Sequence[Matcher]) -> set[int]:
        label_ms = [m for m in matchers if m.name != METRIC_NAME]
        n = len(ALL_SHARDS)
        need_all = not label_ms or any(m.matches_empty for m in label_ms)
        tasks = []
        if need_all:
            tasks.append(self._index_rows(level, "series_all", (metric, bucket, ALL_SHARDS), bucket, n))
        for m in label_ms:
            if m.op in (MatchOp.EQ, MatchOp.NE) and m.value != "":
                # "=" reads the value's slice; "!=" (matches empty) subtracts that slice.
                tasks.append(self._posting_ids(level, metric, bucket, m.name, m.value))
            else:
                tasks.append(self._index_rows(level, "post_all", (metric, bucket, m.name, ALL_SHARDS), bucket, n))
        results = await asyncio.gather(*tasks)
        it = iter(results)
        current: set[int] | None = {r[0] for r in next(it)} if need_all else None
        for m, rows in zip(label_ms, it, strict=True):
            if m.op is MatchOp.EQ and m.value != "":
                hit = {r[0] for r in rows}
                current = hit if current is None else current & hit
            elif m.op is MatchOp.NE and m.value != "":
                assert current is not None
                current -= {r[0] for r in rows}
            elif m.matches_empty:
                # Series whose value of this label does not match are excluded; series
                # without the label match (missing == "").
                assert current is not None
                current -= {sid for value, sid in rows if not m.matches_value(value)}
            else:
                hit = {sid for value, sid in rows if m.matches_value(value)}
                current = hit if current is None else current & hit
            if not current:
                return set()
        return current or set()

    async def _select_ids(
        self, matchers: Sequence[Matcher], start_ms: int, end_ms: int, *, cached: bool = False
    ) -> tuple[sch.IndexLevel, dict[tuple[str, int], set[int]]]:
        """Matching series ids per (metric, bucket) of the index level that covers the range;
        ``cached``: what an earlier read found is taken again while its stamps allow
        (``_kept_ids``: query reads; the rollup job and the raw drop read the index)."""
        level = self._level_for(start_ms, end_ms)
        if end_ms < start_ms:
            return level, {}
        buckets = range(start_ms // level.bucket_ms, end_ms // level.bucket_ms + 1)
        metrics = await self._metric_names(level, buckets, matchers)
        keys = [(metric, b) for metric in metrics for b in buckets]
        kept = await self._kept_ids(level.suffix, keys, matchers) if cached else {}
        todo = [k for k in keys if k not in kept]
        read_us = time.time_ns() // 1000
        parts = await _gather_waves([self._ids_in_bucket(level.suffix, m, b, matchers) for m, b in todo])
        found = dict(kept)
        for (metric, b), ids in zip(todo, parts, strict=True):
            found[(metric, b)] = ids
            if cached:
                self._index_kept[(level.suffix, metric, b, tuple(matchers))] = (read_us, frozenset(ids))
        return level, {k: p for k in keys if (p := found[k])}

    async def _kept_ids(
        self, suffix: str, keys: list[tuple[str, int]], matchers: Sequence[Matcher]
    ) -> dict[tuple[str, int], set[int]]:
        """The series ids an earlier read of ``matchers`` found at the (metric, bucket)s
        ``keys`` that still hold: read at most INDEX_CACHE_MAX_AGE_MS ago, and the index
        there not changed since (its stamp, INDEX_STAMP_SHARD, older than the read less
        ``index_skew_ms``; no stamp: not known)."""
        now_us = time.time_ns() // 1000
        held: dict[tuple[str, int], tuple[int, frozenset[int]]] = {}
        for metric, b in keys:
            e = self._index_kept.get((suffix, metric, b, tuple(matchers)))
            if e is not None and now_us - e[0] <= INDEX_CACHE_MAX_AGE_MS * 1000:
                held[(metric, b)] = e
        out = {k: set(ids) for k, ids in (await self._unchanged_since(suffix, held)).items()}
        self.index_kept_hits += len(out)
        return out

    async def _unchanged_since(self, suffix: str, held: dict[tuple[str, int], tuple[int, _Kept]]) -> dict[tuple[str, int], _Kept]:
        """Of ``held`` ((metric, bucket) -> (read time in us, what that read found)), what the
        index there has not changed since: its stamp (INDEX_STAMP_SHARD) older than the read
        less ``index_skew_ms``; no stamp: not known. One request for all of them."""
        if not held:
            return {}
        params = (sorted({m for m, _ in held}), sorted({b for _, b in held}), INDEX_STAMP_SHARD, INDEX_STAMP_ID)
        stamps = {(m, b): w for m, b, w in await self._rows(self.ps_index[suffix]["stamp_read"], params)}
        out = {}
        for k, (read_us, found) in held.items():
            stamp = stamps.get(k)
            if stamp is not None and stamp < read_us - self.index_skew_ms * 1000:
                out[k] = found
        return out

    async def _infos(self, level: sch.IndexLevel, found: dict[tuple[str, int], set[int]]) -> dict[int, SeriesInfo]:
        """Labels and targets of the found series: from the cache, else from ``series_<level>``."""
        out: dict[int, SeriesInfo] = {}
        lookups = []
        ps = self.ps_index[level.suffix]["series_lookup"]
        fresh = []
        for (metric, bucket), ids in found.items():
            memo = self._found_infos.get((level.suffix, metric, bucket))
            if memo is not None and memo[0] == ids:  # (the same series as last time: no lookup per id)
                out.update(memo[1])
                continue
            fresh.append((metric, bucket, ids))
            by_shard: dict[int, list[int]] = {}
            for sid in ids:
                if sid in out:
                    continue
                cached = self._series_info.get(sid)
                if cached is not None:
                    out[sid] = cached
                else:
                    by_shard.setdefault(shard_of(sid), []).append(sid)
            for shard, sids in by_shard.items():
                for part in slices(sids, SERIES_LOOKUP_CHUNK):
                    lookups.append(self._rows(ps, (metric, bucket, shard, part)))
        if lookups:
            merged: dict[int, tuple[Series, set[str]]] = {}
            for rows in await _gather_waves(lookups):
                for sid, labels, targets in rows:
                    if sid not in merged:
                        merged[sid] = (Series(sid, tuple((k, v) for k, v in json.loads(labels))), set())
                    merged[sid][1].update(targets or ())
            for sid, (series, targets) in merged.items():
                info = SeriesInfo(series, frozenset(targets))
                out[sid] = info
                self._series_info[sid] = info
        for metric, bucket, ids in fresh:
            if all(sid in out for sid in ids):
                self._found_infos[(level.suffix, metric, bucket)] = (frozenset(ids), {sid: out[sid] for sid in ids})
        return out

    async def _select_series(
        self, matchers: Sequence[Matcher], start_ms: int, end_ms: int, *, cached: bool = False
    ) -> list[SeriesInfo]:
        """The series of ``matchers`` in the range; ``cached`` (query reads): the same
        ``SeriesInfos`` as the last read of ``matchers`` when the index gave the same ids."""
        level, found = await self._select_ids(matchers, start_ms, end_ms, cached=cached)
        key = (level.suffix, tuple(matchers))
        if cached:
            memo = self._selected.get(key)
            if memo is not None and memo[0] == found:
                return memo[1]
        infos = await self._infos(level, found)
        # Exactness net: the index narrows, the labels decide (hash collisions, label edits);
        # the series of a metric's index rows have its name (as SQLite's rollup select).
        metrics = {metric for metric, _ in found}
        wanted = [m for m in matchers if not (m.name == METRIC_NAME and m.op is MatchOp.EQ and metrics <= {m.value})]
        got = SeriesInfos(infos.values() if not wanted else (i for i in infos.values() if match_all(wanted, i.series.labels)))
        # (kept only when every id found has its labels: a lookup that missed some is made again)
        if cached and all(sid in infos for ids in found.values() for sid in ids):
            self._selected[key] = (found, got)
        return got

    async def _index_target_sets(self, start_ms: int, end_ms: int, *, kept: bool = False) -> dict[int, frozenset[str]]:
        """Every series id of the index in the range with its targets (the series of a set of
        targets share one frozenset), its labels not read. For the rollup job's window reads and the
        raw drop, which need ids and targets only: a request per metric, bucket and 8 shards (the rows
        ``_select_series`` of ``__name__=~".+"`` reads, with their targets), not its lookups of
        every series' labels, ~1,000 requests for 100,000 series a fresh process made (issue
        #20's seal: ~11 s of the node's CPU and ~3.7 s of the job's of its ~70 s). With ``kept``
        what a read found of a metric and bucket is taken again while the index's stamp there is
        older than that read (``_targets_kept``, at most INDEX_CACHE_MAX_AGE_MS: the drop after a
        seal, the fresh pass after the one before). No object per series is made: a seal of
        100,000 series made a ``SeriesInfo`` and a ``Series`` each, ~0.4 s of its CPU."""
        level = self._level_for(start_ms, end_ms)
        if end_ms < start_ms:
            return {}
        buckets = range(start_ms // level.bucket_ms, end_ms // level.bucket_ms + 1)
        metrics = await self._metric_names(level, buckets, [Matcher(METRIC_NAME, MatchOp.RE, ".+")])
        keys = [(metric, b) for metric in metrics for b in buckets]
        found = await self._kept_targets(level.suffix, keys) if kept else {}
        todo = [k for k in keys if k not in found]
        groups = list(slices(ALL_SHARDS, TARGETS_READ_SHARDS))
        read_us = time.time_ns() // 1000
        pages = await _gather_waves([
            self._index_rows(level.suffix, "series_targets", (metric, b, shards), b, len(shards))
            for metric, b in todo for shards in groups])
        # (a target's series share one frozenset of its name: one per distinct set, not per series)
        interned: dict[frozenset[str], frozenset[str]] = {}
        for i, (metric, b) in enumerate(todo):
            got: dict[int, frozenset[str]] = {}
            for rows in pages[i * len(groups) : (i + 1) * len(groups)]:
                for sid, names in rows:
                    names = frozenset(names or ())
                    had = got.get(sid)
                    if had is not None:
                        names |= had
                    got[sid] = interned.setdefault(names, names)
            found[(metric, b)] = got
            self._targets_kept[(level.suffix, metric, b)] = (read_us, got)
        targets: dict[int, frozenset[str]] = {}
        for each in found.values():
            if targets.keys().isdisjoint(each):  # (a series is of one metric: buckets alone overlap)
                targets.update(each)
                continue
            for sid, names in each.items():
                had = targets.get(sid)
                targets[sid] = names if had is None or had == names else had | names
        return targets

    async def _kept_targets(self, suffix: str, keys: list[tuple[str, int]]) -> dict[tuple[str, int], dict[int, frozenset[str]]]:
        """What ``_index_target_sets`` read of the (metric, bucket)s ``keys`` that still holds: read
        at most INDEX_CACHE_MAX_AGE_MS ago and the index there not changed since (its stamp
        older than the read less ``index_skew_ms``; no stamp: not known), as ``_kept_ids``."""
        now_us = time.time_ns() // 1000
        held = {}
        for metric, b in keys:
            e = self._targets_kept.get((suffix, metric, b))
            if e is not None and now_us - e[0] <= INDEX_CACHE_MAX_AGE_MS * 1000:
                held[(metric, b)] = e
        return await self._unchanged_since(suffix, held)

    # -- reads ------------------------------------------------------------------------------

    async def series(self, matchers: Sequence[Matcher], start_ms: int, end_ms: int) -> list[Series]:
        infos = await self._select_series(matchers, start_ms, end_ms, cached=True)
        return sorted((i.series for i in infos), key=lambda s: s.labels)

    async def label_names(self, start_ms: int, end_ms: int, matchers: Sequence[Matcher] = ()) -> list[str]:
        if matchers:
            names = {k for s in await self.series(matchers, start_ms, end_ms) for k, _ in s.labels}
            return sorted(names)
        level = self._level_for(start_ms, end_ms)
        buckets = range(start_ms // level.bucket_ms, end_ms // level.bucket_ms + 1)
        pages = await asyncio.gather(*(self._index_rows(level.suffix, "ln_read", (b,), b, 1) for b in buckets))
        return sorted({r[0] for rows in pages for r in rows})

    async def label_values(
        self, name: str, start_ms: int, end_ms: int, matchers: Sequence[Matcher] = ()
    ) -> list[str]:
        if matchers:
            values = {s.get(name) for s in await self.series(matchers, start_ms, end_ms)}
            return sorted(v for v in values if v != "")
        level = self._level_for(start_ms, end_ms)
        buckets = range(start_ms // level.bucket_ms, end_ms // level.bucket_ms + 1)
        pages = await asyncio.gather(
            *(
                self._index_rows(level.suffix, "lv_read", (b, name, ALL_SHARDS), b, len(ALL_SHARDS))
                for b in buckets
            )
        )
        return sorted({r[0] for rows in pages for r in rows})

    async def select(
        self,
        matchers: Sequence[Matcher],
        start_ms: int,
        end_ms: int,
        resolution: Resolution = Resolution.RAW,
        *,
        columns: Collection[str] | None = None,
    ) -> list[SeriesData]:
        if resolution is not Resolution.RAW:
            raise StorageError(f"reading {resolution.value} rollups from Cassandra comes with the rollup job")
        infos = await self._select_series(matchers, start_ms, end_ms, cached=True)
        if not infos:
            return []
        return await self.read_raw(infos, start_ms, end_ms, kept=True)

    async def read_raw(
        self, infos: Sequence[SeriesInfo], start_ms: int, end_ms: int, hours: Sequence[int] | None = None,
        *, kept: bool = False,
    ) -> list[SeriesData]:
        """Raw samples of known series in [start_ms, end_ms] from ``raw_recent`` and ``raw_frames``.

        ``hours`` limits the read to those hour partitions (default: every hour of the range);
        ``kept``: a short read's frames go through ``frame_cache`` (query reads, not the job's).
        """
        # (slices of two copies, not np.split: its pieces cost ~10 us each, 800 series a refresh)
        return (await self.read_raw_flat(infos, start_ms, end_ms, hours, kept=kept)).as_data()

    async def select_flat(self, matchers: Sequence[Matcher], start_ms: int, end_ms: int) -> FlatSamples:
        """``select``'s raw samples as flat columns (``storage.base.FlatRawReader``)."""
        return await self._select_read_flat(matchers, start_ms, end_ms, None)

    async def _select_read_flat(
        self, matchers: Sequence[Matcher], start_ms: int, end_ms: int, hours: Sequence[int] | None
    ) -> FlatSamples:
        """``_select_series`` (cached) of ``matchers``, then ``read_raw_flat`` of what it
        found (``kept``). When an earlier read of ``matchers`` found series, their read starts
        with the index's check instead of after it, and serves when the check gives the same
        series (the usual: a refresh): one burst of requests, not two (the node's cost is
        per burst, and a round trip less; issue #20's query). Otherwise it is dropped and
        what the check found is read."""
        memo = self._selected.get((self._level_for(start_ms, end_ms).suffix, tuple(matchers)))
        guess = memo[1] if memo is not None and end_ms >= start_ms else None
        read: asyncio.Future[FlatSamples] | None = None
        if guess:
            read = asyncio.ensure_future(self.read_raw_flat(guess, start_ms, end_ms, hours, kept=True))
        try:
            if read is not None:
                # (the read's own work before its requests first - which kept frames it
                # extends - so that its requests leave with the check's, not ms after it)
                await asyncio.sleep(0)
            infos = await self._select_series(matchers, start_ms, end_ms, cached=True)
        except BaseException:
            if read is not None:
                _abandon(read)
            raise
        if read is not None:
            if infos is guess:
                return await read
            _abandon(read)
        if not infos:
            return FlatSamples.of([])
        return await self.read_raw_flat(infos, start_ms, end_ms, hours, kept=True)

    async def read_raw_flat(
        self, infos: Sequence[SeriesInfo], start_ms: int, end_ms: int, hours: Sequence[int] | None = None,
        *, kept: bool = False,
    ) -> FlatSamples:
        """``read_raw`` as flat columns, the series in label order: the runs of the read placed
        with one gather, no object per series (a read of kept frames only: straight from them,
        ``blocks_in_order``)."""
        blocks: list[KeptBlock] = []
        parts = await self._read_parts(infos, start_ms, end_ms, hours, kept=kept, blocks=blocks)
        if blocks:
            order, series = self._in_label_order(infos)
            if isinstance(blocks[0], GroupBlock):  # (then the only one)
                got = blocks[0].in_order(order)
            else:
                got = blocks_in_order(cast(list[FrameBlock], blocks), order, self._placements)
            if got is not None:
                found, offsets, ts, val = got
                named = series if found.size == len(series) else [series[i] for i in found.tolist()]
                return FlatSamples(list(named), offsets, ts, val)
            for block in blocks:  # (a series in two targets: merged as parts)
                sid, ts, val = block.samples()
                parts[0].append(sid)
                parts[1].append(ts)
                parts[2].append(val)
                parts[3].append(np.ones(ts.size, dtype=np.int8))
        if not parts[0]:
            return FlatSamples.of([])
        run_ids, lo, hi, ts, val = series_spans(*parts)  # (ids ascending, one run each)
        order, series = self._in_label_order(infos)
        at = np.minimum(np.searchsorted(run_ids, order), run_ids.size - 1)
        found = np.flatnonzero(run_ids[at] == order)  # (of the series in label order, those with samples)
        runs = at[found]
        first, sizes = lo[runs], hi[runs] - lo[runs]
        offsets = np.zeros(found.size + 1, dtype=np.int64)
        np.cumsum(sizes, out=offsets[1:])
        rows = np.repeat(first - offsets[:-1], sizes)
        rows += np.arange(rows.size, dtype=np.int64)
        named = series if found.size == len(series) else [series[i] for i in found.tolist()]
        return FlatSamples(list(named), offsets, ts[rows], val[rows])

    def _in_label_order(self, infos: Sequence[SeriesInfo]) -> tuple[np.ndarray, list[Series]]:
        """The ids of ``infos`` in the order of their labels and their ``Series`` so, kept per
        set of ids (``_label_orders``): the sort of 6,400 label tuples cost a repeated range
        query ~20-40 ms each time, and a dict of its infos by id ~2 ms. (An id names one label
        set, so an order found once holds.)"""
        if isinstance(infos, SeriesInfos) and infos.label_order is not None:
            return infos.label_order
        ids = np.fromiter((i.series.id for i in infos), dtype=np.int64, count=len(infos))
        key = np.unique(ids).tobytes()
        got = self._label_orders.get(key)
        if got is None:
            ranked = sorted({i.series.id: i.series for i in infos}.values(), key=lambda s: s.labels)
            got = self._label_orders[key] = (np.fromiter((s.id for s in ranked), dtype=np.int64, count=len(ranked)),
                                             ranked)
        if isinstance(infos, SeriesInfos):
            infos.label_order = got
        return got

    async def read_columns(
        self, infos: Sequence[SeriesInfo], start_ms: int, end_ms: int, hours: Sequence[int] | None = None,
        *, kept: bool = False,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``read_raw`` as three columns (series id, ts, value), sorted by series then time."""
        parts = await self._read_parts(infos, start_ms, end_ms, hours, kept=kept)
        if not parts[0]:
            return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64), np.empty(0, dtype=np.float64)
        return series_major(*parts)

    async def read_column_runs(
        self, infos: Sequence[SeriesInfo], start_ms: int, end_ms: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """``read_columns`` as (series ids, bounds, ts, values) (``series_runs``): a big read
        (the rollup job's window) without an id per sample."""
        parts = await self._read_parts(infos, start_ms, end_ms, None)
        if not parts[0]:
            return np.empty(0, dtype=np.int64), np.zeros(1, dtype=np.int64), np.empty(0, dtype=np.int64), \
                np.empty(0, dtype=np.float64)
        return series_runs(*parts)

    async def _frames_of(
        self, by_target: dict[str, list[int]], hours: list[int], start_ms: int, end_ms: int, kept: bool,
        blocks: list[KeptBlock] | None = None,
    ) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """The frames' parts of a read (``_read_parts``): a short range's through
        ``_frames_recent`` (several targets per request, kept frames; ``blocks`` as its), even
        of one target (a panel's few series on a window's edge, read again each refresh), a
        longer one's a request per target."""
        if end_ms - start_ms <= FRAME_READ_SPAN_MS:
            return await self._frames_recent(by_target, hours, start_ms, end_ms, kept, blocks)
        return await _gather_waves([self._frame_columns(t, ids, hours, start_ms, end_ms) for t, ids in by_target.items()])

    async def _short_rows(
        self, by_target: dict[str, list[int]], hours: list[int], start_ms: int, end_ms: int
    ) -> list[tuple[int | None, list]]:
        """``_rows_of`` a short range of several targets: first which of their (target, hour)
        partitions hold rows at all (``SELECT DISTINCT``, up to PROBE_GROUP_TARGETS targets a
        request, two at least), then the rows of those targets only. Usually none: a scrape
        of >= 8 series is a frame (issue #20's range query over 200 targets: 4 requests where
        the rows took 25, ~1 ms of the reader's CPU and 2-3 of the node's against ~8.5 and
        ~9; 2 since)."""
        found = await _gather_waves([self.execute(self.ps_rows_written, (names, hours))
                                     for names in _probe_groups(by_target)])
        written = set().union(*map(_partitions, found))
        if not written:
            return []
        return await self._rows_of({t: ids for t, ids in by_target.items() if t in written}, hours, start_ms, end_ms)

    async def _rows_of(
        self, by_target: dict[str, list[int]], hours: list[int], start_ms: int, end_ms: int
    ) -> list[tuple[int | None, list]]:
        """The ``raw_recent`` rows of the targets' series: (the series id of a one-series read,
        whose rows are (ts, value), else None; the request's pages) per request."""
        tasks = []
        singles: list[int | None] = []
        by_target_rows = by_target
        if end_ms - start_ms <= FRAME_READ_SPAN_MS and len(hours) <= 2 and len(by_target) > 1:
            # A short range (a refresh's newest minutes): the rows of several targets per request,
            # as long as their series fit one; a target alone keeps its own request (below).
            by_target_rows = {}
            for names, ids in _target_groups(by_target):
                if len(names) == 1:
                    by_target_rows[names[0]] = ids
                else:
                    many = (names, list(hours), sorted(set(ids)), start_ms, end_ms)
                    tasks.append(self.execute_columnar(self.ps_read_raw_many, many))
                    singles.append(None)
        for target, ids in by_target_rows.items():
            ids = sorted(ids)
            for chunk in slices(ids, RAW_READ_SERIES_CHUNK):
                per = max(1, RAW_REQUEST_SERIES_HOURS // len(chunk))
                for hs in slices(hours, per):
                    if len(chunk) == 1:
                        params = (target, hs, chunk[0], start_ms, end_ms)
                        tasks.append(self.execute_columnar(self.ps_read_raw_one, params))
                        singles.append(chunk[0])
                    else:
                        tasks.append(self.execute_columnar(self.ps_read_raw, (target, hs, chunk, start_ms, end_ms)))
                        singles.append(None)
        return list(zip(singles, await _gather_waves(tasks), strict=True))

    async def _read_parts(
        self, infos: Sequence[SeriesInfo], start_ms: int, end_ms: int, hours: Sequence[int] | None,
        *, kept: bool = False, blocks: list[KeptBlock] | None = None, probe_rows: bool = False,
    ) -> tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray], list[np.ndarray]]:
        """The (series ids, ts, values, priorities) parts a read gets: each target's frames and
        each ``raw_recent`` request's rows (priority 0: a row wins an equal (series, ts)).
        ``blocks``: when the read's samples are all of kept frames, they are left there
        (``_frames_recent``) and no part is made. ``probe_rows`` (the rollup job's window
        reads): the rows of the targets whose partitions hold any (``_short_rows``) at any
        range, not a request per target, hour and RAW_READ_SERIES_CHUNK series (issue #20's
        seal: 3,006 of its 8,166 requests, for 100,200 series in frames)."""
        empty: tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray], list[np.ndarray]] = ([], [], [], [])
        by_target = infos.by_target if isinstance(infos, SeriesInfos) else None
        if by_target is None:
            by_target = TargetSeries()
            for info in infos:
                for t in info.targets:
                    by_target.setdefault(t, []).append(info.series.id)
            if isinstance(infos, SeriesInfos):
                infos.by_target = by_target
        if hours is None:
            hours = range(start_ms // sch.RAW_BUCKET_MS, end_ms // sch.RAW_BUCKET_MS + 1)
        hours = sorted(hours)
        if not hours:
            return empty

        def rows_of() -> Coroutine[Any, Any, list[tuple[int | None, list]]]:
            if len(by_target) > 1 and (probe_rows or (end_ms - start_ms <= FRAME_READ_SPAN_MS and len(hours) <= 2)):
                return self._short_rows(by_target, hours, start_ms, end_ms)
            return self._rows_of(by_target, hours, start_ms, end_ms)

        # A query's read (``kept``) asks for the rows while it reads the frames: the node reads
        # them while this process resolves the frames (issue #20's range query: 25 requests of
        # mostly empty partitions, ~15 ms of wall after the frames). The job reads them after.
        rows_read: asyncio.Future | None = asyncio.ensure_future(rows_of()) if kept else None
        try:
            framed = await self._frames_of(by_target, list(hours), start_ms, end_ms, kept, blocks)
        except BaseException:
            if rows_read is not None:
                rows_read.cancel()
                rows_read.add_done_callback(lambda f: f.cancelled() or f.exception())  # (never logged)
            raise
        parts_sid, parts_ts, parts_val = [], [], []
        parts_prio = []  # 0 for rows, 1 for frames: a row wins an equal (series, ts)
        for sid, ts, val in framed:
            if ts.size:
                parts_sid.append(sid)
                parts_ts.append(ts)
                parts_val.append(val)
                parts_prio.append(np.ones(ts.size, dtype=np.int8))
        rows = await rows_read if rows_read is not None else await rows_of()
        if blocks and (parts_sid or any(len(page) for _, pages in rows for page in pages)):
            # (not all of kept frames: the blocks as parts, after the other frames, as read)
            for block in blocks:
                sid, ts, val = block.samples()
                if ts.size:
                    parts_sid.append(sid)
                    parts_ts.append(ts)
                    parts_val.append(val)
                    parts_prio.append(np.ones(ts.size, dtype=np.int8))
            blocks.clear()
        for single, pages in rows:
            for page in pages:
                if single is not None:
                    ts, val = page_columns(page, ("ts", "value"), ("i8", "f8"))
                    sid = np.full(ts.size, single, dtype=np.int64)
                else:
                    sid, ts, val = page_columns(page, ("series_id", "ts", "value"), ("i8", "i8", "f8"))
                if ts.size:
                    parts_sid.append(sid)
                    parts_ts.append(ts)
                    parts_val.append(val)
                    parts_prio.append(np.zeros(ts.size, dtype=np.int8))
        return parts_sid, parts_ts, parts_val, parts_prio


def _same_keys(tails: list[tuple[np.ndarray, np.ndarray]], cuts: list[int], ts: np.ndarray, versions: np.ndarray) -> bool:
    """Whether the keys (ts, versions) read of targets' frames (by target, then time; target
    k's at ``cuts[k]:cuts[k + 1]``) are, target by target, exactly the frames kept after
    where each is complete (``tails``)."""
    if [t.size for t, _ in tails] != [b - a for a, b in zip(cuts[:-1], cuts[1:], strict=True)]:
        return False
    if not ts.size:
        return True
    return bool(np.array_equal(np.concatenate([t for t, _ in tails]), ts)) and \
        bool(np.array_equal(np.concatenate([v for _, v in tails]), versions))


def _partitions(pages: list) -> set[str]:
    return {row[0] for page in pages for row in page}


def series_major(
    parts_sid: list[np.ndarray], parts_ts: list[np.ndarray], parts_val: list[np.ndarray], parts_prio: list[np.ndarray]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Parts of (series id, ts, value) columns as one, sorted by series then time; of equal
    (series, ts) the sample of the lowest ``prio`` stays (``series_runs`` with the ids repeated)."""
    ids, bounds, ts, val = series_runs(parts_sid, parts_ts, parts_val, parts_prio)
    return np.repeat(ids, np.diff(bounds)), ts, val


def series_runs(
    parts_sid: list[np.ndarray], parts_ts: list[np.ndarray], parts_val: list[np.ndarray], parts_prio: list[np.ndarray]
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Parts of (series id, ts, value) columns as (ids ascending, bounds, ts, values): series
    ``ids[i]`` is rows ``bounds[i]:bounds[i + 1]``, in time order; of equal (series, ts) the
    sample of the lowest ``prio`` stays. Usually each series is one run in time order in one
    part (a target's frames give its series one after another): then the runs are only
    copied in series order, not sorted sample by sample, and no array of the whole read but
    the results is made (a window of all shards is ~10 M samples)."""
    if len(parts_sid) > 8 and sum(p.size for p in parts_sid) <= RUNS_GATHER_SAMPLES:
        return _series_runs_joined(parts_sid, parts_ts, parts_val, parts_prio)
    run_sid, run_part, run_start, run_end = [], [], [], []
    for k, (sid, ts) in enumerate(zip(parts_sid, parts_ts, strict=True)):
        starts = np.flatnonzero(sid[1:] != sid[:-1]) + 1
        rising = ts[1:] > ts[:-1]
        rising[starts - 1] = True  # a run may start below the previous run's end
        if not bool(rising.all()):
            return _series_runs_sorted(parts_sid, parts_ts, parts_val, parts_prio)
        starts = np.concatenate([[0], starts]).astype(np.int64)
        run_sid.append(sid[starts])
        run_part.append(np.full(starts.size, k, dtype=np.int64))
        run_start.append(starts)
        run_end.append(np.append(starts[1:], sid.size))
    ids = np.concatenate(run_sid)
    order = np.argsort(ids, kind="stable")
    ids = ids[order]
    if bool((ids[1:] == ids[:-1]).any()):  # a series in two parts (two targets, rows and frames)
        return _series_runs_sorted(parts_sid, parts_ts, parts_val, parts_prio)
    parts = np.concatenate(run_part)[order].tolist()
    lo = np.concatenate(run_start)[order]
    hi = np.concatenate(run_end)[order]
    bounds = np.zeros(ids.size + 1, dtype=np.int64)
    np.cumsum(hi - lo, out=bounds[1:])
    if len(parts_ts) == 1 and bool((order[1:] > order[:-1]).all()):
        return ids, bounds, parts_ts[0], parts_val[0]  # already in order
    spans = list(zip(parts, lo.tolist(), hi.tolist(), strict=True))
    ts_out = np.concatenate([parts_ts[k][a:b] for k, a, b in spans])
    val_out = np.concatenate([parts_val[k][a:b] for k, a, b in spans])
    return ids, bounds, ts_out, val_out


def series_spans(
    parts_sid: list[np.ndarray], parts_ts: list[np.ndarray], parts_val: list[np.ndarray], parts_prio: list[np.ndarray]
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``series_runs`` left where the samples are: (ids ascending, lo, hi, ts, values) with
    series ``ids[i]`` at rows ``lo[i]:hi[i]``, in time order; for a caller that places the
    runs again (a query's read puts them in label order: one gather, not two)."""
    if len(parts_sid) > 8 and sum(p.size for p in parts_sid) <= RUNS_GATHER_SAMPLES:
        got = _joined_spans(parts_sid, parts_ts, parts_val)
        if got is not None:
            return got
    ids, bounds, ts, val = series_runs(parts_sid, parts_ts, parts_val, parts_prio)
    return ids, bounds[:-1], bounds[1:], ts, val


def _joined_spans(
    parts_sid: list[np.ndarray], parts_ts: list[np.ndarray], parts_val: list[np.ndarray]
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None:
    """``series_spans`` of many parts of a modest read (a query's thousands of series in a
    part per target), the parts joined once and the runs found with a few NumPy calls for
    all; None when a run is out of time order or a series is in two parts (sort them)."""
    sizes = np.fromiter((p.size for p in parts_sid), dtype=np.int64, count=len(parts_sid))
    sid, ts = np.concatenate(parts_sid), np.concatenate(parts_ts)
    n = sid.size
    part = np.repeat(np.arange(sizes.size), sizes)
    cut = np.ones(n, dtype=bool)
    cut[1:] = (sid[1:] != sid[:-1]) | (part[1:] != part[:-1])
    falling = ts[1:] <= ts[:-1]
    falling &= ~cut[1:]
    if bool(falling.any()):
        return None
    starts = np.flatnonzero(cut)
    ends = np.append(starts[1:], n)
    ids = sid[starts]
    order = np.argsort(ids, kind="stable")
    ids = ids[order]
    if bool((ids[1:] == ids[:-1]).any()):  # a series in two parts (two targets, rows and frames)
        return None
    return ids, starts[order], ends[order], ts, np.concatenate(parts_val)


def _series_runs_joined(
    parts_sid: list[np.ndarray], parts_ts: list[np.ndarray], parts_val: list[np.ndarray], parts_prio: list[np.ndarray]
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``series_runs`` of many parts of a modest read: ``_joined_spans`` gathered with a few
    NumPy calls for all, not a few per part and two slices per run."""
    got = _joined_spans(parts_sid, parts_ts, parts_val)
    if got is None:
        return _series_runs_sorted(parts_sid, parts_ts, parts_val, parts_prio)
    ids, lo, hi, ts, val = got
    bounds = np.zeros(ids.size + 1, dtype=np.int64)
    np.cumsum(hi - lo, out=bounds[1:])
    if bool((lo[1:] > lo[:-1]).all()):
        return ids, bounds, ts, val  # already in order
    at = np.repeat(lo - bounds[:-1], hi - lo) + np.arange(ts.size, dtype=np.int64)
    return ids, bounds, ts[at], val[at]


def _series_runs_sorted(
    parts_sid: list[np.ndarray], parts_ts: list[np.ndarray], parts_val: list[np.ndarray], parts_prio: list[np.ndarray]
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``series_runs`` by a sort of every sample (series out of time order, or in two parts)."""
    sid = np.concatenate(parts_sid)
    ts = np.concatenate(parts_ts)
    val = np.concatenate(parts_val)
    ordered = (sid[1:] > sid[:-1]) | ((sid[1:] == sid[:-1]) & (ts[1:] > ts[:-1]))
    if not bool(ordered.all()):  # (one series' hours read in order need no sort)
        order = np.lexsort((np.concatenate(parts_prio), ts, sid))
        sid, ts, val = sid[order], ts[order], val[order]
    # Drop duplicate (series, ts) pairs (a series seen under two targets in one hour).
    keep = np.ones(sid.size, dtype=bool)
    keep[1:] = (sid[1:] != sid[:-1]) | (ts[1:] != ts[:-1])
    sid, ts, val = sid[keep], ts[keep], val[keep]
    starts = np.concatenate([[0], np.flatnonzero(sid[1:] != sid[:-1]) + 1]).astype(np.int64)
    return sid[starts], np.append(starts, sid.size), ts, val


def unlogged(rows: list[BoundStatement]) -> BoundStatement | BatchStatement:
    """One upsert alone, or several as an UNLOGGED batch at their statement's consistency."""
    if len(rows) == 1:
        return rows[0]
    batch = BatchStatement(BatchType.UNLOGGED, consistency_level=rows[0].consistency_level)
    for r in rows:
        batch.add(r)
    return batch


def replica_batches(
    meta: Metadata, keyspace: str, rows: Iterable[tuple[BoundStatement, int]], max_rows: int, max_bytes: int
) -> list[BoundStatement | BatchStatement]:
    """Upserts ``(bound statement, blob bytes)`` as requests: those of one statement whose
    partitions have the same replicas go together as UNLOGGED batches of at most ``max_rows``
    rows and ``max_bytes`` blob bytes, so each batch lands on its replicas without fan-out and
    costs the node one request instead of one per row."""
    groups: dict[tuple, list[tuple[BoundStatement, int]]] = {}
    # The driver answers a token range's replicas with one list: its endpoints named once per list.
    named: dict[int, tuple[list, tuple[str, ...]]] = {}
    for bound, size in rows:
        replicas = meta.get_replicas(keyspace, bound.routing_key)
        seen = named.get(id(replicas))
        if seen is None:  # (the list is kept: its id is not reused meanwhile)
            seen = named[id(replicas)] = (replicas, tuple(sorted(str(h.endpoint) for h in replicas)))
        groups.setdefault((id(bound.prepared_statement), seen[1]), []).append((bound, size))
    requests: list[BoundStatement | BatchStatement] = []
    for group in groups.values():
        batch: list[BoundStatement] = []
        total = 0
        for bound, n in group:
            if batch and (len(batch) >= max_rows or total + n > max_bytes):
                requests.append(unlogged(batch))
                batch, total = [], 0
            batch.append(bound)
            total += n
        if batch:
            requests.append(unlogged(batch))
    return requests


def _packer(cql_type: Any, protocol_version: int) -> Callable[[Any], bytes]:
    """A value's bytes for a column of ``cql_type``, as the driver's ``serialize`` gives them."""
    if cql_type is LongType:
        return cast(Callable[[Any], bytes], int64_pack)
    if cql_type is Int32Type:
        return cast(Callable[[Any], bytes], int32_pack)
    if cql_type is BytesType:
        return lambda v: v if type(v) is bytes else bytes(v)
    if cql_type is UTF8Type:
        return lambda v: v.encode("utf-8")
    return lambda v: cql_type.serialize(v, protocol_version)


def packers_of(stmt: PreparedStatement) -> list[Callable[[Any], bytes]]:
    """Per bind marker of ``stmt``, the packer ``pack_values`` serializes its values with
    (picked once per statement; a caller packing many rows of one statement packs their key
    columns with them and passes blobs as they are)."""
    packers: list[Callable[[Any], bytes]] | None = stmt.__dict__.get("_ringmon_packers")
    if packers is None:
        packers = stmt.__dict__["_ringmon_packers"] = [
            _packer(c.type, stmt.protocol_version) for c in stmt.column_metadata]
    return packers


def pack_values(stmt: PreparedStatement, params: Sequence) -> list[bytes | None]:
    """The bytes ``stmt.bind(params)`` gives its values, for bulk writes (the rollup job's seal
    packs ~3 rows per series: ~300,000 for 100,000 series): every value given, each serialized
    by a packer picked once per statement for its column's type (bigint, int, blob, text)
    instead of the driver's checks and dispatch per value (~2 against ~9 us for a 13-column
    chunk row); ``None`` is a null."""
    packers = packers_of(stmt)
    if len(params) != len(packers):
        raise ValueError(f"{len(params)} values for {len(packers)} bind markers")
    return [None if v is None else pack(v) for v, pack in zip(params, packers, strict=True)]


_KEY_PART_LEN = struct.Struct(">H")


def routing_key(stmt: PreparedStatement, values: Sequence[bytes | None]) -> bytes | None:
    """The partition key of packed ``values`` of ``stmt`` as the driver's
    ``BoundStatement.routing_key`` makes it (one column's bytes, or each column's length,
    bytes and a zero byte)."""
    idx = stmt.routing_key_indexes
    if not idx:
        return None
    if len(idx) == 1:
        return cast("bytes | None", values[idx[0]])
    return b"".join(_KEY_PART_LEN.pack(len(v)) + v + b"\x00" for v in (values[i] or b"" for i in idx))


def _single_replica_set(meta: Metadata, keyspace: str) -> bool:
    """Whether every token of ``keyspace`` has the same replicas (one node, or a replication
    factor equal to the nodes): then no upsert needs its own replica look-up."""
    tm = meta.token_map
    if not tm:
        return False
    if tm.tokens_to_hosts_by_ks.get(keyspace) is None:
        tm.rebuild_keyspace(keyspace, build_if_absent=True)
    ranges = tm.tokens_to_hosts_by_ks.get(keyspace) or {}
    return len({tuple(sorted(str(h.endpoint) for h in hosts)) for hosts in ranges.values()}) == 1


Packed = tuple[PreparedStatement, list[bytes | None]]  # a statement and its values' bytes (``pack_values``)


def partition_batches(
    meta: Metadata, keyspace: str, units: Iterable[tuple[list[Packed], int]], max_units: int, max_bytes: int
) -> list[BoundStatement | BatchStatement]:
    """Upserts in ``units`` (the packed statements of one partition, their bytes) as requests:
    units whose partitions have the same replicas go together as UNLOGGED batches of at most
    ``max_units`` partitions and ``max_bytes`` (a unit alone may be larger), at the highest
    consistency level of their statements; a unit is never split (one mutation on the node).
    A batch is made as the driver's ``BatchStatement.add`` of bound statements makes it
    (each statement's query id and values; the first one's routing key and keyspace), without
    a ``BoundStatement`` per row; one replica look-up per unit only when the keyspace's
    tokens have several replica sets."""
    groups: dict[tuple[str, ...], list[tuple[list[Packed], int]]] = {}
    if _single_replica_set(meta, keyspace):
        groups[()] = list(units)
    else:
        named: dict[int, tuple[list, tuple[str, ...]]] = {}  # (as in replica_batches)
        for packed, size in units:
            stmt, values = packed[0]
            replicas = meta.get_replicas(keyspace, routing_key(stmt, values))
            seen = named.get(id(replicas))
            if seen is None:
                seen = named[id(replicas)] = (replicas, tuple(sorted(str(h.endpoint) for h in replicas)))
            groups.setdefault(seen[1], []).append((packed, size))
    requests: list[BoundStatement | BatchStatement] = []

    def flush(batch: list[Packed]) -> None:
        first, values = batch[0]
        if len(batch) == 1:
            bound = BoundStatement(first)
            bound.values = values
            requests.append(bound)
            return
        levels = {stmt.consistency_level for stmt, _ in batch} - {None}
        level = max(levels, key=_LEVEL_RANK.index) if levels <= set(_LEVEL_RANK) and levels else first.consistency_level
        out = BatchStatement(BatchType.UNLOGGED, consistency_level=level)
        out.routing_key = routing_key(first, values)
        out.keyspace = first.column_metadata[0].keyspace_name if first.column_metadata else None  # (BoundStatement's)
        out._statements_and_parameters = [(True, stmt.query_id, vals) for stmt, vals in batch]
        requests.append(out)

    for group in groups.values():
        batch: list[Packed] = []
        count = total = 0
        for packed, n in group:
            if batch and (count >= max_units or total + n > max_bytes):
                flush(batch)
                batch, count, total = [], 0, 0
            batch += packed
            count += 1
            total += n
        if batch:
            flush(batch)
    return requests


# Consistency levels a batch of mixed statements may take, weakest first (the batch takes the strongest).
_LEVEL_RANK = (ConsistencyLevel.ANY, ConsistencyLevel.ONE, ConsistencyLevel.LOCAL_ONE, ConsistencyLevel.LOCAL_QUORUM,
               ConsistencyLevel.QUORUM, ConsistencyLevel.EACH_QUORUM, ConsistencyLevel.ALL)


def _frame_groups(by_target: dict[str, list[int]]) -> list[dict[str, list[int]]]:
    """Targets in groups of at most FRAME_GROUP_TARGETS whose series number at most
    FRAME_GROUP_SERIES together (a target with more alone), in order: one frames request each."""
    groups: list[dict[str, list[int]]] = []
    size = 0
    for target, ids in by_target.items():
        if not groups or len(groups[-1]) >= FRAME_GROUP_TARGETS or size + len(ids) > FRAME_GROUP_SERIES:
            groups.append({})
            size = 0
        groups[-1][target] = ids
        size += len(ids)
    return groups


def _probe_groups(names: Iterable[str]) -> list[list[str]]:
    """``names`` sorted, in requests of up to PROBE_GROUP_TARGETS, two at least: the targets of
    each request of small answers about many targets' partitions (which hold rows, the keys of
    their newest frames)."""
    ranked = sorted(names)
    step = max(1, min(PROBE_GROUP_TARGETS, -(-len(ranked) // 2)))
    return list(slices(ranked, step))


def _target_groups(by_target: dict[str, list[int]]) -> list[tuple[list[str], list[int]]]:
    """Targets in groups of at most ROWS_GROUP_TARGETS whose series number at most
    ROWS_GROUP_SERIES together (one rows request each), in order."""
    groups: list[tuple[list[str], list[int]]] = []
    for target, ids in by_target.items():
        last = groups[-1] if groups else None
        if last is not None and len(last[0]) < ROWS_GROUP_TARGETS and len(last[1]) + len(ids) <= ROWS_GROUP_SERIES:
            last[0].append(target)
            last[1].extend(ids)
        else:
            groups.append(([target], list(ids)))
    return groups


async def _gather_waves(coros: list, limit: int = MAX_CONCURRENT_REQUESTS, return_exceptions: bool = False) -> list:
    """``asyncio.gather`` in waves of ``limit`` so a huge write or read never floods the driver."""
    if len(coros) <= limit:
        return await asyncio.gather(*coros, return_exceptions=return_exceptions)
    out: list = []
    try:
        for wave in slices(coros, limit):
            out += await asyncio.gather(*wave, return_exceptions=return_exceptions)
    finally:
        for c in coros[len(out) + limit :]:
            c.close()  # a wave failed: the rest never starts
    return out


def _abandon(fut: asyncio.Future) -> None:
    """Cancel ``fut``, whose result is not wanted, its failure never logged."""
    fut.cancel()
    fut.add_done_callback(lambda f: f.cancelled() or f.exception())


def _release(rf: ResponseFuture) -> None:
    """Break the reference cycles of a finished request so that it is freed at once.

    ``rf`` refers to its callbacks (closures over ``rf``) and to its canceled timeout timer
    (which holds ``rf._on_timeout``): ~25 objects per request (message, statement, locks,
    events, query plan) that only the cyclic garbage collector could free. Under a flood of
    queries thousands of them piled up and were freed in one full collection on the event
    loop: 50-60 ms of CPU holding the GIL, /-/healthy p99 124 ms in test_hostile_regex."""
    rf.clear_callbacks()
    rf._timer = None  # canceled once the final result or error was set


def _resolve(fut: asyncio.Future, value: object) -> None:
    if not fut.done():
        fut.set_result(value)


def _reject(fut: asyncio.Future, exc: BaseException) -> None:
    if not fut.done():
        fut.set_exception(exc)
