"""Compressed sample blocks: one series' timestamps and float columns in a few hundred bytes.

A block holds ``count`` samples: int64 millisecond timestamps and one or more float64
columns (raw samples have one column; rollup blocks carry count/sum/min/max/last/increase).
Decoding returns exactly what was encoded, bit for bit: NaN payloads (stale markers),
-0.0, infinities and subnormals included. Everything is vectorised with NumPy: there is
no Python loop per sample, only per column and per candidate decimal scale.

Layout (version 2; version 1, still read, compressed the same payload with raw DEFLATE)::

    header   u8 version | u8 ncols | varint count | zigzag-varint first_ts | zigzag-varint step
    payload  Zstandard level 6, magicless frame without content size or checksum, of:
             timestamps (count >= 2): u8 mode, then for i in 1..count-1
               mode 0 (delta): planes(zigzag(delta_i - step))
               mode 1 (grid):  planes(zigzag(k_i - k_(i-1) - 1)), planes(zigzag(offset_i))
                               where ts_i = ts_0 + k_i * step + offset_i (k_0 = 0)
             per column: u8 mode, then
               mode 0 (xor):     8 byte planes of bits_i XOR bits_{i-1}
               mode 1 (decimal): u8 k, planes(zigzag(m_i - m_{i-1})) where value = m / 10**k,
                                 u8 has_exceptions [, packbits(mask), raw bits of exceptions]

``step`` is the block's median interval, so at a steady scrape interval every encoded
timestamp is 0 (delta-of-delta against the steady interval) in either mode; the grid mode
keeps a missed scrape to one small number and a scraper's wake-up lateness (0-2 ms, always
late) to its own size rather than the difference of two; the cheaper mode is chosen per block.
Values that are decimals with few digits (counters of bytes, CPU seconds with 2 decimals,
gauges such as load averages) are turned into integers and delta-encoded; values that are
not (stale markers, NaN, -0.0, full-precision floats) are exceptions stored raw. A column
where decimals do not pay off falls back to XOR against the previous value's bits.
``planes(u)`` is: u8 width w (bytes needed by the largest value), then the w low byte
planes of the uint64 array, each contiguous - the high planes of small numbers are zeros
together, which the compressor squeezes to almost nothing.

Zstandard level 6 against DEFLATE level 6 (version 1) on 12,000 node_exporter-shaped series
of 720 samples (``bench/rollup.py``'s generator; aligned timestamps / a scraper's lateness):
1.063 / 1.383 against 1.071 / 1.394 bytes per sample, encoding 0.023 / 0.040 against 0.063 /
0.097 us per sample (the rollup job's seal) and decoding 4.5 / 7.6 against 16.5 / 16.7 ns
per sample (every raw read of a sealed hour). Level 1 was 1.4% larger than DEFLATE on
the late timestamps; levels 12-19 save 1-3% more for 4-12x the encoding CPU.
"""

from __future__ import annotations

import threading
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import zstandard

from common.varint import VarintError, get_uvarint, put_uvarint

VERSION = 2  # written; VERSION_DEFLATE blocks are read too
VERSION_DEFLATE = 1
ZSTD_LEVEL = 6
MAX_DECIMALS = 12  # largest k tried for value = m / 10**k
MAX_EXACT_INT = float(2**53)
MODE_XOR = 0
MODE_DECIMAL = 1
TS_DELTA = 0
TS_GRID = 1

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


def _zstd() -> tuple[zstandard.ZstdCompressor, zstandard.ZstdDecompressor]:
    got: tuple[zstandard.ZstdCompressor, zstandard.ZstdDecompressor] | None = getattr(_codecs, "zstd", None)
    if got is None:
        params = zstandard.ZstdCompressionParameters.from_level(
            ZSTD_LEVEL, format=zstandard.FORMAT_ZSTD1_MAGICLESS, write_content_size=False,
            write_checksum=False, write_dict_id=False)
        got = _codecs.zstd = (zstandard.ZstdCompressor(compression_params=params),
                              zstandard.ZstdDecompressor(format=zstandard.FORMAT_ZSTD1_MAGICLESS))
    return got


def _compress(payload: bytes) -> bytes:
    return _zstd()[0].compress(payload)


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
    try:
        return _zstd()[1].decompress(data, max_output_size=limit)
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


def _encode_timestamps(ts: np.ndarray, out: list[bytes]) -> int:
    """Append the timestamp section (n >= 2); returns the block's step (median interval).

    Mode 0 stores ``delta_i - step``. Mode 1 stores each timestamp as a slot number on the
    grid ``ts_0 + k * step`` (as ``k_i - k_(i-1) - 1``: 0 at a steady interval, 1 for a
    missed scrape) plus its offset from that slot (a scraper's wake-up lateness). The mode
    with the smaller sum of zigzagged numbers is kept. All arithmetic wraps modulo 2**64
    exactly as the decoder's, so any int64 timestamps round-trip.
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
        zk, zo = _zigzag(dk), _zigzag(off)
        if float(zk.sum(dtype=np.float64)) + float(zo.sum(dtype=np.float64)) < float(
            zd.sum(dtype=np.float64)
        ):
            out.append(bytes((TS_GRID,)))
            _planes(zk, out)
            _planes(zo, out)
            return step
    out.append(bytes((TS_DELTA,)))
    _planes(zd, out)
    return step


def _encode_column(values: np.ndarray, out: list[bytes]) -> None:
    values = np.ascontiguousarray(values, dtype=np.float64)
    dec = _choose_decimals(values) if values.size else None
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
    k, m, exc = dec
    out.append(bytes((MODE_DECIMAL, k)))
    d = np.empty_like(m)
    d[0] = m[0]
    np.subtract(m[1:], m[:-1], out=d[1:])
    _planes(_zigzag(d), out)
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
    if mode != MODE_DECIMAL:
        raise BlockError(f"corrupt block: column mode {mode}")
    if pos >= len(buf):
        raise BlockError("truncated block payload")
    k = buf[pos]
    pos += 1
    if k > MAX_DECIMALS:
        raise BlockError(f"corrupt block: decimal scale {k}")
    zz, pos = _read_planes(buf, pos, n)
    m = np.cumsum(_unzigzag(zz), dtype=np.int64)
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
    timestamps: np.ndarray | Sequence[int], columns: Sequence[np.ndarray] | Mapping[str, np.ndarray]
) -> bytes:
    """Encode timestamps and float64 columns of the same length into one block."""
    ts = np.ascontiguousarray(timestamps, dtype=np.int64)
    cols = list(columns.values()) if isinstance(columns, Mapping) else list(columns)
    n = int(ts.shape[0])
    if not 1 <= len(cols) <= 255:
        raise ValueError(f"a block holds 1 to 255 columns, got {len(cols)}")
    arrays = [np.ascontiguousarray(c, dtype=np.float64) for c in cols]
    for i, a in enumerate(arrays):
        if a.ndim != 1 or a.shape[0] != n:
            raise ValueError(f"column {i} has shape {a.shape}, timestamps have {n} samples")
    first = int(ts[0]) if n else 0
    step = 0
    parts: list[bytes] = []
    if n > 1:
        step = _encode_timestamps(ts, parts)
    for a in arrays:
        _encode_column(a, parts)
    header = bytearray((VERSION, len(arrays)))
    put_uvarint(header, n)
    put_uvarint(header, _zigzag_int(first))
    put_uvarint(header, _zigzag_int(step))
    return bytes(header) + _compress(b"".join(parts))


def encode_block(timestamps: np.ndarray | Sequence[int], values: np.ndarray | Sequence[float]) -> bytes:
    """Encode one series' raw samples (timestamps in ms, float64 values)."""
    return encode_columns(timestamps, [np.asarray(values, dtype=np.float64)])


def block_header(data: bytes) -> tuple[int, int, int, int]:
    """(version, ncols, count, first_ts) of a block without decompressing it."""
    version, ncols, count, first, _step, _pos = _parse_header(memoryview(data))
    return version, ncols, count, first


def _parse_header(buf: memoryview) -> tuple[int, int, int, int, int, int]:
    if len(buf) < 2:
        raise BlockError("truncated block header")
    version, ncols = buf[0], buf[1]
    if version not in (VERSION, VERSION_DEFLATE):
        raise BlockError(f"block version {version} is not supported (this code reads {VERSION_DEFLATE}-{VERSION})")
    count, pos = _get_varint(buf, 2)
    first_z, pos = _get_varint(buf, pos)
    step_z, pos = _get_varint(buf, pos)
    first, step = _unzigzag_int(first_z), _unzigzag_int(step_z)
    if not (-(2**63) <= first < 2**63 and -(2**63) <= step < 2**63):
        raise BlockError("corrupt block header")
    return version, ncols, count, first, step, pos


def decode_columns(data: bytes) -> Block:
    """Decode a block into timestamps and its columns, bit for bit as encoded."""
    buf = memoryview(data)
    version, ncols, n, first, step, pos = _parse_header(buf)
    if n > 1 << 31:
        raise BlockError(f"corrupt block: count {n}")
    payload = memoryview(_decompress(version, buf[pos:], (ncols * 17 + 17) * max(n, 1) + 64 * (ncols + 1)))
    ts = np.empty(n, dtype=np.int64)
    p = 0
    if n:
        ts[0] = first
    if n > 1:
        if not payload:
            raise BlockError("truncated block payload")
        ts_mode = payload[0]
        with np.errstate(over="ignore"):
            if ts_mode == TS_DELTA:
                zz, p = _read_planes(payload, 1, n - 1)
                ts[1:] = _unzigzag(zz) + np.int64(step)
                np.cumsum(ts, out=ts)
            elif ts_mode == TS_GRID:
                zk, p = _read_planes(payload, 1, n - 1)
                zo, p = _read_planes(payload, p, n - 1)
                k = np.cumsum(_unzigzag(zk) + np.int64(1), dtype=np.int64)
                ts[1:] = k * np.int64(step) + _unzigzag(zo) + np.int64(first)
            else:
                raise BlockError(f"corrupt block: timestamp mode {ts_mode}")
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


def decode_block(data: bytes) -> tuple[np.ndarray, np.ndarray]:
    """Decode a raw-sample block into (timestamps int64 ms, values float64)."""
    b = decode_columns(data)
    if len(b.columns) != 1:
        raise BlockError(f"expected a raw block with 1 column, found {len(b.columns)}")
    return b.timestamps, b.columns[0]


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


def _choose_decimals_rows(values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``_choose_decimals`` of every row of a (rows, n) matrix: per row the scale k (-1 where
    the row goes XOR), the integers m (exceptions forward-filled), and the exception mask."""
    rows, n = values.shape
    bits = values.view(np.int64)
    best_k = np.full(rows, -1, dtype=np.int64)
    best_ok_n = np.zeros(rows, dtype=np.int64)
    best_m = np.zeros((rows, n), dtype=np.float64)
    best_ok = np.zeros((rows, n), dtype=bool)
    active = np.arange(rows)
    with np.errstate(invalid="ignore", over="ignore"):
        finite = np.isfinite(values)
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
    idx = np.where(best_ok, np.arange(n), -1)
    np.maximum.accumulate(idx, axis=1, out=idx)
    m_int = np.where(idx >= 0, np.take_along_axis(m_int, np.maximum(idx, 0), axis=1), 0)
    return best_k, m_int, ~best_ok, use


def _encode_rows(ts: np.ndarray, values: np.ndarray) -> list[bytes]:
    """``encode_block`` of every row of (rows, n >= 2) matrices of timestamps and values."""
    rows, n = values.shape
    # Timestamp sections and headers: once per distinct timestamp row.
    ts_bytes, row_len = ts.tobytes(), 8 * n
    heads_of: dict[bytes, tuple[bytes, bytes]] = {}
    heads: list[tuple[bytes, bytes]] = []
    for r in range(rows):
        key = ts_bytes[r * row_len : (r + 1) * row_len]
        known = heads_of.get(key)
        if known is None:
            parts: list[bytes] = []
            step = _encode_timestamps(ts[r], parts)
            header = bytearray((VERSION, 1))
            put_uvarint(header, n)
            put_uvarint(header, _zigzag_int(int(ts[r, 0])))
            put_uvarint(header, _zigzag_int(step))
            known = heads_of[key] = (bytes(header), b"".join(parts))
        heads.append(known)
    k, m, exc, use = _choose_decimals_rows(values)
    # Decimal rows: zigzagged deltas of m in byte planes.
    d = np.empty_like(m)
    d[:, 0] = m[:, 0]
    np.subtract(m[:, 1:], m[:, :-1], out=d[:, 1:])
    zz = _zigzag(d)
    widths = _widths(zz).tolist()
    dec_planes, stride = _plane_rows(zz)
    # XOR rows: every byte plane of bits_i XOR bits_(i-1).
    bits = values.view(np.uint64)
    x = bits.copy()
    x[:, 1:] ^= bits[:, :-1]
    xor_planes, _ = _plane_rows(x)
    has_exc = (exc & use[:, None]).any(axis=1)
    packed = np.packbits(exc, axis=1)
    out: list[bytes] = []
    k_list, use_list, exc_list = k.tolist(), use.tolist(), has_exc.tolist()
    for r, (head, ts_part) in enumerate(heads):
        at = r * stride
        if use_list[r]:
            col = [bytes((MODE_DECIMAL, k_list[r], widths[r])), dec_planes[at : at + widths[r] * n]]
            if exc_list[r]:
                col += [b"\x01", packed[r].tobytes(), values[r].view("<u8")[exc[r]].tobytes()]
            else:
                col.append(b"\x00")
        else:
            col = [bytes((MODE_XOR,)), xor_planes[at : at + stride]]
        out.append(head + _compress(b"".join([ts_part, *col])))
    return out


def encode_blocks(timestamps: np.ndarray, values: np.ndarray, bounds: np.ndarray) -> list[bytes]:
    """``encode_block`` of many series at once: block ``i`` holds rows ``bounds[i]:bounds[i + 1]``
    of ``timestamps`` (int64 ms) and ``values`` (float64); each block byte for byte as
    ``encode_block`` makes it."""
    ts = np.ascontiguousarray(timestamps, dtype=np.int64)
    vals = np.ascontiguousarray(values, dtype=np.float64)
    bounds = np.asarray(bounds, dtype=np.int64)
    counts = np.diff(bounds)
    out: list[bytes | None] = [None] * counts.shape[0]
    for n in np.unique(counts).tolist():
        idx = np.flatnonzero(counts == n)
        if n < 2:
            for i in idx.tolist():
                out[i] = encode_block(ts[bounds[i] : bounds[i + 1]], vals[bounds[i] : bounds[i + 1]])
            continue
        at = bounds[idx][:, None] + np.arange(n)
        for i, block in zip(idx.tolist(), _encode_rows(ts[at], vals[at]), strict=True):
            out[i] = block
    return out  # type: ignore[return-value]  # every slot filled above
