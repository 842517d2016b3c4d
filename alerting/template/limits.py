"""The budgets of one template expansion (``alerter.templates``) and those of the expansion running now."""

from __future__ import annotations

import contextvars
import math
from dataclasses import dataclass


@dataclass(frozen=True)
class TemplateLimits:
    """Budgets of one expansion (the ``alerter.templates`` settings)."""

    timeout_s: float = 2.0  # wall time of one expansion
    max_output: int = 1 << 20  # characters written, and the longest string any function returns
    max_iterations: int = 100_000  # range iterations, all loops of the expansion together
    max_steps: int = 2_000_000  # actions and commands executed (a backstop for the deadline)


DEFAULT_LIMITS = TemplateLimits()
# The limits and deadline of the expansion running in this thread (printf, reReplaceAll consult them).
ACTIVE: contextvars.ContextVar[tuple[TemplateLimits, float]] = contextvars.ContextVar(
    "template_limits", default=(DEFAULT_LIMITS, math.inf))
