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
