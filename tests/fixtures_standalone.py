"""The shipped standalone session fixture: ``make run``'s instance, started and warmed once.

``shipped_standalone`` runs ``configs/standalone.yaml`` as ``make run`` does (only ``--listen``
on a free port and ``--data-dir`` added, ``standalone_site.start_standalone``) and
returns it once ``wait_until_warm`` saw its events (scrapes, rule evaluations, a rollup pass, a
delivered notification: half a minute of the shipped timers, paid once, not per module). The
tests that use it only read it. It is stopped right after the last test that uses it (not
left running under the rest of the session); at the session's end its output must have no
traceback and no failed delivery.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from standalone_site import Standalone, start_standalone, wait_until_warm

_FIXTURE = "shipped_standalone"
_running: list[Standalone] = []
_last_user: list[pytest.Item] = []


@pytest.fixture(scope="session")
def shipped_standalone(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Standalone]:
    # port 0, as a user may ask: the alerts' links back (generatorURL) must name the bound port
    site = start_standalone(tmp_path_factory.mktemp("shipped") / "data", listen="127.0.0.1:0")
    _running.append(site)
    try:
        asyncio.run(wait_until_warm(site))
        yield site
    finally:
        site.stop()
        _running.remove(site)
    out = "".join(site.output)
    assert "Traceback" not in out, out
    assert "delivery failed" not in out, out


@pytest.hookimpl(trylast=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> None:
    """After the last test that uses the instance, stop it (its checks stay at session end)."""
    if not _running:
        return
    if not _last_user:
        _last_user.extend([i for i in item.session.items if _FIXTURE in getattr(i, "fixturenames", ())][-1:])
    if item in _last_user:
        for site in _running:
            site.stop()
