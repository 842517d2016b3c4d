"""Run a local standalone ZooKeeper (Debian's package) for tests, ``make cluster`` and developers.

    python services/zookeeper/zkserver.py start --port 2281 --dir data/zookeeper
    python services/zookeeper/zkserver.py wait  --port 2281 --dir data/zookeeper
    python services/zookeeper/zkserver.py stop  --dir data/zookeeper

The server runs ``org.apache.zookeeper.server.ZooKeeperServerMain`` with a zoo.cfg written
from ``zoo.cfg.in`` next to this file: small tickTime, 4-letter-word whitelist, admin server
off, 127.0.0.1 and a non-default port, data and logs under ``--dir``. Its PID is kept in
``<dir>/zookeeper.pid``; ``stop`` ends exactly that process (after checking it is ours).
Stopping and starting again on the same port and data keeps every persistent znode and lets
client sessions resume, which is how the outage tests use it.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
if __package__ in (None, ""):  # run as a script: make the repo root importable
    sys.path.insert(0, str(HERE.parent.parent))

from services.proc import free_port, pid_alive  # noqa: E402

# slf4j-simple first: the glob holds several slf4j bindings and would otherwise pick a silent one.
# ZooKeeper then logs to stderr, which goes to <dir>/zookeeper.out.
CLASSPATH = "/usr/share/java/slf4j-simple.jar:/usr/share/zookeeper/*:/usr/share/java/*"
MAIN_CLASS = "org.apache.zookeeper.server.ZooKeeperServerMain"
JVM_OPTS = ["-Xms64m", "-Xmx256m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1", "-Djava.awt.headless=true"]


class ZooKeeperError(RuntimeError):
    """The local ZooKeeper could not be started, reached or stopped; the message says why."""


def four_letter_word(host: str, port: int, word: str, timeout: float = 2.0) -> str:
    """Send a 4lw command (``ruok``, ``srvr``, ``mntr``...) and return the reply ('' if none)."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as s:
            s.sendall(word.encode())
            chunks = []
            while True:
                data = s.recv(4096)
                if not data:
                    break
                chunks.append(data)
            return b"".join(chunks).decode(errors="replace")
    except OSError:
        return ""


@dataclass
class ZooKeeperServer:
    """One standalone ZooKeeper server process on ``host:port`` with its files under ``base_dir``."""

    base_dir: Path
    port: int = 0
    host: str = "127.0.0.1"
    tick_ms: int = 200
    min_session_ms: int = 400
    max_session_ms: int = 60_000
    force_sync: bool = False  # tests and dev clusters trade fsync per write for speed
    java: str = "java"

    def __post_init__(self) -> None:
        self.base_dir = Path(self.base_dir).resolve()
        if not self.port:
            self.port = self._port_from_cfg() or free_port(self.host)
        self._proc: subprocess.Popen | None = None

    # -- paths --------------------------------------------------------------------------------

    @property
    def hosts(self) -> str:
        """The connection string clients use (``127.0.0.1:port``)."""
        return f"{self.host}:{self.port}"

    @property
    def cfg_path(self) -> Path:
        return self.base_dir / "zoo.cfg"

    @property
    def pid_path(self) -> Path:
        return self.base_dir / "zookeeper.pid"

    @property
    def data_dir(self) -> Path:
        return self.base_dir / "data"

    @property
    def log_path(self) -> Path:
        return self.base_dir / "zookeeper.out"

    def _port_from_cfg(self) -> int | None:
        try:
            for line in self.cfg_path.read_text().splitlines():
                if line.startswith("clientPort="):
                    return int(line.split("=", 1)[1])
        except (OSError, ValueError):
            return None
        return None

    # -- lifecycle ----------------------------------------------------------------------------

    def write_config(self) -> Path:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        text = (HERE / "zoo.cfg.in").read_text().format(
            tick_ms=self.tick_ms,
            data_dir=self.data_dir,
            port=self.port,
            host=self.host,
            min_session_ms=self.min_session_ms,
            max_session_ms=self.max_session_ms,
            force_sync="yes" if self.force_sync else "no",
        )
        self.cfg_path.write_text(text)
        return self.cfg_path

    def pid(self) -> int | None:
        """The PID of our running server, or None (a stale or foreign pidfile counts as none)."""
        try:
            pid = int(self.pid_path.read_text().strip())
        except (OSError, ValueError):
            return None
        if not pid_alive(pid):
            return None
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            return None
        if MAIN_CLASS.encode() not in cmdline or str(self.cfg_path).encode() not in cmdline:
            return None
        return pid

    def is_running(self) -> bool:
        return self.pid() is not None

    def is_ready(self) -> bool:
        return four_letter_word(self.host, self.port, "ruok", timeout=1.0).strip() == "imok" and bool(
            self._serving()
        )

    def _serving(self) -> bool:
        # ruok answers before the database is loaded; srvr answers "Mode: standalone" once it serves.
        return "Mode:" in four_letter_word(self.host, self.port, "srvr", timeout=1.0)

    def start(self, wait: bool = True, timeout: float = 60.0) -> None:
        """Start the server (no-op if it already runs); with ``wait`` block until it serves."""
        if self.is_running():
            if wait:
                self.wait(timeout)
            return
        if four_letter_word(self.host, self.port, "ruok", timeout=0.5):
            raise ZooKeeperError(f"port {self.hosts} is already served by another ZooKeeper (not ours)")
        self.write_config()
        cmd = [
            self.java,
            *JVM_OPTS,
            f"-Dzookeeper.log.dir={self.base_dir}",
            "-Dorg.slf4j.simpleLogger.defaultLogLevel=info",
            "-Dorg.slf4j.simpleLogger.showDateTime=true",
            "-Dorg.slf4j.simpleLogger.dateTimeFormat=yyyy-MM-dd'T'HH:mm:ss.SSSZ",
            "-Dzookeeper.jmx.log4j.disable=true",
            "-cp",
            CLASSPATH,
            MAIN_CLASS,
            str(self.cfg_path),
        ]
        with open(self.log_path, "ab") as out:
            self._proc = subprocess.Popen(
                cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        self.pid_path.write_text(f"{self._proc.pid}\n")
        if wait:
            self.wait(timeout)

    def wait(self, timeout: float = 60.0) -> None:
        """Block until the server answers ``ruok`` and serves; raise ZooKeeperError after ``timeout``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.is_ready():
                return
            if self._proc is not None and self._proc.poll() is not None:
                raise ZooKeeperError(
                    f"ZooKeeper exited with code {self._proc.returncode} during start; see {self.log_path}: "
                    + self._log_tail()
                )
            time.sleep(0.2)
        raise ZooKeeperError(f"ZooKeeper on {self.hosts} not ready after {timeout:.0f}s; see {self.log_path}")

    def stop(self, timeout: float = 15.0, kill: bool = False) -> None:
        """Stop our server by PID: SIGTERM (SIGKILL with ``kill``, or when TERM is not enough)."""
        pid = self.pid()
        if pid is None:
            self._reap()
            self.pid_path.unlink(missing_ok=True)
            return
        os.kill(pid, signal.SIGKILL if kill else signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and pid_alive(pid):
            self._reap()
            time.sleep(0.05)
        if pid_alive(pid):
            os.kill(pid, signal.SIGKILL)
            deadline = time.monotonic() + 5.0
            while time.monotonic() < deadline and pid_alive(pid):
                self._reap()
                time.sleep(0.05)
        self._reap()
        self.pid_path.unlink(missing_ok=True)
        # the port must be free before a restart on the same port
        deadline = time.monotonic() + 5.0
        while time.monotonic() < deadline and four_letter_word(self.host, self.port, "ruok", timeout=0.3):
            time.sleep(0.1)

    def restart(self, timeout: float = 60.0) -> None:
        self.stop()
        self.start(wait=True, timeout=timeout)

    def _reap(self) -> None:
        if self._proc is not None and self._proc.poll() is not None:
            self._proc = None

    def _log_tail(self, lines: int = 8) -> str:
        try:
            return " | ".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Start, wait for or stop Ringmon's local ZooKeeper.")
    parser.add_argument("action", choices=["start", "stop", "wait", "status"])
    parser.add_argument("--dir", required=True, help="directory for zoo.cfg, data, log and pidfile")
    parser.add_argument("--port", type=int, default=0, help="client port (default: the one in DIR/zoo.cfg, else 2281)")
    parser.add_argument("--tick-ms", type=int, default=200, help="ZooKeeper tickTime in ms")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for readiness")
    parser.add_argument("--force-sync", action="store_true", help="fsync the transaction log on every write")
    args = parser.parse_args(argv)
    server = ZooKeeperServer(Path(args.dir), port=args.port or 0, tick_ms=args.tick_ms, force_sync=args.force_sync)
    if not args.port and not server._port_from_cfg():
        server.port = 2281
    try:
        if args.action == "start":
            server.start(wait=True, timeout=args.timeout)
            print(f"zookeeper running on {server.hosts} (pid {server.pid()}, data {server.data_dir})")
        elif args.action == "wait":
            server.wait(args.timeout)
            print(f"zookeeper ready on {server.hosts}")
        elif args.action == "stop":
            server.stop()
            print("zookeeper stopped")
        else:
            pid = server.pid()
            print(f"zookeeper {'running' if pid else 'not running'} on {server.hosts}" + (f" (pid {pid})" if pid else ""))
            return 0 if pid else 1
    except ZooKeeperError as exc:
        print(f"zkserver: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
