"""Each twofa process a test starts on a database login of its own, as in a deployment.

The logins (``SERVICE_LOGINS``, one per group role of migration 0009) are made on the
test's server once and given a password, so they work over TCP too (testcontainers).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Mapping
from urllib.parse import unquote, urlsplit

import asyncpg

from shared.devtools.logins import SERVICE_LOGINS, ensure_service_logins
from shared.platform.key_holders import KEY_HOLDERS, without_foreign_keys
from shared.security.keys import SigningKeys
from tests.support.servers import with_database

__all__ = ["login_url", "process_env"]

PASSWORD = "twofa-test-login"


async def _ensure_logins(owner_url: str) -> None:
    await ensure_service_logins(owner_url)
    conn = await asyncpg.connect(owner_url)
    try:
        for login in SERVICE_LOGINS.values():
            await conn.execute(f"ALTER ROLE {login} PASSWORD '{PASSWORD}'")
    finally:
        await conn.close()


def login_url(owner_url: str, process: str) -> str:
    """The URL of ``process``'s login on the database of ``owner_url`` (made if missing)."""
    with concurrent.futures.ThreadPoolExecutor(1) as thread:  # callers may be in a loop
        thread.submit(asyncio.run, _ensure_logins(owner_url)).result()
    database = unquote(urlsplit(owner_url).path.lstrip("/"))
    return with_database(owner_url, database, SERVICE_LOGINS[process], PASSWORD)


def process_env(env: Mapping[str, str], process: str) -> dict[str, str]:
    """``env`` (``TWOFA_DATABASE_URL`` the test database's owner) as ``process`` gets it:
    its own login, no key it does not hold, the public token keys if it only verifies."""
    own = dict(env)
    signing = env.get("TWOFA_JWT_SIGNING_KEYS")
    verifies = process in KEY_HOLDERS["jwt_verify_keys"].holders
    if verifies and signing and "TWOFA_JWT_VERIFY_KEYS" not in env:
        own["TWOFA_JWT_VERIFY_KEYS"] = SigningKeys.from_config(signing, None).public_config()
    own = without_foreign_keys(own, process)
    own["TWOFA_DATABASE_URL"] = login_url(env["TWOFA_DATABASE_URL"], process)
    return own
