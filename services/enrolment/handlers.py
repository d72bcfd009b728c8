"""Enrolment use cases: turn 2FA on (pending secret, QR, confirm), codes, off, reset.

Each step loads the ``twofactor-{id}`` stream, lets the domain decide, and appends with
the version it loaded. Secrets are decrypted only to draw the QR code or check a code.
"""

from __future__ import annotations

import asyncio
import io
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import segno

from shared import recovery, totp
from shared.aggregate import Loaded
from shared.core import Core, retry_on_conflict, twofactor_stream
from shared.domain import twofactor as tf
from shared.events import DomainEvent, EventMetadata, NewEvent
from shared.http import Problem
from shared.secondfactor import Proof, check, refuse
from shared.tokens import Claims

__all__ = [
    "Enrolment",
    "Status",
    "approve_reset",
    "cancel_reset",
    "confirm",
    "disable",
    "label_for",
    "pending_uri",
    "qr_image",
    "regenerate_codes",
    "request_reset",
    "start",
    "status",
]


@dataclass(frozen=True, slots=True)
class Enrolment:
    secret: str
    otpauth_uri: str
    expires_at: datetime


@dataclass(frozen=True, slots=True)
class Status:
    enabled: bool
    enabled_at: datetime | None
    recovery_codes_left: int
    pending_enrolment_expires_at: datetime | None
    reset: tf.PendingReset | None


def _new(
    core: Core, events: Sequence[DomainEvent], actor: str, correlation: uuid.UUID
) -> list[NewEvent]:
    meta = EventMetadata(correlation_id=correlation, actor=actor, occurred_at=core.clock())
    return [NewEvent(e, meta) for e in events]


def _aad(account_id: str) -> bytes:
    return twofactor_stream(account_id).encode()


def require_fresh_login(core: Core, claims: Claims) -> None:
    """Turning 2FA on needs a password entered in the last few minutes."""
    age = core.clock().timestamp() - claims.auth_time
    if age > core.settings.reauth_max_age_seconds:
        raise Problem(
            401,
            "reauthentication_required",
            "Enter your password again first",
            detail="POST your password to the auth service's /v1/reauthenticate, then retry "
            "with the token it returns",
            max_age_seconds=core.settings.reauth_max_age_seconds,
        )


async def label_for(core: Core, account_id: str) -> str:
    """The account's email from the enrolment projection; the account id until it arrives."""
    email = await core.pool.fetchval(
        "SELECT email FROM enrolment_labels WHERE account_id = $1", account_id
    )
    return str(email) if email else account_id


async def start(core: Core, claims: Claims, correlation: uuid.UUID) -> Enrolment:
    """Start or restart an enrolment with a new secret (the old pending one is replaced)."""
    require_fresh_login(core, claims)
    account_id = claims.sub
    secret = totp.new_secret()
    sealed = core.keyring.encrypt(secret.encode(), _aad(account_id))
    label = await label_for(core, account_id)

    async def attempt() -> Enrolment:
        now = core.clock()
        loaded = await core.twofactors.load(twofactor_stream(account_id))
        events = tf.start_enrolment(loaded.state, sealed, now, core.policy)
        await core.twofactors.save(
            twofactor_stream(account_id),
            loaded,
            _new(core, events, f"account:{account_id}", correlation),
        )
        uri = totp.provisioning_uri(secret, issuer=core.settings.issuer, account=label)
        return Enrolment(secret, uri, now + core.policy.enrolment_ttl)

    return await retry_on_conflict(attempt)


async def pending_uri(core: Core, account_id: str) -> str:
    """The ``otpauth://`` URI of the pending enrolment (for the QR code)."""
    loaded = await core.twofactors.load(twofactor_stream(account_id))
    sealed = tf.pending_secret(loaded.state, core.clock())
    secret = core.keyring.decrypt(sealed, _aad(account_id)).decode()
    label = await label_for(core, account_id)
    return totp.provisioning_uri(secret, issuer=core.settings.issuer, account=label)


def qr_image(uri: str, kind: str) -> bytes:
    """The QR code of ``uri`` as SVG or PNG, dark on white with the quiet zone."""
    out = io.BytesIO()
    code = segno.make(uri, error="m", micro=False)
    if kind == "svg":
        code.save(out, kind="svg", scale=6, border=4, light="white", xmldecl=False)
    else:
        code.save(out, kind="png", scale=6, border=4)
    return out.getvalue()


async def confirm(core: Core, claims: Claims, code: str, correlation: uuid.UUID) -> list[str]:
    """2FA is on from now: the first code matched. Returns the recovery codes, once."""
    account_id = claims.sub
    codes = recovery.new_codes()
    hashes = await asyncio.to_thread(lambda: [core.recovery.hash(c) for c in codes])

    async def attempt() -> list[str]:
        now = core.clock()
        loaded = await core.twofactors.load(twofactor_stream(account_id))
        sealed = tf.pending_secret(loaded.state, now)
        secret = core.keyring.decrypt(sealed, _aad(account_id)).decode()
        step = totp.match_step(secret, code, now, window=core.settings.otp_window)
        verdict = tf.confirm_enrolment(
            loaded.state, step, hashes, now, core.policy, session_id=claims.sid
        )
        await _save(core, account_id, loaded, verdict.events, correlation)
        if not verdict.accepted:
            raise refuse(verdict, now)
        return codes

    return await retry_on_conflict(attempt)


async def status(core: Core, account_id: str) -> Status:
    now = core.clock()
    state = (await core.twofactors.load(twofactor_stream(account_id))).state
    on = tf.requires_second_factor(state, now)
    pending = (
        state.pending_expires_at
        if state.pending_secret and state.pending_expires_at and state.pending_expires_at > now
        else None
    )
    return Status(
        enabled=on,
        enabled_at=state.enabled_at if on else None,
        recovery_codes_left=state.codes_left if on else 0,
        pending_enrolment_expires_at=None if on else pending,
        reset=state.reset if on else None,
    )


async def regenerate_codes(
    core: Core, claims: Claims, proof: Proof, correlation: uuid.UUID
) -> list[str]:
    """A new set of recovery codes after an OTP; the old set stops working at once."""
    account_id = claims.sub
    codes = recovery.new_codes()
    hashes = await asyncio.to_thread(lambda: [core.recovery.hash(c) for c in codes])

    async def attempt() -> list[str]:
        now = core.clock()
        loaded = await core.twofactors.load(twofactor_stream(account_id))
        verdict = await _verified(
            core, account_id, loaded, proof, "regenerate_codes", now, correlation
        )
        events = [*verdict.events, *tf.regenerate_recovery_codes(loaded.state, hashes, now)]
        await _save(core, account_id, loaded, events, correlation)
        return codes

    return await retry_on_conflict(attempt)


async def disable(core: Core, claims: Claims, proof: Proof, correlation: uuid.UUID) -> None:
    """Turn 2FA off, "one last time" proving the second factor."""
    account_id = claims.sub

    async def attempt() -> None:
        now = core.clock()
        loaded = await core.twofactors.load(twofactor_stream(account_id))
        verdict = await _verified(core, account_id, loaded, proof, "disable", now, correlation)
        after = tf.fold(loaded.state, verdict.events)
        events = [*verdict.events, *tf.disable(after, proof.method, session_id=claims.sid, now=now)]
        await _save(core, account_id, loaded, events, correlation)

    await retry_on_conflict(attempt)


async def _verified(
    core: Core,
    account_id: str,
    loaded: Loaded[tf.TwoFactorState],
    proof: Proof,
    purpose: str,
    now: datetime,
    correlation: uuid.UUID,
) -> tf.Verdict:
    """The accepted verdict on ``proof``; a refusal is recorded, then raised."""
    verdict = await check(core, account_id, loaded.state, proof, purpose, now)
    if not verdict.accepted:
        await _save(core, account_id, loaded, verdict.events, correlation)
        raise refuse(verdict, now)
    return verdict


async def _save(
    core: Core,
    account_id: str,
    loaded: Loaded[tf.TwoFactorState],
    events: Sequence[DomainEvent],
    correlation: uuid.UUID,
    actor: str | None = None,
) -> None:
    if events:
        await core.twofactors.save(
            twofactor_stream(account_id),
            loaded,
            _new(core, events, actor or f"account:{account_id}", correlation),
        )


# Support reset ------------------------------------------------------------------------


async def request_reset(
    core: Core, claims: Claims, account_id: str, ticket: str, reason: str, correlation: uuid.UUID
) -> str:
    """Support opens a reset for a user who lost phone and codes."""
    request_id = uuid.uuid4().hex

    async def attempt() -> str:
        now = core.clock()
        loaded = await core.twofactors.load(twofactor_stream(account_id))
        events = tf.request_reset(
            loaded.state,
            account_id=account_id,
            request_id=request_id,
            requested_by=claims.sub,
            ticket=ticket,
            reason=reason,
            now=now,
        )
        await _save(core, account_id, loaded, events, correlation, f"account:{claims.sub}")
        return request_id

    return await retry_on_conflict(attempt)


async def approve_reset(
    core: Core, claims: Claims, account_id: str, request_id: str, correlation: uuid.UUID
) -> datetime:
    """A second support account approves; returns when the reset takes effect."""

    async def attempt() -> datetime:
        now = core.clock()
        loaded = await core.twofactors.load(twofactor_stream(account_id))
        events = tf.approve_reset(
            loaded.state,
            account_id=account_id,
            request_id=request_id,
            approved_by=claims.sub,
            now=now,
            policy=core.policy,
        )
        await _save(core, account_id, loaded, events, correlation, f"account:{claims.sub}")
        return now + core.policy.reset_cooling_off

    return await retry_on_conflict(attempt)


async def cancel_reset(
    core: Core,
    claims: Claims,
    account_id: str,
    request_id: str,
    reason: str,
    correlation: uuid.UUID,
) -> None:
    """Support, or the account owner, cancels a reset before it takes effect."""

    async def attempt() -> None:
        now = core.clock()
        loaded = await core.twofactors.load(twofactor_stream(account_id))
        events = tf.cancel_reset(
            loaded.state, request_id=request_id, cancelled_by=claims.sub, reason=reason, now=now
        )
        await _save(core, account_id, loaded, events, correlation, f"account:{claims.sub}")

    await retry_on_conflict(attempt)
