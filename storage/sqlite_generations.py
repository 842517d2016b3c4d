"""Generation counters in a SQLite store's ``meta`` table.

A process keeps what it read from the file (series lookups, rollup chunks) while the rows
behind it stay as they were. Any process that changes those rows bumps their counter in the
same transaction, so every other process sharing the file sees the change at its next read of
the counter: one primary-key lookup, not a time-to-live guess.
"""

from __future__ import annotations

import sqlite3

# Bumped when final rollup chunk rows are deleted or updated in place (``storage.chunk_cache``).
CHUNK_GENERATION_KEY = "rollup_chunk_generation"
# Bumped when sealed block rows are deleted or rebuilt (the decoded blocks ``sqlite_rollup`` keeps).
BLOCK_GENERATION_KEY = "raw_block_generation"
# Bumped when the series index (``series_day``) gains or loses rows.
INDEX_GENERATION_KEY = "series_index_generation"


def bump_generation(con: sqlite3.Connection, key: str) -> None:
    """Add one to the counter ``key``, inside the caller's transaction."""
    con.execute(
        "INSERT INTO meta (key, value) VALUES (?, '1')"
        " ON CONFLICT (key) DO UPDATE SET value = CAST(CAST(value AS INTEGER) + 1 AS TEXT)",
        (key,),
    )


def read_generation(con: sqlite3.Connection, key: str) -> str | None:
    """The counter ``key`` as stored, or None before its first bump."""
    found = con.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
    return None if found is None else str(found[0])
