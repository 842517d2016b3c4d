"""Webhook channel: POSTs the Alertmanager v4 JSON payload."""

from __future__ import annotations

import aiohttp

from alerting.channels.base import Integration, Opts, post
from alerting.notifier.model import Notification


class WebhookIntegration(Integration):
    kind = "webhook"
    KEYS = ("url", "send_resolved", "max_alerts", "timeout", "headers")

    def __init__(self, index: int, url: str, send_resolved: bool = True, max_alerts: int = 0,
                 timeout_s: float = 10.0, headers: dict[str, str] | None = None) -> None:
        super().__init__(index, send_resolved)
        self.url = url
        self.max_alerts = max_alerts
        self.timeout_s = timeout_s
        self.headers = headers or {}

    @classmethod
    def from_config(cls, index: int, data: dict, where: str) -> WebhookIntegration:
        o = Opts(data, where, cls.KEYS)
        return cls(index, o.url("url"), o.bool("send_resolved", True), int(o.num("max_alerts", 0)),
                   o.duration("timeout", 10.0), o.str_map("headers"))

    def payload(self, n: Notification) -> dict:
        body = n.to_v4()
        if self.max_alerts and len(body["alerts"]) > self.max_alerts:
            body["truncatedAlerts"] = len(body["alerts"]) - self.max_alerts
            body["alerts"] = body["alerts"][: self.max_alerts]
        return body

    async def notify(self, n: Notification, session: aiohttp.ClientSession) -> None:
        await post(session, self.url, self.timeout_s, "webhook", json=self.payload(n), headers=self.headers)
