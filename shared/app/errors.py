"""What use cases refuse, as typed errors; the entry points map them (the web layer in
one table, ``shared.web.problems``; the accounts CLI prints them).

Each error has a machine ``code`` and a human ``title`` (its message); the few that
carry more say so in their fields. The domain's own refusals (``DomainError``) are
mapped beside these.

Errors::

    AppError
    ├── InvalidCredentials        username or password wrong (login)
    ├── WrongPassword             the current password of a signed-in user is wrong
    ├── Throttled                 too many wrong passwords: ``retry_after`` seconds
    ├── SecondFactorRequired      2FA is on: an OTP or a recovery code is needed too
    ├── SecondFactorRefused       the code was refused: ``verdict``, ``retry_after`` when locked
    ├── WeakPassword              a new password breaks the rules: ``problems``
    ├── PasswordMismatch          the two passwords typed differ (CLI)
    ├── UsernameTaken
    ├── ReauthenticationRequired  the password was entered too long ago: ``max_age_seconds``
    ├── MfaTokenInvalid           the login's second step expired or was used
    ├── SessionEnded              the token's session is over
    ├── RefreshTokenInvalid
    └── RefreshTokenReused        a spent refresh token: the session is revoked
"""

from __future__ import annotations

from shared.domain.twofactor.lockout import Verdict

__all__ = [
    "AppError",
    "InvalidCredentials",
    "MfaTokenInvalid",
    "PasswordMismatch",
    "ReauthenticationRequired",
    "RefreshTokenInvalid",
    "RefreshTokenReused",
    "SecondFactorRefused",
    "SecondFactorRequired",
    "SessionEnded",
    "Throttled",
    "UsernameTaken",
    "WeakPassword",
    "WrongPassword",
]


class AppError(Exception):
    """A request a use case refuses; ``code`` names it for machines, the message for people."""

    code = "refused"
    title = "The request was refused"

    def __init__(self, title: str | None = None) -> None:
        super().__init__(title or self.title)

    @property
    def message(self) -> str:
        return str(self)


class InvalidCredentials(AppError):
    code = "invalid_credentials"
    title = "Username or password is wrong"


class WrongPassword(AppError):
    code = "invalid_password"
    title = "The current password is wrong"


class Throttled(AppError):
    code = "too_many_attempts"
    title = "Too many wrong passwords: wait before trying again"

    def __init__(self, retry_after: int) -> None:
        super().__init__()
        self.retry_after = retry_after


class SecondFactorRequired(AppError):
    code = "second_factor_required"
    title = "Two-factor authentication is on: send an OTP or a recovery code too"
    methods = ("totp", "recovery_code")


class SecondFactorRefused(AppError):
    """The domain's verdict was no: a wrong or replayed code, or the factor is locked."""

    def __init__(self, verdict: Verdict, retry_after: int | None = None) -> None:
        self.verdict = verdict
        self.retry_after = retry_after
        super().__init__(
            "Too many wrong codes: the second factor is locked"
            if self.locked
            else "The code is not valid"
        )

    @property
    def locked(self) -> bool:
        return self.verdict.reason == "locked" and self.verdict.locked_until is not None

    @property
    def code(self) -> str:  # type: ignore[override]
        return "second_factor_locked" if self.locked else "invalid_code"


class WeakPassword(AppError):
    code = "weak_password"
    title = "The password does not meet the rules"

    def __init__(self, problems: list[str], title: str | None = None) -> None:
        super().__init__(title)
        self.problems = problems


class PasswordMismatch(AppError):
    code = "password_mismatch"
    title = "The two passwords differ"


class UsernameTaken(AppError):
    code = "username_taken"
    title = "This username is taken"


class ReauthenticationRequired(AppError):
    code = "reauthentication_required"
    title = "Enter your password again first"

    def __init__(self, max_age_seconds: int) -> None:
        super().__init__()
        self.max_age_seconds = max_age_seconds


class MfaTokenInvalid(AppError):
    code = "invalid_mfa_token"
    title = "This login step has expired or was used; log in again"


class SessionEnded(AppError):
    code = "invalid_token"
    title = "The session has ended; log in again"


class RefreshTokenInvalid(AppError):
    code = "invalid_refresh_token"
    title = "The refresh token is not valid"


class RefreshTokenReused(AppError):
    code = "refresh_token_reused"
    title = "This refresh token was used before: the session is revoked"
