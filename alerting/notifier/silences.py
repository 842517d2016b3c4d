"""Silences: matchers plus author, comment and a time window; stored so they survive restarts."""

from __future__ import annotations

import abc
import builtins
import json
import sqlite3
import time
import uuid
from dataclasses import dataclass, field

from alerting.notifier.matchers import format_matchers, matches, parse_matchers
from alerting.sqlitedb import AlertingDB
from storage.matchers import Matcher, MatchOp


class SilenceError(ValueError):
    """A silence that cannot be created or changed; the message says why."""


@dataclass
class Silence:
    id: str
    matchers: list[Matcher]
    starts_at: float
    ends_at: float
    created_by: str
    comment: str
    updated_at: float = field(default_factory=time.time)

    def state(self, now: float | None = None) -> str:
        t = time.time() if now is None else now
        if t < self.starts_at:
            return "pending"
        if t >= self.ends_at:
            return "expired"
        return "active"

    def is_active(self, now: float | None = None) -> bool:
        return self.state(now) == "active"

    def mutes(self, labels: dict[str, str], now: float | None = None) -> bool:
        return self.is_active(now) and matches(self.matchers, labels)

    def to_json(self) -> dict:
        return {
            "id": self.id,
            "matchers": [{"name": m.name, "op": m.op.value, "value": m.value} for m in self.matchers],
            "starts_at": self.starts_at,
            "ends_at": self.ends_at,
            "created_by": self.created_by,
            "comment": self.comment,
            "updated_at": self.updated_at,
        }

    @classmethod
    def from_json(cls, d: dict) -> Silence:
        return cls(
            id=d["id"],
            matchers=[Matcher(m["name"], MatchOp(m["op"]), m["value"]) for m in d["matchers"]],
            starts_at=float(d["starts_at"]),
            ends_at=float(d["ends_at"]),
            created_by=d.get("created_by", ""),
            comment=d.get("comment", ""),
            updated_at=float(d.get("updated_at", 0)),
        )

    def describe(self) -> str:
        return format_matchers(self.matchers)


def new_silence(
    matchers: list[Matcher] | str,
    created_by: str,
    comment: str,
    duration_s: float | None = None,
    starts_at: float | None = None,
    ends_at: float | None = None,
    now: float | None = None,
) -> Silence:
    """Validate and build a silence (an author, a comment and at least one matcher are required)."""
    t = time.time() if now is None else now
    ms = parse_matchers(matchers) if isinstance(matchers, str) else list(matchers)
    if not ms:
        raise SilenceError("a silence needs at least one matcher")
    if all(m.matches_empty for m in ms):
        raise SilenceError("at least one matcher must not match the empty string (it would silence everything)")
    if not created_by.strip():
        raise SilenceError("a silence needs an author (created_by)")
    if not comment.strip():
        raise SilenceError("a silence needs a comment")
    start = t if starts_at is None else starts_at
    if ends_at is None:
        if duration_s is None or duration_s <= 0:
            raise SilenceError("a silence needs a positive duration or an end time")
        ends_at = start + duration_s
    if ends_at <= start:
        raise SilenceError("a silence must end after it starts")
    return Silence(uuid.uuid4().hex, ms, start, ends_at, created_by.strip(), comment.strip(), t)


class SilenceStore(abc.ABC):
    """Where silences live (SQLite in standalone; Cassandra implements the same calls)."""

    @abc.abstractmethod
    async def put(self, silence: Silence) -> None: ...

    @abc.abstractmethod
    async def get(self, silence_id: str) -> Silence | None: ...

    @abc.abstractmethod
    async def list(self) -> list[Silence]: ...

    @abc.abstractmethod
    async def delete_expired_before(self, ts: float) -> int: ...


_SCHEMA = """
CREATE TABLE IF NOT EXISTS silences (
    id TEXT PRIMARY KEY,
    body TEXT NOT NULL,
    ends_at REAL NOT NULL
);
"""


class SQLiteSilenceStore(SilenceStore):
    def __init__(self, db: AlertingDB) -> None:
        self.db = db

    async def _schema(self) -> None:
        await self.db.ensure_schema("silences", _SCHEMA)

    async def put(self, silence: Silence) -> None:
        await self._schema()
        body = json.dumps(silence.to_json())

        def run(con: sqlite3.Connection) -> None:
            con.execute(
                "INSERT INTO silences(id, body, ends_at) VALUES (?,?,?) "
                "ON CONFLICT(id) DO UPDATE SET body=excluded.body, ends_at=excluded.ends_at",
                (silence.id, body, silence.ends_at),
            )

        await self.db.run(run)

    async def get(self, silence_id: str) -> Silence | None:
        await self._schema()
        row = await self.db.run(lambda con: con.execute("SELECT body FROM silences WHERE id=?", (silence_id,)).fetchone())
        return Silence.from_json(json.loads(row[0])) if row else None

    async def list(self) -> list[Silence]:
        await self._schema()
        rows = await self.db.run(lambda con: con.execute("SELECT body FROM silences").fetchall())
        out = [Silence.from_json(json.loads(r[0])) for r in rows]
        out.sort(key=lambda s: (s.starts_at, s.id))
        return out

    async def delete_expired_before(self, ts: float) -> int:
        await self._schema()
        return await self.db.run(lambda con: con.execute("DELETE FROM silences WHERE ends_at < ?", (ts,)).rowcount)


class Silences:
    """The silence API: add, list, expire, and the muting check used by the pipeline."""

    def __init__(self, store: SilenceStore, refresh_s: float = 1.0) -> None:
        self.store = store
        self.refresh_s = refresh_s
        self._cache: list[Silence] = []
        self._loaded_at = -1e18

    async def add(self, silence: Silence) -> Silence:
        await self.store.put(silence)
        self._loaded_at = -1e18
        return silence

    async def create(self, matchers: str | list[Matcher], created_by: str, comment: str, duration_s: float) -> Silence:
        return await self.add(new_silence(matchers, created_by, comment, duration_s))

    async def list(self, include_expired: bool = True, now: float | None = None) -> list[Silence]:
        items = await self.store.list()
        if not include_expired:
            items = [s for s in items if s.state(now) != "expired"]
        return items

    async def find(self, prefix: str) -> Silence:
        exact = await self.store.get(prefix)
        if exact is not None:
            return exact
        hits = [s for s in await self.store.list() if s.id.startswith(prefix)]
        if not hits:
            raise SilenceError(f"no silence with id {prefix!r}")
        if len(hits) > 1:
            raise SilenceError(f"silence id prefix {prefix!r} is ambiguous ({len(hits)} silences)")
        return hits[0]

    async def expire(self, silence_id: str, now: float | None = None) -> Silence:
        t = time.time() if now is None else now
        s = await self.find(silence_id)
        if s.state(t) == "expired":
            raise SilenceError(f"silence {s.id} already expired")
        s.ends_at = max(t, s.starts_at)
        s.updated_at = t
        await self.store.put(s)
        self._loaded_at = -1e18
        return s

    async def refresh(self, now: float | None = None) -> None:
        t = time.monotonic()
        if t - self._loaded_at >= self.refresh_s:
            self._cache = await self.store.list()
            self._loaded_at = t

    def muted_by(self, labels: dict[str, str], now: float | None = None) -> builtins.list[str]:
        """Ids of active silences muting ``labels`` (from the last refresh)."""
        return [s.id for s in self._cache if s.mutes(labels, now)]


__all__ = ["Silence", "SilenceError", "SilenceStore", "SQLiteSilenceStore", "Silences", "new_silence", "parse_matchers"]
