"""``ringmon rules check|test``: validate rule files and run promtool-format unit tests."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from alerting.promql_check import ParserFeatures


_FEATURE_HELP = ("PromQL parser features, as promtool's --enable-feature (comma-separated or repeated): "
                 "promql-experimental-functions, promql-extended-range-selectors, promql-binop-fill-modifiers, "
                 "promql-at-modifier, promql-negative-offset (rules test only; always on in check), "
                 "promql-duration-expr (always on)")


def _features(flags: list[str], base: "ParserFeatures") -> "ParserFeatures":
    from alerting.promql_check import features_from_flags
    from cli.errors import UserError

    names = [f for v in flags for f in v.split(",") if f.strip()]
    try:
        return features_from_flags(names, base)
    except ValueError as exc:
        raise UserError(str(exc)) from None


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("rules", help="check rule files and run rule unit tests (like promtool)",
                       description="Validate Prometheus-format rule files and run their unit tests.")
    rs = p.add_subparsers(dest="rules_command", metavar="ACTION")
    c = rs.add_parser("check", help="validate rule files (exit 0 ok, 1 invalid, 3 fatal lint)")
    c.add_argument("files", nargs="+", metavar="FILE")
    c.add_argument("--lint", default="duplicate-rules", choices=["duplicate-rules", "none"],
                   help="lint checks to run (default: duplicate-rules)")
    c.add_argument("--lint-fatal", action="store_true", help="make lint warnings fail with exit code 3")
    c.add_argument("--ignore-unknown-fields", action="store_true", help="accept unknown keys in rule files")
    c.add_argument("--enable-feature", action="append", default=[], metavar="FEATURE", help=_FEATURE_HELP)
    c.add_argument("--legacy-names", action="store_true",
                   help="validate label/annotation names with the legacy [a-zA-Z_][a-zA-Z0-9_]* rule")
    c.set_defaults(func=run_check)
    t = rs.add_parser("test", help="run promtool-format rule unit tests (exit 0 pass, 1 fail)")
    t.add_argument("files", nargs="+", metavar="FILE")
    t.add_argument("--run", action="append", default=[], metavar="REGEX",
                   help="only run test groups whose name matches (repeatable)")
    t.add_argument("--enable-feature", action="append", default=[], metavar="FEATURE", help=_FEATURE_HELP)
    t.add_argument("--ignore-unknown-fields", action="store_true", help="accept unknown keys in test and rule files")
    t.add_argument("--skip-native-histograms", action="store_true",
                   help="skip native-histogram inputs and expectations (not needed: they are supported; kept for old scripts)")
    t.set_defaults(func=run_test)
    p.set_defaults(func=lambda a: (p.print_help(), 2)[1])


def run_check(args: argparse.Namespace) -> int:
    from alerting.promql_check import ParserFeatures
    from alerting.rulefile import LoadOptions, RuleFileError, find_duplicates, load_rule_file

    # As promtool check rules: @ and negative offsets always parse; the rest need --enable-feature.
    base = ParserFeatures(at_modifier=True, negative_offset=True, experimental_functions=False,
                          extended_range_selectors=False, binop_fill_modifiers=False)
    opts = LoadOptions(name_validation="legacy" if args.legacy_names else "utf8",
                       ignore_unknown_fields=args.ignore_unknown_fields,
                       features=_features(args.enable_feature, base))
    failed = lint_failed = False
    for path in args.files:
        print(f"Checking {path}")
        try:
            rf = load_rule_file(path, opts)
        except RuleFileError as exc:
            failed = True
            print(f"  FAILED:\n{exc}\n", file=sys.stderr)
            continue
        print(f"  SUCCESS: {rf.rule_count} rules found")
        if args.lint == "duplicate-rules":
            dups = find_duplicates(rf.groups)
            if dups:
                lint_failed = True
                print(f"  WARNING: {len(dups)} duplicate rule(s) found.", file=sys.stderr)
                for d in dups:
                    labels = ", ".join(f'{k}="{v}"' for k, v in d.labels)
                    print(f"Metric: {d.name}\nLabel(s):\n\t{labels}", file=sys.stderr)
                print("Might cause inconsistency while recording expressions.", file=sys.stderr)
        print()
    if failed:
        return 1
    if lint_failed and args.lint_fatal:
        return 3
    return 0


def run_test(args: argparse.Namespace) -> int:
    from alerting.promql_check import NO_OPTIONAL_FEATURES
    from alerting.unittest_runner import RunOptions, run_unit_tests
    from cli.errors import UserError
    from common.regex import RegexError, compile_regex

    for pattern in args.run or []:
        try:
            compile_regex(pattern, anchored=False)
        except RegexError as exc:
            raise UserError(f"--run: {exc}") from None
    features = _features(args.enable_feature, NO_OPTIONAL_FEATURES)
    opts = RunOptions(run_patterns=args.run, features=features, ignore_unknown_fields=args.ignore_unknown_fields,
                      skip_native_histograms=args.skip_native_histograms)
    code, results = run_unit_tests(args.files, opts)
    for r in results:
        print(f"Unit Testing:  {r.path}")
        for s in r.skipped:
            print(f"  SKIPPED: {s}")
        if r.ok:
            print("  SUCCESS\n")
        else:
            print("  FAILED:", file=sys.stderr)
            for e in r.errors:
                print(f"    {e}", file=sys.stderr)
            print(file=sys.stderr)
    return code
