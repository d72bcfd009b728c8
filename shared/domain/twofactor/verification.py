"""Checking a second factor: the TOTP replay rule and single-use recovery codes.

The caller matched the code outside the domain (which time-step a TOTP code matched,
which recovery code hash it matched: secrets never enter here in clear); these
decisions say whether that match counts. A TOTP time-step is accepted once: never at
or below ``last_time_step``. A recovery code is spent by the event that accepts it.
"""

from __future__ import annotations

from datetime import datetime

from shared.domain import events as ev
from shared.domain.base import DomainEvent
from shared.domain.errors import NotEnabled
from shared.domain.twofactor.lockout import (
    Verdict,
    count_failure,
    is_locked,
    refused_while_locked,
)
from shared.domain.twofactor.policy import Policy
from shared.domain.twofactor.reset import cancelled_by_owner
from shared.domain.twofactor.state import RECOVERY_CODE, TOTP, TwoFactorState, due_events, fold

__all__ = ["redeem_recovery_code", "verify_otp"]


def verify_otp(
    state: TwoFactorState, matched_step: int | None, purpose: str, now: datetime, policy: Policy
) -> Verdict:
    """Check a TOTP code: a new time-step above the last accepted one, not while locked."""
    due = _checkable(state, now)
    state = fold(state, due)
    if is_locked(state, now):
        return refused_while_locked(state, due)
    if matched_step is None:
        return count_failure(state, due, TOTP, purpose, "invalid_code", now, policy)
    if matched_step <= state.last_time_step:
        return count_failure(state, due, TOTP, purpose, "replayed", now, policy)
    verified = ev.OtpVerified(time_step=matched_step, purpose=purpose)
    return Verdict((*due, verified, *cancelled_by_owner(state)), True)


def redeem_recovery_code(
    state: TwoFactorState, matched_index: int | None, purpose: str, now: datetime, policy: Policy
) -> Verdict:
    """Spend the recovery code at ``matched_index`` (the one the caller's hash check found)."""
    due = _checkable(state, now)
    state = fold(state, due)
    if is_locked(state, now):
        return refused_while_locked(state, due)
    if (
        matched_index is None
        or not 0 <= matched_index < len(state.code_hashes)
        or state.code_hashes[matched_index] is None
    ):
        return count_failure(state, due, RECOVERY_CODE, purpose, "invalid_code", now, policy)
    used = ev.RecoveryCodeUsed(
        code_index=matched_index, purpose=purpose, remaining=state.codes_left - 1
    )
    return Verdict((*due, used, *cancelled_by_owner(state)), True)


def _checkable(state: TwoFactorState, now: datetime) -> list[DomainEvent]:
    due = due_events(state, now)
    if not fold(state, due).enabled:
        raise NotEnabled("two-factor authentication is off")
    return due


def check_second_factor(
    state: TwoFactorState,
    method: str,
    matched: int | None,
    purpose: str,
    now: datetime,
    policy: Policy,
) -> Verdict:
    """Decide on a code of ``method`` (``TOTP`` or ``RECOVERY_CODE``) that the caller matched
    to ``matched`` (a time-step, or a recovery code's index; None when nothing matched)."""
    if method == TOTP:
        return verify_otp(state, matched, purpose, now, policy)
    return redeem_recovery_code(state, matched, purpose, now, policy)
