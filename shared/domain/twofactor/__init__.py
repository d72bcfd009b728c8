"""The TwoFactor aggregate (stream ``twofactor-{account id}``): a fold and its decisions.

Both services call these functions, so replay protection, lockout and the support
reset live in one place, each rule in the file named after it: ``state`` (the fold),
``policy``, ``verification`` (the TOTP replay rule, single-use recovery codes),
``lockout``, ``enrolment``, ``reset``, ``status``. Each decision takes the state folded
from the stream, the facts the caller computed outside the domain (which TOTP time-step
a code matched, which recovery code hash it matched: the secrets never enter here in
clear), and the time; it returns the events to append, or raises a ``DomainError``. The
caller appends them with the loaded version as the expected one, so two racing
decisions cannot both stand.
"""

from shared.domain.twofactor.enrolment import (
    confirm_enrolment,
    disable,
    regenerate_recovery_codes,
    secret_to_confirm,
    start_enrolment,
)
from shared.domain.twofactor.lockout import (
    Verdict,
    challenge_still_open,
    is_locked,
    locked_out_since,
)
from shared.domain.twofactor.policy import Policy
from shared.domain.twofactor.reset import approve_reset, cancel_reset, request_reset
from shared.domain.twofactor.state import (
    RECOVERY_CODE,
    TOTP,
    PendingReset,
    TwoFactorState,
    due_events,
    evolve,
    fold,
    password_only_allowed,
    requires_second_factor,
    reset_is_due,
)
from shared.domain.twofactor.status import TwoFactorStatus, status
from shared.domain.twofactor.verification import (
    check_second_factor,
    redeem_recovery_code,
    verify_otp,
)

__all__ = [
    "RECOVERY_CODE",
    "TOTP",
    "PendingReset",
    "Policy",
    "TwoFactorState",
    "TwoFactorStatus",
    "Verdict",
    "approve_reset",
    "cancel_reset",
    "challenge_still_open",
    "check_second_factor",
    "confirm_enrolment",
    "disable",
    "due_events",
    "evolve",
    "fold",
    "is_locked",
    "locked_out_since",
    "password_only_allowed",
    "redeem_recovery_code",
    "regenerate_recovery_codes",
    "request_reset",
    "requires_second_factor",
    "reset_is_due",
    "secret_to_confirm",
    "start_enrolment",
    "status",
    "verify_otp",
]
