"""The wiring both HTTP services share: one ``Core`` holds the real dependencies.

Built once per process in the FastAPI lifespan (never at import), from ``Settings`` and
a pool; tests build it the same way against their own database and clock.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TypeVar

import asyncpg

from shared.aggregate import Repository
from shared.config import Settings
from shared.crypto import KeyRing
from shared.domain.account import AccountFold, AccountState, PasswordPolicy
from shared.domain.events import REGISTRY
from shared.domain.twofactor import Policy, TwoFactorFold, TwoFactorState
from shared.eventstore import ConcurrencyError, EventStore
from shared.passwords import PasswordHasher
from shared.recovery import RecoveryCodeHasher
from shared.tokens import TokenIssuer, TokenVerifier

__all__ = ["Clock", "Core", "account_stream", "retry_on_conflict", "twofactor_stream", "utc_now"]

T = TypeVar("T")
Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)


def account_stream(account_id: str) -> str:
    return f"account-{account_id}"


def twofactor_stream(account_id: str) -> str:
    return f"twofactor-{account_id}"


@dataclass
class Core:
    """Everything a use case may need; each field is replaceable in tests."""

    settings: Settings
    pool: asyncpg.Pool
    store: EventStore
    accounts: Repository[AccountState]
    twofactors: Repository[TwoFactorState]
    keyring: KeyRing
    passwords: PasswordHasher
    recovery: RecoveryCodeHasher
    issuer: TokenIssuer
    verifier: TokenVerifier
    policy: Policy
    password_policy: PasswordPolicy
    clock: Clock = field(default=utc_now)

    @classmethod
    def build(cls, settings: Settings, pool: asyncpg.Pool, clock: Clock = utc_now) -> Core:
        store = EventStore(pool, REGISTRY)
        keys = settings.signing_keys()
        return cls(
            settings=settings,
            pool=pool,
            store=store,
            accounts=Repository(store, AccountFold(), snapshot_every=settings.snapshot_every),
            twofactors=Repository(store, TwoFactorFold(), snapshot_every=settings.snapshot_every),
            keyring=KeyRing(settings.key_ring(), str(settings.encryption_active_key_id)),
            passwords=PasswordHasher(
                time_cost=settings.argon2_time_cost,
                memory_cost=settings.argon2_memory_kib,
                parallelism=settings.argon2_parallelism,
            ),
            recovery=RecoveryCodeHasher(settings.server_key("recovery_code_key")),
            issuer=TokenIssuer(
                keys,
                issuer=settings.jwt_issuer,
                access_ttl=timedelta(seconds=settings.access_token_ttl_seconds),
                mfa_ttl=timedelta(seconds=settings.mfa_token_ttl_seconds),
            ),
            verifier=TokenVerifier(
                keys.public_keys(), issuer=settings.jwt_issuer, audience=settings.jwt_audience
            ),
            policy=Policy(
                max_failures=settings.otp_max_failures,
                lock_base=timedelta(minutes=settings.otp_lock_minutes),
                lock_cap=timedelta(hours=settings.otp_lock_max_hours),
                enrolment_ttl=timedelta(seconds=settings.enrolment_ttl_seconds),
                reset_cooling_off=timedelta(seconds=settings.reset_cooling_off_seconds),
            ),
            password_policy=PasswordPolicy(
                threshold=settings.password_throttle_after,
                max_delay=timedelta(seconds=settings.password_max_delay_seconds),
            ),
            clock=clock,
        )


async def retry_on_conflict(decide_and_save: Callable[[], Awaitable[T]], attempts: int = 200) -> T:
    """Run a load-decide-append step again whenever another writer got there first.

    Each attempt reloads the stream, so the decision is always made on the latest state.
    """
    for attempt in range(attempts):
        try:
            return await decide_and_save()
        except ConcurrencyError:
            if attempt == attempts - 1:
                raise
            await asyncio.sleep(random.uniform(0, 0.002 * min(attempt + 1, 10)))
    raise AssertionError("unreachable")
