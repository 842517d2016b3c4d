"""The one ``ringmon`` command: finds every ``cli/cmd_*.py`` module and mounts its subcommands.

A command module exposes ``register(subparsers)``, which adds its parsers and sets
``func`` (a callable taking the parsed ``argparse.Namespace`` and returning an exit code).
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys

import cli
from cli.errors import UserError
from cli.logs import setup_logging
from cli.malloc_tuning import tune_malloc
from common.entrypoint import exit_status


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ringmon",
        description="Ringmon: metrics monitoring and alerting for fleets of servers.",
    )
    parser.add_argument("--log-level", default="info", help="debug, info, warning or error")
    parser.add_argument("--log-format", default="text", choices=["text", "json"], help="log line format")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for mod in sorted(pkgutil.iter_modules(cli.__path__), key=lambda m: m.name):
        if mod.name.startswith("cmd_"):
            importlib.import_module(f"cli.{mod.name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    setup_logging(args.log_level, args.log_format)
    if getattr(args, "malloc_tuning", True):  # ringmon scraper trims instead (cli/malloc_tuning.py)
        tune_malloc()
    return exit_status(lambda: int(args.func(args) or 0), UserError, f"ringmon {args.command}")


if __name__ == "__main__":
    sys.exit(main())
