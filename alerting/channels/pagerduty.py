"""PagerDuty Events API v2: trigger and resolve with a stable dedup_key, severity mapping."""

from __future__ import annotations

import asyncio
import hashlib

import aiohttp

from alerting.channels.base import ChannelConfigError, Integration, Opts, post, render
from alerting.notifier.model import Notification, rfc3339
from common.config_keys import key_error

DEFAULT_URL = "https://events.pagerduty.com/v2/enqueue"
PD_SEVERITIES = ("critical", "error", "warning", "info")
DEFAULT_SEVERITY_MAP = {"critical": "critical", "page": "critical", "error": "error", "warning": "warning",
                        "warn": "warning", "info": "info", "none": "info"}
DEFAULT_SUMMARY = ('{{ .CommonLabels.alertname }}{{ if .CommonAnnotations.summary }}: {{ .CommonAnnotations.summary }}'
                   '{{ end }} ({{ len .Alerts }} alert{{ if gt (len .Alerts) 1 }}s{{ end }})')


def dedup_key(group_key: str) -> str:
    """Stable per notification group, so trigger and resolve address the same PagerDuty incident."""
    return hashlib.sha256(group_key.encode()).hexdigest()


class PagerDutyIntegration(Integration):
    kind = "pagerduty"
    KEYS = ("routing_key", "url", "send_resolved", "severity", "severity_label", "severity_map",
            "summary", "source", "component", "group", "class", "client", "client_url", "timeout")

    def __init__(self, index: int, routing_key: str, url: str = DEFAULT_URL, send_resolved: bool = True,
                 severity: str = "", severity_label: str = "severity", severity_map: dict[str, str] | None = None,
                 summary: str = DEFAULT_SUMMARY, source: str = "", component: str = "", group: str = "",
                 class_: str = "", client: str = "Ringmon", client_url: str = "", timeout_s: float = 10.0) -> None:
        super().__init__(index, send_resolved)
        self.routing_key = routing_key
        self.url = url
        self.severity = severity
        self.severity_label = severity_label
        self.severity_map = {**DEFAULT_SEVERITY_MAP, **(severity_map or {})}
        self.summary = summary
        self.source = source
        self.component = component
        self.group = group
        self.class_ = class_
        self.client = client
        self.client_url = client_url
        self.timeout_s = timeout_s

    @classmethod
    def from_config(cls, index: int, data: dict, where: str) -> PagerDutyIntegration:
        o = Opts(data, where, cls.KEYS)
        smap = o.str_map("severity_map")
        for k, v in smap.items():
            if v not in PD_SEVERITIES:
                raise ChannelConfigError(key_error(
                    o.data.get("severity_map"), f"{where}.severity_map", k, f"must be one of {', '.join(PD_SEVERITIES)}, got {v!r}"
                ))
        sev = o.str("severity", "")
        if sev and "{{" not in sev and sev not in PD_SEVERITIES:
            raise o.error("severity", f"must be one of {', '.join(PD_SEVERITIES)} or a template, got {sev!r}")
        return cls(index, o.str("routing_key"), o.url("url", DEFAULT_URL), o.bool("send_resolved", True), sev,
                   o.str("severity_label", "severity"), smap,
                   o.template("summary", DEFAULT_SUMMARY),
                   o.str("source", ""), o.str("component", ""), o.str("group", ""), o.str("class", ""),
                   o.str("client", "Ringmon"), o.str("client_url", ""), o.duration("timeout", 10.0))

    def pd_severity(self, n: Notification) -> str:
        if self.severity:
            s = render(self.severity, n, "pagerduty.severity") if "{{" in self.severity else self.severity
            return s if s in PD_SEVERITIES else "error"
        value = n.common_labels().get(self.severity_label) or next(
            (a.labels.get(self.severity_label, "") for a in n.firing or n.alerts), "")
        return self.severity_map.get(value.lower(), "error")

    def event(self, n: Notification) -> dict:
        action = "trigger" if n.firing else "resolve"
        ev: dict = {"routing_key": self.routing_key, "event_action": action, "dedup_key": dedup_key(n.group_key)}
        if action == "resolve":
            return ev
        first = n.firing[0]
        summary = render(self.summary, n, "pagerduty.summary")[:1024]
        payload = {
            "summary": summary,
            "source": self.source or first.labels.get("instance") or n.common_labels().get("job") or "ringmon",
            "severity": self.pd_severity(n),
            "timestamp": rfc3339(first.starts_at),
            "custom_details": {
                "firing": [{"labels": a.labels, "annotations": a.annotations} for a in n.firing],
                "num_firing": len(n.firing),
                "num_resolved": len(n.resolved),
                "group_labels": n.group_labels,
            },
        }
        for key, val in (("component", self.component), ("group", self.group), ("class", self.class_)):
            if val:
                payload[key] = val
        ev["payload"] = payload
        ev["client"] = self.client
        if self.client_url or n.external_url:
            ev["client_url"] = self.client_url or n.external_url
        return ev

    async def notify(self, n: Notification, session: aiohttp.ClientSession) -> None:
        event = await asyncio.to_thread(self.event, n)  # templates expand off the event loop
        await post(session, self.url, self.timeout_s, "pagerduty", json=event)
