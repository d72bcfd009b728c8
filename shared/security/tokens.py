"""Access and MFA tokens: JWTs signed with Ed25519 (``alg`` Ed25519, RFC 9864) under a key ring.

The auth service holds ``SigningKeys`` and mints tokens with ``TokenIssuer``; any service
checks them with ``TokenVerifier``, built from the published JWKS. A token names its key
(``kid``), so keys rotate: new tokens use the active key, and the older keys stay in the
JWKS until the tokens they signed have expired. The header ``typ`` keeps the two kinds
apart: ``at+jwt`` (RFC 9068) for access tokens, ``mfa+jwt`` for the short-lived token
that only lets its holder present a second factor.

Errors::

    TokenError(Exception)   a token is refused; ``.reason`` is one short code (``Reason``),
                            the message never repeats the token
    ValueError              a key ring, JWKS or argument that cannot work; names the key id,
                            never key material
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import jwt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from shared.security.keys import ALGS, SigningKeys, is_jwks, keys_from_jwks

Reason = Literal[
    "malformed",
    "alg_not_allowed",
    "wrong_type",
    "unknown_key",
    "bad_signature",
    "wrong_issuer",
    "wrong_audience",
    "expired",
    "not_yet_valid",
    "revoked",
]


_ACCESS_TYP = "at+jwt"
_MFA_TYP = "mfa+jwt"
_ACRS = frozenset({"aal1", "aal2"})
_MAX_TOKEN_CHARS = 8 * 1024
_COMPACT_JWS = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")


class TokenError(Exception):
    """A token was refused; ``reason`` is a short machine code for metrics and responses."""

    def __init__(self, message: str, reason: Reason) -> None:
        super().__init__(message)
        self.reason: Reason = reason


def _timestamp(moment: datetime, name: str) -> float:
    # A naive datetime would be read as local time and shift every expiry.
    if moment.tzinfo is None:
        raise ValueError(f"{name} must be timezone-aware")
    return moment.timestamp()


@dataclass(frozen=True)
class Claims:
    """A verified token. MFA tokens have ``sid == ""`` and no roles; their ``jti`` is the
    challenge id."""

    iss: str
    sub: str
    aud: str
    sid: str
    iat: int
    exp: int
    auth_time: int
    amr: tuple[str, ...]
    acr: str
    roles: tuple[str, ...]
    jti: str
    typ: str


class TokenIssuer:
    """Mints access and MFA tokens under the ring's active key."""

    def __init__(
        self,
        keys: SigningKeys,
        *,
        issuer: str,
        access_ttl: timedelta = timedelta(minutes=15),
        mfa_ttl: timedelta = timedelta(minutes=5),
    ) -> None:
        if access_ttl <= timedelta(0) or mfa_ttl <= timedelta(0):
            raise ValueError("token lifetimes must be positive")
        self._keys = keys
        self._issuer = issuer
        self._access_seconds = int(access_ttl.total_seconds())
        self._mfa_seconds = int(mfa_ttl.total_seconds())

    def issue_access(
        self,
        *,
        subject: str,
        audience: str | Sequence[str],
        session_id: str,
        auth_time: datetime,
        amr: Sequence[str],
        acr: str,
        roles: Sequence[str],
        now: datetime,
    ) -> str:
        """An access token (``typ`` at+jwt) for one session of ``subject``."""
        if acr not in _ACRS:
            raise ValueError(f"acr must be one of {sorted(_ACRS)}")
        if not subject or not session_id:
            raise ValueError("an access token needs a subject and a session id")
        iat = int(_timestamp(now, "now"))
        payload = {
            "iss": self._issuer,
            "sub": subject,
            "aud": audience if isinstance(audience, str) else list(audience),
            "sid": session_id,
            "iat": iat,
            "exp": iat + self._access_seconds,
            "auth_time": int(_timestamp(auth_time, "auth_time")),
            "amr": list(amr),
            "acr": acr,
            "roles": list(roles),
            "jti": secrets.token_urlsafe(16),
            "typ": "access",
        }
        return self._keys.sign(payload, typ=_ACCESS_TYP)

    def issue_mfa(
        self,
        *,
        subject: str,
        challenge_id: str,
        audience: str | Sequence[str],
        now: datetime,
        amr: Sequence[str] = ("pwd",),
    ) -> str:
        """An MFA token (``typ`` mfa+jwt): the first factor passed, the second is pending."""
        if not subject or not challenge_id:
            raise ValueError("an MFA token needs a subject and a challenge id")
        iat = int(_timestamp(now, "now"))
        payload = {
            "iss": self._issuer,
            "sub": subject,
            "aud": audience if isinstance(audience, str) else list(audience),
            "iat": iat,
            "exp": iat + self._mfa_seconds,
            "auth_time": iat,
            "amr": list(amr),
            "acr": "aal1",
            "jti": challenge_id,
            "typ": "mfa",
        }
        return self._keys.sign(payload, typ=_MFA_TYP)


def _never_revoked(session_id: str) -> bool:
    return False


def _malformed(claim: str) -> TokenError:
    return TokenError(f"claim {claim!r} is missing or has the wrong type", "malformed")


def _text(payload: Mapping[str, Any], claim: str) -> str:
    value = payload.get(claim)
    if not isinstance(value, str) or not value:
        raise _malformed(claim)
    return value


def _number(payload: Mapping[str, Any], claim: str) -> int:
    value = payload.get(claim)
    if type(value) is not int:  # bool is an int too, and floats are refused
        raise _malformed(claim)
    return value


def _texts(payload: Mapping[str, Any], claim: str) -> tuple[str, ...]:
    value = payload.get(claim)
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise _malformed(claim)
    return tuple(value)


class TokenVerifier:
    """Checks tokens from ``TokenIssuer``; refuses anything else with ``TokenError`` only."""

    def __init__(
        self,
        public_keys: Mapping[str, Ed25519PublicKey] | Mapping[str, Any],
        *,
        issuer: str,
        audience: str,
        leeway: timedelta = timedelta(seconds=30),
        is_revoked: Callable[[str], bool] | None = None,
    ) -> None:
        if is_jwks(public_keys):
            keys = keys_from_jwks(public_keys)
        else:
            keys = dict(public_keys)
            if not all(isinstance(key, Ed25519PublicKey) for key in keys.values()):
                raise ValueError("verification keys must be Ed25519 public keys")
        if not keys:
            raise ValueError("no Ed25519 verification key is given")
        self._keys: dict[str, Ed25519PublicKey] = keys
        self._issuer = issuer
        self._audience = audience
        self._leeway = leeway.total_seconds()
        self._is_revoked = is_revoked or _never_revoked

    @classmethod
    def from_jwks(
        cls,
        jwks: Mapping[str, Any],
        *,
        issuer: str,
        audience: str,
        leeway: timedelta = timedelta(seconds=30),
        is_revoked: Callable[[str], bool] | None = None,
    ) -> TokenVerifier:
        """A verifier for the Ed25519 keys of a JWKS document (other keys are ignored)."""
        if not is_jwks(jwks):
            raise ValueError("a JWKS document needs a 'keys' list")
        return cls(jwks, issuer=issuer, audience=audience, leeway=leeway, is_revoked=is_revoked)

    def verify_access(self, token: str, *, now: datetime | None = None) -> Claims:
        """The claims of a valid access token whose session is not revoked."""
        claims = self._verify(token, _ACCESS_TYP, "access", now)
        if self._is_revoked(claims.sid):
            raise TokenError("the token's session has been revoked", "revoked")
        return claims

    def verify_mfa(self, token: str, *, now: datetime | None = None) -> Claims:
        """The claims of a valid MFA token (single use is the caller's check, by ``jti``)."""
        return self._verify(token, _MFA_TYP, "mfa", now)

    def _key_for(self, token: object, typ: str) -> Ed25519PublicKey:
        if not isinstance(token, str) or len(token) > _MAX_TOKEN_CHARS:
            raise TokenError("not a token of at most 8 KiB", "malformed")
        if not _COMPACT_JWS.fullmatch(token):
            raise TokenError("not a compact JWS (three base64url segments)", "malformed")
        try:
            header = jwt.get_unverified_header(token)
        except (jwt.PyJWTError, ValueError, TypeError, RecursionError):
            raise TokenError("the token header cannot be decoded", "malformed") from None
        # Checked before any key is touched: no "none", no HMAC over the public key, no RSA.
        if header.get("alg") not in ALGS:
            raise TokenError("only Ed25519 (or EdDSA) tokens are accepted", "alg_not_allowed")
        found = header.get("typ")
        if not isinstance(found, str) or found.lower().removeprefix("application/") != typ:
            raise TokenError(f"not an {typ} token", "wrong_type")
        kid = header.get("kid")
        key = self._keys.get(kid) if isinstance(kid, str) else None
        if key is None:
            shown = repr(kid[:64]) if isinstance(kid, str) else "none"
            raise TokenError(f"the token's key id {shown} is not known", "unknown_key")
        return key

    def _verify(self, token: str, typ: str, kind: str, now: datetime | None) -> Claims:
        key = self._key_for(token, typ)
        try:
            payload = jwt.decode(
                token,
                key,
                algorithms=list(ALGS),
                audience=self._audience,
                issuer=self._issuer,
                # Times are checked below, against ``now`` rather than PyJWT's own clock.
                options={"verify_exp": False, "verify_iat": False, "verify_nbf": False},
            )
        except jwt.InvalidSignatureError:
            raise TokenError("the signature does not verify", "bad_signature") from None
        except jwt.InvalidAudienceError:
            raise TokenError("the token is not for this audience", "wrong_audience") from None
        except jwt.InvalidIssuerError:
            raise TokenError("the token is from another issuer", "wrong_issuer") from None
        except jwt.MissingRequiredClaimError as exc:
            raise _malformed(exc.claim) from None
        except (jwt.PyJWTError, ValueError, TypeError, RecursionError):
            raise TokenError("the token cannot be decoded", "malformed") from None
        claims = self._claims(payload, kind)
        at = _timestamp(now, "now") if now is not None else datetime.now(UTC).timestamp()
        if claims.exp <= at - self._leeway:
            raise TokenError("the token has expired", "expired")
        if claims.iat > at + self._leeway:
            raise TokenError("the token is issued in the future", "not_yet_valid")
        return claims

    def _claims(self, payload: Mapping[str, Any], kind: str) -> Claims:
        if payload.get("typ") != kind:
            raise TokenError(f"not an {kind} token", "wrong_type")
        acr = _text(payload, "acr")
        if acr not in _ACRS:
            raise _malformed("acr")
        access = kind == "access"
        return Claims(
            iss=_text(payload, "iss"),
            sub=_text(payload, "sub"),
            aud=self._audience,  # the token may name several; this is the one that matched
            sid=_text(payload, "sid") if access else "",
            iat=_number(payload, "iat"),
            exp=_number(payload, "exp"),
            auth_time=_number(payload, "auth_time"),
            amr=_texts(payload, "amr"),
            acr=acr,
            roles=_texts(payload, "roles") if access else (),
            jti=_text(payload, "jti"),
            typ=kind,
        )
