"""The enrolment service's app factory: ``create_app(settings)``; ``twofa serve enrolment``."""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial

import asyncpg
from fastapi import FastAPI

from services.enrolment.api import router
from services.enrolment.projections import project_label
from shared.config import Settings
from shared.core import Clock, Core, Runner, utc_now
from shared.secondfactor import password_only_allowed
from shared.service import consumer, revocation_feed, service_app

__all__ = ["create_app"]


def create_app(settings: Settings, *, clock: Clock = utc_now) -> FastAPI:
    async def start(app: FastAPI, pool: asyncpg.Pool) -> Sequence[Runner]:
        revoked, feed = revocation_feed(settings, clock)
        core = Core.build(settings, pool, clock, is_revoked=revoked.is_revoked)
        app.state.core = core
        app.state.verifier = core.verifier
        app.state.password_only_allowed = partial(password_only_allowed, core)
        if feed is None:
            return []
        labels = consumer(settings, pool, "enrolment-labels", project_label)
        return [labels.run, feed.run]

    return service_app(
        settings,
        name="enrolment",
        summary="Turning two-factor authentication on and off, recovery codes, support reset",
        router=router,
        clock=clock,
        start=start,
    )
