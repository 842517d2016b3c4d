"""Run a local standalone ZooKeeper from Debian's package."""
