"""The TwoFactor aggregate (stream ``twofactor-{account id}``): a fold and its decisions.

Both services call these functions, so replay protection, lockout and the support
reset live in one place. Each decision takes the state folded from the stream, the
facts the caller computed outside the domain (which TOTP time-step a code matched,
which recovery code hash it matched: the secrets never enter here in clear), and the
time; it returns the events to append, or raises a ``DomainError``. The caller appends
them with the loaded version as the expected one, so two racing decisions cannot both
stand.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from shared.domain import events as ev
from shared.domain.errors import AlreadyEnabled, NoPendingEnrolment, NotAllowed, NotEnabled
from shared.events import DomainEvent

__all__ = [
    "Policy",
    "TwoFactorFold",
    "TwoFactorState",
    "Verdict",
    "approve_reset",
    "cancel_reset",
    "confirm_enrolment",
    "disable",
    "due_events",
    "evolve",
    "is_locked",
    "redeem_recovery_code",
    "regenerate_recovery_codes",
    "request_reset",
    "requires_second_factor",
    "start_enrolment",
    "verify_otp",
]

TOTP, RECOVERY_CODE = "totp", "recovery_code"


@dataclass(frozen=True, slots=True)
class Policy:
    """Lockout and enrolment rules; every replica folds the same events the same way."""

    max_failures: int = 5
    lock_base: timedelta = timedelta(minutes=15)
    lock_cap: timedelta = timedelta(hours=24)
    enrolment_ttl: timedelta = timedelta(minutes=10)
    reset_cooling_off: timedelta = timedelta(hours=24)

    def lock_duration(self, previous_locks: int) -> timedelta:
        """15 min, then doubling with each further lock, capped (defaults)."""
        return min(self.lock_cap, self.lock_base * (1 << min(previous_locks, 32)))


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


@dataclass(frozen=True, slots=True)
class Verdict:
    """The outcome of a second-factor check; ``events`` are appended either way."""

    events: tuple[DomainEvent, ...]
    accepted: bool
    reason: str | None = None  # invalid_code | replayed | locked
    attempts_left: int | None = None
    locked_until: datetime | None = None


# The fold -----------------------------------------------------------------------------


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


def fold(state: TwoFactorState, events: Sequence[DomainEvent]) -> TwoFactorState:
    for event in events:
        state = evolve(state, event)
    return state


class TwoFactorFold:
    """The ``Fold`` the repository loads ``twofactor-*`` streams with."""

    snapshot_type = "twofactor"
    snapshot_schema_version = 2

    def initial(self) -> TwoFactorState:
        return TwoFactorState()

    def evolve(self, state: TwoFactorState, event: DomainEvent) -> TwoFactorState:
        return evolve(state, event)

    def to_snapshot(self, state: TwoFactorState) -> dict[str, Any]:
        data = {name: getattr(state, name) for name in TwoFactorState.__dataclass_fields__}
        data["reset"] = None if state.reset is None else _asdict(state.reset)
        return data

    def from_snapshot(self, data: dict[str, Any]) -> TwoFactorState:
        values = dict(data)
        for name in ("enabled_at", "pending_expires_at", "locked_until", "last_locked_at"):
            values[name] = _time(values[name])
        values["code_hashes"] = tuple(values["code_hashes"])
        if values["reset"] is not None:
            reset = dict(values["reset"])
            reset["effective_at"] = _time(reset["effective_at"])
            values["reset"] = PendingReset(**reset)
        return TwoFactorState(**values)


def _asdict(reset: PendingReset) -> dict[str, Any]:
    return {name: getattr(reset, name) for name in PendingReset.__dataclass_fields__}


def _time(value: str | datetime | None) -> datetime | None:
    return datetime.fromisoformat(value) if isinstance(value, str) else value


# Questions ----------------------------------------------------------------------------


def reset_isdue_events(state: TwoFactorState, now: datetime) -> bool:
    reset = state.reset
    return bool(reset and reset.effective_at is not None and reset.effective_at <= now)


def requires_second_factor(state: TwoFactorState, now: datetime) -> bool:
    """Does logging in need the second factor? (An approved reset past its delay: no.)"""
    return state.enabled and not reset_isdue_events(state, now)


def is_locked(state: TwoFactorState, now: datetime) -> bool:
    return state.locked_until is not None and state.locked_until > now


def due_events(state: TwoFactorState, now: datetime) -> list[DomainEvent]:
    """A reset whose cooling-off ended is recorded by the next command on the stream
    (the effective state already counts it: ``requires_second_factor`` says no)."""
    if reset_isdue_events(state, now):
        assert state.reset is not None
        return [ev.ResetCompleted(request_id=state.reset.request_id)]
    return []


# Decisions ----------------------------------------------------------------------------


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


def pending_secret(state: TwoFactorState, now: datetime) -> str:
    """The ciphertext of the enrolment waiting for its first code."""
    if state.enabled and not reset_isdue_events(state, now):
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
    pending_secret(state, now)  # raises when there is nothing to confirm
    if is_locked(state, now):
        return Verdict(tuple(due), False, "locked", 0, state.locked_until)
    if matched_step is None:
        return _failure(state, due, TOTP, "enrolment", "invalid_code", now, policy)
    enabled = ev.TwoFactorEnabled(
        session_id=session_id,
        enabled_at=now,
        time_step=matched_step,
        recovery_code_hashes=tuple(code_hashes),
    )
    return Verdict((*due, enabled), True)


def verify_otp(
    state: TwoFactorState, matched_step: int | None, purpose: str, now: datetime, policy: Policy
) -> Verdict:
    """Check a TOTP code: a new time-step above the last accepted one, not while locked."""
    due = _checkable(state, now)
    state = fold(state, due)
    if is_locked(state, now):
        return Verdict(tuple(due), False, "locked", 0, state.locked_until)
    if matched_step is None:
        return _failure(state, due, TOTP, purpose, "invalid_code", now, policy)
    if matched_step <= state.last_time_step:
        return _failure(state, due, TOTP, purpose, "replayed", now, policy)
    verified = ev.OtpVerified(time_step=matched_step, purpose=purpose)
    return Verdict((*due, verified, *_cancel_reset(state, "second factor used")), True)


def redeem_recovery_code(
    state: TwoFactorState, matched_index: int | None, purpose: str, now: datetime, policy: Policy
) -> Verdict:
    """Spend the recovery code at ``matched_index`` (the one the caller's hash check found)."""
    due = _checkable(state, now)
    state = fold(state, due)
    if is_locked(state, now):
        return Verdict(tuple(due), False, "locked", 0, state.locked_until)
    if (
        matched_index is None
        or not 0 <= matched_index < len(state.code_hashes)
        or state.code_hashes[matched_index] is None
    ):
        return _failure(state, due, RECOVERY_CODE, purpose, "invalid_code", now, policy)
    used = ev.RecoveryCodeUsed(
        code_index=matched_index, purpose=purpose, remaining=state.codes_left - 1
    )
    return Verdict((*due, used, *_cancel_reset(state, "second factor used")), True)


def regenerate_recovery_codes(
    state: TwoFactorState, code_hashes: Sequence[str], now: datetime
) -> list[DomainEvent]:
    """A new set of codes (after a verified second factor); the old set stops at once."""
    if not fold(state, due_events(state, now)).enabled:  # off, or a reset took effect
        raise NotEnabled("two-factor authentication is off")
    return [ev.RecoveryCodesRegenerated(recovery_code_hashes=tuple(code_hashes))]


def password_only_allowed(state: TwoFactorState, session_id: str) -> bool:
    """May a session that logged in with the password alone (acr aal1) act for the account?

    Only while the account has no second factor, or for the session that turned it on
    (it proved the first code); every other password-only session lost that right the
    moment 2FA was enabled, whether or not its revocation has been consumed yet.
    """
    return not state.enabled or state.enabled_by_session == session_id


def disable(
    state: TwoFactorState, method: str, session_id: str | None = None, *, now: datetime
) -> list[DomainEvent]:
    """Turn 2FA off (after a verified second factor)."""
    if not fold(state, due_events(state, now)).enabled:  # off, or a reset took effect
        raise NotEnabled("two-factor authentication is off")
    return [ev.TwoFactorDisabled(session_id=session_id, method=method)]


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
    if reset_isdue_events(state, now):
        raise NotAllowed("this reset has already taken effect")
    return [ev.ResetCancelled(request_id=request_id, cancelled_by=cancelled_by, reason=reason)]


def _open_reset(state: TwoFactorState, request_id: str) -> PendingReset:
    if state.reset is None or state.reset.request_id != request_id:
        raise NotAllowed("no such pending reset")
    return state.reset


def _checkable(state: TwoFactorState, now: datetime) -> list[DomainEvent]:
    due = due_events(state, now)
    if not fold(state, due).enabled:
        raise NotEnabled("two-factor authentication is off")
    return due


def _cancel_reset(state: TwoFactorState, reason: str) -> list[DomainEvent]:
    """The owner proved the second factor: a pending reset was not needed."""
    if state.reset is None:
        return []
    return [
        ev.ResetCancelled(
            request_id=state.reset.request_id, cancelled_by="account-owner", reason=reason
        )
    ]


def _failure(
    state: TwoFactorState,
    due: list[DomainEvent],
    method: str,
    purpose: str,
    reason: str,
    now: datetime,
    policy: Policy,
) -> Verdict:
    failures = state.failures + 1
    failed = ev.OtpFailed(
        method=method, purpose=purpose, reason=reason, consecutive_failures=failures
    )
    if failures < policy.max_failures:
        return Verdict((*due, failed), False, reason, policy.max_failures - failures)
    until = now + policy.lock_duration(state.lock_count)
    locked = ev.SecondFactorLocked(
        factor="second_factor", locked_at=now, until=until, consecutive_failures=failures
    )
    return Verdict((*due, failed, locked), False, "locked", 0, until)
