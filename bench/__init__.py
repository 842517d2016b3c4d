"""Benchmarks (each module runs as a script and prints figures); a package so that tests and
sibling benchmarks import their helpers as ``bench.<module>`` and mypy names them so."""
