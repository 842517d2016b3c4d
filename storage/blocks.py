"""Compressed sample blocks: one series' timestamps and float columns in a few hundred bytes.

A block holds ``count`` samples: int64 millisecond timestamps and one or more float64
columns (raw samples have one column; rollup blocks carry count/sum/min/max/last/increase).
Decoding returns exactly what was encoded, bit for bit: NaN payloads (stale markers),
-0.0, infinities and subnormals included. Everything is vectorised with NumPy: there is
no Python loop per sample, only per column and per candidate decimal scale.

Layout (version 3; versions 1 and 2, still read, are described below it)::

    header   u8 version | u8 ncols | varint count | zigzag-varint first_ts | zigzag-varint step
    count >= 2: varint length of the timestamp frame, then that frame: Zstandard level 16
             (magicless, without content size or checksum) of the timestamp section:
               u8 mode, then for i in 1..count-1
               mode 0 (delta): planes(zigzag(delta_i - step))
               mode 2 (grid):  zigzag-varint o, planes(zigzag(k_i - k_(i-1) - 1)), planes(offset_i - o)
                               where ts_i = ts_0 + k_i * step + offset_i (k_0 = 0), o = min(offset)
    payload  Zstandard level 6 (the same frame form) of, per column: u8 mode, then
               mode 0 (xor):     8 byte planes of bits_i XOR bits_{i-1}
               mode 3 (decimal): u8 k, zigzag-varint m_0, zigzag-varint d, planes(zigzag(m_i - m_{i-1} - d))
                                 (i >= 1) where value = m / 10**k and d is the median of m_i - m_{i-1},
                                 u8 has_exceptions [, packbits(mask), raw bits of exceptions]

Version 4 (``share_times``) is a version-3 block whose *times* - the header's varints from
``count`` on, the timestamp frame's length and the frame, which a window's blocks of one
target share - are kept apart by the store (``raw_block_times``), by key::

    u8 4 | u8 ncols | 8-byte key (BLAKE2b of the times) | the version-3 payload

``inline_times`` makes the version-3 block again; ``decode_columns`` takes the times from
its ``times`` argument or the process's ``TIMES``.

Version 5 (``encode_group``, at the end of this module) holds the blocks of many series of
one window in one value; version 6 (``VERSION_PLAIN``) is a version-3 block whose columns are
not compressed, the form the seal hands a store that groups them (never stored).

Version 2 had no timestamp frame: one Zstandard level 6 frame held the timestamp section
(modes 0, and 1 (grid): planes(zigzag(k_i - k_(i-1) - 1)), planes(zigzag(offset_i))) and
the columns (modes 0, and 1 (decimal): u8 k, planes(zigzag(m_i - m_{i-1})) with m_(-1) = 0,
then the exceptions as above). Version 1 was version 2's payload in raw DEFLATE.

``step`` is the block's median interval, so at a steady scrape interval every encoded
timestamp is 0 (delta-of-delta against the steady interval) in either mode; the grid mode
keeps a missed scrape to one small number and a scraper's wake-up lateness (0-2 ms, always
late) to its own size rather than the difference of two, counted from the block's least late
scrape (not its first, whose own lateness would push the others below zero); the cheaper mode
is chosen per block. The timestamp section has a frame of its own at a slow, tight level: the
series of a target share their scrapes' timestamps, so the rollup job's seal
(``encode_blocks``) encodes it once per target and window, not once per series.
A decimal column stores its first integer apart and its deltas from their median, so that a
steadily growing counter's deltas are small numbers of either sign.
Values that are decimals with few digits (counters of bytes, CPU seconds with 2 decimals,
gauges such as load averages) are turned into integers and delta-encoded; values that are
not (stale markers, NaN, -0.0, full-precision floats) are exceptions stored raw. A column
where decimals do not pay off falls back to XOR against the previous value's bits.
``planes(u)`` is: u8 width w (bytes needed by the largest value), then the w low byte
planes of the uint64 array, each contiguous - the high planes of small numbers are zeros
together, which the compressor squeezes to almost nothing.

Version 3 against version 2 on 12,000 node_exporter-shaped series of 720 samples
(``bench/rollup.py``'s generator; a scraper's lateness / aligned timestamps): 1.240 / 1.004
against 1.385 / 1.058 bytes per sample (the lateness' timestamps 0.26 against 0.33), at the
same encoding CPU (``encode_blocks``) and decoding as fast. Version 2's Zstandard level 6
against DEFLATE level 6 (version 1) on 12,000 node_exporter-shaped series
of 720 samples (``bench/rollup.py``'s generator; aligned timestamps / a scraper's lateness):
1.063 / 1.383 against 1.071 / 1.394 bytes per sample, encoding 0.023 / 0.040 against 0.063 /
0.097 us per sample (the rollup job's seal) and decoding 4.5 / 7.6 against 16.5 / 16.7 ns
per sample (every raw read of a sealed hour). Level 1 was 1.4% larger than DEFLATE on
the late timestamps; levels 12-19 save 1-3% more for 4-12x the encoding CPU.
"""

from __future__ import annotations

import hashlib
import threading
import zlib
from collections import OrderedDict
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import zstandard

from common.sequences import slices
from common.varint import VarintError, get_uvarint, put_uvarint

VERSION = 3  # written; VERSION_ONE_FRAME and VERSION_DEFLATE blocks are read too
# A version-3 block whose timestamp frame is stored apart, by key (``share_times``): written by
# stores that keep the frames (``TIMES``), read by any code that reads version 4
VERSION_SHARED_TIMES = 4
VERSION_ONE_FRAME = 2
VERSION_DEFLATE = 1
# A window's blocks of a target's series, grouped and compressed together (``encode_group``)
VERSION_GROUP = 5
# A version-3 block whose columns are not compressed: what the seal hands a store that groups
# blocks (``encode_group``); never stored as it is
VERSION_PLAIN = 6
ZSTD_LEVEL = 6
ZSTD_LEVEL_TIMESTAMPS = 16  # btopt: ~20% smaller than 6 on a scraper's lateness, ~25 us a section
MAX_DECIMALS = 12  # largest k tried for value = m / 10**k
MAX_EXACT_INT = float(2**53)
MODE_XOR = 0
MODE_DECIMAL = 1  # version 2 (m_(-1) = 0, no median)
MODE_DECIMAL_MEDIAN = 3
TS_DELTA = 0
TS_GRID = 1  # version 2 (offsets from the first timestamp's slot, zigzagged)
TS_GRID_MIN = 2

_POW10 = [10.0**k for k in range(MAX_DECIMALS + 1)]


class BlockError(ValueError):
    """A block could not be decoded (truncated, corrupt or from a newer version)."""


@dataclass(slots=True)
class Block:
    """A decoded block: timestamps (int64 ms) and float64 columns of equal length."""

    timestamps: np.ndarray
    columns: list[np.ndarray]

    @property
    def values(self) -> np.ndarray:
        """The first column (the samples of a raw block)."""
        return self.columns[0]

    def __len__(self) -> int:
        return int(self.timestamps.shape[0])


# -- the payload's compression ----------------------------------------------------------------

_codecs = threading.local()  # a thread's Zstandard contexts (one may not serve two threads at once)

_Codecs = tuple[zstandard.ZstdCompressor, zstandard.ZstdCompressor, zstandard.ZstdDecompressor]


def _zstd() -> _Codecs:
    """This thread's (values' compressor, timestamps' compressor, decompressor)."""
    got: _Codecs | None = getattr(_codecs, "zstd", None)
    if got is None:
        def compressor(level: int) -> zstandard.ZstdCompressor:
            params = zstandard.ZstdCompressionParameters.from_level(
                level, format=zstandard.FORMAT_ZSTD1_MAGICLESS, write_content_size=False,
                write_checksum=False, write_dict_id=False)
            return zstandard.ZstdCompressor(compression_params=params)

        got = _codecs.zstd = (compressor(ZSTD_LEVEL), compressor(ZSTD_LEVEL_TIMESTAMPS),
                              # our frames declare windows of at most 2**22; a corrupt header's
                              # larger one is an error, not an allocation (a MemoryError before)
                              zstandard.ZstdDecompressor(format=zstandard.FORMAT_ZSTD1_MAGICLESS,
                                                         max_window_size=1 << 23))
    return got


def _compress(payload: bytes) -> bytes:
    return _zstd()[0].compress(payload)


def _compress_timestamps(section: bytes) -> bytes:
    return _zstd()[1].compress(section)


def _decompress(version: int, data: memoryview, limit: int) -> bytes:
    """A block's payload; ``limit`` bounds what a corrupt block can make us allocate."""
    if version == VERSION_DEFLATE:
        try:
            d = zlib.decompressobj(-15)
            payload = d.decompress(data, limit)
        except zlib.error as exc:
            raise BlockError(f"corrupt block payload: {exc}") from exc
        if not d.eof:
            raise BlockError("truncated block payload")
        return payload
    if data and data[0] & 0xE0:
        # our frames carry no content size (nor the single-segment flag that implies one); a
        # corrupt one's would make the decompressor allocate that size whatever ``limit`` says
        raise BlockError("corrupt block payload: a frame with a content size")
    try:
        return _zstd()[2].decompress(data, max_output_size=limit)
    except zstandard.ZstdError as exc:
        raise BlockError(f"corrupt or truncated block payload: {exc}") from exc


# -- scalar varints (a handful per block) ---------------------------------------------------


def _zigzag_int(x: int) -> int:
    return (x << 1) if x >= 0 else ((-x) << 1) - 1


def _unzigzag_int(u: int) -> int:
    return (u >> 1) if not u & 1 else -((u + 1) >> 1)


def _get_varint(buf: bytes | memoryview, pos: int) -> tuple[int, int]:
    try:
        return get_uvarint(buf, pos)
    except VarintError as exc:
        raise BlockError(f"corrupt block header: {exc}") from None


# -- vectorised pieces ----------------------------------------------------------------------


def _zigzag(x: np.ndarray) -> np.ndarray:
    """int64 -> uint64 with small magnitudes (either sign) mapped to small numbers."""
    x = x.astype(np.int64, copy=False)
    return ((x << 1) ^ (x >> 63)).view(np.uint64)


def _unzigzag(u: np.ndarray) -> np.ndarray:
    u = u.astype(np.uint64, copy=False)
    return ((u >> np.uint64(1)) ^ (np.uint64(0) - (u & np.uint64(1)))).view(np.int64)


def _planes(u: np.ndarray, out: list[bytes]) -> None:
    """Append width byte and the low byte planes of a uint64 array."""
    if u.size == 0:
        out.append(b"\x00")
        return
    width = (int(u.max()).bit_length() + 7) // 8
    out.append(bytes((width,)))
    if width:
        b = u.astype("<u8", copy=False).view(np.uint8).reshape(-1, 8)[:, :width]
        out.append(np.ascontiguousarray(b.T).tobytes())


def _read_planes(buf: memoryview, pos: int, n: int) -> tuple[np.ndarray, int]:
    if pos >= len(buf):
        raise BlockError("truncated block payload")
    width = buf[pos]
    pos += 1
    if width > 8:
        raise BlockError(f"corrupt block: byte width {width}")
    end = pos + width * n
    if end > len(buf):
        raise BlockError("truncated block payload")
    out = np.zeros((n, 8), dtype=np.uint8)
    if width and n:
        out[:, :width] = np.frombuffer(buf[pos:end], dtype=np.uint8).reshape(width, n).T
    return out.view("<u8").reshape(n).astype(np.uint64, copy=False), end


def _choose_decimals(values: np.ndarray) -> tuple[int, np.ndarray, np.ndarray] | None:
    """Smallest scale k such that most values are exactly m / 10**k with |m| < 2**53.

    Returns (k, m as int64 with exceptions forward-filled, exception mask) or None when
    fewer than half of the values qualify (then XOR encoding is used).
    """
    bits = values.view(np.int64)
    n = values.shape[0]
    best: tuple[int, np.ndarray, np.ndarray] | None = None
    best_ok = 0
    with np.errstate(invalid="ignore", over="ignore"):
        finite = np.isfinite(values)
        for k in range(MAX_DECIMALS + 1):
            p = _POW10[k]
            # "+ 0.0" turns -0.0 into 0.0, as the int64 the decoder sees would.
            m = (np.rint(values * p) if k else np.rint(values)) + 0.0
            ok = finite & (np.abs(m) < MAX_EXACT_INT)
            ok &= (np.where(ok, m, 0.0) / p).view(np.int64) == bits
            n_ok = int(np.count_nonzero(ok))
            if n_ok > best_ok:
                best, best_ok = (k, m, ok), n_ok
                if n_ok == n:
                    break
    if best is None or best_ok * 2 < n:
        return None
    k, m, ok = best
    m = np.where(ok, m, 0.0).astype(np.int64)
    if best_ok < n:
        # Forward-fill exceptions with the previous good integer so their delta is 0.
        idx = np.where(ok, np.arange(n), -1)
        np.maximum.accumulate(idx, out=idx)
        m = np.where(idx >= 0, m[np.maximum(idx, 0)], 0)
    return k, m, ~ok


def _encode_timestamps(ts: np.ndarray) -> tuple[int, bytes]:
    """The block's step (median interval) and timestamp section (n >= 2).

    Mode 0 stores ``delta_i - step``. Mode 2 stores each timestamp as a slot number on the
    grid ``ts_0 + k * step`` (as ``k_i - k_(i-1) - 1``: 0 at a steady interval, 1 for a
    missed scrape) plus its offset from that slot, less the least offset (a scraper's
    wake-up lateness, counted from its least late scrape). The mode with the smaller sum of
    the numbers it stores is kept. All arithmetic wraps modulo 2**64 exactly as the
    decoder's, so any int64 timestamps round-trip.
    """
    deltas = np.diff(ts)
    step = int(np.partition(deltas, deltas.shape[0] // 2)[deltas.shape[0] // 2])
    zd = _zigzag(deltas - np.int64(step))
    if step > 0:
        with np.errstate(over="ignore"):
            rel = ts[1:] - ts[0]
            k = (rel + np.int64(step // 2)) // np.int64(step)
            off = rel - k * np.int64(step)
            dk = np.empty_like(k)
            dk[0] = k[0]  # the slot before k[0] is ts_0 own slot 0; "- 1" is applied below
            np.subtract(k[1:], k[:-1], out=dk[1:])
            dk -= 1
            least = int(off.min())
            u = (off - np.int64(least)).view(np.uint64)
        zk = _zigzag(dk)
        if float(zk.sum(dtype=np.float64)) + float(u.sum(dtype=np.float64)) < float(zd.sum(dtype=np.float64)):
            head = bytearray((TS_GRID_MIN,))
            put_uvarint(head, _zigzag_int(least))
            out = [bytes(head)]
            _planes(zk, out)
            _planes(u, out)
            return step, b"".join(out)
    out = [bytes((TS_DELTA,))]
    _planes(zd, out)
    return step, b"".join(out)


def _median_int(d: np.ndarray) -> np.ndarray:
    """Per row of an int64 matrix (rows, m >= 1), the element at ``(m - 1) // 2`` of its sorted
    values (a median that is one of the numbers)."""
    at = (d.shape[1] - 1) // 2
    return np.partition(d, at, axis=1)[:, at]


def _decimal_head(k: int, m0: int, med: int) -> bytes:
    head = bytearray((MODE_DECIMAL_MEDIAN, k))
    put_uvarint(head, _zigzag_int(m0))
    put_uvarint(head, _zigzag_int(med))
    return bytes(head)


def _decimal_pays(width: int | np.ndarray, exceptions: int | np.ndarray, n: int) -> bool | np.ndarray:
    """Whether a decimal column (deltas ``width`` bytes wide, ``exceptions`` values raw) is
    smaller before compression than XOR's 8 bytes a sample: a column of full-precision floats
    that half fit a scale, as wide integers, would cost more (issue #20)."""
    mask = np.where(exceptions > 0, (n + 7) // 8 + 8 * exceptions, 0)
    pays: bool | np.ndarray = width * (n - 1) + mask < 8 * n
    return pays


def _encode_column(values: np.ndarray, out: list[bytes]) -> None:
    values = np.ascontiguousarray(values, dtype=np.float64)
    dec = _choose_decimals(values) if values.size else None
    if dec is not None:
        k, m, exc = dec
        d = np.diff(m)
        med = int(_median_int(d[None, :])[0]) if d.size else 0
        zz = _zigzag(d - np.int64(med))
        width = (int(zz.max()).bit_length() + 7) // 8 if zz.size else 0
        if not _decimal_pays(width, int(np.count_nonzero(exc)), values.shape[0]):
            dec = None
    if dec is None:
        bits = values.view(np.uint64)
        x = bits.copy()
        x[1:] ^= bits[:-1]
        out.append(bytes((MODE_XOR,)))
        if x.size:
            out.append(
                np.ascontiguousarray(x.astype("<u8", copy=False).view(np.uint8).reshape(-1, 8).T).tobytes()
            )
        return
    out.append(_decimal_head(k, int(m[0]), med))
    _planes(zz, out)
    if exc.any():
        out.append(b"\x01")
        out.append(np.packbits(exc).tobytes())
        out.append(values.view("<u8")[exc].tobytes())
    else:
        out.append(b"\x00")


def _decode_column(buf: memoryview, pos: int, n: int) -> tuple[np.ndarray, int]:
    if pos >= len(buf):
        raise BlockError("truncated block payload")
    mode = buf[pos]
    pos += 1
    if mode == MODE_XOR:
        end = pos + 8 * n
        if end > len(buf):
            raise BlockError("truncated block payload")
        x = np.ascontiguousarray(np.frombuffer(buf[pos:end], dtype=np.uint8).reshape(8, n).T)
        bits = np.bitwise_xor.accumulate(x.view("<u8").reshape(n).astype(np.uint64))
        return bits.view(np.float64), end
    if mode not in (MODE_DECIMAL, MODE_DECIMAL_MEDIAN):
        raise BlockError(f"corrupt block: column mode {mode}")
    if pos >= len(buf):
        raise BlockError("truncated block payload")
    k = buf[pos]
    pos += 1
    if k > MAX_DECIMALS:
        raise BlockError(f"corrupt block: decimal scale {k}")
    if mode == MODE_DECIMAL:
        zz, pos = _read_planes(buf, pos, n)
        m = np.cumsum(_unzigzag(zz), dtype=np.int64)
    else:
        m0, pos = _get_varint(buf, pos)
        med, pos = _get_varint(buf, pos)
        m0, med = _unzigzag_int(m0), _unzigzag_int(med)
        if not (-(2**63) <= m0 < 2**63 and -(2**63) <= med < 2**63):
            raise BlockError("corrupt block: decimal column")
        zz, pos = _read_planes(buf, pos, n - 1)
        m = np.empty(n, dtype=np.int64)
        m[0] = m0
        with np.errstate(over="ignore"):
            m[1:] = _unzigzag(zz) + np.int64(med)
            np.cumsum(m, out=m)
    values = m.astype(np.float64) / _POW10[k] if k else m.astype(np.float64)
    if pos >= len(buf):
        raise BlockError("truncated block payload")
    has_exc = buf[pos]
    pos += 1
    if has_exc:
        nbytes = (n + 7) // 8
        if pos + nbytes > len(buf):
            raise BlockError("truncated block payload")
        mask = np.unpackbits(np.frombuffer(buf[pos : pos + nbytes], dtype=np.uint8), count=n).astype(bool)
        pos += nbytes
        n_exc = int(np.count_nonzero(mask))
        end = pos + 8 * n_exc
        if end > len(buf):
            raise BlockError("truncated block payload")
        bits = values.view(np.uint64)
        bits[mask] = np.frombuffer(buf[pos:end], dtype="<u8")
        pos = end
    return values, pos


# -- public API -----------------------------------------------------------------------------


def encode_columns(
    timestamps: np.ndarray | Sequence[int], columns: Sequence[np.ndarray] | Mapping[str, np.ndarray],
    plain: bool = False,
) -> bytes:
    """Encode timestamps and float64 columns of the same length into one block (``plain``:
    the columns not compressed, ``VERSION_PLAIN``, for ``encode_group``)."""
    ts = np.ascontiguousarray(timestamps, dtype=np.int64)
    cols = list(columns.values()) if isinstance(columns, Mapping) else list(columns)
    n = int(ts.shape[0])
    if not 1 <= len(cols) <= 255:
        raise ValueError(f"a block holds 1 to 255 columns, got {len(cols)}")
    arrays = [np.ascontiguousarray(c, dtype=np.float64) for c in cols]
    for i, a in enumerate(arrays):
        if a.ndim != 1 or a.shape[0] != n:
            raise ValueError(f"column {i} has shape {a.shape}, timestamps have {n} samples")
    parts: list[bytes] = []
    for a in arrays:
        _encode_column(a, parts)
    if plain:
        return _block_head(ts, len(arrays), VERSION_PLAIN) + b"".join(parts)
    return _block_head(ts, len(arrays)) + _compress(b"".join(parts))


def _block_head(ts: np.ndarray, ncols: int, version: int = VERSION) -> bytes:
    """A block's header and timestamp frame."""
    n = int(ts.shape[0])
    step, section = _encode_timestamps(ts) if n > 1 else (0, b"")
    header = bytearray((version, ncols))
    put_uvarint(header, n)
    put_uvarint(header, _zigzag_int(int(ts[0]) if n else 0))
    put_uvarint(header, _zigzag_int(step))
    if n > 1:
        frame = _compress_timestamps(section)
        put_uvarint(header, len(frame))
        header += frame
    return bytes(header)


def encode_block(
    timestamps: np.ndarray | Sequence[int], values: np.ndarray | Sequence[float], plain: bool = False
) -> bytes:
    """Encode one series' raw samples (timestamps in ms, float64 values; ``plain``: see ``encode_columns``)."""
    return encode_columns(timestamps, [np.asarray(values, dtype=np.float64)], plain)


def block_header(data: bytes) -> tuple[int, int, int, int]:
    """(version, ncols, count, first_ts) of a block without decompressing it."""
    version, ncols, count, first, _step, _pos = _parse_header(memoryview(data))
    return version, ncols, count, first


def _parse_header(buf: memoryview) -> tuple[int, int, int, int, int, int]:
    if len(buf) < 2:
        raise BlockError("truncated block header")
    version, ncols = buf[0], buf[1]
    if version not in (VERSION, VERSION_ONE_FRAME, VERSION_DEFLATE, VERSION_PLAIN):
        if version == VERSION_SHARED_TIMES:
            raise BlockError("a block of version 4 has its header with its timestamp frame (inline_times)")
        raise BlockError(
            f"block version {version} is not supported (this code reads {VERSION_DEFLATE}-{VERSION_SHARED_TIMES})"
        )
    count, pos = _get_varint(buf, 2)
    first_z, pos = _get_varint(buf, pos)
    step_z, pos = _get_varint(buf, pos)
    first, step = _unzigzag_int(first_z), _unzigzag_int(step_z)
    if not (-(2**63) <= first < 2**63 and -(2**63) <= step < 2**63):
        raise BlockError("corrupt block header")
    return version, ncols, count, first, step, pos


def decode_columns(data: bytes, times: Mapping[int, bytes] | None = None) -> Block:
    """Decode a block into timestamps and its columns, bit for bit as encoded. A version-4
    block's header and timestamp frame come from ``times`` (by key), else from ``TIMES``."""
    if data[:1] == b"\x04":
        key = times_key(data)
        got = times.get(key) if times is not None else None
        data = inline_times(data, got if got is not None else TIMES.frame(key))
    buf = memoryview(data)
    version, ncols, n, first, step, pos = _parse_header(buf)
    if n > 1 << 31:
        raise BlockError(f"corrupt block: count {n}")
    ts = np.empty(n, dtype=np.int64)
    if n:
        ts[0] = first
    limit = (ncols * 17 + 17) * max(n, 1) + 64 * (ncols + 1)
    if version in (VERSION, VERSION_PLAIN) and n > 1:
        size, pos = _get_varint(buf, pos)
        if pos + size > len(buf):
            raise BlockError("truncated block timestamps")
        section = memoryview(_decompress(version, buf[pos : pos + size], 17 * n + 64))
        pos += size
        if _decode_timestamps(section, ts, step) != len(section):
            raise BlockError("corrupt block: bytes left over after the timestamps")
    payload = buf[pos:] if version == VERSION_PLAIN else memoryview(_decompress(version, buf[pos:], limit))
    p = 0
    if version not in (VERSION, VERSION_PLAIN) and n > 1:
        p = _decode_timestamps(payload, ts, step)
    return _group_columns(payload, ts, ncols, p)


def _decode_timestamps(payload: memoryview, ts: np.ndarray, step: int) -> int:
    """Fill ``ts[1:]`` (``ts[0]`` set) from a timestamp section; returns the position after it."""
    n = ts.shape[0]
    if not payload:
        raise BlockError("truncated block payload")
    ts_mode = payload[0]
    first = int(ts[0])
    with np.errstate(over="ignore"):
        if ts_mode == TS_DELTA:
            zz, p = _read_planes(payload, 1, n - 1)
            ts[1:] = _unzigzag(zz) + np.int64(step)
            np.cumsum(ts, out=ts)
        elif ts_mode in (TS_GRID, TS_GRID_MIN):
            least, p = 0, 1
            if ts_mode == TS_GRID_MIN:
                least_z, p = _get_varint(payload, 1)
                least = _unzigzag_int(least_z)
                if not -(2**63) <= least < 2**63:
                    raise BlockError("corrupt block: timestamp offset")
            steady = p < len(payload) and payload[p] == 0  # no missed scrape: k_i = i
            zk, p = _read_planes(payload, p, n - 1)
            zo, p = _read_planes(payload, p, n - 1)
            off = zo.view(np.int64) + np.int64(least) if ts_mode == TS_GRID_MIN else _unzigzag(zo)
            if steady and -(2**62) < first < 2**62 and 0 < step and n * step < 2**62:
                ts[1:] = np.arange(first + step, first + n * step, step, dtype=np.int64)[: n - 1]
            else:
                k = np.cumsum(_unzigzag(zk) + np.int64(1), dtype=np.int64)
                ts[1:] = k * np.int64(step) + np.int64(first)
            ts[1:] += off
        else:
            raise BlockError(f"corrupt block: timestamp mode {ts_mode}")
    return p


def decode_block(data: bytes, times: Mapping[int, bytes] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Decode a raw-sample block into (timestamps int64 ms, values float64) (``times``: see
    ``decode_columns``)."""
    b = decode_columns(data, times)
    if len(b.columns) != 1:
        raise BlockError(f"expected a raw block with 1 column, found {len(b.columns)}")
    return b.timestamps, b.columns[0]


# -- timestamp frames kept apart (version 4) -------------------------------------------------
#
# The series of a target share their scrapes' timestamps, so a window's blocks of one target
# carry the same count, first timestamp, step and timestamp frame: ~55 of a 109-sample
# block's ~190 bytes, ~200 of a 720-sample one's ~900. A store that keeps them by key
# (``raw_block_times``) writes such blocks as version 4: the version and column bytes, the
# 8-byte key of that shared part (its *times*: the version-3 header's varints from the count
# on, the frame's length and the frame), then the version-3 block's columns. The key is a
# hash of the times, so they are stored once per key whatever writes them, and a key never
# names two (64 bits: ~1e-11 odds of a collision among the ~20,000 distinct ones a window
# has at 10 M series, each looked up by its window).

TIMES_KEY_BYTES = 8
SHARE_MIN_FRAME = 16  # a shorter timestamp frame stays in its blocks: it saves less than a lookup costs
TIMES_CACHE_BYTES = 8 << 20  # times kept by the process (~60-250 B each)


class MissingTimes(BlockError):
    """A version-4 block whose times are not loaded (``TIMES.add`` them, or pass them)."""


class TimesCache:
    """The process's block times by key, least recently used dropped first. A key names one
    value for good (content-addressed), so what is kept is never stale."""

    def __init__(self, max_bytes: int = TIMES_CACHE_BYTES) -> None:
        self.max_bytes = max_bytes
        self._frames: OrderedDict[int, bytes] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def frame(self, key: int) -> bytes:
        with self._lock:
            got = self._frames.get(key)
            if got is None:
                raise MissingTimes(f"the times {key:#x} of a block are not loaded")
            self._frames.move_to_end(key)
            return got

    def frames(self, keys: Iterable[int]) -> dict[int, bytes]:
        """The times held of ``keys``, by key."""
        out: dict[int, bytes] = {}
        with self._lock:
            for k in keys:
                got = self._frames.get(k)
                if got is not None:
                    self._frames.move_to_end(k)
                    out[k] = got
        return out

    def add(self, frames: Iterable[tuple[int, bytes]]) -> None:
        with self._lock:
            for key, frame in frames:
                frame = bytes(frame)
                old = self._frames.pop(key, None)
                if old is not None:
                    self._bytes -= len(old)
                self._frames[key] = frame
                self._bytes += len(frame)
            while self._bytes > self.max_bytes and len(self._frames) > 1:
                _, dropped = self._frames.popitem(last=False)
                self._bytes -= len(dropped)

    def clear(self) -> None:
        with self._lock:
            self._frames.clear()
            self._bytes = 0


TIMES = TimesCache()


def times_key(data: bytes | memoryview) -> int:
    """The key of a version-4 block's times (signed 64-bit, as the stores keep it)."""
    if len(data) < 2 + TIMES_KEY_BYTES:
        raise BlockError("truncated block header")
    return int.from_bytes(data[2 : 2 + TIMES_KEY_BYTES], "little", signed=True)


def times_keys(datas: Iterable[bytes]) -> set[int]:
    """The keys of the times the version-4 blocks among ``datas`` need."""
    return {times_key(d) for d in datas if d and d[0] == VERSION_SHARED_TIMES}


def inline_times(data: bytes, times: bytes) -> bytes:
    """A version-4 block as the version-3 block it was made from, given its times."""
    if len(data) < 2 + TIMES_KEY_BYTES:
        raise BlockError("truncated block header")
    return bytes((VERSION, data[1])) + times + data[2 + TIMES_KEY_BYTES :]


_SHARE_PROBE = 16  # a block's first bytes that ``share_times`` looks its header up by


def _times_span(d: bytes) -> tuple[tuple[bytes, int] | None, int]:
    """A version-3 block's (times, end of the times) when they may be shared (two samples or
    more, a timestamp frame of SHARE_MIN_FRAME bytes at least), else None; and how many of
    its first bytes decided it."""
    buf = memoryview(d)
    _, _, n, _, _, pos = _parse_header(buf)
    if n < 2:
        return None, pos
    size, at = _get_varint(buf, pos)
    if size < SHARE_MIN_FRAME:  # (aligned scrapes: a frame of a few bytes)
        return None, at
    return (d[2 : at + size], at + size), at + size  # count, first, step, the frame's length and the frame


def share_times(datas: Sequence[bytes], min_share: int = 2) -> tuple[list[bytes], dict[int, bytes]]:
    """``datas`` with each version-3 block whose times (a timestamp frame of
    ``SHARE_MIN_FRAME`` bytes at least) at least ``min_share`` of them have rewritten as
    version 4, and those times by key: the store keeps them (before the blocks), readers
    pass them to ``decode_columns`` or ``TIMES.add`` them. Other blocks are returned as they are."""
    spans: list[tuple[bytes, int] | None] = []
    uses: dict[bytes, int] = {}
    # A block that starts with the bytes another one's header was read from (up to its times'
    # end) has that header and times: a target's blocks are parsed once, not one by one.
    seen: dict[bytes, tuple[bytes, tuple[bytes, int] | None]] = {}  # first bytes -> (bytes read, span)
    for d in datas:
        if len(d) < 2 or d[0] != VERSION:
            spans.append(None)
            continue
        known = seen.get(d[:_SHARE_PROBE])
        if known is not None and d.startswith(known[0]):
            span = known[1]
        else:
            span, read = _times_span(d)
            seen[d[:_SHARE_PROBE]] = (d[:read], span)
        spans.append(span)
        if span is not None:
            uses[span[0]] = uses.get(span[0], 0) + 1
    keys: dict[bytes, bytes] = {}
    frames: dict[int, bytes] = {}
    out: list[bytes] = []
    for d, span in zip(datas, spans, strict=True):
        if span is None or uses[span[0]] < min_share:
            out.append(d)
            continue
        times, end = span
        key = keys.get(times)
        if key is None:
            key = keys[times] = hashlib.blake2b(times, digest_size=TIMES_KEY_BYTES).digest()
            frames[int.from_bytes(key, "little", signed=True)] = times
        out.append(bytes((VERSION_SHARED_TIMES, d[1])) + key + d[end:])
    return out, frames


# -- many blocks at once --------------------------------------------------------------------
#
# The rollup job seals every series of a shard window. Per block the codec above makes some
# fifty NumPy calls, which cost more than the arithmetic for a block of a few dozen samples;
# ``encode_blocks`` encodes the blocks of equal sample count as rows of one matrix, and the
# timestamp section once per distinct timestamp row (a target's series share their scrapes'
# timestamps), then assembles and compresses each block. Every block is byte for byte
# ``encode_block`` of its samples.

_WIDTH_AT = np.array([1 << (8 * j) for j in range(8)], dtype=np.uint64)


def _widths(u: np.ndarray) -> np.ndarray:
    """Per row of a uint64 matrix, the bytes its largest value needs (``_planes``' width)."""
    widths: np.ndarray = np.count_nonzero(u.max(axis=1)[:, None] >= _WIDTH_AT[None, :], axis=1)
    return widths


def _plane_rows(u: np.ndarray) -> tuple[bytes, int]:
    """The byte planes of every row of a (rows, n) uint64 matrix as one bytes value (row r's
    plane j at ``(r * 8 + j) * n``), and the stride of a row (``8 * n``)."""
    rows, n = u.shape
    planes = np.ascontiguousarray(u.astype("<u8", copy=False).view(np.uint8).reshape(rows, n, 8).transpose(0, 2, 1))
    return planes.tobytes(), 8 * n


_HEAD = 16  # values of a row whose scales guess the row's (``_choose_decimals_rows``)


def _choose_decimals_rows(values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``_choose_decimals`` of every row of a (rows, n) matrix: per row the scale k (-1 where
    the row goes XOR), the integers m (exceptions forward-filled), the exception mask and
    whether the row goes decimal.

    First a guess per row: the largest of the least scales its first ``_HEAD`` values need.
    A row whose every value fits that scale takes it - the scan below would too: a smaller
    scale misses at least the value that needed this one, and the scan keeps the first
    scale that fits every value. The other rows (exceptions, full-precision floats) are
    scanned scale by scale, as ``_choose_decimals`` does."""
    rows, n = values.shape
    bits = values.view(np.int64)
    best_k = np.full(rows, -1, dtype=np.int64)
    best_ok_n = np.zeros(rows, dtype=np.int64)
    best_m = np.zeros((rows, n), dtype=np.float64)
    best_ok = np.zeros((rows, n), dtype=bool)
    with np.errstate(invalid="ignore", over="ignore"):
        finite = np.isfinite(values)
        head, head_bits, head_fin = values[:, :_HEAD], bits[:, :_HEAD], finite[:, :_HEAD]
        least = np.full(head.shape, MAX_DECIMALS + 1, dtype=np.int64)
        for k in range(MAX_DECIMALS + 1):
            p = _POW10[k]
            m = (np.rint(head * p) if k else np.rint(head)) + 0.0
            ok = head_fin & (np.abs(m) < MAX_EXACT_INT)
            ok &= (np.where(ok, m, 0.0) / p).view(np.int64) == head_bits
            least[ok & (least > k)] = k
        guess = least.max(axis=1)
        tried = np.flatnonzero(guess <= MAX_DECIMALS)
        if tried.size:
            p_rows = np.array(_POW10)[guess[tried]][:, None]
            v = values[tried]
            m = np.rint(v * p_rows) + 0.0
            ok = finite[tried] & (np.abs(m) < MAX_EXACT_INT)
            ok &= (np.where(ok, m, 0.0) / p_rows).view(np.int64) == bits[tried]
            fits = ok.all(axis=1)
            done = tried[fits]
            best_k[done] = guess[done]
            best_ok_n[done] = n
            best_m[done] = m[fits]
            best_ok[done] = True
        active = np.flatnonzero(best_ok_n < n) if n else np.empty(0, dtype=np.int64)
        for k in range(MAX_DECIMALS + 1):
            if not active.size:
                break
            v, b, fin = values[active], bits[active], finite[active]
            p = _POW10[k]
            m = (np.rint(v * p) if k else np.rint(v)) + 0.0
            ok = fin & (np.abs(m) < MAX_EXACT_INT)
            ok &= (np.where(ok, m, 0.0) / p).view(np.int64) == b
            n_ok = np.count_nonzero(ok, axis=1)
            better = n_ok > best_ok_n[active]
            rows_better = active[better]
            best_k[rows_better] = k
            best_ok_n[rows_better] = n_ok[better]
            best_m[rows_better] = m[better]
            best_ok[rows_better] = ok[better]
            active = active[~(better & (n_ok == n))]  # a row whose every value fits is done
    use = (best_k >= 0) & (best_ok_n * 2 >= n)
    best_k[~use] = -1
    m_int = np.where(best_ok, best_m, 0.0).astype(np.int64)
    gaps = np.flatnonzero(best_ok_n < n)  # rows with exceptions: forward-fill them
    if gaps.size:
        ok_g = best_ok[gaps]
        idx = np.where(ok_g, np.arange(n), -1)
        np.maximum.accumulate(idx, axis=1, out=idx)
        m_int[gaps] = np.where(idx >= 0, np.take_along_axis(m_int[gaps], np.maximum(idx, 0), axis=1), 0)
    return best_k, m_int, ~best_ok, use


def _encode_rows(ts: np.ndarray, values: np.ndarray, plain: bool = False) -> list[bytes]:
    """``encode_block`` of every row of (rows, n >= 2) matrices of timestamps and values."""
    rows, n = values.shape
    # Headers and timestamp frames: once per distinct timestamp row.
    ts_bytes, row_len = ts.tobytes(), 8 * n
    heads_of: dict[bytes, bytes] = {}
    heads: list[bytes] = []
    for r in range(rows):
        key = ts_bytes[r * row_len : (r + 1) * row_len]
        known = heads_of.get(key)
        if known is None:
            known = heads_of[key] = _block_head(ts[r], 1, VERSION_PLAIN if plain else VERSION)
        heads.append(known)
    k, m, exc, use = _choose_decimals_rows(values)
    # Decimal rows: zigzagged deltas of m less their median, in byte planes.
    d = m[:, 1:] - m[:, :-1]
    med = _median_int(d)
    zz = _zigzag(d - med[:, None])
    width_of = _widths(zz)
    use &= _decimal_pays(width_of, np.count_nonzero(exc, axis=1), n)
    widths = width_of.tolist()
    dec_planes, stride = _plane_rows(zz)
    # XOR rows (only those): every byte plane of bits_i XOR bits_(i-1).
    xor_rows = np.flatnonzero(~use)
    xor_at = np.zeros(rows, dtype=np.int64)
    xor_at[xor_rows] = np.arange(xor_rows.shape[0])
    bits = values[xor_rows].view(np.uint64)
    x = bits.copy()
    x[:, 1:] ^= bits[:, :-1]
    xor_planes, xor_stride = _plane_rows(x)
    xor_list = xor_at.tolist()
    has_exc = (exc & use[:, None]).any(axis=1)
    packed = np.packbits(exc, axis=1)
    out: list[bytes] = []
    k_list, use_list, exc_list = k.tolist(), use.tolist(), has_exc.tolist()
    m0_list, med_list = m[:, 0].tolist(), med.tolist()
    for r, head in enumerate(heads):
        if use_list[r]:
            at = r * stride
            col = [_decimal_head(k_list[r], m0_list[r], med_list[r]), bytes((widths[r],)),
                   dec_planes[at : at + widths[r] * (n - 1)]]
            if exc_list[r]:
                col += [b"\x01", packed[r].tobytes(), values[r].view("<u8")[exc[r]].tobytes()]
            else:
                col.append(b"\x00")
        else:
            at = xor_list[r] * xor_stride
            col = [bytes((MODE_XOR,)), xor_planes[at : at + xor_stride]]
        out.append(head + (b"".join(col) if plain else _compress(b"".join(col))))
    return out


def encode_blocks(timestamps: np.ndarray, values: np.ndarray, bounds: np.ndarray, plain: bool = False) -> list[bytes]:
    """``encode_block`` of many series at once: block ``i`` holds rows ``bounds[i]:bounds[i + 1]``
    of ``timestamps`` (int64 ms) and ``values`` (float64); each block byte for byte as
    ``encode_block`` makes it (``plain``: as ``encode_block(..., plain=True)``)."""
    ts = np.ascontiguousarray(timestamps, dtype=np.int64)
    vals = np.ascontiguousarray(values, dtype=np.float64)
    bounds = np.asarray(bounds, dtype=np.int64)
    counts = np.diff(bounds)
    out: list[bytes | None] = [None] * counts.shape[0]
    for n in np.unique(counts).tolist():
        idx = np.flatnonzero(counts == n)
        if n < 2:
            for i in idx.tolist():
                out[i] = encode_block(ts[bounds[i] : bounds[i + 1]], vals[bounds[i] : bounds[i + 1]], plain)
            continue
        at = bounds[idx][:, None] + np.arange(n)
        for i, block in zip(idx.tolist(), _encode_rows(ts[at], vals[at], plain), strict=True):
            out[i] = block
    return out  # type: ignore[return-value]  # every slot filled above


# -- a window's blocks of many series in one value (version 5) --------------------------------
#
# At a short window a block is small (~140 bytes at 108 samples), and what each block carries
# on its own - its Zstandard frame's header and tables, its header, a store's row and index
# entries - is a large share of it. ``encode_group`` joins the plain blocks (``VERSION_PLAIN``)
# of many series of one window into one value: their times (a target's series share them)
# once each, their columns compressed together in frames of ``GROUP_FRAME_SERIES`` series, so
# a read of one series decompresses its frame only::
#
#     u8 5 | u8 ncols | varint n | varint n_times | varint n_frames
#     n_times x (varint length, times: a version-3 header's varints from count on, and when
#                count >= 2 the timestamp frame's length and the frame)
#     n_frames x (varint series, varint bytes, varint bytes decompressed)
#     the frames: each Zstandard (``GROUP_ZSTD_LEVEL``, the blocks' frame form) of, per series
#                 of the frame, varint times index and varint payload length, then the payloads
#                 (the columns, as a version-3 block's payload holds them)
#
# The series ids are not in the value: the store keeps them beside it (``group_members``'s
# order, int64 each), so that it reads who is in a group without the group.

GROUP_FRAME_SERIES = 8
GROUP_ZSTD_LEVEL = 6


def _plain_parts(data: bytes) -> tuple[int, bytes, memoryview]:
    """(ncols, times, payload) of a plain block."""
    buf = memoryview(data)
    if len(buf) < 2 or buf[0] != VERSION_PLAIN:
        raise BlockError("not a plain block")
    _, ncols, n, _, _, pos = _parse_header(buf)
    end = pos
    if n > 1:
        size, at = _get_varint(buf, pos)
        end = at + size
    return ncols, bytes(buf[2:end]), buf[end:]


def encode_group(ids: Sequence[int], datas: Sequence[bytes]) -> tuple[np.ndarray, bytes]:
    """One value of the plain blocks ``datas`` of series ``ids`` (of one window, one column
    count): (the ids in the value's order, the value). Series of equal times sit together."""
    if len(ids) != len(datas) or not datas:
        raise ValueError("a group holds one plain block per series, at least one")
    parts = [_plain_parts(d) for d in datas]
    ncols = parts[0][0]
    if any(p[0] != ncols for p in parts):
        raise ValueError("a group's blocks have one column count")
    index: dict[bytes, int] = {}
    for p in parts:
        index.setdefault(p[1], len(index))
    order = sorted(range(len(parts)), key=lambda i: index[parts[i][1]])  # (stable: the caller's order within)
    head = bytearray((VERSION_GROUP, ncols))
    put_uvarint(head, len(parts))
    put_uvarint(head, len(index))
    frames: list[bytes] = []
    sizes: list[tuple[int, int]] = []
    for members in slices(order, GROUP_FRAME_SERIES):
        inner = bytearray()
        for i in members:
            put_uvarint(inner, index[parts[i][1]])
            put_uvarint(inner, len(parts[i][2]))
        raw = bytes(inner) + b"".join(parts[i][2] for i in members)
        frames.append(_group_zstd().compress(raw))
        sizes.append((len(members), len(raw)))
    put_uvarint(head, len(frames))
    for times in index:
        put_uvarint(head, len(times))
        head += times
    for (count, raw_size), frame in zip(sizes, frames, strict=True):
        put_uvarint(head, count)
        put_uvarint(head, len(frame))
        put_uvarint(head, raw_size)
    return np.array([ids[i] for i in order], dtype=np.int64), bytes(head) + b"".join(frames)


def _group_zstd() -> zstandard.ZstdCompressor:
    got: zstandard.ZstdCompressor | None = getattr(_codecs, "group", None)
    if got is None:
        params = zstandard.ZstdCompressionParameters.from_level(
            GROUP_ZSTD_LEVEL, format=zstandard.FORMAT_ZSTD1_MAGICLESS, write_content_size=False,
            write_checksum=False, write_dict_id=False)
        got = _codecs.group = zstandard.ZstdCompressor(compression_params=params)
    return got


def group_members(ids_blob: bytes) -> np.ndarray:
    """The series ids a store keeps beside a group (int64, little-endian, in its order)."""
    if len(ids_blob) % 8:
        raise BlockError("corrupt group members")
    return np.frombuffer(ids_blob, dtype="<i8").astype(np.int64, copy=False)


def decode_group(data: bytes, ids: np.ndarray, wanted: Collection[int] | None = None) -> dict[int, Block]:
    """The blocks of series ``wanted`` (None: all) of a group value whose members are ``ids``
    (``encode_group``'s order), each bit for bit as encoded; only their frames are decompressed.
    The timestamps of a times entry are shared by its series (read-only arrays) and kept by
    the process (``GROUP_TIMES``: a target's groups of a window share them)."""
    buf = memoryview(data)
    if len(buf) < 2 or buf[0] != VERSION_GROUP:
        raise BlockError(f"not a group (version {buf[0] if len(buf) else None})")
    ncols = buf[1]
    (n, n_times, n_frames), pos = _read_varints(buf, 2, 3)
    if n != ids.shape[0] or n_times > n or n_frames > n:
        raise BlockError("corrupt group header")
    times: list[memoryview] = []
    for _ in range(n_times):
        size, pos = _get_varint(buf, pos)
        if pos + size > len(buf):
            raise BlockError("truncated group times")
        times.append(buf[pos : pos + size])
        pos += size
    table, pos = _read_varints(buf, pos, 3 * n_frames)  # (members, size, size decompressed) a frame
    if sum(table[0::3]) != n:
        raise BlockError("corrupt group frames")
    id_list = ids.tolist()
    if wanted is None:
        want = [True] * n
    else:
        asked = wanted if isinstance(wanted, (set, frozenset, dict)) else set(wanted)
        want = [m in asked for m in id_list]
    decoded_times: dict[int, np.ndarray] = {}
    out: dict[int, Block] = {}
    a = 0
    for f in range(n_frames):
        count, size, raw_size = table[3 * f : 3 * f + 3]
        if pos + size > len(buf):
            raise BlockError("truncated group frame")
        if any(want[a : a + count]):
            raw = memoryview(_decompress(VERSION, buf[pos : pos + size], raw_size))
            if len(raw) != raw_size:
                raise BlockError("corrupt group frame: its size")
            heads, p = _read_varints(raw, 0, 2 * count)  # (times index, payload length) a series
            for k in range(count):
                t, length = heads[2 * k], heads[2 * k + 1]
                if p + length > raw_size or t >= n_times:
                    raise BlockError("corrupt group frame")
                if want[a + k]:
                    ts = decoded_times.get(t)
                    if ts is None:
                        ts = decoded_times[t] = GROUP_TIMES.decoded(times[t])
                    out[id_list[a + k]] = _group_columns(raw[p : p + length], ts, ncols)
                p += length
            if p != raw_size:
                raise BlockError("corrupt group frame: bytes left over")
        pos += size
        a += count
    if pos != len(buf):
        raise BlockError("corrupt group: bytes left over")
    return out


def _read_varints(buf: memoryview, pos: int, count: int) -> tuple[list[int], int]:
    """``count`` varints from ``buf[pos]`` (one-byte ones without a call) and the position after."""
    out: list[int] = []
    end = len(buf)
    for _ in range(count):
        if pos >= end:
            raise BlockError("truncated group")
        b = buf[pos]
        if b < 0x80:
            out.append(b)
            pos += 1
        else:
            v, pos = _get_varint(buf, pos)
            out.append(v)
    return out, pos


GROUP_TIMES_BYTES = 16 << 20  # decoded timestamps of group times entries a process keeps


class GroupTimes:
    """Decoded timestamps of groups' times entries by their bytes (content: never stale),
    least recently used dropped first: the groups of a target's parts of a window share them,
    and a read of a target's series in several parts decoded them once per group."""

    def __init__(self, max_bytes: int = GROUP_TIMES_BYTES) -> None:
        self.max_bytes = max_bytes
        self._kept: OrderedDict[bytes, np.ndarray] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def decoded(self, times: memoryview | bytes) -> np.ndarray:
        key = bytes(times)
        with self._lock:
            got = self._kept.get(key)
            if got is not None:
                self._kept.move_to_end(key)
                return got
        ts = _group_times(memoryview(key))
        with self._lock:
            if key not in self._kept:
                self._kept[key] = ts
                self._bytes += ts.nbytes + len(key)
                while self._bytes > self.max_bytes and len(self._kept) > 1:
                    k, dropped = self._kept.popitem(last=False)
                    self._bytes -= dropped.nbytes + len(k)
        return ts

    def clear(self) -> None:
        with self._lock:
            self._kept.clear()
            self._bytes = 0


GROUP_TIMES = GroupTimes()


def _group_times(times: memoryview) -> np.ndarray:
    """The timestamps of a group's times entry (read-only: the group's series share them)."""
    n, pos = _get_varint(times, 0)
    first_z, pos = _get_varint(times, pos)
    step_z, pos = _get_varint(times, pos)
    first, step = _unzigzag_int(first_z), _unzigzag_int(step_z)
    if n > 1 << 31 or not (-(2**63) <= first < 2**63 and -(2**63) <= step < 2**63):
        raise BlockError("corrupt group times")
    ts = np.empty(n, dtype=np.int64)
    if n:
        ts[0] = first
    if n > 1:
        size, pos = _get_varint(times, pos)
        if pos + size != len(times):
            raise BlockError("corrupt group times")
        section = memoryview(_decompress(VERSION, times[pos:], 17 * n + 64))
        if _decode_timestamps(section, ts, step) != len(section):
            raise BlockError("corrupt block: bytes left over after the timestamps")
    elif pos != len(times):
        raise BlockError("corrupt group times")
    ts.flags.writeable = False
    return ts


def _group_columns(payload: memoryview, ts: np.ndarray, ncols: int, p: int = 0) -> Block:
    """A block of ``ts`` and the ``ncols`` value columns ``payload`` holds from ``p`` to its end."""
    n = ts.shape[0]
    cols = []
    for _ in range(ncols):
        if n:
            col, p = _decode_column(payload, p, n)
        else:
            col, p = np.empty(0, dtype=np.float64), p + 1
        cols.append(col)
    if p != len(payload):
        raise BlockError(f"corrupt block: {len(payload) - p} bytes left over after {ncols} columns")
    return Block(ts, cols)
