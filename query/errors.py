"""Errors the query engine raises; the HTTP API maps each class onto a Prometheus error type."""

from __future__ import annotations


class QueryError(Exception):
    """A query could not be answered; the message says why (shown to the user as is)."""

    error_type = "execution"


class ParseError(QueryError):
    """The expression is not valid PromQL; ``position`` is the 0-based character offset."""

    error_type = "bad_data"

    def __init__(self, message: str, position: int = 0, expr: str = "") -> None:
        self.position = position
        self.expr = expr
        self.detail = message
        line = expr.count("\n", 0, position) + 1
        col = position - (expr.rfind("\n", 0, position) + 1) + 1
        self.line = line
        self.column = col
        super().__init__(f"{line}:{col}: parse error: {message}")


class QueryInputError(QueryError):
    """The query's parameters cannot be evaluated (a time out of range, say): the client's error."""

    error_type = "bad_data"


class QueryLimitError(QueryError):
    """The query would touch more samples than the configured limit."""

    error_type = "execution"


class QueryMemoryError(QueryLimitError):
    """The query's evaluation would need more memory than its budget."""


class QueryTimeoutError(QueryError):
    """The query ran longer than the configured time limit."""

    error_type = "timeout"
