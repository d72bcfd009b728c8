"""Every domain event twofa stores, by stream.

Streams: ``account-{id}`` (the login identity) and ``twofactor-{id}`` (its second
factor). Fields that hold a secret carry only its ciphertext or one-way hash, and none of
them is ever published (see ``shared.messaging.contract``). ``ALL_EVENTS`` lists them
all; the event store's registry is built from it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from shared.domain.base import DomainEvent

# account-{id} ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class AccountRegistered(DomainEvent):
    type = "account.registered"
    username: str
    email: str
    password_hash: str


@dataclass(frozen=True, slots=True, kw_only=True)
class PasswordChanged(DomainEvent):
    type = "account.password_changed"
    password_hash: str


@dataclass(frozen=True, slots=True, kw_only=True)
class EmailChanged(DomainEvent):
    type = "account.email_changed"
    email: str
    previous_email: str


@dataclass(frozen=True, slots=True, kw_only=True)
class RoleGranted(DomainEvent):
    type = "account.role_granted"
    role: str


@dataclass(frozen=True, slots=True, kw_only=True)
class RoleRevoked(DomainEvent):
    type = "account.role_revoked"
    role: str


@dataclass(frozen=True, slots=True, kw_only=True)
class LoginSucceeded(DomainEvent):
    type = "login.succeeded"
    session_id: str
    amr: tuple[str, ...]
    acr: str
    challenge_id: str | None


@dataclass(frozen=True, slots=True, kw_only=True)
class LoginFailed(DomainEvent):
    type = "login.failed"
    reason: str
    consecutive_failures: int
    trusted_device: bool
    at: datetime


@dataclass(frozen=True, slots=True, kw_only=True)
class MfaChallengeOpened(DomainEvent):
    """The password was right and the second factor is required: an mfa challenge opens."""

    type = "login.mfa_required"
    challenge_id: str
    issued_at: datetime
    expires_at: datetime


@dataclass(frozen=True, slots=True, kw_only=True)
class Reauthenticated(DomainEvent):
    type = "session.reauthenticated"
    session_id: str
    amr: tuple[str, ...]
    auth_time: datetime


@dataclass(frozen=True, slots=True, kw_only=True)
class SessionStarted(DomainEvent):
    type = "session.started"
    session_id: str
    refresh_token_hash: str
    amr: tuple[str, ...]
    acr: str
    auth_time: datetime
    expires_at: datetime


@dataclass(frozen=True, slots=True, kw_only=True)
class SessionRefreshed(DomainEvent):
    type = "session.refreshed"
    session_id: str
    generation: int
    refresh_token_hash: str


@dataclass(frozen=True, slots=True, kw_only=True)
class SessionEnded(DomainEvent):
    type = "session.ended"
    session_id: str


@dataclass(frozen=True, slots=True, kw_only=True)
class SessionRevoked(DomainEvent):
    type = "session.revoked"
    session_id: str
    reason: str


# username-{name}: claims a username for one account (unique by the stream version) ---


@dataclass(frozen=True, slots=True, kw_only=True)
class UsernameClaimed(DomainEvent):
    type = "username.claimed"
    account_id: str


# twofactor-{id} ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class EnrolmentStarted(DomainEvent):
    type = "twofa.enrolment_started"
    encrypted_secret: str
    expires_at: datetime


@dataclass(frozen=True, slots=True, kw_only=True)
class TwoFactorEnabled(DomainEvent):
    type = "twofa.enabled"
    session_id: str | None
    enabled_at: datetime
    time_step: int
    recovery_code_hashes: tuple[str, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class OtpVerified(DomainEvent):
    type = "twofa.otp_verified"
    time_step: int
    purpose: str


@dataclass(frozen=True, slots=True, kw_only=True)
class OtpFailed(DomainEvent):
    type = "twofa.otp_failed"
    method: str
    purpose: str
    reason: str
    consecutive_failures: int


@dataclass(frozen=True, slots=True, kw_only=True)
class RecoveryCodeUsed(DomainEvent):
    type = "twofa.recovery_code_used"
    code_index: int
    purpose: str
    remaining: int


@dataclass(frozen=True, slots=True, kw_only=True)
class RecoveryCodesRegenerated(DomainEvent):
    type = "twofa.recovery_codes_regenerated"
    recovery_code_hashes: tuple[str, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class TwoFactorDisabled(DomainEvent):
    type = "twofa.disabled"
    session_id: str | None
    method: str


@dataclass(frozen=True, slots=True, kw_only=True)
class SecondFactorLocked(DomainEvent):
    type = "twofa.locked"
    factor: str
    locked_at: datetime
    until: datetime
    consecutive_failures: int


@dataclass(frozen=True, slots=True, kw_only=True)
class ResetRequested(DomainEvent):
    type = "twofa.reset_requested"
    request_id: str
    requested_by: str
    ticket: str
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ResetApproved(DomainEvent):
    type = "twofa.reset_approved"
    request_id: str
    approved_by: str
    effective_at: datetime


@dataclass(frozen=True, slots=True, kw_only=True)
class ResetCancelled(DomainEvent):
    type = "twofa.reset_cancelled"
    request_id: str
    cancelled_by: str
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ResetCompleted(DomainEvent):
    type = "twofa.reset_completed"
    request_id: str


ALL_EVENTS: tuple[type[DomainEvent], ...] = (
    AccountRegistered,
    PasswordChanged,
    EmailChanged,
    RoleGranted,
    RoleRevoked,
    LoginSucceeded,
    LoginFailed,
    MfaChallengeOpened,
    Reauthenticated,
    SessionStarted,
    SessionRefreshed,
    SessionEnded,
    SessionRevoked,
    UsernameClaimed,
    EnrolmentStarted,
    TwoFactorEnabled,
    OtpVerified,
    OtpFailed,
    RecoveryCodeUsed,
    RecoveryCodesRegenerated,
    TwoFactorDisabled,
    SecondFactorLocked,
    ResetRequested,
    ResetApproved,
    ResetCancelled,
    ResetCompleted,
)
