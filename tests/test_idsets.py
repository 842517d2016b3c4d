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


def test_equal_sets_share_one_array() -> None:
    """A target's series marked by the writer (its day) and the index (day and month) are one
    array, not three (issue #20 memory); a set that grows gets its own again."""
    day, month = TargetIds(), TargetIds()
    day.add("t", [3, 1, 2])
    for chunk in ([2], [1, 3]):  # marked a chunk at a time, as index writes do
        month.add("t", chunk)
    assert day._ids["t"] is month._ids["t"] and not day._ids["t"].flags.writeable
    month.add("t", [9])
    assert month.contains("t", [1, 9, 4]).tolist() == [True, True, False] and day.contains("t", [9]).tolist() == [False]
