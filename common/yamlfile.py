"""Read YAML for the config loaders, with errors that name the file, line and column.

Every loader (main config, static targets, notifier and alerter config) reads its file the
same way and reports the same shape of error, ``<file>: line L column C: invalid YAML:
<problem>``; they wrap ``YamlFileError`` into their own error type.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml


class YamlFileError(ValueError):
    """The file could not be read or is not valid YAML; the message says where and why."""


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
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1} column {mark.column + 1}:" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise YamlFileError(f"{source}:{where} invalid YAML: {problem}") from None
    except (ValueError, TypeError, AttributeError, OverflowError, IndexError) as exc:  # PyYAML: 2001-13-45, !!int ""
        raise YamlFileError(f"{source}: invalid YAML value: {exc}") from None
    except RecursionError:
        raise YamlFileError(f"{source}: invalid YAML: nested too deeply") from None
