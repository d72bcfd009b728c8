"""``/readyz``: the database and the broker answer, and every consumer has caught up."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Literal

import asyncpg
import orjson
from fastapi import FastAPI, Response
from pydantic import BaseModel, Field

from shared.platform.outages import OUTAGES


class Readiness(BaseModel):
    status: Literal["ready", "unavailable"]
    checks: dict[str, bool] = Field(
        examples=[{"database": True, "broker": True, "labels": True, "revocations": False}]
    )


def install_readiness(app: FastAPI, checks: Callable[[], Awaitable[dict[str, bool]]]) -> None:
    """``/readyz``: 200 when every check holds, else 503 naming the ones that do not."""

    @app.get(
        "/readyz",
        tags=["operations"],
        summary="Database and broker reachable, consumers caught up",
        description=(
            "200 once the database and the broker answer and each of the process's Kafka "
            "consumers (named in `checks`: `sessions`, `labels`, `audit`, `revocations`) has "
            "caught up with the records its topic held when the process started, so a "
            "fresh replica knows every recent revocation before it takes traffic. A "
            "consumer that has caught up once stays so (later lag is not unreadiness). "
            "503 with the checks that do not hold yet. A service run without a broker has no "
            "consumer to wait for."
        ),
        responses={
            200: {"model": Readiness, "description": "Every check holds"},
            503: {
                "model": Readiness,
                "description": "Some dependency does not answer, or "
                "some consumer has not caught up yet",
            },
        },
    )
    async def readyz() -> Response:
        results = await checks()
        body = {"status": "ready" if all(results.values()) else "unavailable", "checks": results}
        return Response(
            orjson.dumps(body),
            status_code=200 if all(results.values()) else 503,
            media_type="application/json",
        )


async def database_answers(pool: asyncpg.Pool) -> bool:
    try:
        async with asyncio.timeout(2):
            return bool(await pool.fetchval("SELECT 1"))
    except (*OUTAGES, asyncpg.PostgresError):
        return False


async def broker_answers(bootstrap_servers: str) -> bool:
    """Can any bootstrap server be reached over TCP within a second?"""
    for server in bootstrap_servers.split(","):
        host, _, port = server.strip().rpartition(":")
        try:
            async with asyncio.timeout(1):
                _, writer = await asyncio.open_connection(host or "localhost", int(port))
            writer.close()
            return True
        except (OSError, TimeoutError, ValueError):
            continue
    return False
