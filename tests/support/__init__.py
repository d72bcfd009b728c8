"""Helpers for service tests: settings, a clock, in-process apps, independent TOTP."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import secrets
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx
from cryptography.hazmat.primitives.hashes import SHA1
from cryptography.hazmat.primitives.twofactor.totp import TOTP
from fastapi import FastAPI

from shared.app.deps import Deps
from shared.devtools.seeding import enable_directly
from shared.eventstore.store import EventStore
from shared.messaging.contract import PUBLIC_EVENTS
from shared.messaging.relay import Relay, RelayOptions
from shared.platform.config import Settings


def settings_for(database_url: str, **overrides: Any) -> Settings:
    """Settings for one test: its database, cheap argon2, fresh keys shared by its apps."""
    values: dict[str, Any] = {
        "database_url": database_url,
        "argon2_time_cost": 1,
        "argon2_memory_kib": 1024,
        "argon2_parallelism": 1,
        "encryption_keys": f"k1:{base64.b64encode(secrets.token_bytes(32)).decode()}",
        "recovery_code_key": base64.b64encode(secrets.token_bytes(32)).decode(),
        "device_token_key": base64.b64encode(secrets.token_bytes(32)).decode(),
    }
    from shared.security.keys import SigningKeys

    values["jwt_signing_keys"] = SigningKeys.generate("test-key").to_config()
    values.update(overrides)
    return Settings(**values)


def with_kafka(kafka_bootstrap: str, topic: str) -> dict[str, Any]:
    """``settings_for`` overrides for a test's own topic and consumer groups."""
    return {
        "kafka_bootstrap_servers": kafka_bootstrap,
        "kafka_topic": topic,
        "kafka_group_prefix": f"t{uuid.uuid4().hex[:8]}",
    }


class Clock:
    """A clock tests move by hand."""

    def __init__(self, start: datetime | None = None) -> None:
        self.now = start or datetime.now(UTC).replace(microsecond=0)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


def otp(secret: str, at: datetime) -> str:
    """A TOTP code from an implementation that is not pyotp."""
    key = base64.b32decode(secret + "=" * (-len(secret) % 8))
    return TOTP(key, 6, SHA1(), 30, enforce_key_length=False).generate(at.timestamp()).decode()


@contextlib.asynccontextmanager
async def client_for(
    app: FastAPI, base_url: str = "http://twofa.test", *, raise_app_exceptions: bool = True
) -> AsyncIterator[httpx.AsyncClient]:
    """An httpx client speaking to ``app`` in-process, with its lifespan running.

    With ``raise_app_exceptions=False`` a crash shows up as the 500 a client would get.
    """
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=raise_app_exceptions)
        async with httpx.AsyncClient(transport=transport, base_url=base_url) as client:
            yield client


@dataclass
class Enrolled:
    secret: str
    codes: list[str]


async def enable_through_domain(core: Deps, account_id: str, now: datetime) -> Enrolled:
    """Turn 2FA on by appending its events directly (no enrolment service involved)."""
    secret, codes = await enable_directly(core, account_id, now, actor="test")
    return Enrolled(secret, codes)


async def event_count(core: Deps) -> int:
    return int(await core.pool.fetchval("SELECT count(*) FROM events"))


def is_problem(response: httpx.Response) -> bool:
    if not response.headers.get("content-type", "").startswith("application/problem+json"):
        return False
    body = response.json()
    return {"type", "title", "status", "code"} <= set(body) and body[
        "status"
    ] == response.status_code


Factory = Callable[[Settings], FastAPI]


async def admin_sql(postgres_url: str, sql: str) -> None:
    """Run one statement as the server's admin (CREATE or DROP DATABASE)."""
    conn = await asyncpg.connect(postgres_url)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@contextlib.asynccontextmanager
async def served(app: FastAPI, port: int | None = None) -> AsyncIterator[str]:
    """Serve ``app`` with uvicorn on a free loopback port in this event loop; yield its URL.

    For streaming responses (Server-Sent Events), which httpx's ASGI transport buffers.
    """
    import asyncio

    import uvicorn

    from shared.devtools.servers import free_port

    port = port or free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, access_log=False)
    )
    task = asyncio.create_task(server.serve())
    try:
        while not server.started:
            if task.done():
                task.result()
            await asyncio.sleep(0.02)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 30)


def make_relay(
    database_url: str, store: EventStore, kafka_bootstrap: str, topic: str, **options: float
) -> Relay:
    """The real relay from ``store`` to ``topic`` (named after it), with ``options``."""
    return Relay(
        dsn=database_url,
        store=store,
        mapping=PUBLIC_EVENTS,
        bootstrap_servers=kafka_bootstrap,
        options=RelayOptions(topic=topic, name=topic, **options),  # type: ignore[arg-type]
    )


@contextlib.asynccontextmanager
async def running(relay: Relay) -> AsyncIterator[asyncio.Task[None]]:
    """``relay`` running in this event loop for the block, stopped cleanly after."""
    stop = asyncio.Event()
    task = asyncio.create_task(relay.run(stop))
    try:
        yield task
    finally:
        stop.set()
        await asyncio.wait_for(task, 15)


@contextlib.asynccontextmanager
async def relaying(
    database_url: str, store: EventStore, kafka_bootstrap: str, topic: str
) -> AsyncIterator[None]:
    """``store``'s events published to ``topic`` by the real relay, for the block."""
    relay = make_relay(database_url, store, kafka_bootstrap, topic, poll_interval=0.2)
    async with running(relay):
        yield
