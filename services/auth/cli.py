"""``twofa accounts …``: operators' account commands, through the same use cases as the API."""

from __future__ import annotations

import argparse
import getpass
import sys

from services.auth.main import build_deps
from services.auth.usecases.account import register_account, set_role
from shared.app.context import Context
from shared.app.errors import AppError, PasswordMismatch, WeakPassword
from shared.domain.errors import DomainError
from shared.platform.config import Settings
from shared.platform.db import create_pool

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
    deps = build_deps(settings, pool)
    ctx = Context(actor="operator:cli")
    try:
        if args.action == "create":
            password = _read_password(args.password_stdin)
            account_id = await register_account(
                deps, ctx, username=args.username, email=args.email, password=password
            )
            for role in args.role:
                await set_role(deps, ctx, username=args.username, role=role, granted=True)
            print(account_id)
        else:
            granted = args.action == "grant-role"
            await set_role(deps, ctx, username=args.username, role=args.role, granted=granted)
            print(f"{args.action}: {args.role} for {args.username}")
    except (AppError, DomainError) as refusal:
        print(f"twofa: {refusal}{_details(refusal)}", file=sys.stderr)
        return 1
    finally:
        await pool.close()
    return 0


def _details(refusal: Exception) -> str:
    if isinstance(refusal, WeakPassword) and refusal.problems:
        return ": " + "; ".join(f"password {p}" for p in refusal.problems)
    return ""


def _read_password(from_stdin: bool) -> str:
    if from_stdin:
        return sys.stdin.readline().rstrip("\n")
    first = getpass.getpass("Password: ")
    if getpass.getpass("Again: ") != first:
        raise PasswordMismatch()
    return first
