"""The Ringmon YAML configuration: typed sections with defaults, validated on load.

Every mistake is reported as ``<file>:<line>: <dotted.key>: <what was expected>`` (through
``common.config_keys``, like every config section's; a value set by a command-line override has
no line); unknown keys are errors (a typo must not silently fall back to a default).
"""

from __future__ import annotations

import copy
import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cli.errors import UserError
from common.config_keys import check_keys, in_file, with_line
from common.durations import DurationError, parse_duration_ms
from common.yamlfile import YamlFileError, YamlMap, load_yaml_file

if TYPE_CHECKING:
    from query.budget import QueryLimits  # the query packages load only where queries run


class ConfigError(UserError):
    """The config file is wrong; the message names file, key and expectation."""


class Duration(float):
    """Seconds; written in YAML as a number or a Prometheus duration such as ``15s`` or ``1h30m``."""


def parse_duration(text: str) -> float:
    """Prometheus duration syntax to seconds; raises ValueError on anything else."""
    try:
        return parse_duration_ms(text) / 1000.0
    except DurationError as exc:
        if "out of range" in str(exc):
            raise ValueError(f"duration out of range: {text[:40]!r}") from None
        raise ValueError(f"not a duration: {text!r} (use e.g. 10s, 1m30s, 2h)") from None


# -- sections ----------------------------------------------------------------------------------


@dataclass
class SQLiteConfig:
    path: str = ""  # default: <data_dir>/ringmon.db


@dataclass
class CassandraConfig:
    hosts: list[str] = field(default_factory=lambda: ["127.0.0.1"])
    port: int = 9042
    keyspace: str = "ringmon"
    replication_factor: int = 1
    spool_dir: str = ""  # default: <data_dir>/spool
    max_in_flight: int = 256
    write_group: Duration = Duration(1.0)  # a scrape's frame waits this long for others to go with (0: alone)


@dataclass
class StorageConfig:
    backend: str = "sqlite"  # sqlite | cassandra
    sqlite: SQLiteConfig = field(default_factory=SQLiteConfig)
    cassandra: CassandraConfig = field(default_factory=CassandraConfig)
    rollup_cache_mb: int = 128  # rollup chunks a process keeps after reading them, per resolution; 0: off

    def validate(self, where: str) -> None:
        if self.backend not in ("sqlite", "cassandra"):
            raise ValueError(f"{where}.backend: expected 'sqlite' or 'cassandra', got {self.backend!r}")
        if self.rollup_cache_mb < 0:
            raise ValueError(f"{where}.rollup_cache_mb: must be 0 (off) or more, got {self.rollup_cache_mb!r}")


@dataclass
class ZooKeeperConfig:
    hosts: str = "127.0.0.1:2181"
    session_timeout: Duration = Duration(10.0)
    root: str = "/ringmon"  # the znode under which pools, members and scrapers live


@dataclass
class DiscoveryConfig:
    static_file: str = ""  # YAML: pools -> settings and hosts
    zookeeper: ZooKeeperConfig | None = None
    refresh_interval: Duration = Duration(30.0)


@dataclass
class ScrapeDefaults:
    """Scrape interval and timeout for local agents, and the scrape engine's settings.

    Every other key (limits, relabelling, ``pools: {name: {...}}`` overrides) belongs to
    ``scraper.config`` and is validated there; ``engine`` holds them.
    """

    interval: Duration = Duration(10.0)
    timeout: Duration = Duration(5.0)
    engine: dict[str, Any] = field(default_factory=dict)

    OPEN_KEYS = "engine"  # unknown keys of this section are collected here, then validated

    def validate(self, where: str) -> None:
        from scraper.config import scrape_configs_from_dict

        # interval and timeout are this class's fields; the error for an unknown key lists them too.
        scrape_configs_from_dict(self.engine, where, settings_keys=("interval", "timeout"))

    def engine_configs(self) -> tuple[Any, dict[str, Any]]:
        """``(default ScrapeConfig, {pool: ScrapeConfig})`` for ``ScrapePool``."""
        from scraper.config import scrape_configs_from_dict

        return scrape_configs_from_dict(self.engine, "scrape", settings_keys=("interval", "timeout"))


@dataclass
class ScraperConfig:
    """One member of the scraper ring (cluster mode); command-line flags override these."""

    id: str = ""  # default: <hostname>-<port>
    listen: str = "127.0.0.1:9400"  # /metrics and /targets
    vnodes: int = 1000  # virtual nodes per scraper on the hash ring (see bench/ring_sim.py)
    zookeeper_root: str = ""  # default: discovery.zookeeper.root
    # Bounded loads: no scraper owns more than this times the mean share of targets. The
    # leader's value is the one used (it plans the overrides; see discovery/balance.py).
    ring_cap_factor: float = 1.05

    def validate(self, where: str) -> None:
        if self.vnodes < 1:
            raise ValueError(f"{where}.vnodes: expected a positive number, got {self.vnodes}")
        if not 1.0 <= self.ring_cap_factor <= 4.0:
            raise ValueError(f"{where}.ring_cap_factor: expected a number from 1.0 to 4.0, got {self.ring_cap_factor}")


@dataclass
class LocalAgents:
    """Agents standalone mode runs in-process, each a distinct target on its own port."""

    pool: str = "local"
    count: int = 1
    synthetic_load_rps: float = 0.0


@dataclass
class LoginLimits:
    """Failed logins per (user, client address): these are free, then each waits twice as long."""

    free_failures: int = 5
    first_delay: Duration = Duration(30.0)
    max_delay: Duration = Duration(900.0)
    address_factor: int = 4  # an address alone (any user names) gets this many times the free failures

    def validate(self, where: str) -> None:
        if self.free_failures < 1 or self.address_factor < 1:
            raise ValueError(f"{where}: free_failures and address_factor must be at least 1")
        if not 0 < self.first_delay <= self.max_delay:
            raise ValueError(f"{where}: expected 0 < first_delay <= max_delay")


@dataclass
class WebConfig:
    listen: str = "127.0.0.1:8080"
    # Users who may change things from the browser (rule editor, silences):
    # name -> scrypt hash from `ringmon hash-password`. None configured: read-only pages.
    users: dict[str, str] = field(default_factory=dict)
    session_secret: str = ""  # signs sessions and CSRF tokens; empty: random per start
    session_lifetime: Duration = Duration(12 * 3600.0)  # a login lasts this long unless logged out
    login_limits: LoginLimits = field(default_factory=LoginLimits)
    trusted_proxies: list[str] = field(default_factory=list)  # their X-Forwarded-For names the client
    secure_cookies: bool = False  # set when served over HTTPS
    dashboards_dirs: list[str] = field(default_factory=list)  # extra YAML dashboards (shipped ones always load)
    rules_history_dir: str = ""  # rule editor history; default <data_dir>/rules-history
    # Cluster mode: alerter HTTP APIs (HOST:PORT) for the alert, rule and silence pages.
    # Empty: the addresses alerters publish in ZooKeeper, else alerter.listen of `alerting`.
    alerters: list[str] = field(default_factory=list)
    pprof: bool = True  # serve /debug/pprof/ (Python stack and heap profiles, web/pprof.py)
    pprof_max_seconds: Duration = Duration(30.0)  # a CPU profile samples at most this long

    def validate(self, where: str) -> None:
        if not 0 < self.pprof_max_seconds <= 3600:
            raise ValueError(f"{where}.pprof_max_seconds: expected 0 < seconds <= 1h, got {self.pprof_max_seconds!r}")


@dataclass
class QueryConfig:
    """Budgets of every PromQL query the web server and the HTTP API evaluate."""

    max_samples: int = 50_000_000  # samples and points one query holds (Prometheus's default)
    max_memory_mb: int = 2048  # memory one evaluation may add (its worker process is capped)
    timeout: Duration = Duration(30.0)
    max_concurrency: int = 4  # big queries evaluated at once in worker processes
    isolate: bool = True  # false: big queries evaluate in threads of the serving process (bench/hostile.py --threads)

    def validate(self, where: str) -> None:
        for key in ("max_samples", "max_memory_mb", "timeout", "max_concurrency"):
            if getattr(self, key) <= 0:
                raise ValueError(f"{where}.{key}: must be positive, got {getattr(self, key)!r}")

    def limits(self) -> QueryLimits:
        from query.budget import QueryLimits

        return QueryLimits(
            max_samples=self.max_samples,
            max_memory_bytes=self.max_memory_mb << 20,
            timeout_s=float(self.timeout),
            max_concurrency=self.max_concurrency,
        )


@dataclass
class RulesConfig:
    files: list[str] = field(default_factory=list)
    evaluation_interval: Duration = Duration(15.0)


@dataclass
class RollupConfig:
    """The rollup job: in-process in standalone, ``ringmon rollup`` in a cluster."""

    interval: Duration = Duration(60.0)  # pause between passes (the first runs at start)
    # spacing of the fresh pass (storage.rollup_job): each writes a provisional chunk row per
    # series and reads the minutes since the last one, so its CPU is mostly per series and pass
    # (issue #20: at 1m and 100,000 series, ~2/3 of the standalone's CPU in steady state); queries
    # build the minutes after the newest fresh row from raw samples
    fresh_every: Duration = Duration(300.0)

    def validate(self, where: str) -> None:
        if not 60.0 <= float(self.fresh_every) <= 7200.0:
            raise ValueError(f"{where}.fresh_every: must be between 1m and the 2h rollup window, got {self.fresh_every!r}")


@dataclass
class RingmonConfig:
    storage: StorageConfig = field(default_factory=StorageConfig)
    discovery: DiscoveryConfig = field(default_factory=DiscoveryConfig)
    scrape: ScrapeDefaults = field(default_factory=ScrapeDefaults)
    scraper: ScraperConfig = field(default_factory=ScraperConfig)
    agents: list[LocalAgents] = field(default_factory=list)
    web: WebConfig = field(default_factory=WebConfig)
    rules: RulesConfig = field(default_factory=RulesConfig)
    query: QueryConfig = field(default_factory=QueryConfig)
    rollup: RollupConfig = field(default_factory=RollupConfig)
    alerting: str = ""  # the alerting file (alerter: section, route, receivers); empty: no alerter
    data_dir: str = "data"  # state files not configured elsewhere live here
    source: str = ""  # the file it came from (not a YAML key)

    def fill_data_dir_defaults(self) -> None:
        """Paths left empty go under ``data_dir``."""
        base = Path(self.data_dir)
        if not self.storage.sqlite.path:
            self.storage.sqlite.path = str(base / "ringmon.db")
        if not self.storage.cassandra.spool_dir:
            self.storage.cassandra.spool_dir = str(base / "spool")


# -- loading -----------------------------------------------------------------------------------


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if tp is Duration:
        return "duration (e.g. 10s)"
    if dataclasses.is_dataclass(tp):
        return "mapping"
    if origin in (list, tuple):
        return f"list of {_type_name(typing.get_args(tp)[0])}"
    if origin is dict:
        return f"mapping of {_type_name(typing.get_args(tp)[1])}"
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp) if a is not type(None))
    return getattr(tp, "__name__", str(tp))


def _convert(tp: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return None
        return _convert(args[0], value, where)
    if dataclasses.is_dataclass(tp):
        if value is None:
            value = {}
        if not isinstance(value, dict):
            raise ValueError(f"{where}: expected a mapping, got {type(value).__name__} {value!r}")
        return _build(tp, value, where)
    if tp is Duration:
        if isinstance(value, bool):
            pass
        elif isinstance(value, int | float):
            try:
                return Duration(float(value))
            except OverflowError:
                raise ValueError(f"{where}: duration out of range: {str(value)[:40]}...") from None
        elif isinstance(value, str):
            try:
                return Duration(parse_duration(value))
            except ValueError as exc:
                raise ValueError(f"{where}: {exc}") from None
        raise ValueError(f"{where}: expected a duration (e.g. 10s), got {type(value).__name__} {value!r}")
    if origin is list:
        if not isinstance(value, list):
            raise ValueError(f"{where}: expected {_type_name(tp)}, got {type(value).__name__} {value!r}")
        (item,) = typing.get_args(tp)
        return [_convert(item, v, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ValueError(f"{where}: expected {_type_name(tp)}, got {type(value).__name__} {value!r}")
        return _convert_items(typing.get_args(tp)[1], value, where)
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp in (str, int, float, bool):
        if type(value) is not tp:
            raise ValueError(f"{where}: expected {tp.__name__}, got {type(value).__name__} {value!r}")
        return value
    return value


def _convert_items(item: Any, value: dict, where: str) -> dict[str, Any]:
    """Each value of a ``dict[str, X]`` section converted; an error gets its key's line."""
    out = {}
    for k, v in value.items():
        try:
            out[str(k)] = _convert(item, v, f"{where}.{k}")
        except ValueError as exc:
            raise ValueError(with_line(value, where, k, str(exc))) from None
    return out


def _build(cls: Any, data: dict, where: str) -> Any:
    hints = typing.get_type_hints(cls)
    open_field = getattr(cls, "OPEN_KEYS", None)
    names = {f.name for f in dataclasses.fields(cls) if f.name not in ("source", open_field)}
    kwargs: dict[str, Any] = {}
    given = data  # the mapping as read: its key lines place the errors
    if open_field:  # an open section collects its other keys, validated by whoever reads them
        rest = copy.copy(data)  # a shallow copy that keeps a YamlMap's key lines for the open section's errors
        for k in names:
            rest.pop(k, None)
        kwargs[open_field] = rest
        data = {k: v for k, v in data.items() if k in names}
    else:
        check_keys(data, sorted(names), where)
    for key, value in data.items():
        path = f"{where}.{key}" if where else str(key)
        try:
            kwargs[key] = _convert(hints[key], value, path)
        except ValueError as exc:  # the line of the key whose value is wrong
            raise ValueError(with_line(given, where, key, str(exc))) from None
    obj = cls(**kwargs)
    check = getattr(obj, "validate", None)
    if check is not None:
        try:
            check(where or "config")
        except ValueError as exc:  # "<where>.<key>: ..." of a validate(): the line of that key
            raise ValueError(_on_a_line(given, where, str(exc))) from None
    return obj


def _on_a_line(data: dict, where: str, message: str) -> str:
    """``message`` with the line of the key of ``data`` it starts with (unchanged if none)."""
    for key in data:
        placed = with_line(data, where, key, message)
        if placed != message:
            return placed
    return message


def _apply_overrides(data: dict, overrides: dict[str, Any]) -> dict:
    """``data`` with dotted keys (``web.listen``) set from the command line.

    Mappings are copied shallowly, so a ``YamlMap`` keeps its file and key lines; a key set
    here loses its line (its value did not come from the file)."""
    out = copy.copy(data)
    for dotted, value in overrides.items():
        node = out
        *parents, last = dotted.split(".")
        for key in parents:
            child = node.get(key)
            node[key] = copy.copy(child) if isinstance(child, dict) else {}
            node = node[key]
        node[last] = value
        if isinstance(node, YamlMap):
            node.key_lines = {k: n for k, n in node.key_lines.items() if k != last}
    return out


def config_from_dict(data: dict | None, source: str = "<config>", overrides: dict[str, Any] | None = None) -> RingmonConfig:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the top level must be a mapping, got {type(data).__name__}")
    if overrides:
        data = _apply_overrides(data, overrides)
    try:
        cfg: RingmonConfig = _build(RingmonConfig, data, "")  # builds the dataclass its hints name
    except ValueError as exc:
        raise ConfigError(in_file(source, str(exc))) from None
    cfg.source = source
    cfg.fill_data_dir_defaults()
    return cfg


def load_config(path: str | Path, overrides: dict[str, Any] | None = None) -> RingmonConfig:
    """Read and validate a config file; raises ConfigError with file, key and expectation.

    ``overrides``: dotted keys set from the command line (``{"web.listen": "127.0.0.1:9090"}``),
    applied before validation and before paths are derived from ``data_dir``."""
    p = Path(path)
    try:
        data = load_yaml_file(p, "config")
    except YamlFileError as exc:
        raise ConfigError(str(exc)) from None
    return config_from_dict(data, str(p), overrides)
