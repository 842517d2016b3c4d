"""Server-side session records, so logging out ends a session everywhere.

A session cookie names a record (random id, user, expiry); the web server accepts the
cookie only while its record exists. Logout deletes the record, so a copied cookie is
refused from then on, after restarts too (SQLite file in the data directory) and on every
web process of a cluster (the Cassandra keyspace they share). ``MemorySessionStore`` is for
an app without a data directory (tests, a bare ``create_app``).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Protocol


class SessionStore(Protocol):
    async def create(self, sid: str, user: str, expires_at: float) -> None: ...

    async def user(self, sid: str, now: float | None = None) -> str | None:
        """The user of a live session ``sid``; None when unknown, ended or expired."""
        ...

    async def delete(self, sid: str) -> None: ...


class MemorySessionStore:
    """Sessions of this process only (lost on restart)."""

    def __init__(self) -> None:
        self._rows: dict[str, tuple[str, float]] = {}

    async def create(self, sid: str, user: str, expires_at: float) -> None:
        now = time.time()
        if len(self._rows) > 10_000:
            self._rows = {k: v for k, v in self._rows.items() if v[1] > now}
        self._rows[sid] = (user, expires_at)

    async def user(self, sid: str, now: float | None = None) -> str | None:
        row = self._rows.get(sid)
        if row is None or row[1] <= (time.time() if now is None else now):
            return None
        return row[0]

    async def delete(self, sid: str) -> None:
        self._rows.pop(sid, None)


SQLITE_DDL = """
CREATE TABLE IF NOT EXISTS web_sessions (sid TEXT PRIMARY KEY, username TEXT NOT NULL, expires_at REAL NOT NULL);
CREATE INDEX IF NOT EXISTS web_sessions_expiry ON web_sessions (expires_at);
"""


class SQLiteSessionStore:
    """Sessions in a SQLite file (standalone: ``<data_dir>/web-sessions.db``), off the event loop."""

    def __init__(self, path: str | Path) -> None:
        from alerting.sqlitedb import AlertingDB  # the shared small-SQLite helper

        self.db = AlertingDB(path)

    async def create(self, sid: str, user: str, expires_at: float) -> None:
        await self.db.ensure_schema("web_sessions", SQLITE_DDL)
        now = time.time()

        def put(con: Any) -> None:
            con.execute("DELETE FROM web_sessions WHERE expires_at <= ?", (now,))
            con.execute("INSERT OR REPLACE INTO web_sessions VALUES (?, ?, ?)", (sid, user, expires_at))

        await self.db.run(put)

    async def user(self, sid: str, now: float | None = None) -> str | None:
        await self.db.ensure_schema("web_sessions", SQLITE_DDL)
        t = time.time() if now is None else now

        def get(con: Any) -> str | None:
            row = con.execute("SELECT username FROM web_sessions WHERE sid = ? AND expires_at > ?", (sid, t)).fetchone()
            return row[0] if row else None

        return await self.db.run(get)

    async def delete(self, sid: str) -> None:
        await self.db.ensure_schema("web_sessions", SQLITE_DDL)
        await self.db.run(lambda con: con.execute("DELETE FROM web_sessions WHERE sid = ?", (sid,)))

    async def close(self) -> None:
        await self.db.close()


class CassandraSessionStore:
    """Sessions in the Ringmon keyspace (cluster mode: every web process sees every logout).
    Rows expire by TTL; reads and writes at LOCAL_QUORUM."""

    def __init__(self, storage: Any) -> None:
        self.storage = storage  # a storage.cassandra.CassandraStorage (or subclass)
        self.ks = storage.keyspace
        self._ready = False

    async def _exec(self, cql: str, params: tuple = ()) -> list:
        from cassandra import ConsistencyLevel
        from cassandra.query import SimpleStatement

        if not self._ready:
            await self.storage.execute(SimpleStatement(
                f"CREATE TABLE IF NOT EXISTS {self.ks}.web_sessions (sid text PRIMARY KEY, username text, "
                "expires_at double) WITH gc_grace_seconds = 3600", consistency_level=ConsistencyLevel.LOCAL_QUORUM))
            self._ready = True
        pages = await self.storage.execute(SimpleStatement(cql, consistency_level=ConsistencyLevel.LOCAL_QUORUM),
                                           params)
        return [r for page in pages or [] for r in page or []]  # writes answer with empty pages

    async def create(self, sid: str, user: str, expires_at: float) -> None:
        ttl = max(1, int(expires_at - time.time()) + 1)
        await self._exec(f"INSERT INTO {self.ks}.web_sessions (sid, username, expires_at) VALUES (%s, %s, %s) "
                         f"USING TTL {ttl}", (sid, user, expires_at))

    async def user(self, sid: str, now: float | None = None) -> str | None:
        rows = await self._exec(f"SELECT username, expires_at FROM {self.ks}.web_sessions WHERE sid = %s", (sid,))
        t = time.time() if now is None else now
        for r in rows:
            if r[1] > t:
                return str(r[0])
        return None

    async def delete(self, sid: str) -> None:
        await self._exec(f"DELETE FROM {self.ks}.web_sessions WHERE sid = %s", (sid,))
