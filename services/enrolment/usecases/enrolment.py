"""Enrolment use cases: turn 2FA on (pending secret, QR, confirm), codes, off.

Each step loads the ``twofactor-{id}`` stream, lets the domain decide, and appends with
the version it loaded. Secrets are decrypted only to draw the QR code or check a code.
The actor of every event is the signed-in account (the token's subject).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TypeVar

from services.enrolment.adapters.labels import label_for
from shared.app.context import Context
from shared.app.deps import Deps
from shared.app.errors import ReauthenticationRequired
from shared.app.retry import retry_on_conflict
from shared.app.secondfactor import Proof, refused, verdict_on
from shared.domain import twofactor as tf
from shared.domain.base import DomainEvent
from shared.eventstore.repository import Loaded
from shared.eventstore.streams import twofactor_stream
from shared.security import recovery, totp
from shared.security.tokens import Claims

__all__ = [
    "Enrolment",
    "confirm",
    "decide",
    "disable",
    "on_stream",
    "pending_uri",
    "regenerate_codes",
    "require_fresh_login",
    "save",
    "start",
    "status",
]


@dataclass(frozen=True, slots=True)
class Enrolment:
    secret: str
    otpauth_uri: str
    expires_at: datetime


def _aad(account_id: str) -> bytes:
    return twofactor_stream(account_id).encode()


def require_fresh_login(deps: Deps, claims: Claims) -> None:
    """Turning 2FA on needs a password entered in the last few minutes."""
    age = deps.clock().timestamp() - claims.auth_time
    if age > deps.settings.reauth_max_age_seconds:
        raise ReauthenticationRequired(deps.settings.reauth_max_age_seconds)


async def start(deps: Deps, ctx: Context, claims: Claims) -> Enrolment:
    """Start or restart an enrolment with a new secret (the old pending one is replaced)."""
    ctx = ctx.acting_for(claims.sub)
    require_fresh_login(deps, claims)
    account_id = claims.sub
    secret = totp.new_secret()
    sealed = deps.keyring.encrypt(secret.encode(), _aad(account_id))
    label = await label_for(deps.pool, account_id)

    async def started(loaded: Loaded[tf.TwoFactorState], now: datetime) -> Enrolment:
        events = tf.start_enrolment(loaded.state, sealed, now, deps.policy)
        await save(deps, ctx, account_id, loaded, events)
        uri = totp.provisioning_uri(secret, issuer=deps.settings.issuer, account=label)
        return Enrolment(secret, uri, now + deps.policy.enrolment_ttl)

    return await on_stream(deps, account_id, started)


async def pending_uri(deps: Deps, account_id: str) -> str:
    """The ``otpauth://`` URI of the pending enrolment (for the QR code)."""
    loaded = await deps.twofactors.load(twofactor_stream(account_id))
    sealed = tf.secret_to_confirm(loaded.state, deps.clock())
    secret = deps.keyring.decrypt(sealed, _aad(account_id)).decode()
    label = await label_for(deps.pool, account_id)
    return totp.provisioning_uri(secret, issuer=deps.settings.issuer, account=label)


async def confirm(deps: Deps, ctx: Context, claims: Claims, code: str) -> list[str]:
    """2FA is on from now: the first code matched. Returns the recovery codes, once."""
    ctx = ctx.acting_for(claims.sub)
    account_id = claims.sub
    codes, hashes = await _new_codes(deps)

    async def confirmed(loaded: Loaded[tf.TwoFactorState], now: datetime) -> list[str]:
        sealed = tf.secret_to_confirm(loaded.state, now)
        secret = deps.keyring.decrypt(sealed, _aad(account_id)).decode()
        step = totp.match_step(secret, code, now, window=deps.settings.otp_window)
        verdict = tf.confirm_enrolment(
            loaded.state, step, hashes, now, deps.policy, session_id=claims.sid
        )
        await save(deps, ctx, account_id, loaded, verdict.events)
        if not verdict.accepted:
            raise refused(verdict, now)
        return codes

    return await on_stream(deps, account_id, confirmed)


async def status(deps: Deps, account_id: str) -> tf.TwoFactorStatus:
    """The account's 2FA status, from its stream."""
    loaded = await deps.twofactors.load(twofactor_stream(account_id))
    return tf.status(loaded.state, deps.clock())


async def regenerate_codes(deps: Deps, ctx: Context, claims: Claims, proof: Proof) -> list[str]:
    """A new set of recovery codes after an OTP; the old set stops working at once."""
    ctx = ctx.acting_for(claims.sub)
    account_id = claims.sub
    codes, hashes = await _new_codes(deps)

    async def regenerated(loaded: Loaded[tf.TwoFactorState], now: datetime) -> list[str]:
        verdict = await _verified(deps, ctx, account_id, loaded, proof, "regenerate_codes", now)
        events = [*verdict.events, *tf.regenerate_recovery_codes(loaded.state, hashes, now)]
        await save(deps, ctx, account_id, loaded, events)
        return codes

    return await on_stream(deps, account_id, regenerated)


async def disable(deps: Deps, ctx: Context, claims: Claims, proof: Proof) -> None:
    """Turn 2FA off, "one last time" proving the second factor."""
    ctx = ctx.acting_for(claims.sub)
    account_id = claims.sub

    async def disabled(loaded: Loaded[tf.TwoFactorState], now: datetime) -> None:
        verdict = await _verified(deps, ctx, account_id, loaded, proof, "disable", now)
        after = tf.fold(loaded.state, verdict.events)
        events = [*verdict.events, *tf.disable(after, proof.method, session_id=claims.sid, now=now)]
        await save(deps, ctx, account_id, loaded, events)

    await on_stream(deps, account_id, disabled)


async def _new_codes(deps: Deps) -> tuple[list[str], list[str]]:
    """A new set of recovery codes, and their keyed hashes (off the event loop)."""
    codes = recovery.new_codes()
    hashes = await asyncio.to_thread(lambda: [deps.recovery.hash(c) for c in codes])
    return codes, hashes


async def _verified(
    deps: Deps,
    ctx: Context,
    account_id: str,
    loaded: Loaded[tf.TwoFactorState],
    proof: Proof,
    purpose: str,
    now: datetime,
) -> tf.Verdict:
    """The accepted verdict on ``proof``; a refusal is recorded, then raised."""
    verdict = await verdict_on(deps, account_id, loaded.state, proof, purpose, now)
    if not verdict.accepted:
        await save(deps, ctx, account_id, loaded, verdict.events)
        raise refused(verdict, now)
    return verdict


async def save(
    deps: Deps,
    ctx: Context,
    account_id: str,
    loaded: Loaded[tf.TwoFactorState],
    events: Sequence[DomainEvent],
) -> None:
    """Append ``events`` (if any) to the account's twofactor stream, as ``ctx``'s actor."""
    if events:
        await deps.twofactors.save(twofactor_stream(account_id), loaded, ctx.new(events))


T = TypeVar("T")
Step = Callable[[Loaded[tf.TwoFactorState], datetime], Awaitable[T]]
Decision = Callable[[tf.TwoFactorState, datetime], Sequence[DomainEvent]]


async def on_stream(deps: Deps, account_id: str, step: Step[T]) -> T:
    """Run ``step`` on the account's freshly loaded twofactor stream and the time; all
    again when another writer appended first (``step`` appends with the loaded version)."""

    async def attempt() -> T:
        now = deps.clock()
        return await step(await deps.twofactors.load(twofactor_stream(account_id)), now)

    return await retry_on_conflict(attempt)


async def decide(deps: Deps, ctx: Context, account_id: str, decision: Decision) -> datetime:
    """Decide on the account's twofactor stream and append what was decided (see
    ``on_stream``). Returns the time the decision was made at."""

    async def decided(loaded: Loaded[tf.TwoFactorState], now: datetime) -> datetime:
        await save(deps, ctx, account_id, loaded, decision(loaded.state, now))
        return now

    return await on_stream(deps, account_id, decided)
