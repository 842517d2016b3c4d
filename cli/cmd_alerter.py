"""``ringmon alerter``: rule evaluation and notification as one process."""

from __future__ import annotations

import argparse
import asyncio
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from alerting.notifier.config import NotifierConfig
    from alerting.service import AlerterSettings
    from cli.config import RingmonConfig
    from storage.base import SampleWriter, Storage


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("alerter", help="evaluate alert and recording rules and send notifications",
                       description="Run the rule evaluator and the notifier (email, phone, PagerDuty, webhook, "
                                   "Alertmanager). Reloads on rule/config file change, SIGHUP and POST /-/reload. "
                                   "Its HTTP API takes calls with the token of alerter.api_token_file "
                                   "(Authorization: Bearer ...; made on first start next to state_db).")
    p.add_argument("--config", help="Ringmon YAML config (storage, rules.files, discovery.zookeeper)")
    p.add_argument("--alerting", default="configs/alerting.yaml",
                   help="alerting config: the alerter: section, route, receivers, inhibit_rules")
    p.add_argument("--sqlite", metavar="PATH", help="use this SQLite storage file (overrides --config storage)")
    p.add_argument("--listen", help="override alerter.listen (HOST:PORT)")
    p.add_argument("--id", help="override alerter.id (its name among several alerters)")
    p.add_argument("--state-db", help="override alerter.state_db (alert state, silences, notification log)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from alerting.service import AlerterConfigError, AlerterSettings, load_alerting_file
    from cli.errors import UserError

    defaults = AlerterSettings()
    ring_cfg = None
    if args.config:
        from pathlib import Path

        from cli.config import load_config
        from cli.wiring import listen_url

        ring_cfg = load_config(args.config)
        defaults.rule_files = list(ring_cfg.rules.files)
        defaults.state_db = str(Path(ring_cfg.data_dir) / "alerting.db")
        defaults.external_url = listen_url(ring_cfg.web.listen)  # the web UI of this config
        defaults.evaluation_interval_ms = int(float(ring_cfg.rules.evaluation_interval) * 1000)
        if ring_cfg.discovery.zookeeper is not None:
            defaults.zookeeper_hosts = ring_cfg.discovery.zookeeper.hosts
    try:
        settings, notifier_cfg = load_alerting_file(args.alerting, defaults)
    except AlerterConfigError as exc:
        raise UserError(str(exc)) from None
    if args.listen:
        settings.listen = args.listen
    if args.id:
        settings.id = args.id
    if args.state_db:
        settings.state_db = args.state_db
    if not args.sqlite and ring_cfg is None:
        raise UserError("give --config (for its storage section) or --sqlite PATH")
    asyncio.run(_main(args, settings, notifier_cfg, ring_cfg))
    return 0


async def _main(
    args: argparse.Namespace, settings: AlerterSettings, notifier_cfg: NotifierConfig, ring_cfg: RingmonConfig | None
) -> None:
    from prometheus_client import REGISTRY

    from alerting.service import AlerterConfigError, AlerterService
    from cli.errors import UserError
    from cli.wiring import make_storage, make_writer, watch_process

    storage: Storage
    writer: SampleWriter
    if args.sqlite:
        from storage.base import DirectWriter
        from storage.sqlite import SQLiteStorage

        storage = await SQLiteStorage.open(args.sqlite)
        writer = DirectWriter(storage)
    else:
        assert ring_cfg is not None  # checked by the caller
        storage = await make_storage(ring_cfg.storage)
        writer = await make_writer(ring_cfg.storage, storage)
    svc = AlerterService(settings, notifier_cfg, storage, writer, alerting_config_path=args.alerting)
    watchdog = None
    try:
        try:
            await svc.start()
        except AlerterConfigError as exc:
            raise UserError(str(exc)) from None
        watchdog = watch_process(REGISTRY)  # the alerter's /metrics serves the default registry
        print(f"ringmon alerter: listening on {settings.listen.rpartition(':')[0] or '127.0.0.1'}:{svc.port}", flush=True)
        await svc.run_forever()
    finally:
        if watchdog is not None:
            watchdog.stop()
        await svc.stop()
        await storage.close()
