"""The enrolment service's request and response bodies."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import Path
from pydantic import BaseModel, Field

from shared.web.bodies import OneSecondFactor, Otp, StrictBody

ACCOUNT_ID = r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"


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


class OtpBody(StrictBody):
    otp: Otp


class RecoveryCodes(BaseModel):
    recovery_codes: list[str] = Field(
        description="Shown this once and never again: each works once",
        examples=[["7hq2-9x4k-m3rd-0pzv", "c1tq-4wna-8bse-kd27", "…"]],
    )


class DisableBody(OneSecondFactor):
    """An OTP or a recovery code, one last time."""


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


class ResetRequestBody(StrictBody):
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


class CancelBody(StrictBody):
    reason: str = Field(min_length=1, max_length=500, examples=["The user still has their phone"])


AccountPath = Annotated[
    str, Path(pattern=ACCOUNT_ID, examples=["3f6d1a52-93a4-4c4e-b3a4-7d0f35b7c1e2"])
]


RequestPath = Annotated[str, Path(pattern=r"^[0-9a-f]{32}$")]
