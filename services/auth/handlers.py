"""Auth use cases: register, log in (password, then the second factor), sessions.

Every security decision reads the authoritative streams in the event store (never a
read model) and is recorded by an append whose expected version is the one it read; a
conflicting writer makes the whole step run again on fresh state.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import secrets
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from services.auth.devices import DeviceTokens
from services.auth.strangers import UnknownNames
from shared.aggregate import Loaded
from shared.core import Clock, Core, account_stream, retry_on_conflict, twofactor_stream, utc_now
from shared.domain import account as acct
from shared.domain import twofactor as tf
from shared.domain.errors import NotAllowed
from shared.domain.events import UsernameClaimed
from shared.events import DomainEvent, EventMetadata, NewEvent
from shared.eventstore import ConcurrencyError
from shared.http import Problem, retry_later
from shared.passwords import check_password
from shared.secondfactor import Proof, check, refuse
from shared.tokens import Claims, TokenError

__all__ = [
    "Context",
    "MfaChallenge",
    "TokenSet",
    "change_email",
    "change_password",
    "describe_account",
    "login",
    "login_mfa",
    "logout",
    "reauthenticate",
    "refresh",
    "register_account",
    "session_of",
    "set_role",
]

ANONYMOUS = "anonymous"
TOTP_AMR = ("pwd", "otp", "mfa")
RECOVERY_AMR = ("pwd", "recovery_code", "mfa")


@dataclass(frozen=True, slots=True)
class Context:
    """Who asks, and the id that ties the events of one request together."""

    correlation_id: uuid.UUID = field(default_factory=uuid.uuid4)
    actor: str | None = None
    clock: Clock = utc_now  # the service's clock: occurred-at follows it (tests move it)

    def new(self, events: Sequence[DomainEvent], actor: str | None = None) -> list[NewEvent]:
        meta = EventMetadata(
            correlation_id=self.correlation_id,
            actor=actor or self.actor,
            occurred_at=self.clock(),
        )
        return [NewEvent(event, meta) for event in events]


@dataclass(frozen=True, slots=True)
class TokenSet:
    access_token: str
    refresh_token: str
    expires_in: int
    amr: tuple[str, ...]
    acr: str
    device_token: str | None = None


@dataclass(frozen=True, slots=True)
class MfaChallenge:
    mfa_token: str
    expires_in: int
    methods: tuple[str, ...] = ("totp", "recovery_code")


def username_stream(username: str) -> str:
    return f"username-{username.casefold()}"


def _actor(account_id: str) -> str:
    return f"account:{account_id}"


# Longer than a wrong password takes on either path (a hash of about 115 ms with the
# default argon2 cost, plus the account's load and append), so both answer at the floor.
FAILED_LOGIN_FLOOR = 0.3


def invalid_credentials() -> Problem:
    return Problem(401, "invalid_credentials", "Username or password is wrong")


@contextlib.asynccontextmanager
async def _failures_answered_at_the_floor() -> AsyncIterator[None]:
    started = time.monotonic()
    try:
        yield
    except Problem as problem:
        if problem.code == "invalid_credentials":
            await asyncio.sleep(max(0.0, started + FAILED_LOGIN_FLOOR - time.monotonic()))
        raise


def _throttled(retry_at: datetime, now: datetime) -> Problem:
    wait = max(1, int((retry_at - now).total_seconds()))
    return retry_later(
        429, "too_many_attempts", "Too many wrong passwords: wait before trying again", wait
    )


def invalid_session() -> Problem:
    return Problem(
        401,
        "invalid_token",
        "The session has ended; log in again",
        headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
    )


def _hash_refresh(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


# Registration -------------------------------------------------------------------------


async def register_account(
    core: Core, ctx: Context, *, username: str, email: str, password: str
) -> str:
    """Create an account; the username is claimed in its own stream so it is unique."""
    problems = check_password(password, username=username, email=email)
    if problems:
        raise Problem(
            422, "weak_password", "The password does not meet the rules", problems=problems
        )
    password_hash = await asyncio.to_thread(core.passwords.hash, password)
    account_id = str(uuid.uuid4())
    events = acct.register(
        acct.AccountState(), username=username, email=email, password_hash=password_hash
    )
    claim = UsernameClaimed(account_id=account_id)
    try:
        async with core.pool.acquire() as conn, conn.transaction():
            await core.store.append(
                username_stream(username), ctx.new([claim], _actor(account_id)), 0, connection=conn
            )
            await core.accounts.save(
                account_stream(account_id),
                Loaded(acct.AccountState(), 0),
                ctx.new(events, ctx.actor or _actor(account_id)),
                connection=conn,
            )
    except ConcurrencyError:
        raise Problem(409, "username_taken", "This username is taken") from None
    return account_id


async def lookup_username(core: Core, username: str) -> str | None:
    claims = await core.store.read_stream(username_stream(username))
    if not claims:
        return None
    event = claims[0].event
    assert isinstance(event, UsernameClaimed)
    return event.account_id


# Login --------------------------------------------------------------------------------


async def login(
    core: Core,
    devices: DeviceTokens,
    ctx: Context,
    *,
    username: str,
    password: str,
    device_token: str | None,
) -> TokenSet | MfaChallenge:
    """Check the password; then tokens, or an mfa challenge when 2FA is on.

    A wrong password answers no sooner than ``FAILED_LOGIN_FLOOR`` after the request
    began, whether or not the username exists: an unknown name costs a dummy hash but
    skips loading the account and appending the failure, which a stopwatch would show.
    """
    async with _failures_answered_at_the_floor():
        account_id = await lookup_username(core, username)
        if account_id is None:
            # Throttled like an account nobody has a device token for, hashed all the same.
            now = core.clock()
            strangers = UnknownNames(core.pool, core.settings.server_key("device_token_key"))
            name = username_stream(username)
            retry_at = acct.throttled_until(
                await strangers.throttle(name), now, core.password_policy
            )
            if retry_at is not None:
                raise _throttled(retry_at, now)
            await asyncio.to_thread(core.passwords.dummy_verify, password)
            await strangers.fail(name, now)
            raise invalid_credentials()
        trusted = devices.is_valid_for(device_token, account_id)
        checked: dict[str, bool] = {}  # stored hash → verdict, so a retry does not hash again

        async def attempt() -> TokenSet | MfaChallenge:
            now = core.clock()
            account = await core.accounts.load(account_stream(account_id))
            retry_at = acct.retry_password_at(account.state, trusted, now, core.password_policy)
            if retry_at is not None:
                raise _throttled(retry_at, now)
            stored = account.state.password_hash
            if stored not in checked:
                checked[stored] = await asyncio.to_thread(core.passwords.verify, stored, password)
            if not checked[stored]:
                failed = acct.fail_password(account.state, trusted, now, core.password_policy)
                # Whoever typed it is unknown: the account is the subject, not the actor.
                await core.accounts.save(
                    account_stream(account_id), account, ctx.new(failed, ANONYMOUS)
                )
                raise invalid_credentials()
            second = await core.twofactors.load(twofactor_stream(account_id))
            if tf.requires_second_factor(second.state, now):
                challenge_id = uuid.uuid4().hex
                ttl = timedelta(seconds=core.settings.mfa_token_ttl_seconds)
                opened = acct.open_challenge(challenge_id, now, ttl)
                await core.accounts.save(
                    account_stream(account_id), account, ctx.new(opened, _actor(account_id))
                )
                token = core.issuer.issue_mfa(
                    subject=account_id,
                    challenge_id=challenge_id,
                    audience=core.settings.jwt_audience,
                    now=now,
                )
                return MfaChallenge(token, int(ttl.total_seconds()))
            due = tf.due_events(second.state, now)  # a support reset that took effect
            return await _start_session(
                core,
                devices,
                ctx,
                account_id,
                account,
                ("pwd",),
                "aal1",
                now,
                checked_second=None if due else second,
                second_write=(second, due) if due else None,
            )

        return await retry_on_conflict(attempt)


async def login_mfa(
    core: Core, devices: DeviceTokens, ctx: Context, *, mfa_token: str, proof: Proof
) -> TokenSet:
    """The second step: an open challenge and a valid second factor give tokens."""
    try:
        claims = core.verifier.verify_mfa(mfa_token, now=core.clock())
    except TokenError:
        raise _dead_mfa_token() from None
    account_id, challenge_id = claims.sub, claims.jti

    async def attempt() -> TokenSet:
        now = core.clock()
        account = await core.accounts.load(account_stream(account_id))
        try:
            challenge = acct.open_challenge_for(account.state, challenge_id, now)
        except NotAllowed:
            raise _dead_mfa_token() from None
        second = await core.twofactors.load(twofactor_stream(account_id))
        state = second.state
        if not tf.requires_second_factor(state, now):
            raise _dead_mfa_token()
        locked_since = state.last_locked_at
        if not tf.is_locked(state, now) and locked_since and locked_since >= challenge.issued_at:
            raise _dead_mfa_token()  # a lockout after this login began killed it
        verdict = await check(core, account_id, state, proof, "login", now)
        if not verdict.accepted:
            if verdict.events:
                await core.twofactors.save(
                    twofactor_stream(account_id),
                    second,
                    ctx.new(verdict.events, _actor(account_id)),
                )
            raise refuse(verdict, now)
        amr = TOTP_AMR if proof.otp is not None else RECOVERY_AMR
        return await _start_session(
            core,
            devices,
            ctx,
            account_id,
            account,
            amr,
            "aal2",
            now,
            challenge_id=challenge_id,
            second_write=(second, verdict.events),
        )

    return await retry_on_conflict(attempt)


def _dead_mfa_token() -> Problem:
    return Problem(
        401, "invalid_mfa_token", "This login step has expired or was used; log in again"
    )


async def _start_session(
    core: Core,
    devices: DeviceTokens,
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
    session_id = uuid.uuid4().hex
    refresh_token = f"rt1.{account_id}.{session_id}.0.{secrets.token_urlsafe(32)}"
    events = acct.complete_login(
        session_id=session_id,
        refresh_hash=_hash_refresh(refresh_token),
        amr=amr,
        acr=acr,
        now=now,
        session_ttl=timedelta(seconds=core.settings.session_ttl_seconds),
        challenge_id=challenge_id,
    )
    actor = _actor(account_id)
    async with core.pool.acquire() as conn, conn.transaction():
        if checked_second is not None:  # the decision "no OTP needed" must still hold
            await core.store.expect_version(
                twofactor_stream(account_id), checked_second.version, connection=conn
            )
        if second_write is not None:
            loaded, second_events = second_write
            await core.twofactors.save(
                twofactor_stream(account_id), loaded, ctx.new(second_events, actor), connection=conn
            )
        await core.accounts.save(
            account_stream(account_id), account, ctx.new(events, actor), connection=conn
        )
    return TokenSet(
        access_token=_access_token(core, account_id, account.state, session_id, now, amr, acr, now),
        refresh_token=refresh_token,
        expires_in=core.settings.access_token_ttl_seconds,
        amr=amr,
        acr=acr,
        device_token=devices.issue(account_id),
    )


def _access_token(
    core: Core,
    account_id: str,
    state: acct.AccountState,
    session_id: str,
    auth_time: datetime,
    amr: tuple[str, ...],
    acr: str,
    now: datetime,
) -> str:
    return core.issuer.issue_access(
        subject=account_id,
        audience=core.settings.jwt_audience,
        session_id=session_id,
        auth_time=auth_time,
        amr=amr,
        acr=acr,
        roles=sorted(state.roles),
        now=now,
    )


# Sessions -----------------------------------------------------------------------------


async def session_of(core: Core, claims: Claims) -> tuple[Loaded[acct.AccountState], acct.Session]:
    """The account and the still-active session a verified access token belongs to."""
    account = await core.accounts.load(account_stream(claims.sub))
    try:
        return account, acct.active_session(account.state, claims.sid, core.clock())
    except NotAllowed:
        raise invalid_session() from None


async def refresh(core: Core, ctx: Context, *, refresh_token: str) -> TokenSet:
    """Rotate a refresh token; presenting a spent one revokes the whole session."""
    parts = refresh_token.split(".")
    if len(parts) != 5 or parts[0] != "rt1" or not parts[3].isdecimal() or len(refresh_token) > 512:
        raise _bad_refresh()
    _, account_id, session_id, generation_text, _ = parts
    generation = int(generation_text)
    try:
        uuid.UUID(account_id)
    except ValueError:
        raise _bad_refresh() from None

    async def attempt() -> TokenSet:
        now = core.clock()
        account = await core.accounts.load(account_stream(account_id))
        session = account.state.sessions.get(session_id)
        if session is None or session.expires_at <= now:
            raise _bad_refresh()
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
            await core.accounts.save(
                account_stream(account_id), account, ctx.new(events, _actor(account_id))
            )
        if not ok:
            if events:
                raise Problem(
                    401,
                    "refresh_token_reused",
                    "This refresh token was used before: the session is revoked",
                )
            raise _bad_refresh()
        return TokenSet(
            access_token=_access_token(
                core,
                account_id,
                account.state,
                session_id,
                session.auth_time,
                session.amr,
                session.acr,
                now,
            ),
            refresh_token=new_token,
            expires_in=core.settings.access_token_ttl_seconds,
            amr=session.amr,
            acr=session.acr,
        )

    return await retry_on_conflict(attempt)


def _bad_refresh() -> Problem:
    return Problem(401, "invalid_refresh_token", "The refresh token is not valid")


async def logout(core: Core, ctx: Context, claims: Claims) -> None:
    async def attempt() -> None:
        account = await core.accounts.load(account_stream(claims.sub))
        ended = acct.end_session(account.state, claims.sid)
        if ended:
            await core.accounts.save(
                account_stream(claims.sub), account, ctx.new(ended, _actor(claims.sub))
            )

    await retry_on_conflict(attempt)


# Actions that need the password (and the second factor when it is on) -----------------


@dataclass(frozen=True, slots=True)
class _Proven:
    account: Loaded[acct.AccountState]
    second: Loaded[tf.TwoFactorState]
    second_events: tuple[DomainEvent, ...]
    amr: tuple[str, ...]
    acr: str
    now: datetime


async def _prove(
    core: Core, ctx: Context, claims: Claims, password: str, proof: Proof | None, purpose: str
) -> _Proven:
    """Check the password and, when 2FA is on, the second factor, for a signed-in user."""
    account_id = claims.sub
    now = core.clock()
    account, _ = await session_of(core, claims)
    retry_at = acct.retry_password_at(account.state, True, now, core.password_policy)
    if retry_at is not None:
        raise _throttled(retry_at, now)
    ok = await asyncio.to_thread(core.passwords.verify, account.state.password_hash, password)
    if not ok:
        failed = acct.fail_password(account.state, True, now, core.password_policy)
        await core.accounts.save(
            account_stream(account_id), account, ctx.new(failed, _actor(account_id))
        )
        raise Problem(401, "invalid_password", "The current password is wrong")
    second = await core.twofactors.load(twofactor_stream(account_id))
    if not tf.requires_second_factor(second.state, now):
        return _Proven(account, second, (), ("pwd",), "aal1", now)
    if proof is None:
        raise Problem(
            401,
            "second_factor_required",
            "Two-factor authentication is on: send an OTP or a recovery code too",
            methods=["totp", "recovery_code"],
        )
    verdict = await check(core, account_id, second.state, proof, purpose, now)
    if not verdict.accepted:
        if verdict.events:
            await core.twofactors.save(
                twofactor_stream(account_id), second, ctx.new(verdict.events, _actor(account_id))
            )
        raise refuse(verdict, now)
    amr = TOTP_AMR if proof.otp is not None else RECOVERY_AMR
    return _Proven(account, second, verdict.events, amr, "aal2", now)


async def _save_proven(
    core: Core, ctx: Context, account_id: str, proven: _Proven, events: Sequence[DomainEvent]
) -> None:
    actor = _actor(account_id)
    async with core.pool.acquire() as conn, conn.transaction():
        if proven.second_events:
            await core.twofactors.save(
                twofactor_stream(account_id),
                proven.second,
                ctx.new(proven.second_events, actor),
                connection=conn,
            )
        else:
            await core.store.expect_version(
                twofactor_stream(account_id), proven.second.version, connection=conn
            )
        await core.accounts.save(
            account_stream(account_id), proven.account, ctx.new(events, actor), connection=conn
        )


async def reauthenticate(
    core: Core, ctx: Context, claims: Claims, *, password: str, proof: Proof | None
) -> TokenSet:
    """A fresh access token (new ``auth_time``) for the same session."""

    async def attempt() -> TokenSet:
        proven = await _prove(core, ctx, claims, password, proof, "reauthenticate")
        events = acct.reauthenticate(proven.account.state, claims.sid, proven.amr, proven.now)
        await _save_proven(core, ctx, claims.sub, proven, events)
        return TokenSet(
            access_token=_access_token(
                core,
                claims.sub,
                proven.account.state,
                claims.sid,
                proven.now,
                proven.amr,
                proven.acr,
                proven.now,
            ),
            refresh_token="",
            expires_in=core.settings.access_token_ttl_seconds,
            amr=proven.amr,
            acr=proven.acr,
        )

    return await retry_on_conflict(attempt)


async def change_password(
    core: Core,
    ctx: Context,
    claims: Claims,
    *,
    current_password: str,
    new_password: str,
    proof: Proof | None,
) -> None:
    """A new password (rules apply); every other session ends."""

    async def attempt() -> None:
        proven = await _prove(core, ctx, claims, current_password, proof, "password_change")
        state = proven.account.state
        problems = check_password(new_password, username=state.username, email=state.email)
        if problems:
            raise Problem(
                422, "weak_password", "The new password does not meet the rules", problems=problems
            )
        new_hash = await asyncio.to_thread(core.passwords.hash, new_password)
        await _save_proven(
            core, ctx, claims.sub, proven, acct.change_password(state, new_hash, claims.sid)
        )

    await retry_on_conflict(attempt)


async def change_email(
    core: Core,
    ctx: Context,
    claims: Claims,
    *,
    current_password: str,
    email: str,
    proof: Proof | None,
) -> None:
    async def attempt() -> None:
        proven = await _prove(core, ctx, claims, current_password, proof, "email_change")
        await _save_proven(
            core, ctx, claims.sub, proven, acct.change_email(proven.account.state, email)
        )

    await retry_on_conflict(attempt)


# Reading and administration -----------------------------------------------------------


async def describe_account(core: Core, account_id: str) -> dict[str, object]:
    """Profile, roles and 2FA status, from the streams themselves."""
    now = core.clock()
    account = await core.accounts.load(account_stream(account_id))
    second = await core.twofactors.load(twofactor_stream(account_id))
    on = tf.requires_second_factor(second.state, now)
    return {
        "account_id": account_id,
        "username": account.state.username,
        "email": account.state.email,
        "roles": sorted(account.state.roles),
        "twofa_enabled": on,
        "twofa_enabled_at": second.state.enabled_at.isoformat()
        if on and second.state.enabled_at
        else None,
        "recovery_codes_left": second.state.codes_left if on else 0,
    }


async def set_role(core: Core, ctx: Context, *, username: str, role: str, granted: bool) -> str:
    account_id = await lookup_username(core, username)
    if account_id is None:
        raise Problem(404, "not_found", "No such account")

    async def attempt() -> str:
        account = await core.accounts.load(account_stream(account_id))
        events = acct.set_role(account.state, role, granted)
        if events:
            await core.accounts.save(account_stream(account_id), account, ctx.new(events))
        return account_id

    return await retry_on_conflict(attempt)
