"""The auth service's request and response bodies."""

from __future__ import annotations

import unicodedata
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, Field

from shared.web.bodies import OneSecondFactor, SecondFactor, StrictBody

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


class RegisterRequest(StrictBody):
    username: str = Field(pattern=USERNAME, examples=["ann.example"])
    email: Email
    password: Password


class Registered(BaseModel):
    account_id: str = Field(examples=["3f6d1a52-93a4-4c4e-b3a4-7d0f35b7c1e2"])


class LoginRequest(StrictBody):
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


class MfaRequest(OneSecondFactor):
    mfa_token: str = Field(min_length=1, max_length=8192)


class ReauthRequest(SecondFactor):
    password: Password


class PasswordChange(SecondFactor):
    current_password: Password
    new_password: Password


class EmailChange(SecondFactor):
    current_password: Password
    email: Email


class RefreshRequest(StrictBody):
    refresh_token: str = Field(min_length=1, max_length=512)


class Me(BaseModel):
    account_id: str
    username: str
    email: str
    roles: list[str]
    twofa_enabled: bool
    twofa_enabled_at: str | None
    recovery_codes_left: int
