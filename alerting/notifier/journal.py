"""The notification journal: what Ringmon's own receivers were handed, for the web UI to list.

One entry per notification delivered to the ``notification_log`` channel or POSTed to the web
server's webhook sink (``/-/webhook-sink/<name>``): when, to which receiver, how it came,
its status, group labels and alerts (Alertmanager v4 form). Kept in a SQLite file under the
data dir, the newest ``max_entries`` only. Not the dedup log (``nflog.py``): that one says
what was sent per group, this one shows what arrived.
"""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from alerting.notifier.model import Notification
from alerting.sqlitedb import AlertingDB

JOURNAL_FILE = "notifications.db"


@dataclass
class JournalEntry:
    """One delivered notification as the notifications page shows it."""

    receiver: str
    via: str  # "notification log" or "webhook sink <name>"
    status: str  # firing | resolved
    group_labels: dict[str, str] = field(default_factory=dict)
    alerts: list[dict[str, Any]] = field(default_factory=list)  # v4 alerts: status, labels, annotations, ...
    at: float = field(default_factory=time.time)
    id: int = 0

    @classmethod
    def from_notification(cls, n: Notification, via: str) -> JournalEntry:
        d = n.to_v4()
        return cls(n.receiver, via, d["status"], d["groupLabels"], d["alerts"], at=time.time())

    @classmethod
    def from_webhook(cls, payload: Any, via: str) -> JournalEntry:
        """An Alertmanager v4 webhook body; ValueError names what is wrong with it."""
        if not isinstance(payload, dict):
            raise ValueError("expected a JSON object (the Alertmanager webhook payload)")
        alerts = payload.get("alerts")
        if not isinstance(alerts, list) or not all(isinstance(a, dict) for a in alerts):
            raise ValueError("alerts: expected a list of objects")
        for i, a in enumerate(alerts):
            for key in ("labels", "annotations"):  # the page lists both; absent or empty is fine
                kv = a.get(key) or {}
                if not isinstance(kv, dict) or not all(isinstance(v, str) for v in kv.values()):
                    raise ValueError(f"alerts[{i}].{key}: expected an object of strings")
        group = payload.get("groupLabels") or {}
        if not isinstance(group, dict):
            raise ValueError("groupLabels: expected an object")
        status = str(payload.get("status", ""))
        if status not in ("firing", "resolved"):
            raise ValueError(f"status: expected firing or resolved, got {status!r}")
        return cls(str(payload.get("receiver", "")), via, status, {str(k): str(v) for k, v in group.items()}, alerts)


class NotificationRecorder(Protocol):
    """Where the ``notification_log`` channel and the webhook sink put what they receive."""

    async def record(self, entry: JournalEntry) -> None: ...


_SCHEMA = """
CREATE TABLE IF NOT EXISTS notifications (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at REAL NOT NULL,
    receiver TEXT NOT NULL,
    via TEXT NOT NULL,
    status TEXT NOT NULL,
    group_labels TEXT NOT NULL,
    alerts TEXT NOT NULL
);
"""


class NotificationJournal:
    """The journal in a SQLite file; ``recent`` lists the newest entries first."""

    def __init__(self, path: str | Path, max_entries: int = 1000) -> None:
        self.db = AlertingDB(path)
        self.max_entries = max_entries

    @classmethod
    def in_data_dir(cls, data_dir: str | Path) -> NotificationJournal:
        return cls(Path(data_dir) / JOURNAL_FILE)

    async def record(self, entry: JournalEntry) -> None:
        await self.db.ensure_schema("notifications", _SCHEMA)
        args = (entry.at, entry.receiver, entry.via, entry.status, json.dumps(entry.group_labels), json.dumps(entry.alerts))
        keep = self.max_entries

        def run(con: sqlite3.Connection) -> None:
            cur = con.execute(
                "INSERT INTO notifications(at, receiver, via, status, group_labels, alerts) VALUES (?,?,?,?,?,?)", args
            )
            entry.id = int(cur.lastrowid or 0)
            con.execute("DELETE FROM notifications WHERE id <= ?", (entry.id - keep,))

        await self.db.run(run)

    async def recent(self, limit: int = 200) -> list[JournalEntry]:
        await self.db.ensure_schema("notifications", _SCHEMA)
        rows = await self.db.run(
            lambda con: con.execute(
                "SELECT id, at, receiver, via, status, group_labels, alerts FROM notifications ORDER BY id DESC LIMIT ?",
                (limit,),
            ).fetchall()
        )
        return [JournalEntry(r[2], r[3], r[4], json.loads(r[5]), json.loads(r[6]), at=r[1], id=r[0]) for r in rows]

    async def close(self) -> None:
        await self.db.close()
