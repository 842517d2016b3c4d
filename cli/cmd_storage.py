"""``ringmon storage init``: create (idempotently) the Cassandra keyspace and tables."""

from __future__ import annotations

import argparse
import logging

from cli.errors import UserError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("storage", help="manage the Cassandra store", description="Manage the Cassandra store.")
    ssub = p.add_subparsers(dest="storage_command", metavar="ACTION")
    init = ssub.add_parser(
        "init",
        help="create keyspace and tables (idempotent; records the schema version)",
        description="Create the Ringmon keyspace and tables in Cassandra if they are missing.",
    )
    init.add_argument("--hosts", default="127.0.0.1", help="comma-separated Cassandra contact points")
    init.add_argument("--port", type=int, default=9042, help="CQL native port")
    init.add_argument("--keyspace", default="ringmon")
    init.add_argument(
        "--replication",
        default="1",
        help="N (SimpleStrategy, replication factor N) or dc1:N,dc2:M (NetworkTopologyStrategy)",
    )
    init.add_argument(
        "--ttl",
        action="append",
        default=[],
        metavar="TABLE=SECONDS",
        help="override a table TTL, e.g. raw_recent=691200 (repeatable)",
    )
    init.set_defaults(func=run_init)
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])


def run_init(args: argparse.Namespace) -> int:
    from cassandra.cluster import Cluster, NoHostAvailable

    from storage import schema as sch

    try:
        replication = sch.parse_replication(args.replication)
        ttls = dict(sch.DEFAULT_TTLS_S)
        for item in args.ttl:
            key, sep, val = item.partition("=")
            if not sep or not val.strip().isdigit():
                raise ValueError(f"--ttl {item!r}: use TABLE=SECONDS")
            ttls[key.strip()] = int(val)
        spec = sch.SchemaSpec(keyspace=args.keyspace, replication=replication, ttls_s=ttls)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    hosts = [h.strip() for h in args.hosts.split(",") if h.strip()]
    # The driver logs a traceback for a refused connection; the one-line UserError says it all.
    logging.getLogger("cassandra.cluster").setLevel(logging.CRITICAL)
    cluster = Cluster(
        hosts, port=args.port, protocol_version=5, connect_timeout=10, control_connection_timeout=10
    )
    try:
        session = cluster.connect()
        created = sch.create_schema(session, spec)
    except NoHostAvailable as exc:
        raise UserError(f"cannot reach Cassandra at {args.hosts}:{args.port}: {exc}") from None
    finally:
        cluster.shutdown()
    if created:
        print(f"keyspace {spec.keyspace}: created {len(created)} tables ({', '.join(created)})")
    else:
        print(f"keyspace {spec.keyspace}: schema already up to date")
    print(f"schema version {sch.SCHEMA_VERSION}")
    return 0
