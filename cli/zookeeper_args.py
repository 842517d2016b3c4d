"""The ZooKeeper address of the commands that read a config (scraper, web, status): their
``--zookeeper``/``--zookeeper-root`` flags and the one order they are resolved in."""

from __future__ import annotations

import argparse
import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cli.config import RingmonConfig


def add_zookeeper_override_args(p: argparse.ArgumentParser) -> None:
    """``--zookeeper`` and ``--zookeeper-root`` of the commands that read a config
    (scraper, web, status), resolved by ``zookeeper_address``."""
    p.add_argument("--zookeeper", metavar="HOSTS", help="overrides discovery.zookeeper.hosts")
    p.add_argument("--zookeeper-root", metavar="PATH",
                   help="overrides discovery.zookeeper.root (without either: $RINGMON_ZOOKEEPER_ROOT or /ringmon)")


def zookeeper_address(cfg: RingmonConfig | None, hosts: str | None, root: str | None) -> tuple[str, str]:
    """The ZooKeeper hosts ('' when none is set) and root a command uses: the flag, else the
    config's ``discovery.zookeeper``, else ``$RINGMON_ZOOKEEPER`` / ``$RINGMON_ZOOKEEPER_ROOT``,
    else (root) ``/ringmon``."""
    zk = cfg.discovery.zookeeper if cfg is not None else None
    return (hosts or (zk.hosts if zk else None) or os.environ.get("RINGMON_ZOOKEEPER") or "",
            root or (zk.root if zk else None) or os.environ.get("RINGMON_ZOOKEEPER_ROOT", "/ringmon"))
