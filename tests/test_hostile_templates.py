"""Hostile alert templates: loop, printf, output and regex blowups end with a clear error inside
their budgets (alerter.templates), and the alert still goes out carrying that error."""

from __future__ import annotations

import pathlib
import tracemalloc

import pytest

from alerting.evaluator import EvalOptions, GroupRunner
from alerting.notifier.model import Alert
from alerting.rulefile import parse_rule_text
from alerting.service import AlerterConfigError, settings_from_dict
from alerting.sqlitedb import AlertingDB
from alerting.state import SQLiteAlertStateStore
from alerting.template import TemplateError, TemplateLimits, expand_alert_template, parse_template
from query.engine import Engine
from query.memory import MemoryStorage
from storage.base import DirectWriter
from storage.model import SampleBatch, Series, make_labels

LIMITS = TemplateLimits()
# The requests and their generalised shapes, with the limit each must hit.
HOSTILE = {
    "range-printf": ('{{ range 20000000 }}{{ printf "%500000000d" 1 }}{{ end }}', "loop iterations"),
    "range-huge": ("{{ range 100000000 }}{{ end }}", "loop iterations"),
    "range-nested": ("{{ range 1000 }}{{ range 100000 }}x{{ end }}{{ end }}", "loop iterations"),
    "printf-width": ('{{ printf "%500000000d" 1 }}', "printf width 500000000"),
    "printf-precision": ('{{ printf "%.900000000f" 1.5 }}', "printf precision 900000000"),
    "printf-width-digits": ('{{ printf "%99999999999999999999s" "x" }}', "printf width"),
    "printf-many-verbs": ('{{ printf "' + "%1000000d" * 2000 + '" ' + "1 " * 2000 + '}}', "printf output over"),
    "doubling": ('{{ $x := "ab" }}{{ range 64 }}{{ $x = printf "%s%s" $x $x }}{{ end }}{{ len $x }}',
                 "printf output over the budget"),
    "html-amplify": ('{{ $x := "<" }}{{ range 19 }}{{ $x = printf "%s%s" $x $x }}{{ end }}{{ html $x }}',
                     "result over the output budget"),
    "output": ('{{ $x := printf "%1000000d" 1 }}{{ range 10 }}{{ $x }}{{ end }}', "output over its budget"),
    "replace-amplify": ('{{ $x := printf "%10000d" 1 }}{{ reReplaceAll " " "' + "$0" * 200 + '" $x }}',
                        "replacement output over"),
    "replace-many": ('{{ $x := printf "%1000000d" 1 }}{{ reReplaceAll "" "" $x }}', "over its time budget"),
}


def _expand(text: str, limits: TemplateLimits = LIMITS) -> str:
    return expand_alert_template(text, "__alert_Hostile", {"instance": "a"}, 1.0, limits=limits)


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_template_is_a_clear_error_within_memory(case: str) -> None:
    text, reason = HOSTILE[case]
    # a generous deadline so the budget each case is about trips first on a loaded machine
    limits = LIMITS if "time budget" in reason else TemplateLimits(timeout_s=120)
    tracemalloc.start()
    try:
        got = _expand(text, limits)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert got.startswith("<error expanding template: template: __alert_Hostile:1:") and reason in got, got
    # the output budget is 1 Mi characters; nothing may hold much more than a few copies of it
    assert peak < 64 << 20, f"{case}: peak {peak >> 20} MiB"


def test_nested_quantifier_match_is_linear() -> None:
    """The issue's (a+)+$ against "a...a!" (25.7 s with Python's re); the text here is long
    enough that a backtracking engine could never finish (2^20000 paths)."""
    text = '{{ if match "(a+)+$" "' + "a" * 20000 + '!" }}yes{{ else }}no{{ end }}'
    assert _expand(text) == "no"
    assert _expand('{{ match "(x+x+)+y" "' + "x" * 20000 + '" }} {{ match "(.*.*)*X" "abcX" }}') == "false true"


def test_time_budget_ends_an_expensive_expansion() -> None:
    # within the iteration and output budgets, but each iteration scans 1 MB
    text = '{{ $s := printf "%1000000d" 1 }}{{ range 100000 }}{{ if match "x" $s }}{{ end }}{{ end }}'
    got = _expand(text, TemplateLimits(timeout_s=0.05))
    assert "over its time budget of 0.05s" in got


def test_budgets_are_the_limits_given() -> None:
    t = parse_template("{{ range $i := 100000 }}xxxxxxxxxx{{ end }}")
    with pytest.raises(TemplateError, match="over its budget of 1000 characters"):
        t.expand({}, {"$labels": {}, "$value": 0, "$externalLabels": {}, "$externalURL": ""},
                 TemplateLimits(max_output=1000))
    assert _expand("{{ range 5 }}{{ . }}{{ end }}", TemplateLimits(max_iterations=5)) == "01234"
    assert "loop iterations" in _expand("{{ range 6 }}{{ end }}", TemplateLimits(max_iterations=5))
    assert _expand('{{ printf "%5d|%.3f" 7 1.5 }}') == "    7|1.500"


def test_template_settings_parse_with_defaults() -> None:
    s = settings_from_dict({"templates": {"timeout": "500ms", "max_iterations": 10}}, "alerting.yaml")
    assert s.templates == TemplateLimits(timeout_s=0.5, max_output=1 << 20, max_iterations=10)
    assert settings_from_dict({}, "x").templates == TemplateLimits()
    with pytest.raises(AlerterConfigError, match="alerter.templates.max_loops: unknown key"):
        settings_from_dict({"templates": {"max_loops": 1}}, "alerting.yaml")
    with pytest.raises(AlerterConfigError, match="alerter.templates.max_output: expected a positive integer"):
        settings_from_dict({"templates": {"max_output": "1MiB"}}, "alerting.yaml")


RULES = """groups:
  - name: hostile
    interval: 1m
    rules:
      - alert: Hostile
        expr: up == 0
        annotations:
          loop: '{{ range 100000000 }}{{ end }}'
          regex: '{{ match "(a+)+$" "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa!" }}'
          fine: '{{ $labels.instance }} down'
"""


class Sink:
    def __init__(self) -> None:
        self.received: list[Alert] = []

    async def receive(self, alerts: list[Alert]) -> None:
        self.received.extend(alerts)


async def test_alert_is_sent_with_the_error_in_its_annotation(tmp_path: pathlib.Path) -> None:
    storage, sink = MemoryStorage(), Sink()
    b = SampleBatch("t")
    b.add(Series.of(make_labels("up", instance="web-1:9100", job="node")), 0, 0.0)
    storage.write_sync(b)
    group = parse_rule_text(RULES, "hostile.yml").groups[0]
    db = AlertingDB(tmp_path / "state.db")
    runner = GroupRunner(group, Engine(storage).instant_query, DirectWriter(storage), SQLiteAlertStateStore(db),
                         sink, EvalOptions(resend_delay_s=60))
    await runner.evaluate(0)
    assert len(sink.received) == 1
    ann = sink.received[0].annotations
    assert ann["fine"] == "web-1:9100 down" and ann["regex"] == "false"
    assert ann["loop"].startswith("<error expanding template:") and "loop iterations" in ann["loop"]
    await db.close()
