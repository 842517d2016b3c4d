"""ZooKeeper session fixture (filled in by the discovery work)."""
