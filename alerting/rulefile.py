"""Prometheus-format rule files: load, validate everything, report file, line and reason.

A file is ``groups:`` -> ``name``, ``interval``, ``limit``, ``query_offset``, ``labels``,
``rules:`` -> ``record`` | ``alert``, ``expr``, ``for``, ``keep_firing_for``, ``labels``,
``annotations``. Validation follows Prometheus' ``rulefmt`` (messages included, so operators
recognise them): YAML syntax, unknown fields, duplicate group names, record/label/annotation
names, PromQL syntax, templates and durations. All problems of a file are reported at once.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from alerting.promql_check import DEFAULT_FEATURES, ParserFeatures, PromQLSyntaxError, check_expr
from alerting.template import ALERT_VARIABLES, TemplateError, parse_template
from alerting.yamlnodes import YamlError, YNode, compose
from common.durations import DurationError, parse_duration_ms
from storage.model import LABEL_NAME_RE, METRIC_NAME_RE

GROUP_FIELDS = ("name", "interval", "query_offset", "limit", "rules", "labels")
RULE_FIELDS = ("record", "alert", "expr", "for", "keep_firing_for", "labels", "annotations")


@dataclass(frozen=True)
class RuleError:
    """One problem in a rule file."""

    file: str
    line: int
    reason: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.reason}" if self.line else f"{self.file}: {self.reason}"


class RuleFileError(ValueError):
    """A rule file that does not validate; ``errors`` lists every problem found."""

    def __init__(self, errors: list[RuleError]) -> None:
        super().__init__("\n".join(str(e) for e in errors))
        self.errors = errors


@dataclass(frozen=True)
class LoadOptions:
    """How strictly to load: name validation ``utf8`` (Prometheus 3 default) or ``legacy``."""

    name_validation: str = "utf8"
    ignore_unknown_fields: bool = False
    features: ParserFeatures = DEFAULT_FEATURES


@dataclass
class Rule:
    """A recording or alerting rule as written (validated)."""

    kind: str  # "record" | "alert"
    name: str
    expr: str
    for_ms: int = 0
    keep_firing_for_ms: int = 0
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)
    line: int = 0

    @property
    def is_alert(self) -> bool:
        return self.kind == "alert"

    def to_dict(self) -> dict:
        from common.durations import format_duration_ms

        d: dict = {self.kind: self.name, "expr": self.expr}
        if self.for_ms:
            d["for"] = format_duration_ms(self.for_ms)
        if self.keep_firing_for_ms:
            d["keep_firing_for"] = format_duration_ms(self.keep_firing_for_ms)
        if self.labels:
            d["labels"] = dict(self.labels)
        if self.annotations:
            d["annotations"] = dict(self.annotations)
        return d


@dataclass
class RuleGroup:
    """A group of rules evaluated together at ``interval_ms`` (None: the default interval)."""

    name: str
    file: str
    rules: list[Rule]
    interval_ms: int | None = None
    query_offset_ms: int = 0
    limit: int = 0
    labels: dict[str, str] = field(default_factory=dict)
    line: int = 0

    @property
    def key(self) -> str:
        """Identity across reloads and alerters: ``<file>;<group>`` as in Prometheus."""
        return f"{self.file};{self.name}"

    def effective_interval_ms(self, default_ms: int) -> int:
        return self.interval_ms or default_ms


@dataclass
class RuleFile:
    path: str
    groups: list[RuleGroup]
    digest: str = ""

    @property
    def rule_count(self) -> int:
        return sum(len(g.rules) for g in self.groups)


# --------------------------------------------------------------------------- validation helpers


def valid_label_name(name: str, validation: str) -> bool:
    if validation == "legacy":
        return bool(LABEL_NAME_RE.match(name))
    return bool(name)


def valid_metric_name(name: str, validation: str) -> bool:
    if validation == "legacy":
        return bool(METRIC_NAME_RE.match(name))
    return bool(name)


class _Collector:
    def __init__(self, path: str) -> None:
        self.path = path
        self.errors: list[RuleError] = []

    def add(self, line: int, reason: str) -> None:
        self.errors.append(RuleError(self.path, line, reason))


def _scalar_text(node: YNode, what: str, col: _Collector) -> str | None:
    if node.kind != "scalar":
        col.add(node.line, f"{what}: expected a string, got {node.describe()}")
        return None
    return node.as_text()


def _string_map(node: YNode, what: str, col: _Collector) -> dict[str, tuple[str, int]]:
    """A mapping of string -> string; values keep their line for later errors."""
    if node.is_null:
        return {}
    if node.kind != "map":
        col.add(node.line, f"{what}: expected a mapping of names to strings, got {node.describe()}")
        return {}
    out: dict[str, tuple[str, int]] = {}
    for k, (knode, vnode) in node.value.items():
        text = _scalar_text(vnode, f"{what}.{k}", col)
        if text is not None:
            out[k] = (text, knode.line)
    return out


def _duration(node: YNode, what: str, col: _Collector) -> int:
    if node.is_null:
        return 0
    if node.kind != "scalar":
        col.add(node.line, f"{what}: expected a duration, got {node.describe()}")
        return 0
    try:
        return parse_duration_ms(node.as_text())
    except DurationError as exc:
        col.add(node.line, f"{what}: {exc}")
        return 0


# ------------------------------------------------------------------------------------ loading


def parse_rule_text(text: str, path: str, options: LoadOptions = LoadOptions()) -> RuleFile:
    """Validate rule-file text; returns the groups or raises RuleFileError with every problem."""
    col = _Collector(path)
    try:
        root = compose(text)
    except YamlError as exc:
        raise RuleFileError([RuleError(path, exc.line, f"invalid YAML: {exc.reason}")]) from None
    groups: list[RuleGroup] = []
    if root is None or root.is_null:
        return RuleFile(path, [], _digest(text))
    if root.kind != "map":
        raise RuleFileError([RuleError(path, root.line, f"the top level must be a mapping with 'groups', got {root.describe()}")])
    for key, (knode, _) in root.value.items():
        if key != "groups" and not options.ignore_unknown_fields:
            col.add(knode.line, f"field {key} not found in rule file (known fields: groups)")
    gnode = root.value.get("groups", (None, None))[1]
    if gnode is not None and not gnode.is_null:
        if gnode.kind != "seq":
            col.add(gnode.line, f"groups: expected a list of groups, got {gnode.describe()}")
        else:
            seen: dict[str, int] = {}
            for gi, g in enumerate(gnode.value):
                grp = _parse_group(g, gi, col, options)
                if grp is None:
                    continue
                if grp.name in seen:
                    col.add(grp.line, f'groupname: "{grp.name}" is repeated in the same file (first at line {seen[grp.name]})')
                else:
                    seen[grp.name] = grp.line
                groups.append(grp)
    if col.errors:
        raise RuleFileError(col.errors)
    return RuleFile(path, groups, _digest(text))


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def _fields(
    node: YNode, where: str, prefix: str, what: str, known: Sequence[str], col: _Collector, options: LoadOptions
) -> dict[str, tuple[YNode, YNode]] | None:
    """A group's or rule's mapping (None, with the error, when it is not one); a key not in
    ``known`` is an error unless unknown fields are ignored."""
    if node.kind != "map":
        col.add(node.line, f"{where}: expected a mapping, got {node.describe()}")
        return None
    for key, (knode, _) in node.value.items():
        if key not in known and not options.ignore_unknown_fields:
            col.add(knode.line, f"{prefix}field {key} not found in {what} (known fields: {', '.join(known)})")
    fields: dict[str, tuple[YNode, YNode]] = node.value  # a map node's value: key -> (key node, value node)
    return fields


def _parse_group(node: YNode, index: int, col: _Collector, options: LoadOptions) -> RuleGroup | None:
    fields = _fields(node, f"groups[{index}]", "", "rule group", GROUP_FIELDS, col, options)
    if fields is None:
        return None
    name = ""
    if "name" in fields:
        name = _scalar_text(fields["name"][1], "name", col) or ""
    where = f'group "{name}"' if name else f"groups[{index}]"
    if not name:
        col.add(node.line, f"{where}: Groupname must not be empty")
    grp = RuleGroup(name=name, file=col.path, rules=[], line=node.line)
    if "interval" in fields:
        ms = _duration(fields["interval"][1], f"{where}: interval", col)
        grp.interval_ms = ms or None
    if "query_offset" in fields:
        grp.query_offset_ms = _duration(fields["query_offset"][1], f"{where}: query_offset", col)
    if "limit" in fields:
        ln = fields["limit"][1]
        if ln.kind != "scalar" or isinstance(ln.value, bool) or not isinstance(ln.value, int) or ln.value < 0:
            col.add(ln.line, f"{where}: limit: expected a non-negative integer, got {ln.describe()}")
        else:
            grp.limit = ln.value
    if "labels" in fields:
        for lname, (lval, line) in _string_map(fields["labels"][1], f"{where}: labels", col).items():
            if not valid_label_name(lname, options.name_validation) or lname == "__name__":
                col.add(line, f"{where}: invalid label name: {lname}")
            grp.labels[lname] = lval
    if "rules" in fields:
        rnode = fields["rules"][1]
        if rnode.is_null:
            pass
        elif rnode.kind != "seq":
            col.add(rnode.line, f"{where}: rules: expected a list of rules, got {rnode.describe()}")
        else:
            for ri, r in enumerate(rnode.value):
                rule = _parse_rule(r, ri, where, col, options)
                if rule is not None:
                    grp.rules.append(rule)
    return grp


def _parse_rule(node: YNode, index: int, gwhere: str, col: _Collector, options: LoadOptions) -> Rule | None:  # noqa: C901 - one pass over a rule's keys in Prometheus's order, each with its own error
    where = f"{gwhere}, rule {index + 1}"
    fields = _fields(node, where, f"{where}: ", "rule", RULE_FIELDS, col, options)
    if fields is None:
        return None
    record = _scalar_text(fields["record"][1], f"{where}: record", col) if "record" in fields else ""
    alert = _scalar_text(fields["alert"][1], f"{where}: alert", col) if "alert" in fields else ""
    record = record or ""
    alert = alert or ""
    name = record or alert
    if name:
        where = f'{where} ({"record" if record else "alert"} "{name}")'
    line = node.line
    if record and alert:
        col.add(line, f"{where}: only one of 'record' and 'alert' must be set")
    elif not record and not alert:
        col.add(line, f"{where}: one of 'record' or 'alert' must be set")
    expr = ""
    if "expr" in fields:
        enode = fields["expr"][1]
        expr = _scalar_text(enode, f"{where}: expr", col) or ""
        if expr.strip():
            try:
                check_expr(expr, options.features)
            except PromQLSyntaxError as exc:
                line_no = enode.line
                if exc.line and enode.style in ("|", ">"):  # block scalar: text starts on the next line
                    line_no = enode.line + exc.line
                elif exc.line and enode.style == "":
                    line_no = enode.line + exc.line - 1
                col.add(line_no, f"{where}: could not parse expression: {exc}")
    if not expr.strip():
        col.add(fields["expr"][1].line if "expr" in fields else line, f"{where}: field 'expr' must be set in rule")
    rule = Rule(kind="record" if record and not alert else "alert", name=name, expr=expr, line=line)
    if record:
        for f in ("annotations", "for", "keep_firing_for"):
            if f in fields and not fields[f][1].is_null:
                col.add(fields[f][0].line, f"{where}: invalid field '{f}' in recording rule")
        if "{" in record or "}" in record:
            col.add(fields["record"][1].line, f"{where}: braces present in the recording rule name; should it be in expr?: {record}")
        if not valid_metric_name(record, options.name_validation):
            col.add(fields["record"][1].line, f"{where}: invalid recording rule name: {record}")
    if "for" in fields:
        rule.for_ms = _duration(fields["for"][1], f"{where}: for", col)
    if "keep_firing_for" in fields:
        rule.keep_firing_for_ms = _duration(fields["keep_firing_for"][1], f"{where}: keep_firing_for", col)
    labels = _string_map(fields["labels"][1], f"{where}: labels", col) if "labels" in fields else {}
    annotations = _string_map(fields["annotations"][1], f"{where}: annotations", col) if "annotations" in fields else {}
    for lname, (lval, lline) in labels.items():
        if not valid_label_name(lname, options.name_validation) or lname == "__name__":
            col.add(lline, f"{where}: invalid label name: {lname}")
        rule.labels[lname] = lval
    for aname, (aval, aline) in annotations.items():
        if not valid_label_name(aname, options.name_validation):
            col.add(aline, f"{where}: invalid annotation name: {aname}")
        rule.annotations[aname] = aval
    if alert and not record:
        for kind, items in (("label", labels), ("annotation", annotations)):
            for key, (text, tline) in items.items():
                try:
                    parse_template(text, f"__alert_{alert}", ALERT_VARIABLES)
                except TemplateError as exc:
                    col.add(tline + max(exc.line - 1, 0), f"{where}: {kind} {key}: invalid template: {exc.reason}")
    return rule


def load_rule_file(path: str | Path, options: LoadOptions = LoadOptions()) -> RuleFile:
    """Read and validate one file; raises RuleFileError naming file, line and reason."""
    p = str(path)
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise RuleFileError([RuleError(p, 0, f"cannot read rule file: {exc.strerror or exc}")]) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RuleFileError([RuleError(p, raw[: exc.start].count(b"\n") + 1, "rule file is not valid UTF-8")]) from None
    return parse_rule_text(text, p, options)


# ------------------------------------------------------------------------------------- lint


@dataclass(frozen=True)
class DuplicateRule:
    """Two or more rules that would write the same series (same name and labels)."""

    name: str
    labels: tuple[tuple[str, str], ...]


def find_duplicates(groups: list[RuleGroup]) -> list[DuplicateRule]:
    """Rules with the same record/alert name and the same labels, as ``promtool --lint=duplicate-rules``."""
    seen: set[tuple[str, tuple]] = set()
    dups: list[DuplicateRule] = []
    reported: set[tuple[str, tuple]] = set()
    for g in groups:
        for r in g.rules:
            merged = dict(g.labels)
            merged.update(r.labels)
            key = (r.name, tuple(sorted(merged.items())))
            if key in seen and key not in reported:
                dups.append(DuplicateRule(r.name, key[1]))
                reported.add(key)
            seen.add(key)
    return dups
