"""Turning 2FA on directly in the stream: the demo seed, the tests and the bench share it.

An operator's seed, not a user's flow: the events are the ones a confirmed enrolment
appends (audited like any event), with the last accepted time-step two steps back so
the current code works at once.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from shared.app.context import Context
from shared.app.deps import Deps
from shared.domain import events as ev
from shared.domain.base import DomainEvent
from shared.eventstore.streams import twofactor_stream
from shared.security import recovery, totp

__all__ = ["enable_directly", "enabling_events"]


def enabling_events(
    deps: Deps, account_id: str, secret: str, now: datetime, code_hashes: Sequence[str]
) -> list[DomainEvent]:
    """The events of an enrolment of ``secret`` confirmed at ``now``."""
    aad = twofactor_stream(account_id).encode()
    return [
        ev.EnrolmentStarted(
            encrypted_secret=deps.keyring.encrypt(secret.encode(), aad),
            expires_at=now + timedelta(minutes=10),
        ),
        ev.TwoFactorEnabled(
            session_id=None,
            enabled_at=now,
            time_step=totp.time_step(now) - 2,
            recovery_code_hashes=tuple(code_hashes),
        ),
    ]


async def enable_directly(
    deps: Deps, account_id: str, now: datetime, actor: str = "operator:demo"
) -> tuple[str, list[str]]:
    """Turn 2FA on for ``account_id``; returns the TOTP secret and the recovery codes."""
    secret = totp.new_secret()
    codes = recovery.new_codes()
    events = enabling_events(deps, account_id, secret, now, [deps.recovery.hash(c) for c in codes])
    stream = twofactor_stream(account_id)
    loaded = await deps.twofactors.load(stream)
    ctx = Context(actor=actor, clock=lambda: now)
    await deps.twofactors.save(stream, loaded, ctx.new(events))
    return secret, codes
