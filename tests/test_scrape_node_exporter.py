"""Scrape a real node_exporter (Debian prometheus-node-exporter) into SQLite; every served series
is stored with the value served, compared against an independent parse (prometheus-client)."""

from __future__ import annotations

import asyncio
import math
import shutil
import socket
import subprocess

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from discovery.target import ScrapeSettings, Target
from scraper.lenient import format_om_float
from scraper.loop import ScrapeLoop
from storage.base import DirectWriter
from storage.matchers import Matcher, MatchOp
from storage.sqlite import SQLiteStorage

NODE_EXPORTER = shutil.which("prometheus-node-exporter")
pytestmark = pytest.mark.skipif(NODE_EXPORTER is None, reason="prometheus-node-exporter not installed")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def node_exporter(tmp_path):
    port = free_port()
    proc = subprocess.Popen(
        [NODE_EXPORTER, f"--web.listen-address=127.0.0.1:{port}",
         f"--collector.textfile.directory={tmp_path}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(100):
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                    break
            except OSError:
                if proc.poll() is not None:
                    pytest.fail(f"node_exporter exited with {proc.returncode}")
                subprocess.run(["sleep", "0.1"])
        else:
            pytest.fail("node_exporter did not start listening within 10s")
        yield f"127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


class RecordingLoop(ScrapeLoop):
    """Keeps the exact bytes each scrape fetched, for the independent comparison."""

    bodies: list[tuple[bytes, str]]

    async def fetch(self):
        got = await super().fetch()
        self.bodies.append(got)
        return got


def independent(body: bytes) -> dict[tuple, float]:
    out = {}
    for fam in text_string_to_metric_families(body.decode()):
        # Prometheus 3 writes a summary's quantile and a histogram's le in OpenMetrics form ("1.0")
        float_label = {"summary": "quantile", "histogram": "le"}.get(fam.type)
        for s in fam.samples:
            # a label with an empty value is the same as no label (Prometheus semantics)
            labels = {k: format_om_float(float(v)) if k == float_label else v for k, v in s.labels.items()}
            out[(s.name, tuple(sorted((k, v) for k, v in labels.items() if v != "")))] = s.value
    return out


def same(a: float, b: float) -> bool:
    return a == b or (math.isnan(a) and math.isnan(b))


async def test_node_exporter_series_stored_with_served_values(node_exporter, tmp_path):
    storage = await SQLiteStorage.open(tmp_path / "ringmon.db")
    try:
        target = Target("node", node_exporter, ScrapeSettings(interval_s=10, timeout_s=10))
        async with aiohttp.ClientSession() as session:
            loop = RecordingLoop(target, DirectWriter(storage), session)
            loop.bodies = []
            for _ in range(3):  # cold, then the cached paths (per line, then the layout plan)
                out = await loop.scrape_once()
                assert out is not None, loop.health.last_error
                await asyncio.sleep(0.2)
        for (body, fmt), scrape_ts in zip(loop.bodies, loop.scrape_times, strict=True):
            assert fmt == "text"
            served = independent(body)
            assert len(served) > 200
            ts_ms = int(scrape_ts * 1000)
            data = await storage.select([Matcher("job", MatchOp.EQ, "node")], ts_ms, ts_ms)
            stored = {}
            for sd in data:
                labels = dict(sd.series.labels)
                name = labels.pop("__name__")
                assert labels.pop("job") == "node" and labels.pop("instance") == node_exporter
                assert len(sd) == 1 and int(sd.timestamps[0]) == ts_ms
                stored[(name, tuple(sorted(labels.items())))] = float(sd.values[0])
            synthetic = {k: v for k, v in stored.items() if k[0].startswith("scrape_") or k[0] == "up"}
            for k in synthetic:
                del stored[k]
            assert stored.keys() == served.keys()
            bad = [k for k, v in served.items() if not same(v, stored[k])]
            assert not bad, bad[:5]
            assert synthetic[("up", ())] == 1.0
            assert synthetic[("scrape_samples_scraped", ())] == len(served)
    finally:
        await storage.close()
