"""A small, safe interpreter for the Go ``text/template`` subset used in alert labels and annotations.

Supported: text and ``{{ }}`` actions with ``{{-``/``-}}`` trimming, comments, pipelines
(``a | f "x"``), variables (``$labels``, ``$value``, ``$``, ``$x := ...``, ``$x = ...``), field
chains (``$labels.instance``, ``.Labels.job``), literals, parentheses, ``if``/``else if``/
``else``/``end``, ``range`` (lists and maps, with ``$k, $v :=``), ``with``, and the functions
Prometheus offers (``humanize*``, ``printf``, ``toUpper`` ...). Nothing is ever ``eval``'d;
undefined variables and functions are parse errors, as in Go.

Every expansion runs under ``TemplateLimits``: a deadline, an output size (text written and any
string a function returns, ``printf`` widths checked before formatting) and a count of loop
iterations (``range 100000000`` fails before it starts). Over budget, the expansion fails with a
TemplateError that names the limit; regexes (``match``, ``reReplaceAll``) are RE2 (linear time).

Modules: ``lex`` (text to tokens) -> ``parse`` (tokens to the ``nodes`` tree) -> ``exec`` (the tree
run against data within ``limits``); ``functions`` (the function table), ``format`` (Go's fmt),
``alert`` (alert data, expansion of labels/annotations), ``errors``. Import from this package.
"""

from alerting.template.alert import alert_template_data, expand_alert_template, format_alert_value
from alerting.template.errors import TemplateError
from alerting.template.exec import Template
from alerting.template.format import go_float, go_g, go_sprintf, to_text
from alerting.template.functions import (
    FUNCTIONS,
    humanize,
    humanize1024,
    humanize_duration,
    humanize_percentage,
    humanize_timestamp,
)
from alerting.template.limits import DEFAULT_LIMITS, TemplateLimits
from alerting.template.parse import ALERT_VARIABLES, parse_template

__all__ = [
    "ALERT_VARIABLES",
    "DEFAULT_LIMITS",
    "FUNCTIONS",
    "Template",
    "TemplateError",
    "TemplateLimits",
    "alert_template_data",
    "expand_alert_template",
    "format_alert_value",
    "go_float",
    "go_g",
    "go_sprintf",
    "humanize",
    "humanize1024",
    "humanize_duration",
    "humanize_percentage",
    "humanize_timestamp",
    "parse_template",
    "to_text",
]
