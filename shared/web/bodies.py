"""What request bodies share: the strict base, and the second factor both services take."""

from __future__ import annotations

from typing import Annotated, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from shared.app.secondfactor import Proof
from shared.web.openapi import exclusive_fields

__all__ = ["OneSecondFactor", "Otp", "RecoveryCode", "SecondFactor", "StrictBody"]

Otp = Annotated[str, Field(min_length=1, max_length=64, examples=["492039"])]
RecoveryCode = Annotated[str, Field(min_length=1, max_length=64, examples=["7hq2-9x4k-m3rd-0pzv"])]


class StrictBody(BaseModel):
    """Base of every request body: unknown fields refused, and no NUL in any text
    (PostgreSQL cannot store it, and no real input contains it)."""

    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="after")
    def _no_nul(self) -> Self:
        for name, value in self.__dict__.items():
            if isinstance(value, str) and "\x00" in value:
                raise ValueError(f"{name} may not contain NUL characters")
        return self


class SecondFactor(StrictBody):
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


class OneSecondFactor(SecondFactor):
    """An OTP or a recovery code: exactly one of the two."""

    model_config = ConfigDict(
        json_schema_extra=exclusive_fields("otp", "recovery_code", one_required=True)
    )

    @model_validator(mode="after")
    def _one_needed(self) -> Self:
        if self.otp is None and self.recovery_code is None:
            raise ValueError("send otp or recovery_code")
        return self

    def required_proof(self) -> Proof:
        return Proof(otp=self.otp, recovery_code=self.recovery_code)
