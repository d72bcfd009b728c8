"""The second factor's rules: lockout, enrolment lifetime, the reset's cooling-off."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

__all__ = ["Policy"]


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
