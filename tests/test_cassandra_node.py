"""The local Cassandra node: answers CQL once started, nodetool reaches it over JMX."""

from __future__ import annotations

from services.cassandra.cassandra_node import _cql_startup_ok


def test_node_answers_cql_and_nodetool(cassandra) -> None:
    assert cassandra.is_running()
    assert _cql_startup_ok(cassandra.host, cassandra.port)
    status = cassandra.nodetool("status")
    assert "UN  127.0.0.1" in status
