"""The alerter service in process: hot reload (file change, SIGHUP, POST /-/reload), API, silences CLI."""

from __future__ import annotations

import asyncio
import json
import os
import pathlib
import signal
import time

import aiohttp
import pytest

from alerting.api_auth import bearer
from alerting.service import AlerterConfigError, AlerterService, load_alerting_file
from alerting.testing import RecordingReceiver
from cli.main import main
from query.memory import MemoryStorage
from storage.base import DirectWriter
from storage.model import SampleBatch, Series, make_labels

RULES = """groups:
  - name: svc
    interval: 200ms
    rules:
      - alert: Hot
        expr: svc_temp > 50
        annotations: {summary: "temp {{ $value }}"}
"""


def _config(tmp: pathlib.Path, hook: str, group_wait: float = 0.1) -> pathlib.Path:
    p = tmp / "alerting.yaml"
    p.write_text(json.dumps({
        "alerter": {"listen": "127.0.0.1:0", "state_db": str(tmp / "state.db"), "rule_files": [str(tmp / "*.rules.yml")],
                    "evaluation_interval": "200ms", "watch_interval": "200ms", "resend_delay": "1s"},
        "global": {"retry_initial": 0.05},
        "route": {"receiver": "hook", "group_wait": group_wait, "group_interval": 0.5},
        "receivers": [{"name": "hook", "webhook_configs": [{"url": hook}]}],
    }))
    return p


def _temp(storage: MemoryStorage, v: float) -> None:
    b = SampleBatch("t")
    b.add(Series.of(make_labels("svc_temp", instance="a")), int(time.time() * 1000), v)
    storage.write_sync(b)


async def _until(pred, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await pred():
            return True
        await asyncio.sleep(0.05)
    return await pred()


@pytest.fixture
async def service(tmp_path: pathlib.Path):
    hook = await RecordingReceiver().start()
    (tmp_path / "a.rules.yml").write_text(RULES)
    cfg = _config(tmp_path, hook.url + "/hook")
    settings, ncfg = load_alerting_file(str(cfg))
    storage = MemoryStorage()
    svc = AlerterService(settings, ncfg, storage, DirectWriter(storage), alerting_config_path=str(cfg))
    await svc.start()
    try:
        yield svc, storage, hook, tmp_path
    finally:
        await svc.stop()
        await hook.stop()


async def test_reload_on_file_change_keeps_last_good_and_reports(service) -> None:
    svc, storage, hook, tmp = service
    base = f"http://127.0.0.1:{svc.port}"
    async with aiohttp.ClientSession(headers=bearer(svc.api_token)) as s:
        async def names() -> list[str]:
            async with s.get(base + "/api/v1/rules") as r:
                data = (await r.json())["data"]
            return [rule["name"] for g in data["groups"] for rule in g["rules"]]

        assert await names() == ["Hot"]
        (tmp / "b.rules.yml").write_text(RULES.replace("svc", "svc2").replace("Hot", "Cold"))
        assert await _until(lambda: _eq(names(), ["Hot", "Cold"]), 60)  # new file picked up by the watcher
        (tmp / "a.rules.yml").write_text(RULES.replace("> 50", "> "))  # broken: last good stays
        async with s.post(base + "/-/reload") as r:
            assert r.status == 400
            body = await r.json()
        assert body["success"] is False and "a.rules.yml:6:" in body["errors"][0] and "parse error" in body["errors"][0]
        assert sorted(await names()) == ["Cold", "Hot"]
        async with s.get(base + "/api/v1/rules") as r:
            errors = (await r.json())["data"]["errors"]
        assert list(errors) == [str(tmp / "a.rules.yml")]
        (tmp / "a.rules.yml").write_text(RULES.replace("Hot", "Hotter"))
        os.kill(os.getpid(), signal.SIGHUP)
        assert await _until(lambda: _eq(names(), ["Hotter", "Cold"]), 60)
        async with s.get(base + "/metrics") as r:
            text = await r.text()
        assert "ringmon_alerter_reloads_total" in text and "ringmon_rule_evaluations_total" in text


async def _eq(coro, want: list[str]) -> bool:
    return sorted(await coro) == sorted(want)


async def test_invalid_notifier_config_keeps_the_old_one(service) -> None:
    svc, storage, hook, tmp = service
    cfg = tmp / "alerting.yaml"
    good = cfg.read_text()
    cfg.write_text(good.replace('"receiver": "hook", "group_wait"', '"receiver": "nobody", "group_wait"'))
    out = await svc.reload("test")
    assert not out["success"] and "no receiver named 'nobody'" in out["errors"][0]
    _temp(storage, 80)
    assert len(await hook.wait_for(1, timeout=60)) == 1  # still routed with the last good config


async def test_silence_api_and_cli_over_http(service) -> None:
    svc, storage, hook, tmp = service
    url = f"http://127.0.0.1:{svc.port}"
    loop = asyncio.get_running_loop()
    rc = await loop.run_in_executor(None, main, ["silence", "add", 'alertname="Hot"', "-a", "ops", "-c", "drill",
                                                 "-d", "1h", "--url", url, "--token-file", str(tmp / "alerter-api-token")])
    assert rc == 0
    _temp(storage, 80)

    async def suppressed() -> bool:
        async with aiohttp.ClientSession(headers=bearer(svc.api_token)) as s, s.get(url + "/api/v1/notifier/alerts") as r:
            alerts = (await r.json())["data"]["alerts"]
        return bool(alerts) and alerts[0]["state"] == "suppressed"

    assert await _until(suppressed, 60)
    assert await hook.wait_for(1, timeout=1) == []
    async with aiohttp.ClientSession(headers=bearer(svc.api_token)) as s, s.get(url + "/api/v1/alerts") as r:
        (prom,) = (await r.json())["data"]["alerts"]  # Prometheus' /api/v1/alerts shape
    assert prom["state"] == "firing" and prom["value"] == "8.0000000000e+01" and prom["activeAt"].endswith("Z")
    assert prom["labels"] == {"alertname": "Hot", "instance": "a"}
    async with aiohttp.ClientSession(headers=bearer(svc.api_token)) as s, s.get(url + "/api/v1/silences") as r:
        (sil,) = (await r.json())["data"]
    assert sil["created_by"] == "ops" and sil["comment"] == "drill" and sil["state"] == "active"
    rc = await loop.run_in_executor(None, main, ["silence", "expire", sil["id"], "--url", url,
                                                 "--token-file", str(tmp / "alerter-api-token")])
    assert rc == 0
    assert len(await hook.wait_for(1, timeout=60)) == 1
    rc = await loop.run_in_executor(None, main, ["silence", "add", "bad matcher", "-a", "x", "-c", "y", "--url", url,
                                                 "--token-file", str(tmp / "alerter-api-token")])
    assert rc == 2
    # bodies of the wrong shape are a 400 naming the field, never a 500
    ok = '"created_by": "x", "comment": "y"'
    async with aiohttp.ClientSession(headers={**bearer(svc.api_token), "Content-Type": "application/json"}) as s:
        for body in ('{"matchers": 5, %s, "duration": "1h"}', '{"matchers": ["a=b"], %s, "duration": "1h"}',
                     '{"matchers": "a=\\"b\\"", %s, "starts_at": "x", "ends_at": "y"}',
                     '{"matchers": "a=\\"b\\"", %s, "duration": NaN}',
                     '{"matchers": "a=\\"b\\"", %s, "ends_at": Infinity}'):
            async with s.post(url + "/api/v1/silences", data=body % ok) as r:
                assert r.status == 400, (body, await r.text())
                assert (await r.json())["error"], body
        async with s.get(url + "/api/v1/silences") as r:
            assert len((await r.json())["data"]) == 1  # only the expired one from the CLI


def test_config_errors_name_file_and_key(tmp_path: pathlib.Path) -> None:
    p = tmp_path / "a.yaml"
    p.write_text("alerter: {evaluation_interval: soon}\nroute: {receiver: x}\nreceivers: [{name: x}]\n")
    with pytest.raises(AlerterConfigError, match=r"a.yaml:1: alerter.evaluation_interval: not a valid duration"):
        load_alerting_file(str(p))
    p.write_text("alerter: {bogus: 1}\nroute: {receiver: x}\nreceivers: [{name: x}]\n")
    with pytest.raises(AlerterConfigError, match=r"alerter.bogus: unknown key"):
        load_alerting_file(str(p))


def test_example_configs_load() -> None:
    root = pathlib.Path(__file__).resolve().parent.parent
    settings, ncfg = load_alerting_file(str(root / "configs" / "alerting.yaml"))
    assert set(ncfg.receivers) == {"notification-log", "watchdog", "oncall-sink"}  # Ringmon's own receivers (test_local_receivers)
    assert main(["rules", "check", *map(str, sorted((root / "configs" / "rules").glob("*.y*ml")))]) == 0
