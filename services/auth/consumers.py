"""The auth service's reaction to two-factor changes: other sessions end.

Turning 2FA on or off, or a support reset taking effect, revokes every session of the
account except the one that made the change (for a reset: every session started before
it took effect, its approval's ``effective_at``; not the login after the delay that
recorded it). The revocations are events on the account stream, published like any
other, so token verifiers in other services learn of them too.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import asyncpg

from services.auth.usecases.deps import AuthDeps
from shared.app.context import Context
from shared.domain import account as acct
from shared.domain import events as ev
from shared.eventstore.streams import account_stream, twofactor_stream
from shared.messaging.consumer import Delivery
from shared.messaging.integration import IntegrationEvent

__all__ = ["end_other_sessions"]

REASONS = {
    "twofa.enabled": "twofa_enabled",
    "twofa.disabled": "twofa_disabled",
    "twofa.reset_completed": "twofa_reset",
}


async def end_other_sessions(
    deps: AuthDeps, conn: asyncpg.Connection, event: IntegrationEvent, delivery: Delivery
) -> None:
    """Revoke the sessions a two-factor change ends, in the consumer's transaction."""
    reason = REASONS.get(event.type)
    if reason is None:
        return
    keep = event.data.get("session_id") if event.type != "twofa.reset_completed" else None
    started_before = event.time
    if event.type == "twofa.reset_completed":
        # Strictly before it took effect: a login at that moment already went without 2FA.
        started_before = await _reset_effective_at(deps, conn, event) - timedelta(microseconds=1)
    stream = account_stream(event.subject)
    account = await deps.accounts.load(stream, connection=conn)
    revoked = acct.revoke_other_sessions(
        account.state, keep if isinstance(keep, str) else None, reason, started_before
    )
    if revoked:
        ctx = Context(
            correlation_id=event.correlation_id or event.id,
            causation_id=event.id,
            actor="service:auth",
            clock=deps.clock,
        )
        await deps.accounts.save(stream, account, ctx.new(revoked), connection=conn)


async def _reset_effective_at(
    deps: AuthDeps, conn: asyncpg.Connection, event: IntegrationEvent
) -> datetime:
    """When the completed reset took effect (its approval's end of cooling-off).

    The completion is recorded later, by the next action on the stream: when that is a
    login, its new session began after the reset and must outlive it.
    """
    request_id = event.data.get("request_id")
    for recorded in await deps.store.read_stream(twofactor_stream(event.subject), connection=conn):
        approved = recorded.event
        if isinstance(approved, ev.ResetApproved) and approved.request_id == request_id:
            return approved.effective_at
    return event.time
