"""What both services show of an account's second factor (the profile, the 2FA page)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from shared.domain.twofactor.state import PendingReset, TwoFactorState, requires_second_factor

__all__ = ["TwoFactorStatus", "status"]


@dataclass(frozen=True, slots=True)
class TwoFactorStatus:
    enabled: bool
    enabled_at: datetime | None
    recovery_codes_left: int
    pending_enrolment_expires_at: datetime | None
    reset: PendingReset | None


def status(state: TwoFactorState, now: datetime) -> TwoFactorStatus:
    """The status in effect at ``now``: a reset past its cooling-off counts as done."""
    on = requires_second_factor(state, now)
    expires = state.pending_expires_at
    pending = expires if state.pending_secret and expires and expires > now else None
    return TwoFactorStatus(
        enabled=on,
        enabled_at=state.enabled_at if on else None,
        recovery_codes_left=state.codes_left if on else 0,
        pending_enrolment_expires_at=None if on else pending,
        reset=state.reset if on else None,
    )
