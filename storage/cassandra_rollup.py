"""The rollup store on Cassandra: sealed blocks, 1m/1h rollup rows, checkpoints.

``CassandraRollupMixin`` adds the ``RollupStore`` methods (``storage.rollup_job``) plus
rollup and block reads to ``storage.cassandra.CassandraStorage``, using its session,
keyspace and async ``execute``; ``CassandraRollupStorage`` is the combined class. It
writes the tables ``storage.schema`` creates:

- ``raw_blocks``  ((series_id, day), start_ts): one row per series and window;
- ``rollup_1m_chunks`` ((series_id, day), start_ts) and ``rollup_1h_chunks`` ((series_id,
  bucket), start_ts) with bucket = ts // 32 days: one row per series and 6-hour (1m) or
  8-day (1h) chunk (``storage.rollup_chunks``), a blob per column (``c_ts``,
  ``c_<aggregate>``; ``data`` holds chunks written before in record form), so a read asks
  only for the aggregates its query needs. Writing a window reads the chunks it falls
  in and writes them back merged (the rollup job is the only writer of a series' rollups:
  its shard lease); a 24 h read of 800 series is about 4,000 chunks instead of 1.15
  million rows. A live seal (``write_seal`` with its window) writes its 1h buckets of a
  chunk begun before the window as a *piece* instead: a row keyed by its first bucket in
  the chunk's partition, not read first (``storage.rollup_chunks`` reads pieces with their
  chunk, the later key winning an equal bucket). A window ending a multiple of 6 h
  (``HOUR_PIECES_MERGE_MS``), and every other 1h write (late reseals, backfills), reads the
  chunk with its span's pieces, merges them and writes the chunk back with a delete of the
  pieces it read in the same mutation: a span holds at most 2 pieces per series with 2 h
  windows, a closed span none. The fresh pass's provisional 1m chunks
  (``write_fresh_minutes``: one per series and 10-minute block, rewritten by each pass in
  the block) are deleted by their window's seal, in the same single-partition request as
  the final chunks that replace them (``write_seal``), so reads list only the open
  window's, about a dozen per series;
- checkpoints as ``meta`` rows keyed ``rollup:<job>:<shard>`` (the late pass's cursors are
  checkpoints of job ``<job>:late``: ``rollup:<job>:late:<shard>``).

``late_marks_since`` reads ``raw_late`` (written by ``storage.cassandra`` for late writes)
for the days of the last ``late_marks_lookback_ms``: one small partition per day.

Raw reads (``select``) take sealed windows from ``raw_blocks`` and only the rest from
``raw_recent`` rows: a 24 h read of one series is about a dozen compressed blocks plus the
last hours of rows instead of 8,640 rows. Per series, an hour is read from blocks when a
block covers it and no late write (``raw_late``, see ``storage.cassandra``) reached that
hour less than ``late_seal_margin_ms`` before the block was written; otherwise its rows are
read too and merged (rows win on equal timestamps). The last ``RECENT_RAW_MS`` are always
read from rows, concurrently with the blocks, and any hour without a block (not sealed yet,
a gap, a window larger than ``BLOCK_LOOKBACK_MS``) falls back to rows, so a read is never
less complete than the rows alone.

``read_raw_window`` (the rollup job's input) reads rows and frames, and blocks only for
ranges older than ``recent_raw_keep_ms``, of the shard's series (from the index of the
window): its rows, and its columns out of each target's frames. A frame holds every shard's
series, so the job reads the window of all the shards it holds at once
(``read_raw_window_group``): the index is read and each frame decoded once per window, not
once per shard. Once every shard sealed an hour (and it is out of the reads' raw-only span)
the job drops its raw partitions (``drop_raw_hours``: ``raw_dropped:<hour>`` marks in ``meta``,
then partition tombstones); window reads then add the blocks of the hours marked dropped.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Collection, Iterator, Sequence
from dataclasses import dataclass
from operator import itemgetter
from typing import TYPE_CHECKING

import numpy as np
from cassandra import ConsistencyLevel
from cassandra.query import BatchStatement, BoundStatement, PreparedStatement

from common.retry import backoff_delays, retry_async
from common.sequences import slices
from storage import rollup_chunks as chunks
from storage.base import (
    AGGREGATES,
    DAY_MS,
    HOUR_MS,
    FlatSamples,
    Resolution,
    SeriesData,
    aggregate_names,
    bucket_values,
)
from storage.blocks import TIMES, VERSION_SHARED_TIMES, decode_block, inline_times, share_times, times_key
from storage.cassandra import (
    WRITER_FLOOR_KEY,
    CassandraStorage,
    Packed,
    SeriesInfo,
    SeriesInfos,
    TargetSeries,
    TransientStorageError,
    pack_values,
    packers_of,
    partition_batches,
    series_runs,
)
from storage.chunk_cache import DEFAULT_MAX_BYTES, cache_of
from storage.matchers import Matcher, MatchOp
from storage.model import METRIC_NAME
from storage.rollup import Rollup
from storage.rollup_job import (
    DEFAULT_GRACE_MS,
    DEFAULT_LATE_SETTLE_MS,
    DEFAULT_WINDOW_MS,
    RawWindow,
    RollupRows,
    RollupRowsList,
    SealedBlock,
)
from storage.schema import DEFAULT_TTLS_S, RAW_BUCKET_MS

if TYPE_CHECKING:
    from cassandra.cluster import Session

    from storage.cassandra_frames import KeptBlock
    from storage.model import Series

log = logging.getLogger(__name__)

ROLLUP_1H_BUCKET_MS = 32 * DAY_MS
MAX_IN_FLIGHT = 48
WRITE_ATTEMPTS = 5  # upserts are idempotent: a timed-out write is safe to repeat
# Always read from rows: the span that cannot be sealed yet with the default window and grace.
RECENT_RAW_MS = DEFAULT_WINDOW_MS + DEFAULT_GRACE_MS
BLOCK_LOOKBACK_MS = 6 * HOUR_MS  # blocks starting this long before a read's start are found
BLOCK_READ_SERIES_CHUNK = 16  # series per block request (unpaged: <= 16 x 24 blocks)
# series per request of block keys and write times (~40 B a block, ~4 blocks a series: ~64 KB):
# a request costs the reader more than its rows (800 series: 8 requests 13-16 ms, 2 requests 10-12)
BLOCK_KEY_SERIES = 400
TIMES_READ_KEYS = 256  # timestamp frames per request (unpaged: <= 256 x ~200 B at a 2 h window of 10 s)
CHUNK_READ_SERIES = 16  # series per rollup chunk request (unpaged: <= 16 x 4 chunks, ~1.2 MB)
# series per read of the chunks a seal merges into (one chunk each, unpaged: <= 128 x ~32 KB)
SEAL_READ_SERIES = 128
CHUNK_VERSION_SERIES = 100  # series per request of chunk keys and versions (~24 B a chunk)
# A write batch of the seal: under Cassandra's default warnings (an unlogged batch over 10
# partitions, a batch over 5 KiB), which the driver would log for every batch; up to
# SEAL_BATCH_MAX_* under a node's higher thresholds (``_batch_limits``: Ringmon's node config).
WRITE_BATCH_ROWS = 10
WRITE_BATCH_BYTES = 3072
SEAL_BATCH_MAX_ROWS = 128
SEAL_BATCH_MAX_BYTES = 128 << 10
ROW_BYTES = 64  # a row's keys and cells beside its blobs, for the batch size
# Chunk requests in flight at once: a node answers them from a 64 MiB network buffer pool;
# 100 answers of 1.2 MB at once exhausted it and stalled the node (measured, 800 series x 24 h).
CHUNK_READS_IN_FLIGHT = 8
# A provisional 1m chunk holds a series' buckets of one block of this length (whole blocks in an
# hour, so in a window): the fresh pass rewrites it each pass until the block is done
# (``FreshBlocks``), so a read of the open window lists at most a chunk per series and block.
FRESH_BLOCK_MS = 10 * 60_000
# A live seal whose window ends a multiple of this merges the 1h pieces of its chunks (reads
# them with the chunk and writes it back); the others write theirs as pieces, unread. A span
# so holds at most this long's windows less one of pieces per series (2 of 2 h windows). Each
# piece costs a read of the open span ~1.1 us (800 series' newest 8 h of 1h rate buckets, from
# the chunk cache: 7.2 ms with none, 19.4 ms with 11 a series, as a day's would leave).
HOUR_PIECES_MERGE_MS = 6 * HOUR_MS
# Provisional (fresh) 1m chunks expire after 2 days, if their window's seal has not deleted
# them before (``write_seal``): well after the seal of the longest window (24 h); a job
# stopped longer leaves gaps in them until it seals those windows.
FRESH_TTL_S = 2 * 86_400
# The raw input of sealed hours is dropped once query reads take those hours from blocks
# (older than RECENT_RAW_MS) plus this margin for reads under way (``drop_raw_hours``).
RAW_DROP_MARGIN_MS = 15 * 60_000
# A drop deletes raw input written up to this long before it starts (writers' clock skew and
# writes in flight): later writes, whose late marks it may not have seen, stay.
RAW_DROP_SKEW_MS = 2 * 60_000
_DROPPED_HOUR = "raw_dropped:"  # meta key prefix of an hour whose raw partitions were dropped
# meta key prefix of a FRESH_BLOCK_MS block some fresh pass wrote provisional 1m chunks into
# (``write_fresh_minutes``, before the chunks; TTL FRESH_TTL_S): a seal of a window with none
# has none to delete (``write_seal``)
_FRESH_BLOCK = "fresh_block:"


# Sealed raw blocks a query read, kept decoded (``_decoded_block``) by series and window with
# their write time: a panel's series with a sample on a window's edge are read raw for 24 h,
# ~11 blocks each, and decoding them was ~4 ms of each cold 24 h panel (8 series; ~45 us a block).
# A read asks for the blocks' keys and write times first and fetches the bytes of those not
# kept at that write time only (``_blocks_decoded_of``).
BLOCK_CACHE_BYTES = 16 << 20
# A set of sealed blocks read again (the same keys and write times: a panel's refreshes reading
# its newest minutes from the same ~1,600 blocks) is kept joined in one array (``_JoinedBlocks``),
# cut for any range with one search for all its blocks; up to this many bytes of such sets.
JOINED_BLOCKS_BYTES = 32 << 20
JOINED_SEEN = 64  # key sets of the last reads remembered: a set is joined when read a second time

_CHUNK_COLS = ", ".join(chunks.STORED.values())
_MARKS = ", ?" * len(chunks.COLUMNS)


# A seal's packed row: its series, partition (day or 1h bucket) and start (ms: of its block or
# chunk), the packed upsert (``storage.cassandra.pack_values``' bytes) and its bytes for the
# batch limit (``_row_bytes``).
SealRow = tuple[int, int, int, Packed, int]


def _packed_ids(ids: list[int]) -> list[bytes]:
    """Each series id as a bigint value's bytes (``pack_values``' form), made by NumPy."""
    packed: list[bytes] = np.asarray(ids, dtype=">i8").view("V8").tolist()
    return packed


def _row_bytes(params: Sequence) -> int:
    n = ROW_BYTES
    for v in params:
        if type(v) is bytes:
            n += len(v)
    return n


def _setting_bytes(value: object) -> int | None:
    """Bytes of a size setting of ``system_views.settings`` ("5KiB", "1MiB"; a bare number: KiB)."""
    text = str(value or "").strip()
    for unit, scale in (("KiB", 1 << 10), ("MiB", 1 << 20), ("B", 1)):
        if text.endswith(unit) and text[: -len(unit)].isdigit():
            return int(text[: -len(unit)]) * scale
    return int(text) << 10 if text.isdigit() else None


def _block_pieces(rollup: Rollup) -> Iterator[tuple[int, Rollup]]:
    """``(first bucket start, buckets)`` of ``rollup`` (ascending) cut at every FRESH_BLOCK_MS."""
    ts = rollup.timestamps
    first = int(ts[0])
    if first // FRESH_BLOCK_MS == int(ts[-1]) // FRESH_BLOCK_MS:  # (a minute's fresh pass: one block)
        yield first, rollup
        return
    cuts = np.flatnonzero(ts[1:] // FRESH_BLOCK_MS != ts[:-1] // FRESH_BLOCK_MS) + 1
    bounds = [0, *cuts.tolist(), len(rollup)]
    for lo, hi in zip(bounds[:-1], bounds[1:], strict=True):
        yield int(ts[lo]), Rollup(ts[lo:hi], *(getattr(rollup, n)[lo:hi] for n in AGGREGATES))


def _fresh_drops(window_start: int, window_end: int, chunk_starts: Collection[int]) -> list[tuple[int, int]]:
    """The ``[lo, hi)`` ranges of 1m chunk keys that a seal of [window_start, window_end)
    writing the final chunks ``chunk_starts`` deletes: every provisional key of the window
    inside those chunks' spans, none of the (span-aligned) final keys. A provisional chunk
    holds buckets of one block (``write_fresh_minutes``), so of this window only."""
    span = chunks.chunk_span(Resolution.MINUTE)
    out = []
    for c in sorted(set(chunk_starts)):
        lo, hi = max(window_start, c + 1), min(window_end, c + span)
        if lo < hi:
            out.append((lo, hi))
    return out


def _piece_keys(starts: list[int], ts_values: list[bytes], piece: np.ndarray) -> list[int]:
    """The chunk keys ``starts`` with those where ``piece`` is set replaced by their first
    bucket's start (from their plain ``ts`` value): a 1h piece's key. One whose first bucket
    is its chunk's start stays the chunk (its ``piece`` cleared: it is read and merged)."""
    at = np.flatnonzero(piece)
    if not at.size:
        return starts
    firsts = np.frombuffer(b"".join([ts_values[i][:8] for i in at.tolist()]), dtype="<i8")
    keys = np.asarray(starts, dtype=np.int64)
    inside = firsts > keys[at]
    piece[at[~inside]] = False
    keys[at[inside]] = firsts[inside]
    out: list[int] = keys.tolist()
    return out


def _merge_stored(
    resolution: Resolution, stored: list[tuple], sids: list[int], starts: list[int], columns: list[list[bytes]]
) -> dict[int, int]:
    """Merges the stored rows ``(chunk start, series id, key, data, *columns)`` a write read
    into the new chunks (``columns[j][i]``: column j of chunk i, series ``sids[i]``, start
    ``starts[i]``), in place; the new buckets win, then the later key (1h pieces over their
    chunk). Returns chunk index -> the last piece key found for it (those pieces are merged)."""
    pieces_to: dict[int, int] = {}
    if not stored:
        return pieces_to
    stored.sort(key=itemgetter(1, 2))  # (each chunk's rows in key order)
    at = {k: i for i, k in enumerate(zip(sids, starts, strict=True))}
    held: dict[int, list[tuple[int, chunks.Payload]]] = {}
    for row, old in zip(stored, chunks.payloads(stored, 3), strict=True):
        i = at.get((row[1], row[0]))
        if i is not None:
            held.setdefault(i, []).append((row[2], old))
    for i, found in held.items():
        start = starts[i]
        cols = {name: columns[j][i] for j, name in enumerate(chunks.COLUMNS)}
        # a window after, between or over the stored buckets splices their bytes
        joined = chunks.splice_columns(found[0][1], cols) if len(found) == 1 and found[0][0] == start else None
        if joined is None:  # pieces, or stored buckets among the new ones (late samples): merged
            old_part = Rollup.empty()
            for key, got in found:
                old_part = chunks.merge(old_part, chunks.decode_payload(key, got))
            joined = chunks.encode_columns(resolution, start, chunks.merge(old_part, chunks.decode_payload(start, cols)))
        if found[-1][0] != start:
            pieces_to[i] = found[-1][0]
        for j, name in enumerate(chunks.COLUMNS):
            columns[j][i] = joined[name]
    return pieces_to


def _seal_units(rows: Sequence[SealRow]) -> list[tuple[list[Packed], int]]:
    """``rows`` as write units: consecutive rows of one partition (a 1h chunk and the delete
    of the pieces merged into it) in one unit, one mutation."""
    units: list[tuple[list[Packed], int]] = []
    last: tuple[int, int] | None = None
    for sid, part, _, packed, n in rows:
        if (sid, part) == last:
            units[-1][0].append(packed)
            units[-1] = (units[-1][0], units[-1][1] + n)
        else:
            units.append(([packed], n))
        last = (sid, part)
    return units


def _partition(resolution: Resolution, ts_ms: int) -> int:
    if resolution is Resolution.MINUTE:
        return ts_ms // DAY_MS
    if resolution is Resolution.HOUR:
        return ts_ms // ROLLUP_1H_BUCKET_MS
    raise ValueError(f"no rollup table for resolution {resolution.value}")


class CassandraRollupMixin:
    """RollupStore for ``CassandraStorage`` (needs ``session``, ``keyspace``, ``execute``, ``read_raw``).

    ``select`` answers 1m/1h reads from the rollup tables and raw reads from sealed blocks
    plus rows (module docstring). ``recent_raw_keep_ms`` (how long ``raw_recent`` keeps
    rows; default: its table TTL) only decides when ``read_raw_window`` adds blocks.
    """

    recent_raw_keep_ms: int = DEFAULT_TTLS_S["raw_recent"] * 1000
    # How long written raw samples wait unsealed before they expire (the frames' TTL): the
    # rollup job logs an error once it is half that far behind (``storage.rollup_job``).
    raw_expiry_ms: int = DEFAULT_TTLS_S["raw_frames"] * 1000
    # A block is trusted for an hour only if written this long after the hour's newest late
    # write: covers that write's time in flight, the seal's own read-to-write time and skew.
    late_seal_margin_ms: int = DEFAULT_LATE_SETTLE_MS
    # Late marks are looked for in the days of samples up to this old (1m rollups live 32 d).
    late_marks_lookback_ms: int = DEFAULT_TTLS_S["rollup_1m"] * 1000 + DAY_MS
    # Raw partitions of sealed hours are dropped once this old (``drop_raw_hours``).
    raw_hot_ms: int = RECENT_RAW_MS + RAW_DROP_MARGIN_MS
    raw_drop_skew_ms: int = RAW_DROP_SKEW_MS

    if TYPE_CHECKING:  # CassandraStorage's, the class this mixin is combined with
        session: Session
        keyspace: str

        def now_ms(self) -> int: ...
        async def execute(self, statement: object, params: Sequence | None = None, *, session: Session | None = None,
                          renew: bool = True) -> list: ...
        async def late_hours(self, start_ms: int, end_ms: int) -> dict[int, int]: ...
        async def execute_columnar(self, statement: object, params: Sequence) -> list: ...
        async def _select_series(self, matchers: Sequence[Matcher], start_ms: int, end_ms: int, *,
                                 cached: bool = False) -> list[SeriesInfo]: ...
        async def series(self, matchers: Sequence[Matcher], start_ms: int, end_ms: int) -> list[Series]: ...
        async def _index_target_sets(self, start_ms: int, end_ms: int, *,
                                     kept: bool = False) -> dict[int, frozenset[str]]: ...
        async def read_raw(self, infos: Sequence[SeriesInfo], start_ms: int, end_ms: int,
                           hours: Sequence[int] | None = None, *, kept: bool = False) -> list[SeriesData]: ...
        async def read_raw_flat(self, infos: Sequence[SeriesInfo], start_ms: int, end_ms: int,
                                hours: Sequence[int] | None = None, *, kept: bool = False) -> FlatSamples: ...
        async def _select_read_flat(self, matchers: Sequence[Matcher], start_ms: int, end_ms: int,
                                    hours: Sequence[int] | None) -> FlatSamples: ...
        async def read_columns(self, infos: Sequence[SeriesInfo], start_ms: int, end_ms: int,
                               hours: Sequence[int] | None = None, *,
                               kept: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]: ...
        async def _read_parts(self, infos: Sequence[SeriesInfo], start_ms: int, end_ms: int,
                              hours: Sequence[int] | None, *, kept: bool = False,
                              blocks: list[KeptBlock] | None = None, probe_rows: bool = False) -> tuple[
                                  list[np.ndarray], list[np.ndarray], list[np.ndarray], list[np.ndarray]]: ...
        async def read_column_runs(self, infos: Sequence[SeriesInfo], start_ms: int,
                                   end_ms: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]: ...
        def _in_label_order(self, infos: Sequence[SeriesInfo]) -> tuple[np.ndarray, list[Series]]: ...

    _rollup_ps: dict | None = None
    _write_limits: tuple[int, int] | None = None  # (partitions, bytes) per write batch
    _chunk_reads: dict | None = None  # (resolution, aggregates) -> prepared chunk read
    # Bytes of rollup chunks kept between reads (``storage.chunk_cache``; 0: none kept).
    rollup_cache_bytes: int = DEFAULT_MAX_BYTES
    # (series id, window start) -> (write time us, ts, values, first ts, last ts) of decoded blocks, LRU
    _blocks_decoded: OrderedDict[tuple[int, int], tuple[int, np.ndarray, np.ndarray, int, int]] | None = None
    _blocks_decoded_bytes: int = 0
    blocks_fetched: int = 0  # blocks whose bytes reads fetched (``_blocks_decoded_of``: those not kept)
    # a read's block keys (``_block_set_key``) -> those blocks joined (``_JoinedBlocks``), LRU
    _blocks_joined: OrderedDict[bytes, _JoinedBlocks] | None = None
    _blocks_joined_bytes: int = 0
    _blocks_seen: OrderedDict[bytes, None] | None = None  # digests of key sets read (the last JOINED_SEEN)
    blocks_joined_hits: int = 0  # reads whose blocks came joined (``_blocks_decoded_of``)

    async def _ps(self) -> dict:
        if self._rollup_ps is None:
            ks = self.keyspace
            p = self.session.prepare

            def prepare() -> dict:
                out = {
                    "block_ins": p(
                        # (count and codec, in the block's header, are no longer written: ~9 B a row)
                        f"INSERT INTO {ks}.raw_blocks (series_id, day, start_ts, end_ts, data) VALUES (?, ?, ?, ?, ?)"
                    ),
                    "block_read": p(
                        f"SELECT start_ts, data FROM {ks}.raw_blocks WHERE series_id = ? AND day = ?"
                        " AND start_ts >= ? AND start_ts < ?"
                    ),
                    "times_ins": p(f"INSERT INTO {ks}.raw_block_times (start_ts, key, data) VALUES (?, ?, ?)"),
                    "times_read": p(f"SELECT key, data FROM {ks}.raw_block_times WHERE start_ts = ? AND key IN ?"),
                    "blocks_read": p(
                        f"SELECT series_id, start_ts, end_ts, WRITETIME(data), data FROM {ks}.raw_blocks"
                        " WHERE series_id IN ? AND day = ? AND start_ts >= ? AND start_ts <= ?"
                    ),
                    "block_keys": p(
                        f"SELECT series_id, start_ts, end_ts, WRITETIME(data) FROM {ks}.raw_blocks"
                        " WHERE series_id IN ? AND day = ? AND start_ts >= ? AND start_ts <= ?"
                    ),
                    "1m_chunk_ins": p(
                        f"INSERT INTO {ks}.rollup_1m_chunks (series_id, day, start_ts, data, {_CHUNK_COLS})"
                        f" VALUES (?, ?, ?, ?{_MARKS})"
                    ),
                    "1h_chunk_ins": p(
                        f"INSERT INTO {ks}.rollup_1h_chunks (series_id, bucket, start_ts, data, {_CHUNK_COLS})"
                        f" VALUES (?, ?, ?, ?{_MARKS})"
                    ),
                    "1m_fresh_ins": p(
                        f"INSERT INTO {ks}.rollup_1m_chunks (series_id, day, start_ts, data, {_CHUNK_COLS})"
                        f" VALUES (?, ?, ?, ?{_MARKS}) USING TTL ?"
                    ),
                    "1m_fresh_drop": p(
                        f"DELETE FROM {ks}.rollup_1m_chunks WHERE series_id = ? AND day = ?"
                        " AND start_ts >= ? AND start_ts < ?"
                    ),
                    "1m_chunks_get": p(
                        f"SELECT series_id, data, {_CHUNK_COLS} FROM {ks}.rollup_1m_chunks"
                        " WHERE series_id IN ? AND day = ? AND start_ts = ?"
                    ),
                    "1h_chunks_get": p(  # (a chunk's span: the chunk and its pieces)
                        f"SELECT series_id, start_ts, data, {_CHUNK_COLS} FROM {ks}.rollup_1h_chunks"
                        " WHERE series_id IN ? AND bucket = ? AND start_ts >= ? AND start_ts < ?"
                    ),
                    "1h_pieces_drop": p(
                        f"DELETE FROM {ks}.rollup_1h_chunks WHERE series_id = ? AND bucket = ?"
                        " AND start_ts > ? AND start_ts <= ?"
                    ),
                    "meta_get": p(f"SELECT value FROM {ks}.meta WHERE key = ?"),
                    "meta_keys": p(f"SELECT key FROM {ks}.meta WHERE key IN ?"),
                    "meta_set_ttl": p(f"INSERT INTO {ks}.meta (key, value) VALUES (?, ?) USING TTL ?"),
                    "frames_drop": p(f"DELETE FROM {ks}.raw_frames USING TIMESTAMP ? WHERE target = ? AND hour = ?"),
                    "recent_drop": p(f"DELETE FROM {ks}.raw_recent USING TIMESTAMP ? WHERE target = ? AND hour = ?"),
                    "meta_set": p(f"INSERT INTO {ks}.meta (key, value) VALUES (?, ?)"),
                    "meta_all": p(f"SELECT key, value FROM {ks}.meta"),
                }
                out["blocks_read"].fetch_size = None  # bounded by BLOCK_READ_SERIES_CHUNK
                out["block_keys"].fetch_size = None  # bounded by BLOCK_KEY_SERIES
                for name in ("1m_chunks_get", "1h_chunks_get"):
                    out[name].fetch_size = None  # bounded by SEAL_READ_SERIES
                for name in ("1m_chunks_get", "1h_chunks_get", "1m_chunk_ins", "1h_chunk_ins", "1m_fresh_drop",
                             "1h_pieces_drop", "meta_keys",
                             "meta_set_ttl", "frames_drop", "recent_drop", "meta_all"):
                    # A window's merge reads what the previous window wrote, a window read the
                    # drop marks a drop wrote before its tombstones: quorum reads and writes
                    # overlap in a replica whatever the replication factor.
                    out[name].consistency_level = ConsistencyLevel.LOCAL_QUORUM
                return out

            loop = asyncio.get_running_loop()
            self._rollup_ps = await loop.run_in_executor(None, prepare)
        return self._rollup_ps

    async def _chunk_read_ps(
        self, resolution: Resolution, names: tuple[str, ...] | None, versioned: bool = False
    ) -> PreparedStatement:
        """The chunk read of ``names`` (and ``ts``, and ``data`` for record-form chunks); with
        ``versioned`` each chunk's ``writetime(c_ts)`` after its key; ``names`` None: the key
        and that version only (``storage.chunk_cache``)."""
        key = (resolution, names, versioned)
        if self._chunk_reads is None:
            self._chunk_reads = {}
        cache = self._chunk_reads
        if key not in cache:
            ks = self.keyspace
            table, part = ("rollup_1m_chunks", "day") if resolution is Resolution.MINUTE else ("rollup_1h_chunks", "bucket")
            cols = "" if names is None else ", data, " + ", ".join(chunks.STORED[n] for n in ("ts", *names))
            version = f", writetime({chunks.STORED['ts']})" if versioned or names is None else ""
            cql = (
                f"SELECT series_id, start_ts{version}{cols} FROM {ks}.{table}"
                f" WHERE series_id IN ? AND {part} = ? AND start_ts >= ? AND start_ts <= ?"
            )
            loop = asyncio.get_running_loop()
            ps = await loop.run_in_executor(None, self.session.prepare, cql)
            ps.fetch_size = None  # bounded by CHUNK_READ_SERIES
            cache[key] = ps
        return cache[key]

    async def _bounded(
        self, calls: Sequence[tuple[PreparedStatement, Sequence]],
        together: Sequence[Sequence[tuple[PreparedStatement, Sequence]]] = (),
    ) -> None:
        """Run idempotent upserts ``(statement, params)``, at most MAX_IN_FLIGHT requests at
        once, retrying timeouts with backoff. Upserts whose partitions have the same replicas
        go together as UNLOGGED batches (the seal writes a row or two per series and its cost
        was the requests): at most ``_batch_limits`` partitions and bytes, under the node's
        batch warning thresholds, so each lands on its replicas without fan-out. Each group of
        ``together`` shares one partition key (in tables of one keyspace): it stays in one
        batch, a single mutation on the node."""
        units = [([(stmt, pack_values(stmt, params))], _row_bytes(params)) for stmt, params in calls]
        units += [([(stmt, pack_values(stmt, params)) for stmt, params in group], sum(_row_bytes(p) for _, p in group))
                  for group in together]
        await self._send_units(units)

    async def _send_units(self, units: Sequence[tuple[list[Packed], int]]) -> None:
        """``_bounded`` of upserts already packed: each unit the packed rows of one partition
        (one mutation) and their bytes."""
        max_units, max_bytes = await self._batch_limits()
        requests = partition_batches(self.session.cluster.metadata, self.keyspace, units, max_units, max_bytes)

        def upsert(request: BoundStatement | BatchStatement) -> Callable[[], Awaitable[object]]:
            return lambda: self.execute(request)

        await self._bounded_steps([upsert(r) for r in requests])

    async def _batch_limits(self) -> tuple[int, int]:
        """Partitions and bytes per write batch: half the node's warning thresholds
        (``system_views.settings``; a stock node's 10 partitions / 5 KiB, Ringmon's node
        config 256 / 256 KiB), at most SEAL_BATCH_MAX_*; the defaults when unreadable."""
        if self._write_limits is None:
            limits = (WRITE_BATCH_ROWS, WRITE_BATCH_BYTES)
            try:
                pages = await self.execute("SELECT name, value FROM system_views.settings")
                got = {r[0]: r[1] for page in pages for r in page}
                warn = _setting_bytes(got.get("batch_size_warn_threshold"))
                fail = _setting_bytes(got.get("batch_size_fail_threshold"))
                parts = got.get("unlogged_batch_across_partitions_warn_threshold")
                if warn and fail and parts and str(parts).isdigit():
                    limits = (max(WRITE_BATCH_ROWS, min(int(parts) // 2, SEAL_BATCH_MAX_ROWS)),
                              max(WRITE_BATCH_BYTES, min(warn // 2, fail // 4, SEAL_BATCH_MAX_BYTES)))
            except Exception:  # noqa: BLE001 - a hint only: the defaults hold everywhere
                log.info("node batch thresholds unreadable; seal batches of %d rows / %d bytes", *limits)
            self._write_limits = limits
        return self._write_limits

    async def _bounded_steps(self, steps: list[Callable[[], Awaitable[object]]], in_flight: int = MAX_IN_FLIGHT) -> None:
        """Run idempotent steps, at most ``in_flight`` at once; a step that times out is
        run again from its start, with backoff."""
        sem = asyncio.Semaphore(in_flight)

        async def one(step: Callable[[], Awaitable[object]]) -> None:
            async with sem:
                delays = backoff_delays(0.2, 60.0)
                await retry_async(step, retry_on=TransientStorageError, attempts=WRITE_ATTEMPTS, delays=delays)

        await asyncio.gather(*(one(step) for step in steps))

    # -- RollupStore ------------------------------------------------------------------------

    async def _shard_infos(self, group: Collection[int], shards: int, start_ms: int, end_ms: int) -> list[SeriesInfo]:
        """The series of the shards of ``group`` in [start_ms, end_ms) from the index: only
        those are read (a target's frames are decoded whole, but only the group's columns
        become samples)."""
        every = [Matcher(METRIC_NAME, MatchOp.RE, ".+")]
        found = await self._select_series(every, start_ms, end_ms - 1)
        if len(group) == shards:
            return found
        return [i for i in found if i.series.id % shards in group]

    async def read_raw_window(self, shard: int, shards: int, start_ms: int, end_ms: int) -> list[SeriesData]:
        return await self.rows_and_blocks(await self._shard_infos({shard}, shards, start_ms, end_ms), start_ms, end_ms - 1)

    async def read_raw_window_arrays(
        self, shard: int, shards: int, start_ms: int, end_ms: int, seal_from_ms: int | None = None
    ) -> RawWindow:
        """``read_raw_window`` as one ``RawWindow``: the columns of rows and frames merged
        (``read_columns``) go to the job as they are, no per-series objects on the way. No
        ``sealed_rows``: raw rows and frames expire by TTL, a seal drops nothing."""
        return await self.read_raw_window_group((shard,), shards, start_ms, end_ms, kept_index=seal_from_ms is None)

    async def read_raw_window_group(
        self, group: Sequence[int], shards: int, start_ms: int, end_ms: int, *, kept_index: bool = False
    ) -> RawWindow:
        """``read_raw_window_arrays`` of several shards at once (``RawWindowGroups``): the
        index is read once and each frame decoded once for all of them. Hours whose raw
        partitions were dropped (``drop_raw_hours``: a reseal, a window's counter carry from
        the one before) add their blocks, below the rows and frames written since.
        ``kept_index`` (a fresh pass): the index's ids and targets as a recent read found them
        while its stamps allow (``_index_target_sets``); a seal reads them, so that no series
        written meanwhile is left out of its blocks whatever the writers' clocks."""
        if start_ms < self.now_ms() - self.recent_raw_keep_ms:  # sealed blocks too: the general path
            infos = await self._shard_infos(set(group), shards, start_ms, end_ms)
            return RawWindow.of(await self.rows_and_blocks(infos, start_ms, end_ms - 1))
        # (ids and targets only: rows and frames become columns by series id, no labels read,
        # no object per series: the read takes the ids by target)
        indexed = await self._index_target_sets(start_ms, end_ms - 1, kept=kept_index)
        every = len(set(group)) == shards
        by_names: dict[frozenset[str], list[int]] = {}  # (a target's series share their frozenset)
        for sid, names in indexed.items():
            if every or sid % shards in group:
                by_names.setdefault(names, []).append(sid)
        if not by_names:
            return RawWindow(_NO_IDS, np.zeros(1, dtype=np.int64), _NO_IDS, _NO_VALUES)
        infos = SeriesInfos()  # (empty: ``_read_parts`` reads ``by_target``)
        infos.by_target = by_target = TargetSeries()
        for names, sids in by_names.items():
            for t in names:
                if t in by_target:
                    by_target[t] += sids
                else:
                    by_target[t] = list(sids)
        parts = await self._read_parts(infos, start_ms, end_ms - 1, None, probe_rows=True)
        dropped = await self.dropped_hours(start_ms, end_ms - 1)  # after the raw read: see drop_raw_hours
        if dropped:
            lo, hi = max(start_ms, min(dropped) * HOUR_MS), min(end_ms - 1, (max(dropped) + 1) * HOUR_MS - 1)
            blocks = await self.read_blocks_of([sid for sids in by_names.values() for sid in sids], lo, hi)
            for sid, found in blocks.items():
                for _, _, _, data in found:
                    b_ts, b_vals = decode_block(data)
                    keep = (b_ts >= lo) & (b_ts <= hi)
                    if keep.any():
                        parts[0].append(np.full(int(keep.sum()), sid, dtype=np.int64))
                        parts[1].append(b_ts[keep])
                        parts[2].append(b_vals[keep])
                        parts[3].append(np.full(parts[0][-1].size, 2, dtype=np.int8))  # rows, frames win
        if not parts[0]:
            return RawWindow(_NO_IDS, np.zeros(1, dtype=np.int64), _NO_IDS, _NO_VALUES)
        return RawWindow(*series_runs(*parts))

    async def drop_sealed_raw(self, rows: Sequence[tuple[int, int, int]]) -> int:
        return 0  # never asked: read_raw_window_arrays names no sealed rows (drop_raw_hours drops them)

    # -- dropping the raw input of sealed hours (``storage.rollup_job.SealedRawDrop``) ---------

    def can_drop_raw(self, window_ms: int) -> bool:
        return window_ms <= BLOCK_LOOKBACK_MS  # query reads find blocks starting that far back

    def raw_drop_stamp_us(self) -> int:
        # The writers' clock (the driver's client timestamps) less their skew and time in flight.
        return time.time_ns() // 1000 - self.raw_drop_skew_ms * 1000

    async def raw_writers_floor_ms(self) -> int | None:
        """The lowest floor any writer published (``CassandraStorage.publish_raw_floor``), None if none did:
        ``meta`` is a small table (checkpoints, drop marks, one row per writer), read whole."""
        floors = [int(value) for page in await self.execute((await self._ps())["meta_all"])
                  for key, value in page if key.startswith(WRITER_FLOOR_KEY)]
        return min(floors) if floors else None

    async def dropped_hours(self, start_ms: int, end_ms: int) -> set[int]:
        """The hours (ms // 1 h) in [start_ms, end_ms] whose raw partitions were dropped."""
        hours = range(start_ms // HOUR_MS, end_ms // HOUR_MS + 1)
        keys = [f"{_DROPPED_HOUR}{h}" for h in hours]
        found: set[int] = set()
        for part in slices(keys, 100):
            for page in await self.execute((await self._ps())["meta_keys"], (part,)):
                found.update(int(r[0][len(_DROPPED_HOUR):]) for r in page)
        return found

    async def drop_raw_hours(self, start_ms: int, end_ms: int, written_before_us: int) -> int:
        """Partition tombstones on ``raw_frames`` and ``raw_recent`` for every target (of the
        index) and hour of [start_ms, end_ms), deleting what was written up to
        ``written_before_us`` (later writes stay: late samples, marked). Each hour is marked
        dropped first (``dropped_hours``, a quorum write): a window read that reads raw
        partitions and then those marks sees a mark whenever a tombstone can have hit its
        raw read, and adds the hour's blocks. Returns the partitions dropped."""
        hours = list(range(start_ms // HOUR_MS, -(-end_ms // HOUR_MS)))
        if not hours:
            return 0
        ps = await self._ps()
        ttl = DEFAULT_TTLS_S["raw_frames"] + 86_400  # outlives the raw input it speaks of
        await self._bounded([(ps["meta_set_ttl"], (f"{_DROPPED_HOUR}{h}", "1", ttl)) for h in hours])
        # (a target a kept read missed, for a writer's clock skew, keeps its partitions to their TTL)
        indexed = await self._index_target_sets(hours[0] * HOUR_MS, (hours[-1] + 1) * HOUR_MS - 1, kept=True)
        targets = sorted(frozenset().union(*set(indexed.values())))  # (a target's series share their set)
        calls = [(ps[name], (written_before_us, t, h)) for t in targets for h in hours
                 for name in ("frames_drop", "recent_drop")]
        await self._bounded(calls)
        return len(calls)

    async def write_blocks(self, blocks: Sequence[SealedBlock]) -> None:
        await self._send_units([([packed], n) for _, _, _, packed, n in await self._block_rows(blocks)])

    async def _block_rows(self, blocks: Sequence[SealedBlock]) -> list[SealRow]:
        """The block inserts of ``blocks`` (in that order), packed, once the timestamp frames
        they share are stored (``_share_times``)."""
        datas = await self._share_times(blocks)
        ps = (await self._ps())["block_ins"]
        _, p_day, p_start, p_end, _ = packers_of(ps)
        windows: dict[tuple[int, int], tuple[int, int, bytes, bytes, bytes]] = {}  # (a seal's blocks share one window)
        for start, end in {(b.start_ms, b.end_ms) for b in blocks}:
            windows[(start, end)] = (start // DAY_MS, start, p_day(start // DAY_MS), p_start(start), p_end(end))
        sids = [b.series_id for b in blocks]
        return [(sid, w[0], w[1], (ps, [packed_sid, w[2], w[3], w[4], d]), ROW_BYTES + len(d))
                for sid, w, packed_sid, d in zip(
                    sids, [windows[(b.start_ms, b.end_ms)] for b in blocks], _packed_ids(sids), datas, strict=True)]

    async def _share_times(self, blocks: Sequence[SealedBlock]) -> list[bytes]:
        """The blocks' bytes, those of a window's target sharing a timestamp frame as version 4
        (``storage.blocks.share_times``), after their frames are in ``raw_block_times``."""
        datas, frames = share_times([b.data for b in blocks])
        if frames:
            starts = {times_key(d): b.start_ms for b, d in zip(blocks, datas, strict=True)
                      if d[0] == VERSION_SHARED_TIMES}
            ins = (await self._ps())["times_ins"]
            await self._bounded([(ins, (starts[key], key, frame)) for key, frame in frames.items()])
            TIMES.add(frames.items())
        return datas

    async def _inline_times(self, blocks: Sequence[tuple[int, bytes]]) -> list[bytes]:
        """``(window start, data)`` of blocks as blocks that decode on their own: a version-4
        block's timestamp frame (kept by the process, ``TIMES``, else read from
        ``raw_block_times``) put back in place (``storage.blocks.inline_times``). A frame not
        found leaves its block as it is (decoding it says so)."""
        wanted = {times_key(d): start for start, d in blocks if d and d[0] == VERSION_SHARED_TIMES}
        if not wanted:
            return [d for _, d in blocks]
        frames = TIMES.frames(wanted)
        by_start: dict[int, list[int]] = {}
        for key, start in wanted.items():
            if key not in frames:
                by_start.setdefault(start, []).append(key)
        if by_start:
            ps = (await self._ps())["times_read"]
            results = await asyncio.gather(*(
                self.execute(ps, (start, part))
                for start, keys in by_start.items() for part in slices(keys, TIMES_READ_KEYS)))
            got = [(key, data) for pages in results for page in pages for key, data in page]
            TIMES.add(got)
            frames.update(got)
        out = []
        for _, d in blocks:
            frame = frames.get(times_key(d)) if d and d[0] == VERSION_SHARED_TIMES else None
            out.append(d if frame is None else inline_times(d, frame))
        return out

    async def write_rollups(self, resolution: Resolution, rows: Sequence[RollupRows]) -> None:
        """Each row's buckets into their chunks, merged with what the chunks hold (newer wins)."""
        await self._send_units(_seal_units(await self._rollup_rows(resolution, rows)))

    async def write_seal(
        self, blocks: Sequence[SealedBlock], minutes: Sequence[RollupRows], hours: Sequence[RollupRows], *,
        new_from_ms: int | None = None, window_end_ms: int | None = None,
    ) -> None:
        """``write_blocks`` and ``write_rollups`` of a window's 1m and 1h rows in one go. A
        series' block and its 1m chunks of the window share the partition key ``(series_id,
        day)`` (a window lies within a day): they go as one request (``_bounded``'s
        ``together``), not two, with the range deletes of the fresh pass's provisional chunks
        those final chunks replace (``_fresh_drops``): one mutation of the partition, so a
        read sees the provisional chunks or the final ones, never neither. The rest as those
        methods send them. All the writes run at once: a failure leaves the window to be done
        again whole (the job moves its checkpoint after), every write an upsert or a delete
        of what the final chunks hold.

        ``new_from_ms`` (a live seal, the job's first of its window: the window's start):
        chunks starting there or later are written without reading them first (``_rollup_rows``).
        What such a chunk may hold lies in this window or after it: an earlier try of this
        seal or the fresh pass's first minute of a span (this seal's buckets hold every sample
        those had), or a later window a backfill sealed ahead of the job's checkpoint, which
        the job seals again after this one, merging it back. With a 2 h window and 6 h chunks
        that is a third of the seal's 1m chunk reads (issue #20's one seal: all of them, when
        its window starts a span)."""
        block_rows, minute_rows, hour_rows, fresh = await asyncio.gather(
            self._block_rows(blocks),
            self._rollup_rows(Resolution.MINUTE, minutes, new_from_ms),
            self._rollup_rows(Resolution.HOUR, hours, new_from_ms, window_end_ms),
            self._fresh_windows({(b.start_ms, b.end_ms) for b in blocks}),
        )
        drop = (await self._ps())["1m_fresh_drop"]
        chunk_of: dict[tuple[int, int], list[SealRow]] = {}
        for row in minute_rows:  # (a series' window may touch several chunks of its day)
            chunk_of.setdefault((row[0], row[1]), []).append(row)
        together: list[tuple[list[Packed], int]] = []
        rest: list[tuple[list[Packed], int]] = _seal_units(hour_rows)
        for b, (sid, day, _, packed, n) in zip(blocks, block_rows, strict=True):
            mates = chunk_of.pop((sid, day), None)
            if mates:  # the chunks first: their consistency level (LOCAL_QUORUM) is the batch's
                _, _, starts, upserts, sizes = zip(*mates, strict=True)
                unit = [*upserts, packed]
                n += sum(sizes)
                if (b.start_ms, b.end_ms) in fresh:
                    for lo, hi in _fresh_drops(b.start_ms, b.end_ms, starts):
                        params = (sid, day, lo, hi)
                        unit.append((drop, pack_values(drop, params)))
                        n += _row_bytes(params)
                together.append((unit, n))
            else:
                rest.append(([packed], n))
        rest += [([packed], n) for mates in chunk_of.values() for _, _, _, packed, n in mates]
        await self._send_units(rest + together)

    async def _fresh_windows(self, windows: Collection[tuple[int, int]]) -> set[tuple[int, int]]:
        """Of ``windows`` ([start, end) in ms), those with a block some fresh pass wrote
        provisional chunks into (its ``_FRESH_BLOCK`` mark): only their seals delete provisional
        keys. A window no fresh pass touched (a job run with ``--no-fresh``, a backfill, issue
        #20's one seal) so writes no range tombstone per series, a quarter of the seal's
        statements. (A fresh pass of a copy that lost its lease, whose mark and chunks land
        after this read, leaves its chunks to their TTL: reads take a final bucket over a
        provisional one.)"""
        keyed: dict[str, tuple[int, int]] = {}
        for start, end in windows:
            for block in range(start - start % FRESH_BLOCK_MS, end, FRESH_BLOCK_MS):
                keyed[f"{_FRESH_BLOCK}{block}"] = (start, end)
        if not keyed:
            return set()
        ps = (await self._ps())["meta_keys"]
        keys = list(keyed)
        pages = await asyncio.gather(*(self.execute(ps, (part,)) for part in slices(keys, 100)))
        return {keyed[r[0]] for found in pages for page in found for r in page}

    async def _rollup_rows(
        self, resolution: Resolution, rows: Sequence[RollupRows], new_from_ms: int | None = None,
        window_end_ms: int | None = None,
    ) -> list[SealRow]:
        """The chunk upserts writing ``rows`` (``write_rollups``), packed: reads the chunks they
        fall in and merges them; chunks starting at ``new_from_ms`` or later are not read (a
        live seal's: ``write_seal``). A 1h chunk is read with its span's pieces, merged with
        them (the later key wins an equal bucket start) and written back with a delete of the
        pieces read right after it, in the same partition (``_seal_units`` keeps them in one
        mutation). With ``window_end_ms`` too (a live seal's window) the 1h buckets of a chunk
        started before the window are written as a piece instead, unread (``_piece_keys``),
        but by a window ending a multiple of HOUR_PIECES_MERGE_MS, which merges them."""
        if not rows:
            return []
        ps = await self._ps()
        key = "1m" if resolution is Resolution.MINUTE else "1h"
        get, ins = ps[f"{key}_chunks_get"], ps[f"{key}_chunk_ins"]
        span = chunks.chunk_span(resolution)
        spans = resolution is Resolution.HOUR  # (a 1h chunk's read takes its span's pieces too)
        ids: list[int] = rows.ids.tolist() if isinstance(rows, RollupRowsList) else [r.series_id for r in rows]
        sids: list[int]  # series id of each chunk written
        starts: list[int]  # its start
        columns: list[list[bytes]]  # per name of ``chunks.COLUMNS``, each chunk's plain value
        if len(set(ids)) == len(ids):  # (the job's rows: each series once) every chunk's columns at once
            flat = (rows.flat, rows.bounds) if isinstance(rows, RollupRowsList) else None
            table = chunks.encode_columns_table(resolution, [r.rollup for r in rows] if flat is None else (), flat)
            if table is None:
                return []
            owners, starts, _, _, columns = table
            sids = np.asarray(ids, dtype=np.int64)[np.asarray(owners, dtype=np.int64)].tolist()
        else:
            merged: dict[tuple[int, int], Rollup] = {}
            for r in rows:  # (a series twice in ``rows``: the later rows win, as for upserts)
                for start, part in chunks.split(resolution, r.rollup):
                    k = (r.series_id, start)
                    merged[k] = chunks.merge(merged[k], part) if k in merged else part
            sids, starts = [k[0] for k in merged], [k[1] for k in merged]
            encoded = [chunks.encode_columns(resolution, k[1], part) for k, part in merged.items()]
            columns = [[c[name] for c in encoded] for name in chunks.COLUMNS]

        # What the chunks hold: one read per chunk start and SEAL_READ_SERIES series (not one
        # per series: the seal's requests are its cost; CHUNK_READS_IN_FLIGHT at once, for
        # the node's buffers), then one write per chunk.
        at_start = np.asarray(starts, dtype=np.int64)
        read = at_start < new_from_ms if new_from_ms is not None else np.ones(at_start.size, dtype=bool)
        if spans and new_from_ms is not None and window_end_ms is not None and window_end_ms % HOUR_PIECES_MERGE_MS:
            piece = read.copy()
            starts = _piece_keys(starts, columns[0], piece)
            read &= ~piece
        by_start = {start: np.asarray(sids, dtype=np.int64)[read & (at_start == start)].tolist()
                    for start in np.unique(at_start[read]).tolist()}
        stored: list[tuple] = []  # (chunk start, series id, key, data, *columns)

        def read_step(start: int, some: list[int]) -> Callable[[], Awaitable[None]]:
            async def run() -> None:
                params = (some, _partition(resolution, start), start, start + span) if spans else (
                    some, _partition(resolution, start), start)
                for page in await self.execute(get, params):
                    stored.extend((start, *row) if spans else (start, row[0], start, *row[1:]) for row in page)

            return run

        await self._bounded_steps([read_step(start, part)
                                   for start, got in by_start.items() for part in slices(got, SEAL_READ_SERIES)],
                                  CHUNK_READS_IN_FLIGHT)
        pieces_to = _merge_stored(resolution, stored, sids, starts, columns)
        # Written in compact form (``rollup_chunks.compact_columns``): the seal's cost was its bytes.
        values = chunks.compact_columns(chunks.COLUMNS, columns)
        # Packed here (``pack_values``' bytes: the key columns by their packers, the blobs as
        # they are; the series ids by NumPy, each chunk start's keys once): ~3 rows per series
        # are the seal's writes.
        p_part, p_start = packers_of(ins)[1:3]
        heads: dict[int, tuple[int, bytes, bytes]] = {}
        for start in set(starts):
            pkey = _partition(resolution, start)
            heads[start] = (pkey, p_part(pkey), p_start(start))
        sizes = np.full(len(sids), ROW_BYTES, dtype=np.int64)
        for v in values:
            sizes += chunks.value_lengths(v)
        out = [(sid, head[0], start, (ins, [packed_sid, head[1], head[2], b"", *blobs]), size)
               for sid, start, packed_sid, head, size, *blobs in zip(
                   sids, starts, _packed_ids(sids), map(heads.__getitem__, starts), sizes.tolist(), *values,
                   strict=True)]
        if not pieces_to:
            return out
        drop = ps["1h_pieces_drop"]
        with_drops: list[SealRow] = []  # (each chunk's delete of its pieces right after it: ``_seal_units``)
        for i, row in enumerate(out):
            with_drops.append(row)
            if i in pieces_to:
                params = (sids[i], row[1], starts[i], pieces_to[i])
                with_drops.append((sids[i], row[1], starts[i], (drop, pack_values(drop, params)), _row_bytes(params)))
        return with_drops

    def fresh_block_start(self, ts_ms: int) -> int:
        """``FreshBlocks``: the start of the FRESH_BLOCK_MS block holding ``ts_ms``; of the
        block that starts a chunk span, the ms after (its aligned first minute goes into the
        span's final chunk, merged, once: ``write_fresh_minutes``)."""
        block = ts_ms - ts_ms % FRESH_BLOCK_MS
        return block + 1 if block % chunks.chunk_span(Resolution.MINUTE) == 0 else block

    async def write_fresh_minutes(self, rows: Sequence[RollupRows]) -> None:
        """Provisional 1m buckets of an open window (the job's fresh pass): a chunk per series
        and FRESH_BLOCK_MS block keyed by its first bucket, with a TTL of FRESH_TTL_S (reads
        prefer the final chunk the window's seal writes; an aligned first bucket merges into
        that chunk instead). The job sends each block's buckets from the block's start
        (``fresh_block_start``), so each pass rewrites the block's chunk in place (a span's
        first minute goes into the span's chunk, the rest of its block is keyed by the next
        bucket). The
        window's seal deletes them (``write_seal``): cut at every block, a provisional chunk
        lies inside one window whatever the job's window length (whole hours), so that
        delete never takes a bucket of the window after."""
        ps = (await self._ps())["1m_fresh_ins"]
        keys, fresh, aligned_rows = [], [], []
        for r in rows:
            for aligned, part in chunks.split(Resolution.MINUTE, r.rollup):
                for first, piece in _block_pieces(part):
                    if first == aligned:  # the span's first minute: into its final chunk
                        aligned_rows.append(RollupRows(r.series_id, piece.slice(first, first + 1)))
                        if len(piece) == 1:
                            continue
                        piece = piece.slice(first + 1, first + FRESH_BLOCK_MS)
                        first = int(piece.timestamps[0])
                    keys.append((r.series_id, first))
                    fresh.append(chunks.encode_columns(Resolution.MINUTE, first, piece))
        if keys:  # marked before the chunks: a seal that finds no mark has no chunk of its window to delete
            mark = (await self._ps())["meta_set_ttl"]
            await self._bounded([(mark, (f"{_FRESH_BLOCK}{block}", "1", FRESH_TTL_S))
                                 for block in sorted({first - first % FRESH_BLOCK_MS for _, first in keys})])
        await self._bounded([(ps, (sid, first // DAY_MS, first, b"", *(cols[c] for c in chunks.COLUMNS), FRESH_TTL_S))
                             for (sid, first), cols in zip(keys, chunks.compact_dicts(fresh), strict=True)])
        if aligned_rows:
            await self.write_rollups(Resolution.MINUTE, aligned_rows)

    async def get_checkpoint(self, job: str, shard: int) -> int | None:
        ps = (await self._ps())["meta_get"]
        pages = await self.execute(ps, (f"rollup:{job}:{shard}",))
        rows = [r for page in pages for r in page]
        return int(rows[0][0]) if rows else None

    async def set_checkpoint(self, job: str, shard: int, window_end_ms: int) -> None:
        # Written only by the lease holder, with increasing values: a plain upsert suffices.
        ps = (await self._ps())["meta_set"]
        await self.execute(ps, (f"rollup:{job}:{shard}", str(window_end_ms)))

    async def late_marks_since(self, cursor_ms: int) -> list[tuple[int, int]]:
        """``(hour start ms, written at ms)`` of the ``raw_late`` rows written after ``cursor_ms``
        for hours in the last ``late_marks_lookback_ms`` (``late_hours``: one query per day)."""
        now = self.now_ms()
        marks = await self.late_hours(max(0, now - self.late_marks_lookback_ms), now)
        return [(int(h) * RAW_BUCKET_MS, int(w)) for h, w in marks.items() if w is not None and w > cursor_ms]

    # -- reads ------------------------------------------------------------------------------

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
            return await self.select_rollup(matchers, start_ms, end_ms, resolution, columns)
        if end_ms < start_ms:
            return []
        infos = await self._select_series(matchers, start_ms, end_ms, cached=True)
        if not infos:
            return []
        return await self.read_sealed_and_rows(infos, start_ms, end_ms)

    async def select_flat(self, matchers: Sequence[Matcher], start_ms: int, end_ms: int) -> FlatSamples:
        """``select``'s raw samples as flat columns (``storage.base.FlatRawReader``): a read of
        the hours always read from rows and frames without an object per series."""
        if end_ms < start_ms:
            return FlatSamples.of([])
        cold, hot = self._cold_and_hot(start_ms, end_ms)
        if not cold:
            return await self._select_read_flat(matchers, start_ms, end_ms, hot)
        infos = await self._select_series(matchers, start_ms, end_ms, cached=True)
        if not infos:
            return FlatSamples.of([])
        return await self._sealed_and_rows(infos, start_ms, end_ms)

    def _cold_and_hot(self, start_ms: int, end_ms: int) -> tuple[list[int], list[int]]:
        """The hours of [start_ms, end_ms] that may be sealed (cold) and those always read
        from rows and frames (hot: the last ``RECENT_RAW_MS``)."""
        hours = range(start_ms // HOUR_MS, end_ms // HOUR_MS + 1)
        first_hot = (self.now_ms() - RECENT_RAW_MS) // HOUR_MS
        return [h for h in hours if h < first_hot], [h for h in hours if h >= first_hot]

    async def read_sealed_and_rows(self, infos: Sequence[SeriesInfo], start_ms: int, end_ms: int) -> list[SeriesData]:
        """Raw samples of known series in [start_ms, end_ms]: sealed blocks where they can be
        trusted, ``raw_recent`` rows for everything else (see the module docstring)."""
        cold, hot = self._cold_and_hot(start_ms, end_ms)
        if not cold:
            return await self.read_raw(infos, start_ms, end_ms, hot, kept=True)
        return (await self._sealed_and_rows(infos, start_ms, end_ms)).as_data()

    async def _sealed_and_rows(self, infos: Sequence[SeriesInfo], start_ms: int, end_ms: int) -> FlatSamples:
        """``read_sealed_and_rows`` of a range reaching into the cold hours, as flat columns
        (series in label order, those without samples left out). The blocks come in label
        order (``_blocks_decoded_of``); which series need rows for which cold hours is found
        on their key columns at once (``_SealedBlocks.untrusted``), and the series whose
        samples are their blocks' alone (usually all of a read in the sealed hours) are cut
        and joined without a loop per series: a kept block is skipped when outside the range
        and cut with at most one search (a 1 y panel's refresh whose step is hours old reads
        800 series' last minutes up to its step, on a window's edge: the next window's blocks
        hold nothing of it). A series with rows too, or whose blocks overlap, is merged on
        its own (rows win on equal timestamps)."""
        cold, hot = self._cold_and_hot(start_ms, end_ms)
        cold_end = min(end_ms, (cold[-1] + 1) * HOUR_MS - 1)
        order_ids, ranked = self._in_label_order(infos)
        blocks, late, hot_rows = await asyncio.gather(
            self._blocks_decoded_of(order_ids, start_ms, cold_end),
            self.late_hours(start_ms, cold_end),
            self.read_raw(infos, start_ms, end_ms, hot, kept=True) if hot else _no_rows(),
        )
        need_by_hours = blocks.untrusted(len(ranked), late, self.late_seal_margin_ms, cold[0], cold[-1] + 1)
        cold_rows: list[list[SeriesData]] = []
        if need_by_hours:
            by_rank: dict[int, list[SeriesInfo]] = {}
            rank_of = {sid: r for r, sid in enumerate(order_ids.tolist())}
            for info in infos:  # (a series under two targets: both read)
                by_rank.setdefault(rank_of[info.series.id], []).append(info)
            cold_rows = await asyncio.gather(*(
                self.read_raw([i for r in ranks for i in by_rank[r]], start_ms, cold_end, list(need))
                for need, ranks in need_by_hours.items()))
        b_ts, b_vals, b_bounds, unsorted = blocks.cut(len(ranked), start_ms, cold_end)
        if not hot_rows and not any(cold_rows) and not unsorted:
            counts = np.diff(b_bounds)
            have = np.flatnonzero(counts)
            offsets = np.zeros(have.size + 1, dtype=np.int64)
            np.cumsum(counts[have], out=offsets[1:])
            return FlatSamples([ranked[r] for r in have.tolist()], offsets, b_ts, b_vals)
        rows_by_id: dict[int, list[SeriesData]] = {}
        for part in (hot_rows, *cold_rows):
            for d in part:
                rows_by_id.setdefault(d.series.id, []).append(d)
        series: list[Series] = []
        ts_out: list[np.ndarray] = []
        vals_out: list[np.ndarray] = []
        bounds = b_bounds.tolist()
        for r, s in enumerate(ranked):
            a, z = bounds[r], bounds[r + 1]
            got = rows_by_id.get(s.id)
            if got is None and r not in unsorted:
                if z > a:
                    series.append(s)
                    ts_out.append(b_ts[a:z])
                    vals_out.append(b_vals[a:z])
                continue
            parts = [] if got is None else [(d.timestamps, d.values) for d in got]  # rows first: they win ties
            parts.append((b_ts[a:z], b_vals[a:z]))
            parts = [p for p in parts if p[0].shape[0]]
            if parts:
                ts, vals = _joined(parts)
                series.append(s)
                ts_out.append(ts)
                vals_out.append(vals)
        offsets = np.zeros(len(series) + 1, dtype=np.int64)
        np.cumsum([t.shape[0] for t in ts_out], out=offsets[1:])
        if not series:
            return FlatSamples.of([])
        return FlatSamples(series, offsets, np.concatenate(ts_out), np.concatenate(vals_out))

    def _decoded_block(self, sid: int, start: int, written_us: int, data: bytes) -> tuple[np.ndarray, np.ndarray, int, int]:
        """``decode_block`` of a series' sealed block (window ``start``, written at
        ``written_us``), kept decoded under that write time (a reseal writes it again, later:
        ``_blocks_decoded_of`` then fetches it again) while the cache holds it
        (BLOCK_CACHE_BYTES, least recently used dropped first); with its first and last
        timestamps (an empty block: a first after any range)."""
        if self._blocks_decoded is None:
            self._blocks_decoded = OrderedDict()
        cache, key = self._blocks_decoded, (sid, start)
        ts, vals = decode_block(data)
        first, last = (int(ts[0]), int(ts[-1])) if ts.size else (2**63 - 1, -(2**63))
        if not written_us:  # (no write time read: not kept)
            return ts, vals, first, last
        ts.flags.writeable = vals.flags.writeable = False  # (shared by the reads that find it)
        old = cache.pop(key, None)
        if old is not None:
            self._blocks_decoded_bytes -= old[1].nbytes + old[2].nbytes
        cache[key] = (written_us, ts, vals, first, last)
        self._blocks_decoded_bytes += ts.nbytes + vals.nbytes
        while self._blocks_decoded_bytes > BLOCK_CACHE_BYTES and cache:
            _, dropped = cache.popitem(last=False)
            self._blocks_decoded_bytes -= dropped[1].nbytes + dropped[2].nbytes
        return ts, vals, first, last

    async def _blocks_decoded_of(self, order_ids: np.ndarray, start_ms: int, end_ms: int) -> _SealedBlocks:
        """The sealed blocks of the series ``order_ids`` (distinct, in label order) that end
        after ``start_ms`` and start by ``end_ms`` (those starting up to BLOCK_LOOKBACK_MS
        before it are asked for), decoded, through the kept decoded blocks, in label order then
        window start. Each block's key and ``WRITETIME(data)`` come first (bigint columns,
        BLOCK_KEY_SERIES series a request; the blocks ending by ``start_ms`` are dropped on
        the columns); only the bytes of blocks not kept at that write time are fetched
        (``blocks_fetched`` counts them) and kept decoded. A write time names one write of a
        block: a reseal (or any rewrite) gives a later one, a deleted or expired block is not
        among the keys. (A refresh of a 1 y panel whose step is hours old read the bytes of
        its ~1,600 blocks again each time.) A set of blocks read before at the same write
        times comes joined (``_keep_joined``), with no look-up per block."""
        ps = await self._ps()
        rank, sid, b_start, b_end, written = await self._block_keys(order_ids, start_ms, end_ms)
        if self._blocks_joined is None:
            self._blocks_joined, self._blocks_seen = OrderedDict(), OrderedDict()
        set_key = _block_set_key(rank, sid, b_start, b_end, written)
        joined = self._blocks_joined.get(set_key)
        if joined is not None:  # (the same blocks at the same write times: the same samples)
            self._blocks_joined.move_to_end(set_key)
            self.blocks_joined_hits += 1
            return _SealedBlocks(rank, b_start, b_end, written, joined.first, joined.last, [], [], joined)
        if self._blocks_decoded is None:
            self._blocks_decoded = OrderedDict()
        cache = self._blocks_decoded
        found: list[tuple[int, np.ndarray, np.ndarray, int, int] | None] = [None] * sid.size
        missing: dict[int, dict[int, list[int]]] = {}  # day -> series id -> window starts not kept
        at: dict[tuple[int, int], int] = {}  # (series id, window start) -> its place, of those not kept
        for k, (s, b, w) in enumerate(zip(sid.tolist(), b_start.tolist(), written.tolist(), strict=True)):
            key = (s, b)
            got = cache.get(key)
            if got is not None and got[0] == w:
                cache.move_to_end(key)
                found[k] = got
            else:
                at[key] = k
                missing.setdefault(b // DAY_MS, {}).setdefault(s, []).append(b)
        if missing:
            calls = []
            for d, per_series in missing.items():
                sids = sorted(per_series)
                for group in slices(sids, BLOCK_READ_SERIES_CHUNK):
                    first = min(min(per_series[s]) for s in group)
                    last = max(max(per_series[s]) for s in group)
                    calls.append(self.execute(ps["blocks_read"], (group, d, first, last)))
            rows_read = [row for pages_read in await asyncio.gather(*calls) for page in pages_read for row in page
                         if (row[0], row[1]) in at and row[4]]
            self.blocks_fetched += len(rows_read)
            datas = await self._inline_times([(row[1], row[4]) for row in rows_read])
            for (row_sid, row_start, row_end, written_us, _), data in zip(rows_read, datas, strict=True):
                k = at[(row_sid, row_start)]  # (as read now: a reseal since the keys' read writes it later)
                b_end[k], written[k] = row_end, written_us or 0
                found[k] = (written_us or 0, *self._decoded_block(row_sid, row_start, written_us or 0, data))
            if None in found:  # (a block deleted since its key was read, or without bytes)
                keep = np.fromiter((f is not None for f in found), dtype=bool, count=len(found))
                rank, sid, b_start, b_end, written = rank[keep], sid[keep], b_start[keep], b_end[keep], written[keep]
                found = [f for f in found if f is not None]
        kept = [f for f in found if f is not None]  # (all of them by now)
        blocks = _SealedBlocks(
            rank, b_start, b_end, written,
            np.fromiter((f[3] for f in kept), dtype=np.int64, count=len(kept)),
            np.fromiter((f[4] for f in kept), dtype=np.int64, count=len(kept)),
            [f[1] for f in kept], [f[2] for f in kept],
        )
        if missing:  # (as fetched: the key of what is kept)
            set_key = _block_set_key(rank, sid, b_start, b_end, written)
        self._keep_joined(set_key, blocks)
        return blocks

    async def _block_keys(
        self, order_ids: np.ndarray, start_ms: int, end_ms: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """``_blocks_decoded_of``'s keys: (series rank in ``order_ids``, series id, window start,
        window end, write time) of the blocks ending after ``start_ms``, by rank then start."""
        ps = await self._ps()
        ids = np.unique(order_ids).tolist()
        days = [(d, max(d * DAY_MS, start_ms - BLOCK_LOOKBACK_MS), min((d + 1) * DAY_MS - 1, end_ms))
                for d in range(start_ms // DAY_MS, end_ms // DAY_MS + 1)]
        pages = await asyncio.gather(*(
            self.execute_columnar(ps["block_keys"], (part, d, lo, hi))
            for d, lo, hi in days for part in slices(ids, BLOCK_KEY_SERIES)))
        cols: list[list[np.ndarray]] = [[], [], [], []]  # series id, window start, window end, write time
        for request in pages:
            for page in request:
                if isinstance(page, dict):  # (no null write time: every block has its bytes)
                    parts = [np.asarray(c, dtype=np.int64) for c in page.values()]
                else:
                    rows = [r for r in page if r[3] is not None]
                    parts = list(np.array(rows, dtype=np.int64).reshape(-1, 4).T)
                for col, part in zip(cols, parts, strict=True):
                    col.append(part)
        sid, b_start, b_end, written = (np.concatenate(c) if c else _NO_IDS for c in cols)
        after = np.flatnonzero(b_end > start_ms)
        sorter = np.argsort(order_ids)
        rank = sorter[np.searchsorted(order_ids, sid[after], sorter=sorter)]
        order = np.lexsort((b_start[after], rank))
        rank, pick = rank[order], after[order]
        sid, b_start, b_end, written = sid[pick], b_start[pick], b_end[pick], written[pick]
        return rank, sid, b_start, b_end, written

    def _keep_joined(self, set_key: bytes, blocks: _SealedBlocks) -> None:
        """Join ``blocks`` (a read's, decoded) under their key set when that set was read
        before (``_blocks_seen``: a one-off read joins nothing), within JOINED_BLOCKS_BYTES
        (least recently used dropped first); blocks without a write time are never joined."""
        seen, kept = self._blocks_seen, self._blocks_joined
        assert seen is not None and kept is not None, "made by _blocks_decoded_of"
        digest = hashlib.blake2b(set_key, digest_size=16).digest()  # (a match only decides to join)
        if digest not in seen:
            seen[digest] = None
            while len(seen) > JOINED_SEEN:
                seen.popitem(last=False)
            return
        if not blocks.written.size or not bool((blocks.written > 0).all()):
            return
        joined = _JoinedBlocks.of(blocks)
        if joined is None or joined.nbytes > JOINED_BLOCKS_BYTES:
            return
        old = kept.pop(set_key, None)
        if old is not None:
            self._blocks_joined_bytes -= old.nbytes
        kept[set_key] = joined
        self._blocks_joined_bytes += joined.nbytes
        while self._blocks_joined_bytes > JOINED_BLOCKS_BYTES and kept:
            _, dropped = kept.popitem(last=False)
            self._blocks_joined_bytes -= dropped.nbytes

    async def read_blocks_of(
        self, series_ids: Sequence[int], start_ms: int, end_ms: int
    ) -> dict[int, list[tuple[int, int, int, bytes]]]:
        """Sealed blocks overlapping [start_ms, end_ms] (those starting up to BLOCK_LOOKBACK_MS
        before it): series id -> [(window start, window end, write time in us, data)] by start."""
        ps = (await self._ps())["blocks_read"]
        ids = sorted(set(series_ids))
        calls = []
        for d in range(start_ms // DAY_MS, end_ms // DAY_MS + 1):
            lo = max(d * DAY_MS, start_ms - BLOCK_LOOKBACK_MS)
            hi = min((d + 1) * DAY_MS - 1, end_ms)
            for part in slices(ids, BLOCK_READ_SERIES_CHUNK):
                calls.append(self.execute(ps, (part, d, lo, hi)))
        rows = [row for pages in await asyncio.gather(*calls) for page in pages for row in page
                if row[2] > start_ms and row[4]]
        datas = await self._inline_times([(row[1], row[4]) for row in rows])
        out: dict[int, list[tuple[int, int, int, bytes]]] = {}
        for (sid, b_start, b_end, written_us, _), data in zip(rows, datas, strict=True):
            out.setdefault(sid, []).append((b_start, b_end, written_us or 0, data))
        for blocks in out.values():
            blocks.sort(key=lambda b: b[0])
        return out

    async def select_rows(self, matchers: Sequence[Matcher], start_ms: int, end_ms: int) -> list[SeriesData]:
        """Raw samples from ``raw_recent`` rows, merged with sealed blocks only when the range
        reaches back past ``recent_raw_keep_ms`` (the rollup job's input: a rerun of a window
        reseals from its rows while they exist)."""
        return await self.rows_and_blocks(await self._select_series(matchers, start_ms, end_ms), start_ms, end_ms)

    async def rows_and_blocks(self, infos: Sequence[SeriesInfo], start_ms: int, end_ms: int) -> list[SeriesData]:
        """``select_rows`` of known series (blocks too for hours whose raw input was dropped)."""
        recent = await self.read_raw(infos, start_ms, end_ms) if infos else []
        horizon = self.now_ms() - self.recent_raw_keep_ms
        if start_ms >= horizon and not await self.dropped_hours(start_ms, end_ms):
            return recent
        # Older part: sealed blocks, for every matching series (some may have no rows left).
        found = sorted((i.series for i in infos), key=lambda s: s.labels)
        sealed = await asyncio.gather(*(self.read_blocks(s.id, start_ms, end_ms + 1) for s in found))
        by_id = {d.series.id: d for d in recent}
        out = []
        for s, (b_ts, b_vals) in zip(found, sealed, strict=True):
            rows = by_id.pop(s.id, None)
            if rows is None:
                if b_ts.size:
                    out.append(SeriesData(s, b_ts, b_vals, Resolution.RAW))
                continue
            if not b_ts.size:
                out.append(rows)
                continue
            # Rows first: on equal timestamps the stable sort keeps the row (same value anyway).
            ts = np.concatenate([rows.timestamps, b_ts])
            vals = np.concatenate([rows.values, b_vals])
            order = np.argsort(ts, kind="stable")
            ts, vals = ts[order], vals[order]
            keep = np.ones(ts.shape[0], dtype=bool)
            keep[1:] = ts[1:] != ts[:-1]
            out.append(SeriesData(rows.series, ts[keep], vals[keep], Resolution.RAW))
        out.extend(by_id.values())
        out.sort(key=lambda d: d.series.labels)
        return out

    async def read_blocks(self, series_id: int, start_ms: int, end_ms: int) -> tuple[np.ndarray, np.ndarray]:
        """Samples in [start_ms, end_ms) of one series from its sealed blocks, bit-exact."""
        ps = (await self._ps())["block_read"]
        days = range(start_ms // DAY_MS, (end_ms - 1) // DAY_MS + 1)
        # A block keyed by window start w holds [w, w + window): start from the day's first window.
        pages = await asyncio.gather(
            *(self.execute(ps, (series_id, d, d * DAY_MS, min(end_ms, (d + 1) * DAY_MS))) for d in days)
        )
        rows = [(row[0], row[1]) for day_pages in pages for page in day_pages for row in page]
        blocks = [decode_block(data) for data in await self._inline_times(rows)]
        if not blocks:
            return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.float64)
        ts = np.concatenate([b[0] for b in blocks])
        vals = np.concatenate([b[1] for b in blocks])
        keep = (ts >= start_ms) & (ts < end_ms)
        return ts[keep], vals[keep]

    async def read_rollup(self, resolution: Resolution, series_id: int, start_ms: int, end_ms: int) -> Rollup:
        """Buckets of one series with start in [start_ms, end_ms]."""
        got = await self._read_chunks(resolution, [series_id], start_ms, end_ms, AGGREGATES)
        if series_id not in got:
            return Rollup.empty()
        ts, cols = got[series_id]
        return Rollup(ts, *(cols[n] for n in AGGREGATES))

    async def select_rollup(
        self,
        matchers: Sequence[Matcher],
        start_ms: int,
        end_ms: int,
        resolution: Resolution,
        columns: Collection[str] | None = None,
    ) -> list[SeriesData]:
        """Rollup buckets of matching series: the aggregates ``columns`` (default all;
        ``values`` = ``last``, NaN when not read)."""
        names = aggregate_names(columns)
        found = await self.series(matchers, start_ms, end_ms)
        got = await self._read_chunks(resolution, [s.id for s in found], start_ms, end_ms, names)
        out = []
        for s in found:
            if s.id in got:
                ts, cols = got[s.id]
                if ts.size:
                    out.append(SeriesData(s, ts, bucket_values(cols, ts.size), resolution, cols))
        out.sort(key=lambda d: d.series.labels)
        return out

    async def _read_chunks(
        self, resolution: Resolution, series_ids: Sequence[int], start_ms: int, end_ms: int, names: tuple[str, ...]
    ) -> dict[int, tuple[np.ndarray, dict[str, np.ndarray]]]:
        """series id -> its bucket starts in [start_ms, end_ms] and columns ``names``: one
        request per partition and CHUNK_READ_SERIES series, CHUNK_READS_IN_FLIGHT at a time."""
        ps = await self._chunk_read_ps(resolution, names)
        lo = start_ms - chunks.chunk_span(resolution) + 1  # the first chunk that can hold start_ms
        ids = sorted(set(series_ids))
        sem = asyncio.Semaphore(CHUNK_READS_IN_FLIGHT)

        async def one(params: tuple) -> list:
            async with sem:
                return await self.execute(ps, params)

        parts = range(_partition(resolution, lo), _partition(resolution, end_ms) + 1)
        buckets = None
        if self.rollup_cache_bytes > 0:
            rows, buckets = await self._cached_chunk_rows(resolution, ids, parts, lo, end_ms, names, one)
        else:
            calls = []
            for p in parts:
                for part in slices(ids, CHUNK_READ_SERIES):
                    calls.append(one((part, p, lo, end_ms)))
            rows = [row for pages in await asyncio.gather(*calls) for page in pages for row in page]
            rows.sort(key=itemgetter(0, 1))  # (read_many: each series' chunks together, in start order)
        return chunks.read_many(rows, start_ms, end_ms, resolution, names, buckets)

    async def _cached_chunk_rows(
        self,
        resolution: Resolution,
        ids: list[int],
        parts: range,
        lo: int,
        hi: int,
        names: tuple[str, ...],
        one: Callable[[tuple], Awaitable[list]],
    ) -> tuple[list[tuple], np.ndarray | None]:
        """The chunk rows ``(series id, start, data, ts, *names)`` of series ``ids`` starting in
        [lo, hi], by series then start, through the store's chunk cache
        (``storage.chunk_cache``): each chunk's key and ``writetime(c_ts)`` (bigint columns:
        decoded as arrays, put in that order at once), then the chunks not kept at that
        version, read with their own writetime and kept (final chunks in column form). With
        the rows, when all were kept: their bucket counts (``ChunkCache.lookup``), else None."""
        cache = cache_of(self, resolution, self.rollup_cache_bytes)
        versions_ps = await self._chunk_read_ps(resolution, None)
        calls = [
            self.execute_columnar(versions_ps, (part, p, lo, hi))
            for p in parts
            for part in slices(ids, CHUNK_VERSION_SERIES)
        ]
        found_cols: list[list[np.ndarray]] = [[], [], []]
        for pages in await asyncio.gather(*calls):
            for page in pages:
                if isinstance(page, dict):  # (no null writetime: every chunk in column form)
                    key_cols = [np.asarray(page[k], dtype=np.int64) for k in list(page)[:3]]
                elif page:
                    key_cols = [np.array([r[0] for r in page], dtype=np.int64), np.array([r[1] for r in page], dtype=np.int64),
                                np.array([-1 if r[2] is None else r[2] for r in page], dtype=np.int64)]
                else:
                    continue
                for col, part in zip(found_cols, key_cols, strict=True):
                    col.append(part)
        keys: list[tuple[int, int, int]] = []
        if found_cols[0]:
            k_sid, k_start, k_ver = (np.concatenate(c) for c in found_cols)
            order = np.lexsort((k_start, k_sid))  # (read_many: each series' chunks together, in start order)
            keys = list(zip(k_sid[order].tolist(), k_start[order].tolist(), k_ver[order].tolist(), strict=True))
        wanted = ("ts", *names)
        buckets: list[int] = []
        rows, missing = cache.lookup(keys, wanted, buckets)
        if not missing:
            return rows, np.array(buckets, dtype=np.int64)
        found = [r for r in rows if r is not None]
        by_part: dict[int, dict[int, list[int]]] = {}
        for k in missing:
            sid, start, _ = keys[k]
            by_part.setdefault(_partition(resolution, start), {}).setdefault(sid, []).append(start)
        ps = await self._chunk_read_ps(resolution, names, versioned=True)
        calls = []
        for p, per_series in by_part.items():
            sids = sorted(per_series)
            for group in slices(sids, CHUNK_READ_SERIES):
                first = min(min(per_series[s]) for s in group)
                last = max(max(per_series[s]) for s in group)
                calls.append(self.execute(ps, (group, p, first, last)))
        want = {(keys[k][0], keys[k][1]) for k in missing}
        read, versions = [], []
        for pages in await asyncio.gather(*calls):
            for page in pages:
                for sid, start, version, *row in page:
                    if (sid, start) not in want:
                        continue  # (kept: in ``found`` already)
                    read.append((sid, start, *row))
                    versions.append(version)
        # Compact values (the rollup job's, ``rollup_chunks.compact_columns``) made plain once, as kept.
        # Provisional chunks (the fresh pass's) are kept too: each is one insert, never rewritten
        # under its writetime, and one that expired (TTL) is no longer among the keys read.
        for got, version in zip(chunks.plain_rows(read, 3, wanted), versions, strict=True):
            found.append(got)
            if version is not None and not got[2]:
                cache.store(version, wanted, got)
        found.sort(key=itemgetter(0, 1))
        return found, None


class CassandraRollupStorage(CassandraRollupMixin, CassandraStorage):
    """Cassandra storage with the rollup store."""


_NO_IDS = np.empty(0, dtype=np.int64)
_NO_VALUES = np.empty(0, dtype=np.float64)


@dataclass
class _SealedBlocks:
    """Sealed blocks a read found (``_blocks_decoded_of``), decoded, as columns in the order of
    their series' labels, then of their windows' starts."""

    rank: np.ndarray  # int64: the series' place in label order
    start: np.ndarray  # int64: window start (ms)
    end: np.ndarray  # int64: window end (ms)
    written: np.ndarray  # int64: the block's write time (us)
    first: np.ndarray  # int64: its first sample's timestamp (an empty block: after any range)
    last: np.ndarray  # int64: its last sample's timestamp
    ts: list[np.ndarray]  # (empty when ``joined`` holds them)
    values: list[np.ndarray]
    joined: _JoinedBlocks | None = None  # the same blocks joined (a set read before: ``_keep_joined``)

    def untrusted(
        self, n: int, late: dict[int, int], margin_ms: int, first_hour: int, end_hour: int
    ) -> dict[tuple[int, ...], list[int]]:
        """Of ``n`` series (by rank), those with hours in [first_hour, end_hour) that no
        trusted block covers, grouped by those hours: their rows must be read too. A block is
        trusted for an hour without a late mark (``late``: hour -> the newest late write's
        time, ms), or written at least ``margin_ms`` after that mark. Counted on the columns,
        per series and hour, without a loop per block."""
        span = end_hour - first_hour
        covered = np.zeros((n, span + 1), dtype=np.int32)  # blocks starting minus ending, per hour
        h0 = self.start // HOUR_MS
        h1 = -(-self.end // HOUR_MS)
        np.add.at(covered, (self.rank, np.clip(h0 - first_hour, 0, span)), 1)
        np.add.at(covered, (self.rank, np.clip(h1 - first_hour, 0, span)), -1)
        covered = np.cumsum(covered[:, :span], axis=1)
        for h, mark in late.items():
            if first_hour <= h < end_hour:
                trusted = (h0 <= h) & (h < h1) & (self.written // 1000 >= mark + margin_ms)
                covered[:, h - first_hour] = 0
                covered[self.rank[trusted], h - first_hour] = 1
        need = covered <= 0
        out: dict[tuple[int, ...], list[int]] = {}
        for r in np.flatnonzero(need.any(axis=1)).tolist():
            out.setdefault(tuple((first_hour + np.flatnonzero(need[r])).tolist()), []).append(r)
        return out

    def cut(self, n: int, start_ms: int, end_ms: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, set[int]]:
        """The blocks' samples in [start_ms, end_ms] as (timestamps, values, bounds, unsorted):
        series ``r`` (of ``n``, by rank) is ``bounds[r]:bounds[r + 1]``, its blocks' samples
        one after another; ``unsorted``: the series whose blocks overlap or come out of order
        there (to be merged). A block outside the range is skipped, one inside it taken whole,
        one across an end cut with one search (joined blocks: one search for them all)."""
        if self.joined is not None:
            return self._cut_joined(self.joined, n, start_ms, end_ms)
        useful = np.flatnonzero((self.first <= end_ms) & (self.last >= start_ms))
        lo_cut = (self.first[useful] < start_ms).tolist()
        hi_cut = (self.last[useful] > end_ms).tolist()
        ts_parts: list[np.ndarray] = []
        val_parts: list[np.ndarray] = []
        sizes = np.zeros(useful.size, dtype=np.int64)
        for j, k in enumerate(useful.tolist()):
            b_ts, b_vals = self.ts[k], self.values[k]
            if lo_cut[j] or hi_cut[j]:
                lo = int(b_ts.searchsorted(start_ms)) if lo_cut[j] else 0
                hi = int(b_ts.searchsorted(end_ms, "right")) if hi_cut[j] else b_ts.shape[0]
                b_ts, b_vals = b_ts[lo:hi], b_vals[lo:hi]
            ts_parts.append(b_ts)
            val_parts.append(b_vals)
            sizes[j] = b_ts.shape[0]
        bounds = np.zeros(n + 1, dtype=np.int64)
        if not ts_parts:
            return _NO_IDS, _NO_VALUES, bounds, set()
        rank = self.rank[useful]
        np.cumsum(np.bincount(rank, weights=sizes, minlength=n).astype(np.int64), out=bounds[1:])
        ts = np.concatenate(ts_parts)
        vals = np.concatenate(val_parts)
        # Where a series' block follows another of its blocks: its first sample must come after.
        starts = np.cumsum(sizes) - sizes
        follows = np.flatnonzero((rank[1:] == rank[:-1]) & (sizes[1:] > 0)) + 1
        follows = follows[starts[follows] > 0]
        bad = follows[ts[starts[follows]] <= ts[starts[follows] - 1]]
        return ts, vals, bounds, set(rank[bad].tolist())

    def _cut_joined(
        self, joined: _JoinedBlocks, n: int, start_ms: int, end_ms: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, set[int]]:
        """``cut`` of blocks kept joined: every block's first and last sample in the range
        found by one search each in the joined order (``_JoinedBlocks.keyed``), the samples
        taken at once. The same columns as ``cut`` (an empty block adds nothing)."""
        lo, hi = joined.bounds(start_ms, end_ms)
        sizes = hi - lo
        bounds = np.zeros(n + 1, dtype=np.int64)
        total = int(sizes.sum())
        if not total:
            return _NO_IDS, _NO_VALUES, bounds, set()
        np.cumsum(np.bincount(self.rank, weights=sizes, minlength=n).astype(np.int64), out=bounds[1:])
        starts = np.cumsum(sizes) - sizes
        at = np.repeat(lo - starts, sizes) + np.arange(total, dtype=np.int64)
        ts, vals = joined.timestamps(at), joined.values[at]
        # Where a series' (non-empty) block follows another of its blocks: its first sample must come after.
        some = np.flatnonzero(sizes)
        rank, first = self.rank[some], starts[some]
        follows = np.flatnonzero(rank[1:] == rank[:-1]) + 1
        bad = follows[ts[first[follows]] <= ts[first[follows] - 1]]
        return ts, vals, bounds, set(rank[bad].tolist())


# ``_JoinedBlocks.keyed``: a block's place in its set above these bits, a sample's time since the
# set's first below (a set of up to 2**20 blocks whose samples span less than 2**42 ms, ~139 years)
_KEY_SHIFT = 43
_KEY_SPAN = 1 << 42
_KEY_MAX_BLOCKS = 1 << 20


def _block_set_key(*columns: np.ndarray) -> bytes:
    """A read's blocks (their ranks, series ids, windows and write times, in order) as one key:
    equal keys, the same blocks as written at the same times, so the same samples."""
    return b"".join(np.ascontiguousarray(c, dtype=np.int64).tobytes() for c in columns)


@dataclass
class _JoinedBlocks:
    """The decoded samples of one read's set of sealed blocks, joined in that set's order:
    ``keyed`` holds each sample's block place and time (``_KEY_SHIFT``), so that it ascends
    over the whole set and one ``searchsorted`` finds every block's cut of a range."""

    keyed: np.ndarray  # int64: (block place << _KEY_SHIFT) + (timestamp - base)
    values: np.ndarray  # float64
    offsets: np.ndarray  # int64: block j's samples are offsets[j]:offsets[j + 1]
    base: int  # the set's first timestamp (ms)
    first: np.ndarray  # int64: each block's first timestamp (``_SealedBlocks.first``)
    last: np.ndarray  # int64: its last

    @property
    def nbytes(self) -> int:
        return int(self.keyed.nbytes + self.values.nbytes + self.offsets.nbytes)

    @classmethod
    def of(cls, blocks: _SealedBlocks) -> _JoinedBlocks | None:
        """``blocks``' samples joined (None: too many blocks, or samples too far apart, for ``keyed``)."""
        count = len(blocks.ts)
        if not count or count >= _KEY_MAX_BLOCKS:
            return None
        sizes = np.fromiter((t.shape[0] for t in blocks.ts), dtype=np.int64, count=count)
        offsets = np.zeros(count + 1, dtype=np.int64)
        np.cumsum(sizes, out=offsets[1:])
        ts = np.concatenate(blocks.ts)
        if not ts.size:
            return None
        base = int(ts.min())
        if int(ts.max()) - base >= _KEY_SPAN:
            return None
        keyed = ts - base
        keyed += np.repeat(np.arange(count, dtype=np.int64) << _KEY_SHIFT, sizes)
        keyed.flags.writeable = False
        values = np.concatenate(blocks.values)
        values.flags.writeable = False
        return cls(keyed, values, offsets, base, blocks.first, blocks.last)

    def bounds(self, start_ms: int, end_ms: int) -> tuple[np.ndarray, np.ndarray]:
        """Each block's samples in [start_ms, end_ms] as ``keyed`` positions [lo, hi)."""
        place = np.arange(self.offsets.size - 1, dtype=np.int64) << _KEY_SHIFT
        lo = self.keyed.searchsorted(place + min(max(start_ms - self.base, 0), _KEY_SPAN))
        hi = self.keyed.searchsorted(place + min(max(end_ms - self.base, -1), _KEY_SPAN), "right")
        return lo, np.maximum(hi, lo)

    def timestamps(self, at: np.ndarray) -> np.ndarray:
        """The timestamps of the samples at positions ``at``."""
        got: np.ndarray = self.keyed[at] & ((1 << _KEY_SHIFT) - 1)
        got += self.base
        return got


def _joined(parts: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """A series' parts (rows first, then its blocks; none empty) as one run by timestamp:
    usually they do not overlap and join sorted in order of their first samples; else merged,
    the first part's sample kept on an equal timestamp (rows win)."""
    joined = sorted(parts, key=lambda p: int(p[0][0]))
    ts = np.concatenate([p[0] for p in joined])
    vals = np.concatenate([p[1] for p in joined])
    if bool((ts[1:] > ts[:-1]).all()):
        return ts, vals
    ts = np.concatenate([p[0] for p in parts])
    vals = np.concatenate([p[1] for p in parts])
    order = np.argsort(ts, kind="stable")
    ts, vals = ts[order], vals[order]
    keep = np.ones(ts.size, dtype=bool)
    keep[1:] = ts[1:] != ts[:-1]
    return ts[keep], vals[keep]


async def _no_rows() -> list[SeriesData]:
    return []
