"""The enrolment service's app factory: ``create_app(settings)``; ``twofa serve enrolment``."""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial

import asyncpg
from fastapi import FastAPI

from services.enrolment.consumers import project_label
from services.enrolment.http.routes import router
from shared.app.deps import Deps
from shared.app.secondfactor import password_only_allowed
from shared.messaging.consumer import events_consumer
from shared.messaging.revocations import revocation_feed
from shared.platform.background import Runner
from shared.platform.clock import Clock, utc_now
from shared.platform.config import Settings
from shared.web.app import service_app

__all__ = ["create_app"]


def create_app(settings: Settings, *, clock: Clock = utc_now) -> FastAPI:
    async def start(app: FastAPI, pool: asyncpg.Pool) -> Sequence[Runner]:
        revoked, feed = revocation_feed(settings, clock)
        deps = Deps.build(settings, pool, clock, is_revoked=revoked.is_revoked)
        app.state.deps = deps
        app.state.verifier = deps.verifier
        app.state.password_only_allowed = partial(password_only_allowed, deps)
        if feed is None:
            return []
        labels = events_consumer(settings, pool, "enrolment-labels", project_label)
        app.state.consumers.update(labels=labels.caught_up, revocations=feed.caught_up)
        return [labels.run, feed.run]

    return service_app(
        settings,
        name="enrolment",
        summary="Turning two-factor authentication on and off, recovery codes, support reset",
        router=router,
        clock=clock,
        start=start,
    )
