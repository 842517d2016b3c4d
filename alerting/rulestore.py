"""The set of loaded rule files, keeping the last good version of each file.

``reload()`` re-reads every configured path (globs allowed). A file that fails validation
keeps serving its last good groups and its error is reported; a file that never loaded
contributes nothing. Files no longer matched by the configured paths are dropped.
"""

from __future__ import annotations

import contextlib
import glob
import logging
import os
import secrets
import stat
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


@dataclass
class LoadedFiles:
    """What ``RuleStore.read`` found: each wanted path's parsed file or its error, and stamps."""

    wanted: list[str]
    loaded: dict[str, RuleFile | RuleFileError]
    stamps: dict[str, tuple[float, int]]


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
        return list(dict.fromkeys(out))  # in order, each once

    def set_paths(self, paths: list[str]) -> None:
        self.paths = list(paths)

    def read(self) -> LoadedFiles:
        """Read and validate every configured file without touching the store (blocking, no
        shared state: run it in a worker thread, then ``apply`` the result on the loop)."""
        wanted = self.expand_paths()
        stamps = {p: _stamp(p) for p in wanted}  # before reading: a write meanwhile shows as a change
        loaded: dict[str, RuleFile | RuleFileError] = {}
        for path in wanted:
            try:
                loaded[path] = load_rule_file(path, self.options)
            except RuleFileError as exc:
                loaded[path] = exc
        return LoadedFiles(wanted, loaded, stamps)

    def reload(self) -> ReloadReport:
        return self.apply(self.read())

    def apply(self, result: LoadedFiles) -> ReloadReport:
        """Take files read by ``read``: valid ones replace their last good version."""
        report = ReloadReport()
        wanted = result.wanted
        changed = False
        for path in wanted:
            rf = result.loaded[path]
            if isinstance(rf, RuleFileError):
                exc = rf
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
        self._stamps = result.stamps
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


class RuleFileWriteError(ValueError):
    """A rule file the editor may not write; the message says why and what to do."""


def save_target(path: str) -> Path:
    """The file a save of ``path`` writes: ``path`` itself, or, for a symlink, its target when that
    lies inside the rules directory (the link's directory); otherwise RuleFileWriteError."""
    p = Path(path)
    if not p.is_symlink():
        if p.exists() and not p.is_file():
            raise RuleFileWriteError(f"{path} is not a regular file")
        return p
    rules_dir = p.parent.resolve()
    target = p.resolve()
    if not target.is_relative_to(rules_dir):
        raise RuleFileWriteError(
            f"{path} is a symlink to {target}, outside the rules directory {rules_dir}; "
            "not saved (edit the file where it lives, or put it in the rules directory)")
    if target.exists() and not target.is_file():
        raise RuleFileWriteError(f"{path} links to {target}, which is not a regular file")
    return target


def write_rule_file_atomically(path: str, text: str, options: LoadOptions = LoadOptions(),
                               validate: bool = True) -> list[RuleError]:
    """Validate (unless the caller just did) then replace the file atomically: a temporary file in
    the target's directory, synced, given the old file's mode (and owner when allowed), renamed over
    it. A symlink is written through to its target inside the rules directory (RuleFileWriteError
    otherwise). An invalid text never touches the file. Blocking: call it off the event loop."""
    if validate:
        errors = validate_rule_text(text, path, options)
        if errors:
            return errors
    target = save_target(path)
    try:
        old = target.stat()
    except FileNotFoundError:
        old = None
    tmp = target.with_name(f".{target.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    # a new file gets 0666 less the umask, as any file this process creates
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600 if old else 0o666)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            if old is not None:
                os.fchmod(f.fileno(), stat.S_IMODE(old.st_mode))
                if (old.st_uid, old.st_gid) != (os.getuid(), os.getgid()):
                    with contextlib.suppress(PermissionError):
                        os.fchown(f.fileno(), old.st_uid, old.st_gid)
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    return []
