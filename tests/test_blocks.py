"""Sample block codec: bit-exact round trips (Hypothesis and node_exporter-like data), errors."""

from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest
import zstandard
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from bench.rollup import node_exporter_host
from storage.blocks import (
    TIMES,
    VERSION,
    VERSION_DEFLATE,
    VERSION_SHARED_TIMES,
    BlockError,
    MissingTimes,
    _parse_header,
    block_header,
    decode_block,
    decode_columns,
    decode_group,
    encode_block,
    encode_blocks,
    encode_columns,
    encode_group,
    group_members,
    inline_times,
    share_times,
    times_key,
    times_keys,
)
from storage.model import STALE_NAN, STALE_NAN_BITS


def bits(a: np.ndarray) -> np.ndarray:
    return np.asarray(a, dtype=np.float64).view(np.uint64)


def assert_roundtrip(ts: np.ndarray, vals: np.ndarray) -> bytes:
    data = encode_block(ts, vals)
    got_ts, got_vals = decode_block(data)
    assert got_ts.dtype == np.int64 and got_vals.dtype == np.float64
    np.testing.assert_array_equal(got_ts, ts)
    np.testing.assert_array_equal(bits(got_vals), bits(vals))
    return data


any_float_bits = st.integers(0, 2**64 - 1).map(lambda u: struct.unpack("<d", struct.pack("<Q", u))[0])
special = st.sampled_from(
    [STALE_NAN, float("nan"), -0.0, 0.0, float("inf"), float("-inf"), 5e-324, 1.7976931348623157e308]
)
decimals = st.integers(-(10**12), 10**12).flatmap(lambda m: st.sampled_from([m / 10**k for k in range(0, 6)]))
value = st.one_of(any_float_bits, special, decimals, st.floats(allow_nan=True, allow_infinity=True))


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(
    ts=hnp.arrays(np.int64, st.integers(0, 300), elements=st.integers(-(2**63), 2**63 - 1)),
    data=st.data(),
)
def test_any_timestamps_and_values_roundtrip(ts, data):
    vals = np.array(data.draw(st.lists(value, min_size=len(ts), max_size=len(ts))), dtype=np.float64)
    assert_roundtrip(ts, vals)


@settings(max_examples=150)
@given(
    start=st.integers(0, 2**45),
    step=st.sampled_from([1000, 10_000, 15_000, 60_000]),
    jitter=st.lists(st.integers(-5, 5), min_size=1, max_size=400),
    gaps=st.lists(st.integers(0, 400), max_size=5),
    base=decimals,
    incs=st.lists(st.integers(0, 10**6), min_size=400, max_size=400),
    k=st.integers(0, 4),
    stale_at=st.lists(st.integers(0, 399), max_size=3),
)
def test_scrape_like_series_roundtrip(start, step, jitter, gaps, base, incs, k, stale_at):
    n = len(jitter)
    idx = np.arange(n, dtype=np.int64)
    for g in gaps:
        idx[g:] += 1  # a missed scrape
    ts = start + idx * step + np.array(jitter, dtype=np.int64)
    vals = np.round(base + np.cumsum(np.array(incs[:n], dtype=np.float64)) / 10**k, k)
    for i in stale_at:
        if i < n:
            vals[i] = STALE_NAN
    assert_roundtrip(ts, vals)


@settings(max_examples=100)
@given(
    ts=hnp.arrays(np.int64, st.integers(0, 100), elements=st.integers(0, 2**42), unique=True),
    ncols=st.integers(1, 6),
    data=st.data(),
)
def test_multi_column_roundtrip(ts, ncols, data):
    ts = np.sort(ts)
    cols = [
        np.array(data.draw(st.lists(value, min_size=len(ts), max_size=len(ts))), dtype=np.float64)
        for _ in range(ncols)
    ]
    block = decode_columns(encode_columns(ts, cols))
    np.testing.assert_array_equal(block.timestamps, ts)
    assert len(block.columns) == ncols
    for got, want in zip(block.columns, cols, strict=True):
        np.testing.assert_array_equal(bits(got), bits(want))


def test_stale_marker_payload_survives():
    ts = np.arange(10, dtype=np.int64) * 10_000
    vals = np.arange(10, dtype=np.float64)
    vals[9] = STALE_NAN
    vals[4] = float("nan")
    vals[5] = -0.0
    _, got = decode_block(assert_roundtrip(ts, vals))
    assert got.view(np.uint64)[9] == STALE_NAN_BITS
    assert got.view(np.uint64)[4] != STALE_NAN_BITS
    assert np.signbit(got[5])


def test_node_exporter_like_data_roundtrips_and_is_compact():
    rng = np.random.default_rng(7)
    total_bytes = 0
    total_samples = 0
    for ts, vals in node_exporter_host(rng, 360, 1_700_000_000_000, jitter_ms=0):
        total_bytes += len(assert_roundtrip(ts, vals))
        total_samples += len(ts)
    # Aligned scrape timestamps: well under the 1.5 bytes/sample goal.
    assert total_bytes / total_samples < 1.5


def test_constant_series_costs_almost_nothing():
    ts = 1_700_000_000_000 + np.arange(720, dtype=np.int64) * 10_000
    data = assert_roundtrip(ts, np.ones(720))
    assert len(data) < 40


def test_header_fields():
    ts = np.array([1_700_000_000_123, 1_700_000_010_123], dtype=np.int64)
    data = encode_block(ts, [1.0, 2.0])
    assert block_header(data) == (VERSION, 1, 2, 1_700_000_000_123)


def test_blocks_sharing_timestamps_keep_their_frame_once_and_decode_bit_for_bit():
    """A window's blocks of one target (same timestamps) become version 4, naming their
    shared times (header fields and timestamp frame) by key; a block alone keeps them
    (version 3). Version 4 decodes to the same samples given the times (or from ``TIMES``),
    says which it lacks without them, and turns back into the version-3 block byte for byte."""
    rng = np.random.default_rng(7)
    ts = 1_700_000_000_000 + np.arange(109, dtype=np.int64) * 5000 + rng.integers(0, 3, 109)
    vals = np.round(rng.normal(size=(20, 109)).cumsum(axis=1), 2)
    vals[3, 5] = STALE_NAN
    datas = encode_blocks(np.tile(ts, 20), vals.ravel(), np.arange(0, 20 * 109 + 1, 109))
    datas.append(encode_block(ts[:40] + 1, np.arange(40.0)))  # other timestamps, alone
    shared, frames = share_times(datas)
    assert len(frames) == 1 and times_keys(shared) == set(frames)
    assert [d[0] for d in shared] == [VERSION_SHARED_TIMES] * 20 + [VERSION] and shared[-1] == datas[-1]
    times = next(iter(frames.values()))  # (the count, first timestamp, step and timestamp frame)
    assert all(len(new) == len(old) - len(times) + 8 for old, new in zip(datas[:20], shared, strict=False))
    with pytest.raises(BlockError, match="version 4"):
        block_header(shared[0])
    TIMES.clear()
    with pytest.raises(MissingTimes):
        decode_block(shared[0])
    for old, new in zip(datas, shared, strict=True):
        want_ts, want_vals = decode_block(old)
        got_ts, got_vals = decode_block(new, frames)
        np.testing.assert_array_equal(got_ts, want_ts)
        np.testing.assert_array_equal(bits(got_vals), bits(want_vals))
        if new[0] == VERSION_SHARED_TIMES:
            assert inline_times(new, frames[times_key(new)]) == old
    TIMES.add(frames.items())
    np.testing.assert_array_equal(decode_block(shared[0])[0], ts)
    assert share_times(shared) == (shared, {})  # (version 4 stays as it is)


# Version 2 blocks as the code of 2026-12-06 wrote them (``_old_block_samples``' series):
# one Zstandard frame of timestamps and columns. A: grid timestamps (offsets from the first
# timestamp's slot), a decimal column (no median) with a stale marker as its exception;
# B: delta timestamps, an XOR column.
V2_BLOCK_A = bytes.fromhex(
    "02013c84a0abfef962a09c010000dd0300a2071b23a0ab31ff8f97ecd759bf5ceedefb8d7c9e985822c9b2ace57b78608d32b16096644a0194104992b15d3067f84026b7b1041a0b7449aae829062f9a50814ac171b160dad471578203f0b02645dea1651ad4830f416048acca6affafdf9b64699ff75d9bf4dddabed9de2f1b0400086ec2a90b21d5e30ac0"
)
V2_BLOCK_B = bytes.fromhex(
    "020128f2c4acfef962b288020000cd0c006418010100000200020001000201010000000101010002000002cccc776b53"
    "e3d6b9d6fc374a27677486b9fbc1d8715ec5f73360b8c4ed9aaa50c6b49520ad1cc30f0f1d11413d0e29393e1925221f"
    "05230135240737073e3c1c2f26073f402f211e3f2b3607281a0019c085e717ffe11ecb002e22381572d53ca5501413e6"
    "abfcbf48c145075cf255f412480a9c1d9c23f096e930ee27f26f92017e2bbb58341a63db24e36a6f946b2d5f349c4126"
    "9051a35f544ff24830e11e16e16154fa459695cefbc24dc080cca0a6571d6009d07d2217c0a2f5a281f611e7762a6a1c"
    "453f0b6c49a83bd896d5aa2bbbdddf2acbb62cc9e10dc0d783fabd2f1a4d87ccbdc722e07c68ea859c4b7c62573e2ccf"
    "00ece2bee62b414dad1ae215d889bdac82a7cc6b7bf35cf384da440e67e9709070dd4d480293f00d4e5ab016f8391b24"
    "525d47cf7b2c8ef388a20ed4c9b9efe44c04f06e4ab74b633bb13d33c9ee1f7803720278097a7c70790b08060091d327"
    "0f0623256f0e7b0e037d0f07767f717d65623f00010000000006003427e01a78c35b797416ab79d1025d"
)


def _old_block_samples() -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(5)
    n = 60
    ts = 1_700_000_000_000 + np.arange(n) * 10_000 + rng.choice([0, 0, 1, 2, 15], n)
    vals = np.round(np.cumsum(rng.random(n)), 2)
    vals[7] = STALE_NAN
    ts2 = 1_700_000_000_000 + np.cumsum(rng.integers(1, 30_000, 40))
    return [(ts, vals), (ts2, rng.random(40) * 1e-3)]


def test_version_1_and_2_blocks_still_decode():
    """Blocks written before version 3 read bit for bit: version 2 (one Zstandard frame) and
    version 1 (the same payload in raw DEFLATE); every block written now is version 3 (smaller
    on A's late scrapes and decimals; B's random timestamps and floats gain nothing)."""
    for old, (ts, vals) in zip((V2_BLOCK_A, V2_BLOCK_B), _old_block_samples(), strict=True):
        *_, pos = _parse_header(memoryview(old))
        payload = zstandard.ZstdDecompressor(format=zstandard.FORMAT_ZSTD1_MAGICLESS).decompress(
            old[pos:], max_output_size=1 << 20)
        comp = zlib.compressobj(6, zlib.DEFLATED, -15)
        deflated = bytes((VERSION_DEFLATE,)) + old[1:pos] + comp.compress(payload) + comp.flush()
        new = encode_block(ts, vals)
        assert old[0] == 2 and new[0] == VERSION == 3
        assert len(new) < len(old) or old is V2_BLOCK_B
        for data in (old, deflated, new):
            got_ts, got = decode_block(data)
            np.testing.assert_array_equal(got_ts, ts)
            np.testing.assert_array_equal(got.view(np.uint64), vals.view(np.uint64))
        with pytest.raises(BlockError):
            decode_block(deflated[:-2])


def test_empty_and_single_sample():
    assert_roundtrip(np.empty(0, dtype=np.int64), np.empty(0))
    assert_roundtrip(np.array([-5], dtype=np.int64), np.array([STALE_NAN]))


def test_mismatched_lengths_are_rejected():
    with pytest.raises(ValueError, match="column 0 has shape"):
        encode_block([1, 2, 3], [1.0])


def test_a_group_of_plain_blocks_decodes_each_series_bit_for_bit():
    """A window's plain blocks of many series (some sharing timestamps, some not, one with a
    single sample) as one group value: each series decodes to its samples bit for bit, alone
    or with others, a series it does not hold to nothing; every truncation is a BlockError."""
    rng = np.random.default_rng(11)
    ts = 1_700_000_000_000 + np.arange(109, dtype=np.int64) * 5000 + rng.integers(0, 3, 109)
    series = [(ts, np.round(rng.normal(size=109).cumsum(), 2)) for _ in range(19)]
    series[3][1][5] = STALE_NAN
    series += [(ts[:40] + 1, rng.random(40)), (ts[:1], np.array([-0.0])), (ts, np.full(109, 7.0))]
    ids = [int(x) for x in rng.integers(-(2**63), 2**63 - 1, len(series))]
    plain = [encode_block(t, v, plain=True) for t, v in series]
    assert plain[0][0] == 6 and decode_block(plain[0])[1].tobytes() == series[0][1].tobytes()
    order, value = encode_group(ids, plain)
    assert sorted(order.tolist()) == sorted(ids) and group_members(order.astype("<i8").tobytes()).tolist() == order.tolist()
    by_id = dict(zip(ids, series, strict=True))
    every = decode_group(value, order)
    assert every.keys() == set(ids)
    for sid, b in every.items():
        assert b.timestamps.tolist() == by_id[sid][0].tolist()
        assert b.values.view(np.int64).tolist() == by_id[sid][1].view(np.int64).tolist()
    some = decode_group(value, order, [ids[3], ids[20], 42])
    assert some.keys() == {ids[3], ids[20]} and some[ids[3]].values.tobytes() == series[3][1].tobytes()
    assert len(value) < sum(len(encode_block(t, v)) for t, v in series)  # (compressed together)
    for cut in (0, 1, 5, len(value) // 2, len(value) - 1):
        with pytest.raises(BlockError):
            decode_group(value[:cut], order)
    with pytest.raises(BlockError):
        decode_group(value, order[:-1])


@pytest.mark.parametrize("cut", [0, 1, 3, 8, -1])
def test_truncated_block_is_a_clear_error(cut):
    ts = 1_700_000_000_000 + np.arange(100, dtype=np.int64) * 10_000
    data = encode_block(ts, np.linspace(0, 1, 100) * np.pi)
    with pytest.raises(BlockError):
        decode_block(data[:cut])


def test_unknown_version_is_rejected():
    data = bytearray(encode_block([1, 2], [1.0, 2.0]))
    data[0] = 99
    with pytest.raises(BlockError, match="version 99"):
        decode_block(bytes(data))


@settings(max_examples=200)
@given(version=st.sampled_from([VERSION_DEFLATE, 2, VERSION]), garbage=st.binary(max_size=200))
def test_garbage_never_crashes_with_anything_but_block_error(version, garbage):
    try:
        decode_columns(bytes((version, 1)) + garbage)
    except BlockError:
        pass


def test_worst_case_payload_decodes():
    """Decimal mode with wide integers and many exceptions: the largest payload per sample."""
    rng = np.random.default_rng(0)
    n = 1000
    ts = rng.integers(-(2**62), 2**62, n)
    vals = rng.integers(-(2**52), 2**52, n).astype(np.float64)
    exc = rng.random(n) < 0.45
    vals[exc] = rng.integers(0, 2**63, int(exc.sum())).view(np.float64)
    for k in range(3):
        with np.errstate(invalid="ignore"):
            scaled = vals.copy() if k == 0 else np.round(vals / 10**k, k)
        assert_roundtrip(ts, scaled)


def test_missed_scrapes_and_lateness_stay_cheap():
    rng = np.random.default_rng(1)
    slots = np.sort(rng.choice(800, 720, replace=False))  # ~80 missed scrapes
    ts = 1_700_000_000_000 + slots * 10_000 + rng.choice([0, 0, 0, 1, 2], 720)
    data = assert_roundtrip(ts, np.ones(720))
    assert len(data) < 720 * 0.6
