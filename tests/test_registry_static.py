"""Static-file discovery and the shared validation of pool names, addresses and settings."""

from __future__ import annotations

import os
import time

import pytest

from discovery.static import StaticDiscovery, load_static_targets, targets_from_dict
from discovery.validation import check_address, check_pool_name, parse_duration

GOOD = """
pools:
  node:
    interval: 15s
    timeout: 5s
    path: /metrics
    scheme: http
    labels: {team: infra}
    hosts: [127.0.0.1:9100, "web-1.example.com:9100"]
  db:
    hosts: ["[::1]:9187"]
"""


def test_static_file_gives_targets_with_pool_settings(tmp_path):
    f = tmp_path / "targets.yaml"
    f.write_text(GOOD)
    targets = load_static_targets(f)
    assert [t.key for t in targets] == ["node/127.0.0.1:9100", "node/web-1.example.com:9100", "db/[::1]:9187"]
    node = targets[0]
    assert node.settings.interval_s == 15.0 and node.settings.timeout_s == 5.0
    assert node.settings.labels == (("team", "infra"),)
    assert node.url == "http://127.0.0.1:9100/metrics"
    assert targets[2].settings.interval_s == 10.0  # defaults


def test_the_example_file_in_configs_loads():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    targets = load_static_targets(os.path.join(root, "configs", "targets.example.yaml"))
    assert targets and all(t.pool == "node" for t in targets)


@pytest.mark.parametrize(
    "doc, expected",
    [
        ("pools: [a, b]", "pools: expected a mapping"),
        ("pools:\n  node:\n    interval: often\n", "pools.node.interval: expected a duration"),
        ("pools:\n  node:\n    hosts: 127.0.0.1:9100\n", "pools.node.hosts: expected a list"),
        ("pools:\n  node:\n    hosts: [nohost]\n", "pools.node.hosts[0]: invalid address 'nohost'"),
        ("pools:\n  node:\n    hosts: ['h:99999']\n", "port must be a number from 1 to 65535"),
        ("pools:\n  'bad/name':\n    hosts: []\n", "pools.bad/name: invalid pool name"),
        ("pools:\n  node:\n    scheme: ftp\n", "pools.node.scheme: expected one of http, https"),
        ("pools:\n  node:\n    intervall: 5s\n", "pools.node.intervall: unknown key"),
        ("pools:\n  node:\n    labels: {job: x}\n", "pools.node.labels.job"),
        ("pools:\n  node:\n    labels: {'1x': y}\n", "invalid label name '1x'"),
        ("pools:\n  node:\n    interval: 5s\n    timeout: 10s\n", "pools.node.timeout: 10s is longer than the interval 5s"),
        ("pools:\n  node:\n    hosts: [a:1, a:1]\n", "a:1 is listed twice"),
        ("targets: {}", "targets: unknown key"),
    ],
)
def test_invalid_files_name_file_key_and_expectation(tmp_path, doc, expected):
    f = tmp_path / "t.yaml"
    f.write_text(doc)
    with pytest.raises(ValueError) as info:
        load_static_targets(f)
    assert str(info.value).startswith(str(f) + ":")
    assert expected in str(info.value)


def test_unparseable_yaml_and_missing_file(tmp_path):
    f = tmp_path / "t.yaml"
    f.write_text("pools:\n  node: [\n")
    with pytest.raises(ValueError, match=r"t\.yaml: line \d+ column \d+: invalid YAML"):
        load_static_targets(f)
    with pytest.raises(ValueError, match="cannot read static targets file"):
        load_static_targets(tmp_path / "missing.yaml")


def test_static_discovery_reloads_and_keeps_last_good_list(tmp_path):
    f = tmp_path / "t.yaml"
    f.write_text("pools:\n  a:\n    hosts: [h:1]\n")
    disc = StaticDiscovery(f)
    assert [t.key for t in disc.targets()] == ["a/h:1"]
    f.write_text("pools:\n  a:\n    hosts: [h:1, h:2]\n")
    os.utime(f, ns=(time.time_ns(), time.time_ns() + 1_000_000_000))
    assert [t.key for t in disc.targets()] == ["a/h:1", "a/h:2"]
    f.write_text("pools:\n  a:\n    hosts: [broken]\n")
    os.utime(f, ns=(time.time_ns(), time.time_ns() + 2_000_000_000))
    assert [t.key for t in disc.targets()] == ["a/h:1", "a/h:2"]
    assert disc.last_error and "hosts[0]" in disc.last_error


def test_validators():
    assert check_address("Host-1.example.com:80") == "Host-1.example.com:80"
    assert check_address("[::1]:80") == "[::1]:80"
    for bad in ("", ":80", "h:", "h:0", "h:x", "::1:80", "h h:80", "[::g]:80", None):
        with pytest.raises(ValueError):
            check_address(bad)
    assert check_pool_name("web-eu.1_a") == "web-eu.1_a"
    for bad in ("", ".hidden", "a/b", "x" * 65, "zoo keeper", 5):
        with pytest.raises(ValueError, match="invalid pool name"):
            check_pool_name(bad)
    assert parse_duration("1m30s") == 90.0 and parse_duration(2) == 2.0 and parse_duration("500ms") == 0.5
    assert parse_duration("2.5") == 2.5
    for bad in ("0s", "soon", -1, True):
        with pytest.raises(ValueError):
            parse_duration(bad)


def test_targets_from_dict_empty():
    assert targets_from_dict(None) == [] and targets_from_dict({"pools": None}) == []
