"""The Account aggregate (stream ``account-{id}``): identity, password, roles, sessions.

One file per concern: ``state`` (the fold), ``password`` (the throttle), ``login`` (the
mfa challenge), ``sessions``, ``profile`` (registration, email, roles).
"""

from shared.domain.account.login import complete_login, open_challenge, open_challenge_for
from shared.domain.account.password import (
    PasswordPolicy,
    change_password,
    fail_password,
    retry_password_at,
    throttled_until,
)
from shared.domain.account.profile import change_email, register, set_role
from shared.domain.account.sessions import (
    active_session,
    end_session,
    reauthenticate,
    refresh_session,
    revoke_other_sessions,
)
from shared.domain.account.state import (
    ROLES,
    AccountState,
    Challenge,
    Session,
    Throttle,
    evolve,
    fold,
)

__all__ = [
    "ROLES",
    "AccountState",
    "Challenge",
    "PasswordPolicy",
    "Session",
    "Throttle",
    "active_session",
    "change_email",
    "change_password",
    "complete_login",
    "end_session",
    "evolve",
    "fail_password",
    "fold",
    "open_challenge",
    "open_challenge_for",
    "reauthenticate",
    "refresh_session",
    "register",
    "retry_password_at",
    "revoke_other_sessions",
    "set_role",
    "throttled_until",
]
