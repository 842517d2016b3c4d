"""Config loading: defaults, durations, and errors that name file, key and expected type."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest

from cli.config import ConfigError, load_config, parse_duration
from cli.errors import UserError

ROOT = Path(__file__).resolve().parent.parent


def test_shipped_standalone_config_loads() -> None:
    cfg = load_config(ROOT / "configs" / "standalone.yaml")
    assert cfg.storage.backend == "sqlite"
    assert cfg.scrape.interval == 10.0
    assert cfg.web.listen == "127.0.0.1:8080"
    assert sum(a.count for a in cfg.agents) >= 3


@pytest.mark.parametrize(
    "text, key, expected",
    [
        ("scrape:\n  intervl: 10s\n", "scrape.intervl", "unknown key"),
        ("scrape:\n  interval: fast\n", "scrape.interval", "not a duration"),
        ("web:\n  listen: 8080\n", "web.listen", "expected str, got int"),
        ("agents:\n  - pool: web\n    count: three\n", "agents[0].count", "expected int, got str"),
        ("agents: {pool: web}\n", "agents", "expected list of mapping"),
        ("storage:\n  backend: postgres\n", "storage.backend", "expected 'sqlite' or 'cassandra'"),
        ("storage:\n  sqlite: [a]\n", "storage.sqlite", "expected a mapping"),
        ("scraper:\n  ring_cap_factor: 0.9\n", "scraper.ring_cap_factor", "expected a number from 1.0 to 4.0"),
        ("scraper:\n  vnodes: 0\n", "scraper.vnodes", "expected a positive number"),
    ],
)
def test_bad_config_names_file_key_and_type(tmp_path: Path, text: str, key: str, expected: str) -> None:
    f = tmp_path / "bad.yaml"
    f.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_config(f)
    msg = str(err.value)
    assert str(f) in msg and key in msg and expected in msg, msg


def test_unknown_scrape_key_lists_every_key_the_section_takes(tmp_path: Path) -> None:
    """A typo's error names the keys that work there, read from the section's real handling:
    each listed key loads, and ``interval``/``timeout`` (read by the CLI config) are among them."""
    f = tmp_path / "typo.yaml"
    f.write_text("scrape:\n  intervl: 10s\n")
    with pytest.raises(ConfigError) as err:
        load_config(f)
    listed = str(err.value).split("known keys here: ", 1)[1].rstrip(")").split(", ")
    assert {"interval", "timeout", "pools", "sample_limit", "relabel_configs"} <= set(listed)
    samples = {"interval": "10s", "timeout": "5s", "pools": "{}", "body_size_limit": "1MB",
               "relabel_configs": "[]", "metric_relabel_configs": "[]"}  # fmt: skip
    for key in listed:
        value = samples.get(key, "true" if key.startswith(("honor", "strict")) else "1")
        f.write_text(f"scrape:\n  {key}: {value}\n")
        load_config(f)  # every key the error offers is one the section takes


def test_invalid_yaml_names_line(tmp_path: Path) -> None:
    f = tmp_path / "broken.yaml"
    f.write_text("web:\n  listen: [\n")
    with pytest.raises(ConfigError, match=r"broken\.yaml: line \d+ column \d+: invalid YAML"):
        load_config(f)


def test_durations() -> None:
    assert parse_duration("1h30m") == 5400.0
    assert parse_duration("250ms") == 0.25
    with pytest.raises(ValueError):
        parse_duration("10 s")


def _run_cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cli.main", *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout
    )


def test_cli_bad_config_is_one_clear_line(tmp_path: Path) -> None:
    f = tmp_path / "typo.yaml"
    f.write_text("web:\n  lisen: 127.0.0.1:0\n")
    res = _run_cli("standalone", "--config", str(f))
    assert res.returncode == 2
    assert "Traceback" not in res.stderr
    assert f"{f}:2: web.lisen: unknown key" in res.stderr


def test_cli_port_in_use_is_one_clear_line(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        f = tmp_path / "busy.yaml"
        f.write_text(
            f"storage:\n  sqlite:\n    path: {tmp_path / 'db.sqlite'}\nagents: []\nweb:\n  listen: 127.0.0.1:{port}\n"
        )
        res = _run_cli("standalone", "--config", str(f))
    assert res.returncode == 2, res.stderr
    assert "Traceback" not in res.stderr
    assert f"cannot listen on 127.0.0.1:{port}: address already in use" in res.stderr


def test_cli_help_lists_subcommands() -> None:
    res = _run_cli("--help")
    assert res.returncode == 0
    assert "standalone" in res.stdout


def test_hash_password_and_users_config(tmp_path: Path) -> None:
    res = subprocess.run(
        [sys.executable, "-m", "cli.main", "hash-password", "--stdin"],
        cwd=ROOT, input="s3cret\n", capture_output=True, text=True, timeout=60,
    )
    assert res.returncode == 0, res.stderr
    hashed = res.stdout.strip()
    from cli.config import config_from_dict
    from cli.webparts import make_auth
    from web.auth import Auth

    cfg = config_from_dict({"web": {"users": {"ops": hashed}, "session_secret": "x"}}, "t.yaml")
    auth = make_auth(cfg)
    assert isinstance(auth, Auth) and auth.enabled
    bad = config_from_dict({"web": {"users": {"ops": "plain-text"}}}, "t.yaml")
    with pytest.raises(UserError, match=r"t\.yaml: web\.users\.ops"):
        make_auth(bad)


def test_scrape_engine_keys_are_validated_by_the_scraper(tmp_path: Path) -> None:
    f = tmp_path / "limits.yaml"
    f.write_text(
        "scrape:\n  interval: 5s\n  sample_limit: 100\n  pools:\n    web:\n      label_limit: 3\n"
        "      metric_relabel_configs:\n        - {action: drop, source_labels: [__name__], regex: go_.*}\n"
    )
    cfg = load_config(f)
    default, pools = cfg.scrape.engine_configs()
    assert cfg.scrape.interval == 5.0
    assert default.sample_limit == 100 and pools["web"].sample_limit == 100 and pools["web"].label_limit == 3
    f.write_text("scrape:\n  sample_limit: lots\n")
    with pytest.raises(ConfigError, match=r"limits\.yaml:2: scrape\.sample_limit"):
        load_config(f)


def test_scraper_ring_cap_factor_from_config_and_flag(tmp_path: Path) -> None:
    import argparse

    from cli.cmd_scraper import options_from
    from discovery.balance import DEFAULT_CAP_FACTOR

    f = tmp_path / "scraper.yaml"
    f.write_text("discovery:\n  zookeeper: {hosts: '127.0.0.1:1'}\nscraper:\n  ring_cap_factor: 1.2\n")
    cfg = load_config(f)
    flags = dict(id="s-1", listen=None, zookeeper=None, zookeeper_root=None, vnodes=None, connect_timeout=1.0)
    assert options_from(argparse.Namespace(**flags, ring_cap_factor=None), cfg).cap_factor == 1.2
    assert options_from(argparse.Namespace(**flags, ring_cap_factor=1.1), cfg).cap_factor == 1.1
    with pytest.raises(UserError, match="--ring-cap-factor: expected a number from 1.0 to 4.0, got 0.5"):
        options_from(argparse.Namespace(**flags, ring_cap_factor=0.5), cfg)
    f.write_text("discovery:\n  zookeeper: {hosts: '127.0.0.1:1'}\n")
    assert options_from(argparse.Namespace(**flags, ring_cap_factor=None), load_config(f)).cap_factor == DEFAULT_CAP_FACTOR


def test_rollup_fresh_every(tmp_path: Path) -> None:
    f = tmp_path / "rollup.yaml"
    f.write_text("rollup:\n  fresh_every: 5m\n")
    assert load_config(f).rollup.fresh_every == 300.0
    f.write_text("rollup:\n  interval: 1m\n  fresh_every: 30s\n")
    with pytest.raises(ConfigError, match=r"rollup\.yaml:3: rollup\.fresh_every: must be between 1m"):
        load_config(f)


async def test_storage_rollup_cache_mb_sizes_the_stores_chunk_cache(tmp_path: Path) -> None:
    from cli.wiring import make_storage

    f = tmp_path / "cache.yaml"
    f.write_text(f"storage:\n  sqlite: {{path: {tmp_path / 'db'}}}\n  rollup_cache_mb: 3\n")
    store = await make_storage(load_config(f).storage)
    try:
        assert store.rollup_cache_bytes == 3 << 20  # type: ignore[attr-defined]
    finally:
        await store.close()
    f.write_text("storage:\n  rollup_cache_mb: -1\n")
    with pytest.raises(ConfigError, match=r"storage\.rollup_cache_mb: must be 0 \(off\) or more"):
        load_config(f)
