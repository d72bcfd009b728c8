"""Password failures are throttled, not locked.

After ``threshold`` consecutive failures each further attempt waits a growing delay
(capped). Failures on a *trusted device* (one that logged in before, proven by a device
token) are counted apart from the rest, so someone who knows only a username can slow
down strangers' guesses but cannot keep the owner, on their own device, out. The second
factor has its own, stricter lockout (``shared.domain.twofactor.lockout``); a correct
password never clears second-factor failures.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from shared.domain import events as ev
from shared.domain.account.sessions import revoke_other_sessions
from shared.domain.account.state import AccountState, Throttle
from shared.domain.base import DomainEvent


@dataclass(frozen=True, slots=True)
class PasswordPolicy:
    threshold: int = 10
    base_delay: timedelta = timedelta(seconds=1)
    max_delay: timedelta = timedelta(minutes=15)

    def delay(self, failures: int) -> timedelta:
        if failures < self.threshold:
            return timedelta(0)
        return min(self.max_delay, self.base_delay * (1 << min(failures - self.threshold, 40)))


def retry_password_at(
    state: AccountState, trusted_device: bool, now: datetime, policy: PasswordPolicy
) -> datetime | None:
    """When a password may be tried again, or None if it may be tried now."""
    return throttled_until(state.throttle(trusted_device), now, policy)


def throttled_until(bucket: Throttle, now: datetime, policy: PasswordPolicy) -> datetime | None:
    """When the next password may be tried after ``bucket``'s failures, if not now."""
    if bucket.last_failure_at is None:
        return None
    ready = bucket.last_failure_at + policy.delay(bucket.failures)
    return ready if ready > now else None


def fail_password(
    state: AccountState, trusted_device: bool, now: datetime, policy: PasswordPolicy
) -> list[DomainEvent]:
    """Count a wrong password. The throttle is derived from these counts: no lock event,
    since it is a growing delay, not a lock (``account.locked`` is the second factor's)."""
    failures = state.throttle(trusted_device).failures + 1
    return [
        ev.LoginFailed(
            reason="password",
            consecutive_failures=failures,
            trusted_device=trusted_device,
            at=now,
        )
    ]


def change_password(state: AccountState, new_hash: str, current_session: str) -> list[DomainEvent]:
    """A new password ends every other session."""
    return [
        ev.PasswordChanged(password_hash=new_hash),
        *revoke_other_sessions(state, current_session, "password_changed"),
    ]
