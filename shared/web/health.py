"""``/readyz``: the database and the broker answer."""

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
    checks: dict[str, bool] = Field(examples=[{"database": True, "broker": True}])


def install_readiness(app: FastAPI, checks: Callable[[], Awaitable[dict[str, bool]]]) -> None:
    """``/readyz``: 200 when every dependency answers, else 503 naming the ones that do not."""

    @app.get(
        "/readyz",
        tags=["operations"],
        summary="Database and broker reachable",
        responses={
            200: {"model": Readiness, "description": "Every dependency answers"},
            503: {"model": Readiness, "description": "Some dependency does not answer"},
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
