"""A real ``ringmon standalone`` (the shipped config, as ``make run``) walked page by page in
headless Chromium once it has reached the state of a few minutes' run (the session's instance,
tests/fixtures_standalone.py).

Every nav link, every shipped dashboard, the Host dashboard of every pool it offers, every
host and pool page and the query page: every panel shows data or says why it is empty (no
bare "No data"), no panel errors, no console errors, and every link answers - a 403 only
when it says how to get access. Unknown hosts and pools are named as such.
"""

from __future__ import annotations

import html
import re

import pytest
import test_web_browser as web_browser  # its module-level skips (no Playwright, no Chromium) apply here
from standalone_site import wait_for


@pytest.fixture
async def browser():
    async with web_browser.playwright_api.async_playwright() as p:
        b = await p.chromium.launch(
            executable_path=web_browser.CHROMIUM, headless=True, args=web_browser.CHROMIUM_ARGS
        )
        yield b
        await b.close()


EMPTY_PANEL_BUDGET_S = 150.0  # how long a page may take to show data once the instance is warm
_VIEW_PARAMS = ("range", "from", "to", "tz", "refresh")


def _link_key(href: str) -> str:
    """A link without its view parameters (range, zone, refresh): they never change access."""
    path, _, query = href.partition("?")
    kept = [p for p in query.split("&") if p and p.split("=", 1)[0] not in _VIEW_PARAMS]
    return path + ("?" + "&".join(sorted(kept)) if kept else "")


async def _visit(page, url: str, what: str) -> list[str]:
    """Load ``url`` until none of its charts is an unexplained "No data" (bounded); the hrefs."""

    async def empty_panels() -> list[str]:
        unexplained = page.locator("svg.chart text.no-data", has_text=re.compile("^No data$"))
        return await page.locator("section.panel", has=unexplained).locator("h2").all_text_contents()

    status: list[int] = []

    async def loaded_with_data() -> bool:
        resp = await page.goto(url)
        status.append(resp.status)
        return resp.status != 200 or not await empty_panels()  # a bad status ends the wait too

    try:
        await wait_for(loaded_with_data, f"every panel of {what} to show data", EMPTY_PANEL_BUDGET_S, every_s=2.0)
    except AssertionError:
        raise AssertionError(
            f"{what}: panels still without data after {EMPTY_PANEL_BUDGET_S:.0f} s: {await empty_panels()}"
        ) from None
    assert status[-1] == 200, f"{what}: HTTP {status[-1]}: {(await page.inner_text('main'))[:300]}"
    assert await page.locator("h1").count() == 1, what
    errors = await page.locator("section.panel p.error").all_text_contents()
    assert errors == [], f"{what}: panel errors {errors}"
    return await page.locator("a[href]").evaluate_all("els => els.map(e => e.getAttribute('href'))")


async def test_walk_every_page_of_a_running_standalone(shipped_standalone, browser):
    """The issue's "first hour": every page of a warm ``make run`` - every nav link, every shipped
    dashboard, every host and pool, the query page - shows data in every panel (an empty panel
    must say why), logs no console error, and no link leads to a 403 that does not say how to
    get access."""
    site = shipped_standalone.url
    page, problems = await web_browser.open_page(browser)
    await page.goto(site + "/")
    nav = await page.locator("header nav a").evaluate_all("els => els.map(e => e.getAttribute('href'))")
    await page.goto(site + "/dashboards")
    dashboards = await page.locator("main a[href^='/d/']").evaluate_all("els => els.map(e => e.getAttribute('href'))")
    await page.goto(site + "/targets")
    hosts = await page.locator("main a[href^='/host/']").evaluate_all("els => els.map(e => e.getAttribute('href'))")
    pools = sorted({h.split("/")[2] for h in hosts})
    assert {"/d/fleet", "/d/host", "/d/ringmon"} <= set(dashboards) and {"web", "db", "ringmon"} <= set(pools)
    await page.goto(site + "/d/host")  # the Host dashboard of every pool it offers (each pool's first host)
    host_pools = await page.locator("select[name=job] option").evaluate_all("els => els.map(e => e.value)")
    assert {"web", "db"} <= set(host_pools)
    walk = [*nav, *dashboards, *(f"/d/host?job={p}" for p in host_pools), *hosts,
            *(f"/targets?pool={p}" for p in pools), "/query?expr=sum+by+(job)+(up)"]  # fmt: skip
    seen: set[str] = set()
    links: dict[str, str] = {}  # link key -> the page it was found on
    for path in walk:
        if path in seen:
            continue
        seen.add(path)
        for href in await _visit(page, site + path, path):
            if href.startswith("/") and not href.startswith("//"):
                links.setdefault(_link_key(href), path)
        assert problems == [], f"{path}: {problems}"

    # Every link of every page answers, and a 403 says how to get access; the pages those
    # links lead to are read for links too (one level further: rule history, silences, ...).
    queue = sorted(links.items())
    checked: set[str] = set()
    while queue:
        href, found_on = queue.pop(0)
        if href in checked:
            continue
        checked.add(href)
        assert len(checked) < 1000, "link walk did not converge"
        resp = await page.request.get(site + href, max_redirects=5)
        body = await resp.text()
        if resp.status == 403:
            assert "ringmon hash-password" in body or "Log in" in body, f"{href} (on {found_on}): a bare 403"
        else:
            assert resp.status < 400, f"{href} (on {found_on}): HTTP {resp.status}"
        if found_on in seen and "text/html" in resp.headers.get("content-type", ""):
            for more in re.findall(r'href="(/[^"/][^"]*)"', body):
                key = _link_key(html.unescape(more))
                if key not in checked and key not in links:
                    links[key] = href
                    queue.append((key, href))

    # An unknown host or pool is named as such.
    resp = await page.goto(site + "/host/web/127.0.0.1:1")
    assert resp.status == 404 and "Pool 'web' has no host '127.0.0.1:1'." in await page.inner_text("main")
    resp = await page.goto(site + "/host/nosuch/127.0.0.1:1")
    assert resp.status == 404 and "There is no pool 'nosuch'." in await page.inner_text("main")
    assert [p for p in problems if "status of 404" not in p] == []
