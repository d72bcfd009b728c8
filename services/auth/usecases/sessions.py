"""Sessions: starting one after a login, access tokens, refresh-token rotation, logout."""

from __future__ import annotations

import hashlib
import secrets
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from services.auth.usecases.deps import AuthDeps
from shared.app.context import Context
from shared.app.errors import RefreshTokenInvalid, RefreshTokenReused, SessionEnded
from shared.app.retry import retry_on_conflict
from shared.domain import account as acct
from shared.domain import twofactor as tf
from shared.domain.base import DomainEvent
from shared.domain.errors import NotAllowed
from shared.eventstore.repository import Loaded
from shared.eventstore.streams import account_stream, twofactor_stream
from shared.security.tokens import Claims

__all__ = ["TokenSet", "access_token", "logout", "refresh", "session_of", "start_session"]


@dataclass(frozen=True, slots=True)
class TokenSet:
    access_token: str
    refresh_token: str
    expires_in: int
    amr: tuple[str, ...]
    acr: str
    device_token: str | None = None


def _hash_refresh(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


async def start_session(
    deps: AuthDeps,
    ctx: Context,
    account_id: str,
    account: Loaded[acct.AccountState],
    amr: tuple[str, ...],
    acr: str,
    now: datetime,
    *,
    challenge_id: str | None = None,
    second_write: tuple[Loaded[tf.TwoFactorState], Sequence[DomainEvent]] | None = None,
    checked_second: Loaded[tf.TwoFactorState] | None = None,
) -> TokenSet:
    """Record the login and the new session, with the second factor's events (or a check
    that its stream is as read, when "no OTP needed" was the decision), in one transaction."""
    session_id = uuid.uuid4().hex
    refresh_token = f"rt1.{account_id}.{session_id}.0.{secrets.token_urlsafe(32)}"
    events = acct.complete_login(
        session_id=session_id,
        refresh_hash=_hash_refresh(refresh_token),
        amr=amr,
        acr=acr,
        now=now,
        session_ttl=timedelta(seconds=deps.settings.session_ttl_seconds),
        challenge_id=challenge_id,
    )
    ctx = ctx.acting_for(account_id)
    async with deps.pool.acquire() as conn, conn.transaction():
        if checked_second is not None:  # the decision "no OTP needed" must still hold
            await deps.store.expect_version(
                twofactor_stream(account_id), checked_second.version, connection=conn
            )
        if second_write is not None:
            loaded, second_events = second_write
            await deps.twofactors.save(
                twofactor_stream(account_id), loaded, ctx.new(second_events), connection=conn
            )
        await deps.accounts.save(
            account_stream(account_id), account, ctx.new(events), connection=conn
        )
    return TokenSet(
        access_token=access_token(deps, account_id, account.state, session_id, now, amr, acr, now),
        refresh_token=refresh_token,
        expires_in=deps.settings.access_token_ttl_seconds,
        amr=amr,
        acr=acr,
        device_token=deps.devices.issue(account_id),
    )


def access_token(
    deps: AuthDeps,
    account_id: str,
    state: acct.AccountState,
    session_id: str,
    auth_time: datetime,
    amr: tuple[str, ...],
    acr: str,
    now: datetime,
) -> str:
    return deps.issuer.issue_access(
        subject=account_id,
        audience=deps.settings.jwt_audience,
        session_id=session_id,
        auth_time=auth_time,
        amr=amr,
        acr=acr,
        roles=sorted(state.roles),
        now=now,
    )


async def session_of(
    deps: AuthDeps, claims: Claims
) -> tuple[Loaded[acct.AccountState], acct.Session]:
    """The account and the still-active session a verified access token belongs to."""
    account = await deps.accounts.load(account_stream(claims.sub))
    try:
        return account, acct.active_session(account.state, claims.sid, deps.clock())
    except NotAllowed:
        raise SessionEnded() from None


def _parse_refresh(refresh_token: str) -> tuple[str, str, int]:
    """``rt1.<account>.<session>.<generation>.<random>``: account, session, generation."""
    parts = refresh_token.split(".")
    if len(parts) != 5 or parts[0] != "rt1" or not parts[3].isdecimal() or len(refresh_token) > 512:
        raise RefreshTokenInvalid()
    _, account_id, session_id, generation_text, _ = parts
    try:
        uuid.UUID(account_id)
    except ValueError:
        raise RefreshTokenInvalid() from None
    return account_id, session_id, int(generation_text)


async def refresh(deps: AuthDeps, ctx: Context, *, refresh_token: str) -> TokenSet:
    """Rotate a refresh token; presenting a spent one revokes the whole session."""
    account_id, session_id, generation = _parse_refresh(refresh_token)
    ctx = ctx.acting_for(account_id)

    async def attempt() -> TokenSet:
        now = deps.clock()
        account = await deps.accounts.load(account_stream(account_id))
        session = account.state.sessions.get(session_id)
        if session is None or session.expires_at <= now:
            raise RefreshTokenInvalid()
        new_token = f"rt1.{account_id}.{session_id}.{generation + 1}.{secrets.token_urlsafe(32)}"
        ok, events = acct.refresh_session(
            account.state,
            session_id=session_id,
            generation=generation,
            presented_hash=_hash_refresh(refresh_token),
            new_hash=_hash_refresh(new_token),
            now=now,
        )
        if events:
            await deps.accounts.save(account_stream(account_id), account, ctx.new(events))
        if not ok:
            raise RefreshTokenReused() if events else RefreshTokenInvalid()
        return TokenSet(
            access_token=access_token(
                deps,
                account_id,
                account.state,
                session_id,
                session.auth_time,
                session.amr,
                session.acr,
                now,
            ),
            refresh_token=new_token,
            expires_in=deps.settings.access_token_ttl_seconds,
            amr=session.amr,
            acr=session.acr,
        )

    return await retry_on_conflict(attempt)


async def logout(deps: AuthDeps, ctx: Context, claims: Claims) -> None:
    ctx = ctx.acting_for(claims.sub)

    async def attempt() -> None:
        account = await deps.accounts.load(account_stream(claims.sub))
        ended = acct.end_session(account.state, claims.sid)
        if ended:
            await deps.accounts.save(account_stream(claims.sub), account, ctx.new(ended))

    await retry_on_conflict(attempt)
