"""The shipped standalone session fixture: ``make run``'s instance, started and warmed once.

``shipped_standalone`` runs ``configs/standalone.yaml`` as ``make run`` does (only ``--listen``
on a free port and ``--data-dir`` added, ``standalone_site.start_standalone``) and
returns it once ``wait_until_warm`` saw its events (scrapes, rule evaluations, a rollup pass, a
delivered notification: half a minute of the shipped timers, paid once, not per module). When
the run holds a test that uses it, it is started and warmed in a thread as soon as collection
ends, so that half minute passes under the tests before its first user. The tests that use it
only read it. It is stopped right after the last test that uses it (not
left running under the rest of the session); at the session's end its output must have no
traceback and no failed delivery.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import pytest
from standalone_site import Standalone, start_standalone, wait_until_warm

_FIXTURE = "shipped_standalone"
_running: list[Standalone] = []
_last_user: list[pytest.Item] = []
_early: list[tuple[Future[Standalone], Path]] = []  # the instance started at collection's end


def _start_warm(data_dir: Path) -> Standalone:
    # port 0, as a user may ask: the alerts' links back (generatorURL) must name the bound port
    site = start_standalone(data_dir, listen="127.0.0.1:0")
    _running.append(site)
    try:
        asyncio.run(wait_until_warm(site))
    except BaseException:
        site.stop()
        _running.remove(site)
        raise
    return site


def pytest_collection_finish(session: pytest.Session) -> None:
    """Start the instance in a thread now when a test of this run will use it."""
    if session.config.option.collectonly or not any(_FIXTURE in getattr(i, "fixturenames", ()) for i in session.items):
        return
    tmp = Path(tempfile.mkdtemp(prefix="ringmon-shipped-"))
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="shipped-standalone")
    _early.append((pool.submit(_start_warm, tmp / "data"), tmp))
    pool.shutdown(wait=False)  # (the thread ends with the warm-up)


def pytest_sessionfinish(session: pytest.Session) -> None:
    """An instance started early that no test took (a run stopped by ``-x``) is stopped here."""
    while _early:
        future, tmp = _early.pop()
        try:
            future.result(timeout=300).stop()
        except Exception:  # noqa: BLE001 - its own start failed: nothing is left to stop
            pass
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture(scope="session")
def shipped_standalone(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Standalone]:
    tmp: Path | None = None
    if _early:
        future, tmp = _early.pop()
        site = future.result(timeout=600)  # (its start or warm-up failure is raised here)
    else:
        site = _start_warm(tmp_path_factory.mktemp("shipped") / "data")
    try:
        yield site
    finally:
        site.stop()
        if site in _running:
            _running.remove(site)
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
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
