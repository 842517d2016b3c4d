"""Benchmark of sealing and rollups on node_exporter-like data (prints figures, asserts nothing).

Also the home of ``node_exporter_host()``, the synthetic host the tests and the benchmark
share: per host ~600 series in the proportions node_exporter exposes them - constant
series (info, sizes, idle interfaces), integer counters (bytes, packets) with an
occasional reset, CPU-seconds counters with 2 decimals, integer memory/filesystem gauges,
load averages with 2 decimals, millisecond io-time counters, and full-precision floats
(scrape and GC durations). All series of a host share the scrape timestamps.
"""

from __future__ import annotations

import numpy as np

STEP_MS = 10_000


def node_exporter_host(
    rng: np.random.Generator, n_samples: int, t0_ms: int, jitter_ms: int = 0, step_ms: int = STEP_MS
) -> list[tuple[np.ndarray, np.ndarray]]:
    """(timestamps, values) of every series of one host over ``n_samples`` scrapes.

    ``jitter_ms`` adds uniform +-jitter to each scrape timestamp (0 = aligned scrapes, as a
    scraper that snaps timestamps to its schedule, like Prometheus, produces).
    """
    n = n_samples
    ts = t0_ms + np.arange(n, dtype=np.int64) * step_ms
    if jitter_ms:
        ts = ts + rng.integers(-jitter_ms, jitter_ms + 1, n)
    out: list[tuple[np.ndarray, np.ndarray]] = []

    def add(v: np.ndarray) -> None:
        out.append((ts, np.asarray(v, dtype=np.float64)))

    for _ in range(180):  # constant: info metrics, sizes, idle interfaces, flags
        add(np.full(n, float(rng.choice([0, 1, 2, 8, 4096 * int(rng.integers(1, 10**6)), 1e9]))))
    for _ in range(150):  # integer counters, some idle, a few resets
        rate = float(rng.choice([0, 1, 50, 1000, 1e5, 1e6]))
        inc = rng.poisson(rate * step_ms / 1000, n).astype(np.float64) if rate else np.zeros(n)
        v = float(rng.integers(0, 10**9)) + np.cumsum(inc)
        if rng.random() < 0.05:
            k = int(rng.integers(1, n)) if n > 1 else 0
            v[k:] -= v[k - 1] if k else 0.0
        add(v)
    for _ in range(90):  # CPU seconds: counters with 2 decimals
        r = float(rng.choice([0.01, 0.1, 1.0, 9.9]))
        inc = np.round(rng.normal(r, r * 0.1 + 0.005, n).clip(0), 2)
        add(np.round(int(rng.integers(0, 10**7)) / 100 + np.cumsum(inc), 2))
    for _ in range(60):  # memory / filesystem bytes: integer gauges in pages
        base = int(rng.integers(10**6, 10**10)) // 4096 * 4096
        add(base + np.cumsum(rng.integers(-200, 201, n) * 4096 * (rng.random(n) < 0.5)).astype(np.float64))
    for _ in range(30):  # load averages: gauges with 2 decimals
        add(np.round(np.abs(np.cumsum(rng.normal(0, 0.05, n))) + 0.5, 2))
    for _ in range(60):  # io time seconds: counters with 3 decimals
        add(np.round(np.cumsum(rng.integers(0, 50, n)) / 1000 + int(rng.integers(0, 10**6)) / 1000, 3))
    for _ in range(30):  # durations, timestamps: full-precision floats
        add(rng.random(n) * float(rng.choice([1e-3, 1.0, 1e9])))
    return out
