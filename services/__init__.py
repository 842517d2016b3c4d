"""Local service runners (ZooKeeper, Cassandra) for tests, `make cluster` and developers."""
