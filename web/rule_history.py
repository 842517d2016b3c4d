"""Saved versions of rule files for the browser rule editor: diff, history and rollback.

Before the editor replaces a rule file it copies the current text into
``<history_dir>/<file key>/<UTC time>-<n>.yaml`` with a JSON sidecar (who saved, when,
which path). ``versions(path)`` lists them newest first; ``read(path, version)`` returns
one, so a rollback is "load an old version into the editor, review the diff, save".
"""

from __future__ import annotations

import datetime as dt
import difflib
import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

_VERSION = re.compile(r"^\d{8}T\d{6}\.\d{6}Z-\d+$")


def digest(text: str) -> str:
    """Short content hash: the editor sends it back so a concurrent change is noticed."""
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def unified_diff(old: str, new: str, name: str) -> list[tuple[str, str]]:
    """(kind, line) pairs of a unified diff: kind is add, del, hunk, meta or ctx."""
    out: list[tuple[str, str]] = []
    for line in difflib.unified_diff(
        old.splitlines(), new.splitlines(), f"{name} (saved)", f"{name} (edited)", lineterm="", n=3
    ):
        if line.startswith(("+++", "---")):
            kind = "meta"
        elif line.startswith("@@"):
            kind = "hunk"
        elif line.startswith("+"):
            kind = "add"
        elif line.startswith("-"):
            kind = "del"
        else:
            kind = "ctx"
        out.append((kind, line))
    return out


@dataclass(frozen=True)
class Version:
    id: str
    path: str
    saved_by: str
    saved_at: float  # unix seconds when this text was replaced
    size: int


class RuleHistory:
    """Versions of rule files kept under one directory."""

    def __init__(self, directory: str | Path) -> None:
        self.dir = Path(directory)

    def _dir_for(self, path: str) -> Path:
        p = str(Path(path).resolve())
        stem = re.sub(r"[^A-Za-z0-9_.-]", "_", Path(p).name)[:60]
        return self.dir / f"{stem}-{hashlib.sha256(p.encode()).hexdigest()[:12]}"

    def record(self, path: str, text: str, saved_by: str, now: float | None = None) -> Version:
        """Keep ``text`` (the version about to be replaced) of ``path``."""
        when = dt.datetime.now(dt.UTC) if now is None else dt.datetime.fromtimestamp(now, dt.UTC)
        d = self._dir_for(path)
        d.mkdir(parents=True, exist_ok=True)
        base = when.strftime("%Y%m%dT%H%M%S.%fZ")
        n = 0
        while (d / f"{base}-{n}.yaml").exists():
            n += 1
        vid = f"{base}-{n}"
        tmp = d / f".{vid}.tmp"
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, d / f"{vid}.yaml")
        meta = {"path": str(path), "saved_by": saved_by, "saved_at": when.timestamp()}
        (d / f"{vid}.json").write_text(json.dumps(meta), encoding="utf-8")
        return Version(vid, str(path), saved_by, when.timestamp(), len(text.encode()))

    def versions(self, path: str) -> list[Version]:
        d = self._dir_for(path)
        if not d.is_dir():
            return []
        out = []
        for f in d.glob("*.yaml"):
            vid = f.stem
            if not _VERSION.match(vid):
                continue
            try:
                meta = json.loads((d / f"{vid}.json").read_text(encoding="utf-8"))
            except (OSError, ValueError):
                meta = {}
            out.append(
                Version(
                    vid,
                    str(meta.get("path", path)),
                    str(meta.get("saved_by", "")),
                    float(meta.get("saved_at", f.stat().st_mtime)),
                    f.stat().st_size,
                )
            )
        out.sort(key=lambda v: v.id, reverse=True)
        return out

    def read(self, path: str, version: str) -> str:
        """The text of one version; KeyError if there is no such version of ``path``."""
        if not _VERSION.match(version):
            raise KeyError(version)
        f = self._dir_for(path) / f"{version}.yaml"
        try:
            return f.read_text(encoding="utf-8")
        except OSError:
            raise KeyError(version) from None
