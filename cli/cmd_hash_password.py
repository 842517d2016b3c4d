"""``ringmon hash-password``: the scrypt hash to put under ``web.users`` in the config."""

from __future__ import annotations

import argparse
import getpass
import sys

from cli.errors import UserError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "hash-password",
        help="print the hash of a password for web.users",
        description="Reads a password (prompt, or one line on standard input) and prints its scrypt hash.",
    )
    p.add_argument("--stdin", action="store_true", help="read the password from standard input")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from web.auth import hash_password

    password = sys.stdin.readline().rstrip("\n") if args.stdin else getpass.getpass("password: ")
    try:
        print(hash_password(password))
    except ValueError as exc:
        raise UserError(str(exc)) from None
    return 0
