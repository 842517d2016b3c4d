"""Static-file discovery: a YAML file of pools, their scrape settings and hosts.

    pools:
      node:
        interval: 15s
        timeout: 5s
        path: /metrics
        scheme: http
        labels: {team: infra}
        hosts: [10.0.0.5:9100, 10.0.0.6:9100]

``load_static_targets(path)`` returns the targets; any mistake raises ``ValueError``
naming the file, the key and what was expected. ``StaticDiscovery`` re-reads the file
when it changes and keeps the last good target list when an edit is invalid.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from common.config_keys import check_keys, in_file, key_error, with_line
from common.yamlfile import load_yaml_file
from discovery.target import Target
from discovery.validation import check_address, check_pool_name, settings_from_mapping

log = logging.getLogger("ringmon.discovery.static")


def targets_from_dict(data: Any, source: str = "<static>") -> list[Target]:
    """Targets from the parsed YAML document; errors are ``ValueError("<source>: key: ...")``."""
    if data is None:
        return []
    if not isinstance(data, dict):
        raise ValueError(f"{source}: the top level must be a mapping with a 'pools' key, got {type(data).__name__}")
    check_keys(data, ("pools",), f"{source}:")
    pools = data.get("pools") or {}
    if not isinstance(pools, dict):
        raise ValueError(key_error(data, f"{source}:", "pools", f"expected a mapping of pool name to settings, got {type(pools).__name__}"))
    targets: list[Target] = []
    seen: set[str] = set()
    for name, body in pools.items():
        where = f"pools.{name}"
        try:
            check_pool_name(name)
        except ValueError as exc:
            raise ValueError(key_error(pools, f"{source}: pools", name, str(exc))) from None
        try:
            settings = settings_from_mapping(body, where, allow=("hosts",))
        except ValueError as exc:
            raise ValueError(in_file(source, str(exc))) from None
        hosts = (body or {}).get("hosts") or []
        if not isinstance(hosts, list):
            raise ValueError(key_error(body, f"{source}: {where}", "hosts", f"expected a list of HOST:PORT strings, got {type(hosts).__name__}"))
        for i, host in enumerate(hosts):
            try:
                address = check_address(host)
            except ValueError as exc:
                raise ValueError(with_line(body, f"{source}: {where}", "hosts", f"{source}: {where}.hosts[{i}]: {exc}")) from None
            target = Target(pool=name, address=address, settings=settings)
            if target.key in seen:
                raise ValueError(with_line(
                    body, f"{source}: {where}", "hosts", f"{source}: {where}.hosts[{i}]: {address} is listed twice in pool {name}"
                ))
            seen.add(target.key)
            targets.append(target)
    return targets


def load_static_targets(path: str | os.PathLike[str]) -> list[Target]:
    """Read and validate a static targets file."""
    p = Path(path)
    data = load_yaml_file(p, "static targets file")  # YamlFileError is a ValueError
    return targets_from_dict(data, str(p))


class StaticDiscovery:
    """Targets from a static file, re-read when its modification time changes.

    ``targets()`` never raises after the first successful load: a bad edit is logged and
    the last good list is kept, so a typo cannot stop scraping.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._mtime: float | None = None
        self._targets: list[Target] = load_static_targets(self.path)
        self._mtime = self._stat()
        self.last_error: str | None = None

    def _stat(self) -> float | None:
        try:
            return self.path.stat().st_mtime_ns / 1e9
        except OSError:
            return None

    def targets(self) -> list[Target]:
        mtime = self._stat()
        if mtime is not None and mtime != self._mtime:
            try:
                self._targets = load_static_targets(self.path)
                self.last_error = None
                log.info("static targets reloaded", extra={"file": str(self.path), "targets": len(self._targets)})
            except ValueError as exc:
                self.last_error = str(exc)
                log.error("static targets file invalid, keeping last good list", extra={"error": str(exc)})
            self._mtime = mtime
        return list(self._targets)
