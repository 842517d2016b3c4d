"""Notification-log channel: records the notification in Ringmon's notification journal.

The delivery that never leaves the process: the web UI's notifications page lists what it
recorded. Needs a journal in the same process (``ringmon standalone``); elsewhere use a
webhook to the web server's ``/-/webhook-sink/NAME``.
"""

from __future__ import annotations

import aiohttp

from alerting.channels.base import DeliveryError, Integration, LocalReceivers, Opts
from alerting.notifier.journal import JournalEntry, NotificationRecorder
from alerting.notifier.model import Notification


class NotificationLogIntegration(Integration):
    kind = "notification_log"
    KEYS = ("send_resolved",)

    def __init__(self, index: int, send_resolved: bool = True) -> None:
        super().__init__(index, send_resolved)
        self.local = LocalReceivers()

    @classmethod
    def from_config(cls, index: int, data: dict | None, where: str) -> NotificationLogIntegration:
        o = Opts(data or {}, where, cls.KEYS)
        return cls(index, o.bool("send_resolved", True))

    def bind(self, local: LocalReceivers) -> None:
        self.local = local

    async def notify(self, n: Notification, session: aiohttp.ClientSession) -> None:
        journal: NotificationRecorder | None = self.local.journal
        if journal is None:
            raise DeliveryError("notification_log: this process has no notification log (it is kept by "
                                "`ringmon standalone`); send to the web server's /-/webhook-sink/NAME instead",
                                retryable=False)
        try:
            await journal.record(JournalEntry.from_notification(n, "notification log"))
        except Exception as exc:  # a full disk, a locked file: worth retrying
            raise DeliveryError(f"notification_log: {type(exc).__name__}: {exc}") from None
