"""Screenshots of a running standalone for the README: ``make screenshots``.

    .venv/bin/python tests/screenshots.py [--minutes 10] [--range 10m] [--out docs/screenshots]

Starts ``ringmon standalone`` with the shipped config (as ``make run``, on a free port with a
temporary data dir), lets it collect for ``--minutes`` (charts need a history to show),
then loads the Fleet, Host and Ringmon dashboards, the alerts page and the notification log
(when the web offers one) in headless Chromium and writes one PNG per page into ``--out``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import tempfile
import time
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parent), str(Path(__file__).resolve().parent.parent)]  # tests/, the repo

from standalone_site import ROOT, start_standalone, wait_until_warm  # noqa: E402

CHROMIUM = os.environ.get("RINGMON_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"]


async def shoot(url: str, out: Path, range_: str) -> list[Path]:
    from playwright.async_api import async_playwright

    written: list[Path] = []
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        page = await (await browser.new_context(viewport={"width": 1400, "height": 900})).new_page()
        problems: list[str] = []
        page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
        await page.goto(url + "/")
        nav = await page.locator("header nav a").evaluate_all(
            "els => els.map(e => [e.textContent.trim(), e.getAttribute('href')])"
        )
        shots = {
            "fleet": f"/d/fleet?range={range_}",
            "host": f"/d/host?job=web&range={range_}",
            "ringmon": f"/d/ringmon?range={range_}",
            "alerts": "/alerts",
        }
        for text, href in nav:
            if "notification" in text.lower():
                shots["notification-log"] = href
        if "notification-log" not in shots:
            print("no notification log in the navigation: not shot", file=sys.stderr)
        for name, path in shots.items():
            resp = await page.goto(url + path)
            if resp is None or resp.status != 200:
                raise SystemExit(f"{path}: HTTP {resp.status if resp else '?'}")
            target = out / f"{name}.png"
            await page.screenshot(path=str(target), full_page=True)
            written.append(target)
        await browser.close()
        if problems:
            raise SystemExit(f"console errors: {problems}")
    return written


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=10.0, help="collect this long first (default %(default)s)")
    ap.add_argument("--range", default="10m", help="the pages' time range (default %(default)s)")
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "screenshots")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stop the standalone on the way out
    with tempfile.TemporaryDirectory(prefix="ringmon-shots-") as tmp:
        started = time.monotonic()
        site = start_standalone(Path(tmp) / "data")
        try:
            print(f"standalone at {site.url}; collecting for {args.minutes:g} min", flush=True)
            asyncio.run(wait_until_warm(site))
            time.sleep(max(0.0, args.minutes * 60 - (time.monotonic() - started)))  # history to draw
            for path in asyncio.run(shoot(site.url, args.out, args.range)):
                print(f"wrote {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}")
        finally:
            site.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
