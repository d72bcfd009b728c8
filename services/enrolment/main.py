"""The enrolment service's app factory: ``create_app(settings)``; ``twofa serve enrolment``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta

from fastapi import FastAPI

from services.enrolment.api import router
from services.enrolment.projections import project_label
from shared.config import Settings
from shared.consumer import ConsumerOptions, EventConsumer
from shared.core import Clock, Core, background, utc_now
from shared.db import create_pool
from shared.http import broker_answers, database_answers, install_common, install_readiness
from shared.revocations import RevocationFeed, RevokedSessions

__all__ = ["create_app"]


def create_app(settings: Settings, *, clock: Clock = utc_now) -> FastAPI:
    revoked = RevokedSessions(
        timedelta(seconds=settings.access_token_ttl_seconds + 60), clock=clock
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        pool = await create_pool(
            settings.require_database_url(),
            min_size=settings.database_pool_min,
            max_size=settings.database_pool_max,
        )
        core = Core.build(settings, pool, clock, is_revoked=revoked.is_revoked)
        app.state.core = core
        app.state.verifier = core.verifier
        app.state.clock = clock
        runners = []
        if settings.kafka_bootstrap_servers:
            labels = EventConsumer(
                pool=pool,
                bootstrap_servers=settings.kafka_bootstrap_servers,
                handler=project_label,
                options=ConsumerOptions(
                    name=settings.group("enrolment-labels"),
                    topics=(settings.kafka_topic,),
                    dlq_topic=settings.dlq_topic,
                    fetch_max_wait_ms=settings.fetch_max_wait_ms,
                    client_id=f"{settings.kafka_client_id}-enrolment",
                ),
            )
            feed = RevocationFeed(
                bootstrap_servers=settings.kafka_bootstrap_servers,
                topic=settings.kafka_topic,
                revoked=revoked,
                fetch_max_wait_ms=settings.fetch_max_wait_ms,
            )
            app.state.revocation_feed = feed
            runners = [labels.run, feed.run]
        try:
            async with background(*runners):
                yield
        finally:
            await pool.close()

    app = FastAPI(
        title="twofa enrolment",
        version="1",
        summary="Turning two-factor authentication on and off, recovery codes, support reset",
        lifespan=lifespan,
    )
    install_common(app, "enrolment")

    async def checks() -> dict[str, bool]:
        result = {"database": await database_answers(app.state.core.pool)}
        if settings.kafka_bootstrap_servers:
            result["broker"] = await broker_answers(settings.kafka_bootstrap_servers)
        return result

    install_readiness(app, checks)
    app.include_router(router)
    return app
