"""Run a local Cassandra 5.0 node from Maven Central jars."""
