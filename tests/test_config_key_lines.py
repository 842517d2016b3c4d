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
from cli.config import load_config
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


@pytest.mark.parametrize("kind, load, text, dotted, line", CASES, ids=[c[0] for c in CASES])
def test_unknown_key_names_file_line_and_dotted_key(
    tmp_path: Path, kind: str, load: Callable[[Path], Any], text: str, dotted: str, line: int
) -> None:
    f = tmp_path / "conf.yaml"
    f.write_text(text)
    with pytest.raises(Exception) as err:  # noqa: PT011 - each loader raises its own error type
        load(f)
    assert str(err.value).startswith(f"{f}:{line}: {dotted}: unknown key (known keys here: "), str(err.value)


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
