"""A process's CPU seconds and memory, read from /proc, for the benchmarks' figures (``pid``
"self": this process)."""

from __future__ import annotations

import os
from pathlib import Path


def proc_cpu_s(pid: int | str) -> float:
    """User + system CPU seconds of a process (its /proc stat utime and stime)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def proc_status_kb(field: str, pid: int | str = "self") -> int:
    """A kB figure of /proc/PID/status (VmRSS, VmHWM ...); 0 when the field is absent."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def thread_cpu_s(pid: int | str) -> dict[str, float]:
    """CPU seconds of a process's threads, summed by thread name without its trailing number
    (a JVM's ``Native-Transport-Requests-12`` and ``-13`` count as one group)."""
    import re

    out: dict[str, float] = {}
    tick = os.sysconf("SC_CLK_TCK")
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            stat = (task / "stat").read_text()
        except OSError:  # the thread ended meanwhile
            continue
        name = re.sub(r"[-:# 0-9]+$", "", stat[stat.index("(") + 1 : stat.rindex(")")]) or "?"
        fields = stat.rsplit(")", 1)[1].split()
        out[name] = out.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / tick
    return out
