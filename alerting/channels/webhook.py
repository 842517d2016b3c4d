"""Webhook channel: POSTs the Alertmanager v4 JSON payload.

A URL written as a path (``/-/webhook-sink/oncall``) goes to Ringmon's own web server: the
address the notifier was bound to (standalone: where its web server listens; ``ringmon
alerter``: its ``external_url``).
"""

from __future__ import annotations

import aiohttp

from alerting.channels.base import DeliveryError, Integration, LocalReceivers, Opts, post
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
        self.local = LocalReceivers()

    @classmethod
    def from_config(cls, index: int, data: dict, where: str) -> WebhookIntegration:
        o = Opts(data, where, cls.KEYS)
        url = o.str("url")
        if not url.startswith("/"):
            url = o.url("url")
        elif url.startswith("//"):
            raise o.error("url", f"expected an http(s) URL or a path of Ringmon's web server, got {url!r}")
        return cls(index, url, o.bool("send_resolved", True), int(o.num("max_alerts", 0)),
                   o.duration("timeout", 10.0), o.str_map("headers"))

    def bind(self, local: LocalReceivers) -> None:
        self.local = local

    def target(self) -> str:
        """The URL posted to; a path is resolved against Ringmon's own web server."""
        if not self.url.startswith("/"):
            return self.url
        if not self.local.web_url:
            raise DeliveryError(f"webhook: {self.url} is a path of Ringmon's web server, but this process does not "
                                "know its address (set alerter.external_url)", retryable=False)
        return self.local.web_url.rstrip("/") + self.url

    def payload(self, n: Notification) -> dict:
        body = n.to_v4()
        if self.max_alerts and len(body["alerts"]) > self.max_alerts:
            body["truncatedAlerts"] = len(body["alerts"]) - self.max_alerts
            body["alerts"] = body["alerts"][: self.max_alerts]
        return body

    async def notify(self, n: Notification, session: aiohttp.ClientSession) -> None:
        await post(session, self.target(), self.timeout_s, "webhook", json=self.payload(n), headers=self.headers)
