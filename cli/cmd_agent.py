"""``ringmon agent``: serve this host's metrics and register it in a pool (ephemeral znode).

    ringmon agent --pool web --listen 0.0.0.0:9100 --advertise 10.0.0.5:9100 --zookeeper zk1:2181

The agent serves ``/metrics`` at once and registers ``<root>/pools/<pool>/members/member_<n>``
(Finagle serverset JSON, status ALIVE) as an ephemeral node: if the host dies, its session
expires and it leaves the pool by itself. While ZooKeeper is unreachable it keeps serving
and keeps trying; after a new session the node is created again. On SIGTERM or SIGINT it
marks itself STOPPING (scrapers stop scraping it), waits ``--stop-grace`` seconds, removes
its node and exits.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import socket

from cli.cmd_register import add_zookeeper_args
from cli.errors import UserError
from discovery.registry import (
    STOPPING,
    MemberRegistration,
    Registry,
    UnknownPoolError,
    ZooKeeperUnavailableError,
)
from discovery.validation import check_address, check_pool_name, split_host_port

log = logging.getLogger("ringmon.agent")

WILDCARD_HOSTS = ("", "0.0.0.0", "::", "[::]")


def advertised_address(listen_host: str, port: int, advertise: str | None) -> str:
    """The HOST:PORT scrapers should use: ``--advertise``, or the listen address, or this host's name."""
    if advertise:
        return check_address(advertise)
    host = listen_host
    if host in WILDCARD_HOSTS:
        host = socket.getfqdn() or socket.gethostname()
    return check_address(f"[{host}]:{port}" if ":" in host else f"{host}:{port}")


def parse_listen(listen: str) -> tuple[str, int]:
    """HOST:PORT to listen on; port 0 picks a free port, an empty host means all interfaces."""
    host, sep, port_text = listen.rpartition(":")
    if not sep or not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise UserError(f"--listen: expected HOST:PORT (port 0-65535), got {listen!r}")
    host = host.strip("[]") or "0.0.0.0"
    if host not in WILDCARD_HOSTS:
        try:
            split_host_port(f"[{host}]:1" if ":" in host else f"{host}:1")
        except ValueError:
            raise UserError(f"--listen: {host!r} is not a valid host name or address") from None
    return host, int(port_text)


async def run_agent(args: argparse.Namespace) -> int:
    from agent.server import AgentServer, AgentStartError

    host, port = parse_listen(args.listen)
    server = AgentServer(host, port, pool=args.pool, synthetic_load_rps=args.synthetic_load_rps)
    try:
        await server.start()
    except AgentStartError as exc:
        raise UserError(str(exc)) from None
    address = advertised_address(host, server.port, args.advertise)

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    registry: Registry | None = None
    registration: MemberRegistration | None = None
    try:
        # register, retrying while ZooKeeper is unreachable (the metrics are served meanwhile)
        while not stop.is_set():
            candidate = Registry(args.zookeeper, root=args.zookeeper_root, session_timeout=args.session_timeout,
                                 connect_timeout=args.connect_timeout)
            try:
                await loop.run_in_executor(None, candidate.start, False)
                registration = await loop.run_in_executor(None, candidate.register_ephemeral, args.pool, address)
                registry = candidate
                break
            except UnknownPoolError as exc:
                await loop.run_in_executor(None, candidate.stop)
                raise UserError(str(exc)) from None
            except ZooKeeperUnavailableError as exc:
                log.warning("cannot register yet, retrying", extra={"error": str(exc), "pool": args.pool})
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), args.retry_interval)
        if registration is not None:
            log.info("agent registered", extra={"pool": args.pool, "address": address, "path": registration.path})
        await stop.wait()
        log.info("agent stopping", extra={"pool": args.pool, "address": address})
        if registration is not None:
            try:
                await loop.run_in_executor(None, registration.set_status, STOPPING)
                await asyncio.sleep(args.stop_grace)
                await loop.run_in_executor(None, registration.remove)
            except Exception as exc:  # noqa: BLE001 - the session close below removes the node anyway
                log.warning("could not deregister cleanly", extra={"error": str(exc)})
    finally:
        if registry is not None:
            await loop.run_in_executor(None, registry.stop)
        await server.stop()
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("agent", help="serve host metrics and register in a pool (ephemeral)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)

    def pool_name(text: str) -> str:
        try:
            return check_pool_name(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    p.add_argument("--pool", required=True, type=pool_name, help="the pool to join (must exist)")
    p.add_argument("--listen", default="0.0.0.0:9100", metavar="HOST:PORT", help="where /metrics is served")
    p.add_argument("--advertise", metavar="HOST:PORT", help="address registered for scrapers (default: listen address, "
                   "or this host's name when listening on all interfaces)")
    p.add_argument("--stop-grace", type=float, default=1.0, metavar="SECONDS",
                   help="time between marking STOPPING and leaving the pool (default: %(default)s)")
    p.add_argument("--session-timeout", type=float, default=10.0, metavar="SECONDS",
                   help="ZooKeeper session timeout (default: %(default)s)")
    p.add_argument("--retry-interval", type=float, default=5.0, metavar="SECONDS",
                   help="wait between registration attempts while ZooKeeper is unreachable")
    p.add_argument("--synthetic-load-rps", type=float, default=0.0, help="synthetic /app requests per second")
    add_zookeeper_args(p)
    p.set_defaults(func=lambda args: asyncio.run(run_agent(args)))
