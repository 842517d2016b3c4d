"""Query results: what the PromQL engine returns to the HTTP API, alerting and web."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

ResultType = Literal["matrix", "vector", "scalar", "string"]


@dataclass(slots=True)
class ResultSeries:
    """One output series: labels and its points (a vector element has exactly one point)."""

    labels: dict[str, str]
    timestamps: np.ndarray  # int64 milliseconds
    values: np.ndarray  # float64


@dataclass(slots=True)
class QueryResult:
    type: ResultType
    series: list[ResultSeries] = field(default_factory=list)
    scalar: tuple[int, float] | None = None  # (ts_ms, value) for scalar results
    string: tuple[int, str] | None = None
    warnings: list[str] = field(default_factory=list)
    stats: Any = None  # query.engine.QueryStats of the evaluation that produced it
    # The answer already encoded by the caller's ``encode`` (the engine ran it where it
    # evaluated, a worker process for big queries); ``series`` is then left empty.
    encoded: bytes | memoryview | None = None
