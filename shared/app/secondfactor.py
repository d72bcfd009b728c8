"""Checking a second factor: the one path auth and enrolment both take.

``match_second_factor`` decrypts the secret and compares the code, outside the domain,
and decides nothing; the domain's ``check_second_factor`` then decides (replay, lockout,
spent codes). A refused check still returns events (the failure counts): the caller
appends them, then raises ``refused(verdict, now)``.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime

from shared.app.deps import Deps
from shared.app.errors import SecondFactorRefused
from shared.domain import twofactor as tf
from shared.eventstore.streams import twofactor_stream
from shared.security import totp
from shared.security.recovery import normalize
from shared.security.tokens import Claims

__all__ = ["Proof", "match_second_factor", "password_only_allowed", "refused", "verdict_on"]


@dataclass(frozen=True, slots=True)
class Proof:
    """What the user typed: a TOTP code or a recovery code (exactly one)."""

    otp: str | None = None
    recovery_code: str | None = None

    @property
    def method(self) -> str:
        return tf.TOTP if self.otp is not None else tf.RECOVERY_CODE


async def match_second_factor(
    deps: Deps, account_id: str, state: tf.TwoFactorState, proof: Proof, now: datetime
) -> int | None:
    """The TOTP time-step the code matched, or the index of the recovery code it matched."""
    if proof.otp is not None:
        if state.secret is None:
            return None
        aad = twofactor_stream(account_id).encode()
        secret = deps.keyring.decrypt(state.secret, aad).decode()
        return totp.match_step(secret, proof.otp, now, window=deps.settings.otp_window)
    code = proof.recovery_code or ""
    if normalize(code) is None:  # hashing costs; malformed input skips it
        return None
    return await asyncio.to_thread(deps.recovery.match, state.code_hashes, code)


async def verdict_on(
    deps: Deps,
    account_id: str,
    state: tf.TwoFactorState,
    proof: Proof,
    purpose: str,
    now: datetime,
) -> tf.Verdict:
    """The domain's verdict on ``proof`` against ``state`` (loaded by the caller)."""
    matched = await match_second_factor(deps, account_id, state, proof, now)
    return tf.check_second_factor(state, proof.method, matched, purpose, now, deps.policy)


def refused(verdict: tf.Verdict, now: datetime) -> SecondFactorRefused:
    """The error a refused verdict raises; a lock says how long it lasts."""
    if verdict.reason == "locked" and verdict.locked_until is not None:
        wait = max(1, int((verdict.locked_until - now).total_seconds()))
        return SecondFactorRefused(verdict, retry_after=wait)
    return SecondFactorRefused(verdict)


async def password_only_allowed(deps: Deps, claims: Claims) -> bool:
    """The store's answer (never a read model's) for an ``aal1`` token: see the domain."""
    loaded = await deps.twofactors.load(twofactor_stream(claims.sub))
    return tf.password_only_allowed(loaded.state, claims.sid)
