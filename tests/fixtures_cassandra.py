"""Cassandra session fixture (filled in by the storage work)."""
