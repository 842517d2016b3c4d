"""Exposition format parsers: Prometheus text 0.0.4 and OpenMetrics 1.0 text.

``parse(body, fmt)`` parses a whole body as the Prometheus server does (its lines go
through ``scraper.lenient``, a port of Prometheus's parsers, which the scrape cache in
``scraper.fastpath`` also runs on the lines it has not seen) and raises ``ParseError``
(``line N: reason``) on the first problem. With ``strict=True`` OpenMetrics is read by
``OMState`` here, which enforces the spec's grammar, and ``scraper.omcheck`` its value and
grouping rules (counter values non-negative, histogram bucket order, ``_count`` equals the
``+Inf`` bucket...). This module also frames bodies (``split_body``) for both.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

from scraper.lenient import (  # noqa: F401 - FMT_* are also this module's (the parsers' formats)
    FMT_OPENMETRICS,
    FMT_TEXT,
    HELP_TEXT_ESCAPES,
    INT64_MAX,
    INT64_MIN,
    LABEL_ESCAPES,
    OM_TYPES,
    LenientState,
    LineError,
    unescape,
)

# What Prometheus sends: prefer OpenMetrics, fall back to text 0.0.4.
ACCEPT_HEADER = (
    "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,"
    "text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
)

METRIC_NAME_RE = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
LABEL_NAME_RE = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
# OpenMetrics "realnumber": plain decimal, no hex, no underscores.
OM_DECIMAL_RE = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
OM_SPECIAL = {"+inf": math.inf, "-inf": -math.inf, "inf": math.inf, "+infinity": math.inf,
              "-infinity": -math.inf, "infinity": math.inf, "nan": math.nan}

# A text-format comment that is not HELP/TYPE: skipped without decoding (promlex: "#", blanks,
# the keyword and a blank make a HELP/TYPE line; anything else after "#" is a comment).
TEXT_PLAIN_COMMENT_RE = re.compile(rb"[ \t]*#(?![ \t]+(?:HELP|TYPE)[ \t])")
# Sample-name suffixes each OpenMetrics type owns ("" is the family name itself).
OM_SUFFIXES: dict[str, tuple[str, ...]] = {
    "counter": ("_total", "_created"),
    "gauge": ("",),
    "histogram": ("_bucket", "_count", "_sum", "_created"),
    "gaugehistogram": ("_bucket", "_gcount", "_gsum"),
    "summary": ("", "_count", "_sum", "_created"),
    "stateset": ("",),
    "info": ("_info",),
    "unknown": ("",),
}
EXEMPLAR_SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket",), "gaugehistogram": ("_bucket",)}
EXEMPLAR_MAX_RUNES = 128


class ParseError(ValueError):
    """A body that is not valid exposition text; ``str()`` is ``line N: reason``."""

    MAX_REASON = 240  # reasons quote the bad text: keep a pathological token from flooding last_error

    def __init__(self, line_no: int, reason: str) -> None:
        if len(reason) > self.MAX_REASON:
            reason = reason[: self.MAX_REASON] + "..."
        super().__init__(f"line {line_no}: {reason}")
        self.line_no = line_no
        self.reason = reason


@dataclass(slots=True)
class ParsedSample:
    """One sample line. ``labels`` excludes ``__name__`` and keeps exposition order."""

    name: str
    labels: list[tuple[str, str]]
    value: float
    timestamp_ms: int | None
    series_text: str  # the line up to (not including) the value, exactly as served
    family: str
    line_no: int = 0
    exemplar: tuple[list[tuple[str, str]], float, float | None] | None = None
    value_text: str = ""


def content_format(content_type: str | None) -> str:
    """Pick the parser from a response Content-Type (text 0.0.4 unless OpenMetrics)."""
    if content_type and content_type.split(";", 1)[0].strip().lower() == "application/openmetrics-text":
        return FMT_OPENMETRICS
    return FMT_TEXT


# ---------------------------------------------------------------------------- numbers


def parse_om_number(tok: str) -> float:
    """An OpenMetrics number: decimal or ±Inf/NaN; no hex, underscores or blanks; a decimal
    past the float64 range is an error (as Prometheus's parseFloat has it)."""
    if OM_DECIMAL_RE.fullmatch(tok):
        v = float(tok)
        if math.isinf(v):
            raise ValueError(tok)
        return v
    special = OM_SPECIAL.get(tok.lower())
    if special is None:
        raise ValueError(tok)
    return special


def om_timestamp_ms(tok: str) -> int:
    """OpenMetrics timestamps are seconds (maybe fractional); returns milliseconds."""
    if not OM_DECIMAL_RE.fullmatch(tok) or math.isinf(float(tok)):
        raise ValueError(tok)
    if "e" in tok or "E" in tok or len(tok) > 15:
        from decimal import Decimal

        d = Decimal(tok)
        if d.adjusted() > 17:  # |seconds| >= 1e18 is past int64 ms: saturate, never build a huge int
            return INT64_MAX if d > 0 else INT64_MIN
        ms = int((d * 1000).to_integral_value())
    else:
        ms = round(float(tok) * 1000)
    # Valid OpenMetrics (the conformance suite has a 20-digit timestamp) but no int64 millisecond
    # time: saturate, as Prometheus' float->int64 conversion does; storage then sees an absurd time.
    return min(max(ms, INT64_MIN), INT64_MAX)


# ---------------------------------------------------------------------------- labels


# the inside of a double-quoted label value: runs of plain characters and backslash escapes
_QUOTED_BODY_RE = re.compile(r'[^"\\]*(?:\\.[^"\\]*)*', re.DOTALL)


def parse_label_set(s: str, i: int, line_no: int) -> tuple[list[tuple[str, str]], int]:
    """Parse an OpenMetrics ``{...}`` (strict: no blanks, no trailing comma, unknown escapes
    kept as written) starting just after the ``{``; returns labels and the index after ``}``."""
    labels: list[tuple[str, str]] = []
    seen: set[str] = set()
    n = len(s)
    after_comma = False
    while True:
        if i >= n:
            raise ParseError(line_no, "unterminated label set (missing '}')")
        if s[i] == "}":
            if after_comma:
                raise ParseError(line_no, "trailing comma in label set")
            return labels, i + 1
        if labels and not after_comma:
            raise ParseError(line_no, f"expected ',' or '}}' in label set at column {i + 1}")
        m = LABEL_NAME_RE.match(s, i)
        if m is None:
            raise ParseError(line_no, f"invalid label name at column {i + 1}")
        name = m.group()
        i = m.end()
        if i >= n or s[i] != "=":
            raise ParseError(line_no, f"expected '=' after label name {name!r}")
        i += 1
        if i >= n or s[i] != '"':
            raise ParseError(line_no, f"label {name!r} value must be a double-quoted string")
        start = i + 1
        q = _QUOTED_BODY_RE.match(s, start).end()  # type: ignore[union-attr]
        if q >= n or s[q] != '"':
            raise ParseError(line_no, f"unterminated value of label {name!r}")
        value = unescape(s[start:q])
        i = q + 1
        if name == "__name__":
            raise ParseError(line_no, "label name '__name__' is reserved")
        if name in seen:
            raise ParseError(line_no, f"duplicate label name {name!r}")
        seen.add(name)
        labels.append((name, value))
        after_comma = False
        if i < n and s[i] == ",":
            after_comma = True
            i += 1


def _unescape_help(raw: str, text: bool, line_no: int) -> str:  # noqa: ARG001 - kept for callers
    """HELP text: text 0.0.4 knows \\\\ and \\n, OpenMetrics also \\". Unknown escapes stay as
    written in both, as the Prometheus server has them."""
    return unescape(raw, HELP_TEXT_ESCAPES if text else LABEL_ESCAPES)


# The common shape of a series, matched in one go: name{a="x",b="y"} with no blanks; anything
# else (blanks, errors) goes through the general parser, which also words the errors.
_PAIR = r'[a-zA-Z_][a-zA-Z0-9_]*="[^"\\]*(?:\\.[^"\\]*)*"'
_OM_SERIES_RE = re.compile(rf"([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{{((?:{_PAIR}(?:,{_PAIR})*)?)\}})?(?= |$)")
_PAIR_RE = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="([^"\\]*(?:\\.[^"\\]*)*)"')


def _simple_series(rx: re.Pattern[str], line: str, line_no: int) -> tuple[str, list[tuple[str, str]], int] | None:
    """(name, labels, end) for a plainly written series, or None to use the general parser."""
    m = rx.match(line)
    if m is None:
        return None
    inner = m.group(2)
    if not inner:
        return m.group(1), [], m.end()
    pairs = _PAIR_RE.findall(inner)
    names = {k for k, _ in pairs}
    if len(names) != len(pairs) or "__name__" in names:
        return None  # the general parser says what is wrong
    if "\\" in inner:
        pairs = [(k, unescape(v)) for k, v in pairs]
    return m.group(1), pairs, m.end()


# ---------------------------------------------------------------------------- OpenMetrics


@dataclass
class OMState:
    """What the OpenMetrics parser remembers between lines of one body."""

    types: dict[str, str] = field(default_factory=dict)
    helps: set[str] = field(default_factory=set)
    units: set[str] = field(default_factory=set)
    families: list[str] = field(default_factory=list)  # in order of appearance
    owned_names: dict[str, str] = field(default_factory=dict)  # sample name -> family
    with_samples: set[str] = field(default_factory=set)
    current: str | None = None  # family of the last metadata or sample line

    def _open_family(self, name: str, kind: str | None, line_no: int) -> None:
        if name in self.owned_names and self.owned_names[name] != name:
            raise ParseError(line_no, f"metric family {name!r} clashes with family {self.owned_names[name]!r}")
        if kind is not None:
            for suffix in OM_SUFFIXES[kind]:
                owner = self.owned_names.get(name + suffix)
                if owner is not None and owner != name:
                    raise ParseError(line_no, f"metric family {name!r} clashes with family {owner!r}")
        if name not in self.families and name not in self.owned_names:
            self.families.append(name)
        for suffix in OM_SUFFIXES[kind or "unknown"]:
            self.owned_names.setdefault(name + suffix, name)
        self.owned_names[name] = name

    @staticmethod
    def parse_meta(line: str, line_no: int) -> tuple[str, str, str]:
        """Syntax of a ``# HELP|TYPE|UNIT`` line (any other ``#`` line is an error)."""
        if line == "# EOF":
            raise ParseError(line_no, "unexpected # EOF")
        parts = line.split(" ", 3)
        if len(parts) < 4 or parts[0] != "#" or parts[1] not in ("HELP", "TYPE", "UNIT"):
            if len(parts) >= 2 and parts[0] == "#" and parts[1] in ("HELP", "TYPE", "UNIT"):
                raise ParseError(line_no, f"{parts[1]} line needs a metric name and a value")
            raise ParseError(line_no, "invalid comment line (only # HELP, # TYPE, # UNIT and # EOF allowed)")
        _, keyword, name, rest = parts
        if not METRIC_NAME_RE.fullmatch(name):
            raise ParseError(line_no, f"invalid metric name {name!r} in {keyword} line")
        if keyword == "HELP":
            _unescape_help(rest, False, line_no)
        elif keyword == "TYPE":
            if rest not in OM_TYPES:
                raise ParseError(line_no, f"unknown metric type {rest!r} for {name!r}")
        elif rest and not name.endswith("_" + rest):
            raise ParseError(line_no, f"metric name {name!r} must end with its unit '_{rest}'")
        return keyword, name, rest

    def apply_meta(self, meta: tuple[str, str, str], line_no: int) -> str:
        """The per-body rules: no repeats, metadata before samples and contiguous, no clashes."""
        keyword, name, rest = meta
        if name in self.with_samples:
            raise ParseError(line_no, f"{keyword} line for {name!r} after its samples")
        if self.current != name and name in self.owned_names and self.owned_names[name] == name:
            raise ParseError(line_no, f"metadata for {name!r} is not contiguous with its family")
        if keyword == "HELP":
            if name in self.helps:
                raise ParseError(line_no, f"second HELP line for {name!r}")
            self.helps.add(name)
        elif keyword == "TYPE":
            if name in self.types:
                raise ParseError(line_no, f"second TYPE line for {name!r}")
            self.types[name] = rest
        else:
            if name in self.units:
                raise ParseError(line_no, f"second UNIT line for {name!r}")
            if rest and self.types.get(name) in ("info", "stateset"):
                raise ParseError(line_no, f"{self.types[name]} metric {name!r} cannot have a unit")
            self.units.add(name)
        self._open_family(name, self.types.get(name), line_no)
        if keyword == "TYPE":
            for suffix in OM_SUFFIXES[rest]:
                self.owned_names[name + suffix] = name
        self.current = name
        return name

    def metadata(self, line: str, line_no: int) -> str:
        """Handle a ``# HELP|TYPE|UNIT`` line (any other ``#`` line is an error)."""
        return self.apply_meta(self.parse_meta(line, line_no), line_no)

    def family_of(self, name: str) -> tuple[str, str]:
        """The family a sample name belongs to (the current one if it owns the name) and its type."""
        cur = self.current
        if cur is not None:
            kind = self.types.get(cur, "unknown")
            if name.startswith(cur):
                suffix = name[len(cur):]
                if suffix in OM_SUFFIXES[kind]:
                    return cur, kind
        return name, "unknown"

    def sample(self, line: str, line_no: int) -> ParsedSample:
        """Parse one OpenMetrics sample line (raises ParseError)."""
        n = len(line)
        simple = _simple_series(_OM_SERIES_RE, line, line_no)
        if simple is not None:
            name, labels, i = simple
        else:
            m = METRIC_NAME_RE.match(line)
            if m is None:
                raise ParseError(line_no, "invalid or missing metric name")
            name = m.group()
            i = m.end()
            labels = []
            if i < n and line[i] == "{":
                labels, i = parse_label_set(line, i + 1, line_no)
        series_end = i
        if i >= n or line[i] != " ":
            raise ParseError(line_no, f"expected a single space then the value after {line[:i]!r}")
        i += 1
        j = line.find(" ", i)
        if j < 0:
            j = n
        tok = line[i:j]
        try:
            value = parse_om_number(tok)
        except ValueError:
            raise ParseError(line_no, f"invalid value {tok!r}") from None
        ts = None
        exemplar = None
        if j < n:
            rest = line[j + 1:]
            if rest.startswith("# ") or rest == "#":
                exemplar = self._exemplar(rest, line_no)
            else:
                k = rest.find(" ")
                ttok = rest if k < 0 else rest[:k]
                try:
                    ts = om_timestamp_ms(ttok)
                except (ValueError, ArithmeticError):
                    raise ParseError(line_no, f"invalid timestamp {ttok!r}") from None
                if k >= 0:
                    ex = rest[k + 1:]
                    if not ex.startswith("# "):
                        raise ParseError(line_no, "unexpected text after timestamp")
                    exemplar = self._exemplar(ex, line_no)
        family, kind = self.family_of(name)
        if family != self.current or (kind == "unknown" and self.types.get(family, "unknown") != "unknown"):
            if family == self.current:
                raise ParseError(line_no, f"sample name {name!r} is not valid for {self.types[family]} "
                                          f"family {family!r}")
            if family in self.owned_names:
                raise ParseError(line_no, f"samples of {family!r} are not contiguous with their family")
            self._open_family(family, None, line_no)
            self.current = family
        if exemplar is not None and not any(name == family + s for s in EXEMPLAR_SUFFIXES.get(kind, ())):
            raise ParseError(line_no, f"exemplars are not allowed on {name!r} ({kind})")
        self._check_type_labels(name, family, kind, labels, line_no)
        return ParsedSample(name, labels, value, ts, line[:series_end], family, line_no, exemplar, tok)

    @staticmethod
    def _check_type_labels(name: str, family: str, kind: str, labels: list[tuple[str, str]],
                           line_no: int) -> None:
        d = dict(labels)
        if kind in ("histogram", "gaugehistogram") and name == family + "_bucket":
            le = d.get("le")
            if le is None:
                raise ParseError(line_no, f"{kind} bucket {name!r} without an 'le' label")
            try:
                bound = parse_om_number(le)
            except ValueError:
                raise ParseError(line_no, f"invalid le bound {le!r}") from None
            if math.isinf(bound) and le not in ("+Inf", "-Inf"):
                raise ParseError(line_no, f"non-canonical le bound {le!r} (use +Inf)")
            if math.isnan(bound):
                raise ParseError(line_no, "le bound cannot be NaN")
        elif kind == "summary" and name == family:
            q = d.get("quantile")
            if q is None:
                raise ParseError(line_no, f"summary quantile sample {name!r} without a 'quantile' label")
            try:
                qv = parse_om_number(q)
            except ValueError:
                raise ParseError(line_no, f"invalid quantile {q!r}") from None
            if not 0.0 <= qv <= 1.0:
                raise ParseError(line_no, f"quantile {q!r} outside [0, 1]")
        elif kind == "stateset" and family not in d:
            raise ParseError(line_no, f"stateset sample {name!r} needs a label named {family!r}")

    def _exemplar(self, text: str, line_no: int) -> tuple[list[tuple[str, str]], float, float | None]:
        # text starts with "# "
        if not text.startswith("# {"):
            raise ParseError(line_no, "exemplar must look like '# {labels} value [timestamp]'")
        labels, i = parse_label_set(text, 3, line_no)
        runes = sum(len(k) + len(v) for k, v in labels)
        if runes > EXEMPLAR_MAX_RUNES:
            raise ParseError(line_no, f"exemplar labels have {runes} characters, more than {EXEMPLAR_MAX_RUNES}")
        rest = text[i:]
        if not rest.startswith(" ") or rest == " ":
            raise ParseError(line_no, "exemplar needs a space and a value after its labels")
        parts = rest[1:].split(" ")
        if len(parts) > 2 or any(p == "" for p in parts):
            raise ParseError(line_no, "malformed exemplar value/timestamp")
        try:
            ev = parse_om_number(parts[0])
        except ValueError:
            raise ParseError(line_no, f"invalid exemplar value {parts[0]!r}") from None
        ets = None
        if len(parts) == 2:
            if not OM_DECIMAL_RE.fullmatch(parts[1]):
                raise ParseError(line_no, f"invalid exemplar timestamp {parts[1]!r}")
            ets = float(parts[1])
        return labels, ev, ets


# ---------------------------------------------------------------------------- whole bodies


def split_body(body: bytes, fmt: str) -> list[bytes]:
    """The lines of a body, after the format's framing checks (final newline / # EOF).

    Text, as Prometheus frames it: a NUL as the first non-blank of a line ends the body there
    (so does one in a comment written ``#`` without a blank after it), and the last line
    needs no newline (the parser appends one). A label value running over a line break is
    ``join_quoted_lines``'s, tried when the lines as split do not parse.
    """
    if fmt == FMT_OPENMETRICS:
        if body.endswith(b"# EOF\n"):
            content = body[:-6]
        elif body.endswith(b"# EOF"):
            content = body[:-5]
        else:
            idx = body.find(b"# EOF")
            line_no = body.count(b"\n", 0, idx) + 1 if idx >= 0 else body.count(b"\n") + 1
            if idx >= 0 and (idx == 0 or body[idx - 1:idx] == b"\n"):
                raise ParseError(line_no, "text after # EOF")
            raise ParseError(line_no, "missing # EOF at the end of the body")
        if content and not content.endswith(b"\n"):
            raise ParseError(content.count(b"\n") + 1, "# EOF must start a line")
        lines = content.split(b"\n")
        lines.pop()  # after the last newline (content ends with \n or is empty)
        return lines
    lines = body.split(b"\n")
    if b"\x00" in body:
        for i, line in enumerate(lines):
            head = line.lstrip(b" \t")
            if head[:1] == b"\x00":
                return lines[:i]
            if head[:1] == b"#" and b"\x00" in head:
                rest = head[1:].lstrip(b" \t")
                # "#" and no blank: the comment is read up to a NUL, which ends the input; "# " and
                # a NUL: the comment state starts on it and reads it as the end too
                if len(rest) == len(head) - 1 or rest[:1] == b"\x00":
                    return lines[:i]
    if not lines[-1]:
        lines.pop()  # Prometheus appends a newline to a text body: the last one is optional
    return lines


_ESCAPE_PAIR_RE = re.compile(rb"\\.")


def join_quoted_lines(lines: list[bytes]) -> list[bytes] | None:
    """Text sample lines whose quoted label value runs over a line break, joined as promlex
    reads them (``a{b="x<LF>y"} 1`` is one sample); None when no line needs it."""
    out: list[bytes] = []
    changed = False
    i, n = 0, len(lines)
    while i < n:
        line = lines[i]
        if b'"' in line and not line.lstrip(b" \t").startswith(b"#"):
            while _ESCAPE_PAIR_RE.sub(b"", line).count(b'"') % 2 and i + 1 < n:
                i += 1
                line += b"\n" + lines[i]
                changed = True
        out.append(line)
        i += 1
    return out if changed else None


def decode_line(raw: bytes, line_no: int) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ParseError(line_no, "invalid UTF-8") from None


def lenient_sample(st: LenientState, line: str, line_no: int) -> ParsedSample:
    """A sample line as Prometheus reads it (``scraper.lenient``), or ParseError."""
    try:
        s = st.sample(line)
    except LineError as exc:
        raise ParseError(line_no, str(exc)) from None
    return ParsedSample(s.name, s.labels, s.value, s.timestamp_ms, s.series_text, s.name, line_no, s.exemplar,
                        s.value_text)


def lenient_meta(st: LenientState, line: str, line_no: int) -> tuple[str, str, str] | None:
    """A comment line's syntax as Prometheus reads it: (keyword, name, text), None to skip."""
    try:
        return st.parse_meta(line)
    except LineError as exc:
        raise ParseError(line_no, str(exc)) from None


def parse(body: bytes, fmt: str = FMT_TEXT, *, strict: bool = False) -> list[ParsedSample]:
    """Parse a whole body into samples; ``ParseError`` says which line and why.

    The default is what the Prometheus server accepts (``scraper.lenient``); ``strict``
    OpenMetrics also enforces the spec's grammar and value rules (``OMState``, ``omcheck``).
    """
    lines = split_body(body, fmt)
    out: list[ParsedSample] = []
    if fmt == FMT_OPENMETRICS and strict:
        om = OMState()
        for no, raw in enumerate(lines, 1):
            line = decode_line(raw, no)
            if not line:
                raise ParseError(no, "blank line")
            if line[0] == "#":
                om.metadata(line, no)
            else:
                out.append(om.sample(line, no))
                om.with_samples.add(out[-1].family)
        from scraper.omcheck import check_families

        check_families(out, om.types)
        return out
    if fmt == FMT_OPENMETRICS:
        return _parse_lenient(lines, fmt)
    try:
        return _parse_lenient(lines, fmt)
    except ParseError:
        joined = join_quoted_lines(lines)
        if joined is None:
            raise
        return _parse_lenient(joined, fmt)


def _parse_lenient(lines: list[bytes], fmt: str) -> list[ParsedSample]:
    out: list[ParsedSample] = []
    st = LenientState(fmt)
    om_fmt = fmt == FMT_OPENMETRICS
    for no, raw in enumerate(lines, 1):
        if not om_fmt and TEXT_PLAIN_COMMENT_RE.match(raw):
            continue
        line = decode_line(raw, no)
        head = line if om_fmt else line.lstrip(" \t")
        if not head:
            if om_fmt:
                raise ParseError(no, "blank line")
            continue
        if head[0] == "#":
            meta = lenient_meta(st, line, no)
            if meta is not None:
                st.apply_meta(meta)
        else:
            out.append(lenient_sample(st, line, no))
    return out


def sample_sums(text: str) -> dict[str, float]:
    """Sums of each sample name over its label sets, from a /metrics body (``ringmon status``,
    benchmarks, drills). Each line is read on its own by ``parse`` (label values may hold any
    character); a line it cannot read is skipped."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        try:
            samples = parse(line.encode() + b"\n")
        except ParseError:
            continue
        for s in samples:
            out[s.name] = out.get(s.name, 0.0) + s.value
    return out
