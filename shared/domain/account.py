"""The Account aggregate (stream ``account-{id}``): identity, password, roles, sessions.

Password failures are throttled, not locked: after ``threshold`` consecutive failures
each further attempt waits a growing delay (capped). Failures on a *trusted device*
(one that logged in before, proven by a device token) are counted apart from the rest,
so someone who knows only a username can slow down strangers' guesses but cannot keep
the owner, on their own device, out. The second factor has its own, stricter lockout
in ``shared.domain.twofactor``; a correct password never clears second-factor failures.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from shared.crypto import constant_time_equals
from shared.domain import events as ev
from shared.domain.errors import NotAllowed
from shared.events import DomainEvent

__all__ = [
    "AccountFold",
    "AccountState",
    "Challenge",
    "PasswordPolicy",
    "Session",
    "change_email",
    "change_password",
    "complete_login",
    "end_session",
    "evolve",
    "fail_password",
    "open_challenge",
    "open_challenge_for",
    "reauthenticate",
    "refresh_session",
    "register",
    "retry_password_at",
    "revoke_other_sessions",
    "set_role",
]

ROLES = frozenset({"support", "security"})


@dataclass(frozen=True, slots=True)
class PasswordPolicy:
    threshold: int = 10
    base_delay: timedelta = timedelta(seconds=1)
    max_delay: timedelta = timedelta(minutes=15)

    def delay(self, failures: int) -> timedelta:
        if failures < self.threshold:
            return timedelta(0)
        return min(self.max_delay, self.base_delay * (1 << min(failures - self.threshold, 40)))


@dataclass(frozen=True, slots=True)
class Throttle:
    failures: int = 0
    last_failure_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class Challenge:
    """An open mfa challenge: the password was right, the second factor is awaited."""

    challenge_id: str
    issued_at: datetime
    expires_at: datetime


@dataclass(frozen=True, slots=True)
class Session:
    session_id: str
    refresh_hash: str
    generation: int
    # Hashes of the spent refresh tokens, by generation: presenting one of these (and
    # only these) proves a stolen token is in play and revokes the session.
    spent_hashes: tuple[str, ...]
    amr: tuple[str, ...]
    acr: str
    auth_time: datetime
    expires_at: datetime
    started_at: datetime


@dataclass(frozen=True, slots=True)
class AccountState:
    registered: bool = False
    username: str = ""
    email: str = ""
    password_hash: str = ""
    roles: frozenset[str] = frozenset()
    untrusted: Throttle = Throttle()
    trusted: Throttle = Throttle()
    challenges: Mapping[str, Challenge] = field(default_factory=dict)
    sessions: Mapping[str, Session] = field(default_factory=dict)

    def throttle(self, trusted_device: bool) -> Throttle:
        return self.trusted if trusted_device else self.untrusted


# The fold -----------------------------------------------------------------------------


def evolve(state: AccountState, event: DomainEvent) -> AccountState:
    """The state after ``event``."""
    match event:
        case ev.AccountRegistered():
            return replace(
                state,
                registered=True,
                username=event.username,
                email=event.email,
                password_hash=event.password_hash,
            )
        case ev.PasswordChanged():
            return replace(state, password_hash=event.password_hash)
        case ev.EmailChanged():
            return replace(state, email=event.email)
        case ev.RoleGranted():
            return replace(state, roles=state.roles | {event.role})
        case ev.RoleRevoked():
            return replace(state, roles=state.roles - {event.role})
        case ev.LoginFailed():
            bucket = Throttle(event.consecutive_failures, event.at)
            if event.trusted_device:
                return replace(state, trusted=bucket)
            return replace(state, untrusted=bucket)
        case ev.PasswordVerified():
            live = {k: c for k, c in state.challenges.items() if c.expires_at > event.issued_at}
            live[event.challenge_id] = Challenge(
                event.challenge_id, event.issued_at, event.expires_at
            )
            return replace(state, untrusted=Throttle(), trusted=Throttle(), challenges=live)
        case ev.LoginSucceeded():
            rest = {k: c for k, c in state.challenges.items() if k != event.challenge_id}
            return replace(state, untrusted=Throttle(), trusted=Throttle(), challenges=rest)
        case ev.SessionStarted():
            session = Session(
                event.session_id,
                event.refresh_token_hash,
                0,
                (),
                tuple(event.amr),
                event.acr,
                event.auth_time,
                event.expires_at,
                event.auth_time,
            )
            return replace(state, sessions={**state.sessions, event.session_id: session})
        case ev.SessionRefreshed():
            current = state.sessions[event.session_id]
            renewed = replace(
                current,
                refresh_hash=event.refresh_token_hash,
                generation=event.generation,
                spent_hashes=(*current.spent_hashes, current.refresh_hash),
            )
            return replace(state, sessions={**state.sessions, event.session_id: renewed})
        case ev.Reauthenticated():
            current = state.sessions[event.session_id]
            fresh = replace(current, amr=tuple(event.amr), auth_time=event.auth_time)
            return replace(state, sessions={**state.sessions, event.session_id: fresh})
        case ev.SessionEnded() | ev.SessionRevoked():
            rest_sessions = {k: s for k, s in state.sessions.items() if k != event.session_id}
            return replace(state, sessions=rest_sessions)
    raise TypeError(f"not an account event: {event.type}")


def fold(state: AccountState, events: Sequence[DomainEvent]) -> AccountState:
    for event in events:
        state = evolve(state, event)
    return state


class AccountFold:
    """The ``Fold`` the repository loads ``account-*`` streams with."""

    snapshot_type = "account"
    snapshot_schema_version = 3  # 2: spent refresh-token hashes; 3: session start times

    def initial(self) -> AccountState:
        return AccountState()

    def evolve(self, state: AccountState, event: DomainEvent) -> AccountState:
        return evolve(state, event)

    def to_snapshot(self, state: AccountState) -> dict[str, Any]:
        return {
            "registered": state.registered,
            "username": state.username,
            "email": state.email,
            "password_hash": state.password_hash,
            "roles": sorted(state.roles),
            "untrusted": _plain(state.untrusted),
            "trusted": _plain(state.trusted),
            "challenges": [_plain(c) for c in state.challenges.values()],
            "sessions": [_plain(s) for s in state.sessions.values()],
        }

    def from_snapshot(self, data: dict[str, Any]) -> AccountState:
        challenges = [
            Challenge(c["challenge_id"], _time(c["issued_at"]), _time(c["expires_at"]))
            for c in data["challenges"]
        ]
        sessions = [
            Session(
                s["session_id"],
                s["refresh_hash"],
                s["generation"],
                tuple(s["spent_hashes"]),
                tuple(s["amr"]),
                s["acr"],
                _time(s["auth_time"]),
                _time(s["expires_at"]),
                _time(s["started_at"]),
            )
            for s in data["sessions"]
        ]
        return AccountState(
            registered=data["registered"],
            username=data["username"],
            email=data["email"],
            password_hash=data["password_hash"],
            roles=frozenset(data["roles"]),
            untrusted=_throttle(data["untrusted"]),
            trusted=_throttle(data["trusted"]),
            challenges={c.challenge_id: c for c in challenges},
            sessions={s.session_id: s for s in sessions},
        )


def _plain(obj: Any) -> dict[str, Any]:
    return {name: getattr(obj, name) for name in obj.__dataclass_fields__}


def _time(value: str) -> datetime:
    return datetime.fromisoformat(value)


def _throttle(data: dict[str, Any]) -> Throttle:
    last = data["last_failure_at"]
    return Throttle(data["failures"], _time(last) if last else None)


# Decisions ----------------------------------------------------------------------------


def register(
    state: AccountState, *, username: str, email: str, password_hash: str
) -> list[DomainEvent]:
    if state.registered:
        raise NotAllowed("this account exists already")
    return [ev.AccountRegistered(username=username, email=email, password_hash=password_hash)]


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


def open_challenge(challenge_id: str, now: datetime, ttl: timedelta) -> list[DomainEvent]:
    """Password right, second factor required: an mfa challenge opens."""
    return [ev.PasswordVerified(challenge_id=challenge_id, issued_at=now, expires_at=now + ttl)]


def open_challenge_for(state: AccountState, challenge_id: str, now: datetime) -> Challenge:
    """The open challenge ``challenge_id``; ``NotAllowed`` once used or expired."""
    challenge = state.challenges.get(challenge_id)
    if challenge is None or challenge.expires_at <= now:
        raise NotAllowed("the mfa token was used already or has expired")
    return challenge


def complete_login(
    *,
    session_id: str,
    refresh_hash: str,
    amr: tuple[str, ...],
    acr: str,
    now: datetime,
    session_ttl: timedelta,
    challenge_id: str | None = None,
) -> list[DomainEvent]:
    return [
        ev.LoginSucceeded(session_id=session_id, amr=amr, acr=acr, challenge_id=challenge_id),
        ev.SessionStarted(
            session_id=session_id,
            refresh_token_hash=refresh_hash,
            amr=amr,
            acr=acr,
            auth_time=now,
            expires_at=now + session_ttl,
        ),
    ]


def active_session(state: AccountState, session_id: str, now: datetime) -> Session:
    session = state.sessions.get(session_id)
    if session is None or session.expires_at <= now:
        raise NotAllowed("the session has ended")
    return session


def refresh_session(
    state: AccountState,
    *,
    session_id: str,
    generation: int,
    presented_hash: str,
    new_hash: str,
    now: datetime,
) -> tuple[bool, list[DomainEvent]]:
    """Rotate a refresh token. A genuine spent one (an older generation whose hash
    matches) revokes the session; anything else that does not match changes nothing."""
    session = active_session(state, session_id, now)
    if 0 <= generation < session.generation:
        if constant_time_equals(presented_hash, session.spent_hashes[generation]):
            return False, [ev.SessionRevoked(session_id=session_id, reason="refresh_token_reuse")]
        return False, []
    if generation != session.generation or not constant_time_equals(
        presented_hash, session.refresh_hash
    ):
        return False, []
    renewed = ev.SessionRefreshed(
        session_id=session_id, generation=generation + 1, refresh_token_hash=new_hash
    )
    return True, [renewed]


def end_session(state: AccountState, session_id: str) -> list[DomainEvent]:
    if session_id not in state.sessions:
        return []
    return [ev.SessionEnded(session_id=session_id)]


def revoke_other_sessions(
    state: AccountState, keep: str | None, reason: str, started_before: datetime | None = None
) -> list[DomainEvent]:
    """Revoke every session but ``keep`` (only those started by ``started_before``,
    when given: a session opened after a change already knew about it)."""
    return [
        ev.SessionRevoked(session_id=sid, reason=reason)
        for sid, session in sorted(state.sessions.items())
        if sid != keep and (started_before is None or session.started_at <= started_before)
    ]


def reauthenticate(
    state: AccountState, session_id: str, amr: tuple[str, ...], now: datetime
) -> list[DomainEvent]:
    active_session(state, session_id, now)
    return [ev.Reauthenticated(session_id=session_id, amr=amr, auth_time=now)]


def change_password(state: AccountState, new_hash: str, current_session: str) -> list[DomainEvent]:
    """A new password ends every other session."""
    return [
        ev.PasswordChanged(password_hash=new_hash),
        *revoke_other_sessions(state, current_session, "password_changed"),
    ]


def change_email(state: AccountState, email: str) -> list[DomainEvent]:
    if email == state.email:
        return []
    return [ev.EmailChanged(email=email, previous_email=state.email)]


def set_role(state: AccountState, role: str, granted: bool) -> list[DomainEvent]:
    if role not in ROLES:
        raise NotAllowed(f"unknown role {role!r}")
    if granted == (role in state.roles):
        return []
    return [ev.RoleGranted(role=role) if granted else ev.RoleRevoked(role=role)]
