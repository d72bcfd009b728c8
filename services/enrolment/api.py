"""The enrolment service's HTTP API (``/v1/2fa``): routes and their schemas."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal, Self

from fastapi import APIRouter, Path, Response
from pydantic import BaseModel, ConfigDict, Field, model_validator

from services.enrolment import handlers
from shared.http import Problem, StrictBody, exclusive_fields, problems
from shared.requestauth import AccessClaims, require_role
from shared.secondfactor import Proof
from shared.service import CoreDep, Correlation
from shared.tokens import Claims

router = APIRouter()

NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}
ACCOUNT_ID = r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"


Strict = StrictBody


Otp = Annotated[str, Field(min_length=1, max_length=64, examples=["492039"])]


class StartedEnrolment(BaseModel):
    secret: str = Field(
        description="Base32, for typing into the app by hand",
        examples=["JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"],
    )
    otpauth_uri: str = Field(
        examples=[
            "otpauth://totp/Partner%20Portal:ann%40example.org?secret=JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP&issuer=Partner%20Portal&algorithm=SHA1&digits=6&period=30"
        ]
    )
    qr_svg: str = Field(examples=["/v1/2fa/enrolment/qr.svg"])
    qr_png: str = Field(examples=["/v1/2fa/enrolment/qr.png"])
    expires_at: datetime


class OtpBody(Strict):
    otp: Otp


class RecoveryCodes(BaseModel):
    recovery_codes: list[str] = Field(
        description="Shown this once and never again: each works once",
        examples=[["7hq2-9x4k-m3rd-0pzv", "c1tq-4wna-8bse-kd27", "…"]],
    )


class DisableBody(Strict):
    model_config = ConfigDict(
        json_schema_extra=exclusive_fields("otp", "recovery_code", one_required=True)
    )

    otp: Otp | None = None
    recovery_code: Annotated[str | None, Field(min_length=1, max_length=64)] = None

    @model_validator(mode="after")
    def _exactly_one(self) -> Self:
        if (self.otp is None) == (self.recovery_code is None):
            raise ValueError("send exactly one of otp or recovery_code")
        return self


class ResetView(BaseModel):
    request_id: str
    requested_by: str
    ticket: str
    reason: str
    approved_by: str | None
    effective_at: datetime | None


class TwoFactorStatus(BaseModel):
    enabled: bool
    enabled_at: datetime | None
    recovery_codes_left: int
    pending_enrolment_expires_at: datetime | None
    reset: ResetView | None = None


class ResetRequestBody(Strict):
    ticket: str = Field(
        min_length=1, max_length=100, pattern=r"^[\w.:/#-]+$", examples=["SUP-4711"]
    )
    reason: str = Field(
        min_length=1,
        max_length=500,
        examples=["Lost phone and printed codes; identity checked by video call"],
    )


class ResetRequested(BaseModel):
    request_id: str


class ResetApproved(BaseModel):
    request_id: str
    effective_at: datetime


class CancelBody(Strict):
    reason: str = Field(min_length=1, max_length=500, examples=["The user still has their phone"])


AccountPath = Annotated[
    str, Path(pattern=ACCOUNT_ID, examples=["3f6d1a52-93a4-4c4e-b3a4-7d0f35b7c1e2"])
]
RequestPath = Annotated[str, Path(pattern=r"^[0-9a-f]{32}$")]


def support(claims: Claims) -> Claims:
    require_role(claims, "support", aal2=True)
    return claims


@router.post(
    "/v1/2fa/enrolment",
    status_code=201,
    response_model=StartedEnrolment,
    tags=["enrolment"],
    summary="Start (or restart) turning 2FA on",
    description="Needs a token whose auth_time is at most TWOFA_REAUTH_MAX_AGE_SECONDS old; "
    "otherwise 401 `reauthentication_required`. Restarting replaces the pending secret.",
    responses=problems(401, 409),
)
async def start(
    core: CoreDep, claims: AccessClaims, corr: Correlation, response: Response
) -> StartedEnrolment:
    response.headers.update(NO_STORE)
    started = await handlers.start(core, claims, corr)
    return StartedEnrolment(
        secret=started.secret,
        otpauth_uri=started.otpauth_uri,
        qr_svg="/v1/2fa/enrolment/qr.svg",
        qr_png="/v1/2fa/enrolment/qr.png",
        expires_at=started.expires_at,
    )


@router.get(
    "/v1/2fa/enrolment/qr.{kind}",
    tags=["enrolment"],
    summary="The QR code of the pending enrolment",
    response_class=Response,
    responses={
        200: {"content": {"image/svg+xml": {}, "image/png": {}}, "description": "The QR code"},
        **problems(401, 404, 409),
    },
)
async def qr(kind: Literal["svg", "png"], core: CoreDep, claims: AccessClaims) -> Response:
    uri = await handlers.pending_uri(core, claims.sub)
    media = "image/svg+xml" if kind == "svg" else "image/png"
    return Response(handlers.qr_image(uri, kind), media_type=media, headers=NO_STORE)


@router.post(
    "/v1/2fa/enrolment/confirm",
    response_model=RecoveryCodes,
    tags=["enrolment"],
    summary="Confirm with the first code: 2FA is on, here are the recovery codes",
    description="A wrong code keeps the enrolment pending and counts toward the lockout.",
    responses=problems(401, 409, 413, 422, 423),
)
async def confirm(
    body: OtpBody, core: CoreDep, claims: AccessClaims, corr: Correlation, response: Response
) -> RecoveryCodes:
    response.headers.update(NO_STORE)
    return RecoveryCodes(recovery_codes=await handlers.confirm(core, claims, body.otp, corr))


def _status(status: handlers.Status) -> TwoFactorStatus:
    reset = status.reset
    return TwoFactorStatus(
        enabled=status.enabled,
        enabled_at=status.enabled_at,
        recovery_codes_left=status.recovery_codes_left,
        pending_enrolment_expires_at=status.pending_enrolment_expires_at,
        reset=None
        if reset is None
        else ResetView(
            request_id=reset.request_id,
            requested_by=reset.requested_by,
            ticket=reset.ticket,
            reason=reset.reason,
            approved_by=reset.approved_by,
            effective_at=reset.effective_at,
        ),
    )


@router.get(
    "/v1/2fa",
    response_model=TwoFactorStatus,
    tags=["enrolment"],
    summary="Is 2FA on, since when, how many recovery codes are left",
    responses=problems(401),
)
async def status(core: CoreDep, claims: AccessClaims) -> TwoFactorStatus:
    return _status(await handlers.status(core, claims.sub))


@router.post(
    "/v1/2fa/recovery-codes",
    response_model=RecoveryCodes,
    tags=["enrolment"],
    summary="A new set of 6 recovery codes (needs an OTP); the old set stops working",
    responses=problems(401, 409, 413, 422, 423),
)
async def regenerate(
    body: OtpBody, core: CoreDep, claims: AccessClaims, corr: Correlation, response: Response
) -> RecoveryCodes:
    response.headers.update(NO_STORE)
    codes = await handlers.regenerate_codes(core, claims, Proof(otp=body.otp), corr)
    return RecoveryCodes(recovery_codes=codes)


@router.post(
    "/v1/2fa/disable",
    status_code=204,
    tags=["enrolment"],
    summary="Turn 2FA off with an OTP or a recovery code, one last time",
    responses=problems(401, 409, 413, 422, 423),
)
async def disable(
    body: DisableBody, core: CoreDep, claims: AccessClaims, corr: Correlation
) -> Response:
    await handlers.disable(
        core, claims, Proof(otp=body.otp, recovery_code=body.recovery_code), corr
    )
    return Response(status_code=204)


@router.post(
    "/v1/admin/accounts/{account_id}/2fa/reset-requests",
    status_code=201,
    response_model=ResetRequested,
    tags=["support"],
    summary="Open a support reset for a user who lost phone and codes",
    description="Needs the `support` role and a login with the second factor (acr aal2). "
    "A second, different support account must approve it; it takes effect after "
    "TWOFA_RESET_COOLING_OFF_SECONDS, and the user's next 2FA login cancels it.",
    responses=problems(401, 403, 409, 413, 422),
)
async def request_reset(
    account_id: AccountPath,
    body: ResetRequestBody,
    core: CoreDep,
    claims: AccessClaims,
    corr: Correlation,
) -> ResetRequested:
    support(claims)
    request_id = await handlers.request_reset(
        core, claims, account_id.lower(), body.ticket, body.reason, corr
    )
    return ResetRequested(request_id=request_id)


@router.post(
    "/v1/admin/accounts/{account_id}/2fa/reset-requests/{request_id}/approve",
    response_model=ResetApproved,
    tags=["support"],
    summary="Approve a reset (four eyes: not the requester, not the account itself)",
    responses=problems(401, 403, 409),
)
async def approve_reset(
    account_id: AccountPath,
    request_id: RequestPath,
    core: CoreDep,
    claims: AccessClaims,
    corr: Correlation,
) -> ResetApproved:
    support(claims)
    effective = await handlers.approve_reset(core, claims, account_id.lower(), request_id, corr)
    return ResetApproved(request_id=request_id, effective_at=effective)


@router.post(
    "/v1/admin/accounts/{account_id}/2fa/reset-requests/{request_id}/cancel",
    status_code=204,
    tags=["support"],
    summary="Cancel a reset before it takes effect (support, or the account owner)",
    responses=problems(401, 403, 409, 413, 422),
)
async def cancel_reset(
    account_id: AccountPath,
    request_id: RequestPath,
    body: CancelBody,
    core: CoreDep,
    claims: AccessClaims,
    corr: Correlation,
) -> Response:
    owner = claims.sub == account_id.lower()
    if not owner:
        support(claims)
    elif claims.acr != "aal2":
        raise Problem(403, "aal2_required", "Log in with the second factor to cancel this reset")
    await handlers.cancel_reset(core, claims, account_id.lower(), request_id, body.reason, corr)
    return Response(status_code=204)


@router.get(
    "/v1/admin/accounts/{account_id}/2fa",
    response_model=TwoFactorStatus,
    tags=["support"],
    summary="A user's 2FA status and pending reset (support)",
    responses=problems(401, 403),
)
async def account_status(account_id: AccountPath, core: CoreDep, claims: AccessClaims) -> Any:
    support(claims)
    return _status(await handlers.status(core, account_id.lower()))
