"""The disk spool: framed records survive reopen, torn tails and corruption end a segment cleanly."""

from __future__ import annotations

import math
import os

import numpy as np

from storage.model import STALE_NAN, Series, float_bits, make_labels
from storage.spool import Position, Spool, decode_batch, encode_batch


def _read_all(sp: Spool) -> list[bytes]:
    out = []
    for seg in sp.segments():
        pos = Position(seg, 0)
        while (item := sp.read(pos)) is not None:
            payload, pos = item
            out.append(payload)
    return out


def test_records_survive_reopen_in_order(tmp_path) -> None:
    sp = Spool(tmp_path, segment_bytes=200)
    payloads = [f"record-{i}".encode() * (i + 1) for i in range(30)]
    positions = [sp.append(p) for p in payloads]
    assert positions == sorted(positions)
    assert len(sp.segments()) > 1  # rolled by size
    sp.close()
    again = Spool(tmp_path, segment_bytes=200)
    assert again.backlog == sorted(again.backlog) and len(again.backlog) == len(sp.segments())
    assert again.active > max(again.backlog)  # never appends to an old segment
    assert _read_all(again) == payloads
    again.close()


def test_torn_tail_ends_segment_without_losing_earlier_records(tmp_path) -> None:
    sp = Spool(tmp_path)
    for i in range(5):
        sp.append(b"x" * 100 + bytes([i]))
    sp.close()
    seg = tmp_path / "seg-000000000001.spool"
    size = seg.stat().st_size
    os.truncate(seg, size - 30)  # the last record is cut mid-payload (crash while writing)
    again = Spool(tmp_path)
    got = _read_all(again)
    assert [p[-1] for p in got] == [0, 1, 2, 3]


def test_crc_mismatch_is_detected(tmp_path) -> None:
    sp = Spool(tmp_path)
    for i in range(3):
        sp.append(b"payload-%d" % i)
    sp.close()
    seg = tmp_path / "seg-000000000001.spool"
    data = bytearray(seg.read_bytes())
    second = 8 + len(b"payload-0")
    data[second + 8] ^= 0xFF  # flip a byte inside the second record's payload
    seg.write_bytes(bytes(data))
    assert _read_all(Spool(tmp_path)) == [b"payload-0"]


def test_delete_removes_file_but_never_the_active_segment(tmp_path) -> None:
    sp = Spool(tmp_path, segment_bytes=10)
    sp.append(b"a" * 20)
    sp.append(b"b" * 20)  # rolls: segment 1 is closed
    sp.delete(1)
    sp.delete(sp.active)
    assert sp.segments() == [sp.active]
    assert not (tmp_path / "seg-000000000001.spool").exists()


def test_batch_codec_is_bit_exact() -> None:
    s1 = Series.of(make_labels("m", a="1"))
    s2 = Series.of(make_labels("m", a="ü\n\"x"))
    ids = np.array([s1.id, s2.id, s1.id], dtype=np.int64)
    ts = np.array([1, 2, 1_700_000_000_000], dtype=np.int64)
    vals = np.array([STALE_NAN, float("nan"), -0.0], dtype=np.float64)
    rec = decode_batch(encode_batch("pool/h:1", ids, ts, vals, [s1, s2]))
    assert rec.target == "pool/h:1"
    assert rec.series_ids.tolist() == ids.tolist() and rec.timestamps.tolist() == ts.tolist()
    assert [float_bits(float(v)) for v in rec.values] == [float_bits(float(v)) for v in vals]
    assert math.copysign(1.0, rec.values[2]) == -1.0
    assert rec.series_defs == [s1, s2]


def test_batch_codec_carries_frames_as_stored_and_reads_version_1_records() -> None:
    from storage.cassandra_frames import EncodedFrame

    s1 = Series.of(make_labels("m", a="1"))
    rows = (np.array([s1.id], dtype=np.int64), np.array([5], dtype=np.int64), np.array([1.5]))
    frames = [EncodedFrame(1000, None, -7, 3, b"\x01\x02", np.array([3, 2, 1], dtype=np.int64)),
              EncodedFrame(2000, 1000, -7, 3, b"", None)]
    rec = decode_batch(encode_batch("pool/h:1", *rows, [s1], frames))
    assert [(f.ts, f.base_ts, f.layout_id, f.width, f.data) for f in rec.frames] == [
        (1000, None, -7, 3, b"\x01\x02"), (2000, 1000, -7, 3, b"")]
    assert rec.frames[0].ids is not None and rec.frames[0].ids.tolist() == [3, 2, 1] and rec.frames[1].ids is None
    assert rec.series_defs == [s1] and rec.values.tolist() == [1.5]
    old = encode_batch("pool/h:1", *rows, [s1])
    v1 = decode_batch(b"\x01" + old[1:-4])  # a record of the writer before frames: no frame count
    assert v1.frames == [] and v1.series_defs == [s1] and v1.timestamps.tolist() == [5]
