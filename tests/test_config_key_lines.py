"""Every config file kind reports an unknown key as ``<file>:<line>: <dotted.key>: unknown key (...)``.

One check (``common.config_keys.check_keys``) and one loader (``common.yamlfile``, whose
mappings remember the line of each key) serve the main config, the alerting and notifier
files, channels, static targets, scrape configs and relabelling, and dashboards.
"""

from __future__ import annotations

import copy
import json
import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from alerting.notifier.config import load_notifier_config
from alerting.service import load_alerting_file
from cli.config import config_from_dict, load_config
from common.yamlfile import parse_yaml
from discovery.static import load_static_targets
from web.dashboards import load_dashboard_file

NOTIFIER = "route:\n  receiver: r\nreceivers:\n  - name: r\n"

CASES: list[tuple[str, Callable[[Path], Any], str, str, int]] = [
    ("main config", load_config, "data_dir: /tmp/x\nweb:\n  listen: 127.0.0.1:0\n  lisen: x\n", "web.lisen", 4),
    ("scrape config", load_config, "scrape:\n  interval: 10s\n  sampel_limit: 5\n", "scrape.sampel_limit", 3),
    ("relabel", load_config,
     "scrape:\n  relabel_configs:\n    - action: keep\n      regexx: a\n", "scrape.relabel_configs[0].regexx", 4),
    ("alerting file", load_alerting_file, "alerter:\n  listen: 127.0.0.1:0\n  bogus: 1\n" + NOTIFIER, "alerter.bogus", 3),
    ("notifier config", load_notifier_config, "route:\n  receiver: r\n  bogus: 1\nreceivers:\n  - name: r\n",
     "route.bogus", 3),
    ("notifier top level", load_notifier_config, "route:\n  receiver: r\nreceivers:\n  - name: r\nbogus: 1\n",
     "bogus", 5),
    ("channel", load_notifier_config,
     "route:\n  receiver: r\nreceivers:\n  - name: r\n    webhook_configs:\n      - url: http://127.0.0.1:1/\n"
     "        bogus: 1\n", "receivers[0].webhook_configs[0].bogus", 7),
    ("static targets", load_static_targets, "pools:\n  node:\n    hosts: [127.0.0.1:9100]\n    intervall: 5s\n",
     "pools.node.intervall", 4),
    ("dashboard", load_dashboard_file, "title: X\npanels:\n  - title: a\n    expr: up\n    colour: red\n",
     "panels[0].colour", 5),
]  # fmt: skip


def load_error(tmp_path: Path, load: Callable[[Path], Any], text: str) -> tuple[Path, str]:
    """The file ``text`` was written to and the message of the error ``load`` raises on it."""
    f = tmp_path / "conf.yaml"
    f.write_text(text)
    with pytest.raises(Exception) as err:  # noqa: PT011 - each loader raises its own error type
        load(f)
    return f, str(err.value)


@pytest.mark.parametrize("kind, load, text, dotted, line", CASES, ids=[c[0] for c in CASES])
def test_unknown_key_names_file_line_and_dotted_key(
    tmp_path: Path, kind: str, load: Callable[[Path], Any], text: str, dotted: str, line: int
) -> None:
    f, message = load_error(tmp_path, load, text)
    assert message.startswith(f"{f}:{line}: {dotted}: unknown key (known keys here: "), message


def test_a_channel_value_of_the_wrong_type_names_file_line_and_key(tmp_path: Path) -> None:
    f = tmp_path / "notifier.yaml"
    f.write_text("route:\n  receiver: r\nreceivers:\n  - name: r\n    webhook_configs:\n"
                 "      - url: http://127.0.0.1:1/\n        send_resolved: maybe\n")  # fmt: skip
    with pytest.raises(ValueError, match="send_resolved") as err:
        load_notifier_config(f)
    assert str(err.value).startswith(f"{f}:7: receivers[0].webhook_configs[0].send_resolved: expected true or false")


def test_loaded_mappings_are_plain_dicts_to_every_consumer() -> None:
    """The line-remembering mapping is equal to, and serialises like, the dict PyYAML gives."""
    text = "a: 1\nb:\n  c: [1, {d: 2}]\nbase: &x {e: 3}\nm:\n  <<: *x\n  f: 4\n"
    data = parse_yaml(text, "t.yaml")
    plain = yaml.safe_load(text)
    assert data == plain and json.dumps(data) == json.dumps(plain) and repr(data) == repr(plain)
    assert yaml.safe_load(yaml.safe_dump(data)) == plain
    assert pickle.loads(pickle.dumps(data)) == plain and copy.deepcopy(data) == plain
    assert isinstance(data, dict) and data.key_lines == {"a": 1, "b": 2, "base": 4, "m": 5}
    assert data["m"].key_lines == {"e": 4, "f": 7}  # a merged key keeps the line it was written on


WEBHOOK = "route:\n  receiver: r\nreceivers:\n  - name: r\n    webhook_configs:\n      - url: http://127.0.0.1:1/\n"

# kind, loader, text, dotted key, line, start of the problem
VALUE_CASES: list[tuple[str, Callable[[Path], Any], str, str, int, str]] = [
    ("main config type", load_config, "data_dir: /tmp/x\nweb:\n  listen: 127.0.0.1:0\n  secure_cookies: yes-please\n",
     "web.secure_cookies", 4, "expected bool"),
    ("main config duration", load_config, "rules:\n  evaluation_interval: soon\n", "rules.evaluation_interval", 2,
     "not a duration"),
    ("main config value", load_config, "scraper:\n  listen: 127.0.0.1:0\n  vnodes: 0\n", "scraper.vnodes", 3,
     "expected a positive number"),
    ("main config mapping item", load_config, "web:\n  users:\n    alice: 5\n", "web.users.alice", 3, "expected str"),
    ("scrape config type", load_config, "scrape:\n  interval: 10s\n  honor_labels: 3\n", "scrape.honor_labels", 3,
     "expected a boolean"),
    ("scrape config value", load_config, "scrape:\n  body_size_limit: lots\n", "scrape.body_size_limit", 2,
     "expected a size"),
    ("scrape pool override", load_config, "scrape:\n  sample_limit: 5\n  pools:\n    web:\n      sample_limit: -1\n",
     "scrape.pools.web.sample_limit", 5, "expected a non-negative integer"),
    ("relabel type", load_config, "scrape:\n  relabel_configs:\n    - action: keep\n      regex: 5\n",
     "scrape.relabel_configs[0].regex", 4, "expected string"),
    ("relabel value", load_config, "scrape:\n  metric_relabel_configs:\n    - action: frobnicate\n",
     "scrape.metric_relabel_configs[0].action", 3, "unknown action"),
    ("alerting settings type", load_alerting_file, "alerter:\n  listen: 127.0.0.1:0\n  rule_files: 5\n" + NOTIFIER,
     "alerter.rule_files", 3, "expected a list"),
    ("alerting settings value", load_alerting_file, "alerter:\n  ownership: both\n" + NOTIFIER, "alerter.ownership", 2,
     "expected local or zookeeper"),
    ("alerting templates", load_alerting_file, "alerter:\n  templates:\n    max_output: -1\n" + NOTIFIER,
     "alerter.templates.max_output", 3, "expected a positive integer"),
    ("notifier type", load_notifier_config, "route:\n  receiver: r\n  group_by: 5\nreceivers:\n  - name: r\n",
     "route.group_by", 3, "expected a list"),
    ("notifier value", load_notifier_config, "route:\n  receiver: r\n  group_wait: soon\nreceivers:\n  - name: r\n",
     "route.group_wait", 3, ""),
    ("notifier global", load_notifier_config, "global:\n  resolve_timeout: soon\n" + NOTIFIER, "global.resolve_timeout",
     2, ""),
    ("notifier receiver", load_notifier_config, "route:\n  receiver: nobody\nreceivers:\n  - name: r\n", "route.receiver",
     2, "no receiver named"),
    ("channel type", load_notifier_config, WEBHOOK + "        max_alerts: many\n",
     "receivers[0].webhook_configs[0].max_alerts", 7, "expected a number"),
    ("channel value", load_notifier_config,
     "route:\n  receiver: r\nreceivers:\n  - name: r\n    webhook_configs:\n      - url: //x/y\n",
     "receivers[0].webhook_configs[0].url", 6, "expected an http(s) URL"),
    ("channel template", load_notifier_config,
     "route:\n  receiver: r\nreceivers:\n  - name: r\n    pagerduty_configs:\n      - routing_key: k\n"
     "        summary: '{{ .Nope'\n", "receivers[0].pagerduty_configs[0].summary", 7, "invalid template"),
    ("inhibit rule", load_notifier_config, NOTIFIER + "inhibit_rules:\n  - source_matchers: ['a=~(']\n"
     "    target_matchers: [b=c]\n", "inhibit_rules[0].source_matchers[0]", 6, ""),
    ("static targets type", load_static_targets, "pools:\n  node:\n    hosts: [127.0.0.1:9100]\n    labels: [a]\n",
     "pools.node.labels", 4, "expected a mapping"),
    ("static targets value", load_static_targets, "pools:\n  node:\n    hosts: [127.0.0.1:9100]\n    scheme: gopher\n",
     "pools.node.scheme", 4, "expected one of"),
    ("static targets host", load_static_targets, "pools:\n  node:\n    interval: 5s\n    hosts: [nope]\n",
     "pools.node.hosts[0]", 4, "invalid address"),
    ("dashboard type", load_dashboard_file, "title: X\npanels:\n  - title: a\n    expr: up\n    cluster_only: maybe\n",
     "panels[0].cluster_only", 5, "expected true or false"),
    ("dashboard value", load_dashboard_file, "title: X\npanels:\n  - title: a\n    expr: up\n    unit: furlongs\n",
     "panels[0].unit", 5, "expected one of"),
    ("dashboard query", load_dashboard_file, "title: X\npanels:\n  - title: a\n    queries:\n      - expr: up\n"
     "      - expr: ' '\n", "panels[0].queries[1].expr", 6, "must not be empty"),
]  # fmt: skip


@pytest.mark.parametrize("kind, load, text, dotted, line, problem", VALUE_CASES, ids=[c[0] for c in VALUE_CASES])
def test_a_wrong_value_names_file_line_and_dotted_key(
    tmp_path: Path, kind: str, load: Callable[[Path], Any], text: str, dotted: str, line: int, problem: str
) -> None:
    f, message = load_error(tmp_path, load, text)
    assert message.startswith(f"{f}:{line}: {dotted}: {problem}"), message


def test_a_command_line_override_has_no_line(tmp_path: Path) -> None:
    """A value set by a flag did not come from the file: its error names file and key only."""
    f = tmp_path / "conf.yaml"
    f.write_text("web:\n  listen: 127.0.0.1:0\n  session_lifetime: 1h\n")
    with pytest.raises(Exception, match="session_lifetime") as err:  # noqa: PT011
        load_config(f, {"web.session_lifetime": "soon"})
    assert str(err.value).startswith(f"{f}: web.session_lifetime: not a duration"), str(err.value)
    data = parse_yaml(f.read_text(), str(f))
    with pytest.raises(Exception, match="session_lifetime"):  # noqa: PT011
        config_from_dict(data, str(f), {"web.session_lifetime": "soon"})
    assert data["web"].key_lines["session_lifetime"] == 3  # the overrides changed a copy, not the file's mapping
    assert config_from_dict(data, str(f)).web.session_lifetime == 3600.0
