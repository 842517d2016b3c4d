"""Alert templates as Prometheus runs them: the data and variables of an alert, one label/annotation
expansion (errors become the expanded text) and an alert's value formatted as its annotations do."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from alerting.template.errors import TemplateError
from alerting.template.functions import humanize
from alerting.template.limits import DEFAULT_LIMITS, TemplateLimits
from alerting.template.parse import parse_template


def alert_template_data(
    labels: dict[str, str], value: float, external_labels: dict[str, str] | None = None, external_url: str = ""
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The data and variables Prometheus gives alert label/annotation templates."""
    ext = dict(external_labels or {})
    data = {
        "Labels": dict(labels),
        "ExternalLabels": ext,
        "ExternalURL": external_url,
        "Value": value,
        # lower-case aliases: rule files in the wild write $.labels.x
        "labels": dict(labels),
        "value": value,
    }
    variables = {"$labels": data["Labels"], "$externalLabels": ext, "$externalURL": external_url, "$value": value}
    return data, variables


def expand_alert_template(
    text: str,
    name: str,
    labels: dict[str, str],
    value: float,
    external_labels: dict[str, str] | None = None,
    external_url: str = "",
    query: Callable[[str], list[dict]] | None = None,
    limits: TemplateLimits = DEFAULT_LIMITS,
) -> str:
    """Expand one alert label/annotation template; Prometheus-style error text on failure
    (over a budget of ``limits`` too, so the alert still goes out with the reason in it).

    ``query(expr)`` (blocking) backs the ``query`` function: a list of {"Labels", "Value"}.
    """
    if "{{" not in text:
        return text
    try:
        tmpl = parse_template(text, name, funcs={"query": query} if query else None)
        data, variables = alert_template_data(labels, value, external_labels, external_url)
        return tmpl.expand(data, variables, limits)
    except TemplateError as exc:
        return f"<error expanding template: {exc}>"


_VALUE_ACTION = re.compile(r"\{\{-?\s*((?:(?!\}\})[^{])*\$value(?:(?!\}\})[^{])*?)\s*-?\}\}")


# One action formatting one number: small budgets.
_VALUE_LIMITS = TemplateLimits(timeout_s=0.5, max_output=1000, max_iterations=100, max_steps=1000)


def format_alert_value(value: float, templates: Any = ()) -> str:
    """An alert's value as its annotations print it, for tables beside those annotations.

    The first ``{{ ... }}`` action of ``templates`` (the rule's annotation templates) that
    uses ``$value`` on its own (``{{ $value | humanizePercentage }}``, ``{{ printf "%.1f"
    $value }}``) is expanded with this value: "99.04%" next to a summary saying "99.04%".
    Without such an action (or when it needs more than the value) ``humanize`` writes it.
    """
    for text in templates:
        for m in _VALUE_ACTION.finditer(str(text)):
            try:
                tmpl = parse_template("{{ " + m.group(1) + " }}", "value")
                out = tmpl.expand(*alert_template_data({}, value), limits=_VALUE_LIMITS)
            except TemplateError:
                continue
            if out.strip():
                return out.strip()
    return humanize(value)
