"""``ringmon rules check`` / ``rules test`` give promtool's exit codes on the conformance files."""

from __future__ import annotations

import json
import pathlib
import shutil

import pytest
import yaml
from conftest import CONFORMANCE

from alerting.unittest_runner import UnitTestError, expand_values, parse_series_labels
from cli.main import main

PROMTOOL = CONFORMANCE / "promtool-rules"
EXP = json.loads((PROMTOOL / "expectations.json").read_text())


def _id(e: dict) -> str:
    return f"{e['file']}-{'+'.join(e.get('run', []) or e.get('features', []) or ['default'])}"


@pytest.mark.parametrize("entry", EXP["unit_tests"], ids=_id)
def test_unit_test_files_exit_codes(entry: dict, capsys: pytest.CaptureFixture) -> None:
    argv = ["rules", "test", str(PROMTOOL / entry["file"])]
    for r in entry.get("run", []):
        argv += ["--run", r]
    for f in entry.get("features", []):
        argv += ["--enable-feature", f"promql-{f.replace('_', '-')}"]
    if entry.get("ignore_unknown_fields"):
        argv.append("--ignore-unknown-fields")
    assert main(argv) == entry["exit"], capsys.readouterr()


def _unittest_group_with(needle: str) -> str:
    """unittest.yml with only its test group that mentions ``needle``: the other groups (one
    evaluates the rules over a day) pass in test_unit_test_files_exit_codes and add nothing to
    a test of one changed expectation but seconds."""
    doc = yaml.safe_load((PROMTOOL / "unittest.yml").read_text())
    doc["tests"] = [g for g in doc["tests"] if needle in json.dumps(g)]
    assert len(doc["tests"]) == 1, needle
    return str(yaml.safe_dump(doc, sort_keys=False, width=1_000))


def test_a_changed_histogram_expectation_fails(tmp_path: pathlib.Path, capsys: pytest.CaptureFixture) -> None:
    """Histogram samples are compared like promtool: canonical text, counter-reset hint included."""
    shutil.copy(PROMTOOL / "rules.yml", tmp_path / "rules.yml")
    text = _unittest_group_with("test_histogram_repeat")
    for old, new in (("{{count:4 sum:5.6 counter_reset_hint:not_reset buckets:[4]}}", "{{count:4 sum:5.6 buckets:[4]}}"),
                     ("{{count:2 sum:3 counter_reset_hint:not_reset buckets:[2]}}",
                      "{{count:2 sum:3 counter_reset_hint:not_reset buckets:[1 1]}}")):
        assert old in text
        (tmp_path / "t.yml").write_text(text.replace(old, new))
        assert main(["rules", "test", str(tmp_path / "t.yml")]) == 1
        err = capsys.readouterr().err
        assert "got: [test_histogram_" in err and "{{" in err
    # Reordered fields and an explicit zero are the same histogram.
    (tmp_path / "t.yml").write_text(text.replace(
        "{{count:4 sum:5.6 counter_reset_hint:not_reset buckets:[4]}}",
        "{{buckets:[4] offset:0 counter_reset_hint:not_reset sum:5.6 z_bucket:0 count:4}}"))
    assert main(["rules", "test", str(tmp_path / "t.yml")]) == 0


def test_histogram_arithmetic_in_a_unit_test_fails_clearly(tmp_path: pathlib.Path, capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "t.yml").write_text(
        "tests:\n- interval: 1m\n  input_series:\n  - series: h\n    values: '{{count:2 sum:3 buckets:[2]}}x3'\n"
        "  promql_expr_test:\n  - expr: h * 2\n    eval_time: 1m\n    exp_samples: []\n"
        "  - expr: histogram_count(h)\n    eval_time: 2m\n    exp_samples: [{value: 2}]\n")
    assert main(["rules", "test", str(tmp_path / "t.yml")]) == 1
    err = capsys.readouterr().err
    assert "native histograms are not supported by the * operator" in err
    assert "histogram_count" not in err


def test_a_changed_expectation_fails(tmp_path: pathlib.Path, capsys: pytest.CaptureFixture) -> None:
    shutil.copy(PROMTOOL / "rules.yml", tmp_path / "rules.yml")
    text = _unittest_group_with("InstanceDown")
    assert "description: localhost:9090 of job prometheus" in text
    text = text.replace("description: localhost:9090 of job prometheus", "description: localhost:9091 of job prometheus")
    (tmp_path / "t.yml").write_text(text)
    assert main(["rules", "test", str(tmp_path / "t.yml")]) == 1
    assert "alertname: InstanceDown, time: 1d" in capsys.readouterr().err


_CHECK = [e for e in EXP["check_rules"]]


@pytest.mark.parametrize("entry", _CHECK, ids=lambda e: e["file"])
def test_check_rules_exit_codes(entry: dict) -> None:
    argv = ["rules", "check", str(PROMTOOL / entry["file"])]
    for f in entry.get("parser_features", []):
        argv += ["--enable-feature", f]
    if entry.get("lint_fatal"):
        argv.append("--lint-fatal")
    if entry.get("ignore_unknown_fields"):
        argv.append("--ignore-unknown-fields")
    assert main(argv) == entry["exit"]


def test_features_yml_needs_its_parser_features(capsys: pytest.CaptureFixture) -> None:
    """Like promtool, each optional syntax is rejected until its --enable-feature is given."""
    path = str(PROMTOOL / "features.yml")
    assert main(["rules", "check", path]) == 1
    err = capsys.readouterr().err
    for flag in ("promql-experimental-functions", "promql-extended-range-selectors", "promql-binop-fill-modifiers"):
        assert f"--enable-feature={flag}" in err
    assert "promql-duration-expr" not in err  # duration expressions need no flag
    assert main(["rules", "check", "--enable-feature",
                 "promql-experimental-functions,promql-extended-range-selectors", path]) == 1
    assert "binop-fill-modifiers" in capsys.readouterr().err
    assert main(["rules", "check", "--enable-feature", "promql-bogus", path]) != 0


def test_check_reports_file_line_reason(tmp_path: pathlib.Path, capsys: pytest.CaptureFixture) -> None:
    f = tmp_path / "r.yml"
    f.write_text("groups:\n- name: g\n  rules:\n  - alert: A\n    expr: up ==\n")
    assert main(["rules", "check", str(f)]) == 1
    err = capsys.readouterr().err
    assert f"{f}:5:" in err and "parse error" in err


def test_expanding_notation() -> None:
    stale = expand_values("stale")[0]
    assert expand_values("1+2x3 _ 5 -2-1x2 _x2 3x1") == [1, 3, 5, 7, None, 5, -2, -3, -4, None, None, 3, 3]
    assert stale is not None and stale != stale
    assert expand_values("Inf -Inf")[0] == float("inf")
    with pytest.raises(UnitTestError):
        expand_values("1+x")
    assert parse_series_labels('up{job="a", instance="b:1"}') == {"__name__": "up", "job": "a", "instance": "b:1"}
    with pytest.raises(UnitTestError):
        parse_series_labels('up{job="a"')
