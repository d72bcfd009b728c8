"""RFC 9457 problem bodies, and the ONE table from application errors to problems.

Every error leaves as ``application/problem+json`` with ``type``, ``title``, ``status``,
``detail`` and a machine ``code``; a validation problem lists the fields at fault but
never echoes their values (they may be passwords or codes).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import orjson
from fastapi import Response
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, Field

from shared.app import errors as app
from shared.domain.errors import DomainError, NotFound

__all__ = [
    "PROBLEM_JSON",
    "Problem",
    "ProblemBody",
    "code_of",
    "problem_for",
    "problem_response",
    "retry_later",
]

PROBLEM_JSON = "application/problem+json"


class Problem(Exception):
    """An error the client should see: status, a machine code, a human title."""

    def __init__(
        self,
        status: int,
        code: str,
        title: str,
        detail: str | None = None,
        *,
        headers: Mapping[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(title)
        self.status = status
        self.code = code
        self.title = title
        self.detail = detail
        self.headers = dict(headers or {})
        self.extra = extra


def retry_later(status: int, code: str, title: str, seconds: int, **extra: Any) -> Problem:
    """A problem the client may retry after ``seconds``: in ``Retry-After`` and the body."""
    return Problem(
        status, code, title, headers={"Retry-After": str(seconds)}, retry_after=seconds, **extra
    )


def problem_response(
    status: int,
    code: str,
    title: str,
    detail: str | None = None,
    *,
    headers: Mapping[str, str] | None = None,
    **extra: Any,
) -> Response:
    body: dict[str, Any] = {
        "type": f"urn:twofa:problem:{code}",
        "title": title,
        "status": status,
        "code": code,
    }
    if detail:
        body["detail"] = detail
    body.update(extra)
    return Response(
        orjson.dumps(body), status_code=status, media_type=PROBLEM_JSON, headers=headers
    )


def validation_errors(exc: RequestValidationError) -> list[dict[str, Any]]:
    # Field locations and messages only: never the submitted values.
    out = []
    for error in exc.errors():
        loc = [str(part) for part in error.get("loc", ()) if part != "body"]
        out.append({"field": ".".join(loc) or "body", "message": str(error.get("msg", ""))})
    return out


class ProblemBody(BaseModel):
    """RFC 9457 problem details, as every 4xx and 5xx answer carries them."""

    type: str = Field(examples=["urn:twofa:problem:invalid_code"])
    title: str = Field(examples=["The code is not valid"])
    status: int = Field(examples=[401])
    code: str = Field(examples=["invalid_code"])
    detail: str | None = None

    model_config = {"extra": "allow"}


# The one table: what each application error answers over HTTP. Each entry gives the
# status and whatever the body or headers carry beyond code and title.
def _second_factor(exc: app.SecondFactorRefused) -> Problem:
    if exc.locked:
        assert exc.retry_after is not None and exc.verdict.locked_until is not None
        return retry_later(
            423,
            exc.code,
            exc.message,
            exc.retry_after,
            locked_until=exc.verdict.locked_until.isoformat(),
        )
    return Problem(
        401,
        exc.code,
        exc.message,
        detail="Codes work once; wait for the next one if you just used this one",
        attempts_left=exc.verdict.attempts_left,
    )


def _reauthenticate(exc: app.ReauthenticationRequired) -> Problem:
    return Problem(
        401,
        exc.code,
        exc.message,
        detail="POST your password to the auth service's /v1/reauthenticate, then retry "
        "with the token it returns",
        max_age_seconds=exc.max_age_seconds,
    )


def _simple(status: int, **headers: str) -> Callable[[app.AppError], Problem]:
    return lambda exc: Problem(status, exc.code, exc.message, headers=headers or None)


_TABLE: dict[type[app.AppError], Callable[[Any], Problem]] = {
    app.InvalidCredentials: _simple(401),
    app.WrongPassword: _simple(401),
    app.Throttled: lambda exc: retry_later(429, exc.code, exc.message, exc.retry_after),
    app.SecondFactorRequired: lambda exc: Problem(
        401, exc.code, exc.message, methods=list(exc.methods)
    ),
    app.SecondFactorRefused: _second_factor,
    app.WeakPassword: lambda exc: Problem(422, exc.code, exc.message, problems=exc.problems),
    app.PasswordMismatch: _simple(422),
    app.UsernameTaken: _simple(409),
    app.ReauthenticationRequired: _reauthenticate,
    app.MfaTokenInvalid: _simple(401),
    app.SessionEnded: _simple(401, **{"WWW-Authenticate": 'Bearer error="invalid_token"'}),
    app.RefreshTokenInvalid: _simple(401),
    app.RefreshTokenReused: _simple(401),
}


def problem_for(exc: app.AppError | DomainError) -> Problem:
    """The problem an application or domain error answers with."""
    if isinstance(exc, DomainError):  # the state forbids it (409), or no such thing (404)
        return Problem(404 if isinstance(exc, NotFound) else 409, exc.code, str(exc))
    for kind in type(exc).__mro__:
        if kind in _TABLE:
            return _TABLE[kind](exc)
    return Problem(400, exc.code, exc.message)


def code_of(exc: BaseException) -> str | None:
    """The machine code a refusal answers with (for metrics), or None if it is none."""
    if isinstance(exc, Problem | app.AppError | DomainError):
        return exc.code
    return None
