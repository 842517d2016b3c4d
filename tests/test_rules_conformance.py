"""Rule-file conformance: every rulefmt / promtool-rules rule file loads or fails as expectations.json says."""

from __future__ import annotations

import json

import pytest
from conftest import CONFORMANCE

from alerting.promql_check import ParserFeatures, features_from_flags
from alerting.rulefile import LoadOptions, RuleFileError, find_duplicates, load_rule_file

RULEFMT = CONFORMANCE / "rulefmt"
PROMTOOL = CONFORMANCE / "promtool-rules"
_RULEFMT_EXP = json.loads((RULEFMT / "expectations.json").read_text())
_PROMTOOL_EXP = json.loads((PROMTOOL / "expectations.json").read_text())


def _opts(entry: dict) -> LoadOptions:
    features = features_from_flags(entry.get("parser_features", []), CHECK_BASE)
    return LoadOptions(
        name_validation="legacy" if entry.get("validation") == "legacy" else "utf8",
        ignore_unknown_fields=bool(entry.get("ignore_unknown_fields")),
        features=features,
    )


# promtool check rules: @ and negative offsets parse, the other optional syntax needs a flag.
CHECK_BASE = ParserFeatures(True, True, False, False, False)


@pytest.mark.parametrize("entry", _RULEFMT_EXP["good"], ids=lambda e: e["file"])
def test_rulefmt_good_files_load(entry: dict) -> None:
    rf = load_rule_file(RULEFMT / entry["file"], _opts(entry))
    assert rf.groups


@pytest.mark.parametrize("entry", _RULEFMT_EXP["bad"], ids=lambda e: e["file"])
def test_rulefmt_bad_files_fail_with_reason_and_line(entry: dict) -> None:
    with pytest.raises(RuleFileError) as info:
        load_rule_file(RULEFMT / entry["file"], _opts(entry))
    first = info.value.errors[0]
    assert entry["error_contains"] in first.reason
    assert first.line > 0
    assert first.file.endswith(entry["file"])


def test_aliases_and_merge_keys_resolve() -> None:
    rf = load_rule_file(RULEFMT / "test_aliases.yaml")
    for g in rf.groups:
        first = g.rules[0]
        assert first.kind == "alert" and first.name == "HighAlert"
        assert first.labels["severity"] == "critical"
        assert first.expr.count("\n") == 3 and "rate(requests_total[5m])" in first.expr
    merged = rf.groups[0].rules[3]
    assert merged.name == "HighAlert2" and merged.for_ms == 300_000 and merged.labels == {"severity": "critical"}


def test_legacy_validation_rejects_utf8_names() -> None:
    with pytest.raises(RuleFileError, match="invalid label name: ins-tance"):
        load_rule_file(RULEFMT / "utf-8_lname.good.yaml", LoadOptions(name_validation="legacy"))


_CHECK = _PROMTOOL_EXP["check_rules"]


@pytest.mark.parametrize("entry", _CHECK, ids=lambda e: e["file"])
def test_promtool_rule_files(entry: dict) -> None:
    path = PROMTOOL / entry["file"]
    if entry["exit"] == 1:
        with pytest.raises(RuleFileError):
            load_rule_file(path, _opts(entry))
        return
    rf = load_rule_file(path, _opts(entry))
    dups = find_duplicates(rf.groups)
    if "duplicates" in entry:
        assert [(d.name, dict(d.labels)) for d in dups] == [
            (d["record"], d["labels"]) for d in entry["duplicates"]
        ]
    if entry.get("lint") == "duplicate-rules":
        assert dups  # fatal lint -> exit 3 in the CLI


def test_unknown_fields_fail_without_ignore_flag() -> None:
    with pytest.raises(RuleFileError, match="field namespace not found"):
        load_rule_file(PROMTOOL / "rules_extrafields.yml")


@pytest.mark.parametrize("name", _PROMTOOL_EXP["rule_files_only"])
def test_rule_files_only_entries_parse_or_fail_on_syntax(name: str) -> None:
    if name == "bad-rules-syntax.yml":
        with pytest.raises(RuleFileError, match="parse error"):
            load_rule_file(PROMTOOL / name)
    else:
        load_rule_file(PROMTOOL / name)
