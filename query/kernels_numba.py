"""numba kernels of the query engine's hot passes; imported only through ``query.kernels``.

Each kernel does, element by element, the float operations of the NumPy form it replaces, in
the same order (no fastmath, no contraction into fused multiply-adds: LLVM keeps IEEE
semantics unless told otherwise; ``error_model="numpy"``: a division by zero gives IEEE's
answer, not an exception), so the answers are bit for bit the same. Signatures are eager
(compiled, or read from numba's cache beside this file, at import: no type dispatch per call)
and every kernel releases the GIL.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numba import njit


def _kernel(signature: str | list[str]) -> Any:
    """numba's ``njit`` with the kernels' options (the cache beside this file, IEEE division)."""
    return njit(signature, cache=True, error_model="numpy", nogil=True)

# Integral counts up to this add up exactly in any order (far below 2**53 for any sum of them).
_EXACT_COUNT = float(2**40)

@njit(inline="always", error_model="numpy")
def _extrapolated(
    f: float, r: float, to_start: float, to_end: float, sampled: float, intervals: float, is_counter: bool,
    is_rate: bool, range_s: float,
) -> float:
    """``rate._extrapolate`` of one window holding at least two samples (inlined where called):
    ``f`` its first value, ``r`` its change, the gaps to its edges and the sampled span in
    seconds, ``intervals`` its samples less one. (The NumPy form skips the counter's zero-point
    clamp when no window of a block can reach it, ``_never_to_zero``; here every window takes
    it, which changes none of them.)"""
    avg = sampled / intervals
    threshold = avg * 1.1
    half = avg / 2
    to_start = half if to_start >= threshold else to_start
    to_zero = f / (r if r != 0 else 1.0) * sampled
    zero_ok = is_counter & (r > 0) & (f >= 0) & (to_zero < to_start)
    to_start = to_zero if zero_ok else to_start
    to_end = half if to_end >= threshold else to_end
    factor = sampled + to_start
    factor += to_end
    factor /= sampled if sampled != 0 else np.nan
    if is_rate:
        factor /= range_s
    factor *= r
    return factor


_ROW = (
    "void(float64{0}, float64{0}, float64{0}, float64{0}, float64{0}, float64{0}, float64{0}, float64{0}, float64{0},"
    " float64[::1], float64[::1], float64, boolean, boolean, boolean, float64[::1], boolean[::1])"
)


@_kernel([_ROW.format("[::1]"), _ROW.format("[:]")])
def _rate_row(
    cs_hi: np.ndarray, cs_lo: np.ndarray, first_a: np.ndarray, last_z: np.ndarray, corr_a: np.ndarray,
    cj_hi: np.ndarray, cj_b: np.ndarray, first_ts_a: np.ndarray, last_ts_z: np.ndarray, starts: np.ndarray,
    ends: np.ndarray, range_s: float, is_counter: bool, resets: bool, is_rate: bool, out: np.ndarray,
    ok_out: np.ndarray,
) -> None:
    """One series' windows: ``window_parts_grid``'s parts (``*_a``/``*_z``/``*_hi``/``*_lo``/
    ``*_b``: the columns at each window's first, last, end, start and second bucket) then
    ``rate._extrapolate``, into ``out`` and ``ok_out``. ``resets``: the series has a
    correction or a drop across a bucket edge (else its joined corrections are all +0.0 and
    adding them adds 0.0). Branch-free inside (``_extrapolated`` is inlined), so LLVM
    vectorises it."""
    for j in range(out.shape[0]):
        c = cs_hi[j] - cs_lo[j]
        ok = c >= 2
        ok_out[j] = ok
        f = first_a[j]
        r = last_z[j] - f
        if is_counter:
            if resets:
                r = r + (corr_a[j] + (cj_hi[j] - cj_b[j]))
            else:
                r = r + 0.0
        t0 = first_ts_a[j]
        t1 = last_ts_z[j]
        to_start = (t0 - starts[j]) / 1000.0
        to_end = (ends[j] - t1) / 1000.0
        sampled = (t1 - t0) / 1000.0
        out[j] = _extrapolated(f, r, to_start, to_end, sampled, c - 1 if ok else 1.0, is_counter, is_rate, range_s)


@_kernel("int64(int64[::1], int64[::1], int64, float64[::1], int64, int64[::1], int64[::1], int64[::1], float64[::1])")
def _window_rows(
    lo: np.ndarray, hi: np.ndarray, nb: int, ends: np.ndarray, range_ms: int, a_at: np.ndarray, z_at: np.ndarray,
    b_at: np.ndarray, starts: np.ndarray,
) -> int:
    """Per step, the bucket of its window's first value (``a_at``), last value (``z_at``) and
    second bucket (``b_at``), as ``window_parts_grid`` clamps them, and its start as a float;
    returns d > 0 when every one of them moves by d buckets a step (a panel whose step is d
    buckets: the columns are then read at arithmetic progressions, views), else 0."""
    steps = lo.shape[0]
    for j in range(steps):
        w0 = lo[j]
        w1 = hi[j]
        a_at[j] = w0 if w0 < nb - 1 else nb - 1
        z_at[j] = w1 - 1 if w1 - 1 > 0 else 0
        b_at[j] = w0 + 1 if w0 + 1 < w1 else w1
        starts[j] = ends[j] - float(range_ms)
    d = lo[1] - lo[0] if steps > 1 else 1
    if d <= 0:
        return 0
    for j in range(1, steps):
        if (
            lo[j] - lo[j - 1] != d or hi[j] - hi[j - 1] != d or a_at[j] - a_at[j - 1] != d
            or z_at[j] - z_at[j - 1] != d or b_at[j] - b_at[j - 1] != d
        ):
            return 0
    return d


@_kernel(
    "boolean(float64[::1], float64[::1], float64[::1], float64[::1], float64[::1], float64[::1], int64[::1],"
    " int64, int64, int64[::1], int64[::1], float64[::1], int64, boolean, boolean, float64[:, ::1], boolean[:, ::1])"
)
def grid_rate(  # noqa: PLR0915 - one fused loop on purpose: a kernel called per series is ~25% slower (not inlined)
    count: np.ndarray, first: np.ndarray, first_ts: np.ndarray, last: np.ndarray, last_ts: np.ndarray,
    correction: np.ndarray, correction_bits: np.ndarray, n: int, nb: int, lo: np.ndarray, hi: np.ndarray,
    ends: np.ndarray, range_ms: int, is_counter: bool, is_rate: bool, vals: np.ndarray, ok: np.ndarray,
) -> bool:
    """rate/increase/delta over a full grid of rollup buckets (series ``i`` is rows ``i*nb ..
    i*nb+nb-1`` of the flat columns; step ``j``'s window is buckets ``[lo[j], hi[j])``): what
    ``rollup_rate.window_parts_grid`` then ``rate._extrapolate`` give, into ``vals`` and ``ok``
    (series, steps). ``correction_bits``: the correction column viewed as int64. False (what
    was written does not count) where those return None: a correction that is not finite, or
    for a counter a joined correction that is not.

    The prefix sums are np.cumsum's (left to right, the first element as it is): the counts'
    in int64 when every count of the series is a whole number below 2**40 (the float sums
    are then exact, so equal), the joined corrections' only for a counter with a correction
    or a drop across a bucket edge (else they are all +0.0, and adding them adds 0.0)."""
    steps = lo.shape[0]
    if steps == 0 or nb == 0:
        return True
    range_s = range_ms / 1000.0
    a_at = np.empty(steps, dtype=np.int64)
    z_at = np.empty(steps, dtype=np.int64)
    b_at = np.empty(steps, dtype=np.int64)
    starts = np.empty(steps)
    d = _window_rows(lo, hi, nb, ends, range_ms, a_at, z_at, b_at, starts)
    a0, z0, b0, l0, h0 = a_at[0], z_at[0], b_at[0], lo[0], hi[0]
    span = (steps - 1) * d + 1
    cs = np.empty(nb + 1)
    cj = np.zeros(nb + 1)
    gathered = np.empty((9, 0 if d else steps))
    for i in range(n):
        base = i * nb
        integral = True
        resets = False
        bad = False
        for k in range(nb):
            c = count[base + k]
            integral &= (c >= 0) & (c <= _EXACT_COUNT) & (np.floor(c) == c)
            ck = correction[base + k]
            bad |= ck - ck != 0.0  # (NaN or infinite)
            resets |= correction_bits[base + k] != 0
        if bad:
            return False
        for k in range(1, nb):
            resets |= first[base + k] < last[base + k - 1]
        cs[0] = 0.0
        if integral:
            acc = np.int64(0)
            for k in range(nb):
                acc += np.int64(count[base + k])
                cs[k + 1] = float(acc)
        else:
            s = count[base]
            cs[1] = s
            for k in range(1, nb):
                s = s + count[base + k]
                cs[k + 1] = s
        resets &= is_counter
        if resets:
            # joined[k]: bucket k's correction plus, on a drop across its left edge, the last value before it.
            sj = correction[base]
            cj[1] = sj
            for k in range(1, nb):
                prev = last[base + k - 1]
                joined = correction[base + k] + (prev if first[base + k] < prev else 0.0)
                if joined - joined != 0.0:
                    return False
                sj = sj + joined
                cj[k + 1] = sj
        fr = first[base : base + nb]
        la = last[base : base + nb]
        co = correction[base : base + nb]
        fts = first_ts[base : base + nb]
        lts = last_ts[base : base + nb]
        if d == 1:
            _rate_row(
                cs[h0 : h0 + span], cs[l0 : l0 + span], fr[a0 : a0 + span], la[z0 : z0 + span],
                co[a0 : a0 + span], cj[h0 : h0 + span], cj[b0 : b0 + span], fts[a0 : a0 + span],
                lts[z0 : z0 + span], starts, ends, range_s, is_counter, resets, is_rate, vals[i], ok[i],
            )
        elif d > 1:
            _rate_row(
                cs[h0 : h0 + span : d], cs[l0 : l0 + span : d], fr[a0 : a0 + span : d], la[z0 : z0 + span : d],
                co[a0 : a0 + span : d], cj[h0 : h0 + span : d], cj[b0 : b0 + span : d], fts[a0 : a0 + span : d],
                lts[z0 : z0 + span : d], starts, ends, range_s, is_counter, resets, is_rate, vals[i], ok[i],
            )
        else:
            for j in range(steps):
                a = a_at[j]
                z = z_at[j]
                gathered[0, j] = cs[hi[j]]
                gathered[1, j] = cs[lo[j]]
                gathered[2, j] = fr[a]
                gathered[3, j] = la[z]
                gathered[4, j] = co[a]
                gathered[5, j] = cj[hi[j]]
                gathered[6, j] = cj[b_at[j]]
                gathered[7, j] = fts[a]
                gathered[8, j] = lts[z]
            _rate_row(
                gathered[0], gathered[1], gathered[2], gathered[3], gathered[4], gathered[5], gathered[6],
                gathered[7], gathered[8], starts, ends, range_s, is_counter, resets, is_rate, vals[i], ok[i],
            )
    return True


@_kernel("void(float64[:, ::1], boolean[:, ::1], int64[::1], int64, int64, float64[::1], float64[:, ::1])")
def _pairwise_rows(
    values: np.ndarray, present: np.ndarray, rows: np.ndarray, s: int, n: int, res: np.ndarray, acc: np.ndarray
) -> None:
    """Per column, NumPy's pairwise sum (``pairwise_sum`` of its float add loop, which
    ``np.add.reduceat`` runs down each column after a segment's first row) of the rows
    ``rows[s:s+n]`` of ``values`` (0.0 where not ``present``), into ``res``; ``acc``: (8,
    columns) scratch. Under 8 rows: from -0.0 one by one; up to 128: eight running sums, joined
    as a tree, then the rest one by one; more: the two halves' (cut at a multiple of 8) sums."""
    steps = res.shape[0]
    if n < 8:
        res[:] = -0.0
        for i in range(s, s + n):
            v = values[rows[i]]
            p = present[rows[i]]
            for j in range(steps):
                res[j] += v[j] if p[j] else 0.0
    elif n <= 128:
        for t in range(8):
            v = values[rows[s + t]]
            p = present[rows[s + t]]
            a = acc[t]
            for j in range(steps):
                a[j] = v[j] if p[j] else 0.0
        i = 8
        while i < n - (n % 8):
            for t in range(8):
                v = values[rows[s + i + t]]
                p = present[rows[s + i + t]]
                a = acc[t]
                for j in range(steps):
                    a[j] += v[j] if p[j] else 0.0
            i += 8
        for j in range(steps):
            res[j] = ((acc[0, j] + acc[1, j]) + (acc[2, j] + acc[3, j])) + ((acc[4, j] + acc[5, j]) + (acc[6, j] + acc[7, j]))
        for k in range(i, n):
            v = values[rows[s + k]]
            p = present[rows[s + k]]
            for j in range(steps):
                res[j] += v[j] if p[j] else 0.0
    else:
        n2 = n // 2
        n2 -= n2 % 8
        left = np.empty(steps)
        _pairwise_rows(values, present, rows, s, n2, left, acc)
        _pairwise_rows(values, present, rows, s + n2, n - n2, res, acc)
        for j in range(steps):
            res[j] = left[j] + res[j]


@_kernel("boolean(float64[:, ::1], boolean[:, ::1], int64[::1], float64[:, ::1], float64[:, ::1])")
def group_sums(values: np.ndarray, present: np.ndarray, gid: np.ndarray, total: np.ndarray, count: np.ndarray) -> bool:
    """``sum``/``avg``'s parts of series grouped by ``gid`` (groups numbered 0.. in order of
    first appearance), as ``aggregations._fast_sums`` makes them with ``np.add.reduceat`` over
    the rows sorted stably by group: per (group, step) its first row's value plus the pairwise
    sum of its other rows' (0.0 where absent), into ``total``, and the number present into
    ``count``. Returns ``aggregations._well_conditioned_steps(...).all()``: when False, those
    parts are not the answer (the compensated sums are)."""
    n, steps = values.shape
    groups = total.shape[0]
    top = np.zeros(steps)
    low = np.full(steps, np.inf)
    for i in range(n):
        v = values[i]
        p = present[i]
        for j in range(steps):
            a = abs(v[j])
            if p[j]:
                top[j] = a if (a > top[j]) | (a != a) else top[j]  # (NaN once seen stays, as np.max)
                low[j] = a if (a > 0) & (a < low[j]) else low[j]
    for j in range(steps):
        t = top[j]
        if not ((t - t == 0.0) & (t < 1e15) & ((low[j] == np.inf) | (t / low[j] < 1e6))):
            return False
    # The rows of each group in order (a stable counting sort).
    sizes = np.zeros(groups + 1, dtype=np.int64)
    for i in range(n):
        sizes[gid[i] + 1] += 1
    for g in range(groups):
        sizes[g + 1] += sizes[g]
    rows = np.empty(n, dtype=np.int64)
    fill = sizes[:groups].copy()
    for i in range(n):
        rows[fill[gid[i]]] = i
        fill[gid[i]] += 1
    acc = np.empty((8, steps))
    for g in range(groups):
        s0 = sizes[g]
        size = sizes[g + 1] - s0
        t_row = total[g]
        c_row = count[g]
        for j in range(steps):
            c_row[j] = 0.0
        for k in range(s0, s0 + size):
            p = present[rows[k]]
            for j in range(steps):
                c_row[j] += 1.0 if p[j] else 0.0
        if size == 0:
            t_row[:] = 0.0
            continue
        if size > 1:
            _pairwise_rows(values, present, rows, s0 + 1, size - 1, t_row, acc)
        else:
            t_row[:] = 0.0
        v = values[rows[s0]]
        p = present[rows[s0]]
        for j in range(steps):
            first = v[j] if p[j] else 0.0
            t_row[j] = first + t_row[j] if size > 1 else first
    return True


@_kernel("Tuple((int64, int64[::1]))(float64[::1], int64[::1], boolean, float64[::1])")
def _raw_corrections(v: np.ndarray, offsets: np.ndarray, is_counter: bool, cc: np.ndarray) -> tuple[int, np.ndarray]:
    """``raw_rate``'s counter corrections: into ``cc`` the running sum (np.cumsum's, left to
    right) of the previous value at every drop within a series, and the running count of those
    from +Inf (counted apart, not in ``cc``). Returns 0 (no drop at all: nothing to add), 1
    (drops) or 2 (one from +Inf), and that count (empty but for 2)."""
    total = v.shape[0]
    ci = np.zeros(0, dtype=np.int64)
    if not is_counter or total < 2:
        return 0, ci
    drops = False
    infs = False
    for k in range(1, total):
        cc[k] = v[k - 1] if v[k] < v[k - 1] else 0.0
    for i in range(offsets.shape[0] - 1):
        if offsets[i + 1] > offsets[i]:
            cc[offsets[i]] = 0.0  # (no drop across series)
    for k in range(total):
        drops |= cc[k] != 0.0
        infs |= cc[k] == np.inf
    if infs:  # (only the windows holding one get +Inf)
        ci = np.zeros(total, dtype=np.int64)
        for k in range(total):
            if cc[k] == np.inf:
                cc[k] = 0.0
                ci[k] = 1
        for k in range(1, total):
            ci[k] = ci[k - 1] + ci[k]
    for k in range(1, total):
        cc[k] = cc[k - 1] + cc[k]
    return (2 if infs else 1 if drops else 0), ci


@_kernel(
    "boolean(int64[::1], float64[::1], int64[::1], int64[::1], int64, boolean, boolean, float64[:, ::1], boolean[:, ::1])"
)
def raw_rate(
    ts: np.ndarray, v: np.ndarray, offsets: np.ndarray, ends: np.ndarray, range_ms: int, is_counter: bool,
    is_rate: bool, vals: np.ndarray, ok: np.ndarray,
) -> bool:
    """rate/increase/delta over raw samples (series ``i`` is ``offsets[i]:offsets[i+1]`` of
    ``ts``/``v``, ascending in time; window ``j`` holds the samples with ``ends[j] - range_ms <
    ts <= ends[j]``): what ``RangeVector.windows_all`` then ``rate._extrapolated`` give, into
    ``vals`` and ``ok`` (series, steps); each series' windows found by one walk over its
    samples. False (nothing that counts written) when ``ends`` do not ascend.

    The counter corrections are the NumPy form's: the previous value at every drop within a
    series, in one running sum over all samples (np.cumsum's, left to right; drops from +Inf
    counted apart), differenced per window, and added only when some drop exists at all."""
    steps = ends.shape[0]
    for j in range(1, steps):
        if ends[j] < ends[j - 1]:
            return False
    total = v.shape[0]
    series = offsets.shape[0] - 1
    cc = np.zeros(total)
    found, ci = _raw_corrections(v, offsets, is_counter, cc)
    drops = found > 0
    infs = found > 1
    range_s = range_ms / 1000.0
    for i in range(series):
        a = offsets[i]
        b = offsets[i + 1]
        lo = a
        hi = a
        out = vals[i]
        ok_row = ok[i]
        for j in range(steps):
            e = ends[j]
            start = e - range_ms
            while lo < b and ts[lo] <= start:
                lo += 1
            if hi < lo:
                hi = lo
            while hi < b and ts[hi] <= e:
                hi += 1
            cnt = hi - lo
            good = cnt >= 2
            ok_row[j] = good
            if not good:
                out[j] = 0.0
                continue
            first = lo
            last = hi - 1
            f = v[first]
            r = v[last] - f
            if drops:
                corr = cc[last] - cc[first]
                if infs and ci[last] - ci[first] > 0:
                    corr = np.inf
                r = r + corr
            t0 = ts[first]
            t1 = ts[last]
            to_start = float(t0 - start) / 1000.0
            to_end = float(e - t1) / 1000.0
            sampled = float(t1 - t0) / 1000.0
            out[j] = _extrapolated(f, r, to_start, to_end, sampled, float(cnt - 1), is_counter, is_rate, range_s)
    return True


@_kernel(
    "void(float64[::1], float64[::1], float64[::1], float64[::1], int64, int64, boolean, float64[::1], float64[:, ::1])"
)
def _flat_prefixes(
    count: np.ndarray, first: np.ndarray, last: np.ndarray, correction: np.ndarray, r0: int, r1: int,
    is_counter: bool, acc: np.ndarray, out: np.ndarray,
) -> None:
    """``rollup_rate.window_parts``' prefix sums over all the flat rows (np.cumsum's: left to
    right, the first element as it is, after a leading 0.0), for rows ``r0:r1`` (a series;
    ``r0`` its first row, no drop across its left edge), carried on from the rows before in
    ``acc``: into ``out[:, t]`` the sums up to row ``r0 + t`` (excluded) of the counts, the
    buckets without the rate aggregates (a NaN correction) and, for a counter, the joined
    corrections (a bucket's correction plus, on a drop across its left edge, the last value
    before it) that are finite and that are +Inf."""
    out[0, 0] = acc[0]
    out[1, 0] = acc[1]
    out[2, 0] = acc[2]
    out[3, 0] = acc[3]
    for k in range(r0, r1):
        c = correction[k]
        joined = c
        if k > r0:
            prev = last[k - 1]
            joined = c + (prev if first[k] < prev else 0.0)
        elif k > 0:
            joined = c + 0.0
        t = k - r0 + 1
        if k == 0:
            acc[0] = count[0]
            acc[1] = 1.0 if c != c else 0.0
        else:
            acc[0] = acc[0] + count[k]
            acc[1] = acc[1] + (1.0 if c != c else 0.0)
        if is_counter:
            fin = joined if joined - joined == 0.0 else 0.0
            inf = 1.0 if joined == np.inf else 0.0
            if k == 0:
                acc[2] = fin
                acc[3] = inf
            else:
                acc[2] = acc[2] + fin
                acc[3] = acc[3] + inf
        out[0, t] = acc[0]
        out[1, t] = acc[1]
        out[2, t] = acc[2]
        out[3, t] = acc[3]


@_kernel(
    "boolean(float64[::1], float64[::1], float64[::1], float64[::1], float64[::1], float64[::1], int64[::1],"
    " int64[::1], int64[::1], int64, boolean, boolean, float64[:, ::1], boolean[:, ::1], boolean[:, ::1])"
)
def flat_rate(
    count: np.ndarray, first: np.ndarray, first_ts: np.ndarray, last: np.ndarray, last_ts: np.ndarray,
    correction: np.ndarray, ts: np.ndarray, offsets: np.ndarray, ends: np.ndarray, range_ms: int, is_counter: bool,
    is_rate: bool, vals: np.ndarray, ok: np.ndarray, known: np.ndarray,
) -> bool:
    """rate/increase/delta over rollup buckets off a full grid (series ``i`` is rows
    ``offsets[i]:offsets[i+1]``, ``ts`` their bucket ends, ascending; window ``j`` holds the
    buckets ending in ``(ends[j] - range_ms, ends[j]]``): what ``RangeVector.windows_all``,
    ``rollup_rate.window_parts`` and ``rate._extrapolate`` give, into ``vals``, ``ok`` and
    ``known`` (series, steps). The prefix sums over all rows are made a series at a time
    (``_flat_prefixes``), so they stay in cache. False (nothing that counts written) when
    ``ends`` do not ascend or the series are not one after another from row 0."""
    steps = ends.shape[0]
    series = offsets.shape[0] - 1
    for j in range(1, steps):
        if ends[j] < ends[j - 1]:
            return False
    if offsets[0] != 0:
        return False
    longest = 0
    for i in range(series):
        if offsets[i + 1] < offsets[i]:
            return False
        longest = max(longest, offsets[i + 1] - offsets[i])
    acc = np.zeros(4)
    pre = np.empty((4, longest + 1))
    range_s = range_ms / 1000.0
    for i in range(series):
        s0 = offsets[i]
        s1 = offsets[i + 1]
        _flat_prefixes(count, first, last, correction, s0, s1, is_counter, acc, pre)
        cs = pre[0]
        bad = pre[1]
        cf = pre[2]
        ci = pre[3]
        lo = s0
        hi = s0
        out = vals[i]
        ok_row = ok[i]
        known_row = known[i]
        for j in range(steps):
            e = ends[j]
            start = e - range_ms
            while lo < s1 and ts[lo] <= start:
                lo += 1
            if hi < lo:
                hi = lo
            while hi < s1 and ts[hi] <= e:
                hi += 1
            a = lo - s0  # (local: the prefix sums of this series' rows)
            h = hi - s0
            n = cs[h] - cs[a] if hi > lo else 0.0
            good = (hi > lo) & (n >= 2)
            ok_row[j] = good
            known_row[j] = (not good) or (bad[h] - bad[a] == 0)
            if not good:
                out[j] = 0.0
                continue
            f = first[lo]
            r = last[hi - 1] - f
            if is_counter:
                b = a + 1 if a + 1 < h else h
                corr = cf[h] - cf[b]
                if ci[h] - ci[b] > 0:
                    corr = np.inf
                r = r + (correction[lo] + corr)
            t0 = first_ts[lo]
            t1 = last_ts[hi - 1]
            to_start = (t0 - float(start)) / 1000.0
            to_end = (float(e) - t1) / 1000.0
            sampled = (t1 - t0) / 1000.0
            out[j] = _extrapolated(f, r, to_start, to_end, sampled, n - 1, is_counter, is_rate, range_s)
    return True
