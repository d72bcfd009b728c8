"""Valid production values of every key setting: real random keys, nothing make run writes."""

from __future__ import annotations

import base64
import secrets

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from shared.security.crypto import new_key

__all__ = ["named", "production_values"]


def named(kid: str, raw: bytes) -> str:
    """One ``kid:base64`` entry of a key ring."""
    return f"{kid}:{base64.b64encode(raw).decode()}"


def production_values() -> dict[str, str]:
    """A valid production value of each key setting (a new key setting adds one line)."""
    seed = secrets.token_bytes(32)
    public = Ed25519PrivateKey.from_private_bytes(seed).public_key().public_bytes_raw()
    return {
        "TWOFA_ENCRYPTION_KEYS": named("2026-06", secrets.token_bytes(32)),
        "TWOFA_ENCRYPTION_ACTIVE_KEY_ID": "2026-06",
        "TWOFA_JWT_SIGNING_KEYS": named("sig-2026", seed),
        "TWOFA_JWT_ACTIVE_KEY_ID": "sig-2026",
        "TWOFA_JWT_VERIFY_KEYS": named("sig-2026", public),
        "TWOFA_RECOVERY_CODE_KEY": new_key(),
        "TWOFA_DEVICE_TOKEN_KEY": new_key(),
        "TWOFA_SNAPSHOT_KEYS": named("snap-2026", secrets.token_bytes(32)),
        "TWOFA_SNAPSHOT_ACTIVE_KEY_ID": "snap-2026",
        "TWOFA_EVENT_SIGNING_KEYS": named("events-2026", seed),
        "TWOFA_EVENT_SIGNING_ACTIVE_KEY_ID": "events-2026",
        "TWOFA_EVENT_VERIFY_KEYS": named("events-2026", public),
    }
