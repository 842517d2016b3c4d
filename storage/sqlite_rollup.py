"""The rollup store on SQLite: sealed blocks, 1m/1h rollup rows, checkpoints.

``SQLiteRollupMixin`` adds the ``RollupStore`` methods (see ``storage.rollup_job``) and
``select_rollup`` to ``storage.sqlite.SQLiteStorage``; ``SQLiteRollupStorage`` is the
combined class. Tables (created on first use, ``IF NOT EXISTS``):

- ``raw_groups``: one row per (target, part of its series, window start): the window's blocks
  of those series in one value (``storage.blocks.encode_group``, block version 5), what the
  seal writes (``write_plain_blocks``); a read finds a series' groups by its target and part;
- ``raw_blocks``: one row per (series, window start) with the block bytes, as the seal wrote
  them before groups (still read beside them; ``write_blocks`` writes there);
- ``rollup_1m_chunks`` / ``rollup_1h_chunks``: one row per (series, chunk start) holding
  the series' buckets of 6 hours (1m) or 8 days (1h) in column form (``c_ts`` and one
  ``c_<aggregate>`` blob each, ``storage.rollup_chunks``; 64-bit patterns, so NaN survives:
  SQLite would turn it into NULL), so a read selects only the aggregates asked for. A 24 h
  read of 800 series is then 4,000 rows, not 1.15 million. ``data`` holds the record form
  of chunks written before column form (empty since; reads take both). A database written by an
  earlier version, with one row per bucket in ``rollup_1m`` / ``rollup_1h``, is converted
  on first use;
- ``rollup_checkpoints``: (job, shard) -> end of the last window done (the late pass's
  cursors are checkpoints of job ``<job>:late``).

``late_marks_since`` reads the late marks ``storage.sqlite`` records in ``raw_late``.

Raw reads (``raw_samples``, under ``select`` and the job's window read) merge sealed blocks
with the raw rows still present, rows winning on equal timestamps: the seal deletes the raw
chunk rows it read once its blocks are written (``drop_sealed_raw``), except rows written to
since (a late sample), which the late pass reseals; and a window whose raw rows retention
dropped is still re-derivable from its block.
"""

from __future__ import annotations

import asyncio
import operator
import sqlite3
from collections.abc import Callable, Collection, Iterator, Sequence
from typing import TYPE_CHECKING, TypeVar

import numpy as np

from common.sequences import slices
from storage import frames as frames_codec
from storage import rollup_chunks as chunks
from storage.base import DAY_MS, HOUR_MS, Resolution, SeriesData, aggregate_names, bucket_values
from storage.blocks import (
    TIMES,
    VERSION_SHARED_TIMES,
    decode_block,
    decode_group,
    encode_blocks,
    encode_group,
    group_members,
    share_times,
    times_key,
    times_keys,
)
from storage.chunk_cache import DEFAULT_MAX_BYTES, ChunkCache, cache_of
from storage.matchers import Matcher, MatchOp, match_all, metric_name_of
from storage.model import Series
from storage.rollup import Rollup
from storage.rollup_job import RawWindow, RollupRows, RollupRowsList, SealedBlock
from storage.schema import DEFAULT_TTLS_S
from storage.sqlite import HAS_JSON, IN_LIST, SQLiteStorage, rebuild_with_rowid, series_from_row
from storage.sqlite_generations import (
    BLOCK_GENERATION_KEY,
    CHUNK_GENERATION_KEY,
    INDEX_GENERATION_KEY,
    bump_generation,
    read_generation,
)

T = TypeVar("T")
# Decoded sealed blocks a store keeps (``_merge_blocks``): a 2 h block of a 15 s series is
# ~7.7 KB decoded, so 800 series' blocks of four windows (the windows dashboard refreshes read).
BLOCK_CACHE_BYTES = 32 << 20
_BLOCK_ENTRY = ("block",)  # (the cache's column names of a decoded block)
_SERIES_START = operator.itemgetter(0, 1)

# A chunk table per resolution: ``data`` (record form, empty since column form) and the
# column-form blobs (``storage.rollup_chunks.STORED``).
_CHUNK_TABLE = """
CREATE TABLE IF NOT EXISTS {table} (
    series_id INTEGER NOT NULL,
    start_ts  INTEGER NOT NULL,
    data      BLOB NOT NULL,
    {columns},
    PRIMARY KEY (series_id, start_ts)
);
CREATE INDEX IF NOT EXISTS {table}_ts ON {table} (start_ts, series_id);
"""

# A rowid table: a row's payload stays in its page up to ~4 KB, where a WITHOUT ROWID table
# (an index B-tree, as written before) moves what exceeds ~1 KB to an overflow page of its
# own - a 2 h block of ~1 KB then took 1.75 bytes per sample on disk for 0.68 of data.
_BLOCKS_TABLE = """
CREATE TABLE IF NOT EXISTS raw_blocks (
    series_id INTEGER NOT NULL,
    start_ts  INTEGER NOT NULL,
    end_ts    INTEGER NOT NULL,
    count     INTEGER NOT NULL,
    first_ts  INTEGER NOT NULL,
    last_ts   INTEGER NOT NULL,
    data      BLOB NOT NULL,
    PRIMARY KEY (series_id, start_ts)
)"""
# (start_ts, end_ts): the probe whether any block overlaps a range (``_any_block``) reads the
# index alone, not a table page per block (a day's 9,600 blocks of 800 series: 5 ms a read).
_BLOCKS_INDEX = "CREATE INDEX IF NOT EXISTS raw_blocks_span ON raw_blocks (start_ts, end_ts)"
# (series_id, end_ts, start_ts): a series' blocks that end after a read's start, straight from
# the index with their rowids (``_merge_blocks``). Through the primary key a read stepped
# over a day of each series' blocks (``start_ts`` from a day before), each a table row to
# check ``end_ts``: 8 ms for a 5-minute read of 500 series, with this index 0.4 ms.
_BLOCKS_END_INDEX = "CREATE INDEX IF NOT EXISTS raw_blocks_end ON raw_blocks (series_id, end_ts, start_ts)"
# Timestamp frames the blocks of a window's target share, by key (``storage.blocks.share_times``,
# block version 4); ``start_ts``: the window's, for retention.
_BLOCK_TIMES_TABLE = """
CREATE TABLE IF NOT EXISTS raw_block_times (
    key       INTEGER PRIMARY KEY,
    start_ts  INTEGER NOT NULL,
    data      BLOB NOT NULL
) WITHOUT ROWID"""
# A window's blocks of a target's series, one row per part of them (``GROUP_PARTS``), grouped
# and compressed together (``storage.blocks.encode_group``): what the rollup job's seal writes
# since issue #20's short-window bytes (``write_plain_blocks``). ``ids``: the members (int64
# each, the value's order), before ``data`` so that reading them leaves the value's overflow
# pages unread. AUTOINCREMENT: a row id is never given twice, so decoded blocks are kept by it
# (``_group_blocks``) with no generation to bump when rows go.
_GROUPS_TABLE = """
CREATE TABLE IF NOT EXISTS raw_groups (
    id       INTEGER PRIMARY KEY AUTOINCREMENT,
    target   TEXT NOT NULL,
    part     INTEGER NOT NULL,
    start_ts INTEGER NOT NULL,
    end_ts   INTEGER NOT NULL,
    ids      BLOB NOT NULL,
    data     BLOB NOT NULL
)"""
# (target, end_ts, start_ts, part): a read's groups of its series' targets that end after its
# start, with their ids, from the index alone.
_GROUPS_END_INDEX = "CREATE INDEX IF NOT EXISTS raw_groups_end ON raw_groups (target, end_ts, start_ts, part)"
# (start_ts, end_ts, target, part): the probe whether any group overlaps a range, a window's
# groups (its seal, the job's window read) and retention.
_GROUPS_SPAN_INDEX = "CREATE INDEX IF NOT EXISTS raw_groups_span ON raw_groups (start_ts, end_ts, target, part)"
# Parts of a target's series a window's groups are cut into (``series_id % GROUP_PARTS``): the
# rollup job's default 16 shards seal one part each, so a seal writes whole groups; a read of
# one series decodes a frame of its part's group (``blocks.GROUP_FRAME_SERIES`` series).
GROUP_PARTS = 16
ROLLUP_SCHEMA = (
    _GROUPS_TABLE
    + ";\n"
    + _GROUPS_END_INDEX
    + ";\n"
    + _GROUPS_SPAN_INDEX
    + ";\n"
    + _BLOCK_TIMES_TABLE
    + ";\n"
    + _BLOCKS_TABLE
    + ";\n"
    + _BLOCKS_INDEX
    + ";\n"
    + _BLOCKS_END_INDEX
    + ";\nDROP INDEX IF EXISTS raw_blocks_ts"  # (the index on start_ts alone, before)
    + """;
CREATE INDEX IF NOT EXISTS series_metric ON series (metric);
CREATE TABLE IF NOT EXISTS rollup_checkpoints (
    job        TEXT NOT NULL,
    shard      INTEGER NOT NULL,
    window_end INTEGER NOT NULL,
    PRIMARY KEY (job, shard)
) WITHOUT ROWID;
"""
)

_TABLES = {Resolution.MINUTE: "rollup_1m_chunks", Resolution.HOUR: "rollup_1h_chunks"}
ROLLUP_SCHEMA += "".join(
    _CHUNK_TABLE.format(table=t, columns=", ".join(f"{c} BLOB" for c in chunks.STORED.values()))
    for t in _TABLES.values()
)
_ROW_TABLES = {Resolution.MINUTE: "rollup_1m", Resolution.HOUR: "rollup_1h"}  # before chunks
_COLS = ", ".join(chunks.RECORD_AGGREGATES)  # the row tables' aggregates
# Column-form chunk columns (``storage.rollup_chunks.encode_columns``); ``data`` is empty then.
CHUNK_COLUMNS = chunks.STORED
_CHUNK_COLS = ", ".join(CHUNK_COLUMNS.values())
_INSERT_CHUNK = (
    "INSERT OR REPLACE INTO {table} (series_id, start_ts, data, " + _CHUNK_COLS + ") VALUES (?,?,?"
    + ",?" * len(CHUNK_COLUMNS) + ")"
)


# ``series_id % shards`` as Python computes it for negative ids (params: shards, shards, shards).
_SHARD_OF = "((series_id % ?) + ?) % ?"
_NONE = (np.empty(0, dtype=np.int64), np.empty(0, dtype=np.float64))


_COLUMN_VALUES = operator.itemgetter(*CHUNK_COLUMNS)  # a chunk's column values in the tables' order


def _chunk_params(series_id: int, start: int, cols: dict[str, bytes]) -> tuple:
    return (series_id, start, b"", *_COLUMN_VALUES(cols))


def _add_chunk_columns(con: sqlite3.Connection) -> None:
    """Give chunk tables of an older database the column-form columns (its chunks stay in
    record form until rewritten: reads take both). In one write transaction, so two
    processes opening the file at once do not both add them."""
    with con:
        con.execute("BEGIN IMMEDIATE")
        for table in _TABLES.values():
            have = {r[1] for r in con.execute(f"PRAGMA table_info({table})")}
            for col in CHUNK_COLUMNS.values():
                if col not in have:
                    con.execute(f"ALTER TABLE {table} ADD COLUMN {col} BLOB")


def _table(resolution: Resolution) -> str:
    try:
        return _TABLES[resolution]
    except KeyError:
        raise ValueError(f"no rollup table for resolution {resolution.value}") from None


class SQLiteRollupMixin:
    """RollupStore methods for ``SQLiteStorage`` (uses its ``run_read`` / ``run_write``)."""

    _rollup_schema_ready: bool = False
    _blocks_exist: bool = False
    _blocks_versioned: bool = False  # (a rowid table: a block's rowid is its version)
    _blocks_by_end: bool = False  # (the ``raw_blocks_end`` index is there)
    _groups_exist: bool = False  # (the ``raw_groups`` table is there)
    # (days, shards), the index generation the scan saw, each shard's series ids
    _index_series_memo: tuple[tuple[int, int, int], str | None, dict[int, np.ndarray]] | None = None
    # Bytes of rollup chunks kept between reads (``storage.chunk_cache``; 0: none kept).
    rollup_cache_bytes: int = DEFAULT_MAX_BYTES
    # Bytes of decoded sealed blocks kept between raw reads (``_merge_blocks``; 0: none kept).
    block_cache_bytes: int = BLOCK_CACHE_BYTES

    if TYPE_CHECKING:  # SQLiteStorage's, the class this mixin is combined with

        async def run_read(self, fn: Callable[[sqlite3.Connection], T]) -> T: ...
        async def run_read_unmapped(self, fn: Callable[[sqlite3.Connection], T]) -> T: ...
        async def run_write(self, fn: Callable[[sqlite3.Connection], T]) -> T: ...

    async def _ensure_rollup_schema(self) -> None:
        if not self._rollup_schema_ready:

            def run(con: sqlite3.Connection) -> None:
                con.executescript(ROLLUP_SCHEMA)
                # (no block generation bump: a WITHOUT ROWID table gave no versions to keep blocks by)
                rebuild_with_rowid(
                    con, "raw_blocks", [_BLOCKS_TABLE, _BLOCKS_INDEX, _BLOCKS_END_INDEX], "start_ts, series_id"
                )
                _add_chunk_columns(con)
                _convert_row_tables(con)

            await self.run_write(run)
            self._rollup_schema_ready = True

    # -- RollupStore ------------------------------------------------------------------------

    async def read_raw_window(self, shard: int, shards: int, start_ms: int, end_ms: int) -> list[SeriesData]:
        w = await self.read_raw_window_arrays(shard, shards, start_ms, end_ms)

        def run(con: sqlite3.Connection) -> list[SeriesData]:
            b = w.bounds.tolist()
            return [
                SeriesData(self._series_by_id(con, sid), w.timestamps[b[i] : b[i + 1]], w.values[b[i] : b[i + 1]], Resolution.RAW)
                for i, sid in enumerate(w.ids.tolist())
            ]

        return await self.run_read(run)

    async def read_raw_window_arrays(
        self, shard: int, shards: int, start_ms: int, end_ms: int, seal_from_ms: int | None = None
    ) -> RawWindow:
        """``read_raw_window`` as one set of arrays (the job's input, ``RawWindowArrays``):
        the shard's series with samples in [start_ms, end_ms) from the day index and the
        blocks, their samples as ``raw_samples`` reads them (chunks, frames and blocks).

        ``seal_from_ms`` (the seal of the window [seal_from_ms, end_ms)): the frames older than
        ``end_ms`` are moved into chunks first, and the window gets the chunk rows of its
        spans as read (``sealed_rows``), for ``drop_sealed_raw`` once its blocks are written."""
        await self._ensure_rollup_schema()
        if seal_from_ms is not None:
            head = await self.run_read(
                lambda con: con.execute("SELECT 1 FROM raw_frames WHERE ts < ? LIMIT 1", (end_ms,)).fetchone()
            )
            if head is not None:
                await self.transpose_frames(end_ms)  # type: ignore[attr-defined]

        return await self.run_read_unmapped(
            lambda con: self._read_window_sync(con, (shard,), shards, start_ms, end_ms, seal_from_ms)
        )

    async def read_fresh_group(self, group: Sequence[int], shards: int, start_ms: int, end_ms: int) -> RawWindow:
        """``read_raw_window_arrays`` of several shards at once (``storage.rollup_job.FreshGroups``):
        the fresh pass reads each target's frames once for all of them, not once per shard."""
        await self._ensure_rollup_schema()
        return await self.run_read_unmapped(
            lambda con: self._read_window_sync(con, group, shards, start_ms, end_ms, None)
        )

    def _read_window_sync(
        self, con: sqlite3.Connection, group: Sequence[int], shards: int, start_ms: int, end_ms: int,
        seal_from_ms: int | None,
    ) -> RawWindow:
        """The window of the shards of ``group`` in one read transaction (one snapshot for the
        samples and the raw rows a seal records)."""
        own = not con.in_transaction
        if own:
            con.execute("BEGIN")
        try:
            return self._read_window_in(con, group, shards, start_ms, end_ms, seal_from_ms)
        finally:
            if own:
                con.execute("COMMIT")

    def _read_window_in(
        self, con: sqlite3.Connection, group: Sequence[int], shards: int, start_ms: int, end_ms: int,
        seal_from_ms: int | None,
    ) -> RawWindow:
        d0, d1 = start_ms // DAY_MS, (end_ms - 1) // DAY_MS
        by_shard = self._index_series(con, d0, d1, shards)
        ids = {sid for shard in group for sid in by_shard.get(shard, _NONE[0]).tolist()}
        # Series whose rows retention dropped with their day index still have blocks.
        ids.update(
            sid
            for (sid,) in con.execute(
                f"SELECT series_id FROM raw_blocks WHERE start_ts > ? AND start_ts < ?"
                f" AND {_SHARD_OF} IN ({','.join('?' * len(group))})",
                (start_ms - DAY_MS, end_ms, shards, shards, shards, *group),
            )
        )
        if self._has_groups(con):
            for (blob,) in con.execute(
                "SELECT ids FROM raw_groups WHERE start_ts > ? AND start_ts < ? AND end_ts > ?",
                (start_ms - DAY_MS, end_ms, start_ms),
            ):
                members = group_members(blob)
                ids.update(members[np.isin(members % shards, list(group))].tolist())
        order = sorted(ids)
        samples = self.raw_samples(con, order, start_ms, end_ms, keep_blocks=False)  # (read once, not kept)
        sealed: list[tuple[int, int, int]] = []
        if seal_from_ms is not None:
            for part in slices(order, IN_LIST):
                sealed += con.execute(
                    "SELECT series_id, start_ts, length(data) FROM raw_chunks"
                    f" WHERE series_id IN ({','.join('?' * len(part))}) AND start_ts >= ? AND start_ts < ?",
                    (*part, seal_from_ms, end_ms),
                ).fetchall()
        kept = [sid for sid in order if sid in samples]
        bounds = np.zeros(len(kept) + 1, dtype=np.int64)
        np.cumsum([samples[sid][0].size for sid in kept], out=bounds[1:])
        if not kept:
            return RawWindow(np.zeros(0, dtype=np.int64), bounds, *_NONE, sealed_rows=sealed)
        return RawWindow(
            np.array(kept, dtype=np.int64),
            bounds,
            np.concatenate([samples[sid][0] for sid in kept]).astype(np.int64, copy=False),
            np.concatenate([samples[sid][1] for sid in kept]).astype(np.float64, copy=False),
            sealed_rows=sealed,
        )

    def _index_series(self, con: sqlite3.Connection, d0: int, d1: int, shards: int) -> dict[int, np.ndarray]:
        """Per shard, the series with index rows (``series_day``) in days ``d0``..``d1``.

        The job reads the same days for each shard one after another (the fresh pass every
        minute, the seal every window), and a scan with the shard as a filter steps over every
        row of those days as a whole scan does (issue #20: 16 scans a minute, ~10 ms each, were
        most of the standalone process's rollup reads). So one scan serves every shard, pass
        after pass, while the index's generation (``INDEX_GENERATION_KEY``, bumped by any
        process's transaction that adds or drops index rows) stays."""
        key = (d0, d1, shards)
        generation = read_generation(con, INDEX_GENERATION_KEY)  # before the scan: a later commit moves it
        memo = self._index_series_memo
        if memo is not None and memo[0] == key and memo[1] == generation:
            return memo[2]
        rows = con.execute("SELECT series_id FROM series_day WHERE day BETWEEN ? AND ?", (d0, d1)).fetchall()
        ids = np.unique(np.array(rows, dtype=np.int64).reshape(-1))
        shard_of = ids % shards  # NumPy's modulo is Python's (a negative id's shard is not negative)
        order = np.argsort(shard_of, kind="stable")
        bounds = np.zeros(shards + 1, dtype=np.int64)
        np.cumsum(np.bincount(shard_of, minlength=shards), out=bounds[1:])
        ordered = ids[order]
        b = bounds.tolist()
        by_shard = {k: ordered[b[k] : b[k + 1]] for k in range(shards) if b[k + 1] > b[k]}
        self._index_series_memo = (key, generation, by_shard)
        return by_shard

    async def drop_sealed_raw(self, rows: Sequence[tuple[int, int, int]]) -> int:
        """Delete raw chunk rows a seal read, now in its blocks: ``(series id, span start,
        length)`` as ``read_raw_window_arrays`` recorded them. A row written to since (a late
        sample: appends only grow a row) is of another length and stays, for reads and the
        late pass's reseal. Returns the rows deleted."""
        if not rows:
            return 0

        def run(con: sqlite3.Connection) -> int:
            with con:
                con.execute("BEGIN IMMEDIATE")
                before = con.total_changes
                con.executemany(
                    "DELETE FROM raw_chunks WHERE series_id = ? AND start_ts = ? AND length(data) = ?", rows
                )
                return con.total_changes - before

        return await self.run_write(run)

    def raw_samples(
        self, con: sqlite3.Connection, series_ids: Sequence[int], start_ms: int, end_ms: int, keep_blocks: bool = True
    ) -> dict[int, tuple[np.ndarray, np.ndarray]]:
        """``SQLiteStorage.raw_samples`` (chunks and frames) with the sealed blocks merged in:
        the seal drops the raw chunk rows it sealed (``drop_sealed_raw``), so sealed windows
        are read from their blocks; a row written after the seal (a late sample) wins over
        the block's sample of the same timestamp. Blocks are kept decoded between reads
        (``_merge_blocks``) unless ``keep_blocks`` is false (the rollup job's window reads)."""
        own = not con.in_transaction
        if own:
            con.execute("BEGIN")
        try:
            out: dict[int, tuple[np.ndarray, np.ndarray]] = super().raw_samples(  # type: ignore[misc]
                con, series_ids, start_ms, end_ms
            )
            if series_ids and self._has_blocks(con):
                grouped: list[tuple[int, int, np.ndarray, np.ndarray, int, int]] = []
                if self._has_groups(con) and _any_group(con, start_ms, end_ms):
                    g_cache = None
                    if keep_blocks and self.block_cache_bytes > 0:
                        g_cache = cache_of(self, "raw_groups", self.block_cache_bytes)
                    grouped = _group_blocks(
                        con, series_ids, start_ms, end_ms, self._group_targets(con, series_ids), g_cache
                    )
                single = _any_block(con, start_ms, end_ms)
                if single or grouped:
                    cache = None
                    if single and keep_blocks and self._blocks_versioned and self.block_cache_bytes > 0:
                        cache = cache_of(self, "raw_blocks", self.block_cache_bytes)
                        cache.at_generation(read_generation(con, BLOCK_GENERATION_KEY))
                    _merge_blocks(
                        con, series_ids if single else (), start_ms, end_ms, out, cache, self._blocks_by_end, grouped
                    )
        finally:
            if own:
                con.execute("COMMIT")
        return out

    def _has_blocks(self, con: sqlite3.Connection) -> bool:
        if not self._blocks_exist:
            found = con.execute("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'raw_blocks'").fetchone()
            self._blocks_exist = found is not None
            # (a database of an earlier version, not converted yet, has no rowids there)
            self._blocks_versioned = found is not None and "WITHOUT ROWID" not in str(found[0]).upper()
        if self._blocks_exist and not self._blocks_by_end:  # (made by the rollup schema of this version)
            end = con.execute("SELECT 1 FROM sqlite_master WHERE type = 'index' AND name = 'raw_blocks_end'").fetchone()
            self._blocks_by_end = end is not None
        return self._blocks_exist

    def _has_groups(self, con: sqlite3.Connection) -> bool:
        if not self._groups_exist:  # (made by the rollup schema of this version)
            found = con.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'raw_groups'").fetchone()
            self._groups_exist = found is not None
        return self._groups_exist

    def _series_by_id(self, con: sqlite3.Connection, sid: int) -> Series:
        cache: dict[int, Series] = self._series_cache  # type: ignore[attr-defined]
        s = cache.get(sid)
        if s is None:
            row = con.execute("SELECT labels FROM series WHERE series_id = ?", (sid,)).fetchone()
            if row is None:
                return Series(sid, ())
            s = cache[sid] = series_from_row(sid, row[0])
        return s

    async def write_blocks(self, blocks: Sequence[SealedBlock]) -> None:
        await self._ensure_rollup_schema()
        # a window's blocks of one target share their timestamp frame: kept once, by key
        datas, frames = share_times([b.data for b in blocks])
        # (first_ts and last_ts, never read - a block's header has its first timestamp - are 0:
        # SQLite stores a 0 in no bytes, 14 fewer a row)
        rows = [(b.series_id, b.start_ms, b.end_ms, b.count, 0, 0, d) for b, d in zip(blocks, datas, strict=True)]
        starts = {times_key(d): b.start_ms for b, d in zip(blocks, datas, strict=True) if d[0] == VERSION_SHARED_TIMES}
        times = [(key, starts[key], frame) for key, frame in frames.items()]

        def run(con: sqlite3.Connection) -> None:
            with con:
                con.execute("BEGIN IMMEDIATE")
                con.executemany("INSERT OR IGNORE INTO raw_block_times (key, start_ts, data) VALUES (?,?,?)", times)
                con.executemany(
                    "INSERT OR REPLACE INTO raw_blocks (series_id, start_ts, end_ts, count, first_ts, last_ts, data)"
                    " VALUES (?,?,?,?,?,?,?)",
                    rows,
                )

        await self.run_write(run)
        TIMES.add(frames.items())  # (this process's reads of them need no lookup)

    async def write_plain_blocks(self, blocks: Sequence[SealedBlock]) -> int:
        """``write_blocks`` of plain blocks (``storage.blocks.VERSION_PLAIN``, the seal's for this
        store): grouped per (series' target, ``series_id % GROUP_PARTS``, window) and compressed
        together (``encode_group``), each group a row of ``raw_groups`` in place of what those
        series had in that window (their group's row, their rows of ``raw_blocks``). A group
        row of the window with other series too (a seal of other shards than ``GROUP_PARTS``
        cuts) keeps them: they join the new group. Returns the bytes stored."""
        if not blocks:
            return 0
        await self._ensure_rollup_schema()
        ids = sorted({b.series_id for b in blocks})
        targets = await self.run_read(lambda con: self._group_targets(con, ids))
        keyed: dict[tuple[str, int, int, int], list[SealedBlock]] = {}
        for b in blocks:
            keyed.setdefault((targets[b.series_id], b.series_id % GROUP_PARTS, b.start_ms, b.end_ms), []).append(b)
        loop = asyncio.get_running_loop()
        groups = await loop.run_in_executor(None, _encode_groups, keyed)

        def run(con: sqlite3.Connection) -> int:
            with con:
                con.execute("BEGIN IMMEDIATE")
                return _put_groups(con, keyed, groups)

        return await self.run_write(run)

    def _group_targets(self, con: sqlite3.Connection, series_ids: Sequence[int]) -> dict[int, str]:
        """Each series' target, the key of its groups ('' for a series without a ``series``
        row), from the targets the store keeps (``SQLiteStorage._series_target``: a series'
        target never changes), the missing ones read."""
        self._learn_targets(con, series_ids)  # type: ignore[attr-defined]  # (SQLiteStorage's, beside this mixin)
        known: dict[int, str] = self._series_target  # type: ignore[attr-defined]
        return {sid: known.get(sid, "") for sid in series_ids}

    async def write_rollups(self, resolution: Resolution, rows: Sequence[RollupRows]) -> None:
        await self._ensure_rollup_schema()
        table = _table(resolution)

        def run(con: sqlite3.Connection) -> None:
            with con:
                con.execute("BEGIN IMMEDIATE")
                # a RollupRowsList holds each series once (the job's rows of one window)
                if isinstance(rows, RollupRowsList) or len({r.series_id for r in rows}) == len(rows):
                    _put_chunks_many(con, table, resolution, rows)
                else:  # a series twice: each write merges into what the one before left
                    for r in rows:
                        _put_chunks(con, table, resolution, r.series_id, r.rollup)

        await self.run_write(run)

    async def write_fresh_minutes(self, rows: Sequence[RollupRows]) -> None:
        """Provisional 1m buckets of an open window (the job's fresh pass): a chunk per
        series keyed by its first bucket, replaced by the final chunk when the window closes."""
        await self._ensure_rollup_schema()
        table = _table(Resolution.MINUTE)

        def run(con: sqlite3.Connection) -> None:
            with con:
                con.execute("BEGIN IMMEDIATE")
                if isinstance(rows, RollupRowsList) or len({r.series_id for r in rows}) == len(rows):
                    _put_fresh_many(con, table, rows)
                    return
                for r in rows:  # a series twice: each write goes over what the one before left
                    for aligned, part in chunks.split(Resolution.MINUTE, r.rollup):
                        first = int(part.timestamps[0])
                        if first == aligned:  # the span's own chunk: merge as a final write would
                            _put_chunks(con, table, Resolution.MINUTE, r.series_id, part)
                            continue
                        con.execute(
                            _INSERT_CHUNK.format(table=table),
                            _chunk_params(r.series_id, first, chunks.encode_columns(Resolution.MINUTE, first, part)),
                        )

        await self.run_write(run)

    async def get_checkpoint(self, job: str, shard: int) -> int | None:
        await self._ensure_rollup_schema()

        def run(con: sqlite3.Connection) -> int | None:
            row = con.execute(
                "SELECT window_end FROM rollup_checkpoints WHERE job = ? AND shard = ?", (job, shard)
            ).fetchone()
            return int(row[0]) if row else None

        return await self.run_read(run)

    async def set_checkpoint(self, job: str, shard: int, window_end_ms: int) -> None:
        await self._ensure_rollup_schema()

        def run(con: sqlite3.Connection) -> None:
            con.execute(
                "INSERT INTO rollup_checkpoints (job, shard, window_end) VALUES (?,?,?)"
                " ON CONFLICT (job, shard) DO UPDATE SET window_end = max(window_end, excluded.window_end)",
                (job, shard, window_end_ms),
            )

        await self.run_write(run)

    async def late_marks_since(self, cursor_ms: int) -> list[tuple[int, int]]:
        """``(hour start ms, written at ms)`` of the hours whose newest late write is after ``cursor_ms``."""
        rows = await self.run_read(
            lambda con: con.execute(
                "SELECT hour, written_at FROM raw_late WHERE written_at > ?", (cursor_ms,)
            ).fetchall()
        )
        return [(int(h) * HOUR_MS, int(w)) for h, w in rows]

    # -- reads of rollups -------------------------------------------------------------------

    async def read_rollup(self, resolution: Resolution, series_id: int, start_ms: int, end_ms: int) -> Rollup:
        """Buckets of one series with start in [start_ms, end_ms]."""
        await self._ensure_rollup_schema()
        table, span = _table(resolution), chunks.chunk_span(resolution)

        def run(con: sqlite3.Connection) -> Rollup:
            rows = con.execute(
                f"SELECT start_ts, data, {_CHUNK_COLS} FROM {table} WHERE series_id = ?"
                " AND start_ts BETWEEN ? AND ? ORDER BY start_ts",
                (series_id, start_ms - span + 1, end_ms),
            ).fetchall()
            found = [(r[0], chunks.payload(r[1], chunks.COLUMNS, r[2:])) for r in rows]
            return chunks.read_series(found, start_ms, end_ms, resolution)

        return await self.run_read(run)

    async def select_rollup(
        self,
        matchers: Sequence[Matcher],
        start_ms: int,
        end_ms: int,
        resolution: Resolution,
        columns: Collection[str] | None = None,
    ) -> list[SeriesData]:
        """Rollup buckets of matching series in [start_ms, end_ms]: the aggregates
        ``columns`` (default all; ``values`` = ``last``, NaN when not read)."""
        await self._ensure_rollup_schema()
        table, span = _table(resolution), chunks.chunk_span(resolution)
        lo = start_ms - span + 1  # the first chunk that can hold a bucket starting at start_ms
        names = aggregate_names(columns)
        sql_cols = ", ".join(CHUNK_COLUMNS[n] for n in ("ts", *names))

        def run(con: sqlite3.Connection) -> list[SeriesData]:
            metric = metric_name_of(matchers)
            if metric is not None:
                ids = self._series_of_metric(con, metric)  # type: ignore[attr-defined]
            else:
                ids = [
                    sid
                    for (sid,) in con.execute(
                        f"SELECT DISTINCT series_id FROM {table} WHERE start_ts BETWEEN ? AND ?", (lo, end_ms)
                    )
                ]
            # (the series of ``metric`` match its name: only the other matchers are asked)
            rest = [m for m in matchers if not (m.name == "__name__" and m.op is MatchOp.EQ and m.value == metric)]
            wanted: dict[int, Series] = {}
            for sid in ids:
                s = self._series_by_id(con, sid)
                if s.labels and (not rest or match_all(rest, s.labels)):
                    wanted[sid] = s
            found = sorted(wanted)
            if self.rollup_cache_bytes > 0:
                rows = self._cached_chunk_rows(con, resolution, found, lo, end_ms, ("ts", *names), sql_cols)
            else:
                rows = []
                for part in slices(found, IN_LIST):
                    q = (
                        f"SELECT series_id, start_ts, data, {sql_cols} FROM {table}"
                        f" WHERE series_id IN ({','.join('?' * len(part))})"
                        " AND start_ts BETWEEN ? AND ? ORDER BY series_id, start_ts"
                    )
                    rows.extend(con.execute(q, (*part, lo, end_ms)))
            out = []
            for sid, (ts, cols) in chunks.read_many(rows, start_ms, end_ms, resolution, names).items():
                if ts.size:
                    out.append(SeriesData(wanted[sid], ts, bucket_values(cols, ts.size), resolution, cols))
            out.sort(key=lambda d: d.series.labels)
            return out

        return await self.run_read(run)

    def _cached_chunk_rows(
        self,
        con: sqlite3.Connection,
        resolution: Resolution,
        ids: list[int],
        lo: int,
        hi: int,
        names: tuple[str, ...],
        sql_cols: str,
    ) -> list[tuple]:
        """The chunk rows ``(series id, start, data, *names)`` of series ``ids`` starting in
        [lo, hi], in (series, start) order, through the store's chunk cache
        (``storage.chunk_cache``): the keys and row versions come from the primary key's
        index, only the chunks not kept at that version are read; the cache is dropped when
        the chunk generation moved (``chunk_rows_changed``). All in one read transaction, so
        no write between them goes unseen."""
        table = _table(resolution)
        cache = cache_of(self, resolution, self.rollup_cache_bytes)
        own = not con.in_transaction
        if own:
            con.execute("BEGIN")
        try:
            cache.at_generation(read_generation(con, CHUNK_GENERATION_KEY))
            keys: list[tuple[int, int, int]] = []
            for part in slices(ids, IN_LIST):
                q = (
                    f"SELECT series_id, start_ts, rowid FROM {table} WHERE series_id IN ({','.join('?' * len(part))})"
                    " AND start_ts BETWEEN ? AND ? ORDER BY series_id, start_ts"
                )
                keys.extend(con.execute(q, (*part, lo, hi)))
            rows, missing = cache.lookup(keys, names)
            at = {keys[i][2]: i for i in missing}
            for rowid, *row in _rows_by_rowid(con, table, f"series_id, start_ts, data, {sql_cols}", list(at)):
                rows[at[rowid]] = got = tuple(row)
                # (final chunks only: a provisional one is rewritten every minute)
                if not got[2] and not chunks.is_provisional(resolution, got[1]):
                    cache.store(rowid, names, got)
        finally:
            if own:
                con.execute("COMMIT")
        return rows

    async def delete_rollups_before(self, resolution: Resolution, ts_ms: int) -> int:
        """Retention of a rollup table (SQLite has no TTLs): drops the buckets starting
        before ``ts_ms`` (whole chunks, and the older part of a chunk that straddles it).
        Returns the number of buckets deleted."""
        await self._ensure_rollup_schema()
        table, span = _table(resolution), chunks.chunk_span(resolution)

        def run(con: sqlite3.Connection) -> int:
            deleted = 0
            with con:
                con.execute("BEGIN IMMEDIATE")
                old = f"SELECT start_ts, data, c_ts FROM {table} WHERE start_ts <= ?"
                for t, data, ts in con.execute(old, (ts_ms - span,)):
                    deleted += chunks.bucket_count(t, chunks.payload(data, ("ts",), (ts,)))
                con.execute(f"DELETE FROM {table} WHERE start_ts <= ?", (ts_ms - span,))
                chunk_rows_changed(con)
                straddling = con.execute(
                    f"SELECT series_id, start_ts, data, {_CHUNK_COLS} FROM {table} WHERE start_ts > ? AND start_ts < ?",
                    (ts_ms - span, ts_ms),
                ).fetchall()
                for row in straddling:
                    sid, t = row[0], row[1]
                    r = chunks.decode_payload(t, chunks.payload(row[2], chunks.COLUMNS, row[3:]))
                    keep = r.slice(ts_ms, t + span)
                    deleted += len(r) - len(keep)
                    if not len(keep):
                        con.execute(f"DELETE FROM {table} WHERE series_id = ? AND start_ts = ?", (sid, t))
                    elif len(keep) != len(r):
                        con.execute(
                            _INSERT_CHUNK.format(table=table),
                            _chunk_params(sid, t, chunks.encode_columns(resolution, t, keep)),
                        )
            return deleted

        return await self.run_write(run)

    async def apply_retention(self, now_ms: int) -> dict[str, int]:
        """Drop what is past its retention, with the horizons of the Cassandra TTLs
        (``storage.schema.DEFAULT_TTLS_S``): SQLite has no TTLs, so the rollup job calls
        this (``RollupJob.run_forever``). Returns what was deleted, per table."""
        ttl_ms = {k: v * 1000 for k, v in DEFAULT_TTLS_S.items()}
        return {
            "raw_chunks": await self.delete_raw_before(now_ms - ttl_ms["raw_recent"]),  # type: ignore[attr-defined]
            "raw_blocks": await self.delete_blocks_before(now_ms - ttl_ms["raw_blocks"]),
            "rollup_1m": await self.delete_rollups_before(Resolution.MINUTE, now_ms - ttl_ms["rollup_1m"]),
            "rollup_1h": await self.delete_rollups_before(Resolution.HOUR, now_ms - ttl_ms["rollup_1h"]),
        }

    async def delete_blocks_before(self, ts_ms: int) -> int:
        """Retention of sealed blocks: drop blocks whose window ended before ``ts_ms``."""
        await self._ensure_rollup_schema()

        def run(con: sqlite3.Connection) -> int:
            with con:
                con.execute("BEGIN IMMEDIATE")
                deleted: int = con.execute("DELETE FROM raw_blocks WHERE end_ts <= ?", (ts_ms,)).rowcount
                grouped = "FROM raw_groups WHERE start_ts < ? AND end_ts <= ?"  # (a block's start is before its end)
                deleted += int(con.execute(f"SELECT coalesce(sum(length(ids)), 0) / 8 {grouped}", (ts_ms, ts_ms)).fetchone()[0])
                con.execute(f"DELETE {grouped}", (ts_ms, ts_ms))
                # (a window is at most a day: a frame of one starting a day before serves no block left)
                con.execute("DELETE FROM raw_block_times WHERE start_ts <= ?", (ts_ms - DAY_MS,))
                if deleted:  # (a rowid may come back after a DELETE: decoded blocks kept are dropped)
                    bump_generation(con, BLOCK_GENERATION_KEY)
                return deleted

        return await self.run_write(run)


def chunk_rows_changed(con: sqlite3.Connection) -> None:
    """Bump the chunk generation (``storage.chunk_cache``), in the transaction of a statement
    that deletes or updates final chunk rows in place (``INSERT OR REPLACE`` needs none: it
    gives a row a rowid above every other). A ``DELETE`` of provisional chunks only needs none."""
    bump_generation(con, CHUNK_GENERATION_KEY)


def _put_chunks(con: sqlite3.Connection, table: str, resolution: Resolution, series_id: int, rollup: Rollup) -> None:
    """Write ``rollup``'s buckets into their chunks, merged with what the chunks hold, and
    drop the provisional chunks (the fresh pass's) these final buckets replace."""
    for start, part in chunks.split(resolution, rollup):
        row = con.execute(
            f"SELECT data, {_CHUNK_COLS} FROM {table} WHERE series_id = ? AND start_ts = ?", (series_id, start)
        ).fetchone()
        if row is not None:
            part = chunks.merge(chunks.decode_payload(start, chunks.payload(row[0], chunks.COLUMNS, row[1:])), part)
        con.execute(
            _INSERT_CHUNK.format(table=table),
            _chunk_params(series_id, start, chunks.encode_columns(resolution, start, part)),
        )
        if resolution is Resolution.MINUTE:  # (provisional chunks only: no chunk_rows_changed)
            con.execute(
                f"DELETE FROM {table} WHERE series_id = ? AND start_ts > ? AND start_ts <= ?",
                (series_id, start, int(part.timestamps[-1])),
            )


def _rows_by_rowid(con: sqlite3.Connection, table: str, columns: str, rowids: list[int]) -> Iterator[tuple]:
    """``(rowid, *columns)`` of the rows of ``table`` with these rowids (rows a ``ChunkCache``
    lookup missed), ``IN_LIST`` ids a statement."""
    for part in slices(rowids, IN_LIST):
        yield from con.execute(f"SELECT rowid, {columns} FROM {table} WHERE rowid IN ({','.join('?' * len(part))})", part)


def _any_block(con: sqlite3.Connection, start_ms: int, end_ms: int) -> bool:
    """Whether any block overlaps [start_ms, end_ms) (one probe of ``raw_blocks_span``): a read of
    the open window's recent minutes then skips a probe per series."""
    found = con.execute(
        "SELECT 1 FROM raw_blocks WHERE start_ts > ? AND start_ts < ? AND end_ts > ? LIMIT 1",
        (start_ms - DAY_MS, end_ms, start_ms),
    ).fetchone()
    return found is not None


def block_times(con: sqlite3.Connection, datas: Sequence[bytes]) -> dict[int, bytes]:
    """The timestamp frames the version-4 blocks among ``datas`` need (``storage.blocks.share_times``),
    by key: those the process keeps (``TIMES``), the rest read from ``raw_block_times`` and kept."""
    keys = times_keys(datas)
    if not keys:
        return {}
    out = TIMES.frames(keys)
    wanted = [k for k in keys if k not in out]
    for part in slices(wanted, IN_LIST):
        got = con.execute(
            f"SELECT key, data FROM raw_block_times WHERE key IN ({','.join('?' * len(part))})", part
        ).fetchall()
        out.update(got)
        TIMES.add(got)
    return out


def _merge_blocks(
    con: sqlite3.Connection,
    series_ids: Sequence[int],
    start_ms: int,
    end_ms: int,
    out: dict[int, tuple[np.ndarray, np.ndarray]],
    cache: ChunkCache | None = None,
    by_end: bool = False,
    grouped: Sequence[tuple[int, int, np.ndarray, np.ndarray, int, int]] = (),
) -> None:
    """Merge the samples in [start_ms, end_ms) of the blocks of ``series_ids`` (in
    ``raw_blocks``) and of ``grouped`` (``(series id, window start, timestamps, values, first
    ts, last ts)``, from ``raw_groups``: ``_group_blocks``) into ``out`` (rows' samples win on
    equal timestamps). A block holds one window of at most a day.

    With ``cache`` (a ``storage.chunk_cache.ChunkCache`` at the block generation), blocks are
    kept decoded by (series, window start) with their rowid as version (``INSERT OR REPLACE``
    gives a resealed block a rowid above every other; a ``DELETE`` bumps the generation): the
    keys come from the primary key's index, only blocks not kept are read and decoded. A
    dashboard refresh reads a few minutes of each series from the same 2 h blocks every time,
    and decoding 800 of them whole was ~30 ms of its ~40. ``by_end``: the ``raw_blocks_end``
    index is there (the blocks are found by it, else by the primary key)."""
    ids = list(series_ids)
    blocks: list = list(grouped)  # (series id, start, timestamps, values, first ts, last ts)
    for part in slices(ids, IN_LIST):
        marks = ",".join("?" * len(part))
        if by_end:  # (rows in index order, sorted below)
            where = f" FROM raw_blocks INDEXED BY raw_blocks_end WHERE series_id IN ({marks}) AND end_ts > ? AND start_ts < ?"
            params: tuple[int, ...] = (*part, start_ms, end_ms)
        else:
            where = f" FROM raw_blocks WHERE series_id IN ({marks}) AND start_ts > ? AND start_ts < ? AND end_ts > ?"
            params = (*part, start_ms - DAY_MS, end_ms, start_ms)
        if cache is None:
            got = con.execute("SELECT series_id, start_ts, data" + where, params).fetchall()
            times = block_times(con, [data for _, _, data in got])
            blocks += [(sid, start, *_decoded(data, times)) for sid, start, data in got]
        else:
            keys = con.execute("SELECT series_id, start_ts, rowid" + where, params).fetchall()
            kept, missing = cache.lookup(keys, _BLOCK_ENTRY)
            at = {keys[k][2]: k for k in missing}
            datas = list(_rows_by_rowid(con, "raw_blocks", "data", list(at)))
            times = block_times(con, [data for _, data in datas])
            for rowid, data in datas:
                entry_cols = _decoded(data, times)
                entry_cols[0].flags.writeable = entry_cols[1].flags.writeable = False  # (shared by the reads that find it)
                k = at[rowid]
                kept[k] = entry = (keys[k][0], keys[k][1], *entry_cols)
                cache.store(rowid, _BLOCK_ENTRY, entry, entry_cols[0].nbytes + entry_cols[1].nbytes)
            blocks += kept  # (every key's block read: one read transaction)
    blocks.sort(key=_SERIES_START)
    # Each block cut to the range before any join: a read at a window's edge (a panel's
    # step on it) touches the next block for a sample or none, and joining whole blocks
    # first copied both (~4 ms of a 10-minute read of 800 series). A block is cut by its
    # first and last timestamps where they tell (it lies outside the range, or the range
    # holds its start or its end): a refresh's read of 800 series' last minutes up to a
    # step on a window's edge took 4 searches a series, ~2 ms of its ~6.
    sid_at = 0  # (the series whose pieces are gathered: any until the first block)
    pieces: list[tuple[np.ndarray, np.ndarray]] = []
    for sid, _, b_ts, b_vals, first, last in blocks:
        if sid != sid_at:
            if pieces:
                _merge_pieces(sid_at, pieces, out)
            sid_at, pieces = sid, []
        if first >= end_ms or last < start_ms:
            continue
        lo = 0 if first >= start_ms else int(b_ts.searchsorted(start_ms))
        if last < end_ms:
            pieces.append((b_ts[lo:], b_vals[lo:]) if lo else (b_ts, b_vals))
        else:
            hi = int(b_ts.searchsorted(end_ms))
            if hi > lo:
                pieces.append((b_ts[lo:hi], b_vals[lo:hi]))
    if pieces:
        _merge_pieces(sid_at, pieces, out)


def _decoded(data: bytes, times: dict[int, bytes]) -> tuple[np.ndarray, np.ndarray, int, int]:
    """A block's (timestamps, values, first ts, last ts) (an empty block: a first after any
    range, so reads skip it)."""
    ts, vals = decode_block(data, times)
    if not ts.size:
        return ts, vals, 2**63 - 1, -(2**63)
    return ts, vals, int(ts[0]), int(ts[-1])


def _merge_pieces(sid: int, pieces: list[tuple[np.ndarray, np.ndarray]], out: dict[int, tuple[np.ndarray, np.ndarray]]) -> None:
    """A series' block pieces (in time order) merged into ``out`` (``_merge_blocks``)."""
    if len(pieces) == 1:
        b_ts, b_vals = pieces[0]
    else:
        b_ts, b_vals = np.concatenate([p[0] for p in pieces]), np.concatenate([p[1] for p in pieces])
    if not b_ts.size:
        return
    rows_of = out.get(sid)
    if rows_of is None or not rows_of[0].size:
        out[sid] = (b_ts, b_vals)
        return
    r_ts, r_vals = rows_of
    if int(r_ts[0]) > int(b_ts[-1]):  # rows after the sealed windows: a join
        out[sid] = (np.concatenate([b_ts, r_ts]), np.concatenate([b_vals, r_vals]))
        return
    out[sid] = frames_codec.merge_newer(b_ts, b_vals, r_ts, r_vals)


_NO_SAMPLES = (np.empty(0, dtype=np.int64), np.empty(0, dtype=np.float64))
_NO_SPAN = (2**63 - 1, -(2**63))  # (an empty block's first and last: after and before any range)
for _a in _NO_SAMPLES:
    _a.flags.writeable = False


def _group_blocks(
    con: sqlite3.Connection,
    series_ids: Sequence[int],
    start_ms: int,
    end_ms: int,
    targets: dict[int, str],
    cache: ChunkCache | None = None,
) -> list[tuple[int, int, np.ndarray, np.ndarray, int, int]]:
    """``(series id, window start, timestamps, values, first ts, last ts)`` of the grouped blocks (``raw_groups``)
    of ``series_ids`` that overlap [start_ms, end_ms): the groups of their targets' parts found
    by ``raw_groups_end`` alone, each group read once and only the frames holding the series
    asked for decompressed (``storage.blocks.decode_group``). With ``cache``, each series' block
    is kept decoded by (series, window start) with its group's id as version (ids are never
    given twice), a series a group does not hold as an empty entry, so a refresh reads no
    group again."""
    wanted: dict[tuple[str, int], list[int]] = {}
    for sid in series_ids:
        wanted.setdefault((targets[sid], sid % GROUP_PARTS), []).append(sid)
    names = sorted({t for t, _ in wanted})
    rows: list[tuple[int, str, int, int]] = []
    for part in slices(names, IN_LIST):
        rows += con.execute(
            "SELECT id, target, part, start_ts FROM raw_groups INDEXED BY raw_groups_end"
            f" WHERE target IN ({','.join('?' * len(part))}) AND end_ts > ? AND start_ts < ?",
            (*part, start_ms, end_ms),
        ).fetchall()
    keys = [(sid, start, gid) for gid, target, part_of, start in rows for sid in wanted.get((target, part_of), ())]
    if cache is None:
        got: list = [None] * len(keys)
        missing: Sequence[int] = range(len(keys))
    else:
        got, missing = cache.lookup(keys, _BLOCK_ENTRY)
    need: dict[int, list[int]] = {}
    for k in missing:
        need.setdefault(keys[k][2], []).append(k)
    for gid, ids_blob, data in _rows_by_rowid(con, "raw_groups", "ids, data", list(need)):
        ks = need[gid]
        decoded = decode_group(data, group_members(ids_blob), [keys[k][0] for k in ks])
        for k in ks:
            sid, start, _ = keys[k]
            b = decoded.get(sid)
            ts, vals = _NO_SAMPLES if b is None else (b.timestamps, b.values)
            vals.flags.writeable = False  # (shared by the reads that find it)
            got[k] = entry = (sid, start, ts, vals, *((int(ts[0]), int(ts[-1])) if ts.size else _NO_SPAN))
            if cache is not None:
                cache.store(gid, _BLOCK_ENTRY, entry, ts.nbytes + vals.nbytes + 64)
    return [g for g in got if g is not None and g[2].size]


def _any_group(con: sqlite3.Connection, start_ms: int, end_ms: int) -> bool:
    """Whether any group overlaps [start_ms, end_ms) (one probe of ``raw_groups_span``)."""
    found = con.execute(
        "SELECT 1 FROM raw_groups WHERE start_ts > ? AND start_ts < ? AND end_ts > ? LIMIT 1",
        (start_ms - DAY_MS, end_ms, start_ms),
    ).fetchone()
    return found is not None


def _encode_groups(keyed: dict[tuple[str, int, int, int], list[SealedBlock]]) -> dict[tuple[str, int, int, int], tuple[np.ndarray, bytes]]:
    """Each key's plain blocks as one group (``encode_group``: members in its order, value)."""
    return {key: encode_group([b.series_id for b in bs], [b.data for b in bs]) for key, bs in keyed.items()}


def _put_groups(
    con: sqlite3.Connection,
    keyed: dict[tuple[str, int, int, int], list[SealedBlock]],
    groups: dict[tuple[str, int, int, int], tuple[np.ndarray, bytes]],
) -> int:
    """``write_plain_blocks``' transaction: the encoded ``groups`` of ``keyed`` (target, part,
    window start, end) in place of those series' blocks in those windows. Returns the bytes stored."""
    for start in sorted({k[2] for k in keyed}):
        keys = {(k[0], k[1]): k for k in keyed if k[2] == start}
        if con.execute("SELECT 1 FROM raw_blocks WHERE start_ts = ? LIMIT 1", (start,)).fetchone() is not None:
            before = con.total_changes  # (per-series blocks, written before groups)
            con.executemany(
                "DELETE FROM raw_blocks WHERE series_id = ? AND start_ts = ?",
                [(b.series_id, start) for k in keys.values() for b in keyed[k]],
            )
            if con.total_changes != before:  # (a rowid may come back after a DELETE)
                bump_generation(con, BLOCK_GENERATION_KEY)
        targets = sorted({t for t, _ in keys})
        old: list[tuple[int, str, int, bytes]] = []
        for part in slices(targets, IN_LIST):
            old += con.execute(
                f"SELECT id, target, part, ids FROM raw_groups WHERE start_ts = ? AND target IN ({','.join('?' * len(part))})",
                (start, *part),
            ).fetchall()
        gone = []
        for gid, target, part_of, ids_blob in old:
            key = keys.get((target, part_of))
            if key is None:
                continue
            gone.append((gid,))
            members = group_members(ids_blob)
            new = {b.series_id for b in keyed[key]}
            extra = [m for m in members.tolist() if m not in new]
            if extra:  # series another seal wrote: they stay, in the new group
                data = con.execute("SELECT data FROM raw_groups WHERE id = ?", (gid,)).fetchone()[0]
                kept = decode_group(data, members, extra)
                ts = np.concatenate([kept[m].timestamps for m in extra])
                vals = np.concatenate([kept[m].values for m in extra])
                bounds = np.cumsum([0, *(len(kept[m]) for m in extra)])
                plain = encode_blocks(ts, vals, bounds, plain=True)
                keyed[key] = joined = keyed[key] + [
                    SealedBlock(m, start, key[3], len(kept[m]), 0, 0, d) for m, d in zip(extra, plain, strict=True)
                ]
                groups[key] = encode_group([b.series_id for b in joined], [b.data for b in joined])
        con.executemany("DELETE FROM raw_groups WHERE id = ?", gone)
    rows = [(k[0], k[1], k[2], k[3], ids.astype("<i8").tobytes(), data) for k, (ids, data) in groups.items()]
    page = int(con.execute("PRAGMA page_size").fetchone()[0])
    con.executemany(
        "INSERT INTO raw_groups (target, part, start_ts, end_ts, ids, data) VALUES (?,?,?,?,?,?)", _leaf_order(rows, page)
    )
    return sum(len(r[4]) + len(r[5]) for r in rows)


# Open pages ``_leaf_order`` tries a row on (first fit among them): bounds its work at many groups.
_LEAF_ORDER_PAGES = 64


def _leaf_order(rows: list[tuple[str, int, int, int, bytes, bytes]], page: int) -> list[tuple[str, int, int, int, bytes, bytes]]:
    """``rows`` of ``raw_groups`` in an order that fills the table's leaf pages. A row longer
    than a page keeps only part of it in its leaf page (SQLite: the rest in overflow pages of
    its own, full but the last one's remainder, which it keeps in the leaf when that fits):
    a part of 0.5 to 4 KB at a 4 KB page. Rows come in id order (AUTOINCREMENT), and SQLite
    starts a new page when the next row's part does not fit the last one, so in the seal's
    order a leaf page held 1.7 parts of ~1.8 KB on average, 40% of it unused (0.16 bytes per
    sample at ``bench/peers.py``'s window). In first-fit-decreasing order of those parts the
    pages are nearly full."""
    usable = page - 8  # (a leaf page's header)
    limit, least = page - 35, (page - 12) * 32 // 255 - 23  # SQLite's largest and least local part

    def cell(row: tuple[str, int, int, int, bytes, bytes]) -> int:
        size = len(row[0].encode()) + len(row[4]) + len(row[5]) + 25  # (the record: header, keys, values)
        if size <= limit:
            return size + 8  # (its length and rowid varints, its pointer)
        local = least + (size - least) % (page - 4)
        return (local if local <= limit else least) + 12  # (and the first overflow page's number)

    sizes = [cell(r) for r in rows]
    pages: list[list[int]] = []
    free: list[int] = []
    for i in sorted(range(len(rows)), key=lambda i: -sizes[i]):
        first = max(0, len(pages) - _LEAF_ORDER_PAGES)
        for k in range(first, len(pages)):
            if sizes[i] <= free[k]:
                pages[k].append(i)
                free[k] -= sizes[i]
                break
        else:
            pages.append([i])
            free.append(usable - sizes[i])
    return [rows[i] for p in pages for i in p]


def _put_chunks_many(con: sqlite3.Connection, table: str, resolution: Resolution, rows: Sequence[RollupRows]) -> None:
    """``_put_chunks`` of many series (each once), with a statement per group of chunks
    rather than three per chunk: the stored chunks they fall in are read per chunk start
    and group of series, the new buckets appended to them (or merged, when they do not
    all follow the stored ones), every chunk written by one ``executemany``."""
    flat = (rows.flat, rows.bounds) if isinstance(rows, RollupRowsList) else None
    pieces = chunks.encode_columns_many(resolution, [r.rollup for r in rows], flat)
    sids = [rows[p[0]].series_id for p in pieces]
    by_start: dict[int, list[int]] = {}
    for sid, p in zip(sids, pieces, strict=True):
        by_start.setdefault(p[1], []).append(sid)
    stored: dict[tuple[int, int], chunks.Payload] = {}
    for start, ids in by_start.items():
        for part in slices(ids, IN_LIST):
            q = (
                f"SELECT series_id, data, {_CHUNK_COLS} FROM {table}"
                f" WHERE start_ts = ? AND series_id IN ({','.join('?' * len(part))})"
            )
            for row in con.execute(q, (start, *part)):
                stored[(row[0], start)] = chunks.payload(row[1], chunks.COLUMNS, row[2:])
    params = []
    for sid, (_, start, _, cols) in zip(sids, pieces, strict=True):
        old = stored.get((sid, start))
        if old is not None:
            joined = chunks.append_columns(old, cols)
            if joined is None:
                merged = chunks.merge(chunks.decode_payload(start, old), chunks.decode_payload(start, cols))
                joined = chunks.encode_columns(resolution, start, merged)
            cols = joined
        params.append(_chunk_params(sid, start, cols))
    con.executemany(_INSERT_CHUNK.format(table=table), params)
    if resolution is Resolution.MINUTE:  # the provisional chunks these final buckets replace (no chunk_rows_changed:
        # start_ts > the span's aligned start, inside the span: never a final chunk)
        con.executemany(
            f"DELETE FROM {table} WHERE series_id = ? AND start_ts > ? AND start_ts <= ?",
            [(sid, p[1], p[2]) for sid, p in zip(sids, pieces, strict=True)],
        )


def _put_fresh_many(con: sqlite3.Connection, table: str, rows: Sequence[RollupRows]) -> None:
    """``write_fresh_minutes`` of many series (each once) with NumPy calls per column and one
    statement for all provisional chunks, not a few NumPy calls and statements per series
    (issue #20: a standalone process's fresh pass writes every series every minute): a chunk
    whose first bucket starts its span merges as a final write would (``_put_chunks_many``),
    any other is the provisional chunk keyed by its first bucket."""
    if isinstance(rows, RollupRowsList) and HAS_JSON:
        _put_fresh_groups(con, table, rows)
        return
    flat = (rows.flat, rows.bounds) if isinstance(rows, RollupRowsList) else None
    got = chunks.encode_columns_table(Resolution.MINUTE, [r.rollup for r in rows] if flat is None else (), flat)
    if got is None:
        return
    owners, starts, firsts, _lasts, columns = got
    sids = rows.ids[owners].tolist() if isinstance(rows, RollupRowsList) else [rows[o].series_id for o in owners]
    pieces = zip(sids, firsts, [b""] * len(sids), *columns, strict=True)
    if any(map(operator.eq, starts, firsts)):  # a piece starts its chunk span: merged
        aligned: list[RollupRows] = []
        params = []
        for start, piece in zip(starts, pieces, strict=True):
            if piece[1] == start:
                cols = dict(zip(chunks.COLUMNS, piece[3:], strict=True))
                aligned.append(RollupRows(piece[0], chunks.decode_payload(start, cols)))
            else:
                params.append(piece)
        _put_chunks_many(con, table, Resolution.MINUTE, aligned)
    else:
        params = list(pieces)
    con.executemany(_INSERT_CHUNK.format(table=table), params)


# Provisional chunks of many series by one statement per bucket count (``_put_fresh_groups``):
# the rows' (series id, first bucket) pairs as JSON, their columns sliced out of one blob in
# SQL. Per row through ``executemany``, binding 14 parameters cost 6-8 us a row, most of a
# fresh pass's write (issue #20).
_FRESH_MANY = (
    "INSERT OR REPLACE INTO {table} (series_id, start_ts, data, " + _CHUNK_COLS + ")"
    " SELECT json_extract(j.value, '$[0]'), json_extract(j.value, '$[1]'), x'', "
    + ", ".join(f"substr(?1, j.key * ?2 + {k} * ?3 + 1, ?3)" for k in range(len(CHUNK_COLUMNS)))
    + " FROM json_each(?4) AS j"
)


def _put_fresh_groups(con: sqlite3.Connection, table: str, rows: RollupRowsList) -> None:
    """``_put_fresh_many`` of a ``RollupRowsList``: the same rows, a statement per group of
    pieces with one bucket count (``chunks.encode_column_groups``)."""
    aligned: list[RollupRows] = []
    for g in chunks.encode_column_groups(Resolution.MINUTE, rows.flat, rows.bounds):
        sids = rows.ids[g.owners]
        own = g.firsts == g.starts  # a piece that starts its chunk span: merged as a final write is
        for i in np.flatnonzero(own).tolist():
            blob = g.values[i].tobytes()
            width = 8 * g.buckets
            cols = {name: blob[k * width : (k + 1) * width] for k, name in enumerate(chunks.COLUMNS)}
            aligned.append(RollupRows(int(sids[i]), chunks.decode_payload(int(g.starts[i]), cols)))
        rest = np.flatnonzero(~own)
        if not rest.size:
            continue
        values = g.values if rest.size == g.values.shape[0] else g.values[rest]
        pairs = ",".join(f"[{s},{f}]" for s, f in zip(sids[rest].tolist(), g.firsts[rest].tolist(), strict=True))
        width = 8 * g.buckets
        con.execute(_FRESH_MANY.format(table=table), (values.tobytes(), width * len(CHUNK_COLUMNS), width, f"[{pairs}]"))
    if aligned:
        _put_chunks_many(con, table, Resolution.MINUTE, aligned)


def _convert_row_tables(con: sqlite3.Connection) -> None:
    """Pack the one-row-per-bucket tables of a database written before chunks, then drop them."""
    present = {n for (n,) in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    for resolution, old in _ROW_TABLES.items():
        if old not in present:
            continue
        with con:
            con.execute("BEGIN IMMEDIATE")
            ids = [sid for (sid,) in con.execute(f"SELECT DISTINCT series_id FROM {old}")]
            for sid in ids:
                rows = con.execute(
                    f"SELECT ts, {_COLS} FROM {old} WHERE series_id = ? ORDER BY ts", (sid,)
                ).fetchall()
                _put_chunks(con, _table(resolution), resolution, sid, _rollup_from_rows(rows))
            con.execute(f"DROP TABLE {old}")


def _rollup_from_rows(rows: list[tuple[int, ...]]) -> Rollup:
    if not rows:
        return Rollup.empty()
    arr = np.array(rows, dtype=np.int64)
    return Rollup.from_columns(
        arr[:, 0].copy(), {name: arr[:, i + 1].copy().view(np.float64) for i, name in enumerate(chunks.RECORD_AGGREGATES)}
    )


class SQLiteRollupStorage(SQLiteRollupMixin, SQLiteStorage):
    """SQLite storage with the rollup store (blocks, 1m/1h rows, checkpoints)."""


def sealed_blocks(con: sqlite3.Connection) -> list[tuple[int, int, int, np.ndarray, np.ndarray]]:
    """Every sealed block in a SQLite file as ``(series id, window start, end, timestamps,
    values)`` in (series, start) order: the rows of ``raw_blocks`` and the members of the
    groups of ``raw_groups`` (for tests and tools; a store reads them through ``raw_samples``)."""
    out: list[tuple[int, int, int, np.ndarray, np.ndarray]] = []
    singles = con.execute("SELECT series_id, start_ts, end_ts, data FROM raw_blocks").fetchall()
    times = block_times(con, [row[3] for row in singles])
    out += [(sid, start, end, *decode_block(data, times)) for sid, start, end, data in singles]
    for start, end, ids_blob, data in con.execute("SELECT start_ts, end_ts, ids, data FROM raw_groups"):
        for sid, b in decode_group(data, group_members(ids_blob)).items():
            out.append((sid, start, end, b.timestamps, b.values))
    out.sort(key=operator.itemgetter(0, 1))
    return out
