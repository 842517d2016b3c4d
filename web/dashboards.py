"""Dashboards defined in YAML: panels of PromQL with title, unit, legend template and mode.

    title: Host
    description: Everything the agent exposes for one host.
    variables:
      - name: instance            # used as $instance in expressions (inside "..." strings)
        label: Host
        options_query: up         # optional: choices are this label's values in the result
        options_label: instance
        default: ""
    panels:
      - title: CPU by mode
        unit: cores               # none, bytes, bytes/s, seconds, percent, ratio, /s, cores
        mode: stacked             # line (default) or stacked
        width: half               # half (default) or full
        thresholds: [0.9]
        alert: HighCPU            # also draw the threshold this alerting rule compares with
        empty: No CPU data        # what the panel says when its queries return nothing
        cluster_only: false       # true: about ZooKeeper or the scraper ring, left out in standalone
        queries:                  # or a single `expr:` with an optional `legend:`
          - expr: sum by (mode) (rate(node_cpu_seconds_total{instance="$instance"}[$__rate_interval]))
            legend: "{{mode}}"

``load_dashboard_file`` validates everything and raises ``DashboardError`` naming the file,
the dotted key and what was expected. ``DashboardStore`` reads a directory of ``*.yaml``
files, re-reads when they change, and keeps bad files out (listing their errors) so one
broken file never takes the pages down. ``expand`` substitutes ``$variables`` safely.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from common.config_keys import check_keys, in_file, key_error
from common.yamlfile import YamlFileError, parse_yaml
from web.chart import MODES, UNITS

log = logging.getLogger("ringmon.web.dashboards")

DEFAULT_DIR = Path(__file__).resolve().parent / "dashboards"
_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
_VAR_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
_VAR_REF = re.compile(r"\$(?:\{([A-Za-z_][A-Za-z0-9_]*)\}|([A-Za-z_][A-Za-z0-9_]*))")
BUILTIN_VARS = ("__rate_interval", "__interval", "__range")
MAX_VALUE_LEN = 1024


class DashboardError(ValueError):
    """A dashboard file is invalid; the message is ``<file>: <key>: <what was expected>``."""


@dataclass(frozen=True)
class PanelQuery:
    expr: str
    legend: str = ""


@dataclass(frozen=True)
class Panel:
    title: str
    queries: tuple[PanelQuery, ...]
    unit: str = "none"
    mode: str = "line"
    width: str = "half"
    thresholds: tuple[float, ...] = ()
    description: str = ""
    alert: str = ""  # an alerting rule whose threshold is drawn on the panel
    empty: str = ""  # shown instead of "No data" when nothing matches (e.g. "No alert is firing")
    cluster_only: bool = False  # about ZooKeeper or the scraper ring: standalone leaves it out


@dataclass(frozen=True)
class Variable:
    name: str
    label: str = ""
    default: str = ""
    options_query: str = ""
    options_label: str = ""


@dataclass(frozen=True)
class Dashboard:
    name: str  # from the file name; the URL is /d/<name>
    title: str
    panels: tuple[Panel, ...]
    description: str = ""
    variables: tuple[Variable, ...] = ()
    source: str = ""


# -- validation ----------------------------------------------------------------------------------


def _type(value: Any) -> str:
    return "nothing" if value is None else type(value).__name__


def _str(data: Mapping, key: str, where: str, *, required: bool = False, default: str = "") -> str:
    value = data.get(key)
    if value is None:
        if required:
            raise DashboardError(key_error(data, where, key, "required (a string)"))
        return default
    if not isinstance(value, str):
        raise DashboardError(key_error(data, where, key, f"expected a string, got {_type(value)}"))
    return value


def _check_keys(data: Any, allowed: Sequence[str], where: str) -> Mapping:
    if not isinstance(data, Mapping):
        raise DashboardError(f"{where or 'dashboard'}: expected a mapping, got {_type(data)}")
    check_keys(data, allowed, where, DashboardError)
    return data


def _panel(data: Any, where: str, var_names: set[str]) -> Panel:
    d = _check_keys(
        data,
        ("title", "expr", "legend", "queries", "unit", "mode", "width", "thresholds", "description", "alert", "empty",
         "cluster_only"),
        where,
    )
    title = _str(d, "title", where, required=True)
    unit = _str(d, "unit", where, default="none")
    if unit not in UNITS:
        raise DashboardError(key_error(d, where, "unit", f"expected one of {', '.join(UNITS)}, got {unit!r}"))
    mode = _str(d, "mode", where, default="line")
    if mode not in MODES:
        raise DashboardError(key_error(d, where, "mode", f"expected one of {', '.join(MODES)}, got {mode!r}"))
    width = _str(d, "width", where, default="half")
    if width not in ("half", "full"):
        raise DashboardError(key_error(d, where, "width", f"expected 'half' or 'full', got {width!r}"))
    queries: list[PanelQuery] = []
    origins: list[tuple[Mapping, str]] = []  # the mapping and path each query's expr was read from
    if "expr" in d and "queries" in d:
        raise DashboardError(f"{where}: give either expr (one query) or queries (a list), not both")
    if "expr" in d:
        queries.append(PanelQuery(_str(d, "expr", where, required=True), _str(d, "legend", where)))
        origins.append((d, where))
    elif "queries" in d:
        raw = d["queries"]
        if not isinstance(raw, list) or not raw:
            raise DashboardError(
                key_error(d, where, "queries", f"expected a non-empty list of {{expr, legend}}, got {_type(raw)}")
            )
        for i, q in enumerate(raw):
            qw = f"{where}.queries[{i}]"
            qd = _check_keys(q, ("expr", "legend"), qw)
            queries.append(PanelQuery(_str(qd, "expr", qw, required=True), _str(qd, "legend", qw)))
            origins.append((qd, qw))
    else:
        raise DashboardError(f"{where}: a panel needs expr (a PromQL string) or queries (a list)")
    for q, (qd, qw) in zip(queries, origins, strict=True):
        if not q.expr.strip():
            raise DashboardError(key_error(qd, qw, "expr", "must not be empty"))
        for m in _VAR_REF.finditer(q.expr):
            ref = m.group(1) or m.group(2)
            if ref not in var_names and ref not in BUILTIN_VARS:
                raise DashboardError(key_error(
                    qd, qw, "expr", f"${ref} is not a variable of this dashboard "
                    f"(variables: {', '.join(sorted(var_names | set(BUILTIN_VARS)))})"
                ))
    thresholds = d.get("thresholds") or []
    if not isinstance(thresholds, list) or not all(
        isinstance(t, int | float) and not isinstance(t, bool) for t in thresholds
    ):
        raise DashboardError(key_error(d, where, "thresholds", f"expected a list of numbers, got {thresholds!r}"))
    cluster_only = d.get("cluster_only", False)
    if not isinstance(cluster_only, bool):
        raise DashboardError(key_error(d, where, "cluster_only", f"expected true or false, got {cluster_only!r}"))
    return Panel(
        title=title,
        queries=tuple(queries),
        unit=unit,
        mode=mode,
        width=width,
        thresholds=tuple(float(t) for t in thresholds),
        description=_str(d, "description", where),
        alert=_str(d, "alert", where),
        empty=_str(d, "empty", where),
        cluster_only=cluster_only,
    )


def dashboard_from_dict(data: Any, name: str, source: str) -> Dashboard:
    """Validate a parsed YAML document; errors are ``DashboardError("<source>: <key>: ...")``."""
    try:
        d = _check_keys(data, ("title", "description", "variables", "panels"), "")  # "" is the top of the file
        variables: list[Variable] = []
        raw_vars = d.get("variables") or []
        if not isinstance(raw_vars, list):
            raise DashboardError(key_error(d, "", "variables", f"expected a list, got {_type(raw_vars)}"))
        for i, v in enumerate(raw_vars):
            vw = f"variables[{i}]"
            vd = _check_keys(v, ("name", "label", "default", "options_query", "options_label"), vw)
            vname = _str(vd, "name", vw, required=True)
            if not _VAR_NAME.match(vname) or vname.startswith("__"):
                raise DashboardError(
                    key_error(vd, vw, "name", f"expected a name like 'instance' (letters, digits, _), got {vname!r}")
                )
            if any(existing.name == vname for existing in variables):
                raise DashboardError(key_error(vd, vw, "name", f"{vname!r} is defined twice"))
            oq, ol = _str(vd, "options_query", vw), _str(vd, "options_label", vw)
            if bool(oq) != bool(ol):
                raise DashboardError(f"{vw}: options_query and options_label go together")
            default = vd.get("default", "")
            if not isinstance(default, str | int | float) or isinstance(default, bool):
                raise DashboardError(key_error(vd, vw, "default", f"expected a string, got {_type(default)}"))
            variables.append(Variable(vname, _str(vd, "label", vw) or vname, str(default), oq, ol))
        names = {v.name for v in variables}
        raw_panels = d.get("panels")
        if not isinstance(raw_panels, list) or not raw_panels:
            raise DashboardError(key_error(d, "", "panels", f"expected a non-empty list of panels, got {_type(raw_panels)}"))
        panels = tuple(_panel(p, f"panels[{i}]", names) for i, p in enumerate(raw_panels))
        title = _str(d, "title", "", required=True)
        return Dashboard(name, title, panels, _str(d, "description", ""), tuple(variables), source)
    except DashboardError as exc:
        msg = str(exc).removeprefix("dashboard.").removeprefix("dashboard: ")
        raise DashboardError(in_file(source, msg)) from None


def load_dashboard_file(path: str | Path) -> Dashboard:
    p = Path(path)
    name = p.stem.lower()
    if not _NAME.match(name):
        raise DashboardError(f"{p}: the file name must be a slug like 'fleet.yaml' (a-z, 0-9, -, _)")
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DashboardError(f"{p}: cannot read: {exc}") from None
    try:
        data = parse_yaml(text, str(p))
    except YamlFileError as exc:
        raise DashboardError(str(exc)) from None
    return dashboard_from_dict(data, name, str(p))


# -- the store -----------------------------------------------------------------------------------


@dataclass
class DashboardStore:
    """Dashboards of one or more directories, re-read when a file changes; ``cluster``: False
    in standalone, whose dashboards leave out ``cluster_only`` panels."""

    dirs: Sequence[str | Path] = (DEFAULT_DIR,)
    cluster: bool = True
    _stamp: tuple = ()
    _dashboards: dict[str, Dashboard] = field(default_factory=dict)
    _errors: list[str] = field(default_factory=list)

    def _files(self) -> list[Path]:
        files: list[Path] = []
        for d in self.dirs:
            p = Path(d)
            if p.is_dir():
                files.extend(sorted([*p.glob("*.yaml"), *p.glob("*.yml")]))
        return files

    def _refresh(self) -> None:
        files = self._files()
        stamp = []
        for f in files:
            try:
                st = f.stat()
                stamp.append((str(f), st.st_mtime_ns, st.st_size))
            except OSError:
                continue
        if tuple(stamp) == self._stamp and self._stamp:
            return
        dashboards: dict[str, Dashboard] = {}
        errors: list[str] = []
        for f in files:
            try:
                dash = load_dashboard_file(f)
            except DashboardError as exc:
                errors.append(str(exc))
                log.warning("dashboard skipped", extra={"error": str(exc)})
                continue
            if dash.name in dashboards:
                errors.append(
                    f"{f}: a dashboard named {dash.name!r} is already loaded from {dashboards[dash.name].source}"
                )
                continue
            if not self.cluster:
                dash = replace(dash, panels=tuple(p for p in dash.panels if not p.cluster_only))
            dashboards[dash.name] = dash
        self._stamp = tuple(stamp)
        self._dashboards = dashboards
        self._errors = errors

    def all(self) -> list[Dashboard]:
        self._refresh()
        return sorted(self._dashboards.values(), key=lambda d: d.title.lower())

    def get(self, name: str) -> Dashboard | None:
        self._refresh()
        return self._dashboards.get(name)

    @property
    def errors(self) -> list[str]:
        self._refresh()
        return list(self._errors)


# -- expansion -----------------------------------------------------------------------------------


def escape_value(value: str) -> str:
    """A variable value made safe inside a PromQL double-quoted string."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\r", "\\r")


def expand(expr: str, values: Mapping[str, str], builtins: Mapping[str, str]) -> str:
    """``expr`` with ``$name`` / ``${name}`` replaced; user values are escaped for "..." strings."""

    def sub(m: re.Match[str]) -> str:
        ref = m.group(1) or m.group(2)
        if ref in builtins:
            return builtins[ref]
        return escape_value(values.get(ref, "")[:MAX_VALUE_LEN])

    return _VAR_REF.sub(sub, expr)


COMPARISONS = (">", ">=", "<", "<=", "==", "!=")


def alert_threshold(expr: str) -> float | None:
    """The constant an alert expression compares against (``... > 0.9`` -> 0.9), if any."""
    from query.parse import Binary, NumberLit, parse

    try:
        node = parse(expr)
    except Exception:
        return None
    if isinstance(node, Binary) and node.op in COMPARISONS and not node.return_bool:
        for side in (node.rhs, node.lhs):
            if isinstance(side, NumberLit):
                return float(side.value)
    return None
