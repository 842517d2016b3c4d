"""``ringmon rules test``: promtool's rule unit-test format, evaluated by our engine and evaluator.

A test file names ``rule_files`` (relative to itself), ``evaluation_interval``, optional
``fuzzy_compare`` and ``tests``: each with ``input_series`` (expanding notation such as
``0+10x100 _ stale``, native histograms ``{{count:2 buckets:[2]}}+{{count:1}}x3``), ``interval``,
``start_timestamp``, ``external_labels``,
``alert_rule_test`` and ``promql_expr_test``. Rules are evaluated from the start up to the
last eval time at ``evaluation_interval`` (or each group's own interval); alert tests compare
firing alerts at their eval time, expression tests run after all rule evaluations.
Histogram results are compared as promtool does: by their canonical ``{{...}}`` text, with the
counter-reset hint the store reports (``not_reset`` after a series' first histogram sample).
Exit codes follow promtool: 0 all passed, 1 a failure or an invalid file.
"""

from __future__ import annotations

import asyncio
import datetime as _dt
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import promql_parser

from alerting.evaluator import EvalOptions, GroupRunner, QueryFunc
from alerting.promql_check import NO_OPTIONAL_FEATURES, ParserFeatures
from alerting.rulefile import LoadOptions, RuleFileError, RuleGroup, load_rule_file
from alerting.state import FIRING, MemoryAlertStateStore
from common.durations import DurationError, format_duration_ms, parse_duration_ms
from common.regex import compile_regex
from common.yamlfile import YamlFileError, load_yaml_file
from query.engine import Engine
from query.histogram import (
    FloatHistogram,
    HistogramError,
    expand_histogram,
    parse_histogram,
    split_series_values,
)
from query.memory import MemoryStorage
from query.result import QueryResult
from storage.base import DirectWriter
from storage.model import STALE_NAN, Series, labels_from_dict

TEST_FILE_KEYS = ("rule_files", "evaluation_interval", "group_eval_order", "tests", "fuzzy_compare")
TEST_GROUP_KEYS = ("name", "interval", "input_series", "alert_rule_test", "promql_expr_test", "external_labels",
                   "external_url", "start_timestamp")


class UnitTestError(ValueError):
    """A test file that cannot be run (bad YAML, fields, series notation or rule files)."""


class UnsupportedFeature(UnitTestError):
    """Input the engine cannot represent (kept for callers; native histograms are supported)."""


@dataclass
class RunOptions:
    run_patterns: list[str] = field(default_factory=list)  # --run: only test groups matching one
    # promtool's defaults: every optional PromQL feature off until --enable-feature names it.
    features: ParserFeatures = NO_OPTIONAL_FEATURES
    ignore_unknown_fields: bool = False
    skip_native_histograms: bool = False


@dataclass
class FileResult:
    path: str
    errors: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    groups_run: int = 0

    @property
    def ok(self) -> bool:
        return not self.errors


# ---------------------------------------------------------------------- expanding notation

_NUM = r"[-+]?(?:[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?|Inf|inf|NaN|nan)"
_TERM_RE = re.compile(rf"^(?P<a>{_NUM})(?:(?P<sign>[-+])(?P<b>{_NUM}))?x(?P<n>[0-9]+)$")


def _num(text: str) -> float:
    low = text.lower().lstrip("+")
    if low in ("inf", "-inf", "nan"):
        return float(low)
    return float(text)


def expand_values(text: str) -> list[float | FloatHistogram | None]:
    """``1+2x3 _ stale 5`` -> [1, 3, 5, 7, None, STALE, 5] (None = no sample at that step);
    native histogram items (``{{...}}``, ``{{a}}+{{b}}xN``, ``{{a}}xN``) give FloatHistograms."""
    out: list[float | FloatHistogram | None] = []
    s = str(text).strip()
    try:
        items = split_series_values(s)
    except HistogramError as exc:
        raise UnitTestError(str(exc)) from None
    for tok in items:
        if tok.startswith("{{"):
            try:
                out.extend(expand_histogram(tok))
            except HistogramError as exc:
                raise UnitTestError(f"{exc} (in series values {text!r})") from None
        elif tok == "_":
            out.append(None)
        elif tok == "stale":
            out.append(STALE_NAN)
        elif re.fullmatch(r"_x[0-9]+", tok):
            out.extend([None] * int(tok[2:]))
        elif re.fullmatch(_NUM, tok):
            out.append(_num(tok))
        else:
            m = _TERM_RE.match(tok)
            if not m:
                raise UnitTestError(f"invalid value {tok!r} in series values {text!r} (expected e.g. 1 2 3, 0+10x5, _x3, stale)")
            a, n = _num(m.group("a")), int(m.group("n"))
            b = _num(m.group("b")) if m.group("b") else 0.0
            if m.group("sign") == "-":
                b = -b
            out.extend(a + i * b for i in range(n + 1))
    return out


def parse_series_labels(text: str) -> dict[str, str]:
    """``up{job="x"}`` -> {"__name__": "up", "job": "x"}; only equality matchers."""
    try:
        vs = promql_parser.parse(str(text))
    except ValueError as exc:
        raise UnitTestError(f"invalid series {text!r}: {exc}") from None
    if not isinstance(vs, promql_parser.VectorSelector):
        raise UnitTestError(f"invalid series {text!r}: expected a metric name with labels")
    out: dict[str, str] = {}
    if vs.name:
        out["__name__"] = vs.name
    for m in vs.matchers.matchers:
        if "Equal" not in str(m.op) or "Not" in str(m.op):
            raise UnitTestError(f"invalid series {text!r}: only = matchers are allowed")
        out[m.name] = m.value
    return out


def _duration(v: Any, where: str) -> int:
    if v is None:
        return 0
    if isinstance(v, int) and not isinstance(v, bool):
        return v * 1000 if v else 0
    try:
        return parse_duration_ms(str(v))
    except DurationError as exc:
        raise UnitTestError(f"{where}: {exc}") from None


def _start_ms(v: Any) -> int:
    if v is None or v == "":
        return 0
    if isinstance(v, int | float) and not isinstance(v, bool):
        return int(v * 1000)
    if isinstance(v, _dt.datetime):
        return int(v.timestamp() * 1000)
    s = str(v).strip()
    try:
        return int(float(s) * 1000)
    except ValueError:
        pass
    try:
        t = _dt.datetime.fromisoformat(s.replace("Z", "+00:00"))
    except ValueError:
        raise UnitTestError(f"start_timestamp: expected RFC3339 or a Unix timestamp, got {s!r}") from None
    if t.tzinfo is None:
        t = t.replace(tzinfo=_dt.UTC)
    return int(t.timestamp() * 1000)


# --------------------------------------------------------------------------------- runner


def _float_eq(a: float, b: float, fuzzy: bool) -> bool:
    if math.isnan(a) and math.isnan(b):
        return True
    if a == b:
        return True
    if not fuzzy:
        return False
    # promtool's fuzzy compare tolerates a difference of one floating-point step.
    return math.nextafter(a, b) == b


def _fmt_labels(d: dict[str, str]) -> str:
    name = d.get("__name__", "")
    rest = ", ".join(f'{k}="{v}"' for k, v in sorted(d.items()) if k != "__name__")
    return f"{name}{{{rest}}}"


class UnitTestRunner:
    def __init__(self, options: RunOptions | None = None) -> None:
        self.options = options or RunOptions()

    def run_files(self, paths: list[str]) -> list[FileResult]:
        return [asyncio.run(self.run_file(p)) for p in paths]

    async def run_file(self, path: str) -> FileResult:
        res = FileResult(path)
        try:
            spec = self._load(path)
        except UnitTestError as exc:
            res.errors.append(str(exc))
            return res
        base = Path(path).parent
        opts = LoadOptions(ignore_unknown_fields=self.options.ignore_unknown_fields, features=self.options.features)
        groups: list[RuleGroup] = []
        for rf in spec.get("rule_files") or []:
            p = Path(rf)
            if not p.is_absolute():
                p = base / p
            try:
                groups.extend(load_rule_file(p, opts).groups)
            except RuleFileError as exc:
                res.errors.append(f"rule file {rf}: {exc}")
        if res.errors:
            return res
        order = spec.get("group_eval_order") or []
        if order:
            rank = {n: i for i, n in enumerate(order)}
            groups.sort(key=lambda g: rank.get(g.name, len(rank)))
        eval_ms = _duration(spec.get("evaluation_interval"), "evaluation_interval") or 60_000
        fuzzy = bool(spec.get("fuzzy_compare", False))
        for i, tg in enumerate(spec.get("tests") or []):
            if not isinstance(tg, dict):
                res.errors.append(f"tests[{i}]: expected a mapping")
                continue
            name = str(tg.get("name", ""))
            if self.options.run_patterns and not any(
                compile_regex(p, anchored=False).matches(name) for p in self.options.run_patterns
            ):
                continue
            res.groups_run += 1
            try:
                errs, skipped = await self._run_group(tg, i, groups, eval_ms, fuzzy)
            except UnsupportedFeature as exc:
                if self.options.skip_native_histograms:
                    res.skipped.append(f"tests[{i}] {name}: {exc}")
                    continue
                errs, skipped = [f"tests[{i}] {name}: {exc}"], []
            except UnitTestError as exc:
                errs, skipped = [f"tests[{i}] {name}: {exc}"], []
            res.errors.extend(errs)
            res.skipped.extend(skipped)
        return res

    def _load(self, path: str) -> dict:
        try:
            data = load_yaml_file(path, "rule test file")
        except YamlFileError as exc:
            raise UnitTestError(str(exc).removeprefix(f"{path}: ")) from None
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise UnitTestError("the top level must be a mapping")
        if not self.options.ignore_unknown_fields:
            for k in data:
                if k not in TEST_FILE_KEYS:
                    raise UnitTestError(f"field {k} not found in unit-test file (known: {', '.join(TEST_FILE_KEYS)})")
            for i, tg in enumerate(data.get("tests") or []):
                for k in tg or {}:
                    if k not in TEST_GROUP_KEYS:
                        raise UnitTestError(f"tests[{i}]: field {k} not found (known: {', '.join(TEST_GROUP_KEYS)})")
        return data

    async def _run_group(self, tg: dict, idx: int, groups: list[RuleGroup], eval_ms: int,  # noqa: C901, PLR0915 - promtool's test sequence in its order: series, steps, alert and expression checks
                         fuzzy: bool) -> tuple[list[str], list[str]]:
        name = str(tg.get("name", ""))
        label = f"tests[{idx}]" + (f" {name!r}" if name else "")
        interval_ms = _duration(tg.get("interval"), f"{label}: interval") or eval_ms
        start_ms = _start_ms(tg.get("start_timestamp"))
        storage = MemoryStorage()
        skipped: list[str] = []
        for j, item in enumerate(tg.get("input_series") or []):
            if not isinstance(item, dict) or "series" not in item:
                raise UnitTestError(f"{label}: input_series[{j}]: needs 'series' and 'values'")
            labels = parse_series_labels(item["series"])
            raw_values = str(item.get("values", ""))
            if self.options.skip_native_histograms and "{{" in raw_values:
                skipped.append(f"{label}: input series {item['series']!r}: native histogram input skipped")
                continue
            values = expand_values(raw_values)
            s = Series.of(labels_from_dict(labels))
            for k, v in enumerate(values):
                if isinstance(v, FloatHistogram):
                    storage.add_histogram(s, start_ms + k * interval_ms, v)
                elif v is not None:
                    storage.add_sample(s, start_ms + k * interval_ms, v)
        ext = {str(k): str(v) for k, v in (tg.get("external_labels") or {}).items()}
        engine = Engine(storage)
        query = self._query_fn(engine)
        alert_tests = tg.get("alert_rule_test") or []
        expr_tests = tg.get("promql_expr_test") or []
        max_ms = 0
        for t in [*alert_tests, *expr_tests]:
            max_ms = max(max_ms, _duration(t.get("eval_time"), f"{label}: eval_time"))
        runners = [
            GroupRunner(g, query, DirectWriter(storage), MemoryAlertStateStore(), None,
                        EvalOptions(default_interval_ms=eval_ms, external_labels=ext,
                                    external_url=str(tg.get("external_url", ""))))
            for g in groups
        ]
        alerts_at: dict[int, list[tuple[str, dict, dict]]] = {}
        check_times = sorted({_duration(t.get("eval_time"), "eval_time") for t in alert_tests})
        errors: list[str] = []
        ts = 0
        while ts <= max_ms:
            for r in runners:
                if ts % r.interval_ms == 0:
                    await r.evaluate(start_ms + ts)
                    for rid, h in r.health.items():
                        if h.health == "err" and h.last_evaluation * 1000 == start_ms + ts:
                            errors.append(f"{label}: rule: {rid.split(':')[1]}, time: {format_duration_ms(ts)}, err: {h.last_error}")
            firing = [
                (rec.labels.get("alertname", ""), dict(rec.labels), dict(rec.annotations))
                for r in runners for rec in r.records() if rec.state == FIRING
            ]
            for ct in check_times:
                if ts <= ct < ts + eval_ms:
                    alerts_at[ct] = firing
            ts += eval_ms
        if errors:
            return errors[:1], skipped
        for at in alert_tests:
            et = _duration(at.get("eval_time"), "eval_time")
            name_ = str(at.get("alertname", ""))
            got_alerts = sorted(((lab, ann) for n, lab, ann in alerts_at.get(et, []) if n == name_), key=lambda x: sorted(x[0].items()))
            exp = []
            for ea in at.get("exp_alerts") or []:
                ea = ea or {}
                lab = {str(k): str(v) for k, v in (ea.get("exp_labels") or {}).items()}
                lab.update(ext)
                lab["alertname"] = name_
                ann = {str(k): str(v) for k, v in (ea.get("exp_annotations") or {}).items()}
                exp.append((lab, ann))
            exp.sort(key=lambda x: sorted(x[0].items()))
            got_cmp = [({**lab, **{k: v for k, v in ext.items()}}, ann) for lab, ann in got_alerts]
            if got_cmp != exp:
                errors.append(
                    f"{label}: alertname: {name_}, time: {format_duration_ms(et)},\n"
                    f"        exp:{_fmt_alerts(exp)},\n        got:{_fmt_alerts(got_cmp)}")
        for et_test in expr_tests:
            expr = str(et_test.get("expr", ""))
            et = _duration(et_test.get("eval_time"), "eval_time")
            exp_samples: list[tuple[dict, float | str]] = []
            skip = False
            for es in et_test.get("exp_samples") or []:
                lab = parse_series_labels(es["labels"]) if es.get("labels") else {}
                if es.get("histogram"):
                    if self.options.skip_native_histograms:
                        skip = True
                        break
                    try:
                        hist = parse_histogram(str(es["histogram"]))
                    except HistogramError as exc:
                        raise UnitTestError(f"{label}: expr {expr!r}: {exc}") from None
                    exp_samples.append((lab, hist.test_expression()))
                else:
                    exp_samples.append((lab, float(es.get("value", 0))))
            if skip:
                skipped.append(f"{label}: expr {expr!r} at {format_duration_ms(et)} (native histograms)")
                continue
            try:
                res = await query(expr, start_ms + et)
            except Exception as exc:
                errors.append(f"{label}: expr: {expr!r}, time: {format_duration_ms(et)}, err: {exc}")
                continue
            if res.type == "scalar":
                assert res.scalar is not None
                got: list[tuple[dict, float | str]] = [({}, float(res.scalar[1]))]
            elif res.type == "vector":
                got = [(dict(s.labels), _sample_value(storage, float(s.values[-1]))) for s in res.series if len(s.values)]
            else:
                errors.append(f"{label}: expr: {expr!r}: result is a {res.type}, expected a vector or scalar")
                continue
            if not _samples_equal(exp_samples, got, fuzzy):
                errors.append(
                    f"{label}: expr: {expr!r}, time: {format_duration_ms(et)},\n"
                    f"        exp: {_fmt_samples(exp_samples)}\n        got: {_fmt_samples(got)}")
        return errors, skipped

    def _query_fn(self, engine: Engine) -> QueryFunc:
        feats = self.options.features

        async def query(expr: str, ts_ms: int) -> QueryResult:
            from alerting.promql_check import check_expr

            check_expr(expr, feats)
            return await engine.instant_query(expr, ts_ms)

        return query


def _sample_value(storage: MemoryStorage, v: float) -> float | str:
    """A result value: a float, or a native histogram's canonical test expression."""
    h = storage.histogram(v)
    return h.test_expression() if h is not None else v


def _samples_equal(exp: list[tuple[dict, float | str]], got: list[tuple[dict, float | str]], fuzzy: bool) -> bool:
    """Same label sets with equal floats, or identical histogram test expressions (as promtool)."""
    if len(exp) != len(got):
        return False
    key = lambda x: sorted(x[0].items())  # noqa: E731
    for (el, ev), (gl, gv) in zip(sorted(exp, key=key), sorted(got, key=key), strict=True):
        if el != gl or isinstance(ev, str) != isinstance(gv, str):
            return False
        if isinstance(ev, str) or isinstance(gv, str):
            if ev != gv:
                return False
        elif not _float_eq(ev, gv, fuzzy):
            return False
    return True


def _fmt_samples(items: list[tuple[dict, float | str]]) -> str:
    return "[" + ", ".join(f"{_fmt_labels(lab)} {v if isinstance(v, str) else repr(v)}" for lab, v in items) + "]"


def _fmt_alerts(items: list[tuple[dict, dict]]) -> str:
    return "[" + ", ".join(f"labels:{_fmt_labels(lab)} annotations:{ann}" for lab, ann in items) + "]"


def run_unit_tests(paths: list[str], options: RunOptions | None = None) -> tuple[int, list[FileResult]]:
    """Run every file; returns (exit code as promtool, per-file results)."""
    runner = UnitTestRunner(options)
    results = runner.run_files(paths)
    return (0 if all(r.ok for r in results) else 1), results
