"""Differential: a real Prometheus and Ringmon's scrape loop scrape the same ~300 bodies.

Bodies: the conformance inputs (211 OpenMetrics cases, the expfmt text sample and fuzz seeds,
Prometheus's fixtures) and the hostile shapes of ``exposition_hostile`` (issue #17: escapes,
1e309, +NaN, non-ASCII digits, hex, 1_0, CRLF, trailing tabs, 1970 timestamps...), served from
one local HTTP server with their formats' Content-Type. One Prometheus (Debian's, 2.42) scrapes
them all at a 2 s interval; each also goes through a ``ScrapeLoop`` (fetch, parse, time bounds,
batch). Per body: the same verdict (``up``), the same series, values and explicit timestamps.

Prometheus is started with one warm-up target and reloaded with the bodies once it has stored
a sample, so its head's time bounds are set by a current sample (an empty head takes its first
sample at any time, 1970 included). Two comparisons are adjusted for what 2.42 does and 3.x
(which Ringmon follows) does not: ``le``/``quantile`` values compare by their OpenMetrics form
(3.x rewrites ``le="1"`` as ``"1.0"``). Timestamps between 1 h and 8 days old (Prometheus: out of
its head's bounds; Ringmon: kept, README "Differences from Prometheus") are not among the bodies.
"""

from __future__ import annotations

import asyncio
import json
import math
import time

import aiohttp
import pytest
from aiohttp import web
from exposition_hostile import HOSTILE, render
from fuzz_harness import exposition_seeds
from real_prometheus import PROMETHEUS, RealPrometheus, start_prometheus
from waiting import wait_for

from discovery.target import ScrapeSettings, Target
from scraper.lenient import format_om_float
from scraper.loop import SYNTHETIC, ScrapeLoop
from scraper.memwriter import MemoryWriter

pytestmark = pytest.mark.skipif(not PROMETHEUS, reason="prometheus not installed")

# Where Prometheus 2.42 (the reference here) and 3.x (which Ringmon follows) differ: 2.42's
# OpenMetrics parser refuses a trailing comma in a label set and exemplars on samples other than
# _total/_bucket; 3.x's accepts both (model/textparse/openmetricsparse.go, "Free trailing commas
# are allowed", no allowedSuffixes). The test asserts these verdicts exactly, both sides.
UP_IN_2_42_ONLY = {
    "openmetrics/bad_missing_or_extra_commas_2": 0.0, "hostile/trailing_comma_om": 0.0,
    **{f"openmetrics/bad_exemplars_on_unallowed_{k}": 0.0 for k in (
        "metric_types_0", "metric_types_1", "metric_types_2", "samples_0", "samples_1", "samples_3")},
    "hostile/om_exemplar_gauge": 0.0,
}
# "a 0 0" then "a 0": Prometheus drops the first (1970) and keeps the second on its first scrape
# of the target but drops it as a duplicate on later ones (its cache saw the series); Ringmon
# always drops both (the second repeats a series of the same scrape).
SERIES_DIFFER = {"openmetrics/bad_grouping_or_ordering_10"}

CONTENT_TYPES = {"text": "text/plain; version=0.0.4; charset=utf-8",
                 "openmetrics": "application/openmetrics-text; version=1.0.0; charset=utf-8"}
INTERVAL_S = 2
# synthetic series compared too (for accepted bodies: Prometheus also counts a refused body's
# samples up to the error, Ringmon reports 0)
COUNTS = ("scrape_samples_scraped", "scrape_samples_post_metric_relabeling", "scrape_series_added")


def bodies() -> list[tuple[str, bytes, str]]:
    seeds = [(n, b, f) for n, b, f in exposition_seeds()]
    hostile = [(f"hostile/{n}", render(b, f), f) for n, b, f in HOSTILE]
    return seeds + hostile


def _canon(labels: dict[str, str]) -> tuple[tuple[str, str], ...]:
    """Labels without the target's own, le/quantile in OpenMetrics form (2.42 keeps them as served)."""
    out = {}
    for k, v in labels.items():
        if k in ("job", "instance", "case"):
            continue
        if k in ("le", "quantile"):
            try:
                v = format_om_float(float(v))
            except ValueError:
                pass
        out[k] = v
    return tuple(sorted(out.items()))


def _same(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or a == b


async def _serve(cases: list[tuple[str, bytes, str]]):
    async def handle(request: web.Request) -> web.Response:
        name, body, fmt = cases[int(request.match_info["i"])]
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPES[fmt]})

    async def warmup(_request: web.Request) -> web.Response:
        return web.Response(body=b"warmup 1\n", headers={"Content-Type": CONTENT_TYPES["text"]})

    app = web.Application()
    app.router.add_get("/b/{i}", handle)
    app.router.add_get("/warmup", warmup)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, f"127.0.0.1:{site._server.sockets[0].getsockname()[1]}"


def _config(address: str, cases: list) -> str:
    static = [{"targets": [address], "labels": {"__metrics_path__": "/warmup", "case": "warmup"}}]
    static += [{"targets": [address], "labels": {"__metrics_path__": f"/b/{i}", "case": name}}
               for i, (name, _b, _f) in enumerate(cases)]
    cfg = {"global": {"scrape_interval": f"{INTERVAL_S}s", "scrape_timeout": f"{INTERVAL_S}s"},
           "scrape_configs": [{"job_name": "ingest", "honor_timestamps": True, "static_configs": static}]}
    return json.dumps(cfg)  # YAML is a superset of JSON


async def _wait(session: aiohttp.ClientSession, prom: RealPrometheus, want: int) -> None:
    """Until ``want`` targets of job ingest have been scraped at least once (bounded)."""
    deadline = time.monotonic() + 120
    while True:
        try:
            async with session.get(prom.url + "/api/v1/targets?state=active") as r:
                doc = await r.json()
            # scraped at least once, the last time not timed out (a loaded machine may time one out)
            done = sum(1 for t in doc["data"]["activeTargets"]
                       if t["labels"].get("job") == "ingest" and not t["lastScrape"].startswith("0001-")
                       and "deadline exceeded" not in t["lastError"])
            if done >= want:
                return
        except (aiohttp.ClientError, KeyError, ValueError):
            pass
        if time.monotonic() > deadline or prom.proc.poll() is not None:
            raise RuntimeError(f"prometheus did not scrape {want} targets: {prom.log_tail()}")
        await asyncio.sleep(0.5)


async def _warmup_stored(session: aiohttp.ClientSession, url: str) -> bool:
    """Whether the warm-up target's sample is queryable (committed to Prometheus's head)."""
    try:
        async with session.get(url + "/api/v1/query", params={"query": 'warmup{case="warmup"}'}) as r:
            doc = await r.json()
    except (aiohttp.ClientError, ValueError):
        return False
    return doc.get("status") == "success" and bool(doc["data"]["result"])


async def _prometheus_view(session, url: str) -> tuple[dict[str, float], dict[str, dict]]:
    """(up per case, {case: {labels: [(t_ms, value), ...]}}) from one range-vector query."""
    async with session.get(url + "/api/v1/query", params={"query": '{job="ingest"}[1h]'}) as r:
        doc = await r.json()
    assert doc["status"] == "success", doc
    up: dict[str, float] = {}
    series: dict[str, dict] = {}
    for res in doc["data"]["result"]:
        m = res["metric"]
        name = m.pop("__name__")
        case = m.get("case", "")
        points = [(round(float(t) * 1000), float(v)) for t, v in res["values"]]
        if name in SYNTHETIC:
            if name == "up":
                up[case] = max(v for _t, v in points)  # the bodies never change: 0 only if always refused
            elif name in COUNTS:
                series.setdefault(case, {})[name] = max(v for _t, v in points)
            continue
        series.setdefault(case, {})[(("__name__", name),) + _canon(m)] = points
    return up, series


async def _ringmon_view(address: str, cases) -> tuple[dict[str, float], dict[str, dict]]:
    up: dict[str, float] = {}
    series: dict[str, dict] = {}
    writer = MemoryWriter()
    async with aiohttp.ClientSession() as session:
        for i, (name, _body, _fmt) in enumerate(cases):
            target = Target("ingest", address, ScrapeSettings(interval_s=INTERVAL_S, timeout_s=INTERVAL_S,
                                                              path=f"/b/{i}", labels=(("case", name),)))
            loop = ScrapeLoop(target, writer, session, pool_name="ingest-diff")
            for _ in range(3):  # a loaded machine may time a scrape out: that is no verdict
                out = await loop.scrape_once()
                if "timed out" not in loop.health.last_error:
                    break
            up[name] = 1.0 if out is not None else 0.0
            batch = writer.batches[-1]
            scrape_ms = batch.timestamps[-1]  # the synthetic series carry the scrape time
            got: dict = {}
            for s, v, t in zip(batch.series, batch.values, batch.timestamps, strict=True):
                labels = dict(s.labels)
                if labels["__name__"] in SYNTHETIC:
                    if labels["__name__"] in COUNTS:
                        got[labels["__name__"]] = v
                    continue
                key = (("__name__", labels.pop("__name__")),) + _canon(labels)
                got.setdefault(key, []).append((t if t != scrape_ms else None, v))
            if got:
                series[name] = got
    return up, series


def _compare(prom: dict, ours: dict) -> str | None:
    """Same series; a sample with its own timestamp is at exactly that time and value in
    Prometheus (whose points of a series stamped only so are then exactly Ringmon's); a sample
    at the scrape time has the value of one of Prometheus's scrapes of the (unchanging) body."""
    if prom.keys() != ours.keys():
        return f"series differ: only Prometheus {sorted(prom.keys() - ours.keys())[:3]}, " \
               f"only Ringmon {sorted(ours.keys() - prom.keys())[:3]}"
    for key, samples in ours.items():
        points = prom[key]
        if key in COUNTS:
            if points != samples:
                return f"{key}: Ringmon {samples}, Prometheus {points}"
            continue
        for t, v in samples:
            if not any(_same(pv, v) and (t is None or pt == t) for pt, pv in points):
                return f"{key}: Ringmon {v!r} at {t or 'scrape time'}, Prometheus {points[:4]}"
        if all(t is not None for t, _ in samples) and len(points) != len(samples):
            return f"{key}: Ringmon {samples[:4]}, Prometheus {points[:4]}"
    return None


async def test_same_verdicts_series_and_values_as_prometheus(tmp_path):
    cases = bodies()
    assert len(cases) > 250
    runner, address = await _serve(cases)
    cfg = tmp_path / "prometheus.yml"
    cfg.write_text(json.dumps({"global": {"scrape_interval": f"{INTERVAL_S}s"}, "scrape_configs": [
        {"job_name": "ingest", "static_configs": [
            {"targets": [address], "labels": {"__metrics_path__": "/warmup", "case": "warmup"}}]}]}))
    prom = start_prometheus(tmp_path, cfg, args=["--web.enable-lifecycle"])  # readiness: _wait below
    url = prom.url
    try:
        async with aiohttp.ClientSession() as session:
            await _wait(session, prom, 1)
            # the warm-up sample queryable, so committed: the head's bounds are now set by it
            await wait_for(lambda: _warmup_stored(session, url), "the warm-up sample in Prometheus's head",
                           timeout_s=60)
            cfg.write_text(_config(address, cases))
            async with session.post(url + "/-/reload") as r:
                assert r.status == 200, await r.text()
            await _wait(session, prom, len(cases) + 1)
            prom_up, prom_series = await _prometheus_view(session, url)
        ours_up, ours_series = await _ringmon_view(address, cases)
    finally:
        prom.stop()
        await runner.cleanup()

    disagreements = {}
    for name, reference_up in UP_IN_2_42_ONLY.items():
        assert (prom_up.get(name), ours_up.get(name)) == (reference_up, 1 - reference_up), name
    for name, _body, _fmt in cases:
        if name in UP_IN_2_42_ONLY or name in SERIES_DIFFER:
            continue
        if prom_up.get(name) != ours_up[name]:
            disagreements[name] = f"verdict: Prometheus up={prom_up.get(name)}, Ringmon up={ours_up[name]}"
            continue
        if not ours_up[name]:
            continue
        diff = _compare(prom_series.get(name, {}), ours_series.get(name, {}))
        if diff:
            disagreements[name] = diff
    accepted = sum(1 for v in ours_up.values() if v == 1.0)
    print(f"{len(cases)} bodies: Ringmon accepted {accepted}, rejected {len(cases) - accepted}; "
          f"{len(UP_IN_2_42_ONLY)} verdicts differ as 2.42 and 3.x do, "
          f"{len(SERIES_DIFFER)} series set by Prometheus's scrape history; "
          f"{len(disagreements)} other disagreements")
    assert not disagreements, json.dumps(disagreements, indent=1, default=str)[:6000]
