"""Read YAML for every loader, with errors that name the file, line and column.

Every loader (main config, static targets, notifier and alerter config, dashboards, rule unit
tests; rule files compose nodes with ``UniqueKeyLoader``) reads its file the same way and
reports the same shape of error, ``<file>: line L column C: invalid YAML: <problem>``; they
wrap ``YamlFileError`` into their own error type. A key written twice in one mapping is an
error naming both lines (PyYAML keeps the last one silently: a second ``web:`` block would
drop the first one's ``users``); keys a merge (``<<: *x``) brings in may be overridden.

Every mapping comes back as a ``YamlMap``: a plain ``dict`` (equal to one, dumped as one by
json and ``yaml.safe_dump``) that also remembers its file and the line each key was written on,
so a config error can say ``<file>:<line>: <dotted.key>: <problem>`` (see ``common.config_keys``).
"""

from __future__ import annotations

from collections.abc import Generator
from pathlib import Path
from typing import Any

import yaml

MERGE_TAG = "tag:yaml.org,2002:merge"


class YamlMap(dict[Any, Any]):
    """A mapping as read from YAML: a ``dict`` plus ``source`` (the file) and ``key_lines`` (key -> 1-based line)."""

    source: str | None = None
    key_lines: dict[Any, int] = {}  # noqa: RUF012 - replaced per instance by the loader; empty for a bare YamlMap()


yaml.add_representer(YamlMap, yaml.SafeDumper.represent_dict, Dumper=yaml.SafeDumper)
yaml.add_representer(YamlMap, yaml.SafeDumper.represent_dict, Dumper=yaml.Dumper)


class YamlFileError(ValueError):
    """The file could not be read or is not valid YAML; the message says where and why."""


class UniqueKeyLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses a key written twice in one mapping; mappings are ``YamlMap``."""

    source: str | None = None  # the file being read, recorded on every YamlMap

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        if isinstance(node, yaml.MappingNode):
            check_unique_keys(self, node)
        return super().construct_mapping(node, deep=deep)

    def construct_yaml_map(self, node: yaml.MappingNode) -> Generator[YamlMap, None, None]:
        """Each mapping as a ``YamlMap`` that knows its file and the line of each key."""
        data = YamlMap()
        data.source = getattr(self, "source", None)
        yield data
        data.update(self.construct_mapping(node))
        lines: dict[Any, int] = {}
        for knode, _ in node.value:  # flattened by construct_mapping: merged keys carry their own lines
            if isinstance(knode, yaml.ScalarNode) and knode.tag != MERGE_TAG:
                key = self.construct_object(knode)
                if key in data:
                    lines.setdefault(key, knode.start_mark.line + 1)
        data.key_lines = lines


UniqueKeyLoader.add_constructor("tag:yaml.org,2002:map", UniqueKeyLoader.construct_yaml_map)


def check_unique_keys(loader: yaml.SafeLoader, node: yaml.MappingNode) -> None:
    """Raise a ``ConstructorError`` at the second of two equal keys of ``node`` (merge keys aside)."""
    seen: dict[Any, int] = {}
    for knode, _ in node.value:
        if knode.tag == MERGE_TAG:
            continue
        key = loader.construct_object(knode, deep=True)
        try:
            first = seen.get(key)
        except TypeError:  # an unhashable (complex) key: SafeLoader reports it itself
            continue
        if first is not None:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {str(key)[:80]!r}: first defined at line {first}", knode.start_mark)
        seen[key] = knode.start_mark.line + 1


def load_yaml_file(path: str | Path, what: str = "file") -> Any:
    """The parsed document of ``path`` (None when empty); ``what`` names it in read errors."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise YamlFileError(f"{p}: cannot read {what}: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        line = exc.object[: exc.start].count(b"\n") + 1
        raise YamlFileError(f"{p}: line {line}: not valid UTF-8") from None
    return parse_yaml(text, str(p))


def parse_yaml(text: str, source: str) -> Any:
    """Parse one YAML document; errors start with ``source``."""
    try:
        loader = UniqueKeyLoader(text)  # its reader already checks the characters
        loader.source = source
        try:
            return loader.get_single_data()
        finally:
            loader.dispose()
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1} column {mark.column + 1}:" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise YamlFileError(f"{source}:{where} invalid YAML: {problem}") from None
    except (ValueError, TypeError, AttributeError, OverflowError, IndexError) as exc:  # PyYAML: 2001-13-45, !!int ""
        raise YamlFileError(f"{source}: invalid YAML value: {exc}") from None
    except RecursionError:
        raise YamlFileError(f"{source}: invalid YAML: nested too deeply") from None
