"""Label matchers (=, !=, =~, !~) with Prometheus semantics: regexes are RE2, fully anchored."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import Enum

from common.regex import Regex, RegexError, compile_regex
from storage.model import Labels


class MatchOp(str, Enum):
    EQ = "="
    NE = "!="
    RE = "=~"
    NRE = "!~"


@dataclass(frozen=True)
class Matcher:
    """Matches one label of a series; a missing label matches as the empty string."""

    name: str
    op: MatchOp
    value: str
    _regex: Regex | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        op = MatchOp(self.op)
        object.__setattr__(self, "op", op)
        if op in (MatchOp.RE, MatchOp.NRE):
            try:
                rx = compile_regex(self.value)
            except RegexError as exc:
                raise ValueError(f"invalid regex for label {self.name!r}: {exc}") from None
            object.__setattr__(self, "_regex", rx)

    @classmethod
    def parse_op(cls, name: str, op: str, value: str) -> "Matcher":
        return cls(name, MatchOp(op), value)

    def matches_value(self, v: str) -> bool:
        if self.op is MatchOp.EQ:
            return v == self.value
        if self.op is MatchOp.NE:
            return v != self.value
        assert self._regex is not None
        hit = self._regex.matches(v)
        return hit if self.op is MatchOp.RE else not hit

    def matches(self, labels: Labels) -> bool:
        for k, v in labels:
            if k == self.name:
                return self.matches_value(v)
        return self.matches_value("")

    @property
    def matches_empty(self) -> bool:
        return self.matches_value("")

    def __str__(self) -> str:
        return f'{self.name}{self.op.value}"{self.value}"'


def match_all(matchers: Sequence[Matcher], labels: Labels) -> bool:
    return all(m.matches(labels) for m in matchers)


def metric_name_of(matchers: Sequence[Matcher]) -> str | None:
    """The metric name fixed by an ``__name__="x"`` matcher, if any."""
    for m in matchers:
        if m.name == "__name__" and m.op is MatchOp.EQ:
            return m.value
    return None
