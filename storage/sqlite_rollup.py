"""The rollup store on SQLite: sealed blocks, 1m/1h rollup rows, checkpoints.

``SQLiteRollupMixin`` adds the ``RollupStore`` methods (see ``storage.rollup_job``) and
``select_rollup`` to ``storage.sqlite.SQLiteStorage``; ``SQLiteRollupStorage`` is the
combined class. Tables (created on first use, ``IF NOT EXISTS``):

- ``raw_blocks``: one row per (series, window start) with the block bytes;
- ``rollup_1m`` / ``rollup_1h``: one row per (series, bucket start) with the six
  aggregates stored as their 64-bit patterns (SQLite would turn NaN into NULL);
- ``rollup_checkpoints``: (job, shard) -> end of the last window done (the late pass's
  cursors are checkpoints of job ``<job>:late``).

``late_marks_since`` reads the late marks ``storage.sqlite`` records in ``raw_late``.

Raw reads for the job merge sealed blocks with the raw rows still present, so a window
whose raw rows were dropped by retention is still re-derivable from its block.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence

import numpy as np

from storage.base import AGGREGATES, DAY_MS, HOUR_MS, Resolution, SeriesData
from storage.blocks import decode_block
from storage.matchers import Matcher, match_all
from storage.model import Series
from storage.rollup import Rollup
from storage.rollup_job import RollupRows, SealedBlock
from storage.sqlite import SQLiteStorage

ROLLUP_SCHEMA = """
CREATE TABLE IF NOT EXISTS raw_blocks (
    series_id INTEGER NOT NULL,
    start_ts  INTEGER NOT NULL,
    end_ts    INTEGER NOT NULL,
    count     INTEGER NOT NULL,
    first_ts  INTEGER NOT NULL,
    last_ts   INTEGER NOT NULL,
    data      BLOB NOT NULL,
    PRIMARY KEY (series_id, start_ts)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS rollup_1m (
    series_id INTEGER NOT NULL, ts INTEGER NOT NULL,
    count INTEGER NOT NULL, sum INTEGER NOT NULL, min INTEGER NOT NULL,
    max INTEGER NOT NULL, last INTEGER NOT NULL, increase INTEGER NOT NULL,
    PRIMARY KEY (series_id, ts)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS rollup_1m_ts ON rollup_1m (ts, series_id);
CREATE TABLE IF NOT EXISTS rollup_1h (
    series_id INTEGER NOT NULL, ts INTEGER NOT NULL,
    count INTEGER NOT NULL, sum INTEGER NOT NULL, min INTEGER NOT NULL,
    max INTEGER NOT NULL, last INTEGER NOT NULL, increase INTEGER NOT NULL,
    PRIMARY KEY (series_id, ts)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS rollup_1h_ts ON rollup_1h (ts, series_id);
CREATE TABLE IF NOT EXISTS rollup_checkpoints (
    job        TEXT NOT NULL,
    shard      INTEGER NOT NULL,
    window_end INTEGER NOT NULL,
    PRIMARY KEY (job, shard)
) WITHOUT ROWID;
"""

_TABLES = {Resolution.MINUTE: "rollup_1m", Resolution.HOUR: "rollup_1h"}
_COLS = ", ".join(AGGREGATES)


def _table(resolution: Resolution) -> str:
    try:
        return _TABLES[resolution]
    except KeyError:
        raise ValueError(f"no rollup table for resolution {resolution.value}") from None


class SQLiteRollupMixin:
    """RollupStore methods for ``SQLiteStorage`` (uses its ``run_read`` / ``run_write``)."""

    _rollup_schema_ready: bool = False

    async def _ensure_rollup_schema(self) -> None:
        if not self._rollup_schema_ready:
            await self.run_write(lambda con: con.executescript(ROLLUP_SCHEMA))  # type: ignore[attr-defined]
            self._rollup_schema_ready = True

    # -- RollupStore ------------------------------------------------------------------------

    async def read_raw_window(self, shard: int, shards: int, start_ms: int, end_ms: int) -> list[SeriesData]:
        await self._ensure_rollup_schema()

        def run(con: sqlite3.Connection) -> list[SeriesData]:
            d0, d1 = start_ms // DAY_MS, (end_ms - 1) // DAY_MS
            ids = {
                sid
                for (sid,) in con.execute(
                    "SELECT DISTINCT series_id FROM series_day WHERE day BETWEEN ? AND ?", (d0, d1)
                )
                if sid % shards == shard
            }
            ids |= {
                sid
                for (sid,) in con.execute(
                    "SELECT DISTINCT series_id FROM raw_blocks WHERE start_ts < ? AND end_ts > ?",
                    (end_ms, start_ms),
                )
                if sid % shards == shard
            }
            out = []
            for sid in sorted(ids):
                rows = con.execute(
                    "SELECT ts, value FROM raw_samples WHERE series_id = ? AND day BETWEEN ? AND ?"
                    " AND ts >= ? AND ts < ? ORDER BY ts",
                    (sid, d0, d1, start_ms, end_ms),
                ).fetchall()
                ts = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
                vals = np.fromiter((r[1] for r in rows), dtype=np.int64, count=len(rows)).view(np.float64)
                blocks = con.execute(
                    "SELECT data FROM raw_blocks WHERE series_id = ? AND start_ts < ? AND end_ts > ? ORDER BY start_ts",
                    (sid, end_ms, start_ms),
                ).fetchall()
                if blocks:
                    parts = [decode_block(b) for (b,) in blocks]
                    # Rows first: on equal timestamps the stable sort keeps the row's value.
                    ts = np.concatenate([ts] + [p[0] for p in parts])
                    vals = np.concatenate([vals] + [p[1] for p in parts])
                    order = np.argsort(ts, kind="stable")
                    ts, vals = ts[order], vals[order]
                    keep = np.ones(ts.shape[0], dtype=bool)
                    keep[1:] = ts[1:] != ts[:-1]
                    inside = (ts >= start_ms) & (ts < end_ms)
                    ts, vals = ts[keep & inside], vals[keep & inside]
                if ts.size:
                    out.append(SeriesData(self._series_by_id(con, sid), ts, vals, Resolution.RAW))
            return out

        return await self.run_read(run)  # type: ignore[attr-defined]

    def _series_by_id(self, con: sqlite3.Connection, sid: int) -> Series:
        cache: dict[int, Series] = self._series_cache  # type: ignore[attr-defined]
        s = cache.get(sid)
        if s is None:
            row = con.execute("SELECT labels FROM series WHERE series_id = ?", (sid,)).fetchone()
            labels = tuple(tuple(p) for p in json.loads(row[0])) if row else ()
            s = Series(sid, labels)  # type: ignore[arg-type]
            if row:
                cache[sid] = s
        return s

    async def write_blocks(self, blocks: Sequence[SealedBlock]) -> None:
        await self._ensure_rollup_schema()
        rows = [(b.series_id, b.start_ms, b.end_ms, b.count, b.first_ts, b.last_ts, b.data) for b in blocks]

        def run(con: sqlite3.Connection) -> None:
            with con:
                con.execute("BEGIN")
                con.executemany(
                    "INSERT OR REPLACE INTO raw_blocks (series_id, start_ts, end_ts, count, first_ts, last_ts, data)"
                    " VALUES (?,?,?,?,?,?,?)",
                    rows,
                )

        await self.run_write(run)  # type: ignore[attr-defined]

    async def write_rollups(self, resolution: Resolution, rows: Sequence[RollupRows]) -> None:
        await self._ensure_rollup_schema()
        table = _table(resolution)
        params: list[tuple[int, ...]] = []
        for r in rows:
            cols = [r.rollup.timestamps.tolist()] + [
                np.ascontiguousarray(getattr(r.rollup, name), dtype=np.float64).view(np.int64).tolist()
                for name in AGGREGATES
            ]
            params.extend((r.series_id, *vals) for vals in zip(*cols, strict=True))

        def run(con: sqlite3.Connection) -> None:
            with con:
                con.execute("BEGIN")
                con.executemany(
                    f"INSERT OR REPLACE INTO {table} (series_id, ts, {_COLS}) VALUES (?,?,?,?,?,?,?,?)",
                    params,
                )

        await self.run_write(run)  # type: ignore[attr-defined]

    async def get_checkpoint(self, job: str, shard: int) -> int | None:
        await self._ensure_rollup_schema()

        def run(con: sqlite3.Connection) -> int | None:
            row = con.execute(
                "SELECT window_end FROM rollup_checkpoints WHERE job = ? AND shard = ?", (job, shard)
            ).fetchone()
            return int(row[0]) if row else None

        return await self.run_read(run)  # type: ignore[attr-defined]

    async def set_checkpoint(self, job: str, shard: int, window_end_ms: int) -> None:
        await self._ensure_rollup_schema()

        def run(con: sqlite3.Connection) -> None:
            con.execute(
                "INSERT INTO rollup_checkpoints (job, shard, window_end) VALUES (?,?,?)"
                " ON CONFLICT (job, shard) DO UPDATE SET window_end = max(window_end, excluded.window_end)",
                (job, shard, window_end_ms),
            )

        await self.run_write(run)  # type: ignore[attr-defined]

    async def late_marks_since(self, cursor_ms: int) -> list[tuple[int, int]]:
        """``(hour start ms, written at ms)`` of the hours whose newest late write is after ``cursor_ms``."""
        rows = await self.run_read(  # type: ignore[attr-defined]
            lambda con: con.execute(
                "SELECT hour, written_at FROM raw_late WHERE written_at > ?", (cursor_ms,)
            ).fetchall()
        )
        return [(int(h) * HOUR_MS, int(w)) for h, w in rows]

    # -- reads of rollups -------------------------------------------------------------------

    async def read_rollup(self, resolution: Resolution, series_id: int, start_ms: int, end_ms: int) -> Rollup:
        """Buckets of one series with start in [start_ms, end_ms]."""
        await self._ensure_rollup_schema()
        table = _table(resolution)

        def run(con: sqlite3.Connection) -> Rollup:
            rows = con.execute(
                f"SELECT ts, {_COLS} FROM {table} WHERE series_id = ? AND ts BETWEEN ? AND ? ORDER BY ts",
                (series_id, start_ms, end_ms),
            ).fetchall()
            return _rollup_from_rows(rows)

        return await self.run_read(run)  # type: ignore[attr-defined]

    async def select_rollup(
        self, matchers: Sequence[Matcher], start_ms: int, end_ms: int, resolution: Resolution
    ) -> list[SeriesData]:
        """Rollup buckets of matching series in [start_ms, end_ms] (``values`` = ``last``)."""
        await self._ensure_rollup_schema()
        table = _table(resolution)

        def run(con: sqlite3.Connection) -> list[SeriesData]:
            ids = [
                sid
                for (sid,) in con.execute(
                    f"SELECT DISTINCT series_id FROM {table} WHERE ts BETWEEN ? AND ?", (start_ms, end_ms)
                )
            ]
            out = []
            for sid in ids:
                s = self._series_by_id(con, sid)
                if not s.labels or not match_all(matchers, s.labels):
                    continue
                rows = con.execute(
                    f"SELECT ts, {_COLS} FROM {table} WHERE series_id = ? AND ts BETWEEN ? AND ? ORDER BY ts",
                    (sid, start_ms, end_ms),
                ).fetchall()
                r = _rollup_from_rows(rows)
                out.append(SeriesData(s, r.timestamps, r.last, resolution, r.columns()))
            out.sort(key=lambda d: d.series.labels)
            return out

        return await self.run_read(run)  # type: ignore[attr-defined]

    async def delete_rollups_before(self, resolution: Resolution, ts_ms: int) -> int:
        """Retention of a rollup table (SQLite has no TTLs). Returns rows deleted."""
        await self._ensure_rollup_schema()
        table = _table(resolution)
        return await self.run_write(  # type: ignore[attr-defined]
            lambda con: con.execute(f"DELETE FROM {table} WHERE ts < ?", (ts_ms,)).rowcount
        )

    async def delete_blocks_before(self, ts_ms: int) -> int:
        """Retention of sealed blocks: drop blocks whose window ended before ``ts_ms``."""
        await self._ensure_rollup_schema()
        return await self.run_write(  # type: ignore[attr-defined]
            lambda con: con.execute("DELETE FROM raw_blocks WHERE end_ts <= ?", (ts_ms,)).rowcount
        )


def _rollup_from_rows(rows: list[tuple[int, ...]]) -> Rollup:
    if not rows:
        return Rollup.empty()
    arr = np.array(rows, dtype=np.int64)
    return Rollup.from_columns(
        arr[:, 0].copy(), {name: arr[:, i + 1].copy().view(np.float64) for i, name in enumerate(AGGREGATES)}
    )


class SQLiteRollupStorage(SQLiteRollupMixin, SQLiteStorage):
    """SQLite storage with the rollup store (blocks, 1m/1h rows, checkpoints)."""
