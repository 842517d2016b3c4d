"""Fuzzing the exposition parsers (text 0.0.4 and OpenMetrics) and the scrape cache built on them.

Properties:
- generated bodies (escapes, labels, timestamps, HELP/TYPE/UNIT, comments, exemplars, odd
  float spellings) parse to exactly the series, values (bit-exact, NaN and ±Inf included)
  and timestamps they were generated from, and the scrape cache (cold, then warm with new
  values) yields the same series and values;
- byte-mutated conformance seeds either parse or raise ``ParseError`` whose message is
  ``line N: ...`` with N inside the body, in lenient and strict mode, and the scrape cache
  (warmed on the unmutated seed) agrees with the parser on success, failure and line (the
  strict OpenMetrics cache with the strict parser on success or failure);
- every call returns within a hard time bound.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass

import pytest
from fuzz_harness import exposition_seeds, fuzz_settings, mutated, time_bound
from hypothesis import given
from hypothesis import strategies as st

from bench.scrape import run_cache
from scraper.config import ScrapeConfig
from scraper.exposition import FMT_OPENMETRICS, FMT_TEXT, ParseError, parse
from scraper.fastpath import ScrapeCache, ScrapeError
from scraper.lenient import normalize_labels

SEEDS = exposition_seeds()

SUFFIXES = ("_total", "_created", "_count", "_sum", "_bucket", "_gcount", "_gsum", "_info")


# ---------------------------------------------------------------------------- model


@dataclass
class GenSample:
    name: str
    labels: list[tuple[str, str]]
    value: float
    ts_ms: int | None
    family: str
    exemplar: tuple[list[tuple[str, str]], float, float | None] | None = None


def same_float(a: float, b: float) -> bool:
    """Bit-exact equality, except that any NaN equals any NaN (text cannot carry payloads)."""
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    return struct.pack(">d", a) == struct.pack(">d", b)


def cache_view(samples) -> tuple[list[tuple], list[float]]:
    """What ``ScrapeCache`` (no target labels, default config) should produce for parsed samples:
    the first sample of each series (empty labels dropped), plus every sample with its own timestamp."""
    series, values = [], []
    seen: set[tuple] = set()
    for p in samples:
        labels = dict(p.labels)
        labels["__name__"] = p.name
        key = tuple(sorted((k, v) for k, v in labels.items() if v != ""))
        if key in seen and p.timestamp_ms is None:
            continue
        seen.add(key)
        series.append(key)
        values.append(p.value)
    return series, values


def assert_cache_agrees(cache: ScrapeCache, body: bytes, fmt: str, samples) -> None:
    out = run_cache(cache, body, fmt)
    want_series, want_values = cache_view(samples)
    assert [s.labels for s in out.series] == want_series
    assert len(out.values) == len(want_values)
    for got, want in zip(out.values, want_values, strict=True):
        assert same_float(got, want), (got, want)


# ---------------------------------------------------------------------------- strategies

_ALNUM = "abcxyzABCXYZ0189_"


def identifiers(first: str, rest: str, max_rest: int) -> st.SearchStrategy[str]:
    """``[first][rest]{0,max_rest}`` built from small alphabets (cheaper than ``from_regex``)."""
    return st.builds(lambda a, b: a + b, st.sampled_from(first), st.text(st.sampled_from(rest), max_size=max_rest))


metric_names = identifiers("abzAZ_:", _ALNUM + ":", 10).filter(lambda n: not n.endswith(SUFFIXES))
plain_metric_names = identifiers("abzAZ_", _ALNUM, 10).filter(
    lambda n: not n.endswith(SUFFIXES) and not n.startswith("__")
)
label_names = identifiers("abzAZ_lq", _ALNUM + "eu", 8).filter(lambda n: n not in ("__name__", "le", "quantile"))
# Any Unicode text (no surrogates: bodies are UTF-8), weighted towards the characters that need escapes.
label_values = st.text(
    st.characters(exclude_categories=("Cs",)) | st.sampled_from(['"', "\\", "\n", "\t", "\r", " ", "#", "{", "}", ","]),
    max_size=12,
)
help_texts = st.text(st.characters(exclude_categories=("Cs",)) | st.sampled_from(["\\", "\n", '"', " "]), max_size=20)
any_values = st.floats(allow_nan=True, allow_infinity=True) | st.sampled_from(
    [0.0, -0.0, 5e-324, -5e-324, 1.7976931348623157e308, 2.2250738585072014e-308, 1e21, 1e-7, 0.1, 1.0]
)
label_sets = st.lists(st.tuples(label_names, label_values), max_size=4, unique_by=lambda kv: kv[0])


def escape_text_label(v: str) -> str:
    return v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def escape_text_help(v: str) -> str:
    return v.replace("\\", "\\\\").replace("\n", "\\n")


def _int_form(v: float) -> list[str]:
    return [str(int(v))] if v.is_integer() and abs(v) < 1e30 and math.copysign(1.0, v) > 0 or -1e30 < v < 0 and v.is_integer() else []


def go_float_text(v: float, style: int) -> str:
    """One of the spellings Prometheus's parseFloat accepts for ``v``, picked by ``style``."""
    if math.isnan(v):
        return ["NaN", "nan", "NAN"][style % 3]  # Go's ParseFloat takes no sign on NaN
    if math.isinf(v):
        sign = "-" if v < 0 else ["", "+"][style % 2]
        return sign + ["Inf", "inf", "INF", "Infinity", "infinity"][(style >> 1) % 5]
    forms = [repr(v), f"{v:.17g}", f"{v:.17e}", f"{v:.17E}"] + _int_form(v)  # Prometheus: no hex, no _
    text = forms[style % len(forms)]
    if not text.startswith("-") and (style >> 3) & 1:
        text = "+" + text
    return text


def om_float_text(v: float, style: int) -> str:
    """An OpenMetrics spelling of ``v`` (decimal, +Inf/-Inf, NaN), picked by ``style``."""
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    forms = [repr(v), f"{v:.17g}", f"{v:.17e}"] + _int_form(v)
    return forms[style % len(forms)]


BLANKS = [" ", "\t", "  ", " \t"]
styles = st.integers(0, 2**20 - 1)


def pick(options: list[str], style: int, shift: int) -> str:
    return options[(style >> shift) % len(options)]


TEXT_KINDS = ["counter", "gauge", "untyped", "summary", "histogram", None]
LE_TEXT = ["+Inf", "1", "0.5", "-3e2", "NaN"]
quantiles = st.floats(0, 1)
text_timestamps = st.none() | st.integers(0, 2**63 - 1)  # promlex: digits, no sign


@st.composite
def text_bodies(draw: st.DrawFn) -> tuple[bytes, list[GenSample]]:
    """A text 0.0.4 body and the samples it holds (families of every text type)."""
    bases = draw(st.lists(metric_names, min_size=1, max_size=4, unique=True))
    lines: list[str] = []
    want: list[GenSample] = []
    mtype = ""
    for base in bases:
        style = draw(styles)
        kind = pick(TEXT_KINDS, style, 0)
        if (style >> 3) & 1:
            lines.append(f"# HELP{pick(BLANKS, style, 4)}{base}{pick(BLANKS, style, 6)}{escape_text_help(draw(help_texts))}")
        if kind is not None:
            lines.append(f"#{pick([' ', '  ', chr(9)], style, 8)}TYPE {base} {kind}")
            mtype = kind  # the last TYPE line's type: le/quantile are written in OpenMetrics form
        if (style >> 10) & 1:
            lines.append("# c " + draw(help_texts).replace("\n", " "))
        if (style >> 11) & 1:
            lines.append(pick(["", " ", "\t"], style, 12))
        names: list[tuple[str, list[tuple[str, str]]]] = []
        for labels in draw(st.lists(label_sets, min_size=1, max_size=2, unique_by=lambda ls: tuple(ls))):
            if kind == "summary":
                q = draw(quantiles)
                names += [(base, labels + [("quantile", repr(q))]), (base + "_sum", labels), (base + "_count", labels)]
            elif kind == "histogram":
                le = pick(LE_TEXT, style, 14)
                names += [(base + "_bucket", labels + [("le", le)]), (base + "_sum", labels), (base + "_count", labels)]
            else:
                names.append((base, labels))
        for name, labels in names:
            labels = draw(st.permutations(labels))
            value = draw(any_values)
            ts = draw(text_timestamps)
            ls = draw(styles)
            if labels or ls & 1:
                inner = ",".join(f'{k}{pick(["", " "], ls, 1 + i)}="{escape_text_label(v)}"'
                                 for i, (k, v) in enumerate(labels))
                if labels and (ls >> 6) & 1:
                    inner += ","
                series = f"{name}{pick(['', ' '], ls, 7)}{{{inner}}}"
            else:
                series = name
            line = series + pick(BLANKS, ls, 10) + go_float_text(value, ls >> 12)  # (no blanks first: promparse)
            if ts is not None:
                line += pick(BLANKS, ls, 2) + str(ts)
            line += pick(["", "", " ", "\t"], ls, 4)
            lines.append(line)
            want.append(GenSample(name, normalize_labels(mtype, list(labels)), value, ts, base))
    return ("\n".join(lines) + "\n").encode(), want


def om_labels(labels: list[tuple[str, str]]) -> str:
    """``{a="x",...}`` with OpenMetrics escapes."""
    return "{" + ",".join(f'{k}="{escape_text_label(v)}"' for k, v in labels) + "}"


def om_ts_text(ms: int) -> str:
    sign = "-" if ms < 0 else ""
    a = abs(ms)
    return f"{sign}{a // 1000}" if a % 1000 == 0 else f"{sign}{a // 1000}.{a % 1000:03d}"


OM_KINDS = ["counter", "gauge", "unknown", "info", "stateset", "summary", "histogram", "gaugehistogram", None]
LE_OM = ["+Inf", "-Inf", "1", "0.25", "-3e2", "1e-9"]
om_timestamps = st.none() | st.integers(-(10**13), 10**13)
# (no NUL: the lexer skips NULs in sample label values only, not in exemplar ones; no lone surrogates:
# an exposition is UTF-8 bytes, and a surrogate cannot be encoded)
exemplar_labels = st.lists(st.tuples(label_names, st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\x00"), max_size=8)),
                          max_size=3, unique_by=lambda kv: kv[0])
exemplar_timestamps = st.none() | st.floats(-1e12, 1e12)


@st.composite
def om_bodies(draw: st.DrawFn) -> tuple[bytes, list[GenSample]]:
    """An OpenMetrics body (non-strict valid) and the samples it holds, exemplars included."""
    bases = draw(st.lists(plain_metric_names, min_size=1, max_size=4, unique=True))
    lines: list[str] = []
    want: list[GenSample] = []
    mtype = ""
    used: set[str] = set()
    for base in bases:
        style = draw(styles)
        kind = pick(OM_KINDS, style, 0)
        unit = pick(["", "seconds", "bytes"], style, 4) if kind not in ("info", "stateset") else ""
        family = f"{base}_{unit}" if unit else base
        if family in used or family.endswith(SUFFIXES):
            continue
        used.update((base, family))
        if kind is not None:
            lines.append(f"# TYPE {family} {kind}")
            mtype = kind
        if unit and (style >> 6) & 1:
            lines.append(f"# UNIT {family} {unit}")
        if (style >> 7) & 1:
            h = draw(help_texts).replace("\\", "\\\\").replace("\n", "\\n")
            lines.append(f"# HELP {family} {h}")
        parts: list[tuple[str, list[tuple[str, str]], bool]] = []  # name, labels, exemplar allowed
        for labels in draw(st.lists(label_sets, min_size=1, max_size=2, unique_by=lambda ls: tuple(ls))):
            labels = [(k, v) for k, v in labels if k != family]
            if kind == "counter":
                parts.append((family + "_total", labels, True))
                if (style >> 8) & 1:
                    parts.append((family + "_created", labels, False))
            elif kind == "info":
                parts.append((family + "_info", labels, False))
            elif kind == "stateset":
                parts.append((family, labels + [(family, draw(label_values))], False))
            elif kind == "summary":
                q = draw(quantiles)
                parts += [(family, labels + [("quantile", repr(q))], False), (family + "_sum", labels, False),
                          (family + "_count", labels, False)]
            elif kind in ("histogram", "gaugehistogram"):
                le = pick(LE_OM, style, 9)
                c, s = ("_count", "_sum") if kind == "histogram" else ("_gcount", "_gsum")
                parts += [(family + "_bucket", labels + [("le", le)], True), (family + c, labels, False),
                          (family + s, labels, False)]
            else:
                parts.append((family, labels, False))
        for name, labels, exemplar_ok in parts:
            labels = draw(st.permutations(labels))
            value = draw(any_values)
            ts = draw(om_timestamps)
            ls = draw(styles)
            label_text = om_labels(labels) if labels or ls & 1 else ""
            line = f"{name}{label_text} {om_float_text(value, ls >> 1)}"
            if ts is not None:
                line += " " + om_ts_text(ts)
                ts = int(float(om_ts_text(ts)) * 1000)  # Prometheus: int64(seconds * 1000), truncated
            exemplar = None
            if exemplar_ok and (ls >> 4) & 1:
                ex_labels = draw(exemplar_labels)
                ex_value = draw(any_values)
                ex_ts = draw(exemplar_timestamps)
                line += f" # {om_labels(ex_labels)} {om_float_text(ex_value, ls >> 5)}"
                if ex_ts is not None:
                    line += f" {ex_ts!r}"
                exemplar = (ex_labels, ex_value, ex_ts)
            lines.append(line)
            want.append(GenSample(name, normalize_labels(mtype, list(labels)), value, ts, family, exemplar))
    body = "\n".join(lines) + "\n# EOF" + pick(["\n", ""], draw(styles), 0)
    return body.encode(), want


def assert_samples(got, want: list[GenSample]) -> None:
    assert len(got) == len(want), [g.name for g in got]
    for g, w in zip(got, want, strict=True):
        assert (g.name, g.labels, g.timestamp_ms) == (w.name, w.labels, w.ts_ms)
        assert same_float(g.value, w.value), (g.value_text, w.value)
        if w.exemplar is not None:
            assert g.exemplar is not None
            assert g.exemplar[0] == w.exemplar[0]
            assert same_float(g.exemplar[1], w.exemplar[1])
            assert g.exemplar[2] == w.exemplar[2]
        else:
            assert g.exemplar is None


def revalued(want: list[GenSample], body: bytes, new_values: list[float], fmt: str) -> bytes:
    """The same body with each sample's value token replaced (so the warm cache takes its fast path)."""
    out = []
    samples = parse(body, fmt)
    lines = body.split(b"\n")
    for smp, v in zip(samples, new_values, strict=True):
        raw = lines[smp.line_no - 1].decode()
        text = repr(v) if not math.isinf(v) else ("+Inf" if v > 0 else "-Inf")
        if math.isnan(v):
            text = "NaN"
        head = raw[: len(smp.series_text)]
        tail = raw[len(smp.series_text):]
        idx = tail.index(smp.value_text)
        lines[smp.line_no - 1] = (head + tail[:idx] + text + tail[idx + len(smp.value_text):]).encode()
    out = b"\n".join(lines)
    return out


# ---------------------------------------------------------------------------- properties


@fuzz_settings(300)
@given(text_bodies(), st.data())
def test_text_roundtrip_and_cache_agree(gen, data):
    body, want = gen
    with time_bound("parse(text body)"):
        got = parse(body, FMT_TEXT)
    assert_samples(got, want)
    cache = ScrapeCache({})
    with time_bound("ScrapeCache.process(text body)"):
        assert_cache_agrees(cache, body, FMT_TEXT, got)
        again = revalued(want, body, data.draw(st.lists(any_values, min_size=len(want), max_size=len(want))), FMT_TEXT)
        assert_cache_agrees(cache, again, FMT_TEXT, parse(again, FMT_TEXT))


@fuzz_settings(300)
@given(om_bodies(), st.data())
def test_openmetrics_roundtrip_and_cache_agree(gen, data):
    body, want = gen
    with time_bound("parse(openmetrics body)"):
        got = parse(body, FMT_OPENMETRICS)
    assert_samples(got, want)
    cache = ScrapeCache({})
    with time_bound("ScrapeCache.process(openmetrics body)"):
        assert_cache_agrees(cache, body, FMT_OPENMETRICS, got)
        again = revalued(want, body, data.draw(st.lists(any_values, min_size=len(want), max_size=len(want))),
                         FMT_OPENMETRICS)
        assert_cache_agrees(cache, again, FMT_OPENMETRICS, parse(again, FMT_OPENMETRICS))


def check_parse_error(exc: ParseError, body: bytes) -> None:
    """A ParseError names a line inside the body (one past the last line for framing errors)."""
    assert isinstance(exc, ParseError)
    assert 1 <= exc.line_no <= body.count(b"\n") + 1, (exc.line_no, str(exc))
    assert str(exc).startswith(f"line {exc.line_no}: ") and exc.reason.strip(), str(exc)


def outcome(fn):
    try:
        return True, fn()
    except ParseError as exc:
        return False, exc


def check_mutant(seed_body: bytes, body: bytes, fmt: str) -> None:
    """Parser (lenient and strict) and warm scrape cache on one mutated body: only ParseError, agreeing."""
    with time_bound(f"parse({fmt}) of a mutated body"):
        ok, res = outcome(lambda: parse(body, fmt))
    if not ok:
        check_parse_error(res, body)
    else:
        for smp in res:
            ts = smp.timestamp_ms
            assert ts is None or -(2**63) <= ts < 2**63, f"line {smp.line_no}: timestamp {ts} is not an int64"
    if fmt == FMT_OPENMETRICS:
        with time_bound("strict parse of a mutated body"):
            s_ok, s_res = outcome(lambda: parse(body, fmt, strict=True))
        if not s_ok:
            check_parse_error(s_res, body)
        assert ok or not s_ok, "strict parse accepted what the lenient parse rejected"
    cache = ScrapeCache({})
    with time_bound("ScrapeCache.process of a mutated body"):
        try:
            run_cache(cache, seed_body, fmt)
        except (ParseError, ScrapeError):
            pass
        try:
            c_ok, c_res = True, run_cache(cache, body, fmt)
        except ParseError as exc:
            c_ok, c_res = False, exc
    assert c_ok == ok, f"parser {'ok' if ok else res} vs scrape cache {'ok' if c_ok else c_res}"
    if ok:
        want_series, want_values = cache_view(res)
        assert [s.labels for s in c_res.series] == want_series
        assert all(same_float(a, b) for a, b in zip(c_res.values, want_values, strict=True))
    else:
        assert c_res.line_no == res.line_no, f"parser: {res} / scrape cache: {c_res}"
    if fmt == FMT_OPENMETRICS:
        strict = ScrapeCache({}, ScrapeConfig(strict_openmetrics=True))
        with time_bound("strict ScrapeCache.process of a mutated body"):
            try:
                run_cache(strict, seed_body, fmt)
            except (ParseError, ScrapeError):
                pass
            try:
                run_cache(strict, body, fmt)
                sc_ok = True
            except ParseError as exc:
                check_parse_error(exc, body)
                sc_ok = False
        assert sc_ok == s_ok, f"strict parser {'ok' if s_ok else s_res} vs strict scrape cache"


SMALL_SEEDS = [s for s in SEEDS if len(s[1]) <= 4096]


@fuzz_settings(400)
@given(st.data())
def test_mutated_seeds_fail_only_with_parse_errors(data):
    name, seed, fmt = data.draw(st.sampled_from(SMALL_SEEDS), label="seed")
    body = data.draw(mutated(seed), label="body")
    check_mutant(seed, body, fmt)
    # the same bytes under the other format's rules
    other = FMT_TEXT if fmt == FMT_OPENMETRICS else FMT_OPENMETRICS
    with time_bound(f"parse({other}) of a mutated body"):
        ok, res = outcome(lambda: parse(body, other))
    if not ok:
        check_parse_error(res, body)


@fuzz_settings(200)
@given(text_bodies(), st.data())
def test_mutated_generated_text_fails_only_with_parse_errors(gen, data):
    body, _ = gen
    check_mutant(body, data.draw(mutated(body)), FMT_TEXT)


@fuzz_settings(200)
@given(om_bodies(), st.data())
def test_mutated_generated_openmetrics_fails_only_with_parse_errors(gen, data):
    body, _ = gen
    check_mutant(body, data.draw(mutated(body)), FMT_OPENMETRICS)


@fuzz_settings(100)
@given(st.binary(max_size=300), st.sampled_from([FMT_TEXT, FMT_OPENMETRICS]))
def test_random_bytes_fail_only_with_parse_errors(body, fmt):
    check_mutant(b"", body, fmt)


@pytest.mark.parametrize("fmt", [FMT_TEXT, FMT_OPENMETRICS])
def test_large_pathological_bodies_are_bounded(fmt):
    """Long lines, deep escapes and many labels: a result or a ParseError, within the bound."""
    bodies = [
        b"a{" + b",".join(b'l%d="%s"' % (i, b"\\\\" * 50) for i in range(2000)) + b"} 1\n",
        b'a{x="' + b"\\" * 100_001 + b'"} 1\n',
        b'a{x="' + b'\\"' * 100_000 + b"} 1\n",
        b"a " + b"9" * 100_000 + b"\n",
        b"a 1 " + b"9" * 100_000 + b"\n",
        b"# HELP a " + b"\\" * 100_000 + b"\n",
        b"a{" * 50_000 + b"\n",
        b"\n" * 200_000,
        b"# EOF" * 1000,
        b"a 1 1e300\n",
        b"a 1 -9223372036854775.809\n",
        b"a 1 1E+999999999\n",
        b"a 1 0." + b"1" * 100_000 + b"\n",
    ]
    for body in bodies:
        if fmt == FMT_OPENMETRICS and not body.endswith(b"# EOF"):
            body += b"# EOF\n"
        check_mutant(b"", body, fmt)


def test_time_bound_reports_a_hang():
    """The hang check itself: a busy loop is interrupted and reported as a failure."""
    with pytest.raises(AssertionError, match="hang: busy loop"):
        with time_bound("busy loop", 0.2):
            while True:
                pass
