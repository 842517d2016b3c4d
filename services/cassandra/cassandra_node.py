"""A local single-node Cassandra 5.0 for tests, `make cluster`, developers and benchmarks.

Fetches ``cassandra-all`` and its dependencies with Maven (services/cassandra/pom.xml) into a
cache dir once, writes our own cassandra.yaml and logback.xml under the node dir, runs
``org.apache.cassandra.service.CassandraDaemon`` on JDK 17 with the jamm agent and the JDK 17
``--add-exports/--add-opens`` list, waits until the native port answers a CQL STARTUP, and
stops the node by PID. The node's ports are remembered in ``<dir>/node.json`` so ``stop``,
``start`` (again) and ``nodetool`` only need the dir.

CLI::

    python services/cassandra/cassandra_node.py start --dir D --native-port P [--storage-port S]
        [--jmx-port J] [--heap 1g] [--no-wait]
    python services/cassandra/cassandra_node.py wait --dir D [--timeout 180]
    python services/cassandra/cassandra_node.py stop --dir D
    python services/cassandra/cassandra_node.py nodetool --dir D flush ringmon
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
if __package__ in (None, ""):  # run as a script: make the repo root importable
    sys.path.insert(0, str(HERE.parent.parent))

from services.proc import free_port, pid_alive  # noqa: E402

REPO = HERE.parent.parent
DEFAULT_LIB_DIR = REPO / ".cache" / "cassandra-lib"
YAML_TEMPLATE = HERE / "cassandra.yaml.in"
POM = HERE / "pom.xml"

# From Cassandra 5.0 conf/jvm17-server.options (JPMS section): without them the daemon stops
# at start with "Cassandra is unable to access required classes".
JDK17_MODULE_FLAGS = [
    "--add-exports", "java.base/jdk.internal.misc=ALL-UNNAMED",
    "--add-exports", "java.management.rmi/com.sun.jmx.remote.internal.rmi=ALL-UNNAMED",
    "--add-exports", "java.rmi/sun.rmi.registry=ALL-UNNAMED",
    "--add-exports", "java.rmi/sun.rmi.server=ALL-UNNAMED",
    "--add-exports", "java.sql/java.sql=ALL-UNNAMED",
    "--add-exports", "java.base/java.lang.ref=ALL-UNNAMED",
    "--add-exports", "jdk.unsupported/sun.misc=ALL-UNNAMED",
    "--add-exports", "jdk.compiler/com.sun.tools.javac.file=ALL-UNNAMED",
    "--add-exports", "jdk.attach/sun.tools.attach=ALL-UNNAMED",
    "--add-opens", "java.base/java.lang.module=ALL-UNNAMED",
    "--add-opens", "java.base/jdk.internal.loader=ALL-UNNAMED",
    "--add-opens", "java.base/jdk.internal.ref=ALL-UNNAMED",
    "--add-opens", "java.base/jdk.internal.reflect=ALL-UNNAMED",
    "--add-opens", "java.base/jdk.internal.math=ALL-UNNAMED",
    "--add-opens", "java.base/jdk.internal.module=ALL-UNNAMED",
    "--add-opens", "java.base/jdk.internal.util.jar=ALL-UNNAMED",
    "--add-opens", "jdk.management/com.sun.management.internal=ALL-UNNAMED",
    "--add-opens", "java.base/sun.nio.ch=ALL-UNNAMED",
    "--add-opens", "java.base/java.io=ALL-UNNAMED",
    "--add-opens", "java.base/java.lang.reflect=ALL-UNNAMED",
    "--add-opens", "jdk.compiler/com.sun.tools.javac=ALL-UNNAMED",
    "--add-opens", "java.base/java.lang=ALL-UNNAMED",
    "--add-opens", "java.base/java.util=ALL-UNNAMED",
]  # fmt: skip

LOGBACK_XML = """<configuration scan="false">
  <appender name="FILE" class="ch.qos.logback.core.FileAppender">
    <file>{log}</file>
    <encoder><pattern>%-5level [%thread] %date{{ISO8601}} %F:%L - %msg%n</pattern></encoder>
  </appender>
  <logger name="org.apache.cassandra" level="INFO"/>
  <logger name="com.datastax" level="WARN"/>
  <logger name="io.netty" level="WARN"/>
  <root level="WARN"><appender-ref ref="FILE"/></root>
</configuration>
"""


class NodeError(RuntimeError):
    """The node could not be installed, started, reached or stopped; the message says why."""


def find_java() -> str:
    """A JDK 17 ``java``: $RINGMON_JAVA, $JAVA_HOME, the Debian JDK 17, then PATH."""
    candidates = [os.environ.get("RINGMON_JAVA", "")]
    if os.environ.get("JAVA_HOME"):
        candidates.append(os.path.join(os.environ["JAVA_HOME"], "bin", "java"))
    candidates += ["/usr/lib/jvm/java-17-openjdk-amd64/bin/java", shutil.which("java") or ""]
    for c in candidates:
        if c and os.access(c, os.X_OK):
            return c
    raise NodeError("no java found: install JDK 17 (openjdk-17-jre-headless) or set JAVA_HOME")


def ensure_jars(lib_dir: Path = DEFAULT_LIB_DIR, timeout_s: float = 600.0) -> Path:
    """Fetch cassandra-all and its dependencies with Maven into ``lib_dir`` unless present."""
    lib_dir = Path(lib_dir)
    if any(lib_dir.glob("cassandra-all-*.jar")) and any(lib_dir.glob("jamm-*.jar")):
        return lib_dir
    mvn = shutil.which("mvn")
    if not mvn:
        raise NodeError("maven (mvn) is needed once to fetch the Cassandra jars: apt-get install maven")
    tmp = lib_dir.with_name(lib_dir.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    cmd = [mvn, "-q", "-B", "-f", str(POM), "dependency:copy-dependencies", f"-DoutputDirectory={tmp}"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
    if proc.returncode != 0:
        raise NodeError(f"maven failed fetching Cassandra jars ({proc.returncode}): {proc.stdout[-2000:]}")
    shutil.rmtree(lib_dir, ignore_errors=True)
    tmp.rename(lib_dir)
    return lib_dir


def _cql_startup_ok(host: str, port: int, timeout_s: float = 2.0) -> bool:
    """True when ``host:port`` answers a CQL v4 STARTUP with READY (a session can open)."""
    body = struct.pack(">H", 1) + struct.pack(">H", 11) + b"CQL_VERSION" + struct.pack(">H", 5) + b"3.0.0"
    frame = struct.pack(">BBhBi", 0x04, 0, 1, 0x01, len(body)) + body
    try:
        with socket.create_connection((host, port), timeout=timeout_s) as s:
            s.sendall(frame)
            header = b""
            while len(header) < 9:
                chunk = s.recv(9 - len(header))
                if not chunk:
                    return False
                header += chunk
            return header[0] == 0x84 and header[4] == 0x02  # response v4, opcode READY
    except OSError:
        return False


@dataclass
class CassandraNode:
    """One local Cassandra process with its data, config and logs under ``dir``."""

    dir: Path
    native_port: int
    storage_port: int = 0
    jmx_port: int = 0
    heap: str = "1g"
    lib_dir: Path = DEFAULT_LIB_DIR
    host: str = "127.0.0.1"
    fast_unsafe: bool = False  # skip system-keyspace fsyncs: quicker schema changes in tests
    # The niceness the JVM runs at (nice(1); every thread inherits it). On a box shared with the processes
    # under test, a positive value stands for a node on machines of its own, as in production:
    # its CPU then does not take turns with the event loops the tests time.
    nice: int = 0
    pid: int | None = field(default=None)

    def __post_init__(self) -> None:
        self.dir = Path(self.dir).resolve()
        self.lib_dir = Path(self.lib_dir)
        self.storage_port = self.storage_port or free_port()
        self.jmx_port = self.jmx_port or free_port()

    # -- persistence of the node's identity (ports) so the CLI can find it again ----------

    @property
    def port(self) -> int:
        """The CQL (native transport) port."""
        return self.native_port

    @property
    def state_file(self) -> Path:
        return self.dir / "node.json"

    @property
    def pid_file(self) -> Path:
        return self.dir / "cassandra.pid"

    @property
    def log_file(self) -> Path:
        return self.dir / "logs" / "system.log"

    @classmethod
    def load(cls, dir: str | Path) -> "CassandraNode":
        path = Path(dir).resolve() / "node.json"
        try:
            d = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise NodeError(f"no node state in {path}: start the node with --dir {dir} first ({exc})") from None
        d.pop("pid", None)
        node = cls(**d)
        node.pid = node._read_pid()
        return node

    def _save(self) -> None:
        d = asdict(self)
        d["dir"] = str(self.dir)
        d["lib_dir"] = str(self.lib_dir)
        d.pop("pid")
        self.state_file.write_text(json.dumps(d, indent=1))

    def _read_pid(self) -> int | None:
        try:
            return int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return None

    # -- config -----------------------------------------------------------------------------

    def write_config(self) -> Path:
        conf = self.dir / "conf"
        for sub in ("conf", "data", "commitlog", "hints", "saved_caches", "cdc_raw", "logs"):
            (self.dir / sub).mkdir(parents=True, exist_ok=True)
        text = YAML_TEMPLATE.read_text()
        for key, val in {
            "dir": str(self.dir),
            "native_port": str(self.native_port),
            "storage_port": str(self.storage_port),
        }.items():
            text = text.replace("{{" + key + "}}", val)
        (conf / "cassandra.yaml").write_text(text)
        (conf / "logback.xml").write_text(LOGBACK_XML.format(log=self.log_file))
        self._save()
        return conf

    def command(self) -> list[str]:
        conf = self.dir / "conf"
        jamm = sorted(self.lib_dir.glob("jamm-*.jar"))
        if not jamm:
            raise NodeError(f"no jamm jar in {self.lib_dir}: run ensure_jars()")
        props = [
            f"-Dcassandra.config=file://{conf}/cassandra.yaml",
            f"-Dlogback.configurationFile=file://{conf}/logback.xml",
            f"-Dcassandra.logdir={self.dir}/logs",
            f"-Dcassandra.storagedir={self.dir}",
            "-Dcassandra-foreground=yes",
            f"-Dcassandra.jmx.local.port={self.jmx_port}",
            "-Dcom.sun.management.jmxremote.authenticate=false",
            "-Dcassandra.skip_wait_for_gossip_to_settle=0",
            "-Dcassandra.ring_delay_ms=100",
            "-Dcassandra.superuser_setup_delay_ms=0",
            "-Djdk.attach.allowAttachSelf=true",
            "-Dio.netty.tryReflectionSetAccessible=true",
            "-Djava.net.preferIPv4Stack=true",
            # The approximate clock (request expiry, timeouts of seconds) ticks every 100 ms, not 2:
            # its ScheduledFastTasks thread was most of an idle node's CPU (10 of 14 ms/s at 2 ms;
            # 3.75 of 7.7 at 10 ms, 0.92 of 6.5 at 100 ms: two idle nodes side by side, 120 s), the
            # fixed cost of a node at a few writes/s (#20)
            "-Dcassandra.approximate_time_precision_ms=100",
        ]
        if self.fast_unsafe:
            props.append("-Dcassandra.unsafesystem=true")
        return [
            find_java(),
            f"-Xms{self.heap}",
            f"-Xmx{self.heap}",
            "-Xss256k",
            "-XX:+UseG1GC",
            "-XX:+ParallelRefProcEnabled",
            "-XX:MaxGCPauseMillis=300",
            "-XX:+ExitOnOutOfMemoryError",
            f"-javaagent:{jamm[-1]}",
            *JDK17_MODULE_FLAGS,
            *props,
            "-cp",
            f"{conf}:{self.lib_dir}/*",
            "org.apache.cassandra.service.CassandraDaemon",
        ]

    # -- lifecycle --------------------------------------------------------------------------

    def is_running(self) -> bool:
        pid = self.pid or self._read_pid()
        return pid is not None and pid != 0 and pid_alive(pid)

    def is_ready(self) -> bool:
        return _cql_startup_ok(self.host, self.native_port)

    def start(self, wait: bool = True, timeout_s: float = 240.0) -> None:
        """Start the node (again) with the same dir and ports; wait until CQL answers."""
        if self.is_running():
            if wait:
                self.wait_ready(timeout_s)
            return
        ensure_jars(self.lib_dir)
        self.write_config()
        out = open(self.dir / "logs" / "stdout.log", "ab")
        # nice(1) execs the JVM (same pid); not preexec_fn, which may deadlock in a threaded parent
        cmd = ["nice", "-n", str(self.nice), *self.command()] if self.nice else self.command()
        self._proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=str(self.dir),
            start_new_session=True,
        )
        out.close()
        self.pid = self._proc.pid
        self.pid_file.write_text(str(self.pid))
        if wait:
            self.wait_ready(timeout_s)

    def wait_ready(self, timeout_s: float = 240.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.is_ready():
                return
            if not self.is_running():
                raise NodeError(f"Cassandra exited during start; see {self.log_file}: {self._tail()}")
            time.sleep(0.5)
        raise NodeError(f"Cassandra not ready on {self.host}:{self.native_port} after {timeout_s:.0f}s")

    def stop(self, timeout_s: float = 60.0, kill: bool = False) -> None:
        """Stop by PID: SIGTERM, then SIGKILL after ``timeout_s``; ``kill``: SIGKILL at once (a
        node whose data is thrown away: no drain, no flush)."""
        pid = self.pid or self._read_pid()
        if not pid:
            return
        signals = ((signal.SIGKILL, 10.0),) if kill else ((signal.SIGTERM, timeout_s), (signal.SIGKILL, 10.0))
        for sig, wait_s in signals:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                break
            deadline = time.monotonic() + wait_s
            while time.monotonic() < deadline and self.is_running():
                self._reap()
                time.sleep(0.1)
            if not self.is_running():
                break
        self._reap()
        self.pid = None
        self.pid_file.unlink(missing_ok=True)

    def _reap(self) -> None:
        proc = getattr(self, "_proc", None)
        if proc is not None:
            proc.poll()

    def _tail(self, n: int = 20) -> str:
        lines: list[str] = []
        for f in (self.dir / "logs" / "stdout.log", self.log_file):
            try:
                lines += f.read_text(errors="replace").splitlines()[-n:]
            except OSError:
                pass
        return "\n".join(lines[-n:])

    def nodetool(self, *args: str, timeout_s: float = 300.0) -> str:
        """Run ``nodetool <args>`` (org.apache.cassandra.tools.NodeTool) against this node's JMX."""
        cmd = [
            find_java(),
            "-Xmx256m",
            *JDK17_MODULE_FLAGS,
            f"-Dlogback.configurationFile=file://{self.dir}/conf/logback.xml",
            "-cp",
            f"{self.dir}/conf:{self.lib_dir}/*",
            "org.apache.cassandra.tools.NodeTool",
            "-h",
            "127.0.0.1",
            "-p",
            str(self.jmx_port),
            *args,
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
        if proc.returncode != 0:
            raise NodeError(f"nodetool {' '.join(args)} failed: {proc.stderr.strip() or proc.stdout.strip()}")
        return proc.stdout


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="cassandra_node", description="Run a local Cassandra 5.0 node.")
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("start", help="start (or restart with the same ports) and wait until ready")
    s.add_argument("--dir", required=True, help="node directory (data, config, logs)")
    s.add_argument("--native-port", type=int, default=0, help="CQL port (default: previous or 19042)")
    s.add_argument("--storage-port", type=int, default=0)
    s.add_argument("--jmx-port", type=int, default=0)
    s.add_argument("--heap", default="1g")
    s.add_argument("--lib-dir", default=str(DEFAULT_LIB_DIR))
    s.add_argument("--no-wait", action="store_true")
    s.add_argument("--timeout", type=float, default=240.0)
    w = sub.add_parser("wait", help="wait until the node answers CQL")
    w.add_argument("--dir", required=True)
    w.add_argument("--native-port", type=int, default=0)
    w.add_argument("--timeout", type=float, default=240.0)
    t = sub.add_parser("stop", help="stop the node by PID")
    t.add_argument("--dir", required=True)
    t.add_argument("--native-port", type=int, default=0, help="ignored; accepted for symmetry")
    n = sub.add_parser("nodetool", help="run nodetool against the node")
    n.add_argument("--dir", required=True)
    n.add_argument("args", nargs=argparse.REMAINDER)
    a = p.parse_args(argv)
    try:
        if a.cmd == "start":
            try:
                node = CassandraNode.load(a.dir)
                if a.native_port:
                    node.native_port = a.native_port
            except NodeError:
                node = CassandraNode(
                    Path(a.dir),
                    a.native_port or 19042,
                    a.storage_port,
                    a.jmx_port,
                    a.heap,
                    Path(a.lib_dir),
                )
            node.start(wait=not a.no_wait, timeout_s=a.timeout)
            print(f"cassandra pid {node.pid} ready on {node.host}:{node.native_port}" if not a.no_wait
                  else f"cassandra pid {node.pid} starting")
        elif a.cmd == "wait":
            node = CassandraNode.load(a.dir)
            if a.native_port:
                node.native_port = a.native_port
            node.wait_ready(a.timeout)
            print(f"cassandra ready on {node.host}:{node.native_port}")
        elif a.cmd == "stop":
            node = CassandraNode.load(a.dir)
            node.stop()
            print("cassandra stopped")
        else:
            print(CassandraNode.load(a.dir).nodetool(*[x for x in a.args if x != "--"]), end="")
    except (NodeError, subprocess.TimeoutExpired) as exc:
        print(f"cassandra_node {a.cmd}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
