"""Browser tests in headless Chromium (Debian's /usr/bin/chromium driven by Playwright).

Every page loads without a console error (a CSP violation is one), dashboards show the data
that was written (read back from the SVG in the browser), the range picker changes the
range, and pages work with JavaScript disabled. Screenshots of each page are kept under
test-artifacts/screenshots/.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
from aiohttp.test_utils import TestServer
from test_web_alerting import BAD_RULES, NEW_RULES, Rig

from query.engine import Engine
from query.memory import MemoryStorage
from storage.model import Series, labels_from_dict
from web.app import create_app

playwright_api = pytest.importorskip("playwright.async_api", reason="playwright is not installed")
CHROMIUM = os.environ.get("RINGMON_CHROMIUM", "/usr/bin/chromium")
if not shutil.which(CHROMIUM):
    pytest.skip(f"no Chromium at {CHROMIUM}", allow_module_level=True)

ROOT = Path(__file__).resolve().parent.parent
SHOTS = ROOT / "test-artifacts" / "screenshots"
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync",
]  # fmt: skip
HOSTS = {"web": ["10.0.0.1:9100", "10.0.0.2:9100"], "db": ["10.0.1.1:9100"]}
MEM_TOTAL = 8 * 2**30
CPU_RATES = {"user": 0.25, "system": 0.1, "iowait": 0.05, "idle": 0.6}  # one CPU: sums to 1


def fill(storage: MemoryStorage, now_s: int) -> None:
    """Two hours of 15 s scrapes for every host: known CPU rates, memory, disk, network, requests."""
    ts = np.arange(now_s - 7200, now_s + 1, 15, dtype=np.int64)
    elapsed = (ts - ts[0]).astype(np.float64)

    def put(name: str, values, **labels: str) -> None:
        storage.add_series(Series.of(labels_from_dict({"__name__": name, **labels})), ts * 1000, values)

    for pool, hosts in HOSTS.items():
        for i, host in enumerate(hosts):
            base = {"job": pool, "instance": host}
            put("up", np.ones(len(ts)), **base)
            for mode, rate in CPU_RATES.items():
                put("node_cpu_seconds_total", elapsed * rate, cpu="0", mode=mode, **base)
            put("node_memory_MemTotal_bytes", np.full(len(ts), MEM_TOTAL), **base)
            put("node_memory_MemAvailable_bytes", np.full(len(ts), MEM_TOTAL / (2 + i)), **base)
            put("node_memory_MemUsed_bytes", np.full(len(ts), MEM_TOTAL - MEM_TOTAL / (2 + i)), **base)
            fs = {"device": "/dev/vda", "fstype": "ext4", "mountpoint": "/", **base}
            put("node_filesystem_size_bytes", np.full(len(ts), 100e9), **fs)
            put("node_filesystem_avail_bytes", np.full(len(ts), 40e9 + i * 10e9), **fs)
            put("node_network_receive_bytes_total", elapsed * 125_000, device="eth0", **base)
            put("node_network_transmit_bytes_total", elapsed * 25_000, device="eth0", **base)
            put("node_procs_total", np.full(len(ts), 120 + i), **base)
            put("node_boot_time_seconds", np.full(len(ts), now_s - 86400.0 * (i + 1)), **base)
            if pool == "web":
                put("http_requests_total", elapsed * 20, method="GET", code="200", **base)
                put("http_requests_total", elapsed * 1, method="GET", code="500", **base)


async def pools_provider():
    return [
        {
            "name": p,
            "running": len(h),
            "hosts": [{"address": a, "health": "up", "last_scrape": time.time() - 5} for a in h],
        }
        for p, h in HOSTS.items()
    ]


async def targets_provider():
    return [
        {"key": f"{p}/{a}", "pool": p, "address": a, "url": f"http://{a}/metrics", "health": "up",
         "last_scrape": time.time() - 5, "last_duration_s": 0.012, "owner": "scraper-0"}
        for p, hosts in HOSTS.items() for a in hosts
    ]  # fmt: skip


@pytest.fixture
async def rig(tmp_path):
    """The real alerting stack of test_web_alerting, its engine filled with the fleet's data."""
    r = Rig(tmp_path)
    fill(r.storage, int(time.time()))
    await r.manager.start()
    await r.evaluate()
    yield r
    await r.manager.stop()


@pytest.fixture
async def site(rig):
    app = create_app(
        engine=rig.engine,
        pools_provider=pools_provider,
        targets_provider=targets_provider,
        alerting=rig.views,
        auth=rig.auth,
    )
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    yield str(server.make_url("")).rstrip("/")
    await server.close()


@pytest.fixture
async def browser():
    async with playwright_api.async_playwright() as p:
        b = await p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield b
        await b.close()


async def open_page(browser, **context_options):
    context = await browser.new_context(viewport={"width": 1400, "height": 900}, **context_options)
    page = await context.new_page()
    problems: list[str] = []
    page.on(
        "console",
        lambda m: problems.append(f"console {m.type}: {m.text}") if m.type in ("error", "warning") else None,
    )
    page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    return page, problems


PAGES = {
    "overview": "/",
    "pools": "/pools",
    "targets": "/targets",
    "host": "/host/web/10.0.0.1:9100",
    "dashboards": "/dashboards",
    "fleet": "/d/fleet",
    "host-dashboard": "/d/host?job=web&instance=10.0.0.1:9100",
    "query": "/query?expr=sum+by+(job)+(rate(http_requests_total[5m]))",
    "alerts": "/alerts",
    "silences": "/silences",
    "rules": "/rules",
    "login": "/login",
}


async def test_every_page_loads_without_console_errors(site, browser):
    SHOTS.mkdir(parents=True, exist_ok=True)
    page, problems = await open_page(browser)
    for name, path in PAGES.items():
        resp = await page.goto(site + path)
        assert resp.status == 200, name
        assert await page.locator("h1").count() == 1, name
        await page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)
        assert problems == [], f"{name}: {problems}"
    resp = await page.goto(site + "/no/such/page")
    assert resp.status == 404
    assert "There is no page" in await page.inner_text("main")


async def svg_titles(page, panel_title: str) -> list[str]:
    section = page.locator(
        "section.panel", has=page.locator("h2", has_text=re.compile(f"^{re.escape(panel_title)}$"))
    )
    return await section.locator("svg circle title").all_text_contents()


async def test_dashboards_show_the_written_data(site, browser):
    page, problems = await open_page(browser)
    await page.goto(site + "/d/host?job=web&instance=10.0.0.2:9100")
    totals = [t for t in await svg_titles(page, "Memory") if t.startswith("total\n")]
    assert len(totals) > 200 and {t.rsplit(": ", 1)[1] for t in totals} == {"8 GiB"}
    available = {
        t.rsplit(": ", 1)[1] for t in await svg_titles(page, "Memory") if t.startswith("available\n")
    }
    assert available == {"2.67 GiB"}  # 8 GiB / 3 for the second host
    cpu = await svg_titles(page, "CPU by mode")
    for mode, rate in CPU_RATES.items():
        values = [t.rsplit(": ", 1)[1] for t in cpu if t.startswith(f"{mode}\n")]
        assert values.count(f"{rate:g}") > 200, mode
    legend = (
        await page.locator("section.panel", has_text="CPU by mode")
        .locator(".legend-item text")
        .all_text_contents()
    )
    assert sorted(legend) == sorted(CPU_RATES)
    # Hovering a legend entry highlights its series: the others fade (CSS, no script).
    cpu = page.locator("section.panel", has=page.locator("h2", has_text=re.compile("^CPU by mode$")))
    await cpu.locator(".legend-item", has_text="idle").hover()
    opacity = await cpu.locator("svg g.s").evaluate_all(
        "gs => gs.map(g => [g.dataset.name, getComputedStyle(g).opacity])"
    )
    assert dict(opacity) == {m: ("1" if m == "idle" else "0.2") for m in CPU_RATES}

    await page.goto(site + "/d/fleet")
    rps = await svg_titles(page, "Requests per second per pool")
    assert {t.rsplit(": ", 1)[1] for t in rps if t.startswith("web\n")} >= {"42/s"}  # 2 hosts x 21/s
    up = await page.locator("section.panel", has_text="Servers up per pool").locator("path.line").count()
    assert up == 2
    assert problems == []


async def test_dense_dashboard_hover_bands_show_the_written_data(browser):
    """Twelve pools: over the per-point tooltip budget, so hover bands carry every pool's value."""
    storage = MemoryStorage()
    now_s = int(time.time())
    ts = np.arange(now_s - 7200, now_s + 1, 15, dtype=np.int64)
    elapsed = (ts - ts[0]).astype(np.float64)
    for i in range(12):
        base = {"job": f"pool{i:02d}", "instance": f"10.9.{i}.1:9100"}
        for name, values in (("up", np.ones(len(ts))), ("http_requests_total", elapsed * (i + 1))):
            storage.add_series(Series.of(labels_from_dict({"__name__": name, **base})), ts * 1000, values)
    server = TestServer(
        create_app(engine=Engine(storage), pools_provider=pools_provider, targets_provider=targets_provider),
        host="127.0.0.1",
    )
    await server.start_server()
    try:
        page, problems = await open_page(browser)
        await page.goto(str(server.make_url("/d/fleet?range=1h")))
        SHOTS.mkdir(parents=True, exist_ok=True)
        await page.screenshot(path=str(SHOTS / "fleet-12-pools.png"), full_page=True)
        section = page.locator(
            "section.panel", has=page.locator("h2", has_text=re.compile("^Requests per second per pool$"))
        )
        assert await section.locator("svg circle").count() == 0  # 12 x 241 points: no per-point titles
        titles = await section.locator("svg g.cols rect title").all_text_contents()
        assert 241 / 3 <= len(titles) <= (640 - 70 - 16) / 6 + 1  # bands of 2-3 steps, >= 6 px
        written = [f"pool{i:02d}: {i + 1}/s" for i in range(12)]
        # Every band lists every pool at the rate written (the newest steps' windows reach
        # past the last sample, so the last bands are left out).
        assert [t.split("\n")[1:] for t in titles[:-3]] == [written] * (len(titles) - 3)
        # Hovering anywhere on the plot lands on a band (its tooltip).
        box = await section.locator("svg.chart").bounding_box()
        hit = await page.evaluate(
            "([x, y]) => { const e = document.elementFromPoint(x, y); "
            "return e.tagName + '|' + (e.querySelector('title') || {}).textContent; }",
            [box["x"] + 300, box["y"] + 100],
        )
        assert hit.startswith("rect|") and hit.endswith("pool11: 12/s")
        assert problems == []
    finally:
        await server.close()


async def chart_window(page) -> tuple[int, int]:
    svg = page.locator("svg.chart").first
    return int(await svg.get_attribute("data-start")), int(await svg.get_attribute("data-end"))


async def test_range_picker_changes_the_range(site, browser):
    page, problems = await open_page(browser)
    await page.goto(site + "/d/fleet")
    # A preset's chart spans its step grid (ending at the last step boundary) plus the
    # moments since, up to now: the span and less than one step (15 s for 1 h, 2 min for 6 h).
    start, end = await chart_window(page)
    assert 3600_000 <= end - start < 3600_000 + 15_000
    await page.locator(".presets a", has_text="6h").click()
    await page.wait_for_url(re.compile(r"range=6h"))
    start, end = await chart_window(page)
    assert 6 * 3600_000 <= end - start < 6 * 3600_000 + 120_000
    assert await page.locator(".presets a.active").inner_text() == "6h"

    # A custom window through the form, in another time zone.
    await page.select_option("select[name=range]", "custom")
    await page.fill("input[name=from]", "2026-01-02T10:00")
    await page.fill("input[name=to]", "2026-01-02T12:30")
    await page.fill("input[name=tz]", "Asia/Kolkata")
    await page.locator("form.range-picker button").click()
    await page.wait_for_url(re.compile(r"range=custom"))
    start, end = await chart_window(page)
    want = dt.datetime(2026, 1, 2, 10, 0, tzinfo=dt.timezone(dt.timedelta(hours=5, minutes=30)))
    assert start == int(want.timestamp() * 1000) and end - start == 150 * 60_000
    assert "IST" in await page.locator("svg.chart .tz").first.text_content()
    assert problems == []


async def test_pages_work_without_javascript(site, browser):
    page, problems = await open_page(browser, java_script_enabled=False)
    await page.goto(site + "/d/host?job=web&instance=10.0.0.1:9100")
    assert await page.locator("svg.chart path.line").count() > 10
    await page.select_option("select[name=instance]", "10.0.0.2:9100")
    await page.locator("form.filters button").click()
    await page.wait_for_url(re.compile(r"instance=10.0.0.2"))
    assert await page.locator("select[name=instance] option[selected]").inner_text() == "10.0.0.2:9100"
    await page.goto(site + "/query")
    await page.fill("textarea[name=expr]", "node_procs_total")
    await page.locator("form.query button").click()
    await page.wait_for_url(re.compile(r"expr=node_procs_total"))
    assert await page.locator("table.grid tbody tr").count() == 3
    assert problems == []


async def log_in(page, site):
    await page.goto(site + "/login?next=/rules")
    await page.fill("input[name=username]", "ops")
    await page.fill("input[name=password]", "s3cret pass")
    await page.locator("form.login button").click()
    await page.wait_for_url(site + "/rules")


async def test_rule_edit_in_the_browser(site, browser, rig):
    SHOTS.mkdir(parents=True, exist_ok=True)
    page, problems = await open_page(browser)
    await log_in(page, site)
    await page.locator("a", has_text="edit").first.click()
    await page.wait_for_url(re.compile(r"/rules/edit\?file="))
    await page.screenshot(path=str(SHOTS / "rule-editor.png"), full_page=True)

    # An edit with an error is refused, with its line shown next to the text.
    await page.fill("textarea[name=text]", BAD_RULES)
    await page.locator("form.editor button").click()
    await page.wait_for_load_state()
    assert "Not saved: the rules do not validate." in await page.inner_text("main")
    bad_line = next(i for i, line in enumerate(BAD_RULES.splitlines(), 1) if "sum(" in line)
    assert await page.locator("table.listing tr.bad td.ln").all_text_contents() == [str(bad_line)]
    await page.screenshot(path=str(SHOTS / "rule-editor-error.png"), full_page=True)
    assert rig.rule_file.read_text() != BAD_RULES
    # The refusal is answered 422 on purpose; Chromium logs that status, nothing else may appear.
    assert [p for p in problems if "status of 422" not in p] == []
    problems.clear()

    # A valid edit: review the diff, save; the alerter runs the new rule.
    await page.fill("textarea[name=text]", NEW_RULES)
    await page.locator("form.editor button").click()
    await page.wait_for_load_state()
    assert "+      - alert: HostOnFireRenamed" in await page.locator("pre.diff").inner_text()
    await page.screenshot(path=str(SHOTS / "rule-editor-diff.png"), full_page=True)
    await page.locator("button.primary").click()
    await page.wait_for_load_state()
    assert "The alerter reloaded its rules" in await page.inner_text("main")
    assert rig.rule_file.read_text() == NEW_RULES
    await rig.evaluate()
    await page.goto(site + "/alerts")
    assert "HostOnFireRenamed" in await page.inner_text("main")
    await page.screenshot(path=str(SHOTS / "alerts-after-edit.png"), full_page=True)

    # Silence it from the alerts page.
    await page.locator("table.alerts a", has_text="Silence").first.click()
    await page.wait_for_url(re.compile(r"/silences\?matchers="))
    await page.fill("input[name=comment]", "working on it")
    await page.locator("form.silence button").click()
    await page.wait_for_url(site + "/silences")
    assert await page.locator("span.badge.silence-active").count() == 1
    assert problems == []
