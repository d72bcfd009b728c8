"""Turning 2FA on (a pending secret, then the first code), new recovery codes, off."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from shared.domain import events as ev
from shared.domain.base import DomainEvent
from shared.domain.errors import AlreadyEnabled, NoPendingEnrolment, NotEnabled
from shared.domain.twofactor.lockout import (
    Verdict,
    count_failure,
    is_locked,
    refused_while_locked,
)
from shared.domain.twofactor.policy import Policy
from shared.domain.twofactor.state import TOTP, TwoFactorState, due_events, fold, reset_is_due

__all__ = [
    "confirm_enrolment",
    "disable",
    "regenerate_recovery_codes",
    "secret_to_confirm",
    "start_enrolment",
]


def start_enrolment(
    state: TwoFactorState, encrypted_secret: str, now: datetime, policy: Policy
) -> list[DomainEvent]:
    """Start (or restart, replacing the secret) an enrolment; refused while 2FA is on."""
    events = due_events(state, now)
    if fold(state, events).enabled:
        raise AlreadyEnabled("two-factor authentication is already on")
    return [
        *events,
        ev.EnrolmentStarted(
            encrypted_secret=encrypted_secret, expires_at=now + policy.enrolment_ttl
        ),
    ]


def secret_to_confirm(state: TwoFactorState, now: datetime) -> str:
    """The ciphertext of the enrolment waiting for its first code."""
    if state.enabled and not reset_is_due(state, now):
        raise AlreadyEnabled("two-factor authentication is already on")
    if (
        state.pending_secret is None
        or state.pending_expires_at is None
        or state.pending_expires_at <= now
    ):
        raise NoPendingEnrolment("no enrolment is waiting: start one first")
    return state.pending_secret


def confirm_enrolment(
    state: TwoFactorState,
    matched_step: int | None,
    code_hashes: Sequence[str],
    now: datetime,
    policy: Policy,
    session_id: str | None = None,
) -> Verdict:
    """Turn 2FA on when the first code matched the pending secret."""
    due = due_events(state, now)
    state = fold(state, due)
    secret_to_confirm(state, now)  # raises when there is nothing to confirm
    if is_locked(state, now):
        return refused_while_locked(state, due)
    if matched_step is None:
        return count_failure(state, due, TOTP, "enrolment", "invalid_code", now, policy)
    enabled = ev.TwoFactorEnabled(
        session_id=session_id,
        enabled_at=now,
        time_step=matched_step,
        recovery_code_hashes=tuple(code_hashes),
    )
    return Verdict((*due, enabled), True)


def regenerate_recovery_codes(
    state: TwoFactorState, code_hashes: Sequence[str], now: datetime
) -> list[DomainEvent]:
    """A new set of codes (after a verified second factor); the old set stops at once."""
    if not fold(state, due_events(state, now)).enabled:  # off, or a reset took effect
        raise NotEnabled("two-factor authentication is off")
    return [ev.RecoveryCodesRegenerated(recovery_code_hashes=tuple(code_hashes))]


def disable(
    state: TwoFactorState, method: str, session_id: str | None = None, *, now: datetime
) -> list[DomainEvent]:
    """Turn 2FA off (after a verified second factor)."""
    if not fold(state, due_events(state, now)).enabled:  # off, or a reset took effect
        raise NotEnabled("two-factor authentication is off")
    return [ev.TwoFactorDisabled(session_id=session_id, method=method)]
