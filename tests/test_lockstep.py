"""The lockstep window loops give the scalar loops' answers, bit for bit.

``stddev/stdvar/avg/sum_over_time``, ``ts_of_max/min_over_time``, ``deriv`` and
``predict_linear`` over many windows run their per-sample loops for all windows at once
(``query.functions.lockstep``). Every such
query is evaluated twice by the real engine over the same samples, once with lockstep off and
once with it always on, over values chosen to stress the compensation (huge, tiny, infinite,
NaN, -0.0, cancelling), with windows of every length including empty ones.
"""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from query.engine import Engine
from query.functions import lockstep
from query.memory import MemoryStorage
from storage.model import Series, make_labels

EXPRS = [
    "stddev_over_time(m[{w}])",
    "stdvar_over_time(m[{w}])",
    "avg_over_time(m[{w}])",
    "sum_over_time(m[{w}])",
    "deriv(m[{w}])",
    "predict_linear(m[{w}], 300)",
    "ts_of_max_over_time(m[{w}])",
    "ts_of_min_over_time(m[{w}])",
]
VALUES = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True, width=64),
    st.sampled_from([1e308, -1e308, 1e100, -1e100, 1.0, -1.0, 0.0, -0.0, 5e-324, 1e-300, 3.0]),
    st.integers(-1000, 1000).map(float),
)


def _bits(a: np.ndarray) -> np.ndarray:
    return np.asarray(a, dtype=np.float64).view(np.uint64)


def _answers(mem: MemoryStorage, expr: str, start: int, end: int, step: int) -> dict:
    res = asyncio.run(Engine(mem, downsample=False, isolate=False).range_query(expr, start, end, step))
    return {tuple(sorted(s.labels.items())): (np.asarray(s.timestamps), _bits(s.values)) for s in res.series}


def _both(mem: MemoryStorage, expr: str, start: int, end: int, step: int) -> tuple[dict, dict]:
    with pytest.MonkeyPatch.context() as m:
        m.setattr(lockstep, "MIN_WINDOWS_PER_STEP", 10**12)  # never: the scalar loops
        scalar = _answers(mem, expr, start, end, step)
    with pytest.MonkeyPatch.context() as m:
        m.setattr(lockstep, "MIN_WINDOWS_PER_STEP", 0)  # always
        vector = _answers(mem, expr, start, end, step)
    return scalar, vector


def _assert_same(scalar: dict, vector: dict, what: str) -> None:
    assert scalar.keys() == vector.keys(), what
    for k, (ts, bits) in scalar.items():
        vts, vbits = vector[k]
        assert np.array_equal(ts, vts), (what, k)
        assert np.array_equal(bits, vbits), (what, k, bits.view(np.float64), vbits.view(np.float64))


@settings(max_examples=40)
@given(
    series=st.lists(
        st.lists(st.tuples(st.integers(0, 40), VALUES), min_size=0, max_size=60), min_size=1, max_size=3
    ),
    window=st.sampled_from(["30s", "2m", "5m"]),
    step=st.sampled_from([5_000, 15_000, 60_000]),
)
def test_lockstep_equals_the_scalar_loops_on_any_values(series, window, step) -> None:
    mem = MemoryStorage()
    for i, samples in enumerate(series):
        # distinct times, 5 s apart at most, some gaps: windows of every length, some empty
        ts = np.cumsum([1_000 + 250 * gap for gap, _ in samples], dtype=np.int64) + 1_000_000
        vals = np.array([v for _, v in samples], dtype=np.float64)
        mem.add_series(Series.of(make_labels("m", i=str(i))), ts, vals)
    for expr in EXPRS:
        e = expr.format(w=window)
        scalar, vector = _both(mem, e, 1_000_000, 1_000_000 + 600_000, step)
        _assert_same(scalar, vector, e)


@pytest.mark.parametrize("expr", EXPRS)
def test_lockstep_is_taken_for_a_panel_and_agrees(expr, monkeypatch) -> None:
    """A day-long panel of a noisy gauge (values around 1e9 with small steps: cancellation)."""
    rng = np.random.default_rng(5)
    mem = MemoryStorage()
    t0 = 1_700_000_000_000
    for i in range(3):
        ts = t0 + np.arange(0, 6 * 3_600_000, 15_000, dtype=np.int64) + rng.integers(-3, 4, 1440)
        vals = 1e9 + np.cumsum(rng.normal(0, 1, 1440)) + (i * 1e-3)
        vals[rng.integers(0, 1440, 5)] = np.nan
        mem.add_series(Series.of(make_labels("m", i=str(i))), ts, vals)
    calls = []
    real = lockstep.Lockstep.steps

    def counting(self):
        calls.append(len(self.order))
        return real(self)

    monkeypatch.setattr(lockstep.Lockstep, "steps", counting)
    e = expr.format(w="1h")
    res = asyncio.run(Engine(mem, downsample=False, isolate=False).range_query(e, t0 + 3_600_000, t0 + 6 * 3_600_000, 60_000))
    assert res.series and calls, "the default threshold did not take lockstep for a panel"
    scalar, vector = _both(mem, e, t0 + 3_600_000, t0 + 6 * 3_600_000, 60_000)
    _assert_same(scalar, vector, e)
