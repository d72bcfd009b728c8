"""The wiring both HTTP services share: one ``Core`` holds the real dependencies.

Built once per process in the FastAPI lifespan (never at import), from ``Settings`` and
a pool; tests build it the same way against their own database and clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import cached_property
from typing import Any, TypeVar

import asyncpg

from shared.aggregate import Repository
from shared.config import Settings
from shared.crypto import KeyRing
from shared.domain.account import AccountFold, AccountState, PasswordPolicy
from shared.domain.events import REGISTRY
from shared.domain.twofactor import Policy, TwoFactorFold, TwoFactorState
from shared.eventstore import ConcurrencyError, EventStore
from shared.notify import Notifier
from shared.passwords import PasswordHasher
from shared.recovery import RecoveryCodeHasher
from shared.tokens import SigningKeys, TokenIssuer, TokenVerifier

__all__ = [
    "Clock",
    "Core",
    "account_stream",
    "background",
    "retry_on_conflict",
    "twofactor_stream",
    "utc_now",
]

log = logging.getLogger(__name__)

T = TypeVar("T")
Clock = Callable[[], datetime]


def _never_revoked(session_id: str) -> bool:
    return False  # the auth service checks sessions against the account stream instead


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
    verifier: TokenVerifier
    policy: Policy
    password_policy: PasswordPolicy
    clock: Clock = field(default=utc_now)
    signing: SigningKeys | None = None

    @cached_property
    def issuer(self) -> TokenIssuer:
        """Signs tokens: only in the auth service, which holds the private keys."""
        if self.signing is None:
            raise RuntimeError("this process has no signing keys")
        return TokenIssuer(
            self.signing,
            issuer=self.settings.jwt_issuer,
            access_ttl=timedelta(seconds=self.settings.access_token_ttl_seconds),
            mfa_ttl=timedelta(seconds=self.settings.mfa_token_ttl_seconds),
        )

    @classmethod
    def build(
        cls,
        settings: Settings,
        pool: asyncpg.Pool,
        clock: Clock = utc_now,
        *,
        is_revoked: Callable[[str], bool] | None = None,
    ) -> Core:
        store = EventStore(pool, REGISTRY, notifier=Notifier(pool))
        signing = settings.signing_keys() if settings.jwt_signing_keys is not None else None
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
            verifier=TokenVerifier(
                settings.verify_keys(),
                issuer=settings.jwt_issuer,
                audience=settings.jwt_audience,
                is_revoked=is_revoked or _never_revoked,
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
            signing=signing,
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


Runner = Callable[[asyncio.Event], Coroutine[Any, Any, None]]


@contextlib.asynccontextmanager
async def background(*runners: Runner) -> AsyncIterator[None]:
    """Run ``runners`` (consumers, feeds) beside the app; stop them when the block ends."""
    stop = asyncio.Event()
    tasks: list[asyncio.Task[None]] = [asyncio.create_task(runner(stop)) for runner in runners]
    try:
        yield
    finally:
        stop.set()
        if tasks:
            done, pending = await asyncio.wait(tasks, timeout=15)
            for task in pending:
                task.cancel()
            for task in done:
                if not task.cancelled() and task.exception() is not None:
                    log.error("background task failed: %r", task.exception())
