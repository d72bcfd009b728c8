"""Test data written through the domain, as ``shared.devtools.seeding`` does for the tests.

Accounts are registered by appending their events with one precomputed password hash
(hashing one per account would cost minutes of argon2), two-factor authentication is
turned on by appending its events, and mfa challenges are opened the way a correct
password opens them, with tokens signed by the auth service's own keys.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TypeVar

from services.auth.usecases.deps import AuthDeps
from shared.devtools.seeding import enabling_events
from shared.domain import events as ev
from shared.domain.account.state import AccountState
from shared.domain.base import DomainEvent
from shared.domain.events import UsernameClaimed
from shared.domain.twofactor.state import TwoFactorState
from shared.eventstore.envelope import NewEvent
from shared.eventstore.repository import Loaded
from shared.eventstore.streams import account_stream, twofactor_stream, username_stream
from shared.security import recovery, totp

__all__ = [
    "OtpAccount",
    "bounded",
    "login_events",
    "register_accounts",
    "twofactor_accounts",
]

T = TypeVar("T")
PASSWORD = "bench-correct-horse-battery-staple"  # noqa: S105 — the bench accounts' own


async def bounded(jobs: Iterable[Callable[[], Awaitable[T]]], limit: int = 16) -> list[T]:
    """Run the jobs at most ``limit`` at a time; results in job order."""
    gate = asyncio.Semaphore(limit)

    async def one(job: Callable[[], Awaitable[T]]) -> T:
        async with gate:
            return await job()

    return list(await asyncio.gather(*(one(job) for job in jobs)))


def _registered(username: str, password_hash: str) -> ev.AccountRegistered:
    return ev.AccountRegistered(
        username=username, email=f"{username}@example.org", password_hash=password_hash
    )


async def register_accounts(core: AuthDeps, count: int, password_hash: str) -> list[str]:
    """``count`` accounts that log in with ``PASSWORD``; their usernames."""
    tag = uuid.uuid4().hex[:6]
    usernames = [f"bench-{tag}-{i}" for i in range(count)]

    def job(username: str) -> Callable[[], Awaitable[None]]:
        async def register() -> None:
            account_id = str(uuid.uuid4())
            claim = UsernameClaimed(account_id=account_id)
            async with core.pool.acquire() as conn, conn.transaction():
                await core.store.append(
                    username_stream(username), [NewEvent(claim)], 0, connection=conn
                )
                await core.accounts.save(
                    account_stream(account_id),
                    Loaded(AccountState(), 0),
                    [NewEvent(_registered(username, password_hash))],
                    connection=conn,
                )

        return register

    await bounded(job(u) for u in usernames)
    return usernames


@dataclass(slots=True)
class OtpAccount:
    """An account with 2FA on and open mfa challenges, each usable once."""

    account_id: str
    secret: str
    tokens: list[str]
    last_step: int


async def twofactor_accounts(
    core: AuthDeps, count: int, challenges: int, password_hash: str
) -> list[OtpAccount]:
    """``count`` accounts with 2FA on (last accepted time-step: two ago) and
    ``challenges`` open mfa challenges each, with their mfa tokens."""
    now = datetime.now(UTC)
    ttl = timedelta(seconds=core.settings.mfa_token_ttl_seconds)
    enabled_step = totp.time_step(now) - 2
    code_hashes = tuple(core.recovery.hash(code) for code in recovery.new_codes())
    accounts: list[OtpAccount] = []

    def job(index: int) -> Callable[[], Awaitable[None]]:
        async def seed() -> None:
            account_id, secret = str(uuid.uuid4()), totp.new_secret()
            stream = twofactor_stream(account_id)
            second = enabling_events(core, account_id, secret, now, code_hashes)
            ids = [uuid.uuid4().hex for _ in range(challenges)]
            first: list[DomainEvent] = [_registered(f"otp-{account_id[:13]}", password_hash)]
            first += [
                ev.MfaChallengeOpened(challenge_id=c, issued_at=now, expires_at=now + ttl)
                for c in ids
            ]
            await core.twofactors.save(
                stream, Loaded(TwoFactorState(), 0), [NewEvent(e) for e in second]
            )
            await core.accounts.save(
                account_stream(account_id),
                Loaded(AccountState(), 0),
                [NewEvent(e) for e in first],
            )
            tokens = [
                core.issuer.issue_mfa(
                    subject=account_id,
                    challenge_id=c,
                    audience=core.settings.jwt_audience,
                    now=now,
                )
                for c in ids
            ]
            accounts.append(OtpAccount(account_id, secret, tokens, enabled_step))

        return seed

    await bounded(job(i) for i in range(count))
    return accounts


def login_events(n: int) -> Sequence[DomainEvent]:
    """Public account events in the mix a login flow writes (for the audit pipeline)."""
    now = datetime.now(UTC)
    kind = n % 4
    if kind == 0:
        return [
            ev.LoginFailed(reason="password", consecutive_failures=1, trusted_device=False, at=now)
        ]
    if kind == 1:
        challenge = uuid.uuid4().hex
        return [
            ev.MfaChallengeOpened(
                challenge_id=challenge, issued_at=now, expires_at=now + timedelta(minutes=5)
            )
        ]
    if kind == 2:
        return [
            ev.LoginSucceeded(
                session_id=uuid.uuid4().hex,
                amr=("pwd", "otp", "mfa"),
                acr="aal2",
                challenge_id=uuid.uuid4().hex,
            )
        ]
    return [ev.EmailChanged(email=f"u{n}@example.org", previous_email=f"u{n - 1}@example.org")]
