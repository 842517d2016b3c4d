"""YAML dashboards: validation with file/key/expectation, safe variable expansion, the pages."""

from __future__ import annotations

import re
import textwrap

import numpy as np
import pytest
from aiohttp.test_utils import TestClient, TestServer
from test_web import HOSTILE, FakeEngine

from query.result import QueryResult, ResultSeries
from web.app import create_app
from web.dashboards import DEFAULT_DIR, DashboardError, DashboardStore, expand, load_dashboard_file

GOOD = """
title: Demo
variables:
  - name: instance
    options_query: up
    options_label: instance
panels:
  - title: CPU
    expr: sum by (mode) (rate(node_cpu_seconds_total{instance="$instance"}[$__rate_interval]))
    legend: "{{mode}}"
    unit: cores
    mode: stacked
  - title: Memory
    width: full
    unit: bytes
    thresholds: [1000]
    queries:
      - expr: node_memory_MemTotal_bytes{instance="${instance}"}
        legend: total
      - expr: node_memory_MemAvailable_bytes{instance="$instance"}
        legend: available
"""


def write(tmp_path, name, text):
    p = tmp_path / name
    p.write_text(textwrap.dedent(text))
    return p


def test_shipped_dashboards_load_and_parse_as_promql():
    from query.parse import parse

    store = DashboardStore([DEFAULT_DIR])
    names = {d.name for d in store.all()}
    assert {"fleet", "host"} <= names and store.errors == []
    builtins = {"__rate_interval": "1m", "__interval": "15s", "__range": "1h"}
    for dash in store.all():
        for panel in dash.panels:
            for q in panel.queries:
                parse(expand(q.expr, {"job": "web", "instance": "h:1"}, builtins))
                if q.expr.count("{{") == 0:
                    assert panel.queries  # every query is reachable


def test_a_valid_file_loads(tmp_path):
    d = load_dashboard_file(write(tmp_path, "demo.yaml", GOOD))
    assert d.name == "demo" and d.title == "Demo" and len(d.panels) == 2
    assert d.panels[1].width == "full" and d.panels[1].thresholds == (1000.0,)
    assert [q.legend for q in d.panels[1].queries] == ["total", "available"]


@pytest.mark.parametrize(
    "text, message",
    [
        ("title: X\npanels: []\n", r"x\.yaml:2: panels: expected a non-empty list of panels"),
        ("title: X\npanel: []\n", r"x\.yaml:2: panel: unknown key \(known keys here: title"),
        ("panels: [{title: a, expr: up}]\n", r"x\.yaml: title: required"),
        ("title: X\npanels: [{title: a}]\n", r"x\.yaml: panels\[0\]: a panel needs expr"),
        (
            "title: X\npanels: [{title: a, expr: up, unit: furlongs}]\n",
            r"panels\[0\]\.unit: expected one of none",
        ),
        ("title: X\npanels: [{title: a, expr: up, mode: pie}]\n", r"panels\[0\]\.mode: expected one of line"),
        ("title: X\npanels: [{title: a, expr: 5}]\n", r"panels\[0\]\.expr: expected a string, got int"),
        (
            "title: X\npanels: [{title: a, expr: 'up{i=\"$nope\"}'}]\n",
            r"panels\[0\]\.expr: \$nope is not a variable",
        ),
        (
            "title: X\npanels: [{title: a, expr: up, thresholds: [x]}]\n",
            r"panels\[0\]\.thresholds: expected a list",
        ),
        (
            "title: X\npanels:\n  - title: a\n    queries: [{expr: up, legnd: x}]\n",
            r"panels\[0\]\.queries\[0\]\.legnd",
        ),
        ("title: X\npanels: [{title: a\n", r"x\.yaml: line \d+ column \d+: invalid YAML"),
        ("- 1\n", r"x\.yaml: expected a mapping, got list"),
    ],
)
def test_invalid_files_name_file_key_and_expectation(tmp_path, text, message):
    with pytest.raises(DashboardError, match=message):
        load_dashboard_file(write(tmp_path, "x.yaml", text))


def test_store_skips_bad_files_and_rereads_changes(tmp_path):
    write(tmp_path, "good.yaml", GOOD)
    bad = write(tmp_path, "bad.yaml", "title: Bad\npanels: 3\n")
    store = DashboardStore([tmp_path])
    assert [d.name for d in store.all()] == ["good"]
    assert len(store.errors) == 1 and "bad.yaml:2: panels:" in store.errors[0]
    bad.write_text("title: Fixed now\npanels: [{title: a, expr: up}]\n")
    assert [d.title for d in store.all()] == ["Demo", "Fixed now"] and store.errors == []


def test_expand_escapes_user_values_but_not_builtins():
    from query.parse import parse

    expr = 'up{instance="$instance", job="${job}"}[$__rate_interval]'
    out = expand(expr, {"instance": 'a"} or vector(1) #', "job": "x\\"}, {"__rate_interval": "5m"})
    assert out == 'up{instance="a\\"} or vector(1) #", job="x\\\\"}[5m]'
    node = parse(out)
    assert {m.name: m.value for m in node.vector.matchers}["instance"] == 'a"} or vector(1) #'


class VarEngine(FakeEngine):
    """Also answers the variable choices query."""

    async def instant_query(self, expr, time_ms):
        self.calls.append((expr, time_ms))
        return QueryResult(
            "vector", [ResultSeries({"instance": i}, [time_ms], [1.0]) for i in ("h:2", "h:1", HOSTILE)]
        )


async def client_for(tmp_path, engine):
    async def empty():
        return []

    app = create_app(engine=engine, pools_provider=empty, targets_provider=empty, dashboards_dirs=[tmp_path])
    c = TestClient(TestServer(app))
    await c.start_server()
    return c


async def test_dashboard_page_renders_every_panel_with_variables(tmp_path):
    write(tmp_path, "demo.yaml", GOOD)
    write(tmp_path, "broken.yaml", "title: B\n")
    engine = VarEngine()
    c = await client_for(tmp_path, engine)
    try:
        index = await (await c.get("/dashboards")).text()
        resp = await c.get("/d/demo?range=6h&instance=h:2")
        body = await resp.text()
        default = await (await c.get("/d/demo")).text()
        missing = await c.get("/d/nope")
        assert missing.status == 404
    finally:
        await c.close()
    assert 'href="/d/demo"' in index and "broken.yaml: panels: expected a non-empty list" in index
    assert resp.status == 200
    assert body.count('<section class="panel') == 2 and body.count("<svg") == 2
    range_calls = [call for call in engine.calls if len(call) == 4]
    # 6 h at ~240 points: a 2 min step, and the rate window covers one step.
    assert range_calls[0][0] == 'sum by (mode) (rate(node_cpu_seconds_total{instance="h:2"}[2m]))'
    assert range_calls[0][2] - range_calls[0][1] == 6 * 3600_000
    assert '<option value="h:2" selected>' in body
    assert "&lt;script&gt;" in body and "<script" not in body
    # Without a choice the first option (sorted) is used, and it reaches PromQL escaped.
    assert '<option value="&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" selected>' in default
    assert 'node_memory_MemTotal_bytes{instance="<script>alert(\\"x\\")</script>"}' in [
        c[0] for c in engine.calls
    ]


async def test_query_page_chart_table_and_errors(tmp_path):
    engine = VarEngine()
    c = await client_for(tmp_path, engine)
    try:
        empty = await (await c.get("/query")).text()
        body = await (await c.get("/query", params={"expr": "up", "range": "24h"})).text()
        bad = await (await c.get("/query", params={"expr": HOSTILE})).text()
    finally:
        await c.close()
    assert "<textarea" in empty and "<svg" not in empty
    assert "<svg" in body and body.count("<tr>") >= 3
    assert re.search(r"<td>\{instance=&#34;h:1&#34;\}</td><td class=\"num\">1</td>", body)
    assert "&lt;script&gt;" in bad and "<script" not in bad


async def test_query_page_shows_parse_error_position(tmp_path):
    class ParseError(Exception):
        def __init__(self):
            self.line, self.column = 1, 4
            super().__init__("1:4: parse error: unexpected <end>")

    c = await client_for(tmp_path, FakeEngine(fail=ParseError()))
    try:
        body = await (await c.get("/query", params={"expr": "sum("})).text()
    finally:
        await c.close()
    assert "ParseError: 1:4: parse error" in body and "error at line 1, column 4" in body


def test_alert_threshold_is_the_compared_constant():
    from web.dashboards import alert_threshold

    assert alert_threshold('1 - avg by (job) (rate(node_cpu_seconds_total{mode="idle"}[2m])) > 0.9') == 0.9
    assert alert_threshold("0.05 > node_filesystem_avail_bytes / node_filesystem_size_bytes") == 0.05
    assert alert_threshold("up == 0") == 0.0
    assert alert_threshold("up > bool 0") is None
    assert alert_threshold("rate(x[5m])") is None
    assert alert_threshold("sum(") is None


async def test_panel_draws_the_threshold_of_its_alert(tmp_path):
    from web.alerting_pages import AlertingViews

    write(
        tmp_path,
        "demo.yaml",
        "title: D\npanels:\n  - title: CPU\n    expr: up\n    alert: HighCPU\n    unit: ratio\n",
    )

    async def status():
        return [{"name": "g", "rules": [{"type": "alerting", "name": "HighCPU", "query": "cpu_busy > 0.85"}]}]

    async def empty():
        return []

    app = create_app(engine=FakeEngine(), pools_provider=empty, targets_provider=empty, dashboards_dirs=[tmp_path],
                     alerting=AlertingViews(rules_status=status))  # fmt: skip
    c = TestClient(TestServer(app))
    await c.start_server()
    try:
        body = await (await c.get("/d/demo")).text()
    finally:
        await c.close()
    assert "<title>threshold HighCPU 85%</title>" in body
    assert '<text class="threshold-label"' in body and ">HighCPU 85%</text>" in body  # labelled at its line


class FleetEngine(VarEngine):
    """Eleven pools and a hostile one at every step of the window: (i + 1) % each, one spike."""

    async def range_query(self, expr, start_ms, end_ms, step_ms):
        self.calls.append((expr, start_ms, end_ms, step_ms))
        ts = np.arange(start_ms, end_ms + 1, step_ms, dtype=np.int64)
        out = []
        for i, job in enumerate([f"pool{i:02d}" for i in range(11)] + [HOSTILE]):
            values = np.full(len(ts), (i + 1) / 100)
            if job == "pool03":
                values[100] = 0.99
            out.append(ResultSeries({"job": job}, ts, values))
        return QueryResult("matrix", out)

    async def instant_query(self, expr, time_ms):  # the point at now: the same pools, their level
        self.calls.append((expr, time_ms))
        jobs = [f"pool{i:02d}" for i in range(11)] + [HOSTILE]
        return QueryResult("vector", [ResultSeries({"job": j}, [time_ms], [(i + 1) / 100]) for i, j in enumerate(jobs)])


async def test_dense_panel_hover_bands_list_every_series_and_keep_the_spike(tmp_path):
    write(
        tmp_path,
        "many.yaml",
        'title: M\npanels:\n  - {title: Up, expr: up, legend: "{{job}}", unit: ratio}\n',
    )
    c = await client_for(tmp_path, FleetEngine())
    try:
        body = await (await c.get("/d/many?range=30d")).text()
    finally:
        await c.close()
    svg = re.search(r"<svg.*?</svg>", body, re.S).group(0)
    # 12 x 241 steps (+ the point at now): over the per-point tooltip budget, so hover bands
    # carry the values.
    assert "<circle" not in svg
    lines = re.findall(r'<path class="line" d="([^"]*)"', svg)
    assert len(lines) == 12 and len({d.count(",") for d in lines}) == 1
    assert lines[0].count(",") in (241, 242)  # every step drawn
    bands = re.findall(r'<rect x="[\d.]+" y="\d+" width="([\d.]+)" height="\d+"><title>([^<]*)</title>', svg)
    plot_w = 640 - 70 - 16
    assert 241 / 3 <= len(bands) <= plot_w / 6 + 1
    assert sum(float(w) for w, _ in bands) == pytest.approx(plot_w, abs=0.5)
    for _, title in bands:
        rows = title.split("\n")[1:]
        assert len(rows) == 12  # every series
        assert {f"pool{i:02d}: {i + 1}%" for i in range(11) if i != 3} <= set(rows)
        assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;: 12%" in rows
    pool03 = [row for _, title in bands for row in title.split("\n") if row.startswith("pool03: ")]
    assert len(pool03) == len(bands) and pool03.count("pool03: 4% – 99%") == 1  # the one-step spike
    assert set(pool03) == {"pool03: 4%", "pool03: 4% – 99%"}
    assert "<script" not in body


async def test_unknown_variable_value_is_named_on_the_page_and_its_empty_panels(tmp_path):
    class ChoicesOnly(VarEngine):  # choices h:1, h:2, ...; no panel data
        async def instant_query(self, expr, time_ms):
            return await super().instant_query(expr, time_ms) if expr == "up" else QueryResult("vector", [])

    write(tmp_path, "demo.yaml", GOOD)
    c = await client_for(tmp_path, ChoicesOnly(modes=()))
    try:
        body = await (await c.get("/d/demo?instance=h:9")).text()
        known = await (await c.get("/d/demo?instance=h:1")).text()
    finally:
        await c.close()
    assert "instance &#39;h:9&#39; is unknown: no series of up has instance=&#39;h:9&#39;" in body
    assert body.count("No data: instance &#x27;h:9&#x27; unknown") == 2  # both panels say why
    assert "is unknown" not in known and known.count(">No data<") == 2
