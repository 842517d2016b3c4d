"""The host agent's HTTP server: ``/metrics`` for the scraper, plus an optional synthetic app load.

Each ``AgentServer`` owns its ``CollectorRegistry`` (host metrics, agent info, the HTTP
request metrics of its ``/app/*`` handler and any extra collectors), so several agents can
run in one process as distinct targets. With ``synthetic_load_rps > 0`` a bounded
background task sends GETs to the agent's own ``/app/...`` on 127.0.0.1 with a mix of
200, 404 and 500 answers, so requests-per-second and latency panels have real data.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import html
import json
import logging
import random
from collections.abc import Iterable

from aiohttp import ClientSession, ClientTimeout, web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Gauge, generate_latest
from prometheus_client.registry import Collector

from agent.host_collector import HostCollector
from agent.instrumentation import HttpMetrics, instrument_middleware

log = logging.getLogger("ringmon.agent")

AGENT_VERSION = "0.1.0"

# Synthetic traffic: (path, weight). "missing" answers 404 and "error" 500.
SYNTHETIC_PATHS = (("/app/items", 60), ("/app/users", 30), ("/app/missing", 7), ("/app/error", 3))
MAX_SYNTHETIC_RPS = 2000.0
MAX_IN_FLIGHT = 32  # synthetic requests outstanding at once; beyond that ticks are dropped
MAX_SYNTHETIC_LATENCY_S = 0.25


class AgentStartError(OSError):
    """The agent could not listen; the message is one line naming the address and the reason."""


class AgentServer:
    """One host agent: an aiohttp server with ``/metrics``, ``/`` and ``/app/*``.

    ``port=0`` picks a free port; read ``.port`` / ``.address`` after ``start()``.
    Set test values through ``.registry`` (e.g. ``Counter(..., registry=agent.registry)``)
    or pass ``extra_collectors``.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        pool: str = "",
        synthetic_load_rps: float = 0.0,
        registry: CollectorRegistry | None = None,
        extra_collectors: Iterable[Collector] = (),
        host_metrics: bool = True,
    ) -> None:
        if synthetic_load_rps < 0 or synthetic_load_rps > MAX_SYNTHETIC_RPS:
            raise ValueError(
                f"synthetic_load_rps: expected 0..{MAX_SYNTHETIC_RPS:g}, got {synthetic_load_rps!r}"
            )
        self.host = host
        self._requested_port = port
        self._port: int | None = None
        self.pool = pool
        self.synthetic_load_rps = float(synthetic_load_rps)
        self.registry = registry if registry is not None else CollectorRegistry()
        if host_metrics:
            self.registry.register(HostCollector())
        info = Gauge(
            "ringmon_agent_info", "Ringmon agent build and pool.", ["pool", "version"], registry=self.registry
        )
        info.labels(pool, AGENT_VERSION).set(1)
        for collector in extra_collectors:
            self.registry.register(collector)
        self.http_metrics = HttpMetrics.create(self.registry)
        self._runner: web.AppRunner | None = None
        self._load_task: asyncio.Task | None = None
        self._rng = random.Random()
        self.app = self._make_app()

    # -- lifecycle -------------------------------------------------------------------------------

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("AgentServer.port is known only after start()")
        return self._port

    @property
    def address(self) -> str:
        """``host:port`` as a scraper reaches it."""
        return f"{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        return self._runner is not None

    async def start(self) -> None:
        if self._runner is not None:
            return
        runner = web.AppRunner(self.app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, self.host, self._requested_port)
        try:
            await site.start()
        except OSError as exc:
            await runner.cleanup()
            reason = "address already in use" if exc.errno == errno.EADDRINUSE else (exc.strerror or str(exc))
            raise AgentStartError(
                exc.errno or 0, f"agent: cannot listen on {self.host}:{self._requested_port}: {reason}"
            ) from None
        server = getattr(site, "_server", None)
        sockets = getattr(server, "sockets", None) or []
        self._port = sockets[0].getsockname()[1] if sockets else self._requested_port
        self._runner = runner
        if self.synthetic_load_rps > 0:
            self._load_task = asyncio.create_task(self._synthetic_load(), name=f"agent-load-{self.address}")
        log.info("agent listening", extra={"address": self.address, "pool": self.pool})

    async def stop(self) -> None:
        task, self._load_task = self._load_task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def __aenter__(self) -> AgentServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- HTTP ------------------------------------------------------------------------------------

    def _make_app(self) -> web.Application:
        middleware = instrument_middleware(
            self.registry, should_instrument=lambda r: r.path.startswith("/app/"), metrics=self.http_metrics
        )
        app = web.Application(middlewares=[middleware])
        app.router.add_get("/", self._index)
        app.router.add_get("/metrics", self._metrics)
        app.router.add_route("*", "/app/{tail:.*}", self._app_handler)
        return app

    async def _index(self, request: web.Request) -> web.Response:
        pool = html.escape(self.pool or "(none)")
        body = (
            "<!doctype html><html><head><meta charset='utf-8'><title>Ringmon agent</title></head>"
            f"<body><h1>Ringmon agent</h1><p>Pool: {pool}</p>"
            "<p><a href='/metrics'>Metrics</a></p></body></html>"
        )
        return web.Response(
            text=body, content_type="text/html", headers={"X-Content-Type-Options": "nosniff"}
        )

    async def _metrics(self, request: web.Request) -> web.Response:
        # Collection reads /proc through psutil: keep it off the event loop.
        payload = await asyncio.get_running_loop().run_in_executor(None, generate_latest, self.registry)
        response = web.Response(body=payload, headers={"Content-Type": CONTENT_TYPE_LATEST})
        if "gzip" in request.headers.get("Accept-Encoding", ""):
            response.enable_compression(web.ContentCoding.gzip)
        return response

    async def _app_handler(self, request: web.Request) -> web.Response:
        """A stand-in application endpoint: a little latency, then 200, 404 or 500 by path."""
        tail = request.match_info["tail"]
        await asyncio.sleep(min(self._rng.expovariate(200.0), MAX_SYNTHETIC_LATENCY_S))
        if tail.startswith("missing"):
            raise web.HTTPNotFound(text="not found\n")
        if tail.startswith("error"):
            raise web.HTTPInternalServerError(text="synthetic failure\n")
        return web.Response(text=json.dumps({"path": tail, "ok": True}), content_type="application/json")

    # -- synthetic load --------------------------------------------------------------------------

    async def _synthetic_load(self) -> None:
        rps = self.synthetic_load_rps
        loop = asyncio.get_running_loop()
        target_host = "127.0.0.1" if self.host in ("", "0.0.0.0", "::", "localhost") else self.host
        base = f"http://{target_host}:{self.port}"
        paths = [p for p, _ in SYNTHETIC_PATHS]
        weights = [w for _, w in SYNTHETIC_PATHS]
        slots = asyncio.Semaphore(MAX_IN_FLIGHT)
        in_flight: set[asyncio.Task] = set()
        tick = max(1.0 / rps, 0.01)

        async def one(session: ClientSession, path: str) -> None:
            try:
                async with session.get(base + path) as resp:
                    await resp.read()
            except Exception as exc:  # refused, timed out, reset: the load must keep going
                log.debug("synthetic request failed", extra={"path": path, "error": repr(exc)})
            finally:
                slots.release()

        async with ClientSession(timeout=ClientTimeout(total=2.0), trust_env=False) as session:
            started = loop.time()
            scheduled = 0
            try:
                while True:
                    await asyncio.sleep(tick)
                    due = int((loop.time() - started) * rps) - scheduled
                    if due > rps:  # fell more than a second behind (suspended loop): skip ahead
                        scheduled += due - 1
                        due = 1
                    for _ in range(max(due, 0)):
                        scheduled += 1
                        if slots.locked():
                            continue  # saturated: drop this request rather than queue without bound
                        await slots.acquire()
                        path = self._rng.choices(paths, weights)[0]
                        t = asyncio.create_task(one(session, path))
                        in_flight.add(t)
                        t.add_done_callback(in_flight.discard)
            finally:
                for t in list(in_flight):
                    t.cancel()
                if in_flight:
                    await asyncio.gather(*in_flight, return_exceptions=True)
