"""Fuzzing the YAML loaders of the Ringmon config (cli.config) and static discovery (discovery.static).

Properties:
- generated valid configs and static target files, dumped to YAML, load to exactly the
  values generated (durations in either spelling, scrape limits, agents, pools, hosts);
- odd values at every known key (huge and negative numbers, NaN/Inf, nested lists and maps,
  odd strings) are rejected only with ``ConfigError`` / ``ValueError`` naming the key;
- byte-mutated shipped configs (configs/*.yaml, configs/cluster/*.yaml, the static targets
  example) raise only ``ConfigError`` (config) or ``ValueError`` (static targets) whose
  message starts with the file's path; every call returns within a hard time bound.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import yaml
from fuzz_harness import fuzz_settings, mutated, one_byte_corruption, shipped_files, time_bound
from hypothesis import given
from hypothesis import strategies as st

from cli.config import ConfigError, config_from_dict, load_config
from discovery.static import load_static_targets, targets_from_dict

WORK = Path(tempfile.mkdtemp(prefix="ringmon-fuzz-config-"))

DURATIONS = [("10s", 10.0), ("1m30s", 90.0), ("250ms", 0.25), ("2h", 7200.0), ("1d", 86400.0)]
# text YAML gives back as written (U+0085/U+2028/U+2029 are YAML line breaks, folded on load)
yaml_text = st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\x85\u2028\u2029"), max_size=6)
durations = st.sampled_from(DURATIONS) | st.integers(1, 10**6).map(lambda n: (n, float(n)))

# ---------------------------------------------------------------------------- generated valid files


@st.composite
def configs(draw: st.DrawFn) -> dict:
    doc: dict = {}
    if draw(st.booleans()):
        backend = draw(st.sampled_from(["sqlite", "cassandra"]))
        doc["storage"] = {"backend": backend, "sqlite": {"path": draw(st.text(max_size=10))},
                          "cassandra": {"hosts": draw(st.lists(st.text(max_size=8), max_size=3)),
                                        "port": draw(st.integers(1, 65535))}}
    if draw(st.booleans()):
        doc["discovery"] = {"static_file": draw(st.text(max_size=10)), "refresh_interval": draw(durations)[0]}
    if draw(st.booleans()):
        interval = draw(durations)
        doc["scrape"] = {"interval": interval[0], "timeout": interval[0],
                         "sample_limit": draw(st.integers(0, 10**9)), "honor_labels": draw(st.booleans())}
    if draw(st.booleans()):
        doc["agents"] = draw(st.lists(st.fixed_dictionaries(
            {"pool": st.text(min_size=1, max_size=8), "count": st.integers(0, 50)}), max_size=3))
    if draw(st.booleans()):
        doc["rules"] = {"files": draw(st.lists(st.text(max_size=10), max_size=3)),
                        "evaluation_interval": draw(durations)[0]}
    if draw(st.booleans()):
        doc["data_dir"] = draw(st.text(max_size=10))
    return doc


def parse_seconds(v: object) -> float:
    return dict(DURATIONS)[v] if isinstance(v, str) else float(v)  # type: ignore[arg-type]


def write(data: bytes | str, name: str) -> Path:
    path = WORK / name
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return path


@fuzz_settings(150)
@given(configs(), st.booleans())
def test_generated_configs_load_as_generated(doc, flow):
    path = write(yaml.safe_dump(doc, default_flow_style=flow, allow_unicode=True), "gen.yaml")
    with time_bound("load_config(generated)"):
        cfg = load_config(path)
    if "storage" in doc:
        assert cfg.storage.backend == doc["storage"]["backend"]
        # an empty path means the default, under data_dir
        want = doc["storage"]["sqlite"]["path"] or str(Path(doc.get("data_dir", "data")) / "ringmon.db")
        assert cfg.storage.sqlite.path == want
        assert cfg.storage.cassandra.hosts == doc["storage"]["cassandra"]["hosts"]
    if "discovery" in doc:
        assert cfg.discovery.refresh_interval == parse_seconds(doc["discovery"]["refresh_interval"])
    if "scrape" in doc:
        assert cfg.scrape.interval == parse_seconds(doc["scrape"]["interval"])
        default, _ = cfg.scrape.engine_configs()
        assert default.sample_limit == doc["scrape"]["sample_limit"]
        assert default.honor_labels == doc["scrape"]["honor_labels"]
    assert [(a.pool, a.count) for a in cfg.agents] == [(a["pool"], a["count"]) for a in doc.get("agents", [])]
    if "rules" in doc:
        assert cfg.rules.files == doc["rules"]["files"]
    assert cfg.data_dir == doc.get("data_dir", "data")


pool_names = st.builds(lambda a, b: a + b, st.sampled_from("aZ09"), st.text(st.sampled_from("aZ09_.-"), max_size=10))
label_keys = st.builds(lambda a, b: a + b, st.sampled_from("abz"), st.text(st.sampled_from("az09_"), max_size=6))
hosts = st.tuples(
    st.sampled_from(["127.0.0.1", "10.0.0.5", "db-1.example.com", "h", "[::1]", "[fe80::1]"]), st.integers(1, 65535)
).map(lambda hp: f"{hp[0]}:{hp[1]}")


@st.composite
def static_docs(draw: st.DrawFn) -> dict:
    pools = {}
    for name in draw(st.lists(pool_names, max_size=3, unique=True)):
        interval = draw(durations)
        body: dict = {"interval": interval[0], "timeout": interval[0],
                      "hosts": draw(st.lists(hosts, max_size=4, unique=True))}
        if draw(st.booleans()):
            body["labels"] = draw(st.dictionaries(label_keys.filter(lambda k: k not in ("job", "instance")),
                                            yaml_text, max_size=2))
        if draw(st.booleans()):
            body["path"] = "/" + draw(st.text(st.sampled_from("abc/_-."), max_size=8))
        pools[name] = body
    return {"pools": pools}


@fuzz_settings(80)
@given(static_docs())
def test_generated_static_targets_load_as_generated(doc):
    path = write(yaml.safe_dump(doc, allow_unicode=True, sort_keys=False), "targets.yaml")
    with time_bound("load_static_targets(generated)"):
        targets = load_static_targets(path)
    want = [(pool, h) for pool, body in doc["pools"].items() for h in body["hosts"]]
    assert [(t.pool, t.address) for t in targets] == want
    for t in targets:
        body = doc["pools"][t.pool]
        assert t.settings.interval_s == parse_seconds(body["interval"])
        assert dict(t.settings.labels) == body.get("labels", {})
        assert t.settings.path == body.get("path", "/metrics")


# ---------------------------------------------------------------------------- odd values at known keys

odd_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.integers(min_value=10**300, max_value=10**320),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=8),
    st.sampled_from(["9" * 400 + "s", "9" * 5000, "1e999", "-1s", "0", "nan", "inf", "10MB", "9" * 400 + "MB",
                     "(", "[a-", "0.0.0.0:0", "[::1]:99999", "", " ", "\x00", "${x}", "*" * 3]),
)
odd_values = st.recursive(odd_scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
    st.text(max_size=6) | st.integers(), inner, max_size=3), max_leaves=8)

CONFIG_KEYS = {
    "storage": ["backend", "sqlite", "cassandra"],
    "discovery": ["static_file", "zookeeper", "refresh_interval"],
    "scrape": ["interval", "timeout", "sample_limit", "label_limit", "body_size_limit", "honor_labels",
               "metric_relabel_configs", "relabel_configs", "pools"],
    "scraper": ["id", "listen", "vnodes", "zookeeper_root"],
    "web": ["listen", "users", "dashboards_dirs"],
    "rules": ["files", "evaluation_interval"],
}


@st.composite
def odd_configs(draw: st.DrawFn) -> dict:
    doc: dict = {}
    for section in draw(st.lists(st.sampled_from(sorted(CONFIG_KEYS) + ["agents", "data_dir"]), max_size=3)):
        if section in CONFIG_KEYS:
            doc[section] = {k: draw(odd_values) for k in draw(st.lists(st.sampled_from(CONFIG_KEYS[section]),
                                                                         min_size=1, max_size=3))}
        else:
            doc[section] = draw(odd_values)
    return doc


@fuzz_settings(200)
@given(odd_configs())
def test_odd_config_values_fail_only_with_config_error(doc):
    with time_bound("config_from_dict(odd)"):
        try:
            config_from_dict(doc, "odd.yaml")
        except ConfigError as exc:
            assert str(exc).startswith("odd.yaml: "), str(exc)


@st.composite
def odd_static_docs(draw: st.DrawFn) -> dict:
    pools: dict = {}
    for name in draw(st.lists(pool_names | odd_scalars.filter(lambda v: isinstance(v, str | int)), max_size=2)):
        keys = draw(st.lists(st.sampled_from(["interval", "timeout", "path", "scheme", "labels", "hosts"]),
                             max_size=4))
        pools[name] = {k: draw(odd_values) for k in keys} if draw(st.integers(0, 5)) else draw(odd_values)
    return {"pools": pools} if draw(st.integers(0, 5)) else draw(odd_values)


@fuzz_settings(200)
@given(odd_static_docs())
def test_odd_static_values_fail_only_with_value_error(doc):
    with time_bound("targets_from_dict(odd)"):
        try:
            targets_from_dict(doc, "odd.yaml")
        except ValueError as exc:
            assert str(exc).startswith("odd.yaml: "), str(exc)


# ---------------------------------------------------------------------------- mutated shipped files

CONFIG_SEEDS = [p.read_bytes() for p in shipped_files("configs/*.yaml", "configs/cluster/ringmon*.yaml")
                if p.name != "targets.example.yaml" and b"groups:" not in p.read_bytes()
                and not p.name.startswith("alerting")]
STATIC_SEEDS = [p.read_bytes() for p in shipped_files("configs/targets*.yaml", "configs/cluster/targets*.yaml")]


def check_config_bytes(data: bytes) -> None:
    path = write(data, "ringmon.yaml")
    with time_bound("load_config(mutated)"):
        try:
            load_config(path)
        except ConfigError as exc:
            assert str(exc).startswith(f"{path}:"), str(exc)


def check_static_bytes(data: bytes) -> None:
    path = write(data, "targets.yaml")
    with time_bound("load_static_targets(mutated)"):
        try:
            load_static_targets(path)
        except ValueError as exc:
            assert str(exc).startswith(f"{path}:"), str(exc)


@fuzz_settings(200)
@given(st.sampled_from(CONFIG_SEEDS or [b"data_dir: data\n"]), st.data())
def test_mutated_shipped_configs_fail_only_with_config_error(seed, data):
    check_config_bytes(data.draw(one_byte_corruption(seed), label="one byte"))
    check_config_bytes(data.draw(mutated(seed), label="mutated"))


@fuzz_settings(200)
@given(st.sampled_from(STATIC_SEEDS or [b"pools: {}\n"]), st.data())
def test_mutated_static_targets_fail_only_with_value_error(seed, data):
    check_static_bytes(data.draw(one_byte_corruption(seed), label="one byte"))
    check_static_bytes(data.draw(mutated(seed), label="mutated"))


def test_pathological_config_files():
    for data in (b"x: 2001-13-45\n", b"data_dir: !!int abc\n", b"a: " + b"[" * 1200 + b"]" * 1200 + b"\n",
                 b"\xff\xfe\x00", b"scrape:\n  interval: " + b"9" * 400 + b"\n",
                 b"scrape:\n  interval: " + b"9" * 400 + b"s\n", b"\x00data_dir: x\n",
                 b"scrape:\n  body_size_limit: " + b"9" * 400 + b"MB\n", b'data_dir: "\\U00110000"\n',
                 b'data_dir: "\\UFFFFFFFF"\n', b'data_dir: !!int ""\n'):
        check_config_bytes(data)
    for data in (b"pools:\n  a:\n    interval: 2001-13-45\n", b"pools: " + b"[" * 1200 + b"]" * 1200 + b"\n",
                 b"\xff\xfe\x00", b"pools:\n  a:\n    interval: " + b"9" * 400 + b"\n",
                 b"pools:\n  a:\n    interval: " + b"9" * 400 + b"s\n", b"pools:\n  a:\n    timeout: .nan\n",
                 b"pools:\n  a:\n    hosts: ['h:" + b"9" * 5000 + b"']\n", b'pools: "\\U00110000"\n'):
        check_static_bytes(data)
