"""Shared fuzzing machinery: Hypothesis settings, a hard time bound per call, seeds and byte mutators.

Every fuzz property runs its target under ``time_bound`` (a repeating SIGALRM that raises
``Hang``, a KeyboardInterrupt subclass so ``except Exception`` in the code under test cannot
swallow it) and reports a hang as a test failure; nothing here asserts how fast code is.
``FUZZ_EXAMPLES`` (environment) scales the example counts; the defaults keep the whole fuzz
suite around a minute on two cores. Runs are derandomized and use no example database, so
CI is reproducible; ``bench/fuzz.py`` drives the same properties with random bytes for longer.
"""

from __future__ import annotations

import contextlib
import os
import pathlib
import signal
from collections.abc import Iterator

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

ROOT = pathlib.Path(__file__).resolve().parent.parent
CONFORMANCE = ROOT / "tests" / "conformance"  # as tests/conftest.py locates it
EXPOSITION_SEEDS = CONFORMANCE / "exposition"

HANG_SECONDS = float(os.environ.get("FUZZ_HANG_SECONDS", "10"))
_SCALE = float(os.environ.get("FUZZ_EXAMPLES", "1"))


def fuzz_settings(max_examples: int, **extra) -> settings:
    """Reproducible settings: derandomized, no database, no deadline (``time_bound`` is the hang check)."""
    return settings(
        max_examples=max(1, int(max_examples * _SCALE)),
        derandomize=True,
        database=None,
        deadline=None,
        print_blob=True,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
        **extra,
    )


class Hang(KeyboardInterrupt):
    """Raised by the alarm inside a call that outlived its bound (passes through ``except Exception``)."""


@contextlib.contextmanager
def time_bound(what: str, seconds: float = HANG_SECONDS) -> Iterator[None]:
    """Fail (AssertionError) if the block runs longer than ``seconds``; never measures speed otherwise.

    The alarm repeats every 0.5 s after the bound, so code that catches BaseException once
    (or runs in native code for a while) is still interrupted as soon as Python resumes.
    """
    fired: list[bool] = []

    def on_alarm(signum, frame):  # noqa: ARG001 - signal handler signature
        fired.append(True)
        raise Hang(what)

    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds, 0.5)
    try:
        yield
    except Hang:
        raise AssertionError(f"hang: {what} did not return within {seconds:g}s") from None
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0, 0)
        signal.signal(signal.SIGALRM, old)
    if fired:
        raise AssertionError(f"hang: {what} ran past {seconds:g}s (the alarm was swallowed)")


# ---------------------------------------------------------------------------- seeds


def exposition_seeds() -> list[tuple[str, bytes, str]]:
    """(name, body, format) of every conformance exposition input, smallest first."""
    from scraper.exposition import FMT_OPENMETRICS, FMT_TEXT

    out: list[tuple[str, bytes, str]] = []
    for case in sorted((EXPOSITION_SEEDS / "openmetrics").iterdir()):
        metrics = case / "metrics"
        if metrics.is_file():
            out.append((f"openmetrics/{case.name}", metrics.read_bytes(), FMT_OPENMETRICS))
    for p in sorted((EXPOSITION_SEEDS / "expfmt").rglob("*")):
        if p.is_file():
            out.append((f"expfmt/{p.name}", p.read_bytes(), FMT_TEXT))
    for p in sorted((EXPOSITION_SEEDS / "prometheus").iterdir()):
        if p.is_file():
            fmt = FMT_OPENMETRICS if ".om." in p.name else FMT_TEXT
            out.append((f"prometheus/{p.name}", p.read_bytes(), fmt))
    out.sort(key=lambda s: len(s[1]))
    return out


def shipped_files(*patterns: str) -> list[pathlib.Path]:
    """Files of the repository matching the glob patterns (relative to the repo root), sorted."""
    found: set[pathlib.Path] = set()
    for pat in patterns:
        found.update(p for p in ROOT.glob(pat) if p.is_file())
    return sorted(found)


# ---------------------------------------------------------------------------- mutation

# Bytes and tokens that mean something to one of the grammars under test.
INTERESTING = [
    b"\n", b"\r", b"\t", b" ", b"\x00", b"\xff", b"\xc3", b"\xe2\x80\xa8", b"\"", b"'", b"`", b"\\",
    b"{", b"}", b"(", b")", b"[", b"]", b",", b"=", b"#", b":", b"-", b"+", b".", b"e", b"0",
    b"# EOF", b"# EOF\n", b"# TYPE ", b"# HELP ", b"# UNIT ", b"NaN", b"+Inf", b"-Inf", b"1e308", b"1e999",
    b"0x1p-1074", b"9223372036854775808", b"__name__", b"le", b"quantile", b"_total", b"_bucket",
    b"{{", b"}}", b"{{ $labels.x }}", b"&a", b"*a", b"<<: ", b"!!int ", b"!!timestamp ", b"2001-13-45",
    b"- ", b": ", b"---\n", b"...\n", b"|\n", b"@", b"offset", b"by", b"[5m:1m]", b" or ", b"~",
]


@st.composite
def mutated(draw: st.DrawFn, data: bytes, max_ops: int = 4) -> bytes:
    """``data`` with 1..max_ops byte-level edits: flips, interesting tokens, deletes, copies, truncation."""
    buf = bytearray(data)
    for _ in range(draw(st.integers(1, max_ops))):
        n = len(buf)
        op = draw(st.sampled_from(["flip", "set", "insert", "delete", "copy", "truncate", "swap"]))
        pos = draw(st.integers(0, n)) if n else 0
        if op == "flip" and n:
            i = min(pos, n - 1)
            buf[i] ^= 1 << draw(st.integers(0, 7))
        elif op == "set" and n:
            i = min(pos, n - 1)
            buf[i] = draw(st.integers(0, 255))
        elif op == "insert":
            tok = draw(st.sampled_from(INTERESTING) | st.binary(min_size=1, max_size=4))
            buf[pos:pos] = tok
        elif op == "delete" and n:
            ln = draw(st.integers(1, min(16, n)))
            del buf[pos:pos + ln]
        elif op == "copy" and n:
            src = draw(st.integers(0, n - 1))
            ln = draw(st.integers(1, min(64, n - src)))
            buf[pos:pos] = buf[src:src + ln]
        elif op == "truncate" and n:
            del buf[pos:]
        elif op == "swap" and n:
            lines = bytes(buf).split(b"\n")
            if len(lines) > 1:
                i = draw(st.integers(0, len(lines) - 1))
                j = draw(st.integers(0, len(lines) - 1))
                lines[i], lines[j] = lines[j], lines[i]
                buf = bytearray(b"\n".join(lines))
    return bytes(buf)


@st.composite
def one_byte_corruption(draw: st.DrawFn, data: bytes) -> bytes:
    """``data`` with exactly one byte replaced, inserted or deleted."""
    n = len(data)
    op = draw(st.sampled_from(["replace", "insert", "delete"]))
    if op == "insert" or n == 0:
        pos = draw(st.integers(0, n))
        return data[:pos] + bytes([draw(st.integers(0, 255))]) + data[pos:]
    pos = draw(st.integers(0, n - 1))
    if op == "delete":
        return data[:pos] + data[pos + 1:]
    return data[:pos] + bytes([draw(st.integers(0, 255))]) + data[pos + 1:]
