"""Acceptance: 3 `ringmon scraper` processes share 60 targets through ZooKeeper and the ring.

Real processes, real ZooKeeper, real HTTP targets on 127.0.0.1. Checks, in order:
steady state (every target owned and scraped by exactly one scraper, as the stored ring
overrides and the ring say), SIGKILL of one scraper (its targets taken over by the others,
no survivor's target moved, not even in the interim before the leader's new plan; the
takeover time is printed), a scraper joining (the moved fraction is printed), and ZooKeeper
stopped for ``RINGMON_TEST_ZK_OUTAGE_S`` seconds (default 12, three session timeouts): every target keeps being
scraped, and the ephemeral nodes of the scrapers and of the targets' registrations are
there after it returns.

Duplicate scrapes are detected at the targets: every scraper scrapes a target at the
same slot (a phase derived from the target key), so two owners show up as two requests
a few milliseconds apart, while one owner's requests are an interval apart.
"""

from __future__ import annotations

import asyncio
import os
import pathlib
import signal
import sys
import time

import aiohttp
import pytest
from aiohttp import web
from zk_helpers import async_wait_for

from discovery.balance import OverridesDoc
from discovery.registry import Registry
from discovery.ring import ScraperRing
from discovery.target import ScrapeSettings
from services.zookeeper.zkserver import free_port

pytestmark = [pytest.mark.zookeeper, pytest.mark.slow]
ROOT = pathlib.Path(__file__).resolve().parent.parent
N_TARGETS = 60
INTERVAL_S = 1.0
SESSION_TIMEOUT_S = 4.0
OUTAGE_S = float(os.environ.get("RINGMON_TEST_ZK_OUTAGE_S", "12"))


class Targets:
    """60 light /metrics endpoints that remember when each was scraped."""

    def __init__(self) -> None:
        self.hits: dict[str, list[float]] = {}
        self.runners: list[web.AppRunner] = []
        self.addresses: list[str] = []

    async def start(self, n: int) -> None:
        for _ in range(n):
            port = free_port()
            address = f"127.0.0.1:{port}"
            app = web.Application()
            app.router.add_get("/metrics", self._handler(address))
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            await web.TCPSite(runner, "127.0.0.1", port).start()
            self.runners.append(runner)
            self.addresses.append(address)
            self.hits[address] = []

    def _handler(self, address: str):
        async def metrics(request: web.Request) -> web.Response:
            self.hits[address].append(time.time())
            return web.Response(text="# TYPE test_up gauge\ntest_up 1\n", content_type="text/plain")

        return metrics

    def since(self, t0: float) -> dict[str, list[float]]:
        return {a: [t for t in ts if t >= t0] for a, ts in self.hits.items()}

    async def stop(self) -> None:
        for r in self.runners:
            await r.cleanup()


def duplicate_scrapes(hits: dict[str, list[float]], min_gap: float = INTERVAL_S / 4) -> dict[str, float]:
    """Targets with two requests closer than ``min_gap`` (two owners), with that gap."""
    out = {}
    for address, ts in hits.items():
        ts = sorted(ts)
        gaps = [b - a for a, b in zip(ts, ts[1:], strict=False)]
        if gaps and min(gaps) < min_gap:
            out[address] = min(gaps)
    return out


class Scraper:
    def __init__(self, sid: str, tmp: pathlib.Path, zk_hosts: str, zk_root: str) -> None:
        self.sid = sid
        self.port = free_port()
        self.cfg = tmp / f"{sid}.yaml"
        self.db = tmp / f"{sid}.db"
        self.log = tmp / f"{sid}.log"
        self.cfg.write_text(
            f"storage:\n  backend: sqlite\n  sqlite:\n    path: {self.db}\n"
            f"discovery:\n  zookeeper:\n    hosts: '{zk_hosts}'\n    session_timeout: {SESSION_TIMEOUT_S:g}s\n"
            f"scrape:\n  interval: {INTERVAL_S:g}s\n  timeout: 500ms\n"
        )
        self.zk_root = zk_root
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        self._log = open(self.log, "wb")
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "cli.main", "scraper", "--config", str(self.cfg), "--id", self.sid,
            "--listen", f"127.0.0.1:{self.port}", "--zookeeper-root", self.zk_root,
            cwd=ROOT, stdout=self._log, stderr=self._log, env={**os.environ, "PYTHONPATH": str(ROOT)},
        )

    async def targets(self, session: aiohttp.ClientSession) -> dict | None:
        try:
            async with session.get(f"http://127.0.0.1:{self.port}/targets", timeout=aiohttp.ClientTimeout(total=2)) as r:
                return await r.json() if r.status == 200 else None
        except (aiohttp.ClientError, TimeoutError):
            return None

    async def stop(self, sig: int = signal.SIGTERM) -> int | None:
        if self.proc is None or self.proc.returncode is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(sig)
        try:
            await asyncio.wait_for(self.proc.wait(), 20)
        except TimeoutError:
            self.proc.kill()
            await self.proc.wait()
        self._log.close()
        return self.proc.returncode


async def documents(session, scrapers: list[Scraper]) -> dict[str, dict] | None:
    docs = await asyncio.gather(*(s.targets(session) for s in scrapers))
    if any(d is None for d in docs):
        return None
    return {s.sid: d for s, d in zip(scrapers, docs, strict=True)}


def steady(docs: dict[str, dict] | None, all_keys: set[str], plan: OverridesDoc | None = None) -> bool:
    """Every scraper sees the same ring of all of them; shares are disjoint and complete, and
    each scraper runs loops for exactly its share. With ``plan`` (the stored overrides, read
    from ZooKeeper): the plan was made for these scrapers and the shares are what it says."""
    if not docs:
        return False
    ids = sorted(docs)
    owned = [set(d["owned"]) for d in docs.values()]
    ok = (
        all(d["ring"]["members"] == ids for d in docs.values())
        and set().union(*owned) == all_keys
        and sum(len(o) for o in owned) == len(all_keys)
        and all({t["target"] for t in d["targets"]} == set(d["owned"]) for d in docs.values())
    )
    if ok and plan is not None:
        ring = ScraperRing(ids)
        ok = (list(plan.members) == ids
              and all(d["ring"]["overrides_version"] == plan.version and d["ring"]["plan_current"] for d in docs.values())
              and all(plan.owner(ring, k) == sid for sid, d in docs.items() for k in d["owned"]))
    return ok


async def stored_plan(registry: Registry) -> OverridesDoc:
    data, version = await asyncio.get_running_loop().run_in_executor(None, registry.read_overrides)
    return OverridesDoc.decode(data, version)


async def wait_steady(session, scrapers: list[Scraper], all_keys: set[str], registry: Registry, what: str,
                      timeout: float = 60, poll: float = 0.2, extra=None) -> tuple[dict[str, dict], OverridesDoc]:
    """Poll until ``steady`` with the stored plan; ``extra(docs)`` runs on every poll."""
    deadline = time.monotonic() + timeout
    while True:
        docs = await documents(session, scrapers)
        if extra is not None and docs:
            extra(docs)
        plan = await stored_plan(registry)
        if steady(docs, all_keys, plan):
            return docs, plan
        assert time.monotonic() < deadline, f"{what}: {docs and {k: len(v['owned']) for k, v in docs.items()}}"
        assert all(s.proc.returncode is None for s in scrapers), [s.log.read_text()[-2000:] for s in scrapers]
        await asyncio.sleep(poll)


async def test_three_scrapers_share_sixty_targets(zookeeper, zk_root, tmp_path):
    loop = asyncio.get_running_loop()
    targets = Targets()
    await targets.start(N_TARGETS)
    agents = await loop.run_in_executor(
        None, lambda: Registry(zookeeper.hosts, root=zk_root, session_timeout=SESSION_TIMEOUT_S).start(watch=False)
    )
    await loop.run_in_executor(
        None, agents.create_pool, "web", ScrapeSettings(interval_s=INTERVAL_S, timeout_s=0.5)
    )
    for address in targets.addresses:  # the test plays the hosts' agents: ephemeral registrations
        await loop.run_in_executor(None, agents.register_ephemeral, "web", address)
    # and one real `ringmon agent` process in its own pool
    await loop.run_in_executor(
        None, agents.create_pool, "hosts", ScrapeSettings(interval_s=INTERVAL_S, timeout_s=0.5)
    )
    agent_address = f"127.0.0.1:{free_port()}"
    agent_log = open(tmp_path / "agent.log", "wb")
    agent = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "cli.main", "agent", "--pool", "hosts", "--listen", agent_address,
        "--zookeeper", zookeeper.hosts, "--zookeeper-root", zk_root, "--session-timeout", f"{SESSION_TIMEOUT_S:g}",
        cwd=ROOT, stdout=agent_log, stderr=agent_log, env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    all_keys = {f"web/{a}" for a in targets.addresses} | {f"hosts/{agent_address}"}
    scrapers = [Scraper(f"s{i}", tmp_path, zookeeper.hosts, zk_root) for i in range(3)]
    session = aiohttp.ClientSession()
    try:
        for s in scrapers:
            await s.start()
        docs, plan = await wait_steady(session, scrapers, all_keys, agents, "no steady state")
        steady_at = time.time()
        before = {sid: set(d["owned"]) for sid, d in docs.items()}
        print(f"\nsteady state: shares {dict((k, len(v)) for k, v in before.items())}, {len(plan)} ring overrides")
        assert sum(d["recorder"] for d in docs.values()) == 1

        # -- steady state: each target scraped (twice, so that a second owner would show), by one scraper only
        t0 = time.time() + 0.5
        await async_wait_for(lambda: all(len(ts) >= 2 for ts in targets.since(t0).values()), timeout=60,
                             what="every target scraped twice in the steady state")
        window = targets.since(t0)
        agent_health = [t for d in docs.values() for t in d["targets"] if t["pool"] == "hosts"]
        assert len(agent_health) == 1 and agent_health[0]["address"] == agent_address
        assert duplicate_scrapes(window) == {}

        # -- SIGKILL one scraper: the others take its targets; no survivor target moves
        victim = scrapers.pop(1)
        victim_keys = before[victim.sid]
        killed_at = time.time()
        await victim.stop(signal.SIGKILL)

        def no_survivor_target_dropped(docs: dict[str, dict]) -> None:
            for sid, d in docs.items():
                assert before[sid] <= set(d["owned"]), f"a target of surviving scraper {sid} moved (interim)"

        docs, plan = await wait_steady(session, scrapers, all_keys, agents, "survivors did not take over",
                                       poll=0.1, extra=no_survivor_target_dropped)
        after = {sid: set(d["owned"]) for sid, d in docs.items()}
        for sid in after:
            assert before[sid] <= after[sid], f"a target of surviving scraper {sid} moved"
        assert set().union(*(after[sid] - before[sid] for sid in after)) == victim_keys
        victim_addresses = [k.split("/", 1)[1] for k in victim_keys if k.startswith("web/")]
        deadline = time.monotonic() + 60
        while not all(targets.since(killed_at)[a] for a in victim_addresses):
            assert time.monotonic() < deadline, "the killed scraper's targets were not scraped again"
            await asyncio.sleep(0.05)
        takeover = max(min(targets.since(killed_at)[a]) for a in victim_addresses) - killed_at
        print(f"SIGKILL: {len(victim_addresses)} targets scraped again by the survivors {takeover:.2f}s after the kill "
              f"(session timeout {SESSION_TIMEOUT_S:g}s + 2 intervals = {SESSION_TIMEOUT_S + 2 * INTERVAL_S:g}s)")
        assert sum(d["recorder"] for d in docs.values()) == 1

        # -- a scraper joins: only targets going to it move
        joiner = Scraper("s3", tmp_path, zookeeper.hosts, zk_root)
        await joiner.start()
        scrapers.append(joiner)
        docs, plan = await wait_steady(session, scrapers, all_keys, agents, "no steady state after the join")
        joined = {sid: set(d["owned"]) for sid, d in docs.items()}
        moved = {k for sid in after for k in after[sid] - joined[sid]}
        assert joined["s3"] <= moved and len(moved) / len(all_keys) <= 0.5
        print(f"join: {len(moved)}/{len(all_keys)} targets moved = {len(moved) / len(all_keys):.3f} (1/N = {1 / 3:.3f}; "
              f"{len(moved - joined['s3'])} not to the joiner), {len(plan)} ring overrides")

        # -- ZooKeeper away for OUTAGE_S: scraping goes on, registrations come back
        await asyncio.sleep(2 * INTERVAL_S)  # let the loops that moved settle
        await loop.run_in_executor(None, zookeeper.stop)
        stopped_at = time.time()
        try:
            await asyncio.sleep(OUTAGE_S)
            during = targets.since(stopped_at + 2 * INTERVAL_S)
            docs_during = await documents(session, scrapers)
        finally:
            await loop.run_in_executor(None, zookeeper.start)
        print(f"ZooKeeper stopped {OUTAGE_S:g}s (session timeout {SESSION_TIMEOUT_S:g}s): "
              f"min scrapes per target meanwhile {min(len(v) for v in during.values())}")
        assert all(during.values()), [a for a, ts in during.items() if not ts]
        assert duplicate_scrapes(during) == {}
        assert docs_during and not any(d["zookeeper_connected"] for d in docs_during.values())
        assert {sid: set(d["owned"]) for sid, d in docs_during.items()} == joined

        checker = await loop.run_in_executor(None, lambda: Registry(zookeeper.hosts, root=zk_root).start(watch=False))
        try:
            await async_wait_for(
                lambda: sorted(checker.scrapers()) == ["s0", "s2", "s3"]
                and sorted(m.address for m in checker.members("web") if m.ephemeral) == sorted(targets.addresses)
                and [(m.address, m.ephemeral) for m in checker.members("hosts")] == [(agent_address, True)],
                timeout=60, what="ephemeral scrapers and members back after the outage")
        finally:
            await loop.run_in_executor(None, checker.stop)
        deadline = time.monotonic() + 60
        while not (steady(docs := await documents(session, scrapers), all_keys, await stored_plan(agents))
                   and all(d["zookeeper_connected"] for d in docs.values())):
            assert time.monotonic() < deadline, "no steady state after the outage"
            await asyncio.sleep(0.2)
        assert {sid: set(d["owned"]) for sid, d in docs.items()} == joined
    finally:
        for s in scrapers:
            await s.stop()
        await session.close()
        await loop.run_in_executor(None, agents.stop)
        await targets.stop()
        if agent.returncode is None:
            agent.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(agent.wait(), 20)
            except TimeoutError:
                agent.kill()
                await agent.wait()
        agent_log.close()

    # the recorder(s) wrote the pool member counts; they say 60 running
    from storage.matchers import Matcher, MatchOp
    from storage.sqlite import SQLiteStorage

    found = {}
    for s in [*scrapers, victim]:
        store = await SQLiteStorage.open(s.db)
        try:
            data = await store.select([Matcher("__name__", MatchOp.EQ, "ringmon_pool_members")], 0, 2**62)
            found[s.sid] = {(d.series.get("pool"), d.series.get("status")): d for d in data}
        finally:
            await store.close()
    writers = [sid for sid, series in found.items() if series]
    assert writers, "nobody recorded ringmon_pool_members"
    # The recorded counts are what the registry held at each interval. While the registrations
    # came back after the outage, a scraper that was the recorder for a moment recorded fewer
    # (its last value stays so when the role moves on), so the counts are checked where they
    # are known: every interval between the steady state and the outage, and the latest one.
    recorded = {status: sorted((int(t), float(v), sid) for sid in writers
                               for t, v in zip(found[sid][("web", status)].timestamps,
                                               found[sid][("web", status)].values, strict=True))
                for status in ("ALIVE", "STOPPING")}
    calm = [(t, v, sid) for t, v, sid in recorded["ALIVE"] if steady_at * 1000 <= t < (stopped_at - INTERVAL_S) * 1000]
    assert calm and all(v == N_TARGETS for _, v, _ in calm), calm
    assert recorded["ALIVE"][-1][1] == N_TARGETS, recorded["ALIVE"][-5:]
    assert recorded["STOPPING"][-1][1] == 0, recorded["STOPPING"][-5:]
    # one writer per interval: two scrapers may overlap only around the two ring changes
    stamps = [t for t, _, _ in recorded["ALIVE"]]
    overlaps = len(stamps) - len(set(stamps))
    short = [f"{sid} {v:g} at outage{t / 1000 - stopped_at:+.0f}s" for t, v, sid in recorded["ALIVE"] if v != N_TARGETS]
    print(f"ringmon_pool_members: {len(set(stamps))} intervals recorded by {writers}, {overlaps} recorded twice; "
          f"fewer than {N_TARGETS} alive: {short}")
    assert overlaps <= 2
