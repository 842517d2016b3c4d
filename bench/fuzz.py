"""Longer fuzzing runs of the properties in tests/test_fuzz_*.py; prints cases/s per target and findings.

    .venv/bin/python bench/fuzz.py --seconds 60            # every target, 60 s each
    .venv/bin/python bench/fuzz.py --seconds 300 -k promql # targets whose name contains "promql"

Each target is a Hypothesis property from the test suite driven through
``fuzz_one_input`` with random buffers (no shrinking, no example database), so a run
explores far more inputs than the bounded, derandomized pytest run. A failing input is
reported with its exception and saved under ``--out`` (default test-artifacts/fuzz) as
the raw Hypothesis buffer, replayable with ``--replay FILE``.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import os
import pathlib
import random
import sys
import time
import traceback
from collections.abc import Callable

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

MODULES = ["test_fuzz_exposition", "test_fuzz_promql", "test_fuzz_rules", "test_fuzz_config"]


FuzzOne = Callable[[bytes], object]  # a property's ``.hypothesis.fuzz_one_input``


def targets() -> dict[str, FuzzOne]:
    """The ``fuzz_one_input`` of every Hypothesis property of the fuzz test modules, by
    ``module::function``."""
    import importlib

    out: dict[str, FuzzOne] = {}
    for name in MODULES:
        mod = importlib.import_module(name)
        for attr in sorted(dir(mod)):
            fuzz = getattr(getattr(getattr(mod, attr), "hypothesis", None), "fuzz_one_input", None)
            if attr.startswith("test_") and callable(fuzz):
                out[f"{name.removeprefix('test_')}::{attr.removeprefix('test_')}"] = fuzz
    return out


def describe(exc: BaseException) -> str:
    frames = traceback.extract_tb(exc.__traceback__)
    where = next((f"{pathlib.Path(f.filename).name}:{f.lineno}" for f in reversed(frames)
                  if "/hypothesis/" not in f.filename), "?")
    first = (str(exc).strip().splitlines() or [""])[0][:160]
    return f"{type(exc).__name__} at {where}: {first}"


def run_target(name: str, fuzz: FuzzOne, seconds: float, rng: random.Random,
               out_dir: pathlib.Path) -> tuple[int, list[str]]:
    deadline = time.monotonic() + seconds
    cases = 0
    findings: dict[str, str] = {}
    while time.monotonic() < deadline:
        buf = rng.randbytes(rng.choice((64, 256, 1024, 4096)))
        cases += 1
        try:
            fuzz(buf)
        except KeyboardInterrupt:
            raise
        except BaseException as exc:  # noqa: BLE001 - every failure is a finding
            key = describe(exc)
            if key not in findings:
                out_dir.mkdir(parents=True, exist_ok=True)
                path = out_dir / f"{name.replace('::', '.')}-{hashlib.sha1(buf).hexdigest()[:12]}.bin"
                path.write_bytes(buf)
                findings[key] = str(path)
    return cases, [f"{k}  (input: {v})" for k, v in findings.items()]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=30.0, help="time per target (default 30)")
    ap.add_argument("-k", default="", help="only targets whose name contains this text")
    ap.add_argument("--seed", type=int, default=None, help="random seed (default: random)")
    ap.add_argument("--out", default=str(ROOT / "test-artifacts" / "fuzz"), help="where failing inputs go")
    ap.add_argument("--replay", default="", help="run one saved input: --replay FILE (target from its name)")
    args = ap.parse_args()
    logging.disable(logging.CRITICAL)  # the loaders log every rejected input
    # promql-parser panics on some inputs (caught, they become ParseErrors); keep its report to one line
    os.environ["RUST_BACKTRACE"] = "0"

    found = targets()
    if args.replay:
        path = pathlib.Path(args.replay)
        name = path.name.rsplit("-", 1)[0].replace(".", "::", 1)
        found[name](path.read_bytes())
        print(f"{name}: passes on {path}")
        return 0
    seed = args.seed if args.seed is not None else int.from_bytes(os.urandom(4), "big")
    rng = random.Random(seed)
    chosen = {k: v for k, v in found.items() if args.k in k}
    print(f"fuzzing {len(chosen)} targets, {args.seconds:g}s each, seed {seed}")
    print(f"{'target':<72} {'cases':>8} {'cases/s':>9} {'findings':>8}")
    total_findings: list[str] = []
    for name, fuzz in chosen.items():
        t0 = time.monotonic()
        cases, findings = run_target(name, fuzz, args.seconds, rng, pathlib.Path(args.out))
        elapsed = time.monotonic() - t0
        print(f"{name:<72} {cases:>8} {cases / elapsed:>9.1f} {len(findings):>8}", flush=True)
        total_findings += [f"{name}: {f}" for f in findings]
    print()
    if total_findings:
        print("findings:")
        for f in total_findings:
            print("  " + f)
        return 1
    print("no findings")
    return 0


if __name__ == "__main__":
    sys.exit(main())
