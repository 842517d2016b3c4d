"""Forwarding to an existing Alertmanager: POST the alerts to its ``/api/v2/alerts``."""

from __future__ import annotations

import aiohttp

from alerting.channels.base import Integration, Opts, post
from alerting.notifier.model import Notification, rfc3339


class AlertmanagerIntegration(Integration):
    kind = "alertmanager"
    KEYS = ("url", "send_resolved", "timeout")

    def __init__(self, index: int, url: str, send_resolved: bool = True, timeout_s: float = 10.0) -> None:
        super().__init__(index, send_resolved)
        self.url = url.rstrip("/")
        self.timeout_s = timeout_s

    @classmethod
    def from_config(cls, index: int, data: dict, where: str) -> AlertmanagerIntegration:
        o = Opts(data, where, cls.KEYS)
        return cls(index, o.url("url"), o.bool("send_resolved", True), o.duration("timeout", 10.0))

    @staticmethod
    def payload(n: Notification) -> list[dict]:
        out = []
        for a in n.alerts:
            item = {
                "labels": dict(a.labels),
                "annotations": dict(a.annotations),
                "startsAt": rfc3339(a.starts_at),
                "generatorURL": a.generator_url or n.external_url or "",
            }
            if a.ends_at is not None:
                item["endsAt"] = rfc3339(a.ends_at)
            out.append(item)
        return out

    async def notify(self, n: Notification, session: aiohttp.ClientSession) -> None:
        url = self.url if self.url.endswith("/api/v2/alerts") else self.url + "/api/v2/alerts"
        await post(session, url, self.timeout_s, "alertmanager", json=self.payload(n))
