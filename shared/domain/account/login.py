"""A login: the password opens an mfa challenge when the second factor is required;
the second step closes it and starts a session.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from shared.domain import events as ev
from shared.domain.account.state import AccountState, Challenge
from shared.domain.base import DomainEvent
from shared.domain.errors import NotAllowed


def open_challenge(challenge_id: str, now: datetime, ttl: timedelta) -> list[DomainEvent]:
    """Password right, second factor required: an mfa challenge opens."""
    return [ev.MfaChallengeOpened(challenge_id=challenge_id, issued_at=now, expires_at=now + ttl)]


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
