"""Exposition lines as the Prometheus server reads them (its default, lenient mode).

A port of Prometheus's scrape parsers (model/textparse: promlex.l + promparse.go for text
0.0.4, openmetricslex.l + openmetricsparse.go for OpenMetrics), line by line so that the
scrape cache (``scraper.fastpath``) can run it on the lines it has not seen. What they check
is syntax only: a second TYPE line, metadata after samples, a bucket without ``le`` or an
exemplar on a gauge are all accepted; what they reject fails the whole scrape.

Text 0.0.4, as promlex reads it: blanks (space, tab) may separate any two tokens, labels
need no comma between them and may end with one; a value is any run of characters up to a
blank, ``{`` or the end of the line (so ``a-1`` is ``a`` = -1), read by ``scraper.gofloat``;
a timestamp is ASCII digits (no sign) fitting int64 milliseconds; a comment is any line
whose first non-blank is ``#`` unless it reads ``# HELP``/``# TYPE`` and a blank, and then
the text after the name is everything past its first character (``# TYPE a  counter`` with
two blanks is a bad type). OpenMetrics: exactly one space between fields, no blank lines,
only ``# HELP|TYPE|UNIT name text`` and ``# EOF`` comments, timestamps are float seconds
(truncated to milliseconds as Go's int64() does). In both, label values keep unknown
escapes as written (only ``\\\\``, ``\\"`` and ``\\n`` are replaced), and, as Prometheus 3
does, ``le`` of a histogram and ``quantile`` of a summary (the type of the last TYPE line)
are rewritten in OpenMetrics form (``le="1"`` is ``le="1.0"``).

Not ported: Prometheus 3's quoted UTF-8 metric and label names (``{"a.b"}``) and the blanks
it keeps at the start of a metric name (`` a 1``), which this store cannot hold (errors, as in
Prometheus 2). Body framing (final newline, NUL bytes, ``# EOF``, label values over a line
break) is ``scraper.exposition``'s.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from decimal import Decimal

from scraper.gofloat import parse_value

FMT_TEXT = "text"
FMT_OPENMETRICS = "openmetrics"

TEXT_TYPES = frozenset({"counter", "gauge", "histogram", "summary", "untyped"})
OM_TYPES = frozenset({"counter", "gauge", "histogram", "gaugehistogram", "summary", "info", "stateset", "unknown"})
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1

_NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
_LNAME_RE = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
_NAME_RE = re.compile(_NAME)
_BLANKS_RE = re.compile(r"[ \t]*")
# text: a quoted string (label value); [^\\"] crosses the line breaks exposition.join_quoted_lines kept
_QUOTED_RE = re.compile(r'"(?:\\.|[^\\"])*"')
_OM_QUOTED_RE = re.compile(r'"(?:\\.|[^\\"\n])*"')
# exemplar label values: the lexer skips NUL bytes only inside sample label values, HELP text and comments
_OM_EXEMPLAR_QUOTED_RE = re.compile(r'"(?:\\[^\x00]|[^\\"\n\x00])*"')
_TEXT_VALUE_RE = re.compile(r"[^{ \t]+")
_DIGITS_RE = re.compile(r"[0-9]+", re.ASCII)
_OM_FIELD_RE = re.compile(r"[^ ]+")
# The usual text line, in one match: name{a="x",b="y"} value [timestamp]
_PAIR = r'[a-zA-Z_][a-zA-Z0-9_]*="[^"\\]*(?:\\.[^"\\]*)*"'
_SIMPLE_TEXT_RE = re.compile(
    rf'({_NAME})(?:\{{((?:{_PAIR},)*(?:{_PAIR})?)\}})? ([^{{ \t]+)(?: ([0-9]+))?', re.ASCII
)
_SIMPLE_OM_RE = re.compile(rf'({_NAME})(?:\{{((?:{_PAIR},)*(?:{_PAIR})?)\}})? ([^ ]+)', re.ASCII)
_PAIR_RE = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="([^"\\]*(?:\\.[^"\\]*)*)"')
_ESCAPE_RE = re.compile(r"\\(.)", re.DOTALL)
LABEL_ESCAPES = {"\\": "\\", '"': '"', "n": "\n"}  # label values, OpenMetrics HELP
HELP_TEXT_ESCAPES = {"\\": "\\", "n": "\n"}  # text 0.0.4 HELP


class LineError(ValueError):
    """A line Prometheus rejects (the caller adds the line number)."""


@dataclass(slots=True)
class Sample:
    """One sample line: ``labels`` exclude ``__name__``, in exposition order."""

    name: str
    labels: list[tuple[str, str]]
    value: float
    timestamp_ms: int | None
    series_text: str  # the line up to (not including) the blanks before the value
    value_text: str
    exemplar: tuple[list[tuple[str, str]], float, float | None] | None = None


def unescape(raw: str, table: dict[str, str] = LABEL_ESCAPES) -> str:
    """Prometheus's strings.Replacer: the known escapes replaced, any other kept as written."""
    if "\\" not in raw:
        return raw
    return _ESCAPE_RE.sub(lambda m: table.get(m.group(1), m.group(0)), raw)


def format_om_float(f: float) -> str:
    """labels.FormatOpenMetricsFloat: Go's shortest 'g' format, with ``.0`` on integers."""
    if f == 1:
        return "1.0"
    if f == 0:
        return "0.0"
    if f == -1:
        return "-1.0"
    if math.isnan(f):
        return "NaN"
    if math.isinf(f):
        return "+Inf" if f > 0 else "-Inf"
    sign, digit_t, exp = Decimal(repr(f)).normalize().as_tuple()
    digits = "".join(map(str, digit_t))
    nd = len(digits)
    dp = nd + int(exp)
    x = dp - 1
    neg = "-" if sign else ""
    if x < -4 or x >= 6:  # Go: %e when exp < -4 || exp >= eprec (6 for the shortest form)
        mant = digits[0] + ("." + digits[1:] if nd > 1 else "")
        return f"{neg}{mant}e{'-' if x < 0 else '+'}{abs(x):02d}"
    if dp <= 0:
        s = "0." + "0" * -dp + digits
    elif dp >= nd:
        s = digits + "0" * (dp - nd)
    else:
        s = digits[:dp] + "." + digits[dp:]
    if "." not in s:
        s += ".0"
    return neg + s


_HEX_FLOAT_RE = re.compile(r"0[xX](?:[0-9a-fA-F]+\.?[0-9a-fA-F]*|\.[0-9a-fA-F]+)[pP][+-]?[0-9]+")


def _go_parse_float_loose(v: str) -> float | None:
    """strconv.ParseFloat itself (what le/quantile go through): also ``_`` groups and hex."""
    try:
        return parse_value(v)
    except ValueError:
        pass
    if not v.isascii():
        return None
    body = v[1:] if v[:1] in ("+", "-") else v
    if "_" in body and not _underscore_ok(body):
        return None
    body = body.replace("_", "")
    neg = v.startswith("-")
    if _HEX_FLOAT_RE.fullmatch(body):
        try:
            f = float.fromhex(body)
        except OverflowError:
            return None
        return None if math.isinf(f) else (-f if neg else f)
    try:
        return parse_value(("-" if neg else "") + body) if body != v else None
    except ValueError:
        return None


def _underscore_ok(s: str) -> bool:
    """Go's underscoreOK: ``_`` only between digits (or after a base prefix)."""
    saw = "^"
    i = 0
    hexa = False
    if len(s) >= 2 and s[0] == "0" and s[1].lower() in "box":
        i, saw, hexa = 2, "0", s[1].lower() == "x"
    while i < len(s):
        c = s[i]
        if c.isdigit() or (hexa and c.lower() in "abcdef"):
            saw = "0"
        elif c == "_":
            if saw != "0":
                return False
            saw = "_"
        else:
            if saw == "_":
                return False
            saw = "!"
        i += 1
    return saw != "_"


def normalize_labels(mtype: str, labels: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Prometheus 3's normalizeFloatsInLabelValues for the last TYPE line's type."""
    want = "le" if mtype == "histogram" else "quantile" if mtype == "summary" else None
    if want is None:
        return labels
    out = []
    for k, v in labels:
        if k == want:
            f = _go_parse_float_loose(v)
            if f is not None:
                v = format_om_float(f)
        out.append((k, v))
    return out


def _om_seconds_to_ms(tok: str, what: str) -> int:
    try:
        ts = parse_value(tok)
    except ValueError:
        raise LineError(f"invalid {what} {tok!r}") from None
    if math.isnan(ts) or math.isinf(ts):
        raise LineError(f"invalid {what} {tok!r}")
    ms = ts * 1000
    # Go's int64(float) truncates; out of range it yields the minimum on amd64 (then out of bounds)
    return int(ms) if -9.223372036854776e18 <= ms < 9.223372036854776e18 else INT64_MIN


@dataclass
class LenientState:
    """What the lenient parser remembers between lines of one body: the last TYPE's type
    (for ``le``/``quantile``), and the families with samples (the scrape cache's)."""

    fmt: str = FMT_TEXT
    mtype: str = ""
    with_samples: set[str] = field(default_factory=set)

    # ------------------------------------------------------------------ metadata

    def parse_meta(self, line: str) -> tuple[str, str, str] | None:
        """A comment line: (HELP|TYPE|UNIT, name, text), or None for a comment to skip."""
        if self.fmt == FMT_OPENMETRICS:
            return _om_meta(line)
        return _text_meta(line)

    def apply_meta(self, meta: tuple[str, str, str]) -> str:
        keyword, name, text = meta
        if keyword == "TYPE":
            self.mtype = text
        return name

    # ------------------------------------------------------------------ samples

    def sample(self, line: str) -> Sample:
        """Parse a sample line (raises LineError)."""
        s = _om_sample(line) if self.fmt == FMT_OPENMETRICS else _text_sample(line)
        if self.mtype in ("histogram", "summary") and s.labels:
            s.labels = normalize_labels(self.mtype, s.labels)
        return s


# ---------------------------------------------------------------------------- text 0.0.4


def _keyword(line: str, j: int, keywords: tuple[str, ...]) -> tuple[str, int]:
    """The 4-letter keyword at ``j`` as the lexer reads it in its comment state, which skips NUL
    bytes; returns it and the index after it (NULs skipped), or ("", j)."""
    word, p, n = "", j, len(line)
    while len(word) < 4 and p < n:
        if line[p] != "\x00":
            word += line[p]
        p += 1
    return (word, p) if word in keywords else ("", j)


# The usual HELP/TYPE line in one match; a line with NULs or that does not match takes the
# general path, which also words the errors.
_SIMPLE_TEXT_META_RE = re.compile(rf"[ \t]*#[ \t]+(HELP|TYPE)[ \t]+({_NAME})(.*)", re.DOTALL)


def _text_meta(line: str) -> tuple[str, str, str] | None:
    if "\x00" not in line:
        simple = _SIMPLE_TEXT_META_RE.match(line)
        if simple is not None:
            return _text_meta_text(simple.group(1), simple.group(2), simple.group(3))
    i = _BLANKS_RE.match(line).end()  # type: ignore[union-attr]
    j = _BLANKS_RE.match(line, i + 1).end()  # type: ignore[union-attr]
    if j == i + 1:
        return None  # "#" and no blank: an ordinary comment
    keyword, p = _keyword(line, j, ("HELP", "TYPE"))
    while line[p:p + 1] == "\x00":
        p += 1
    if not keyword or line[p:p + 1] not in (" ", "\t"):
        return None  # an ordinary comment
    k = p
    while line[k:k + 1] in (" ", "\t", "\x00"):  # HELP[\t ]+, read where NULs are skipped
        k += 1
    if line[k:k + 1] == '"':
        raise LineError("quoted (UTF-8) metric names are not supported")
    m = _NAME_RE.match(line, k)
    if m is None or line[m.end():m.end() + 1] == "\x00":
        raise LineError(f"expected metric name after {keyword}")
    return _text_meta_text(keyword, m.group(), line[m.end():])


def _text_meta_text(keyword: str, name: str, rest: str) -> tuple[str, str, str]:
    # promlex: blanks only are skipped, then {C}* is empty; else the text is all but its first character
    text = "" if not rest.strip(" \t") else rest[1:]
    if keyword == "TYPE":
        if text not in TEXT_TYPES:
            raise LineError(f"invalid metric type {text!r}")
    else:
        text = unescape(text, HELP_TEXT_ESCAPES)
    return keyword, name, text


def _text_labels(line: str, i: int) -> tuple[list[tuple[str, str]], int]:
    """promparse.parseLVals from just after ``{``: blanks anywhere, commas optional."""
    return _label_list(line, i, om=False, what="label", quoted=_QUOTED_RE, join_nuls=True)


def _label_list(
    line: str, i: int, *, om: bool, what: str, quoted: re.Pattern[str], join_nuls: bool
) -> tuple[list[tuple[str, str]], int]:
    """A label list from just after ``{``, as promparse (``om`` False: blanks anywhere, commas
    optional) or openmetricsparse (no blanks, a comma or ``}`` after each value, a trailing
    comma allowed) lexes it; ``what`` names the labels in errors, ``quoted`` is the value
    token, ``join_nuls`` whether NULs after it join it (``_after_nuls``)."""
    labels: list[tuple[str, str]] = []
    n = len(line)
    if not om:
        i = _BLANKS_RE.match(line, i).end()  # type: ignore[union-attr]
    while True:
        if i >= n:
            raise LineError(f"expected {what} name, got end of line")
        c = line[i]
        if c == "}":
            return labels, i + 1
        if c == '"':
            raise LineError("quoted (UTF-8) metric or label names are not supported")
        m = _LNAME_RE.match(line, i)
        if m is None:
            raise LineError(f"expected {what} name at column {i + 1}")
        name = m.group()
        i = m.end() if om else _BLANKS_RE.match(line, m.end()).end()  # type: ignore[union-attr]
        if line[i:i + 1] != "=":
            raise LineError(f"expected equal after {what} name {name!r}")
        i = i + 1 if om else _BLANKS_RE.match(line, i + 1).end()  # type: ignore[union-attr]
        q = quoted.match(line, i)
        if q is None:
            raise LineError(f"expected {what} value for {name!r}")
        end = _after_nuls(line, q.end()) if join_nuls else q.end()
        labels.append((name, unescape(line[i + 1:end - 1])))
        if om:
            i = end
            c = line[i:i + 1]
            if c == ",":
                i += 1
            elif c != "}":
                raise LineError(f"expected comma or brace close after {what} {name!r}")
        else:
            i = _BLANKS_RE.match(line, end).end()  # type: ignore[union-attr]
            if line[i:i + 1] == ",":
                i = _BLANKS_RE.match(line, i + 1).end()  # type: ignore[union-attr]


def _after_nuls(line: str, end: int) -> int:
    """The end of a label value token: the lexer reads the character after the closing quote
    while still in the label-value state, which skips NUL bytes, so they join the token (whose
    first and last characters are then cut: ``"c"<NUL>`` is the value ``c"``)."""
    while line[end:end + 1] == "\x00":
        end += 1
    return end


def _check_labels(labels: list[tuple[str, str]]) -> None:
    # the head appender: a repeated label name (``__name__`` too) fails the scrape
    names = {k for k, _ in labels}
    if len(names) != len(labels) or "__name__" in names:
        seen: set[str] = {"__name__"}
        for k, _ in labels:
            if k in seen:
                raise LineError(f"label name {k!r} is not unique")
            seen.add(k)


def _text_sample(line: str) -> Sample:
    m = _SIMPLE_TEXT_RE.fullmatch(line)
    if m is not None:
        name, inner, tok, ts_tok = m.groups()
        labels = [(k, unescape(v)) for k, v in _PAIR_RE.findall(inner)] if inner else []
        series_end = m.start(3) - 1
    else:
        n = len(line)
        i = _BLANKS_RE.match(line).end()  # type: ignore[union-attr]
        if i:
            # promparse takes the metric name from the start of the line: Prometheus 2 rejects the
            # blanks as part of an invalid name (3 would keep them in a UTF-8 name this store cannot hold)
            raise LineError("blanks before the metric name")
        if line[i:i + 1] == "{":
            raise LineError("quoted (UTF-8) metric names are not supported" if '"' in line[i:i + 2]
                            else "metric name not set")
        nm = _NAME_RE.match(line, i)
        if nm is None:
            raise LineError("expected a valid start token")
        name = nm.group()
        series_end = i = nm.end()
        labels = []
        j = _BLANKS_RE.match(line, i).end()  # type: ignore[union-attr]
        if line[j:j + 1] == "{":
            labels, series_end = _text_labels(line, j + 1)
            j = _BLANKS_RE.match(line, series_end).end()  # type: ignore[union-attr]
        vm = _TEXT_VALUE_RE.match(line, j)
        if vm is None:
            raise LineError(f"expected value after metric {name!r}")
        tok = vm.group()
        k = _BLANKS_RE.match(line, vm.end()).end()  # type: ignore[union-attr]
        ts_tok = None
        if k < n:
            tm = _DIGITS_RE.match(line, k) if k > vm.end() else None
            if tm is None:
                raise LineError(f"expected timestamp or new record after value {tok!r}")
            ts_tok = tm.group()
            if _BLANKS_RE.match(line, tm.end()).end() < n:  # type: ignore[union-attr]
                raise LineError("expected next entry after timestamp")
    try:
        value = parse_value(tok)
    except ValueError:
        raise LineError(f"invalid value {tok!r} for {name!r}") from None
    ts = None
    if ts_tok is not None:
        ts = int(ts_tok) if len(ts_tok) < 40 else INT64_MAX + 1
        if ts > INT64_MAX:
            raise LineError(f"timestamp {ts_tok!r} out of range")
    _check_labels(labels)
    return Sample(name, labels, value, ts, line[:series_end], tok)


# ---------------------------------------------------------------------------- OpenMetrics


def _om_meta(line: str) -> tuple[str, str, str]:
    keyword, p = _keyword(line, 2, ("HELP", "TYPE", "UNIT")) if line.startswith("# ") else ("", 2)
    while line[p:p + 1] == "\x00":
        p += 1
    if not keyword or line[p:p + 1] != " ":
        if line.startswith("# EOF"):
            raise LineError("unexpected data after # EOF")
        raise LineError("expected a valid start token (only # HELP, # TYPE, # UNIT and # EOF comments)")
    p += 1
    while line[p:p + 1] == "\x00":  # the character after "HELP " is still read in the comment state
        p += 1
    if line[p:p + 1] == '"':
        raise LineError("quoted (UTF-8) metric names are not supported")
    m = _NAME_RE.match(line, p)
    if m is None:
        raise LineError(f"expected metric name after {keyword}")
    name = m.group()
    rest = line[m.end():]
    if not rest.startswith(" "):
        raise LineError(f"expected text in {keyword}")
    text = rest[1:]
    if keyword == "TYPE":
        if text not in OM_TYPES:
            raise LineError(f"invalid metric type {text!r}")
    elif keyword == "UNIT":
        if text and not (name.endswith(text) and len(name) > len(text) and name[-len(text) - 1] == "_"):
            raise LineError(f"unit {text!r} not a suffix of metric {name!r}")
    else:
        text = unescape(text)
    return keyword, name, text


def _om_labels(line: str, i: int, exemplar: bool) -> tuple[list[tuple[str, str]], int]:
    """openmetricsparse.parseLVals from just after ``{``: no blanks, trailing comma allowed."""
    if exemplar:
        return _label_list(line, i, om=True, what="exemplar label", quoted=_OM_EXEMPLAR_QUOTED_RE, join_nuls=False)
    return _label_list(line, i, om=True, what="label", quoted=_OM_QUOTED_RE, join_nuls=True)


def _om_sample(line: str) -> Sample:
    m = _SIMPLE_OM_RE.match(line)
    if m is not None:
        name, inner, tok = m.groups()
        labels = [(k, unescape(v)) for k, v in _PAIR_RE.findall(inner)] if inner else []
        series_end = m.start(3) - 1
        i = m.end()
    else:
        if line[:1] == "{":
            raise LineError("quoted (UTF-8) metric names are not supported" if line[1:2] == '"'
                            else "metric name not set")
        nm = _NAME_RE.match(line)
        if nm is None:
            raise LineError("expected a valid start token")
        name = nm.group()
        series_end = nm.end()
        labels = []
        if line[series_end:series_end + 1] == "{":
            labels, series_end = _om_labels(line, series_end + 1, False)
        vm = _OM_FIELD_RE.match(line, series_end + 1) if line[series_end:series_end + 1] == " " else None
        if vm is None:
            raise LineError(f"expected value after metric {line[:series_end]!r}")
        tok = vm.group()
        i = vm.end()
    try:
        value = parse_value(tok)
    except ValueError:
        raise LineError(f"invalid value {tok!r} for {name!r}") from None
    ts = None
    exemplar = None
    n = len(line)
    if i < n:
        if line.startswith(" # {", i):
            exemplar = _om_exemplar(line, i + 4)
        else:
            tm = _OM_FIELD_RE.match(line, i + 1) if line[i] == " " else None
            if tm is None:
                raise LineError("expected timestamp or exemplar after the value")
            ts = _om_seconds_to_ms(tm.group(), "timestamp")
            i = tm.end()
            if i < n:
                if not line.startswith(" # {", i):
                    raise LineError("expected next entry after timestamp")
                exemplar = _om_exemplar(line, i + 4)
    _check_labels(labels)
    return Sample(name, labels, value, ts, line[:series_end], tok, exemplar)


def _om_exemplar(line: str, i: int) -> tuple[list[tuple[str, str]], float, float | None]:
    labels, i = _om_labels(line, i, True)
    vm = _OM_FIELD_RE.match(line, i + 1) if line[i:i + 1] == " " else None
    if vm is None:
        raise LineError("expected value after exemplar labels")
    try:
        ev = parse_value(vm.group())
    except ValueError:
        raise LineError(f"invalid exemplar value {vm.group()!r}") from None
    i = vm.end()
    ets = None
    if i < len(line):
        tm = _OM_FIELD_RE.match(line, i + 1) if line[i] == " " else None
        if tm is None:
            raise LineError("expected timestamp or end of line after the exemplar value")
        _om_seconds_to_ms(tm.group(), "exemplar timestamp")  # the checks; kept in seconds
        ets = parse_value(tm.group())
        if tm.end() < len(line):
            raise LineError("expected next entry after exemplar timestamp")
    return labels, ev, ets
