"""Ed25519 signing keys for tokens and events: the configured key ring, rotation by key id, JWKS."""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from jwt.algorithms import OKPAlgorithm

__all__ = ["ALG", "ALGS", "LEGACY_ALG", "SigningKeys", "is_jwks", "keys_from_jwks"]

ALG = "Ed25519"  # RFC 9864's fully specified name: what tokens are signed as
LEGACY_ALG = "EdDSA"  # deprecated by RFC 9864; accepted for tokens issued before the switch
ALGS = (ALG, LEGACY_ALG)

try:  # PyJWT knows the key type (OKP) but not yet RFC 9864's name for it
    jwt.get_algorithm_by_name(ALG)
except NotImplementedError:
    jwt.register_algorithm(ALG, OKPAlgorithm())
_BASE64URL = re.compile(r"[A-Za-z0-9_-]*")
_KID = re.compile(r"[A-Za-z0-9._-]{1,64}")


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class SigningKeys:
    """Ed25519 private keys by key id: the active one signs, all of them are published."""

    def __init__(self, keys: Mapping[str, Ed25519PrivateKey], active: str) -> None:
        for kid in keys:
            if not _KID.fullmatch(kid):
                raise ValueError(
                    f"signing key id {kid!r} must be 1-64 letters, digits, '.', '_' or '-'"
                )
        if active not in keys:
            raise ValueError(f"active signing key {active!r} is not in the ring")
        self._keys = dict(keys)
        self._active = active

    @classmethod
    def from_config(cls, raw: str, active: str | None) -> SigningKeys:
        """Parse ``kid:base64(32-byte seed),kid2:...``; ``active`` may be omitted for one key."""
        keys: dict[str, Ed25519PrivateKey] = {}
        for number, part in enumerate((p.strip() for p in raw.split(",") if p.strip()), 1):
            kid, sep, encoded = part.partition(":")
            kid = kid.strip()
            if not sep or not kid:
                # Without a separator the part may be a bare key, so only its place is named.
                raise ValueError(f"signing key #{number} must look like 'kid:base64seed'")
            if kid in keys:
                raise ValueError(f"signing key id {kid!r} appears twice")
            try:
                seed = base64.b64decode(encoded.strip(), validate=True)
            except binascii.Error:
                raise ValueError(f"signing key {kid!r} is not valid base64") from None
            if len(seed) != 32:
                raise ValueError(f"signing key {kid!r} must be a 32-byte Ed25519 seed")
            keys[kid] = Ed25519PrivateKey.from_private_bytes(seed)
        if not keys:
            raise ValueError("no signing key is configured")
        if active is None:
            if len(keys) != 1:
                raise ValueError(
                    f"the active signing key id must be named; the ring holds {sorted(keys)}"
                )
            active = next(iter(keys))
        return cls(keys, active)

    @classmethod
    def generate(cls, kid: str) -> SigningKeys:
        """A ring of one fresh key, for development and tests."""
        return cls({kid: Ed25519PrivateKey.generate()}, kid)

    @property
    def active_kid(self) -> str:
        return self._active

    def to_config(self) -> str:
        """The ring as ``from_config`` reads it (holds private keys: dev tooling only)."""
        return ",".join(
            f"{kid}:{base64.b64encode(key.private_bytes_raw()).decode()}"
            for kid, key in self._keys.items()
        )

    def public_config(self) -> str:
        """The public keys as the ``kid:base64`` ring a ``TWOFA_*_VERIFY_KEYS`` setting reads."""
        return ",".join(
            f"{kid}:{base64.b64encode(key.public_bytes_raw()).decode()}"
            for kid, key in self.public_keys().items()
        )

    def public_keys(self) -> dict[str, Ed25519PublicKey]:
        """Every public key by id, for a verifier in the same process."""
        return {kid: key.public_key() for kid, key in self._keys.items()}

    def public_jwks(self) -> dict[str, Any]:
        """Every public key as an RFC 8037 JWKS, so tokens from older keys keep verifying.

        During the switch to RFC 9864's names each key is listed twice, as ``Ed25519``
        and as the deprecated ``EdDSA``, for verifiers that match on ``alg``.
        """
        return {
            "keys": [
                {
                    "kty": "OKP",
                    "crv": "Ed25519",
                    "x": _b64url(key.public_bytes_raw()),
                    "kid": kid,
                    "use": "sig",
                    "alg": alg,
                }
                for kid, key in self.public_keys().items()
                for alg in ALGS
            ]
        }

    def sign(self, payload: Mapping[str, Any], *, typ: str) -> str:
        """A compact JWS of ``payload`` under the active key, with ``kid`` and ``typ`` headers."""
        headers = {"kid": self._active, "typ": typ}
        return jwt.encode(dict(payload), self._keys[self._active], algorithm=ALG, headers=headers)

    def sign_bytes(self, data: bytes) -> bytes:
        """A raw Ed25519 signature of ``data`` under the active key (signed events)."""
        return self._keys[self._active].sign(data)

    def __repr__(self) -> str:
        return f"SigningKeys(active_kid={self._active!r}, kids={list(self._keys)!r})"


def is_jwks(document: Mapping[str, Any]) -> bool:
    return isinstance(document.get("keys"), list)


def keys_from_jwks(jwks: Mapping[str, Any]) -> dict[str, Ed25519PublicKey]:
    keys: dict[str, Ed25519PublicKey] = {}
    for jwk in jwks["keys"]:
        if not isinstance(jwk, Mapping) or (jwk.get("kty"), jwk.get("crv")) != ("OKP", "Ed25519"):
            continue
        if jwk.get("use", "sig") != "sig" or jwk.get("alg", ALG) not in ALGS:
            continue
        kid, x = jwk.get("kid"), jwk.get("x")
        if not isinstance(kid, str) or not kid:
            raise ValueError("an Ed25519 key in the JWKS has no kid")
        if not isinstance(x, str) or not _BASE64URL.fullmatch(x) or len(x) != 43:
            raise ValueError(f"JWKS key {kid!r} has no valid 32-byte 'x'")
        key = Ed25519PublicKey.from_public_bytes(base64.urlsafe_b64decode(x + "="))
        if kid in keys and keys[kid].public_bytes_raw() != key.public_bytes_raw():
            raise ValueError(f"JWKS key id {kid!r} names two different keys")
        keys[kid] = key  # the same key under both names is one key
    return keys
