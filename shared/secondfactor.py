"""Checking a second factor: the one path auth and enrolment both take.

The secret is decrypted and the code compared here, outside the domain; the domain's
``verify_otp`` / ``redeem_recovery_code`` then decides (replay, lockout, spent codes).
A failed check still returns events (the failure counts), which the caller appends.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime

from shared import totp
from shared.core import Core, twofactor_stream
from shared.domain import twofactor as tf
from shared.http import Problem, retry_later
from shared.recovery import normalize
from shared.tokens import Claims

__all__ = ["Proof", "check", "password_only_allowed", "refuse"]


@dataclass(frozen=True, slots=True)
class Proof:
    """What the user typed: a TOTP code or a recovery code (exactly one)."""

    otp: str | None = None
    recovery_code: str | None = None

    @property
    def method(self) -> str:
        return tf.TOTP if self.otp is not None else tf.RECOVERY_CODE


async def check(
    core: Core,
    account_id: str,
    state: tf.TwoFactorState,
    proof: Proof,
    purpose: str,
    now: datetime,
) -> tf.Verdict:
    """The domain's verdict on ``proof`` against ``state`` (loaded by the caller)."""
    if proof.otp is not None:
        step = None
        if state.secret is not None:
            secret = core.keyring.decrypt(
                state.secret, twofactor_stream(account_id).encode()
            ).decode()
            step = totp.match_step(secret, proof.otp, now, window=core.settings.otp_window)
        return tf.verify_otp(state, step, purpose, now, core.policy)
    code = proof.recovery_code or ""
    index = None
    if normalize(code) is not None:  # hashing costs; malformed input skips it
        index = await asyncio.to_thread(core.recovery.match, state.code_hashes, code)
    return tf.redeem_recovery_code(state, index, purpose, now, core.policy)


async def password_only_allowed(core: Core, claims: Claims) -> bool:
    """The store's answer (never a read model's) for an ``aal1`` token: see the domain."""
    loaded = await core.twofactors.load(twofactor_stream(claims.sub))
    return tf.password_only_allowed(loaded.state, claims.sid)


def refuse(verdict: tf.Verdict, now: datetime) -> Problem:
    """The problem a refused verdict answers with: 423 while locked, else 401."""
    if verdict.reason == "locked" and verdict.locked_until is not None:
        wait = max(1, int((verdict.locked_until - now).total_seconds()))
        return retry_later(
            423,
            "second_factor_locked",
            "Too many wrong codes: the second factor is locked",
            wait,
            locked_until=verdict.locked_until.isoformat(),
        )
    return Problem(
        401,
        "invalid_code",
        "The code is not valid",
        detail="Codes work once; wait for the next one if you just used this one",
        attempts_left=verdict.attempts_left,
    )
