"""The routing tree: which receivers an alert goes to, and how its notifications are grouped."""

from __future__ import annotations

from dataclasses import dataclass, field

from alerting.notifier.matchers import matches
from storage.matchers import Matcher


@dataclass
class Route:
    """One node of the tree; children inherit receiver, grouping and timings unless they set them."""

    receiver: str
    matchers: list[Matcher] = field(default_factory=list)
    continue_matching: bool = False
    group_by: list[str] = field(default_factory=list)
    group_by_all: bool = False  # group_by: ['...']
    group_wait_s: float = 30.0
    group_interval_s: float = 300.0
    repeat_interval_s: float = 4 * 3600.0
    routes: list[Route] = field(default_factory=list)
    path: str = "root"

    def match(self, labels: dict[str, str]) -> list[Route]:
        """The deepest matching routes (Alertmanager semantics, with ``continue``)."""
        if not matches(self.matchers, labels):
            return []
        out: list[Route] = []
        for child in self.routes:
            hit = child.match(labels)
            out.extend(hit)
            if hit and not child.continue_matching:
                break
        return out or [self]

    def group_labels(self, labels: dict[str, str]) -> dict[str, str]:
        if self.group_by_all:
            return dict(labels)
        return {k: labels[k] for k in self.group_by if labels.get(k, "") != ""}

    def group_key(self, labels: dict[str, str]) -> str:
        gl = self.group_labels(labels)
        inner = ",".join(f'{k}="{gl[k]}"' for k in sorted(gl))
        return f"{self.path}:{{{inner}}}"

    def walk(self) -> list[Route]:
        out = [self]
        for c in self.routes:
            out.extend(c.walk())
        return out
