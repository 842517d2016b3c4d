"""Runner for the upstream promqltest files (tests/conformance/promql/*.test).

Loads each file's data into a MemoryStorage, runs every ``eval`` through our Engine and
compares with the expected result as upstream does (relative tolerance 1e-6, NaN == NaN).
Cases that touch native histograms are counted apart: the engine handles float samples.
"""

from __future__ import annotations

import asyncio
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import promql_parser

from query.engine import Engine
from query.errors import QueryError
from query.memory import MemoryStorage
from storage.model import STALE_NAN, Series

# Files that test native histograms or experimental features; run for information only.
SKIPPED_FILES: dict[str, str] = {
    "native_histograms.test": "native histograms (the engine handles float samples only)",
    "info.test": "experimental info() function",
    "limit.test": "experimental limitk/limit_ratio",
    "start_timestamps.test": "experimental start (created) timestamps",
}

_DUR_RE = re.compile(r"(\d+(?:\.\d+)?)(ms|y|w|d|h|m|s)")
_UNITS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000, "y": 31_536_000_000}
_NUM = r"[+-]?(?:[Ii]nf|NaN|nan|0[xX][0-9a-fA-F]+|\d*\.?\d+(?:[eE][+-]?\d+)?)"
_SERIES_RE = re.compile(rf"^({_NUM})(?:([+-])({_NUM}))?x(\d+)$")


def parse_duration_ms(text: str) -> int:
    text = text.strip()
    try:
        return int(round(float(text) * 1000))
    except ValueError:
        pass
    pos = 0
    total = 0
    for m in _DUR_RE.finditer(text):
        if m.start() != pos:
            raise ValueError(f"bad duration {text!r}")
        total += int(float(m.group(1)) * _UNITS[m.group(2)])
        pos = m.end()
    if pos != len(text) or not text:
        raise ValueError(f"bad duration {text!r}")
    return total


def _num(text: str) -> float:
    t = text.lower().lstrip("+")
    if t in ("inf",):
        return math.inf
    if t == "-inf":
        return -math.inf
    if t in ("nan", "-nan"):
        return math.nan
    if t.lstrip("-").startswith("0x"):
        v = float(int(t.lstrip("-"), 16))
        return -v if t.startswith("-") else v
    return float(text)


def expand_points(text: str) -> list[float | None]:
    """Point notation -> values (None = missing sample); raises on native histograms."""
    if "{{" in text:
        raise NotImplementedError("native histogram")
    out: list[float | None] = []
    for tok in text.split():
        if tok == "_":
            out.append(None)
        elif tok.startswith("_x"):
            out.extend([None] * int(tok[2:]))
        elif tok == "stale":
            out.append(STALE_NAN)
        elif (m := _SERIES_RE.match(tok)) is not None:
            a = _num(m.group(1))
            n = int(m.group(4))
            if m.group(2) is None:
                out.extend([a] * (n + 1))
            else:
                b = _num(m.group(3)) * (1 if m.group(2) == "+" else -1)
                out.extend([a + b * k for k in range(n + 1)])
        else:
            out.append(_num(tok))
    return out


def split_series(line: str) -> tuple[dict[str, str], str]:
    """``metric{a="b"} rest`` -> (labels, rest); labels include __name__ when named."""
    line = line.strip()
    i = 0
    while i < len(line) and (line[i].isalnum() or line[i] in "_:"):
        i += 1
    if i < len(line) and line[i] == "{":
        depth, q = 0, None
        j = i
        while j < len(line):
            c = line[j]
            if q:
                if c == "\\":
                    j += 1
                elif c == q:
                    q = None
            elif c in "\"'`":
                q = c
            elif c == "{":
                depth += 1
            elif c == "}":
                depth -= 1
                if depth == 0:
                    break
            j += 1
        sel, rest = line[: j + 1], line[j + 1 :]
    else:
        sel, rest = line[:i], line[i:]
    if sel.strip() in ("{}", ""):
        return {}, rest
    ast = promql_parser.parse(sel)
    labels: dict[str, str] = {}
    if ast.name:
        labels["__name__"] = ast.name
    for m in ast.matchers.matchers:
        labels[m.name] = m.value
    return labels, rest


@dataclass
class Case:
    line: int
    kind: str  # instant | range
    expr: str
    start_ms: int
    end_ms: int = 0
    step_ms: int = 0
    expect_fail: bool = False
    ordered: bool = False
    expected: list[str] = field(default_factory=list)
    range_vector: tuple[int, int, int] | None = None
    string: str | None = None
    histogram: bool = False


@dataclass
class CaseResult:
    case: Case
    ok: bool
    message: str = ""


@dataclass
class FileResult:
    name: str
    results: list[CaseResult] = field(default_factory=list)

    def counts(self, kind: str, histogram: bool = False) -> tuple[int, int]:
        rs = [r for r in self.results if r.case.kind == kind and r.case.histogram == histogram]
        return sum(r.ok for r in rs), len(rs)

    @property
    def float_failures(self) -> list[CaseResult]:
        return [r for r in self.results if not r.ok and not r.case.histogram]


def _almost_equal(a: float, b: float, eps: float = 1e-6) -> bool:
    if math.isnan(a) and math.isnan(b):
        return True
    if a == b:
        return True
    abs_sum = abs(a) + abs(b)
    diff = abs(a - b)
    min_normal = 2.2250738585072014e-308
    if a == 0 or b == 0 or abs_sum < min_normal:
        return diff < eps * min_normal
    return diff / min(abs_sum, 1.7976931348623157e308) < eps


_RANGE_DEPENDENT = re.compile(r"\b(?:start|end|step|range)\s*\(\s*\)")


class Runner:
    """``range_variant``: like upstream, also run each passing instant case as a range query
    from t-1m to t+1m (step 1m) and require the middle step to equal the instant result."""

    def __init__(self, range_variant: bool = True) -> None:
        self.storage = MemoryStorage()
        self.engine = Engine(self.storage, lookback_ms=300_000, max_samples=50_000_000)
        self.range_variant = range_variant
        self.histogram_names: set[str] = set()
        self.histogram_unnamed = False

    # -------------------------------------------------------------- loading
    def load(self, interval_ms: int, lines: list[str], nhcb: bool) -> None:
        for line in lines:
            try:
                labels, rest = split_series(line)
            except BaseException:  # noqa: BLE001 - a series name the parser cannot read
                continue
            if rest.lstrip().startswith("@"):
                continue  # start-timestamp annotations (experimental)
            try:
                points = expand_points(rest)
            except NotImplementedError:
                self._mark_histogram(labels)
                continue
            except ValueError:
                continue
            if nhcb and labels.get("__name__", "").endswith("_bucket"):
                self.histogram_names.add(labels["__name__"][: -len("_bucket")])
            series = Series.of(tuple(sorted(labels.items())))
            ts = [k * interval_ms for k, v in enumerate(points) if v is not None]
            vals = [v for v in points if v is not None]
            self.storage.add_series(series, np.array(ts, dtype=np.int64), np.array(vals, dtype=np.float64))

    def _mark_histogram(self, labels: dict[str, str]) -> None:
        name = labels.get("__name__")
        if name:
            self.histogram_names.add(name)
        else:
            self.histogram_unnamed = True

    def clear(self) -> None:
        self.storage.clear()
        self.histogram_names.clear()
        self.histogram_unnamed = False

    def touches_histograms(self, expr: str) -> bool:
        if not self.histogram_names and not self.histogram_unnamed:
            return False
        if self.histogram_unnamed:
            return True
        names: list[str | None] = []

        def visit(e: object) -> None:
            if isinstance(e, promql_parser.VectorSelector):
                names.append(e.name or _eq_name(e))
            elif isinstance(e, promql_parser.MatrixSelector):
                visit(e.vector_selector)

        try:
            promql_parser.walk(promql_parser.parse(expr), visit)
        except BaseException:  # noqa: BLE001 - syntax the raw parser lacks (anchored, durations...)
            return any(re.search(rf"(?<![\w:]){re.escape(n)}(?![\w:])", expr) for n in self.histogram_names)
        for n in names:
            if n is None or n in self.histogram_names:
                return True
        return False

    # ------------------------------------------------------------ evaluating
    async def run_case(self, case: Case) -> CaseResult:
        try:
            if case.kind == "instant":
                res = await self.engine.instant_query(case.expr, case.start_ms)
            else:
                res = await self.engine.range_query(case.expr, case.start_ms, case.end_ms, case.step_ms)
        except QueryError as exc:
            if case.expect_fail:
                return CaseResult(case, True)
            return CaseResult(case, False, f"unexpected error: {exc}")
        except Exception as exc:  # noqa: BLE001 - a crash is a failure to report, not to raise
            return CaseResult(case, False, f"crash: {type(exc).__name__}: {exc}")
        if case.expect_fail:
            return CaseResult(case, False, "expected failure, got a result")
        try:
            msg = self.compare(case, res)
        except Exception as exc:  # noqa: BLE001
            return CaseResult(case, False, f"bad expectation: {type(exc).__name__}: {exc}")
        if not msg and self.range_variant and case.kind == "instant" and res.type in ("vector", "scalar"):
            if not _RANGE_DEPENDENT.search(case.expr):
                msg = await self._range_variant(case, res)
        return CaseResult(case, msg == "", msg)

    async def _range_variant(self, case: Case, inst) -> str:
        t = case.start_ms
        try:
            res = await self.engine.range_query(case.expr, t - 60_000, t + 60_000, 60_000)
        except QueryError as exc:
            return f"range variant failed: {exc}"
        got: dict[tuple, float] = {}
        for s in res.series:
            hit = np.nonzero(s.timestamps == t)[0]
            if len(hit):
                got[tuple(sorted(s.labels.items()))] = float(s.values[hit[0]])
        if inst.type == "scalar":
            want = {(): inst.scalar[1]}
        else:
            want = {tuple(sorted(s.labels.items())): float(s.values[0]) for s in inst.series}
        if set(got) != set(want) or any(not _almost_equal(got[k], want[k]) for k in want):
            return f"range variant (t-1m..t+1m) middle step differs: {sorted(got.items())[:3]} vs {sorted(want.items())[:3]}"
        return ""

    def compare(self, case: Case, res) -> str:
        if case.string is not None:
            if res.type != "string" or res.string[1] != case.string:
                return f"expected string {case.string!r}, got {res.type} {res.string}"
            return ""
        if case.kind == "instant" and case.range_vector is None:
            if len(case.expected) == 1 and not _looks_like_series(case.expected[0]):
                want = _num(case.expected[0].strip())
                if res.type != "scalar":
                    return f"expected scalar {want}, got {res.type}"
                got = res.scalar[1]
                return "" if _almost_equal(got, want) else f"scalar {got} != {want}"
            if res.type != "vector":
                return f"expected vector, got {res.type}"
            want_rows = []
            for line in case.expected:
                labels, rest = split_series(line)
                pts = expand_points(rest)
                want_rows.append((labels, pts[0] if pts else None))
            got_rows = [(s.labels, float(s.values[0])) for s in res.series]
            if len(got_rows) != len(want_rows):
                return f"expected {len(want_rows)} series, got {len(got_rows)}: {got_rows[:5]}"
            if case.ordered:
                for (gl, gv), (wl, wv) in zip(got_rows, want_rows, strict=False):
                    if gl != wl or wv is None or not _almost_equal(gv, wv):
                        return f"ordered mismatch: got {got_rows}, want {want_rows}"
                return ""
            got_map = {tuple(sorted(lab.items())): v for lab, v in got_rows}
            for wl, wv in want_rows:
                key = tuple(sorted(wl.items()))
                if key not in got_map:
                    return f"missing series {wl}; got {got_rows[:5]}"
                if wv is None or not _almost_equal(got_map[key], wv):
                    return f"value for {wl}: got {got_map[key]}, want {wv}"
            return ""
        # range query, or an instant query returning a range vector
        if case.range_vector is not None:
            s, e, st = case.range_vector
        else:
            s, _e, st = case.start_ms, case.end_ms, case.step_ms
        if res.type != "matrix":
            return f"expected matrix, got {res.type}"
        got = {tuple(sorted(x.labels.items())): dict(zip(x.timestamps.tolist(), x.values.tolist(), strict=False)) for x in res.series}
        want: dict[tuple, dict[int, float]] = {}
        for line in case.expected:
            labels, rest = split_series(line)
            pts = expand_points(rest)
            key = tuple(sorted(labels.items()))
            want[key] = {s + k * st: v for k, v in enumerate(pts) if v is not None}
        if case.range_vector is not None:
            got = {k: {t: v for t, v in pts.items()} for k, pts in got.items()}
        if set(got) != set(want):
            return f"series differ: got {sorted(got)[:4]}, want {sorted(want)[:4]}"
        for key, wpts in want.items():
            gpts = got[key]
            if set(gpts) != set(wpts):
                return f"timestamps differ for {key}: got {sorted(gpts)[:6]}, want {sorted(wpts)[:6]}"
            for t, wv in wpts.items():
                if not _almost_equal(gpts[t], wv):
                    return f"value at {t} for {key}: got {gpts[t]}, want {wv}"
        return ""

    # ------------------------------------------------------------- the file
    async def run_file(self, path: Path) -> FileResult:
        fr = FileResult(path.name)
        lines = path.read_text().split("\n")
        i = 0
        while i < len(lines):
            raw = lines[i]
            line = raw.strip()
            i += 1
            if not line or line.startswith("#"):
                continue
            words = line.split()
            cmd = words[0]
            if cmd in ("load", "load_with_nhcb"):
                interval = parse_duration_ms(words[1])
                body = []
                while i < len(lines) and lines[i].strip() and (lines[i][0] in " \t"):
                    if not lines[i].strip().startswith("#"):
                        body.append(lines[i])
                    i += 1
                self.load(interval, body, cmd == "load_with_nhcb")
                continue
            if cmd == "clear":
                self.clear()
                continue
            if cmd.startswith("eval"):
                case = self._parse_eval(line, i)
                while i < len(lines) and lines[i].strip() and (lines[i][0] in " \t"):
                    body_line = lines[i].strip()
                    i += 1
                    if body_line.startswith("#"):
                        continue
                    self._apply_body(case, body_line)
                case.histogram = self.touches_histograms(case.expr) or any("{{" in x for x in case.expected)
                fr.results.append(await self.run_case(case))
                continue
            # ignore unknown commands
        return fr

    def _parse_eval(self, line: str, lineno: int) -> Case:
        m = re.match(r"^(eval(?:_fail|_warn|_info|_ordered)?)\s+instant\s+at\s+(\S+)\s+(.*)$", line)
        if m:
            case = Case(lineno, "instant", m.group(3), parse_duration_ms(m.group(2)))
        else:
            m = re.match(
                r"^(eval(?:_fail|_warn|_info|_ordered)?)\s+range\s+from\s+(\S+)\s+to\s+(\S+)\s+step\s+(\S+)\s+(.*)$",
                line,
            )
            if not m:
                raise ValueError(f"line {lineno}: cannot parse {line!r}")
            case = Case(
                lineno,
                "range",
                m.group(5),
                parse_duration_ms(m.group(2)),
                parse_duration_ms(m.group(3)),
                parse_duration_ms(m.group(4)),
            )
        if m.group(1) == "eval_fail":
            case.expect_fail = True
        if m.group(1) == "eval_ordered":
            case.ordered = True
        return case

    def _apply_body(self, case: Case, line: str) -> None:
        if line.startswith("expect "):
            rest = line[len("expect ") :].strip()
            if rest.startswith("fail"):
                case.expect_fail = True
            elif rest.startswith("ordered"):
                case.ordered = True
            elif rest.startswith("range vector"):
                m = re.match(r"range vector from (\S+) to (\S+) step (\S+)", rest)
                if m:
                    case.range_vector = tuple(parse_duration_ms(x) for x in m.groups())  # type: ignore[assignment]
            elif rest.startswith("string"):
                s = rest[len("string") :].strip()
                case.string = s[1:-1].encode().decode("unicode_escape") if s[0] in "\"'" else s[1:-1]
            return
        if line.startswith(("expected_fail_message", "expected_fail_regexp")):
            case.expect_fail = True
            return
        case.expected.append(line)


def _eq_name(sel: object) -> str | None:
    for m in sel.matchers.matchers:  # type: ignore[attr-defined]
        if m.name == "__name__" and m.op == promql_parser.MatchOp.Equal:
            return m.value
    return None


def _looks_like_series(line: str) -> bool:
    s = line.strip()
    return s.startswith("{") or bool(re.match(r"^[a-zA-Z_:][a-zA-Z0-9_:]*\s*(\{|\s|$)", s)) and not re.match(
        r"^(?:[Ii]nf|NaN|nan)\b", s
    )


def run_file(path: Path) -> FileResult:
    return asyncio.run(Runner().run_file(path))


def format_table(results: list[FileResult]) -> str:
    rows = [
        "| file | instant (float) | range (float) | native-histogram cases (passed, not counted) | status |",
        "|---|---|---|---|---|",
    ]
    tot = [0, 0, 0, 0]
    for fr in results:
        ip, it = fr.counts("instant")
        rp, rt = fr.counts("range")
        hcases = [r for r in fr.results if r.case.histogram]
        hp = f"{sum(r.ok for r in hcases)}/{len(hcases)}" if hcases else "-"
        status = SKIPPED_FILES.get(fr.name, "enforced")
        if fr.name not in SKIPPED_FILES:
            tot[0] += ip
            tot[1] += it
            tot[2] += rp
            tot[3] += rt
        rows.append(f"| {fr.name} | {ip}/{it} | {rp}/{rt} | {hp} | {'skipped: ' + status if fr.name in SKIPPED_FILES else status} |")
    rows.append(f"| **enforced total** | {tot[0]}/{tot[1]} | {tot[2]}/{tot[3]} | | |")
    return "\n".join(rows)


def main() -> None:
    """Print the per-file table (``python tests/promql_conformance.py [dir]``)."""
    import sys

    folder = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parent / "conformance" / "promql"
    results = [run_file(p) for p in sorted(folder.glob("*.test"))]
    print(format_table(results))
    for fr in results:
        for r in fr.float_failures:
            print(f"{fr.name}:{r.case.line}: {r.case.expr} -- {r.message}")


if __name__ == "__main__":
    main()
