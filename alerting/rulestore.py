"""The set of loaded rule files, keeping the last good version of each file.

``reload()`` re-reads every configured path (globs allowed). A file that fails validation
keeps serving its last good groups and its error is reported; a file that never loaded
contributes nothing. Files no longer matched by the configured paths are dropped.
"""

from __future__ import annotations

import glob
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

from alerting.rulefile import LoadOptions, RuleError, RuleFile, RuleFileError, RuleGroup, load_rule_file

log = logging.getLogger("ringmon.alerting.rules")


@dataclass
class ReloadReport:
    """What a reload did: files loaded or unchanged, and the errors of files kept at last good."""

    loaded: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    failed: dict[str, list[RuleError]] = field(default_factory=dict)
    removed: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failed

    def summary(self) -> str:
        parts = [f"{len(self.loaded)} loaded", f"{len(self.unchanged)} unchanged", f"{len(self.failed)} failed"]
        return ", ".join(parts)


class RuleStore:
    """Holds the last good groups of each rule file; thread-unsafe, used from one event loop."""

    def __init__(self, paths: list[str], options: LoadOptions = LoadOptions()) -> None:
        self.paths = list(paths)
        self.options = options
        self._files: dict[str, RuleFile] = {}
        self._errors: dict[str, list[RuleError]] = {}
        self._stamps: dict[str, tuple[float, int]] = {}
        self.generation = 0

    def expand_paths(self) -> list[str]:
        out: list[str] = []
        for p in self.paths:
            if glob.has_magic(p):
                out.extend(sorted(glob.glob(p)))
            else:
                out.append(p)
        seen: set[str] = set()
        return [p for p in out if not (p in seen or seen.add(p))]

    def set_paths(self, paths: list[str]) -> None:
        self.paths = list(paths)

    def reload(self) -> ReloadReport:
        report = ReloadReport()
        wanted = self.expand_paths()
        changed = False
        for path in wanted:
            try:
                rf = load_rule_file(path, self.options)
            except RuleFileError as exc:
                report.failed[path] = exc.errors
                self._errors[path] = exc.errors
                kept = "keeping the last good version" if path in self._files else "no rules loaded from it"
                for err in exc.errors:
                    log.error("invalid rule file (%s): %s", kept, err)
                continue
            self._errors.pop(path, None)
            old = self._files.get(path)
            if old is not None and old.digest == rf.digest:
                report.unchanged.append(path)
                continue
            self._files[path] = rf
            report.loaded.append(path)
            changed = True
        for path in list(self._files):
            if path not in wanted:
                del self._files[path]
                self._errors.pop(path, None)
                report.removed.append(path)
                changed = True
        for path in list(self._errors):
            if path not in wanted:
                del self._errors[path]
        self._stamps = {p: _stamp(p) for p in wanted}
        if changed:
            self.generation += 1
        return report

    def changed_on_disk(self) -> bool:
        """True when any configured file (or the glob expansion) changed since the last reload."""
        wanted = self.expand_paths()
        if set(wanted) != set(self._stamps):
            return True
        return any(_stamp(p) != self._stamps.get(p) for p in wanted)

    def groups(self) -> list[RuleGroup]:
        out: list[RuleGroup] = []
        for path in self.expand_paths():
            rf = self._files.get(path)
            if rf is not None:
                out.extend(rf.groups)
        return out

    def files(self) -> dict[str, RuleFile]:
        return dict(self._files)

    def errors(self) -> dict[str, list[RuleError]]:
        return dict(self._errors)


def _stamp(path: str) -> tuple[float, int]:
    try:
        st = os.stat(path)
        return (st.st_mtime, st.st_size)
    except OSError:
        return (-1.0, -1)


def validate_rule_text(text: str, name: str = "<editor>", options: LoadOptions = LoadOptions()) -> list[RuleError]:
    """Errors for rule text (the web rule editor validates before saving); empty when valid."""
    from alerting.rulefile import parse_rule_text

    try:
        parse_rule_text(text, name, options)
    except RuleFileError as exc:
        return exc.errors
    return []


def write_rule_file_atomically(path: str, text: str, options: LoadOptions = LoadOptions()) -> list[RuleError]:
    """Validate then replace ``path`` atomically; an invalid text never touches the file."""
    errors = validate_rule_text(text, path, options)
    if errors:
        return errors
    target = Path(path)
    tmp = target.with_name(f".{target.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, target)
    return []
