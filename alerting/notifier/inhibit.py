"""Inhibition: a firing source alert mutes target alerts that share the ``equal`` labels."""

from __future__ import annotations

from dataclasses import dataclass, field

from alerting.notifier.matchers import matches
from alerting.notifier.model import Alert
from storage.matchers import Matcher


@dataclass
class InhibitRule:
    source: list[Matcher]
    target: list[Matcher]
    equal: list[str] = field(default_factory=list)


class Inhibitor:
    def __init__(self, rules: list[InhibitRule]) -> None:
        self.rules = rules

    def inhibited(self, alert: Alert, candidates: list[Alert], now: float) -> bool:
        """True when some firing alert in ``candidates`` inhibits ``alert`` under any rule."""
        labels = alert.labels
        fp = alert.fingerprint
        for rule in self.rules:
            if not matches(rule.target, labels):
                continue
            for src in candidates:
                if src.resolved(now) or src.fingerprint == fp:
                    continue
                if not matches(rule.source, src.labels):
                    continue
                # An alert matching both sides cannot inhibit another that also matches both.
                if matches(rule.target, src.labels) and matches(rule.source, labels):
                    continue
                if all(src.labels.get(e, "") == labels.get(e, "") for e in rule.equal):
                    return True
        return False
