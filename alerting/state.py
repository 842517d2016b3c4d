"""Where alert state lives between evaluations and across restarts and failovers.

One record per alert instance of a rule group: pending/firing/inactive, since when, when it
was last sent. ``save_group`` replaces a group's records atomically, so a restarted or new
owner of the group resumes pending timers and firing alerts instead of starting over.
"""

from __future__ import annotations

import abc
import json
import sqlite3
from dataclasses import asdict, dataclass, field

from alerting.sqlitedb import AlertingDB, transaction

PENDING = "pending"
FIRING = "firing"
INACTIVE = "inactive"


@dataclass
class AlertStateRecord:
    """One alert instance. Times are epoch seconds (floats); 0 means never."""

    rule: str
    fingerprint: str
    labels: dict[str, str]
    annotations: dict[str, str] = field(default_factory=dict)
    state: str = PENDING
    value: float = 0.0
    active_at: float = 0.0
    fired_at: float = 0.0
    resolved_at: float = 0.0
    last_sent_at: float = 0.0
    keep_firing_since: float = 0.0
    valid_until: float = 0.0

    def to_json(self) -> str:
        d = asdict(self)
        v = d["value"]
        d["value"] = repr(v) if v != v or v in (float("inf"), float("-inf")) else v
        return json.dumps(d, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> AlertStateRecord:
        d = json.loads(text)
        d["value"] = float(d.get("value", 0.0))
        known = {k: d[k] for k in cls.__dataclass_fields__ if k in d}
        return cls(**known)


class AlertStateStore(abc.ABC):
    """Per-group alert state; implementations: SQLite (standalone), Cassandra (cluster)."""

    @abc.abstractmethod
    async def load_group(self, group_key: str) -> list[AlertStateRecord]: ...

    @abc.abstractmethod
    async def save_group(self, group_key: str, records: list[AlertStateRecord]) -> None: ...

    @abc.abstractmethod
    async def group_keys(self) -> list[str]: ...

    async def delete_group(self, group_key: str) -> None:
        await self.save_group(group_key, [])

    async def close(self) -> None:  # pragma: no cover - default no-op
        return None


_SCHEMA = """
CREATE TABLE IF NOT EXISTS alert_state (
    group_key TEXT NOT NULL,
    rule TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    body TEXT NOT NULL,
    PRIMARY KEY (group_key, rule, fingerprint)
);
"""


class SQLiteAlertStateStore(AlertStateStore):
    def __init__(self, db: AlertingDB) -> None:
        self.db = db

    async def load_group(self, group_key: str) -> list[AlertStateRecord]:
        await self.db.ensure_schema("alert_state", _SCHEMA)
        rows = await self.db.run(
            lambda con: con.execute(
                "SELECT body FROM alert_state WHERE group_key=? ORDER BY rule, fingerprint", (group_key,)
            ).fetchall()
        )
        return [AlertStateRecord.from_json(r[0]) for r in rows]

    async def save_group(self, group_key: str, records: list[AlertStateRecord]) -> None:
        await self.db.ensure_schema("alert_state", _SCHEMA)
        rows = [(group_key, r.rule, r.fingerprint, r.to_json()) for r in records]

        def write(con: sqlite3.Connection) -> None:
            con.execute("DELETE FROM alert_state WHERE group_key=?", (group_key,))
            con.executemany("INSERT INTO alert_state(group_key, rule, fingerprint, body) VALUES (?,?,?,?)", rows)

        await self.db.run(lambda con: transaction(con, write))

    async def group_keys(self) -> list[str]:
        await self.db.ensure_schema("alert_state", _SCHEMA)
        rows = await self.db.run(lambda con: con.execute("SELECT DISTINCT group_key FROM alert_state").fetchall())
        return sorted(r[0] for r in rows)


class MemoryAlertStateStore(AlertStateStore):
    """For ``rules test`` and unit tests: nothing persisted."""

    def __init__(self) -> None:
        self.groups: dict[str, list[str]] = {}

    async def load_group(self, group_key: str) -> list[AlertStateRecord]:
        return [AlertStateRecord.from_json(t) for t in self.groups.get(group_key, [])]

    async def save_group(self, group_key: str, records: list[AlertStateRecord]) -> None:
        self.groups[group_key] = [r.to_json() for r in records]

    async def group_keys(self) -> list[str]:
        return sorted(self.groups)
