"""The one error of alert templates: a template that does not parse, or fails while expanding."""

from __future__ import annotations


class TemplateError(ValueError):
    """A template that does not parse or fails while expanding."""

    def __init__(self, name: str, line: int, reason: str) -> None:
        super().__init__(f"template: {name}:{line}: {reason}")
        self.name = name
        self.line = line
        self.reason = reason
