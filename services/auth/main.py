"""The auth service's app factory: ``create_app(settings)``; run it with ``twofa serve auth``.

This is where auth's dependencies are wired: the shared ``Deps``, plus the accounts,
the password hasher and the token issuer that only this service holds.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from functools import partial

import asyncpg
from fastapi import FastAPI

from services.auth.adapters.device_tokens import DeviceTokens
from services.auth.adapters.unknown_names import UnknownNames
from services.auth.consumers import end_other_sessions
from services.auth.http import portal
from services.auth.http.routes import router
from services.auth.usecases.deps import AuthDeps
from shared.app.deps import Deps
from shared.app.secondfactor import password_only_allowed
from shared.domain.account import PasswordPolicy
from shared.eventstore.repository import Repository
from shared.eventstore.snapshots import AccountFold
from shared.messaging.consumer import events_consumer
from shared.platform.background import Runner
from shared.platform.clock import Clock, utc_now
from shared.platform.config import Settings
from shared.security.passwords import PasswordHasher
from shared.security.tokens import TokenIssuer
from shared.web.app import service_app

__all__ = ["build_deps", "create_app"]


def build_deps(settings: Settings, pool: asyncpg.Pool, clock: Clock = utc_now) -> AuthDeps:
    """Everything auth's use cases need, from configuration and a pool."""
    shared = Deps.build(settings, pool, clock)
    return AuthDeps(
        **{name: getattr(shared, name) for name in Deps.__dataclass_fields__},
        accounts=Repository(
            shared.store,
            AccountFold(),
            shared.twofactors.keys,
            snapshot_every=settings.snapshot_every,
        ),
        passwords=PasswordHasher(
            time_cost=settings.argon2_time_cost,
            memory_cost=settings.argon2_memory_kib,
            parallelism=settings.argon2_parallelism,
        ),
        password_policy=PasswordPolicy(
            threshold=settings.password_throttle_after,
            max_delay=timedelta(seconds=settings.password_max_delay_seconds),
        ),
        issuer=TokenIssuer(
            settings.signing_keys(),
            issuer=settings.jwt_issuer,
            access_ttl=timedelta(seconds=settings.access_token_ttl_seconds),
            mfa_ttl=timedelta(seconds=settings.mfa_token_ttl_seconds),
        ),
        devices=DeviceTokens(settings.server_key("device_token_key")),
        unknown_names=UnknownNames(pool, settings.server_key("device_token_key")),
    )


def create_app(settings: Settings, *, clock: Clock = utc_now) -> FastAPI:
    async def start(app: FastAPI, pool: asyncpg.Pool) -> Sequence[Runner]:
        deps = build_deps(settings, pool, clock)
        app.state.deps = deps
        app.state.verifier = deps.verifier  # sessions are checked against the stream too
        app.state.password_only_allowed = partial(password_only_allowed, deps)
        if not settings.kafka_bootstrap_servers:
            return []
        sessions = events_consumer(
            settings, pool, "auth-sessions", partial(end_other_sessions, deps)
        )
        app.state.consumers["sessions"] = sessions.caught_up
        return [sessions.run]

    return service_app(
        settings,
        name="auth",
        summary="Accounts, login with the second factor, tokens and sessions",
        router=router,
        clock=clock,
        start=start,
        extra_routers=[portal.router],
    )
