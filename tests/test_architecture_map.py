"""docs/ARCHITECTURE.md's import table against the code's real imports (ast), so they stay together.

The table's "imports of ours" column lists, per package, every first-party package its modules
import (lazy and type-only imports included); text after a ``(`` or ``;`` is commentary.
Rows whose column is ``-`` or ``everything`` (configs, tests, bench, drills) are not checked.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MAP = ROOT / "docs" / "ARCHITECTURE.md"


def map_table() -> dict[str, set[str] | None]:
    """package -> the packages the map says it imports (None: not checked)."""
    text = MAP.read_text()
    section = text.split("## Packages and who imports whom", 1)[1]
    rows: dict[str, set[str] | None] = {}
    for line in section.splitlines():
        if not line.startswith("| `"):
            if rows:
                break  # the table ended
            continue
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]]
        package = cells[0].strip("`/")
        claim = re.split(r"[(;]", cells[-1], maxsplit=1)[0].strip()
        if claim in ("-", "everything"):
            rows[package] = None
        elif claim == "none":
            rows[package] = set()
        else:
            rows[package] = {name.strip() for name in claim.split(",") if name.strip()}
    return rows


def code_imports(package: str, first_party: set[str]) -> dict[str, list[str]]:
    """The first-party packages ``package``'s modules import -> the files that do."""
    found: dict[str, list[str]] = {}
    for path in sorted((ROOT / package).rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top in first_party and top != package:
                    found.setdefault(top, []).append(str(path.relative_to(ROOT)))
    return found


def test_every_python_package_of_the_tree_is_in_the_map():
    rows = map_table()
    on_disk = {p.parent.name for p in ROOT.glob("*/__init__.py")}
    missing = on_disk - set(rows)
    assert not missing, f"packages missing from the map's import table: {sorted(missing)}"


def test_the_map_says_what_each_package_imports():
    rows = map_table()
    first_party = set(rows)
    wrong = []
    for package, claimed in sorted(rows.items()):
        if claimed is None or not (ROOT / package).is_dir():
            continue
        real = code_imports(package, first_party)
        if set(real) != claimed:
            extra = {p: sorted(set(real[p]))[:3] for p in set(real) - claimed}
            wrong.append(f"{package}/: map says {sorted(claimed)}, code imports {sorted(real)}; "
                         f"not in the map: {extra}; in the map only: {sorted(claimed - set(real))}")
    assert not wrong, "\n".join(wrong)


def test_the_parser_reads_a_row_as_meant():
    rows = map_table()
    assert rows["storage"] == {"common"}
    assert rows["common"] == set()
    assert rows["tests"] is None
