"""A recording HTTP receiver on 127.0.0.1 for tests and benchmarks of the notification channels.

It stores every request (path, headers, JSON or form body, arrival time) and answers with a
programmable status (e.g. 500 until a moment, then 200).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, BinaryIO

from aiohttp import web

if TYPE_CHECKING:
    import subprocess


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: Any
    raw: bytes
    at: float
    answered: int


@dataclass
class RecordingReceiver:
    """``status_for(request_index, path) -> HTTP status``; default always 200."""

    status_for: Callable[[int, str], int] = lambda i, p: 200
    requests: list[Received] = field(default_factory=list)
    port: int = 0
    _runner: web.AppRunner | None = None
    _cond: asyncio.Condition | None = None
    attempts: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> RecordingReceiver:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self._cond = asyncio.Condition()
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _handle(self, request: web.Request) -> web.Response:
        raw = await request.read()
        idx = self.attempts
        self.attempts += 1
        status = self.status_for(idx, request.path)
        ctype = request.headers.get("Content-Type", "")
        body: Any
        if "json" in ctype:
            body = json.loads(raw or b"null")
        elif "form" in ctype:
            body = dict((await request.post()).items())
        else:
            body = raw.decode("utf-8", "replace")
        if 200 <= status < 300:
            self.requests.append(Received(request.path, dict(request.headers), body, raw, time.time(), status))
            assert self._cond is not None
            async with self._cond:
                self._cond.notify_all()
        return web.json_response({"status": "success" if status < 300 else "error"}, status=status)

    async def wait_for(self, count: int, timeout: float = 10.0, path_prefix: str = "") -> list[Received]:
        """Wait (bounded) until ``count`` accepted requests under ``path_prefix`` arrived."""
        assert self._cond is not None

        def got() -> list[Received]:
            return [r for r in self.requests if r.path.startswith(path_prefix)]

        deadline = time.monotonic() + timeout
        async with self._cond:
            while len(got()) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                try:
                    await asyncio.wait_for(self._cond.wait(), timeout=left)
                except TimeoutError:
                    break
        return got()


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class AlertmanagerProcess:
    """Debian's ``prometheus-alertmanager`` on a free 127.0.0.1 port with its data in ``workdir``."""

    def __init__(self, workdir: str) -> None:
        from pathlib import Path

        self.dir = Path(workdir)
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: BinaryIO | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> AlertmanagerProcess:
        import subprocess
        import urllib.request

        cfg = self.dir / "am.yml"
        cfg.write_text("route:\n  receiver: 'null'\nreceivers:\n  - name: 'null'\n")
        self._log = open(self.dir / "am.log", "wb")
        self.proc = subprocess.Popen(
            ["prometheus-alertmanager", f"--config.file={cfg}", f"--storage.path={self.dir / 'data'}",
             f"--web.listen-address=127.0.0.1:{self.port}", "--cluster.listen-address="],
            stdout=self._log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"alertmanager exited: {(self.dir / 'am.log').read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(self.url + "/-/ready", timeout=1) as r:
                    if r.status == 200:
                        return self
            except OSError:
                time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"alertmanager not ready within {timeout} s")

    def stop(self) -> None:
        import subprocess

        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
            self.proc = None
        if self._log is not None:
            self._log.close()
            self._log = None
