"""Scrape frames on Cassandra (issue #20, cluster mode): which samples become frames, the
frames' XOR chains, and reading columns back out of them.

``CassandraStorage.write_columns`` stores a timestamp group of one target (at least
``FRAME_MIN_SAMPLES`` distinct series, not late) as ONE ``raw_frames`` row instead of a row
per sample; the rest keeps ``raw_recent`` rows. A frame is XOR'd with the target's previous
stored frame of the same layout and 5-minute key span (``KEY_SPAN_MS``), else whole, so a
read needs at most the key span's frames before its range. ``FrameChains`` is the writer's
state for that (the previous frame per target: 8 bytes per series). Readers decode a
target's frames per layout and keep the wanted columns (``frame_samples``).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, MutableMapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from storage.frames import (
    FRAME_MIN_SAMPLES,
    LayoutIndex,
    decode_delta_columns,
    decode_deltas,
    encode_delta,
    layout_id,
    positions,
    resolve_chains,
)

KEY_SPAN_MS = 300_000  # a frame chain restarts (a whole frame) at each 5-minute boundary
LAYOUT_REWRITE_MS = 6 * 3_600_000  # a layout row is re-written this often (it has a TTL)


@dataclass(frozen=True)
class Frame:
    """One scrape of one target: the values of ``ids`` (distinct, scrape order) at ``ts``;
    ``known_layout``: ``layout_id(ids)`` when the caller knows it (None: computed on use)."""

    ts: int
    ids: np.ndarray
    values: np.ndarray
    known_layout: int | None = None

    @property
    def layout(self) -> int:
        return layout_id(self.ids) if self.known_layout is None else self.known_layout


def split_frames(
    ids: np.ndarray, ts: np.ndarray, vals: np.ndarray, cutoff_ms: int, min_samples: int = FRAME_MIN_SAMPLES
) -> tuple[list[Frame], np.ndarray]:
    """The frames of a target's samples, and a mask of the samples left for rows (groups
    under ``min_samples``, groups older than ``cutoff_ms``, groups naming a series twice)."""
    rest = np.ones(ts.size, dtype=bool)
    if ts.size < min_samples:
        return [], rest
    if ts[0] == ts[-1] and bool((ts == ts[0]).all()):
        groups = [(int(ts[0]), np.arange(ts.size))]
    else:
        groups = [(int(t), np.flatnonzero(ts == t)) for t in np.unique(ts)]
    frames = []
    for t, idx in groups:
        if idx.size < min_samples or t < cutoff_ms:
            continue
        g_ids = ids[idx]
        if has_repeats(g_ids):
            continue
        frames.append(Frame(t, g_ids, vals[idx]))
        rest[idx] = False
    return frames, rest


def has_repeats(ids: np.ndarray) -> bool:
    """Whether ``ids`` names a value twice: a sort and one comparison (``np.unique`` of
    NumPy 2 costs ~10x that on a scrape's 1000 ids, ~0.2 us per sample of the scraper)."""
    ranked = np.sort(ids)
    return bool((ranked[1:] == ranked[:-1]).any())


@dataclass
class _Stored:
    ts: int
    layout: int
    values: np.ndarray


class FrameChains:
    """Per target, the last frame known stored: the base of the next one of its key span."""

    def __init__(self) -> None:
        self._last: dict[str, _Stored] = {}

    def base(self, target: str, ts: int, layout: int) -> tuple[int, np.ndarray] | None:
        last = self._last.get(target)
        if (last is None or last.layout != layout or last.ts >= ts
                or last.ts // KEY_SPAN_MS != ts // KEY_SPAN_MS):
            return None
        return last.ts, last.values

    def stored(self, target: str, ts: int, layout: int, values: np.ndarray) -> None:
        last = self._last.get(target)
        if last is None or last.ts < ts:
            self._last[target] = _Stored(ts, layout, values)

    def forget(self, target: str) -> None:
        """After a failed write: the next frame of the target is whole."""
        self._last.pop(target, None)


@dataclass(frozen=True, slots=True)
class EncodedFrame:
    """A frame as stored (and as the writer's spool records it): ``data`` is
    ``encode_delta`` of its ``width`` values, XOR'd with the frame at ``base_ts`` (None:
    whole); ``ids`` (the layout) is carried when the layout row is due to be (re)written."""

    ts: int
    base_ts: int | None
    layout_id: int
    width: int
    data: bytes
    ids: np.ndarray | None = None


class FrameEncoder:
    """Encodes a target's frames against its chain and says when a layout row is due.

    The writer encodes each frame once, before it spools it (``storage.writer``): spool
    order then guarantees a frame's base is stored no later than after a replay.
    ``CassandraStorage.write_columns`` (direct writes) uses its own encoder.
    """

    def __init__(self) -> None:
        self.chains = FrameChains()
        # True: no frame is XOR'd with a frame of an earlier write (the writer, until its
        # first raw floor is published: ``storage.writer``).
        self.whole_only = False
        self._layouts_sent: dict[tuple[str, int], int] = {}  # (target, layout id) -> when its ids went out

    def encode(self, target: str, frames: list[Frame], now_ms: int, *, with_ids: bool = False) -> list[EncodedFrame]:
        """``frames`` encoded in order (a frame of a write whose previous one shares its
        layout and key span is XOR'd with it); ``with_ids``: carry every frame's layout."""
        out: list[EncodedFrame] = []
        prev: tuple[int, int, np.ndarray] | None = None  # (ts, layout, values) of this write's last frame
        for f in frames:
            lid = f.layout
            base: tuple[int, np.ndarray] | None
            if prev is not None and prev[1] == lid and prev[0] // KEY_SPAN_MS == f.ts // KEY_SPAN_MS and prev[0] < f.ts:
                base = (prev[0], prev[2])
            else:
                base = None if prev is not None or self.whole_only else self.chains.base(target, f.ts, lid)
            sent = self._layouts_sent.get((target, lid))
            due = with_ids or sent is None or now_ms - sent >= LAYOUT_REWRITE_MS
            data = encode_delta(f.values, None if base is None else base[1])
            out.append(EncodedFrame(f.ts, None if base is None else base[0], lid, int(f.ids.size), data,
                                    f.ids if due else None))
            prev = (f.ts, lid, f.values)
        return out

    def remember(self, target: str, frames: list[Frame], encoded: list[EncodedFrame], now_ms: int) -> None:
        """``encoded`` (of ``frames``) is stored, or spooled for an ordered replay."""
        for f, e in zip(frames, encoded, strict=True):
            self.chains.stored(target, f.ts, e.layout_id, f.values)
            if e.ids is not None:
                self._layouts_sent[(target, e.layout_id)] = now_ms

    def forget(self, target: str) -> None:
        """After a failed or dropped write: the next frame is whole and carries its layout."""
        self.chains.forget(target)
        for key in [k for k in self._layouts_sent if k[0] == target]:
            del self._layouts_sent[key]


def key_span_start(ts_ms: int) -> int:
    """Where a read of frames from ``ts_ms`` on must start to have every base it needs."""
    return ts_ms - ts_ms % KEY_SPAN_MS


def frame_samples(
    rows: list[tuple[int, int | None, int, bytes]],
    layouts: dict[int, np.ndarray],
    wanted: np.ndarray,
    start_ms: int,
    end_ms: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(series ids, ts, values) of the ``wanted`` series in [start_ms, end_ms] from a target's
    frame rows ``(ts, base_ts, layout_id, data)`` (a layout not in ``layouts``, expired, is
    skipped)."""
    parts = frame_samples_many([(layouts, wanted)], FrameRows.of([0] * len(rows), rows), start_ms, end_ms)
    if not parts:
        empty = np.empty(0, dtype=np.int64)
        return empty, empty, np.empty(0, dtype=np.float64)
    if len(parts) == 1:
        return parts[0]
    return tuple(np.concatenate(col) for col in zip(*parts, strict=True))  # type: ignore[return-value]


@dataclass
class FrameRows:
    """Frame rows of several targets as columns: the target's index, ts, base_ts, layout id
    and data of each row, in any order."""

    target: np.ndarray
    ts: np.ndarray
    base: list[int | None]
    layout: np.ndarray
    data: list[bytes]
    version: np.ndarray | None = None  # each row's write time, when read

    @classmethod
    def of(cls, target: Sequence[int], rows: Sequence[Sequence]) -> FrameRows:
        """From rows ``(ts, base_ts, layout id, data)`` of the targets ``target`` (one per row)."""
        if not rows:
            empty = np.empty(0, dtype=np.int64)
            return cls(empty, empty, [], empty, [])
        ts, base, layout, data = zip(*rows, strict=True)
        return cls(np.array(target, dtype=np.int64), np.array(ts, dtype=np.int64), list(base),
                   np.array(layout, dtype=np.int64), list(data))


Keep = Callable[[int, int, np.ndarray, np.ndarray, np.ndarray, np.ndarray | None], None]


def frame_samples_many(
    targets: Sequence[tuple[dict[int, np.ndarray], np.ndarray]],
    frames: FrameRows,
    start_ms: int,
    end_ms: int,
    keep: Keep | None = None,
) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """The samples of the wanted series of several targets ((layouts, wanted) each) in
    [start_ms, end_ms] from their ``frames``, as parts (series ids, ts, values): a part holds
    whole series, each one's samples in time order, one series after another. The frames of
    one width are decoded together (``decode_deltas``: a refresh of a panel over 100 targets
    decodes ~4,000 frames), every chain the writer made frame after frame resolved at once
    (``resolve_chains``), and targets scraped alike come out as one part (``_as_one_part``).
    ``keep(target, layout id, layout columns, ts, bits, versions)`` is given each run's
    resolved frames (all read, not only those in the range; bits of the columns decoded;
    the versions of the run's frames when every one was resolved and ``frames`` has them,
    else None)."""
    n = len(frames.data)
    if not n:
        return []
    order = np.lexsort((frames.ts, frames.target))  # each target's frames in time order
    code, lid = frames.target[order], frames.layout[order]
    new = np.ones(n, dtype=bool)
    new[1:] = (code[1:] != code[:-1]) | (lid[1:] != lid[:-1])
    if int(new.sum()) > np.unique(code).size:  # a target with frames of several layouts
        # Its layouts in the order of their first frame, each layout's frames in time order.
        pairs = np.rec.fromarrays([code, lid])
        _, first, inverse = np.unique(pairs, return_index=True, return_inverse=True)
        order = order[np.lexsort((first[inverse.reshape(-1)], code))]
        code, lid = frames.target[order], frames.layout[order]
        new[1:] = (code[1:] != code[:-1]) | (lid[1:] != lid[:-1])
    heads = np.flatnonzero(new).tolist()
    runs: list[tuple[int, list[int], list[int], int, int]] = []  # (target, sids, cols, first row, end)
    by_width: dict[int, list[int]] = {}
    for a, b in zip(heads, [*heads[1:], n], strict=True):
        k = int(code[a])
        layouts, wanted = targets[k]
        layout = layouts.get(int(lid[a]))
        if layout is None:
            continue
        sids, cols = positions(layout, wanted)
        if sids:
            by_width.setdefault(int(layout.size), []).append(len(runs))
            runs.append((k, sids, cols, a, b))
    out: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    for width, members in by_width.items():
        rows = order[np.concatenate([np.arange(runs[r][3], runs[r][4]) for r in members])].tolist()
        bounds = np.cumsum([0, *(runs[r][4] - runs[r][3] for r in members)]).tolist()
        datas = [frames.data[i] for i in rows]
        group = [runs[r] for r in members]
        used = np.unique(np.concatenate([np.asarray(run[2], dtype=np.int64) for run in group]))
        if used.size < width:
            # Only the columns some run wants are transposed and XOR'd (a query of 32 of a
            # target's 505 series); the runs' columns then index that narrower matrix.
            deltas = decode_delta_columns(datas, width, used)
            group = [(k, sids, np.searchsorted(used, cols).tolist(), a, b) for k, sids, cols, a, b in group]
        else:
            deltas = decode_deltas(datas, width)
        resolved = resolve_chains(frames.ts[rows].tolist(), [frames.base[i] for i in rows], deltas, bounds)
        if keep is not None:
            for r, (times, matrix), a, z in zip(members, resolved, bounds[:-1], bounds[1:], strict=True):
                k, _, _, head, _ = runs[r]
                whole_run = times.size == z - a and frames.version is not None
                ver = frames.version[rows[a:z]] if whole_run and frames.version is not None else None
                keep(k, int(lid[head]), used, times, matrix.view(np.uint64), ver)
        whole = _as_one_part(int(used.size), group, resolved, bounds, start_ms, end_ms)
        if whole is not None:
            out.append(whole)
            continue
        for (_, sids, cols, _, _), (times, matrix) in zip(group, resolved, strict=True):
            inside = (times >= start_ms) & (times <= end_ms)
            times, matrix = times[inside], matrix[inside][:, cols]
            # column-major: each wanted series' samples in time order, one series after another
            out.append((np.repeat(np.asarray(sids, dtype=np.int64), times.size), np.tile(times, len(sids)),
                        np.ascontiguousarray(matrix.T).reshape(-1)))
    return [part for part in out if part[0].size]


def _as_one_part(
    width: int,
    runs: list[tuple[int, list[int], list[int], int, int]],
    resolved: list[tuple[np.ndarray, np.ndarray]],
    bounds: list[int],
    start_ms: int,
    end_ms: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """The samples of runs of one ``width`` (every frame resolved and every series wanted:
    targets scraped whole) as one part, placed with a few NumPy calls for all runs instead of
    a few per run; None when they are not so."""
    if any(len(sids) != width for _, sids, _, _, _ in runs):
        return None
    if any(t.size != z - a for (t, _), a, z in zip(resolved, bounds[:-1], bounds[1:], strict=True)):
        return None
    times = np.concatenate([t for t, _ in resolved])
    inside = (times >= start_ms) & (times <= end_ms)
    run = np.repeat(np.arange(len(runs)), np.diff(bounds))[inside]  # each kept frame's run
    count = np.bincount(run, minlength=len(runs))  # frames kept per run
    first = np.zeros(len(runs) + 1, dtype=np.int64)
    np.cumsum(count, out=first[1:])
    matrix = np.concatenate([m for _, m in resolved])[inside]
    cols = np.array([c for _, _, c, _, _ in runs], dtype=np.int64)
    if not (cols == np.arange(width)).all():
        matrix = np.take_along_axis(matrix, cols[run], axis=1)
    # Column-major per run: each series' samples in time order, one series after another:
    # frame i of run r, column j goes to first[r] * width + j * count[r] + (i - first[r]).
    row = np.arange(run.size)
    dest = (first[run] * (width - 1) + row)[:, None] + np.arange(width)[None, :] * count[run][:, None]
    values = np.empty(matrix.size)
    values[dest.reshape(-1)] = matrix.reshape(-1)
    ts = np.empty(matrix.size, dtype=np.int64)
    ts[dest.reshape(-1)] = np.repeat(times[inside], width)
    sids = np.array([s for _, s, _, _, _ in runs], dtype=np.int64)
    return np.repeat(sids.reshape(-1), np.repeat(count, width)), ts, values


# -- frames a reader keeps ----------------------------------------------------------------------

# resolved frame columns a store keeps (issue #20's query: ~2.5 MB); its ``FrameGroup``s, copies
# of entries' frames, take up to a quarter of this more (``FrameCache.put_group``)
FRAME_CACHE_BYTES = 64 << 20
FRAME_CACHE_KEEP_MS = 20 * 60_000  # a target's frames kept behind the newest it holds complete
# What an entry costs beside its arrays' data (the entry, its arrays' headers, the cache's keys):
# ~1.3 KB measured, a fifth of a narrow target's (8 series, 20 minutes of 15 s frames).
FRAME_CACHE_ENTRY_BYTES = 1280


@dataclass(frozen=True)
class CachedFrames:
    """A target's frames as a reader resolved them: every frame of the target with a timestamp
    in [lo, hi] that was stored when the reader read (at ``read_at``, the store's clock), as
    the bits of the layout columns ``cols``, and frames after ``hi`` (not known complete),
    each with its version (the cell's write time: a frame stored again is read again)."""

    layout: int
    width: int
    cols: np.ndarray  # layout positions held, ascending
    ts: np.ndarray  # frame timestamps, ascending
    bits: np.ndarray  # len(ts) x len(cols) uint64: resolved values' bit patterns
    versions: np.ndarray  # len(ts) write times
    lo: int
    hi: int
    read_at: int
    # wanted series -> ``columns_of`` (the layout and columns stay with every extension)
    memo: dict[bytes, tuple[np.ndarray, np.ndarray] | None] = field(default_factory=dict, compare=False)

    @cached_property
    def nbytes(self) -> int:  # (asked for 3 times a put: once)
        return int(self.bits.nbytes + self.ts.nbytes + self.versions.nbytes) + FRAME_CACHE_ENTRY_BYTES

    def columns_of(self, layout: np.ndarray, wanted: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
        """(series of ``wanted`` the layout holds, their columns in ``bits``), None when some
        of them are not held."""
        key = wanted.tobytes()
        if key in self.memo:
            return self.memo[key]
        sids, cols = LayoutIndex(layout).positions(wanted)
        got: tuple[np.ndarray, np.ndarray] | None = (sids, cols)
        if cols.size:
            at = self.cols.searchsorted(cols)
            bad = bool((at >= self.cols.size).any()) or bool((self.cols[np.minimum(at, self.cols.size - 1)] != cols).any())
            got = None if bad else (sids, at)
        if len(self.memo) >= 16:
            self.memo.clear()
        self.memo[key] = got
        return got

    def samples(self, sids: np.ndarray, at: np.ndarray, start_ms: int, end_ms: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(series ids, ts, values) of ``sids`` (columns ``at``) in [start_ms, end_ms], series-major."""
        return self.block(sids, at, start_ms, end_ms).samples()

    def block(self, sids: np.ndarray, at: np.ndarray, start_ms: int, end_ms: int) -> FrameBlock:
        """The frames of [start_ms, end_ms] as they are kept, for ``sids`` at columns ``at``."""
        a = int(self.ts.searchsorted(start_ms, side="left"))
        b = int(self.ts.searchsorted(end_ms, side="right"))
        return FrameBlock(sids, at, self.ts[a:b], self.bits[a:b])

    def tail(self) -> tuple[np.ndarray, np.ndarray]:
        """(ts, versions) of the frames held after ``hi``."""
        a = int(self.ts.searchsorted(self.hi, side="right"))
        return self.ts[a:], self.versions[a:]

    def unchanged(self, ts: np.ndarray, versions: np.ndarray) -> np.ndarray:
        """Which of the frames ``(ts, versions)`` stored after ``hi`` are held at that version."""
        at = np.minimum(self.ts.searchsorted(ts), max(self.ts.size - 1, 0))
        if not self.ts.size:
            return np.zeros(ts.size, dtype=bool)
        same: np.ndarray = (self.ts[at] == ts) & (self.versions[at] == versions) & (ts > self.hi)
        return same

    def settled(self, hi: int, read_at: int) -> CachedFrames:
        """``extended`` when every frame held after ``self.hi`` is stored unchanged and no
        other is (the usual re-check): the same frames, complete up to ``hi``, at
        ``read_at`` (made directly: ``dataclasses.replace`` cost ~5 us a target)."""
        new_hi = max(self.hi, hi)
        ts, bits, ver, lo = self.ts, self.bits, self.versions, self.lo
        cut = new_hi - FRAME_CACHE_KEEP_MS
        if cut > lo:
            first = int(ts.searchsorted(cut, side="left"))
            ts, bits, ver, lo = ts[first:], bits[first:], ver[first:], cut
        return CachedFrames(self.layout, self.width, self.cols, ts, bits, ver, lo, new_hi, read_at, self.memo)

    def extended(self, rows: FrameRows, held: np.ndarray, hi: int, read_at: int) -> CachedFrames | None:
        """These frames up to ``self.hi``, those after it at ``held`` (stored and unchanged),
        and the frames ``rows`` (of this target, after ``self.hi``, not held), complete up to
        ``hi``; None when one of ``rows`` has another layout or names a base that is neither
        among them nor held (the caller reads the target whole). ``extend_many`` of one."""
        return extend_many([(self, rows, held)], hi, read_at)[0]

    def _with(self, ts: np.ndarray, bits: np.ndarray, versions: np.ndarray, hi: int, read_at: int) -> CachedFrames:
        """These frames as ``ts``/``bits``/``versions``, complete up to ``hi`` (if later), read
        at ``read_at``, less those FRAME_CACHE_KEEP_MS before that."""
        lo, hi = self.lo, max(self.hi, hi)
        cut = hi - FRAME_CACHE_KEEP_MS
        if cut > lo:
            first = int(ts.searchsorted(cut, side="left"))
            ts, bits, versions, lo = ts[first:], bits[first:], versions[first:], cut
        return CachedFrames(self.layout, self.width, self.cols, ts, bits, versions, lo, hi, read_at, self.memo)


@dataclass
class _Extension:
    """One target's part of ``extend_many``: its kept frames (``old_*``: those still held),
    its new frames in time order (their payloads ``datas``) and the held frames they name
    as bases (``named``, at ``at`` in ``old_ts``)."""

    k: int
    entry: CachedFrames
    old_ts: np.ndarray
    old_bits: np.ndarray
    old_ver: np.ndarray
    new_ts: np.ndarray
    new_bases: list[int | None]
    new_ver: np.ndarray
    datas: list[bytes]
    named: list[int]
    at: np.ndarray


def extend_many(
    items: Sequence[tuple[CachedFrames, FrameRows, np.ndarray]], hi: int, read_at: int
) -> list[CachedFrames | None]:
    """``CachedFrames.extended`` of many targets' kept frames (each with its new ``rows`` and
    its ``held`` frames), complete up to ``hi``: the new frames of every target of one width
    and column set decoded together and their chains resolved at once (a cached refresh
    over 100 narrow targets extended each with its minute of frames, ~50 NumPy calls a
    target); None for a target whose new frames have another layout or name a base that is
    neither among them nor held."""
    out: list[CachedFrames | None] = [None] * len(items)
    done = _appended(items, hi, read_at, out)
    groups: dict[tuple[int, bytes], list[_Extension]] = {}
    for k, (e, rows, held) in enumerate(items):
        if k in done:
            continue
        x = _extension(k, e, rows, held)
        if isinstance(x, _Extension):
            groups.setdefault((e.width, e.cols.tobytes() if e.cols.size < e.width else b""), []).append(x)
        elif x is not None:
            out[k] = x._with(*_held(x, held), hi, read_at)
    for (width, narrowed), group in groups.items():
        for x, got in zip(group, _resolved(group, width, narrowed), strict=True):
            if got is not None:
                out[x.k] = x.entry._with(*got, hi, read_at)
    return out


def _appended(
    items: Sequence[tuple[CachedFrames, FrameRows, np.ndarray]], hi: int, read_at: int, out: list[CachedFrames | None]
) -> set[int]:
    """``extend_many``'s usual case, checked and resolved for all its targets at once: every
    kept frame after ``hi`` still held, new frames of the kept layout after the newest kept
    one, in time order, each whole or XOR'd with the frame before it (the first: with the
    newest kept). Their entries go to ``out``; returns their indexes (the others: per target)."""
    by_key: dict[tuple[int, bytes], list[int]] = {}
    for k, (e, rows, held) in enumerate(items):
        if rows.data and e.ts.size and held.size == e.ts.size - int(e.ts.searchsorted(e.hi, side="right")):
            by_key.setdefault((e.width, e.cols.tobytes() if e.cols.size < e.width else b""), []).append(k)
    done: set[int] = set()
    for (width, narrowed), ks in by_key.items():
        entries = [items[k][0] for k in ks]
        frames = [items[k][1] for k in ks]
        lens = np.fromiter((len(r.data) for r in frames), dtype=np.int64, count=len(ks))
        starts = np.zeros(len(ks) + 1, dtype=np.int64)
        np.cumsum(lens, out=starts[1:])
        owner = np.repeat(np.arange(len(ks)), lens)
        new_ts = np.concatenate([r.ts for r in frames])
        base = np.array([b for r in frames for b in r.base], dtype=np.float64)  # (None: NaN, whole)
        newest = np.fromiter((int(e.ts[-1]) for e in entries), dtype=np.int64, count=len(ks))
        prev = np.empty_like(new_ts)
        prev[1:] = new_ts[:-1]
        prev[starts[:-1]] = newest  # (each target's first new frame follows its newest kept one)
        layout = np.fromiter((e.layout for e in entries), dtype=np.int64, count=len(ks))
        fits = (np.concatenate([r.layout for r in frames]) == layout[owner]) & (new_ts > prev)
        fits &= np.isnan(base) | (base == prev)
        good = np.logical_and.reduceat(fits, starts[:-1])
        sel = np.flatnonzero(good)
        if not sel.size:
            continue
        mine = good[owner]
        datas = [d for i in sel.tolist() for d in frames[i].data]
        deltas = decode_delta_columns(datas, width, entries[sel[0]].cols) if narrowed else decode_deltas(datas, width)
        # One run per target: its newest kept frame (whole), then its new frames.
        run = np.zeros(sel.size + 1, dtype=np.int64)
        np.cumsum(lens[sel] + 1, out=run[1:])
        head = np.zeros(int(run[-1]), dtype=bool)
        head[run[:-1]] = True
        rest = np.flatnonzero(~head)
        run_ts = np.empty(head.size, dtype=np.int64)
        run_ts[run[:-1]] = newest[sel]
        run_ts[rest] = new_ts[mine]
        run_deltas = np.empty((head.size, deltas.shape[1]), dtype=np.uint64)
        run_deltas[run[:-1]] = np.stack([entries[i].bits[-1] for i in sel.tolist()])
        run_deltas[rest] = deltas
        run_base = np.full(head.size, np.nan)
        run_base[rest] = base[mine]
        bases = [None if b != b else int(b) for b in run_base.tolist()]
        resolved = resolve_chains(run_ts.tolist(), bases, run_deltas, run.tolist())
        for i, (got_ts, got) in zip(sel.tolist(), resolved, strict=True):
            e, rows, k = entries[i], frames[i], ks[i]
            if got_ts.size != len(rows.data) + 1:
                continue  # (not resolved whole: the general path decides)
            version = rows.version if rows.version is not None else np.full(len(rows.data), -1, dtype=np.int64)
            out[k] = e._with(np.concatenate([e.ts, got_ts[1:]]), np.concatenate([e.bits, got.view(np.uint64)[1:]]),
                             np.concatenate([e.versions, version]), hi, read_at)
            done.add(k)
    return done


def _held(e: CachedFrames, held: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(ts, bits, versions) of ``e``'s frames up to its ``hi`` and those after it at ``held``."""
    n_tail = e.ts.size - int(e.ts.searchsorted(e.hi, side="right"))
    if held.size == n_tail:  # (held are of the tail: every one of it is unchanged)
        return e.ts, e.bits, e.versions
    keep = (e.ts <= e.hi) | np.isin(e.ts, held)
    return e.ts[keep], e.bits[keep], e.versions[keep]


def _extension(k: int, e: CachedFrames, rows: FrameRows, held: np.ndarray) -> _Extension | CachedFrames | None:
    """Item ``k`` of ``extend_many``: its ``_Extension``, ``e`` itself when no frame is new, or
    None (another layout, a base not at hand)."""
    if rows.layout.size and bool((rows.layout != e.layout).any()):
        return None
    if not rows.data:
        return e
    old_ts, old_bits, old_ver = _held(e, held)
    version = rows.version if rows.version is not None else np.full(len(rows.data), -1, dtype=np.int64)
    if len(rows.data) == 1 or bool((rows.ts[1:] > rows.ts[:-1]).all()):  # (as read: in time order)
        new_ts, new_bases, new_ver, datas = rows.ts, list(rows.base), version, list(rows.data)
    else:
        order = np.argsort(rows.ts, kind="stable")
        new_ts, new_ver = rows.ts[order], version[order]
        new_bases = [rows.base[i] for i in order.tolist()]
        datas = [rows.data[i] for i in order.tolist()]
    named = sorted({b for b in new_bases if b is not None} - set(new_ts.tolist()))
    at = old_ts.searchsorted(named) if named else np.empty(0, dtype=np.int64)
    if named and (bool((at >= old_ts.size).any())
                  or bool((old_ts[np.minimum(at, old_ts.size - 1)] != named).any())):
        return None
    return _Extension(k, e, old_ts, old_bits, old_ver, new_ts, new_bases, new_ver, datas, named, at)


def _resolved(
    group: list[_Extension], width: int, narrowed: bytes
) -> list[tuple[np.ndarray, np.ndarray, np.ndarray] | None]:
    """Each extension's (ts, bits, versions) with its new frames resolved, all of the group
    (one width and column set) decoded together; None where a chain does not resolve."""
    datas = [d for x in group for d in x.datas]
    cols = group[0].entry.cols
    deltas = decode_delta_columns(datas, width, cols) if narrowed else decode_deltas(datas, width)
    # One run per target: the bases its new frames name go first, as whole frames, then
    # its new frames, in time order (usually already: the newest held frame, then new ones).
    run_ts: list[np.ndarray] = []
    run_bases: list[int | None] = []
    run_deltas: list[np.ndarray] = []
    bounds = [0]
    d = 0
    for x in group:
        n = x.new_ts.size
        new_deltas = deltas[d : d + n]
        d += n
        if not x.named:
            run_ts.append(x.new_ts)
            run_bases.extend(x.new_bases)
            run_deltas.append(new_deltas)
        elif x.named[-1] < int(x.new_ts[0]):
            run_ts += [np.asarray(x.named, dtype=np.int64), x.new_ts]
            run_bases += [None] * len(x.named)
            run_bases += x.new_bases
            run_deltas += [x.old_bits[x.at], new_deltas]
        else:
            times = np.concatenate([np.asarray(x.named, dtype=np.int64), x.new_ts])
            run_order = np.argsort(times, kind="stable")
            all_bases: list[int | None] = [None] * len(x.named)
            all_bases += x.new_bases
            run_ts.append(times[run_order])
            run_bases += [all_bases[i] for i in run_order.tolist()]
            run_deltas.append(np.concatenate([x.old_bits[x.at], new_deltas])[run_order])
        bounds.append(bounds[-1] + len(x.named) + n)
    resolved = resolve_chains(np.concatenate(run_ts).tolist(), run_bases, np.concatenate(run_deltas), bounds)
    out: list[tuple[np.ndarray, np.ndarray, np.ndarray] | None] = []
    for x, (got_ts, got), a, z in zip(group, resolved, bounds[:-1], bounds[1:], strict=True):
        if got_ts.size != z - a:
            out.append(None)
            continue
        got_bits = got.view(np.uint64)
        if x.named:  # (the bases named, resolved before the new frames: not new)
            if x.named[-1] < int(x.new_ts[0]):
                got_ts, got_bits = got_ts[len(x.named) :], got_bits[len(x.named) :]
            else:
                fresh = np.isin(got_ts, x.new_ts)
                got_ts, got_bits = got_ts[fresh], got_bits[fresh]
        ts = np.concatenate([x.old_ts, got_ts])
        bits = np.concatenate([x.old_bits, got_bits])
        ver = np.concatenate([x.old_ver, x.new_ver])
        if x.old_ts.size and int(got_ts[0]) <= int(x.old_ts[-1]):  # (usually after every kept one)
            merged = np.argsort(ts, kind="stable")
            ts, bits, ver = ts[merged], bits[merged], ver[merged]
        out.append((ts, bits, ver))
    return out


@dataclass(frozen=True, slots=True)
class FrameBlock:
    """Some series of one target's kept frames: series ``sids[j]`` is column ``at[j]`` of
    ``bits`` (frames x kept columns, uint64 bit patterns), one row per time of ``times``."""

    sids: np.ndarray
    at: np.ndarray
    times: np.ndarray
    bits: np.ndarray

    def samples(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(series ids, ts, values), series-major."""
        values = np.ascontiguousarray(self.bits[:, self.at].T).reshape(-1).view(np.float64)
        return np.repeat(self.sids, self.times.size), np.tile(self.times, self.sids.size), values


# Where a read of kept frames places its samples (``blocks_in_order``), by the blocks' shape
Placement = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]  # (found, offsets, rows, times)


def blocks_in_order(
    blocks: Sequence[FrameBlock], order: np.ndarray, memo: MutableMapping[bytes, Placement | None] | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None:
    """The samples of ``blocks`` as flat columns with the series in ``order`` (ids; those of
    no block, or with no sample in range, left out): (positions in ``order`` of the series
    kept, offsets, ts, values). Every sample placed by one gather from the blocks' rows, no
    per-target part made and joined again (issue #20's range query: ~10 ms a query over 200
    targets). None when a series is in two blocks (the caller merges parts). ``memo``: where
    blocks of the same shape (series, columns, frames) placed their samples, kept by it (a
    repeated query's blocks differ in their values only)."""
    sids = np.concatenate([b.sids for b in blocks])
    col = np.concatenate([b.at for b in blocks]).astype(np.int64, copy=False)
    n = np.array([b.times.shape[0] for b in blocks], dtype=np.int64)  # frames per block
    width = np.array([b.bits.shape[1] for b in blocks], dtype=np.int64)
    key = b"".join((sids.tobytes(), col.tobytes(), n.tobytes(), width.tobytes(), order.tobytes()))
    if memo is not None and key in memo:
        placed = memo[key]
    else:
        m = np.array([b.sids.shape[0] for b in blocks], dtype=np.int64)  # series per block
        row_base = np.zeros(len(blocks), dtype=np.int64)
        np.cumsum((n * width)[:-1], out=row_base[1:])
        time_base = np.zeros(len(blocks), dtype=np.int64)
        np.cumsum(n[:-1], out=time_base[1:])
        placed = _placement(sids, col, m, n, width, row_base, time_base, order)
        if memo is not None:
            memo[key] = placed
    if placed is None:
        return None
    found, offsets, where, when = placed
    values = np.concatenate([b.bits.reshape(-1) for b in blocks])[where].view(np.float64)
    ts = np.concatenate([b.times for b in blocks])[when]
    return found, offsets, ts, values


def _placement(
    sids: np.ndarray, col: np.ndarray, m: np.ndarray, n: np.ndarray, width: np.ndarray, row_base: np.ndarray,
    time_base: np.ndarray, order: np.ndarray,
) -> Placement | None:
    """Where the samples of blocks (``m`` series each, ``sids`` at columns ``col`` of rows of
    ``width``; ``n`` frames in range each, its first row at ``row_base`` of the joined rows
    and its first time at ``time_base`` of the joined times) go in ``order``: the series of
    ``order`` found, their offsets, and each sample's index in the rows and in the times, one
    after another; None when a series is in two blocks."""
    rank = np.argsort(sids, kind="stable")
    ranked = sids[rank]
    if bool((ranked[1:] == ranked[:-1]).any()):
        return None
    block = np.repeat(np.arange(m.size), m)  # of each series (in ``sids``' order)
    at = np.minimum(np.searchsorted(ranked, order), max(ranked.size - 1, 0))
    found = np.flatnonzero(ranked[at] == order) if ranked.size else np.empty(0, dtype=np.int64)
    s = rank[at[found]]  # each kept series' index in ``sids``
    k = block[s]
    counts = n[k]
    if not bool(counts.all()):
        has = counts > 0
        found, s, k, counts = found[has], s[has], k[has], counts[has]
    offsets = np.zeros(found.size + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    total = int(offsets[-1])
    within = np.arange(total, dtype=np.int64)
    within -= np.repeat(offsets[:-1], counts)  # each sample's index in its series
    where = np.repeat(row_base[k] + col[s], counts)
    where += within * np.repeat(width[k], counts)
    within += np.repeat(time_base[k], counts)
    return found, offsets, where, within


FRAME_GROUP_MEMO = 8  # placements a ``FrameGroup`` keeps (ranges and label orders of its reads)


class FrameGroup:
    """The kept frames of a read's targets as one (``FrameCache.group``): a repeated read of
    the same targets and series (issue #20's range query: 200 targets) checks the late marks
    and the newer frames' keys and places its samples for all targets at once, not with tens
    of us of Python and NumPy calls per target. Made from the targets' ``CachedFrames``
    (``entries``, in the read's order, with the series it serves of each and their columns);
    valid while the cache keeps those very entries. ``settle`` moves ``hi``/``read_at`` on after a re-check that found
    every frame after ``hi`` held at its version; the entries' own stay behind, which is safe:
    a read through an entry then re-reads more keys and drops at more marks."""

    def __init__(self, names: list[str], entries: list[CachedFrames], served: list[tuple[np.ndarray, np.ndarray]]) -> None:
        self.names = names
        self.index = {t: k for k, t in enumerate(names)}
        self.entries = entries
        self.cols = [e.cols.tobytes() for e in entries]  # (each entry's key in the cache)
        self.served = served
        # (complete up to the least of the entries' hi as of the oldest of their reads: a target
        # complete further re-checks more of its frames' keys, an older read drops at more marks)
        self.hi = min(e.hi for e in entries)
        self.read_at = min(e.read_at for e in entries)
        self.lo = max(e.lo for e in entries)  # (complete from here on for every target)
        self.first = min(e.lo for e in entries)
        self.n = np.array([e.ts.size for e in entries], dtype=np.int64)  # frames per target
        self.ts_base = np.zeros(len(entries), dtype=np.int64)
        np.cumsum(self.n[:-1], out=self.ts_base[1:])
        self.ts = np.concatenate([e.ts for e in entries])
        self.versions = np.concatenate([e.versions for e in entries])
        self.owner = np.repeat(np.arange(len(entries)), self.n)
        self.width = np.array([e.bits.shape[1] for e in entries], dtype=np.int64)
        self.row_base = np.zeros(len(entries), dtype=np.int64)
        np.cumsum((self.n * self.width)[:-1], out=self.row_base[1:])
        self.bits = np.concatenate([e.bits.reshape(-1) for e in entries])
        self.m = np.array([sids.size for sids, _ in served], dtype=np.int64)  # series served per target
        self.sids = np.concatenate([sids for sids, _ in served]).astype(np.int64, copy=False)
        self.col = np.concatenate([at for _, at in served]).astype(np.int64, copy=False)
        self.nbytes = int(self.bits.nbytes + 4 * self.ts.nbytes + 2 * self.sids.nbytes) + FRAME_CACHE_ENTRY_BYTES
        self._placements: OrderedDict[tuple[int, int, bytes], Placement | None] = OrderedDict()
        self.requests: list[list[str]] | None = None  # (the targets of each keys request: its reader's)
        self.checked = -1  # (``FrameCache._changes`` when its entries were last found kept)
        self._tail()

    def _tail(self) -> None:
        after = self.ts > self.hi
        self.tail_owner, self.tail_ts, self.tail_versions = self.owner[after], self.ts[after], self.versions[after]

    def settle(self, hi: int, read_at: int) -> None:
        """Every frame held after ``hi`` was found stored at its version, and no other, at ``read_at``."""
        if hi > self.hi:
            self.hi = hi
            self._tail()
        self.read_at = read_at

    def same_keys(self, rows: Sequence[Sequence]) -> bool:
        """Whether the keys ``rows`` (target, ts, version) read of the targets' frames after
        ``hi`` are exactly the frames held there (``CachedFrames``' re-check, for all at once)."""
        if len(rows) != self.tail_ts.size:
            return False
        if not rows:
            return True
        index = self.index
        owner = np.fromiter((index.get(r[0], -1) for r in rows), dtype=np.int64, count=len(rows))
        ts = np.fromiter((r[1] for r in rows), dtype=np.int64, count=len(rows))
        ver = np.fromiter((-1 if r[2] is None else r[2] for r in rows), dtype=np.int64, count=len(rows))
        order = np.lexsort((ts, owner))
        return bool(np.array_equal(owner[order], self.tail_owner)) and bool(np.array_equal(ts[order], self.tail_ts)) \
            and bool(np.array_equal(ver[order], self.tail_versions))

    def block(self, start_ms: int, end_ms: int) -> GroupBlock:
        """The kept frames of [start_ms, end_ms] of every target, for the series it serves."""
        return GroupBlock(self, start_ms, end_ms)

    def placement(self, start_ms: int, end_ms: int, order: np.ndarray) -> Placement | None:
        """``_placement`` of the frames in [start_ms, end_ms] in ``order``, kept per range and order."""
        key = (start_ms, end_ms, order.tobytes())
        if key in self._placements:
            self._placements.move_to_end(key)
            return self._placements[key]
        k = len(self.entries)
        below = np.bincount(self.owner[self.ts < start_ms], minlength=k)  # frames before the range
        inside = np.bincount(self.owner[(self.ts >= start_ms) & (self.ts <= end_ms)], minlength=k)
        placed = _placement(self.sids, self.col, self.m, inside, self.width, self.row_base + below * self.width,
                            self.ts_base + below, order)
        self._placements[key] = placed
        if len(self._placements) > FRAME_GROUP_MEMO:
            self._placements.popitem(last=False)
        return placed


@dataclass(frozen=True, slots=True)
class GroupBlock:
    """A ``FrameGroup``'s frames of [start_ms, end_ms]: what a ``FrameBlock`` per target would be."""

    group: FrameGroup
    start_ms: int
    end_ms: int

    def blocks(self) -> list[FrameBlock]:
        """A ``FrameBlock`` per target serving series."""
        out = []
        for e, (sids, at) in zip(self.group.entries, self.group.served, strict=True):
            if sids.size:
                out.append(e.block(sids, at, self.start_ms, self.end_ms))
        return out

    def samples(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(series ids, ts, values), series-major: the targets' blocks' samples one after another."""
        parts = [b.samples() for b in self.blocks()]
        if not parts:
            empty = np.empty(0, dtype=np.int64)
            return empty, empty, np.empty(0, dtype=np.float64)
        return tuple(np.concatenate(col) for col in zip(*parts, strict=True))  # type: ignore[return-value]

    def in_order(self, order: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None:
        """``blocks_in_order`` of ``blocks()``: one gather from the group's rows."""
        placed = self.group.placement(self.start_ms, self.end_ms, order)
        if placed is None:
            return None
        found, offsets, where, when = placed
        return found, offsets, self.group.ts[when], self.group.bits[where].view(np.float64)


KeptBlock = FrameBlock | GroupBlock  # what a read of kept frames leaves (``read_raw_flat`` places them)


class FrameCache:
    """Resolved frames per target and column set (``CachedFrames``: a dashboard's panels over
    the same targets keep one each), least recently used dropped first beyond ``max_bytes``.
    Single-threaded (the event loop's)."""

    def __init__(self, max_bytes: int = FRAME_CACHE_BYTES) -> None:
        self.max_bytes = max_bytes
        self._entries: OrderedDict[tuple[str, bytes], CachedFrames] = OrderedDict()
        self._keys: dict[str, set[bytes]] = {}  # target -> the column sets kept of it
        self._bytes = 0
        # read's targets and series -> their entries as one (``FrameGroup``), LRU, at most a
        # quarter of ``max_bytes`` (their frames' copies)
        self._groups: OrderedDict[bytes, FrameGroup] = OrderedDict()
        self._group_bytes = 0
        self._changes = 0  # entries put or dropped so far (a group checked since none needs no check)
        self.hits = 0  # targets read from the cache (and their newest frames only)
        self.misses = 0  # targets read whole
        self.group_reads = 0  # reads served through a ``FrameGroup``

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def nbytes(self) -> int:
        return self._bytes

    def of(self, target: str) -> list[CachedFrames]:
        """What is kept of ``target`` (most recently used first)."""
        out = []
        for cols in self._keys.get(target, ()):
            self._entries.move_to_end((target, cols))
            out.append(self._entries[(target, cols)])
        return out

    def group(self, key: bytes) -> FrameGroup | None:
        """The ``FrameGroup`` kept as ``key`` while the cache keeps every entry it was made of
        (checked, and the entries made most recently used, only when some entry was put or
        dropped since the group's last check: a refresh of 200 targets made 400 dict calls);
        None otherwise."""
        g = self._groups.get(key)
        if g is None:
            return None
        if g.checked != self._changes:  # (else no entry was put or dropped since its last check)
            entries = self._entries
            for t, c, e in zip(g.names, g.cols, g.entries, strict=True):
                if entries.get((t, c)) is not e:
                    self.drop_group(key)
                    return None
            for t, c in zip(g.names, g.cols, strict=True):
                entries.move_to_end((t, c))
            g.checked = self._changes
        self._groups.move_to_end(key)
        return g

    def put_group(self, key: bytes, group: FrameGroup) -> None:
        """Keep ``group`` as ``key`` (least recently used groups go beyond a quarter of ``max_bytes``)."""
        self.drop_group(key)
        if group.nbytes > self.max_bytes // 4:
            return
        self._groups[key] = group
        self._group_bytes += group.nbytes
        while self._group_bytes > self.max_bytes // 4:
            _, old = self._groups.popitem(last=False)
            self._group_bytes -= old.nbytes

    def drop_group(self, key: bytes) -> None:
        old = self._groups.pop(key, None)
        if old is not None:
            self._group_bytes -= old.nbytes

    def written(self, target: str, first_ts: int) -> None:
        """Frames of ``target`` from ``first_ts`` on are being written: what is kept complete
        of them goes (entries, and groups holding the target complete there)."""
        for e in self.of(target):
            if first_ts <= e.hi:
                self.drop(target, e)
        for key in [k for k, g in self._groups.items() if target in g.index and first_ts <= g.hi]:
            self.drop_group(key)

    def put(self, target: str, entry: CachedFrames) -> None:
        """Keep ``entry`` (in place of what was kept of the target for its columns)."""
        self._changes += 1
        cols = entry.cols.tobytes()
        old = self._entries.get((target, cols))
        if old is not None and entry.nbytes <= self.max_bytes:  # (the usual: an entry extended)
            self._entries[(target, cols)] = entry
            self._entries.move_to_end((target, cols))
            self._bytes += entry.nbytes - old.nbytes
            self._evict()
            return
        self.drop(target, entry)
        if entry.nbytes > self.max_bytes:
            return
        self._entries[(target, cols)] = entry
        self._keys.setdefault(target, set()).add(cols)
        self._bytes += entry.nbytes
        self._evict()

    def _evict(self) -> None:
        while self._bytes > self.max_bytes:
            (t, c), old = self._entries.popitem(last=False)
            self._forget(t, c, old)

    def drop(self, target: str, entry: CachedFrames | None = None) -> None:
        """Forget what is kept of ``target`` (only for the columns of ``entry``, if given)."""
        keys = [entry.cols.tobytes()] if entry is not None else list(self._keys.get(target, ()))
        for cols in keys:
            old = self._entries.pop((target, cols), None)
            if old is not None:
                self._forget(target, cols, old)

    def _forget(self, target: str, cols: bytes, old: CachedFrames) -> None:
        self._changes += 1
        self._bytes -= old.nbytes
        kept = self._keys.get(target)
        if kept is not None:
            kept.discard(cols)
            if not kept:
                del self._keys[target]

    def clear(self) -> None:
        self._entries.clear()
        self._keys.clear()
        self._bytes = 0
        self._groups.clear()
        self._group_bytes = 0
        self._changes += 1
