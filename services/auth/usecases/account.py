"""Account use cases: register; the changes that need the password (and the second
factor when it is on): re-authentication, password, email; the profile; roles.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from services.auth.usecases.deps import AuthDeps
from services.auth.usecases.login import amr_of, lookup_username, throttled
from services.auth.usecases.sessions import TokenSet, access_token, session_of
from shared.app.context import Context, actor_of
from shared.app.errors import (
    SecondFactorRequired,
    UsernameTaken,
    WeakPassword,
    WrongPassword,
)
from shared.app.retry import retry_on_conflict
from shared.app.secondfactor import Proof, refused, verdict_on
from shared.domain import account as acct
from shared.domain import twofactor as tf
from shared.domain.base import DomainEvent
from shared.domain.errors import NotFound
from shared.domain.events import UsernameClaimed
from shared.eventstore.repository import Loaded
from shared.eventstore.store import ConcurrencyError
from shared.eventstore.streams import account_stream, twofactor_stream, username_stream
from shared.security.passwords import check_password
from shared.security.tokens import Claims

__all__ = [
    "change_email",
    "change_password",
    "describe_account",
    "reauthenticate",
    "register_account",
    "set_role",
]


async def register_account(
    deps: AuthDeps, ctx: Context, *, username: str, email: str, password: str
) -> str:
    """Create an account; the username is claimed in its own stream so it is unique."""
    problems = check_password(password, username=username, email=email)
    if problems:
        raise WeakPassword(problems)
    password_hash = await asyncio.to_thread(deps.passwords.hash, password)
    account_id = str(uuid.uuid4())
    events = acct.register(
        acct.AccountState(), username=username, email=email, password_hash=password_hash
    )
    claim = UsernameClaimed(account_id=account_id)
    try:
        async with deps.pool.acquire() as conn, conn.transaction():
            await deps.store.append(
                username_stream(username),
                ctx.new([claim], actor_of(account_id)),
                0,
                connection=conn,
            )
            await deps.accounts.save(
                account_stream(account_id),
                Loaded(acct.AccountState(), 0),
                ctx.new(events, ctx.actor or actor_of(account_id)),
                connection=conn,
            )
    except ConcurrencyError:
        raise UsernameTaken() from None
    return account_id


@dataclass(frozen=True, slots=True)
class _Proven:
    account: Loaded[acct.AccountState]
    second: Loaded[tf.TwoFactorState]
    second_events: tuple[DomainEvent, ...]
    amr: tuple[str, ...]
    acr: str
    now: datetime


async def _prove(
    deps: AuthDeps, ctx: Context, claims: Claims, password: str, proof: Proof | None, purpose: str
) -> _Proven:
    """Check the password and, when 2FA is on, the second factor, for a signed-in user."""
    account_id = claims.sub
    ctx = ctx.acting_for(account_id)
    now = deps.clock()
    account, _ = await session_of(deps, claims)
    retry_at = acct.retry_password_at(account.state, True, now, deps.password_policy)
    if retry_at is not None:
        raise throttled(retry_at, now)
    ok = await asyncio.to_thread(deps.passwords.verify, account.state.password_hash, password)
    if not ok:
        failed = acct.fail_password(account.state, True, now, deps.password_policy)
        await deps.accounts.save(account_stream(account_id), account, ctx.new(failed))
        raise WrongPassword()
    second = await deps.twofactors.load(twofactor_stream(account_id))
    if not tf.requires_second_factor(second.state, now):
        return _Proven(account, second, (), ("pwd",), "aal1", now)
    if proof is None:
        raise SecondFactorRequired()
    verdict = await verdict_on(deps, account_id, second.state, proof, purpose, now)
    if not verdict.accepted:
        if verdict.events:
            await deps.twofactors.save(
                twofactor_stream(account_id), second, ctx.new(verdict.events)
            )
        raise refused(verdict, now)
    return _Proven(account, second, verdict.events, amr_of(proof), "aal2", now)


async def _save_proven(
    deps: AuthDeps, ctx: Context, account_id: str, proven: _Proven, events: Sequence[DomainEvent]
) -> None:
    ctx = ctx.acting_for(account_id)
    async with deps.pool.acquire() as conn, conn.transaction():
        if proven.second_events:
            await deps.twofactors.save(
                twofactor_stream(account_id),
                proven.second,
                ctx.new(proven.second_events),
                connection=conn,
            )
        else:
            await deps.store.expect_version(
                twofactor_stream(account_id), proven.second.version, connection=conn
            )
        await deps.accounts.save(
            account_stream(account_id), proven.account, ctx.new(events), connection=conn
        )


async def reauthenticate(
    deps: AuthDeps, ctx: Context, claims: Claims, *, password: str, proof: Proof | None
) -> TokenSet:
    """A fresh access token (new ``auth_time``) for the same session."""

    async def attempt() -> TokenSet:
        proven = await _prove(deps, ctx, claims, password, proof, "reauthenticate")
        events = acct.reauthenticate(proven.account.state, claims.sid, proven.amr, proven.now)
        await _save_proven(deps, ctx, claims.sub, proven, events)
        return TokenSet(
            access_token=access_token(
                deps,
                claims.sub,
                proven.account.state,
                claims.sid,
                proven.now,
                proven.amr,
                proven.acr,
                proven.now,
            ),
            refresh_token="",
            expires_in=deps.settings.access_token_ttl_seconds,
            amr=proven.amr,
            acr=proven.acr,
        )

    return await retry_on_conflict(attempt)


async def change_password(
    deps: AuthDeps,
    ctx: Context,
    claims: Claims,
    *,
    current_password: str,
    new_password: str,
    proof: Proof | None,
) -> None:
    """A new password (rules apply); every other session ends."""

    async def attempt() -> None:
        proven = await _prove(deps, ctx, claims, current_password, proof, "password_change")
        state = proven.account.state
        problems = check_password(new_password, username=state.username, email=state.email)
        if problems:
            raise WeakPassword(problems, "The new password does not meet the rules")
        new_hash = await asyncio.to_thread(deps.passwords.hash, new_password)
        await _save_proven(
            deps, ctx, claims.sub, proven, acct.change_password(state, new_hash, claims.sid)
        )

    await retry_on_conflict(attempt)


async def change_email(
    deps: AuthDeps,
    ctx: Context,
    claims: Claims,
    *,
    current_password: str,
    email: str,
    proof: Proof | None,
) -> None:
    async def attempt() -> None:
        proven = await _prove(deps, ctx, claims, current_password, proof, "email_change")
        await _save_proven(
            deps, ctx, claims.sub, proven, acct.change_email(proven.account.state, email)
        )

    await retry_on_conflict(attempt)


@dataclass(frozen=True, slots=True)
class Profile:
    account_id: str
    username: str
    email: str
    roles: list[str]
    twofactor: tf.TwoFactorStatus


async def describe_account(deps: AuthDeps, account_id: str) -> Profile:
    """Profile, roles and 2FA status, from the streams themselves."""
    account = await deps.accounts.load(account_stream(account_id))
    second = await deps.twofactors.load(twofactor_stream(account_id))
    return Profile(
        account_id=account_id,
        username=account.state.username,
        email=account.state.email,
        roles=sorted(account.state.roles),
        twofactor=tf.status(second.state, deps.clock()),
    )


async def set_role(deps: AuthDeps, ctx: Context, *, username: str, role: str, granted: bool) -> str:
    account_id = await lookup_username(deps, username)
    if account_id is None:
        raise NotFound("No such account")

    async def attempt() -> str:
        account = await deps.accounts.load(account_stream(account_id))
        events = acct.set_role(account.state, role, granted)
        if events:
            await deps.accounts.save(account_stream(account_id), account, ctx.new(events))
        return account_id

    return await retry_on_conflict(attempt)
