"""A key written twice in one YAML mapping is an error naming both lines, in every kind of
file Ringmon reads: config, rules, rule unit tests, alerting, dashboards, static targets
(issue #16: a second ``web:`` block silently replaced the first, dropping its users)."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from alerting.rulefile import load_rule_file
from alerting.service import load_alerting_file
from alerting.unittest_runner import UnitTestRunner
from cli.config import load_config
from common.yamlfile import parse_yaml
from discovery.static import load_static_targets
from web.dashboards import load_dashboard_file

CONFIG = """\
web:
  listen: 127.0.0.1:0
  users: {admin: "scrypt$16384$8$1$AAAA$AAAA"}
data_dir: data
web:
  listen: 127.0.0.1:0
"""

RULES = """\
groups:
  - name: g
    rules:
      - alert: A
        expr: up == 0
        expr: up == 1
"""

ALERTING = """\
alerter:
  listen: 127.0.0.1:0
route:
  receiver: r
receivers:
  - name: r
alerter:
  listen: 0.0.0.0:9095
"""

DASHBOARD = """\
title: X
panels:
  - title: a
    expr: up
    title: b
"""

TARGETS = """\
pools:
  web:
    hosts: ["127.0.0.1:1"]
  web:
    hosts: ["127.0.0.1:2"]
"""

UNIT_TESTS = """\
rule_files: []
tests:
  - interval: 1m
    interval: 2m
"""


def _error(fn: Callable[[Path], Any], path: Path) -> str:
    try:
        out = fn(path)
    except Exception as exc:  # noqa: BLE001 - each loader has its own error type
        return str(exc)
    errors = getattr(out, "errors", None)
    assert errors, f"{path.name}: a duplicate key was accepted: {out!r}"
    return "; ".join(map(str, errors))


def _unit_tests(path: Path) -> Any:
    return UnitTestRunner().run_files([str(path)])[0]


@pytest.mark.parametrize(
    ("name", "text", "load", "key", "first", "second"),
    [
        ("ringmon.yaml", CONFIG, load_config, "web", 1, 5),
        ("rules.yml", RULES, load_rule_file, "expr", 5, 6),
        ("alerting.yaml", ALERTING, load_alerting_file, "alerter", 1, 7),
        ("fleet.yaml", DASHBOARD, load_dashboard_file, "title", 3, 5),
        ("targets.yaml", TARGETS, load_static_targets, "web", 2, 4),
        ("tests.yml", UNIT_TESTS, _unit_tests, "interval", 3, 4),
    ],
)
def test_duplicate_key_names_both_lines(tmp_path: Path, name: str, text: str, load, key: str,
                                        first: int, second: int) -> None:
    path = tmp_path / name
    path.write_text(text)
    message = _error(load, path)
    assert key in message, message
    lines = {int(n) for n in re.findall(r"(?:line |\.yml:|\.yaml:)(\d+)", message)}
    assert {first, second} <= lines, message


def test_keys_a_merge_brings_in_may_be_overridden() -> None:
    doc = parse_yaml("base: &b {listen: a, tls: true}\nweb:\n  <<: *b\n  listen: b\n", "x.yaml")
    assert doc["web"] == {"listen": "b", "tls": True}
