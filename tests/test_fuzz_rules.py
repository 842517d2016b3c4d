"""Fuzzing the rule loader (alerting.rulefile / yamlnodes / rulestore) and alert templates.

Properties:
- rule files generated from dicts (groups, intervals, limits, labels, recording and alerting
  rules with generated PromQL, durations, templated labels/annotations, YAML dumped in block
  or flow style) load to exactly those groups and rules;
- a one-byte corruption of a generated or shipped rule file (configs/rules, the upstream
  rulefmt and promtool fixtures) either loads or raises ``RuleFileError`` whose every error
  names the file and a line inside it; byte mutations likewise, through ``RuleStore.reload``
  (which must keep serving the last good version);
- templates: ``parse_template`` raises only ``TemplateError`` and ``expand_alert_template``
  never raises, for generated and mutated template text and any label values and sample value;
- every call returns within a hard time bound.
"""

from __future__ import annotations

import math
import tempfile
from pathlib import Path

import yaml
from fuzz_harness import CONFORMANCE, fuzz_settings, mutated, one_byte_corruption, shipped_files, time_bound
from fuzz_promql_grammar import exprs
from hypothesis import given
from hypothesis import strategies as st

from alerting.rulefile import RuleFileError, load_rule_file, parse_rule_text
from alerting.rulestore import RuleStore
from alerting.template import TemplateError, expand_alert_template, parse_template
from common.durations import format_duration_ms
from query.parse import VECTOR

WORK = Path(tempfile.mkdtemp(prefix="ringmon-fuzz-rules-"))

# ---------------------------------------------------------------------------- strategies

legacy_names = st.builds(
    lambda a, b: a + b, st.sampled_from("abzAZ_"), st.text(st.sampled_from("abcxyz_019AZ"), max_size=8)
).filter(lambda n: n != "__name__")
record_names = st.builds(lambda a, b: a + b, st.sampled_from("abz_:"), st.text(st.sampled_from("abc:_019"), max_size=10))
# (U+0085/U+2028/U+2029 are YAML line breaks, folded on load: not text YAML gives back as written)
free_text = st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\x85\u2028\u2029"), max_size=12)
TEMPLATES = [
    "{{ $labels.instance }} is down",
    "{{ $value | humanize }}",
    '{{ printf "%.2f" $value }}%',
    "{{ if gt $value 1.0 }}high{{ else }}low{{ end }}",
    "{{ range $k, $v := $labels }}{{ $k }}={{ $v }} {{ end }}",
    "{{- with $labels.job -}}{{ . | toUpper }}{{- end -}}",
    '{{ reReplaceAll "(.*):.*" "$1" $labels.instance }}',
    "{{ $value | humanizeDuration }} / {{ $externalURL }}",
    "{{/* a comment */}}plain",
]
template_values = free_text.filter(lambda t: "{{" not in t) | st.sampled_from(TEMPLATES)
durations_ms = st.sampled_from([0, 1, 999, 1000, 60_000, 90_000, 3_600_000, 86_400_000 * 8, 31_536_000_000 + 1000])


@st.composite
def rule_dicts(draw: st.DrawFn) -> dict:
    if draw(st.booleans()):
        rule: dict = {"record": draw(record_names), "expr": draw(exprs(VECTOR, 2))}
        if draw(st.booleans()):
            rule["labels"] = draw(st.dictionaries(legacy_names, free_text, max_size=3))
        return rule
    rule = {"alert": draw(free_text.filter(lambda t: t.strip() and "{" not in t)), "expr": draw(exprs(VECTOR, 2))}
    for key in ("for", "keep_firing_for"):
        if draw(st.booleans()):
            rule[key] = format_duration_ms(draw(durations_ms))
    for key in ("labels", "annotations"):
        if draw(st.booleans()):
            rule[key] = draw(st.dictionaries(legacy_names, template_values, max_size=3))
    return rule


@st.composite
def rule_files(draw: st.DrawFn) -> dict:
    names = draw(st.lists(free_text.filter(str.strip), min_size=1, max_size=3, unique=True))
    groups = []
    for name in names:
        g: dict = {"name": name, "rules": draw(st.lists(rule_dicts(), max_size=4))}
        if draw(st.booleans()):
            g["interval"] = format_duration_ms(draw(durations_ms.filter(bool)))
        if draw(st.booleans()):
            g["limit"] = draw(st.integers(0, 10**6))
        if draw(st.booleans()):
            g["labels"] = draw(st.dictionaries(legacy_names, free_text, max_size=2))
        groups.append(g)
    return {"groups": groups}


def dump(doc: dict, style: int) -> str:
    return yaml.safe_dump(doc, allow_unicode=bool(style & 1), default_flow_style=bool(style & 2) or None,
                          sort_keys=bool(style & 4), width=40 if style & 8 else 80)


# ---------------------------------------------------------------------------- checks


def check_rule_errors(exc: RuleFileError, path: str, text_lines: int) -> None:
    assert exc.errors, "RuleFileError without errors"
    for err in exc.errors:
        assert err.file == path
        assert 1 <= err.line <= text_lines + 1, f"{err} (file has {text_lines} lines)"
        assert str(err).startswith(f"{path}:{err.line}: ") and err.reason.strip(), str(err)


def load_bytes(data: bytes, name: str = "rules.yml") -> None:
    """Write ``data`` to a file and load it: a RuleFile or RuleFileError with file:line, nothing else."""
    path = WORK / name
    path.write_bytes(data)
    with time_bound("load_rule_file"):
        try:
            load_rule_file(path)
        except RuleFileError as exc:
            check_rule_errors(exc, str(path), data.count(b"\n") + 1)


# ---------------------------------------------------------------------------- properties


@fuzz_settings(100)
@given(rule_files(), st.integers(0, 15))
def test_generated_rule_files_load_as_generated(doc, style):
    text = dump(doc, style)
    with time_bound("parse_rule_text(generated)"):
        rf = parse_rule_text(text, "gen.yml")
    assert [g.name for g in rf.groups] == [g["name"] for g in doc["groups"]]
    for got, want in zip(rf.groups, doc["groups"], strict=True):
        assert got.limit == want.get("limit", 0)
        assert got.labels == want.get("labels", {})
        assert len(got.rules) == len(want["rules"])
        for r, w in zip(got.rules, want["rules"], strict=True):
            assert r.kind == ("record" if "record" in w else "alert")
            assert r.name == w.get("record", w.get("alert"))
            assert r.expr == w["expr"]
            assert r.labels == w.get("labels", {})
            assert r.annotations == w.get("annotations", {})
            assert format_duration_ms(r.for_ms) == w.get("for", "0s")
            assert format_duration_ms(r.keep_firing_for_ms) == w.get("keep_firing_for", "0s")


@fuzz_settings(80)
@given(rule_files(), st.integers(0, 15), st.data())
def test_one_byte_corruption_loads_or_names_file_and_line(doc, style, data):
    text = dump(doc, style).encode()
    load_bytes(data.draw(one_byte_corruption(text), label="corrupted"))


SHIPPED = [p for p in shipped_files("configs/rules/*.yml", "configs/rules/*.yaml", "configs/cluster/rules/*.y*ml")]
UPSTREAM = sorted((CONFORMANCE / "rulefmt").glob("*.yaml")) + sorted(
    p for p in (CONFORMANCE / "promtool-rules").glob("*.yml") if b"groups:" in p.read_bytes()
)
RULE_SEEDS = [p.read_bytes() for p in SHIPPED + UPSTREAM]


@fuzz_settings(150)
@given(st.sampled_from(RULE_SEEDS or [b"groups: []\n"]), st.data())
def test_corrupted_shipped_rule_files_load_or_name_file_and_line(seed, data):
    load_bytes(data.draw(one_byte_corruption(seed), label="one byte"))
    load_bytes(data.draw(mutated(seed), label="mutated"))


@fuzz_settings(60)
@given(st.sampled_from(RULE_SEEDS or [b"groups: []\n"]), st.data())
def test_rule_store_keeps_last_good_version_through_bad_edits(seed, data):
    path = WORK / "store.yml"
    path.write_bytes(b"groups:\n- name: g\n  rules:\n  - record: a:b\n    expr: up\n")
    store = RuleStore([str(path)])
    assert store.reload().ok
    good = [(g.name, len(g.rules)) for g in store.groups()]
    path.write_bytes(data.draw(mutated(seed)))
    with time_bound("RuleStore.reload"):
        report = store.reload()
    if not report.ok:
        assert [(g.name, len(g.rules)) for g in store.groups()] == good
        for errs in report.failed.values():
            for err in errs:
                assert err.file == str(path) and err.line >= 1, str(err)


TEMPLATE_TOKENS = ["{{", "}}", "{{-", "-}}", " ", "$labels", ".job", "$value", "$", ".", "|", "humanize", "printf",
                   '"%d"', '"%s %v %q"', "if", "else", "end", "range", "with", "(", ")", ":=", "=", "$x", ",",
                   "eq", "index", "len", "toUpper", "reReplaceAll", '"(.*)"', '"$1"', "1", "-1", "1e309", "0x1p-2",
                   "nil", "true", "/*", "*/", "`raw`", "'c'", "\\", "\n", "define", "template", "block", "and",
                   "or", "not", "query", "first", "humanizeDuration", "humanizeTimestamp", "title", "args",
                   "printf \"%.1000000f\"", "humanize1024", "safeHtml", "toTime", "parseDuration", "label"]

token_templates = st.lists(st.sampled_from(TEMPLATE_TOKENS) | free_text, max_size=25).map("".join)
mutated_templates = st.sampled_from([t.encode() for t in TEMPLATES]).flatmap(mutated).map(
    lambda b: b.decode("utf-8", "replace")
)
sample_values = st.floats(allow_nan=True, allow_infinity=True)


@fuzz_settings(400)
@given(token_templates | mutated_templates, st.dictionaries(legacy_names, free_text, max_size=3), sample_values)
def test_templates_fail_only_with_template_errors_and_expansion_never_raises(text, labels, value):
    with time_bound("parse_template"):
        try:
            parse_template(text, "fuzz")
        except TemplateError as exc:
            assert str(exc).startswith("template: fuzz:") and exc.reason.strip(), str(exc)
    with time_bound("expand_alert_template"):
        out = expand_alert_template(text, "fuzz", labels, value, {"cluster": "c"}, "http://x")
    assert isinstance(out, str)


def test_huge_and_deep_rule_files_are_bounded():
    docs = [
        b"groups: " + b"[" * 1200 + b"]" * 1200 + b"\n",
        b"groups:\n" + b"- name: g\n  rules:\n" + b"  - record: a\n    expr: " + b"(" * 3000 + b"1" + b")" * 3000 + b"\n",
        b"a: &a [" + b"*a, " * 10 + b"]\n",
        b"groups:\n- name: g\n  rules:\n  - alert: A\n    expr: up\n    annotations:\n      x: '" + b"{{" * 5000 + b"'\n",
        b"groups:\n- name: g\n  rules:\n  - alert: A\n    expr: up\n    for: " + b"9" * 5000 + b"s\n",
        b"groups:\n- name: g\n  limit: " + b"9" * 5000 + b"\n",
        b"x: 2001-13-45\n",
        b"groups:\n- name: !!int abc\n",
        b'groups:\n- name: "\\U00110000"\n',  # the YAML scanner raised ValueError (chr() out of range)
        b'groups:\n- name: "\\UFFFFFFFF"\n',  # ... and OverflowError
        b'groups:\n- name: !!int ""\n',  # the int constructor raised IndexError
        b"\xff\xfe" + "groups: []\n".encode("utf-16-le"),
    ]
    for i, data in enumerate(docs):
        load_bytes(data, f"huge{i}.yml")


def test_template_function_without_arguments_is_a_template_error():
    """``and``/``or`` named as an argument are called with no arguments (IndexError before)."""
    for text in ("{{ print and }}", "{{ print or }}", "{{ len (or) }}"):
        with time_bound("expand_alert_template"):
            assert expand_alert_template(text, "t", {}, 1.0).startswith("<error expanding template: ")


def test_template_expansion_with_special_values():
    for value in (math.nan, math.inf, -math.inf, -0.0, 5e-324, 1e308):
        for text in TEMPLATES:
            with time_bound("expand_alert_template"):
                assert isinstance(expand_alert_template(text, "t", {"instance": "h:1", "job": "j"}, value), str)
