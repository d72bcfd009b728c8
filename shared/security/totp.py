"""Time-based one-time passwords (RFC 6238) as authenticator apps expect them.

SHA-1, 6 digits, 30-second steps: the only parameters every app honours. A code is
identified by its time step, so a caller can refuse a step it has already accepted
(replay) by remembering the last one.
"""

from __future__ import annotations

import base64
import hmac
import re
import secrets
from datetime import UTC, datetime, timedelta
from urllib.parse import quote

import pyotp

__all__ = [
    "DIGITS",
    "PERIOD_SECONDS",
    "code_at",
    "match_step",
    "new_secret",
    "provisioning_uri",
    "time_step",
]

DIGITS = 6
PERIOD_SECONDS = 30

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_PERIOD = timedelta(seconds=PERIOD_SECONDS)
_CODE = re.compile(r"[0-9]{6}")  # an explicit range: \d would also take '٣' and friends
_MAX_INPUT = 64  # longer input is refused before any work is done on it


def new_secret() -> str:
    """A fresh 160-bit secret (the RFC 4226 recommendation) in unpadded base32."""
    return base64.b32encode(secrets.token_bytes(20)).decode("ascii").rstrip("=")


def time_step(at: datetime) -> int:
    """The RFC 6238 time step that ``at`` falls in; ``at`` must be timezone-aware."""
    if at.tzinfo is None or at.utcoffset() is None:
        raise ValueError("time_step needs a timezone-aware datetime")
    return (at - _EPOCH) // _PERIOD


def code_at(secret: str, step: int) -> str:
    """The 6-digit code for ``secret`` at time step ``step``."""
    return pyotp.TOTP(secret, digits=DIGITS, interval=PERIOD_SECONDS).generate_otp(step)


def _normalize(code: str) -> str | None:
    if not isinstance(code, str) or len(code) > _MAX_INPUT:
        return None
    compact = "".join(code.split())  # apps show "123 456"; users paste it that way
    return compact if _CODE.fullmatch(compact) else None


def match_step(secret: str, code: str, at: datetime, *, window: int = 1) -> int | None:
    """The time step within ``window`` steps of ``at`` whose code is ``code``, else None.

    Every candidate is compared in constant time and none is skipped, so the answer
    takes the same time whichever step (if any) matched. Malformed input gives None.
    """
    if window < 0:
        raise ValueError("window must not be negative")
    wanted = _normalize(code)
    if wanted is None:
        return None
    totp = pyotp.TOTP(secret, digits=DIGITS, interval=PERIOD_SECONDS)
    now = time_step(at)
    matched: int | None = None
    for step in range(max(0, now - window), now + window + 1):
        if hmac.compare_digest(totp.generate_otp(step), wanted) and matched is None:
            matched = step
    return matched


def provisioning_uri(secret: str, *, issuer: str, account: str) -> str:
    """The ``otpauth://`` Key URI an authenticator app scans from a QR code.

    Issuer and account are percent-encoded as UTF-8 with nothing left safe, so spaces,
    '@', ':' and non-ASCII letters survive the round trip.
    """
    if not issuer:
        raise ValueError("issuer must not be empty")
    if not account:
        raise ValueError("account must not be empty")
    label = f"{quote(issuer, safe='')}:{quote(account, safe='')}"
    query = (
        f"secret={quote(secret, safe='')}&issuer={quote(issuer, safe='')}"
        f"&algorithm=SHA1&digits={DIGITS}&period={PERIOD_SECONDS}"
    )
    return f"otpauth://totp/{label}?{query}"
