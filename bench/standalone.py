"""One ``ringmon standalone`` process for the benchmarks and the tests that drive one: started as
``python -m cli.main standalone ARGS`` from the repository, ready once its "is up" line named its
URL (the pipe read to its end meanwhile, so it never fills), stopped with SIGTERM (then SIGKILL)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
_UP_LINE = re.compile(r"is up: (http://127\.0\.0\.1:\d+)/")


@dataclass
class Site:
    """A running standalone process: its base URL and its output so far."""

    url: str
    proc: subprocess.Popen[str]
    output: list[str] = field(default_factory=list)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=30)


def start_site(args: Sequence[str], timeout_s: float = 120.0) -> Site:
    """``ringmon standalone ARGS``; returns once it printed its URL. Raises with its last output
    if it exits or stays silent past ``timeout_s``."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "cli.main", "standalone", *args],
        cwd=ROOT, env={**os.environ, "PYTHONUNBUFFERED": "1"}, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    output: list[str] = []
    url: list[str] = []
    found = threading.Event()

    def pump() -> None:  # keeps reading so the pipe never fills; the first URL line is the signal
        assert proc.stdout is not None
        for line in proc.stdout:
            output.append(line)
            m = _UP_LINE.search(line)
            if m and not url:
                url.append(m.group(1))
                found.set()
        found.set()

    threading.Thread(target=pump, daemon=True).start()
    found.wait(timeout_s)
    if not url:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=30)
        raise RuntimeError("standalone did not start:\n" + "".join(output[-40:]))
    return Site(url[0], proc, output)
