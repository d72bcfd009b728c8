"""The ``twofa`` command as an operator runs it: a process of its own, on a test's database."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys

from tests.support.logins import process_env

# Whose login each command runs as (services/cli.py, process_of); migrate is the owner's.
LOGINS = {"accounts": "auth", "audit": "audit", "relay": "relay"}


def twofa(database_url: str, *args: str, stdin: str = "") -> str:
    """Run ``twofa ARGS`` against ``database_url`` (the owner's) as the command's own
    login; its standard output (it must succeed)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TWOFA_")}
    env |= {"TWOFA_DATABASE_URL": database_url, "TWOFA_LOG_LEVEL": "WARNING"}
    if args and args[0] in LOGINS:
        env = process_env(env, LOGINS[args[0]])
    done = subprocess.run(
        [sys.executable, "-m", "services.cli", *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


async def twofa_async(database_url: str, *args: str, stdin: str = "") -> str:
    """``twofa`` from a test's event loop, which keeps running meanwhile."""
    return await asyncio.to_thread(twofa, database_url, *args, stdin=stdin)
