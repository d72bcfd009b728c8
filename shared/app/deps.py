"""What the use cases of both account services need, built once per process.

Built in the FastAPI lifespan (never at import), from ``Settings`` and a pool; tests
build it the same way against their own database and clock. What only one service uses
(auth's accounts, password hasher and token issuer) is wired in that service's
``main.py``; the audit service needs none of this.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta

import asyncpg

from shared.domain.twofactor.policy import Policy
from shared.domain.twofactor.state import TwoFactorState
from shared.eventstore.notify import Notifier
from shared.eventstore.registry import REGISTRY
from shared.eventstore.repository import Repository
from shared.eventstore.snapshots import TwoFactorFold
from shared.eventstore.store import EventStore
from shared.platform.clock import Clock, utc_now
from shared.platform.config import Settings
from shared.security.crypto import KeyRing
from shared.security.recovery import RecoveryCodeHasher
from shared.security.tokens import TokenVerifier

__all__ = ["Deps", "second_factor_policy", "token_verifier"]


@dataclass
class Deps:
    """The store, the second factor's stream and keys, the token verifier, the clock."""

    settings: Settings
    pool: asyncpg.Pool
    store: EventStore
    twofactors: Repository[TwoFactorState]
    keyring: KeyRing
    recovery: RecoveryCodeHasher
    verifier: TokenVerifier
    policy: Policy
    clock: Clock = field(default=utc_now)

    @classmethod
    def build(
        cls,
        settings: Settings,
        pool: asyncpg.Pool,
        clock: Clock = utc_now,
        *,
        is_revoked: Callable[[str], bool] | None = None,
    ) -> Deps:
        """The real dependencies; ``is_revoked`` is the offline verifier's revocation list."""
        store = EventStore(pool, REGISTRY, notifier=Notifier(pool))
        return cls(
            settings=settings,
            pool=pool,
            store=store,
            twofactors=Repository(
                store,
                TwoFactorFold(),
                settings.snapshot_key_ring(),
                snapshot_every=settings.snapshot_every,
            ),
            keyring=KeyRing(settings.key_ring(), str(settings.encryption_active_key_id)),
            recovery=RecoveryCodeHasher(settings.server_key("recovery_code_key")),
            verifier=token_verifier(settings, is_revoked),
            policy=second_factor_policy(settings),
            clock=clock,
        )


def second_factor_policy(settings: Settings) -> Policy:
    return Policy(
        max_failures=settings.otp_max_failures,
        lock_base=timedelta(minutes=settings.otp_lock_minutes),
        lock_cap=timedelta(hours=settings.otp_lock_max_hours),
        enrolment_ttl=timedelta(seconds=settings.enrolment_ttl_seconds),
        reset_cooling_off=timedelta(seconds=settings.reset_cooling_off_seconds),
    )


def token_verifier(
    settings: Settings, is_revoked: Callable[[str], bool] | None = None
) -> TokenVerifier:
    """Checks access tokens with the configured public keys; ``is_revoked`` is an offline
    verifier's revocation list (the auth service checks sessions in the stream instead)."""
    return TokenVerifier(
        settings.verify_keys(),
        issuer=settings.jwt_issuer,
        audience=settings.jwt_audience,
        is_revoked=is_revoked,
    )
