"""Embedded SQLite backend of the storage interface (standalone mode).

It keeps the logical schema of the Cassandra backend at small scale:

- ``series``: one row per series (id, metric, labels as JSON, target);
- ``series_day``: the series index, one row per (day, metric, series) with data that day,
  so a selection by metric name and time range reads only the days asked for;
- ``raw_chunks``: one row per (series, 5-minute span) holding that span's samples as
  16-byte records (timestamp, value's 64-bit pattern) in the order written. A write appends
  to the row in SQL (``data || excluded.data``), so it costs what a row per sample cost,
  while a read steps over 20 times fewer rows at a 15 s scrape: SQLite's per-row work
  made a 10-minute read of 800 series 25 ms and an hour's 90 ms. A database written with
  the row-per-sample ``raw_samples`` table is converted when opened;
- ``raw_frames`` / ``raw_layouts``: the head of the write path (issue #20). A batch's
  samples are grouped by timestamp; a group of at least ``frame_min_samples`` that is not
  late becomes ONE row per (target, ts) holding the values in the order of a layout
  (``storage.frames``), the layout's series ids written once per layout. Other groups keep
  the per-series upsert into ``raw_chunks``. The writer transposes closed 5-minute spans
  of frames into ``raw_chunks`` in bulk (``transpose_frames``), and reads merge what is
  still in frames (``raw_samples``), so every reader of raw chunks sees every sample;
- ``raw_late``: one row per hour that got a late write (samples older than
  ``late_after_ms`` when written: a spool replay, a backfill) with the time of the newest
  such write, like Cassandra's ``raw_late``; the rollup job reseals those windows;
- rollup tables are added by the rollup job's schema.

Floats are stored as their 64-bit patterns, so NaN payloads such as stale markers survive
bit for bit (SQLite itself would turn NaN into NULL). All SQL runs on
dedicated threads - one writer, one reader - over a WAL database, never on the loop (a
second reader measured no faster: the reads' NumPy work holds the GIL). Every write
transaction (here and in ``sqlite_rollup``) begins ``IMMEDIATE``: it takes the write lock
first and waits out another process's write (the connection's timeout). A deferred
``BEGIN`` reads first, and in WAL mode its first write then fails at once ("database is
locked") if another process on the file (an alerter, a web process) committed meanwhile.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Collection, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Self, TypeVar

import numpy as np
from cachetools import LRUCache

from common.sequences import slices
from storage import frames as frames_codec
from storage.base import (
    DAY_MS,
    HOUR_MS,
    FlatSamples,
    Resolution,
    RollupReader,
    SeriesData,
    Storage,
    StorageError,
)
from storage.matchers import Matcher, MatchOp, match_all, metric_name_of
from storage.model import LayoutSeries, SampleBatch, Series, same_series
from storage.sqlite_generations import INDEX_GENERATION_KEY, bump_generation, read_generation

T = TypeVar("T")
log = logging.getLogger("ringmon.storage.sqlite")
# Python's sqlite3 binds int, float, str and bytearray parameters directly, but looks every
# ``bytes`` parameter up as something to adapt (a failed ``__adapt__``/``__conform__``
# attribute lookup each: ~0.4 us). An identity adapter registered for ``bytes`` is found at
# once (the same object is bound as the blob it was): a provisional chunk row of 11 blobs
# bound in 6 us instead of 8 (issue #20). Process-wide, and the same for every user.
sqlite3.register_adapter(bytes, bytes)
LOOKUP_MEMO_ENTRIES = 64  # series lookups kept (``SQLiteStorage._lookup_series``)
IN_LIST = 500  # ids per ``IN (...)`` (SQLite's default limit on host parameters is 999)
MMAP_BYTES = 1 << 30
RAW_CHUNK_MS = 5 * 60_000
RAW_RECORD = np.dtype([("ts", "<i8"), ("bits", "<i8")])

# A rowid table (issue #20): its ~1 KB rows go to the end of the table, in the order written,
# and only the (series_id, start_ts) index takes an entry in place. As a WITHOUT ROWID table
# (before) every series' rows sat together in the table itself, so each 5-minute
# transposition put a 1 KB row into a different, mostly full page per series: writing 2 h of
# spans cost 47 us a row on average (0.19 s -> 1.7 s per 25,000 rows as the table grew), as
# a rowid table 12 us (flat 0.15-0.5 s), and 800 series' hour read in 18 ms instead of 23.
CHUNKS_TABLE = """
CREATE TABLE IF NOT EXISTS raw_chunks (
    series_id INTEGER NOT NULL,
    start_ts  INTEGER NOT NULL,
    data      BLOB NOT NULL,
    PRIMARY KEY (series_id, start_ts)
)"""
SCHEMA = CHUNKS_TABLE + """;
CREATE TABLE IF NOT EXISTS series (
    series_id INTEGER PRIMARY KEY,
    metric    TEXT NOT NULL,
    labels    TEXT NOT NULL,
    target    TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS series_day (
    day       INTEGER NOT NULL,
    metric    TEXT NOT NULL,
    series_id INTEGER NOT NULL,
    PRIMARY KEY (day, metric, series_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS raw_late (
    hour       INTEGER PRIMARY KEY,
    written_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS raw_frames (
    target    TEXT NOT NULL,
    ts        INTEGER NOT NULL,
    layout_id INTEGER NOT NULL,
    data      BLOB NOT NULL,
    PRIMARY KEY (target, ts)
);
CREATE INDEX IF NOT EXISTS raw_frames_ts ON raw_frames (ts);
CREATE TABLE IF NOT EXISTS raw_layouts (
    target     TEXT NOT NULL,
    layout_id  INTEGER NOT NULL,
    series_ids BLOB NOT NULL,
    seen_ms    INTEGER NOT NULL,
    PRIMARY KEY (target, layout_id)
);
INSERT OR IGNORE INTO meta (key, value) VALUES ('schema_version', '2');
UPDATE meta SET value = '2' WHERE key = 'schema_version' AND CAST(value AS INTEGER) < 2;
"""
SCHEMA_VERSION = 2
FOREVER_MS = 2**62
LAYOUT_REASSERT_MS = 3_600_000  # a writer re-dates the layouts it uses this often (retention keeps them)
CACHE_LIMIT = 20_000  # layouts cached per store before the caches start over
# Series lookups (matchers, days) kept while the index's generation in ``meta`` stays
# (``storage.sqlite_generations``: any process that adds or drops index rows bumps it).
LOOKUP_CACHE = 256
FRAME_TARGETS = 300  # targets per frame read (3 parameters each, under SQLite's 999)
WHOLE_FRAME = 1 << 30  # substr()'s length for a whole frame
READ_LAYOUTS = 4  # layouts per target a read cuts frames by (a target's frames change layout rarely)
# Chunk appends a transposition gathers and sorts by (series, span) before writing them: in
# key order the chunk table's B-tree pages are visited once each (~10 MB of rows at a time).
TRANSPOSE_ROWS = 10_000
UPSERT_FRAME = (
    "INSERT INTO raw_frames (target, ts, layout_id, data) VALUES (?,?,?,?)"
    " ON CONFLICT (target, ts) DO UPDATE SET data = excluded.data WHERE layout_id = excluded.layout_id"
)
UPSERT_LAYOUT = (
    "INSERT INTO raw_layouts (target, layout_id, series_ids, seen_ms) VALUES (?,?,?,?)"
    " ON CONFLICT (target, layout_id) DO UPDATE SET seen_ms = max(seen_ms, excluded.seen_ms)"
)


def _floats_to_bits(values: Sequence[float]) -> list[int]:
    bits: list[int] = np.asarray(values, dtype=np.float64).view(np.int64).tolist()
    return bits


def series_from_row(series_id: int, labels_json: str) -> Series:
    """A ``series`` table row as a Series (labels are stored as a JSON list of pairs)."""
    return Series(series_id, tuple(tuple(p) for p in json.loads(labels_json)))


APPEND_RAW = (
    "INSERT INTO raw_chunks (series_id, start_ts, data) VALUES (?,?,?)"
    " ON CONFLICT (series_id, start_ts) DO UPDATE SET data = CAST(data || excluded.data AS BLOB)"
)


def raw_chunk_rows(series_ids: Sequence[int], ts: Sequence[int], bits: Sequence[int]) -> list[tuple[int, int, bytes]]:
    """``(series id, span start, records)`` rows for ``APPEND_RAW``: one per series and span."""
    groups: dict[tuple[int, int], list[int]] = {}
    for k, (sid, t) in enumerate(zip(series_ids, ts, strict=True)):
        groups.setdefault((sid, t - t % RAW_CHUNK_MS), []).append(k)
    out = []
    for (sid, start), idx in groups.items():
        rec = np.empty(len(idx), dtype=RAW_RECORD)
        rec["ts"] = [ts[k] for k in idx]
        rec["bits"] = [bits[k] for k in idx]
        out.append((sid, start, rec.tobytes()))
    return out


def samples_of(blobs: Sequence[bytes], start_ms: int, end_ms: int) -> tuple[np.ndarray, np.ndarray]:
    """``(timestamps, values)`` in [start_ms, end_ms) of one series' raw chunks (in span
    order). Records are kept in the order written: a sample written out of order, or
    written again (a spool replay), is put in place here, the later write of a timestamp
    winning as a replaced row would."""
    data = blobs[0] if len(blobs) == 1 else b"".join(blobs)
    rec = np.frombuffer(data, dtype=RAW_RECORD)
    ts = rec["ts"]
    if ts.size > 1 and not bool(np.all(ts[1:] > ts[:-1])):
        order = np.argsort(ts, kind="stable")
        ordered = ts[order]
        latest = np.ones(ordered.size, dtype=bool)
        latest[:-1] = ordered[1:] != ordered[:-1]
        rec = rec[order[latest]]
        ts = rec["ts"]
    lo = int(np.searchsorted(ts, start_ms, "left"))
    hi = int(np.searchsorted(ts, end_ms, "left"))
    return ts[lo:hi].copy(), rec["bits"][lo:hi].copy().view(np.float64)


def raw_samples_of(
    con: sqlite3.Connection, series_ids: Sequence[int], start_ms: int, end_ms: int
) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """Raw samples in [start_ms, end_ms) of each of ``series_ids`` that has some: one
    statement per ``IN_LIST`` series, reading the spans that overlap the range. The chunks
    of those series are decoded as one array (a refresh reads 800 series' last minutes: per
    series NumPy calls would cost more than SQLite), so a read holds at most one group's
    copies at once; only a series with samples written out of order goes through
    ``samples_of`` on its own."""
    out: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    ids = list(series_ids)
    for part in slices(ids, IN_LIST):
        q = (
            f"SELECT series_id, data FROM raw_chunks WHERE series_id IN ({','.join('?' * len(part))})"
            " AND start_ts > ? AND start_ts < ? ORDER BY series_id, start_ts"
        )
        rows = con.execute(q, (*part, start_ms - RAW_CHUNK_MS, end_ms)).fetchall()
        if rows:
            _decode_group(rows, start_ms, end_ms, out)
    return out


def _decode_group(
    rows: list[tuple[int, bytes]], start_ms: int, end_ms: int, out: dict[int, tuple[np.ndarray, np.ndarray]]
) -> None:
    """``raw_samples_of`` for one group's ``(series id, chunk)`` rows, in series order."""
    sids = [r[0] for r in rows]
    rec = np.frombuffer(b"".join(r[1] for r in rows), dtype=RAW_RECORD)
    sizes = np.fromiter((len(r[1]) for r in rows), dtype=np.int64, count=len(rows)) // RAW_RECORD.itemsize
    owner = np.repeat(np.asarray(sids, dtype=np.int64), sizes)
    ts = rec["ts"]
    unordered = (owner[1:] == owner[:-1]) & (ts[1:] <= ts[:-1])
    keep = (ts >= start_ms) & (ts < end_ms)
    redo = np.unique(owner[1:][unordered]).tolist() if unordered.any() else []
    if redo:
        keep &= ~np.isin(owner, redo)
    owner, ts, vals = owner[keep], ts[keep], rec["bits"][keep].view(np.float64)
    if owner.size:
        bounds = [0, *(np.flatnonzero(owner[1:] != owner[:-1]) + 1).tolist(), owner.size]
        for a, b in zip(bounds[:-1], bounds[1:], strict=True):
            out[int(owner[a])] = (ts[a:b], vals[a:b])
    for sid in redo:
        ts_one, vals_one = samples_of([r[1] for r in rows if r[0] == sid], start_ms, end_ms)
        if ts_one.size:
            out[sid] = (ts_one, vals_one)


def rebuild_with_rowid(con: sqlite3.Connection, table: str, create: Sequence[str], order: str) -> None:
    """Rebuild ``table``, when an older database wrote it as a WITHOUT ROWID table, as the
    rowid table the statements ``create`` make (the table, then its indexes), its rows copied
    in ``order``: once, in one write transaction (a second process opening the file waits,
    then finds it done)."""
    with con:
        con.execute("BEGIN IMMEDIATE")
        row = con.execute("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ?", (table,)).fetchone()
        if row is None or "WITHOUT ROWID" not in row[0].upper():
            return
        log.info("rebuilding %s as a rowid table (once)", table)
        con.execute(f"ALTER TABLE {table} RENAME TO {table}_before")
        con.execute(create[0])
        con.execute(f"INSERT INTO {table} SELECT * FROM {table}_before ORDER BY {order}")
        con.execute(f"DROP TABLE {table}_before")  # and its indexes
        for ddl in create[1:]:
            con.execute(ddl)


def _convert_raw_samples(con: sqlite3.Connection) -> None:
    """Pack the row-per-sample ``raw_samples`` table of an older database into raw chunks."""
    if con.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'raw_samples'").fetchone() is None:
        return
    started = time.monotonic()
    con.execute("BEGIN IMMEDIATE")
    try:
        ids = [sid for (sid,) in con.execute("SELECT DISTINCT series_id FROM raw_samples")]
        log.info("converting the raw samples of %d series to raw chunks (once, in one transaction)", len(ids))
        for sid in ids:
            rows = con.execute("SELECT ts, value FROM raw_samples WHERE series_id = ? ORDER BY day, ts", (sid,)).fetchall()
            con.executemany(
                APPEND_RAW, raw_chunk_rows([sid] * len(rows), [r[0] for r in rows], [r[1] for r in rows])
            )
        con.execute("DROP TABLE raw_samples")
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise
    log.info("raw samples of %d series converted in %.1f s", len(ids), time.monotonic() - started)


@dataclass(slots=True)
class _LayoutState:
    """What a writer knows of one of its targets' layouts: whether it fits a frame, when
    it last dated its row, the day its series were last indexed."""

    ok: bool
    asserted_ms: int
    day: int = -1


@dataclass(slots=True)
class _FrameCut:
    """The bytes a read takes of one target's frames: ``length`` bytes from column ``first``
    (``WHOLE_FRAME``: all), and per known layout the series of ``wanted`` it holds with their
    columns (``frames.LayoutIndex.positions``); frames of another layout are read again whole."""

    wanted: np.ndarray
    first: int
    length: int
    cols: dict[int, tuple[np.ndarray, np.ndarray]]
    widths: dict[int, int]  # per known layout, the bytes of the cut of one of its frames


@dataclass(slots=True)
class _Frame:
    """One timestamp group of a batch planned as a frame."""

    ts: int
    rows: list[int] | None  # positions in the batch (None: all of it)
    ids: np.ndarray  # series ids in layout order
    layout: int
    state: _LayoutState | None


def _ts_groups(timestamps: list[int]) -> dict[int, list[int] | None]:
    """Positions per timestamp (None: every sample has the first one, a scrape's usual case)."""
    t0 = timestamps[0]
    if timestamps.count(t0) == len(timestamps):
        return {t0: None}
    groups: dict[int, list[int] | None] = {}
    for k, t in enumerate(timestamps):
        rows = groups.setdefault(t, [])
        assert rows is not None
        rows.append(k)
    return groups


# A transposition's chunk appends of many series at once (``_ChunkAppends``): one statement per
# span and record count for the rows of many targets, their series ids as a JSON array and
# their records as one blob sliced in SQL, not a statement step (bound in Python, the GIL
# released and taken again) per row.
APPEND_RAW_MANY = (
    "INSERT INTO raw_chunks (series_id, start_ts, data)"
    " SELECT j.value, ?1, substr(?2, j.key * ?3 + 1, ?3) FROM json_each(?4) AS j WHERE true"
    " ON CONFLICT (series_id, start_ts) DO UPDATE SET data = CAST(data || excluded.data AS BLOB)"
)


def _sqlite_has_json() -> bool:
    """Whether this SQLite has ``json_each`` (built in since 3.38; an option before)."""
    con = sqlite3.connect(":memory:")
    try:
        con.execute("SELECT count(*) FROM json_each('[1]')").fetchone()
        return True
    except sqlite3.Error:
        return False
    finally:
        con.close()


HAS_JSON = _sqlite_has_json()


def json_ints(values: np.ndarray) -> str:
    """Integers as a JSON array (for ``json_each``)."""
    return "[" + ",".join(map(str, values.tolist())) + "]"


@dataclass(slots=True)
class _ChunkAppends:
    """Chunk appends gathered by a transposition: ``pieces`` of (span start, series ids,
    records: a row of ``RAW_RECORD``s per series, all of one length) and single ``rows``
    ``(series id, span start, records)`` (a series missing from some frames of a span)."""

    pieces: list[tuple[int, np.ndarray, np.ndarray]] = field(default_factory=list)
    rows: list[tuple[int, int, bytes]] = field(default_factory=list)
    size: int = 0  # chunk rows gathered

    def add(self, start: int, ids: np.ndarray, rec: np.ndarray) -> None:
        if ids.size:
            self.pieces.append((start, ids, rec))
            self.size += ids.size

    def write(self, con: sqlite3.Connection) -> None:
        """Append them all, in (series, span) order per statement: the chunk table's index
        pages are then visited in key order, once each."""
        groups: dict[tuple[int, int], list[tuple[np.ndarray, np.ndarray]]] = {}
        for start, ids, rec in self.pieces:
            groups.setdefault((start, rec.shape[1]), []).append((ids, rec))
        rows = self.rows
        for (start, width), parts in sorted(groups.items()):
            ids = parts[0][0] if len(parts) == 1 else np.concatenate([p[0] for p in parts])
            rec = parts[0][1] if len(parts) == 1 else np.concatenate([p[1] for p in parts])
            order = np.argsort(ids, kind="stable")
            ids, rec = ids[order], rec[order]
            if not HAS_JSON:
                rows = rows + [(sid, start, rec[c].tobytes()) for c, sid in enumerate(ids.tolist())]
                continue
            con.execute(APPEND_RAW_MANY, (start, rec.tobytes(), width * RAW_RECORD.itemsize, json_ints(ids)))
        if rows:
            con.executemany(APPEND_RAW, sorted(rows))


class SQLiteStorage(Storage):
    """Storage in one SQLite file. ``SQLiteStorage.open(path)`` creates it if needed.

    ``now_ms`` (default: the wall clock) dates late marks; ``late_after_ms`` as on Cassandra.
    """

    late_after_ms: int = 60_000
    # Frames (see the module docstring): a timestamp group of at least ``frame_min_samples``
    # becomes a frame; the writer transposes the frames older than a whole ``frame_span_ms``
    # that ended ``frame_grace_ms`` ago, at most once per ``frame_span_ms``.
    frame_min_samples: int = frames_codec.FRAME_MIN_SAMPLES
    frame_span_ms: int = RAW_CHUNK_MS
    frame_grace_ms: int = 60_000

    def __init__(self, path: str | Path, now_ms: Callable[[], int] | None = None) -> None:
        self.path = str(path)
        self._now_ms = now_ms
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="sqlite-w")
        self._reader = ThreadPoolExecutor(1, thread_name_prefix="sqlite-r")
        self._local = threading.local()
        self._cons: list[sqlite3.Connection] = []  # every thread's connection, closed by close()
        self._cons_lock = threading.Lock()
        self._known_days: set[tuple[int, int]] = set()  # (series_id, day) already indexed
        self._index_grew = False  # this transaction added ``series_day`` rows: bump their generation
        self._series_cache: dict[int, Series] = {}
        # (ids the series index gave, matchers) -> the matching series by labels (_lookup_series)
        self._lookup_memo: LRUCache[tuple, tuple[Series, ...]] = LRUCache(maxsize=LOOKUP_MEMO_ENTRIES)
        self._series_target: dict[int, str] = {}  # for reads of frames
        self._read_layouts: dict[str, dict[int, frames_codec.LayoutIndex]] = {}  # the reader's, per target
        self._cuts: dict[str, tuple[tuple[int, ...], _FrameCut]] = {}  # the reader's last cut per target
        self._groupings: LRUCache[tuple[int, ...], dict[str, list[int]]] = LRUCache(maxsize=16)  # _targets_of's
        # (matchers, first day, last day) -> (index generation, series): the reader's
        self._lookups: LRUCache[tuple, tuple[str | None, list[Series]]] = LRUCache(maxsize=LOOKUP_CACHE)
        self._layouts: dict[tuple[str, int], _LayoutState] = {}  # the writer's
        self._layout_ids: dict[tuple[str, int], np.ndarray] = {}
        # per target, the series list of its last batch with their ids and the whole batch's
        # layout (ids as an array, layout id): a scrape repeats its target's series list
        self._last_series: dict[str, tuple[list[Series] | LayoutSeries, list[int], np.ndarray, int]] = {}
        self._transposed_at = 0
        self._frames_written = False
        self._closed = False
        with self._connect() as con:
            con.executescript(SCHEMA)
            _convert_raw_samples(con)
            rebuild_with_rowid(con, "raw_chunks", [CHUNKS_TABLE], "start_ts, series_id")

    @classmethod
    async def open(cls, path: str | Path, now_ms: Callable[[], int] | None = None) -> Self:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(None, cls, path, now_ms)

    def now_ms(self) -> int:
        if self._now_ms is not None:
            return int(self._now_ms())
        return int(time.time() * 1000)

    # -- plumbing ---------------------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        # (used by one thread at a time; close() closes them all from the loop's thread)
        con = sqlite3.connect(self.path, timeout=30.0, isolation_level=None, check_same_thread=False)
        con.execute("PRAGMA journal_mode=WAL")
        con.execute("PRAGMA synchronous=NORMAL")
        # Reads of packed rollup chunks copy megabytes: mapped pages skip the copy into
        # SQLite's page cache (measured 2x on a 24 h read of 800 series).
        con.execute(f"PRAGMA mmap_size={MMAP_BYTES}")
        return con

    def _con(self) -> sqlite3.Connection:
        con = getattr(self._local, "con", None)
        if con is None:
            con = self._connect()
            self._local.con = con
            with self._cons_lock:
                self._cons.append(con)
        return con

    def _unmapped_con(self) -> sqlite3.Connection:
        """The thread's second connection, without memory-mapped I/O (``run_read_unmapped``)."""
        con = getattr(self._local, "unmapped", None)
        if con is None:
            con = self._connect()
            con.execute("PRAGMA mmap_size=0")
            self._local.unmapped = con
            with self._cons_lock:
                self._cons.append(con)
        return con

    async def _run(self, pool: ThreadPoolExecutor, fn: Callable[..., T], *args: object) -> T:
        if self._closed:
            raise StorageError("storage is closed")
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(pool, fn, *args)
        except sqlite3.Error as exc:
            raise StorageError(f"sqlite {self.path}: {exc}") from exc

    async def run_write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn(connection)`` on the writer thread (for schema extensions such as rollups)."""
        return await self._run(self._writer, lambda: fn(self._con()))

    async def run_read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn(connection)`` on the reader thread."""
        return await self._run(self._reader, lambda: fn(self._con()))

    async def run_read_unmapped(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """``run_read`` through a connection that reads pages into SQLite's cache rather than
        mapping the file: for the rollup job's reads of every series' raw chunks (a fresh
        pass's 5 minutes, a seal's 2 hours), once each. Through the map, each page such a read
        touched stayed in the process's RSS while the file was mapped (up to ``MMAP_BYTES``:
        1297 MiB peak RSS after 15 minutes at 100,000 series, issue #20); queries, which read
        the same rollup chunks again and again, keep the map."""
        return await self._run(self._reader, lambda: fn(self._unmapped_con()))

    # -- writes -----------------------------------------------------------------------------

    async def write(self, batch: SampleBatch) -> None:
        if len(batch):
            await self._run(self._writer, self._write_sync, batch)

    async def write_many(self, batches: Sequence[SampleBatch]) -> list[Exception | None]:
        """Store ``batches`` in one transaction on the writer thread (one hop for all: see
        ``storage.base.GroupingWriter``); when that fails, each in its own transaction, so
        only the batches that fail get their error (None for each stored or empty one)."""
        return await self._run(self._writer, self._write_many_sync, list(batches))

    def _write_many_sync(self, batches: list[SampleBatch]) -> list[Exception | None]:
        out: list[Exception | None] = [None] * len(batches)
        todo = [k for k, b in enumerate(batches) if len(b)]
        if not todo:
            return out
        try:
            self._write_group([batches[k] for k in todo])
            return out
        except Exception as exc:  # noqa: BLE001 - handed to the batch's writer
            if len(todo) == 1:
                out[todo[0]] = self._error(exc)
                return out
        for k in todo:
            try:
                self._write_group([batches[k]])
            except Exception as exc:  # noqa: BLE001 - handed to the batch's writer
                out[k] = self._error(exc)
        return out

    def _error(self, exc: Exception) -> Exception:
        """An error as ``_run`` raises it: SQLite's wrapped in StorageError."""
        if isinstance(exc, sqlite3.Error):
            wrapped = StorageError(f"sqlite {self.path}: {exc}")
            wrapped.__cause__ = exc
            return wrapped
        return exc

    def _write_sync(self, batch: SampleBatch) -> None:
        self._write_group([batch])

    def _write_group(self, batches: Sequence[SampleBatch]) -> None:
        """Batches in one transaction, each as ``write`` stores it, in order."""
        con = self._con()
        now = self.now_ms()
        cutoff = now - self.late_after_ms
        con.execute("BEGIN IMMEDIATE")  # (every write transaction: see the module docstring)
        try:
            written = [self._write_in(con, batch, now, cutoff) for batch in batches]
            if self._index_grew:  # every process's lookups read the index again
                bump_generation(con, INDEX_GENERATION_KEY)
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            # The index and layout caches may now claim rows that were rolled back; forget them.
            self._known_days.clear()
            self._layouts.clear()
            raise
        finally:
            self._index_grew = False
        for frames in written:
            for f in frames:
                assert f.state is not None
                f.state.day = f.ts // DAY_MS
            self._frames_written |= bool(frames)
        self._maybe_transpose(now)

    def _write_in(self, con: sqlite3.Connection, batch: SampleBatch, now: int, cutoff: int) -> list[_Frame]:
        """One batch inside the caller's transaction; returns the frames it wrote."""
        last = self._last_series.get(batch.target)
        series = batch.series
        if last is not None and same_series(last[0], series):
            ids, whole = last[1], (last[2], last[3])
        else:
            # a scrape of a layout plan: its ids, no Series made
            ids = series.ids.tolist() if isinstance(series, LayoutSeries) else [s.id for s in series]
            gids = np.array(ids, dtype=np.int64)
            whole = (gids, frames_codec.layout_id(gids))
            if len(self._last_series) >= CACHE_LIMIT:
                self._last_series.clear()
            # a list is copied (callers may reuse theirs); a LayoutSeries never changes
            kept = series if isinstance(series, LayoutSeries) else list(series)
            self._last_series[batch.target] = (kept, ids, *whole)
        frames, rest = self._plan_frames(batch.target, ids, batch.timestamps, cutoff, whole)
        new_series, new_days = self._index_rows(batch, rest, frames)
        late = sorted({ts // HOUR_MS for ts in batch.timestamps if ts < cutoff}) if min(batch.timestamps) < cutoff else []
        if new_series:
            con.executemany(
                "INSERT OR IGNORE INTO series (series_id, metric, labels, target) VALUES (?,?,?,?)",
                new_series,
            )
        if new_days:
            self._index_grew = True
            con.executemany(
                "INSERT OR IGNORE INTO series_day (day, metric, series_id) VALUES (?,?,?)", new_days
            )
        frames = self._check_layouts(con, batch.target, frames, rest, now)
        if rest:
            self._append_rest(con, batch, ids, rest)
        for f in frames:
            self._put_frame(con, batch, f)
        if late:
            con.executemany(
                "INSERT INTO raw_late (hour, written_at) VALUES (?, ?) ON CONFLICT (hour)"
                " DO UPDATE SET written_at = max(written_at, excluded.written_at)",
                [(int(h), now) for h in late],
            )
        return frames

    def _plan_frames(
        self, target: str, ids: list[int], timestamps: list[int], cutoff: int,
        whole: tuple[np.ndarray, int] | None = None,
    ) -> tuple[list[_Frame], list[int]]:
        """The batch's timestamp groups that become frames, and the positions of the rest
        (small groups, late samples, layouts known not to fit) for the per-series path.
        ``whole``: the ids array and layout id of the whole batch, when known."""
        frames: list[_Frame] = []
        rest: list[int] = []
        for ts, rows in _ts_groups(timestamps).items():
            size = len(ids) if rows is None else len(rows)
            if size < self.frame_min_samples or ts < cutoff:
                rest.extend(range(size) if rows is None else rows)
                continue
            if rows is None and whole is not None:
                gids, lid = whole
            else:
                gids = np.array(ids if rows is None else [ids[k] for k in rows], dtype=np.int64)
                lid = frames_codec.layout_id(gids)
            state = self._layouts.get((target, lid))
            if state is not None and not state.ok:
                rest.extend(range(size) if rows is None else rows)
                continue
            frames.append(_Frame(ts, rows, gids, lid, state))
        return frames, rest

    def _index_rows(
        self, batch: SampleBatch, rest: list[int], frames: list[_Frame]
    ) -> tuple[list[tuple[int, str, str, str]], list[tuple[int, str, int]]]:
        """New ``series`` and ``series_day`` rows of the batch. A frame whose layout was
        indexed for its day by this store already is skipped whole."""
        positions: list[int] | range = rest
        todo = [f for f in frames if f.state is None or f.state.day != f.ts // DAY_MS]
        if todo:
            positions = list(rest)
            for f in todo:
                positions.extend(range(len(batch)) if f.rows is None else f.rows)
        elif not rest:
            return [], []
        new_series = []
        new_days = []
        series = batch.series
        ids = series.ids if isinstance(series, LayoutSeries) else None
        for k in positions:
            day = batch.timestamps[k] // DAY_MS
            key = (series[k].id if ids is None else ids[k], day)
            if key not in self._known_days:
                if isinstance(series, LayoutSeries):  # made once for the batch, not kept by it
                    series = series.build()
                s = series[k]
                self._known_days.add(key)
                if s.id not in self._series_cache:
                    self._series_cache[s.id] = s
                    new_series.append((s.id, s.metric, json.dumps(s.labels), batch.target))
                new_days.append((day, s.metric, s.id))
        return new_series, new_days

    def _check_layouts(
        self, con: sqlite3.Connection, target: str, frames: list[_Frame], rest: list[int], now: int
    ) -> list[_Frame]:
        """Write the layout rows of new layouts (and re-date old ones hourly) after checking
        they fit a frame: distinct series, all of this target (reads find a series' frames by
        its target). A group whose layout does not fit joins ``rest``."""
        out = []
        for f in frames:
            if f.state is None or now - f.state.asserted_ms >= LAYOUT_REASSERT_MS:
                ok = f.state.ok if f.state is not None else self._layout_fits(con, target, f.ids)
                if ok:
                    con.execute(UPSERT_LAYOUT, (target, f.layout, frames_codec.encode_layout(f.ids), now))
                if len(self._layouts) >= CACHE_LIMIT:
                    self._layouts.clear()
                f.state = self._layouts[(target, f.layout)] = _LayoutState(ok, now)
            if f.state.ok:
                out.append(f)
            else:
                rest.extend(range(f.ids.size) if f.rows is None else f.rows)
        return out

    @staticmethod
    def _layout_fits(con: sqlite3.Connection, target: str, ids: np.ndarray) -> bool:
        if np.unique(ids).size != ids.size:
            return False
        found = 0
        as_list = ids.tolist()
        for part in slices(as_list, IN_LIST):
            q = f"SELECT count(*) FROM series WHERE target = ? AND series_id IN ({','.join('?' * len(part))})"
            found += con.execute(q, (target, *part)).fetchone()[0]
        return found == ids.size

    def _append_rest(self, con: sqlite3.Connection, batch: SampleBatch, ids: list[int], rest: list[int]) -> None:
        """The per-series path. A frame of this target at one of these timestamps is older
        than these samples: it is moved into the chunks first, so the later write wins."""
        ts = [batch.timestamps[k] for k in rest]
        self._move_frames(con, batch.target, set(ts))
        bits = _floats_to_bits([batch.values[k] for k in rest])
        con.executemany(APPEND_RAW, raw_chunk_rows([ids[k] for k in rest], ts, bits))

    def _put_frame(self, con: sqlite3.Connection, batch: SampleBatch, f: _Frame) -> None:
        vals = batch.values if f.rows is None else [batch.values[k] for k in f.rows]
        row = (batch.target, f.ts, f.layout, frames_codec.encode_values(vals))
        if con.execute(UPSERT_FRAME, row).rowcount == 0:
            # the scrape's timestamp holds a frame of another layout: that one is older
            self._move_frames(con, batch.target, {f.ts})
            con.execute(UPSERT_FRAME, row)

    # -- frames -> chunks -------------------------------------------------------------------

    def _maybe_transpose(self, now: int) -> None:
        if now - self._transposed_at < self.frame_span_ms:
            return
        self._transposed_at = now
        before = (now - self.frame_grace_ms) // self.frame_span_ms * self.frame_span_ms
        try:
            self._transpose_sync(before)
        except (sqlite3.Error, StorageError):  # the write is stored; its frames stay readable, the next pass retries
            log.exception("transposing frames before %d failed", before)

    async def transpose_frames(self, before_ms: int) -> int:
        """Move every frame older than ``before_ms`` into the per-series raw chunks, in one
        transaction (a sample is always in exactly one of the two). Returns the frames moved.
        The writer does this itself after writes, at most once per ``frame_span_ms``."""
        return await self._run(self._writer, self._transpose_sync, before_ms)

    def _transpose_sync(self, before_ms: int) -> int:
        con = self._con()
        con.execute("BEGIN IMMEDIATE")
        try:
            moved = 0
            out = _ChunkAppends()
            targets = [t for (t,) in con.execute("SELECT DISTINCT target FROM raw_frames WHERE ts < ?", (before_ms,))]
            for target in targets:
                rows = con.execute(
                    "SELECT ts, layout_id, data FROM raw_frames WHERE target = ? AND ts < ? ORDER BY ts",
                    (target, before_ms),
                ).fetchall()
                self._chunk_rows(con, target, rows, out)
                moved += len(rows)
                if out.size >= TRANSPOSE_ROWS:
                    out.write(con)
                    out = _ChunkAppends()
            out.write(con)
            con.execute("DELETE FROM raw_frames WHERE ts < ?", (before_ms,))
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise
        return moved

    def _move_frames(self, con: sqlite3.Connection, target: str, ts: set[int]) -> None:
        """Transpose the frames of ``target`` at these timestamps now (in the caller's transaction)."""
        found = [
            t
            for (t,) in con.execute(
                "SELECT ts FROM raw_frames WHERE target = ? AND ts BETWEEN ? AND ?", (target, min(ts), max(ts))
            )
            if t in ts
        ]
        if not found:
            return
        rows: list[tuple[int, int, bytes]] = []
        for t in sorted(found):
            rows.extend(
                con.execute("SELECT ts, layout_id, data FROM raw_frames WHERE target = ? AND ts = ?", (target, t))
            )
        self._transpose_rows(con, target, rows)
        con.executemany("DELETE FROM raw_frames WHERE target = ? AND ts = ?", [(target, t) for t in found])

    def _transpose_rows(self, con: sqlite3.Connection, target: str, rows: list[tuple[int, int, bytes]]) -> None:
        """Append frames (time-ordered ``(ts, layout id, data)`` of one target) to the
        per-series chunks: the frame matrix transposed, one row per series and span."""
        out = _ChunkAppends()
        self._chunk_rows(con, target, rows, out)
        out.write(con)

    def _chunk_rows(
        self, con: sqlite3.Connection, target: str, rows: list[tuple[int, int, bytes]], out: _ChunkAppends
    ) -> None:
        """The chunk appends of one target's frames, added to ``out``: per span the records of
        the series present in every frame of it as one matrix, any other series' as a row."""
        lids = sorted({r[1] for r in rows})
        index = {lid: i for i, lid in enumerate(lids)}
        layouts = [self._layout(con, target, lid) for lid in lids]
        ts = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
        which = np.fromiter((index[r[1]] for r in rows), dtype=np.int64, count=len(rows))
        ids, bits, present = frames_codec.union_matrix(layouts, which, [r[2] for r in rows])
        for start, a, b in frames_codec.span_bounds(ts, RAW_CHUNK_MS):
            rec = np.empty((ids.size, b - a), dtype=RAW_RECORD)
            rec["ts"] = ts[a:b]
            rec["bits"] = bits[a:b].T
            if present is None:
                out.add(start, ids, rec)
                continue
            keep = np.ascontiguousarray(present[a:b].T)
            whole = keep.all(axis=1)
            out.add(start, ids[whole], rec[whole])
            for c in np.flatnonzero(~whole & keep.any(axis=1)).tolist():
                out.rows.append((int(ids[c]), start, rec[c][keep[c]].tobytes()))

    def _layout(self, con: sqlite3.Connection, target: str, lid: int) -> np.ndarray:
        """A layout's series ids (cached: a layout id is the hash of its ids, never reused)."""
        ids = self._layout_ids.get((target, lid))
        if ids is None:
            row = con.execute(
                "SELECT series_ids FROM raw_layouts WHERE target = ? AND layout_id = ?", (target, lid)
            ).fetchone()
            if row is None:
                raise StorageError(f"sqlite {self.path}: layout {lid} of the frames of {target} is missing")
            if len(self._layout_ids) >= CACHE_LIMIT:
                self._layout_ids.clear()
            ids = self._layout_ids[(target, lid)] = frames_codec.decode_layout(row[0])
        return ids

    async def delete_raw_before(self, ts_ms: int) -> int:
        """Retention: drop raw samples older than ``ts_ms`` (whole days only), in chunks and
        in frames, and the layouts no frame uses that no writer dated in the last day.
        Returns the number of raw chunks (series x 5 minutes) and frames deleted."""

        def run(con: sqlite3.Connection) -> int:
            day = ts_ms // DAY_MS
            cur = con.execute("DELETE FROM raw_chunks WHERE start_ts < ?", (day * DAY_MS,))
            frames = con.execute("DELETE FROM raw_frames WHERE ts < ?", (day * DAY_MS,))
            con.execute(
                "DELETE FROM raw_layouts WHERE seen_ms < ? AND NOT EXISTS (SELECT 1 FROM raw_frames f"
                " WHERE f.target = raw_layouts.target AND f.layout_id = raw_layouts.layout_id)",
                (min(ts_ms, self.now_ms() - DAY_MS),),
            )
            con.execute("DELETE FROM series_day WHERE day < ?", (day,))
            bump_generation(con, INDEX_GENERATION_KEY)  # the index lost days: lookups read it again
            con.execute("DELETE FROM raw_late WHERE hour < ?", (day * DAY_MS // HOUR_MS,))
            self._known_days = {k for k in self._known_days if k[1] >= day}
            self._layouts.clear()
            return int(cur.rowcount) + int(frames.rowcount)

        return await self.run_write(run)

    # -- reads ------------------------------------------------------------------------------

    def _lookup_series(self, con: sqlite3.Connection, matchers: Sequence[Matcher], start_ms: int, end_ms: int) -> list[Series]:
        """The series matching ``matchers`` with index rows in the days of [start_ms, end_ms],
        in label order; a repeated lookup (a dashboard's refresh: 25 ms for 6,400 of 100,000
        series, most of it the index read that ``_lookup_memo`` still needs) is answered from
        ``_lookups`` while this store indexed nothing new."""
        d0, d1 = start_ms // DAY_MS, end_ms // DAY_MS
        key = (tuple(matchers), d0, d1)
        generation = read_generation(con, INDEX_GENERATION_KEY)  # before the read: a later commit moves it
        with self._cons_lock:
            hit = self._lookups.get(key)
        if hit is not None and hit[0] == generation:
            return list(hit[1])
        out = self._lookup_series_uncached(con, matchers, d0, d1)
        with self._cons_lock:
            self._lookups[key] = (generation, out)
        return list(out)

    def _lookup_series_uncached(self, con: sqlite3.Connection, matchers: Sequence[Matcher], d0: int, d1: int) -> list[Series]:
        metric = metric_name_of(matchers)
        if metric is not None and d1 - d0 < IN_LIST:
            # (day IN (...): the primary key's (day, metric) prefix per day; a day range read
            # every metric's rows of those days: 100,000 for a 6,400-series metric, 3x the time)
            ids = con.execute(
                f"SELECT DISTINCT series_id FROM series_day WHERE day IN ({','.join('?' * (d1 - d0 + 1))}) AND metric = ?",
                (*range(d0, d1 + 1), metric),
            ).fetchall()
        elif metric is not None:
            ids = con.execute(
                "SELECT DISTINCT series_id FROM series_day WHERE day BETWEEN ? AND ? AND metric = ?",
                (d0, d1, metric),
            ).fetchall()
        else:
            ids = con.execute(
                "SELECT DISTINCT series_id FROM series_day WHERE day BETWEEN ? AND ?", (d0, d1)
            ).fetchall()
        # (the metric's own matcher holds for every series the day index gave for the metric)
        own = Matcher("__name__", MatchOp.EQ, metric) if metric is not None else None
        rest = [m for m in matchers if m != own]
        # The answer depends only on the ids and the matchers (a series id is its labels'
        # hash): a dashboard refresh asks the same again, and matching and sorting 800 series
        # by labels cost it 2-4 ms a read.
        key = (tuple(ids), tuple(rest))
        with self._cons_lock:
            memo = self._lookup_memo.get(key)
        if memo is not None:
            return list(memo)
        out = []
        missing = [i for (i,) in ids if i not in self._series_cache]
        for part in slices(missing, IN_LIST):
            q = f"SELECT series_id, labels FROM series WHERE series_id IN ({','.join('?' * len(part))})"
            for sid, labels in con.execute(q, part):
                self._series_cache[sid] = series_from_row(sid, labels)
        complete = True
        for (sid,) in ids:
            s = self._series_cache.get(sid)
            if s is None:
                complete = False  # (an index row whose series row this read does not see)
            elif not rest or match_all(rest, s.labels):
                out.append(s)
        out.sort(key=lambda s: s.labels)
        if complete:
            with self._cons_lock:
                self._lookup_memo[key] = tuple(out)
        return out

    def _select_sync(self, matchers: Sequence[Matcher], start_ms: int, end_ms: int) -> list[SeriesData]:
        con = self._con()
        found = self._lookup_series(con, matchers, start_ms, end_ms)
        samples = self.raw_samples(con, [s.id for s in found], start_ms, end_ms + 1)
        raw = Resolution.RAW
        return [SeriesData(s, p[0], p[1], raw) for s in found if (p := samples.get(s.id)) is not None]

    def _select_flat_sync(self, matchers: Sequence[Matcher], start_ms: int, end_ms: int) -> FlatSamples:
        con = self._con()
        found = self._lookup_series(con, matchers, start_ms, end_ms)
        samples = self.raw_samples(con, [s.id for s in found], start_ms, end_ms + 1)
        series, ts_parts, val_parts = [], [], []
        for s in found:
            p = samples.get(s.id)
            if p is not None and p[0].shape[0]:
                series.append(s)
                ts_parts.append(p[0])
                val_parts.append(p[1])
        if not series:
            return FlatSamples.of([])
        offsets = np.zeros(len(series) + 1, dtype=np.int64)
        np.cumsum([t.shape[0] for t in ts_parts], out=offsets[1:])
        return FlatSamples(series, offsets, np.concatenate(ts_parts), np.concatenate(val_parts))

    def raw_samples(
        self, con: sqlite3.Connection, series_ids: Sequence[int], start_ms: int, end_ms: int
    ) -> dict[int, tuple[np.ndarray, np.ndarray]]:
        """``raw_samples_of`` with the samples still in frames merged in (a frame's sample
        wins over a chunk's of the same timestamp: it is the later write), in one read
        transaction, so a transposition committing meanwhile neither hides nor doubles any."""
        own = not con.in_transaction
        if own:
            con.execute("BEGIN")
        try:
            out = raw_samples_of(con, series_ids, start_ms, end_ms)
            head = con.execute("SELECT 1 FROM raw_frames WHERE ts >= ? AND ts < ? LIMIT 1", (start_ms, end_ms))
            if series_ids and head.fetchone() is not None:
                framed = self._frame_samples(con, series_ids, start_ms, end_ms)
                if not out:  # (all of it in frames: a recent range)
                    return framed
                for sid, (ts, vals) in framed.items():
                    old = out.get(sid)
                    out[sid] = (ts, vals) if old is None else frames_codec.merge_newer(*old, ts, vals)
        finally:
            if own:
                con.execute("COMMIT")
        return out

    def _learn_targets(self, con: sqlite3.Connection, series_ids: Sequence[int]) -> None:
        """Read into ``_series_target`` the targets of ``series_ids`` it does not hold yet (a
        series' target never changes; a series without a ``series`` row stays out)."""
        missing = [i for i in series_ids if i not in self._series_target]
        for part in slices(missing, IN_LIST):
            q = f"SELECT series_id, target FROM series WHERE series_id IN ({','.join('?' * len(part))})"
            self._series_target.update(con.execute(q, part).fetchall())

    def _targets_of(self, con: sqlite3.Connection, series_ids: Sequence[int]) -> dict[str, list[int]]:
        """The series grouped by their target (the ``series`` table's, cached; a series'
        target never changes, so the last few groupings are kept whole: a refresh asks the same)."""
        key = tuple(series_ids)
        with self._cons_lock:
            hit = self._groupings.get(key)
        if hit is not None:
            return hit
        self._learn_targets(con, series_ids)
        out: dict[str, list[int]] = {}
        for sid in series_ids:
            target = self._series_target.get(sid)
            if target is not None:
                out.setdefault(target, []).append(sid)
        if sum(map(len, out.values())) == len(key):  # (every series' row seen)
            with self._cons_lock:
                self._groupings[key] = out
        return out

    def _frame_samples(
        self, con: sqlite3.Connection, series_ids: Sequence[int], start_ms: int, end_ms: int
    ) -> dict[int, tuple[np.ndarray, np.ndarray]]:
        """Samples in [start_ms, end_ms) of the series in frames: per target one range read
        of its frames, each frame cut in SQL to the bytes of the columns asked for (the span
        between the first and the last in the layouts the target's frames had at its last
        read: a metric's series are neighbours in a scrape), so 32 series of 505 read 256
        bytes of each 4 KB frame into Python, not all of it."""
        out: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        by_target = self._targets_of(con, series_ids)
        targets = sorted(by_target)
        for part in slices(targets, FRAME_TARGETS):  # (a statement per group of targets, not per target)
            plans = {t: self._frame_cut(t, by_target[t]) for t in part}
            # (no ORDER BY: SQLite would sort every row before the first; the primary key
            # gives each target's rows in time order, and _columns_of sorts any that are not)
            rows = con.execute(
                f"WITH w(target, off, len) AS (VALUES {','.join(['(?,?,?)'] * len(part))})"
                " SELECT f.target, f.ts, f.layout_id, substr(f.data, w.off, w.len) FROM w"
                " JOIN raw_frames f ON f.target = w.target WHERE f.ts >= ? AND f.ts < ?",
                (*(x for t in part for x in (t, 8 * plans[t].first + 1, plans[t].length)), start_ms, end_ms),
            ).fetchall()
            if rows:
                self._cut_columns(con, rows, plans, out)
        return out

    def _cut_columns(
        self,
        con: sqlite3.Connection,
        rows: list[tuple[str, int, int, bytes]],
        cuts: dict[str, _FrameCut],
        out: dict[int, tuple[np.ndarray, np.ndarray]],
    ) -> None:
        """The columns of a frame read's rows: each target whose frames in the range all have
        one known layout, in time order (the usual case), through one matrix per piece width
        for all of them; any other target through ``_columns_of``."""
        n = len(rows)
        names = [r[0] for r in rows]
        ts_all = np.fromiter((r[1] for r in rows), dtype=np.int64, count=n)
        lids = np.fromiter((r[2] for r in rows), dtype=np.int64, count=n)
        edges = [0, *(k for k in range(1, n) if names[k] != names[k - 1]), n]
        ordered = np.ones(n, dtype=bool)
        ordered[1:] = ts_all[1:] > ts_all[:-1]
        same = np.ones(n, dtype=bool)
        same[1:] = lids[1:] == lids[:-1]
        fine = ordered & same
        by_width: dict[int, list[tuple[int, int, tuple[np.ndarray, np.ndarray], int]]] = {}
        others: dict[str, list[tuple[int, int, bytes]]] = {}
        starts = [names[a] for a in edges[:-1]]
        split = len(set(starts)) < len(starts)  # (a target's rows not in one run: never seen, but whole)
        for a, b in zip(edges[:-1], edges[1:], strict=False):
            cut = cuts[names[a]]
            lid = int(lids[a])
            got = cut.cols.get(lid)
            if got is not None and cut.length != WHOLE_FRAME and not split and fine[a + 1 : b].all():
                if got[1].size:
                    by_width.setdefault(cut.widths[lid], []).append((a, b, got, cut.first))
            else:
                others.setdefault(names[a], []).extend(r[1:] for r in rows[a:b])
        for width, runs in by_width.items():
            joined = b"".join([r[3] for a, b, _, _ in runs for r in rows[a:b]])
            total = sum(b - a for a, b, _, _ in runs)
            if width <= 0 or len(joined) != total * width:  # (a frame shorter than its layout says)
                for a, b, _, _ in runs:
                    others.setdefault(names[a], []).extend(r[1:] for r in rows[a:b])
                continue
            matrix = np.frombuffer(joined, dtype="<i8").reshape(total, width // 8)
            at = 0
            for a, b, (found, cols), first in runs:
                bits = matrix[at : at + b - a][:, cols - first].T.copy().view(np.float64)
                out.update(zip(found.tolist(), zip(itertools.repeat(ts_all[a:b]), bits), strict=False))
                at += b - a
        for target, trows in others.items():
            self._columns_of(con, target, cuts[target], trows, out)

    def _frame_cut(self, target: str, sids: list[int]) -> _FrameCut:
        """Which bytes of ``target``'s frames a read of ``sids`` takes (see ``_frame_samples``);
        the last one per target is kept (a refresh asks the same) until it learns a layout."""
        key = tuple(sids)
        last = self._cuts.get(target)
        if last is not None and last[0] == key:
            return last[1]
        wanted = np.asarray(sids, dtype=np.int64)
        known = self._read_layouts.get(target)
        if not known:
            return _FrameCut(wanted, 0, WHOLE_FRAME, {}, {})
        cols = {lid: lay.positions(wanted) for lid, lay in known.items()}
        hit = [c for _, c in cols.values() if c.size]
        if not hit:  # none of them in the known layouts: read as little as possible
            cut = _FrameCut(wanted, 0, 0, cols, dict.fromkeys(cols, 0))
        else:
            first = min(int(c[0]) for c in hit)
            length = 8 * (max(int(c[-1]) for c in hit) + 1 - first)
            widths = {lid: max(0, min(length, 8 * (lay.ids.size - first))) for lid, lay in known.items()}
            cut = _FrameCut(wanted, first, length, cols, widths)
        if len(self._cuts) >= CACHE_LIMIT:
            self._cuts.clear()
        self._cuts[target] = (key, cut)
        return cut

    def _columns_of(
        self,
        con: sqlite3.Connection,
        target: str,
        cut: _FrameCut,
        rows: list[tuple[int, int, bytes]],
        out: dict[int, tuple[np.ndarray, np.ndarray]],
    ) -> None:
        ts_all = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
        lids = np.fromiter((r[1] for r in rows), dtype=np.int64, count=len(rows))
        if ts_all.size > 1 and not (ts_all[1:] > ts_all[:-1]).all():
            order = np.argsort(ts_all, kind="stable")
            rows, ts_all, lids = [rows[k] for k in order.tolist()], ts_all[order], lids[order]
        groups: list[tuple[int, np.ndarray | None]]
        if (lids == lids[0]).all():  # (one layout: each series' samples in one piece)
            groups = [(int(lids[0]), None)]
        else:
            groups = [(int(lid), np.flatnonzero(lids == lid)) for lid in np.unique(lids).tolist()]
        pieces: dict[int, list[tuple[np.ndarray, np.ndarray]]] = {}
        for lid, ks in groups:
            ts = ts_all if ks is None else ts_all[ks]
            datas = [r[2] for r in rows] if ks is None else [rows[k][2] for k in ks.tolist()]
            got = cut.cols.get(lid)
            first = cut.first
            if got is None:  # a layout not known yet: learn it, from whole frames
                if cut.length != WHOLE_FRAME:
                    datas = self._whole_frames(con, target, ts)
                lay = self._learn_layout(con, target, lid)
                got, first = lay.positions(cut.wanted), 0
            found, cols = got
            if not cols.size:
                continue
            bits = frames_codec.frame_matrix(datas, len(datas[0]) // 8)[:, cols - first].T.copy().view(np.float64)
            if ks is None:
                out.update(zip(found.tolist(), zip(itertools.repeat(ts), bits), strict=False))
                continue
            for j, sid in enumerate(found.tolist()):
                pieces.setdefault(sid, []).append((ts, bits[j]))
        for sid, ps in pieces.items():
            if len(ps) == 1:
                out[sid] = ps[0]
                continue
            # layouts changed within the range: a target's frames have distinct timestamps
            ts = np.concatenate([p[0] for p in ps])
            order = np.argsort(ts, kind="stable")
            out[sid] = (ts[order], np.concatenate([p[1] for p in ps])[order])

    def _whole_frames(self, con: sqlite3.Connection, target: str, ts: np.ndarray) -> list[bytes]:
        """The whole frames of ``target`` at ``ts`` (in the caller's read transaction)."""
        got = dict(con.execute(
            "SELECT ts, data FROM raw_frames WHERE target = ? AND ts BETWEEN ? AND ?",
            (target, int(ts[0]), int(ts[-1])),
        ).fetchall())
        return [got[t] for t in ts.tolist()]

    def _learn_layout(self, con: sqlite3.Connection, target: str, lid: int) -> frames_codec.LayoutIndex:
        """A layout of ``target``'s frames, kept among the few its next reads cut frames by."""
        lay = frames_codec.LayoutIndex(self._layout(con, target, lid))
        known = self._read_layouts.setdefault(target, {})
        known[lid] = lay
        self._cuts.pop(target, None)
        while len(known) > READ_LAYOUTS:
            del known[next(iter(known))]
        if len(self._read_layouts) > CACHE_LIMIT:
            self._read_layouts.clear()
        return lay

    def _series_of_metric(self, con: sqlite3.Connection, metric: str) -> list[int]:
        """Ids of every series of ``metric`` ever written (labels cached on the way)."""
        ids = []
        for sid, labels in con.execute("SELECT series_id, labels FROM series WHERE metric = ?", (metric,)):
            if sid not in self._series_cache:
                self._series_cache[sid] = series_from_row(sid, labels)
            ids.append(sid)
        return ids

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
            if not isinstance(self, RollupReader):  # SQLiteRollupStorage is
                raise StorageError(f"resolution {resolution.value} is not available in this store")
            return await self.select_rollup(matchers, start_ms, end_ms, resolution, columns)
        return await self._run(self._reader, self._select_sync, matchers, start_ms, end_ms)

    async def select_flat(self, matchers: Sequence[Matcher], start_ms: int, end_ms: int) -> FlatSamples:
        """``select``'s raw samples as flat columns (``storage.base.FlatRawReader``), the series'
        samples joined once in label order: a panel's refresh reads 800 series' last minutes,
        and a ``SeriesData`` of each that the engine joined back into flat arrays cost it ~1.5 ms."""
        if end_ms < start_ms:
            return FlatSamples.of([])
        return await self._run(self._reader, self._select_flat_sync, matchers, start_ms, end_ms)

    async def series(self, matchers: Sequence[Matcher], start_ms: int, end_ms: int) -> list[Series]:
        return await self._run(
            self._reader, lambda: self._lookup_series(self._con(), matchers, start_ms, end_ms)
        )

    async def label_names(self, start_ms: int, end_ms: int, matchers: Sequence[Matcher] = ()) -> list[str]:
        found = await self.series(matchers, start_ms, end_ms)
        return sorted({k for s in found for k, _ in s.labels})

    async def label_values(
        self, name: str, start_ms: int, end_ms: int, matchers: Sequence[Matcher] = ()
    ) -> list[str]:
        found = await self.series(matchers, start_ms, end_ms)
        return sorted({v for s in found for k, v in s.labels if k == name})

    async def close(self) -> None:
        if self._closed:
            return
        loop = asyncio.get_running_loop()
        if self._frames_written:  # leave a clean file: every frame this store wrote in the chunks
            try:
                await self.transpose_frames(FOREVER_MS)
            except StorageError as exc:
                log.warning("frames left in %s at close (readable, transposed on the next write): %s", self.path, exc)
        self._closed = True
        for pool in (self._writer, self._reader):
            await loop.run_in_executor(None, pool.shutdown, True)  # running reads and writes finish
        with self._cons_lock:
            cons, self._cons = self._cons, []
        for con in cons:
            con.close()
