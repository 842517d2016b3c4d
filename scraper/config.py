"""Per-pool scrape configuration beyond interval/timeout: limits, relabelling, honor_* flags.

``ScrapeConfig.from_dict`` reads the YAML mapping of a pool's ``scrape`` section; an
unknown key or a value of the wrong type raises ValueError naming the key and the
expected type. Pool-level interval/timeout/path/scheme/labels stay in
``discovery.target.ScrapeSettings``.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from common.config_keys import key_error, with_line
from scraper.relabel import RelabelConfig, parse_relabel_configs

_SIZE_RE = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*([KMGT]i?B|B)?\s*$", re.IGNORECASE)
_UNITS = {"b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
          "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}

# key -> (expected type description, converter)
_INT_KEYS = ("sample_limit", "label_limit", "label_name_length_limit", "label_value_length_limit")
_BOOL_KEYS = ("honor_labels", "honor_timestamps", "strict_openmetrics")
# Keys owned by discovery.target.ScrapeSettings that may sit in the same YAML section.
SETTINGS_KEYS = frozenset({"interval", "timeout", "path", "scheme", "labels"})


def parse_size(value: Any, where: str) -> int:
    """``10MB``, ``512KiB``, ``1048576`` -> bytes."""
    if isinstance(value, bool):
        raise ValueError(f"{where}: expected a size (bytes or e.g. '10MB'), got bool")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"{where}: must not be negative")
        return value
    if isinstance(value, str):
        m = _SIZE_RE.match(value)
        if m:
            size = float(m.group(1)) * _UNITS[(m.group(2) or "B").lower()]
            if size > 2**62:  # also infinity, which int() cannot take
                raise ValueError(f"{where}: size too large: {value[:40]!r}")
            return int(size)
    raise ValueError(f"{where}: expected a size (bytes or e.g. '10MB'), got {value!r}")


@dataclass(frozen=True)
class ScrapeConfig:
    """Limits and relabelling for every target of a pool (0 means "no limit")."""

    body_size_limit: int = 0
    sample_limit: int = 0
    label_limit: int = 0
    label_name_length_limit: int = 0
    label_value_length_limit: int = 0
    honor_labels: bool = False
    honor_timestamps: bool = True
    strict_openmetrics: bool = False
    relabel_configs: tuple[RelabelConfig, ...] = ()
    metric_relabel_configs: tuple[RelabelConfig, ...] = ()

    @classmethod
    def from_dict(
        cls, d: Any, where: str = "scrape", *, settings_keys: Iterable[str] = SETTINGS_KEYS,
        also_allowed: Iterable[str] = (),
    ) -> ScrapeConfig:  # fmt: skip
        """Validate and build from a YAML mapping (``where`` prefixes every error message).

        ``settings_keys`` (skipped here: another part of the config reads them) and
        ``also_allowed`` (keys the caller handles itself, e.g. ``pools``) are accepted, and an
        unknown key's error lists them with this class's keys: every key the section takes."""
        settings_keys = frozenset(settings_keys)
        if d is None:
            return cls()
        if not isinstance(d, dict):
            raise ValueError(f"{where}: expected a mapping, got {type(d).__name__}")
        kwargs: dict[str, Any] = {}
        for key, value in d.items():
            if key in _INT_KEYS:
                if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                    raise ValueError(key_error(d, where, key, f"expected a non-negative integer, got {value!r}"))
                kwargs[key] = value
            elif key in _BOOL_KEYS:
                if not isinstance(value, bool):
                    raise ValueError(key_error(d, where, key, f"expected a boolean, got {type(value).__name__}"))
                kwargs[key] = value
            elif key == "body_size_limit":
                kwargs[key] = _on_key_line(parse_size, value, d, where, key)
            elif key in ("relabel_configs", "metric_relabel_configs"):
                kwargs[key] = _on_key_line(parse_relabel_configs, value, d, where, key)
            elif key in settings_keys:
                continue
            else:
                allowed = sorted(
                    set(_INT_KEYS) | set(_BOOL_KEYS) | {"body_size_limit", "relabel_configs", "metric_relabel_configs"}
                    | settings_keys | set(also_allowed)
                )
                raise ValueError(key_error(d, where, key, f"unknown key (known keys here: {', '.join(allowed)})"))
        return cls(**kwargs)


def _on_key_line(parse: Callable[[Any, str], Any], value: Any, d: Any, where: str, key: str) -> Any:
    """``parse(value, "<where>.<key>")``; its error gets the line of ``key`` in ``d`` (a list item's own key lines stay)."""
    try:
        return parse(value, f"{where}.{key}")
    except ValueError as exc:
        raise ValueError(with_line(d, where, key, str(exc))) from None


def scrape_configs_from_dict(
    data: Any, where: str = "scrape", *, settings_keys: Iterable[str] = SETTINGS_KEYS
) -> tuple[ScrapeConfig, dict[str, ScrapeConfig]]:
    """A whole ``scrape:`` section: defaults for every pool plus ``pools: {name: {...}}`` overrides.

    Pool entries are laid over the defaults key by key (a pool's ``metric_relabel_configs``
    replaces the default list). ``settings_keys`` of the top level (by default
    interval/timeout/path/scheme/labels, which belong to ``ScrapeSettings``) are skipped here.
    Returns ``(default_config, {pool: config})``.
    """
    if data is None:
        return ScrapeConfig(), {}
    if not isinstance(data, dict):
        raise ValueError(f"{where}: expected a mapping, got {type(data).__name__}")
    base = copy.copy(data)  # a shallow copy that keeps a YamlMap's key lines for the errors
    base.pop("pools", None)
    default = ScrapeConfig.from_dict(base, where, settings_keys=settings_keys, also_allowed=("pools",))
    pools = data.get("pools") or {}
    if not isinstance(pools, dict):
        raise ValueError(key_error(data, where, "pools", f"expected a mapping of pool name to settings, got {type(pools).__name__}"))
    per_pool: dict[str, ScrapeConfig] = {}
    for name, overrides in pools.items():
        if overrides is not None and not isinstance(overrides, dict):
            raise ValueError(key_error(pools, f"{where}.pools", name, f"expected a mapping, got {type(overrides).__name__}"))
        merged = {**base, **(overrides or {})}
        ScrapeConfig.from_dict(overrides or {}, f"{where}.pools.{name}")  # errors name the pool's key
        per_pool[str(name)] = ScrapeConfig.from_dict(merged, f"{where}.pools.{name}")
    return default, per_pool
