"""The enrolment service's HTTP API (``/v1/2fa``, support under ``/v1/admin``)."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Response

from services.enrolment.adapters.qr import qr_image
from services.enrolment.http.schemas import (
    AccountPath,
    CancelBody,
    DisableBody,
    OtpBody,
    RecoveryCodes,
    RequestPath,
    ResetApproved,
    ResetRequestBody,
    ResetRequested,
    ResetView,
    StartedEnrolment,
    TwoFactorStatus,
)
from services.enrolment.usecases import enrolment, reset
from shared.app.secondfactor import Proof
from shared.domain import twofactor as tf
from shared.security.tokens import Claims
from shared.web.app import ContextDep, DepsDep
from shared.web.auth import AccessClaims, require_role
from shared.web.openapi import problems
from shared.web.problems import Problem

router = APIRouter()
NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


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
    deps: DepsDep, claims: AccessClaims, ctx: ContextDep, response: Response
) -> StartedEnrolment:
    response.headers.update(NO_STORE)
    started = await enrolment.start(deps, ctx, claims)
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
async def qr(kind: Literal["svg", "png"], deps: DepsDep, claims: AccessClaims) -> Response:
    uri = await enrolment.pending_uri(deps, claims.sub)
    media = "image/svg+xml" if kind == "svg" else "image/png"
    return Response(qr_image(uri, kind), media_type=media, headers=NO_STORE)


@router.post(
    "/v1/2fa/enrolment/confirm",
    response_model=RecoveryCodes,
    tags=["enrolment"],
    summary="Confirm with the first code: 2FA is on, here are the recovery codes",
    description="A wrong code keeps the enrolment pending and counts toward the lockout.",
    responses=problems(401, 409, 413, 422, 423),
)
async def confirm(
    body: OtpBody, deps: DepsDep, claims: AccessClaims, ctx: ContextDep, response: Response
) -> RecoveryCodes:
    response.headers.update(NO_STORE)
    return RecoveryCodes(recovery_codes=await enrolment.confirm(deps, ctx, claims, body.otp))


def _status(status: tf.TwoFactorStatus) -> TwoFactorStatus:
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
async def status(deps: DepsDep, claims: AccessClaims) -> TwoFactorStatus:
    return _status(await enrolment.status(deps, claims.sub))


@router.post(
    "/v1/2fa/recovery-codes",
    response_model=RecoveryCodes,
    tags=["enrolment"],
    summary="A new set of 6 recovery codes (needs an OTP); the old set stops working",
    responses=problems(401, 409, 413, 422, 423),
)
async def regenerate(
    body: OtpBody, deps: DepsDep, claims: AccessClaims, ctx: ContextDep, response: Response
) -> RecoveryCodes:
    response.headers.update(NO_STORE)
    codes = await enrolment.regenerate_codes(deps, ctx, claims, Proof(otp=body.otp))
    return RecoveryCodes(recovery_codes=codes)


@router.post(
    "/v1/2fa/disable",
    status_code=204,
    tags=["enrolment"],
    summary="Turn 2FA off with an OTP or a recovery code, one last time",
    responses=problems(401, 409, 413, 422, 423),
)
async def disable(
    body: DisableBody, deps: DepsDep, claims: AccessClaims, ctx: ContextDep
) -> Response:
    await enrolment.disable(deps, ctx, claims, body.required_proof())
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
    deps: DepsDep,
    claims: AccessClaims,
    ctx: ContextDep,
) -> ResetRequested:
    support(claims)
    request_id = await reset.request_reset(
        deps, ctx, claims, account_id.lower(), body.ticket, body.reason
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
    deps: DepsDep,
    claims: AccessClaims,
    ctx: ContextDep,
) -> ResetApproved:
    support(claims)
    effective = await reset.approve_reset(deps, ctx, claims, account_id.lower(), request_id)
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
    deps: DepsDep,
    claims: AccessClaims,
    ctx: ContextDep,
) -> Response:
    owner = claims.sub == account_id.lower()
    if not owner:
        support(claims)
    elif claims.acr != "aal2":
        raise Problem(403, "aal2_required", "Log in with the second factor to cancel this reset")
    await reset.cancel_reset(deps, ctx, claims, account_id.lower(), request_id, body.reason)
    return Response(status_code=204)


@router.get(
    "/v1/admin/accounts/{account_id}/2fa",
    response_model=TwoFactorStatus,
    tags=["support"],
    summary="A user's 2FA status and pending reset (support)",
    responses=problems(401, 403),
)
async def account_status(account_id: AccountPath, deps: DepsDep, claims: AccessClaims) -> Any:
    support(claims)
    return _status(await enrolment.status(deps, account_id.lower()))
