"""``twofa accounts …``: operators' account commands, through the same use cases as the API."""

from __future__ import annotations

import argparse
import getpass
import sys

from services.auth import handlers
from shared.config import Settings
from shared.core import Core
from shared.db import create_pool
from shared.http import Problem

__all__ = ["add_parser", "run"]


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    accounts = sub.add_parser("accounts", help="create accounts and grant or revoke roles")
    actions = accounts.add_subparsers(dest="action", required=True)
    create = actions.add_parser("create", help="create an account")
    create.add_argument("--username", required=True)
    create.add_argument("--email", required=True)
    create.add_argument(
        "--password-stdin", action="store_true", help="read the password from standard input"
    )
    create.add_argument("--role", action="append", default=[], choices=["support", "security"])
    for action in ("grant-role", "revoke-role"):
        parser = actions.add_parser(action, help=f"{action.split('-')[0]} a role")
        parser.add_argument("username")
        parser.add_argument("role", choices=["support", "security"])


async def run(settings: Settings, args: argparse.Namespace) -> int:
    pool = await create_pool(settings.require_database_url(), min_size=1, max_size=2)
    core = Core.build(settings, pool)
    ctx = handlers.Context(actor="operator:cli")
    try:
        if args.action == "create":
            password = _read_password(args.password_stdin)
            account_id = await handlers.register_account(
                core, ctx, username=args.username, email=args.email, password=password
            )
            for role in args.role:
                await handlers.set_role(core, ctx, username=args.username, role=role, granted=True)
            print(account_id)
        else:
            granted = args.action == "grant-role"
            await handlers.set_role(
                core, ctx, username=args.username, role=args.role, granted=granted
            )
            print(f"{args.action}: {args.role} for {args.username}")
    except Problem as problem:
        details = "; ".join(f"password {p}" for p in problem.extra.get("problems", []))
        print(f"twofa: {problem.title}" + (f": {details}" if details else ""), file=sys.stderr)
        return 1
    finally:
        await pool.close()
    return 0


def _read_password(from_stdin: bool) -> str:
    if from_stdin:
        return sys.stdin.readline().rstrip("\n")
    first = getpass.getpass("Password: ")
    if getpass.getpass("Again: ") != first:
        raise Problem(422, "password_mismatch", "The two passwords differ")
    return first
