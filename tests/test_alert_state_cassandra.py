"""Alert state, notification log and silences on the real local Cassandra node."""

from __future__ import annotations

import time

from alerting.cassandra_stores import (
    CassandraAlertStateStore,
    CassandraNotificationLog,
    CassandraSilenceStore,
)
from alerting.notifier.nflog import NflogEntry
from alerting.notifier.silences import Silences, new_silence
from alerting.state import FIRING, PENDING, AlertStateRecord


async def test_group_state_is_replaced_atomically_and_survives_a_new_client(cassandra_storage) -> None:
    store = CassandraAlertStateStore(cassandra_storage)
    recs = [AlertStateRecord("alert:A:1", f"fp{i}", {"alertname": "A", "i": str(i)}, state=PENDING, active_at=10.0 + i,
                             value=float("nan") if i == 2 else 1.0)
            for i in range(3)]
    await store.save_group("f.yml;g", recs)
    back = await store.load_group("f.yml;g")
    assert [r.fingerprint for r in back] == ["fp0", "fp1", "fp2"] and back[2].value != back[2].value
    recs[0].state = FIRING
    await store.save_group("f.yml;g", recs[:1])  # replaces: fp1 and fp2 are gone
    again = CassandraAlertStateStore(cassandra_storage, create=False)  # another alerter reading it
    (only,) = await again.load_group("f.yml;g")
    assert only.state == FIRING and only.active_at == 10.0
    assert "f.yml;g" in await again.group_keys()
    await store.save_group("f.yml;g", [])
    assert await store.load_group("f.yml;g") == []


async def test_notification_log_and_silences(cassandra_storage) -> None:
    log = CassandraNotificationLog(cassandra_storage)
    now = time.time()
    await log.put(NflogEntry("g|r|webhook[0]", {"a", "b"}, {"c"}, now, now + 3600))
    e = await log.get("g|r|webhook[0]")
    assert e is not None and e.firing == {"a", "b"} and e.resolved == {"c"} and abs(e.sent_at - now) < 1e-3
    assert await log.get("missing") is None
    sil = Silences(CassandraSilenceStore(cassandra_storage), refresh_s=0)
    s = await sil.add(new_silence('alertname="X"', "ann", "maintenance", 600))
    await sil.refresh()
    assert sil.muted_by({"alertname": "X"}) == [s.id]
    await sil.expire(s.id)
    await sil.refresh()
    assert sil.muted_by({"alertname": "X"}) == []
