"""YAML composed to nodes that keep their line numbers, so rule-file errors can say where.

Anchors and aliases are resolved by the composer; merge keys (``<<: *x``) are applied
here with the usual precedence (explicit keys win over merged ones).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import yaml


class YamlError(ValueError):
    """Unparseable YAML; ``line`` is 1-based (0 when unknown)."""

    def __init__(self, line: int, reason: str) -> None:
        super().__init__(f"line {line}: {reason}" if line else reason)
        self.line = line
        self.reason = reason


@dataclass(slots=True)
class YNode:
    """One YAML value with its position.

    ``kind`` is "map" (``value`` is dict[str, tuple[YNode key, YNode value]]), "seq"
    (``value`` is list[YNode]) or "scalar" (``value`` is the constructed Python value and
    ``text`` the scalar as written).
    """

    kind: str
    value: Any
    line: int
    column: int
    text: str = ""
    tag: str = ""
    style: str = ""  # scalar style: "" plain, "'" or '"' quoted, "|" literal, ">" folded

    @property
    def is_null(self) -> bool:
        return self.kind == "scalar" and self.value is None

    def as_text(self) -> str:
        """The scalar as a string the way a Go string field would receive it."""
        if self.kind != "scalar" or self.value is None:
            return ""
        return self.text

    def describe(self) -> str:
        if self.kind == "map":
            return "a mapping"
        if self.kind == "seq":
            return "a list"
        return f"{type(self.value).__name__} {self.text!r}"


def compose(text: str) -> YNode | None:
    """Parse one YAML document into positioned nodes; None for an empty document."""
    try:
        loader = yaml.SafeLoader(text)  # the reader already rejects e.g. NUL bytes here
    except yaml.reader.ReaderError as exc:
        raise _reader_error(exc, text) from None
    try:
        root = loader.get_single_node()
        if root is None:
            return None
        return _convert(loader, root, {})
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else 0
        reason = " ".join(p for p in (exc.context, exc.problem) if p) or str(exc)
        raise YamlError(line, reason) from None
    except yaml.reader.ReaderError as exc:
        raise _reader_error(exc, text) from None
    except yaml.YAMLError as exc:
        raise YamlError(0, str(exc)) from None
    except RecursionError:
        raise YamlError(loader.line + 1, "nested too deeply") from None
    except YamlError:
        raise
    except (ValueError, OverflowError) as exc:  # the scanner itself: chr() of an escape such as "\U00110000"
        raise YamlError(loader.line + 1, str(exc)) from None
    finally:
        loader.dispose()


def _reader_error(exc: yaml.reader.ReaderError, text: str) -> YamlError:
    """A character YAML does not allow (control characters, NUL), at its line."""
    line = text.count("\n", 0, exc.position) + 1 if isinstance(exc.position, int) else 0
    return YamlError(line, f"unacceptable character #x{exc.character:04x}: {exc.reason}")


def _convert(loader: yaml.SafeLoader, node: yaml.Node, seen: dict[int, YNode]) -> YNode:
    key = id(node)
    if key in seen:  # an alias: the same node object again
        return seen[key]
    line, col = node.start_mark.line + 1, node.start_mark.column + 1
    if isinstance(node, yaml.ScalarNode):
        try:
            value = loader.construct_object(node, deep=True)
        except (ValueError, TypeError, AttributeError, OverflowError, IndexError) as exc:
            # PyYAML's constructors raise these for e.g. "2001-13-45", "!!int abc", "!!timestamp x", '!!int ""'
            raise YamlError(line, f"invalid {node.tag.rsplit(':', 1)[-1]} value {node.value[:40]!r}: {exc}") from None
        out = YNode("scalar", value, line, col, text=node.value, tag=node.tag, style=node.style or "")
        seen[key] = out
        return out
    if isinstance(node, yaml.SequenceNode):
        out = YNode("seq", [], line, col, tag=node.tag)
        seen[key] = out
        out.value.extend(_convert(loader, child, seen) for child in node.value)
        return out
    assert isinstance(node, yaml.MappingNode)
    out = YNode("map", {}, line, col, tag=node.tag)
    seen[key] = out
    merged: dict[str, tuple[YNode, YNode]] = {}
    explicit: dict[str, tuple[YNode, YNode]] = {}
    for knode, vnode in node.value:
        if knode.tag == "tag:yaml.org,2002:merge":
            sources = vnode.value if isinstance(vnode, yaml.SequenceNode) else [vnode]
            for src in sources:
                conv = _convert(loader, src, seen)
                if conv.kind != "map":
                    raise YamlError(src.start_mark.line + 1, "merge key (<<) needs a mapping or list of mappings")
                for k, pair in conv.value.items():
                    merged.setdefault(k, pair)
            continue
        k = _convert(loader, knode, seen)
        if k.kind != "scalar":
            raise YamlError(k.line, "mapping keys must be scalars")
        name = k.text if k.value is not None else ""
        if name in explicit:
            raise YamlError(k.line, f'mapping key "{name}" already defined at line {explicit[name][0].line}')
        explicit[name] = (k, _convert(loader, vnode, seen))
    for k, pair in merged.items():
        out.value[k] = pair
    out.value.update(explicit)
    return out


def to_python(node: YNode | None) -> Any:
    """Plain Python values (dicts, lists, scalars) from a node tree."""
    if node is None:
        return None
    if node.kind == "map":
        return {k: to_python(v) for k, (_, v) in node.value.items()}
    if node.kind == "seq":
        return [to_python(v) for v in node.value]
    return node.value
