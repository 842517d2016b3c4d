"""Prometheus relabelling: ``relabel_configs`` (targets) and ``metric_relabel_configs`` (series).

Actions: replace, keep, drop, keepequal, dropequal, hashmod, labelmap, labeldrop,
labelkeep, lowercase, uppercase. Regexes are RE2 (Go's syntax), anchored at both ends as in
Prometheus; ``$1``/``${1}``/``$name``/``${name}`` expand in ``target_label`` and ``replacement``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

from common.config_keys import check_keys, key_error
from common.regex import Regex, RegexError, compile_regex
from storage.model import LABEL_NAME_RE

ACTIONS = (
    "replace", "keep", "drop", "keepequal", "dropequal", "hashmod", "labelmap", "labeldrop", "labelkeep",
    "lowercase", "uppercase",
)
_NEEDS_TARGET = {"replace", "hashmod", "lowercase", "uppercase", "keepequal", "dropequal"}
_KEYS = {"source_labels": "list of strings", "separator": "string", "target_label": "string",
         "regex": "string", "modulus": "integer", "replacement": "string", "action": "string"}
def _hashmod(value: str, modulus: int) -> int:
    digest = hashlib.md5(value.encode()).digest()
    return int.from_bytes(digest[8:], "big") % modulus


@dataclass(frozen=True)
class RelabelConfig:
    """One relabelling step."""

    action: str = "replace"
    source_labels: tuple[str, ...] = ()
    separator: str = ";"
    target_label: str = ""
    regex: str = "(.*)"
    modulus: int = 0
    replacement: str = "$1"
    compiled: Regex = field(default=None, compare=False, repr=False)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        try:
            object.__setattr__(self, "compiled", compile_regex(self.regex))
        except RegexError as exc:
            raise ValueError(str(exc)) from None

    @classmethod
    def from_dict(cls, d: Any, where: str = "relabel_config") -> RelabelConfig:
        """Build from YAML; an unknown key, wrong type or bad value raises ValueError naming it."""
        if not isinstance(d, dict):
            raise ValueError(f"{where}: expected a mapping, got {type(d).__name__}")
        check_keys(d, sorted(_KEYS), where)
        for k, v in d.items():
            want = _KEYS[k]
            if want == "string" and not isinstance(v, str):
                raise ValueError(key_error(d, where, k, f"expected {want}, got {type(v).__name__}"))
            if want == "integer" and (not isinstance(v, int) or isinstance(v, bool)):
                raise ValueError(key_error(d, where, k, f"expected {want}, got {type(v).__name__}"))
            if want == "list of strings" and (
                not isinstance(v, list) or not all(isinstance(x, str) for x in v)
            ):
                raise ValueError(key_error(d, where, k, f"expected {want}, got {v!r}"))
        action = d.get("action", "replace").lower()
        if action not in ACTIONS:
            raise ValueError(key_error(d, where, "action", f"unknown action {action!r} (one of {', '.join(ACTIONS)})"))
        kwargs: dict[str, Any] = {"action": action}
        if "source_labels" in d:
            kwargs["source_labels"] = tuple(d["source_labels"])
        for k in ("separator", "target_label", "regex", "replacement", "modulus"):
            if k in d:
                kwargs[k] = d[k]
        try:
            cfg = cls(**kwargs)
        except ValueError as exc:
            raise ValueError(key_error(d, where, "regex", str(exc))) from None
        if action in _NEEDS_TARGET and not cfg.target_label:
            raise ValueError(f"{where}: action {action!r} needs target_label")
        if action == "hashmod" and cfg.modulus <= 0:
            raise ValueError(key_error(d, where, "modulus", "action 'hashmod' needs a positive integer modulus"))
        if action in ("lowercase", "uppercase", "keepequal", "dropequal", "hashmod") and not LABEL_NAME_RE.match(
            cfg.target_label
        ):
            raise ValueError(key_error(d, where, "target_label", f"{cfg.target_label!r} is not a valid label name"))
        if action in ("labeldrop", "labelkeep") and ("source_labels" in d or "target_label" in d):
            raise ValueError(f"{where}: action {action!r} takes only regex")
        return cfg


def parse_relabel_configs(items: Any, where: str) -> tuple[RelabelConfig, ...]:
    if items is None:
        return ()
    if not isinstance(items, list):
        raise ValueError(f"{where}: expected a list, got {type(items).__name__}")
    return tuple(RelabelConfig.from_dict(d, f"{where}[{i}]") for i, d in enumerate(items))


def relabel(labels: dict[str, str], configs: tuple[RelabelConfig, ...]) -> dict[str, str] | None:  # noqa: C901 - one branch per relabel action, as Prometheus's relabel.Process
    """Apply configs in order to a label dict (changed in place); None when the set is dropped."""
    for cfg in configs:
        action = cfg.action
        if action in ("labeldrop", "labelkeep", "labelmap"):
            rx = cfg.compiled
            if action == "labelmap":
                for name in list(labels):
                    groups = rx.groups_of(name)
                    if groups is not None:
                        labels[rx.expand(cfg.replacement, groups)] = labels[name]
            else:
                keep = action == "labelkeep"
                for name in list(labels):
                    if rx.matches(name) != keep:
                        del labels[name]
            continue
        value = cfg.separator.join(labels.get(n, "") for n in cfg.source_labels)
        if action == "replace":
            groups = cfg.compiled.groups_of(value)
            if groups is None:
                continue
            target = cfg.compiled.expand(cfg.target_label, groups)
            if not LABEL_NAME_RE.match(target):
                continue
            res = cfg.compiled.expand(cfg.replacement, groups)
            if res:
                labels[target] = res
            else:
                labels.pop(target, None)
        elif action == "keep":
            if not cfg.compiled.matches(value):
                return None
        elif action == "drop":
            if cfg.compiled.matches(value):
                return None
        elif action == "keepequal":
            if value != labels.get(cfg.target_label, ""):
                return None
        elif action == "dropequal":
            if value == labels.get(cfg.target_label, ""):
                return None
        elif action == "hashmod":
            labels[cfg.target_label] = str(_hashmod(value, cfg.modulus))
        elif action == "lowercase":
            labels[cfg.target_label] = value.lower()
        elif action == "uppercase":
            labels[cfg.target_label] = value.upper()
    return labels
