"""The audit service's app factory: ``create_app(settings)``; ``twofa serve audit``."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta

from fastapi import FastAPI
from prometheus_client import Gauge

from services.audit.api import router
from services.audit.handlers import ingest
from shared.config import Settings
from shared.consumer import ConsumerOptions, EventConsumer
from shared.core import Clock, background, utc_now
from shared.db import create_pool
from shared.http import broker_answers, database_answers, install_common, install_readiness
from shared.revocations import RevocationFeed, RevokedSessions
from shared.tokens import TokenVerifier

__all__ = ["create_app"]

LAG = Gauge("twofa_audit_consumer_lag", "Records behind the partition end", ["partition"])


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
        app.state.pool = pool
        app.state.clock = clock
        app.state.verifier = TokenVerifier(
            settings.verify_keys(),
            issuer=settings.jwt_issuer,
            audience=settings.jwt_audience,
            is_revoked=revoked.is_revoked,
        )
        runners = []
        if settings.kafka_bootstrap_servers:
            consumer = EventConsumer(
                pool=pool,
                bootstrap_servers=settings.kafka_bootstrap_servers,
                handler=ingest,
                options=ConsumerOptions(
                    name=settings.group("audit"),
                    topics=(settings.kafka_topic,),
                    dlq_topic=settings.dlq_topic,
                    fetch_max_wait_ms=settings.fetch_max_wait_ms,
                    client_id=f"{settings.kafka_client_id}-audit",
                ),
            )
            app.state.consumer = consumer
            feed = RevocationFeed(
                bootstrap_servers=settings.kafka_bootstrap_servers,
                topic=settings.kafka_topic,
                revoked=revoked,
                fetch_max_wait_ms=settings.fetch_max_wait_ms,
            )

            async def report_lag(stop: asyncio.Event) -> None:
                while not stop.is_set():
                    for partition, behind in (await consumer.lag()).items():
                        LAG.labels(str(partition)).set(behind)
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), 2)

            runners = [consumer.run, feed.run, report_lag]
        try:
            async with background(*runners):
                yield
        finally:
            await pool.close()

    app = FastAPI(
        title="twofa audit",
        version="1",
        summary="The hash-chained audit log: query, live tail, export, verify",
        lifespan=lifespan,
    )
    install_common(app, "audit")

    async def checks() -> dict[str, bool]:
        result = {"database": await database_answers(app.state.pool)}
        if settings.kafka_bootstrap_servers:
            result["broker"] = await broker_answers(settings.kafka_bootstrap_servers)
        return result

    install_readiness(app, checks)
    app.include_router(router)
    return app
