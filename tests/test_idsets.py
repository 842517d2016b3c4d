"""storage.idsets.TargetIds: the write path's "already indexed / labeled" sets (issue #20)."""

from __future__ import annotations

import numpy as np

from storage.idsets import TargetIds


def test_marks_are_per_target_and_answer_for_many_ids_at_once() -> None:
    t = TargetIds()
    t.add("a", [5, 3, 3, -7])
    t.add("b", np.array([3], dtype=np.int64))
    assert t.contains("a", [3, 4, 5, -7, 2**62]).tolist() == [True, False, True, True, False]
    assert t.contains("b", [3, 5]).tolist() == [True, False]
    assert t.contains("c", [3]).tolist() == [False]
    assert t.has("a", -7) and not t.has("b", -7)
    t.add("a", [4, 5, 2**63 - 1])
    assert t.contains("a", [4, 2**63 - 1, 6]).tolist() == [True, True, False]
    assert len(t) == 6  # 5 ids under a (3 once), 1 under b


def test_an_id_costs_eight_bytes() -> None:
    """The structure's point: 100k ids of a target take 800 kB, not a dict's ~5 MB."""
    t = TargetIds()
    rng = np.random.default_rng(1)
    ids = rng.integers(-(2**63), 2**63 - 1, size=100_000, dtype=np.int64)
    for chunk in np.array_split(ids, 200):  # a warm-up adds a scrape's new series at a time
        t.add("pool/host:1", chunk)
    assert t.nbytes() == 8 * len(np.unique(ids))
    assert bool(t.contains("pool/host:1", ids).all())
    assert not t.contains("pool/host:1", np.setdiff1d(ids ^ 1, ids)).any()
