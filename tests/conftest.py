"""Session-wide test setup: real services are started once per session by the fixture plugins."""

from __future__ import annotations

import pathlib
import sys

from hypothesis import HealthCheck, settings

ROOT = pathlib.Path(__file__).resolve().parent.parent
# Upstream conformance data, kept in the repository (tests/conformance/README.md says what and whence).
CONFORMANCE = ROOT / "tests" / "conformance"
sys.path.insert(0, str(ROOT))

from query import kernels  # noqa: E402

# Property tests assert behaviour, never speed: no per-example deadline (Hypothesis' default is
# 200 ms, which a loaded machine overruns) and no too-slow health check, for every @given.
settings.register_profile("ringmon", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("ringmon")

# The compiled query kernels serve every evaluation in this process (a service loads them at its
# first big query, query.kernels): from numba's cache, which `make venv` filled.
kernels.load()

# Each plugin owns one service's session fixture (start once, non-default port, temp data dir).
pytest_plugins = ["fixtures_zookeeper", "fixtures_cassandra", "fixtures_standalone"]
