"""Wrong passwords for usernames that do not exist, throttled like those that do.

An existing account answers 429 after ``TWOFA_PASSWORD_THROTTLE_AFTER`` wrong passwords;
if unknown names never did, the throttle would tell an attacker which names exist. So
their failures are counted too, with the same policy, in ``login_throttle``, keyed by an
HMAC of the name under a server key (a password typed into the username field must not
be stored). A name silent for ``FORGET_AFTER`` is forgotten, so the table cannot grow
without bound from names tried once.
"""

from __future__ import annotations

import hashlib
import hmac
from datetime import datetime, timedelta

import asyncpg

from shared.domain.account.state import Throttle

__all__ = ["FORGET_AFTER", "UnknownNames"]

FORGET_AFTER = timedelta(days=30)


class UnknownNames:
    def __init__(self, pool: asyncpg.Pool, key: bytes) -> None:
        self.pool = pool
        self.key = key

    def _name_key(self, stream_name: str) -> bytes:
        message = b"twofa-unknown-login:" + stream_name.encode()
        return hmac.new(self.key, message, hashlib.sha256).digest()

    async def throttle(self, stream_name: str) -> Throttle:
        """The failure count of a name that has no account (``stream_name`` normalised)."""
        row = await self.pool.fetchrow(
            "SELECT failures, last_failure_at FROM login_throttle WHERE name_key = $1",
            self._name_key(stream_name),
        )
        return Throttle() if row is None else Throttle(row["failures"], row["last_failure_at"])

    async def fail(self, stream_name: str, now: datetime) -> None:
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute(
                """INSERT INTO login_throttle (name_key, failures, last_failure_at)
                   VALUES ($1, 1, $2)
                   ON CONFLICT (name_key) DO UPDATE
                   SET failures = login_throttle.failures + 1,
                       last_failure_at = excluded.last_failure_at""",
                self._name_key(stream_name),
                now,
            )
            await conn.execute(
                "DELETE FROM login_throttle WHERE last_failure_at < $1", now - FORGET_AFTER
            )
