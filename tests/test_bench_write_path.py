"""Smoke test of bench/write_path.py's frame codec: frames decode bit for bit (stale-marker NaNs too)."""

from __future__ import annotations

import numpy as np

from bench.write_path import decode_frames, encode_frame, make_scrapes, shuffle_bytes, unshuffle_bytes
from storage.model import STALE_NAN


def test_shuffle_is_inverted() -> None:
    bits = np.arange(1, 1000, 7, dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15)
    assert np.array_equal(unshuffle_bytes(shuffle_bytes(bits), len(bits)), bits)


def test_frames_decode_bit_for_bit_from_the_xor_chain() -> None:
    sc = make_scrapes(targets=1, series=64, scrapes=5, interval_s=5)
    values = sc.values[0].copy()
    values[2, 3] = STALE_NAN
    frames = []
    prev = None
    for row in values:
        frames.append(encode_frame(row, prev))
        prev = row
    back = decode_frames(frames, values.shape[1])
    assert np.array_equal(back.view(np.uint64), values.view(np.uint64))
    assert len(sc.series[0]) == 64 and len({s.id for s in sc.series[0]}) == 64
