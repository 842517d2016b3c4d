"""Starting and stopping Debian's ``prometheus`` for the tests that compare Ringmon with it or
ask it about our ZooKeeper layout: one home for the command line, the bounded wait for
``/-/ready`` and the terminate-then-kill stop, instead of a copy per test file.

The process listens on a free port of 127.0.0.1, keeps its TSDB under the caller's work
directory (``tsdb`` unless given) and logs to ``<work>/prometheus.log``.
"""

from __future__ import annotations

import shutil
import subprocess
import time
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from services.proc import free_port

PROMETHEUS: str | None = shutil.which("prometheus")
# a Prometheus that scrapes nothing (a reference for queries over blocks or the API's answers)
NO_SCRAPES = "global:\n  scrape_interval: 1h\nscrape_configs: []\n"


@dataclass
class RealPrometheus:
    """A running ``prometheus`` process and where to reach it."""

    proc: subprocess.Popen
    port: int
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log_tail(self) -> str:
        return self.log.read_text(errors="replace")[-2000:]

    def wait_ready(self, timeout_s: float = 60.0) -> None:
        """Until ``/-/ready`` answers 200; RuntimeError with the log's tail when the process
        exits or ``timeout_s`` (a safety limit, not a measurement) passes first."""
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                with urllib.request.urlopen(self.url + "/-/ready", timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise RuntimeError(f"prometheus did not start: {self.log_tail()}")
            time.sleep(0.2)

    def stop(self, timeout_s: float = 30.0) -> None:
        """SIGTERM, then SIGKILL if it has not exited within ``timeout_s``."""
        self.proc.terminate()
        try:
            self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)


def start_prometheus(work: Path, config: Path, *, tsdb: Path | None = None,
                     args: Sequence[str] = ()) -> RealPrometheus:
    """Start ``prometheus`` on ``config`` without waiting for it (see ``RealPrometheus.wait_ready``)."""
    if PROMETHEUS is None:
        raise RuntimeError("Debian's prometheus is not installed: run `make system-deps`")
    port = free_port()
    log = work / "prometheus.log"
    with open(log, "wb") as out:  # the child has its own copy of the descriptor
        proc = subprocess.Popen(
            [PROMETHEUS, f"--config.file={config}", f"--storage.tsdb.path={tsdb or work / 'tsdb'}",
             f"--web.listen-address=127.0.0.1:{port}", *args],
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )
    return RealPrometheus(proc, port, log)


@contextmanager
def running_prometheus(work: Path, config: Path, *, tsdb: Path | None = None, args: Sequence[str] = (),
                       stop_timeout_s: float = 30.0) -> Iterator[RealPrometheus]:
    """A started and ready ``prometheus``, stopped on leaving the block."""
    prom = start_prometheus(work, config, tsdb=tsdb, args=args)
    try:
        prom.wait_ready()
        yield prom
    finally:
        prom.stop(stop_timeout_s)
