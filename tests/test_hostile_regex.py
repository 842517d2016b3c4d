"""Issue #16's regex and template rows, sent to running Ringmon processes as a hostile user would.

Nested quantifiers (``(.*.*)*X``, ``(a+)+$``, ``(x+x+)+y`` ...) go to label matchers on label
values and on ``__name__`` through ``/api/v1/query``, ``query_range``, ``/api/v1/series`` and
label values, to ``label_replace``, to metric relabel configs run on every scraped sample, to a
silence, to a notifier route, and to alert templates (with the loop and printf blowups).
Python's ``re`` needed ~2^64 steps for ``(a+)+$`` against the 65-character label value every
series carries here; RE2 answers at once. Each valid regex gets an answer, each invalid one a
400 with Prometheus's error JSON, and the process stays responsive: scrape and rule gaps from the
stored samples' own timestamps, ``/-/healthy`` latency measured while the requests run.
Standalone first, then ``ringmon web`` and ``ringmon alerter`` on the real ZooKeeper and Cassandra.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from standalone_site import ROOT, start_standalone, wait_for
from test_hostile_auth import PASSWORD, Browser, Proc

from alerting.api_auth import USER_HEADER, bearer
from bench.hostile import (
    HealthProber,
    cadence_problems,
    describe,
    healthy_problem,
    judged_cadence,
    measure,
    p99,
)
from services.zookeeper.zkserver import free_port
from web.auth import hash_password

NESTED = ["(.*.*)*X", "(a+)+$", "(x+x+)+y", "(a|aa)+$", "((a*)*)*b", "(.*)*(.*)*(.*)*!!"]
LONG = "a" * 64 + "!"  # every scraped series carries long="aaa...a!" (a metric relabel config sets it)
SCRAPE_S = 1.0
ALERT = "HostileTemplates"

RULES = {"groups": [{"name": "hostile", "interval": "1s", "rules": [
    {"record": "hostile:long", "expr": f'label_replace(vector(1), "long", "{LONG}", "", "")'},  # in cluster: no scrapes
    {"record": "hostile:regex:count", "expr": 'count({long=~"(a+)+$|a+!", __name__!~"(x+x+)+y"})'},
    {"alert": ALERT, "expr": "vector(1)", "labels": {"severity": "page"}, "annotations": {
        "regex": '{{ match "(a+)+$" "' + LONG + '" }}',
        "replace": '{{ reReplaceAll "(.*.*)*X" "y" "' + LONG + '" }}',
        "loop": "{{ range 100000000 }}{{ end }}",
        "printf": '{{ range 20000000 }}{{ printf "%500000000d" 1 }}{{ end }}',
        "fine": "still sent",
    }},
]}]}

METRIC_RELABEL = [
    {"action": "replace", "target_label": "long", "replacement": LONG},
    {"action": "drop", "source_labels": ["__name__"], "regex": "(.*.*)*X"},
    {"action": "replace", "source_labels": ["long"], "regex": "(a+)+$", "target_label": "never", "replacement": "$1"},
    {"action": "labeldrop", "regex": "(x+x+)+y"},
]


def hostile_queries() -> list[tuple[str, dict[str, Any], int]]:
    """(API path, params, expected status): every nested shape on values and on names."""
    out: list[tuple[str, dict[str, Any], int]] = []
    for rx in NESTED:
        out += [
            ("query", {"query": f'{{long=~"{rx}"}}'}, 200),
            ("query", {"query": f'{{__name__=~"{rx}"}}'}, 200),
            ("query", {"query": f'count({{__name__=~"{rx}|up", long!~"{rx}"}})'}, 200),
            ("query", {"query": f'count(label_replace({{long!=""}}, "hostile", "$1", "long", "{rx}"))'}, 200),
            ("query_range", {"query": f'count({{long=~"{rx}|a+!"}})', "start": "{start}", "end": "{end}",
                             "step": "1"}, 200),
            ("series", {"match[]": [f'{{__name__=~"{rx}"}}', f'{{long=~"{rx}", job=~".+"}}']}, 200),
            ("label/__name__/values", {"match[]": f'{{__name__=~"{rx}|up"}}'}, 200),
        ]
    for bad in ["(?=x)", "(a)\\\\1", "a{1001}", "(?<=a)b", "(unclosed"]:
        out += [
            ("query", {"query": f'up{{job=~"{bad}"}}'}, 400),
            ("query", {"query": f'label_replace(up, "a", "$1", "job", "{bad}")'}, 400),
            ("series", {"match[]": f'{{__name__=~"{bad}"}}'}, 400),
        ]
    return out


async def send_hostile(base: str, headers: dict[str, str] | None = None, min_s: float = 6.0,
                       in_flight: int = 4) -> dict[str, float]:
    """Every hostile request, four in flight at once, in rounds until ``min_s`` passed (at most
    10 rounds); asserts each status and error JSON; returns the slowest answer per request kind."""
    sem = asyncio.Semaphore(in_flight)
    slowest: dict[str, float] = {}
    started = time.monotonic()
    async with aiohttp.ClientSession(headers=headers or {}) as http:
        async def one(path: str, params: dict[str, Any], want: int) -> None:
            now = time.time()
            times = {"{start}": str(now - 60), "{end}": str(now)}
            q = [(k, times.get(str(x), str(x))) for k, v in params.items() for x in (v if isinstance(v, list) else [v])]
            async with sem:
                t0 = time.monotonic()
                async with http.get(f"{base}/api/v1/{path}", params=q) as r:
                    body = await r.json(content_type=None)
                    took = time.monotonic() - t0
            assert r.status == want, (path, params, r.status, body)
            if want == 400:
                assert body["status"] == "error" and body["errorType"] == "bad_data", body
                assert "error parsing regexp" in body["error"] or "invalid" in body["error"], body
            else:
                assert body["status"] == "success", body
            kind = f"{path} {'invalid' if want == 400 else 'nested'}"
            slowest[kind] = max(slowest.get(kind, 0.0), took)

        for _ in range(10):
            await asyncio.gather(*(one(*q) for q in hostile_queries()))
            if time.monotonic() - started >= min_s:
                break
    return slowest


def _configs(tmp: Path) -> Path:
    """The shipped standalone config, 1 s scrapes and rules, with the hostile rule file, relabel
    configs, a hostile route in the shipped alerting file, and a user for the silence form."""
    cfg = yaml.safe_load((ROOT / "configs" / "standalone.yaml").read_text())
    cfg["scrape"].update({"interval": f"{SCRAPE_S:g}s", "timeout": f"{SCRAPE_S:g}s",
                          "metric_relabel_configs": METRIC_RELABEL})
    rules = tmp / "hostile-rules.yml"
    rules.write_text(yaml.safe_dump(RULES, sort_keys=False))
    cfg["rules"] = {"files": [str(ROOT / f) for f in cfg["rules"]["files"]] + [str(rules)], "evaluation_interval": "1s"}
    cfg.setdefault("web", {})["users"] = {"ops": hash_password(PASSWORD, n=2**10)}
    acfg = yaml.safe_load((ROOT / cfg["alerting"]).read_text())
    alerting = tmp / "alerting.yaml"
    cfg["alerting"] = str(alerting)
    acfg["route"].setdefault("routes", []).insert(0, {
        "matchers": ['alertname=~"(a+)+$|HostileTemplates"', 'instance!~"(.*.*)*X"'],
        "match_re": {"severity": "(x+x+)+y|page"}, "receiver": acfg["route"]["receiver"], "group_wait": "1s"})
    alerting.write_text(yaml.safe_dump(acfg, sort_keys=False))
    path = tmp / "standalone.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


async def check_silences_form(base: str) -> None:
    b = Browser(base)
    try:
        assert await b.login() == 303
        token = re.search(r'name="csrf_token" value="([^"]+)"', await b.text("/silences")).group(1)

        async def create(matchers: str) -> tuple[int, str]:
            data = {"matchers": matchers, "duration": "1h", "comment": "hostile", "csrf_token": token}
            async with b.http.post(base + "/silences", data=data, allow_redirects=False) as r:
                return r.status, await r.text()

        assert (await create(f'long=~"{NESTED[1]}", job=~"{NESTED[0]}"'))[0] == 303
        status, page = await create('job=~"(?=x)"')
        assert status == 422 and "error parsing regexp" in page and "no lookahead" in page
    finally:
        await b.close()


HOSTILE_S = 6.0  # send_hostile's rounds last at least this long


async def _hostile_round(base: str) -> dict[str, float]:
    slowest = await send_hostile(base, min_s=HOSTILE_S)
    await check_silences_form(base)
    return slowest


@pytest.mark.slow
async def test_standalone_stays_responsive_under_hostile_regexes_and_templates(tmp_path: Path) -> None:
    site = start_standalone(tmp_path / "data", config=str(_configs(tmp_path)))
    try:
        base = site.url
        scraped = 'count(count_over_time(up[1m]) >= 3) >= count(up) and count({long="' + LONG + '"}) > 0'
        await wait_for(lambda: _has(base, scraped), "3 scrapes of every target", 180)
        async def attempt() -> tuple[list[str], float | None]:
            async with aiohttp.ClientSession() as http:
                # the same window with nothing hostile, just before: what the machine alone costs
                _, baseline = await measure(http, base, asyncio.sleep(HOSTILE_S), "up", "hostile:regex:count")
                slowest, hostile = await measure(http, base, _hostile_round(base), "up", "hostile:regex:count")
            print(f"\nstandalone: {len(hostile_queries())} hostile requests per round, slowest answers "
                  f"{ {k: round(v, 3) for k, v in sorted(slowest.items())} }\nbaseline (nothing sent): "
                  f"{describe(baseline)}\nhostile requests: {describe(hostile)}; load {os.getloadavg()[0]:.1f}")
            return cadence_problems("hostile regexes", hostile, baseline, SCRAPE_S, 1.0), hostile.cpu_pressure

        problems = await judged_cadence(attempt)
        assert not problems, "\n".join(problems)

        # the alert went out, its over-budget annotations saying why
        page = await wait_for(lambda: asyncio.to_thread(_page, base, "/alerts", ALERT), ALERT, 60)
        assert "over the budget of 100000 loop iterations" in page and "still sent" in page
        assert "regex:</span> false" in page
        await wait_for(lambda: asyncio.to_thread(_page, base, "/notifications", ALERT), "the notification", 90)
    finally:
        site.stop()


def test_matcher_text_is_scanned_in_linear_time() -> None:
    """Silence and route matcher text went through a backtracking tokenizer: ``a=`` + 2000 spaces
    + ``x}y`` took 87 s. Now 200,000 spaces answer with the error at once (a backtracking scan
    could not finish), and 20,000 matchers in one text parse."""
    from alerting.notifier.matchers import MatcherSyntaxError, parse_matchers

    with pytest.raises(MatcherSyntaxError, match="bad matcher at"):
        parse_matchers("a=" + " " * 200_000 + "x}y")
    assert len(parse_matchers(",".join(f'l{i}=~"(a+)+$|v{i}"' for i in range(20_000)))) == 20_000


def _page(base: str, path: str, needle: str) -> str | None:
    from urllib.request import urlopen

    with urlopen(base + path, timeout=30) as r:
        text = r.read().decode()
    return text if needle in text else None


def _alerting_file(tmp: Path, port: int, rules: Path) -> Path:
    p = tmp / "alerting.yaml"
    p.write_text(json.dumps({
        "alerter": {"listen": f"127.0.0.1:{port}", "state_db": str(tmp / "state" / "alerting.db"),
                    "rule_files": [str(rules)], "evaluation_interval": "1s"},
        "route": {"receiver": "nobody", "group_wait": "1s", "routes": [
            {"matchers": [f'alertname=~"{NESTED[1]}|{ALERT}"'], "match_re": {"severity": NESTED[2] + "|page"},
             "receiver": "nobody"}]},
        "receivers": [{"name": "nobody"}],
    }))
    return p


@pytest.mark.zookeeper
@pytest.mark.slow
async def test_cluster_web_and_alerter_under_hostile_regexes_and_templates(
        tmp_path: Path, zookeeper, zk_root, cassandra, cassandra_storage) -> None:
    """``ringmon web`` answers the same hostile queries over Cassandra; ``ringmon alerter`` takes
    hostile silences through its API and sends the alert with its over-budget annotations."""
    a_port, w_port = free_port(), free_port()
    rules = tmp_path / "hostile-rules.yml"
    rules.write_text(yaml.safe_dump(RULES, sort_keys=False))
    alerting = _alerting_file(tmp_path, a_port, rules)
    cfg = tmp_path / "ringmon.yaml"
    cfg.write_text(json.dumps({
        "storage": {"backend": "cassandra", "cassandra": {
            "hosts": [cassandra.host], "port": cassandra.port, "keyspace": cassandra_storage.keyspace,
            "spool_dir": str(tmp_path / "spool")}},
        "discovery": {"zookeeper": {"hosts": zookeeper.hosts, "session_timeout": "4s"}},
        "data_dir": str(tmp_path / "data"),
        "alerting": str(alerting),
    }))
    a_base, w_base = f"http://127.0.0.1:{a_port}", f"http://127.0.0.1:{w_port}"
    alerter = Proc(tmp_path, "alerter", ["alerter", "--config", str(cfg), "--alerting", str(alerting)],
                   a_base + "/-/ready")
    webp = Proc(tmp_path, "web", ["web", "--config", str(cfg), "--listen", f"127.0.0.1:{w_port}",
                                  "--zookeeper-root", zk_root], w_base + "/-/ready")
    try:
        await alerter.start()
        await webp.start()
        auth = bearer((tmp_path / "state" / "alerter-api-token").read_text().strip())
        # the alerter's rule evaluations write their series through the store the web reads
        await wait_for(lambda: _has(w_base, "hostile:regex:count"), "the first rule evaluations", 120)
        async def attempt() -> tuple[list[str], float | None]:
            async with HealthProber(a_base, w_base) as idle:  # the baseline: the same probes, nothing sent
                await asyncio.sleep(4.0)
            async with HealthProber(a_base, w_base) as mon:
                slowest = await send_hostile(w_base, min_s=4.0)
                await check_alerter_silences(a_base, auth)
            problems = []
            for b in (a_base, w_base):
                lat, base_lat = mon.latencies[b], idle.latencies[b]
                print(f"\n{b}: /-/healthy p99 {p99(lat):.0f} ms over {len(lat)} answers "
                      f"(baseline {p99(base_lat):.0f} ms over {len(base_lat)})")
                problems.append(healthy_problem(f"hostile regexes, {b}", lat, base_lat))
            print(f"web slowest answers { {k: round(v, 3) for k, v in sorted(slowest.items())} }")
            return [p for p in problems if p], mon.cpu_pressure

        problems = await judged_cadence(attempt)
        assert not problems, "\n".join(problems)

        async def alert() -> dict | None:
            async with aiohttp.ClientSession(headers=auth) as http, http.get(a_base + "/api/v1/alerts") as r:
                alerts = (await r.json())["data"]["alerts"]
            return next((a for a in alerts if a["labels"].get("alertname") == ALERT), None)

        a = await wait_for(alert, "the hostile alert", 60)
        ann = a["annotations"]
        assert ann["regex"] == "false" and ann["replace"] == LONG and ann["fine"] == "still sent"
        assert "over the budget of 100000 loop iterations" in ann["loop"] and "loop iterations" in ann["printf"]
    finally:
        for p in (webp, alerter):
            p.stop()


async def _has(base: str, expr: str) -> bool:
    async with aiohttp.ClientSession() as http, http.get(base + "/api/v1/query", params={"query": expr}) as r:
        body = await r.json()
    return bool(body.get("data", {}).get("result"))


async def check_alerter_silences(base: str, auth: dict[str, str]) -> None:
    headers = {**auth, "Content-Type": "application/json", USER_HEADER: "ops"}
    async with aiohttp.ClientSession(headers=headers) as http:
        async def post(matchers: str) -> tuple[int, dict]:
            body = json.dumps({"matchers": matchers, "comment": "hostile", "duration": "1h"})
            async with http.post(base + "/api/v1/silences", data=body) as r:
                return r.status, await r.json()

        for rx in NESTED:
            status, body = await post(f'long=~"{rx}", alertname=~"{rx}|x"')
            assert status == 200, body
        status, body = await post('job=~"(a)\\\\1"')
        assert status == 400 and "error parsing regexp" in body["error"] and "no backreferences" in body["error"], body
