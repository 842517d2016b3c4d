"""Intermediate values of PromQL evaluation, laid out for NumPy over all evaluation steps.

An instant vector evaluated at T steps is a (series x T) value matrix plus a presence mask;
a range vector keeps each series' samples and the per-step window ends.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from query.errors import QueryError
from storage.model import STALE_NAN_BITS

Labels = tuple[tuple[str, str], ...]


@dataclass
class InstantVector:
    """``drop[i]`` marks a series whose ``__name__`` goes at the end (delayed name removal)."""

    labels: list[Labels]
    values: np.ndarray  # (n, T) float64
    present: np.ndarray  # (n, T) bool
    drop: np.ndarray | None = None  # (n,) bool

    def drops(self) -> np.ndarray:
        if self.drop is None:
            return np.zeros(len(self.labels), dtype=bool)
        return self.drop

    def with_drop(self, flag: bool) -> "InstantVector":
        return InstantVector(self.labels, self.values, self.present, np.full(len(self.labels), flag))

    @classmethod
    def empty(cls, steps: int) -> "InstantVector":
        return cls([], np.zeros((0, steps)), np.zeros((0, steps), dtype=bool))

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def steps(self) -> int:
        return int(self.values.shape[1])

    def take(self, rows: np.ndarray | list[int]) -> "InstantVector":
        rows = np.asarray(rows, dtype=np.int64)
        drop = self.drop[rows] if self.drop is not None else None
        return InstantVector([self.labels[i] for i in rows], self.values[rows], self.present[rows], drop)

    def compact(self) -> "InstantVector":
        """Drop series that have no point at any step."""
        keep = np.asarray(self.present.any(axis=1))
        if keep.all() and len(keep):
            return self
        return self.take(np.nonzero(keep)[0])


@dataclass
class Scalar:
    values: np.ndarray  # (T,)


@dataclass
class String:
    value: str


@dataclass
class RangeVector:
    """Samples of many series in flat arrays (series ``i`` is ``offsets[i]:offsets[i+1]``,
    ascending in time) plus, per step, the right edge of each (left-open) window."""

    labels: list[Labels]
    ts_flat: np.ndarray  # int64
    vals_flat: np.ndarray  # float64
    offsets: np.ndarray  # (n+1,) int64
    ends: np.ndarray  # (T,) int64 window right edges
    range_ms: int
    eval_times: np.ndarray  # (T,) step times (for functions that need them)
    # Rollup input: the aggregate columns (count, sum, min, max, last, increase) of buckets
    # ending at ``ts_flat``, flat like the values; None for raw samples.
    agg_flat: dict[str, np.ndarray] | None = None
    resolution_ms: int = 0

    @classmethod
    def from_lists(
        cls,
        labels: list[Labels],
        ts: list[np.ndarray],
        vals: list[np.ndarray],
        ends: np.ndarray,
        range_ms: int,
        eval_times: np.ndarray,
    ) -> "RangeVector":
        offsets = np.zeros(len(ts) + 1, dtype=np.int64)
        if ts:
            offsets[1:] = np.cumsum([len(t) for t in ts])
            ts_flat = np.concatenate(ts).astype(np.int64, copy=False)
            vals_flat = np.concatenate(vals).astype(np.float64, copy=False)
        else:
            ts_flat, vals_flat = np.zeros(0, dtype=np.int64), np.zeros(0)
        return cls(labels, ts_flat, vals_flat, offsets, ends, range_ms, eval_times)

    @property
    def ts(self) -> list[np.ndarray]:
        o = self.offsets
        return [self.ts_flat[o[i] : o[i + 1]] for i in range(len(self.labels))]

    @property
    def vals(self) -> list[np.ndarray]:
        o = self.offsets
        return [self.vals_flat[o[i] : o[i + 1]] for i in range(len(self.labels))]

    @property
    def agg(self) -> list[dict[str, np.ndarray]] | None:
        if self.agg_flat is None:
            return None
        o = self.offsets
        return [{k: c[o[i] : o[i + 1]] for k, c in self.agg_flat.items()} for i in range(len(self.labels))]

    def windows(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """Series ``i``'s (lo, hi) sample index bounds per step (indices into its own run)."""
        ts = self.ts_flat[self.offsets[i] : self.offsets[i + 1]]
        lo = np.searchsorted(ts, self.ends - self.range_ms, "right")
        hi = np.searchsorted(ts, self.ends, "right")
        return lo, hi

    def windows_all(self) -> tuple[np.ndarray, np.ndarray]:
        """(lo, hi) of shape (series, steps) as indices into the flat arrays."""
        return flat_windows(self.ts_flat, self.offsets, self.ends - self.range_ms, self.ends)


def flat_windows(
    ts_flat: np.ndarray, offsets: np.ndarray, lo_edges: np.ndarray, hi_edges: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Per series and step, the flat index range of samples with lo_edge < ts <= hi_edge."""
    n = len(offsets) - 1
    steps = len(hi_edges)
    if n == 0 or len(ts_flat) == 0:
        z = np.broadcast_to(offsets[:-1, None], (n, steps)).copy()
        return z, z.copy()
    if len(ts_flat) > 64 * n:
        # Long series: a search per series beats building one big composite key.
        lo = np.empty((n, steps), dtype=np.int64)
        hi = np.empty((n, steps), dtype=np.int64)
        for i in range(n):
            a, b = int(offsets[i]), int(offsets[i + 1])
            run = ts_flat[a:b]
            lo[i] = np.searchsorted(run, lo_edges, "right") + a
            hi[i] = np.searchsorted(run, hi_edges, "right") + a
        return lo, hi
    edges = np.unique(np.concatenate([lo_edges, hi_edges]))
    if n * (edges.size + 1) <= 2 * len(ts_flat):
        return _counted_windows(ts_flat, offsets, edges, lo_edges, hi_edges)
    base = min(int(ts_flat.min()), int(lo_edges.min()))
    top = max(int(ts_flat.max()), int(hi_edges.max()))
    span = top - base + 2
    sidx = np.repeat(np.arange(n, dtype=np.int64), np.diff(offsets))
    key = sidx * span + (ts_flat - base)
    rows = np.arange(n, dtype=np.int64)[:, None] * span
    lo = np.searchsorted(key, (rows + (lo_edges - base)[None, :]).ravel(), "right").reshape(n, steps)
    hi = np.searchsorted(key, (rows + (hi_edges - base)[None, :]).ravel(), "right").reshape(n, steps)
    return lo, hi


def _counted_windows(
    ts_flat: np.ndarray, offsets: np.ndarray, edges: np.ndarray, lo_edges: np.ndarray, hi_edges: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """``flat_windows`` when the steps' distinct edges are few beside the samples (a range
    query of short series: issue #20's 6,400 series x 25 steps): each sample's place among
    the edges (one search in a small array), counted per series and made cumulative, gives
    every series' samples up to each edge - where a search per window cost ~4x as much."""
    n, m = len(offsets) - 1, edges.size
    sidx = np.repeat(np.arange(n, dtype=np.int64), np.diff(offsets))
    slot = np.searchsorted(edges, ts_flat, "left")  # edges below each sample: ts <= edges[k] from k = slot on
    sidx *= m + 1
    sidx += slot
    # (counted over all series at once: every sample before series i is counted, so each
    # count is already the flat index - plus where the arrays start, offsets[0])
    upto = np.bincount(sidx, minlength=n * (m + 1)).cumsum().reshape(n, m + 1)
    if offsets[0]:
        upto += offsets[0]
    lo = upto[:, np.searchsorted(edges, lo_edges)]
    hi = upto[:, np.searchsorted(edges, hi_edges)]
    return lo, hi


Value = InstantVector | Scalar | String | RangeVector


def stale_mask(values: np.ndarray) -> np.ndarray:
    return np.equal(values.view(np.uint64), np.uint64(STALE_NAN_BITS))


# Labels that describe the metric name and go with it (Prometheus' type-and-unit labels).
NAME_LABELS = frozenset(("__name__", "__type__", "__unit__"))


def without_name(labels: Labels) -> Labels:
    """The label set without the metric name (and the ``__type__``/``__unit__`` that go with it)."""
    if not any(k in NAME_LABELS for k, _ in labels):
        return labels
    return tuple(p for p in labels if p[0] not in NAME_LABELS)


def labels_get(labels: Labels, name: str) -> str:
    for k, v in labels:
        if k == name:
            return v
    return ""


def labels_set(labels: Labels, name: str, value: str) -> Labels:
    d = dict(labels)
    if value == "":
        d.pop(name, None)
    else:
        d[name] = value
    return tuple(sorted(d.items()))


def format_labels(labels: Labels) -> str:
    name = labels_get(labels, "__name__")
    rest = ", ".join(f'{k}="{v}"' for k, v in labels if k != "__name__")
    return f"{name}{{{rest}}}"


def drop_names(vec: InstantVector) -> InstantVector:
    """Apply delayed name removal: strip ``__name__`` where flagged, then merge equal label sets."""
    if vec.drop is None or not vec.drop.any():
        return merge_same_labels(InstantVector(vec.labels, vec.values, vec.present))
    labels = [without_name(lab) if d else lab for lab, d in zip(vec.labels, vec.drop.tolist(), strict=True)]
    return merge_same_labels(InstantVector(labels, vec.values, vec.present))


def merge_same_labels(vec: InstantVector) -> InstantVector:
    """Merge series that share a label set; an overlap at one step is an error (as upstream)."""
    index: dict[Labels, list[int]] = {}
    for i, lab in enumerate(vec.labels):
        index.setdefault(lab, []).append(i)
    if len(index) == len(vec.labels):
        return vec
    drops = vec.drops()
    labels, values, present, drop = [], [], [], []
    for lab, rows in index.items():
        drop.append(bool(drops[rows].any()))
        if len(rows) == 1:
            labels.append(lab)
            values.append(vec.values[rows[0]])
            present.append(vec.present[rows[0]])
            continue
        p = vec.present[rows]
        if (p.sum(axis=0) > 1).any():
            raise QueryError("vector cannot contain metrics with the same labelset")
        v = np.where(p, vec.values[rows], 0.0).sum(axis=0)
        labels.append(lab)
        values.append(v)
        present.append(p.any(axis=0))
    n = vec.steps
    return InstantVector(
        labels,
        np.array(values).reshape(len(labels), n),
        np.array(present, dtype=bool).reshape(len(labels), n),
        np.array(drop, dtype=bool),
    )
