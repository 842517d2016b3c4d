"""The notification log: what was last delivered per (group, receiver, integration).

Written only after a channel accepted a notification and read before sending, so a restart
neither loses nor repeats notifications (at least once: a crash between delivery and the
log write may repeat one).
"""

from __future__ import annotations

import abc
import json
import sqlite3
import time
from dataclasses import dataclass, field

from alerting.sqlitedb import AlertingDB


@dataclass
class NflogEntry:
    key: str  # "<group_key>|<receiver>|<integration>"
    firing: set[str] = field(default_factory=set)  # alert fingerprints
    resolved: set[str] = field(default_factory=set)
    sent_at: float = field(default_factory=time.time)
    expires_at: float = 0.0


def nflog_key(group_key: str, receiver: str, integration: str) -> str:
    return f"{group_key}|{receiver}|{integration}"


def needs_update(entry: NflogEntry | None, firing: set[str], resolved: set[str], send_resolved: bool, repeat_s: float, now: float) -> bool:
    """Alertmanager's dedup rule: notify on new firing alerts, resolutions, or after repeat_interval."""
    if entry is None:
        return bool(firing)
    if not firing <= entry.firing:
        return True
    if not firing:
        return bool(entry.firing)
    if send_resolved and not resolved <= entry.resolved:
        return True
    return entry.sent_at < now - repeat_s


class NotificationLog(abc.ABC):
    @abc.abstractmethod
    async def get(self, key: str) -> NflogEntry | None: ...

    @abc.abstractmethod
    async def put(self, entry: NflogEntry) -> None: ...

    @abc.abstractmethod
    async def gc(self, now: float) -> int: ...


_SCHEMA = """
CREATE TABLE IF NOT EXISTS nflog (
    key TEXT PRIMARY KEY,
    firing TEXT NOT NULL,
    resolved TEXT NOT NULL,
    sent_at REAL NOT NULL,
    expires_at REAL NOT NULL
);
"""


class SQLiteNotificationLog(NotificationLog):
    def __init__(self, db: AlertingDB) -> None:
        self.db = db

    async def get(self, key: str) -> NflogEntry | None:
        await self.db.ensure_schema("nflog", _SCHEMA)
        row = await self.db.run(
            lambda con: con.execute("SELECT firing, resolved, sent_at, expires_at FROM nflog WHERE key=?", (key,)).fetchone()
        )
        if row is None:
            return None
        return NflogEntry(key, set(json.loads(row[0])), set(json.loads(row[1])), row[2], row[3])

    async def put(self, entry: NflogEntry) -> None:
        await self.db.ensure_schema("nflog", _SCHEMA)
        args = (entry.key, json.dumps(sorted(entry.firing)), json.dumps(sorted(entry.resolved)), entry.sent_at, entry.expires_at)

        def run(con: sqlite3.Connection) -> None:
            con.execute(
                "INSERT INTO nflog(key, firing, resolved, sent_at, expires_at) VALUES (?,?,?,?,?) "
                "ON CONFLICT(key) DO UPDATE SET firing=excluded.firing, resolved=excluded.resolved, "
                "sent_at=excluded.sent_at, expires_at=excluded.expires_at",
                args,
            )

        await self.db.run(run)

    async def gc(self, now: float) -> int:
        await self.db.ensure_schema("nflog", _SCHEMA)
        return await self.db.run(lambda con: con.execute("DELETE FROM nflog WHERE expires_at < ?", (now,)).rowcount)


class MemoryNotificationLog(NotificationLog):
    """For unit tests and ``rules test``: same semantics, nothing persisted."""

    def __init__(self) -> None:
        self.entries: dict[str, NflogEntry] = {}

    async def get(self, key: str) -> NflogEntry | None:
        return self.entries.get(key)

    async def put(self, entry: NflogEntry) -> None:
        self.entries[entry.key] = entry

    async def gc(self, now: float) -> int:
        dead = [k for k, e in self.entries.items() if e.expires_at < now]
        for k in dead:
            del self.entries[k]
        return len(dead)
