"""The support reset: requested by one support account, approved by another, effective
after a cooling-off delay, cancelled by the owner's next use of the second factor.
"""

from __future__ import annotations

from datetime import datetime

from shared.domain import events as ev
from shared.domain.base import DomainEvent
from shared.domain.errors import NotAllowed, NotEnabled
from shared.domain.twofactor.policy import Policy
from shared.domain.twofactor.state import (
    PendingReset,
    TwoFactorState,
    due_events,
    evolve,
    fold,
    reset_is_due,
)

__all__ = ["approve_reset", "cancel_reset", "cancelled_by_owner", "request_reset"]


def request_reset(
    state: TwoFactorState,
    *,
    account_id: str,
    request_id: str,
    requested_by: str,
    ticket: str,
    reason: str,
    now: datetime,
) -> list[DomainEvent]:
    """Support opens a reset for a user who lost phone and codes."""
    due = due_events(state, now)
    state = fold(state, due)
    if requested_by == account_id:
        raise NotAllowed("nobody may request a reset of their own account")
    if not state.enabled:
        raise NotEnabled("two-factor authentication is off")
    if state.reset is not None:
        raise NotAllowed("a reset is already pending for this account")
    return [
        *due,
        ev.ResetRequested(
            request_id=request_id, requested_by=requested_by, ticket=ticket, reason=reason
        ),
    ]


def approve_reset(
    state: TwoFactorState,
    *,
    account_id: str,
    request_id: str,
    approved_by: str,
    now: datetime,
    policy: Policy,
) -> list[DomainEvent]:
    """A second, different support account approves; it takes effect after the delay."""
    reset = _open_reset(state, request_id)
    if reset.approved_by is not None:
        raise NotAllowed("this reset is already approved")
    if approved_by == account_id:
        raise NotAllowed("nobody may approve a reset of their own account")
    if approved_by == reset.requested_by:
        raise NotAllowed("the approver must be another support account than the requester")
    approved = ev.ResetApproved(
        request_id=request_id,
        approved_by=approved_by,
        effective_at=now + policy.reset_cooling_off,
    )
    return [approved, *due_events(evolve(state, approved), now)]


def cancel_reset(
    state: TwoFactorState, *, request_id: str, cancelled_by: str, reason: str, now: datetime
) -> list[DomainEvent]:
    """Cancel a pending reset before it takes effect."""
    _open_reset(state, request_id)  # raises when there is no such reset
    if reset_is_due(state, now):
        raise NotAllowed("this reset has already taken effect")
    return [ev.ResetCancelled(request_id=request_id, cancelled_by=cancelled_by, reason=reason)]


def _open_reset(state: TwoFactorState, request_id: str) -> PendingReset:
    if state.reset is None or state.reset.request_id != request_id:
        raise NotAllowed("no such pending reset")
    return state.reset


def cancelled_by_owner(state: TwoFactorState) -> list[DomainEvent]:
    """The owner proved the second factor: a pending reset was not needed."""
    if state.reset is None:
        return []
    return [
        ev.ResetCancelled(
            request_id=state.reset.request_id,
            cancelled_by="account-owner",
            reason="second factor used",
        )
    ]
