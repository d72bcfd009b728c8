"""Bearer tokens on requests: the FastAPI dependency every service uses.

The verifier lives on ``app.state.verifier`` and the clock on ``app.state.clock``
(both set in the service's lifespan): the
auth service verifies with its own keys; other services with the published keys and a
revocation list learned from Kafka.

A token issued after the password alone (``acr`` ``aal1``) is also put to
``app.state.password_only_allowed``, which each service sets: once the account has a
second factor, such a token is refused with ``insufficient_user_authentication``
(RFC 9470), at once, without waiting for its session's revocation to be consumed.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from shared.security.tokens import Claims, TokenError, TokenVerifier
from shared.web.problems import Problem

__all__ = [
    "AccessClaims",
    "PasswordOnlyCheck",
    "access_claims",
    "refuse_password_only",
    "require_role",
]

PasswordOnlyCheck = Callable[[Claims], Awaitable[bool]]


async def refuse_password_only(claims: Claims) -> bool:
    """For a service that serves only logins made with the second factor."""
    return False


_bearer = HTTPBearer(auto_error=False, description="An access token from the auth service")


def _challenge(error: str) -> dict[str, str]:
    return {"WWW-Authenticate": f'Bearer error="{error}"'}


async def access_claims(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Claims:
    """The verified claims of the request's access token, or a 401 problem."""
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise Problem(
            401,
            "missing_token",
            "An access token is required",
            headers={"WWW-Authenticate": "Bearer"},
        )
    verifier: TokenVerifier = request.app.state.verifier
    clock: Callable[[], datetime] = request.app.state.clock
    try:
        claims = verifier.verify_access(credentials.credentials, now=clock())
    except TokenError as exc:
        raise Problem(
            401,
            "invalid_token",
            "The access token is not valid",
            detail=f"reason: {exc.reason}",
            headers=_challenge("invalid_token"),
        ) from None
    if claims.acr != "aal2":
        allowed: PasswordOnlyCheck = request.app.state.password_only_allowed
        if not await allowed(claims):
            raise Problem(
                401,
                "insufficient_user_authentication",
                "Two-factor authentication is on for this account: log in again with it",
                headers=_challenge("insufficient_user_authentication"),
            )
    return claims


AccessClaims = Annotated[Claims, Depends(access_claims)]


def require_role(claims: Claims, role: str, *, aal2: bool = False) -> None:
    """403 unless the token carries ``role`` (and, if asked, was issued with 2FA)."""
    if role not in claims.roles:
        raise Problem(403, "forbidden", f"This needs the {role!r} role")
    if aal2 and claims.acr != "aal2":
        raise Problem(403, "aal2_required", "This needs a login with the second factor (acr aal2)")
