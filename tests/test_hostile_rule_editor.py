"""The rule editor's writes: the file's mode kept, symlinks written through to a target inside the
rules directory or refused, and a large save that never stalls the event loop."""

from __future__ import annotations

import asyncio
import os
import re
import stat
import time

import pytest
from aiohttp.test_utils import TestClient, TestServer
from test_web_alerting import NEW_RULES, RULES, Rig, csrf, login, page

from web.app import create_app


async def _empty():
    return []


@pytest.fixture
async def rig(tmp_path):
    r = Rig(tmp_path)
    await r.manager.start()
    app = create_app(engine=r.engine, pools_provider=_empty, targets_provider=_empty, alerting=r.views, auth=r.auth)
    r.client = TestClient(TestServer(app))
    await r.client.start_server()
    yield r
    await r.client.close()
    await r.manager.stop()


async def _save(rig: Rig, text: str):
    c = rig.client
    path = str(rig.rule_file)
    body = await page(c, f"/rules/edit?file={path}")
    base = re.search(r'name="base" value="([^"]+)"', body).group(1)
    resp = await c.post("/rules/edit", data={"file": path, "text": text, "base": base, "action": "save",
                                             "csrf_token": csrf(body)})  # fmt: skip
    return resp.status, await resp.text()


def _mode(p) -> int:
    return stat.S_IMODE(os.stat(p).st_mode)


async def test_save_keeps_the_file_mode(rig):
    await login(rig.client)
    os.chmod(rig.rule_file, 0o600)
    status, body = await _save(rig, NEW_RULES)
    assert status == 200 and "Saved" in body
    assert rig.rule_file.read_text() == NEW_RULES and _mode(rig.rule_file) == 0o600
    assert not [p for p in rig.rule_file.parent.iterdir() if p.name.endswith(".tmp")]


async def test_save_writes_through_a_symlink_inside_the_rules_directory(rig, tmp_path):
    await login(rig.client)
    target = tmp_path / "linked" / "node.yml"
    target.parent.mkdir()
    target.write_text(RULES)
    os.chmod(target, 0o640)
    rig.rule_file.unlink()
    rig.rule_file.symlink_to(os.path.relpath(target, rig.rule_file.parent))
    status, body = await _save(rig, NEW_RULES)
    assert status == 200 and "Saved" in body
    assert rig.rule_file.is_symlink(), "the link was replaced by a regular file"
    assert target.read_text() == NEW_RULES and _mode(target) == 0o640


async def test_save_refuses_a_symlink_leading_outside_the_rules_directory(rig, tmp_path_factory):
    await login(rig.client)
    outside = tmp_path_factory.mktemp("elsewhere") / "rules.yml"
    outside.write_text(RULES)
    os.chmod(outside, 0o640)
    rig.rule_file.unlink()
    rig.rule_file.symlink_to(outside)
    status, body = await _save(rig, NEW_RULES)
    assert status == 409 and "Not saved:" in body and "outside the rules directory" in body
    assert rig.rule_file.is_symlink() and outside.read_text() == RULES and _mode(outside) == 0o640
    assert "version=" not in await page(rig.client, f"/rules/history?file={rig.rule_file}")


def _big_rules(size: int) -> str:
    rule = ("      - alert: Big{n}\n        expr: sum by (job) (rate(http_requests_total{{job=~\"api|web\","
            "code=~\"5..\"}}[5m])) > {n}\n        labels: {{severity: page}}\n"
            "        annotations: {{summary: '{{{{ $labels.job }}}} errors {n}'}}\n")
    out, n = ["groups:\n  - name: big\n    rules:\n"], 0
    total = len(out[0])
    while total < size:
        out.append(rule.format(n=n))
        total += len(out[-1])
        n += 1
    return "".join(out)


PROBE_EVERY_S = 0.02  # /-/healthy pace while the save runs


async def test_large_save_does_not_block_the_event_loop(rig):
    """A 600 KB save blocked the process 4.2 s; validation and writing now run in a worker thread,
    so /-/healthy keeps answering while it runs (latency measured, not slept around)."""
    await login(rig.client)

    async def reload_store_only():  # this test is about the editor, not about evaluating 3000 rules
        read = await asyncio.get_running_loop().run_in_executor(None, rig.store.read)
        return rig.store.apply(read)

    rig.views.reload_rules = reload_store_only
    text = _big_rules(600_000)
    started = time.monotonic()
    save = asyncio.ensure_future(_save(rig, text))
    latencies = []
    while not save.done():
        t0 = time.monotonic()
        resp = await rig.client.get("/-/healthy")
        await resp.read()
        latencies.append(time.monotonic() - t0)
        # paced, not back to back: this client shares the server's process, and a probe loop
        # without a pause held the GIL from the save's worker thread (the save took 2x as long)
        await asyncio.wait({save}, timeout=PROBE_EVERY_S)
    status, body = await save
    took = time.monotonic() - started
    assert status == 200 and "Saved" in body and rig.rule_file.read_text() == text
    print(f"600 KB save: {took:.1f} s, {len(latencies)} /-/healthy answers, slowest {max(latencies) * 1000:.0f} ms")
    # Blocking, the save would hold one answer for most of its duration (validation is most of it);
    # measured against the save itself, so a loaded machine slows both alike.
    assert len(latencies) >= 5 and max(latencies) < took / 4, (took, sorted(latencies)[-5:])
