"""Secrets at rest: AES-256-GCM under a key ring, and constant-time comparison.

A ciphertext names the key that made it (``v1.<kid>.<nonce>.<ciphertext>``), so keys
rotate: new secrets use the active key and every older key in the ring still decrypts.
"""

from __future__ import annotations

import base64
import hmac
import secrets

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

__all__ = ["DecryptionError", "KeyRing", "constant_time_equals", "new_key"]

_VERSION = "v1"


class DecryptionError(Exception):
    """The ciphertext is malformed, its key is unknown, or it was tampered with."""


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def new_key() -> str:
    """A fresh random 256-bit key in base64: what every key setting takes."""
    return base64.b64encode(secrets.token_bytes(32)).decode()


DEVELOPMENT_KEY_MARK = b"twofa-dev-only\x00\x00"  # starts every server key make run writes


def new_development_key(random_bytes: int = 32) -> str:
    """A fresh key marked as development-only (the mark, then ``random_bytes`` random
    bytes), so that production recognises it and refuses to start with it."""
    return base64.b64encode(DEVELOPMENT_KEY_MARK + secrets.token_bytes(random_bytes)).decode()


def constant_time_equals(a: str | bytes, b: str | bytes) -> bool:
    """Compare two secrets in time that does not depend on where they differ."""
    left = a.encode() if isinstance(a, str) else a
    right = b.encode() if isinstance(b, str) else b
    return hmac.compare_digest(left, right)


class KeyRing:
    """AES-GCM keys by id; ``active`` encrypts, all of them decrypt."""

    def __init__(self, keys: dict[str, bytes], active: str) -> None:
        if active not in keys:
            raise ValueError(f"active key {active!r} is not in the ring")
        for kid, key in keys.items():
            if "." in kid or not kid:
                raise ValueError(f"key id {kid!r} may not be empty or contain '.'")
            if len(key) != 32:
                raise ValueError(f"key {kid!r} must be 32 bytes")
        self._ciphers = {kid: AESGCM(key) for kid, key in keys.items()}
        self.active = active

    def encrypt(self, plaintext: bytes, associated_data: bytes) -> str:
        """Encrypt under the active key; ``associated_data`` binds it to its owner."""
        nonce = secrets.token_bytes(12)
        sealed = self._ciphers[self.active].encrypt(nonce, plaintext, associated_data)
        return ".".join((_VERSION, self.active, _b64(nonce), _b64(sealed)))

    def decrypt(self, token: str, associated_data: bytes) -> bytes:
        """Decrypt a value made by ``encrypt`` with any key still in the ring."""
        parts = token.split(".")
        if len(parts) != 4 or parts[0] != _VERSION:
            raise DecryptionError("not a twofa ciphertext")
        _, kid, nonce, sealed = parts
        cipher = self._ciphers.get(kid)
        if cipher is None:
            raise DecryptionError(f"unknown key id {kid!r}")
        try:
            return cipher.decrypt(_unb64(nonce), _unb64(sealed), associated_data)
        except (InvalidTag, ValueError) as exc:
            raise DecryptionError("ciphertext does not verify") from exc

    def key_id_of(self, token: str) -> str:
        """The id of the key that encrypted ``token`` (for rotation reports)."""
        parts = token.split(".")
        if len(parts) != 4:
            raise DecryptionError("not a twofa ciphertext")
        return parts[1]
