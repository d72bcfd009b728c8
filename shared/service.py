"""What each service's ``main.py`` shares: the app shell, the pool, consumers, the feed.

A service supplies its routes and a ``start(app, pool)`` that puts its dependencies on
``app.state`` and returns the background runners (Kafka consumers) it needs; the shell
opens the pool, runs those beside the app, serves ``/healthz``, ``/readyz`` (database
and broker), ``/metrics``, and closes everything on shutdown.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Annotated

import asyncpg
from fastapi import APIRouter, Depends, FastAPI, Header, Request
from fastapi.middleware.cors import CORSMiddleware

from shared.config import Settings
from shared.consumer import ConsumerOptions, EventConsumer, Handler
from shared.core import Clock, Core, Runner, background
from shared.db import create_pool
from shared.http import broker_answers, database_answers, install_common, install_readiness
from shared.revocations import RevocationFeed, RevokedSessions

__all__ = [
    "CoreDep",
    "Correlation",
    "Start",
    "consumer",
    "core_of",
    "correlation",
    "revocation_feed",
    "service_app",
]

Start = Callable[[FastAPI, asyncpg.Pool], Awaitable[Sequence[Runner]]]


def service_app(
    settings: Settings,
    *,
    name: str,
    summary: str,
    router: APIRouter,
    clock: Clock,
    start: Start,
    extra_routers: Sequence[APIRouter] = (),
) -> FastAPI:
    """The FastAPI app of one service, its dependencies built in the lifespan."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        pool = await create_pool(
            settings.require_database_url(),
            min_size=settings.database_pool_min,
            max_size=settings.database_pool_max,
        )
        app.state.pool = pool
        app.state.clock = clock
        try:
            runners = await start(app, pool)
            async with background(*runners):
                yield
        finally:
            await pool.close()

    app = FastAPI(title=f"twofa {name}", version="1", summary=summary, lifespan=lifespan)
    install_common(app, name)
    origins = [o.strip() for o in settings.portal_origins.split(",") if o.strip()]
    if origins:  # the portal page calls the services from the auth service's origin
        app.add_middleware(
            CORSMiddleware,
            allow_origins=origins,
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type", "X-Request-ID"],
            max_age=600,
        )

    async def checks() -> dict[str, bool]:
        result = {"database": await database_answers(app.state.pool)}
        if settings.kafka_bootstrap_servers:
            result["broker"] = await broker_answers(settings.kafka_bootstrap_servers)
        return result

    install_readiness(app, checks)
    app.include_router(router)
    for extra in extra_routers:
        app.include_router(extra)
    return app


def consumer(settings: Settings, pool: asyncpg.Pool, group: str, handler: Handler) -> EventConsumer:
    """A consumer of the events topic in group ``<prefix>.<group>``."""
    assert settings.kafka_bootstrap_servers is not None
    return EventConsumer(
        pool=pool,
        bootstrap_servers=settings.kafka_bootstrap_servers,
        handler=handler,
        options=ConsumerOptions(
            name=settings.group(group),
            topics=(settings.kafka_topic,),
            dlq_topic=settings.dlq_topic,
            fetch_max_wait_ms=settings.fetch_max_wait_ms,
            client_id=f"{settings.kafka_client_id}-{group}",
        ),
    )


def revocation_feed(
    settings: Settings, clock: Clock
) -> tuple[RevokedSessions, RevocationFeed | None]:
    """Revoked sessions for an offline token verifier, and the feed that fills them."""
    revoked = RevokedSessions(
        timedelta(seconds=settings.access_token_ttl_seconds + 60), clock=clock
    )
    if not settings.kafka_bootstrap_servers:
        return revoked, None
    return revoked, RevocationFeed(
        bootstrap_servers=settings.kafka_bootstrap_servers,
        topic=settings.kafka_topic,
        revoked=revoked,
        fetch_max_wait_ms=settings.fetch_max_wait_ms,
    )


def core_of(request: Request) -> Core:
    """The service's ``Core``, built in its lifespan."""
    core: Core = request.app.state.core
    return core


def correlation(
    x_request_id: Annotated[str | None, Header(max_length=100)] = None,
) -> uuid.UUID:
    """The caller's ``X-Request-ID`` when it is a UUID (it ties the events together)."""
    try:
        return uuid.UUID(x_request_id) if x_request_id else uuid.uuid4()
    except ValueError:
        return uuid.uuid4()


CoreDep = Annotated[Core, Depends(core_of)]
Correlation = Annotated[uuid.UUID, Depends(correlation)]
