"""What each service's ``main.py`` shares: the app shell, the pool, consumers, the feed.

A service supplies its routes and a ``start(app, pool)`` that puts its dependencies on
``app.state`` and returns the background runners (Kafka consumers) it needs; the shell
opens the pool, runs those beside the app, serves ``/healthz``, ``/readyz`` (database,
broker, and each consumer ``start`` named in ``app.state.consumers`` caught up),
``/metrics``, and closes everything on shutdown.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Annotated

import asyncpg
from fastapi import APIRouter, Depends, FastAPI, Header, Request
from fastapi.middleware.cors import CORSMiddleware

from shared.app.context import Context
from shared.app.deps import Deps
from shared.messaging.catchup import CatchUp
from shared.platform.background import Runner, background
from shared.platform.clock import Clock
from shared.platform.config import Settings
from shared.platform.db import create_pool
from shared.web.health import broker_answers, database_answers, install_readiness
from shared.web.middleware import install_common

__all__ = [
    "ContextDep",
    "Correlation",
    "DepsDep",
    "Start",
    "deps_of",
    "request_context",
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
    """The FastAPI app of one service, its dependencies built in the lifespan.

    ``ConfigurationError`` when it has no broker and was not told to run without one.
    """
    broker = settings.service_broker()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        pool = await create_pool(
            settings.require_database_url(),
            min_size=settings.database_pool_min,
            max_size=settings.database_pool_max,
        )
        app.state.pool = pool
        app.state.clock = clock
        app.state.consumers = {}  # name -> CatchUp, filled by ``start``: /readyz waits for each
        try:
            runners = await start(app, pool)
            async with background(*runners):
                yield
        finally:
            await pool.close()

    app = FastAPI(
        title=f"twofa {name}",
        version="1",
        summary=summary,
        lifespan=lifespan,
    )
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
        if broker is not None:
            result["broker"] = await broker_answers(broker)
        consumers: dict[str, CatchUp] = app.state.consumers
        result.update({name: progress.done for name, progress in consumers.items()})
        return result

    install_readiness(app, checks)
    app.include_router(router)
    for extra in extra_routers:
        app.include_router(extra)
    return app


def deps_of(request: Request) -> Deps:
    """The service's dependencies, built in its lifespan."""
    deps: Deps = request.app.state.deps
    return deps


def correlation(
    x_request_id: Annotated[str | None, Header(max_length=100)] = None,
) -> uuid.UUID:
    """The caller's ``X-Request-ID`` when it is a UUID (it ties the events together)."""
    try:
        return uuid.UUID(x_request_id) if x_request_id else uuid.uuid4()
    except ValueError:
        return uuid.uuid4()


Correlation = Annotated[uuid.UUID, Depends(correlation)]


def request_context(request: Request, correlation_id: Correlation) -> Context:
    """The request's context: its correlation id, on the service's clock."""
    return Context(correlation_id=correlation_id, clock=request.app.state.clock)


DepsDep = Annotated[Deps, Depends(deps_of)]
ContextDep = Annotated[Context, Depends(request_context)]
