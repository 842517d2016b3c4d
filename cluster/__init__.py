"""A whole Ringmon cluster on this machine for ``make cluster``, the drills and the cluster tests.

Not part of the product's packages (not installed, imported by none of them): it runs the
product's commands as separate processes beside real ZooKeeper and Cassandra (``services/``).
``python -m cluster up|check|down|wipe`` (``orchestrator.py``).
"""
