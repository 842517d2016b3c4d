"""Checks shared by every discovery source: pool names, host:port addresses, scrape settings.

Each check raises ``ValueError`` with a message that says what was wrong and what is
expected, so callers only have to prefix where the value came from (file and key, or
command-line argument).
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any

from common.config_keys import check_keys, key_error
from common.durations import DurationError, parse_duration_ms
from discovery.target import ScrapeSettings

POOL_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
HOSTNAME_RE = re.compile(r"^(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?$")
LABEL_NAME_RE = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
SCRAPER_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:@-]{0,127}$")
SCHEMES = ("http", "https")


def check_pool_name(name: Any) -> str:
    """A pool name becomes a znode name and the ``job`` label: letters, digits, ``_ . -``."""
    if not isinstance(name, str) or not POOL_NAME_RE.match(name):
        raise ValueError(
            f"invalid pool name {name!r}: expected 1-64 characters of letters, digits, '_', '.', '-', "
            "starting with a letter or digit"
        )
    return name


def check_scraper_id(sid: Any) -> str:
    if not isinstance(sid, str) or not SCRAPER_ID_RE.match(sid):
        raise ValueError(
            f"invalid scraper id {sid!r}: expected 1-128 characters of letters, digits, '_ . : @ -', "
            "starting with a letter or digit"
        )
    return sid


def split_host_port(address: Any) -> tuple[str, int]:
    """Parse ``host:port`` (``[v6]:port`` for IPv6); raises ValueError saying what is wrong."""
    if not isinstance(address, str) or not address:
        raise ValueError(f"invalid address {address!r}: expected HOST:PORT")
    if address.startswith("["):
        close = address.find("]")
        if close < 0 or address[close + 1 : close + 2] != ":":
            raise ValueError(f"invalid address {address!r}: expected [IPv6]:PORT")
        host, port_text = address[1:close], address[close + 2 :]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(f"invalid address {address!r}: {host!r} is not an IPv6 address") from None
    else:
        host, sep, port_text = address.rpartition(":")
        if not sep or not host:
            raise ValueError(f"invalid address {address!r}: expected HOST:PORT (e.g. 10.0.0.5:9100)")
        if ":" in host:
            raise ValueError(f"invalid address {address!r}: write IPv6 hosts in brackets, [::1]:9100")
        if not HOSTNAME_RE.match(host):
            raise ValueError(f"invalid address {address!r}: {host!r} is not a valid host name or IPv4 address")
    if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise ValueError(f"invalid address {address!r}: port must be a number from 1 to 65535")
    return host, int(port_text)


def check_address(address: Any) -> str:
    """Normalised ``host:port`` string."""
    host, port = split_host_port(address)
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def parse_duration(value: Any) -> float:
    """Seconds from a number or a Prometheus duration string (``15s``, ``1m30s``, ``500ms``)."""
    if isinstance(value, bool):
        raise ValueError(f"expected a duration (e.g. 10s), got {value!r}")
    if isinstance(value, int | float):
        if isinstance(value, int) and abs(value) > 10**15:  # also keeps float() from overflowing
            raise ValueError(f"expected a duration (e.g. 10s), got a number too large: {str(value)[:40]}...")
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip()
        try:
            seconds = parse_duration_ms(text) / 1000.0
        except DurationError:
            try:
                seconds = float(text)
            except ValueError:
                raise ValueError(f"expected a duration (e.g. 10s, 1m30s), got {value!r}") from None
    else:
        raise ValueError(f"expected a duration (e.g. 10s), got {type(value).__name__} {value!r}")
    if not seconds > 0 or seconds != seconds:
        raise ValueError(f"expected a positive duration, got {value!r}")
    return seconds


def check_label_name(name: Any) -> str:
    if not isinstance(name, str) or not LABEL_NAME_RE.match(name) or name.startswith("__"):
        raise ValueError(
            f"invalid label name {name!r}: expected [a-zA-Z_][a-zA-Z0-9_]* not starting with '__'"
        )
    return name


def settings_from_mapping(data: Any, where: str = "settings", allow: tuple[str, ...] = ()) -> ScrapeSettings:
    """Build ScrapeSettings from ``{interval, timeout, path, scheme, labels}``.

    Every error names ``where.<key>`` and the expected type. ``allow`` lists extra keys the
    caller handles itself (e.g. ``hosts`` in the static file).
    """
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ValueError(f"{where}: expected a mapping, got {type(data).__name__} {data!r}")
    known = ("interval", "timeout", "path", "scheme", "labels") + allow
    check_keys(data, known, where)
    defaults = ScrapeSettings()
    kwargs: dict[str, Any] = {}
    for key, attr in (("interval", "interval_s"), ("timeout", "timeout_s")):
        if data.get(key) is not None:
            try:
                kwargs[attr] = parse_duration(data[key])
            except ValueError as exc:
                raise ValueError(key_error(data, where, key, str(exc))) from None
    path = data.get("path", defaults.path)
    if not isinstance(path, str) or not path.startswith("/") or any(c.isspace() for c in path):
        raise ValueError(key_error(data, where, "path", f"expected a URL path starting with '/', got {path!r}"))
    kwargs["path"] = path
    scheme = data.get("scheme", defaults.scheme)
    if scheme not in SCHEMES:
        raise ValueError(key_error(data, where, "scheme", f"expected one of {', '.join(SCHEMES)}, got {scheme!r}"))
    kwargs["scheme"] = scheme
    labels = data.get("labels") or {}
    if not isinstance(labels, dict):
        raise ValueError(key_error(data, where, "labels", f"expected a mapping of label name to string, got {labels!r}"))
    checked = {}
    for k, v in labels.items():
        try:
            check_label_name(k)
        except ValueError as exc:
            raise ValueError(key_error(labels, f"{where}.labels", k, str(exc))) from None
        if k in ("job", "instance"):
            raise ValueError(key_error(labels, f"{where}.labels", k, "'job' and 'instance' are set by Ringmon (pool and host:port)"))
        if isinstance(v, bool) or not isinstance(v, str | int | float):
            raise ValueError(key_error(labels, f"{where}.labels", k, f"expected a string, got {type(v).__name__} {v!r}"))
        checked[k] = str(v)
    kwargs["labels"] = tuple(sorted(checked.items()))
    settings = ScrapeSettings(**kwargs)
    if settings.timeout_s > settings.interval_s:
        raise ValueError(key_error(
            data, where, "timeout", f"{settings.timeout_s:g}s is longer than the interval {settings.interval_s:g}s"
        ))
    return settings


def settings_from_json(data: Any) -> ScrapeSettings:
    """Settings as stored in a pool znode (the shape ``ScrapeSettings.to_dict`` writes)."""
    return settings_from_mapping(data, "pool settings")
