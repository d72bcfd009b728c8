"""The one table from application and domain errors to HTTP problems."""

from __future__ import annotations

import inspect
from datetime import UTC, datetime, timedelta

import pytest

from shared.app import errors as app
from shared.app.secondfactor import refused
from shared.domain import errors as domain
from shared.domain.twofactor import Verdict
from shared.web.problems import problem_for

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
LOCKED = Verdict((), False, "locked", 0, NOW + timedelta(minutes=15))
WRONG = Verdict((), False, "invalid_code", 3)

# Every application error, as a use case raises it, and the status and code it answers with.
EXPECTED: list[tuple[app.AppError, int, str]] = [
    (app.InvalidCredentials(), 401, "invalid_credentials"),
    (app.WrongPassword(), 401, "invalid_password"),
    (app.Throttled(7), 429, "too_many_attempts"),
    (app.SecondFactorRequired(), 401, "second_factor_required"),
    (refused(WRONG, NOW), 401, "invalid_code"),
    (refused(LOCKED, NOW), 423, "second_factor_locked"),
    (app.WeakPassword(["too short"]), 422, "weak_password"),
    (app.PasswordMismatch(), 422, "password_mismatch"),
    (app.UsernameTaken(), 409, "username_taken"),
    (app.ReauthenticationRequired(300), 401, "reauthentication_required"),
    (app.MfaTokenInvalid(), 401, "invalid_mfa_token"),
    (app.SessionEnded(), 401, "invalid_token"),
    (app.RefreshTokenInvalid(), 401, "invalid_refresh_token"),
    (app.RefreshTokenReused(), 401, "refresh_token_reused"),
]


def test_every_application_error_is_in_the_table() -> None:
    kinds = {
        cls
        for _, cls in inspect.getmembers(app, inspect.isclass)
        if issubclass(cls, app.AppError) and cls is not app.AppError
    }
    assert kinds == {type(error) for error, _, _ in EXPECTED}


@pytest.mark.parametrize(("error", "status", "code"), EXPECTED, ids=lambda v: str(v)[:40])
def test_each_error_answers_with_its_status_and_code(
    error: app.AppError, status: int, code: str
) -> None:
    problem = problem_for(error)
    assert (problem.status, problem.code, problem.title) == (status, code, str(error))


def test_a_lock_says_when_to_retry_and_until_when() -> None:
    problem = problem_for(refused(LOCKED, NOW))
    assert LOCKED.locked_until is not None
    assert problem.headers == {"Retry-After": "900"}
    assert problem.extra == {"retry_after": 900, "locked_until": LOCKED.locked_until.isoformat()}


def test_a_wrong_code_says_how_many_attempts_are_left() -> None:
    assert problem_for(refused(WRONG, NOW)).extra == {"attempts_left": 3}


def test_throttled_and_session_ended_carry_their_headers() -> None:
    assert problem_for(app.Throttled(7)).headers == {"Retry-After": "7"}
    assert problem_for(app.SessionEnded()).headers == {
        "WWW-Authenticate": 'Bearer error="invalid_token"'
    }


def test_weak_password_lists_the_rules_it_breaks() -> None:
    problem = problem_for(app.WeakPassword(["too short", "too common"]))
    assert problem.extra == {"problems": ["too short", "too common"]}


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (domain.NotAllowed("no"), 409),
        (domain.AlreadyEnabled("on"), 409),
        (domain.NotEnabled("off"), 409),
        (domain.NoPendingEnrolment("none"), 409),
        (domain.NotFound("No such account"), 404),
    ],
)
def test_domain_refusals_answer_409_or_404(error: domain.DomainError, status: int) -> None:
    problem = problem_for(error)
    assert (problem.status, problem.code, problem.title) == (status, error.code, str(error))
