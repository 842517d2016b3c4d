"""Fuzzing the PromQL front end: query.parse, the engine on top of it, and the rule-file checker.

Properties:
- expressions generated from a typed grammar (selectors, matchers with escapes and regexes,
  ranges, offsets, ``@``, subqueries, functions, aggregations, binary operators with
  ``bool``/``on``/``ignoring``/``group_*``) parse, have the generated value type, and
  parse to the same tree with other whitespace, comments and outer parentheses;
- the engine (over a small in-memory store) answers them or raises ``QueryError``, never
  anything else, instant and range;
- mutated expressions (generated ones and the upstream conformance queries) raise only
  ``ParseError`` with a position inside the text and a ``line:col: parse error:`` message;
  ``alerting.promql_check.check_expr`` raises only ``PromQLSyntaxError``;
- pathologically deep or long queries run in a worker process (a native stack overflow
  would kill pytest) and must end with a result or a ParseError within a time bound.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
import re
import subprocess
import sys

import pytest
from fuzz_harness import CONFORMANCE, ROOT, fuzz_settings, time_bound
from fuzz_promql_grammar import exprs, typed_exprs
from hypothesis import given
from hypothesis import strategies as st

from alerting.promql_check import PromQLSyntaxError, check_expr
from query.engine import Engine
from query.errors import ParseError, QueryError
from query.memory import MemoryStorage
from query.parse import MATRIX, SCALAR, VECTOR, _tokens, parse, value_type
from storage.matchers import Matcher
from storage.model import Series

# ---------------------------------------------------------------------------- helpers


def shape(node: object) -> object:
    """A comparable picture of a parsed tree (floats by repr so NaN equals NaN)."""
    if isinstance(node, Matcher):
        return ("M", node.name, node.op.value, node.value)
    if dataclasses.is_dataclass(node):
        return (type(node).__name__,) + tuple(
            shape(getattr(node, f.name)) for f in dataclasses.fields(node) if f.name != "text"
        )
    if isinstance(node, (list, tuple)):
        return tuple(shape(x) for x in node)
    if isinstance(node, float):
        return repr(node)
    return node


def check_parse_error(exc: ParseError, text: str) -> None:
    assert isinstance(exc, ParseError), type(exc)
    assert 0 <= exc.position <= len(text), (exc.position, len(text), str(exc))
    assert str(exc).startswith(f"{exc.line}:{exc.column}: parse error: "), str(exc)
    assert exc.detail.strip(), "empty parse error message"


def make_engine() -> Engine:
    store = MemoryStorage()
    for i in range(3):
        for name in ("x", "up", "http_requests_total"):
            labels = {"__name__": name, "job": f"j{i % 2}", "instance": f"h{i}:9100", "le": str(0.5 * i)}
            s = Series.of(tuple(sorted(labels.items())))
            for t in range(0, 900_000, 15_000):
                store.add_sample(s, t, float(i * t % 97) - 3.0)
    return Engine(store, timeout_s=30.0)


ENGINE = make_engine()
LOOP = asyncio.new_event_loop()


def evaluate(text: str) -> None:
    """Instant and range evaluation: a result or QueryError, nothing else."""
    for run in (lambda: ENGINE.instant_query(text, 600_000), lambda: ENGINE.range_query(text, 0, 900_000, 60_000)):
        try:
            LOOP.run_until_complete(run())
        except QueryError:
            pass


def conformance_queries() -> list[str]:
    out: list[str] = []
    rx = re.compile(r"^eval(?:_\w+)? (?:instant at \S+|range from \S+ to \S+ step \S+) (.+)$")
    for f in sorted((CONFORMANCE / "promql").glob("*.test")):
        for line in f.read_text().splitlines():
            m = rx.match(line)
            if m:
                out.append(m.group(1))
    return out


CORPUS = conformance_queries()


# ---------------------------------------------------------------------------- properties


@st.composite
def respaced(draw: st.DrawFn, text: str) -> str:
    """``text`` with its blanks (outside strings) replaced by other whitespace and comments, maybe in parentheses."""
    out = []
    for m in _tokens(text):
        if m.group("ws"):
            out.append(draw(st.sampled_from([" ", "  ", "\t", "\n", " # note\n", "\r\n"])))
        else:
            out.append(m.group(0))
    body = "".join(out)
    return f"( {body} )" if draw(st.booleans()) else body


@fuzz_settings(300)
@given(typed_exprs, st.data())
def test_generated_promql_parses_with_its_type_whatever_the_spacing(gen, data):
    kind, text = gen
    with time_bound("parse(generated)"):
        node = parse(text)
    assert value_type(node) == kind, (text, value_type(node))
    variant = data.draw(respaced(text), label="variant")
    with time_bound("parse(respaced)"):
        again = parse(variant)
    assert shape(again) == shape(node), variant


@fuzz_settings(300)
@given(st.sampled_from([SCALAR, VECTOR, VECTOR, MATRIX]).flatmap(lambda k: exprs(k)))
def test_engine_answers_generated_queries_or_raises_query_error(text):
    with time_bound("engine evaluation"):
        evaluate(text)


@st.composite
def mutated_queries(draw: st.DrawFn) -> str:
    """A generated or corpus query with a few character-level edits."""
    base = draw(exprs(VECTOR) | st.sampled_from(CORPUS or ["up"]))
    chars = list(base)
    for _ in range(draw(st.integers(1, 3))):
        pos = draw(st.integers(0, len(chars)))
        op = draw(st.integers(0, 3))
        tok = draw(st.sampled_from(list('(){}[]"\'`,=~!@:+-*/^ #\\\n') + ["offset", "by", "bool", "on", "5m",
                                                                           "1e999", "0x", "@ -1", "[5m:]",
                                                                           "\x00", "\u00e9", "\ud7ff"]))
        if op == 0:
            chars[pos:pos] = list(tok)
        elif op == 1 and chars:
            del chars[min(pos, len(chars) - 1)]
        elif op == 2 and chars:
            chars[min(pos, len(chars) - 1)] = tok
        else:
            del chars[pos:]
    return "".join(chars)


@fuzz_settings(300)
@given(mutated_queries())
def test_mutated_queries_fail_only_with_parse_errors(text):
    with time_bound("parse(mutated)"):
        try:
            node = parse(text)
        except ParseError as exc:
            check_parse_error(exc, text)
            node = None
    with time_bound("check_expr(mutated)"):
        try:
            check_expr(text)
            checked = True
        except PromQLSyntaxError as exc:
            assert str(exc).strip()
            checked = False
    if node is not None and not checked:
        pytest.fail(f"query.parse accepts {text!r} but the rule checker rejects it")
    if node is not None:
        with time_bound("engine evaluation (mutated)"):
            evaluate(text)


@fuzz_settings(300)
@given(st.text(max_size=40))
def test_random_text_fails_only_with_parse_errors(text):
    with time_bound("parse(random)"):
        try:
            parse(text)
        except ParseError as exc:
            check_parse_error(exc, text)


PATHOLOGICAL = [
    "1+" * 5000 + "1",
    "(" * 5000 + "1" + ")" * 5000,
    "-" * 50000 + "1",
    "abs(" * 3000 + "x" + ")" * 3000,
    "sum(" * 2000 + "x" + ")" * 2000,
    "x" + " or x" * 3000,
    "1+" * 999 + ")",
    "(" * 100_000,
    'x{a="' + "\\\\" * 50_000 + '"}',
    "x{" + ",".join(f'l{i}="v"' for i in range(5000)) + "}",
    "x[5m:1m]" + "[5m:1m]" * 500,
    "x" * 200_000,
    "9" * 100_000,
    "x offset " + "9" * 5000 + "y",
    "x @ " + "9" * 5000,
    "1e" + "9" * 5000,
]

_WORKER = r"""
import sys, json, time
sys.path.insert(0, sys.argv[1])
from query.parse import parse
from query.errors import ParseError
for text in json.loads(sys.stdin.read()):
    t0 = time.monotonic()
    try:
        parse(text)
        out = "ok"
    except ParseError as exc:
        out = "ParseError " + str(exc)[:80]
    print(json.dumps([text[:30], out, round(time.monotonic() - t0, 2)]), flush=True)
"""


def test_pathological_queries_in_a_worker_process():
    """A native crash (segfault) or hang kills only the worker; each query must parse or fail cleanly."""
    import json

    proc = subprocess.run(
        [sys.executable, "-c", _WORKER, str(ROOT)],
        input=json.dumps(PATHOLOGICAL),
        capture_output=True,
        text=True,
        timeout=120,
    )
    done = [json.loads(line) for line in proc.stdout.splitlines()]
    assert proc.returncode == 0, (
        f"worker died with code {proc.returncode} after {len(done)} of {len(PATHOLOGICAL)} queries; "
        f"next: {PATHOLOGICAL[len(done)][:40]!r}... stderr: {proc.stderr[-500:]}"
    )
    assert len(done) == len(PATHOLOGICAL)
    for head, out, _seconds in done:
        assert out == "ok" or out.startswith("ParseError"), (head, out)


def test_corpus_queries_parse_or_fail_cleanly():
    """Every upstream conformance query: a tree or a ParseError with a position (no other exception)."""
    assert CORPUS, f"no conformance queries under {CONFORMANCE}"
    for text in CORPUS:
        with time_bound(f"parse({text[:40]!r})"):
            try:
                parse(text)
            except ParseError as exc:
                check_parse_error(exc, text)


@pytest.mark.parametrize("value", [math.inf, -math.inf, math.nan])
def test_at_modifier_non_finite_is_a_parse_error(value):
    text = f"x @ {value}"
    with pytest.raises(ParseError) as info:
        parse(text)
    check_parse_error(info.value, text)
