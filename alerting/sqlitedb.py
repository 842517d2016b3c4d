"""A small SQLite helper for alerting's own tables (alert state, silences, notification log).

One connection used from one worker thread, WAL mode so several alerter processes on one
host may share the file; every call runs in that thread so the event loop never blocks.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")


class AlertingDB:
    """A SQLite file with a single-thread executor; ``run(fn)`` calls ``fn(connection)``."""

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="alerting-sqlite")
        self._con: sqlite3.Connection | None = None
        self._lock = threading.Lock()
        self._schemas: set[str] = set()

    def _connect(self) -> sqlite3.Connection:
        if self._con is None:
            con = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
            con.execute("PRAGMA journal_mode=WAL")
            con.execute("PRAGMA synchronous=NORMAL")
            con.execute("PRAGMA busy_timeout=30000")
            self._con = con
        return self._con

    def run_sync(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        with self._lock:
            return fn(self._connect())

    async def run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, self.run_sync, fn)

    async def ensure_schema(self, name: str, ddl: str) -> None:
        if name in self._schemas:
            return

        def apply(con: sqlite3.Connection) -> None:
            con.executescript(ddl)

        await self.run(apply)
        self._schemas.add(name)

    async def close(self) -> None:
        def shut(con: sqlite3.Connection) -> None:
            con.close()

        if self._con is not None:
            await self.run(shut)
            self._con = None
        self._pool.shutdown(wait=True)


def transaction(con: sqlite3.Connection, fn: Callable[[sqlite3.Connection], T]) -> T:
    """Run ``fn`` inside BEGIN IMMEDIATE ... COMMIT (rolled back on error)."""
    con.execute("BEGIN IMMEDIATE")
    try:
        out = fn(con)
    except BaseException:
        con.execute("ROLLBACK")
        raise
    con.execute("COMMIT")
    return out
