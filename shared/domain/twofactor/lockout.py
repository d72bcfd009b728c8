"""The lockout rule: consecutive wrong codes lock the second factor, for longer each time.

A ``Verdict`` is the outcome of any second-factor check; its events are appended
whether it was accepted or not, so failures count even when the request is refused.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from shared.domain import events as ev
from shared.domain.base import DomainEvent
from shared.domain.twofactor.policy import Policy
from shared.domain.twofactor.state import TwoFactorState, requires_second_factor

__all__ = [
    "Verdict",
    "challenge_still_open",
    "count_failure",
    "is_locked",
    "locked_out_since",
    "refused_while_locked",
]


@dataclass(frozen=True, slots=True)
class Verdict:
    """The outcome of a second-factor check; ``events`` are appended either way."""

    events: tuple[DomainEvent, ...]
    accepted: bool
    reason: str | None = None  # invalid_code | replayed | locked
    attempts_left: int | None = None
    locked_until: datetime | None = None


def is_locked(state: TwoFactorState, now: datetime) -> bool:
    return state.locked_until is not None and state.locked_until > now


def locked_out_since(state: TwoFactorState, moment: datetime, now: datetime) -> bool:
    """Did a lockout begin at or after ``moment`` and end already?

    A login that began before a lockout must not outlive it: once the lock is over its
    challenge is dead (while the lock lasts, the check itself answers ``locked``).
    """
    locked_at = state.last_locked_at
    return not is_locked(state, now) and locked_at is not None and locked_at >= moment


def challenge_still_open(state: TwoFactorState, issued_at: datetime, now: datetime) -> bool:
    """May a login whose password step was at ``issued_at`` still present a second factor?

    Not once the second factor is no longer required, and not after a lockout that began
    since then (it killed the challenge: the lock's end must not revive it).
    """
    return requires_second_factor(state, now) and not locked_out_since(state, issued_at, now)


def refused_while_locked(state: TwoFactorState, due: Sequence[DomainEvent]) -> Verdict:
    """No code is even looked at while the second factor is locked."""
    return Verdict(tuple(due), False, "locked", 0, state.locked_until)


def count_failure(
    state: TwoFactorState,
    due: Sequence[DomainEvent],
    method: str,
    purpose: str,
    reason: str,
    now: datetime,
    policy: Policy,
) -> Verdict:
    """One more wrong code; the one that reaches ``max_failures`` locks the factor."""
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
