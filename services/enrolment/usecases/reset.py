"""The support reset's use cases: request, approve (four eyes), cancel.

The actor of each event is the token's subject: the support account (or, for a cancel,
the owner); ``account_id`` is the account whose second factor is being reset.
"""

from __future__ import annotations

import uuid
from datetime import datetime

from services.enrolment.usecases.enrolment import decide
from shared.app.context import Context
from shared.app.deps import Deps
from shared.domain import twofactor as tf
from shared.security.tokens import Claims

__all__ = ["approve_reset", "cancel_reset", "request_reset"]


async def request_reset(
    deps: Deps, ctx: Context, claims: Claims, account_id: str, ticket: str, reason: str
) -> str:
    """Support opens a reset for a user who lost phone and codes."""
    ctx = ctx.acting_for(claims.sub)
    request_id = uuid.uuid4().hex
    await decide(
        deps,
        ctx,
        account_id,
        lambda state, now: tf.request_reset(
            state,
            account_id=account_id,
            request_id=request_id,
            requested_by=claims.sub,
            ticket=ticket,
            reason=reason,
            now=now,
        ),
    )
    return request_id


async def approve_reset(
    deps: Deps, ctx: Context, claims: Claims, account_id: str, request_id: str
) -> datetime:
    """A second support account approves; returns when the reset takes effect."""
    ctx = ctx.acting_for(claims.sub)
    now = await decide(
        deps,
        ctx,
        account_id,
        lambda state, now: tf.approve_reset(
            state,
            account_id=account_id,
            request_id=request_id,
            approved_by=claims.sub,
            now=now,
            policy=deps.policy,
        ),
    )
    return now + deps.policy.reset_cooling_off


async def cancel_reset(
    deps: Deps, ctx: Context, claims: Claims, account_id: str, request_id: str, reason: str
) -> None:
    """Support, or the account owner, cancels a reset before it takes effect."""
    ctx = ctx.acting_for(claims.sub)
    await decide(
        deps,
        ctx,
        account_id,
        lambda state, now: tf.cancel_reset(
            state, request_id=request_id, cancelled_by=claims.sub, reason=reason, now=now
        ),
    )
