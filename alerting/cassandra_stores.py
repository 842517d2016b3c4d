"""Cassandra implementations of the alert state store, the notification log and the silence store.

They live in the Ringmon keyspace next to the samples (``CassandraStorage`` supplies the
session and its async bridge). Group state is one partition per rule group, replaced
atomically by a single-partition batch (a partition delete one microsecond older than the new
rows), so a failover reads either the old or the new state, never a mix. Reads and writes use
LOCAL_QUORUM so a new owner sees what the old owner wrote.
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING

from cassandra import ConsistencyLevel
from cassandra.query import BatchStatement, BatchType, SimpleStatement

from alerting.notifier.nflog import NflogEntry, NotificationLog
from alerting.notifier.silences import Silence, SilenceStore
from alerting.state import AlertStateRecord, AlertStateStore

if TYPE_CHECKING:
    from storage.cassandra import CassandraStorage

CQL = """
CREATE TABLE IF NOT EXISTS {ks}.alert_state (
    group_key text,
    rule text,
    fingerprint text,
    body text,
    PRIMARY KEY ((group_key), rule, fingerprint)
) WITH compaction = {{'class': 'LeveledCompactionStrategy'}} AND gc_grace_seconds = 3600;
CREATE TABLE IF NOT EXISTS {ks}.notification_log (
    key text PRIMARY KEY,
    firing set<text>,
    resolved set<text>,
    sent_at double,
    expires_at double
) WITH gc_grace_seconds = 3600;
CREATE TABLE IF NOT EXISTS {ks}.silences (
    bucket int,
    id text,
    body text,
    ends_at double,
    PRIMARY KEY ((bucket), id)
) WITH gc_grace_seconds = 3600;
"""

QUORUM = ConsistencyLevel.LOCAL_QUORUM


def alerting_cql(keyspace: str) -> list[str]:
    """The CREATE TABLE statements for alerting's tables in ``keyspace``."""
    return [s.strip() for s in CQL.format(ks=keyspace).split(";") if s.strip()]


class _Base:
    def __init__(self, storage: CassandraStorage, create: bool = True) -> None:
        self.storage = storage  # a storage.cassandra.CassandraStorage
        self.ks = storage.keyspace
        self._ready = not create

    async def _ensure(self) -> None:
        if self._ready:
            return
        for stmt in alerting_cql(self.ks):
            await self.storage.execute(SimpleStatement(stmt, consistency_level=QUORUM))
        self._ready = True

    async def _rows(self, cql: str, params: tuple) -> list:
        pages = await self.storage.execute(SimpleStatement(cql, consistency_level=QUORUM), params)
        return [r for page in pages for r in page]


class CassandraAlertStateStore(_Base, AlertStateStore):
    def __init__(self, storage: CassandraStorage, create: bool = True) -> None:
        super().__init__(storage, create)
        self._last_us = 0

    def _timestamp_us(self) -> int:
        now = int(time.time() * 1_000_000)
        self._last_us = max(now, self._last_us + 2)
        return self._last_us

    async def load_group(self, group_key: str) -> list[AlertStateRecord]:
        await self._ensure()
        rows = await self._rows(f"SELECT body FROM {self.ks}.alert_state WHERE group_key = %s", (group_key,))
        return [AlertStateRecord.from_json(r[0]) for r in rows]

    async def save_group(self, group_key: str, records: list[AlertStateRecord]) -> None:
        await self._ensure()
        ts = self._timestamp_us()
        batch = BatchStatement(batch_type=BatchType.UNLOGGED, consistency_level=QUORUM)
        batch.add(SimpleStatement(f"DELETE FROM {self.ks}.alert_state USING TIMESTAMP {ts - 1} WHERE group_key = %s"),
                  (group_key,))
        for r in records:
            batch.add(SimpleStatement(
                f"INSERT INTO {self.ks}.alert_state (group_key, rule, fingerprint, body) VALUES (%s, %s, %s, %s) "
                f"USING TIMESTAMP {ts}"), (group_key, r.rule, r.fingerprint, r.to_json()))
        await self.storage.execute(batch)

    async def group_keys(self) -> list[str]:
        await self._ensure()
        rows = await self._rows(f"SELECT DISTINCT group_key FROM {self.ks}.alert_state", ())
        return sorted(r[0] for r in rows)


class CassandraNotificationLog(_Base, NotificationLog):
    async def get(self, key: str) -> NflogEntry | None:
        await self._ensure()
        rows = await self._rows(
            f"SELECT firing, resolved, sent_at, expires_at FROM {self.ks}.notification_log WHERE key = %s", (key,))
        if not rows:
            return None
        f, r, sent, exp = rows[0]
        return NflogEntry(key, set(f or ()), set(r or ()), float(sent), float(exp))

    async def put(self, entry: NflogEntry) -> None:
        await self._ensure()
        ttl = max(1, int(entry.expires_at - time.time()))
        await self.storage.execute(SimpleStatement(
            f"INSERT INTO {self.ks}.notification_log (key, firing, resolved, sent_at, expires_at) "
            f"VALUES (%s, %s, %s, %s, %s) USING TTL {ttl}", consistency_level=QUORUM),
            (entry.key, set(entry.firing), set(entry.resolved), entry.sent_at, entry.expires_at))

    async def gc(self, now: float) -> int:
        return 0  # rows expire by TTL


class CassandraSilenceStore(_Base, SilenceStore):
    async def put(self, silence: Silence) -> None:
        await self._ensure()
        await self.storage.execute(SimpleStatement(
            f"INSERT INTO {self.ks}.silences (bucket, id, body, ends_at) VALUES (0, %s, %s, %s)",
            consistency_level=QUORUM), (silence.id, json.dumps(silence.to_json()), silence.ends_at))

    async def get(self, silence_id: str) -> Silence | None:
        await self._ensure()
        rows = await self._rows(f"SELECT body FROM {self.ks}.silences WHERE bucket = 0 AND id = %s", (silence_id,))
        return Silence.from_json(json.loads(rows[0][0])) if rows else None

    async def list(self) -> list[Silence]:
        await self._ensure()
        rows = await self._rows(f"SELECT body FROM {self.ks}.silences WHERE bucket = 0", ())
        out = [Silence.from_json(json.loads(r[0])) for r in rows]
        out.sort(key=lambda s: (s.starts_at, s.id))
        return out

    async def delete_expired_before(self, ts: float) -> int:
        await self._ensure()
        old = [s for s in await self.list() if s.ends_at < ts]
        for s in old:
            await self.storage.execute(SimpleStatement(
                f"DELETE FROM {self.ks}.silences WHERE bucket = 0 AND id = %s", consistency_level=QUORUM), (s.id,))
        return len(old)
