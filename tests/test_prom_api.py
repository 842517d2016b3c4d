"""The Prometheus HTTP API written byte for byte as Prometheus writes it, over real HTTP on
127.0.0.1: values, timestamps, escaping, ``stats``, format_query/parse_query, JSON 404/405."""

from __future__ import annotations

import json

import aiohttp
import numpy as np
import pytest
from aiohttp import web
from local_http import serve

from query.api import add_api_routes
from query.engine import Engine
from query.memory import MemoryStorage
from query.promjson import format_timestamp, format_value, go_format_float
from storage.model import Series, make_labels

T = 1_435_781_451_780  # ms, a time with a trailing zero in its milliseconds


@pytest.mark.parametrize(
    ("value", "text"),
    [
        # What Go's strconv.FormatFloat(v, 'f' or 'e', -1, 64) prints, as jsonutil.MarshalFloat picks.
        (0.0, "0"),
        (-0.0, "-0"),
        (1.0, "1"),
        (0.1, "0.1"),
        (1e-6, "0.000001"),
        (9.99e-7, "9.99e-07"),
        (1.5e-10, "1.5e-10"),
        (5e-324, "5e-324"),
        (1e16, "10000000000000000"),
        (123456789012345680.0, "123456789012345680"),
        (9.99e20, "999000000000000000000"),
        (1e21, "1e+21"),
        (-1.5e300, "-1.5e+300"),
        (1.7976931348623157e308, "1.7976931348623157e+308"),
        (float("nan"), "NaN"),
        (float("inf"), "+Inf"),
        (float("-inf"), "-Inf"),
    ],
)
def test_values_as_go_formats_them(value: float, text: str) -> None:
    assert format_value(value) == text


def test_go_e_format_and_timestamps() -> None:
    assert go_format_float(123.0, "e") == "1.23e+02"
    assert go_format_float(0.0, "e") == "0e+00"
    assert format_timestamp(1_435_781_451_781) == "1435781451.781"
    assert format_timestamp(1_435_781_451_780) == "1435781451.780"
    assert format_timestamp(1_435_781_451_005) == "1435781451.005"
    assert format_timestamp(1_435_781_451_000) == "1435781451"
    assert format_timestamp(-1500) == "-1.500"


@pytest.fixture
async def server():
    st = MemoryStorage()
    ts = T - 600_000 + np.arange(0, 600_001, 15_000)
    st.add_series(Series.of(make_labels("tiny", job="a<b>&c", instance="h:1")), ts, np.full(len(ts), 1.5e-7))
    st.add_series(Series.of(make_labels("huge", job="j", instance="h:1")), ts, np.full(len(ts), 2.5e21))
    engine = Engine(st)
    app = web.Application()
    add_api_routes(app, engine, st)
    runner, url = await serve(app)
    try:
        yield url
    finally:
        await runner.cleanup()


async def _raw(method: str, url: str, **kw) -> tuple[int, str, aiohttp.typedefs.LooseHeaders]:
    async with aiohttp.ClientSession() as s, s.request(method, url, **kw) as r:
        return r.status, await r.text(), r.headers


async def test_bytes_of_an_instant_query(server: str) -> None:
    status, text, _ = await _raw("GET", server + "/api/v1/query", params={"query": "tiny", "time": "1435781451.780"})
    assert status == 200
    assert text == (
        '{"status":"success","data":{"resultType":"vector","result":[{"metric":{"__name__":"tiny",'
        '"instance":"h:1","job":"a\\u003cb\\u003e\\u0026c"},"value":[1435781451.780,"1.5e-07"]}]}}'
    )
    _, text, _ = await _raw("POST", server + "/api/v1/query", data={"query": "huge", "time": "1435781451.78"})
    assert '"value":[1435781451.780,"2.5e+21"]' in text
    _, text, _ = await _raw("GET", server + "/api/v1/query", params={"query": "0.5", "time": "1435781451.001"})
    assert text == '{"status":"success","data":{"resultType":"scalar","result":[1435781451.001,"0.5"]}}'


async def test_bytes_of_a_range_query(server: str) -> None:
    params = {"query": "tiny", "start": "1435781451.5", "end": "1435781452.5", "step": "0.5"}
    _, text, _ = await _raw("GET", server + "/api/v1/query_range", params=params)
    assert '"values":[[1435781451.500,"1.5e-07"],[1435781452,"1.5e-07"],[1435781452.500,"1.5e-07"]]' in text


async def test_stats(server: str) -> None:
    for path, params in (
        ("/api/v1/query", {"query": "sum(tiny)", "time": "1435781451.780", "stats": "all"}),
        ("/api/v1/query_range", {"query": "tiny", "start": "1435781400", "end": "1435781451", "step": "15",
                                 "stats": "all"}),
    ):
        status, text, _ = await _raw("POST", server + path, data=params)
        assert status == 200, text
        stats = json.loads(text)["data"]["stats"]
        assert set(stats["timings"]) == {"evalTotalTime", "resultSortTime", "queryPreparationTime",
                                         "innerEvalTime", "execQueueTime", "execTotalTime"}
        assert stats["samples"]["totalQueryableSamples"] > 0
        assert stats["samples"]["peakSamples"] >= 1
    _, text, _ = await _raw("GET", server + "/api/v1/query", params={"query": "tiny", "time": "1435781451"})
    assert "stats" not in json.loads(text)["data"]


async def test_unknown_paths_and_methods_answer_json(server: str) -> None:
    status, text, _ = await _raw("GET", server + "/api/v1/nope")
    assert status == 404
    assert json.loads(text) == {"status": "error", "errorType": "not_found", "error": "unknown API endpoint /api/v1/nope"}
    status, text, headers = await _raw("DELETE", server + "/api/v1/query")
    assert status == 405 and json.loads(text)["status"] == "error" and "GET" in headers["Allow"]
    status, text, headers = await _raw("POST", server + "/api/v1/status/buildinfo")
    assert status == 405 and json.loads(text)["errorType"]
    status, _, _ = await _raw("OPTIONS", server + "/api/v1/query")
    assert status == 204


async def test_format_and_parse_query(server: str) -> None:
    _, text, _ = await _raw("GET", server + "/api/v1/format_query", params={"query": "sum(rate(x[5m]))  by (job)"})
    assert json.loads(text) == {"status": "success", "data": "sum by (job) (rate(x[5m]))"}
    status, text, _ = await _raw("GET", server + "/api/v1/format_query", params={"query": "sum(("})
    assert status == 400 and json.loads(text)["errorType"] == "bad_data"
    _, text, _ = await _raw("POST", server + "/api/v1/parse_query", data={"query": "rate(x{a=\"b\"}[5m]) > 1"})
    tree = json.loads(text)["data"]
    assert tree["type"] == "binaryExpr" and tree["op"] == ">" and tree["matching"] is None
    call = tree["lhs"]
    assert call["type"] == "call" and call["func"]["name"] == "rate"
    sel = call["args"][0]
    assert sel["type"] == "matrixSelector" and sel["name"] == "x" and sel["range"] == 300_000
    assert {"name": "a", "value": "b", "type": "="} in sel["matchers"]
    assert tree["rhs"] == {"type": "numberLiteral", "val": "1"}


async def test_query_exemplars_rejects_bad_input_as_prometheus_does(server: str) -> None:
    status, text, _ = await _raw("GET", server + "/api/v1/query_exemplars", params={"query": "up"})
    assert status == 200 and json.loads(text) == {"status": "success", "data": []}
    for params in ({"query": "sum(("}, {"query": ""}, {},
                   {"query": "up", "start": "yesterday"}, {"query": "up", "start": "20", "end": "10"}):
        for method in ("GET", "POST"):
            kw = {"params": params} if method == "GET" else {"data": params}
            status, text, _ = await _raw(method, server + "/api/v1/query_exemplars", **kw)
            doc = json.loads(text)
            assert (status, doc["status"], doc["errorType"]) == (400, "error", "bad_data"), (method, params, text)


def test_config_redaction_tsdb_counts_and_go_times(tmp_path) -> None:
    from query.promjson import go_time
    from web.prom_api import redacted_config, tsdb_status

    cfg = tmp_path / "c.yaml"
    cfg.write_text("storage:\n  cassandra:\n    keyspace: ringmon\n    password: hunter2\n"
                   "web:\n  session_secret: s3\n  users: {ops: 'scrypt$x'}\nreceivers:\n- routing_key: abc\n")
    text = redacted_config(str(cfg))
    assert "keyspace: ringmon" in text and "hunter2" not in text and "s3" not in text
    assert "scrypt" not in text and "abc" not in text and text.count("<secret>") == 4
    series = [{"__name__": "up", "job": "a", "instance": "1"}, {"__name__": "up", "job": "b", "instance": "1"},
              {"__name__": "x", "job": "a"}]
    st = tsdb_status(series, 1000, 2000, 2)
    assert st["headStats"] == {"numSeries": 3, "numLabelPairs": 5, "chunkCount": 0, "minTime": 1000, "maxTime": 2000}
    assert st["seriesCountByMetricName"] == [{"name": "up", "value": 2}, {"name": "x", "value": 1}]
    assert st["labelValueCountByLabelName"] == [{"name": "__name__", "value": 2}, {"name": "job", "value": 2}]
    # (1 + len(name) + 1 + len(value)) x series, per label name: __name__=up twice, __name__=x once
    assert st["memoryInBytesByLabelName"][0] == {"name": "__name__", "value": 12 * 2 + 11}
    assert st["seriesCountByLabelValuePair"] == [{"name": "__name__=up", "value": 2}, {"name": "instance=1", "value": 2}]
    assert go_time(None) == "0001-01-01T00:00:00Z"
    assert go_time(1435781451.5) == "2015-07-01T20:10:51.5Z"
    assert go_time(1435781451.0) == "2015-07-01T20:10:51Z"
    assert go_time("2015-07-01T20:10:51.120Z") == "2015-07-01T20:10:51.12Z"
