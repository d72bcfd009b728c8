"""The auth service's reaction to two-factor changes: other sessions end.

Turning 2FA on or off, or a support reset taking effect, revokes every session of the
account except the one that made the change (for a reset: all of them). The revocations
are events on the account stream, published like any other, so token verifiers in other
services learn of them too.
"""

from __future__ import annotations

import asyncpg

from shared.consumer import Delivery
from shared.core import Core, account_stream
from shared.domain import account as acct
from shared.events import EventMetadata, NewEvent
from shared.integration import IntegrationEvent

__all__ = ["end_other_sessions"]

REASONS = {
    "twofa.enabled": "twofa_enabled",
    "twofa.disabled": "twofa_disabled",
    "twofa.reset_completed": "twofa_reset",
}


async def end_other_sessions(
    core: Core, conn: asyncpg.Connection, event: IntegrationEvent, delivery: Delivery
) -> None:
    reason = REASONS.get(event.type)
    if reason is None:
        return
    keep = event.data.get("session_id") if event.type != "twofa.reset_completed" else None
    stream = account_stream(event.subject)
    account = await core.accounts.load(stream, connection=conn)
    revoked = acct.revoke_other_sessions(
        account.state, keep if isinstance(keep, str) else None, reason, started_before=event.time
    )
    if revoked:
        meta = EventMetadata(
            correlation_id=event.correlation_id or event.id,
            causation_id=event.id,
            actor="service:auth",
            occurred_at=core.clock(),
        )
        await core.accounts.save(
            stream, account, [NewEvent(e, meta) for e in revoked], connection=conn
        )
