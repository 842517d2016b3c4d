"""Scrape frames: one scrape of one target stored as one row (issue #20's write path).

A frame holds the values of one scrape (one target, one timestamp) in the order of its
layout: the target's series ids in scrape order. The layout id is a hash of that order, so
a target writes its layout once and each frame names it. The codec is the values' float64
bit patterns, little-endian and uncompressed: frames are a short head (minutes) before the
store transposes them into per-series chunks, so cheap CPU matters more than bytes, and a
read of one column slices 8 bytes out of each frame without decoding the rest
(``bench/write_path.py`` measures zlib and byte planes beside it).

Cassandra stores frames compressed (``encode_delta``): XOR'd with a base frame, byte planes,
Zstandard level -1 (``zstandard``); frames written before it are zlib (level 1). A payload says
which by its first bytes (a Zstandard frame's magic number; a zlib stream starts ``0x78``), so
readers take both.

NumPy and the codecs: the stores keep frames in their own tables (``storage/sqlite.py``).
"""

from __future__ import annotations

import hashlib
import threading
import zlib
from collections.abc import Sequence

import numpy as np
import zstandard

# A timestamp group of a batch with fewer samples than this keeps the per-series path.
FRAME_MIN_SAMPLES = 8
_BITS = np.dtype("<i8")
FEW_COLUMNS = 4  # up to this many columns are sliced out of each frame, more through the whole matrix
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"  # how a Zstandard frame (every payload written since zlib) starts
ZSTD_LEVEL = -1  # a fast level (``encode_delta``): 2.93 B/sample where 1 gives 2.69, at ~2/3 of its CPU
_codecs = threading.local()  # a thread's Zstandard contexts (one may not be used by two threads at once)


def _zstd() -> tuple[zstandard.ZstdCompressor, zstandard.ZstdDecompressor]:
    got: tuple[zstandard.ZstdCompressor, zstandard.ZstdDecompressor] | None = getattr(_codecs, "zstd", None)
    if got is None:
        got = _codecs.zstd = (zstandard.ZstdCompressor(level=ZSTD_LEVEL), zstandard.ZstdDecompressor())
    return got


def _inflate(data: bytes) -> bytes:
    """The byte planes of a payload, Zstandard (since) or zlib (before)."""
    if data[:4] == ZSTD_MAGIC:
        try:
            return _zstd()[1].decompress(data)
        except zstandard.ZstdError as exc:
            raise ValueError(f"a frame payload does not decompress: {exc}") from None
    return zlib.decompress(data)


def layout_id(ids: np.ndarray) -> int:
    """The layout id of series ids in scrape order: a signed 64-bit hash of their bytes."""
    digest = hashlib.blake2b(np.ascontiguousarray(ids, dtype=_BITS).tobytes(), digest_size=8).digest()
    return int.from_bytes(digest, "little", signed=True)


def encode_layout(ids: np.ndarray) -> bytes:
    return np.ascontiguousarray(ids, dtype=_BITS).tobytes()


def decode_layout(data: bytes) -> np.ndarray:
    return np.frombuffer(data, dtype=_BITS).astype(np.int64)


def encode_values(values: Sequence[float] | np.ndarray) -> bytes:
    """A frame's payload: the values' 64-bit patterns in layout order (NaN payloads kept)."""
    return np.asarray(values, dtype=np.float64).astype("<f8", copy=False).tobytes()


def encode_delta(values: np.ndarray, base: np.ndarray | None) -> bytes:
    """The compressed payload Cassandra stores (``storage/cassandra.py``): the values' bits
    XOR'd with the ``base`` frame's (None: whole), byte planes one after another, Zstandard
    level -1 (``bench/write_path_cassandra.py``: 3.1 bytes per sample on disk against 5.6 raw
    with zlib level 1). A 505-sample frame of the peers bench with the CPU's caches cold, as
    in a scraper between two scrapes: zlib level 1 ~69 us for 2.77 B/sample, Zstandard level
    1 ~21 us for 2.69, level -1 ~14 us for 2.93, no compression ~2 us for 8."""
    bits = np.ascontiguousarray(values, dtype="<f8").view("<u8")
    if base is not None:
        bits = bits ^ np.ascontiguousarray(base, dtype="<f8").view("<u8")
    return _zstd()[0].compress(bits.view(np.uint8).reshape(-1, 8).T.tobytes())


def decode_delta(data: bytes, width: int) -> np.ndarray:
    """The uint64 bits ``encode_delta`` compressed (still XOR'd with the base, if any)."""
    raw = _inflate(data)
    if len(raw) != 8 * width:
        raise ValueError(f"a frame of {len(raw)} bytes does not hold {width} values")
    return np.frombuffer(raw, dtype=np.uint8).reshape(8, width).T.copy().view("<u8").reshape(width)


def decode_deltas(datas: Sequence[bytes], width: int) -> np.ndarray:
    """``decode_delta`` of many frames of ``width`` values at once: frames x series uint64
    (one byte-plane transposition for all, not six NumPy calls per frame: a refresh of a
    panel over 100 targets decodes ~4,000 frames)."""
    raws = list(map(_inflate, datas))
    if raws and set(map(len, raws)) != {8 * width}:
        bad = next(len(raw) for raw in raws if len(raw) != 8 * width)
        raise ValueError(f"a frame of {bad} bytes does not hold {width} values")
    planes = np.frombuffer(b"".join(raws), dtype=np.uint8).reshape(len(raws), 8, width)
    return np.ascontiguousarray(planes.transpose(0, 2, 1)).view("<u8").reshape(len(raws), width)


def decode_delta_columns(datas: Sequence[bytes], width: int, cols: np.ndarray) -> np.ndarray:
    """``decode_deltas`` of the columns ``cols`` only: frames x len(cols) uint64. Each frame is
    still inflated whole, but only the wanted columns of its byte planes are gathered and
    transposed (a range query wanting 32 of a target's 505 series moved every column before)."""
    raws = list(map(_inflate, datas))
    if raws and set(map(len, raws)) != {8 * width}:
        bad = next(len(raw) for raw in raws if len(raw) != 8 * width)
        raise ValueError(f"a frame of {bad} bytes does not hold {width} values")
    planes = np.frombuffer(b"".join(raws), dtype=np.uint8).reshape(len(raws), 8, width)
    picked = planes[:, :, cols]  # frames x 8 x k (a copy)
    return np.ascontiguousarray(picked.transpose(0, 2, 1)).view("<u8").reshape(len(raws), cols.size)


def resolve_chains(
    ts: Sequence[int], bases: Sequence[int | None], deltas: np.ndarray, bounds: Sequence[int]
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Chains of frames decoded (``decode_deltas``), one per run ``bounds[i]:bounds[i+1]``
    (a layout of a target, in time order), each frame whole or XOR'd with the frame of its
    run at its base timestamp: per run (timestamps, frames x series float64), a frame whose
    base is missing (expired, never written) left out. A run whose frames are each whole or
    XOR'd with the one before it (as the writer chains them) is resolved by one cumulative
    XOR over all runs; another, frame by frame."""
    n = len(ts)
    ts_arr = np.asarray(ts, dtype=np.int64)
    # (None as NaN: a timestamp in ms is exact in a float64, and NumPy converts the list in C)
    base_f = np.array(bases, dtype=np.float64) if n else np.zeros(0)
    whole = np.isnan(base_f)
    base_arr = np.where(whole, ts_arr, base_f).astype(np.int64)
    heads = np.asarray(bounds[:-1], dtype=np.int64)
    chained = np.zeros(n, dtype=bool)
    chained[1:] = base_arr[1:] == ts_arr[:-1]
    chained[heads] = False  # (a run's first frame has no frame before it)
    fast = np.logical_and.reduceat(whole | chained, heads).tolist() if n else []
    values = np.empty((0, deltas.shape[1]), dtype=np.uint64)
    if any(fast):
        acc = np.bitwise_xor.accumulate(deltas, axis=0)
        # Each frame: the XOR of the deltas from its chain's whole frame on (in its own run).
        start = np.maximum.accumulate(np.where(whole, np.arange(n), 0))
        before = np.zeros_like(deltas)
        before[1:] = acc[:-1]
        values = acc ^ before[start]
    out = []
    for i, ok in enumerate(fast):
        a, b = bounds[i], bounds[i + 1]
        if ok:
            out.append((ts_arr[a:b], values[a:b].view(np.float64)))
            continue
        done: dict[int, np.ndarray] = {}
        kept: list[int] = []
        for k in range(a, b):
            t, base = ts[k], bases[k]
            if base is None:
                done[t] = deltas[k]
            elif base in done:
                done[t] = done[base] ^ deltas[k]
            else:
                continue
            kept.append(t)
        if kept:
            out.append((np.array(kept, dtype=np.int64), np.stack([done[t] for t in kept]).view(np.float64)))
        else:
            out.append((np.empty(0, dtype=np.int64), np.empty((0, deltas.shape[1]), dtype=np.float64)))
    return out


def frame_matrix(datas: Sequence[bytes], width: int) -> np.ndarray:
    """frames x series int64 bit patterns of frames sharing one layout of ``width`` series."""
    joined = b"".join(datas)
    if len(joined) != 8 * width * len(datas):
        raise ValueError(f"frames of {len(joined)} bytes do not hold {len(datas)} x {width} values")
    return np.frombuffer(joined, dtype=_BITS).reshape(len(datas), width).astype(np.int64, copy=False)


def positions(layout: np.ndarray, wanted: np.ndarray) -> tuple[list[int], list[int]]:
    """The series of ``wanted`` that ``layout`` holds, and their columns in it (column order)."""
    found, cols = LayoutIndex(layout).positions(wanted)
    return found.tolist(), cols.tolist()


class LayoutIndex:
    """A layout's series ids sorted once, for the ``positions`` of many reads."""

    __slots__ = ("ids", "_order", "_ranked")

    def __init__(self, ids: np.ndarray) -> None:
        self.ids = ids
        self._order = np.argsort(ids, kind="stable")
        self._ranked = ids[self._order]

    def positions(self, wanted: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The series of ``wanted`` this layout holds and their columns, in column order."""
        if not self.ids.size or not wanted.size:
            empty = np.empty(0, dtype=np.int64)
            return empty, empty
        at = np.minimum(np.searchsorted(self._ranked, wanted), self._ranked.size - 1)
        hit = self._ranked[at] == wanted
        cols = self._order[at[hit]]
        k = np.argsort(cols, kind="stable")
        return wanted[hit][k], cols[k]


def frame_columns(datas: Sequence[bytes], width: int, cols: Sequence[int]) -> np.ndarray:
    """frames x len(cols) bit patterns of some columns: a few are sliced out of each frame
    (8 bytes each, whatever the frame's width), many through the whole matrix."""
    if len(cols) <= FEW_COLUMNS and len(cols) * 8 < width:
        out = np.empty((len(datas), len(cols)), dtype=np.int64)
        for j, c in enumerate(cols):
            out[:, j] = np.frombuffer(b"".join(d[8 * c : 8 * c + 8] for d in datas), dtype=_BITS)
        return out
    return frame_matrix(datas, width)[:, list(cols)]


def union_matrix(
    layouts: Sequence[np.ndarray], which: np.ndarray, datas: Sequence[bytes]
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """One target's frames (in time order) as (series ids, frames x series bits, presence
    or None when every frame has every series). ``which[k]`` is frame k's layout index."""
    if len(layouts) == 1:
        return layouts[0], frame_matrix(datas, layouts[0].size), None
    ids = np.unique(np.concatenate(layouts))
    bits = np.zeros((len(datas), ids.size), dtype=np.int64)
    present = np.zeros((len(datas), ids.size), dtype=bool)
    for li, lay in enumerate(layouts):
        rows = np.flatnonzero(which == li)
        if rows.size:
            cols = np.searchsorted(ids, lay)
            bits[np.ix_(rows, cols)] = frame_matrix([datas[r] for r in rows.tolist()], lay.size)
            present[np.ix_(rows, cols)] = True
    return ids, bits, present


def span_bounds(ts: np.ndarray, span_ms: int) -> list[tuple[int, int, int]]:
    """(span start, first, end) row ranges of time-ordered ``ts`` per span of ``span_ms``:
    the frames whose transposition makes one chunk row per series."""
    if not ts.size:
        return []
    starts = ts - ts % span_ms
    cuts = [0, *(np.flatnonzero(starts[1:] != starts[:-1]) + 1).tolist(), int(ts.size)]
    return [(int(starts[a]), a, b) for a, b in zip(cuts[:-1], cuts[1:], strict=True)]


def merge_newer(
    ts_old: np.ndarray, v_old: np.ndarray, ts_new: np.ndarray, v_new: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Two ordered, duplicate-free sample runs as one; on an equal timestamp ``new`` wins
    (frames are always newer than the chunk samples of their timestamps)."""
    if not ts_old.size:
        return ts_new, v_new
    if not ts_new.size:
        return ts_old, v_old
    if ts_old[-1] < ts_new[0]:
        return np.concatenate([ts_old, ts_new]), np.concatenate([v_old, v_new])
    ts = np.concatenate([ts_old, ts_new])
    vals = np.concatenate([v_old.view(np.int64), v_new.view(np.int64)])
    order = np.argsort(ts, kind="stable")
    ts, vals = ts[order], vals[order]
    last = np.ones(ts.size, dtype=bool)
    last[:-1] = ts[1:] != ts[:-1]
    return ts[last], vals[last].view(np.float64)
