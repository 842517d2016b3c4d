"""The per-target scrape cache: parse a body into series and values at little more than a float per line.

Most lines of a scrape repeat the series text of the previous scrape. ``ScrapeCache``
keeps, per series text (the bytes before the value), the final ``Series`` after target
labels, ``metric_relabel_configs`` and limits (or ``None`` when relabelling drops it).
The hot loop splits each line at its last space, looks the left part up and parses the
right part as a float; anything it does not recognise (comments, new series, lines with
timestamps or exemplars) goes through the full parser in ``scraper.exposition``.

Cached entries are only valid under the same metadata (HELP/TYPE/UNIT lines) before
them: a running hash of those lines is stored with each entry and compared on use.
Each entry also carries the scrape generation that last saw it, which gives series
added, duplicates and the series that disappeared (staleness) without per-scrape sets.

On top of that, a clean scrape leaves a ``LayoutPlan``: when the next body has the same
lines except for the sample values (the usual case), its values are read with C-level
``map`` calls and the series list of the planned scrape is reused as is.

Both cached paths read values with C-speed ``float()`` (the plan: a segment's values in one
call of ``scraper.gofloat.json_decimals`` when it can) and keep only those ``scraper.gofloat``
vouches for as what Prometheus reads (plain ASCII decimals that do not overflow, its Inf/NaN
spellings); any other line (``1_0``, ``1\r`` of a CRLF body, a trailing tab in OpenMetrics)
goes to the full parser, so a body gets the same verdict and samples whatever the target's
history (``tests/test_exposition_differential.py``).
"""

from __future__ import annotations

import functools
import operator
import sys
import time
from array import array
from collections.abc import Callable, Container, Generator, Sequence
from dataclasses import dataclass, field
from itertools import repeat
from typing import cast

from cachetools import LRUCache

from common.interning import InternTable
from scraper.config import ScrapeConfig
from scraper.exposition import (
    TEXT_PLAIN_COMMENT_RE,
    ParsedSample,
    ParseError,
    decode_line,
    join_quoted_lines,
    lenient_meta,
    lenient_sample,
    parse,
    split_body,
)
from scraper.gofloat import json_decimals, special_ok, vouched
from scraper.lenient import FMT_OPENMETRICS, LenientState
from scraper.relabel import relabel
from storage.model import METRIC_NAME, METRIC_NAME_RE, LayoutSeries, Series

SLICE_LINES = 1000  # lines between looks at the clock
YIELD_AFTER_S = 0.005  # give the event loop a turn at least this often
META_CACHE_MAX_LINE = 4096


_MISSING = object()
META_CACHE_SIZE = 100_000  # comment lines (HELP/TYPE/UNIT) remembered per format, least recently used forgotten

# Per format: comment line -> its parsed syntax (None for an ordinary comment). A line's syntax
# depends on the line and the format only, so every target's scrape cache shares these: the
# targets of one exporter repeat the same HELP and TYPE lines (one copy, not one per target).
_METAS: dict[str, LRUCache[bytes, tuple[str, str, str] | None]] = {}


def meta_cache(fmt: str) -> LRUCache[bytes, tuple[str, str, str] | None]:
    """The shared comment-line cache of a format."""
    metas = _METAS.get(fmt)
    if metas is None:
        metas = _METAS[fmt] = LRUCache(maxsize=META_CACHE_SIZE)
    return metas

# Label pairs shared by every series that has them ("job", "mode"="user", ...): one tuple each.
intern_pair: InternTable[tuple[str, str]] = InternTable(2_000_000)

# Line texts the layout plans keep (a sample line's text up to its value, a comment line): the
# targets of one exporter print the same texts (the target's labels are added after), so every
# plan shares one copy of each. When the table is full, the texts no plan holds any more go.
_TEXTS: dict[bytes, bytes] = {}
_TEXTS_MAX = 1_000_000


def _refcounts(table: dict[bytes, bytes]) -> list[tuple[bytes, int]]:
    return [(k, sys.getrefcount(k)) for k in table]


def _unused_refs() -> int:
    """The reference count ``_refcounts`` sees of a text only its table holds."""
    probe: dict[bytes, bytes] = {}
    text = b"%d" % id(probe) + b" probe"
    probe[text] = text
    del text
    return _refcounts(probe)[0][1]


def intern_text(text: bytes) -> bytes:
    """The one shared instance of a line text (bounded: see ``_TEXTS``)."""
    got = _TEXTS.get(text)
    if got is None:
        if len(_TEXTS) >= _TEXTS_MAX:
            unused = _unused_refs()
            for k, refs in _refcounts(_TEXTS):
                if refs <= unused:
                    del _TEXTS[k]
            if len(_TEXTS) >= _TEXTS_MAX // 2:
                _TEXTS.clear()  # mostly in use: start afresh rather than sweep again soon
        _TEXTS[text] = got = text
    return got


# entry slots
_CTX, _SERIES, _GEN, _FAMILY, _EXPLICIT_TS, _KEY = range(6)
PLAN_SLICE_LINES = 20_000  # lines per step of the layout check (a yield may follow each)


class ScrapeError(Exception):
    """A scrape rejected as a whole; ``reason`` is a short label for metrics."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(slots=True)
class ScrapeOutcome:
    """What one body turned into."""

    series: list[Series] | LayoutSeries = field(default_factory=list)  # a LayoutSeries: a plan's
    values: list[float] = field(default_factory=list)
    explicit_ts: list[tuple[int, int]] = field(default_factory=list)  # (index, ms) overrides
    stale: list[Series] = field(default_factory=list)
    samples_scraped: int = 0
    series_added: int = 0
    added: list[int] = field(default_factory=list)  # indices of the samples of series new this scrape
    duplicates: int = 0
    # when ``series`` is the LayoutSeries of a plan this scrape made: its Series, made by this
    # scrape (``LayoutSeries.lent`` hands them to the writer, which indexes them)
    made: list[Series] | None = None

    def drop(self, rows: Container[int]) -> None:
        """Remove the samples at ``rows`` (indices into ``series``), keeping the explicit
        timestamps and new-series indices of the others pointing at them."""
        keep = [i for i in range(len(self.series)) if i not in rows]
        new_index = {old: new for new, old in enumerate(keep)}
        self.series = [self.series[i] for i in keep]
        self.values = [self.values[i] for i in keep]
        self.explicit_ts = [(new_index[i], ts) for i, ts in self.explicit_ts if i in new_index]
        self.added = [new_index[i] for i in self.added if i in new_index]


class _LineError(Exception):
    def __init__(self, line: bytes, err: ParseError | ScrapeError) -> None:
        self.line = line
        self.err = err


def _drop_repeated_series(out: ScrapeOutcome) -> bool:
    """Keep the first sample of a series that several lines map to (as Prometheus does: later
    ones are duplicates for the same timestamp). Returns whether any were found."""
    explicit = {i for i, _ in out.explicit_ts}
    ids: set[int] = set()
    repeated: list[int] = []
    for i, s in enumerate(out.series):
        if s.id in ids and i not in explicit:
            repeated.append(i)
        ids.add(s.id)
    if not repeated:
        return False
    out.drop(set(repeated))
    out.duplicates += len(repeated)
    return True


def _read_values(raws: list[bytes]) -> list[float] | None:
    """The values Prometheus reads from ``raws``, or None when one is not what ``float()`` reads
    (ValueError when ``float()`` refuses one): the whole list in one C call when they are all
    decimals JSON spells alike, else ``float()`` each and ``vouched``."""
    got = json_decimals(raws)
    if got is None:
        got = list(map(float, raws))
        if not vouched(raws, got):
            return None
    return got


_INDICES: list[int] = []  # 0, 1, 2, ...: one int object per line index for every plan's getters


def _shared_indices(idx: list[int]) -> list[int]:
    """``idx`` (line indices) as the shared int objects: the plans of targets with the same
    layout hold one set of them, not an int per line each (ints above 256 are objects)."""
    top = max(idx, default=-1)
    if top >= len(_INDICES):
        _INDICES.extend(range(len(_INDICES), top + 1))
    return [_INDICES[i] for i in idx]


def _getter(idx: list[int]) -> Callable[[Sequence[bytes]], tuple[bytes, ...]]:
    """``itemgetter`` that always returns a tuple (also for 0 or 1 index)."""
    idx = _shared_indices(idx)
    if not idx:
        return lambda _seq: ()
    if len(idx) == 1:
        i = idx[0]
        return lambda seq: (seq[i],)
    return operator.itemgetter(*idx)


@dataclass(slots=True)
class _PlanSegment:
    """Up to PLAN_SLICE_LINES lines of a layout (indices relative to the segment start)."""

    start: int
    end: int
    other: Callable[[Sequence[bytes]], tuple[bytes, ...]]
    other_lines: tuple[bytes, ...]
    samples: Callable[[Sequence[bytes]], tuple[bytes, ...]]
    prefixes: tuple[bytes, ...]  # series text + " " of each kept sample line
    dropped: Callable[[Sequence[bytes]], tuple[bytes, ...]]
    dropped_prefixes: tuple[bytes, ...]
    kinds: bytes  # per line: 0 other, 1 sample, 2 dropped sample (the segment table's key has it anyway)

    def lines(self) -> list[bytes]:
        """The segment's lines with every sample value 0 (what ``_remake`` parses again)."""
        other = iter(self.other_lines)
        kept = iter(self.prefixes)
        dropped = iter(self.dropped_prefixes)
        return [next(other) if k == 0 else next(kept if k == 1 else dropped) + b"0" for k in self.kinds]


# Plan segments by content (start, line kinds, texts): the targets of one exporter with the same
# layout share one segment (its texts tuples and getters: ~24 bytes a line) instead of one each.
# When the table holds more than _SEGMENTS_MAX_LINES lines, the segments no plan holds go.
_SEGMENTS: dict[tuple, _PlanSegment] = {}
_SEGMENTS_MAX_LINES = 2_000_000
_segment_lines = 0


def _segment_refs(table: dict) -> list[tuple[tuple, int]]:
    return [(k, sys.getrefcount(v)) for k, v in table.items()]


def _sweep_segments() -> None:
    global _segment_lines
    probe = {(): _PlanSegment(0, 0, _getter([]), (), _getter([]), (), _getter([]), (), b"")}
    unused = _segment_refs(probe)[0][1]  # the count ``_segment_refs`` sees of a segment only its table holds
    for k, refs in _segment_refs(_SEGMENTS):
        if refs <= unused:
            del _SEGMENTS[k]
    if len(_SEGMENTS) and sum(v.end - v.start for v in _SEGMENTS.values()) >= _SEGMENTS_MAX_LINES // 2:
        _SEGMENTS.clear()  # mostly in use: start afresh rather than sweep again soon
    _segment_lines = sum(v.end - v.start for v in _SEGMENTS.values())


def _shared_segment(
    start: int, kinds: bytes, other_idx: list[int], other_lines: tuple[bytes, ...], sample_idx: list[int],
    prefixes: tuple[bytes, ...], dropped_idx: list[int], dropped_prefixes: tuple[bytes, ...],
) -> _PlanSegment:
    """The one segment of these lines (``kinds``: per line 0 other, 1 sample, 2 dropped)."""
    global _segment_lines
    key = (start, kinds, other_lines, prefixes, dropped_prefixes)
    seg = _SEGMENTS.get(key)
    if seg is None:
        if _segment_lines + len(kinds) > _SEGMENTS_MAX_LINES:
            _sweep_segments()
        seg = _PlanSegment(start, start + len(kinds), _getter(other_idx), other_lines, _getter(sample_idx),
                           prefixes, _getter(dropped_idx), dropped_prefixes, kinds)
        _SEGMENTS[key] = seg
        _segment_lines += len(kinds)
    return seg


@dataclass(slots=True)
class LayoutPlan:
    """A clean scrape's line layout: the full text of the lines that are not samples (comments,
    blank lines) and, for each sample line, its text up to the value; its series as ids.

    A body equal to it everywhere but in the sample values is the same scrape with new values:
    its series, their order, its validity and staleness (none) are the planned scrape's, and
    only the values need reading, which C-level ``map`` calls do without a per-line Python loop.

    The plan keeps no ``Series`` (issue #20 memory): ``series`` is a ``LayoutSeries`` of their
    ids, and whoever needs the ``Series`` themselves (a writer indexing them on a new day,
    stale markers, the cache entries when the plan goes) gets them by ``_remake``: the
    plan's lines, values set to 0, parsed again as the scrape that made the plan parsed them.
    """

    fmt: str
    n_lines: int
    segments: list[_PlanSegment]
    series: LayoutSeries
    samples_scraped: int
    target_labels: dict[str, str]
    config: ScrapeConfig

    def entries(self, gen: int) -> dict[bytes, list]:
        """The cache entries of the plan's sample lines, stamped ``gen`` as the scrape that made
        the plan left them (``ScrapeCache`` forgets its entries while a plan stands for them)."""
        entries, _series = _remake(self.fmt, self.segments, self.target_labels, self.config)
        for e in entries.values():
            e[2] = gen
        return entries

    def apply(self, lines: list[bytes]) -> Generator[None, None, ScrapeOutcome | None]:
        """The outcome for ``lines``, or None when the layout differs or a value is not a float."""
        removeprefix = bytes.removeprefix
        is_ = operator.is_
        om = self.fmt == FMT_OPENMETRICS
        values: list[float] = []
        clock = time.perf_counter
        last_yield = clock()
        whole = len(self.segments) == 1  # (the caller checked ``n_lines``): no copy of the lines
        try:
            for seg in self.segments:
                chunk = lines if whole else lines[seg.start:seg.end]
                if seg.other(chunk) != seg.other_lines:
                    return None
                kept = seg.samples(chunk)
                vals = list(map(removeprefix, kept, seg.prefixes))
                # removeprefix returns a line that does not start with its prefix itself (prefixes
                # are never empty; a match is a new object): one C pass of ``is`` says whether
                # every line had its own
                if any(map(is_, vals, kept)):
                    return None
                dropped = seg.dropped(chunk)
                if dropped:
                    dvals = list(map(removeprefix, dropped, seg.dropped_prefixes))
                    if any(map(is_, dvals, dropped)):
                        return None
                    if om and any(map(bytes.__contains__, dvals, repeat(b" "))):
                        return None
                    if _read_values(dvals) is None:
                        return None
                if om and any(map(bytes.__contains__, vals, repeat(b" "))):
                    return None  # OpenMetrics allows exactly one space before the value
                seg_values = _read_values(vals)
                if seg_values is None:
                    return None  # a value float() takes and Prometheus does not: the line parser says why
                if whole:
                    values = seg_values
                else:
                    values.extend(seg_values)
                if clock() - last_yield >= YIELD_AFTER_S:
                    yield
                    last_yield = clock()
        except ValueError:
            return None  # the line-by-line path says where and why
        return ScrapeOutcome(series=self.series, values=values, samples_scraped=self.samples_scraped)


class ScrapeCache:
    """Parsed-series cache and staleness tracker of one target's scrape loop."""

    def __init__(self, target_labels: dict[str, str], config: ScrapeConfig | None = None) -> None:
        self.target_labels = dict(target_labels)
        self.config = config or ScrapeConfig()
        self.entries: dict[bytes, list] = {}
        self.gen = 1
        self.prev_count = 0  # entries seen by the last successful scrape
        self.last_series: list[Series] | LayoutSeries = []  # series of the last successful scrape
        # per-scrape state used by the slow path
        self._state = LenientState()
        self._ctx = 0
        self._fam: str | None = None
        self._fmt = ""
        self._meta = meta_cache("")  # the format's shared comment-line cache, set per scrape
        self._aliased = False  # the last check found one series under two texts
        self._plan: LayoutPlan | None = None
        self._plans_made = 0
        self._released = False  # ``entries`` forgotten: the plan stands for them (``_drop_plan``)
        self._plan_misses = 0
        self._scrapes = 0
        self._join_quoted = False  # a body had label values over line breaks: join before parsing

    # ------------------------------------------------------------------ public

    def process(self, body: bytes, fmt: str) -> Generator[None, None, ScrapeOutcome]:
        """Parse ``body``; a generator that yields between chunks and returns the outcome.

        Raises ParseError or ScrapeError (limits); call ``failed()`` afterwards then.
        """
        gen = self.gen
        try:
            if fmt == FMT_OPENMETRICS and self.config.strict_openmetrics:
                parse(body, fmt, strict=True)
            lines = split_body(body, fmt)
            if self._join_quoted and fmt != FMT_OPENMETRICS:
                lines = join_quoted_lines(lines) or lines
            plan = self._plan
            if plan is not None and plan.fmt == fmt and plan.n_lines == len(lines):
                fast = yield from plan.apply(lines)
                if fast is not None:
                    self._plan_misses = 0
                    return fast  # same lines as the scrape the plan came from: stamps stay valid
                self._plan_misses += 1
            self._drop_plan()
            try:
                out = yield from self._run(lines, fmt, gen)
            except ParseError:
                joined = None if fmt == FMT_OPENMETRICS or self._join_quoted else join_quoted_lines(lines)
                if joined is None:
                    raise
                # a label value over a line break (promlex reads it): join such lines from now on
                self._join_quoted = True
                gen += 2  # a fresh generation: the failed pass stamped entries with ``gen``
                lines = joined
                out = yield from self._run(lines, fmt, gen)
        except BaseException:
            self._drop_plan()
            self.gen = gen + 2  # nothing carries this generation's "previous" stamp
            raise
        self.gen = gen + 1
        self._scrapes += 1
        if self._plan_misses < 3 or self._scrapes % 16 == 0:  # targets whose layout churns: try rarely
            self._plan = self._make_plan(lines, fmt, out)
            self._plans_made += 1
            if self._plan is not None:
                # the plan stands for the per-line entries (a key, a list and a dict slot per
                # series) and their series: they go until it misses (``_drop_plan``)
                self.entries = {}
                self._released = True
        if self._plan is not None:
            # the scrape's series as the plan's: nothing but this outcome keeps them (#20: a
            # warm-up's Series, kept until the next scrape, left ~13 MiB of holes per 100k)
            out.made = cast("list[Series]", out.series)
            out.series = self.last_series = self._plan.series
        else:
            self.last_series = out.series
        return out

    @property
    def layout(self) -> int | None:
        """After a scrape: a number that stays the same while bodies keep the comment and
        sample lines (values aside) of this one, None when not known (no layout plan)."""
        return self._plans_made if self._plan is not None else None

    def _drop_plan(self) -> None:
        """Forget the plan; the entries it stood for come back, stamped by the scrape that made it."""
        plan, self._plan = self._plan, None
        if plan is not None and self._released:
            self.entries = plan.entries(self.gen - 1)
        self._released = False

    def _make_plan(self, lines: list[bytes], fmt: str, out: ScrapeOutcome) -> LayoutPlan | None:
        """Record the line layout of a clean scrape so an identical layout skips the per-line work."""
        if out.duplicates or out.explicit_ts or self._aliased:
            return None
        get = self.entries.get
        segments: list[_PlanSegment] = []
        series: list[Series] = []
        n_samples = 0
        for start in range(0, len(lines), PLAN_SLICE_LINES):
            other_idx: list[int] = []
            other_lines: list[bytes] = []
            sample_idx: list[int] = []
            prefixes: list[bytes] = []
            dropped_idx: list[int] = []
            dropped_prefixes: list[bytes] = []
            chunk = lines[start:start + PLAN_SLICE_LINES]
            for i, line in enumerate(chunk):
                key, sep, _val = line.rpartition(b" ")
                e = get(key) if sep else None
                if e is None:
                    head = line.lstrip(b" \t")[:1]
                    if head and head != b"#":
                        return None  # a sample line the layout cannot carry (timestamp, exemplar, spacing)
                    other_idx.append(i)
                    other_lines.append(intern_text(line))
                elif e[1] is None:
                    dropped_idx.append(i)
                    dropped_prefixes.append(intern_text(e[5] + b" "))
                else:
                    sample_idx.append(i)
                    prefixes.append(intern_text(e[5] + b" "))
                    series.append(e[1])
            n_samples += len(sample_idx) + len(dropped_idx)
            kinds = bytearray(len(chunk))
            for i in sample_idx:
                kinds[i] = 1
            for i in dropped_idx:
                kinds[i] = 2
            segments.append(_shared_segment(
                start, bytes(kinds), other_idx, tuple(other_lines), sample_idx, tuple(prefixes), dropped_idx,
                tuple(dropped_prefixes),
            ))
        if series != out.series:
            return None
        ids = array("q", [s.id for s in series])
        remade = functools.partial(_remade_series, fmt, segments, self.target_labels, self.config)
        return LayoutPlan(fmt, len(lines), segments, LayoutSeries(ids, remade), n_samples, self.target_labels,
                          self.config)

    def failed(self) -> list[Series]:
        """The target is down: forget the last scrape; returns the series to mark stale."""
        last = self.last_series
        stale = last.build() if isinstance(last, LayoutSeries) else last
        self.last_series = []
        self.prev_count = 0
        self._drop_plan()
        return stale

    # ------------------------------------------------------------------ internals

    def _run(self, lines: list[bytes], fmt: str, gen: int) -> Generator[None, None, ScrapeOutcome]:  # noqa: PLR0915 - the scrape hot loop: locals bound once and steps inlined on purpose (a call per line costs)
        prev = gen - 1
        out_series: list[Series] = []
        out = ScrapeOutcome(series=out_series)
        out_values = out.values
        out_added = out.added
        sa = out_series.append
        va = out_values.append
        get = self.entries.get
        slow = self._slow
        self._state = LenientState(fmt)
        self._fmt = fmt
        self._meta = meta_cache(fmt)
        self._ctx = ctx = 0
        self._fam = fam = None
        # slow-path entries seen, series added, duplicates, slow entries not in the previous scrape,
        # slow-path sample lines
        self._slow_dups = 0
        self._counts = counts = [0, 0, 0, 0, 0]
        enter = self._enter
        hits = 0
        nonprev = 0
        sample_limit = self.config.sample_limit
        try:
            clock = time.perf_counter
            last_yield = clock()
            for start in range(0, len(lines), SLICE_LINES):
                for line in lines[start:start + SLICE_LINES]:
                    key, _, val = line.rpartition(b" ")
                    e = get(key)
                    if e is not None and e[0] == ctx:
                        try:
                            v = float(val)
                        except ValueError:
                            pass
                        else:
                            # float() of bytes takes ASCII only; Prometheus also refuses what it
                            # strips (blanks, CR), digit groups (95 is "_": an int needle is a
                            # memchr, a bytes one costs more), overflows and signed NaN
                            if (not special_ok(val)) if v - v else (95 in val or val.strip() is not val):
                                slow(line, out, gen)  # not a value Prometheus reads
                                ctx = self._ctx
                                fam = self._fam
                                continue
                            f = e[3]
                            if f is not fam:
                                fam = f
                                enter(f, line)
                            g = e[2]
                            if g != prev:
                                if g == gen:
                                    counts[2] += 1
                                    continue
                                nonprev += 1
                                if e[1] is not None:
                                    counts[1] += 1
                                    out_added.append(len(out_series))
                            e[2] = gen
                            s = e[1]
                            if s is not None:
                                sa(s)
                                va(v)
                            hits += 1
                            continue
                    slow(line, out, gen)
                    ctx = self._ctx
                    fam = self._fam
                if sample_limit and len(out_series) > sample_limit:
                    raise ScrapeError(
                        "sample_limit",
                        f"sample_limit exceeded: more than {sample_limit} samples after metric relabelling",
                    )
                if start + SLICE_LINES < len(lines) and clock() - last_yield >= YIELD_AFTER_S:
                    yield
                    last_yield = clock()
        except _LineError as le:
            # the failing line is in the current slice: find its number without walking the body
            no = next((start + i for i, x in enumerate(lines[start:start + SLICE_LINES], 1) if x is le.line), 0)
            if isinstance(le.err, ParseError):
                raise ParseError(no, le.err.reason) from None
            raise ScrapeError(le.err.reason, f"line {no}: {le.err}") from None
        seen = hits + counts[0]
        out.duplicates = counts[2]
        out.samples_scraped = hits + counts[4] + (counts[2] - self._slow_dups)
        if counts[1] or self._aliased:
            # two different texts for one series (e.g. after metric relabelling): first one wins
            self._aliased = _drop_repeated_series(out)
        out.series_added = len(out.added)
        if seen - (nonprev + counts[3]) < self.prev_count or len(self.entries) > 2 * seen + 1000:
            out.stale = self._sweep(gen, prev, cast("list[Series]", out.series))
        self.prev_count = seen
        return out

    def _sweep(self, gen: int, prev: int, current: list[Series]) -> list[Series]:
        """Series seen last scrape but not this one; drops entries this scrape did not see."""
        gone = [e for e in self.entries.values() if e[2] == prev and e[1] is not None and not e[4]]
        stale: list[Series] = []
        if gone:
            now = {s.id for s in current}
            done: set[int] = set()
            for e in gone:
                s = e[1]
                if s.id not in now and s.id not in done:
                    done.add(s.id)
                    stale.append(s)
        self.entries = {k: e for k, e in self.entries.items() if e[2] == gen}
        return stale

    def _enter(self, family: str, line: bytes) -> None:  # noqa: ARG002 - the hot loop's signature
        """A sample of another family than the previous line's."""
        self._state.with_samples.add(family)
        self._fam = family

    def _slow(self, line: bytes, out: ScrapeOutcome, gen: int) -> None:
        """Everything the hot loop did not take: metadata, blank lines, new or unusual samples."""
        st = self._state
        meta = self._meta.get(line, _MISSING) if len(line) <= META_CACHE_MAX_LINE else _MISSING
        try:
            om = st.fmt == FMT_OPENMETRICS
            if meta is _MISSING and not om and TEXT_PLAIN_COMMENT_RE.match(line):
                return  # an ordinary text-format comment: nothing to decode or remember
            if meta is _MISSING:
                text = decode_line(line, 0)
                head = text if om else text.lstrip(" \t")
                if not head:
                    if om:
                        raise ParseError(0, "blank line")
                    meta = None
                elif head[0] == "#":
                    meta = lenient_meta(st, text, 0)
                if meta is not _MISSING and len(line) <= META_CACHE_MAX_LINE:
                    self._meta[line] = cast("tuple[str, str, str] | None", meta)
            if meta is not _MISSING:
                if meta is not None:
                    st.apply_meta(cast("tuple[str, str, str]", meta))
                    self._ctx = hash((self._ctx, line))
                return
            p = lenient_sample(st, text, 0)
        except ParseError as exc:
            raise _LineError(line, exc) from None
        family = sys.intern(p.family)
        if family is not self._fam:
            self._enter(family, line)
        key = p.series_text.encode()
        e = self.entries.get(key)
        explicit = p.timestamp_ms is not None and self.config.honor_timestamps
        if e is None or e[0] != self._ctx:
            try:
                series = self._build(p)
            except ScrapeError as exc:
                raise _LineError(line, exc) from None
            e = [self._ctx, series, -1, family, explicit, key]
            self.entries[key] = e
        counts = self._counts
        counts[4] += 1
        g = e[2]
        if g == gen and not explicit:
            counts[2] += 1
            self._slow_dups += 1
            return
        if g != gen:
            counts[0] += 1
            if g != gen - 1:
                counts[3] += 1
                if e[1] is not None:
                    counts[1] += 1
                    out.added.append(len(out.series))
        e[2] = gen
        e[4] = explicit
        if e[1] is not None:
            cast("list[Series]", out.series).append(e[1])  # the slow path's outcome: a list
            out.values.append(p.value)
            if explicit and p.timestamp_ms is not None:  # explicit implies it; says so to mypy
                out.explicit_ts.append((len(out.series) - 1, p.timestamp_ms))

    def _build(self, p: ParsedSample) -> Series | None:
        """Target labels (honor_labels rules), metric relabelling and label limits for one series."""
        cfg = self.config
        labels = dict(p.labels)
        for k, v in self.target_labels.items():
            if k in labels:
                if cfg.honor_labels:
                    if labels[k] == "":
                        labels[k] = v
                    continue
                ek = "exported_" + k
                while ek in labels:
                    ek = "exported_" + ek
                labels[ek] = labels[k]
            labels[k] = v
        labels[METRIC_NAME] = p.name
        if cfg.metric_relabel_configs:
            res = relabel(labels, cfg.metric_relabel_configs)
            if res is None:
                return None
            labels = res
        final = tuple(sorted(intern_pair((k, v)) for k, v in labels.items() if v != ""))
        name = labels.get(METRIC_NAME, "")
        if not name or not METRIC_NAME_RE.match(name):
            return None
        if cfg.label_limit and len(final) > cfg.label_limit:
            raise ScrapeError(
                "label_limit",
                f"label_limit exceeded (metric {name!r}: {len(final)} labels, limit {cfg.label_limit})",
            )
        if cfg.label_name_length_limit or cfg.label_value_length_limit:
            for k, v in final:
                if cfg.label_name_length_limit and len(k) > cfg.label_name_length_limit:
                    raise ScrapeError(
                        "label_name_length_limit",
                        f"label_name_length_limit exceeded (metric {name!r}, label name {k[:50]!r}: "
                        f"{len(k)} characters, limit {cfg.label_name_length_limit})",
                    )
                if cfg.label_value_length_limit and len(v) > cfg.label_value_length_limit:
                    raise ScrapeError(
                        "label_value_length_limit",
                        f"label_value_length_limit exceeded (metric {name!r}, label {k!r}: value of "
                        f"{len(v)} characters, limit {cfg.label_value_length_limit})",
                    )
        return Series.of(final)


def _remake(
    fmt: str, segments: list[_PlanSegment], target_labels: dict[str, str], config: ScrapeConfig
) -> tuple[dict[bytes, list], list[Series]]:
    """The entries and series of a layout plan's scrape, made again: its lines (values 0) parsed
    by a fresh cache of the same target labels and config, as the scrape that made the plan
    parsed them (same lines in the same order: same contexts, families and series)."""
    scratch = ScrapeCache(target_labels, config)
    lines = [line for seg in segments for line in seg.lines()]
    run = scratch._run(lines, fmt, scratch.gen)
    try:
        while True:
            next(run)
    except StopIteration as stop:
        out: ScrapeOutcome = stop.value
    assert isinstance(out.series, list)
    return scratch.entries, out.series


def _remade_series(
    fmt: str, segments: list[_PlanSegment], target_labels: dict[str, str], config: ScrapeConfig
) -> list[Series]:
    """A layout plan's series made again (its ``LayoutSeries``' maker)."""
    return _remake(fmt, segments, target_labels, config)[1]
