"""Sessions: refresh-token rotation (reuse of a spent token revokes), end, revoke."""

from __future__ import annotations

import hmac
from datetime import datetime

from shared.domain import events as ev
from shared.domain.account.state import AccountState, Session
from shared.domain.base import DomainEvent
from shared.domain.errors import NotAllowed


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
        if _same(presented_hash, session.spent_hashes[generation]):
            return False, [ev.SessionRevoked(session_id=session_id, reason="refresh_token_reuse")]
        return False, []
    if generation != session.generation or not _same(presented_hash, session.refresh_hash):
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


def _same(a: str, b: str) -> bool:
    # Constant time: a refresh-token hash must not be guessable from how long a check took.
    return hmac.compare_digest(a.encode(), b.encode())
