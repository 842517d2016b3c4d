"""cli.malloc_tuning: the thresholds are applied through glibc's mallopt, and can be left out."""

from __future__ import annotations

import subprocess
import sys

CHECK = "from cli.malloc_tuning import tune_malloc; print(tune_malloc())"


def run(env_value: str | None) -> str:
    import os

    env = {k: v for k, v in os.environ.items() if k != "RINGMON_MALLOC_TUNING"}
    if env_value is not None:
        env["RINGMON_MALLOC_TUNING"] = env_value
    out = subprocess.run([sys.executable, "-c", CHECK], env=env, capture_output=True, text=True, check=True, timeout=60)
    return out.stdout.strip()


def test_thresholds_applied_on_glibc_and_left_out_when_asked() -> None:
    assert run(None) == "True"  # Debian's glibc has mallopt
    assert run("off") == "False"
