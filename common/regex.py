"""User-supplied regular expressions: RE2 (Go's ``regexp`` syntax), linear-time matching.

Every regex a user writes -- PromQL label matchers (``__name__`` too) and ``label_replace``,
relabel configs, silences and notifier routes, alert template functions -- is compiled here:
Prometheus anchoring (``^(?s:...)$``), a bounded LRU cache of compiled programs, a compiled-program
memory budget, and errors that name the pattern and what RE2 refused. Matching time grows
linearly with the text, so no pattern can stall the process (``(a+)+$`` included).

``expand`` is Go's ``Regexp.Expand`` (``$1``, ``${1}``, ``$name``, ``${name}``, ``$$``);
``Regex.replace_all`` is Go's ``ReplaceAllString``, with an output-size budget.
"""

from __future__ import annotations

import functools
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

from cachetools import LRUCache

if TYPE_CHECKING:
    import re2
    from re2 import _re2  # type: ignore[attr-defined]  # the C++ binding (Match returns spans), which the stubs omit

# RE2's max_mem: the compiled program plus its DFA caches. 8 MiB is RE2's own default; Go has
# no such option but refuses about the same patterns through its repeat and nesting limits.
MAX_PROGRAM_MEMORY = 8 << 20
# Compiled regexes kept for reuse (label matchers repeat on every dashboard refresh); programs
# larger than CACHE_MAX_PROGRAM instructions are compiled per use, so the cache stays small.
CACHE_SIZE = 256
CACHE_MAX_PROGRAM = 4096
# Match results remembered per compiled regex (label values repeat across series), for texts
# up to MEMO_MAX_TEXT characters (the memo keeps its texts alive: this bounds its memory).
MEMO_SIZE = 2048
MEMO_MAX_TEXT = 128

_ANCHOR: Any = None  # _re2.RE2.Anchor, once a regex is compiled
_NO_SPAN = (-1, -1)
_META = frozenset("\\.+*?()|[]{}^$")


class RegexError(ValueError):
    """A regex RE2 refuses (bad or unsupported syntax, or over the program budget)."""


class RegexBudgetError(ValueError):
    """A replacement whose output would exceed its size budget."""


@functools.cache
def _binding() -> Any:
    """RE2's C++ binding, imported at the first compile: a process that compiles no regex (a
    scraper without relabelling) does without the module and the C++ libraries it loads
    (~2.8 MiB of RSS)."""
    global _ANCHOR
    from re2 import _re2  # type: ignore[attr-defined]  # noqa: PLC0415 - see the docstring

    _ANCHOR = _re2.RE2.Anchor
    return _re2


def _options() -> re2.Options:
    import re2  # noqa: PLC0415 - imported with the binding (_binding)

    o = re2.Options()
    o.log_errors = False
    o.max_mem = MAX_PROGRAM_MEMORY
    return o


def _encode(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass")


def _decode(b: bytes) -> str:
    try:
        return b.decode("utf-8", "surrogatepass")
    except UnicodeDecodeError:
        return b.decode("utf-8", "replace")


def _hint(reason: str) -> str:
    if "invalid perl operator" in reason:
        return " (RE2 has no lookahead, lookbehind or atomic groups)"
    if "invalid escape sequence: \\" in reason and reason[-1:].isdigit():
        return " (RE2 has no backreferences)"
    if "pattern too large" in reason:
        return f" (the compiled program is over the {MAX_PROGRAM_MEMORY >> 20} MiB budget)"
    return ""


def _fast_path(pattern: str) -> Callable[[str], bool] | None:
    """An equivalent plain-string test for the shapes users write most, under ``^(?s:...)$``."""
    if pattern == ".*":
        return lambda v: True
    if pattern == ".+":
        return lambda v: v != ""
    if not (_META & set(pattern)):
        return pattern.__eq__
    if "|" in pattern and not (_META - {"|"}) & set(pattern):
        alts = frozenset(pattern.split("|"))
        return alts.__contains__
    if pattern.endswith(".*") and not (_META & set(pattern[:-2])):
        prefix = pattern[:-2]
        return lambda v: v.startswith(prefix)
    if pattern.startswith(".*") and not (_META & set(pattern[2:])):
        suffix = pattern[2:]
        return lambda v: v.endswith(suffix)
    if len(pattern) >= 4 and pattern.startswith(".*") and pattern.endswith(".*") and not (_META & set(pattern[2:-2])):
        middle = pattern[2:-2]
        return lambda v: middle in v
    return None


@dataclass(eq=False)
class Regex:
    """One compiled user regex. ``anchored``: Prometheus's ``^(?s:pattern)$`` (matchers,
    relabelling, label_replace); otherwise the pattern as written (Go's ``MatchString``)."""

    pattern: str
    anchored: bool
    _prog: _re2.RE2 = field(repr=False)
    _fast: Callable[[str], bool] | None = field(default=None, repr=False)
    _memo: LRUCache[str, bool] = field(default_factory=lambda: LRUCache(maxsize=MEMO_SIZE), repr=False)

    def __reduce__(self) -> tuple:
        return _rebuild, (self.pattern, self.anchored)

    @property
    def groups(self) -> int:
        return cast(int, self._prog.NumberOfCapturingGroups())  # the re2 binding is untyped

    @functools.cached_property
    def groupindex(self) -> dict[str, int]:
        return {_decode(name): i for name, i in self._prog.NamedCapturingGroups()}

    def _spans(self, b: bytes, anchor: _re2.RE2.Anchor, pos: int = 0) -> list[tuple[int, int]] | None:
        spans = self._prog.Match(anchor, b, pos, len(b))
        return None if spans[0] == _NO_SPAN else spans

    def matches(self, text: str) -> bool:
        """Anchored: the whole text matches; unanchored: the pattern occurs in it."""
        if self._fast is not None:
            return self._fast(text)
        if len(text) > MEMO_MAX_TEXT:
            return self._spans(_encode(text), _ANCHOR.UNANCHORED) is not None
        hit = self._memo.get(text)
        if hit is None:
            hit = self._spans(_encode(text), _ANCHOR.UNANCHORED) is not None
            self._memo[text] = hit
        return hit

    def scan(self, data: bytes, pos: int) -> list[tuple[int, int]] | None:
        """A lexer's step: the spans (byte offsets into UTF-8 ``data``; (-1, -1) for a group that
        took no part) of a match starting exactly at byte ``pos``, or None."""
        spans = self._prog.Match(_ANCHOR.ANCHOR_START, data, pos, len(data))
        return None if spans[0] == _NO_SPAN else spans

    def groups_of(self, text: str) -> list[str | None] | None:
        """Group 0 and every capture group of the first match (None: no match; a group that took
        no part is None)."""
        b = _encode(text)
        spans = self._spans(b, _ANCHOR.UNANCHORED)
        if spans is None:
            return None
        return [None if s == _NO_SPAN else _decode(b[s[0] : s[1]]) for s in spans]

    def expand(self, template: str, groups: Sequence[str | None]) -> str:
        return expand(template, groups, self.groupindex)

    def replace_all(self, text: str, template: str, max_size: int | None = None,
                    deadline: float | None = None) -> str:
        """Go's ``ReplaceAllString``: every non-overlapping match replaced by ``template``
        expanded; an empty match right after a match is not replaced. RegexBudgetError when
        the result would be longer than ``max_size`` characters or ``time.monotonic()`` passes
        ``deadline``."""
        b = _encode(text)
        names = self.groupindex
        refs = any(ref is not None for _, ref in _template_parts(template))
        out: list[str] = []
        count = 0
        size = 0
        last_end = 0
        pos = 0
        n = len(b)
        while pos <= n:
            spans = self._spans(b, _ANCHOR.UNANCHORED, pos)
            if spans is None:
                break
            start, end = spans[0]
            count += 1
            if deadline is not None and not count & 0x3FF and time.monotonic() > deadline:
                raise RegexBudgetError("replacement over its time budget")
            piece = _decode(b[last_end:start])
            if end > last_end or start == 0:
                groups = [None if s == _NO_SPAN else _decode(b[s[0] : s[1]]) for s in spans] if refs else ()
                piece += expand(template, groups, names)
            size += len(piece)
            if max_size is not None and size > max_size:
                raise RegexBudgetError(f"replacement output over {max_size} characters")
            out.append(piece)
            last_end = end
            width = _utf8_width(b, pos)
            if pos + width > end:
                pos += width
            elif pos + 1 > end:
                pos += 1
            else:
                pos = end
        tail = _decode(b[last_end:])
        if max_size is not None and size + len(tail) > max_size:
            raise RegexBudgetError(f"replacement output over {max_size} characters")
        out.append(tail)
        return "".join(out)


def _utf8_width(b: bytes, pos: int) -> int:
    if pos >= len(b):
        return 0
    lead = b[pos]
    if lead < 0x80:
        return 1
    if lead >= 0xF0:
        return 4
    if lead >= 0xE0:
        return 3
    if lead >= 0xC0:
        return 2
    return 1


def expand(template: str, groups: Sequence[str | None], names: dict[str, int]) -> str:
    """Go's ``Regexp.Expand`` over ``groups`` (group 0 first): ``$1``/``${1}``/``$name``/``${name}``;
    an unknown or unmatched group is ''; ``$$`` is ``$``; a malformed reference stays literal."""
    if "$" not in template:
        return template
    out: list[str] = []
    for literal, ref in _template_parts(template):
        out.append(literal)
        if ref is not None:
            idx = ref if isinstance(ref, int) else names.get(ref, -1)
            if 0 <= idx < len(groups):
                out.append(groups[idx] or "")
    return "".join(out)


@functools.lru_cache(maxsize=256)
def _template_parts(template: str) -> tuple[tuple[str, int | str | None], ...]:
    """``template`` as (literal, reference) pairs: a group number, a group name or None."""
    parts: list[tuple[str, int | str | None]] = []
    literal: list[str] = []
    i = 0
    n = len(template)
    while i < n:
        j = template.find("$", i)
        if j < 0:
            break
        literal.append(template[i:j])
        i = j + 1
        if i < n and template[i] == "$":
            literal.append("$")
            i += 1
            continue
        found = _extract(template, i)
        if found is None:
            literal.append("$")
            continue
        name, i = found
        num = _group_number(name)
        parts.append(("".join(literal), num if num >= 0 else name))
        literal = []
    literal.append(template[i:])
    parts.append(("".join(literal), None))
    return tuple(parts)


def _extract(t: str, i: int) -> tuple[str, int] | None:
    brace = i < len(t) and t[i] == "{"
    j = i + 1 if brace else i
    k = j
    while k < len(t) and (t[k].isalpha() or t[k].isdecimal() or t[k] == "_"):
        k += 1
    if k == j:
        return None
    name = t[j:k]
    if brace:
        if k >= len(t) or t[k] != "}":
            return None
        k += 1
    return name, k


def _group_number(name: str) -> int:
    if not name.isascii() or not name.isdigit() or (name[0] == "0" and len(name) > 1) or len(name) > 8:
        return -1
    return int(name)


_cache: OrderedDict[tuple[str, bool], Regex] = OrderedDict()
_cache_lock = threading.Lock()


def compile_regex(pattern: str, *, anchored: bool = True) -> Regex:
    """Compile a user regex with RE2 (cached); RegexError says what is wrong with it."""
    key = (pattern, anchored)
    with _cache_lock:
        rx = _cache.get(key)
        if rx is not None:
            _cache.move_to_end(key)
            return rx
    text = f"^(?s:{pattern})$" if anchored else pattern
    prog = _binding().RE2(_encode(text), _options())
    if not prog.ok():
        reason = _decode(prog.error())
        raise RegexError(f"error parsing regexp: {reason}{_hint(reason)}: `{pattern}`")
    rx = Regex(pattern, anchored, prog, _fast_path(pattern) if anchored else None)
    if prog.ProgramSize() <= CACHE_MAX_PROGRAM:
        with _cache_lock:
            _cache[key] = rx
            while len(_cache) > CACHE_SIZE:
                _cache.popitem(last=False)
    return rx


def _rebuild(pattern: str, anchored: bool) -> Regex:
    return compile_regex(pattern, anchored=anchored)
