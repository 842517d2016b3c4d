"""Differential: the scrape cache (fast path) and the full parser give the same verdict and samples.

Seeds are the conformance inputs and the hostile bodies of ``exposition_hostile``; each
example mutates one (``fuzz_harness.mutated``) and runs it through ``parse()`` and through
``ScrapeCache`` three ways: cold, after one clean scrape of the seed (the per-line cache primed)
and after two (the layout plan primed). Verdict, error text, series, values (bit-exact) and
explicit timestamps must agree, so what a target's body turns into never depends on its history.
"""

from __future__ import annotations

import math
import struct

import pytest
from exposition_hostile import HOSTILE, render
from fuzz_harness import exposition_seeds, fuzz_settings, mutated, time_bound
from hypothesis import given
from hypothesis import strategies as st

from scraper.exposition import ParseError, parse
from scraper.fastpath import ScrapeCache

SEEDS = [(n, b, f) for n, b, f in exposition_seeds() if len(b) <= 4096] + [
    (f"hostile/{n}", render(b, f), f) for n, b, f in HOSTILE
]


def _bits(v: float) -> bytes:
    return struct.pack(">d", v) if not math.isnan(v) else b"nan"  # any NaN payload reads as NaN


def from_parser(body: bytes, fmt: str):
    """What the scrape should store per parse(): series (no empty labels), value bits, explicit
    timestamp; a repeated series without its own timestamp keeps the first sample."""
    try:
        samples = parse(body, fmt)
    except ParseError as exc:
        return str(exc)
    out, seen = [], set()
    for s in samples:
        key = tuple(sorted([(k, v) for k, v in s.labels if v] + [("__name__", s.name)]))
        if key in seen and s.timestamp_ms is None:
            continue
        seen.add(key)
        out.append((key, _bits(s.value), s.timestamp_ms))
    return out


def from_cache(cache: ScrapeCache, body: bytes, fmt: str):
    proc = cache.process(body, fmt)
    try:
        while True:
            next(proc)
    except StopIteration as stop:
        out = stop.value
    except ParseError as exc:
        cache.failed()
        return str(exc)
    ts = dict(out.explicit_ts)
    return [(s.labels, _bits(v), ts.get(i)) for i, (s, v) in enumerate(zip(out.series, out.values, strict=True))]


def check(seed: bytes, body: bytes, fmt: str) -> None:
    with time_bound("parse and scrape cache on a mutated body"):
        want = from_parser(body, fmt)
        cold = from_cache(ScrapeCache({}), body, fmt)
        assert cold == want, ("cold", want, cold)
        for primes in (1, 2):
            cache = ScrapeCache({})
            for _ in range(primes):
                from_cache(cache, seed, fmt)
            got = from_cache(cache, body, fmt)
            assert got == want, (f"after {primes} scrape(s) of the seed", want, got)
            again = from_cache(cache, body, fmt)  # and once more: the body's own plan
            assert again == want, ("repeated", want, again)


def test_seeds_are_there():
    assert len(SEEDS) > 250


@pytest.mark.parametrize("name,body,fmt", SEEDS, ids=[s[0] for s in SEEDS])
def test_seed_itself(name, body, fmt):
    check(body, body, fmt)


@fuzz_settings(400)
@given(st.data())
def test_mutated_seeds_same_verdict_and_samples(data):
    _name, seed, fmt = data.draw(st.sampled_from(SEEDS))
    check(seed, data.draw(mutated(seed)), fmt)


# Value edits on a clean seed: the mutation the layout plan sees (same lines, other value bytes).
VALUE_TOKENS = [b"1", b"-0", b"1e309", b"-1e999", b"1_0", b"+NaN", b"-nan", b"NaN", b"Inf", b"+infinity",
                b"0x1p3", b"1\r", b"1\t", b" 1", b"\xd9\xa1", b"1.5e-400", b".5", b"5.", b"1e", b"infin",
                b"-0.0", b"-0e5", b"+1", b"00012", b"1,2", b"18446744073709551616", b"1.23457e+07"]


@fuzz_settings(300)
@given(st.data())
def test_new_value_bytes_on_a_primed_layout(data):
    _name, seed, fmt = data.draw(st.sampled_from(SEEDS))
    lines = seed.split(b"\n")
    idx = [i for i, ln in enumerate(lines) if ln and not ln.startswith(b"#") and b" " in ln]
    if not idx:
        return
    for i in data.draw(st.lists(st.sampled_from(idx), min_size=1, max_size=3)):
        head, _, _ = lines[i].rpartition(b" ")
        lines[i] = head + b" " + data.draw(st.sampled_from(VALUE_TOKENS))
    check(seed, b"\n".join(lines), fmt)
