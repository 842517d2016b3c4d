"""`ringmon register / deregister / pools / ring` against the real ZooKeeper."""

from __future__ import annotations

import json

import pytest

from cli.main import main
from discovery.balance import OverridesDoc
from discovery.registry import Registry
from discovery.ring import ScraperRing
from services.zookeeper.zkserver import free_port

pytestmark = pytest.mark.zookeeper


@pytest.fixture
def ringmon(zookeeper, zk_root, capsys):
    def run(*argv: str) -> tuple[int, str, str]:
        code = main([*argv, "--zookeeper", zookeeper.hosts, "--zookeeper-root", zk_root])
        out = capsys.readouterr()
        return code, out.out, out.err

    return run


def test_register_pools_and_hosts_then_list_them(ringmon, zookeeper, zk_root):
    code, out, _ = ringmon("register", "pool", "web", "--interval", "15s", "--timeout", "3s",
                           "--label", "team=edge", "--label", "dc=eu1")
    assert code == 0 and "pool web created: interval 15s, timeout 3s, http, /metrics, labels dc=eu1,team=edge" in out
    assert ringmon("register", "pool", "db", "--path", "/stats", "--scheme", "https")[0] == 0
    for port in (9100, 9101, 9102):
        code, out, _ = ringmon("register", "host", "web", f"10.0.0.1:{port}")
        assert code == 0 and f"host 10.0.0.1:{port} registered in pool web" in out
    code, out, _ = ringmon("register", "host", "web", "10.0.0.1:9100")
    assert code == 0 and "already registered" in out

    # an agent (ephemeral) that is stopping does not count as running
    agent = Registry(zookeeper.hosts, root=zk_root).start(watch=False)
    try:
        agent.register_ephemeral("web", "10.0.0.2:9100").set_status("STOPPING")
        code, out, _ = ringmon("pools")
        assert code == 0
        lines = out.splitlines()
        assert lines[0].split() == ["POOL", "RUNNING", "STOPPING", "INTERVAL", "TIMEOUT", "SCHEME", "PATH", "LABELS"]
        assert lines[1].split() == ["db", "0", "0", "10s", "5s", "https", "/stats", "-"]
        assert lines[2].split() == ["web", "3", "1", "15s", "3s", "http", "/metrics", "dc=eu1,team=edge"]
        code, out, _ = ringmon("pools", "--json")
        rows = {r["pool"]: r for r in json.loads(out)}
        assert rows["web"]["running"] == 3 and rows["web"]["stopping"] == 1 and rows["web"]["interval"] == 15.0
    finally:
        agent.stop()

    code, out, _ = ringmon("register", "pool", "web", "--update", "--interval", "30s")
    assert code == 0 and "pool web updated: interval 30s, timeout 3s" in out and "team=edge" in out

    code, _, err = ringmon("deregister", "pool", "web")
    assert code == 2 and "still has 3 member(s)" in err
    code, out, _ = ringmon("deregister", "host", "web", "10.0.0.1:9101")
    assert code == 0 and "removed from pool web" in out
    code, _, err = ringmon("deregister", "host", "web", "10.0.0.1:9101")
    assert code == 2 and "is not registered in pool web" in err
    code, out, _ = ringmon("deregister", "pool", "web", "--force")
    assert code == 0 and "with 2 member(s)" in out
    code, out, _ = ringmon("pools", "--json")
    assert [r["pool"] for r in json.loads(out)] == ["db"]


def test_bad_input_gets_one_clear_line(ringmon, capsys):
    code, _, err = ringmon("register", "host", "nosuch", "10.0.0.1:9100")
    assert code == 2
    assert err.strip() == (
        "ringmon register: unknown pool 'nosuch' (no pools are registered); "
        "create it with `ringmon register pool nosuch`"
    )
    assert ringmon("register", "pool", "web")[0] == 0
    code, _, err = ringmon("register", "pool", "web")
    assert code == 2 and "pool 'web' already exists (use --update" in err
    code, _, err = ringmon("register", "pool", "w2", "--interval", "5s", "--timeout", "10s")
    assert code == 2 and "timeout: 10s is longer than the interval 5s" in err and "Traceback" not in err
    for argv, expected in [
        (("register", "pool", "bad/name"), "invalid pool name 'bad/name'"),
        (("register", "host", "web", "10.0.0.1"), "invalid address '10.0.0.1'"),
        (("register", "pool", "w3", "--interval", "soon"), "expected a duration"),
        (("register", "pool", "w3", "--label", "x"), "expected NAME=VALUE"),
        (("register", "pool", "w3", "--label", "__x=1"), "invalid label name '__x'"),
    ]:
        with pytest.raises(SystemExit) as info:
            ringmon(*argv)
        assert info.value.code == 2
        assert expected in capsys.readouterr().err


def test_unreachable_zookeeper_is_a_user_error(capsys):
    code = main(["pools", "--zookeeper", f"127.0.0.1:{free_port()}", "--connect-timeout", "1"])
    err = capsys.readouterr().err
    assert code == 2 and "ringmon pools: cannot reach ZooKeeper at 127.0.0.1:" in err


def test_ring_shows_each_scraper_and_its_share(ringmon, zookeeper, zk_root):
    assert ringmon("register", "pool", "web")[0] == 0
    for i in range(30):
        assert ringmon("register", "host", "web", f"10.0.1.{i}:9100")[0] == 0
    code, out, _ = ringmon("ring")
    assert code == 0 and "no scrapers running; 30 target(s) unowned" in out
    regs = [Registry(zookeeper.hosts, root=zk_root).start(watch=False) for _ in range(3)]
    try:
        for i, reg in enumerate(regs):
            reg.join_scrapers(f"scraper-{i}", {"listen": f"127.0.0.1:{9500 + i}"})
        code, out, _ = ringmon("ring", "--json")
        doc = json.loads(out)
        assert doc["targets"] == 30
        assert [s["scraper"] for s in doc["scrapers"]] == ["scraper-0", "scraper-1", "scraper-2"]
        assert sum(s["targets"] for s in doc["scrapers"]) == 30
        assert doc["scrapers"][1]["listen"] == "127.0.0.1:9501"
        code, out, _ = ringmon("ring")
        assert "30 targets on 3 scrapers" in out and out.splitlines()[0].split()[:3] == ["SCRAPER", "LISTEN", "TARGETS"]
        assert "no overrides stored yet" in out

        # a stored plan moves one target away from its ring owner: counted where it is scraped
        ring = ScraperRing(["scraper-0", "scraper-1", "scraper-2"])
        key = "web/10.0.1.0:9100"
        home = ring.owner(key)
        other = next(s for s in ring.members if s != home)
        plan = OverridesDoc(ring.members, {key: other}, vnodes=ring.vnodes, targets=30)
        regs[0].write_overrides(plan.encode(), -1)
        doc = json.loads(ringmon("ring", "--json")[1])
        rows = {r["scraper"]: r for r in doc["scrapers"]}
        assert doc["overrides"] == 1 and doc["plan_current"] and doc["overrides_version"] == 0
        assert rows[other]["targets"] == rows[other]["ring_targets"] + 1 and rows[other]["overrides_in"] == 1
        assert rows[home]["targets"] == rows[home]["ring_targets"] - 1 and rows[home]["overrides_out"] == 1
        assert sum(r["targets"] for r in rows.values()) == 30
        assert "1 ring overrides" in ringmon("ring")[1]
    finally:
        for reg in regs:
            reg.stop()
