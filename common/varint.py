"""Unsigned LEB128 varints (protobuf's wire format): the one encoder and decoder for sealed
block headers (storage/blocks.py) and pprof profiles (web/pprof_profile.py)."""

from __future__ import annotations


class VarintError(ValueError):
    """A varint runs past the end of the buffer or over 10 bytes."""


def put_uvarint(out: bytearray, u: int) -> None:
    """Append ``u`` (>= 0) to ``out``: 7 bits a byte, low bits first, the high bit set on all
    bytes but the last."""
    while True:
        b = u & 0x7F
        u >>= 7
        if u:
            out.append(b | 0x80)
        else:
            out.append(b)
            return


def get_uvarint(buf: bytes | memoryview, pos: int) -> tuple[int, int]:
    """The varint at ``buf[pos]`` and the position after it."""
    result = 0
    shift = 0
    while True:
        if pos >= len(buf):
            raise VarintError("truncated varint")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise VarintError("varint over 10 bytes")
