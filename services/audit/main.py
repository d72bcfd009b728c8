"""The audit service's app factory: ``create_app(settings)``; ``twofa serve audit``."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence

import asyncpg
from fastapi import FastAPI
from prometheus_client import Gauge

from services.audit.api import router
from services.audit.handlers import ingest
from shared.config import Settings
from shared.consumer import EventConsumer
from shared.core import Clock, Runner, utc_now
from shared.requestauth import refuse_password_only
from shared.service import consumer, revocation_feed, service_app
from shared.tokens import TokenVerifier

__all__ = ["create_app"]

LAG = Gauge("twofa_audit_consumer_lag", "Records behind the partition end", ["partition"])


def create_app(settings: Settings, *, clock: Clock = utc_now) -> FastAPI:
    async def start(app: FastAPI, pool: asyncpg.Pool) -> Sequence[Runner]:
        revoked, feed = revocation_feed(settings, clock)
        app.state.verifier = TokenVerifier(
            settings.verify_keys(),
            issuer=settings.jwt_issuer,
            audience=settings.jwt_audience,
            is_revoked=revoked.is_revoked,
        )
        app.state.password_only_allowed = refuse_password_only  # security work needs 2FA
        if feed is None:
            return []
        ingesting = consumer(settings, pool, "audit", ingest)
        app.state.consumer = ingesting
        return [ingesting.run, feed.run, lambda stop: report_lag(ingesting, stop)]

    return service_app(
        settings,
        name="audit",
        summary="The hash-chained audit log: query, live tail, export, verify",
        router=router,
        clock=clock,
        start=start,
    )


async def report_lag(ingesting: EventConsumer, stop: asyncio.Event) -> None:
    """Keep the per-partition lag gauge current for /metrics."""
    while not stop.is_set():
        for partition, behind in (await ingesting.lag()).items():
            LAG.labels(str(partition)).set(behind)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 2)
