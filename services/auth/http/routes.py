"""The auth service's HTTP API (``/v1``): parse, call the use case, map the result."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import Counter

from services.auth.http.schemas import (
    EmailChange,
    LoginRequest,
    Me,
    MfaRequest,
    MfaRequired,
    PasswordChange,
    ReauthRequest,
    RefreshRequest,
    Registered,
    RegisterRequest,
    Tokens,
)
from services.auth.usecases import account as accounts
from services.auth.usecases import login as logins
from services.auth.usecases import sessions
from services.auth.usecases.deps import AuthDeps
from shared.app.context import actor_of
from shared.security.tokens import Claims
from shared.web.app import ContextDep
from shared.web.auth import AccessClaims, access_claims, require_role
from shared.web.openapi import problems
from shared.web.problems import Problem, code_of

router = APIRouter()
LOGINS = Counter("twofa_login_outcomes", "Login steps by outcome", ["step", "outcome"])


@contextmanager
def counted(step: str) -> Iterator[None]:
    """Count a login step's outcome: ``ok`` or the problem code it ended with."""
    try:
        yield
    except Exception as exc:
        code = code_of(exc)
        if code is not None:
            LOGINS.labels(step, code).inc()
        raise
    LOGINS.labels(step, "ok").inc()


def auth_deps(request: Request) -> AuthDeps:
    """The auth service's dependencies, built in its lifespan."""
    deps: AuthDeps = request.app.state.deps
    return deps


AuthDep = Annotated[AuthDeps, Depends(auth_deps)]
_optional_bearer = HTTPBearer(auto_error=False)


async def session_claims(deps: AuthDep, claims: AccessClaims) -> Claims:
    """A verified token whose session is still active in the account stream."""
    await sessions.session_of(deps, claims)
    return claims


SessionClaims = Annotated[Claims, Depends(session_claims)]


def _tokens(result: sessions.TokenSet, *, with_refresh: bool = True) -> Tokens:
    return Tokens(
        access_token=result.access_token,
        expires_in=result.expires_in,
        refresh_token=result.refresh_token if with_refresh else None,
        amr=list(result.amr),
        acr=result.acr,
        device_token=result.device_token,
    )


NO_STORE = {"Cache-Control": "no-store"}


@router.post(
    "/v1/accounts",
    status_code=201,
    response_model=Registered,
    tags=["accounts"],
    summary="Register an account",
    description="Open when TWOFA_OPEN_REGISTRATION is true; otherwise it needs a token of an "
    "active session with the `support` role and acr `aal2`. Passwords: 8-128 characters, "
    "not a common one (NIST SP 800-63B).",
    responses=problems(401, 403, 409, 413, 422),
    openapi_extra={"security": [{}]},  # the token is optional: only closed registration asks
)
async def register(
    body: RegisterRequest,
    deps: AuthDep,
    ctx: ContextDep,
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_optional_bearer)],
) -> Registered:
    actor = None
    if not deps.settings.registration_open:
        if credentials is None:
            raise Problem(
                401, "missing_token", "Registration is closed: a support token is required"
            )
        # The same checks as every bearer operation: signature, a session still active
        # in the account stream, then the support role with the second factor.
        claims = await session_claims(deps, await access_claims(request, credentials))
        require_role(claims, "support", aal2=True)
        actor = actor_of(claims.sub)
    account_id = await accounts.register_account(
        deps,
        replace(ctx, actor=actor),
        username=body.username,
        email=body.email,
        password=body.password,
    )
    return Registered(account_id=account_id)


@router.post(
    "/v1/login",
    response_model=Tokens | MfaRequired,
    tags=["login"],
    summary="Log in with username and password",
    description="Answers with tokens, or, when two-factor authentication is on, with "
    "`mfa_required` and a single-use `mfa_token` (5 minutes) for `/v1/login/mfa`.",
    responses=problems(401, 413, 422, 429),
)
async def login(
    body: LoginRequest, deps: AuthDep, ctx: ContextDep, response: Response
) -> Tokens | MfaRequired:
    response.headers.update(NO_STORE)
    with counted("password"):
        result = await logins.login(
            deps,
            ctx,
            username=body.username,
            password=body.password,
            device_token=body.device_token,
        )
    if isinstance(result, logins.MfaChallenge):
        return MfaRequired(
            mfa_token=result.mfa_token, methods=list(result.methods), expires_in=result.expires_in
        )
    return _tokens(result)


@router.post(
    "/v1/login/mfa",
    response_model=Tokens,
    tags=["login"],
    summary="Second step: an OTP or a recovery code",
    description="A wrong code answers 401 with `attempts_left`; after too many the second "
    "factor locks (423 with `Retry-After`) and the mfa token dies.",
    responses=problems(401, 413, 422, 423),
)
async def login_mfa(body: MfaRequest, deps: AuthDep, ctx: ContextDep, response: Response) -> Tokens:
    response.headers.update(NO_STORE)
    proof = body.required_proof()
    with counted("second_factor"):
        result = await logins.login_mfa(deps, ctx, mfa_token=body.mfa_token, proof=proof)
    return _tokens(result)


@router.post(
    "/v1/reauthenticate",
    response_model=Tokens,
    tags=["login"],
    summary="Prove the password again (and the OTP when 2FA is on) for a fresh token",
    responses=problems(401, 413, 422, 423, 429),
)
async def reauthenticate(
    body: ReauthRequest, deps: AuthDep, ctx: ContextDep, claims: SessionClaims, response: Response
) -> Tokens:
    response.headers.update(NO_STORE)
    result = await accounts.reauthenticate(
        deps, ctx.acting_for(claims.sub), claims, password=body.password, proof=body.proof()
    )
    return _tokens(result, with_refresh=False)


@router.post(
    "/v1/account/password",
    status_code=204,
    tags=["account"],
    summary="Change the password (ends every other session)",
    responses=problems(401, 413, 422, 423, 429),
)
async def change_password(
    body: PasswordChange, deps: AuthDep, ctx: ContextDep, claims: SessionClaims
) -> Response:
    await accounts.change_password(
        deps,
        ctx.acting_for(claims.sub),
        claims,
        current_password=body.current_password,
        new_password=body.new_password,
        proof=body.proof(),
    )
    return Response(status_code=204)


@router.post(
    "/v1/account/email",
    status_code=204,
    tags=["account"],
    summary="Change the email address",
    responses=problems(401, 413, 422, 423, 429),
)
async def change_email(
    body: EmailChange, deps: AuthDep, ctx: ContextDep, claims: SessionClaims
) -> Response:
    await accounts.change_email(
        deps,
        ctx.acting_for(claims.sub),
        claims,
        current_password=body.current_password,
        email=body.email,
        proof=body.proof(),
    )
    return Response(status_code=204)


@router.post(
    "/v1/token/refresh",
    response_model=Tokens,
    tags=["login"],
    summary="Rotate the refresh token",
    description="Each refresh token works once; presenting a spent one revokes the session.",
    responses=problems(401, 413, 422),
)
async def refresh(
    body: RefreshRequest, deps: AuthDep, ctx: ContextDep, response: Response
) -> Tokens:
    response.headers.update(NO_STORE)
    with counted("refresh"):
        result = await sessions.refresh(deps, ctx, refresh_token=body.refresh_token)
    return _tokens(result)


@router.post(
    "/v1/logout",
    status_code=204,
    tags=["login"],
    summary="End this session",
    responses=problems(401),
)
async def logout(deps: AuthDep, ctx: ContextDep, claims: SessionClaims) -> Response:
    await sessions.logout(deps, ctx.acting_for(claims.sub), claims)
    return Response(status_code=204)


@router.get(
    "/v1/me",
    response_model=Me,
    tags=["account"],
    summary="Profile, roles and two-factor status",
    responses=problems(401),
)
async def me(deps: AuthDep, claims: SessionClaims) -> Me:
    profile = await accounts.describe_account(deps, claims.sub)
    second = profile.twofactor
    return Me(
        account_id=profile.account_id,
        username=profile.username,
        email=profile.email,
        roles=profile.roles,
        twofa_enabled=second.enabled,
        twofa_enabled_at=second.enabled_at.isoformat() if second.enabled_at else None,
        recovery_codes_left=second.recovery_codes_left,
    )


@router.get(
    "/.well-known/jwks.json", tags=["tokens"], summary="Public keys that sign access tokens"
)
async def jwks(deps: AuthDep) -> dict[str, Any]:
    return deps.settings.signing_keys().public_jwks()
