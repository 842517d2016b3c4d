"""Local disk spool of sample batches: append-only segment files with length+CRC framing.

The writer appends every batch here before sending it, and deletes a segment once every
record in it is stored in Cassandra; while Cassandra is down or slow, the records simply
stay and are replayed in order later, also after a restart of the process.

Files: ``<dir>/seg-<12 digit number>.spool``; each record is ``u32 length | u32 crc32 |
payload`` (little endian). A process only ever appends to a segment it created; on start
the existing segments are the backlog to replay. A torn last record (crash mid-write) fails
its length or CRC check and ends that segment's replay; nothing before it is affected.

Durability policy: ``append`` hands the record to the kernel with write(2) before it
returns, so a killed writer process (SIGKILL, OOM) loses nothing; ``fdatasync`` runs at most
``fsync_interval_s`` apart (default 1 s; 0 = on every append) and when a segment is closed,
so a machine crash or power loss loses at most the last interval.

Payload of a batch record (``encode_batch``/``decode_batch``): version byte, target, sample
columns as little-endian int64 ids, int64 timestamps and float64 bit patterns (NaN payloads
survive), the label sets of the series whose index rows may still be missing, and (version
2) the batch's scrape frames exactly as Cassandra stores them (``EncodedFrame``: timestamp,
base timestamp, layout id, compressed values, the layout's ids when its row is due): a
scrape is one frame of ~3 bytes per sample on disk instead of 24, encoded once. Version 1
records (a spool left by an older writer) still replay.
"""

from __future__ import annotations

import json
import logging
import os
import re
import struct
import time
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import msgspec
import numpy as np

from storage.cassandra_frames import EncodedFrame
from storage.model import Series

log = logging.getLogger(__name__)

_FRAME = struct.Struct("<II")
_SEG_RE = re.compile(r"^seg-(\d{12})\.spool$")
MAX_RECORD_BYTES = 256 * 1024 * 1024


class SpoolError(Exception):
    """The spool directory cannot be used (permissions, disk full); the message says which."""


@dataclass(frozen=True, order=True, slots=True)
class Position:
    """Where a record starts: segment number and byte offset."""

    segment: int
    offset: int


class Spool:
    """Append-only framed records in numbered segment files under ``directory``."""

    def __init__(self, directory: str | Path, segment_bytes: int = 64 << 20, fsync_interval_s: float = 1.0) -> None:
        self.dir = Path(directory)
        self.segment_bytes = segment_bytes
        self.fsync_interval_s = fsync_interval_s
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise SpoolError(f"cannot create spool dir {self.dir}: {exc}") from None
        self.backlog: list[int] = sorted(
            int(m.group(1)) for p in self.dir.iterdir() if (m := _SEG_RE.match(p.name))
        )
        self._sizes: dict[int, int] = {n: self._path(n).stat().st_size for n in self.backlog}
        self.active = (self.backlog[-1] + 1) if self.backlog else 1
        self._fd = -1
        self._dirty = False
        self._last_sync = time.monotonic()
        self._read_fds: dict[int, int] = {}
        self._open_active()

    def _path(self, n: int) -> Path:
        return self.dir / f"seg-{n:012d}.spool"

    def _open_active(self) -> None:
        try:
            self._fd = os.open(self._path(self.active), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        except OSError as exc:
            raise SpoolError(f"cannot open spool segment {self._path(self.active)}: {exc}") from None
        self._sizes[self.active] = 0

    # -- writing ------------------------------------------------------------------------------

    def append(self, payload: bytes) -> Position:
        """Frame and write one record; returns its position. Rolls segments by size."""
        if self._sizes[self.active] >= self.segment_bytes:
            self._roll()
        pos = Position(self.active, self._sizes[self.active])
        frame = _FRAME.pack(len(payload), zlib.crc32(payload)) + payload
        try:
            written = os.write(self._fd, frame)
        except OSError as exc:
            raise SpoolError(f"spool write to {self._path(self.active)} failed: {exc}") from None
        if written != len(frame):
            raise SpoolError(f"short spool write to {self._path(self.active)} ({written}/{len(frame)} bytes)")
        self._sizes[self.active] += len(frame)
        self._dirty = True
        if self.fsync_interval_s <= 0:
            self.sync()
        return pos

    def _roll(self) -> None:
        self.sync()
        os.close(self._fd)
        self.active += 1
        self._open_active()

    def sync_due(self) -> bool:
        return self._dirty and time.monotonic() - self._last_sync >= self.fsync_interval_s

    def sync(self) -> None:
        """fdatasync the active segment (safe from a worker thread while appends go on)."""
        if self._dirty and self._fd >= 0:
            self._dirty = False
            os.fdatasync(self._fd)
        self._last_sync = time.monotonic()

    def close(self) -> None:
        if self._fd >= 0:
            self.sync()
            os.close(self._fd)
            self._fd = -1
        for fd in self._read_fds.values():
            os.close(fd)
        self._read_fds.clear()

    # -- reading ------------------------------------------------------------------------------

    def end(self) -> Position:
        """The position the next append will get (unless the segment rolls)."""
        return Position(self.active, self._sizes[self.active])

    def segments(self) -> list[int]:
        return sorted(self._sizes)

    def size(self, segment: int) -> int:
        return self._sizes.get(segment, 0)

    def total_bytes(self) -> int:
        return sum(self._sizes.values())

    def read(self, pos: Position) -> tuple[bytes, Position] | None:
        """The record at ``pos`` and the position after it; None at a segment's (torn) end."""
        size = self._sizes.get(pos.segment)
        if size is None or pos.offset + _FRAME.size > size:
            return None
        fd = self._read_fds.get(pos.segment)
        if fd is None:
            try:
                fd = os.open(self._path(pos.segment), os.O_RDONLY)
            except FileNotFoundError:
                log.error("spool segment %s vanished (removed by someone else?)", self._path(pos.segment))
                self._sizes[pos.segment] = 0
                return None
            self._read_fds[pos.segment] = fd
        head = os.pread(fd, _FRAME.size, pos.offset)
        length, crc = _FRAME.unpack(head)
        if length > MAX_RECORD_BYTES or pos.offset + _FRAME.size + length > size:
            self._torn(pos, "length past the end")
            return None
        payload = os.pread(fd, length, pos.offset + _FRAME.size)
        if len(payload) != length or zlib.crc32(payload) != crc:
            self._torn(pos, "CRC mismatch")
            return None
        return payload, Position(pos.segment, pos.offset + _FRAME.size + length)

    def _torn(self, pos: Position, why: str) -> None:
        if pos.segment != self.active:
            log.warning(
                "spool segment %s: record at byte %d unreadable (%s); treating it as the end of the segment",
                self._path(pos.segment).name,
                pos.offset,
                why,
            )
            self._sizes[pos.segment] = pos.offset

    def next_segment(self, segment: int) -> int | None:
        later = [n for n in self._sizes if n > segment]
        return min(later) if later else None

    def delete(self, segment: int) -> None:
        """Remove a fully stored segment (never the active one)."""
        if segment == self.active:
            return
        fd = self._read_fds.pop(segment, None)
        if fd is not None:
            os.close(fd)
        self._sizes.pop(segment, None)
        try:
            self._path(segment).unlink()
        except FileNotFoundError:
            pass


# -- batch record codec ------------------------------------------------------------------------

_HEAD = struct.Struct("<BHII")  # version, target length, samples, defs json length
_FRAMES = struct.Struct("<I")  # version 2: frames that follow the defs
_FRAME_HEAD = struct.Struct("<qqqBIII")  # ts, base ts, layout id, has base, width, ids, data length
RECORD_VERSION = 2


@dataclass(slots=True)
class SpooledBatch:
    target: str
    series_ids: np.ndarray  # int64
    timestamps: np.ndarray  # int64 ms
    values: np.ndarray  # float64 (bit patterns preserved)
    series_defs: list[Series]
    frames: list[EncodedFrame] = field(default_factory=list)
    # a record sent as appended whose series_defs are left in its payload (its spool record)
    # until it is sent: a warm-up's records wait for index writes, and their Series with them
    # kept the heap's peak (issue #20)
    defs_payload: bytes = b""

    def __len__(self) -> int:
        return int(self.series_ids.shape[0])


def _column(col: np.ndarray, dtype: str) -> bytes:
    """A sample column's little-endian bytes (a scrape that is one frame has none: no NumPy call)."""
    return col.astype(dtype, copy=False).tobytes() if col.size else b""


def encode_batch(
    target: str,
    series_ids: np.ndarray,
    timestamps: np.ndarray,
    values: np.ndarray,
    defs: list[Series],
    frames: Sequence[EncodedFrame] = (),
) -> bytes:
    tgt = target.encode()
    defs_json = json.dumps([[s.id, s.labels] for s in defs], separators=(",", ":")).encode() if defs else b""
    parts = [
        _HEAD.pack(RECORD_VERSION, len(tgt), series_ids.shape[0], len(defs_json)),
        tgt,
        _column(series_ids, "<i8"),
        _column(timestamps, "<i8"),
        _column(values, "<f8"),
        defs_json,
        _FRAMES.pack(len(frames)),
    ]
    for f in frames:
        ids = b"" if f.ids is None else f.ids.astype("<i8", copy=False).tobytes()
        parts.append(_FRAME_HEAD.pack(f.ts, f.base_ts or 0, f.layout_id, f.base_ts is not None, f.width,
                                      len(ids) // 8, len(f.data)))
        parts.append(ids)
        parts.append(f.data)
    return b"".join(parts)


# a record's defs, [[id, [[name, value], ...]], ...], read straight into tuples: ~2x json.loads
# and a tuple per pair (a writer decodes them for every record that indexes series, issue #20)
_DEFS = msgspec.json.Decoder(list[tuple[int, tuple[tuple[str, str], ...]]])


def _defs(payload: bytes, off: int, dlen: int) -> list[Series]:
    if not dlen:
        return []
    try:
        return [Series(sid, labels) for sid, labels in _DEFS.decode(payload[off : off + dlen])]
    except msgspec.DecodeError as exc:  # (ValidationError too) the unreadable record's error
        raise ValueError(f"spool record: series defs unreadable: {exc}") from None


def decode_defs(payload: bytes) -> list[Series]:
    """The ``series_defs`` of a record alone (``decode_batch(payload).series_defs``)."""
    version, tlen, n, dlen = _HEAD.unpack_from(payload, 0)
    if version not in (1, RECORD_VERSION):
        raise ValueError(f"unknown spool record version {version}")
    return _defs(payload, _HEAD.size + tlen + 24 * n, dlen)


def decode_batch(payload: bytes) -> SpooledBatch:
    version, tlen, n, dlen = _HEAD.unpack_from(payload, 0)
    if version not in (1, RECORD_VERSION):
        raise ValueError(f"unknown spool record version {version}")
    off = _HEAD.size
    target = payload[off : off + tlen].decode()
    off += tlen
    ids = np.frombuffer(payload, dtype="<i8", count=n, offset=off).astype(np.int64)
    off += 8 * n
    ts = np.frombuffer(payload, dtype="<i8", count=n, offset=off).astype(np.int64)
    off += 8 * n
    vals = np.frombuffer(payload, dtype="<f8", count=n, offset=off).astype(np.float64)
    off += 8 * n
    defs = _defs(payload, off, dlen)
    off += dlen
    frames: list[EncodedFrame] = []
    if version >= 2:
        (count,) = _FRAMES.unpack_from(payload, off)
        off += _FRAMES.size
        for _ in range(count):
            f_ts, base, lid, has_base, width, n_ids, n_data = _FRAME_HEAD.unpack_from(payload, off)
            off += _FRAME_HEAD.size
            f_ids = np.frombuffer(payload, dtype="<i8", count=n_ids, offset=off).astype(np.int64) if n_ids else None
            off += 8 * n_ids
            if off + n_data > len(payload) or (f_ids is not None and f_ids.size != width):
                raise ValueError("spool record: a frame runs past the record")
            frames.append(EncodedFrame(f_ts, base if has_base else None, lid, width, payload[off : off + n_data], f_ids))
            off += n_data
    return SpooledBatch(target, ids, ts, vals, defs, frames)
