"""cli.malloc_tuning: the thresholds are applied through glibc's mallopt, and can be left out."""

from __future__ import annotations

import subprocess
import sys

CHECK = "from cli.malloc_tuning import one_arena, tune_malloc; print(tune_malloc(), one_arena())"


def run(env_value: str | None) -> str:
    import os

    env = {k: v for k, v in os.environ.items() if k != "RINGMON_MALLOC_TUNING"}
    if env_value is not None:
        env["RINGMON_MALLOC_TUNING"] = env_value
    out = subprocess.run([sys.executable, "-c", CHECK], env=env, capture_output=True, text=True, check=True, timeout=60)
    return out.stdout.strip()


def test_thresholds_applied_on_glibc_and_left_out_when_asked() -> None:
    assert run(None) == "True True"  # Debian's glibc has mallopt (the scraper's one arena too)
    assert run("off") == "False False"


TRIM = """
from cli.malloc_tuning import trim_malloc, tune_malloc
def rss_kb():
    return next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmRSS"))
tune_malloc()  # freed heap stays with the process
blocks = [b"x" * (1 << 20) for _ in range(64)]  # touched pages (bytes(n) would calloc)
before = rss_kb()
del blocks
kept = rss_kb()
print(trim_malloc(), before - kept, kept - rss_kb())
"""


IN_THREAD = """
import sys, threading
from cli.malloc_tuning import tune_malloc
def rss_kb():
    return next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmRSS"))
if sys.argv[1] == "tuned":
    tune_malloc()
got = []
def work():  # as SQLite's reader thread joins a query's chunks: blocks made and freed off the main thread
    blocks = [b"x" * (16 << 20) for _ in range(6)]
    before = rss_kb()
    del blocks
    got.append(before - rss_kb())
t = threading.Thread(target=work)
t.start()
t.join()
print(got[0])
"""


def test_threads_keep_freed_memory_too() -> None:
    """Blocks a thread frees stay with the process (one arena, the tuned thresholds) instead
    of being unmapped and faulted in again by the next query."""
    def freed_kb(mode: str) -> int:
        out = subprocess.run([sys.executable, "-c", IN_THREAD, mode], capture_output=True, text=True, check=True, timeout=60)
        return int(out.stdout)

    assert freed_kb("default") > 48 << 10  # glibc's thread arena unmaps them
    assert freed_kb("tuned") < 16 << 10


def test_the_scraper_trims_instead_of_keeping_freed_memory() -> None:
    """``ringmon scraper`` skips the query thresholds; ``trim_malloc`` gives freed heap back."""
    from cli.main import build_parser

    assert build_parser().parse_args(["scraper", "--config", "x.yaml"]).malloc_tuning is False
    assert getattr(build_parser().parse_args(["web", "--config", "x.yaml"]), "malloc_tuning", True) is True
    out = subprocess.run([sys.executable, "-c", TRIM], capture_output=True, text=True, check=True, timeout=60)
    released, freed_kb, trimmed_kb = out.stdout.split()
    assert released == "True"
    assert int(freed_kb) < 16 << 10  # the thresholds kept the 64 MiB freed...
    assert int(trimmed_kb) > 48 << 10  # ...and the trim gave them back
