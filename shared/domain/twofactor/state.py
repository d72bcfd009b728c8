"""The TwoFactor aggregate (stream ``twofactor-{account id}``): its state and fold,
and the questions every decision asks of it (is 2FA on, is it locked, is a reset due).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import datetime

from shared.domain import base
from shared.domain import events as ev
from shared.domain.base import DomainEvent

__all__ = [
    "RECOVERY_CODE",
    "TOTP",
    "PendingReset",
    "TwoFactorState",
    "due_events",
    "evolve",
    "fold",
    "password_only_allowed",
    "requires_second_factor",
    "reset_is_due",
]

TOTP, RECOVERY_CODE = "totp", "recovery_code"


@dataclass(frozen=True, slots=True)
class PendingReset:
    request_id: str
    requested_by: str
    ticket: str
    reason: str
    approved_by: str | None = None
    effective_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class TwoFactorState:
    enabled: bool = False
    enabled_at: datetime | None = None
    enabled_by_session: str | None = None  # the session that confirmed the first code
    secret: str | None = None  # ciphertext of the active TOTP secret
    pending_secret: str | None = None  # ciphertext of an enrolment not yet confirmed
    pending_expires_at: datetime | None = None
    last_time_step: int = 0  # no time-step at or below this one is accepted again
    code_hashes: tuple[str | None, ...] = ()  # None marks a spent recovery code
    failures: int = 0
    lock_count: int = 0
    locked_until: datetime | None = None
    last_locked_at: datetime | None = None
    reset: PendingReset | None = field(default=None)

    @property
    def codes_left(self) -> int:
        return sum(1 for h in self.code_hashes if h is not None)


def evolve(state: TwoFactorState, event: DomainEvent) -> TwoFactorState:
    """The state after ``event``."""
    match event:
        case ev.EnrolmentStarted():
            return replace(
                state, pending_secret=event.encrypted_secret, pending_expires_at=event.expires_at
            )
        case ev.TwoFactorEnabled():
            return replace(
                _succeeded(state),
                enabled=True,
                enabled_at=event.enabled_at,
                enabled_by_session=event.session_id,
                secret=state.pending_secret,
                pending_secret=None,
                pending_expires_at=None,
                last_time_step=event.time_step,
                code_hashes=tuple(event.recovery_code_hashes),
            )
        case ev.OtpVerified():
            return replace(_succeeded(state), last_time_step=event.time_step)
        case ev.RecoveryCodeUsed():
            hashes = list(state.code_hashes)
            hashes[event.code_index] = None
            return replace(_succeeded(state), code_hashes=tuple(hashes))
        case ev.OtpFailed():
            return replace(state, failures=event.consecutive_failures)
        case ev.SecondFactorLocked():
            return replace(
                state,
                failures=0,
                lock_count=state.lock_count + 1,
                locked_until=event.until,
                last_locked_at=event.locked_at,
            )
        case ev.RecoveryCodesRegenerated():
            return replace(state, code_hashes=tuple(event.recovery_code_hashes))
        case ev.TwoFactorDisabled() | ev.ResetCompleted():
            return TwoFactorState(last_locked_at=state.last_locked_at)
        case ev.ResetRequested():
            return replace(
                state,
                reset=PendingReset(
                    event.request_id, event.requested_by, event.ticket, event.reason
                ),
            )
        case ev.ResetApproved():
            assert state.reset is not None
            return replace(
                state,
                reset=replace(
                    state.reset, approved_by=event.approved_by, effective_at=event.effective_at
                ),
            )
        case ev.ResetCancelled():
            return replace(state, reset=None)
    raise TypeError(f"not a twofactor event: {event.type}")


def _succeeded(state: TwoFactorState) -> TwoFactorState:
    return replace(state, failures=0, lock_count=0, locked_until=None)


def fold(state: TwoFactorState, events: Iterable[DomainEvent]) -> TwoFactorState:
    return base.fold(evolve, state, events)


def reset_is_due(state: TwoFactorState, now: datetime) -> bool:
    """Has an approved reset's cooling-off ended? (It then counts as done.)"""
    reset = state.reset
    return bool(reset and reset.effective_at is not None and reset.effective_at <= now)


def requires_second_factor(state: TwoFactorState, now: datetime) -> bool:
    """Does logging in need the second factor? (An approved reset past its delay: no.)"""
    return state.enabled and not reset_is_due(state, now)


def due_events(state: TwoFactorState, now: datetime) -> list[DomainEvent]:
    """A reset whose cooling-off ended is recorded by the next command on the stream
    (the effective state already counts it: ``requires_second_factor`` says no)."""
    if reset_is_due(state, now):
        assert state.reset is not None
        return [ev.ResetCompleted(request_id=state.reset.request_id)]
    return []


def password_only_allowed(state: TwoFactorState, session_id: str) -> bool:
    """May a session that logged in with the password alone (acr aal1) act for the account?

    Only while the account has no second factor, or for the session that turned it on
    (it proved the first code); every other password-only session lost that right the
    moment 2FA was enabled, whether or not its revocation has been consumed yet.
    """
    return not state.enabled or state.enabled_by_session == session_id
