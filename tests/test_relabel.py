"""relabel_configs / metric_relabel_configs: every action, anchoring, templates, validation."""

from __future__ import annotations

import hashlib

import pytest

from bench.scrape import run_cache
from discovery.target import ScrapeSettings, Target
from scraper.config import ScrapeConfig
from scraper.fastpath import ScrapeCache
from scraper.relabel import RelabelConfig, parse_relabel_configs, relabel
from scraper.targetlabels import resolve_target


def rl(labels: dict, *cfgs: dict):
    return relabel(dict(labels), parse_relabel_configs(list(cfgs), "test"))


BASE = {"__name__": "http_requests_total", "method": "GET", "code": "200", "path": "/api/v1"}


def test_replace_with_groups_named_groups_and_anchoring():
    out = rl(BASE, {"source_labels": ["method", "code"], "regex": "(G.*);(2)(.*)", "target_label": "cls",
                    "replacement": "${1}_$2xx"})
    # "$2xx" is the group named "2xx" (absent) as in Go: expands to ""
    assert out["cls"] == "GET_"
    out = rl(BASE, {"source_labels": ["method"], "regex": "(?P<m>G..)", "target_label": "m2", "replacement": "$m!"})
    assert out["m2"] == "GET!"
    # anchored: "ET" does not match "GET"
    out = rl(BASE, {"source_labels": ["method"], "regex": "ET", "target_label": "x", "replacement": "y"})
    assert "x" not in out
    # empty result deletes the target label
    out = rl(BASE, {"source_labels": ["nope"], "regex": "", "target_label": "code", "replacement": ""})
    assert "code" not in out
    # target label from a template
    out = rl(BASE, {"source_labels": ["method"], "regex": "(.*)", "target_label": "l_$1", "replacement": "v"})
    assert out["l_GET"] == "v"


def test_keep_and_drop():
    assert rl(BASE, {"action": "keep", "source_labels": ["code"], "regex": "2.."}) is not None
    assert rl(BASE, {"action": "keep", "source_labels": ["code"], "regex": "5.."}) is None
    assert rl(BASE, {"action": "keep", "source_labels": ["code"], "regex": "0"}) is None  # anchored
    assert rl(BASE, {"action": "drop", "source_labels": ["__name__"], "regex": "http_.*"}) is None
    assert rl(BASE, {"action": "drop", "source_labels": ["__name__"], "regex": "http"}) is not None


def test_keepequal_dropequal():
    labels = {**BASE, "a": "x", "b": "x", "c": "y"}
    assert rl(labels, {"action": "keepequal", "source_labels": ["a"], "target_label": "b"}) is not None
    assert rl(labels, {"action": "keepequal", "source_labels": ["a"], "target_label": "c"}) is None
    assert rl(labels, {"action": "dropequal", "source_labels": ["a"], "target_label": "b"}) is None
    assert rl(labels, {"action": "dropequal", "source_labels": ["a"], "target_label": "c"}) is not None


def test_hashmod_matches_prometheus_definition():
    out = rl(BASE, {"action": "hashmod", "source_labels": ["path"], "modulus": 7, "target_label": "shard"})
    digest = hashlib.md5(b"/api/v1").digest()
    assert out["shard"] == str(int.from_bytes(digest[8:], "big") % 7)


def test_labelmap_labeldrop_labelkeep():
    labels = {**BASE, "__meta_pool_zone": "east", "__meta_pool_rack": "r1"}
    out = rl(labels, {"action": "labelmap", "regex": "__meta_pool_(.+)", "replacement": "pool_$1"})
    assert out["pool_zone"] == "east" and out["pool_rack"] == "r1" and out["__meta_pool_zone"] == "east"
    out = rl(BASE, {"action": "labeldrop", "regex": "code|path"})
    assert set(out) == {"__name__", "method"}
    out = rl(BASE, {"action": "labelkeep", "regex": "__name__|code"})
    assert set(out) == {"__name__", "code"}
    out = rl(BASE, {"action": "labeldrop", "regex": "cod"})  # anchored: keeps "code"
    assert "code" in out


def test_lowercase_uppercase():
    assert rl(BASE, {"action": "lowercase", "source_labels": ["method"], "target_label": "m"})["m"] == "get"
    assert rl(BASE, {"action": "uppercase", "source_labels": ["path"], "target_label": "p"})["p"] == "/API/V1"


@pytest.mark.parametrize(
    "cfg,msg",
    [
        ({"action": "bogus"}, "unknown action"),
        ({"regex": "("}, "regex"),
        ({"source_labels": "a"}, "source_labels: expected list of strings"),
        ({"action": "hashmod", "target_label": "x"}, "modulus"),
        ({"action": "replace", "source_labels": ["a"]}, "needs target_label"),
        ({"modulus": "3"}, "modulus: expected integer"),
        ({"sauce_labels": ["a"]}, "sauce_labels: unknown key"),
    ],
)
def test_invalid_configs_name_the_key(cfg, msg):
    with pytest.raises(ValueError, match=msg) as exc:
        parse_relabel_configs([cfg], "pools.web.metric_relabel_configs")
    assert str(exc.value).startswith("pools.web.metric_relabel_configs[0]")


def test_scrape_config_validation():
    with pytest.raises(ValueError, match=r"scrape\.sample_limit: expected a non-negative integer"):
        ScrapeConfig.from_dict({"sample_limit": "10"})
    with pytest.raises(ValueError, match=r"scrape\.honor_labels: expected a boolean"):
        ScrapeConfig.from_dict({"honor_labels": "yes"})
    with pytest.raises(ValueError, match=r"scrape\.sampel_limit: unknown key"):
        ScrapeConfig.from_dict({"sampel_limit": 1})
    cfg = ScrapeConfig.from_dict({"body_size_limit": "10MB", "sample_limit": 5, "interval": 10,
                                  "metric_relabel_configs": [{"action": "drop", "source_labels": ["x"]}]})
    assert cfg.body_size_limit == 10_000_000 and cfg.sample_limit == 5
    assert cfg.metric_relabel_configs[0] == RelabelConfig(action="drop", source_labels=("x",))


def test_target_relabel_configs_change_address_labels_and_drop():
    t = Target("web", "10.0.0.1:9100", ScrapeSettings(labels=(("zone", "a"),)))
    cfg = ScrapeConfig.from_dict({"relabel_configs": [
        {"source_labels": ["__address__"], "regex": "(.*):9100", "target_label": "__address__",
         "replacement": "127.0.0.1:9200"},
        {"source_labels": ["__meta_ringmon_pool"], "target_label": "team", "replacement": "t-$1"},
        {"target_label": "__param_module", "replacement": "cpu"},
    ]})
    res = resolve_target(t, cfg)
    assert res.url == "http://127.0.0.1:9200/metrics?module=cpu"
    assert res.labels == {"job": "web", "zone": "a", "team": "t-web", "instance": "127.0.0.1:9200"}
    drop = ScrapeConfig.from_dict({"relabel_configs": [{"action": "drop", "source_labels": ["zone"], "regex": "a"}]})
    assert resolve_target(t, drop) is None


def test_metric_relabel_in_scrape_and_honor_labels():
    body = b'up_like{job="theirs",instance="x",keep="1"} 1\ndropme 2\nother{keep="1"} 3\n'
    target = {"job": "web", "instance": "h:1"}
    cfg = ScrapeConfig.from_dict({"metric_relabel_configs": [
        {"action": "drop", "source_labels": ["__name__"], "regex": "dropme"},
        {"action": "labeldrop", "regex": "keep"},
    ]})
    out = run_cache(ScrapeCache(target, cfg), body)
    got = [dict(s.labels) for s in out.series]
    assert got == [
        {"__name__": "up_like", "job": "web", "instance": "h:1", "exported_job": "theirs", "exported_instance": "x"},
        {"__name__": "other", "job": "web", "instance": "h:1"},
    ]
    assert out.samples_scraped == 3
    honored = run_cache(ScrapeCache(target, ScrapeConfig(honor_labels=True)), body)
    assert dict(honored.series[0].labels)["job"] == "theirs"
    assert dict(honored.series[1].labels)["job"] == "web"


def test_honor_timestamps():
    body = b"a 1 1000\nb 2\n"
    out = run_cache(ScrapeCache({}), body)
    assert out.explicit_ts == [(0, 1000)]
    out = run_cache(ScrapeCache({}, ScrapeConfig(honor_timestamps=False)), body)
    assert out.explicit_ts == []


def test_scrape_section_defaults_and_pool_overrides():
    from scraper.config import scrape_configs_from_dict

    default, pools = scrape_configs_from_dict({
        "interval": "10s", "sample_limit": 1000, "body_size_limit": "1MiB",
        "pools": {"node": {"sample_limit": 50, "honor_labels": True}, "web": None},
    })
    assert default.sample_limit == 1000 and default.body_size_limit == 2**20
    assert pools["node"].sample_limit == 50 and pools["node"].honor_labels
    assert pools["node"].body_size_limit == 2**20 and pools["web"] == default
    with pytest.raises(ValueError, match=r"scrape\.pools\.node\.label_limit: expected a non-negative integer"):
        scrape_configs_from_dict({"pools": {"node": {"label_limit": -1}}})
