"""One way to check a config mapping's keys and to word a config error.

Every config section (main config, alerter and notifier config, channels, static targets,
scrape configs and relabelling, dashboards) checks its keys with ``check_keys`` and words a
problem with one key through ``key_error``, so every error has one shape::

    <file>:<line>: <dotted.key>: unknown key (known keys here: a, b, c)
    <file>:<line>: <dotted.key>: <problem>

The file and line come from the mapping itself when it was read by ``common.yamlfile``
(a ``YamlMap``); data that did not come from a file (command-line overrides, API bodies,
dicts built in code) gives ``<where>.<key>: <problem>`` with the caller's ``where``.
Checks that word their own ``<dotted.key>: <problem>`` get the line put in by ``with_line``.

``where`` is the caller's dotted path to the mapping, optionally prefixed by ``<file>: `` as
the modules already write it; ``"<file>:"`` (a trailing colon) means the top of the file.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any


def key_where(data: Any, where: str, key: Any) -> str:
    """``<file>:<line>: <dotted.key>`` for ``key`` of mapping ``data`` (``<where>.<key>`` when ``data`` has no line)."""
    source: str | None = getattr(data, "source", None)
    line = getattr(data, "key_lines", {}).get(key) if source else None
    top = where.endswith(":")
    path = where[:-1] if top else where
    if line is None:
        return f"{path}: {key}" if top else (f"{path}.{key}" if path else str(key))
    assert source is not None
    if path == source:
        dotted = str(key)
    elif path.startswith(f"{source}: "):
        dotted = f"{path[len(source) + 2:]}.{key}"
    else:
        dotted = f"{path}.{key}" if path else str(key)
    return f"{source}:{line}: {dotted}"


def key_error(data: Any, where: str, key: Any, problem: str) -> str:
    """The text of a config error about ``key`` of ``data``: ``<file>:<line>: <dotted.key>: <problem>``."""
    return f"{key_where(data, where, key)}: {problem}"


def with_line(data: Any, where: str, key: Any, message: str) -> str:
    """``message`` about ``key`` of ``data`` given the key's line when it reads ``<where>.<key>...: <problem>``.

    For checks that word their own ``<dotted.key>: <problem>`` (value conversion, nested lists):
    the caller wraps the ValueError of ``key``'s value; a message already with a line, or about
    another key, is returned unchanged."""
    bare = key_where({}, where, key)  # the dotted key as written without a line
    if not message.startswith(bare) or message[len(bare):len(bare) + 1] not in (":", "["):
        return message
    return key_where(data, where, key) + message[len(bare):]


def check_keys(
    data: Mapping[Any, Any], known: Iterable[str], where: str, error: type[Exception] = ValueError
) -> None:
    """Raise ``error`` naming the first key of ``data`` not in ``known`` (file, line, dotted key, known keys)."""
    names = list(known)
    for key in data:
        if key not in names:
            raise error(key_error(data, where, key, f"unknown key (known keys here: {', '.join(names)})"))


def in_file(source: str, message: str) -> str:
    """``message`` prefixed by ``<source>: ``, unless a ``key_error`` already put ``<source>:<line>:`` first."""
    return message if message.startswith(f"{source}:") else f"{source}: {message}"
