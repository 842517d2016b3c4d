"""Alerts as the notifier sees them, and the context of one notification."""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime

ZERO_TIME = "0001-01-01T00:00:00Z"


def fingerprint(labels: dict[str, str]) -> str:
    """Stable 16-hex-digit identity of a label set."""
    h = hashlib.sha256()
    for k in sorted(labels):
        h.update(k.encode())
        h.update(b"\xff")
        h.update(labels[k].encode())
        h.update(b"\xff")
    return h.hexdigest()[:16]


def rfc3339(ts: float | None) -> str:
    if ts is None:
        return ZERO_TIME
    dt = datetime.fromtimestamp(ts, UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


@dataclass
class Alert:
    """One alert instance: firing while ``ends_at`` is None or in the future."""

    labels: dict[str, str]
    annotations: dict[str, str] = field(default_factory=dict)
    starts_at: float = field(default_factory=time.time)
    ends_at: float | None = None
    generator_url: str = ""
    updated_at: float = field(default_factory=time.time)

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.labels)

    @property
    def name(self) -> str:
        return self.labels.get("alertname", "")

    def resolved(self, now: float | None = None) -> bool:
        return self.ends_at is not None and self.ends_at <= (time.time() if now is None else now)

    def status(self, now: float | None = None) -> str:
        return "resolved" if self.resolved(now) else "firing"

    def to_v4(self, now: float | None = None) -> dict:
        """The alert in Alertmanager's webhook (v4) form."""
        resolved = self.resolved(now)
        return {
            "status": "resolved" if resolved else "firing",
            "labels": dict(self.labels),
            "annotations": dict(self.annotations),
            "startsAt": rfc3339(self.starts_at),
            "endsAt": rfc3339(self.ends_at) if resolved else ZERO_TIME,
            "generatorURL": self.generator_url,
            "fingerprint": self.fingerprint,
        }

    def to_json(self) -> dict:
        return {
            "labels": self.labels,
            "annotations": self.annotations,
            "starts_at": self.starts_at,
            "ends_at": self.ends_at,
            "generator_url": self.generator_url,
        }

    @classmethod
    def from_json(cls, d: dict) -> Alert:
        return cls(
            labels=dict(d["labels"]),
            annotations=dict(d.get("annotations") or {}),
            starts_at=float(d["starts_at"]),
            ends_at=None if d.get("ends_at") is None else float(d["ends_at"]),
            generator_url=d.get("generator_url", ""),
        )


@dataclass
class Notification:
    """What a channel is asked to deliver: one group's alerts for one receiver."""

    receiver: str
    group_key: str
    group_labels: dict[str, str]
    alerts: list[Alert]
    external_url: str = ""
    truncated: int = 0
    now: float = field(default_factory=time.time)

    @property
    def firing(self) -> list[Alert]:
        return [a for a in self.alerts if not a.resolved(self.now)]

    @property
    def resolved(self) -> list[Alert]:
        return [a for a in self.alerts if a.resolved(self.now)]

    @property
    def status(self) -> str:
        return "firing" if self.firing else "resolved"

    def common_labels(self) -> dict[str, str]:
        return _common([a.labels for a in self.alerts])

    def common_annotations(self) -> dict[str, str]:
        return _common([a.annotations for a in self.alerts])

    def to_v4(self) -> dict:
        """The Alertmanager webhook payload (version 4)."""
        return {
            "version": "4",
            "groupKey": self.group_key,
            "truncatedAlerts": self.truncated,
            "status": self.status,
            "receiver": self.receiver,
            "groupLabels": dict(self.group_labels),
            "commonLabels": self.common_labels(),
            "commonAnnotations": self.common_annotations(),
            "externalURL": self.external_url,
            "alerts": [a.to_v4(self.now) for a in self.alerts],
        }

    def template_data(self) -> dict:
        """Data for channel templates (email bodies, SMS text): Alertmanager's names."""
        d = self.to_v4()
        return {
            "Receiver": self.receiver,
            "Status": d["status"],
            "GroupKey": self.group_key,
            "GroupLabels": d["groupLabels"],
            "CommonLabels": d["commonLabels"],
            "CommonAnnotations": d["commonAnnotations"],
            "ExternalURL": self.external_url,
            "Alerts": [
                {
                    "Status": a["status"],
                    "Labels": a["labels"],
                    "Annotations": a["annotations"],
                    "StartsAt": a["startsAt"],
                    "EndsAt": a["endsAt"],
                    "GeneratorURL": a["generatorURL"],
                    "Fingerprint": a["fingerprint"],
                }
                for a in d["alerts"]
            ],
            "Firing": len(self.firing),
            "Resolved": len(self.resolved),
        }


def _common(maps: list[dict[str, str]]) -> dict[str, str]:
    if not maps:
        return {}
    out = dict(maps[0])
    for m in maps[1:]:
        for k in list(out):
            if m.get(k) != out[k]:
                del out[k]
    return out
