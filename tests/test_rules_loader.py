"""Rule loader: errors name file, line and reason; an invalid file never replaces the last good one."""

from __future__ import annotations

import pathlib

import pytest

from alerting.rulefile import RuleFileError, parse_rule_text
from alerting.rulestore import RuleStore, write_rule_file_atomically
from common.durations import DurationError, format_duration_ms, parse_duration_ms

GOOD = """groups:
  - name: api
    interval: 30s
    rules:
      - alert: HighErrors
        expr: rate(errors_total[5m]) > 1
        for: 5m
        keep_firing_for: 1m
        labels: {severity: page}
        annotations:
          summary: "{{ $labels.instance }} at {{ $value | humanize }}"
      - record: job:errors:rate5m
        expr: sum by (job) (rate(errors_total[5m]))
"""


def _errors(text: str) -> list[str]:
    with pytest.raises(RuleFileError) as info:
        parse_rule_text(text, "r.yml")
    return [str(e) for e in info.value.errors]


def test_good_file_fields() -> None:
    rf = parse_rule_text(GOOD, "r.yml")
    g = rf.groups[0]
    assert g.interval_ms == 30_000 and g.key == "r.yml;api"
    a, r = g.rules
    assert (a.kind, a.for_ms, a.keep_firing_for_ms, a.labels) == ("alert", 300_000, 60_000, {"severity": "page"})
    assert r.kind == "record" and r.name == "job:errors:rate5m"


def test_yaml_error_has_line() -> None:
    errs = _errors("groups:\n  - name: a\n    rules: [\n")
    assert errs[0].startswith("r.yml:") and "invalid YAML" in errs[0]


@pytest.mark.parametrize(
    "snippet, line, reason",
    [
        ("for: 5x", 7, 'not a valid duration string: "5x"'),
        ("for: [1]", 7, "expected a duration"),
        ("labels: {'a-b c': x, __name__: y}", 7, "invalid label name: __name__"),
        ("annotations: {s: '{{ $labels.x | nosuch }}'}", 7, 'function "nosuch" not defined'),
        ("annotations: {s: '{{ if $value }}x'}", 7, "unexpected EOF"),
        ("bogus: 1", 7, "field bogus not found in rule"),
    ],
)
def test_errors_name_line_and_reason(snippet: str, line: int, reason: str) -> None:
    text = f"groups:\n  - name: g\n    rules:\n      - alert: A\n        expr: up == 0\n\n        {snippet}\n"
    errs = _errors(text)
    assert any(e.startswith(f"r.yml:{line}:") and reason in e for e in errs), errs


def test_bad_promql_reports_expr_line() -> None:
    errs = _errors("groups:\n- name: g\n  rules:\n  - record: x\n    expr: sum(\n")
    assert errs[0].startswith("r.yml:5:") and "parse error" in errs[0]


def test_every_error_of_a_file_is_reported() -> None:
    errs = _errors("groups:\n- name: g\n  interval: 1q\n  rules:\n  - record: 'a b{'\n    expr: 1\n  - alert: x\n")
    assert len(errs) >= 3


def test_durations() -> None:
    assert parse_duration_ms("1h30m") == 5_400_000
    assert parse_duration_ms("250ms") == 250
    assert parse_duration_ms("0") == 0
    assert format_duration_ms(5_400_000) == "1h30m"
    for bad in ("", "1.5h", "5m1h", "-1m", "10"):
        with pytest.raises(DurationError):
            parse_duration_ms(bad)


def test_store_keeps_last_good_file(tmp_path: pathlib.Path) -> None:
    f = tmp_path / "api.yml"
    f.write_text(GOOD)
    store = RuleStore([str(tmp_path / "*.yml")])
    rep = store.reload()
    assert rep.ok and [g.name for g in store.groups()] == ["api"]
    gen = store.generation
    f.write_text(GOOD.replace("for: 5m", "for: five minutes"))
    assert store.changed_on_disk()
    rep = store.reload()
    assert not rep.ok and str(f) in rep.failed
    assert "five minutes" in str(rep.failed[str(f)][0]) and rep.failed[str(f)][0].line == 7
    assert [r.for_ms for r in store.groups()[0].rules] == [300_000, 0]  # last good kept
    assert store.generation == gen
    f.write_text(GOOD.replace("for: 5m", "for: 10m"))
    assert store.reload().ok and store.groups()[0].rules[0].for_ms == 600_000
    assert store.generation == gen + 1
    f.unlink()
    store.reload()
    assert store.groups() == []


def test_atomic_write_refuses_invalid_text(tmp_path: pathlib.Path) -> None:
    f = tmp_path / "r.yml"
    f.write_text(GOOD)
    errs = write_rule_file_atomically(str(f), "groups: [{name: g, rules: [{record: x}]}]")
    assert errs and "field 'expr' must be set" in errs[0].reason
    assert f.read_text() == GOOD
    assert write_rule_file_atomically(str(f), GOOD.replace("api", "web")) == []
    assert "web" in f.read_text()


def test_parse_error_inside_a_multiline_expr_points_at_its_line() -> None:
    text = "groups:\n- name: g\n  rules:\n  - record: x\n    expr: |\n      a +\n        b +\n        rate(c)\n"
    errs = _errors(text)
    assert errs[0].startswith("r.yml:8:") and "parse error" in errs[0], errs
