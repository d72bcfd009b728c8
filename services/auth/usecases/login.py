"""Logging in: the password, then the second factor when it is on.

Every security decision reads the authoritative streams in the event store (never a
read model) and is recorded by an append whose expected version is the one it read; a
conflicting writer makes the whole step run again on fresh state.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime, timedelta

from services.auth.usecases.deps import AuthDeps
from services.auth.usecases.sessions import TokenSet, start_session
from shared.app.context import Context
from shared.app.errors import InvalidCredentials, MfaTokenInvalid, Throttled
from shared.app.retry import retry_on_conflict
from shared.app.secondfactor import Proof, refused, verdict_on
from shared.domain import account as acct
from shared.domain import twofactor as tf
from shared.domain.errors import NotAllowed
from shared.domain.events import UsernameClaimed
from shared.eventstore.streams import account_stream, twofactor_stream, username_stream
from shared.security.tokens import TokenError

__all__ = [
    "FAILED_LOGIN_FLOOR",
    "MfaChallenge",
    "login",
    "login_mfa",
    "lookup_username",
    "throttled",
]

ANONYMOUS = "anonymous"
TOTP_AMR = ("pwd", "otp", "mfa")
RECOVERY_AMR = ("pwd", "recovery_code", "mfa")

# Longer than a wrong password takes on either path (a hash of about 115 ms with the
# default argon2 cost, plus the account's load and append), so both answer at the floor.
FAILED_LOGIN_FLOOR = 0.3


@dataclass(frozen=True, slots=True)
class MfaChallenge:
    mfa_token: str
    expires_in: int
    methods: tuple[str, ...] = ("totp", "recovery_code")


def throttled(retry_at: datetime, now: datetime) -> Throttled:
    return Throttled(max(1, int((retry_at - now).total_seconds())))


def amr_of(proof: Proof) -> tuple[str, ...]:
    return TOTP_AMR if proof.otp is not None else RECOVERY_AMR


@contextlib.asynccontextmanager
async def _failures_answered_at_the_floor() -> AsyncIterator[None]:
    started = time.monotonic()
    try:
        yield
    except InvalidCredentials:
        await asyncio.sleep(max(0.0, started + FAILED_LOGIN_FLOOR - time.monotonic()))
        raise


async def lookup_username(deps: AuthDeps, username: str) -> str | None:
    claims = await deps.store.read_stream(username_stream(username))
    if not claims:
        return None
    event = claims[0].event
    assert isinstance(event, UsernameClaimed)
    return event.account_id


async def login(
    deps: AuthDeps, ctx: Context, *, username: str, password: str, device_token: str | None
) -> TokenSet | MfaChallenge:
    """Check the password; then tokens, or an mfa challenge when 2FA is on.

    A wrong password answers no sooner than ``FAILED_LOGIN_FLOOR`` after the request
    began, whether or not the username exists: an unknown name costs a dummy hash but
    skips loading the account and appending the failure, which a stopwatch would show.
    """
    async with _failures_answered_at_the_floor():
        account_id = await lookup_username(deps, username)
        if account_id is None:
            await _refuse_unknown_name(deps, username, password)
        assert account_id is not None
        trusted = deps.devices.is_valid_for(device_token, account_id)
        checked: dict[str, bool] = {}  # stored hash → verdict, so a retry does not hash again

        async def attempt() -> TokenSet | MfaChallenge:
            return await _password_step(deps, ctx, account_id, password, trusted, checked)

        return await retry_on_conflict(attempt)


async def _refuse_unknown_name(deps: AuthDeps, username: str, password: str) -> None:
    """Throttled like an account nobody has a device token for, hashed all the same."""
    now = deps.clock()
    name = username_stream(username)
    bucket = await deps.unknown_names.throttle(name)
    retry_at = acct.throttled_until(bucket, now, deps.password_policy)
    if retry_at is not None:
        raise throttled(retry_at, now)
    await asyncio.to_thread(deps.passwords.dummy_verify, password)
    await deps.unknown_names.fail(name, now)
    raise InvalidCredentials()


async def _password_step(
    deps: AuthDeps,
    ctx: Context,
    account_id: str,
    password: str,
    trusted: bool,
    checked: dict[str, bool],
) -> TokenSet | MfaChallenge:
    now = deps.clock()
    account = await deps.accounts.load(account_stream(account_id))
    retry_at = acct.retry_password_at(account.state, trusted, now, deps.password_policy)
    if retry_at is not None:
        raise throttled(retry_at, now)
    stored = account.state.password_hash
    if stored not in checked:
        checked[stored] = await asyncio.to_thread(deps.passwords.verify, stored, password)
    if not checked[stored]:
        failed = acct.fail_password(account.state, trusted, now, deps.password_policy)
        # Whoever typed it is unknown: the account is the subject, not the actor.
        await deps.accounts.save(account_stream(account_id), account, ctx.new(failed, ANONYMOUS))
        raise InvalidCredentials()
    ctx = ctx.acting_for(account_id)
    second = await deps.twofactors.load(twofactor_stream(account_id))
    if tf.requires_second_factor(second.state, now):
        challenge_id = uuid.uuid4().hex
        ttl = timedelta(seconds=deps.settings.mfa_token_ttl_seconds)
        opened = acct.open_challenge(challenge_id, now, ttl)
        await deps.accounts.save(account_stream(account_id), account, ctx.new(opened))
        token = deps.issuer.issue_mfa(
            subject=account_id,
            challenge_id=challenge_id,
            audience=deps.settings.jwt_audience,
            now=now,
        )
        return MfaChallenge(token, int(ttl.total_seconds()))
    due = tf.due_events(second.state, now)  # a support reset that took effect
    return await start_session(
        deps,
        ctx,
        account_id,
        account,
        ("pwd",),
        "aal1",
        now,
        checked_second=None if due else second,
        second_write=(second, due) if due else None,
    )


async def login_mfa(deps: AuthDeps, ctx: Context, *, mfa_token: str, proof: Proof) -> TokenSet:
    """The second step: an open challenge and a valid second factor give tokens."""
    try:
        claims = deps.verifier.verify_mfa(mfa_token, now=deps.clock())
    except TokenError:
        raise MfaTokenInvalid() from None
    account_id, challenge_id = claims.sub, claims.jti
    ctx = ctx.acting_for(account_id)

    async def attempt() -> TokenSet:
        now = deps.clock()
        account = await deps.accounts.load(account_stream(account_id))
        try:
            challenge = acct.open_challenge_for(account.state, challenge_id, now)
        except NotAllowed:
            raise MfaTokenInvalid() from None
        second = await deps.twofactors.load(twofactor_stream(account_id))
        if not tf.challenge_still_open(second.state, challenge.issued_at, now):
            raise MfaTokenInvalid()
        verdict = await verdict_on(deps, account_id, second.state, proof, "login", now)
        if not verdict.accepted:
            if verdict.events:
                await deps.twofactors.save(
                    twofactor_stream(account_id), second, ctx.new(verdict.events)
                )
            raise refused(verdict, now)
        return await start_session(
            deps,
            ctx,
            account_id,
            account,
            amr_of(proof),
            "aal2",
            now,
            challenge_id=challenge_id,
            second_write=(second, verdict.events),
        )

    return await retry_on_conflict(attempt)
