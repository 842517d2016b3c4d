"""Schema version 3 on Cassandra: pack the rollup rows of a version-2 keyspace into chunks.

Version 2 stored one row per bucket (``rollup_1m``, ``rollup_1h``); version 3 stores one
row per chunk (``rollup_1m_chunks``, ``rollup_1h_chunks``, see ``storage.rollup_chunks``).
``convert_row_table`` reads an old table once (paged, partition after partition), writes
each partition's buckets as chunks - merged with any chunk already there, which wins for an
equal bucket - with the TTL the rows had left, then drops the old table. It is idempotent:
run again after a crash it converts what is left. ``storage.schema.create_schema`` (``ringmon
storage init``) calls it before it records version 3, and services refuse a keyspace below
version 3, so no service writes chunks while a conversion runs.
"""

from __future__ import annotations

import logging
import time

import numpy as np
from cassandra.cluster import Session
from cassandra.concurrent import execute_concurrent_with_args
from cassandra.query import SimpleStatement

from storage import rollup_chunks as chunks
from storage.base import DAY_MS, Resolution
from storage.rollup import Rollup

log = logging.getLogger("ringmon.storage.upgrade")

# old table -> (chunk table, partition column, resolution, partition width in ms)
ROW_TABLES_BEFORE_CHUNKS = {
    "rollup_1m": ("rollup_1m_chunks", "day", Resolution.MINUTE, DAY_MS),
    "rollup_1h": ("rollup_1h_chunks", "bucket", Resolution.HOUR, 32 * DAY_MS),
}
FETCH_ROWS = 5000
CONCURRENCY = 32


def convert_row_table(session: Session, keyspace: str, table: str, ttl_s: int, now_ms: int | None = None) -> int:
    """Pack ``keyspace.table`` (a version-2 rollup table) into chunks, then drop it.

    Blocking driver calls. Returns the number of buckets converted."""
    chunk_table, part_col, resolution, part_ms = ROW_TABLES_BEFORE_CHUNKS[table]
    now = int(time.time() * 1000) if now_ms is None else now_ms
    span = chunks.chunk_span(resolution)
    cols = ", ".join(chunks.STORED.values())
    read_chunk = session.prepare(
        f"SELECT data, {cols} FROM {keyspace}.{chunk_table} WHERE series_id = ? AND {part_col} = ? AND start_ts = ?"
    )
    write_chunk = session.prepare(
        f"INSERT INTO {keyspace}.{chunk_table} (series_id, {part_col}, start_ts, data, {cols})"
        f" VALUES (?, ?, ?, ?{', ?' * len(chunks.COLUMNS)}) USING TTL ?"
    )
    scan = SimpleStatement(
        f"SELECT series_id, {part_col}, ts, {', '.join(chunks.RECORD_AGGREGATES)} FROM {keyspace}.{table}", fetch_size=FETCH_ROWS
    )
    converted = 0
    key: tuple[int, int] | None = None
    rows: list[tuple] = []

    def flush() -> None:
        nonlocal converted
        if key is None or not rows:
            return
        arr = np.array([[float(v) for v in r] for r in rows], dtype=np.float64)
        order = np.argsort(arr[:, 0], kind="stable")
        ts = arr[order, 0].astype(np.int64)
        old = Rollup.from_columns(ts, {name: arr[order, i + 1] for i, name in enumerate(chunks.RECORD_AGGREGATES)})
        params = []
        for start, part in chunks.split(resolution, old):
            left_s = ttl_s - (now - (start + span)) // 1000
            if left_s <= 0:
                continue  # would have expired by now
            there = session.execute(read_chunk, (key[0], start // part_ms, start)).one()
            if there is not None:
                stored = chunks.payload(there[0], chunks.COLUMNS, there[1:])
                part = chunks.merge(part, chunks.decode_payload(start, stored))
            encoded = chunks.encode_columns(resolution, start, part)
            params.append(
                (key[0], start // part_ms, start, b"", *(encoded[c] for c in chunks.COLUMNS), int(min(left_s, ttl_s)))
            )
        for ok, result in execute_concurrent_with_args(session, write_chunk, params, concurrency=CONCURRENCY):
            if not ok:
                raise result
        converted += len(rows)

    log.info("packing %s.%s into %s", keyspace, table, chunk_table)
    for r in session.execute(scan, timeout=120):
        k = (int(r[0]), int(r[1]))
        if k != key:
            flush()
            key, rows = k, []
        rows.append(tuple(r[2:]))
    flush()
    session.execute(f"DROP TABLE IF EXISTS {keyspace}.{table}", timeout=120)
    log.info("packed %d buckets of %s.%s into %s; dropped %s", converted, keyspace, table, chunk_table, table)
    return converted
