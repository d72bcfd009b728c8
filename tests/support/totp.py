"""TOTP codes from an implementation that is not the one under test (pyotp)."""

from __future__ import annotations

import base64
from datetime import datetime

from cryptography.hazmat.primitives.hashes import SHA1
from cryptography.hazmat.primitives.twofactor.totp import TOTP


def otp(secret: str, at: datetime) -> str:
    """A TOTP code from an implementation that is not pyotp."""
    key = base64.b32decode(secret + "=" * (-len(secret) % 8))
    return TOTP(key, 6, SHA1(), 30, enforce_key_length=False).generate(at.timestamp()).decode()
