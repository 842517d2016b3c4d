"""Self-monitoring artefacts: the Ringmon rules load (ours and promtool), fire as meant on
synthetic series (promtool's unit-test format, run by ``ringmon rules test`` and by promtool
itself), and the Ringmon dashboard loads and renders through the web app."""

from __future__ import annotations

import shutil
import subprocess
import textwrap
from pathlib import Path

import pytest
from local_http import serve

from cli.main import main

ROOT = Path(__file__).resolve().parent.parent
RULES = ROOT / "configs" / "rules" / "ringmon-self.yaml"
DASHBOARD = ROOT / "web" / "dashboards" / "ringmon.yaml"

UNIT_TESTS = textwrap.dedent(f"""\
    rule_files: [{RULES}]
    evaluation_interval: 30s
    tests:
      - interval: 30s
        input_series:
          - series: 'up{{job="ringmon", instance="127.0.0.1:9402"}}'
            values: '1 1 0 0 0 0 0'
          - series: 'up{{job="pool-00", instance="h1:9100"}}'
            values: '1x20'
          - series: 'ringmon_scraper_writer_queue_depth{{job="ringmon", instance="127.0.0.1:9401", scraper="scraper-1"}}'
            values: '0 500 1200 1800 2400 3000 3600 4200 4800 5400 6000 6600 7200 7800 8400 9000 9600 10200 10800 11400 12000'
          - series: 'ringmon_notifications_failed_total{{job="ringmon", instance="127.0.0.1:9467", integration="webhook", retryable="true"}}'
            values: '0 0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20'
          - series: 'ringmon_notifications_undelivered_total{{job="ringmon", instance="127.0.0.1:9467", integration="webhook"}}'
            values: '0x20'
          - series: 'ringmon_notifications_undelivered_total{{job="ringmon", instance="127.0.0.1:9468", integration="email"}}'
            values: '0 0 1x20'
          - series: 'ringmon_rollup_lag_seconds{{job="ringmon", instance="127.0.0.1:9466"}}'
            values: '0 0 0 7200 7200 7200 0x80'
          - series: 'ringmon_rollup_lag_seconds{{job="ringmon", instance="127.0.0.1:9469"}}'
            values: '0 0 0 7200x80'
        alert_rule_test:
          - eval_time: 3m
            alertname: RingmonComponentDown
            exp_alerts:
              - exp_labels: {{severity: page, job: ringmon, instance: "127.0.0.1:9402"}}
                exp_annotations:
                  summary: "Ringmon process 127.0.0.1:9402 does not answer /metrics"
          - eval_time: 40m
            alertname: RingmonRollupLag
            exp_alerts:
              - exp_labels: {{severity: warning, instance: "127.0.0.1:9469"}}
                exp_annotations:
                  summary: "Rollups are 2h 0m 0s behind on 127.0.0.1:9469"
          - eval_time: 9m
            alertname: RingmonWriterBacklog
            exp_alerts:
              - exp_labels: {{severity: warning, instance: "127.0.0.1:9401"}}
                exp_annotations:
                  summary: "Scraper 127.0.0.1:9401 holds 10800 unwritten batches in its spool"
          - eval_time: 8m
            alertname: RingmonNotificationFailures
            exp_alerts:
              - exp_labels: {{severity: page, instance: "127.0.0.1:9468", integration: email}}
                exp_annotations:
                  summary: "Notifications through email failed after every retry on 127.0.0.1:9468"
    """)


def test_ringmon_rules_pass_ringmon_rules_check(capsys):
    assert main(["rules", "check", str(RULES)]) == 0
    assert "SUCCESS" in capsys.readouterr().out


@pytest.mark.skipif(shutil.which("promtool") is None, reason="Debian prometheus (promtool) not installed")
def test_ringmon_rules_pass_promtool_check():
    proc = subprocess.run(["promtool", "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_ringmon_rules_fire_as_meant_with_ringmon_rules_test(tmp_path, capsys):
    f = tmp_path / "ringmon-self.test.yaml"
    f.write_text(UNIT_TESTS)
    rc = main(["rules", "test", str(f)])
    out = capsys.readouterr()
    assert rc == 0, out.out + out.err


@pytest.mark.skipif(shutil.which("promtool") is None, reason="Debian prometheus (promtool) not installed")
def test_ringmon_rules_fire_as_meant_with_promtool(tmp_path):
    f = tmp_path / "ringmon-self.test.yaml"
    f.write_text(UNIT_TESTS)
    proc = subprocess.run(["promtool", "test", "rules", str(f)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_ringmon_dashboard_loads():
    from web.dashboards import load_dashboard_file

    d = load_dashboard_file(DASHBOARD)
    assert d.title == "Ringmon"
    exprs = " ".join(q.expr for p in d.panels for q in p.queries)
    for needed in ("ringmon_scraper_scrape_failures_total", "ringmon_scraper_writer_queue_depth",
                   "ringmon_rollup_lag_seconds", "ringmon_notifications_failed_total",
                   "ringmon_notifications_undelivered_total", "timestamp(up"):
        assert needed in exprs


async def test_ringmon_dashboard_renders_self_metrics():
    """The dashboard page renders every panel over an engine holding Ringmon's own series."""
    import time

    import aiohttp

    from query.engine import Engine
    from query.memory import MemoryStorage
    from storage.model import SampleBatch, Series, make_labels
    from web.app import create_app

    storage = MemoryStorage()
    now_ms = int(time.time() * 1000) // 1000 * 1000
    batch = SampleBatch("ringmon/127.0.0.1:9401")
    series = [
        Series.of(make_labels("up", job="ringmon", instance="127.0.0.1:9401")),
        Series.of(make_labels("up", job="pool-00", instance="h1:9100")),
        Series.of(make_labels("ringmon_scraper_writer_queue_depth", job="ringmon", instance="127.0.0.1:9401")),
        Series.of(make_labels("ringmon_scraper_scrapes_total", job="ringmon", instance="127.0.0.1:9401")),
    ]
    for i in range(60):
        t = now_ms - (60 - i) * 10_000
        for s in series:
            batch.add(s, t, float(i) if "total" in s.metric else 1.0)
    await storage.write(batch)

    async def nothing() -> list:
        return []

    app = create_app(engine=Engine(storage), pools_provider=nothing, targets_provider=nothing)
    runner, url = await serve(app)
    try:
        async with aiohttp.ClientSession() as http, http.get(f"{url}/d/ringmon") as r:
            assert r.status == 200
            page = await r.text()
    finally:
        await runner.cleanup()
    assert "Writer queue" in page and "Scrapes per second per scraper" in page
    assert page.count("<svg") >= 18
