"""The auth service's HTTP API (``/v1``): routes and their request and response schemas."""

from __future__ import annotations

import unicodedata
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, Any, Literal, Self

from fastapi import APIRouter, Depends, Request, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import Counter
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from services.auth import handlers
from services.auth.devices import DeviceTokens
from shared.http import Problem, StrictBody, exclusive_fields, problems
from shared.requestauth import AccessClaims, access_claims, require_role
from shared.secondfactor import Proof
from shared.service import CoreDep, Correlation
from shared.tokens import Claims

router = APIRouter()

LOGINS = Counter("twofa_login_outcomes", "Login steps by outcome", ["step", "outcome"])


@contextmanager
def counted(step: str) -> Iterator[None]:
    """Count a login step's outcome: ``ok`` or the problem code it ended with."""
    try:
        yield
    except Problem as problem:
        LOGINS.labels(step, problem.code).inc()
        raise
    LOGINS.labels(step, "ok").inc()


USERNAME = r"^[A-Za-z0-9][A-Za-z0-9._-]{2,63}$"
# Unicode's control and format characters (Cc, Cf: zero-width, bidi overrides, ...), so
# the published pattern says what _plain_email refuses.
_INVISIBLE = (
    r"\u0000-\u001f\u007f-\u009f\u00ad\u0600-\u0605\u061c\u06dd\u070f\u0890-\u0891\u08e2"
    r"\u180e\u200b-\u200f\u202a-\u202e\u2060-\u2064\u2066-\u206f\ufeff\ufff9-\ufffb"
    r"\U000110bd\U000110cd\U00013430-\U0001343f\U0001bca0-\U0001bca3\U0001d173-\U0001d17a"
    r"\U000e0001\U000e0020-\U000e007f"
)
_PART = rf"[^@\s{_INVISIBLE}]"
EMAIL = rf"^{_PART}{{1,64}}@{_PART}{{1,189}}\.{_PART}{{1,63}}$"


Strict = StrictBody


def _plain_email(value: str) -> str:
    # Control and format characters (zero-width, bidi overrides) make look-alike addresses.
    if any(unicodedata.category(ch) in ("Cc", "Cf") for ch in value):
        raise ValueError("the email address contains invisible or control characters")
    return value


Email = Annotated[
    str,
    Field(max_length=254, pattern=EMAIL, examples=["ann@example.org"]),
    AfterValidator(_plain_email),
]


Password = Annotated[
    str, Field(min_length=1, max_length=1024, examples=["correct horse battery staple"])
]
Otp = Annotated[str, Field(min_length=1, max_length=64, examples=["492039"])]
RecoveryCode = Annotated[str, Field(min_length=1, max_length=64, examples=["7hq2-9x4k-m3rd-0pzv"])]


class SecondFactor(Strict):
    """An OTP from the app, or one of the recovery codes: at most one of the two."""

    model_config = ConfigDict(
        json_schema_extra=exclusive_fields("otp", "recovery_code", one_required=False)
    )

    otp: Otp | None = None
    recovery_code: RecoveryCode | None = None

    @model_validator(mode="after")
    def _one_at_most(self) -> Self:
        if self.otp is not None and self.recovery_code is not None:
            raise ValueError("send either otp or recovery_code, not both")
        return self

    def proof(self) -> Proof | None:
        if self.otp is None and self.recovery_code is None:
            return None
        return Proof(otp=self.otp, recovery_code=self.recovery_code)


class RegisterRequest(Strict):
    username: str = Field(pattern=USERNAME, examples=["ann.example"])
    email: Email
    password: Password


class Registered(BaseModel):
    account_id: str = Field(examples=["3f6d1a52-93a4-4c4e-b3a4-7d0f35b7c1e2"])


class LoginRequest(Strict):
    username: str = Field(min_length=1, max_length=64, examples=["ann.example"])
    password: Password
    device_token: str | None = Field(
        default=None,
        max_length=256,
        description="The device_token of an earlier login on this device: its failures "
        "are counted apart, so strangers cannot throttle you",
    )


class Tokens(BaseModel):
    access_token: str
    token_type: Literal["Bearer"] = "Bearer"  # noqa: S105 — the OAuth token type
    expires_in: int = Field(examples=[900])
    refresh_token: str | None = None
    amr: list[str] = Field(examples=[["pwd", "otp", "mfa"]])
    acr: str = Field(examples=["aal2"])
    device_token: str | None = None


class MfaRequired(BaseModel):
    mfa_required: Literal[True] = True
    mfa_token: str
    methods: list[str] = Field(examples=[["totp", "recovery_code"]])
    expires_in: int = Field(examples=[300])


class MfaRequest(SecondFactor):
    model_config = ConfigDict(
        json_schema_extra=exclusive_fields("otp", "recovery_code", one_required=True)
    )

    mfa_token: str = Field(min_length=1, max_length=8192)

    @model_validator(mode="after")
    def _one_needed(self) -> Self:
        if self.otp is None and self.recovery_code is None:
            raise ValueError("send otp or recovery_code")
        return self


class ReauthRequest(SecondFactor):
    password: Password


class PasswordChange(SecondFactor):
    current_password: Password
    new_password: Password


class EmailChange(SecondFactor):
    current_password: Password
    email: Email


class RefreshRequest(Strict):
    refresh_token: str = Field(min_length=1, max_length=512)


class Me(BaseModel):
    account_id: str
    username: str
    email: str
    roles: list[str]
    twofa_enabled: bool
    twofa_enabled_at: str | None
    recovery_codes_left: int


def devices_of(request: Request) -> DeviceTokens:
    devices: DeviceTokens = request.app.state.devices
    return devices


DevicesDep = Annotated[DeviceTokens, Depends(devices_of)]


def context(core: CoreDep, correlation_id: Correlation) -> handlers.Context:
    return handlers.Context(correlation_id=correlation_id, clock=core.clock)


ContextDep = Annotated[handlers.Context, Depends(context)]
_optional_bearer = HTTPBearer(auto_error=False)


async def session_claims(core: CoreDep, claims: AccessClaims) -> Claims:
    """A verified token whose session is still active in the account stream."""
    await handlers.session_of(core, claims)
    return claims


SessionClaims = Annotated[Claims, Depends(session_claims)]


def _tokens(result: handlers.TokenSet, *, with_refresh: bool = True) -> Tokens:
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
    core: CoreDep,
    ctx: ContextDep,
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_optional_bearer)],
) -> Registered:
    actor = None
    if not core.settings.registration_open:
        if credentials is None:
            raise Problem(
                401, "missing_token", "Registration is closed: a support token is required"
            )
        # The same checks as every bearer operation: signature, a session still active
        # in the account stream, then the support role with the second factor.
        claims = await session_claims(core, await access_claims(request, credentials))
        require_role(claims, "support", aal2=True)
        actor = f"account:{claims.sub}"
    account_id = await handlers.register_account(
        core,
        handlers.Context(ctx.correlation_id, actor, ctx.clock),
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
    body: LoginRequest, core: CoreDep, devices: DevicesDep, ctx: ContextDep, response: Response
) -> Tokens | MfaRequired:
    response.headers.update(NO_STORE)
    with counted("password"):
        result = await handlers.login(
            core,
            devices,
            ctx,
            username=body.username,
            password=body.password,
            device_token=body.device_token,
        )
    if isinstance(result, handlers.MfaChallenge):
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
async def login_mfa(
    body: MfaRequest, core: CoreDep, devices: DevicesDep, ctx: ContextDep, response: Response
) -> Tokens:
    response.headers.update(NO_STORE)
    proof = body.proof()
    assert proof is not None
    with counted("second_factor"):
        result = await handlers.login_mfa(core, devices, ctx, mfa_token=body.mfa_token, proof=proof)
    return _tokens(result)


@router.post(
    "/v1/reauthenticate",
    response_model=Tokens,
    tags=["login"],
    summary="Prove the password again (and the OTP when 2FA is on) for a fresh token",
    responses=problems(401, 413, 422, 423, 429),
)
async def reauthenticate(
    body: ReauthRequest, core: CoreDep, ctx: ContextDep, claims: SessionClaims, response: Response
) -> Tokens:
    response.headers.update(NO_STORE)
    result = await handlers.reauthenticate(
        core, _as(ctx, claims), claims, password=body.password, proof=body.proof()
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
    body: PasswordChange, core: CoreDep, ctx: ContextDep, claims: SessionClaims
) -> Response:
    await handlers.change_password(
        core,
        _as(ctx, claims),
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
    body: EmailChange, core: CoreDep, ctx: ContextDep, claims: SessionClaims
) -> Response:
    await handlers.change_email(
        core,
        _as(ctx, claims),
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
    body: RefreshRequest, core: CoreDep, ctx: ContextDep, response: Response
) -> Tokens:
    response.headers.update(NO_STORE)
    with counted("refresh"):
        result = await handlers.refresh(core, ctx, refresh_token=body.refresh_token)
    return _tokens(result)


@router.post(
    "/v1/logout",
    status_code=204,
    tags=["login"],
    summary="End this session",
    responses=problems(401),
)
async def logout(core: CoreDep, ctx: ContextDep, claims: SessionClaims) -> Response:
    await handlers.logout(core, _as(ctx, claims), claims)
    return Response(status_code=204)


@router.get(
    "/v1/me",
    response_model=Me,
    tags=["account"],
    summary="Profile, roles and two-factor status",
    responses=problems(401),
)
async def me(core: CoreDep, claims: SessionClaims) -> Any:
    return await handlers.describe_account(core, claims.sub)


@router.get(
    "/.well-known/jwks.json", tags=["tokens"], summary="Public keys that sign access tokens"
)
async def jwks(core: CoreDep) -> dict[str, Any]:
    return core.settings.signing_keys().public_jwks()


def _as(ctx: handlers.Context, claims: Claims) -> handlers.Context:
    return handlers.Context(ctx.correlation_id, f"account:{claims.sub}", ctx.clock)
