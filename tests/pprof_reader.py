"""A minimal reader of google/pprof's ``profile.proto`` for the tests: decodes the protobuf and
checks what ``github.com/google/pprof/profile.Parse`` checks (CheckValid and its decoder):
the string table starts with "", IDs are non-zero and unique, every referenced location and
function exists, each sample has one value per sample type."""

from __future__ import annotations

import gzip
from dataclasses import dataclass, field


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    """A varint decoded here, not by ``common.varint`` (which writes the profile): the reader
    is the tests' independent oracle of the encoding."""
    result = shift = 0
    while True:
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7
        assert shift < 70, "corrupt varint"


def fields(buf: bytes) -> list[tuple[int, int | bytes]]:
    """(field number, varint value or bytes) in order."""
    out: list[tuple[int, int | bytes]] = []
    pos = 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(buf, pos)
            out.append((number, value))
        elif wire == 2:
            n, pos = _varint(buf, pos)
            out.append((number, buf[pos:pos + n]))
            pos += n
            assert pos <= len(buf), "truncated field"
        else:
            raise AssertionError(f"unexpected wire type {wire}")
    return out


def _ints(value: int | bytes) -> list[int]:
    if isinstance(value, int):
        return [value]
    out, pos = [], 0
    while pos < len(value):
        v, pos = _varint(value, pos)
        out.append(v)
    return out


def _one(msg: bytes) -> dict[int, int]:
    return {n: v for n, v in fields(msg) if isinstance(v, int)}


@dataclass
class Sample:
    stack: list[tuple[str, int]]  # (function name, line), leaf first
    values: list[int]
    labels: dict[str, str]


@dataclass
class Profile:
    sample_types: list[tuple[str, str]]
    samples: list[Sample]
    functions: dict[int, tuple[str, str]]  # id -> (name, filename)
    comments: list[str]
    period_type: tuple[str, str] | None = None
    period: int = 0
    duration_nanos: int = 0
    strings: list[str] = field(default_factory=list)


def parse(data: bytes) -> Profile:
    """Decode a gzip'd (or raw) profile and check it as pprof's Parse does."""
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    assert data, "empty input file"  # pprof: errNoData
    top = fields(data)
    strings = [v.decode() for n, v in top if n == 6 and isinstance(v, bytes)]
    assert strings and strings[0] == "", "string table must start with an empty string"
    s = strings.__getitem__
    types = []
    for n, v in top:
        if n == 1:
            assert isinstance(v, bytes)
            m = _one(v)
            types.append((s(m.get(1, 0)), s(m.get(2, 0))))
    functions: dict[int, tuple[str, str]] = {}
    for n, v in top:
        if n == 5:
            assert isinstance(v, bytes)
            m = _one(v)
            assert m.get(1, 0) != 0 and m[1] not in functions, "function ID 0 or duplicate"
            functions[m[1]] = (s(m.get(2, 0)), s(m.get(4, 0)))
    locations: dict[int, list[tuple[str, int]]] = {}
    for n, v in top:
        if n == 4:
            assert isinstance(v, bytes)
            lid, lines = 0, []
            for fn, fv in fields(v):
                if fn == 1:
                    assert isinstance(fv, int)
                    lid = fv
                elif fn == 4:
                    assert isinstance(fv, bytes)
                    m = _one(fv)
                    assert m.get(1, 0) in functions, f"location {lid}: line with unknown function"
                    lines.append((functions[m[1]][0], m.get(2, 0)))
                elif fn == 2:
                    assert fv == 0, "mapping referenced but none written"
            assert lid != 0 and lid not in locations, "location ID 0 or duplicate"
            locations[lid] = lines
    samples = []
    for n, v in top:
        if n == 2:
            assert isinstance(v, bytes)
            locs: list[int] = []
            values: list[int] = []
            labels: dict[str, str] = {}
            for fn, fv in fields(v):
                if fn == 1:
                    locs += _ints(fv)
                elif fn == 2:
                    values += _ints(fv)
                elif fn == 3:
                    assert isinstance(fv, bytes)
                    m = _one(fv)
                    labels[s(m.get(1, 0))] = s(m.get(2, 0))
            assert len(values) == len(types), f"sample has {len(values)} values vs. {len(types)} types"
            stack = []
            for lid in locs:
                assert lid in locations, f"sample references unknown location {lid}"
                stack += locations[lid]
            samples.append(Sample(stack, values, labels))
    comments = [s(c) for n, v in top if n == 13 for c in _ints(v)]
    ints = {n: v for n, v in top if isinstance(v, int)}
    period_type = None
    for n, v in top:
        if n == 11:
            assert isinstance(v, bytes)
            m = _one(v)
            period_type = (s(m.get(1, 0)), s(m.get(2, 0)))
    return Profile(types, samples, functions, comments, period_type, ints.get(12, 0), ints.get(10, 0), strings)
