"""The auth service's app factory: ``create_app(settings)``; run it with ``twofa serve auth``."""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial

import asyncpg
from fastapi import FastAPI

from services.auth import portal
from services.auth.api import router
from services.auth.consumer import end_other_sessions
from services.auth.devices import DeviceTokens
from shared.config import Settings
from shared.core import Clock, Core, Runner, utc_now
from shared.secondfactor import password_only_allowed
from shared.service import consumer, service_app

__all__ = ["create_app"]


def create_app(settings: Settings, *, clock: Clock = utc_now) -> FastAPI:
    async def start(app: FastAPI, pool: asyncpg.Pool) -> Sequence[Runner]:
        core = Core.build(settings, pool, clock)
        app.state.core = core
        app.state.verifier = core.verifier  # sessions are checked against the stream too
        app.state.password_only_allowed = partial(password_only_allowed, core)
        app.state.devices = DeviceTokens(settings.server_key("device_token_key"))
        if not settings.kafka_bootstrap_servers:
            return []
        sessions = consumer(settings, pool, "auth-sessions", partial(end_other_sessions, core))
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
