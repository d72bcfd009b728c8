"""The audit service's app factory: ``create_app(settings)``; ``twofa serve audit``."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence

import asyncpg
from fastapi import FastAPI
from prometheus_client import Gauge

from services.audit.consumers import ingest
from services.audit.http.routes import router
from shared.app.deps import token_verifier
from shared.messaging.consumer import EventConsumer, events_consumer
from shared.messaging.revocations import revocation_feed
from shared.platform.background import Runner
from shared.platform.clock import Clock, utc_now
from shared.platform.config import Settings
from shared.web.app import service_app
from shared.web.auth import refuse_password_only

__all__ = ["create_app"]

LAG = Gauge("twofa_audit_consumer_lag", "Records behind the partition end", ["partition"])


def create_app(settings: Settings, *, clock: Clock = utc_now) -> FastAPI:
    async def start(app: FastAPI, pool: asyncpg.Pool) -> Sequence[Runner]:
        revoked, feed = revocation_feed(settings, clock)
        app.state.verifier = token_verifier(settings, revoked.is_revoked)
        app.state.password_only_allowed = refuse_password_only  # security work needs 2FA
        if feed is None:
            return []
        ingesting = events_consumer(settings, pool, "audit", ingest)
        app.state.consumer = ingesting
        app.state.consumers.update(audit=ingesting.caught_up, revocations=feed.caught_up)
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
