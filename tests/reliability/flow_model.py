"""What the login and 2FA flow promise, as a small model written without the domain code.

``test_properties.py`` runs every command through the real use cases (on a real event
store) and against this model, and compares. The model plays the user and their phone,
so it holds cleartext (TOTP secrets, recovery codes, passwords) that the aggregates
never see. It computes
OTPs with ``cryptography``'s HOTP, not with ``shared.security.totp``, and its lockout and
throttle lengths by doubling step by step, not with the policies' own formulas.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from cryptography.hazmat.primitives.hashes import SHA1
from cryptography.hazmat.primitives.twofactor.hotp import HOTP

from shared.domain.account.password import PasswordPolicy
from shared.domain.errors import (
    AlreadyEnabled,
    DomainError,
    NoPendingEnrolment,
    NotAllowed,
    NotEnabled,
)
from shared.domain.twofactor.policy import Policy
from shared.security.recovery import ALPHABET

__all__ = ["Expect", "Model", "ModelSession", "phone_code", "recovery_code", "totp_secret"]

PERIOD = timedelta(seconds=30)
WINDOW = 1  # steps either side of now that a code may come from (the services' default)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def totp_secret(n: int) -> str:
    """The ``n``-th enrolment secret: 160 bits in base32, fixed so runs repeat."""
    digest = hashlib.sha256(f"totp-secret-{n}".encode()).digest()[:20]
    return base64.b32encode(digest).decode().rstrip("=")


def recovery_code(n: int) -> str:
    """The ``n``-th recovery code, in display form (``xxxx-xxxx-xxxx-xxxx``)."""
    digest = hashlib.sha256(f"recovery-code-{n}".encode()).digest()
    compact = "".join(ALPHABET[b % len(ALPHABET)] for b in digest[:16])
    return "-".join(compact[i : i + 4] for i in range(0, 16, 4))


def phone_code(secret: str, step: int) -> str:
    """What an authenticator app shows for ``secret`` at time-step ``step``."""
    key = base64.b32decode(secret + "=" * (-len(secret) % 8))
    return HOTP(key, 6, SHA1(), enforce_key_length=False).generate(step).decode()


def step_at(now: datetime) -> int:
    return (now - _EPOCH) // PERIOD


def doubled(base: timedelta, times: int, cap: timedelta) -> timedelta:
    length = min(base, cap)
    for _ in range(times):
        length = min(cap, length * 2)
    return length


@dataclass(frozen=True)
class Expect:
    """What a second-factor check should answer (the fields of a ``Verdict``)."""

    accepted: bool
    reason: str | None = None
    attempts_left: int | None = None
    locked_until: datetime | None = None


@dataclass
class ModelReset:
    request_id: str
    requested_by: str
    approved_by: str | None = None
    effective_at: datetime | None = None


@dataclass
class ModelSession:
    expires_at: datetime
    tokens: list[str]  # refresh token of each generation; the last one is current


@dataclass
class Model:
    policy: Policy
    passwords: PasswordPolicy
    account_id: str
    password: str
    email: str
    # The account: password throttle by bucket (trusted device or not), logins.
    failures: dict[bool, int] = field(default_factory=lambda: {False: 0, True: 0})
    failed_at: dict[bool, datetime | None] = field(
        default_factory=lambda: {False: None, True: None}
    )
    challenges: dict[str, tuple[datetime, datetime]] = field(default_factory=dict)  # open ones
    sessions: dict[str, ModelSession] = field(default_factory=dict)
    # The second factor.
    on: bool = False
    enabled_by: str | None = None  # the session that confirmed the first code
    secret: str | None = None
    pending: tuple[str, datetime] | None = None
    highest_step: dict[str, int] = field(default_factory=dict)  # by secret
    codes: list[str] = field(default_factory=list)  # the current set, by position
    spent: set[str] = field(default_factory=set)
    retired: set[str] = field(default_factory=set)  # codes of replaced or dropped sets
    retired_secrets: list[str] = field(default_factory=list)
    fails: int = 0  # wrong codes since the last success or lock
    locks: int = 0  # locks since the last success
    locked_until: datetime | None = None
    last_lock_at: datetime | None = None
    reset: ModelReset | None = None

    # Time --------------------------------------------------------------------------

    def settle(self, now: datetime) -> None:
        """An approved reset whose cooling-off is over has taken effect."""
        reset = self.reset
        if reset and reset.effective_at is not None and reset.effective_at <= now:
            self._switch_off()

    def locked(self, now: datetime) -> bool:
        return self.locked_until is not None and self.locked_until > now

    # Passwords ---------------------------------------------------------------------

    def retry_at(self, trusted: bool, now: datetime) -> datetime | None:
        count, last = self.failures[trusted], self.failed_at[trusted]
        if last is None or count < self.passwords.threshold:
            return None
        wait = doubled(
            self.passwords.base_delay, count - self.passwords.threshold, self.passwords.max_delay
        )
        return last + wait if last + wait > now else None

    def wrong_password(self, trusted: bool, now: datetime) -> None:
        self.failures[trusted] += 1
        self.failed_at[trusted] = now

    def right_password(self) -> None:
        self.failures = {False: 0, True: 0}
        self.failed_at = {False: None, True: None}

    def live_challenge(self, challenge_id: str, now: datetime) -> tuple[datetime, datetime] | None:
        times = self.challenges.get(challenge_id)
        return times if times is not None and times[1] > now else None

    def live_session(self, session_id: str, now: datetime) -> ModelSession | None:
        session = self.sessions.get(session_id)
        return session if session is not None and session.expires_at > now else None

    # The second factor ---------------------------------------------------------------

    def match(self, secret: str | None, text: str, now: datetime) -> int | None:
        if secret is None:
            return None
        current = step_at(now)
        for step in range(current - WINDOW, current + WINDOW + 1):
            if phone_code(secret, step) == text:
                return step
        return None

    def prove(self, method: str, text: str, now: datetime) -> Expect | None:
        """Check an OTP or recovery code; None when 2FA is off (the check is refused)."""
        if not self.on:
            return None
        if self.locked(now):
            return Expect(False, "locked", 0, self.locked_until)
        if method == "totp":
            step = self.match(self.secret, text, now)
            if step is None:
                return self._fail(now, "invalid_code")
            assert self.secret is not None
            if step <= self.highest_step.get(self.secret, -1):
                return self._fail(now, "replayed")
            self.highest_step[self.secret] = step
        else:
            compact = "".join(text.lower().split()).replace("-", "")
            live = [c for c in self.codes if c not in self.spent]
            found = [c for c in live if c.replace("-", "") == compact]
            if not found:
                return self._fail(now, "invalid_code")
            self.spent.add(found[0])
        self._succeeded()
        self.reset = None  # the owner still has a second factor: no reset needed
        return Expect(True)

    def start_enrolment(self, secret: str, now: datetime) -> type[DomainError] | None:
        if self.on:
            return AlreadyEnabled
        if self.pending is not None:
            self.retired_secrets.append(self.pending[0])
        self.pending = (secret, now + self.policy.enrolment_ttl)
        return None

    def confirm(
        self, text: str, codes: list[str], now: datetime, session: str | None = None
    ) -> Expect | type[DomainError]:
        if self.on:
            return AlreadyEnabled
        if self.pending is None or self.pending[1] <= now:
            return NoPendingEnrolment
        if self.locked(now):
            return Expect(False, "locked", 0, self.locked_until)
        secret = self.pending[0]
        step = self.match(secret, text, now)
        if step is None:
            return self._fail(now, "invalid_code")
        self.on, self.secret, self.pending = True, secret, None
        self.enabled_by = session
        self.highest_step[secret] = step
        self.codes = codes
        self._succeeded()
        return Expect(True)

    def regenerate(self, codes: list[str]) -> None:
        self.retired.update(self.codes)
        self.codes = codes

    def disable(self) -> None:
        self._switch_off()

    def _fail(self, now: datetime, reason: str) -> Expect:
        self.fails += 1
        if self.fails < self.policy.max_failures:
            return Expect(False, reason, self.policy.max_failures - self.fails)
        length = doubled(self.policy.lock_base, self.locks, self.policy.lock_cap)
        self.fails, self.locks = 0, self.locks + 1
        self.locked_until, self.last_lock_at = now + length, now
        return Expect(False, "locked", 0, self.locked_until)

    def _succeeded(self) -> None:
        self.fails, self.locks, self.locked_until = 0, 0, None

    def password_only_allowed(self, session: str) -> bool:
        """May a session that logged in with the password alone still act?"""
        return not self.on or session == self.enabled_by

    def _switch_off(self) -> None:
        self.enabled_by = None
        if self.secret is not None:
            self.retired_secrets.append(self.secret)
        self.retired.update(self.codes)
        self.on, self.secret, self.pending, self.codes, self.reset = False, None, None, [], None
        self._succeeded()

    # Support reset -------------------------------------------------------------------

    def request_reset(self, request_id: str, by: str) -> type[DomainError] | None:
        if by == self.account_id:
            return NotAllowed
        if not self.on:
            return NotEnabled
        if self.reset is not None:
            return NotAllowed
        self.reset = ModelReset(request_id, by)
        return None

    def approve_reset(self, request_id: str, by: str, now: datetime) -> type[DomainError] | None:
        reset = self.reset
        if reset is None or reset.request_id != request_id or reset.approved_by is not None:
            return NotAllowed
        if by in (self.account_id, reset.requested_by):
            return NotAllowed
        reset.approved_by, reset.effective_at = by, now + self.policy.reset_cooling_off
        self.settle(now)
        return None

    def cancel_reset(self, request_id: str) -> type[DomainError] | None:
        if self.reset is None or self.reset.request_id != request_id:
            return NotAllowed
        self.reset = None
        return None
