"""The auth service's app factory: ``create_app(settings)``; run it with ``twofa serve auth``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial

from fastapi import FastAPI

from services.auth.api import router
from services.auth.consumer import end_other_sessions
from services.auth.devices import DeviceTokens
from shared.config import Settings
from shared.consumer import ConsumerOptions, EventConsumer
from shared.core import Clock, Core, background, utc_now
from shared.db import create_pool
from shared.http import broker_answers, database_answers, install_common, install_readiness

__all__ = ["create_app"]


def create_app(settings: Settings, *, clock: Clock = utc_now) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        pool = await create_pool(
            settings.require_database_url(),
            min_size=settings.database_pool_min,
            max_size=settings.database_pool_max,
        )
        core = Core.build(settings, pool, clock)
        app.state.core = core
        app.state.verifier = core.verifier
        app.state.clock = clock
        app.state.devices = DeviceTokens(settings.server_key("device_token_key"))
        runners = []
        if settings.kafka_bootstrap_servers:
            reactions = EventConsumer(
                pool=pool,
                bootstrap_servers=settings.kafka_bootstrap_servers,
                handler=partial(end_other_sessions, core),
                options=ConsumerOptions(
                    name=settings.group("auth-sessions"),
                    topics=(settings.kafka_topic,),
                    dlq_topic=settings.dlq_topic,
                    fetch_max_wait_ms=settings.fetch_max_wait_ms,
                    client_id=f"{settings.kafka_client_id}-auth",
                ),
            )
            runners.append(reactions.run)
        try:
            async with background(*runners):
                yield
        finally:
            await pool.close()

    app = FastAPI(
        title="twofa auth",
        version="1",
        summary="Accounts, login with the second factor, tokens and sessions",
        lifespan=lifespan,
    )
    install_common(app, "auth")

    async def checks() -> dict[str, bool]:
        result = {"database": await database_answers(app.state.core.pool)}
        if settings.kafka_bootstrap_servers:
            result["broker"] = await broker_answers(settings.kafka_bootstrap_servers)
        return result

    install_readiness(app, checks)
    app.include_router(router)
    return app
