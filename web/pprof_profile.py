"""A writer of google/pprof's ``profile.proto``: the gzip-compressed protobuf ``go tool pprof``
and promtool's ``debug pprof`` parse.

``ProfileBuilder`` collects samples (a stack of ``Frame``s, leaf first, with one value per
sample type and string labels), interns strings, functions and locations, and ``encode()``
writes the message by hand: a dozen protobuf fields do not justify a protobuf dependency and
generated code. IDs start at 1 (0 is reserved), the string table starts with "", every
location has one line and no mapping (Python code has no addresses), as the format allows.
"""

from __future__ import annotations

import gzip
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

from common.varint import put_uvarint


class Frame(NamedTuple):
    """One frame of a stack: the function's name and file, its first line, the line running."""

    name: str
    filename: str
    start_line: int
    line: int


# -- protobuf wire format (varint = 0, length-delimited = 2) --------------------------------


def _varint(out: bytearray, value: int) -> None:
    put_uvarint(out, value + (1 << 64) if value < 0 else value)  # int64 two's complement, as protobuf


def _int_field(out: bytearray, number: int, value: int) -> None:
    if value:  # proto3: a zero is the default, not written
        _varint(out, number << 3)
        _varint(out, value)


def _bytes_field(out: bytearray, number: int, payload: bytes | bytearray) -> None:
    _varint(out, (number << 3) | 2)
    _varint(out, len(payload))
    out += payload


def _packed_field(out: bytearray, number: int, values: Sequence[int]) -> None:
    if values:
        body = bytearray()
        for v in values:
            _varint(body, v)
        _bytes_field(out, number, body)


def _message(*ints: tuple[int, int]) -> bytearray:
    out = bytearray()
    for number, value in ints:
        _int_field(out, number, value)
    return out


# -- the profile ------------------------------------------------------------------------------


@dataclass
class _Sample:
    locations: list[int]
    values: list[int]
    labels: list[tuple[int, int]]  # (key, value) string indexes


@dataclass
class ProfileBuilder:
    """One profile: ``sample_types`` as (type, unit) pairs, e.g. [("samples", "count")]."""

    sample_types: Sequence[tuple[str, str]]
    period_type: tuple[str, str] | None = None
    period: int = 0
    time_nanos: int = field(default_factory=time.time_ns)
    duration_nanos: int = 0
    comments: list[str] = field(default_factory=list)
    _strings: dict[str, int] = field(default_factory=lambda: {"": 0})
    _functions: dict[tuple[str, str, int], int] = field(default_factory=dict)
    _locations: dict[tuple[int, int], int] = field(default_factory=dict)
    _samples: dict[tuple[tuple[int, ...], tuple[tuple[int, int], ...]], _Sample] = field(default_factory=dict)

    def string(self, text: str) -> int:
        """The string table index of ``text`` (added if new)."""
        index = self._strings.get(text)
        if index is None:
            index = self._strings[text] = len(self._strings)
        return index

    def location(self, frame: Frame) -> int:
        """The location ID of ``frame`` (one function and line); IDs start at 1."""
        fkey = (frame.name, frame.filename, frame.start_line)
        fid = self._functions.get(fkey)
        if fid is None:
            fid = self._functions[fkey] = len(self._functions) + 1
            self.string(frame.name)
            self.string(frame.filename)
        lkey = (fid, frame.line)
        lid = self._locations.get(lkey)
        if lid is None:
            lid = self._locations[lkey] = len(self._locations) + 1
        return lid

    def add(self, stack: Sequence[Frame], values: Sequence[int], labels: Mapping[str, str] | None = None) -> None:
        """One sample of ``stack`` (leaf first); samples of the same stack and labels add up."""
        if len(values) != len(self.sample_types):
            raise ValueError(f"{len(values)} values for {len(self.sample_types)} sample types")
        locs = tuple(self.location(f) for f in stack)
        lab = tuple((self.string(k), self.string(v)) for k, v in sorted((labels or {}).items()))
        sample = self._samples.get((locs, lab))
        if sample is None:
            self._samples[(locs, lab)] = _Sample(list(locs), list(values), list(lab))
        else:
            sample.values = [a + b for a, b in zip(sample.values, values, strict=True)]

    @property
    def sample_count(self) -> int:
        return len(self._samples)

    def encode_uncompressed(self) -> bytes:
        """The ``Profile`` message."""
        types = [(self.string(t), self.string(u)) for t, u in self.sample_types]
        period_type = (self.string(self.period_type[0]), self.string(self.period_type[1])) if self.period_type else None
        comments = [self.string(c) for c in self.comments]
        out = bytearray()
        for t, u in types:  # 1: sample_type
            _bytes_field(out, 1, _message((1, t), (2, u)))
        for s in self._samples.values():  # 2: sample
            body = bytearray()
            _packed_field(body, 1, s.locations)
            _packed_field(body, 2, s.values)
            for k, v in s.labels:
                _bytes_field(body, 3, _message((1, k), (2, v)))
            _bytes_field(out, 2, body)
        for (fid, line), lid in self._locations.items():  # 4: location, one line each
            body = _message((1, lid))
            _bytes_field(body, 4, _message((1, fid), (2, line)))
            _bytes_field(out, 4, body)
        for (name, filename, start), fid in self._functions.items():  # 5: function
            n = self._strings[name]
            _bytes_field(out, 5, _message((1, fid), (2, n), (3, n), (4, self._strings[filename]), (5, start)))
        for text in self._strings:  # 6: string_table, index order (dicts keep insertion order)
            _bytes_field(out, 6, text.encode("utf-8", "backslashreplace"))
        _int_field(out, 9, self.time_nanos)
        _int_field(out, 10, self.duration_nanos)
        if period_type is not None:
            _bytes_field(out, 11, _message((1, period_type[0]), (2, period_type[1])))
        _int_field(out, 12, self.period)
        _packed_field(out, 13, comments)
        return bytes(out)

    def encode(self) -> bytes:
        """The gzip-compressed profile, as Go's ``/debug/pprof`` endpoints serve it."""
        return gzip.compress(self.encode_uncompressed(), compresslevel=6, mtime=0)


__all__ = ["Frame", "ProfileBuilder"]
