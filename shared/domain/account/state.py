"""The Account aggregate (stream ``account-{id}``): identity, password, roles, sessions.

Its state and fold; the decisions live beside it, one file per concern.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime

from shared.domain import base
from shared.domain import events as ev
from shared.domain.base import DomainEvent

ROLES = frozenset({"support", "security"})


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


# One match over every account event, so what each event changes reads in one place.
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
        case ev.MfaChallengeOpened():
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
    return base.fold(evolve, state, events)
