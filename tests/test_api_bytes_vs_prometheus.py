"""Byte for byte against a real Prometheus (Debian's ``prometheus``, an empty TSDB): the same
requests to both servers over HTTP on 127.0.0.1 answer the same bytes, for expressions that
need no data and exercise the value, timestamp and string formatting (tiny and huge values,
negative zero, infinities, NaN, fractional times with trailing zero milliseconds, HTML and
non-ASCII characters in label values, strings, empty answers), with and without the range cache."""

from __future__ import annotations

from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from local_http import serve
from real_prometheus import NO_SCRAPES, PROMETHEUS, running_prometheus

from query.api import add_api_routes
from query.cache import RangeQueryCache
from query.engine import Engine
from query.memory import MemoryStorage

pytestmark = [pytest.mark.slow, pytest.mark.skipif(PROMETHEUS is None, reason="prometheus is not installed")]

INSTANT = [
    "vector(1e-7)", "vector(1e-6)", "vector(9.99e-7)", "vector(1.5e21)", "vector(1e21)", "vector(999e18)",
    "vector(0.1)", "vector(-0.0)", "vector(0)", "vector(123456789012345680)", "vector(5e-324)",
    "vector(1/0)", "vector(-1/0)", "vector(0/0)", "vector(2^70)", "vector(1.7976931348623157e308)",
    "1e-7", "-2.5e-10", "time()", "timestamp(vector(1))",
    'label_replace(vector(1), "job", "<a&b>", "", "")',
    'label_replace(vector(3.25), "name", "é ü 日本", "", "")',
    '"a string"',
    "up", "sum(up)",
]
TIMES = ["1435781451.780", "1435781451.781", "1435781451.005", "1435781451", "1435781451.5"]
RANGES = [("vector(0.5)", "1435781451.5", "1435781461.5", "2.5"), ("time()", "1435781451.1", "1435781452.3", "0.3"),
          ("vector(1e-9) * time()", "1435781400", "1435781460", "15"),
          ('label_replace(vector(2), "a", "z", "", "") or label_replace(vector(1), "a", "b", "", "") or vector(3)',
           "1435781400", "1435781460", "30")]


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory):
    work: Path = tmp_path_factory.mktemp("prometheus-bytes")
    cfg = work / "prometheus.yml"
    cfg.write_text(NO_SCRAPES)
    with running_prometheus(work, cfg) as prom:
        yield prom.url


@pytest.fixture(params=["engine", "range cache"])
async def ringmon(request):
    st = MemoryStorage()
    app = web.Application()
    engine = Engine(st)
    add_api_routes(app, engine, st, RangeQueryCache(engine) if request.param == "range cache" else None)
    runner, url = await serve(app)
    try:
        yield url
    finally:
        await runner.cleanup()


def _requests() -> list[tuple[str, dict[str, str]]]:
    out = [("/api/v1/query", {"query": q, "time": t}) for q in INSTANT for t in TIMES[:2]]
    out += [("/api/v1/query", {"query": "time()", "time": t}) for t in TIMES]
    out += [("/api/v1/query_range", {"query": q, "start": s, "end": e, "step": step}) for q, s, e, step in RANGES]
    out += [("/api/v1/format_query", {"query": q}) for q in ("sum(rate(x[5m]))  by (job)", "a+b", "x{b=\"1\",a=\"2\"}")]
    out += [("/api/v1/series", {"match[]": "up", "start": "1435781400", "end": "1435781460"}),
            ("/api/v1/labels", {"start": "1435781400", "end": "1435781460"}),
            ("/api/v1/label/job/values", {"start": "1435781400", "end": "1435781460"})]  # GET: Prometheus takes no POST
    return out


async def test_same_bytes_as_prometheus(prometheus: str, ringmon: str) -> None:
    differences = []
    async with aiohttp.ClientSession() as http:
        for path, params in _requests():
            bodies = []
            for base in (prometheus, ringmon):
                kw = {"params": params} if "/label/" in path else {"data": params}
                async with http.request("GET" if "/label/" in path else "POST", base + path, **kw) as r:
                    bodies.append((r.status, await r.read()))
            if bodies[0] != bodies[1]:
                differences.append(f"{path} {params}:\n  prometheus {bodies[0]}\n  ringmon    {bodies[1]}")
    assert not differences, "\n".join(differences)


def _shape(doc):
    """The keys of a JSON document, recursively, without the values."""
    if isinstance(doc, dict):
        return {k: _shape(v) for k, v in doc.items()}
    if isinstance(doc, list):
        return [_shape(v) for v in doc[:1]]
    return type(doc).__name__ if not isinstance(doc, int | float) else "number"


async def test_stats_have_prometheus_shape(prometheus: str, ringmon: str) -> None:
    """``stats=1``: the same members as Prometheus (values are timings and counts of each engine)."""
    import json

    async with aiohttp.ClientSession() as http:
        for path, params in (("/api/v1/query", {"query": "vector(1)", "time": "1435781451", "stats": "1"}),
                             ("/api/v1/query_range", {"query": "vector(1)", "start": "1435781400",
                                                      "end": "1435781460", "step": "15", "stats": "1"})):
            shapes = []
            for base in (prometheus, ringmon):
                async with http.post(base + path, data=params) as r:
                    shapes.append(_shape(json.loads(await r.read())))
            assert shapes[0] == shapes[1], (path, shapes)


async def test_query_exemplars_verdicts_as_prometheus(prometheus: str, ringmon: str) -> None:
    """``query_exemplars``: the same status and error type as Prometheus for good and bad input."""
    import json

    cases = [{"query": "up"}, {"query": "sum(("}, {"query": ""}, {},
             {"query": "up", "start": "yesterday"}, {"query": "up", "start": "20", "end": "10"}]
    async with aiohttp.ClientSession() as http:
        for params in cases:
            verdicts = []
            for base in (prometheus, ringmon):
                async with http.post(base + "/api/v1/query_exemplars", data=params) as r:
                    doc = json.loads(await r.read())
                    verdicts.append((r.status, doc["status"], doc.get("errorType")))
            assert verdicts[0] == verdicts[1], (params, verdicts)
